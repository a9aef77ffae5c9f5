"""The websocket route: run code in a kernel of any Jupyter server, over its channels websocket.

A Jupyter server (a JupyterHub, a colleague's workstation, an Azure ML compute instance) gives
REST for kernels and one websocket per client carrying the kernel's shell, iopub, stdin and
control channels. ``JupyterClient`` speaks the REST part with an ``Authorizer`` (a fixed token
or header, or bearer tokens from a provider, refreshed before they expire); ``WebsocketRoute``
speaks the websocket with the kernel route's behaviour: live output, errors, input, interrupt
(through REST), and push/pull, whose bytes travel as comm messages cut into chunks well under
the server's per-message limit (tornado's default is 10 MiB).
"""
from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import inspect
import ipaddress
import json
import logging
import secrets
import ssl
import struct
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session

from ..errors import BackendRefused, ComputeError, InvalidRequest, Unavailable
from . import _helper
from .base import ExecutionError, ExecutionResult, MessageHandler, StdinHandler, iopub_message
from .messaging import MessagingRoute, cancel_and_wait
from .transfer import RunSilent, Transport, helper_failed

log = logging.getLogger("jupyter_compute.execution")

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
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
HTTP_TIMEOUT = 15.0
#: A cached bearer token is replaced this long before it expires.
REFRESH_MARGIN = 300.0


# -- credentials -----------------------------------------------------------------------------------
class Authorizer(abc.ABC):
    """Supplies the Authorization header value for requests to one Jupyter server.

    Never logs, returns in errors, or shows its value; ``describe()`` says what kind it is.
    """

    #: Whether asking again (after the server refused) can give a different answer.
    can_refresh: bool = False

    @abc.abstractmethod
    async def header(self, *, refresh: bool = False) -> str | None:
        """The header value, or None to send none; ``refresh`` after the server refused it."""

    @abc.abstractmethod
    def describe(self) -> str: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.describe()}>"


class StaticAuth(Authorizer):
    """A fixed token (``Authorization: token …``) or header value, or no credentials at all."""

    def __init__(self, header_value: str | None, what: str = "authorization header"):
        self._value = header_value
        self._what = what if header_value else "no credentials"

    @classmethod
    def from_spec(cls, token: str | None = None, authorization: str | None = None) -> "StaticAuth":
        if token:
            return cls(f"token {token}", "token")
        if authorization:
            return cls(authorization, "authorization header")
        return cls(None)

    async def header(self, *, refresh: bool = False) -> str | None:
        return self._value

    def describe(self) -> str:
        return self._what


class TokenProvider(Protocol):
    """The hook a backend (Azure ML) supplies: returns a fresh access token when called.

    The answer may be azure-core's ``AccessToken`` (``.token``, ``.expires_on`` in epoch seconds),
    a ``(token, expires_on)`` pair, or a bare token string whose lifetime is unknown.
    """

    def __call__(self) -> Awaitable[Any]: ...


class BearerTokenAuth(Authorizer):
    """``Authorization: Bearer …`` from a ``TokenProvider``, renewed ``refresh_margin`` seconds
    before it expires, and at once when the server refuses it (a revoked token, a skewed clock)."""

    can_refresh = True

    def __init__(self, provider: TokenProvider, *, refresh_margin: float = REFRESH_MARGIN,
                 scheme: str = "Bearer", source: str = "a token provider"):
        self._provider = provider
        self._margin = refresh_margin
        self._scheme = scheme
        self._source = source
        self._token: str | None = None
        self._expires_on: float | None = None
        self._lock = asyncio.Lock()
        #: How many tokens the provider has been asked for (tests and diagnostics).
        self.fetches = 0

    def _fresh(self) -> bool:
        if self._token is None:
            return False
        return self._expires_on is None or time.time() < self._expires_on - self._margin

    async def header(self, *, refresh: bool = False) -> str | None:
        async with self._lock:
            if refresh or not self._fresh():
                got = await self._provider()
                self.fetches += 1
                if isinstance(got, str):
                    token, expires = got, None
                elif isinstance(got, (tuple, list)):
                    token, expires = got[0], got[1]
                else:
                    token, expires = getattr(got, "token"), getattr(got, "expires_on", None)
                if not token:
                    raise BackendRefused(f"{self._source} gave no token", reason="credentials_unavailable")
                self._token, self._expires_on = str(token), float(expires) if expires is not None else None
            return f"{self._scheme} {self._token}"

    def describe(self) -> str:
        return f"bearer tokens from {self._source}"


