"""``ssh`` targets against a real sshd on 127.0.0.1: host keys, secrets, a kernel that outlives the
CLI, notebooks through nbclient, and a link that is cut, frozen and re-established."""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from nbclient import NotebookClient

from jupyter_compute.core.secrets import SecretStore
from jupyter_compute.core.store import Store

from tests.support import await_for, cli, cli_subprocess, files_holding, python_with_unread_fault, wait_for, wait_op
from tests.sshd import Sshd, sshd, write_private_key  # noqa: F401  (sshd is a fixture)

PY = sys.executable


# -- helpers ---------------------------------------------------------------------------------------
def attach_args(server: Sshd, name: str = "vm", *extra: str, accept: bool = True) -> list[str]:
    args = ["attach", name, "--kind", "ssh", "--host", "127.0.0.1", "--port", str(server.port),
            "--ssh-private-key", str(server.client_key_path), "--python", PY, "--output", "json"]
    if accept:
        args += ["--accept-host-key", server.fingerprint]
    return args + list(extra)


def row(db: Path, name: str = "vm") -> dict | None:
    store = Store(str(db))
    try:
        return store.get_target("local", name)
    finally:
        store.close()


def names(db: Path) -> list[str]:
    r = cli("list", "--output", "json")
    assert r.returncode == 0, r.stderr
    return [t["name"] for t in json.loads(r.stdout)]


def start_vm(db: Path, server: Sshd, name: str = "vm", *extra: str, starter=cli) -> dict:
    """Attach and start ``name``; ``starter`` runs the start (``cli_subprocess`` for a CLI process of its own)."""
    r = cli(*attach_args(server, name, *extra))
    assert r.returncode == 0, r.stderr
    r = starter("start", name, "--output", "json")
    assert r.returncode == 0, r.stderr + r.stdout
    t = json.loads(r.stdout)
    assert t["state"] == "running", t
    return t


def wait_state(db: Path, states: tuple[str, ...], name: str = "vm", timeout: float = 30) -> dict:
    return wait_for(lambda: (lambda r: r if r and r["state"] in states else None)(row(db, name)),
                    timeout=timeout, interval=0.05, message=f"{name} to be {' or '.join(states)}")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def execute(compute, code: str, name: str = "vm", **kw):
    """Run ``code`` on the target through an open route, as the magic gets it; (reply, messages).
    The route is closed afterwards, so the next call opens one afresh."""
    route = await compute.workspace().open_route(name, timeout=30)
    try:
        seen: list[dict] = []
        reply = await route.execute(code, on_message=seen.append, **kw)
        return reply, seen
    finally:
        await route.close()


async def printed(compute, code: str, name: str = "vm") -> str:
    """What ``code`` printed on the target; fails if it raised."""
    reply, seen = await execute(compute, code, name)
    reply.raise_for_error()
    return "".join(m["content"].get("text", "") for m in seen if m["msg_type"] == "stream")


async def route_refused(compute, name: str = "vm"):
    """The error ``open_route`` raises for a target that cannot take cells now."""
    from jupyter_compute.core.errors import Conflict

    with pytest.raises(Conflict) as info:
        await compute.workspace().open_route(name)
    return info.value


