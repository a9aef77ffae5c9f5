"""``make bench``: every figure the issues name, beside its peers, in one run; writes bench/results.json."""
from __future__ import annotations

import importlib
import os
import secrets
import sys
import time

from . import goals
from .common import RESULTS, Recorder
from .notebook import MARKER, end_marked

SECTIONS = ["bench.control", "bench.routing", "bench.kernels", "bench.streaming", "bench.data", "bench.azure_lag",
            "bench.sidebar", "bench.load"]


def main() -> int:
    rec = Recorder()
    t0 = time.monotonic()
    # Every process the sections start inherits this, so whatever one leaves behind is found and ended.
    token = os.environ[MARKER] = secrets.token_hex(8)
    for name in SECTIONS:
        print(f"{name}:", flush=True)
        started = time.monotonic()
        for attempt in (1, 2):
            try:
                importlib.import_module(name).run(rec)
                rec.failures.pop(name, None)
                break
            except Exception as e:
                # Once more: a section may meet a moment when the code it drives is being changed.
                rec.fail(name, f"{type(e).__name__}: {e}")
                if attempt == 1:
                    print(f"  {name}: trying once more", flush=True)
        left = end_marked(token)
        if left:
            print(f"  ({name} left {len(left)} processes, now ended: {'; '.join(left)})", flush=True)
        print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
    rec.goals = goals.check(rec.figures)
    rec.write()
    print(f"\n{rec.table()}\n\n{goals.table(rec.goals)}\n\nwrote {RESULTS} in {time.monotonic() - t0:.0f} s")
    return 1 if rec.failures else 0


if __name__ == "__main__":
    sys.exit(main())
