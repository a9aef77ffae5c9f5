"""Every REST route and error status, through a real Jupyter server (pytest-jupyter)."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import jsonschema
import psutil
import pytest
from openapi_spec_validator import validate
from tornado.httpclient import HTTPClientError

from jupyter_compute.handlers import HANDLERS

from tests.support import wait_op


async def test_workspaces_and_kinds(api):
    code, body = await api("GET", "workspaces")
    assert code == 200
    assert [w["id"] for w in body["workspaces"]] == ["local"]
    assert body["workspaces"][0]["default"] is True
    code, body = await api("GET", "workspaces/local/kinds")
    kinds = {k["name"]: k for k in body["kinds"]}
    assert {"local", "local-kernel"} <= set(kinds)
    lk = kinds["local-kernel"]
    assert lk["family"] == "Local kernels" and lk["managed"] is True
    assert {"create", "start", "stop", "restart", "delete"} <= set(lk["operations"])
    assert "memory_limit_mb" in lk["create_schema"]["properties"]
    # The kind's examples are each field's example, which the forms show as "e.g. …".
    props = lk["create_schema"]["properties"]
    assert props["memory_limit_mb"]["examples"] == [8192] and props["name"]["examples"] == ["analysis"]
    dask = kinds["dask-cluster"]["create_schema"]["properties"]
    assert (dask["min_nodes"]["title"], dask["max_nodes"]["title"]) == ("Minimum workers", "Maximum workers")


async def test_each_kind_schema_validates_its_examples(api):
    _, body = await api("GET", "workspaces/local/kinds")
    checked = 0
    for kind in body["kinds"]:
        schema = kind["create_schema"] or kind["attach_schema"]
        for example in kind["examples"]:
            jsonschema.validate(example, schema)
            checked += 1
    assert checked >= 2


async def test_this_machine_is_always_there(api):
    code, t = await api("GET", "workspaces/local/targets/this-machine")
    assert code == 200
    assert t["kind"] == "local" and t["state"] == "running"
    assert t["size"]["vcpus"] == psutil.cpu_count()
    assert t["size"]["memory_gb"] > 0 and "load_1m" in t["properties"] and "cpu_percent" in t["properties"]
    for action in ("stop", "restart"):
        code, err = await api("POST", f"workspaces/local/targets/this-machine/{action}")
        assert code == 400 and "always running" in err["message"]
    code, err = await api("DELETE", "workspaces/local/targets/this-machine")
    assert code == 400
    code, nodes = await api("GET", "workspaces/local/targets/this-machine/nodes")
    assert code == 200 and len(nodes["nodes"]) == 1


async def test_sizes_and_usage(api):
    code, body = await api("GET", "workspaces/local/sizes")
    assert code == 200 and body["sizes"][0]["vcpus"] == psutil.cpu_count()
    code, body = await api("GET", "workspaces/local/usage")
    assert code == 200 and {u["name"] for u in body["usage"]} >= {"local kernels running"}


async def test_the_kernelspec_news_says_how_long_ago_a_target_last_changed(api):
    code, first = await api("GET", "kernelspecs/news")
    assert code == 200, first
    await asyncio.sleep(0.5)
    _, quiet = await api("GET", "kernelspecs/news")
    assert quiet["seconds_since_change"] >= first["seconds_since_change"] + 0.5

    asked = time.monotonic()
    code, body = await api("POST", "workspaces/local/targets", {"name": "k1", "kind": "local-kernel"})
    assert code == 202, body
    assert (await wait_op(api, body["operation"]["id"]))["status"] == "succeeded"
    _, news = await api("GET", "kernelspecs/news")
    # The target's change was announced after it was asked for: a page opened before then must read again.
    assert news["seconds_since_change"] <= time.monotonic() - asked


async def test_local_kernel_lifecycle_over_rest(api, compute_db):
    code, body = await api("POST", "workspaces/local/targets",
                           {"name": "k1", "kind": "local-kernel", "env": {"MARKER": "x1"}})
    assert code == 202
    op = body["operation"]
    assert op["action"] == "create" and op["target"] == "k1" and op["workspace"] == "local"
    op = await wait_op(api, op["id"])
    assert op["status"] == "succeeded", op
    _, t = await api("GET", "workspaces/local/targets/k1")
    assert t["state"] == "running" and t["managed"] is True
    pid = t["properties"]["kernel_pid"]
    proc = psutil.Process(pid)
    assert proc.environ().get("MARKER") == "x1"

    code, nodes = await api("GET", "workspaces/local/targets/k1/nodes")
    assert code == 200 and nodes["nodes"][0]["properties"]["pid"] == pid

    code, body = await api("POST", "workspaces/local/targets/k1/restart")
    assert code == 202
    assert (await wait_op(api, body["operation"]["id"]))["status"] == "succeeded"
    _, t = await api("GET", "workspaces/local/targets/k1")
    assert t["state"] == "running" and t["properties"]["kernel_pid"] != pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    code, t = await api("PATCH", "workspaces/local/targets/k1", {"idle_shutdown_minutes": 30})
    assert code == 200 and t["properties"]["idle_shutdown_minutes"] == 30

    code, body = await api("POST", "workspaces/local/targets/k1/stop")
    assert code == 202
    assert (await wait_op(api, body["operation"]["id"]))["status"] == "succeeded"
    _, t = await api("GET", "workspaces/local/targets/k1")
    assert t["state"] == "stopped"

    code, body = await api("DELETE", "workspaces/local/targets/k1")
    assert code == 202
    assert (await wait_op(api, body["operation"]["id"]))["status"] == "succeeded"
    code, err = await api("GET", "workspaces/local/targets/k1")
    assert code == 404 and err["reason"] == "unknown_target"


@pytest.mark.parametrize("body, field, fragment", [
    ({"name": "local", "kind": "local-kernel"}, "/name", "reserved"),
    ({"name": "LOCAL", "kind": "local-kernel"}, "/name", "reserved"),
    ({"name": "9lives", "kind": "local-kernel"}, "/name", "start with a letter"),
    ({"name": "a b", "kind": "local-kernel"}, "/name", "letters"),
    ({"name": "k", "kind": "no-such-kind"}, "/kind", "unknown kind"),
    ({"name": "k"}, "/kind", "required"),
    ({"name": "k", "kind": "local-kernel", "memory_limit_mb": 1}, "/memory_limit_mb", "must be at least 64"),
    ({"name": "k", "kind": "local-kernel", "memory_limit_mb": "lots"}, "/memory_limit_mb", "must be a whole number"),
    ({"name": "k", "kind": "local-kernel", "idle_shutdown_minutes": 0}, "/idle_shutdown_minutes", "must be at least 1"),
    ({"name": "k", "kind": "local-kernel", "python": "/no/such/python"}, "/python", "not an executable"),
    ({"name": "k", "kind": "local-kernel", "python": "python; rm -rf /"}, "/python", "not an executable"),
    ({"name": "k", "kind": "local-kernel", "cwd": "/no/such/dir"}, "/cwd", "not an existing directory"),
    ({"name": "k", "kind": "local-kernel", "env": {"A=B": "1"}}, "/env", "environment variable"),
    ({"name": "k", "kind": "local-kernel", "size": "big"}, "/size", "not a field"),
    ({"name": "k", "kind": "local", }, "/kind", None),
])
async def test_invalid_create_is_400_naming_the_field_and_changes_nothing(api, body, field, fragment):
    code, err = await api("POST", "workspaces/local/targets", body)
    assert code in (400, 409), err
    assert err["field"] == field
    if fragment:
        assert fragment in err["message"]
    _, listing = await api("GET", "workspaces/local/targets")
    assert [t["name"] for t in listing["targets"]] == ["this-machine"]


async def test_malformed_bodies_are_400(api):
    for raw in ("{not json", "[1, 2]", '"text"'):
        code, err = await api("POST", "workspaces/local/targets", raw)
        assert code == 400 and err["reason"] == "bad_json", raw
    code, err = await api("PATCH", "workspaces/local/targets/this-machine", {})
    assert code == 400


async def test_unknowns_are_404(api):
    assert (await api("GET", "workspaces/nope/targets"))[0] == 404
    assert (await api("GET", "workspaces/nope/kinds"))[0] == 404
    assert (await api("GET", "workspaces/local/targets/ghost"))[0] == 404
    assert (await api("POST", "workspaces/local/targets/ghost/start"))[0] == 404
    assert (await api("GET", "workspaces/local/targets/ghost/nodes"))[0] == 404
    assert (await api("DELETE", "workspaces/local/targets/ghost"))[0] == 404
    assert (await api("GET", "operations/0000"))[0] == 404


async def test_name_taken_and_update_rules(api):
    code, body = await api("POST", "workspaces/local/targets", {"name": "this-machine", "kind": "local-kernel"})
    assert code == 409 and body["field"] == "/name"
    code, body = await api("POST", "workspaces/local/targets", {"name": "dup", "kind": "local-kernel"})
    assert code == 202
    code, err = await api("POST", "workspaces/local/targets", {"name": "dup", "kind": "local-kernel"})
    assert code == 409 and err["reason"] in ("name_taken", "operation_in_progress")
    await wait_op(api, body["operation"]["id"])
    code, err = await api("PATCH", "workspaces/local/targets/dup", {"kind": "local"})
    assert code == 400 and err["field"] == "/kind"
    code, err = await api("PATCH", "workspaces/local/targets/dup", {"memory_limit_mb": -5})
    assert code == 400 and err["field"] == "/memory_limit_mb"
    code, err = await api("PATCH", "workspaces/local/targets/dup", {"bogus": 1})
    assert code == 400 and err["field"] == "/bogus"
    code, err = await api("PATCH", "workspaces/local/targets/this-machine", {"description": "x"})
    assert code == 400


async def test_requests_without_a_token_are_refused(jp_fetch):
    for method, path in (("GET", ("workspaces",)), ("GET", ("openapi.json",)),
                         ("POST", ("workspaces", "local", "targets"))):
        with pytest.raises(HTTPClientError) as e:
            await jp_fetch("jupyter-compute", *path, method=method, headers={"Authorization": ""},
                           body=b"{}" if method == "POST" else None)
        assert e.value.code in (401, 403)


def test_every_handler_method_is_authenticated_and_authorized():
    """Each method is tornado's ``authenticated`` around jupyter_server's ``authorized`` around the
    method itself: the wrappers are recognised by their code, so no other decorator passes for them."""
    from jupyter_server.auth.decorator import authorized
    from tornado import web

    async def method(self):
        return None

    authenticated_code = web.authenticated(method).__code__
    authorized_code = authorized(method).__code__
    checked = 0
    for _, handler in HANDLERS:
        for name in ("get", "post", "patch", "delete", "put"):
            fn = handler.__dict__.get(name)
            if fn is None:
                continue
            inner = getattr(fn, "__wrapped__", None)
            assert fn.__code__ is authenticated_code and inner is not None, \
                f"{handler.__name__}.{name} is not tornado.web.authenticated"
            assert inner.__code__ is authorized_code, f"{handler.__name__}.{name} is not jupyter_server's authorized"
            assert not hasattr(inner.__wrapped__, "__wrapped__"), f"{handler.__name__}.{name}: another wrapper"
            checked += 1
        assert handler.auth_resource == "compute"
    assert checked >= 20


async def test_openapi_is_valid_and_lists_exactly_the_served_routes(api):
    code, doc = await api("GET", "openapi.json")
    assert code == 200
    validate(doc)
    documented = {(path, m.upper()) for path, ops in doc["paths"].items() for m in ops}
    served = {(path, m.upper()) for pattern, handler in HANDLERS for path in expand(pattern)
              for m in ("get", "post", "patch", "delete", "put") if m in handler.__dict__}
    assert documented == served


GROUP = re.compile(r"\(\?P<(\w+)>([^)]*)\)")


def expand(pattern: str) -> list[str]:
    """The OpenAPI paths a route regex serves: a literal alternation gives one path per word."""
    m = GROUP.search(pattern)
    if m is None:
        return [pattern]
    name, body = m.groups()
    if re.fullmatch(r"\w+(\|\w+)+", body):
        fills = body.split("|")
    else:
        fills = ["{id}" if name == "op_id" else "{%s}" % name]
    return [p for fill in fills for p in expand(pattern[:m.start()] + fill + pattern[m.end():])]


async def test_the_python_field_offers_the_environments_found_on_this_machine(api, tmp_path, monkeypatch):
    home = tmp_path / "home"
    project = tmp_path / "project"
    for env in (home / ".venvs" / "ml", home / ".virtualenvs" / "etl", project / ".venv"):
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    (home / ".venvs" / "not-an-env").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(project)
    code, body = await api("GET", "pythons")
    assert code == 200, body
    offered = {p["path"]: p for p in body["pythons"]}
    assert body["pythons"][0]["source"] == "this" and body["pythons"][0]["path"] == os.path.abspath(sys.executable)
    for env, label in ((home / ".venvs" / "ml", "~/.venvs/ml"), (home / ".virtualenvs" / "etl", "~/.virtualenvs/etl"),
                       (project / ".venv", str(project / ".venv"))):
        exe = str(env / "bin" / "python")
        assert exe in offered, sorted(offered)
        assert offered[exe]["label"] == label and offered[exe]["source"] == "venv"
    assert not [p for p in offered if "not-an-env" in p]
    # What is offered is what the field takes: a target made with one runs in it (the venv sees this
    # Python's packages, for ipykernel, through a path entry).
    ml = str(home / ".venvs" / "ml" / "bin" / "python")
    purelib = subprocess.run([ml, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    ours = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    with open(os.path.join(purelib, "shared-packages.pth"), "w") as f:
        f.write(ours + "\n")
    code, body = await api("POST", "workspaces/local/targets", {"name": "ml", "kind": "local-kernel", "python": ml})
    assert code == 202, body
    assert (await wait_op(api, body["operation"]["id"]))["status"] == "succeeded"
    _, t = await api("GET", "workspaces/local/targets/ml")
    assert psutil.Process(t["properties"]["kernel_pid"]).cmdline()[0] == ml
