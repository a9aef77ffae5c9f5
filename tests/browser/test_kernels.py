"""Targets as Jupyter kernels in real JupyterLab and Chromium: their kernels in the Launcher's Compute
section and in JupyterLab's kernel picker, kept in step with the targets without a reload; notebooks
on a target's kernel (its environment, completion, widgets, a restart); and the toolbar picker
following every way the route of an ordinary notebook changes."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import copy_for_readme, wait_until
from .pages import LabPage

pytestmark = pytest.mark.browser

#: How soon JupyterLab's lists follow a target that was created or deleted.
SPECS_FOLLOW_MS = 2_000
#: How soon the toolbar shows a route changed in the notebook.
ROUTE_FOLLOW_MS = 1_000


@pytest.fixture
def kernels(lab):
    """The notebooks' kernels a test started are shut down after it."""
    yield
    lab.shutdown_kernels()


def _display_name(ui: LabPage, target: str) -> str:
    spec = wait_until(lambda: ui.kernelspecs().get(f"compute-{target}"), timeout=30,
                      message=f"the kernelspec of {target}")
    return spec["spec"]["display_name"]


def _allow_replaced_kernel_notes(page) -> None:
    """JupyterLab's debugger, and its comms' subshells (ipykernel 7), leave requests unanswered
    when a kernel is replaced, restarted or shut down right after it started, and say so: not ours."""
    page.allow_console_errors(r"^Could not restore the debugger state")
    page.allow_console_errors(r"Canceled future for create_subshell_request")


def _complete_in(ui: LabPage, index: int):
    """Press Tab at the end of cell ``index`` until the completer shows; the completer."""
    ui.cell(index).locator(".cm-content").click()
    ui.page.keyboard.press("End")
    completer = ui.page.locator(".jp-Completer")

    def completes() -> bool:
        # A fresh kernel's first completion (jedi loading) may outlast JupyterLab's wait for
        # it, as a person would find: Tab again then shows it.
        ui.page.keyboard.press("Tab")
        try:
            expect(completer).to_be_visible(timeout=5_000)
            return True
        except AssertionError:
            return False

    wait_until(completes, timeout=60, interval=0.5, message="the completer to show the kernel's names")
    return completer


def _close_current(ui: LabPage) -> None:
    """Shut down the current notebook's kernel and close it, as File > Close and Shut Down does."""
    ui.page.evaluate("""async () => {
        const w = window.jupyterapp.shell.currentWidget;
        await w.sessionContext.shutdown();
        w.dispose();
    }""")


def test_target_kernel_in_launcher_and_kernel_picker_follows_the_target(page, lab, artifacts, kernels):
    _allow_replaced_kernel_notes(page)
    ui = LabPage(page, lab).open()
    ui.open_launcher()
    expect(ui.launcher_section("Notebook")).to_be_visible()
    expect(ui.launcher_section("Compute")).to_have_count(0)

    # A new target's kernel shows in the Launcher's Compute section, without a reload.
    done = lab.cli("create", "k-launch", "--kind", "local-kernel", "--env", "GREETING=hello")
    assert done.returncode == 0, done.stderr
    label = _display_name(ui, "k-launch")
    assert "k-launch" in label and "local kernel" in label
    tile = ui.launcher_card("Compute", label)
    expect(tile).to_be_visible(timeout=SPECS_FOLLOW_MS)
    # JupyterLab lists it under Notebook too, as it lists every kernelspec.
    expect(ui.launcher_card("Notebook", label)).to_be_visible()
    expect(tile).to_have_attribute("title", "Create a notebook whose kernel runs on 'k-launch'")
    shot = artifacts / "launcher-compute.png"
    page.screenshot(path=str(shot))
    copy_for_readme(shot, "launcher-compute.png")

    # The tile creates a notebook whose kernel runs on the target.
    tile.click()
    ui.wait_kernel_idle(timeout=90_000)
    assert ui.kernel_name() == "compute-k-launch"
    expect(ui.picker).to_have_value("k-launch", timeout=10_000)
    expect(ui.kernel_indicator).to_have_text(label)

    _close_current(ui)

    # JupyterLab's kernel picker offers it to any notebook.
    ui.write_notebook("plain.ipynb", ["1 + 1"])
    ui.open_notebook("plain.ipynb")
    dialog = ui.open_kernel_dialog()
    choices = dialog.locator("select")
    expect(choices.locator("option", has_text=label)).to_have_count(1)
    # Shown as an open list, which a screenshot cannot catch of a native drop-down.
    choices.evaluate("""s => {
        s.size = s.options.length + s.querySelectorAll('optgroup').length;
        for (let e = s; e && !e.classList.contains('jp-Dialog-body'); e = e.parentElement) {
            e.style.height = 'auto';
            e.style.maxHeight = 'none';
        }
        s.style.backgroundImage = 'none';
    }""")
    choices.select_option(label=label)
    shot = artifacts / "kernel-picker.png"
    dialog.locator(".jp-Dialog-content").screenshot(path=str(shot))
    copy_for_readme(shot, "kernel-picker.png")
    ui.dialog_button("Cancel").click()
    expect(dialog).to_be_hidden()
    assert ui.kernel_name() == "python3"

    # Renaming the (stopped) target renames its kernel in the Launcher, without a reload.
    ui.open_launcher()
    expect(ui.launcher_card("Compute", label)).to_be_visible()
    for step in (("stop", "k-launch", "--yes"), ("rename", "k-launch", "k-renamed")):
        done = lab.cli(*step)
        assert done.returncode == 0, done.stderr
    old_label, label = label, label.replace("k-launch", "k-renamed")
    expect(ui.launcher_card("Compute", label)).to_be_visible(timeout=SPECS_FOLLOW_MS)
    expect(ui.launcher_card("Compute", old_label)).to_have_count(0)
    assert "compute-k-renamed" in ui.kernelspecs() and "compute-k-launch" not in ui.kernelspecs()

    # Deleting the target takes its kernel out of both, without a reload.
    done = lab.cli("delete", "k-renamed", "--yes")
    assert done.returncode == 0, done.stderr
    expect(ui.launcher_section("Compute")).to_have_count(0, timeout=SPECS_FOLLOW_MS)
    expect(ui.launcher_card("Notebook", label)).to_have_count(0)
    ui.command("docmanager:open", {"path": "plain.ipynb"})
    dialog = ui.open_kernel_dialog()
    expect(dialog.locator("select option").first).to_be_attached()
    expect(dialog.locator("select option", has_text=label)).to_have_count(0)
    ui.dialog_button("Cancel").click()


