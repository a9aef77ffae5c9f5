"""Azure ML compute resources in jupyter_compute's terms, and specs as the bodies Azure expects.

Everything here works on the JSON Resource Manager sends (any api-version since 2022), so fields
a newer Azure adds (idle shutdown, schedules, SSO) are read even where the SDK's models lag.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from ...core.models import ErrorDetail, Node, NodeCounts, Size, State, Target, Usage
from .attached import COMPUTE_TYPE, attached_properties
from .specs import CLUSTER, INSTANCE, ComputeClusterSpec, ComputeInstanceSpec

#: computeType -> kind. The attached kinds are listed so a workspace's list is complete.
KIND_OF_TYPE = {"ComputeInstance": INSTANCE, "AmlCompute": CLUSTER, **{t: k for k, t in COMPUTE_TYPE.items()}}

INSTANCE_STATES = {
    "Creating": State.creating, "SettingUp": State.creating, "UserSettingUp": State.creating,
    "Starting": State.starting, "Stopping": State.stopping, "Restarting": State.restarting,
    "Deleting": State.deleting,
    "Running": State.running, "JobRunning": State.running,
    "Stopped": State.stopped,
    "CreateFailed": State.failed, "SetupFailed": State.failed, "UserSetupFailed": State.failed,
    "Unusable": State.failed,
}
CLUSTER_STATES = {
    "Succeeded": State.running, "Creating": State.creating, "Deleting": State.deleting, "Failed": State.failed,
}
#: Azure's computeType of each attached kind.
ATTACHED_TYPES = frozenset(COMPUTE_TYPE.values())
ATTACHED_STATES = {
    "Succeeded": State.running, "Creating": State.creating, "Updating": State.creating,
    "Failed": State.failed, "Deleting": State.deleting,
}

#: How Azure names an instance's applications, and the names jupyter_compute shows.
APPLICATION_NAMES = {"jupyter": "Jupyter", "jupyterlab": "JupyterLab", "jupyter lab": "JupyterLab",
                     "vs code": "VS Code", "vscode": "VS Code", "vs code (desktop)": "VS Code",
                     "rstudio": "RStudio"}

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _props(res: dict) -> dict:
    return res.get("properties") or {}


def _inner(res: dict) -> dict:
    return _props(res).get("properties") or {}


def state_of(res: dict) -> tuple[State, str | None]:
    """The normalised state and Azure's own word for it."""
    p = _props(res)
    ctype = p.get("computeType")
    provisioning = p.get("provisioningState")
    if ctype == "ComputeInstance":
        word = _inner(res).get("state")
        if provisioning == "Deleting":
            return State.deleting, word or provisioning
        if word:
            return INSTANCE_STATES.get(word, State.unknown), word
        if provisioning in ("Creating", "Failed"):
            return (State.creating if provisioning == "Creating" else State.failed), provisioning
        return State.unknown, provisioning
    if ctype == "AmlCompute":
        return CLUSTER_STATES.get(provisioning or "", State.unknown), provisioning
    return ATTACHED_STATES.get(provisioning or "", State.unknown), provisioning


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        # Azure writes 7 fractional digits; Python takes at most 6.
        text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
        try:
            dt = datetime.fromisoformat(text)
            return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    return _EPOCH


def _seconds(iso: str | None) -> int | None:
    """Seconds in an ISO 8601 duration such as PT1M40S or P1DT2H."""
    if not iso or not isinstance(iso, str):
        return None
    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", iso.strip().upper())
    if not m or iso.strip().upper() in ("P", "PT"):
        return None
    d, h, mi, s = (float(x) if x else 0.0 for x in m.groups())
    return int(d * 86400 + h * 3600 + mi * 60 + s)


def duration(seconds: int) -> str:
    """ISO 8601 duration, in the form Azure itself writes (PT2M, PT1M40S)."""
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    out = "PT" + (f"{h}H" if h else "") + (f"{m}M" if m else "") + (f"{s}S" if s else "")
    return out if out != "PT" else "PT0S"


def _errors(res: dict) -> list[ErrorDetail]:
    out = []
    for e in (_props(res).get("provisioningErrors") or []) + (_inner(res).get("errors") or []):
        err = (e or {}).get("error") or e or {}
        if err.get("message"):
            out.append(ErrorDetail(message=err["message"], code=err.get("code")))
    return out


def applications(inner: dict) -> list[dict[str, str]]:
    out = []
    for app in inner.get("applications") or []:
        name, url = app.get("displayName"), app.get("endpointUri")
        if name and url:
            out.append({"name": APPLICATION_NAMES.get(name.strip().lower(), name), "url": url})
    return out


