"""The detached supervisor of one ``dask-cluster``: it forks away from whoever started it, runs the
cluster's scheduler with its worker processes under Dask's adaptive scaling, and keeps the store
told: when the cluster is up, what its workers are doing, and when it goes away.

It reads the target's spec from the store every half second, so an ``update`` of min_nodes,
max_nodes or idle_seconds_before_scaledown takes effect on the running cluster. It also answers
``jupyter_compute_reserve`` on the scheduler, with which a cell that needs N workers at once
(``--nodes N``) raises the floor of the adaptive range for a while.

Run as ``python -m jupyter_compute.families.dask.supervisor --db … --workspace … --name …``;
it prints its own process identity and the launching call returns at once.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
import traceback
import uuid

from ...core import processes as procs
from ...core.models import utcnow
from ...core.store import Store
from .scheduler import counts_of

POLL = 0.5
#: Seconds between Adaptive's decisions; idle_seconds_before_scaledown counts in these.
ADAPT_INTERVAL = 1.0
#: Rewrite the worker snapshot at least this often (memory figures), even when nothing else changed.
SNAPSHOT_REFRESH = 10.0
#: Longest a reservation for --nodes may hold the floor up without being renewed.
MAX_LEASE = 600.0
CLOSE_TIMEOUT = 15.0

log = logging.getLogger(__name__)


def write_certificates(folder: str):
    """A self-signed certificate for every role of this cluster, in files only this user can read."""
    from distributed.security import Security

    sec = Security.temporary()
    files = {"ca": os.path.join(folder, "ca.pem"), "cert": os.path.join(folder, "cert.pem"),
             "key": os.path.join(folder, "key.pem")}
    for role, content in (("ca", sec.tls_ca_file), ("cert", sec.tls_client_cert), ("key", sec.tls_client_key)):
        fd = os.open(files[role], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content)
    return files, sec


def wait_count(idle_seconds: int) -> int:
    return max(1, math.ceil(idle_seconds / ADAPT_INTERVAL))


class ClusterSupervisor:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.store = Store(args.db)
        self.ws, self.name, self.op = args.workspace, args.name, args.operation
        self.ident = procs.identity()
        self.stopping: asyncio.Event | None = None
        self.cluster = None
        self.adaptive = None
        self.spec: dict = {}
        self.leases: dict[str, tuple[int, float]] = {}
        self.dir: str | None = None
        self._pids: dict[int, str] = {}
        self._written: str | None = None
        self._written_at = 0.0

    # -- store helpers (sqlite waits run off the scheduler's loop) ---------------------------------
    async def _call(self, fn, *args, **kw):
        return await asyncio.to_thread(fn, *args, **kw)

    async def progress(self, text: str) -> None:
        if self.op:
            await self._call(self.store.update_operation, self.op, progress=text)

    async def fail(self, message: str, code: str) -> None:
        err = {"message": message, "code": code, "at": utcnow().isoformat()}
        await self._call(self.store.update_target, self.ws, self.name, expect_runtime={"supervisor": self.ident},
                         state="failed", runtime={}, errors=[err], provider_state=None)
        if self.op:
            await self._call(self.store.finish_operation, self.op, error={"message": message, "reason": code})
            self.op = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def run(self) -> int:
        self.stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        row = await self._call(self.store.get_target, self.ws, self.name)
        if row is None:
            return 1
        if self.op:
            await self._call(self.store.update_operation, self.op, owner=self.ident)
        self.spec = row["spec"]
        stem = os.path.join(self.args.runtime_dir, f"dask-{self.ws}-{self.name}-{uuid.uuid4().hex[:8]}")
        # Certificates and worker scratch space go with the cluster; the log stays for reading afterwards.
        self.dir = stem
        os.makedirs(self.dir, mode=0o700)
        log_file = stem + ".log"
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        # The scheduler's log and that of every worker process (they inherit these descriptors).
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        files, security = await self._call(write_certificates, self.dir)
        await self._call(self.store.update_target, self.ws, self.name, runtime={
            "supervisor": self.ident, "dir": self.dir, "log_file": log_file, "tls": files})
        n = self.spec.get("min_nodes", 0)
        await self.progress(f"starting the scheduler and {n} worker{'s' if n != 1 else ''}")
        try:
            start = asyncio.ensure_future(self.start_cluster(security))
            stop = asyncio.ensure_future(self.stopping.wait())
            done, _ = await asyncio.wait({start, stop}, timeout=self.args.ready_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if start not in done:
                start.cancel()
                await asyncio.gather(start, return_exceptions=True)
                if self.stopping.is_set():
                    return 0
                await self.fail(f"the cluster did not start within {self.args.ready_timeout:.0f} s; see {log_file}",
                                "cluster_start_timeout")
                return 1
            start.result()
        except Exception as e:
            await self.fail(f"the cluster failed to start: {type(e).__name__}: {e}; see {log_file}",
                            "cluster_start_failed")
            return 1
        try:
            await self._call(self.store.update_target, self.ws, self.name, expect_runtime={"supervisor": self.ident},
                             state="running", errors=[], provider_state=None, runtime_merge={
                                 "scheduler_address": self.cluster.scheduler_address,
                                 "dashboard_link": self.cluster.dashboard_link,
                                 "started": utcnow().isoformat()})
            await self.write_snapshot(force=True)
            if self.op:
                await self._call(self.store.finish_operation, self.op, progress="running")
                self.op = None
            await self.watch()
        finally:
            await self.close()
        return 0

    async def start_cluster(self, security) -> None:
        from distributed import LocalCluster

        mem = self.spec.get("memory_limit_mb")
        self.cluster = await LocalCluster(
            name=f"jupyter-compute {self.ws}/{self.name}", asynchronous=True, processes=True,
            n_workers=self.spec.get("min_nodes", 0), threads_per_worker=self.spec.get("threads_per_node", 2),
            memory_limit=mem * 2**20 if mem else "auto", host="127.0.0.1", scheduler_port=0,
            dashboard_address="127.0.0.1:0", protocol="tls://", security=security,
            local_directory=os.path.join(self.dir, "workers"), silence_logs=logging.WARNING)
        self.cluster.scheduler.handlers["jupyter_compute_reserve"] = self.reserve
        self.adaptive = self.cluster.adapt(
            minimum=self.spec.get("min_nodes", 0), maximum=self.spec.get("max_nodes", 1),
            interval=ADAPT_INTERVAL, wait_count=wait_count(self.spec.get("idle_seconds_before_scaledown", 120)))

    def reserve(self, n: int = 0, seconds: float = 60.0, lease: str = "") -> dict:
        """Keep at least ``n`` workers for ``seconds`` (n=0 releases): a cell on N workers at once."""
        if n <= 0:
            self.leases.pop(lease, None)
        else:
            self.leases[lease] = (int(n), time.monotonic() + min(float(seconds), MAX_LEASE))
        self.apply_scale()
        return {"minimum": self.adaptive.minimum, "maximum": self.adaptive.maximum}

    def apply_scale(self) -> None:
        now = time.monotonic()
        self.leases = {k: v for k, v in self.leases.items() if v[1] > now}
        maximum = int(self.spec.get("max_nodes", 1))
        floor = max([int(self.spec.get("min_nodes", 0)), *(n for n, _ in self.leases.values())])
        minimum = min(floor, maximum)
        a = self.adaptive
        if (a.minimum, a.maximum) != (minimum, maximum):
            log.warning("scaling between %s and %s workers", minimum, maximum)
        a.minimum, a.maximum = minimum, maximum
        a.wait_count = wait_count(int(self.spec.get("idle_seconds_before_scaledown", 120)))

    async def watch(self) -> None:
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), POLL)
                break
            except asyncio.TimeoutError:
                pass
            row = await self._call(self.store.get_target, self.ws, self.name)
            if row is None or row["runtime"].get("supervisor") != self.ident:
                return  # deleted, or taken over: nothing here is wanted any more
            self.spec = row["spec"]
            self.apply_scale()
            if self.cluster.scheduler.status.name in ("closing", "closed", "failed"):
                await self._call(self.store.update_target, self.ws, self.name, expect_state="running",
                                 expect_runtime={"supervisor": self.ident}, state="failed", runtime={},
                                 errors=[{"message": "the cluster's scheduler closed", "code": "scheduler_closed",
                                          "at": utcnow().isoformat()}])
                return
            await self.write_snapshot()
        # Stopped by a signal: if no stop operation is recording it, record it here.
        await self._call(self.store.update_target, self.ws, self.name, expect_state="running",
                         expect_runtime={"supervisor": self.ident}, state="stopped", runtime={})

    # -- the workers, as nodes ---------------------------------------------------------------------
    def _ident(self, pid: int | None) -> str | None:
        if not pid:
            return None
        if pid not in self._pids:
            try:
                self._pids[pid] = procs.identity(pid)
            except Exception:
                return None
        return self._pids[pid]

    def snapshot(self) -> tuple[dict, list[dict]]:
        sched = self.cluster.scheduler
        plan = {str(n) for n in self.cluster.plan}
        observed: set[str] = set()
        workers: list[dict] = []
        for addr, ws in list(sched.workers.items()):
            name = str(ws.name)
            observed.add(name)
            if ws.status.name in ("closing_gracefully", "closing", "closed") or name not in plan:
                state = "leaving"
            elif ws.status.name == "paused":
                state = "unusable"
            elif ws.processing or ws.long_running:
                state = "running"
            else:
                state = "idle"
            workers.append({
                "id": addr, "name": name, "state": state, "pid": ws.pid, "ident": self._ident(ws.pid),
                "nthreads": ws.nthreads, "memory_limit": ws.memory_limit,
                "metrics": {"memory": ws.memory.process, "task_counts": {"executing": len(ws.processing)}}})
        for name in sorted(plan - observed):
            workers.append({"id": f"worker-{name}", "name": name, "state": "preparing"})
        counts = counts_of([w["state"] for w in workers], min_nodes=self.spec.get("min_nodes", 0),
                           max_nodes=self.spec.get("max_nodes"))
        return counts.model_dump(), workers

    async def write_snapshot(self, force: bool = False) -> None:
        counts, workers = self.snapshot()
        signature = json.dumps([counts, [(w["id"], w["state"]) for w in workers]])
        if not force and signature == self._written and time.monotonic() - self._written_at < SNAPSHOT_REFRESH:
            return
        self._written, self._written_at = signature, time.monotonic()
        live = {p for p in (w.get("pid") for w in workers) if p}
        self._pids = {p: i for p, i in self._pids.items() if p in live}
        await self._call(self.store.update_target, self.ws, self.name, expect_runtime={"supervisor": self.ident},
                         runtime_merge={"nodes": counts, "workers": workers})

    async def close(self) -> None:
        if self.adaptive is not None:
            self.adaptive.stop(reason="jupyter_compute stop")
        if self.cluster is not None:
            try:
                await asyncio.wait_for(self.cluster.close(), CLOSE_TIMEOUT)
            except Exception:
                log.warning("closing the cluster failed", exc_info=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="jupyter_compute.families.dask.supervisor")
    ap.add_argument("--db", required=True)
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--operation")
    ap.add_argument("--runtime-dir", required=True)
    ap.add_argument("--ready-timeout", type=float, default=120.0)
    args = ap.parse_args(argv)
    # Fork away from the caller: it waits only for this first process, which exits at once,
    # and the supervisor is adopted by init, so no caller ever leaves a zombie behind.
    procs.detach()
    sup = ClusterSupervisor(args)
    try:
        code = asyncio.run(sup.run())
    except Exception:
        try:
            asyncio.run(sup.fail("the cluster supervisor failed: " + traceback.format_exc(limit=3)[-800:],
                                 "supervisor_failed"))
        except Exception:
            pass
        code = 1
    if sup.dir:
        shutil.rmtree(sup.dir, ignore_errors=True)
    # Worker processes and Dask's threads must not keep a dead cluster's supervisor alive.
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
