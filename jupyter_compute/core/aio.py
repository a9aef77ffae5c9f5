"""Waiting with a time limit without losing a cancellation.

Before Python 3.12, ``asyncio.wait_for`` returns what it awaited when the task waiting in it is
cancelled in the same pass of the loop as that result arrives (CPython issue 86296): the
cancellation is lost. A cell whose time ran out, or that was interrupted, then goes on as if
nothing had been asked. ``asyncio.timeout`` (Python 3.11 and later) counts cancellations and
loses none; on 3.10 ``within`` falls back to ``wait_for``.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

T = TypeVar("T")

_timeout = getattr(asyncio, "timeout", None)


async def within(aw: Awaitable[T], timeout: float | None) -> T:
    """``await aw``, raising ``TimeoutError`` after ``timeout`` seconds (none: no limit)."""
    if timeout is None:
        return await aw
    if _timeout is None:  # Python 3.10
        return await asyncio.wait_for(aw, timeout)
    async with _timeout(timeout):
        return await aw
