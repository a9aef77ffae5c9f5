"""Azure ML command jobs for cells: the job body, environments resolved to their ids, code and
pushed variables uploaded to the workspace's default datastore, the user log read as it grows
from the artifact store, outputs downloaded, and jobs listed.

Resource Manager (api-version 2023-04-01) is reached through the backend's async
azure-mgmt-machinelearningservices client; storage through azure-storage-blob's async clients,
signed with the datastore's key where Azure hands it out and with the user's identity otherwise.
"""
from __future__ import annotations

import asyncio
import codecs
import difflib
import hashlib
import inspect
import json
import re
import shlex
import struct
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from ...core.aio import within
from ...core.errors import ComputeError, InvalidRequest, NotFound, Unavailable
from ...core.route import cell_frames
from . import in_job
from .resources import _when

if TYPE_CHECKING:
    from .arm import ArmWorkspace

PROVIDER = "Microsoft.MachineLearningServices"
RBAC = f"{PROVIDER}/workspaces/"
#: The role-based access action each job step needs, as Azure's docs list them.
JOB_ACTIONS = {
    "jobs": RBAC + "jobs/read", "submit": RBAC + "jobs/write", "cancel": RBAC + "jobs/cancel/action",
    "environment": RBAC + "environments/read", "code": RBAC + "codes/write",
    "datastore": RBAC + "datastores/read", "secrets": RBAC + "datastores/listsecrets/action",
    "compute": RBAC + "computes/read", "history": RBAC + "experiments/runs/read",
    "upload": "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
    "push": "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
    "log": "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
    "download": "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
}

TERMINAL = frozenset({"Completed", "Failed", "Canceled"})
#: Statuses of a job that has not started running: the queue of a busy compute.
WAITING = frozenset({"NotStarted", "Starting", "Provisioning", "Preparing", "Queued"})
ACTIVE = WAITING | {"Running", "Finalizing", "CancelRequested", "NotResponding", "Paused"}

#: Cells longer than this travel as a code asset rather than inside the command.
INLINE_LIMIT = 8000
#: Bound on every single call to Azure (Resource Manager, storage, run history).
CALL_TIMEOUT = 60.0
#: Pages of the workspace's job list read when looking for one compute's jobs.
LIST_PAGES = 5
ARTIFACT_STORE = "workspaceartifactstore"
LOG_PATTERN = re.compile(r"(?:^|/)user_logs/std_log(?:_process_(\d+))?\.txt$")
INPUT, OUTPUT = "push", "results"
RUNNER_FILE, CELL_FILE = "jupyter_compute_job.py", "jupyter_compute_cell.py"
PUSH_SUFFIX, CLOUDPICKLE_FILE = ".jcp", "_cloudpickle.py"
RESULT_FILE, JOB_FILE, ERROR_FILE = "__result__.json", "__job__.json", "__error__.json"
_FRAMES_MAGIC = b"JCP1"


RUNNER_SOURCE = inspect.getsource(cell_frames) + "\n\n" + inspect.getsource(in_job) + "\n\nmain()\n"


# == this side =======================================================================================
def pack_frames(frames: Iterable[Any]) -> bytes:
    """One pushed variable as a file: its pickle and out-of-band buffers, each length-prefixed."""
    frames = [memoryview(f).cast("B") for f in frames]
    parts = [_FRAMES_MAGIC, struct.pack(">I", len(frames))]
    for f in frames:
        parts += [struct.pack(">Q", f.nbytes), f]
    return b"".join(parts)


def command_for(code: str | None, *, pull: list[str], inputs: bool) -> str:
    """The job's command: the runner inline, with the cell (``code``) verbatim in a quoted
    here-document on its standard input, or the code asset's files when ``code`` is None. Azure
    substitutes ``${{inputs.…}}`` and ``${{outputs.…}}`` and runs the command in a shell."""
    if code is None:
        words = ["python", RUNNER_FILE, "--file", CELL_FILE]
    else:
        words = ["python", "-c", shlex.quote(RUNNER_SOURCE), "--code", "-"]
    if inputs:
        words += ["--inputs", "${{inputs.%s}}" % INPUT]
    words += ["--outputs", "${{outputs.%s}}" % OUTPUT]
    if pull:
        words += ["--pull", shlex.quote(",".join(pull))]
    command = " ".join(words)
    if code is None:
        return command
    end = _delimiter(code)
    return f"{command} <<'{end}'\n{code}\n{end}"


