"""One config file, read alike by the server extension, the CLI and the magics' core."""
from __future__ import annotations

import json

import pytest

from tests.conftest import stop_all_targets
from tests.support import cli, cli_subprocess, wait_for


def test_config_file_sets_the_store_for_cli_and_server(tmp_path, monkeypatch, server_process, request):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    db = tmp_path / "from-config" / "compute.db"
    (config_dir / "jupyter_compute_config.json").write_text(
        json.dumps({"ComputeConfig": {"db_path": str(db)}}))
    monkeypatch.delenv("JUPYTER_COMPUTE_DB")
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config_dir))
    # This store is not the test's own, so the usual sweep would not find what it runs.
    request.addfinalizer(lambda: stop_all_targets(db))

    r = cli("list")                                                 # any command opens the store
    assert db.exists(), r.stderr
    server = server_process()
    # A CLI process of its own, which hands the create off and exits before the kernel is up.
    r = cli_subprocess("create", "via-cli", "--kind", "local-kernel", "--no-wait")
    assert r.returncode == 0, r.stderr
    code, t = server.request("GET", "workspaces/local/targets/via-cli")
    assert code == 200                                              # the server reads the same store

    def settled():
        code, t = server.request("GET", "workspaces/local/targets/via-cli")
        return t if t["state"] not in ("creating", "starting") else None
    assert wait_for(settled, timeout=60, message="the handed-off create to end")["state"] == "running"
    # The environment variable overrides the file, for every face.
    other = tmp_path / "env.db"
    r = cli("list", "-o", "json", env={"JUPYTER_COMPUTE_DB": str(other)})
    assert [t["name"] for t in json.loads(r.stdout)] == ["this-machine"] and other.exists()
    r = cli("delete", "via-cli", "--yes")
    assert r.returncode == 0, r.stderr


@pytest.fixture
def python_config(tmp_path, monkeypatch):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "jupyter_compute_config.py").write_text(
        "c.ComputeConfig.max_concurrent_starts = 7\nc.AzureML.cloud = 'AzureChinaCloud'\n")
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config_dir))


@pytest.fixture
def configured_compute(python_config, jp_asyncio_loop):
    """A ``Compute`` built once the config file is in place; closed after the test."""
    from jupyter_compute.core.workspace import Compute

    compute = Compute.from_config()
    yield compute
    jp_asyncio_loop.run_until_complete(compute.close())


def test_python_config_file_is_read_too(configured_compute, monkeypatch):
    from jupyter_compute.families.azureml.config import AzureML
    compute = configured_compute
    assert compute.settings.compute.max_concurrent_starts == 7
    assert compute.settings.of(AzureML).endpoint() == "https://management.chinacloudapi.cn"
    monkeypatch.setenv("JUPYTER_COMPUTE_ARM_ENDPOINT", "https://127.0.0.1:9/")
    assert compute.settings.of(AzureML).endpoint() == "https://127.0.0.1:9"
