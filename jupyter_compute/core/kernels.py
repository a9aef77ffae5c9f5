"""Targets as Jupyter kernels: the kernelspecs that name them, and the protocol of a kernel a family
starts on a target for one notebook.

Every kernel-capable target offers one or more kernelspecs (``Backend.kernel_specs``). They are
written as ordinary kernelspec folders in the Jupyter data directory, so the Launcher, the kernel
picker, ``jupyter kernelspec list``, nbclient and papermill all find them, each naming the
``jupyter-compute`` kernel provisioner and its target. ``sync_kernelspecs`` keeps the folders in
step with the store; every face that changes targets calls it.

Choosing such a kernel starts a ``TargetKernel`` (``Backend.kernel``): a fresh kernel on the target
for that notebook, never the target itself, recorded in the store so it is found and ended when its
target goes or the process that started it dies.
"""
from __future__ import annotations

import abc
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: The provisioner's name in kernelspecs (the ``jupyter_client.kernel_provisioners`` entry point).
PROVISIONER = "jupyter-compute"
#: Kernelspec folders written here start with this, and hold ``MARKER`` in their metadata.
PREFIX = "compute-"
MARKER = "jupyter_compute"
_UNSAFE = re.compile(r"[^a-z0-9._-]+")
MAX_NAME = 120


@dataclass
class KernelSpecInfo:
    """One kernel a target offers: what the Launcher and kernel picker show, and how to start it."""
    display_name: str
    language: str = "python"
    #: Distinguishes several kernels of one target (a remote server's kernelspec names); "" for one.
    variant: str = ""
    #: "signal" (SIGINT to the process) or "message" (an interrupt_request on the control channel).
    interrupt_mode: str = "signal"
    #: Shown in the Launcher's "Compute" section.
    category: str = "Compute"
    metadata: dict[str, Any] = field(default_factory=dict)


def spec_name(workspace: str, target: str, variant: str = "") -> str:
    """The kernelspec name of a target's kernel: ``compute-NAME`` in the local workspace."""
    parts = [target] if workspace == "local" else [workspace, target]
    if variant:
        parts.append(variant)
    name = PREFIX + _UNSAFE.sub("_", "-".join(parts).lower())
    if len(name) > MAX_NAME:  # a folder name; keep it well within what file systems allow
        import hashlib
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{name[:MAX_NAME - 11]}-{digest}"
    return name


def kernel_json(workspace: str, target: str, info: KernelSpecInfo, db_path: str) -> dict[str, Any]:
    """The kernel.json of one kernel of a target. The command line is only what a client without
    provisioners would run: one that explains how to use the kernel."""
    import sys

    return {
        "argv": [sys.executable, "-m", "jupyter_compute.kernels.unprovisioned", "{connection_file}"],
        "display_name": info.display_name,
        "language": info.language,
        "interrupt_mode": info.interrupt_mode,
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": PROVISIONER,
                "config": {"workspace": workspace, "target": target, "variant": info.variant, "store": db_path},
            },
            MARKER: {"workspace": workspace, "target": target, "variant": info.variant, "store": db_path,
                     "category": info.category, **info.metadata},
        },
    }


def kernels_dir(settings: Any) -> str:
    return settings.compute.effective_kernelspec_dir()


def _ours(path: str, db_path: str) -> bool:
    """Whether the kernelspec folder ``path`` was written for the store at ``db_path``."""
    try:
        with open(os.path.join(path, "kernel.json")) as f:
            meta = (json.load(f).get("metadata") or {}).get(MARKER) or {}
    except (OSError, ValueError, AttributeError):
        return False
    return meta.get("store") == db_path


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _write(folder: str, spec: dict, known: dict[str, tuple[dict, Any]] | None = None,
           check: bool = True) -> bool:
    """Write ``spec`` as ``folder``/kernel.json unless it is already that; True if it changed.

    While ``known`` (``KernelspecMemory.files``) holds this spec and, when ``check``, the file's
    signature is still the one then, the file is neither encoded nor read again: JSON with an
    indent is encoded in pure Python, which at a thousand targets held the interpreter for tens of
    ms on every change of any target."""
    path = folder + os.sep + "kernel.json"  # not os.path.join: thousands of calls per sync
    if known is not None:
        seen = known.get(folder)
        if seen is not None and seen[0] == spec and (not check or seen[1] == _signature(path)):
            return False
    text = json.dumps(spec, indent=1, sort_keys=True)
    changed = True
    try:
        with open(path) as f:
            changed = f.read() != text
    except OSError:
        pass
    if changed:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".kernel-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one
    if known is not None:
        known[folder] = (spec, _signature(path))
    return changed


