"""Compute that Azure ML does not create but attaches: each kind's spec, the resource id it
must point at, the body of the attach request, and what of Azure's answer a target shows.

Specs are checked here, field by field, so that a request Azure would refuse (a resource id of
the wrong provider or type, a missing credential) is refused with the field at fault before
Azure is called. Credentials (passwords, private keys, access tokens) are secret fields: they
go into the attach request and nowhere else.
"""
from __future__ import annotations

import re
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...core.errors import InvalidRequest
from ...core.models import RESERVED_NAMES, SECRET, Spec
from .specs import GUID_RE

KUBERNETES = "kubernetes"
VIRTUAL_MACHINE = "virtual-machine"
HDINSIGHT = "hdinsight"
SYNAPSE_SPARK = "synapse-spark"
DATABRICKS = "databricks"
DATA_LAKE_ANALYTICS = "data-lake-analytics"
DATA_FACTORY = "data-factory"
AKS = "aks"

#: kind -> Azure's computeType.
COMPUTE_TYPE = {
    KUBERNETES: "Kubernetes", VIRTUAL_MACHINE: "VirtualMachine", HDINSIGHT: "HDInsight",
    SYNAPSE_SPARK: "SynapseSpark", DATABRICKS: "Databricks", DATA_LAKE_ANALYTICS: "DataLakeAnalytics",
    DATA_FACTORY: "DataFactory", AKS: "AKS",
}
#: Kinds whose targets are machines a person signs in to: they have an address and an SSH port.
SSH_KINDS = (VIRTUAL_MACHINE, HDINSIGHT)

#: Kinds the docs describe that current Azure ML APIs no longer offer: what to use instead.
RETIRED = {
    "batch": ("Azure Batch is not a compute type of current Azure Machine Learning APIs, so it cannot be "
              "attached. For batch training and scoring use a compute cluster (--kind compute-cluster); "
              "for batch scoring of a deployed model, a batch endpoint on a compute cluster."),
    "aci": ("Azure Container Instances (ACI) is not a compute type of current Azure Machine Learning APIs, "
            "so it cannot be created or attached here. To serve a model use an online endpoint (managed, "
            "or on an attached kubernetes target)."),
}

_ID_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]*)/resourceGroups/(?P<rg>[^/]*)/providers/(?P<ns>[^/]*)/(?P<rest>[^?#]*?)/?$",
    re.IGNORECASE)
_RG_RE = re.compile(r"^[-\w.()]{0,89}[-\w()]$")
_NS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)+$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][-\w.]{0,259}$")
ATTACHED_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,15}$")
K8S_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
CPU_RE = re.compile(r"^(\d+(\.\d{1,3})?|\d+m)$")
MEMORY_RE = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")


class ResourceType:
    """A provider/type path that a kind's resource_id must have."""

    def __init__(self, namespace: str, types: tuple[str, ...], label: str, names: tuple[str, ...] = ("name",)):
        self.namespace = namespace
        self.types = types
        self.label = label
        self.names = names

    @property
    def path(self) -> str:
        return self.namespace + "".join(f"/{t}/<{n}>" for t, n in zip(self.types, self.names))

    def example(self) -> str:
        return f"/subscriptions/<subscription id>/resourceGroups/<resource group>/providers/{self.path}"

    def matches(self, namespace: str, types: list[str]) -> bool:
        return namespace.lower() == self.namespace.lower() and [t.lower() for t in types] == \
            [t.lower() for t in self.types]


_AKS = ResourceType("Microsoft.ContainerService", ("managedClusters",), "an AKS cluster", ("cluster",))
_ARC = ResourceType("Microsoft.Kubernetes", ("connectedClusters",), "an Azure Arc-enabled Kubernetes cluster",
                    ("cluster",))
