"""Azurite, the Azure Storage emulator from the npm registry, as the workspace's storage account.

It is installed once into ``<repo>/.cache/azurite`` (pinned, with npm) and started on 127.0.0.1
with a free port; its blob service is real blob storage, so uploads, appends and ranged reads
behave as in Azure. ``JUPYTER_COMPUTE_BLOB_ENDPOINT`` (``blob_env()``) sends jupyter_compute's
storage calls to it.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ..support import free_port

#: The pinned Azurite release: its engines accept the Node.js the project's machines have (20).
AZURITE_VERSION = "3.35.0"
ROOT = Path(__file__).resolve().parents[2]
INSTALL_DIR = ROOT / ".cache" / "azurite"
#: Azurite's well-known development account and key (public, in Azure's own documentation).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT = 60.0
INSTALL_TIMEOUT = 600.0


def _installed_version() -> str | None:
    import json

    manifest = INSTALL_DIR / "node_modules" / "azurite" / "package.json"
    try:
        return json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def ensure_installed() -> Path:
    """The azurite-blob program, installed with npm on first use (one installer at a time)."""
    program = INSTALL_DIR / "node_modules" / ".bin" / "azurite-blob"
    if _installed_version() == AZURITE_VERSION and program.exists():
        return program
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("Azurite needs Node.js and npm on PATH (the frontend build needs them too)")
    INSTALL_DIR.mkdir(parents=True, exist_ok=True)
    with open(INSTALL_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_version() != AZURITE_VERSION or not program.exists():
            r = subprocess.run([npm, "install", "--prefix", str(INSTALL_DIR), "--no-save", "--no-audit", "--no-fund",
                                "--no-package-lock", f"azurite@{AZURITE_VERSION}"],
                               capture_output=True, text=True, timeout=INSTALL_TIMEOUT, stdin=subprocess.DEVNULL)
            if r.returncode != 0 or not program.exists():
                raise RuntimeError(f"npm could not install azurite@{AZURITE_VERSION}: {r.stderr[-2000:]}")
    return program


class Azurite:
    """One Azurite blob service on loopback, stopped by ``stop``."""

    def __init__(self) -> None:
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._dir = tempfile.mkdtemp(prefix="jc-azurite-")
        self._log = os.path.join(self._dir, "azurite.log")

    def start(self) -> "Azurite":
        program = ensure_installed()
        self.port = free_port()
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [str(program), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location",
                 os.path.join(self._dir, "data"), "--silent", "--skipApiVersionCheck", "--loose"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"Azurite exited with {self._proc.returncode}: {self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Azurite did not listen within {START_TIMEOUT:g} s: {self.log_text()}")
                time.sleep(0.1)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, 15)
            except ProcessLookupError:
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)
        shutil.rmtree(self._dir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            with open(self._log, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def __enter__(self) -> "Azurite":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def template(self) -> str:
        """The blob endpoint, with {account} for the storage account (jupyter_compute's setting)."""
        return f"http://127.0.0.1:{self.port}/{{account}}"

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def blob_env(self) -> dict[str, str]:
        return {"JUPYTER_COMPUTE_BLOB_ENDPOINT": self.template}

    def service(self):
        """A synchronous blob service client, for the stand-in and the tests themselves."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(self.account_url, credential={"account_name": ACCOUNT, "account_key": KEY})
