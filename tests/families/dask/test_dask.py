"""Dask clusters on real processes: a managed ``dask-cluster`` under its detached supervisor, an attached
``dask`` scheduler started separately, and the batch route that runs cells on them (directly, through
a kernel with the ``%%compute`` magic, and through nbclient)."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import nbformat
import numpy as np
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from jupyter_compute.core import processes as procs
from jupyter_compute.families.dask.backend import scheduler_identity, terminate_cluster
from jupyter_compute.core.errors import InvalidRequest, Unavailable
from jupyter_compute.core.route import ExecutionError, ExecutionTimeout, TransferError
from jupyter_compute.families.dask.route import DaskRoute
from jupyter_compute.core.store import Store

from tests.conftest import server_config
from tests.support import await_for, cli, free_port, run, wait_for

# The route tests share one cluster (``shared``), built once per worker: they stay together.
pytestmark = [pytest.mark.timeout(150), pytest.mark.xdist_group("dask-cluster"), pytest.mark.long]


def cluster_processes(runtime: dict) -> list[str]:
    """Identities of a managed cluster's supervisor and worker processes, as its runtime records them."""
    return [runtime["supervisor"], *(w["ident"] for w in runtime.get("workers") or [] if w.get("ident"))]


# -- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A managed cluster of two single-thread workers in a store of its own, shared by the route tests."""
    db = tmp_path_factory.mktemp("shared-cluster") / "compute.db"
    env = {"JUPYTER_COMPUTE_DB": str(db)}
    r = cli("create", "shared", "--kind", "dask-cluster", "--min-nodes", "2", "--max-nodes", "3",
            "--threads-per-node", "1", "--idle-seconds-before-scaledown", "60", "-o", "json", env=env)
    assert r.returncode == 0, r.stderr
    target = json.loads(r.stdout)
    store = Store(str(db))
    runtime = store.get_target("local", "shared")["runtime"]
    info = {"scheduler_address": runtime["scheduler_address"], "security": runtime["tls"], "managed": True,
            "max_nodes": 3}
    try:
        yield {"env": env, "info": info, "target": target}
    finally:
        runtime = store.get_target("local", "shared")["runtime"]
        r = cli("delete", "shared", "--yes", env=env)
        terminate_cluster(runtime, grace=2)  # whatever the delete left behind
        store.close()
    assert r.returncode == 0, r.stderr
    assert not any(procs.alive(i) for i in cluster_processes(runtime))


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """A second cluster started separately, as someone else would: ``dask scheduler`` and one ``dask worker``."""
    folder = tmp_path_factory.mktemp("external-cluster")
    sched_file = folder / "scheduler.json"
    port = free_port()
    log = open(folder / "cluster.log", "ab")
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                              "--port", str(port), "--no-dashboard", "--scheduler-file", str(sched_file)],
                             stdout=log, stderr=subprocess.STDOUT)
    worker = None
    try:
        wait_for(sched_file.exists, timeout=30, message="the external scheduler")
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                   str(sched_file), "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                                   "--name", "outside-0"], stdout=log, stderr=subprocess.STDOUT)
        address = f"tcp://127.0.0.1:{port}"
        wait_for(lambda: len(run(scheduler_identity(address, None))["workers"]) == 1, timeout=40, interval=0.2,
                 message="the external worker")
        yield address
    finally:
        for p in (worker, sched):
            if p is not None and p.poll() is None:
                p.terminate()
        for p in (worker, sched):
            if p is not None:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        log.close()


@pytest.fixture
def closing(jp_asyncio_loop):
    """``closing(route)`` hands the route back and closes it at teardown, on the test's loop (last
    first); closing one again is harmless, so a test may also close it itself where order matters."""
    routes = []

    def hold(route):
        routes.append(route)
        return route
    yield hold
    for route in reversed(routes):
        jp_asyncio_loop.run_until_complete(route.close())


@pytest.fixture
def shared_route(shared, closing, jp_asyncio_loop):
    """An open route to the shared cluster."""
    route = closing(DaskRoute(**shared["info"], target="shared"))
    jp_asyncio_loop.run_until_complete(route.open(timeout=30))
    return route


