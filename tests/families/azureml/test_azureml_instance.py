"""Azure ML compute instances as targets of cells, from any machine: ``%%compute my-instance`` runs
in a kernel of the instance's own Jupyter server, reached over its channels websocket with Azure
AD bearer tokens from the user's sign-in, refreshed before they expire.

The instance's Jupyter is a second real Jupyter server on loopback (tests/standins/instance.py):
HTTPS with a test certificate, letting in only bearer tokens that the Resource Manager stand-in's
managed-identity endpoint signed. The stand-in lists the instance with its ``applications``
pointing there. Notebook kernels run under the network guard (tests/standins/netguard), and each
test expects its record of attempts to reach beyond loopback to be empty.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from nbclient import NotebookClient
from traitlets.config import Config

from jupyter_compute.core.errors import ComputeError
from jupyter_compute.families.azureml.instance import token_claims
from jupyter_compute.transport.jupyter_client import CredentialsRefused, JupyterClient, StaticAuth
from tests.standins.arm import OBJECT_ID, TENANT_ID
from tests.standins.azure import guarded_pythonpath, arm, azure_env, network_guard, workspace_for  # noqa: F401  (fixtures)
from tests.standins.instance import (OTHER_USER, USER_NAME, aad_arm, add_instance,  # noqa: F401  (fixtures)
                                     instance_jupyter)
from tests.support import await_for

ME = {"oid": OBJECT_ID, "tid": TENANT_ID, "name": USER_NAME}


@pytest.fixture
def project(aad_arm, tmp_path, monkeypatch):
    """A folder holding config.json, with the settings and the guard every notebook kernel gets."""
    folder = tmp_path / "project"
    folder.mkdir()
    aad_arm.write_config(str(folder))
    config_dir = tmp_path / "jupyter-config"
    config_dir.mkdir()
    (config_dir / "jupyter_compute_config.json").write_text(json.dumps(
        {"AzureML": {"poll_interval": 0.05, "retry_total": 2, "retry_backoff_factor": 0.01}}))
    netlog = tmp_path / "netguard.log"
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("JC_NETGUARD_LOG", str(netlog))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYTHONPATH", guarded_pythonpath())
    yield folder
    assert not netlog.exists() or netlog.read_text() == ""


class TimedClient(NotebookClient):
    """nbclient, noting when each output of each cell arrived."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.arrivals: list[tuple[float, int, str, dict]] = []

    def process_message(self, msg, cell, cell_index):
        self.arrivals.append((time.monotonic(), cell_index, msg["msg_type"], msg["content"]))
        return super().process_message(msg, cell, cell_index)


def execute(folder: Path, *cells: str) -> tuple[nbformat.NotebookNode, TimedClient]:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    client = TimedClient(nb, timeout=180, kernel_name="python3", allow_errors=True,
                         resources={"metadata": {"path": str(folder)}})
    client.execute()
    return nb, client


def text_of(cell, name: str | None = None) -> str:
    out = []
    for o in cell.outputs:
        if o.output_type == "stream" and (name is None or o.name == name):
            out.append(o.text)
        elif name is None and "data" in o:
            out.append(o.data.get("text/plain", ""))
    return "".join(out)


