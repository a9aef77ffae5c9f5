"""The notebook toolbar's target picker: routing a notebook's cells to a target, for real."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import copy_for_readme
from .pages import LabPage

pytestmark = pytest.mark.browser

PID_CELL = "import os\nprint(os.getpid())"


def _printed_pid(ui: LabPage, cell: int = 0) -> int:
    output = ui.output_of(cell)
    expect(output).to_have_text(re.compile(r"^\s*\d+\s*$"), timeout=60_000)
    return int(output.inner_text().strip())


@pytest.fixture
def kernels(lab):
    """The notebooks' kernels a test started are shut down after it."""
    yield
    lab.shutdown_kernels()


def test_picker_routes_cells_remembers_and_starts_a_stopped_target(page, lab, artifacts, kernels):
    target = lab.create_kernel("nb-target")
    target_pid = target["properties"]["kernel_pid"]
    ui = LabPage(page, lab).open().open_compute()
    ui.write_notebook("picker.ipynb", [PID_CELL])
    ui.open_notebook("picker.ipynb")

    # Local by default: the cell runs in the notebook's own kernel.
    expect(ui.picker).to_have_value("local")
    ui.run_all()
    own_pid = _printed_pid(ui)
    assert own_pid != target_pid

    # Choosing the target loads the magics silently and routes the cells there.
    ui.picker.select_option("nb-target")
    expect(ui.picker).to_have_value("nb-target", timeout=30_000)
    expect(ui.picker).to_be_enabled(timeout=30_000)
    ui.run_all()
    expect(ui.output_of(0)).to_have_text(str(target_pid), timeout=60_000)
    # Nothing of the routing itself shows in the notebook.
    assert page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").count() == 1
    shot = artifacts / "notebook-picker.png"
    page.screenshot(path=str(shot))
    copy_for_readme(shot, "jupyter-compute.png")

    # The choice is kept in the notebook's metadata.
    ui.save()
    expect(page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-mod-dirty")).to_have_count(0)
    meta = ui.read_notebook("picker.ipynb")["metadata"]["jupyter_compute"]
    assert meta == {"target": "nb-target", "workspace": "local"}

    # Reloading the page finds the kernel still routing there, and shows it.
    page.reload()
    ui.wait_restored()
    ui.wait_kernel_idle()
    expect(ui.picker).to_have_value("nb-target", timeout=30_000)

    # A new kernel runs its cells itself; the picker offers the notebook's target back.
    # (JupyterLab's debugger logs that a restart cancelled its state request: not ours.)
    page.allow_console_errors(r"^Could not restore the debugger state")
    ui.restart_kernel()
    expect(ui.picker).to_have_value("local", timeout=30_000)
    ui.wait_kernel_idle()
    restore = page.locator(".Toastify").get_by_role("button", name="Use nb-target")
    expect(restore).to_be_visible(timeout=30_000)
    page.screenshot(path=str(artifacts / "notebook-restore-offer.png"))
    restore.click()
    expect(ui.picker).to_have_value("nb-target", timeout=30_000)
    ui.run_all()
    expect(ui.output_of(0)).to_have_text(str(target_pid), timeout=60_000)

    # Back to local.
    ui.picker.select_option("local")
    expect(ui.picker).to_have_value("local", timeout=30_000)
    ui.run_all()
    expect(ui.output_of(0)).not_to_have_text(str(target_pid), timeout=60_000)
    assert _printed_pid(ui) != target_pid

    # A stopped target: the picker offers to start it, then routes there.
    code, body = lab.compute("POST", "workspaces/local/targets/nb-target/stop")
    assert code == 202, body
    lab.wait_state("nb-target", "stopped")
    expect(ui.picker.locator("option[value='nb-target']")).to_have_text("nb-target (stopped)", timeout=10_000)
    ui.picker.select_option("nb-target")
    ui.dialog_button("Start").click()
    expect(ui.picker).to_have_value("nb-target", timeout=90_000)
    restarted = lab.target("nb-target")
    assert restarted["state"] == "running"
    ui.run_all()
    expect(ui.output_of(0)).to_have_text(str(restarted["properties"]["kernel_pid"]), timeout=60_000)

    lab.delete("nb-target")


def test_panel_shows_targets_in_every_state(page, lab, artifacts):
    lab.create_kernel("analysis", idle_shutdown_minutes=45)
    lab.create_kernel("big-mem", memory_limit_mb=8192)
    lab.create_kernel("etl-nightly")
    code, body = lab.compute("POST", "workspaces/local/targets/etl-nightly/stop")
    assert code == 202, body
    lab.wait_state("etl-nightly", "stopped")
    try:
        ui = LabPage(page, lab).open().open_compute()
        ui.expect_state("analysis", "running", timeout=10_000)
        ui.expect_state("etl-nightly", "stopped", timeout=10_000)
        expect(ui.row("analysis").locator(".jp-mod-idle")).to_have_text(re.compile(r"idle stop in (44|45) min"))
        expect(ui.row("big-mem").locator(".jp-ComputeRow-meta")).to_contain_text("8 GB")
        # Green for running, grey for stopped (Azure ML Studio's colours, from the theme).
        running = page.evaluate("""() => getComputedStyle(document.querySelector(
            ".jp-ComputeRow[data-name='analysis'] .jp-ComputeBadge")).borderTopColor""")
        stopped = page.evaluate("""() => getComputedStyle(document.querySelector(
            ".jp-ComputeRow[data-name='etl-nightly'] .jp-ComputeBadge")).borderTopColor""")
        assert running != stopped
        ui.row("analysis").click()
        ui.panel.screenshot(path=str(artifacts / "panel.png"))
    finally:
        for name in ("analysis", "big-mem", "etl-nightly"):
            lab.delete(name)
