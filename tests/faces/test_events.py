"""Changes reach subscribers of Jupyter's event bus, whichever process made them."""
from __future__ import annotations

import asyncio
import json
import time

from tests.support import cli_subprocess, wait_op

TARGET = "https://events.jupyter.org/jupyter_compute/target/v1"
OPERATION = "https://events.jupyter.org/jupyter_compute/operation/v1"


async def collect(ws, predicate, timeout=15.0):
    """Read events until one matches; return all seen (fails rather than hangs)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = await asyncio.wait_for(ws.read_message(), timeout=deadline - time.monotonic())
        except asyncio.TimeoutError:
            break
        if msg is None:
            break
        event = json.loads(msg)
        seen.append(event)
        if predicate(event):
            return seen
    raise AssertionError(f"no matching event within {timeout}s; saw {[(e['schema_id'], e.get('name', e)) for e in seen]}")


def is_target(name, state):
    return lambda e: e.get("schema_id") == TARGET and e.get("name") == name and e.get("state") == state


async def test_rest_changes_are_published(api, jp_ws_fetch):
    ws = await jp_ws_fetch("api", "events", "subscribe")
    code, body = await api("POST", "workspaces/local/targets", {"name": "ev1", "kind": "local-kernel"})
    assert code == 202
    seen = await collect(ws, is_target("ev1", "running"))
    ops = [e for e in seen if e["schema_id"] == OPERATION and e["target"] == "ev1"]
    assert ops and ops[0]["action"] == "create"
    assert any(e["status"] == "succeeded" for e in ops) or (await wait_op(api, body["operation"]["id"]))
    await api("POST", "workspaces/local/targets/ev1/stop")
    await collect(ws, is_target("ev1", "stopped"))
    await api("DELETE", "workspaces/local/targets/ev1")
    await collect(ws, lambda e: e.get("schema_id") == TARGET and e.get("name") == "ev1" and e["change"] == "removed")
    ws.close()


async def test_cli_changes_are_noticed_and_published(api, jp_ws_fetch):
    # A CLI process of its own: the server learns of its changes only through the store, and the
    # create it hands off with --no-wait finishes after that process has exited.
    ws = await jp_ws_fetch("api", "events", "subscribe")
    r = await asyncio.to_thread(cli_subprocess, "create", "ev2", "--kind", "local-kernel", "--no-wait")
    assert r.returncode == 0, r.stderr
    await collect(ws, is_target("ev2", "running"))
    r = await asyncio.to_thread(cli_subprocess, "update", "ev2", "--description", "from the CLI")
    assert r.returncode == 0, r.stderr
    await collect(ws, lambda e: e.get("schema_id") == TARGET and e.get("name") == "ev2")
    ws.close()
