"""``make bench``: every figure the issues name, beside its peers, in one run; writes bench/results.json."""
from __future__ import annotations

import importlib
import sys
import time

from .common import RESULTS, Recorder

SECTIONS = ["bench.control"]


def main() -> int:
    rec = Recorder()
    t0 = time.monotonic()
    for name in SECTIONS:
        print(f"{name}:", flush=True)
        try:
            importlib.import_module(name).run(rec)
        except Exception as e:
            rec.fail(name, f"{type(e).__name__}: {e}")
    rec.write()
    print(f"\n{rec.table()}\n\nwrote {RESULTS} in {time.monotonic() - t0:.0f} s")
    return 1 if rec.failures else 0


if __name__ == "__main__":
    sys.exit(main())
