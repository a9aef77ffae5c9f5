"""The Jupyter server extension: REST handlers, event schemas, and the watchers that keep
targets' state true while the server runs."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import IOLoop

from .handlers import HANDLERS
from .core.errors import InvalidConfig
from .core.models import Operation
from .core.workspace import Compute
from .kernels.provisioner import ComputeProvisioner, ended_listeners, use_compute

EVENTS = Path(__file__).parent / "events"
TARGET_EVENT = "https://events.jupyter.org/jupyter_compute/target/v1"
OPERATION_EVENT = "https://events.jupyter.org/jupyter_compute/operation/v1"
KERNELSPECS_EVENT = "https://events.jupyter.org/jupyter_compute/kernelspecs/v1"
KERNEL_EVENT = "https://events.jupyter.org/jupyter_compute/kernel/v1"
FEED_INTERVAL = 0.1
#: Seconds between looks for processes whose target no longer exists.
ORPHAN_INTERVAL = 10.0


class ComputeApp(ExtensionApp):
    name = "jupyter_compute"
    load_other_extensions = True

    def initialize_settings(self) -> None:
        # One config for every face: jupyter_compute_config.* plus whatever the server was given.
        try:
            self.compute = Compute.from_config(self.config, start_dir=self.serverapp.root_dir)
        except InvalidConfig as e:
            self.log.error("jupyter_compute is not loaded: %s", e.message)
            raise
        self.settings["jupyter_compute"] = self.compute
        self.compute.attach_server(self.serverapp)
        # Kernels on targets started by this server go through this server's core.
        use_compute(self.compute)
        logger = self.serverapp.event_logger
        for schema in ("target.yaml", "operation.yaml", "kernelspecs.yaml", "kernel.yaml"):
            logger.register_event_schema(EVENTS / schema)
        ended_listeners.append(self._kernel_ended)
        self._tasks: list[asyncio.Task] = []
        self._emit_queue: asyncio.Queue | None = None
        IOLoop.current().add_callback(self._start_watchers)
        self.log.info("jupyter_compute: store %s", self.compute.sync_store.path)

    def initialize_handlers(self) -> None:
        self.handlers.extend(HANDLERS)

    # -- watchers --------------------------------------------------------------------------------
    async def _start_watchers(self) -> None:
        loop = asyncio.get_running_loop()
        self._emit_queue = asyncio.Queue()
        queue = self._emit_queue
        # Changes this process makes are emitted at once; others' are found by tailing the feed.
        self.compute.sync_store.add_listener(lambda change: loop.call_soon_threadsafe(queue.put_nowait, change))
        self._tasks = [asyncio.create_task(self._emitter()), asyncio.create_task(self._tail_feed()),
                       asyncio.create_task(self._monitor()), asyncio.create_task(self._orphans())]
        self._keep_kernelspecs()

    async def _emitter(self) -> None:
        store = self.compute.store
        while True:
            change = await self._emit_queue.get()
            try:
                if change["entity"] == "operation":
                    row = change.get("snapshot") or await store.get_operation(change["operation"])
                    if row:
                        op = Operation(**row)
                        self.serverapp.event_logger.emit(schema_id=OPERATION_EVENT, data={
                            "id": op.id, "workspace": op.workspace, "target": op.target, "action": op.action,
                            "status": op.status.value, "progress": op.progress,
                            "error": (op.error or {}).get("message")})
                else:
                    self.compute.kernelspecs_changed()
                    row = await store.get_target(change["workspace"], change["name"])
                    self.serverapp.event_logger.emit(schema_id=TARGET_EVENT, data={
                        "workspace": change["workspace"], "name": change["name"],
                        "kind": row["kind"] if row else None, "state": row["state"] if row else None,
                        "change": "updated" if row else "removed"})
                    self.compute.kernelspec_news_at = time.monotonic()
            except Exception:
                self.log.exception("jupyter_compute: could not emit an event for %s", change)

    async def _tail_feed(self) -> None:
        store = self.compute.store
        me = os.getpid()
        polls = 0
        while True:
            try:
                async for changes in store.follow(FEED_INTERVAL):
                    for c in changes:
                        if c["origin"] != me:  # this process's own were emitted already
                            self._emit_queue.put_nowait(c)
                    polls += 1
                    if polls % 3000 == 0:
                        await store.trim_changes()
            except Exception:
                self.log.exception("jupyter_compute: reading the change feed failed")
                await asyncio.sleep(FEED_INTERVAL)

    async def _shutdown_target_kernels(self) -> None:
        manager = getattr(self.serverapp, "kernel_manager", None)
        for kernel_id in list(getattr(manager, "list_kernel_ids", lambda: [])()):
            try:
                km = manager.get_kernel(kernel_id)
                if not isinstance(km.provisioner, ComputeProvisioner):
                    continue
                ready = km.ready
                if ready.done() and not ready.cancelled() and ready.exception() is None:
                    await manager.shutdown_kernel(kernel_id, now=True)
                else:
                    # A restart that was refused (its target stopped) left it between states, which
                    # jupyter_client cannot shut down: release what it holds and forget it.
                    await km.provisioner.cleanup()
                    manager.remove_kernel(kernel_id)
            except Exception:
                self.log.exception("jupyter_compute: could not shut down kernel %s", kernel_id)

    def _kernel_ended(self, kernel_id: str, workspace: str, target: str, reason: str) -> None:
        self.serverapp.event_logger.emit(schema_id=KERNEL_EVENT, data={
            "kernel_id": kernel_id, "workspace": workspace, "target": target, "reason": reason})

    def _keep_kernelspecs(self) -> None:
        """Keep the kernelspecs of targets in step with them, and tell the browsers when they change.

        The core syncs at once after a change it made itself; the server also asks after every
        change the store reports, other processes' included. Those come in bursts (an operation's
        steps): such a sync waits 0.2 s, so that one covers a burst and reads the targets after
        the burst's own events have gone out."""
        def synced(written: list[str], removed: list[str]) -> None:
            self.serverapp.event_logger.emit(schema_id=KERNELSPECS_EVENT, data={"written": written, "removed": removed})
            self.compute.kernelspec_news_at = time.monotonic()
        self.compute.kernelspec_delay = 0.2
        self.compute.on_kernelspecs_synced = synced
        self.compute.kernelspecs_changed(at_once=True)

    async def _monitor(self) -> None:
        interval = self.compute.settings.compute.monitor_interval
        while True:
            try:
                await self.compute.reconcile()
            except Exception:
                self.log.exception("jupyter_compute: checking targets failed")
            await asyncio.sleep(interval)

    async def _orphans(self) -> None:
        """At start and then now and then: end the processes of targets that no longer exist."""
        while True:
            try:
                await self.compute.end_orphans()
            except Exception:
                self.log.exception("jupyter_compute: looking for processes left by deleted targets failed")
            await asyncio.sleep(ORPHAN_INTERVAL)

    async def stop_extension(self) -> None:
        # Targets keep running: they belong to the user, not to this server process. The kernels it
        # started on them are its own, and go before the store they are recorded in closes.
        await self._shutdown_target_kernels()
        if self._kernel_ended in ended_listeners:
            ended_listeners.remove(self._kernel_ended)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.compute.close()