# -- addresses -------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalise_url(url: str) -> str:
    """The server's base URL with one trailing slash; what the spec validator accepts."""
    return url.rstrip("/") + "/"


def _ssl_context() -> ssl.SSLContext:
    # The CA bundle named by the environment, the same one the Azure clients are given.
    from ..azure.credential import ca_bundle
    return _ssl_context_for(ca_bundle())


@functools.lru_cache(maxsize=8)
def _ssl_context_for(cafile: str | None) -> ssl.SSLContext:
    # Loading CA certificates reads files: once per bundle, not on every health check.
    return ssl.create_default_context(cafile=cafile)


def _server_message(status: int, reason: str | None, body: bytes) -> str:
    """``403 Forbidden`` plus whatever message the server put in its JSON answer."""
    text = f"{status} {reason or ''}".strip()
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        detail = data.get("message") or data.get("reason")
        if detail and str(detail) not in text:
            text += f" ({str(detail)[:300]})"
    return text


class CredentialsRefused(BackendRefused):
    reason = "credentials_refused"


class KernelGone(ExecutionError):
    reason = "kernel_gone"


# -- REST ------------------------------------------------------------------------------------------
class JupyterClient:
    """The REST API of one Jupyter server: status, kernelspecs and kernels.

    Each request carries the ``Authorizer``'s header; a refused one (401/403) is asked again
    once with ``refresh=True`` when the authorizer can refresh. Redirects are not followed: a
    hub that redirects to its login page has not accepted the credentials.
    """

    def __init__(self, url: str, auth: Authorizer | None = None, *, timeout: float = HTTP_TIMEOUT):
        self.url = normalise_url(url)
        self.auth = auth or StaticAuth(None)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ctx = _ssl_context() if self.url.startswith("https:") else None
            # No cookie jar: every request carries the credentials, so a refused or expired one is
            # never papered over by a login cookie the server set earlier.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx if ctx else True),
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "JupyterClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def headers(self, *, refresh: bool = False) -> dict[str, str]:
        value = await self.auth.header(refresh=refresh)
        return {"Authorization": value} if value else {}

    async def request(self, method: str, path: str, body: Any = None, *,
                      timeout: float | None = None) -> tuple[int, Any]:
        """(status, parsed JSON or None); connection failures raise ``Unavailable``."""
        url = self.url + path
        timeout = timeout or self.timeout
        for attempt in (0, 1):
            headers = await self.headers(refresh=attempt == 1)
            try:
                async with self._http().request(
                        method, url, json=body, headers=headers, allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                    raw = await r.read()
                    status, reason, location = r.status, r.reason, r.headers.get("Location")
            except (asyncio.TimeoutError, aiohttp.ClientError) as e:
                raise self.unreachable(e, "answer", "the request", timeout) from None
            if status in (401, 403) and attempt == 0 and self.auth.can_refresh:
                continue
            if status in (401, 403):
                raise CredentialsRefused(
                    f"the Jupyter server at {self.url} refused the credentials ({self.auth.describe()}): "
                    f"{_server_message(status, reason, raw)}")
            if 300 <= status < 400:
                raise CredentialsRefused(
                    f"the Jupyter server at {self.url} answered {method} /{path} with a redirect "
                    f"({status} to {location or 'elsewhere'}), usually to a login page: it did not accept "
                    f"the credentials ({self.auth.describe()})")
            try:
                data = json.loads(raw) if raw else None
            except ValueError:
                data = None
            return status, data
        raise AssertionError("unreachable")

    def unreachable(self, e: Exception, verb: str, what: str, timeout: float | None) -> Unavailable:
        """How a timeout or connection failure while trying to ``verb`` (broken off: ``what``) is told."""
        if isinstance(e, asyncio.TimeoutError):
            why = f"did not {verb} within {timeout:g} s"
        elif isinstance(e, aiohttp.ClientConnectorError):
            why = f"does not answer: {e.os_error or e}"
        else:
            why = f"broke off {what}: {type(e).__name__}"
        return Unavailable(f"the Jupyter server at {self.url} {why}", reason="server_unreachable")

    def _unexpected(self, what: str, status: int, data: Any) -> BackendRefused:
        detail = data.get("message") if isinstance(data, dict) else None
        return BackendRefused(f"the Jupyter server at {self.url} answered {what} with {status}"
                              + (f": {detail}" if detail else ""))

    async def status(self) -> dict:
        """``/api/status``: proves the server is a Jupyter server and accepts the credentials."""
        code, data = await self.request("GET", "api/status")
        if code != 200 or not isinstance(data, dict):
            if code == 404:
                raise BackendRefused(f"{self.url} does not look like a Jupyter server: GET api/status answered 404")
            raise self._unexpected("GET api/status", code, data)
        return data

    async def version(self) -> str | None:
        code, data = await self.request("GET", "api")
        return data.get("version") if code == 200 and isinstance(data, dict) else None

    async def kernelspecs(self) -> dict:
        code, data = await self.request("GET", "api/kernelspecs")
        if code != 200 or not isinstance(data, dict):
            raise self._unexpected("GET api/kernelspecs", code, data)
        return data

    async def kernels(self) -> list[dict]:
        code, data = await self.request("GET", "api/kernels")
        if code != 200 or not isinstance(data, list):
            raise self._unexpected("GET api/kernels", code, data)
        return data

    async def kernel(self, kernel_id: str) -> dict | None:
        code, data = await self.request("GET", f"api/kernels/{quote(kernel_id)}")
        if code == 404:
            return None
        if code != 200 or not isinstance(data, dict):
            raise self._unexpected("GET api/kernels/<id>", code, data)
        return data

    async def start_kernel(self, kernel_name: str | None = None, *, timeout: float = 120.0) -> dict:
        body = {"name": kernel_name} if kernel_name else {}
        code, data = await self.request("POST", "api/kernels", body, timeout=timeout)
        if code not in (200, 201) or not isinstance(data, dict) or "id" not in data:
            raise self._unexpected("POST api/kernels", code, data)
        return data

    async def interrupt(self, kernel_id: str) -> None:
        code, data = await self.request("POST", f"api/kernels/{quote(kernel_id)}/interrupt")
        if code == 404:
            raise KernelGone(f"the kernel {kernel_id} no longer exists on {self.url}")
        if code not in (200, 204):
            raise self._unexpected("the interrupt", code, data)

    async def restart(self, kernel_id: str, *, timeout: float = 120.0) -> dict | None:
        code, data = await self.request("POST", f"api/kernels/{quote(kernel_id)}/restart", timeout=timeout)
        if code == 404:
            return None
        if code != 200:
            raise self._unexpected("the restart", code, data)
        return data

    async def shutdown(self, kernel_id: str) -> bool:
        """Shut a kernel down; False if it was already gone."""
        code, data = await self.request("DELETE", f"api/kernels/{quote(kernel_id)}", timeout=60.0)
        if code == 404:
            return False
        if code not in (200, 204):
            raise self._unexpected("the kernel shutdown", code, data)
        return True

    def channels_url(self, kernel_id: str, session_id: str) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path}api/kernels/{quote(kernel_id)}/channels?session_id={session_id}"


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

    @classmethod
    def from_info(cls, info: dict[str, Any], target: str = "") -> "WebsocketRoute":
        auth = info.get("auth")
        if auth is not None and not isinstance(auth, Authorizer):
            raise InvalidRequest("route info 'auth' must be an Authorizer")
        return cls(info["url"], info["kernel_id"], auth, target=target, keeper=info.get("keeper"),
                   notice=info.get("notice"))

    @property
    def where(self) -> str:
        return f"'{self.target}'" if self.target else f"the Jupyter server at {self.url}"

    # -- session -----------------------------------------------------------------------------------
    def matches(self, info: dict[str, Any]) -> bool:
        return (info.get("route") == self.name and normalise_url(str(info.get("url", ""))) == self.url
                and info.get("kernel_id") == self.kernel_id)

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
        url = self.client.channels_url(self.kernel_id, self._session_id)
        for attempt in (0, 1):
            headers = await self.client.headers(refresh=attempt == 1)
            try:
                return await asyncio.wait_for(self.client._http().ws_connect(
                    url, protocols=(V1_PROTOCOL,), headers=headers, heartbeat=self.heartbeat, max_msg_size=0,
                    autoclose=True, autoping=True), timeout)
            except aiohttp.WSServerHandshakeError as e:
                if e.status in (401, 403) and attempt == 0 and self.client.auth.can_refresh:
                    continue
                if e.status in (401, 403):
                    raise CredentialsRefused(
                        f"the Jupyter server at {self.url} refused the credentials "
                        f"({self.client.auth.describe()}) for the kernel's websocket: {e.status} {e.message}") from None
                if e.status == 404:
                    raise KernelGone(f"the kernel {self.kernel_id} no longer exists on {self.url}") from None
                raise ExecutionError(f"the Jupyter server at {self.url} refused the kernel's websocket: "
                                     f"{e.status} {e.message}") from None
            except (asyncio.TimeoutError, aiohttp.ClientError) as e:
                raise self.client.unreachable(e, "open the kernel's websocket", "the websocket", timeout) from None
        raise AssertionError("unreachable")

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


