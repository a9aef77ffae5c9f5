"""Waiting with a time limit without losing a cancellation.

Before Python 3.12, ``asyncio.wait_for`` returns what it awaited when the task waiting in it is
cancelled in the same pass of the loop as that result arrives (CPython issue 86296): the
cancellation is lost. A cell whose time ran out, or that was interrupted, then goes on as if
nothing had been asked. ``asyncio.timeout`` (Python 3.11 and later) awaits in the caller's own
task and loses none; on 3.10 its model, aio-libs' ``async_timeout`` (which aiohttp already brings
there), does the same.
"""
from __future__ import annotations

import asyncio
import sys
from typing import Awaitable, TypeVar

T = TypeVar("T")

if sys.version_info >= (3, 11):
    _timeout = asyncio.timeout
else:  # pragma: no cover - Python 3.10
    from async_timeout import timeout as _timeout


async def within(aw: Awaitable[T], timeout: float | None) -> T:
    """``await aw``, raising ``asyncio.TimeoutError`` (``TimeoutError`` from Python 3.11) after
    ``timeout`` seconds (none: no limit)."""
    if timeout is None:
        return await aw
    async with _timeout(timeout):
        return await aw
