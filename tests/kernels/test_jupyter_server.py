"""A ``jupyter`` target's kernelspecs as Jupyter kernels here, against a second real Jupyter server on
127.0.0.1: a kernel started there for each notebook, its channels bridged over the kernel websocket."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import socket
import time

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from tests.families.jupyter_server.test_remote_jupyter import BEARER_PROVIDER, JupyterServer, attach
from tests.kernels.helpers import (debugger_answers, interrupt_ends_a_sleep, kernel_rows, run, started, text,
                                   widget_round_trip)
from tests.support import cli, files_holding, wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def credential() -> str:
    """How the target signs in to its server; a test parametrized on it runs with each."""
    return "token"


CREDENTIALS = pytest.mark.parametrize("credential", ["token", "authorization header"])


def bearer(key: str, lifetime: float = 600.0) -> str:
    """A bearer token the BearerOnly server (keyed ``key``) accepts until ``lifetime`` from now."""
    expires = round(time.time() + lifetime, 3)
    return f"{expires}.{hmac.new(key.encode(), str(expires).encode(), hashlib.sha256).hexdigest()}"


@pytest.fixture
def server(tmp_path, credential):
    # No output rate limit: the 50 MB message below is about size, not about the server's throttle.
    args: tuple[str, ...] = ("--ZMQChannelsWebsocketConnection.iopub_data_rate_limit=0",)
    if credential == "token":
        s = JupyterServer(tmp_path / "remote", args=args)
    else:  # a server that lets in only a bearer Authorization header (as a hub's proxy does)
        key = secrets.token_hex(16)
        (tmp_path / "bearer_only.py").write_text(BEARER_PROVIDER)
        s = JupyterServer(tmp_path / "remote", token="",
                          args=(*args, "--ServerApp.identity_provider_class=bearer_only.BearerOnly"),
                          env={"PYTHONPATH": str(tmp_path), "BEARER_TEST_KEY": key})
        s.authorization = f"Bearer {bearer(key)}"
    s.root.mkdir(exist_ok=True)
    yield s.start()
    s.stop()
    s.cleanup()


def attach_with(name: str, server: JupyterServer):
    """Attach ``server`` as ``name`` with its credential: the token, or the Authorization header."""
    if server.authorization is None:
        return attach(name, server)
    path = server.root / "spec.yaml"
    path.write_text(f"url: {server.url}\nauthorization: {server.authorization}\n")
    try:
        return cli("attach", name, "--kind", "jupyter", "-f", str(path))
    finally:
        path.unlink()


def secret_of(server: JupyterServer) -> str:
    return server.authorization.split()[1] if server.authorization else server.token


@pytest.fixture
def remote_target(server, data_dir, compute_db):
    r = attach_with("remote", server)
    assert r.returncode == 0, r.stderr
    return "remote"


def remote_kernels(server) -> list[dict]:
    code, body = server.api("GET", "api/kernels")
    assert code == 200, body
    return body


def test_each_remote_kernelspec_is_a_kernel_here(remote_target):
    specs = wait_for(lambda: {k: v for k, v in KernelSpecManager().get_all_specs().items()
                              if k.startswith("compute-remote")}, timeout=2, message="the remote kernelspecs")
    assert "compute-remote-python3" in specs, specs
    spec = specs["compute-remote-python3"]["spec"]
    assert spec["display_name"] == "Python 3 (ipykernel) · remote (Jupyter server)"
    assert spec["metadata"]["kernel_provisioner"]["config"]["variant"] == "python3"
    assert "token" not in json.dumps(spec).lower()


@CREDENTIALS
async def test_a_kernel_there_runs_the_notebook_here(remote_target, server, compute_db):
    km, kc = await started("compute-remote-python3")
    try:
        assert len(remote_kernels(server)) == 1
        remote_id = remote_kernels(server)[0]["id"]
        reply, outputs = await run(kc, "import os\nprint(os.getppid())\nx = 41")
        # The cell ran in that server's kernel: a child of the second server's process.
        assert reply["status"] == "ok" and int(text(outputs)) == server.proc.pid
        kc.complete("import o", 8)
        assert "os" in (await kc.get_shell_msg(timeout=10))["content"]["matches"]

        # A widget's comm goes both ways over the websocket.
        await widget_round_trip(kc, 5)

        # input() is answered here.
        msg_id = kc.execute("name = input('who? ')", allow_stdin=True)
        request = await kc.get_stdin_msg(timeout=10)
        assert request["content"]["prompt"] == "who? "
        kc.input("grace")
        while (await kc.get_shell_msg(timeout=10))["parent_header"].get("msg_id") != msg_id:
            pass
        _, outputs = await run(kc, "print(name)")
        assert text(outputs) == "grace\n"

        # A 50 MB output arrives, above the server's 10 MiB websocket message limit.
        _, outputs = await run(kc, "print('y' * 50_000_000)", timeout=120)
        assert len(text(outputs)) >= 50_000_000

        await debugger_answers(kc)
        # Interrupt goes through the server's REST interrupt.
        await interrupt_ends_a_sleep(km, kc)

        # A restart, as JupyterLab asks for one, goes through the server's REST restart: the same
        # kernel there, a fresh namespace.
        await km.restart_kernel(now=False)
        await kc.wait_for_ready(timeout=60)
        _, outputs = await run(kc, "print('x' in globals())")
        assert text(outputs) == "False\n"
        assert [k["id"] for k in remote_kernels(server)] == [remote_id]
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=False)
    # Shutting it down here shut it down there.
    assert remote_kernels(server) == []
    assert kernel_rows(compute_db) == []


@CREDENTIALS
async def test_a_wrong_credential_fails_the_start_with_the_reason(server, credential, data_dir, compute_db):
    r = attach_with("remote", server)
    assert r.returncode == 0, r.stderr
    # The server comes back with a new token (or signing key): the credential kept for the target
    # is now wrong.
    server.stop()
    if credential == "token":
        server.token = "a-new-token"
    else:
        server.env["BEARER_TEST_KEY"] = secrets.token_hex(16)
    server.start()
    km = AsyncKernelManager(kernel_name="compute-remote-python3")
    t0 = time.monotonic()
    with pytest.raises(Exception, match=rf"refused the credentials \({credential}\)") as info:
        await km.start_kernel()
    assert time.monotonic() - t0 < 30
    assert "a-new-token" not in str(info.value) and secret_of(server) not in str(info.value)
    assert kernel_rows(compute_db) == []


async def test_a_certificate_that_cannot_be_verified_fails_the_start_with_the_reason(tmp_path, data_dir,
                                                                                     compute_db, monkeypatch):
    """An HTTPS server the target was attached to comes back with a certificate from an authority
    this machine does not trust: the kernel is refused in words, naming the server and what to do."""
    from tests.standins.https import make_tls

    first = make_tls(str((tmp_path / "ca1").mkdir() or tmp_path / "ca1"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", first[0])  # what the person's machine trusts
    server = JupyterServer(tmp_path / "remote", tls=first)
    server.root.mkdir()
    server.start()
    try:
        r = attach("secure", server)
        assert r.returncode == 0, r.stderr
        assert server.url.startswith("https://")
        server.stop()
        server.tls = make_tls(str((tmp_path / "ca2").mkdir() or tmp_path / "ca2"))
        server.start()
        km = AsyncKernelManager(kernel_name="compute-secure-python3")
        t0 = time.monotonic()
        with pytest.raises(Exception, match="presented a certificate that could not be verified") as info:
            await km.start_kernel()
        assert time.monotonic() - t0 < 30
        message = str(info.value)
        assert server.url.rstrip("/") in message and "REQUESTS_CA_BUNDLE" in message and "Traceback" not in message
        assert server.api("GET", "api/kernels") == (200, [])  # nothing was started there
    finally:
        server.stop()
        server.cleanup()


async def test_a_server_that_is_down_fails_the_start_with_the_reason(server, data_dir, compute_db):
    r = attach("remote", server)
    assert r.returncode == 0, r.stderr
    server.stop()
    # Its port stays taken, by a socket that does not listen: no other test's server gets it.
    hold = socket.socket()
    hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hold.bind(("127.0.0.1", server.port))
    km = AsyncKernelManager(kernel_name="compute-remote-python3")
    t0 = time.monotonic()
    with pytest.raises(Exception, match="does not answer: .*Connect call failed") as info:
        await km.start_kernel()
    assert time.monotonic() - t0 < 30 and server.url.rstrip("/") in str(info.value)
    hold.close()


@CREDENTIALS
@pytest.mark.fault
async def test_a_remote_server_restart_is_a_dead_kernel_and_a_restart_starts_a_new_one(remote_target, server,
                                                                                        compute_db):
    km, kc = await started("compute-remote-python3")
    try:
        await run(kc, "kept = 1")
        server.stop()
        server.start()
        deadline = time.monotonic() + 60
        while await km.is_alive():
            assert time.monotonic() < deadline, "the kernel was not reported dead"
            await asyncio.sleep(0.2)
        assert "is gone" in km.provisioner._kernel.reason
        await km.restart_kernel(now=True)
        await kc.wait_for_ready(timeout=60)
        _, outputs = await run(kc, "print('kept' in globals())")
        assert text(outputs) == "False\n" and len(remote_kernels(server)) == 1
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


@pytest.mark.fault
def test_kernels_of_a_killed_server_are_shut_down_there_by_the_next_look(remote_target, server, compute_db,
                                                                          server_process):
    """This machine's Jupyter server is SIGKILLed with a kernel running on the remote server: the next
    process to look at the store (here a CLI call; a restarted server does the same at once) shuts
    that kernel down there."""
    import signal
    import urllib.request

    local = server_process()
    req = urllib.request.Request(f"{local.url}/api/kernels", method="POST",
                                 data=json.dumps({"name": "compute-remote-python3"}).encode(),
                                 headers={"Authorization": f"token {local.token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 201
    wait_for(lambda: kernel_rows(compute_db), timeout=10, message="the kernel's record")
    assert len(remote_kernels(server)) == 1
    local.proc.send_signal(signal.SIGKILL)
    local.proc.wait(10)
    assert len(remote_kernels(server)) == 1  # nobody told the remote server
    assert cli("list").returncode == 0
    assert remote_kernels(server) == [] and kernel_rows(compute_db) == []


async def test_a_dropped_websocket_reconnects_and_loses_nothing(remote_target, server, compute_db):
    km, kc = await started("compute-remote-python3")
    try:
        await run(kc, "kept = 'still here'")
        msg_id = kc.execute("import time\nprint('before', flush=True)\ntime.sleep(1.5)\nprint('after', flush=True)")
        seen = []
        while "before" not in "".join(seen):
            m = await kc.get_iopub_msg(timeout=10)
            if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream":
                seen.append(m["content"]["text"])
        # The connection drops while the cell runs: what the kernel prints meanwhile is buffered by
        # the server and delivered once the bridge has reconnected with the same session.
        await km.provisioner._kernel.bridge._ws.close()
        while True:
            m = await kc.get_iopub_msg(timeout=20)
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            if m["msg_type"] == "stream":
                seen.append(m["content"]["text"])
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                break
        assert "".join(seen) == "before\nafter\n"
        _, outputs = await run(kc, "print(kept)")
        assert text(outputs) == "still here\n"
        assert await km.is_alive()
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


# -- nbclient, by kernel name, with a token and then an authorization header -----------------------------
@CREDENTIALS
def test_nbclient_runs_a_notebook_there_by_kernel_name(remote_target, server, credential, compute_db, caplog):
    assert json.loads(cli("show", "remote", "--output", "json").stdout)["properties"]["credentials"] == credential
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (
        "import os\nprint(os.getppid())",
        "x = 20\nx * 2 + 2",
    )]
    NotebookClient(nb, kernel_name="compute-remote-python3", timeout=90).execute()
    assert int(nb.cells[0].outputs[0]["text"]) == server.proc.pid  # a kernel of that server
    assert nb.cells[1].outputs[0]["data"]["text/plain"] == "42"
    # The notebook's end shut its kernel down there; the credential is in no kernelspec, log line or store.
    assert remote_kernels(server) == []
    assert kernel_rows(compute_db) == []
    secret = secret_of(server)
    assert secret not in json.dumps(KernelSpecManager().get_all_specs()) + caplog.text
    assert [f for f in files_holding(compute_db.parent, secret) if "compute.db" in f] == []


@CREDENTIALS
async def test_a_renamed_target_keeps_its_credential_and_offers_its_kernels_by_the_new_name(remote_target, server,
                                                                                          compute_db):
    assert (await asyncio.to_thread(cli, "rename", "remote", "lab")).returncode == 0
    names = await asyncio.to_thread(wait_for, lambda: {k for k in KernelSpecManager().get_all_specs()
                                                       if k.startswith(("compute-lab", "compute-remote"))}
                                    == {"compute-lab-python3"}, timeout=2, message="the kernelspecs to follow")
    assert names
    km, kc = await started("compute-lab-python3")  # reaches the server with the credential kept for it
    try:
        reply, outputs = await run(kc, "import os\nprint(os.getppid())")
        assert int(text(outputs)) == server.proc.pid
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=False)
    assert remote_kernels(server) == []


def test_the_kernel_list_is_read_again_when_the_target_restarts(tmp_path, data_dir, compute_db):
    """A server with a kernelspec more than at attach: it is offered here once the target restarts."""
    import sys

    extra = tmp_path / "extra"
    (extra / "kernels").mkdir(parents=True)
    server = JupyterServer(tmp_path / "remote", env={"JUPYTER_PATH": str(extra)})
    server.root.mkdir()
    server.start()
    try:
        assert attach("remote", server).returncode == 0

        def ours() -> dict:
            return {k: v["spec"]["display_name"] for k, v in KernelSpecManager().get_all_specs().items()
                    if k.startswith("compute-remote")}
        assert wait_for(ours, timeout=2, message="the remote kernelspecs") == {
            "compute-remote-python3": "Python 3 (ipykernel) · remote (Jupyter server)"}
        spec = extra / "kernels" / "other"
        spec.mkdir()
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Other Python", "language": "python"}))
        assert "compute-remote-other" not in ours()  # read at start, not on every look
        assert cli("restart", "remote", "--yes").returncode == 0
        wait_for(lambda: "compute-remote-other" in ours(), timeout=2, message="the kernelspecs read again")
        assert ours() == {
            "compute-remote-python3": "Python 3 (ipykernel) · remote (Jupyter server)",
            "compute-remote-other": "Other Python · remote (Jupyter server)"}
    finally:
        server.stop()
        server.cleanup()


def test_a_blocking_kernel_manager_runs_cells_there(remote_target, server, compute_db):
    """``jupyter console`` and other blocking clients use jupyter_client's ``KernelManager``, whose
    every call runs in a loop that then stands still: the bridge carries the kernel's messages
    between those calls all the same."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="compute-remote-python3")
    km.start_kernel()
    kc = km.blocking_client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        out: list[str] = []
        reply = kc.execute_interactive("import os\nprint(os.getppid())", timeout=30,
                                       output_hook=lambda m: out.append(m["content"].get("text", "")))
        assert reply["content"]["status"] == "ok" and int("".join(out)) == server.proc.pid
        assert len(remote_kernels(server)) == 1
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    assert remote_kernels(server) == [] and kernel_rows(compute_db) == []
