"""The Azure ML job route: a batch route that sends each cell as a command job to a compute
cluster or an attached Kubernetes compute, and follows it until Azure says it is over.

Each cell runs afresh in the job's environment; state moves only with push (uploaded to the
workspace's default datastore and mounted as the job's input) and pull (written by the job to its
output folder, then downloaded and loaded here). While the job runs, the cell shows its status
as Azure reports each change, a link to it in Studio, and its user log as it grows in the
artifact store. An interrupt cancels the job and the cell ends once Azure reports it Canceled; a
failed job raises with Azure's message and the end of its log.
"""
from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import pickle
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any, Hashable

from ...core.aio import within
from ...core.errors import ComputeError, InvalidRequest
from ...core.route import (BatchOutput, Capabilities, ExecutionError, ExecutionResult, ExecutionTimeout, MessageHandler, Route,
                   StdinHandler, TransferError, TransferReport, ipython_traceback)

if TYPE_CHECKING:
    from .jobs import AzureJobs

log = logging.getLogger(__name__)

#: How long an interrupted cell waits for Azure to report its job Canceled.
CANCEL_WAIT = 120.0
#: Reads of the job's status that may fail in a row before the cell gives up following it.
MAX_POLL_FAILURES = 5
#: Lines of the user log a failed job's error shows.
TAIL_LINES = 30
#: After the job ends, how long its last log lines may take to reach the artifact store.
LOG_GRACE = 3.0


class _Cell(BatchOutput):
    """What one cell shows while its job runs: notes, the status line, and the log."""

    def __init__(self, on_message: MessageHandler | None, nodes: int):
        super().__init__(on_message, nodes)
        self.display_id = uuid.uuid4().hex
        self.shown = False

    def status(self, job: str, compute: str, history: list[str], studio: str, since: float) -> None:
        took = time.monotonic() - since
        trail = " → ".join(history)
        text = f"Azure ML job {job} on {compute}: {trail} ({took:.0f} s)\nStudio: {studio}"
        link = html.escape(studio, quote=True)
        markup = (f"<div class='jupyter-compute-job'>Azure ML job <b>{html.escape(job)}</b> on "
                  f"{html.escape(compute)}: {html.escape(trail)} ({took:.0f} s) &middot; "
                  f"<a href='{link}' target='_blank' rel='noopener'>open in Studio</a></div>")
        self.emit("update_display_data" if self.shown else "display_data",
                  {"data": {"text/plain": text, "text/html": markup}, "metadata": {},
                   "transient": {"display_id": self.display_id}})
        self.shown = True

    def log(self, rank: int | None, text: str) -> None:
        self.stream("stdout", text, rank)


class _Job:
    """One submitted job and how its cell is following it."""

    def __init__(self, name: str, job: dict, studio: str, cell: _Cell):
        self.name = name
        self.cell = cell
        self.job = job
        self.studio = studio
        self.history: list[str] = []
        self.started = time.monotonic()
        self.tail: Any = None
        self.log_problem: str | None = None
        self.interrupted = False
        self.cancelling: asyncio.Task | None = None
        self.wake = asyncio.Event()

    @property
    def status(self) -> str:
        return (self.job.get("properties") or {}).get("status") or "Unknown"


