"""The Jupyter server's event-loop lag while 20 Azure operations run against the Resource Manager
stand-in, every answer of which is delayed 500 ms: the lateness of a 10 ms probe on the server's loop."""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from tests.servers import ServerProcess, wait_for
from tests.standins.arm import ArmStandIn
from tests.standins.azure import _AZURE_VARS
from tests.support import USER_SERVER
from tests.families.azureml.test_azureml import instance_resource

from .common import Recorder
from .notebook import MARKER, end_marked

ROOT = Path(__file__).resolve().parent.parent
NETGUARD = ROOT / "tests" / "standins" / "netguard"
DELAY = 0.5
CREATES, STOPS, STARTS = 10, 5, 5


class LagServer(ServerProcess):
    """ServerProcess, started as ``python -m bench.lag_server``."""

    def start(self, timeout: float = 60, extra_args: tuple = ()) -> "LagServer":
        import subprocess
        argv = [sys.executable, "-m", "bench.lag_server", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
                f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.root}",
                USER_SERVER, *extra_args]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=self.env,
                                     cwd=self.root)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                return self.request("GET", "workspaces")[0] == 200
            except OSError:
                return False
        wait_for(up, timeout=timeout, interval=0.2, message="jupyter server to answer")
        return self

    def lags(self) -> list[float]:
        import urllib.request
        req = urllib.request.Request(f"{self.url}/bench/lag", headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())


async def _operations(server: LagServer, wid: str) -> list[dict]:
    """Send the 20 operations at once; wait for each to end, as the sidebar does, on the event bus."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    from tornado.websocket import websocket_connect

    headers = {"Authorization": f"token {server.token}"}
    ws = await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{server.port}/api/events/subscribe", headers=headers))
    client = AsyncHTTPClient(max_clients=CREATES + STOPS + STARTS)
    base = f"{server.url}/jupyter-compute/workspaces/{wid}/targets"
    requests = ([(base, json.dumps({"name": f"new{i:02d}", "kind": "compute-instance", "size": "Standard_DS3_v2"}))
                 for i in range(CREATES)]
                + [(f"{base}/run{i:02d}/stop", "") for i in range(STOPS)]
                + [(f"{base}/off{i:02d}/start", "") for i in range(STARTS)])
    answers = await asyncio.gather(*(client.fetch(url, method="POST", body=body, headers=headers, raise_error=False)
                                     for url, body in requests))
    pending = {}
    for (url, _), r in zip(requests, answers):
        if r.code != 202:
            raise AssertionError(f"POST {url}: {r.code} {r.body[:300]!r}")
        op = json.loads(r.body)["operation"]
        pending[op["id"]] = op
    finished: dict[str, dict] = {}
    deadline = time.monotonic() + 120
    while len(finished) < len(pending):
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(pending) - len(finished)} Azure operations did not end in 120 s")
        try:
            raw = await asyncio.wait_for(ws.read_message(), 1.0)
        except asyncio.TimeoutError:
            continue
        if raw is None:
            raise AssertionError("the event bus closed")
        msg = json.loads(raw)
        if msg.get("id") in pending and msg.get("status") not in (None, "running"):
            finished[msg["id"]] = msg
    ws.close()
    client.close()
    return list(finished.values())


def run(rec: Recorder) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="jc-bench-azure-"))
    token = secrets.token_hex(8)
    arm = ArmStandIn()
    arm.lro_polls = 2
    arm.quota = {"total": 1000, "low_priority": 1000, "default_family": 1000, "families": {}}
    for i in range(STOPS):
        arm.seed(instance_resource(f"run{i:02d}", "Running"))
    for i in range(STARTS):
        arm.seed(instance_resource(f"off{i:02d}", "Stopped"))
    # The instances' Jupyter endpoints are a loopback port where nothing listens: what the server
    # does with an instance that has started (reading its kernel list) stays on this machine and
    # fails at once, as for an instance whose Jupyter is not up yet.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    nowhere = f"https://127.0.0.1:{closed.getsockname()[1]}/"
    for name in ([f"run{i:02d}" for i in range(STOPS)] + [f"off{i:02d}" for i in range(STARTS)]
                 + [f"new{i:02d}" for i in range(CREATES)]):
        arm.instance_jupyter[name] = nowhere
    arm.start()
    server = None
    try:
        root = tmp / "project"
        config = tmp / "config"
        root.mkdir()
        config.mkdir()
        arm.write_config(str(root))
        (config / "jupyter_compute_config.json").write_text(json.dumps(
            {"AzureML": {"poll_interval": 0.1, "retry_total": 2, "retry_backoff_factor": 0.01}}))
        env = {k: v for k, v in os.environ.items() if k not in _AZURE_VARS}
        env.update(arm.env())
        env.update({MARKER: token, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_COMPUTE_DB": str(tmp / "compute.db"),
                    "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_DATA_DIR": str(tmp / "data"),
                    "AZURE_CONFIG_DIR": str(tmp / "azure-cli"),
                    "AZD_CONFIG_DIR": str(tmp / "azd"), "NO_PROXY": "127.0.0.1,localhost",
                    "JC_NETGUARD_LOG": str(tmp / "netguard.log"),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(NETGUARD), str(ROOT), os.environ.get("PYTHONPATH")]))})
        server = LagServer(root, env=env).start()
        code, body = server.request("GET", "workspaces")
        wid = next(w["id"] for w in body["workspaces"] if w["kind"] == "azureml")
        code, body = server.request("GET", f"workspaces/{wid}/targets")  # sign-in and first contact, not timed
        assert code == 200, body
        arm.delay = DELAY
        server.lags()
        ops = asyncio.run(_operations(server, wid))
        lags = server.lags()
        failed = [o for o in ops if o["status"] != "succeeded"]
        if failed:
            raise AssertionError(f"{len(failed)} Azure operations failed: {failed[0]}")
        stray = (tmp / "netguard.log").read_text() if (tmp / "netguard.log").exists() else ""
        if stray:
            raise AssertionError(f"the server tried to leave loopback: {stray[:500]}")
        rec.add("loop_lag_ms", lags, "ms")
    finally:
        if server is not None:
            server.stop()
        arm.stop()
        closed.close()
        end_marked(token)
        shutil.rmtree(tmp, ignore_errors=True)
