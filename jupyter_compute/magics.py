"""``%compute`` and ``%%compute``: manage compute targets and run cells on them from a notebook.

``%load_ext jupyter_compute`` loads them (or, in every kernel,
``c.InteractiveShellApp.extensions = ["jupyter_compute"]`` in an IPython profile).

* ``%compute VERB ...`` takes the verbs and options of ``jupyter compute`` (list, show, create,
  update, start, stop, restart, delete, attach, detach, nodes, sizes, usage, kinds), run by the
  same code as the command line and shown as HTML tables, plus ``use``, ``status`` and ``login``
  (device-code sign-in to an Azure ML workspace, for this kernel).
* ``%%compute TARGET [--push a,b] [--pull c,d] [--nodes N] [--start] [--timeout S] [--workspace W]``
  runs the cell in TARGET's kernel. Everything that kernel publishes is re-published here, live,
  under this cell; its error is raised here once; ``input()`` prompts here; interrupting this
  kernel interrupts it. ``--nodes N`` runs it on N nodes at once, where the route can (a Dask
  cluster).
* ``%compute use TARGET`` sends every following cell to TARGET until ``%compute use local``.

A target's namespace persists between cells and is shared by every notebook that sends cells
to it, as on a shared compute instance: variables one notebook sets there, another sees.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import getpass
import html
import json
import keyword
import re
import shlex
import sys
import time
import uuid
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool, Float

from . import cli
from .errors import ComputeError, Conflict
from .execution import route_for
from .execution.base import RemoteError, Route, TransferReport
from .execution.loop import Bridge, CallerInterrupted, LoopThread, shared_compute
from .execution.transfer import Payload
from .models import State

LOCAL = "local"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
RELAYED = frozenset({"stream", "display_data", "update_display_data", "clear_output"})
OWN_VERBS = ("use", "status", "login")
_CELL_ROUTED = re.compile(r"^\s*%%?compute\b")
_LOCAL_CELL = re.compile(r"^\s*%%compute\s+local\s*$")


# -- output ----------------------------------------------------------------------------------------
class CellOutput:
    """Publishes onto this kernel's iopub under the running cell's parent header, from any thread.

    Outside a kernel (terminal IPython, tests on an InteractiveShell) it writes text instead.
    """

    def __init__(self, shell: Any):
        kernel = getattr(shell, "kernel", None)
        self.kernel = kernel if kernel is not None and hasattr(kernel, "iopub_socket") else None
        self.parent = self.kernel.get_parent("shell") if self.kernel is not None else None

    @property
    def rich(self) -> bool:
        return self.kernel is not None

    def flush_local(self) -> None:
        """So what this cell printed locally before comes before what the target prints."""
        for stream in (sys.stdout, sys.stderr):
            # ipykernel's flush is two round trips to its IO thread even with nothing buffered;
            # its streams say whether a write is waiting (other streams are simply flushed).
            if getattr(stream, "_flush_pending", True) is False:
                continue
            try:
                stream.flush()
            except Exception:
                pass

    def send(self, msg_type: str, content: dict) -> None:
        if self.kernel is not None:
            topic = f"stream.{content.get('name', 'stdout')}" if msg_type == "stream" else msg_type
            self.kernel.session.send(self.kernel.iopub_socket, msg_type, content, parent=self.parent,
                                     ident=topic.encode())
            return
        if msg_type == "stream":
            stream = sys.stderr if content.get("name") == "stderr" else sys.stdout
            stream.write(content.get("text", ""))
            stream.flush()
        elif msg_type in ("display_data", "update_display_data"):
            text = content.get("data", {}).get("text/plain")
            if text:
                print(text, flush=True)

    def stream(self, name: str, text: str) -> None:
        self.send("stream", {"name": name, "text": text})

    def display(self, data: dict, metadata: dict | None = None, *, display_id: str | None = None,
                update: bool = False) -> None:
        self.send("update_display_data" if update else "display_data",
                  {"data": data, "metadata": metadata or {},
                   "transient": {"display_id": display_id} if display_id else {}})


def _without_widget_views(content: dict) -> dict:
    """Remote widgets cannot render here (their comms stay on the target): keep their text fallback."""
    data = content.get("data")
    if isinstance(data, dict) and WIDGET_VIEW in data:
        content = {**content, "data": {k: v for k, v in data.items() if k != WIDGET_VIEW}}
    return content


class RemoteResult:
    """A target's execute_result, shown as this cell's result (and kept in ``_`` and ``Out``)."""

    def __init__(self, data: dict, metadata: dict | None = None):
        self.data = {k: v for k, v in data.items() if k != WIDGET_VIEW}
        self.metadata = metadata or {}

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.data, self.metadata

    def __repr__(self) -> str:
        return str(self.data.get("text/plain", "<result of a remote cell>"))


def _html_table(header: list[str], body: list[list[str]]) -> str:
    th = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in r) + "</tr>"
                  for r in body)
    return f"<table class='jupyter-compute'><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _pairs_html(pairs: list[tuple[str, str]]) -> str:
    return ("<table class='jupyter-compute'><tbody>" + "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>{html.escape(v)}</td></tr>"
        for k, v in pairs) + "</tbody></table>")


def _detail_pairs(t: dict) -> list[tuple[str, str]]:
    pairs = []
    for line in cli.text_detail(t).splitlines():
        k, _, v = line.strip().partition(": ")
        pairs.append((k, v))
    return pairs


class NotebookUI:
    """The CLI's ``TextUI`` twin for notebooks: HTML tables with text/plain fallback, live progress."""

    def __init__(self, out: CellOutput, bridge: Bridge | None = None, output: str = "table",
                 ask: Callable[[str, bool], str] | None = None):
        self.out = out
        self.bridge = bridge
        self.output = output
        self.ask = ask
        self.failure: dict | None = None
        self._progress_id: str | None = None
        self._progress_text = ""
        self._progress_of = ""

    def show(self, kind: str, data: Any) -> None:
        data = cli.plain(data)
        if self.output == "json":
            self.out.display({"application/json": data, "text/plain": json.dumps(data, indent=2)})
            return
        if kind == "operation":
            err = data.get("error")
            if data.get("status") == "failed":
                self.failure = data  # raised by the magic, so Run All stops here
                return
            text = f"{data['action']} {data['target']}: {data['status']}" + (f": {err['message']}" if err else "")
            self.out.display({"text/plain": text})
            return
        if kind == "target":
            self._finish_progress(data.get("state", ""))
            self.out.display({"text/html": _pairs_html(_detail_pairs(data)), "text/plain": cli.text_detail(data)})
            return
        header, body = cli.rows(kind, data)
        self.out.display({"text/html": _html_table(header, body) if body else f"<i>(no {html.escape(kind)})</i>",
                          "text/plain": cli.text_table(kind, data)})

    def progress(self, op: Any) -> None:
        if self.output != "table" or not op.progress:
            return
        text = f"{op.action} {op.target}: {op.progress}"
        if text == self._progress_text:
            return
        self._progress_text = text
        self._progress_of = f"{op.action} {op.target}"
        if self._progress_id is None or not self.out.rich:
            self._progress_id = self._progress_id or uuid.uuid4().hex
            self.out.display({"text/plain": text}, display_id=self._progress_id)
        else:
            self.out.display({"text/plain": text}, display_id=self._progress_id, update=True)

    def _finish_progress(self, state: str) -> None:
        if self._progress_id is not None and self.out.rich:
            self.out.display({"text/plain": f"{self._progress_of}: done, now {state}"},
                             display_id=self._progress_id, update=True)

    def confirm(self, question: str, flag: str) -> None:
        if self.ask is None or self.bridge is None:
            raise cli.UsageError(f"{question} Refusing without a way to ask: add {flag}.")
        answer = self.bridge.call_sync(self.ask, f"{question} [y/N] ", False)
        if str(answer).strip().lower() not in ("y", "yes"):
            raise cli.OperationAborted("not confirmed; nothing was changed")


