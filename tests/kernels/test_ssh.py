"""An ``ssh`` target as a Jupyter kernel, against a real sshd on 127.0.0.1: a fresh ipykernel on the
remote machine for each notebook, its channels over the target's one SSH connection."""
from __future__ import annotations

import asyncio
import json
import queue
import random
import signal
import time

import nbformat
import psutil
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from tests.families.ssh.test_ssh import PY, attach_args
from tests.kernels.helpers import (debugger_answers, input_is_answered, interrupt_ends_a_sleep, kernel_rows, run,
                                   started, text, widget_round_trip)
from tests.sshd import sshd  # noqa: F401  (a fixture)
from tests.support import cli, python_with_unread_fault, wait_for

pytestmark = pytest.mark.timeout(180)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def vm(sshd, data_dir, compute_db):  # noqa: F811  (sshd is a fixture)
    r = cli(*attach_args(sshd, "vm"))
    assert r.returncode == 0, r.stderr
    r = cli("start", "vm", "--output", "json")
    assert r.returncode == 0, r.stderr + r.stdout
    return json.loads(r.stdout)


def test_the_kernelspec_says_where_it_runs(vm):
    spec = wait_for(lambda: KernelSpecManager().get_all_specs().get("compute-vm"), timeout=2,
                    message="the kernelspec of vm")["spec"]
    version = vm["properties"]["python_version"].rsplit(".", 1)[0]
    assert spec["display_name"] == f"Python {version} · vm (SSH)"
    assert spec["metadata"]["kernel_provisioner"]["config"]["target"] == "vm"


def test_nbclient_runs_a_notebook_on_the_remote_machine(vm, compute_db):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (
        "import os, sys\nprint(os.getpid(), sys.executable, sep='|')",
        "x = 20\nx * 2 + 2",
    )]
    NotebookClient(nb, kernel_name="compute-vm", timeout=90).execute()
    pid, python = nb.cells[0].outputs[0]["text"].strip().split("|")
    assert int(pid) != vm["properties"]["remote_pid"] and python == PY
    assert nb.cells[1].outputs[0]["data"]["text/plain"] == "42"
    # The notebook's kernel ended with it; the target's own kernel runs on.
    wait_for(lambda: gone(int(pid)), timeout=15, message="the notebook's remote kernel to end")
    assert not gone(vm["properties"]["remote_pid"])
    assert json.loads(cli("show", "vm", "--output", "json").stdout)["state"] == "running"
    assert kernel_rows(compute_db) == []


async def test_completion_input_widgets_interrupt_and_restart_over_ssh(vm, compute_db):
    km, kc = await started("compute-vm")
    try:
        await run(kc, "remote_var = [1, 2, 3]")
        kc.complete("remote_v", 8)
        assert "remote_var" in (await kc.get_shell_msg(timeout=10))["content"]["matches"]
        kc.inspect("remote_var", 10)
        assert "list" in (await kc.get_shell_msg(timeout=10))["content"]["data"]["text/plain"]

        # input() on the remote machine is answered here, over the stdin tunnel.
        await input_is_answered(kc, "grace")

        await widget_round_trip(kc, 9)
        await debugger_answers(kc)
        await interrupt_ends_a_sleep(km, kc)

        first = kernel_rows(compute_db)[0]["runtime"]["remote"]["pid"]
        await km.restart_kernel(now=True)
        await kc.wait_for_ready(timeout=60)
        _, outputs = await run(kc, "print('remote_var' in globals())")
        assert text(outputs) == "False\n"
        assert kernel_rows(compute_db)[0]["runtime"]["remote"]["pid"] != first
        wait_for(lambda: gone(first), timeout=15, message="the kernel before the restart to end")
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    assert kernel_rows(compute_db) == []


async def test_stopping_the_target_ends_its_notebook_kernels_with_the_reason(vm, compute_db):
    km, kc = await started("compute-vm")
    try:
        remote_pid = kernel_rows(compute_db)[0]["runtime"]["remote"]["pid"]
        assert (await asyncio.to_thread(cli, "stop", "vm", "--yes")).returncode == 0
        deadline = time.monotonic() + 15
        while await km.is_alive():
            assert time.monotonic() < deadline, "the kernel outlived its target"
            await asyncio.sleep(0.1)
        assert km.provisioner._kernel.reason == "the target 'vm' was stopped"
        assert gone(remote_pid)
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


