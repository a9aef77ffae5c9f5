"""A family of compute as a third party would publish it: one kind, ``note``, whose cells run in a
namespace of the process that reaches it. Loaded by the registry tests, by config and by entry point."""
from __future__ import annotations

from typing import Any

from jupyter_compute.core.backend import Backend, KindSpec, OperationContext, Outcome, stored_target
from jupyter_compute.core.models import Spec, State, Target
from jupyter_compute.core.registry import Family
from jupyter_compute.core.route import Capabilities, ExecutionResult, Route, TransferReport


class NoteSpec(Spec):
    greeting: str = "hello"
    updatable = frozenset({"greeting"})


class NoteRoute(Route):
    name = "note"
    capabilities = Capabilities(persistent_namespace=True, variables=True)

    def __init__(self, greeting: str, *, target: str):
        self.greeting, self.target = greeting, target
        self.namespace: dict[str, Any] = {"greeting": greeting}
        self.opened = 0

    @property
    def key(self):
        return (self.name, self.target, self.greeting)

    async def open(self, timeout=None):
        self.opened += 1

    @property
    def is_open(self):
        return self.opened > 0

    async def execute(self, code, *, on_message=None, stdin=None, timeout=None):
        exec(code, self.namespace)
        return ExecutionResult("ok", result={"text/plain": repr(self.namespace.get("_"))})

    async def interrupt(self):
        pass

    async def push(self, values, *, timeout=None):
        self.namespace.update(values)
        return TransferReport("push", list(values), 0, 0.0, self.target)

    async def pull(self, names, *, timeout=None):
        return {n: self.namespace[n] for n in names}, TransferReport("pull", names, 0, 0.0, self.target)

    async def close(self):
        self.opened = 0


class NoteBackend(Backend):
    kinds = {"note": KindSpec("note", "Notes", "A namespace in the process that reaches it.", managed=True,
                              operations=("create", "update", "start", "stop", "delete"), create_model=NoteSpec)}

    async def list_targets(self, stored: list[dict]) -> list[Target]:
        return [stored_target(r) for r in stored]

    async def get_target(self, name: str, stored: dict | None) -> Target | None:
        return stored_target(stored) if stored else None

    async def create(self, name: str, kind: str, spec: Spec, ctx: OperationContext) -> Outcome:
        await ctx.progress("writing the note")
        return Outcome(State.running)

    async def update(self, target: Target, changes: dict[str, Any]) -> None:
        row = await self.store.get_target(self.workspace_id, target.name)
        await self._write_spec(target.name, row["spec"], {**row["spec"], **changes})

    async def start(self, target: Target, ctx: OperationContext) -> Outcome:
        return Outcome(State.running)

    async def stop(self, target: Target, ctx: OperationContext) -> Outcome:
        return Outcome(State.stopped)

    async def delete(self, target: Target, ctx: OperationContext) -> None:
        pass

    async def route(self, target: Target) -> Route:
        return NoteRoute(target.properties.get("greeting", "hello"), target=target.name)


def family() -> Family:
    return Family("notes", backends=[NoteBackend], order=50)
