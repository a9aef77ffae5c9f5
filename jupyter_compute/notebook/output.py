"""What the magics show in a notebook: messages published under the running cell, HTML tables
with a text/plain fallback, live progress, and a target's result as the cell's own."""
from __future__ import annotations

import html
import json
import sys
import uuid
from typing import Any, Callable

from .. import commands
from .bridge import Bridge

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


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
    for line in commands.text_detail(t).splitlines():
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
        data = commands.plain(data)
        if self.output == "json":
            self.out.display({"application/json": data, "text/plain": json.dumps(data, indent=2)})
            return
        if kind == "operation":
            if data.get("status") == "failed":
                self.failure = data  # raised by the magic, so Run All stops here
                return
            self.out.display({"text/plain": commands.operation_text(data, "%compute")})
            return
        if kind == "job":
            self._finish_progress(data.get("status", ""))
            text = commands.text_job(data)
            self.out.display({"text/html": f"<pre>{html.escape(text)}</pre>", "text/plain": text})
            return
        if kind == "target":
            self._finish_progress(data.get("state", ""))
            self.out.display({"text/html": _pairs_html(_detail_pairs(data)), "text/plain": commands.text_detail(data)})
            return
        header, body = commands.rows(kind, data)
        self.out.display({"text/html": _html_table(header, body) if body else f"<i>(no {html.escape(kind)})</i>",
                          "text/plain": commands.text_table(kind, data)})

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
            raise commands.UsageError(f"{question} Refusing without a way to ask: add {flag}.")
        answer = self.bridge.call_sync(self.ask, f"{question} [y/N] ", False)
        if str(answer).strip().lower() not in ("y", "yes"):
            raise commands.OperationAborted("not confirmed; nothing was changed")
