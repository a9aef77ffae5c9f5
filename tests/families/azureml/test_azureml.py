"""The Azure ML backend against the project's Resource Manager stand-in: every operation, every
validation rule, long operations, retries, sign-in and permission errors, and workspace discovery.

The real azure-identity managed-identity credential and the real azure-mgmt-machinelearningservices
aio client run throughout; only loopback is reachable.
"""
from __future__ import annotations

import json
import logging
import os
import time

import pytest

from jupyter_compute.families.azureml.discovery import discover_workspaces
from jupyter_compute.families.azureml.resources import state_of
from jupyter_compute.families.azureml.arm import AzureError
from jupyter_compute.families.azureml.backend import AzureMLBackend
from jupyter_compute.core.errors import BackendRefused, Conflict, InvalidRequest, NotFound, Unavailable
from jupyter_compute.core.models import State
from tests.standins.arm import OBJECT_ID, TENANT_ID, VM_SIZES
from tests.standins.azure import arm, azure_env, azure_workspace, network_guard, workspace_for  # noqa: F401  (fixtures)
from tests.support import files_holding, free_port

# Each test is a few requests to a stand-in on loopback: fail rather than hang.
pytestmark = pytest.mark.timeout(60)


def _ssh_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + \
        " alice@example"


SSH_KEY = _ssh_key()
SUBNET = ("/subscriptions/8f3a2c1d-4b5e-4f60-9a7b-1c2d3e4f5a6b/resourceGroups/rg-net/providers/"
          "Microsoft.Network/virtualNetworks/vnet-ml/subnets/default")
UAI = ("/subscriptions/8f3a2c1d-4b5e-4f60-9a7b-1c2d3e4f5a6b/resourceGroups/rg-id/providers/"
       "Microsoft.ManagedIdentity/userAssignedIdentities/ml-identity")


def instance_resource(name: str, state: str = "Running", *, size: str = "STANDARD_DS3_V2", user: str = "Bob") -> dict:
    """A compute instance as Resource Manager returns it."""
    return {"name": name, "type": "Microsoft.MachineLearningServices/workspaces/computes", "location": "eastus",
            "tags": {}, "properties": {
                "createdOn": "2024-07-24T08:42:28.3934092+00:00", "modifiedOn": "2024-07-24T08:44:35.9151617+00:00",
                "computeType": "ComputeInstance", "computeLocation": "eastus", "provisioningState": "Succeeded",
                "isAttachedCompute": False, "properties": {
                    "vmSize": size, "state": state, "errors": [],
                    "sshSettings": {"sshPublicAccess": "Disabled", "adminUserName": "azureuser", "sshPort": 50000},
                    "connectivityEndpoints": {"publicIpAddress": "203.0.113.5", "privateIpAddress": "10.0.0.5"},
                    "applications": [{"displayName": "Jupyter", "endpointUri": f"https://{name}.eastus.instances.azureml.ms/tree/"},
                                     {"displayName": "Jupyter Lab", "endpointUri": f"https://{name}.eastus.instances.azureml.ms/lab"}],
                    "createdBy": {"userName": user, "userOrgId": TENANT_ID, "userId": OBJECT_ID},
                    "applicationSharingPolicy": "Personal", "idleTimeBeforeShutdown": "PT90M",
                    "lastOperation": {"operationName": "Start", "operationTime": "2024-07-24T08:44:35+00:00",
                                      "operationStatus": "Succeeded", "operationTrigger": "User"}}}}


def cluster_resource(name: str, *, provisioning: str = "Succeeded", mn: int = 0, mx: int = 4) -> dict:
    return {"name": name, "type": "Microsoft.MachineLearningServices/workspaces/computes", "location": "eastus",
            "tags": {"team": "ml"}, "properties": {
                "createdOn": "2024-07-24T08:34:22.0060469+00:00", "computeType": "AmlCompute",
                "provisioningState": provisioning, "isAttachedCompute": False, "properties": {
                    "vmSize": "STANDARD_DS3_V2", "vmPriority": "Dedicated",
                    "scaleSettings": {"maxNodeCount": mx, "minNodeCount": mn, "nodeIdleTimeBeforeScaleDown": "PT2M"},
                    "currentNodeCount": 0, "targetNodeCount": 0, "allocationState": "Steady",
                    "nodeStateCounts": {"preparingNodeCount": 0, "runningNodeCount": 0, "idleNodeCount": 0,
                                        "unusableNodeCount": 0, "leavingNodeCount": 0, "preemptedNodeCount": 0},
                    "remoteLoginPortPublicAccess": "Enabled", "osType": "Linux", "enableNodePublicIp": True}}}


# -- reading ----------------------------------------------------------------------------------------
async def test_list_shows_states_creators_node_counts_and_links(arm, azure_workspace):
    arm.seed(instance_resource("bob-dev", "JobRunning", user="Bob"))
    arm.seed(instance_resource("old-dev", "Stopped"))
    arm.seed(cluster_resource("cpu-cluster", mx=4))
    arm.set_nodes("cpu-cluster", idle=1, running=2)
    ws, _ = azure_workspace
    targets = {t.name: t for t in await ws.list()}
    bob, old, cluster = targets["bob-dev"], targets["old-dev"], targets["cpu-cluster"]
    assert (bob.kind, bob.state, bob.provider_state, bob.managed) == ("compute-instance", State.running,
                                                                      "JobRunning", True)
    assert bob.properties["created_by"]["user_name"] == "Bob"
    assert {a["name"] for a in bob.properties["applications"]} == {"Jupyter", "JupyterLab"}
    assert bob.properties["idle_shutdown_minutes"] == 90
    assert bob.properties["application_sharing"] == "personal"
    assert bob.size.name == "Standard_DS3_v2" and bob.size.vcpus == 4  # decorated from the location's sizes
    assert old.state == State.stopped
    assert (cluster.kind, cluster.state, cluster.provider_state) == ("compute-cluster", State.running, "Succeeded")
    assert (cluster.nodes.current, cluster.nodes.min, cluster.nodes.max) == (3, 0, 4)
    assert (cluster.nodes.idle, cluster.nodes.running) == (1, 2)
    assert cluster.properties["allocation_state"] == "Steady"
    # Every request named the api-version the settings give.
    assert {r.api_version for r in arm.requests} == {"2023-04-01"}


