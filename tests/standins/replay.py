"""Replays recorded Azure Resource Manager traffic over HTTPS on 127.0.0.1.

Reads the three formats Azure's own repositories record in (azure-sdk-for-python test-proxy JSON,
vcrpy cassettes from azure-cli, Azure PowerShell recorder JSON) and answers each request with the
recorded answer whose method and path match, ignoring api-version (the recordings use other
versions than the client). Poll URLs in ``Azure-AsyncOperation`` and ``Location`` are rewritten
to point here.

Which recorded answer a request gets follows the recording's order:

* a PUT, PATCH, POST or DELETE takes the next unused matching interaction and moves the replay's
  position to it;
* a GET takes the next unused matching interaction between that position and the next recorded
  change; with none left it gets the latest matching answer recorded before that next change
  (nothing changed since), and a resource not yet recorded at that point is 404, as it did not
  yet exist;
* an operation-status poll is matched by operation id where the recording kept ids, and by
  position where it masked them; polls never borrow an answer from another operation.

Some recordings stop while an operation is still InProgress (their deletes).
``complete_truncated=True`` answers polls past the end of such a recording with Succeeded; the
tests that rely on it say so.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .https import HttpsServer, Request, Response, arm_error

_OPSTATUS = re.compile(r"/computeOperationsStatus/([^/?]+)", re.I)
_KEEP_HEADERS = ("azure-asyncoperation", "location", "retry-after", "x-ms-request-id",
                 "x-ms-correlation-request-id", "content-type")
MUTATING = ("PUT", "PATCH", "POST", "DELETE")


@dataclass
class Interaction:
    index: int
    method: str
    url: str
    status: int
    headers: dict[str, str]
    body: str | None
    #: What the recorded client sent, for comparing with what the backend sends.
    request_body: Any = None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def key(self) -> str:
        return path_key(self.path)

    @property
    def op_id(self) -> str | None:
        m = _OPSTATUS.search(self.path)
        return m.group(1).lower() if m else None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def path_key(path: str) -> str:
    if _OPSTATUS.search(path):
        return "opstatus"
    return path.rstrip("/").lower()


def _first(v: Any) -> str:
    return v[0] if isinstance(v, list) else str(v)


def _parse(body: Any) -> Any:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            return json.loads(body) if body.strip() else None
        except ValueError:
            return body
    return body


def load_recording(path: str) -> list[Interaction]:
    """The interactions of a recording file, in recorded order."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out: list[Interaction] = []
    if path.endswith((".yaml", ".yml")):
        import yaml

        for it in yaml.safe_load(text)["interactions"]:
            rq, rs = it["request"], it["response"]
            body = (rs.get("body") or {}).get("string")
            if isinstance(body, bytes):
                body = body.decode("utf-8")
            out.append(Interaction(len(out), rq["method"].upper(), rq["uri"], int(rs["status"]["code"]),
                                   {k.lower(): _first(v) for k, v in (rs.get("headers") or {}).items()}, body or None,
                                   _parse(rq.get("body"))))
        return out
    data = json.loads(text)
    if isinstance(data, dict) and "Entries" in data:
        for e in data["Entries"]:
            body = e.get("ResponseBody")
            if body is not None and not isinstance(body, str):
                body = json.dumps(body)
            out.append(Interaction(len(out), e["RequestMethod"].upper(), e["RequestUri"], int(e["StatusCode"]),
                                   {k.lower(): _first(v) for k, v in (e.get("ResponseHeaders") or {}).items()},
                                   body or None, _parse(e.get("RequestBody"))))
        return out
    for _, e in data.items():  # Azure PowerShell: {"<cmdlet>+...+<url>+<n>": {Request, Response}}
        rq, rs = e["Request"], e["Response"]
        headers = {k.lower(): _first(v) for k, v in {**(rs.get("Headers") or {}),
                                                      **(rs.get("ContentHeaders") or {})}.items()}
        out.append(Interaction(len(out), rq["Method"].upper(), rq["RequestUri"], int(rs["StatusCode"]), headers,
                               rs.get("Content") or None, _parse(rq.get("Content"))))
    return out


