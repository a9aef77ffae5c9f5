"""The notebook toolbar's target picker, for real: a target that hosts kernels gets the notebook's
kernel, shown alike by the picker and JupyterLab's kernel name, remembered, and started first when
it is stopped."""
from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import copy_for_readme
from .pages import LabPage

pytestmark = pytest.mark.browser

#: What the kernel running the cell is: the target's mark in its environment, its pid, its Python.
WHO_CELL = "import os, sys\nprint(os.environ.get('NB_TARGET_MARK'), os.getpid(), sys.executable)"


def _who(ui: LabPage, cell: int = 0) -> tuple[str, int, str]:
    output = ui.output_of(cell)
    expect(output).to_have_text(re.compile(r"^\s*\S+ \d+ \S+\s*$"), timeout=60_000)
    mark, pid, python = output.inner_text().split()
    return mark, int(pid), python


def _run_again(ui: LabPage, before: str) -> tuple[str, int, str]:
    """Run the notebook and read what the new run printed (not the output it replaces)."""
    ui.run_all()
    expect(ui.output_of(0)).not_to_have_text(re.compile(rf"(^|\s){re.escape(before)}(\s|$)"), timeout=60_000)
    return _who(ui)


@pytest.fixture
def kernels(lab):
    """The notebooks' kernels a test started are shut down after it."""
    yield
    lab.shutdown_kernels()


