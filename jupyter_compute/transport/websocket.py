"""The websocket route: run code in a kernel of any Jupyter server, over its channels websocket.

A Jupyter server (a JupyterHub, a colleague's workstation, an Azure ML compute instance) gives
REST for kernels (``jupyter_client.JupyterClient``) and one websocket per client carrying the
kernel's shell, iopub, stdin and control channels. ``WebsocketRoute`` speaks the websocket with
the kernel route's behaviour: live output, errors, input, interrupt (through REST), and push/pull,
whose bytes travel as comm messages cut into chunks well under the server's per-message limit
(tornado's default is 10 MiB).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import inspect
import json
import logging
import secrets
import struct
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator, Hashable, Protocol

from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session

from ..core.errors import BackendRefused, ComputeError, InvalidRequest, Unavailable
from . import in_kernel as _helper
from ..core.route import ExecutionError, ExecutionResult, MessageHandler, StdinHandler, iopub_message
from .jupyter_client import V1_PROTOCOL, Authorizer, JupyterClient, KernelGone
from .messaging import MessagingRoute, cancel_and_wait
from .transfer import RunSilent, Transport, helper_failed

if TYPE_CHECKING:
    import aiohttp  # imported where it is used: a process that reaches no Jupyter server never loads it

log = logging.getLogger(__name__)

#: Tornado's default ``websocket_max_message_size``: a larger message closes the connection.
SERVER_MESSAGE_LIMIT = 10 * 2**20
#: Bytes of transfer data per websocket message, in either direction.
CHUNK_BYTES = 4 * 2**20
#: Writes smaller than this are gathered into one message (the protocol writes 8-byte lengths).
COALESCE_BYTES = 256 * 2**10
#: Seconds between websocket pings; a server silent for half of this after a ping is gone.
HEARTBEAT = 5.0
#: A transfer that receives nothing for this long has stalled.
TRANSFER_IDLE = 120.0


# -- websocket framing (jupyter_server's two kernel protocols) --------------------------------------
def _pack(obj: Any) -> bytes:
    return json.dumps(obj, default=json_default, ensure_ascii=False).encode("utf-8")


def encode_v1(channel: str, msg: dict, buffers: list) -> bytes:
    parts = [_pack(msg["header"]), _pack(msg["parent_header"]), _pack(msg["metadata"]), _pack(msg["content"]),
             *[memoryview(b).cast("B") for b in buffers]]
    chan = channel.encode()
    offsets = [8 * (1 + 1 + len(parts) + 1)]
    offsets.append(offsets[-1] + len(chan))
    for p in parts:
        offsets.append(offsets[-1] + len(p))
    head = struct.pack(f"<{len(offsets) + 1}Q", len(offsets), *offsets)
    return b"".join([head, chan, *parts])


def decode_v1(data: bytes) -> tuple[str, dict]:
    view = memoryview(data)
    (n,) = struct.unpack_from("<Q", view, 0)
    offsets = struct.unpack_from(f"<{n}Q", view, 8)
    channel = bytes(view[offsets[0]:offsets[1]]).decode()
    parts = [view[offsets[i]:offsets[i + 1]] for i in range(1, n - 1)]
    msg = {"header": json.loads(bytes(parts[0])), "parent_header": json.loads(bytes(parts[1])),
           "metadata": json.loads(bytes(parts[2])), "content": json.loads(bytes(parts[3])),
           "buffers": parts[4:]}
    return channel, msg


def encode_legacy(channel: str, msg: dict, buffers: list) -> bytes | str:
    body = {k: msg[k] for k in ("header", "parent_header", "metadata", "content")}
    body["channel"] = channel
    if not buffers:
        return json.dumps(body, default=json_default, ensure_ascii=False)
    parts = [_pack(body), *[memoryview(b).cast("B") for b in buffers]]
    offsets = [4 * (len(parts) + 1)]
    for p in parts[:-1]:
        offsets.append(offsets[-1] + len(p))
    return b"".join([struct.pack(f"!{len(parts) + 1}I", len(parts), *offsets), *parts])


def decode_legacy(data: bytes | str) -> tuple[str, dict]:
    if isinstance(data, str):
        msg = json.loads(data)
        msg["buffers"] = []
    else:
        view = memoryview(data)
        (n,) = struct.unpack_from("!I", view, 0)
        offsets = list(struct.unpack_from(f"!{n}I", view, 4)) + [len(view)]
        msg = json.loads(bytes(view[offsets[0]:offsets[1]]))
        msg["buffers"] = [view[offsets[i]:offsets[i + 1]] for i in range(1, n)]
    return msg.pop("channel", None) or "shell", msg


# -- the route -------------------------------------------------------------------------------------
class KernelKeeper(Protocol):
    """What the owning backend does when the route finds its kernel gone or its server lost."""

    async def recover(self, kernel_id: str) -> tuple[str, str]:
        """A live kernel to use instead of ``kernel_id`` (which the server no longer has), and
        a sentence telling the person what happened (the namespace is lost)."""

    async def lost(self, kernel_id: str, message: str, *, reachable: bool) -> None:
        """Record that the server went away (``reachable`` False) or the kernel restarted."""


class WebsocketRoute(MessagingRoute):
    name = "jupyter"

    def __init__(self, url: str, kernel_id: str, auth: Authorizer | None = None, *, target: str = "",
                 keeper: KernelKeeper | None = None, notice: str | None = None,
                 chunk_bytes: int = CHUNK_BYTES, max_message_bytes: int = SERVER_MESSAGE_LIMIT,
                 heartbeat: float = HEARTBEAT):
        if not isinstance(kernel_id, str) or not kernel_id:
            raise InvalidRequest("a kernel id is required to reach a Jupyter server's kernel")
        super().__init__(target, _CommTransport(self))
        self.client = JupyterClient(url, auth)
        self.url = self.client.url
        self.kernel_id = kernel_id
        self.keeper = keeper
        self.chunk_bytes = min(chunk_bytes, max_message_bytes - 64 * 2**10)
        self.max_message_bytes = max_message_bytes
        self.heartbeat = heartbeat
        #: Told to the person with the next cell's output (e.g. that a new kernel replaced a lost one).
        self.notice = notice
        self._session_id = uuid.uuid4().hex
        # The server signs what it forwards to the kernel; this key only keeps Session from
        # warning that signing is off.
        self._session = Session(key=secrets.token_hex(16).encode(), session=self._session_id,
                                username="jupyter_compute")
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._v1 = False
        self._reader: asyncio.Task | None = None
        self._closing = False
        self._send_lock = asyncio.Lock()
        self._pipes: dict[str, _CommPipe] = {}
        self._tasks: set[asyncio.Task] = set()

    @property
    def where(self) -> str:
        return f"'{self.target}'" if self.target else f"the Jupyter server at {self.url}"

    # -- session -----------------------------------------------------------------------------------
    @property
    def key(self) -> Hashable:
        return (self.name, self.url, self.kernel_id)

    async def open(self, timeout: float | None = 30.0) -> None:
        if self._ws is not None:
            return
        loop = self._begin()
        try:
            try:
                self._ws = await self._connect(timeout)
            except KernelGone:
                if self.keeper is None:
                    raise
                self.kernel_id, self.notice = await self.keeper.recover(self.kernel_id)
                self._ws = await self._connect(timeout)
        except Unavailable as e:
            if self.keeper is not None:
                with contextlib.suppress(Exception):
                    await self.keeper.lost(self.kernel_id, e.message, reachable=False)
            await self.client.close()
            raise ExecutionError(e.message, reason="server_unreachable") from None
        except BaseException:
            await self.client.close()
            raise
        self._v1 = self._ws.protocol == V1_PROTOCOL
        self._reader = loop.create_task(self._read(self._ws), name="jupyter-compute-websocket")
        try:
            reply = await self._request("shell", "kernel_info_request", {}, timeout=timeout)
        except BaseException:
            await self.close()
            raise
        self.kernel_info = reply.get("content", {})

    async def _connect(self, timeout: float | None) -> aiohttp.ClientWebSocketResponse:
        return await self.client.open_channels(self.kernel_id, self._session_id, heartbeat=self.heartbeat,
                                               timeout=timeout)

    async def close(self) -> None:
        self._closing = True
        await cancel_and_wait(self._reader)
        self._reader = None
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 5)
            self._ws = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        await self.client.close()
        self._fail_pending(ExecutionError("the connection to the target was closed"))

    def _declare_dead(self, why: str, *, reachable: bool, told: bool = False) -> None:
        err = ExecutionError(why, reason="connection_lost" if not reachable else "kernel_restarted")
        if self._set_dead(err) and not told and not self._closing and self.keeper is not None:
            task = asyncio.ensure_future(self._tell_keeper(why, reachable))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _tell_keeper(self, why: str, reachable: bool) -> None:
        try:
            await self.keeper.lost(self.kernel_id, why, reachable=reachable)
        except Exception:
            log.exception("recording the lost connection to %s failed", self.url)

    def _fail_pending(self, err: Exception) -> None:
        super()._fail_pending(err)
        for pipe in list(self._pipes.values()):
            pipe.finish(str(err))

    # -- transport ---------------------------------------------------------------------------------
    @property
    def _connected(self) -> bool:
        return self._ws is not None

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        import aiohttp

        why = "the server closed the connection"
        try:
            async for m in ws:
                if m.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    if m.type == aiohttp.WSMsgType.ERROR:
                        why = f"the connection failed ({type(ws.exception()).__name__})"
                    continue
                try:
                    channel, msg = (decode_v1(m.data) if self._v1 and m.type == aiohttp.WSMsgType.BINARY
                                    else decode_legacy(m.data))
                    msg["msg_type"] = msg["header"].get("msg_type")
                    msg["msg_id"] = msg["header"].get("msg_id")
                except Exception as e:  # a malformed message: drop it, keep reading
                    log.debug("dropped a websocket message from %s: %s", self.url, e)
                    continue
                try:
                    self._dispatch(channel, msg)
                except Exception:
                    log.exception("handling a %s message failed", channel)
            exc = ws.exception()
            if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
                why = f"the server stopped answering pings for {self.heartbeat:g} s"
            elif ws.close_code == 1009:
                why = ("the server refused a message as too large (its websocket_max_message_size is below "
                       f"{self.chunk_bytes / 2**20:g} MiB)")
            elif ws.close_code not in (None, 1000, 1001, 1005, 1006):
                why = f"the server closed the connection (code {ws.close_code})"
        except asyncio.CancelledError:
            raise
        except Exception as e:
            why = f"the connection broke ({type(e).__name__})"
        if not self._closing:
            message = (f"the connection to the Jupyter server at {self.url} was lost: {why}. "
                       "Whatever the target was running may not have finished; the next cell "
                       "reconnects once the server answers again.")
            # Recorded before the cell hears of it, so the target's state already says so.
            if self.keeper is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.keeper.lost(self.kernel_id, message, reachable=False), 5)
            self._declare_dead(message, reachable=False, told=True)

    def _dispatch(self, channel: str, msg: dict) -> None:
        if channel == "iopub":
            t, c = msg["msg_type"], msg["content"]
            if t == "status" and c.get("execution_state") in ("restarting", "dead"):
                what = ("was restarted (by a restart, or by the server after it died, for example out of memory)"
                        if c["execution_state"] == "restarting" else "died and could not be restarted")
                self._declare_dead(f"the kernel of {self.where} {what}; its variables are lost", reachable=True)
                return
            if t in ("comm_msg", "comm_close"):
                pipe = self._pipes.get(c.get("comm_id"))
                if pipe is not None:
                    if t == "comm_close":
                        pipe.finish()
                    else:
                        pipe.receive(c.get("data") or {}, msg.get("buffers") or [])
                    return
        super()._dispatch(channel, msg)

    async def _send(self, channel: str, msg: dict, buffers: list | None = None) -> None:
        import aiohttp

        self._ensure_open()
        buffers = buffers or []
        data = (encode_v1 if self._v1 else encode_legacy)(channel, msg, buffers)
        size = len(data.encode()) if isinstance(data, str) else len(data)
        if size > self.max_message_bytes:
            raise ExecutionError(
                f"a {msg['msg_type']} of {size / 2**20:.1f} MiB is larger than the "
                f"{self.max_message_bytes / 2**20:g} MiB a Jupyter server accepts in one websocket message; "
                "move large data with --push instead",
                reason="message_too_large")
        async with self._send_lock:
            try:
                if isinstance(data, str):
                    await self._ws.send_str(data)
                else:
                    await self._ws.send_bytes(data)
            except (ConnectionError, aiohttp.ClientError, RuntimeError) as e:
                raise ExecutionError(f"sending to the Jupyter server at {self.url} failed: {type(e).__name__}",
                                     reason="connection_lost") from None

    # -- execution ---------------------------------------------------------------------------------
    def _deliver_notice(self, on_message: MessageHandler | None) -> None:
        notice, self.notice = self.notice, None
        if notice and on_message is not None:
            on_message(iopub_message("stream", {"name": "stderr", "text": f"jupyter_compute: {notice}\n"}))

    async def execute(self, code: str, *, on_message: MessageHandler | None = None,
                      stdin: StdinHandler | None = None, timeout: float | None = None) -> ExecutionResult:
        self._ensure_open()
        self._deliver_notice(on_message)
        return await super().execute(code, on_message=on_message, stdin=stdin, timeout=timeout)

    async def interrupt(self) -> None:
        """Through the server's REST interrupt, which signals or messages the kernel as its spec says."""
        self._ensure_open()
        try:
            await self.client.interrupt(self.kernel_id)
        except (Unavailable, BackendRefused, KernelGone) as e:
            raise ExecutionError(f"could not interrupt {self.where}: {e.message}") from None

    # -- variables ---------------------------------------------------------------------------------
    async def _open_pipe(self, token: str) -> "_CommPipe":
        comm_id = uuid.uuid4().hex
        pipe = _CommPipe(self, comm_id, self._loop)
        self._pipes[comm_id] = pipe
        try:
            await self._send("shell", self._msg("comm_open", {
                "comm_id": comm_id, "target_name": TRANSFER_TARGET,
                "data": {"token": token, "chunk": self.chunk_bytes}}))
        except BaseException:
            self._pipes.pop(comm_id, None)
            raise
        return pipe

    async def _pipe_send(self, comm_id: str, data: dict, buffers: list) -> None:
        await self._send("shell", self._msg("comm_msg", {"comm_id": comm_id, "data": data}), buffers)

    async def _close_pipe(self, pipe: "_CommPipe") -> None:
        self._pipes.pop(pipe.comm_id, None)
        pipe.finish("the transfer was closed")
        if self.is_open:
            with contextlib.suppress(ComputeError):
                await self._send("shell", self._msg("comm_close", {"comm_id": pipe.comm_id, "data": {}}))


