"""``%compute`` and ``%%compute``: on an InteractiveShell, in notebooks run by nbclient, and on a kernel
driven through jupyter_client (which shows arrival times and answers input)."""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path
import time
import zlib

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from jupyter_compute.core.route import RemoteError

from tests.faces.conftest import create_target
from tests.support import cli, cli_subprocess, text_of, wait_for


def run_cell(sh, cell: str):
    """Run a cell as the notebook would; returns (result, error)."""
    r = sh.run_cell(cell, store_history=True)
    return r.result, r.error_before_exec or r.error_in_exec


@pytest.fixture
def k1():
    return create_target("k1")


# -- bad input: refused before anything runs ---------------------------------------------------------
@pytest.mark.parametrize("cell, message", [
    ("%%compute\nx = 1", "TARGET"),
    ("%%compute k1 --bogus\nx = 1", "unrecognized arguments: --bogus"),
    ("%%compute k1 --timeout soon\nx = 1", "invalid float value"),
    ("%%compute k1 --timeout 0\nx = 1", "greater than 0"),
    ("%%compute k1 --push 1abc\nx = 1", "not a variable name"),
    ("%%compute k1 --pull class\nx = 1", "not a variable name"),
    ("%%compute k1 --push not_defined_here,also_not\nx = 1", "not_defined_here, also_not are not defined"),
    ("%%compute local --push a\nx = 1", "this notebook's own kernel"),
    ("%%compute local --start\nx = 1", "this notebook's own kernel"),
    ("%%compute local --nodes 2\nx = 1", "this notebook's own kernel"),
    ("%%compute k1 --nodes 0\nx = 1", "argument --nodes: takes a whole number of at least 1, not '0'"),
    ("%%compute k1 --nodes two\nx = 1", "at least 1, not 'two'"),
    ("%%compute k1 'unbalanced\nx = 1", "cannot read the options"),
    ("%compute", "say what to do"),
    ("%compute frobnicate", "invalid choice: 'frobnicate'"),
    ("%compute start local", "this notebook's own kernel"),
    ("%compute use local --workspace w", "--workspace does not apply"),
    ("%compute create k2", "required: --kind"),
])
def test_bad_input_is_a_usage_error_and_runs_nothing(shell, cell, message, capsys):
    from IPython.core.error import UsageError

    shell.user_ns["x"] = 0
    _, err = run_cell(shell, cell)
    out = capsys.readouterr()
    assert isinstance(err, UsageError), err
    assert message in str(err), str(err)
    assert shell.user_ns["x"] == 0
    assert "Traceback" not in out.out + out.err


def test_unknown_target_and_workspace_fail_cleanly_with_no_side_effects(shell, capsys):
    _, err = run_cell(shell, "%%compute nowhere\nx = 1")
    out = capsys.readouterr().out
    assert type(err).__name__ == "NotFound" and "no target named 'nowhere'" in str(err)
    assert "Traceback" not in out and "NotFound: no target named 'nowhere'" in out
    _, err = run_cell(shell, "%%compute k1 --workspace nowhere\nx = 1")
    assert type(err).__name__ == "NotFound" and "no workspace 'nowhere'" in str(err)
    _, err = run_cell(shell, "%compute use nowhere")
    assert type(err).__name__ == "NotFound"
    # The reserved name cannot name a target; the core says why.
    _, err = run_cell(shell, "%compute create local --kind local-kernel")
    assert "reserved" in str(err)
    r = cli("list", "--output", "json")
    assert [t["name"] for t in json.loads(r.stdout)] == ["this-machine"]


def test_create_help_for_one_kind_in_a_notebook(shell, capsys):
    assert run_cell(shell, "%compute create --kind ssh --help") == (None, None)
    out = capsys.readouterr().out
    assert out.startswith("usage: %compute create NAME --kind ssh [options]")
    assert out.index("required fields of ssh:") < out.index("--host") < out.index("other fields of ssh:")
    assert "--memory-limit-mb" not in out and "--scheduler-address" not in out
    _, err = run_cell(shell, "%compute create --kind nope --help")
    assert "unknown kind 'nope'" in str(err)


