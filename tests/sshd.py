"""A real OpenSSH ``sshd`` on 127.0.0.1 for the tests, never the system service.

Each instance has a free port, a generated host key, a generated client key pair and a config
written here: ``StrictModes no`` (the keys live under the world-writable /tmp), root may log in
(the tests run as root), and every session gets a marker variable so that whatever it started
is found and stopped at teardown.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import asyncssh
import psutil
import pytest

from tests.support import free_port, processes_marked

SSHD = shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:/sbin") or "/usr/sbin/sshd"
MARKER = "JC_TEST_SSHD"


def write_private_key(key: asyncssh.SSHKey, path: Path, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key("openssh"))
    os.chmod(path, mode)
    return path


class Sshd:
    def __init__(self, root: Path, password_login: bool = False):
        self.dir = root / "sshd"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.port = free_port()
        self.marker = secrets.token_hex(8)
        self.host_key_path = self.dir / "ssh_host_ed25519_key"
        self.client_key_path = self.dir / "id_ed25519"
        self.config = self.dir / "sshd_config"
        self.log = self.dir / "sshd.log"
        self.proc: subprocess.Popen | None = None
        self.new_host_key()
        client = asyncssh.generate_private_key("ssh-ed25519")
        write_private_key(client, self.client_key_path)
        (self.dir / "authorized_keys").write_bytes(client.export_public_key("openssh"))
        self.config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key_path}",
            f"PidFile {self.dir / 'sshd.pid'}", f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            "StrictModes no", "PermitRootLogin yes", "PubkeyAuthentication yes",
            f"PasswordAuthentication {'yes' if password_login else 'no'}", "PermitEmptyPasswords no",
            "KbdInteractiveAuthentication no", "UsePAM no", "AllowTcpForwarding yes", "GatewayPorts no",
            "X11Forwarding no", "PrintMotd no", "PrintLastLog no", "UseDNS no", "MaxStartups 100:30:200",
            "MaxSessions 100", "ClientAliveInterval 0", "LogLevel VERBOSE", f"SetEnv {MARKER}={self.marker}", ""]))

    def new_host_key(self) -> None:
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        write_private_key(self.host_key, self.host_key_path)

    @property
    def fingerprint(self) -> str:
        return self.host_key.get_fingerprint("sha256")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float = 15) -> "Sshd":
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config), "-E", str(self.log)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"sshd exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"sshd did not answer within {timeout}s: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop(sweep=False)
        self.start()

    def sessions(self) -> list[psutil.Process]:
        """The sshd processes serving connections (the listener's children and theirs)."""
        try:
            kids = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        out = []
        for p in kids:
            try:
                if p.name().startswith("sshd"):
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out

    def signal_sessions(self, sig: int) -> int:
        n = 0
        for p in self.sessions():
            try:
                p.send_signal(sig)
                n += 1
            except psutil.NoSuchProcess:
                pass
        return n

    def started_processes(self) -> list[psutil.Process]:
        """Every process still running that a session of this sshd started (kernels included)."""
        return processes_marked(MARKER, self.marker)

    def stop_listener(self) -> list[psutil.Process]:
        """Stop accepting connections, leaving the open sessions alone; returns those sessions."""
        held = self.sessions()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return held

    def stop(self, sweep: bool = True) -> None:
        for p in self.stop_listener():
            try:
                p.send_signal(signal.SIGCONT)
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if sweep:
            kill_all(self.started_processes())


def kill_all(procs: list[psutil.Process], timeout: float = 5) -> None:
    """SIGKILL these processes and wait for them to be gone."""
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=timeout)


def stop_ssh_targets(db: Path, grace: float = 15) -> None:
    """Stop every ssh target's supervisor (which ends its remote kernel) while sshd still runs."""
    if not db.exists():
        return
    from jupyter_compute.families.ssh.backend import _end_supervisor
    from jupyter_compute.core.store import Store

    store = Store(str(db))
    for row in store.find_targets(kind="ssh"):
        _end_supervisor(row["runtime"].get("supervisor"), grace)
    store.close()


@pytest.fixture
def sshd(tmp_path, compute_db):
    server = Sshd(tmp_path).start()
    yield server
    stop_ssh_targets(compute_db)
    server.stop()
