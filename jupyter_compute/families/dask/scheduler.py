"""Talking to a Dask scheduler: its security, its identity and workers, and how they read as nodes.

Shared by the backend, the route and the supervisor of this family.
"""
from __future__ import annotations

import asyncio
import importlib
import re
from urllib.parse import urlsplit

from ...core.errors import Unavailable
from ...core.models import Node, NodeCounts

#: How long a scheduler has to answer a probe of its workers.
PROBE_TIMEOUT = 3.0


def security_of(files: dict[str, str] | None):
    """Dask's ``Security`` for a client from the three PEM files, or None for plain tcp://."""
    if not files:
        return None
    from distributed.security import Security
    return Security(tls_ca_file=files["ca"], tls_client_cert=files["cert"], tls_client_key=files["key"],
                    require_encryption=True)


async def scheduler_identity(address: str, files: dict[str, str] | None, timeout: float = PROBE_TIMEOUT) -> dict:
    """The scheduler's ``identity()`` with every worker; raises ``Unavailable`` naming the address."""
    # Importing Dask takes a second: not on the server's event loop.
    rpc = (await asyncio.to_thread(importlib.import_module, "distributed.core")).rpc
    sec = security_of(files)
    args = sec.get_connection_args("client") if sec is not None else {}
    try:
        r = rpc(address, timeout=timeout, connection_args=args)
        try:
            return await asyncio.wait_for(r.identity(n_workers=-1), timeout + 5)
        finally:
            await r.close_rpc()
    except (OSError, asyncio.TimeoutError) as e:
        raise Unavailable(f"cannot reach the Dask scheduler at {address}: {_why(e)}", field="/scheduler_address",
                          reason="unreachable") from None
    except Exception as e:  # a scheduler that answers in another protocol, or refuses our certificate
        raise Unavailable(f"the Dask scheduler at {address} did not answer as a Dask scheduler: {_why(e)}",
                          field="/scheduler_address", reason="unreachable") from None


def _why(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "no answer in time"
    text = str(e).strip()
    cause = e.__cause__ or e.__context__
    reason = re.sub(r"^in <[^>]*>: ", "", str(cause).strip()) if cause is not None else ""
    if reason and reason not in text:
        text += f" ({reason})"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def worker_state(info: dict) -> str:
    """A worker as Azure ML names node states: idle, running, leaving, or unusable (paused, out of memory)."""
    status = info.get("status")
    if status in ("closing_gracefully", "closing", "closed"):
        return "leaving"
    if status == "paused":
        return "unusable"
    counts = (info.get("metrics") or {}).get("task_counts") or {}
    busy = sum(counts.get(k, 0) for k in ("executing", "long-running"))
    return "running" if busy else "idle"


def counts_of(states: list[str], *, min_nodes: int | None, max_nodes: int | None) -> NodeCounts:
    present = [s for s in states if s != "preparing"]
    return NodeCounts(current=len(present), min=min_nodes, max=max_nodes,
                      idle=states.count("idle"), running=states.count("running"),
                      preparing=states.count("preparing"), unusable=states.count("unusable"),
                      leaving=states.count("leaving"),
                      preempted=0)


def dashboard_of(identity: dict, address: str) -> str | None:
    port = (identity.get("services") or {}).get("dashboard")
    if not port:
        return None
    host = urlsplit(address).hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/status"


def dashboard_path_of(link: str | None) -> str | None:
    """Where the Jupyter server serves a dashboard on this machine (jupyter-server-proxy's
    ``proxy/PORT/…``, under the server's own base URL and authentication), so that it opens from a
    browser anywhere: on JupyterHub, on a remote workstation. None for a dashboard elsewhere."""
    if not link:
        return None
    parts = urlsplit(link)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or not parts.port:
        return None
    return f"proxy/{parts.port}{parts.path or '/status'}"


def node_of(address: str, info: dict, state: str) -> Node:
    parts = urlsplit(address)
    mem = info.get("memory_limit")
    metrics = info.get("metrics") or {}
    props = {"name": str(info.get("name", "")), "nthreads": info.get("nthreads"),
             "memory_limit_mb": round(mem / 2**20) if mem else None,
             "memory_mb": round((metrics.get("memory") or 0) / 2**20, 1) if metrics.get("memory") else None,
             "executing": ((metrics.get("task_counts") or {}).get("executing") or 0)}
    if info.get("pid"):
        props["pid"] = info["pid"]
    return Node(id=address, state=state, address=parts.hostname, port=parts.port, properties=props)