def test_load_ext_after_the_toolbar_loaded_the_magics_says_nothing(shell, capsys):
    # The toolbar's picker loads the magics with the code in src/route.ts, run in the kernel.
    source = (Path(__file__).resolve().parents[2] / "src" / "route.ts").read_text()
    load_code = re.search(r"export const LOAD_CODE =\s*'([^']+)';", source).group(1)
    shell.run_line_magic("unload_ext", "jupyter_compute")
    capsys.readouterr()
    assert shell.run_cell(load_code).success
    assert shell.run_cell("%load_ext jupyter_compute").success
    assert shell.run_cell("%compute --help").success  # loaded, and once
    out = capsys.readouterr()
    assert "already loaded" not in out.out + out.err and out.err == ""
    assert out.out.count("in a notebook, also:") == 1


def test_help_shows_and_does_not_fail(shell, capsys):
    assert run_cell(shell, "%compute --help") == (None, None)
    top = capsys.readouterr().out
    # Every verb, the notebook's own included.
    for verb in ("create", "start", "stop", "delete", "attach", "rename", "list", "use", "status", "login"):
        assert f"    {verb}" in top, verb
    assert run_cell(shell, "%compute create --help") == (None, None)
    assert run_cell(shell, "%%compute --help\nx") == (None, None)
    out = capsys.readouterr().out
    assert "--memory-limit-mb" in out and "--push" in out


def test_compute_local_cell_runs_here(shell):
    result, err = run_cell(shell, "%%compute local\nimport os\nhere = os.getpid()\nhere")
    assert err is None and result == os.getpid() == shell.user_ns["here"]


# -- running cells on a target --------------------------------------------------------------------
def test_cell_runs_on_the_target_with_push_pull_and_a_result(shell, k1, capsys):
    shell.user_ns.update(x=21, scale=lambda v: v * 2)
    result, err = run_cell(shell, "%%compute k1 --push x,scale --pull y,pid\nimport os\npid = os.getpid()\n"
                             "y = scale(x)\nprint('remote says', y)\ny + 1")
    assert err is None
    assert repr(result) == "43"
    assert shell.user_ns["y"] == 42
    assert shell.user_ns["pid"] == k1["properties"]["kernel_pid"] != os.getpid()
    captured = capsys.readouterr()
    assert "remote says 42" in captured.out
    # A transfer that went well is no news: nothing on stderr, which JupyterLab paints as an error.
    assert captured.err == "" and "pushed" not in captured.out
    # Asked for, it is one plain status line.
    run_cell(shell, "%%compute k1 --push x --pull z --verbose\nz = x")
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "jupyter_compute: pushed x" in captured.out and "jupyter_compute: pulled z" in captured.out
    # The namespace persists between cells on the target.
    result, err = run_cell(shell, "%%compute k1\ny * 10")
    assert repr(result) == "420"


def test_remote_error_is_raised_once_and_skips_the_pull(shell, k1, capsys):
    shell.user_ns["z"] = "local"
    _, err = run_cell(shell, "%%compute k1 --pull z\nz = 'remote'\nraise ValueError('bad value ' + str(17))")
    out = capsys.readouterr().out
    assert isinstance(err, RemoteError) and isinstance(err, ValueError)
    assert type(err).__name__ == "ValueError" and str(err) == "bad value 17"
    assert out.count("bad value 17") == 1 and "magics.py" not in out
    assert shell.user_ns["z"] == "local"


