"""Concurrent REST clients that list, create, start, stop and delete local-kernel targets: the load
of tests/test_load.py and bench/load.py, and the checks of what it leaves behind."""
from __future__ import annotations

import asyncio
import json
import random
import time

import psutil

from tests.servers import ServerProcess

#: Targets starting (create, start) at once across all clients; the server caps too.
START_CAP = 3
#: Each client waits a random 0-100 ms between requests.
THINK = 0.1
#: Share of requests that are a list of the workspace.
LISTS = 0.4
#: Share of actions sent without waiting for the client's previous operation to end (may meet a 409).
IMPATIENT = 0.3
RESULT = {"create": "running", "start": "running", "stop": "stopped", "delete": None}
#: What the API answers when all goes well (202: an operation began); 409 is the only refusal expected.
DOCUMENTED = {200, 201, 202, 204, 409}
TRANSITIONAL = {"creating", "starting", "stopping", "restarting", "deleting"}


class Load:
    def __init__(self, server: ServerProcess, clients: int = 50, seconds: float = 60.0):
        self.server = server
        self.clients = clients
        self.seconds = seconds
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
        self.by_kind.setdefault(kind_of(method, path), []).append(ms)
        self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
        data = json.loads(raw) if raw else None
        if r.status not in DOCUMENTED:
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

    async def _run(self) -> dict[str, str | None]:
        import aiohttp
        headers = {"Authorization": f"token {self.server.token}", "Content-Type": "application/json"}
        end = time.monotonic() + self.seconds
        connector = aiohttp.TCPConnector(limit=self.clients)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
            states = await asyncio.gather(*(self.client(session, i, end) for i in range(self.clients)))
        return {f"load-{i:02d}": s for i, s in enumerate(states)}

    def run(self) -> dict[str, str | None]:
        """Run the load; the state each client's target should be in, None for deleted."""
        return asyncio.run(self._run())


def final_state(server: ServerProcess, expected: dict[str, str | None], marker: str) -> dict[str, object]:
    """What is wrong with what the load left, by kind of fault (all empty when nothing is):
    targets whose state differs from their last succeeded operation, targets stuck in a
    transitional state, and kernel processes (found by ``marker`` on their command line) that
    belong to no running target."""
    code, body = server.request("GET", "workspaces/local/targets")
    assert code == 200, body
    targets = [t for t in body["targets"] if t["name"].startswith("load-")]
    actual = {t["name"]: t["state"] for t in targets}
    wanted = {n: s for n, s in expected.items() if s is not None}
    running_pids = {t["properties"].get("kernel_pid") for t in targets if t["state"] == "running"}
    kernels = {p.pid for p in psutil.process_iter(["cmdline"])
               if marker in " ".join(p.info["cmdline"] or []) and "ipykernel_launcher" in " ".join(p.info["cmdline"] or [])}
    return {
        "mismatch": {n: (wanted.get(n), actual.get(n)) for n in set(actual) | set(wanted)
                     if wanted.get(n) != actual.get(n)},
        "transitional": {t["name"]: t["state"] for t in targets if t["state"] in TRANSITIONAL},
        "orphan_kernels": sorted(kernels - running_pids),
        "missing_kernels": sorted(p for p in running_pids if p not in kernels),
    }


def kind_of(method: str, path: str) -> str:
    parts = path.split("/")
    if parts[0] == "operations":
        return "poll"
    if method == "GET":
        return "list" if parts[-1] == "targets" else "get"
    if method == "DELETE":
        return "delete"
    return "create" if parts[-1] == "targets" else parts[-1]


def delete_all(server: ServerProcess, timeout: float = 60) -> list[str]:
    """Delete every target left in the local workspace (but this machine) and wait (within bounds)
    until they are gone; the names of any still there."""
    deadline = time.monotonic() + timeout
    left: list[dict] = []
    while time.monotonic() < deadline:
        try:
            code, body = server.request("GET", "workspaces/local/targets")
        except OSError:
            return [t["name"] for t in left]
        left = [t for t in body["targets"] if t["kind"] != "local"] if code == 200 else []
        if not left:
            return []
        for t in left:
            if t["state"] != "deleting":
                server.request("DELETE", f"workspaces/local/targets/{t['name']}")
        time.sleep(0.5)
    return [t["name"] for t in left]
