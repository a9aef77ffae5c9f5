"""No string from a request reaches a shell: every spec field of every kind, fed shell
metacharacters, path traversal, control characters, NUL, very long and unusual Unicode strings,
is refused with a 400 naming the field or kept as plain data, and nothing runs."""
from __future__ import annotations

import ast
import os
import stat
import sys
from pathlib import Path

import pytest

from tests.support import wait_op

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def jp_server_config():
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_compute": True}},
        "ComputeConfig": {"monitor_interval": 0.2, "allowed_hosts": ["127.0.0.1", "localhost"],
                          "max_concurrent_starts": 1},
    }


def payloads(marker: Path) -> list[str]:
    m = str(marker)
    return [
        f"x; touch {m}", f"$(touch {m})", f"`touch {m}`", f"x | touch {m}", f"x && touch {m}",
        f"x\ntouch {m}", "../../etc/passwd", "a\x01b\x1bc\x7f", "a\r\nInjected: 1", "a\x00b", "x" * 100_000,
        "\u202eexe.txt", "e\u0301\u0302\u0303\u0304", "\U0001f40d\U0001f4a5", "\ufeff\u200b",
    ]


#: Safe values for the fields a kind requires: SSH and Jupyter point where nothing listens, Dask at
#: the scheduler of the test's own dask-cluster target.
BASELINE = {
    "ssh": {"host": "127.0.0.1", "port": 1, "username": "nobody"},
    "jupyter": {"url": "http://127.0.0.1:1/", "token": "not-a-real-token"},
}


def string_fields(schema: dict) -> tuple[list[str], list[str]]:
    """(string fields, string-to-string map fields) of a kind's JSON Schema."""
    strings, maps = [], []
    for name, prop in schema["properties"].items():
        types = {prop.get("type")} | {a.get("type") for a in prop.get("anyOf", [])}
        if "string" in types:
            strings.append(name)
        elif "object" in types:
            maps.append(name)
    return strings, maps


def check_answer(code: int, body, what: str) -> None:
    if code == 503:
        # The value passed every check, and the backend dialled the baseline's port where nothing listens.
        assert body["reason"] in ("host_unreachable", "unreachable"), (what, body)
    elif code == 400:
        assert body["field"], (what, body)
    else:
        assert code in (200, 202), (what, code, body)


