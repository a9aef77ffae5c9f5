"""TargetPicker and TargetStatus: their traits, the routing they set, and changes made elsewhere reaching them."""
from __future__ import annotations

import json
import sys
import threading

import pytest

from tests.faces.conftest import create_target
from tests.support import cli, wait_for


def states(picker) -> dict[str, str]:
    return {t["name"]: t["state"] for t in picker.targets}


def test_picker_lists_targets_and_routes_cells(shell):
    from jupyter_compute.notebook.magics import active_route
    from jupyter_compute.notebook.widgets import TargetPicker

    create_target("k1")
    picker = TargetPicker()
    try:
        assert picker.value == "local" and picker.error == ""
        assert states(picker) == {"this-machine": "running", "k1": "running"}
        labels = dict((v, label) for label, v in picker.options)
        assert labels["local"].startswith("local") and labels["k1"] == "k1 · local-kernel · running"
        assert active_route(shell) is None
        picker.value = "k1"
        assert active_route(shell) == (None, "k1")
        # A refresh (the change feed's, after any change in the store) keeps the choice shown.
        picker.refresh()
        assert (picker.value, picker.label) == ("k1", labels["k1"]) and active_route(shell) == (None, "k1")
        # The next cell goes to k1, as after '%compute use k1'.
        r = shell.run_cell("import os\nos.getpid()")
        pid = json.loads(cli("show", "k1", "--output", "json").stdout)["properties"]["kernel_pid"]
        assert repr(r.result) == str(pid)
        picker.value = "local"
        assert active_route(shell) is None
    finally:
        picker.close()


def test_a_new_picker_shows_the_active_route_without_changing_it(shell):
    from jupyter_compute.notebook.magics import active_route
    from jupyter_compute.notebook.widgets import TargetPicker

    create_target("k1")
    shell.run_cell("%compute use k1")
    picker = TargetPicker()
    try:
        assert picker.value == "k1" and active_route(shell) == (None, "k1")
    finally:
        picker.close()
        shell.run_cell("%compute use local")


def test_a_choice_made_while_the_change_feed_refreshes_the_list_still_routes(shell):
    """The change feed refreshes a picker's list on its own thread while the kernel handles the
    person's choices on the shell thread: a choice made during a refresh routes the cells, and the
    refresh keeps the choice."""
    from jupyter_compute.notebook.magics import active_route, set_active_route
    from jupyter_compute.notebook.widgets import TargetPicker

    create_target("k1")
    picker = TargetPicker()
    stop = threading.Event()

    def refresh_again_and_again() -> None:
        while not stop.is_set():
            picker._apply(list(picker.targets), "")

    feed = threading.Thread(target=refresh_again_and_again)
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # hand the interpreter between the two threads as often as it can
    feed.start()
    try:
        index = {value: i for i, (_, value) in enumerate(picker.options)}
        for choice in ["k1", "local"] * 100:
            # What ipywidgets does with a choice made in the browser.
            picker.set_state({"index": index[choice]})
            assert active_route(shell) == (None if choice == "local" else (None, "k1")), choice
            assert picker.value == choice
    finally:
        stop.set()
        feed.join()
        sys.setswitchinterval(switching)
        picker.close()
        set_active_route(None, shell=shell)


def test_widgets_follow_changes_made_by_the_cli(shell):
    from jupyter_compute.notebook.widgets import TargetPicker, TargetStatus

    picker = TargetPicker()
    status = TargetStatus("k1")
    try:
        assert "k1" not in states(picker)
        assert status.state == "unknown" and "no target named 'k1'" in status.message

        create_target("k1")
        wait_for(lambda: states(picker).get("k1") == "running", timeout=10, message="the picker to list k1")
        wait_for(lambda: status.state == "running", timeout=10, message="the card to show k1 running")
        assert status.kind == "local-kernel" and "stop" in status.operations

        assert cli("stop", "k1", "--yes").returncode == 0
        wait_for(lambda: states(picker).get("k1") == "stopped", timeout=10, message="the picker to show k1 stopped")
        wait_for(lambda: status.state == "stopped", timeout=10, message="the card to show k1 stopped")

        assert cli("delete", "k1", "--yes").returncode == 0
        wait_for(lambda: "k1" not in states(picker), timeout=10, message="the picker to drop k1")
        wait_for(lambda: status.state == "unknown", timeout=10, message="the card to show k1 gone")
    finally:
        picker.close()
        status.close()


def test_status_card_buttons_drive_the_target(shell):
    from jupyter_compute.notebook.widgets import TargetStatus

    create_target("k1")
    card = TargetStatus("k1")
    try:
        buttons = {a: b for a, b in card._buttons.items()}
        assert card.state == "running"
        assert buttons["start"].disabled and not buttons["stop"].disabled and not buttons["restart"].disabled
        old_pid = json.loads(cli("show", "k1", "--output", "json").stdout)["properties"]["kernel_pid"]

        card.act("restart").result(timeout=60)
        assert card.state == "running" and not card.busy and "restart" in card.message
        new_pid = json.loads(cli("show", "k1", "--output", "json").stdout)["properties"]["kernel_pid"]
        assert new_pid != old_pid

        card.act("stop").result(timeout=60)
        assert card.state == "stopped" and not buttons["start"].disabled and buttons["stop"].disabled
        assert json.loads(cli("show", "k1", "--output", "json").stdout)["state"] == "stopped"
        with pytest.raises(ValueError):
            card.act("explode")
    finally:
        card.close()


def test_status_card_buttons_ask_before_losing_the_kernels_variables(shell):
    """The card's face of the one confirmation rule: Stop on a running kernel asks, Cancel changes
    nothing, confirming stops it; Start on the stopped one does not ask."""
    from jupyter_compute.notebook.widgets import TargetStatus

    create_target("k2")
    card = TargetStatus("k2")
    try:
        card._buttons["stop"].click()
        asked, question = card.asking, card._question.value
        display = card._asking_row.layout.display
        disabled = all(b.disabled for b in card._buttons.values())
        card._cancel.click()
        still = json.loads(cli("show", "k2", "--output", "json").stdout)["state"]
        cancelled = (card.asking, card._asking_row.layout.display, card.pending)

        card._buttons["stop"].click()
        card._confirm.click()
        card.pending.result(timeout=60)
        stopped = json.loads(cli("show", "k2", "--output", "json").stdout)["state"]
        card._buttons["start"].click()  # nothing to lose: no question
        start_asked = card.asking
        card.pending.result(timeout=60)

        assert asked == "stop" and "variables in its kernel are lost" in question and "k2" in question
        assert display == "flex" and disabled
        assert still == "running" and cancelled == ("", "none", None)
        assert stopped == "stopped" and start_asked == "" and card.state == "running"
    finally:
        card.close()


def test_this_machine_card_offers_no_lifecycle_buttons(shell):
    from jupyter_compute.notebook.widgets import TargetStatus

    card = TargetStatus("this-machine")
    try:
        assert card.state == "running" and card.kind == "local"
        assert all(b.disabled for b in card._buttons.values())
    finally:
        card.close()
