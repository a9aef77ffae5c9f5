"""The project's own stand-in for Azure Resource Manager: Microsoft.MachineLearningServices
computes (api-version 2023-04-01) over HTTPS on 127.0.0.1.

It keeps workspaces and their computes in memory and answers as Resource Manager does: PUT,
GET, PATCH, DELETE and list of computes; attach (a PUT with ``resourceId``) of every attached
compute type, refusing a bad resource id as Azure does, and detach; start, stop and restart;
listNodes; the location's vmSizes and usages; the workspace GET. Long operations answer 201/202
with an ``Azure-AsyncOperation`` URL that reports InProgress for ``lro_polls`` polls, then
Succeeded or Failed with an ARM error body. Bearer tokens must come from its managed-identity endpoint
(or its Azure AD device-code sign-in, ``aad``, in aad_login.py) and be issued for its own URL.
Throttling (429 + Retry-After), server errors, missing role permissions and slow answers can be
switched on per test.

    with ArmStandIn() as arm:
        os.environ.update(arm.env())
        ...
"""
from __future__ import annotations

import copy
import datetime as dt
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from .aad_login import AadLogin
from .https import HttpsServer, Request, Response, arm_error

API_VERSION = "2023-04-01"
PROVIDER = "Microsoft.MachineLearningServices"
RBAC = f"{PROVIDER}/workspaces/computes/"
OBJECT_ID = "5a3b1e7c-0d2f-4c8e-9b61-7f2a4d9c0e13"
TENANT_ID = "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"

_WS = (r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
       r"Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)")
ROUTES = [
    ("workspace", re.compile(_WS + r"/?$", re.I)),
    ("computes", re.compile(_WS + r"/computes/?$", re.I)),
    # A workspace that has run no jobs (tests/standins/jobs.py runs them).
    ("jobs", re.compile(_WS + r"/jobs/?$", re.I)),
    ("compute", re.compile(_WS + r"/computes/(?P<name>[^/]+)/?$", re.I)),
    ("action", re.compile(_WS + r"/computes/(?P<name>[^/]+)/(?P<action>start|stop|restart|listNodes)/?$", re.I)),
    ("location", re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.MachineLearningServices/"
                            r"locations/(?P<loc>[^/]+)/(?P<what>vmSizes|usages)/?$", re.I)),
    ("opstatus", re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.MachineLearningServices/"
                            r"locations/(?P<loc>[^/]+)/computeOperationsStatus/(?P<op>[^/]+)/?$", re.I)),
    ("opresult", re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.MachineLearningServices/"
                            r"locations/(?P<loc>[^/]+)/computeOperationsResult/(?P<op>[^/]+)/?$", re.I)),
]


#: Attached computeType -> the provider and resource types its resourceId must name.
ATTACH_TYPES: dict[str, list[tuple[str, list[str]]]] = {
    "Kubernetes": [("Microsoft.ContainerService", ["managedClusters"]),
                   ("Microsoft.Kubernetes", ["connectedClusters"])],
    "VirtualMachine": [("Microsoft.Compute", ["virtualMachines"])],
    "HDInsight": [("Microsoft.HDInsight", ["clusters"])],
    "SynapseSpark": [("Microsoft.Synapse", ["workspaces", "bigDataPools"])],
    "Databricks": [("Microsoft.Databricks", ["workspaces"])],
    "DataLakeAnalytics": [("Microsoft.DataLakeAnalytics", ["accounts"])],
    "DataFactory": [("Microsoft.DataFactory", ["factories"])],
    "AKS": [("Microsoft.ContainerService", ["managedClusters"])],
}
_RESOURCE_ID = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/(?P<ns>[^/]+)/"
                          r"(?P<rest>[^/].*)$", re.I)


def _size(name, family, vcpus, memory, gpus, price, *, low=True, types=("Compute Instance", "AmlCompute")):
    return {"name": name, "family": family, "vCPUs": vcpus, "gpus": gpus, "osVhdSizeMB": 1047552,
            "maxResourceVolumeMB": vcpus * 7168, "memoryGB": memory, "lowPriorityCapable": low,
            "premiumIO": True, "supportedComputeTypes": list(types),
            "estimatedVMPrices": {"billingCurrency": "USD", "unitOfMeasure": "OneHour", "values": [
                {"retailPrice": price, "osType": "Linux", "vmTier": "Standard"},
                {"retailPrice": round(price * 0.2, 4), "osType": "Linux", "vmTier": "LowPriority"},
                {"retailPrice": round(price * 1.4, 4), "osType": "Windows", "vmTier": "Standard"}]}}


#: The VM sizes the stand-in offers in every location (illustrative figures).
VM_SIZES = [
    _size("Standard_A1_v2", "standardAv2Family", 1, 2.0, 0, 0.043, types=("AmlCompute",)),
    _size("Standard_DS2_v2", "standardDSv2Family", 2, 7.0, 0, 0.146),
    _size("Standard_DS3_v2", "standardDSv2Family", 4, 14.0, 0, 0.293),
    _size("Standard_D4s_v3", "standardDSv3Family", 4, 16.0, 0, 0.192),
    _size("Standard_F4s_v2", "standardFSv2Family", 4, 8.0, 0, 0.169),
    _size("Standard_E4ds_v4", "standardEDSv4Family", 4, 32.0, 0, 0.288),
    _size("Standard_NC6s_v3", "standardNCSv3Family", 6, 112.0, 1, 3.06),
    _size("Standard_NC24ads_A100_v4", "standardNCADSA100v4Family", 24, 220.0, 1, 3.673, low=False),
]
_FAMILY_LABELS = {"standardAv2Family": "Standard Av2", "standardDSv2Family": "Standard DSv2",
                  "standardDSv3Family": "Standard DSv3", "standardFSv2Family": "Standard FSv2",
                  "standardEDSv4Family": "Standard EDSv4", "standardNCSv3Family": "Standard NCSv3",
                  "standardNCADSA100v4Family": "Standard NCADS A100 v4"}


@dataclass
class Fault:
    """Answer the next ``times`` matching requests with ``status`` instead of serving them."""
    status: int = 429
    times: int = 1
    retry_after: float | None = None
    method: str | None = None
    path_contains: str = ""
    code: str | None = None
    message: str | None = None
    #: Seconds to hold the connection without a word before answering (a stalled server).
    stall: float = 0.0

    def matches(self, req: Request) -> bool:
        return self.times > 0 and (self.method is None or self.method == req.method) and \
            self.path_contains.lower() in req.path.lower()


