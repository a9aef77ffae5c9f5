"""Process identity on this machine: a pid plus its start time, so a reused pid is never mistaken for ours."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import psutil

#: Launching and ending processes block for up to seconds each (a supervisor's fork, a grace
#: period); they get threads of their own so that, under load, they never queue ahead of the
#: short probes that listing targets runs on the default pool.
_LIFECYCLE_THREADS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="jupyter-compute-procs")


async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``spawn_detached``, ``terminate`` or a caller's wrapper of them away from the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_LIFECYCLE_THREADS, lambda: fn(*args))


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip().replace("-", "")[:12]
    except OSError:
        return ""


_BOOT = _boot_id()


def _stat(pid: int) -> tuple[str, str] | None:
    """(start, status letter) of a Linux process from ``/proc/PID/stat``: its start in clock ticks
    since boot, which never moves (psutil's ``create_time`` adds the boot time the kernel derives
    from the wall clock, which shifts by whole seconds when the clock is adjusted)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return fields[19].decode(), fields[0].decode()


def identity(pid: int | None = None) -> str:
    """A process's identity: ``"pid:start"``, where start says when it started, so a pid reused by
    another process is never taken for ours. On Linux start is ``TICKS@BOOT`` (clock ticks since
    boot, and the boot's id); elsewhere it is the start time since the epoch."""
    pid = os.getpid() if pid is None else pid
    if _BOOT:
        st = _stat(pid)
        if st is None:
            raise psutil.NoSuchProcess(pid)
        return f"{pid}:{st[0]}@{_BOOT}"
    return f"{pid}:{psutil.Process(pid).create_time():.3f}"


def parse(ident: str | None) -> tuple[int, str] | None:
    if not ident or ":" not in ident:
        return None
    pid, _, start = ident.partition(":")
    try:
        return int(pid), start
    except ValueError:
        return None


def alive(ident: str | None) -> bool:
    """Whether the process named by ``identity()`` still runs (a zombie counts as gone)."""
    parsed = parse(ident)
    if parsed is None:
        return False
    pid, start = parsed
    if "@" in start:
        st = _stat(pid) if start.endswith("@" + _BOOT) else None
        return st is not None and st[0] == start.partition("@")[0] and st[1] != "Z"
    try:  # an identity recorded as a start time since the epoch (other systems, older stores)
        ctime = float(start)
        p = psutil.Process(pid)
        # The wall-clock boot time moves by whole seconds; a pid is not reused within two.
        return abs(p.create_time() - ctime) < 2.0 and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def signal_ident(ident: str | None, sig: int = signal.SIGTERM) -> bool:
    """Send a signal only if the process is still the one we recorded."""
    if not alive(ident):
        return False
    try:
        os.kill(parse(ident)[0], sig)
        return True
    except ProcessLookupError:
        return False


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 1e6


#: Carried in the environment of every process a target owns (its supervisor, and what that starts:
#: kernels, schedulers, workers): "STORE<TAB>WORKSPACE<TAB>TARGET". A process whose target is gone
#: is found by it and ended, even when nothing in the store names the process any more.
OWNER_ENV = "JUPYTER_COMPUTE_OWNER"
#: Names one ``failpoint`` at which a process kills itself: how the tests reproduce a crash at the
#: one moment that matters (a supervisor dying between starting its kernel and recording it).
FAILPOINT_ENV = "JUPYTER_COMPUTE_FAILPOINT"