class TimedClient(NotebookClient):
    """nbclient, noting when each output arrived and telling a waiter about chosen text."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.arrivals: list[tuple[float, int, dict]] = []
        self.seen = threading.Event()
        self.watch_for: str | None = None

    def output(self, outs, msg, display_id, cell_index):
        self.arrivals.append((time.monotonic(), cell_index, msg))
        if self.watch_for and self.watch_for in str(msg.get("content", {}).get("text", "")):
            self.seen.set()
        return super().output(outs, msg, display_id, cell_index)


def notebook(*cells: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


def text_of(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def errors_of(cell) -> list[dict]:
    return [o for o in cell.outputs if o.output_type == "error"]


@pytest.fixture
def ipython_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))


# -- bad input: refused before anything remote, nothing stored -------------------------------------
def test_bad_input_is_refused_with_exit_2_and_nothing_stored(tmp_path, compute_db):
    key = tmp_path / "id_test"
    import asyncssh
    write_private_key(asyncssh.generate_private_key("ssh-ed25519"), key)
    base = ["attach", "vm", "--kind", "ssh", "--host", "127.0.0.1", "--port", "2222", "--ssh-private-key", str(key)]

    def refused(args: list[str], *words: str, input: str = "") -> str:
        r = cli(*args, input=input)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        for w in words:
            assert w in r.stderr, (w, r.stderr)
        return r.stderr

    def given(option: str, value: str) -> list[str]:
        i = base.index(option)
        return base[:i + 1] + [value] + base[i + 2:]

    refused(given("--port", "70000"), "port")
    refused(given("--port", "0"), "port")
    refused(given("--host", ""), "host")
    refused(given("--host", "-oProxyCommand=x"), "host")
    refused(given("--ssh-private-key", str(tmp_path / "missing")), "ssh_private_key", "does not exist")
    os.chmod(key, 0o644)
    refused(base, "ssh_private_key", "too open", "chmod 600")
    os.chmod(key, 0o600)
    refused(["attach", "vm", "--kind", "ssh", "--host", "127.0.0.1"], "give ssh_private_key", "or password")
    err = refused(base + ["--password", "hunter2-secret"], "--password-stdin")
    assert "hunter2-secret" not in err
    refused(base[:-2] + ["--ask-password"], "without a terminal", "--password-stdin")
    refused(base + ["--accept-host-key", "MD5:00:11"], "accept_host_key")
    assert names(compute_db) == ["this-machine"]
    assert not (compute_db.parent / "secrets.json").exists()
    assert not (compute_db.parent / "ssh_known_hosts").exists()


async def test_bad_input_over_rest_is_400_naming_the_field(api, tmp_path):
    import asyncssh
    key = tmp_path / "id_test"
    write_private_key(asyncssh.generate_private_key("ssh-ed25519"), key)
    body = {"name": "vm", "kind": "ssh", "host": "127.0.0.1", "port": 2222, "ssh_private_key": str(key)}
    cases = [({"ssh_private_key": str(tmp_path / "nope")}, "/ssh_private_key"),
             ({"port": 65536}, "/port"), ({"port": "ssh"}, "/port"), ({"host": ""}, "/host"),
             ({"host": "   "}, "/host")]
    for change, field in cases:
        code, err = await api("POST", "workspaces/local/targets", {**body, **change})
        assert code == 400 and err["field"] == field, (change, err)
    os.chmod(key, 0o640)
    code, err = await api("POST", "workspaces/local/targets", body)
    assert code == 400 and err["field"] == "/ssh_private_key" and "too open" in err["message"]
    code, listed = await api("GET", "workspaces/local/targets")
    assert [t["name"] for t in listed["targets"]] == ["this-machine"]
    code, kinds = await api("GET", "workspaces/local/kinds")
    ssh = next(k for k in kinds["kinds"] if k["name"] == "ssh")
    assert ssh["family"] == "Remote machines" and not ssh["managed"]
    pw = ssh["attach_schema"]["properties"]["password"]
    assert pw["writeOnly"] is True and pw["format"] == "password"


# -- host keys ---------------------------------------------------------------------------------------
def test_unknown_host_key_is_refused_with_its_fingerprint_then_accepted(sshd, compute_db):
    known_hosts = compute_db.parent / "ssh_known_hosts"
    r = cli(*attach_args(sshd, accept=False))
    assert r.returncode == 2, r.stderr
    assert sshd.fingerprint in r.stderr and "not known" in r.stderr and "--accept-host-key" in r.stderr
    assert names(compute_db) == ["this-machine"] and not known_hosts.exists()
    # Another fingerprint is not this key's: still refused.
    import asyncssh
    wrong = asyncssh.generate_private_key("ssh-ed25519").get_fingerprint("sha256")
    r = cli(*attach_args(sshd, accept=False), "--accept-host-key", wrong)
    assert r.returncode == 2 and sshd.fingerprint in r.stderr

    r = cli(*attach_args(sshd))
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    assert t["state"] == "stopped" and t["properties"]["remote_hostname"] == socket.gethostname()
    assert "accept_host_key" not in t["properties"]
    line = f"[127.0.0.1]:{sshd.port} ssh-ed25519 "
    assert line in known_hosts.read_text()
    assert (known_hosts.stat().st_mode & 0o777) == 0o600
    # Now known: a second target on the same host needs no acceptance.
    assert cli(*attach_args(sshd, "vm2", accept=False)).returncode == 0

    # The host presents another key: refused loudly, even for a target attached before.
    sshd.new_host_key()
    sshd.restart()
    r = cli(*attach_args(sshd, "vm3", accept=False))
    assert r.returncode == 2 and "CHANGED" in r.stderr and sshd.fingerprint in r.stderr
    r = cli("start", "vm")
    assert r.returncode == 1 and "CHANGED" in r.stdout + r.stderr
    r = cli(*attach_args(sshd, "vm3"))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in known_hosts.read_text().splitlines() if ln.startswith(f"[127.0.0.1]:{sshd.port} ")]
    assert len(lines) == 1 and sshd.host_key.export_public_key("openssh").decode().split()[1] in lines[0]


# -- secrets -------------------------------------------------------------------------------------------
async def test_password_is_kept_secret_and_never_returned(api, sshd, compute_db):
    password = "s3cret pass-phrase "
    body = {"name": "pw", "kind": "ssh", "host": "127.0.0.1", "port": sshd.port, "python": PY,
            "ssh_private_key": str(sshd.client_key_path), "password": password,
            "accept_host_key": sshd.fingerprint}
    code, reply = await api("POST", "workspaces/local/targets", body)
    assert code == 202, reply
    op = await wait_op(api, reply["operation"]["id"], timeout=60)
    assert op["status"] == "succeeded", op
    code, t = await api("GET", "workspaces/local/targets/pw")
    assert code == 200 and "password" not in t["properties"]
    assert password.strip() not in json.dumps(t) and password.strip() not in json.dumps(op)
    holding = await asyncio.to_thread(files_holding, compute_db.parent, password.strip())
    assert [f for f in holding if "compute.db" in f] == []
    secrets = SecretStore(str(compute_db))
    assert secrets.get("local", "pw", "password") == password  # kept verbatim, whitespace and all
    if secrets.backend == "file":
        assert (os.stat(secrets.path).st_mode & 0o777) == 0o600
    code, t = await api("PATCH", "workspaces/local/targets/pw", {"password": "another one"})
    assert code == 200 and "another one" not in json.dumps(t)
    assert secrets.get("local", "pw", "password") == "another one"
    code, err = await api("PATCH", "workspaces/local/targets/pw", {"host": "example.org"})
    assert code == 400 and err["field"] == "/host"
    code, reply = await api("DELETE", "workspaces/local/targets/pw")
    assert code == 202

    async def forgotten():
        return (await api("GET", "workspaces/local/targets/pw"))[0] == 404
    await await_for(forgotten, timeout=30, interval=0.1, message="pw to be detached")
    assert secrets.get("local", "pw", "password") is None


def test_password_from_stdin_goes_to_the_secret_store(sshd, compute_db):
    r = cli(*attach_args(sshd), "--password-stdin", input="from stdin\n")
    assert r.returncode == 0, r.stderr
    assert SecretStore(str(compute_db)).get("local", "vm", "password") == "from stdin"
    assert "from stdin" not in r.stdout + r.stderr
    assert cli("detach", "vm", "--yes").returncode == 0
    assert SecretStore(str(compute_db)).get("local", "vm", "password") is None


def test_a_renamed_target_keeps_its_password_under_the_new_name(sshd, compute_db):
    r = cli(*attach_args(sshd), "--password-stdin", input="kept\n")
    assert r.returncode == 0, r.stderr
    assert cli("rename", "vm", "vm2").returncode == 0
    secrets = SecretStore(str(compute_db))
    assert secrets.get("local", "vm2", "password") == "kept" and secrets.get("local", "vm", "password") is None
    assert cli("detach", "vm2", "--yes").returncode == 0
    assert secrets.get("local", "vm2", "password") is None


# -- lifecycle -------------------------------------------------------------------------------------------
def test_start_runs_a_loopback_kernel_that_outlives_the_cli_and_stop_ends_it(sshd, compute_db):
    # The start is a CLI process of its own, which has exited by the time its answer is read.
    t = start_vm(compute_db, sshd, starter=cli_subprocess)
    rt = row(compute_db)["runtime"]
    kernel = psutil.Process(t["properties"]["remote_pid"])
    assert "ipykernel_launcher" in kernel.cmdline() and kernel.cmdline()[0] == PY
    assert os.getsid(kernel.pid) != os.getsid(0)
    sup_pid = int(rt["supervisor"].split(":")[0])
    # Nothing listens beyond loopback, on either side of the tunnel.
    for p in (kernel, psutil.Process(sup_pid)):
        listening = [c.laddr.ip for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert listening and set(listening) == {"127.0.0.1"}, (p, listening)
    assert kernel.is_running() and psutil.Process(sup_pid).is_running()
    # The local connection file leads to forwarded ports, not to the kernel's own.
    with open(rt["connection_file"]) as f:
        local = json.load(f)
    kernel_ports = {c.laddr.port for c in kernel.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    assert local["ip"] == "127.0.0.1" and local["shell_port"] not in kernel_ports
    assert (os.stat(rt["connection_file"]).st_mode & 0o777) == 0o600

    r = cli("nodes", "vm", "--output", "json")
    assert r.returncode == 0, r.stderr
    (node,) = json.loads(r.stdout)
    assert node["id"] == socket.gethostname() and node["address"] == "127.0.0.1" and node["port"] == sshd.port
    assert node["properties"]["vcpus"] == len(os.sched_getaffinity(0))
    assert node["properties"]["memory_gb"] > 0 and isinstance(node["properties"]["gpus"], int)
    assert node["properties"]["kernel_pid"] == kernel.pid

    r = cli("stop", "vm", "--yes", "--output", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "stopped"
    wait_for(lambda: gone(kernel.pid) and gone(sup_pid), timeout=10, message="kernel and supervisor to end")
    assert not os.path.exists(rt["connection_file"])
    assert not os.path.exists(rt["remote"]["conn_file"])
    assert not row(compute_db)["runtime"].get("remote")


@pytest.mark.parametrize("how", ["row deleted", "taken over"])
@pytest.mark.fault
def test_a_supervisor_no_longer_its_targets_ends_itself(sshd, compute_db, how):
    """Deleted behind its back, it ends the remote kernel too; taken over, it leaves the kernel to the
    supervisor that now runs the target (which may have adopted it) and only goes itself."""
    from jupyter_compute.core.store import Store

    t = start_vm(compute_db, sshd)
    rt = row(compute_db)["runtime"]
    kernel, supervisor = t["properties"]["remote_pid"], int(rt["supervisor"].split(":")[0])
    store = Store(str(compute_db))
    if how == "row deleted":
        store.delete_target("local", "vm")
    else:
        store.update_target("local", "vm", runtime={**rt, "supervisor": "1:0@another-boot"})
    wait_for(lambda: gone(supervisor), timeout=15, message="the supervisor to end")
    if how == "row deleted":
        wait_for(lambda: gone(kernel), timeout=15, message="the remote kernel to end")
    else:
        assert not gone(kernel)
        os.kill(kernel, signal.SIGKILL)


@pytest.mark.fault
def test_a_remote_kernel_killed_from_outside_shows_failed_saying_how(sshd, compute_db):
    """The remote kernel SIGKILLed there (the out-of-memory killer): the target shows failed and says
    how it ended, as a local kernel's does (its parent on the remote machine wrote that down); a start
    brings it back, and a stop leaves nothing running there."""
    t = start_vm(compute_db, sshd)
    os.kill(t["properties"]["remote_pid"], signal.SIGKILL)
    failed = wait_for(lambda: (r := row(compute_db))["state"] == "failed" and r, timeout=20,
                      message="vm to show failed")
    error = failed["errors"][-1]
    assert error["code"] == "kernel_died", error
    assert error["message"].startswith("the remote kernel on ") and (
        "exited unexpectedly (killed by SIGKILL (signal 9) - often the out-of-memory killer). Last output: "
        in error["message"]), error
    r = cli("start", "vm", "--output", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "running", r.stderr
    assert cli("stop", "vm", "--yes").returncode == 0
    wait_for(lambda: not sshd.started_processes(), timeout=15, message="nothing left running on the machine")


def test_missing_ipykernel_or_python_is_explained(sshd, compute_db):
    r = cli(*attach_args(sshd, "nopython"), "--python", "/nonexistent/bin/python3")
    assert r.returncode == 2 and "was not found" in r.stderr and "--python" in r.stderr
    bare = "/usr/bin/python3"
    if not os.path.exists(bare) or os.system(f"{bare} -c 'import ipykernel' 2>/dev/null") == 0:
        pytest.skip("needs a Python without ipykernel at /usr/bin/python3")
    r = cli(*attach_args(sshd, "bare"), "--python", bare)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["properties"]["ipykernel"] == "not installed"
    r = cli("start", "bare")
    assert r.returncode == 1
    assert f"ipykernel is not installed for {bare}" in r.stdout and f"'{bare} -m pip install ipykernel'" in r.stdout
    assert row(compute_db, "bare")["state"] == "failed"
    assert not sshd.started_processes()


# -- cells through nbclient ---------------------------------------------------------------------------
def test_notebook_cells_run_on_the_ssh_target(sshd, compute_db, ipython_dir):
    t = start_vm(compute_db, sshd)
    remote_pid = t["properties"]["remote_pid"]
    nb = notebook(
        "%load_ext jupyter_compute.notebook.magics\nimport os\nprint(os.getpid())",
        "%%compute vm\nimport os, socket\nprint(os.getpid(), socket.gethostname())",
        "%%compute vm\nimport time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second')",
        "%%compute vm\nfrom IPython.display import HTML, display\ndisplay(HTML('<b>bold</b>'))\n6 * 7",
        "%%compute vm\nraise ValueError('boom on the remote')",
        "%%compute vm\nkept = 'still here'",
        "import numpy as np\na = np.arange(50 * 2**20 // 8, dtype='float64')\nsquare = lambda x: x * x",
        "%%compute vm --push a,square --pull b --verbose\nb = square(a) + 1",
        "assert b.nbytes == a.nbytes and (b == a * a + 1).all()\nprint('pulled', b.nbytes)",
        "%%compute vm\nimport time\nprint('sleeping', flush=True)\ntime.sleep(60)",
        "%%compute vm\nimport os\nprint('alive', kept, os.getpid())",
    )
    client = TimedClient(nb, timeout=120, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True)
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            client.timeout = 5 if "sleep(60)" in cell.source else 120
            t0 = time.monotonic()
            client.execute_cell(cell, i)
            if i == 9:
                interrupted_after = time.monotonic() - t0
    cells = nb.cells
    notebook_pid = int(text_of(cells[0]).strip())
    pid, host = text_of(cells[1]).split()
    assert int(pid) == remote_pid and int(pid) != notebook_pid and host == socket.gethostname()
    # Streaming: the first line arrived well before the second.
    streams = [(at, m["content"]["text"]) for at, i, m in client.arrivals if i == 2 and m["msg_type"] == "stream"]
    first = next(at for at, text in streams if "first" in text)
    second = next(at for at, text in streams if "second" in text)
    assert second - first > 2.0, streams
    # Rich output and the result.
    kinds = {o.output_type: o for o in cells[3].outputs}
    assert kinds["display_data"]["data"]["text/html"] == "<b>bold</b>"
    assert kinds["execute_result"]["data"]["text/plain"] == "42"
    # The remote error, once, with its type and message.
    (err,) = errors_of(cells[4])
    assert err["ename"] == "ValueError" and err["evalue"] == "boom on the remote"
    assert "pulled 52428800" in text_of(cells[8])
    report = "".join(o.data["text/plain"] for o in cells[7].outputs if o.output_type == "display_data")
    assert "pushed a, square" in report and "pulled b" in report and text_of(cells[7]) == ""
    # Interrupt: the cell ends with KeyboardInterrupt within seconds, and the kernel lives on.
    assert "sleeping" in text_of(cells[9])
    assert [e["ename"] for e in errors_of(cells[9])] == ["KeyboardInterrupt"]
    assert interrupted_after < 30
    assert text_of(cells[10]).split() == ["alive", "still", "here", str(remote_pid)]


@pytest.mark.timeout(120)
async def test_input_is_answered_through_the_route(sshd, compute_db, compute):
    start_vm(compute_db, sshd)
    r, seen = await execute(compute, "name = input('who? ')\nprint('hello', name)", stdin=lambda p, pw: "ssh")
    assert r.status == "ok"
    assert "hello ssh\n" in [m["content"].get("text") for m in seen if m["msg_type"] == "stream"]


@pytest.mark.timeout(300)
@pytest.mark.xdist_group("other_python")  # one worker makes the other Python's venv
async def test_a_remote_kernel_that_leaves_a_cell_unread_is_woken(sshd, compute_db, compute, other_python):
    """ipykernel 7.0 to 7.3 (the newest for Python 3.10) can leave a request unread when it arrives
    while the kernel sends a reply. Over SSH, too, the route's second connection wakes it: two
    requests at once, many times over, on that Python's kernel, and every cell ends."""
    venv, minor = other_python
    python = python_with_unread_fault(venv)
    start_vm(compute_db, sshd, "vm", "--python", python)
    route = await compute.workspace().open_route("vm", timeout=30)
    try:
        assert route.kernel_info["language_info"]["version"].startswith(f"{minor[0]}.{minor[1]}.")
        rng = random.Random(0)
        for i in range(200):  # over SSH the kernel is left a request every 45 rounds or so
            first = asyncio.ensure_future(route.execute("pass"))
            await asyncio.sleep(rng.uniform(0, 0.003))
            second = await asyncio.wait_for(route.execute(f"{i}"), 20)
            assert (await first).status == "ok" and second.result == {"text/plain": str(i)}
        print(f"a second connection woke the kernel {route.wakes} times in 200 rounds")
    finally:
        await route.close()


