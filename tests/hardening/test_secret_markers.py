"""Every kind that takes a secret, created or attached through a real Jupyter server with a marker
value as its secret, in one run: an SSH machine's password (the real sshd), a Jupyter server's
token (a real one), an Azure ML cluster's administrator password, an attached VM's and an
HDInsight cluster's passwords and a Databricks token (the Resource Manager stand-in).

Each marker must reach only where it is used (the secret store, a mode-0600 file here or the
keyring; Azure) and appear in no REST answer, event, log line, CLI output or other file."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys

import pytest

from jupyter_compute.core.secrets import SecretStore
from tests.conftest import azure_server_config
from tests.support import cli, files_holding, wait_op
from tests.sshd import sshd  # noqa: F401  (fixture)
from tests.standins.azure import arm, azure_env, network_guard  # noqa: F401  (fixtures)
from tests.families.azureml.test_azureml_attach import CASES
from tests.families.azureml.test_azureml_attach_rest import Events
from tests.families.jupyter_server.test_remote_jupyter import remote  # noqa: F401  (fixture)

WS = "ml"


def marker(label: str) -> str:
    # Strong enough for Azure's password rules, and unique to this run.
    return f"Mk!{label}-{secrets.token_hex(6)}Z9"


@pytest.fixture
def jp_server_config(arm):  # noqa: F811
    return azure_server_config(arm, WS)


async def test_no_secret_of_any_kind_shows_anywhere(api, jp_ws_fetch, arm, sshd, remote, compute_db,  # noqa: F811
                                                    caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    events = Events(await jp_ws_fetch("api", "events", "subscribe"))
    answers: list[str] = []

    async def call(method, path, body=None):
        code, out = await api(method, path, body)
        answers.append(json.dumps(out))
        return code, out

    m = {k: marker(k) for k in ("ssh", "ssh2", "cluster", "vm", "hdi", "dbx")}
    m["jupyter"] = remote.token  # a real server lets in only its real token
    targets = [
        ("local", {"name": "m-ssh", "kind": "ssh", "host": "127.0.0.1", "port": sshd.port, "python": sys.executable,
                   "ssh_private_key": str(sshd.client_key_path), "password": m["ssh"],
                   "accept_host_key": sshd.fingerprint}),
        ("local", {"name": "m-jupyter", "kind": "jupyter", "url": remote.url, "token": m["jupyter"]}),
        (WS, {"name": "m-cluster", "kind": "compute-cluster", "admin_username": "azadmin",
              "admin_password": m["cluster"]}),
        (WS, {"name": "m-vm", "kind": "virtual-machine", **{**CASES["virtual-machine"][0], "admin_password": m["vm"]}}),
        (WS, {"name": "m-hdi", "kind": "hdinsight", **{**CASES["hdinsight"][0], "admin_password": m["hdi"]}}),
        (WS, {"name": "m-dbx", "kind": "databricks", **{**CASES["databricks"][0], "access_token": m["dbx"]}}),
    ]
    for ws, body in targets:
        code, reply = await call("POST", f"workspaces/{ws}/targets", body)
        assert code == 202, reply
        op = await wait_op(api, reply["operation"]["id"], timeout=60)
        assert op["status"] == "succeeded", op
        answers.append(json.dumps(op))
        code, shown = await call("GET", f"workspaces/{ws}/targets/{body['name']}")
        assert code == 200, shown
        await call("GET", f"workspaces/{ws}/targets/{body['name']}/nodes")
    for ws in ("local", WS):
        code, listing = await call("GET", f"workspaces/{ws}/targets")
        assert code == 200 and len(listing["targets"]) >= 3
        await call("GET", f"workspaces/{ws}/kinds")

    # Changing a secret is answered without it, too.
    code, patched = await call("PATCH", "workspaces/local/targets/m-ssh", {"password": m["ssh2"]})
    assert code == 200, patched
    store = SecretStore(str(compute_db))
    assert store.get("local", "m-ssh", "password") == m["ssh2"]
    assert store.get("local", "m-jupyter", "token") == m["jupyter"]

    # The command line shows the same targets from the same store.
    outputs = [await asyncio.to_thread(cli, *args) for args in
               (("list", "--output", "json"), ("show", "m-ssh", "--output", "json"),
                ("show", "m-jupyter", "--output", "json"))]
    assert all(r.returncode == 0 for r in outputs), [r.stderr for r in outputs]

    # Azure received the secrets of its kinds: they were used, not dropped.
    sent_to_azure = json.dumps([r.body for r in arm.arm_requests("PUT")], default=str)
    for key in ("cluster", "vm", "hdi", "dbx"):
        assert m[key] in sent_to_azure, key

    for ws, body in targets:
        code, reply = await call("DELETE", f"workspaces/{ws}/targets/{body['name']}")
        assert code == 202, reply
        op = await wait_op(api, reply["operation"]["id"], timeout=60)
        assert op["status"] == "succeeded", op
        await events.until(lambda e, n=body["name"]: e.get("name") == n and e.get("change") == "removed")
    events.conn.close()

    seen = {"REST answers": "\n".join(answers), "events": events.text(), "server log": caplog.text,
            "CLI": "\n".join(r.stdout + r.stderr for r in outputs)}
    for key, value in m.items():
        for where, text in seen.items():
            assert value not in text, f"the {key} secret shows in the {where}"
        # Only the secret store's own file may have held it, and it is gone with its target.
        holding = await asyncio.to_thread(files_holding, tmp_path, value)
        assert holding in ([], [store.path]), (key, holding)
        if holding:
            assert os.stat(store.path).st_mode & 0o777 == 0o600
            raise AssertionError(f"the {key} secret outlived its target in {store.path}")
    for ws, body in targets[:2]:
        for field in ("password", "token"):
            assert store.get(ws, body["name"], field) is None
