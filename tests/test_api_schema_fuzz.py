"""Property-based fuzzing of the query API against its own OpenAPI document
(schemathesis): whatever the parameters, the API answers without a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from spanhouse.clickhouse import Store
from tests.collector_harness import Running, running_collector
from tests.conftest import write
from tests.otlp import request, span, trace_id


@pytest.fixture(scope="module")
def api(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tenant = "schema-fuzz"
    write(store, tenant, request([span("execute_tool search", trace_id(), attributes={
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}, error="boom")]))
    with running_collector(store, Path(tmp_path_factory.mktemp("fuzz")), tenant, scopes="read") as c:
        yield c


def test_no_5xx_for_any_generated_request(api: Running) -> None:
    schema = schemathesis.openapi.from_url(api.api_url + "/openapi.json")
    failures: list[str] = []
    for operation in schema.get_all_operations():
        op = operation.ok()
        if op.path.endswith("/stream"):
            continue  # an endless event stream: covered by its own test
        strategy = op.as_strategy()

        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=api.api_url, headers=api.headers(), timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}")

        check()
    assert not failures, failures[:5]
