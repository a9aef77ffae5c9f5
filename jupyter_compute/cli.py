"""``jupyter compute``: the command line over the same core as the REST API and the magics.

Exit codes: 0 success; 2 bad usage, invalid input or an unknown target; 1 the operation failed
(a conflict or a backend error included). ``build_parser`` and ``run`` are shared with the
``%compute`` magic, which renders the same results as HTML.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import datetime, timezone
from typing import Any, Callable

import yaml
from pydantic import BaseModel

from .errors import ComputeError, Conflict, InvalidRequest, NotFound
from .models import Operation, Target

#: CLI option -> spec field, for every kind that has the field. Later families add theirs here.
SPEC_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--size", {"help": "VM size or machine size name"}),
    ("--min-nodes", {"type": int, "help": "Fewest nodes a cluster scales down to"}),
    ("--max-nodes", {"type": int, "help": "Most nodes a cluster scales up to"}),
    ("--idle-seconds-before-scaledown", {"type": int, "help": "Idle seconds before a cluster node is released"}),
    ("--idle-shutdown-minutes", {"type": int, "help": "Idle minutes before the target stops itself"}),
    ("--priority", {"choices": ["dedicated", "low-priority"], "help": "Node priority"}),
    ("--resource-id", {"help": "Azure resource id of the compute to attach"}),
    ("--python", {"help": "Python interpreter, venv or conda env path for a local kernel"}),
    ("--env", {"action": "append", "metavar": "K=V", "help": "Environment variable (repeatable)"}),
    ("--cwd", {"help": "Working directory"}),
    ("--memory-limit-mb", {"type": int, "help": "Stop the target when it uses more memory than this"}),
    ("--description", {"help": "Free text shown in lists"}),
    ("--tag", {"action": "append", "metavar": "K=V", "help": "Tag (repeatable)"}),
]
KV_FIELDS = {"env": "env", "tag": "tags"}


class UsageError(Exception):
    """Bad usage found after parsing; exit code 2."""


def _field(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def _kv(values: list[str] | None, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values or []:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise UsageError(f"--{option} takes KEY=VALUE, got {v!r}")
        out[k] = val
    return out


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The spec fields given on the command line, merged over those of ``-f spec.yaml``."""
    spec: dict[str, Any] = {}
    if getattr(args, "file", None):
        try:
            with open(args.file) as f:
                loaded = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(f"cannot read spec file {args.file}: {e}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"spec file {args.file} must hold a mapping of field: value")
        spec.update(loaded)
    for option, _ in SPEC_OPTIONS:
        field = _field(option)
        value = getattr(args, field, None)
        if value is None:
            continue
        if field in KV_FIELDS:
            spec[KV_FIELDS[field]] = {**spec.get(KV_FIELDS[field], {}), **_kv(value, field)}
        else:
            spec[field] = value
    return spec


def build_parser(prog: str = "jupyter compute") -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", "-w", help="Workspace id (default: the configured or discovered one, else 'local')")
    common.add_argument("--output", "-o", choices=["table", "json"], default="table", help="Output format")
    wait = argparse.ArgumentParser(add_help=False)
    wait.add_argument("--no-wait", action="store_true", help="Return once the operation has started")
    yes = argparse.ArgumentParser(add_help=False)
    yes.add_argument("--yes", "-y", action="store_true", help="Do not ask for confirmation")
    spec = argparse.ArgumentParser(add_help=False)
    for option, kw in SPEC_OPTIONS:
        spec.add_argument(option, **kw)
    specfile = argparse.ArgumentParser(add_help=False)
    specfile.add_argument("-f", "--file", metavar="SPEC.yaml", help="YAML file of spec fields (options override it)")

    p = argparse.ArgumentParser(prog=prog, description="See and manage compute targets: this machine, local kernels, "
                                "clusters, remote machines and Azure Machine Learning compute.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, help, parents=(), target=True, **kw):
        sp = sub.add_parser(name, help=help, description=help, parents=[common, *parents], **kw)
        if target:
            sp.add_argument("name", metavar="NAME", help="Target name")
        return sp

    add("list", "List targets with their state", target=False)
    add("show", "Show one target in full")
    sp = add("create", "Create a target (starts it when the kind runs on create)", [wait, spec, specfile])
    sp.add_argument("--kind", "-k", required=True, help="Kind of target; see 'jupyter compute kinds'")
    add("update", "Change fields of a target", [spec, specfile])
    for verb in ("start", "stop", "restart"):
        add(verb, f"{verb.capitalize()} a target", [wait, yes] if verb != "start" else [wait])
    add("delete", "Delete a target (an attached one is detached)", [wait, yes])
    sp = add("attach", "Attach existing compute as a target", [wait, spec, specfile])
    sp.add_argument("--kind", "-k", required=True, help="Kind of target; see 'jupyter compute kinds'")
    sp.add_argument("--force", action="store_true", help="Attach even if the resource is attached under another name")
    add("detach", "Forget an attached target; the resource itself is left alone", [wait, yes])
    add("nodes", "List a target's nodes")
    add("sizes", "List sizes targets can have", target=False)
    add("usage", "Show quota use against limits", target=False)
    add("kinds", "List the kinds of target a workspace offers", target=False)
    return p


# -- rendering --------------------------------------------------------------------------------------

def _plain(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, list):
        return [_plain(o) for o in obj]
    return obj


def _size(t: dict) -> str:
    s = t.get("size")
    if not s:
        return ""
    bits = [s["name"]]
    if s.get("vcpus"):
        bits.append(f"{s['vcpus']} vCPU")
    if s.get("memory_gb"):
        bits.append(f"{s['memory_gb']:g} GB")
    if s.get("gpus"):
        bits.append(f"{s['gpus']} GPU")
    return ", ".join(bits)


def _nodes(t: dict) -> str:
    n = t.get("nodes")
    if not n or n.get("current") is None:
        return ""
    return f"{n['current']}/{n['max']}" if n.get("max") is not None else str(n["current"])


def _until(ts: str | None) -> str:
    if not ts:
        return ""
    left = (datetime.fromisoformat(ts) - datetime.now(timezone.utc)).total_seconds()
    return f"{max(0, int(left // 60))} min"


COLUMNS: dict[str, list[tuple[str, Callable[[dict], Any]]]] = {
    "targets": [("NAME", lambda t: t["name"]), ("KIND", lambda t: t["kind"]), ("STATE", lambda t: t["state"]),
                ("SIZE", _size), ("NODES", _nodes), ("IDLE SHUTDOWN", lambda t: _until(t.get("idle_shutdown_at")))],
    "nodes": [("ID", lambda n: n["id"]), ("STATE", lambda n: n["state"]), ("ADDRESS", lambda n: n.get("address") or ""),
              ("PORT", lambda n: n.get("port") or "")],
    "sizes": [("NAME", lambda s: s["name"]), ("VCPUS", lambda s: s.get("vcpus") or ""),
              ("MEMORY GB", lambda s: s.get("memory_gb") or ""), ("GPUS", lambda s: s.get("gpus") or 0),
              ("PRICE/H", lambda s: s.get("price_per_hour") or "")],
    "usage": [("NAME", lambda u: u["name"]), ("CURRENT", lambda u: u["current"]),
              ("LIMIT", lambda u: "" if u.get("limit") is None else u["limit"]), ("UNIT", lambda u: u["unit"])],
    "kinds": [("KIND", lambda k: k["name"]), ("FAMILY", lambda k: k["family"]),
              ("OPERATIONS", lambda k: ", ".join(k["operations"])), ("DESCRIPTION", lambda k: k["description"])],
}


def rows(kind: str, items: list[dict]) -> tuple[list[str], list[list[str]]]:
    cols = COLUMNS[kind]
    return [c for c, _ in cols], [[str(fn(i)) for _, fn in cols] for i in items]


def text_table(kind: str, items: list[dict]) -> str:
    header, body = rows(kind, items)
    if not body:
        return f"(no {kind})"
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [header, *body])


def text_detail(t: dict) -> str:
    shown = {**t, "size": _size(t), "nodes": _nodes(t)}
    lines = [f"{k}: {v}" for k, v in shown.items()
             if k not in ("properties", "errors") and v not in (None, [], {}, "")]
    for k, v in (t.get("properties") or {}).items():
        lines.append(f"  {k}: {v}")
    for e in t.get("errors") or []:
        lines.append(f"error: {e.get('message')}")
    return "\n".join(lines)


class TextUI:
    """How the CLI shows results, progress and questions; the magic has an HTML twin."""

    def __init__(self, output: str = "table", out=None, err=None, stdin=None):
        self.output = output
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.stdin = stdin or sys.stdin

    def show(self, kind: str, data: Any) -> None:
        data = _plain(data)
        if self.output == "json":
            print(json.dumps(data, indent=2), file=self.out)
        elif kind == "target":
            print(text_detail(data), file=self.out)
        elif kind == "operation":
            err = data.get("error")
            print(f"{data['action']} {data['target']}: {data['status']}" + (f": {err['message']}" if err else ""),
                  file=self.out)
        else:
            print(text_table(kind, data), file=self.out)

    def progress(self, op: Operation) -> None:
        if self.output == "table" and op.progress:
            print(f"  {op.action} {op.target}: {op.progress}", file=self.err, flush=True)

    def confirm(self, question: str, flag: str) -> None:
        """Ask on a terminal; refuse (exit 2) where nobody can answer."""
        if not (hasattr(self.stdin, "isatty") and self.stdin.isatty()):
            raise UsageError(f"{question} Refusing without a terminal to ask on: add {flag}.")
        print(f"{question} [y/N] ", end="", file=self.err, flush=True)
        if self.stdin.readline().strip().lower() not in ("y", "yes"):
            raise OperationAborted("not confirmed; nothing was changed")


class OperationAborted(Exception):
    pass


async def run(args: argparse.Namespace, compute, ui) -> int:
    """Carry out one parsed command against the core; returns the exit code."""
    ws = compute.workspace(args.workspace)
    cmd = args.command
    if cmd != "list" and cmd not in ("sizes", "usage", "kinds"):
        await ws.reconcile()
    if cmd == "list":
        await ws.reconcile()
        ui.show("targets", await ws.list())
        return 0
    if cmd == "show":
        ui.show("target", await ws.get(args.name))
        return 0
    if cmd == "nodes":
        ui.show("nodes", await ws.nodes(args.name))
        return 0
    if cmd in ("sizes", "usage"):
        ui.show(cmd, await getattr(ws, cmd)())
        return 0
    if cmd == "kinds":
        ui.show("kinds", ws.kinds())
        return 0
    if cmd == "update":
        changes = spec_from_args(args)
        if not changes:
            raise UsageError("give at least one option to change; see --help")
        ui.show("target", await ws.update(args.name, changes))
        return 0
    wait = not getattr(args, "no_wait", False)
    kw = {"wait": wait, "on_progress": ui.progress}
    if cmd in ("create", "attach"):
        spec = spec_from_args(args)
        if cmd == "create":
            op = await ws.create(args.name, args.kind, spec, **kw)
        else:
            op = await ws.attach(args.name, args.kind, spec, force=args.force, **kw)
    elif cmd in ("delete", "detach"):
        target = await ws.get(args.name)
        if not args.yes:
            what = ("Detach" if cmd == "detach" or not target.managed else "Delete")
            note = " The resource itself is left alone." if what == "Detach" else ""
            ui.confirm(f"{what} '{args.name}' ({target.kind}) in workspace '{ws.id}'?{note}", "--yes")
        op = await getattr(ws, cmd)(args.name, **kw)
    else:
        op = await getattr(ws, cmd)(args.name, **kw)
    if not wait:
        ui.show("operation", op)
        return 0
    if op.status.value == "failed":
        ui.show("operation", op)
        return 1
    if cmd in ("delete", "detach"):
        ui.show("operation", op)
    else:
        ui.show("target", await ws.get(args.name))
    return 0


def exit_code(e: BaseException) -> int:
    if isinstance(e, (UsageError, InvalidRequest, NotFound)):
        return 2
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ui = TextUI(args.output)
    from .workspace import Compute

    async def go() -> int:
        compute = Compute.from_config()
        try:
            return await run(args, compute, ui)
        finally:
            # Operations begun here must reach the point where they no longer need this process.
            await compute.join()
            await compute.close()

    try:
        return asyncio.run(go())
    except (UsageError, ComputeError, OperationAborted) as e:
        msg = e.message if isinstance(e, ComputeError) else str(e)
        if args.output == "json" and isinstance(e, ComputeError):
            print(json.dumps(e.to_json()), file=sys.stderr)
        else:
            print(f"jupyter compute: error: {msg}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
