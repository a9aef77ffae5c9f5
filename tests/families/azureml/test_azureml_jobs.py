"""Cells as Azure ML command jobs (the ``azureml-job`` route) against the Resource Manager stand-in
with jobs, and Azurite as the workspace's storage: the request body checked against the SDK's
models, inline commands and code assets, environments, nodes and ranks, push and pull through
the job's input and output, the log as it grows, cancel, failure, busy clusters and job lists.

The real azure-identity managed-identity credential, azure-mgmt-machinelearningservices' aio
client and azure-storage-blob's aio clients run throughout; only loopback is reachable.
"""
from __future__ import annotations

import asyncio
import re
import time

import pytest

from jupyter_compute.families.azureml import jobs as J
from jupyter_compute.core.errors import InvalidRequest, NotFound
from jupyter_compute.core.route import ExecutionTimeout, RemoteError, TransferError
from jupyter_compute.families.azureml.job_route import AzureMLJobRoute
from tests.standins.azure import workspace_for  # noqa: F401  (fixture)
from tests.standins.jobs import CURATED, azure_env, azurite, jobs_arm, network_guard, sdk_problems  # noqa: F401
from tests.families.azureml.test_azureml import cluster_resource
from tests.support import await_for

# Each worker starts Azurite once for the session: keep these tests together; and fail rather than hang.
pytestmark = [pytest.mark.xdist_group("azurite"), pytest.mark.timeout(120)]

CLUSTER = "cpu-cluster"


def kubernetes_resource(name: str) -> dict:
    rid = ("/subscriptions/8f3a2c1d-4b5e-4f60-9a7b-1c2d3e4f5a6b/resourceGroups/rg-aks/providers/"
           "Microsoft.ContainerService/managedClusters/aks-ml")
    return {"name": name, "type": "Microsoft.MachineLearningServices/workspaces/computes", "location": "eastus",
            "properties": {"computeType": "Kubernetes", "provisioningState": "Succeeded", "isAttachedCompute": True,
                           "resourceId": rid, "createdOn": "2024-07-24T08:34:22+00:00",
                           "properties": {"namespace": "azureml", "defaultInstanceType": "defaultinstancetype"}}}


@pytest.fixture
def arm(jobs_arm):
    jobs_arm.seed(cluster_resource(CLUSTER, mx=4))
    jobs_arm.set_nodes(CLUSTER, idle=1)
    return jobs_arm


@pytest.fixture
def workspace(arm, workspace_for):
    """``(workspace, backend)`` on the stand-in, polling often enough to follow a job's every status."""
    return workspace_for(arm, poll_interval=0.02)


@pytest.fixture
def open_route(workspace, jp_asyncio_loop):
    """``await open_route(name)``: an open job route to ``name`` (the cluster by default); each one is
    closed when the test ends, before its workspace."""
    ws, _ = workspace
    opened: list[AzureMLJobRoute] = []

    async def open_(name: str = CLUSTER) -> AzureMLJobRoute:
        route = await ws.route(name)
        assert isinstance(route, AzureMLJobRoute)
        opened.append(route)
        await route.open(timeout=30)
        return route
    yield open_
    for route in reversed(opened):
        jp_asyncio_loop.run_until_complete(route.close())


class Seen:
    """What a cell shows: each message as a route hands it over."""

    def __init__(self):
        self.messages: list[dict] = []

    def __call__(self, msg: dict) -> None:
        self.messages.append(msg)

    def text(self, name: str | None = None) -> str:
        return "".join(m["content"]["text"] for m in self.messages
                       if m["msg_type"] == "stream" and (name is None or m["content"]["name"] == name))

    def log(self) -> str:
        return self.text("stdout")

    def notes(self) -> str:
        return self.text("stderr")

    def statuses(self) -> list[str]:
        return [m["content"]["data"]["text/plain"] for m in self.messages
                if m["msg_type"] in ("display_data", "update_display_data")]


