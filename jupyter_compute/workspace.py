"""The one API of jupyter_compute: workspaces and the targets in them.

``Compute`` holds the settings, the store and the workspaces of this user; a ``Workspace``
validates each request before anything runs, records long operations in the store (so any
process can follow them and a second one on the same target is refused), and calls the
backend that owns the target's kind. The REST handlers, the CLI, the magics and the widgets
all go through here; none of them imports another.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import os
import re
from typing import Any, Awaitable, Callable

from traitlets.config import Config

from . import procs
from .backends.base import Backend, KindSpec, OperationContext, Outcome, SpecChanged
from .config import AzureML, ComputeConfig, load_config
from .errors import ComputeError, ConfirmationRequired, Conflict, InvalidRequest, NotFound
from .models import KindInfo, Node, Operation, Size, State, Target, Usage, WorkspaceInfo
from .store import AsyncStore, Store

log = logging.getLogger("jupyter_compute")

ProgressFn = Callable[[Operation], Any]

#: Families of compute that live in the local workspace, imported by name so that a family
#: whose optional dependencies are missing simply does not appear.
LOCAL_BACKENDS = [
    "jupyter_compute.backends.local:LocalBackend",
    "jupyter_compute.backends.ssh:SSHBackend",
    "jupyter_compute.backends.dask:DaskBackend",
    "jupyter_compute.backends.remote_jupyter:RemoteJupyterBackend",
]

LOCAL_WORKSPACE = "local"
#: Times an update is made again when another writer changed the target in between.
UPDATE_TRIES = 20


def _load(path: str) -> type[Backend] | None:
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:
        log.debug("compute family %s unavailable: %s", path, e)
        return None


class Settings:
    """The traitlets configurables every backend reads, built from one Config."""

    def __init__(self, config: Config):
        self.config = config
        self.compute = ComputeConfig(config=config)
        self.azure = AzureML(config=config)


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
        self._owner = procs.identity()
        self._start_slots = asyncio.Semaphore(max(1, settings.compute.max_concurrent_starts))
        self._slot_holders: set[asyncio.Task] = set()

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
            raise InvalidRequest(f"workspace '{self.id}' runs no jobs; jobs are cells sent to Azure ML compute "
                                 "clusters", reason="unsupported_operation")
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
        raise InvalidRequest(f"workspace '{self.id}' runs no jobs; jobs are cells sent to Azure ML compute clusters",
                             reason="unsupported_operation")

    async def route_info(self, name: str) -> dict[str, Any]:
        """How a cell reaches this target (used by ``execution``): e.g. kernel connection info."""
        b, t = await self._locate(name)
        if t.state in (State.unknown, State.failed):
            # The backend's last error says what went wrong (an SSH link reconnecting, a server
            # not answering); say what to do after it.
            what = f": {t.errors[-1].message.rstrip('. ')}" if t.errors else ""
            todo = (f"It may come back by itself: check it with 'jupyter compute show {name}' and run the cell "
                    f"again, or restart it with 'jupyter compute restart {name}'" if t.state == State.unknown else
                    f"Start it again with 'jupyter compute start {name}' once that is dealt with")
            last = t.errors[-1].model_dump(mode="json") if t.errors else None
            raise Conflict(f"'{name}' is {t.state.value}{what}, so the cell did not run. {todo}.",
                           reason="not_running", details={"state": t.state.value, "error": last})
        if t.state != State.running:
            raise Conflict(f"'{name}' is {t.state.value}; start it first", reason="not_running")
        return await b.route_info(t)

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

        def work(ctx: OperationContext) -> Awaitable[Any]:
            if attach:
                return backend.attach(name, kind, model, ctx)
            return self._starting(ctx, lambda: backend.create(name, kind, model, ctx))
        return await self._drive(op, work, wait, on_progress, forget_on_failure=attach)

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
        # Another process (the CLI, another server) may change the same target at the same moment:
        # each update is made from what is stored and written only if that is still what is stored.
        for _ in range(UPDATE_TRIES):
            try:
                await b.update(t, changes)
                return await self.get(name)
            except SpecChanged:
                t = await self.get(name)
        raise Conflict(f"'{name}' kept being changed by someone else while this update was made; try again",
                       reason="concurrent_update")

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

        async def run(ctx: OperationContext):
            current = await self.get(name)
            if action == "start" and t.state == State.running:
                await ctx.progress("already running")
                return Outcome(State.running)
            if action == "stop" and t.state == State.stopped:
                await ctx.progress("already stopped")
                return Outcome(State.stopped)
            if action == "start" or action == "restart":
                return await self._starting(ctx, lambda: fn(current, ctx))
            return await fn(current, ctx)

        return await self._drive(op, run, wait, on_progress, removes=removes, previous=t)

    # -- operations --------------------------------------------------------------------------------
    async def operation(self, op_id: str) -> Operation:
        row = await self.store.get_operation(op_id)
        if row is None or row["workspace"] != self.id:
            raise NotFound(f"no operation with id '{op_id}' in workspace '{self.id}'", reason="unknown_operation")
        return Operation(**row)

    async def _drive(self, op: dict, fn: Callable[[OperationContext], Awaitable[Any]], wait: bool,
                     on_progress: ProgressFn | None, *, removes: bool = False, previous: Target | None = None,
                     forget_on_failure: bool = False) -> Operation:
        op_id, name = op["id"], op["target"]
        if on_progress is not None:
            on_progress = _deduplicated(on_progress)

        async def report(text: str) -> None:
            await self.store.update_operation(op_id, progress=text)
            if on_progress:
                on_progress(await self.operation(op_id))

        ctx = OperationContext(op_id, self.id, name, op["action"], report)

        async def body() -> None:
            try:
                outcome = await fn(ctx)
                if ctx.handed_off:
                    return
                if removes:
                    await self.store.delete_target(self.id, name)
                elif isinstance(outcome, Outcome):
                    await self._apply(name, outcome)
                note = outcome.note if isinstance(outcome, Outcome) else None
                await self.store.finish_operation(op_id, progress=note or ctx_done(op["action"]))
            except ComputeError as e:
                await self._fail(name, op_id, e.to_json(), forget=forget_on_failure, previous=previous)
            except asyncio.CancelledError:
                await self._fail(name, op_id, {"message": f"the {op['action']} was cancelled",
                                               "reason": "cancelled"}, forget=forget_on_failure, previous=previous)
                raise
            except Exception as e:  # a bug or an unexpected library error: keep the server alive, say what
                log.exception("%s of %s/%s failed", op["action"], self.id, name)
                await self._fail(name, op_id, {"message": f"{op['action']} failed: {type(e).__name__}: {e}",
                                               "reason": "internal_error"},
                                 forget=forget_on_failure, previous=previous)

        task = asyncio.get_running_loop().create_task(body())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not wait:
            return await self.operation(op_id)
        await task
        return await self.wait_operation(op_id, on_progress)

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
            if is_stale(await self.store.get_operation(op_id)):
                await self.store.fail_stale_operations(is_stale)
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

    async def _fail(self, name: str, op_id: str, error: dict, *, forget: bool, previous: Target | None) -> None:
        if forget:
            await self.store.delete_target(self.id, name)
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

    async def join(self) -> None:
        """Wait for this process's operations (the CLI does, before it exits)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        # Start slots held for supervisors still starting: nothing here waits for them any more.
        for holder in list(self._slot_holders):
            holder.cancel()
        for b in self.backends:
            await b.close()


