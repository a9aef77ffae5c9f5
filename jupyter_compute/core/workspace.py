"""The one API of jupyter_compute: workspaces and the targets in them.

``Compute`` holds the settings, the store and the workspaces of this user; a ``Workspace``
validates each request before anything runs, records long operations in the store (so any
process can follow them and a second one on the same target is refused), calls the backend
that owns the target's kind, and opens the routes cells travel by (``open_route``). The REST
handlers, the CLI, the magics, the widgets and the kernel provisioner all go through here;
none of them imports another.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from datetime import datetime
from typing import Any, Awaitable, Callable, TypeVar

from traitlets import TraitError
from traitlets.config import Config

from . import processes as procs
from .backend import Backend, KindSpec, OperationContext, Outcome, SpecChanged, StillRunning
from .config import ComputeConfig, load_config
from .errors import (BackendRefused, ComputeError, ConfirmationRequired, Conflict, InvalidConfig, InvalidRequest,
                     NotFound)
from .kernels import KernelspecMemory, TargetKernel, end_local_kernel, orphaned_kernels, sync_kernelspecs
from .registry import Family, WorkspaceProvider, load_families
from .route import Route
from .models import KindInfo, Node, Operation, Size, State, Target, Usage, WorkspaceInfo, utcnow
from .store import AsyncStore, Store

log = logging.getLogger(__name__)

ProgressFn = Callable[[Operation], Any]
C = TypeVar("C")

LOCAL_WORKSPACE = "local"
#: Times an update is made again when another writer changed the target in between.
UPDATE_TRIES = 20


class Settings:
    """The traitlets configurables every backend reads, built from one Config."""

    def __init__(self, config: Config):
        self.config = config
        self.compute = ComputeConfig(config=config)
        self._configurables: dict[type, Any] = {}

    def of(self, cls: type[C]) -> C:
        """A family's own settings (a ``Configurable``), read from the same Config, made once."""
        inst = self._configurables.get(cls)
        if inst is None:
            try:
                inst = self._configurables[cls] = cls(config=self.config)
            except TraitError as e:
                raise InvalidConfig(str(e)) from None
        return inst


def is_stale(op: dict) -> bool:
    return not procs.alive(op.get("owner"))