#: What each kind attaches, as Azure names it.
RESOURCE_TYPES: dict[str, tuple[ResourceType, ...]] = {
    KUBERNETES: (_AKS, _ARC),
    VIRTUAL_MACHINE: (ResourceType("Microsoft.Compute", ("virtualMachines",), "a virtual machine", ("vm",)),),
    HDINSIGHT: (ResourceType("Microsoft.HDInsight", ("clusters",), "an HDInsight cluster", ("cluster",)),),
    SYNAPSE_SPARK: (ResourceType("Microsoft.Synapse", ("workspaces", "bigDataPools"), "a Synapse Spark pool",
                                 ("synapse workspace", "spark pool")),),
    DATABRICKS: (ResourceType("Microsoft.Databricks", ("workspaces",), "an Azure Databricks workspace",
                              ("databricks workspace",)),),
    DATA_LAKE_ANALYTICS: (ResourceType("Microsoft.DataLakeAnalytics", ("accounts",),
                                       "a Data Lake Analytics account", ("account",)),),
    DATA_FACTORY: (ResourceType("Microsoft.DataFactory", ("factories",), "a data factory", ("factory",)),),
    AKS: (_AKS,),
}
#: Resources people mistake for the one a kind wants, and what to give instead.
_NEAR_MISSES = [
    (ResourceType("Microsoft.Synapse", ("workspaces",), "a Synapse workspace"),
     "give one of its Spark pools: .../providers/Microsoft.Synapse/workspaces/<synapse workspace>/bigDataPools/"
     "<spark pool>"),
]


def parse_resource_id(rid: str) -> tuple[str, str, str, list[str], list[str]] | None:
    """(subscription, resource group, provider namespace, types, names) of a resource id, or None."""
    m = _ID_RE.match(rid)
    if not m:
        return None
    parts = m.group("rest").split("/")
    if len(parts) % 2 or not all(parts):
        return None
    return m.group("sub"), m.group("rg"), m.group("ns"), parts[0::2], parts[1::2]


def resource_name(rid: str | None) -> str | None:
    """The last name in a resource id (a VM's name, a pool's name)."""
    parsed = parse_resource_id(rid) if rid else None
    return parsed[4][-1] if parsed else None


def check_resource_id(kind: str, rid: Any) -> str:
    """The resource id, if it names a resource of the provider and type ``kind`` attaches.

    Raises ValueError with what is wrong and what a right one looks like.
    """
    wanted = RESOURCE_TYPES[kind]
    labels = " or ".join(t.label for t in wanted)
    shape = " or ".join(t.example() for t in wanted)
    if not isinstance(rid, str) or not rid:
        raise ValueError(f"must be the resource id of {labels}: {shape}")
    parsed = parse_resource_id(rid)
    if parsed is None:
        raise ValueError(f"'{rid}' is not an Azure resource id; {kind} needs that of {labels}: {shape}")
    sub, rg, ns, types, names = parsed
    if not GUID_RE.match(sub):
        raise ValueError(f"the subscription in it, '{sub}', is not a subscription id (a GUID such as "
                         "00000000-0000-0000-0000-000000000000)")
    if not _RG_RE.match(rg):
        raise ValueError(f"the resource group in it, '{rg}', is not a resource group name (1-90 letters, digits, "
                         "'-', '_', '.', '(' or ')', not ending in '.')")
    if not _NS_RE.match(ns):
        raise ValueError(f"the provider in it, '{ns}', is not a resource provider such as {wanted[0].namespace}")
    for name in names:
        if not _SEGMENT_RE.match(name) or name.endswith("."):
            raise ValueError(f"'{name}' in it is not a resource name")
    if any(t.matches(ns, types) for t in wanted):
        return rid
    got = f"{ns}/{'/'.join(types)}"
    for rt, advice in _NEAR_MISSES:
        if rt.matches(ns, types) and kind in _kinds_with(rt.namespace):
            raise ValueError(f"names {rt.label} ({got}), not {labels}; {advice}")
    others = [k for k, rts in RESOURCE_TYPES.items() if k != kind and any(t.matches(ns, types) for t in rts)]
    other_label = next((t.label for k in others for t in RESOURCE_TYPES[k] if t.matches(ns, types)), None)
    hint = f"; attach it with kind {' or '.join(repr(k) for k in others)}" if others else ""
    what = f"{other_label} ({got})" if other_label else f"a {got} resource"
    raise ValueError(f"names {what}, not {labels}; {kind} needs {shape}{hint}")


