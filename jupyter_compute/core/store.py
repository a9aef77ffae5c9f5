"""The sqlite store every process of a user shares: the server, kernels and the CLI.

WAL lets readers run beside a writer; every write is a ``BEGIN IMMEDIATE`` transaction so two
processes never interleave a read-modify-write; a busy timeout makes a writer wait its turn.
Every change appends a row to ``changes`` so another process can notice it by tailing that
table. The schema is versioned with ``PRAGMA user_version`` and migrated forward on open.

All methods are blocking; async callers run them in a thread (see ``AsyncStore``).
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator

from .errors import Conflict, NotFound, Unavailable
from .clock import utcnow

# Each entry moves the schema from version i to i+1. Never edit a released entry: append.
MIGRATIONS: list[str] = [
    # 1: targets and operations
    """
    CREATE TABLE targets (
        workspace TEXT NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        managed INTEGER NOT NULL,
        spec TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL,
        provider_state TEXT,
        errors TEXT NOT NULL DEFAULT '[]',
        runtime TEXT NOT NULL DEFAULT '{}',
        created TEXT NOT NULL,
        modified TEXT NOT NULL,
        PRIMARY KEY (workspace, name)
    );
    CREATE TABLE operations (
        id TEXT PRIMARY KEY,
        workspace TEXT NOT NULL,
        target TEXT NOT NULL,
        action TEXT NOT NULL,
        status TEXT NOT NULL,
        progress TEXT NOT NULL DEFAULT '',
        error TEXT,
        owner TEXT,
        started TEXT NOT NULL,
        ended TEXT
    );
    CREATE INDEX operations_by_target ON operations (workspace, target, status);
    """,
    # 2: the change feed other processes tail, and free-form per-workspace settings
    """
    CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        origin INTEGER NOT NULL,
        entity TEXT NOT NULL,
        workspace TEXT NOT NULL,
        name TEXT NOT NULL,
        operation TEXT
    );
    CREATE TABLE workspaces (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        config TEXT NOT NULL DEFAULT '{}',
        created TEXT NOT NULL
    );
    """,
    # 3: kernels started on targets for notebooks, so each can be found and ended with its target
    """
    CREATE TABLE kernels (
        id TEXT PRIMARY KEY,
        workspace TEXT NOT NULL,
        target TEXT NOT NULL,
        owner TEXT NOT NULL,
        process TEXT,
        runtime TEXT NOT NULL DEFAULT '{}',
        started TEXT NOT NULL
    );
    CREATE INDEX kernels_by_target ON kernels (workspace, target);
    """,
    # 4: how any process follows an operation a service accepted (its status URL and the resource),
    # so that it outlives the process that began it
    """
    ALTER TABLE operations ADD COLUMN follow TEXT
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
BUSY_TIMEOUT_MS = 30_000
CHANGES_KEPT = 10_000


