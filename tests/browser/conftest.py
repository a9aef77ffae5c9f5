"""Fixtures of the browser tests: a real ``jupyter lab`` with this package's extension, and
Debian's Chromium driven by Playwright.

The server runs in temporary Jupyter config, data and runtime directories with its own
compute store, so a test run never touches the user's own; the labextension is still found
because it is installed in the environment's prefix (``jupyter labextension develop``).
"""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


wait_until = wait_for  # the suite's one polling helper, under the name these tests use


class PortTaken(Exception):
    """The port was free when chosen, and taken before the server bound it."""


class LabServer:
    """``jupyter lab`` as a subprocess on a free loopback port, with a token of its own."""

    def __init__(self, base: Path):
        self.base = base
        self.root = base / "root"
        self.config_dir = base / "config"
        self.data_dir = base / "data"
        self.runtime_dir = base / "runtime"
        self.db = base / "compute" / "compute.db"
        for d in (self.root, self.config_dir, self.data_dir, self.runtime_dir, self.db.parent):
            d.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(24)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / "lab.log"
        self.proc: subprocess.Popen | None = None
        self.env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.config_dir),
            "JUPYTER_DATA_DIR": str(self.data_dir),
            "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
            "JUPYTER_COMPUTE_DB": str(self.db),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self._quiet_settings()

    def _quiet_settings(self) -> None:
        """No news or update checks: the browser must not reach beyond loopback."""
        settings = self.config_dir / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))

    def start(self, timeout: float = 90) -> "LabServer":
        """Start on this server's port; if another process took it meanwhile, on a new one."""
        for _ in range(3):
            try:
                return self._start(timeout)
            except PortTaken:
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
        raise AssertionError(f"jupyter lab found no free port:\n{self.log_tail()}")

    def _start(self, timeout: float) -> "LabServer":
        argv = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            "--ip=127.0.0.1", f"--port={self.port}",
            f"--ServerApp.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.open_browser=False",
            "--ServerApp.port_retries=0",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--ComputeConfig.monitor_interval=0.2",
        ]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     stdin=subprocess.DEVNULL, cwd=self.root)
        log.close()

        def up():
            if self.proc.poll() is not None:
                if "is already in use" in self.log_tail(2000):
                    raise PortTaken()
                raise AssertionError(f"jupyter lab exited:\n{self.log_tail()}")
            try:
                code, body = self.request("GET", "jupyter-compute/workspaces")
            except (OSError, http.client.HTTPException):
                return False
            # Another server on this port would not know our token.
            if code == 403:
                raise AssertionError(f"another server answers on port {self.port}")
            return code == 200

        wait_until(up, timeout=timeout, interval=0.25, message="jupyter lab to answer")
        return self

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def request(self, method: str, path: str, body=None, timeout: float = 30):
        data = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "PATCH", "PUT") else None)
        req = urllib.request.Request(
            f"{self.url}/{path}", data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw) if raw else None
            except ValueError:
                return e.code, raw.decode(errors="replace")

    # -- the compute API --------------------------------------------------------------------------
    def compute(self, method: str, path: str, body=None):
        return self.request(method, f"jupyter-compute/{path}", body)

    def target(self, name: str, workspace: str = "local") -> dict | None:
        code, body = self.compute("GET", f"workspaces/{workspace}/targets/{name}")
        return body if code == 200 else None

    def wait_state(self, name: str, state: str, timeout: float = 90) -> dict:
        def reached():
            t = self.target(name)
            if t and t["state"] == "failed" and state != "failed":
                raise AssertionError(f"{name} failed: {t['errors']}")
            return t if t and t["state"] == state else None
        return wait_until(reached, timeout=timeout, interval=0.2, message=f"{name} to be {state}")

    def create_kernel(self, name: str, **spec) -> dict:
        code, body = self.compute("POST", "workspaces/local/targets", {"name": name, "kind": "local-kernel", **spec})
        assert code == 202, body
        return self.wait_state(name, "running")

    def stop_target(self, name: str) -> dict:
        code, body = self.compute("POST", f"workspaces/local/targets/{name}/stop")
        assert code == 202, body
        return self.wait_state(name, "stopped")

    def delete(self, name: str, timeout: float = 60) -> None:
        code, body = self.compute("DELETE", f"workspaces/local/targets/{name}")
        if code == 404:
            return
        assert code == 202, body
        wait_until(lambda: self.target(name) is None, timeout=timeout, message=f"{name} to be deleted")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``jupyter compute`` as a real subprocess on this server's store."""
        return subprocess.run([sys.executable, "-m", "jupyter", "compute", *args], env=self.env,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)

    def restart(self) -> None:
        """Stop the server and start it again on the same port; targets keep running."""
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.start()

    def shutdown_kernels(self) -> None:
        """Shut down the notebooks' kernels (targets are not among them)."""
        code, sessions = self.request("GET", "api/sessions")
        for session in sessions if code == 200 else []:
            self.request("DELETE", f"api/sessions/{session['id']}")

    def set_setting(self, values: dict) -> None:
        """Write the user settings of the Compute plugin, as the Settings Editor does."""
        code, body = self.request("PUT", "lab/api/settings/jupyter-compute:plugin", {"raw": json.dumps(values)})
        assert code == 204, body

    def stop(self) -> None:
        # Targets outlive the server by design: remove those the tests left before it goes.
        try:
            code, body = self.compute("GET", "workspaces/local/targets")
            if code == 200:
                for t in body["targets"]:
                    if t["kind"] != "local":
                        self.compute("DELETE", f"workspaces/local/targets/{t['name']}")
                wait_until(lambda: all(t["kind"] == "local" for t in
                                       self.compute("GET", "workspaces/local/targets")[1]["targets"]),
                           timeout=60, message="targets to be deleted")
        except (OSError, AssertionError):
            pass
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def jp_asyncio_loop():
    """Playwright's sync API runs its own loop on this thread: leave it alone, and give the
    in-process server fixtures (unused here) a loop of their own."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def jp_server_cleanup():
    """No in-process server to clean up: these tests drive a ``jupyter lab`` subprocess."""
    yield


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    if not (ROOT / "jupyter_compute" / "labextension" / "package.json").exists():
        pytest.fail("the labextension is not built: run `jlpm build` (or `make frontend`) first")
    server = LabServer(tmp_path_factory.mktemp("lab")).start()
    try:
        yield server
    finally:
        server.stop()
        # Kernels a failed test left behind must not outlive the run.
        from jupyter_compute.families.local.backend import _terminate
        from jupyter_compute.core.store import Store
        if server.db.exists():
            store = Store(str(server.db))
            for row in store.find_targets():
                if row["runtime"]:
                    _terminate(row["runtime"], grace=2)
            store.close()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")
    from playwright.sync_api import sync_playwright
    pw = sync_playwright().start()
    chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield chromium
    finally:
        chromium.close()
        pw.stop()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def page(browser, lab, request):
    """A fresh browser page on JupyterLab; fails the test if the page logged an error."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    allowed: list[re.Pattern] = []
    console: list[str] = []

    def on_console(msg):
        console.append(f"{msg.type}: {msg.text}")
        if msg.type != "error":
            return
        url = (msg.location or {}).get("url", "")
        if any(p.search(msg.text) for p in allowed):
            return
        # Chromium logs every HTTP error answer. Two are the API's contract, not faults: a 400
        # naming the field at fault (the validation tests send bad input on purpose), and a
        # 404 for a target removed between an event and the fetch it caused.
        if msg.text.startswith("Failed to load resource") and "/jupyter-compute/" in url and (
                "status of 400" in msg.text
                or ("status of 404" in msg.text and re.search(r"/workspaces/[^/]+/targets/[^/?]+(\?|$)", url))):
            return
        errors.append(f"console.error: {msg.text} ({url})")

    page.on("console", on_console)
    def on_page_error(exc):
        text = f"{exc.message}\n{exc.stack or ''}"
        if not any(p.search(text) for p in allowed):
            errors.append(f"page error: {text}")

    page.on("pageerror", on_page_error)
    page.console_errors = errors
    page.console_lines = console
    # A test that takes the server away on purpose names the errors that causes.
    page.allow_console_errors = lambda pattern: allowed.append(re.compile(pattern))
    try:
        yield page
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}.png"))
            (ARTIFACTS / f"failed-{request.node.name}.log").write_text(
                "browser console:\n" + "\n".join(console) + "\n\nserver log:\n" + lab.log_tail(20000))
        context.close()
    if errors and not (failed and failed.failed):
        pytest.fail("the page logged errors:\n" + "\n".join(errors))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
    if report.when == "call" and report.failed:
        # CI keeps only what the run prints: the page's console and the log of every server
        # the test used go into the report beside the failure.
        page = item.funcargs.get("page")
        if page is not None and getattr(page, "console_lines", None):
            report.sections.append(("browser console", "\n".join(page.console_lines[-200:])))
        for name, value in item.funcargs.items():
            if isinstance(value, LabServer):
                report.sections.append((f"{name} server log", value.log_tail(12000)))


