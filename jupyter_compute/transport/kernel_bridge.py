"""A kernel of another Jupyter server as a kernel of this machine: its five channels, bound on this
machine's loopback, carried over the server's kernel websocket.

A Jupyter server speaks REST and one websocket per client, not ZMQ; a kernel manager here speaks
ZMQ. ``KernelBridge`` binds the ZMQ sockets a kernel would (shell, control and stdin ROUTERs, an
iopub PUB, a heartbeat REP), checks and re-signs every message with a key of its own, and relays
it over the websocket (the ``v1.kernel.websocket.jupyter.org`` protocol when the server offers it,
with binary buffers, else the JSON one). A dropped websocket is reopened with the same session, so
the server replays what it buffered meanwhile, as JupyterLab itself does. ``ServerKernel`` is the
``TargetKernel`` of a target that is a Jupyter server (a ``jupyter`` target, an Azure ML compute
instance): a kernel started there through REST, interrupted and restarted through REST.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import signal
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from ..core.errors import ComputeError
from ..core.kernels import MARKER, TargetKernel
from .jupyter_client import V1_PROTOCOL, CredentialsRefused, JupyterClient, KernelGone
from .messaging import cancel_all
from .websocket import HEARTBEAT, decode_legacy, decode_v1, encode_legacy, encode_v1

if TYPE_CHECKING:
    import aiohttp  # imported where it is used: a process that reaches no Jupyter server never loads it

log = logging.getLogger(__name__)

ROUTED = ("shell", "control", "stdin")
#: How long a dropped websocket is tried again before the kernel is given up as unreachable.
RECONNECT_WINDOW = 30.0
#: Requests whose answer's destination is kept; the oldest beyond this are forgotten.
MAX_PENDING = 10_000


def bind_channel(ctx: zmq.asyncio.Context, kind: int, channel: str,
                 ports: dict[str, Any] | None) -> tuple[zmq.asyncio.Socket, int]:
    """A socket clients of a kernel connect to, on this machine's loopback: on ``ports``' port for
    ``channel`` where it is free (a restart keeps its clients), else on any."""
    sock = ctx.socket(kind)
    sock.linger = 0
    if kind == zmq.ROUTER:
        sock.router_handover = 1  # a client that reconnects takes its identity back
    wanted = int((ports or {}).get(f"{channel}_port") or 0)
    if wanted:
        try:
            sock.bind(f"tcp://127.0.0.1:{wanted}")
            return sock, wanted
        except zmq.ZMQError:
            log.warning("port %s of the %s channel was taken meanwhile; clients must reconnect", wanted, channel)
    return sock, sock.bind_to_random_port("tcp://127.0.0.1")


class KernelBridge:
    def __init__(self, client: JupyterClient, kernel_id: str | None, *, where: str,
                 on_dead: Callable[[str], None] | None = None,
                 on_shutdown: Callable[[bool], None] | None = None, key: str | None = None,
                 explain: Callable[[], Any] | None = None):
        self.client = client
        self.kernel_id = kernel_id
        self.where = where
        self.on_dead = on_dead
        #: Told of a client's shutdown_request (with its ``restart``): the server, not the kernel,
        #: must end or restart a kernel it manages, or it would take the exit for a crash.
        self.on_shutdown = on_shutdown
        #: Asked, while the websocket cannot be reopened, whether the target says why (it was stopped).
        self.explain = explain
        #: Signs this machine's side; a bridge that replaces another keeps its key, so clients carry on.
        self.key = key or secrets.token_hex(32)
        self.session = Session(key=self.key.encode(), signature_scheme="hmac-sha256", username="jupyter_compute")
        self.ctx = zmq.asyncio.Context()
        self.sockets: dict[str, zmq.asyncio.Socket] = {}
        self.ports: dict[str, int] = {}
        self._session_id = uuid.uuid4().hex
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._v1 = False
        self._tasks: list[asyncio.Task] = []
        self._send_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._closing = False
        #: Why the kernel can no longer be reached, once it cannot.
        self.dead: str | None = None
        #: The ROUTER identities each request came from, by its msg_id, for routing its answers.
        self._idents: collections.OrderedDict[str, list[bytes]] = collections.OrderedDict()

    # -- opening ---------------------------------------------------------------------------------------
    def bind(self, ports: dict[str, int] | None = None) -> None:
        """Bind the channels, on ``ports`` where free (a restart keeps its clients). Done before the
        server starts the kernel, which could otherwise be given a port this then takes."""
        if self.sockets:
            return
        kinds = {"shell": zmq.ROUTER, "control": zmq.ROUTER, "stdin": zmq.ROUTER, "iopub": zmq.PUB, "hb": zmq.REP}
        for channel, kind in kinds.items():
            self.sockets[channel], self.ports[channel] = bind_channel(self.ctx, kind, channel, ports)

    async def open(self, ports: dict[str, int] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """Bind the channels (if not yet) and connect to the kernel's websocket."""
        self.bind(ports)
        await self._connect(timeout)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._from_kernel()), loop.create_task(self._heartbeat()),
                       *(loop.create_task(self._to_kernel(ch)) for ch in ROUTED)]
        return self.connection_info()

    def connection_info(self) -> dict[str, Any]:
        return {"ip": "127.0.0.1", "transport": "tcp", "key": self.key, "signature_scheme": "hmac-sha256",
                **{f"{ch}_port": port for ch, port in self.ports.items()}}

    async def _connect(self, timeout: float | None) -> None:
        self._ws = await self.client.open_channels(self.kernel_id, self._session_id, heartbeat=HEARTBEAT,
                                                   timeout=timeout)
        self._v1 = self._ws.protocol == V1_PROTOCOL
        self._connected.set()

    # -- relaying ---------------------------------------------------------------------------------------
    async def _to_kernel(self, channel: str) -> None:
        """Requests of this machine's clients, checked against our key, to the kernel."""
        sock = self.sockets[channel]
        while True:
            frames = await sock.recv_multipart(copy=True)
            try:
                idents, parts = self.session.feed_identities(frames, copy=True)
                msg = self.session.deserialize(parts, content=True, copy=True)
            except Exception as e:  # unsigned or malformed: what the kernel itself would drop
                log.debug("dropped a %s message: %s", channel, e)
                continue
            buffers = [bytes(b) for b in msg.get("buffers") or []]
            body = {k: msg[k] for k in ("header", "parent_header", "metadata", "content")}
            self._remember(msg["header"].get("msg_id"), idents)
            if channel == "control" and msg["header"].get("msg_type") == "shutdown_request":
                restart = bool((msg.get("content") or {}).get("restart"))
                self.session.send(sock, "shutdown_reply", {"status": "ok", "restart": restart},
                                  parent=msg, ident=idents)
                if self.on_shutdown is not None:
                    self.on_shutdown(restart)
                continue
            try:
                await self._send(channel, body, buffers)
            except Exception as e:
                log.debug("could not relay a %s message to %s: %s", channel, self.where, e)

    async def _send(self, channel: str, msg: dict, buffers: list) -> None:
        await self._connected.wait()
        data = encode_v1(channel, msg, buffers) if self._v1 else encode_legacy(channel, msg, buffers)
        async with self._send_lock:
            if isinstance(data, str):
                await self._ws.send_str(data)
            else:
                await self._ws.send_bytes(data)

    async def _from_kernel(self) -> None:
        """Everything the kernel sends, re-signed with our key, to this machine's clients."""
        import aiohttp

        while True:
            ws = self._ws
            why = "the server closed the connection"
            try:
                async for frame in ws:
                    if frame.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                        try:
                            channel, msg = decode_v1(frame.data) if self._v1 else decode_legacy(frame.data)
                        except Exception as e:
                            log.debug("dropped a message from %s: %s", self.where, e)
                            continue
                        self._deliver(channel, msg)
                    elif frame.type == aiohttp.WSMsgType.ERROR:
                        why = str(ws.exception() or "a websocket error")
                        break
            except Exception as e:
                why = str(e)
            if self._closing:
                return
            self._connected.clear()
            if not await self._reconnect(why):
                return

    def _deliver(self, channel: str, msg: dict) -> None:
        buffers = [bytes(b) for b in msg.pop("buffers", None) or []]
        if channel == "iopub":
            self.session.send(self.sockets["iopub"], msg, buffers=buffers,
                              ident=f"kernel.{self.kernel_id}.{msg['header'].get('msg_type', '')}".encode())
        elif channel in ROUTED:
            # As a kernel does: to the socket identity the request came from (a Jupyter server's
            # websocket connection has one of its own, not the browser's session id). A message
            # whose request did not pass through here goes to the session that sent it, which is
            # the identity jupyter_client's own channels connect with.
            parent = msg.get("parent_header") or {}
            msg_id = parent.get("msg_id")
            idents = self._idents.get(msg_id)
            if idents is not None and msg["header"].get("msg_type", "").endswith("_reply"):
                self._idents.pop(msg_id, None)
            if idents is None:
                session = str(parent.get("session") or "").encode()
                idents = [session] if session else None
            if idents:
                self.session.send(self.sockets[channel], msg, buffers=buffers, ident=idents)

    def _remember(self, msg_id: str | None, idents: list) -> None:
        """Where the answer to request ``msg_id`` goes (the newest requests, should some never be answered)."""
        if not msg_id or not idents:
            return
        self._idents[msg_id] = [bytes(i) for i in idents]
        while len(self._idents) > MAX_PENDING:
            self._idents.popitem(last=False)

    async def _heartbeat(self) -> None:
        sock = self.sockets["hb"]
        while True:
            beat = await sock.recv_multipart()
            if self.dead is None:
                await sock.send_multipart(beat)

    async def _reconnect(self, why: str) -> bool:
        """Open the websocket again with the same session (the server replays what it buffered)."""
        deadline = time.monotonic() + RECONNECT_WINDOW
        delay = 0.1
        while not self._closing:
            try:
                await self._connect(10)
                log.info("reconnected to the kernel on %s", self.where)
                return True
            except KernelGone:
                self._die(f"the kernel on {self.where} is gone ({why}); the server may have restarted")
                return False
            except CredentialsRefused as e:
                self._die(e.message)
                return False
            except ComputeError as e:
                if self.explain is not None:
                    why = await self.explain()
                    if why:
                        self._die(why)
                        return False
                if time.monotonic() > deadline:
                    self._die(f"the connection to the Jupyter server at {self.client.url} was lost: {e.message}")
                    return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        return False

    def _die(self, reason: str) -> None:
        if self.dead is None:
            self.dead = reason
            if self.on_dead is not None:
                self.on_dead(reason)

    async def close(self) -> None:
        self._closing = True
        tasks, self._tasks = self._tasks, []
        await cancel_all(tasks)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 5)
            self._ws = None
        for sock in self.sockets.values():
            sock.close(linger=0)
        self.sockets = {}
        self.ctx.term()


