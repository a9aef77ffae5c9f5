"""``%%compute`` on an Azure ML compute cluster, end to end: a real notebook kernel (through nbclient,
and through jupyter_client where arrival order and interrupts matter) discovers the workspace from
config.json, signs in with the stand-in's managed identity and sends each cell as a command job;
Azurite holds the code, the log and the outputs.

The kernels run under the network guard (tests/standins/netguard): anything they try to reach
besides loopback is refused and recorded, and each test expects that record to be empty.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tests.standins.azure import guarded_pythonpath
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from tests.standins.jobs import azure_env, azurite, jobs_arm, network_guard  # noqa: F401  (fixtures)
from tests.families.azureml.test_azureml import cluster_resource

CLUSTER = "cpu-cluster"

# Each worker starts Azurite once for the session: keep these tests with the other job tests.
pytestmark = pytest.mark.xdist_group("azurite")


@pytest.fixture
def arm(jobs_arm):
    jobs_arm.seed(cluster_resource(CLUSTER, mx=2))
    jobs_arm.set_nodes(CLUSTER, idle=1)
    return jobs_arm


@pytest.fixture
def project(arm, tmp_path, monkeypatch):
    """A folder holding config.json, with the settings and guard every kernel started here gets."""
    folder = tmp_path / "project"
    folder.mkdir()
    arm.write_config(str(folder))
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


def execute(folder: Path, *cells: str, allow_errors: bool = True) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=allow_errors,
                   resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def text_of(cell, name: str | None = None) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and (name is None or o.name == name))


def plain(line: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", line)


def test_cells_run_as_jobs_and_a_failure_stops_with_azures_message(project, arm):
    nb = execute(project,
                 "%load_ext jupyter_compute",
                 f"%%compute {CLUSTER}\nimport os\nprint('hello from', os.environ['AZUREML_RUN_ID'])\n6 * 7",
                 f"%%compute {CLUSTER}\nprint('about to fail')\nraise ValueError('the job input was bad')",
                 "print('after')")
    ok, failed = nb.cells[1], nb.cells[2]
    first = arm.job_bodies[0]
    assert first["problems"] == []
    assert "import os\nprint('hello from', os.environ['AZUREML_RUN_ID'])\n6 * 7\n" in \
        first["body"]["properties"]["command"]
    assert f"hello from {first['name']}\n" in text_of(ok, "stdout")
    note, status = [o for o in ok.outputs if o.output_type == "display_data"]
    # The first cell on the cluster says once that each cell is a job of its own.
    assert note.data["text/plain"] == (f"jupyter_compute: each cell on '{CLUSTER}' runs as a new Azure ML job; "
                                       "variables move with --push and --pull")
    assert not [o for o in failed.outputs if o.output_type == "display_data" and "runs as a new" in
                o.data.get("text/plain", "")]
    # The statuses shown as the job moved through them, in Azure's order; a busy machine may poll past
    # a short one, but never shows them out of order or misses the run and its end.
    seen = [step.split(" (")[0] for step in status.data["text/plain"].split(": ", 1)[1].split("\n")[0].split(" → ")]
    lifecycle = ["NotStarted", "Queued", "Preparing", "Running", "Finalizing", "Completed"]
    assert seen == [s for s in lifecycle if s in seen] and seen[-1] == "Completed" and "Running" in seen, seen
    assert f"href='https://ml.azure.com/runs/{first['name']}" in status.data["text/html"]
    assert [o.data["text/plain"] for o in ok.outputs if o.output_type == "execute_result"] == ["42"]

    [error] = [o for o in failed.outputs if o.output_type == "error"]
    assert error.ename == "ValueError" and error.evalue.startswith("the job input was bad (Azure: Execution failed.")
    tb = "\n".join(plain(line) for line in error.traceback)
    assert f"Azure ML job {arm.job_bodies[1]['name']} on '{CLUSTER}' failed: Execution failed. User process " \
           "'python' exited with status code 1." in tb
    assert re.search(r"Cell In\[\d+\], line \d+\n(.*\n)*----> \d+ raise ValueError\('the job input was bad'\)", tb), tb
    assert "\nValueError: the job input was bad\n" in tb
    assert "about to fail" in text_of(failed, "stdout")
    assert arm.job(arm.job_bodies[1]["name"])["properties"]["status"] == "Failed"


def test_a_job_is_cancelled_from_the_command_line_and_from_a_notebook(project, arm):
    arm.add_job("from-cli", CLUSTER, "Running")
    arm.add_job("from-notebook", CLUSTER, "Queued")
    arm.add_job("done", CLUSTER, "Completed")
    run = [sys.executable, "-m", "jupyter_compute.cli", "job"]
    r = subprocess.run([*run, "from-cli", "--cancel"], cwd=project, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "status: Canceled" in r.stdout and "cancel: canceled" in r.stdout
    assert "cancel from-cli: CancelRequested" in r.stderr  # the steps, as an operation's are shown
    r = subprocess.run([*run, "done", "--cancel"], cwd=project, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "already ended (Completed): nothing to cancel" in r.stdout, r.stderr

    nb = execute(project, "%load_ext jupyter_compute", "%compute job from-notebook --cancel")
    shown = "".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in nb.cells[1].outputs)
    assert "cancel: canceled" in shown and "status: Canceled" in shown, nb.cells[1].outputs
    assert [n for n, _ in arm.cancels] == ["from-cli", "from-notebook"]


def test_jobs_over_rest_list_show_and_cancel(project, arm):
    from tests.servers import ServerProcess

    arm.add_job("rest-job", CLUSTER, "Running", age_seconds=7200)
    arm.add_job("elsewhere", "other-cluster", "Completed")
    server = ServerProcess(project).start(extra_args=("--AzureML.poll_interval=0.05",))
    try:
        ws = arm.workspace_name
        code, listed = server.request("GET", f"workspaces/{ws}/jobs?target={CLUSTER}")
        code_one, one = server.request("GET", f"workspaces/{ws}/jobs/rest-job?lines=5")
        code_cancel, cancelled = server.request("POST", f"workspaces/{ws}/jobs/rest-job/cancel")
        code_bad, bad = server.request("GET", f"workspaces/{ws}/jobs?top=0")
        code_missing, missing = server.request("POST", f"workspaces/{ws}/jobs/no-such-job/cancel")
        code_local, local = server.request("GET", "workspaces/local/jobs")
    finally:
        server.stop()
    assert code == 200 and [j["name"] for j in listed["jobs"]] == ["rest-job"]
    assert listed["jobs"][0]["age_seconds"] >= 7200
    assert code_one == 200 and one["status"] == "Running"
    assert code_cancel == 202 and cancelled["status"] in ("CancelRequested", "Canceled"), cancelled
    assert [n for n, _ in arm.cancels] == ["rest-job"]
    assert code_bad == 400 and bad["field"] == "/top"
    assert code_missing == 404 and "no-such-job" in missing["message"]
    assert code_local == 400 and local["reason"] == "unsupported_operation"


def test_a_pulled_variable_comes_back_to_the_notebook(project, arm):
    nb = execute(project,
                 "%load_ext jupyter_compute\nscale = 3",
                 f"%%compute {CLUSTER} --push scale --pull total --nodes 2 --environment my-training-env:1\n"
                 "total = sum(range(10)) * scale\nprint('rank', rank, 'of', world_size)",
                 "print('total here', total)", allow_errors=False)
    assert "total here 135" in text_of(nb.cells[2])
    props = arm.job_bodies[0]["body"]["properties"]
    assert props["resources"]["instanceCount"] == 2 and props["distribution"]["distributionType"] == "PyTorch"
    assert props["environmentId"].endswith("/environments/my-training-env/versions/1")
    assert "push" in props["inputs"]


# -- on a kernel driven by jupyter_client ------------------------------------------------------------------
@pytest.fixture
def kernel(project):
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(project))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    reply = kc.execute_interactive("%load_ext jupyter_compute", timeout=60)
    assert reply["content"]["status"] == "ok"
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def follow(kc, msg_id: str, until, timeout: float = 60.0) -> list[tuple[float, str, dict]]:
    """Iopub messages of one request, with arrival times, until ``until(seen)`` holds."""
    seen: list[tuple[float, str, dict]] = []
    deadline = time.monotonic() + timeout
    while not until(seen):
        assert time.monotonic() < deadline, f"timed out; seen: {seen}"
        try:
            msg = kc.get_iopub_msg(timeout=0.5)
        except Exception:  # queue.Empty: nothing yet
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            seen.append((time.monotonic(), msg["msg_type"], msg["content"]))
    return seen


def streamed(seen) -> str:
    return "".join(c["text"] for _, kind, c in seen if kind == "stream")


def test_fed_log_lines_reach_the_notebook_before_the_job_ends(kernel, arm):
    arm.auto_run = False
    km, kc = kernel
    msg_id = kc.execute(f"%%compute {CLUSTER}\nprint('the test writes this log')")
    name = arm.wait_for_job(timeout=60)
    seen: list = []
    for status in ("Queued", "Running"):
        arm.set_status(name, status)
        seen += follow(kc, msg_id, lambda s: any(f"→ {status}" in str(c) for _, _, c in seen + s))
    arm.feed_log(name, "step 1 of 2\n")
    seen += follow(kc, msg_id, lambda s: "step 1 of 2" in streamed(seen + s))
    assert arm.job(name)["properties"]["status"] == "Running"  # shown while the job still runs
    arm.feed_log(name, "step 2 of 2\n")
    seen += follow(kc, msg_id, lambda s: "step 2 of 2" in streamed(seen + s))
    arm.set_status(name, "Completed")
    seen += follow(kc, msg_id, lambda s: any(kind == "status" and c["execution_state"] == "idle" for _, kind, c in s))
    reply = kc.get_shell_msg(timeout=30)
    assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["status"] == "ok"
    assert streamed(seen).count("step 1 of 2") == 1 and streamed(seen).index("step 1") < streamed(seen).index("step 2")


def test_interrupting_the_notebook_cancels_the_job(kernel, arm):
    arm.cancel_seconds = 1.0
    km, kc = kernel
    msg_id = kc.execute(f"%%compute {CLUSTER}\nimport time\nprint('started', flush=True)\ntime.sleep(60)")
    seen = follow(kc, msg_id, lambda s: "started" in streamed(s), timeout=90)
    name = arm.job_bodies[-1]["name"]
    km.interrupt_kernel()
    seen += follow(kc, msg_id, lambda s: any(kind == "status" and c["execution_state"] == "idle" for _, kind, c in s))
    ended = time.monotonic()
    reply = kc.get_shell_msg(timeout=30)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    [(job, asked)] = arm.cancels
    assert job == name and arm.job(name)["properties"]["status"] == "Canceled"
    # The cell ended once Azure reported Canceled (a second after the request), not before.
    assert ended - asked > 0.9 and ended - asked < 15
    assert "CancelRequested → Canceled" in json.dumps([c for _, kind, c in seen if "display" in kind], ensure_ascii=False)
