"""Real kernel lifecycles: processes that outlive their starters, die from outside, and race."""
from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import sqlite3
import sys
import time

import psutil
import pytest
from jupyter_client import BlockingKernelClient

from jupyter_compute.core.store import Store

from tests.support import await_for, cli, cli_subprocess, wait_for, wait_op

VENV = os.path.dirname(os.path.dirname(sys.executable))


def kernel_client(db, name) -> BlockingKernelClient:
    row = Store(str(db)).get_target("local", name)
    kc = BlockingKernelClient(connection_file=row["runtime"]["connection_file"])
    kc.load_connection_file()
    kc.start_channels()
    kc.wait_for_ready(timeout=30)
    return kc


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_cli_started_kernel_has_the_right_interpreter_and_outlives_the_cli(compute_db):
    # A CLI process of its own, which has exited by the time its answer is read.
    r = cli_subprocess("create", "k1", "--kind", "local-kernel", "--python", VENV, "--output", "json")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    assert t["state"] == "running"
    pid = t["properties"]["kernel_pid"]
    proc = psutil.Process(pid)
    # A venv path resolves to its interpreter, which runs the kernel.
    assert proc.cmdline()[0] == os.path.join(VENV, "bin", "python")
    assert "ipykernel_launcher" in proc.cmdline()
    # The CLI process has exited; the kernel and its supervisor run on, in their own session.
    runtime = Store(str(compute_db)).get_target("local", "k1")["runtime"]
    supervisor = psutil.Process(int(runtime["supervisor"].split(":")[0]))
    for p in (proc, supervisor):
        assert p.is_running() and p.status() != psutil.STATUS_ZOMBIE, p
    assert os.getsid(pid) != os.getsid(0)
    # The kernel chose its ports on loopback and a key of its own; its connection file is private.
    conn_file = Store(str(compute_db)).get_target("local", "k1")["runtime"]["connection_file"]
    with open(conn_file) as f:
        info = json.load(f)
    assert info["ip"] == "127.0.0.1" and len(info["key"]) >= 32 and info["signature_scheme"] == "hmac-sha256"
    assert os.stat(conn_file).st_mode & 0o777 == 0o600
    kc = kernel_client(compute_db, "k1")
    reply = kc.execute_interactive("import sys; print(sys.executable)", timeout=30)
    assert reply["content"]["status"] == "ok"
    kc.stop_channels()
    # Unsigned (or wrongly signed) messages are dropped: a client without the key gets no answer.
    stranger = BlockingKernelClient()
    stranger.load_connection_info({**info, "key": b""})
    stranger.start_channels()
    try:
        stranger.kernel_info()
        with pytest.raises(queue.Empty):
            stranger.get_shell_msg(timeout=3)
    finally:
        stranger.stop_channels()

    r = cli("stop", "k1", "--yes")
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: gone(pid), timeout=10, message="kernel to exit")
    r = cli("show", "k1", "--output", "json")
    assert json.loads(r.stdout)["state"] == "stopped"


@pytest.mark.fault
def test_server_started_kernel_survives_a_server_restart_and_is_adopted(server_process, compute_db):
    s1 = server_process()
    code, body = s1.request("POST", "workspaces/local/targets", {"name": "k1", "kind": "local-kernel"})
    assert code == 202
    assert s1.wait_op(body["operation"]["id"])["status"] == "succeeded"
    pid = s1.request("GET", "workspaces/local/targets/k1")[1]["properties"]["kernel_pid"]
    s1.stop()
    assert psutil.pid_exists(pid) and not gone(pid)

    s2 = server_process()
    code, t = s2.request("GET", "workspaces/local/targets/k1")
    assert code == 200 and t["state"] == "running" and t["properties"]["kernel_pid"] == pid
    # The new server can drive it: stop it, and the process ends.
    code, body = s2.request("POST", "workspaces/local/targets/k1/stop")
    assert s2.wait_op(body["operation"]["id"])["status"] == "succeeded"
    assert wait_for(lambda: gone(pid), timeout=10, message="kernel to exit")


