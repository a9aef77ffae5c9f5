"""Azure ML end to end, as people run it: ``jupyter compute`` (through ``cli.main``, and as a real
``python -m jupyter_compute.cli`` process where its exit code is the point) and ``jupyter server`` as a
real subprocess, in a folder holding Azure ML's config.json, with JUPYTER_COMPUTE_ARM_ENDPOINT,
MSI_ENDPOINT/MSI_SECRET and the CA variables pointing at the Resource Manager stand-in.

The child processes run under a network guard (tests/standins/netguard): anything they try to
reach besides loopback is refused and recorded, and each test expects that record to be empty; in
this process the guard of tests/standins/azure.py does the same.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers import ServerProcess

from tests.standins.azure import guarded_pythonpath, arm, azure_env, network_guard  # noqa: F401  (fixtures)
from tests.families.azureml.test_azureml_attach import AKS_ID, CASES, MARKER, private_key, rid
from tests.support import COMPUTE_SERVER, cli, files_holding, wait_for

OPERATION = "https://events.jupyter.org/jupyter_compute/operation/v1"
TARGET = "https://events.jupyter.org/jupyter_compute/target/v1"
SUBNET_BAD = rid("Microsoft.Network/virtualNetworks/vnet")  # a network, not one of its subnets


class Project:
    """A folder holding config.json, and how to run ``jupyter compute`` in it."""

    def __init__(self, arm, tmp_path: Path):
        self.arm = arm
        self.folder = tmp_path / "project"
        self.folder.mkdir()
        arm.write_config(str(self.folder))
        config_dir = tmp_path / "jupyter-config"
        config_dir.mkdir()
        (config_dir / "jupyter_compute_config.json").write_text(json.dumps(
            {"AzureML": {"poll_interval": 0.01, "retry_total": 2, "retry_backoff_factor": 0.01}}))
        self.netlog = tmp_path / "netguard.log"
        self.env = {**arm.env(), "JUPYTER_CONFIG_DIR": str(config_dir), "JC_NETGUARD_LOG": str(self.netlog),
                    "PYTHONPATH": guarded_pythonpath()}
        assert {"JUPYTER_COMPUTE_ARM_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET", "REQUESTS_CA_BUNDLE",
                "SSL_CERT_FILE"} <= set(self.env)

    def cli(self, *args: str, input: str = "", ok: bool = True):
        """``jupyter compute ARGS`` in this process, in the folder (the ``project`` fixture's cwd)."""
        assert Path.cwd() == self.folder, "config.json is discovered from the current folder"
        r = cli(*args, env=self.env, input=input)
        if ok:
            assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r

    def process(self, *args: str, input: str = "") -> subprocess.CompletedProcess:
        """``jupyter compute ARGS`` as a process of its own started in the folder, for its exit code."""
        return subprocess.run([sys.executable, "-m", "jupyter_compute.cli", *args], cwd=self.folder,
                              capture_output=True, text=True, env={**os.environ, **self.env}, input=input,
                              timeout=120)

    def json(self, *args: str, **kw) -> object:
        return json.loads(self.cli(*args, "--output", "json", **kw).stdout)

    def stray_connections(self) -> str:
        return self.netlog.read_text() if self.netlog.exists() else ""


@pytest.fixture
def project(arm, tmp_path, monkeypatch):
    p = Project(arm, tmp_path)
    monkeypatch.chdir(p.folder)
    yield p
    assert p.stray_connections() == ""


# -- compute instances and clusters (Azure ML part 1) -----------------------------------------------
def test_cli_manages_instances_and_clusters_of_the_discovered_workspace(project, arm):
    ws = project.json("workspace", "list")
    found = next(w for w in ws if w["kind"] == "azureml")
    assert found["id"] == arm.workspace_name and found["default"]
    assert found["properties"]["config_path"] == str(project.folder / "config.json")
    assert project.json("list") == []

    inst = project.json("create", "alice-dev", "--kind", "compute-instance", "--size", "Standard_DS2_v2",
                        "--idle-shutdown-minutes", "60", "--schedule", "stop=0 19 * * 1-5@UTC")
    assert (inst["kind"], inst["state"], inst["provider_state"]) == ("compute-instance", "running", "Running")
    assert inst["workspace"] == arm.workspace_name
    cluster = project.json("create", "cpu", "--kind", "compute-cluster", "--size", "Standard_DS3_v2",
                           "--max-nodes", "2", "--priority", "low-priority")
    assert (cluster["kind"], cluster["state"], cluster["nodes"]["max"]) == ("compute-cluster", "running", 2)
    put = arm.arm_requests("PUT", "/computes/cpu")[-1].body["properties"]["properties"]
    assert put["vmPriority"] == "LowPriority" and put["scaleSettings"]["maxNodeCount"] == 2

    updated = project.json("update", "cpu", "--max-nodes", "4", "--min-nodes", "1")
    assert (updated["nodes"]["min"], updated["nodes"]["max"]) == (1, 4)
    assert arm.compute("cpu")["properties"]["properties"]["scaleSettings"]["maxNodeCount"] == 4

    assert project.json("stop", "alice-dev", "--yes")["state"] == "stopped"
    assert arm.compute("alice-dev")["properties"]["properties"]["state"] == "Stopped"
    assert project.json("start", "alice-dev")["state"] == "running"
    r = project.cli("restart", "alice-dev", "--yes")
    assert "restart alice-dev: restart in Azure" in r.stderr  # progress, followed to the end
    assert arm.compute("alice-dev")["properties"]["properties"]["lastOperation"]["operationName"] == "Restart"

    arm.set_nodes("cpu", idle=1, running=1)
    nodes = project.json("nodes", "cpu")
    assert sorted(n["state"] for n in nodes) == ["idle", "running"] and all(n["port"] for n in nodes)
    assert [n["address"] for n in project.json("nodes", "alice-dev")] == ["203.0.113.10"]
    sizes = {s["name"]: s for s in project.json("sizes")}
    assert sizes["Standard_DS3_v2"]["vcpus"] == 4 and sizes["Standard_DS3_v2"]["price_per_hour"] == 0.293
    usage = {u["name"]: u for u in project.json("usage")}
    assert usage["Total Cluster Dedicated Regional vCPUs"]["limit"] == 100
    listed = {t["name"]: t for t in project.json("list")}
    assert {n: t["state"] for n, t in listed.items()} == {"alice-dev": "running", "cpu": "running"}
    assert listed["cpu"]["nodes"]["current"] == 2
    table = project.cli("list").stdout
    assert "alice-dev" in table and "compute-cluster" in table

    for name in ("alice-dev", "cpu"):
        r = project.cli("delete", name, "--yes")
        assert f"delete {name}: succeeded" in r.stdout
    assert project.json("list") == []
    assert {r.query["underlyingResourceAction"] for r in arm.arm_requests("DELETE")} == {"Delete"}
    # Signed in through the stand-in's managed identity, for the stand-in's own URL.
    assert arm.token_requests and {r.query["resource"] for r in arm.token_requests} == {arm.base_url}
    assert {r.api_version for r in arm.arm_requests()} == {"2023-04-01"}


@pytest.mark.parametrize("args, field", [
    (["create", "cpu-cluster-1", "--kind", "compute-instance"], "/name"),
    (["create", "c", "--kind", "compute-cluster"], "/name"),
    (["create", "cpu", "--kind", "compute-cluster", "--min-nodes", "3", "--max-nodes", "2"], "/min_nodes"),
    (["create", "alice-dev", "--kind", "compute-instance", "--idle-shutdown-minutes", "5"],
     "/idle_shutdown_minutes"),
    (["create", "cpu", "--kind", "compute-cluster", "--subnet", SUBNET_BAD], "/subnet"),
    (["create", "alice-dev", "--kind", "compute-instance", "--size", "Standard DS3"], "/size"),
    (["create", "cpu", "--kind", "compute-cluster", "--admin-username", "azureuser"], "/admin_password"),
    (["attach", "k8s", "--kind", "kubernetes", "--resource-id", "aks-ml"], "/resource_id"),
    (["attach", "vm1", "--kind", "virtual-machine", "--resource-id", AKS_ID, "--admin-username", "u"],
     "/resource_id"),
    (["attach", "vm1", "--kind", "virtual-machine", "--resource-id", CASES["virtual-machine"][0]["resource_id"],
      "--admin-username", "azureuser"], "/admin_password"),
    (["attach", "k8s", "--kind", "kubernetes", "--resource-id", AKS_ID, "--namespace", "Bad_NS"], "/namespace"),
    (["attach", "old", "--kind", "batch", "--resource-id", AKS_ID], "/kind"),
    (["create", "old", "--kind", "aci"], "/kind"),
])
def test_invalid_requests_exit_2_before_azure_is_called(project, arm, args, field):
    arm.clear_log()
    r = project.process(*args, "--output", "json")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert json.loads(r.stderr)["field"] == field
    assert arm.requests == [] and arm.token_requests == []


@pytest.mark.parametrize("args, words", [
    (["attach", "vm1", "--kind", "virtual-machine", "--admin-password", MARKER], "--admin-password-stdin"),
    (["attach", "dbx", "--kind", "databricks", "--access-token", MARKER], "--access-token-stdin"),
    (["attach", "k8s", "--kind", "kubernetes", "--instance-type", "gpu:cores=4"], "--instance-type takes"),
])
def test_usage_errors_exit_2_and_never_echo_a_secret(project, arm, args, words):
    arm.clear_log()
    r = project.process(*args)
    assert r.returncode == 2 and words in r.stderr and MARKER not in r.stderr + r.stdout
    assert arm.requests == [] and arm.token_requests == []


def test_a_misspelt_cloud_is_refused_with_the_clouds_named(project, arm):
    """A typo in c.AzureML.cloud would send sign-ins and requests to the public cloud: nothing starts."""
    config = Path(project.env["JUPYTER_CONFIG_DIR"]) / "jupyter_compute_config.json"
    settings = json.loads(config.read_text())
    settings["AzureML"]["cloud"] = "AzureChinaClod"
    config.write_text(json.dumps(settings))
    arm.clear_log()
    r = project.process("list")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "AzureChinaClod" in r.stderr and "AzureCloud, AzureChinaCloud, AzureUSGovernment" in r.stderr
    assert "Did you mean AzureChinaCloud?" in r.stderr and "Traceback" not in r.stderr
    assert arm.requests == [] and arm.token_requests == []

    # A Jupyter server says so at start-up and runs without the extension, reaching no Azure.
    server = ServerProcess(project.folder, env=project.env)
    argv = [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={server.port}", "--ip=127.0.0.1",
            f"--ServerApp.token={server.token}", f"--ServerApp.root_dir={project.folder}",
            COMPUTE_SERVER] + (["--allow-root"] if os.geteuid() == 0 else [])
    proc = subprocess.Popen(argv, stdout=open(server.log, "ab"), stderr=subprocess.STDOUT, env=server.env)
    try:
        wait_for(lambda: "is running at" in server.log.read_text() or proc.poll() is not None,
                 timeout=60, message="the server to start")
        line = next(x for x in server.log.read_text().splitlines() if "jupyter_compute is not loaded" in x)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert "c.AzureML.cloud is 'AzureChinaClod'" in line and "AzureCloud, AzureChinaCloud, AzureUSGovernment" in line
    assert arm.requests == [] and arm.token_requests == []


# -- attached compute (Azure ML part 2) -------------------------------------------------------------
def test_cli_attaches_and_detaches_kubernetes(project, arm):
    r = project.cli("attach", "k8s", "--kind", "kubernetes", "--resource-id", AKS_ID, "--namespace", "azureml",
                    "--instance-type", "gpu-small:cpu=4,memory=16Gi,gpu=1", "--instance-type", "cpu-small")
    assert "kind: kubernetes" in r.stdout and "state: running" in r.stdout
    body = arm.arm_requests("PUT", "/computes/k8s")[-1].body["properties"]
    assert (body["computeType"], body["resourceId"]) == ("Kubernetes", AKS_ID)
    assert body["properties"] == {"namespace": "azureml", "defaultInstanceType": "gpu-small", "instanceTypes": {
        "gpu-small": {"resources": {"requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                                    "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}}},
        "cpu-small": {"resources": {"requests": {}, "limits": {}}}}}
    shown = project.json("show", "k8s")
    assert shown["managed"] is False and shown["properties"]["attached_resource_id"] == AKS_ID

    # Once attached, the same cluster is refused under another name, naming the existing target.
    r = project.cli("attach", "k8s-b", "--kind", "kubernetes", "--resource-id", AKS_ID, ok=False)
    assert r.returncode == 1 and "already attached" in r.stderr and "'k8s'" in r.stderr and "--force" in r.stderr
    assert not arm.arm_requests("PUT", "/computes/k8s-b")
    r = project.cli("attach", "k8s-b", "--kind", "kubernetes", "--resource-id", AKS_ID, "--force")
    assert "'k8s' stop working" in r.stderr

    r = project.cli("update", "k8s", "--namespace", "other", ok=False)
    assert r.returncode == 2 and "detach it" in r.stderr and "attach it again" in r.stderr

    r = project.cli("detach", "k8s-b", ok=False)  # no terminal to confirm on
    assert r.returncode == 2 and "The resource itself is left alone." in r.stderr and "--yes" in r.stderr
    for name in ("k8s", "k8s-b"):
        r = project.cli("detach", name, "--yes")
        assert f"detach {name}: succeeded" in r.stdout and "left as it is" in r.stderr
    assert {r.query["underlyingResourceAction"] for r in arm.arm_requests("DELETE")} == {"Detach"}
    assert arm.deleted_resources == [] and project.json("list") == []


