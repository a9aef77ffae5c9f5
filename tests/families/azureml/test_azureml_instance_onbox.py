"""On an Azure ML compute instance itself: the extension recognises the instance from what it
provides (the ``CI_*`` variables and the ``.nbvm`` file, whose path is a setting), uses its
workspace with no config.json, signs in with its managed identity (MSI_ENDPOINT and MSI_SECRET,
pointing at the Resource Manager stand-in), pins "this instance" with its idle-shutdown countdown
and activity in the REST answer the sidebar reads, asks for an explicit confirmation before it
stops, restarts or deletes itself, and runs cells routed to itself right here.

Child processes (the Jupyter server, notebook kernels) run under the network guard: an attempt to
reach anything but loopback (the instance's public host name included) is recorded, and each test
expects the record to be empty. The CLI runs in this process (through ``cli.main``), where the guard
of tests/standins/azure.py fails the test on any such attempt.
"""
from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from traitlets.config import Config

from jupyter_compute.families.azureml.instance import detect, read_nbvm
from jupyter_compute.core.workspace import Compute
from tests.servers import ServerProcess
from tests.standins.arm import OBJECT_ID, TENANT_ID
from tests.standins.azure import guarded_pythonpath, arm, azure_env, network_guard  # noqa: F401  (fixtures)
from tests.standins.instance import USER_NAME, add_instance, on_instance_env
from tests.support import cli

ME = {"oid": OBJECT_ID, "tid": TENANT_ID, "name": USER_NAME}


class Box:
    """A compute instance, simulated: its variables, its .nbvm file, and a home folder without config.json."""

    def __init__(self, arm, tmp_path: Path, monkeypatch, subscription_var: str = "CI_SUBSCRIPTION_ID"):
        self.arm = arm
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.env, self.nbvm = on_instance_env(arm, tmp_path / "azmnt", "alice-ci", subscription_var=subscription_var)
        self.config_dir = tmp_path / "jupyter-config"
        self.config_dir.mkdir()
        self.settings = {"AzureML": {"poll_interval": 0.05, "retry_total": 2, "retry_backoff_factor": 0.01,
                                     "instance_file": str(self.nbvm)}}
        (self.config_dir / "jupyter_compute_config.json").write_text(json.dumps(self.settings))
        self.netlog = tmp_path / "netguard.log"
        self.env.update(JUPYTER_CONFIG_DIR=str(self.config_dir), JC_NETGUARD_LOG=str(self.netlog),
                        IPYTHONDIR=str(tmp_path / "ipython"),
                        PYTHONPATH=guarded_pythonpath())
        for k, v in self.env.items():
            monkeypatch.setenv(k, v)
        # What runs here (the CLI through cli.main) starts where a terminal on the instance would.
        monkeypatch.chdir(self.home)

    def config(self) -> Config:
        return Config(self.settings)

    def cli(self, *args: str):
        """``jupyter compute ARGS`` in this process, in the home folder, with the instance's variables."""
        return cli(*args)

    def stray_connections(self) -> str:
        return self.netlog.read_text() if self.netlog.exists() else ""


@pytest.fixture
def compute_on(jp_asyncio_loop):
    """Factory: ``compute_on(box, config=None)`` -> the ``Compute`` a process on the box builds (started in
    its home, with its settings or ``config``); each one is closed when the test ends."""
    made: list[Compute] = []

    def make(box: Box, config: Config | None = None) -> Compute:
        compute = Compute.from_config(config or box.config(), start_dir=str(box.home))
        made.append(compute)
        return compute
    yield make
    for compute in reversed(made):
        jp_asyncio_loop.run_until_complete(compute.close())


@pytest.fixture
def box(arm, tmp_path, monkeypatch):
    add_instance(arm, "alice-ci", creator=ME, idle_shutdown_minutes=60)
    add_instance(arm, "other-ci", creator=ME)
    b = Box(arm, tmp_path, monkeypatch)
    yield b
    assert b.stray_connections() == ""


# -- recognising the instance --------------------------------------------------------------------------
def test_the_nbvm_file_is_read_as_the_sdks_read_it(tmp_path):
    f = tmp_path / ".nbvm"
    f.write_text('instance=alice-ci\ndomainsuffix="westeurope.instances.azureml.ms"\n# a comment\nnonsense\n'
                 "certurl = https://westeurope.cert.api.azureml.ms/nbip/token\n")
    assert read_nbvm(str(f)) == {"instance": "alice-ci", "domainsuffix": "westeurope.instances.azureml.ms",
                                 "certurl": "https://westeurope.cert.api.azureml.ms/nbip/token"}
    assert read_nbvm(str(tmp_path / "missing")) == {}


