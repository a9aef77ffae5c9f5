"""Device-code sign-in from the sidebar: an Azure ML workspace nothing signs in to offers it in the
error banner, shows the code and the page, and lists the workspace's compute once the person has
signed in (in the stand-in's Azure AD, as they would in the browser)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.standins.arm import ArmStandIn
from tests.standins.azure import guarded_pythonpath, _AZURE_VARS
from tests.families.azureml.test_azureml import cluster_resource, instance_resource

from tests.browser.conftest import LabServer, copy_for_readme
from .pages import LabPage

pytestmark = pytest.mark.browser

WS = "ml"


@pytest.fixture(scope="module")
def arm():
    server = ArmStandIn().start()
    server.lro_polls = 1
    # Managed identity (the stand-in's MSI_ENDPOINT) refuses, and the chain is kept to it: nothing
    # signs in, and nothing probes the cloud metadata address or runs developer tools.
    server.token_error = (400, {"error": "invalid_request", "error_description": "Identity not found"})
    server.seed(instance_resource("alice-dev"))
    server.seed(cluster_resource("cpu-cluster"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def lab(arm, tmp_path_factory):
    """This module's own ``jupyter lab``: one Azure ML workspace, at the stand-ins, under the network guard."""
    base = tmp_path_factory.mktemp("signin-lab")
    server = LabServer(base)
    for var in _AZURE_VARS:
        server.env.pop(var, None)
    server.netlog = base / "netguard.log"
    server.env.update({**arm.env(), **arm.aad.env(), "AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential",
                       "AZURE_CONFIG_DIR": str(base / "azure-cli"), "NO_PROXY": "127.0.0.1,localhost",
                       "JC_NETGUARD_LOG": str(server.netlog),
                       "PYTHONPATH": guarded_pythonpath()})
    (server.config_dir / "jupyter_compute_config.json").write_text(json.dumps({"AzureML": {
        "poll_interval": 0.05, "retry_total": 1, "retry_backoff_factor": 0.01,
        "workspaces": [{"subscription_id": arm.subscription_id, "resource_group": arm.resource_group,
                        "workspace_name": arm.workspace_name, "alias": WS}]}}))
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.netlog.exists() or server.netlog.read_text() == ""


def test_sidebar_offers_device_code_sign_in_and_then_lists(page, lab, arm, artifacts):
    # Listing the workspace before sign-in is refused with 502 azure_auth: the banner's subject.
    page.allow_console_errors(r"status of 502")
    ui = LabPage(page, lab).open().open_compute()
    page.locator("#jp-Compute-workspace").select_option(WS)
    banner = ui.panel.locator(".jp-ComputePanel-banner.jp-mod-error")
    expect(banner.locator("strong")).to_have_text(re.compile(r"^\S+ is not signed in to Azure\.$"), timeout=30_000)
    # Azure's own words are kept, a click away.
    why = banner.locator("details.jp-ComputePanel-why")
    expect(why).not_to_have_attribute("open", "")
    why.locator("summary").click()
    expect(why).to_contain_text("Could not sign in to Azure")
    why.locator("summary").click()
    expect(why).not_to_have_attribute("open", "")
    offer = banner.get_by_role("button", name="Sign in with a device code")
    expect(offer).to_be_visible()
    assert arm.aad.requests == [], "nothing asks Azure AD for a code before the person clicks"

    offer.click()
    code = banner.locator(".jp-ComputeSignIn-code")
    expect(code).to_have_text(arm.aad.wait_for_code(), timeout=30_000)
    user_code = arm.aad.codes[-1].user_code
    link = banner.locator("a.jp-ComputeSignIn-link")
    expect(link).to_have_attribute("href", f"{arm.base_url}/devicelogin")
    expect(link).to_have_attribute("target", "_blank")
    expect(banner.locator(".jp-ComputeSignIn-waiting")).to_contain_text("Waiting for you to sign in")
    banner.get_by_role("button", name="Copy the sign-in code").click()
    expect(banner.locator(".jp-ComputeSignIn-copied")).to_have_text("Copied")
    shot = artifacts / "device-code.png"
    ui.panel.screenshot(path=str(shot))
    copy_for_readme(shot, "device-code.png")

    # The page keeps asking; it is still pending until the person signs in.
    page.wait_for_timeout(2500)
    expect(code).to_have_text(user_code)
    arm.aad.approve(user_code)
    expect(ui.row("alice-dev")).to_be_visible(timeout=30_000)
    expect(ui.row("cpu-cluster")).to_be_visible()
    expect(banner).to_have_count(0)
    assert len(arm.aad.codes) == 1 and arm.aad.issued
    for token in arm.aad.issued:
        assert token not in page.content() and token not in lab.log_tail(10**6)
