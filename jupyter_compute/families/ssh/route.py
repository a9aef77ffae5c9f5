"""The SSH route: the kernel route over an ``ssh`` target's tunnel, plus what only its supervisor knows.

The kernel's channels reach local loopback ports that the target's supervisor carries over the
SSH connection. The route also follows the supervisor's control socket: when the link drops, a
cell that was running fails at once with a clear message (its output is lost; the kernel and its
namespace live on), and the same route works again once the link is back. Interrupts fall back
to a signal sent over SSH; variables travel through a port forwarded from the remote loopback.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Hashable

from ...core.route import ExecutionError, TransferError
from ...transport.kernel import KernelRoute
from ...transport.messaging import cancel_and_wait
from ...transport.transfer import LoopbackRendezvous, Rendezvous

CONTROL_TIMEOUT = 15.0


async def _open_control(path: str, request: dict, timeout: float = CONTROL_TIMEOUT):
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    writer.write(json.dumps(request).encode() + b"\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), timeout)
    if not line:
        writer.close()
        raise ConnectionError("the supervisor closed the connection")
    return reader, writer, json.loads(line)


class SSHRendezvous(Rendezvous):
    """A loopback listener here, reached from the remote loopback through a forwarded port."""

    def __init__(self, control: str):
        self.control = control
        self._local = LoopbackRendezvous()
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> tuple[str, int]:
        _, port = await self._local.open()
        try:
            _, self._writer, answer = await _open_control(self.control, {"op": "forward", "port": port})
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            await self._local.close()
            raise TransferError(f"cannot reach the target's SSH supervisor to move variables: {e}") from None
        if not answer.get("ok"):
            await self.close()
            raise TransferError(f"cannot open a path to move variables: {answer.get('error')}")
        # The forward lives as long as this control connection stays open.
        return answer["host"], int(answer["port"])

    async def accept(self, token: str):
        return await self._local.accept(token)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        await self._local.close()


class SSHRoute(KernelRoute):
    name = "ssh"

    def __init__(self, connection: dict, control: str, *, remote_pid: int | None = None, target: str = ""):
        # No local pid: the kernel's process is on another machine.
        super().__init__(connection, None, target=target, rendezvous=lambda: SSHRendezvous(control))
        if not control:
            raise ExecutionError("the target has no SSH supervisor to talk to; restart it")
        self.control = control
        self.remote_pid = remote_pid
        self.link_up = False
        self._events: asyncio.Task | None = None
        self._watch_writer: asyncio.StreamWriter | None = None

    @property
    def key(self) -> Hashable:
        return (*super().key, self.control)

    async def open(self, timeout: float | None = 30.0) -> None:
        if self._client is not None:
            return
        try:
            reader, writer, first = await _open_control(self.control, {"op": "watch"})
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            raise ExecutionError(f"the SSH supervisor of {self.where} does not answer ({e}); "
                                 "is the target running?") from None
        if not first.get("up"):
            writer.close()
            raise ExecutionError(f"the SSH link to {self.where} is down and being re-established; "
                                 "try again in a moment")
        self.link_up = True
        self._watch_writer = writer
        try:
            await super().open(timeout)
        except BaseException:
            writer.close()
            self._watch_writer = None
            raise
        self._events = asyncio.get_running_loop().create_task(self._follow(reader), name="jupyter-compute-ssh-link")

    async def _follow(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except (OSError, ValueError):
                line = b""
            if not line:
                self._declare_dead("its SSH supervisor ended (the target was stopped, or its link could not "
                                   "be re-established)")
                return
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == "link":
                    self._on_link(bool(event.get("up")))
                elif event.get("event") == "closing":
                    self._declare_dead(event.get("why") or "its SSH supervisor ended")
                    return

    def _on_link(self, up: bool) -> None:
        was, self.link_up = self.link_up, up
        if was and not up:
            self._fail_pending(ExecutionError(
                f"the SSH link to {self.where} was cut while the cell ran, so its output and result are lost; "
                "the cell may still be running there. The remote kernel and its variables live on, and the "
                "link is being re-established by itself: check the target's state, then run the cell again "
                "if needed."))

    def _heartbeat_missed(self) -> None:
        # Over SSH a silent heartbeat usually means a cut link, which the supervisor reports
        # (and re-establishes); the kernel's own exit it reports too.
        return

    async def _interrupt_otherwise(self) -> None:
        # The kernel's process is on the other machine: its supervisor signals it there.
        try:
            reader, writer, answer = await _open_control(self.control, {"op": "interrupt"})
            writer.close()
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            raise ExecutionError(f"{self.where} did not accept the interrupt: {e}") from None
        if not answer.get("ok"):
            raise ExecutionError(f"{self.where} did not accept the interrupt: {answer.get('error', 'not running')}")

    async def close(self) -> None:
        await cancel_and_wait(self._events)
        self._events = None
        if self._watch_writer is not None:
            self._watch_writer.close()
            self._watch_writer = None
        await super().close()
