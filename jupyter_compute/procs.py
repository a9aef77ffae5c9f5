"""Process identity on this machine: a pid plus its start time, so a reused pid is never mistaken for ours."""
from __future__ import annotations

import os
import signal

import psutil


def identity(pid: int | None = None) -> str:
    """``"pid:create_time"`` of a process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{psutil.Process(pid).create_time():.3f}"


def parse(ident: str | None) -> tuple[int, float] | None:
    if not ident or ":" not in ident:
        return None
    pid, _, ctime = ident.partition(":")
    try:
        return int(pid), float(ctime)
    except ValueError:
        return None


def alive(ident: str | None) -> bool:
    """Whether the process named by ``identity()`` still runs (a zombie counts as gone)."""
    parsed = parse(ident)
    if parsed is None:
        return False
    pid, ctime = parsed
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - ctime) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
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
