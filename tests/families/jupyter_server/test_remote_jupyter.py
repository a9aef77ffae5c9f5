"""Any Jupyter server as a target: a second, plain Jupyter server on loopback with its own token,
attached, started and reached through nbclient with ``%%compute``, and through the websocket route
itself where a test needs arrival times, input, or to stop the server at a chosen moment."""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import numpy as np
import psutil
import pytest
from nbclient import NotebookClient

from jupyter_compute.core.route import ExecutionError, ExecutionTimeout
from jupyter_compute.transport.jupyter_client import BearerTokenAuth, CredentialsRefused, JupyterClient, StaticAuth
from jupyter_compute.transport.websocket import WebsocketRoute
from jupyter_compute.core.workspace import Compute

from tests.support import PLAIN_SERVER, await_for, cli, files_holding, free_port, processes_marked, text_of, wait_for, wait_op

# The second Jupyter server is started once for the module: its tests stay on one worker.
pytestmark = [pytest.mark.xdist_group("remote_jupyter"), pytest.mark.long]


class PortTaken(Exception):
    """Another process took the server's port before it bound it."""


#: The environment variable that marks what a second Jupyter server started.
MARKER = "JC_TEST_JUPYTER"


class JupyterServer:
    """A plain ``jupyter server`` (``PLAIN_SERVER``), on a loopback port, with a token of its own."""

    def __init__(self, root: Path, *, token: str | None = None, port: int | None = None, args: tuple = (),
                 env: dict | None = None, tls: tuple[str, str, str] | None = None):
        self.root = root
        self.token = token if token is not None else secrets.token_hex(16)
        self.fixed_port = port is not None
        self.port = port or free_port()
        #: (ca, certificate, key): served over HTTPS with that certificate, checked against that CA.
        self.tls = tls
        #: The Authorization header ``api`` sends (the token's, unless the server takes another).
        self.authorization: str | None = None
        self.url = self._url()
        self.args = list(args)
        # Plain: without jupyter_compute, and apart from the test's store.
        self.env = {k: v for k, v in os.environ.items() if k != "JUPYTER_COMPUTE_DB"}
        #: Every process the server starts carries it, those that leave its tree too (a kernel's
        #: debugger adapter outlives the kernel's shutdown on its own session).
        self.marker = secrets.token_hex(8)
        self.env.update(JUPYTER_RUNTIME_DIR=str(root / f".runtime-{self.port}"), **{MARKER: self.marker},
                        **(env or {}))
        self.proc: subprocess.Popen | None = None
        self.started: list[psutil.Process] = []
        self.log = root / f"jupyter-{self.port}.log"

    def start(self, timeout: float = 60) -> "JupyterServer":
        """Start it; on a new port if another process took this one before the server bound it (never
        once it has run: a restart must come back where its clients know it)."""
        for _ in range(3):
            try:
                return self._start(timeout)
            except PortTaken:
                if self.started[:-1] or self.fixed_port:
                    raise
                self.started.clear()
                self.port = free_port()
                self.url = self._url()
        raise AssertionError("the second Jupyter server found no free port")

    def _url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    def _start(self, timeout: float) -> "JupyterServer":
        argv = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                "--ServerApp.port_retries=0", f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.root}",
                PLAIN_SERVER, *self.args]
        if self.tls:
            argv += [f"--ServerApp.certfile={self.tls[1]}", f"--ServerApp.keyfile={self.tls[2]}"]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=self.env)
        self.started.append(psutil.Process(self.proc.pid))

        def up() -> bool:
            if self.proc.poll() is not None:
                log = self.log.read_text()[-2000:]
                if "is not available" in log or "already in use" in log:
                    raise PortTaken(log)
                raise AssertionError(f"the Jupyter server exited: {log}")
            try:
                ctx = ssl.create_default_context(cafile=self.tls[0]) if self.tls else None
                with urllib.request.urlopen(self.url + "api", timeout=2, context=ctx):
                    return True
            except (OSError, http.client.HTTPException):  # not up yet, or another program's port
                return False
        wait_for(up, timeout=timeout, interval=0.1, message="the second Jupyter server to answer")
        return self

    def processes(self) -> list[psutil.Process]:
        """The server and every kernel it started."""
        if self.proc is None:
            return []
        try:
            p = psutil.Process(self.proc.pid)
            return [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, how: str = "terminate") -> None:
        """Stop the server: ``terminate`` (it shuts its kernels down), ``kill``, or ``freeze`` (SIGSTOP)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        procs = self.processes()
        if how == "freeze":
            self.proc.send_signal(signal.SIGSTOP)
            return
        if how == "kill":
            for p in procs:
                with _gone():
                    p.kill()
        else:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for p in procs + processes_marked(MARKER, self.marker):  # kernels, and what they started, left behind
            with _gone():
                p.kill()

    def cleanup(self) -> None:
        """Kill every server process this object started, and their kernels."""
        for server in self.started:
            with _gone():
                for p in [*server.children(recursive=True), server]:
                    with _gone():
                        p.resume()
                        p.kill()
        for server in self.started:
            with _gone():
                server.wait(timeout=10)
        if self.proc is not None:
            with _gone():
                self.proc.wait(timeout=10)

    def api(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": self.authorization or f"token {self.token}"})
        try:
            ctx = ssl.create_default_context(cafile=self.tls[0]) if self.tls else None
            with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, None


class _gone:
    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        return typ is not None and issubclass(typ, psutil.Error)


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    server = JupyterServer(tmp_path_factory.mktemp("remote-jupyter"))
    try:
        yield server.start()
    finally:
        server.stop()
        server.cleanup()


@pytest.fixture
def own_remote(tmp_path):
    """A server of this test's own, which the test may stop and start again."""
    started: list[JupyterServer] = []

    def make(**kw) -> JupyterServer:
        s = JupyterServer(tmp_path / f"srv{len(started)}", **kw)
        s.root.mkdir(exist_ok=True)
        started.append(s)
        return s.start()
    yield make
    for s in started:
        s.cleanup()


