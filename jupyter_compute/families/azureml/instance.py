"""Living on an Azure ML compute instance, and reaching one from elsewhere.

On an instance, ``detect`` recognises it from what the instance provides (the ``.nbvm`` file with
its name and domain, and the ``CI_*`` environment variables naming its workspace), so its
workspace is used with no config.json and signed in to with the instance's managed identity.
``describe`` adds to that instance's target what the sidebar pins: idle-shutdown countdown and
what counts as activity. The rest serves any machine: whose a personal instance is, and where
an instance's own Jupyter server lives.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Protocol
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

#: Where a compute instance keeps its name and domain (``instance=…``, ``domainsuffix=…``).
NBVM_PATH = "/mnt/azmnt/.nbvm"
#: Variables a compute instance sets for every process (from /etc/environment).
WORKSPACE_VAR = "CI_WORKSPACE"
RESOURCE_GROUP_VAR = "CI_RESOURCE_GROUP"
NAME_VAR = "CI_NAME"
#: Where the subscription may be named, first found wins; MLFLOW_TRACKING_URI names the whole
#: workspace (azureml://<region>.api.azureml.ms/mlflow/v1.0/subscriptions/…/workspaces/…).
SUBSCRIPTION_VARS = ("CI_SUBSCRIPTION_ID", "AZUREML_ARM_SUBSCRIPTION")
TRACKING_URI_VAR = "MLFLOW_TRACKING_URI"
MSI_VARS = ("MSI_ENDPOINT", "MSI_SECRET")

_NBVM_LINE = re.compile(r"""^\s*([^\s=#]+)\s*=\s*["']?(.*?)["']?\s*$""")
_WORKSPACE_PATH = re.compile(
    r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.MachineLearningServices/"
    r"workspaces/([^/?#]+)", re.IGNORECASE)

#: What Azure ML counts as activity when it decides an instance is idle, as its docs list it.
COUNTS_AS_ACTIVITY = [
    {"key": "kernels", "label": "Jupyter kernel sessions",
     "description": "a kernel running code, from Jupyter, JupyterLab, VS Code or Studio notebooks"},
    {"key": "terminals", "label": "Jupyter terminal sessions", "description": "a terminal in use"},
    {"key": "jobs", "label": "Azure ML jobs", "description": "a run or experiment on this instance"},
    {"key": "connections", "label": "SSH and VS Code connections",
     "description": "an open SSH session or VS Code connection (close it for the instance to count as idle)"},
]


def read_nbvm(path: str) -> dict[str, str]:
    """The ``key=value`` lines of a ``.nbvm`` file; {} when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(64 * 1024)
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _NBVM_LINE.match(line)
        if m and m.group(2):
            out[m.group(1).lower()] = m.group(2)
    return out


def workspace_from_uri(value: str | None) -> tuple[str, str, str] | None:
    """(subscription, resource group, workspace) named by an Azure ML URI or resource id."""
    m = _WORKSPACE_PATH.search(value or "")
    return (m.group(1), m.group(2), m.group(3)) if m else None


class ActivitySource(Protocol):
    """What the Jupyter server on the instance knows about its own use (see ``ServerActivity``)."""

    async def activity(self) -> "Activity": ...


@dataclass
class Activity:
    kernels: int = 0
    busy_kernels: int = 0
    notebook_connections: int = 0
    terminals: int = 0
    #: Established SSH sessions and VS Code servers with a client; None when they cannot be seen.
    ssh_connections: int | None = None
    vscode_connections: int | None = None
    last_activity: datetime | None = None
    server_started: datetime | None = None


@dataclass
class ThisInstance:
    """The compute instance this process runs on."""
    name: str
    workspace_name: str | None = None
    resource_group: str | None = None
    subscription_id: str | None = None
    #: e.g. ``eastus.instances.azureml.ms``: the instance's applications live under ``<name>.<domain>``.
    domain: str | None = None
    #: Where each fact came from (variable names, the .nbvm path), for people wondering why.
    recognised_from: list[str] = field(default_factory=list)
    #: Set by the Jupyter server extension on the instance, which sees kernels and terminals.
    activity_source: ActivitySource | None = None

    @property
    def location(self) -> str | None:
        return self.domain.split(".", 1)[0] if self.domain and ".instances." in self.domain else None

    @property
    def url(self) -> str | None:
        return f"https://{self.name.lower()}.{self.domain}/" if self.domain else None

    @property
    def managed_identity(self) -> bool:
        return all(os.environ.get(v) for v in MSI_VARS)

    def is_target(self, name: str) -> bool:
        return name.lower() == self.name.lower()

    def same_workspace(self, cfg: Mapping[str, Any]) -> bool:
        """Whether a workspace config names this instance's workspace (the subscription, when
        either side does not know it, is not compared)."""
        if not (self.workspace_name and self.resource_group):
            return False
        if (cfg.get("workspace_name") or "").lower() != self.workspace_name.lower():
            return False
        if (cfg.get("resource_group") or "").lower() != self.resource_group.lower():
            return False
        sub = (cfg.get("subscription_id") or "").lower()
        return not (sub and self.subscription_id and sub != self.subscription_id.lower())

    def workspace_config(self) -> dict[str, Any] | None:
        """The instance's workspace as a workspace config; None when the instance does not name
        all of it (then a workspace added or configured with the same name and group is its own)."""
        if not (self.subscription_id and self.resource_group and self.workspace_name):
            return None
        cfg: dict[str, Any] = {"subscription_id": self.subscription_id, "resource_group": self.resource_group,
                               "workspace_name": self.workspace_name}
        if self.location:
            cfg["location"] = self.location
        return cfg

    def credential(self, settings: Any):
        """The instance's managed identity (Azure ML's MSI_ENDPOINT and MSI_SECRET), without the
        rest of the default chain; the default chain where the instance gives no identity."""
        from .credential import ca_bundle, default_credential

        if not self.managed_identity:
            return default_credential(settings)
        from azure.identity.aio import ManagedIdentityCredential

        kwargs: dict[str, Any] = {}
        ca = ca_bundle()
        if ca:
            kwargs["connection_verify"] = ca
        return ManagedIdentityCredential(**kwargs)

    def info(self, workspace_id: str | None) -> dict[str, Any]:
        """What the REST API says about the instance it runs on."""
        return {"name": self.name, "workspace": workspace_id, "workspace_name": self.workspace_name,
                "resource_group": self.resource_group, "location": self.location, "url": self.url,
                "signed_in_with": "managed identity" if self.managed_identity else "default credential",
                "recognised_from": list(self.recognised_from)}


def detect(nbvm_path: str = NBVM_PATH, environ: Mapping[str, str] | None = None) -> ThisInstance | None:
    """The compute instance this process runs on, or None elsewhere.

    An instance is recognised by its ``.nbvm`` file (name and domain), or, without it, by
    ``CI_NAME`` together with ``CI_WORKSPACE`` and ``CI_RESOURCE_GROUP``.
    """
    env = os.environ if environ is None else environ
    nbvm = read_nbvm(nbvm_path) if nbvm_path else {}
    seen: list[str] = []
    name = nbvm.get("instance")
    if name:
        seen.append(nbvm_path)
    ws, rg = env.get(WORKSPACE_VAR, "").strip() or None, env.get(RESOURCE_GROUP_VAR, "").strip() or None
    if not name:
        name = env.get(NAME_VAR, "").strip() or None
        if not (name and ws and rg):
            return None
        seen.append(NAME_VAR)
    seen += [v for v, value in ((WORKSPACE_VAR, ws), (RESOURCE_GROUP_VAR, rg)) if value]
    sub = None
    for var in SUBSCRIPTION_VARS:
        if env.get(var, "").strip():
            sub = env[var].strip()
            seen.append(var)
            break
    named = workspace_from_uri(env.get(TRACKING_URI_VAR))
    if named is not None:
        t_sub, t_rg, t_ws = named
        if (ws is None or ws.lower() == t_ws.lower()) and (rg is None or rg.lower() == t_rg.lower()):
            sub, rg, ws = sub or t_sub, rg or t_rg, ws or t_ws
            seen.append(TRACKING_URI_VAR)
    return ThisInstance(name=name, workspace_name=ws, resource_group=rg, subscription_id=sub,
                        domain=nbvm.get("domainsuffix"), recognised_from=seen)


# -- from anywhere: whose an instance is, and where its Jupyter lives --------------------------------
def owner_of(target: Any) -> dict[str, Any] | None:
    """The one user a personal instance belongs to: the assigned user of one created on someone's
    behalf, else the creator of one whose applications are not shared. None for shared ones."""
    props = target.properties
    creator = props.get("created_by") or {}
    assigned = props.get("assigned_user") or {}
    if assigned.get("object_id"):
        same = (creator.get("user_id") or "").lower() == assigned["object_id"].lower()
        return {"object_id": assigned["object_id"], "tenant_id": assigned.get("tenant_id"),
                "name": creator.get("user_name") if same else None, "why": "assigned"}
    if props.get("application_sharing") == "personal" and creator.get("user_id"):
        return {"object_id": creator["user_id"], "tenant_id": creator.get("tenant_id"),
                "name": creator.get("user_name"), "why": "personal"}
    return None


def describe_owner(owner: Mapping[str, Any]) -> str:
    who = owner.get("name")
    oid = owner.get("object_id")
    return f"{who} (object id {oid})" if who else f"the user with object id {oid}"


def token_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT access token, read without verifying it: only to learn who this
    process signed in as. {} for a token that is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(raw)
    except (ValueError, TypeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def identity_of(claims: Mapping[str, Any]) -> dict[str, Any]:
    """Who a token is for: object id, tenant, and a name to show; nothing secret."""
    return {k: v for k, v in {"object_id": claims.get("oid"), "tenant_id": claims.get("tid"),
                              "name": claims.get("name") or claims.get("upn") or claims.get("unique_name")}.items()
            if isinstance(v, str) and v}


def jupyter_base_url(target: Any) -> str | None:
    """The base URL of an instance's Jupyter server, from its Jupyter or JupyterLab application
    link (``https://<name>.<region>.instances.azureml.ms/tree/`` becomes ``https://…/``)."""
    apps = {a.get("name"): a.get("url") for a in target.properties.get("applications") or []}
    for name in ("Jupyter", "JupyterLab"):
        url = apps.get(name)
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            continue
        path = re.sub(r"(?:tree|lab|notebooks)(?:/.*)?$", "", parts.path or "/")
        return f"{parts.scheme}://{parts.netloc}{path if path.endswith('/') else path + '/'}"
    return None


# -- on the instance: idle shutdown ------------------------------------------------------------------
def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        try:
            dt = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00")))
        except ValueError:
            return None
        return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    return None


def _latest(*values: Any) -> datetime | None:
    found = [d for d in map(_when, values) if d is not None]
    return max(found) if found else None


def describe(target: Any, activity: Activity | None, *, now: datetime | None = None) -> None:
    """Mark ``target`` as the instance this runs on, with its idle-shutdown countdown (where one
    is set and nothing counts as activity now) and the activity Azure ML counts."""
    now = now or datetime.now(timezone.utc)
    minutes = target.properties.get("idle_shutdown_minutes")
    job_running = (target.provider_state or "") == "JobRunning"
    info: dict[str, Any] = {"minutes": minutes, "at": None, "idle_since": None, "state": "off",
                            "active": [], "counts_as_activity": COUNTS_AS_ACTIVITY, "activity": None}
    if activity is not None:
        last_op = target.properties.get("last_operation") or {}
        started = last_op.get("time") if last_op.get("name") in ("Start", "Restart", "Create") else None
        idle_since = _latest(activity.last_activity, activity.server_started, started)
        connections = {"notebooks": activity.notebook_connections, "ssh": activity.ssh_connections,
                       "vscode": activity.vscode_connections}
        info["activity"] = {
            "kernels": {"count": activity.kernels, "busy": activity.busy_kernels},
            "terminals": {"count": activity.terminals},
            "jobs": {"running": job_running},
            "connections": connections,
            "last_activity": activity.last_activity.isoformat() if activity.last_activity else None,
        }
        active = []
        if activity.busy_kernels:
            active.append(f"{activity.busy_kernels} kernel(s) running code")
        if job_running:
            active.append("an Azure ML job is running")
        if activity.ssh_connections:
            active.append(f"{activity.ssh_connections} SSH connection(s)")
        if activity.vscode_connections:
            active.append(f"{activity.vscode_connections} VS Code connection(s)")
        info["active"] = active
        info["idle_since"] = None if active or idle_since is None else idle_since.isoformat()
        if minutes:
            if active:
                info["state"] = "active"
            elif idle_since is not None:
                at = max(idle_since + timedelta(minutes=int(minutes)), now)
                info["state"], info["at"] = "counting", at.isoformat()
                target.idle_shutdown_at = at
            else:
                info["state"] = "unknown"
    elif minutes:
        info["state"] = "unknown"  # only the Jupyter server on the instance sees its kernels and terminals
    target.properties["this_instance"] = True
    target.properties["idle_shutdown"] = info


def consequence(target_name: str, action: str) -> str:
    """What stopping, restarting or deleting the instance this runs on does to the person."""
    what = {"stop": "Stopping", "restart": "Restarting", "delete": "Deleting"}.get(action, action.capitalize())
    after = {"stop": " until it is started again", "restart": " (the instance comes back without them)",
             "delete": " for good, with everything on its disk outside the workspace's file share"}.get(action, "")
    return (f"'{target_name}' is the compute instance this runs on. {what} it ends this JupyterLab session, and "
            f"every kernel, terminal and process on it{after}.")


class ServerActivity:
    """Activity as the Jupyter server on the instance sees it: its kernels and terminals, and the
    SSH and VS Code connections of the machine. Given the server app by the server extension."""

    def __init__(self, serverapp: Any, ssh_ports: tuple[int, ...] = (22, 50000)):
        self.serverapp = serverapp
        self.ssh_ports = ssh_ports

    async def activity(self) -> Activity:
        app = self.serverapp
        settings = getattr(getattr(app, "web_app", None), "settings", {}) or {}
        out = Activity(server_started=_when(settings.get("started")))
        stamps: list[Any] = []
        km = getattr(app, "kernel_manager", None)
        if km is not None:
            for k in km.list_kernels():
                out.kernels += 1
                out.busy_kernels += k.get("execution_state") == "busy"
                out.notebook_connections += int(k.get("connections") or 0)
                stamps.append(k.get("last_activity"))
        tm = settings.get("terminal_manager")
        if tm is not None:
            try:
                terms = tm.list()
            except Exception:  # terminals disabled or not yet set up
                terms = []
            out.terminals = len(terms)
            stamps += [t.get("last_activity") for t in terms]
        out.last_activity = _latest(*stamps)
        out.ssh_connections, out.vscode_connections = await asyncio.to_thread(self._connections)
        return out

    def _connections(self) -> tuple[int | None, int | None]:
        try:
            import psutil
        except ImportError:
            return None, None
        try:
            conns = psutil.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            return None, None
        ssh = sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr
                  and c.laddr.port in self.ssh_ports and c.raddr)
        vscode_pids = set()
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info.get("cmdline") or [])
            if ".vscode-server" in cmd or "code-server" in cmd:
                vscode_pids.add(p.pid)
        vscode = sum(1 for c in conns if c.pid in vscode_pids and c.status == psutil.CONN_ESTABLISHED and c.raddr)
        return ssh, vscode
