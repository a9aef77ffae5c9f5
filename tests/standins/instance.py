"""A compute instance for the tests: the Resource Manager stand-in's view of it, its own Jupyter
server, and the traces a compute instance leaves on the machine it is.

``InstanceJupyter`` is a real ``jupyter server`` on loopback that stands in for the instance's
Jupyter: HTTPS with the stand-in's certificate, letting in only Azure AD bearer tokens that the
stand-in's managed-identity endpoint signed (``aad/standin_aad.py``). ``add_instance`` puts an
instance whose ``applications`` point at it into the stand-in. ``on_instance_env`` is what an
instance gives every process: the ``CI_*`` variables, a ``.nbvm`` file and the managed identity.

    from tests.standins.azure import *      # arm, azure_env, network_guard
    from tests.standins.instance import *   # aad_arm, instance_jupyter
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from ..support import PLAIN_SERVER, free_port
from .arm import OBJECT_ID, TENANT_ID, VM_SIZES, ArmStandIn, _now

__all__ = ["aad_arm", "instance_jupyter", "InstanceJupyter", "add_instance", "on_instance_env", "OTHER_USER",
           "USER_NAME", "AAD_DIR"]

AAD_DIR = Path(__file__).parent / "aad"
USER_NAME = "Test User"
#: Someone else in the workspace, whose personal instances the test user may not use.
OTHER_USER = {"oid": "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f", "tid": TENANT_ID, "name": "Bob Other"}


def sign_in_as(arm: ArmStandIn, oid: str = OBJECT_ID, name: str = USER_NAME, tid: str = TENANT_ID) -> None:
    """Make the stand-in's managed identity sign tokens (JWTs) for this user."""
    if arm.signing_key is None:
        arm.signing_key = secrets.token_bytes(32)
    arm.identity = {"oid": oid, "tid": tid, "name": name, "upn": f"{name.lower().replace(' ', '.')}@contoso.example"}


class InstanceJupyter:
    """The Jupyter server of a stand-in compute instance (see the module docstring)."""

    def __init__(self, arm: ArmStandIn, root: Path, *, owner: str | None = None, audiences: tuple[str, ...] = (),
                 args: tuple[str, ...] = ()):
        assert arm.signing_key, "sign_in_as(arm) first: the server checks the stand-in's signature"
        self.arm = arm
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}/"
        self.audiences = audiences or (arm.base_url,)
        self.log = root / f"instance-jupyter-{self.port}.log"
        self.auth_log = root / f"instance-auth-{self.port}.jsonl"
        self.owner = owner
        self.args = list(args)
        self.proc: subprocess.Popen | None = None
        self._started: list[psutil.Process] = []
        # The certificate files go with the stand-in when it stops: keep copies.
        self.cert, self.key = root / "server.pem", root / "server.key"
        self.cert.write_bytes(Path(arm.cert_path).read_bytes())
        self.key.write_bytes(Path(arm.key_path).read_bytes())
        self.key.chmod(0o600)

    def start(self, timeout: float = 60) -> "InstanceJupyter":
        env = {k: v for k, v in os.environ.items() if k not in ("JUPYTER_COMPUTE_DB",)}
        env.update(STANDIN_AAD_KEY=self.arm.signing_key.hex(), STANDIN_AAD_AUDIENCES=",".join(self.audiences),
                   STANDIN_AAD_LOG=str(self.auth_log), STANDIN_AAD_OWNER=self.owner or "",
                   JUPYTER_RUNTIME_DIR=str(self.root / f".runtime-{self.port}"),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(AAD_DIR), os.environ.get("PYTHONPATH")])))
        argv = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                "--ServerApp.port_retries=0", "--ServerApp.token=", f"--ServerApp.root_dir={self.root}",
                f"--ServerApp.certfile={self.cert}", f"--ServerApp.keyfile={self.key}",
                "--ServerApp.identity_provider_class=standin_aad.AzureADBearer",
                PLAIN_SERVER, *self.args]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env)
        self._started.append(psutil.Process(self.proc.pid))
        ctx = ssl.create_default_context(cafile=self.arm.ca_path)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the instance's Jupyter server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "api", timeout=2, context=ctx):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the instance's Jupyter server did not answer within {timeout} s")
                time.sleep(0.1)

    def api(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> tuple[int, Any]:
        """Call the server's REST API with a token the stand-in issues (or the one given)."""
        if token is None:
            token, _ = self.arm.issue_token(self.audiences[0])
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}"})
        ctx = ssl.create_default_context(cafile=self.arm.ca_path)
        try:
            with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, None

    def decisions(self) -> list[dict]:
        """What the server decided on each request's credentials, in order."""
        if not self.auth_log.exists():
            return []
        return [json.loads(line) for line in self.auth_log.read_text().splitlines() if line.strip()]

    def processes(self) -> list[psutil.Process]:
        out = []
        for server in self._started:
            try:
                out += [server, *server.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return out

    def stop(self) -> None:
        """Stop the server and every kernel it started."""
        procs = self.processes()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)


