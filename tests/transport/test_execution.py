"""The kernel route on real kernels: live messages, stdin, interrupt, timeout, death, and moving variables."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from jupyter_compute.core.errors import InvalidRequest
from jupyter_compute.core.route import (Capabilities, ExecutionError, ExecutionTimeout, HereRoute, MissingCapability,
                                       RemoteError, TransferError)
from jupyter_compute.transport.kernel import KernelRoute
from jupyter_compute.notebook.bridge import LoopThread
from jupyter_compute.transport import in_kernel as _helper
from jupyter_compute.transport.transfer import Payload, SocketTransport, Transport, VariableMover, bootstrap_code

from tests.support import python_with_unread_fault

# A kernel that stops answering fails its test in two minutes rather than holding up the run.
pytestmark = pytest.mark.timeout(120)


def start_kernel(python: str | None = None) -> KernelManager:
    """A plain ipykernel whose channels are files of its own (ipc), not loopback ports another
    test's process could take between jupyter_client choosing one and the kernel binding it.

    The files live in a new folder: left to itself, jupyter_client names them ``kernel-ipc-1``…
    in the working folder, which every test worker shares, and two kernels would bind the same
    file and read each other's messages."""
    folder = tempfile.mkdtemp(prefix="compute-ipc-")
    if python is None:
        km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(folder, "kernel"))
    else:  # that Python's own ipykernel
        spec = Path(folder, "kernels", "other")
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "another Python", "language": "python"}))
        km = KernelManager(kernel_name="other", transport="ipc", ip=os.path.join(folder, "kernel"),
                           kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))
    km.start_kernel()
    kc = km.blocking_client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
    finally:
        kc.stop_channels()
    return km


@pytest.fixture(scope="module")
def km():
    km = start_kernel()
    yield km
    km.shutdown_kernel(now=True)
    shutil.rmtree(os.path.dirname(km.ip), ignore_errors=True)


@pytest.fixture
def own_km():
    """A kernel of the test's own, for a test that kills it."""
    km = start_kernel()
    yield km
    km.shutdown_kernel(now=True)
    shutil.rmtree(os.path.dirname(km.ip), ignore_errors=True)


def route_of(km: KernelManager, **kw) -> KernelRoute:
    return KernelRoute(km.get_connection_info(session=False), km.provisioner.pid, target="k", **kw)


@pytest.fixture
def opened(jp_asyncio_loop):
    """``await opened(route)`` opens a route on the test's loop; every route handed to it is closed at
    teardown, opened or not."""
    routes: list[KernelRoute] = []

    async def open_(route: KernelRoute, timeout: float = 30.0) -> KernelRoute:
        routes.append(route)
        await route.open(timeout=timeout)
        return route
    yield open_
    for route in reversed(routes):
        jp_asyncio_loop.run_until_complete(route.close())


@pytest.fixture
def route(km, opened, jp_asyncio_loop):
    """An open route to the module's kernel."""
    return jp_asyncio_loop.run_until_complete(opened(route_of(km)))


#: A cell that says when its sleep has begun, so a test can act while it surely runs.
SLEEPING = "import time\nprint('sleeping', flush=True)\ntime.sleep(60)"


def sleeping_seen() -> tuple[asyncio.Event, Callable[[dict], None]]:
    """An event set once a cell has printed 'sleeping', and the ``on_message`` that sets it."""
    seen = asyncio.Event()

    def on_message(msg: dict) -> None:
        if msg["msg_type"] == "stream" and "sleeping" in msg["content"].get("text", ""):
            seen.set()
    return seen, on_message


async def test_messages_arrive_live_in_order_with_the_result(route):
    seen: list[tuple[float, str, dict]] = []
    t0 = time.monotonic()
    r = await route.execute(
        "import time\nprint('one', flush=True)\ntime.sleep(1.5)\nprint('two')\n"
        "from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))\n40 + 2",
        on_message=lambda m: seen.append((time.monotonic() - t0, m["msg_type"], m["content"])))

    assert r.status == "ok" and r.result == {"text/plain": "42"}
    streams = [(t, c["text"]) for t, kind, c in seen if kind == "stream"]
    assert [s for _, s in streams] == ["one\n", "two\n"]
    assert streams[1][0] - streams[0][0] > 1.0  # the first line was relayed before the sleep ended
    kinds = [k for _, k, _ in seen]
    assert kinds.index("display_data") < kinds.index("execute_result") < len(kinds) - 1
    assert any(c.get("data", {}).get("text/html") == "<b>x</b>" for _, k, c in seen if k == "display_data")
    assert kinds[-1] == "status"  # idle: everything the cell published came before the return


