"""``within``: a time limit that loses no cancellation."""
import asyncio

import pytest

from jupyter_compute.core.aio import within


async def test_a_cancellation_in_the_same_pass_as_the_result_is_not_lost():
    """The timed-out cell that went on as an Azure ML job: its task was cancelled just as a call
    inside it returned, and ``asyncio.wait_for`` handed back the result instead."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    went_on = []

    async def answer():
        await ready.wait()
        return "answered"

    async def cell():
        loop.call_soon(ready.set)
        await within(answer(), 60)
        went_on.append(True)

    task = asyncio.ensure_future(cell())
    await asyncio.sleep(0)  # the cell waits on its call
    loop.call_soon(task.cancel)  # cancelled in the pass in which the call's answer arrives
    with pytest.raises(asyncio.CancelledError):
        await task
    assert went_on == []


async def test_the_limit_raises_timeout_and_none_means_none():
    with pytest.raises(asyncio.TimeoutError):
        await within(asyncio.sleep(5), 0.05)
    assert await within(asyncio.sleep(0, "done"), None) == "done"
    assert await within(asyncio.sleep(0, "done"), 5) == "done"