def add_instance(arm: ArmStandIn, name: str, *, state: str = "Running", size: str = "Standard_DS3_v2",
                 jupyter: str | None = None, idle_shutdown_minutes: int | None = None, sharing: str = "Shared",
                 creator: dict | None = None, assigned_user: dict | None = None) -> dict:
    """Put a compute instance into the stand-in's workspace, as Azure would list it.

    ``jupyter`` is the base URL its Jupyter and JupyterLab applications point at (kept across a
    stop and start); ``creator`` and ``assigned_user`` are {oid, tid, name} like ``OTHER_USER``.
    """
    entry = arm.workspaces[(arm.subscription_id.lower(), arm.resource_group.lower(), arm.workspace_name.lower())]
    inner: dict[str, Any] = {"vmSize": size, "applicationSharingPolicy": sharing,
                             "sshSettings": {"sshPublicAccess": "Disabled"}}
    if idle_shutdown_minutes:
        inner["idleTimeBeforeShutdown"] = f"PT{idle_shutdown_minutes}M"
    if assigned_user:
        inner["personalComputeInstanceSettings"] = {"assignedUser": {"objectId": assigned_user["oid"],
                                                                     "tenantId": assigned_user["tid"]}}
    body = {"properties": {"computeType": "ComputeInstance", "properties": inner}}
    vm = next(s for s in VM_SIZES if s["name"].lower() == size.lower())
    res = arm._new_resource(entry, name, body, vm)
    p, rinner = res["properties"], res["properties"]["properties"]
    p["provisioningState"] = "Succeeded"
    if creator:
        rinner["createdBy"] = {"userOrgId": creator["tid"], "userId": creator["oid"], "userName": creator["name"]}
    if jupyter:
        arm.instance_jupyter[name.lower()] = jupyter
    if state == "Running":
        arm._running_instance(res)
    else:
        rinner["state"] = state
    rinner["lastOperation"] = {"operationName": "Start" if state == "Running" else "Stop",
                               "operationTime": _now(), "operationStatus": "Succeeded", "operationTrigger": "User"}
    entry["computes"][name.lower()] = res
    return res


def on_instance_env(arm: ArmStandIn, folder: Path, name: str, *, subscription_var: str = "CI_SUBSCRIPTION_ID",
                    domain: str = "eastus.instances.azureml.ms") -> tuple[dict[str, str], Path]:
    """What a compute instance gives its processes: (environment variables, the .nbvm file).

    The .nbvm file goes in ``folder`` (its path is the ``AzureML.instance_file`` setting); the
    managed identity and the CA bundle come from the stand-in.
    """
    folder.mkdir(parents=True, exist_ok=True)
    nbvm = folder / ".nbvm"
    nbvm.write_text(f"instance={name}\ndomainsuffix={domain}\ncerturl=https://eastus.cert.api.azureml.ms/nbip/token\n")
    env = {**arm.env(), "CI_WORKSPACE": arm.workspace_name, "CI_RESOURCE_GROUP": arm.resource_group}
    if subscription_var == "MLFLOW_TRACKING_URI":
        env[subscription_var] = (f"azureml://eastus.api.azureml.ms/mlflow/v1.0/subscriptions/{arm.subscription_id}"
                                 f"/resourceGroups/{arm.resource_group}/providers/Microsoft.MachineLearningServices"
                                 f"/workspaces/{arm.workspace_name}")
    elif subscription_var:
        env[subscription_var] = arm.subscription_id
    return env, nbvm


@pytest.fixture
def aad_arm(arm):
    """The Resource Manager stand-in, signing its managed identity's tokens for the test user."""
    sign_in_as(arm)
    return arm


@pytest.fixture
def instance_jupyter(aad_arm, tmp_path):
    """Factory of stand-in instance Jupyter servers; all stopped at the end."""
    started: list[InstanceJupyter] = []

    def make(**kw) -> InstanceJupyter:
        server = InstanceJupyter(aad_arm, tmp_path / f"instance-{len(started)}", **kw)
        started.append(server)
        return server.start()
    yield make
    for s in started:
        s.stop()
