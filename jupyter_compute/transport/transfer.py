"""Moving variables between this process and a target's kernel, on a side channel.

The protocol is ``_helper.py``, which is also sent as source, so the target needs nothing of
ours; the pickled bytes, with protocol-5 out-of-band buffers, travel on a side channel that a
``Transport`` opens. A route supplies a way to run code silently on the target and the
transport: by default a ``SocketTransport``, whose short bootstrap has the helper connect back
to a ``Rendezvous`` this process listens on (loopback here; a forwarded port for an SSH route).
"""
from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import inspect
import re
import secrets
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

from . import in_kernel as _helper
from ..core.route import ExecutionResult, TransferError, TransferReport

#: Runs code on the target without output or history and returns its execute reply.
RunSilent = Callable[[str], Awaitable[ExecutionResult]]

_HELPER_SOURCE = inspect.getsource(_helper)
HELPER_DIGEST = hashlib.sha256(_HELPER_SOURCE.encode()).hexdigest()[:16]
_HELPER_MODULE = f"_jupyter_compute_helper_{HELPER_DIGEST}"
_CLOUDPICKLE_REF = re.compile(rb"cloudpickle")
#: After a transfer ends early (refused, failed or cancelled), how long the helper has to end on the target.
HELPER_END_WAIT = 5.0


def _cloudpickle_source() -> str:
    import cloudpickle.cloudpickle as cp
    with open(cp.__file__, encoding="utf-8") as f:
        return f.read()


def bootstrap_code(host: str, port: int, token: str) -> str:
    """The code run on the target: load the helper once per process, then serve one request."""
    return (
        "def __jupyter_compute_transfer(ns):\n"
        "    import sys, types\n"
        f"    m = sys.modules.get({_HELPER_MODULE!r})\n"
        "    if m is None:\n"
        f"        m = types.ModuleType({_HELPER_MODULE!r})\n"
        f"        exec(compile({_HELPER_SOURCE!r}, '<jupyter_compute helper>', 'exec'), m.__dict__)\n"
        "        sys.modules[m.__name__] = m\n"
        f"    m.connect_back({host!r}, {port!r}, {token!r}, ns)\n"
        "try:\n"
        "    __jupyter_compute_transfer(globals())\n"
        "finally:\n"
        "    del __jupyter_compute_transfer\n"
    )


# -- payloads --------------------------------------------------------------------------------------
@dataclass
class Payload:
    """Variables pickled ahead of time, so an unpicklable one fails before anything runs."""
    descs: list[dict]
    frames: list[Any]

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "Payload":
        names = list(values)
        try:
            descs, frames = _helper.pack_values(names, values)
        except _helper.VariableError as e:
            name, why = e.args
            raise TransferError(f"cannot send variable '{name}': it cannot be pickled ({why})",
                                variable=name) from None
        return cls(descs, frames)

    @property
    def names(self) -> list[str]:
        return [d["name"] for d in self.descs]

    @property
    def nbytes(self) -> int:
        return sum(d["nbytes"] for d in self.descs)

    @property
    def needs_cloudpickle(self) -> bool:
        # By-value functions and classes refer to cloudpickle's reconstructors by module name.
        i = 0
        for d in self.descs:
            if _CLOUDPICKLE_REF.search(memoryview(self.frames[i])):  # re reads the buffer without a copy
                return True
            i += d["frames"]
        return False


def _version(info: dict) -> str:
    return ".".join(str(x) for x in info.get("python", [])[:3]) or "unknown"


def _check_code(descs: list[dict], sender: dict, receiver: dict, direction: str) -> None:
    """Refuse by-value code compiled by another Python minor version, naming the variable."""
    if tuple(sender["python"][:2]) == tuple(receiver["python"][:2]):
        return
    for d in descs:
        if d.get("code"):
            where = "the target" if direction == "push" else "this notebook"
            raise TransferError(
                f"cannot {direction} variable '{d['name']}': it holds Python code (a function, lambda or "
                f"class) compiled by Python {_version(sender)}, and {where} runs Python {_version(receiver)}, "
                "which cannot load it. Use the same Python minor version on both sides, or define it there.",
                variable=d["name"])


def local_info() -> dict:
    return _helper.python_info()


