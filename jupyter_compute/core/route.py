"""The one interface every way of running a cell elsewhere implements, and what it reports.

A ``Route`` opens a session on a target, executes code while streaming every message the
target publishes, interrupts, moves variables and closes. Each route declares its
``Capabilities``; asking for one it lacks raises ``MissingCapability`` naming it.
"""
from __future__ import annotations

import abc
import asyncio
import builtins
import contextvars
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Hashable, Iterable, Union

from .aio import within
from .errors import ComputeError, InvalidRequest

#: Called with each iopub message dict (header, parent_header, msg_type, content, ...) as it arrives.
MessageHandler = Callable[[dict], None]
#: Called with (prompt, password) when the remote code asks for input; returns the answer.
StdinHandler = Callable[[str, bool], Union[str, Awaitable[str]]]


@dataclass(frozen=True)
class Capabilities:
    """What a route can do. Batch routes (jobs) lack most of these."""
    persistent_namespace: bool = False
    stdin: bool = False
    interrupt: bool = False
    rich_output: bool = False
    variables: bool = False
    nodes: bool = False
    #: Choosing the software environment a cell runs in (a batch job's image).
    environment: bool = False

    DESCRIPTIONS = {
        "persistent_namespace": "keeping variables between cells",
        "stdin": "answering input() from the notebook",
        "interrupt": "interrupting a running cell",
        "rich_output": "rich output (HTML, images, live display updates)",
        "variables": "moving variables with --push and --pull",
        "nodes": "running one cell on several nodes at once",
        "environment": "choosing the environment a cell runs in",
    }

    def require(self, name: str, where: str, why: str = "") -> None:
        """Refuse, naming ``where`` (the target and its kind), unless this capability is offered."""
        if name not in self.DESCRIPTIONS:
            raise ValueError(f"unknown capability {name!r}")
        if not getattr(self, name):
            raise MissingCapability(name, where, why)

    def as_dict(self) -> dict[str, bool]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class MissingCapability(InvalidRequest):
    reason = "missing_capability"

    def __init__(self, capability: str, where: str, why: str = ""):
        desc = Capabilities.DESCRIPTIONS.get(capability, capability)
        msg = f"{where} does not support {capability} ({desc})"
        if why:
            msg += f": {why}"
        super().__init__(msg)
        self.capability = capability


class ExecutionError(ComputeError):
    """The route could not run the code (the target went away, the protocol broke)."""
    status = 502
    reason = "execution_failed"


class ExecutionTimeout(TimeoutError):
    """The code ran past its time limit; the target was interrupted."""


class TransferError(InvalidRequest):
    """A variable could not be moved; ``variable`` names it."""
    reason = "transfer_failed"

    def __init__(self, message: str, *, variable: str | None = None):
        super().__init__(message, field=f"/{variable}" if variable else None)
        self.variable = variable


@dataclass
class TransferReport:
    direction: str  # "push" or "pull"
    names: list[str]
    nbytes: int
    seconds: float
    target: str = ""

    def __str__(self) -> str:
        verb = "pushed" if self.direction == "push" else "pulled"
        where = ("to " if self.direction == "push" else "from ") + (self.target or "the target")
        return f"{verb} {', '.join(self.names)} ({format_bytes(self.nbytes)}) {where} in {self.seconds:.2f} s"


def format_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@dataclass
class ExecutionResult:
    status: str  # "ok", "error" or "aborted"
    execution_count: int | None = None
    ename: str | None = None
    evalue: str | None = None
    traceback: list[str] = field(default_factory=list)
    #: The execute_result mime bundle, if the code's last expression produced one.
    result: dict[str, Any] | None = None
    result_metadata: dict[str, Any] = field(default_factory=dict)

    def raise_for_error(self) -> None:
        if self.status == "error":
            raise RemoteError.make(self.ename or "Error", self.evalue or "", self.traceback)
        if self.status == "aborted":
            raise ExecutionError("the target aborted the execution (an earlier request failed)")


#: How the notebook names the cell it is running ("In[7]"): tracebacks formatted here name it so.
CELL_LABEL: contextvars.ContextVar[str | None] = contextvars.ContextVar("jupyter_compute_cell_label", default=None)

