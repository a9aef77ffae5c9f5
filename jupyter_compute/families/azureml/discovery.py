"""Finding Azure ML workspaces from ``config.json`` the way ``Workspace.from_config()`` does:
the start folder and each parent, each with its ``.azureml/`` and ``aml_config/`` subfolders."""
from __future__ import annotations

import json
import logging
import os
import re

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
SUBFOLDERS = ("", ".azureml", "aml_config")
_SCOPE_RE = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.MachineLearningServices/workspaces/([^/]+)/?$",
    re.IGNORECASE)


def config_candidates(start_dir: str) -> list[str]:
    """Every path searched, nearest first."""
    out = []
    d = os.path.abspath(start_dir)
    while True:
        out.extend(os.path.join(d, sub, CONFIG_NAME) if sub else os.path.join(d, CONFIG_NAME) for sub in SUBFOLDERS)
        parent = os.path.dirname(d)
        if parent == d:
            return out
        d = parent


def read_workspace_config(path: str) -> dict | None:
    """The workspace a config.json names, or None when it names none (other tools' config.json)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        log.debug("skipping %s: %s", path, e)
        return None
    if not isinstance(data, dict):
        return None
    sub, rg, ws = data.get("subscription_id"), data.get("resource_group"), data.get("workspace_name")
    scope = data.get("Scope") or data.get("scope")
    if isinstance(scope, str) and not (sub and rg and ws):
        m = _SCOPE_RE.match(scope.strip())
        if m:
            sub, rg, ws = m.groups()
    if not all(isinstance(v, str) and v.strip() for v in (sub, rg, ws)):
        return None
    out = {"subscription_id": sub.strip(), "resource_group": rg.strip(), "workspace_name": ws.strip(),
           "config_path": path}
    for extra in ("tenant_id", "location"):
        if isinstance(data.get(extra), str) and data[extra].strip():
            out[extra] = data[extra].strip()
    return out


def discover_workspaces(start_dir: str) -> list[dict]:
    """Workspaces named by config.json files from ``start_dir`` upwards, nearest first and each once.

    The first is the one ``Workspace.from_config()`` would use. Each is
    ``{subscription_id, resource_group, workspace_name, config_path[, tenant_id, location]}``.
    """
    seen: set[tuple[str, str, str]] = set()
    found = []
    for path in config_candidates(start_dir):
        if not os.path.isfile(path):
            continue
        ws = read_workspace_config(path)
        if ws is None:
            continue
        key = (ws["subscription_id"].lower(), ws["resource_group"].lower(), ws["workspace_name"].lower())
        if key not in seen:
            seen.add(key)
            found.append(ws)
    return found


def workspace_alias(name: str, taken: set[str] | frozenset[str]) -> str:
    """The id a discovered workspace is addressed by: its name, or with a suffix on a clash."""
    alias = name if name not in taken and name != "local" else None
    i = 2
    while alias is None:
        candidate = f"{name}-{i}"
        alias = candidate if candidate not in taken else None
        i += 1
    return alias