def test_notebook_on_a_target_kernel(page, lab, artifacts, kernels):
    done = lab.cli("create", "k-env", "--kind", "local-kernel", "--env", "GREETING=hello")
    assert done.returncode == 0, done.stderr
    done = lab.cli("stop", "k-env", "--yes")
    assert done.returncode == 0, done.stderr
    lab.wait_state("k-env", "stopped")
    ui = LabPage(page, lab).open()
    label = _display_name(ui, "k-env")
    ui.write_notebook("on-target.ipynb", [
        "import os\nprint(os.environ.get('GREETING'), os.getpid())",
        "alpha_one = 1\nalpha_two = 2",
        "alpha_",
        "import ipywidgets as widgets\nslider = widgets.IntSlider(value=3, min=0, max=10)\nslider",
        "print('slider', slider.value)",
    ], kernel="compute-k-env")
    # Opening the notebook starts its kernel, which starts the stopped target first; the picker
    # says so meanwhile.
    ui.record_picker_status()
    ui.command("docmanager:open", {"path": "on-target.ipynb"})
    ui.wait_kernel_idle(timeout=90_000)
    assert "starting 'k-env'…" in ui.picker_status_seen(), ui.picker_status_seen()
    expect(ui.picker_status).to_have_count(0)
    target_pid = lab.wait_state("k-env", "running")["properties"]["kernel_pid"]
    assert ui.kernel_name() == "compute-k-env"
    expect(ui.picker).to_have_value("k-env", timeout=10_000)
    expect(ui.kernel_indicator).to_have_text(label)

    # The kernel runs with the target's environment, as a kernel of its own.
    ui.run_cell(0)
    expect(ui.output_of(0)).to_have_text(re.compile(r"^\s*hello \d+\s*$"), timeout=60_000)
    pid = int(ui.output_of(0).inner_text().split()[1])
    assert pid != target_pid

    # Tab completes from the kernel's namespace.
    ui.run_cell(1)
    expect(ui.cell(1).locator(".jp-InputPrompt")).to_have_text(re.compile(r"\[\d+\]"), timeout=30_000)
    completer = _complete_in(ui, 2)
    expect(completer).to_contain_text("alpha_one")
    expect(completer).to_contain_text("alpha_two")
    page.screenshot(path=str(artifacts / "target-kernel-completer.png"))
    page.keyboard.press("Escape")
    page.keyboard.press("Escape")

    # A widget renders, and moving it reaches the kernel.
    ui.run_cell(3)
    slider = ui.output_of(3).locator(".widget-slider")
    expect(slider).to_be_visible(timeout=30_000)
    handle = slider.locator(".noUi-handle")
    handle.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(slider.locator(".widget-readout")).to_have_text("5")

    # The widget sends its latest value once the kernel is done with the one before.
    def kernel_has_it() -> bool:
        ui.run_cell(4)
        expect(ui.output_of(4)).to_have_text(re.compile(r"^\s*slider \d+\s*$"), timeout=30_000)
        return ui.output_of(4).inner_text().strip() == "slider 5"

    wait_until(kernel_has_it, timeout=30, interval=0.5, message="the kernel to have the slider's value")
    page.screenshot(path=str(artifacts / "target-kernel-widget.png"))

    # A restart is a new kernel on the same target: the toolbar keeps showing it.
    _allow_replaced_kernel_notes(page)
    ui.restart_kernel()
    expect(ui.picker).to_have_value("k-env")
    ui.wait_kernel_idle()
    expect(ui.picker).to_have_value("k-env")
    expect(ui.kernel_indicator).to_have_text(label)
    ui.run_cell(0)
    expect(ui.output_of(0)).not_to_have_text(re.compile(rf"\b{pid}\b"), timeout=60_000)
    expect(ui.output_of(0)).to_have_text(re.compile(r"^\s*hello \d+\s*$"), timeout=60_000)
    expect(page.locator(".Toastify").get_by_role("button", name="Use k-env")).to_have_count(0)

    _close_current(ui)
    lab.delete("k-env")