@pytest.mark.parametrize("victim", ["kernel", "kernel-and-supervisor"])
@pytest.mark.fault
async def test_a_kernel_killed_from_outside_shows_failed_within_5s(api, compute_db, victim):
    code, body = await api("POST", "workspaces/local/targets", {"name": "k1", "kind": "local-kernel"})
    assert (await wait_op(api, body["operation"]["id"]))["status"] == "succeeded"
    rt = Store(str(compute_db)).get_target("local", "k1")["runtime"]
    if victim == "kernel-and-supervisor":
        os.kill(int(rt["supervisor"].split(":")[0]), signal.SIGKILL)
    os.kill(rt["kernel_pid"], signal.SIGKILL)

    async def ended():
        _, t = await api("GET", "workspaces/local/targets/k1")
        return t if t["state"] in ("failed", "stopped") else None
    t = await await_for(ended, timeout=5, interval=0.1, message="k1 to leave running within 5 s")
    assert t["state"] == "failed" and "exited unexpectedly" in t["errors"][0]["message"]
    # and it can be started again
    code, body = await api("POST", "workspaces/local/targets/k1/start")
    assert (await wait_op(api, body["operation"]["id"]))["status"] == "succeeded"
    _, t = await api("GET", "workspaces/local/targets/k1")
    assert t["state"] == "running" and t["errors"] == []


@pytest.mark.parametrize("how", ["row deleted", "taken over"])
@pytest.mark.fault
def test_a_supervisor_no_longer_its_targets_ends_itself_and_its_kernel(compute_db, how):
    """A target's row removed by a process that died before ending its processes, or a row that
    names another supervisor: the supervisor sees it on its next look and ends both."""
    r = cli("create", "k1", "--kind", "local-kernel")
    assert r.returncode == 0, r.stderr
    store = Store(str(compute_db))
    rt = store.get_target("local", "k1")["runtime"]
    supervisor, kernel = int(rt["supervisor"].split(":")[0]), rt["kernel_pid"]
    assert not gone(supervisor) and not gone(kernel)
    if how == "row deleted":
        store.delete_target("local", "k1")
    else:
        store.update_target("local", "k1", runtime={**rt, "supervisor": "1:0@another-boot"})
    wait_for(lambda: gone(supervisor) and gone(kernel), timeout=10, message="the supervisor and its kernel to end")


@pytest.mark.fault
def test_processes_of_a_target_gone_in_a_crash_are_ended_by_the_next_call(compute_db):
    """The supervisor SIGKILLed, then the target's row deleted (a crash between the two): its kernel
    has nobody watching it. The tag in its environment names the target, and the next call ends it."""
    from jupyter_compute.core import processes as procs

    r = cli("create", "k1", "--kind", "local-kernel")
    assert r.returncode == 0, r.stderr
    store = Store(str(compute_db))
    rt = store.get_target("local", "k1")["runtime"]
    supervisor, kernel = int(rt["supervisor"].split(":")[0]), rt["kernel_pid"]
    tags = {p.pid: (ws, t) for p, ws, t in procs.owned_processes(str(compute_db))}
    assert tags.get(supervisor) == ("local", "k1") and tags.get(kernel) == ("local", "k1")
    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: gone(supervisor), timeout=10, message="the supervisor to die")
    store.delete_target("local", "k1")
    assert not gone(kernel)
    r = cli("list")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: gone(kernel), timeout=10, message="the orphaned kernel to be ended")