def body_of(arm, index: int = -1) -> dict:
    entry = arm.job_bodies[index]
    assert entry["problems"] == [], entry["problems"]
    return entry["body"]["properties"]


# -- submission -----------------------------------------------------------------------------------------
async def test_a_small_cell_runs_as_an_inline_command_job(arm, open_route):
    seen = Seen()
    code = "import os\nprint('hello from the job', os.environ.get('AZUREML_RUN_ID'))\n6 * 7"
    route = await open_route()
    result = await route.execute(code, on_message=seen)
    assert (route.name, route.kind, route.max_nodes) == ("azureml-job", "compute-cluster", 4)
    assert result.status == "ok" and result.result == {"text/plain": "42"}
    name = arm.job_bodies[-1]["name"]
    assert f"hello from the job {name}\n" in seen.log()
    # The status shown as it changed, with the job's Studio link.
    last = seen.statuses()[-1]
    assert "NotStarted → Queued → Preparing → Running → Finalizing → Completed" in last
    assert f"Studio: https://ml.azure.com/runs/{name}?wsid=/subscriptions/{arm.subscription_id}" in last
    html = [m for m in seen.messages if m["msg_type"] == "update_display_data"][-1]["content"]["data"]["text/html"]
    assert f"href='https://ml.azure.com/runs/{name}" in html
    assert len({m["content"]["transient"]["display_id"] for m in seen.messages
                if m["msg_type"].endswith("display_data")}) == 1

    props = body_of(arm)
    assert sdk_problems(arm.job_bodies[-1]["body"]) == []
    assert props["jobType"] == "Command" and "codeId" not in props
    assert "print('hello from the job', os.environ.get('AZUREML_RUN_ID'))" in props["command"]
    assert props["computeId"] == f"{arm.workspace_id}/computes/{CLUSTER}"
    assert props["environmentId"] == f"{arm.workspace_id}/environments/{CURATED}/versions/3"
    assert props["resources"] == {"instanceCount": 1} and "distribution" not in props
    assert props["inputs"] == {}
    assert props["outputs"] == {"results": {"jobOutputType": "uri_folder", "mode": "ReadWriteMount", "uri": (
        f"azureml://datastores/workspaceblobstore/paths/jupyter_compute/jobs/{name}/results/")}}
    assert props["tags"]["jupyter_compute.target"] == CLUSTER
    assert arm.job(name)["properties"]["status"] == "Completed"
    assert arm.body_problems == []


async def test_a_large_cell_travels_as_a_code_asset_uploaded_once(arm, open_route):
    filler = "# " + "x" * 78 + "\n"
    code = filler * 120 + "print('big cell ran')"
    assert not J.fits_inline(code)
    route = await open_route()
    first = await route.execute(code, on_message=Seen())
    second = await route.execute(code, on_message=(seen := Seen()))
    assert first.status == second.status == "ok" and "big cell ran" in seen.log()
    p1, p2 = body_of(arm, 0), body_of(arm, 1)
    assert p1["codeId"] == p2["codeId"] and "/codes/" in p1["codeId"] and p1["codeId"].endswith("/versions/1")
    assert "big cell ran" not in p1["command"] and "jupyter_compute_cell.py" in p1["command"]
    code_name = p1["codeId"].split("/codes/")[1].split("/")[0]
    uri = arm.codes[code_name]["versions"]["1"]["properties"]["codeUri"]
    assert uri.startswith(f"https://devstoreaccount1.blob.core.windows.net/{arm.blob_container}/LocalUpload/")
    folder = uri.split(arm.blob_container + "/", 1)[1]
    assert sorted(arm.blob_names(prefix=folder)) == [f"{folder}/jupyter_compute_cell.py",
                                                     f"{folder}/jupyter_compute_job.py"]
    assert arm.read_blob(f"{folder}/jupyter_compute_cell.py").decode() == code
    assert len(arm.saw("PUT", "/versions/1")) == 1  # the unchanged cell was not uploaded again


