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

SECTIONS = ["bench.control", "bench.routing", "bench.notebooks", "bench.kernels", "bench.streaming", "bench.data",
            "bench.azure_lag", "bench.sidebar", "bench.load"]


def chosen_sections(only: str | None) -> list[str]:
    """The sections ``BENCH_ONLY`` names ("routing,data"), in the bench's order; all when unset."""
    if not only:
        return list(SECTIONS)
    wanted = {w.strip().removeprefix("bench.") for w in only.split(",") if w.strip()}
    known = {name.removeprefix("bench.") for name in SECTIONS}
    unknown = wanted - known
    if unknown:
        raise SystemExit(f"BENCH_ONLY names no section {', '.join(sorted(unknown))}; the sections: "
                         f"{', '.join(sorted(known))}")
    return [name for name in SECTIONS if name.removeprefix("bench.") in wanted]


def main() -> int:
    only = os.environ.get("BENCH_ONLY")
    sections = chosen_sections(only)
    # A partial run (for profiling) is written beside the full one, never over it.
    results = RESULTS if not only else RESULTS.with_name(
        "results-" + "-".join(n.removeprefix("bench.") for n in sections) + ".json")
    rec = Recorder()
    t0 = time.monotonic()
    # Every process the sections start inherits this, so whatever one leaves behind is found and ended.
    token = os.environ[MARKER] = secrets.token_hex(8)
    for name in sections:
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
    rec.write(results)
    print(f"\n{rec.table()}\n\n{goals.table(rec.goals)}\n\nwrote {results} in {time.monotonic() - t0:.0f} s")
    return 1 if rec.failures else 0


if __name__ == "__main__":
    sys.exit(main())