def to_target(res: dict, workspace: str, sizes: dict[str, Size] | None = None, *, cloud: str = "AzureCloud") -> Target:
    p, inner = _props(res), _inner(res)
    ctype = p.get("computeType") or "Unknown"
    kind = KIND_OF_TYPE.get(ctype, ctype.lower())
    state, word = state_of(res)
    size = None
    # A VM attached to the workspace names its size virtualMachineSize; a legacy AKS, agentVmSize.
    vm_size = inner.get("vmSize") or inner.get("virtualMachineSize") or inner.get("agentVmSize")
    if isinstance(vm_size, str) and vm_size:
        known = (sizes or {}).get(vm_size.lower())
        size = known.model_copy() if known else Size(name=vm_size)
    props: dict[str, Any] = {
        "compute_type": ctype,
        "resource_id": res.get("id"),
        "location": p.get("computeLocation") or res.get("location"),
        "description": p.get("description"),
        "tags": res.get("tags") or {},
    }
    if res.get("identity"):
        ident = res["identity"]
        props["identity"] = {k: v for k, v in {
            "type": ident.get("type"), "principal_id": ident.get("principalId"),
            "user_assigned": sorted((ident.get("userAssignedIdentities") or {}).keys()) or None}.items() if v}
    if inner.get("subnet"):
        props["subnet"] = (inner["subnet"] or {}).get("id") if isinstance(inner["subnet"], dict) else inner["subnet"]
    if "enableNodePublicIp" in inner and inner["enableNodePublicIp"] is not None:
        props["no_public_ip"] = not inner["enableNodePublicIp"]
    nodes = None
    if ctype == "ComputeInstance":
        creator = inner.get("createdBy") or {}
        props["created_by"] = {k: v for k, v in {
            "user_name": creator.get("userName"), "user_id": creator.get("userId"),
            "tenant_id": creator.get("userOrgId")}.items() if v}
        props["applications"] = applications(inner)
        props["application_sharing"] = (inner.get("applicationSharingPolicy") or "").lower() or None
        ssh = inner.get("sshSettings") or {}
        if ssh:
            props["ssh"] = {k: v for k, v in {
                "public_access": (ssh.get("sshPublicAccess") == "Enabled"), "admin_username": ssh.get("adminUserName"),
                "port": ssh.get("sshPort")}.items() if v is not None}
        ends = inner.get("connectivityEndpoints") or {}
        if ends.get("publicIpAddress") or ends.get("privateIpAddress"):
            props["addresses"] = {k: v for k, v in {"public": ends.get("publicIpAddress"),
                                                    "private": ends.get("privateIpAddress")}.items() if v}
        last = inner.get("lastOperation")
        if last:
            props["last_operation"] = {k: v for k, v in {
                "name": last.get("operationName"), "status": last.get("operationStatus"),
                "time": last.get("operationTime"), "trigger": last.get("operationTrigger")}.items() if v}
        idle = _seconds(inner.get("idleTimeBeforeShutdown"))
        if idle is not None:
            props["idle_shutdown_minutes"] = idle // 60
        sched = ((inner.get("schedules") or {}).get("computeStartStop")) or []
        if sched:
            props["schedules"] = [schedule_of(s) for s in sched]
        personal = (inner.get("personalComputeInstanceSettings") or {}).get("assignedUser")
        if personal:
            props["assigned_user"] = {"object_id": personal.get("objectId"), "tenant_id": personal.get("tenantId")}
    elif ctype == "AmlCompute":
        scale = inner.get("scaleSettings") or {}
        counts = inner.get("nodeStateCounts") or {}
        nodes = NodeCounts(
            current=inner.get("currentNodeCount") if inner.get("currentNodeCount") is not None else None,
            min=scale.get("minNodeCount"), max=scale.get("maxNodeCount"),
            idle=counts.get("idleNodeCount"), running=counts.get("runningNodeCount"),
            preparing=counts.get("preparingNodeCount"), unusable=counts.get("unusableNodeCount"),
            leaving=counts.get("leavingNodeCount"), preempted=counts.get("preemptedNodeCount"))
        props["allocation_state"] = inner.get("allocationState")
        props["target_nodes"] = inner.get("targetNodeCount")
        props["priority"] = {"Dedicated": "dedicated", "LowPriority": "low-priority"}.get(
            inner.get("vmPriority") or "", inner.get("vmPriority"))
        props["idle_seconds_before_scaledown"] = _seconds(scale.get("nodeIdleTimeBeforeScaleDown"))
        props["remote_login_port_public_access"] = inner.get("remoteLoginPortPublicAccess")
        props["os_type"] = inner.get("osType")
    elif ctype in ATTACHED_TYPES:
        props.update(attached_properties(ctype, p, inner, cloud))
    elif p.get("resourceId"):
        props["attached_resource_id"] = p.get("resourceId")
    # Kinds Azure ML creates are managed here; everything else is attached (and only detached).
    managed = ctype in ("ComputeInstance", "AmlCompute") if ctype in KIND_OF_TYPE \
        else not p.get("isAttachedCompute", False)
    return Target(
        name=res.get("name") or "", workspace=workspace, kind=kind, managed=managed,
        state=state, provider_state=word, size=size, nodes=nodes,
        created=_when(p.get("createdOn")), modified=_when(p.get("modifiedOn") or p.get("createdOn")),
        errors=_errors(res), properties={k: v for k, v in props.items() if v is not None and v != {}})