def test_route_changes_made_in_the_notebook_show_in_the_toolbar(page, lab, kernels):
    target = lab.create_kernel("k-route")
    target_pid = target["properties"]["kernel_pid"]
    ui = LabPage(page, lab).open()
    ui.write_notebook("routes.ipynb", [
        "%load_ext jupyter_compute\n%compute use k-route",
        "import os\nprint(os.getpid())",
        "%compute use local",
        "from jupyter_compute.notebook.widgets import TargetPicker\nTargetPicker()",
    ])
    ui.open_notebook("routes.ipynb")
    expect(ui.picker).to_have_value("local")

    # `%compute use` typed in a cell routes the ordinary kernel's cells, as it always did; the
    # toolbar follows at once.
    ui.run_cell(0)
    expect(ui.output_of(0)).to_contain_text("Cells now run on 'k-route'", timeout=60_000)
    expect(ui.picker).to_have_value("k-route", timeout=ROUTE_FOLLOW_MS)
    assert ui.kernel_name() == "python3"
    ui.run_cell(1)
    expect(ui.output_of(1)).to_have_text(str(target_pid), timeout=60_000)
    ui.run_cell(2)
    expect(ui.output_of(2)).to_contain_text("Cells run in this notebook's kernel again", timeout=30_000)
    expect(ui.picker).to_have_value("local", timeout=ROUTE_FOLLOW_MS)

    # So does the TargetPicker widget.
    ui.run_cell(3)
    widget = ui.output_of(3).locator("select")

    def choose_in_widget(name: str) -> None:
        # The widget's options read "NAME · kind · state", with no-break spaces.
        option = widget.locator("option", has_text=re.compile(rf"^{re.escape(name)}\s·"))
        expect(option).to_be_attached(timeout=30_000)
        widget.select_option(value=option.get_attribute("value"))

    choose_in_widget("k-route")
    expect(ui.picker).to_have_value("k-route", timeout=ROUTE_FOLLOW_MS)
    choose_in_widget("local")
    expect(ui.picker).to_have_value("local", timeout=ROUTE_FOLLOW_MS)

    # A kernel restart ends the route: the toolbar says so.
    choose_in_widget("k-route")
    expect(ui.picker).to_have_value("k-route", timeout=ROUTE_FOLLOW_MS)
    _allow_replaced_kernel_notes(page)
    ui.restart_kernel()
    expect(ui.picker).to_have_value("local", timeout=ROUTE_FOLLOW_MS)
    ui.wait_kernel_idle()

    _close_current(ui)
    lab.delete("k-route")


