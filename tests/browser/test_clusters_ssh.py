"""The Clusters and Remote machines groups of the sidebar in real JupyterLab and Chromium: a real
``dask-cluster`` scaled from its row, and an ``ssh`` machine attached to a real sshd on loopback
through the key picker and the host-key step."""
from __future__ import annotations

import getpass
import json
import os
import shutil
import sys
import urllib.parse

import pytest
from playwright.sync_api import expect

from tests.sshd import Sshd, stop_ssh_targets

from tests.browser.conftest import copy_for_readme, wait_until
from .pages import LabPage

pytestmark = pytest.mark.browser


@pytest.fixture
def machine(tmp_path, ssh_lab):
    """A real sshd on 127.0.0.1 whose client key sits in the lab user's ~/.ssh, beside a copy
    that others can read."""
    server = Sshd(tmp_path).start()
    ssh_dir = ssh_lab.home / ".ssh"
    good = ssh_dir / "id_ed25519"
    shared = ssh_dir / "id_shared"
    for path, mode in ((good, 0o600), (shared, 0o644)):
        shutil.copyfile(server.client_key_path, path)
        os.chmod(path, mode)
    (ssh_dir / "id_ed25519.pub").write_bytes((server.dir / "authorized_keys").read_bytes())
    yield server, good, shared
    stop_ssh_targets(ssh_lab.db)
    server.stop()


def test_dask_cluster_scale_and_dashboard(page, lab, artifacts):
    ui = LabPage(page, lab).open().open_compute()
    dialog = ui.open_dialog("create", "dask-cluster")
    ui.field_input("name").fill("ui-dask")
    ui.field_input("min_nodes").fill("1")
    ui.field_input("max_nodes").fill("2")
    ui.field_input("threads_per_node").fill("1")
    ui.field_input("memory_limit_mb").fill("512")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog).to_be_hidden(timeout=10_000)

    # It reaches running in the Clusters group, with its workers as current / max.
    expect(page.locator(".jp-ComputeGroup[data-family='Clusters']")).to_be_visible()
    ui.expect_state("ui-dask", "running", timeout=120_000)
    expect(ui.row_facts("ui-dask")).to_contain_text("1/2 workers", timeout=30_000)
    expect(ui.row_facts("ui-dask")).to_contain_text("1 vCPU")

    # The dashboard opens through the Jupyter server (its proxy, under its authentication), so it
    # works wherever the browser is; a click opens it in a JupyterLab tab.
    target = lab.target("ui-dask")
    direct = target["properties"]["dashboard_link"]
    assert direct.startswith("http://127.0.0.1:"), direct
    port = urllib.parse.urlsplit(direct).port
    href = f"{lab.url}/proxy/{port}/status"
    dashboard = ui.app_links("ui-dask").filter(has_text="Dashboard")
    expect(dashboard).to_have_attribute("href", href)
    # Bokeh, in the dashboard's own page, may send on its websocket before it has opened (its
    # error, thrown from its own script under the proxy): allowed here only.
    page.allow_console_errors(r"Still in CONNECTING state[\s\S]*/proxy/\d+/static/js/bokeh")
    dashboard.click()
    tab = page.locator(".jp-MainAreaWidget .jp-ComputePageTab iframe")
    expect(tab).to_have_attribute("src", href, timeout=10_000)
    frame = page.frame_locator(".jp-ComputePageTab iframe")
    expect(frame.get_by_role("link", name="Status", exact=True)).to_be_visible(timeout=30_000)
    assert "Dask" in frame.locator("title").first.text_content(timeout=10_000)
    expect(page.locator(".lm-TabBar-tab.jp-mod-current.lm-mod-closable")).to_contain_text("Dashboard · ui-dask")
    page.screenshot(path=str(artifacts / "dask-dashboard-tab.png"))

    # The scale control checks what it is given before anything is sent.
    ui.row_action("ui-dask", "scale").click()
    expect(ui.scale_dialog).to_be_visible()
    expect(ui.scale_input("min_nodes")).to_have_value("1")
    expect(ui.scale_input("max_nodes")).to_have_value("2")
    apply = ui.scale_dialog.get_by_role("button", name="Scale", exact=True)
    expect(apply).to_be_disabled()  # nothing changed yet
    checks = [("max_nodes", "0", "Must be at least 1"), ("max_nodes", "2.5", "Enter a whole number"),
              ("max_nodes", "300", "Must be at most 256"), ("min_nodes", "-1", "Must be at least 0")]
    for field, value, error in checks:
        ui.scale_input(field).fill(value)
        expect(ui.scale_error(field)).to_have_text(error)
        expect(ui.scale_input(field)).to_have_attribute("aria-invalid", "true")
        expect(apply).to_be_disabled()
        ui.scale_input(field).fill("1" if field == "min_nodes" else "2")
        expect(ui.scale_error(field)).to_have_text("")
    ui.scale_input("min_nodes").fill("3")
    expect(ui.scale_error("max_nodes")).to_have_text("Must be at least minimum workers (3)")
    expect(apply).to_be_disabled()
    ui.scale_dialog.screenshot(path=str(artifacts / "dask-scale-invalid.png"))
    ui.scale_input("min_nodes").press("Enter")
    expect(ui.scale_dialog).to_be_visible()
    assert lab.target("ui-dask")["properties"]["min_nodes"] == 1, "nothing invalid is sent"

    # A valid change goes to the server as an update; the spec and the row follow.
    ui.scale_input("min_nodes").fill("1")
    ui.scale_input("max_nodes").fill("3")
    expect(apply).to_be_enabled()
    apply.click()
    expect(ui.scale_dialog).to_be_hidden(timeout=10_000)
    spec = lab.target("ui-dask")["properties"]
    assert (spec["min_nodes"], spec["max_nodes"]) == (1, 3)
    expect(ui.row_facts("ui-dask")).to_contain_text("/3 workers", timeout=10_000)
    ui.expect_state("ui-dask", "running", timeout=5_000)
    ui.panel.screenshot(path=str(artifacts / "dask-cluster.png"))
    copy_for_readme(artifacts / "dask-cluster.png", "dask-cluster.png")

    # Stop (a Dask cluster holds no kernel's variables, so nothing is asked), then delete (asked).
    # The dashboard's tab stays open, and its Bokeh page says it lost its server once it has gone
    # (in the console, from its own script): allowed from here on.
    page.allow_console_errors(r"^\[bokeh [\d.]+\] not connected so cannot send")
    ui.row_action("ui-dask", "stop").click()
    ui.expect_state("ui-dask", "stopped", timeout=60_000)
    expect(ui.page.locator(".jp-Dialog")).to_have_count(0)
    expect(ui.app_links("ui-dask")).to_have_count(0)
    expect(ui.row_action("ui-dask", "scale")).to_be_enabled()
    ui.row_action("ui-dask", "delete").click()
    ui.dialog_button("Delete").click()
    expect(ui.row("ui-dask")).to_have_count(0, timeout=60_000)
    wait_until(lambda: lab.target("ui-dask") is None, timeout=10, message="ui-dask to be gone")


