"""Recording figures: percentiles of samples, the machine they ran on, results.json and a table."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

RESULTS = Path(__file__).parent / "results.json"
#: Throughputs count MB of 2**20 bytes.
MB = 2**20
PACKAGES = ("jupyter_compute", "jupyter_server", "jupyter_client", "ipykernel", "pyzmq", "tornado",
            "distributed", "ipyparallel", "numpy")


def percentile(samples: list[float], p: float) -> float:
    s = sorted(samples)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: A figure's samples are cut into this many rounds (fewer when there are fewer samples).
ROUNDS = 5


def rounds_of(samples: list[float], rounds: int = ROUNDS) -> list[list[float]]:
    """``samples`` (in the order taken) cut into ``rounds`` consecutive stretches of near-equal size;
    one sample per round when there are no more samples than rounds."""
    k = max(1, min(rounds, len(samples)))
    size, extra = divmod(len(samples), k)
    out, start = [], 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        out.append(samples[start:end])
        start = end
    return out


class Recorder:
    def __init__(self):
        self.figures: dict[str, dict] = {}
        self.failures: dict[str, str] = {}
        self.goals: dict[str, dict] = {}

    def add(self, key: str, samples: list[float], unit: str, *, also: tuple[int, ...] = ()) -> None:
        """Record figure ``key`` from ``samples``, in the order they were taken: p50 and p95 of all
        (and the percentiles in ``also``), each round's median, the median of those (what goals
        use) and their spread. Sections that measure a figure beside its peer take their samples in
        interleaved order, so round i of one figure ran in the same stretch of time as round i of
        its peer."""
        if not samples:
            raise ValueError(f"{key}: no samples")
        medians = [round(statistics.median(r), 3) for r in rounds_of(samples)]
        self.figures[key] = {"p50": round(percentile(samples, 50), 3), "p95": round(percentile(samples, 95), 3),
                             "unit": unit, "n": len(samples), "median": round(statistics.median(medians), 3),
                             "spread": round(max(medians) - min(medians), 3), "rounds": medians}
        for p in also:
            self.figures[key][f"p{p}"] = round(percentile(samples, p), 3)
        f = self.figures[key]
        print(f"  {key:<28} median {f['median']:>10} {unit:<5} spread {f['spread']:>8} over {len(medians)} rounds  "
              f"p95 {f['p95']:>10}  n={len(samples)}", flush=True)

    def fail(self, section: str, error: str) -> None:
        self.failures[section] = error
        print(f"  {section}: FAILED: {error}", flush=True)

    def meta(self) -> dict:
        versions = {}
        for p in PACKAGES:
            try:
                versions[p] = version(p)
            except PackageNotFoundError:
                pass
        versions["python"] = sys.version.split()[0]
        return {"date": datetime.now(timezone.utc).isoformat(), "machine": {"cpus": os.cpu_count(), "model": _cpu_model()},
                "versions": versions}

    def write(self, path: Path = RESULTS) -> None:
        path.write_text(json.dumps({"meta": self.meta(), "figures": self.figures, "goals": self.goals,
                                       **({"failures": self.failures} if self.failures else {})}, indent=2))

    def table(self) -> str:
        lines = [f"{'figure':<28} {'median':>10} {'spread':>8} {'rounds':>6} {'p95':>10}  unit   n"]
        for k, f in self.figures.items():
            more = "".join(f"  {p} {f[p]}" for p in f if p.startswith("p") and p not in ("p50", "p95"))
            lines.append(f"{k:<28} {f['median']:>10} {f['spread']:>8} {len(f['rounds']):>6} {f['p95']:>10}  "
                         f"{f['unit']:<5} {f['n']}{more}")
        return "\n".join(lines)


def mean(xs):
    return statistics.fmean(xs)
