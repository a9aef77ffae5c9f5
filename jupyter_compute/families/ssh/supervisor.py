"""The detached supervisor of one ``ssh`` target.

It holds the SSH connection; starts the ipykernel on the remote machine bound to its loopback
(or re-attaches to one still running there); carries the kernel's five channels from local
loopback ports over that one connection; watches the kernel; and keeps the link alive, noticing
a cut within seconds and re-establishing it while the remote kernel, and its namespace, run on.
Everything it learns goes to the store. A control socket beside the connection file (mode
0600) lets routes follow the link, forward a port for moving variables, and interrupt the kernel.

Run as ``python -m jupyter_compute.families.ssh.supervisor --db … --workspace … --name …``; it
prints its own process identity and the launching call returns at once.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import traceback
import uuid
from typing import Any

import asyncssh

from ...core import processes as procs
from ...core.errors import ComputeError
from ...core.models import utcnow
from ...core.secrets import for_store
from ...core.store import Store
from .backend import (CONNECT_TIMEOUT, REMOTE_SOURCE, Link, connect, known_hosts_path, no_ipykernel_message,
                      remote_command, run_remote)
from .relay import KernelRelay

log = logging.getLogger(__name__)

CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
#: How long a cut link is retried before the target is marked failed (the remote kernel runs on).
RECONNECT_WINDOW = 300.0
#: Seconds between looks at the store: is this supervisor still its target's?
OWNER_CHECK = 1.0
RECONNECT_MAX_DELAY = 5.0
#: Unix socket paths are limited to about 108 bytes.
MAX_SOCKET_PATH = 100


class Fatal(Exception):
    """The target cannot be served any more: recorded as failed with this message and code."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message, self.code = message, code