@pytest.mark.fault
def test_a_kernel_its_supervisor_died_before_recording_is_ended_and_the_target_starts_again(compute_db):
    """The supervisor killed between starting its kernel and recording it: the start fails saying so,
    the target shows failed, the kernel nobody recorded is ended once nothing happens to the target
    (the tag names it; the store does not), and a start then works."""
    from jupyter_compute.core import processes as procs
    from jupyter_compute.core.workspace import ORPHAN_QUIET_SECONDS

    r = cli_subprocess("create", "k1", "--kind", "local-kernel",
                       env={procs.FAILPOINT_ENV: "local-kernel-launched"})
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "exited before it finished" in r.stdout + r.stderr, (r.stdout, r.stderr)
    found = [p for p, ws, t in procs.owned_processes(str(compute_db)) if (ws, t) == ("local", "k1")]
    assert len(found) == 1 and "ipykernel_launcher" in " ".join(found[0].cmdline()), found
    kernel = found[0].pid
    assert cli("list").returncode == 0 and not gone(kernel)  # not while the failure is fresh
    store = Store(str(compute_db))
    row = store.get_target("local", "k1")
    assert row["state"] == "failed" and str(kernel) not in json.dumps(row["runtime"]), row
    wait_for(lambda: cli("list").returncode == 0 and gone(kernel), timeout=ORPHAN_QUIET_SECONDS + 30,
             message="the unrecorded kernel to be ended")
    assert store.get_target("local", "k1")["state"] == "failed"
    r = cli("start", "k1")
    assert r.returncode == 0, r.stderr
    rt = store.get_target("local", "k1")["runtime"]
    assert not gone(rt["kernel_pid"])
    assert [p.pid for p, _, t in procs.owned_processes(str(compute_db)) if t == "k1"
            and "ipykernel_launcher" in " ".join(p.cmdline())] == [rt["kernel_pid"]]


@pytest.mark.fault
async def test_20_concurrent_start_and_stop_calls_end_consistent(api, compute_db):
    code, body = await api("POST", "workspaces/local/targets", {"name": "k1", "kind": "local-kernel"})
    await wait_op(api, body["operation"]["id"])
    calls = [api("POST", f"workspaces/local/targets/k1/{'stop' if i % 2 else 'start'}") for i in range(20)]
    results = await asyncio.gather(*calls)
    codes = [c for c, _ in results]
    assert set(codes) <= {202, 409}, codes
    assert codes.count(202) >= 1
    for c, body in results:
        if c == 409:
            assert body["reason"] == "operation_in_progress"
        else:
            op = await wait_op(api, body["operation"]["id"])
            assert op["status"] == "succeeded", op
    _, t = await api("GET", "workspaces/local/targets/k1")
    rt = Store(str(compute_db)).get_target("local", "k1")["runtime"]
    if t["state"] == "running":
        assert not gone(rt["kernel_pid"])
    else:
        assert t["state"] == "stopped" and rt == {}
    # No kernel of k1 other than the recorded one is left running (one being stopped gets a moment).
    def kernels():
        return [p for p in psutil.process_iter(["cmdline", "status"])
                if "ipykernel_launcher" in " ".join(p.info["cmdline"] or [])
                and str(compute_db.parent) in " ".join(p.info["cmdline"] or [])
                and p.info["status"] != psutil.STATUS_ZOMBIE]
    expected = 1 if t["state"] == "running" else 0
    try:
        await asyncio.to_thread(wait_for, lambda: len(kernels()) == expected, timeout=15,
                                message=f"{expected} kernel(s) of k1")
    except AssertionError:
        seen = [(p.pid, p.ppid(), p.info["status"]) for p in kernels()]
        raise AssertionError(f"{t['state']} with runtime {rt}; kernels running: {seen}; "
                             f"operations: {[r for _, r in results]}") from None
    assert sqlite3.connect(compute_db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("action", ["start", "stop"])
async def test_a_start_or_stop_judged_from_a_read_older_than_another_callers_change_still_acts(
        local, compute_db, action):
    # Two callers at once: this one reads the target, then another's stop (or start) ends before
    # this one's operation begins. Taking "already running" from the older read once left a
    # stopped row over a live kernel, which the next start orphaned.
    from jupyter_compute.core.models import State

    await local.create("k1", "local-kernel", wait=True)
    if action == "stop":
        await local.stop("k1", wait=True)
    backend, seen = await local._locate("k1")
    await (local.stop if action == "start" else local.start)("k1", wait=True)
    op = await local._lifecycle("k1", action, State.starting if action == "start" else State.stopping,
                                located=(backend, seen), wait=True)
    assert op.status.value == "succeeded", op
    t = await local.get("k1")
    rt = Store(str(compute_db)).get_target("local", "k1")["runtime"]
    if action == "start":
        assert t.state == State.running and not gone(rt["kernel_pid"]) and op.progress != "already running"
    else:
        assert t.state == State.stopped and rt == {} and op.progress != "already stopped"
        await asyncio.to_thread(wait_for, lambda: not [
            p for p in psutil.process_iter(["cmdline", "status"])
            if str(compute_db.parent) in " ".join(p.info["cmdline"] or []) and p.info["status"] != "zombie"],
            timeout=10, message="no kernel or supervisor of k1")


@pytest.mark.fault
async def test_memory_limit_watchdog_stops_the_kernel(api, compute_db):
    code, body = await api("POST", "workspaces/local/targets",
                           {"name": "k1", "kind": "local-kernel", "memory_limit_mb": 300})
    assert (await wait_op(api, body["operation"]["id"]))["status"] == "succeeded"
    from jupyter_client import AsyncKernelClient
    row = Store(str(compute_db)).get_target("local", "k1")
    kc = AsyncKernelClient(connection_file=row["runtime"]["connection_file"])
    kc.load_connection_file()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=30)
        # numpy's allocations work under the watchdog (no RLIMIT_AS), until the limit is crossed.
        kc.execute("import numpy as np; small = np.ones(10_000_000); big = np.ones(80_000_000); import time; "
                   "time.sleep(30)")

        async def failed():
            _, t = await api("GET", "workspaces/local/targets/k1")
            return t if t["state"] == "failed" else None
        t = await await_for(failed, timeout=20, interval=0.2, message="the watchdog to fail k1")
    finally:
        kc.stop_channels()
    message = t["errors"][0]["message"]
    assert message.startswith("the kernel of 'k1' was stopped: it used ") and message.endswith(
        "MB, above its memory limit of 300 MB"), message


