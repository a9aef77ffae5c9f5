"""Attached Azure ML compute against the project's Resource Manager stand-in: attach, list, show,
nodes and detach of every kind, the duplicate-attach guard, validation before Azure is called,
secrets that reach Azure and nothing else, retired kinds, and Azure's own refusals.

The real managed-identity credential and the real azure-mgmt-machinelearningservices aio client
run throughout; only loopback is reachable.
"""
from __future__ import annotations

import json
import logging

import pytest

from tests.support import files_holding

from jupyter_compute.families.azureml.attached import RETIRED, SPEC_MODELS, check_private_key
from jupyter_compute.families.azureml.resources import state_of, to_target
from jupyter_compute.families.azureml.backend import AlreadyAttached
from jupyter_compute.families.azureml.arm import AzureError
from jupyter_compute.core.errors import Conflict, InvalidRequest
from jupyter_compute.core.models import State
from tests.standins.azure import arm, azure_env, azure_workspace, network_guard, workspace_for  # noqa: F401  (fixtures)

# Each test is a few requests to a stand-in on loopback: fail rather than hang.
pytestmark = pytest.mark.timeout(60)

SUB = "8f3a2c1d-4b5e-4f60-9a7b-1c2d3e4f5a6b"
OTHER_SUB = "2b7c9d10-5e6f-4a1b-8c2d-3e4f5a6b7c8d"
MARKER = "Marker!Secret-5c2e91b7"


def rid(provider_path: str, rg: str = "rg-res", sub: str = SUB) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{provider_path}"


