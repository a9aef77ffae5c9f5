"""Any Jupyter server as a compute target: kind ``jupyter``, attached by URL and credentials.

Attach proves the server answers ``/api/status`` with the credentials; start and stop create and
shut down one kernel through its REST API; cells reach that kernel over the server's channels
websocket (``transport.websocket``). Credentials live in the secret store (``core.secrets``), never in
the sqlite store, a Target, an event or a log line. A server that goes away shows as ``unknown``;
when it returns, the next cell reconnects, or starts a new kernel and says the namespace was lost.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator

from ...core import secrets as secret_store
from ...core.errors import BackendRefused, ComputeError, Conflict, InvalidRequest, Unavailable
from ...core.backend import Backend, KindSpec, OperationContext, Outcome, stored_target
from ...core.models import SECRET, Node, Spec, State, Target, utcnow
from ...core.kernels import KernelSpecInfo, TargetKernel
from ...core.route import Route
from ...transport.jupyter_client import (Authorizer, CredentialsRefused, JupyterClient, StaticAuth, is_loopback,
                                         normalise_url)
from ...transport.kernel_bridge import ServerKernel, read_kernelspecs, server_kernel_specs
from ...transport.websocket import WebsocketRoute

log = logging.getLogger(__name__)

KIND = "jupyter"
SECRET_FIELDS = ("token", "authorization")
#: Seconds between health checks of one running target, per process.
HEALTH_INTERVAL = 2.0
#: ... and of one whose credentials the server refused (each check is a refusal in its log).
REFUSED_INTERVAL = 30.0
#: A health check that takes longer than this counts as "does not answer".
HEALTH_TIMEOUT = 3.0
#: How long ``reconcile`` waits for health checks before leaving them to finish in the background.
RECONCILE_WAIT = 1.0

#: provider_state values this backend writes (besides None for a healthy running kernel).
NO_KERNEL = "no kernel"
UNREACHABLE = "unreachable"
KERNEL_LOST = "kernel lost"
REFUSED = "credentials refused"


def _check_header_value(v: str | None, what: str) -> str | None:
    if v is None:
        return v
    if not v or any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise ValueError(f"{what} must be non-empty, on one line, without control characters")
    return v


def check_url(value: str) -> str:
    """A Jupyter server's base URL: http(s), a host, no credentials, query or fragment."""
    if not isinstance(value, str) or any(ord(c) <= 32 or ord(c) == 127 for c in value):
        raise ValueError("must be a URL without spaces or control characters, such as https://hub.example.org/user/me/")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"is not a valid URL ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        got = f"'{parts.scheme}:'" if parts.scheme else "none"
        raise ValueError(f"must be an http:// or https:// URL (scheme {got} is not)")
    if not parts.hostname:
        raise ValueError("must name a host, such as http://127.0.0.1:8888/")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not hold a user name or password; give the token separately (--token-stdin)")
    if parts.query or parts.fragment:
        if "token" in parts.query.lower():
            raise ValueError("must not carry the token (?token=…): give it separately (--token-stdin), "
                             "so it is kept as a secret")
        raise ValueError("must be the server's base URL, without a query (?…) or fragment (#…)")
    host = parts.hostname
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return normalise_url(urlunsplit((scheme, netloc, parts.path or "/", "", "")))


class JupyterServerSpec(Spec):
    url: str = Field(..., max_length=2048,
                     description="Base URL of the Jupyter server, e.g. https://hub.example.org/user/me/.")
    token: str | None = Field(None, max_length=4096, json_schema_extra=SECRET,
                              description="The server's token, sent as 'Authorization: token …'.")
    authorization: str | None = Field(None, max_length=16384, json_schema_extra=SECRET,
                                      description="A whole Authorization header value (e.g. 'Bearer …'), "
                                                  "instead of a token.")
    kernel_name: str | None = Field(None, min_length=1, max_length=256,
                                    description="Kernelspec of the kernel started on the server; "
                                                "default: the server's default.")
    allow_insecure_http: bool = Field(False, description="Send credentials over plain http to a host other "
                                                         "than this machine (they can be read on the way).")
    updatable = frozenset({"token", "authorization", "kernel_name", "allow_insecure_http", "description", "tags"})

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, v: Any) -> Any:
        return check_url(v) if isinstance(v, str) else v

    @field_validator("token")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        return _check_header_value(v, "the token")

    @field_validator("authorization")
    @classmethod
    def _authorization(cls, v: str | None) -> str | None:
        return _check_header_value(v, "the authorization header value")

    @model_validator(mode="after")
    def _credentials(self) -> "JupyterServerSpec":
        if self.token and self.authorization:
            raise ValueError("give a token or an authorization header value, not both")
        host = urlsplit(self.url).hostname or ""
        if ((self.token or self.authorization) and self.url.startswith("http:") and not is_loopback(host)
                and not self.allow_insecure_http):
            raise ValueError(f"credentials would travel unencrypted to {host} over http; use https, "
                             "or set allow_insecure_http if the network is trusted")
        return self

    def credentials(self) -> str:
        return "token" if self.token else "authorization header" if self.authorization else "none"


