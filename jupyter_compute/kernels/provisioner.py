"""The ``jupyter-compute`` kernel provisioner: what a kernelspec of a target names, so that the
Launcher, the kernel picker, nbclient, papermill and any Jupyter client start a kernel on that
target (jupyter_client's ``jupyter_client.kernel_provisioners`` extension point).

Choosing the kernel starts a fresh kernel on the target for that notebook, through the core
(``Workspace.start_kernel``); the target is started first if it is stopped. The kernel's channels
then go straight to it: everything a local ipykernel does works. A restart starts a new kernel on
the same target; it does not start a target that was stopped meanwhile, and says so.
"""
from __future__ import annotations

import asyncio
import functools
import os
import signal
import weakref
from typing import Any, Callable

from jupyter_client.provisioning import KernelProvisionerBase
from traitlets import Unicode

from ..core.errors import ComputeError
from ..core.kernels import TargetKernel
from ..core.workspace import Compute

#: The Compute of each store this process provisions kernels from, shared by its kernels (and
#: by the server extension, which registers its own).
_computes: dict[str, Compute] = {}
#: One lock per event loop (a lock belongs to the loop it is first used on).
_locks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]" = weakref.WeakKeyDictionary()


def use_compute(compute: Compute) -> None:
    """Have this process's kernels of ``compute``'s store go through ``compute`` (the server's)."""
    _computes[os.path.abspath(compute.settings.compute.effective_db_path())] = compute


async def compute_for(store: str, kernels_dir: str = "") -> Compute:
    """The Compute of ``store``; one made here writes the store's kernelspecs where this one was
    found (``kernels_dir``), whatever this client's own data directory is."""
    lock = _locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock:
        key = os.path.abspath(store) if store else ""
        compute = _computes.get(key)
        if compute is None:
            from traitlets.config import Config

            config = Config()
            if store:
                config.ComputeConfig.db_path = store
            if kernels_dir:
                config.ComputeConfig.kernelspec_dir = kernels_dir
            compute = await asyncio.to_thread(_make, config, store)
            _computes[key] = compute
        return compute


def _make(config: Any, store: str) -> Compute:
    # The kernelspec names its store: it wins over the environment of whichever client reads it.
    saved = os.environ.pop("JUPYTER_COMPUTE_DB", None) if store else None
    try:
        return Compute.from_config(config)
    finally:
        if saved is not None:
            os.environ["JUPYTER_COMPUTE_DB"] = saved


#: Called with (kernel_id, workspace, target, reason) when a kernel on a target ends for a reason of
#: its own (its target stopped, its memory limit): the server extension tells the browsers.
ended_listeners: list[Callable[[str, str, str, str], None]] = []


def _tell_ended(kernel_id: str, workspace: str, target: str, reason: str) -> None:
    for listener in list(ended_listeners):
        try:
            listener(kernel_id, workspace, target, reason)
        except Exception:  # a listener's failure must not take the kernel manager down
            pass


class KernelStartFailed(RuntimeError):
    """A kernel on a target could not start; the message says why, in words a person can act on."""


def _on_own_loop(method):
    """Run the provisioner's ``method`` where its kernel lives.

    An async kernel manager (jupyter_server's, nbclient's) runs its loop all along, and the
    kernel's own tasks (a Jupyter server kernel's bridge, an SSH kernel's lease) run on it. A
    blocking one (``jupyter console``, a plain ``KernelManager``) runs each call to completion in
    a loop that then stands still, so those tasks would stop between calls: under it, every call
    goes to this process's background loop, which keeps running.
    """
    @functools.wraps(method)
    async def wrapper(self: "ComputeProvisioner", *args: Any, **kwargs: Any) -> Any:
        from jupyter_client.manager import AsyncKernelManager

        if isinstance(self.parent, AsyncKernelManager) or self.parent is None:
            return await method(self, *args, **kwargs)
        from ..notebook.bridge import LoopThread

        loop_thread = LoopThread.get()
        if loop_thread.in_loop_thread():
            return await method(self, *args, **kwargs)
        return await asyncio.wrap_future(loop_thread.submit(method(self, *args, **kwargs)))
    return wrapper