# -- bodies -----------------------------------------------------------------------------------------
def instance_body(spec: ComputeInstanceSpec, location: str | None) -> dict:
    inner: dict[str, Any] = {
        "vmSize": spec.size,
        "applicationSharingPolicy": spec.application_sharing.capitalize(),
        "sshSettings": {"sshPublicAccess": "Enabled" if spec.ssh_public_access else "Disabled",
                        **({"adminPublicKey": spec.ssh_public_key} if spec.ssh_public_key else {})},
        "enableNodePublicIp": not spec.no_public_ip,
    }
    if spec.subnet:
        inner["subnet"] = {"id": spec.subnet}
    if spec.idle_shutdown_minutes is not None:
        inner["idleTimeBeforeShutdown"] = f"PT{spec.idle_shutdown_minutes}M"
    if spec.schedules:
        inner["schedules"] = {"computeStartStop": [{
            "action": s.action.capitalize(), "triggerType": "Cron",
            "cron": {"expression": s.cron, "timeZone": s.time_zone},
            "status": "Enabled" if s.enabled else "Disabled"} for s in spec.schedules]}
    if spec.assigned_user:
        inner["computeInstanceAuthorizationType"] = "personal"
        inner["personalComputeInstanceSettings"] = {"assignedUser": {
            "objectId": spec.assigned_user.object_id, "tenantId": spec.assigned_user.tenant_id}}
    return _resource("ComputeInstance", inner, spec, location)