def test_use_routes_following_cells_until_use_local(shell, k1, capsys):
    assert run_cell(shell, "%compute use k1") == (None, None)
    assert "Cells now run on 'k1'" in capsys.readouterr().out
    result, _ = run_cell(shell, "import os\nremote_pid = os.getpid()\nremote_pid")
    assert repr(result) == str(k1["properties"]["kernel_pid"])
    result, _ = run_cell(shell, "remote_pid + 1")
    assert repr(result) == str(k1["properties"]["kernel_pid"] + 1)
    # Other magics stay here: status is answered by this kernel.
    run_cell(shell, "%compute status")
    status = capsys.readouterr().out
    assert "cells run in: k1" in status and "state: running" in status and "kernel pid" in status
    # One cell here while routing is on.
    result, _ = run_cell(shell, "%%compute local\n'remote_pid' in globals()")
    assert result is False
    run_cell(shell, "%compute use local")
    result, _ = run_cell(shell, "import os\nos.getpid()")
    assert result == os.getpid() and "remote_pid" not in shell.user_ns
    run_cell(shell, "%compute status")
    assert "this notebook's kernel (local)" in capsys.readouterr().out


def test_a_kernel_that_sits_on_a_cell_is_woken_and_status_says_so(shell, k1, capsys):
    """A kernel that said it was idle and does not begin the cell (ipykernel 7.0 to 7.3 can leave a
    request unread; here the kernel is frozen for 2.5 s, which looks the same from outside) is woken
    by a second connection, the cell ends, and '%compute status' tells the person why it was slow."""
    assert run_cell(shell, "%%compute k1\n1")[1] is None
    pid = k1["properties"]["kernel_pid"]
    os.kill(pid, signal.SIGSTOP)
    thaw = threading.Timer(2.5, os.kill, (pid, signal.SIGCONT))
    thaw.start()
    try:
        result, err = run_cell(shell, "%%compute k1\n'after'")
    finally:
        thaw.join()
    assert err is None and repr(result) == "'after'"
    capsys.readouterr()
    run_cell(shell, "%compute status k1")
    out = capsys.readouterr().out
    assert "woken: 1 time: its kernel said it was idle but had not begun a cell" in out and "ipykernel" in out


def test_stopped_target_says_so_and_start_starts_it(shell, k1, capsys):
    run_cell(shell, "%compute stop k1 --yes")
    capsys.readouterr()
    _, err = run_cell(shell, "%%compute k1\nran = True")
    assert type(err).__name__ == "Conflict" and str(err) == (
        "'k1' is stopped, so the cell did not run. Start it with '%compute start k1', or add --start to this cell.")
    # Routed by the notebook's toolbar, the same refusal names the toolbar and the Compute panel.
    assert run_cell(shell, "%compute use k1 --routed-by toolbar")[1] is None
    _, err = run_cell(shell, "ran = True")
    assert str(err) == ("'k1' is stopped, so the cell did not run. Start it in the Compute panel (its Start "
                        "action), or pick another target in the notebook's toolbar.")
    assert "ran" not in shell.user_ns and "%compute" not in str(err)
    run_cell(shell, "%compute use local")
    result, err = run_cell(shell, "%%compute k1 --start\nimport os\nos.getpid()")
    out = capsys.readouterr().out
    assert err is None and "start k1:" in out
    new_pid = json.loads(cli("show", "k1", "--output", "json").stdout)["properties"]["kernel_pid"]
    assert repr(result) == str(new_pid) != str(k1["properties"]["kernel_pid"])


def test_nodes_needs_a_route_that_runs_on_several(shell, k1, capsys):
    shell.user_ns["x"] = 0
    _, err = run_cell(shell, "%%compute k1 --nodes 2\nx = 1")
    out = capsys.readouterr().out
    assert type(err).__name__ == "MissingCapability" and err.capability == "nodes"
    assert "'k1' (local-kernel) does not support nodes (running one cell on several nodes at once)" in str(err)
    assert "--nodes 2 needs it" in str(err) and "Traceback" not in out
    result, err = run_cell(shell, "%%compute k1 --nodes 1\nx = 1\n'one node is every route'")
    assert err is None and repr(result) == "'one node is every route'" and shell.user_ns["x"] == 0


