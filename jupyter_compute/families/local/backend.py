"""This machine and its local kernels: the embedded default, which needs no account.

``this-machine`` (kind ``local``) is always there. A ``local-kernel`` is a persistent ipykernel
with its own interpreter and environment, the local counterpart of an Azure ML compute
instance. Each runs under a small detached supervisor (``supervisor``) that owns the
kernel process, enforces the memory limit and idle shutdown, and records in the store when the
kernel answers or dies, so the kernel outlives the server, CLI call or notebook that started it.
"""
from __future__ import annotations

import asyncio
import glob
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import psutil
from pydantic import Field, field_validator

from ...core import processes as procs
from ...core.errors import Conflict
from ...core.models import TRANSITIONAL, Node, Size, Spec, State, Target, Usage, keep, utcnow
from ...core.backend import Backend, KindSpec, OperationContext, Outcome, stored_target
from ...core.kernels import KernelSpecInfo, TargetKernel, end_recorded_kernels
from ...core.route import HereRoute, Route

THIS_MACHINE = "this-machine"
_VERSION = ".".join(map(str, sys.version_info[:2]))
#: Seconds one probe of this machine (memory, load, GPUs) serves every list and get that asks.
MACHINE_PROBE_TTL = 1.0


def resolve_python(value: str) -> str:
    """An interpreter, venv or conda env path, or a bare name on PATH, to one executable file.

    The value is never run through a shell and never split: it names one file.
    """
    if any(c in value for c in "\0\n\r"):
        raise ValueError("must be a path without control characters")
    candidates: list[str] = []
    if os.sep in value or value.startswith("."):
        path = os.path.abspath(os.path.expanduser(value))
        if os.path.isdir(path):
            candidates = [os.path.join(path, "bin", "python"), os.path.join(path, "bin", "python3"),
                          os.path.join(path, "python.exe")]
        else:
            candidates = [path]
    else:
        found = shutil.which(value)
        if found:
            candidates = [found]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise ValueError(f"{value!r} is not an executable Python interpreter, venv or conda environment")


