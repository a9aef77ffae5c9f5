"""Device-code sign-in to an Azure ML workspace, through a real Jupyter server's REST API and through
``%compute login`` in a real kernel, against the Resource Manager stand-in and its Azure AD
device-code endpoints (tests/standins/aad_login.py).

In the state "nothing signs in", the default credential chain is kept to managed identity, whose
endpoint (MSI_ENDPOINT) is the stand-in's and refuses: so nothing probes the cloud metadata
address or runs developer tools, and the workspace answers 502 ``azure_auth`` offering sign-in.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import pytest
from jupyter_client.manager import KernelManager

from tests.conftest import azure_server_config

from tests.support import await_for, wait_for
from tests.standins.aad_login import USERNAME
from tests.standins.azure import guarded_pythonpath, arm, azure_env, network_guard  # noqa: F401  (fixtures)
from tests.families.azureml.test_azureml import instance_resource

WS = "ml"
IDENTITY_NOT_FOUND = (400, {"error": "invalid_request", "error_description": "Identity not found"})


@pytest.fixture
def nothing_signs_in(arm, azure_env):
    """No credential of the default chain signs in, and the device-code endpoints are the stand-in's."""
    arm.token_error = IDENTITY_NOT_FOUND
    # Managed identity only (AZURE_TOKEN_CREDENTIALS), at the stand-in's MSI_ENDPOINT, which refuses:
    # without MSI_ENDPOINT the chain would probe 169.254.169.254, and past managed identity it would
    # run az, azd and pwsh, whose traffic no in-process guard sees.
    azure_env.setenv("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")
    for k, v in arm.aad.env().items():
        azure_env.setenv(k, v)
    arm.seed(instance_resource("alice-dev"))
    return arm


@pytest.fixture
def jp_server_config(nothing_signs_in):
    return azure_server_config(nothing_signs_in, WS)


class Recorded:
    """The REST API, keeping every answer so a test can look for what must not be in any."""

    def __init__(self, api):
        self.api = api
        self.bodies: list[str] = []

    async def __call__(self, method: str, path: str, body=None):
        code, data = await self.api(method, path, body)
        self.bodies.append(json.dumps(data))
        return code, data

    async def state(self) -> dict:
        code, data = await self("GET", f"workspaces/{WS}/sign-in")
        assert code == 200, data
        return data

    async def until(self, state: str, timeout: float = 30.0) -> dict:
        async def reached():
            info = await self.state()
            return info if info["state"] == state else None
        return await await_for(reached, timeout=timeout, message=f"the sign-in to be {state}")


@pytest.fixture
def rest(api):
    return Recorded(api)


async def polled(arm, user_code: str, times: int) -> None:
    """Until the server has asked Azure AD ``times`` times whether the code was used."""
    async def enough():
        return arm.aad.polls(user_code) >= times
    await await_for(enough, message=f"Azure AD to be polled {times} times")


def assert_no_token_in(arm, *texts: str) -> None:
    assert arm.aad.issued, "no token was issued, so the check would prove nothing"
    for token in arm.aad.issued:
        for text in texts:
            assert token not in text


async def test_sign_in_with_a_device_code_then_the_workspace_lists(nothing_signs_in, rest, caplog):
    arm = nothing_signs_in
    caplog.set_level(logging.DEBUG)
    code, err = await rest("GET", f"workspaces/{WS}/targets")
    assert code == 502 and err["reason"] == "azure_auth", err
    assert err["details"] == {"sign_in": "device_code"}
    assert "Could not sign in to Azure" in err["message"]
    assert arm.aad.requests == [], "nothing may ask Azure AD for a code before the person asks to sign in"
    code, none = await rest("GET", f"workspaces/{WS}/sign-in")
    assert code == 404 and none["reason"] == "no_sign_in"

    code, started = await rest("POST", f"workspaces/{WS}/sign-in")
    assert code == 202, started
    user_code = await asyncio.to_thread(arm.aad.wait_for_code)
    assert started["state"] == "pending" and started["user_code"] == user_code
    assert started["verification_uri"] == f"{arm.base_url}/devicelogin"
    assert started["verification_uri"] in started["message"] and user_code in started["message"]
    assert started["expires_on"] and started["error"] is None and started["account"] is None

    await polled(arm, user_code, 2)
    assert (await rest.state())["state"] == "pending"
    code, again = await rest("POST", f"workspaces/{WS}/sign-in")
    assert code == 202 and again["user_code"] == user_code, "a second start gives the sign-in still pending"
    code, still = await rest("GET", f"workspaces/{WS}/targets")
    assert code == 502 and still["reason"] == "azure_auth"

    arm.aad.approve(user_code)
    done = await rest.until("signed_in")
    assert done["account"] == USERNAME and done["error"] is None

    code, listed = await rest("GET", f"workspaces/{WS}/targets")
    assert code == 200, listed
    assert [t["name"] for t in listed["targets"]] == ["alice-dev"]
    used = arm.arm_requests("GET", "/computes")[-1].headers["authorization"].removeprefix("Bearer ")
    assert used in arm.aad.issued, "Resource Manager was called with the device-code sign-in's token"
    assert len(arm.aad.codes) == 1
    assert_no_token_in(arm, caplog.text, *rest.bodies)