def test_picker_moves_the_notebook_to_a_target_kernel_remembers_and_starts_a_stopped_target(
        page, lab, artifacts, kernels):
    target = lab.create_kernel("nb-target", env={"NB_TARGET_MARK": "on-target"})
    target_pid = target["properties"]["kernel_pid"]
    target_python = os.path.realpath(target["properties"]["python"])
    ui = LabPage(page, lab).open().open_compute()
    label = ui.kernelspecs()["compute-nb-target"]["spec"]["display_name"]
    ui.write_notebook("picker.ipynb", [WHO_CELL])
    ui.open_notebook("picker.ipynb")
    # JupyterLab's debugger, and its comms' subshells (ipykernel 7), leave requests unanswered
    # when a kernel is replaced right after it started, and say so: not ours.
    page.allow_console_errors(r"^Could not restore the debugger state")
    page.allow_console_errors(r"Canceled future for create_subshell_request")

    # Local by default: the cell runs in the notebook's own kernel.
    expect(ui.picker).to_have_value("local")
    local_label = ui.kernel_indicator.inner_text()
    ui.run_all()
    mark, own_pid, _ = _who(ui)
    assert mark == "None" and own_pid != target_pid
    expect(ui.picker.locator("option[value='nb-target']")).to_have_attribute(
        "title", "the notebook's kernel runs there")

    # Choosing the target gives the notebook a kernel of its own there: the target's interpreter
    # and environment. The picker and JupyterLab's kernel name say the same.
    ui.picker.select_option("nb-target")
    expect(ui.picker).to_have_value("nb-target", timeout=30_000)
    expect(ui.picker).to_be_enabled(timeout=60_000)
    ui.wait_kernel_idle()
    assert ui.kernel_name() == "compute-nb-target"
    expect(ui.kernel_indicator).to_have_text(label)
    mark, pid, python = _run_again(ui, str(own_pid))
    assert mark == "on-target"
    assert pid not in (own_pid, target_pid)
    assert os.path.realpath(python) == target_python
    # Nothing of the change itself shows in the notebook.
    assert page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").count() == 1
    shot = artifacts / "notebook-picker.png"
    page.screenshot(path=str(shot))
    copy_for_readme(shot, "jupyter-compute.png")

    # The choice is kept in the notebook's metadata, and its kernelspec names the target too.
    ui.save()
    expect(page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-mod-dirty")).to_have_count(0)
    meta = ui.read_notebook("picker.ipynb")["metadata"]
    assert meta["jupyter_compute"] == {"target": "nb-target", "workspace": "local"}
    assert meta["kernelspec"]["name"] == "compute-nb-target"

    # Reloading the page finds the notebook on the target's kernel, and shows it.
    page.reload()
    ui.wait_restored()
    ui.wait_kernel_idle()
    expect(ui.picker).to_have_value("nb-target", timeout=30_000)
    expect(ui.kernel_indicator).to_have_text(label)

    # A restart is a new kernel on the same target: nothing to offer back.
    ui.restart_kernel()
    expect(ui.picker).to_have_value("nb-target", timeout=30_000)
    ui.wait_kernel_idle()
    expect(ui.picker).to_have_value("nb-target")
    expect(ui.kernel_indicator).to_have_text(label)
    mark, restarted_pid, _ = _run_again(ui, str(pid))
    assert mark == "on-target" and restarted_pid != pid
    expect(page.locator(".Toastify").get_by_role("button", name="Use nb-target")).to_have_count(0)

    # Back to local: the notebook's ordinary kernel again, and the metadata forgets the target.
    ui.picker.select_option("local")
    expect(ui.picker).to_have_value("local", timeout=30_000)
    expect(ui.picker).to_be_enabled(timeout=60_000)
    ui.wait_kernel_idle()
    assert ui.kernel_name() == "python3"
    expect(ui.kernel_indicator).to_have_text(local_label)
    mark, _, _ = _run_again(ui, str(restarted_pid))
    assert mark == "None"
    ui.save()
    expect(page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-mod-dirty")).to_have_count(0)
    assert "jupyter_compute" not in ui.read_notebook("picker.ipynb")["metadata"]

    # A stopped target: the picker asks, and the notebook's kernel starts it first, which the
    # picker says while it happens.
    code, body = lab.compute("POST", "workspaces/local/targets/nb-target/stop")
    assert code == 202, body
    lab.wait_state("nb-target", "stopped")
    expect(ui.picker.locator("option[value='nb-target']")).to_have_text("nb-target (stopped)", timeout=10_000)
    ui.record_picker_status()
    ui.picker.select_option("nb-target")
    ui.dialog_button("Start").click()
    expect(ui.picker).to_have_value("nb-target", timeout=90_000)
    expect(ui.picker).to_be_enabled(timeout=90_000)
    ui.wait_kernel_idle()
    assert "starting 'nb-target'…" in ui.picker_status_seen(), ui.picker_status_seen()
    assert lab.target("nb-target")["state"] == "running"
    assert ui.kernel_name() == "compute-nb-target"
    mark, _, _ = _run_again(ui, "None")
    assert mark == "on-target"

    # A notebook whose metadata names the target is offered it back, on the target's kernel.
    ui.write_notebook("restore.ipynb", [WHO_CELL],
                      metadata={"jupyter_compute": {"target": "nb-target", "workspace": "local"}})
    ui.open_notebook("restore.ipynb")
    expect(ui.picker).to_have_value("local")
    restore = page.locator(".Toastify").get_by_role("button", name="Use nb-target")
    expect(restore).to_be_visible(timeout=30_000)
    page.screenshot(path=str(artifacts / "notebook-restore-offer.png"))
    restore.click()
    expect(ui.picker).to_have_value("nb-target", timeout=30_000)
    expect(ui.picker).to_be_enabled(timeout=60_000)
    ui.wait_kernel_idle()
    assert ui.kernel_name() == "compute-nb-target"
    ui.run_all()
    mark, _, _ = _who(ui)
    assert mark == "on-target"

    lab.shutdown_kernels()
    lab.delete("nb-target")


def test_panel_shows_targets_in_every_state(page, lab, artifacts):
    lab.create_kernel("analysis", idle_shutdown_minutes=45)
    lab.create_kernel("big-mem", memory_limit_mb=8192)
    lab.create_kernel("etl-nightly")
    lab.stop_target("etl-nightly")
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


def test_a_cell_on_a_dask_cluster_says_it_runs_afresh_and_its_error_reads_like_ipythons(
        page, lab, artifacts, kernels):
    """Cells sent to a Dask cluster, in JupyterLab: the first says once that each cell runs as a new
    task; a name from an earlier cell fails with a traceback laid out as IPython's own (this cell's
    number, the arrow on its line) and how to send the name."""
    code, body = lab.compute("POST", "workspaces/local/targets", {"name": "nb-dask", "kind": "dask-cluster",
                                                                  "min_nodes": 1, "max_nodes": 1})
    assert code == 202, body
    lab.wait_state("nb-dask", "running")
    try:
        ui = LabPage(page, lab).open()
        ui.write_notebook("afresh.ipynb", ["%load_ext jupyter_compute", "x = 21",
                                           "%%compute nb-dask\nprint('on the cluster')",
                                           "%%compute nb-dask\nprint(x * 2)"])
        ui.open_notebook("afresh.ipynb")
        ui.run_all()
        first, second = ui.output_of(2), ui.output_of(3)
        expect(first.filter(has_text="on the cluster")).to_have_count(1, timeout=120_000)
        expect(first.filter(has_text="jupyter_compute: each cell on 'nb-dask' runs as a new Dask task; "
                                     "variables move with --push and --pull")).to_have_count(1)
        error = second.filter(has_text="NameError")
        expect(error).to_have_count(1, timeout=60_000)
        text = error.inner_text()
        assert "NameError                                 Traceback (most recent call last)" in text, text
        assert "Cell In[4], line 1\n----> 1 print(x * 2)" in text, text
        assert "NameError: name 'x' is not defined" in text and "send 'x' from this notebook with --push x" in text
        expect(second.filter(has_text="runs as a new Dask task")).to_have_count(0)  # said once
        # IPython's colours reach the page: the arrow is painted as IPython paints it.
        expect(error.locator("span", has_text="----> 1")).not_to_have_count(0)
        ui.cell(3).screenshot(path=str(artifacts / "remote-traceback.png"))
        copy_for_readme(artifacts / "remote-traceback.png", "remote-traceback.png")
    finally:
        lab.delete("nb-dask")
