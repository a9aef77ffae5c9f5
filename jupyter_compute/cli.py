"""``jupyter compute``: the command line over the same core as the REST API and the magics.

Exit codes: 0 success; 2 bad usage, invalid input or an unknown target; 1 the operation failed
(a conflict or a backend error included). The verbs themselves are ``commands``'s, shared with
the ``%compute`` magic.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from .commands import (OperationAborted, UsageError, asked_kind_help, build_parser, kind_help, operation_text,
                       plain, run, text_detail, text_job, text_table)
from .core.errors import ComputeError, InvalidRequest, NotFound
from .core.models import Operation


class TextUI:
    """How the CLI shows results, progress and questions; the magic has an HTML twin."""

    def __init__(self, output: str = "table", out=None, err=None, stdin=None):
        self.output = output
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.stdin = stdin or sys.stdin

    def show(self, kind: str, data: Any) -> None:
        data = plain(data)
        if self.output == "json":
            print(json.dumps(data, indent=2), file=self.out)
        elif kind == "target":
            print(text_detail(data), file=self.out)
        elif kind == "job":
            print(text_job(data), file=self.out)
        elif kind == "operation":
            print(operation_text(data), file=self.out)
        else:
            print(text_table(kind, data), file=self.out)

    def progress(self, op: Operation) -> None:
        if self.output == "table" and op.progress:
            print(f"  {op.action} {op.target}: {op.progress}", file=self.err, flush=True)

    def read_secret(self, field: str, how: str, other_flag: str) -> str:
        """A secret from the first line of stdin (``how="stdin"``) or asked for without echo (``"ask"``)."""
        if how == "stdin":
            value = self.stdin.readline().rstrip("\r\n")
            if not value:
                raise UsageError(f"standard input held no {field}")
            return value
        if not (hasattr(self.stdin, "isatty") and self.stdin.isatty()):
            raise UsageError(f"cannot ask for the {field} without a terminal: use {other_flag}")
        import getpass
        value = getpass.getpass(f"{field}: ", stream=self.err)
        if not value:
            raise UsageError(f"no {field} given")
        return value

    def confirm(self, question: str, flag: str) -> None:
        """Ask on a terminal; refuse (exit 2) where nobody can answer."""
        if not (hasattr(self.stdin, "isatty") and self.stdin.isatty()):
            raise UsageError(f"{question} Refusing without a terminal to ask on: add {flag}.")
        print(f"{question} [y/N] ", end="", file=self.err, flush=True)
        if self.stdin.readline().strip().lower() not in ("y", "yes"):
            raise OperationAborted("not confirmed; nothing was changed")


def exit_code(e: BaseException) -> int:
    if isinstance(e, (UsageError, InvalidRequest, NotFound)):
        return 2
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    asked = asked_kind_help(argv)
    if asked is not None:
        return _kind_help(*asked)
    parser = build_parser()
    args = parser.parse_args(argv)
    ui = TextUI(args.output)
    from .core.workspace import Compute

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
    except BrokenPipeError:
        # The reader went away (`jupyter compute list | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _kind_help(verb: str, kind: str, workspace: str | None) -> int:
    """``create --kind K --help``: that kind's fields only."""
    from .core.workspace import Compute

    async def go() -> str:
        compute = Compute.from_config()
        try:
            return kind_help("jupyter compute", verb, compute.workspace(workspace).kind_spec(kind))
        finally:
            await compute.close()

    try:
        print(asyncio.run(go()))
        return 0
    except ComputeError as e:
        print(f"jupyter compute: error: {e.message}", file=sys.stderr)
        return exit_code(e)


if __name__ == "__main__":
    sys.exit(main())