async def test_environments_resolve_to_their_ids_and_a_miss_lists_close_matches(arm, open_route):
    route = await open_route()
    jobs = route.jobs
    ids = [await jobs.resolve_environment(spec) for spec in (
        None, "my-training-env:1", "my-training-env@latest", "azureml:my-training-env", CURATED + ":2",
        "azureml://registries/azureml/environments/sklearn-1.5/versions/4")]
    errors = []
    for spec in ("my-trainng-env", "AzureML-sklearn-1.0-ubuntu20.04-py38", "my-training-env:7", "bad name!",
                 "x@stable"):
        with pytest.raises(InvalidRequest) as info:
            await route.execute("print(1)", environment=spec)
        errors.append(info.value)
    base = f"{arm.workspace_id}/environments"
    assert ids == [f"{base}/{CURATED}/versions/3", f"{base}/my-training-env/versions/1",
                   f"{base}/my-training-env/versions/2", f"{base}/my-training-env/versions/2",
                   f"{base}/{CURATED}/versions/2", "azureml://registries/azureml/environments/sklearn-1.5/versions/4"]
    assert all(e.field == "/environment" for e in errors)
    assert "no environment named 'my-trainng-env'" in errors[0].message
    assert "close matches: my-training-env" in errors[0].message
    assert f"close matches: {CURATED}" in errors[1].message
    assert "has no version 7 (versions: 1, 2)" in errors[2].message
    assert "not NAME, NAME:VERSION or NAME@latest" in errors[3].message and "@latest" in errors[4].message
    assert arm.job_bodies == []  # refused before anything was created


async def test_nodes_run_with_pytorch_distribution_and_each_knows_its_rank(arm, open_route):
    seen = Seen()
    route = await open_route()
    with pytest.raises(InvalidRequest) as too_many:
        await route.execute("print(1)", nodes=5)
    with pytest.raises(InvalidRequest):
        await route.execute("print(1)", nodes=0)
    result = await route.execute("print('rank', rank, 'of', world_size)\nrank", nodes=2, on_message=seen)
    assert too_many.value.field == "/nodes" and "at most 4 nodes" in too_many.value.message
    assert result.status == "ok" and result.result == {"text/plain": "0"}
    props = body_of(arm)
    assert props["resources"] == {"instanceCount": 2}
    assert props["distribution"] == {"distributionType": "PyTorch", "processCountPerInstance": 1}
    assert "[rank 0] rank 0 of 2\n" in seen.log() and "[rank 1] rank 1 of 2\n" in seen.log()
    assert len(arm.job_bodies) == 1


async def test_pushed_variables_are_job_inputs_and_pulled_ones_come_back(arm, open_route):
    route = await open_route()
    pushed = await route.push({"numbers": list(range(1000)), "scale": 3, "double": lambda v: v * 2})
    result = await route.execute("total = double(sum(numbers)) * scale\nsquare = lambda v: v * v\n"
                                 "gen = (i for i in numbers)\nprint('total', total)",
                                 pull=["total", "square", "gen", "nowhere"], on_message=(seen := Seen()))
    values, report = await route.pull(["total", "square"])
    problems = {}
    for names in (["gen"], ["nowhere"], ["numbers"]):
        with pytest.raises(TransferError) as info:
            await route.pull(names)
        problems[names[0]] = info.value
    await route.execute("print('numbers' in globals())", on_message=(again := Seen()))
    assert pushed.names == ["numbers", "scale", "double"] and pushed.nbytes > 1000
    assert result.status == "ok" and "total 2997000" in seen.log()
    assert values["total"] == 2997000 and values["square"](7) == 49
    assert report.names == ["total", "square"] and report.direction == "pull"
    assert problems["gen"].variable == "gen" and "cannot be pickled" in problems["gen"].message
    assert problems["nowhere"].variable == "nowhere" and "did not define it" in problems["nowhere"].message
    assert "name them with --pull" in problems["numbers"].message
    props = body_of(arm, 0)
    push_uri = props["inputs"]["push"]["uri"]
    assert props["inputs"]["push"]["jobInputType"] == "uri_folder" and props["inputs"]["push"]["mode"] == "ReadOnlyMount"
    assert "${{inputs.push}}" in props["command"] and "--pull total,square,gen,nowhere" in props["command"]
    folder = push_uri.split("/paths/", 1)[1].strip("/")
    assert {n.rsplit("/", 1)[1] for n in arm.blob_names(prefix=folder)} == {
        "numbers.jcp", "scale.jcp", "double.jcp", "_cloudpickle.py"}
    # Each cell runs afresh: pushed variables went to one job only.
    assert "False" in again.log() and body_of(arm, 1)["inputs"] == {}