def recorded_computes(path: str) -> list[dict]:
    """Compute resources as a recording's GET answers show them (last seen state of each)."""
    found: dict[str, dict] = {}
    for it in load_recording(path):
        if it.method != "GET" or it.status != 200 or "/computes" not in it.path.lower() or it.op_id:
            continue
        body = it.json()
        items = body.get("value") if isinstance(body, dict) and "value" in body else [body]
        for r in items or []:
            if isinstance(r, dict) and r.get("name") and (r.get("properties") or {}).get("computeType"):
                found[r["name"]] = r
    return list(found.values())


class ArmReplayer(HttpsServer):
    def __init__(self, *paths: str, complete_truncated: bool = False):
        super().__init__()
        self.interactions: list[Interaction] = []
        for p in paths:
            for it in load_recording(p):
                it.index = len(self.interactions)
                self.interactions.append(it)
        self.complete_truncated = complete_truncated
        self._ids = {it.op_id for it in self.interactions if it.op_id and set(it.op_id) - {"0"}}
        self.used: set[int] = set()
        self.cursor = -1
        self._last_poll: dict[str, int] = {}
        self.deleted: set[str] = set()
        #: Requests no recorded interaction answered.
        self.unmatched: list[Request] = []
        #: (request, index of the interaction that answered it)
        self.served: list[tuple[Request, int]] = []

    def handle(self, req: Request) -> Response:
        if self.audience_of(req) is None:
            return arm_error(401, "InvalidAuthenticationToken", "The access token is invalid or missing.")
        with self.lock:
            it = self._choose(req)
            if it is None:
                self.unmatched.append(req)
                if self.complete_truncated and path_key(req.path) == "opstatus":
                    return Response(200, {"status": "Succeeded", "percentComplete": 100.0})
                return arm_error(404, "ResourceNotFound",
                                 f"The recording has no {req.method} {req.path} at this point (it did not exist).")
            self.served.append((req, it.index))
            return self._answer(it)

    def _window_end(self) -> int:
        for it in self.interactions[self.cursor + 1:]:
            if it.method in MUTATING and it.index not in self.used:
                return it.index
        return len(self.interactions)

    def _choose(self, req: Request) -> Interaction | None:
        key = path_key(req.path)
        method = req.method.upper()
        if key == "opstatus":
            return self._choose_poll(req)
        candidates = [it for it in self.interactions if it.method == method and it.key == key]
        if method in MUTATING:
            it = next((c for c in candidates if c.index > self.cursor and c.index not in self.used), None) or \
                next((c for c in candidates if c.index not in self.used), None)
            if it is not None:
                self.used.add(it.index)
                self.cursor = it.index
                if method == "DELETE":
                    self.deleted.add(key)
                elif method == "PUT":
                    self.deleted.discard(key)
            return it
        end = self._window_end()
        fresh = next((c for c in candidates if self.cursor < c.index < end and c.index not in self.used), None)
        if fresh is not None:
            self.used.add(fresh.index)
            return fresh
        if key in self.deleted:
            return None
        earlier = [c for c in candidates if c.index < end]
        return earlier[-1] if earlier else None

    def _choose_poll(self, req: Request) -> Interaction | None:
        m = _OPSTATUS.search(req.path)
        op = m.group(1).lower() if m else ""
        end = self._window_end()
        if op in self._ids:
            polls = [it for it in self.interactions if it.op_id == op]
        else:
            polls = [it for it in self.interactions if it.op_id and it.op_id not in self._ids
                     and self.cursor < it.index < end]
        it = next((p for p in polls if p.index not in self.used), None)
        if it is not None:
            self.used.add(it.index)
            self._last_poll[op] = it.index
            return it
        if self.complete_truncated:
            last = self._last_poll.get(op)
            body = self.interactions[last].json() if last is not None else None
            if not (isinstance(body, dict) and body.get("status") in ("Succeeded", "Failed", "Canceled")):
                return None  # answered Succeeded by handle()
        last = self._last_poll.get(op)
        return self.interactions[last] if last is not None else None

    def _answer(self, it: Interaction) -> Response:
        headers = {}
        for k, v in it.headers.items():
            if k not in _KEEP_HEADERS:
                continue
            if k in ("azure-asyncoperation", "location") and v.startswith("http"):
                parts = urlsplit(v)
                v = f"{self.base_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")
            headers[k] = v
        return Response(it.status, it.body, headers)
