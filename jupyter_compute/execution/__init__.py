"""How a cell travels to a target: one ``Route`` class per way, all behind the interface in ``base``.

``route_for(info)`` turns what ``Workspace.route_info`` returns into an unopened route.
"""
from __future__ import annotations

from typing import Any

from ..errors import InvalidRequest
from .base import (Capabilities, ExecutionError, ExecutionResult, ExecutionTimeout, MissingCapability, RemoteError,
                   Route, TransferError, TransferReport)

__all__ = [
    "Capabilities", "ExecutionError", "ExecutionResult", "ExecutionTimeout", "MissingCapability", "RemoteError",
    "Route", "TransferError", "TransferReport", "route_for",
]


def route_for(info: dict[str, Any], target: str = "") -> Route:
    """An unopened route for ``route_info``'s answer, e.g. ``{"route": "kernel", "connection": {...}, "pid": 123}``."""
    kind = info.get("route")
    if kind == "kernel":
        from .kernel import KernelRoute
        return KernelRoute(info["connection"], info.get("pid"), target=target)
    if kind == "dask":
        from .dask import DaskRoute
        return DaskRoute(info, target=target)
    if kind == "ssh":
        from .ssh import SSHRoute
        return SSHRoute(info["connection"], info.get("control"), remote_pid=info.get("remote_pid"), target=target)
    if kind == "azureml-job":
        from .azureml_job import AzureMLJobRoute
        return AzureMLJobRoute(info, target=target)
    if kind == "jupyter":
        from .websocket import WebsocketRoute
        return WebsocketRoute.from_info(info, target=target)
    raise InvalidRequest(f"cells cannot be sent to {target or 'this target'}: no route of kind {kind!r}",
                         reason="unsupported_route")
