"""The REST API driven statefully, with a valid token, through its success paths: hypothesis's rule
machine creates, starts, stops, restarts, updates and deletes local-kernel and dask-cluster targets on a live Jupyter
server, with specs valid and hostile, and after every step checks what the server says against a
model of what it accepted. The negative-mode authentication run is separate: every request without
the token is refused, whatever else it holds."""
from __future__ import annotations

import functools
import sqlite3
import string
import time
import traceback

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from tests.conftest import stop_all_targets
from tests.loadclient import TRANSITIONAL, delete_all
from tests.servers import ServerProcess

#: Local kernels are made under these names, a Dask cluster under "d1"; every action takes any of them.
NAMES = st.sampled_from(["a1", "b2", "c3"])
ANY_NAME = st.sampled_from(["a1", "b2", "c3", "d1"])
#: What the API answers a well-formed request with: an operation began, a read, a bad field, busy or
#: taken, or unknown. Anything else (a 5xx above all) is a defect.
DOCUMENTED = {200, 202, 400, 404, 409}
#: A transitional state may last this long after its operation began, and no longer.
OPERATION_BOUND = 90.0
#: The stateful runs stop being started after this long.
BUDGET_SECONDS = 240

hostile_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
env = st.dictionaries(st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=10), hostile_text,
                      max_size=3)
valid_spec = st.fixed_dictionaries({}, optional={
    "description": st.text(alphabet=string.ascii_letters + " .-", max_size=30),
    "env": st.dictionaries(st.sampled_from(["OMP_NUM_THREADS", "MY_FLAG", "A_B"]),
                           st.text(alphabet=string.printable, max_size=10), max_size=2),
    "tags": st.dictionaries(st.sampled_from(["team", "cost"]), st.text(alphabet=string.ascii_lowercase, max_size=8),
                            max_size=2),
})
hostile_spec = st.fixed_dictionaries({}, optional={
    "description": hostile_text,
    "env": env | st.just({"1BAD": "x"}) | st.just({"OK": 5}),
    "memory_limit_mb": st.integers(min_value=-5, max_value=70000) | st.just("lots"),
    "idle_shutdown_minutes": st.integers(min_value=-1, max_value=20000),
    "tags": st.dictionaries(st.text(max_size=8), hostile_text, max_size=2),
    "bogus_field": st.integers(),
})
valid_dask = st.fixed_dictionaries({}, optional={
    "min_nodes": st.integers(0, 1), "max_nodes": st.integers(1, 2), "threads_per_node": st.integers(1, 2),
    "idle_seconds_before_scaledown": st.integers(0, 300),
    "description": st.text(alphabet=string.ascii_letters + " .-", max_size=30),
})
hostile_dask = st.fixed_dictionaries({}, optional={
    "min_nodes": st.integers(-1, 300), "max_nodes": st.integers(0, 300) | st.just("two"),
    "threads_per_node": st.integers(0, 300), "memory_limit_mb": st.integers(-5, 5_000_000),
    "idle_seconds_before_scaledown": st.integers(-1, 700_000), "env": st.just({"A": "b"}),
})
dask_spec = st.integers(0, 3).flatmap(lambda i: hostile_dask if i == 0 else valid_dask)
#: Specs that are wrong whatever the state: each is refused, never a target.
certainly_bad = st.sampled_from([
    {"memory_limit_mb": "lots"}, {"memory_limit_mb": -5}, {"env": {"OK": 5}},
    {"bogus_field": 1}, {"idle_shutdown_minutes": -1},
])
#: Mostly specs the API takes, so that operations begin; hostile ones in between.
spec = st.integers(0, 3).flatmap(lambda i: hostile_spec if i == 0 else valid_spec)

RUN: dict = {"accepted": 0, "statuses": {}, "server": None, "dask_accepted": 0, "dask_statuses": [], "db": None,
             "errors": []}