@pytest.mark.long
async def test_idle_shutdown_stops_an_idle_kernel(api, compute_db):
    """The shortest idle shutdown is a minute: this test waits for it (bounded at three)."""
    code, body = await api("POST", "workspaces/local/targets",
                           {"name": "idle", "kind": "local-kernel", "idle_shutdown_minutes": 1})
    assert (await wait_op(api, body["operation"]["id"]))["status"] == "succeeded"
    _, t = await api("GET", "workspaces/local/targets/idle")
    assert t["idle_shutdown_at"] is not None
    pid = t["properties"]["kernel_pid"]
    t0 = time.monotonic()

    async def shut_down():
        _, t = await api("GET", "workspaces/local/targets/idle")
        return t if t["state"] not in ("running", "stopping") else None
    t = await await_for(shut_down, timeout=180, interval=0.2, message="the idle shutdown to fire")
    assert t["state"] == "stopped" and t["provider_state"] == "idle shutdown"
    assert 55 < time.monotonic() - t0 < 180
    assert await asyncio.to_thread(wait_for, lambda: gone(pid), timeout=10, message="idle kernel to exit")


async def test_deleting_a_target_removes_its_kernels_logs_and_no_other(local, compute_db):
    await local.create("a", "local-kernel", wait=True)
    await local.create("a-b", "local-kernel", wait=True)
    logs = {name: Store(str(compute_db)).get_target("local", name)["runtime"]["log_file"] for name in ("a", "a-b")}
    assert all(os.path.exists(p) for p in logs.values())
    await local.stop("a", wait=True)
    assert os.path.exists(logs["a"])  # a stop keeps the log, to read why the kernel ended
    await local.delete("a", wait=True)
    assert not os.path.exists(logs["a"])
    assert os.path.exists(logs["a-b"])  # a target whose name begins the same keeps its own
    await local.delete("a-b", wait=True)
    assert not os.path.exists(logs["a-b"])


async def test_a_targets_kernel_keeps_its_history_in_memory(local, compute_db, tmp_path, monkeypatch):
    """In, Out and %history work on the target's kernel, and its cells are not written to the user's
    history file (the notebook's own kernel records each %%compute cell)."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    await local.create("hist", "local-kernel", wait=True)
    route = await local.open_route("hist")
    try:
        await route.execute("x = 41")
        r = await route.execute("h = get_ipython().history_manager\n"
                                "(str(h.hist_file), In[-2], len(list(h.get_range(raw=True))) >= 2)")
    finally:
        await route.close()
    assert r.status == "ok", r
    assert r.result["text/plain"] == "(':memory:', 'x = 41', True)"
    assert not list((tmp_path / "ipython").rglob("history.sqlite"))