@pytest.mark.fault
def test_a_failed_target_says_why_and_what_to_do(shell, k1, capsys):
    os.kill(k1["properties"]["kernel_pid"], signal.SIGKILL)
    wait_for(lambda: json.loads(cli("show", "k1", "--output", "json").stdout)["state"] == "failed", timeout=15,
             message="k1 to show failed")
    capsys.readouterr()
    _, err = run_cell(shell, "%%compute k1\nran = True")
    out = capsys.readouterr().out
    assert type(err).__name__ == "Conflict" and "ran" not in shell.user_ns
    assert str(err).startswith("'k1' is failed: the kernel process exited unexpectedly")
    assert str(err).endswith("so the cell did not run. Start it again with '%compute start k1', or add --start to "
                             "this cell.")
    assert "Traceback" not in out and "Conflict: 'k1' is failed: the kernel process exited" in out
    result, err = run_cell(shell, "%%compute k1 --start\n'back'")
    assert err is None and repr(result) == "'back'"


@pytest.mark.fault
def test_a_kernel_killed_mid_cell_ends_the_cell_with_why_and_a_restart_works(shell, k1, capsys):
    import threading

    pid = k1["properties"]["kernel_pid"]
    box: dict = {}
    cell = threading.Thread(target=lambda: box.update(out=run_cell(shell, "%%compute k1\nimport time\n"
                                                                             "print('working', flush=True)\n"
                                                                             "time.sleep(120)")))
    cell.start()
    wait_for(lambda: "working" in capsys.readouterr().out or box, timeout=30, message="the cell to run")
    os.kill(pid, signal.SIGKILL)
    cell.join(timeout=30)
    assert not cell.is_alive(), "the cell hung after its kernel was killed"
    _, err = box["out"]
    assert str(err) == ("the kernel of 'k1' stopped: the kernel process exited unexpectedly (killed by SIGKILL "
                        "(signal 9) - often the out-of-memory killer)"), str(err)
    wait_for(lambda: json.loads(cli("show", "k1", "--output", "json").stdout)["state"] == "failed", timeout=15,
             message="k1 to show failed")
    assert cli("restart", "k1", "--yes").returncode == 0
    result, err = run_cell(shell, "%%compute k1\n'alive again'")
    assert err is None and repr(result) == "'alive again'"


def test_timeout_interrupts_the_target_and_raises_timeout_error(shell, k1):
    t0 = time.monotonic()
    _, err = run_cell(shell, "%%compute k1 --timeout 2\nimport time\ntime.sleep(60)")
    assert isinstance(err, TimeoutError) and "--timeout 2" in str(err)
    assert time.monotonic() - t0 < 20
    t0 = time.monotonic()
    result, err = run_cell(shell, "%%compute k1 --timeout 10\n'free again'")
    assert err is None and repr(result) == "'free again'" and time.monotonic() - t0 < 10


def test_cli_verbs_render_tables_and_failures_raise(shell, k1, capsys):
    assert run_cell(shell, "%compute list") == (None, None)
    out = capsys.readouterr().out
    assert "NAME" in out and "k1" in out and "this-machine" in out
    run_cell(shell, "%compute kinds")
    assert "local-kernel" in capsys.readouterr().out
    run_cell(shell, "%compute show k1 --output json")
    assert json.loads(capsys.readouterr().out)["name"] == "k1"
    _, err = run_cell(shell, "%compute show nowhere")
    assert type(err).__name__ == "NotFound"
    _, err = run_cell(shell, "%compute create k1 --kind local-kernel")
    assert type(err).__name__ == "Conflict" and "already exists" in str(err)
    # No terminal and no stdin allowed here: delete refuses without --yes.
    _, err = run_cell(shell, "%compute delete k1")
    assert "--yes" in str(err)


