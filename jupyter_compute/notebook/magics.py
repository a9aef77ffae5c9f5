"""``%compute`` and ``%%compute``: manage compute targets and run cells on them from a notebook.

``%load_ext jupyter_compute`` loads them (or, in every kernel,
``c.InteractiveShellApp.extensions = ["jupyter_compute"]`` in an IPython profile).

* ``%compute VERB ...`` takes the verbs and options of ``jupyter compute`` (list, show, create,
  update, start, stop, restart, delete, attach, detach, nodes, sizes, usage, kinds), run by the
  same code as the command line and shown as HTML tables, plus ``use``, ``status`` and ``login``
  (device-code sign-in to an Azure ML workspace, for this kernel).
* ``%%compute TARGET [--push a,b] [--pull c,d] [--nodes N] [--start] [--timeout S] [--workspace W] [--verbose]``
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
import keyword
import re
import shlex
import sys
import time
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool, Float

from .. import commands
from ..core.errors import ComputeError, Conflict
from ..core.route import CELL_LABEL, RUN_HERE, ExecutionResult, HereRoute, RemoteError, Route, TransferReport
from .bridge import Bridge, CallerInterrupted, LoopThread, shared_compute
from .output import CellOutput, NotebookUI, RemoteResult, _pairs_html, _without_widget_views
from ..transport.transfer import Payload
from ..core.models import State

LOCAL = "local"
RELAYED = frozenset({"stream", "display_data", "update_display_data", "clear_output"})
OWN_VERBS = ("use", "status", "login")
_CELL_ROUTED = re.compile(r"^\s*%%?compute\b")
_LOCAL_CELL = re.compile(r"^\s*%%compute\s+local\s*$")


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
    if isinstance(e, commands.UsageError):
        raise UsageError(str(e)) from None
    if isinstance(e, commands.OperationAborted):
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
    # How the cell came to be routed: by the notebook toolbar's picker (its messages then name the
    # toolbar and the Compute panel), or typed (they name the magic).
    p.add_argument("--routed-by", choices=["toolbar"], help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, metavar="S", help="Bound the whole cell; interrupt TARGET when it fires")
    p.add_argument("--workspace", "-w", help="Workspace of TARGET (default: the configured one)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="Say how much data --push and --pull moved, and how fast")
    return _never_exit(p)


@functools.cache  # built once: argparse parsers keep no state between parses
def _use_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="%compute use", description="Send every following cell to TARGET; "
                                "'%compute use local' sends them to this notebook's kernel again.")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--workspace", "-w")
    p.add_argument("--routed-by", choices=["toolbar"], help=argparse.SUPPRESS)
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
    report_transfers = Bool(False, help="Say how much data --push and --pull moved, and how fast, after every "
                                        "cell that moves some (as --verbose does for one cell).").tag(config=True)
    open_timeout = Float(60.0, help="Seconds a target's kernel has to answer when a cell first connects.").tag(config=True)

    def __init__(self, shell=None, **kw):
        super().__init__(shell=shell, **kw)
        self.loop = LoopThread.get()
        #: (workspace or None for the default, target) every cell goes to, or None for this kernel.
        self.active: tuple[str | None, str] | None = None
        #: "toolbar" when the notebook toolbar's picker set ``active``.
        self.routed_by: str | None = None
        self._here = HereRoute()
        #: Targets whose "each cell runs afresh" note this session has shown.
        self._told_afresh: set[str] = set()

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
        args = shlex.join([target] + (["--workspace", ws] if ws else []) +
                          (["--routed-by", self.routed_by] if self.routed_by else []))
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
        except (ComputeError, commands.UsageError, commands.OperationAborted) as e:
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
        parser = _never_exit(commands.build_parser(prog="%compute"))
        if not argv:
            raise UsageError("say what to do: %compute VERB ... (VERB: " + ", ".join(self.verbs()) + ")")
        verb = argv[0]
        if verb in ("-h", "--help"):
            print(self.help_text())
            return None
        asked = commands.asked_kind_help(argv)
        if asked is not None:
            # `%compute create --kind K --help`: that kind's fields only, as the command line gives them.
            verb, kind, ws = asked

            async def help_of(bridge: Bridge) -> str:
                return commands.kind_help("%compute", verb, (await self._workspace(ws)).kind_spec(kind))
            print(self._run(help_of, ws))
            return None
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

    def help_text(self) -> str:
        """``%compute --help``: the command line's verbs, and the notebook's own beside them."""
        own = "\n".join(f"    {p.prog.split()[-1]:<10}{p.description}"
                        for p in (_use_parser(), _status_parser(), _login_parser()))
        return (f"{commands.build_parser(prog='%compute').format_help().rstrip()}\n\n"
                f"in a notebook, also:\n{own}\n\n"
                "%%compute TARGET [--push A,B] [--pull C,D] [--nodes N] [--start] [-v] runs one cell on TARGET "
                "(%%compute --help).")

    def verbs(self) -> list[str]:
        parser = commands.build_parser()
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
            code = await commands.run(args, compute, ui)
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
            sign_ins = compute.sign_ins(ws)
            info = await sign_ins.start(ws)
            link = html.escape(info["verification_uri"])
            out.display({"text/plain": info["message"],
                         "text/html": f"To sign in to workspace <b>{html.escape(ws.id)}</b>, open <a href='{link}' "
                                      f"target='_blank' rel='noopener'>{link}</a> and enter the code "
                                      f"<code>{html.escape(info['user_code'])}</code>."})
            try:
                return await sign_ins.get(ws).wait()
            except asyncio.CancelledError:
                sign_ins.cancel(ws)  # interrupted: nobody is waiting for the code any more
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
            target = await ws.get(args.target)
            if target.state == State.running:
                # Connect now, so a target cells cannot reach says so here rather than at the next cell.
                await ws.open_route(target.name, timeout=self.open_timeout)
            return ws.id, target

        ws_id, target = self._run(check)
        self.active = (args.workspace, target.name)
        self.routed_by = args.routed_by
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
            route = ws.route_if_open(target.name)
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
                wakes = route.wakes
                if wakes:
                    pairs.append(("woken", f"{wakes} time{'s' if wakes != 1 else ''}: its kernel said it was idle "
                                           "but had not begun a cell, and a second connection woke it. ipykernel "
                                           "7.0 to 7.3 can do this; 7.4 (for Python 3.11 and later) fixes it"))
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
            if opts.start or opts.workspace:
                raise UsageError(f"'{LOCAL}' is this notebook's own kernel: --start and --workspace do not apply to it")
            try:
                self._here.cell_options(push=bool(push), pull=pull, nodes=opts.nodes, environment=opts.environment)
            except ComputeError as e:
                raise UsageError(e.message) from None
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
            pulled, result = self.loop.run(go)
        except RemoteError:
            raise  # the target's own exception, shown with its traceback
        except (ComputeError, commands.UsageError) as e:
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
        ns.update(pulled)
        if result.result:
            return RemoteResult(result.result, result.result_metadata)
        return None

    def _run_here(self, cell: str) -> ExecutionResult:
        """Run the body in this kernel, as an ordinary cell would (a ``HereRoute``'s cell)."""
        # The body has been routed already: under '%compute use' it must not be wrapped again.
        active, self.active = self.active, None
        try:
            result = self.shell.run_cell(cell, store_history=False)
        finally:
            self.active = active
        if not result.success:
            # The error was shown by run_cell; stop Run All without showing it twice.
            raise _one_line(RuntimeError("the cell failed (see above)"))
        return ExecutionResult("ok")

    async def _route(self, ws, opts, out: CellOutput) -> Route:
        """The route of this cell: the notebook's own kernel for 'local', else the core's."""
        if opts.target.lower() == LOCAL:
            return self._here
        ui = NotebookUI(out)
        try:
            return await ws.open_route(opts.target, start=opts.start, progress=ui.progress,
                                       timeout=self.open_timeout)
        except Conflict as e:
            if e.reason == "not_running" and not opts.start:
                raise Conflict(not_running(opts.target, e.details or {}, opts.routed_by), reason="not_running",
                               details=e.details) from None
            raise
        finally:
            ui._finish_progress("running")

    async def _remote_cell(self, bridge: Bridge, out: CellOutput, opts, cell: str, values: dict,
                           pull: list[str], ask, phase: list[str]):
        ws = None if opts.target.lower() == LOCAL else await self._workspace(opts.workspace)
        phase[0] = "pickling --push variables"
        payload = await asyncio.to_thread(Payload.from_values, values) if values else None
        phase[0] = "connecting"
        route = await self._route(ws, opts, out)
        options = route.cell_options(push=payload is not None, pull=pull, nodes=opts.nodes,
                                     environment=opts.environment)
        afresh = not route.capabilities.persistent_namespace
        if afresh and route.target not in self._told_afresh:
            # Once per target and session: where nothing is kept, a variable of an earlier cell is gone.
            self._told_afresh.add(route.target)
            out.display({"text/plain": f"jupyter_compute: each cell on '{route.target}' runs as "
                                       f"{route.each_cell_runs_as}; variables move with --push and --pull"})
        if payload is not None:
            phase[0] = "pushing variables"
            self._report(out, await route.push(payload), opts.verbose)

        def relay(msg: dict) -> None:
            if msg["msg_type"] in RELAYED:
                out.send(msg["msg_type"], _without_widget_views(msg["content"]))

        async def answer(prompt: str, password: bool) -> str:
            try:
                return await bridge.call(ask, prompt, password)
            except CallerInterrupted:
                raise asyncio.CancelledError() from None

        stdin = answer if ask is not None and route.capabilities.stdin else None
        # A cell of this notebook's own kernel (or this machine's) runs on the thread waiting here.
        RUN_HERE.set(lambda code: bridge.call(self._run_here, code))

        phase[0] = "running"
        # The number IPython shows for this cell: its input is stored under it before it runs
        # (``execution_count`` itself is already the next one's on some IPython versions).
        CELL_LABEL.set(f"In[{len(self.shell.history_manager.input_hist_parsed) - 1}]")
        result = await route.execute(cell, on_message=relay, stdin=stdin, **options)
        if afresh and result.status == "error" and result.ename == "NameError":
            _suggest_push(result, route.target)
        result.raise_for_error()
        pulled: dict[str, Any] = {}
        if pull:
            phase[0] = "pulling variables"
            pulled, report = await route.pull(pull)
            self._report(out, report, opts.verbose)
        return pulled, result

    def _report(self, out: CellOutput, report: TransferReport, verbose: bool) -> None:
        """One plain status line, asked for: a transfer that went well is no news, and stderr (which
        JupyterLab paints as an error) is for what went wrong."""
        if (verbose or self.report_transfers) and report.names:
            out.display({"text/plain": f"jupyter_compute: {report}"})

    def close(self) -> None:
        """Routes belong to the core's workspaces, which close them when the process ends."""


def _suggest_push(result, target: str) -> None:
    """A name a cell expected from an earlier one, on a route that keeps nothing: say how to send it."""
    m = re.search(r"name '([^']+)' is not defined", result.evalue or "")
    name = m.group(1) if m else "NAME"
    hint = (f"Each cell on '{target}' runs afresh, without earlier cells' variables: send '{name}' from "
            f"this notebook with --push {name}")
    result.evalue = f"{result.evalue}. {hint}"
    if result.traceback:
        result.traceback = [*result.traceback, hint]


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


def not_running(name: str, details: dict, routed_by: str | None) -> str:
    """Why a cell did not run on a target that is not running, and what to do, in the words of how
    the cell was routed: the toolbar's picker and the Compute panel, or the magic."""
    state = details.get("state") or "not running"
    error = (details.get("error") or {}).get("message")
    why = f": {error.rstrip('. ')}" if error and state in ("failed", "unknown") else ""
    head = f"'{name}' is {state}{why}, so the cell did not run."
    if routed_by == "toolbar":
        if state == "unknown":
            return (f"{head} It may come back by itself: see it in the Compute panel and run the cell again, or "
                    "restart it there.")
        return (f"{head} Start it in the Compute panel (its Start action), or pick another target in the "
                "notebook's toolbar.")
    if state == "unknown":
        return (f"{head} It may come back by itself: check it with '%compute status {name}' and run the cell "
                f"again, or restart it with '%compute restart {name}'.")
    again = " again" if state == "failed" else ""
    return f"{head} Start it{again} with '%compute start {name}', or add --start to this cell."


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
    magics.routed_by = None


def _shell():
    from IPython import get_ipython
    shell = get_ipython()
    if shell is None:
        raise RuntimeError("no IPython shell is running")
    return shell