def cluster_body(spec: ComputeClusterSpec, location: str | None) -> dict:
    inner: dict[str, Any] = {
        "osType": "Linux",
        "vmSize": spec.size,
        "vmPriority": "Dedicated" if spec.priority == "dedicated" else "LowPriority",
        "scaleSettings": {"minNodeCount": spec.min_nodes, "maxNodeCount": spec.max_nodes,
                          "nodeIdleTimeBeforeScaleDown": duration(spec.idle_seconds_before_scaledown)},
        "remoteLoginPortPublicAccess": {None: "NotSpecified", True: "Enabled", False: "Disabled"}[
            spec.remote_login_port_public_access],
        "enableNodePublicIp": not spec.no_public_ip,
    }
    if spec.subnet:
        inner["subnet"] = {"id": spec.subnet}
    if spec.admin_username:
        inner["userAccountCredentials"] = {k: v for k, v in {
            "adminUserName": spec.admin_username, "adminUserPassword": spec.admin_password,
            "adminUserSshPublicKey": spec.ssh_public_key}.items() if v}
    body = _resource("AmlCompute", inner, spec, location)
    if spec.identity == "system-assigned":
        body["identity"] = {"type": "SystemAssigned"}
    elif spec.identity:
        body["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {spec.identity: {}}}
    return body


def _resource(ctype: str, inner: dict, spec: Any, location: str | None) -> dict:
    props: dict[str, Any] = {"computeType": ctype, "properties": inner}
    if spec.description:
        props["description"] = spec.description
    body: dict[str, Any] = {"properties": props}
    if location:
        body["location"] = location
    if spec.tags:
        body["tags"] = dict(spec.tags)
    return body


_CLUSTER_WRITABLE = ("osType", "vmSize", "vmPriority", "virtualMachineImage", "isolatedNetwork", "scaleSettings",
                     "subnet", "remoteLoginPortPublicAccess", "enableNodePublicIp")


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def schedule_of(s: dict) -> dict:
    """One start or stop schedule of a compute instance, cron or recurrence, with when it fires in words."""
    cron = s.get("cron") or {}
    rec = s.get("recurrence") or {}
    out: dict[str, Any] = {"action": (s.get("action") or "").lower(), "enabled": s.get("status") != "Disabled"}
    if (s.get("triggerType") or ("Recurrence" if rec and not cron else "Cron")).lower() == "recurrence" and rec:
        at = rec.get("schedule") or {}
        hours, minutes = at.get("hours") or [], at.get("minutes") or [0]
        times = ", ".join(f"{h:02d}:{m:02d}" for h in hours for m in minutes) if hours else ""
        every = rec.get("interval") or 1
        freq = (rec.get("frequency") or "").lower()
        unit = {"minute": "minute", "hour": "hour", "day": "day", "week": "week", "month": "month"}.get(freq, freq)
        when = f"every {unit}" if every == 1 else f"every {every} {unit}s"
        days = [d for d in _WEEKDAYS if d in (at.get("weekDays") or [])]
        if days:
            when += " on " + ", ".join(days)
        if times:
            when += f" at {times}"
        out.update({"recurrence": {k: v for k, v in {"frequency": rec.get("frequency"), "interval": every,
                                                     "week_days": days or None, "hours": hours or None,
                                                     "minutes": at.get("minutes")}.items() if v},
                    "when": when, "time_zone": rec.get("timeZone") or "UTC"})
    else:
        out.update({"cron": cron.get("expression"), "when": f"cron {cron.get('expression')}",
                    "time_zone": cron.get("timeZone") or "UTC"})
    return out


def cluster_update_body(current: dict, scale: dict, identity: str | None = None) -> dict:
    """The PUT that changes a cluster's scale settings, adds ``identity`` ('system-assigned' or a
    user-assigned identity's resource id) to those it has, and keeps everything else as it is."""
    p, inner = _props(current), _inner(current)
    new_inner = {k: inner[k] for k in _CLUSTER_WRITABLE if inner.get(k) is not None}
    new_inner["scaleSettings"] = scale
    props: dict[str, Any] = {"computeType": "AmlCompute", "properties": new_inner}
    if p.get("description"):
        props["description"] = p["description"]
    body: dict[str, Any] = {"properties": props}
    for k in ("location", "tags"):
        if current.get(k):
            body[k] = current[k]
    ident = current.get("identity") or {}
    kinds = {k.strip() for k in (ident.get("type") or "").split(",") if k.strip() and k.strip() != "None"}
    users = list(ident.get("userAssignedIdentities") or {})
    if identity == "system-assigned":
        kinds.add("SystemAssigned")
    elif identity:
        kinds.add("UserAssigned")
        if identity.lower() not in {u.lower() for u in users}:
            users.append(identity)
    if kinds:
        body["identity"] = {"type": ",".join(k for k in ("SystemAssigned", "UserAssigned") if k in kinds)}
        if users:
            body["identity"]["userAssignedIdentities"] = {k: {} for k in users}
    return body


# -- sizes, usage, nodes ----------------------------------------------------------------------------
_COMPUTE_TYPE_KIND = {"computeinstance": INSTANCE, "compute instance": INSTANCE, "amlcompute": CLUSTER}


def to_size(vm: Any) -> Size:
    price = None
    prices = getattr(getattr(vm, "estimated_vm_prices", None), "values", None) or []
    linux = [x for x in prices if (x.os_type or "").lower() == "linux" and (x.vm_tier or "").lower() == "standard"]
    if linux or prices:
        price = (linux or prices)[0].retail_price
    kinds = []
    for t in vm.supported_compute_types or []:
        k = _COMPUTE_TYPE_KIND.get(t.strip().lower())
        if k and k not in kinds:
            kinds.append(k)
    return Size(name=vm.name, vcpus=vm.v_cp_us, memory_gb=vm.memory_gb, gpus=vm.gpus,
                low_priority=vm.low_priority_capable, price_per_hour=price, compute_types=kinds)


def to_usage(u: Any) -> Usage:
    name = u.name.localized_value or u.name.value if u.name else (u.type or "usage")
    return Usage(name=name, unit=u.unit or "Count", current=float(u.current_value or 0),
                 limit=None if u.limit is None else float(u.limit))


def to_node(n: Any) -> Node:
    return Node(id=n.node_id or "", state=n.node_state or "unknown",
                address=n.public_ip_address or n.private_ip_address, port=n.port,
                properties={k: v for k, v in {"private_ip": n.private_ip_address, "public_ip": n.public_ip_address,
                                              "run_id": n.run_id}.items() if v})
