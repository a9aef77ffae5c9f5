"""Routes that speak the Jupyter messaging protocol to one kernel, whatever carries the messages.

``KernelRoute`` carries them over the kernel's zmq sockets, ``WebsocketRoute`` over a Jupyter
server's channels websocket. Each supplies only its transport: ``_send`` puts a message on a
channel, every message it receives goes to ``_dispatch``, ``_connected`` says whether the
transport is up, and ``interrupt`` is its own. Requests, execution with live output, input,
settling after an interrupt, failing when the kernel is gone, and moving variables live here.
"""
from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
from typing import Any, Callable

from jupyter_client.session import Session

from ..core.errors import ComputeError
from ..core.route import (Capabilities, ExecutionError, ExecutionResult, ExecutionTimeout, MessageHandler, Route,
                   StdinHandler, TransferReport)
from .transfer import Transport, VariableMover

#: After the reply, how long to wait for the idle status that says every output was sent.
IDLE_GRACE = 30.0
#: After an interrupt, how long the target has to finish the interrupted request.
SETTLE_TIMEOUT = 15.0


class _Request:
    """What one request waits for: its reply, and for executions the idle status."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_iopub: Callable[[dict], None] | None = None,
                 on_stdin: Callable[[dict], None] | None = None):
        self.reply: asyncio.Future = loop.create_future()
        self.idle: asyncio.Future = loop.create_future()
        self.on_iopub = on_iopub
        self.on_stdin = on_stdin
        #: Whether the kernel has said anything about this request (it has read it).
        self.seen = False


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel a task and wait until it has ended, whatever it raised."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def cancel_all(tasks: list[asyncio.Task]) -> None:
    """Cancel these tasks together, then wait until each has ended."""
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(BaseException):
            await t


class MessagingRoute(Route):
    """One kernel's shell, iopub, stdin and control channels, over a transport a subclass supplies.

    One reader hands each message to whoever waits on its parent request, so output is relayed
    the moment it arrives and several executions (or notebooks) can share one kernel.
    """

    capabilities = Capabilities(persistent_namespace=True, stdin=True, interrupt=True, rich_output=True,
                                variables=True)

    def __init__(self, target: str, transport: Transport):
        self.target = target
        self.kernel_info: dict = {}
        #: Signs and builds the messages this route sends; set by the subclass.
        self._session: Session | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Resolves with the ExecutionError that says why the kernel is gone.
        self._dead: asyncio.Future | None = None
        self._requests: dict[str, _Request] = {}
        self._mover = VariableMover(self._run_silent, transport, target)

    # -- what a transport supplies -----------------------------------------------------------------
    @property
    @abc.abstractmethod
    def _connected(self) -> bool:
        """Whether the transport is up (open and not yet closed)."""

    @abc.abstractmethod
    async def _send(self, channel: str, msg: dict) -> None:
        """Put ``msg`` on the kernel's ``channel`` (shell, control or stdin)."""

    # -- session -----------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"'{self.target}'" if self.target else "the target"

    @property
    def is_open(self) -> bool:
        return self._connected and not self.is_dead

    @property
    def is_dead(self) -> bool:
        return self._dead is not None and self._dead.done()

    def _begin(self) -> asyncio.AbstractEventLoop:
        """Called as ``open`` starts: requests and the kernel's death are followed on this loop."""
        self._loop = loop = asyncio.get_running_loop()
        self._dead = loop.create_future()
        return loop

    def _ensure_open(self) -> None:
        if self.is_dead:
            raise self._dead.result()
        if not self._connected:
            raise ExecutionError("the route is not open")

    def _set_dead(self, err: ExecutionError) -> bool:
        """Record that the kernel cannot be reached any more and fail whatever waits; True the first time."""
        first = self._dead is not None and not self._dead.done()
        if first:
            self._dead.set_result(err)
        self._fail_pending(err)
        return first

    def _fail_pending(self, err: Exception) -> None:
        for req in list(self._requests.values()):
            for fut in (req.reply, req.idle):
                if not fut.done():
                    fut.set_exception(err)
                    fut.exception()  # marked retrieved; the waiter re-raises it

    # -- dispatch ----------------------------------------------------------------------------------
    def _request_for(self, msg: dict) -> _Request | None:
        return self._requests.get((msg.get("parent_header") or {}).get("msg_id"))

    def _dispatch(self, channel: str, msg: dict) -> None:
        """Hand a received message to the request it answers."""
        req = self._request_for(msg)
        if req is None:
            return  # another client's request, or one we stopped waiting for
        if channel == "iopub":
            req.seen = True
            if req.on_iopub is not None:
                req.on_iopub(msg)
            if (msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle"
                    and not req.idle.done()):
                req.idle.set_result(None)
        elif channel in ("shell", "control"):
            if not req.reply.done():
                req.reply.set_result(msg)
        elif channel == "stdin":
            if req.on_stdin is not None and msg["msg_type"] == "input_request":
                req.on_stdin(msg)

    def _msg(self, msg_type: str, content: dict, parent: dict | None = None) -> dict:
        return self._session.msg(msg_type, content, parent=parent)

    async def _request(self, channel: str, msg_type: str, content: dict, timeout: float | None) -> dict:
        """Send a request and wait for its reply (no output expected)."""
        self._ensure_open()
        msg = self._msg(msg_type, content)
        req = self._requests[msg["msg_id"]] = _Request(self._loop)
        try:
            await self._send(channel, msg)
            done, _ = await asyncio.wait({req.reply, self._dead}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if req.reply in done:
                return req.reply.result()
            if self._dead in done:
                raise self._dead.result()
            raise ExecutionError(f"the kernel of {self.where} did not answer within {timeout:g} s")
        finally:
            self._requests.pop(msg["msg_id"], None)

    # -- execution ---------------------------------------------------------------------------------
    async def execute(self, code: str, *, on_message: MessageHandler | None = None,
                      stdin: StdinHandler | None = None, timeout: float | None = None) -> ExecutionResult:
        self._ensure_open()
        result = ExecutionResult(status="ok")
        problems: list[BaseException] = []
        stdin_tasks: set[asyncio.Task] = set()

        def on_iopub(msg: dict) -> None:
            t, c = msg["msg_type"], msg["content"]
            if t == "execute_result":
                result.result, result.result_metadata = c.get("data", {}), c.get("metadata", {})
            elif t == "error":
                result.ename, result.evalue, result.traceback = c.get("ename"), c.get("evalue"), c.get("traceback", [])
            if on_message is not None:
                try:
                    on_message(msg)
                except Exception as e:  # the relay broke: stop, and say why, once the target is idle
                    problems.append(e)

        def on_stdin(msg: dict) -> None:
            task = asyncio.ensure_future(self._answer(msg, stdin, problems))
            stdin_tasks.add(task)
            task.add_done_callback(stdin_tasks.discard)

        msg = self._msg("execute_request", {"code": code, "silent": False, "store_history": True,
                                            "user_expressions": {}, "allow_stdin": stdin is not None,
                                            "stop_on_error": True})
        req = self._requests[msg["msg_id"]] = _Request(self._loop, on_iopub, on_stdin if stdin is not None else None)
        try:
            await self._send("shell", msg)
            try:
                reply = await asyncio.wait_for(self._finished(req), timeout)
            except asyncio.TimeoutError:
                await asyncio.shield(self._interrupt_and_settle(req))
                raise ExecutionTimeout(f"the cell ran longer than {timeout:g} s; "
                                       f"{self.target or 'the target'} was interrupted") from None
            except asyncio.CancelledError:
                await asyncio.shield(self._interrupt_and_settle(req))
                raise
        finally:
            self._requests.pop(msg["msg_id"], None)
            for t in stdin_tasks:
                t.cancel()
        content = reply["content"]
        result.status = content.get("status", "error")
        result.execution_count = content.get("execution_count")
        if result.status == "error" and result.ename is None:
            result.ename, result.evalue = content.get("ename"), content.get("evalue")
            result.traceback = content.get("traceback", [])
        if problems:
            raise problems[0]
        return result

    async def _finished(self, req: _Request) -> dict:
        done, _ = await asyncio.wait({req.reply, self._dead}, return_when=asyncio.FIRST_COMPLETED)
        if req.reply not in done:
            raise self._dead.result()
        reply = req.reply.result()
        # Output travels on iopub, beside the reply: idle says the last of it has been sent.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(req.idle), IDLE_GRACE)
        return reply

    async def _answer(self, msg: dict, stdin: StdinHandler, problems: list) -> None:
        c = msg["content"]
        try:
            answer = stdin(c.get("prompt", ""), bool(c.get("password")))
            if inspect.isawaitable(answer):
                answer = await answer
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            # The notebook could not answer: stop the target's cell rather than leave it waiting.
            problems.append(e)
            with contextlib.suppress(ComputeError):
                await self.interrupt()
            return
        with contextlib.suppress(ComputeError):
            await self._send("stdin", self._msg("input_reply", {"value": str(answer)}, parent=msg))

    async def _interrupt_and_settle(self, req: _Request) -> None:
        with contextlib.suppress(Exception):
            await self.interrupt()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self._finished(req), SETTLE_TIMEOUT)

    async def _run_silent(self, code: str) -> ExecutionResult:
        reply = await self._request("shell", "execute_request", {
            "code": code, "silent": True, "store_history": False, "user_expressions": {}, "allow_stdin": False,
            "stop_on_error": False}, timeout=None)
        c = reply["content"]
        return ExecutionResult(status=c.get("status", "error"), ename=c.get("ename"), evalue=c.get("evalue"),
                               traceback=c.get("traceback", []))

    # -- variables ---------------------------------------------------------------------------------
    async def push(self, values: Any, *, timeout: float | None = None) -> TransferReport:
        self._ensure_open()
        return await self._mover.push(values, timeout=timeout)

    async def pull(self, names: list[str], *, timeout: float | None = None) -> tuple[dict[str, Any], TransferReport]:
        self._ensure_open()
        return await self._mover.pull(names, timeout=timeout)

    @property
    def remote_python(self) -> dict | None:
        """The target's Python as the transfer helper reported it (after a first push or pull)."""
        return self._mover.remote_info