# -- rendezvous ------------------------------------------------------------------------------------
class Rendezvous(abc.ABC):
    """A place the helper in the target's kernel connects back to."""

    @abc.abstractmethod
    async def open(self) -> tuple[str, int]:
        """Start listening; return the (host, port) the target should connect to."""

    @abc.abstractmethod
    async def accept(self, token: str) -> socket.socket:
        """Wait for the helper's connection that presents ``token``; return it as a blocking socket."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class LoopbackRendezvous(Rendezvous):
    """Listens on 127.0.0.1: for targets on this machine (and, via a forwarded port, beyond)."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self._sock: socket.socket | None = None

    async def open(self) -> tuple[str, int]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((self.host, 0))
        s.listen(4)
        s.setblocking(False)
        self._sock = s
        return self.host, s.getsockname()[1]

    async def accept(self, token: str) -> socket.socket:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            conn, _ = await loop.sock_accept(self._sock)
            try:
                # Another local process could connect first; only the helper knows the token.
                got = await asyncio.wait_for(_recv_frame_async(loop, conn, 256), 10)
                if _helper.check_token(got, token):
                    conn.setblocking(True)
                    return conn
            except (asyncio.TimeoutError, OSError, _helper.ProtocolError):
                pass
            conn.close()

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def _recv_frame_async(loop, conn: socket.socket, limit: int) -> bytes:
    async def exact(n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = await loop.sock_recv(conn, n - len(buf))
            if not chunk:
                raise _helper.ProtocolError("closed")
            buf += chunk
        return bytes(buf)

    (n,) = struct.unpack("!Q", await exact(8))
    if n > limit:
        raise _helper.ProtocolError("token frame too long")
    return await exact(n)


# -- transports ------------------------------------------------------------------------------------
class Transport(abc.ABC):
    """How the bytes of one transfer reach the helper in the target's kernel."""

    @abc.abstractmethod
    def connect(self, run_silent: RunSilent, where: str) -> contextlib.AbstractAsyncContextManager:
        """Start the helper on the target, serving one request, and yield a blocking stream to it
        (see ``_helper``), used from a worker thread after the helper's token was checked.

        Leaving cleanly waits for the helper to end and raises ``TransferError`` if it failed;
        leaving in any way releases what was opened, unblocking the stream's reader.
        """


def helper_failed(where: str, reply: ExecutionResult) -> TransferError:
    return TransferError(f"the transfer helper failed on {where}: {reply.ename}: {reply.evalue}")


class SocketTransport(Transport):
    """The helper connects back to a ``Rendezvous`` this process listens on."""

    def __init__(self, rendezvous: Callable[[], Rendezvous] = LoopbackRendezvous):
        self._rendezvous = rendezvous

    @contextlib.asynccontextmanager
    async def connect(self, run_silent: RunSilent, where: str) -> AsyncIterator[socket.socket]:
        rv = self._rendezvous()
        host, port = await rv.open()
        token = secrets.token_hex(16)
        sock: socket.socket | None = None
        run = asyncio.ensure_future(run_silent(bootstrap_code(host, port, token)))
        accept = asyncio.ensure_future(rv.accept(token))
        try:
            done, _ = await asyncio.wait({run, accept}, return_when=asyncio.FIRST_COMPLETED)
            if accept not in done:
                # The bootstrap ended without connecting: it failed on the target.
                raise helper_failed(where, run.result())
            sock = accept.result()
            await rv.close()
            yield sock
            reply = await run
            if reply.status != "ok":
                raise helper_failed(where, reply)
        finally:
            accept.cancel()
            if sock is not None:
                # Unblocks the worker thread if we were cancelled or timed out mid-transfer.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            await rv.close()
            if sock is not None and not run.done():
                # The helper runs and ends as its stream closes: let the kernel answer before
                # anything else is sent to it. A request that reaches ipykernel 7.0 to 7.3 (7.3 is
                # the newest for Python 3.10) while it sends a reply can be left unread until
                # something wakes it (``KernelRoute._check_unread``).
                await asyncio.wait({run}, timeout=HELPER_END_WAIT)
            if not run.done():
                run.cancel()
                await asyncio.wait({run})
            if not run.cancelled():
                run.exception()  # retrieved: it was reported above or superseded


# -- the local side --------------------------------------------------------------------------------
class VariableMover:
    """Push and pull for any route that can run code silently, over the transport it supplies."""

    def __init__(self, run_silent: RunSilent, transport: Transport | None = None, target: str = ""):
        self._run_silent = run_silent
        self.transport = transport or SocketTransport()
        self.target = target
        self.remote_info: dict | None = None

    async def push(self, values: Mapping[str, Any] | Payload, *, timeout: float | None = None) -> TransferReport:
        payload = values if isinstance(values, Payload) else await asyncio.to_thread(Payload.from_values, values)
        if not payload.descs:
            return TransferReport("push", [], 0, 0.0, self.target)
        needs_cp = payload.needs_cloudpickle
        t0 = time.monotonic()

        def converse(stream: Any, info: dict) -> int:
            _check_code(payload.descs, local_info(), info, "push")
            frames, ship = list(payload.frames), bool(needs_cp and not info.get("cloudpickle"))
            if ship:
                frames.insert(0, _cloudpickle_source().encode("utf-8"))
            _helper.send_msg(stream, {"op": "push", "vars": payload.descs, "cloudpickle_source": ship}, frames)
            reply, _ = _helper.recv_msg(stream)
            if not reply.get("ok"):
                raise self._load_error("push", reply, info)
            return payload.nbytes

        nbytes = await self._converse(converse, timeout)
        return TransferReport("push", payload.names, nbytes, time.monotonic() - t0, self.target)

    async def pull(self, names: list[str], *, timeout: float | None = None) -> tuple[dict[str, Any], TransferReport]:
        if not names:
            return {}, TransferReport("pull", [], 0, 0.0, self.target)
        t0 = time.monotonic()
        out: dict[str, Any] = {}

        def converse(stream: Any, info: dict) -> int:
            # Without cloudpickle the target would pickle its functions by reference, which
            # would load here as whatever this process has under that name.
            ship = not info.get("cloudpickle")
            frames = [_cloudpickle_source().encode("utf-8")] if ship else []
            _helper.send_msg(stream, {"op": "pull", "names": list(names), "cloudpickle_source": ship}, frames)
            reply, data = _helper.recv_msg(stream)
            if not reply.get("ok"):
                name = reply.get("name")
                if str(reply.get("error", "")).startswith("NameError"):
                    raise TransferError(f"cannot pull '{name}': it is not defined on {self.target or 'the target'}",
                                        variable=name)
                raise TransferError(f"cannot pull '{name}': it cannot be pickled on the target "
                                    f"({reply.get('error')})", variable=name)
            _check_code(reply["vars"], info, local_info(), "pull")
            try:
                out.update(_helper.unpack_values(reply["vars"], data))
            except _helper.VariableError as e:
                raise self._load_error("pull", {"name": e.args[0], "error": e.args[1]}, info) from None
            return sum(d["nbytes"] for d in reply["vars"])

        nbytes = await self._converse(converse, timeout)
        return out, TransferReport("pull", list(names), nbytes, time.monotonic() - t0, self.target)

    def _load_error(self, direction: str, reply: dict, remote: dict) -> TransferError:
        name = reply.get("name")
        where = "the target" if direction == "push" else "this notebook"
        return TransferError(
            f"cannot {direction} variable '{name}': {where} could not load it ({reply.get('error')}). "
            f"This notebook runs Python {_version(local_info())}, the target Python {_version(remote)}; "
            "the packages the object needs must be importable on both sides.", variable=name)

    async def _converse(self, converse: Callable[[Any, dict], int], timeout: float | None) -> int:
        where = self.target or "the target"

        async def exchange() -> int:
            async with self.transport.connect(self._run_silent, where) as stream:
                def talk() -> int:
                    info, _ = _helper.recv_msg(stream)
                    self.remote_info = info
                    try:
                        if int(info.get("pickle", 0)) < _helper.PICKLE_PROTOCOL:
                            raise TransferError(f"{where} runs Python {_version(info)}, which cannot read pickle "
                                                "protocol 5; it needs Python 3.8 or newer")
                        nbytes = converse(stream, info)
                        _flush(stream)
                        return nbytes
                    except TransferError:
                        with contextlib.suppress(OSError, _helper.ProtocolError):
                            _helper.send_msg(stream, {"op": "abort"})
                            _flush(stream)
                        raise

                try:
                    return await asyncio.to_thread(talk)
                except (OSError, _helper.ProtocolError) as e:
                    raise TransferError(f"the connection to {where} broke during the transfer: {e}") from None

        try:
            return await asyncio.wait_for(exchange(), timeout)
        except asyncio.TimeoutError:
            raise TransferError(f"moving variables to or from {where} did not finish within {timeout:g} s") from None


def _flush(stream: Any) -> None:
    """Send what a stream that gathers small writes holds (sockets send at once)."""
    flush = getattr(stream, "flush", None)
    if flush is not None:
        flush()