# -- errors, shown as one readable line -------------------------------------------------------------
def _one_line(exc: BaseException, text: str | None = None) -> BaseException:
    """Make IPython show ``Type: message`` instead of the extension's frames."""
    line = f"{type(exc).__name__}: {text if text is not None else exc}"
    exc._render_traceback_ = lambda: [line]  # type: ignore[attr-defined]
    return exc


def _sign_in_hint(e: ComputeError, workspace: str | None) -> str:
    """What to run when Azure could not be signed in to."""
    if (e.details or {}).get("sign_in") != "device_code":
        return ""
    return " -- to sign in with a device code, run: %compute login" + (f" --workspace {workspace}" if workspace else "")


def _raise_friendly(e: BaseException, workspace: str | None = None) -> None:
    if isinstance(e, ComputeError):
        raise _one_line(e, e.message + _sign_in_hint(e, workspace)) from None
    if isinstance(e, cli.UsageError):
        raise UsageError(str(e)) from None
    if isinstance(e, cli.OperationAborted):
        raise _one_line(e) from None
    raise e


# -- argument parsing ------------------------------------------------------------------------------
class _HelpShown(Exception):
    pass


def _never_exit(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """argparse exits the process on bad usage; in a kernel that must be an error instead."""
    def error(message: str):
        raise UsageError(f"{parser.prog}: {message}")

    def exit(status: int = 0, message: str | None = None):
        if status:
            raise UsageError((message or "").strip() or f"{parser.prog}: bad usage")
        raise _HelpShown()

    parser.error = error  # type: ignore[method-assign]
    parser.exit = exit  # type: ignore[method-assign]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _never_exit(sub)
    return parser


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as e:
        raise UsageError(f"cannot read the options: {e}") from None


def _names(values: list[str] | None, option: str) -> list[str]:
    out: list[str] = []
    for v in values or []:
        for name in v.split(","):
            name = name.strip()
            if not name:
                continue
            if not name.isidentifier() or keyword.iskeyword(name):
                raise UsageError(f"{option}: {name!r} is not a variable name")
            if name not in out:
                out.append(name)
    return out


def _node_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"takes a whole number of at least 1, not {text!r}")
    return n


