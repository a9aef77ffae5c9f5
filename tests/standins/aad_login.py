"""Azure AD's device-code sign-in (OAuth 2.0 device authorization grant), for the Resource Manager
stand-in to serve beside its own routes on the same HTTPS server.

It answers the tenant's OpenID configuration, ``/{tenant}/oauth2/v2.0/devicecode`` and
``/{tenant}/oauth2/v2.0/token``. The token endpoint says ``authorization_pending`` until the test
approves the code (``approve(code)``, what a person does in the browser), then issues an access
token the Resource Manager stand-in accepts, an id token naming the user and a refresh token.
``decline(code)`` answers as Azure AD does when the person refuses; a code left alone expires
after ``code_lifetime`` seconds.

    arm = ArmStandIn().start()
    os.environ.update({**arm.env(), **arm.aad.env()})
    ...
    arm.aad.approve(arm.aad.wait_for_code())
"""
from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .https import HttpsServer, Request, Response, sign_jwt

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: Scopes that ask for sign-in facts, not for a resource.
OIDC_SCOPES = {"openid", "profile", "offline_access", "email"}
USERNAME = "alice@contoso.example"
USER_OBJECT_ID = "2b7c9e41-6a3d-4f08-8c15-9d0e7f6a5b24"

_ROUTE = re.compile(r"^/(?P<tenant>[^/]+)/(?:v2\.0/\.well-known/(?P<oidc>openid-configuration)|"
                    r"oauth2/v2\.0/(?P<endpoint>devicecode|token))/?$")


@dataclass
class DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    tenant: str
    scope: str
    expires_at: float
    #: pending, approved, declined, redeemed
    status: str = "pending"
    polls: int = 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _error(code: str, description: str, status: int = 400) -> Response:
    return Response(status, {"error": code, "error_description": description, "error_codes": [],
                             "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
                             "trace_id": secrets.token_hex(16), "correlation_id": secrets.token_hex(16)})


