"""The secret store ssh targets (and later others) keep passwords in: a private file or the OS keyring."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import keyring
import pytest
from keyring.backend import KeyringBackend

from jupyter_compute.families.ssh.backend import SSHSpec
from jupyter_compute.core.secrets import SecretStore


@pytest.fixture
def no_keyring(monkeypatch):
    """This machine has no usable OS keyring; make sure the tests see the same anywhere."""
    from keyring.backends import fail
    old = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(old)


def test_file_backend_is_private_and_scoped_per_store(tmp_path, no_keyring):
    a = SecretStore(str(tmp_path / "a" / "compute.db"))
    b = SecretStore(str(tmp_path / "b" / "compute.db"))
    assert a.backend == "file"
    a.put("local", "vm", "password", "  spaces kept ")
    assert a.get("local", "vm", "password") == "  spaces kept "
    assert b.get("local", "vm", "password") is None
    assert (os.stat(a.path).st_mode & 0o777) == 0o600
    assert (os.stat(os.path.dirname(a.path)).st_mode & 0o077) == 0
    a.put("local", "vm2", "password", "other")
    a.delete("local", "vm", ["password", "token"])
    assert a.get("local", "vm", "password") is None and a.get("local", "vm2", "password") == "other"
    with pytest.raises(ValueError):
        a.put("local", "a/b", "password", "x")


def test_concurrent_writers_lose_nothing(tmp_path, no_keyring):
    db = str(tmp_path / "compute.db")
    code = (
        "import sys, keyring\n"
        "from keyring.backends import fail\n"
        "keyring.set_keyring(fail.Keyring())\n"
        "from jupyter_compute.core.secrets import SecretStore\n"
        "s = SecretStore(sys.argv[1])\n"
        "for i in range(25):\n"
        "    s.put('local', f't{sys.argv[2]}-{i}', 'password', f'v{i}')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, db, str(n)]) for n in range(6)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    store = SecretStore(db)
    for n in range(6):
        for i in range(25):
            assert store.get("local", f"t{n}-{i}", "password") == f"v{i}"
    with open(store.path) as f:
        assert len(json.load(f)["secrets"]) == 150


class _MemoryKeyring(KeyringBackend):
    """An in-process keyring: this machine has no OS keyring (no Secret Service on D-Bus) to test against."""
    priority = 5
    # keyring registers every backend class it sees; never let it pick this one for other tests of
    # this process (a secret kept here is invisible to the kernels and supervisors they start).
    viable = False

    def __init__(self, fail: bool = False):
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}
        self.fail = fail

    def set_password(self, service, username, password):
        if self.fail:
            raise keyring.errors.PasswordSetError("locked")
        self.items[(service, username)] = password

    def get_password(self, service, username):
        return self.items.get((service, username))

    def delete_password(self, service, username):
        self.items.pop((service, username), None)


def test_a_usable_keyring_is_preferred_and_a_refusing_one_falls_back(tmp_path):
    old = keyring.get_keyring()
    try:
        mem = _MemoryKeyring()
        keyring.set_keyring(mem)
        s = SecretStore(str(tmp_path / "compute.db"))
        assert s.backend == "keyring"
        s.put("local", "vm", "password", "in the keyring")
        assert s.get("local", "vm", "password") == "in the keyring"
        assert not os.path.exists(s.path)
        assert "in the keyring" in mem.items.values()
        s.delete("local", "vm", ["password"])
        assert not mem.items

        keyring.set_keyring(_MemoryKeyring(fail=True))
        s = SecretStore(str(tmp_path / "compute.db"))
        s.put("local", "vm", "password", "in the file")
        assert s.get("local", "vm", "password") == "in the file"
        assert (os.stat(s.path).st_mode & 0o777) == 0o600
    finally:
        keyring.set_keyring(old)


def test_a_password_never_shows_in_a_spec(tmp_path):
    spec = SSHSpec.model_validate({"host": "example.org", "password": "hunter2"})
    assert "hunter2" not in repr(spec) and "hunter2" not in str(spec.public())
    assert "password" not in spec.public()
    assert spec.secret_values() == {"password": "hunter2"}