def _delimiter(code: str) -> str:
    lines = set(code.splitlines())
    end = "JUPYTER_COMPUTE_CELL"
    while end in lines:
        end += "_" + uuid.uuid4().hex[:6]
    return end


def fits_inline(code: str) -> bool:
    # "${{" would be taken by Azure for one of its substitutions.
    return len(code) <= INLINE_LIMIT and "${{" not in code


def command_job_body(*, compute_id: str, environment_id: str, command: str, code_id: str | None = None,
                     inputs: dict[str, dict] | None = None, outputs: dict[str, dict] | None = None,
                     nodes: int = 1, display_name: str | None = None, experiment: str = "jupyter-compute",
                     tags: dict[str, str] | None = None, description: str | None = None) -> dict:
    """A command job as Resource Manager defines it for api-version 2023-04-01."""
    props: dict[str, Any] = {
        "jobType": "Command",
        "computeId": compute_id,
        "environmentId": environment_id,
        "command": command,
        "experimentName": experiment,
        "resources": {"instanceCount": nodes},
        "inputs": inputs or {},
        "outputs": outputs or {},
        "tags": tags or {},
    }
    if code_id:
        props["codeId"] = code_id
    if nodes > 1:
        # One process per node; PyTorch's launcher variables (RANK, WORLD_SIZE, MASTER_ADDR, ...) tell each its place.
        props["distribution"] = {"distributionType": "PyTorch", "processCountPerInstance": 1}
    if display_name:
        props["displayName"] = display_name
    if description:
        props["description"] = description
    return {"properties": props}


def datastore_uri(datastore: str, path: str) -> str:
    return f"azureml://datastores/{datastore}/paths/{path.strip('/')}/"


def parse_datastore_uri(uri: str) -> tuple[str, str] | None:
    """(datastore, path) of ``azureml://[subscriptions/…/workspaces/…/]datastores/NAME/[paths/]PATH``."""
    m = re.match(r"^azureml://(?:.*/)?datastores/([^/]+)/(?:paths/)?(.*)$", uri or "", re.I)
    return (m.group(1), m.group(2).strip("/")) if m else None


