"""A real Jupyter server with the extension, as a subprocess: used by the tests and by bench/."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import COMPUTE_SERVER, free_port, wait_for


class ServerProcess:
    """A real ``jupyter server`` subprocess with the extension, on a free loopback port (with the
    server extensions of ``extensions``: by default the tests' set, ``tests.support.COMPUTE_SERVER``)."""

    def __init__(self, root: Path, env: dict | None = None, token: str = "compute-test-token",
                 extensions: str = COMPUTE_SERVER):
        import secrets
        self.root = root
        self.extensions = extensions
        self.token = token or secrets.token_hex(16)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self._take_port()

    def _take_port(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.root / f"server-{self.port}.log"

    def start(self, timeout: float = 60, extra_args: tuple = ()) -> "ServerProcess":
        """Start the server on its port; if another process took the port between choosing it and
        the server binding it, choose another and start again (the server never moves on its own)."""
        import http.client
        for attempt in range(3):
            argv = [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={self.port}",
                    "--ServerApp.port_retries=0", "--ip=127.0.0.1",
                    f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.root}",
                    self.extensions, "--ComputeConfig.monitor_interval=0.2",
                    *extra_args]
            if os.geteuid() == 0:
                argv.append("--allow-root")
            self.proc = subprocess.Popen(argv, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=self.env)

            def up():
                if self.proc.poll() is not None:
                    return "exited"
                try:
                    return self.request("GET", "workspaces")[0] == 200
                except (OSError, http.client.HTTPException, ValueError):
                    # Not answering yet, or not our server: another test's server that took the
                    # port first answers with a page of its own (this one then exits, port taken).
                    return False
            try:
                if wait_for(up, timeout=timeout, interval=0.2, message="jupyter server to answer") is True:
                    return self
            except BaseException:
                self.stop()  # a server that never answered is not left behind
                raise
            log = self.log.read_text()
            if not ("not available" in log or "already in use" in log) or attempt == 2:
                raise AssertionError(f"server exited: {log[-2000:]}")
            self._take_port()
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


