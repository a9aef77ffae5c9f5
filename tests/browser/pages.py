"""What the browser tests do on JupyterLab's page, named the way a user would say it."""
from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import LabServer

PICKER = "select[aria-label='Compute target for this notebook']"

_workspaces = 0


class LabPage:
    def __init__(self, page: Page, lab: LabServer):
        self.page = page
        self.lab = lab

    # -- JupyterLab ---------------------------------------------------------------------------------
    def open(self, workspace: str | None = None) -> "LabPage":
        """Open JupyterLab in a workspace of its own, so no test sees another's layout."""
        global _workspaces
        if workspace is None:
            _workspaces += 1
            workspace = f"test-{_workspaces}"
        self.page.goto(f"{self.lab.url}/lab/workspaces/{workspace}?token={self.lab.token}")
        self.wait_restored()
        self.page.wait_for_selector("#jupyter-compute-panel", state="attached", timeout=60_000)
        return self

    def wait_restored(self) -> None:
        """Wait until JupyterLab has started and restored its layout."""
        self.page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started", timeout=60_000)
        self.page.evaluate("async () => { await window.jupyterapp.restored; }")

    def command(self, command: str, args: dict | None = None, wait: bool = True) -> None:
        """Run a JupyterLab command (its result stays in the page). A command that asks
        something in a dialog is not waited for: it ends only once the dialog is answered."""
        script = ("async ([id, args]) => { await window.jupyterapp.commands.execute(id, args); }" if wait
                  else "([id, args]) => { void window.jupyterapp.commands.execute(id, args); }")
        self.page.evaluate(script, [command, args or {}])

    def set_theme(self, theme: str) -> None:
        self.command("apputils:change-theme", {"theme": theme})
        self.page.wait_for_function("(t) => document.body.dataset.jpThemeName === t", arg=theme)

    # -- the Compute panel ------------------------------------------------------------------------
    @property
    def panel(self) -> Locator:
        return self.page.locator("#jupyter-compute-panel")

    def open_compute(self) -> "LabPage":
        # The command shows the panel whatever the restored layout; a click on its tab would
        # hide a panel that is already shown.
        self.command("jupyter-compute:open")
        expect(self.panel).to_be_visible()
        expect(self.row("this-machine")).to_be_visible(timeout=30_000)
        return self

    def row(self, name: str) -> Locator:
        return self.page.locator(f".jp-ComputeRow[data-name='{name}']")

    def badge(self, name: str) -> Locator:
        return self.row(name).locator(".jp-ComputeBadge")

    def expect_state(self, name: str, state: str, timeout: float = 90_000) -> None:
        expect(self.badge(name)).to_have_attribute("data-state", state, timeout=timeout)

    def row_action(self, name: str, action: str) -> Locator:
        return self.row(name).locator(f"button[data-action='{action}']")

    def dialog_button(self, label: str) -> Locator:
        return self.page.locator(".jp-Dialog").get_by_role("button", name=re.compile(f"^{re.escape(label)}"))

    # -- on an Azure ML compute instance ----------------------------------------------------------
    @property
    def instance_card(self) -> Locator:
        """"This instance", pinned at the top of the panel."""
        return self.panel.locator(".jp-ComputeInstance")

    def open_compute_on_instance(self, name: str) -> "LabPage":
        """Show the panel, and wait for the pinned instance and its row in the instance's workspace."""
        self.command("jupyter-compute:open")
        expect(self.panel).to_be_visible()
        expect(self.instance_card).to_have_attribute("data-name", name, timeout=30_000)
        expect(self.row(name)).to_be_visible(timeout=30_000)
        return self

    def app_links(self, name: str) -> Locator:
        """The application links (JupyterLab, Jupyter, RStudio, SSH…) in a target's row."""
        return self.row(name).locator(".jp-ComputeApps-link")

    # -- the create dialog ----------------------------------------------------------------------------
    @property
    def create_dialog(self) -> Locator:
        return self.page.locator(".jp-ComputeModal [role='dialog']")

    def field(self, name: str) -> Locator:
        return self.create_dialog.locator(f".jp-ComputeForm-field[data-field='{name}']")

    def field_input(self, name: str) -> Locator:
        return self.field(name).locator("input, select, textarea").first

    def field_error(self, name: str) -> Locator:
        return self.field(name).locator(".jp-ComputeForm-error")

    # -- notebooks ------------------------------------------------------------------------------------
    def write_notebook(self, path: str, sources: list[str], metadata: dict | None = None,
                       kernel: str = "python3") -> None:
        cells = [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": s}
                 for s in sources]
        display = self.kernelspecs().get(kernel, {}).get("spec", {}).get("display_name", "Python 3")
        nb = {"cells": cells, "metadata": {"kernelspec": {"name": kernel, "display_name": display,
                                                          "language": "python"}, **(metadata or {})},
              "nbformat": 4, "nbformat_minor": 5}
        code, body = self.lab.request("PUT", f"api/contents/{path}", {"type": "notebook", "format": "json",
                                                                      "content": nb})
        assert code in (200, 201), body

    def read_notebook(self, path: str) -> dict:
        code, body = self.lab.request("GET", f"api/contents/{path}?content=1")
        assert code == 200, body
        return body["content"]

    def open_notebook(self, path: str) -> None:
        self.command("docmanager:open", {"path": path})
        self.wait_kernel_idle()

    def wait_kernel_idle(self, timeout: float = 60_000) -> None:
        self.page.wait_for_function(
            """() => {
                const w = window.jupyterapp.shell.currentWidget;
                const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
            }""", timeout=timeout)

    def restart_kernel(self) -> None:
        """Restart the current notebook's kernel, as Kernel > Restart does once confirmed."""
        self.page.evaluate("async () => { await window.jupyterapp.shell.currentWidget.sessionContext.restartKernel(); }")

    @property
    def picker(self) -> Locator:
        return self.page.locator(f".jp-NotebookPanel:not(.lm-mod-hidden) {PICKER}").first

    @property
    def picker_status(self) -> Locator:
        """What the picker says is under way beside the target ("starting 'k1'…")."""
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-ComputePicker-status").first

    def record_picker_status(self) -> None:
        """Keep every text the picker's status shows from now on, however briefly it shows."""
        self.page.evaluate("""() => {
            window.__pickerStatus = [];
            const seen = () => document.querySelectorAll('.jp-ComputePicker-status').forEach(
                e => window.__pickerStatus.push(e.textContent));
            new MutationObserver(seen).observe(document.body, {childList: true, subtree: true, characterData: true});
        }""")

    def picker_status_seen(self) -> list[str]:
        return self.page.evaluate("() => window.__pickerStatus || []")

    @property
    def kernel_indicator(self) -> Locator:
        """The toolbar's kernel name, which opens JupyterLab's kernel picker."""
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Toolbar-kernelName").first

    def kernel_name(self) -> str | None:
        """The kernelspec of the current notebook's kernel."""
        return self.page.evaluate("""() => {
            const w = window.jupyterapp.shell.currentWidget;
            const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
            return k ? k.name : null;
        }""")

    def kernelspecs(self) -> dict:
        """The kernelspecs the server lists now, by name."""
        code, body = self.lab.request("GET", "api/kernelspecs")
        assert code == 200, body
        return body["kernelspecs"]

    def cell(self, index: int) -> Locator:
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)

    def run_cell(self, index: int) -> None:
        """Run one cell of the current notebook, as Shift+Enter on it does."""
        self.page.evaluate("""async (i) => {
            const panel = window.jupyterapp.shell.currentWidget;
            panel.content.activeCellIndex = i;
            panel.content.deselectAll();
            await window.jupyterapp.commands.execute('notebook:run-cell');
        }""", index)

    # -- the Launcher and JupyterLab's kernel picker ----------------------------------------------
    def open_launcher(self) -> Locator:
        self.command("launcher:create")
        launcher = self.page.locator(".jp-Launcher:visible").first
        expect(launcher).to_be_visible()
        return launcher

    def launcher_section(self, category: str) -> Locator:
        return self.page.locator(".jp-Launcher:visible .jp-Launcher-section").filter(
            has=self.page.locator(".jp-Launcher-sectionTitle", has_text=re.compile(f"^{re.escape(category)}$")))

    def launcher_card(self, category: str, label: str) -> Locator:
        return self.launcher_section(category).locator(".jp-LauncherCard").filter(
            has=self.page.locator(".jp-LauncherCard-label", has_text=re.compile(f"^{re.escape(label)}$")))

    def open_kernel_dialog(self) -> Locator:
        """JupyterLab's "Select Kernel" dialog, opened from the notebook toolbar's kernel name."""
        self.kernel_indicator.click()
        dialog = self.page.locator(".jp-Dialog")
        expect(dialog).to_be_visible()
        return dialog

    def run_all(self) -> None:
        self.command("notebook:run-all-cells")

    def output_of(self, index: int) -> Locator:
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index).locator(
            ".jp-OutputArea-output")

    def save(self) -> None:
        self.command("docmanager:save")

    # -- clusters and SSH machines --------------------------------------------------------------------
    def open_dialog(self, command: str, kind: str) -> Locator:
        """Open the create or attach dialog from the panel's toolbar and choose ``kind``."""
        self.page.locator(f"#jupyter-compute-panel button[data-command='{command}']").click()
        expect(self.create_dialog).to_be_visible()
        kinds = self.create_dialog.get_by_label("Kind", exact=True)
        if kinds.count():
            kinds.select_option(kind)
        expect(self.create_dialog.locator(".jp-ComputeForm-kind")).to_contain_text(kind)
        return self.create_dialog

    def row_facts(self, name: str) -> Locator:
        return self.row(name).locator(".jp-ComputeRow-meta")

    @property
    def scale_dialog(self) -> Locator:
        return self.page.locator(".jp-ComputeModal .jp-ComputeScaleDialog")

    def scale_input(self, field: str) -> Locator:
        return self.scale_dialog.locator(f".jp-ComputeScale-field[data-field='{field}'] input")

    def scale_error(self, field: str) -> Locator:
        return self.scale_dialog.locator(f".jp-ComputeScale-field[data-field='{field}'] .jp-ComputeForm-error")

    @property
    def key_files(self) -> Locator:
        """The list of key files in the attach dialog's key picker."""
        return self.create_dialog.locator(".jp-ComputeKeyPicker-list")

    def record_focus(self) -> None:
        """Keep, in the page, each element keyboard focus moves to (a test that expects focus
        somewhere says where it went instead)."""
        self.page.evaluate("""() => {
          window.__focusSeen = [];
          const name = el => !el ? 'nothing' : el === document.body ? 'body' :
            `${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}.${[...el.classList].join('.')}` +
            `${el.textContent ? ' "' + el.textContent.trim().slice(0, 30) + '"' : ''}`;
          document.addEventListener('focusin', e => window.__focusSeen.push(
            `${Math.round(performance.now())} ms: ${name(e.target)}`), true);
          document.addEventListener('focusout', e => window.__focusSeen.push(
            `${Math.round(performance.now())} ms: left ${name(e.target)} for ${name(e.relatedTarget)}`), true);
        }""")

    def expect_focus_on(self, selector_class: str, timeout: float = 5_000) -> None:
        """Keyboard focus on the element with this class, asked of the document itself: `:focus`
        also needs the window focused, which two pages side by side in one headless browser do not
        always have."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        try:
            self.page.wait_for_function(
                "(c) => document.activeElement?.classList.contains(c)", arg=selector_class, timeout=timeout)
        except PlaywrightTimeout:
            seen = self.page.evaluate("() => window.__focusSeen || []")
            where = self.page.evaluate(
                "() => { const a = document.activeElement; return a === document.body ? 'body' : a ? a.outerHTML.slice(0, 200) : 'nothing'; }")
            raise AssertionError(f"keyboard focus is not on .{selector_class} but on {where}; it moved: {seen}") from None

    @property
    def host_key_step(self) -> Locator:
        return self.create_dialog.locator(".jp-ComputeHostKey")