# -- while the job runs ---------------------------------------------------------------------------------
async def test_fed_log_lines_show_before_the_job_ends(arm, open_route):
    arm.auto_run = False
    seen = Seen()
    route = await open_route()
    task = asyncio.ensure_future(route.execute("print('driven by the test')", on_message=seen))
    name = await asyncio.to_thread(arm.wait_for_job, timeout=30)

    async def shown(text: str) -> None:
        async def there():
            return text in seen.log() + "".join(seen.statuses())
        await await_for(there, timeout=20, message=f"{text!r} to be shown")

    for status in ("Queued", "Preparing", "Running"):
        arm.set_status(name, status)
        await shown(f"→ {status}")
    arm.feed_log(name, "epoch 1: loss 0.9\n")
    await shown("epoch 1: loss 0.9")
    still = arm.job(name)["properties"]["status"]
    arm.feed_log(name, "epoch 2: loss 0.4\n")
    await shown("epoch 2")
    arm.set_status(name, "Finalizing")
    await shown("→ Finalizing")
    arm.feed_log(name, "done\n")
    arm.set_status(name, "Completed")
    result = await asyncio.wait_for(task, 30)
    assert still == "Running" and result.status == "ok"
    assert seen.log() == "epoch 1: loss 0.9\nepoch 2: loss 0.4\ndone\n"
    assert "NotStarted → Queued → Preparing → Running → Finalizing → Completed" in seen.statuses()[-1]


async def test_interrupt_cancels_the_job_and_the_cell_ends_once_azure_says_canceled(arm, open_route):
    arm.cancel_seconds = 1.0
    route = await open_route()
    out = []
    for how in ("cancel", "interrupt"):
        seen = Seen()
        task = asyncio.ensure_future(route.execute(
            "import time\nprint('started', flush=True)\ntime.sleep(60)", on_message=seen))

        async def started():
            return "started" in seen.log()
        await await_for(started, timeout=60, message="the cell to print 'started'")
        t0 = time.monotonic()
        if how == "cancel":  # what the magics' loop does when the notebook is interrupted
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            result = None
        else:
            await route.interrupt()
            result = await asyncio.wait_for(task, 30)
        out.append((time.monotonic() - t0, seen, result))
    (took1, seen1, _), (took2, seen2, result) = out
    names = [b["name"] for b in arm.job_bodies]
    assert [n for n, _ in arm.cancels] == names
    assert [arm.job(n)["properties"]["status"] for n in names] == ["Canceled", "Canceled"]
    # Each cell ended only once Azure reported Canceled, a second after the request, and not long after.
    assert 0.9 < took1 < 10 and 0.9 < took2 < 10
    assert "CancelRequested → Canceled" in seen1.statuses()[-1] and "canceling job" in seen1.notes()
    assert result.status == "error" and result.ename == "KeyboardInterrupt"


async def test_timeout_cancels_the_job(arm, open_route):
    route = await open_route()
    with pytest.raises(ExecutionTimeout) as info:
        await route.execute("import time\ntime.sleep(60)", timeout=3)
    assert "was canceled" in str(info.value)
    name = arm.job_bodies[-1]["name"]
    assert arm.cancels and arm.job(name)["properties"]["status"] == "Canceled"