def _detect_instance(settings: Settings):
    if not settings.azure.detect_instance:
        return None
    try:
        from .azure.instance import detect
    except ImportError:  # the Azure extras are not installed
        return None
    return detect(settings.azure.instance_file)


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
            "restart": "running", "delete": "deleted", "detach": "detached"}.get(action, "done")


AZURE_NAME_RULES = {
    "subscription_id": (re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"),
                        "a subscription id is a GUID like 00000000-0000-0000-0000-000000000000"),
    "resource_group": (re.compile(r"^[-\w._()]{1,90}$"),
                       "a resource group name is 1-90 letters, digits, '-', '_', '.', '(' or ')'"),
    "workspace_name": (re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$"),
                       "a workspace name is 3-33 letters, digits, '-' or '_', starting with a letter or digit"),
    "alias": (re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$"),
              "an alias starts with a letter and holds letters, digits, '-', '_' or '.'"),
}


class Compute:
    """Everything of one user: settings, the store and the workspaces.

    Workspaces are ``local`` plus each Azure ML workspace: listed in ``c.AzureML.workspaces``,
    added with ``workspace add`` (kept in the store), named by a ``config.json`` found from
    ``start_dir`` upwards, as ``Workspace.from_config()`` finds it, or, on a compute instance, the
    instance's own (``azure.instance``). Nothing contacts Azure until a workspace's targets are
    asked for.
    """

    def __init__(self, settings: Settings, store: Store, *, start_dir: str | None = None):
        self.settings = settings
        self.sync_store = store
        self.store = AsyncStore(store)
        self.start_dir = start_dir
        self._workspaces: dict[str, Workspace] = {}
        self._sources: dict[str, str] = {}
        self._discovered: list[str] = []
        #: The compute instance this process runs on, if any, and the id of its workspace.
        self.this_instance = _detect_instance(settings)
        self._instance_ws: str | None = None
        #: Device-code sign-ins begun in this process (azure.signin), made on first use.
        self._sign_ins: Any = None
        local_backends = [cls(LOCAL_WORKSPACE, self.store, settings)
                          for cls in filter(None, map(_load, LOCAL_BACKENDS))]
        self._workspaces[LOCAL_WORKSPACE] = Workspace(
            LOCAL_WORKSPACE, "local", "This machine: local kernels, clusters and remote machines you attach",
            self.store, settings, local_backends)
        self._sources[LOCAL_WORKSPACE] = "builtin"
        self._load_azure(store.list_workspaces())

    @classmethod
    def from_config(cls, config: Config | None = None, *, start_dir: str | None = None) -> "Compute":
        """``start_dir`` is where config.json discovery begins: the server's root, or the cwd."""
        settings = Settings(load_config(config))
        path = settings.compute.effective_db_path()
        return cls(settings, Store(path), start_dir=os.getcwd() if start_dir is None else start_dir)

    # -- Azure ML workspaces ---------------------------------------------------------------------
    def _load_azure(self, stored: list[dict]) -> None:
        try:
            from .azure.discovery import discover_workspaces, workspace_alias
        except ImportError:  # the Azure extras are not installed
            return
        entries: list[tuple[dict, str]] = [(dict(c), "config") for c in self.settings.azure.workspaces]
        entries += [({**r["config"], "alias": r["id"]}, "added") for r in stored if r["kind"] == "azureml"]
        if self.start_dir:
            entries += [(w, "discovered") for w in discover_workspaces(self.start_dir)]
        me = self.this_instance
        if me is not None and not any(me.same_workspace(c) for c, _ in entries):
            cfg = me.workspace_config()
            if cfg is not None:
                entries.insert(0, (cfg, "instance"))
        known = {self._key(w.properties): w.id for w in self._workspaces.values() if w.kind == "azureml"}
        for cfg, source in entries:
            key = self._key(cfg)
            if None in key:
                log.warning("ignoring Azure ML workspace %s: it needs subscription_id, resource_group and "
                            "workspace_name", cfg)
                continue
            if key in known:
                continue
            alias = cfg.get("alias") or workspace_alias(cfg["workspace_name"], set(self._workspaces))
            self._workspaces[alias] = self._azure_workspace(alias, cfg, source)
            self._sources[alias] = source
            known[key] = alias
            if source == "discovered":
                self._discovered.append(alias)

    @staticmethod
    def _key(cfg: dict) -> tuple:
        return tuple((cfg.get(k) or "").lower() or None for k in ("subscription_id", "resource_group", "workspace_name"))

    def _azure_workspace(self, alias: str, cfg: dict, source: str) -> Workspace:
        from .backends.azureml import AzureMLBackend
        backend = AzureMLBackend(alias, self.store, self.settings, subscription_id=cfg["subscription_id"],
                                 resource_group=cfg["resource_group"], workspace_name=cfg["workspace_name"],
                                 location=cfg.get("location"))
        props = {k: cfg[k] for k in ("subscription_id", "resource_group", "workspace_name", "location",
                                     "config_path") if cfg.get(k)}
        props["source"] = source
        if self.this_instance is not None and self._instance_ws is None and self.this_instance.same_workspace(cfg):
            # The instance's own workspace, however it is named here: signed in to with its identity.
            backend.this_instance = self.this_instance
            props["this_instance"] = self.this_instance.name
            self._instance_ws = alias
        return Workspace(alias, "azureml", f"Azure ML workspace {cfg['workspace_name']} "
                         f"({cfg['resource_group']})", self.store, self.settings, [backend], props)

    async def refresh_workspaces(self) -> None:
        """Pick up workspaces another process added or removed (``jupyter compute workspace …``)."""
        stored = await self.store.list_workspaces()
        ids = {r["id"] for r in stored}
        for alias, source in list(self._sources.items()):
            if source == "added" and alias not in ids:
                await self._workspaces.pop(alias).close()
                del self._sources[alias]
                if alias == self._instance_ws:
                    self._instance_ws = None
        self._load_azure(stored)

    async def add_workspace(self, *, subscription_id: Any, resource_group: Any, workspace_name: Any,
                            alias: Any = None, location: Any = None) -> WorkspaceInfo:
        cfg = {"subscription_id": subscription_id, "resource_group": resource_group,
               "workspace_name": workspace_name}
        if alias is not None:
            cfg["alias"] = alias
        for field, value in cfg.items():
            rule, says = AZURE_NAME_RULES[field]
            if not isinstance(value, str) or not rule.match(value):
                raise InvalidRequest(f"{field}: {says}", field=f"/{field}")
        if location is not None:
            if not isinstance(location, str) or not re.match(r"^[a-z0-9]{2,40}$", location):
                raise InvalidRequest("location: an Azure region name such as westeurope", field="/location")
            cfg["location"] = location
        await self.refresh_workspaces()
        for w in self._workspaces.values():
            if w.kind == "azureml" and self._key(w.properties) == self._key(cfg):
                raise Conflict(f"workspace {workspace_name} is already known as '{w.id}'", reason="name_taken")
        if alias in self._workspaces or alias == LOCAL_WORKSPACE:
            raise Conflict(f"a workspace named '{alias}' already exists", field="/alias", reason="name_taken")
        from .azure.discovery import workspace_alias
        ws_id = alias or workspace_alias(workspace_name, set(self._workspaces))
        await self.store.add_workspace(ws_id, "azureml", {k: v for k, v in cfg.items() if k != "alias"})
        await self.refresh_workspaces()
        return self._workspaces[ws_id].info(default=ws_id == self.default_workspace_id())

    async def remove_workspace(self, ws_id: str) -> None:
        await self.refresh_workspaces()
        source = self._sources.get(ws_id)
        if source is None:
            raise NotFound(f"no workspace '{ws_id}'", reason="unknown_workspace")
        if source != "added":
            where = {"builtin": "it is built in", "config": "it is listed in c.AzureML.workspaces",
                     "discovered": f"it comes from {self._workspaces[ws_id].properties.get('config_path')}"}[source]
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
        if self._discovered:
            return self._discovered[0]
        return self._instance_ws or LOCAL_WORKSPACE

    def this_instance_info(self) -> dict | None:
        """The compute instance this runs on, for the sidebar to pin; None elsewhere."""
        if self.this_instance is None:
            return None
        return self.this_instance.info(self._instance_ws)

    def workspaces(self) -> list[WorkspaceInfo]:
        default = self.default_workspace_id()
        return [w.info(default=w.id == default) for w in self._workspaces.values()]

    async def operation(self, op_id: str) -> "Operation":
        row = await self.store.get_operation(op_id)
        if row is None:
            raise NotFound(f"no operation with id '{op_id}'", reason="unknown_operation")
        return Operation(**row)

    @property
    def sign_ins(self):
        """Device-code sign-ins to Azure ML workspaces, kept in this process's memory."""
        if self._sign_ins is None:
            from .azure.signin import SignIns
            self._sign_ins = SignIns()
        return self._sign_ins

    async def reconcile(self) -> None:
        """Check this machine's targets; remote workspaces are read live, so they need no check."""
        await self._workspaces[LOCAL_WORKSPACE].reconcile()

    async def join(self) -> None:
        for w in self._workspaces.values():
            await w.join()

    async def close(self) -> None:
        if self._sign_ins is not None:
            self._sign_ins.close()
        for w in self._workspaces.values():
            await w.close()
        self.store.shutdown()
