"""Jupyter's own authentication guards the API: token or cookie, plus XSRF for every change."""
from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.request


def _opener():
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)), jar


def _call(opener, method, url, headers=None, body=b""):
    req = urllib.request.Request(url, data=body if method != "GET" else None, method=method, headers=headers or {})
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _login(server):
    """Log in the way a browser does: the login form sets the session and _xsrf cookies."""
    import urllib.parse
    opener, jar = _opener()
    code, _ = _call(opener, "GET", f"{server.url}/login")
    assert code == 200
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    form = urllib.parse.urlencode({"password": server.token, "_xsrf": xsrf}).encode()
    code, _ = _call(opener, "POST", f"{server.url}/login", body=form,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert code == 200
    return opener, xsrf


def test_cookie_sessions_need_the_xsrf_token_to_change_anything(server_process):
    server = server_process()
    opener, xsrf = _login(server)
    base = f"{server.url}/jupyter-compute/workspaces/local/targets"
    code, body = _call(opener, "GET", base)
    assert code == 200 and json.loads(body)["targets"][0]["name"] == "this-machine"
    body = json.dumps({"name": "xs", "kind": "local-kernel"}).encode()
    code, _ = _call(opener, "POST", base, body=body)
    assert code == 403                                     # cookie alone: refused
    code, _ = _call(opener, "POST", base, body=body, headers={"X-XSRFToken": "forged"})
    assert code == 403
    code, out = _call(opener, "POST", base, body=body, headers={"X-XSRFToken": xsrf})
    assert code == 202, out
    assert server.wait_op(json.loads(out)["operation"]["id"])["status"] == "succeeded"
    code, _ = _call(opener, "DELETE", f"{base}/xs", headers={"X-XSRFToken": xsrf})
    assert code == 202


def test_no_credentials_no_answer(server_process):
    server = server_process()
    opener, _ = _opener()
    for method, path in (("GET", "workspaces"), ("GET", "workspaces/local/targets"), ("POST", "workspaces/local/targets"),
                         ("GET", "openapi.json"), ("DELETE", "workspaces/local/targets/this-machine")):
        code, _ = _call(opener, method, f"{server.url}/jupyter-compute/{path}")
        assert code in (401, 403), (method, path, code)


def test_cors_is_not_widened(server_process):
    """Our routes answer cross-origin requests exactly as Jupyter's own API does: never for a
    cookie session, and for a token request only as jupyter_server itself decides."""
    server = server_process()
    opener, _ = _login(server)
    evil = {"Origin": "https://evil.example"}

    def allow(path, headers):
        req = urllib.request.Request(f"{server.url}{path}", headers={**evil, **headers})
        try:
            with opener.open(req, timeout=30) as r:
                return r.headers.get("Access-Control-Allow-Origin")
        except urllib.error.HTTPError as e:
            return e.headers.get("Access-Control-Allow-Origin")

    assert allow("/jupyter-compute/workspaces", {}) is None          # cookie session: no CORS
    token = {"Authorization": f"token {server.token}"}
    assert allow("/jupyter-compute/workspaces", token) == allow("/api/contents", token)


def test_every_change_needs_the_xsrf_token(server_process):
    """Every state-changing method of every route, sent by a logged-in browser without the XSRF
    token, is refused before it reaches the handler: nothing is created, changed or cancelled."""
    import re

    from jupyter_compute.handlers import HANDLERS
    from tests.faces.test_rest import expand

    fills = {"ws": "local", "name": "xs", "job": "some-job", "id": "some-op", "action": "start"}
    server = server_process()
    opener, _ = _login(server)
    tried = []
    for pattern, handler in HANDLERS:
        for method in ("post", "patch", "put", "delete"):
            if method not in handler.__dict__:
                continue
            for path in expand(pattern):
                url = server.url + re.sub(r"\{(\w+)\}", lambda m: fills[m.group(1)], path)
                code, _ = _call(opener, method.upper(), url, body=b"{}", headers={"Content-Type": "application/json"})
                tried.append((method.upper(), path, code))
    refused = [t for t in tried if t[2] == 403]
    assert refused == tried, [t for t in tried if t[2] != 403]
    assert len(tried) >= 12  # every change the API offers, each action of a route on its own
    code, body = _call(opener, "GET", f"{server.url}/jupyter-compute/workspaces/local/targets")
    assert code == 200 and [t["name"] for t in json.loads(body)["targets"]] == ["this-machine"]