async def test_a_failed_job_raises_azures_message_and_the_log_tail(arm, open_route):
    seen = Seen()
    route = await open_route()
    result = await route.execute("print('working on it')\nraise ValueError('the input was wrong')",
                                 on_message=seen)
    name = arm.job_bodies[-1]["name"]
    assert result.status == "error" and result.ename == "ValueError"
    assert result.evalue.startswith("the input was wrong (Azure: Execution failed. User process 'python' exited "
                                    "with status code 1.")
    tb = "\n".join(result.traceback)
    assert f"Azure ML job {name} on '{CLUSTER}' failed: Execution failed." in tb
    # The cell's exception as IPython shows one: header, the cell's line with its arrow, the error.
    plain_tb = re.sub(r"\x1b\[[0-9;]*m", "", tb)
    assert "ValueError                                Traceback (most recent call last)" in plain_tb, plain_tb
    assert "File <cell>:2\n      1 print('working on it')\n----> 2 raise ValueError('the input was wrong')" in plain_tb
    assert "\nValueError: the input was wrong\n" in plain_tb
    assert "working on it" in seen.text()  # its output came as it ran
    with pytest.raises(ValueError) as raised:
        result.raise_for_error()
    assert isinstance(raised.value, RemoteError)
    assert "Failed" in seen.statuses()[-1]


async def test_a_busy_cluster_shows_its_nodes_and_queue_before_submitting(arm, open_route):
    arm.set_nodes(CLUSTER, running=4)
    arm.add_job("bob_train_1", CLUSTER, "Queued", created_by="Bob", age_seconds=300)
    arm.add_job("carol_sweep", CLUSTER, "Preparing", created_by="Carol", age_seconds=60)
    arm.add_job("elsewhere", "other", "Queued")
    seen = Seen()
    route = await open_route()
    result = await route.execute("print('ran anyway')", on_message=seen)
    assert result.status == "ok" and "ran anyway" in seen.log()
    notes = seen.notes()
    assert f"'{CLUSTER}' is busy: 4 running, 0 idle of at most 4 nodes, and 2 jobs waiting:" in notes
    assert "bob_train_1 (Queued by Bob, waiting 5m" in notes and "carol_sweep (Preparing by Carol" in notes
    assert "elsewhere" not in notes and "Submitting anyway" in notes
    first_status = next(i for i, m in enumerate(seen.messages) if m["msg_type"] == "display_data")
    assert seen.messages.index(next(m for m in seen.messages if m["msg_type"] == "stream")) < first_status


async def test_an_idle_cluster_shows_no_notice(arm, open_route):
    arm.add_job("bob_train_1", CLUSTER, "Queued")
    seen = Seen()
    route = await open_route()
    assert (await route.execute("print(1)", on_message=seen)).status == "ok" and "busy" not in seen.notes()


async def test_input_in_a_job_fails_clearly(open_route):
    route = await open_route()
    caps, result = route.capabilities, await route.execute("input('name? ')")
    assert caps.as_dict() == {"persistent_namespace": False, "stdin": False, "interrupt": True, "rich_output": False,
                              "variables": True, "nodes": True, "environment": True}
    assert result.ename == "EOFError" and "--push" in result.evalue


async def test_attached_kubernetes_runs_cells_as_jobs(arm, open_route):
    arm.seed(kubernetes_resource("aks-ml"))
    seen = Seen()
    route = await open_route("aks-ml")
    result = await route.execute("print('on kubernetes')", on_message=seen)
    assert (route.kind, route.max_nodes) == ("kubernetes", None)
    assert result.status == "ok" and "on kubernetes" in seen.log()
    assert body_of(arm)["computeId"].endswith("/computes/aks-ml")