class Seen:
    """Collects relayed messages with their arrival time."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.items: list[tuple[float, str, dict]] = []

    def __call__(self, msg: dict) -> None:
        self.items.append((time.monotonic() - self.t0, msg["msg_type"], msg["content"]))

    def text(self, name: str = "stdout") -> str:
        return "".join(c["text"] for _, t, c in self.items if t == "stream" and c["name"] == name)


# -- the managed cluster: create, adaptive scaling, surviving its server, update, delete --------------
def test_kinds_and_options(compute_db):
    r = cli("kinds", "-o", "json")
    kinds = {k["name"]: k for k in json.loads(r.stdout)}
    assert kinds["dask-cluster"]["family"] == kinds["dask"]["family"] == "Clusters"
    assert kinds["dask-cluster"]["managed"] and not kinds["dask"]["managed"]
    props = kinds["dask-cluster"]["create_schema"]["properties"]
    assert {"min_nodes", "max_nodes", "threads_per_node", "memory_limit_mb", "idle_seconds_before_scaledown"} <= set(props)
    assert set(kinds["dask-cluster"]["update_fields"]) >= {"min_nodes", "max_nodes", "idle_seconds_before_scaledown"}
    assert "scheduler_address" in kinds["dask"]["attach_schema"]["required"]
    r = cli("create", "c", "--kind", "dask-cluster", "--min-nodes", "3", "--max-nodes", "2")
    assert r.returncode == 2 and "min_nodes (3) may not exceed max_nodes (2)" in r.stderr
    r = cli("attach", "a", "--kind", "dask", "--scheduler-address", "http://127.0.0.1:1")
    assert r.returncode == 2 and "tcp:// or tls://" in r.stderr
    r = cli("attach", "a", "--kind", "dask", "--scheduler-address", "tls://127.0.0.1:1")
    assert r.returncode == 2 and "tls_ca_file: is required" in r.stderr
    r = cli("create", "--help")
    assert r.returncode == 0 and "--threads-per-node" in r.stdout
    r = cli("list", "-o", "json")
    assert [t["name"] for t in json.loads(r.stdout)] == ["this-machine"]


async def test_managed_cluster_scales_survives_its_server_and_is_adopted(server_process, compute_db, closing):
    a = server_process()
    code, body = a.request("POST", "workspaces/local/targets", {
        "name": "elastic", "kind": "dask-cluster", "min_nodes": 1, "max_nodes": 3, "threads_per_node": 1,
        "memory_limit_mb": 1024, "idle_seconds_before_scaledown": 2})
    assert code == 202, body
    op = a.wait_op(body["operation"]["id"], timeout=60)
    assert op["status"] == "succeeded", op
    code, t = a.request("GET", "workspaces/local/targets/elastic")
    assert t["state"] == "running" and t["nodes"]["current"] == 1 and t["nodes"]["max"] == 3
    assert t["size"]["vcpus"] == 1 and t["size"]["memory_gb"] == 1.0
    link = t["properties"]["dashboard_link"]
    assert link.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(link, timeout=10) as r:
        assert r.status == 200
    store = Store(str(compute_db))
    runtime = store.get_target("local", "elastic")["runtime"]
    assert runtime["scheduler_address"].startswith("tls://127.0.0.1:")
    for role in ("ca", "cert", "key"):
        assert os.stat(runtime["tls"][role]).st_mode & 0o077 == 0

    # The server that started it goes away; the cluster does not, neither at once nor in the time a
    # second server takes to start and find it.
    a.stop()
    assert procs.alive(runtime["supervisor"])
    b = server_process()
    assert procs.alive(runtime["supervisor"])
    assert len((await scheduler_identity(runtime["scheduler_address"], runtime["tls"]))["workers"]) == 1
    code, t = b.request("GET", "workspaces/local/targets/elastic")
    assert code == 200 and t["state"] == "running"

    # Under load, workers appear (up to max_nodes); idle, they leave after idle_seconds_before_scaledown.
    from distributed import Client

    from jupyter_compute.families.dask.backend import security_of
    async with asyncio.timeout(90), Client(runtime["scheduler_address"], security=security_of(runtime["tls"]),
                                           asynchronous=True, set_as_default=False) as client:
        futures = client.map(lambda i: time.sleep(0.5) or i, range(40), pure=False)
        peak = 0
        while not all(f.done() for f in futures):
            _, nodes = b.request("GET", "workspaces/local/targets/elastic/nodes")
            busy = [n for n in nodes["nodes"] if n["state"] != "preparing"]
            peak = max(peak, len(busy))
            await asyncio.sleep(0.3)
        assert sum(await client.gather(futures)) == sum(range(40))
    assert peak == 3
    _, t = b.request("GET", "workspaces/local/targets/elastic")
    assert t["nodes"]["current"] >= 2
    t0 = time.monotonic()
    wait_for(lambda: b.request("GET", "workspaces/local/targets/elastic")[1]["nodes"]["current"] == 1, timeout=30,
             interval=0.2, message="idle workers to leave")
    assert time.monotonic() - t0 < 20

    # A cell on more workers than are running holds the floor up until they have all joined.
    route = closing(DaskRoute(runtime["scheduler_address"], security=runtime["tls"], managed=True, max_nodes=3,
                              target="elastic"))
    await route.open()
    seen = Seen()
    r = await route.execute("import os\nprint(os.getpid())", on_message=seen, nodes=3)
    # Closed now, not at teardown: letting go of the 3-worker floor runs on this loop, which the
    # blocking waits below would hold still.
    await route.close()
    assert r.status == "ok" and "waiting for 3 workers on 'elastic' (1 now)" in seen.text("stderr")
    assert len({line.split()[-1] for line in seen.text().splitlines()}) == 3

    # min/max change while it runs.
    code, t = b.request("PATCH", "workspaces/local/targets/elastic", {"min_nodes": 2})
    assert code == 200 and t["nodes"]["min"] == 2
    wait_for(lambda: b.request("GET", "workspaces/local/targets/elastic")[1]["nodes"]["idle"] == 2, timeout=30,
             interval=0.2, message="a second worker for min_nodes=2")
    code, err = b.request("PATCH", "workspaces/local/targets/elastic", {"max_nodes": 1})
    assert code == 400 and err["field"] == "/min_nodes"
    code, err = b.request("PATCH", "workspaces/local/targets/elastic", {"threads_per_node": 4})
    assert code == 400 and "cannot change" in err["message"]
    # The third worker may still be leaving; the nodes view settles on the two that stay.
    nodes = wait_for(lambda: (lambda n: n if len(n["nodes"]) == 2 else None)(
        b.request("GET", "workspaces/local/targets/elastic/nodes")[1]), timeout=30, interval=0.2,
        message="the nodes view to show the two workers that stay")
    assert all(n["address"] == "127.0.0.1" for n in nodes["nodes"])
    runtime = store.get_target("local", "elastic")["runtime"]

    code, body = b.request("DELETE", "workspaces/local/targets/elastic")
    assert code == 202
    assert b.wait_op(body["operation"]["id"], timeout=60)["status"] == "succeeded"
    wait_for(lambda: not any(procs.alive(i) for i in cluster_processes(runtime)), timeout=10,
             message="every process of the cluster to exit")
    assert not os.path.exists(runtime["dir"])
    assert b.request("GET", "workspaces/local/targets/elastic")[0] == 404
    store.close()


@pytest.mark.fault
def test_a_killed_supervisor_shows_failed_and_takes_its_workers(compute_db):
    r = cli("create", "doomed", "--kind", "dask-cluster", "--min-nodes", "1", "--max-nodes", "1",
            "--threads-per-node", "1")
    assert r.returncode == 0, r.stderr
    store = Store(str(compute_db))
    runtime = store.get_target("local", "doomed")["runtime"]
    procs.signal_ident(runtime["supervisor"], signal.SIGKILL)

    def shown():
        return json.loads(cli("show", "doomed", "-o", "json").stdout)
    wait_for(lambda: shown()["state"] == "failed", timeout=10, interval=0.2, message="the cluster to show failed")
    assert "exited unexpectedly" in shown()["errors"][0]["message"]
    wait_for(lambda: not any(procs.alive(i) for i in cluster_processes(runtime)), timeout=10,
             message="its workers to exit")
    assert cli("delete", "doomed", "--yes").returncode == 0
    store.close()


# -- the route, on the shared cluster ------------------------------------------------------------------
def test_the_worker_side_travels_by_value():
    """Workers may lack jupyter_compute: what runs there must load where it cannot be imported."""
    from distributed.protocol.pickle import dumps

    from jupyter_compute.families.dask.on_worker import FUNCTIONS as _W
    blob = dumps({"run": _W["_w_run"], "fetch": _W["_w_fetch"], "interrupt": _W["_w_interrupt"]})
    code = (
        "import sys, pickle\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'jupyter_compute':\n"
        "            raise ImportError('not installed here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "fns = pickle.loads(sys.stdin.buffer.read())\n"
        "print(fns['fetch']('no-such-cell', ['x']), fns['interrupt']('no-such-cell', [1]))\n")
    r = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert r.stdout.decode().split() == ["{'gone':", "True}", "0"]


def test_route_declares_a_batch_route(shared):
    route = DaskRoute(**shared["info"], target="shared")
    assert isinstance(route, DaskRoute) and route.name == "dask"
    caps = route.capabilities.as_dict()
    assert caps == {"persistent_namespace": False, "stdin": False, "interrupt": True, "rich_output": True,
                    "variables": True, "nodes": True, "environment": False}
    assert route.key == DaskRoute(**shared["info"]).key
    assert route.key != DaskRoute(**{**shared["info"], "scheduler_address": "tcp://x:1"}).key


async def test_output_streams_while_the_task_runs(shared_route):
    seen = Seen()
    r = await shared_route.execute(
        "import sys, time\nprint('one', flush=True)\ntime.sleep(2)\nprint('two')\n"
        "print('to stderr', file=sys.stderr)\n"
        "from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))\n40 + 2", on_message=seen)

    assert r.status == "ok" and r.result == {"text/plain": "42"}
    at = {c["text"]: t for t, kind, c in seen.items if kind == "stream"}
    assert at["two\n"] - at["one\n"] > 1.5  # the first line arrived while the task still slept
    assert seen.text("stderr") == "to stderr\n"
    displays = [c for _, kind, c in seen.items if kind == "display_data"]
    assert displays[0]["data"]["text/html"] == "<b>x</b>"
    assert "rank" not in seen.text()


async def test_nodes_two_runs_on_two_distinct_workers_with_ranks(shared_route):
    seen = Seen()
    r = await shared_route.execute("import os, time\nprint(f'{rank}/{world_size} pid', os.getpid(), flush=True)\n"
                                   "time.sleep(0.5)\nprint('done', end='')\nprint()\nrank", on_message=seen, nodes=2)

    assert r.status == "ok" and r.result == {"text/plain": "0"}
    lines = seen.text().splitlines()
    by_rank = {ln.split("]")[0] + "]": ln for ln in lines if "pid" in ln}
    assert set(by_rank) == {"[rank 0]", "[rank 1]"}
    assert "0/2" in by_rank["[rank 0]"] and "1/2" in by_rank["[rank 1]"]
    assert len({ln.split()[-1] for ln in by_rank.values()}) == 2  # two worker processes
    assert sorted(ln for ln in lines if "done" in ln) == ["[rank 0] done", "[rank 1] done"]


async def test_nodes_beyond_max_nodes_is_refused_before_anything_runs(shared_route):
    with pytest.raises(InvalidRequest) as info:
        await shared_route.execute("print('never')", nodes=4)
    assert "at most 3 workers" in info.value.message and info.value.field == "/nodes"
    with pytest.raises(InvalidRequest):
        await shared_route.execute("print('never')", nodes=0)


async def test_errors_come_back_with_type_message_and_traceback(shared_route):
    one = await shared_route.execute("def f():\n    raise KeyError('nope')\nprint('before')\nf()")
    both = await shared_route.execute("if rank == 1:\n    raise ValueError('only rank one')\nprint('fine')", nodes=2)
    syntax = await shared_route.execute("def (:")
    stdin = await shared_route.execute("input('name? ')")

    assert (one.status, one.ename, one.evalue) == ("error", "KeyError", "'nope'")
    # As IPython shows it: header, each frame with the lines around it and an arrow, then the error.
    shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(one.traceback))
    assert shown.startswith("-" * 75 + "\nKeyError" + " " * 34 + "Traceback (most recent call last)\n"), shown
    assert re.search(r"File <cell \w+>:4\n      2 +raise KeyError\('nope'\)\n      3 print\('before'\)\n----> 4 f\(\)", shown), shown
    assert re.search(r"File <cell \w+>:2, in f\n      1 def f\(\):\n----> 2     raise KeyError\('nope'\)\n      3 ", shown), shown
    assert shown.endswith("\nKeyError: 'nope'")
    assert not any("dask.py" in line or "distributed" in line for line in one.traceback)
    with pytest.raises(KeyError):
        one.raise_for_error()
    assert both.ename == "ValueError" and both.traceback[0].startswith("[rank 1 on tls://")
    assert syntax.ename == "SyntaxError"
    assert stdin.ename == "StdinNotImplementedError" and "--push" in stdin.evalue


async def test_push_and_pull_a_50_mb_array_with_dask_serialisation(shared_route):
    a = np.random.default_rng(1).random(50 * 2**20 // 8)

    pushed = await shared_route.push({"a": a, "scale": 2})
    r = await shared_route.execute("b = a * scale\nbad = (i for i in range(3))\nb.nbytes", nodes=2)
    assert r.status == "ok"
    values, pulled = await shared_route.pull(["b"])
    with pytest.raises(TransferError) as missing_info:
        await shared_route.pull(["nowhere"])
    with pytest.raises(TransferError) as unpicklable_info:
        await shared_route.pull(["bad"])
    fresh = await shared_route.execute("'a' in globals()")
    with pytest.raises(TransferError) as not_sent_info:
        await shared_route.push({"gen": (i for i in range(2))})

    missing, unpicklable, not_sent = missing_info.value, unpicklable_info.value, not_sent_info.value
    assert pushed.names == ["a", "scale"] and pushed.nbytes >= 50 * 2**20
    assert np.array_equal(values["b"], a * 2) and values["b"].flags.writeable
    assert pulled.nbytes >= 50 * 2**20 and "pulled b (52.4 MB)" in str(pulled)
    assert missing.variable == "nowhere" and "did not define" in missing.message
    assert unpicklable.variable == "bad" and "cannot be pickled" in unpicklable.message
    assert fresh.result == {"text/plain": "False"}  # each cell starts afresh: a batch route
    assert not_sent.variable == "gen"


async def test_plain_python_collections_travel_whole_to_every_rank_and_back(shared_route):
    """A list of a million numbers, a tuple and a set reach both ranks as they were, and a list comes
    back; each travels as one pickle (Dask's wire format would otherwise take the list apart element
    by element, which the bench's ``dask_route_list_push_pull_s`` measures)."""
    numbers = list(range(1_000_000))
    pushed = await shared_route.push({"numbers": numbers, "pair": (1, "two"), "seen": {3, 4}})
    r = await shared_route.execute(
        "assert numbers == list(range(1_000_000)) and pair == (1, 'two') and seen == {3, 4}\n"
        "back = numbers[rank::world_size]", nodes=2)
    values, pulled = await shared_route.pull(["back"])

    assert pushed.names == ["numbers", "pair", "seen"]
    assert r.status == "ok", r
    assert values["back"] == numbers[0::2] and pulled.names == ["back"]


async def test_interrupt_during_a_long_sleep_ends_the_cell_within_seconds(shared_route):
    seen = Seen()
    task = asyncio.ensure_future(shared_route.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(60)",
                                                      on_message=seen))
    await await_for(lambda: _true(seen.text() == "sleeping\n"), timeout=30, message="the cell to start")
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    elapsed = time.monotonic() - t0
    after = await shared_route.execute("print('free')", on_message=seen)
    t1 = time.monotonic()
    with pytest.raises(ExecutionTimeout) as timed_info:
        await shared_route.execute("import time\ntime.sleep(60)", timeout=1.5)
    timed_after, timed = time.monotonic() - t1, timed_info.value

    assert elapsed < 8
    assert "restarting tls://" in seen.text("stderr")
    assert after.status == "ok" and seen.text().endswith("free\n")
    assert timed_after < 10 and "longer than 1.5 s" in str(timed)