def test_cli_secrets_go_to_azure_only(project, arm, compute_db, tmp_path):
    key = private_key()
    key_file = tmp_path / "id_ed25519"
    key_file.write_text(key)
    vm = CASES["virtual-machine"][0]["resource_id"]
    outputs = [
        project.cli("attach", "vm1", "--kind", "virtual-machine", "--resource-id", vm, "--admin-username",
                    "azureuser", "--ssh-port", "2222", "--admin-password-stdin", input=MARKER + "\n"),
        project.cli("attach", "vm2", "--kind", "virtual-machine", "--resource-id", rid(
            "Microsoft.Compute/virtualMachines/dsvm-02"), "--admin-username", "azureuser",
            "--ssh-private-key", str(key_file)),
        project.cli("attach", "dbx", "--kind", "databricks", "--resource-id", CASES["databricks"][0]["resource_id"],
                    "--access-token-stdin", input="dapi" + MARKER + "\n"),
        project.cli("attach", "hdi", "--kind", "hdinsight", "--resource-id", CASES["hdinsight"][0]["resource_id"],
                    "--admin-username", "sshuser", "--admin-password-stdin", input=MARKER + "\n"),
        project.cli("list"), project.cli("show", "vm1"), project.cli("nodes", "vm1"), project.cli("nodes", "vm2"),
    ]
    assert arm.secrets_of("vm1") == {"password": MARKER}
    assert arm.secrets_of("vm2") == {"privateKeyData": key}
    assert arm.secrets_of("dbx") == {"databricksAccessToken": "dapi" + MARKER}
    assert arm.secrets_of("hdi") == {"password": MARKER}
    assert "2222" in outputs[6].stdout and "203.0.113." in outputs[6].stdout
    for name in ("vm1", "vm2", "dbx", "hdi"):
        outputs.append(project.cli("detach", name, "--yes"))
    key_line = key.splitlines()[1]
    for r in outputs:
        assert MARKER not in r.stdout + r.stderr and key_line not in r.stdout + r.stderr
    assert not files_holding(compute_db.parent, MARKER) and not files_holding(compute_db.parent, key_line)


