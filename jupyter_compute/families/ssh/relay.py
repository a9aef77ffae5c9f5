"""This machine's end of a notebook's kernel on an SSH machine: the five channels a client connects
to, relayed to the kernel's own through the target's tunnels.

The relay passes messages through unchanged (the kernel and its clients share one key), so it adds
one loopback hop and no re-signing. What it adds is knowledge of what is under way: each
``execute_request`` is noted until its reply passes. When the SSH link is cut, every cell still
running is answered here at once, as a kernel would answer a failed cell (an ``error`` on iopub,
an ``idle`` status, an ``execute_reply`` with status ``error``), with the reason in words. The
kernel itself lives on there and is reached again through the same ports once the link is back;
whatever a cell answered here sends late is dropped rather than shown twice.

Messages are passed on from the event loop's readiness callbacks, draining each socket without
blocking: no future or task per message, which is what a kernel's round trip here pays for.

A kernel that sits idle while a cell it was sent has not begun is woken: ipykernel 7.0 to 7.3 (the
newest a Python 3.10 can have) can leave a request unread when it arrives while the kernel sends a
reply, until something new happens on its socket. A second connection asking for ``kernel_info``
is such a thing; the cell then runs. Whether to wake is judged once a second while cells are under
way, from the kernel's last message alone: a message passing through pays only for being kept.

Shell and stdin go out with one identity of the relay's own, so the kernel's ``input()`` requests,
which it addresses to the identity a cell came from, arrive on the relay's stdin socket; the
client's identity travels inside, as in any ROUTER-DEALER proxy.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import uuid
from typing import Any, Callable

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from ...transport.kernel import CONTROL_ONLY, UNREAD_CHECK, wake_kernel
from ...transport.kernel_bridge import bind_channel

log = logging.getLogger(__name__)

CHANNELS = ("shell", "control", "stdin", "iopub", "hb")
ROUTED = ("shell", "control", "stdin", "hb")
DELIM = b"<IDS|MSG>"
#: Answered cells whose late messages are still dropped; the oldest beyond this are forgotten.
MAX_REMEMBERED = 1_000
#: Seconds between tries to pass on messages a full queue (a peer that reads nothing) held back.
RETRY = 0.05
#: Wakes in a row that brought no cell's answer: after these, the cells left are not the fault's.
MAX_FRUITLESS_WAKES = 3


class KernelRelay:
    def __init__(self, connection: dict[str, Any], where: str):
        key = connection.get("key") or ""
        self.session = Session(key=key.encode() if isinstance(key, str) else key,
                               signature_scheme=connection.get("signature_scheme") or "hmac-sha256",
                               username="jupyter_compute")
        self.where = where
        self.ctx = zmq.Context()
        self.front: dict[str, zmq.Socket] = {}
        self.back: dict[str, zmq.Socket] = {}
        self.ports: dict[str, int] = {}
        self._identity = uuid.uuid4().hex.encode()
        #: Cells under way, by msg_id: (the client's identities, the request's header).
        self.running: dict[str, tuple[list[bytes], dict]] = {}
        #: Cells answered here: their late messages from the kernel are dropped.
        self.answered: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handlers: dict[zmq.Socket, Callable[[list[bytes]], None]] = {}
        self._held: dict[zmq.Socket, collections.deque] = {}
        self._tunnels: dict[str, int] = {}
        #: The kernel's last message on iopub, and how many cells were sent; both as the last check saw them.
        self._last_iopub: list[bytes] | None = None
        self._cells_sent = 0
        self._checked: tuple[list[bytes] | None, int] | None = None
        self._checking: asyncio.TimerHandle | None = None
        self._waking: asyncio.Task | None = None
        #: How many times a second connection was opened to wake a kernel that sat on a cell.
        self.wakes = 0
        self._fruitless_wakes = 0

    def open(self, tunnels: dict[str, int], prefer: dict[str, Any] | None = None) -> dict[str, int]:
        """Bind the client side (on ``prefer``'s ports where free) and connect to the kernel's
        channels through the tunnel ports ``tunnels``; the client side's ports."""
        front_kinds = {"shell": zmq.ROUTER, "control": zmq.ROUTER, "stdin": zmq.ROUTER, "hb": zmq.ROUTER,
                       "iopub": zmq.PUB}
        for ch in CHANNELS:
            self.front[ch], self.ports[ch] = bind_channel(self.ctx, front_kinds[ch], ch, prefer)
            back = self.ctx.socket(zmq.SUB if ch == "iopub" else zmq.DEALER)
            back.linger = 0
            if ch == "iopub":
                back.setsockopt(zmq.SUBSCRIBE, b"")
            else:
                back.identity = self._identity if ch in ("shell", "stdin") else uuid.uuid4().hex.encode()
            back.connect(f"tcp://127.0.0.1:{tunnels[ch]}")
            self.back[ch] = back
        self._tunnels = dict(tunnels)
        self._loop = asyncio.get_running_loop()
        for ch in ROUTED:
            self._watch(self.front[ch], lambda frames, ch=ch: self._to_kernel(ch, frames))
        for ch in CHANNELS:
            self._watch(self.back[ch], lambda frames, ch=ch: self._from_kernel(ch, frames))
        return dict(self.ports)

    # -- relaying -------------------------------------------------------------------------------------
    def _watch(self, sock: zmq.Socket, handle: Callable[[list[bytes]], None]) -> None:
        self._handlers[sock] = handle
        self._loop.add_reader(sock.getsockopt(zmq.FD), self._drain, sock)
        self._loop.call_soon(self._drain, sock)

    def _drain(self, sock: zmq.Socket) -> None:
        """Pass on every message ``sock`` holds (its descriptor only says that something changed)."""
        handle = self._handlers.get(sock)
        if handle is None:
            return
        try:
            while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                handle(sock.recv_multipart(zmq.NOBLOCK, copy=True))
        except zmq.Again:
            pass
        except zmq.ZMQError as e:  # closed under us
            log.debug("relay socket of %s: %s", self.where, e)

    def _send(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        held = self._held.get(sock)
        if held is not None:
            held.append(frames)
            return
        try:
            sock.send_multipart(frames, zmq.NOBLOCK, copy=True)
        except zmq.Again:  # the peer's queue is full: keep the order, try again shortly
            self._held[sock] = collections.deque([frames])
            self._loop.call_later(RETRY, self._release, sock)
        # A send can take the descriptor's signal that messages arrived on this socket: look now.
        if sock in self._handlers:
            self._loop.call_soon(self._drain, sock)

    def _release(self, sock: zmq.Socket) -> None:
        held = self._held.get(sock)
        while held:
            try:
                sock.send_multipart(held[0], zmq.NOBLOCK, copy=True)
            except zmq.Again:
                self._loop.call_later(RETRY, self._release, sock)
                return
            except zmq.ZMQError:
                break
            held.popleft()
        self._held.pop(sock, None)

    def _to_kernel(self, channel: str, frames: list[bytes]) -> None:
        if channel == "shell":
            self._note_request(frames)
        self._send(self.back[channel], frames)

    def _from_kernel(self, channel: str, frames: list[bytes]) -> None:
        if channel == "iopub":
            self._last_iopub = frames
        if self.running or self.answered:
            parent = _parent_id(frames)
            if parent in self.answered:
                return  # answered here when the link was cut: not shown twice
            if channel == "shell" and parent in self.running:
                self.running.pop(parent, None)
                self._fruitless_wakes = 0
        self._send(self.front[channel], frames)

    def _note_request(self, frames: list[bytes]) -> None:
        try:
            i = frames.index(DELIM)
            header = json.loads(frames[i + 2])
        except (ValueError, IndexError):
            return  # not a Jupyter message: the kernel will drop it
        if header.get("msg_type") == "execute_request":
            self.running[header["msg_id"]] = (frames[:i], header)
            self._cells_sent += 1
            if self._checking is None:
                self._checking = self._loop.call_later(UNREAD_CHECK, self._check_unread)

    # -- a cell an ipykernel 7.0-7.3 left unread -------------------------------------------------------
    def _check_unread(self) -> None:
        """While cells are under way: wake the kernel if, since the last check a second ago, no cell
        was sent and the kernel said nothing, and the last thing it said is that it is idle.

        Judged by what came, not when: a message passing through is only kept, not timed."""
        self._checking = None
        if not self.running or not self.back:
            self._checked = None
            return
        now = (self._last_iopub, self._cells_sent)
        if (self._checked is not None and now[0] is self._checked[0] and now[1] == self._checked[1]
                and _says_idle(now[0]) and (self._waking is None or self._waking.done())):
            if self._fruitless_wakes < MAX_FRUITLESS_WAKES:
                self._fruitless_wakes += 1
                self._waking = self._loop.create_task(self._wake())
        self._checked = now
        self._checking = self._loop.call_later(UNREAD_CHECK, self._check_unread)

    async def _wake(self) -> None:
        """Ask for kernel_info over a connection of its own: the new connection makes the kernel
        read what its socket holds, the unread cell included."""
        sock = zmq.asyncio.Context.shadow(self.ctx.underlying).socket(zmq.DEALER)
        sock.linger = 0
        try:
            sock.connect(f"tcp://127.0.0.1:{self._tunnels['shell']}")
        except zmq.ZMQError as e:  # the relay is closing
            sock.close(linger=0)
            log.debug("could not open a second shell connection on %s: %s", self.where, e)
            return
        self.wakes += 1
        log.info("the kernel on %s sat idle without beginning a cell; a second connection was opened to "
                 "wake it (ipykernel 7.0-7.3 can leave a request unread; 7.4 fixes it)", self.where)
        await wake_kernel(sock, self.session)

    # -- a cut link ------------------------------------------------------------------------------------
    def link_lost(self, reason: str) -> None:
        """Answer every cell under way as failed, with ``reason``."""
        running, self.running = self.running, {}
        for msg_id, (idents, header) in running.items():
            parent = {"header": header}
            content = {"ename": "ConnectionError", "evalue": reason, "traceback": [reason]}
            self.session.send(self.front["iopub"], "error", content, parent=parent,
                              ident=b"kernel.relay.error")
            self.session.send(self.front["shell"], "execute_reply",
                              {"status": "error", "execution_count": None, **content}, parent=parent,
                              ident=idents)
            self.session.send(self.front["iopub"], "status", {"execution_state": "idle"}, parent=parent,
                              ident=b"kernel.relay.status")
            self.answered[msg_id] = None
            while len(self.answered) > MAX_REMEMBERED:
                self.answered.popitem(last=False)
            log.info("a cell on %s was answered as failed: %s", self.where, reason)
        if running:
            self._loop.call_soon(self._drain, self.front["shell"])

    async def close(self) -> None:
        if self._checking is not None:
            self._checking.cancel()
            self._checking = None
        if self._waking is not None and not self._waking.done():
            self._waking.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._waking
        for sock in list(self._handlers):
            self._loop.remove_reader(sock.getsockopt(zmq.FD))
        self._handlers, self._held = {}, {}
        for sock in (*self.front.values(), *self.back.values()):
            sock.close(linger=0)
        self.front, self.back = {}, {}
        self.ctx.term()


def _parent_id(frames: list[bytes]) -> str | None:
    """The msg_id of the request a kernel's message answers, read from its frames."""
    try:
        i = frames.index(DELIM)
        return json.loads(frames[i + 3]).get("msg_id")
    except (ValueError, IndexError, AttributeError):
        return None


def _says_idle(frames: list[bytes] | None) -> bool:
    """Whether a kernel's iopub message says its shell is idle (not a status for a control request)."""
    if not frames:
        return False
    try:
        i = frames.index(DELIM)
        header = json.loads(frames[i + 2])
        if header.get("msg_type") != "status":
            return False
        if json.loads(frames[i + 3]).get("msg_type") in CONTROL_ONLY:
            return False
        return json.loads(frames[i + 5]).get("execution_state") == "idle"
    except (ValueError, IndexError, AttributeError):
        return False
