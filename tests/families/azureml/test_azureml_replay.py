"""The Azure ML backend against real recorded Azure traffic, replayed on 127.0.0.1.

The recordings live in ../shared/azure-recordings beside the repository (never copied in). Without
them these tests are skipped, except under CI, where they fail.
"""
from __future__ import annotations

import os

import pytest

from jupyter_compute.core.models import State
from tests.standins.arm import ArmStandIn
from tests.standins.azure import azure_env, network_guard, recordings, workspace_for  # noqa: F401
from tests.standins.replay import ArmReplayer, recorded_computes

# Each test is a few requests to a replayer on loopback: fail rather than hang.
pytestmark = pytest.mark.timeout(60)

SDK = "sdk_test_compute.pyTestComputetest_compute_instance_stop_start_restart.json"
CLI_AML = "cli_test_compute_aml.yaml"
CLI_CI = "cli_test_compute_compute_instance.yaml"
PS = "ps_Get-AzMLWorkspaceCompute.Recording.json"


@pytest.fixture
def replay(azure_env):
    """Start a replayer for recording files: ``replay(SDK, complete_truncated=True)``."""
    started: list[ArmReplayer] = []

    def start(*files: str, complete_truncated: bool = False) -> ArmReplayer:
        folder = recordings()
        server = ArmReplayer(*(os.path.join(folder, f) for f in files), complete_truncated=complete_truncated)
        server.start()
        started.append(server)
        for k, v in server.env().items():
            azure_env.setenv(k, v)
        return server

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def workspace(workspace_for):
    """``workspace(subscription, resource_group, name)``: a workspace on what the replayer serves."""
    def make(sub: str, rg: str, name: str):
        return workspace_for(subscription_id=sub, resource_group=rg, workspace_name=name)[0]
    return make


async def test_list_recorded_computes_with_their_states(replay, workspace):
    replay(PS)
    ws = workspace("9e223dbe-3399-4e19-88eb-0975f02ac87f", "ml-test", "mlworkspace-test2")
    listed, single = {t.name: t for t in await ws.list()}, await ws.get("jiajicompute1")
    assert set(listed) == {"batch-cluster", "jiajicompute1"}
    cluster, ci = listed["batch-cluster"], listed["jiajicompute1"]
    assert (cluster.kind, cluster.state, cluster.provider_state) == ("compute-cluster", State.running, "Succeeded")
    assert (cluster.nodes.current, cluster.nodes.min, cluster.nodes.max) == (0, 0, 1)  # scaled to zero: 0/1
    assert cluster.properties["idle_seconds_before_scaledown"] == 120
    assert (ci.kind, ci.state, ci.provider_state) == ("compute-instance", State.running, "Running")
    assert ci.properties["created_by"]["user_id"] == "6205f759-1234-453c-9712-34d7671bceff"
    assert {a["name"] for a in ci.properties["applications"]} == {"Jupyter", "JupyterLab"}
    assert ci.properties["ssh"]["port"] == 50000
    assert single.state == State.running and single.properties == ci.properties


async def test_list_mixed_workspace_from_the_cli_recording(replay, workspace):
    server = replay(CLI_AML)
    ws = workspace("00000000-0000-0000-0000-000000000000", "000000000000000", "000000000000000")
    # The list in this recording comes after the cluster's create and update; replay them first.
    server.cursor = max(i.index for i in server.interactions if i.method == "PUT")
    assert {t.name: (t.kind, t.state, t.provider_state) for t in await ws.list()} == {
        "locationtest2": ("compute-cluster", State.running, "Succeeded"),
        "repro-test": ("compute-instance", State.stopped, "Stopped"),
        "repro-test-old": ("compute-instance", State.stopped, "Stopped"),
        "nthande-enable": ("compute-instance", State.running, "Running"),
        "testcomp007cc1": ("compute-cluster", State.running, "Succeeded"),
    }


