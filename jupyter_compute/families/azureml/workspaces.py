"""Which Azure ML workspaces this user sees, and the workspace of the compute instance this runs on.

Listed in ``c.AzureML.workspaces``, added with ``workspace add`` (kept in the store), named by a
``config.json`` found from the start folder upwards (as ``Workspace.from_config()`` finds it), or,
on a compute instance, the instance's own. Nothing contacts Azure until a workspace's targets are
asked for.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from ...core.errors import InvalidRequest
from ...core.registry import WorkspaceProvider
from ...core.workspace import Workspace
from .config import AzureML

log = logging.getLogger(__name__)

NAME_RULES = {
    "subscription_id": (re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"),
                        "a subscription id is a GUID like 00000000-0000-0000-0000-000000000000"),
    "resource_group": (re.compile(r"^[-\w._()]{1,90}$"),
                       "a resource group name is 1-90 letters, digits, '-', '_', '.', '(' or ')'"),
    "workspace_name": (re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$"),
                       "a workspace name is 3-33 letters, digits, '-' or '_', starting with a letter or digit"),
    "alias": (re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$"),
              "an alias starts with a letter and holds letters, digits, '-', '_' or '.'"),
}
FIELDS = ("subscription_id", "resource_group", "workspace_name", "alias", "location")


class AzureWorkspaces(WorkspaceProvider):
    kind = "azureml"

    def __init__(self, compute: Any):
        super().__init__(compute)
        self.settings = compute.settings.of(AzureML)
        #: The compute instance this process runs on, if any, and the alias of its workspace.
        self.this_instance = self._detect()
        self._instance_ws: str | None = None
        self._discovered: list[str] = []
        #: Device-code sign-ins begun in this process, made on first use.
        self._sign_ins: Any = None

    def _detect(self):
        if not self.settings.detect_instance:
            return None
        from .instance import detect
        return detect(self.settings.instance_file)

    # -- which workspaces ----------------------------------------------------------------------------
    def entries(self, stored: list[dict]) -> list[tuple[dict, str]]:
        from .discovery import discover_workspaces

        entries: list[tuple[dict, str]] = [(dict(c), "config") for c in self.settings.workspaces]
        entries += [({**r["config"], "alias": r["id"]}, "added") for r in stored if r["kind"] == self.kind]
        if self.compute.start_dir:
            entries += [(w, "discovered") for w in discover_workspaces(self.compute.start_dir)]
        me = self.this_instance
        if me is not None and not any(me.same_workspace(c) for c, _ in entries):
            cfg = me.workspace_config()
            if cfg is not None:
                entries.insert(0, (cfg, "instance"))
        usable = []
        for cfg, source in entries:
            if None in self.key(cfg):
                log.warning("ignoring Azure ML workspace %s: it needs subscription_id, resource_group and "
                            "workspace_name", cfg)
                continue
            usable.append((cfg, source))
        return usable

    def key(self, cfg: dict) -> tuple:
        return tuple((cfg.get(k) or "").lower() or None for k in ("subscription_id", "resource_group", "workspace_name"))

    def alias(self, cfg: dict, taken: set[str]) -> str:
        from .discovery import workspace_alias
        return cfg.get("alias") or workspace_alias(cfg["workspace_name"], taken)

    def make(self, alias: str, cfg: dict, source: str) -> Workspace:
        from .backend import AzureMLBackend

        settings = self.compute.settings
        backend = AzureMLBackend(alias, self.compute.store, settings, subscription_id=cfg["subscription_id"],
                                 resource_group=cfg["resource_group"], workspace_name=cfg["workspace_name"],
                                 location=cfg.get("location"))
        props = {k: cfg[k] for k in ("subscription_id", "resource_group", "workspace_name", "location",
                                     "config_path") if cfg.get(k)}
        props["source"] = source
        if self.this_instance is not None and self._instance_ws is None and self.this_instance.same_workspace(cfg):
            # The instance's own workspace, however it is named here: signed in to with its identity.
            backend.this_instance = self.this_instance
            props["this_instance"] = self.this_instance.name
            self._instance_ws = alias
        if source == "discovered":
            self._discovered.append(alias)
        return Workspace(alias, self.kind, f"Azure ML workspace {cfg['workspace_name']} ({cfg['resource_group']})",
                         self.compute.store, settings, [backend], props)

    def forget(self, alias: str) -> None:
        if alias == self._instance_ws:
            self._instance_ws = None
        if alias in self._discovered:
            self._discovered.remove(alias)

    def default_alias(self) -> str | None:
        return self._discovered[0] if self._discovered else self._instance_ws

    def check_new(self, fields: dict[str, Any]) -> dict[str, Any]:
        unknown = set(fields) - set(FIELDS)
        if unknown:
            field = sorted(unknown)[0]
            raise InvalidRequest(f"{field}: is not a field of a workspace", field=f"/{field}")
        cfg = {k: fields.get(k) for k in ("subscription_id", "resource_group", "workspace_name")}
        if fields.get("alias") is not None:
            cfg["alias"] = fields["alias"]
        for field, value in cfg.items():
            rule, says = NAME_RULES[field]
            if not isinstance(value, str) or not rule.match(value):
                raise InvalidRequest(f"{field}: {says}", field=f"/{field}")
        location = fields.get("location")
        if location is not None:
            if not isinstance(location, str) or not re.match(r"^[a-z0-9]{2,40}$", location):
                raise InvalidRequest("location: an Azure region name such as westeurope", field="/location")
            cfg["location"] = location
        return cfg

    # -- the instance this runs on -------------------------------------------------------------------
    def host_info(self) -> dict | None:
        if self.this_instance is None:
            return None
        return self.this_instance.info(self._instance_ws)

    def attach_server(self, serverapp: Any) -> None:
        if self.this_instance is not None:
            # Only this server sees the instance's kernels and terminals, which idle shutdown counts.
            from .instance import ServerActivity
            self.this_instance.activity_source = ServerActivity(serverapp)

    # -- sign-in ---------------------------------------------------------------------------------------
    @property
    def sign_ins(self):
        if self._sign_ins is None:
            from .signin import SignIns
            self._sign_ins = SignIns()
        return self._sign_ins

    def no_sign_in(self, workspace: Any) -> Exception:
        return InvalidRequest(f"workspace '{workspace.id}' is not an Azure ML workspace: it has no Azure sign-in",
                              reason="not_azure")

    async def close(self) -> None:
        if self._sign_ins is not None:
            self._sign_ins.close()


def workspaces(compute: Any) -> AzureWorkspaces:
    return AzureWorkspaces(compute)