def _ts(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


#: The targets table's columns, in the order ``_row_target`` reads them.
_TARGET_COLUMNS = "workspace, name, kind, managed, spec, state, provider_state, errors, runtime, created, modified"


def _row_target(r: tuple | sqlite3.Row) -> dict[str, Any]:
    """A target's row, read as ``SELECT {_TARGET_COLUMNS}`` (a plain tuple or a ``sqlite3.Row``)."""
    return {
        "workspace": r[0], "name": r[1], "kind": r[2], "managed": bool(r[3]), "spec": json.loads(r[4]),
        "state": r[5], "provider_state": r[6], "errors": json.loads(r[7]), "runtime": json.loads(r[8]),
        "created": r[9], "modified": r[10],
    }


def _row_operation(r: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": r["id"], "workspace": r["workspace"], "target": r["target"], "action": r["action"],
        "status": r["status"], "progress": r["progress"],
        "error": json.loads(r["error"]) if r["error"] else None, "owner": r["owner"],
        "started": r["started"], "ended": r["ended"],
        "follow": json.loads(r["follow"]) if r["follow"] else None,
    }


class Store:
    """Blocking access to the store; one connection per thread."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self._local = threading.local()
        self._origin = os.getpid()
        self._listeners: list[Callable[[dict], None]] = []
        #: workspace -> (the newest change's number before ``list_targets`` last read it, and by
        #: name the rows it read then, as read and parsed).
        self._listed: dict[str, tuple[int, dict[str, tuple[tuple, dict[str, Any]]]]] = {}
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        if not os.path.exists(self.path):
            # Created private before sqlite opens it; sqlite gives -wal/-shm the same mode.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        else:
            os.chmod(self.path, 0o600)
        self._migrate()

    # -- connections -----------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the write lock from its first statement. A store that
        cannot be written (a full disk, a read-only file) is said in plain words, and the
        transaction leaves nothing behind."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise self._unwritable(e) from None

    def _unwritable(self, e: sqlite3.OperationalError) -> Exception:
        name = getattr(e, "sqlite_errorname", "") or ""
        text = str(e).lower()
        if name.startswith("SQLITE_FULL") or "disk is full" in text:
            why, fix = "the disk it is on is full", "free some space"
        elif name.startswith("SQLITE_READONLY") or "readonly" in text:
            why, fix = "it is read-only", "make it writable, or name another with JUPYTER_COMPUTE_DB"
        elif name.startswith("SQLITE_IOERR") or "i/o error" in text:
            why = "the disk refused the write (out of space, a file size limit, or a failing disk)"
            fix = "free some space or raise the limit"
        elif name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
            why, fix = "it cannot be opened", "check that its folder exists and is yours"
        elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
            return Unavailable(f"jupyter_compute's store ({self.path}) stayed locked by another process for "
                               f"{BUSY_TIMEOUT_MS // 1000} s; nothing was changed. Try again.", reason="store_busy")
        else:
            return e
        return Unavailable(f"jupyter_compute's store ({self.path}) cannot be written: {why}. Nothing was changed; "
                           f"{fix}, then try again.", reason="store_unwritable")

    def _migrate(self) -> None:
        with self.write() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the store {self.path} has schema version {version}, newer than this "
                    f"jupyter_compute understands ({SCHEMA_VERSION}); upgrade jupyter_compute")
            for i in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[i].split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute(f"PRAGMA user_version={i + 1}")

    def schema_version(self) -> int:
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    def integrity_check(self) -> str:
        return self._conn().execute("PRAGMA integrity_check").fetchone()[0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- change feed -----------------------------------------------------------------------------
    def add_listener(self, fn: Callable[[dict], None]) -> None:
        """Called, after commit, for each change this process makes."""
        self._listeners.append(fn)

    def _changed(self, c: sqlite3.Connection, entity: str, workspace: str, name: str,
                 operation: str | None = None, pending: list | None = None) -> None:
        c.execute("INSERT INTO changes (origin, entity, workspace, name, operation) VALUES (?,?,?,?,?)",
                  (self._origin, entity, workspace, name, operation))
        if pending is not None:
            pending.append({"entity": entity, "workspace": workspace, "name": name, "operation": operation})

    def _notify(self, pending: list[dict]) -> None:
        for change in pending:
            for fn in self._listeners:
                fn(change)

    def last_change(self) -> int:
        row = self._conn().execute("SELECT MAX(seq) FROM changes").fetchone()
        return row[0] or 0

    def changes_since(self, seq: int, *, exclude_origin: int | None = None) -> list[dict]:
        rows = self._conn().execute(
            "SELECT seq, origin, entity, workspace, name, operation FROM changes WHERE seq > ? ORDER BY seq",
            (seq,)).fetchall()
        return [dict(r) for r in rows if exclude_origin is None or r["origin"] != exclude_origin]

    def trim_changes(self) -> None:
        with self.write() as c:
            c.execute("DELETE FROM changes WHERE seq <= (SELECT MAX(seq) FROM changes) - ?", (CHANGES_KEPT,))

    # -- targets ---------------------------------------------------------------------------------
    def list_targets(self, workspace: str) -> list[dict]:
        """The workspace's targets, by name. A row unchanged since the last list (every column
        equal) is not parsed again: its dict is the one returned then, so callers only read them.

        Every write of a target records a change, naming it, in the same transaction, under a
        number that only grows (``changes.seq``). While the newest number is the one read before
        the last list, no target changed, in this process or another, and that list is the answer
        without reading the rows again. After a few changes, only the rows they name are read."""
        conn = self._conn()
        seq = conn.execute("SELECT MAX(seq) FROM changes").fetchone()[0] or 0
        last_seq, before = self._listed.get(workspace, (None, {}))
        if last_seq != seq:
            cur = conn.cursor()
            cur.row_factory = None  # plain tuples: compared whole with what was read last time
            names = None if last_seq is None else self._changed_since(cur, workspace, last_seq, seq)
            if names is None:
                rows = cur.execute(f"SELECT {_TARGET_COLUMNS} FROM targets WHERE workspace = ? ORDER BY name",
                                   (workspace,)).fetchall()
                now: dict[str, tuple[tuple, dict[str, Any]]] = {}
                for raw in rows:
                    seen = before.get(raw[1])
                    now[raw[1]] = seen if seen is not None and seen[0] == raw else (raw, _row_target(raw))
            else:
                rows = cur.execute(f"SELECT {_TARGET_COLUMNS} FROM targets WHERE workspace = ? AND name IN "
                                   f"({', '.join('?' * len(names))})", (workspace, *names)).fetchall() if names else []
                found = {raw[1]: raw for raw in rows}
                now = dict(before)
                added = False
                for name in names:
                    raw, seen = found.get(name), now.get(name)
                    if raw is None:
                        now.pop(name, None)
                    elif seen is None or seen[0] != raw:
                        added = added or seen is None
                        now[name] = (raw, _row_target(raw))
                if added:  # in name order, as the full read's ORDER BY: SQLite compares the names'
                    now = dict(sorted(now.items()))  # UTF-8 bytes, which order as their code points do
            # The number was read before the rows: a write between the two shows as a newer one.
            self._listed[workspace] = (seq, now)  # names no longer listed are forgotten
            before = now
        return [parsed for _, parsed in before.values()]

    #: Past this many targets named by the changes since the last list, all rows are read again.
    CHANGED_READ_LIMIT = 200

    def _changed_since(self, cur: sqlite3.Cursor, workspace: str, after: int, upto: int) -> set[str] | None:
        """The names of ``workspace``'s targets changed after change ``after`` up to ``upto``; None
        when they cannot all be known (changes trimmed since) or are too many to read one by one."""
        oldest = cur.execute("SELECT MIN(seq) FROM changes").fetchone()[0]
        if oldest is None or oldest > after + 1:
            return None
        names = {r[0] for r in cur.execute(
            "SELECT DISTINCT name FROM changes WHERE seq > ? AND seq <= ? AND workspace = ? LIMIT ?",
            (after, upto, workspace, self.CHANGED_READ_LIMIT + 1))}
        return None if len(names) > self.CHANGED_READ_LIMIT else names

    def get_target(self, workspace: str, name: str) -> dict | None:
        r = self._conn().execute(
            f"SELECT {_TARGET_COLUMNS} FROM targets WHERE workspace = ? AND name = ?", (workspace, name)).fetchone()
        return _row_target(r) if r else None

    def find_targets(self, *, kind: str | None = None, workspace: str | None = None,
                     states: Iterable[str] | None = None) -> list[dict]:
        """Targets of every workspace, or those of ``kind``, ``workspace`` and in one of ``states``:
        the checks that run every second read only the targets they look at."""
        where: list[str] = []
        args: list[Any] = []
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if workspace:
            where.append("workspace = ?")
            args.append(workspace)
        if states is not None:
            states = list(states)
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args.extend(states)
        q = f"SELECT {_TARGET_COLUMNS} FROM targets" + (" WHERE " + " AND ".join(where) if where else "")
        return [_row_target(r) for r in self._conn().execute(q, args).fetchall()]

    def insert_target(self, workspace: str, name: str, kind: str, managed: bool, spec: dict,
                      state: str, runtime: dict | None = None) -> dict:
        pending: list = []
        with self.write() as c:
            self._insert_target(c, workspace, name, kind, managed, spec, state, runtime, pending)
        self._notify(pending)
        return self.get_target(workspace, name)

    def _insert_target(self, c: sqlite3.Connection, workspace: str, name: str, kind: str, managed: bool,
                       spec: dict, state: str, runtime: dict | None, pending: list) -> None:
        now = _ts(utcnow())
        if c.execute("SELECT 1 FROM targets WHERE workspace = ? AND name = ?", (workspace, name)).fetchone():
            raise Conflict(f"a target named '{name}' already exists in workspace '{workspace}'",
                           field="/name", reason="name_taken")
        c.execute(
            "INSERT INTO targets (workspace, name, kind, managed, spec, state, runtime, created, modified)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (workspace, name, kind, int(managed), json.dumps(spec), state, json.dumps(runtime or {}), now, now))
        self._changed(c, "target", workspace, name, pending=pending)

    def update_target(self, workspace: str, name: str, *, expect_state: str | tuple | None = None,
                      expect_runtime: dict | None = None, expect_spec: dict | None = None, **fields: Any) -> bool:
        """Update fields of a target; with ``expect_*`` only when it still is as expected.

        Returns whether a row changed. ``runtime`` given as a dict replaces it; ``runtime_merge``
        merges keys into it (a key set to None is removed).
        """
        pending: list = []
        with self.write() as c:
            r = c.execute("SELECT * FROM targets WHERE workspace = ? AND name = ?", (workspace, name)).fetchone()
            if r is None:
                return False
            if expect_state is not None:
                allowed = (expect_state,) if isinstance(expect_state, str) else tuple(expect_state)
                if r["state"] not in allowed:
                    return False
            runtime = json.loads(r["runtime"])
            if expect_runtime is not None and any(runtime.get(k) != v for k, v in expect_runtime.items()):
                return False
            if expect_spec is not None and json.loads(r["spec"]) != expect_spec:
                return False
            sets: dict[str, Any] = {}
            if "runtime_merge" in fields:
                for k, v in fields.pop("runtime_merge").items():
                    if v is None:
                        runtime.pop(k, None)
                    else:
                        runtime[k] = v
                sets["runtime"] = json.dumps(runtime)
            for k, v in fields.items():
                sets[k] = json.dumps(v) if k in ("spec", "errors", "runtime") else v
            sets["modified"] = _ts(utcnow())
            c.execute(f"UPDATE targets SET {', '.join(f'{k} = ?' for k in sets)} WHERE workspace = ? AND name = ?",
                      (*sets.values(), workspace, name))
            self._changed(c, "target", workspace, name, pending=pending)
        self._notify(pending)
        return True

    def rename_target(self, workspace: str, name: str, new_name: str, is_stale: Callable[[dict], bool], *,
                      states: tuple[str, ...]) -> None:
        """Give target ``name`` the name ``new_name``, atomically: refused while it is in a state not in
        ``states``, while an operation runs on it or a notebook's kernel runs on it, or when the new
        name is taken."""
        pending: list = []
        with self.write() as c:
            row = c.execute("SELECT state FROM targets WHERE workspace = ? AND name = ?", (workspace, name)).fetchone()
            if row is None:
                raise NotFound(f"no target named '{name}' in workspace '{workspace}'", reason="unknown_target")
            if c.execute("SELECT 1 FROM targets WHERE workspace = ? AND name = ?", (workspace, new_name)).fetchone():
                raise Conflict(f"a target named '{new_name}' already exists in workspace '{workspace}'",
                               reason="name_taken")
            self._refuse_busy(c, workspace, name, is_stale, pending, "rename it once that has finished")
            if row[0] not in states:
                raise Conflict(f"'{name}' is {row[0]}: stop it first, then rename it (what runs for a target "
                               "is recorded under its name)", reason="not_stopped", details={"state": row[0]})
            if c.execute("SELECT 1 FROM kernels WHERE workspace = ? AND target = ?", (workspace, name)).fetchone():
                raise Conflict(f"notebooks' kernels run on '{name}': shut them down first, then rename it",
                               reason="kernels_running")
            now = _ts(utcnow())
            c.execute("UPDATE targets SET name = ?, modified = ? WHERE workspace = ? AND name = ?",
                      (new_name, now, workspace, name))
            c.execute("UPDATE operations SET target = ? WHERE workspace = ? AND target = ?", (new_name, workspace, name))
            self._changed(c, "target", workspace, name, pending=pending)
            self._changed(c, "target", workspace, new_name, pending=pending)
        self._notify(pending)

    def delete_target(self, workspace: str, name: str) -> bool:
        pending: list = []
        with self.write() as c:
            cur = c.execute("DELETE FROM targets WHERE workspace = ? AND name = ?", (workspace, name))
            if cur.rowcount:
                self._changed(c, "target", workspace, name, pending=pending)
        self._notify(pending)
        return bool(pending)

    # -- operations ------------------------------------------------------------------------------
    def begin_operation(self, workspace: str, target: str, action: str, owner: str,
                        is_stale: Callable[[dict], bool], *, set_state: str | None = None,
                        must_exist: bool = True, new_target: dict | None = None) -> dict:
        """Record a new running operation on a target, atomically refusing a second one.

        An earlier operation whose owner process is gone (``is_stale``) is marked failed first.
        With ``new_target`` (kind, managed, spec, state) the target is inserted in the same
        transaction: nobody ever sees it without the operation that is creating it. The operation
        returned carries ``prior_state``: the target's state when the operation took it.
        """
        op_id = uuid.uuid4().hex
        now = _ts(utcnow())
        pending: list = []
        with self.write() as c:
            if new_target is not None:
                self._insert_target(c, workspace, target, runtime=None, pending=pending, **new_target)
            elif must_exist and not c.execute(
                    "SELECT 1 FROM targets WHERE workspace = ? AND name = ?", (workspace, target)).fetchone():
                raise NotFound(f"no target named '{target}' in workspace '{workspace}'", reason="unknown_target")
            self._refuse_busy(c, workspace, target, is_stale, pending, "wait for it to finish")
            before = c.execute("SELECT state FROM targets WHERE workspace = ? AND name = ?",
                               (workspace, target)).fetchone()
            c.execute("INSERT INTO operations (id, workspace, target, action, status, owner, started)"
                      " VALUES (?,?,?,?,?,?,?)", (op_id, workspace, target, action, "running", owner, now))
            if set_state:
                c.execute("UPDATE targets SET state = ?, modified = ? WHERE workspace = ? AND name = ?",
                          (set_state, now, workspace, target))
                self._changed(c, "target", workspace, target, pending=pending)
            self._changed(c, "operation", workspace, target, op_id, pending=pending)
        self._notify(pending)
        op = self.get_operation(op_id)
        # The state the target was in when this operation took it: what the operation found, which
        # a read made before it began may no longer be.
        op["prior_state"] = before[0] if before else None
        return op

    def _refuse_busy(self, c: sqlite3.Connection, workspace: str, target: str, is_stale: Callable[[dict], bool],
                     pending: list, what_to_do: str) -> None:
        """Refuse while an operation runs on ``target``; one whose owner process is gone is failed."""
        for r in c.execute("SELECT * FROM operations WHERE workspace = ? AND target = ? AND status = 'running'",
                           (workspace, target)).fetchall():
            op = _row_operation(r)
            if is_stale(op) and not op["follow"]:
                self._fail_stale(c, op, pending)
                continue
            raise Conflict(f"'{target}' is busy: a {op['action']} operation ({op['id']}) is already running on it; "
                           f"{what_to_do}", reason="operation_in_progress")

    def _fail_stale(self, c: sqlite3.Connection, op: dict, pending: list) -> None:
        err = {"message": f"the process running this {op['action']} ({op['owner']}) exited before it finished",
               "reason": "interrupted"}
        c.execute("UPDATE operations SET status = 'failed', error = ?, ended = ? WHERE id = ?",
                  (json.dumps(err), _ts(utcnow()), op["id"]))
        self._changed(c, "operation", op["workspace"], op["target"], op["id"], pending=pending)

    def fail_stale_operations(self, is_stale: Callable[[dict], bool]) -> list[dict]:
        """Mark failed every running operation whose owner is gone, except those another process can
        follow (``follow``: a service accepted them and goes on without their owner); returns them."""
        pending: list = []
        failed = []
        with self.write() as c:
            for r in c.execute("SELECT * FROM operations WHERE status = 'running' AND follow IS NULL").fetchall():
                op = _row_operation(r)
                if is_stale(op):
                    self._fail_stale(c, op, pending)
                    failed.append(op)
        self._notify(pending)
        return failed

    def orphaned_operations(self, workspace: str, is_stale: Callable[[dict], bool]) -> list[dict]:
        """Running operations of ``workspace`` that a service goes on with but no live process follows."""
        rows = self._conn().execute(
            "SELECT * FROM operations WHERE status = 'running' AND follow IS NOT NULL AND workspace = ?",
            (workspace,)).fetchall()
        return [op for op in map(_row_operation, rows) if is_stale(op)]

    def adopt_operation(self, op_id: str, owner: str, is_stale: Callable[[dict], bool]) -> dict | None:
        """Make ``owner`` the follower of a running operation whose follower is gone; None if it
        ended meanwhile or a live process follows it (another process adopted it first)."""
        pending: list = []
        with self.write() as c:
            r = c.execute("SELECT * FROM operations WHERE id = ?", (op_id,)).fetchone()
            op = _row_operation(r) if r else None
            if op is None or op["status"] != "running" or not op["follow"] or not is_stale(op):
                return None
            c.execute("UPDATE operations SET owner = ? WHERE id = ?", (owner, op_id))
            self._changed(c, "operation", op["workspace"], op["target"], op_id, pending=pending)
        self._notify(pending)
        return {**op, "owner": owner}

    def update_operation(self, op_id: str, *, only_running: bool = False, **fields: Any) -> None:
        pending: list = []
        with self.write() as c:
            r = c.execute("SELECT workspace, target, status FROM operations WHERE id = ?", (op_id,)).fetchone()
            if r is None or (only_running and r["status"] != "running"):
                return
            for key in ("error", "follow"):
                if fields.get(key) is not None:
                    fields[key] = json.dumps(fields[key])
            c.execute(f"UPDATE operations SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                      (*fields.values(), op_id))
            self._changed(c, "operation", r["workspace"], r["target"], op_id, pending=pending)
            # Listeners in this process get the row as committed, so no progress step is lost
            # to a later one (other processes see the latest state through the change feed).
            pending[-1]["snapshot"] = _row_operation(c.execute("SELECT * FROM operations WHERE id = ?",
                                                               (op_id,)).fetchone())
        self._notify(pending)

    def finish_operation(self, op_id: str, *, error: dict | None = None, progress: str | None = None) -> None:
        """End a running operation; one already ended (e.g. failed as abandoned) keeps its outcome."""
        fields: dict[str, Any] = {"status": "failed" if error else "succeeded", "error": error,
                                  "ended": _ts(utcnow())}
        if progress is not None:
            fields["progress"] = progress
        self.update_operation(op_id, only_running=True, **fields)

    def get_operation(self, op_id: str) -> dict | None:
        r = self._conn().execute("SELECT * FROM operations WHERE id = ?", (op_id,)).fetchone()
        return _row_operation(r) if r else None

    def latest_operation(self, workspace: str, target: str) -> dict | None:
        """The operation on ``target`` begun last, running or ended."""
        r = self._conn().execute("SELECT * FROM operations WHERE workspace = ? AND target = ? "
                                 "ORDER BY started DESC LIMIT 1", (workspace, target)).fetchone()
        return _row_operation(r) if r else None

    def running_operations(self, workspace: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM operations WHERE status = 'running'", ()
        if workspace:
            q, args = q + " AND workspace = ?", (workspace,)
        return [_row_operation(r) for r in self._conn().execute(q, args).fetchall()]

    # -- workspaces ------------------------------------------------------------------------------
    def list_workspaces(self) -> list[dict]:
        rows = self._conn().execute("SELECT * FROM workspaces ORDER BY created").fetchall()
        return [{"id": r["id"], "kind": r["kind"], "config": json.loads(r["config"]), "created": r["created"]}
                for r in rows]

    def add_workspace(self, ws_id: str, kind: str, config: dict) -> None:
        with self.write() as c:
            if c.execute("SELECT 1 FROM workspaces WHERE id = ?", (ws_id,)).fetchone():
                raise Conflict(f"a workspace named '{ws_id}' already exists", field="/alias", reason="name_taken")
            c.execute("INSERT INTO workspaces (id, kind, config, created) VALUES (?,?,?,?)",
                      (ws_id, kind, json.dumps(config), _ts(utcnow())))

    def remove_workspace(self, ws_id: str) -> bool:
        with self.write() as c:
            return bool(c.execute("DELETE FROM workspaces WHERE id = ?", (ws_id,)).rowcount)


    # -- kernels started on targets for notebooks (core.kernels) --------------------------------------
    def add_kernel(self, kernel_id: str, workspace: str, target: str, owner: str, *,
                   process: str | None = None, runtime: dict | None = None) -> None:
        with self.write() as c:
            c.execute("INSERT OR REPLACE INTO kernels (id, workspace, target, owner, process, runtime, started) "
                      "VALUES (?,?,?,?,?,?,?)", (kernel_id, workspace, target, owner, process,
                                                 json.dumps(runtime or {}), _ts(utcnow())))

    def update_kernel(self, kernel_id: str, **runtime: Any) -> None:
        """Merge ``runtime`` into the kernel's record (its reason for ending, say)."""
        with self.write() as c:
            r = c.execute("SELECT runtime FROM kernels WHERE id = ?", (kernel_id,)).fetchone()
            if r is not None:
                c.execute("UPDATE kernels SET runtime = ? WHERE id = ?",
                          (json.dumps({**json.loads(r["runtime"]), **runtime}), kernel_id))

    def get_kernel(self, kernel_id: str) -> dict | None:
        r = self._conn().execute("SELECT * FROM kernels WHERE id = ?", (kernel_id,)).fetchone()
        return _row_kernel(r) if r else None

    def list_kernels(self, workspace: str | None = None, target: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM kernels", []
        if workspace is not None:
            q += " WHERE workspace = ?" + (" AND target = ?" if target is not None else "")
            args = [workspace] + ([target] if target is not None else [])
        return [_row_kernel(r) for r in self._conn().execute(q + " ORDER BY started", args).fetchall()]

    def remove_kernel(self, kernel_id: str) -> bool:
        with self.write() as c:
            return bool(c.execute("DELETE FROM kernels WHERE id = ?", (kernel_id,)).rowcount)


def _row_kernel(r: sqlite3.Row) -> dict[str, Any]:
    return {"id": r["id"], "workspace": r["workspace"], "target": r["target"], "owner": r["owner"],
            "process": r["process"], "runtime": json.loads(r["runtime"]), "started": r["started"]}


class AsyncStore:
    """The store for async code: every call runs in a small thread pool, off the event loop."""

    def __init__(self, store: Store, executor: ThreadPoolExecutor | None = None):
        self.sync = store
        self._executor = executor or ThreadPoolExecutor(max_workers=4, thread_name_prefix="jupyter-compute-store")

    def __getattr__(self, name: str):
        fn = getattr(self.sync, name)
        if not callable(fn):
            return fn

        async def call(*args, **kwargs):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

        return call

    async def follow(self, interval: float):
        """Changes made from now on, by any process: yields a list (empty when nothing changed)
        every ``interval`` seconds. The one way every face tails the store."""
        cursor = await self.last_change()
        while True:
            await asyncio.sleep(interval)
            changes = await self.changes_since(cursor)
            if changes:
                cursor = changes[-1]["seq"]
            yield changes

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
