"""Targets' own kernels: ``target_kernels`` makes a local-kernel target's and an SSH target's (on a
loopback sshd) for the routing section's interleaved rounds; ``run`` measures how long choosing a
running target's kernel takes to give a ready kernel, beside a plain kernel's start."""
from __future__ import annotations

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


def target_kernels(s: Session) -> dict[str, Frontend]:
    """Kernels of a local-kernel target and of an SSH target, by the figure each one's cells make."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.sshd import Sshd

    s.create("bench-kt", "local-kernel")
    sshd = Sshd(s.tmp).start()
    s.before_exit.append(sshd.stop)
    s.targets.append("bench-ssh")
    s.cli("attach", "bench-ssh", "--kind", "ssh", "--host", "127.0.0.1", "--port", str(sshd.port),
          "--ssh-private-key", str(sshd.client_key_path), "--python", PY, "--accept-host-key", sshd.fingerprint)
    s.cli("start", "bench-ssh")
    out = {}
    for key, name in (("kernel_target_rtt_ms", "compute-bench-kt"), ("ssh_kernel_rtt_ms", "compute-bench-ssh")):
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