def test_ssh_attach_with_key_picker_and_host_key_step(page, ssh_lab, machine, artifacts):
    sshd, good_key, shared_key = machine
    known_hosts = ssh_lab.db.parent / "ssh_known_hosts"

    # The key listing names files and their permissions, never what is in them.
    code, listing = ssh_lab.compute("GET", "ssh-keys")
    assert code == 200, listing
    assert listing["directory"] == str(ssh_lab.home / ".ssh")
    keys = {k["name"]: k for k in listing["keys"]}
    assert set(keys) == {"id_ed25519", "id_shared"}, keys  # public keys are not offered
    assert keys["id_ed25519"]["usable"] and not keys["id_ed25519"]["readable_by_others"]
    assert not keys["id_shared"]["usable"] and keys["id_shared"]["readable_by_others"]
    assert "too open" in keys["id_shared"]["problem"]
    assert "PRIVATE KEY" not in json.dumps(listing)

    ui = LabPage(page, ssh_lab).open().open_compute()
    dialog = ui.open_dialog("attach", "ssh")
    expect(ui.field("accept_host_key")).to_have_count(0)  # only the host-key step accepts a key
    ui.field_input("name").fill("ui-vm")
    ui.field_input("host").fill("127.0.0.1")
    ui.field_input("port").fill(str(sshd.port))
    ui.field_input("python").fill(sys.executable)

    # The picker lists both key files; the one others can read is shown as refused.
    expect(ui.key_files.locator("option", has_text="id_ed25519")).to_be_enabled()
    shared_option = ui.key_files.locator("option", has_text="id_shared")
    expect(shared_option).to_be_disabled()
    expect(shared_option).to_contain_text("refused: others can read it (0644)")
    expect(ui.field("ssh_private_key")).to_contain_text("too open")

    # Typing the refused key's path is refused inline, and nothing is sent.
    key_input = ui.field("ssh_private_key").locator("input")
    key_input.fill(str(shared_key))
    expect(ui.field_error("ssh_private_key")).to_contain_text("too open")
    dialog.get_by_role("button", name="Attach").click()
    expect(ui.host_key_step).to_have_count(0)
    assert ssh_lab.target("ui-vm") is None

    # Picking the good key fills in its path.
    ui.key_files.select_option(str(good_key))
    expect(key_input).to_have_value(str(good_key))
    expect(ui.field_error("ssh_private_key")).to_have_text("")

    # The host key is unknown: the dialog shows its fingerprint, and trusts nothing by itself.
    ui.record_focus()
    dialog.get_by_role("button", name="Attach").click()
    step = ui.host_key_step
    expect(step).to_be_visible(timeout=30_000)
    # Keyboard focus is on the step, not the accept button: Enter must not accept.
    ui.expect_focus_on("jp-ComputeHostKey")
    expect(step.locator(".jp-ComputeHostKey-fingerprint")).to_have_text(sshd.fingerprint)
    expect(step).to_contain_text(f"127.0.0.1:{sshd.port}")
    expect(step).to_contain_text("trusted for every later connection")
    expect(step).to_contain_text("ssh-ed25519")
    assert ssh_lab.target("ui-vm") is None
    assert not known_hosts.exists() or sshd.fingerprint not in known_hosts.read_text()
    dialog.screenshot(path=str(artifacts / "ssh-host-key.png"))
    copy_for_readme(artifacts / "ssh-host-key.png", "ssh-host-key.png")

    # Back returns to the form as it was; attaching again asks again.
    step.get_by_role("button", name="Back").click()
    expect(key_input).to_have_value(str(good_key))
    dialog.get_by_role("button", name="Attach").click()
    expect(step.locator(".jp-ComputeHostKey-fingerprint")).to_have_text(sshd.fingerprint, timeout=30_000)
    assert ssh_lab.target("ui-vm") is None

    step.get_by_role("button", name="Accept this key and attach").click()
    expect(dialog).to_be_hidden(timeout=30_000)
    host_pattern = f"[127.0.0.1]:{sshd.port}"
    wait_until(lambda: known_hosts.exists() and host_pattern in known_hosts.read_text(), timeout=30,
               message="the accepted key to be kept in known_hosts")

    # The row shows user, host and state; it starts and stops.
    user = getpass.getuser()
    expect(page.locator(".jp-ComputeGroup[data-family='Remote machines']")).to_be_visible()
    ui.expect_state("ui-vm", "stopped", timeout=60_000)
    expect(ui.row_facts("ui-vm")).to_contain_text(f"{user}@127.0.0.1:{sshd.port}")
    ui.row_action("ui-vm", "start").click()
    ui.expect_state("ui-vm", "running", timeout=90_000)
    label = ui.row("ui-vm").get_attribute("aria-label")
    assert label.startswith("ui-vm, running, ") and f"{user}@127.0.0.1:{sshd.port}" in label, label
    expect(ui.row_facts("ui-vm")).to_contain_text(f"{user}@127.0.0.1:{sshd.port}")
    ui.panel.screenshot(path=str(artifacts / "ssh-running.png"))
    target = ssh_lab.target("ui-vm")
    assert target["properties"]["ssh_private_key"] == str(good_key)
    assert "accept_host_key" not in target["properties"]

    ui.row_action("ui-vm", "stop").click()
    ui.dialog_button("Stop").click()
    ui.expect_state("ui-vm", "stopped", timeout=60_000)
    ui.row_action("ui-vm", "delete").click()
    ui.dialog_button("Detach").click()
    expect(ui.row("ui-vm")).to_have_count(0, timeout=60_000)
    wait_until(lambda: ssh_lab.target("ui-vm") is None, timeout=10, message="ui-vm to be detached")
