"""The kernel route: run code in a Jupyter kernel over its zmq channels, given its connection info.

The protocol is ``MessagingRoute``'s; this module carries it over zmq and learns of the
kernel's death from its process (or its heartbeat). Used by ``local-kernel`` targets, and by SSH
targets once their connection info is forwarded.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any, Awaitable, Callable, Hashable

import zmq

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import HBChannel
from traitlets import Type

from ..core.errors import InvalidRequest
from ..core.route import ExecutionError
from .messaging import MessagingRoute, _Request, cancel_and_wait
from .transfer import LoopbackRendezvous, Rendezvous, SocketTransport

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("ip", "transport", "key", "shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
#: What identifies one kernel's channels: an open route to other ones reaches another kernel.
SAME_KERNEL_KEYS = ("ip", "transport", "shell_port", "iopub_port", "control_port", "key")
#: A kernel whose heartbeat stays silent this long after a missed beat is considered dead.
HEARTBEAT_GRACE = 5.0
#: How long the reason for a kernel's end may take to be recorded (its supervisor writes it as it ends it).
EXPLAIN_WAIT = 2.0
#: The channels a route reads; the heartbeat is the client's own.
CHANNELS = ("iopub", "shell", "control", "stdin")
#: A shell request the kernel has not begun while it sat idle this long may have been left unread.
UNREAD_CHECK = 1.0
#: How long a fresh connection waits for the kernel's answer before it is closed.
WAKE_WAIT = 5.0
#: Requests of the control channel: the status a kernel publishes for them says nothing of its shell.
CONTROL_ONLY = frozenset({"interrupt_request", "shutdown_request", "debug_request", "usage_request",
                          "create_subshell_request", "delete_subshell_request", "list_subshell_request"})


async def wake_kernel(sock: Any, session: Any) -> None:
    """Ask for kernel_info on ``sock``, a new asyncio connection to a kernel's shell, wait for the
    answer (at most ``WAKE_WAIT`` s) and close it. The new connection is what makes a kernel that
    left a request unread read its socket again, the unread request included."""
    try:
        session.send(sock, "kernel_info_request", {})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(sock.recv_multipart(), WAKE_WAIT)
    finally:
        sock.close(linger=0)


def check_connection(connection: Any) -> dict:
    if not isinstance(connection, dict):
        raise InvalidRequest("kernel connection info must be a dict (the contents of a connection file)")
    missing = [k for k in REQUIRED_KEYS if k not in connection]
    if missing:
        raise InvalidRequest(f"kernel connection info lacks {', '.join(missing)}")
    if connection["transport"] not in ("tcp", "ipc"):
        raise InvalidRequest(f"unknown kernel transport {connection['transport']!r}")
    return connection


class _NotifyingHB(HBChannel):
    """A heartbeat channel that tells the route (on its loop) when a beat is missed."""
    on_missed: Callable[[], None] | None = None

    def call_handlers(self, since_last_heartbeat: float) -> None:
        if self.on_missed is not None:
            self.on_missed()


class _Client(AsyncKernelClient):
    hb_channel_class = Type(_NotifyingHB)


class KernelRoute(MessagingRoute):
    name = "kernel"

    def __init__(self, connection: dict, pid: int | None = None, *, target: str = "",
                 rendezvous: Callable[[], Rendezvous] = LoopbackRendezvous,
                 explain: Callable[[], Awaitable[str | None]] | None = None):
        super().__init__(target, SocketTransport(rendezvous))
        self.connection = check_connection(connection)
        self.pid = pid
        #: Why the kernel went away, as whoever ended it recorded it (the memory limit, idle shutdown, a stop).
        self.explain = explain
        self._client: _Client | None = None
        self._readers: list[asyncio.Task] = []
        self._explaining: asyncio.Task | None = None
        self._pidfd: int | None = None
        self._hb_check: asyncio.Task | None = None
        self._waking: asyncio.Task | None = None
        #: Since when (loop time) the kernel's last status, for whichever client, says idle; None if busy or unknown.
        self._idle_since: float | None = None
        #: How many times a second connection was opened to wake a kernel that sat on a request.
        self.wakes = 0

    # -- transport ---------------------------------------------------------------------------------
    @property
    def _connected(self) -> bool:
        return self._client is not None

    async def _send(self, channel: str, msg: dict) -> None:
        if self._client is None:
            raise ExecutionError("the route is not open")
        getattr(self._client, f"{channel}_channel").send(msg)
        _rearm(self._client, channel)
        if channel == "shell":
            self._loop.call_later(UNREAD_CHECK, self._check_unread, msg["header"]["msg_id"])

    # -- requests an ipykernel 7.0-7.3 left unread ------------------------------------------------
    def _dispatch(self, channel: str, msg: dict) -> None:
        if (channel == "iopub" and msg["msg_type"] == "status"
                and (msg.get("parent_header") or {}).get("msg_type") not in CONTROL_ONLY):
            state = msg["content"].get("execution_state")
            if state == "idle":
                self._idle_since = self._loop.time()
            elif state == "busy":
                self._idle_since = None
        super()._dispatch(channel, msg)

    def _check_unread(self, msg_id: str) -> None:
        """If the kernel has sat idle since before it could have read this request, wake it.

        Those ipykernels send their shell replies raw on the socket their stream reads; a request
        that arrives during such a send is left unread until something new happens on the socket,
        such as another client connecting (fixed in ipykernel 7.4, which needs Python 3.11). A cell
        would wait for ever on a kernel that says it is idle.
        """
        req = self._requests.get(msg_id)
        if req is None or req.seen or self._client is None or self.is_dead:
            return
        idle = self._idle_since
        if idle is not None and self._loop.time() - idle >= UNREAD_CHECK and (
                self._waking is None or self._waking.done()):
            self._waking = self._loop.create_task(self._wake())
        self._loop.call_later(UNREAD_CHECK, self._check_unread, msg_id)

    async def _wake(self) -> None:
        """Ask for kernel_info over a connection of its own (``wake_kernel``)."""
        try:
            sock = self._client.connect_shell()
        except Exception as e:  # the route is closing; its own requests fail on their own
            log.debug("could not open a second shell connection: %s", e)
            return
        self.wakes += 1
        log.info("the kernel of %s sat idle without beginning a request; a second connection was "
                 "opened to wake it (ipykernel 7.0-7.3 can leave a request unread; 7.4 fixes it)", self.where)
        await wake_kernel(sock, self._session)

    async def _read(self, channel: str) -> None:
        socket = getattr(self._client, f"{channel}_channel").socket
        session = self._client.session
        while True:
            try:
                # recv, not the channel's poll-then-recv: pyzmq re-arms pending recvs after a send on
                # the same socket, but not polls, so a reply arriving as we send could be missed.
                raw = await socket.recv_multipart()
                _, parts = session.feed_identities(raw)
                msg = session.deserialize(parts)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a malformed or unsigned message: drop it, keep reading
                log.debug("dropped a message on %s: %s", channel, e)
                continue
            try:
                self._dispatch(channel, msg)
            except Exception:
                log.exception("handling a %s message failed", channel)

    # -- session -----------------------------------------------------------------------------------
    @property
    def key(self) -> Hashable:
        return (self.name, *(self.connection.get(k) for k in SAME_KERNEL_KEYS), self.pid)

    async def open(self, timeout: float | None = 30.0) -> None:
        if self._client is not None:
            return
        loop = self._begin()
        client = _Client()
        client.load_connection_info(self.connection)
        client.start_channels()
        self._client = client
        self._session = client.session
        self._readers = [loop.create_task(self._read(ch), name=f"jupyter-compute-{ch}") for ch in CHANNELS]
        watching = self._watch_pid()
        try:
            await asyncio.wait_for(self._handshake(), timeout)
        except (asyncio.TimeoutError, ExecutionError) as e:
            await self.close()
            why = f"no answer within {timeout:g} s" if isinstance(e, asyncio.TimeoutError) else e.message
            raise ExecutionError(f"the kernel of {self.where} did not answer: {why}") from None
        if not watching:
            # Without a process to watch, a heart that stops beating is how death shows.
            client.hb_channel.on_missed = lambda: loop.call_soon_threadsafe(self._heartbeat_missed)

    async def _handshake(self) -> None:
        """Ask for kernel_info until it is answered and its idle status comes on iopub.

        The status proves our iopub subscription is live, so no output of the first cell is lost.
        A kernel still starting answers a later request; earlier ones are simply ignored.
        """
        while True:
            self._ensure_open()
            msg = self._msg("kernel_info_request", {})
            req = self._requests[msg["msg_id"]] = _Request(self._loop)
            try:
                await self._send("shell", msg)
                reply = await asyncio.wait_for(asyncio.shield(req.reply), 1.0)
                await asyncio.wait_for(asyncio.shield(req.idle), 1.0)
            except asyncio.TimeoutError:
                continue
            finally:
                self._requests.pop(msg["msg_id"], None)
            self.kernel_info = reply.get("content", {})
            return

    async def close(self) -> None:
        for t in self._readers:
            await cancel_and_wait(t)
        self._readers = []
        if self._hb_check is not None:
            self._hb_check.cancel()
        await cancel_and_wait(self._waking)
        if self._explaining is not None:
            await cancel_and_wait(self._explaining)
        if self._pidfd is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._client is not None:
            self._client.stop_channels()
            self._client = None
        self._fail_pending(ExecutionError("the connection to the target was closed"))

    def _watch_pid(self) -> bool:
        """Learn of the kernel's death from the OS the moment it happens (Linux pidfd)."""
        if self.pid is None or not hasattr(os, "pidfd_open"):
            return False
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self._declare_dead("its process has exited")
            return True
        except OSError:
            return False
        self._loop.add_reader(self._pidfd, self._declare_dead, "its process has exited")
        return True

    def _heartbeat_missed(self) -> None:
        if self._hb_check is None or self._hb_check.done():
            self._hb_check = asyncio.ensure_future(self._confirm_heartbeat())

    async def _confirm_heartbeat(self) -> None:
        await asyncio.sleep(HEARTBEAT_GRACE)
        if self._client is not None and not self._client.hb_channel.is_beating():
            self._declare_dead("its heartbeat stopped")

    def _declare_dead(self, why: str) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._pidfd)
        if self.explain is None:
            self._set_dead(ExecutionError(f"the kernel of {self.where} stopped: {why}"))
            return
        if self._explaining is None:
            self._explaining = self._loop.create_task(self._explained(why))

    async def _explained(self, why: str) -> None:
        """Fail what waits with the recorded reason for the end, where one comes within a moment."""
        reason = None
        with contextlib.suppress(Exception):
            reason = await asyncio.wait_for(self.explain(), EXPLAIN_WAIT)
        self._set_dead(ExecutionError(reason or f"the kernel of {self.where} stopped: {why}"))

    # -- interrupt ---------------------------------------------------------------------------------
    async def interrupt(self) -> None:
        self._ensure_open()
        with contextlib.suppress(ExecutionError):
            reply = await self._request("control", "interrupt_request", {}, timeout=3.0)
            if reply["content"].get("status") == "ok":
                return
        await self._interrupt_otherwise()

    async def _interrupt_otherwise(self) -> None:
        """For kernels that cannot take an interrupt message (or whose control thread is stuck)."""
        # They still take a signal, when we know their process.
        if self.pid is None:
            raise ExecutionError(f"{self.target or 'the target'} did not accept the interrupt")
        try:
            os.kill(self.pid, signal.SIGINT)
        except ProcessLookupError:
            self._declare_dead("its process has exited")


def _rearm(client: AsyncKernelClient, channel: str) -> None:
    """Call after sending on a channel.

    jupyter_client sends through a plain shadow of the asyncio socket. That send can consume the
    readiness edge of a reply arriving at the same moment without waking our pending recv, and
    the reply then sits unread. Reading EVENTS through the asyncio socket re-checks and wakes it.
    """
    getattr(client, f"{channel}_channel").socket.get(zmq.EVENTS)