class AadLogin:
    """The device-code flow of Azure AD, answered for ``server`` (whose tokens it issues)."""

    def __init__(self, server: HttpsServer, *, interval: int = 1, code_lifetime: int = 900):
        self.server = server
        #: Seconds clients are told to wait between polls (Azure AD says 5).
        self.interval = interval
        self.code_lifetime = code_lifetime
        self.codes: list[DeviceCode] = []
        self.requests: list[Request] = []
        #: Every access and refresh token issued, so a test can look for them where they must not be.
        self.issued: list[str] = []
        self._changed = threading.Condition(server.lock)

    def env(self) -> dict[str, str]:
        """Environment under which jupyter_compute's device-code sign-in comes here."""
        return {"JUPYTER_COMPUTE_AUTHORITY_HOST": self.server.base_url}

    def handles(self, req: Request) -> bool:
        return bool(_ROUTE.match(req.path))

    # -- what the person does in the browser --------------------------------------------------------
    def wait_for_code(self, timeout: float = 30.0, after: int = 0) -> str:
        """The user code of the ``after``-th device code requested (0: the first), once it is."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.codes) <= after:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no device code was requested within {timeout}s")
                self._changed.wait(left)
            return self.codes[after].user_code

    def _code(self, user_code: str) -> DeviceCode:
        for c in self.codes:
            if c.user_code == user_code:
                return c
        raise KeyError(f"no device code {user_code!r}")

    def approve(self, user_code: str) -> None:
        with self.server.lock:
            self._code(user_code).status = "approved"

    def decline(self, user_code: str) -> None:
        with self.server.lock:
            self._code(user_code).status = "declined"

    def polls(self, user_code: str) -> int:
        with self.server.lock:
            return self._code(user_code).polls

    # -- the endpoints ------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        m = _ROUTE.match(req.path)
        assert m is not None
        with self.server.lock:
            self.requests.append(req)
        tenant = m["tenant"]
        if m["oidc"]:
            return Response(200, self._openid_configuration(tenant))
        if req.method != "POST":
            return _error("invalid_request", "AADSTS900561: The endpoint only accepts POST requests.", 405)
        form = dict(parse_qsl(req.raw.decode(), keep_blank_values=True))
        if m["endpoint"] == "devicecode":
            return self._device_code(tenant, form)
        return self._token(form)

    def _openid_configuration(self, tenant: str) -> dict[str, Any]:
        base = f"{self.server.base_url}/{tenant}"
        return {"issuer": f"{base}/v2.0", "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{base}/discovery/v2.0/keys", "response_types_supported": ["code", "id_token"],
                "subject_types_supported": ["pairwise"], "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "tenant_region_scope": "NA", "cloud_instance_name": "127.0.0.1"}

    def _device_code(self, tenant: str, form: dict[str, str]) -> Response:
        if not form.get("client_id"):
            return _error("invalid_request", "AADSTS900144: The request body must contain the following parameter: "
                                             "'client_id'.")
        user_code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(9))
        code = DeviceCode(secrets.token_urlsafe(32), user_code, form["client_id"], tenant, form.get("scope", ""),
                          time.time() + self.code_lifetime)
        url = f"{self.server.base_url}/devicelogin"
        with self._changed:
            self.codes.append(code)
            self._changed.notify_all()
        return Response(200, {
            "user_code": user_code, "device_code": code.device_code, "verification_uri": url,
            "expires_in": self.code_lifetime, "interval": self.interval,
            "message": f"To sign in, use a web browser to open the page {url} and enter the code {user_code} "
                       "to authenticate."})

    def _token(self, form: dict[str, str]) -> Response:
        grant = form.get("grant_type")
        if grant == "refresh_token":
            return self._refresh(form)
        if grant != DEVICE_CODE_GRANT:
            return _error("unsupported_grant_type", f"AADSTS70003: The app requested an unsupported grant type "
                                                    f"'{grant}'.")
        with self.server.lock:
            code = next((c for c in self.codes if c.device_code == form.get("device_code")), None)
            if code is None:
                return _error("invalid_grant", "AADSTS70000: The provided value for the 'device_code' is not valid.")
            code.polls += 1
            if time.time() >= code.expires_at:
                return _error("expired_token", "AADSTS70020: The provided value for the input parameter "
                                               "'device_code' is not valid. This device code has expired.")
            if code.status == "declined":
                return _error("authorization_declined", "AADSTS70000: The user declined to authorize the "
                                                        "application or the sign-in was canceled.")
            if code.status == "redeemed":
                return _error("invalid_grant", "AADSTS54005: The device code was already redeemed.")
            if code.status == "pending":
                return _error("authorization_pending", "AADSTS70016: OAuth 2.0 device flow error. Authorization "
                                                       "is pending. Continue polling.")
            code.status = "redeemed"
        return self._tokens(code.client_id, code.tenant, code.scope)

    def _refresh(self, form: dict[str, str]) -> Response:
        with self.server.lock:
            known = form.get("refresh_token") in self.issued
        if not known:
            return _error("invalid_grant", "AADSTS9002313: Invalid request. The refresh token is malformed or "
                                           "not valid.")
        return self._tokens(form.get("client_id", ""), "organizations", form.get("scope", ""))

    def _tokens(self, client_id: str, tenant: str, scope: str) -> Response:
        resource_scopes = [s for s in scope.split() if s not in OIDC_SCOPES]
        resource = resource_scopes[0].removesuffix("/.default") if resource_scopes else self.server.base_url
        access, expires_on = self.server.issue_token(resource)
        refresh = secrets.token_urlsafe(32)
        now = int(time.time())
        tid = tenant if re.match(r"^[0-9a-f-]{36}$", tenant) else "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"
        claims = {"aud": client_id, "iss": f"{self.server.base_url}/{tid}/v2.0", "iat": now, "nbf": now,
                  "exp": now + 3600, "name": "Alice", "oid": USER_OBJECT_ID, "preferred_username": USERNAME,
                  "sub": secrets.token_hex(8), "tid": tid, "ver": "2.0"}
        id_token = sign_jwt(secrets.token_bytes(16), claims)
        client_info = _b64(json.dumps({"uid": USER_OBJECT_ID, "utid": tid}).encode())
        with self.server.lock:
            self.issued += [access, refresh]
        return Response(200, {"token_type": "Bearer", "scope": " ".join(resource_scopes),
                              "expires_in": expires_on - now, "ext_expires_in": expires_on - now,
                              "access_token": access, "refresh_token": refresh, "id_token": id_token,
                              "client_info": client_info})
