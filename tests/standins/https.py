"""An HTTPS server on 127.0.0.1 with a throwaway certificate authority, and the Azure ML
managed-identity token endpoint (MSI_ENDPOINT + MSI_SECRET) that azure-identity's real
ManagedIdentityCredential signs in against.

The server runs in a thread so a test, a fixture or a benchmark can start it beside its own
event loop. Subclasses answer everything else in ``handle``.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MSI_PATH = "/msi/token"
MSI_API_VERSION = "2017-09-01"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def arm_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"error": {"code": code, "message": message}}, headers or {})


def _b64(data: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(key: bytes, claims: dict[str, Any]) -> str:
    """An HS256 JSON Web Token of ``claims``."""
    import hashlib
    import hmac
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = _b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def make_tls(folder: str) -> tuple[str, str, str]:
    """A certificate authority and a server certificate for 127.0.0.1 and localhost it signed.

    Returns (ca_path, cert_path, key_path); the CA file is what clients are told to trust.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jupyter_compute test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = (os.path.join(folder, n) for n in ("ca.pem", "server.pem", "server.key"))
    with open(ca_path, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return ca_path, cert_path, key_path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the request log is kept instead
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        req = Request(self.command, parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)),
                      {k.lower(): v for k, v in self.headers.items()}, body, raw)
        try:
            resp = self.server.owner._dispatch(req)
        except Exception as e:  # a bug in the stand-in must show in the test, as a 500 with its text
            resp = arm_error(500, "StandInError", f"{type(e).__name__}: {e}")
        data = b"" if resp.body is None else (
            resp.body.encode() if isinstance(resp.body, str) else json.dumps(resp.body).encode())
        self.send_response(resp.status)
        headers = {"x-ms-request-id": secrets.token_hex(8), **resp.headers}
        if data and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json; charset=utf-8"
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: "HttpsServer", ctx: ssl.SSLContext):
        self.owner = owner
        self.ssl_ctx = ctx
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, so one slow client never
        # holds up the others.
        try:
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (ssl.SSLError, ConnectionError):
            pass  # the client went away mid-answer (a cancelled or timed-out request): nothing to report
        finally:
            try:
                tls.close()
            except OSError:
                pass


class HttpsServer:
    """Base of the stand-ins: TLS, a thread, a request log and the managed-identity endpoint."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="jc-standin-")
        self.ca_path, self._cert, self._key = make_tls(self._dir)
        self.msi_secret = secrets.token_hex(16)
        self.lock = threading.RLock()
        #: Every request but token requests, in arrival order.
        self.requests: list[Request] = []
        self.token_requests: list[Request] = []
        #: token -> the resource (audience) it was issued for
        self.tokens: dict[str, str] = {}
        #: When set, (status, body) the token endpoint answers instead of a token.
        self.token_error: tuple[int, Any] | None = None
        #: Seconds the tokens it issues last.
        self.token_lifetime = 3600.0
        #: When set, tokens are JWTs signed with this key (HS256) carrying ``identity`` as claims, as
        #: Azure AD's are signed, so a server given the key can check that they came from here.
        self.signing_key: bytes | None = None
        self.identity: dict[str, Any] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "HttpsServer":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self._cert, self._key)
        self._server = _Server(self, ctx)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the stand-in first"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def cert_path(self) -> str:
        """The server certificate (for 127.0.0.1 and localhost), which other test servers may use too."""
        return self._cert

    @property
    def key_path(self) -> str:
        return self._key

    @property
    def msi_endpoint(self) -> str:
        return self.base_url + MSI_PATH

    def env(self) -> dict[str, str]:
        """Environment under which azure-identity signs in here and HTTPS clients trust this server."""
        return {"MSI_ENDPOINT": self.msi_endpoint, "MSI_SECRET": self.msi_secret,
                "REQUESTS_CA_BUNDLE": self.ca_path, "SSL_CERT_FILE": self.ca_path,
                "JUPYTER_COMPUTE_ARM_ENDPOINT": self.base_url}

    # -- requests ----------------------------------------------------------------------------------
    def _dispatch(self, req: Request) -> Response:
        if req.path == MSI_PATH:
            with self.lock:
                self.token_requests.append(req)
            return self._token(req)
        with self.lock:
            self.requests.append(req)
        return self.handle(req)

    def handle(self, req: Request) -> Response:
        """What a stand-in serves; the base answers as Resource Manager does for an unknown path."""
        return arm_error(404, "NotFound", f"no route for {req.method} {req.path}")

    def _token(self, req: Request) -> Response:
        # Azure ML's managed-identity endpoint (App Service protocol 2017-09-01).
        if req.method != "GET":
            return Response(405, {"error": "method not allowed"})
        if req.headers.get("secret") != self.msi_secret:
            return Response(401, {"error": "unauthorized", "error_description": "The secret header is wrong."})
        if req.query.get("api-version") != MSI_API_VERSION or not req.query.get("resource"):
            return Response(400, {"error": "invalid_request",
                                  "error_description": "api-version 2017-09-01 and resource are required"})
        if self.token_error is not None:
            return Response(*self.token_error)
        resource = req.query["resource"]
        token, expires_on = self.issue_token(resource)
        return Response(200, {"access_token": token, "expires_on": expires_on,
                              "resource": resource, "token_type": "Bearer"})

    def issue_token(self, resource: str, lifetime: float | None = None) -> tuple[str, int]:
        """A token for ``resource`` (its audience), as the managed-identity endpoint issues it."""
        expires_on = int(time.time() + (self.token_lifetime if lifetime is None else lifetime))
        if self.signing_key:
            token = sign_jwt(self.signing_key, {**self.identity, "aud": resource, "exp": expires_on,
                                                "iat": int(time.time()), "nbf": int(time.time()) - 60,
                                                "iss": "https://sts.windows.net/standin/",
                                                "jti": secrets.token_urlsafe(8)})
        else:
            token = "standin." + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = resource
        return token, expires_on

    def audience_of(self, req: Request) -> str | None:
        """The resource the request's bearer token was issued for, or None without a valid one."""
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return None
        with self.lock:
            return self.tokens.get(auth[len("Bearer "):])

    def saw(self, method: str | None = None, contains: str = "") -> list[Request]:
        with self.lock:
            return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    def clear_log(self) -> None:
        with self.lock:
            self.requests.clear()
            self.token_requests.clear()
