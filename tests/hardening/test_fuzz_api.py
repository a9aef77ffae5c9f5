"""schemathesis drives the whole REST API, as /jupyter-compute/openapi.json describes it, against a
live Jupyter server: no request may get a 5xx, every answer must match its documented status,
content type and schema, and the store must be intact afterwards."""
from __future__ import annotations

import pytest

import sqlite3
import time

import psutil
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from tests.conftest import stop_all_targets
from tests.loadclient import delete_all
from tests.servers import ServerProcess

SEED = 20261123
#: Examples per operation, generation mode and workspace choice: about 3,000 requests in all.
EXAMPLES = 40
#: The run stops sending once this is spent; the minimum below still has to be reached.
BUDGET_SECONDS = 150
MINIMUM_REQUESTS = 1000
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.long
def test_generated_requests_get_documented_answers(tmp_path, compute_db):
    server = ServerProcess(tmp_path)
    server.start(extra_args=("--ComputeConfig.allowed_hosts=['127.0.0.1', 'localhost']",
                             "--ComputeConfig.max_concurrent_starts=1"))
    headers = {"Authorization": f"token {server.token}"}
    failures: dict[tuple, str] = {}
    statuses: dict[int, int] = {}
    end = time.monotonic() + BUDGET_SECONDS
    try:
        schema = schemathesis.openapi.from_url(f"{server.url}/jupyter-compute/openapi.json", headers=headers)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 15, [op.label for op in operations]
        for op in operations:
            # Free path parameters mostly meet 404s; with ws=local the requests reach the targets.
            for path_parameters in ({}, {"ws": "local"}) if "{ws}" in op.path else ({},):
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    strategy = op.as_strategy(generation_mode=mode, path_parameters=path_parameters or None)

                    @seed(SEED)
                    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                              suppress_health_check=list(HealthCheck))
                    @given(strategy)
                    def send(case):
                        if time.monotonic() > end:
                            return
                        response = case.call(base_url=server.url, headers=headers, timeout=60)
                        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                        try:
                            case.validate_response(response, checks=CHECKS)
                        except (Failure, AssertionError, FailureGroup) as e:
                            for failure in e.exceptions if isinstance(e, FailureGroup) else [e]:
                                key = (op.label, response.status_code, type(failure).__name__)
                                failures.setdefault(key, f"{case.as_curl_command()}\n{response.text[:500]}\n{failure}")

                    send()
        sent = sum(statuses.values())
        assert sent >= MINIMUM_REQUESTS, (sent, statuses)
        assert not [s for s in statuses if s >= 500], statuses
        assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())
        assert 200 in statuses and 400 in statuses and 404 in statuses, statuses
        # Whatever the generated requests created goes, through the API, as a user would remove it.
        assert delete_all(server) == []
    finally:
        server.stop()
        stop_all_targets(compute_db)
    db = sqlite3.connect(compute_db)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()
    marker = str(compute_db.parent)
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
    assert not left, f"processes of this store still run: {left}"

