"""The Resource Manager stand-in, grown the parts of Azure ML that run jobs: command jobs (PUT,
GET, list, cancel), code containers and versions, environment containers and versions,
datastores with their secrets, and the workspace's run history (through its discovery URL) for
a failed job's error. Storage is Azurite, so a job's user log and outputs are real blobs.

A job moves through its statuses in one of two ways:

* ``auto_run`` (the default): like a compute node, the stand-in downloads the job's code asset
  and inputs from Azurite, runs its command once per node (``bash -c``, the venv's ``python``
  first on PATH, PyTorch's RANK/WORLD_SIZE/... set), appends what it prints to the user log in
  the artifact store as it goes, and uploads its outputs; a non-zero exit makes it Failed with
  the error Azure would record.
* driven by the test: ``set_status`` and ``feed_log`` (with ``auto_run`` off).

Every job PUT body is checked against the SDK's own models (``sdk_problems``) and refused with
400 if it does not fit; ``body_problems`` keeps what was found.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

from .arm import API_VERSION, PROVIDER, TENANT_ID, ArmStandIn, _now
from .azurite import ACCOUNT, KEY, Azurite
from .https import Request, Response, arm_error

_WS = (r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
       r"Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)")
JOB_ROUTES = [
    ("jobs", re.compile(_WS + r"/jobs/?$", re.I)),
    ("job", re.compile(_WS + r"/jobs/(?P<name>[^/]+)/?$", re.I)),
    ("cancel", re.compile(_WS + r"/jobs/(?P<name>[^/]+)/cancel/?$", re.I)),
    ("code", re.compile(_WS + r"/codes/(?P<name>[^/]+)/?$", re.I)),
    ("code_version", re.compile(_WS + r"/codes/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/?$", re.I)),
    ("environments", re.compile(_WS + r"/environments/?$", re.I)),
    ("environment", re.compile(_WS + r"/environments/(?P<name>[^/]+)/?$", re.I)),
    ("env_versions", re.compile(_WS + r"/environments/(?P<name>[^/]+)/versions/?$", re.I)),
    ("env_version", re.compile(_WS + r"/environments/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/?$", re.I)),
    ("datastores", re.compile(_WS + r"/datastores/?$", re.I)),
    ("datastore", re.compile(_WS + r"/datastores/(?P<name>[^/]+)/?$", re.I)),
    ("secrets", re.compile(_WS + r"/datastores/(?P<name>[^/]+)/listSecrets/?$", re.I)),
    ("history", re.compile(r"^/history/v1\.0" + _WS[1:] + r"/runs/(?P<name>[^/]+)/details/?$", re.I)),
    ("discovery", re.compile(r"^/discovery/?$")),
    ("cancel_result", re.compile(r"^/subscriptions/[^/]+/providers/Microsoft\.MachineLearningServices/locations/"
                                 r"[^/]+/mfeOperationResults/(?P<op>[^/]+)/?$", re.I)),
]
TERMINAL = {"Completed", "Failed", "Canceled"}
CURATED = "AzureML-sklearn-1.0-ubuntu20.04-py38-cpu"
VENV_BIN = os.path.dirname(sys.executable)


# -- checking bodies against the SDK's models ----------------------------------------------------------
def sdk_problems(body: Any, type_name: str = "JobBase") -> list[str]:
    """Why ``body`` is not a valid ``type_name`` of azure-mgmt-machinelearningservices (api 2023-04-01):
    required fields left out, constraints broken, and fields the model does not know or would
    change on the way through it. Empty when it fits."""
    from azure.mgmt.machinelearningservices import models
    from azure.mgmt.machinelearningservices._serialization import Deserializer, Model

    classes = {k: v for k, v in vars(models).items() if isinstance(v, type)}
    try:
        # A copy: the deserializer takes discriminators (jobType, ...) out of what it reads.
        obj = Deserializer(classes)(type_name, copy.deepcopy(body))
    except Exception as e:  # what the SDK itself could not read
        return [f"does not deserialize as {type_name}: {e}"]
    problems: list[str] = []
    rules = {"min_length": lambda v, n: len(v) < n, "max_length": lambda v, n: len(v) > n,
             "minimum": lambda v, n: v < n, "maximum": lambda v, n: v > n,
             "pattern": lambda v, p: not re.search(p, v)}

    def walk(o: Any, path: str) -> None:
        if isinstance(o, Model):
            for attr, spec in o._attribute_map.items():
                value = getattr(o, attr, None)
                where = f"{path}.{spec['key']}" if path else spec["key"]
                check = o._validation.get(attr, {})
                if check.get("required") and value is None:
                    problems.append(f"{where} is required")
                for rule, limit in check.items():
                    if rule in rules and value is not None and rules[rule](value, limit):
                        problems.append(f"{where} breaks {rule}={limit!r}")
                walk(value, where)
        elif isinstance(o, dict):
            for k, v in o.items():
                walk(v, f"{path}.{k}")
        elif isinstance(o, list):
            for i, v in enumerate(o):
                walk(v, f"{path}[{i}]")

    walk(obj, "")
    if type_name == "JobBase" and not isinstance(obj.properties, models.CommandJob):
        problems.append(f"properties is a {type(obj.properties).__name__}, not a CommandJob")
    back = obj.serialize(keep_readonly=True)

    def compare(sent: Any, kept: Any, path: str) -> None:
        if isinstance(sent, dict) and isinstance(kept, dict):
            for k, v in sent.items():
                if k not in kept:
                    if v is not None:
                        problems.append(f"{path}.{k} is not a field of the model" if path else f"{k} is not a field")
                else:
                    compare(v, kept[k], f"{path}.{k}" if path else k)
        elif sent != kept and not (isinstance(sent, (int, float)) and sent == kept):
            problems.append(f"{path} changed from {sent!r} to {kept!r} through the model")
    compare(body, back, "")
    return problems


class JobsStandIn(ArmStandIn):
    """Resource Manager for Azure ML computes and jobs, with Azurite as the workspace's storage."""

    def __init__(self, azurite: Azurite, **kw: Any):
        super().__init__(**kw)
        self.azurite = azurite
        #: Run each job's command like a compute node; off, the test moves jobs along.
        self.auto_run = True
        #: Seconds between a job's automatic status changes.
        self.step_seconds = 0.3
        #: Seconds from a cancel request to Canceled.
        self.cancel_seconds = 0.3
        #: Longest a job's command may run before the stand-in kills it and fails the job.
        self.job_timeout = 120.0
        #: The interpreter the environment's ``python`` is (default: this venv's), e.g. one without cloudpickle.
        self.python: str | None = None
        self.jobs: dict[str, dict] = {}
        self.job_bodies: list[dict] = []
        self.body_problems: list[str] = []
        self.cancels: list[tuple[str, float]] = []
        self.codes: dict[str, dict] = {}
        self.environments: dict[str, dict] = {}
        self.history_errors: dict[str, dict] = {}
        self._procs: dict[str, list[subprocess.Popen]] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        tag = uuid.uuid4().hex[:12]
        self.blob_container = f"azureml-blobstore-{tag}"
        self.artifact_container = f"azureml-{tag}"
        self.datastores = {
            "workspaceblobstore": self._datastore("workspaceblobstore", self.blob_container, default=True),
            "workspaceartifactstore": self._datastore("workspaceartifactstore", self.artifact_container),
        }
        self.seed_environment(CURATED, ["1", "2", "3"], curated=True)
        self.seed_environment("AzureML-pytorch-1.10-ubuntu18.04-py38-cuda11-gpu", ["1"], curated=True)
        self.seed_environment("my-training-env", ["1", "2"])

    # -- setup ---------------------------------------------------------------------------------------
    def start(self) -> "JobsStandIn":
        super().start()
        svc = self.azurite.service()
        for container in (self.blob_container, self.artifact_container):
            svc.create_container(container)
        for entry in self.workspaces.values():
            entry["workspace"]["properties"]["discoveryUrl"] = f"{self.base_url}/discovery"
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self.lock:
            procs = [p for ps in self._procs.values() for p in ps]
        for p in procs:
            _kill(p)
        for t in self._threads:
            t.join(10)
        super().stop()

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.azurite.blob_env()}

    @property
    def workspace_id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/{PROVIDER}"
                f"/workspaces/{self.workspace_name}")

    def _datastore(self, name: str, container: str, default: bool = False) -> dict:
        return {"id": f"{self.workspace_id}/datastores/{name}", "name": name,
                "type": f"{PROVIDER}/workspaces/datastores",
                "properties": {"datastoreType": "AzureBlob", "accountName": ACCOUNT, "containerName": container,
                               "endpoint": "core.windows.net", "protocol": "https", "isDefault": default,
                               "credentials": {"credentialsType": "AccountKey", "secrets": None},
                               "serviceDataAccessAuthIdentity": "None", "tags": {}, "properties": {}}}

    def seed_environment(self, name: str, versions: list[str], *, curated: bool = False) -> None:
        base = f"{self.workspace_id}/environments/{name}"
        self.environments[name.lower()] = {
            "container": {"id": base, "name": name, "type": f"{PROVIDER}/workspaces/environments",
                          "properties": {"latestVersion": versions[-1], "nextVersion": str(len(versions) + 1),
                                         "isArchived": False, "description": "curated" if curated else None,
                                         "tags": {}, "properties": {}}},
            "versions": {v: {"id": f"{base}/versions/{v}", "name": v,
                             "type": f"{PROVIDER}/workspaces/environments/versions",
                             "properties": {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04",
                                            "osType": "Linux", "environmentType": "Curated" if curated else
                                            "UserCreated", "isAnonymous": False, "isArchived": False,
                                            "tags": {}, "properties": {}}} for v in versions}}

    def add_job(self, name: str, compute: str, status: str = "Queued", *, created_by: str = "Bob",
                age_seconds: float = 120) -> dict:
        """Someone else's job, e.g. one waiting in a busy cluster's queue."""
        body = {"properties": {"jobType": "Command", "command": "python train.py",
                               "computeId": f"{self.workspace_id}/computes/{compute}",
                               "environmentId": f"{self.workspace_id}/environments/{CURATED}/versions/3"}}
        with self.lock:
            res = self._new_job(name, body)
            res["properties"]["status"] = status
            created = time.time() - age_seconds
            res["systemData"]["createdAt"] = _iso(created)
            res["systemData"]["createdBy"] = created_by
            self.jobs[name.lower()] = res
        return res

    # -- what the test sees and drives ---------------------------------------------------------------
    def job(self, name: str) -> dict:
        with self.lock:
            return copy.deepcopy(self.jobs[name.lower()])

    def wait_for_job(self, *, status: str | None = None, after: int = 0, timeout: float = 60.0) -> str:
        """The name of the ``after``-th job submitted (0: the first), once it exists (and has ``status``)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                mine = [b for b in self.job_bodies]
                if len(mine) > after:
                    name = mine[after]["name"]
                    res = self.jobs.get(name.lower())
                    if res and (status is None or res["properties"]["status"] == status):
                        return name
            if time.monotonic() > deadline:
                raise AssertionError(f"no job {after} (status {status}) within {timeout:g} s")
            time.sleep(0.02)

    def set_status(self, name: str, status: str, *, error: tuple[str, str] | None = None) -> None:
        with self.lock:
            res = self.jobs[name.lower()]
            props = res["properties"]
            props["status"] = status
            extra = props.setdefault("properties", {})
            if status == "Running" and "StartTimeUtc" not in extra:
                extra["StartTimeUtc"] = _now()
            if status in TERMINAL:
                extra.setdefault("StartTimeUtc", _now())
                extra["EndTimeUtc"] = _now()
            res["systemData"]["lastModifiedAt"] = _now()
            if error is not None:
                self.history_errors[name.lower()] = {"code": error[0], "message": error[1]}

    def feed_log(self, name: str, text: str, rank: int | None = None) -> None:
        """Append to the job's user log in the artifact store, as the node's log upload does."""
        blob = f"ExperimentRun/dcid.{name}/user_logs/" + ("std_log.txt" if rank is None
                                                           else f"std_log_process_{rank}.txt")
        client = self.azurite.service().get_blob_client(self.artifact_container, blob)
        if not client.exists():
            client.create_append_blob()
        client.append_block(text.encode())

    def blob_names(self, container: str | None = None, prefix: str = "") -> list[str]:
        c = self.azurite.service().get_container_client(container or self.blob_container)
        return [b.name for b in c.list_blobs(name_starts_with=prefix)]

    def read_blob(self, path: str, container: str | None = None) -> bytes:
        c = self.azurite.service().get_container_client(container or self.blob_container)
        return c.download_blob(path).readall()

    # -- dispatch ------------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        for kind, rx in JOB_ROUTES:
            m = rx.match(req.path)
            if m:
                denied = self._authenticate(req, needs_version=kind not in ("history", "discovery"))
                if denied is not None:
                    return denied
                with self.lock:
                    return self._jobs_route(kind, m.groupdict(), req)
        return super().handle(req)

    def _authenticate(self, req: Request, *, needs_version: bool) -> Response | None:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            aud = self.audience_of(req)
            if aud is None:
                return arm_error(401, "InvalidAuthenticationToken", "The access token is invalid or missing.")
            if self.check_audience and aud.rstrip("/") != self.base_url:
                return arm_error(401, "InvalidAuthenticationTokenAudience",
                                 f"The access token has been obtained for wrong audience or resource '{aud}'.")
            for f in self.faults:
                if f.matches(req):
                    f.times -= 1
                    return self._fault(f)
            if needs_version and not req.api_version:
                return arm_error(400, "MissingApiVersionParameter",
                                 "The api-version query parameter (?api-version=) is required for all requests.")
        return None

    def _jobs_route(self, kind: str, g: dict, req: Request) -> Response:
        if kind == "discovery":
            return Response(200, {k: self.base_url for k in ("api", "catalog", "experimentation", "history",
                                                             "hyperdrive", "modelmanagement", "pipelines")})
        if kind == "cancel_result":
            return Response(200, {})
        key = (g["sub"].lower(), g["rg"].lower(), g["ws"].lower())
        if key not in self.workspaces:
            return arm_error(404, "ResourceNotFound", f"The Resource '{PROVIDER}/workspaces/{g['ws']}' was not found.")
        scope = self.workspaces[key]["workspace"]["id"]
        action = {"jobs": "jobs/read", "job": "jobs/read" if req.method == "GET" else "jobs/write",
                  "cancel": "jobs/cancel/action", "code": "codes/write", "code_version": "codes/write",
                  "environments": "environments/read", "environment": "environments/read",
                  "env_versions": "environments/read", "env_version": "environments/read",
                  "datastores": "datastores/read", "datastore": "datastores/read",
                  "secrets": "datastores/listsecrets/action", "history": "experiments/runs/read"}[kind]
        if kind in ("code", "code_version") and req.method == "GET":
            action = "codes/read"
        denied = self._denied(f"{PROVIDER}/workspaces/{action}", scope)
        if denied:
            return denied
        return getattr(self, f"_r_{kind}")(g, req)

    # -- environments, codes, datastores ---------------------------------------------------------------
    def _r_environments(self, g: dict, req: Request) -> Response:
        return Response(200, {"value": [copy.deepcopy(e["container"]) for e in self.environments.values()]})

    def _r_environment(self, g: dict, req: Request) -> Response:
        env = self.environments.get(g["name"].lower())
        if env is None:
            return self._missing("environments", g["name"])
        return Response(200, copy.deepcopy(env["container"]))

    def _r_env_versions(self, g: dict, req: Request) -> Response:
        env = self.environments.get(g["name"].lower())
        if env is None:
            return self._missing("environments", g["name"])
        return Response(200, {"value": [copy.deepcopy(v) for v in env["versions"].values()]})

    def _r_env_version(self, g: dict, req: Request) -> Response:
        env = self.environments.get(g["name"].lower())
        version = env and env["versions"].get(g["version"])
        if version is None:
            return self._missing("environments", f"{g['name']}/versions/{g['version']}")
        return Response(200, copy.deepcopy(version))

    def _r_code(self, g: dict, req: Request) -> Response:
        entry = self.codes.get(g["name"].lower())
        if req.method == "GET":
            return Response(200, copy.deepcopy(entry["container"])) if entry else self._missing("codes", g["name"])
        if req.method != "PUT":
            return arm_error(405, "MethodNotAllowed", f"{req.method} is not supported here.")
        problems = sdk_problems(req.body, "CodeContainer")
        if problems:
            return arm_error(400, "UserError", "; ".join(problems))
        container = {"id": f"{self.workspace_id}/codes/{g['name']}", "name": g["name"],
                     "type": f"{PROVIDER}/workspaces/codes", "properties": {**req.body["properties"],
                                                                            "latestVersion": None}}
        entry = self.codes.setdefault(g["name"].lower(), {"container": container, "versions": {}})
        return Response(201 if not entry["versions"] else 200, copy.deepcopy(entry["container"]))

    def _r_code_version(self, g: dict, req: Request) -> Response:
        entry = self.codes.get(g["name"].lower())
        version = entry["versions"].get(g["version"]) if entry else None
        if req.method == "GET":
            return Response(200, copy.deepcopy(version)) if version else \
                self._missing("codes", f"{g['name']}/versions/{g['version']}")
        if req.method != "PUT":
            return arm_error(405, "MethodNotAllowed", f"{req.method} is not supported here.")
        problems = sdk_problems(req.body, "CodeVersion")
        if problems:
            return arm_error(400, "UserError", "; ".join(problems))
        if entry is None:
            return arm_error(404, "UserError", f"Code container {g['name']} does not exist.")
        uri = (req.body.get("properties") or {}).get("codeUri") or ""
        if not self._blobs_at(uri):
            return arm_error(400, "UserError", f"No files were found at codeUri '{uri}'.")
        res = {"id": f"{self.workspace_id}/codes/{g['name']}/versions/{g['version']}", "name": g["version"],
               "type": f"{PROVIDER}/workspaces/codes/versions",
               "properties": {**req.body["properties"], "provisioningState": "Succeeded"}}
        entry["versions"][g["version"]] = res
        entry["container"]["properties"]["latestVersion"] = g["version"]
        return Response(201, copy.deepcopy(res))

    def _r_datastores(self, g: dict, req: Request) -> Response:
        items = list(self.datastores.values())
        if (req.query.get("isDefault") or "").lower() == "true":
            items = [d for d in items if d["properties"]["isDefault"]]
        return Response(200, {"value": copy.deepcopy(items)})

    def _r_datastore(self, g: dict, req: Request) -> Response:
        ds = self.datastores.get(g["name"])
        return Response(200, copy.deepcopy(ds)) if ds else self._missing("datastores", g["name"])

    def _r_secrets(self, g: dict, req: Request) -> Response:
        if req.method != "POST":
            return arm_error(405, "MethodNotAllowed", f"{req.method} is not supported here.")
        if g["name"] not in self.datastores:
            return self._missing("datastores", g["name"])
        return Response(200, {"secretsType": "AccountKey", "key": KEY})

    def _missing(self, what: str, name: str) -> Response:
        return arm_error(404, "UserError", f"Could not find asset with ID: {self.workspace_id}/{what}/{name}")

    # -- jobs ------------------------------------------------------------------------------------------
    def _r_jobs(self, g: dict, req: Request) -> Response:
        items = sorted(self.jobs.values(), key=lambda j: j["systemData"]["createdAt"], reverse=True)
        return Response(200, {"value": [copy.deepcopy(j) for j in items]})

    def _r_job(self, g: dict, req: Request) -> Response:
        name = g["name"]
        res = self.jobs.get(name.lower())
        if req.method == "GET":
            return Response(200, copy.deepcopy(res)) if res else self._missing("jobs", name)
        if req.method != "PUT":
            return arm_error(405, "MethodNotAllowed", f"{req.method} is not supported here.")
        body = req.body if isinstance(req.body, dict) else {}
        problems = sdk_problems(body, "JobBase")
        self.job_bodies.append({"name": name, "body": copy.deepcopy(body), "problems": problems})
        if problems:
            self.body_problems += problems
            return arm_error(400, "UserError", "; ".join(problems))
        if res is not None:
            return arm_error(409, "UserError", f"A job with name '{name}' already exists and cannot be changed.")
        refused = self._check_references(body["properties"])
        if refused:
            return refused
        res = self._new_job(name, body)
        self.jobs[name.lower()] = res
        if self.auto_run:
            t = threading.Thread(target=self._auto, args=(name,), name=f"job-{name}", daemon=True)
            self._threads.append(t)
            t.start()
        return Response(201, copy.deepcopy(res))

    def _check_references(self, props: dict) -> Response | None:
        compute = (props.get("computeId") or "").rstrip("/").rsplit("/", 1)[-1]
        if not props.get("computeId", "").lower().startswith(self.workspace_id.lower() + "/computes/") or \
                self.compute(compute) is None:
            return arm_error(400, "UserError", f"Compute '{props.get('computeId')}' was not found in the workspace.")
        env = props.get("environmentId") or ""
        m = re.match(re.escape(self.workspace_id) + r"/environments/([^/]+)/versions/([^/]+)$", env, re.I)
        if not env.startswith("azureml://") and not (m and m.group(2) in (self.environments.get(
                m.group(1).lower()) or {}).get("versions", {})):
            return arm_error(400, "UserError", f"Environment '{env}' was not found.")
        code = props.get("codeId")
        if code:
            m = re.match(re.escape(self.workspace_id) + r"/codes/([^/]+)/versions/([^/]+)$", code, re.I)
            if not (m and m.group(2) in (self.codes.get(m.group(1).lower()) or {}).get("versions", {})):
                return arm_error(400, "UserError", f"Code '{code}' was not found.")
        for name, spec in (props.get("inputs") or {}).items():
            where = _datastore_path(spec.get("uri") or "")
            if where is None or where[0] not in self.datastores:
                return arm_error(400, "UserError", f"Input '{name}' names no datastore of this workspace.")
        for placeholder in re.findall(r"\$\{\{(inputs|outputs)\.([^}]+)\}\}", props.get("command") or ""):
            if placeholder[1] not in (props.get(placeholder[0]) or {}):
                return arm_error(400, "UserError", f"The command refers to {placeholder[0]}.{placeholder[1]}, "
                                                   "which the job does not define.")
        return None

    def _new_job(self, name: str, body: dict) -> dict:
        props = copy.deepcopy(body["properties"])
        studio = (f"https://ml.azure.com/runs/{name}?wsid=/subscriptions/{self.subscription_id}/resourcegroups/"
                  f"{self.resource_group}/workspaces/{self.workspace_name}&tid={TENANT_ID}")
        props.update({
            "status": "NotStarted",
            "services": {"Studio": {"jobServiceType": "Studio", "endpoint": studio},
                         "Tracking": {"jobServiceType": "Tracking",
                                      "endpoint": f"azureml://{self.location}.api.azureml.ms/mlflow/v1.0"}},
            "outputs": {**(props.get("outputs") or {}), "default": {
                "jobOutputType": "uri_folder", "mode": "ReadWriteMount",
                "uri": f"azureml://datastores/workspaceartifactstore/ExperimentRun/dcid.{name}"}},
            "properties": {"_azureml.ComputeTargetType": "amlctrain", "ContentSnapshotId": str(uuid.uuid4()),
                           **(props.get("properties") or {})},
        })
        props.setdefault("experimentName", "Default")
        now = _now()
        return {"id": f"{self.workspace_id}/jobs/{name}", "name": name, "type": f"{PROVIDER}/workspaces/jobs",
                "systemData": {"createdAt": now, "createdBy": "Test User", "createdByType": "User",
                               "lastModifiedAt": now}, "properties": props}

    def _r_cancel(self, g: dict, req: Request) -> Response:
        if req.method != "POST":
            return arm_error(405, "MethodNotAllowed", f"{req.method} is not supported here.")
        name = g["name"]
        res = self.jobs.get(name.lower())
        if res is None:
            return self._missing("jobs", name)
        self.cancels.append((name, time.monotonic()))
        status = res["properties"]["status"]
        if status in TERMINAL:
            return Response(200, None)  # what Azure answers: nothing to do
        self.set_status(name, "CancelRequested")
        for p in self._procs.get(name.lower(), []):
            _kill(p)
        timer = threading.Timer(self.cancel_seconds, self._canceled, args=(name,))
        timer.daemon = True
        timer.start()
        loc = f"{self.base_url}/subscriptions/{self.subscription_id}/providers/{PROVIDER}/locations/" \
              f"{self.location}/mfeOperationResults/jc:{uuid.uuid4()}?api-version={API_VERSION}"
        return Response(202, None, {"Location": loc, "Retry-After": "1"})

    def _canceled(self, name: str) -> None:
        with self.lock:
            if self.jobs[name.lower()]["properties"]["status"] not in TERMINAL:
                self.set_status(name, "Canceled")

    def _r_history(self, g: dict, req: Request) -> Response:
        res = self.jobs.get(g["name"].lower())
        if res is None:
            return arm_error(404, "UserError", f"Run {g['name']} was not found")
        details: dict[str, Any] = {"runId": res["name"], "status": res["properties"]["status"],
                                   "target": (res["properties"].get("computeId") or "").rsplit("/", 1)[-1],
                                   "warnings": [], "logFiles": {}}
        err = self.history_errors.get(g["name"].lower())
        if err:
            details["error"] = {"error": {"code": err["code"], "message": err["message"], "messageFormat": "",
                                          "details": [], "innerError": None}, "time": _now()}
        return Response(200, details)

    # -- running a job like a compute node ---------------------------------------------------------------
    def _status(self, name: str) -> str:
        with self.lock:
            return self.jobs[name.lower()]["properties"]["status"]

    def _step(self, name: str, status: str) -> bool:
        """Move on to ``status`` unless the job was canceled meanwhile; whether it moved."""
        time.sleep(self.step_seconds)
        with self.lock:
            if self._stopping.is_set() or self._status(name) in TERMINAL | {"CancelRequested"}:
                return False
            self.set_status(name, status)
            return True

    def _auto(self, name: str) -> None:
        work = tempfile.mkdtemp(prefix=f"jc-job-{name}-")
        try:
            for status in ("Queued", "Preparing", "Running"):
                if not self._step(name, status):
                    return
            props = self.job(name)["properties"]
            code_dir = os.path.join(work, "code")
            os.makedirs(code_dir)
            if props.get("codeId"):
                version = self.codes[props["codeId"].split("/codes/")[1].split("/")[0].lower()]["versions"][
                    props["codeId"].rsplit("/", 1)[-1]]
                self._download(version["properties"]["codeUri"], code_dir)
            command = props["command"]
            for kind in ("inputs", "outputs"):
                for key, spec in (props.get(kind) or {}).items():
                    if key == "default":
                        continue
                    folder = os.path.join(work, kind, key)
                    os.makedirs(folder)
                    if kind == "inputs":
                        self._download(spec["uri"], folder)
                    command = command.replace("${{%s.%s}}" % (kind, key), folder)
            nodes = int((props.get("resources") or {}).get("instanceCount") or 1)
            codes = self._run_nodes(name, command, code_dir, nodes)
            for key, spec in (props.get("outputs") or {}).items():
                if key != "default" and os.path.isdir(os.path.join(work, "outputs", key)):
                    self._upload(os.path.join(work, "outputs", key), spec["uri"])
            if not self._step(name, "Finalizing"):
                return
            failed = [c for c in codes if c != 0]
            time.sleep(self.step_seconds)
            with self.lock:
                if self._status(name) != "Finalizing":
                    return
                if failed:
                    log = "user_logs/std_log.txt" if nodes == 1 else "user_logs/std_log_process_0.txt"
                    lines = [ln for ln in self._log_text(name, nodes).splitlines() if ln.strip()]
                    self.set_status(name, "Failed", error=("UserError", (
                        f"Execution failed. User process 'python' exited with status code {failed[0]}. Please "
                        f"check log file '{log}' for error details. Error: {lines[-1] if lines else ''}")))
                else:
                    self.set_status(name, "Completed")
        except Exception as e:  # a broken stand-in shows as a failed job with the reason
            with self.lock:
                if self._status(name) not in TERMINAL:
                    self.set_status(name, "Failed", error=("SystemError", f"stand-in: {type(e).__name__}: {e}"))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run_nodes(self, name: str, command: str, cwd: str, nodes: int) -> list[int]:
        procs = []
        bin_dir = VENV_BIN
        if self.python:
            bin_dir = os.path.join(os.path.dirname(cwd), "bin")
            os.makedirs(bin_dir, exist_ok=True)
            os.symlink(self.python, os.path.join(bin_dir, "python"))
        for rank in range(nodes):
            env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                   "AZUREML_RUN_ID": name, "PYTHONUNBUFFERED": "1"}
            env.pop("PYTHONPATH", None)
            if nodes > 1:
                env.update({"RANK": str(rank), "WORLD_SIZE": str(nodes), "LOCAL_RANK": "0", "NODE_RANK": str(rank),
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "6105"})
            with self.lock:
                if self._status(name) != "Running":
                    break
                p = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
                self._procs.setdefault(name.lower(), []).append(p)
            procs.append((rank, p))
        pumps = [threading.Thread(target=self._pump, args=(name, p, rank if nodes > 1 else None), daemon=True)
                 for rank, p in procs]
        for t in pumps:
            t.start()
        deadline = time.monotonic() + self.job_timeout
        codes = []
        for _, p in procs:
            try:
                codes.append(p.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                _kill(p)
                codes.append(p.wait(10))
        for t in pumps:
            t.join(10)
        return codes

    def _pump(self, name: str, proc: subprocess.Popen, rank: int | None) -> None:
        for line in iter(proc.stdout.readline, b""):
            self.feed_log(name, line.decode(errors="replace"), rank)
        proc.stdout.close()

    def _log_text(self, name: str, nodes: int) -> str:
        blob = "std_log.txt" if nodes == 1 else "std_log_process_0.txt"
        try:
            return self.read_blob(f"ExperimentRun/dcid.{name}/user_logs/{blob}", self.artifact_container).decode()
        except Exception:
            return ""

    def _container_and_path(self, uri: str) -> tuple[str, str] | None:
        where = _datastore_path(uri)
        if where is not None:
            ds = self.datastores.get(where[0])
            return (ds["properties"]["containerName"], where[1]) if ds else None
        m = re.match(r"^https://[^/]+\.blob\.[^/]+/([^/]+)/(.*)$", uri)
        return (m.group(1), m.group(2).strip("/")) if m else None

    def _blobs_at(self, uri: str) -> list[str]:
        where = self._container_and_path(uri)
        return self.blob_names(where[0], where[1] + "/") if where else []

    def _download(self, uri: str, folder: str) -> None:
        container, prefix = self._container_and_path(uri)
        c = self.azurite.service().get_container_client(container)
        for b in c.list_blobs(name_starts_with=prefix + "/"):
            dest = os.path.join(folder, b.name[len(prefix) + 1:])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as f:
                f.write(c.download_blob(b.name).readall())

    def _upload(self, folder: str, uri: str) -> None:
        container, prefix = self._container_and_path(uri)
        c = self.azurite.service().get_container_client(container)
        for root, _, files in os.walk(folder):
            for fn in files:
                path = os.path.join(root, fn)
                with open(path, "rb") as f:
                    c.upload_blob(f"{prefix}/{os.path.relpath(path, folder)}", f.read(), overwrite=True)


def _datastore_path(uri: str) -> tuple[str, str] | None:
    m = re.match(r"^azureml://(?:.*/)?datastores/([^/]+)/(?:paths/)?(.*)$", uri or "", re.I)
    return (m.group(1), m.group(2).strip("/")) if m else None


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _iso(t: float) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat()


# -- fixtures ---------------------------------------------------------------------------------------------
import pytest  # noqa: E402

from .azure import azure_env, network_guard  # noqa: E402,F401  (fixtures the ones below use)

__all__ = ["JobsStandIn", "sdk_problems", "azurite", "jobs_arm", "azure_env", "network_guard", "CURATED"]


@pytest.fixture(scope="session")
def azurite():
    """Azurite's blob service on loopback for the whole session; stopped at its end."""
    server = Azurite().start()
    yield server
    server.stop()


@pytest.fixture
def jobs_arm(azure_env, azurite):
    """A started Resource Manager stand-in with jobs, whose identity, CA and storage the process uses."""
    server = JobsStandIn(azurite)
    server.lro_polls = 1
    server.start()
    for k, v in server.env().items():
        azure_env.setenv(k, v)
    yield server
    server.stop()