def job_name(target: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
    return f"jc_{re.sub(r'[^A-Za-z0-9_-]', '_', target)}_{stamp}_{uuid.uuid4().hex[:6]}"


def compute_name(compute_id: str | None) -> str | None:
    return compute_id.rstrip("/").rsplit("/", 1)[-1] if compute_id else None


def _seconds_between(a: Any, b: Any) -> float | None:
    if not a:
        return None
    start, end = _when(a), _when(b) if b else datetime.now(timezone.utc)
    if start.year <= 1970:
        return None
    return max(0.0, (end - start).total_seconds())


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


@dataclass
class Datastore:
    """A blob datastore of the workspace: where its container lives and how to sign in to it."""
    name: str
    account: str
    container: str
    endpoint: str = "core.windows.net"
    protocol: str = "https"
    credentials_type: str = "None"

    @classmethod
    def from_resource(cls, res: dict) -> "Datastore":
        p = res.get("properties") or {}
        if (p.get("datastoreType") or "AzureBlob") != "AzureBlob" or not p.get("accountName"):
            raise InvalidRequest(f"datastore '{res.get('name')}' is a {p.get('datastoreType')} datastore; cells "
                                 "sent as jobs need a blob datastore", reason="unsupported_datastore")
        return cls(res.get("name") or "", p["accountName"], p.get("containerName") or "",
                   p.get("endpoint") or "core.windows.net", p.get("protocol") or "https",
                   (p.get("credentials") or {}).get("credentialsType") or "None")

    @property
    def azure_account_url(self) -> str:
        return f"{self.protocol}://{self.account}.blob.{self.endpoint}"

    def blob_url(self, path: str) -> str:
        """A blob's URL as Azure itself names it (in code asset ids), whatever endpoint we reach it by."""
        return f"{self.azure_account_url}/{self.container}/{path.strip('/')}"


class LogTail:
    """A job's user log (``user_logs/std_log.txt``, or one file per process of a distributed job),
    read from the artifact store as it grows: each ``read`` returns only what is new."""

    def __init__(self, container: Any, prefix: str, keep: int = 40):
        self.container = container
        self.prefix = prefix.rstrip("/") + "/user_logs/"
        self.offsets: dict[str, int] = {}
        self.decoders: dict[str, Any] = {}
        self.ranks: dict[str, int | None] = {}
        self._tails: dict[int | None, deque] = {}
        self._partial: dict[int | None, str] = {}
        self._keep = keep

    async def read(self) -> list[tuple[int | None, str]]:
        """New text as (rank or None for a single process, text) pieces, in file order."""
        from azure.core.exceptions import ResourceNotFoundError

        grown = []
        try:
            async for blob in self.container.list_blobs(name_starts_with=self.prefix):
                m = LOG_PATTERN.search(blob.name)
                if m and (blob.size or 0) > self.offsets.get(blob.name, 0):
                    grown.append((blob.name, blob.size, None if m.group(1) is None else int(m.group(1))))
        except ResourceNotFoundError:  # the container appears with the first log
            return []
        out = []
        for name, size, rank in sorted(grown, key=lambda g: (g[2] or 0, g[0])):
            start = self.offsets.get(name, 0)
            stream = await self.container.download_blob(name, offset=start, length=size - start)
            data = await stream.readall()
            self.offsets[name] = start + len(data)
            decoder = self.decoders.setdefault(name, codecs.getincrementaldecoder("utf-8")("replace"))
            text = decoder.decode(data)
            if text:
                self.ranks[name] = rank
                self._remember(rank, text)
                out.append((rank, text))
        return out

    def _remember(self, rank: int | None, text: str) -> None:
        lines = (self._partial.pop(rank, "") + text).split("\n")
        self._partial[rank] = lines.pop()
        self._tails.setdefault(rank, deque(maxlen=self._keep)).extend(lines)

    def tail(self, n: int | None = None) -> list[str]:
        """The last lines read, labelled by rank when there are several processes."""
        ranks = sorted(self._tails.keys() | self._partial.keys(), key=lambda r: -1 if r is None else r)
        out = []
        for rank in ranks:
            lines = list(self._tails.get(rank, ()))
            if self._partial.get(rank):
                lines.append(self._partial[rank])
            lines = lines[-(n or self._keep):]
            out += [f"[rank {rank}] {ln}" if len(ranks) > 1 and rank is not None else ln for ln in lines]
        return out


class AzureJobs:
    """Jobs of one Azure ML workspace, through the workspace's Resource Manager client and credential."""

    def __init__(self, arm: "ArmWorkspace"):
        self.arm = arm
        self._datastores: dict[str, Datastore] = {}
        self._containers: dict[tuple[str, str], Any] = {}
        self._default: str | None = None
        self._history: str | None = None

    @property
    def settings(self) -> Any:
        return self.arm.azure

    @property
    def workspace_id(self) -> str:
        return self.arm.path()

    def compute_id(self, name: str) -> str:
        return self.arm.path("computes", name)

    # -- calls ---------------------------------------------------------------------------------------
    async def _call(self, action: str, name: str | None, fn: Callable[[], Awaitable[Any]], *,
                    timeout: float = CALL_TIMEOUT) -> Any:
        """One bounded call to Azure; failures become errors a person can act on."""
        from azure.core.exceptions import HttpResponseError

        try:
            return await within(fn(), timeout)
        except ComputeError:
            raise
        except asyncio.TimeoutError:
            raise Unavailable(f"Azure did not answer within {timeout:g} s ({action}"
                              f"{' of ' + repr(name) if name else ''})", reason="azure_timeout") from None
        except HttpResponseError as e:
            if e.status_code == 403:
                from .arm import AzureError, azure_message
                code, message = azure_message(e.response)
                raise AzureError(
                    f"{message or e.reason} -- The signed-in identity lacks a permission: {action}"
                    f"{' of ' + repr(name) if name else ''} needs the Azure role-based access action "
                    f"{JOB_ACTIONS.get(action, JOB_ACTIONS['jobs'])} (granted for example by the AzureML Data "
                    "Scientist role).", azure_code=code, reason="azure_auth", http_status=403) from e
            raise self.arm.translate(e, action, name) from e
        except Exception as e:  # translated where known; anything else re-raises as it is
            raise self.arm.translate(e, action, name) from e

    async def _json(self, action: str, method: str, url: str, *, name: str | None = None,
                    params: dict | None = None, body: Any = None, missing_ok: bool = False,
                    arm: bool = True) -> Any:
        """A Resource Manager request (or, with ``arm`` False, one to an Azure ML data-plane URL),
        answered with its JSON; None for a 404 when ``missing_ok``."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        if url.startswith("/"):
            url = self.arm.endpoint + url
        if arm and "api-version=" not in url:
            params = {"api-version": self.settings.api_version, **(params or {})}

        async def send():
            resp = await self.arm.client()._send_request(HttpRequest(method, url, params=params, json=body))
            if missing_ok and resp.status_code == 404:
                return None
            if resp.status_code >= 400:
                raise HttpResponseError(response=resp)
            text = resp.text()
            return json.loads(text) if text else None
        return await self._call(action, name, send)

    async def _pages(self, action: str, path: str, params: dict | None = None, *,
                     pages: int = 20) -> list[dict]:
        out: list[dict] = []
        url: str | None = path
        count = 0
        while url and count < pages:
            page = await self._json(action, "GET", url, params=params if count == 0 else None) or {}
            out.extend(page.get("value") or [])
            url, count = page.get("nextLink"), count + 1
        return out

    # -- computes --------------------------------------------------------------------------------------
    async def compute(self, name: str) -> dict:
        res = await self._json("compute", "GET", self.compute_id(name), name=name, missing_ok=True)
        if res is None:
            raise NotFound(f"no compute named '{name}' in {self.arm.scope}", reason="azure_not_found")
        return res

    async def busy_notice(self, name: str, compute: dict | None = None) -> str | None:
        """What to tell someone about to queue a job on a busy cluster (no idle node and jobs
        waiting), or None when it is not busy."""
        res = compute or await self.compute(name)
        inner = (res.get("properties") or {}).get("properties") or {}
        if (res.get("properties") or {}).get("computeType") != "AmlCompute":
            return None
        counts = inner.get("nodeStateCounts") or {}
        if counts.get("idleNodeCount"):
            return None
        queue = [j for j in await self.list(compute=name) if (j.get("properties") or {}).get("status") in WAITING]
        if not queue:
            return None
        scale = inner.get("scaleSettings") or {}
        nodes = ", ".join(f"{counts.get(k) or 0} {label}" for k, label in (
            ("runningNodeCount", "running"), ("preparingNodeCount", "preparing"), ("idleNodeCount", "idle"),
            ("leavingNodeCount", "leaving"), ("unusableNodeCount", "unusable"), ("preemptedNodeCount", "preempted"))
            if counts.get(k) or label in ("running", "idle"))
        lines = [f"'{name}' is busy: {nodes} of at most {scale.get('maxNodeCount', '?')} nodes, and "
                 f"{len(queue)} job{'s' if len(queue) != 1 else ''} waiting:"]
        for j in queue[:5]:
            s = summarize(j)
            who = f" by {s['created_by']}" if s.get("created_by") else ""
            lines.append(f"  {s['name']} ({s['status']}{who}, waiting {format_duration(s['age_seconds'])})")
        if len(queue) > 5:
            lines.append(f"  ... and {len(queue) - 5} more")
        lines.append("Submitting anyway: the job waits its turn.")
        return "\n".join(lines)

    # -- environments ----------------------------------------------------------------------------------
    async def resolve_environment(self, spec: str | None) -> str:
        """The ARM id of a curated or registered environment named ``NAME``, ``NAME:VERSION`` or
        ``NAME@latest`` (an ``azureml:`` prefix is allowed); full ids are taken as they are."""
        spec = (spec or self.settings.job_environment or "").strip()
        if not spec:
            raise InvalidRequest("--environment: name an environment (curated or registered)", field="/environment")
        if spec.startswith(("azureml://", "/subscriptions/")):
            return spec
        text = spec[len("azureml:"):] if spec.startswith("azureml:") else spec
        name, version = text, None
        if "@" in text:
            name, label = text.split("@", 1)
            if label != "latest":
                raise InvalidRequest(f"--environment {spec}: the only label is @latest; give a version as "
                                     "NAME:VERSION", field="/environment")
        elif ":" in text:
            name, version = text.split(":", 1)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}", name or "") or version == "":
            raise InvalidRequest(f"--environment {spec!r} is not NAME, NAME:VERSION or NAME@latest",
                                 field="/environment")
        base = f"{self.workspace_id}/environments/{name}"
        container = await self._json("environment", "GET", base, name=name, missing_ok=True)
        if container is None:
            names = [c.get("name") for c in await self._pages("environment", f"{self.workspace_id}/environments")]
            raise InvalidRequest(f"--environment: no environment named '{name}' in {self.arm.scope}"
                                 + _close(name, [n for n in names if n]), field="/environment",
                                 reason="unknown_environment")
        if version is None:
            version = (container.get("properties") or {}).get("latestVersion")
        if version is None:
            versions = await self._pages("environment", f"{base}/versions")
            if not versions:
                raise InvalidRequest(f"--environment: '{name}' has no versions", field="/environment",
                                     reason="unknown_environment")
            version = max((v.get("name") or "" for v in versions), key=_version_key)
        found = await self._json("environment", "GET", f"{base}/versions/{version}", name=name, missing_ok=True)
        if found is None:
            versions = [v.get("name") for v in await self._pages("environment", f"{base}/versions")]
            have = ", ".join(sorted((v for v in versions if v), key=_version_key)) or "none"
            raise InvalidRequest(f"--environment: '{name}' has no version {version} (versions: {have})",
                                 field="/environment", reason="unknown_environment")
        return found.get("id") or f"{base}/versions/{version}"

    # -- storage ---------------------------------------------------------------------------------------
    async def datastore(self, name: str | None = None) -> Datastore:
        """A datastore by name, or the workspace's default one."""
        if name is None:
            if self._default is None:
                found = await self._pages("datastore", f"{self.workspace_id}/datastores", {"isDefault": "true"})
                default = next((d for d in found if (d.get("properties") or {}).get("isDefault")), None)
                if default is None:
                    default = await self._json("datastore", "GET", f"{self.workspace_id}/datastores/workspaceblobstore",
                                               missing_ok=True)
                if default is None:
                    raise NotFound(f"{self.arm.scope} has no default datastore", reason="azure_not_found")
                ds = Datastore.from_resource(default)
                self._datastores[ds.name] = ds
                self._default = ds.name
            name = self._default
        if name not in self._datastores:
            res = await self._json("datastore", "GET", f"{self.workspace_id}/datastores/{name}", name=name,
                                   missing_ok=True)
            if res is None:
                raise NotFound(f"no datastore named '{name}' in {self.arm.scope}", reason="azure_not_found")
            self._datastores[name] = Datastore.from_resource(res)
        return self._datastores[name]

    async def container(self, ds: Datastore) -> Any:
        """An async blob container client for a datastore, signed with its key or SAS where Azure
        hands one out, else with the user's own identity."""
        key = (ds.name, ds.container)
        if key in self._containers:
            return self._containers[key]
        from azure.storage.blob.aio import ContainerClient

        from .credential import transport_options

        credential: Any = None
        if ds.credentials_type in ("AccountKey", "Sas"):
            secrets = await self._json("secrets", "POST", f"{self.workspace_id}/datastores/{ds.name}/listSecrets",
                                       name=ds.name) or {}
            if secrets.get("key"):
                credential = {"account_name": ds.account, "account_key": secrets["key"]}
            elif secrets.get("sasToken"):
                credential = secrets["sasToken"]
        if credential is None:
            self.arm.client()  # makes the credential when none was given
            credential = self.arm.credential
        url = self.settings.blob_account_url(ds.account) or ds.azure_account_url
        opts = transport_options(self.settings)
        client = ContainerClient(url, ds.container, credential=credential, **opts)
        self._containers[key] = client
        return client

    async def upload(self, ds: Datastore, files: dict[str, bytes], *, action: str = "upload") -> int:
        """Upload ``path -> bytes`` into the datastore's container; returns the bytes sent."""
        container = await self.container(ds)

        async def put(path: str, data: bytes):
            # Large variables take their time: the bound grows with the size, at 1 MB/s at worst.
            await self._call(action, path, lambda: container.upload_blob(path, data, overwrite=True),
                             timeout=CALL_TIMEOUT + len(data) / 1e6)
        await asyncio.gather(*(put(p, d) for p, d in files.items()))
        return sum(len(d) for d in files.values())

    async def download(self, ds: Datastore, prefix: str, names: Iterable[str] | None = None) -> dict[str, bytes]:
        """Blobs under ``prefix`` (only those named, if given), by their name relative to it."""
        container = await self.container(ds)
        prefix = prefix.strip("/") + "/"
        wanted = set(names) if names is not None else None

        async def listing():
            return {b.name: b.size or 0 async for b in container.list_blobs(name_starts_with=prefix)}
        sizes = await self._call("download", prefix, listing)
        found = [n for n in sizes if wanted is None or n[len(prefix):] in wanted]

        async def get(name: str):
            async def fetch():
                return await (await container.download_blob(name)).readall()
            return name[len(prefix):], await self._call("download", name, fetch,
                                                        timeout=CALL_TIMEOUT + sizes[name] / 1e6)
        return dict(await asyncio.gather(*(get(n) for n in found)))

    async def upload_code(self, files: dict[str, bytes]) -> str:
        """The cell as an anonymous code asset (content-addressed, so an unchanged cell is not
        uploaded again) in the default datastore; returns the code version's ARM id."""
        digest = hashlib.sha256()
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
        h = digest.hexdigest()
        name, version = str(uuid.UUID(h[:32])), "1"
        url = f"{self.workspace_id}/codes/{name}/versions/{version}"
        existing = await self._json("code", "GET", url, name=name, missing_ok=True)
        if existing is not None:
            return existing.get("id") or url
        ds = await self.datastore()
        folder = f"LocalUpload/{h[:32]}/cell"
        await self.upload(ds, {f"{folder}/{p}": d for p, d in files.items()}, action="code")
        await self._json("code", "PUT", f"{self.workspace_id}/codes/{name}", name=name,
                         body={"properties": {"isArchived": False}})
        res = await self._json("code", "PUT", url, name=name, body={"properties": {
            "codeUri": ds.blob_url(folder), "isAnonymous": True,
            "properties": {"createdBy": "jupyter_compute"}}})
        return (res or {}).get("id") or url

    # -- jobs ------------------------------------------------------------------------------------------
    async def submit(self, name: str, body: dict) -> dict:
        async def put():
            from .arm import raw_body as _raw
            return await self.arm.client().jobs.create_or_update(
                self.arm.resource_group, self.arm.workspace_name, name, json.dumps(body).encode(),
                content_type="application/json", cls=_raw)
        return await self._call("submit", name, put)

    async def get(self, name: str) -> dict:
        res = await self._json("jobs", "GET", f"{self.workspace_id}/jobs/{name}", name=name, missing_ok=True)
        if res is None:
            raise NotFound(f"no job named '{name}' in {self.arm.scope}", reason="unknown_job")
        return res

    async def cancel(self, name: str) -> None:
        async def post():
            poller = await self.arm.client().jobs.begin_cancel(
                self.arm.resource_group, self.arm.workspace_name, name, polling=False)
            return poller
        await self._call("cancel", name, post)

    async def list(self, compute: str | None = None, *, top: int = 20) -> list[dict]:
        """Recent jobs of the workspace, newest first; of one compute when named."""
        jobs = await self._pages("jobs", f"{self.workspace_id}/jobs", {"listViewType": "ActiveOnly"}, pages=LIST_PAGES)
        if compute is not None:
            wanted = compute.lower()
            jobs = [j for j in jobs if (compute_name((j.get("properties") or {}).get("computeId")) or "").lower()
                    == wanted]
        jobs.sort(key=lambda j: _when(((j.get("systemData") or {}).get("createdAt"))), reverse=True)
        return jobs[:top]

    def studio_url(self, job: dict) -> str:
        services = (job.get("properties") or {}).get("services") or {}
        studio = (services.get("Studio") or {}).get("endpoint")
        if studio:
            return studio
        b = self.arm
        return (f"https://ml.azure.com/runs/{job.get('name')}?wsid=/subscriptions/{b.subscription_id}/resourcegroups/"
                f"{b.resource_group}/workspaces/{b.workspace_name}")

    async def log_tail(self, job: dict, keep: int = 40) -> LogTail:
        """A reader of the job's user log, in the artifact store where Azure writes it."""
        default = ((job.get("properties") or {}).get("outputs") or {}).get("default") or {}
        where = parse_datastore_uri(default.get("uri") or "")
        ds_name, prefix = where if where else (ARTIFACT_STORE, f"ExperimentRun/dcid.{job.get('name')}")
        ds = await self.datastore(ds_name)
        return LogTail(await self.container(ds), prefix, keep=keep)

    async def run_error(self, name: str) -> tuple[str | None, str] | None:
        """Azure's own error for a failed job, from the workspace's run history: (code, message)."""
        try:
            if self._history is None:
                ws = await self._json("jobs", "GET", self.workspace_id)
                discovery = ((ws or {}).get("properties") or {}).get("discoveryUrl")
                if not discovery:
                    return None
                found = await self._json("history", "GET", discovery, arm=False) or {}
                self._history = (found.get("history") or found.get("api") or "").rstrip("/")
            if not self._history:
                return None
            b = self.arm
            details = await self._json(
                "history", "GET", f"{self._history}/history/v1.0/subscriptions/{b.subscription_id}/resourceGroups/"
                f"{b.resource_group}/providers/{PROVIDER}/workspaces/{b.workspace_name}/runs/{name}/details",
                name=name, arm=False, missing_ok=True) or {}
        except ComputeError:
            return None
        err = details.get("error") or {}
        err = err.get("error") or err
        return (err.get("code"), err["message"]) if err.get("message") else None

    async def read_log(self, job: dict, lines: int = 200) -> str:
        """The end of a job's user log as it is now."""
        tail = await self.log_tail(job, keep=lines)
        await self._call("log", job.get("name"), tail.read)
        return "\n".join(tail.tail(lines))

    async def close(self) -> None:
        containers, self._containers = list(self._containers.values()), {}
        for c in containers:
            try:
                await c.close()
            except Exception:  # closing is best effort
                pass


def summarize(job: dict, studio: str | None = None) -> dict:
    """A job as the lists show it: name, status, compute, times, duration and Studio link."""
    p = job.get("properties") or {}
    sysdata = job.get("systemData") or {}
    extra = p.get("properties") or {}
    created = sysdata.get("createdAt")
    started = extra.get("StartTimeUtc")
    ended = extra.get("EndTimeUtc") or (sysdata.get("lastModifiedAt") if p.get("status") in TERMINAL else None)
    services = p.get("services") or {}
    out = {
        "name": job.get("name"), "display_name": p.get("displayName"), "status": p.get("status") or "Unknown",
        "compute": compute_name(p.get("computeId")), "experiment": p.get("experimentName"),
        "created": created, "started": started, "ended": ended,
        "duration_seconds": _seconds_between(started, ended) if started else None,
        "age_seconds": _seconds_between(created, None),
        "created_by": sysdata.get("createdBy"),
        "studio_url": studio or (services.get("Studio") or {}).get("endpoint"),
        "environment": p.get("environmentId"), "nodes": (p.get("resources") or {}).get("instanceCount") or 1,
    }
    return out


def _version_key(v: str) -> tuple:
    return tuple((0, int(x)) if x.isdigit() else (1, x) for x in re.split(r"[.-]", v or ""))


def _close(name: str, names: list[str]) -> str:
    lowered = {n.lower(): n for n in names}
    near = difflib.get_close_matches(name.lower(), list(lowered), n=5, cutoff=0.5)
    near += [k for k in lowered if name.lower() in k and k not in near][:5 - len(near)]
    if near:
        return "; close matches: " + ", ".join(lowered[k] for k in near)
    if names:
        return "; environments here include " + ", ".join(sorted(names)[:8])
    return ""


__all__ = ["AzureJobs", "Datastore", "LogTail", "command_for", "command_job_body", "summarize", "RUNNER_SOURCE"]