# -- moving variables over comms -------------------------------------------------------------------
class _CommPipe(_helper.ChunkedStream):
    """This side of one transfer: a blocking byte stream over a comm, used from a worker thread.

    What it sends goes out as comm messages of at most the route's ``chunk_bytes``, sent on the
    route's loop; what the target's comm messages bring is read in order.
    """

    def __init__(self, route: WebsocketRoute, comm_id: str, loop: asyncio.AbstractEventLoop):
        super().__init__(self._send_now, route.chunk_bytes, route.where, timeout=TRANSFER_IDLE,
                         gather=COALESCE_BYTES)
        self.route = route
        self.comm_id = comm_id
        self._loop = loop

    # loop side
    def receive(self, data: dict, buffers: list) -> None:
        error = data.get("error")
        self.feed(buffers, f"the transfer helper failed on {self.route.where}: {error}" if error else None)

    # worker-thread side
    def _send_now(self, chunk: Any) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.route._pipe_send(self.comm_id, {}, [chunk]), self._loop)
        try:
            fut.result(self.timeout)
        except ComputeError as e:
            raise ConnectionError(e.message) from None
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise ConnectionError(f"sending to {self.route.where} stalled for {self.timeout:g} s") from None


class _CommTransport(Transport):
    """Transfers over a comm of the route. The target's kernel runs the protocol in a thread of
    its own, so its shell stays free to receive the comm messages that carry our bytes."""

    def __init__(self, route: WebsocketRoute):
        self._route = route

    @contextlib.asynccontextmanager
    async def connect(self, run_silent: RunSilent, where: str) -> AsyncIterator[_CommPipe]:
        reply = await run_silent(target_install_code())
        if reply.status != "ok":
            raise helper_failed(where, reply)
        token = secrets.token_hex(16)
        pipe = await self._route._open_pipe(token)
        try:
            if not _helper.check_token(await asyncio.to_thread(_helper.recv_frame, pipe, 256), token):
                raise _helper.ProtocolError("the target answered with the wrong token")
            yield pipe
        finally:
            await self._route._close_pipe(pipe)


