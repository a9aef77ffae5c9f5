"""Control-plane figures: listing 1,000 targets, how the list's cost and the server's memory grow
from 100 to 10,000 targets, a kernelspec sync at 1,000 targets, event latency, and kernel start
beside a plain one."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from jupyter_client import AsyncKernelManager

from jupyter_compute.core.store import Store
from tests.servers import ServerProcess
from tests.support import USER_SERVER

from .common import Recorder


def _populate(db: str, n: int) -> None:
    s = Store(db)
    for i in range(n):
        s.insert_target("local", f"bench-{i:05d}", "local-kernel", True,
                        {"memory_limit_mb": 1024, "description": f"target {i}"}, "stopped")
    s.close()


def _list_ms(server: ServerProcess, n: int, calls: int = 60, warmup: int = 10, changed_in: str | None = None
             ) -> list[float]:
    """Lists of ``n`` targets; with ``changed_in`` (the server's store), each after another process
    changed one target there, as a supervisor or the CLI does."""
    samples = []
    other = Store(changed_in) if changed_in else None
    for i in range(warmup + calls):
        if other is not None:
            other.update_target("local", f"bench-{i % n:05d}", state="running" if i % 2 else "stopped")
        t0 = time.perf_counter()
        code, body = server.request("GET", "workspaces/local/targets")
        dt = (time.perf_counter() - t0) * 1000
        assert code == 200 and len(body["targets"]) >= n
        if i >= warmup:
            samples.append(dt)
    if other is not None:
        other.close()
    return samples


def list_1000(rec: Recorder, server: ServerProcess) -> None:
    rec.add("list_1000_ms", _list_ms(server, 1000), "ms")


#: Store sizes for how the list's cost, and the server's memory, grow.
GROWTH = (100, 1000, 10_000)


def growth(rec: Recorder) -> None:
    """``list_at_N_ms`` and the server's resident memory after those lists (``server_rss_at_N_mb``)
    with N targets, and from 1,000 on ``list_after_change_at_N_ms``, each list after one target
    changed. Each size needs a store and a server of its own, so the sizes run one after
    another, smallest first."""
    import psutil

    for n in GROWTH:
        with tempfile.TemporaryDirectory() as tmp:
            db = str(Path(tmp) / "bench.db")
            _populate(db, n)
            server = ServerProcess(Path(tmp), env={"JUPYTER_COMPUTE_DB": db,
                                                   "JUPYTER_DATA_DIR": os.path.join(tmp, "data")},
                                   extensions=USER_SERVER).start()
            try:
                rec.add(f"list_at_{n}_ms", _list_ms(server, n, calls=30 if n > 1000 else 60), "ms")
                if n >= 1000:
                    rec.add(f"list_after_change_at_{n}_ms",
                            _list_ms(server, n, calls=30 if n > 1000 else 60, changed_in=db), "ms")
                rss = psutil.Process(server.proc.pid).memory_info().rss / 2**20
                rec.add(f"server_rss_at_{n}_mb", [rss], "MB")
            finally:
                server.stop()


async def _event_latency(server: ServerProcess, n: int) -> list[float]:
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    from tornado.websocket import websocket_connect

    headers = {"Authorization": f"token {server.token}"}
    ws = await websocket_connect(HTTPRequest(server.url.replace("http", "ws") + "/api/events/subscribe", headers=headers))
    client = AsyncHTTPClient()
    samples = []

    async def send(action: str) -> float:
        t0 = time.perf_counter()
        r = await client.fetch(f"{server.url}/jupyter-compute/workspaces/local/targets/latency/{action}", method="POST",
                               body=b"", headers=headers, raise_error=False)
        assert r.code == 202, r.body
        op_id = json.loads(r.body)["operation"]["id"]
        first = None
        while True:
            msg = json.loads(await asyncio.wait_for(ws.read_message(), 30))
            if first is None and msg.get("target") == "latency" or msg.get("name") == "latency":
                first = first or (time.perf_counter() - t0) * 1000
            if msg.get("id") == op_id and msg.get("status") != "running":
                return first
    for i in range(n):
        samples.append(await send("stop" if i % 2 == 0 else "start"))
    ws.close()
    return samples


def event_latency(rec: Recorder, server: ServerProcess) -> None:
    code, body = server.request("POST", "workspaces/local/targets", {"name": "latency", "kind": "local-kernel"})
    assert server.wait_op(body["operation"]["id"])["status"] == "succeeded"
    rec.add("event_latency_ms", asyncio.run(_event_latency(server, 20)), "ms")
    server.request("DELETE", "workspaces/local/targets/latency")


def kernel_start(rec: Recorder, server: ServerProcess, n: int = 8) -> None:
    ours, floor = [], []
    for i in range(n):
        t0 = time.perf_counter()
        code, body = server.request("POST", "workspaces/local/targets", {"name": f"start-{i}", "kind": "local-kernel"})
        op = server.wait_op(body["operation"]["id"])
        ours.append(time.perf_counter() - t0)
        assert op["status"] == "succeeded", op
        code, body = server.request("DELETE", f"workspaces/local/targets/start-{i}")
        server.wait_op(body["operation"]["id"])

    async def plain():
        km = AsyncKernelManager()
        t0 = time.perf_counter()
        await km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        dt = time.perf_counter() - t0
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
        return dt
    for _ in range(n):
        floor.append(asyncio.run(plain()))
    rec.add("kernel_start_s", ours, "s")
    rec.add("floor_kernel_start_s", floor, "s")


def kernelspec_sync(rec: Recorder, n: int = 1000, changes: int = 60) -> None:
    """``kernelspec_sync_ms``: one kernelspec sync after one target of ``n`` changed, in process (the
    server's loop runs it beside the requests it answers); ``kernelspec_full_sync_ms``: one that also
    reads every folder back, as every ``FILES_CHECKED_EVERY`` seconds."""
    from unittest import mock

    from jupyter_compute.core.kernels import sync_kernelspecs
    from jupyter_compute.core.workspace import Compute

    async def measure(compute: Compute) -> tuple[list[float], list[float]]:
        store = compute.sync_store
        await sync_kernelspecs(compute, check_files=True)  # the first writes every folder
        light, full = [], []
        for i in range(changes):
            store.update_target("local", "bench-00005", state="running" if i % 2 else "stopped")
            t0 = time.perf_counter()
            await sync_kernelspecs(compute, check_files=i % 4 == 3)
            (full if i % 4 == 3 else light).append((time.perf_counter() - t0) * 1000)
        await compute.close()
        return light, full

    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        _populate(db, n)
        with mock.patch.dict(os.environ, {"JUPYTER_COMPUTE_DB": db, "JUPYTER_DATA_DIR": os.path.join(tmp, "data")}):
            light, full = asyncio.run(measure(Compute.from_config()))
    rec.add("kernelspec_sync_ms", light, "ms")
    rec.add("kernelspec_full_sync_ms", full, "ms")


def run(rec: Recorder) -> None:
    for section in (growth, kernelspec_sync):
        try:
            section(rec)
        except Exception as e:  # one broken figure must not hide the others
            rec.fail(section.__name__, f"{type(e).__name__}: {e}")
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        _populate(db, 1000)
        server = ServerProcess(Path(tmp), env={"JUPYTER_COMPUTE_DB": db,
                                               "JUPYTER_DATA_DIR": os.path.join(tmp, "data")},
                                   extensions=USER_SERVER).start()
        try:
            for section in (list_1000, event_latency, kernel_start):
                try:
                    section(rec, server)
                except Exception as e:  # one broken figure must not hide the others
                    rec.fail(section.__name__, f"{type(e).__name__}: {e}")
        finally:
            server.stop()
            from tests.conftest import stop_all_targets
            stop_all_targets(Path(db))