@pytest.mark.fault
async def test_a_killed_worker_ends_the_cell_with_a_clear_error(shared, shared_route):
    def nodes():
        r = cli("nodes", "shared", "-o", "json", env=shared["env"])
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    seen = Seen()
    task = asyncio.ensure_future(shared_route.execute(
        "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)", on_message=seen))
    pid = int(await await_for(lambda: _true(seen.text().strip()), timeout=30, message="the cell's pid"))
    assert pid in [n["properties"].get("pid") for n in nodes()]
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ExecutionError) as info:
        await task
    err, elapsed = info.value, time.monotonic() - t0

    assert elapsed < 5
    assert "left the cluster while running it" in err.message and "died" in err.message
    wait_for(lambda: pid not in [n["properties"].get("pid") for n in nodes()], timeout=15,
             message="the nodes view to drop the killed worker")
    wait_for(lambda: len([n for n in nodes() if n["state"] == "idle"]) == 2, timeout=30,
             message="the worker to be replaced")


async def _true(value):
    return value


# -- through a kernel: the %%compute magic -------------------------------------------------------------
@pytest.fixture
def attached_shared(shared, compute_db):
    """The shared cluster, attached by its tls:// address in this test's store, as any cluster would be."""
    files = shared["info"]["security"]
    r = cli("attach", "cl", "--kind", "dask", "--scheduler-address", shared["info"]["scheduler_address"],
            "--tls-ca-file", files["ca"], "--tls-client-cert", files["cert"], "--tls-client-key", files["key"],
            "-o", "json")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    assert t["state"] == "running" and t["nodes"]["current"] >= 1
    return "cl"


