"""How jupyter_compute signs in to Azure: the default credential chain, device code, the cloud's
authority and Resource Manager endpoint, and the CA bundle every HTTPS client must be given."""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable
from urllib.parse import urlparse

log = logging.getLogger(__name__)

#: The environment variables that name a CA bundle, in the order they are honoured.
CA_BUNDLE_VARS = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")


def ca_bundle() -> str | None:
    """The CA bundle named by the environment, if any.

    aiohttp (under every async Azure client) ignores REQUESTS_CA_BUNDLE, so it is handed to each
    client explicitly as ``connection_verify``.
    """
    for var in CA_BUNDLE_VARS:
        path = os.environ.get(var)
        if path and os.path.isfile(path):
            return path
    return None


def arm_scope(endpoint: str) -> str:
    """The token scope for a Resource Manager endpoint: it follows the endpoint, so a private
    cloud or a proxy gets tokens for itself."""
    return endpoint.rstrip("/") + "/.default"


def authority_host(authority: str) -> str:
    return urlparse(authority).netloc or authority


def transport_options(settings: Any) -> dict[str, Any]:
    """Keyword arguments every Azure client of this process gets: CA bundle, retries and timeouts
    (azure-core's own wait five minutes on a connection that has stopped answering)."""
    timeout = float(getattr(settings, "request_timeout", 60.0))
    opts: dict[str, Any] = {
        "retry_total": int(getattr(settings, "retry_total", 4)),
        "retry_backoff_factor": float(getattr(settings, "retry_backoff_factor", 0.8)),
        "retry_backoff_max": float(getattr(settings, "retry_backoff_max", 30.0)),
        "connection_timeout": timeout,
        "read_timeout": timeout,
    }
    ca = ca_bundle()
    if ca:
        opts["connection_verify"] = ca
    return opts


def default_credential(settings: Any):
    """azure-identity's DefaultAzureCredential (async): environment service principal, workload
    identity, managed identity (including Azure ML's MSI_ENDPOINT/MSI_SECRET), then developer
    sign-ins such as the Azure CLI. Creating it does no I/O."""
    from azure.identity.aio import DefaultAzureCredential

    kwargs: dict[str, Any] = {"authority": authority_host(settings.authority())}
    ca = ca_bundle()
    if ca:
        kwargs["connection_verify"] = ca
    return DefaultAzureCredential(**kwargs)


class ThreadedCredential:
    """An async face for a synchronous credential (device code has no async one): each token
    request runs in a thread so the event loop never waits on sign-in."""

    def __init__(self, credential: Any):
        self._credential = credential

    async def get_token(self, *scopes: str, **kwargs: Any):
        return await asyncio.to_thread(self._credential.get_token, *scopes, **kwargs)

    async def authenticate(self, *scopes: str) -> Any:
        """Sign in now, interactively, caching a token for ``scopes``; returns azure-identity's
        AuthenticationRecord (who signed in, never a token)."""
        return await asyncio.to_thread(self._credential.authenticate, scopes=list(scopes))

    async def close(self) -> None:
        close = getattr(self._credential, "close", None)
        if close:
            await asyncio.to_thread(close)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class SignInCancelled(Exception):
    """The person cancelled a device-code sign-in while it waited for them."""


def known_authority(authority: str) -> bool:
    """Whether ``authority`` is one of the public clouds' (which instance discovery knows)."""
    from .config import CLOUDS

    return authority_host(authority).lower() in {authority_host(a) for _, a in CLOUDS.values()}


def device_code_credential(settings: Any, on_prompt: Callable[[str, str, Any], None], *,
                           tenant_id: str | None = None, timeout: int = 900,
                           cancelled: Callable[[], bool] | None = None) -> ThreadedCredential:
    """Sign in with a device code: ``on_prompt(url, code, expires_on)`` is called with what the
    person must open and type (the magics print it, the sidebar shows it).

    Signing in happens only in ``authenticate``: a later token request that the cached sign-in
    cannot answer fails (so the workspace reports ``azure_auth`` again) rather than silently
    starting a new device-code prompt that nobody sees. While the person has not signed in,
    azure-identity polls the token endpoint; once ``cancelled()`` is true the next poll raises
    SignInCancelled, so a cancelled sign-in frees its thread within one polling interval.
    """
    from azure.identity import DeviceCodeCredential

    authority = settings.authority()
    kwargs: dict[str, Any] = {"authority": authority_host(authority), "timeout": timeout,
                              "prompt_callback": on_prompt, "disable_automatic_authentication": True}
    if not known_authority(authority):
        # Instance discovery asks login.microsoftonline.com about the authority, which a private
        # cloud's (or a proxy's) cannot be found in.
        kwargs["disable_instance_discovery"] = True
    tenant_id = tenant_id or getattr(settings, "tenant_id", "")
    if tenant_id:
        kwargs["tenant_id"] = tenant_id
    if cancelled is not None:
        def refuse_when_cancelled(request: Any) -> None:
            if cancelled():
                raise SignInCancelled("device-code sign-in was cancelled")
        kwargs["raw_request_hook"] = refuse_when_cancelled
    ca = ca_bundle()
    if ca:
        kwargs["connection_verify"] = ca
    return ThreadedCredential(DeviceCodeCredential(**kwargs))