class Workspace:
    def __init__(self, ws_id: str, kind: str, description: str, store: AsyncStore, settings: Settings,
                 backends: list[Backend], properties: dict | None = None):
        self.id = ws_id
        self.kind = kind
        self.description = description
        self.store = store
        self.settings = settings
        self.backends = backends
        self.properties = properties or {}
        self._kinds: dict[str, tuple[Backend, KindSpec]] = {
            k: (b, ks) for b in backends for k, ks in b.kinds.items()}
        self._tasks: set[asyncio.Task] = set()
        self._contexts: dict[asyncio.Task, OperationContext] = {}
        self._owner = procs.identity()
        self._start_slots = asyncio.Semaphore(max(1, settings.compute.max_concurrent_starts))
        self._slot_holders: set[asyncio.Task] = set()
        #: Called once an operation of this process has changed a target (the kernelspecs follow).
        self.on_targets_changed: Callable[[], Any] | None = None
        #: Routes this process opened, by target, reused while their key is unchanged.
        self._routes: dict[str, Route] = {}
        self._route_locks: dict[str, asyncio.Lock] = {}

    def info(self, default: bool = False) -> WorkspaceInfo:
        return WorkspaceInfo(id=self.id, kind=self.kind, description=self.description, default=default,
                             properties=self.properties)

    # -- kinds -------------------------------------------------------------------------------------
    def kinds(self) -> list[KindInfo]:
        return [ks.info() for _, ks in self._kinds.values()]

    def kind_spec(self, kind: Any) -> KindSpec:
        """The kind's description; a 400 naming the known kinds when there is no such kind."""
        return self._kind(kind)[1]

    def _kind(self, kind: Any) -> tuple[Backend, KindSpec]:
        if not isinstance(kind, str) or kind not in self._kinds:
            for b in self.backends:
                if isinstance(kind, str) and kind in b.retired_kinds:
                    raise InvalidRequest(b.retired_kinds[kind], field="/kind", reason="retired_kind")
            known = ", ".join(sorted(self._kinds))
            raise InvalidRequest(f"unknown kind {kind!r} in workspace '{self.id}'; known kinds: {known}",
                                 field="/kind", reason="unknown_kind")
        return self._kinds[kind]

    # -- reading -----------------------------------------------------------------------------------
    async def list(self) -> list[Target]:
        rows = await self.store.list_targets(self.id)
        by_backend: dict[int, list[dict]] = {id(b): [] for b in self.backends}
        for r in rows:
            pair = self._kinds.get(r["kind"])
            if pair:
                by_backend[id(pair[0])].append(r)
        out: list[Target] = []
        for b in self.backends:
            out.extend(await b.list_targets(by_backend[id(b)]))
        return out

    async def _locate(self, name: str) -> tuple[Backend, Target]:
        if not isinstance(name, str) or not name:
            raise InvalidRequest("a target name is required", field="/name")
        row = await self.store.get_target(self.id, name)
        for b in self.backends:
            if row is not None and row["kind"] not in b.kinds:
                continue
            t = await b.get_target(name, row)
            if t is not None:
                return b, t
        raise NotFound(f"no target named '{name}' in workspace '{self.id}'", reason="unknown_target")

    async def get(self, name: str) -> Target:
        return (await self._locate(name))[1]

    async def kernel_specs(self) -> list[tuple[str, list]]:
        """(target, the kernels it offers) for each stored target of this workspace."""
        return self.kernel_specs_of(await self.store.list_targets(self.id))

    def kernel_specs_of(self, rows: list[dict]) -> list[tuple[str, list]]:
        """(target, the kernels it offers) for each of these stored rows; reads nothing else, so it
        may run off the event loop."""
        out = []
        for row in rows:
            pair = self._kinds.get(row["kind"])
            if pair is not None:
                infos = pair[0].kernel_specs(row)
                if infos:
                    out.append((row["name"], infos))
        return out

    async def field_choices(self, kind: Any, field: str) -> dict[str, Any]:
        """What to offer for a spec field of ``kind`` (for example the key files a key field can name)."""
        backend, _ = self._kind(kind)
        choices = await backend.field_choices(kind, field)
        if choices is None:
            raise NotFound(f"kind '{kind}' offers no choices for {field}", field=f"/{field}", reason="no_choices")
        return choices

    async def nodes(self, name: str) -> list[Node]:
        b, t = await self._locate(name)
        return await b.nodes(t)

    async def sizes(self) -> list[Size]:
        out: list[Size] = []
        for b in self.backends:
            out.extend(await b.sizes())
        return out

    async def usage(self) -> list[Usage]:
        out: list[Usage] = []
        for b in self.backends:
            out.extend(await b.usage())
        return out

    async def jobs(self, target: str | None = None, *, top: int = 20) -> list[dict]:
        """Recent jobs, newest first; of one target when named."""
        if not isinstance(top, int) or not 1 <= top <= 200:
            raise InvalidRequest("top: give a number of jobs from 1 to 200", field="/top")
        if target is not None:
            b, t = await self._locate(target)
            return await b.list_jobs(t.name, top=top)
        out: list[dict] = []
        for b in self.backends:
            try:
                out.extend(await b.list_jobs(None, top=top))
            except InvalidRequest:
                if len(self.backends) == 1:
                    raise
        if not out and all(type(b).list_jobs is Backend.list_jobs for b in self.backends):
            raise InvalidRequest(f"workspace '{self.id}' runs no jobs; jobs are cells sent to a compute cluster "
                                 "that runs each cell as a job", reason="unsupported_operation")
        return out[:top]

    async def job(self, name: str, *, log_lines: int = 200) -> dict:
        """One job, with the end of its log."""
        if not isinstance(name, str) or not name:
            raise InvalidRequest("a job name is required", field="/name")
        if not isinstance(log_lines, int) or not 0 <= log_lines <= 10_000:
            raise InvalidRequest("lines: give a number of log lines from 0 to 10000", field="/lines")
        for b in self.backends:
            if type(b).get_job is not Backend.get_job:
                return await b.get_job(name, log_lines=log_lines)
        raise InvalidRequest(f"workspace '{self.id}' runs no jobs; jobs are cells sent to a compute cluster that runs each cell as a job",
                             reason="unsupported_operation")

    async def cancel_job(self, name: str, *, wait: bool = True,
                         progress: Callable[[str], Any] | None = None) -> dict:
        """Cancel a job (one that has already ended is left as it is, and says so); with ``wait``,
        follow the cancellation until the job has ended."""
        if not isinstance(name, str) or not name:
            raise InvalidRequest("a job name is required", field="/name")
        for b in self.backends:
            if type(b).cancel_job is not Backend.cancel_job:
                return await b.cancel_job(name, wait=wait, progress=progress)
        raise InvalidRequest(f"workspace '{self.id}' runs no jobs; jobs are cells sent to a compute cluster that "
                             "runs each cell as a job", reason="unsupported_operation")

    # -- routes ------------------------------------------------------------------------------------
    async def open_route(self, name: str, *, start: bool = False, progress: ProgressFn | None = None,
                         timeout: float | None = None) -> Route:
        """An open route to target ``name``, the one way every face reaches a target's code.

        A running target, the common case, costs one look at the store; its open route is reused
        while the target's connection (``Route.key``) is unchanged. A target that is not running
        is started first when ``start`` is given (following a start already under way rather than
        beginning a second one), with each step to ``progress``; otherwise the refusal says why
        and what to do. ``timeout`` bounds how long the route has to connect.
        """
        route = await self.route(name, start=start, progress=progress)
        lock = self._route_locks.setdefault(route.target, asyncio.Lock())
        async with lock:
            cached = self._routes.get(route.target)
            if cached is not None:
                if cached.is_open and cached.key is not None and cached.key == route.key:
                    return cached
                del self._routes[route.target]
                await cached.close()
            await route.open(timeout=timeout)
            self._routes[route.target] = route
            return route

    async def route(self, name: str, *, start: bool = False, progress: ProgressFn | None = None) -> Route:
        """A new, unopened route to ``name`` (started first under ``start``), for a caller that
        wants a session of its own; ``open_route`` is the shared, reused one."""
        b, t = await self._locate(name)
        if t.state != State.running:
            t = await self._running(b, t, start=start, progress=progress)
        route = await b.route(t)
        route.target, route.kind = t.name, t.kind
        return route

    async def _running(self, b: Backend, t: Target, *, start: bool, progress: ProgressFn | None) -> Target:
        if t.state in (State.unknown, State.failed) and not start:
            # The backend's last error says what went wrong (a link reconnecting, a server
            # not answering); say what to do after it.
            what = f": {t.errors[-1].message.rstrip('. ')}" if t.errors else ""
            todo = (f"It may come back by itself: check it with 'jupyter compute show {t.name}' and run the cell "
                    f"again, or restart it with 'jupyter compute restart {t.name}'" if t.state == State.unknown else
                    f"Start it again with 'jupyter compute start {t.name}' once that is dealt with")
            last = t.errors[-1].model_dump(mode="json") if t.errors else None
            raise Conflict(f"'{t.name}' is {t.state.value}{what}, so the cell did not run. {todo}.",
                           reason="not_running", details={"state": t.state.value, "error": last})
        if not start:
            raise Conflict(f"'{t.name}' is {t.state.value}, so the cell did not run; start it first",
                           reason="not_running", details={"state": t.state.value, "target": t.name})
        # Something else may be starting it already: follow that operation instead of a second one.
        running = [o for o in await self.store.running_operations(self.id) if o["target"] == t.name]
        if running:
            await self.wait_operation(running[0]["id"], progress)
            t = await self.get(t.name)
        if t.state != State.running:
            op = await self.start(t.name, wait=True, on_progress=progress)
            if op.status.value == "failed":
                raise ComputeError(f"starting '{t.name}' failed: {(op.error or {}).get('message', 'unknown error')}",
                                   reason="start_failed")
            t = await self.get(t.name)
        if t.state != State.running:
            raise Conflict(f"'{t.name}' is {t.state.value} after its start, so the cell did not run",
                           reason="not_running", details={"state": t.state.value, "target": t.name})
        return t

    # -- kernels -----------------------------------------------------------------------------------
    async def start_kernel(self, name: str, kernel_id: str, *, env: dict[str, str] | None = None,
                           variant: str = "", start: bool = False, progress: ProgressFn | None = None,
                           connection: dict | None = None) -> tuple["TargetKernel", dict]:
        """Start a new kernel on target ``name`` for one notebook; (the kernel, its connection info).

        The target itself is started first under ``start`` (with each step to ``progress``); a
        target that is gone or not running is refused in words that say what happened.
        """
        try:
            b, t = await self._locate(name)
        except NotFound:
            raise NotFound(f"target '{name}' no longer exists in workspace '{self.id}': choose another kernel",
                           reason="target_gone") from None
        if not b.can_host_kernels(t):
            if not start:
                last = f": {t.errors[-1].message}" if t.errors else ""
                raise Conflict(f"target '{name}' is {t.state.value}{last}; start it, or restart the kernel to "
                               "start it", reason="not_running", details={"state": t.state.value, "target": name})
            t = await self._running(b, t, start=True, progress=progress)
        kernel = await b.kernel(t, variant)
        try:
            info = await kernel.start(kernel_id, dict(env or {}), connection)
        except BaseException:
            # A start that failed part way leaves nothing: no record, no open connection.
            with contextlib.suppress(Exception):
                await kernel.cleanup()
            raise
        finally:
            self._targets_changed()  # a target may have told more about the kernels it offers
        return kernel, info

    def route_if_open(self, name: str) -> Route | None:
        """The route this process has open to ``name``, if any (nothing is opened)."""
        route = self._routes.get(name)
        return route if route is not None and route.is_open else None

    async def close_routes(self) -> None:
        routes, self._routes = list(self._routes.values()), {}
        for r in routes:
            with contextlib.suppress(Exception):
                await r.close()

    # -- changing ----------------------------------------------------------------------------------
    async def create(self, name: str, kind: str, spec: dict[str, Any] | None = None, *, wait: bool = False,
                     on_progress: ProgressFn | None = None) -> Operation:
        return await self._add(name, kind, spec or {}, attach=False, wait=wait, on_progress=on_progress)

    async def attach(self, name: str, kind: str, spec: dict[str, Any] | None = None, *, wait: bool = False,
                     on_progress: ProgressFn | None = None, force: bool = False) -> Operation:
        return await self._add(name, kind, spec or {}, attach=True, wait=wait, on_progress=on_progress, force=force)

    async def _add(self, name: str, kind: str, spec: dict, *, attach: bool, wait: bool,
                   on_progress: ProgressFn | None, force: bool = False) -> Operation:
        backend, ks = self._kind(kind)
        if attach and ks.managed:
            raise InvalidRequest(f"kind '{kind}' is created, not attached: use create", field="/kind")
        if not attach and not ks.managed:
            raise InvalidRequest(f"kind '{kind}' is attached, not created: use attach", field="/kind")
        name = backend.check_name(kind, name)
        model = backend.validate_spec(kind, spec, attach=attach)
        if (await self._exists(name)):
            raise Conflict(f"a target named '{name}' already exists in workspace '{self.id}'",
                           field="/name", reason="name_taken")
        await backend.precheck(name, kind, model, force=force)
        action = "attach" if attach else "create"
        op = await self.store.begin_operation(
            self.id, name, action, self._owner, is_stale,
            new_target={"kind": kind, "managed": ks.managed, "spec": model.public(), "state": State.creating.value})
        self._targets_changed()

        def work(ctx: OperationContext) -> Awaitable[Any]:
            if attach:
                return backend.attach(name, kind, model, ctx)
            return self._starting(ctx, lambda: backend.create(name, kind, model, ctx))
        return await self._drive(op, work, wait, on_progress, forget_on_failure=attach, backend=backend)

    def _targets_changed(self) -> None:
        if self.on_targets_changed is not None:
            self.on_targets_changed()

    async def _starting(self, ctx: OperationContext, start: Callable[[], Awaitable[Any]]) -> Any:
        """Run a create, start or restart in one of ``max_concurrent_starts`` slots, held for the whole
        start: when the backend hands the operation to a supervisor, until that supervisor ends it."""
        await self._start_slots.acquire()
        try:
            outcome = await start()
        except BaseException:
            self._start_slots.release()
            raise
        if not ctx.handed_off:
            self._start_slots.release()
            return outcome

        async def hold() -> None:
            try:
                # The supervisor fails its own start after kernel_ready_timeout; the margin covers
                # a supervisor that hangs, so a slot is never lost for good.
                await self.wait_operation(ctx.op_id, timeout=self.settings.compute.kernel_ready_timeout + 60)
            finally:
                self._start_slots.release()

        # Held apart from the operation's task, so that a caller who does not wait (--no-wait)
        # is not kept until the kernel answers.
        holder = asyncio.get_running_loop().create_task(hold())
        self._slot_holders.add(holder)
        holder.add_done_callback(self._slot_holders.discard)
        return outcome

    async def _exists(self, name: str) -> bool:
        try:
            await self._locate(name)
            return True
        except NotFound:
            return False

    async def update(self, name: str, changes: dict[str, Any]) -> Target:
        if not isinstance(changes, dict) or not changes:
            raise InvalidRequest("give at least one field to change")
        b, t = await self._locate(name)
        ks = self._kinds[t.kind][1]
        model = ks.model()
        if model is None or "update" not in ks.operations:
            raise InvalidRequest(b.update_refusal(t), reason="unsupported_operation")
        for f in changes:
            if f in ("name", "kind"):
                raise InvalidRequest(f"{f} cannot change; create a new target instead", field=f"/{f}")
            if f not in model.model_fields:
                raise InvalidRequest(f"{f}: is not a field of kind '{t.kind}'", field=f"/{f}")
            if f not in model.updatable:
                fixed = ", ".join(sorted(model.updatable))
                raise InvalidRequest(f"{f} cannot change after create; fields that can: {fixed}", field=f"/{f}")
        if b.accepts_first:
            # The service carries the change out: an operation any process can follow to its end.
            op = await self.store.begin_operation(self.id, name, "update", self._owner, is_stale)
            done = await self._drive(op, lambda ctx: b.update(t, changes, ctx=ctx), True, None, previous=t,
                                     backend=b)
            if done.status.value == "failed":
                error = done.error or {}
                raise BackendRefused(error.get("message") or f"the update of '{name}' failed",
                                     reason=error.get("reason") or "update_failed")
            return await self.get(name)
        # Another process (the CLI, another server) may change the same target at the same moment:
        # each update is made from what is stored and written only if that is still what is stored.
        for _ in range(UPDATE_TRIES):
            try:
                await b.update(t, changes)
                self._targets_changed()
                return await self.get(name)
            except SpecChanged:
                t = await self.get(name)
        raise Conflict(f"'{name}' kept being changed by someone else while this update was made; try again",
                       reason="concurrent_update")

    async def rename(self, name: str, new_name: Any) -> Target:
        """Give a stopped target another name; its kernel (kernelspec) follows."""
        b, t = await self._locate(name)
        refusal = b.rename_refusal(t)
        if refusal:
            raise InvalidRequest(refusal, reason="unsupported_operation")
        new_name = b.check_name(t.kind, new_name)
        if new_name == name:
            return t
        await self.store.rename_target(self.id, name, new_name, is_stale, states=b.renamable_states)
        await b.renamed(name, new_name)
        self._routes.pop(name, None)
        self._targets_changed()
        return await self.get(new_name)

    async def start(self, name: str, **kw) -> Operation:
        return await self._lifecycle(name, "start", State.starting, **kw)

    async def stop(self, name: str, **kw) -> Operation:
        return await self._lifecycle(name, "stop", State.stopping, **kw)

    async def restart(self, name: str, **kw) -> Operation:
        return await self._lifecycle(name, "restart", State.restarting, **kw)

    async def delete(self, name: str, **kw) -> Operation:
        """Delete a managed target; detach an attached one (the resource itself is left alone)."""
        b, t = await self._locate(name)
        return await self._lifecycle(name, "delete" if t.managed else "detach", State.deleting, located=(b, t), **kw)

    async def detach(self, name: str, **kw) -> Operation:
        b, t = await self._locate(name)
        if t.managed:
            raise InvalidRequest(f"'{name}' was created here, not attached; delete it instead",
                                 reason="unsupported_operation")
        return await self._lifecycle(name, "detach", State.deleting, located=(b, t), **kw)

    async def consequence(self, name: str, action: str) -> str | None:
        """What ``action`` on ``name`` would do to the person asking, when it needs their explicit
        confirmation first (stopping the compute instance they are on); None when it needs none."""
        b, t = await self._locate(name)
        if action == "delete" and not t.managed:
            action = "detach"
        return b.consequence(t, action) if self.settings.compute.confirm_self_stop else None

    async def _lifecycle(self, name: str, action: str, transitional: State, *, wait: bool = False,
                         on_progress: ProgressFn | None = None, located=None, confirm: bool = False) -> Operation:
        b, t = located or await self._locate(name)
        ks = self._kinds[t.kind][1]
        if action not in ks.operations:
            raise InvalidRequest(b.refusal(t, action), reason="unsupported_operation")
        why = b.consequence(t, action) if self.settings.compute.confirm_self_stop else None
        if why and not confirm:
            raise ConfirmationRequired(
                f"{why} To go ahead, confirm it: --yes on the command line, \"confirm\": true in the REST API.",
                details={"consequence": why, "action": action, "target": name})
        op = await self.store.begin_operation(self.id, name, action, self._owner, is_stale,
                                              set_state=transitional.value)
        fn = getattr(b, action)
        removes = action in ("delete", "detach")

        # Judged from the state the operation found, not from `t`: another caller's stop or start
        # may have ended between reading `t` and beginning this operation ("already running" from a
        # stale read once left a stopped row over a live kernel, whose next start orphaned it).
        prior = State(op["prior_state"]) if op.get("prior_state") else t.state
        previous = t.model_copy(update={"state": prior})

        async def run(ctx: OperationContext):
            current = await self.get(name)
            if action == "start" and prior == State.running:
                await ctx.progress("already running")
                return Outcome(State.running)
            if action == "stop" and prior == State.stopped:
                await ctx.progress("already stopped")
                return Outcome(State.stopped)
            if action == "start" or action == "restart":
                return await self._starting(ctx, lambda: fn(current, ctx))
            return await fn(current, ctx)

        return await self._drive(op, run, wait, on_progress, removes=removes, previous=previous, backend=b)

    # -- operations --------------------------------------------------------------------------------
    async def operation(self, op_id: str) -> Operation:
        row = await self.store.get_operation(op_id)
        if row is None or row["workspace"] != self.id:
            raise NotFound(f"no operation with id '{op_id}' in workspace '{self.id}'", reason="unknown_operation")
        return Operation(**row)

    async def _drive(self, op: dict, fn: Callable[[OperationContext], Awaitable[Any]], wait: bool,
                     on_progress: ProgressFn | None, *, removes: bool = False, previous: Target | None = None,
                     forget_on_failure: bool = False, backend: Backend | None = None,
                     durable: bool = False) -> Operation:
        """Run ``fn`` as the operation ``op``, in a task of its own.

        Without ``wait`` the call returns at once, or, for a ``backend`` whose first step is a
        request its service may refuse (``accepts_first``), once the service accepted it: a refusal
        is then raised to the caller, and a target being added is forgotten. An operation the
        service accepted and recorded how to follow (``ctx.durable``) outlives this process: when
        its task is cancelled (the process exits) it stays running, for another process to follow.
        """
        op_id, name = op["id"], op["target"]
        if on_progress is not None:
            on_progress = _deduplicated(on_progress)

        async def report(text: str) -> None:
            await self.store.update_operation(op_id, progress=text)
            if on_progress:
                on_progress(await self.operation(op_id))

        async def record_follow(follow: dict) -> None:
            await self.store.update_operation(op_id, follow=follow)

        ctx = OperationContext(op_id, self.id, name, op["action"], report, record_follow=record_follow,
                               durable=durable)
        refused: list[ComputeError] = []
        first_step = backend is not None and backend.accepts_first and not durable

        async def body() -> None:
            try:
                outcome = await fn(ctx)
                if ctx.handed_off:
                    return
                if removes:
                    # Whatever of it is still on its way out is gone before its row: no process of
                    # a target that no longer exists is ever left for the orphan sweep to find.
                    await self._end_processes_of(name)
                    await self.store.delete_target(self.id, name)
                elif isinstance(outcome, Outcome):
                    await self._apply(name, outcome)
                note = outcome.note if isinstance(outcome, Outcome) else None
                await self.store.finish_operation(op_id, progress=note or ctx_done(op["action"]))
            except ComputeError as e:
                before_acceptance = first_step and not ctx.accepted_event.is_set()
                if before_acceptance:
                    refused.append(e)
                await self._fail(name, op_id, e.to_json(), forget=forget_on_failure or (
                    before_acceptance and op["action"] in ("create", "attach")), previous=previous,
                    refused=before_acceptance)
            except asyncio.CancelledError:
                if not ctx.durable:
                    await self._fail(name, op_id, {"message": f"the {op['action']} was cancelled",
                                                   "reason": "cancelled"}, forget=forget_on_failure,
                                     previous=previous)
                raise
            except Exception as e:  # a bug or an unexpected library error: keep the server alive, say what
                log.exception("%s of %s/%s failed", op["action"], self.id, name)
                await self._fail(name, op_id, {"message": f"{op['action']} failed: {type(e).__name__}: {e}",
                                               "reason": "internal_error"},
                                 forget=forget_on_failure, previous=previous)
            finally:
                ctx.accepted_event.set()
                self._targets_changed()

        task = asyncio.get_running_loop().create_task(body())
        self._tasks.add(task)
        self._contexts[task] = ctx
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: self._contexts.pop(t, None))
        if not wait:
            if first_step:
                await ctx.accepted_event.wait()
                if refused:
                    raise refused[0]
            return await self.operation(op_id)
        await task
        if refused:
            raise refused[0]
        return await self.wait_operation(op_id, on_progress)

    async def _end_processes_of(self, name: str) -> None:
        found = await procs.off_loop(procs.owned_processes, self.store.sync.path)
        mine = [p for p, ws, target in found if ws == self.id and target == name]
        if mine:
            await procs.off_loop(procs.end_processes, mine, 3.0, 5.0)

    async def running_operation(self, name: str) -> Operation | None:
        """The operation running on ``name`` now, whichever process began it."""
        for row in await self.store.running_operations(self.id):
            if row["target"] == name:
                return Operation(**row)
        return None

    # -- operations other processes began ----------------------------------------------------------
    async def adopt_orphans(self) -> list[str]:
        """Follow here, to their ends, the operations a service goes on with that no live process
        follows any more (their process exited: a CLI call with --no-wait, a server that stopped).
        Returns the ids adopted."""
        adopted = []
        for row in await self.store.orphaned_operations(self.id, is_stale):
            if await self._adopt(row):
                adopted.append(row["id"])
        return adopted

    async def _adopt(self, row: dict) -> bool:
        backend = await self._backend_of(row["target"])
        if backend is None:
            return False
        op = await self.store.adopt_operation(row["id"], self._owner, is_stale)
        if op is None:  # ended meanwhile, or another process adopted it first
            return False
        log.info("jupyter_compute: following the %s of '%s' (%s), begun by a process that exited",
                 op["action"], op["target"], op["id"])
        await self._drive(op, lambda ctx: backend.follow(op, ctx), False, None,
                          removes=op["action"] in ("delete", "detach"), durable=True)
        return True

    async def catch_up(self) -> None:
        """Look once at each operation no live process follows, and record the end of those that
        ended: a target never shows a step its service has already left. (The CLI calls this; it
        leaves following to the end to ``wait`` and to the Jupyter server.)"""
        for row in await self.store.orphaned_operations(self.id, is_stale):
            backend = await self._backend_of(row["target"])
            if backend is None:
                continue
            op_id, name, action = row["id"], row["target"], row["action"]

            async def report(text: str, op_id=op_id) -> None:
                await self.store.update_operation(op_id, progress=text, only_running=True)

            ctx = OperationContext(op_id, self.id, name, action, report, durable=True)
            try:
                outcome = await backend.follow(row, ctx, once=True)
            except StillRunning:
                continue
            except ComputeError as e:
                await self._fail(name, op_id, e.to_json(), forget=False, previous=None)
                continue
            if action in ("delete", "detach"):
                await self.store.delete_target(self.id, name)
            elif isinstance(outcome, Outcome):
                await self._apply(name, outcome)
            await self.store.finish_operation(op_id, progress=ctx_done(action))
            self._targets_changed()

    async def _backend_of(self, name: str) -> Backend | None:
        """The backend that can follow operations on ``name`` (the target's row may be gone: an
        attach refused, a delete that ended)."""
        row = await self.store.get_target(self.id, name)
        if row is not None and row["kind"] in self._kinds:
            backend = self._kinds[row["kind"]][0]
            return backend if backend.accepts_first else None
        followers = [b for b in self.backends if b.accepts_first]
        return followers[0] if len(followers) == 1 else None

    async def wait_operation(self, op_id: str, on_progress: ProgressFn | None = None,
                             timeout: float | None = None) -> Operation:
        """Follow an operation to its end, whichever process finishes it."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        last = None
        while True:
            op = await self.operation(op_id)
            if on_progress and op.progress != last:
                on_progress(op)
            last = op.progress
            if op.status.value != "running":
                return op
            row = await self.store.get_operation(op_id)
            if is_stale(row):
                if not row.get("follow"):
                    await self.store.fail_stale_operations(is_stale)
                elif not await self._adopt(row):
                    await asyncio.sleep(0.05)
                continue
            if deadline is not None and loop.time() > deadline:
                return op
            await asyncio.sleep(0.05)

    async def _apply(self, name: str, outcome: Outcome) -> None:
        fields: dict[str, Any] = {"state": outcome.state.value, "provider_state": outcome.provider_state}
        if outcome.runtime is not None:
            fields["runtime"] = outcome.runtime
        fields["errors"] = outcome.errors or []
        await self.store.update_target(self.id, name, **fields)

    async def _fail(self, name: str, op_id: str, error: dict, *, forget: bool, previous: Target | None,
                    refused: bool = False) -> None:
        if forget:
            await self.store.delete_target(self.id, name)
        elif refused and previous is not None:
            # Refused before anything was done: the target is as it was.
            await self.store.update_target(self.id, name, state=previous.state.value)
        else:
            # A refused request leaves the target as it was; a failure while acting marks it failed.
            state = previous.state.value if previous and error.get("reason") in ("unsupported_operation",) else "failed"
            from .models import utcnow
            await self.store.update_target(self.id, name, state=state,
                                           errors=[{"message": error["message"], "code": error.get("reason"),
                                                    "at": utcnow().isoformat()}])
        await self.store.finish_operation(op_id, error=error)

    async def reconcile(self) -> None:
        await self.store.fail_stale_operations(is_stale)
        for b in self.backends:
            await b.reconcile()
        if await self.store.list_kernels(self.id):
            await self._reconcile_kernels()

    async def _reconcile_kernels(self) -> None:
        """End and forget the notebooks' kernels whose target is gone or whose owner died without
        ending them (a Jupyter server killed): those on this machine here, others by their family."""
        rows = await self.store.list_targets(self.id)
        kinds = {r["name"]: r["kind"] for r in rows}
        for row in await asyncio.to_thread(orphaned_kernels, self.store.sync, self.id, set(kinds)):
            why = (f"its target '{row['target']}' no longer exists" if row["target"] not in kinds
                   else "the process that started it is gone")
            ended = await asyncio.to_thread(end_local_kernel, row)
            pair = self._kinds.get(kinds.get(row["target"], ""))
            if pair is not None:
                try:
                    ended = await pair[0].end_kernel(row) or ended
                except ComputeError as e:  # it may still run there: tried again at the next reconcile
                    log.warning("jupyter_compute: could not end kernel %s of '%s': %s", row["id"], row["target"],
                                e.message)
                    continue
            if ended:
                log.warning("jupyter_compute: ended kernel %s of '%s': %s", row["id"], row["target"], why)
            await self.store.remove_kernel(row["id"])

    async def join(self) -> None:
        """Wait for this process's operations to end, or to reach the point where they no longer need
        this process (a service accepted them and any process can follow them): the CLI does, before
        it exits."""
        while True:
            waiting = [t for t in self._tasks if not self._contexts[t].durable]
            if not waiting:
                return
            accepted = [asyncio.ensure_future(self._contexts[t].accepted_event.wait()) for t in waiting
                        if not self._contexts[t].accepted_event.is_set()]
            try:
                await asyncio.wait([*waiting, *accepted], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for a in accepted:
                    a.cancel()

    async def close(self) -> None:
        # Start slots held for supervisors still starting: nothing here waits for them any more.
        for holder in list(self._slot_holders):
            holder.cancel()
        # Operations still followed here go on without this process; another one follows them.
        following = [t for t in self._tasks if self._contexts[t].durable]
        for task in following:
            task.cancel()
        await asyncio.gather(*following, return_exceptions=True)
        await self.close_routes()
        for b in self.backends:
            await b.close()


def _deduplicated(fn: ProgressFn) -> ProgressFn:
    """Progress is reported in-process and again when followed through the store: show it once."""
    seen: set[str] = set()

    def call(op: Operation) -> Any:
        key = op.progress
        if key not in seen:
            seen.add(key)
            return fn(op)
    return call


def ctx_done(action: str) -> str:
    return {"create": "created", "attach": "attached", "start": "running", "stop": "stopped",
            "restart": "running", "delete": "deleted", "detach": "detached", "update": "updated"}.get(action, "done")


class Compute:
    """Everything of one user: settings, the store, the families of compute and the workspaces.

    Workspaces are ``local``, whose backends the families register, plus those a family brings
    of its own through its ``WorkspaceProvider`` (each cloud workspace, say). Nothing remote
    is contacted until a workspace's targets are asked for.
    """

    def __init__(self, settings: Settings, store: Store, *, start_dir: str | None = None,
                 families: list[Family] | None = None):
        self.settings = settings
        self.sync_store = store
        self.store = AsyncStore(store)
        self.start_dir = start_dir
        self.families = load_families(settings) if families is None else families
        self._workspaces: dict[str, Workspace] = {}
        #: Where each workspace came from: "builtin", or a provider's source ("config", "added", …).
        self._sources: dict[str, str] = {}
        self._providers: dict[str, WorkspaceProvider] = {}
        local_backends = [cls(LOCAL_WORKSPACE, self.store, settings) for f in self.families for cls in f.backends]
        self._workspaces[LOCAL_WORKSPACE] = Workspace(
            LOCAL_WORKSPACE, "local", "This machine: local kernels, clusters and remote machines you attach",
            self.store, settings, local_backends)
        self._sources[LOCAL_WORKSPACE] = "builtin"
        self._workspaces[LOCAL_WORKSPACE].on_targets_changed = self._changed_here
        self._kernelspec_sync: asyncio.Task | None = None
        self._kernelspec_again = False
        #: Set by a change that is synced at once: it ends a sync's wait for the rest of a burst.
        self._kernelspec_now: asyncio.Event | None = None
        self.kernelspec_memory = KernelspecMemory()
        #: Seconds a sync waits for the rest of a burst of changes (the server gathers them).
        self.kernelspec_delay = 0.0
        #: Called with (written, removed) after a sync that changed a folder.
        self.on_kernelspecs_synced: Callable[[list[str], list[str]], Any] | None = None
        #: When (``time.monotonic``) the server last told browsers of a change that bears on the
        #: kernelspecs (a target's, or a sync's); until then, when this object was made.
        self.kernelspec_news_at = time.monotonic()
        for f in self.families:
            if f.workspaces is not None:
                provider = f.workspaces(self)
                self._providers[provider.kind] = provider
        self._load_workspaces(store.list_workspaces())

    @classmethod
    def from_config(cls, config: Config | None = None, *, start_dir: str | None = None) -> "Compute":
        """``start_dir`` is where config.json discovery begins: the server's root, or the cwd."""
        settings = Settings(load_config(config))
        path = settings.compute.effective_db_path()
        return cls(settings, Store(path), start_dir=os.getcwd() if start_dir is None else start_dir)

    # -- workspaces the families bring ---------------------------------------------------------------
    def _load_workspaces(self, stored: list[dict]) -> None:
        for provider in self._providers.values():
            known = {provider.key(w.properties): w.id for w in self._workspaces.values() if w.kind == provider.kind}
            for cfg, source in provider.entries(stored):
                key = provider.key(cfg)
                if key in known:
                    continue
                alias = provider.alias(cfg, set(self._workspaces))
                self._workspaces[alias] = provider.make(alias, cfg, source)
                self._workspaces[alias].on_targets_changed = self._changed_here
                self._sources[alias] = source
                known[key] = alias

    async def refresh_workspaces(self) -> None:
        """Pick up workspaces another process added or removed (``jupyter compute workspace …``)."""
        stored = await self.store.list_workspaces()
        ids = {r["id"] for r in stored}
        for alias, source in list(self._sources.items()):
            if source == "added" and alias not in ids:
                ws = self._workspaces.pop(alias)
                del self._sources[alias]
                self._providers[ws.kind].forget(alias)
                await ws.close()
        self._load_workspaces(stored)

    def provider(self, kind: str) -> WorkspaceProvider | None:
        """The provider of workspaces of ``kind``, if its family is loaded."""
        return self._providers.get(kind)

    def _provider(self, kind: str | None) -> WorkspaceProvider:
        if kind is None and len(self._providers) == 1:
            return next(iter(self._providers.values()))
        provider = self._providers.get(kind or "")
        if provider is None:
            known = ", ".join(sorted(self._providers)) or "none"
            raise InvalidRequest(f"no kind of workspace {kind!r} can be added here; kinds that can: {known}",
                                 field="/kind")
        return provider

    async def add_workspace(self, *, kind: str | None = None, **fields: Any) -> WorkspaceInfo:
        """Add a workspace of a provider's kind (the only one when there is one), checked first."""
        provider = self._provider(kind)
        cfg = provider.check_new(fields)
        await self.refresh_workspaces()
        for w in self._workspaces.values():
            if w.kind == provider.kind and provider.key(w.properties) == provider.key(cfg):
                raise Conflict(f"workspace {cfg.get('workspace_name') or w.id} is already known as '{w.id}'",
                               reason="name_taken")
        alias = cfg.pop("alias", None)
        if alias in self._workspaces or alias == LOCAL_WORKSPACE:
            raise Conflict(f"a workspace named '{alias}' already exists", field="/alias", reason="name_taken")
        ws_id = alias or provider.alias(cfg, set(self._workspaces))
        await self.store.add_workspace(ws_id, provider.kind, cfg)
        await self.refresh_workspaces()
        return self._workspaces[ws_id].info(default=ws_id == self.default_workspace_id())

    async def remove_workspace(self, ws_id: str) -> None:
        await self.refresh_workspaces()
        source = self._sources.get(ws_id)
        if source is None:
            raise NotFound(f"no workspace '{ws_id}'", reason="unknown_workspace")
        if source != "added":
            where = {"builtin": "it is built in", "config": "it is listed in the configuration",
                     "discovered": f"it comes from {self._workspaces[ws_id].properties.get('config_path')}",
                     }.get(source, f"it is this machine's own ({source})")
            raise InvalidRequest(f"workspace '{ws_id}' cannot be removed here: {where}", reason="not_removable")
        await self.store.remove_workspace(ws_id)
        await self.refresh_workspaces()

    # -- lookup ----------------------------------------------------------------------------------
    def workspace(self, ws_id: str | None = None) -> Workspace:
        ws_id = ws_id or self.default_workspace_id()
        try:
            return self._workspaces[ws_id]
        except KeyError:
            known = ", ".join(self._workspaces)
            raise NotFound(f"no workspace '{ws_id}'; known workspaces: {known}", reason="unknown_workspace") from None

    async def resolve(self, ws_id: str | None = None) -> Workspace:
        """Like ``workspace``, but first looks for workspaces added by another process."""
        if ws_id and ws_id not in self._workspaces:
            await self.refresh_workspaces()
        return self.workspace(ws_id)

    def default_workspace_id(self) -> str:
        wanted = self.settings.compute.default_workspace
        if wanted and wanted in self._workspaces:
            return wanted
        for provider in self._providers.values():
            alias = provider.default_alias()
            if alias in self._workspaces:
                return alias
        return LOCAL_WORKSPACE

    def this_instance_info(self) -> dict | None:
        """The managed machine this runs on (a cloud workstation that is a target), for the sidebar to pin."""
        for provider in self._providers.values():
            info = provider.host_info()
            if info is not None:
                return info
        return None

    def attach_server(self, serverapp: Any) -> None:
        """Let the families see the Jupyter server this runs in (its kernels and terminals)."""
        for provider in self._providers.values():
            provider.attach_server(serverapp)

    def sign_ins(self, workspace: Workspace) -> Any:
        """The interactive sign-ins of the workspace's kind; refused, in the words of a family that
        has sign-ins, for a workspace that has none."""
        provider = self._providers.get(workspace.kind)
        if provider is not None and provider.sign_ins is not None:
            return provider.sign_ins
        for other in self._providers.values():
            if other.sign_ins is not None:
                raise other.no_sign_in(workspace)
        raise InvalidRequest(f"workspace '{workspace.id}' has no interactive sign-in", reason="no_sign_in")

    def each_workspace(self) -> list[Workspace]:
        """Every workspace known to this process, as it is now (no refresh)."""
        return list(self._workspaces.values())

    def workspaces(self) -> list[WorkspaceInfo]:
        default = self.default_workspace_id()
        return [w.info(default=w.id == default) for w in self._workspaces.values()]

    async def operation(self, op_id: str) -> "Operation":
        row = await self.store.get_operation(op_id)
        if row is None:
            raise NotFound(f"no operation with id '{op_id}'", reason="unknown_operation")
        return Operation(**row)

    async def end_orphans(self, quiet: float | None = None) -> list[int]:
        """End every process a target of this store owns (by the tag in its environment) that the
        store no longer accounts for, and log each one:

        - its target no longer exists (a crash between deleting a target and ending its processes);
        - its target exists, but neither the process nor any of its parents is one the store names
          for it (a supervisor killed between starting its kernel and recording it). Such a process
          is left alone while an operation on its target runs or ended less than ``quiet`` seconds
          ago, and while it is younger than that: a process just started is recorded a moment later,
          and one just stopped may still be on its way out.

        Returns the pids ended."""
        quiet = ORPHAN_QUIET_SECONDS if quiet is None else quiet
        found = await procs.off_loop(procs.owned_processes, self.store.sync.path)
        by_target: dict[tuple[str, str], list] = {}
        for proc, ws, target in found:
            by_target.setdefault((ws, target), []).append(proc)
        orphans = []
        for (ws, target), group in by_target.items():
            row = await self.store.get_target(ws, target)
            if row is None:
                orphans += [(p, ws, target, "which no longer exists") for p in group]
                continue
            if not await self._quiet(ws, target, row, quiet):
                continue
            kernels = await self.store.list_kernels(ws, target)
            named = [*_identities(row.get("runtime") or {}), *(k.get("process") for k in kernels),
                     *(k.get("owner") for k in kernels)]
            unnamed = await procs.off_loop(procs.unaccounted, group, named, quiet)
            orphans += [(p, ws, target, "which does not record it") for p in unnamed]
        if not orphans:
            return []
        ended = await procs.off_loop(procs.end_processes, [p for p, *_ in orphans])
        for proc, ws, target, why in orphans:
            log.warning("jupyter_compute: ended process %s (%s), left running by target '%s' in workspace '%s', "
                        "%s", proc.pid, _cmd(proc), target, ws, why)
        return [p.pid for p in ended]

    async def _quiet(self, ws: str, target: str, row: dict, quiet: float) -> bool:
        """Whether nothing happens to ``target`` now: no operation runs on it or ended within ``quiet``
        seconds, and it is in no transitional state (what the backends' reconcile settles first)."""
        if State(row["state"]).transitional:
            return False
        op = await self.store.latest_operation(ws, target)
        if op is None:
            return True
        if op["status"] == "running" or not op["ended"]:
            return False
        return (utcnow() - datetime.fromisoformat(op["ended"])).total_seconds() >= quiet

    async def reconcile(self) -> None:
        """Check this machine's targets (remote workspaces are read live, so they need no check), and
        follow the operations a service goes on with whose process exited (the server calls this)."""
        await self._workspaces[LOCAL_WORKSPACE].reconcile()
        for w in list(self._workspaces.values()):
            if any(b.accepts_first for b in w.backends):
                await w.adopt_orphans()

    # -- kernelspecs ---------------------------------------------------------------------------------
    def kernelspecs_changed(self, *, at_once: bool = False) -> None:
        """Targets changed: bring their kernelspecs in step soon. With a ``kernelspec_delay`` (the
        server's), a sync waits that long for the rest of a burst of changes, unless ``at_once``:
        a change this process made itself is in the kernel lists as soon as it is in the store."""
        running = self._kernelspec_sync is not None and not self._kernelspec_sync.done()
        if not running:
            self._kernelspec_now = asyncio.Event()  # of this loop: the sync's task waits on it
        if at_once:
            self._kernelspec_now.set()
        if running:
            self._kernelspec_again = True
            return
        self._kernelspec_sync = asyncio.get_running_loop().create_task(self._sync_kernelspecs())

    def _changed_here(self) -> None:
        self.kernelspecs_changed(at_once=True)

    async def _sync_kernelspecs(self) -> None:
        while True:
            if self.kernelspec_delay:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._kernelspec_now.wait(), self.kernelspec_delay)
            self._kernelspec_now.clear()
            self._kernelspec_again = False
            try:
                written, removed = await sync_kernelspecs(self)
                if (written or removed) and self.on_kernelspecs_synced is not None:
                    self.on_kernelspecs_synced(written, removed)
            except Exception:
                log.exception("jupyter_compute: could not write the kernelspecs of targets")
            if not self._kernelspec_again:
                return

    async def join(self) -> None:
        for w in self._workspaces.values():
            await w.join()
        if self._kernelspec_sync is not None:
            await self._kernelspec_sync

    async def close(self) -> None:
        if self._kernelspec_sync is not None:
            with contextlib.suppress(Exception):
                await self._kernelspec_sync
        for provider in self._providers.values():
            await provider.close()
        for w in self._workspaces.values():
            await w.close()
        self.store.shutdown()


#: A tagged process the store does not name is ended only this long after anything happened to its target.
ORPHAN_QUIET_SECONDS = 10.0


def _identities(value: Any) -> list[str]:
    """Every process identity ("pid:start") in a target's runtime record, however deep."""
    if isinstance(value, dict):
        return [i for v in value.values() for i in _identities(v)]
    if isinstance(value, (list, tuple)):
        return [i for v in value for i in _identities(v)]
    return [value] if isinstance(value, str) and procs.parse(value) else []


def _cmd(proc: Any) -> str:
    try:
        return " ".join(proc.cmdline())[:120]
    except Exception:  # gone already
        return "?"