class Supervisor:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.store = Store(args.db)
        self.secrets = for_store(args.db)
        self.known_hosts = known_hosts_path(args.db)
        self.ws, self.name, self.op = args.workspace, args.name, args.operation
        self.ident = procs.identity()
        self.spec: dict = {}
        self.password: str | None = None
        self.link: Link | None = None
        self.remote: dict | None = None
        self.connection: dict | None = None
        self.facts: dict = {}
        self.local_ports: dict[str, int] = {}
        self.servers: list[asyncio.AbstractServer] = []
        self.conn_file: str | None = None
        self.control_path: str | None = None
        self.control_dir: str | None = None
        self.subscribers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task] = set()
        self.reconnects = 0
        self.generation = 0
        #: Kernels started here for notebooks, by kernel id (see NotebookKernel).
        self.notebook_kernels: dict[str, NotebookKernel] = {}

    # -- the store, off this loop ------------------------------------------------------------------
    async def db(self, fn, *args, **kw):
        return await asyncio.to_thread(fn, *args, **kw)

    async def progress(self, text: str) -> None:
        log.info("%s", text)
        if self.op:
            await self.db(self.store.update_operation, self.op, progress=text)

    async def set_target(self, *, expect_state=None, **fields) -> bool:
        return await self.db(self.store.update_target, self.ws, self.name, expect_state=expect_state,
                             expect_runtime={"supervisor": self.ident}, **fields)

    @property
    def where(self) -> str:
        return self.spec.get("host", "the host")

    @property
    def python(self) -> str:
        return self.spec.get("python") or "python3"

    # -- lifecycle ---------------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.link_up = asyncio.Event()
        self.kernel_exited = asyncio.Event()
        #: How the remote kernel ended, when its waiter wrote it down (a negative code is a signal).
        self.kernel_exit_code: int | None = None
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        row = await self.db(self.store.get_target, self.ws, self.name)
        if row is None:
            return 1
        if self.op:
            await self.db(self.store.update_operation, self.op, owner=self.ident)
        self.spec = row["spec"]
        previous = row["runtime"] or {}
        self.facts = previous.get("facts") or {}
        await self.db(self.store.update_target, self.ws, self.name,
                      runtime={"supervisor": self.ident, "facts": self.facts, "remote": previous.get("remote"),
                               "log_file": self.args.log_file})
        self.password = await self.db(self.secrets.get, self.ws, self.name, "password")
        try:
            await self.start(previous.get("remote"))
        except Fatal as e:
            await self.fail(e.message, e.code)
            await self.close()
            return 1
        except ComputeError as e:
            await self.fail(e.message, e.reason)
            await self.close()
            return 1
        except _Stopped:
            await self.shutdown()
            return 0
        return await self.serve()

    async def start(self, previous_remote: dict | None) -> None:
        await self.progress(f"connecting to {self.spec.get('username')}@{self.where}:{self.spec.get('port', 22)}")
        self.link = await self.guard(connect(self.spec, self.password, known_hosts=self.known_hosts, keepalive=True))
        self.link_up.set()
        if previous_remote:
            answer = await self.guard(run_remote(self.link, self.python, "adopt", previous_remote))
            if answer.get("alive"):
                self.remote = {k: previous_remote.get(k) for k in ("pid", "conn_file", "log_file")}
                self.connection = answer["connection"]
                self.facts = answer.get("facts") or self.facts
                await self.progress(f"re-attached to the kernel still running on {self.where} "
                                    f"(pid {self.remote['pid']})")
        if self.remote is None:
            await self.progress(f"starting ipykernel with {self.python} on {self.where}")
            answer = await self.guard(run_remote(self.link, self.python, "launch", {"id": uuid.uuid4().hex[:12]}))
            if answer.get("error") == "no_ipykernel":
                raise Fatal(no_ipykernel_message(answer, self.where), "no_ipykernel")
            if "pid" not in answer:
                raise Fatal(f"the kernel could not be started on {self.where}: {answer.get('error', 'no answer')}",
                            "kernel_start_failed")
            self.remote = {k: answer[k] for k in ("pid", "conn_file", "log_file")}
            self.connection = answer["connection"]
            self.facts = answer.get("facts") or self.facts
        # Recorded at once, so a stop can end the kernel even if this process dies now.
        await self.set_target(runtime_merge={"remote": self.remote, "facts": self.facts})
        await self.open_tunnel()
        await self.open_control()
        self.start_watcher()
        await self.progress("waiting for the kernel to answer through the tunnel")
        await self.wait_ready()
        now = utcnow().isoformat()
        await self.set_target(state="running", errors=[], provider_state="connected",
                              runtime_merge={"connection_file": self.conn_file, "control": self.control_path,
                                             "link": "up", "link_since": now, "started": now, "reconnects": 0})
        if self.op:
            await self.db(self.store.finish_operation, self.op, progress="running")
            self.op = None

    async def guard(self, coro):
        """Await ``coro`` unless a stop arrives first."""
        task = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise _Stopped()

    # -- the tunnel --------------------------------------------------------------------------------
    async def open_tunnel(self) -> None:
        assert self.connection is not None
        servers, self.local_ports = await self._tunnel(self.connection)
        self.servers.extend(servers)
        local = {**self.connection, "ip": "127.0.0.1", "transport": "tcp",
                 **{f"{ch}_port": port for ch, port in self.local_ports.items()}}
        os.makedirs(self.args.runtime_dir, mode=0o700, exist_ok=True)
        stem = f"ssh-{self.ws}-{self.name}-{uuid.uuid4().hex[:8]}"
        self.conn_file = os.path.join(self.args.runtime_dir, stem + ".json")
        fd = os.open(self.conn_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(local, f)

    async def _tunnel(self, connection: dict, prefer: dict | None = None
                      ) -> tuple[list[asyncio.AbstractServer], dict[str, int]]:
        """A loopback port here for each of a remote kernel's channels (``prefer``'s where free)."""
        servers, ports = [], {}
        try:
            for ch in CHANNELS:
                remote_port = int(connection[f"{ch}_port"])

                async def listen(port: int, rp: int = remote_port) -> asyncio.AbstractServer:
                    loop = asyncio.get_running_loop()
                    return await loop.create_server(lambda: _Carried(self, rp), "127.0.0.1", port)

                wanted = int((prefer or {}).get(f"{ch}_port") or 0)
                try:
                    server = await listen(wanted)
                except OSError:  # taken meanwhile: any free port
                    server = await listen(0)
                servers.append(server)
                ports[ch] = server.sockets[0].getsockname()[1]
        except BaseException:
            for server in servers:
                server.close()
            raise
        return servers, ports

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def carry_to(self, remote_port: int, local: "_Carried") -> None:
        """Open the far end of one local connection: the kernel's port, over the current SSH link
        (held while the link is being re-established)."""
        try:
            if not self.link_up.is_set():
                await asyncio.wait_for(self.link_up.wait(), RECONNECT_WINDOW)
            chan, _ = await asyncio.wait_for(
                self.link.conn.create_connection(lambda: _Far(local), "127.0.0.1", remote_port), 10)
        except Exception as e:
            log.debug("cannot carry a connection to port %s: %s", remote_port, e)
            local.transport.close()
            return
        local.joined(chan)

    # -- the control socket ------------------------------------------------------------------------
    async def open_control(self) -> None:
        name = f"ssh-{uuid.uuid4().hex[:8]}.sock"
        path = os.path.join(self.args.runtime_dir, name)
        if len(path) > MAX_SOCKET_PATH:
            self.control_dir = tempfile.mkdtemp(prefix="jc-")
            path = os.path.join(self.control_dir, name)
        server = await asyncio.start_unix_server(lambda r, w: self._spawn(self.on_control(r, w)), path)
        os.chmod(path, 0o600)
        self.servers.append(server)
        self.control_path = path

    def link_event(self) -> dict:
        return {"event": "link", "up": self.link_up.is_set(), "generation": self.generation}

    async def broadcast(self, event: dict) -> None:
        data = json.dumps(event).encode() + b"\n"
        for w in list(self.subscribers):
            try:
                w.write(data)
            except Exception:
                self.subscribers.discard(w)

    async def on_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def answer(obj: dict) -> None:
            writer.write(json.dumps(obj).encode() + b"\n")
            await writer.drain()

        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            req = json.loads(line or b"{}")
            op = req.get("op")
            if op == "watch":
                self.subscribers.add(writer)
                await answer(self.link_event())
                await reader.read()  # until the route goes away
            elif op == "forward":
                reply, listener = await self.forward(req)
                await answer(reply)
                if listener is not None:
                    try:
                        await reader.read()  # the forward lasts as long as the asker's connection
                    finally:
                        listener.close()
            elif op == "interrupt":
                await answer(await self.remote_call("signal", {**self.remote, "signal": "SIGINT"}))
            elif op == "kernel":
                await self.notebook_kernel(req, reader, writer, answer)
            elif op == "probe":
                result = await self.remote_call("probe", {})
                if result.get("facts"):
                    self.facts = result["facts"]
                    await self.set_target(runtime_merge={"facts": self.facts})
                await answer({"ok": "facts" in result, **result})
            else:
                await answer({"ok": False, "error": f"unknown request {op!r}"})
        except (asyncio.TimeoutError, ValueError, ConnectionError, OSError):
            pass
        finally:
            self.subscribers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def forward(self, req: dict):
        """A port on the remote loopback that leads to ``port`` here, and its listener."""
        port = req.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            return {"ok": False, "error": "port must be a TCP port number"}, None
        try:
            await asyncio.wait_for(self.link_up.wait(), 15)
            listener = await self.link.conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", port)
        except Exception as e:
            return {"ok": False, "error": f"the host refused a forwarded port: {e}"}, None
        return {"ok": True, "host": "127.0.0.1", "port": listener.get_port()}, listener

    async def remote_call(self, command: str, arg: dict, timeout: float = 20) -> dict:
        if not self.link_up.is_set() or self.link is None:
            return {"ok": False, "error": "the SSH link is down"}
        try:
            return await run_remote(self.link, self.python, command, arg, timeout=timeout)
        except ComputeError as e:
            return {"ok": False, "error": e.message}

    # -- kernels for notebooks ----------------------------------------------------------------------
    async def notebook_kernel(self, req: dict, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              answer) -> None:
        """A fresh kernel there for one notebook, its channels carried over this target's link.

        The asker's control connection is the kernel's lease: signals and a stop come over it, its
        end comes over it, and when the asker goes away (its process died) the kernel is ended.
        """
        kid = str(req.get("id") or uuid.uuid4().hex)
        try:
            await asyncio.wait_for(self.link_up.wait(), 30)
        except asyncio.TimeoutError:
            await answer({"ok": False, "error": f"the SSH link to {self.where} is down"})
            return
        launch = {"id": "nb-" + kid[:12]}
        if isinstance(req.get("key"), str) and req["key"]:
            launch["key"] = req["key"]
        launched = await self.remote_call("launch", launch, timeout=60)
        if launched.get("error") == "no_ipykernel":
            await answer({"ok": False, "error": no_ipykernel_message(launched, self.where)})
            return
        if "pid" not in launched:
            await answer({"ok": False, "error": f"a kernel could not be started on {self.where}: "
                                                f"{launched.get('error', 'no answer')}"})
            return
        remote = {k: launched[k] for k in ("pid", "conn_file", "log_file")}
        nb = NotebookKernel(kid, remote, writer)
        self.notebook_kernels[kid] = nb
        try:
            # Recorded at once: a stop, or reconcile, ends it even if this process dies now.
            await self.db(self.store.add_kernel, kid, self.ws, self.name, str(req.get("owner") or self.ident),
                          runtime={"remote": remote, "supervisor": self.ident})
            # The tunnels listen on ports of their own; the relay binds the ones clients use, so a
            # cut link can answer the cells under way (see relay.py).
            nb.servers, tunnels = await self._tunnel(launched["connection"])
            nb.relay = KernelRelay(launched["connection"], self.where)
            ports = nb.relay.open(tunnels, req.get("ports"))
            local = {**launched["connection"], "ip": "127.0.0.1", "transport": "tcp",
                     **{f"{ch}_port": port for ch, port in ports.items()}}
            await answer({"ok": True, "connection": local, "remote_pid": remote["pid"]})
            self._spawn(self.watch_notebook_kernel(nb))
            while True:
                line = await reader.readline()
                if not line:
                    break  # the notebook's side is gone
                ask = json.loads(line)
                if ask.get("op") == "signal":
                    await answer(await self.remote_call("signal", {**remote, "signal": str(ask.get("signal"))}))
                elif ask.get("op") == "stop":
                    await self.end_notebook_kernel(nb, None)
                    await answer({"ok": True})
                    break
        finally:
            await self.end_notebook_kernel(nb, None)
            self.notebook_kernels.pop(kid, None)
            with contextlib.suppress(Exception):
                await self.db(self.store.remove_kernel, kid)

    async def watch_notebook_kernel(self, nb: "NotebookKernel") -> None:
        """Tell the notebook's side when its kernel exits on the remote machine."""
        while not nb.ended:
            link = self.link
            if link is not None and self.link_up.is_set():
                try:
                    proc = await link.conn.create_process(remote_command(self.python, "watch", nb.remote))
                    proc.stdin.write(REMOTE_SOURCE)
                    proc.stdin.write_eof()
                    async for line in proc.stdout:
                        with contextlib.suppress(ValueError):
                            msg = json.loads(line)
                            if msg.get("exited") or msg.get("alive") is False:
                                if not nb.ended:
                                    tail = (await self.remote_call("tail", nb.remote, timeout=15)).get("log", "")
                                    nb.notify({"event": "exited", "reason": f"the kernel on {self.where} "
                                                                            f"{_ended(msg.get('code'))}. "
                                                                            f"Last output: {tail.strip()[-400:]}"})
                                    nb.ended = True
                                return
                except Exception as e:
                    log.debug("notebook kernel watcher ended: %s", e)
            await asyncio.sleep(1.0)

    async def end_notebook_kernel(self, nb: "NotebookKernel", reason: str | None) -> None:
        """End a notebook's kernel on the remote machine and close its tunnel; ``reason`` is told to
        the notebook's side when the kernel did not end because it asked."""
        if reason and not nb.ended:
            nb.notify({"event": "exited", "reason": reason})
        if not nb.stopped:
            nb.stopped = True
            if self.link is not None and self.link_up.is_set():
                await self.remote_call("stop", nb.remote, timeout=20)
        nb.ended = True
        if nb.relay is not None:
            relay, nb.relay = nb.relay, None
            await relay.close()
        for server in nb.servers:
            server.close()
        nb.servers = []

    async def end_notebook_kernels(self, reason: str) -> None:
        for nb in list(self.notebook_kernels.values()):
            await self.end_notebook_kernel(nb, reason)
            with contextlib.suppress(Exception):
                nb.writer.close()

    # -- watching the kernel -----------------------------------------------------------------------
    def start_watcher(self) -> None:
        self._spawn(self.watch(self.link, self.generation))

    async def watch(self, link: Link, generation: int) -> None:
        """Learn from the remote the moment the kernel exits; ends quietly when the link does."""
        while True:
            try:
                proc = await link.conn.create_process(remote_command(self.python, "watch", self.remote))
                proc.stdin.write(REMOTE_SOURCE)
                proc.stdin.write_eof()
                async for line in proc.stdout:
                    with contextlib.suppress(ValueError):
                        msg = json.loads(line)
                        if msg.get("exited") or msg.get("alive") is False:
                            if generation == self.generation:
                                self.kernel_exit_code = msg.get("code")
                                self.kernel_exited.set()
                            return
            except Exception as e:
                log.debug("kernel watcher ended: %s", e)
            # The watcher's channel closed while the kernel lives: a cut link (handled by serve)
            # or a session closed on its own, after which the watcher is started again.
            await asyncio.sleep(1.0)
            if generation != self.generation or not self.link_up.is_set() or self.stopping.is_set():
                return

    async def wait_ready(self) -> None:
        from jupyter_client.asynchronous import AsyncKernelClient

        kc = AsyncKernelClient()
        with open(self.conn_file) as f:
            kc.load_connection_info(json.load(f))
        kc.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.args.ready_timeout
        try:
            while loop.time() < deadline:
                if self.stopping.is_set():
                    raise _Stopped()
                if self.kernel_exited.is_set():
                    tail = (await self.remote_tail()).strip()
                    hint = ""
                    if "No module named" in tail:
                        hint = f" A module the kernel needs is missing for {self.python} on {self.where}."
                    raise Fatal(f"the kernel exited during start on {self.where}.{hint} Last output: {tail[-800:]}",
                                "kernel_start_failed")
                msg_id = kc.kernel_info()
                with contextlib.suppress(Exception):
                    while True:
                        reply = await kc.get_shell_msg(timeout=1.0)
                        if reply["parent_header"].get("msg_id") == msg_id:
                            return
            raise Fatal(f"the kernel on {self.where} did not answer within {self.args.ready_timeout:g} s; "
                        f"its log is {self.remote.get('log_file')} there", "kernel_start_timeout")
        finally:
            kc.stop_channels()

    async def remote_tail(self) -> str:
        if self.link is None or not self.remote:
            return ""
        with contextlib.suppress(ComputeError):
            return (await run_remote(self.link, self.python, "tail", self.remote, timeout=15)).get("log", "")
        return ""

    # -- serving -----------------------------------------------------------------------------------
    async def watch_owner(self) -> None:
        """Look at the store now and then: a target deleted (by a process that died before ending
        this one), or taken over by another supervisor, leaves nothing here to keep running."""
        while not self.stopping.is_set():
            await asyncio.sleep(OWNER_CHECK)
            try:
                row = await self.db(self.store.get_target, self.ws, self.name)
            except Exception:  # the store cannot be read just now: look again later
                continue
            if row is not None and (row.get("runtime") or {}).get("supervisor") == self.ident:
                continue
            if row is not None:
                # Another supervisor runs the target and may have adopted its kernel: leave that be.
                self.remote = None
            log.warning("'%s' was %s; ending", self.name, "deleted" if row is None else "taken over")
            self.stopping.set()
            return

    async def serve(self) -> int:
        self._spawn(self.watch_owner())
        try:
            while True:
                waits = {asyncio.ensure_future(self.link.wait_closed()): "link",
                         asyncio.ensure_future(self.kernel_exited.wait()): "kernel",
                         asyncio.ensure_future(self.stopping.wait()): "stop"}
                done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for t in pending:
                    t.cancel()
                what = {waits[t] for t in done}
                if "stop" in what:
                    await self.shutdown()
                    return 0
                if "kernel" in what:
                    await self.kernel_died()
                    return 0
                await self.reconnect()
        except Fatal as e:
            await self.fail(e.message, e.code)
            await self.close()
            return 1
        except _Stopped:
            await self.shutdown()
            return 0

    async def reconnect(self) -> None:
        """The link dropped: say so at once, then re-establish it and re-attach to the kernel."""
        self.link_up.clear()
        self.generation += 1
        old, self.link = self.link, None
        for nb in self.notebook_kernels.values():
            if nb.relay is not None:
                nb.relay.link_lost(f"the SSH link to {self.where} was cut while this cell ran; it is being "
                                   "re-established, and the kernel and its variables live on there (the cell "
                                   "itself may still be running)")
        if old is not None:
            self._spawn(old.close())
        await self.broadcast(self.link_event())
        since = utcnow().isoformat()
        await self.set_target(expect_state="running", state="unknown",
                              provider_state="SSH link lost; reconnecting",
                              errors=[{"message": f"the SSH link to {self.where} was lost; reconnecting",
                                       "code": "link_lost", "at": since}])
        await self.set_target(runtime_merge={"link": "down", "link_since": since})
        log.info("link to %s lost; reconnecting", self.where)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECONNECT_WINDOW
        delay, attempt, last = 0.25, 0, ""
        while True:
            attempt += 1
            try:
                link = await self.guard(connect(self.spec, self.password, known_hosts=self.known_hosts,
                                                keepalive=True, timeout=min(CONNECT_TIMEOUT, 10)))
            except ComputeError as e:
                if e.reason in ("unknown_host_key", "host_key_changed", "auth_failed"):
                    raise Fatal(f"the SSH link to {self.where} could not be re-established: {e.message}",
                                e.reason) from None
                last = e.message
            else:
                try:
                    answer = await self.guard(run_remote(link, self.python, "adopt", self.remote, timeout=20))
                except ComputeError as e:
                    await link.close()
                    last = e.message
                else:
                    if not answer.get("alive"):
                        await link.close()
                        self.remote = None
                        raise Fatal(f"the remote kernel on {self.where} exited while the SSH link was down; "
                                    "its variables are lost. Start the target again.", "kernel_died")
                    self.link = link
                    self.facts = answer.get("facts") or self.facts
                    self.reconnects += 1
                    self.start_watcher()
                    self.link_up.set()
                    now = utcnow().isoformat()
                    # The link's record first: whoever sees "running" sees the link that brought it back.
                    await self.set_target(runtime_merge={"link": "up", "link_since": now,
                                                         "reconnects": self.reconnects, "facts": self.facts})
                    await self.set_target(expect_state="unknown", state="running", errors=[],
                                          provider_state=f"connected (re-established {self.reconnects}x)")
                    await self.broadcast(self.link_event())
                    log.info("link to %s re-established after %d attempt(s)", self.where, attempt)
                    return
            if loop.time() > deadline:
                raise Fatal(f"the SSH link to {self.where} could not be re-established within "
                            f"{RECONNECT_WINDOW:g} s ({last}). The remote kernel may still run there: start "
                            "re-attaches to it, stop ends it.", "link_lost")
            await self.set_target(expect_state="unknown",
                                  provider_state=f"SSH link lost; reconnecting (attempt {attempt}: {last})")
            await self.guard(asyncio.sleep(delay))
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def kernel_died(self) -> None:
        how = _ended(self.kernel_exit_code)
        await self.end_notebook_kernels(f"the target '{self.name}' failed: its kernel on {self.where} {how}")
        tail = (await self.remote_tail()).strip()
        if self.link is not None and self.remote:
            with contextlib.suppress(ComputeError):
                await run_remote(self.link, self.python, "stop", self.remote, timeout=15)
        self.remote = None
        await self.broadcast({"event": "closing", "why": "the remote kernel exited"})
        await self.set_target(state="failed", provider_state=None,
                              runtime_merge={"supervisor": None, "remote": None, "connection_file": None,
                                             "control": None, "link": None},
                              errors=[{"message": f"the remote kernel on {self.where} {how}. "
                                                  f"Last output: {tail[-600:]}",
                                       "code": "kernel_died", "at": utcnow().isoformat()}])
        await self.close()

    async def shutdown(self) -> None:
        """Asked to stop: end the remote kernel (reconnecting once if the link is down), then exit."""
        await self.broadcast({"event": "closing", "why": "the target was stopped"})
        await self.end_notebook_kernels(f"the target '{self.name}' was stopped")
        ended = self.remote is None
        if self.remote:
            link = self.link if self.link_up.is_set() else None
            try:
                if link is None:
                    link = self.link = await connect(self.spec, self.password, known_hosts=self.known_hosts,
                                                     timeout=10)
                answer = await run_remote(link, self.python, "stop", self.remote, timeout=20)
                ended = bool(answer.get("ok"))
            except ComputeError as e:
                log.warning("could not end the remote kernel: %s", e.message)
        fields: dict[str, Any] = {"supervisor": None, "connection_file": None, "control": None, "link": None}
        if ended:
            fields["remote"] = None
        await self.set_target(runtime_merge=fields)
        if self.op:
            await self.db(self.store.finish_operation, self.op,
                          error={"message": "the start was cancelled by a stop", "reason": "cancelled"})
            self.op = None
        await self.close()

    async def fail(self, message: str, code: str) -> None:
        log.warning("failed: %s", message)
        await self.end_notebook_kernels(f"the target '{self.name}' failed: {message}")
        await self.broadcast({"event": "closing", "why": message})
        if self.link is not None and self.remote and code in ("kernel_start_failed", "kernel_start_timeout"):
            with contextlib.suppress(ComputeError):
                await run_remote(self.link, self.python, "stop", self.remote, timeout=15)
                self.remote = None
        err = {"message": message, "code": code, "at": utcnow().isoformat()}
        await self.set_target(state="failed", provider_state=None, errors=[err],
                              runtime_merge={"supervisor": None, "connection_file": None, "control": None,
                                             "link": None, "remote": self.remote})
        if self.op:
            await self.db(self.store.finish_operation, self.op, error={"message": message, "reason": code})
            self.op = None

    async def close(self) -> None:
        for s in self.servers:
            s.close()
        for w in list(self.subscribers):
            with contextlib.suppress(Exception):
                w.close()
        for t in list(self.tasks):
            t.cancel()
        if self.link is not None:
            with contextlib.suppress(Exception):
                await self.link.close()
        for path in (self.conn_file, self.control_path):
            if path:
                with contextlib.suppress(OSError):
                    os.remove(path)
        if self.control_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self.control_dir)


