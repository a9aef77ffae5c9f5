"""The protocol every family of compute implements, and the pieces they share.

A backend owns one or more kinds. The ``Workspace`` (workspace.py) validates requests, records
operations and their progress, and calls the backend to do the work; a backend never touches
operations itself beyond reporting progress through its ``OperationContext``.
"""
from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from .errors import InvalidRequest
from .models import KindInfo, Node, Size, Spec, State, Target, Usage, check_name

if TYPE_CHECKING:
    from .kernels import KernelSpecInfo, TargetKernel
    from .route import Route
    from .store import AsyncStore

#: Operations a kind may support; the REST routes and CLI verbs of the same names.
OPERATIONS = ("create", "attach", "update", "start", "stop", "restart", "delete", "detach", "nodes")


@dataclass
class KindSpec:
    """What a kind is: its family (the sidebar's group), operations and spec models."""
    name: str
    family: str
    description: str
    managed: bool
    operations: tuple[str, ...]
    create_model: type[Spec] | None = None
    attach_model: type[Spec] | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    #: Whether a running target of this kind holds a kernel's variables, which a stop or restart
    #: loses: every face asks before that (the sidebar's dialog, the command line's question, --yes).
    keeps_variables: bool = False

    def model(self) -> type[Spec] | None:
        return self.create_model if self.managed else self.attach_model

    def info(self) -> KindInfo:
        def schema(m: type[Spec] | None) -> dict | None:
            if m is None:
                return None
            s = m.model_json_schema()
            props = s.setdefault("properties", {})
            props["name"] = {"type": "string", "title": "Name"}
            s.setdefault("required", []).insert(0, "name")
            # The kind's examples give each field an example value (forms show it as "e.g. …").
            for example in self.examples:
                for field, value in example.items():
                    if field in props and value not in (None, "", {}, []):
                        props[field].setdefault("examples", [value])
            return s

        model = self.model()
        return KindInfo(
            name=self.name, family=self.family, description=self.description, managed=self.managed,
            operations=list(self.operations), create_schema=schema(self.create_model),
            attach_schema=schema(self.attach_model),
            update_fields=sorted(model.updatable) if model is not None else [],
            examples=self.examples, keeps_variables=self.keeps_variables)


@dataclass
class OperationContext:
    """Handed to a backend for one long operation."""
    op_id: str
    workspace: str
    target: str
    action: str
    report: Callable[[str], Awaitable[None]]
    #: Set by a backend that hands the operation to another process to finish (for example a
    #: detached supervisor that marks a kernel running once it answers).
    handed_off: bool = False
    #: Records how any process can follow the operation (see ``accepted``).
    record_follow: Callable[[dict], Awaitable[None]] | None = None
    #: Set once a service accepted the operation and recorded how to follow it: from then on it
    #: no longer needs this process, which may exit and leave it to another.
    durable: bool = False
    #: Set once the service accepted the request (or the operation ended before it was asked).
    accepted_event: asyncio.Event = field(default_factory=asyncio.Event)

    async def progress(self, text: str) -> None:
        await self.report(text)

    async def accepted(self, follow: dict | None = None) -> None:
        """The service accepted the request. ``follow`` (JSON) is what ``Backend.follow`` needs to
        follow it to its end from any process; None when the service already finished it."""
        if follow is not None and self.record_follow is not None:
            await self.record_follow(follow)
            self.durable = True
        self.accepted_event.set()


@dataclass
class Outcome:
    """What an operation left behind: the target's new state and anything to remember."""
    state: State
    provider_state: str | None = None
    runtime: dict[str, Any] | None = None
    errors: list[dict] | None = None
    #: Kept as the finished operation's progress, for what the user must still know afterwards
    #: (e.g. that a forced attach broke an earlier one).
    note: str | None = None


class StillRunning(Exception):
    """``Backend.follow(once=True)``: the operation has not ended yet."""


class SpecChanged(Exception):
    """A target's spec changed between an update's read and its write."""