async def test_list_follows_next_link_pages(arm, azure_workspace):
    for i in range(5):
        arm.seed(cluster_resource(f"c{i}"))
    arm.page_size = 2
    ws, _ = azure_workspace
    assert [t.name for t in await ws.list()] == [f"c{i}" for i in range(5)]
    assert len(arm.arm_requests("GET", "/computes")) == 3


async def test_get_unknown_target_is_not_found(azure_workspace):
    ws, _ = azure_workspace
    with pytest.raises(NotFound):
        await ws.get("nope")


async def test_sizes_and_usage(arm, azure_workspace):
    arm.seed(instance_resource("bob-dev"))
    ws, _ = azure_workspace
    sizes, usage = await ws.sizes(), await ws.usage()
    by_name = {s.name: s for s in sizes}
    assert set(by_name) == {s["name"] for s in VM_SIZES}
    nc = by_name["Standard_NC6s_v3"]
    assert (nc.vcpus, nc.memory_gb, nc.gpus, nc.low_priority, nc.price_per_hour) == (6, 112.0, 1, True, 3.06)
    assert nc.compute_types == ["compute-instance", "compute-cluster"]
    assert by_name["Standard_A1_v2"].compute_types == ["compute-cluster"]
    # Nodes the quota still allows: the tightest of the family's bucket and the regional total.
    assert nc.quota_available == 24 // 6  # NCSv3: 24 free of 24; regional: 96 of 100
    assert by_name["Standard_DS3_v2"].quota_available == (24 - 4) // 4  # bob-dev holds 4 DSv2 vCPUs
    u = {x.name: x for x in usage}
    assert u["Total Cluster Dedicated Regional vCPUs"].current == 4
    assert u["Standard DSv2 Family Cluster Dedicated vCPUs"].current == 4
    assert u["Standard DSv2 Family Cluster Dedicated vCPUs"].limit == 24


# -- compute instances ------------------------------------------------------------------------------
async def test_create_instance_with_every_field(arm, azure_workspace):
    ws, _ = azure_workspace
    progress: list[str] = []
    spec = {"size": "Standard_DS2_v2", "ssh_public_access": True, "ssh_public_key": SSH_KEY,
            "idle_shutdown_minutes": 60, "application_sharing": "personal", "subnet": SUBNET, "no_public_ip": True,
            "schedules": [{"action": "stop", "cron": "0 19 * * 1-5", "time_zone": "Pacific Standard Time"},
                          {"action": "start", "cron": "30 7 * * mon-fri", "enabled": False}],
            "assigned_user": {"object_id": OBJECT_ID, "tenant_id": TENANT_ID},
            "description": "Alice's workstation", "tags": {"team": "vision"}}
    op = await ws.create("alice-dev", "compute-instance", spec, wait=True,
                         on_progress=lambda o: progress.append(o.progress))
    t = await ws.get("alice-dev")
    assert op.status.value == "succeeded", op.error
    assert (t.state, t.provider_state) == (State.running, "Running")
    assert [a["name"] for a in t.properties["applications"]] == ["Jupyter", "JupyterLab", "VS Code", "RStudio"]
    assert t.properties["last_operation"]["name"] == "Create"
    assert any("InProgress" in p for p in progress) and progress[-1] == "created"

    put = arm.arm_requests("PUT")[-1].body
    inner = put["properties"]["properties"]
    assert put["location"] == "eastus" and put["tags"] == {"team": "vision"}
    assert put["properties"]["computeType"] == "ComputeInstance"
    assert put["properties"]["description"] == "Alice's workstation"
    assert inner["vmSize"] == "Standard_DS2_v2"
    assert inner["sshSettings"] == {"sshPublicAccess": "Enabled", "adminPublicKey": SSH_KEY}
    assert inner["idleTimeBeforeShutdown"] == "PT60M"
    assert inner["applicationSharingPolicy"] == "Personal"
    assert inner["subnet"] == {"id": SUBNET} and inner["enableNodePublicIp"] is False
    assert inner["personalComputeInstanceSettings"] == {"assignedUser": {"objectId": OBJECT_ID, "tenantId": TENANT_ID}}
    assert inner["schedules"]["computeStartStop"] == [
        {"action": "Stop", "triggerType": "Cron", "cron": {"expression": "0 19 * * 1-5",
                                                           "timeZone": "Pacific Standard Time"}, "status": "Enabled"},
        {"action": "Start", "triggerType": "Cron", "cron": {"expression": "30 7 * * mon-fri", "timeZone": "UTC"},
         "status": "Disabled"}]


