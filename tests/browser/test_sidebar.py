"""The Compute sidebar in real JupyterLab and Chromium, against the real server extension."""
from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import wait_until
from .pages import LabPage

pytestmark = pytest.mark.browser


def test_panel_shows_this_machine(page, lab, artifacts):
    ui = LabPage(page, lab).open().open_compute()
    row = ui.row("this-machine")
    ui.expect_state("this-machine", "running", timeout=5_000)
    expect(page.locator(".jp-ComputeGroup[data-family='This machine']")).to_be_visible()
    expect(page.locator(".jp-ComputeGroup[data-family='Local kernels']")).to_be_visible()
    # Size from the server: CPUs and memory of this machine.
    expect(row.locator(".jp-ComputeRow-meta")).to_contain_text("vCPU")
    expect(row.locator(".jp-ComputeRow-meta")).to_contain_text("GB")
    # and its load, which is what changes on a machine that is always running.
    expect(row.locator(".jp-ComputeRow-meta")).to_contain_text(re.compile(r"CPU \d+% · [\d.]+ GB free"))
    # This machine can be neither stopped nor deleted: the row offers details only.
    assert row.locator("button[data-action='stop']").count() == 0
    assert row.locator("button[data-action='delete']").count() == 0
    expect(ui.row_action("this-machine", "details")).to_have_attribute("aria-label", "Details of this-machine")
    expect(page.get_by_role("combobox", name="Workspace")).to_have_value("local")
    ui.panel.screenshot(path=str(artifacts / "panel-this-machine.png"))


def test_create_in_dialog_then_run_stop_and_delete(page, lab, artifacts):
    ui = LabPage(page, lab).open().open_compute()
    page.locator("#jupyter-compute-panel button[data-command='create']").click()
    dialog = ui.create_dialog
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("local-kernel")

    # A bad name is refused inline, as it is typed, before anything is sent.
    name = ui.field_input("name")
    name.fill("1 bad name")
    expect(ui.field_error("name")).to_contain_text("Start with a letter")
    expect(name).to_have_attribute("aria-invalid", "true")
    name.fill("local")
    expect(ui.field_error("name")).to_contain_text("reserved")
    posts_before = _count_posts(lab)
    dialog.get_by_role("button", name="Create").click()
    expect(dialog).to_be_visible()
    assert _count_posts(lab) == posts_before

    # Inline ranges from the kind's JSON Schema.
    ui.field_input("memory_limit_mb").fill("10")
    ui.field_input("memory_limit_mb").blur()
    expect(ui.field_error("memory_limit_mb")).to_have_text("Must be at least 64")
    ui.field_input("memory_limit_mb").fill("")
    expect(ui.field_error("memory_limit_mb")).to_have_text("")

    # What only the server can know comes back as a 400 naming the field, shown beside it.
    name.fill("ui-kernel")
    expect(ui.field_error("name")).to_have_text("")
    ui.field_input("python").fill("/nonexistent/bin/python")
    dialog.get_by_role("button", name="Create").click()
    expect(ui.field_error("python")).to_contain_text("not an executable Python", timeout=10_000)
    expect(dialog).to_be_visible()
    assert lab.target("ui-kernel") is None, "a request that fails validation changes nothing"
    dialog.screenshot(path=str(artifacts / "create-dialog.png"))

    ui.field_input("python").fill("")
    ui.field_input("env").fill("COMPUTE_TEST=1")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog).to_be_hidden(timeout=10_000)

    # It appears at once, and reaches running by itself.
    expect(ui.row("ui-kernel")).to_be_visible(timeout=5_000)
    ui.expect_state("ui-kernel", "running")
    assert lab.target("ui-kernel")["state"] == "running"

    # Stop asks first (the default setting), then the row follows the state to stopped.
    expect(ui.row_action("ui-kernel", "start")).to_be_disabled()
    ui.row_action("ui-kernel", "stop").click()
    ui.dialog_button("Stop").click()
    ui.expect_state("ui-kernel", "stopped", timeout=30_000)
    expect(ui.row_action("ui-kernel", "start")).to_be_enabled()
    expect(ui.row_action("ui-kernel", "stop")).to_be_disabled()

    # Delete asks; cancelling keeps the target.
    ui.row_action("ui-kernel", "delete").click()
    ui.dialog_button("Cancel").click()
    expect(ui.row("ui-kernel")).to_be_visible()
    ui.row_action("ui-kernel", "delete").click()
    ui.dialog_button("Delete").click()
    expect(ui.row("ui-kernel")).to_have_count(0, timeout=30_000)
    wait_until(lambda: lab.target("ui-kernel") is None, timeout=10, message="ui-kernel to be gone")