def test_notebook_cells_on_the_cluster_through_nbclient(attached_shared):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (
        "%load_ext jupyter_compute.notebook.magics",
        "%%compute cl\nimport os\nprint('worker pid', os.getpid())\nfrom IPython.display import HTML\nHTML('<i>hi</i>')",
        "%%compute cl\nprint('before')\nraise ValueError('the remote value was wrong')",
        "print('never runs')")]
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=False)
    with pytest.raises(Exception) as info:
        client.execute()
    assert getattr(info.value, "ename", None) == "ValueError"
    c = nb.cells
    printed = "".join(o.get("text", "") for o in c[1].outputs if o["output_type"] == "stream")
    assert "worker pid" in printed and int(printed.split()[-1]) != os.getpid()
    assert c[1].outputs[-1]["data"]["text/html"] == "<i>hi</i>"
    errors = [o for o in c[2].outputs if o["output_type"] == "error"]
    assert len(errors) == 1 and errors[0]["evalue"] == "the remote value was wrong"
    assert any("raise ValueError" in line for line in errors[0]["traceback"])
    assert c[2].outputs[0]["text"] == "before\n" and not c[3].outputs


def test_notebook_pushes_pulls_and_runs_on_two_nodes_of_the_dask_cluster(shared, monkeypatch):
    """The managed ``dask-cluster`` target itself, from a notebook whose kernel uses the cluster's store."""
    monkeypatch.setenv("JUPYTER_COMPUTE_DB", shared["env"]["JUPYTER_COMPUTE_DB"])
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (
        "%load_ext jupyter_compute\nimport os\nimport numpy as np\na = np.arange(2_000_000, dtype=np.float64)\n"
        "scale = 3",
        "%%compute shared --push a,scale --pull b,ran_on --nodes 2 -v\nimport os\nb = a * scale\n"
        "ran_on = (rank, world_size, os.getpid())\nprint('rank', rank, 'of', world_size, flush=True)",
        "print(np.array_equal(b, a * 3), ran_on[:2], ran_on[2] != os.getpid())",
        "%%compute shared --push scale --nodes 4\nprint('never')",
        "%%compute shared --nodes 2\n'a' in globals(), 'scale' in globals(), rank",
        "%%compute shared\nprint(scale)")]
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True)
    client.execute()
    c = nb.cells
    out = "".join(o.get("text", "") for o in c[1].outputs if o["output_type"] == "stream" and o["name"] == "stdout")
    assert sorted(out.splitlines()) == ["[rank 0] rank 0 of 2", "[rank 1] rank 1 of 2"]
    reports = "".join(o["data"]["text/plain"] for o in c[1].outputs if o["output_type"] == "display_data")
    assert "pushed a, scale (16.0 MB) to shared" in reports and "pulled b, ran_on" in reports
    assert not [o for o in c[1].outputs if o["output_type"] == "error"]
    # Pulled from rank 0, on a worker process of the cluster.
    assert c[2].outputs[0]["text"] == "True (0, 2) True\n"
    # More nodes than the cluster's max_nodes (3): refused before anything runs.
    [error] = [o for o in c[3].outputs if o["output_type"] == "error"]
    assert "--nodes 4" in error["evalue"] and "at most 3 workers" in error["evalue"]
    assert not [o for o in c[3].outputs if o["output_type"] == "stream" and "never" in o["text"]]
    # A batch route: the next cell starts afresh, without what the refused cell would have pushed.
    assert c[4].outputs[-1]["data"]["text/plain"] == "(False, False, 0)"
    # The first cell on the cluster said so once; a name from an earlier cell is met with how to send it.
    note = "jupyter_compute: each cell on 'shared' runs as a new Dask task; variables move with --push and --pull"
    notes = [[o for o in cell.outputs if o["output_type"] == "display_data" and o["data"]["text/plain"] == note]
             for cell in c[1:]]
    assert [len(n) for n in notes] == [1, 0, 0, 0, 0], notes
    [error] = [o for o in c[5].outputs if o["output_type"] == "error"]
    assert error["ename"] == "NameError" and error["evalue"] == (
        "name 'scale' is not defined. Each cell on 'shared' runs afresh, without earlier cells' variables: "
        "send 'scale' from this notebook with --push scale"), error["evalue"]
    # Its traceback as IPython shows one of this notebook's own cells: named by its execution count.
    shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))
    assert f"Cell In[{c[5].execution_count}], line 1\n----> 1 print(scale)" in shown, shown


