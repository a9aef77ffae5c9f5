"""One Azure ML workspace in Resource Manager: the async management client, its credential, the
workspace's resource path, and Azure's errors in words a person can act on.

Shared by the backend (computes), the job service and the compute-instance route.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

from ...core.errors import BackendRefused, ComputeError, Conflict, NotFound, Unavailable
from .credential import arm_scope, transport_options

RBAC = "Microsoft.MachineLearningServices/workspaces/computes/"
#: The role-based access action each operation needs, as Azure's docs list them.
ACTIONS = {
    "list": RBAC + "read", "get": RBAC + "read", "nodes": RBAC + "listNodes/action",
    "create": RBAC + "write", "update": RBAC + "write", "attach": RBAC + "write",
    "delete": RBAC + "delete", "detach": RBAC + "delete",
    "start": RBAC + "start/action", "stop": RBAC + "stop/action", "restart": RBAC + "restart/action",
    "sizes": "Microsoft.MachineLearningServices/locations/vmsizes/read",
    "usage": "Microsoft.MachineLearningServices/locations/usages/read",
    "workspace": "Microsoft.MachineLearningServices/workspaces/read",
}
#: Said with every failure to sign in: the faces offer device-code sign-in when they see it.
SIGN_IN = {"sign_in": "device_code"}


class AzureError(BackendRefused):
    """Azure refused or failed a request; ``message`` is Azure's own, ``azure_code`` its code."""

    def __init__(self, message: str, *, azure_code: str | None = None, reason: str = "azure_error",
                 http_status: int | None = None, details: dict | None = None):
        super().__init__(message, reason=reason, details=details)
        self.azure_code = azure_code
        #: None when no HTTP answer was had, e.g. when signing in failed.
        self.http_status = http_status

    def to_json(self) -> dict:
        out = super().to_json()
        if self.azure_code:
            out["azure_code"] = self.azure_code
        return out


def body_of(response: Any) -> Any:
    try:
        text = response.text()
    except Exception:  # an unread or undecodable body carries no message
        return None
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def azure_message(response: Any) -> tuple[str | None, str | None]:
    """(code, message) of an ARM error body, an operation-status body, or a bare text body."""
    body = body_of(response) if response is not None else None
    if isinstance(body, dict):
        err = body.get("error") if isinstance(body.get("error"), dict) else body
        code = err.get("code") or err.get("Code")
        message = err.get("message") or err.get("Message")
        if message:
            return code, message
    if isinstance(body, str) and body.strip():
        return None, body.strip()
    return None, None


#: The longest wait between two polls of a long operation, whatever Retry-After says.
LONGEST_POLL_WAIT = 300.0


def retry_after(response: Any) -> float | None:
    """Seconds a Retry-After header asks for (a number; a date is taken as "soon")."""
    value = (response.headers.get("Retry-After") or "").strip()
    try:
        return min(max(float(value), 0.0), LONGEST_POLL_WAIT) if value else None
    except ValueError:
        return None


def follow_of(response: Any, resource: str) -> dict | None:
    """How to follow a long operation Resource Manager accepted (201 or 202): its status URL, which
    kind of URL it is, the resource it acts on, and how long Azure asks to wait before the first
    look. None when the answer is final already."""
    if response.status_code not in (201, 202):
        return None
    status_url = response.headers.get("Azure-AsyncOperation")
    location = response.headers.get("Location")
    if not (status_url or location):
        return None
    return {"url": status_url or location, "via": "azure-asyncoperation" if status_url else "location",
            "resource": resource, "retry_after": retry_after(response)}


def raw_body(pipeline_response: Any, deserialized: Any, headers: Any) -> Any:
    return body_of(pipeline_response.http_response)




