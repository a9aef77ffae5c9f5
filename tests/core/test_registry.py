"""Families register themselves: a family defined here joins through configuration and through an
entry point, and every face (core, REST, CLI) sees its kind; routes are opened once and reused."""
from __future__ import annotations

import textwrap

import pytest
from traitlets.config import Config

from jupyter_compute.core.errors import Conflict, InvalidRequest
from jupyter_compute.core.workspace import Compute
from tests.support import cli_main

TINY = "tests.core.tiny_family:family"


def compute_with(**compute_config) -> Compute:
    cfg = Config()
    for k, v in compute_config.items():
        setattr(cfg.ComputeConfig, k, v)
    return Compute.from_config(cfg)


async def test_a_family_named_in_the_configuration_is_loaded_beside_the_installed_ones():
    compute = compute_with(families=[TINY])
    try:
        names = [f.name for f in compute.families]
        assert names[:4] == ["local", "ssh", "dask", "jupyter_server"] and "notes" in names
        ws = compute.workspace("local")
        assert "note" in {k.name for k in ws.kinds()}
        op = await ws.create("n1", "note", {"greeting": "hi"}, wait=True)
        assert op.status.value == "succeeded", op
        assert [t.name for t in await ws.list() if t.kind == "note"] == ["n1"]

        route = await ws.open_route("n1")
        assert route.kind == "note" and route.is_open
        assert (await route.execute("_ = greeting + '!'")).result == {"text/plain": "'hi!'"}
        # The same route while the target's connection is the same; a new one once it changed.
        assert await ws.open_route("n1") is route and route.opened == 1
        await ws.update("n1", {"greeting": "bye"})
        again = await ws.open_route("n1")
        assert again is not route and not route.is_open and again.greeting == "bye"
        # What a route lacks is refused before anything runs, naming the target's kind.
        with pytest.raises(InvalidRequest, match=r"'n1' \(note\) does not support nodes"):
            again.cell_options(nodes=2)
        await ws.stop("n1", wait=True)
        with pytest.raises(Conflict, match="start it first"):
            await ws.open_route("n1")
        started = await ws.open_route("n1", start=True, progress=lambda op: None)
        assert started.is_open
    finally:
        await compute.close()


async def test_a_family_can_be_turned_off():
    compute = compute_with(families=[TINY], disabled_families=["notes", "dask"])
    try:
        kinds = {k.name for k in compute.workspace("local").kinds()}
        assert "note" not in kinds and "dask-cluster" not in kinds and "local-kernel" in kinds
    finally:
        await compute.close()


async def test_a_family_published_as_an_entry_point_is_found(tmp_path, monkeypatch):
    dist = tmp_path / "tiny_family-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-family\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(f"""
        [jupyter_compute.families]
        notes = {TINY}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    compute = compute_with()
    try:
        assert "notes" in [f.name for f in compute.families]
        assert "note" in {k.name for k in compute.workspace("local").kinds()}
    finally:
        await compute.close()


def test_a_family_that_cannot_be_loaded_is_left_out(capsys):
    compute = compute_with(families=["tests.core.no_such_module:family", "tests.core.tiny_family:NoteSpec"])
    try:
        assert [f.name for f in compute.families] == ["local", "ssh", "dask", "jupyter_server", "azureml"]
    finally:
        import asyncio
        asyncio.run(compute.close())


def test_the_command_line_sees_the_family(tmp_path):
    (tmp_path / "jupyter_compute_config.py").write_text(f"c.ComputeConfig.families = [{TINY!r}]\n")
    r = cli_main("kinds", env={"JUPYTER_CONFIG_DIR": str(tmp_path)})
    assert r.returncode == 0 and "note" in r.stdout and "Notes" in r.stdout, r.stderr
    r = cli_main("create", "n2", "--kind", "note", env={"JUPYTER_CONFIG_DIR": str(tmp_path)})
    assert r.returncode == 0 and "state: running" in r.stdout, r.stderr


@pytest.fixture
def jp_server_config():
    from tests.conftest import server_config
    return server_config(ComputeConfig={"monitor_interval": 0.2, "families": [TINY]})


async def test_the_rest_api_sees_the_family(api):
    code, body = await api("GET", "workspaces/local/kinds")
    assert code == 200 and "note" in {k["name"] for k in body["kinds"]}
    code, op = await api("POST", "workspaces/local/targets", {"name": "n3", "kind": "note", "greeting": "hey"})
    assert code == 202, op