def _kinds_with(namespace: str) -> list[str]:
    return [k for k, rts in RESOURCE_TYPES.items() if any(t.namespace.lower() == namespace.lower() for t in rts)]


def check_attached_name(name: Any, field: str = "/name") -> str:
    """Azure's rule for the name of attached compute: 2-16 letters, digits or '-', from a letter."""
    if not isinstance(name, str) or not name:
        raise InvalidRequest("name is required", field=field)
    if name.lower() in RESERVED_NAMES:
        raise InvalidRequest(f"'{name}' is reserved: it means this notebook's own kernel. Choose another name.",
                             field=field, reason="reserved_name")
    if not ATTACHED_NAME_RE.match(name) or name.endswith("-"):
        raise InvalidRequest(f"attached compute name {name!r} must be 2-16 letters, digits or '-', starting with a "
                             "letter and not ending in '-'", field=field)
    return name


# -- specs ------------------------------------------------------------------------------------------
class AttachedSpec(Spec):
    """Existing compute attached to the workspace by its Azure resource id."""

    kind: ClassVar[str] = ""
    resource_id: str = Field(description="Azure resource id of the compute to attach.")

    #: Attached compute is changed where it lives, or by detaching and attaching again.
    updatable: ClassVar[frozenset[str]] = frozenset()

    @field_validator("resource_id", mode="before")
    @classmethod
    def _resource_id(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
        return check_resource_id(cls.kind, v)


def _no_control_characters(v: str | None) -> str | None:
    if v is not None and any(ord(c) < 32 and c not in "\n\r\t" for c in v):
        raise ValueError("holds control characters")
    return v


def check_private_key(text: str) -> str:
    """An unencrypted private key in PEM or OpenSSH form. Messages never quote the key."""
    body = text.strip()
    m = re.match(r"^-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----\s.*\s-----END \1-----$", body, re.DOTALL)
    if not m:
        raise ValueError("must be the text of a private key, from '-----BEGIN ... PRIVATE KEY-----' to "
                         "'-----END ... PRIVATE KEY-----' (on the command line, --ssh-private-key names the key file)")
    if m.group(1) == "ENCRYPTED PRIVATE KEY" or "Proc-Type: 4,ENCRYPTED" in body:
        raise ValueError("is protected by a passphrase, which Azure ML cannot use; give an unencrypted key")
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:  # the shape check above is then all there is
        return body + "\n"
    data = (body + "\n").encode()
    try:
        if m.group(1) == "OPENSSH PRIVATE KEY":
            serialization.load_ssh_private_key(data, password=None)
        else:
            serialization.load_pem_private_key(data, password=None)
    except Exception as e:  # the parser's own words are not repeated: they could quote the key
        if isinstance(e, TypeError) or "password" in str(e).lower() or "encrypted" in str(e).lower():
            raise ValueError("is protected by a passphrase, which Azure ML cannot use; give an unencrypted key") \
                from None
        raise ValueError("is not a private key that can be read (damaged or of an unknown type)") from None
    return body + "\n"


class SshAccessSpec(AttachedSpec):
    """Compute a person signs in to over SSH: the account Azure ML uses, with a password or a key."""

    ssh_port: int = Field(22, ge=1, le=65535, description="SSH port of the machine.")
    admin_username: str = Field(description="Account Azure ML signs in with over SSH.")
    admin_password: str | None = Field(None, min_length=1, max_length=1024, json_schema_extra=SECRET,
                                       description="Password of the account (or give ssh_private_key).")
    ssh_private_key: str | None = Field(None, max_length=16384, json_schema_extra=SECRET,
                                        description="Unencrypted private key of the account, as text (or give "
                                                    "admin_password).")

    @field_validator("admin_username")
    @classmethod
    def _user(cls, v: str) -> str:
        if not USER_RE.match(v):
            raise ValueError("must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or '_'")
        return v

    @field_validator("admin_password")
    @classmethod
    def _password(cls, v: str | None) -> str | None:
        if v is not None and ("\n" in v or "\r" in v):
            raise ValueError("may not hold a line break")
        return _no_control_characters(v)

    @field_validator("ssh_private_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        return None if v is None else check_private_key(v)

    @model_validator(mode="after")
    def _credentials(self) -> "SshAccessSpec":
        if not self.admin_password and not self.ssh_private_key:
            raise InvalidRequest(f"admin_password: give admin_password or ssh_private_key for '{self.admin_username}' "
                                 "to sign in with", field="/admin_password")
        return self


class VirtualMachineSpec(SshAccessSpec):
    """A Linux virtual machine (for example a Data Science VM) attached for training."""
    kind: ClassVar[str] = VIRTUAL_MACHINE


class HDInsightSpec(SshAccessSpec):
    """An HDInsight cluster attached for Spark jobs."""
    kind: ClassVar[str] = HDINSIGHT


class Quantities(BaseModel):
    """Kubernetes resource amounts."""
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    cpu: str | None = Field(None, description="CPU cores, e.g. '2' or '500m'.")
    memory: str | None = Field(None, description="Memory, e.g. '8Gi' or '512Mi'.")
    gpu: int | None = Field(None, ge=0, le=64, description="NVIDIA GPUs (nvidia.com/gpu).")

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = f"{v:g}"
        if v is not None and not (isinstance(v, str) and CPU_RE.match(v)):
            raise ValueError("must be a CPU amount such as '2', '0.5' or '500m'")
        return v

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if v is not None and not (isinstance(v, str) and MEMORY_RE.match(v)):
            raise ValueError("must be a memory amount such as '8Gi' or '512Mi'")
        return v

    def body(self) -> dict[str, str]:
        out = {}
        if self.cpu is not None:
            out["cpu"] = self.cpu
        if self.memory is not None:
            out["memory"] = self.memory
        if self.gpu is not None:
            out["nvidia.com/gpu"] = str(self.gpu)
        return out


class InstanceType(BaseModel):
    """A shape of pod Azure ML jobs may ask for on a Kubernetes target."""
    model_config = ConfigDict(extra="forbid")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods must match.")
    requests: Quantities = Field(default_factory=Quantities, description="Resources each pod is given.")
    limits: Quantities = Field(default_factory=Quantities, description="Most resources each pod may use.")


class KubernetesSpec(AttachedSpec):
    """An AKS or Azure Arc-enabled Kubernetes cluster with the Azure ML extension installed."""
    kind: ClassVar[str] = KUBERNETES
    namespace: str = Field("default", description="Kubernetes namespace Azure ML runs its workloads in.")
    instance_types: dict[str, InstanceType] = Field(
        default_factory=dict, description="Instance types by name: node selector, requests and limits.")
    default_instance_type: str | None = Field(
        None, description="Instance type used when a job names none; the first listed when unset.")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if not K8S_NAME_RE.match(v):
            raise ValueError("must be a Kubernetes namespace: 1-63 lowercase letters, digits or '-', starting and "
                             "ending with a letter or digit")
        return v

    @model_validator(mode="after")
    def _types(self) -> "KubernetesSpec":
        for name in self.instance_types:
            if not K8S_NAME_RE.match(name):
                raise InvalidRequest(f"instance_types: {name!r} must be 1-63 lowercase letters, digits or '-', "
                                     "starting and ending with a letter or digit",
                                     field=f"/instance_types/{name.replace('~', '~0').replace('/', '~1')}")
        if self.default_instance_type is not None and self.default_instance_type not in self.instance_types:
            known = ", ".join(self.instance_types) or "none are given"
            raise InvalidRequest(f"default_instance_type: '{self.default_instance_type}' is not one of "
                                 f"instance_types ({known})", field="/default_instance_type")
        return self


class SynapseSparkSpec(AttachedSpec):
    """An Apache Spark pool of an Azure Synapse Analytics workspace."""
    kind: ClassVar[str] = SYNAPSE_SPARK


class DatabricksSpec(AttachedSpec):
    """An Azure Databricks workspace, used by pipelines' Databricks steps."""
    kind: ClassVar[str] = DATABRICKS
    access_token: str = Field(min_length=1, max_length=1024, json_schema_extra=SECRET,
                              description="Databricks personal access token Azure ML runs jobs with.")

    @field_validator("access_token")
    @classmethod
    def _token(cls, v: str) -> str:
        if any(c.isspace() for c in v):
            raise ValueError("may not hold spaces or line breaks")
        return _no_control_characters(v)


class DataLakeAnalyticsSpec(AttachedSpec):
    """An Azure Data Lake Analytics account, used by pipelines' U-SQL steps."""
    kind: ClassVar[str] = DATA_LAKE_ANALYTICS


class DataFactorySpec(AttachedSpec):
    """An Azure Data Factory, used by pipelines' data transfer steps."""
    kind: ClassVar[str] = DATA_FACTORY


class AKSSpec(AttachedSpec):
    """An AKS cluster attached for (legacy) model deployment."""
    kind: ClassVar[str] = AKS


SPEC_MODELS: dict[str, type[AttachedSpec]] = {
    KUBERNETES: KubernetesSpec, VIRTUAL_MACHINE: VirtualMachineSpec, HDINSIGHT: HDInsightSpec,
    SYNAPSE_SPARK: SynapseSparkSpec, DATABRICKS: DatabricksSpec, DATA_LAKE_ANALYTICS: DataLakeAnalyticsSpec,
    DATA_FACTORY: DataFactorySpec, AKS: AKSSpec,
}
DESCRIPTIONS = {
    KUBERNETES: "Kubernetes (AKS or Azure Arc) attached to the workspace for training and inference.",
    VIRTUAL_MACHINE: "A virtual machine attached to the workspace for training over SSH.",
    HDINSIGHT: "An HDInsight cluster attached to the workspace for Spark jobs.",
    SYNAPSE_SPARK: "A Synapse Spark pool attached to the workspace for data preparation.",
    DATABRICKS: "An Azure Databricks workspace attached for pipeline steps.",
    DATA_LAKE_ANALYTICS: "A Data Lake Analytics account attached for U-SQL pipeline steps.",
    DATA_FACTORY: "A Data Factory attached for pipeline data transfer.",
    AKS: "An AKS cluster attached for (legacy) model deployment.",
}
_SUB = "00000000-0000-0000-0000-000000000000"
EXAMPLES = {
    KUBERNETES: [{"name": "k8s", "resource_id": f"/subscriptions/{_SUB}/resourceGroups/rg/providers/"
                                                 "Microsoft.ContainerService/managedClusters/aks-ml",
                  "namespace": "azureml",
                  "instance_types": {"gpu-small": {"limits": {"cpu": "4", "memory": "16Gi", "gpu": 1}}}}],
    VIRTUAL_MACHINE: [{"name": "dsvm", "resource_id": f"/subscriptions/{_SUB}/resourceGroups/rg/providers/"
                                                      "Microsoft.Compute/virtualMachines/dsvm",
                       "ssh_port": 22, "admin_username": "azureuser"}],
}


# -- Azure's side -----------------------------------------------------------------------------------
def attach_body(kind: str, spec: AttachedSpec, location: str | None) -> dict:
    """The PUT body that attaches ``spec``'s resource; the only place secrets are put."""
    inner: dict[str, Any] | None = None
    if isinstance(spec, SshAccessSpec):
        account = {"username": spec.admin_username}
        if spec.admin_password:
            account["password"] = spec.admin_password
        if spec.ssh_private_key:
            account["privateKeyData"] = spec.ssh_private_key
        inner = {"sshPort": spec.ssh_port, "administratorAccount": account}
    elif isinstance(spec, KubernetesSpec):
        inner = {"namespace": spec.namespace}
        if spec.instance_types:
            inner["defaultInstanceType"] = spec.default_instance_type or next(iter(spec.instance_types))
            inner["instanceTypes"] = {
                name: {**({"nodeSelector": dict(t.node_selector)} if t.node_selector else {}),
                       "resources": {"requests": t.requests.body(), "limits": t.limits.body()}}
                for name, t in spec.instance_types.items()}
    elif isinstance(spec, DatabricksSpec):
        inner = {"databricksAccessToken": spec.access_token}
    props: dict[str, Any] = {"computeType": COMPUTE_TYPE[kind], "resourceId": spec.resource_id}
    if spec.description:
        props["description"] = spec.description
    if inner is not None:
        props["properties"] = inner
    body: dict[str, Any] = {"properties": props}
    if location:
        body["location"] = location
    if spec.tags:
        body["tags"] = dict(spec.tags)
    return body


PORTALS = {"AzureCloud": "https://portal.azure.com", "AzureChinaCloud": "https://portal.azure.cn",
           "AzureUSGovernment": "https://portal.azure.us"}


def portal_url(resource_id: str, cloud: str = "AzureCloud") -> str:
    return f"{PORTALS.get(cloud, PORTALS['AzureCloud'])}/#resource{quote(resource_id, safe='/-_.()')}/overview"


def attached_properties(ctype: str, p: dict, inner: dict, cloud: str = "AzureCloud") -> dict[str, Any]:
    """What a target of attached compute shows. Only named fields are read, so whatever
    credentials Azure might echo (administratorAccount, databricksAccessToken) never appear."""
    rid = p.get("resourceId")
    props: dict[str, Any] = {"attached_resource_id": rid, "portal_url": portal_url(rid, cloud) if rid else None,
                             "attached": True}
    if ctype in ("VirtualMachine", "HDInsight"):
        props["address"] = inner.get("address")
        props["ssh_port"] = inner.get("sshPort")
        props["admin_username"] = (inner.get("administratorAccount") or {}).get("username")
        if ctype == "VirtualMachine":
            props["notebook_server_port"] = inner.get("notebookServerPort")
    elif ctype == "Kubernetes":
        props["namespace"] = inner.get("namespace")
        props["default_instance_type"] = inner.get("defaultInstanceType")
        types = inner.get("instanceTypes") or {}
        if types:
            props["instance_types"] = {
                name: {k: v for k, v in {
                    "node_selector": t.get("nodeSelector") or None,
                    "requests": _quantities((t.get("resources") or {}).get("requests")),
                    "limits": _quantities((t.get("resources") or {}).get("limits"))}.items() if v}
                for name, t in types.items() if isinstance(t, dict)}
    elif ctype == "Databricks":
        props["workspace_url"] = inner.get("workspaceUrl")
    elif ctype == "SynapseSpark":
        for src, dst in (("poolName", "pool_name"), ("workspaceName", "synapse_workspace"),
                         ("sparkVersion", "spark_version"), ("nodeCount", "node_count"), ("nodeSize", "node_size"),
                         ("nodeSizeFamily", "node_size_family")):
            props[dst] = inner.get(src)
        scale = inner.get("autoScaleProperties") or {}
        if scale.get("enabled"):
            props["autoscale"] = {"min_nodes": scale.get("minNodeCount"), "max_nodes": scale.get("maxNodeCount")}
        pause = inner.get("autoPauseProperties") or {}
        if pause.get("enabled"):
            props["auto_pause_minutes"] = pause.get("delayInMinutes")
    elif ctype == "DataLakeAnalytics":
        props["data_lake_store_account"] = inner.get("dataLakeStoreAccountName")
    elif ctype == "AKS":
        for src, dst in (("clusterFqdn", "cluster_fqdn"), ("agentCount", "agent_count"),
                         ("clusterPurpose", "cluster_purpose"), ("loadBalancerType", "load_balancer_type")):
            props[dst] = inner.get(src)
        ssl = inner.get("sslConfiguration") or {}
        if ssl.get("status"):
            props["tls"] = ssl["status"].lower()
    return {k: v for k, v in props.items() if v is not None}


def _quantities(d: Any) -> dict[str, Any] | None:
    if not isinstance(d, dict) or not d:
        return None
    out: dict[str, Any] = {k: d[k] for k in ("cpu", "memory") if d.get(k) is not None}
    if d.get("nvidia.com/gpu") is not None:
        try:
            out["gpu"] = int(d["nvidia.com/gpu"])
        except (TypeError, ValueError):
            out["gpu"] = d["nvidia.com/gpu"]
    return out or None


def same_resource(a: str | None, b: str | None) -> bool:
    """Resource ids are case-insensitive in Azure."""
    return bool(a and b) and a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()