class AzureMLJobRoute(Route):
    """Cells as Azure ML command jobs; see the module docstring."""

    name = "azureml-job"
    each_cell_runs_as = "a new Azure ML job"
    capabilities = Capabilities(persistent_namespace=False, stdin=False, interrupt=True, rich_output=False,
                                variables=True, nodes=True, environment=True)
    declares_pull = True

    def __init__(self, jobs: "AzureJobs", compute: str, *, kind: str = "", max_nodes: int | None = None):
        #: The workspace's live job service the route submits through.
        self.jobs = jobs
        self.compute = compute
        self.kind = kind
        self.max_nodes = max_nodes
        self.target = compute
        self._open = False
        #: Where pushed variables wait for the next job: (datastore, folder, names).
        self._staged: tuple[Any, str, list[str]] | None = None
        #: The last job that completed: what it left for pull.
        self._last: dict[str, Any] | None = None
        self._current: _Job | None = None

    @property
    def where(self) -> str:
        return f"'{self.target}'"

    @property
    def poll_interval(self) -> float:
        # Capped, so that the log keeps flowing even where long operations are polled slowly.
        return min(3.0, max(0.02, float(self.jobs.settings.poll_interval)))

    # -- session -----------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def key(self) -> Hashable:
        return (self.name, self.compute, id(self.jobs))

    async def open(self, timeout: float | None = 60.0) -> None:
        """Check that the compute is there: nothing else stays open between cells."""
        if self._open:
            return
        try:
            await within(self.jobs.compute(self.compute), timeout)
        except asyncio.TimeoutError:
            raise ExecutionError(f"Azure did not answer within {timeout:g} s about {self.where}") from None
        self._open = True

    async def close(self) -> None:
        self._open = False
        self._staged = None
        self._last = None

    def _ensure_open(self) -> None:
        if not self._open:
            raise ExecutionError("the route is not open")

    # -- execution ---------------------------------------------------------------------------------
    async def execute(self, code: str, *, on_message: MessageHandler | None = None,
                      stdin: StdinHandler | None = None, timeout: float | None = None, nodes: int = 1,
                      environment: str | None = None, pull: list[str] | None = None) -> ExecutionResult:
        """Run ``code`` as a command job and follow it to its end.

        ``nodes`` > 1 runs it on that many nodes at once (PyTorch distribution): each sees
        ``rank`` and ``world_size``. ``environment`` names a curated or registered environment
        (default: the ``job_environment`` setting). ``pull`` names the variables the job must
        save for ``pull`` afterwards: a job's namespace is gone once it ends. The log streams to
        ``on_message`` as stream messages, the status as one display that is updated. ``stdin``
        is not supported: ``input()`` fails in the job.
        """
        self._ensure_open()
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            raise InvalidRequest(f"--nodes takes a whole number of at least 1, not {nodes!r}", field="/nodes")
        if self.max_nodes is not None and nodes > self.max_nodes:
            raise InvalidRequest(
                f"--nodes {nodes}: {self.where} scales to at most {self.max_nodes} node"
                f"{'s' if self.max_nodes != 1 else ''}; raise its max_nodes first "
                f"(jupyter compute update {self.target} --max-nodes {nodes})", field="/nodes",
                reason="too_many_nodes")
        pull = list(dict.fromkeys(pull or []))
        for name in pull:
            if not name.isidentifier():
                raise TransferError(f"--pull: {name!r} is not a variable name", variable=name)
        cell = _Cell(on_message, nodes)
        try:
            return await within(self._run(code, cell, nodes, environment, pull), timeout)
        except asyncio.TimeoutError:
            raise ExecutionTimeout(f"the cell ran longer than {timeout:g} s; its job on {self.where} was "
                                   "canceled") from None

    async def _run(self, code: str, cell: _Cell, nodes: int, environment: str | None,
                   pull: list[str]) -> ExecutionResult:
        from . import jobs as J

        # Everything that can refuse the cell does so before anything is created in Azure.
        environment_id = await self.jobs.resolve_environment(environment)
        compute = await self.jobs.compute(self.compute)
        try:
            notice = await self.jobs.busy_notice(self.compute, compute)
        except ComputeError as e:  # knowing the queue is a courtesy, never a reason not to run
            log.debug("busy check of %s skipped: %s", self.compute, e.message)
            notice = None
        if notice:
            cell.note(notice)
        name = J.job_name(self.target)
        ds = await self.jobs.datastore()
        inline = J.fits_inline(code)
        code_id = None
        if not inline:
            code_id = await self.jobs.upload_code({J.RUNNER_FILE: J.RUNNER_SOURCE.encode(),
                                                   J.CELL_FILE: code.encode()})
        staged, self._staged = self._staged, None
        results = f"jupyter_compute/jobs/{name}/{J.OUTPUT}"
        inputs = {J.INPUT: {"jobInputType": "uri_folder", "uri": J.datastore_uri(staged[0].name, staged[1]),
                            "mode": "ReadOnlyMount"}} if staged else {}
        outputs = {J.OUTPUT: {"jobOutputType": "uri_folder", "uri": J.datastore_uri(ds.name, results),
                              "mode": "ReadWriteMount"}}
        first = next((ln.strip() for ln in code.splitlines() if ln.strip()), "")
        body = J.command_job_body(
            compute_id=compute.get("id") or self.jobs.compute_id(self.compute), environment_id=environment_id,
            command=J.command_for(code if inline else None, pull=pull, inputs=bool(staged)), code_id=code_id,
            inputs=inputs, outputs=outputs, nodes=nodes, display_name=f"cell: {first[:80]}" if first else "cell",
            tags={"jupyter_compute": "cell", "jupyter_compute.target": self.target},
            description="A notebook cell sent with %%compute.")
        try:
            job = await self.jobs.submit(name, body)
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                # The PUT may have reached Azure before the interrupt: cancel what it may have made.
                await asyncio.shield(self._cancel_unseen(name))
            elif staged is not None:  # nothing ran: the pushed variables wait for the next cell
                self._staged = staged
            raise
        run = _Job(name, job if isinstance(job, dict) and job.get("properties") else {"name": name, "properties": {
            "status": "NotStarted"}}, "", cell)
        run.studio = self.jobs.studio_url(run.job)
        self._current = run
        try:
            status = await self._follow(run, cell)
            return await self._outcome(run, cell, status, ds, results, pull)
        except asyncio.CancelledError:
            run.interrupted = True
            await self._cancel(run, cell)
            raise
        finally:
            self._current = None

    async def _follow(self, run: _Job, cell: _Cell) -> str:
        """Show the job's status and log until Azure reports it over; returns the final status."""
        failures = 0
        while True:
            self._record(run, cell)
            await self._read_log(run, cell)
            if run.status in {"Completed", "Failed", "Canceled"}:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await within(run.wake.wait(), self.poll_interval)
            run.wake.clear()
            if run.cancelling is not None:
                await asyncio.shield(run.cancelling)
                continue
            try:
                run.job = await self.jobs.get(run.name)
                failures = 0
            except ComputeError as e:
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    raise ExecutionError(
                        f"lost track of job {run.name} on {self.where} ({e.message}); it may still be running: "
                        f"{run.studio}", reason="job_unreachable") from e
        # The last lines reach the artifact store as the job finalizes: give them a moment.
        deadline = time.monotonic() + LOG_GRACE
        while await self._read_log(run, cell) and time.monotonic() < deadline:
            await asyncio.sleep(min(self.poll_interval, 0.5))
        return run.status

    def _record(self, run: _Job, cell: _Cell) -> None:
        if not run.history or run.history[-1] != run.status:
            run.history.append(run.status)
            cell.status(run.name, self.compute, run.history, run.studio, run.started)

    async def _read_log(self, run: _Job, cell: _Cell) -> bool:
        """Relay what is new in the user log; whether anything was."""
        if run.log_problem is not None:
            return False
        try:
            if run.tail is None:
                run.tail = await self.jobs.log_tail(run.job)
            pieces = await within(run.tail.read(), 60.0)
        except (ComputeError, asyncio.TimeoutError, OSError) as e:
            run.log_problem = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            cell.note(f"cannot read the job's log from the artifact store ({run.log_problem}); "
                      f"see it in Studio: {run.studio}")
            return False
        except Exception as e:  # storage errors: follow the job without its log rather than fail it
            from azure.core.exceptions import AzureError
            if not isinstance(e, AzureError):
                raise
            run.log_problem = str(e).splitlines()[0] if str(e) else type(e).__name__
            cell.note(f"cannot read the job's log from the artifact store ({run.log_problem}); "
                      f"see it in Studio: {run.studio}")
            return False
        for rank, text in pieces:
            cell.log(rank, text)
        return bool(pieces)

    async def _outcome(self, run: _Job, cell: _Cell, status: str, ds: Any, results: str,
                       pull: list[str]) -> ExecutionResult:
        from . import jobs as J

        if cell.problems:
            raise cell.problems[0]
        if status == "Canceled":
            if run.interrupted:
                return ExecutionResult(status="error", ename="KeyboardInterrupt", evalue="",
                                       traceback=[f"KeyboardInterrupt: job {run.name} on {self.where} was canceled"])
            raise ExecutionError(f"job {run.name} on {self.where} was canceled in Azure before it finished; "
                                 f"see {run.studio}", reason="job_canceled")
        wanted = [J.RESULT_FILE, J.JOB_FILE, J.ERROR_FILE] + [f"{n}.pkl" for n in pull]
        t0 = time.monotonic()
        try:
            files = await self.jobs.download(ds, results, wanted)
        except ComputeError as e:
            if status != "Failed":
                raise
            log.debug("outputs of failed job %s unavailable: %s", run.name, e.message)
            files = {}
        seconds = time.monotonic() - t0
        report = _load_json(files.get(J.JOB_FILE)) or {}
        if status == "Failed":
            return await self._failure(run, _load_json(files.get(J.ERROR_FILE)))
        result = _load_json(files.get(J.RESULT_FILE))
        self._last = {"job": run.name, "requested": pull, "report": report, "seconds": seconds,
                      "values": {n: files[f"{n}.pkl"] for n in pull if f"{n}.pkl" in files}}
        return ExecutionResult(status="ok", result=result or None)

    async def _failure(self, run: _Job, error: dict | None) -> ExecutionResult:
        azure = await self.jobs.run_error(run.name)
        message = azure[1] if azure else f"Azure reports job {run.name} as Failed"
        tail = run.tail.tail(TAIL_LINES) if run.tail else []
        lines = [f"Azure ML job {run.name} on {self.where} failed: {message}", f"Studio: {run.studio}"]
        ename = (error or {}).get("ename") or "AzureMLJobFailed"
        evalue = message if not error else f"{error.get('evalue', '')} (Azure: {message})"
        if error and error.get("frames"):
            # The cell's own exception, shown as IPython shows one; its output was shown as it came.
            return ExecutionResult(status="error", ename=ename, evalue=evalue, traceback=[
                *ipython_traceback(ename, error.get("evalue", ""), error["frames"]), "", *lines])
        if tail:
            lines += [f"--- last {len(tail)} lines of user_logs/std_log.txt ---", *tail]
        elif run.log_problem:
            lines.append(f"(the log could not be read: {run.log_problem})")
        return ExecutionResult(status="error", ename=ename, evalue=evalue, traceback=lines)

    # -- interrupt ---------------------------------------------------------------------------------
    async def interrupt(self) -> None:
        """Cancel the running cell's job; the cell ends once Azure reports it Canceled."""
        run = self._current
        if run is None:
            return
        run.interrupted = True
        await self._cancel(run, run.cell)

    async def _cancel(self, run: _Job, cell: _Cell | None) -> None:
        """Ask Azure to cancel the job and wait, bounded, until it says Canceled; idempotent."""
        if run.cancelling is None:
            run.cancelling = asyncio.ensure_future(self._do_cancel(run, cell))
            run.wake.set()
        await asyncio.shield(run.cancelling)

    async def _cancel_unseen(self, name: str) -> None:
        with contextlib.suppress(ComputeError, asyncio.TimeoutError):
            await within(self.jobs.cancel(name), 30.0)

    async def _do_cancel(self, run: _Job, cell: _Cell | None) -> None:
        if run.status in {"Completed", "Failed", "Canceled"}:
            return
        if cell is not None:
            cell.note(f"canceling job {run.name} in Azure ...")
        try:
            await self.jobs.cancel(run.name)
        except ComputeError as e:
            log.warning("cancel of job %s refused: %s", run.name, e.message)
            if cell is not None:
                cell.note(f"Azure refused to cancel job {run.name}: {e.message}")
        deadline = time.monotonic() + CANCEL_WAIT
        while time.monotonic() < deadline:
            with contextlib.suppress(ComputeError):
                run.job = await self.jobs.get(run.name)
            if cell is not None:
                self._record(run, cell)
                await self._read_log(run, cell)
            if run.status in {"Completed", "Failed", "Canceled"}:
                return
            await asyncio.sleep(self.poll_interval)
        if cell is not None:
            cell.note(f"Azure has not reported job {run.name} Canceled after {CANCEL_WAIT:g} s (it is "
                      f"{run.status}); see {run.studio}")

    # -- variables ---------------------------------------------------------------------------------
    async def push(self, values: Any, *, timeout: float | None = None) -> TransferReport:
        """Upload variables to the default datastore now; the next job gets them as its input and
        sees them as globals (every rank of it)."""
        self._ensure_open()
        from . import jobs as J
        from ...transport.transfer import Payload, _cloudpickle_source

        payload = values if isinstance(values, Payload) else await asyncio.to_thread(Payload.from_values, dict(values))
        if not payload.descs:
            return TransferReport("push", [], 0, 0.0, self.target)

        def files() -> dict[str, bytes]:
            out, i = {}, 0
            for d in payload.descs:
                out[d["name"] + J.PUSH_SUFFIX] = J.pack_frames(payload.frames[i:i + d["frames"]])
                i += d["frames"]
            if payload.needs_cloudpickle:
                out[J.CLOUDPICKLE_FILE] = _cloudpickle_source().encode()
            return out

        t0 = time.monotonic()

        async def upload() -> None:
            ds = await self.jobs.datastore()
            staged = self._staged or (ds, f"jupyter_compute/push/{uuid.uuid4().hex}", [])
            data = await asyncio.to_thread(files)
            await self.jobs.upload(staged[0], {f"{staged[1]}/{k}": v for k, v in data.items()}, action="push")
            self._staged = (staged[0], staged[1], list(dict.fromkeys(staged[2] + payload.names)))
        try:
            await within(upload(), timeout)
        except asyncio.TimeoutError:
            raise TransferError(f"pushing to {self.where} did not finish within {timeout:g} s") from None
        return TransferReport("push", payload.names, payload.nbytes, time.monotonic() - t0, self.target)

    async def pull(self, names: list[str], *, timeout: float | None = None) -> tuple[dict[str, Any], TransferReport]:
        """The variables the last completed job saved: each must have been named in ``execute``'s
        ``pull`` (the job's namespace is gone once it ends)."""
        self._ensure_open()
        names = list(names)
        if not names:
            return {}, TransferReport("pull", [], 0, 0.0, self.target)
        last = self._last
        if last is None:
            raise TransferError(f"nothing to pull: no job has completed on {self.where} since it was opened",
                                variable=names[0])
        report = last["report"]
        for name in names:
            if name not in last["requested"]:
                raise TransferError(f"cannot pull '{name}': job {last['job']} did not save it. A job's variables "
                                    "are gone once it ends, so name them with --pull when the cell runs.",
                                    variable=name)
            if name in (report.get("missing") or []):
                raise TransferError(f"cannot pull '{name}': the cell did not define it in job {last['job']}",
                                    variable=name)
            why = (report.get("unpicklable") or {}).get(name)
            if why:
                raise TransferError(f"cannot pull '{name}': it cannot be pickled in the job ({why})", variable=name)
            if name not in last["values"]:
                raise TransferError(f"cannot pull '{name}': job {last['job']} left no output for it", variable=name)
        there = ".".join(str(x) for x in (report.get("python") or [])) or "unknown"

        def load() -> dict[str, Any]:
            out = {}
            for name in names:
                try:
                    out[name] = pickle.loads(last["values"][name])
                except Exception as e:
                    here = ".".join(map(str, sys.version_info[:3]))
                    raise TransferError(
                        f"cannot load '{name}' pulled from job {last['job']}: {type(e).__name__}: {e} (the job ran "
                        f"Python {there}, this notebook runs {here})", variable=name) from None
            return out
        t0 = time.monotonic()
        values = await asyncio.to_thread(load)
        nbytes = sum(len(last["values"][n]) for n in names)
        return values, TransferReport("pull", names, nbytes, last["seconds"] + time.monotonic() - t0, self.target)


def _load_json(data: bytes | None) -> Any:
    import json

    if not data:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError:
        return None


__all__ = ["AzureMLJobRoute"]
