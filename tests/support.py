"""Helpers every test module shares, defined once: waiting on a condition, the command line in this
process or as a real subprocess, and following an operation over REST."""
from __future__ import annotations

import asyncio
import contextlib
import glob
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


#: Installed server extensions that serve pages rather than kernels. JupyterLab's alone costs each
#: server start 0.7 s of CPU (it runs yarn to read its config).
PAGE_EXTENSIONS = ("jupyterlab", "jupyter_lsp", "notebook_shim", "ipyparallel")


def server_extensions(**turned) -> str:
    """The command-line setting that turns server extensions on or off (those not named keep what
    the installed configuration says)."""
    return f"--ServerApp.jpserver_extensions={turned!r}"


#: A second Jupyter server (a remote one, a compute instance's): a plain ``jupyter server``, with
#: neither this project nor the extensions that serve pages.
PLAIN_SERVER = server_extensions(jupyter_compute=False, jupyter_server_proxy=False,
                                 **dict.fromkeys(PAGE_EXTENSIONS, False))
#: The tests' own server with this project (``tests.servers.ServerProcess``): this project and what
#: it works beside (jupyter-server-proxy for Dask dashboards, terminals), not the extensions that
#: serve pages. The browser tests run the whole JupyterLab.
COMPUTE_SERVER = server_extensions(jupyter_compute=True, **dict.fromkeys(PAGE_EXTENSIONS, False))
#: Every installed server extension and this project's: the server a user runs, which the bench
#: measures (its memory, its lists under load).
USER_SERVER = server_extensions(jupyter_compute=True)


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


# -- another Python, for targets that lack jupyter_compute ------------------------------------------
def _python_candidates() -> list[str]:
    found = []
    for minor in range(8, 15):
        exe = shutil.which(f"python3.{minor}")
        if exe:
            found.append(exe)
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found += sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin", "python3")))
    found += ["/usr/bin/python3", "/usr/local/bin/python3"]
    return found


def python_version(exe: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([exe, "-c", "import sys, venv, ensurepip; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        major, minor = map(int, out.stdout.split())
    except ValueError:
        return None
    return (major, minor) if out.returncode == 0 else None


def make_other_python(tmp_path_factory) -> tuple[str, tuple[int, int]]:
    """A venv with ipykernel and nothing of ours, on another Python minor version where one is
    installed (the ``other_python`` fixture); ``None`` if ipykernel cannot be installed there."""
    ours = sys.version_info[:2]
    choice = None
    for exe in _python_candidates():
        v = python_version(exe)
        if v and v >= (3, 8) and os.path.realpath(exe) != os.path.realpath(sys.executable):
            if choice is None or (choice[1] == ours and v != ours):
                choice = (exe, v)
    if choice is None:
        choice = (getattr(sys, "_base_executable", sys.executable), ours)
    venv = tmp_path_factory.mktemp("other-python") / "venv"
    if choice[1] == ours:
        # Same minor version: a bare venv that sees our packages' folder as a plain path entry. Its
        # .pth files (our editable install among them) are not read from there, so ipykernel is
        # found and jupyter_compute is not, without installing ipykernel again.
        subprocess.run([choice[0], "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        ours_site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
        theirs = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        Path(theirs, "shared-packages.pth").write_text(ours_site + "\n")
        return str(venv), choice[1]
    # This Python's pip installs into it: no pip of its own to bootstrap, no bytecode to compile.
    subprocess.run([choice[0], "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                          "--no-compile", "--disable-pip-version-check", "ipykernel"],
                         capture_output=True, text=True, timeout=600)
    if pip.returncode != 0:
        raise RuntimeError(f"cannot install ipykernel into a second interpreter: {pip.stderr[-500:]}")
    return str(venv), choice[1]


def python_with_unread_fault(venv: str) -> str:
    """The Python of ``venv`` when its ipykernel is 7.0 to 7.3, which can leave a shell request
    unread (7.4 fixes it); skips the calling test otherwise."""
    import pytest

    python = os.path.join(venv, "bin", "python")
    version = subprocess.run([python, "-c", "import ipykernel; print(ipykernel.__version__)"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    try:
        faulty = (7, 0) <= tuple(int(n) for n in version.split(".")[:2]) < (7, 4)
    except ValueError:
        faulty = False
    if not faulty:
        pytest.skip(f"the other Python's ipykernel is {version or 'missing'}, which reads every request")
    return python