def noted(fn):
    """Keep what went wrong in a step: a live server may not fail the same way when hypothesis
    replays the example, and its report then names only the replay's inconsistency."""
    @functools.wraps(fn)
    def step(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except BaseException:
            RUN["errors"].append(f"{fn.__name__} {kwargs}:\n{traceback.format_exc()}")
            raise
    return step


class Api(RuleBasedStateMachine):
    """The model: targets whose create was accepted and no delete since (``present``), and those
    whose delete was accepted but may still be listed while it runs (``leaving``)."""

    def __init__(self):
        super().__init__()
        self.server: ServerProcess = RUN["server"]
        self.present: set[str] = set()
        self.leaving: set[str] = set()
        self.began: dict[str, float] = {}

    def send(self, method: str, path: str, body=None) -> tuple[int, dict]:
        code, out = self.server.request(method, f"workspaces/local/{path}", body)
        RUN["statuses"][code] = RUN["statuses"].get(code, 0) + 1
        assert code in DOCUMENTED, (method, path, body, code, out)
        if code >= 400:
            assert isinstance(out, dict) and out.get("message"), out  # JSON, with words to act on
        on_dask = path.startswith("targets/d1") or (body or {}).get("kind") == "dask-cluster"
        if on_dask:
            RUN["dask_statuses"].append((method, path, code, out.get("message") if code >= 400 else None))
        if code == 202:
            RUN["accepted"] += 1
            RUN["dask_accepted"] += on_dask
        return code, out

    # Which rule runs, and on which name, never depends on what the server answered: hypothesis
    # replays choices, and a live server may answer the same request differently (busy or not).
    @rule(name=NAMES, fields=spec)
    @noted
    def create(self, name, fields, kind="local-kernel"):
        code, out = self.send("POST", "targets", {"name": name, "kind": kind, **fields})
        if code == 202:
            assert name not in self.present
            self.present.add(name)
            self.leaving.discard(name)
            self.began[name] = time.monotonic()
        elif code == 409:
            assert name in self.present or name in self.leaving, out

    # Creating is four rules of ten (and one more is always refused), so that most runs hold targets to act on.
    @rule(name=NAMES, fields=valid_spec)
    @noted
    def create_plain(self, name, fields):
        self.create(name, fields)

    @rule(name=NAMES)
    @noted
    def create_bare(self, name):
        self.create(name, {})

    @rule(fields=dask_spec)
    @noted
    def create_dask(self, fields):
        self.create("d1", fields, kind="dask-cluster")

    @rule(fields=certainly_bad)
    @noted
    def create_refused(self, fields):
        """A spec no target can have is refused as such, and makes nothing (the list invariant)."""
        code, out = self.send("POST", "targets", {"name": "z9", "kind": "local-kernel", **fields})
        assert code == 400, (fields, code, out)

    # Hypothesis leaves a random subset of the rules out of each example (swarm testing), so a run
    # may draw no Dask cluster and no refusal at all: every example begins with both.
    @initialize(fields=valid_dask)
    @noted
    def begin_with_a_cluster(self, fields):
        self.create("d1", fields, kind="dask-cluster")

    @initialize(fields=certainly_bad)
    @noted
    def begin_with_a_refusal(self, fields):
        self.create_refused(fields)

    def _settle(self, name: str) -> None:
        """Wait (within the bound) until ``name`` is in no operation, as a user does after a 409."""
        deadline = time.monotonic() + OPERATION_BOUND
        while time.monotonic() < deadline:
            code, t = self.server.request("GET", f"workspaces/local/targets/{name}")
            if code != 200 or t["state"] not in TRANSITIONAL:
                return
            time.sleep(0.1)
        raise AssertionError(f"{name} outlived its operation's bound")

    def _act(self, name, action):
        code, out = self.send("POST", f"targets/{name}/{action}")
        if code == 409:  # busy (its words were checked by send): a user waits, then tries again
            self._settle(name)
            code, out = self.send("POST", f"targets/{name}/{action}")
        if code == 202:
            assert name in self.present, (name, action)
            self.began[name] = time.monotonic()
        elif code == 404:
            assert name not in self.present, (name, action, out)
        else:
            assert code == 409, (code, out)  # busy: an operation runs on it

    @rule(name=ANY_NAME, action=st.sampled_from(["start", "stop", "restart"]))
    @noted
    def act(self, name, action):
        self._act(name, action)

    @rule(name=ANY_NAME, action=st.sampled_from(["start", "stop"]))
    @noted
    def act_again(self, name, action):
        self._act(name, action)

    @rule(name=ANY_NAME, fields=st.one_of(spec, dask_spec).filter(bool))
    @noted
    def update(self, name, fields):
        code, out = self.send("PATCH", f"targets/{name}", fields)
        assert code in (200, 400, 404, 409), (code, out)
        if code == 404:
            assert name not in self.present, out

    @rule(name=ANY_NAME)
    @noted
    def delete(self, name):
        code, out = self.send("DELETE", f"targets/{name}")
        if code == 202:
            assert name in self.present or name in self.leaving
            self.present.discard(name)
            self.leaving.add(name)
            self.began[name] = time.monotonic()
        elif code == 404:
            assert name not in self.present, out
        else:
            assert code == 409, (code, out)

    @rule()
    @noted
    def let_operations_end(self):
        """What a user does between clicks: wait for what runs to end (within its bound)."""
        deadline = time.monotonic() + OPERATION_BOUND
        while time.monotonic() < deadline:
            _, out = self.server.request("GET", "workspaces/local/targets")
            if not any(t["state"] in TRANSITIONAL for t in out["targets"]):
                return
            time.sleep(0.1)
        raise AssertionError(f"an operation outlived its bound: {out['targets']}")

    @invariant()
    @noted
    def the_list_is_what_was_accepted(self):
        code, out = self.server.request("GET", "workspaces/local/targets")
        assert code == 200
        listed = {t["name"]: t for t in out["targets"] if t["kind"] in ("local-kernel", "dask-cluster")}
        assert self.present <= set(listed) <= self.present | self.leaving, (self.present, self.leaving, listed)
        self.leaving &= set(listed)
        now = time.monotonic()
        for name, t in listed.items():
            if t["state"] in TRANSITIONAL:
                assert now - self.began.get(name, now) < OPERATION_BOUND, (name, t["state"])

    @invariant()
    @noted
    def the_store_is_intact(self):
        db = sqlite3.connect(f"file:{RUN['db']}?mode=ro", uri=True, timeout=30)
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            db.close()

    def teardown(self):
        assert delete_all(self.server) == []


@pytest.mark.long
def test_stateful_runs_reach_the_success_paths_and_keep_the_model(tmp_path, compute_db):
    server = ServerProcess(tmp_path).start(extra_args=("--ComputeConfig.max_concurrent_starts=2",))
    RUN.update(accepted=0, statuses={}, server=server, dask_accepted=0, dask_statuses=[], db=compute_db, errors=[])
    runs = 0
    try:
        # Runs of a few examples each, until 100 operations were accepted, 10 of them on the Dask
        # cluster, and a refusal was seen (or the budget is spent):
        # how many a run gets depends on how busy the targets were when it asked.
        end = time.monotonic() + BUDGET_SECONDS
        while (RUN["accepted"] < 100 or RUN["dask_accepted"] < 10 or not {200, 202, 400} <= set(RUN["statuses"])) \
                and time.monotonic() < end:
            runs += 1
            try:
                run_state_machine_as_test(Api, settings=settings(
                    max_examples=5, stateful_step_count=40, deadline=None, database=None, phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck)))
            except Exception as e:
                if RUN["errors"]:
                    raise AssertionError("the first step that failed: " + RUN["errors"][0]) from e
                raise
    finally:
        server.stop()
        stop_all_targets(compute_db)
    statuses = RUN["statuses"]
    assert RUN["accepted"] >= 100, (runs, RUN["accepted"], sorted(statuses.items()))
    # the Dask cluster's paths were taken too
    assert RUN["dask_accepted"] >= 10, (runs, RUN["dask_accepted"], RUN["dask_statuses"][-20:])
    assert set(statuses) <= DOCUMENTED and {200, 202, 400} <= set(statuses), statuses
    db = sqlite3.connect(compute_db)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