async def test_instance_stop_start_restart_delete(arm, azure_workspace):
    arm.seed(instance_resource("bob-dev"))
    ws, _ = azure_workspace
    seen: list[tuple[str, str]] = []
    for action in ("stop", "start", "restart"):
        op = await getattr(ws, action)("bob-dev", wait=True)
        assert op.status.value == "succeeded", op.error
        t = await ws.get("bob-dev")
        seen.append((action, t.provider_state))
        assert t.properties["last_operation"]["name"] == action.capitalize()
    op = await ws.delete("bob-dev", wait=True)
    assert op.status.value == "succeeded", op.error
    assert [t.name for t in await ws.list()] == []
    assert seen == [("stop", "Stopped"), ("start", "Running"), ("restart", "Running")]
    assert [r.path.rsplit("/", 1)[-1] for r in arm.arm_requests("POST")] == ["stop", "start", "restart"]
    delete = arm.arm_requests("DELETE")[0]
    assert delete.query["underlyingResourceAction"] == "Delete"


async def test_instance_without_update_and_cluster_without_start(arm, azure_workspace):
    arm.seed(instance_resource("bob-dev"))
    arm.seed(cluster_resource("cpu"))
    ws, _ = azure_workspace
    with pytest.raises(InvalidRequest) as e1:
        await ws.update("bob-dev", {"size": "Standard_DS2_v2"})
    with pytest.raises(InvalidRequest) as e2:
        await ws.stop("cpu")
    assert "fixed at create" in e1.value.message
    assert "scales between min_nodes and max_nodes" in e2.value.message
    assert not arm.arm_requests("POST") and not arm.arm_requests("PUT")


async def test_failed_create_keeps_azures_message(arm, azure_workspace):
    message = ("Operation could not be completed as it results in exceeding approved standardDSv2Family Cores "
               "quota. Additional details - Deployment Model: Resource Manager, Location: eastus")
    arm.fail_next("create", "QuotaExceeded", message)
    ws, _ = azure_workspace
    op = await ws.create("alice-dev", "compute-instance", {}, wait=True)
    t = await ws.get("alice-dev")
    assert op.status.value == "failed"
    assert op.error["message"] == message and op.error["azure_code"] == "QuotaExceeded"
    assert op.error["reason"] == "azure_operation_failed"
    assert (t.state, t.provider_state) == (State.failed, "CreateFailed")
    assert t.errors[0].message == message


async def test_failed_stop_keeps_azures_message(arm, azure_workspace):
    arm.seed(instance_resource("bob-dev"))
    arm.fail_next("stop", "UserError", "Compute instance stop failed: the VM agent did not answer.")
    ws, _ = azure_workspace
    op = await ws.stop("bob-dev", wait=True)
    assert op.status.value == "failed"
    assert op.error["message"] == "Compute instance stop failed: the VM agent did not answer."


async def test_conflicting_action_is_refused_with_azures_words(arm, azure_workspace):
    arm.seed(instance_resource("bob-dev", "Starting"))
    ws, _ = azure_workspace
    with pytest.raises(Conflict) as e:
        await ws.restart("bob-dev")
    assert e.value.reason == "azure_conflict" and e.value.status == 409
    assert "cannot restart while it is in state 'Starting'" in e.value.message
    assert (await ws.get("bob-dev")).state == State.starting


async def test_the_store_mirrors_azure_so_a_second_operation_is_refused(arm, workspace_for):
    from jupyter_compute.core.errors import Conflict

    arm.seed(instance_resource("bob-dev"))
    arm.lro_polls = 5
    ws, _ = workspace_for(arm, poll_interval=0.05)
    await ws.list()
    rows = [r["name"] for r in await ws.store.list_targets(ws.id)]
    op = await ws.stop("bob-dev")  # --no-wait: the operation goes on
    assert op.status.value == "running"
    with pytest.raises(Conflict):
        await ws.start("bob-dev")
    done = await ws.wait_operation(op.id, timeout=20)
    arm.computes().clear()  # deleted in Azure, not from here
    listed = await ws.list()
    rows_after = [r["name"] for r in await ws.store.list_targets(ws.id)]
    assert rows == ["bob-dev"]
    assert done.status.value == "succeeded"
    assert listed == [] and rows_after == []