def test_notebook_ui_renders_html_with_text_fallback():
    from jupyter_compute.notebook.magics import CellOutput, NotebookUI

    shown = []

    class Recorder(CellOutput):
        def __init__(self):
            self.kernel, self.parent = None, None

        def send(self, msg_type, content):
            shown.append((msg_type, content))

    ui = NotebookUI(Recorder())
    ui.show("targets", [{"name": "k<1>", "kind": "local-kernel", "state": "running", "size": None, "nodes": None}])
    msg_type, content = shown[-1]
    assert msg_type == "display_data"
    assert "<table" in content["data"]["text/html"] and "k&lt;1&gt;" in content["data"]["text/html"]
    assert "k<1>" in content["data"]["text/plain"]


# -- in notebooks, through nbclient ---------------------------------------------------------------
def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 4 for _ in range(4))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def notebook(*cells: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


def execute(nb, allow_errors=False, timeout=180):
    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors).execute()
    return nb


def outputs(cell, kind=None):
    return [o for o in cell.outputs if kind is None or o.output_type == kind]


def test_a_cell_whose_kernel_the_memory_limit_stops_says_so_with_both_numbers(shell):
    create_target("mk", "--memory-limit-mb", "300")
    result, err = run_cell(shell, "%%compute mk\nimport numpy as np, time\nbig = np.ones(80_000_000)\n"
                                  "time.sleep(30)")
    assert err is not None
    message = str(err)
    assert message.startswith("the kernel of 'mk' was stopped: it used ") and message.endswith(
        "MB, above its memory limit of 300 MB"), message


def test_a_cell_whose_target_is_stopped_from_elsewhere_says_so(shell):
    create_target("k2")
    stopper = threading.Timer(2.0, lambda: cli_subprocess("stop", "k2", "--yes"))
    stopper.start()
    try:
        result, err = run_cell(shell, "%%compute k2\nimport time\ntime.sleep(30)")
    finally:
        stopper.join()
    assert err is not None
    assert str(err) == ("the kernel of 'k2' was stopped from outside this notebook (the Compute panel, the "
                        "command line or another notebook); its variables are gone"), str(err)


def test_notebook_runs_cells_on_a_local_kernel_target(k1):
    png = base64.b64encode(_png()).decode()
    nb = execute(notebook(
        "%load_ext jupyter_compute\nimport os, numpy as np\nprint(os.getpid())",
        "%compute list",
        "%%compute k1\nimport os\nprint(os.getpid())",
        "%%compute k1\nfrom IPython.display import HTML, Image, display\nimport base64\n"
        f"display(HTML('<b>bold</b>'))\ndisplay(Image(data=base64.b64decode('{png}')))",
        "a = np.random.default_rng(1).random(50 * 2**20 // 8)\ndouble = lambda v: v * 2",
        "%%compute k1 --push a,double --pull b,add_one -v\nb = double(a)\nadd_one = lambda v: double(v) + 1\nb.nbytes",
        "assert np.array_equal(b, a * 2) and b.flags.writeable\nprint(add_one(1))",
        "%compute use k1",
        "import os\nremote_pid = os.getpid()\nprint(remote_pid)",
        "print(remote_pid * 1)",
        "%compute use local",
        "print(os.getpid(), 'remote_pid' in globals())",
    ))
    c = nb.cells
    local_pid = int(text_of(c[0]).strip())
    remote_pid = k1["properties"]["kernel_pid"]
    assert int(text_of(c[2]).strip()) == remote_pid != local_pid
    listing = outputs(c[1], "display_data")[0].data
    assert "<table" in listing["text/html"] and "k1" in listing["text/plain"]
    displays = outputs(c[3], "display_data")
    assert displays[0].data["text/html"] == "<b>bold</b>"
    assert displays[1].data["image/png"].strip() == png
    assert outputs(c[5], "execute_result")[0].data["text/plain"] == str(50 * 2**20)
    assert not [o for o in outputs(c[5], "stream") if o.name == "stderr"]
    report = "".join(o.data["text/plain"] for o in outputs(c[5], "display_data"))
    assert "pushed a, double (52.4 MB)" in report and "pulled b, add_one (52.4 MB)" in report
    assert text_of(c[6]).strip() == "3"
    assert int(text_of(c[8])) == remote_pid and int(text_of(c[9])) == remote_pid
    assert text_of(c[11]).split() == [str(local_pid), "False"]


