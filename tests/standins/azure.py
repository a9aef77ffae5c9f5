"""Pytest fixtures and helpers for driving the Azure ML backend against the stand-ins.

Import the fixtures into a test module (``from tests.standins.azure import *``). Every test that
uses them runs with a network guard: a connection to anything but loopback fails the test, so
no credential can probe the cloud metadata address or a sign-in endpoint.

``azure_workspace`` is the workspace of the ``arm`` stand-in as ``(workspace, backend)``;
``workspace_for`` makes others (other settings, another stand-in or a replayer). Both close what
they made at teardown, on the test's loop, so an ``async def`` test only awaits.
"""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path
import socket
import time
from typing import Any

import pytest

from .arm import ArmStandIn

__all__ = ["network_guard", "azure_env", "arm", "make_workspace", "workspace_for", "azure_workspace", "RECORDINGS",
           "recordings"]

#: Where the recorded Azure traffic lives, beside the repository.
#: A sitecustomize that fails any connection off loopback in the processes a test starts.
NETGUARD = Path(__file__).resolve().parent / "netguard"


def guarded_pythonpath() -> str:
    """PYTHONPATH for a child process that must fail any connection off loopback (with JC_NETGUARD_LOG)."""
    return os.pathsep.join(filter(None, [str(NETGUARD), os.environ.get("PYTHONPATH")]))

RECORDINGS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                                          "azure-recordings"))

_AZURE_VARS = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
               "AZURE_USERNAME", "AZURE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
               "AZURE_TOKEN_CREDENTIALS", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT",
               "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET", "JUPYTER_COMPUTE_ARM_ENDPOINT",
               "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def _loopback(address: Any) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture
def network_guard(monkeypatch):
    """Refuse, and fail the test on, any connection that is not to this machine."""
    attempts: list[Any] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
            attempts.append(address)
            raise ConnectionRefusedError(f"test network guard: no connection to {address!r}")
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
            attempts.append(address)
            return 111
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield attempts
    assert not attempts, f"something tried to reach beyond loopback: {attempts}"


@pytest.fixture
def azure_env(monkeypatch, tmp_path, network_guard):
    """No Azure sign-in of the person running the tests leaks in; the Azure CLI's folder is empty."""
    for var in _AZURE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "azure-cli"))
    monkeypatch.setenv("AZD_CONFIG_DIR", str(tmp_path / "azd"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return monkeypatch


@pytest.fixture
def arm(azure_env):
    """A started Resource Manager stand-in whose managed identity and CA the process uses."""
    server = ArmStandIn()
    server.lro_polls = 2
    server.start()
    for k, v in server.env().items():
        azure_env.setenv(k, v)
    yield server
    server.stop()


def make_workspace(tmp_path, *, subscription_id: str, resource_group: str, workspace_name: str,
                   poll_interval: float = 0.01, config: Any = None, credential: Any = None, ws_id: str = "azure"):
    """A Workspace holding one AzureMLBackend, with a fresh store, as the server would build it."""
    from traitlets.config import Config

    from jupyter_compute.families.azureml.backend import AzureMLBackend
    from jupyter_compute.families.azureml.config import AzureML
    from jupyter_compute.core.store import AsyncStore, Store
    from jupyter_compute.core.workspace import Settings, Workspace

    cfg = config or Config()
    cfg.AzureML.poll_interval = poll_interval
    settings = Settings(cfg)
    azure = settings.of(AzureML)
    azure.retry_total = 3
    azure.retry_backoff_factor = 0.01
    azure.retry_backoff_max = 0.05
    store = AsyncStore(Store(str(tmp_path / f"compute-{time.monotonic_ns()}.db")))
    backend = AzureMLBackend(ws_id, store, settings, subscription_id=subscription_id,
                             resource_group=resource_group, workspace_name=workspace_name, credential=credential)
    return Workspace(ws_id, "azureml", workspace_name, store, settings, [backend]), backend


@pytest.fixture
def workspace_for(tmp_path, jp_asyncio_loop):
    """Factory: ``workspace_for(server, **options)`` -> ``(workspace, backend)`` on the workspace ``server``
    (a stand-in or replayer) serves, or on ``subscription_id``/``resource_group``/``workspace_name`` given
    outright; ``options`` as ``make_workspace`` takes them. Every one is closed when the test ends."""
    made: list = []

    def make(server: Any = None, **options):
        if server is not None:
            options = {"subscription_id": server.subscription_id, "resource_group": server.resource_group,
                       "workspace_name": server.workspace_name, **options}
        ws, backend = make_workspace(tmp_path, **options)
        made.append(ws)
        return ws, backend
    yield make
    for ws in reversed(made):
        jp_asyncio_loop.run_until_complete(ws.close())


@pytest.fixture
def azure_workspace(arm, workspace_for):
    """``(workspace, backend)`` on the ``arm`` stand-in's workspace, with the default test settings."""
    return workspace_for(arm)


def recordings() -> str:
    """The recordings folder; a test fails without it under CI and is skipped elsewhere."""
    if not os.path.isdir(RECORDINGS):
        if os.environ.get("CI"):
            pytest.fail(f"the Azure recordings are missing: {RECORDINGS} (CI must have ../shared beside the repo)")
        pytest.skip(f"no Azure recordings at {RECORDINGS}")
    return RECORDINGS
