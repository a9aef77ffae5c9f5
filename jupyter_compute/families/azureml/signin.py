"""Device-code sign-in to an Azure ML workspace, for when no credential of the default chain signs in.

``SignIns`` keeps, per workspace, the latest sign-in begun in this process: the URL and code the
person must use, and whether they have signed in yet. Once they have, the workspace's Azure calls
use that credential; it stays in this process's memory, and its tokens are never shown, logged or
stored. The REST API and ``%compute login`` both go through here.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from typing import Any

from ...core.errors import BackendRefused, InvalidRequest, NotFound, Unavailable
from .credential import SignInCancelled, arm_scope, device_code_credential

log = logging.getLogger(__name__)

PENDING, SIGNED_IN, FAILED, EXPIRED, CANCELLED = "pending", "signed_in", "failed", "expired", "cancelled"

#: Seconds Azure AD has to hand out a code before starting a sign-in is reported unavailable.
PROMPT_TIMEOUT = 60.0


def _message(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


class DeviceCodeSignIn:
    """One device-code sign-in to one workspace: started, then pending until the person signs in
    (``signed_in``), refuses (``failed``, with Azure's message), lets the code run out
    (``expired``) or it is cancelled (``cancelled``)."""

    def __init__(self, backend: Any):
        self.backend = backend
        self.workspace = backend.workspace_id
        self.state = PENDING
        self.verification_uri: str | None = None
        self.user_code: str | None = None
        self.expires_on: dt.datetime | None = None
        self.error: str | None = None
        self.account: str | None = None
        self._cancelled = threading.Event()
        self._task: asyncio.Task | None = None

    @property
    def message(self) -> str | None:
        if self.verification_uri is None:
            return None
        return (f"To sign in, use a web browser to open the page {self.verification_uri} and enter the code "
                f"{self.user_code} to authenticate.")

    def info(self) -> dict[str, Any]:
        """What the person needs to sign in, and how far it got; never a token."""
        return {"workspace": self.workspace, "state": self.state, "verification_uri": self.verification_uri,
                "user_code": self.user_code, "message": self.message,
                "expires_on": self.expires_on.isoformat() if self.expires_on else None,
                "account": self.account, "error": self.error}

    async def start(self, timeout: float = PROMPT_TIMEOUT) -> None:
        """Ask Azure AD for a code; returns once it is known (the sign-in goes on in a thread)."""
        loop = asyncio.get_running_loop()
        prompted: asyncio.Future = loop.create_future()

        def on_prompt(url: str, code: str, expires_on: dt.datetime) -> None:
            def deliver() -> None:
                if not prompted.done():
                    prompted.set_result((url, code, expires_on))
            loop.call_soon_threadsafe(deliver)

        credential = device_code_credential(self.backend.azure, on_prompt, cancelled=self._cancelled.is_set)
        self._task = asyncio.create_task(self._sign_in(credential))
        await asyncio.wait({prompted, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if prompted.done():
            self.verification_uri, self.user_code, self.expires_on = prompted.result()
            return
        if self._task.done():
            raise BackendRefused(f"Could not begin device-code sign-in for workspace '{self.workspace}': "
                                 f"{self.error}", reason="azure_auth")
        self.cancel()
        raise Unavailable(f"Azure AD at {self.backend.azure.authority()} gave no device code within {timeout:g}s",
                          reason="azure_unreachable")

    async def _sign_in(self, credential: Any) -> None:
        try:
            record = await credential.authenticate(arm_scope(self.backend.arm.endpoint))
        except Exception as e:  # the outcome is reported through the state, not raised
            await credential.close()
            if self._cancelled.is_set() or isinstance(e.__cause__, SignInCancelled):
                self.state, self.error = CANCELLED, "The sign-in was cancelled."
            elif self.expires_on is not None and (time.time() >= self.expires_on.timestamp()
                                                  or "expired" in _message(e).lower()):
                self.state = EXPIRED
                self.error = (f"The code {self.user_code} expired before anyone signed in with it: "
                              "start the sign-in again.")
            else:
                self.state, self.error = FAILED, _message(e)
            log.info("device-code sign-in for workspace '%s' ended %s: %s", self.workspace, self.state, self.error)
            return
        if self._cancelled.is_set():
            await credential.close()
            self.state, self.error = CANCELLED, "The sign-in was cancelled."
            return
        await self.backend.set_credential(credential, owned=True)
        self.account = getattr(record, "username", None)
        self.state = SIGNED_IN
        log.info("workspace '%s' signed in to Azure with a device code as %s", self.workspace, self.account)

    async def wait(self) -> dict[str, Any]:
        """Until the sign-in ends; cancelling the wait leaves the sign-in going."""
        if self._task is not None:
            await asyncio.shield(self._task)
        return self.info()

    def cancel(self) -> None:
        self._cancelled.set()
        if self.state == PENDING:
            self.state, self.error = CANCELLED, "The sign-in was cancelled."


class SignIns:
    """The device-code sign-ins of this process, one (the latest) per workspace."""

    def __init__(self) -> None:
        self._by_workspace: dict[str, DeviceCodeSignIn] = {}

    @staticmethod
    def _backend(workspace: Any) -> Any:
        for b in workspace.backends:
            if hasattr(b, "set_credential"):
                return b
        raise InvalidRequest(f"workspace '{workspace.id}' is not an Azure ML workspace: it has no Azure sign-in",
                             reason="not_azure")

    async def start(self, workspace: Any) -> dict[str, Any]:
        """Begin a sign-in, or give the one still waiting for the person."""
        current = self._by_workspace.get(workspace.id)
        if current is not None and current.state == PENDING and current.user_code is not None:
            return current.info()
        attempt = DeviceCodeSignIn(self._backend(workspace))
        if current is not None:
            current.cancel()
        self._by_workspace[workspace.id] = attempt
        await attempt.start()
        return attempt.info()

    def get(self, workspace: Any) -> DeviceCodeSignIn:
        self._backend(workspace)
        attempt = self._by_workspace.get(workspace.id)
        if attempt is None:
            raise NotFound(f"no device-code sign-in was started for workspace '{workspace.id}'",
                           reason="no_sign_in")
        return attempt

    def state(self, workspace: Any) -> dict[str, Any]:
        return self.get(workspace).info()

    def cancel(self, workspace: Any) -> dict[str, Any]:
        attempt = self.get(workspace)
        attempt.cancel()
        return attempt.info()

    def close(self) -> None:
        for attempt in self._by_workspace.values():
            attempt.cancel()
