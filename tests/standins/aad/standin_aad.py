"""Azure AD sign-in for the stand-in compute instance's Jupyter server.

A compute instance's Jupyter server lets in only Azure AD bearer tokens. This identity provider,
loaded into a real ``jupyter server`` (``--ServerApp.identity_provider_class=standin_aad.AzureADBearer``,
with this folder on PYTHONPATH), lets in only tokens that the Resource Manager stand-in's
managed-identity endpoint signed (HS256 with the key in STANDIN_AAD_KEY), for one of the audiences
in STANDIN_AAD_AUDIENCES, not yet expired, and, when STANDIN_AAD_OWNER names an object id, only
that user's. Each decision is written to STANDIN_AAD_LOG, so a test can see what was refused and why.
"""
import base64
import hashlib
import hmac
import json
import os
import time

from jupyter_server.auth.identity import IdentityProvider, User

KEY = bytes.fromhex(os.environ["STANDIN_AAD_KEY"])
AUDIENCES = {a.rstrip("/") for a in os.environ.get("STANDIN_AAD_AUDIENCES", "").split(",") if a}
OWNER = os.environ.get("STANDIN_AAD_OWNER") or None
LOG = os.environ.get("STANDIN_AAD_LOG")


def _unb64(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def check(token):
    """(claims, None) for a token this server lets in, else (None, why)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None, "not a JWT"
    expected = hmac.new(KEY, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64(parts[2]), expected):
            return None, "bad signature"
        claims = json.loads(_unb64(parts[1]))
    except ValueError:
        return None, "malformed"
    if float(claims.get("exp", 0)) <= time.time():
        return None, "expired"
    if str(claims.get("aud", "")).rstrip("/") not in AUDIENCES:
        return None, f"wrong audience {claims.get('aud')}"
    if OWNER and claims.get("oid") != OWNER:
        return None, f"not the owner ({claims.get('oid')})"
    return claims, None


def _log(handler, outcome):
    if LOG:
        with open(LOG, "a") as f:
            f.write(json.dumps({"at": time.time(), "path": handler.request.path, "outcome": outcome}) + "\n")


class AzureADBearer(IdentityProvider):
    def get_user(self, handler):
        value = handler.request.headers.get("Authorization", "")
        if not value.startswith("Bearer "):
            if handler.request.path.rstrip("/") not in ("/api", ""):
                _log(handler, "no bearer token")
            return None
        claims, why = check(value[len("Bearer "):])
        if claims is None:
            _log(handler, why)
            return None
        _log(handler, "ok")
        handler._token_authenticated = True  # a bearer token, not a cookie: no XSRF check
        return User(claims.get("oid", "user"), name=claims.get("name"))
