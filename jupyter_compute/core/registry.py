"""The families of compute this process knows: those installed, found through the
``jupyter_compute.families`` entry point, plus any named in ``c.ComputeConfig.families``.

A family is a ``Family``: the backends it adds to the built-in ``local`` workspace, and, for a
family that brings workspaces of its own (a cloud service's workspaces, say), a ``WorkspaceProvider``.
The core names no family; a third party adds one by publishing an entry point.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .errors import InvalidRequest

if TYPE_CHECKING:
    from .backend import Backend

# ``Compute``, ``Workspace`` and ``Settings`` (core.workspace) are typed as Any here: core.workspace
# imports this module, and the layout allows no cycle, not even one for type checkers only.

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "jupyter_compute.families"


class WorkspaceProvider:
    """What a family that brings workspaces of its own does for ``Compute``."""

    #: The ``kind`` of the workspaces it makes (``WorkspaceInfo.kind``).
    kind: str = ""

    def __init__(self, compute: Any):
        self.compute = compute

    def entries(self, stored: list[dict]) -> list[tuple[dict, str]]:
        """Workspace configurations and where each came from ("config", "added", "discovered", …);
        ``stored`` are the workspaces added with ``workspace add`` (the store's rows)."""
        return []

    def key(self, cfg: dict) -> tuple:
        """What makes two configurations the same workspace."""
        return (cfg.get("alias"),)

    def alias(self, cfg: dict, taken: set[str]) -> str:
        return cfg["alias"]

    def make(self, alias: str, cfg: dict, source: str) -> Any:
        raise NotImplementedError

    def check_new(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The configuration of a workspace to add, checked before anything is stored."""
        raise InvalidRequest(f"workspaces of kind '{self.kind}' cannot be added here")

    def host_info(self) -> dict | None:
        """The machine this process runs on, when it is one of this family's targets (shown pinned)."""
        return None

    def forget(self, alias: str) -> None:
        """A workspace of this provider was removed."""

    def default_alias(self) -> str | None:
        """The workspace to use when none is named and none is configured, if this provider has one."""
        return None

    def attach_server(self, serverapp: Any) -> None:
        """Called by the server extension once, with the Jupyter server it runs in."""

    #: Interactive sign-ins to this provider's workspaces (start, state, cancel), or None.
    sign_ins: Any = None

    def no_sign_in(self, workspace: Any) -> Exception:
        """The refusal of a sign-in to a workspace of another kind, in this provider's words."""
        return InvalidRequest(f"workspace '{workspace.id}' has no interactive sign-in", reason="no_sign_in")

    async def close(self) -> None:
        pass


@dataclass
class Family:
    """One family of compute, as registered."""
    name: str
    #: Backend classes of the built-in ``local`` workspace.
    backends: Sequence[type["Backend"]] = ()
    #: Makes the provider of this family's own workspaces, if it has any.
    workspaces: Callable[[Any], WorkspaceProvider] | None = None
    #: Where the family's kinds come in lists: lower first, then by name.
    order: int = 100


def _load_path(path: str) -> Any:
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def _as_family(obj: Any, where: str) -> Family:
    if callable(obj) and not isinstance(obj, Family):
        obj = obj()
    if not isinstance(obj, Family):
        raise TypeError(f"{where} is not a jupyter_compute Family")
    return obj


def load_families(settings: Any) -> list[Family]:
    """The families to load, installed ones first, in a stable order; one that cannot be imported
    (its optional dependencies missing) is left out with a log line rather than failing the rest."""
    from importlib.metadata import entry_points

    found: dict[str, Family] = {}
    sources: list[tuple[str, Callable[[], Any]]] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        sources.append((f"entry point {ep.name} ({ep.value})", ep.load))
    for path in settings.compute.families:
        sources.append((f"c.ComputeConfig.families entry {path!r}", lambda p=path: _load_path(p)))
    disabled = set(settings.compute.disabled_families)
    for where, load in sources:
        try:
            family = _as_family(load(), where)
        except ImportError as e:
            log.debug("compute family from %s unavailable: %s", where, e)
            continue
        except Exception:
            log.exception("jupyter_compute: could not load the compute family from %s", where)
            continue
        if family.name in disabled or family.name in found:
            continue
        found[family.name] = family
    return sorted(found.values(), key=lambda f: (f.order, f.name))