def private_key() -> str:
    """A new unencrypted private key, in OpenSSH form."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    text = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()
    return text


def encrypted_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")).decode()


AKS_ID = rid("Microsoft.ContainerService/managedClusters/aks-ml")
ARC_ID = rid("Microsoft.Kubernetes/connectedClusters/arc-ml")
VM_ID = rid("Microsoft.Compute/virtualMachines/dsvm-01")
HDI_ID = rid("Microsoft.HDInsight/clusters/hdi-spark")
POOL_ID = rid("Microsoft.Synapse/workspaces/syn-ws/bigDataPools/pool1")
DBX_ID = rid("Microsoft.Databricks/workspaces/dbx-ws")
ADLA_ID = rid("Microsoft.DataLakeAnalytics/accounts/adlaacct")
ADF_ID = rid("Microsoft.DataFactory/factories/adf-ml")

#: kind -> (a spec with the marker as its secret where the kind has one, computeType, the secret's
#: place in the PUT body or None).
CASES = {
    "kubernetes": ({"resource_id": AKS_ID, "namespace": "azureml"}, "Kubernetes", None),
    "virtual-machine": ({"resource_id": VM_ID, "ssh_port": 2222, "admin_username": "azureuser",
                         "admin_password": MARKER}, "VirtualMachine", "password"),
    "hdinsight": ({"resource_id": HDI_ID, "admin_username": "sshuser", "admin_password": MARKER},
                  "HDInsight", "password"),
    "synapse-spark": ({"resource_id": POOL_ID}, "SynapseSpark", None),
    "databricks": ({"resource_id": DBX_ID, "access_token": "dapi" + MARKER}, "Databricks", "databricksAccessToken"),
    "data-lake-analytics": ({"resource_id": ADLA_ID}, "DataLakeAnalytics", None),
    "data-factory": ({"resource_id": ADF_ID}, "DataFactory", None),
    "aks": ({"resource_id": AKS_ID}, "AKS", None),
}


def leaked(marker: str, *texts: str) -> list[str]:
    return [t[:200] for t in texts if marker in t]


# -- each kind, end to end --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(CASES))
async def test_attach_list_show_detach(arm, azure_workspace, tmp_path, caplog, kind):
    spec, ctype, secret_at = CASES[kind]
    caplog.set_level(logging.DEBUG)
    ws, _ = azure_workspace
    progress: list[str] = []
    op = await ws.attach("att1", kind, dict(spec), wait=True, on_progress=lambda o: progress.append(o.progress))
    shown, listed = await ws.get("att1"), await ws.list()
    nodes = await ws.nodes("att1") if kind in ("virtual-machine", "hdinsight") else []
    stored = await ws.store.get_target(ws.id, "att1")
    gone = await ws.detach("att1", wait=True, on_progress=lambda o: progress.append(o.progress))
    after = [t.name for t in await ws.list()]
    assert op.status.value == "succeeded", op.error

    put = arm.arm_requests("PUT")[-1]
    props = put.body["properties"]
    assert (props["computeType"], props["resourceId"]) == (ctype, spec["resource_id"])
    assert put.body["location"] == "eastus"
    if secret_at:  # the secret went to Azure, in the field Azure reads it from
        inner = props["properties"]
        got = inner["administratorAccount"][secret_at] if "administratorAccount" in inner else inner[secret_at]
        assert MARKER in got and MARKER in json.dumps(arm.secrets_of("att1"))

    assert (shown.kind, shown.managed, shown.state, shown.provider_state) == (kind, False, State.running, "Succeeded")
    assert shown.properties["attached_resource_id"] == spec["resource_id"]
    assert shown.properties["portal_url"] == f"https://portal.azure.com/#resource{spec['resource_id']}/overview"
    assert [t.name for t in listed] == ["att1"] and listed[0].kind == kind
    assert stored["managed"] is False and stored["kind"] == kind
    assert stored["spec"]["resource_id"] == spec["resource_id"]
    if kind in ("virtual-machine", "hdinsight"):
        port = spec.get("ssh_port", 22)
        assert [(n.address, n.port) for n in nodes] == [(shown.properties["address"], port)]
        assert nodes[0].properties == {"admin_username": spec["admin_username"]}

    # Detach leaves the resource alone, and says so.
    assert gone.status.value == "succeeded", gone.error
    delete = arm.arm_requests("DELETE")[-1]
    assert delete.query["underlyingResourceAction"] == "Detach"
    assert arm.deleted_resources == []
    assert any("left as it is" in p for p in progress) and progress[-1] == "detached"
    assert after == []

    # The marker reached Azure and nothing else.
    assert not leaked(MARKER, op.model_dump_json(), gone.model_dump_json(), shown.model_dump_json(),
                      json.dumps([t.model_dump(mode="json") for t in listed]), json.dumps(stored, default=str),
                      json.dumps([n.model_dump(mode="json") for n in nodes]), "\n".join(progress), caplog.text)
    assert not files_holding(tmp_path, MARKER)


async def test_secretless_kinds_refuse_a_secret_without_repeating_it(arm, azure_workspace):
    ws, _ = azure_workspace
    for kind, (_, _, secret_at) in CASES.items():
        if secret_at:
            continue
        for field in ("access_token", "admin_password"):
            with pytest.raises(InvalidRequest) as e:
                await ws.attach("att1", kind, {**CASES[kind][0], field: MARKER})
            assert e.value.field == f"/{field}" and MARKER not in e.value.message
    assert arm.requests == [] and arm.token_requests == []


async def test_virtual_machine_with_a_private_key(arm, azure_workspace, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    key = private_key()
    ws, _ = azure_workspace
    op = await ws.attach("vm1", "virtual-machine", {"resource_id": VM_ID, "admin_username": "azureuser",
                                                     "ssh_private_key": key}, wait=True)
    t = await ws.get("vm1")
    assert op.status.value == "succeeded", op.error
    account = arm.arm_requests("PUT")[-1].body["properties"]["properties"]["administratorAccount"]
    assert account == {"username": "azureuser", "privateKeyData": key}
    body = key.splitlines()[1]
    assert not leaked(body, op.model_dump_json(), t.model_dump_json(), caplog.text)
    assert not files_holding(tmp_path, body)


async def test_kubernetes_namespace_and_instance_types(arm, azure_workspace):
    ws, _ = azure_workspace
    spec = {"resource_id": ARC_ID, "namespace": "team-a", "instance_types": {
        "cpu-small": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 1, "memory": "2Gi"}},
        "gpu-one": {"node_selector": {"accelerator": "nvidia"}, "limits": {"cpu": "4", "memory": "16Gi", "gpu": 1}}},
        "default_instance_type": "gpu-one"}
    await ws.attach("arc", "kubernetes", spec, wait=True)
    t = await ws.get("arc")
    inner = arm.arm_requests("PUT")[-1].body["properties"]["properties"]
    assert inner == {"namespace": "team-a", "defaultInstanceType": "gpu-one", "instanceTypes": {
        "cpu-small": {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                    "limits": {"cpu": "1", "memory": "2Gi"}}},
        "gpu-one": {"nodeSelector": {"accelerator": "nvidia"},
                    "resources": {"requests": {}, "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}}}}}
    assert t.properties["namespace"] == "team-a" and t.properties["default_instance_type"] == "gpu-one"
    assert t.properties["instance_types"]["gpu-one"] == {"node_selector": {"accelerator": "nvidia"},
                                                         "limits": {"cpu": "4", "memory": "16Gi", "gpu": 1}}


async def test_delete_of_an_attached_target_detaches_it(arm, azure_workspace):
    ws, _ = azure_workspace
    await ws.attach("adf", "data-factory", {"resource_id": ADF_ID}, wait=True)
    op = await ws.delete("adf", wait=True)
    assert (op.action, op.status.value) == ("detach", "succeeded")
    assert arm.arm_requests("DELETE")[-1].query["underlyingResourceAction"] == "Detach"
    assert arm.deleted_resources == []


# -- the duplicate-attach guard ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(CASES))
async def test_attaching_one_resource_twice_is_refused_and_force_proceeds(arm, azure_workspace, kind):
    spec = CASES[kind][0]
    ws, _ = azure_workspace
    progress: list[str] = []
    await ws.attach("first", kind, dict(spec), wait=True)
    puts = len(arm.arm_requests("PUT"))
    # The same resource, its id written in other letter case: Azure ids are case-insensitive.
    again = {**spec, "resource_id": spec["resource_id"].replace("/providers/", "/PROVIDERS/").replace(
        "resourceGroups/rg-res", "resourcegroups/RG-RES")}
    with pytest.raises(AlreadyAttached) as e:
        await ws.attach("second", kind, again)
    refused = e.value
    assert len(arm.arm_requests("PUT")) == puts  # nothing reached Azure
    assert await ws.store.get_target(ws.id, "second") is None
    op = await ws.attach("second", kind, again, force=True, wait=True,
                         on_progress=lambda o: progress.append(o.progress))
    names = sorted(t.name for t in await ws.list())
    assert isinstance(refused, Conflict) and refused.status == 409
    assert refused.existing == "first" and refused.field == "/resource_id"
    assert "'first'" in refused.message and "--force" in refused.message and "stop working" in refused.message
    assert refused.to_json()["existing"] == "first"
    assert op.status.value == "succeeded", op.error
    warning = next(p for p in progress if p.startswith("warning:"))
    assert "'first' stop working" in warning and "Detach 'first'" in warning
    assert names == ["first", "second"]


async def test_the_guard_looks_across_kinds(azure_workspace):
    ws, _ = azure_workspace
    await ws.attach("k8s", "kubernetes", {"resource_id": AKS_ID}, wait=True)
    with pytest.raises(AlreadyAttached) as e:
        await ws.attach("legacy", "aks", {"resource_id": AKS_ID})
    assert (e.value.existing, e.value.existing_kind) == ("k8s", "kubernetes")


async def test_a_name_already_taken_is_a_conflict(azure_workspace):
    ws, _ = azure_workspace
    await ws.attach("adf", "data-factory", {"resource_id": ADF_ID}, wait=True)
    with pytest.raises(Conflict) as e:
        await ws.attach("adf", "aks", {"resource_id": AKS_ID})
    assert e.value.field == "/name" and e.value.reason == "name_taken"


# -- validation before Azure ------------------------------------------------------------------------
BAD_IDS = [
    ("kubernetes", "aks-ml", "is not an Azure resource id"),
    ("kubernetes", rid("Microsoft.Compute/virtualMachines/vm1"), "virtual machine"),
    ("kubernetes", rid("Microsoft.ContainerService/managedClusters/aks-ml", sub="not-a-guid"), "subscription"),
    ("virtual-machine", AKS_ID, "attach it with kind 'kubernetes' or 'aks'"),
    ("virtual-machine", "/subscriptions/" + SUB + "/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines",
     "is not an Azure resource id"),
    ("virtual-machine", rid("Microsoft.Compute/virtualMachines/vm1/extensions/x"), "not a virtual machine"),
    ("hdinsight", rid("Microsoft.HDInsight/clusterz/h1"), "not an HDInsight cluster"),
    ("synapse-spark", rid("Microsoft.Synapse/workspaces/syn-ws"), "give one of its Spark pools"),
    ("databricks", rid("Microsoft.Databricks/accessConnectors/c1"), "not an Azure Databricks workspace"),
    ("data-lake-analytics", rid("Microsoft.DataLakeStore/accounts/store1"), "not a Data Lake Analytics account"),
    ("data-factory", "https://portal.azure.com/#resource" + ADF_ID, "is not an Azure resource id"),
    ("aks", ARC_ID, "attach it with kind 'kubernetes'"),
    ("aks", rid("Microsoft.ContainerService/managedClusters/aks-ml", rg="bad/group"), "is not an Azure resource id"),
    ("aks", rid("Microsoft.ContainerService/managedClusters/aks ml"), "'aks ml' in it is not a resource name"),
    ("aks", "", "must be the resource id of an AKS cluster"),
    ("aks", None, "must be the resource id of an AKS cluster"),
]


@pytest.mark.parametrize("kind, bad, words", BAD_IDS)
async def test_malformed_resource_id_never_reaches_azure(arm, azure_workspace, kind, bad, words):
    ws, _ = azure_workspace
    spec = {**CASES[kind][0], "resource_id": bad}
    with pytest.raises(InvalidRequest) as e:
        await ws.attach("att1", kind, spec)
    assert e.value.field == "/resource_id" and e.value.status == 400
    assert words in e.value.message, e.value.message
    assert MARKER not in e.value.message
    assert arm.requests == [] and arm.token_requests == []


async def test_every_kind_needs_a_resource_id(arm, azure_workspace):
    ws, _ = azure_workspace
    for kind in CASES:
        with pytest.raises(InvalidRequest) as e:
            await ws.attach("att1", kind, {k: v for k, v in CASES[kind][0].items() if k != "resource_id"})
        assert e.value.field == "/resource_id" and "required" in e.value.message
    assert arm.requests == [] and arm.token_requests == []


@pytest.mark.parametrize("kind, change, field, words", [
    ("virtual-machine", {"admin_password": None}, "/admin_password", "give admin_password or ssh_private_key"),
    ("hdinsight", {"admin_password": None}, "/admin_password", "give admin_password or ssh_private_key"),
    ("virtual-machine", {"admin_username": None}, "/admin_username", ""),
    ("virtual-machine", {"admin_username": "bad user"}, "/admin_username", "letters"),
    ("virtual-machine", {"ssh_port": 0}, "/ssh_port", ""),
    ("hdinsight", {"ssh_port": 70000}, "/ssh_port", ""),
    ("virtual-machine", {"admin_password": None, "ssh_private_key": "not a key " + MARKER}, "/ssh_private_key",
     "must be the text of a private key"),
    ("virtual-machine", {"admin_password": MARKER + "\nmore"}, "/admin_password", "line break"),
    ("databricks", {"access_token": None}, "/access_token", "required"),
    ("databricks", {"access_token": ""}, "/access_token", ""),
    ("databricks", {"access_token": "dapi " + MARKER}, "/access_token", "spaces"),
    ("kubernetes", {"namespace": "Team_A"}, "/namespace", "Kubernetes namespace"),
    ("kubernetes", {"instance_types": {"GPU": {}}}, "/instance_types/GPU", "lowercase"),
    ("kubernetes", {"instance_types": {"gpu": {"limits": {"cpu": "lots"}}}}, "/instance_types/gpu/limits/cpu",
     "CPU amount"),
    ("kubernetes", {"instance_types": {"gpu": {"limits": {"memory": "16 GB"}}}},
     "/instance_types/gpu/limits/memory", "memory amount"),
    ("kubernetes", {"instance_types": {"gpu": {"limits": {"gpu": -1}}}}, "/instance_types/gpu/limits/gpu", ""),
    ("kubernetes", {"default_instance_type": "big"}, "/default_instance_type", "not one of instance_types"),
    ("kubernetes", {"identity": "system-assigned"}, "/identity", "not a field of this kind"),
    ("synapse-spark", {"size": "Standard_DS3_v2"}, "/size", "not a field of this kind"),
    ("aks", {"description": "x" * 1025}, "/description", ""),
])
async def test_bad_field_is_refused_before_azure(arm, azure_workspace, kind, change, field, words):
    spec = {k: v for k, v in {**CASES[kind][0], **change}.items() if v is not None}
    ws, _ = azure_workspace
    with pytest.raises(InvalidRequest) as e:
        await ws.attach("att1", kind, spec)
    assert e.value.field == field, e.value.to_json()
    assert words in e.value.message and MARKER not in e.value.message
    assert arm.requests == [] and arm.token_requests == []


def test_encrypted_private_key_is_refused_with_why():
    with pytest.raises(ValueError, match="passphrase"):
        check_private_key(encrypted_key())
    assert check_private_key(private_key()).endswith("-----\n")


@pytest.mark.parametrize("name, ok", [("ab", True), ("k8s-prod", True), ("a" * 16, True), ("a", False),
                                      ("a" * 17, False), ("1cluster", False), ("ends-", False), ("has_under", False),
                                      ("local", False)])
def test_attached_names_follow_azures_rule(azure_workspace, name, ok):
    _, backend = azure_workspace
    if ok:
        assert backend.check_name("aks", name) == name
    else:
        with pytest.raises(InvalidRequest) as e:
            backend.check_name("aks", name)
        assert e.value.field == "/name"


# -- kinds the service no longer offers, and what Azure itself refuses ------------------------------
@pytest.mark.parametrize("verb, kind, words", [("attach", "batch", "compute cluster"),
                                               ("create", "aci", "online endpoint")])
async def test_batch_and_aci_say_what_to_use_instead(arm, azure_workspace, verb, kind, words):
    ws, _ = azure_workspace
    with pytest.raises(InvalidRequest) as e:
        await getattr(ws, verb)("old1", kind, {"resource_id": rid("Microsoft.Batch/batchAccounts/b1")})
    assert e.value.field == "/kind" and e.value.reason == "retired_kind"
    assert words in e.value.message and "not a compute type of current Azure Machine Learning" in e.value.message
    assert arm.requests == [] and arm.token_requests == []
    assert set(RETIRED) == {"batch", "aci"}


async def test_azure_refusing_a_resource_is_shown_in_full(arm, azure_workspace):
    arm.missing_resources.add(VM_ID.lower())
    ws, _ = azure_workspace
    with pytest.raises(AzureError) as e:
        await ws.attach("vm1", "virtual-machine", dict(CASES["virtual-machine"][0]), wait=True)
    stored = await ws.store.get_target(ws.id, "vm1")
    assert e.value.reason == "azure_refused" and e.value.status == 502
    assert e.value.message == ("The Resource 'Microsoft.Compute/virtualMachines/dsvm-01' under resource group "
                               "'rg-res' was not found. For more details please go to "
                               "https://aka.ms/ARMResourceNotFoundFix")
    assert e.value.to_json()["azure_code"] == "ResourceNotFound"
    assert stored is None  # a refused attach leaves nothing behind here


async def test_azure_refusing_a_retired_service_is_passed_through(arm, azure_workspace):
    message = ("Azure Data Lake Analytics was retired on 29 February 2024. Compute of type DataLakeAnalytics can no "
               "longer be attached.")
    arm.refused_types["DataLakeAnalytics"] = ("ServiceRetired", message)
    ws, _ = azure_workspace
    with pytest.raises(AzureError) as e:
        await ws.attach("adla", "data-lake-analytics", {"resource_id": ADLA_ID}, wait=True)
    assert e.value.message == message and e.value.azure_code == "ServiceRetired"
    assert await ws.store.get_target(ws.id, "adla") is None


async def test_the_stand_in_refuses_bad_resource_ids_as_azure_does(arm, azure_workspace):
    """What Azure says when a resource id gets past a client that does not check it."""
    _, backend = azure_workspace

    async def put(body):
        from azure.core.exceptions import HttpResponseError
        try:
            await backend.arm.client().compute.begin_create_or_update(
                arm.resource_group, arm.workspace_name, "raw1", json.dumps(body).encode(),
                content_type="application/json", polling=False)
        except HttpResponseError as e:
            return e.status_code, e.error.code, e.error.message
    status, code, message = await put({"properties": {"computeType": "AKS", "resourceId": "aks-ml"}})
    assert (status, code) == (400, "LinkedInvalidPropertyId")
    assert message.startswith("Property id 'aks-ml' at path 'properties.resourceId' is invalid.")
    status, code, message = await put({"properties": {"computeType": "VirtualMachine", "resourceId": AKS_ID}})
    assert (status, code) == (400, "BadArgument") and "Microsoft.Compute/virtualMachines" in message
    status, code, _ = await put({"properties": {"computeType": "Databricks", "resourceId": DBX_ID}})
    assert (status, code) == (400, "BadArgument")


async def test_a_secret_azure_echoes_in_an_error_is_blanked(arm, azure_workspace, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    arm.fail_next("attach", "InvalidCredentials", f"SSH to dsvm-01 as azureuser with password '{MARKER}' failed.")
    ws, _ = azure_workspace
    op = await ws.attach("vm1", "virtual-machine", dict(CASES["virtual-machine"][0]), wait=True)
    assert op.status.value == "failed"
    assert op.error["message"] == "SSH to dsvm-01 as azureuser with password '***' failed."
    assert MARKER not in caplog.text and not files_holding(tmp_path, MARKER)


# -- what attached targets do and do not do ---------------------------------------------------------
async def test_update_on_an_attached_target_says_detach_then_attach(arm, azure_workspace):
    ws, _ = azure_workspace
    await ws.attach("k8s", "kubernetes", {"resource_id": AKS_ID}, wait=True)
    puts = len(arm.arm_requests("PUT"))
    errors = []
    for change in ({"namespace": "other"}, {"description": "x"}):
        try:
            await ws.update("k8s", change)
        except InvalidRequest as e:
            errors.append(e)
    try:
        await ws.stop("k8s")
    except InvalidRequest as e:
        errors.append(e)
    assert len(arm.arm_requests("PUT")) == puts
    update1, update2, stop = errors
    for e in (update1, update2):
        assert "detach it" in e.message and "attach it again" in e.message and "left alone" in e.message
        assert "TLS" in e.message
    assert "does not stop it" in stop.message and "portal.azure.com" in stop.message


def test_kinds_describe_attach_with_secrets_write_only(azure_workspace):
    import jsonschema

    ws, _ = azure_workspace
    kinds = {k.name: k for k in ws.kinds()}
    for kind in CASES:
        info = kinds[kind]
        assert not info.managed and {"attach", "detach"} <= set(info.operations)
        assert info.family == "Attached compute" and info.update_fields == []
        assert "resource_id" in info.attach_schema["required"]
        for example in info.examples:
            jsonschema.validate(example, info.attach_schema)
    props = kinds["virtual-machine"].attach_schema["properties"]
    assert props["admin_password"]["writeOnly"] and props["ssh_private_key"]["writeOnly"]
    assert kinds["databricks"].attach_schema["properties"]["access_token"]["writeOnly"]
    assert "nodes" in kinds["virtual-machine"].operations and "nodes" not in kinds["databricks"].operations
    assert set(SPEC_MODELS) == set(CASES)
    # Retired services are refused with advice, but are not kinds anyone can pick.
    assert "batch" not in kinds and "aci" not in kinds


@pytest.mark.parametrize("provisioning, state", [
    ("Succeeded", State.running), ("Creating", State.creating), ("Updating", State.creating),
    ("Failed", State.failed), ("Deleting", State.deleting), ("Canceled", State.unknown), ("Unknown", State.unknown),
])
@pytest.mark.parametrize("ctype", ["Kubernetes", "VirtualMachine", "HDInsight", "SynapseSpark", "Databricks",
                                   "DataLakeAnalytics", "DataFactory", "AKS"])
def test_attached_state_mapping(ctype, provisioning, state):
    res = {"name": "x", "properties": {"computeType": ctype, "provisioningState": provisioning,
                                       "isAttachedCompute": True, "resourceId": AKS_ID}}
    assert state_of(res) == (state, provisioning)
    t = to_target(res, "ws")
    assert (t.state, t.provider_state, t.managed) == (state, provisioning, False)


def test_attached_targets_show_what_azure_reports_and_never_credentials():
    res = {"name": "vm1", "properties": {
        "computeType": "VirtualMachine", "provisioningState": "Failed", "isAttachedCompute": True,
        "resourceId": VM_ID, "provisioningErrors": [{"error": {"code": "BadArgument", "message": "SSH failed"}}],
        "properties": {"virtualMachineSize": "Standard_NC6s_v3", "sshPort": 22, "address": "10.1.2.3",
                       "administratorAccount": {"username": "azureuser", "password": MARKER,
                                                "privateKeyData": MARKER}}}}
    t = to_target(res, "ws", cloud="AzureChinaCloud")
    assert t.state == State.failed and [e.message for e in t.errors] == ["SSH failed"]
    assert t.size.name == "Standard_NC6s_v3"
    assert t.properties["portal_url"].startswith("https://portal.azure.cn/#resource/subscriptions/")
    assert MARKER not in t.model_dump_json()
    dbx = to_target({"name": "d", "properties": {"computeType": "Databricks", "provisioningState": "Succeeded",
                                                 "resourceId": DBX_ID, "properties": {
                                                     "databricksAccessToken": MARKER,
                                                     "workspaceUrl": "adb-1.2.azuredatabricks.net"}}}, "ws")
    assert dbx.properties["workspace_url"] == "adb-1.2.azuredatabricks.net" and MARKER not in dbx.model_dump_json()