def errors_of(cell) -> list:
    return [o for o in cell.outputs if o.output_type == "error"]


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# -- through a notebook -------------------------------------------------------------------------------
def test_notebook_cells_run_on_the_instance_and_stream(project, aad_arm, instance_jupyter):
    arm = aad_arm
    server = instance_jupyter()
    add_instance(arm, "alice-ci", jupyter=server.url, creator=ME, sharing="Personal", idle_shutdown_minutes=60)
    add_instance(arm, "bob-ci", jupyter=server.url, creator=OTHER_USER, sharing="Personal")
    nb, client = execute(
        project,
        "%load_ext jupyter_compute\nimport os\nprint(os.getpid())",
        "%%compute alice-ci\nimport os\nprint(os.getpid())",
        "%%compute alice-ci\nimport time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second', flush=True)",
        "%%compute alice-ci\nfrom IPython.display import HTML, display\ndisplay(HTML('<b>on the instance</b>'))\n"
        "kept = 'still here'\n21 * 2",
        "%compute use alice-ci",
        "print(kept)",
        "import os\nos.getpid()",
        "%compute use local",
        "print(os.getpid())",
        "%%compute bob-ci\nprint('never')",
        "%%compute alice-ci\nprint('before')\nraise ValueError('wrong on the instance')",
    )
    c = nb.cells
    local_pid, remote_pid = int(text_of(c[0])), int(text_of(c[1], "stdout"))
    assert remote_pid != local_pid
    assert psutil.Process(remote_pid).parent().pid == server.proc.pid  # a kernel of the instance's Jupyter

    at = {content["text"].strip(): t for t, i, kind, content in client.arrivals if i == 2 and kind == "stream"}
    assert at["second"] - at["first"] > 2.0  # streamed as it ran, not at the end

    html = [o.data["text/html"] for o in c[3].outputs if o.output_type == "display_data"]
    assert html == ["<b>on the instance</b>"]
    assert [o.data["text/plain"] for o in c[3].outputs if o.output_type == "execute_result"] == ["42"]

    assert "Cells now run on 'alice-ci'" in text_of(c[4])
    assert text_of(c[5]).strip() == "still here"  # %compute use: the instance's namespace
    assert [o.data["text/plain"] for o in c[6].outputs if o.output_type == "execute_result"] == [str(remote_pid)]
    assert int(text_of(c[8])) == local_pid  # and back: the local kernel stayed available

    err = errors_of(c[9])
    assert len(err) == 1 and "personal compute instance of Bob Other" in err[0].evalue
    assert OTHER_USER["oid"] in err[0].evalue and "never" not in text_of(c[9])

    err = errors_of(c[10])
    assert len(err) == 1 and (err[0].ename, err[0].evalue) == ("ValueError", "wrong on the instance")
    assert any("raise ValueError" in plain(line) for line in err[0].traceback) and "before" in text_of(c[10])

    # Bearer tokens from the stand-in's managed identity, for the scope that follows the endpoint;
    # the instance's Jupyter let each request in, and no token reached the notebook.
    assert {r.query["resource"] for r in arm.token_requests} == {arm.base_url}
    decisions = server.decisions()
    assert decisions and {d["outcome"] for d in decisions} == {"ok"}
    for token in arm.tokens:
        assert token not in json.dumps(nb)


def test_start_starts_a_stopped_instance_with_progress_then_runs(project, aad_arm, instance_jupyter):
    arm = aad_arm
    server = instance_jupyter()
    add_instance(arm, "gpu-ci", state="Stopped", jupyter=server.url, creator=ME)
    nb, client = execute(project,
                         "%load_ext jupyter_compute",
                         "%%compute gpu-ci\nprint('not yet')",
                         "%%compute gpu-ci --start\nimport os\nprint('pid', os.getpid())")
    c = nb.cells
    err = errors_of(c[1])
    assert len(err) == 1 and "'gpu-ci' is stopped" in err[0].evalue and "--start" in err[0].evalue
    # Progress is one display, updated as Azure reports, ending with the state.
    progress = [content["data"]["text/plain"] for _, i, kind, content in client.arrivals
                if i == 2 and kind in ("display_data", "update_display_data")]
    assert any(p.startswith("start gpu-ci: start in Azure: InProgress") for p in progress), progress
    out = text_of(c[2])
    assert out.startswith("start gpu-ci: done, now running")
    pid = int(re.search(r"pid (\d+)", out).group(1))
    assert psutil.Process(pid).parent().pid == server.proc.pid
    assert arm.compute("gpu-ci")["properties"]["properties"]["state"] == "Running"
    assert len(arm.arm_requests("POST", "/computes/gpu-ci/start")) == 1