class NotebookKernel:
    """A kernel started on the remote machine for one notebook, and its lease (the asker's connection)."""

    def __init__(self, kernel_id: str, remote: dict, writer: asyncio.StreamWriter):
        self.id, self.remote, self.writer = kernel_id, remote, writer
        self.servers: list[asyncio.AbstractServer] = []
        self.relay: KernelRelay | None = None
        #: The kernel has exited or been ended; ``stopped``: the remote was told to end it.
        self.ended = False
        self.stopped = False

    def notify(self, event: dict) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(json.dumps(event).encode() + b"\n")


class _Carried(asyncio.Protocol):
    """A local connection to one of a kernel's channels, carried over the SSH link byte for byte.

    Protocols rather than streams: each kernel message crosses here with one callback each way,
    no task wake-ups and no read loop; each side's back-pressure pauses the other. Either side may
    already be closing when the other calls: that is never an error, and nothing here raises into
    the SSH connection (which would end the whole link, not this one connection)."""

    def __init__(self, sup: "Supervisor", remote_port: int):
        self.sup, self.remote_port = sup, remote_port
        self.transport: asyncio.Transport | None = None
        self.chan = None
        self.early: list[bytes] = []  # what arrives before the far end is open

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.pause_reading()  # until the far end is open
        self.sup._spawn(self.sup.carry_to(self.remote_port, self))

    def joined(self, chan) -> None:
        if self.transport.is_closing():
            chan.close()
            return
        self.chan = chan
        with contextlib.suppress(Exception):
            for data in self.early:
                chan.write(data)
            self.transport.resume_reading()
        self.early = []

    def data_received(self, data: bytes) -> None:
        if self.chan is None:
            self.early.append(data)
            return
        try:
            self.chan.write(data)
        except Exception:  # the channel closed under us: so does this connection
            self.transport.close()

    def eof_received(self) -> bool:
        if self.chan is not None:
            with contextlib.suppress(Exception):
                self.chan.write_eof()
        return True

    def connection_lost(self, exc) -> None:
        if self.chan is not None:
            with contextlib.suppress(Exception):
                self.chan.close()

    def pause_writing(self) -> None:
        if self.chan is not None:
            with contextlib.suppress(Exception):
                self.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.chan is not None:
            with contextlib.suppress(Exception):
                self.chan.resume_reading()

    def write(self, data: bytes) -> None:
        """From the far end: to the local connection, unless it is going."""
        if not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self.transport.write(data)