# -- compute clusters -------------------------------------------------------------------------------
async def test_cluster_create_update_nodes_delete(arm, azure_workspace):
    ws, _ = azure_workspace
    spec = {"size": "Standard_DS2_v2", "priority": "low-priority", "min_nodes": 1, "max_nodes": 3,
            "idle_seconds_before_scaledown": 100, "admin_username": "azureuser", "ssh_public_key": SSH_KEY,
            "remote_login_port_public_access": False, "identity": UAI}
    op = await ws.create("cpu-cluster", "compute-cluster", spec, wait=True)
    assert op.status.value == "succeeded", op.error
    created = await ws.get("cpu-cluster")
    arm.set_nodes("cpu-cluster", idle=1, running=2)
    nodes = await ws.nodes("cpu-cluster")
    updated = await ws.update("cpu-cluster", {"max_nodes": 6, "idle_seconds_before_scaledown": 300})
    op = await ws.delete("cpu-cluster", wait=True)
    assert op.status.value == "succeeded", op.error
    after = await ws.list()
    assert (created.state, created.nodes.min, created.nodes.max, created.nodes.current) == (State.running, 1, 3, 1)
    assert created.properties["priority"] == "low-priority"
    assert created.properties["idle_seconds_before_scaledown"] == 100
    assert sorted(n.state for n in nodes) == ["idle", "running", "running"]
    assert all(n.address and n.port for n in nodes)
    assert (updated.nodes.min, updated.nodes.max) == (1, 6)
    assert updated.properties["idle_seconds_before_scaledown"] == 300
    assert after == []

    create, update = [r.body for r in arm.arm_requests("PUT")]
    inner = create["properties"]["properties"]
    assert inner["vmPriority"] == "LowPriority" and inner["remoteLoginPortPublicAccess"] == "Disabled"
    assert inner["scaleSettings"] == {"minNodeCount": 1, "maxNodeCount": 3, "nodeIdleTimeBeforeScaleDown": "PT1M40S"}
    assert inner["userAccountCredentials"] == {"adminUserName": "azureuser", "adminUserSshPublicKey": SSH_KEY}
    assert create["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {UAI: {}}}
    # The update PUT keeps what it does not change, and changes only the scale settings.
    assert update["properties"]["properties"]["scaleSettings"] == {
        "minNodeCount": 1, "maxNodeCount": 6, "nodeIdleTimeBeforeScaleDown": "PT5M"}
    assert update["properties"]["properties"]["vmPriority"] == "LowPriority"
    assert update["identity"]["type"] == "UserAssigned"


async def test_cluster_scaled_to_zero_is_running(arm, azure_workspace):
    arm.seed(cluster_resource("idle-cluster", mn=0, mx=2))
    arm.seed(cluster_resource("new-cluster", provisioning="Creating"))
    ws, _ = azure_workspace
    t = {t.name: t for t in await ws.list()}
    assert t["idle-cluster"].state == State.running and t["idle-cluster"].nodes.current == 0
    assert t["new-cluster"].state == State.creating


@pytest.mark.parametrize("changes, field", [
    ({"min_nodes": 5}, "/min_nodes"),                       # above the current max_nodes of 4
    ({"max_nodes": 0}, "/max_nodes"),
    ({"min_nodes": 3, "max_nodes": 2}, "/min_nodes"),
    ({"idle_seconds_before_scaledown": -1}, "/idle_seconds_before_scaledown"),
    ({"max_nodes": "many"}, "/max_nodes"),
    ({"size": "Standard_DS2_v2"}, "/size"),                 # fixed at create
    ({"bogus": 1}, "/bogus"),
])
async def test_cluster_update_validation_sends_nothing(arm, azure_workspace, changes, field):
    arm.seed(cluster_resource("cpu", mn=0, mx=4))
    ws, _ = azure_workspace
    with pytest.raises(InvalidRequest) as e:
        await ws.update("cpu", changes)
    assert e.value.field == field
    assert not arm.arm_requests("PUT") and not arm.arm_requests("PATCH")


# -- validation: each bad field is a 400 naming it, and Azure hears nothing -------------------------
INSTANCE_CASES = [
    ("cpu-cluster-1", {}, "/name"),
    ("dev-", {}, "/name"),
    ("ab", {}, "/name"),
    ("a" * 25, {}, "/name"),
    ("1dev", {}, "/name"),
    ("dev_box", {}, "/name"),
    ("local", {}, "/name"),
    ("alice-dev", {"size": "Standard DS3"}, "/size"),
    ("alice-dev", {"idle_shutdown_minutes": 14}, "/idle_shutdown_minutes"),
    ("alice-dev", {"idle_shutdown_minutes": 4321}, "/idle_shutdown_minutes"),
    ("alice-dev", {"schedules": [{"action": "stop", "cron": "0 25 * * *"}]}, "/schedules/0/cron"),
    ("alice-dev", {"schedules": [{"action": "stop", "cron": "0 19 * *"}]}, "/schedules/0/cron"),
    ("alice-dev", {"schedules": [{"action": "pause", "cron": "0 19 * * *"}]}, "/schedules/0/action"),
    ("alice-dev", {"schedules": [{"action": "stop", "cron": "0 19 * * *", "time_zone": "Mars;Base"}]},
     "/schedules/0/time_zone"),
    ("alice-dev", {"assigned_user": {"object_id": "not-a-guid", "tenant_id": TENANT_ID}}, "/assigned_user/object_id"),
    ("alice-dev", {"assigned_user": {"object_id": OBJECT_ID}}, "/assigned_user/tenant_id"),
    ("alice-dev", {"subnet": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v"},
     "/subnet"),
    ("alice-dev", {"subnet": SUBNET.replace("Microsoft.Network", "Microsoft.Compute")}, "/subnet"),
    ("alice-dev", {"application_sharing": "public"}, "/application_sharing"),
    ("alice-dev", {"ssh_public_access": True}, "/ssh_public_key"),
    ("alice-dev", {"ssh_public_key": "ssh-rsa not-base64!"}, "/ssh_public_key"),
    ("alice-dev", {"ssh_public_key": "ssh-rsa " + SSH_KEY.split()[1]}, "/ssh_public_key"),  # type mismatch
    ("alice-dev", {"description": "x" * 1025}, "/description"),
    ("alice-dev", {"tags": {f"k{i}": "v" for i in range(51)}}, "/tags"),
    ("alice-dev", {"priority": "dedicated"}, "/priority"),  # not a field of instances
]
CLUSTER_CASES = [
    ("c", {}, "/name"),
    ("a" * 17, {}, "/name"),
    ("9cluster", {}, "/name"),
    ("gpu_cluster", {}, "/name"),
    ("cpu", {"priority": "spot"}, "/priority"),
    ("cpu", {"min_nodes": -1}, "/min_nodes"),
    ("cpu", {"max_nodes": 0}, "/max_nodes"),
    ("cpu", {"max_nodes": 65001}, "/max_nodes"),
    ("cpu", {"min_nodes": 3, "max_nodes": 2}, "/min_nodes"),
    ("cpu", {"idle_seconds_before_scaledown": -5}, "/idle_seconds_before_scaledown"),
    ("cpu", {"admin_username": "root", "admin_password": "Str0ng!Passw0rd"}, "/admin_username"),
    ("cpu", {"admin_username": "Alice", "admin_password": "Str0ng!Passw0rd"}, "/admin_username"),
    ("cpu", {"admin_username": "alice", "admin_password": "short1!A"}, "/admin_password"),
    ("cpu", {"admin_username": "alice", "admin_password": "alllowercaseletters"}, "/admin_password"),
    ("cpu", {"admin_password": "Str0ng!Passw0rd"}, "/admin_username"),
    ("cpu", {"admin_username": "alice"}, "/admin_password"),
    ("cpu", {"ssh_public_key": "ecdsa-sha2-nistp256"}, "/ssh_public_key"),
    ("cpu", {"subnet": "subnet-1"}, "/subnet"),
    ("cpu", {"identity": "managed"}, "/identity"),
    ("cpu", {"identity": UAI.replace("userAssignedIdentities", "identities")}, "/identity"),
    ("cpu", {"size": ""}, "/size"),
    ("cpu", {"application_sharing": "shared"}, "/application_sharing"),  # not a field of clusters
]


@pytest.mark.parametrize("kind, name, spec, field",
                         [("compute-instance", *c) for c in INSTANCE_CASES] +
                         [("compute-cluster", *c) for c in CLUSTER_CASES])
async def test_bad_field_is_refused_before_azure(arm, azure_workspace, kind, name, spec, field):
    ws, _ = azure_workspace
    with pytest.raises(InvalidRequest) as e:
        await ws.create(name, kind, spec)
    assert e.value.field == field, e.value.message
    assert e.value.status == 400
    assert "Str0ng!Passw0rd" not in e.value.message
    assert arm.requests == [] and arm.token_requests == []


def test_good_names_pass(arm):
    b = AzureMLBackend.__new__(AzureMLBackend)
    for n in ("abc", "cpu-cluster1", "a1-b2-c", "A" * 24):
        assert b.check_name("compute-instance", n) == n
    for n in ("ab", "gpu-1", "a" * 16):
        assert b.check_name("compute-cluster", n) == n


# -- quota and sizes before create ------------------------------------------------------------------
@pytest.mark.parametrize("kind, spec, field, words", [
    ("compute-instance", {"size": "Standard_DS3_v2"}, "/size", "Standard DSv2 Family Cluster Dedicated vCPUs"),
    ("compute-cluster", {"size": "Standard_DS3_v2", "min_nodes": 2, "max_nodes": 4}, "/min_nodes",
     "2 node(s) of Standard_DS3_v2 need 8 vCPUs"),
    ("compute-cluster", {"size": "Standard_NC6s_v3", "max_nodes": 2}, "/size", "one node of Standard_NC6s_v3"),
    ("compute-instance", {"size": "Standard_A1_v2"}, "/size", "not available for compute instances"),
    ("compute-instance", {"size": "Standard_Z99_v9"}, "/size", "is not offered in eastus"),
    ("compute-cluster", {"size": "Standard_NC24ads_A100_v4", "priority": "low-priority"}, "/priority",
     "cannot run low-priority"),
])
async def test_quota_and_size_checked_before_create(arm, azure_workspace, kind, spec, field, words):
    arm.quota["families"]["standardDSv2Family"] = 6
    arm.quota["families"]["standardNCSv3Family"] = 0
    arm.seed(instance_resource("bob-dev", size="STANDARD_DS3_V2"))  # uses 4 of the 6
    ws, _ = azure_workspace
    with pytest.raises(InvalidRequest) as e:
        await ws.create("new-one", kind, spec)
    assert e.value.field == field and words in e.value.message, e.value.message
    assert not arm.arm_requests("PUT")


async def test_quota_that_fits_creates(arm, azure_workspace):
    arm.quota["families"]["standardDSv2Family"] = 6
    ws, _ = azure_workspace
    op = await ws.create("cpu", "compute-cluster", {"size": "Standard_DS3_v2", "min_nodes": 1}, wait=True)
    assert op.status.value == "succeeded"


# -- long operations, retries, unavailability -------------------------------------------------------
async def test_retry_after_on_polls_is_honoured(arm, workspace_for):
    arm.seed(instance_resource("bob-dev"))
    arm.lro_polls = 2
    arm.poll_retry_after = 1
    ws, _ = workspace_for(arm, poll_interval=0.01)
    assert (await ws.stop("bob-dev", wait=True)).status.value == "succeeded"
    polls = [r.at for r in arm.saw("GET", "computeOperationsStatus")]
    assert len(polls) == 3
    gaps = [b - a for a, b in zip(polls, polls[1:])]
    assert all(g >= 0.9 for g in gaps), gaps


async def test_poll_interval_setting_is_used(arm, workspace_for):
    arm.seed(instance_resource("bob-dev"))
    arm.lro_polls = 2
    ws, _ = workspace_for(arm, poll_interval=0.3)
    assert (await ws.stop("bob-dev", wait=True)).status.value == "succeeded"
    polls = [r.at for r in arm.saw("GET", "computeOperationsStatus")]
    assert all(b - a >= 0.25 for a, b in zip(polls, polls[1:]))


@pytest.mark.fault
async def test_throttling_is_retried_after_retry_after(arm, azure_workspace):
    arm.seed(cluster_resource("cpu"))
    arm.add_fault(status=429, times=2, retry_after=0.3, method="GET", path_contains="/computes")
    ws, _ = azure_workspace
    started = time.monotonic()
    assert [t.name for t in await ws.list()] == ["cpu"]
    assert time.monotonic() - started >= 0.55
    lists = arm.arm_requests("GET", "/computes")
    assert len(lists) >= 3 and lists[1].at - lists[0].at >= 0.25


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
@pytest.mark.fault
async def test_lasting_trouble_becomes_unavailable(arm, azure_workspace, status):
    arm.add_fault(status=status, times=1000, method="GET", path_contains="/computes")
    ws, _ = azure_workspace
    with pytest.raises(Unavailable) as e:
        await ws.list()
    assert e.value.status == 503 and f"HTTP {status}" in e.value.message
    assert len(arm.arm_requests("GET", "/computes")) == 4  # the first try and retry_total=3 retries


async def test_throttled_then_failing_then_stalled_ends_in_a_503_naming_the_stall(arm, workspace_for):
    """429 with Retry-After, then 500, then a connection that says nothing: each is retried, within
    bounds, and the list ends in seconds as Unavailable saying Azure did not answer in time."""
    from traitlets.config import Config

    arm.seed(cluster_resource("cpu"))
    arm.add_fault(status=429, times=1, retry_after=0.2, method="GET", path_contains="/computes")
    arm.add_fault(status=500, times=1, method="GET", path_contains="/computes")
    arm.add_fault(status=503, times=1000, stall=2.0, method="GET", path_contains="/computes")
    cfg = Config()
    cfg.AzureML.request_timeout = 0.5
    ws, _ = workspace_for(arm, config=cfg)
    started = time.monotonic()
    with pytest.raises(Unavailable) as e:
        await ws.list()
    took = time.monotonic() - started
    assert e.value.status == 503 and e.value.reason == "azure_timeout"
    assert "did not answer within 0.5 s" in e.value.message and "request_timeout" in e.value.message
    tries = arm.arm_requests("GET", "/computes")
    assert 4 <= len(tries) <= 8, len(tries)  # retried, and not for ever
    assert tries[1].at - tries[0].at >= 0.15  # Retry-After was honoured
    assert took < 15, took

    # The stall is over: the same workspace lists again.
    arm.faults.clear()
    ws, _ = workspace_for(arm, config=cfg)
    assert [t.name for t in await ws.list()] == ["cpu"]


async def test_server_error_on_an_action_is_retried(arm, azure_workspace):
    arm.seed(instance_resource("bob-dev"))
    arm.add_fault(status=503, times=1, method="POST", path_contains="/stop")
    ws, _ = azure_workspace
    assert (await ws.stop("bob-dev", wait=True)).status.value == "succeeded"
    assert len(arm.arm_requests("POST", "/stop")) == 2


async def test_unreachable_endpoint_is_unavailable(arm, workspace_for, azure_env):
    closed = free_port()  # a port nobody listens on
    azure_env.setenv("JUPYTER_COMPUTE_ARM_ENDPOINT", f"https://127.0.0.1:{closed}")
    arm.check_audience = False
    ws, backend = workspace_for(arm)
    with pytest.raises(Unavailable):
        await ws.list()


async def test_slow_answers_do_not_block_the_loop(arm, azure_workspace):
    import asyncio

    arm.seed(cluster_resource("cpu"))
    arm.delay = 0.3
    ws, _ = azure_workspace
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1
    t = asyncio.create_task(tick())
    try:
        await ws.list()
    finally:
        t.cancel()
    assert ticks > 20


# -- sign-in and permissions ------------------------------------------------------------------------
@pytest.mark.parametrize("action, call, rbac", [
    ("list", lambda ws: ws.list(), "Microsoft.MachineLearningServices/workspaces/computes/read"),
    ("nodes", lambda ws: ws.nodes("cpu"), "Microsoft.MachineLearningServices/workspaces/computes/listNodes/action"),
])
async def test_missing_role_is_azure_auth_naming_the_action(arm, azure_workspace, action, call, rbac):
    arm.seed(cluster_resource("cpu"))
    arm.denied.add(rbac)
    ws, _ = azure_workspace
    with pytest.raises(AzureError) as e:
        await call(ws)
    assert isinstance(e.value, BackendRefused) and e.value.status == 502
    assert e.value.reason == "azure_auth" and e.value.azure_code == "AuthorizationFailed"
    assert rbac in e.value.message
    assert "does not have authorization to perform action" in e.value.message  # Azure's words, kept


@pytest.mark.parametrize("action", ["start", "stop", "restart", "delete", "write"])
@pytest.mark.fault
async def test_missing_role_on_an_operation_fails_it_with_azure_auth(arm, azure_workspace, action):
    arm.seed(instance_resource("bob-dev", "Stopped" if action == "start" else "Running"))
    arm.denied.add("Microsoft.MachineLearningServices/workspaces/computes/"
                   + (action if action in ("delete", "write") else f"{action}/action"))
    ws, _ = azure_workspace
    before = {t.name: t.state for t in await ws.list()}
    with pytest.raises(AzureError) as e:
        if action == "write":
            await ws.create("alice-dev", "compute-instance", {}, wait=True)
        else:
            await getattr(ws, action)("bob-dev", wait=True)
    # Refused by Azure: the caller's error, and nothing changed.
    assert e.value.reason == "azure_auth" and e.value.status == 502
    assert "Microsoft.MachineLearningServices/workspaces/computes/" in e.value.message
    assert {t.name: t.state for t in await ws.list()} == before
    assert await ws.running_operation("bob-dev") is None


@pytest.mark.fault
async def test_failed_sign_in_is_azure_auth(arm, workspace_for, azure_env):
    arm.token_error = (400, {"error": "invalid_request", "error_description": "Identity not found"})
    # Past a failed managed identity the default chain would run developer tools (az, azd, pwsh),
    # whose own traffic no in-process guard sees: keep the chain to managed identity here.
    azure_env.setenv("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")
    ws, _ = workspace_for(arm)
    with pytest.raises(AzureError) as e:
        await ws.list()
    assert e.value.reason == "azure_auth" and e.value.http_status is None
    assert "Could not sign in to Azure" in e.value.message
    assert arm.requests == []  # nothing reached Resource Manager without a token


async def test_managed_identity_token_is_for_the_endpoint_in_use(arm, azure_workspace):
    ws, _ = azure_workspace
    await ws.list()
    assert arm.token_requests, "the managed-identity endpoint was not used"
    tr = arm.token_requests[0]
    assert tr.query["resource"] == arm.base_url  # the scope follows the endpoint
    assert tr.headers["secret"] == arm.msi_secret
    assert all(r.headers["authorization"].startswith("Bearer standin.") for r in arm.requests)


async def test_endpoint_from_config_when_no_environment_override(arm, workspace_for, azure_env):
    from traitlets.config import Config

    azure_env.delenv("JUPYTER_COMPUTE_ARM_ENDPOINT")
    cfg = Config()
    cfg.AzureML.resource_manager_endpoint = arm.base_url + "/"
    ws, backend = workspace_for(arm, config=cfg)
    assert backend.arm.endpoint == arm.base_url
    assert await ws.list() == []
    assert arm.token_requests[0].query["resource"] == arm.base_url


async def test_ca_bundle_from_requests_ca_bundle_reaches_the_async_clients(arm, workspace_for, azure_env):
    import certifi

    # SSL_CERT_FILE names a bundle without the stand-in's CA: only REQUESTS_CA_BUNDLE trusts it,
    # and aiohttp would not read that variable by itself.
    azure_env.setenv("REQUESTS_CA_BUNDLE", arm.ca_path)
    azure_env.setenv("SSL_CERT_FILE", certifi.where())
    ws, _ = workspace_for(arm)
    assert await ws.list() == []


async def test_tls_is_verified(arm, workspace_for, azure_env):
    import certifi

    azure_env.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    azure_env.setenv("SSL_CERT_FILE", certifi.where())
    ws, _ = workspace_for(arm)
    with pytest.raises((Unavailable, AzureError)):
        await ws.list()
    assert arm.requests == []


async def test_nothing_contacts_azure_until_asked(arm, azure_workspace):
    ws, backend = azure_workspace
    assert {k.name for k in ws.kinds()} >= {"compute-instance", "compute-cluster"}
    await ws.close()
    assert arm.requests == [] and arm.token_requests == []


async def test_explicit_credential_is_used(arm, workspace_for):
    from azure.identity.aio import ManagedIdentityCredential

    async with ManagedIdentityCredential(connection_verify=arm.ca_path) as cred:
        ws, _ = workspace_for(arm, credential=cred)
        assert await ws.list() == []
    assert arm.token_requests


# -- secrets ----------------------------------------------------------------------------------------
async def test_admin_password_goes_to_azure_and_nowhere_else(arm, azure_workspace, tmp_path, caplog):
    marker = "Marker!Secret-7d1e9"
    ws, _ = azure_workspace
    caplog.set_level(logging.DEBUG)
    op = await ws.create("cpu", "compute-cluster", {"admin_username": "alice", "admin_password": marker},
                         wait=True, on_progress=lambda o: None)
    target, listed = await ws.get("cpu"), await ws.list()
    assert op.status.value == "succeeded", op.error
    assert marker in arm.arm_requests("PUT")[0].raw.decode()  # Azure got it
    for text in (op.model_dump_json(), target.model_dump_json(), json.dumps([t.model_dump(mode="json") for t in listed]),
                 caplog.text):
        assert marker not in text
    assert not files_holding(tmp_path, marker)


# -- mapping and discovery --------------------------------------------------------------------------
@pytest.mark.parametrize("ctype, provisioning, word, state", [
    ("ComputeInstance", "Creating", None, State.creating),
    ("ComputeInstance", "Succeeded", "Creating", State.creating),
    ("ComputeInstance", "Succeeded", "SettingUp", State.creating),
    ("ComputeInstance", "Succeeded", "UserSettingUp", State.creating),
    ("ComputeInstance", "Succeeded", "Starting", State.starting),
    ("ComputeInstance", "Succeeded", "Stopping", State.stopping),
    ("ComputeInstance", "Succeeded", "Restarting", State.restarting),
    ("ComputeInstance", "Succeeded", "Deleting", State.deleting),
    ("ComputeInstance", "Deleting", "Running", State.deleting),
    ("ComputeInstance", "Succeeded", "Running", State.running),
    ("ComputeInstance", "Succeeded", "JobRunning", State.running),
    ("ComputeInstance", "Succeeded", "Stopped", State.stopped),
    ("ComputeInstance", "Failed", "CreateFailed", State.failed),
    ("ComputeInstance", "Succeeded", "SetupFailed", State.failed),
    ("ComputeInstance", "Succeeded", "UserSetupFailed", State.failed),
    ("ComputeInstance", "Succeeded", "Unusable", State.failed),
    ("ComputeInstance", "Succeeded", "Unknown", State.unknown),
    ("ComputeInstance", "Succeeded", "Hibernating", State.unknown),
    ("AmlCompute", "Succeeded", None, State.running),
    ("AmlCompute", "Creating", None, State.creating),
    ("AmlCompute", "Deleting", None, State.deleting),
    ("AmlCompute", "Failed", None, State.failed),
    ("AmlCompute", "Unknown", None, State.unknown),
    ("AmlCompute", "Canceled", None, State.unknown),
])
def test_state_mapping(ctype, provisioning, word, state):
    res = {"properties": {"computeType": ctype, "provisioningState": provisioning, "properties": {"state": word}}}
    got, provider = state_of(res)
    assert got == state
    assert provider == (word or provisioning)


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))