# -- the route, directly -------------------------------------------------------------------------------
@pytest.mark.timeout(120)
async def test_a_personal_instance_of_another_user_says_whose_it_is(aad_arm, instance_jupyter, workspace_for,
                                                                    monkeypatch):
    arm = aad_arm
    server = instance_jupyter(owner=OTHER_USER["oid"])
    add_instance(arm, "bob-ci", jupyter=server.url, creator=OTHER_USER, sharing="Personal")
    # Created by the test user for Bob: assigned to him, whatever its sharing says.
    add_instance(arm, "for-bob", jupyter=server.url, creator=ME, assigned_user=OTHER_USER)
    add_instance(arm, "shared-ci", jupyter=server.url, creator=OTHER_USER, sharing="Shared")
    ws, backend = workspace_for(arm)
    with pytest.raises(ComputeError) as info:
        await ws.route("bob-ci")
    e = info.value
    assert (e.status, e.reason) == (409, "personal_instance")
    assert "'bob-ci' is a personal compute instance of Bob Other" in e.message
    assert f"You are signed in as {USER_NAME} (object id {OBJECT_ID})" in e.message
    assert e.details["owner"] == {"object_id": OTHER_USER["oid"], "tenant_id": TENANT_ID, "name": "Bob Other"}
    with pytest.raises(ComputeError) as info:
        await ws.route("for-bob")
    assert f"the user with object id {OTHER_USER['oid']} (created on their behalf)" in info.value.message
    # Nothing was asked of the instance's Jupyter on either.
    assert server.decisions() == []
    # Where the token does not say who it is for, the instance's own refusal is put the same way.
    monkeypatch.setattr("jupyter_compute.families.azureml.backend.token_claims", lambda token: {})
    backend._instance_identity = None
    with pytest.raises(ComputeError) as info:
        await ws.route("bob-ci")
    assert info.value.reason == "personal_instance" and "Bob Other" in info.value.message
    assert "not the owner" in server.decisions()[-1]["outcome"]
    # A shared instance of someone else is fine as far as we are concerned; its Jupyter (which
    # here lets in Bob only) has the last word.
    with pytest.raises(CredentialsRefused, match="403"):
        await ws.route("shared-ci")


@pytest.mark.timeout(120)
async def test_bearer_tokens_are_refreshed_before_they_expire(aad_arm, instance_jupyter, workspace_for):
    arm = aad_arm
    arm.token_lifetime = 6.0
    server = instance_jupyter()
    add_instance(arm, "alice-ci", jupyter=server.url, creator=ME)
    cfg = Config()
    cfg.AzureML.token_refresh_margin = 3.0
    ws, backend = workspace_for(arm, config=cfg)

    def issued() -> int:
        return sum(1 for r in arm.token_requests if r.query.get("resource") == arm.base_url)

    route = await ws.route("alice-ci")
    await route.open(timeout=60)
    assert (await route.execute("kept = 1")).status == "ok"
    first = issued()
    # Until every token issued so far has run out (their "exp" claims say when).
    with arm.lock:
        ends = max(token_claims(t)["exp"] for t in arm.tokens)

    async def expired():
        return time.time() > ends + 0.5
    await await_for(expired, timeout=20, message="the tokens issued so far to expire")
    started = asyncio.Event()

    def on_message(msg):
        if msg["msg_type"] == "stream" and "started" in msg["content"].get("text", ""):
            started.set()
    cell = asyncio.ensure_future(route.execute("import time; print('started', flush=True); time.sleep(30)",
                                               on_message=on_message))
    await asyncio.wait_for(started.wait(), 20)
    await route.interrupt()  # REST, with a new token
    assert (await asyncio.wait_for(cell, 20)).ename == "KeyboardInterrupt"
    assert issued() > first
    await route.close()
    # A new websocket, as the next notebook would open, is let in too.
    again = await ws.route("alice-ci")
    await again.open(timeout=60)
    assert (await again.execute("kept")).result == {"text/plain": "1"}
    await again.close()
    auth = backend.instance_auth()
    assert auth.fetches >= 2
    # Never refused: each token was replaced before it ran out.
    assert {d["outcome"] for d in server.decisions()} == {"ok"}
    assert not any(token in repr(auth) for token in arm.tokens)