class _Keeper:
    """The route's way back to this backend: replace a lost kernel, record a lost server."""

    def __init__(self, backend: "RemoteJupyterBackend", name: str):
        self.backend = backend
        self.name = name

    async def recover(self, kernel_id: str) -> tuple[str, str]:
        return await self.backend._replace_kernel(self.name, kernel_id)

    async def lost(self, kernel_id: str, message: str, *, reachable: bool) -> None:
        await self.backend._record_lost(self.name, kernel_id, message, reachable)


class RemoteJupyterBackend(Backend):
    secret_fields = SECRET_FIELDS
    kinds = {
        KIND: KindSpec(
            KIND, "Remote machines",
            "A Jupyter server you can reach (a JupyterHub, a workstation, a cloud notebook service); "
            "cells run in a kernel it starts for you.",
            managed=False, operations=("attach", "update", "start", "stop", "restart", "detach", "nodes"),
            attach_model=JupyterServerSpec, keeps_variables=True,
            examples=[{"name": "workstation", "url": "http://127.0.0.1:8888/", "token": "<the server's token>"},
                      {"name": "hub", "url": "https://hub.example.org/user/me/", "token": "<an API token>",
                       "kernel_name": "python3"}]),
    }

    def __init__(self, workspace_id, store, settings):
        super().__init__(workspace_id, store, settings)
        self._checked: dict[str, float] = {}
        self._checks: dict[str, asyncio.Task] = {}

    # -- credentials -------------------------------------------------------------------------------
    def _secrets(self) -> secret_store.SecretStore:
        return secret_store.for_store(self.store.sync.path)

    async def _load_secrets(self, name: str) -> dict[str, str]:
        def read() -> dict[str, str]:
            s = self._secrets()
            found = {f: s.get(self.workspace_id, name, f) for f in SECRET_FIELDS}
            return {f: v for f, v in found.items() if v is not None}
        return await asyncio.to_thread(read)

    async def _save_secrets(self, name: str, values: dict[str, str]) -> None:
        def write() -> None:
            s = self._secrets()
            for f in SECRET_FIELDS:
                if values.get(f):
                    s.put(self.workspace_id, name, f, values[f])
            s.delete(self.workspace_id, name, [f for f in SECRET_FIELDS if not values.get(f)])
        await asyncio.to_thread(write)

    async def _forget_secrets(self, name: str) -> None:
        await asyncio.to_thread(self._secrets().delete, self.workspace_id, name, SECRET_FIELDS)

    def authorizer(self, name: str, secrets: dict[str, str]) -> Authorizer:
        """How requests for target ``name`` authenticate. A subclass (or another backend reusing
        the route) returns a ``BearerTokenAuth`` here to supply refreshed bearer tokens."""
        return StaticAuth.from_spec(secrets.get("token"), secrets.get("authorization"))

    async def _client(self, row: dict, *, timeout: float | None = None) -> JupyterClient:
        url = row["spec"]["url"]
        self._check_host(url)
        auth = self.authorizer(row["name"], await self._load_secrets(row["name"]))
        return JupyterClient(url, auth, **({"timeout": timeout} if timeout else {}))

    def _check_host(self, url: str) -> None:
        allowed = list(self.settings.compute.allowed_hosts or [])
        host = urlsplit(url).hostname or ""
        if allowed and host not in allowed:
            raise InvalidRequest(f"url: {host} is not an allowed host (ComputeConfig.allowed_hosts: "
                                 f"{', '.join(allowed)})", field="/url", reason="host_not_allowed")

    def validate_spec(self, kind: str, data: dict[str, Any], *, attach: bool) -> Spec:
        spec = super().validate_spec(kind, data, attach=attach)
        self._check_host(spec.url)
        return spec

    # -- reading -----------------------------------------------------------------------------------
    async def list_targets(self, stored: list[dict]) -> list[Target]:
        return [self._target(r) for r in stored]

    async def get_target(self, name: str, stored: dict | None) -> Target | None:
        if stored is None:
            return None
        if stored["state"] == State.unknown.value and time.monotonic() - self._checked.get(name, 0.0) >= 1.0:
            # Asked about a target whose server was away: look again, so a server that came
            # back is usable at once, even where no server extension watches.
            fresh = await self._health(stored, wait=HEALTH_TIMEOUT + 1)
            stored = fresh or stored
        return self._target(stored)

    def _target(self, row: dict) -> Target:
        rt = row.get("runtime") or {}
        props: dict[str, Any] = {"credentials": rt.get("credentials", "none")}
        for k in ("kernel_id", "kernel_name", "server_version", "started"):
            if rt.get(k):
                props[k] = rt[k]
        running = row["state"] == State.running.value
        return stored_target(row, properties=props,
                             nodes={"current": 1 if running else 0, "min": 0, "max": 1,
                                    "running": 1 if running else 0})

    async def nodes(self, target: Target) -> list[Node]:
        row = await self.store.get_target(self.workspace_id, target.name)
        rt = row["runtime"]
        parts = urlsplit(row["spec"]["url"])
        port = parts.port or (443 if parts.scheme == "https" else 80)
        server = Node(id=f"{parts.hostname}:{port}", state="running", address=parts.hostname, port=port,
                      properties={"role": "server", "url": row["spec"]["url"]})
        out = [server]
        async with await self._client(row, timeout=HEALTH_TIMEOUT * 2) as client:
            try:
                status = await client.status()
                server.properties.update(version=await client.version(), kernels=status.get("kernels"),
                                         connections=status.get("connections"),
                                         last_activity=status.get("last_activity"))
            except CredentialsRefused as e:
                server.state, server.properties["error"] = REFUSED, e.message
                return out
            except Unavailable as e:
                server.state, server.properties["error"] = UNREACHABLE, e.message
                return out
            kid = rt.get("kernel_id")
            if kid:
                k = await client.kernel(kid) or {}
                out.append(Node(id=kid, state=k.get("execution_state", "gone"),
                                properties={"role": "kernel", "kernel_name": k.get("name", rt.get("kernel_name")),
                                            "last_activity": k.get("last_activity"),
                                            "connections": k.get("connections")}))
        return out

    async def route(self, target: Target) -> Route:
        row = await self.store.get_target(self.workspace_id, target.name)
        kid = row["runtime"].get("kernel_id")
        if not kid:
            raise Conflict(f"'{target.name}' has no kernel; start it first", reason="not_running")
        self._check_host(row["spec"]["url"])
        return WebsocketRoute(row["spec"]["url"], kid, self.authorizer(target.name, await self._load_secrets(target.name)),
                              target=target.name, keeper=_Keeper(self, target.name))

    # -- changing ----------------------------------------------------------------------------------
    async def attach(self, name: str, kind: str, spec: Spec, ctx: OperationContext) -> Outcome:
        assert isinstance(spec, JupyterServerSpec)
        await ctx.progress(f"checking {spec.url}api/status")
        rt: dict[str, Any] = {"credentials": spec.credentials()}
        async with JupyterClient(spec.url, self.authorizer(name, spec.secrets())) as client:
            await client.status()
            rt["server_version"] = await client.version()
            if spec.kernel_name:
                await _check_kernelspec(client, spec.kernel_name)
            await read_kernelspecs(client, rt)
        await self._save_secrets(name, spec.secrets())
        return Outcome(State.stopped, provider_state=NO_KERNEL, runtime=rt)

    async def update(self, target: Target, changes: dict[str, Any]) -> None:
        row = await self.store.get_target(self.workspace_id, target.name)
        merged = {**row["spec"], **await self._load_secrets(target.name), **changes}
        # A new token replaces an authorization header, and the other way round.
        for given, other in (("token", "authorization"), ("authorization", "token")):
            if changes.get(given) and other not in changes:
                merged.pop(other, None)
        spec = self.validate_spec(target.kind, merged, attach=True)
        assert isinstance(spec, JupyterServerSpec)
        if any(k in changes for k in ("token", "authorization", "kernel_name")):
            async with JupyterClient(spec.url, self.authorizer(target.name, spec.secrets())) as client:
                await client.status()
                if spec.kernel_name:
                    await _check_kernelspec(client, spec.kernel_name)
        await self._save_secrets(target.name, spec.secrets())
        fields: dict[str, Any] = {"runtime_merge": {"credentials": spec.credentials()}}
        if row.get("provider_state") == REFUSED:
            # The refused credentials were replaced by ones the server accepts.
            fields.update(state=State.running.value if row["runtime"].get("kernel_id") else State.stopped.value,
                          provider_state=None if row["runtime"].get("kernel_id") else NO_KERNEL, errors=[])
        await self._write_spec(target.name, row["spec"], spec.public(), **fields)

    async def start(self, target: Target, ctx: OperationContext) -> Outcome:
        row = await self.store.get_target(self.workspace_id, target.name)
        rt = dict(row["runtime"])
        async with await self._client(row) as client:
            await read_kernelspecs(client, rt)
            kid = rt.get("kernel_id")
            if kid and await client.kernel(kid) is not None:
                await ctx.progress(f"kernel {kid} is still running; using it")
                return Outcome(State.running, runtime=rt)
            return await self._start_kernel(client, row, rt, ctx)

    async def _start_kernel(self, client: JupyterClient, row: dict, rt: dict, ctx: OperationContext | None) -> Outcome:
        kernel_name = row["spec"].get("kernel_name")
        if kernel_name:
            await _check_kernelspec(client, kernel_name)
        if ctx is not None:
            await ctx.progress(f"starting a {kernel_name or 'default'} kernel on {client.url}")
        k = await client.start_kernel(kernel_name)
        rt.update(kernel_id=k["id"], kernel_name=k.get("name"), started=utcnow().isoformat())
        return Outcome(State.running, runtime=rt)

    async def stop(self, target: Target, ctx: OperationContext) -> Outcome:
        row = await self.store.get_target(self.workspace_id, target.name)
        await self._end_kernels(row, f"the target '{target.name}' was stopped")
        rt = {k: v for k, v in row["runtime"].items() if k not in ("kernel_id", "kernel_name", "started")}
        kid = row["runtime"].get("kernel_id")
        if kid:
            await ctx.progress(f"shutting down kernel {kid}")
            try:
                async with await self._client(row) as client:
                    await client.shutdown(kid)
            except Unavailable as e:
                # Nothing more can be done from here; say so rather than stay "running".
                return Outcome(State.stopped, provider_state=NO_KERNEL, runtime=rt, errors=[{
                    "message": f"{e.message}; kernel {kid} could not be shut down and may still run there",
                    "code": UNREACHABLE.replace(" ", "_"), "at": utcnow().isoformat()}])
        return Outcome(State.stopped, provider_state=NO_KERNEL, runtime=rt)

    async def restart(self, target: Target, ctx: OperationContext) -> Outcome:
        row = await self.store.get_target(self.workspace_id, target.name)
        rt = dict(row["runtime"])
        await self._end_kernels(row, f"the target '{target.name}' was restarted")
        async with await self._client(row) as client:
            await read_kernelspecs(client, rt)
            kid = rt.get("kernel_id")
            if kid:
                await ctx.progress(f"restarting kernel {kid}")
                if await client.restart(kid) is not None:
                    rt["started"] = utcnow().isoformat()
                    return Outcome(State.running, runtime=rt)
            return await self._start_kernel(client, row, rt, ctx)

    # -- kernels for notebooks ---------------------------------------------------------------------
    def kernel_specs(self, row: dict) -> list[KernelSpecInfo]:
        return server_kernel_specs(row, "Jupyter server")

    def can_host_kernels(self, target: Target) -> bool:
        # The server hosts kernels whether or not the target's own kernel (for %%compute) runs;
        # whether it answers, the kernel's start finds out.
        return True

    async def kernel(self, target: Target, variant: str = "") -> TargetKernel:
        row = await self.store.get_target(self.workspace_id, target.name)
        client = await self._client(row)
        return ServerKernel(client, store=self.store, workspace=self.workspace_id, target=target.name,
                            kernel_name=variant or row["spec"].get("kernel_name") or "", where=f"'{target.name}'")

    async def end_kernel(self, record: dict) -> bool:
        remote = (record.get("runtime") or {}).get("remote_kernel")
        row = await self.store.get_target(self.workspace_id, record["target"])
        if not remote or row is None:
            return False
        async with await self._client(row) as client:
            return await client.shutdown(remote)

    async def _end_kernels(self, row: dict, reason: str) -> None:
        """End the notebooks' kernels on this target there, saying why to whoever holds them."""
        kernels = await self.store.list_kernels(self.workspace_id, row["name"])
        if not kernels:
            return
        async with await self._client(row) as client:
            for k in kernels:
                await self.store.update_kernel(k["id"], reason=reason)
                remote = (k.get("runtime") or {}).get("remote_kernel")
                if remote:
                    with contextlib.suppress(ComputeError):
                        await client.shutdown(remote)

    async def detach(self, target: Target, ctx: OperationContext) -> None:
        row = await self.store.get_target(self.workspace_id, target.name)
        kid = row["runtime"].get("kernel_id") if row else None
        if kid:
            # The kernel was started by us; the server itself is left alone.
            await ctx.progress(f"shutting down kernel {kid}")
            try:
                async with await self._client(row, timeout=10) as client:
                    await client.shutdown(kid)
            except ComputeError as e:
                await ctx.progress(f"could not shut down kernel {kid} ({e.message}); forgetting it anyway")
        await self._forget_secrets(target.name)

    # -- a server that went away, a kernel that was lost -------------------------------------------
    async def _replace_kernel(self, name: str, old: str) -> tuple[str, str]:
        row = await self.store.get_target(self.workspace_id, name)
        if row is None:
            raise Conflict(f"'{name}' was detached", reason="not_running")
        url = row["spec"]["url"]
        current = row["runtime"].get("kernel_id")
        async with await self._client(row) as client:
            if current and current != old and await client.kernel(current) is not None:
                return current, (f"the kernel on '{name}' had been replaced by another process; "
                                 "variables from earlier cells are lost")
            if row["state"] not in (State.running.value, State.unknown.value):
                raise Conflict(f"'{name}' is {row['state']}; start it first", reason="not_running")
            outcome = await self._start_kernel(client, row, dict(row["runtime"]), None)
            new = outcome.runtime["kernel_id"]
            swapped = await self.store.update_target(
                self.workspace_id, name, expect_runtime={"kernel_id": current}, state=State.running.value,
                provider_state=None, runtime=outcome.runtime, errors=[])
            if not swapped:  # another process replaced it first: use theirs
                with contextlib.suppress(ComputeError):
                    await client.shutdown(new)
                row = await self.store.get_target(self.workspace_id, name)
                return row["runtime"].get("kernel_id") or new, (
                    f"the kernel on '{name}' was lost and replaced; variables from earlier cells are lost")
        self._checked[name] = time.monotonic()
        return new, (f"the kernel on '{name}' was gone from {url} (the server restarted, or the kernel was shut "
                     f"down), so a new kernel was started: variables from earlier cells are lost")

    async def _record_lost(self, name: str, kernel_id: str, message: str, reachable: bool) -> None:
        if reachable:
            return  # a restarted kernel is still running: the cell that saw it said so
        await self.store.update_target(
            self.workspace_id, name, expect_state=State.running.value, expect_runtime={"kernel_id": kernel_id},
            state=State.unknown.value, provider_state=UNREACHABLE,
            errors=[{"message": message, "code": "server_unreachable", "at": utcnow().isoformat()}])
        self._checked[name] = time.monotonic()

    async def _health(self, row: dict, wait: float) -> dict | None:
        """Check one target's server and kernel (once at a time), waiting at most ``wait`` s."""
        name = row["name"]
        task = self._checks.get(name)
        if task is None or task.done():
            task = self._checks[name] = asyncio.ensure_future(self._check(row))
            task.add_done_callback(_log_failure)
        done, _ = await asyncio.wait({task}, timeout=wait)
        if task in done and not task.cancelled() and task.exception() is None:
            return task.result()
        return None

    async def _check(self, row: dict) -> dict | None:
        """Bring one target's stored state in line with its server; returns the row as now stored."""
        name = row["name"]
        self._checked[name] = time.monotonic()
        kid = row["runtime"].get("kernel_id")
        at = utcnow().isoformat()
        update: dict[str, Any]
        if row["state"] == State.creating.value:
            update = {"state": State.failed.value, "provider_state": None, "errors": [{
                "message": "the attach ended before it finished; detach this target and attach it again",
                "code": "interrupted", "at": at}]}
            await self.store.update_target(self.workspace_id, name, expect_state=row["state"], **update)
            return await self.store.get_target(self.workspace_id, name)
        try:
            async with await self._client(row, timeout=HEALTH_TIMEOUT) as client:
                if kid:
                    gone = await client.kernel(kid) is None
                else:
                    await client.status()
                    gone = False
        except CredentialsRefused as e:
            update = {"state": State.failed.value, "provider_state": REFUSED,
                      "errors": [{"message": f"{e.message}; give new ones with 'jupyter compute update {name} "
                                             "--token-stdin'", "code": "credentials_refused", "at": at}]}
        except (Unavailable, BackendRefused) as e:
            update = {"state": State.unknown.value, "provider_state": UNREACHABLE,
                      "errors": [{"message": e.message, "code": "server_unreachable", "at": at}]}
        else:
            if not kid or (gone and State(row["state"]).transitional):
                update = {"state": State.stopped.value, "provider_state": NO_KERNEL, "errors": []}
            elif gone:
                update = {"state": State.running.value, "provider_state": KERNEL_LOST, "errors": [{
                    "message": f"kernel {kid} is gone from the server (it restarted, or the kernel was shut down); "
                               "the next cell starts a new kernel, without the variables of earlier cells",
                    "code": "kernel_lost", "at": at}]}
            else:
                update = {"state": State.running.value, "provider_state": None, "errors": []}
        if (row["state"], row.get("provider_state")) == (update["state"], update["provider_state"]):
            return row
        await self.store.update_target(self.workspace_id, name, expect_state=row["state"],
                                       expect_runtime={"kernel_id": kid}, **update)
        return await self.store.get_target(self.workspace_id, name)

    async def reconcile(self) -> None:
        rows = [r for r in await self.store.find_targets(kind=KIND) if r["workspace"] == self.workspace_id]
        now = time.monotonic()
        busy: set[str] | None = None
        due = []
        for row in rows:
            state = State(row["state"])
            if state.transitional:
                if busy is None:
                    busy = {op["target"] for op in await self.store.running_operations(self.workspace_id)}
                if row["name"] not in busy:
                    # The operation that was changing it ended with its process: look again.
                    due.append(row)
                continue
            refused = row.get("provider_state") == REFUSED
            if not (refused or state in (State.running, State.unknown)):
                continue
            if now - self._checked.get(row["name"], 0.0) >= (REFUSED_INTERVAL if refused else HEALTH_INTERVAL):
                due.append(row)
        if due:
            await asyncio.gather(*(self._health(r, RECONCILE_WAIT) for r in due))

    async def close(self) -> None:
        checks, self._checks = list(self._checks.values()), {}
        for t in checks:
            t.cancel()
        await asyncio.gather(*checks, return_exceptions=True)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("checking a Jupyter server target failed", exc_info=task.exception())


async def _check_kernelspec(client: JupyterClient, kernel_name: str) -> None:
    specs = await client.kernelspecs()
    names = sorted((specs.get("kernelspecs") or {}).keys())
    if kernel_name not in names:
        raise InvalidRequest(f"kernel_name: the server at {client.url} has no kernelspec '{kernel_name}'; "
                             f"it has: {', '.join(names) or 'none'}", field="/kernel_name")