async def test_a_declined_sign_in_fails_with_azures_message(nothing_signs_in, rest):
    arm = nothing_signs_in
    code, started = await rest("POST", f"workspaces/{WS}/sign-in")
    assert code == 202, started
    arm.aad.decline(started["user_code"])
    failed = await rest.until("failed")
    assert "AADSTS70000" in failed["error"] and "declined" in failed["error"]
    code, err = await rest("GET", f"workspaces/{WS}/targets")
    assert code == 502 and err["reason"] == "azure_auth" and err["details"]["sign_in"] == "device_code"
    arm.aad.issued.clear()

    # A new start begins a new sign-in, with a new code.
    code, second = await rest("POST", f"workspaces/{WS}/sign-in")
    assert code == 202 and second["state"] == "pending" and second["user_code"] != started["user_code"]
    assert await asyncio.to_thread(arm.aad.wait_for_code, after=1) == second["user_code"]
    arm.aad.approve(second["user_code"])
    await rest.until("signed_in")
    assert (await rest("GET", f"workspaces/{WS}/targets"))[0] == 200


async def test_a_code_nobody_uses_expires(nothing_signs_in, rest):
    arm = nothing_signs_in
    arm.aad.code_lifetime = 2
    code, started = await rest("POST", f"workspaces/{WS}/sign-in")
    assert code == 202, started
    expired = await rest.until("expired")
    assert started["user_code"] in expired["error"] and "expired" in expired["error"]
    arm.aad.approve(started["user_code"])  # too late: nobody polls for it any more
    code, err = await rest("GET", f"workspaces/{WS}/targets")
    assert code == 502 and err["reason"] == "azure_auth"


async def test_cancelling_stops_the_sign_in(nothing_signs_in, rest):
    arm = nothing_signs_in
    code, started = await rest("POST", f"workspaces/{WS}/sign-in")
    assert code == 202, started
    user_code = started["user_code"]
    await polled(arm, user_code, 1)
    code, cancelled = await rest("DELETE", f"workspaces/{WS}/sign-in")
    assert code == 200 and cancelled["state"] == "cancelled"
    polls = arm.aad.polls(user_code)
    await asyncio.sleep(3 * arm.aad.interval + 0.5)
    assert arm.aad.polls(user_code) <= polls + 1, "a cancelled sign-in stops polling Azure AD"
    arm.aad.approve(user_code)
    await asyncio.sleep(2 * arm.aad.interval)
    assert (await rest.state())["state"] == "cancelled"
    code, err = await rest("GET", f"workspaces/{WS}/targets")
    assert code == 502 and err["reason"] == "azure_auth"


async def test_only_azure_workspaces_sign_in(nothing_signs_in, rest):
    for method in ("POST", "GET", "DELETE"):
        code, err = await rest(method, "workspaces/local/sign-in")
        assert code == 400 and err["reason"] == "not_azure", (method, err)
        code, err = await rest(method, "workspaces/nowhere/sign-in")
        assert code == 404 and err["reason"] == "unknown_workspace", (method, err)
    assert nothing_signs_in.aad.requests == []