def test_discover_workspaces_like_from_config(tmp_path):
    ws = lambda n: {"subscription_id": "8f3a2c1d-4b5e-4f60-9a7b-1c2d3e4f5a6b", "resource_group": "rg",  # noqa: E731
                    "workspace_name": n}
    root = tmp_path / "project"
    deep = root / "notebooks" / "week1"
    deep.mkdir(parents=True)
    _write(str(root / ".azureml" / "config.json"), ws("team"))
    _write(str(root / "notebooks" / "aml_config" / "config.json"), ws("legacy"))
    _write(str(deep / "config.json"), {"name": "not a workspace"})  # another tool's config.json
    _write(str(tmp_path / "config.json"), "{not json")
    found = discover_workspaces(str(deep))
    assert [w["workspace_name"] for w in found] == ["legacy", "team"]  # nearest first
    assert found[1]["config_path"] == str(root / ".azureml" / "config.json")
    assert set(found[0]) == {"subscription_id", "resource_group", "workspace_name", "config_path"}


def test_discover_reads_scope_and_folder_itself(tmp_path):
    _write(str(tmp_path / "config.json"), {
        "Scope": "/subscriptions/8f3a2c1d-4b5e-4f60-9a7b-1c2d3e4f5a6b/resourceGroups/rg-a/providers/"
                 "Microsoft.MachineLearningServices/workspaces/ws-a"})
    _write(str(tmp_path / ".azureml" / "config.json"), {
        "subscription_id": "8f3a2c1d-4b5e-4f60-9a7b-1c2d3e4f5a6b", "resource_group": "RG-A", "workspace_name": "WS-A"})
    found = discover_workspaces(str(tmp_path))
    assert [(w["resource_group"], w["workspace_name"]) for w in found] == [("rg-a", "ws-a")]  # the same one once
    assert discover_workspaces(str(tmp_path / "nowhere")) == found


