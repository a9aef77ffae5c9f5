"""A ``local-kernel`` target as a Jupyter kernel: its kernelspec follows the target, and a client that
names it (a kernel manager, nbclient, the Jupyter server's REST API) gets a fresh ipykernel of its own
on the target, with everything a local ipykernel does."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import nbformat
import psutil
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from tests.kernels.helpers import (debugger_answers, input_is_answered, interrupt_ends_a_sleep, kernel_rows, run,
                                   started, text, widget_round_trip)
from tests.support import await_for, cli, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def k1(data_dir, tmp_path):
    """A running local-kernel target with an environment variable and a working directory of its own."""
    work = tmp_path / "work"
    work.mkdir()
    r = cli("create", "k1", "--kind", "local-kernel", "--env", "GREETING=from k1", "--cwd", str(work),
            "--output", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def specs() -> dict:
    return KernelSpecManager().get_all_specs()


# -- the kernelspec follows the target ------------------------------------------------------------------
def test_creating_and_deleting_a_target_adds_and_removes_its_kernel(data_dir, compute_db):
    assert "compute-k1" not in specs()
    assert cli("create", "k1", "--kind", "local-kernel", "--no-wait").returncode == 0
    spec = wait_for(lambda: specs().get("compute-k1"), timeout=2, message="the kernelspec of k1")["spec"]
    assert spec["display_name"] == f"Python {sys.version_info[0]}.{sys.version_info[1]} · k1 (local kernel)"
    assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == "jupyter-compute"
    assert spec["metadata"]["kernel_provisioner"]["config"]["target"] == "k1"
    # `jupyter kernelspec list`, a separate process, sees it too.
    out = subprocess.run([sys.executable, "-m", "jupyter_client.kernelspecapp", "list", "--json"],
                         capture_output=True, text=True, env=os.environ, timeout=60)
    assert "compute-k1" in json.loads(out.stdout)["kernelspecs"], out.stderr

    wait_for(lambda: json.loads(cli("show", "k1", "--output", "json").stdout)["state"] == "running", timeout=60,
             message="k1 to run")
    assert cli("delete", "k1", "--yes").returncode == 0
    wait_for(lambda: "compute-k1" not in specs(), timeout=2, message="the kernelspec of k1 to go")
    assert not (data_dir / "kernels" / "compute-k1").exists()


def test_renaming_a_target_renames_its_kernel(k1, data_dir, compute_db):
    assert "compute-k1" in specs()
    # Running, its processes are recorded under its name: refused, saying what to do.
    r = cli("rename", "k1", "analysis")
    assert r.returncode != 0 and "stop it first" in r.stdout + r.stderr
    assert cli("stop", "k1", "--yes").returncode == 0
    # A name that is taken, or not a name, is refused and nothing changes.
    assert cli("create", "other", "--kind", "local-kernel", "--no-wait").returncode == 0
    r = cli("rename", "k1", "other")
    assert r.returncode != 0 and "a target named 'other' already exists" in r.stdout + r.stderr
    r = cli("rename", "k1", "9 lives")
    assert r.returncode == 2 and "must start with a letter" in r.stderr
    assert "compute-k1" in specs()

    assert cli("rename", "k1", "analysis").returncode == 0
    spec = wait_for(lambda: specs().get("compute-analysis"), timeout=2, message="the renamed kernelspec")["spec"]
    assert "compute-k1" not in specs() and not (data_dir / "kernels" / "compute-k1").exists()
    assert spec["display_name"].endswith(" · analysis (local kernel)")
    assert spec["metadata"]["kernel_provisioner"]["config"]["target"] == "analysis"
    assert cli("show", "k1").returncode != 0
    shown = json.loads(cli("show", "analysis", "--output", "json").stdout)
    assert shown["state"] == "stopped" and shown["properties"]["env"] == {"GREETING": "from k1"}
    # The kernel of the new name starts the target, with everything it had.
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os\nprint(os.environ['GREETING'])")]
    NotebookClient(nb, kernel_name="compute-analysis", timeout=90).execute()
    assert nb.cells[0].outputs[0]["text"] == "from k1\n"


async def test_rename_over_rest_refuses_bad_input_and_changes_nothing(k1, api, data_dir):
    base = "workspaces/local/targets"
    cases = [
        ("nobody", {"name": "x1"}, 404, "no target named 'nobody'"),
        ("k1", {"name": "x1", "size": 2}, 400, "size: is not a field of a rename request"),
        ("k1", {}, 400, "name is required"),
        ("k1", {"name": "local"}, 400, "is reserved"),
        ("this-machine", {"name": "x1"}, 400, "its name is fixed"),
        ("k1", {"name": "x1"}, 409, "stop it first"),  # it runs
    ]
    for name, body, status, words in cases:
        code, answer = await api("POST", f"{base}/{name}/rename", body)
        assert code == status and words in answer["message"], (name, body, code, answer)
        assert "Traceback" not in json.dumps(answer)
    _, listed = await api("GET", base)
    assert sorted(t["name"] for t in listed["targets"]) == ["k1", "this-machine"]
    assert "compute-k1" in specs()
    await asyncio.to_thread(cli, "stop", "k1", "--yes")
    code, renamed = await api("POST", f"{base}/k1/rename", {"name": "x1"})
    assert code == 200 and renamed["name"] == "x1" and renamed["state"] == "stopped"
    await asyncio.to_thread(wait_for, lambda: "compute-x1" in specs() and "compute-k1" not in specs(), timeout=2,
                            message="the kernelspec to follow")


def test_kernelspecs_of_another_store_are_left_alone(data_dir, compute_db, tmp_path, monkeypatch):
    assert cli("create", "mine", "--kind", "local-kernel").returncode == 0
    other = tmp_path / "other" / "compute.db"
    monkeypatch.setenv("JUPYTER_COMPUTE_DB", str(other))
    assert cli("create", "theirs", "--kind", "local-kernel").returncode == 0
    wait_for(lambda: {"compute-mine", "compute-theirs"} <= set(specs()), timeout=5, message="both kernelspecs")
    assert cli("delete", "theirs", "--yes").returncode == 0
    wait_for(lambda: "compute-theirs" not in specs(), timeout=5, message="the other store's kernelspec to go")
    assert "compute-mine" in specs()
    monkeypatch.setenv("JUPYTER_COMPUTE_DB", str(compute_db))
    assert cli("delete", "mine", "--yes").returncode == 0


async def test_a_sync_redoes_only_what_changed_and_mends_folders_changed_from_outside(data_dir, compute_db):
    """The kernelspec sync remembers what it made and wrote: with nothing changed it writes nothing
    and makes no kernelspec again; a target whose row changed is brought in step at once, and a
    folder someone else deleted or rewrote by the next sync that reads the folders back."""
    from jupyter_compute.core import kernels
    from jupyter_compute.core.workspace import Compute

    compute = Compute.from_config()
    store, memory = compute.sync_store, compute.kernelspec_memory
    names = ["compute-a1", "compute-a2", "compute-a3"]
    try:
        for name in ("a1", "a2", "a3"):
            store.insert_target("local", name, "local-kernel", True, {"memory_limit_mb": 512}, "stopped")
        written, removed = await kernels.sync_kernelspecs(compute)  # the first reads the folders back
        assert sorted(written) == names and removed == []
        made = dict(memory.rows)
        assert await kernels.sync_kernelspecs(compute) == ([], [])
        assert all(memory.rows[key][1] is made[key][1] for key in made)  # not made again

        folder = data_dir / "kernels"
        (folder / "compute-a1" / "kernel.json").unlink()
        (folder / "compute-a2" / "kernel.json").write_text('{"argv": ["false"], "display_name": "edited"}')
        store.update_target("local", "a3", runtime={"python_version": "3.99"})
        # A sync between reads of the folders goes by memory: only the target that changed.
        assert await kernels.sync_kernelspecs(compute) == (["compute-a3"], [])
        assert memory.rows[("local", "a3")][1] is not made[("local", "a3")][1]  # its row changed
        assert memory.rows[("local", "a1")][1] is made[("local", "a1")][1]
        assert specs()["compute-a3"]["spec"]["display_name"] == "Python 3.99 · a3 (local kernel)"
        written, removed = await kernels.sync_kernelspecs(compute, check_files=True)
        assert sorted(written) == names[:2] and removed == []
        assert specs()["compute-a2"]["spec"]["display_name"].endswith(" · a2 (local kernel)")
        assert (folder / "compute-a1" / "kernel.json").exists()

        store.delete_target("local", "a1")
        assert await kernels.sync_kernelspecs(compute) == ([], ["compute-a1"])
        assert ("local", "a1") not in memory.rows and not (folder / "compute-a1").exists()
        assert sorted(os.path.basename(path) for path in memory.files) == names[1:]
    finally:
        await compute.close()


async def test_the_servers_sync_gathers_a_burst_but_not_its_own_changes(data_dir, compute_db):
    """The server waits a moment after a change it learns of from the store, to sync once for a
    burst; a change it makes itself is in the kernel lists at once."""
    from jupyter_compute.core.workspace import Compute

    compute = Compute.from_config()
    compute.kernelspec_delay = 60  # longer than the test: only a change of its own cuts it short
    synced = []
    compute.on_kernelspecs_synced = lambda written, removed: synced.append((written, removed))
    try:
        # As another process would: into the store, and the server is told of a change.
        compute.sync_store.insert_target("local", "outside", "local-kernel", True, {}, "stopped")
        compute.kernelspecs_changed()
        await asyncio.sleep(0.5)
        assert synced == [] and "compute-outside" not in specs()
        await compute.workspace("local").rename("outside", "inside")
        await asyncio.wait_for(compute.join(), 10)
        assert synced == [(["compute-inside"], [])] and "compute-inside" in specs()
    finally:
        await compute.close()


# -- a kernel of its own, on the target -----------------------------------------------------------------
def test_nbclient_runs_a_notebook_on_the_target_by_kernel_name(k1, compute_db):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (
        "import os, sys\nprint(os.getpid(), sys.executable, os.environ.get('GREETING'), os.getcwd(), sep='|')",
        "x = 41\nx + 1",
    )]
    NotebookClient(nb, kernel_name="compute-k1", timeout=60).execute()
    pid, python, greeting, cwd = nb.cells[0].outputs[0]["text"].strip().split("|")
    assert int(pid) != k1["properties"]["kernel_pid"]  # its own kernel, not the target's
    assert python == k1["properties"]["python"] and greeting == "from k1" and cwd.endswith("work")
    assert nb.cells[1].outputs[0]["data"]["text/plain"] == "42"
    # Shutting the notebook's kernel down ends that kernel only: the target runs on, and no record is left.
    shown = json.loads(cli("show", "k1", "--output", "json").stdout)
    assert shown["state"] == "running" and shown["properties"]["kernel_pid"] == k1["properties"]["kernel_pid"]
    wait_for(lambda: not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE,
             timeout=10, message="the notebook's kernel to end")
    assert kernel_rows(compute_db) == []


async def test_full_fidelity_completion_inspection_input_widgets_interrupt_debug(k1, compute_db):
    km, kc = await started("compute-k1")
    try:
        rows = kernel_rows(compute_db)
        assert [(r["target"], r["id"]) for r in rows] == [("k1", km.kernel_id)]
        reply, _ = await run(kc, "defined_here = {'a': 1}")
        assert reply["status"] == "ok"
        # Completion and inspection see the kernel's own namespace.
        kc.complete("defined_h", 9)
        completion = (await kc.get_shell_msg(timeout=10))["content"]
        assert "defined_here" in completion["matches"]
        kc.inspect("defined_here", 12)
        inspection = (await kc.get_shell_msg(timeout=10))["content"]
        assert inspection["found"] and "dict" in inspection["data"]["text/plain"]

        # input() is answered by the client.
        await input_is_answered(kc, "ada")

        # A widget made there opens a comm here, and a change sent from here reaches the kernel.
        await widget_round_trip(kc, 7)

        # The control channel answers the debugger.
        await debugger_answers(kc)

        # An interrupt ends a long sleep at once.
        await interrupt_ends_a_sleep(km, kc)
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    assert kernel_rows(compute_db) == []
    assert json.loads(cli("show", "k1", "--output", "json").stdout)["state"] == "running"


async def test_a_kernel_shut_down_politely_is_not_reported_dead(k1, compute_db):
    """A shutdown request (what JupyterLab sends when a notebook's kernel is shut down) lets the
    kernel end itself with exit code 0: nothing says it died, in the log, the record or an event."""
    from jupyter_compute.kernels import provisioner

    told: list[tuple] = []
    provisioner.ended_listeners.append(lambda *a: told.append(a))
    try:
        km, kc = await started("compute-k1")
        try:
            await run(kc, "x = 1")
            pid = kernel_rows(compute_db)[0]["runtime"]["pid"]
        finally:
            kc.stop_channels()
            await km.shutdown_kernel()  # not now=True: the polite way, through the shutdown request
    finally:
        provisioner.ended_listeners.pop()
    assert told == [], told
    assert kernel_rows(compute_db) == []
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_a_restart_gives_a_fresh_namespace_on_the_same_target(k1, compute_db):
    km, kc = await started("compute-k1")
    try:
        await run(kc, "kept = 1")
        first = kernel_rows(compute_db)[0]["runtime"]["pid"]
        await km.restart_kernel(now=True)
        await kc.wait_for_ready(timeout=60)
        reply, outputs = await run(kc, "import os\nprint('kept' in globals(), os.environ['GREETING'])")
        assert text(outputs) == "False from k1\n"
        rows = kernel_rows(compute_db)
        assert [r["target"] for r in rows] == ["k1"] and rows[0]["runtime"]["pid"] != first
        assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


async def test_a_stopped_target_is_started_first_when_its_kernel_is_chosen(k1, compute_db):
    assert cli("stop", "k1", "--yes").returncode == 0
    km, kc = await started("compute-k1")
    try:
        reply, outputs = await run(kc, "print('up')")
        assert text(outputs) == "up\n"
        assert json.loads(cli("show", "k1", "--output", "json").stdout)["state"] == "running"
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


# -- clear failures, and nothing left behind ------------------------------------------------------------
async def test_a_deleted_target_fails_the_kernel_start_at_once(k1, compute_db, data_dir):
    spec_dir = data_dir / "kernels" / "compute-k1"
    saved = (spec_dir / "kernel.json").read_text()
    assert cli("delete", "k1", "--yes").returncode == 0
    # A client that still has the kernelspec (a notebook reopened later) names the gone target.
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(saved)
    km = AsyncKernelManager(kernel_name="compute-k1")
    t0 = time.monotonic()
    with pytest.raises(Exception, match="target 'k1' no longer exists"):
        await km.start_kernel()
    assert time.monotonic() - t0 < 5
    assert kernel_rows(compute_db) == []


async def test_stopping_the_target_ends_its_kernels_with_the_reason(k1, compute_db, caplog):
    km, kc = await started("compute-k1")
    try:
        pid = kernel_rows(compute_db)[0]["runtime"]["pid"]
        assert (await asyncio.to_thread(cli, "stop", "k1", "--yes")).returncode == 0
        deadline = time.monotonic() + 10
        while await km.is_alive():
            assert time.monotonic() < deadline, "the kernel outlived its target"
            await asyncio.sleep(0.1)
        assert km.provisioner._kernel.reason == "the target 'k1' was stopped"
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        # A restart (the server's automatic one, say) does not bring a stopped target back, and says why.
        with pytest.raises(Exception, match="target 'k1' is stopped"):
            await km.restart_kernel(now=True)
        assert json.loads(cli("show", "k1", "--output", "json").stdout)["state"] == "stopped"
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


async def test_the_memory_limit_holds_for_a_notebooks_kernel(data_dir, compute_db):
    assert cli("create", "small", "--kind", "local-kernel", "--memory-limit-mb", "200").returncode == 0
    km, kc = await started("compute-small")
    try:
        kc.execute("import numpy as np\nbig = np.ones(60_000_000)\nimport time\ntime.sleep(30)")
        deadline = time.monotonic() + 20
        while await km.is_alive():
            assert time.monotonic() < deadline, "the kernel kept running above its memory limit"
            await asyncio.sleep(0.1)
        reason = km.provisioner._kernel.reason
        assert reason.startswith("the kernel of 'small' was stopped: it used ")
        assert reason.endswith("MB, above its memory limit of 200 MB")
        assert json.loads(cli("show", "small", "--output", "json").stdout)["state"] == "running"
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


@pytest.mark.fault
def test_a_killed_jupyter_server_leaves_no_kernel_behind(k1, compute_db, server_process):
    server = server_process()
    import urllib.request
    req = urllib.request.Request(f"{server.url}/api/kernels", data=json.dumps({"name": "compute-k1"}).encode(),
                                 method="POST", headers={"Authorization": f"token {server.token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        kernel = json.loads(r.read())
    rows = wait_for(lambda: kernel_rows(compute_db), timeout=10, message="the kernel's record")
    assert rows[0]["id"] == kernel["id"]
    pid = rows[0]["runtime"]["pid"]
    assert psutil.pid_exists(pid)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
             timeout=15, message="the kernel of the killed server to end")
    # Its record goes with the next look at the store (any CLI call reconciles), and the target runs on.
    shown = json.loads(cli("show", "k1", "--output", "json").stdout)
    assert shown["state"] == "running"
    assert kernel_rows(compute_db) == []


async def test_the_server_lists_the_kernel_and_starts_it(k1, jp_fetch):
    # The server writes the kernelspecs of the store's targets into its own data folder as it starts.
    async def listed():
        body = json.loads((await jp_fetch("api", "kernelspecs")).body)
        return body if "compute-k1" in body["kernelspecs"] else None
    body = await await_for(listed, timeout=10, message="the server to list compute-k1")
    assert body["kernelspecs"]["compute-k1"]["spec"]["display_name"].endswith("· k1 (local kernel)")
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "compute-k1"}))
    kernel = json.loads(r.body)
    assert kernel["name"] == "compute-k1"
    await jp_fetch("api", "kernels", kernel["id"], method="DELETE")


# -- other Jupyter clients, by kernel name ---------------------------------------------------------------
def test_papermill_runs_a_notebook_on_the_target(k1, tmp_path):
    import papermill

    source, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "compute-k1", "display_name": "k1",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("greeting = 'default'", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import os\nprint(greeting, os.environ['GREETING'], os.getpid())")]
    nbformat.write(nb, source)
    papermill.execute_notebook(str(source), str(out), parameters={"greeting": "param"}, kernel_name="compute-k1",
                               progress_bar=False)
    printed = nbformat.read(out, as_version=4).cells[-1].outputs[0]["text"].split()
    assert printed[:2] == ["param", "from"] and int(printed[-1]) != k1["properties"]["kernel_pid"]


def test_jupyter_console_runs_on_the_target(k1):
    """`jupyter console --kernel compute-k1`, fed a line and an exit on its input."""
    out = subprocess.run([sys.executable, "-m", "jupyter_console", "--kernel", "compute-k1", "--simple-prompt",
                          "--ZMQTerminalIPythonApp.kernel_timeout=60"],
                         input="import os; print('console says', os.environ['GREETING'])\nexit\n",
                         capture_output=True, text=True, timeout=120)
    assert "console says from k1" in out.stdout, out.stdout + out.stderr


async def test_the_browser_is_told_why_a_kernel_ended(k1, jp_fetch, jp_ws_fetch, jp_serverapp):
    # The server has a data folder of its own (pytest-jupyter's): the kernel is there once its
    # first sync has written it, as a browser would find it in the list.
    async def listed():
        return "compute-k1" in json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]
    await await_for(listed, timeout=10, interval=0.1, message="compute-k1 in the server's kernelspecs")
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "compute-k1"}))
    kernel = json.loads(r.body)
    ws = await jp_ws_fetch("api", "events", "subscribe")
    try:
        assert (await asyncio.to_thread(cli, "stop", "k1", "--yes")).returncode == 0
        deadline = time.monotonic() + 30
        while True:
            event = json.loads(await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic())))
            if event["schema_id"].endswith("/kernel/v1"):
                break
        assert (event["kernel_id"], event["target"]) == (kernel["id"], "k1")
        assert event["reason"] == "the target 'k1' was stopped"
        # The server's automatic restart is refused (the target was stopped on purpose), which leaves
        # jupyter_client's kernel manager between states: it is dropped from the server's list here,
        # as the server's own shutdown could not end it.
        jp_serverapp.kernel_manager.remove_kernel(kernel["id"])
    finally:
        ws.close()


def _execute(code: str, session: str) -> tuple[str, str]:
    """An execute_request as JupyterLab sends it over the kernel's websocket."""
    import uuid

    msg_id = uuid.uuid4().hex
    return msg_id, json.dumps({
        "header": {"msg_id": msg_id, "username": "", "session": session, "msg_type": "execute_request",
                   "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}})


@pytest.mark.fault
async def test_a_notebooks_kernel_killed_mid_cell_says_how_and_comes_back(k1, jp_fetch, jp_ws_fetch, compute_db):
    """A notebook's kernel on the target SIGKILLed while a cell runs, as JupyterLab meets it: the
    notebook is told at once that the kernel is restarting, the reason names the signal (an event the
    sidebar shows, and the kernel's record), the target itself goes on running, and the restarted
    kernel runs the next cell."""
    async def listed():
        return "compute-k1" in json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]
    await await_for(listed, timeout=10, interval=0.1, message="compute-k1 in the server's kernelspecs")
    kernel = json.loads((await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "compute-k1"}))).body)
    events = await jp_ws_fetch("api", "events", "subscribe")
    channels = await jp_ws_fetch("api", "kernels", kernel["id"], "channels")

    async def next_message(ws, until: float) -> dict:
        return json.loads(await asyncio.wait_for(ws.read_message(), max(0.1, until - time.monotonic())))

    try:
        msg_id, request = _execute("import time\nprint('working', flush=True)\ntime.sleep(120)", "s1")
        await channels.write_message(request)
        deadline = time.monotonic() + 60
        while True:  # the cell runs
            m = await next_message(channels, deadline)
            if m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id:
                break
        pid = kernel_rows(compute_db)[0]["runtime"]["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:  # the notebook hears of it: JupyterLab ends the running cell on this
            m = await next_message(channels, deadline)
            if m["msg_type"] == "status" and m["content"]["execution_state"] in ("restarting", "dead"):
                break
        assert m["content"]["execution_state"] == "restarting"
        while True:
            event = await next_message(events, deadline)
            if event["schema_id"].endswith("/kernel/v1"):
                break
        assert (event["kernel_id"], event["target"]) == (kernel["id"], "k1")
        assert event["reason"] == ("the kernel on 'k1' died: killed by SIGKILL (signal 9) - often the "
                                   "out-of-memory killer"), event
        assert json.loads(cli("show", "k1", "--output", "json").stdout)["state"] == "running"
        # The server's automatic restart brings a fresh kernel on the same target, which runs cells.
        def restarted():
            rows = kernel_rows(compute_db)
            return rows and rows[0]["runtime"]["pid"] != pid and psutil.pid_exists(rows[0]["runtime"]["pid"])
        await asyncio.to_thread(wait_for, restarted, timeout=30, message="the restarted kernel")
        deadline = time.monotonic() + 60
        while True:
            msg_id, request = _execute("print(40 + 2)", "s1")
            await channels.write_message(request)
            m = await next_message(channels, deadline)
            while m["parent_header"].get("msg_id") != msg_id or m["msg_type"] not in ("stream", "execute_reply"):
                m = await next_message(channels, deadline)
            if m["msg_type"] == "stream":
                break
        assert m["content"]["text"] == "42\n"
    finally:
        channels.close()
        events.close()
        await jp_fetch("api", "kernels", kernel["id"], method="DELETE")
