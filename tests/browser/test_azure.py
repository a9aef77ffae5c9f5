"""The Compute sidebar on an Azure ML compute instance, against the Resource Manager stand-in.

JupyterLab runs "on" the instance ``alice-ci`` (its variables, its ``.nbvm`` file, its managed
identity; see the ``instance_lab`` fixture): the sidebar pins it with its size, state,
idle-shutdown countdown and activity; stopping it asks first, naming the consequence; the Azure
groups list the workspace's instances with their applications and its cluster with its nodes; the
create dialog offers the location's sizes with their prices. The server reaches nothing but
loopback.
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import copy_for_readme, wait_until
from .pages import LabPage

ME = "alice-ci"


@pytest.fixture(scope="module")
def lab(instance_lab):
    """The ``page`` fixture opens JupyterLab on this module's server: the one on the instance."""
    return instance_lab


@pytest.fixture
def ui(page, lab):
    lab.reset()
    yield LabPage(page, lab).open().open_compute_on_instance(ME)
    assert lab.stray_connections() == ""


def _state(lab, name: str) -> str:
    return lab.arm.compute(name)["properties"]["properties"]["state"]


def test_this_instance_is_pinned_with_its_idle_shutdown_and_activity(ui, lab, artifacts):
    # Something that counts: a kernel and a terminal on this (the instance's) Jupyter server.
    code, kernel = lab.request("POST", "api/kernels", {})
    assert code == 201, kernel
    code, terminal = lab.request("POST", "api/terminals")
    assert code == 200, terminal
    try:
        ui.panel.locator("button[data-command='refresh']").click()
        card = ui.instance_card
        expect(card.locator(".jp-ComputeInstance-name")).to_have_text(ME)
        expect(card.locator(".jp-ComputeBadge")).to_have_attribute("data-state", "running")
        expect(card.locator(".jp-ComputeInstance-size")).to_have_text("Standard_DS3_v2 · 4 vCPUs · 14 GB")
        idle = card.locator(".jp-ComputeInstance-idle")
        expect(idle).to_have_attribute("data-idle-state", "counting")
        expect(idle).to_have_text(re.compile(r"^Idle shutdown in (59 min|1 h) \(at \d"))
        # What Azure ML counts as activity, each with what there is of it now.
        activity = card.locator(".jp-ComputeInstance-activity li")
        expect(activity).to_have_count(4)
        expect(activity.locator(".jp-ComputeInstance-activityLabel")).to_have_text([
            "Jupyter kernel sessions", "Jupyter terminal sessions", "Azure ML jobs", "SSH and VS Code connections"])
        expect(card.locator("li[data-activity='kernels']")).to_contain_text("1 open, 0 running code")
        expect(card.locator("li[data-activity='terminals']")).to_contain_text("1 open")
        expect(card.locator("li[data-activity='jobs']")).to_contain_text("none running")
        expect(card.locator("li[data-activity='connections']")).to_contain_text("notebook")
        # Its applications, and its own buttons.
        expect(card.locator(".jp-ComputeApps-link")).to_have_text(["Jupyter", "JupyterLab", "RStudio"])
        expect(card.locator("button[data-action='stop']")).to_be_enabled()
        expect(card.locator("button[data-action='start']")).to_be_disabled()
        shot = artifacts / "this-instance.png"
        ui.panel.screenshot(path=str(shot))
        copy_for_readme(shot, "this-instance.png")

        # A job on the instance counts as activity: the countdown gives way to the reason.
        lab.arm.compute(ME)["properties"]["properties"]["state"] = "JobRunning"
        ui.panel.locator("button[data-command='refresh']").click()
        expect(idle).to_have_attribute("data-idle-state", "active")
        expect(idle).to_have_text(
            "Not idle: an Azure ML job is running. Idle shutdown after 1 h without activity")
        expect(card.locator("li[data-activity='jobs']")).to_contain_text("a job is running")
        expect(card.locator("li[data-activity='jobs']")).to_have_class("jp-mod-active")
    finally:
        lab.request("DELETE", f"api/kernels/{kernel['id']}")
        lab.request("DELETE", f"api/terminals/{terminal['name']}")


