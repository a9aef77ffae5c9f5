"""REST latency under load: 50 concurrent clients list, create, start, stop and delete local-kernel
targets for 60 s, with kernel starts capped; no error but 409 is allowed, and the final state must be
what the operations that succeeded say."""
from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

from tests.loadclient import Load, delete_all, final_state
from tests.servers import ServerProcess
from tests.support import USER_SERVER

from .common import Recorder, percentile
from .notebook import MARKER, end_marked

CLIENTS = 50
SECONDS = 60.0
SERVER_CAP = 2


def run(rec: Recorder) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="jc-bench-load-"))
    token = secrets.token_hex(8)
    db = tmp / "compute" / "compute.db"
    server = ServerProcess(tmp, env={"JUPYTER_COMPUTE_DB": str(db), MARKER: token, "JUPYTER_DATA_DIR": str(tmp / "data"),
                                     "JUPYTER_RUNTIME_DIR": str(tmp / "runtime")}, extensions=USER_SERVER)
    try:
        server.start(extra_args=(f"--ComputeConfig.max_concurrent_starts={SERVER_CAP}",))
        load = Load(server, CLIENTS, SECONDS)
        expected = load.run()
        faults = final_state(server, expected, str(db.parent))
        rec.add("load_p99_ms", load.latencies, "ms", also=(99,))
        # The load's own checks travel with the figure; the goals read them.
        rec.figures["load_p99_ms"].update(
            statuses={str(k): v for k, v in sorted(load.statuses.items())}, operations=load.ops,
            errors=len(load.errors), final_state_matches=not any(faults.values()))
        print(f"    {len(load.latencies)} requests, {load.ops} operations, statuses {dict(sorted(load.statuses.items()))}",
              flush=True)
        print("    " + ", ".join(f"{k} p50 {percentile(v, 50):.0f} p99 {percentile(v, 99):.0f} ms (n={len(v)})"
                                 for k, v in sorted(load.by_kind.items())), flush=True)
        for e in load.errors[:3]:
            print(f"    error: {e[:400]}", flush=True)
        if any(faults.values()):
            print(f"    final state differs from the succeeded operations: {faults}", flush=True)
    finally:
        delete_all(server)
        server.stop()
        from tests.conftest import stop_all_targets
        stop_all_targets(db)
        end_marked(token)
        shutil.rmtree(tmp, ignore_errors=True)