def test_a_cluster_is_reached_through_the_ordinary_kernel(page, lab, kernels):
    code, body = lab.compute("POST", "workspaces/local/targets", {
        "name": "tasks", "kind": "dask-cluster", "min_nodes": 1, "max_nodes": 1,
        "threads_per_node": 1, "memory_limit_mb": 512})
    assert code == 202, body
    lab.create_kernel("k-first")
    lab.wait_state("tasks", "running", timeout=180)
    ui = LabPage(page, lab).open()
    _display_name(ui, "k-first")
    ui.write_notebook("cluster.ipynb", ["import os\nprint(os.getpid())"], kernel="compute-k-first")
    ui.open_notebook("cluster.ipynb")
    expect(ui.picker).to_have_value("k-first", timeout=10_000)
    _allow_replaced_kernel_notes(page)

    # The picker says how cells reach each target.
    expect(ui.picker.locator("option[value='tasks']")).to_have_attribute(
        "title", "each cell runs as a new task", timeout=10_000)
    expect(ui.picker.locator("option[value='k-first']")).to_have_attribute(
        "title", "the notebook's kernel runs there")

    # From a target's kernel, a cluster is reached through the notebook's ordinary kernel again.
    ui.picker.select_option("tasks")
    expect(ui.picker).to_have_value("tasks", timeout=60_000)
    expect(ui.picker).to_be_enabled(timeout=60_000)
    assert ui.kernel_name() == "python3"
    expect(page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-ComputePicker-body")).to_have_attribute(
        "title", re.compile("each cell runs as a new task"))
    ui.run_cell(0)
    # The cell's output, after the one line saying each cell there runs afresh.
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(0)
    expect(cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']")).to_have_text(
        re.compile(r"^\s*\d+\s*$"), timeout=120_000)
    expect(cell.locator(".jp-OutputArea-output[data-mime-type='text/plain']")).to_have_text(
        "jupyter_compute: each cell on 'tasks' runs as a new Dask task; variables move with --push and --pull")
    ui.save()
    expect(page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-mod-dirty")).to_have_count(0)
    assert ui.read_notebook("cluster.ipynb")["metadata"]["jupyter_compute"] == {"target": "tasks", "workspace": "local"}

    # And back to the target's kernel, then local.
    ui.picker.select_option("k-first")
    expect(ui.picker).to_have_value("k-first", timeout=60_000)
    expect(ui.picker).to_be_enabled(timeout=60_000)
    assert ui.kernel_name() == "compute-k-first"
    ui.picker.select_option("local")
    expect(ui.picker).to_have_value("local", timeout=60_000)
    expect(ui.picker).to_be_enabled(timeout=60_000)
    assert ui.kernel_name() == "python3"

    _close_current(ui)
    lab.delete("k-first")
    lab.delete("tasks", timeout=120)


def test_a_jupyter_servers_kernels_in_the_launcher_run_a_notebook_there(page, lab, tmp_path, kernels):
    """An attached Jupyter server offers each of its kernelspecs here; a notebook made from the
    Launcher runs in a kernel of that server, and completes from that kernel's names."""
    from tests.families.jupyter_server.test_remote_jupyter import JupyterServer

    (tmp_path / "remote").mkdir()
    server = JupyterServer(tmp_path / "remote").start()
    try:
        code, body = lab.compute("POST", "workspaces/local/targets",
                                 {"name": "remote", "kind": "jupyter", "url": server.url, "token": server.token})
        assert code == 202, body
        ui = LabPage(page, lab).open()
        label = wait_until(lambda: (ui.kernelspecs().get("compute-remote-python3") or {}).get("spec"), timeout=30,
                           message="the remote server's kernelspec")["display_name"]
        assert label == "Python 3 (ipykernel) · remote (Jupyter server)"
        ui.open_launcher()
        tile = ui.launcher_card("Compute", label)
        expect(tile).to_be_visible(timeout=SPECS_FOLLOW_MS)
        # The token is the server's secret: no kernelspec the browser can read carries it.
        assert server.token not in str(ui.kernelspecs())

        # A notebook on that kernel (as the tile makes one) runs in the remote server's kernel.
        ui.write_notebook("on-remote.ipynb", ["import os\nbeta_remote = beta_there = 2\nprint(os.getppid())", "beta_"],
                          kernel="compute-remote-python3")
        ui.command("docmanager:open", {"path": "on-remote.ipynb"})
        ui.wait_kernel_idle(timeout=90_000)
        assert ui.kernel_name() == "compute-remote-python3"
        expect(ui.kernel_indicator).to_have_text(label)
        remote_pids = {p.pid for p in server.processes()}
        ui.run_cell(0)
        expect(ui.output_of(0)).to_have_text(re.compile(r"^\s*\d+\s*$"), timeout=60_000)
        assert int(ui.output_of(0).inner_text()) in remote_pids  # the kernel is the remote server's child

        # Two names, so the completer shows them (JupyterLab inserts a single match without showing it).
        completer = _complete_in(ui, 1)
        expect(completer).to_contain_text("beta_remote")
        expect(completer).to_contain_text("beta_there")
        page.keyboard.press("Escape")
        _close_current(ui)
        lab.delete("remote")
    finally:
        server.stop()
        server.cleanup()