def test_stopping_this_instance_names_the_consequence_and_needs_confirmation(ui, page, lab):
    # The server refuses a self-stop until it is confirmed: that 409 is the contract.
    page.allow_console_errors(r"status of 409")
    stop = ui.instance_card.locator("button[data-action='stop']")
    dialog = page.locator(".jp-Dialog")

    stop.click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"'{ME}' is the compute instance this runs on")
    expect(dialog).to_contain_text("ends this JupyterLab session")
    ui.dialog_button("Cancel").click()
    expect(dialog).to_have_count(0)
    # Cancelled: nothing was sent to Azure, and the instance still runs.
    assert not lab.arm.arm_requests("POST", "/stop")
    assert _state(lab, ME) == "Running"
    expect(ui.instance_card.locator(".jp-ComputeBadge")).to_have_attribute("data-state", "running")
    expect(ui.badge(ME)).to_have_attribute("data-state", "running")

    # The row's button asks the same; going ahead stops the instance.
    ui.row(ME).click()
    ui.row_action(ME, "stop").click()
    expect(dialog).to_contain_text("ends this JupyterLab session")
    ui.dialog_button(f"Stop {ME} and end this session").click()
    expect(dialog).to_have_count(0)
    wait_until(lambda: _state(lab, ME) == "Stopped", timeout=60, message=f"{ME} to be stopped in Azure")
    assert len(lab.arm.arm_requests("POST", "/stop")) == 1
    expect(ui.instance_card.locator(".jp-ComputeBadge")).to_have_attribute("data-state", "stopped",
                                                                            timeout=30_000)
    expect(ui.badge(ME)).to_have_attribute("data-state", "stopped")
    # The other instance was never asked about, nor touched.
    assert _state(lab, "other-ci") == "Running"


def test_deleting_this_instance_asks_the_same_and_confirms_in_the_query(ui, page, lab):
    page.allow_console_errors(r"status of 409")
    dialog = page.locator(".jp-Dialog")
    ui.instance_card.locator("button[data-action='delete']").click()
    expect(dialog).to_contain_text("Deleting it ends this JupyterLab session")
    ui.dialog_button(f"Delete {ME} and end this session").click()
    wait_until(lambda: lab.arm.compute(ME) is None, timeout=60, message=f"{ME} to be deleted in Azure")
    expect(ui.row(ME)).to_have_count(0, timeout=30_000)
    assert len(lab.arm.arm_requests("DELETE")) == 1
    assert lab.arm.compute("other-ci") is not None


def test_azure_groups_show_applications_nodes_and_sizes_with_prices_and_quota(ui, page, lab):
    instances = ui.panel.locator(".jp-ComputeGroup[data-family='Compute instances']")
    clusters = ui.panel.locator(".jp-ComputeGroup[data-family='Compute clusters']")
    expect(instances).to_contain_text("2")
    expect(clusters).to_contain_text("1")

    # Each running instance links to its applications; the VS Code link opens no web page.
    links = ui.app_links("other-ci")
    expect(links).to_have_text(["Jupyter", "JupyterLab", "RStudio"])
    expect(links.first).to_have_attribute("href", "https://other-ci.eastus.instances.azureml.ms/tree/")
    expect(links.nth(1)).to_have_attribute("href", "https://other-ci.eastus.instances.azureml.ms/lab")
    expect(links.first).to_have_attribute("target", "_blank")
    expect(ui.row("other-ci")).to_contain_text("6 vCPUs · 112 GB · 1 GPU")

    # The cluster shows its nodes: current over the most it scales to.
    expect(ui.row("cpu-cluster")).to_contain_text("2/4 nodes")
    expect(ui.app_links("cpu-cluster")).to_have_count(0)

    # A stopped instance offers no links.
    lab.arm.compute("other-ci")["properties"]["properties"]["state"] = "Stopped"
    ui.panel.locator("button[data-command='refresh']").click()
    ui.expect_state("other-ci", "stopped")
    expect(ui.app_links("other-ci")).to_have_count(0)

    # The create dialog for an instance picks a size with its price.
    ui.command("jupyter-compute:create", {"kind": "compute-instance"}, wait=False)
    expect(ui.create_dialog).to_be_visible()
    size = ui.field_input("size")
    expect(size.locator("option", has_text="Standard_DS3_v2")).to_have_count(1)
    option = size.locator("option", has_text="Standard_DS3_v2").text_content()
    assert "4 vCPUs, 14 GB" in option and "$0.29/h" in option, option
    # ... and how many more nodes of it the quota allows, as the server works it out.
    code, listing = lab.compute("GET", "workspaces")
    ws = next(w["id"] for w in listing["workspaces"] if w["kind"] != "local")
    code, body = lab.compute("GET", f"workspaces/{ws}/sizes")
    assert code == 200, body
    left = next(s["quota_available"] for s in body["sizes"] if s["name"] == "Standard_DS3_v2")
    assert isinstance(left, int) and f"{left} left in quota" in option, option
    ui.create_dialog.get_by_role("button", name="Cancel").click()
    expect(ui.create_dialog).to_have_count(0)