SUB = "8f3a2c1d-4b5e-4f60-9a7b-1c2d3e4f5a6b"
URI = (f"azureml://eastus.api.azureml.ms/mlflow/v1.0/subscriptions/{SUB}/resourceGroups/rg-x/providers/"
       "Microsoft.MachineLearningServices/workspaces/ws-x")


@pytest.mark.parametrize("nbvm, env, expected", [
    ("instance=ci1\ndomainsuffix=eastus.instances.azureml.ms\n",
     {"CI_WORKSPACE": "ws-x", "CI_RESOURCE_GROUP": "rg-x", "CI_SUBSCRIPTION_ID": SUB},
     ("ci1", "ws-x", "rg-x", SUB, "eastus")),
    ("instance=ci1\ndomainsuffix=eastus.instances.azureml.ms\n",
     {"CI_WORKSPACE": "ws-x", "CI_RESOURCE_GROUP": "rg-x", "MLFLOW_TRACKING_URI": URI},
     ("ci1", "ws-x", "rg-x", SUB, "eastus")),
    ("instance=ci1\n", {"MLFLOW_TRACKING_URI": URI}, ("ci1", "ws-x", "rg-x", SUB, None)),
    # A tracking URI of another workspace says nothing about this one.
    ("instance=ci1\n", {"CI_WORKSPACE": "ws-y", "CI_RESOURCE_GROUP": "rg-x", "MLFLOW_TRACKING_URI": URI},
     ("ci1", "ws-y", "rg-x", None, None)),
    ("instance=ci1\n", {}, ("ci1", None, None, None, None)),
    (None, {"CI_NAME": "ci2", "CI_WORKSPACE": "ws-x", "CI_RESOURCE_GROUP": "rg-x"},
     ("ci2", "ws-x", "rg-x", None, None)),
    (None, {"CI_WORKSPACE": "ws-x", "CI_RESOURCE_GROUP": "rg-x"}, None),  # not an instance: no name anywhere
    (None, {"CI_NAME": "ci2", "CI_WORKSPACE": "ws-x"}, None),
    ("domainsuffix=eastus.instances.azureml.ms\n", {}, None),
])
def test_an_instance_is_recognised_from_what_it_provides(tmp_path, nbvm, env, expected):
    path = tmp_path / ".nbvm"
    if nbvm is not None:
        path.write_text(nbvm)
    found = detect(str(path), env)
    if expected is None:
        assert found is None
        return
    assert (found.name, found.workspace_name, found.resource_group, found.subscription_id, found.location) == expected
    assert (str(path) in found.recognised_from) == (nbvm is not None)


def test_nothing_is_recognised_where_detection_is_off(arm, tmp_path, monkeypatch, compute_on):
    b = Box(arm, tmp_path, monkeypatch)
    cfg = b.config()
    cfg.AzureML.detect_instance = False
    compute = compute_on(b, cfg)
    assert compute.provider("azureml").this_instance is None and compute.default_workspace_id() == "local"
    assert compute.this_instance_info() is None


# -- its workspace and its managed identity ------------------------------------------------------------
@pytest.mark.parametrize("subscription_var", ["CI_SUBSCRIPTION_ID", "MLFLOW_TRACKING_URI"])
async def test_the_instances_workspace_is_used_and_signed_in_to_with_its_managed_identity(
        arm, tmp_path, monkeypatch, network_guard, compute_on, subscription_var):
    add_instance(arm, "alice-ci", creator=ME, idle_shutdown_minutes=60)
    b = Box(arm, tmp_path, monkeypatch, subscription_var=subscription_var)
    compute = compute_on(b)
    ws = compute.workspace()  # the default, with no config.json anywhere
    assert ws.id == arm.workspace_name and ws.properties["source"] == "instance"
    assert ws.properties["this_instance"] == "alice-ci"
    [target] = await ws.list()
    info, credential = ws.info(default=True), type(ws.backends[0].arm.credential).__name__
    assert credential == "ManagedIdentityCredential"
    assert info.properties["subscription_id"] == arm.subscription_id and info.properties["location"] == "eastus"
    assert target.name == "alice-ci" and target.properties["this_instance"] is True
    assert compute.this_instance_info() == {
        "name": "alice-ci", "workspace": arm.workspace_name, "workspace_name": arm.workspace_name,
        "resource_group": arm.resource_group, "location": "eastus",
        "url": "https://alice-ci.eastus.instances.azureml.ms/", "signed_in_with": "managed identity",
        "recognised_from": [str(b.nbvm), "CI_WORKSPACE", "CI_RESOURCE_GROUP", subscription_var]}
    # Signed in by the instance's identity endpoint, with its secret, for the endpoint in use.
    assert arm.token_requests and all(r.headers.get("secret") == arm.msi_secret for r in arm.token_requests)
    assert {r.query["resource"] for r in arm.token_requests} == {arm.base_url}
    assert arm.arm_requests("GET", "/computes")