class Backend(abc.ABC):
    """A family of compute. Subclasses declare ``kinds`` and implement the operations they list."""

    kinds: dict[str, KindSpec] = {}
    #: Kinds people know from docs that the service no longer offers: kind -> what to use instead.
    retired_kinds: dict[str, str] = {}

    def __init__(self, workspace_id: str, store: "AsyncStore", settings: Any):
        self.workspace_id = workspace_id
        self.store = store
        self.settings = settings

    # Targets --------------------------------------------------------------------------------------
    # The workspace reads the store once and hands each backend the stored rows of its kinds;
    # a backend whose targets live in a cloud service ignores them and asks the service.
    @abc.abstractmethod
    async def list_targets(self, stored: list[dict]) -> list[Target]: ...

    @abc.abstractmethod
    async def get_target(self, name: str, stored: dict | None) -> Target | None: ...

    def check_name(self, kind: str, name: Any) -> str:
        """Name rules; a backend whose service has stricter ones extends this."""
        return check_name(name)

    async def precheck(self, name: str, kind: str, spec: Spec, *, force: bool = False) -> None:
        """Checks that need I/O but must still run before anything is created (quota, duplicates).

        ``force`` is the user's explicit go-ahead past a guard that would otherwise refuse.
        """

    def refusal(self, target: Target, action: str) -> str:
        return f"'{target.name}' ({target.kind}) does not support {action}"

    def update_refusal(self, target: Target) -> str:
        return f"'{target.name}' ({target.kind}) cannot be updated"

    #: Spec fields kept in the secret store, under the target's name.
    secret_fields: tuple[str, ...] = ()
    #: States in which a target of this family may be renamed: nothing runs for it then.
    renamable_states: tuple[str, ...] = ("stopped", "failed")

    def rename_refusal(self, target: Target) -> str | None:
        """Why ``target`` cannot be renamed at all (its name is another service's), or None."""
        return None

    async def renamed(self, name: str, new_name: str) -> None:
        """After the store renamed a target: what this family keeps under its name follows."""
        if self.secret_fields:
            from . import secrets as secret_store

            store = secret_store.for_store(self.store.sync.path)
            await asyncio.to_thread(store.move, self.workspace_id, name, new_name, self.secret_fields)

    def consequence(self, target: Target, action: str) -> str | None:
        """What ``action`` on ``target`` would do to the person asking, when that needs their
        explicit confirmation (stopping the machine they are on); None when it needs none."""
        return None

    async def route(self, target: Target) -> "Route":
        """An unopened route to a running target (see core.route), which ``Workspace.open_route``
        opens, or reuses while its ``key`` is unchanged."""
        raise InvalidRequest(f"cells cannot be sent to '{target.name}' ({target.kind})",
                             reason="unsupported_operation")

    def kernel_specs(self, row: dict) -> list["KernelSpecInfo"]:
        """The kernels a stored target offers (see core.kernels); none unless its family hosts kernels.
        Reads only the stored row: kernelspecs are written often and must never wait on the target."""
        return []

    def can_host_kernels(self, target: Target) -> bool:
        """Whether a notebook's kernel can start on ``target`` as it is now, or it must be started
        first (a server reached over the network hosts kernels whatever its own kernel does)."""
        return target.state == State.running

    async def kernel(self, target: Target, variant: str = "") -> "TargetKernel":
        """A new kernel on a running target, for one notebook (see core.kernels)."""
        raise InvalidRequest(f"'{target.name}' ({target.kind}) cannot run a kernel of its own",
                             reason="unsupported_operation")

    async def end_kernel(self, record: dict) -> bool:
        """End a notebook's kernel whose owner died, from its record in the store, where it runs
        elsewhere (on a server this family reaches); whether there was one to end."""
        return False

    async def field_choices(self, kind: str, field: str) -> dict[str, Any] | None:
        """Values to offer for a spec field of ``kind`` (key files for a key field, say), or None
        when the field has none to offer. Never the contents of a secret."""
        return None

    def validate_spec(self, kind: str, data: dict[str, Any], *, attach: bool) -> Spec:
        """Check a create/attach request's fields against the kind's model, before anything runs."""
        from pydantic import ValidationError
        from .errors import from_validation_error

        ks = self.kinds[kind]
        model = ks.attach_model if attach else ks.create_model
        if model is None:
            verb = "attached" if attach else "created"
            other = "create" if attach else "attach"
            raise InvalidRequest(f"kind '{kind}' cannot be {verb}; use {other}", field="/kind")
        try:
            return model.model_validate(data)
        except ValidationError as e:
            raise from_validation_error(e) from None

    # Operations: each raises a ComputeError subclass on failure ----------------------------------
    async def create(self, name: str, kind: str, spec: Spec, ctx: OperationContext) -> Outcome:
        raise InvalidRequest(f"kind '{kind}' does not support create")

    async def attach(self, name: str, kind: str, spec: Spec, ctx: OperationContext) -> Outcome:
        raise InvalidRequest(f"kind '{kind}' does not support attach")

    async def _write_spec(self, name: str, read: dict, spec: dict, **fields: Any) -> None:
        """Store the spec an update made from ``read``, unless another writer changed it meanwhile
        (``SpecChanged``: the update is then made again from what is stored now)."""
        if not await self.store.update_target(self.workspace_id, name, expect_spec=read, spec=spec, **fields):
            raise SpecChanged(name)

    async def update(self, target: Target, changes: dict[str, Any]) -> None:
        raise InvalidRequest(f"kind '{target.kind}' does not support update")

    async def start(self, target: Target, ctx: OperationContext) -> Outcome:
        raise InvalidRequest(f"kind '{target.kind}' does not support start")

    async def stop(self, target: Target, ctx: OperationContext) -> Outcome:
        raise InvalidRequest(f"kind '{target.kind}' does not support stop")

    async def restart(self, target: Target, ctx: OperationContext) -> Outcome:
        await self.stop(target, ctx)
        return await self.start(target, ctx)

    async def delete(self, target: Target, ctx: OperationContext) -> None:
        raise InvalidRequest(f"kind '{target.kind}' does not support delete")

    async def detach(self, target: Target, ctx: OperationContext) -> None:
        raise InvalidRequest(f"kind '{target.kind}' does not support detach")

    async def nodes(self, target: Target) -> list[Node]:
        return []

    async def sizes(self) -> list[Size]:
        return []

    async def usage(self) -> list[Usage]:
        return []

    async def list_jobs(self, target: str | None = None, *, top: int = 20) -> list[dict]:
        """Recent jobs (cells sent as batch jobs), for backends that run them."""
        raise InvalidRequest("this workspace runs no jobs; jobs are cells sent to a compute cluster that runs each cell as a job",
                             reason="unsupported_operation")

    async def get_job(self, name: str, *, log_lines: int = 200) -> dict:
        raise InvalidRequest("this workspace runs no jobs; jobs are cells sent to a compute cluster that runs each cell as a job",
                             reason="unsupported_operation")

    async def cancel_job(self, name: str, *, wait: bool = True,
                         progress: Callable[[str], Any] | None = None) -> dict:
        """Cancel a job; with ``wait``, follow the cancellation until the job has ended."""
        raise InvalidRequest("this workspace runs no jobs; jobs are cells sent to a compute cluster that runs each cell as a job",
                             reason="unsupported_operation")

    async def hand_off(self, ctx: OperationContext, argv: list[str], what: str) -> Outcome:
        """Start a detached supervisor (see ``procs.detach``) that finishes this operation itself.

        It owns the operation from the moment it exists, so the operation is never taken for
        abandoned when the caller (a CLI call with --no-wait, a restarting server) exits first.
        """
        from . import processes as procs

        await ctx.progress(f"launching the {what}")
        owner = procs.owner_tag(self.store.sync.path, ctx.workspace, ctx.target)
        supervisor = await procs.off_loop(procs.spawn_detached, argv, what, owner)
        await self.store.update_operation(ctx.op_id, owner=supervisor)
        ctx.handed_off = True
        return Outcome(State.starting)

    #: Whether the first step of an operation is a request a service may refuse: callers that do
    #: not wait for the end (REST, --no-wait) wait for ``OperationContext.accepted`` instead, so a
    #: refusal is the caller's error and changes nothing.
    accepts_first: bool = False

    async def follow(self, op: dict, ctx: OperationContext, *, once: bool = False) -> Outcome | None:
        """Follow an operation this or another process began, from its recorded ``op["follow"]``,
        to its end; with ``once``, look once and raise ``StillRunning`` if it has not ended."""
        raise InvalidRequest(f"'{op['target']}' has no {op['action']} that can be followed from here",
                             reason="unsupported_operation")

    async def reconcile(self) -> None:
        """Bring stored state in line with reality (dead processes, finished remote operations)."""

    async def close(self) -> None:
        """Release clients; never stops targets."""


def stored_target(row: dict, **fields: Any) -> Target:
    """A Target from a stored row; ``fields`` add what the backend knows beyond the store."""
    data = {
        "name": row["name"], "workspace": row["workspace"], "kind": row["kind"], "managed": row["managed"],
        "state": row["state"], "provider_state": row.get("provider_state"), "created": row["created"],
        "modified": row["modified"], "errors": row.get("errors") or [],
        "properties": dict(row.get("spec") or {}),
    }
    extra_props = fields.pop("properties", None)
    if extra_props:
        data["properties"].update(extra_props)
    data.update(fields)
    return Target.model_validate(data)