@pytest.mark.timeout(120)
async def test_a_kernel_gone_from_the_instance_is_replaced_and_the_cell_says_so(aad_arm, instance_jupyter,
                                                                               workspace_for):
    arm = aad_arm
    server = instance_jupyter()
    add_instance(arm, "alice-ci", jupyter=server.url, creator=ME)
    ws, backend = workspace_for(arm)
    route = await ws.route("alice-ci")
    first = route.kernel_id
    await route.open(timeout=60)
    await route.execute("kept = 1")
    await route.close()
    assert (await ws.route("alice-ci")).kernel_id == first  # the same one, recorded
    # The instance restarted (its kernels are gone), as a stop and start does.
    assert server.api("DELETE", f"api/kernels/{first}")[0] == 204
    route = await ws.route("alice-ci")
    await route.open(timeout=60)
    assert route.kernel_id != first
    assert "variables from earlier cells are lost" in route.notice
    r = await route.execute("'kept' in globals()")
    await route.close()
    assert r.result == {"text/plain": "False"}
    assert (await ws.route("alice-ci")).kernel_id == route.kernel_id
    status, kernels = server.api("GET", "api/kernels")
    assert status == 200 and len(kernels) == 1  # one kernel per instance, however many routes


@pytest.mark.timeout(60)
async def test_the_token_scope_is_a_setting(aad_arm, instance_jupyter, workspace_for):
    arm = aad_arm
    scope = "https://instances.standin.example"
    server = instance_jupyter(audiences=(scope,))
    add_instance(arm, "alice-ci", jupyter=server.url, creator=ME)
    cfg = Config()
    cfg.AzureML.instance_token_scope = scope + "/.default"
    ws, _ = workspace_for(arm, config=cfg)
    route = await ws.route("alice-ci")
    assert route.url == server.url
    assert scope in {r.query["resource"] for r in arm.token_requests}
    assert {d["outcome"] for d in server.decisions()} == {"ok"}


@pytest.mark.timeout(60)
async def test_the_instances_jupyter_lets_in_only_the_stand_ins_fresh_tokens(aad_arm, instance_jupyter):
    arm = aad_arm
    server = instance_jupyter()
    good, _ = arm.issue_token(arm.base_url)
    assert server.api("GET", "api/status", token=good)[0] == 200
    expired, _ = arm.issue_token(arm.base_url, lifetime=-10)
    other_audience, _ = arm.issue_token("https://management.azure.com")
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for token in (expired, other_audience, forged, "standin.not-a-jwt"):
        assert server.api("GET", "api/status", token=token)[0] == 403

    async with JupyterClient(server.url, StaticAuth.from_spec(token="a-jupyter-token")) as client:
        with pytest.raises(CredentialsRefused, match="403"):
            await client.status()
    async with JupyterClient(server.url.replace("https:", "http:"),
                             StaticAuth.from_spec(authorization=f"Bearer {good}"), timeout=5) as client:
        with pytest.raises(ComputeError):  # it speaks TLS only
            await client.status()
    outcomes = [d["outcome"] for d in server.decisions()]
    assert outcomes[0] == "ok" and {"expired", "bad signature", "not a JWT", "no bearer token"} <= set(outcomes)
    assert any(o.startswith("wrong audience") for o in outcomes)


@pytest.mark.timeout(60)
async def test_a_stopped_instance_is_not_reached(aad_arm, instance_jupyter, workspace_for):
    arm = aad_arm
    server = instance_jupyter()
    add_instance(arm, "gpu-ci", state="Stopped", jupyter=server.url, creator=ME)
    ws, _ = workspace_for(arm)
    with pytest.raises(ComputeError) as info:
        await ws.route("gpu-ci")
    assert info.value.reason == "not_running" and "stopped" in info.value.message
    assert server.decisions() == []
