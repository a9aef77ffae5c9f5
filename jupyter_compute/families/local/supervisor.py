"""The detached supervisor of one ``local-kernel``: started by whoever starts the target, it
forks away from them, launches the kernel, records in the store when the kernel answers, and
then watches it: the memory limit, idle shutdown, and an unexpected exit.

Run as ``python -m jupyter_compute.families.local.supervisor --db … --workspace … --name …``;
it prints its own process identity and the launching call returns at once.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid

from ...core import processes as procs
from ...core.kernels import end_recorded_kernels
from ...core.clock import utcnow
from ...core.store import Store
from .kernels import memory_reason

POLL = 0.25
#: Seconds between looks at the store: is this supervisor still its target's?
OWNER_CHECK = 1.0
ACTIVITY_WRITE_INTERVAL = 5.0


class Supervisor:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.store = Store(args.db)
        self.ws, self.name, self.op = args.workspace, args.name, args.operation
        self.ident = procs.identity()
        self.kernel: subprocess.Popen | None = None
        self.kernel_ident: str | None = None
        self.stopping = threading.Event()
        self.busy = False
        self.python_version: str | None = None
        self.last_activity = time.time()
        self._activity_written = 0.0

    # -- store helpers ---------------------------------------------------------------------------
    def progress(self, text: str) -> None:
        if self.op:
            self.store.update_operation(self.op, progress=text)

    def fail(self, message: str, code: str, *, state: str = "failed") -> None:
        err = {"message": message, "code": code, "at": utcnow().isoformat()}
        self.store.update_target(self.ws, self.name, expect_runtime={"supervisor": self.ident}, state=state,
                                 runtime={}, errors=[err] if state == "failed" else [], provider_state=None)
        if self.op:
            self.store.finish_operation(self.op, error={"message": message, "reason": code})
            self.op = None

    # -- lifecycle -------------------------------------------------------------------------------
    def run(self) -> int:
        row = self.store.get_target(self.ws, self.name)
        if row is None:
            return 1
        if self.op:
            self.store.update_operation(self.op, owner=self.ident)
        other = (row.get("runtime") or {}).get("supervisor")
        if other and other != self.ident and procs.alive(other):
            # Never launch a second kernel beside a live one: the one recorded would be orphaned.
            if self.op:
                self.store.finish_operation(self.op, error={
                    "message": f"a kernel of '{self.name}' is already running (supervisor {other}); stop it first",
                    "reason": "already_running"})
            return 1
        spec = row["spec"]
        python = spec.get("python") or sys.executable
        os.makedirs(self.args.runtime_dir, mode=0o700, exist_ok=True)
        stem = f"kernel-{self.ws}-{self.name}-{uuid.uuid4().hex[:8]}"
        conn_file = os.path.join(self.args.runtime_dir, stem + ".json")
        log_file = os.path.join(self.args.runtime_dir, stem + ".log")
        # The kernel binds its own ports and writes them, with a key of its own, to conn_file:
        # ports chosen here and bound there could be taken in between ("Address already in use").
        env = {**os.environ, **(spec.get("env") or {})}
        self.progress(f"starting the kernel ({python})")
        log = open(log_file, "ab", buffering=0)
        os.chmod(log_file, 0o600)
        try:
            # Its history (In, Out, %history) is kept in memory only: the notebook's own kernel already
            # records each %%compute cell, and every kernel writing every cell to one sqlite history
            # file cost each routed cell about 0.5 ms, more with many notebooks at once.
            self.kernel = subprocess.Popen(
                [python, "-m", "ipykernel_launcher", "-f", conn_file, "--ip=127.0.0.1",
                 "--HistoryManager.hist_file=:memory:"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=spec.get("cwd") or os.path.expanduser("~"), close_fds=True)
        except OSError as e:
            self.fail(f"could not run {python}: {e}", "launch_failed")
            return 1
        procs.failpoint("local-kernel-launched")
        self.kernel_ident = procs.identity(self.kernel.pid)
        self.store.update_target(self.ws, self.name, runtime={
            "supervisor": self.ident, "kernel": self.kernel_ident, "kernel_pid": self.kernel.pid,
            "connection_file": conn_file, "log_file": log_file, "python": python,
            "started": utcnow().isoformat(), "last_activity": utcnow().isoformat()})
        self.progress("waiting for the kernel to answer")
        if not self.wait_ready(conn_file, log_file, python):
            return 1
        self.store.update_target(self.ws, self.name, expect_runtime={"supervisor": self.ident},
                                 state="running", errors=[], provider_state=None,
                                 runtime_merge={"python_version": self.python_version})
        if self.op:
            self.store.finish_operation(self.op, progress="running")
            self.op = None
        try:
            return self.watch(conn_file, spec)
        finally:
            # The notebooks' kernels on this target go with it, saying why.
            row = self.store.get_target(self.ws, self.name) or {}
            why = {"idle shutdown": "stopped after its idle time"}.get(row.get("provider_state") or "", None)
            errors = row.get("errors") or []
            reason = (f"the target '{self.name}' {why}" if why else
                      f"the target '{self.name}' stopped: {errors[-1]['message']}" if errors else
                      f"the target '{self.name}' was stopped")
            end_recorded_kernels(self.store, self.ws, self.name, reason)

    def wait_ready(self, conn_file: str, log_file: str, python: str) -> bool:
        from jupyter_client import BlockingKernelClient

        kc = None
        deadline = time.monotonic() + self.args.ready_timeout
        try:
            while time.monotonic() < deadline:
                if self.stopping.is_set():
                    self.kill_kernel()
                    return False
                if self.kernel.poll() is not None:
                    tail = procs.tail_of(log_file)
                    hint = ""
                    if "No module named ipykernel" in tail:
                        hint = f" ipykernel is not installed for {python}: run '{python} -m pip install ipykernel'."
                    self.fail(f"the kernel exited during start (code {self.kernel.returncode}).{hint} "
                              f"Last output: {tail[-800:]}", "kernel_start_failed")
                    return False
                if kc is None:
                    info = procs.kernel_connection(conn_file)
                    if info is None:  # the kernel has not bound its ports yet
                        time.sleep(0.05)
                        continue
                    kc = BlockingKernelClient()
                    kc.load_connection_info(info)
                    kc.start_channels(iopub=False, stdin=False, hb=False, control=False)
                kc.kernel_info()
                try:
                    # Any reply proves the kernel answers; requests sent while it was still
                    # starting are all answered at once, so don't insist on the latest one.
                    reply = kc.get_shell_msg(timeout=1.0)
                    if reply["msg_type"] == "kernel_info_reply":
                        version = (reply["content"].get("language_info") or {}).get("version") or ""
                        self.python_version = ".".join(version.split(".")[:2]) or None
                        return True
                except Exception:
                    continue
            self.kill_kernel()
            self.fail(f"the kernel did not answer within {self.args.ready_timeout:.0f} s; see {log_file}",
                      "kernel_start_timeout")
            return False
        finally:
            if kc is not None:
                kc.stop_channels()

    def watch(self, conn_file: str, spec: dict) -> int:
        from jupyter_client import BlockingKernelClient

        kc = BlockingKernelClient(connection_file=conn_file)
        kc.load_connection_file()
        kc.start_channels(shell=False, stdin=False, hb=False, control=False)
        threading.Thread(target=self._follow_activity, args=(kc,), daemon=True).start()
        limit = spec.get("memory_limit_mb")
        idle_min = spec.get("idle_shutdown_minutes")
        checked = time.monotonic()
        while True:
            if self.stopping.is_set():
                self.shutdown_kernel(kc)
                return 0
            if time.monotonic() - checked >= OWNER_CHECK:
                checked = time.monotonic()
                if not self.still_wanted():
                    self.kill_kernel()
                    return 0
            code = self.kernel.poll()
            if code is not None:
                how = procs.exit_words(code)
                self.store.update_target(
                    self.ws, self.name, expect_state=("running",), expect_runtime={"supervisor": self.ident},
                    state="failed", runtime={},
                    errors=[{"message": f"the kernel process exited unexpectedly ({how})", "code": "kernel_died",
                             "at": utcnow().isoformat()}])
                return 0
            if limit:
                used = procs.tree_rss_mb(self.kernel.pid)
                if used > limit:
                    self.ending()
                    self.kill_kernel()
                    self.fail(memory_reason(self.name, used, limit), "memory_limit")
                    return 0
            self._write_activity()
            if idle_min and not self.busy and time.time() - self.last_activity > idle_min * 60:
                self.ending()
                self.shutdown_kernel(kc)
                self.store.update_target(self.ws, self.name, expect_runtime={"supervisor": self.ident},
                                         state="stopped", runtime={}, provider_state="idle shutdown")
                return 0
            time.sleep(POLL)

    def still_wanted(self) -> bool:
        """Whether the store still names this supervisor as its target's: a target deleted, or taken
        over by another supervisor, leaves nothing here to keep running."""
        try:
            row = self.store.get_target(self.ws, self.name)
        except Exception:  # the store cannot be read just now: keep going, look again later
            return True
        if row is None or (row.get("runtime") or {}).get("supervisor") != self.ident:
            print(f"jupyter_compute: '{self.name}' was deleted or is run by another supervisor; ending its kernel",
                  file=sys.stderr, flush=True)
            return False
        return True

    def _follow_activity(self, kc) -> None:
        while not self.stopping.is_set():
            try:
                msg = kc.get_iopub_msg(timeout=1.0)
            except Exception:
                continue
            if msg.get("msg_type") == "status":
                self.busy = msg["content"].get("execution_state") == "busy"
                self.last_activity = time.time()

    def _write_activity(self) -> None:
        if self.last_activity > self._activity_written and time.time() - self._activity_written > ACTIVITY_WRITE_INTERVAL:
            self._activity_written = time.time()
            stamp = utcnow().fromtimestamp(self.last_activity, tz=utcnow().tzinfo).isoformat()
            self.store.update_target(self.ws, self.name, expect_runtime={"supervisor": self.ident},
                                     runtime_merge={"last_activity": stamp})

    def ending(self) -> None:
        """Say the kernel is being stopped on purpose before it goes, so that nobody watching
        (the server's monitor) takes its exit for a crash."""
        self.store.update_target(self.ws, self.name, expect_runtime={"supervisor": self.ident}, state="stopping")

    def shutdown_kernel(self, kc=None) -> None:
        if self.kernel is None or self.kernel.poll() is not None:
            return
        try:
            if kc is not None:
                kc.shutdown()
            self.kernel.wait(timeout=3)
        except Exception:
            self.kill_kernel()

    def kill_kernel(self) -> None:
        if self.kernel is None:
            return
        for sig, wait in ((signal.SIGTERM, 2), (signal.SIGKILL, 2)):
            if self.kernel.poll() is not None:
                return
            try:
                self.kernel.send_signal(sig)
                self.kernel.wait(timeout=wait)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="jupyter_compute.families.local.supervisor")
    ap.add_argument("--db", required=True)
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--operation")
    ap.add_argument("--runtime-dir", required=True)
    ap.add_argument("--ready-timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    procs.detach()
    sup = Supervisor(args)
    signal.signal(signal.SIGTERM, lambda *_: sup.stopping.set())
    try:
        return sup.run()
    except Exception:
        try:
            sup.kill_kernel()
            sup.fail("the kernel supervisor failed: " + traceback.format_exc(limit=3)[-800:], "supervisor_failed")
        except Exception:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())