class ComputeProvisioner(KernelProvisionerBase):
    """A kernel on a compute target, named by the kernelspec's ``kernel_provisioner.config``."""

    workspace = Unicode("local", config=True, help="Workspace of the target.")
    target = Unicode(config=True, help="Name of the target the kernel runs on.")
    variant = Unicode("", config=True, help="Which of the target's kernels (a remote kernelspec's name).")
    store = Unicode("", config=True, help="The store the target is recorded in.")

    _kernel: TargetKernel | None = None
    _launched = False
    _exit_code: int | None = None

    @property
    def has_process(self) -> bool:
        return self._kernel is not None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        # The kernelspec's command line is only a note for clients without provisioners.
        kwargs.pop("extra_arguments", None)
        kwargs = await super().pre_launch(**kwargs)
        kwargs["cmd"] = []
        return kwargs

    @_on_own_loop
    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict[str, Any]:
        resource_dir = getattr(self.kernel_spec, "resource_dir", "") or ""
        compute = await compute_for(self.store, os.path.dirname(resource_dir) if resource_dir else "")
        first = not self._launched
        self._launched = True
        self._exit_code = None
        where = f"'{self.target}'" + (f" (workspace '{self.workspace}')" if self.workspace != "local" else "")

        def progress(op: Any) -> None:
            if op.progress:
                self.log.info("jupyter_compute: %s %s: %s", op.action, self.target, op.progress)

        try:
            if self._kernel is not None and self._kernel.keeps_across_restart:
                # Restarted where it runs, through the far side's own restart.
                kernel, info = self._kernel, await self._kernel.restart()
            else:
                ws = await compute.resolve(self.workspace)
                # A restart keeps the notebook on its target, but does not bring back a target that
                # was stopped: that would undo a stop made on purpose elsewhere.
                kernel, info = await ws.start_kernel(self.target, self.kernel_id, env=kwargs.get("env"),
                                                     variant=self.variant, start=first, progress=progress,
                                                     connection=None if first else self._previous())
        except ComputeError as e:
            self.log.error("jupyter_compute: the kernel on %s did not start: %s", where, e.message)
            raise KernelStartFailed(e.message) from None
        self._kernel = kernel
        info = dict(info)
        if isinstance(info.get("key"), str):
            info["key"] = info["key"].encode()
        info.setdefault("signature_scheme", "hmac-sha256")
        info.setdefault("transport", "tcp")
        self.connection_info = info
        return info

    def _previous(self) -> dict | None:
        info = dict(self.connection_info or {})
        if isinstance(info.get("key"), bytes):
            info["key"] = info["key"].decode()
        return info or None

    @_on_own_loop
    async def poll(self) -> int | None:
        if self._kernel is None:
            return self._exit_code if self._exit_code is not None else 0
        code = await self._kernel.poll()
        if code is not None and self._exit_code is None:
            self._exit_code = code
            if self._kernel.reason:
                self.log.warning("jupyter_compute: %s", self._kernel.reason)
                _tell_ended(self.kernel_id, self.workspace, self.target, self._kernel.reason)
        return code

    async def wait(self) -> int | None:
        while True:
            code = await self.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.1)

    @_on_own_loop
    async def shutdown_requested(self, restart: bool = False) -> None:
        # The kernel ends itself on a shutdown request (exit code 0): a polite end, not a death.
        if self._kernel is not None and not self._kept(restart):
            self._kernel.expect_end()

    @_on_own_loop
    async def send_signal(self, signum: int) -> None:
        if self._kernel is not None:
            await self._kernel.send_signal(signum)

    def _kept(self, restart: bool) -> bool:
        return restart and self._kernel is not None and self._kernel.keeps_across_restart

    @_on_own_loop
    async def kill(self, restart: bool = False) -> None:
        if self._kernel is not None and not self._kept(restart):
            await self._kernel.stop(force=True)

    @_on_own_loop
    async def terminate(self, restart: bool = False) -> None:
        if self._kernel is not None and not self._kept(restart):
            await self._kernel.send_signal(signal.SIGTERM)

    @_on_own_loop
    async def cleanup(self, restart: bool = False) -> None:
        if self._kernel is not None and not self._kept(restart):
            kernel, self._kernel = self._kernel, None
            await kernel.cleanup()

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update(workspace=self.workspace, target=self.target, variant=self.variant, store=self.store)
        return info

    async def load_provisioner_info(self, provisioner_info: dict) -> None:
        await super().load_provisioner_info(provisioner_info)
        for key in ("workspace", "target", "variant", "store"):
            if key in provisioner_info:
                setattr(self, key, provisioner_info[key])