async def test_remote_error_keeps_type_message_and_traceback(route):
    r = await route.execute("def f():\n    raise KeyError('nope')\nf()")
    assert (r.status, r.ename, r.evalue) == ("error", "KeyError", "'nope'")
    with pytest.raises(KeyError) as info:
        r.raise_for_error()
    err = info.value
    assert isinstance(err, RemoteError) and type(err).__name__ == "KeyError"
    assert any("f()" in line for line in err._render_traceback_())


async def test_stdin_is_answered_and_a_refusal_interrupts(route):
    prompts = []

    async def answer(prompt, password):
        prompts.append((prompt, password))
        return "alice"

    out = []
    r = await route.execute("name = input('who? ')\nprint('hi', name)", stdin=answer,
                            on_message=lambda m: out.append(m["content"].get("text")))

    def refuse(prompt, password):
        raise RuntimeError("nobody is there")

    with pytest.raises(RuntimeError, match="nobody"):
        await route.execute("input('again? ')", stdin=refuse)
    # Without a stdin handler the kernel refuses input() itself.
    r2 = await route.execute("input('x')")

    assert r.status == "ok" and prompts == [("who? ", False)] and "hi alice\n" in out
    assert r2.status == "error" and r2.ename == "StdinNotImplementedError"


async def test_timeout_interrupts_the_target(route):
    t0 = time.monotonic()
    with pytest.raises(ExecutionTimeout):
        await route.execute("import time; time.sleep(60)", timeout=1.5)
    elapsed = time.monotonic() - t0
    # The target is free again: it was interrupted, not left sleeping.
    r = await route.execute("'free'", timeout=10)

    assert elapsed < 10 and r.result == {"text/plain": "'free'"}


async def test_cancelling_an_execution_interrupts_the_target(route):
    sleeping, on_message = sleeping_seen()
    task = asyncio.ensure_future(route.execute(SLEEPING, on_message=on_message))
    await asyncio.wait_for(sleeping.wait(), 30)
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    r = await route.execute("'after'", timeout=10)
    elapsed = time.monotonic() - t0

    assert elapsed < 10 and r.status == "ok"


async def test_interrupt_message_is_used_without_a_pid(km, opened):
    """Without a pid (as for a remote kernel) the control channel carries the interrupt."""
    route = await opened(KernelRoute(km.get_connection_info(session=False), None, target="k"))
    sleeping, on_message = sleeping_seen()
    task = asyncio.ensure_future(route.execute(SLEEPING, on_message=on_message))
    await asyncio.wait_for(sleeping.wait(), 30)
    t0 = time.monotonic()
    await route.interrupt()
    r = await asyncio.wait_for(task, 10)
    elapsed = time.monotonic() - t0

    assert r.status == "error" and r.ename == "KeyboardInterrupt" and elapsed < 10


