"""Faults end in a clear state within seconds: nothing stays transitional, nothing is lost."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import psutil
import pytest

from jupyter_compute.core.store import Store

from tests.conftest import stop_all_targets
from tests.support import wait_for


def slow_python(tmp_path, delay: float) -> str:
    """An interpreter that takes ``delay`` seconds to start: a start stays in flight that long."""
    path = tmp_path / "slow-python"
    path.write_text(f"#!/bin/sh\nsleep {delay}\nexec {sys.executable} \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.fault
def test_server_killed_while_a_start_is_in_flight(server_process, compute_db, tmp_path):
    s1 = server_process()
    code, body = s1.request("POST", "workspaces/local/targets",
                            {"name": "slow", "kind": "local-kernel", "python": slow_python(tmp_path, 3)})
    assert code == 202
    op_id = body["operation"]["id"]
    # Once the kernel's supervisor has taken the start over, the server is no longer needed.
    wait_for(lambda: s1.request("GET", f"operations/{op_id}")[1]["progress"].startswith(
        ("starting the kernel", "waiting for the kernel")), timeout=10,
             message="the supervisor to take the start over")
    os.kill(s1.proc.pid, signal.SIGKILL)          # no clean shutdown
    s1.proc.wait()
    s2 = server_process()
    op = s2.wait_op(op_id, timeout=30)
    # The start belonged to the kernel's supervisor, so it completes without the server.
    assert op["status"] == "succeeded", op
    code, t = s2.request("GET", "workspaces/local/targets/slow")
    assert t["state"] == "running" and psutil.pid_exists(t["properties"]["kernel_pid"])


@pytest.mark.fault
def test_start_whose_supervisor_dies_is_failed_and_the_target_settles(server_process, compute_db, tmp_path):
    s = server_process()
    code, body = s.request("POST", "workspaces/local/targets",
                           {"name": "slow", "kind": "local-kernel", "python": slow_python(tmp_path, 5)})
    op_id = body["operation"]["id"]
    store = Store(str(compute_db))
    sup = wait_for(lambda: store.get_target("local", "slow")["runtime"].get("supervisor"), timeout=10,
                   message="the supervisor to record itself")
    os.kill(int(sup.split(":")[0]), signal.SIGKILL)
    op = s.wait_op(op_id, timeout=10)
    assert op["status"] == "failed" and op["error"]["reason"] == "interrupted"

    def settled():
        _, t = s.request("GET", "workspaces/local/targets/slow")
        return t if t["state"] not in ("creating", "starting") else None
    t = wait_for(settled, timeout=10, message="the target to leave 'creating'")
    assert t["state"] == "failed" and "start it again" in t["errors"][0]["message"]
    # It can be started again, for real.
    code, body = s.request("POST", "workspaces/local/targets/slow/start")
    assert s.wait_op(body["operation"]["id"], timeout=30)["status"] == "succeeded"


CLI_WRITER = """
import io, json, sys
from contextlib import redirect_stdout
from jupyter_compute.cli import main
seen = []
for i in range(int(sys.argv[1])):
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["update", "shared", "--memory-limit-mb", str(1000 + i), "--output", "json"]) == 0
    seen.append(json.loads(out.getvalue())["properties"]["description"])
print(json.dumps(seen))
"""


def _order(description: str | None) -> int:
    return -1 if not description else int(description.split()[-1])


@pytest.mark.fault
def test_the_cli_and_the_server_writing_at_once_lose_no_update(server_process, compute_db, tmp_path):
    """The server takes 200 changes of one field over REST while the CLI's code, in another process,
    makes 200 changes of another field of the same target. Each side only ever counts up, so a write
    made from a stale read would show the other side's value going back; none may, and both last
    values are kept."""
    s = server_process()
    code, body = s.request("POST", "workspaces/local/targets", {"name": "shared", "kind": "local-kernel"})
    assert code == 202, body
    assert s.wait_op(body["operation"]["id"])["status"] == "succeeded"
    n = 200
    cli = subprocess.Popen([sys.executable, "-c", CLI_WRITER, str(n)], env={**os.environ},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory_seen = []
    i = 0
    # At least n writes, and on for as long as the CLI writes too.
    while i < n or cli.poll() is None:
        code, t = s.request("PATCH", "workspaces/local/targets/shared", {"description": f"server {i}"})
        assert code == 200, t
        assert t["properties"]["description"] == f"server {i}"
        memory_seen.append(t["properties"].get("memory_limit_mb") or 0)
        i += 1
    out, err = cli.communicate(timeout=300)
    assert cli.returncode == 0, err
    descriptions_seen = [_order(d) for d in json.loads(out)]
    assert memory_seen == sorted(memory_seen), "a server write brought back an older memory_limit_mb"
    assert descriptions_seen == sorted(descriptions_seen), "a CLI write brought back an older description"
    code, t = s.request("GET", "workspaces/local/targets/shared")
    assert t["properties"]["description"] == f"server {i - 1}"
    assert t["properties"]["memory_limit_mb"] == 1000 + n - 1
    assert Store(str(compute_db)).integrity_check() == "ok"


@pytest.mark.fault
def test_two_servers_on_one_store_see_one_truth(server_process, compute_db):
    """Two JupyterLab windows' servers (or JupyterHub's named servers) on one store: a target made on
    one is seen by the other within a second, and starts from one racing stops from the other end in
    one consistent state, with one kernel at most, never one adopted twice."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    a, b = server_process(), server_process()
    code, body = a.request("POST", "workspaces/local/targets", {"name": "both", "kind": "local-kernel"})
    assert code == 202, body
    made = time.monotonic()
    wait_for(lambda: b.request("GET", "workspaces/local/targets/both")[0] == 200, timeout=1.0, interval=0.02,
             message="the other server to see the new target within a second")
    assert time.monotonic() - made <= 1.0
    assert a.wait_op(body["operation"]["id"])["status"] == "succeeded"

    def call(i: int):
        server, action = (a, "start") if i % 2 else (b, "stop")
        code, out = server.request("POST", f"workspaces/local/targets/both/{action}")
        if code == 202:
            server.wait_op(out["operation"]["id"])
        return code
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(call, range(16)))
    assert set(codes) <= {202, 409}, codes

    def settled():
        _, t = a.request("GET", "workspaces/local/targets/both")
        return t if t["state"] in ("running", "stopped") else None
    t = wait_for(settled, timeout=60, message="the target to settle")
    _, seen_by_b = b.request("GET", "workspaces/local/targets/both")
    assert seen_by_b["state"] == t["state"]
    def processes():
        owned = [p for p, _, target in _owned(compute_db) if target == "both"]
        kinds = sorted("kernel" if "ipykernel" in " ".join(p.cmdline()) else "supervisor" for p in owned)
        return owned, kinds
    if t["state"] == "running":
        owned, kinds = processes()
        assert kinds == ["kernel", "supervisor"], kinds  # one of each: never a second adopter
        assert t["properties"]["kernel_pid"] in {p.pid for p in owned}
    else:
        wait_for(lambda: processes()[0] == [], timeout=10, message="a stopped target to own no process")
    assert Store(str(compute_db)).integrity_check() == "ok"


