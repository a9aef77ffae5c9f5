"""The suite's last step: fail if any process the tests started is still running.

Test processes are recognised by what only they carry on their command line: pytest's temporary
folders, the project's supervisors, and the test servers (sshd, Azurite, Jupyter, Dask).
"""
from __future__ import annotations

import os
import sys
import time

import psutil

MARKERS = ("pytest-of-", "jupyter_compute.families.", "azurite", "tests/sshd", "tests.standins")


def leftovers() -> list[psutil.Process]:
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        if p.info["pid"] == me or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(p.info["cmdline"] or [])
        if any(m in cmd for m in MARKERS):
            found.append(p)
    return found


def main() -> int:
    deadline = time.monotonic() + 15  # teardowns that are still finishing get a moment
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not left:
        print("no test process left running")
        return 0
    print(f"{len(left)} process(es) started by the tests are still running:", file=sys.stderr)
    for p in left:
        try:
            print(f"  {p.pid}: {' '.join(p.cmdline())[:300]}", file=sys.stderr)
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return 1


if __name__ == "__main__":
    sys.exit(main())
