"""REST latency under load: 50 concurrent clients list, create, start, stop and delete local-kernel
targets for 60 s, with kernel starts capped; no error but 409 is allowed, and the final state must be
what the operations that succeeded say."""
from __future__ import annotations

import asyncio
import json
import random
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from tests.servers import ServerProcess

from .common import Recorder
from .notebook import MARKER, end_marked

CLIENTS = 50
SECONDS = 60.0
#: Targets starting (create, start) at once across all clients; the server caps too.
START_CAP = 3
SERVER_CAP = 2
#: Each client waits a random 0-100 ms between requests.
THINK = 0.1
#: Share of requests that are a list of the workspace.
LISTS = 0.4
#: Share of actions sent without waiting for the client's previous operation to end (may meet a 409).
IMPATIENT = 0.3
RESULT = {"create": "running", "start": "running", "stop": "stopped", "delete": None}


class Load:
    def __init__(self, server: ServerProcess):
        self.server = server
        self.latencies: list[float] = []
        self.by_kind: dict[str, list[float]] = {}
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []
        self.starting = 0
        self.ops = 0

    async def call(self, session, method: str, path: str, body=None) -> tuple[int, dict | None]:
        url = f"{self.server.url}/jupyter-compute/{path}"
        t0 = time.perf_counter()
        async with session.request(method, url, data=json.dumps(body) if body is not None else None) as r:
            raw = await r.read()
        ms = (time.perf_counter() - t0) * 1000
        self.latencies.append(ms)
        self.by_kind.setdefault(_kind(method, path), []).append(ms)
        self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
        data = json.loads(raw) if raw else None
        if r.status >= 400 and r.status != 409:
            self.errors.append(f"{method} {path}: {r.status} {raw[:300]!r}")
        return r.status, data

    async def wait_op(self, session, op_id: str) -> dict:
        while True:
            code, op = await self.call(session, "GET", f"operations/{op_id}")
            if code == 200 and op["status"] != "running":
                return op
            await asyncio.sleep(0.2)

    async def client(self, session, i: int, end: float) -> str | None:
        """One client, owning target ``load-i``; returns the state its succeeded operations leave."""
        name = f"load-{i:02d}"
        rng = random.Random(i)
        state: str | None = None  # what the last operation that succeeded left
        pending: tuple[dict, str] | None = None  # (operation, action)

        async def settle() -> None:
            nonlocal pending, state
            op = await self.wait_op(session, pending[0]["id"])
            action = pending[1]
            if action in ("create", "start"):
                self.starting -= 1
            pending = None
            if op["status"] == "succeeded":
                state = RESULT[action]
            else:
                self.errors.append(f"{action} {name} {op['status']}: {op.get('error')}")
                state = "failed" if action != "delete" else state

        while time.monotonic() < end:
            await asyncio.sleep(rng.random() * THINK)
            if rng.random() < LISTS:
                await self.call(session, "GET", "workspaces/local/targets")
                continue
            if pending is not None and rng.random() >= IMPATIENT:
                await settle()
                continue
            # The next step of the lifecycle, from what this client believes.
            believed = RESULT[pending[1]] if pending else state
            if believed is None:
                action = "create"
            elif believed == "running":
                action = "stop"
            else:
                action = rng.choice(["start", "delete"])
            if action in ("create", "start") and self.starting >= START_CAP:
                await self.call(session, "GET", "workspaces/local/targets")
                continue
            if action == "create":
                code, body = await self.call(session, "POST", "workspaces/local/targets",
                                             {"name": name, "kind": "local-kernel"})
            elif action == "delete":
                code, body = await self.call(session, "DELETE", f"workspaces/local/targets/{name}")
            else:
                code, body = await self.call(session, "POST", f"workspaces/local/targets/{name}/{action}")
            if code == 202:
                if pending is not None:  # it had ended, unseen, before this was accepted
                    await settle()
                if action in ("create", "start"):
                    self.starting += 1
                pending = (body["operation"], action)
                self.ops += 1
            elif code == 409 and pending is not None:
                await settle()
        if pending is not None:
            await settle()
        return state

    async def run(self) -> dict[str, str | None]:
        import aiohttp
        headers = {"Authorization": f"token {self.server.token}", "Content-Type": "application/json"}
        end = time.monotonic() + SECONDS
        async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=CLIENTS)) as session:
            states = await asyncio.gather(*(self.client(session, i, end) for i in range(CLIENTS)))
        return {f"load-{i:02d}": s for i, s in enumerate(states)}


def run(rec: Recorder) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="jc-bench-load-"))
    token = secrets.token_hex(8)
    db = tmp / "compute" / "compute.db"
    server = ServerProcess(tmp, env={"JUPYTER_COMPUTE_DB": str(db), MARKER: token,
                                     "JUPYTER_RUNTIME_DIR": str(tmp / "runtime")})
    try:
        server.start(extra_args=(f"--ComputeConfig.max_concurrent_starts={SERVER_CAP}",))
        load = Load(server)
        expected = asyncio.run(load.run())
        code, body = server.request("GET", "workspaces/local/targets")
        actual = {t["name"]: t["state"] for t in body["targets"] if t["name"].startswith("load-")}
        wanted = {n: s for n, s in expected.items() if s is not None}
        mismatch = {n: (wanted.get(n), actual.get(n)) for n in set(actual) | set(wanted)
                    if wanted.get(n) != actual.get(n)}
        rec.add("load_p99_ms", load.latencies, "ms", also=(99,))
        # The load's own checks travel with the figure; the goals read them.
        rec.figures["load_p99_ms"].update(
            statuses={str(k): v for k, v in sorted(load.statuses.items())}, operations=load.ops,
            errors=len(load.errors), final_state_matches=not mismatch)
        print(f"    {len(load.latencies)} requests, {load.ops} operations, statuses {dict(sorted(load.statuses.items()))}",
              flush=True)
        from .common import percentile
        print("    " + ", ".join(f"{k} p50 {percentile(v, 50):.0f} p99 {percentile(v, 99):.0f} ms (n={len(v)})"
                                 for k, v in sorted(load.by_kind.items())), flush=True)
        for e in load.errors[:3]:
            print(f"    error: {e[:400]}", flush=True)
        if mismatch:
            print(f"    final state differs from the succeeded operations (expected, actual): {mismatch}", flush=True)
    finally:
        _delete_all(server)
        server.stop()
        from tests.conftest import stop_all_targets
        stop_all_targets(db)
        end_marked(token)
        shutil.rmtree(tmp, ignore_errors=True)


def _kind(method: str, path: str) -> str:
    parts = path.split("/")
    if parts[0] == "operations":
        return "poll"
    if method == "GET":
        return "list" if parts[-1] == "targets" else "get"
    if method == "DELETE":
        return "delete"
    return "create" if parts[-1] == "targets" else parts[-1]


def _delete_all(server: ServerProcess, timeout: float = 60) -> None:
    """Delete every target the load left, and wait (within bounds) until they are gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            code, body = server.request("GET", "workspaces/local/targets")
        except OSError:
            return
        left = [t for t in body["targets"] if t["kind"] == "local-kernel"] if code == 200 else []
        if not left:
            return
        for t in left:
            if t["state"] != "deleting":
                server.request("DELETE", f"workspaces/local/targets/{t['name']}")
        time.sleep(0.5)