@dataclass
class Operation:
    id: str
    action: str
    key: tuple
    name: str
    polls_left: int
    deadline: float | None
    finish: Callable[[], None]
    fail: Callable[[str, str], None]
    step: Callable[[int], None] | None = None
    failure: tuple[str, str] | None = None
    status: str = "InProgress"
    error: dict | None = None
    polls: int = 0
    started: str = field(default_factory=lambda: _now())
    ended: str | None = None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


class ArmStandIn(HttpsServer):
    """Resource Manager for Azure ML computes, in memory."""

    def __init__(self, *, subscription_id: str = "8f3a2c1d-4b5e-4f60-9a7b-1c2d3e4f5a6b",
                 resource_group: str = "rg-compute", workspace_name: str = "ws-compute",
                 location: str = "eastus", api_version: str = API_VERSION):
        super().__init__()
        self.api_version = api_version
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.workspace_name = workspace_name
        self.location = location
        #: (sub, rg, ws) lower-cased -> {"workspace": dict, "computes": {name: resource}}
        self.workspaces: dict[tuple, dict] = {}
        self.operations: dict[str, Operation] = {}
        #: Polls that answer InProgress before an operation ends.
        self.lro_polls = 2
        #: If set, an operation also ends this many seconds after it began, polled or not.
        self.lro_seconds: float | None = None
        #: Retry-After (seconds) sent with 201/202 answers and InProgress polls, if set.
        self.poll_retry_after: int | None = None
        #: How long operations are answered: "azure-asyncoperation" (an Azure-AsyncOperation status URL,
        #: what Azure ML does) or "location" (only a Location URL: 202 until done, then the result).
        self.lro_via = "azure-asyncoperation"
        #: Seconds every ARM answer waits before it is sent.
        self.delay = 0.0
        self.faults: list[Fault] = []
        #: RBAC actions the caller lacks (answered 403 AuthorizationFailed).
        self.denied: set[str] = set()
        #: (action, compute name or None) -> (code, message) for the next such operation to fail with.
        self.failures: dict[tuple[str, str | None], tuple[str, str]] = {}
        self.quota = {"total": 100, "low_priority": 100, "default_family": 24, "families": {}}
        self.page_size: int | None = None
        #: Check that tokens were issued for this server's own URL (the scope follows the endpoint).
        self.check_audience = True
        #: Resource ids (lower-case) that do not exist: attaching one fails as in Azure.
        self.missing_resources: set[str] = set()
        #: computeType -> (code, message) Azure refuses it with (a retired service, for example).
        self.refused_types: dict[str, tuple[str, str]] = {}
        #: Underlying resources deleted (underlyingResourceAction=Delete on attached compute).
        self.deleted_resources: list[str] = []
        #: compute name (lower-case) -> the credentials its last attach gave Azure.
        self.received_secrets: dict[str, dict[str, Any]] = {}
        #: compute instance name (lower-case) -> base URL of the Jupyter server its applications point at.
        self.instance_jupyter: dict[str, str] = {}
        #: Azure AD's device-code sign-in, served beside Resource Manager (used only when a test signs in).
        self.aad = AadLogin(self)
        self.add_workspace(subscription_id, resource_group, workspace_name, location)

    # -- setup ---------------------------------------------------------------------------------------
    def add_workspace(self, sub: str, rg: str, name: str, location: str = "eastus") -> dict:
        wid = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{PROVIDER}/workspaces/{name}"
        ws = {"id": wid, "name": name, "type": f"{PROVIDER}/workspaces", "location": location, "tags": {},
              "identity": {"type": "SystemAssigned", "principalId": str(uuid.uuid4()), "tenantId": TENANT_ID},
              "sku": {"name": "Basic", "tier": "Basic"}, "kind": "Default",
              "properties": {"friendlyName": name, "description": "", "provisioningState": "Succeeded",
                             "workspaceId": str(uuid.uuid4()), "tenantId": TENANT_ID, "hbiWorkspace": False,
                             "publicNetworkAccess": "Enabled",
                             "managedNetwork": {"isolationMode": "Disabled"},
                             "discoveryUrl": f"https://{location}.api.azureml.ms/discovery"}}
        self.workspaces[(sub.lower(), rg.lower(), name.lower())] = {"workspace": ws, "computes": {}}
        return ws

    def set_managed_network(self, isolation_mode: str = "AllowInternetOutbound") -> None:
        """Give the default workspace a managed virtual network (or none, with "Disabled")."""
        key = (self.subscription_id.lower(), self.resource_group.lower(), self.workspace_name.lower())
        self.workspaces[key]["workspace"]["properties"]["managedNetwork"] = {"isolationMode": isolation_mode}

    def write_config(self, folder: str) -> str:
        """A config.json naming the default workspace, as Azure ML studio downloads it."""
        import json
        import os

        path = os.path.join(folder, "config.json")
        with open(path, "w") as f:
            json.dump({"subscription_id": self.subscription_id, "resource_group": self.resource_group,
                       "workspace_name": self.workspace_name}, f)
        return path

    def computes(self, sub: str | None = None, rg: str | None = None, ws: str | None = None) -> dict[str, dict]:
        key = ((sub or self.subscription_id).lower(), (rg or self.resource_group).lower(),
               (ws or self.workspace_name).lower())
        return self.workspaces[key]["computes"]

    def compute(self, name: str) -> dict | None:
        return self.computes().get(name.lower())

    def seed(self, resource: dict) -> dict:
        """Put a compute, as Azure would return it (e.g. taken from a recording), into the default workspace."""
        res = copy.deepcopy(resource)
        ws = self.workspaces[(self.subscription_id.lower(), self.resource_group.lower(),
                              self.workspace_name.lower())]["workspace"]
        res["id"] = f"{ws['id']}/computes/{res['name']}"
        self.computes()[res["name"].lower()] = res
        return res

    def set_nodes(self, name: str, *, idle: int = 0, running: int = 0, preparing: int = 0, unusable: int = 0,
                  leaving: int = 0, preempted: int = 0) -> None:
        inner = self.compute(name)["properties"]["properties"]
        counts = {"idleNodeCount": idle, "runningNodeCount": running, "preparingNodeCount": preparing,
                  "unusableNodeCount": unusable, "leavingNodeCount": leaving, "preemptedNodeCount": preempted}
        inner["nodeStateCounts"] = counts
        inner["currentNodeCount"] = inner["targetNodeCount"] = sum(counts.values())

    def fail_next(self, action: str, code: str, message: str, name: str | None = None) -> None:
        self.failures[(action, name)] = (code, message)

    def add_fault(self, **kw: Any) -> Fault:
        f = Fault(**kw)
        self.faults.append(f)
        return f

    def arm_requests(self, method: str | None = None, contains: str = "") -> list[Request]:
        """ARM requests seen, without operation-status polls."""
        return [r for r in self.saw(method, contains) if "computeOperationsStatus" not in r.path]

    # -- dispatch ------------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        if self.aad.handles(req):
            return self.aad.handle(req)
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self._advance_clock()
            aud = self.audience_of(req)
            if aud is None:
                return arm_error(401, "InvalidAuthenticationToken",
                                 "The access token is invalid or missing.",
                                 {"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/'
                                                      f'{TENANT_ID}", error="invalid_token"'})
            if self.check_audience and aud.rstrip("/") != self.base_url:
                return arm_error(401, "InvalidAuthenticationTokenAudience",
                                 f"The access token has been obtained for wrong audience or resource '{aud}'. "
                                 f"It should exactly match with one of the allowed audiences '{self.base_url}/'.")
            fault = next((f for f in self.faults if f.matches(req)), None)
            if fault is not None:
                fault.times -= 1
                if not fault.stall:
                    return self._fault(fault)
        if fault is not None:
            time.sleep(fault.stall)  # outside the lock: other requests are answered meanwhile
            return self._fault(fault)
        with self.lock:
            if not req.api_version:
                return arm_error(400, "MissingApiVersionParameter",
                                 "The api-version query parameter (?api-version=) is required for all requests.")
            for kind, rx in ROUTES:
                m = rx.match(req.path)
                if m:
                    return self._route(kind, m.groupdict(), req)
            return arm_error(404, "InvalidResourceType", f"The resource type could not be found for '{req.path}'.")

    def _fault(self, f: Fault) -> Response:
        headers = {"Retry-After": f"{f.retry_after:g}"} if f.retry_after is not None else {}
        defaults = {
            429: ("TooManyRequests", "The request is being throttled as the limit has been reached for operation "
                                     "type - Read_ObservationWindow_00:05:00. For more information, refer to - "
                                     "https://aka.ms/armthrottling"),
            500: ("InternalServerError", "Encountered internal server error. Diagnostic information: tracking id "
                                         f"'{uuid.uuid4()}'."),
            502: ("BadGateway", "The gateway did not receive a response from 'Microsoft.MachineLearningServices'."),
            503: ("ServiceUnavailable", "The service is temporarily unavailable. Please retry later."),
            504: ("GatewayTimeout", "The gateway did not receive a response from 'Microsoft.MachineLearningServices' "
                                    "within the specified time period."),
        }
        code, message = defaults.get(f.status, ("Error", f"HTTP {f.status}"))
        return arm_error(f.status, f.code or code, f.message or message, headers)

    def _denied(self, action: str, scope: str) -> Response | None:
        if action not in self.denied:
            return None
        return arm_error(403, "AuthorizationFailed",
                         f"The client '{OBJECT_ID}' with object id '{OBJECT_ID}' does not have authorization to "
                         f"perform action '{action}' over scope '{scope}' or the scope is invalid. If access was "
                         "recently granted, please refresh your credentials.")

    def _route(self, kind: str, g: dict, req: Request) -> Response:
        if kind == "opstatus":
            return self._poll(g["op"])
        if kind == "opresult":
            return self._poll_location(g["op"])
        if kind == "location":
            return self._location(g, req)
        key = (g["sub"].lower(), g["rg"].lower(), g["ws"].lower())
        entry = self.workspaces.get(key)
        if entry is None:
            return arm_error(404, "ResourceNotFound",
                             f"The Resource '{PROVIDER}/workspaces/{g['ws']}' under resource group '{g['rg']}' was "
                             "not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")
        ws = entry["workspace"]
        if kind == "workspace":
            if req.method != "GET":
                return arm_error(405, "MethodNotAllowed", f"{req.method} is not supported here.")
            return self._denied(f"{PROVIDER}/workspaces/read", ws["id"]) or Response(200, copy.deepcopy(ws))
        if kind == "jobs":
            if req.method != "GET":
                return arm_error(405, "MethodNotAllowed", f"{req.method} is not supported here.")
            return self._denied(f"{PROVIDER}/workspaces/jobs/read", ws["id"]) or Response(200, {"value": []})
        if kind == "computes":
            if req.method != "GET":
                return arm_error(405, "MethodNotAllowed", f"{req.method} is not supported here.")
            return self._denied(RBAC + "read", ws["id"] + "/computes") or self._list(entry, req)
        name = g["name"]
        scope = f"{ws['id']}/computes/{name}"
        if kind == "action":
            action = g["action"]
            if req.method != "POST":
                return arm_error(405, "MethodNotAllowed", f"{req.method} is not supported here.")
            rbac = RBAC + ("listNodes/action" if action.lower() == "listnodes" else f"{action.lower()}/action")
            return self._denied(rbac, scope) or self._action(entry, key, name, action.lower())
        method_action = {"GET": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}.get(req.method)
        if method_action is None:
            return arm_error(405, "MethodNotAllowed", f"{req.method} is not supported here.")
        denied = self._denied(RBAC + method_action, scope)
        if denied:
            return denied
        res = entry["computes"].get(name.lower())
        if req.method == "GET":
            return Response(200, self._public(res)) if res else self._not_found(name, g)
        if req.method == "PUT":
            return self._put(entry, key, name, res, req)
        if req.method == "PATCH":
            return self._patch(res, name, g, req)
        return self._delete(entry, key, name, res, g, req)

    # -- reading -------------------------------------------------------------------------------------
    def _not_found(self, name: str, g: dict) -> Response:
        return arm_error(404, "ResourceNotFound",
                         f"The Resource '{PROVIDER}/workspaces/{g['ws']}/computes/{name}' under resource group "
                         f"'{g['rg']}' was not found. For more details please go to "
                         "https://aka.ms/ARMResourceNotFoundFix")

    @staticmethod
    def _public(res: dict) -> dict:
        out = copy.deepcopy(res)
        out.pop("_standin", None)
        return out

    def _list(self, entry: dict, req: Request) -> Response:
        items = [self._public(r) for r in sorted(entry["computes"].values(), key=lambda r: r["name"])]
        start = int(req.query.get("$skip") or 0)
        if self.page_size:
            page = items[start:start + self.page_size]
            nxt = start + self.page_size
            body: dict[str, Any] = {"value": page}
            if nxt < len(items):
                body["nextLink"] = f"{self.base_url}{req.path}?api-version={req.api_version}&$skip={nxt}"
            return Response(200, body)
        return Response(200, {"value": items})

    def _location(self, g: dict, req: Request) -> Response:
        scope = f"/subscriptions/{g['sub']}/providers/{PROVIDER}/locations/{g['loc']}"
        if g["what"].lower() == "vmsizes":
            return self._denied(f"{PROVIDER}/locations/vmsizes/read", scope) or Response(
                200, {"value": copy.deepcopy(VM_SIZES)})
        return self._denied(f"{PROVIDER}/locations/usages/read", scope) or Response(
            200, {"value": self._usages(g["sub"], g["loc"])})

    def _usages(self, sub: str, loc: str) -> list[dict]:
        by_name = {s["name"].lower(): s for s in VM_SIZES}
        used: dict[str, int] = {}
        total = low = 0
        for (s, _, _), entry in self.workspaces.items():
            if s != sub.lower():
                continue
            for res in entry["computes"].values():
                p = res.get("properties") or {}
                inner = p.get("properties") or {}
                size = by_name.get((inner.get("vmSize") or "").lower())
                if size is None or p.get("provisioningState") == "Failed":
                    continue
                if p.get("computeType") == "ComputeInstance":
                    n, lowpri = 1, False
                elif p.get("computeType") == "AmlCompute":
                    n, lowpri = inner.get("currentNodeCount") or 0, inner.get("vmPriority") == "LowPriority"
                else:
                    continue
                if lowpri:
                    low += n * size["vCPUs"]
                else:
                    used[size["family"]] = used.get(size["family"], 0) + n * size["vCPUs"]
                    total += n * size["vCPUs"]
        base = f"/subscriptions/{sub}/providers/{PROVIDER}/locations/{loc}/usages"

        def usage(value: str, label: str, type_: str, current: int, limit: int) -> dict:
            return {"id": f"{base}/{value}", "amlWorkspaceLocation": loc, "type": f"{PROVIDER}/{type_}/usages",
                    "unit": "Count", "currentValue": current, "limit": limit,
                    "name": {"value": value, "localizedValue": label}}

        out = [usage("totalCores", "Total Cluster Dedicated Regional vCPUs", "totalCores", total, self.quota["total"]),
               usage("totalLowPriorityCores", "Total Cluster LowPriority Regional vCPUs", "totalLowPriorityCores",
                     low, self.quota["low_priority"])]
        for fam, label in _FAMILY_LABELS.items():
            limit = self.quota["families"].get(fam, self.quota["default_family"])
            out.append(usage(fam, f"{label} Family Cluster Dedicated vCPUs", "vmFamily", used.get(fam, 0), limit))
        return out

    # -- operations ----------------------------------------------------------------------------------
    def _begin(self, action: str, key: tuple, name: str, finish: Callable[[], None],
               fail: Callable[[str, str], None], step: Callable[[int], None] | None = None,
               status: int = 202, body: Any = None) -> Response:
        op_id = str(uuid.uuid4())
        failure = self.failures.pop((action, name), None) or self.failures.pop((action, None), None)
        deadline = time.monotonic() + self.lro_seconds if self.lro_seconds is not None else None
        self.operations[op_id] = Operation(op_id, action, key, name, self.lro_polls, deadline, finish, fail, step,
                                           failure)
        loc = self.workspaces[key]["workspace"]["location"]
        if self.lro_via == "location":
            headers = {"Location": f"{self.base_url}/subscriptions/{key[0]}/providers/{PROVIDER}/locations/{loc}/"
                                   f"computeOperationsResult/{op_id}?api-version={self.api_version}"}
            status, body = 202, None
        else:
            headers = {"Azure-AsyncOperation": f"{self.base_url}/subscriptions/{key[0]}/providers/{PROVIDER}/"
                                               f"locations/{loc}/computeOperationsStatus/{op_id}"
                                               f"?api-version={self.api_version}&service=new"}
        if self.poll_retry_after is not None:
            headers["Retry-After"] = str(self.poll_retry_after)
        return Response(status, body, headers)

    def finish_operations(self) -> int:
        """End every operation still in progress, as Azure would in its own time; returns how many."""
        with self.lock:
            running = [op for op in self.operations.values() if op.status == "InProgress"]
            for op in running:
                self._end(op)
        return len(running)

    def in_progress(self) -> list[str]:
        """The actions of the operations still in progress."""
        with self.lock:
            return [op.action for op in self.operations.values() if op.status == "InProgress"]

    def _end(self, op: Operation) -> None:
        if op.failure:
            code, message = op.failure
            op.status, op.error = "Failed", {"code": code, "message": message}
            op.fail(code, message)
        else:
            op.status = "Succeeded"
            op.finish()
        op.ended = _now()

    def _advance_clock(self) -> None:
        now = time.monotonic()
        for op in self.operations.values():
            if op.status == "InProgress" and op.deadline is not None and now >= op.deadline:
                self._end(op)

    def _poll_location(self, op_id: str) -> Response:
        """A Location URL: 202 while the operation runs; then the resource (PUT), nothing (POST,
        DELETE), or Azure's error."""
        op = self.operations.get(op_id)
        if op is None:
            return arm_error(404, "NotFound", f"Operation '{op_id}' was not found.")
        if op.status == "InProgress":
            answer = self._poll(op_id)
            if op.status == "InProgress":
                return Response(202, None, answer.headers)
        if op.status != "Succeeded":
            return arm_error(400, op.error["code"], op.error["message"])
        res = self.workspaces[op.key]["computes"].get(op.name.lower())
        if op.action in ("create", "update", "attach") and res is not None:
            return Response(200, self._public(res))
        return Response(204, None)

    def _poll(self, op_id: str) -> Response:
        op = self.operations.get(op_id)
        if op is None:
            return arm_error(404, "NotFound", f"Operation '{op_id}' was not found.")
        if op.status == "InProgress":
            op.polls += 1
            if op.polls_left > 0 and (op.deadline is None or time.monotonic() < op.deadline):
                op.polls_left -= 1
                if op.step:
                    op.step(op.polls)
                headers = {"Retry-After": str(self.poll_retry_after)} if self.poll_retry_after is not None else {}
                return Response(200, {"name": op.id, "status": "InProgress", "startTime": op.started}, headers)
            self._end(op)
        body: dict[str, Any] = {"name": op.id, "status": op.status, "startTime": op.started, "endTime": op.ended}
        if op.status == "Succeeded":
            body["percentComplete"] = 100.0
        if op.error:
            body["error"] = op.error
        return Response(200, body)

    # -- PUT -----------------------------------------------------------------------------------------
    def _put(self, entry: dict, key: tuple, name: str, res: dict | None, req: Request) -> Response:
        body = req.body if isinstance(req.body, dict) else None
        props = (body or {}).get("properties") or {}
        ctype = props.get("computeType")
        if ctype in self.refused_types:
            return arm_error(400, *self.refused_types[ctype])
        if ctype in ATTACH_TYPES:
            return self._attach(entry, key, name, res, body)
        if ctype not in ("ComputeInstance", "AmlCompute"):
            return arm_error(400, "BadRequest", f"The compute type '{ctype}' is not supported. Supported compute "
                                                f"types: ComputeInstance, AmlCompute, {', '.join(ATTACH_TYPES)}.")
        inner = props.get("properties") or {}
        size = next((s for s in VM_SIZES if s["name"].lower() == str(inner.get("vmSize", "")).lower()), None)
        if size is None:
            return arm_error(400, "BadArgument", f"The specified vm size '{inner.get('vmSize')}' is not supported "
                                                 f"in location '{entry['workspace']['location']}'.")
        if ctype == "ComputeInstance" and (not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{2,23}", name)
                                           or re.search(r"-\d*$", name)):
            return arm_error(400, "UserError",
                             f"Compute name '{name}' is invalid. It must be 3 to 24 characters of letters, digits "
                             "and hyphens, start with a letter, and not end with a hyphen followed by digits.")
        if ctype == "AmlCompute" and not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{1,15}", name):
            return arm_error(400, "UserError", f"Compute name '{name}' is invalid. It must be 2 to 16 characters "
                                               "of letters, digits and hyphens, and start with a letter.")
        isolation = ((entry["workspace"]["properties"].get("managedNetwork") or {}).get("isolationMode")
                     or "Disabled")
        if inner.get("enableNodePublicIp") is False and not inner.get("subnet") and isolation == "Disabled":
            what = "Compute instance" if ctype == "ComputeInstance" else "Compute cluster"
            return arm_error(400, "BadArgument",
                             f"{what} '{name}' has no public IP but names no subnet. Without a public IP, compute "
                             "must be in a virtual network: specify a subnet, or enable a managed virtual network "
                             "for the workspace.")
        if res is not None:
            if ctype != res["properties"]["computeType"] or ctype == "ComputeInstance":
                return arm_error(409, "Conflict", f"A compute named '{name}' already exists in this workspace and "
                                                  "cannot be changed this way.")
            return self._update_cluster(key, name, res, body)
        res = self._new_resource(entry, name, body, size)
        entry["computes"][name.lower()] = res
        p, rinner = res["properties"], res["properties"]["properties"]

        def finish() -> None:
            p["provisioningState"] = "Succeeded"
            p["modifiedOn"] = _now()
            if ctype == "ComputeInstance":
                self._running_instance(res)
                rinner["lastOperation"] = {"operationName": "Create", "operationTime": _now(),
                                           "operationStatus": "Succeeded", "operationTrigger": "User"}
            else:
                mn = rinner["scaleSettings"]["minNodeCount"]
                rinner.update({"allocationState": "Steady", "allocationStateTransitionTime": _now(),
                               "currentNodeCount": mn, "targetNodeCount": mn, "errors": None,
                               "nodeStateCounts": {"idleNodeCount": mn, "runningNodeCount": 0,
                                                   "preparingNodeCount": 0, "unusableNodeCount": 0,
                                                   "leavingNodeCount": 0, "preemptedNodeCount": 0}})

        def fail(code: str, message: str) -> None:
            p["provisioningState"] = "Failed"
            p["provisioningErrors"] = [{"error": {"code": code, "message": message}}]
            if ctype == "ComputeInstance":
                rinner["state"] = "CreateFailed"
                rinner["errors"] = [{"error": {"code": code, "message": message}}]
                rinner["lastOperation"] = {"operationName": "Create", "operationTime": _now(),
                                           "operationStatus": "CreateFailed", "operationTrigger": "User"}

        def step(n: int) -> None:
            if ctype == "ComputeInstance" and n >= 2:
                rinner["state"] = "SettingUp"

        return self._begin("create", key, name, finish, fail, step, status=201, body=self._public(res))

    def _new_resource(self, entry: dict, name: str, body: dict, size: dict) -> dict:
        ws = entry["workspace"]
        props = body["properties"]
        inner = props.get("properties") or {}
        ctype = props["computeType"]
        now = _now()
        res: dict[str, Any] = {
            "id": f"{ws['id']}/computes/{name}", "name": name, "type": f"{PROVIDER}/workspaces/computes",
            "location": body.get("location") or ws["location"], "tags": body.get("tags") or {},
        }
        ident = body.get("identity")
        if ident and ident.get("type") not in (None, "None"):
            res["identity"] = {"type": ident["type"], "principalId": str(uuid.uuid4()), "tenantId": TENANT_ID}
            if ident.get("userAssignedIdentities"):
                res["identity"]["userAssignedIdentities"] = {
                    k: {"principalId": str(uuid.uuid4()), "clientId": str(uuid.uuid4())}
                    for k in ident["userAssignedIdentities"]}
        subnet = inner.get("subnet")
        common = {"createdOn": now, "modifiedOn": now, "disableLocalAuth": False,
                  "description": props.get("description"), "resourceId": None, "computeType": ctype,
                  "computeLocation": res["location"], "provisioningState": "Creating", "provisioningErrors": None,
                  "isAttachedCompute": False}
        if ctype == "ComputeInstance":
            ssh = inner.get("sshSettings") or {}
            personal = inner.get("personalComputeInstanceSettings")
            new_inner = {
                "vmSize": size["name"].upper(), "subnet": subnet, "applicationSharingPolicy":
                    inner.get("applicationSharingPolicy") or "Shared",
                "sshSettings": {"sshPublicAccess": ssh.get("sshPublicAccess") or "Disabled",
                                "adminUserName": "azureuser", "sshPort": 50000, "adminPublicKey": None},
                "errors": None, "connectivityEndpoints": None, "applications": None, "state": "Creating",
                "lastOperation": None,
                "createdBy": {"userOrgId": TENANT_ID, "userId": OBJECT_ID, "userName": "Test User"},
                "computeInstanceAuthorizationType": "personal",
                "personalComputeInstanceSettings": personal,
                "schedules": inner.get("schedules") or {"computeStartStop": []},
                "enableNodePublicIp": inner.get("enableNodePublicIp", True),
                "idleTimeBeforeShutdown": inner.get("idleTimeBeforeShutdown"),
                "osImageMetadata": {"currentImageVersion": None, "latestImageVersion": "24.06.10",
                                    "isLatestOsImageVersion": False},
            }
        else:
            creds = inner.get("userAccountCredentials") or {}
            new_inner = {
                "vmSize": size["name"].upper(), "vmPriority": inner.get("vmPriority") or "Dedicated",
                "scaleSettings": {"maxNodeCount": (inner.get("scaleSettings") or {}).get("maxNodeCount", 1),
                                  "minNodeCount": (inner.get("scaleSettings") or {}).get("minNodeCount", 0),
                                  "nodeIdleTimeBeforeScaleDown":
                                      (inner.get("scaleSettings") or {}).get("nodeIdleTimeBeforeScaleDown", "PT2M")},
                "subnet": subnet, "currentNodeCount": None, "targetNodeCount": None, "nodeStateCounts": None,
                "allocationState": None, "errors": None,
                "remoteLoginPortPublicAccess": inner.get("remoteLoginPortPublicAccess") or "NotSpecified",
                "osType": inner.get("osType") or "Linux", "virtualMachineImage": None, "isolatedNetwork": False,
                "enableNodePublicIp": inner.get("enableNodePublicIp", True), "propertyBag": {},
                # Azure keeps the administrator's name and never returns the password or key.
                "userAccountCredentials": {"adminUserName": creds["adminUserName"], "adminUserSshPublicKey": None,
                                           "adminUserPassword": None} if creds.get("adminUserName") else None,
            }
        res["properties"] = {**common, "properties": new_inner}
        return res

    def _running_instance(self, res: dict) -> None:
        name, loc = res["name"], res["location"]
        inner = res["properties"]["properties"]
        host = f"{name.lower()}.{loc}.instances.azureml.ms"
        inner.update({
            "state": "Running", "errors": [],
            "connectivityEndpoints": {"publicIpAddress": "203.0.113.10" if inner.get("enableNodePublicIp", True)
                                      else None, "privateIpAddress": "10.0.0.4"},
            "applications": [
                {"displayName": "Jupyter", "endpointUri": f"https://{host}/tree/"},
                {"displayName": "Jupyter Lab", "endpointUri": f"https://{host}/lab"},
                {"displayName": "VS Code", "endpointUri": f"vscode://ms-toolsai.vscode-ai-remote/attach?"
                                                          f"computeName={name}"},
                {"displayName": "RStudio", "endpointUri": f"https://{name.lower()}-8787.{loc}.instances.azureml.ms"},
            ],
            "osImageMetadata": {"currentImageVersion": "24.06.10", "latestImageVersion": "24.06.10",
                                "isLatestOsImageVersion": True},
        })
        jupyter = self.instance_jupyter.get(name.lower())
        if jupyter:  # a real Jupyter server on loopback answers for this instance
            apps = inner["applications"]
            apps[0]["endpointUri"], apps[1]["endpointUri"] = f"{jupyter}tree/", f"{jupyter}lab"

    def _update_cluster(self, key: tuple, name: str, res: dict, body: dict) -> Response:
        p, inner = res["properties"], res["properties"]["properties"]
        new = (body["properties"].get("properties") or {})
        scale = new.get("scaleSettings") or {}
        if scale.get("minNodeCount", 0) > scale.get("maxNodeCount", 1):
            return arm_error(400, "BadArgument", "minNodeCount cannot be greater than maxNodeCount.")
        p["provisioningState"] = "Creating"
        previous = copy.deepcopy(inner["scaleSettings"])

        def finish() -> None:
            inner["scaleSettings"] = {"maxNodeCount": scale.get("maxNodeCount", previous["maxNodeCount"]),
                                      "minNodeCount": scale.get("minNodeCount", previous["minNodeCount"]),
                                      "nodeIdleTimeBeforeScaleDown": scale.get(
                                          "nodeIdleTimeBeforeScaleDown", previous["nodeIdleTimeBeforeScaleDown"])}
            for k in ("vmPriority", "remoteLoginPortPublicAccess", "enableNodePublicIp"):
                if k in new:
                    inner[k] = new[k]
            ident = body.get("identity") or {}
            if ident.get("type") not in (None, "None"):
                had = res.get("identity") or {}
                res["identity"] = {"type": ident["type"], "tenantId": TENANT_ID,
                                   "principalId": had.get("principalId") or str(uuid.uuid4())}
                users = had.get("userAssignedIdentities") or {}
                if ident.get("userAssignedIdentities"):
                    res["identity"]["userAssignedIdentities"] = {
                        k: users.get(k) or {"principalId": str(uuid.uuid4()), "clientId": str(uuid.uuid4())}
                        for k in ident["userAssignedIdentities"]}
            p["provisioningState"] = "Succeeded"
            p["modifiedOn"] = _now()
            mn = inner["scaleSettings"]["minNodeCount"]
            inner["targetNodeCount"] = max(mn, inner.get("currentNodeCount") or 0)
            inner["allocationState"] = "Resizing" if inner["targetNodeCount"] != (inner.get("currentNodeCount") or 0) \
                else "Steady"

        def fail(code: str, message: str) -> None:
            p["provisioningState"] = "Failed"
            p["provisioningErrors"] = [{"error": {"code": code, "message": message}}]

        return self._begin("update", key, name, finish, fail, status=201, body=self._public(res))

    def _patch(self, res: dict | None, name: str, g: dict, req: Request) -> Response:
        if res is None:
            return self._not_found(name, g)
        if res["properties"]["computeType"] != "AmlCompute":
            return arm_error(400, "BadRequest", "Only AmlCompute scale settings can be updated with PATCH.")
        scale = (((req.body or {}).get("properties") or {}).get("properties") or {}).get("scaleSettings")
        if not isinstance(scale, dict) or "maxNodeCount" not in scale:
            return arm_error(400, "BadRequest", "properties.properties.scaleSettings.maxNodeCount is required.")
        if scale.get("minNodeCount", 0) > scale["maxNodeCount"]:
            return arm_error(400, "BadArgument", "minNodeCount cannot be greater than maxNodeCount.")
        inner = res["properties"]["properties"]
        inner["scaleSettings"] = {"maxNodeCount": scale["maxNodeCount"], "minNodeCount": scale.get("minNodeCount", 0),
                                  "nodeIdleTimeBeforeScaleDown": scale.get(
                                      "nodeIdleTimeBeforeScaleDown", inner["scaleSettings"].get(
                                          "nodeIdleTimeBeforeScaleDown"))}
        res["properties"]["modifiedOn"] = _now()
        return Response(200, self._public(res))

    # -- attach -------------------------------------------------------------------------------------
    def _attach(self, entry: dict, key: tuple, name: str, res: dict | None, body: dict) -> Response:
        props = body["properties"]
        ctype = props["computeType"]
        rid = props.get("resourceId")
        m = _RESOURCE_ID.match(rid) if isinstance(rid, str) else None
        if not m:
            return arm_error(400, "LinkedInvalidPropertyId",
                             f"Property id '{rid or ''}' at path 'properties.resourceId' is invalid. Expect fully "
                             "qualified resource Id that start with '/subscriptions/{subscriptionId}' or "
                             "'/providers/{resourceProviderNamespace}/'.")
        parts = m.group("rest").strip("/").split("/")
        kinds = [(ns.lower(), [t.lower() for t in types]) for ns, types in ATTACH_TYPES[ctype]]
        if (m.group("ns").lower(), [t.lower() for t in parts[0::2]]) not in kinds or len(parts) % 2:
            wanted = " or ".join(f"{ns}/{'/'.join(types)}" for ns, types in ATTACH_TYPES[ctype])
            return arm_error(400, "BadArgument", f"Invalid resource id '{rid}' for compute type '{ctype}'. The "
                                                 f"resource must be of type {wanted}.")
        if rid.lower() in self.missing_resources:
            return arm_error(400, "ResourceNotFound",
                             f"The Resource '{m.group('ns')}/{'/'.join(parts)}' under resource group "
                             f"'{m.group('rg')}' was not found. For more details please go to "
                             "https://aka.ms/ARMResourceNotFoundFix")
        inner = props.get("properties") or {}
        secrets_given: dict[str, Any] = {}
        if ctype in ("VirtualMachine", "HDInsight"):
            account = inner.get("administratorAccount") or {}
            if not account.get("username"):
                return arm_error(400, "BadArgument", "administratorAccount.username is required to attach "
                                                     f"compute of type {ctype}.")
            if not (account.get("password") or account.get("privateKeyData")):
                return arm_error(400, "BadArgument", "Either administratorAccount.password or "
                                                     "administratorAccount.privateKeyData is required.")
            secrets_given = {k: account[k] for k in ("password", "privateKeyData") if account.get(k)}
        if ctype == "Databricks":
            if not inner.get("databricksAccessToken"):
                return arm_error(400, "BadArgument", "properties.databricksAccessToken is required to attach a "
                                                     "Databricks workspace.")
            secrets_given = {"databricksAccessToken": inner["databricksAccessToken"]}
        if res is not None:
            return arm_error(409, "Conflict", f"A compute named '{name}' already exists in this workspace. Detach "
                                              "it first to attach another resource under this name.")
        ws = entry["workspace"]
        now = _now()
        res = {"id": f"{ws['id']}/computes/{name}", "name": name, "type": f"{PROVIDER}/workspaces/computes",
               "location": body.get("location") or ws["location"], "tags": body.get("tags") or {},
               "properties": {"createdOn": now, "modifiedOn": now, "description": props.get("description"),
                              "resourceId": rid, "computeType": ctype, "computeLocation": ws["location"],
                              "provisioningState": "Creating", "provisioningErrors": None,
                              "isAttachedCompute": True, "disableLocalAuth": False}}
        self.received_secrets[name.lower()] = secrets_given
        public_inner = self._attached_inner(ctype, m, parts, inner, ws["location"])
        if public_inner is not None:
            res["properties"]["properties"] = public_inner
        entry["computes"][name.lower()] = res
        p = res["properties"]

        def finish() -> None:
            p["provisioningState"] = "Succeeded"
            p["modifiedOn"] = _now()

        def fail(code: str, message: str) -> None:
            p["provisioningState"] = "Failed"
            p["provisioningErrors"] = [{"error": {"code": code, "message": message}}]

        return self._begin("attach", key, name, finish, fail, status=201, body=self._public(res))

    @staticmethod
    def _attached_inner(ctype: str, m: re.Match, parts: list[str], inner: dict, location: str) -> dict | None:
        """The properties Azure reports for attached compute: what it read from the resource, and
        the settings given, but never a password, key or token."""
        last = parts[-1]
        account = {"username": (inner.get("administratorAccount") or {}).get("username"), "password": None,
                   "publicKeyData": None, "privateKeyData": None}
        if ctype == "VirtualMachine":
            return {"virtualMachineSize": "Standard_DS3_v2", "sshPort": inner.get("sshPort", 22),
                    "notebookServerPort": 8888, "address": f"203.0.113.{40 + sum(map(ord, last)) % 200}",
                    "administratorAccount": account, "isNotebookInstanceCompute": False}
        if ctype == "HDInsight":
            return {"sshPort": inner.get("sshPort", 22), "address": f"{last.lower()}-ssh.azurehdinsight.net",
                    "administratorAccount": account}
        if ctype == "Kubernetes":
            return {"namespace": inner.get("namespace") or "default",
                    "defaultInstanceType": inner.get("defaultInstanceType"),
                    "instanceTypes": copy.deepcopy(inner.get("instanceTypes")),
                    "relayConnectionString": None, "serviceBusConnectionString": None,
                    "extensionPrincipalId": str(uuid.uuid4()), "extensionInstanceReleaseTrain": "stable",
                    "vcName": None}
        if ctype == "Databricks":
            return {"databricksAccessToken": None,
                    "workspaceUrl": f"adb-{sum(map(ord, last)) * 7919}.{sum(map(ord, last)) % 20}"
                                    ".azuredatabricks.net"}
        if ctype == "SynapseSpark":
            return {"autoScaleProperties": {"minNodeCount": 3, "enabled": True, "maxNodeCount": 10},
                    "autoPauseProperties": {"delayInMinutes": 15, "enabled": True}, "sparkVersion": "3.3",
                    "nodeCount": 3, "nodeSize": "Medium", "nodeSizeFamily": "MemoryOptimized",
                    "subscriptionId": m.group("sub"), "resourceGroup": m.group("rg"), "workspaceName": parts[1],
                    "poolName": last}
        if ctype == "DataLakeAnalytics":
            return {"dataLakeStoreAccountName": f"{last.lower()}store"}
        if ctype == "AKS":
            return {"clusterFqdn": f"{last.lower()}-dns-{secrets.token_hex(4)}.hcp.{location}.azmk8s.io",
                    "agentCount": 3, "agentVmSize": "Standard_D3_v2", "clusterPurpose": "FastProd",
                    "sslConfiguration": {"status": "Disabled"}, "loadBalancerType": "PublicIp",
                    "systemServices": []}
        return None

    def secrets_of(self, name: str) -> dict[str, Any]:
        """The credentials an attach of ``name`` gave Azure (kept apart from what Azure returns)."""
        return dict(self.received_secrets.get(name.lower()) or {})

    # -- DELETE and actions --------------------------------------------------------------------------
    def _delete(self, entry: dict, key: tuple, name: str, res: dict | None, g: dict, req: Request) -> Response:
        how = req.query.get("underlyingResourceAction")
        if how not in ("Delete", "Detach"):
            return arm_error(400, "BadRequest", "The underlyingResourceAction query parameter must be Delete or Detach.")
        if res is None:
            return Response(204)
        p = res["properties"]
        if how == "Delete" and p.get("isAttachedCompute") and p.get("resourceId"):
            self.deleted_resources.append(p["resourceId"])
        previous_state = p["provisioningState"]
        p["provisioningState"] = "Deleting"
        if p["computeType"] == "ComputeInstance":
            p["properties"]["state"] = "Deleting"

        def finish() -> None:
            entry["computes"].pop(name.lower(), None)

        def fail(code: str, message: str) -> None:
            p["provisioningState"] = previous_state
            p["provisioningErrors"] = [{"error": {"code": code, "message": message}}]

        return self._begin("delete" if how == "Delete" else "detach", key, name, finish, fail)

    def _action(self, entry: dict, key: tuple, name: str, action: str) -> Response:
        res = entry["computes"].get(name.lower())
        if res is None:
            ws = entry["workspace"]
            return self._not_found(name, {"ws": ws["name"], "rg": key[1]})
        p = res["properties"]
        inner = p.get("properties") or {}
        if action == "listnodes":
            return Response(200, {"nodes": self._nodes(res), "nextLink": None})
        if p["computeType"] != "ComputeInstance":
            return arm_error(400, "BadRequest",
                             f"{action.capitalize()} is not supported for compute type {p['computeType']}.")
        allowed = {"start": ("Stopped",), "stop": ("Running", "JobRunning"), "restart": ("Running", "JobRunning")}
        state = inner.get("state")
        if state not in allowed[action]:
            return arm_error(409, "Conflict",
                             f"Compute instance '{name}' cannot {action} while it is in state '{state}'.")
        during = {"start": "Starting", "stop": "Stopping", "restart": "Restarting"}[action]
        after = {"start": "Running", "stop": "Stopped", "restart": "Running"}[action]
        inner["state"] = during

        def record(status: str) -> None:
            inner["lastOperation"] = {"operationName": action.capitalize(), "operationTime": _now(),
                                      "operationStatus": status, "operationTrigger": "User"}
            p["modifiedOn"] = _now()

        def finish() -> None:
            if after == "Running":
                self._running_instance(res)
            else:
                inner["state"] = after
            record("Succeeded")

        def fail(code: str, message: str) -> None:
            inner["state"] = state
            inner["errors"] = [{"error": {"code": code, "message": message}}]
            record(f"{action.capitalize()}Failed")

        return self._begin(action, key, name, finish, fail)

    def _nodes(self, res: dict) -> list[dict]:
        inner = res["properties"].get("properties") or {}
        counts = inner.get("nodeStateCounts") or {}
        states = [("idle", counts.get("idleNodeCount", 0)), ("running", counts.get("runningNodeCount", 0)),
                  ("preparing", counts.get("preparingNodeCount", 0)), ("unusable", counts.get("unusableNodeCount", 0)),
                  ("leaving", counts.get("leavingNodeCount", 0)), ("preempted", counts.get("preemptedNodeCount", 0))]
        out, i = [], 0
        for state, n in states:
            for _ in range(n or 0):
                i += 1
                out.append({"nodeId": f"tvmps_{secrets.token_hex(12)}_d", "privateIpAddress": f"10.0.0.{3 + i}",
                            "publicIpAddress": f"203.0.113.{20 + i}", "port": 50000 + i, "nodeState": state,
                            "runId": f"run_{i}" if state == "running" else None})
        return out


def main() -> None:
    """Serve until interrupted, printing the environment a client needs (for trying the CLI by hand)."""
    import signal
    import threading

    with ArmStandIn() as arm:
        for k, v in arm.env().items():
            print(f"export {k}={v}")
        print(f"# workspace: --subscription {arm.subscription_id} --resource-group {arm.resource_group} "
              f"--name {arm.workspace_name}", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