@functools.cache  # built once: argparse parsers keep no state between parses
def _cell_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="%%compute", add_help=True,
                                description="Run this cell in TARGET's kernel ('local': this notebook's own).")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--push", action="append", metavar="A,B", help="Send these local variables first")
    p.add_argument("--pull", action="append", metavar="C,D", help="Bring these variables back if the cell succeeds")
    p.add_argument("--nodes", type=_node_count, metavar="N",
                   help="Run the cell on N nodes at once, each with its rank and world_size, where TARGET "
                        "can (a Dask cluster)")
    p.add_argument("--environment", metavar="ENV",
                   help="Environment a cell sent as an Azure ML job runs in (NAME, NAME:VERSION or NAME@latest)")
    p.add_argument("--start", action="store_true", help="Start TARGET first if it is stopped")
    p.add_argument("--timeout", type=float, metavar="S", help="Bound the whole cell; interrupt TARGET when it fires")
    p.add_argument("--workspace", "-w", help="Workspace of TARGET (default: the configured one)")
    return _never_exit(p)


@functools.cache  # built once: argparse parsers keep no state between parses
def _use_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="%compute use", description="Send every following cell to TARGET; "
                                "'%compute use local' sends them to this notebook's kernel again.")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--workspace", "-w")
    return _never_exit(p)


@functools.cache  # built once: argparse parsers keep no state between parses
def _login_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="%compute login", description="Sign in to an Azure ML workspace with a device "
                                "code: open the page shown, enter the code, and the cell ends once you have signed "
                                "in (interrupt it to give up). The sign-in lasts as long as this kernel.")
    p.add_argument("--workspace", "-w", help="Workspace to sign in to (default: the configured one)")
    return _never_exit(p)


def _status_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="%compute status", description="Show where cells run and that target's state.")
    p.add_argument("target", metavar="TARGET", nargs="?")
    p.add_argument("--workspace", "-w")
    return _never_exit(p)


