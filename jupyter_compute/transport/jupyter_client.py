"""A client of any Jupyter server's REST API: kernels, kernelspecs and status, with credentials.

``JupyterClient`` speaks the REST part with an ``Authorizer``: a fixed token or header, or bearer
tokens from a provider (Azure AD for a compute instance), refreshed before they expire. Shared by
the ``jupyter`` and ``azureml`` families and by the websocket route.
"""
from __future__ import annotations

import abc
import asyncio
import functools
import ipaddress
import json
import ssl
import time
from typing import TYPE_CHECKING, Any, Awaitable, Protocol
from urllib.parse import quote, urlsplit

from ..core.errors import BackendRefused, Unavailable
from ..core.route import ExecutionError

if TYPE_CHECKING:
    import aiohttp  # imported where it is used: a process that reaches no Jupyter server never loads it

HTTP_TIMEOUT = 15.0
#: The kernel websocket protocol with binary frames (jupyter_server 2); the JSON one otherwise.
V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
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
    from ..families.azureml.credential import ca_bundle
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
        import aiohttp

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
        import aiohttp

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
        import aiohttp

        if isinstance(e, asyncio.TimeoutError):
            why = f"did not {verb} within {timeout:g} s"
        elif isinstance(e, aiohttp.ClientConnectorCertificateError):
            cert = e.certificate_error
            detail = getattr(cert, "verify_message", None) or getattr(cert, "reason", None) or str(cert)
            why = (f"presented a certificate that could not be verified ({detail}). If your organisation "
                   f"signs its own certificates, name its CA file in REQUESTS_CA_BUNDLE")
        elif isinstance(e, aiohttp.ClientSSLError):
            why = f"could not agree on a secure (TLS) connection: {e.os_error or e}"
        elif isinstance(e, aiohttp.ClientConnectorError):
            why = f"does not answer: {e.os_error or e}"
        else:
            detail = getattr(e, "message", None) or ""
            why = f"broke off {what}: {type(e).__name__}" + (f" ({str(detail)[:200]})" if detail else "")
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

    async def open_channels(self, kernel_id: str, session_id: str, *, heartbeat: float,
                            timeout: float | None) -> aiohttp.ClientWebSocketResponse:
        """The kernel's channels websocket, offering the v1 protocol; a refused credential is said
        as such (after one refresh of a token that can be refreshed), a gone kernel as ``KernelGone``."""
        import aiohttp

        url = self.channels_url(kernel_id, session_id)
        for attempt in (0, 1):
            headers = await self.headers(refresh=attempt == 1)
            try:
                return await asyncio.wait_for(self._http().ws_connect(
                    url, protocols=(V1_PROTOCOL,), headers=headers, heartbeat=heartbeat, max_msg_size=0,
                    autoclose=True, autoping=True), timeout)
            except aiohttp.WSServerHandshakeError as e:
                if e.status in (401, 403) and attempt == 0 and self.auth.can_refresh:
                    continue
                if e.status in (401, 403):
                    raise CredentialsRefused(
                        f"the Jupyter server at {self.url} refused the credentials ({self.auth.describe()}) for "
                        f"the kernel's websocket: {e.status} {e.message}") from None
                if e.status == 404:
                    raise KernelGone(f"the kernel {kernel_id} no longer exists on {self.url}") from None
                raise ExecutionError(f"the Jupyter server at {self.url} refused the kernel's websocket: "
                                     f"{e.status} {e.message}") from None
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as e:
                raise self.unreachable(e, "open the kernel's websocket", "the websocket", timeout) from None
        raise AssertionError("unreachable")

    def channels_url(self, kernel_id: str, session_id: str) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path}api/kernels/{quote(kernel_id)}/channels?session_id={session_id}"