# -- the same through a Jupyter server subprocess ---------------------------------------------------
async def _events_during(server: ServerProcess, steps, last):
    """Run ``steps(server)`` in a thread while reading the server's event bus, and go on reading until
    ``last(result, event)`` holds for an event seen (the last one the steps cause); return both."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(HTTPRequest(
        f"ws://127.0.0.1:{server.port}/api/events/subscribe",
        headers={"Authorization": f"token {server.token}"}))
    seen: list[dict] = []
    task = asyncio.get_running_loop().run_in_executor(None, steps, server)
    deadline = time.monotonic() + 90
    while not task.done() and time.monotonic() < deadline:
        try:
            msg = await asyncio.wait_for(conn.read_message(), timeout=0.5)
        except asyncio.TimeoutError:
            continue
        if msg is None:
            break
        seen.append(json.loads(msg))
    result = await task
    # Events are published in order: once the last step's is in, so is every other.
    while not any(last(result, e) for e in seen):
        msg = await asyncio.wait_for(conn.read_message(), timeout=max(0.1, deadline - time.monotonic()))
        assert msg is not None, f"the event bus closed before the last event; saw {seen}"
        seen.append(json.loads(msg))
    conn.close()
    return result, seen


async def test_server_rest_and_events_for_the_discovered_workspace(project, arm):
    from tests.families.azureml.test_azureml import cluster_resource, instance_resource

    arm.seed(instance_resource("bob-dev", "Stopped"))
    arm.seed(cluster_resource("gpu-spot", mx=8))
    server = ServerProcess(project.folder, env=project.env)
    server.start(extra_args=("--AzureML.poll_interval=0.01",))
    try:
        code, body = server.request("GET", "workspaces")
        ws = next(w for w in body["workspaces"] if w["kind"] == "azureml")
        assert ws["properties"]["source"] == "discovered" and ws["id"] == arm.workspace_name
        wid = ws["id"]

        def steps(s: ServerProcess):
            out = {}
            out["list"] = s.request("GET", f"workspaces/{wid}/targets")
            code, body = s.request("POST", f"workspaces/{wid}/targets",
                                   {"name": "carol-dev", "kind": "compute-instance", "size": "Standard_DS3_v2"})
            assert code == 202, body
            out["create"] = s.wait_op(body["operation"]["id"])
            code, body = s.request("POST", f"workspaces/{wid}/targets",
                                   {"name": "k8s", "kind": "kubernetes", "resource_id": AKS_ID})
            out["attach"] = s.wait_op(body["operation"]["id"])
            code, body = s.request("POST", f"workspaces/{wid}/targets",
                                   {"name": "dbx", "kind": "databricks", "access_token": MARKER,
                                    "resource_id": CASES["databricks"][0]["resource_id"]})
            out["attach_dbx"] = s.wait_op(body["operation"]["id"])
            seen = len(arm.requests), len(arm.token_requests)
            out["bad"] = s.request("POST", f"workspaces/{wid}/targets",
                                   {"name": "cpu-cluster-1", "kind": "compute-instance"})
            out["bad_vm"] = s.request("POST", f"workspaces/{wid}/targets",
                                      {"name": "vm1", "kind": "virtual-machine", "resource_id": AKS_ID,
                                       "admin_username": "azureuser", "admin_password": MARKER})
            out["bad_reached_azure"] = (len(arm.requests), len(arm.token_requests)) != seen
            out["dup"] = s.request("POST", f"workspaces/{wid}/targets",
                                   {"name": "k8s2", "kind": "aks", "resource_id": AKS_ID})
            code, body = s.request("DELETE", f"workspaces/{wid}/targets/k8s")
            out["detach"] = s.wait_op(body["operation"]["id"])
            code, body = s.request("DELETE", f"workspaces/{wid}/targets/dbx")
            out["detach_dbx"] = s.wait_op(body["operation"]["id"])
            out["after"] = s.request("GET", f"workspaces/{wid}/targets")
            return out

        def last(out, event):  # the dbx detach's end, the steps' last operation
            return (event.get("schema_id") == OPERATION and event.get("id") == out["detach_dbx"]["id"]
                    and event.get("status") != "running")

        out, events = await _events_during(server, steps, last)
    finally:
        server.stop()
    code, listed = out["list"]
    assert code == 200 and {(t["name"], t["state"]) for t in listed["targets"]} == {
        ("bob-dev", "stopped"), ("gpu-spot", "running")}
    assert out["create"]["status"] == "succeeded", out["create"]
    assert out["attach"]["status"] == "succeeded" and out["attach_dbx"]["status"] == "succeeded"
    assert out["bad"][0] == 400 and out["bad"][1]["field"] == "/name"
    assert out["bad_vm"][0] == 400 and out["bad_vm"][1]["field"] == "/resource_id"
    assert out["bad_reached_azure"] is False
    assert out["dup"][0] == 409 and out["dup"][1]["existing"] == "k8s"
    assert out["detach"]["action"] == "detach" and out["detach"]["status"] == "succeeded"
    names = {t["name"] for t in out["after"][1]["targets"]}
    assert names == {"bob-dev", "gpu-spot", "carol-dev"}
    assert not arm.arm_requests("PUT", "/computes/cpu-cluster-1") and not arm.arm_requests("PUT", "/computes/k8s2")

    ops = [e for e in events if e["schema_id"] == OPERATION]
    create_progress = [e["progress"] for e in ops if e["target"] == "carol-dev"]
    assert any("InProgress" in p for p in create_progress) and create_progress[-1] == "created"
    assert any(e["schema_id"] == TARGET and e["name"] == "carol-dev" and e["state"] == "running" for e in events)
    assert any(e["schema_id"] == TARGET and e["name"] == "k8s" and e["change"] == "removed" for e in events)
    assert any(e["target"] == "k8s" and e["action"] == "detach" and "left as it is" in e["progress"] for e in ops)
    assert arm.secrets_of("dbx") == {"databricksAccessToken": MARKER}
    assert MARKER not in json.dumps(events) and MARKER not in json.dumps(out)
    assert MARKER not in server.log.read_text()
