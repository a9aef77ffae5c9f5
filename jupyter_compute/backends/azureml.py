"""Azure Machine Learning compute: compute instances and compute clusters of one workspace,
through Resource Manager with the async clients of azure-mgmt-machinelearningservices.

Azure is the source of truth: lists and states are read from it. Long operations follow
Azure-AsyncOperation to the end, report each poll as progress and honour Retry-After; 429 and
5xx are retried with backoff and then reported as unavailable; Azure's own error messages are
passed on as written.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable

from ..azure.credential import arm_scope, default_credential, transport_options
from ..azure.resources import (KIND_OF_TYPE, cluster_body, cluster_update_body, duration, instance_body,
                               to_node, to_size, to_target, to_usage)
from ..azure.specs import (CLUSTER, INSTANCE, ClusterScale, ComputeClusterSpec, ComputeInstanceSpec,
                           check_cluster_name, check_instance_name, check_scale)
from ..errors import BackendRefused, ComputeError, Conflict, InvalidRequest, NotFound, Unavailable
from ..models import Node, Size, Spec, State, Target, Usage
from .base import Backend, KindSpec, OperationContext, Outcome, stored_target

log = logging.getLogger("jupyter_compute.azureml")

RBAC = "Microsoft.MachineLearningServices/workspaces/computes/"
#: The role-based access action each operation needs, as Azure's docs list them.
ACTIONS = {
    "list": RBAC + "read", "get": RBAC + "read", "nodes": RBAC + "listNodes/action",
    "create": RBAC + "write", "update": RBAC + "write",
    "delete": RBAC + "delete", "detach": RBAC + "delete",
    "start": RBAC + "start/action", "stop": RBAC + "stop/action", "restart": RBAC + "restart/action",
    "sizes": "Microsoft.MachineLearningServices/locations/vmsizes/read",
    "usage": "Microsoft.MachineLearningServices/locations/usages/read",
    "workspace": "Microsoft.MachineLearningServices/workspaces/read",
}
SIZES_TTL = 600.0

_ATTACHED = {
    "kubernetes": "Kubernetes (AKS or Arc) attached to the workspace.",
    "virtual-machine": "A virtual machine attached to the workspace.",
    "hdinsight": "An HDInsight cluster attached to the workspace.",
    "synapse-spark": "A Synapse Spark pool attached to the workspace.",
    "databricks": "An Azure Databricks workspace attached to the workspace.",
    "data-lake-analytics": "A Data Lake Analytics account attached to the workspace.",
    "data-factory": "A Data Factory attached to the workspace.",
    "aks": "An AKS cluster attached for (legacy) inference.",
}


class AzureError(BackendRefused):
    """Azure refused or failed a request; ``message`` is Azure's own, ``azure_code`` its code."""

    def __init__(self, message: str, *, azure_code: str | None = None, reason: str = "azure_error",
                 http_status: int | None = None):
        super().__init__(message, reason=reason)
        self.azure_code = azure_code
        #: None when no HTTP answer was had, e.g. when signing in failed.
        self.http_status = http_status

    def to_json(self) -> dict:
        out = super().to_json()
        if self.azure_code:
            out["azure_code"] = self.azure_code
        return out


def _body(response: Any) -> Any:
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
    body = _body(response) if response is not None else None
    if isinstance(body, dict):
        err = body.get("error") if isinstance(body.get("error"), dict) else body
        code = err.get("code") or err.get("Code")
        message = err.get("message") or err.get("Message")
        if message:
            return code, message
    if isinstance(body, str) and body.strip():
        return None, body.strip()
    return None, None


class _ProgressPolling:
    """Factory for an ARM poller that reports each status it reads."""

    @staticmethod
    def make(interval: float, report: Callable[[str, Any], Awaitable[None]] | None):
        from azure.mgmt.core.polling.async_arm_polling import AsyncARMPolling

        class Polling(AsyncARMPolling):
            async def update_status(self) -> None:
                await super().update_status()
                if report is not None:
                    body = _body(self._pipeline_response.http_response)
                    pct = body.get("percentComplete") if isinstance(body, dict) else None
                    await report(self._status, pct)

        return Polling(timeout=interval)


