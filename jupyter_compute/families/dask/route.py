"""The Dask route: a batch route that runs each cell afresh as a task on one worker, or on N distinct workers at once.

Dask does not forward what a task prints, so each cell task captures its own stdout, stderr
and displays and sends them on Dask's event channel, to a topic this route's client
subscribes to; they are relayed into the cell as they arrive, labelled by rank when the cell
runs on several workers. Variables move only with push (scattered before the cell, handed to
it as globals) and pull (fetched from what the cell left on its worker), both through Dask's
own serialisation. Dask cannot stop a running thread: an interrupt cancels the tasks, raises
KeyboardInterrupt in their threads, and restarts a worker that is still busy after a short
grace period, so the cell always ends. A worker that leaves while running the cell ends it
with an error rather than a silent re-run elsewhere or a wait that never ends.

What runs inside the workers is in ``on_worker``.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
import uuid
from typing import Any, Hashable, Mapping

from ...core.aio import within
from ...core.errors import InvalidRequest, Unavailable
from ...core.route import (BatchOutput, Capabilities, ExecutionError, ExecutionResult, ExecutionTimeout, MessageHandler,
                   Route, StdinHandler, TransferError, TransferReport, ipython_traceback)

from .on_worker import FUNCTIONS as _W

log = logging.getLogger(__name__)

#: After an interrupt, how long a cell's thread has to stop before its worker is restarted.
INTERRUPT_GRACE = 1.5
#: How long a worker restart may hold up the end of an interrupted cell (it then goes on unwatched).
RESTART_WAIT = 20.0
#: After the last result, how long output sent just before it may take to arrive.
OUTPUT_GRACE = 5.0
#: How long a cell waits for the workers it needs; an adaptive cluster starts them on demand.
WORKERS_TIMEOUT = 120.0
#: Bound on the small control calls (reservations, forgetting a finished cell's variables).
CONTROL_TIMEOUT = 10.0


# == this side =========================================================================================
async def _awaited(fut):
    return await fut


async def _all_set(events, timeout: float) -> None:
    """Wait until every event is set, or ``timeout`` passes."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    if not waiters:
        return
    try:
        await asyncio.wait(waiters, timeout=timeout)
    finally:
        for w in waiters:
            w.cancel()


class _Run(BatchOutput):
    """One cell on the cluster: its tasks, what their events said, and why it stopped if it did."""

    def __init__(self, route: "DaskRoute", nodes: int, on_message: MessageHandler | None):
        super().__init__(on_message, nodes)
        self.route = route
        self.id = uuid.uuid4().hex
        self.futures: list = []
        self.keys: dict[str, int] = {}
        self.workers: dict[int, str] = {}
        self.threads: dict[int, int] = {}
        self.ended = {r: asyncio.Event() for r in range(nodes)}
        self.results: dict[int, dict] = {}
        self.stop: asyncio.Future = asyncio.get_running_loop().create_future()
        self.stopping: asyncio.Task | None = None
        self.over = False

    # -- what the cell's tasks send ------------------------------------------------------------------
    def on_event(self, msg: dict) -> None:
        rank, kind = msg.get("rank", 0), msg.get("type")
        if kind == "start":
            self.workers[rank], self.threads[rank] = msg["worker"], msg["thread"]
            if self.over:  # started after we stopped waiting (Dask had already sent it): stop it too
                self.route._spawn(self.route._reap(self, {rank: (msg["worker"], msg["thread"])}, note=False))
        elif kind == "end":
            if rank in self.ended:
                if isinstance(msg.get("outcome"), dict) and rank not in self.results:
                    self.results[rank] = msg["outcome"]
                self.ended[rank].set()
        elif self.over:
            return
        elif kind == "stream":
            self.stream(msg.get("name", "stdout"), msg.get("text", ""), rank)
        elif kind == "display":
            md = dict(msg.get("metadata") or {})
            if self.nodes > 1:
                md["jupyter_compute"] = {"rank": rank}
            did = msg.get("display_id")
            self.emit("update_display_data" if msg.get("update") else "display_data",
                      {"data": msg.get("data") or {}, "metadata": md, "transient": {"display_id": did} if did else {}})
        elif kind == "clear_output":
            self.emit("clear_output", {"wait": bool(msg.get("wait"))})

    # -- what happened to the cluster ----------------------------------------------------------------
    def worker_left(self, address: str, keys: set, expected: bool) -> None:
        if self.stop.done() or self.over:
            return
        for rank in range(self.nodes):
            if rank in self.results:
                continue
            key = next((k for k, r in self.keys.items() if r == rank), None)
            if self.workers.get(rank) == address or key in keys:
                why = "it was retired" if expected else "it died or lost its connection"
                self.stop.set_result(("lost", address, rank, why))
                return

    def unfinished(self) -> dict[int, tuple[str, int]]:
        """Ranks that started and have not ended: (worker, thread)."""
        return {r: (self.workers[r], self.threads[r]) for r in self.threads
                if not self.ended[r].is_set() and r in self.workers}


