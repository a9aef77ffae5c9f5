"""Thin REST handlers over ``Workspace``: parse, call, serialise. Errors are mapped in one place."""
from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
import pydantic_core
from tornado import web

from .errors import ComputeError, InvalidRequest
from .workspace import Compute

log = logging.getLogger("jupyter_compute")

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
        body = self.body()
        unknown = set(body) - {"subscription_id", "resource_group", "workspace_name", "alias", "location"}
        if unknown:
            field = sorted(unknown)[0]
            raise InvalidRequest(f"{field}: is not a field of a workspace", field=f"/{field}")
        # A missing required field reaches add_workspace as None, which refuses it naming the field.
        required = {k: body.pop(k, None) for k in ("subscription_id", "resource_group", "workspace_name")}
        self.reply(await self.compute.add_workspace(**required, **body), 201)


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
        self.reply({"targets": await (await self.ws(ws)).list()})

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
    """Device-code sign-in to an Azure ML workspace (azure/signin.py); tokens stay in the server."""

    @web.authenticated
    @authorized
    async def post(self, ws):
        self.reply(await self.compute.sign_ins.start(await self.ws(ws)), 202)

    @web.authenticated
    @authorized
    async def get(self, ws):
        self.reply(self.compute.sign_ins.state(await self.ws(ws)))

    @web.authenticated
    @authorized
    async def delete(self, ws):
        self.reply(self.compute.sign_ins.cancel(await self.ws(ws)))


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
        directory = os.path.expanduser("~/.ssh")
        from .backends.ssh import key_candidates
        self.reply({"directory": directory, "keys": await asyncio.to_thread(key_candidates, directory)})


def _p(path: str) -> str:
    return rf"/{PREFIX}{path}"


HANDLERS = [
    (_p("/workspaces"), WorkspacesHandler),
    (_p(f"/workspaces/{WS}"), WorkspaceHandler),
    (_p(f"/workspaces/{WS}/kinds"), KindsHandler),
    (_p(f"/workspaces/{WS}/targets"), TargetsHandler),
    (_p(f"/workspaces/{WS}/targets/{NAME}"), TargetHandler),
    (_p(f"/workspaces/{WS}/targets/{NAME}/(?P<action>start|stop|restart)"), ActionHandler),
    (_p(f"/workspaces/{WS}/targets/{NAME}/nodes"), NodesHandler),
    (_p(f"/workspaces/{WS}/sizes"), SizesHandler),
    (_p(f"/workspaces/{WS}/usage"), UsageHandler),
    (_p(f"/workspaces/{WS}/sign-in"), SignInHandler),
    (_p(r"/operations/(?P<op_id>[^/]+)"), OperationHandler),
    (_p("/openapi.json"), OpenAPIHandler),
    (_p("/ssh-keys"), SSHKeysHandler),
]
