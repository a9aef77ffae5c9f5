"""A notebook kernel driven by one jupyter_client frontend, as JupyterLab drives it, beside the
targets and peers its cells go to; every process it starts is found again and ended."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil
import zmq
from jupyter_client.manager import KernelManager

#: Every process a bench section starts carries this variable (children inherit it), so the
#: section can find and end whatever a target or a peer left behind, however it was spawned.
MARKER = "JUPYTER_COMPUTE_BENCH_RUN"


@dataclass
class Cell:
    """One execution as the frontend saw it."""
    seconds: float
    reply: dict
    stream_bytes: int = 0
    text: list[str] = field(default_factory=list)

    @property
    def ms(self) -> float:
        return self.seconds * 1000


class CellFailed(RuntimeError):
    pass


class Frontend:
    """One jupyter_client frontend of a kernel. A cell is timed from sending execute_request until
    both its execute_reply and its idle status have arrived, reading both channels in one poll loop."""

    def __init__(self, km: KernelManager):
        self.kc = km.blocking_client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.poller = zmq.Poller()
        self.shell = self.kc.shell_channel
        self.iopub = self.kc.iopub_channel
        self.poller.register(self.shell.socket, zmq.POLLIN)
        self.poller.register(self.iopub.socket, zmq.POLLIN)

    def execute(self, code: str, *, on_iopub: Callable[[dict, float], None] | None = None,
                keep_text: bool = False, timeout: float = 300, check: bool = True) -> Cell:
        t0 = time.perf_counter()
        msg_id = self.kc.execute(code)
        reply = None
        idle = False
        nbytes = 0
        text: list[str] = []
        deadline = time.monotonic() + timeout
        while reply is None or not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CellFailed(f"no reply within {timeout} s to {code[:60]!r}")
            events = dict(self.poller.poll(left * 1000))
            if self.iopub.socket in events:
                while True:
                    try:
                        msg = self.iopub.get_msg(timeout=0)
                    except Exception:  # queue.Empty: nothing more on the socket
                        break
                    arrived = time.monotonic()
                    if msg["parent_header"].get("msg_id") != msg_id:
                        continue
                    kind = msg["msg_type"]
                    if on_iopub is not None:
                        on_iopub(msg, arrived)
                    if kind == "stream":
                        nbytes += len(msg["content"]["text"])
                        if keep_text:
                            text.append(msg["content"]["text"])
                    elif kind == "error" and keep_text:
                        text.append("\n".join(msg["content"]["traceback"]))
                    elif kind == "status" and msg["content"]["execution_state"] == "idle":
                        idle = True
            if self.shell.socket in events:
                while True:
                    try:
                        msg = self.shell.get_msg(timeout=0)
                    except Exception:
                        break
                    if msg["parent_header"].get("msg_id") == msg_id:
                        reply = msg["content"]
        cell = Cell(time.perf_counter() - t0, reply, nbytes, text)
        if check and reply["status"] != "ok":
            raise CellFailed(f"{code[:80]!r} failed: {reply.get('ename')}: {reply.get('evalue')}")
        return cell

    def run(self, code: str, timeout: float = 300) -> str:
        """Run a setup cell; its stream output, or CellFailed with what it printed."""
        cell = self.execute(code, keep_text=True, timeout=timeout, check=False)
        if cell.reply["status"] != "ok":
            raise CellFailed(f"{code[:80]!r} failed: {cell.reply.get('ename')}: {cell.reply.get('evalue')}\n"
                             + "".join(cell.text)[-2000:])
        return "".join(cell.text)

    def close(self) -> None:
        self.kc.stop_channels()


class Session:
    """A temporary home (store, IPython, Jupyter dirs) for one section: a notebook kernel with
    ``%load_ext jupyter_compute``, targets made by the CLI, and peers; all ended on exit."""

    def __init__(self, name: str):
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"jc-bench-{name}-"))
        self.token = secrets.token_hex(8)
        self.db = self.tmp / "compute" / "compute.db"
        for d in ("ipython", "config", "data", "runtime", "compute"):
            (self.tmp / d).mkdir()
        self.env = {**os.environ, MARKER: self.token, "JUPYTER_COMPUTE_DB": str(self.db),
                    "IPYTHONDIR": str(self.tmp / "ipython"), "JUPYTER_CONFIG_DIR": str(self.tmp / "config"),
                    "JUPYTER_DATA_DIR": str(self.tmp / "data"), "JUPYTER_RUNTIME_DIR": str(self.tmp / "runtime"),
                    "PYTHONWARNINGS": "ignore"}
        self.kernels: list[KernelManager] = []
        self.frontends: list[Frontend] = []
        self.targets: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.before_exit: list[Callable[[], None]] = []
        #: Stops the sshd and Jupyter servers targets were attached to, once the targets are gone.
        self.hosts: list[Callable[[], None]] = []

    # -- processes ------------------------------------------------------------------------------------
    def kernel(self) -> tuple[KernelManager, Frontend]:
        km = KernelManager(kernel_name="python3")
        log = open(self.tmp / f"kernel-{len(self.kernels)}.log", "ab")
        km.start_kernel(env=self.env, cwd=str(self.tmp), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.kernels.append(km)
        fe = Frontend(km)
        self.frontends.append(fe)
        return km, fe

    def notebook(self) -> Frontend:
        """A notebook kernel with the extension loaded."""
        _, fe = self.kernel()
        fe.run("%load_ext jupyter_compute")
        return fe

    def cli(self, *args: str, timeout: float = 180) -> str:
        r = subprocess.run([sys.executable, "-m", "jupyter_compute.cli", *args], capture_output=True, text=True,
                           env=self.env, cwd=self.tmp, stdin=subprocess.DEVNULL, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"jupyter compute {' '.join(args)} exited {r.returncode}: {r.stderr[-2000:]}")
        return r.stdout

    def create(self, name: str, kind: str, *options: str) -> dict:
        self.targets.append(name)
        t = json.loads(self.cli("create", name, "--kind", kind, "--output", "json", *options))
        if t["state"] != "running":
            raise RuntimeError(f"{name} is {t['state']} after create: {t.get('errors')}")
        return t

    def popen(self, argv: list[str], log: str) -> subprocess.Popen:
        out = open(self.tmp / log, "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.tmp,
                             stdin=subprocess.DEVNULL)
        out.close()
        self.procs.append(p)
        return p

    # -- the end --------------------------------------------------------------------------------------
    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for fn in reversed(self.before_exit):
            _quietly(fn)
        for fe in self.frontends:
            _quietly(fe.close)
        for km in self.kernels:
            _quietly(lambda: km.shutdown_kernel(now=False))
        for name in reversed(self.targets):
            _quietly(lambda: self.cli("delete", name, "--yes", timeout=60))
        # Last, the machines and servers the targets were on: deleting a target still reaches them.
        for fn in reversed(self.hosts):
            _quietly(fn)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        left = end_marked(self.token)
        if left:
            print(f"  ({self.name}: ended {len(left)} leftover processes: {', '.join(left)})", flush=True)
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)


def marked(token: str) -> list[psutil.Process]:
    me = os.getpid()
    found = []
    for p in psutil.process_iter():
        if p.pid == me:
            continue
        try:
            if p.environ().get(MARKER) == token:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            pass
    return found


def end_marked(token: str, grace: float = 5.0) -> list[str]:
    """End, by pid, every process still carrying this section's marker once ``grace`` seconds
    have passed (some peers return from their stop before their last process has gone)."""
    deadline = time.monotonic() + grace
    while (procs := marked(token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not procs:
        return []
    names = []
    for p in procs:
        try:
            names.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return names


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as e:
        print(f"  (cleanup: {type(e).__name__}: {e})", flush=True)