def _raw(pipeline_response: Any, deserialized: Any, headers: Any) -> Any:
    return _body(pipeline_response.http_response)


class AzureMLBackend(Backend):
    """The compute of one Azure ML workspace."""

    kinds = {
        INSTANCE: KindSpec(
            INSTANCE, "Compute instances",
            "A managed cloud workstation for one user: Jupyter, JupyterLab, VS Code and RStudio on an Azure VM.",
            managed=True, operations=("create", "start", "stop", "restart", "delete", "nodes"),
            create_model=ComputeInstanceSpec,
            examples=[{"name": "alice-dev", "size": "Standard_DS3_v2"},
                      {"name": "gpu-dev", "size": "Standard_NC6s_v3", "idle_shutdown_minutes": 60,
                       "schedules": [{"action": "stop", "cron": "0 19 * * 1-5", "time_zone": "UTC"}]}]),
        CLUSTER: KindSpec(
            CLUSTER, "Compute clusters",
            "Managed nodes (AmlCompute) that scale between min_nodes and max_nodes for jobs.",
            managed=True, operations=("create", "update", "delete", "nodes"),
            create_model=ComputeClusterSpec,
            examples=[{"name": "cpu-cluster", "size": "Standard_DS3_v2", "max_nodes": 4},
                      {"name": "gpu-spot", "size": "Standard_NC6s_v3", "priority": "low-priority",
                       "min_nodes": 0, "max_nodes": 8, "idle_seconds_before_scaledown": 300}]),
        **{k: KindSpec(k, "Attached compute", d, managed=False, operations=("detach",))
           for k, d in _ATTACHED.items()},
    }

    def __init__(self, workspace_id: str, store: Any, settings: Any, *, subscription_id: str,
                 resource_group: str, workspace_name: str, credential: Any = None, location: str | None = None):
        super().__init__(workspace_id, store, settings)
        self.azure = settings.azure
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.workspace_name = workspace_name
        self._credential = credential
        self._owns_credential = credential is None
        self._client: Any = None
        self._location = location
        self._sizes: tuple[float, dict[str, Size], dict[str, str]] | None = None

    # -- clients -----------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self.azure.endpoint()

    def client(self):
        """The async management client, made on first use so that nothing contacts Azure before."""
        if self._client is None:
            from azure.mgmt.machinelearningservices.aio import MachineLearningServicesMgmtClient

            if self._credential is None:
                self._credential = default_credential(self.azure)
            endpoint = self.endpoint
            self._client = MachineLearningServicesMgmtClient(
                self._credential, self.subscription_id, base_url=endpoint,
                credential_scopes=[arm_scope(endpoint)], api_version=self.azure.api_version,
                polling_interval=self.azure.poll_interval, **transport_options(self.azure))
        return self._client

    async def set_credential(self, credential: Any) -> None:
        """Use another credential from now on (for example after a device-code sign-in)."""
        await self.close()
        self._credential = credential
        self._owns_credential = False

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        if self._owns_credential and self._credential is not None:
            cred, self._credential = self._credential, None
            await cred.close()

    @property
    def _scope(self) -> str:
        return f"workspace '{self.workspace_name}' (resource group '{self.resource_group}')"

    # -- errors ------------------------------------------------------------------------------------
    def _translate(self, exc: BaseException, action: str, name: str | None = None) -> ComputeError:
        from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, ServiceRequestError,
                                           ServiceResponseError)

        if isinstance(exc, ComputeError):
            return exc
        what = f"{action} of '{name}' in {self._scope}" if name else f"{action} in {self._scope}"
        response = getattr(exc, "response", None)
        if isinstance(exc, HttpResponseError) and response is not None:
            status = response.status_code
            code, message = azure_message(response)
            message = message or getattr(exc, "reason", None) or str(exc)
            if status == 401:
                return AzureError(
                    f"{message} -- Azure did not accept the sign-in for {what}: sign in again (for example "
                    f"`az login`) with an identity of the workspace's tenant, for {self.endpoint}.",
                    azure_code=code, reason="azure_auth", http_status=status)
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
            return AzureError(message, azure_code=code, http_status=status)
        if isinstance(exc, ClientAuthenticationError):
            return AzureError(
                f"Could not sign in to Azure: {exc.message if hasattr(exc, 'message') else exc} -- sign in with "
                "`az login`, a service principal (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_CLIENT_SECRET), a "
                "managed identity, or device-code sign-in.", reason="azure_auth")
        if isinstance(exc, (ServiceRequestError, ServiceResponseError, asyncio.TimeoutError, OSError)):
            return Unavailable(f"could not reach Azure Resource Manager at {self.endpoint}: {exc}",
                               reason="azure_unreachable")
        if isinstance(exc, HttpResponseError):
            return AzureError(str(exc))
        raise exc

    async def _call(self, action: str, name: str | None, fn: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await fn()
        except ComputeError:
            raise
        except Exception as e:  # translated into what the user can act on; unknown ones re-raise
            raise self._translate(e, action, name) from e

    # -- reading -----------------------------------------------------------------------------------
    def _path(self, *rest: str) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace_name}"
                + "".join("/" + r for r in rest))

    async def _list_raw(self) -> list[dict]:
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        client = self.client()
        out: list[dict] = []
        url: str | None = self.endpoint + self._path("computes")
        params: dict[str, str] | None = {"api-version": self.azure.api_version}
        while url:
            resp = await client._send_request(HttpRequest("GET", url, params=params))
            if resp.status_code != 200:
                raise HttpResponseError(response=resp)
            page = resp.json() or {}
            out.extend(page.get("value") or [])
            url, params = page.get("nextLink"), None
        return out

    async def _get_raw(self, name: str) -> dict | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return await self.client().compute.get(self.resource_group, self.workspace_name, name, cls=_raw)
        except ResourceNotFoundError:
            return None

    async def location(self) -> str:
        """The workspace's region, asked of Azure once."""
        if self._location is None:
            ws = await self._call("workspace", None, lambda: self.client().workspaces.get(
                self.resource_group, self.workspace_name))
            self._location = ws.location
        return self._location

    async def _catalog(self, *, fresh: bool = False) -> tuple[dict[str, Size], dict[str, str]]:
        """The location's VM sizes by lower-case name, and each size's quota family."""
        now = time.monotonic()
        if self._sizes is None or fresh or now - self._sizes[0] > SIZES_TTL:
            async def fetch():
                result = await self.client().virtual_machine_sizes.list(await self.location())
                return result.value or []
            vms = await self._call("sizes", None, fetch)
            self._sizes = (now, {vm.name.lower(): to_size(vm) for vm in vms},
                           {vm.name.lower(): vm.family or "" for vm in vms})
        return self._sizes[1], self._sizes[2]

    async def _known_sizes(self) -> dict[str, Size]:
        """Sizes for decorating targets: best effort, never a reason for a list to fail."""
        try:
            return (await self._catalog())[0]
        except ComputeError as e:
            log.debug("VM sizes unavailable for %s: %s", self.workspace_id, e.message)
            self._sizes = (time.monotonic(), {}, {})
            return {}

    async def list_targets(self, stored: list[dict]) -> list[Target]:
        resources = await self._call("list", None, self._list_raw)
        sizes = await self._known_sizes()
        targets = [to_target(r, self.workspace_id, sizes) for r in resources]
        busy = {op["target"] for op in await self.store.running_operations(self.workspace_id)}
        await self._mirror(targets, stored, busy=busy)
        seen = {t.name for t in targets}
        # A target being created here that Azure does not know yet is shown from the store.
        targets += [stored_target(r) for r in stored if r["name"] not in seen and r["name"] in busy]
        return sorted(targets, key=lambda t: t.name)

    async def get_target(self, name: str, stored: dict | None) -> Target | None:
        res = await self._call("get", name, lambda: self._get_raw(name))
        if res is None:
            if stored is not None and any(op["target"] == name for op in
                                          await self.store.running_operations(self.workspace_id)):
                return stored_target(stored)
            return None
        target = to_target(res, self.workspace_id, self._sizes[1] if self._sizes else None)
        await self._mirror([target], [stored] if stored else [])
        return target

    async def _mirror(self, targets: list[Target], stored: list[dict], *, busy: set[str] | None = None) -> None:
        """Keep a row per Azure compute in the store, so that operations on any of them are
        recorded and a second one on the same target is refused. With ``busy`` given (a full
        list), rows of computes gone from Azure and not being worked on are dropped."""
        have = {r["name"] for r in stored}
        for t in targets:
            if t.name not in have and t.kind in self.kinds:
                try:
                    await self.store.insert_target(self.workspace_id, t.name, t.kind, t.managed, {}, t.state.value)
                except Conflict:
                    pass
        if busy is not None:
            names = {t.name for t in targets}
            for r in stored:
                if r["name"] not in names and r["name"] not in busy:
                    await self.store.delete_target(self.workspace_id, r["name"])

    async def nodes(self, target: Target) -> list[Node]:
        if target.kind == INSTANCE:
            addresses = target.properties.get("addresses") or {}
            if not addresses:
                return []
            ssh = target.properties.get("ssh") or {}
            return [Node(id=target.name, state=target.provider_state or target.state.value,
                         address=addresses.get("public") or addresses.get("private"), port=ssh.get("port"),
                         properties={"private_ip": addresses.get("private"), "public_ip": addresses.get("public")})]
        if target.kind != CLUSTER:
            return []

        async def fetch():
            return [to_node(n) async for n in self.client().compute.list_nodes(
                self.resource_group, self.workspace_name, target.name)]
        return await self._call("nodes", target.name, fetch)

    async def sizes(self) -> list[Size]:
        catalog, _ = await self._catalog(fresh=True)
        return sorted(catalog.values(), key=lambda s: s.name.lower())

    async def usage(self) -> list[Usage]:
        return [to_usage(u) for u in await self._usages()]

    async def _usages(self) -> list[Any]:
        async def fetch():
            return [u async for u in self.client().usages.list(await self.location())]
        return await self._call("usage", None, fetch)

    # -- checks before anything is created -------------------------------------------------------
    def check_name(self, kind: str, name: Any) -> str:
        if kind == INSTANCE:
            return check_instance_name(name)
        if kind == CLUSTER:
            return check_cluster_name(name)
        return super().check_name(kind, name)

    async def precheck(self, name: str, kind: str, spec: Spec, *, force: bool = False) -> None:
        """The size exists here, suits the kind and priority, and the quota holds what create allocates.

        When Azure will not say (no permission to read sizes or usage, or a cloud without those
        APIs) the check is left to Azure itself.
        """
        if kind not in (INSTANCE, CLUSTER):
            return
        try:
            catalog, families = await self._catalog()
            usages = await self._usages()
        except ComputeError as e:
            if isinstance(e, AzureError) and e.reason == "azure_auth" and e.http_status is None:
                raise  # not signed in at all: create would fail the same way
            log.debug("quota check skipped for %s: %s", name, e.message)
            return
        location = self._location or "this region"
        size = catalog.get(spec.size.lower())
        if catalog and size is None:
            near = [s.name for s in catalog.values() if kind in s.compute_types or not s.compute_types][:8]
            raise InvalidRequest(f"size: '{spec.size}' is not offered in {location}; for example "
                                 f"{', '.join(near)} (see `jupyter compute sizes`)", field="/size")
        if size is None:
            return
        label = "compute instances" if kind == INSTANCE else "compute clusters"
        if size.compute_types and kind not in size.compute_types:
            raise InvalidRequest(f"size: '{size.name}' is not available for {label} in {location}", field="/size")
        low = kind == CLUSTER and spec.priority == "low-priority"
        if low and size.low_priority is False:
            raise InvalidRequest(f"priority: '{size.name}' cannot run low-priority nodes", field="/priority")
        vcpus = size.vcpus or 0
        nodes = 1 if kind == INSTANCE else spec.min_nodes
        field = "/min_nodes" if kind == CLUSTER and spec.min_nodes else "/size"
        for bucket, u in _buckets(usages, families.get(size.name.lower(), ""), low):
            if u.limit is None or u.limit < 0:
                continue
            free = u.limit - (u.current_value or 0)
            need = vcpus * nodes
            if need > free or (vcpus > u.limit):
                what = (f"{nodes} node(s) of {size.name} need {need} vCPUs" if need > free
                        else f"one node of {size.name} needs {vcpus} vCPUs")
                raise InvalidRequest(
                    f"quota: {what} of '{bucket}', which has {max(free, 0):g} of {u.limit:g} free in {location}. "
                    "Pick another size (`jupyter compute sizes`), free some compute, or request more quota "
                    "for this family in Azure ML studio.", field=field, reason="quota_exceeded")

    def validate_spec(self, kind: str, data: dict[str, Any], *, attach: bool) -> Spec:
        if kind in _ATTACHED:
            raise InvalidRequest(f"kind '{kind}' is attached to the workspace in Azure; attaching it from here "
                                 "is not available yet", field="/kind", reason="unsupported_operation")
        return super().validate_spec(kind, data, attach=attach)

    def refusal(self, target: Target, action: str) -> str:
        if target.kind == CLUSTER and action in ("start", "stop", "restart"):
            return (f"'{target.name}' is a compute cluster: it has no {action}; it scales between min_nodes and "
                    "max_nodes by itself. Set min_nodes to 0 with update to release idle nodes.")
        return super().refusal(target, action)

    def update_refusal(self, target: Target) -> str:
        if target.kind == INSTANCE:
            return (f"'{target.name}' is a compute instance: its settings are fixed at create; "
                    "delete it and create it again to change them")
        return super().update_refusal(target)

    # -- long operations ---------------------------------------------------------------------------
    async def _lro(self, action: str, name: str, ctx: OperationContext | None,
                   begin: Callable[..., Awaitable[Any]]) -> Any:
        async def report(status: str, pct: Any) -> None:
            if ctx is not None:
                await ctx.progress(f"{action} in Azure: {status}" + (f" ({pct:g}%)" if isinstance(pct, (int, float))
                                                                     else ""))

        async def run():
            poller = await begin(polling=_ProgressPolling.make(self.azure.poll_interval, report))
            if ctx is not None:
                await ctx.progress(f"{action} accepted by Azure")
            return await poller.result()
        return await self._call(action, name, run)

    async def _outcome(self, name: str, res: dict | None = None) -> Outcome:
        res = res if isinstance(res, dict) and res.get("properties") else await self._call(
            "get", name, lambda: self._get_raw(name))
        if res is None:
            raise AzureError(f"Azure no longer knows '{name}'", reason="azure_not_found")
        t = to_target(res, self.workspace_id)
        errors = [e.model_dump(mode="json", exclude_none=True) for e in t.errors]
        if t.state == State.failed:
            detail = "; ".join(e["message"] for e in errors) or f"Azure reports '{name}' as {t.provider_state}"
            raise AzureError(detail, reason="azure_operation_failed",
                             azure_code=t.errors[0].code if t.errors else None)
        return Outcome(t.state, t.provider_state, errors=errors)

    async def create(self, name: str, kind: str, spec: Spec, ctx: OperationContext) -> Outcome:
        try:
            location = await self.location()
        except ComputeError as e:
            if e.reason == "azure_auth":
                raise
            location = None  # Azure then uses the workspace's own region
        body = instance_body(spec, location) if kind == INSTANCE else cluster_body(spec, location)
        label = "compute instance" if kind == INSTANCE else "compute cluster"
        await ctx.progress(f"asking Azure to create {label} '{name}' ({spec.size})")
        content = json.dumps(body).encode()
        res = await self._lro("create", name, ctx, lambda **kw: self.client().compute.begin_create_or_update(
            self.resource_group, self.workspace_name, name, content, content_type="application/json", cls=_raw, **kw))
        return await self._outcome(name, res)

    async def start(self, target: Target, ctx: OperationContext) -> Outcome:
        return await self._action("start", target, ctx)

    async def stop(self, target: Target, ctx: OperationContext) -> Outcome:
        return await self._action("stop", target, ctx)

    async def restart(self, target: Target, ctx: OperationContext) -> Outcome:
        return await self._action("restart", target, ctx)

    async def _action(self, action: str, target: Target, ctx: OperationContext) -> Outcome:
        if target.kind != INSTANCE:
            raise InvalidRequest(self.refusal(target, action), reason="unsupported_operation")
        await ctx.progress(f"asking Azure to {action} '{target.name}'")
        begin = getattr(self.client().compute, f"begin_{action}")
        await self._lro(action, target.name, ctx, lambda **kw: begin(
            self.resource_group, self.workspace_name, target.name, **kw))
        return await self._outcome(target.name)

    async def delete(self, target: Target, ctx: OperationContext) -> None:
        await self._remove("delete", target, ctx)

    async def detach(self, target: Target, ctx: OperationContext) -> None:
        await self._remove("detach", target, ctx)

    async def _remove(self, action: str, target: Target, ctx: OperationContext) -> None:
        how = "Delete" if action == "delete" else "Detach"
        note = "" if action == "delete" else " (the resource itself is left as it is)"
        await ctx.progress(f"asking Azure to {action} '{target.name}'{note}")
        await self._lro(action, target.name, ctx, lambda **kw: self.client().compute.begin_delete(
            self.resource_group, self.workspace_name, target.name, underlying_resource_action=how, **kw))

    async def update(self, target: Target, changes: dict[str, Any]) -> None:
        if target.kind != CLUSTER:
            raise InvalidRequest(self.update_refusal(target), reason="unsupported_operation")
        from pydantic import ValidationError

        from ..errors import from_validation_error

        nodes = target.nodes
        current = {"min_nodes": nodes.min if nodes and nodes.min is not None else 0,
                   "max_nodes": nodes.max if nodes and nodes.max is not None else 1,
                   "idle_seconds_before_scaledown": target.properties.get("idle_seconds_before_scaledown") or 120}
        try:
            scale = ClusterScale.model_validate({**current, **changes})
        except ValidationError as e:
            raise from_validation_error(e) from None
        check_scale(scale.min_nodes, scale.max_nodes,
                    field="/min_nodes" if "min_nodes" in changes else "/max_nodes")
        res = await self._call("get", target.name, lambda: self._get_raw(target.name))
        if res is None:
            raise NotFound(f"Azure no longer knows '{target.name}'", reason="azure_not_found")
        body = cluster_update_body(res, {"minNodeCount": scale.min_nodes, "maxNodeCount": scale.max_nodes,
                                         "nodeIdleTimeBeforeScaleDown": duration(scale.idle_seconds_before_scaledown)})
        content = json.dumps(body).encode()
        await self._lro("update", target.name, None, lambda **kw: self.client().compute.begin_create_or_update(
            self.resource_group, self.workspace_name, target.name, content, content_type="application/json",
            cls=_raw, **kw))


def _buckets(usages: list[Any], family: str, low_priority: bool) -> list[tuple[str, Any]]:
    """The quota buckets a node of a size draws on: its family's and the regional total, for
    dedicated nodes; the regional low-priority total for low-priority ones."""
    def norm(s: str | None) -> str:
        return "".join((s or "").lower().split())

    fam = norm(family)
    out = []
    for u in usages:
        value, local = norm(u.name.value if u.name else ""), norm(u.name.localized_value if u.name else "")
        label = (u.name.localized_value or u.name.value) if u.name else (u.type or "quota")
        if low_priority:
            if value in ("totallowprioritycores", "lowprioritycores") or "lowpriorityregional" in local:
                out.append((label, u))
        elif fam and (value == fam or local.startswith(fam)):
            out.append((label, u))
        elif value in ("totalcores", "totaldedicatedcores", "dedicatedcores") or "dedicatedregional" in local:
            out.append((label, u))
    return out


__all__ = ["AzureMLBackend", "AzureError", "KIND_OF_TYPE"]