class KernelspecMemory:
    """What one process's kernelspec syncs remember from the last: per target, the stored row its
    kernels were made from (the store hands back the same row while it is unchanged) and those
    kernels; per folder, the kernel.json last found or written there and the file's signature then.
    A sync then does work in proportion to what changed, not to how many targets there are."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[dict, list[tuple[str, dict]]]] = {}
        self.files: dict[str, tuple[dict, Any]] = {}
        #: When the folders are next read back whole (``FILES_CHECKED_EVERY``), monotonic seconds.
        self.check_files_at = 0.0

    def files_due(self) -> bool:
        """Whether this sync reads the folders back (and so mends what others changed there)."""
        import time

        now = time.monotonic()
        if now < self.check_files_at:
            return False
        self.check_files_at = now + FILES_CHECKED_EVERY
        return True


#: Seconds between syncs that read every folder back: one that someone else deleted or rewrote is
#: mended by the first sync after that. The syncs between write and remove what changed in the
#: store, from memory, without a system call per target.
FILES_CHECKED_EVERY = 10.0


async def expected_kernelspecs(compute: Any) -> dict[str, dict]:
    """name -> kernel.json of every kernel the targets of this store offer now."""
    import asyncio

    db_path = os.path.abspath(compute.settings.compute.effective_db_path())
    stored = [(ws, await ws.store.list_targets(ws.id)) for ws in compute.each_workspace()]
    # Thousands of targets make this real work: off the event loop.
    return await asyncio.to_thread(_expected, stored, db_path, compute.kernelspec_memory)


def _expected(stored: list, db_path: str, memory: KernelspecMemory | None = None) -> dict[str, dict]:
    wanted: dict[str, dict] = {}
    made = memory.rows if memory is not None else {}
    now: dict[tuple[str, str], tuple[dict, list[tuple[str, dict]]]] = {}
    for ws, rows in stored:
        for row in rows:
            key = (ws.id, row["name"])
            seen = made.get(key)
            if seen is None or seen[0] is not row:
                seen = (row, [(spec_name(ws.id, target, info.variant), kernel_json(ws.id, target, info, db_path))
                              for target, infos in ws.kernel_specs_of([row]) for info in infos])
            now[key] = seen
            for name, spec in seen[1]:
                if name in wanted:  # names differ only in case: the first keeps the kernel
                    log.warning("jupyter_compute: two targets would share the kernel name %s; %s has none", name,
                                row["name"])
                    continue
                wanted[name] = spec
    if memory is not None:
        memory.rows = now  # targets no longer stored are forgotten
    return wanted


def _written_since(folder: str, when: float) -> bool:
    try:
        return os.stat(os.path.join(folder, "kernel.json")).st_mtime >= when
    except OSError:
        return False


def write_kernelspecs(directory: str, db_path: str, wanted: dict[str, dict], read_at: float | None = None,
                      known: dict[str, tuple[dict, Any]] | None = None,
                      check_files: bool = True) -> tuple[list[str], list[str]]:
    """Make ``directory`` hold exactly ``wanted`` among the folders of this store; (written, removed).

    ``wanted`` was read from the store at ``read_at``: a folder written after that (by another
    process that has seen a newer target) is left for the next sync to judge. Blocking: call it
    off the event loop. ``known`` is ``KernelspecMemory.files``; without ``check_files`` the
    folders it holds are taken to be as it says, and only they are candidates for removal."""
    written, removed = [], []
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, "")  # folders are base + name: not os.path.join per target
    check = check_files or known is None
    for name, spec in wanted.items():
        if _write(base + name, spec, known, check):
            written.append(name)
    entries = os.listdir(directory) if check else [
        folder[len(base):] for folder in (known or {}) if folder[len(base):] not in wanted]
    for entry in entries:
        if entry.startswith(PREFIX) and entry not in wanted and _ours(folder := base + entry, db_path):
            if read_at is not None and _written_since(folder, read_at):
                continue
            shutil.rmtree(folder, ignore_errors=True)
            if known is not None:
                known.pop(folder, None)
            removed.append(entry)
    return written, removed


async def sync_kernelspecs(compute: Any, *, check_files: bool | None = None) -> tuple[list[str], list[str]]:
    """Bring the kernelspec folders of this store in step with its targets; (written, removed).
    The folders are read back when ``check_files``, or by default every ``FILES_CHECKED_EVERY``."""
    import asyncio

    import time

    memory = compute.kernelspec_memory
    read_at = time.time()
    wanted = await expected_kernelspecs(compute)
    db_path = os.path.abspath(compute.settings.compute.effective_db_path())
    check = memory.files_due() if check_files is None else check_files
    return await asyncio.to_thread(write_kernelspecs, kernels_dir(compute.settings), db_path, wanted, read_at,
                                   memory.files, check)


class KernelGone(Exception):
    """The kernel ended; ``reason`` says why in words a person can act on."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TargetKernel(abc.ABC):
    """A kernel a family starts on a target for one notebook (``Backend.kernel``).

    ``start`` returns the kernel's connection info, reachable from this machine's loopback; the
    kernel's channels then go straight to it. The rest is what jupyter_client's provisioner API asks
    of the far side. ``reason`` says why the kernel ended, once it has.
    """

    #: Why the kernel ended, when it did not end because it was asked to.
    reason: str | None = None
    #: Whether a restart is made by the far side itself (``restart``), keeping this object and its
    #: connection, rather than by ending this kernel and starting another.
    keeps_across_restart: bool = False

    @abc.abstractmethod
    async def start(self, kernel_id: str, env: dict[str, str], connection: dict | None = None) -> dict[str, Any]:
        """Start the kernel; its connection info (ip, ports, key, transport, signature_scheme).

        ``connection`` is the info of the kernel this one replaces (a restart): clients still
        connected to it keep working when the new kernel takes its ports and key again."""

    @abc.abstractmethod
    async def poll(self) -> int | None:
        """None while the kernel runs; its exit code (negative: the signal) once it has ended."""

    @abc.abstractmethod
    async def send_signal(self, signum: int) -> None:
        """Deliver a signal to the kernel (SIGINT interrupts it)."""

    @abc.abstractmethod
    async def stop(self, *, force: bool = False) -> None:
        """End the kernel (``force``: at once); the target itself keeps running."""

    @abc.abstractmethod
    async def cleanup(self) -> None:
        """Release what the kernel held here (files, tunnels, its record in the store)."""

    async def restart(self) -> dict[str, Any]:
        """Restart the kernel in place (for ``keeps_across_restart``); its connection info."""
        raise NotImplementedError

    def expect_end(self) -> None:
        """The kernel was asked to shut down (a shutdown request its client sent): its exit is not
        a death to report."""

    def info(self) -> dict[str, Any]:
        """What another process needs to find this kernel again (``restore``)."""
        return {}

    def restore(self, info: dict[str, Any]) -> None:
        """Take up a kernel ``info`` describes."""