def test_notebook_remote_error_stops_run_all_once(k1):
    nb = notebook("%load_ext jupyter_compute",
                  "%%compute k1\nprint('before')\nraise ValueError('the remote value was wrong')",
                  "print('never runs')")
    with pytest.raises(CellExecutionError) as info:
        execute(nb)
    assert info.value.ename == "ValueError" and "the remote value was wrong" in info.value.evalue
    errors = outputs(nb.cells[1], "error")
    assert len(errors) == 1 and errors[0].ename == "ValueError"
    assert errors[0].evalue == "the remote value was wrong"
    assert any("raise ValueError" in re.sub(r"\x1b\[[0-9;]*m", "", line) for line in errors[0].traceback)
    assert "before" in text_of(nb.cells[1]) and not nb.cells[2].outputs


def test_notebook_timeout(k1):
    # The route is open before the timed cell, so that its 2 s are the cell's running time, not the
    # first connection's (which a loaded machine can stretch past 2 s: "it stopped while connecting").
    nb = execute(notebook("%load_ext jupyter_compute",
                          "%%compute k1\npass",
                          "import time\nt0 = time.monotonic()",
                          "%%compute k1 --timeout 2\nimport time\nprint('started', flush=True)\ntime.sleep(60)",
                          "print(round(time.monotonic() - t0))",
                          "%%compute k1\nprint('the target is free')"), allow_errors=True)
    errors = outputs(nb.cells[3], "error")
    assert len(errors) == 1 and errors[0].ename == "TimeoutError" and "interrupted" in errors[0].evalue, errors
    assert "started" in text_of(nb.cells[3])
    assert int(text_of(nb.cells[4])) < 20
    assert "the target is free" in text_of(nb.cells[5])


# -- on a kernel driven by jupyter_client ---------------------------------------------------------
@pytest.fixture
def notebook_kernel():
    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)

    def execute_cell(code, *, answer=None, interrupt_on=None, timeout=120):
        """Run ``code``; with ``interrupt_on``, interrupt the kernel once a stream shows that text."""
        t0 = time.monotonic()
        seen = []
        interrupted = []

        def on_output(m):
            seen.append((time.monotonic() - t0, m["msg_type"], m["content"]))
            if (interrupt_on is not None and not interrupted and m["msg_type"] == "stream"
                    and interrupt_on in m["content"]["text"]):
                interrupted.append(True)
                km.interrupt_kernel()

        def on_stdin(msg):
            seen.append((time.monotonic() - t0, "input_request", msg["content"]))
            kc.input(answer)

        reply = kc.execute_interactive(
            code, timeout=timeout, allow_stdin=answer is not None, stdin_hook=on_stdin if answer else None,
            output_hook=on_output)
        return reply["content"], seen, time.monotonic() - t0

    assert execute_cell("%load_ext jupyter_compute")[0]["status"] == "ok"
    yield execute_cell
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def test_output_is_relayed_as_it_arrives(notebook_kernel, k1):
    notebook_kernel("%%compute k1\nprint('warm')")
    reply, seen, _ = notebook_kernel("%%compute k1\nimport time\nprint('first', flush=True)\n"
                                     "time.sleep(3)\nprint('second', flush=True)")
    assert reply["status"] == "ok"
    at = {c["text"].strip(): t for t, kind, c in seen if kind == "stream"}
    assert at["second"] - at["first"] > 2.0


def test_input_is_answered_from_the_notebook(notebook_kernel, k1):
    reply, seen, _ = notebook_kernel("%%compute k1\nname = input('who are you? ')\nprint('hello', name)",
                                     answer="ada")
    assert reply["status"] == "ok"
    assert [c["prompt"] for _, kind, c in seen if kind == "input_request"] == ["who are you? "]
    assert any(kind == "stream" and c["text"] == "hello ada\n" for _, kind, c in seen)