def test_target_created_by_cli_appears_without_reload(page, lab):
    ui = LabPage(page, lab).open().open_compute()
    expect(ui.row("from-cli")).to_have_count(0)
    started = time.monotonic()
    done = lab.cli("create", "from-cli", "--kind", "local-kernel", "--no-wait")
    assert done.returncode == 0, done.stderr
    expect(ui.row("from-cli")).to_be_visible(timeout=5_000)
    ui.expect_state("from-cli", "running")
    assert time.monotonic() - started < 90

    done = lab.cli("stop", "from-cli", "--yes")
    assert done.returncode == 0, done.stderr
    ui.expect_state("from-cli", "stopped", timeout=5_000)

    done = lab.cli("delete", "from-cli", "--yes")
    assert done.returncode == 0, done.stderr
    expect(ui.row("from-cli")).to_have_count(0, timeout=5_000)


def test_keyboard_details_and_dark_theme(page, lab, artifacts):
    lab.create_kernel("kb-kernel", idle_shutdown_minutes=30, env={"OMP_NUM_THREADS": "2"})
    try:
        ui = LabPage(page, lab).open()
        # The command's shortcut opens the panel and puts focus in the list.
        page.locator("body").press("Alt+Shift+C")
        expect(ui.panel).to_be_visible()
        expect(ui.row("kb-kernel")).to_be_visible(timeout=10_000)
        page.wait_for_function("() => !!document.activeElement.closest('.jp-ComputeList')")

        # Arrow keys walk the list; the focused row becomes the selection.
        for _ in range(10):
            if page.evaluate("() => document.activeElement.dataset.name") == "kb-kernel":
                break
            page.keyboard.press("ArrowDown")
        assert page.evaluate("() => document.activeElement.dataset.name") == "kb-kernel"
        expect(ui.row("kb-kernel")).to_have_class("jp-ComputeRow jp-mod-selected")
        expect(ui.row("kb-kernel")).to_have_attribute(
            "aria-label", re.compile(r"^kb-kernel, running, 1/1 node, idle stop in (29|30) min$"))
        expect(ui.row("kb-kernel").locator(".jp-mod-idle")).to_have_text(re.compile(r"idle stop in (29|30) min"))

        # Enter opens the details: properties and errors, in plain words.
        page.keyboard.press("Enter")
        details = page.locator(".jp-ComputeDetails:visible")
        expect(details.locator("h1")).to_have_text("kb-kernel")
        expect(details.get_by_role("heading", name="Properties")).to_be_visible()
        expect(details).to_contain_text("kernel_pid")
        # Environment variables are a table, not JSON.
        env = details.locator(".jp-ComputeTable.jp-mod-map").first
        expect(env.locator("th")).to_have_text("OMP_NUM_THREADS")
        expect(env.locator("td")).to_have_text("2")
        # One time format: relative, the exact time on hover.
        created = details.locator("tr", has=page.get_by_role("rowheader", name="Created")).locator("time")
        expect(created).to_have_text(re.compile(r"^(just now|\d+ min ago)$"))
        expect(created).to_have_attribute("title", re.compile(r"\d"))
        expect(details.locator("tr", has=page.get_by_role("rowheader", name="Idle shutdown")).locator("time")) \
            .to_have_text(re.compile(r"^in (29|30) min$"))
        # One kernel is one node: no node table repeats it.
        expect(details.locator(".jp-ComputeTable.jp-mod-nodes")).to_have_count(0)
        page.screenshot(path=str(artifacts / "details.png"))

        # The stop shortcut acts on the selected row, with its confirmation.
        ui.row("kb-kernel").click()
        page.keyboard.press("Alt+Shift+X")
        ui.dialog_button("Stop").click()
        ui.expect_state("kb-kernel", "stopped", timeout=30_000)
        expect(details.locator(".jp-ComputeBadge")).to_have_attribute("data-state", "stopped")

        # JupyterLab's splash screen, shown while the theme changes, may be removed twice by
        # its own timer: core's error, allowed here only.
        page.allow_console_errors(r"^Failed to execute 'removeChild' on 'Node'[\s\S]*/static/lab/jlab_core\.")
        ui.set_theme("JupyterLab Dark")
        try:
            ui.open_compute()
            ui.panel.screenshot(path=str(artifacts / "panel-dark.png"))
            color = page.evaluate(
                "() => getComputedStyle(document.querySelector('#jupyter-compute-panel')).backgroundColor")
            assert color != "rgb(255, 255, 255)"
        finally:
            ui.set_theme("JupyterLab Light")
    finally:
        lab.delete("kb-kernel")