# -- the magics ------------------------------------------------------------------------------------
@magics_class
class ComputeMagics(Magics):
    report_transfers = Bool(True, help="Say how much data --push and --pull moved, and how fast.").tag(config=True)
    open_timeout = Float(60.0, help="Seconds a target's kernel has to answer when a cell first connects.").tag(config=True)

    def __init__(self, shell=None, **kw):
        super().__init__(shell=shell, **kw)
        self.loop = LoopThread.get()
        #: (workspace or None for the default, target) every cell goes to, or None for this kernel.
        self.active: tuple[str | None, str] | None = None
        self._routes: dict[tuple[str, str], Route] = {}

    # -- entry --------------------------------------------------------------------------------------
    @line_cell_magic
    def compute(self, line: str, cell: str | None = None):
        """%compute VERB [options]: manage targets (%compute --help). %%compute TARGET: run this cell there."""
        if cell is None:
            return self._line(line)
        return self._cell(line, cell)

    def transform_cell(self, lines: list[str]) -> list[str]:
        """Input transformer: after ``%compute use T`` wrap each cell into ``%%compute T``."""
        text = "".join(lines)
        first = next((ln for ln in lines if ln.strip()), "")
        if _LOCAL_CELL.match(first):
            # '%%compute local' means this kernel: run the body as an ordinary cell.
            body = lines[lines.index(first) + 1:]
            return body or ["\n"]
        if self.active is None or not text.strip() or _CELL_ROUTED.match(first):
            return lines
        ws, target = self.active
        args = shlex.join([target] + (["--workspace", ws] if ws else []))
        return [f"get_ipython().run_cell_magic('compute', {args!r}, {text!r})\n"]

    # -- helpers ------------------------------------------------------------------------------------
    def _ask(self) -> Callable[[str, bool], str] | None:
        """How to ask the person at the notebook for input, or None when the frontend cannot."""
        kernel = getattr(self.shell, "kernel", None)
        if kernel is not None and hasattr(kernel, "raw_input"):
            if not getattr(kernel, "_allow_stdin", False):
                return None
            return lambda prompt, password: kernel.getpass(prompt) if password else kernel.raw_input(prompt)
        if not (hasattr(sys.stdin, "isatty") and sys.stdin.isatty()):
            return None  # as the CLI: no prompt without a terminal
        return lambda prompt, password: getpass.getpass(prompt) if password else input(prompt)

    def _run(self, make: Callable[[Bridge], Any], workspace: str | None = None) -> Any:
        try:
            return self.loop.run(make)
        except (ComputeError, cli.UsageError, cli.OperationAborted) as e:
            _raise_friendly(e, workspace)
        except KeyboardInterrupt:
            raise _one_line(KeyboardInterrupt("interrupted")) from None

    @staticmethod
    async def _workspace(name: str | None):
        compute = await shared_compute()
        return compute.workspace(name)

    # -- %compute VERB ------------------------------------------------------------------------------
    def _line(self, line: str):
        argv = _split(line)
        parser = _never_exit(cli.build_parser(prog="%compute"))
        if not argv:
            raise UsageError("say what to do: %compute VERB ... (VERB: " + ", ".join(self.verbs()) + ")")
        verb = argv[0]
        try:
            if verb == "use":
                return self._use(_use_parser().parse_args(argv[1:]))
            if verb == "status":
                return self._status(_status_parser().parse_args(argv[1:]))
            if verb == "login":
                return self._login(_login_parser().parse_args(argv[1:]))
            args = parser.parse_args(argv)
        except _HelpShown:
            return None
        return self._cli(args)

    def verbs(self) -> list[str]:
        parser = cli.build_parser()
        subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return [*subs.choices, *OWN_VERBS]

    def _cli(self, args: argparse.Namespace):
        if args.command not in ("create", "attach") and (getattr(args, "name", None) or "").lower() == LOCAL:
            raise UsageError(f"'{LOCAL}' is this notebook's own kernel, not a target: "
                             f"'%compute {args.command}' does not apply to it")
        out = CellOutput(self.shell)
        ask = self._ask()

        async def go(bridge: Bridge):
            ui = NotebookUI(out, bridge, args.output, ask)
            compute = await shared_compute()
            code = await cli.run(args, compute, ui)
            return code, ui.failure

        code, failure = self._run(go, args.workspace)
        if code != 0:
            err = (failure or {}).get("error") or {}
            what = f"{failure['action']} {failure['target']}" if failure else args.command
            e = ComputeError(f"{what} failed: {err.get('message', 'see above')}", details=err.get("details"))
            raise _one_line(e, e.message + _sign_in_hint(e, args.workspace))

    # -- %compute login -----------------------------------------------------------------------------
    def _login(self, args: argparse.Namespace):
        out = CellOutput(self.shell)

        async def go(bridge: Bridge):
            compute = await shared_compute()
            ws = await compute.resolve(args.workspace)
            info = await compute.sign_ins.start(ws)
            link = html.escape(info["verification_uri"])
            out.display({"text/plain": info["message"],
                         "text/html": f"To sign in to workspace <b>{html.escape(ws.id)}</b>, open <a href='{link}' "
                                      f"target='_blank' rel='noopener'>{link}</a> and enter the code "
                                      f"<code>{html.escape(info['user_code'])}</code>."})
            try:
                return await compute.sign_ins.get(ws).wait()
            except asyncio.CancelledError:
                compute.sign_ins.cancel(ws)  # interrupted: nobody is waiting for the code any more
                raise

        info = self._run(go, args.workspace)
        if info["state"] != "signed_in":
            raise _one_line(ComputeError(f"sign-in to workspace '{info['workspace']}' {info['state']}: "
                                         f"{info['error']}"))
        out.display({"text/plain": f"Signed in to workspace '{info['workspace']}' as {info['account']}."})
        return None

    # -- %compute use / status ----------------------------------------------------------------------
    def _use(self, args: argparse.Namespace):
        out = CellOutput(self.shell)
        if args.target.lower() == LOCAL:
            if args.workspace:
                raise UsageError(f"'{LOCAL}' is this notebook's own kernel: --workspace does not apply")
            self.active = None
            out.display({"text/plain": "Cells run in this notebook's kernel again."})
            return None

        async def check(bridge: Bridge):
            ws = await self._workspace(args.workspace)
            return ws.id, await ws.get(args.target)

        ws_id, target = self._run(check)
        self.active = (args.workspace, target.name)
        note = "" if target.state == State.running else (
            f" It is {target.state.value}: start it with '%compute start {target.name}' before running cells.")
        out.display({"text/plain": f"Cells now run on '{target.name}' (workspace '{ws_id}'). "
                                   f"'%compute use local' runs them here again.{note}"})
        return None

    def _status(self, args: argparse.Namespace):
        out = CellOutput(self.shell)
        name = args.target or (self.active[1] if self.active else None)
        workspace = args.workspace or (self.active[0] if self.active and not args.target else None)
        if name is not None and name.lower() == LOCAL:
            name = None

        async def gather(bridge: Bridge):
            if name is None:
                return None, None, None
            ws = await self._workspace(workspace)
            target = await ws.get(name)
            route = self._routes.get((ws.id, target.name))
            return ws.id, target, route

        ws_id, target, route = self._run(gather)
        here = ("this notebook's kernel (local)" if self.active is None
                else f"{self.active[1]} (workspace {self.active[0] or 'default'})")
        pairs = [("cells run in", here)]
        if target is not None:
            pairs += [("target", target.name), ("workspace", ws_id), ("kind", target.kind),
                      ("state", target.state.value)]
            if target.errors:
                pairs.append(("last error", target.errors[-1].message))
            if route is not None and route.is_open:
                info = getattr(route, "kernel_info", {}) or {}
                lang = info.get("language_info", {})
                pairs.append(("connected", f"yes ({lang.get('name', 'kernel')} {lang.get('version', '')})".strip()))
                pid = getattr(route, "pid", None)
                if pid:
                    pairs.append(("kernel pid", str(pid)))
                caps = route.capabilities.as_dict()
                pairs.append(("route", f"{route.name}: " + ", ".join(k for k, v in caps.items() if v)))
            else:
                pairs.append(("connected", "no (connects on the first cell)"))
        text = "\n".join(f"{k}: {v}" for k, v in pairs)
        out.display({"text/html": _pairs_html(pairs), "text/plain": text})
        return None

    # -- %%compute TARGET ---------------------------------------------------------------------------
    def _cell(self, line: str, cell: str):
        try:
            opts = _cell_parser().parse_args(_split(line))
        except _HelpShown:
            return None
        push, pull = _names(opts.push, "--push"), _names(opts.pull, "--pull")
        if opts.timeout is not None and not opts.timeout > 0:
            raise UsageError("--timeout takes a number of seconds greater than 0")
        if opts.target.lower() == LOCAL:
            if push or pull or opts.start or opts.workspace or opts.nodes is not None:
                raise UsageError(f"'{LOCAL}' is this notebook's own kernel: --push, --pull, --nodes, --start "
                                 "and --workspace do not apply to it")
            return self._run_here(cell)
        ns = self.shell.user_ns
        missing = [n for n in push if n not in ns]
        if missing:
            raise UsageError(f"--push: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                             "not defined in this notebook")
        values = {n: ns[n] for n in push}
        out = CellOutput(self.shell)
        out.flush_local()
        ask = self._ask()
        started = time.monotonic()
        phase = ["connecting"]

        async def go(bridge: Bridge):
            body = self._remote_cell(bridge, out, opts, cell, values, pull, ask, phase)
            if opts.timeout is None:
                return await body
            return await asyncio.wait_for(body, opts.timeout)

        try:
            outcome = self.loop.run(go)
        except RemoteError:
            raise  # the target's own exception, shown with its traceback
        except (ComputeError, cli.UsageError) as e:
            _raise_friendly(e, opts.workspace)
        except asyncio.TimeoutError as e:
            if opts.timeout is None:
                raise _one_line(e) from None
            what = f"'{opts.target}' was interrupted" if phase[0] == "running" else f"it stopped while {phase[0]}"
            raise _one_line(TimeoutError(f"the cell ran past --timeout {opts.timeout:g} s "
                                         f"({time.monotonic() - started:.1f} s); {what}")) from None
        except KeyboardInterrupt:
            raise _one_line(KeyboardInterrupt(f"interrupted; the cell on '{opts.target}' was interrupted too"
                                              if phase[0] == "running" else "interrupted")) from None
        if outcome == "local":
            return self._run_here(cell)
        pulled, result = outcome
        ns.update(pulled)
        if result.result:
            return RemoteResult(result.result, result.result_metadata)
        return None

    def _run_here(self, cell: str):
        """Run the body in this kernel, as an ordinary cell would."""
        # The body has been routed already: under '%compute use' it must not be wrapped again.
        active, self.active = self.active, None
        try:
            result = self.shell.run_cell(cell, store_history=False)
        finally:
            self.active = active
        if not result.success:
            # The error was shown by run_cell; stop Run All without showing it twice.
            raise _one_line(RuntimeError("the cell failed (see above)"))
        return None

    async def _remote_cell(self, bridge: Bridge, out: CellOutput, opts, cell: str, values: dict,
                           pull: list[str], ask, phase: list[str]):
        ws = await self._workspace(opts.workspace)
        phase[0] = "pickling --push variables"
        payload = await asyncio.to_thread(Payload.from_values, values) if values else None
        phase[0] = "connecting"
        try:
            # A running target, the common case, is reached with one look at the store.
            info = await ws.route_info(opts.target)
        except Conflict as e:
            if e.reason != "not_running":
                raise
            info = await self._start_for_cell(ws, out, opts, phase)
        if info.get("route") == "local":
            if payload is not None or pull or opts.nodes is not None:
                raise cli.UsageError(f"'{opts.target}' runs cells in this notebook's own kernel: "
                                     "--push, --pull and --nodes do not apply")
            return "local"
        route = await self._open_route(ws.id, opts.target, info)
        if payload is not None:
            route.capabilities.require("variables", route.name, "--push needs it")
        if pull:
            route.capabilities.require("variables", route.name, "--pull needs it")
        options: dict[str, Any] = {}
        if opts.nodes is not None and route.capabilities.nodes:
            options["nodes"] = opts.nodes
        elif opts.nodes is not None and opts.nodes > 1:
            route.capabilities.require("nodes", route.name, f"--nodes {opts.nodes} needs it")
        accepts = getattr(route, "execute_options", ())
        if opts.environment is not None:
            if "environment" not in accepts:
                raise cli.UsageError(f"--environment does not apply to '{opts.target}' ({route.name} route)")
            options["environment"] = opts.environment
        if pull and "pull" in accepts:
            options["pull"] = pull  # a batch job must know before it runs what to write back
        route.check_options(**{k: v for k, v in options.items() if k == "nodes"})
        if payload is not None:
            phase[0] = "pushing variables"
            self._report(out, await route.push(payload))

        def relay(msg: dict) -> None:
            if msg["msg_type"] in RELAYED:
                out.send(msg["msg_type"], _without_widget_views(msg["content"]))

        async def answer(prompt: str, password: bool) -> str:
            try:
                return await bridge.call(ask, prompt, password)
            except CallerInterrupted:
                raise asyncio.CancelledError() from None

        stdin = answer if ask is not None and route.capabilities.stdin else None

        phase[0] = "running"
        result = await route.execute(cell, on_message=relay, stdin=stdin, **options)
        result.raise_for_error()
        pulled: dict[str, Any] = {}
        if pull:
            phase[0] = "pulling variables"
            pulled, report = await route.pull(pull)
            self._report(out, report)
        return pulled, result

    @staticmethod
    async def _start_for_cell(ws, out: CellOutput, opts, phase: list[str]) -> dict:
        """The route to a target that is not running: started first under --start, else why not."""
        target = await ws.get(opts.target)
        # Unknown or failed without --start: route_info says what went wrong and what to do (or, if
        # the target came back meanwhile, how to reach it).
        if target.state != State.running and (opts.start or target.state not in (State.unknown, State.failed)):
            if not opts.start:
                raise Conflict(f"'{target.name}' is {target.state.value}, so the cell did not run. Start it with "
                               f"'%compute start {target.name}', or add --start.", reason="not_running")
            phase[0] = "starting the target"
            ui = NotebookUI(out)
            # Something else may be starting it already: follow that operation instead of a second one.
            running = [o for o in await ws.store.running_operations(ws.id) if o["target"] == target.name]
            if running:
                await ws.wait_operation(running[0]["id"], ui.progress)
                target = await ws.get(target.name)
            if target.state != State.running:
                op = await ws.start(target.name, wait=True, on_progress=ui.progress)
                if op.status.value == "failed":
                    raise ComputeError(f"starting '{target.name}' failed: "
                                       f"{(op.error or {}).get('message', 'unknown error')}")
            ui._finish_progress(State.running.value)
        phase[0] = "connecting"
        return await ws.route_info(target.name)

    async def _open_route(self, ws_id: str, name: str, info: dict) -> Route:
        key = (ws_id, name)
        route = self._routes.get(key)
        if route is not None and not (route.is_open and route.matches(info)):
            self._routes.pop(key, None)
            await route.close()
            route = None
        if route is None:
            route = route_for(info, target=name)
            await route.open(timeout=self.open_timeout)
            self._routes[key] = route
        return route

    def _report(self, out: CellOutput, report: TransferReport) -> None:
        if self.report_transfers and report.names:
            out.stream("stderr", f"jupyter_compute: {report}\n")

    def close(self) -> None:
        routes, self._routes = list(self._routes.values()), {}
        for r in routes:
            self.loop.submit(r.close())


# -- the extension ---------------------------------------------------------------------------------
def _magics(shell) -> ComputeMagics | None:
    inst = shell.magics_manager.registry.get("ComputeMagics")
    return inst if isinstance(inst, ComputeMagics) else None


def load_ipython_extension(ipython) -> None:
    """``%load_ext jupyter_compute``: register the magics and the routing input transformer."""
    if _magics(ipython) is not None:
        return
    magics = ComputeMagics(shell=ipython)
    ipython.register_magics(magics)
    ipython.input_transformers_cleanup.append(magics.transform_cell)


def unload_ipython_extension(ipython) -> None:
    magics = _magics(ipython)
    if magics is None:
        return
    if magics.transform_cell in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.remove(magics.transform_cell)
    magics.close()
    ipython.magics_manager.registry.pop("ComputeMagics", None)
    ipython.magics_manager.magics["line"].pop("compute", None)
    ipython.magics_manager.magics["cell"].pop("compute", None)


def active_route(shell=None) -> tuple[str | None, str] | None:
    """(workspace, target) the notebook's cells go to, or None when they run in its own kernel."""
    magics = _magics(shell or _shell())
    return magics.active if magics else None


def set_active_route(target: str | None, workspace: str | None = None, shell=None) -> None:
    """What ``%compute use`` does, for the widgets: None or 'local' runs cells here again."""
    shell = shell or _shell()
    magics = _magics(shell)
    if magics is None:
        load_ipython_extension(shell)
        magics = _magics(shell)
    magics.active = None if target is None or target.lower() == LOCAL else (workspace, target)


def _shell():
    from IPython import get_ipython
    shell = get_ipython()
    if shell is None:
        raise RuntimeError("no IPython shell is running")
    return shell