_RED, _CYAN, _GREEN, _LIGHT_GREEN, _DARK_CYAN, _END = "\x1b[91m", "\x1b[96m", "\x1b[32m", "\x1b[92m", "\x1b[36m", "\x1b[39m"


def cell_frames(tb):
    """Each frame of a cell's traceback, from the cell's own frame on, with the lines around it: the
    ``frames`` ``ipython_traceback`` lays out. It runs where the cell ran, while the cell's source is
    still in linecache: families ship it by value or as source to machines that may not have this
    package. So it uses the standard library only, imported inside, and stays valid on Python 3.8."""
    import linecache
    import traceback

    frames = []
    for fs in traceback.extract_tb(tb) if tb is not None else []:
        context = []
        for n in range(max(1, (fs.lineno or 0) - 2), (fs.lineno or -2) + 2):  # no line number: no context
            text = linecache.getline(fs.filename, n)
            if not text:
                break
            if text.strip():
                context.append([n, text.rstrip("\n")])
        frames.append({"file": fs.filename, "line": fs.lineno, "name": fs.name, "context": context})
    return frames


def ipython_traceback(ename: str, evalue: str, frames: list[dict]) -> list[str]:
    """A traceback in IPython's own form (its colours, "Cell In[7], line 2" and the numbered lines
    around each frame's, with the arrow) from the frames a route brought back: each a dict of
    ``file``, ``line``, ``name`` and ``context`` ([number, text] pairs). A file named ``<cell…>``
    is the routed cell, named as the notebook names it (``CELL_LABEL``) when it says."""
    header = "Traceback (most recent call last)"
    out = [f"{_RED}{'-' * 75}{_END}", f"{_RED}{ename}{_END}{' ' * max(1, 75 - len(ename) - len(header))}{header}"]
    for f in frames:
        name = f.get("name") or "<module>"
        where = f", in {_DARK_CYAN}{name}{_END}" if name != "<module>" else ""
        label = CELL_LABEL.get()
        if label and str(f.get("file", "")).startswith("<cell"):
            text = f"{_CYAN}Cell{_END} {_GREEN}{label}, line {f.get('line')}{_END}{where}\n"
        else:
            text = f"{_CYAN}File{_END} {_GREEN}{f.get('file')}:{f.get('line')}{_END}{where}\n"
        for number, line in f.get("context") or []:
            mark = f"{'-' * max(0, 5 - len(str(number)))}> {number}" if number == f.get("line") else f"{number:>7}"
            text += f"{_LIGHT_GREEN}{mark}{_END} {line}\n"
        out.append(text)
    out.append(f"{_RED}{ename}{_END}: {evalue}")
    return out


class RemoteError(Exception):
    """An exception raised by code on a target, shown with the target's own traceback.

    ``make`` returns an instance of a subclass named like the remote exception (and also
    deriving from the builtin of that name where possible), so the notebook reports e.g.
    ``ValueError: bad`` and ``except ValueError`` still catches it.
    """

    def __init__(self, ename: str, evalue: str, traceback: list[str]):
        super().__init__(evalue)
        self.ename = ename
        self.evalue = evalue
        self.remote_traceback = list(traceback)

    def __str__(self) -> str:
        return self.evalue

    def _render_traceback_(self) -> list[str]:
        # IPython shows these lines instead of our local frames, which say nothing useful.
        return self.remote_traceback or [f"{self.ename}: {self.evalue}"]

    _classes: dict[str, type] = {}

    @classmethod
    def make(cls, ename: str, evalue: str, traceback: Iterable[str]) -> "RemoteError":
        klass = cls._classes.get(ename)
        if klass is None:
            bases: tuple[type, ...] = (cls,)
            builtin = getattr(builtins, ename, None)
            if (isinstance(builtin, type) and issubclass(builtin, Exception)
                    and not issubclass(builtin, (KeyboardInterrupt, SystemExit))):
                bases = (cls, builtin)
            name = ename if ename.isidentifier() else "RemoteError"
            try:
                klass = type(name, bases, {"__module__": "remote"})
            except TypeError:  # builtin with an incompatible layout (e.g. OSError)
                klass = type(name, (cls,), {"__module__": "remote"})
            cls._classes[ename] = klass
        err = klass.__new__(klass, evalue)
        RemoteError.__init__(err, ename, evalue, list(traceback))
        return err


