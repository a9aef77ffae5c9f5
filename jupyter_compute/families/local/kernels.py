"""A notebook's own kernel on a ``local-kernel`` target: a fresh ipykernel in the target's
interpreter, environment, working directory and memory limit, beside the target's kernel.

It is a child of the process that asked for it (the Jupyter server, nbclient), which it follows
out of the world when that process dies (ipykernel's parent poller, through ``JPY_PARENT_PID``);
it is recorded in the store, so the target's stop ends it and reconcile finds it after any crash.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from ...core import processes as procs
from ...core.errors import BackendRefused
from ...core.kernels import TargetKernel

if TYPE_CHECKING:
    from ...core.models import Target

#: How long a new kernel has to bind its ports and write them down.
READY_TIMEOUT = 60.0
#: Seconds between checks of the kernel's memory against the target's limit.
MEMORY_POLL = 1.0


def memory_reason(target: str, used_mb: float, limit_mb: int) -> str:
    return (f"the kernel of '{target}' was stopped: it used {used_mb:,.0f} MB, above its memory limit of "
            f"{limit_mb:,} MB")


class LocalTargetKernel(TargetKernel):
    def __init__(self, backend: Any, target: Target, row: dict):
        self.backend = backend
        self.store = backend.store
        self.workspace = backend.workspace_id
        self.target = target.name
        spec = row.get("spec") or {}
        self.python = spec.get("python") or sys.executable
        self.env = dict(spec.get("env") or {})
        self.cwd = spec.get("cwd") or os.path.expanduser("~")
        self.memory_limit = spec.get("memory_limit_mb")
        self.runtime_dir = backend.settings.compute.runtime_dir
        self.proc: subprocess.Popen | None = None
        self.kernel_id = ""
        self.conn_file = ""
        self.log_file = ""
        self._watchdog: asyncio.Task | None = None
        #: Whether it was asked to end (a stop, a restart, a shutdown): any other exit is a death.
        self._ending = False

    async def start(self, kernel_id: str, env: dict[str, str], connection: dict | None = None) -> dict[str, Any]:
        try:
            return await self._start(kernel_id, env, connection)
        except BackendRefused:
            if not connection:
                raise
            # The old ports were taken meanwhile: a kernel on ports of its own (clients reconnect).
            return await self._start(kernel_id, env, None)

    async def _start(self, kernel_id: str, env: dict[str, str], connection: dict | None) -> dict[str, Any]:
        self.kernel_id = kernel_id or uuid.uuid4().hex
        self._ending = False  # a new process: its own death is news again
        os.makedirs(self.runtime_dir, mode=0o700, exist_ok=True)
        stem = f"notebook-{self.workspace}-{self.target}-{self.kernel_id[:12]}"
        self.conn_file = os.path.join(self.runtime_dir, stem + ".json")
        self.log_file = os.path.join(self.runtime_dir, stem + ".log")
        procs.remove_quietly(self.conn_file)
        if connection:
            # A restart: the new kernel takes the old one's ports and key, so connected clients carry on.
            await asyncio.to_thread(_write_private, self.conn_file, connection)
        # Otherwise the kernel binds its own ports and writes them, with a key of its own, to
        # conn_file: ports chosen here and bound there could be taken in between.
        full_env = {**os.environ, **env, **self.env,
                    # ipykernel ends itself when this process (its parent) is gone.
                    "JPY_PARENT_PID": str(os.getpid()),
                    # Marks the process as a kernel of this target, for anyone looking at the machine.
                    "JUPYTER_COMPUTE_KERNEL": f"{self.workspace}/{self.target}/{self.kernel_id}"}
        argv = [self.python, "-m", "ipykernel_launcher", "-f", self.conn_file, "--ip=127.0.0.1"]
        self.proc = await procs.off_loop(self._spawn, argv, full_env)
        await self.store.add_kernel(self.kernel_id, self.workspace, self.target, procs.identity(),
                                    process=procs.identity(self.proc.pid),
                                    runtime={"pid": self.proc.pid, "connection_file": self.conn_file,
                                             "log_file": self.log_file, "python": self.python})
        try:
            info = await self._connection_info()
        except BaseException:
            await self.stop(force=True)
            await self.cleanup()
            raise
        if self.memory_limit:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch_memory())
        return info

    def _spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.log_file, "ab", buffering=0)
        os.chmod(self.log_file, 0o600)
        try:
            # A session of its own, so an interrupt reaches the kernel's whole process group and
            # nothing sent to the caller's terminal reaches the kernel.
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=self.cwd, close_fds=True, start_new_session=True)
        except OSError as e:
            raise BackendRefused(f"could not run {self.python} for a kernel of '{self.target}': {e}",
                                   reason="launch_failed") from None
        finally:
            log.close()

    async def _connection_info(self) -> dict[str, Any]:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            code = self.proc.poll()
            if code is not None:
                tail = await asyncio.to_thread(procs.tail_of, self.log_file)
                hint = ""
                if "No module named ipykernel" in tail:
                    hint = f" ipykernel is not installed for {self.python}: run '{self.python} -m pip install ipykernel'."
                raise BackendRefused(f"the kernel on '{self.target}' exited as it started (code {code}).{hint} "
                                       f"Its last output: {tail[-600:]}", reason="kernel_start_failed")
            info = await asyncio.to_thread(procs.kernel_connection, self.conn_file)
            if info is not None:
                return info
            if time.monotonic() > deadline:
                raise BackendRefused(f"the kernel on '{self.target}' did not start within {READY_TIMEOUT:.0f} s; "
                                       f"see {self.log_file}", reason="kernel_start_timeout")
            await asyncio.sleep(0.02)

    async def _watch_memory(self) -> None:
        while self.proc is not None and self.proc.poll() is None:
            used = await asyncio.to_thread(procs.tree_rss_mb, self.proc.pid)
            if used > self.memory_limit:
                self.reason = memory_reason(self.target, used, self.memory_limit)
                await self.store.update_kernel(self.kernel_id, reason=self.reason)
                await self.stop(force=True)
                return
            await asyncio.sleep(MEMORY_POLL)

    async def poll(self) -> int | None:
        if self.proc is None:
            return 0
        code = self.proc.poll()
        if code is not None and self.reason is None:
            row = await self.store.get_kernel(self.kernel_id)
            self.reason = ((row or {}).get("runtime") or {}).get("reason")
            if self.reason is None and not self._ending:
                # Killed from outside (the out-of-memory killer, a person), or it crashed.
                self.reason = f"the kernel on '{self.target}' died: {procs.exit_words(code)}"
                await self.store.update_kernel(self.kernel_id, reason=self.reason)
        return code

    def expect_end(self) -> None:
        self._ending = True

    async def send_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGKILL):
            self._ending = True
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signum)

    async def stop(self, *, force: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        await self.send_signal(signal.SIGKILL if force else signal.SIGTERM)
        if not force:
            deadline = time.monotonic() + 5
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await self.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait)

    async def cleanup(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.proc is not None and self.proc.poll() is not None:
            self.proc = None
        procs.remove_quietly(self.conn_file)
        if self.kernel_id:
            await self.store.remove_kernel(self.kernel_id)

    def info(self) -> dict[str, Any]:
        return {"pid": self.proc.pid if self.proc else None, "connection_file": self.conn_file}


def _write_private(path: str, info: dict) -> None:
    keep = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port", "ip", "key", "transport",
            "signature_scheme", "kernel_name")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({k: info[k] for k in keep if k in info}, f)