def test_discover_nothing(tmp_path):
    assert discover_workspaces(str(tmp_path)) == []


def test_workspace_alias_defaults_to_the_name_with_a_suffix_on_a_clash():
    from jupyter_compute.families.azureml.discovery import workspace_alias

    assert workspace_alias("team", set()) == "team"
    assert workspace_alias("team", {"team"}) == "team-2"
    assert workspace_alias("team", {"team", "team-2"}) == "team-3"
    assert workspace_alias("local", set()) == "local-2"


# -- clouds, credentials, recordings folder ---------------------------------------------------------
@pytest.mark.parametrize("cloud, endpoint, authority", [
    ("AzureCloud", "https://management.azure.com", "login.microsoftonline.com"),
    ("AzureChinaCloud", "https://management.chinacloudapi.cn", "login.chinacloudapi.cn"),
    ("AzureUSGovernment", "https://management.usgovcloudapi.net", "login.microsoftonline.us"),
])
def test_cloud_picks_endpoint_authority_and_scope(azure_env, cloud, endpoint, authority):
    from traitlets.config import Config

    from jupyter_compute.families.azureml.credential import arm_scope, authority_host
    from jupyter_compute.families.azureml.config import AzureML

    cfg = Config()
    cfg.AzureML.cloud = cloud
    settings = AzureML(config=cfg)
    assert settings.endpoint() == endpoint
    assert arm_scope(settings.endpoint()) == endpoint + "/.default"
    assert authority_host(settings.authority()) == authority