# -- the target's side of a transfer (sent as source; stdlib and ipykernel only, Python 3.8) ----------
def _target_register(target_name, shell):
    """Runs in the target's kernel: accept transfer comms, each served by a thread.

    It is sent in one module with ``_helper``'s source, whose ``ChunkedStream``, ``serve`` and
    ``describe_error`` it uses.
    """
    import threading as _t
    kernel = shell.kernel
    manager = getattr(kernel, "comm_manager", None)
    if manager is None:
        import comm as _comm
        manager = _comm.get_comm_manager()
    if target_name in manager.targets:
        return

    def on_open(comm, msg):
        data = msg["content"]["data"]
        stream = ChunkedStream(lambda chunk: comm.send({}, buffers=[chunk]), int(data["chunk"]), "the notebook")
        comm.on_msg(lambda m: stream.feed(m.get("buffers") or []))
        comm.on_close(lambda m: stream.finish())
        ns = shell.user_ns

        def run():
            try:
                serve(stream, data["token"], ns)
                stream.flush()
            except BaseException as e:
                try:
                    comm.send({"error": describe_error(e)})
                except Exception:
                    pass
            finally:
                try:
                    comm.close()
                except Exception:
                    pass

        _t.Thread(target=run, name="jupyter-compute-transfer", daemon=True).start()

    manager.register_target(target_name, on_open)


_TARGET_SOURCE = inspect.getsource(_helper) + "\n\n" + inspect.getsource(_target_register)
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
        f"    m._target_register({TRANSFER_TARGET!r}, get_ipython())\n"
        "try:\n"
        "    __jupyter_compute_install()\n"
        "finally:\n"
        "    del __jupyter_compute_install\n"
    )
