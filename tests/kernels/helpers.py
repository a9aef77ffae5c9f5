"""What the target-kernel tests share: starting a kernel by name, running code on it, and the checks
every kind of target's kernel must pass (a widget's comm both ways, an interrupt)."""
from __future__ import annotations

import asyncio
import time

from jupyter_client.manager import AsyncKernelManager

from jupyter_compute.core.store import Store


def kernel_rows(db) -> list[dict]:
    store = Store(str(db))
    try:
        return store.list_kernels()
    finally:
        store.close()


async def started(name: str) -> tuple[AsyncKernelManager, object]:
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    return km, kc


async def run(kc, code: str, timeout: float = 30, **kw) -> tuple[dict, list[dict]]:
    """Execute ``code``; (its reply's content, the iopub messages it caused)."""
    msg_id = kc.execute(code, **kw)
    outputs = []
    deadline = time.monotonic() + timeout
    while True:
        msg = await kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        outputs.append(msg)
    reply = await kc.get_shell_msg(timeout=timeout)
    return reply["content"], outputs


def text(outputs: list[dict]) -> str:
    out = []
    for m in outputs:
        c = m["content"]
        out.append(c.get("text") or (c.get("data") or {}).get("text/plain", ""))
    return "".join(out)


async def input_is_answered(kc, answer: str) -> None:
    """``input()`` in the kernel asks this client, and the answer is what the kernel gets."""
    msg_id = kc.execute("answer = input('who? ')\nprint('hi', answer)", allow_stdin=True)
    request = await kc.get_stdin_msg(timeout=10)
    assert request["content"]["prompt"] == "who? "
    kc.input(answer)
    reply = await kc.get_shell_msg(timeout=10)
    assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["status"] == "ok"
    reply, outputs = await run(kc, "print(answer)")
    assert text(outputs) == f"{answer}\n"


async def widget_round_trip(kc, value: int) -> None:
    """A slider made in the kernel opens a comm here, and ``value`` sent from here reaches it."""
    reply, outputs = await run(kc, "import ipywidgets\nslider = ipywidgets.IntSlider(value=3)\nslider")
    opened = [m for m in outputs if m["msg_type"] == "comm_open"
              and m["content"]["data"]["state"].get("_model_name") == "IntSliderModel"]
    assert reply["status"] == "ok" and opened, outputs
    kc.session.send(kc.shell_channel.socket, kc.session.msg(
        "comm_msg", {"comm_id": opened[0]["content"]["comm_id"],
                     "data": {"method": "update", "state": {"value": value}, "buffer_paths": []}}))
    for _ in range(50):
        _, outputs = await run(kc, "slider.value")
        if text(outputs) == str(value):
            break
        await asyncio.sleep(0.05)
    assert text(outputs) == str(value)


async def interrupt_ends_a_sleep(km, kc) -> None:
    """An interrupt, sent once a minute's sleep has begun, ends it: the reply is an interrupted cell,
    long before the sleep would have ended by itself. (How fast is a bench figure, not a test's.)"""
    msg_id = kc.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
    while True:  # interrupted once the sleep has begun, not while the request is being read
        m = await kc.get_iopub_msg(timeout=10)
        if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream":
            break
    t0 = time.monotonic()
    await km.interrupt_kernel()
    # The reply may take a while on a loaded machine (once the debugger is on, it traces the
    # kernel's lines); the bound catches a lost interrupt, and is the sleep's half.
    while True:
        reply = await kc.get_shell_msg(timeout=max(0.1, 30 - (time.monotonic() - t0)))
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"


async def debugger_answers(kc) -> None:
    """The control channel carries the debugger's requests (JupyterLab's debugger switches on)."""
    msg = kc.session.msg("debug_request", {"type": "request", "seq": 1, "command": "initialize",
                                           "arguments": {"clientID": "test", "adapterID": "python"}})
    kc.control_channel.send(msg)
    while True:
        reply = await kc.get_control_msg(timeout=15)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            break
    assert reply["msg_type"] == "debug_reply" and reply["content"].get("success") is True, reply