@pytest.fixture
def jp_server_config():
    """The extension's server, with jupyter-server-proxy beside it as an installed server has it."""
    config = server_config()
    config["ServerApp"]["jpserver_extensions"]["jupyter_server_proxy"] = True
    return config


@pytest.mark.fault
async def test_the_dashboard_opens_through_the_jupyter_server_with_its_token_and_not_without(
        shared, jp_fetch, jp_base_url, jp_http_port):
    props = shared["target"]["properties"]
    port = urllib.parse.urlsplit(props["dashboard_link"]).port
    assert props["dashboard_path"] == f"proxy/{port}/status"
    r = await jp_fetch(*props["dashboard_path"].split("/"))
    page = r.body.decode()
    assert r.code == 200 and "<title>Dask Diagnostic UI</title>" in page, page[:500]
    # The same address with no token is refused, and nothing of the dashboard is given away.
    from tornado.httpclient import AsyncHTTPClient
    anonymous = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{jp_http_port}{jp_base_url}{props['dashboard_path']}", raise_error=False,
        follow_redirects=False)
    assert anonymous.code in (302, 403), anonymous.code
    assert b"Dask" not in (anonymous.body or b"")


@pytest.fixture
def kernel(compute_db):
    """A python3 kernel on this test's store and a client on its channels, both stopped at teardown."""
    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_kernel_relays_live_and_an_interrupt_ends_the_cell(attached_shared, kernel):
    km, kc = kernel
    kc.wait_for_ready(timeout=60)

    def cell(code, interrupt_on=None):
        """Run ``code``; with ``interrupt_on``, interrupt the kernel once a line holding it is relayed."""
        t0 = time.monotonic()
        seen = []
        interrupted = []

        def hook(m):
            seen.append((time.monotonic() - t0, m["msg_type"], m["content"]))
            if interrupt_on is not None and not interrupted and m["msg_type"] == "stream" \
                    and interrupt_on in m["content"]["text"]:
                interrupted.append(True)
                km.interrupt_kernel()
        reply = kc.execute_interactive(code, timeout=90, output_hook=hook)
        return reply["content"], seen, time.monotonic() - t0

    assert cell("%load_ext jupyter_compute.notebook.magics")[0]["status"] == "ok"
    reply, seen, _ = cell("%%compute cl\nimport time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second')")
    assert reply["status"] == "ok"
    at = {c["text"]: t for t, kind, c in seen if kind == "stream"}
    assert at["second\n"] - at["first\n"] > 2.0

    reply, seen, elapsed = cell("%%compute cl\nimport time\nprint('sleeping', flush=True)\ntime.sleep(60)",
                                interrupt_on="sleeping")
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert elapsed < 12
    interrupted_at = next(t for t, kind, c in seen if kind == "stream" and "sleeping" in c["text"])
    assert elapsed - interrupted_at < 9
    reply, seen, elapsed = cell("%%compute cl\nprint('free')")
    assert reply["status"] == "ok" and any(c.get("text") == "free\n" for _, k, c in seen if k == "stream")