#: Every method of every route the API has (a method a route lacks is tornado's 405, before any check).
ROUTES = [("GET", "workspaces"), ("GET", "workspaces/local/targets"), ("POST", "workspaces/local/targets"),
          ("GET", "workspaces/local/targets/a1"), ("PATCH", "workspaces/local/targets/a1"),
          ("DELETE", "workspaces/local/targets/a1"), ("POST", "workspaces/local/targets/a1/start"),
          ("POST", "workspaces/local/targets/a1/stop"), ("GET", "workspaces/local/jobs"), ("GET", "ssh-keys"),
          ("GET", "operations/x"), ("GET", "openapi.json"), ("GET", "pythons"),
          ("GET", "kernelspecs/news")]


def test_without_the_token_everything_is_refused(tmp_path, compute_db):
    """Generated requests with every kind of wrong credential: all refused, nothing made."""
    import json
    import urllib.error
    import urllib.request

    server = ServerProcess(tmp_path).start()
    codes: list[int] = []

    @settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(route=st.sampled_from(ROUTES),
           authorization=st.sampled_from(["", "token ", "token wrong", "Bearer x", "token compute-test-tokenX",
                                          "Token  compute-test-token-"])
           # any header a client can send (the HTTP layer refuses malformed ones before this API)
           | st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " ", max_size=60)
           .map(lambda t: "token " + t),
           body=st.none() | spec.map(lambda f: {"name": "a1", "kind": "local-kernel", **f}))
    def send(route, authorization, body):
        method, path = route
        data = json.dumps(body).encode() if body is not None and method != "GET" else None
        req = urllib.request.Request(f"{server.url}/jupyter-compute/{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", "Authorization": authorization})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                codes.append(r.status)
        except urllib.error.HTTPError as e:
            codes.append(e.code)

    try:
        send()
        code, body = server.request("GET", "workspaces/local/targets")
    finally:
        server.stop()
    assert len(codes) >= 80 and set(codes) <= {401, 403} and 403 in codes, sorted(set(codes))
    assert code == 200 and [t["name"] for t in body["targets"]] == ["this-machine"]  # nothing was made