def copy_for_readme(src: Path, name: str) -> None:
    """Screenshots the README shows live in docs/images."""
    dest = ROOT / "docs" / "images"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest / name)


@pytest.fixture(scope="module")
def instance_lab(tmp_path_factory):
    """``jupyter lab`` "on an Azure ML compute instance": the instance's ``CI_*`` variables, its
    ``.nbvm`` file and its managed identity, all pointing at the Resource Manager stand-in, whose
    workspace holds this instance (``alice-ci``, idle shutdown after 60 minutes), another one and
    a compute cluster with nodes. The server runs under the network guard: ``stray_connections()``
    lists every attempt to reach beyond loopback. ``reset()`` puts the stand-in back as it began.
    """
    if not (ROOT / "jupyter_compute" / "labextension" / "package.json").exists():
        pytest.fail("the labextension is not built: run `jlpm build` (or `make frontend`) first")
    from tests.standins.arm import OBJECT_ID, TENANT_ID, VM_SIZES, ArmStandIn
    from tests.standins.azure import _AZURE_VARS
    from tests.standins.instance import USER_NAME, add_instance, on_instance_env

    base = tmp_path_factory.mktemp("instance-lab")
    arm = ArmStandIn()
    arm.lro_polls = 2
    arm.start()
    me = {"oid": OBJECT_ID, "tid": TENANT_ID, "name": USER_NAME}
    ws = arm.workspaces[(arm.subscription_id.lower(), arm.resource_group.lower(), arm.workspace_name.lower())]

    def reset() -> None:
        ws["computes"].clear()
        add_instance(arm, "alice-ci", creator=me, idle_shutdown_minutes=60)
        add_instance(arm, "other-ci", creator=me, size="Standard_NC6s_v3")
        body = {"properties": {"computeType": "AmlCompute", "properties": {
            "vmSize": "Standard_DS3_v2", "scaleSettings": {"minNodeCount": 0, "maxNodeCount": 4}}}}
        vm = next(s for s in VM_SIZES if s["name"] == "Standard_DS3_v2")
        cluster = arm._new_resource(ws, "cpu-cluster", body, vm)
        cluster["properties"]["provisioningState"] = "Succeeded"
        cluster["properties"]["properties"]["allocationState"] = "Steady"
        ws["computes"]["cpu-cluster"] = cluster
        arm.set_nodes("cpu-cluster", idle=1, running=1)
        arm.requests.clear()

    reset()
    server = LabServer(base)
    env, nbvm = on_instance_env(arm, base / "azmnt", "alice-ci")
    settings = {"AzureML": {"poll_interval": 0.05, "retry_total": 2, "retry_backoff_factor": 0.01,
                            "instance_file": str(nbvm)}}
    (server.config_dir / "jupyter_compute_config.json").write_text(json.dumps(settings))
    netlog = base / "netguard.log"
    netguard = ROOT / "tests" / "standins" / "netguard"
    for var in _AZURE_VARS:
        server.env.pop(var, None)
    server.env.update(env, AZURE_CONFIG_DIR=str(base / "azure-cli"), AZD_CONFIG_DIR=str(base / "azd"),
                      NO_PROXY="127.0.0.1,localhost", JC_NETGUARD_LOG=str(netlog),
                      PYTHONPATH=os.pathsep.join(filter(None, [str(netguard), os.environ.get("PYTHONPATH")])))
    server.arm = arm
    server.reset = reset
    server.stray_connections = lambda: netlog.read_text() if netlog.exists() else ""
    try:
        server.start()
        yield server
    finally:
        server.stop()
        arm.stop()


@pytest.fixture(scope="module")
def ssh_lab(tmp_path_factory):
    """A ``jupyter lab`` whose user has a home of its own: the SSH key picker lists that home's
    ~/.ssh, which the tests fill, and the real user's ~/.ssh is never read."""
    from tests.sshd import stop_ssh_targets

    if not (ROOT / "jupyter_compute" / "labextension" / "package.json").exists():
        pytest.fail("the labextension is not built: run `jlpm build` (or `make frontend`) first")
    base = tmp_path_factory.mktemp("ssh-lab")
    server = LabServer(base)
    server.home = base / "home"
    (server.home / ".ssh").mkdir(mode=0o700, parents=True)
    server.env["HOME"] = str(server.home)
    server.start()
    try:
        yield server
    finally:
        stop_ssh_targets(server.db)
        server.stop()