class DaskRoute(Route):
    """Cells on a Dask cluster, as batch tasks; see the module docstring."""

    name = "dask"
    each_cell_runs_as = "a new Dask task"
    capabilities = Capabilities(persistent_namespace=False, stdin=False, interrupt=True, rich_output=True,
                                variables=True, nodes=True)

    def __init__(self, scheduler_address: str, *, security: dict | None = None, managed: bool = False,
                 max_nodes: int | None = None, dashboard_link: str | None = None, target: str = ""):
        self.address = scheduler_address
        self.security_files = security or None
        self.managed = managed
        self.max_nodes = max_nodes
        self.dashboard_link = dashboard_link
        self.target = target
        self._client = None
        self._topic: str | None = None
        self._runs: dict[str, _Run] = {}
        #: Cells that ended recently: a task of theirs that starts late is stopped, not left running.
        self._ended: dict[str, _Run] = {}
        self._staged: dict[str, Any] = {}
        self._last: tuple[str, str] | None = None
        self._background: set[asyncio.Task] = set()
        self._watchers: dict[str, set[asyncio.Future]] = {}
        self._restarting: set[str] = set()
        self._followed: dict[str, int] = {}
        self._listening: set[str] = set()
        #: The last cell's futures, released with the next submit: released alone, that message
        #: would hold the next cell's submit back by the client's batching interval.
        self._releasing: list = []
        # Only a cluster on this machine is surely reachable worker by worker; elsewhere data goes via the scheduler.
        self._direct = True if managed else None

    @property
    def where(self) -> str:
        return f"'{self.target}'" if self.target else self.address

    # -- session -----------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._client is not None and self._client.status == "running"

    @property
    def key(self) -> Hashable:
        return (self.name, self.address, tuple(sorted((self.security_files or {}).items())))

    async def open(self, timeout: float | None = 30.0) -> None:
        if self._client is not None:
            return
        from distributed import Client

        from .scheduler import scheduler_identity, security_of

        timeout = timeout or 30.0
        # Says which address failed, and why, in the terms the backend uses.
        await scheduler_identity(self.address, self.security_files, timeout=min(timeout, 10.0))
        client = Client(self.address, security=security_of(self.security_files), asynchronous=True,
                        set_as_default=False, name="jupyter-compute", timeout=timeout)
        try:
            await within(client, timeout)
        except BaseException as e:
            with contextlib.suppress(BaseException):
                await within(client.close(), 5)
            if isinstance(e, asyncio.CancelledError):
                raise
            raise Unavailable(f"cannot connect to the Dask scheduler of {self.where} at {self.address}: "
                              f"{type(e).__name__}: {e}", reason="unreachable") from None
        self._client = client
        # The scheduler drops a client's own topic when the client leaves: output is not kept for long.
        self._topic = client.id
        client.subscribe_topic(self._topic, self._on_output)
        if threading.current_thread() is not threading.main_thread():
            # A loop in a thread (the magics' own) is still running at exit: leave the cluster politely.
            atexit.register(self._close_at_exit, asyncio.get_running_loop())

    async def close(self) -> None:
        client = self._client
        if client is None:
            return
        for run in list(self._runs.values()):
            if not run.stop.done():
                run.stop.set_result(("closed",))
        self._staged.clear()
        self._release_previous()
        # Released reservations, forgotten variables and restarts still need the connection.
        if self._background:
            await asyncio.wait(list(self._background), timeout=RESTART_WAIT)
        with contextlib.suppress(Exception):
            await within(self._forget_last(client), CONTROL_TIMEOUT)
        self._client = None
        for t in self._background:
            t.cancel()
        for futs in self._watchers.values():
            for f in futs:
                if not f.done():
                    f.set_exception(ExecutionError("the connection to the cluster was closed"))
                    f.exception()
        with contextlib.suppress(Exception):
            atexit.unregister(self._close_at_exit)
        # Unsubscribed before leaving, or the scheduler would try to tell this client that it left.
        for topic in (self._topic, *self._followed):
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(topic)
        self._followed.clear()
        self._listening.clear()
        with contextlib.suppress(Exception):
            await within(client.close(), CONTROL_TIMEOUT)

    def _close_at_exit(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._client is not None and loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.close(), loop).result(5)

    def _ensure_open(self):
        if self._client is None:
            raise ExecutionError("the route is not open")
        if self._client.status != "running":
            raise ExecutionError(f"lost the connection to the Dask scheduler of {self.where} at {self.address}")
        return self._client

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- events ------------------------------------------------------------------------------------
    def _on_output(self, event) -> None:
        _, msg = event
        if isinstance(msg, dict) and "jc" in msg:
            run = self._runs.get(msg["jc"]) or self._ended.get(msg["jc"])
            if run is not None:
                run.on_event(msg)

    def _follow(self, addresses) -> None:
        """Hear of these workers leaving: the scheduler logs it under each worker's own topic."""
        for address in addresses:
            self._followed[address] = self._followed.get(address, 0) + 1
            if self._followed[address] == 1:
                self._client.subscribe_topic(address, lambda event, a=address: self._on_worker(a, event))

    def _listen(self, addresses) -> None:
        """Follow these workers for as long as they are in the cluster. Subscribing goes through the
        client's batched stream: a subscription per cell would hold each task back by its interval."""
        new = [a for a in addresses if a not in self._listening]
        self._listening.update(new)
        self._follow(new)

    def _unfollow(self, addresses) -> None:
        for address in addresses:
            left = self._followed.get(address, 0) - 1
            if left > 0:
                self._followed[address] = left
                continue
            self._followed.pop(address, None)
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.unsubscribe_topic(address)

    def _on_worker(self, address: str, event) -> None:
        _, msg = event
        if not isinstance(msg, dict) or msg.get("action") != "remove-worker":
            return
        keys = set(msg.get("processing-tasks") or ()) | set(msg.get("lost-computed-tasks") or ())
        for run in list(self._runs.values()):
            run.worker_left(address, keys, bool(msg.get("expected")))
        for fut in self._watchers.pop(address, set()):
            if not fut.done():
                fut.set_result(address)
        if address in self._listening:
            self._listening.discard(address)
            self._unfollow([address])

    def _watch(self, address: str) -> asyncio.Future:
        """A future that resolves when the worker leaves."""
        fut = asyncio.get_running_loop().create_future()
        self._watchers.setdefault(address, set()).add(fut)
        self._follow([address])
        return fut

    def _unwatch(self, address: str, fut: asyncio.Future) -> None:
        self._watchers.get(address, set()).discard(fut)
        self._unfollow([address])

    # -- workers -----------------------------------------------------------------------------------
    async def _usable_workers(self) -> dict[str, int]:
        """Running workers (not leaving, not being restarted) and how many tasks each is processing."""
        client = self._client
        identity, processing = await asyncio.gather(client.scheduler.identity(n_workers=-1), client.processing())
        return {addr: len(processing.get(addr) or ()) for addr, w in (identity.get("workers") or {}).items()
                if w.get("status") == "running" and addr not in self._restarting}

    async def _reserve(self, n: int, lease: str) -> None:
        """Raise the managed cluster's floor to ``n`` workers while ``lease`` holds (n=0 lets go)."""
        if not self.managed:
            return
        with contextlib.suppress(Exception):
            await within(self._client.scheduler.jupyter_compute_reserve(
                n=n, seconds=WORKERS_TIMEOUT + 60, lease=lease), CONTROL_TIMEOUT)

    def check_options(self, *, nodes: int = 1, **options: Any) -> None:
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            raise InvalidRequest(f"--nodes takes a whole number of at least 1, not {nodes!r}", field="/nodes")
        self._check_nodes(nodes)

    def _check_nodes(self, n: int) -> None:
        max_nodes = self.max_nodes
        if max_nodes is not None and n > max_nodes:
            raise InvalidRequest(
                f"--nodes {n}: {self.where} scales to at most {max_nodes} worker{'s' if max_nodes != 1 else ''}; "
                f"raise its max_nodes first (jupyter compute update {self.target or 'NAME'} --max-nodes {n})",
                field="/nodes", reason="too_many_nodes")

    async def _workers_for(self, n: int, lease: str, note) -> tuple[list[str], bool]:
        """``n`` distinct workers for a cell, the least busy first, and whether a reservation was taken
        for them (release it with ``_reserve(0, lease)``); waits for an adaptive cluster to grow."""
        self._check_nodes(n)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WORKERS_TIMEOUT
        reserved = False
        while True:
            usable = await self._usable_workers()
            if len(usable) >= n:
                return sorted(usable, key=lambda a: (usable[a], a))[:n], reserved
            if not reserved:
                await self._reserve(n, lease)
                reserved = True
                note(f"waiting for {n} worker{'s' if n != 1 else ''} on {self.where} ({len(usable)} now)")
            if loop.time() > deadline:
                raise ExecutionError(
                    f"the cell needs {n} worker{'s' if n != 1 else ''} at once; {self.where} has {len(usable)} "
                    f"after {WORKERS_TIMEOUT:g} s", reason="not_enough_workers")
            await asyncio.sleep(0.2)

    # -- execution ---------------------------------------------------------------------------------
    async def execute(self, code: str, *, on_message: MessageHandler | None = None,
                      stdin: StdinHandler | None = None, timeout: float | None = None,
                      nodes: int = 1) -> ExecutionResult:
        """Run ``code`` as a fresh task; with ``nodes`` > 1 on that many distinct workers at once.

        Each task sees ``rank`` (0 .. nodes-1) and ``world_size`` (= nodes), and the variables of
        the last ``push``. Output streams to ``on_message`` as kernel-style iopub messages; the
        result is rank 0's. ``stdin`` is not supported (``input()`` fails in the cell).
        """
        self._ensure_open()
        self.check_options(nodes=nodes)
        run = _Run(self, nodes, on_message)
        self._runs[run.id] = run
        try:
            return await within(self._execute(run, code), timeout)
        except asyncio.TimeoutError:
            raise ExecutionTimeout(f"the cell ran longer than {timeout:g} s; it was stopped on {self.where}") from None
        finally:
            run.over = True
            self._runs.pop(run.id, None)
            self._ended[run.id] = run
            while len(self._ended) > 16:
                self._ended.pop(next(iter(self._ended)))

    async def _execute(self, run: _Run, code: str) -> ExecutionResult:
        client = self._client
        previous, self._last = self._last, None
        pushed, self._staged = self._staged, {}
        reserved = forgetting = False
        try:
            # Every rank is pinned to its worker: were that worker to die, Dask would otherwise run the
            # cell again from the start on another one, behind our back.
            workers, reserved = await self._workers_for(run.nodes, run.id, run.note)
            # The last cell's namespace goes with this cell's task on its worker, or on its own.
            forget_with = previous[1] if previous is not None and previous[1] in workers else None
            if previous is not None and forget_with is None:
                forgetting = True
                self._spawn(self._forget(client, *previous))
            new = [w for w in workers if w not in self._listening]
            self._listen(workers)
            for rank in range(run.nodes):
                key = f"jupyter-compute-cell-{run.id}-{rank}"
                run.keys[key] = rank
                run.workers[rank] = workers[rank]
                forget = [previous[0]] if workers[rank] == forget_with else []
                run.futures.append(client.submit(
                    _W["_w_run"], run.id, self._topic, code, pushed, rank, run.nodes, rank == 0, forget, key=key,
                    workers=[workers[rank]], allow_other_workers=False, pure=False, retries=0))
            self._release_previous()
            # A worker that left just before we listened would leave its rank waiting for ever; this
            # is checked, for workers not followed before, while the cell runs rather than before it.
            present = asyncio.ensure_future(self._check_present(run, new))
            try:
                return await self._wait(run)
            finally:
                present.cancel()
        except BaseException as e:
            if not run.futures:  # nothing ran: the pushed variables wait for the next cell
                self._staged = {**pushed, **self._staged}
                if self._last is None and previous is not None and not forgetting:
                    self._last = previous  # and the last cell's namespace stays, for --pull
            elif isinstance(e, asyncio.CancelledError):
                await asyncio.shield(self._stop_run(run, "interrupted"))
            raise
        finally:
            if reserved:
                self._spawn(self._reserve(0, run.id))
            self._releasing.extend(run.futures)

    def _release_previous(self) -> None:
        futures, self._releasing = self._releasing, []
        for fut in futures:
            with contextlib.suppress(Exception):
                fut.release()

    async def _check_present(self, run: _Run, workers: list[str]) -> None:
        if not workers:
            return
        with contextlib.suppress(Exception):
            present = (await self._client.scheduler.identity(n_workers=-1)).get("workers") or {}
            for address in set(workers) - set(present):
                run.worker_left(address, set(), False)

    async def _wait(self, run: _Run) -> ExecutionResult:
        async def outcome(rank: int, fut) -> None:
            from distributed.client import FutureCancelledError

            # The end event may bring the outcome before the task's result could be fetched.
            ended = asyncio.ensure_future(run.ended[rank].wait())
            result = asyncio.ensure_future(_awaited(fut))
            try:
                await asyncio.wait({ended, result}, return_when=asyncio.FIRST_COMPLETED)
                if rank in run.results and not result.done():
                    return
                try:
                    run.results[rank] = await result
                except FutureCancelledError as e:
                    if not run.stop.done():
                        run.stop.set_result(("cancelled", e.reason))
                except Exception as e:  # arguments that would not load on the worker, a KilledWorker, ...
                    run.results[rank] = {"status": "error", "ename": type(e).__name__, "evalue": str(e),
                                         "traceback": [f"{type(e).__name__}: {e}"], "worker": run.workers.get(rank)}
            finally:
                ended.cancel()
                result.cancel()

        waiting = {asyncio.ensure_future(outcome(r, f)) for r, f in enumerate(run.futures)}
        try:
            while waiting:
                done, _ = await asyncio.wait(waiting | {run.stop}, return_when=asyncio.FIRST_COMPLETED)
                waiting -= done
                if run.stop.done():
                    break
        finally:
            for t in waiting:
                t.cancel()
        if run.stop.done():
            return await self._stopped(run)
        # Each task sent its output before its result; wait for it to have arrived too.
        await _all_set(run.ended.values(), OUTPUT_GRACE)
        if run.problems:
            raise run.problems[0]
        return self._result(run)

    def _result(self, run: _Run) -> ExecutionResult:
        failed = [(r, run.results[r]) for r in sorted(run.results) if run.results[r].get("status") != "ok"]
        if failed:
            rank, res = failed[0]
            tb = (ipython_traceback(res.get("ename") or "Error", res.get("evalue") or "", res["frames"])
                  if res.get("frames") else list(res.get("traceback") or []))
            if run.nodes > 1:
                where = f" on {res['worker']}" if res.get("worker") else ""
                tb.insert(0, f"[rank {rank}{where}]")
                if len(failed) > 1:
                    tb.append(f"(ranks {', '.join(str(r) for r, _ in failed[1:])} failed too)")
            return ExecutionResult(status="error", ename=res.get("ename") or "Error", evalue=res.get("evalue") or "",
                                   traceback=tb)
        first = run.results[0]
        self._last = (run.id, first["worker"])
        return ExecutionResult(status="ok", result=first.get("result") or None,
                               result_metadata=first.get("metadata") or {})

    async def _stopped(self, run: _Run) -> ExecutionResult:
        why = run.stop.result()
        if why[0] == "interrupted":
            await self._stop_run(run, "interrupted")
            return ExecutionResult(status="error", ename="KeyboardInterrupt", evalue="",
                                   traceback=[f"KeyboardInterrupt: the cell was stopped on {self.where}"])
        await self._stop_run(run, why[0])
        if why[0] == "lost":
            _, address, rank, reason = why
            on = f" (rank {rank})" if run.nodes > 1 else ""
            raise ExecutionError(
                f"the cell was stopped: worker {address}{on} of {self.where} left the cluster while running it "
                f"({reason}). Dask would run it again from the start elsewhere, repeating what it already did, "
                "so it was cancelled instead; run the cell again.", reason="worker_lost")
        if why[0] == "cancelled":
            raise ExecutionError(f"the cell was cancelled on {self.where} ({why[1]}); if the scheduler went away, "
                                 "check the cluster and run the cell again", reason="cancelled")
        raise ExecutionError("the connection to the cluster was closed while the cell ran")

    async def interrupt(self) -> None:
        """Stop every cell this route is running: see ``_stop_run``."""
        for run in list(self._runs.values()):
            if not run.stop.done():
                run.stop.set_result(("interrupted",))
        await asyncio.gather(*(self._stop_run(r, "interrupted") for r in list(self._runs.values())))

    async def _stop_run(self, run: _Run, why: str) -> None:
        """Cancel the cell's tasks and make sure none keeps running; idempotent."""
        if run.stopping is None:
            run.stopping = asyncio.ensure_future(self._do_stop(run))
        await asyncio.shield(run.stopping)

    async def _do_stop(self, run: _Run) -> None:
        run.over = True
        client = self._client
        if client is None:
            return
        with contextlib.suppress(Exception):
            await within(client.cancel(run.futures, force=True), CONTROL_TIMEOUT)
        await self._reap(run, run.unfinished(), note=True)

    async def _reap(self, run: _Run, busy: dict[int, tuple[str, int]], *, note: bool) -> None:
        """Interrupt the given ranks' threads; restart the workers of those still busy after a grace period."""
        client = self._client
        if not busy or client is None:
            return
        with contextlib.suppress(Exception):
            # A worker that has already left takes its threads with it; asking it would wait for a timeout.
            known = (await within(client.scheduler.identity(n_workers=-1), CONTROL_TIMEOUT))["workers"]
            busy = {r: wt for r, wt in busy.items() if wt[0] in known}
        if not busy:
            return
        by_worker: dict[str, list[int]] = {}
        for worker, thread in busy.values():
            by_worker.setdefault(worker, []).append(thread)
        with contextlib.suppress(Exception):
            await within(asyncio.gather(*(
                client.run(_W["_w_interrupt"], run.id, threads, workers=[w], on_error="return")
                for w, threads in by_worker.items())), CONTROL_TIMEOUT)
        ranks = list(busy)
        await _all_set([run.ended[r] for r in ranks], INTERRUPT_GRACE)
        stuck = sorted({busy[r][0] for r in ranks if not run.ended[r].is_set()})
        if not stuck:
            return
        if note:
            run.note(f"restarting {', '.join(stuck)}: the stopped cell was still running there "
                     "(Dask cannot stop a running thread)")
        await self._restart(stuck, run if note else None)

    async def _restart(self, workers: list[str], run: _Run | None) -> None:
        """End the processes of these workers; their nannies start fresh ones (Dask's restart would wait
        seconds for the stuck thread first). A worker without a nanny cannot be restarted from here."""
        client = self._client
        self._restarting.update(workers)
        watched = {w: self._watch(w) for w in workers}
        try:
            known = (await client.scheduler.identity(n_workers=-1)).get("workers") or {}
            nannied = [w for w in workers if (known.get(w) or {}).get("nanny")]
            alone = [w for w in workers if w in known and w not in nannied]
            if nannied:
                await client.run(_W["_w_exit"], workers=nannied, on_error="ignore")
                await asyncio.wait([watched[w] for w in nannied], timeout=RESTART_WAIT)
            if alone and run is not None:
                run.note(f"cannot restart {', '.join(alone)}: it runs without a nanny, so the stopped code "
                         "runs on there until it returns")
        except Exception as e:
            log.warning("restarting Dask workers %s failed: %s", workers, e)
        finally:
            for w, fut in watched.items():
                self._unwatch(w, fut)
            self._restarting.difference_update(workers)

    # -- variables ---------------------------------------------------------------------------------
    async def push(self, values: Any, *, timeout: float | None = None) -> TransferReport:
        """Send variables to the cluster now; the next cell (every rank of it) gets them as globals."""
        client = self._ensure_open()
        from ...transport.transfer import Payload

        if isinstance(values, Payload):
            from ...transport import in_kernel as _helper
            try:
                values = await asyncio.to_thread(_helper.unpack_values, values.descs, values.frames)
            except _helper.VariableError as e:
                raise TransferError(f"cannot send variable '{e.args[0]}': {e.args[1]}", variable=e.args[0]) from None
        values = dict(values)
        if not values:
            return TransferReport("push", [], 0, 0.0, self.target)
        names = list(values)
        await asyncio.to_thread(_check_picklable, values)
        t0 = time.monotonic()

        async def scatter():
            if not await self._usable_workers():
                # An adaptive cluster scaled to zero: data needs a worker to live on.
                lease = uuid.uuid4().hex
                try:
                    await self._workers_for(1, lease, lambda text: None)
                finally:
                    self._spawn(self._reserve(0, lease))  # harmless when none was taken
            return await client.scatter([box(values[n]) for n in names], hash=False, direct=self._direct)

        try:
            futures = await within(scatter(), timeout)
        except asyncio.TimeoutError:
            raise TransferError(f"pushing to {self.where} did not finish within {timeout:g} s") from None
        self._staged.update(zip(names, futures))
        from dask.sizeof import sizeof
        nbytes = sum(sizeof(values[n]) for n in names)
        return TransferReport("push", names, nbytes, time.monotonic() - t0, self.target)

    async def pull(self, names: list[str], *, timeout: float | None = None) -> tuple[dict[str, Any], TransferReport]:
        """Fetch variables the last successful cell (its rank 0) left on its worker."""
        client = self._ensure_open()
        names = list(names)
        if not names:
            return {}, TransferReport("pull", [], 0, 0.0, self.target)
        if self._last is None:
            raise TransferError(f"nothing to pull: no cell has finished successfully on {self.where} since it "
                                "last connected", variable=names[0])
        run_id, worker = self._last
        t0 = time.monotonic()
        lost = self._watch(worker)
        fut = client.submit(_W["_w_fetch"], run_id, names, key=f"jupyter-compute-pull-{uuid.uuid4().hex}",
                            workers=[worker], allow_other_workers=False, pure=False)
        fetch = asyncio.ensure_future(client.gather(fut, direct=self._direct))
        try:
            if worker not in await self._usable_workers() and worker not in self._restarting:
                raise TransferError(f"cannot pull {', '.join(names)}: worker {worker}, which ran the cell, has left "
                                    f"{self.where}", variable=names[0])
            done, _ = await asyncio.wait({fetch, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                raise TransferError(f"pulling from {self.where} did not finish within {timeout:g} s")
            if fetch not in done:
                raise TransferError(f"cannot pull {', '.join(names)}: worker {worker}, which ran the cell, left "
                                    f"{self.where} during the transfer", variable=names[0])
            reply = fetch.result()
        finally:
            self._unwatch(worker, lost)
            if not fetch.done():
                fetch.cancel()
                with contextlib.suppress(BaseException):
                    await client.cancel([fut], force=True)
            fut.release()
        if reply.get("gone"):
            raise TransferError(f"cannot pull {', '.join(names)}: the cell's variables are no longer on {worker} "
                                "(the worker was restarted, or later cells replaced them)", variable=names[0])
        for name in reply.get("missing") or []:
            raise TransferError(f"cannot pull '{name}': the cell did not define it on {self.where}", variable=name)
        for name, why in (reply.get("unpicklable") or {}).items():
            raise TransferError(f"cannot pull '{name}': it cannot be pickled on the worker ({why})", variable=name)
        values = {name: boxed["value"] for name, boxed in reply["values"].items()}
        from dask.sizeof import sizeof
        nbytes = sum(sizeof(v) for v in values.values())
        return values, TransferReport("pull", names, nbytes, time.monotonic() - t0, self.target)

    async def _forget(self, client, run_id: str, worker: str) -> None:
        with contextlib.suppress(Exception):
            await within(client.run(_W["_w_forget"], [run_id], workers=[worker], on_error="ignore"),
                                   CONTROL_TIMEOUT)

    async def _forget_last(self, client) -> None:
        last, self._last = self._last, None
        if last is not None:
            await self._forget(client, *last)


def box(value: Any) -> dict[str, Any]:
    """A variable as it travels through Dask, in a one-key dict. Dask's wire format serialises a
    list, tuple or set at the top of a message one element at a time (a million numbers took 35 s to
    scatter and 35 s more to reach a second worker); in a dict it is pickled whole (0.04 s), while
    an array inside still gets Dask's own zero-copy serialisation."""
    return {"value": value}


def _check_picklable(values: Mapping[str, Any]) -> None:
    """Name the variable that cannot travel, before anything is sent."""
    import cloudpickle

    for name, value in values.items():
        try:
            cloudpickle.dumps(value, protocol=5, buffer_callback=lambda b: None)
        except Exception as e:
            raise TransferError(f"cannot send variable '{name}': it cannot be pickled ({type(e).__name__}: {e})",
                                variable=name) from None