async def test_a_missing_permission_names_the_action(arm, open_route):
    from jupyter_compute.families.azureml.arm import AzureError

    arm.denied.add("Microsoft.MachineLearningServices/workspaces/jobs/write")
    route = await open_route()
    with pytest.raises(AzureError) as info:
        await route.execute("print(1)")
    err = info.value
    assert err.reason == "azure_auth" and "Microsoft.MachineLearningServices/workspaces/jobs/write" in err.message


# -- job lists ------------------------------------------------------------------------------------------
async def test_jobs_are_listed_with_status_duration_and_studio_link(arm, workspace, open_route):
    from jupyter_compute.cli import text_job, text_table

    arm.add_job("someone_else", "other", "Running")
    ws, backend = workspace
    route = await open_route()
    await route.execute("print('first')")
    await route.execute("print('second')\nraise RuntimeError('nope')")
    mine = await backend.list_jobs(CLUSTER)
    everything = await backend.list_jobs()
    failed = await backend.get_job(mine[0]["name"])
    # The workspace's verbs (`jobs`, `job` in the CLI and `%compute`) answer the same.
    assert [j["name"] for j in await ws.jobs(CLUSTER)] == [j["name"] for j in mine]
    assert (await ws.job(mine[0]["name"], log_lines=5))["status"] == "Failed"
    with pytest.raises(InvalidRequest):
        await ws.jobs(top=0)
    assert "Failed" in text_table("jobs", mine) and "--- log ---" in text_job(failed)
    first, second = arm.job_bodies[0]["name"], arm.job_bodies[1]["name"]
    assert [j["name"] for j in mine] == [second, first]
    assert [j["status"] for j in mine] == ["Failed", "Completed"]
    assert all(j["compute"] == CLUSTER and j["duration_seconds"] is not None for j in mine)
    assert mine[1]["studio_url"].startswith(f"https://ml.azure.com/runs/{first}?")
    assert {j["name"] for j in everything} == {first, second, "someone_else"}
    assert failed["name"] == second and "second" in failed["log"] and "RuntimeError: nope" in failed["log"]
    assert failed["error"]["code"] == "UserError" and "exited with status code 1" in failed["error"]["message"]
    assert failed["command"].endswith("<<'JUPYTER_COMPUTE_CELL'\nprint('second')\nraise RuntimeError('nope')\n"
                                      "JUPYTER_COMPUTE_CELL")


async def test_a_job_is_cancelled_and_followed_until_azure_says_canceled(arm, workspace):
    arm.cancel_seconds = 0.3
    arm.add_job("long-training", CLUSTER, "Running")
    arm.add_job("finished", CLUSTER, "Completed")
    ws, _ = workspace
    steps: list[str] = []
    out = await ws.cancel_job("long-training", progress=steps.append)
    assert out["status"] == "Canceled" and out["note"] == "canceled"
    assert steps[0] == "CancelRequested" and steps[-1] == "Canceled"
    assert [n for n, _ in arm.cancels] == ["long-training"]
    # One that has already ended is left as it is, and says so.
    out = await ws.cancel_job("finished")
    assert out["status"] == "Completed" and out["note"] == "the job had already ended (Completed): nothing to cancel"
    assert [n for n, _ in arm.cancels] == ["long-training"]
    with pytest.raises(NotFound):
        await ws.cancel_job("no-such-job")


def test_job_views_read_as_people_read_time():
    from jupyter_compute.commands import text_job, text_table

    job = {"name": "j1", "status": "Completed", "compute": CLUSTER, "duration_seconds": 192.4,
           "age_seconds": 7300, "created_by": "Bob", "studio_url": "https://ml.azure.com/runs/j1",
           "log": None, "log_error": "the log container is not readable (AuthorizationFailure)"}
    table = text_table("jobs", [job])
    assert "3m 12s" in table and "2 h ago" in table and "192" not in table
    text = text_job(job)
    assert "duration: 3m 12s" in text and "created: 2 h ago" in text and "7300" not in text
    assert text.count("AuthorizationFailure") == 1
    assert "log not available: the log container is not readable" in text


