"""The shapes jupyter_compute speaks in: targets, their specs per kind, nodes, sizes, usage and operations.

Every face (REST, CLI, magics, widgets) serialises these same pydantic models, so a field
means the same thing everywhere.
"""
from __future__ import annotations

import enum
import re
import weakref
from datetime import datetime
from typing import Any, ClassVar

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .clock import utcnow  # noqa: F401 (where the rest of the package takes it from)

RESERVED_NAMES = frozenset({"local"})
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")


class State(str, enum.Enum):
    creating = "creating"
    starting = "starting"
    running = "running"
    stopping = "stopping"
    stopped = "stopped"
    restarting = "restarting"
    deleting = "deleting"
    failed = "failed"
    unknown = "unknown"

    @property
    def transitional(self) -> bool:
        return self in TRANSITIONAL


TRANSITIONAL = frozenset({State.creating, State.starting, State.stopping, State.restarting, State.deleting})


class Size(BaseModel):
    name: str
    vcpus: int | None = None
    memory_gb: float | None = None
    gpus: int | None = None
    low_priority: bool | None = None
    price_per_hour: float | None = None
    compute_types: list[str] = Field(default_factory=list)
    #: Nodes of this size the quota still allows, where the backend knows its quota.
    quota_available: int | None = None


class NodeCounts(BaseModel):
    current: int | None = None
    min: int | None = None
    max: int | None = None
    idle: int | None = None
    running: int | None = None
    preparing: int | None = None
    unusable: int | None = None
    leaving: int | None = None
    preempted: int | None = None


class ErrorDetail(BaseModel):
    message: str
    code: str | None = None
    at: datetime | None = None


class Target(BaseModel):
    name: str
    workspace: str
    kind: str
    managed: bool
    state: State
    provider_state: str | None = None
    size: Size | None = None
    nodes: NodeCounts | None = None
    created: datetime
    modified: datetime
    idle_shutdown_at: datetime | None = None
    errors: list[ErrorDetail] = Field(default_factory=list)
    properties: dict[str, Any] = Field(default_factory=dict)


#: The JSON of each target a backend keeps (``keep``), by the target's id; gone with the target.
_kept_json: dict[int, bytes] = {}


def keep(target: Target) -> Target:
    """Mark ``target`` as one its backend keeps and hands out again while its row is unchanged, and
    that nobody changes: its JSON is made now, once, rather than at every list."""
    key = id(target)
    _kept_json[key] = pydantic_core.to_json(target)
    # Run as the target is freed, before its id can be anyone else's.
    weakref.finalize(target, _kept_json.pop, key, None)
    return target


def targets_json(targets: list[Target]) -> bytes:
    """``{"targets": [...]}`` as JSON; kept targets cost a copy of their bytes."""
    return b'{"targets":[' + b",".join([_kept_json.get(id(t)) or pydantic_core.to_json(t) for t in targets]) + b"]}"


class Node(BaseModel):
    id: str
    state: str
    address: str | None = None
    port: int | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class Usage(BaseModel):
    name: str
    unit: str
    current: float
    limit: float | None = None


class OperationStatus(str, enum.Enum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class Operation(BaseModel):
    id: str
    target: str
    workspace: str
    action: str
    status: OperationStatus
    progress: str = ""
    error: dict[str, Any] | None = None
    started: datetime
    ended: datetime | None = None


class WorkspaceInfo(BaseModel):
    id: str
    kind: str
    description: str
    default: bool = False
    properties: dict[str, Any] = Field(default_factory=dict)


class KindInfo(BaseModel):
    name: str
    family: str
    description: str
    managed: bool
    operations: list[str]
    create_schema: dict[str, Any] | None = None
    attach_schema: dict[str, Any] | None = None
    update_fields: list[str] = Field(default_factory=list)
    examples: list[dict[str, Any]] = Field(default_factory=list)
    keeps_variables: bool = Field(False, description="A running target of this kind holds a kernel's variables, "
                                                     "which stop and restart lose.")


# --- Specs -------------------------------------------------------------------------------------
# A spec holds what a user chose for a target; field names are the CLI's option names in
# snake_case. Secrets are marked with json_schema_extra={"writeOnly": True, "format": "password"}
# and are kept out of the store by ``Spec.public()``.

SECRET = {"writeOnly": True, "format": "password"}


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    description: str | None = Field(None, max_length=1024, description="Free text shown in lists.")
    tags: dict[str, str] = Field(default_factory=dict, description="Labels, as KEY=VALUE on the command line.")

    #: Fields that may change with ``update`` (PATCH); other fields are fixed at create.
    updatable: ClassVar[frozenset[str]] = frozenset({"description", "tags"})

    @field_validator("tags")
    @classmethod
    def _tags_ok(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > 50:
            raise ValueError("at most 50 tags")
        for k, val in v.items():
            if not k or len(k) > 128 or any(ord(c) < 32 for c in k + val) or len(val) > 256:
                raise ValueError(f"tag {k!r} must be 1-128 printable characters with a value of at most 256")
        return v

    @classmethod
    def secret_fields(cls) -> frozenset[str]:
        return frozenset(
            n for n, f in cls.model_fields.items()
            if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("writeOnly")
        )

    def public(self) -> dict[str, Any]:
        """The spec without secrets: what may be stored, returned, logged or emitted."""
        return self.model_dump(mode="json", exclude=set(self.secret_fields()), exclude_none=True)

    def secrets(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in self.secret_fields() if getattr(self, k) is not None}


def check_name(name: Any, *, field: str = "/name") -> str:
    """Names shared by every local kind; backends with stricter rules check theirs too."""
    from .errors import InvalidRequest

    if not isinstance(name, str) or not name:
        raise InvalidRequest("name is required", field=field)
    if name.lower() in RESERVED_NAMES:
        raise InvalidRequest(
            f"'{name}' is reserved: it means this notebook's own kernel. Choose another name.",
            field=field, reason="reserved_name")
    if not NAME_RE.match(name):
        raise InvalidRequest(
            f"name {name!r} must start with a letter and hold 1-63 letters, digits, '-' or '_'",
            field=field)
    return name