_TARGET_SOURCE = inspect.getsource(_helper)
_TARGET_DIGEST = hashlib.sha256(_TARGET_SOURCE.encode()).hexdigest()[:16]
_TARGET_MODULE = f"_jupyter_compute_comm_helper_{_TARGET_DIGEST}"
#: The comm target the helper registers; named after its source, so a kernel that loaded an
#: older helper gets this one alongside.
TRANSFER_TARGET = f"jupyter_compute.transfer.{_TARGET_DIGEST}"


def target_install_code() -> str:
    """Code run silently on the target before each transfer; loads the helper once per kernel."""
    return (
        "def __jupyter_compute_install():\n"
        "    import sys, types\n"
        f"    m = sys.modules.get({_TARGET_MODULE!r})\n"
        "    if m is None:\n"
        f"        m = types.ModuleType({_TARGET_MODULE!r})\n"
        f"        exec(compile({_TARGET_SOURCE!r}, '<jupyter_compute comm helper>', 'exec'), m.__dict__)\n"
        "        sys.modules[m.__name__] = m\n"
        f"    m.register_comm_target({TRANSFER_TARGET!r}, get_ipython())\n"
        "try:\n"
        "    __jupyter_compute_install()\n"
        "finally:\n"
        "    del __jupyter_compute_install\n"
    )
