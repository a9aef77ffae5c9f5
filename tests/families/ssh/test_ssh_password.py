"""Logging in to an ``ssh`` target with a password, against a real sshd that accepts passwords.

The login is for a throwaway local account with a random password, made for the test and removed
after it (the suite runs as root, as CI does), so that the password is the only way in: the
account has no authorized key, and the client offers none.
"""
from __future__ import annotations

import json
import os
import pwd
import secrets
import subprocess
import sysconfig

import psutil
import pytest

from jupyter_compute.core.secrets import SecretStore

from tests.support import files_holding, cli, wait_for
from tests.sshd import Sshd, kill_all, stop_ssh_targets

HOST_SITE = sysconfig.get_paths()["purelib"]


def remote_python(home: str) -> str:
    """A Python with ipykernel that the account can run: this suite's own interpreter may live
    where only root can read, so a venv of the system's Python in the account's home borrows
    this environment's packages."""
    venv = os.path.join(home, "py")
    subprocess.run(["/usr/bin/python3.11", "-m", "venv", "--without-pip", venv], check=True, capture_output=True)
    purelib = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(purelib, "host-environment.pth"), "w") as f:
        f.write(HOST_SITE + "\n")
    return os.path.join(venv, "bin", "python")


@pytest.fixture
def account():
    """A local account with a random password; removed, with anything it still runs, afterwards."""
    assert os.geteuid() == 0, "password login needs a throwaway account, which only root can make"
    name = f"jc{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12) + " $;`x`"  # spaces and shell characters must pass untouched
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True)
        yield name, password, remote_python(pwd.getpwnam(name).pw_dir)
    finally:
        uid = pwd.getpwnam(name).pw_uid
        kill_all([p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid])
        subprocess.run(["userdel", "--remove", name], capture_output=True)


@pytest.fixture
def password_sshd(tmp_path, compute_db):
    server = Sshd(tmp_path, password_login=True).start()
    yield server
    stop_ssh_targets(compute_db)
    server.stop()


def attach(server: Sshd, user: str, password: str, python: str, name: str = "pwvm"):
    return cli("attach", name, "--kind", "ssh", "--host", "127.0.0.1", "--port", str(server.port),
               "--username", user, "--python", python, "--accept-host-key", server.fingerprint,
               "--password-stdin", "--output", "json", input=password + "\n")


def test_a_password_alone_logs_in_and_the_kernel_runs_as_that_user(password_sshd, account, compute_db):
    user, password, python = account
    r = attach(password_sshd, user, password, python)
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    assert t["properties"]["username"] == user and "password" not in t["properties"]
    assert SecretStore(str(compute_db)).get("local", "pwvm", "password") == password

    r = cli("start", "pwvm", "--output", "json")
    assert r.returncode == 0, r.stderr + r.stdout
    t = json.loads(r.stdout)
    assert t["state"] == "running", t
    kernel = psutil.Process(t["properties"]["remote_pid"])
    assert kernel.username() == user and "ipykernel_launcher" in kernel.cmdline()

    # The password never shows: not in the CLI's output, the listing, nor the store file.
    listing = cli("list", "--output", "json")
    assert listing.returncode == 0
    for text in (r.stdout, r.stderr, listing.stdout, listing.stderr):
        assert password not in text
    assert [f for f in files_holding(compute_db.parent, password) if "compute.db" in f] == []

    r = cli("stop", "pwvm", "--yes", "--output", "json")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not kernel.is_running() or kernel.status() == psutil.STATUS_ZOMBIE, timeout=15,
             message="the remote kernel to end")
    assert cli("detach", "pwvm", "--yes").returncode == 0
    assert SecretStore(str(compute_db)).get("local", "pwvm", "password") is None


def test_a_wrong_password_is_refused_clearly_and_nothing_is_stored(password_sshd, account, compute_db):
    user, _, python = account
    r = attach(password_sshd, user, "not the password", python)
    assert r.returncode != 0
    assert "refused the login with the password" in r.stderr, r.stderr
    assert "not the password" not in r.stdout + r.stderr
    assert cli("show", "pwvm").returncode != 0
    assert SecretStore(str(compute_db)).get("local", "pwvm", "password") is None
