"""A notebook's own kernel on an ``ssh`` target: a fresh ipykernel on the remote machine, started by
the target's supervisor and reached through its one SSH connection.

This side holds a control connection to the supervisor for as long as the kernel lives: it is the
kernel's lease. Signals and the stop go over it, the supervisor says over it why the kernel ended,
and when this process dies the connection closes and the supervisor ends the kernel there.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from typing import Any

from ...core import processes as procs
from ...core.errors import BackendRefused, Unavailable
from ...core.kernels import TargetKernel
from ...core.models import Target

#: How long the supervisor has to start the remote kernel and answer.
START_TIMEOUT = 90.0
REQUEST_TIMEOUT = 30.0


class SSHTargetKernel(TargetKernel):
    def __init__(self, backend: Any, target: Target, row: dict):
        self.store = backend.store
        self.target = target.name
        self.host = (row.get("spec") or {}).get("host", "the host")
        self.control = (row.get("runtime") or {}).get("control")
        self.kernel_id = ""
        self.remote_pid: int | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._answers: asyncio.Queue = asyncio.Queue()
        self._events: asyncio.Task | None = None
        self._exit_code: int | None = None

    async def start(self, kernel_id: str, env: dict[str, str], connection: dict | None = None) -> dict[str, Any]:
        self.kernel_id = kernel_id
        if not self.control:
            raise Unavailable(f"'{self.target}' has no SSH supervisor to start a kernel with; restart it",
                              reason="no_supervisor")
        try:
            self._reader, self._writer = await asyncio.wait_for(asyncio.open_unix_connection(self.control), 10)
        except (OSError, asyncio.TimeoutError) as e:
            raise Unavailable(f"the SSH supervisor of '{self.target}' does not answer ({e}); restart the target",
                              reason="no_supervisor") from None
        ports = {k: v for k, v in (connection or {}).items() if k.endswith("_port")}
        key = (connection or {}).get("key")
        self._send({"op": "kernel", "id": kernel_id, "owner": procs.identity(), "ports": ports,
                    "key": key.decode() if isinstance(key, bytes) else key})
        line = await asyncio.wait_for(self._reader.readline(), START_TIMEOUT)
        answer = json.loads(line) if line else {"ok": False, "error": "the SSH supervisor closed the connection"}
        if not answer.get("ok"):
            await self.cleanup()
            raise BackendRefused(f"a kernel could not be started on '{self.target}': {answer.get('error')}",
                                 reason="kernel_start_failed")
        self.remote_pid = answer.get("remote_pid")
        self._events = asyncio.get_running_loop().create_task(self._follow())
        return answer["connection"]

    def _send(self, request: dict) -> None:
        assert self._writer is not None
        self._writer.write(json.dumps(request).encode() + b"\n")

    async def _follow(self) -> None:
        """Read the lease: events the supervisor sends, and answers to our requests."""
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                with contextlib.suppress(ValueError):
                    msg = json.loads(line)
                    if msg.get("event") == "exited":
                        self.reason = self.reason or msg.get("reason")
                        self._exit_code = 1
                    else:
                        self._answers.put_nowait(msg)
        finally:
            if self._exit_code is None:
                self._exit_code = 1
                self.reason = self.reason or f"the SSH supervisor of '{self.target}' went away"
            self._answers.put_nowait({"ok": False, "error": "the lease ended"})

    async def _request(self, request: dict) -> dict:
        if self._writer is None or self._exit_code is not None:
            return {"ok": False, "error": "the kernel has ended"}
        self._send(request)
        try:
            return await asyncio.wait_for(self._answers.get(), REQUEST_TIMEOUT)
        except asyncio.TimeoutError:
            return {"ok": False, "error": "no answer"}

    async def poll(self) -> int | None:
        return self._exit_code

    async def send_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        await self._request({"op": "signal", "signal": name})

    async def stop(self, *, force: bool = False) -> None:
        if self._exit_code is None:
            await self._request({"op": "stop"})
            self._exit_code = -signal.SIGKILL if force else -signal.SIGTERM

    async def cleanup(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if self._events is not None:
            self._events.cancel()
            with contextlib.suppress(BaseException):
                await self._events
            self._events = None
        if self.kernel_id:
            await self.store.remove_kernel(self.kernel_id)

    def info(self) -> dict[str, Any]:
        return {"remote_pid": self.remote_pid}
