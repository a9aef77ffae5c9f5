"""The shared sqlite store: schema migrations, privacy, and many writers at once."""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading

import pytest

from jupyter_compute.core.store import MIGRATIONS, SCHEMA_VERSION, Store


def test_new_store_is_private_wal_and_current(tmp_path):
    s = Store(str(tmp_path / "c.db"))
    assert stat.S_IMODE(os.stat(s.path).st_mode) == 0o600
    assert s.schema_version() == SCHEMA_VERSION
    conn = sqlite3.connect(s.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.insert_target("local", "a", "local-kernel", True, {}, "stopped")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(s.path + suffix):
            assert stat.S_IMODE(os.stat(s.path + suffix).st_mode) & 0o077 == 0


def test_an_older_store_is_migrated_keeping_its_rows(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO targets (workspace, name, kind, managed, spec, state, created, modified) "
                 "VALUES ('local', 'kept', 'local-kernel', 1, '{\"cwd\": \"/tmp\"}', 'stopped', 'x', 'x')")
    conn.commit()
    conn.close()
    s = Store(str(path))
    assert s.schema_version() == SCHEMA_VERSION
    assert s.get_target("local", "kept")["spec"] == {"cwd": "/tmp"}
    s.update_target("local", "kept", state="running")       # the v2 change feed works on the upgraded file
    assert s.changes_since(0)[-1]["name"] == "kept"


def test_a_newer_store_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(RuntimeError, match="upgrade jupyter_compute"):
        Store(str(path))


WRITER = textwrap.dedent("""
    import sys
    from jupyter_compute.core.store import Store
    s = Store(sys.argv[1])
    for i in range(int(sys.argv[3])):
        with s.write() as c:
            n = c.execute("SELECT spec FROM targets WHERE name='counter'").fetchone()[0]
            import json
            spec = json.loads(n)
            spec["n"] = spec.get("n", 0) + 1
            spec[sys.argv[2]] = spec.get(sys.argv[2], 0) + 1
            c.execute("UPDATE targets SET spec=? WHERE name='counter'", (json.dumps(spec),))
""")


def test_two_processes_and_threads_writing_at_once_lose_no_update(tmp_path):
    path = str(tmp_path / "c.db")
    s = Store(path)
    s.insert_target("local", "counter", "local-kernel", True, {}, "stopped")
    n = 200
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path, "other", str(n)])

    def bump():
        for _ in range(n // 4):
            with s.write() as c:
                spec = json.loads(c.execute("SELECT spec FROM targets WHERE name='counter'").fetchone()[0])
                spec["n"] = spec.get("n", 0) + 1
                c.execute("UPDATE targets SET spec=? WHERE name='counter'", (json.dumps(spec),))
    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert proc.wait(timeout=120) == 0
    spec = s.get_target("local", "counter")["spec"]
    assert spec["n"] == 2 * n and spec["other"] == n
    assert s.integrity_check() == "ok"


def test_begin_operation_refuses_a_second_but_not_an_abandoned_one(tmp_path):
    from jupyter_compute.core.errors import Conflict
    s = Store(str(tmp_path / "c.db"))
    s.insert_target("local", "t", "local-kernel", True, {}, "stopped")
    first = s.begin_operation("local", "t", "start", "1:1", lambda op: False)
    with pytest.raises(Conflict, match="already running"):
        s.begin_operation("local", "t", "stop", "2:2", lambda op: False)
    second = s.begin_operation("local", "t", "stop", "2:2", lambda op: op["owner"] == "1:1")
    assert s.get_operation(first["id"])["status"] == "failed"
    assert "exited before it finished" in s.get_operation(first["id"])["error"]["message"]
    assert second["status"] == "running"


def test_the_list_parses_only_rows_that_changed_and_sees_every_change(tmp_path):
    """A row read unchanged since the last list is the same dict, not parsed again; any write (one
    in the same microsecond too, whose `modified` is equal) and any other process's write is seen."""
    s = Store(str(tmp_path / "c.db"))
    for name in ("a", "b", "c"):
        s.insert_target("local", name, "local-kernel", True, {"n": 1}, "stopped")
    first = {r["name"]: r for r in s.list_targets("local")}
    s.update_target("local", "b", spec={"n": 2})
    # Another process's write in the same microsecond as the last: `modified` is as it was. (Every
    # write records a change naming its target, as the store's own writes do.)
    other = sqlite3.connect(s.path)
    other.execute("UPDATE targets SET state = 'running' WHERE name = 'c'")
    other.execute("INSERT INTO changes (origin, entity, workspace, name) VALUES (0, 'target', 'local', 'c')")
    other.commit()
    other.close()
    s.delete_target("local", "a")
    second = {r["name"]: r for r in s.list_targets("local")}

    assert list(second) == ["b", "c"]
    assert second["b"]["spec"] == {"n": 2} and second["b"] is not first["b"]
    assert second["c"]["state"] == "running" and second["c"]["modified"] == first["c"]["modified"]
    s.insert_target("local", "d", "local-kernel", True, {"n": 4}, "stopped")
    third = {r["name"]: r for r in s.list_targets("local")}
    assert third["b"] is second["b"] and third["c"] is second["c"]  # unchanged: not parsed again
    assert third["d"]["spec"] == {"n": 4} and "a" not in third
    # The checks that run every second read only the rows they look at.
    s.insert_target("other", "e", "local-kernel", True, {}, "running")
    assert [r["name"] for r in s.find_targets(kind="local-kernel", workspace="local", states=["running"])] == ["c"]
    assert sorted(r["name"] for r in s.find_targets(states=["running", "stopped"])) == ["b", "c", "d", "e"]
    assert s.find_targets(kind="dask-cluster") == [] and len(s.find_targets()) == 4


def test_an_unchanged_store_is_listed_without_reading_its_rows_and_any_write_is_seen(tmp_path):
    """Every write of a target records a change: while none was recorded since the last list, that
    list is the answer, read with one query; a write by another process's store is seen at once."""
    s = Store(str(tmp_path / "c.db"))
    for name in ("a", "b"):
        s.insert_target("local", name, "local-kernel", True, {}, "stopped")
    first = s.list_targets("local")
    statements: list[str] = []
    s._conn().set_trace_callback(statements.append)  # this thread's connection: the one listing
    again = s.list_targets("local")
    assert statements == ["SELECT MAX(seq) FROM changes"]
    assert [r["name"] for r in again] == ["a", "b"] and all(x is y for x, y in zip(again, first))
    again.pop()  # the caller's own list: the next answer is whole
    assert len(s.list_targets("local")) == 2

    other = Store(s.path)  # another process's store
    other.update_target("local", "b", state="running")
    other.close()
    statements.clear()
    third = s.list_targets("local")
    assert any("FROM targets" in q for q in statements)
    assert [r["state"] for r in third] == ["stopped", "running"] and third[0] is first[0]
    s.delete_target("local", "a")
    assert [r["name"] for r in s.list_targets("local")] == ["b"]
    s.close()


def test_after_a_few_changes_only_the_rows_they_name_are_read(tmp_path, monkeypatch):
    """A list after changes reads the rows the changes name, and stays what a whole read gives: in
    name order, with renames, new and deleted targets; when changes were trimmed since the last list,
    or name too many targets, every row is read again."""
    from jupyter_compute.core import store as store_module

    s = Store(str(tmp_path / "c.db"))
    for name in ("b", "d", "f", "h"):
        s.insert_target("local", name, "local-kernel", True, {}, "stopped")
    s.insert_target("other", "x", "local-kernel", True, {}, "stopped")
    first = s.list_targets("local")
    statements: list[str] = []
    s._conn().set_trace_callback(statements.append)

    def whole() -> list[dict]:
        fresh = Store(s.path)  # no list before: reads every row
        try:
            return fresh.list_targets("local")
        finally:
            fresh.close()

    other = Store(s.path)  # another process's store
    other.update_target("local", "d", state="running")
    other.insert_target("local", "c", "local-kernel", True, {}, "stopped")
    other.insert_target("other", "y", "local-kernel", True, {}, "stopped")
    other.delete_target("local", "h")
    other.rename_target("local", "f", "a", lambda op: False, states=("stopped",))
    listed = s.list_targets("local")
    assert not any("ORDER BY name" in q for q in statements), statements
    assert any("name IN" in q for q in statements), statements
    assert listed == whole() and [t["name"] for t in listed] == ["a", "b", "c", "d"]
    assert listed[1] is first[0] and listed[3]["state"] == "running"  # b was not parsed again

    # Changes trimmed since the last list: which targets they named is not known, so all are read.
    other.update_target("local", "b", state="running")
    with other.write() as c:
        c.execute("DELETE FROM changes")
    other.update_target("local", "c", state="running")
    statements.clear()
    listed = s.list_targets("local")
    assert any("ORDER BY name" in q for q in statements), statements
    assert listed == whole() and [t["state"] for t in listed] == ["stopped", "running", "running", "running"]

    # Changes naming more targets than are worth reading one by one: all are read.
    monkeypatch.setattr(store_module.Store, "CHANGED_READ_LIMIT", 2)
    for name in ("a", "b", "c"):
        other.update_target("local", name, spec={"description": f"now {name}"})
    statements.clear()
    listed = s.list_targets("local")
    assert any("ORDER BY name" in q for q in statements), statements
    assert listed == whole() and [t["spec"].get("description") for t in listed][:3] == ["now a", "now b", "now c"]
    other.close()
    s.close()


def test_kept_targets_are_serialised_once_as_any_other_target_is_and_forgotten_with_them():
    import gc

    import pydantic_core

    from jupyter_compute.core import models
    from jupyter_compute.core.models import State, Target, keep, targets_json, utcnow

    def target(name: str) -> Target:
        return Target(name=name, workspace="local", kind="local-kernel", managed=True, state=State.stopped,
                      created=utcnow(), modified=utcnow(), properties={"note": f"a \"quoted\" {name} é"})

    kept, fresh = keep(target("k")), target("f")
    assert json.loads(targets_json([kept, fresh])) == json.loads(pydantic_core.to_json({"targets": [kept, fresh]}))
    assert targets_json([]) == b'{"targets":[]}'
    key = id(kept)
    assert key in models._kept_json and id(fresh) not in models._kept_json
    del kept
    gc.collect()
    assert key not in models._kept_json
