"""Materialized views: per-tool statistics, histograms, execution rollups, error patterns
and feedback, checked against numbers computed independently in Python."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import pytest

from spanhouse.clickhouse import Store, history
from tests.conftest import write
from tests.otlp import request, span, span_id, trace_id

MINUTE = 60_000_000_000
BASE = 1_763_000_040_000_000_000  # a whole minute, in ns
BOUNDS_S = [0.01 * 2 ** k for k in range(14)]


def _q(store: Store, sql: str, tenant: str) -> list[tuple]:
    return store.client.query(sql, parameters={"t": tenant}).result_rows


def _tool_span(tool: str, trace: bytes, parent: bytes, start: int, duration_ns: int, failed: bool,
               style: str = "genai"):
    attributes = {
        "genai": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool},
        "openinference": {"openinference.span.kind": "TOOL", "tool.name": tool},
        "openllmetry": {"traceloop.span.kind": "tool", "traceloop.entity.name": tool},
    }[style]
    return span(f"execute_tool {tool}", trace, parent=parent, start=start, duration_ns=duration_ns,
                attributes=attributes, error="failed" if failed else None)


def test_tool_stats_match_exact_python_numbers(store: Store, tenant: str) -> None:
    rng = random.Random(7)
    tools = {"search": (0.05, 0.2), "fetch": (0.3, 0.05), "calc": (0.002, 0.0)}  # median s, failure rate
    durations: dict[str, list[int]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    requests = []
    for batch in range(4):
        spans = []
        for i in range(500):
            tool = rng.choice(list(tools))
            median, failure = tools[tool]
            d = max(1, int(rng.lognormvariate(math.log(median * 1e9), 1.0)))
            failed = rng.random() < failure
            t = trace_id()
            spans.append(_tool_span(tool, t, span_id(), BASE + rng.randrange(5 * MINUTE), d, failed))
            durations[tool].append(d)
            errors[tool] += failed
        requests.append(request(spans))
    for r in requests:  # several inserts: aggregate states must merge across them
        write(store, tenant, r)

    rows = _q(store, "SELECT ToolName, calls, errors, success_rate, p50_ms, p90_ms, p95_ms, p99_ms, max_ms "
                     "FROM v_tool_stats WHERE Tenant = {t:String}", tenant)
    assert {r[0] for r in rows} == set(tools)
    for tool, calls, errs, success_rate, *quantiles, max_ms in rows:
        ds = sorted(durations[tool])
        assert calls == len(ds)
        assert errs == errors[tool]
        assert success_rate == pytest.approx((len(ds) - errors[tool]) / len(ds), abs=1e-6)
        assert max_ms == pytest.approx(ds[-1] / 1e6, abs=1e-3)
        for level, got in zip((0.5, 0.9, 0.95, 0.99), quantiles):
            # DDSketch: within 1% of a value whose rank is at the level (documented tolerance)
            lo = ds[max(0, math.floor(level * (len(ds) - 1)) - 1)] / 1e6
            hi = ds[min(len(ds) - 1, math.ceil(level * (len(ds) - 1)) + 1)] / 1e6
            assert lo * 0.99 - 1e-3 <= got <= hi * 1.01 + 1e-3, (tool, level, got, lo, hi)

    # per-minute rows add up to the totals
    per_minute = _q(store, "SELECT ToolName, sum(calls), sum(errors) FROM v_tool_stats_1m "
                           "WHERE Tenant = {t:String} GROUP BY ToolName", tenant)
    assert {r[0]: (r[1], r[2]) for r in per_minute} == {t: (len(durations[t]), errors[t]) for t in tools}

    # histogram: GenAI bucket bounds, counts equal to an exact bucketing, and sum to calls
    hist = _q(store, "SELECT ToolName, le_seconds, sum(count) FROM v_tool_latency_histogram "
                     "WHERE Tenant = {t:String} GROUP BY ToolName, le_seconds ORDER BY ToolName, le_seconds", tenant)
    by_tool: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for tool, le, count in hist:
        by_tool[tool].append((le, count))
    for tool, ds in durations.items():
        bounds = [b for b, _ in by_tool[tool]]
        assert bounds[:-1] == pytest.approx(BOUNDS_S) and math.isinf(bounds[-1])
        expected = [0] * 15
        for d in ds:
            expected[sum(1 for b in BOUNDS_S if d > round(b * 1e9))] += 1
        assert [c for _, c in by_tool[tool]] == expected
        assert sum(expected) == len(ds)


@pytest.mark.parametrize("style", ["genai", "openinference", "openllmetry"])
def test_all_three_tool_conventions_are_tool_calls(store: Store, tenant: str, style: str) -> None:
    t = trace_id()
    write(store, tenant, request([
        _tool_span("weather", t, span_id(), BASE, 5_000_000, failed=False, style=style),
        span("not a tool", t, attributes={"gen_ai.operation.name": "chat"}),
    ]))
    assert _q(store, "SELECT ToolName, IsError FROM tool_calls WHERE Tenant = {t:String}", tenant) == [("weather", 0)]
    assert _q(store, "SELECT ToolName, calls FROM v_tool_stats WHERE Tenant = {t:String}", tenant) == [("weather", 1)]


def test_tool_name_falls_back_to_span_name(store: Store, tenant: str) -> None:
    write(store, tenant, request([span("do_thing", trace_id(), attributes={"gen_ai.operation.name": "execute_tool"})]))
    assert _q(store, "SELECT ToolName FROM tool_calls WHERE Tenant = {t:String}", tenant) == [("do_thing",)]


def test_error_type_alone_marks_a_failure(store: Store, tenant: str) -> None:
    write(store, tenant, request([span("t", trace_id(), attributes={"gen_ai.operation.name": "execute_tool",
                                                                   "error.type": "ValueError"})]))
    assert _q(store, "SELECT errors FROM v_tool_stats WHERE Tenant = {t:String}", tenant) == [(1,)]


def test_rollup_is_right_for_out_of_order_multi_insert_traces(store: Store, tenant: str) -> None:
    rng = random.Random(3)
    expected = {}
    pending = []
    for n in range(20):
        t, root = trace_id(), span_id()
        tool_spans = []
        tokens_in = tokens_out = failed = 0
        cost = 0.0
        for i in range(rng.randint(1, 12)):
            fail = rng.random() < 0.3
            failed += fail
            s = _tool_span(f"tool{i % 4}", t, root, BASE + i, 1_000_000, fail)
            tool_spans.append(s)
        llm_in, llm_out, llm_cost = rng.randint(1, 900), rng.randint(1, 300), round(rng.random(), 4)
        tokens_in, tokens_out, cost = llm_in, llm_out, llm_cost
        llm = span("chat gpt", t, parent=root, attributes={"gen_ai.operation.name": "chat",
                                                          "gen_ai.usage.input_tokens": llm_in,
                                                          "gen_ai.usage.output_tokens": llm_out,
                                                          "spanhouse.cost_usd": llm_cost})
        root_span = span("invoke_workflow flow", t, sid=root, start=BASE, duration_ns=50_000_000,
                         attributes={"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "flow"},
                         error="boom" if n % 5 == 0 else None)
        spans = [root_span, llm, *tool_spans]
        expected[t.hex()] = (len(spans), len(tool_spans), failed, tokens_in, tokens_out, cost,
                             failed + (n % 5 == 0), sorted({s.attributes[1].value.string_value for s in tool_spans}))
        pending += spans
    rng.shuffle(pending)  # spans of each trace spread over inserts, root often not first
    for i in range(0, len(pending), 17):
        write(store, tenant, request(pending[i:i + 17]))
    rows = _q(store, "SELECT TraceId, spans, tool_calls, failed_tool_calls, input_tokens, output_tokens, cost_usd, "
                     "error_spans, arraySort(tool_names) FROM v_executions WHERE Tenant = {t:String}", tenant)
    got = {r[0]: (r[1], r[2], r[3], r[4], r[5], round(r[6], 6), r[7], r[8]) for r in rows}
    assert got == {k: (*v[:5], round(v[5], 6), *v[6:]) for k, v in expected.items()}
    store.client.command("OPTIMIZE TABLE execution_rollup FINAL")
    per_trace = _q(store, "SELECT TraceId, count() FROM execution_rollup WHERE Tenant = {t:String} GROUP BY TraceId", tenant)
    assert len(per_trace) == 20 and {c for _, c in per_trace} == {1}


def test_a_cost_that_is_no_number_counts_as_zero_not_as_nan(store: Store, tenant: str) -> None:
    """A span whose cost said 'NaN' (any OTLP client can send that) made its execution's
    rollup NaN for good, and with it every cost total of the tenant; two costs near
    1e308 summed to infinity alike. Only finite costs from 0 to 1e12 USD count."""
    t = trace_id()
    costs = ["NaN", "-nan", "inf", "1e308", "1e308", "-3", "garbage", "0.25", 0.5]
    spans = [span("root", t, sid=(root := span_id()), start=BASE)] + [
        span(f"llm{i}", t, parent=root, start=BASE + i, attributes={"spanhouse.cost_usd": c})
        for i, c in enumerate(costs)]
    write(store, tenant, request(spans))
    rows = _q(store, "SELECT cost_usd FROM v_executions WHERE Tenant = {t:String}", tenant)
    assert rows == [(0.75,)]


def test_spans_are_read_as_the_conventions_say(store: Store, tenant: str) -> None:
    """Four misreadings a review found against what instrumentations send:
    - status OK is final (the OTel API: analysis tools suppress errors on it, e.g. a
      handled 404), but error.type on such a span counted as a failure;
    - a span that handled an exception (an exception event, status unset) did not fail,
      yet its execution and tool call took the exception as their error message;
    - OpenLLMetry's token names (gen_ai.usage.prompt_tokens/completion_tokens, the
      GenAI conventions' up to 1.26) were read as 0;
    - an execute_tool span without gen_ai.tool.name, named `execute_tool {tool}` as
      the conventions name it, was counted under its whole span name."""
    ok, handled = 1, 0  # Status codes: OK, UNSET
    t, root = trace_id(), span_id()
    exception = [(BASE, "exception", {"exception.type": "KeyError", "exception.message": "retried"})]
    write(store, tenant, request([
        span("invoke_agent a", t, sid=root, start=BASE, status_code=handled, events=exception),
        span("execute_tool lookup", t, parent=root, start=BASE + 1, status_code=ok,
             attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup", "error.type": "404"}),
        span("execute_tool search", t, parent=root, start=BASE + 2, status_code=handled, events=exception,
             attributes={"gen_ai.operation.name": "execute_tool"}),
        span("openai.chat", t, parent=root, start=BASE + 3,
             attributes={"gen_ai.usage.prompt_tokens": 120, "gen_ai.usage.completion_tokens": 45}),
    ]))
    assert _q(store, "SELECT Status, StatusMessage, ErrorType FROM executions WHERE Tenant = {t:String}",
              tenant) == [("ok", "", "")]
    assert _q(store, "SELECT ToolName, IsError, ErrorType, ErrorMessage FROM tool_calls WHERE Tenant = {t:String} "
                     "ORDER BY Timestamp", tenant) == [("lookup", 0, "", ""), ("search", 0, "", "")]
    assert _q(store, "SELECT ErrorSpans, FailedToolCalls, InputTokens, OutputTokens FROM execution_rollup "
                     "WHERE Tenant = {t:String}", tenant) == [(0, 0, 120, 45)]
    assert _q(store, "SELECT count() FROM error_patterns WHERE Tenant = {t:String}", tenant) == [(0,)]
    detail = history.get_execution(store.client, tenant, t.hex())
    assert detail is not None
    tools = [(n["status"], n["tool"]) for n in detail["spans_tree"][0]["children"] if "tool" in n]
    assert [(status, tool["name"], tool["error_type"]) for status, tool in tools] == [
        ("ok", "lookup", None), ("ok", "search", None)]


def test_execution_row_from_root_span_and_running_marker(store: Store, tenant: str) -> None:
    t, root = trace_id(), span_id()
    marker = span("invoke_agent helper", t, sid=span_id(), start=BASE, duration_ns=0,
                  attributes={"spanhouse.execution.state": "running", "gen_ai.agent.name": "helper",
                              "gen_ai.operation.name": "invoke_agent"})
    write(store, tenant, request([marker]))
    assert _q(store, "SELECT Name, Type, Status FROM v_executions WHERE Tenant = {t:String}", tenant) == [
        ("helper", "invoke_agent", "running")]
    assert _q(store, "SELECT spans FROM v_executions WHERE Tenant = {t:String}", tenant) == [(0,)]
    final = span("invoke_agent helper", t, sid=root, start=BASE, duration_ns=2_500_000_000,
                 attributes={"gen_ai.agent.name": "helper", "gen_ai.operation.name": "invoke_agent",
                             "input.value": "hi", "output.value": "bye", "user.id": "u7",
                             "gen_ai.conversation.id": "c9"}, error="kaput")
    write(store, tenant, request([final]))
    assert _q(store, "SELECT Name, Status, StatusMessage, duration_ms, UserId, SessionId, Input, Output, spans "
                     "FROM v_executions WHERE Tenant = {t:String}", tenant) == [
        ("helper", "error", "kaput", 2500.0, "u7", "c9", "hi", "bye", 1)]


def test_error_patterns_group_messages_that_differ_in_ids(store: Store, tenant: str) -> None:
    t = trace_id()
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "db"}
    write(store, tenant, request([
        span("q", t, attributes=tool, error="row 123 not found in table 'users'"),
        span("q", t, attributes=tool, error="row 98765 not found in table 'orders'"),
        span("q", t, attributes={**tool, "error.type": "TimeoutError"}, error="timed out after 30s"),
        span("q", t, attributes={**tool, "error.type": "TimeoutError"}, error="timed out after 31s"),
        span("plain", t, error="id 5f1d3c2a-0b7e-4c1d-9f00-123456789abc missing"),
    ]))
    rows = _q(store, "SELECT ToolName, IsTool, Pattern, count FROM v_error_patterns WHERE Tenant = {t:String} "
                     "ORDER BY Pattern", tenant)
    assert rows == [("db", 1, "TimeoutError", 2), ("plain", 0, "id <uuid> missing", 1),
                    ("db", 1, "row <n> not found in table <str>", 2)]


def test_feedback_spans_land_in_feedback(store: Store, tenant: str) -> None:
    target = trace_id()
    write(store, tenant, request([
        span("spanhouse.feedback", trace_id(), links=[(target, span_id(), "", {})],
             attributes={"spanhouse.feedback.value": 5, "spanhouse.feedback.comment": "great", "user.id": "u1"}),
        span("spanhouse.feedback", trace_id(),
             attributes={"spanhouse.feedback.execution_id": target.hex().upper(), "spanhouse.feedback.name": "accuracy",
                         "spanhouse.feedback.value": 0.75}),
    ]))
    rows = _q(store, "SELECT TraceId, Name, Value, Comment, UserId, Source FROM feedback WHERE Tenant = {t:String} "
                     "ORDER BY Name", tenant)
    assert rows == [(target.hex(), "accuracy", 0.75, "", "", "otlp"), (target.hex(), "user_rating", 5.0, "great", "u1", "otlp")]
    assert _q(store, "SELECT count() FROM executions WHERE Tenant = {t:String}", tenant) == [(0,)]


def test_feedback_without_a_finite_value_has_none(store: Store, tenant: str) -> None:
    """A comment alone, or a value that is no finite number, is no 0 rating: it is
    stored without a value, which averages skip."""
    target = trace_id()
    values: list[object] = [None, "great!", "nan", "inf", "4", 2]
    write(store, tenant, request([
        span("spanhouse.feedback", trace_id(), attributes={
            "spanhouse.feedback.execution_id": target.hex(), "spanhouse.feedback.comment": f"c{i}",
            **({} if v is None else {"spanhouse.feedback.value": v})})
        for i, v in enumerate(values)]))
    rows = _q(store, "SELECT Comment, Value FROM feedback WHERE Tenant = {t:String} ORDER BY Comment", tenant)
    assert rows == [("c0", None), ("c1", None), ("c2", None), ("c3", None), ("c4", 4.0), ("c5", 2.0)]
    assert _q(store, "SELECT count(), count(Value), avg(Value) FROM feedback WHERE Tenant = {t:String}",
              tenant) == [(6, 2, 3.0)]


def test_trace_lookup_table_has_one_row_per_trace_after_merges(store: Store, tenant: str) -> None:
    t = trace_id()
    for i in range(3):
        write(store, tenant, request([span(f"s{i}", t, start=BASE + i * MINUTE, duration_ns=10)]))
    store.client.command("OPTIMIZE TABLE otel_traces_trace_id_ts FINAL")
    rows = _q(store, "SELECT TraceId, toUnixTimestamp(Start), toUnixTimestamp(End) FROM otel_traces_trace_id_ts "
                     "WHERE Tenant = {t:String}", tenant)
    assert rows == [(t.hex(), BASE // 10 ** 9, (BASE + 2 * MINUTE) // 10 ** 9)]


def test_grafana_trace_by_id_query_runs_on_our_tables(store: Store, tenant: str) -> None:
    """The Grafana ClickHouse plugin's OTel trace-by-id SQL (verbatim shape, default db)."""
    t = trace_id()
    root = span_id()
    write(store, tenant, request([span("root", t, sid=root), span("child", t, parent=root, error="x")]))
    sql = (f"WITH '{t.hex()}' as __gf_trace_id, (SELECT min(Start) FROM \"default\".\"otel_traces_trace_id_ts\" "
           "WHERE TraceId = __gf_trace_id) as __gf_trace_start, (SELECT max(End) + 1 FROM "
           "\"default\".\"otel_traces_trace_id_ts\" WHERE TraceId = __gf_trace_id) as __gf_trace_end "
           "SELECT \"TraceId\" as traceID, \"SpanId\" as spanID, \"ParentSpanId\" as parentSpanID, \"ServiceName\" as "
           "serviceName, \"SpanName\" as operationName, multiply(toUnixTimestamp64Nano(\"Timestamp\"), 0.000001) as "
           "startTime, multiply(\"Duration\", 0.000001) as duration, arrayMap(key -> map('key', key, 'value',"
           "\"SpanAttributes\"[key]), mapKeys(\"SpanAttributes\")) as tags, arrayMap(key -> map('key', key, 'value',"
           "\"ResourceAttributes\"[key]), mapKeys(\"ResourceAttributes\")) as serviceTags, if(\"StatusCode\" IN "
           "('Error', 'STATUS_CODE_ERROR'), 2, 0) as statusCode FROM \"default\".\"otel_traces\" WHERE traceID = "
           "__gf_trace_id AND \"Timestamp\" >= __gf_trace_start AND \"Timestamp\" <= __gf_trace_end")
    rows = store.client.query(sql).result_rows
    assert sorted((r[4], r[9]) for r in rows) == [("child", 2), ("root", 0)]


def test_tenants_never_see_each_others_rows(store: Store, tenant: str) -> None:
    other = f"{tenant}-other"
    t = trace_id()
    spans = [_tool_span("shared", t, span_id(), BASE, 1_000_000, failed=True)]
    write(store, tenant, request(spans))
    write(store, other, request([_tool_span("shared", trace_id(), span_id(), BASE, 1_000_000, failed=False)]))
    for view, col in [("v_tool_stats", "errors"), ("v_tool_stats_1m", "errors"), ("tool_calls", "IsError"),
                      ("v_error_patterns", "count")]:
        mine = _q(store, f"SELECT {col} FROM {view} WHERE Tenant = {{t:String}}", tenant)
        theirs = _q(store, f"SELECT {col} FROM {view} WHERE Tenant = {{t:String}}", other)
        assert mine == [(1,)], view
        assert theirs == ([] if view == "v_error_patterns" else [(0,)]), view