def failpoint(name: str) -> None:
    """Die here, as SIGKILL would kill us, when the environment names this point."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def owner_tag(store_path: str, workspace: str, target: str) -> str:
    return "\t".join((os.path.abspath(store_path), workspace, target))


def owned_processes(store_path: str) -> list[tuple[psutil.Process, str, str]]:
    """(process, workspace, target) for each of this user's processes that a target of the store
    at ``store_path`` owns, by the tag in its environment."""
    store_path = os.path.abspath(store_path)
    me, uid = os.getpid(), os.getuid()
    found = []
    for p in psutil.process_iter(["pid", "uids"]):
        try:
            if p.info["pid"] == me or p.info["uids"] is None or p.info["uids"].real != uid:
                continue
            tag = p.environ().get(OWNER_ENV)
        except (psutil.Error, OSError):
            continue
        parts = tag.split("\t") if tag else []
        if len(parts) == 3 and parts[0] == store_path:
            found.append((p, parts[1], parts[2]))
    return found


def exit_words(code: int) -> str:
    """How a process ended, from its return code, in words: 'killed by SIGKILL (signal 9)', 'exit code 1'."""
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"
    hint = " - often the out-of-memory killer" if name == "SIGKILL" else ""
    return f"killed by {name} (signal {-code}){hint}"


def unaccounted(procs: list[psutil.Process], named: list[str | None], min_age: float) -> list[psutil.Process]:
    """Those of ``procs`` older than ``min_age`` seconds of which neither the process nor any of its
    parents is one of the ``named`` identities (dead identities name nothing: a pid may be reused)."""
    pids = {parse(i)[0] for i in named if i and alive(i)}
    now, left = time.time(), []
    for p in procs:
        try:
            if now - p.create_time() < min_age:
                continue
            if p.pid in pids or any(a.pid in pids for a in p.parents()):
                continue
        except psutil.Error:  # gone meanwhile
            continue
        left.append(p)
    return left


def end_processes(procs: list[psutil.Process], grace: float = 3.0, patience: float = 0.0) -> list[psutil.Process]:
    """SIGTERM, then after ``grace`` seconds SIGKILL, each process and its children; the ones ended.
    With ``patience``, first wait that long for them to end by themselves (they may be on their way)."""
    if patience:
        _, procs = psutil.wait_procs(procs, timeout=patience)
    everyone: dict[int, psutil.Process] = {}
    for p in procs:
        try:
            for q in [p, *p.children(recursive=True)]:
                everyone[q.pid] = q
        except psutil.Error:
            continue
    for q in everyone.values():
        try:
            q.terminate()
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(list(everyone.values()), timeout=grace)
    for q in left:
        try:
            q.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=grace)
    return list(everyone.values())


def spawn_detached(argv: list[str], what: str = "supervisor", owner: str | None = None) -> str:
    """Start a supervisor that calls ``detach()``: it runs in its own session, forks away from
    the caller (so no caller ever leaves a zombie behind) and prints its identity, which this returns.
    ``owner`` (``owner_tag``) goes into its environment, and so into that of everything it starts.
    """
    import subprocess

    env = {**os.environ, OWNER_ENV: owner} if owner else None
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True, close_fds=True, env=env)
    out, err = p.communicate(timeout=60)
    ident = out.decode().strip()
    if p.returncode != 0 or not parse(ident):
        from .errors import InvalidRequest
        raise InvalidRequest(f"could not launch the {what}: {err.decode().strip()[-500:]}", reason="launch_failed")
    return ident


def detach() -> None:
    """The supervisor's side of ``spawn_detached``: fork, let the launching process exit with our
    identity on its stdout, and go on in the child with no terminal and deaf to SIGINT/SIGHUP."""
    pid = os.fork()
    if pid:
        print(identity(pid), flush=True)
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def terminate(primary: str | None, others: list[str | None] = (), grace: float = 5.0) -> None:
    """Ask ``primary`` (a supervisor) to end with SIGTERM, wait up to ``grace`` seconds for it and
    ``others`` (what it supervises) to exit, then SIGKILL whatever is left."""
    import time

    idents = [i for i in (primary, *others) if i]
    if not signal_ident(primary, signal.SIGTERM):
        for ident in others:
            signal_ident(ident, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(i) for i in idents):
        time.sleep(0.05)
    for ident in reversed(idents):
        signal_ident(ident, signal.SIGKILL)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(alive(i) for i in idents):
        time.sleep(0.05)


def read_json(path: str) -> dict:
    """A runtime file a supervisor wrote (a kernel's connection file); call it off the loop."""
    with open(path) as f:
        return json.load(f)


def remove_quietly(path: str | None) -> None:
    """Remove a runtime file that may already be gone."""
    if path:
        try:
            os.remove(path)
        except OSError:
            pass


def kernel_connection(path: str) -> dict | None:
    """The connection file a kernel wrote once it bound its ports; None until it is complete."""
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    ports = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
    return info if all(info.get(p) for p in ports) and info.get("key") else None


def tail_of(path: str, n: int = 4000) -> str:
    """The last ``n`` bytes of a log file, as text; "" when there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""