# -- an attached cluster, over REST ---------------------------------------------------------------------
async def test_attach_a_separately_started_cluster_and_route_there(api, external, compute, closing):
    code, body = await api("POST", "workspaces/local/targets",
                           {"name": "outside", "kind": "dask", "scheduler_address": external})
    assert code == 202, body
    op_id = body["operation"]["id"]

    async def finished():
        _, op = await api("GET", f"operations/{op_id}")
        return op if op["status"] != "running" else None
    op = await await_for(finished, timeout=30, message="the attach")
    assert op["status"] == "succeeded", op
    code, t = await api("GET", "workspaces/local/targets/outside")
    assert t["state"] == "running" and t["managed"] is False and t["nodes"]["current"] == 1
    assert t["properties"]["scheduler_address"] == external
    code, nodes = await api("GET", "workspaces/local/targets/outside/nodes")
    assert code == 200 and [n["properties"]["name"] for n in nodes["nodes"]] == ["outside-0"]

    code, err = await api("POST", "workspaces/local/targets",
                          {"name": "again", "kind": "dask", "scheduler_address": external})
    assert code == 409 and "already attached as 'outside'" in err["message"]

    route = closing(await compute.workspace().route("outside"))
    await route.open(timeout=30)
    seen = Seen()
    await route.push({"n": 20})
    r = await route.execute("import socket\nprint('on', socket.gethostname())\nn + 1", on_message=seen)
    assert r.result == {"text/plain": "21"} and seen.text() == f"on {socket.gethostname()}\n"
    values, _ = await route.pull(["n"])
    assert values == {"n": 20}

    code, body = await api("DELETE", "workspaces/local/targets/outside")
    assert code == 202
    await await_for(lambda: _gone(api, "outside"), timeout=30, message="the detach")
    assert len((await scheduler_identity(external, None))["workers"]) == 1  # detach leaves the cluster alone


async def _gone(api, name):
    code, _ = await api("GET", f"workspaces/local/targets/{name}")
    return code == 404


async def test_an_unreachable_scheduler_is_503_naming_its_address(api):
    address = f"tcp://127.0.0.1:{free_port()}"
    code, err = await api("POST", "workspaces/local/targets", {"name": "nowhere", "kind": "dask",
                                                                "scheduler_address": address})
    assert code == 503 and err["reason"] == "unreachable" and address in err["message"]
    assert (await api("GET", "workspaces/local/targets/nowhere"))[0] == 404

    code, err = await api("POST", "workspaces/local/targets", {"name": "t", "kind": "dask",
                                                                "scheduler_address": "tls://127.0.0.1:1"})
    assert code == 400 and err["field"] == "/tls_ca_file"
    code, err = await api("POST", "workspaces/local/targets", {"name": "t", "kind": "dask",
                                                                "scheduler_address": "tcp://127.0.0.1:1",
                                                                "tls_ca_file": "/no/such/file"})
    assert code == 400 and err["field"] == "/tls_ca_file"

    with pytest.raises(Unavailable) as info:
        route = DaskRoute(address, target="gone")
        await route.open(timeout=1)
    assert address in info.value.message