def iopub_message(msg_type: str, content: dict) -> dict:
    """A message shaped like a kernel's iopub message, for handlers written for kernels."""
    header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "date": datetime.now(timezone.utc).isoformat()}
    return {"header": header, "msg_id": header["msg_id"], "msg_type": msg_type, "parent_header": {},
            "metadata": {}, "content": content, "buffers": []}


class BatchOutput:
    """What a batch route's cell shows while it runs: kernel-shaped messages to ``on_message``,
    notes of its own, and with several nodes each output line labelled with its rank. A handler
    that fails is remembered in ``problems``, to be raised once the cell is over."""

    def __init__(self, on_message: MessageHandler | None, nodes: int):
        self.on_message = on_message
        self.nodes = nodes
        self.problems: list[BaseException] = []
        self._line_start: dict[Any, bool] = {}

    def emit(self, msg_type: str, content: dict) -> None:
        if self.on_message is None:
            return
        try:
            self.on_message(iopub_message(msg_type, content))
        except Exception as e:  # the relay broke: say why once the cell is over
            self.problems.append(e)

    def note(self, text: str) -> None:
        self.emit("stream", {"name": "stderr", "text": f"jupyter_compute: {text}\n"})

    def stream(self, name: str, text: str, rank: int | None = None) -> None:
        if self.nodes > 1 and rank is not None:
            text = self._label(rank, name, text)
        self.emit("stream", {"name": name, "text": text})

    def _label(self, rank: int, name: str, text: str) -> str:
        at_start = self._line_start.get((rank, name), True)
        out = []
        for piece in text.splitlines(keepends=True):
            out.append(f"[rank {rank}] {piece}" if at_start else piece)
            at_start = piece.endswith(("\n", "\r"))
        self._line_start[(rank, name)] = at_start
        return "".join(out)


class Route(abc.ABC):
    """One way a cell travels to a target: a session that executes, interrupts and moves variables.

    A backend makes one with ``Backend.route(target)``, unopened; ``Workspace.open_route`` opens
    it and keeps it while the target's connection (``key``) stays the same.
    """

    #: The route's name ("kernel", "jupyter", "here", or a family's own).
    name: str = ""
    capabilities: Capabilities = Capabilities()
    #: The target this route reaches, and its kind, for messages.
    target: str = ""
    kind: str = ""
    #: What each cell becomes where nothing is kept between cells ("a new job"), for the note
    #: the notebook shows at the first cell.
    each_cell_runs_as: str = "a new task"
    #: How many times the route had to wake a kernel that sat idle on a request (routes that can).
    wakes: int = 0

    @property
    def key(self) -> Hashable:
        """What identifies the far end: an open route whose key equals a fresh route's still reaches
        the same kernel or cluster and is reused; None never matches (a new route every time)."""
        return None

    @property
    def described(self) -> str:
        """The target and its kind, as refusals name them."""
        if self.target and self.kind:
            return f"'{self.target}' ({self.kind})"
        return f"'{self.target}'" if self.target else f"the {self.name} route"

    def cell_options(self, *, push: bool = False, pull: list[str] | tuple[str, ...] = (),
                     nodes: int | None = None, environment: str | None = None) -> dict[str, Any]:
        """The one check of what a cell asks of this route, before anything runs: refuses what the
        route lacks, naming the target's kind, and returns the options ``execute`` takes."""
        caps, where = self.capabilities, self.described
        if push:
            caps.require("variables", where, "--push needs it")
        if pull:
            caps.require("variables", where, "--pull needs it")
        options: dict[str, Any] = {}
        if nodes is not None:
            if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
                raise InvalidRequest(f"--nodes takes a whole number of at least 1, not {nodes!r}", field="/nodes")
            if caps.nodes:
                options["nodes"] = nodes
            elif nodes > 1:
                caps.require("nodes", where, f"--nodes {nodes} needs it")
        if environment is not None:
            caps.require("environment", where, "--environment needs it")
            options["environment"] = environment
        if pull and self.declares_pull:
            options["pull"] = list(pull)  # a batch job must know before it runs what to write back
        self.check_options(**{k: v for k, v in options.items() if k == "nodes"})
        return options

    #: Whether ``execute`` must be told the variables to pull before the cell runs (a batch job).
    declares_pull: bool = False

    @abc.abstractmethod
    async def open(self, timeout: float | None = None) -> None:
        """Connect to the target; raise ``ExecutionError`` if it does not answer in time."""

    @abc.abstractmethod
    async def execute(self, code: str, *, on_message: MessageHandler | None = None,
                      stdin: StdinHandler | None = None, timeout: float | None = None) -> ExecutionResult:
        """Run ``code``, calling ``on_message`` for each published message as it arrives.

        ``stdin`` answers ``input()``; without it the code's ``input()`` fails on the target.
        When ``timeout`` expires the target is interrupted and ``ExecutionTimeout`` raised; when
        the awaiting task is cancelled the target is interrupted before the cancel propagates.
        A route also takes the options ``cell_options`` returned (``nodes``, ``environment``, ``pull``).
        """

    def check_options(self, **options: Any) -> None:
        """Refuse ``execute`` options this route cannot honour (say ``nodes`` beyond the cluster's
        size) before anything is sent; ``execute`` checks them again."""

    @abc.abstractmethod
    async def interrupt(self) -> None:
        """Interrupt whatever the target is running."""

    @abc.abstractmethod
    async def push(self, values: Any, *, timeout: float | None = None) -> TransferReport:
        """Set variables on the target from a name->object mapping (or a prepared payload)."""

    @abc.abstractmethod
    async def pull(self, names: list[str], *, timeout: float | None = None) -> tuple[dict[str, Any], TransferReport]:
        """Fetch variables from the target."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End the session; the target itself keeps running."""

    @property
    def is_open(self) -> bool:
        return False

    async def __aenter__(self) -> "Route":
        await self.open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


