"""Cell round trip of ``pass``: here, through ``%%compute`` to a local kernel and to a Dask cluster,
on a local-kernel target's and an SSH target's own kernels, beside ipyparallel's ``%%px``, a raw
second kernel and ``client.submit``; rounds interleave the eight."""
from __future__ import annotations

from .common import Recorder
from .kernels import target_kernels
from .notebook import Session
from .peers import dask_client, start_ipp

WARMUP = 10
ROUNDS = 100


def run(rec: Recorder) -> None:
    with Session("routing") as s:
        nb = s.notebook()
        _, floor = s.kernel()
        s.create("bench-k", "local-kernel")
        cluster = s.create("bench-d", "dask-cluster", "--min-nodes", "1", "--max-nodes", "1",
                           "--threads-per-node", "1")
        start_ipp(s, nb)
        dask_client(s, nb, cluster)
        nb.run("def f():\n    pass\n")
        own = target_kernels(s)
        cells = {
            "native_rtt_ms": (nb, "pass"),
            "route_rtt_ms": (nb, "%%compute bench-k\npass"),
            "ipp_px_rtt_ms": (nb, "%%px\npass"),
            "floor_kernel_rtt_ms": (floor, "pass"),
            "dask_route_rtt_ms": (nb, "%%compute bench-d\npass"),
            # pure=False: every call is a new task, as every routed cell is.
            "dask_submit_rtt_ms": (nb, "_client.submit(f, pure=False).result()"),
            **{key: (fe, "pass") for key, fe in own.items()},
        }
        samples: dict[str, list[float]] = {k: [] for k in cells}
        for i in range(WARMUP + ROUNDS):
            for key, (fe, code) in cells.items():
                ms = fe.execute(code).ms
                if i >= WARMUP:
                    samples[key].append(ms)
        for key, xs in samples.items():
            rec.add(key, xs, "ms")
