"""An Azure ML compute instance's kernels as Jupyter kernels here, through the project's HTTPS Azure
stand-in, which serves a real Jupyter server behind it with bearer tokens."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from tests.families.azureml.test_azureml_instance import ME, project  # noqa: F401  (project is a fixture)
from tests.kernels.helpers import (debugger_answers, interrupt_ends_a_sleep, kernel_rows, run, started, text,
                                   widget_round_trip)
from tests.standins.azure import arm, azure_env, network_guard  # noqa: F401  (fixtures)
from tests.standins.instance import aad_arm, add_instance, instance_jupyter  # noqa: F401  (fixtures)
from tests.support import cli, files_holding, wait_for

pytestmark = pytest.mark.timeout(180)


def compute_specs() -> dict:
    return {k: v["spec"] for k, v in KernelSpecManager().get_all_specs().items() if "alice-ci" in k}


#: The stand-in instance's server sends output unthrottled, so a large output tests its size alone.
UNTHROTTLED = ("--ZMQChannelsWebsocketConnection.iopub_data_rate_limit=0",)


@pytest.fixture
def instance(project, aad_arm, instance_jupyter, data_dir, monkeypatch):  # noqa: F811
    server = instance_jupyter(args=UNTHROTTLED)
    add_instance(aad_arm, "alice-ci", jupyter=server.url, creator=ME, sharing="Personal")
    monkeypatch.chdir(project)  # config.json names the workspace, as Workspace.from_config() finds it
    assert cli("list").returncode == 0
    return server


async def test_the_instances_kernels_are_kernels_here_and_run_there(instance, aad_arm, compute_db, caplog):
    # Before anything has been read from it, the instance offers its server's default kernel.
    specs = wait_for(compute_specs, timeout=5, message="the instance's kernelspec")
    (name, spec), = specs.items()
    assert spec["display_name"] == "alice-ci (compute instance)"
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        reply, outputs = await run(kc, "import os\nprint(os.getppid())\ndefined_there = 1")
        assert int(text(outputs)) == instance.proc.pid  # a kernel of the instance's Jupyter server
        kc.complete("defined_t", 9)
        assert "defined_there" in (await kc.get_shell_msg(timeout=10))["content"]["matches"]
        # As on any kernel: widgets both ways, input(), a 50 MB output (above the server's 10 MiB
        # websocket limit), the control channel, interrupt.
        await widget_round_trip(kc, 4)
        msg_id = kc.execute("name = input('who? ')", allow_stdin=True)
        assert (await kc.get_stdin_msg(timeout=10))["content"]["prompt"] == "who? "
        kc.input("ada")
        while (await kc.get_shell_msg(timeout=10))["parent_header"].get("msg_id") != msg_id:
            pass
        _, outputs = await run(kc, "print('y' * 50_000_000)", timeout=120)
        assert len(text(outputs)) >= 50_000_000
        await debugger_answers(kc)
        await interrupt_ends_a_sleep(km, kc)
        # A restart, as JupyterLab asks for one, is the instance server's own: a fresh namespace.
        await km.restart_kernel(now=False)
        await kc.wait_for_ready(timeout=60)
        _, outputs = await run(kc, "print('defined_there' in globals(), name if 'name' in globals() else '-')")
        assert text(outputs) == "False -\n"
        # Reading its kernelspecs as the kernel started, the instance now offers each of them.
        specs = wait_for(lambda: {k: v for k, v in compute_specs().items() if k.endswith("-python3")},
                         timeout=5, message="the instance's own kernelspecs")
        (_, spec), = specs.items()
        assert spec["display_name"] == "Python 3 (ipykernel) · alice-ci (compute instance)"
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=False)
    status = instance.api("GET", "api/kernels")
    assert status[0] == 200 and status[1] == []  # shut down here, shut down there
    # The bearer tokens the instance was reached with are in no kernelspec, log line or store file.
    tokens = list(aad_arm.tokens)
    assert tokens and any(d["outcome"] == "ok" for d in instance.decisions())
    dumped = json.dumps(KernelSpecManager().get_all_specs()) + caplog.text
    for t in tokens:
        assert t not in dumped
        assert [f for f in files_holding(compute_db.parent, t) if "compute.db" in f] == []


async def test_an_instance_stopped_from_azure_reports_its_kernel_dead_saying_so(instance, aad_arm, compute_db):
    name = next(iter(wait_for(compute_specs, timeout=5, message="the instance's kernelspec")))
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        await run(kc, "x = 1")
        # Azure stops it (the schedule, the portal): its Jupyter goes away with it.
        entry = next(iter(aad_arm.workspaces.values()))
        entry["computes"]["alice-ci"]["properties"]["properties"]["state"] = "Stopped"
        await asyncio.to_thread(instance.stop)
        deadline = time.monotonic() + 30
        while await km.is_alive():
            assert time.monotonic() < deadline, "the kernel was not reported dead"
            await asyncio.sleep(0.2)
        assert km.provisioner._kernel.reason == "the compute instance 'alice-ci' was stopped"
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    assert kernel_rows(compute_db) == []


def test_a_compute_instance_cannot_be_renamed_here(instance):
    r = cli("rename", "alice-ci", "bob-ci")
    assert r.returncode != 0 and "named in Azure" in r.stdout + r.stderr
    assert compute_specs()


async def test_an_instance_server_restart_is_a_dead_kernel_and_a_restart_starts_a_new_one(instance, compute_db):
    name = next(iter(wait_for(compute_specs, timeout=5, message="the instance's kernelspec")))
    km, kc = await started(name)
    try:
        await run(kc, "kept = 1")
        await asyncio.to_thread(instance.stop)
        await asyncio.to_thread(instance.start)
        deadline = time.monotonic() + 60
        while await km.is_alive():
            assert time.monotonic() < deadline, "the kernel was not reported dead"
            await asyncio.sleep(0.2)
        assert "is gone" in km.provisioner._kernel.reason, km.provisioner._kernel.reason
        await km.restart_kernel(now=True)
        await kc.wait_for_ready(timeout=60)
        _, outputs = await run(kc, "print('kept' in globals())")
        assert text(outputs) == "False\n"
        code, kernels = instance.api("GET", "api/kernels")
        assert code == 200 and len(kernels) == 1
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    assert kernel_rows(compute_db) == []


async def test_a_refused_azure_token_fails_the_start_with_the_reason(project, aad_arm, instance_jupyter,  # noqa: F811
                                                                    data_dir, compute_db, monkeypatch):
    """The instance's server takes tokens for another audience only: the token this machine was
    given is refused, and the kernel fails at once saying which credential, never showing it."""
    server = instance_jupyter(audiences=("https://elsewhere.example/",))
    add_instance(aad_arm, "alice-ci", jupyter=server.url, creator=ME, sharing="Personal")
    monkeypatch.chdir(project)
    assert cli("list").returncode == 0
    name = next(iter(wait_for(compute_specs, timeout=5, message="the instance's kernelspec")))
    km = AsyncKernelManager(kernel_name=name)
    t0 = time.monotonic()
    with pytest.raises(Exception, match="refused the credentials") as info:
        await km.start_kernel()
    assert time.monotonic() - t0 < 30
    message = str(info.value)
    assert "Azure" in message and "Traceback" not in message, message
    assert not any(t in message for t in aad_arm.tokens)
    assert kernel_rows(compute_db) == []


async def test_a_stopped_instance_keeps_its_kernels_and_choosing_one_starts_it(instance, aad_arm, compute_db,
                                                                                caplog):
    # A first kernel reads the instance's own kernelspecs.
    km, kc = await started(next(iter(wait_for(compute_specs, timeout=5, message="the instance's kernelspec"))))
    kc.stop_channels()
    await km.shutdown_kernel(now=False)
    name = next(iter(wait_for(lambda: {k: v for k, v in compute_specs().items() if k.endswith("-python3")},
                              timeout=5, message="the instance's own kernelspecs")))
    assert (await asyncio.to_thread(cli, "stop", "alice-ci", "--yes")).returncode == 0
    assert aad_arm.compute("alice-ci")["properties"]["properties"]["state"] == "Stopped"
    # Stopped, it still offers the kernels it last had.
    assert compute_specs()[name]["display_name"] == "Python 3 (ipykernel) · alice-ci (compute instance)"

    caplog.set_level("INFO")
    km, kc = await started(name)
    try:
        _, outputs = await run(kc, "import os\nprint(os.getppid())")
        assert int(text(outputs)) == instance.proc.pid
        assert aad_arm.compute("alice-ci")["properties"]["properties"]["state"] == "Running"
        assert len(aad_arm.arm_requests("POST", "/computes/alice-ci/start")) == 1
        # The kernel's status said what it was waiting for, as Azure reported it.
        assert "jupyter_compute: start alice-ci: start in Azure" in caplog.text, caplog.text[-2000:]
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


@pytest.mark.fault
def test_kernels_of_a_killed_server_are_shut_down_on_the_instance_by_the_next_look(instance, project,  # noqa: F811
                                                                                   compute_db, request):
    """This machine's Jupyter server is SIGKILLed with a kernel running on the instance: the next
    process to look at the store (here a CLI call) shuts that kernel down there."""
    import signal
    import urllib.request

    from tests.servers import ServerProcess

    name = next(iter(wait_for(compute_specs, timeout=5, message="the instance's kernelspec")))
    # Started in the project folder, as a person starts JupyterLab there: it finds config.json.
    local = ServerProcess(project).start()
    request.addfinalizer(local.stop)
    req = urllib.request.Request(f"{local.url}/api/kernels", method="POST", data=json.dumps({"name": name}).encode(),
                                 headers={"Authorization": f"token {local.token}"})
    with urllib.request.urlopen(req, timeout=90) as r:
        assert r.status == 201
    wait_for(lambda: kernel_rows(compute_db), timeout=10, message="the kernel's record")
    assert len(instance.api("GET", "api/kernels")[1]) == 1
    local.proc.send_signal(signal.SIGKILL)
    local.proc.wait(10)
    assert len(instance.api("GET", "api/kernels")[1]) == 1  # nobody told the instance
    assert cli("list").returncode == 0
    assert instance.api("GET", "api/kernels") == (200, []) and kernel_rows(compute_db) == []
