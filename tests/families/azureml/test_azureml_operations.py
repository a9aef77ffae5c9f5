"""Azure operations outlive the process that began them, and Azure decides what only Azure can.

An operation Azure accepted is recorded with the URL it is followed by (Azure-AsyncOperation, or
Location), so that ``--no-wait`` returns at once and whichever process comes next follows it: a
Jupyter server (which sends its events), ``jupyter compute wait``, or one look by any CLI call.
Everything runs against the Resource Manager stand-in; CLI calls are real processes, so that
"the process that began it exited" is true, not pretended.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from jupyter_compute.core.errors import BackendRefused, Conflict
from jupyter_compute.core.models import State
from tests.servers import ServerProcess
from tests.standins.azure import arm, azure_env, azure_workspace, network_guard, workspace_for  # noqa: F401
from tests.families.azureml.test_azureml import SUBNET, UAI, cluster_resource, instance_resource
from tests.families.azureml.test_azureml_cli import OPERATION, Project, _events_during, project  # noqa: F401
from tests.support import await_for, wait_for


def operations(db) -> list[dict]:
    """The operations the store holds, read as another process would."""
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute("SELECT * FROM operations ORDER BY started")]


# -- --no-wait, wait, and a look by the next call -----------------------------------------------------
def test_no_wait_returns_once_azure_accepted_and_any_later_call_follows(project, arm, compute_db):
    arm.lro_polls = 10**6  # Azure goes on until the test lets it end

    r = project.process("create", "carol-dev", "--kind", "compute-instance", "--no-wait")
    assert r.returncode == 0, r.stderr
    assert arm.in_progress() == ["create"], "the CLI waited for Azure to finish"
    [op] = operations(compute_db)
    assert op["status"] == "running" and op["action"] == "create"
    follow = json.loads(op["follow"])
    assert follow["via"] == "azure-asyncoperation" and "/computeOperationsStatus/" in follow["url"]
    assert follow["resource"].endswith("/computes/carol-dev")
    assert f"(operation {op['id']})" in r.stdout and "jupyter compute wait carol-dev" in r.stdout

    # A later call looks once: Azure is not done, so the operation still runs and the target says so.
    shown = project.json("show", "carol-dev")
    assert shown["state"] == "creating"
    assert operations(compute_db)[0]["status"] == "running"
    r = project.process("create", "carol-dev", "--kind", "compute-instance")
    assert r.returncode == 1 and "already exists" in r.stderr

    # `wait` takes the operation over and follows it to Azure's end.
    waiting = subprocess.Popen([sys.executable, "-m", "jupyter_compute.cli", "wait", "carol-dev"],
                               cwd=project.folder, env={**os.environ, **project.env}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: operations(compute_db)[0]["owner"] != op["owner"], timeout=60,
                 message="`wait` to follow the create")
        assert waiting.poll() is None and operations(compute_db)[0]["status"] == "running"
        arm.finish_operations()
        out, err = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, err
    assert "create carol-dev: succeeded" in out and "creating" not in out
    assert operations(compute_db)[0]["status"] == "succeeded"
    assert project.json("show", "carol-dev")["state"] == "running"


@pytest.mark.fault
def test_an_end_azure_reached_unfollowed_is_recorded_by_the_next_call(project, arm, compute_db):
    arm.seed(instance_resource("bob-dev"))
    arm.lro_polls = 10**6
    r = project.process("delete", "bob-dev", "--yes", "--no-wait")
    assert r.returncode == 0, r.stderr
    assert arm.in_progress() == ["delete"]
    arm.finish_operations()  # nobody follows it

    listed = project.json("list")
    assert "bob-dev" not in {t["name"] for t in listed}
    [op] = operations(compute_db)
    assert (op["action"], op["status"]) == ("delete", "succeeded")
    assert project.process("wait", "bob-dev").returncode == 2  # nothing runs on it, and it is gone


@pytest.mark.fault
async def test_a_jupyter_server_follows_what_a_cli_call_began_and_sends_its_events(project, arm, compute_db):
    arm.seed(instance_resource("bob-dev", "Stopped"))
    arm.lro_polls = 10**6
    server = ServerProcess(project.folder, env=project.env)
    server.start(extra_args=("--AzureML.poll_interval=0.05",))
    try:
        def steps(s: ServerProcess):
            r = project.process("start", "bob-dev", "--no-wait")
            assert r.returncode == 0, r.stderr
            [op] = operations(compute_db)
            # The server takes the operation over once the CLI process is gone...
            wait_for(lambda: operations(compute_db)[0]["owner"] != op["owner"], timeout=30,
                     message="the server to follow the start")
            code, body = s.request("GET", f"operations/{op['id']}")
            arm.finish_operations()
            return op, (code, body)

        def last(out, event):
            return (event.get("schema_id") == OPERATION and event.get("id") == out[0]["id"]
                    and event.get("status") == "succeeded")

        (op, (code, during)), events = await _events_during(server, steps, last)
        code2, target = server.request("GET", f"workspaces/{arm.workspace_name}/targets/bob-dev")
    finally:
        server.stop()
    assert code == 200 and during["status"] == "running"
    # ...and its events show the progress the CLI call no longer can.
    mine = [e for e in events if e.get("schema_id") == OPERATION and e.get("id") == op["id"]]
    assert mine[-1]["status"] == "succeeded" and mine[-1]["action"] == "start"
    assert code2 == 200 and target["state"] == "running"
    assert operations(compute_db)[0]["status"] == "succeeded"


# -- only Azure decides what depends on the workspace -----------------------------------------------
def test_no_public_ip_without_subnet_is_azures_call(project, arm, compute_db):
    # A workspace without a managed network refuses it, in Azure's words, with the old check as a hint.
    r = project.process("create", "nopip", "--kind", "compute-instance", "--no-public-ip", "--output", "json")
    assert r.returncode == 1, r.stderr
    err = json.loads(r.stderr)
    assert err["reason"] == "azure_refused" and err["azure_code"] == "BadArgument"
    assert "Without a public IP, compute must be in a virtual network" in err["message"]
    assert "--subnet" in err["message"]
    assert project.json("list") == [] and arm.compute("nopip") is None
    # A workspace with a managed network accepts it as it is.
    arm.set_managed_network("AllowInternetOutbound")
    r = project.process("create", "nopip", "--kind", "compute-instance", "--no-public-ip")
    assert r.returncode == 0, r.stderr
    assert arm.compute("nopip")["properties"]["properties"]["enableNodePublicIp"] is False


@pytest.mark.fault
async def test_a_refusal_is_the_callers_error_and_leaves_nothing(arm, azure_workspace):
    """REST answers it as 502 azure_refused (the handler maps BackendRefused), not as a failed operation."""
    ws, _ = azure_workspace
    with pytest.raises(BackendRefused) as e:
        await ws.create("nopip", "compute-cluster", {"no_public_ip": True})
    assert e.value.status == 502 and e.value.reason == "azure_refused"
    assert "specify a subnet" in e.value.message and "Hint:" in e.value.message
    assert await ws.store.get_target(ws.id, "nopip") is None
    assert [t.name for t in await ws.list()] == []
    op = await ws.create("nopip", "compute-cluster", {"no_public_ip": True, "subnet": SUBNET}, wait=True)
    assert op.status.value == "succeeded", op.error


async def test_a_cluster_gains_a_system_assigned_identity_by_update(arm, azure_workspace):
    arm.seed(cluster_resource("cpu"))
    ws, _ = azure_workspace
    updated = await ws.update("cpu", {"identity": "system-assigned"})
    assert updated.properties["identity"]["type"] == "SystemAssigned"
    updated = await ws.update("cpu", {"identity": UAI})
    assert updated.properties["identity"]["type"] == "SystemAssigned,UserAssigned"
    assert updated.properties["identity"]["user_assigned"] == [UAI]
    last = arm.arm_requests("PUT")[-1].body
    assert last["identity"] == {"type": "SystemAssigned,UserAssigned", "userAssignedIdentities": {UAI: {}}}


async def test_an_update_is_an_operation_another_process_can_follow(arm, workspace_for):
    import asyncio

    arm.seed(cluster_resource("cpu", mx=2))
    arm.lro_polls = 10**6
    ws, _ = workspace_for(arm)
    db = ws.store.sync.path
    update = asyncio.ensure_future(ws.update("cpu", {"max_nodes": 5}))
    async def accepted():  # Azure runs it, and how to follow it is recorded
        return arm.in_progress() == ["update"] and [o for o in operations(db) if o["follow"]]
    await await_for(accepted, message="Azure to accept the update")
    running = await ws.running_operation("cpu")
    assert running is not None and running.action == "update"
    assert json.loads(operations(db)[0]["follow"])["resource"].endswith("/computes/cpu")
    with pytest.raises(Conflict):
        await ws.update("cpu", {"max_nodes": 6})  # one change at a time
    arm.finish_operations()
    updated = await asyncio.wait_for(update, 30)
    assert updated.nodes.max == 5 and (await ws.running_operation("cpu")) is None
    [op] = operations(db)
    assert (op["action"], op["status"], op["progress"]) == ("update", "succeeded", "updated")


# -- Location answers ---------------------------------------------------------------------------------
async def test_operations_answered_with_location_are_followed(arm, azure_workspace):
    arm.lro_via = "location"
    arm.lro_polls = 2
    arm.seed(instance_resource("bob-dev"))
    ws, _ = azure_workspace
    for action in ("stop", "start", "restart"):
        op = await getattr(ws, action)("bob-dev", wait=True)
        assert op.status.value == "succeeded", (action, op.error)
    assert (await ws.get("bob-dev")).state == State.running
    op = await ws.create("cpu", "compute-cluster", {"max_nodes": 2}, wait=True)
    assert op.status.value == "succeeded", op.error
    assert (await ws.get("cpu")).nodes.max == 2
    op = await ws.delete("cpu", wait=True)
    assert op.status.value == "succeeded", op.error
    polls = arm.saw("GET", "computeOperationsResult")
    assert len(polls) >= 5 * 3 and not arm.saw("GET", "computeOperationsStatus")
    assert [t.name for t in await ws.list()] == ["bob-dev"]

    arm.fail_next("create", "QuotaExceeded", "Operation could not be completed as it results in exceeding quota.")
    op = await ws.create("gpu", "compute-cluster", {}, wait=True)
    assert op.status.value == "failed"
    assert op.error["reason"] == "azure_operation_failed" and "exceeding quota" in op.error["message"]


# -- the store: one follower at a time -------------------------------------------------------------
def test_only_one_process_adopts_an_orphaned_operation(tmp_path):
    from jupyter_compute.core.store import Store

    store = Store(str(tmp_path / "c.db"))
    store.add_workspace("ws", "azureml", {})
    op = store.begin_operation("ws", "cpu", "create", "gone", lambda o: True,
                               new_target={"kind": "compute-cluster", "managed": True, "spec": {}, "state": "creating"})
    gone = lambda o: o["owner"] == "gone"  # noqa: E731
    assert store.orphaned_operations("ws", gone) == []  # not followable: nothing was accepted yet
    assert store.fail_stale_operations(lambda o: False) == []
    store.update_operation(op["id"], follow={"url": "https://127.0.0.1/op", "via": "location", "resource": "/x"})
    assert [o["id"] for o in store.orphaned_operations("ws", gone)] == [op["id"]]
    # A followable operation is not failed for its owner's exit: Azure goes on with it.
    assert store.fail_stale_operations(gone) == []
    assert store.adopt_operation(op["id"], "first", gone)["owner"] == "first"
    assert store.adopt_operation(op["id"], "second", gone) is None
    assert store.get_operation(op["id"])["owner"] == "first" and store.get_operation(op["id"])["status"] == "running"