class ServerKernel(TargetKernel):
    """A notebook's kernel on a Jupyter server target: started there over REST, reached by a bridge.

    A restart restarts the same kernel through REST and keeps the bridge, so connected clients
    carry on; a kernel the server no longer has (it restarted) is replaced by a new one there.
    """

    keeps_across_restart = True

    def __init__(self, client: JupyterClient, *, store: Any, workspace: str, target: str, kernel_name: str,
                 where: str, explain: Callable[[], Any] | None = None):
        self.client = client
        self.store = store
        self.workspace = workspace
        self.target = target
        self.kernel_name = kernel_name
        self.where = where
        #: Says why the kernel could no longer be reached, when the target's family can tell (an
        #: instance stopped from elsewhere); None when it cannot.
        self.explain = explain
        self.kernel_id = ""
        self.remote_id: str | None = None
        self.bridge: KernelBridge | None = None
        self._ended = False
        self._asked = False

    async def start(self, kernel_id: str, env: dict[str, str], connection: dict | None = None) -> dict[str, Any]:
        self.kernel_id = kernel_id
        return await self._start_there(connection)

    async def _start_there(self, connection: dict | None) -> dict[str, Any]:
        from ..core import processes as procs

        key = (connection or {}).get("key")
        self.bridge = KernelBridge(self.client, None, where=self.where, on_dead=self._dead,
                                   on_shutdown=self._shutdown_asked, explain=self.explain,
                                   key=key.decode() if isinstance(key, bytes) else key)
        try:
            self.bridge.bind({k: v for k, v in (connection or {}).items() if k.endswith("_port")})
            remote = await self.client.start_kernel(self.kernel_name or None)
            self.remote_id = self.bridge.kernel_id = remote["id"]
            if await self.store.get_kernel(self.kernel_id) is None:
                await self.store.add_kernel(self.kernel_id, self.workspace, self.target, procs.identity(),
                                            runtime={"remote_kernel": self.remote_id, "url": self.client.url})
            else:
                await self.store.update_kernel(self.kernel_id, remote_kernel=self.remote_id)
            return await self.bridge.open()
        except BaseException:
            await self.bridge.close()
            self.bridge = None
            raise

    def _dead(self, reason: str) -> None:
        self.reason = self.reason or reason

    def _shutdown_asked(self, restart: bool) -> None:
        # The client now waits for the kernel to be gone: say so, and leave the ending (or the
        # restart) to stop/cleanup or restart, done through the server's REST API.
        self._asked = True

    async def restart(self) -> dict[str, Any]:
        """Restart the kernel there (a fresh namespace); a kernel the server lost is started anew."""
        ended, self._ended, self._asked = self._ended, False, False
        self.reason = None
        if self.bridge is not None and self.bridge.dead is None and not ended:
            with contextlib.suppress(ComputeError):
                if await self.client.restart(self.remote_id):
                    return self.bridge.connection_info()
        info = self.bridge.connection_info() if self.bridge is not None else None
        if self.bridge is not None:
            await self.bridge.close()
        return await self._start_there(info)

    async def poll(self) -> int | None:
        if self._ended or self._asked:
            return 0
        if self.bridge is not None and self.bridge.dead is not None:
            row = await self.store.get_kernel(self.kernel_id)
            said = ((row or {}).get("runtime") or {}).get("reason")
            if said:  # ended on purpose from elsewhere (its target stopped): that is the reason
                self.reason = said
            elif self.explain is not None and not getattr(self, "_explained", False):
                self._explained = True
                why = await self.explain()
                if why:
                    self.reason = why
            return 1
        return None

    async def send_signal(self, signum: int) -> None:
        if signum == signal.SIGINT and self.remote_id:
            with contextlib.suppress(ComputeError):
                await self.client.interrupt(self.remote_id)
        elif signum in (signal.SIGTERM, signal.SIGKILL):
            await self.stop(force=signum == signal.SIGKILL)

    async def stop(self, *, force: bool = False) -> None:
        if self.remote_id and not self._ended:
            self._ended = True
            with contextlib.suppress(ComputeError):
                await self.client.shutdown(self.remote_id)

    async def cleanup(self) -> None:
        if not self._ended:
            await self.stop()
        if self.bridge is not None:
            await self.bridge.close()
            self.bridge = None
        await self.client.close()
        if self.kernel_id:
            await self.store.remove_kernel(self.kernel_id)