# -- the link ------------------------------------------------------------------------------------------
@pytest.mark.fault
def test_cutting_the_link_mid_cell_fails_clearly_and_the_namespace_survives(sshd, compute_db, ipython_dir):
    t = start_vm(compute_db, sshd)
    remote_pid = t["properties"]["remote_pid"]
    nb = notebook(
        "%load_ext jupyter_compute.notebook.magics",
        "%%compute vm\nkept = 41",
        "%%compute vm\nimport time\nprint('started', flush=True)\ntime.sleep(8)\nkept += 1",
        "%%compute vm\nimport os\nprint(kept, os.getpid())",
    )
    client = TimedClient(nb, timeout=120, kernel_name="python3", allow_errors=True)
    client.watch_for = "started"
    states: list[str] = []
    cut: dict[str, float] = {}

    def cut_the_link():
        assert client.seen.wait(60)
        held = sshd.stop_listener()  # so the cut lasts until the test restores it
        cut["at"] = time.monotonic()
        for p in held:  # the session's sshd processes: the TCP connection dies with them
            p.kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = row(compute_db)
            if r["state"] not in states[-1:]:
                states.append(r["state"])
            if r["state"] == "unknown":
                cut["noticed"] = time.monotonic() - cut["at"]
                break
            time.sleep(0.02)

    with client.setup_kernel():
        for i in (0, 1):
            client.execute_cell(nb.cells[i], i)
        cutter = threading.Thread(target=cut_the_link)
        cutter.start()
        client.execute_cell(nb.cells[2], 2)
        failed_after = time.monotonic() - cut["at"]
        cutter.join(30)
        # The cut shows in the state, with why, while it lasts.
        assert cut.get("noticed") is not None and cut["noticed"] < 5, states
        r = row(compute_db)
        assert r["state"] == "unknown" and "reconnecting" in r["provider_state"]
        assert r["errors"][0]["code"] == "link_lost"
        # The cut lasts until a reconnect attempt has found nobody listening.
        wait_for(lambda: "(attempt " in (row(compute_db)["provider_state"] or ""), timeout=15,
                 message="a failed reconnect attempt")
        sshd.start()
        wait_state(compute_db, ("running",), timeout=30)
        client.execute_cell(nb.cells[3], 3)
    (err,) = errors_of(nb.cells[2])
    assert err["ename"] == "ExecutionError" and "was cut while the cell ran" in err["evalue"], err
    assert failed_after < 5  # failed at the cut, not after the cell's 8 s
    assert "started" in text_of(nb.cells[2])
    # Same kernel, same namespace: even the interrupted cell finished there.
    assert text_of(nb.cells[3]).split() == ["42", str(remote_pid)]
    r = row(compute_db)
    assert r["runtime"]["reconnects"] == 1 and r["errors"] == []


