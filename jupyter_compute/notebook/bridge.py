"""A private event loop in a daemon thread, through which synchronous faces reach the async core.

The magics and widgets live inside ipykernel, whose own loop must never be nested or blocked
beyond the running cell. They submit coroutines here instead. ``run`` blocks the calling
thread until the coroutine ends, and meanwhile serves the calls the coroutine hands back
(``Bridge.call``): prompting for input and anything else that belongs on the caller's thread.
A KeyboardInterrupt in the caller cancels the coroutine, waits for it to clean up, and
re-raises.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")

#: How long an interrupted coroutine may take to clean up (interrupt the target, settle).
CANCEL_GRACE = 30.0


class CallerInterrupted(Exception):
    """The waiting thread was interrupted while running a handed-back call.

    Not KeyboardInterrupt itself: raised inside a task, that would stop the whole loop.
    """


class Bridge:
    """Lets a coroutine on the loop run functions on the thread that is waiting for it."""

    def __init__(self) -> None:
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()

    def call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """From the loop thread, blocking it: for synchronous code such as a UI's confirm()."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._inbox.put((fn, args, fut))
        return fut.result()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._inbox.put((fn, args, fut))
        return await asyncio.wrap_future(fut)

    def _wake(self) -> None:
        self._inbox.put(None)

    def _serve(self, done: threading.Event, serve_calls: bool = True, timeout: float | None = None) -> None:
        """Run handed-back calls until ``done`` is set (or ``timeout`` passes)."""
        while not done.is_set():
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                return
            if item is None:
                continue
            fn, args, fut = item
            if not serve_calls:
                fut.set_exception(CallerInterrupted())
                continue
            try:
                fut.set_result(fn(*args))
            except KeyboardInterrupt:
                fut.set_exception(CallerInterrupted())
                raise
            except BaseException as e:
                fut.set_exception(e)


class LoopThread:
    """One asyncio loop in a daemon thread per process."""

    _instance: "LoopThread | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._pid = os.getpid()
        started = threading.Event()
        self.thread = threading.Thread(target=self._main, args=(started,), name="jupyter-compute-loop", daemon=True)
        self.thread.start()
        started.wait()

    def _main(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        self.loop.run_forever()

    @classmethod
    def get(cls) -> "LoopThread":
        with cls._lock:
            inst = cls._instance
            # A forked child has the object but not the thread.
            if inst is None or inst._pid != os.getpid() or not inst.thread.is_alive():
                inst = cls._instance = LoopThread()
            return inst

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future:
        """Schedule a coroutine without waiting (widgets' background work)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def run(self, make: Callable[[Bridge], Awaitable[T]]) -> T:
        """Run ``make(bridge)`` on the loop and wait for it, serving the calls it hands back."""
        if self.in_loop_thread():
            raise RuntimeError("LoopThread.run called from its own loop; await the coroutine instead")
        bridge = Bridge()
        done = threading.Event()
        box: dict[str, Any] = {}

        async def main() -> None:
            box["task"] = asyncio.current_task()
            try:
                if box.get("cancelled"):
                    raise asyncio.CancelledError()
                box["result"] = await make(bridge)
            except BaseException as e:
                box["error"] = e
            finally:
                done.set()
                bridge._wake()

        coro = main()
        handed: concurrent.futures.Future | None = None
        try:
            # Inside the try: an interrupt that lands while the coroutine is being handed over must
            # still cancel it (and wait for its cleanup), not leave it running on the loop thread.
            handed = asyncio.run_coroutine_threadsafe(coro, self.loop)
            bridge._serve(done)
        except KeyboardInterrupt:
            if handed is None:
                # It may or may not have reached the loop: if it did, it stops at once (it sees
                # "cancelled" first); if not, there is nothing to wait for.
                box["cancelled"] = True
                bridge._serve(done, serve_calls=False, timeout=1.0)
                if not done.is_set():
                    coro.close()
            else:
                self._cancel(box, bridge, done)
            raise
        if "error" in box:
            err = box.pop("error")
            if isinstance(err, asyncio.CancelledError):
                raise KeyboardInterrupt() from None
            raise err
        return box.get("result")

    def _cancel(self, box: dict, bridge: Bridge, done: threading.Event) -> None:
        """Cancel the coroutine and give it time to clean up; a second interrupt stops waiting."""
        def cancel() -> None:
            task = box.get("task")
            if task is None:
                box["cancelled"] = True
            else:
                task.cancel()
        self.loop.call_soon_threadsafe(cancel)
        bridge._serve(done, serve_calls=False, timeout=CANCEL_GRACE)


_compute: Any = None


async def shared_compute() -> Any:
    """This process's ``Compute`` for the faces on the loop; rebuilt if the store location changed."""
    global _compute
    from ..core.workspace import Compute

    if _compute is not None:
        wanted = os.path.abspath(_compute.settings.compute.effective_db_path())
        if wanted != _compute.sync_store.path:
            old, _compute = _compute, None
            await old.close()
    if _compute is None:
        _compute = await asyncio.to_thread(Compute.from_config)
    return _compute


def current_compute() -> Any:
    """The ``Compute`` ``shared_compute`` last gave, without making one."""
    return _compute
