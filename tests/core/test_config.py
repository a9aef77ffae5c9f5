"""One config file, read alike by the server extension, the CLI and the magics' core."""
from __future__ import annotations

import json
import os

from tests.support import cli


def test_config_file_sets_the_store_for_cli_and_server(tmp_path, monkeypatch, server_process):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    db = tmp_path / "from-config" / "compute.db"
    (config_dir / "jupyter_compute_config.json").write_text(
        json.dumps({"ComputeConfig": {"db_path": str(db)}}))
    monkeypatch.delenv("JUPYTER_COMPUTE_DB")
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config_dir))

    r = cli("list")                                                 # any command opens the store
    assert db.exists(), r.stderr
    server = server_process()
    r = cli("create", "via-cli", "--kind", "local-kernel", "--no-wait")
    assert r.returncode == 0, r.stderr
    code, t = server.request("GET", "workspaces/local/targets/via-cli")
    assert code == 200                                              # the server reads the same store
    # The environment variable overrides the file, for every face.
    other = tmp_path / "env.db"
    r = cli("list", "-o", "json", env={"JUPYTER_COMPUTE_DB": str(other)})
    assert [t["name"] for t in json.loads(r.stdout)] == ["this-machine"] and other.exists()
    cli("delete", "via-cli", "--yes")


def test_python_config_file_is_read_too(tmp_path, monkeypatch):
    from jupyter_compute.core.workspace import Compute
    from jupyter_compute.families.azureml.config import AzureML
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "jupyter_compute_config.py").write_text(
        "c.ComputeConfig.max_concurrent_starts = 7\nc.AzureML.cloud = 'AzureChinaCloud'\n")
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config_dir))
    compute = Compute.from_config()
    assert compute.settings.compute.max_concurrent_starts == 7
    assert compute.settings.of(AzureML).endpoint() == "https://management.chinacloudapi.cn"
    monkeypatch.setenv("JUPYTER_COMPUTE_ARM_ENDPOINT", "https://127.0.0.1:9/")
    assert compute.settings.of(AzureML).endpoint() == "https://127.0.0.1:9"