def attach(name: str, server: JupyterServer, *options: str, token: str | None = None) -> subprocess.CompletedProcess:
    return cli("attach", name, "--kind", "jupyter", "--url", server.url, "--token-stdin", "--output", "json",
               *options, input=(token if token is not None else server.token) + "\n")


@pytest.fixture
def attached(remote):
    r = attach("remote", remote)
    assert r.returncode == 0, r.stderr
    yield "remote"
    cli("detach", "remote", "--yes")


def show(name: str) -> dict:
    r = cli("show", name, "--output", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def compute_allowing_loopback(jp_asyncio_loop, compute_db):
    """A ``Compute`` whose targets may point at 127.0.0.1 only; closed after the test."""
    from traitlets.config import Config

    compute = Compute.from_config(Config({"ComputeConfig": {"allowed_hosts": ["127.0.0.1"]}}))
    yield compute
    jp_asyncio_loop.run_until_complete(compute.close())


# -- bad input: refused before anything is stored ----------------------------------------------------
BAD_URLS = [
    ("ftp://127.0.0.1/", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("127.0.0.1:8888", "http:// or https://"),
    ("not a url", "without spaces"),
    ("http://", "must name a host"),
    ("http://127.0.0.1:99999/", "not a valid URL"),
    ("http://alice:pw@127.0.0.1:8888/", "user name or password"),
    ("http://127.0.0.1:8888/?token=abc", "must not carry the token"),
    ("http://127.0.0.1:8888/lab#tree", "without a query"),
]


@pytest.mark.parametrize("url, message", BAD_URLS)
async def test_bad_urls_are_a_400_with_nothing_stored(api, compute_db, url, message):
    code, err = await api("POST", "workspaces/local/targets",
                          {"name": "remote", "kind": "jupyter", "url": url, "token": "t0ken-value"})
    assert code == 400, err
    assert err["field"] == "/url" and message in err["message"]
    assert "t0ken-value" not in json.dumps(err)
    code, body = await api("GET", "workspaces/local/targets")
    assert "remote" not in [t["name"] for t in body["targets"]]
    assert not (compute_db.parent / "secrets.json").exists()


@pytest.mark.parametrize("body, field, message", [
    ({"url": "http://127.0.0.1:8888/", "token": "a", "authorization": "Bearer b"}, "", "not both"),
    ({"url": "http://127.0.0.1:8888/", "token": "a\r\nX-Injected: 1"}, "/token", "one line"),
    ({"url": "http://jupyter.example.org/", "token": "a"}, "", "unencrypted"),
    ({"url": "http://127.0.0.1:8888/", "kernel_name": ""}, "/kernel_name", ""),
    ({"token": "a"}, "/url", "required"),
])
async def test_bad_specs_are_a_400_with_nothing_stored(api, body, field, message):
    code, err = await api("POST", "workspaces/local/targets", {"name": "remote", "kind": "jupyter", **body})
    assert code == 400, err
    assert (err["field"] or "") == field and message in err["message"]
    code, listing = await api("GET", "workspaces/local/targets")
    assert "remote" not in [t["name"] for t in listing["targets"]]


@pytest.mark.parametrize("argv, message", [
    (["--url", "ftp://127.0.0.1/"], "http:// or https://"),
    (["--url", "http://127.0.0.1:1/?token=abc"], "must not carry the token"),
    (["--url", "http://127.0.0.1:1/", "--token", "in-clear"], "--token-stdin or --ask-token"),
    (["--url", "http://127.0.0.1:1/", "--ask-token"], "without a terminal"),
])
def test_bad_input_on_the_command_line_exits_2_with_nothing_stored(argv, message):
    r = cli("attach", "remote", "--kind", "jupyter", *argv)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "in-clear" not in r.stderr
    assert "remote" not in cli("list").stdout


@pytest.mark.timeout(120)
async def test_allowed_hosts_limit_where_targets_may_point(compute_allowing_loopback):
    ws = compute_allowing_loopback.workspace()
    with pytest.raises(Exception) as info:
        await ws.attach("remote", "jupyter", {"url": "http://localhost:8888/"})
    assert info.value.status == 400 and info.value.field == "/url" and "allowed" in info.value.message
    assert "remote" not in [t.name for t in await ws.list()]


# -- credentials -------------------------------------------------------------------------------------
def test_a_wrong_token_is_refused_at_attach_naming_the_answer(remote, compute_db):
    r = attach("remote", remote, token="not-the-token")
    assert r.returncode == 1
    op = json.loads(r.stdout)
    assert op["status"] == "failed" and op["error"]["reason"] == "credentials_refused"
    assert "refused the credentials (token): 403 Forbidden" in op["error"]["message"]
    assert "not-the-token" not in r.stderr + r.stdout
    assert "remote" not in cli("list").stdout
    assert not (compute_db.parent / "secrets.json").exists()


def test_attach_checks_the_server_and_a_kernelspec(remote, own_remote):
    r = attach("remote", remote, "--kernel-name", "no-such-kernel")
    assert r.returncode == 1 and "has no kernelspec 'no-such-kernel'" in r.stdout and "python3" in r.stdout
    gone = JupyterServer(remote.root, port=free_port())
    r = attach("remote", gone, token="x")
    assert r.returncode == 1 and "does not answer" in r.stdout
    assert "remote" not in cli("list").stdout


async def test_the_token_is_a_secret_everywhere(api, remote, compute_db, caplog):
    caplog.set_level("DEBUG")
    _, kinds = await api("GET", "workspaces/local/kinds")
    schema = next(k for k in kinds["kinds"] if k["name"] == "jupyter")["attach_schema"]["properties"]
    assert schema["token"]["writeOnly"] and schema["token"]["format"] == "password"
    assert schema["authorization"]["writeOnly"] and schema["authorization"]["format"] == "password"

    code, body = await api("POST", "workspaces/local/targets",
                           {"name": "remote", "kind": "jupyter", "url": remote.url, "token": remote.token})
    assert code == 202
    op = await wait_op(api, body["operation"]["id"], timeout=30)
    assert op["status"] == "succeeded", op
    code, op_id = await api("POST", "workspaces/local/targets/remote/start")
    op = await wait_op(api, op_id["operation"]["id"], timeout=60)
    assert op["status"] == "succeeded", op
    code, target = await api("GET", "workspaces/local/targets/remote")
    assert target["properties"]["url"] == remote.url and target["properties"]["credentials"] == "token"
    _, nodes = await api("GET", "workspaces/local/targets/remote/nodes")
    _, listing = await api("GET", "workspaces/local/targets")
    seen = json.dumps([body, target, nodes, listing, op])
    assert remote.token not in seen
    holding = await asyncio.to_thread(files_holding, compute_db.parent, remote.token)
    assert [f for f in holding if "compute.db" in f] == []
    assert remote.token not in caplog.text
    secrets_file = compute_db.parent / "secrets.json"
    if secrets_file.exists():  # no usable keyring here: the private file holds it
        assert secrets_file.stat().st_mode & 0o777 == 0o600
    code, patched = await api("PATCH", "workspaces/local/targets/remote", {"token": remote.token})
    assert code == 200 and remote.token not in json.dumps(patched)
    code, err = await api("PATCH", "workspaces/local/targets/remote", {"token": "not-it"})
    assert code == 502 and "403" in err["message"] and "not-it" not in json.dumps(err)
    code, err = await api("PATCH", "workspaces/local/targets/remote", {"url": "http://127.0.0.1:1/"})
    assert code == 400 and err["field"] == "/url"
    code, body = await api("DELETE", "workspaces/local/targets/remote")
    assert code == 202
    op = await wait_op(api, body["operation"]["id"], timeout=30)
    assert op["status"] == "succeeded" and not secrets_file.exists() or remote.token not in secrets_file.read_text()


# -- the lifecycle --------------------------------------------------------------------------------------
def test_start_nodes_restart_stop_and_detach(remote, attached):
    t = show("remote")
    assert t["state"] == "stopped" and t["managed"] is False and t["properties"]["url"] == remote.url
    r = cli("start", "remote", "--output", "json")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    kid = t["properties"]["kernel_id"]
    assert t["state"] == "running" and t["properties"]["kernel_name"] == "python3"
    assert remote.api("GET", f"api/kernels/{kid}")[0] == 200

    nodes = json.loads(cli("nodes", "remote", "--output", "json").stdout)
    assert [n["properties"]["role"] for n in nodes] == ["server", "kernel"]
    assert nodes[0]["state"] == "running" and nodes[0]["port"] == remote.port and nodes[0]["properties"]["version"]
    assert nodes[1]["id"] == kid and nodes[1]["state"] in ("idle", "busy", "starting")

    r = cli("restart", "remote", "--yes", "--output", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["properties"]["kernel_id"] == kid  # the REST restart

    assert cli("stop", "remote", "--yes").returncode == 0
    assert show("remote")["state"] == "stopped"
    assert remote.api("GET", f"api/kernels/{kid}")[0] == 404

    assert cli("start", "remote").returncode == 0
    kid2 = show("remote")["properties"]["kernel_id"]
    assert kid2 != kid
    assert cli("detach", "remote", "--yes").returncode == 0
    assert remote.api("GET", f"api/kernels/{kid2}")[0] == 404  # the kernel we started went with it
    assert "remote" not in cli("list").stdout


def test_a_new_token_replaces_the_old_one(remote, attached):
    r = cli("update", "remote", "--token-stdin", input="wrong\n")
    assert r.returncode == 1 and "403" in r.stderr
    r = cli("update", "remote", "--token-stdin", "--kernel-name", "python3", input=remote.token + "\n")
    assert r.returncode == 0, r.stderr
    assert show("remote")["properties"]["kernel_name"] == "python3"
    assert cli("start", "remote").returncode == 0


# -- through nbclient with %%compute ----------------------------------------------------------------------
class TimedClient(NotebookClient):
    """nbclient, noting when each output of each cell arrived, and acting once a cell prints chosen text."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.arrivals: list[tuple[float, int, str, dict]] = []
        self.watches: list[tuple[int, str, object]] = []

    def when_printed(self, cell_index: int, text: str, action) -> None:
        """Call ``action()`` the first time cell ``cell_index`` prints ``text``."""
        self.watches.append((cell_index, text, action))

    def output(self, outs, msg, display_id, cell_index):
        self.arrivals.append((time.monotonic(), cell_index, msg["msg_type"], msg["content"]))
        if msg["msg_type"] == "stream":
            for watch in list(self.watches):
                if watch[0] == cell_index and watch[1] in msg["content"].get("text", ""):
                    self.watches.remove(watch)
                    watch[2]()
        return super().output(outs, msg, display_id, cell_index)


def notebook(*cells: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


def stdout_of(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def errors_of(cell) -> list:
    return [o for o in cell.outputs if o.output_type == "error"]


PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108020000009077"
    "53de0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082")).decode()


def test_notebook_cells_run_on_the_jupyter_server(remote, attached):
    nb = notebook(
        "%load_ext jupyter_compute\nimport os, time, numpy as np\nprint(os.getpid())",
        "%%compute remote --start\nimport os\nprint(os.getpid())",
        "%%compute remote\nimport time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second', flush=True)",
        "%%compute remote\nfrom IPython.display import HTML, Image, display\nimport base64\n"
        f"display(HTML('<b>bold</b>'))\ndisplay(Image(data=base64.b64decode('{PNG}')))\n21 * 2",
        "%%compute remote\nkept = 'still here'",
        "%%compute remote\nprint(kept)",
        "a = np.random.default_rng(7).random(50 * 2**20 // 8)\ndouble = lambda v: v * 2",
        "%%compute remote --push a,double --pull b,add_one --verbose\nb = double(a)\nadd_one = lambda v: v + 1\nb.nbytes",
        "assert np.array_equal(b, a * 2) and b.flags.writeable\nprint(add_one(41))",
        "%%compute remote\nprint('before')\nraise ValueError('the remote value was wrong')",
        "print('never runs')",
    )
    client = TimedClient(nb, timeout=240, kernel_name="python3", allow_errors=False)
    with pytest.raises(Exception) as info:
        client.execute()
    assert getattr(info.value, "ename", None) == "ValueError", info.value
    c = nb.cells
    local_pid, remote_pid = int(text_of(c[0])), int(stdout_of(c[1]))
    assert "start remote" in text_of(c[1])  # --start started it, with progress
    assert remote_pid != local_pid
    assert psutil.Process(remote_pid).parent().pid == remote.proc.pid  # a kernel of the second server

    at = {content["text"].strip(): t for t, i, kind, content in client.arrivals if i == 2 and kind == "stream"}
    assert at["second"] - at["first"] > 2.0  # streamed live, not at the end

    displays = [o for o in c[3].outputs if o.output_type == "display_data"]
    assert displays[0].data["text/html"] == "<b>bold</b>" and displays[1].data["image/png"].strip() == PNG
    assert [o.data["text/plain"] for o in c[3].outputs if o.output_type == "execute_result"] == ["42"]
    assert text_of(c[5]).strip() == "still here"

    result = [o.data["text/plain"] for o in c[7].outputs if o.output_type == "execute_result"]
    assert result == [str(50 * 2**20)]
    assert not [o for o in c[7].outputs if o.output_type == "stream" and o.name == "stderr"]
    report = "".join(o.data["text/plain"] for o in c[7].outputs if o.output_type == "display_data")
    assert "pushed a, double (52.4 MB)" in report and "pulled b, add_one (52.4 MB)" in report
    assert text_of(c[8]).strip() == "42"

    errors = errors_of(c[9])
    assert len(errors) == 1 and errors[0].ename == "ValueError" and errors[0].evalue == "the remote value was wrong"
    assert any("raise ValueError" in re.sub(r"\x1b\[[0-9;]*m", "", line) for line in errors[0].traceback)
    assert "before" in text_of(c[9]) and not c[10].outputs


def test_interrupting_the_notebook_interrupts_the_remote_kernel(remote, attached):
    assert cli("start", "remote").returncode == 0
    nb = notebook("%load_ext jupyter_compute",
                  "%%compute remote\nprint('warm')",
                  "import time\nt0 = time.monotonic()",
                  "%%compute remote\nimport time\nprint('sleeping', flush=True)\ntime.sleep(60)",
                  "print(round(time.monotonic() - t0, 1))",
                  "%%compute remote\nprint('free')")
    client = TimedClient(nb, timeout=120, kernel_name="python3", allow_errors=True)
    # Interrupted as a user would, once the remote cell is under way.
    client.when_printed(3, "sleeping", lambda: os.kill(client.km.provisioner.pid, signal.SIGINT))
    client.execute()
    c = nb.cells
    errors = errors_of(c[3])
    assert len(errors) == 1 and errors[0].ename == "KeyboardInterrupt"
    assert "sleeping" in text_of(c[3])
    assert float(text_of(c[4])) < 10
    assert text_of(c[5]).strip() == "free"


def test_a_server_stopped_mid_cell_ends_the_cell_and_the_next_cell_says_the_namespace_was_lost(own_remote):
    server = own_remote()
    assert attach("remote", server).returncode == 0
    assert cli("start", "remote").returncode == 0
    nb = notebook("%load_ext jupyter_compute",
                  "%%compute remote\nkept = 1\nprint('warm')",
                  "import time\nt0 = time.monotonic()",
                  "%%compute remote\nimport time\nprint('sleeping', flush=True)\ntime.sleep(120)",
                  "print(round(time.monotonic() - t0, 1))",
                  "%%compute remote\nprint('kept' in globals())")
    client = TimedClient(nb, timeout=120, kernel_name="python3", allow_errors=True)
    state_after_stop: list[dict] = []
    # Stopped once the remote cell is under way, from a thread: the notebook goes on meanwhile.
    stopper = threading.Thread(target=server.stop)
    client.when_printed(3, "sleeping", stopper.start)

    def on_cell_execute(cell, cell_index):
        if cell_index == 5:  # the server is back (a new process: its kernels are gone)
            stopper.join(60)
            state_after_stop.append(show("remote"))
            server.start()
            # The next look at it (reading the target looks, at most once a second) sees it back.
            wait_for(lambda: show("remote")["state"] == "running", timeout=10, interval=0.1,
                     message="the target to be seen running again")

    client.on_cell_execute = on_cell_execute
    client.execute()
    c = nb.cells
    errors = errors_of(c[3])
    assert len(errors) == 1 and "was lost" in errors[0].evalue and "sleeping" in text_of(c[3])
    assert float(text_of(c[4])) < 12
    stopped = state_after_stop[0]
    assert stopped["state"] == "unknown" and stopped["provider_state"] == "unreachable"
    assert "was lost" in stopped["errors"][0]["message"] or "does not answer" in stopped["errors"][0]["message"]
    out = text_of(c[5])
    assert "a new kernel was started: variables from earlier cells are lost" in out
    assert out.strip().endswith("False")
    t = show("remote")
    assert t["state"] == "running" and not t["errors"]


# -- the route itself ---------------------------------------------------------------------------------------
def when_printed(text: str, event: asyncio.Event):
    """An ``on_message`` for a route's ``execute`` that sets ``event`` once the cell prints ``text``."""
    def on_message(msg: dict) -> None:
        if text in (msg["content"].get("text") or ""):
            event.set()
    return on_message


async def _kernel(server: JupyterServer, auth=None) -> tuple[JupyterClient, str]:
    client = JupyterClient(server.url, auth or StaticAuth.from_spec(token=server.token))
    return client, (await client.start_kernel())["id"]


@pytest.mark.timeout(120)
async def test_route_input_timeout_and_a_cell_too_large_for_one_message(remote):
    client, kid = await _kernel(remote)
    async with client, WebsocketRoute(remote.url, kid, client.auth, target="remote") as route:
        assert route.is_open and route.key == WebsocketRoute(remote.url, kid).key
        out = []
        r = await route.execute("name = input('who? ')\nprint('hi', name)", stdin=lambda p, pw: "ada",
                                on_message=lambda m: out.append(m["content"].get("text")))
        assert r.status == "ok" and "hi ada\n" in out
        t0 = time.monotonic()
        with pytest.raises(ExecutionTimeout):
            await route.execute("import time; time.sleep(60)", timeout=1.5)
        assert time.monotonic() - t0 < 10
        with pytest.raises(ExecutionError, match="larger than the 10 MiB"):
            await route.execute("x = '" + "y" * (11 * 2**20) + "'")
        r = await route.execute("'free'", timeout=10)
        assert r.result == {"text/plain": "'free'"}
        await client.shutdown(kid)


@pytest.mark.timeout(120)
async def test_the_legacy_websocket_protocol_works_too(own_remote):
    server = own_remote(args=("--ZMQChannelsWebsocketConnection.kernel_ws_protocol=",))
    client, kid = await _kernel(server)
    async with client, WebsocketRoute(server.url, kid, client.auth) as route:
        assert route._v1 is False
        await route.push({"a": np.arange(3 * 2**20)})  # 24 MB: several chunks
        r = await route.execute("b = a[::-1].copy(); int(b[0])")
        assert r.result == {"text/plain": str(3 * 2**20 - 1)}
        got, report = await route.pull(["b"])
        assert np.array_equal(got["b"], np.arange(3 * 2**20)[::-1]) and report.nbytes >= 24 * 2**20


@pytest.mark.timeout(120)
async def test_a_kernel_that_dies_mid_cell_is_reported(remote):
    client, kid = await _kernel(remote)
    async with client, WebsocketRoute(remote.url, kid, client.auth, target="remote") as route:
        t0 = time.monotonic()
        with pytest.raises(ExecutionError, match="was restarted"):
            await route.execute("import os, time\ntime.sleep(0.5)\nos._exit(1)")
        assert time.monotonic() - t0 < 20 and not route.is_open


@pytest.mark.parametrize("how, within", [("terminate", 5), ("kill", 5), ("freeze", 12)])
@pytest.mark.timeout(180)
async def test_a_server_that_goes_away_mid_cell_gives_a_clear_error_and_the_state_shows_it(own_remote, compute,
                                                                                           how, within):
    server = own_remote()
    assert attach("remote", server).returncode == 0
    assert cli("start", "remote").returncode == 0
    ws = compute.workspace()
    route = await ws.route("remote")
    await route.open()
    lost = route.kernel_id
    assert (await route.execute("kept = 1")).status == "ok"
    started = asyncio.Event()
    cell = asyncio.ensure_future(route.execute(
        "import time\nprint('started', flush=True)\ntime.sleep(120)",
        on_message=when_printed("started", started)))
    await asyncio.wait_for(started.wait(), 30)  # the cell is under way on the server
    t0 = time.monotonic()
    await asyncio.to_thread(server.stop, how)
    with pytest.raises(ExecutionError) as info:
        await asyncio.wait_for(cell, 30)
    elapsed = time.monotonic() - t0
    assert "the connection to the Jupyter server at" in info.value.message and "was lost" in info.value.message
    if how == "freeze":
        assert "stopped answering pings" in info.value.message
    assert elapsed < within, elapsed
    await route.close()
    t = await ws.get("remote")
    assert t.state.value == "unknown" and t.provider_state == "unreachable" and t.errors
    if how == "freeze":
        await asyncio.to_thread(server.stop, "kill")
    await asyncio.to_thread(server.start)
    # The server is back: the next look at it (reading the target looks, at most once a second)
    # sees the target running again, and the next cell's new kernel replaces the lost one.
    async def running() -> bool:
        return (await ws.get("remote")).state.value == "running"

    await await_for(running, timeout=10, interval=0.1, message="the target to be seen running again")
    route = await ws.route("remote")
    await route.open()
    notes = []
    r = await route.execute("'kept' in globals()", on_message=lambda m: notes.append(m["content"].get("text")))
    assert r.result == {"text/plain": "False"}
    assert any(n and "variables from earlier cells are lost" in n for n in notes)
    await route.close()
    t = await ws.get("remote")
    assert t.state.value == "running" and not t.errors
    assert t.properties["kernel_id"] == route.kernel_id != lost


# -- bearer tokens through the hook -------------------------------------------------------------------------
BEARER_PROVIDER = '''
import hashlib, hmac, os, time
from jupyter_server.auth.identity import IdentityProvider, User

KEY = os.environ["BEARER_TEST_KEY"].encode()


def sign(expires):
    return hmac.new(KEY, str(expires).encode(), hashlib.sha256).hexdigest()


class BearerOnly(IdentityProvider):
    """Accepts only 'Authorization: Bearer <expires>.<hmac>' that has not expired."""

    def get_user(self, handler):
        value = handler.request.headers.get("Authorization", "")
        if not value.startswith("Bearer "):
            return None
        expires, _, sig = value[7:].rpartition(".")
        try:
            fresh = float(expires) > time.time()
        except ValueError:
            return None
        if not (fresh and hmac.compare_digest(sig, sign(expires))):
            return None
        handler._token_authenticated = True
        return User("bearer")
'''


@pytest.fixture
def bearer_server(own_remote, tmp_path):
    key = secrets.token_hex(16)
    (tmp_path / "bearer_only.py").write_text(BEARER_PROVIDER)
    server = own_remote(token="", args=("--ServerApp.identity_provider_class=bearer_only.BearerOnly",),
                        env={"PYTHONPATH": str(tmp_path), "BEARER_TEST_KEY": key})

    def issue(lifetime: float, claimed: float | None = None):
        import hashlib
        import hmac
        expires = round(time.time() + lifetime, 3)
        sig = hmac.new(key.encode(), str(expires).encode(), hashlib.sha256).hexdigest()
        return f"{expires}.{sig}", time.time() + (claimed if claimed is not None else lifetime)
    return server, issue


@pytest.mark.timeout(120)
async def test_bearer_tokens_are_refreshed_before_they_expire_through_the_hook(bearer_server):
    server, issue = bearer_server
    issued: list[str] = []

    async def provider():
        token, expires_on = issue(4.0)
        issued.append(token)
        return token, expires_on

    auth = BearerTokenAuth(provider, refresh_margin=1.5, source="the test's identity")
    async with JupyterClient(server.url, auth) as client:
        await client.status()
        kid = (await client.start_kernel())["id"]
        async with WebsocketRoute(server.url, kid, auth, target="azure-like") as route:
            assert auth.fetches == 1
            await asyncio.sleep(3.0)  # within the margin of expiry: the next request gets a new token
            started = asyncio.Event()
            cell = asyncio.ensure_future(route.execute(
                "import time\nprint('started', flush=True)\ntime.sleep(30)",
                on_message=when_printed("started", started)))
            await asyncio.wait_for(started.wait(), 15)  # the cell is under way: there is something to interrupt
            await route.interrupt()  # REST, with the refreshed token
            r = await asyncio.wait_for(cell, 15)
            assert r.ename == "KeyboardInterrupt"
            assert auth.fetches == 2
            await asyncio.sleep(4.5)  # now the second token has expired too
            await client.shutdown(kid)
            assert auth.fetches == 3
    assert len(set(issued)) == 3
    assert not any(token in repr(auth) for token in issued)


@pytest.mark.timeout(120)
async def test_a_refused_bearer_token_is_replaced_at_once_and_a_bad_provider_is_named(bearer_server):
    server, issue = bearer_server
    answers = [issue(-10.0, claimed=3600.0), issue(600.0)]  # the first looks fresh here but the server says no

    async def provider():
        return answers.pop(0) if answers else issue(-10.0, claimed=3600.0)

    auth = BearerTokenAuth(provider)
    async with JupyterClient(server.url, auth) as client:
        status = await client.status()
        assert "kernels" in status and auth.fetches == 2
        kid = (await client.start_kernel())["id"]
    # The websocket handshake is refused the same way, and the route asks again.
    stale = BearerTokenAuth(lambda: _expired(issue))
    with pytest.raises(CredentialsRefused, match="403"):
        async with WebsocketRoute(server.url, kid, stale):
            pass
    assert stale.fetches == 2
    async with JupyterClient(server.url, StaticAuth.from_spec(authorization="Bearer nonsense")) as client:
        with pytest.raises(CredentialsRefused, match="refused the credentials .authorization header.: 403"):
            await client.status()


async def _expired(issue):
    return issue(-10.0, claimed=3600.0)


def test_attach_with_an_authorization_header(bearer_server):
    server, issue = bearer_server
    token, _ = issue(600.0)
    spec = f"url: {server.url}\nauthorization: Bearer {token}\n"
    path = server.root / "spec.yaml"
    path.write_text(spec)
    r = cli("attach", "hub", "--kind", "jupyter", "-f", str(path), "--output", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["properties"]["credentials"] == "authorization header"
    assert cli("start", "hub").returncode == 0
    assert token not in cli("show", "hub", "--output", "json").stdout
    path.write_text(f"url: {server.url}\nauthorization: Bearer {issue(-5.0)[0]}\n")
    r = cli("attach", "hub2", "--kind", "jupyter", "-f", str(path))
    assert r.returncode == 1 and "refused the credentials (authorization header): 403" in r.stdout
    assert cli("detach", "hub", "--yes").returncode == 0
