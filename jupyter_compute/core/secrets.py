"""Where targets' secrets (passwords, tokens) live: the OS keyring when one is usable, else a
file beside the store that only the user can read (mode 0600).

Secrets are addressed by (workspace, target, field). They are never part of the store, a
Target, an event or a log line; only the process that needs one to log in reads it. All calls
block (a keyring may talk D-Bus): async code runs them in a thread.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from typing import Iterable, Iterator

log = logging.getLogger(__name__)

SERVICE = "jupyter_compute"
FILE_NAME = "secrets.json"
_FILE_VERSION = 1


def _usable_keyring():
    """The OS keyring, or None when there is none a secret can safely go to."""
    try:
        import keyring
        from keyring.backends import chainer, fail
    except Exception:
        return None
    try:
        kr = keyring.get_keyring()
    except Exception:
        return None
    if isinstance(kr, fail.Keyring) or getattr(kr, "priority", 0) <= 0:
        return None
    if isinstance(kr, chainer.ChainerBackend) and not kr.backends:
        return None
    # keyrings.alt's file backends keep secrets in files of their own; ours is the one we control.
    if type(kr).__module__.startswith(("keyrings.alt", "keyring.backends.null")):
        return None
    return kr


class SecretStore:
    """put/get/delete secrets of targets; one per store (its path keeps two stores apart)."""

    def __init__(self, db_path: str):
        db_path = os.path.abspath(db_path)
        self.path = os.path.join(os.path.dirname(db_path), FILE_NAME)
        # Keyring entries of different stores (say, a test's) must never meet.
        self._scope = hashlib.sha256(db_path.encode()).hexdigest()[:12]
        self._lock = threading.Lock()
        self._keyring = _usable_keyring()

    @property
    def backend(self) -> str:
        """"keyring" or "file": where ``put`` writes."""
        return "keyring" if self._keyring is not None else "file"

    def _key(self, workspace: str, target: str, field: str) -> str:
        for part in (workspace, target, field):
            if not part or "/" in part:
                raise ValueError("workspace, target and field must be non-empty and hold no '/'")
        return f"{workspace}/{target}/{field}@{self._scope}"

    # -- public ----------------------------------------------------------------------------------
    def put(self, workspace: str, target: str, field: str, value: str) -> None:
        key = self._key(workspace, target, field)
        if not isinstance(value, str):
            raise TypeError("a secret is a string")
        if self._keyring is not None:
            try:
                self._keyring.set_password(SERVICE, key, value)
            except Exception as e:  # locked or unreachable keyring: the private file still works
                log.warning("the OS keyring refused a secret (%s); keeping it in %s instead", type(e).__name__,
                            self.path)
            else:
                self._file_delete([key])
                return
        with self._file() as data:
            data[key] = value

    def get(self, workspace: str, target: str, field: str) -> str | None:
        key = self._key(workspace, target, field)
        if self._keyring is not None:
            try:
                value = self._keyring.get_password(SERVICE, key)
            except Exception:
                value = None
            if value is not None:
                return value
        return self._file_read().get(key)

    def delete(self, workspace: str, target: str, fields: Iterable[str]) -> None:
        """Forget these fields of a target, wherever they are kept; missing ones are fine."""
        keys = [self._key(workspace, target, f) for f in fields]
        if self._keyring is not None:
            for key in keys:
                with contextlib.suppress(Exception):
                    self._keyring.delete_password(SERVICE, key)
        self._file_delete(keys)

    def move(self, workspace: str, target: str, new_target: str, fields: Iterable[str]) -> None:
        """Keep these fields of ``target`` under ``new_target`` instead (a rename)."""
        fields = list(fields)
        for f in fields:
            value = self.get(workspace, target, f)
            if value is not None:
                self.put(workspace, new_target, f, value)
        self.delete(workspace, target, fields)

    def has(self, workspace: str, target: str, field: str) -> bool:
        return self.get(workspace, target, field) is not None

    # -- the private file ------------------------------------------------------------------------
    def _file_read(self) -> dict[str, str]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("cannot read %s: %s", self.path, type(e).__name__)
            return {}
        secrets = data.get("secrets") if isinstance(data, dict) else None
        return secrets if isinstance(secrets, dict) else {}

    def _file_delete(self, keys: list[str]) -> None:
        if not os.path.exists(self.path):
            return
        with self._file() as data:
            for key in keys:
                data.pop(key, None)

    @contextlib.contextmanager
    def _file(self) -> Iterator[dict[str, str]]:
        """Read-modify-write the file under a lock every process of the user honours."""
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        with self._lock, _locked(self.path + ".lock"):
            data = self._file_read()
            yield data
            tmp = f"{self.path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"version": _FILE_VERSION, "secrets": data}, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                raise


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            import fcntl
        except ImportError:  # not POSIX: one process at a time is all we can promise
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


_stores: dict[str, SecretStore] = {}
_stores_lock = threading.Lock()


def for_store(db_path: str) -> SecretStore:
    """The secret store that goes with the sqlite store at ``db_path``."""
    db_path = os.path.abspath(db_path)
    with _stores_lock:
        store = _stores.get(db_path)
        if store is None:
            store = _stores[db_path] = SecretStore(db_path)
        return store
