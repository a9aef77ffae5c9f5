"""Helpers every test module shares, defined once: waiting on a condition, the command line in this
process or as a real subprocess, and following an operation over REST."""
from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass


def free_port() -> int:
    """A loopback port no one listens on now (a server started on it may still find it taken, and
    choose again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_marked(variable: str, value: str) -> list:
    """Every running process but this one whose environment holds ``variable=value``: what a test
    server started, those that left its process tree included."""
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get(variable) == value:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):
    """Poll until ``predicate()`` is truthy; fail (rather than hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


async def await_for(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):
    """``wait_for`` for a coroutine predicate, without blocking the loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


def run(coro, timeout: float = 120):
    """Run a coroutine to its end on a loop of its own, failing instead of hanging (for sync tests
    that drive the core from a thread with no loop)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@dataclass
class Result:
    """What a command-line call left: like ``subprocess.CompletedProcess``."""
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def cli_subprocess(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 120,
                   cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run ``jupyter compute`` as a real subprocess with no terminal: for exit codes, the entry point,
    and behaviour that depends on the calling process ending (``--no-wait`` hand-offs)."""
    return subprocess.run([sys.executable, "-m", "jupyter_compute.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, input=input if input is not None else "",
                          timeout=timeout, cwd=cwd)


_CLI_LOCK = threading.Lock()


def cli_main(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 120) -> Result:
    """``jupyter compute ARGS`` through ``cli.main(argv)`` in this process, with no terminal: what the
    command prints and its exit code, without starting an interpreter per call.

    It runs on a thread of its own, so a test's own event loop (and the Jupyter server on it) keeps
    going meanwhile; ``env`` is set for the call and put back afterwards.
    """
    from jupyter_compute import cli

    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO(input or "")
    box: dict = {}

    def call() -> None:
        try:
            box["code"] = cli.main(list(args))
        except SystemExit as e:  # argparse's usage errors and --help
            box["code"] = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        except BaseException as e:  # noqa: BLE001  (re-raised on the test's thread)
            box["error"] = e

    with _CLI_LOCK, _environment(env or {}), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            _stdin(stdin):
        thread = threading.Thread(target=call, name="jupyter-compute-cli", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise AssertionError(f"jupyter compute {' '.join(args)} did not end within {timeout} s")
    if "error" in box:
        raise box["error"]
    return Result(list(args), box["code"], out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _environment(env: dict):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: str(v) for k, v in env.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _stdin(stream):
    saved = sys.stdin
    sys.stdin = stream
    try:
        yield
    finally:
        sys.stdin = saved


def files_holding(root, text: str) -> list[str]:
    """The files under ``root`` whose bytes contain ``text``, read by a child process.

    Not read here: opening and closing a sqlite store this process also has open drops the locks its
    connections hold (POSIX locks belong to the process), and the next process to close the store
    would then take it for unused and remove its shared-memory file under the others.
    """
    found = subprocess.run(["grep", "-rlF", "--", text, str(root)], capture_output=True, text=True)
    assert found.returncode in (0, 1), found.stderr
    return sorted(found.stdout.splitlines())


#: The command line as most tests use it: in this process.
cli = cli_main


async def wait_op(api, op_id: str, timeout: float = 60) -> dict:
    """Follow an operation over REST until it ends; its last state."""
    async def done():
        code, op = await api("GET", f"operations/{op_id}")
        assert code == 200, op
        return op if op["status"] != "running" else None
    return await await_for(done, timeout=timeout, message=f"operation {op_id}")


def text_of(cell) -> str:
    """What a notebook cell showed as text: its streams and the plain text of its displays and result."""
    parts = []
    for o in cell.outputs:
        if o.output_type == "stream":
            parts.append(o.text)
        elif "data" in o:
            parts.append(o.data.get("text/plain", ""))
    return "".join(parts)
