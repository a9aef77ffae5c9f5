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


class Recorder:
    def __init__(self):
        self.figures: dict[str, dict] = {}
        self.failures: dict[str, str] = {}
        self.goals: dict[str, dict] = {}

    def add(self, key: str, samples: list[float], unit: str, *, also: tuple[int, ...] = ()) -> None:
        """Record p50 and p95 of ``samples`` (and the percentiles in ``also``) as figure ``key``."""
        if not samples:
            raise ValueError(f"{key}: no samples")
        self.figures[key] = {"p50": round(percentile(samples, 50), 3), "p95": round(percentile(samples, 95), 3),
                             "unit": unit, "n": len(samples)}
        for p in also:
            self.figures[key][f"p{p}"] = round(percentile(samples, p), 3)
        print(f"  {key:<28} p50 {self.figures[key]['p50']:>10} {unit:<5} p95 {self.figures[key]['p95']:>10}  n={len(samples)}",
              flush=True)

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

    def write(self) -> None:
        RESULTS.write_text(json.dumps({"meta": self.meta(), "figures": self.figures, "goals": self.goals,
                                       **({"failures": self.failures} if self.failures else {})}, indent=2))

    def table(self) -> str:
        lines = [f"{'figure':<28} {'p50':>10} {'p95':>10}  unit   n"]
        for k, f in self.figures.items():
            more = "".join(f"  {p} {f[p]}" for p in f if p.startswith("p") and p not in ("p50", "p95"))
            lines.append(f"{k:<28} {f['p50']:>10} {f['p95']:>10}  {f['unit']:<5} {f['n']}{more}")
        return "\n".join(lines)


def mean(xs):
    return statistics.fmean(xs)