# -- %compute login in a real kernel ----------------------------------------------------------------
@pytest.fixture
def kernel(nothing_signs_in, tmp_path, monkeypatch):
    """A kernel whose jupyter_compute_config names the workspace, under the network guard."""
    arm = nothing_signs_in
    config_dir = tmp_path / "jupyter-config"
    config_dir.mkdir()
    (config_dir / "jupyter_compute_config.json").write_text(json.dumps({"AzureML": {
        "poll_interval": 0.05, "retry_total": 2, "retry_backoff_factor": 0.01,
        "workspaces": [{"subscription_id": arm.subscription_id, "resource_group": arm.resource_group,
                        "workspace_name": arm.workspace_name, "alias": WS}]}}))
    netlog = tmp_path / "netguard.log"
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("JC_NETGUARD_LOG", str(netlog))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYTHONPATH", guarded_pythonpath())
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)

    def execute(code: str, *, on_output=None, interrupt_when=None, timeout: float = 120):
        """Run ``code``; with ``interrupt_when``, interrupt the kernel once that holds."""
        seen: list[tuple[str, dict]] = []
        if interrupt_when is not None:
            def interrupt():
                wait_for(interrupt_when, timeout=60, message="the moment to interrupt")
                km.interrupt_kernel()
            threading.Thread(target=interrupt, name="interrupt-kernel", daemon=True).start()

        def hook(msg):
            seen.append((msg["msg_type"], msg["content"]))
            if on_output is not None:
                on_output(msg["msg_type"], msg["content"])
        reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        return reply["content"], seen

    assert execute("%load_ext jupyter_compute")[0]["status"] == "ok"
    yield execute
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    assert not netlog.exists() or netlog.read_text() == ""


def _text(seen: list[tuple[str, dict]]) -> str:
    parts = []
    for kind, content in seen:
        if kind == "stream":
            parts.append(content["text"])
        elif kind in ("display_data", "execute_result"):
            parts.append(content["data"].get("text/plain", "") + "\n" + content["data"].get("text/html", ""))
        elif kind == "error":
            parts.append("\n".join(content["traceback"]))
    return "\n".join(parts)


def test_compute_login_in_a_kernel(nothing_signs_in, kernel):
    arm = nothing_signs_in
    reply, seen = kernel(f"%compute list --workspace {WS}")
    assert reply["status"] == "error"
    assert f"%compute login --workspace {WS}" in _text(seen), _text(seen)
    assert arm.aad.requests == []

    shown: list[str] = []

    def approve_once_shown(kind, content):
        if kind == "display_data" and arm.aad.codes:
            code = arm.aad.codes[-1].user_code
            if code in content["data"].get("text/plain", "") and not shown:
                shown.append(content["data"]["text/plain"])
                arm.aad.approve(code)

    reply, seen = kernel(f"%compute login --workspace {WS}", on_output=approve_once_shown)
    assert reply["status"] == "ok", _text(seen)
    assert shown and f"{arm.base_url}/devicelogin" in shown[0]
    html = next(c["data"]["text/html"] for k, c in seen if k == "display_data" and "text/html" in c["data"])
    assert f"<code>{arm.aad.codes[-1].user_code}</code>" in html and f"href='{arm.base_url}/devicelogin'" in html
    assert f"Signed in to workspace '{WS}' as {USERNAME}" in _text(seen)

    reply, seen = kernel(f"%compute list --workspace {WS} --output json")
    assert reply["status"] == "ok", _text(seen)
    assert "alice-dev" in _text(seen)
    assert_no_token_in(arm, _text(seen))


def test_interrupting_compute_login_cancels_it(nothing_signs_in, kernel):
    arm = nothing_signs_in
    shown: list[str] = []

    def note_the_code(kind, content):
        if kind == "display_data" and arm.aad.codes and \
                arm.aad.codes[-1].user_code in content["data"].get("text/plain", ""):
            shown.append(arm.aad.codes[-1].user_code)

    def waiting_for_the_person() -> bool:  # the code is shown and Azure AD is being asked about it
        return bool(shown) and arm.aad.polls(shown[0]) >= 1
    t0 = time.monotonic()
    reply, seen = kernel(f"%compute login --workspace {WS}", on_output=note_the_code,
                         interrupt_when=waiting_for_the_person)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    assert time.monotonic() - t0 < 30
    user_code = arm.aad.codes[-1].user_code
    assert user_code in _text(seen)
    polls = arm.aad.polls(user_code)
    time.sleep(3 * arm.aad.interval + 0.5)
    assert arm.aad.polls(user_code) <= polls + 1, "an interrupted sign-in stops polling Azure AD"
    reply, seen = kernel(f"%compute list --workspace {WS}")
    assert reply["status"] == "error" and "%compute login" in _text(seen)
