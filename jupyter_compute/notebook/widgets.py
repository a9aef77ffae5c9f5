"""ipywidgets for compute targets: ``TargetPicker`` chooses where the notebook's cells run,
``TargetStatus`` is a live card with start, stop and restart buttons.

Both follow the store's change feed, so a change made anywhere (the CLI, the sidebar, another
notebook) shows here within about a second.
"""
from __future__ import annotations

import asyncio
import html
import logging
import threading
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

import ipywidgets as widgets
from traitlets import Bool, Dict, List, Unicode, observe

from ..commands import loses_variables
from ..core.errors import ComputeError
from .bridge import LoopThread, current_compute, shared_compute
from ..core.models import TRANSITIONAL, State

log = logging.getLogger(__name__)

LOCAL = "local"
STATE_COLOURS = {"running": "#2e7d32", "stopped": "#757575", "failed": "#c62828", "unknown": "#757575"}


class _ChangeFeed:
    """Tails the store's change feed on the loop thread and refreshes the widgets that listen."""

    interval = 0.5

    def __init__(self) -> None:
        self._listeners: "weakref.WeakSet[_Live]" = weakref.WeakSet()
        self._task: Any = None

    def forget(self, widget: "_Live") -> None:
        self._listeners.discard(widget)

    def listen(self, widget: "_Live") -> None:
        self._listeners.add(widget)
        if self._task is None or self._task.done():
            self._task = LoopThread.get().submit(self._run())

    async def _run(self) -> None:
        compute = None
        while len(self._listeners):
            try:
                compute = await shared_compute()
                async for changes in compute.store.follow(self.interval):
                    if not len(self._listeners):
                        return
                    # The store moved (JUPYTER_COMPUTE_DB changed): reload from it and follow it instead.
                    moved = await shared_compute() is not compute
                    if changes or moved:
                        await asyncio.gather(*(w._refresh() for w in list(self._listeners)), return_exceptions=True)
                    if moved:
                        break
            except RuntimeError as e:
                if "after shutdown" in str(e):
                    if current_compute() is not compute:
                        continue  # a widget's load found the store moved and closed the old one first
                    return  # the kernel is exiting and the store is closed
                log.exception("jupyter_compute: following the change feed failed")
                await asyncio.sleep(self.interval)
            except Exception:
                log.exception("jupyter_compute: following the change feed failed")
                await asyncio.sleep(self.interval)


_feed = _ChangeFeed()


class _Live:
    """A widget that reloads itself from the core when the store changes; each widget class
    defines ``async def _refresh(self)``."""

    def _load_now(self) -> None:
        LoopThread.get().run(lambda bridge: self._refresh())

    def refresh(self) -> None:
        """Reload now (the change feed does this by itself)."""
        self._load_now()

    def close(self) -> None:
        _feed.forget(self)
        super().close()  # type: ignore[misc]


def _label(t: dict) -> str:
    return f"{t['name']} · {t['kind']} · {t['state']}"