async def test_every_spec_field_takes_hostile_strings_as_data(api, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    code, body = await api("GET", "workspaces/local/kinds")
    assert code == 200
    kinds = {k["name"]: k for k in body["kinds"] if k["create_schema"] or k["attach_schema"]}
    assert {"local-kernel", "dask-cluster", "ssh", "dask", "jupyter"} <= set(kinds)
    tried = refused = kept = 0
    pending: list[str] = []
    serial = 0

    def fresh() -> str:
        nonlocal serial
        serial += 1
        return f"inj{serial}"

    # Managed kinds start processes when created, so one target of each takes every hostile value
    # through update (the same validation as create); attached kinds take them through attach.
    baselines = {}
    for kind in ("local-kernel", "dask-cluster"):
        code, body = await api("POST", "workspaces/local/targets", {"name": f"base-{kind}", "kind": kind})
        assert code == 202, body
        assert (await wait_op(api, body["operation"]["id"]))["status"] == "succeeded"
        baselines[kind] = f"base-{kind}"
    _, cluster = await api("GET", "workspaces/local/targets/base-dask-cluster")
    attach_to = {**BASELINE, "dask": {"scheduler_address": cluster["properties"]["scheduler_address"]}}

    for kind, info in sorted(kinds.items()):
        schema = info["create_schema"] or info["attach_schema"]
        strings, maps = string_fields(schema)
        for field in strings + maps:
            marker = markers / f"{kind}-{field}"
            for value in payloads(marker):
                variants = [value] if field in strings else [{"K": value}, {value: "v"}]
                for sent in variants:
                    tried += 1
                    what = f"{kind}.{field}={sent!r:.80}"
                    if kind in baselines and field != "name":
                        path = f"workspaces/local/targets/{baselines[kind]}"
                        _, before = await api("GET", path)
                        code, body = await api("PATCH", path, {field: sent})
                        check_answer(code, body, what)
                        _, after = await api("GET", path)
                        if code == 200:
                            kept += 1
                            # Kept exactly as sent (paths resolved to absolute ones): data, not a command.
                            if field in ("python", "cwd"):
                                assert os.path.isabs(after["properties"][field]), what
                            else:
                                assert after["properties"][field] == sent, what
                        else:
                            refused += 1
                            assert body["field"].lstrip("/").split("/")[0] == field, (what, body)
                            assert after["properties"] == before["properties"], what
                        continue
                    name = fresh() if field != "name" else sent
                    base = {k: v for k, v in attach_to.get(kind, {}).items() if (k, field) != ("token", "authorization")}
                    request = {**base, "name": name, "kind": kind, field: sent}
                    code, body = await api("POST", "workspaces/local/targets", request)
                    check_answer(code, body, what)
                    if code == 202:
                        kept += 1
                        pending.append((body["operation"]["id"], name, field, sent, info["attach_schema"]))
                    else:
                        refused += code == 400
                        code, _ = await api("GET", f"workspaces/local/targets/{name}") if field != "name" else (404, None)
                        assert code == 404, f"{what}: a refused request left a target"
    assert tried > 200 and refused > 50 and kept > 50, (tried, refused, kept)

    # Attaches to SSH and Jupyter dial a loopback port where nothing listens: they fail and are
    # forgotten. Those to the Dask scheduler succeed, and keep exactly what was sent.
    for op_id, name, field, sent, schema in pending:
        op = await wait_op(api, op_id, timeout=90)
        if op["status"] == "failed":
            code, _ = await api("GET", f"workspaces/local/targets/{name}")
            assert code == 404, f"a failed attach left {name}"
            continue
        code, t = await api("GET", f"workspaces/local/targets/{name}")
        assert code == 200 and t["kind"] == "dask", (op, t)
        if schema["properties"][field].get("writeOnly"):
            assert field not in t["properties"]
        elif field not in ("tls_ca_file", "tls_client_cert", "tls_client_key"):
            assert t["properties"][field] == sent, (field, sent)
        code, body = await api("DELETE", f"workspaces/local/targets/{name}")
        assert code == 202 and (await wait_op(api, body["operation"]["id"]))["status"] == "succeeded"
    code, body = await api("GET", "workspaces/local/targets")
    assert sorted(t["name"] for t in body["targets"]) == sorted([*baselines.values(), "this-machine"])
    for name in baselines.values():
        code, body = await api("DELETE", f"workspaces/local/targets/{name}")
        assert code == 202
        assert (await wait_op(api, body["operation"]["id"]))["status"] == "succeeded"
    assert list(markers.iterdir()) == [], "a hostile value ran as a command"


async def test_python_is_one_existing_executable_never_a_command_line(api, tmp_path):
    marker = tmp_path / "ran"
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\ntouch " + str(marker) + "\n")
    script.chmod(script.stat().st_mode & ~(stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
    for python in (f"/bin/sh -c 'touch {marker}'", f"{sys.executable} -c 'open(\"{marker}\", \"w\")'",
                   f"python3; touch {marker}", str(script), str(tmp_path), str(tmp_path / "missing"),
                   f"sh -c 'touch {marker}'"):
        code, body = await api("POST", "workspaces/local/targets",
                               {"name": "py", "kind": "local-kernel", "python": python})
        assert code == 400 and body["field"] == "/python", (python, code, body)
        code, _ = await api("GET", "workspaces/local/targets/py")
        assert code == 404
    assert not marker.exists()


SHELL_CALLS = {("os", "system"), ("os", "popen"), ("asyncio", "create_subprocess_shell"),
               ("subprocess", "getoutput"), ("subprocess", "getstatusoutput")}
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "create_subprocess_exec"}


def test_no_subprocess_goes_through_a_shell():
    """Every process jupyter_compute starts takes a list of arguments; none takes a command line."""
    offences, seen = [], 0
    for path in sorted((ROOT / "jupyter_compute").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if (owner, node.func.attr) in SHELL_CALLS or node.func.attr in ("subprocess_shell", "spawnl", "execl"):
                offences.append(f"{where}: {owner}.{node.func.attr}")
            if owner not in ("subprocess", "asyncio") or node.func.attr not in SUBPROCESS_CALLS:
                continue
            seen += 1
            if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                   for k in node.keywords):
                offences.append(f"{where}: shell=")
            if node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
                offences.append(f"{where}: a command line instead of a list of arguments")
    assert seen >= 5, "the check found too few subprocess calls to mean anything"
    assert not offences, offences