class LocalKernelSpec(Spec):
    python: str | None = Field(None, description="Interpreter, venv or conda env path; default: the Python running jupyter_compute.",
                               max_length=4096)
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables for the kernel (KEY=VALUE).")
    cwd: str | None = Field(None, description="Working directory of the kernel.", max_length=4096)
    memory_limit_mb: int | None = Field(None, ge=64, le=4_194_304,
                                        description="Stop the kernel when it uses more memory than this (MB).")
    idle_shutdown_minutes: int | None = Field(None, ge=1, le=43_200,
                                              description="Stop the kernel after this many idle minutes; off by default.")
    updatable = frozenset({"python", "env", "cwd", "memory_limit_mb", "idle_shutdown_minutes", "description", "tags"})

    @field_validator("python")
    @classmethod
    def _python(cls, v: str | None) -> str | None:
        return resolve_python(v) if v else v

    @field_validator("cwd")
    @classmethod
    def _cwd(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if any(c in v for c in "\0\n\r"):
            raise ValueError("must be a path without control characters")
        path = os.path.abspath(os.path.expanduser(v))
        if not os.path.isdir(path):
            raise ValueError(f"{v!r} is not an existing directory")
        return path

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not k or "=" in k or any(ord(c) < 32 for c in k) or "\0" in val:
                raise ValueError(f"{k!r} is not a valid environment variable name (no '=', no control characters)")
        return v


class ThisMachineSpec(Spec):
    pass


@lru_cache(maxsize=1)
def _gpus() -> tuple[dict, ...]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ()
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return ()
    gpus = []
    for line in out.strip().splitlines():
        name, _, mem = line.partition(",")
        gpus.append({"name": name.strip(), "memory_mb": int(mem.strip() or 0)})
    return tuple(gpus)


def _machine() -> tuple[Size, dict[str, Any]]:
    vm = psutil.virtual_memory()
    gpus = _gpus()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    size = Size(name=platform.machine() or "local", vcpus=psutil.cpu_count(), memory_gb=round(vm.total / 2**30, 1),
                gpus=len(gpus))
    props = {
        "hostname": socket.gethostname(), "platform": platform.platform(), "python": sys.executable,
        "load_1m": round(load[0], 2), "load_5m": round(load[1], 2), "load_15m": round(load[2], 2),
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory_used_gb": round((vm.total - vm.available) / 2**30, 2),
        "memory_available_gb": round(vm.available / 2**30, 2),
        "gpu_list": list(gpus),
    }
    return size, props


class LocalBackend(Backend):
    kinds = {
        "local": KindSpec(
            "local", "This machine", "The machine this server runs on. Always running; cannot be stopped or deleted.",
            managed=True, operations=("nodes",)),
        "local-kernel": KindSpec(
            "local-kernel", "Local kernels",
            "A persistent ipykernel on this machine with its own interpreter, environment and working directory.",
            managed=True, operations=("create", "update", "start", "stop", "restart", "delete", "nodes"),
            create_model=LocalKernelSpec, keeps_variables=True,
            examples=[{"name": "analysis"}, {"name": "big-mem", "memory_limit_mb": 8192, "idle_shutdown_minutes": 60,
                                             "env": {"OMP_NUM_THREADS": "2"}}]),
    }

    def __init__(self, workspace_id, store, settings):
        super().__init__(workspace_id, store, settings)
        self._created = utcnow()
        self._built: dict[tuple[str, str], Target] = {}
        self._probe: tuple[float, asyncio.Future] | None = None
        self._connections: dict[tuple[str, Any], tuple[dict[str, Any], int | None]] = {}

    # -- reading ---------------------------------------------------------------------------------
    async def list_targets(self, stored: list[dict]) -> list[Target]:
        machine = await self._this_machine()
        return [machine, *[self._kernel_target(r) for r in stored]]

    async def get_target(self, name: str, stored: dict | None) -> Target | None:
        if name == THIS_MACHINE:
            return await self._this_machine()
        return self._kernel_target(stored) if stored else None

    async def _machine(self) -> tuple[Size, dict[str, Any]]:
        """This machine's size and load, probed at most once a second: under load, fifty lists
        at once share one probe instead of queueing fifty on the thread pool."""
        now = time.monotonic()
        if self._probe is None or now - self._probe[0] > MACHINE_PROBE_TTL:
            self._probe = (now, asyncio.ensure_future(asyncio.to_thread(_machine)))
        return await asyncio.shield(self._probe[1])

    async def _this_machine(self) -> Target:
        size, props = await self._machine()
        return Target(name=THIS_MACHINE, workspace=self.workspace_id, kind="local", managed=True,
                      state=State.running, size=size,
                      nodes={"current": 1, "min": 1, "max": 1, "running": 1},
                      created=self._created, modified=utcnow(), properties=props)

    def _kernel_target(self, row: dict) -> Target:
        # Every write to a row moves its `modified`, so a Target built from the same (name,
        # modified) is still true; listing 1,000 targets then costs little more than the read.
        key = (row["name"], row["modified"])
        cached = self._built.get(key)
        if cached is not None:
            return cached
        if len(self._built) > 20_000:
            self._built.clear()
        target = self._built[key] = keep(self._build_kernel_target(row))
        return target

    def _build_kernel_target(self, row: dict) -> Target:
        rt = row.get("runtime") or {}
        spec = row.get("spec") or {}
        props: dict[str, Any] = {"python": rt.get("python") or spec.get("python") or sys.executable}
        for k in ("kernel_pid", "log_file", "started"):
            if rt.get(k) is not None:
                props[k] = rt[k]
        idle_at = None
        if row["state"] == "running" and spec.get("idle_shutdown_minutes") and rt.get("last_activity"):
            idle_at = datetime.fromisoformat(rt["last_activity"]) + timedelta(minutes=spec["idle_shutdown_minutes"])
        size = None
        if spec.get("memory_limit_mb"):
            size = Size(name="memory-limited", memory_gb=round(spec["memory_limit_mb"] / 1024, 2))
        running = row["state"] == "running"
        return stored_target(row, properties=props, idle_shutdown_at=idle_at, size=size,
                             nodes={"current": 1 if running else 0, "min": 0, "max": 1,
                                    "running": 1 if running else 0})

    def rename_refusal(self, target: Target) -> str | None:
        if target.kind != "local-kernel":
            return f"'{target.name}' is this machine itself: its name is fixed"
        return None

    def refusal(self, target: Target, action: str) -> str:
        if target.kind == "local":
            return f"'{THIS_MACHINE}' is the machine this server runs on: it is always running and cannot be {action}ed"
        return super().refusal(target, action)

    def check_name(self, kind: str, name: Any) -> str:
        name = super().check_name(kind, name)
        if name == THIS_MACHINE:
            raise Conflict(f"'{THIS_MACHINE}' names this machine; choose another name", field="/name",
                           reason="name_taken")
        return name

    async def nodes(self, target: Target) -> list[Node]:
        host = socket.gethostname()
        if target.kind == "local":
            return [Node(id=host, state="running", address="127.0.0.1",
                         properties={"vcpus": target.size.vcpus, "memory_gb": target.size.memory_gb,
                                     "gpus": target.size.gpus})]
        row = await self.store.get_target(self.workspace_id, target.name)
        rt = row["runtime"] if row else {}
        if target.state != State.running:
            return []
        pid = rt.get("kernel_pid")
        rss = await asyncio.to_thread(procs.tree_rss_mb, pid) if pid else None
        return [Node(id=f"{host}:{pid}", state="running", address="127.0.0.1",
                     properties={"pid": pid, "memory_mb": round(rss, 1) if rss is not None else None})]

    async def field_choices(self, kind: str, field: str) -> dict[str, Any] | None:
        if kind == "local-kernel" and field == "python":
            from .pythons import find_pythons
            return {"pythons": await asyncio.to_thread(find_pythons)}
        return None

    async def sizes(self) -> list[Size]:
        size, _ = await self._machine()
        return [size]

    async def usage(self) -> list[Usage]:
        rows = [r for r in await self.store.find_targets(kind="local-kernel") if r["workspace"] == self.workspace_id]
        running = [r for r in rows if r["state"] == "running"]
        vm = await asyncio.to_thread(psutil.virtual_memory)
        pids = [r["runtime"].get("kernel_pid") for r in running if r["runtime"].get("kernel_pid")]
        used = sum(await asyncio.gather(*(asyncio.to_thread(procs.tree_rss_mb, p) for p in pids))) if pids else 0.0
        return [Usage(name="local kernels running", unit="count", current=len(running), limit=None),
                Usage(name="kernel memory", unit="MB", current=round(used, 1), limit=round(vm.total / 1e6))]

    async def route(self, target: Target) -> Route:
        if target.kind == "local":
            return HereRoute(target=target.name, kind=target.kind)
        # A start rewrites the row (and so its `modified`) with the new connection file: the route
        # of a target seen at the same `modified` is still the same, and costs no read.
        key = (target.name, target.modified)
        cached = self._connections.get(key)
        if cached is None:
            row = await self.store.get_target(self.workspace_id, target.name)
            rt = row["runtime"]
            connection = await asyncio.to_thread(procs.read_json, rt["connection_file"])
            cached = (connection, rt.get("kernel_pid"))
            if self._kernel_target(row).modified == target.modified:
                if len(self._connections) > 1_000:
                    self._connections.clear()
                self._connections[key] = cached
        from ...transport.kernel import KernelRoute  # zmq and jupyter_client, only once a cell is sent
        return KernelRoute(dict(cached[0]), cached[1], target=target.name,
                           explain=lambda: self._why_it_ended(target.name))

    async def _why_it_ended(self, name: str) -> str | None:
        """Why a target's kernel is gone, in the words of whoever ended it, once the store says so
        (the supervisor records it as it ends the kernel); None if it does not say."""
        while True:
            row = await self.store.get_target(self.workspace_id, name)
            if row is None:
                return f"the target '{name}' was deleted; its kernel and variables are gone"
            if row["state"] not in ("running", "stopping"):
                break
            await asyncio.sleep(0.05)
        state, errors = row["state"], row.get("errors") or []
        if state == "failed" and errors:
            message = errors[-1]["message"]
            return message if message.startswith("the kernel of") else f"the kernel of '{name}' stopped: {message}"
        if row.get("provider_state") == "idle shutdown":
            minutes = (row.get("spec") or {}).get("idle_shutdown_minutes")
            return (f"the kernel of '{name}' was stopped after {minutes} idle minutes (its idle shutdown); "
                    "its variables are gone")
        if state in ("restarting", "starting"):
            return f"the kernel of '{name}' was restarted from outside this notebook; its variables are gone"
        return (f"the kernel of '{name}' was stopped from outside this notebook (the Compute panel, the "
                "command line or another notebook); its variables are gone")

    # -- changing --------------------------------------------------------------------------------
    async def create(self, name: str, kind: str, spec: Spec, ctx: OperationContext) -> Outcome:
        target = await self.get_target(name, await self.store.get_target(self.workspace_id, name))
        return await self.start(target, ctx)

    async def update(self, target: Target, changes: dict[str, Any]) -> None:
        row = await self.store.get_target(self.workspace_id, target.name)
        merged = {**row["spec"], **changes}
        spec = self.validate_spec(target.kind, merged, attach=False)
        await self._write_spec(target.name, row["spec"], spec.public())

    async def start(self, target: Target, ctx: OperationContext) -> Outcome:
        cfg = self.settings.compute
        os.makedirs(cfg.runtime_dir, mode=0o700, exist_ok=True)
        argv = [sys.executable, "-m", "jupyter_compute.families.local.supervisor",
                "--db", cfg.effective_db_path(), "--workspace", self.workspace_id, "--name", target.name,
                "--operation", ctx.op_id, "--runtime-dir", cfg.runtime_dir,
                "--ready-timeout", str(cfg.kernel_ready_timeout)]
        return await self.hand_off(ctx, argv, "kernel supervisor")

    async def stop(self, target: Target, ctx: OperationContext, *, why: str = "stopped") -> Outcome:
        row = await self.store.get_target(self.workspace_id, target.name)
        rt = row["runtime"] if row else {}
        await ctx.progress("shutting the kernel down")
        await procs.off_loop(end_recorded_kernels, self.store.sync, self.workspace_id, target.name,
                             f"the target '{target.name}' was {why}")
        await procs.off_loop(_terminate, rt)
        procs.remove_quietly(rt.get("connection_file"))
        return Outcome(State.stopped, runtime={})

    async def restart(self, target: Target, ctx: OperationContext) -> Outcome:
        await self.stop(target, ctx, why="restarted")
        await self.store.update_target(self.workspace_id, target.name, runtime={})
        return await self.start(target, ctx)

    async def delete(self, target: Target, ctx: OperationContext) -> None:
        await self.stop(target, ctx, why="deleted")
        # Its kernels' logs go with it (a stop keeps them, to read why a kernel ended).
        await asyncio.to_thread(_remove_logs, self.settings.compute.runtime_dir, self.workspace_id, target.name)

    # -- kernels for notebooks ---------------------------------------------------------------------
    def kernel_specs(self, row: dict) -> list[KernelSpecInfo]:
        if row["kind"] != "local-kernel":
            return []
        spec, rt = row.get("spec") or {}, row.get("runtime") or {}
        python = spec.get("python") or sys.executable
        version = rt.get("python_version") or (_VERSION if python == sys.executable else None)
        label = f"Python {version}" if version else "Python"
        return [KernelSpecInfo(f"{label} · {row['name']} (local kernel)",
                               metadata={"kind": row["kind"], "python": python})]

    async def kernel(self, target: Target, variant: str = "") -> TargetKernel:
        from .kernels import LocalTargetKernel
        if target.kind != "local-kernel":
            return await super().kernel(target, variant)
        row = await self.store.get_target(self.workspace_id, target.name)
        return LocalTargetKernel(self, target, row)

    async def reconcile(self) -> None:
        """Bring the store in line with the processes: a kernel killed from outside, or a target
        left in a transitional state by an operation whose process died."""
        rows = await self.store.find_targets(kind="local-kernel", workspace=self.workspace_id,
                                             states=[State.running.value, *(s.value for s in TRANSITIONAL)])
        busy = None
        for row in rows:
            rt, state = row["runtime"], row["state"]
            if state == "running" and rt.get("kernel") and not procs.alive(rt["kernel"]):
                await self.store.update_target(
                    self.workspace_id, row["name"], expect_state="running", expect_runtime={"kernel": rt["kernel"]},
                    state="failed", runtime={},
                    errors=[{"message": "the kernel process exited unexpectedly", "code": "kernel_died",
                             "at": utcnow().isoformat()}])
            elif State(state).transitional:
                if busy is None:
                    busy = {op["target"] for op in await self.store.running_operations(self.workspace_id)}
                if row["name"] in busy:
                    continue
                if state == State.stopping.value and procs.alive(rt.get("supervisor")):
                    continue  # the supervisor is ending its kernel itself (idle shutdown, memory limit)
                if rt.get("kernel") and procs.alive(rt["kernel"]) and procs.alive(rt.get("supervisor")):
                    await self.store.update_target(self.workspace_id, row["name"], expect_state=state,
                                                   state="running")
                else:
                    await procs.off_loop(_terminate, rt, 2.0)
                    await self.store.update_target(
                        self.workspace_id, row["name"], expect_state=state, state="failed", runtime={},
                        errors=[{"message": f"the operation that was {state} it ended before it finished; "
                                            "start it again", "code": "interrupted", "at": utcnow().isoformat()}])


def _remove_logs(runtime_dir: str, workspace: str, name: str) -> None:
    """The logs of a target's kernel and of notebooks' kernels on it: ``kernel-WS-NAME-<8 hex>.log``
    and ``notebook-WS-NAME-<12 hex>.log`` (exact lengths, so target ``a`` never takes ``a-b``'s)."""
    stem = glob.escape(f"{workspace}-{name}-")
    for pattern in (f"kernel-{stem}{'?' * 8}.log", f"notebook-{stem}{'?' * 12}.log"):
        for path in glob.glob(os.path.join(glob.escape(runtime_dir), pattern)):
            procs.remove_quietly(path)


def _terminate(rt: dict, grace: float = 5.0) -> None:
    """Ask the supervisor to shut its kernel down; kill whatever is left after the grace period."""
    procs.terminate(rt.get("supervisor"), [rt.get("kernel")], grace)