class TargetPicker(_Live, widgets.Dropdown):
    """A dropdown of targets with their live state; choosing one routes the notebook's cells there."""

    workspace = Unicode("", help="Workspace whose targets are listed; empty for the default.")
    targets = List(Dict(), help="The targets listed: name, kind and state of each.")
    error = Unicode("", help="Why the list could not be loaded, if it could not.")

    def __init__(self, workspace: str | None = None, **kw: Any):
        from .magics import active_route
        # The change feed refreshes the list on its own thread while the kernel applies the
        # person's choices on the shell thread. A refresh holds the lock, so a choice waits for it
        # rather than being undone by it, and only the values the refreshing thread sets are not
        # choices: `_quiet_in` names that thread.
        self._lock = threading.RLock()
        self._quiet_in: int | None = None
        active = None
        try:
            active = active_route()
        except RuntimeError:
            pass
        with self._not_a_choice():  # the initial value is not a choice the person made
            super().__init__(options=[(f"{LOCAL} · this notebook's kernel", LOCAL)], value=LOCAL,
                             description="Run cells on", style={"description_width": "initial"}, **kw)
            self.workspace = workspace or ""
        self._load_now()  # on the loop thread, which takes the lock
        if active is not None and active[1] in {t["name"] for t in self.targets}:
            with self._not_a_choice():
                self.value = active[1]
        _feed.listen(self)

    @contextmanager
    def _not_a_choice(self) -> Iterator[None]:
        """Values this thread sets meanwhile are the list's own, and route nothing."""
        with self._lock:
            was, self._quiet_in = self._quiet_in, threading.get_ident()
            try:
                yield
            finally:
                self._quiet_in = was

    def set_state(self, sync_data: dict) -> None:
        """A choice made in the browser; it waits for a refresh under way to finish."""
        with self._lock:
            super().set_state(sync_data)

    async def _refresh(self) -> None:
        try:
            compute = await shared_compute()
            ws = compute.workspace(self.workspace or None)
            targets = [{"name": t.name, "kind": t.kind, "state": t.state.value} for t in await ws.list()]
            error = ""
        except ComputeError as e:
            targets, error = [], e.message
        self._apply(targets, error)

    def _apply(self, targets: list[dict], error: str) -> None:
        with self._not_a_choice(), self.hold_sync():
            value = self.value
            options = [(f"{LOCAL} · this notebook's kernel", LOCAL)] + [(_label(t), t["name"]) for t in targets]
            self.options = options
            names = {v for _, v in options}
            self.value = value if value in names else LOCAL
            self.targets = targets
            self.error = error

    @observe("value")
    def _route_cells(self, change: dict) -> None:
        if getattr(self, "_quiet_in", None) == threading.get_ident() or change["new"] is None:
            return
        from .magics import set_active_route
        set_active_route(change["new"], self.workspace or None)