async def test_push_and_pull_large_arrays_and_functions(route):
    a = np.random.default_rng(0).random(50 * 2**20 // 8)

    up = await route.push({"a": a, "f": lambda x: x * 2})
    r = await route.execute("b = f(a)\ng = lambda x: f(x) + 1\nwritable = a.flags.writeable")
    values, down = await route.pull(["b", "g", "writable"])

    assert r.status == "ok"
    assert np.array_equal(values["b"], a * 2) and values["b"].flags.writeable
    assert values["g"](1) == 3 and values["writable"] is True
    assert up.names == ["a", "f"] and up.nbytes >= a.nbytes
    assert down.nbytes >= a.nbytes and "MB" in str(down)


async def test_transfer_errors_name_the_variable(route):
    with pytest.raises(TransferError) as info:
        Payload.from_values({"ok": 1, "lock": threading.Lock()})
    assert info.value.variable == "lock" and "'lock'" in info.value.message

    with pytest.raises(TransferError) as missing_info:
        await route.pull(["never_defined_anywhere"])
    await route.execute("gen = (i for i in range(3))")
    with pytest.raises(TransferError) as unpicklable_info:
        await route.pull(["gen"])
    # A failed pull leaves the kernel usable.
    r = await route.execute("1 + 1")

    missing, unpicklable = missing_info.value, unpicklable_info.value
    assert missing.variable == "never_defined_anywhere" and "not defined" in missing.message
    assert unpicklable.variable == "gen" and "generator" in unpicklable.message
    assert r.status == "ok"


async def test_a_refused_transfer_ends_once_the_target_has_answered(route):
    """A request that reaches an ipykernel before 7.4 while it sends a reply can be left unread, and
    the next cell would wait for ever: a refused transfer lets the helper's own request finish first,
    so the next request never arrives while the kernel is still answering it."""
    ended: list[str] = []

    async def run_silent(code: str):
        try:
            reply = await route._run_silent(code)
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise
        ended.append(reply.status)
        return reply

    mover = VariableMover(run_silent, SocketTransport(), "k")
    for _ in range(5):
        with pytest.raises(TransferError, match="not defined"):
            await mover.pull(["never_defined_anywhere"])
    assert ended == ["ok"] * 5


@pytest.fixture
def old_ipykernel(other_python):
    """A kernel of another Python whose ipykernel (7.0 to 7.3) can leave a shell request unread."""
    km = start_kernel(python_with_unread_fault(other_python[0]))
    yield km
    km.shutdown_kernel(now=True)
    shutil.rmtree(os.path.dirname(km.ip), ignore_errors=True)


@pytest.mark.xdist_group("other_python")  # one worker makes the other Python's venv
async def test_a_request_an_old_ipykernel_left_unread_is_woken(old_ipykernel, opened):
    """ipykernel 7.0-7.3 (7.3 is the last for Python 3.10) can leave a request unread when it arrives
    while the kernel sends a reply: the kernel then sits idle and the cell would wait for ever. Two
    requests at once, many times over, meet that moment now and then; each cell must still end."""
    route = await opened(route_of(old_ipykernel))
    rng = random.Random(0)
    for i in range(400):
        first = asyncio.ensure_future(route.execute("pass"))
        await asyncio.sleep(rng.uniform(0, 0.003))  # the second arrives while the first is answered, or near it
        second = await asyncio.wait_for(route.execute(f"{i}"), 20)
        assert (await first).status == "ok" and second.result == {"text/plain": str(i)}
    print(f"a second connection woke the kernel {route.wakes} times in 400 rounds")


async def test_a_request_waiting_behind_another_clients_cell_is_left_to_wait(km, route):
    """The kernel is busy with someone else's cell, not sitting on ours: nothing is woken."""
    await route.execute("1")
    await asyncio.sleep(1.2)  # the kernel has been idle for longer than the route waits before it wakes one
    other = km.blocking_client()
    other.start_channels()
    try:
        other.execute("import time; time.sleep(2.5)")
        await asyncio.sleep(0.3)
        r = await asyncio.wait_for(route.execute("'after'"), 30)
    finally:
        other.stop_channels()
    assert r.result == {"text/plain": "'after'"} and route.wakes == 0


async def test_push_is_all_or_nothing(route):
    class Unloadable:
        def __reduce__(self):
            return (_raise_on_load, ())

    await route.execute("for _n in ('p1', 'p2'):\n    globals().pop(_n, None)")
    with pytest.raises(TransferError) as info:
        await route.push({"p1": 1, "p2": Unloadable()})
    r = await route.execute("'p1' in globals()")

    err = info.value
    assert err.variable == "p2" and "could not load" in err.message
    assert r.result == {"text/plain": "False"}


def _raise_on_load():
    raise RuntimeError("refuses to load")


def test_the_helper_moves_no_data_in_the_code_it_sends():
    code = bootstrap_code("127.0.0.1", 5555, "t" * 32)
    compile(code, "<bootstrap>", "exec")
    assert "5555" in code and len(code) < 20_000


class ThreadTransport(Transport):
    """The transfer protocol's other end in a thread of this process, over two ``ChunkedStream``s
    wired back to back: the seam a route without a socket (a comm) plugs into."""

    def __init__(self, namespace: dict, chunk: int = 1000):
        self.namespace = namespace
        self.chunk = chunk
        self.messages = 0

    def _to(self, stream: _helper.ChunkedStream):
        def send(buffer) -> None:
            self.messages += 1
            assert len(buffer) <= max(self.chunk, 256 * 2**10)
            stream.feed([bytes(buffer)])
        return send

    @contextlib.asynccontextmanager
    async def connect(self, run_silent, where):
        here = _helper.ChunkedStream(None, self.chunk, "the thread", timeout=10)
        there = _helper.ChunkedStream(None, self.chunk, "the notebook", timeout=10)
        here.send_chunk, there.send_chunk = self._to(there), self._to(here)
        token = "t" * 32
        failures: list[BaseException] = []

        def serve():
            try:
                _helper.serve(there, token, self.namespace)
                there.flush()
            except BaseException as e:
                failures.append(e)
                here.finish(_helper.describe_error(e))

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            assert _helper.check_token(await asyncio.to_thread(_helper.recv_frame, here, 256), token)
            yield here
        finally:
            there.finish()
            await asyncio.to_thread(thread.join, 10)
        assert not failures, failures


async def test_a_transport_carries_push_and_pull_over_chunked_streams():
    remote: dict = {}
    transport = ThreadTransport(remote)
    mover = VariableMover(run_silent=None, transport=transport, target="thread")
    big = np.arange(100_000, dtype=np.float64)

    pushed = await mover.push({"big": big, "double": lambda v: v * 2})
    remote["made_there"] = remote["double"](remote["big"])
    values, pulled = await mover.pull(["made_there"])
    with pytest.raises(TransferError) as missing_info:
        await mover.pull(["never_defined"])

    missing = missing_info.value
    assert pushed.names == ["big", "double"] and pushed.nbytes >= big.nbytes
    assert remote["big"] is not big and np.array_equal(remote["big"], big)
    assert np.array_equal(values["made_there"], big * 2) and pulled.nbytes >= big.nbytes
    # 800 KB in chunks of at most 1000 bytes: the stream cut it up, small writes were gathered.
    assert transport.messages > 1600
    assert missing.variable == "never_defined" and "not defined on thread" in missing.message
    assert mover.remote_info["python"][:2] == list(sys.version_info[:2])


async def test_kernel_death_ends_an_execution(own_km, opened):
    route = await opened(route_of(own_km))
    sleeping, on_message = sleeping_seen()
    task = asyncio.ensure_future(route.execute(SLEEPING, on_message=on_message))
    await asyncio.wait_for(sleeping.wait(), 30)
    os.kill(own_km.provisioner.pid, signal.SIGKILL)
    with pytest.raises(ExecutionError, match="stopped"):
        await asyncio.wait_for(task, 15)
    with pytest.raises(ExecutionError):
        await route.execute("1")


async def test_open_fails_clearly_when_nothing_answers(opened):
    info = {"ip": "127.0.0.1", "transport": "tcp", "key": "k", "signature_scheme": "hmac-sha256",
            "shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}

    with pytest.raises(ExecutionError, match="did not answer"):
        await opened(KernelRoute(info), timeout=2)


def test_capabilities_are_declared_by_routes_and_checked_in_one_place():
    caps = Capabilities(persistent_namespace=True, rich_output=True)
    caps.require("persistent_namespace", "'t' (kernel)")
    with pytest.raises(MissingCapability) as info:
        caps.require("stdin", "'t' (dask-cluster)", "input() needs it")
    assert info.value.capability == "stdin" and "stdin" in info.value.message and "input()" in info.value.message
    assert KernelRoute.capabilities.as_dict() == {"persistent_namespace": True, "stdin": True, "interrupt": True,
                                                  "rich_output": True, "variables": True, "nodes": False,
                                                  "environment": False}
    conn = {"ip": "127.0.0.1", "transport": "tcp", "key": "k", "signature_scheme": "hmac-sha256",
            "shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
    route = KernelRoute(conn, 42, target="k1")
    route.kind = "local-kernel"
    # Everything a cell asks is refused before anything runs, naming the target and its kind.
    with pytest.raises(MissingCapability) as info:
        route.cell_options(nodes=2)
    assert "'k1' (local-kernel) does not support nodes (running one cell on several nodes at once)" in str(info.value)
    with pytest.raises(MissingCapability, match="'k1' \\(local-kernel\\) does not support environment"):
        route.cell_options(environment="AzureML-minimal")
    with pytest.raises(InvalidRequest, match="at least 1"):
        route.cell_options(nodes=0)
    assert route.cell_options(push=True, pull=["x"], nodes=1) == {}
    # A route to the same kernel has the same key (an open one is reused); another kernel's differs.
    assert route.key == KernelRoute(dict(conn), 42).key != KernelRoute({**conn, "shell_port": 9}, 42).key
    here = HereRoute(target="this-machine", kind="local")
    with pytest.raises(MissingCapability, match="this notebook's own kernel"):
        here.cell_options(push=True)
    with pytest.raises(InvalidRequest, match="lacks"):
        KernelRoute({"ip": "127.0.0.1"})



@pytest.fixture
def sigint_raises():
    """Ctrl-C raising KeyboardInterrupt in the main thread, as in a kernel or a terminal: a process
    started in the background (a CI runner's ``make test &``) inherits SIGINT ignored, and the
    handler a worker has depends on which tests ran in it before."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_loop_thread_interrupt_cancels_and_waits_for_cleanup(sigint_raises):
    loop = LoopThread.get()
    cleaned = threading.Event()

    async def slow(bridge):
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.2)  # cleanup that must finish before the caller gives up
            cleaned.set()

    timer = threading.Timer(0.5, lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        loop.run(slow)
    assert cleaned.is_set() and time.monotonic() - t0 < 10
    # The loop survives and serves calls handed back to the caller's thread.
    assert loop.run(lambda bridge: bridge.call(lambda: threading.current_thread() is threading.main_thread())) is True