class ArmWorkspace:
    """The workspace's connection to Resource Manager, made on first use so nothing contacts Azure before."""

    def __init__(self, azure: Any, *, subscription_id: str, resource_group: str, workspace_name: str,
                 make_credential: Callable[[], Any], credential: Any = None):
        self.azure = azure
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.workspace_name = workspace_name
        self._make_credential = make_credential
        self.credential = credential
        self._owns_credential = credential is None
        self._client: Any = None

    @property
    def endpoint(self) -> str:
        return self.azure.endpoint()

    def client(self):
        """The async management client, made on first use so that nothing contacts Azure before."""
        if self._client is None:
            from azure.mgmt.machinelearningservices.aio import MachineLearningServicesMgmtClient

            if self.credential is None:
                self.credential = self._make_credential()
            endpoint = self.endpoint
            self._client = MachineLearningServicesMgmtClient(
                self.credential, self.subscription_id, base_url=endpoint,
                credential_scopes=[arm_scope(endpoint)], api_version=self.azure.api_version,
                polling_interval=self.azure.poll_interval, **transport_options(self.azure))
        return self._client

    async def set_credential(self, credential: Any, *, owned: bool = False) -> None:
        """Use another credential from now on (for example after a device-code sign-in); an
        ``owned`` one is closed when it is replaced or this closes."""
        await self.close()
        self.credential = credential
        self._owns_credential = owned

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        if self._owns_credential and self.credential is not None:
            cred, self.credential = self.credential, None
            await cred.close()

    async def send(self, method: str, url: str, body: bytes | None = None) -> Any:
        """One request through the management client's pipeline (its sign-in, retries and transport);
        an answer Azure refuses with is raised as ``HttpResponseError``, for ``call`` to translate."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        response = await self.client()._send_request(HttpRequest(method, url, content=body, headers=headers))
        if response.status_code >= 400:
            raise HttpResponseError(response=response)
        return response

    def url(self, *rest: str, **query: str) -> str:
        """The URL of a resource under the workspace, with the api-version in use."""
        from urllib.parse import urlencode

        return f"{self.endpoint}{self.path(*rest)}?" + urlencode({"api-version": self.azure.api_version, **query})

    @property
    def scope(self) -> str:
        return f"workspace '{self.workspace_name}' (resource group '{self.resource_group}')"

    # -- errors ------------------------------------------------------------------------------------
    def translate(self, exc: BaseException, action: str, name: str | None = None) -> ComputeError:
        from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, ServiceRequestError,
                                           ServiceRequestTimeoutError, ServiceResponseError,
                                           ServiceResponseTimeoutError)

        if isinstance(exc, ComputeError):
            return exc
        what = f"{action} of '{name}' in {self.scope}" if name else f"{action} in {self.scope}"
        response = getattr(exc, "response", None)
        if isinstance(exc, HttpResponseError) and response is not None:
            status = response.status_code
            code, message = azure_message(response)
            message = message or getattr(exc, "reason", None) or str(exc)
            if status == 401:
                return AzureError(
                    f"{message} -- Azure did not accept the sign-in for {what}: sign in again (for example "
                    f"`az login`, or device-code sign-in) with an identity of the workspace's tenant, for "
                    f"{self.endpoint}.", azure_code=code, reason="azure_auth", http_status=status, details=SIGN_IN)
            if status == 403:
                return AzureError(
                    f"{message} -- The signed-in identity lacks a permission: {what} needs the Azure role-based "
                    f"access action {ACTIONS.get(action, ACTIONS['get'])} (granted for example by the AzureML "
                    "Compute Operator or Contributor role).",
                    azure_code=code, reason="azure_auth", http_status=status)
            if status == 404:
                return NotFound(message, reason="azure_not_found")
            if status == 409:
                return Conflict(message, reason="azure_conflict")
            if status == 429 or status >= 500:
                return Unavailable(
                    f"Azure Resource Manager is busy or unavailable (HTTP {status}) and stayed so after retries: "
                    f"{message}", reason="azure_unavailable")
            if status < 400:  # a long operation that ended Failed or Canceled
                return AzureError(message, azure_code=code, reason="azure_operation_failed", http_status=status)
            # Azure's own refusal, in its own words: only Azure knows what the workspace allows.
            return AzureError(message, azure_code=code, reason="azure_refused", http_status=status)
        if isinstance(exc, ClientAuthenticationError):
            return AzureError(
                f"Could not sign in to Azure: {exc.message if hasattr(exc, 'message') else exc} -- sign in with "
                "`az login`, a service principal (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_CLIENT_SECRET), a "
                "managed identity, or device-code sign-in.", reason="azure_auth", details=SIGN_IN)
        if isinstance(exc, (ServiceRequestTimeoutError, ServiceResponseTimeoutError)):
            return Unavailable(f"Azure Resource Manager at {self.endpoint} did not answer within "
                               f"{self.azure.request_timeout:g} s, and not after {self.azure.retry_total} "
                               "retries either (c.AzureML.request_timeout)", reason="azure_timeout")
        if isinstance(exc, (ServiceRequestError, ServiceResponseError, asyncio.TimeoutError, OSError)):
            return Unavailable(f"could not reach Azure Resource Manager at {self.endpoint}: {exc}",
                               reason="azure_unreachable")
        if isinstance(exc, HttpResponseError):
            return AzureError(str(exc))
        raise exc

    async def call(self, action: str, name: str | None, fn: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await fn()
        except ComputeError:
            raise
        except Exception as e:  # translated into what the user can act on; unknown ones re-raise
            raise self.translate(e, action, name) from e

    def path(self, *rest: str) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace_name}"
                + "".join("/" + r for r in rest))