async def test_the_recorded_stop_schedule_reads_as_a_table(replay, workspace):
    from jupyter_compute.commands import plain, text_detail, text_table

    server = replay(CLI_AML)
    ws = workspace("00000000-0000-0000-0000-000000000000", "000000000000000", "000000000000000")
    server.cursor = max(i.index for i in server.interactions if i.method == "PUT")
    targets = {t.name: t for t in await ws.list()}
    ci = targets["repro-test"]
    assert ci.properties["schedules"] == [{"action": "stop", "enabled": True, "cron": "0 10 * * 2,5",
                                           "when": "cron 0 10 * * 2,5", "time_zone": "UTC"}]
    listed = text_table("targets", plain(list(targets.values())))
    row = next(line for line in listed.splitlines() if line.startswith("repro-test "))
    assert row.endswith("stop cron 0 10 * * 2,5 (UTC)") and "SCHEDULES" in listed.splitlines()[0]
    shown = text_detail(plain(ci)).split("schedules:\n", 1)[1].splitlines()
    assert shown[0].split() == ["ACTION", "WHEN", "TIME", "ZONE", "ENABLED"]
    assert shown[1].split() == ["stop", "cron", "0", "10", "*", "*", "2,5", "UTC", "yes"]


def test_a_recurrence_schedule_says_when_it_fires():
    from jupyter_compute.families.azureml.resources import schedule_of

    s = schedule_of({"triggerType": "Recurrence", "action": "Start", "status": "Disabled",
                     "recurrence": {"frequency": "Week", "interval": 1, "timeZone": "W. Europe Standard Time",
                                    "schedule": {"hours": [8], "minutes": [30], "weekDays": ["Friday", "Monday"]}}})
    assert s["when"] == "every week on Monday, Friday at 08:30"
    assert (s["action"], s["enabled"], s["time_zone"]) == ("start", False, "W. Europe Standard Time")
    assert s["recurrence"] == {"frequency": "Week", "interval": 1, "week_days": ["Monday", "Friday"], "hours": [8],
                               "minutes": [30]}
    assert schedule_of({"triggerType": "Recurrence", "action": "Stop", "recurrence": {
        "frequency": "Day", "interval": 2, "schedule": {"hours": [19, 23], "minutes": [0]}}})["when"] == \
        "every 2 days at 19:00, 23:00"


async def test_create_stop_start_delete_the_recorded_instance(replay, workspace):
    # The recording's delete stops at its first InProgress poll; the replay ends it Succeeded.
    server = replay(SDK, complete_truncated=True)
    ws = workspace("00000000-0000-0000-0000-000000000", "00000", "00000")
    name = "test974959540186"
    recorded_put = next(i for i in server.interactions if i.method == "PUT").request_body
    states: list[tuple[str, State, str]] = []
    progress: list[str] = []
    op = await ws.create(name, "compute-instance", {
        "size": "Standard_DS2_v2", "description": "some_desc_ci", "application_sharing": "shared"},
        wait=True, on_progress=lambda o: progress.append(o.progress))
    assert op.status.value == "succeeded", op.error
    t = await ws.get(name)
    states.append(("create", t.state, t.provider_state))
    for action in ("stop", "start"):
        op = await getattr(ws, action)(name, wait=True)
        assert op.status.value == "succeeded", op.error
        t = await ws.get(name)
        states.append((action, t.state, t.provider_state))
    op = await ws.delete(name, wait=True)
    assert op.status.value == "succeeded", op.error
    last = t
    assert states == [("create", State.running, "Running"), ("stop", State.stopped, "Stopped"),
                      ("start", State.running, "Running")]
    assert any("InProgress" in p for p in progress)
    assert last.properties["applications"][1] == {
        "name": "JupyterLab", "url": "https://test974959540186.eastus2euap.instances.azureml.ms/lab"}
    assert last.properties["last_operation"]["name"] == "Start"
    sent = server.saw("PUT")[0].body
    for key in ("computeType", "description"):
        assert sent["properties"][key] == recorded_put["properties"][key]
    assert sent["properties"]["properties"]["applicationSharingPolicy"] == \
        recorded_put["properties"]["properties"]["applicationSharingPolicy"]
    delete = server.saw("DELETE")[0]
    assert delete.query["underlyingResourceAction"] == "Delete"
    # Every recorded poll of the instance's create, stop and start was served from the recording.
    assert all(r.method == "GET" for r in server.unmatched)
    assert [r.path for r in server.unmatched if "computeOperationsStatus" in r.path] == [
        p.path for p in server.saw("GET", "3022369a")][1:]