class TargetStatus(_Live, widgets.VBox):
    """A live card for one target, with start, stop and restart buttons."""

    name = Unicode(help="The target shown.")
    workspace = Unicode("", help="Its workspace; empty for the default.")
    kind = Unicode("")
    state = Unicode("", help="The target's state, as the store has it now.")
    busy = Bool(False, help="Whether an operation started from this card is running.")
    message = Unicode("", help="Progress of the last operation, or why it failed.")
    operations = List(Unicode(), help="Operations the target's kind supports.")
    asking = Unicode("", help="The action a button asked to confirm (a stop or restart that loses the "
                              "kernel's variables), until it is confirmed or cancelled.")

    def __init__(self, name: str, workspace: str | None = None, **kw: Any):
        self._card = widgets.HTML()
        self._buttons = {a: widgets.Button(description=a.capitalize(), layout=widgets.Layout(width="auto"))
                         for a in ("start", "stop", "restart")}
        self._note = widgets.HTML()
        self._question = widgets.HTML()
        self._confirm = widgets.Button(description="", button_style="danger", layout=widgets.Layout(width="auto"))
        self._cancel = widgets.Button(description="Cancel", layout=widgets.Layout(width="auto"))
        self._asking_row = widgets.HBox([self._question, self._confirm, self._cancel],
                                        layout=widgets.Layout(display="none"))
        self._target: Any = None
        #: The last operation a button began (a concurrent Future), for whoever waits on it.
        self.pending: Any = None
        for action, button in self._buttons.items():
            button.on_click(lambda _b, a=action: self._clicked(a))
        self._confirm.on_click(lambda _b: self._confirmed())
        self._cancel.on_click(lambda _b: setattr(self, "asking", ""))
        super().__init__([self._card, widgets.HBox(list(self._buttons.values())), self._asking_row, self._note], **kw)
        self.name = name
        self.workspace = workspace or ""
        self._load_now()
        _feed.listen(self)

    async def _refresh(self) -> None:
        try:
            compute = await shared_compute()
            ws = compute.workspace(self.workspace or None)
            t = await ws.get(self.name)
            ops = next((k.operations for k in ws.kinds() if k.name == t.kind), [])
            self._target = (t, ws)
            self._show(t.model_dump(mode="json"), list(ops))
            if self.asking and not loses_variables(self.asking, t, ws):  # moot after a change elsewhere
                self.asking = ""
        except ComputeError as e:
            self._show(None, [], e.message)

    def _show(self, t: dict | None, operations: list[str], error: str = "") -> None:
        with self.hold_trait_notifications():
            if t is None:
                self.kind, self.state, self.operations = "", "unknown", []
                self.message = error
            else:
                self.kind, self.state, self.operations = t["kind"], t["state"], operations
                if t.get("errors") and t["state"] == "failed":
                    self.message = t["errors"][-1]["message"]
        self._render(t)

    def _render(self, t: dict | None) -> None:
        colour = STATE_COLOURS.get(self.state, "#ef6c00")
        rows = ""
        if t is not None:
            props = t.get("properties") or {}
            for k in ("python", "kernel_pid", "hostname"):
                if props.get(k) is not None:
                    rows += f"<div><small>{html.escape(k)}: {html.escape(str(props[k]))}</small></div>"
        self._card.value = (
            f"<div><b>{html.escape(self.name)}</b> <small>{html.escape(self.kind)}</small> "
            f"<span style='color:{colour}'>● {html.escape(self.state)}</span></div>{rows}")
        self._render_controls()

    @observe("busy", "message", "asking")
    def _rerender(self, change: dict) -> None:
        if hasattr(self, "_card"):
            self._render_controls()

    def _clicked(self, action: str) -> None:
        """A button: what would lose the kernel's variables is asked first, as in every face."""
        question = loses_variables(action, *self._target) if self._target is not None else None
        if question:
            self._question.value = f"<small>{html.escape(question)}</small>"
            self._confirm.description = action.capitalize()
            self.asking = action
        else:
            self.pending = self.act(action)

    def _confirmed(self) -> None:
        action, self.asking = self.asking, ""
        if action:
            self.pending = self.act(action)

    def _render_controls(self) -> None:
        self._note.value = f"<small>{html.escape(self.message)}</small>" if self.message else ""
        transitional = self.state in {s.value for s in TRANSITIONAL}
        for action, button in self._buttons.items():
            allowed = action in self.operations and not self.busy and not transitional
            if action == "start":
                allowed = allowed and self.state != State.running.value
            elif action == "stop":
                allowed = allowed and self.state != State.stopped.value
            button.disabled = not allowed or bool(self.asking)
        self._asking_row.layout.display = "flex" if self.asking else "none"

    def act(self, action: str):
        """Start, stop or restart the target in the background, without asking (the buttons ask
        first where the kernel's variables would be lost); returns a concurrent Future."""
        if action not in self._buttons:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(self._buttons)}")
        self.busy = True
        self.message = f"{action}…"
        return LoopThread.get().submit(self._act(action))

    async def _act(self, action: str) -> None:
        try:
            compute = await shared_compute()
            ws = compute.workspace(self.workspace or None)

            def progress(op: Any) -> None:
                if op.progress:
                    self.message = f"{op.action}: {op.progress}"

            op = await getattr(ws, action)(self.name, wait=True, on_progress=progress)
            if op.status.value == "failed":
                self.message = f"{action} failed: {(op.error or {}).get('message', 'unknown error')}"
            else:
                self.message = f"{action}: {op.progress or 'done'}"
        except ComputeError as e:
            self.message = f"{action} refused: {e.message}"
        except Exception as e:  # shown on the card rather than lost in a background thread
            log.exception("jupyter_compute: %s of %s failed", action, self.name)
            self.message = f"{action} failed: {type(e).__name__}: {e}"
        finally:
            self.busy = False
            await self._refresh()
