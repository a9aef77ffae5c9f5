"""Targets' own kernels: ``target_kernels`` makes a local-kernel target's and an SSH target's (on a
loopback sshd) for the routing section's interleaved rounds; ``run`` measures how long choosing a
running target's kernel takes to give a ready kernel, beside a plain kernel's start, and how long an
interrupt takes to end a cell there, beside a plain kernel's."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from .common import Recorder
from .notebook import Frontend, Session

START_ROUNDS = 5
PY = sys.executable


def _specs(s: Session) -> KernelSpecManager:
    return KernelSpecManager(kernel_dirs=[str(s.tmp / "data" / "kernels")])


def _remote_server(s: Session):
    """A second, plain Jupyter server on loopback, attached as target ``bench-js``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.families.jupyter_server.test_remote_jupyter import JupyterServer

    root = s.tmp / "remote"
    root.mkdir(exist_ok=True)
    # No output throttle: the transfer figure is about the path, not the server's rate limit.
    server = JupyterServer(root, args=("--ZMQChannelsWebsocketConnection.iopub_data_rate_limit=0",)).start()
    s.hosts.append(server.stop)
    s.targets.append("bench-js")
    r = subprocess.run([sys.executable, "-m", "jupyter_compute.cli", "attach", "bench-js", "--kind", "jupyter",
                        "--url", server.url, "--token-stdin"], input=server.token + "\n", capture_output=True,
                       text=True, env=s.env, cwd=s.tmp, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"attaching the second Jupyter server failed: {r.stderr[-1000:]}")
    return server


def target_kernels(s: Session) -> dict[str, Frontend]:
    """Kernels of a local-kernel target, an SSH target and a Jupyter server target, by the figure
    each one's cells make."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.sshd import Sshd

    s.create("bench-kt", "local-kernel")
    sshd = Sshd(s.tmp).start()
    s.hosts.append(sshd.stop)
    s.targets.append("bench-ssh")
    s.cli("attach", "bench-ssh", "--kind", "ssh", "--host", "127.0.0.1", "--port", str(sshd.port),
          "--ssh-private-key", str(sshd.client_key_path), "--python", PY, "--accept-host-key", sshd.fingerprint)
    s.cli("start", "bench-ssh")
    _remote_server(s)
    out = {}
    for key, name in (("kernel_target_rtt_ms", "compute-bench-kt"), ("ssh_kernel_rtt_ms", "compute-bench-ssh"),
                      ("jupyter_kernel_rtt_ms", "compute-bench-js-python3")):
        km = KernelManager(kernel_name=name, kernel_spec_manager=_specs(s))
        km.start_kernel(env=s.env)
        s.kernels.append(km)
        fe = Frontend(km)
        s.frontends.append(fe)
        out[key] = fe
    return out


def run(rec: Recorder) -> None:
    with Session("kernels") as s:
        s.create("bench-k", "local-kernel")
        specs = _specs(s)
        starts: dict[str, list[float]] = {"floor_kernel_start_s": [], "kernel_target_start_s": []}
        for _ in range(START_ROUNDS):
            for key, name in (("floor_kernel_start_s", "python3"), ("kernel_target_start_s", "compute-bench-k")):
                t0 = time.perf_counter()
                km = KernelManager(kernel_name=name, **({"kernel_spec_manager": specs} if name != "python3" else {}))
                km.start_kernel(env=s.env)
                kc = km.client()
                kc.start_channels()
                kc.wait_for_ready(timeout=60)
                starts[key].append(time.perf_counter() - t0)
                kc.stop_channels()
                km.shutdown_kernel(now=True)
        for key, xs in starts.items():
            rec.add(key, xs, "s")
        _interrupts(s, rec, specs)
        _transfer(s, rec, specs)


INTERRUPT_ROUNDS = 5
SLEEP = "import time\nprint('sleeping', flush=True)\ntime.sleep(60)"


def _interrupt_s(km: KernelManager, fe: Frontend) -> float:
    """From the interrupt (sent once the sleep has begun) to the interrupted cell's reply."""
    kc = fe.kc
    msg_id = kc.execute(SLEEP)
    while True:
        m = kc.get_iopub_msg(timeout=30)
        if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream":
            break
    t0 = time.perf_counter()
    km.interrupt_kernel()
    while True:
        reply = kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    took = time.perf_counter() - t0
    if reply["content"].get("ename") != "KeyboardInterrupt":
        raise RuntimeError(f"the interrupt did not end the cell: {reply['content']}")
    return took


def _interrupts(s: Session, rec: Recorder, specs: KernelSpecManager) -> None:
    """An interrupt ending ``time.sleep(60)`` on a local-kernel target's own kernel, beside a plain
    kernel's, in interleaved rounds."""
    kernels = {}
    for key, name in (("floor_interrupt_s", "python3"), ("kernel_target_interrupt_s", "compute-bench-k")):
        km = KernelManager(kernel_name=name, **({"kernel_spec_manager": specs} if name != "python3" else {}))
        km.start_kernel(env=s.env)
        s.kernels.append(km)
        fe = Frontend(km)
        s.frontends.append(fe)
        kernels[key] = (km, fe)
    took: dict[str, list[float]] = {key: [] for key in kernels}
    for _ in range(INTERRUPT_ROUNDS):
        for key, (km, fe) in kernels.items():
            took[key].append(_interrupt_s(km, fe))
    for key, xs in took.items():
        rec.add(key, xs, "s")


BIG = 50 * 2**20
TRANSFER_ROUNDS = 3


def _transfer(s: Session, rec: Recorder, specs: KernelSpecManager) -> None:
    """A 50 MB result pulled through a Jupyter server target's kernel here, beside the same result
    over the remote server's own kernel websocket, in interleaved rounds."""
    import asyncio

    from jupyter_compute.transport.jupyter_client import JupyterClient, StaticAuth
    from jupyter_compute.transport.websocket import WebsocketRoute

    from .common import MB

    server = _remote_server(s)
    km = KernelManager(kernel_name="compute-bench-js-python3", kernel_spec_manager=specs)
    km.start_kernel(env=s.env)
    s.kernels.append(km)
    bridged = Frontend(km)
    s.frontends.append(bridged)
    code = f"print('y' * {BIG}, end='')"

    async def direct_rounds() -> list[float]:
        client = JupyterClient(server.url, StaticAuth.from_spec(server.token))
        kernel = await client.start_kernel()
        route = WebsocketRoute(server.url, kernel["id"], StaticAuth.from_spec(server.token), target="direct")
        await route.open()
        out = []
        try:
            for _ in range(TRANSFER_ROUNDS):
                got = [0]
                t0 = time.perf_counter()
                await route.execute(code, on_message=lambda m: got.__setitem__(
                    0, got[0] + len(m["content"].get("text", ""))))
                out.append(BIG / MB / (time.perf_counter() - t0))
                assert got[0] == BIG, got
                # Interleaved: the bridged round follows each direct one.
                t0 = time.perf_counter()
                text = bridged.run(code)
                assert len(text) == BIG, len(text)
                bridged_mb_s.append(BIG / MB / (time.perf_counter() - t0))
        finally:
            await route.close()
            await client.shutdown(kernel["id"])
            await client.close()
        return out

    bridged_mb_s: list[float] = []
    direct = asyncio.run(direct_rounds())
    rec.add("jupyter_kernel_pull_mb_s", bridged_mb_s, "MB/s")
    rec.add("jupyter_websocket_pull_mb_s", direct, "MB/s")
