"""Azure Machine Learning compute: compute instances and compute clusters of one workspace,
through Resource Manager with the async clients of azure-mgmt-machinelearningservices.

Azure is the source of truth: lists and states are read from it. A long operation Azure accepted
is recorded with its Azure-AsyncOperation or Location URL, so that any process can follow it to
the end (the one that began it may exit: --no-wait); each poll is reported as progress and
Retry-After is honoured. 429 and 5xx are retried with backoff and then reported as unavailable;
Azure's own error messages are passed on as written.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, Awaitable, Callable

from .attached import (DESCRIPTIONS, EXAMPLES, RETIRED, SPEC_MODELS, SSH_KINDS, AttachedSpec, attach_body,
                               check_attached_name, resource_name, same_resource)
from .config import AzureML
from .arm import ArmWorkspace, AzureError, body_of, follow_of, raw_body, retry_after
from .credential import arm_scope, default_credential
from .instance import consequence as instance_consequence
from .instance import describe as describe_this_instance
from .instance import describe_owner, identity_of, jupyter_base_url, owner_of, token_claims
from .resources import (KIND_OF_TYPE, cluster_body, cluster_update_body, duration, instance_body,
                               to_node, to_size, to_target, to_usage)
from .specs import (CLUSTER, INSTANCE, ClusterScale, ComputeClusterSpec, ComputeInstanceSpec,
                           check_cluster_name, check_instance_name, check_scale)
from ...core.errors import ComputeError, Conflict, InvalidRequest, NotFound, Unavailable
from ...core.models import Node, Size, Spec, State, Target, Usage
from ...core.backend import Backend, KindSpec, OperationContext, Outcome, StillRunning, stored_target
from ...core.kernels import KernelSpecInfo, TargetKernel
from ...core.route import HereRoute, Route
from ...transport.kernel_bridge import ServerKernel, read_kernelspecs, server_kernel_specs

log = logging.getLogger(__name__)

SIZES_TTL = 600.0

ATTACHED_FAMILY = "Attached compute"


class AlreadyAttached(Conflict):
    """The resource is attached to the workspace under another name; ``existing`` names that target."""
    reason = "already_attached"

    def __init__(self, message: str, *, existing: str, existing_kind: str):
        super().__init__(message, field="/resource_id")
        self.existing = existing
        self.existing_kind = existing_kind

    def to_json(self) -> dict:
        return {**super().to_json(), "existing": self.existing, "existing_kind": self.existing_kind}


def _redacted(exc: ComputeError, secrets: list[str]) -> ComputeError:
    """``exc`` with any secret of the request blanked out of its message: whatever Azure echoes back
    must not reach an operation record, an event or a log."""
    for value in sorted({s for s in secrets if s and s.strip()}, key=len, reverse=True):
        exc.message = exc.message.replace(value, "***").replace(value.strip(), "***")
        lines = value.strip().splitlines()
        for line in lines if len(lines) > 1 else ():  # a key quoted in part
            if len(line) >= 16:
                exc.message = exc.message.replace(line, "***")
    exc.args = (exc.message,)
    return exc


class AzureMLBackend(Backend):
    """The compute of one Azure ML workspace."""

    # Azure first accepts or refuses each change, then carries it out on its own: an operation it
    # accepted is followed from its status URL by whichever process is there to do it.
    accepts_first = True

    def rename_refusal(self, target: Target) -> str | None:
        return (f"'{target.name}' is named in Azure, where a compute's name cannot change; create one with "
                "the name you want instead")

    kinds = {
        INSTANCE: KindSpec(
            INSTANCE, "Compute instances",
            "A managed cloud workstation for one user: Jupyter, JupyterLab, VS Code and RStudio on an Azure VM.",
            managed=True, operations=("create", "start", "stop", "restart", "delete", "nodes"),
            create_model=ComputeInstanceSpec, keeps_variables=True,
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
        **{k: KindSpec(k, ATTACHED_FAMILY, DESCRIPTIONS[k], managed=False,
                       operations=("attach", "detach") + (("nodes",) if k in SSH_KINDS else ()),
                       attach_model=model, examples=EXAMPLES.get(k, []))
           for k, model in SPEC_MODELS.items()},
    }
    # Named in the docs but gone from the service: refused with what to use instead.
    retired_kinds = RETIRED

    def __init__(self, workspace_id: str, store: Any, settings: Any, *, subscription_id: str,
                 resource_group: str, workspace_name: str, credential: Any = None, location: str | None = None):
        super().__init__(workspace_id, store, settings)
        self.azure = settings.of(AzureML)
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.workspace_name = workspace_name
        self.arm = ArmWorkspace(self.azure, subscription_id=subscription_id, resource_group=resource_group,
                                workspace_name=workspace_name, make_credential=self._make_credential,
                                credential=credential)
        self._location = location
        self._sizes: tuple[float, dict[str, Size], dict[str, str]] | None = None
        #: Work done beside operations (reading a started instance's kernelspecs).
        self._background: set[asyncio.Task] = set()
        #: Attachments a forced attach (by target name) is about to break, for its warning.
        self._displacing: dict[str, list[tuple[str, str]]] = {}

    def _make_credential(self) -> Any:
        # On a compute instance its own workspace is signed in to with the instance's identity.
        if self.this_instance is not None:
            return self.this_instance.credential(self.azure)
        return default_credential(self.azure)

    async def set_credential(self, credential: Any, *, owned: bool = False) -> None:
        """Use another credential from now on (for example after a device-code sign-in); an
        ``owned`` one is closed when it is replaced or the backend closes."""
        await self._close_jobs()
        await self.arm.set_credential(credential, owned=owned)

    async def _close_jobs(self) -> None:
        if self._jobs is not None:
            await self._jobs.close()

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await self._close_jobs()
        await self.arm.close()

    async def _list_raw(self) -> list[dict]:
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        client = self.arm.client()
        out: list[dict] = []
        url: str | None = self.arm.endpoint + self.arm.path("computes")
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
            return await self.arm.client().compute.get(self.resource_group, self.workspace_name, name, cls=raw_body)
        except ResourceNotFoundError:
            return None

    async def location(self) -> str:
        """The workspace's region, asked of Azure once."""
        if self._location is None:
            ws = await self.arm.call("workspace", None, lambda: self.arm.client().workspaces.get(
                self.resource_group, self.workspace_name))
            self._location = ws.location
        return self._location

    async def _catalog(self, *, fresh: bool = False) -> tuple[dict[str, Size], dict[str, str]]:
        """The location's VM sizes by lower-case name, and each size's quota family."""
        now = time.monotonic()
        if self._sizes is None or fresh or now - self._sizes[0] > SIZES_TTL:
            async def fetch():
                result = await self.arm.client().virtual_machine_sizes.list(await self.location())
                return result.value or []
            vms = await self.arm.call("sizes", None, fetch)
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
        resources = await self.arm.call("list", None, self._list_raw)
        sizes = await self._known_sizes()
        targets = [to_target(r, self.workspace_id, sizes, cloud=self.azure.cloud) for r in resources]
        busy = {op["target"] for op in await self.store.running_operations(self.workspace_id)}
        await self._mirror(targets, stored, busy=busy)
        seen = {t.name for t in targets}
        # A target being created here that Azure does not know yet is shown from the store.
        targets += [stored_target(r) for r in stored if r["name"] not in seen and r["name"] in busy]
        await self._pin(targets)
        return sorted(targets, key=lambda t: t.name)

    async def get_target(self, name: str, stored: dict | None) -> Target | None:
        res = await self.arm.call("get", name, lambda: self._get_raw(name))
        if res is None:
            if stored is not None and any(op["target"] == name for op in
                                          await self.store.running_operations(self.workspace_id)):
                return stored_target(stored)
            return None
        target = to_target(res, self.workspace_id, self._sizes[1] if self._sizes else None, cloud=self.azure.cloud)
        await self._mirror([target], [stored] if stored else [])
        await self._pin([target])
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
        if target.kind in SSH_KINDS:
            address = target.properties.get("address")
            if not address:
                return []
            return [Node(id=resource_name(target.properties.get("attached_resource_id")) or target.name,
                         state=target.state.value, address=address, port=target.properties.get("ssh_port") or 22,
                         properties={k: v for k, v in {"admin_username": target.properties.get("admin_username")}
                                     .items() if v})]
        if target.kind != CLUSTER:
            return []

        async def fetch():
            return [to_node(n) async for n in self.arm.client().compute.list_nodes(
                self.resource_group, self.workspace_name, target.name)]
        return await self.arm.call("nodes", target.name, fetch)

    async def sizes(self) -> list[Size]:
        catalog, families = await self._catalog(fresh=True)
        try:
            usages = await self._usages()
        except ComputeError as e:  # sizes without quota are still worth showing
            log.debug("quota unavailable for %s: %s", self.workspace_id, e.message)
            usages = None
        out = []
        for key, size in sorted(catalog.items()):
            if usages is not None and size.vcpus:
                # Dedicated nodes draw on every bucket of their family and the regional total.
                free = [int(u.limit) - int(u.current_value or 0)
                        for _, u in _buckets(usages, families.get(key, ""), False)
                        if u.limit is not None and u.limit >= 0]
                if free:
                    size = size.model_copy(update={"quota_available": max(0, min(free)) // size.vcpus})
            out.append(size)
        return out

    async def usage(self) -> list[Usage]:
        return [to_usage(u) for u in await self._usages()]

    async def _usages(self) -> list[Any]:
        async def fetch():
            return [u async for u in self.arm.client().usages.list(await self.location())]
        return await self.arm.call("usage", None, fetch)

    # -- compute instances: cells on their own Jupyter server, and the instance this runs on -------
    #: The compute instance this process runs on, when this is its workspace (set by ``Compute``).
    this_instance: Any = None
    _instance_auth: Any = None
    #: Who the bearer tokens for instances are for (object id, tenant, name), once one was fetched.
    _instance_identity: dict | None = None
    _kernel_locks: dict | None = None

    def _is_this_instance(self, target: Target) -> bool:
        return self.this_instance is not None and target.kind == INSTANCE and self.this_instance.is_target(target.name)

    async def _pin(self, targets: list[Target]) -> None:
        """Mark the instance this runs on, with its idle-shutdown countdown and what counts as activity."""
        for t in targets:
            if not self._is_this_instance(t):
                continue
            source, activity = self.this_instance.activity_source, None
            if source is not None:
                try:
                    activity = await source.activity()
                except Exception:  # the countdown is shown as unknown rather than failing the list
                    log.warning("could not read this instance's activity", exc_info=True)
            describe_this_instance(t, activity)

    def consequence(self, target: Target, action: str) -> str | None:
        if action in ("stop", "restart", "delete") and self._is_this_instance(target):
            return instance_consequence(target.name, action)
        return None

    def instance_auth(self):
        """Bearer tokens for compute instances' Jupyter servers, from this workspace's sign-in,
        renewed ``token_refresh_margin`` seconds before they expire."""
        if self._instance_auth is None:
            from ...transport.jupyter_client import BearerTokenAuth

            scope = self.azure.instance_token_scope or arm_scope(self.arm.endpoint)

            async def fetch():
                self.arm.client()  # makes the credential, on first use
                try:
                    token = await self.arm.credential.get_token(scope)
                except Exception as e:  # a sign-in failure, said as for any Azure call
                    raise self.arm.translate(e, "get") from e
                self._instance_identity = identity_of(token_claims(token.token))
                return token

            self._instance_auth = BearerTokenAuth(fetch, refresh_margin=self.azure.token_refresh_margin,
                                                  source=f"the Azure sign-in of workspace '{self.workspace_id}'")
        return self._instance_auth

    async def _instance_route(self, target: Target) -> Route:
        """A kernel on the instance's own Jupyter server, reached with Azure AD bearer tokens; on
        the instance itself, this notebook's own kernel."""
        if self._is_this_instance(target):
            return HereRoute(target=target.name, kind=target.kind)
        owner, auth, url = await self._instance_access(target)
        kernel_id, notice = await self._instance_kernel(target.name, url, owner)
        from ...transport.websocket import WebsocketRoute
        return WebsocketRoute(url, kernel_id, auth, target=target.name, notice=notice,
                              keeper=_InstanceKeeper(self, target.name, url, owner))

    # -- compute instances as kernels ------------------------------------------------------------
    def kernel_specs(self, row: dict) -> list[KernelSpecInfo]:
        if row["kind"] != INSTANCE or (self.this_instance is not None and self.this_instance.is_target(row["name"])):
            return []  # on the instance itself, its kernels are this server's own
        return server_kernel_specs(row, "compute instance")

    async def kernel(self, target: Target, variant: str = "") -> TargetKernel:
        if target.kind != INSTANCE or self._is_this_instance(target):
            return await super().kernel(target, variant)
        client = await self._instance_client(target)
        await self._note_kernelspecs(target.name, client)
        return ServerKernel(client, store=self.store, workspace=self.workspace_id, target=target.name,
                            kernel_name=variant or self.azure.instance_kernel_name,
                            where=f"compute instance '{target.name}'",
                            explain=lambda: self._why_gone(target.name))

    async def end_kernel(self, record: dict) -> bool:
        remote = (record.get("runtime") or {}).get("remote_kernel")
        target = await self.get_target(record["target"], None) if remote else None
        if target is None or target.state != State.running:
            return False  # a stopped instance took its kernels with it
        client = await self._instance_client(target)
        try:
            return await client.shutdown(remote)
        finally:
            await client.close()

    async def _instance_access(self, target: Target) -> tuple[dict | None, Any, str]:
        """(owner, bearer tokens, Jupyter URL) of an instance, after checking it is one we may use:
        a personal instance of someone else is refused here, before its server is asked."""
        owner = owner_of(target)
        auth = self.instance_auth()
        if owner is not None:
            await auth.header()  # signs in, which says who we are
            me = self._instance_identity or {}
            if me.get("object_id") and me["object_id"].lower() != (owner["object_id"] or "").lower():
                raise self._personal(target.name, owner, me)
        url = jupyter_base_url(target)
        if url is None:
            raise Conflict(f"Azure shows no Jupyter endpoint for compute instance '{target.name}' "
                           f"({target.provider_state or target.state.value}), so cells cannot reach it; "
                           "restart it, or check its network settings", reason="no_jupyter_endpoint")
        return owner, auth, url

    async def _instance_client(self, target: Target):
        """A client of the instance's Jupyter server, after checking the instance is one we may use."""
        from ...transport.jupyter_client import JupyterClient

        _, auth, url = await self._instance_access(target)
        return JupyterClient(url, auth)

    async def _note_kernelspecs(self, name: str, client: Any) -> None:
        """Keep the instance's kernelspecs in the store: shown while it is stopped, refreshed as it runs."""
        rt: dict[str, Any] = {}
        await read_kernelspecs(client, rt)
        if rt.get("kernelspecs"):
            row = await self.store.get_target(self.workspace_id, name)
            if row is not None and (row.get("runtime") or {}).get("kernelspecs") != rt["kernelspecs"]:
                await self.store.update_target(self.workspace_id, name, runtime_merge=rt)

    async def _why_gone(self, name: str) -> str | None:
        """Why an instance's kernel can no longer be reached, when Azure can say: it was stopped."""
        with contextlib.suppress(ComputeError):
            t = await self.get_target(name, None)
            if t is None:
                return f"the compute instance '{name}' was deleted"
            if t.state != State.running:
                return f"the compute instance '{name}' was stopped"
        return None

    def _personal(self, name: str, owner: dict, me: dict | None) -> Conflict:
        why = " (created on their behalf)" if owner.get("why") == "assigned" else ""
        you = f" You are signed in as {describe_owner(me)}." if me and me.get("object_id") else ""
        return Conflict(
            f"'{name}' is a personal compute instance of {describe_owner(owner)}{why}: only they can run code on its "
            f"Jupyter server.{you} Run the cell on a compute instance of your own, or on one whose applications are "
            "shared.", reason="personal_instance",
            details={"owner": {k: owner.get(k) for k in ("object_id", "tenant_id", "name")}})

    async def _instance_kernel(self, name: str, url: str, owner: dict | None, *,
                               lost: str | None = None) -> tuple[str, str | None]:
        """The kernel cells of this process use on the instance: the one recorded for it, or a new
        one (said in the notice when it replaces ``lost``). One per instance, whichever notebook."""
        from ...transport.jupyter_client import CredentialsRefused, JupyterClient

        def recorded(row: dict | None) -> dict:
            jup = ((row or {}).get("runtime") or {}).get("jupyter") or {}
            return jup if jup.get("url") == url and jup.get("kernel_id") and jup["kernel_id"] != lost else {}

        notice = None if lost is None else (
            f"the kernel on '{name}' was gone (the instance restarted, or the kernel was shut down), so a new "
            "kernel was started: variables from earlier cells are lost")
        if self._kernel_locks is None:
            self._kernel_locks = {}
        async with self._kernel_locks.setdefault(name.lower(), asyncio.Lock()):
            row = await self.store.get_target(self.workspace_id, name)
            if recorded(row):
                return recorded(row)["kernel_id"], notice
            async with JupyterClient(url, self.instance_auth()) as client:
                try:
                    kernel = await _start_when_ready(client, self.azure.instance_kernel_name or None, name)
                except CredentialsRefused:
                    if owner is not None:
                        raise self._personal(name, owner, self._instance_identity) from None
                    raise
                kid = kernel["id"]
                before = ((row or {}).get("runtime") or {}).get("jupyter")
                if row is not None and not await self.store.update_target(
                        self.workspace_id, name, expect_runtime={"jupyter": before},
                        runtime_merge={"jupyter": {"url": url, "kernel_id": kid, "kernel_name": kernel.get("name")}}):
                    # Another process recorded a kernel first: use that one.
                    theirs = recorded(await self.store.get_target(self.workspace_id, name))
                    if theirs:
                        with contextlib.suppress(ComputeError):
                            await client.shutdown(kid)
                        return theirs["kernel_id"], notice
        return kid, notice

    # -- cells as jobs (compute clusters and attached Kubernetes) ----------------------------------
    _jobs: Any = None

    def jobs(self):
        """The workspace's jobs (``jobs``), sharing this backend's client and credential."""
        if self._jobs is None:
            from .jobs import AzureJobs
            self._jobs = AzureJobs(self.arm)
        return self._jobs

    async def route(self, target: Target) -> Route:
        if target.kind == INSTANCE:
            return await self._instance_route(target)
        if target.kind not in (CLUSTER, "kubernetes"):
            return await super().route(target)
        from .job_route import AzureMLJobRoute
        return AzureMLJobRoute(self.jobs(), target.name, kind=target.kind,
                               max_nodes=target.nodes.max if target.nodes is not None else None)

    async def list_jobs(self, target: str | None = None, *, top: int = 20) -> list[dict]:
        """Recent jobs, newest first (of one compute when named): status, duration and Studio link."""
        from .jobs import summarize

        jobs = self.jobs()
        return [summarize(j, jobs.studio_url(j)) for j in await jobs.list(target, top=top)]

    async def get_job(self, name: str, *, log_lines: int = 200) -> dict:
        """One job and the end of its user log."""
        from .jobs import summarize

        jobs = self.jobs()
        job = await jobs.get(name)
        out = summarize(job, jobs.studio_url(job))
        out["command"] = (job.get("properties") or {}).get("command")
        try:
            out["log"] = await jobs.read_log(job, log_lines)
        except ComputeError as e:
            out["log"], out["log_error"] = None, e.message
        if out["status"] == "Failed":
            err = await jobs.run_error(name)
            out["error"] = {"code": err[0], "message": err[1]} if err else None
        return out

    async def cancel_job(self, name: str, *, wait: bool = True,
                         progress: Callable[[str], Any] | None = None) -> dict:
        from .jobs import TERMINAL, summarize

        jobs = self.jobs()
        job = await jobs.get(name)
        status = summarize(job)["status"]
        if status in TERMINAL:
            out = summarize(job, jobs.studio_url(job))
            out["note"] = f"the job had already ended ({status}): nothing to cancel"
            return out
        await jobs.cancel(name)
        seen = None
        while True:
            job = await jobs.get(name)
            status = summarize(job)["status"]
            if status != seen and progress is not None:
                progress(status)
            seen = status
            if status in TERMINAL or not wait:
                break
            await asyncio.sleep(self.azure.poll_interval)
        out = summarize(job, jobs.studio_url(job))
        out["note"] = ("canceled" if status == "Canceled" else
                       f"cancel requested; the job is {status}" if status not in TERMINAL else
                       f"the job ended ({status}) before the cancel took effect")
        return out

    # -- checks before anything is created -------------------------------------------------------
    def check_name(self, kind: str, name: Any) -> str:
        if kind == INSTANCE:
            return check_instance_name(name)
        if kind == CLUSTER:
            return check_cluster_name(name)
        if kind in RETIRED:
            raise InvalidRequest(RETIRED[kind], field="/kind", reason="retired_kind")
        if kind in SPEC_MODELS:
            return check_attached_name(name)
        return super().check_name(kind, name)

    async def precheck(self, name: str, kind: str, spec: Spec, *, force: bool = False) -> None:
        """The size exists here, suits the kind and priority, and the quota holds what create allocates.

        When Azure will not say (no permission to read sizes or usage, or a cloud without those
        APIs) the check is left to Azure itself.
        """
        if isinstance(spec, AttachedSpec):
            return await self._check_not_attached(name, spec, force=force)
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

    async def _check_not_attached(self, name: str, spec: AttachedSpec, *, force: bool) -> None:
        """The duplicate-attach guard: each attachment of a resource breaks the one before it, so one
        already attached under another name is refused unless the user forces it."""
        resources = await self.arm.call("list", None, self._list_raw)
        others = [(r.get("name") or "", KIND_OF_TYPE.get((r.get("properties") or {}).get("computeType"), "unknown"))
                  for r in resources
                  if same_resource((r.get("properties") or {}).get("resourceId"), spec.resource_id)
                  and (r.get("name") or "").lower() != name.lower()]
        if not others:
            return
        if force:
            self._displacing[name] = others
            return
        other, kind = others[0]
        also = f" (and as {', '.join(repr(o) for o, _ in others[1:])})" if len(others) > 1 else ""
        what = resource_name(spec.resource_id) or spec.resource_id
        raise AlreadyAttached(
            f"'{what}' is already attached to {self.arm.scope} as '{other}' ({kind}){also}. Each attachment of a "
            f"resource breaks the one before it, so use '{other}', or detach it first. To attach it anyway as "
            f"'{name}', knowing '{other}' will stop working, use --force (\"force\": true in the REST API).",
            existing=other, existing_kind=kind)

    def validate_spec(self, kind: str, data: dict[str, Any], *, attach: bool) -> Spec:
        if kind in RETIRED:
            raise InvalidRequest(RETIRED[kind], field="/kind", reason="retired_kind")
        return super().validate_spec(kind, data, attach=attach)

    def refusal(self, target: Target, action: str) -> str:
        if target.kind == CLUSTER and action in ("start", "stop", "restart"):
            return (f"'{target.name}' is a compute cluster: it has no {action}; it scales between min_nodes and "
                    "max_nodes by itself. Set min_nodes to 0 with update to release idle nodes.")
        if target.kind in SPEC_MODELS and action in ("start", "stop", "restart"):
            where = target.properties.get("portal_url")
            return (f"'{target.name}' is attached compute ({target.kind}): Azure ML does not {action} it; do that "
                    "where it lives" + (f", for example in the Azure portal: {where}" if where else ""))
        if target.kind in SPEC_MODELS and action == "delete":
            return (f"'{target.name}' is attached compute ({target.kind}): it is detached, never deleted from here; "
                    "the resource itself is left alone")
        return super().refusal(target, action)

    def update_refusal(self, target: Target) -> str:
        if target.kind == INSTANCE:
            return (f"'{target.name}' is a compute instance: its settings are fixed at create; "
                    "delete it and create it again to change them")
        if target.kind in SPEC_MODELS:
            return (f"'{target.name}' is attached compute ({target.kind}): its settings cannot change in place. "
                    f"To change one (such as TLS, the namespace, the port or the credentials), detach it "
                    f"(`jupyter compute detach {target.name}`; the resource itself is left alone), then attach it "
                    "again with the new settings.")
        return super().update_refusal(target)

    # -- long operations ---------------------------------------------------------------------------
    async def _lro(self, action: str, name: str, ctx: OperationContext | None, method: str, *,
                   verb: str | None = None, body: bytes | None = None, **query: str) -> Any:
        """Ask Resource Manager for a long operation on compute ``name``, and follow it to its end.

        Once Azure accepts it, how to follow it (its Azure-AsyncOperation or Location URL) goes into
        the operation's record: from then on any process can follow it, and this one may exit.
        Returns the final answer's body, if it has one."""
        url = self.arm.url("computes", name, *((verb,) if verb else ()), **query)
        answer = await self.arm.call(action, name, lambda: self.arm.send(method, url, body))
        follow = follow_of(answer, self.arm.path("computes", name))
        if ctx is not None:
            await ctx.accepted(follow)
            await ctx.progress(f"{action} accepted by Azure")
        if follow is None:
            return body_of(answer)
        return await self._follow_url(action, name, follow, ctx, first_wait=follow.get("retry_after"))

    async def _follow_url(self, action: str, name: str, follow: dict, ctx: OperationContext | None, *,
                          first_wait: float | None = None, once: bool = False) -> Any:
        """Poll a long operation's status URL until it ends; returns the final body (a Location
        answer may carry the resource). A failed or cancelled operation is raised with Azure's words."""
        wait = first_wait
        while True:
            if not once:
                await asyncio.sleep(self.azure.poll_interval if wait is None else wait)
            try:
                answer = await self.arm.call(action, name, lambda: self.arm.send("GET", follow["url"]))
            except AzureError as e:
                if follow["via"] == "location" and e.reason == "azure_refused":
                    e.reason = "azure_operation_failed"  # the operation's own end, not a refused poll
                raise
            wait = retry_after(answer)
            if follow["via"] == "location":
                if answer.status_code != 202:
                    return body_of(answer)
                status, pct = "InProgress", None
            else:
                body = body_of(answer)
                body = body if isinstance(body, dict) else {}
                status, pct = str(body.get("status") or "InProgress"), body.get("percentComplete")
                if status.lower() == "succeeded":
                    return None
                if status.lower() in ("failed", "canceled", "cancelled"):
                    err = body.get("error") if isinstance(body.get("error"), dict) else {}
                    raise AzureError(err.get("message") or f"Azure reports the {action} of '{name}' as {status}",
                                     azure_code=err.get("code"), reason="azure_operation_failed")
            if ctx is not None:
                await ctx.progress(f"{action} in Azure: {status}" + (f" ({pct:g}%)" if isinstance(pct, (int, float))
                                                                     else ""))
            if once:
                raise StillRunning()

    async def follow(self, op: dict, ctx: OperationContext, *, once: bool = False) -> Outcome | None:
        """Follow an operation on a compute that another process began (and Azure accepted)."""
        action, name = op["action"], op["target"]
        res = await self._follow_url(action, name, op["follow"], ctx, once=once)
        if action in ("delete", "detach"):
            return None
        return await self._outcome(name, res)

    async def _outcome(self, name: str, res: dict | None = None) -> Outcome:
        res = res if isinstance(res, dict) and res.get("properties") else await self.arm.call(
            "get", name, lambda: self._get_raw(name))
        if res is None:
            raise AzureError(f"Azure no longer knows '{name}'", reason="azure_not_found")
        t = to_target(res, self.workspace_id, cloud=self.azure.cloud)
        errors = [e.model_dump(mode="json", exclude_none=True) for e in t.errors]
        if t.state == State.failed:
            detail = "; ".join(e["message"] for e in errors) or f"Azure reports '{name}' as {t.provider_state}"
            raise AzureError(detail, reason="azure_operation_failed",
                             azure_code=t.errors[0].code if t.errors else None)
        return Outcome(t.state, t.provider_state, errors=errors)

    async def _location_for_body(self) -> str | None:
        try:
            return await self.location()
        except ComputeError as e:
            if e.reason == "azure_auth":
                raise
            return None  # Azure then uses the workspace's own region

    async def create(self, name: str, kind: str, spec: Spec, ctx: OperationContext) -> Outcome:
        location = await self._location_for_body()
        body = instance_body(spec, location) if kind == INSTANCE else cluster_body(spec, location)
        label = "compute instance" if kind == INSTANCE else "compute cluster"
        await ctx.progress(f"asking Azure to create {label} '{name}' ({spec.size})")
        try:
            res = await self._lro("create", name, ctx, "PUT", body=json.dumps(body).encode())
        except AzureError as e:
            if e.reason == "azure_refused" and spec.no_public_ip and not spec.subnet:
                # Once refused here, now Azure's to decide (a managed network needs no subnet).
                e.message += (" (Hint: in a workspace without a managed virtual network, compute without a "
                              "public IP needs a subnet: --subnet, or \"subnet\".)")
            raise
        return await self._outcome(name, res)

    async def attach(self, name: str, kind: str, spec: Spec, ctx: OperationContext) -> Outcome:
        secrets = list(spec.secrets().values())
        try:
            return await self._attach(name, kind, spec, ctx)
        except ComputeError as e:
            raise _redacted(e, secrets) from None
        finally:
            self._displacing.pop(name, None)

    async def _attach(self, name: str, kind: str, spec: Spec, ctx: OperationContext) -> Outcome:
        assert isinstance(spec, AttachedSpec)
        what = resource_name(spec.resource_id) or spec.resource_id
        warnings = []
        for other, other_kind in self._displacing.get(name, []):
            warnings.append(f"warning: '{what}' is also attached as '{other}' ({other_kind}); attaching it again "
                            f"as '{name}' makes '{other}' stop working. Detach '{other}' once this is done.")
            await ctx.progress(warnings[-1])
        body = attach_body(kind, spec, await self._location_for_body())
        await ctx.progress(f"asking Azure to attach '{what}' as '{name}' ({kind})")
        content = json.dumps(body).encode()
        del body
        res = await self._lro("attach", name, ctx, "PUT", body=content)
        outcome = await self._outcome(name, res)
        if warnings:
            outcome.note = "attached; " + " ".join(warnings)
        return outcome

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
        await self._lro(action, target.name, ctx, "POST", verb=action)
        outcome = await self._outcome(target.name)
        if action in ("start", "restart") and outcome.state == State.running and not self._is_this_instance(target):
            # Its kernelspecs, read as it starts, are the kernels it offers from now on; read beside
            # the operation, which must not wait on a server that may be slow to answer.
            task = asyncio.get_running_loop().create_task(self._refresh_kernelspecs(target.name))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return outcome

    async def _refresh_kernelspecs(self, name: str) -> None:
        try:
            client = await self._instance_client(await self.get_target(name, None))
            try:
                await self._note_kernelspecs(name, client)
            finally:
                await client.close()
        except Exception as e:  # the kernels offered stay as they were; a kernel's start reads them again
            log.debug("could not read the kernelspecs of compute instance '%s': %s", name, e)

    async def delete(self, target: Target, ctx: OperationContext) -> None:
        await self._remove("delete", target, ctx)

    async def detach(self, target: Target, ctx: OperationContext) -> None:
        await self._remove("detach", target, ctx)

    async def _remove(self, action: str, target: Target, ctx: OperationContext) -> None:
        how = "Delete" if action == "delete" else "Detach"
        note = "" if action == "delete" else " (the resource itself is left as it is)"
        await ctx.progress(f"asking Azure to {action} '{target.name}'{note}")
        await self._lro(action, target.name, ctx, "DELETE", underlyingResourceAction=how)

    async def update(self, target: Target, changes: dict[str, Any], ctx: OperationContext | None = None) -> None:
        if target.kind != CLUSTER:
            raise InvalidRequest(self.update_refusal(target), reason="unsupported_operation")
        from pydantic import ValidationError

        from ...core.errors import from_validation_error

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
        res = await self.arm.call("get", target.name, lambda: self._get_raw(target.name))
        if res is None:
            raise NotFound(f"Azure no longer knows '{target.name}'", reason="azure_not_found")
        body = cluster_update_body(res, {"minNodeCount": scale.min_nodes, "maxNodeCount": scale.max_nodes,
                                         "nodeIdleTimeBeforeScaleDown": duration(scale.idle_seconds_before_scaledown)},
                                   identity=changes.get("identity"))
        await self._lro("update", target.name, ctx, "PUT", body=json.dumps(body).encode())


class _InstanceKeeper:
    """The websocket route's way back when the kernel on a compute instance is gone: a new one."""

    def __init__(self, backend: AzureMLBackend, name: str, url: str, owner: dict | None):
        self.backend, self.name, self.url, self.owner = backend, name, url, owner

    async def recover(self, kernel_id: str) -> tuple[str, str]:
        kid, notice = await self.backend._instance_kernel(self.name, self.url, self.owner, lost=kernel_id)
        return kid, notice or ""

    async def lost(self, kernel_id: str, message: str, *, reachable: bool) -> None:
        # Azure, not this process, says what state an instance is in.
        log.info("lost kernel %s on compute instance %s: %s", kernel_id, self.name, message)


#: How long a just-started compute instance's Jupyter server has to answer.
INSTANCE_READY_TIMEOUT = 90.0


async def _start_when_ready(client: Any, kernel_name: str | None, name: str) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + INSTANCE_READY_TIMEOUT
    while True:
        try:
            return await client.start_kernel(kernel_name)
        except Unavailable as e:
            if loop.time() > deadline:
                raise Unavailable(f"the Jupyter server of compute instance '{name}' did not answer within "
                                  f"{INSTANCE_READY_TIMEOUT:g} s: {e.message}", reason="server_unreachable") from None
            await asyncio.sleep(2.0)


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