def test_thousand_targets_stay_responsive(page, lab, artifacts):
    """A thousand targets: the first screen comes quickly and only visible rows are in the DOM."""
    from jupyter_compute.core.store import Store

    names = [f"bulk-{i:04d}" for i in range(1000)]
    store = Store(str(lab.db))
    try:
        for name in names:
            store.insert_target("local", name, "local-kernel", True, {}, "stopped")
        time.sleep(1.0)  # let the server pass on the flood of changes before the page loads
        ui = LabPage(page, lab)
        started = time.monotonic()
        ui.open().open_compute()
        expect(ui.row("bulk-0000")).to_be_visible(timeout=30_000)
        first_screen = time.monotonic() - started
        rendered = page.locator(".jp-ComputeRow").count()
        assert rendered < 80, f"{rendered} rows in the DOM: the list is not virtualised"
        expect(page.locator(".jp-ComputeGroup[data-family='Local kernels'] .jp-ComputeGroup-count")).to_have_text(
            "1000")

        # Keyboard to the end of the list.
        ui.row("bulk-0000").focus()
        started = time.monotonic()
        page.keyboard.press("End")
        expect(ui.row("bulk-0999")).to_be_visible(timeout=5_000)
        to_end = time.monotonic() - started
        assert page.locator(".jp-ComputeRow").count() < 80

        # Scrolling by wheel, in steps, keeps rows under the viewport.
        ui.row("bulk-0999").focus()
        page.keyboard.press("Home")
        for _ in range(20):
            page.mouse.wheel(0, 2000)
        expect(page.locator(".jp-ComputeRow").first).to_be_visible()
        ui.panel.screenshot(path=str(artifacts / "panel-1000.png"))
        print(f"first screen {first_screen:.2f}s, to the end {to_end:.2f}s")
        assert to_end < 2.0
    finally:
        for name in names:
            store.delete_target("local", name)
        store.close()


def _count_posts(lab) -> int:
    """The number of targets the server knows: a refused form must not change it."""
    code, body = lab.compute("GET", "workspaces/local/targets")
    assert code == 200
    return len(body["targets"])


def test_settings_turn_confirmation_off_and_collapse_groups(page, lab):
    lab.create_kernel("no-confirm")
    lab.set_setting({"confirmDelete": False, "collapsedGroups": ["This machine"]})
    try:
        ui = LabPage(page, lab).open()
        ui.command("jupyter-compute:open")
        expect(ui.row("no-confirm")).to_be_visible(timeout=30_000)
        # The group starts collapsed, and opens on a click.
        toggle = page.locator(".jp-ComputeGroup[data-family='This machine'] [role='button']")
        expect(toggle).to_have_attribute("aria-expanded", "false")
        expect(ui.row("this-machine")).to_have_count(0)
        toggle.click()
        expect(ui.row("this-machine")).to_be_visible()
        # Delete without a question.
        ui.row_action("no-confirm", "delete").click()
        expect(ui.row("no-confirm")).to_have_count(0, timeout=30_000)
        expect(page.locator(".jp-Dialog")).to_have_count(0)
    finally:
        lab.set_setting({})
        lab.delete("no-confirm")


def test_panel_recovers_after_the_server_restarts(page, lab):
    lab.create_kernel("survivor")
    try:
        ui = LabPage(page, lab).open().open_compute()
        ui.expect_state("survivor", "running", timeout=10_000)
        # While the server is away the browser logs refused connections, and JupyterLab's own
        # status poll may reject: expected here, and only here.
        page.allow_console_errors(r"ERR_CONNECTION_REFUSED|WebSocket connection to .* failed|"
                                  r"status of 50[23]")
        page.allow_console_errors(r"^Failed to fetch\n[\s\S]*/static/lab/jlab_core\.")
        lab.restart()
        # A change made after the restart shows up without a reload.
        done = lab.cli("create", "after-restart", "--kind", "local-kernel", "--no-wait")
        assert done.returncode == 0, done.stderr
        expect(ui.row("after-restart")).to_be_visible(timeout=45_000)
        ui.expect_state("after-restart", "running")
        # The target started before the restart kept running and is shown so.
        ui.expect_state("survivor", "running", timeout=10_000)
        expect(page.locator(".jp-ComputePanel-banner")).to_have_count(0, timeout=30_000)
    finally:
        lab.delete("after-restart")
        lab.delete("survivor")


def test_add_workspace_dialog_checks_fields_before_sending(page, lab):
    ui = LabPage(page, lab).open().open_compute()
    page.locator("#jupyter-compute-panel button[data-command='add-workspace']").click()
    dialog = ui.create_dialog
    expect(dialog).to_contain_text("Add an Azure ML workspace")
    subscription = ui.field_input("subscription_id")
    subscription.fill("not-a-guid")
    subscription.blur()
    expect(ui.field_error("subscription_id")).to_contain_text("Does not match")
    dialog.get_by_role("button", name="Add").click()
    expect(ui.field_error("resource_group")).to_contain_text("required")
    expect(ui.field_error("workspace_name")).to_contain_text("required")
    code, body = lab.compute("GET", "workspaces")
    assert [w["id"] for w in body["workspaces"]] == ["local"], "nothing was sent"
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)


