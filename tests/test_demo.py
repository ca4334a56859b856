"""``spanhouse demo`` fills a running collector with realistic, varied traffic."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spanhouse.clickhouse import Store
from spanhouse.collector import cli
from tests.collector_harness import running_collector


def _demo(store: Store, tmp_path: Path, tenant: str, executions: int) -> None:
    """``spanhouse demo`` over two hours into a collector on ``store``, all of it stored."""
    with running_collector(store, tmp_path, tenant) as c:
        code = cli.main(["demo", "--endpoint", f"http://{c.grpc_target}", "--api-key", c.key,
                         "--executions", str(executions), "--hours", "2"])
        assert code == 0
        c.wait_drained()


def test_demo_traffic_fills_every_view(store: Store, tmp_path: Path) -> None:
    tenant = "demo-traffic"
    _demo(store, tmp_path, tenant, 60)

    def one(sql: str) -> tuple:
        return store.client.query(sql, parameters={"t": tenant}).result_rows[0]

    executions, running, services, users = one(
        "SELECT count(), countIf(Status = 'running'), uniqExact(ServiceName), uniqExact(UserId) "
        "FROM executions FINAL WHERE Tenant = {t:String}")
    assert executions == 60 and running == 3 and services == 3 and users > 5
    tools, errors, tokens, cost = one(
        "SELECT uniqExact(ToolName), sum(IsError), (SELECT sum(InputTokens) FROM execution_rollup WHERE "
        "Tenant = {t:String}), (SELECT sum(CostUsd) FROM execution_rollup WHERE Tenant = {t:String}) "
        "FROM tool_calls WHERE Tenant = {t:String}")
    assert tools == 9 and errors > 0 and tokens > 0 and cost > 0
    assert one("SELECT count() FROM feedback WHERE Tenant = {t:String}")[0] > 0
    span_hours = one("SELECT dateDiff('minute', min(Timestamp), max(Timestamp)) FROM otel_traces "
                     "WHERE Tenant = {t:String}")[0]
    assert 60 <= span_hours <= 130  # spread over the simulated two hours


def test_demo_refused_by_the_collector_fails_and_says_why(store: Store, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Without the key a collector with API keys needs, every batch was refused (logged)
    and the demo still said 'sent 5 executions' and exited 0."""
    with running_collector(store, tmp_path, "demo-refused") as c:
        code = cli.main(["demo", "--endpoint", f"http://{c.grpc_target}", "--executions", "5", "--hours", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "did not accept" in err and "--api-key" in err and "sent 5 executions" not in err


def test_a_larger_demo_delivers_every_span(store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo makes spans far faster than a batch processor's queue drains: ~4% of the
    SDK-configured service's spans were dropped ('Queue full') while it said it sent
    everything."""
    tenant = "demo-every-span"
    _demo(store, tmp_path, tenant, 2000)
    said = re.search(r"sent 2000 executions \((\d+) spans\)", capsys.readouterr().err)
    assert said is not None
    stored = store.client.command("SELECT count() FROM otel_traces WHERE Tenant = {t:String} "
                                  "AND SpanAttributes['spanhouse.execution.state'] != 'running'", parameters={"t": tenant})
    assert stored == int(said.group(1)) > 3000