def end_recorded_kernels(store: Any, workspace: str, target: str | None, reason: str, *,
                         only: Any = None, grace: float = 3.0) -> list[str]:
    """End the kernels the store records for ``target`` (all of the workspace's when None) that run
    on this machine, saying ``reason``; their records stay for their owners to read the reason and
    remove. ``only`` picks among the records. Blocking: supervisors call it, async code off the loop."""
    from . import processes

    ended = []
    for row in store.list_kernels(workspace, target):
        if only is not None and not only(row):
            continue
        if not (row.get("runtime") or {}).get("reason"):
            store.update_kernel(row["id"], reason=reason)
        if row.get("process") and processes.alive(row["process"]):
            processes.terminate(None, [row["process"]], grace)
            ended.append(row["id"])
    return ended


def orphaned_kernels(store: Any, workspace: str, targets: set[str]) -> list[dict]:
    """The kernel records of ``workspace`` whose target is gone or whose owner (the process that
    started them: a Jupyter server, nbclient) died without ending them."""
    from . import processes

    return [row for row in store.list_kernels(workspace)
            if row["target"] not in targets or not processes.alive(row["owner"])]


def end_local_kernel(row: dict) -> bool:
    """End a recorded kernel whose process runs on this machine; whether there was one to end."""
    from . import processes

    if row.get("process") and processes.alive(row["process"]):
        processes.terminate(None, [row["process"]], 2.0)
        return True
    return False
