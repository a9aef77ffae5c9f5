"""The peers a notebook would otherwise use, set up inside the notebook kernel: ipyparallel with one
engine, a Dask client of a ``dask-cluster`` target, and a plain separately started Dask cluster."""
from __future__ import annotations

import socket
import sys
import time

from jupyter_compute.core.store import Store

from .notebook import Frontend, Session


def start_ipp(s: Session, nb: Frontend) -> None:
    """ipyparallel with one engine; ``%px`` on all engines (one), ``_ipp`` a view of engine 0."""
    nb.run("import ipyparallel as ipp\n"
           "_cluster = ipp.Cluster(n=1, log_level=40)\n"
           "_rc = _cluster.start_and_connect_sync()\n"
           "_rc.wait_for_engines(1, timeout=120)\n"
           "_rc.activate()\n"
           "_ipp = _rc[0]\n", timeout=180)
    s.before_exit.append(lambda: nb.run("_rc.close()\n_cluster.stop_cluster_sync()", timeout=60))


def dask_client(s: Session, nb: Frontend, cluster: dict) -> None:
    """``_client`` in the notebook: a Dask client of the target's own scheduler, with its TLS files."""
    store = Store(str(s.db))
    try:
        tls = store.get_target("local", cluster["name"])["runtime"]["tls"]
    finally:
        store.close()
    nb.run("from distributed import Client\nfrom distributed.security import Security\n"
           f"_client = Client({cluster['properties']['scheduler_address']!r}, security=Security("
           f"tls_ca_file={tls['ca']!r}, tls_client_cert={tls['cert']!r}, tls_client_key={tls['key']!r}, "
           "require_encryption=True))\n", timeout=120)
    s.before_exit.append(lambda: nb.run("_client.close()"))


def plain_dask(s: Session, nb: Frontend) -> None:
    """A plain tcp:// Dask scheduler and one single-thread worker, started as ``dask scheduler`` and
    ``dask worker`` would be; ``_plain`` is the notebook's client of it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sched_file = s.tmp / "scheduler.json"
    s.popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard", "--scheduler-file", str(sched_file)], "dask-scheduler.log")
    deadline = time.monotonic() + 60
    while not sched_file.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the plain Dask scheduler did not start")
        time.sleep(0.1)
    s.popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(sched_file),
             "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard", "--name", "plain-0"], "dask-worker.log")
    nb.run("from distributed import Client\n"
           f"_plain = Client('tcp://127.0.0.1:{port}')\n"
           "_plain.wait_for_workers(1, timeout=60)\n", timeout=120)
    s.before_exit.append(lambda: nb.run("_plain.close()"))