def _owned(db):
    from jupyter_compute.core.processes import owned_processes
    return owned_processes(str(db))


@pytest.mark.fault
@pytest.mark.long
def test_servers_killed_under_load_leave_no_process_once_targets_are_deleted(tmp_path, compute_db):
    """Three times: a Jupyter server takes random creates, starts, stops and deletes from eight
    clients and is SIGKILLed halfway. A last server then deletes every target through the API, and
    every process any target owned (found by the tag in its environment) is gone soon after."""
    import random
    import threading
    import time

    from jupyter_compute.core.processes import owned_processes
    from tests.loadclient import delete_all
    from tests.servers import ServerProcess

    rng = random.Random(20261207)
    names = [f"t{i}" for i in range(6)]

    def client(server: ServerProcess, end: float, seed: int) -> None:
        r = random.Random(seed)
        while time.monotonic() < end:
            name, roll = r.choice(names), r.random()
            try:
                if roll < 0.35:
                    server.request("POST", "workspaces/local/targets", {"name": name, "kind": "local-kernel"})
                elif roll < 0.6:
                    server.request("POST", f"workspaces/local/targets/{name}/start")
                elif roll < 0.8:
                    server.request("POST", f"workspaces/local/targets/{name}/stop")
                else:
                    server.request("DELETE", f"workspaces/local/targets/{name}")
            except OSError:
                return  # the server is gone
            time.sleep(r.random() * 0.05)

    for round_ in range(3):
        server = ServerProcess(tmp_path).start(extra_args=("--ComputeConfig.max_concurrent_starts=2",))
        end = time.monotonic() + 12
        clients = [threading.Thread(target=client, args=(server, end, rng.random())) for _ in range(8)]
        for c in clients:
            c.start()
        time.sleep(rng.uniform(3, 6))
        server.proc.kill()
        server.proc.wait(timeout=30)
        for c in clients:
            c.join(timeout=60)

    last = ServerProcess(tmp_path).start()
    try:
        assert delete_all(last, timeout=120) == []
        wait_for(lambda: not owned_processes(str(compute_db)), timeout=30, interval=0.5,
                 message="every process of the deleted targets to be gone")
        code, body = last.request("GET", "workspaces/local/targets")
        assert [t["name"] for t in body["targets"]] == ["this-machine"]
    finally:
        last.stop()
        stop_all_targets(compute_db)
    assert Store(str(compute_db)).integrity_check() == "ok"


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB filesystem of its own (tmpfs), to fill; skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(disk)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {r.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(folder) -> "os.PathLike":
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


@pytest.mark.fault
def test_a_full_disk_under_the_store_is_said_plainly_and_work_goes_on_once_there_is_room(
        tmp_path, small_disk, monkeypatch):
    from tests.servers import ServerProcess
    from tests.support import cli_subprocess

    db = small_disk / "compute.db"
    monkeypatch.setenv("JUPYTER_COMPUTE_DB", str(db))
    server = ServerProcess(tmp_path).start()
    try:
        filler = _fill(small_disk)
        code, out = server.request("POST", "workspaces/local/targets",
                                   {"name": "full1", "kind": "local-kernel", "description": "x" * 500})
        assert code == 503 and out["reason"] == "store_unwritable", (code, out)
        assert out["message"].startswith(f"jupyter_compute's store ({db}) cannot be written: ")
        assert "Nothing was changed" in out["message"]
        r = cli_subprocess("create", "full2", "--kind", "local-kernel")
        assert r.returncode == 1 and "cannot be written" in r.stderr and "Traceback" not in r.stderr, r.stderr
        code, listed = server.request("GET", "workspaces/local/targets")  # reading still works
        assert code == 200 and [t["name"] for t in listed["targets"]] == ["this-machine"]

        os.remove(filler)  # room again: the same server goes on
        code, out = server.request("POST", "workspaces/local/targets", {"name": "after", "kind": "local-kernel"})
        assert code == 202, out
        assert server.wait_op(out["operation"]["id"])["status"] == "succeeded"
        code, out = server.request("DELETE", "workspaces/local/targets/after")
        assert code == 202 and server.wait_op(out["operation"]["id"])["status"] == "succeeded"
    finally:
        server.stop()
        stop_all_targets(db)
    assert Store(str(db)).integrity_check() == "ok"
    assert Store(str(db)).get_target("local", "full1") is None