@pytest.mark.timeout(120)
@pytest.mark.fault
async def test_keepalive_notices_a_frozen_link_and_it_comes_back(sshd, compute_db, compute):
    start_vm(compute_db, sshd)
    await printed(compute, "frozen_before = 'yes'")
    held = sshd.stop_listener()
    for p in held:  # the peer stops answering, without closing anything
        p.suspend()
    try:
        t0 = time.monotonic()
        wait_state(compute_db, ("unknown",), timeout=15)
        noticed = time.monotonic() - t0
        assert noticed < 10
        # A cell sent now is refused with the backend's own account of the link, and what to do.
        refused = await route_refused(compute)
        assert refused.reason == "not_running" and refused.details["state"] == "unknown"
        assert refused.message.startswith("'vm' is unknown: the SSH link to ")
        assert "was lost; reconnecting, so the cell did not run. It may come back by itself" in refused.message
        assert "'jupyter compute restart vm'" in refused.message
        sshd.start()
        r = wait_state(compute_db, ("running",), timeout=30)
        assert r["runtime"]["reconnects"] == 1 and r["runtime"]["link"] == "up"
    finally:
        for p in held:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    assert await printed(compute, "print(frozen_before)") == "yes\n"


@pytest.mark.timeout(120)
@pytest.mark.fault
async def test_a_killed_supervisor_is_noticed_and_start_reattaches_to_the_running_kernel(sshd, compute_db, compute):
    t = start_vm(compute_db, sshd)
    remote_pid = t["properties"]["remote_pid"]
    await printed(compute, "survivor = 7")
    sup_pid = int(row(compute_db)["runtime"]["supervisor"].split(":")[0])
    os.kill(sup_pid, signal.SIGKILL)
    wait_for(lambda: gone(sup_pid), timeout=10, message="the supervisor to die")
    r = cli("show", "vm", "--output", "json")
    shown = json.loads(r.stdout)
    assert shown["state"] == "failed" and "start re-attaches" in shown["errors"][0]["message"]
    assert psutil.Process(remote_pid).is_running()
    r = cli("start", "vm", "--output", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["properties"]["remote_pid"] == remote_pid
    assert await printed(compute, "print(survivor)") == "7\n"


@pytest.mark.timeout(120)
async def test_through_a_jump_host(sshd, compute_db, compute):
    t = start_vm(compute_db, sshd, "vm", "--jump-host", f"root@127.0.0.1:{sshd.port}")
    assert t["properties"]["jump_host"] == f"root@127.0.0.1:{sshd.port}"
    assert await printed(compute, "print(40 + 2)") == "42\n"
    assert cli("stop", "vm", "--yes").returncode == 0
    assert not psutil.pid_exists(t["properties"]["remote_pid"]) or gone(t["properties"]["remote_pid"])
