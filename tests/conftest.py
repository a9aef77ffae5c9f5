"""Shared fixtures: every test gets its own store and a real Jupyter server with the extension.

Async tests run on pytest-jupyter's loop (``jp_asyncio_loop``); fixtures that hold something async
(a ``Compute``) set it up and close it on that loop, so no test hand-rolls its own loop.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.servers import ServerProcess

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture(scope="session")
def other_python(tmp_path_factory) -> tuple[str, tuple[int, int]]:
    """A venv with ipykernel and nothing of ours, on another Python minor version where one is installed."""
    from tests.support import make_other_python
    try:
        return make_other_python(tmp_path_factory)
    except RuntimeError as e:
        pytest.skip(str(e))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``long`` (a minute or so of waiting) go first: on parallel workers, one that
    starts last keeps the whole run waiting for it."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)

ROOT = Path(__file__).resolve().parent.parent


def stop_all_targets(db: Path) -> None:
    """Stop every process a test left running, so none outlives the suite: those the store
    records, and any supervisor or kernel of this store that had not recorded itself yet."""
    import psutil
    if db.exists():
        from jupyter_compute.families.local.backend import _terminate
        from jupyter_compute.core.store import Store

        store = Store(str(db))
        for row in store.find_targets():
            if row["runtime"]:
                _terminate(row["runtime"], grace=2)
        store.close()
    marker = str(db.parent)
    # Again after a kill: a supervisor killed just after the scan may have started its kernel
    # between the two (a `--no-wait` start the test did not wait for).
    for _ in range(3):
        strays = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if marker in cmd and ("jupyter_compute.families." in cmd or "ipykernel_launcher" in cmd):
                strays.append(p)
        if not strays:
            break
        for p in strays:
            p.kill()
        psutil.wait_procs(strays, timeout=5)


@pytest.fixture(autouse=True)
def compute_db(tmp_path, monkeypatch):
    """A store (and Jupyter data folder) of the test's own; JUPYTER_COMPUTE_DB points every process
    (server, CLI, kernels) at it."""
    path = tmp_path / "compute" / "compute.db"
    monkeypatch.setenv("JUPYTER_COMPUTE_DB", str(path))
    # The kernelspecs of the test's targets go to a data folder of its own, never the user's.
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    yield path
    stop_all_targets(path)


def server_config(**more) -> dict:
    """The extension's server settings for the tests, plus ``more`` sections."""
    return {"ServerApp": {"jpserver_extensions": {"jupyter_compute": True}},
            "ComputeConfig": {"monitor_interval": 0.2}, **more}


def azure_server_config(arm, alias: str) -> dict:
    """Server settings with the stand-in's workspace configured under ``alias``, polled quickly."""
    return server_config(AzureML={
        "poll_interval": 0.01, "retry_total": 2, "retry_backoff_factor": 0.01,
        "workspaces": [{"subscription_id": arm.subscription_id, "resource_group": arm.resource_group,
                        "workspace_name": arm.workspace_name, "alias": alias}]})


@pytest.fixture
def jp_server_config():
    return server_config()


@pytest.fixture
def compute(jp_asyncio_loop, compute_db):
    """This user's ``Compute`` on the test's store, as every face builds it; closed after the test."""
    from jupyter_compute.core.workspace import Compute

    c = Compute.from_config()
    yield c
    jp_asyncio_loop.run_until_complete(c.close())


@pytest.fixture
def local(compute):
    """The ``local`` workspace of ``compute``."""
    return compute.workspace("local")


@pytest.fixture
def api(jp_fetch):
    """Call the compute REST API: ``await api("GET", "workspaces/local/targets")`` -> (status, json)."""
    from tornado.httpclient import HTTPClientError

    async def call(method: str, path: str, body=None, headers=None):
        kw = {"method": method, "raise_error": True}
        if body is not None:
            kw["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body)
        elif method in ("POST", "PATCH"):
            kw["body"] = b""
            kw["allow_nonstandard_methods"] = True
        if headers:
            kw["headers"] = headers
        try:
            r = await jp_fetch("jupyter-compute", *path.split("/"), **kw)
        except HTTPClientError as e:
            return e.code, json.loads(e.response.body) if e.response is not None and e.response.body else None
        return r.code, json.loads(r.body) if r.body else None

    return call


@pytest.fixture
def server_process(tmp_path):
    """Factory of real Jupyter server subprocesses sharing the test's store; all stopped at the end."""
    started: list[ServerProcess] = []

    def make(**kw) -> ServerProcess:
        s = ServerProcess(tmp_path, **kw).start()
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


class NonLoopbackConnection(AssertionError):
    pass


def _loopback(host) -> bool:
    import ipaddress
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Tests talk to 127.0.0.1 and nothing else: any other connect or name lookup in this
    process fails the test, so no code path can quietly reach Azure or a metadata address."""
    import socket

    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            raise NonLoopbackConnection(f"test tried to connect to {address[0]}:{address[1]}")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kw):
        if not _loopback(host):
            raise NonLoopbackConnection(f"test tried to resolve {host!r}")
        return real_getaddrinfo(host, *args, **kw)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