# -- an environment with another Python -------------------------------------------------------------------
def _python(minor: int | None = None, *, without_cloudpickle: bool = False) -> str | None:
    """An interpreter other than this venv's: of that minor version, or lacking cloudpickle."""
    import glob
    import os
    import shutil
    import subprocess
    import sys

    found = [shutil.which(f"python3.{minor}")] if minor else []
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found += sorted(glob.glob(os.path.join(root, "versions", f"3.{minor if minor else '*'}*", "bin", "python3")))
    found += ["/usr/bin/python3", "/usr/local/bin/python3"]
    for exe in filter(None, found):
        if not os.path.exists(exe) or os.path.realpath(exe) == os.path.realpath(sys.executable):
            continue
        probe = ("import sys; import importlib.util as u; "
                 "print(sys.version_info[1], u.find_spec('cloudpickle') is None)")
        try:
            out = subprocess.run([exe, "-c", probe], capture_output=True, text=True, timeout=20).stdout.split()
        except (OSError, subprocess.SubprocessError):
            continue
        if len(out) == 2 and (minor is None or int(out[0]) == minor) and (not without_cloudpickle or out[1] == "True"):
            return exe
    return None


async def test_a_job_python_without_cloudpickle_gets_it_shipped_with_pushed_code(arm, open_route):
    import sys

    exe = _python(sys.version_info[1], without_cloudpickle=True)
    if exe is None:
        pytest.skip("no second Python of this minor version without cloudpickle here")
    arm.python = exe
    route = await open_route()
    await route.push({"double": lambda v: v * 2})
    result = await route.execute("import sys\nvalue = double(21)\ntriple = lambda v: v * 3\n"
                                 "print(sys.version_info[:2], getattr(sys.modules['cloudpickle'], '__file__', "
                                 "'shipped'))", pull=["value", "triple"], on_message=(seen := Seen()))
    values, _ = await route.pull(["value", "triple"])
    assert result.status == "ok" and f"{tuple(sys.version_info[:2])} shipped" in seen.log()
    assert values["value"] == 42 and values["triple"](3) == 9


async def test_a_job_on_another_python_minor_names_the_variables_that_cannot_travel(arm, open_route):
    import sys

    exe = next(filter(None, (_python(m) for m in (8, 9, 10, 12, 13) if m != sys.version_info[1])), None)
    if exe is None:
        pytest.skip("no other Python minor version here")
    arm.python = exe
    route = await open_route()
    await route.push({"offset": lambda: 1})
    code_pushed = await route.execute("print(offset())")
    await route.push({"rows": [1, 2, 3]})
    result = await route.execute("class Point:\n    pass\np = Point()\nn = sum(rows)\nf = lambda v: v + n\n"
                                 "import sys\nprint(sys.version_info[:2])", pull=["n", "p", "f"])
    values, _ = await route.pull(["n"])
    errors = {}
    for name in ("p", "f"):
        with pytest.raises(TransferError) as info:
            await route.pull([name])
        errors[name] = info.value
    there = subprocess_version(exe)
    assert code_pushed.status == "error" and code_pushed.ename == "RuntimeError"
    assert f"cannot load pushed variable 'offset' on Python {there}" in code_pushed.evalue
    assert result.status == "ok" and values == {"n": 6}
    here = ".".join(map(str, sys.version_info[:3]))
    assert errors["p"].variable == "p" and f"the job ran Python {there}, this notebook runs {here}" in errors["p"].message
    assert errors["f"].variable == "f" and "cannot be pickled in the job" in errors["f"].message


def subprocess_version(exe: str) -> str:
    import subprocess

    return subprocess.run([exe, "-c", "import sys; print('.'.join(map(str, sys.version_info[:3])))"],
                          capture_output=True, text=True, timeout=20).stdout.strip()
