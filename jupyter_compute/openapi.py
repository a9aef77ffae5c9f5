"""The OpenAPI 3 document of the REST API, built from the same pydantic models the handlers serialise."""
from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from ._version import __version__
from .core.models import KindInfo, Node, Operation, Size, Target, Usage, WorkspaceInfo

REF = "#/components/schemas/{model}"
BASE = "/jupyter-compute"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": "Invalid input; `field` points at the field at fault",
    "403": "Not authorised",
    "404": "Unknown workspace, target or operation",
    "409": "Name taken, an operation already running on the target, or an explicit confirmation needed",
    "502": "The backend refused, with its message; reason `azure_auth` with `details.sign_in` "
           "`device_code` when Azure could not be signed in to (see /workspaces/{ws}/sign-in)",
    "503": "A backend is unreachable",
}


def _errors(*codes: str) -> dict:
    return {c: _json(_ref("Error"), ERRORS[c]) for c in codes}


def _param(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}}


WS = _param("ws", "Workspace id (`local`, or an Azure ML workspace alias)")
NAME = _param("name", "Target name")
JOB_NAME = _param("job", "Job name")
#: A job as the job list and the job view give it.
JOB = {"type": "object", "required": ["name", "status"], "properties": {
    "name": {"type": "string"}, "display_name": {"type": ["string", "null"]},
    "status": {"type": "string", "description": "Azure's: Queued, Running, Completed, Failed, CancelRequested, "
                                                "Canceled…"},
    "compute": {"type": ["string", "null"]}, "experiment": {"type": ["string", "null"]},
    "created": {"type": ["string", "null"]}, "started": {"type": ["string", "null"]},
    "ended": {"type": ["string", "null"]}, "duration_seconds": {"type": ["number", "null"]},
    "age_seconds": {"type": ["number", "null"]}, "created_by": {"type": ["string", "null"]},
    "studio_url": {"type": ["string", "null"]}, "environment": {"type": ["string", "null"]},
    "nodes": {"type": "integer"}, "log": {"type": ["string", "null"]},
    "log_error": {"type": ["string", "null"], "description": "Why the log could not be read"},
    "note": {"type": "string", "description": "What a cancel did"}}}
OP_ACCEPTED = {"202": _json({"type": "object", "required": ["operation"],
                             "properties": {"operation": _ref("Operation")}}, "The operation was started")}


CONFIRM = {"name": "confirm", "in": "query", "required": False, "schema": {"type": "boolean"},
           "description": "The explicit go-ahead for stopping, restarting or deleting the compute instance this "
                          "server runs on; without it that is a 409 with reason `confirmation_required` whose "
                          "`details.consequence` says what would happen"}


def _workspaces() -> dict:
    out = _list("workspaces", "WorkspaceInfo")
    out["properties"]["this_instance"] = {
        "type": ["object", "null"], "description": "The Azure ML compute instance this server runs on (null "
        "elsewhere): name, workspace id, location, url, how it signed in, and what it was recognised from. Its "
        "target carries properties.this_instance and properties.idle_shutdown."}
    return out


def _list(key: str, item: str) -> dict:
    return {"type": "object", "required": [key], "properties": {key: {"type": "array", "items": _ref(item)}}}


