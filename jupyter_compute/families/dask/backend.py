"""Dask clusters: ``dask-cluster``, a local cluster managed here, and ``dask``, an existing cluster attached by address.

A ``dask-cluster`` runs a real scheduler and worker processes under a detached supervisor
(``supervisor``) that scales them adaptively between min_nodes and max_nodes, keeps a
snapshot of its workers in the store and outlives the server or CLI call that started it. Its
scheduler speaks TLS with a certificate only this user can read, so no other local account can
send it code. A ``dask`` target is any scheduler reachable at a ``tcp://`` or ``tls://`` address
(dask-kubernetes, dask-jobqueue, dask-cloudprovider, another machine); it is asked for its
workers when read, with a short timeout, and an unreachable one says so with its address.
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import shutil
import sys
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ...core import processes as procs
from ...core.errors import Conflict, InvalidRequest, Unavailable
from ...core.models import Node, NodeCounts, Size, Spec, State, Target, Usage, utcnow
from ...core.backend import Backend, KindSpec, OperationContext, Outcome, stored_target
from ...core.route import Route
from .scheduler import (PROBE_TIMEOUT, counts_of, dashboard_of, dashboard_path_of, node_of,  # noqa: F401
                        scheduler_identity, security_of, worker_state)

if importlib.util.find_spec("distributed") is None:  # the family simply does not appear without Dask
    raise ImportError("dask.distributed is not installed")

MANAGED = "dask-cluster"
ATTACHED = "dask"
FAMILY = "Clusters"
#: How long a starting cluster has to bring its scheduler and min_nodes workers up.
READY_TIMEOUT = 120.0
#: How long an answer (or a failure) of an attached scheduler is reused.
PROBE_TTL = 2.0
PROBE_FAILURE_TTL = 10.0
#: How long a stopping cluster has to close its workers before they are killed.
STOP_GRACE = 20.0


# -- specs -------------------------------------------------------------------------------------------
class DaskClusterSpec(Spec):
    """A Dask cluster on this machine: worker processes that scale between min_nodes and max_nodes."""
    min_nodes: int = Field(0, ge=0, le=256, title="Minimum workers",
                           description="Workers kept even when idle (0 scales to zero).")
    max_nodes: int = Field(4, ge=1, le=256, title="Maximum workers", description="Most workers the cluster scales to.")
    threads_per_node: int = Field(2, ge=1, le=256, title="Threads per worker",
                                  description="Threads of each worker: tasks it runs at once.")
    memory_limit_mb: int | None = Field(
        None, ge=128, le=4_194_304, title="Memory per worker (MB)",
        description="Memory of each worker (MB), past which Dask spills, pauses and restarts it; "
                    "default: a share of this machine's memory.")
    idle_seconds_before_scaledown: int = Field(
        120, ge=0, le=604800, title="Idle worker release (seconds)",
        description="Seconds a worker stays idle before it is released.")

    updatable: ClassVar[frozenset[str]] = frozenset(
        {"min_nodes", "max_nodes", "idle_seconds_before_scaledown", "description", "tags"})

    @model_validator(mode="after")
    def _scale(self) -> "DaskClusterSpec":
        if self.min_nodes > self.max_nodes:
            raise InvalidRequest(f"min_nodes ({self.min_nodes}) may not exceed max_nodes ({self.max_nodes})",
                                 field="/min_nodes")
        return self


def _existing_file(v: str | None) -> str | None:
    if v is None:
        return v
    if any(c in v for c in "\0\n\r"):
        raise ValueError("must be a path without control characters")
    path = os.path.abspath(os.path.expanduser(v))
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ValueError(f"{v!r} is not a readable file")
    return path


class DaskAttachSpec(Spec):
    """An existing Dask cluster, reached through its scheduler."""
    scheduler_address: str = Field(
        ..., max_length=1024, description="The scheduler: tcp://HOST:PORT, or tls://HOST:PORT with the tls_* files.")
    tls_ca_file: str | None = Field(None, max_length=4096, description="CA certificate (PEM) of a tls:// scheduler.")
    tls_client_cert: str | None = Field(None, max_length=4096,
                                        description="Client certificate (PEM) presented to a tls:// scheduler.")
    tls_client_key: str | None = Field(None, max_length=4096,
                                       description="Private key (PEM) of the client certificate.")

    updatable: ClassVar[frozenset[str]] = frozenset({"description", "tags"})

    @field_validator("scheduler_address")
    @classmethod
    def _address(cls, v: str) -> str:
        return check_address(v)

    @field_validator("tls_ca_file", "tls_client_cert", "tls_client_key")
    @classmethod
    def _files(cls, v: str | None) -> str | None:
        return _existing_file(v)

    @model_validator(mode="after")
    def _tls(self) -> "DaskAttachSpec":
        files = {"tls_ca_file": self.tls_ca_file, "tls_client_cert": self.tls_client_cert,
                 "tls_client_key": self.tls_client_key}
        if self.scheduler_address.startswith("tls://"):
            for name, value in files.items():
                if value is None:
                    raise InvalidRequest(f"{name}: is required for a tls:// scheduler", field=f"/{name}")
        else:
            for name, value in files.items():
                if value is not None:
                    raise InvalidRequest(f"{name}: applies only to a tls:// scheduler address", field=f"/{name}")
        return self

    def security(self) -> dict[str, str] | None:
        if not self.scheduler_address.startswith("tls://"):
            return None
        return {"ca": self.tls_ca_file, "cert": self.tls_client_cert, "key": self.tls_client_key}


def check_address(v: str) -> str:
    """A scheduler address, tcp:// or tls://, with a host and a port."""
    if any(c.isspace() or ord(c) < 32 for c in v):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(v)
    if parts.scheme not in ("tcp", "tls"):
        raise ValueError("must start with tcp:// or tls:// (for example tcp://127.0.0.1:8786)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError("must be tcp://HOST:PORT or tls://HOST:PORT")
    if not 0 < port < 65536:
        raise ValueError("port must be between 1 and 65535")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


# -- the backend -------------------------------------------------------------------------------------
class DaskBackend(Backend):
    kinds = {
        MANAGED: KindSpec(
            MANAGED, FAMILY,
            "A Dask cluster on this machine: a scheduler and worker processes that scale between min_nodes and "
            "max_nodes, and keep running after the server or notebook that started them exits.",
            managed=True, operations=("create", "update", "start", "stop", "restart", "delete", "nodes"),
            create_model=DaskClusterSpec,
            examples=[{"name": "dask-local"},
                      {"name": "wide", "min_nodes": 1, "max_nodes": 8, "threads_per_node": 2,
                       "memory_limit_mb": 4096, "idle_seconds_before_scaledown": 300}]),
        ATTACHED: KindSpec(
            ATTACHED, FAMILY,
            "An existing Dask cluster (Kubernetes, HPC batch, cloud, another machine), reached at its scheduler's "
            "address. Detaching leaves it running.",
            managed=False, operations=("attach", "update", "detach", "nodes"),
            attach_model=DaskAttachSpec,
            examples=[{"name": "shared", "scheduler_address": "tcp://127.0.0.1:8786"},
                      {"name": "secure", "scheduler_address": "tls://127.0.0.1:8786", "tls_ca_file": "/path/ca.pem",
                       "tls_client_cert": "/path/client.pem", "tls_client_key": "/path/client.key"}]),
    }

    def __init__(self, workspace_id, store, settings):
        super().__init__(workspace_id, store, settings)
        self._probes: dict[tuple, tuple[float, asyncio.Future]] = {}

    # -- reading ---------------------------------------------------------------------------------
    async def list_targets(self, stored: list[dict]) -> list[Target]:
        return list(await asyncio.gather(*(self._target(r) for r in stored)))

    async def get_target(self, name: str, stored: dict | None) -> Target | None:
        return await self._target(stored) if stored else None

    async def _target(self, row: dict) -> Target:
        return self._cluster_target(row) if row["kind"] == MANAGED else await self._attached_target(row)

    def _cluster_target(self, row: dict) -> Target:
        spec, rt = row.get("spec") or {}, row.get("runtime") or {}
        running = row["state"] == "running"
        snapshot = rt.get("nodes") if running else None
        nodes = NodeCounts(**snapshot) if snapshot else NodeCounts(current=0, min=spec.get("min_nodes", 0),
                                                                     max=spec.get("max_nodes"))
        nodes.min, nodes.max = spec.get("min_nodes", 0), spec.get("max_nodes")
        props: dict[str, Any] = {}
        for k in ("scheduler_address", "dashboard_link", "log_file", "started"):
            if running and rt.get(k):
                props[k] = rt[k]
        if props.get("dashboard_link"):
            props["dashboard_path"] = dashboard_path_of(props["dashboard_link"])
        mem = spec.get("memory_limit_mb")
        # A node is one worker: its threads and its memory limit.
        size = Size(name="dask worker", vcpus=spec.get("threads_per_node", 2),
                    memory_gb=round(mem / 1024, 2) if mem else None)
        return stored_target(row, nodes=nodes, size=size, properties=props)

    async def _attached_target(self, row: dict) -> Target:
        spec = DaskAttachSpec.model_construct(**row["spec"])
        address = spec.scheduler_address
        if row["state"] != "running":
            return stored_target(row)
        try:
            identity = await self._identity(address, spec.security())
        except Unavailable as e:
            return stored_target(row, state=State.unknown, provider_state="unreachable",
                                 errors=[{"message": e.message, "code": "unreachable", "at": utcnow()}])
        workers = identity.get("workers") or {}
        states = [worker_state(w) for w in workers.values()]
        threads = {w.get("nthreads") for w in workers.values()}
        link = dashboard_of(identity, address)
        props = {"dashboard_link": link, "dashboard_path": dashboard_path_of(link), "scheduler_id": identity.get("id"),
                 "workers": len(workers), "threads": identity.get("total_threads"),
                 "memory_gb": round((identity.get("total_memory") or 0) / 2**30, 2)}
        size = None
        if len(threads) == 1 and None not in threads:
            size = Size(name=f"{threads.pop()} threads per worker")
        return stored_target(row, provider_state="connected", size=size, properties=props,
                             nodes=counts_of(states, min_nodes=None, max_nodes=None))

    async def _identity(self, address: str, files: dict | None, *, fresh: bool = False) -> dict:
        """The scheduler's identity, shared by concurrent readers and reused for a moment."""
        key = (address, tuple(sorted((files or {}).items())))
        now = time.monotonic()
        cached = self._probes.get(key)
        if cached is not None and not fresh:
            at, fut = cached
            ttl = PROBE_FAILURE_TTL if fut.done() and fut.exception() is not None else PROBE_TTL
            if not fut.done() or now - at < ttl:
                return await asyncio.shield(fut)
        fut = asyncio.ensure_future(scheduler_identity(address, files))
        self._probes[key] = (now, fut)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: every waiter re-raises it
        return await asyncio.shield(fut)

    async def nodes(self, target: Target) -> list[Node]:
        row = await self.store.get_target(self.workspace_id, target.name)
        if row is None:
            return []
        if target.kind == MANAGED:
            if row["state"] != "running":
                return []
            out = []
            for w in (row["runtime"].get("workers") or []):
                if w["state"] == "preparing":
                    out.append(Node(id=w["id"], state="preparing", properties={"name": w.get("name")}))
                else:
                    out.append(node_of(w["id"], w, w["state"]))
            return out
        spec = DaskAttachSpec.model_construct(**row["spec"])
        identity = await self._identity(spec.scheduler_address, spec.security(), fresh=True)
        return [node_of(addr, w, worker_state(w)) for addr, w in (identity.get("workers") or {}).items()]

    async def usage(self) -> list[Usage]:
        rows = [r for r in await self.store.find_targets(kind=MANAGED) if r["workspace"] == self.workspace_id]
        running = [r for r in rows if r["state"] == "running"]
        workers = sum(((r["runtime"].get("nodes") or {}).get("current") or 0) for r in running)
        return [Usage(name="dask clusters running", unit="count", current=len(running)),
                Usage(name="dask workers", unit="count", current=workers)]

    async def route(self, target: Target) -> Route:
        from .route import DaskRoute  # distributed's client, only once a cell is sent

        row = await self.store.get_target(self.workspace_id, target.name)
        if target.kind == MANAGED:
            rt = row["runtime"]
            return DaskRoute(rt["scheduler_address"], security=rt.get("tls"), managed=True,
                             max_nodes=row["spec"].get("max_nodes"), dashboard_link=rt.get("dashboard_link"),
                             target=target.name)
        spec = DaskAttachSpec.model_construct(**row["spec"])
        identity = await self._identity(spec.scheduler_address, spec.security(), fresh=True)
        return DaskRoute(spec.scheduler_address, security=spec.security(), managed=False,
                         dashboard_link=dashboard_of(identity, spec.scheduler_address), target=target.name)

    # -- changing --------------------------------------------------------------------------------
    async def precheck(self, name: str, kind: str, spec: Spec, *, force: bool = False) -> None:
        if kind != ATTACHED:
            return
        assert isinstance(spec, DaskAttachSpec)
        allowed = self.settings.compute.allowed_hosts
        host = urlsplit(spec.scheduler_address).hostname
        if allowed and host not in allowed:
            raise InvalidRequest(f"scheduler_address: host {host!r} is not in the configured allowed_hosts "
                                 f"({', '.join(allowed)})", field="/scheduler_address", reason="host_not_allowed")
        if not force:
            for r in await self.store.find_targets(kind=ATTACHED):
                if r["workspace"] == self.workspace_id and r["spec"].get("scheduler_address") == spec.scheduler_address:
                    raise Conflict(f"{spec.scheduler_address} is already attached as '{r['name']}'; "
                                   "attach it again with --force to have two names for it",
                                   field="/scheduler_address", reason="already_attached")
        await self._identity(spec.scheduler_address, spec.security(), fresh=True)

    async def attach(self, name: str, kind: str, spec: Spec, ctx: OperationContext) -> Outcome:
        assert isinstance(spec, DaskAttachSpec)
        await ctx.progress(f"connecting to {spec.scheduler_address}")
        identity = await self._identity(spec.scheduler_address, spec.security(), fresh=True)
        n = len(identity.get("workers") or {})
        await ctx.progress(f"attached: {n} worker{'s' if n != 1 else ''}")
        return Outcome(State.running, provider_state="connected")

    async def detach(self, target: Target, ctx: OperationContext) -> None:
        await ctx.progress("forgetting the cluster; it keeps running")

    async def create(self, name: str, kind: str, spec: Spec, ctx: OperationContext) -> Outcome:
        target = await self.get_target(name, await self.store.get_target(self.workspace_id, name))
        return await self.start(target, ctx)

    async def update(self, target: Target, changes: dict[str, Any]) -> None:
        row = await self.store.get_target(self.workspace_id, target.name)
        spec = self.validate_spec(target.kind, {**row["spec"], **changes}, attach=target.kind == ATTACHED)
        # A running cluster's supervisor reads the store and rescales within a second.
        await self._write_spec(target.name, row["spec"], spec.public())

    async def start(self, target: Target, ctx: OperationContext) -> Outcome:
        cfg = self.settings.compute
        os.makedirs(cfg.runtime_dir, mode=0o700, exist_ok=True)
        argv = [sys.executable, "-m", "jupyter_compute.families.dask.supervisor",
                "--db", cfg.effective_db_path(), "--workspace", self.workspace_id, "--name", target.name,
                "--operation", ctx.op_id, "--runtime-dir", cfg.runtime_dir, "--ready-timeout", str(READY_TIMEOUT)]
        return await self.hand_off(ctx, argv, "cluster supervisor")

    async def stop(self, target: Target, ctx: OperationContext) -> Outcome:
        row = await self.store.get_target(self.workspace_id, target.name)
        rt = row["runtime"] if row else {}
        await ctx.progress("closing the workers and the scheduler")
        await procs.off_loop(terminate_cluster, rt)
        return Outcome(State.stopped, runtime={})

    async def restart(self, target: Target, ctx: OperationContext) -> Outcome:
        await self.stop(target, ctx)
        await self.store.update_target(self.workspace_id, target.name, runtime={})
        return await self.start(target, ctx)

    async def delete(self, target: Target, ctx: OperationContext) -> None:
        await self.stop(target, ctx)

    async def reconcile(self) -> None:
        """A supervisor killed from outside takes its scheduler with it: record that, and clear up."""
        for row in await self.store.find_targets(kind=MANAGED, workspace=self.workspace_id, states=["running"]):
            rt = row["runtime"]
            if not rt.get("supervisor"):
                continue
            if procs.alive(rt["supervisor"]):
                continue
            changed = await self.store.update_target(
                self.workspace_id, row["name"], expect_state="running",
                expect_runtime={"supervisor": rt["supervisor"]}, state="failed", runtime={},
                errors=[{"message": "the cluster's scheduler process exited unexpectedly", "code": "scheduler_died",
                         "at": utcnow().isoformat()}])
            if changed:
                await procs.off_loop(terminate_cluster, rt, 0.5)

    async def close(self) -> None:
        for _, fut in self._probes.values():
            fut.cancel()
        self._probes.clear()


# -- processes ---------------------------------------------------------------------------------------
def terminate_cluster(rt: dict, grace: float = STOP_GRACE) -> None:
    """Ask the supervisor to close its cluster; kill it and any worker left after the grace period."""
    workers = [w["ident"] for w in rt.get("workers") or [] if w.get("ident")]
    procs.terminate(rt.get("supervisor"), workers, grace)
    if rt.get("dir"):
        shutil.rmtree(rt["dir"], ignore_errors=True)
