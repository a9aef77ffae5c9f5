"""Process identities: what the store records to find, and end, the processes a target owns."""
from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from jupyter_compute.core import processes as procs

from tests.support import wait_for


def test_an_identity_names_a_live_process_and_not_one_that_ended_or_is_a_zombie():
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    ident = procs.identity(p.pid)
    assert procs.alive(ident) and procs.alive(procs.identity())
    p.stdin.close()
    # Ended but not yet reaped: a zombie counts as gone.
    wait_for(lambda: psutil.Process(p.pid).status() == psutil.STATUS_ZOMBIE, timeout=10, message="a zombie")
    assert not procs.alive(ident)
    p.wait()
    assert not procs.alive(ident)
    pid, start = procs.parse(ident)
    assert pid == p.pid and not procs.alive(f"{os.getpid()}:{start}")  # this pid, another start


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="Linux start ticks")
def test_an_identity_holds_when_the_wall_clock_boot_time_moves(monkeypatch):
    # The boot time the kernel derives from the wall clock moves by whole seconds when the clock is
    # adjusted; a live supervisor must not then look dead (its operation failed as abandoned, and
    # a second start allowed beside it).
    ident = procs.identity()
    legacy = f"{os.getpid()}:{psutil.Process().create_time():.3f}"
    real = psutil.boot_time()
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: real + 1.0)
    assert psutil.Process().create_time() != pytest.approx(float(legacy.partition(":")[2]), abs=0.5)
    assert procs.alive(ident)
    assert procs.alive(legacy)  # one recorded by an older version, as a start time since the epoch
    assert procs.identity() == ident