def document(compute=None) -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "serialization") for m in (Target, Operation, Node, Size, Usage, WorkspaceInfo, KindInfo)],
        ref_template=REF)
    schemas = defs.get("$defs", {})
    schemas["Error"] = {
        "type": "object", "required": ["message", "reason"],
        "properties": {"message": {"type": "string"}, "reason": {"type": "string"},
                       "field": {"type": ["string", "null"], "description": "JSON pointer into the request body"},
                       "details": {"type": "object", "description": "Structured facts to act on, e.g. an unknown "
                                                                    "host key's fingerprint"}},
    }
    schemas["WorkspaceRequest"] = {
        "type": "object", "required": ["subscription_id", "resource_group", "workspace_name"],
        "additionalProperties": False,
        "properties": {"subscription_id": {"type": "string", "format": "uuid"}, "resource_group": {"type": "string"},
                       "workspace_name": {"type": "string"},
                       "alias": {"type": "string", "description": "Id to address it by; default its name"},
                       "location": {"type": "string"}},
    }
    schemas["TargetRequest"] = {
        "type": "object", "required": ["name", "kind"],
        "description": "Create (managed kinds) or attach (attached kinds). Spec fields are flat beside name "
                       "and kind; GET .../kinds gives each kind's JSON Schema.",
        "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                       "force": {"type": "boolean", "description": "Attach even if the resource is already attached"}},
        "additionalProperties": True,
    }
    schemas["SSHKeyList"] = {
        "type": "object", "required": ["directory", "keys"],
        "properties": {"directory": {"type": "string"}, "keys": {"type": "array", "items": {
            "type": "object", "required": ["path", "name", "mode", "readable_by_others", "usable", "problem"],
            "properties": {
                "path": {"type": "string"}, "name": {"type": "string"},
                "mode": {"type": "string", "description": "Permission bits in octal, e.g. 0600"},
                "readable_by_others": {"type": "boolean"},
                "usable": {"type": "boolean", "description": "False when the ssh kind would refuse the file"},
                "problem": {"type": ["string", "null"], "description": "Why it would be refused"}}}}},
    }
    schemas["PythonList"] = {
        "type": "object", "required": ["pythons"],
        "properties": {"pythons": {"type": "array", "items": {
            "type": "object", "required": ["path", "label", "source"],
            "properties": {
                "path": {"type": "string", "description": "The interpreter, as a local kernel's python field takes it"},
                "label": {"type": "string"},
                "source": {"type": "string", "enum": ["this", "conda", "venv", "kernelspec"]}}}}},
    }
    schemas["KernelspecNews"] = {
        "type": "object", "required": ["seconds_since_change"],
        "properties": {"seconds_since_change": {
            "type": "number", "minimum": 0,
            "description": "Seconds since this server last announced a change of a target or of the kernelspecs "
                           "(or since it started): a page opened earlier may have missed it"}}}
    schemas["SignIn"] = {
        "type": "object", "required": ["workspace", "state"],
        "description": "A device-code sign-in to an Azure ML workspace; the token it gets stays in the server",
        "properties": {
            "workspace": {"type": "string"},
            "state": {"type": "string", "enum": ["pending", "signed_in", "failed", "expired", "cancelled"]},
            "verification_uri": {"type": ["string", "null"], "description": "The page to open"},
            "user_code": {"type": ["string", "null"], "description": "The code to enter there"},
            "message": {"type": ["string", "null"], "description": "Both, said as Azure AD says them"},
            "expires_on": {"type": ["string", "null"], "format": "date-time", "description": "When the code expires"},
            "account": {"type": ["string", "null"], "description": "Who signed in, once signed in"},
            "error": {"type": ["string", "null"], "description": "Why it failed, expired or ended (Azure's words)"}},
    }
    all_err = ("400", "403", "404", "409", "502", "503")
    read_err = ("403", "404", "502", "503")
    paths = {
        f"{BASE}/workspaces": {
            "get": {"operationId": "listWorkspaces", "summary": "Workspaces: local, plus each Azure ML workspace",
                    "responses": {"200": _json(_workspaces(), "Workspaces"), **_errors("403")}},
            "post": {"operationId": "addWorkspace", "summary": "Add an Azure ML workspace",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("WorkspaceRequest")}}},
                     "responses": {"201": _json(_ref("WorkspaceInfo"), "The added workspace"),
                                   **_errors("400", "403", "409")}}},
        f"{BASE}/workspaces/{{ws}}": {"delete": {
            "operationId": "removeWorkspace", "summary": "Forget an added Azure ML workspace (nothing in Azure changes)",
            "parameters": [WS], "responses": {"204": {"description": "Removed"}, **_errors("400", "403", "404")}}},
        f"{BASE}/workspaces/{{ws}}/kinds": {"get": {
            "operationId": "listKinds", "summary": "Kinds of compute, with operations and spec JSON Schemas",
            "parameters": [WS],
            "responses": {"200": _json(_list("kinds", "KindInfo"), "Kinds"), **_errors("403", "404")}}},
        f"{BASE}/workspaces/{{ws}}/targets": {
            "get": {"operationId": "listTargets", "summary": "Compute targets with live state", "parameters": [WS],
                    "responses": {"200": _json(_list("targets", "Target"), "Targets"), **_errors(*read_err)}},
            "post": {"operationId": "createTarget", "summary": "Create or attach a target", "parameters": [WS],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("TargetRequest")}}},
                     "responses": {**OP_ACCEPTED, **_errors(*all_err)}}},
        f"{BASE}/workspaces/{{ws}}/targets/{{name}}": {
            "get": {"operationId": "getTarget", "summary": "One target", "parameters": [WS, NAME],
                    "responses": {"200": _json(_ref("Target"), "The target"), **_errors(*read_err)}},
            "patch": {"operationId": "updateTarget", "summary": "Change some fields of a target",
                      "parameters": [WS, NAME],
                      "requestBody": {"required": True, "content": {"application/json": {"schema": {
                          "type": "object", "minProperties": 1, "additionalProperties": True}}}},
                      "responses": {"200": _json(_ref("Target"), "The updated target"), **_errors(*all_err)}},
            "delete": {"operationId": "deleteTarget", "summary": "Delete a managed target; detach an attached one",
                       "parameters": [WS, NAME, CONFIRM], "responses": {**OP_ACCEPTED, **_errors(*all_err)}}},
        f"{BASE}/workspaces/{{ws}}/targets/{{name}}/rename": {"post": {
            "operationId": "renameTarget",
            "summary": "Give a stopped target another name (its kernel follows); not for Azure ML computes",
            "parameters": [WS, NAME],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {"name": {"type": "string", "description": "The new name"}}}}}},
            "responses": {"200": _json(_ref("Target"), "The renamed target"), **_errors(*all_err)}}},
        f"{BASE}/workspaces/{{ws}}/targets/{{name}}/nodes": {"get": {
            "operationId": "listNodes", "summary": "Nodes of a target", "parameters": [WS, NAME],
            "responses": {"200": _json(_list("nodes", "Node"), "Nodes"), **_errors(*read_err)}}},
        f"{BASE}/workspaces/{{ws}}/jobs": {"get": {
            "operationId": "listJobs", "summary": "Recent jobs (cells sent to Azure ML compute clusters), newest first",
            "parameters": [WS, {"name": "target", "in": "query", "required": False, "schema": {"type": "string"},
                                "description": "Only the jobs of this target"},
                           {"name": "top", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20},
                            "description": "How many jobs"}],
            "responses": {"200": _json({"type": "object", "required": ["jobs"], "properties": {
                "jobs": {"type": "array", "items": JOB}}}, "Jobs"), **_errors("400", *read_err)}}},
        f"{BASE}/workspaces/{{ws}}/jobs/{{job}}": {"get": {
            "operationId": "getJob", "summary": "One job: status, Studio link and the end of its log",
            "parameters": [WS, JOB_NAME, {"name": "lines", "in": "query", "required": False,
                                          "schema": {"type": "integer", "minimum": 0, "maximum": 10000,
                                                     "default": 200}, "description": "Log lines"}],
            "responses": {"200": _json(JOB, "The job"), **_errors("400", *read_err)}}},
        f"{BASE}/workspaces/{{ws}}/jobs/{{job}}/cancel": {"post": {
            "operationId": "cancelJob", "summary": "Ask Azure to cancel a job; one that has already ended is left "
                                                   "as it is (`note` says so)",
            "parameters": [WS, JOB_NAME],
            "responses": {"202": _json(JOB, "The job as it is once the cancel was asked for"),
                          **_errors("400", *read_err)}}},
        f"{BASE}/workspaces/{{ws}}/sizes": {"get": {
            "operationId": "listSizes", "summary": "Sizes targets can have", "parameters": [WS],
            "responses": {"200": _json(_list("sizes", "Size"), "Sizes"), **_errors(*read_err)}}},
        f"{BASE}/workspaces/{{ws}}/usage": {"get": {
            "operationId": "listUsage", "summary": "Quota use against limits", "parameters": [WS],
            "responses": {"200": _json(_list("usage", "Usage"), "Usage"), **_errors(*read_err)}}},
        f"{BASE}/workspaces/{{ws}}/sign-in": {
            "post": {"operationId": "startSignIn", "parameters": [WS],
                     "summary": "Begin a device-code sign-in to an Azure ML workspace (or give the one still pending); "
                                "answers once Azure AD gave the code",
                     "responses": {"202": _json(_ref("SignIn"), "The URL and code to sign in with"),
                                   **_errors("400", "403", "404", "502", "503")}},
            "get": {"operationId": "getSignIn", "summary": "How the workspace's device-code sign-in is going",
                    "parameters": [WS],
                    "responses": {"200": _json(_ref("SignIn"), "The sign-in"), **_errors("400", "403", "404")}},
            "delete": {"operationId": "cancelSignIn", "summary": "Cancel a pending device-code sign-in",
                       "parameters": [WS],
                       "responses": {"200": _json(_ref("SignIn"), "The sign-in"), **_errors("400", "403", "404")}}},
        f"{BASE}/operations/{{id}}": {"get": {
            "operationId": "getOperation", "summary": "A long operation's status and progress",
            "parameters": [_param("id", "Operation id")],
            "responses": {"200": _json(_ref("Operation"), "The operation"), **_errors("403", "404")}}},
        f"{BASE}/openapi.json": {"get": {
            "operationId": "getOpenAPI", "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document"), **_errors("403")}}},
        f"{BASE}/ssh-keys": {"get": {
            "operationId": "listSshKeys",
            "summary": "Private key files in the server user's ~/.ssh, to pick one for an ssh target: paths and "
                       "permissions only, never a key's contents",
            "responses": {"200": _json(_ref("SSHKeyList"), "Candidate key files"), **_errors("403")}}},
        f"{BASE}/pythons": {"get": {
            "operationId": "listPythons",
            "summary": "Python environments on the server's machine a local kernel can run in: conda environments, "
                       "virtual environments in the usual places and the interpreters of installed kernelspecs",
            "responses": {"200": _json(_ref("PythonList"), "Interpreters, this server's first"), **_errors("403")}}},
        f"{BASE}/kernelspecs/news": {"get": {
            "operationId": "getKernelspecNews",
            "summary": "How long ago the kernelspecs of targets last changed, so that a page can tell whether "
                       "JupyterLab's first read of them was already up to date",
            "responses": {"200": _json(_ref("KernelspecNews"), "The age of the last change"), **_errors("403")}}},
    }
    for action in ("start", "stop", "restart"):
        paths[f"{BASE}/workspaces/{{ws}}/targets/{{name}}/{action}"] = {"post": {
            "operationId": f"{action}Target", "summary": f"{action.capitalize()} a target", "parameters": [WS, NAME],
            **({} if action == "start" else {"requestBody": {"required": False, "content": {"application/json": {
                "schema": {"type": "object", "additionalProperties": False, "properties": {"confirm": {
                    "type": "boolean", "description": CONFIRM["description"]}}}}}}}),
            "responses": {**OP_ACCEPTED, **_errors(*all_err)}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "jupyter_compute", "version": __version__,
                 "description": "Compute targets for Jupyter. Authenticate as for Jupyter's own API: "
                                "`Authorization: token <token>`, or the session cookie plus `X-XSRFToken`."},
        "components": {"schemas": schemas,
                       "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "Authorization"}}},
        "security": [{"token": []}],
        "paths": paths,
    }
