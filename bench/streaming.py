"""Streaming output: 20 MB printed in flushed 64 KiB chunks, through ``%%compute`` and run directly,
and the latency from a flushed ``print`` on the target to its arrival at the frontend."""
from __future__ import annotations

from .common import MB, Recorder
from .notebook import Session

CHUNK = 64 * 1024
TOTAL = 20 * MB
STREAM = ("import sys\n"
          f"_chunk = 'x' * {CHUNK - 1} + '\\n'\n"
          f"for _ in range({TOTAL // CHUNK}):\n"
          "    sys.stdout.write(_chunk)\n"
          "    sys.stdout.flush()\n")
# The cell goes on after the print, so the text must travel live, not with the cell's end.
STAMP = "import time\nprint(repr(time.monotonic()), flush=True)\ntime.sleep(0.05)\n"
STREAM_ROUNDS = 5
STAMP_ROUNDS = 40


def run(rec: Recorder) -> None:
    with Session("streaming") as s:
        nb = s.notebook()
        s.create("bench-k", "local-kernel")
        cells = {"route_stream_mb_s": "%%compute bench-k\n" + STREAM, "native_stream_mb_s": STREAM}
        rates: dict[str, list[float]] = {k: [] for k in cells}
        for i in range(1 + STREAM_ROUNDS):
            for key, code in cells.items():
                cell = nb.execute(code, timeout=180)
                if cell.stream_bytes != TOTAL:
                    raise AssertionError(f"{key}: {cell.stream_bytes} bytes arrived of {TOTAL}")
                if i:
                    rates[key].append(TOTAL / MB / cell.seconds)
        for key, xs in rates.items():
            rec.add(key, xs, "MB/s")

        latencies: list[float] = []
        for i in range(3 + STAMP_ROUNDS):
            seen: list[float] = []

            def on_iopub(msg: dict, arrived: float) -> None:
                if msg["msg_type"] == "stream" and not seen:
                    seen.append((arrived - float(msg["content"]["text"].split()[0])) * 1000)
            nb.execute("%%compute bench-k\n" + STAMP, on_iopub=on_iopub)
            if i >= 3:
                latencies.append(seen[0])
        rec.add("first_output_ms", latencies, "ms")