def test_row_actions_are_named_never_cover_the_facts_and_selection_is_not_hover(page, lab):
    lab.create_kernel("row-looks", idle_shutdown_minutes=30)
    lab.create_kernel("row-other")
    try:
        ui = LabPage(page, lab).open().open_compute()
        row, other = ui.row("row-looks"), ui.row("row-other")
        expect(row).to_be_visible(timeout=10_000)
        ui.expect_state("row-looks", "running")
        row.hover()
        actions = row.locator(".jp-ComputeRow-actions")
        expect(actions).to_have_css("opacity", "1")
        # Every icon action says what it does, to the eye (a tooltip) and to a screen reader.
        buttons = actions.locator("button")
        assert buttons.count() >= 3
        for i in range(buttons.count()):
            b = buttons.nth(i)
            assert (b.get_attribute("title") or "").strip() and (b.get_attribute("aria-label") or "").strip(), \
                b.evaluate("e => e.outerHTML")
        # The facts end where the actions begin: nothing is drawn over them.
        facts = row.locator(".jp-ComputeRow-meta").bounding_box()
        box = actions.bounding_box()
        assert facts["x"] + facts["width"] <= box["x"] + 0.5, (facts, box)
        # A hovered row is only grey, and not once the pointer has gone; a selected one is marked.
        hovered = row.evaluate("e => getComputedStyle(e).backgroundColor")
        page.mouse.move(1, 1)
        page.wait_for_function("(e) => !e.matches(':hover')", arg=row.element_handle())
        assert row.evaluate("e => getComputedStyle(e).backgroundColor") != hovered
        other.click()
        expect(other).to_have_class("jp-ComputeRow jp-mod-selected")
        page.mouse.move(1, 1)
        selected = other.evaluate("e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).boxShadow]")
        assert selected[0] != hovered and "inset" in selected[1], (selected, hovered)
        assert row.evaluate("e => getComputedStyle(e).backgroundColor") != selected[0]
    finally:
        lab.delete("row-looks")
        lab.delete("row-other")


def test_a_stopped_row_says_why_it_stopped(page, lab):
    """A target the idle shutdown stopped, and one stopped at someone's asking: only the first
    has a reason to give, and its row gives it."""
    from jupyter_compute.core.store import Store

    store = Store(str(lab.db))
    store.insert_target("local", "idled", "local-kernel", True, {}, "stopped")
    store.update_target("local", "idled", provider_state="idle shutdown")
    store.insert_target("local", "asked", "local-kernel", True, {}, "stopped")
    try:
        ui = LabPage(page, lab).open().open_compute()
        expect(ui.row("idled").locator(".jp-ComputeRow-fact").first).to_have_text("stopped: idle shutdown")
        expect(ui.row("idled")).to_have_attribute("aria-label", re.compile(r"^idled, stopped, stopped: idle shutdown"))
        expect(ui.row("asked")).to_be_visible()
        expect(ui.row("asked").locator(".jp-ComputeRow-fact", has_text="stopped:")).to_have_count(0)
    finally:
        store.delete_target("local", "idled")
        store.delete_target("local", "asked")


def test_a_stopped_target_is_renamed_from_its_details(page, lab):
    lab.create_kernel("rn-old")
    lab.stop_target("rn-old")
    try:
        ui = LabPage(page, lab).open().open_compute()
        ui.row_action("rn-old", "details").click()
        details = page.locator(".jp-ComputeDetails:visible")
        expect(details.locator("h1")).to_have_text("rn-old")
        details.get_by_role("button", name="Rename rn-old").click()
        dialog = page.locator(".jp-Dialog")
        field = dialog.locator("input")
        expect(field).to_have_value("rn-old")
        field.fill("rn-new")
        ui.dialog_button("Rename").click()
        expect(ui.row("rn-new")).to_be_visible(timeout=10_000)
        expect(ui.row("rn-old")).to_have_count(0)
        expect(page.locator(".jp-ComputeDetails:visible h1")).to_have_text("rn-new")
        # Its kernel follows the name.
        code, specs = lab.request("GET", "api/kernelspecs")
        assert code == 200 and "compute-rn-new" in specs["kernelspecs"] and "compute-rn-old" not in specs["kernelspecs"]
    finally:
        lab.delete("rn-new")
        lab.delete("rn-old")
