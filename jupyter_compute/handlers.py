"""Thin REST handlers over ``Workspace``: parse, call, serialise. Errors are mapped in one place."""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
import pydantic_core
from tornado import web

from .core.errors import ComputeError, InvalidRequest
from .core.models import targets_json
from .core.workspace import Compute

log = logging.getLogger(__name__)

PREFIX = "jupyter-compute"
NAME = r"(?P<name>[^/]+)"
WS = r"(?P<ws>[^/]+)"


def dump(obj: Any) -> bytes:
    """JSON of a response; pydantic serialises nested models in one pass (fast for 1,000 targets)."""
    return pydantic_core.to_json(obj)


class ComputeHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = "compute"

    @property
    def compute(self) -> Compute:
        return self.settings["jupyter_compute"]

    def reply(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(dump(body))

    def body(self) -> dict[str, Any]:
        raw = self.request.body
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidRequest(f"the request body is not valid JSON: {e}", reason="bad_json") from None
        if not isinstance(data, dict):
            raise InvalidRequest("the request body must be a JSON object", reason="bad_json")
        return data

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error is JSON with a message a person can act on; never a traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ComputeError):
            status_code, body = exc.status, exc.to_json()
        elif isinstance(exc, web.HTTPError):
            body = {"message": exc.log_message or self._reason, "reason": exc.reason or "http_error", "field": None}
            if exc.args and exc.log_message:
                try:
                    body["message"] = exc.log_message % exc.args
                except TypeError:
                    pass
        else:
            body = {"message": "the server failed to handle this request; see the server log",
                    "reason": "internal_error", "field": None}
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, ComputeError):
            log.info("%s %s -> %s: %s", self.request.method, self.request.path, value.status, value.message)
        else:
            super().log_exception(typ, value, tb)

    async def ws(self, ws: str):
        return await self.compute.resolve(ws)

    def confirmed(self, body: dict[str, Any] | None = None) -> bool:
        """The explicit go-ahead for an action with a consequence (``"confirm": true``, or ``?confirm=true``)."""
        value: Any = (body or {}).get("confirm", self.get_query_argument("confirm", None))
        if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
            value = value.lower() in ("true", "1")
        if value is not None and not isinstance(value, bool):
            raise InvalidRequest("confirm must be true or false", field="/confirm")
        return bool(value)


class WorkspacesHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def get(self):
        await self.compute.refresh_workspaces()
        self.reply({"workspaces": self.compute.workspaces(), "this_instance": self.compute.this_instance_info()})

    @web.authenticated
    @authorized
    async def post(self):
        self.reply(await self.compute.add_workspace(**self.body()), 201)


class WorkspaceHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def delete(self, ws):
        await self.compute.remove_workspace(ws)
        self.set_status(204)
        self.finish()


class KindsHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def get(self, ws):
        self.reply({"kinds": (await self.ws(ws)).kinds()})


class TargetsHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def get(self, ws):
        self.set_header("Content-Type", "application/json")
        self.finish(targets_json(await (await self.ws(ws)).list()))

    @web.authenticated
    @authorized
    async def post(self, ws):
        workspace = await self.ws(ws)
        body = self.body()
        name, kind = body.pop("name", None), body.pop("kind", None)
        force = body.pop("force", False)
        if not isinstance(force, bool):
            raise InvalidRequest("force must be true or false", field="/force")
        if kind is None:
            raise InvalidRequest("kind is required", field="/kind")
        if workspace.kind_spec(kind).managed:
            if force:
                raise InvalidRequest("force applies only to attach", field="/force")
            op = await workspace.create(name, kind, body)
        else:
            op = await workspace.attach(name, kind, body, force=force)
        self.reply({"operation": op}, 202)


class TargetHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def get(self, ws, name):
        self.reply(await (await self.ws(ws)).get(name))

    @web.authenticated
    @authorized
    async def patch(self, ws, name):
        self.reply(await (await self.ws(ws)).update(name, self.body()))

    @web.authenticated
    @authorized
    async def delete(self, ws, name):
        self.reply({"operation": await (await self.ws(ws)).delete(name, confirm=self.confirmed())}, 202)


class RenameHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def post(self, ws, name):
        body = self.body()
        unknown = set(body) - {"name"}
        if unknown:
            field = sorted(unknown)[0]
            raise InvalidRequest(f"{field}: is not a field of a rename request", field=f"/{field}")
        self.reply(await (await self.ws(ws)).rename(name, body.get("name")))


class ActionHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def post(self, ws, name, action):
        workspace = await self.ws(ws)
        body = self.body()
        unknown = set(body) - {"confirm"}
        if unknown:
            field = sorted(unknown)[0]
            raise InvalidRequest(f"{field}: is not a field of a {action} request", field=f"/{field}")
        kw = {"confirm": self.confirmed(body)} if action != "start" else {}
        op = await getattr(workspace, action)(name, **kw)
        self.reply({"operation": op}, 202)


class NodesHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def get(self, ws, name):
        self.reply({"nodes": await (await self.ws(ws)).nodes(name)})


class JobsHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def get(self, ws):
        target = self.get_query_argument("target", None) or None
        top = self.get_query_argument("top", "20")
        if not top.isdigit() or not 1 <= int(top) <= 1000:
            raise InvalidRequest("top: give a number of jobs from 1 to 1000", field="/top")
        self.reply({"jobs": await (await self.ws(ws)).jobs(target, top=int(top))})


class JobHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def get(self, ws, job):
        lines = self.get_query_argument("lines", "200")
        if not lines.isdigit():
            raise InvalidRequest("lines: give a number of log lines from 0 to 10000", field="/lines")
        self.reply(await (await self.ws(ws)).job(job, log_lines=int(lines)))


class JobCancelHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def post(self, ws, job):
        # Azure is asked to cancel; the job's end shows in the job list (GET the job to follow it).
        self.reply(await (await self.ws(ws)).cancel_job(job, wait=False), 202)


class SizesHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def get(self, ws):
        self.reply({"sizes": await (await self.ws(ws)).sizes()})


class UsageHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def get(self, ws):
        self.reply({"usage": await (await self.ws(ws)).usage()})


class SignInHandler(ComputeHandler):
    """Device-code sign-in to a workspace that has one (Azure ML); tokens stay in the server."""

    async def sign_ins(self, ws: str):
        workspace = await self.ws(ws)
        return self.compute.sign_ins(workspace), workspace

    @web.authenticated
    @authorized
    async def post(self, ws):
        sign_ins, workspace = await self.sign_ins(ws)
        self.reply(await sign_ins.start(workspace), 202)

    @web.authenticated
    @authorized
    async def get(self, ws):
        sign_ins, workspace = await self.sign_ins(ws)
        self.reply(sign_ins.state(workspace))

    @web.authenticated
    @authorized
    async def delete(self, ws):
        sign_ins, workspace = await self.sign_ins(ws)
        self.reply(sign_ins.cancel(workspace))


class OperationHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def get(self, op_id):
        self.reply(await self.compute.operation(op_id))


class OpenAPIHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def get(self):
        from .openapi import document
        self.reply(document(self.compute))


class SSHKeysHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def get(self):
        choices = await self.compute.workspace("local").field_choices("ssh", "ssh_private_key")
        self.reply(choices)


class PythonsHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.reply(await self.compute.workspace("local").field_choices("local-kernel", "python"))


class KernelspecNewsHandler(ComputeHandler):
    @web.authenticated
    @authorized
    async def get(self):
        # A page that opened after this could not have missed the change's event: its own first
        # read of the kernelspecs came later.
        self.reply({"seconds_since_change": round(time.monotonic() - self.compute.kernelspec_news_at, 3)})


def _p(path: str) -> str:
    return rf"/{PREFIX}{path}"


HANDLERS = [
    (_p("/workspaces"), WorkspacesHandler),
    (_p(f"/workspaces/{WS}"), WorkspaceHandler),
    (_p(f"/workspaces/{WS}/kinds"), KindsHandler),
    (_p(f"/workspaces/{WS}/targets"), TargetsHandler),
    (_p(f"/workspaces/{WS}/targets/{NAME}"), TargetHandler),
    (_p(f"/workspaces/{WS}/targets/{NAME}/(?P<action>start|stop|restart)"), ActionHandler),
    (_p(f"/workspaces/{WS}/targets/{NAME}/rename"), RenameHandler),
    (_p(f"/workspaces/{WS}/targets/{NAME}/nodes"), NodesHandler),
    (_p(f"/workspaces/{WS}/jobs"), JobsHandler),
    (_p(f"/workspaces/{WS}/jobs/(?P<job>[^/]+)"), JobHandler),
    (_p(f"/workspaces/{WS}/jobs/(?P<job>[^/]+)/cancel"), JobCancelHandler),
    (_p(f"/workspaces/{WS}/sizes"), SizesHandler),
    (_p(f"/workspaces/{WS}/usage"), UsageHandler),
    (_p(f"/workspaces/{WS}/sign-in"), SignInHandler),
    (_p(r"/operations/(?P<op_id>[^/]+)"), OperationHandler),
    (_p("/openapi.json"), OpenAPIHandler),
    (_p("/ssh-keys"), SSHKeysHandler),
    (_p("/pythons"), PythonsHandler),
    (_p("/kernelspecs/news"), KernelspecNewsHandler),
]
