"""Shared fixtures: every test gets its own store and a real Jupyter server with the extension."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_server"]

ROOT = Path(__file__).resolve().parent.parent


def stop_all_targets(db: Path) -> None:
    """Stop every process a test left running, so none outlives the suite."""
    if not db.exists():
        return
    from jupyter_compute.backends.local import _terminate
    from jupyter_compute.store import Store

    store = Store(str(db))
    for row in store.find_targets():
        if row["runtime"]:
            _terminate(row["runtime"], grace=2)
    store.close()


@pytest.fixture(autouse=True)
def compute_db(tmp_path, monkeypatch):
    """A store of the test's own; JUPYTER_COMPUTE_DB points every process (server, CLI, kernels) at it."""
    path = tmp_path / "compute" / "compute.db"
    monkeypatch.setenv("JUPYTER_COMPUTE_DB", str(path))
    yield path
    stop_all_targets(path)


@pytest.fixture
def jp_server_config():
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_compute": True}},
        "ComputeConfig": {"monitor_interval": 0.2},
    }


@pytest.fixture
def api(jp_fetch):
    """Call the compute REST API: ``await api("GET", "workspaces/local/targets")`` -> (status, json)."""
    from tornado.httpclient import HTTPClientError

    async def call(method: str, path: str, body=None, headers=None):
        kw = {"method": method, "raise_error": True}
        if body is not None:
            kw["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body)
        elif method in ("POST", "PATCH"):
            kw["body"] = b""
            kw["allow_nonstandard_methods"] = True
        if headers:
            kw["headers"] = headers
        try:
            r = await jp_fetch("jupyter-compute", *path.split("/"), **kw)
        except HTTPClientError as e:
            return e.code, json.loads(e.response.body) if e.response is not None and e.response.body else None
        return r.code, json.loads(r.body) if r.body else None

    return call


def cli(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``jupyter compute`` as a real subprocess, with no terminal."""
    return subprocess.run([sys.executable, "-m", "jupyter_compute.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, input=input if input is not None else "",
                          timeout=timeout)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):
    """Poll until ``predicate()`` is truthy; fail (rather than hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


async def await_for(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):
    import asyncio
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


class ServerProcess:
    """A real ``jupyter server`` subprocess with the extension, on a free loopback port."""

    def __init__(self, root: Path, env: dict | None = None, token: str = "compute-test-token"):
        import secrets
        import socket
        self.root = root
        self.token = token or secrets.token_hex(16)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = root / f"server-{self.port}.log"

    def start(self, timeout: float = 60) -> "ServerProcess":
        import urllib.request
        argv = [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
                f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.root}",
                "--ServerApp.jpserver_extensions={'jupyter_compute': True}", "--ComputeConfig.monitor_interval=0.2"]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=self.env)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                return self.request("GET", "workspaces")[0] == 200
            except OSError:
                return False
        wait_for(up, timeout=timeout, interval=0.2, message="jupyter server to answer")
        return self

    def request(self, method: str, path: str, body=None):
        import urllib.error
        import urllib.request
        data = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "PATCH") else None)
        req = urllib.request.Request(f"{self.url}/jupyter-compute/{path}", data=data, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def wait_op(self, op_id: str, timeout: float = 60) -> dict:
        def done():
            code, op = self.request("GET", f"operations/{op_id}")
            return op if code == 200 and op["status"] != "running" else None
        return wait_for(done, timeout=timeout, message=f"operation {op_id}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def server_process(tmp_path):
    """Factory of real Jupyter server subprocesses sharing the test's store; all stopped at the end."""
    started: list[ServerProcess] = []

    def make(**kw) -> ServerProcess:
        s = ServerProcess(tmp_path, **kw).start()
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()