async def read_kernelspecs(client: JupyterClient, runtime: dict) -> None:
    """Note in ``runtime`` the kernelspecs a Jupyter server offers (kept while it is stopped)."""
    with contextlib.suppress(ComputeError):
        found = await client.kernelspecs()
        specs = found.get("kernelspecs") or {}
        runtime["kernelspecs"] = {
            name: {"display_name": (s.get("spec") or {}).get("display_name") or name,
                   "language": (s.get("spec") or {}).get("language") or "python"}
            for name, s in specs.items()
            # A server that is itself a jupyter_compute user offers its targets' kernels: not offered
            # again from here, which would only chain kernels through it.
            if isinstance(s, dict) and MARKER not in ((s.get("spec") or {}).get("metadata") or {})}
        runtime["default_kernelspec"] = found.get("default")


def server_kernel_specs(row: dict, what: str) -> list:
    """One kernel per kernelspec a Jupyter server target offers, as last read from it."""
    from ..core.kernels import KernelSpecInfo

    rt = row.get("runtime") or {}
    known = rt.get("kernelspecs") or {}
    name = row["name"]
    if not known:  # never read yet: the server's default kernel
        return [KernelSpecInfo(f"{name} ({what})", metadata={"kind": row["kind"]})]
    return [KernelSpecInfo(f"{spec['display_name']} · {name} ({what})", language=spec.get("language") or "python",
                           variant=spec_name, interrupt_mode="signal",
                           metadata={"kind": row["kind"], "remote_kernelspec": spec_name})
            for spec_name, spec in sorted(known.items())]