async def test_a_cut_link_errors_the_running_cell_and_the_kernel_lives_on(vm, sshd, compute_db):  # noqa: F811
    km, kc = await started("compute-vm")
    try:
        remote_pid = kernel_rows(compute_db)[0]["runtime"]["remote"]["pid"]
        await run(kc, "kept = 41")
        msg_id = kc.execute("import time\nprint('started', flush=True)\ntime.sleep(10)\nkept += 1\n"
                            "print('late', flush=True)")
        sent = time.monotonic()
        seen = []
        while True:
            m = await kc.get_iopub_msg(timeout=30)
            if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream":
                break
        held = await asyncio.to_thread(sshd.stop_listener)  # the cut lasts until the test ends it
        t0 = time.monotonic()
        for p in held:  # the session's sshd processes: the TCP connection dies with them
            p.kill()
        # The running cell is answered at once, as a failed cell, saying why.
        while True:
            reply = await kc.get_shell_msg(timeout=15)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        took = time.monotonic() - t0
        content = reply["content"]
        assert content["status"] == "error" and "SSH link" in content["evalue"], content
        assert "was cut while this cell ran" in content["evalue"] and "live on" in content["evalue"]
        assert took < 8, took  # at the cut, not when the cell's sleep would have ended
        while True:
            m = await kc.get_iopub_msg(timeout=5)
            if m["parent_header"].get("msg_id") == msg_id:
                seen.append(m["msg_type"])
                if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                    break
        assert "error" in seen
        # The link comes back; the same kernel there, with its namespace: the cell even finished.
        await asyncio.to_thread(sshd.start)
        await asyncio.to_thread(wait_for, lambda: json.loads(cli("show", "vm", "--output", "json").stdout)["state"]
                                == "running", timeout=30, message="the link to be re-established")
        back = time.monotonic()
        # The kernel runs the next cell once the cut one has ended there; everything the cut one
        # sends from then on (its 'late' output, its idle status, its reply) comes over the link
        # that is back, and the relay drops it: the cell was answered already.
        assert back - sent < 10, f"the link came back {back - sent:.1f} s after the cell began, after its end there"
        last = kc.execute("import os\nprint(kept, os.getpid())")
        late, outputs = [], []
        while True:
            m = await kc.get_iopub_msg(timeout=60)
            parent = m["parent_header"].get("msg_id")
            if parent == msg_id:
                late.append(m)
            elif parent == last:
                if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                    break
                outputs.append(m)
        while True:
            reply = await kc.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == last:
                break
            late.append(reply)
        assert late == [], [(m["msg_type"], m["content"]) for m in late]
        assert text(outputs).split() == ["42", str(remote_pid)]  # the cut cell did finish there
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


async def failed_start(name: str) -> tuple[float, str]:
    """Starting kernel ``name`` fails: (how long it took, what it said)."""
    km = AsyncKernelManager(kernel_name=name)
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        await km.start_kernel()
    return time.monotonic() - t0, str(info.value)


def test_an_unreachable_host_fails_the_kernel_start_in_words(sshd, data_dir, compute_db):  # noqa: F811
    r = cli(*attach_args(sshd, "vm"))
    assert r.returncode == 0, r.stderr
    sshd.stop()  # the host is gone before the notebook chooses the kernel: starting the target fails
    took, message = asyncio.run(failed_start("compute-vm"))
    assert took < 30, took
    assert "127.0.0.1" in message and "Traceback" not in message, message


def test_a_changed_host_key_fails_the_kernel_start_in_words(vm, sshd, compute_db):  # noqa: F811
    """The host presents another key after the target was attached: the kernel is refused with
    the new fingerprint, as for the target itself, and nothing runs on the host."""
    assert cli("stop", "vm", "--yes").returncode == 0
    sshd.new_host_key()
    sshd.restart()
    took, message = asyncio.run(failed_start("compute-vm"))
    assert took < 30, took
    assert "CHANGED" in message and sshd.fingerprint in message and "Traceback" not in message, message
    assert kernel_rows(compute_db) == []
    wait_for(lambda: not sshd.started_processes(), timeout=10, message="nothing of the target's left on the host")


@pytest.mark.fault
def test_a_killed_client_ends_its_remote_kernel(vm, compute_db, tmp_path):
    """The process that started the kernel dies: its lease to the supervisor closes, and the
    supervisor ends the kernel on the remote machine."""
    import subprocess
    import sys
    script = tmp_path / "client.py"
    script.write_text(
        "import asyncio, sys\n"
        "from jupyter_client.manager import AsyncKernelManager\n"
        "async def main():\n"
        "    km = AsyncKernelManager(kernel_name='compute-vm')\n"
        "    await km.start_kernel()\n"
        "    print('started', flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        remote_pid = wait_for(lambda: kernel_rows(compute_db), timeout=10,
                              message="the kernel's record")[0]["runtime"]["remote"]["pid"]
        assert not gone(remote_pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: gone(remote_pid), timeout=15, message="the remote kernel of the killed client to end")
        wait_for(lambda: kernel_rows(compute_db) == [], timeout=10, message="its record to go")
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.timeout(300)
@pytest.mark.xdist_group("other_python")  # one worker makes the other Python's venv
async def test_a_notebook_kernel_that_leaves_a_cell_unread_is_woken(sshd, data_dir, compute_db,  # noqa: F811
                                                                    other_python):
    """ipykernel 7.0 to 7.3 (the newest for Python 3.10) can leave a request unread when it arrives
    while the kernel sends a reply. A notebook's kernel on the SSH machine is reached through this
    machine's relay, which wakes it: two cells at once from one client, many times over, on that
    Python's kernel, and every cell ends."""
    venv, minor = other_python
    python = python_with_unread_fault(venv)
    r = cli(*attach_args(sshd, "vm", "--python", python))
    assert r.returncode == 0, r.stderr
    r = cli("start", "vm")
    assert r.returncode == 0, r.stderr + r.stdout
    km, kc = await started("compute-vm")
    try:
        kc.kernel_info()
        info = (await kc.get_shell_msg(timeout=30))["content"]
        assert info["language_info"]["version"].startswith(f"{minor[0]}.{minor[1]}.")
        rng = random.Random(0)
        for i in range(100):  # the kernel is left a cell every 10 to 20 rounds
            first = kc.execute("pass")
            await asyncio.sleep(rng.uniform(0, 0.003))
            second = kc.execute(f"{i}")
            replies = {}
            while len(replies) < 2:
                try:
                    msg = await kc.get_shell_msg(timeout=20)
                except queue.Empty:
                    pytest.fail(f"round {i}: a cell had no answer in 20 s ({len(replies)} of 2 answered)")
                replies[msg["parent_header"]["msg_id"]] = msg["content"]["status"]
            assert replies == {first: "ok", second: "ok"}, (i, replies)
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    log = (compute_db.parent / "runtime" / "ssh-local-vm.log").read_text()
    print(f"the relay woke the kernel {log.count('a second connection was opened to wake it')} times in 100 rounds")