async def test_a_token_for_another_audience_is_azure_auth(arm, azure_workspace):
    arm.seed(cluster_resource("cpu"))
    ws, _ = azure_workspace
    await ws.list()
    with arm.lock:  # the stand-in now holds the issued token to be for the public cloud
        for t in arm.tokens:
            arm.tokens[t] = "https://management.azure.com"
    with pytest.raises(AzureError) as e:
        await ws.get("cpu")
    assert e.value.reason == "azure_auth" and e.value.azure_code == "InvalidAuthenticationTokenAudience"
    assert "did not accept the sign-in" in e.value.message and "wrong audience" in e.value.message


async def test_synchronous_credentials_run_off_the_event_loop():
    import asyncio
    import threading

    from azure.core.credentials import AccessToken

    from jupyter_compute.families.azureml.credential import ThreadedCredential

    class Slow:
        closed = False

        def get_token(self, *scopes, **kw):
            assert threading.current_thread() is not threading.main_thread()
            time.sleep(0.2)
            return AccessToken("t", int(time.time()) + 3600)

        def close(self):
            Slow.closed = True

    cred = ThreadedCredential(Slow())
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1
    t = asyncio.create_task(tick())
    token = await cred.get_token("https://example/.default")
    t.cancel()
    await cred.close()
    assert token.token == "t" and ticks >= 10 and Slow.closed


def test_missing_recordings_fail_under_ci_and_skip_elsewhere(monkeypatch, tmp_path):
    import tests.standins.azure as helpers

    monkeypatch.setattr(helpers, "RECORDINGS", str(tmp_path / "absent"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        helpers.recordings()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        helpers.recordings()