def test_without_a_subscription_the_instance_joins_the_same_workspace_added_by_hand(arm, tmp_path, monkeypatch,
                                                                                    compute_on):
    add_instance(arm, "alice-ci", creator=ME)
    b = Box(arm, tmp_path, monkeypatch, subscription_var="")
    compute = compute_on(b)
    assert compute.provider("azureml").this_instance is not None and compute.provider("azureml").this_instance.subscription_id is None
    assert compute.default_workspace_id() == "local"  # recognised, but its workspace is not complete
    assert compute.this_instance_info()["workspace"] is None
    r = b.cli("workspace", "add", "--subscription", arm.subscription_id, "--resource-group", arm.resource_group,
              "--name", arm.workspace_name, "--alias", "mine", "--output", "json")
    assert r.returncode == 0, r.stderr
    compute = compute_on(b)
    ws = compute.workspace()  # the default: the instance's, as added (and removable) by hand
    assert (ws.id, ws.properties["source"], ws.properties["this_instance"]) == ("mine", "added", "alice-ci")
    assert compute.this_instance_info()["workspace"] == "mine"
    assert type(ws.backends[0].arm.client() and ws.backends[0].arm.credential).__name__ == "ManagedIdentityCredential"


# -- the REST answer the sidebar reads, and stopping yourself -------------------------------------------
def _jupyter(server: ServerProcess, method: str, path: str, body=None):
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(f"{server.url}/{path}", data=data, method=method,
                                 headers={"Authorization": f"token {server.token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read() or b"null")


def test_the_rest_answer_pins_this_instance_and_a_self_stop_needs_confirmation(box, arm, tmp_path):
    server = ServerProcess(box.home, env=box.env).start()
    try:
        code, body = server.request("GET", "workspaces")
        assert code == 200
        pinned = body["this_instance"]
        assert pinned["name"] == "alice-ci" and pinned["workspace"] == arm.workspace_name
        assert pinned["signed_in_with"] == "managed identity"
        ws = next(w for w in body["workspaces"] if w["id"] == arm.workspace_name)
        assert ws["default"] and ws["properties"]["this_instance"] == "alice-ci"

        # Something to count: a kernel and a terminal on this server.
        _, kernel = _jupyter(server, "POST", "api/kernels", {})
        _, terminal = _jupyter(server, "POST", "api/terminals")
        code, body = server.request("GET", f"workspaces/{arm.workspace_name}/targets")
        assert code == 200
        targets = {t["name"]: t for t in body["targets"]}
        me, other = targets["alice-ci"], targets["other-ci"]
        assert me["properties"]["this_instance"] is True and "this_instance" not in other["properties"]
        assert me["state"] == "running" and me["size"]["name"].lower() == "standard_ds3_v2"
        idle = me["properties"]["idle_shutdown"]
        assert idle["minutes"] == 60 and idle["state"] == "counting" and idle["active"] == []
        at = datetime.fromisoformat(idle["at"])
        now = datetime.now(timezone.utc)
        assert now + timedelta(minutes=55) < at <= now + timedelta(minutes=60, seconds=5)
        assert datetime.fromisoformat(me["idle_shutdown_at"]) == at
        activity = idle["activity"]
        assert activity["kernels"] == {"count": 1, "busy": 0} and activity["terminals"] == {"count": 1}
        assert activity["jobs"] == {"running": False} and activity["last_activity"]
        assert set(activity["connections"]) == {"notebooks", "ssh", "vscode"}
        assert [a["key"] for a in idle["counts_as_activity"]] == ["kernels", "terminals", "jobs", "connections"]

        # A job on the instance counts as activity: no countdown while it runs.
        arm.compute("alice-ci")["properties"]["properties"]["state"] = "JobRunning"
        _, me = server.request("GET", f"workspaces/{arm.workspace_name}/targets/alice-ci")
        idle = me["properties"]["idle_shutdown"]
        assert idle["state"] == "active" and idle["at"] is None and me["idle_shutdown_at"] is None
        assert idle["active"] == ["an Azure ML job is running"]
        arm.compute("alice-ci")["properties"]["properties"]["state"] = "Running"
        _jupyter(server, "DELETE", f"api/kernels/{kernel['id']}")
        _jupyter(server, "DELETE", f"api/terminals/{terminal['name']}")

        # Stopping, restarting or deleting this instance needs an explicit confirmation naming the consequence.
        for method, path, body in [("POST", "alice-ci/stop", None), ("POST", "alice-ci/restart", None),
                                   ("POST", "alice-ci/stop", {"confirm": False}), ("DELETE", "alice-ci", None),
                                   ("DELETE", "alice-ci?confirm=false", None)]:
            code, err = server.request(method, f"workspaces/{arm.workspace_name}/targets/{path}", body)
            assert code == 409 and err["reason"] == "confirmation_required", (path, err)
            assert "'alice-ci' is the compute instance this runs on" in err["message"]
            assert "ends this JupyterLab session" in err["details"]["consequence"]
            assert '"confirm": true' in err["message"]
        code, err = server.request("POST", f"workspaces/{arm.workspace_name}/targets/alice-ci/stop", {"confirm": "yes"})
        assert code == 400 and err["field"] == "/confirm"
        assert not arm.arm_requests("POST", "/stop") and not arm.arm_requests("POST", "/restart")
        assert not arm.arm_requests("DELETE")
        _, me = server.request("GET", f"workspaces/{arm.workspace_name}/targets/alice-ci")
        assert me["state"] == "running"

        # Another instance needs none; this one stops once confirmed.
        code, op = server.request("POST", f"workspaces/{arm.workspace_name}/targets/other-ci/stop")
        assert code == 202 and server.wait_op(op["operation"]["id"])["status"] == "succeeded"
        code, op = server.request("POST", f"workspaces/{arm.workspace_name}/targets/alice-ci/stop", {"confirm": True})
        assert code == 202 and server.wait_op(op["operation"]["id"])["status"] == "succeeded"
        assert arm.compute("alice-ci")["properties"]["properties"]["state"] == "Stopped"
    finally:
        server.stop()


def test_the_cli_refuses_a_self_stop_without_yes(box, arm):
    for verb in ("stop", "restart", "delete"):
        r = box.cli(verb, "alice-ci")
        assert r.returncode == 2, (verb, r.stdout, r.stderr)
        assert "'alice-ci' is the compute instance this runs on" in r.stderr and "ends this JupyterLab session" in \
            r.stderr and "--yes" in r.stderr
    assert not arm.arm_requests("POST", "/stop") and not arm.arm_requests("DELETE")
    shown = json.loads(box.cli("show", "alice-ci", "--output", "json").stdout)
    assert shown["properties"]["this_instance"] is True and shown["properties"]["idle_shutdown"]["minutes"] == 60
    assert shown["properties"]["idle_shutdown"]["state"] == "unknown"  # only the instance's Jupyter server sees it
    # Another instance is asked about as any kernel's machine is: its variables, not this session.
    r = box.cli("stop", "other-ci")
    assert r.returncode == 2 and "The variables in its kernel are lost" in r.stderr, r.stderr
    assert "ends this JupyterLab session" not in r.stderr
    r = box.cli("stop", "other-ci", "--yes")
    assert r.returncode == 0, r.stderr
    r = box.cli("stop", "alice-ci", "--yes", "--output", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "stopped"
    assert arm.compute("alice-ci")["properties"]["properties"]["state"] == "Stopped"


# -- cells routed to this instance run here -------------------------------------------------------------
async def test_cells_routed_to_this_instance_run_locally(box, compute_on):
    here = await compute_on(box).workspace().route("alice-ci")
    assert (type(here).__name__, here.target, here.kind) == ("HereRoute", "alice-ci", "compute-instance")

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (
        "%load_ext jupyter_compute\nimport os\nprint(os.getpid())",
        "%%compute alice-ci\nprint(os.getpid())",
        "%compute use alice-ci",
        "here = os.getpid()\nhere",
        "%compute use local",
        "print(here)",
    )]
    # nbclient runs a loop of its own: on a pool thread, which (unlike asyncio.to_thread's) does not carry
    # this test's context, where nbclient would find the test's running loop and take it for its own.
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(box.home)}})
    await asyncio.get_running_loop().run_in_executor(None, client.execute)
    c = nb.cells

    def text(cell):
        return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)
    pid = text(c[0]).strip()
    assert text(c[1]).strip() == pid and text(c[3]).strip() == pid and text(c[5]).strip() == pid
    # No hop: nothing asked Azure for a kernel, and nothing tried the instance's public address.
    assert box.stray_connections() == ""
