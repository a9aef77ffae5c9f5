"""What a user may ask of Azure ML's two managed kinds, checked field by field before Azure is called.

The rules are Azure's own (name lengths, idle shutdown range, resource id shapes, password
complexity), so a request Azure would refuse is refused here with the field at fault, and
nothing reaches Azure.
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from ...core.errors import InvalidRequest
from ...core.models import SECRET, RESERVED_NAMES, Spec

GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_RG = r"[-\w.()]{0,89}[-\w()]"
SUBNET_RE = re.compile(
    rf"^/subscriptions/{GUID}/resourceGroups/{_RG}/providers/Microsoft\.Network/virtualNetworks/"
    r"[A-Za-z0-9][-\w.]{0,62}[\w]/subnets/[A-Za-z0-9][-\w.]{0,78}[\w]$",
    re.IGNORECASE)
USER_IDENTITY_RE = re.compile(
    rf"^/subscriptions/{GUID}/resourceGroups/{_RG}/providers/Microsoft\.ManagedIdentity/"
    r"userAssignedIdentities/[A-Za-z0-9][-\w]{2,127}$",
    re.IGNORECASE)
GUID_RE = re.compile(rf"^{GUID}$")
SIZE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{1,63}$")
INSTANCE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{2,23}$")
CLUSTER_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,15}$")
LINUX_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SSH_KEY_TYPES = ("ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
# Azure refuses these as a VM administrator name.
RESERVED_ADMIN_NAMES = frozenset({
    "administrator", "admin", "user", "user1", "test", "user2", "test1", "user3", "admin1", "1", "123", "a",
    "actuser", "adm", "admin2", "aspnet", "backup", "console", "david", "guest", "john", "owner", "root",
    "server", "sql", "support", "support_388945a0", "sys", "test2", "test3", "user4", "user5"})
DEFAULT_SIZE = "STANDARD_DS3_V2"

INSTANCE = "compute-instance"
CLUSTER = "compute-cluster"


def check_instance_name(name: Any, field: str = "/name") -> str:
    _common_name_checks(name, field)
    if not INSTANCE_NAME_RE.match(name):
        raise InvalidRequest(
            f"compute instance name {name!r} must be 3-24 letters, digits or '-', starting with a letter",
            field=field)
    if re.search(r"-\d*$", name):
        suggestion = re.sub(r"-(\d*)$", r"\1", name)
        raise InvalidRequest(
            f"compute instance name {name!r} may not end in '-' or in '-' followed only by digits "
            f"(Azure refuses names such as 'cpu-cluster-1'); try for example '{suggestion}'",
            field=field)
    return name


def check_cluster_name(name: Any, field: str = "/name") -> str:
    _common_name_checks(name, field)
    if not CLUSTER_NAME_RE.match(name):
        raise InvalidRequest(
            f"compute cluster name {name!r} must be 2-16 letters, digits or '-', starting with a letter",
            field=field)
    return name


def _common_name_checks(name: Any, field: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidRequest("name is required", field=field)
    if name.lower() in RESERVED_NAMES:
        raise InvalidRequest(
            f"'{name}' is reserved: it means this notebook's own kernel. Choose another name.",
            field=field, reason="reserved_name")


def check_ssh_public_key(v: str) -> str:
    parts = v.split(None, 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ValueError("must be an OpenSSH public key line such as 'ssh-ed25519 AAAA... comment' "
                         f"(types: {', '.join(SSH_KEY_TYPES)})")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key data is not valid base64") from None
    # The blob starts with the length-prefixed key type, which must agree with the line's.
    if len(blob) < 4 or blob[4:4 + int.from_bytes(blob[:4], "big")].decode("latin-1") != parts[0]:
        raise ValueError(f"the key data does not hold a {parts[0]} key")
    return v


def check_password(v: str) -> str:
    if not 12 <= len(v) <= 123:
        raise ValueError("must be 12-123 characters")
    classes = sum([any(c.islower() for c in v), any(c.isupper() for c in v), any(c.isdigit() for c in v),
                   any(not c.isalnum() for c in v)])
    if classes < 3:
        raise ValueError("must hold three of: a lowercase letter, an uppercase letter, a digit, a special character")
    return v


_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
                ("day of week", 0, 6))
_CRON_NAMES = {3: {m: i + 1 for i, m in enumerate(
    "jan feb mar apr may jun jul aug sep oct nov dec".split())},
    4: {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}}


def check_cron(expr: str) -> str:
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError("must have 5 fields: minute hour day-of-month month day-of-week, e.g. '0 18 * * 1-5'")
    for i, (text, (label, lo, hi)) in enumerate(zip(fields, _CRON_FIELDS)):
        for item in text.split(","):
            base, _, step = item.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                raise ValueError(f"{label}: step '{step}' must be a positive number")
            if base == "*":
                continue
            for bound in base.split("-", 1):
                value = _CRON_NAMES.get(i, {}).get(bound.lower()) if not bound.isdigit() else int(bound)
                if value is None or not lo <= value <= hi:
                    raise ValueError(f"{label}: '{bound}' is not in {lo}-{hi}")
    return expr


class Schedule(BaseModel):
    """A start or stop of a compute instance at times given by a cron expression."""
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    action: Literal["start", "stop"] = Field(description="Start or stop the instance.")
    cron: str = Field(description="Five-field cron expression, e.g. '0 18 * * 1-5'.")
    time_zone: str = Field("UTC", max_length=64, pattern=r"^[A-Za-z0-9 _+\-/().:]+$",
                           description="Time zone of the expression, e.g. 'UTC' or 'Pacific Standard Time'.")
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        return check_cron(v)


class AssignedUser(BaseModel):
    """The Microsoft Entra user an instance is created on behalf of."""
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    object_id: str = Field(pattern=GUID_RE.pattern, description="The user's object id.")
    tenant_id: str = Field(pattern=GUID_RE.pattern, description="The user's tenant id.")


def _subnet(v: str | None) -> str | None:
    if v is not None and not SUBNET_RE.match(v):
        raise ValueError("must be a subnet resource id: /subscriptions/<subscription id>/resourceGroups/<group>"
                         "/providers/Microsoft.Network/virtualNetworks/<vnet>/subnets/<subnet>")
    return v


def _size(v: str) -> str:
    if not SIZE_RE.match(v):
        raise ValueError("must be a VM size name such as 'Standard_DS3_v2'")
    return v


def _identity(v: str) -> str:
    if v == "system-assigned" or USER_IDENTITY_RE.match(v):
        return v
    raise ValueError("must be 'system-assigned' or a user-assigned identity resource id: /subscriptions/"
                     "<subscription id>/resourceGroups/<group>/providers/Microsoft.ManagedIdentity/"
                     "userAssignedIdentities/<name>")


IdentityRef = Annotated[str, AfterValidator(_identity)]

#: The checked field types both managed kinds share.
VmSize = Annotated[str, AfterValidator(_size)]
SubnetId = Annotated[str, AfterValidator(_subnet)]
SshPublicKey = Annotated[str, AfterValidator(check_ssh_public_key)]


class ComputeInstanceSpec(Spec):
    """A compute instance: one managed VM for one user (or on behalf of one)."""
    size: VmSize = Field(DEFAULT_SIZE, description="VM size, e.g. Standard_DS3_v2; see `jupyter compute sizes`.")
    ssh_public_access: bool = Field(False, description="Open SSH to the instance's public address.")
    ssh_public_key: SshPublicKey | None = Field(None, description="OpenSSH public key of the azureuser account.")
    idle_shutdown_minutes: int | None = Field(
        None, ge=15, le=4320, description="Stop the instance after this many idle minutes (15-4320).")
    schedules: list[Schedule] = Field(default_factory=list, max_length=50,
                                      description="Start and stop times, as cron expressions.")
    assigned_user: AssignedUser | None = Field(None, description="Create the instance on behalf of this user.")
    subnet: SubnetId | None = Field(None, description="Subnet resource id of a virtual network to join.")
    no_public_ip: bool = Field(False, description="No public IP address. Unless the workspace has a managed virtual "
                                                   "network, give a subnet too.")
    application_sharing: Literal["personal", "shared"] = Field(
        "shared", description="Whether the instance's applications are for its user only or shared.")

    updatable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _together(self) -> "ComputeInstanceSpec":
        if self.ssh_public_access and not self.ssh_public_key:
            raise InvalidRequest("ssh_public_key: is required when ssh_public_access is on",
                                 field="/ssh_public_key")
        return self


class ComputeClusterSpec(Spec):
    """A compute cluster (AmlCompute): nodes that scale between min_nodes and max_nodes."""
    size: VmSize = Field(DEFAULT_SIZE, description="VM size of each node; see `jupyter compute sizes`.")
    priority: Literal["dedicated", "low-priority"] = Field(
        "dedicated", description="Dedicated nodes, or cheaper low-priority nodes that may be preempted.")
    min_nodes: int = Field(0, ge=0, le=65000, description="Nodes kept even when idle (0 scales to zero).")
    max_nodes: int = Field(1, ge=1, le=65000, description="Most nodes the cluster scales to.")
    idle_seconds_before_scaledown: int = Field(
        120, ge=0, le=604800, description="Seconds a node stays idle before it is released.")
    admin_username: str | None = Field(None, description="Administrator account on each node.")
    admin_password: str | None = Field(None, description="Administrator password.", json_schema_extra=SECRET)
    ssh_public_key: SshPublicKey | None = Field(None, description="OpenSSH public key of the administrator.")
    remote_login_port_public_access: bool | None = Field(
        None, description="Open the nodes' SSH port publicly; unset lets Azure decide from the credentials.")
    subnet: SubnetId | None = Field(None, description="Subnet resource id of a virtual network to join.")
    no_public_ip: bool = Field(False, description="No public IP addresses on nodes. Unless the workspace has a "
                                                   "managed virtual network, give a subnet too.")
    identity: IdentityRef | None = Field(
        None, description="'system-assigned', or the resource id of a user-assigned managed identity. An update "
                          "adds it to those the cluster has.")

    updatable: ClassVar[frozenset[str]] = frozenset({"min_nodes", "max_nodes", "idle_seconds_before_scaledown",
                                                     "identity"})

    @field_validator("admin_password")
    @classmethod
    def _password(cls, v: str | None) -> str | None:
        return None if v is None else check_password(v)

    @field_validator("admin_username")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not LINUX_USER_RE.match(v):
            raise ValueError("must be 1-32 lowercase letters, digits, '_' or '-', starting with a letter or '_'")
        if v in RESERVED_ADMIN_NAMES:
            raise ValueError(f"'{v}' is reserved by Azure; choose another administrator name")
        return v

    @model_validator(mode="after")
    def _together(self) -> "ComputeClusterSpec":
        check_scale(self.min_nodes, self.max_nodes, field="/min_nodes")
        if (self.admin_password or self.ssh_public_key) and not self.admin_username:
            raise InvalidRequest("admin_username: is required with admin_password or ssh_public_key",
                                 field="/admin_username")
        if self.admin_username and not (self.admin_password or self.ssh_public_key):
            raise InvalidRequest("admin_password: give admin_password or ssh_public_key for admin_username",
                                 field="/admin_password")
        return self


class ClusterScale(BaseModel):
    """The part of a cluster that ``update`` may change."""
    model_config = ConfigDict(extra="forbid")
    min_nodes: int = ComputeClusterSpec.model_fields["min_nodes"]
    max_nodes: int = ComputeClusterSpec.model_fields["max_nodes"]
    idle_seconds_before_scaledown: int = ComputeClusterSpec.model_fields["idle_seconds_before_scaledown"]
    identity: IdentityRef | None = None


def check_scale(min_nodes: int, max_nodes: int, *, field: str) -> None:
    if min_nodes > max_nodes:
        raise InvalidRequest(f"min_nodes ({min_nodes}) may not exceed max_nodes ({max_nodes})", field=field)