async def test_create_update_delete_the_recorded_cluster(replay, workspace):
    server = replay(CLI_AML, complete_truncated=True)
    ws = workspace("00000000-0000-0000-0000-000000000000", "000000000000000", "000000000000000")
    puts = [i for i in server.interactions if i.method == "PUT"]
    op = await ws.create("testcomp007cc1", "compute-cluster", {"size": "STANDARD_DS3_V2", "max_nodes": 1},
                         wait=True)
    assert op.status.value == "succeeded", op.error
    created = await ws.get("testcomp007cc1")
    updated = await ws.update("testcomp007cc1", {"min_nodes": 1, "max_nodes": 4,
                                                 "idle_seconds_before_scaledown": 100})
    op = await ws.delete("testcomp007cc1", wait=True)
    assert op.status.value == "succeeded", op.error
    assert (created.state, created.nodes.min, created.nodes.max, created.nodes.current) == (State.running, 0, 1, 0)
    assert created.properties["allocation_state"] == "Steady"
    assert (updated.state, updated.nodes.min, updated.nodes.max) == (State.running, 1, 4)
    assert updated.properties["allocation_state"] == "Resizing" and updated.properties["target_nodes"] == 1
    assert updated.properties["idle_seconds_before_scaledown"] == 100
    sent_create, sent_update = (r.body for r in server.saw("PUT"))
    rec_create, rec_update = (p.request_body for p in puts)
    assert sent_create["properties"]["properties"]["scaleSettings"]["maxNodeCount"] == \
        rec_create["properties"]["properties"]["scaleSettings"]["maxNodeCount"]
    # The update sends exactly the scale settings Azure's own CLI sent, durations written as Azure writes them.
    assert sent_update["properties"]["properties"]["scaleSettings"] == \
        rec_update["properties"]["properties"]["scaleSettings"]
    for key in ("osType", "vmSize", "vmPriority", "remoteLoginPortPublicAccess", "enableNodePublicIp"):
        assert sent_update["properties"]["properties"][key] == rec_update["properties"]["properties"][key], key
    assert server.saw("DELETE")[0].query["underlyingResourceAction"] == "Delete"


async def test_create_the_recorded_instance_still_setting_up(replay, workspace):
    # The CLI recorded a create with --no-wait: one InProgress poll, then the instance reads Creating.
    server = replay(CLI_CI, complete_truncated=True)
    ws = workspace("00000000-0000-0000-0000-000000000000", "000000000000000", "000000000000000")
    op = await ws.create("testcomp007ci3", "compute-instance", {
        "size": "STANDARD_DS3_V2", "tags": {"test1": "true", "test2": "test"}}, wait=True)
    assert op.status.value == "succeeded", op.error
    t = await ws.get("testcomp007ci3")
    op = await ws.delete("testcomp007ci3", wait=True)
    assert op.status.value == "succeeded", op.error
    assert (t.state, t.provider_state) == (State.creating, "Creating")
    assert t.properties["identity"]["type"] == "SystemAssigned"
    assert t.properties["tags"] == {"test1": "true", "test2": "test"}
    assert server.saw("PUT")[0].body["tags"] == {"test1": "true", "test2": "test"}


async def test_restart_the_recorded_instance(azure_env, workspace_for):
    # No recording holds a restart, so the recorded instance is put into the project's own stand-in.
    instance = next(r for r in recorded_computes(os.path.join(recordings(), SDK))
                    if r["properties"]["properties"]["state"] == "Running")
    with ArmStandIn() as arm:
        for k, v in arm.env().items():
            azure_env.setenv(k, v)
        arm.seed(instance)
        ws, _ = workspace_for(arm)
        before = await ws.get(instance["name"])
        op = await ws.restart(instance["name"], wait=True)
        assert op.status.value == "succeeded", op.error
        after = await ws.get(instance["name"])
        assert before.state == after.state == State.running
        assert after.properties["last_operation"]["name"] == "Restart"
        assert [r.path.rsplit("/", 1)[-1] for r in arm.arm_requests("POST")] == ["restart"]