#: How a ``HereRoute`` runs a cell in the caller's own process: set by the face that has one (the
#: notebook's kernel sets it to run the cell there); unset, code runs in a namespace of this process.
RUN_HERE: contextvars.ContextVar[Callable[[str], Awaitable[ExecutionResult]] | None] = \
    contextvars.ContextVar("jupyter_compute_run_here", default=None)


class HereRoute(Route):
    """Cells of ``this-machine``, and of a notebook's own ``local``, run where the caller is."""

    name = "here"
    capabilities = Capabilities(persistent_namespace=True, stdin=True, interrupt=True, rich_output=True)
    _namespace: dict[str, Any] = {"__name__": "__main__"}

    def __init__(self, *, target: str = "", kind: str = ""):
        self.target = target
        self.kind = kind

    @property
    def key(self) -> Hashable:
        return ("here",)

    @property
    def described(self) -> str:
        name = f"'{self.target}' ({self.kind})" if self.target else "'local'"
        return f"{name}, which runs cells in this notebook's own kernel,"

    async def open(self, timeout: float | None = None) -> None:
        pass

    @property
    def is_open(self) -> bool:
        return True

    async def execute(self, code: str, *, on_message: MessageHandler | None = None,
                      stdin: StdinHandler | None = None, timeout: float | None = None) -> ExecutionResult:
        runner = RUN_HERE.get()
        if runner is not None:
            return await within(runner(code), timeout)
        return await within(asyncio.to_thread(self._exec, code), timeout)

    def _exec(self, code: str) -> ExecutionResult:
        import traceback
        try:
            exec(compile(code, "<cell>", "exec"), self._namespace)
        except Exception as e:
            return ExecutionResult("error", ename=type(e).__name__, evalue=str(e),
                                   traceback=traceback.format_exception(e))
        return ExecutionResult("ok")

    async def interrupt(self) -> None:
        """The caller's own interrupt reaches the code: nothing runs elsewhere."""

    async def push(self, values: Any, *, timeout: float | None = None) -> TransferReport:
        self.capabilities.require("variables", self.described, "--push needs it")
        raise AssertionError("unreachable")

    async def pull(self, names: list[str], *, timeout: float | None = None) -> tuple[dict[str, Any], TransferReport]:
        self.capabilities.require("variables", self.described, "--pull needs it")
        raise AssertionError("unreachable")

    async def close(self) -> None:
        pass
