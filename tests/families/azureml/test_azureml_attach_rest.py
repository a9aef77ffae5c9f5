"""Attached Azure ML compute through a real Jupyter server's REST API and event bus, against the
Resource Manager stand-in: every kind attached, listed, shown and detached with a marker secret
that must reach Azure and appear in no response, event, log line or file; the duplicate-attach
guard as 409 and ``force``; validation as 400 with no request to Azure."""
from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from tests.conftest import azure_server_config
from tests.standins.azure import arm, azure_env, network_guard  # noqa: F401  (fixtures)
from tests.families.azureml.test_azureml_attach import AKS_ID, CASES, MARKER
from tests.support import files_holding, wait_op

WS = "ml"
OPERATION = "https://events.jupyter.org/jupyter_compute/operation/v1"
TARGET = "https://events.jupyter.org/jupyter_compute/target/v1"


@pytest.fixture
def jp_server_config(arm):
    return azure_server_config(arm, WS)


class Events:
    """Everything published on /api/events/subscribe while a test runs."""

    def __init__(self, conn):
        self.conn = conn
        self.seen: list[dict] = []

    async def until(self, predicate, timeout: float = 20.0) -> dict:
        for e in self.seen:
            if predicate(e):
                return e
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = await asyncio.wait_for(self.conn.read_message(), timeout=deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
            if msg is None:
                break
            event = json.loads(msg)
            self.seen.append(event)
            if predicate(event):
                return event
        raise AssertionError(f"no matching event within {timeout}s; saw {self.seen}")

    def text(self) -> str:
        return json.dumps(self.seen)


@pytest.fixture
def events(jp_ws_fetch, jp_asyncio_loop):
    """The server's event bus, subscribed to before the test starts; unsubscribed when it ends."""
    subscribed = Events(jp_asyncio_loop.run_until_complete(jp_ws_fetch("api", "events", "subscribe")))
    yield subscribed
    subscribed.conn.close()


def op_done(op_id):
    return lambda e: e.get("schema_id") == OPERATION and e.get("id") == op_id and e.get("status") != "running"


@pytest.mark.parametrize("kind", list(CASES))
async def test_attach_list_show_detach_over_rest(arm, api, events, caplog, tmp_path, kind):
    caplog.set_level(logging.DEBUG)
    spec = CASES[kind][0]
    answers = []

    async def call(method, path, body=None):
        code, out = await api(method, path, body)
        answers.append(json.dumps(out))
        return code, out

    code, body = await call("POST", f"workspaces/{WS}/targets", {"name": "att1", "kind": kind, **spec})
    assert code == 202, body
    op = await wait_op(api, body["operation"]["id"])
    assert op["status"] == "succeeded", op
    await events.until(op_done(op["id"]))
    code, listed = await call("GET", f"workspaces/{WS}/targets")
    assert code == 200 and [(t["name"], t["kind"], t["state"]) for t in listed["targets"]] == [
        ("att1", kind, "running")]
    code, shown = await call("GET", f"workspaces/{WS}/targets/att1")
    assert code == 200 and shown["properties"]["attached_resource_id"] == spec["resource_id"]
    assert shown["managed"] is False and shown["properties"]["portal_url"].startswith("https://portal.azure.com/#")
    code, nodes = await call("GET", f"workspaces/{WS}/targets/att1/nodes")
    if kind in ("virtual-machine", "hdinsight"):
        assert [(n["address"], n["port"]) for n in nodes["nodes"]] == [
            (shown["properties"]["address"], spec.get("ssh_port", 22))]
    code, kinds = await call("GET", f"workspaces/{WS}/kinds")
    assert code == 200

    code, body = await call("DELETE", f"workspaces/{WS}/targets/att1")
    assert code == 202 and body["operation"]["action"] == "detach"
    gone = await wait_op(api, body["operation"]["id"])
    assert gone["status"] == "succeeded", gone
    await events.until(lambda e: e.get("schema_id") == TARGET and e.get("name") == "att1"
                       and e.get("change") == "removed")
    await events.until(op_done(gone["id"]))
    assert arm.arm_requests("DELETE")[-1].query["underlyingResourceAction"] == "Detach"
    assert arm.deleted_resources == []
    progress = [e.get("progress") or "" for e in events.seen if e.get("schema_id") == OPERATION]
    assert any("left as it is" in p for p in progress)

    if CASES[kind][2]:
        assert MARKER in json.dumps(arm.secrets_of("att1"))  # Azure got it ...
    for text in answers + [events.text(), caplog.text]:     # ... and nothing else did
        assert MARKER not in text
    assert not await asyncio.to_thread(files_holding, tmp_path, MARKER)


async def test_duplicate_attach_is_409_and_force_warns_in_events(arm, api, events):
    code, body = await api("POST", f"workspaces/{WS}/targets", {"name": "k8s", "kind": "kubernetes",
                                                               "resource_id": AKS_ID})
    assert (await wait_op(api, body["operation"]["id"]))["status"] == "succeeded"
    puts = len(arm.arm_requests("PUT"))
    code, err = await api("POST", f"workspaces/{WS}/targets", {"name": "k8s2", "kind": "kubernetes",
                                                              "resource_id": AKS_ID})
    assert code == 409, err
    assert err["reason"] == "already_attached" and err["existing"] == "k8s" and err["field"] == "/resource_id"
    assert "'k8s'" in err["message"] and "force" in err["message"]
    assert len(arm.arm_requests("PUT")) == puts
    code, _ = await api("GET", f"workspaces/{WS}/targets/k8s2")
    assert code == 404

    code, err = await api("POST", f"workspaces/{WS}/targets", {"name": "k8s2", "kind": "kubernetes",
                                                              "resource_id": AKS_ID, "force": "yes"})
    assert code == 400 and err["field"] == "/force"
    code, body = await api("POST", f"workspaces/{WS}/targets", {"name": "k8s2", "kind": "kubernetes",
                                                               "resource_id": AKS_ID, "force": True})
    assert code == 202
    op_id = body["operation"]["id"]
    warning = await events.until(lambda e: e.get("schema_id") == OPERATION and e.get("id") == op_id
                                 and (e.get("progress") or "").startswith("warning:"))
    assert "'k8s' stop working" in warning["progress"]
    assert (await wait_op(api, op_id))["status"] == "succeeded"


@pytest.mark.parametrize("body, field, words", [
    ({"name": "vm1", "kind": "virtual-machine", "resource_id": AKS_ID, "admin_username": "azureuser",
      "admin_password": MARKER}, "/resource_id", "attach it with kind"),
    ({"name": "vm1", "kind": "virtual-machine", "resource_id": CASES["virtual-machine"][0]["resource_id"],
      "admin_username": "azureuser"}, "/admin_password", "give admin_password or ssh_private_key"),
    ({"name": "dbx", "kind": "databricks", "resource_id": CASES["databricks"][0]["resource_id"]},
     "/access_token", "required"),
    ({"name": "k8s", "kind": "kubernetes", "resource_id": "aks-ml"}, "/resource_id", "not an Azure resource id"),
    ({"name": "x" * 17, "kind": "aks", "resource_id": AKS_ID}, "/name", "2-16"),
    ({"name": "old", "kind": "batch", "resource_id": AKS_ID}, "/kind", "compute cluster"),
    ({"name": "old", "kind": "aci"}, "/kind", "online endpoint"),
])
async def test_invalid_attach_is_400_and_azure_sees_nothing(arm, api, body, field, words):
    code, err = await api("POST", f"workspaces/{WS}/targets", body)
    assert code == 400, err
    assert err["field"] == field and words in err["message"] and MARKER not in json.dumps(err)
    assert arm.requests == [] and arm.token_requests == []


async def test_patch_of_an_attached_target_says_detach_then_attach(arm, api):
    code, body = await api("POST", f"workspaces/{WS}/targets", {"name": "adf", "kind": "data-factory",
                                                               "resource_id": CASES["data-factory"][0]["resource_id"]})
    assert (await wait_op(api, body["operation"]["id"]))["status"] == "succeeded"
    code, err = await api("PATCH", f"workspaces/{WS}/targets/adf", {"description": "new"})
    assert code == 400 and "detach it" in err["message"] and "attach it again" in err["message"]
    code, err = await api("POST", f"workspaces/{WS}/targets/adf/start")
    assert code == 400 and "does not start it" in err["message"]