def test_interrupting_the_notebook_interrupts_the_target(notebook_kernel, k1):
    notebook_kernel("%%compute k1\nprint('warm')")
    reply, seen, elapsed = notebook_kernel("%%compute k1\nimport time\nprint('started', flush=True)\n"
                                           "time.sleep(60)", interrupt_on="started")
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert elapsed < 10
    errors = [c for _, kind, c in seen if kind == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "KeyboardInterrupt"
    assert not any("magics.py" in line for line in errors[0]["traceback"])
    reply, seen, elapsed = notebook_kernel("%%compute k1\nprint('free')")
    assert reply["status"] == "ok" and elapsed < 10


# -- a target running another Python that lacks jupyter_compute (the other_python fixture: tests/conftest.py)
@pytest.mark.xdist_group("other_python")  # one worker makes the other Python's venv
def test_push_and_pull_with_another_python_that_lacks_jupyter_compute(shell, other_python, capsys):
    venv, version = other_python
    create_target("other", "--python", venv)
    result, err = run_cell(shell, "%%compute other\nimport importlib.util as u\n"
                             "(u.find_spec('jupyter_compute') is None, __import__('sys').version_info[:2])")
    assert err is None and repr(result) == repr((True, version))
    shell.user_ns.update(data={"ints": list(range(1000)), "blob": b"\x00\xff" * 100_000, "nested": ({1, 2}, None)})
    result, err = run_cell(shell, "%%compute other --push data --pull summary,back --verbose\n"
                             "summary = {k: type(v).__name__ for k, v in data.items()}\nback = data")
    assert err is None
    assert shell.user_ns["summary"] == {"ints": "list", "blob": "bytes", "nested": "tuple"}
    assert shell.user_ns["back"] == shell.user_ns["data"]
    assert "pushed data" in capsys.readouterr().out
    # Functions travel by value, which only works between the same Python minor versions.
    shell.user_ns["inc"] = lambda v: v + 1
    result, err = run_cell(shell, "%%compute other --push inc --pull two\ntwo = inc(1)")
    if version == sys.version_info[:2]:
        assert err is None and shell.user_ns["two"] == 2
    else:
        assert type(err).__name__ == "TransferError" and "'inc'" in str(err)
        assert f"{version[0]}.{version[1]}" in str(err)
        # The refusal happened before the cell ran.
        result, err = run_cell(shell, "%%compute other\n'two' in globals()")
        assert err is None and repr(result) == "False", (err, result)


def test_stopping_a_kernel_with_variables_asks_in_the_notebook(notebook_kernel, k1, compute_db):
    """The one confirmation rule in the notebook's face: '%compute stop' of a running kernel asks in
    the notebook's input box; 'n' changes nothing, 'y' stops it, and with no way to ask it refuses
    and names --yes."""
    from jupyter_compute.core.store import Store

    def state():
        return Store(str(compute_db)).get_target("local", "k1")["state"]

    reply, seen, _ = notebook_kernel("%compute stop k1", answer="n")
    prompts = [c["prompt"] for _, kind, c in seen if kind == "input_request"]
    assert prompts == ["Stop 'k1' (local-kernel)? The variables in its kernel are lost. [y/N] "], seen
    assert reply["status"] == "error" and "not confirmed; nothing was changed" in reply["evalue"], reply
    assert state() == "running"
    reply, seen, _ = notebook_kernel("%compute stop k1")  # no input box: refused, naming --yes
    assert reply["status"] == "error" and "Refusing without a way to ask: add --yes" in reply["evalue"], reply
    assert state() == "running"
    reply, seen, _ = notebook_kernel("%compute stop k1", answer="y")
    assert reply["status"] == "ok", reply
    assert state() == "stopped"