class _Far(asyncssh.SSHTCPSession):
    """The SSH channel's end of a carried connection."""

    def __init__(self, local: _Carried):
        self.local = local

    def data_received(self, data: bytes, datatype) -> None:
        self.local.write(data)

    def eof_received(self) -> bool:
        transport = self.local.transport
        if not transport.is_closing() and transport.can_write_eof():
            with contextlib.suppress(Exception):
                transport.write_eof()
        return True

    def connection_lost(self, exc) -> None:
        self.local.transport.close()

    def pause_writing(self) -> None:
        with contextlib.suppress(Exception):
            self.local.transport.pause_reading()

    def resume_writing(self) -> None:
        with contextlib.suppress(Exception):
            self.local.transport.resume_reading()


class _Stopped(Exception):
    """A stop arrived while starting or reconnecting."""


def _loop_factory():
    """uvloop's event loop where it is installed: every kernel message crosses this process twice
    (the relay, then the SSH channel), and its loop's per-message cost is what the kernel's round
    trip pays over a plain kernel's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _ended(code: int | None) -> str:
    """How a remote kernel ended, in words, from what its waiter wrote down."""
    return f"exited unexpectedly ({procs.exit_words(code)})" if code is not None else "exited unexpectedly"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="jupyter_compute.families.ssh.supervisor")
    ap.add_argument("--db", required=True)
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--operation")
    ap.add_argument("--runtime-dir", required=True)
    ap.add_argument("--ready-timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    os.makedirs(args.runtime_dir, mode=0o700, exist_ok=True)
    args.log_file = os.path.join(args.runtime_dir, f"ssh-{args.workspace}-{args.name}.log")
    # Fork away from the caller: it waits only for this first process, which exits at once.
    procs.detach()
    logfd = os.open(args.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    handler = logging.StreamHandler(os.fdopen(logfd, "a", buffering=1))
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sup = Supervisor(args)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(sup.run())
    except Exception:
        log.exception("the SSH supervisor failed")
        try:
            asyncio.run(sup.fail("the SSH supervisor failed: " + traceback.format_exc(limit=3)[-800:],
                                 "supervisor_failed"))
        except Exception:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
