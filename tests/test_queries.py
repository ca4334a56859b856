"""The named queries: every file renders (parts included, filters placed) into SQL the
engine parses, and an unknown filter is refused by name."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import pytest

from spanhouse.clickhouse import Store, analytics, history, queries, sqlfiles
from tests.conftest import write
from tests.otlp import request, span, span_id, trace_id

DAY_NS = 86_400 * 10**9

NAMES = [n.removesuffix(".sql") for n in sqlfiles.list_dir("queries") if n.endswith(".sql")]


@pytest.mark.parametrize("name", NAMES)
def test_every_query_renders_to_sql_the_engine_parses(store: Store, name: str) -> None:
    sql = queries.render(name, "executions" if "{{filters}}" in sqlfiles.query(name) else None)
    assert "{{" not in sql, sql
    for statement in sqlfiles.split_statements(sql):  # delete_traces holds several
        assert store.client.command("SELECT formatQuery({q:String})", parameters={"q": statement})


def test_shared_column_lists_are_included_once_per_place() -> None:
    page, new = queries.render("executions_page", "executions"), queries.render("executions_new")
    for sql in (page, new):
        assert sql.count("e.TraceId AS trace_id") == 1 and "    e.DurationNs / 1e6 AS duration_ms" in sql
    assert "e.ErrorType AS error_type" in page and "e.ErrorType" not in new


def test_an_unknown_filter_is_refused_by_name() -> None:
    with pytest.raises(KeyError, match="no filter \\['nope'\\]"):
        queries.render("executions_page", "executions", ["nope"])


def test_a_token_heavy_trace_spanning_days_does_not_make_a_set_of_its_seconds(store: Store, tenant: str) -> None:
    """The token tip narrows its span lookup to the seconds the sampled traces cover, but
    only up to MAX_LOOKUP_SECONDS: a trace claiming to last days (or years) must not make
    a Python set of every second first."""
    now = time.time_ns()
    t, root = trace_id(), span_id()
    write(store, tenant, request([
        span("invoke_agent planner", t, sid=root, start=now - 3 * DAY_NS, duration_ns=2 * DAY_NS,
             attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}),
        span("chat big", t, parent=root, start=now - 3 * DAY_NS, duration_ns=2 * DAY_NS,
             attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 5000,
                         "gen_ai.usage.output_tokens": 10})]))
    tracemalloc.start()
    try:
        result = analytics.performance(store.client, tenant, days=7)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [t["span_name"] for t in result["tips"] if t["kind"] == "token_heavy"] == ["chat big"]
    assert peak < 4 << 20  # the 172,800 seconds of two days as a set and a list took ~12 MB


def test_error_patterns_end_with_the_window_not_the_day_after_it(store: Store, tenant: str) -> None:
    """A window ending at midnight (any call in the day's last hour) must not take the next
    day's failures: error_patterns counts per day, and the window's last day is the one
    holding its last second, not the one holding its (exclusive) end."""
    midnight = (1_763_500_000 // 86_400 + 1) * 86_400
    now = midnight - 1_800  # 23:30 UTC: the window ends at midnight

    def failing(start_s: int, message: str) -> list:
        t, root = trace_id(), span_id()
        return [span("invoke_agent a", t, sid=root, start=start_s * 10**9),
                span("execute_tool api", t, parent=root, start=start_s * 10**9, error=message,
                     attributes={"gen_ai.operation.name": "execute_tool"})]

    write(store, tenant, request([*failing(now - 600, "in the window"), *failing(midnight + 15 * 3_600, "later")]))
    patterns = analytics.performance(store.client, tenant, days=1, now=now)["error_patterns"]
    assert [p["pattern"] for p in patterns] == ["in the window"]


def test_the_feedback_average_of_values_near_the_float_maximum_is_a_number(store: Store, tenant: str) -> None:
    """Any finite value is taken, but avg() sums first: two ratings of 1e308 summed to
    infinity and the stats said average null beside min and max of 1e308."""
    now = time.time_ns()
    t = trace_id()
    scores = [span("spanhouse.feedback", trace_id(), start=now - 10**9,
                   attributes={"spanhouse.feedback.execution_id": t.hex(), "spanhouse.feedback.name": name,
                               "spanhouse.feedback.value": value})
              for name, value in (("big", 1e308), ("big", 1e308), ("big", 1.5e308), ("small", 2.0), ("small", 3.0))]
    write(store, tenant, request([span("invoke_agent rated", t, start=now - 2 * 10**9), *scores]))
    got = {f["name"]: f for f in analytics.stats(store.client, tenant, days=1)["feedback"]}
    assert got["big"]["average"] == pytest.approx(1e308 / 3 * 3.5) and got["small"]["average"] == 2.5


def test_an_agent_span_carrying_its_calls_usage_is_not_counted_twice(store: Store, tenant: str) -> None:
    """The GenAI conventions allow usage on invoke_agent as the total of the model calls
    under it (pydantic-ai records it so): the execution's tokens and cost came out twice,
    and the agent span was a token-heavy tip beside its own calls. An execution whose
    only usage is on its agent span (record_usage inside @agent) keeps that usage."""
    now = time.time_ns()
    totals, alone, priced = trace_id(), trace_id(), trace_id()
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather"}

    def usage(i: int, o: int, cost: float) -> dict[str, object]:
        return {"gen_ai.usage.input_tokens": i, "gen_ai.usage.output_tokens": o, "spanhouse.cost_usd": cost}

    write(store, tenant, request([
        span("invoke_agent weather", totals, sid=(root := span_id()), start=now - 10**9,
             attributes={**agent, **usage(300, 30, 0.3)}),
        span("chat gpt-4o", totals, parent=root, start=now - 10**9, attributes=usage(100, 10, 0.1)),
        span("chat gpt-4o", totals, parent=root, start=now - 10**9, attributes=usage(200, 20, 0.2)),
        span("invoke_agent weather", alone, start=now - 10**9, attributes={**agent, **usage(50, 5, 0.05)}),
        # calls with tokens but no cost (OpenLLMetry's), the cost on the agent: each figure is picked on its own
        span("invoke_agent weather", priced, sid=(top := span_id()), start=now - 10**9,
             attributes={**agent, **usage(7, 1, 0.02)}),
        span("chat gpt-4o", priced, parent=top, start=now - 10**9,
             attributes={"gen_ai.usage.prompt_tokens": 7, "gen_ai.usage.completion_tokens": 1}),
    ]))
    listed = {e["trace_id"]: (e["input_tokens"], e["output_tokens"], e["cost_usd"])
              for e in history.list_executions(store.client, tenant, {}).items}
    assert listed == {totals.hex(): (300, 30, 0.3), alone.hex(): (50, 5, 0.05), priced.hex(): (7, 1, 0.02)}
    got = analytics.stats(store.client, tenant, days=1)
    assert (got["tokens"]["input"], got["tokens"]["output"], got["cost_usd"]) == (357, 36, pytest.approx(0.37))
    # a rollup row from before 0018 holds an agent span's usage as its calls': the tips read spans
    store.client.command("ALTER TABLE execution_rollup UPDATE InputTokens = AgentInputTokens, OutputTokens = "
                         "AgentOutputTokens, AgentInputTokens = 0, AgentOutputTokens = 0 WHERE TraceId = {t:String} "
                         "SETTINGS mutations_sync = 2", parameters={"t": alone.hex()})
    tips = {t["span_name"]: t["tokens"] for t in analytics.performance(store.client, tenant, days=1)["tips"]
            if t["kind"] == "token_heavy"}
    assert tips == {"chat gpt-4o": 338, "invoke_agent weather": 55}
    view = store.client.query("SELECT TraceId, input_tokens, cost_usd FROM v_executions WHERE Tenant = {t:String} "
                              "ORDER BY input_tokens", parameters={"t": tenant}).result_rows
    assert [(r[0], r[1], round(r[2], 6)) for r in view] == [
        (priced.hex(), 7, 0.02), (alone.hex(), 50, 0.05), (totals.hex(), 300, 0.3)]


def test_the_token_sample_holds_each_execution_once_whatever_its_inserts(store: Store, tenant: str) -> None:
    """The candidates were the rollup's rows, one per insert: an execution whose agent span
    and calls arrived in two inserts took two of the sample's places, and a third
    execution's tokens were left out of the tip's shares."""
    now = time.time_ns()
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather"}
    split, others = trace_id(), [(trace_id(), 50, 5), (trace_id(), 40, 4)]
    tokens = {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10}
    write(store, tenant, request([span("invoke_agent weather", split, sid=(root := span_id()), start=now - 10**9,
                                       attributes={**agent, **tokens})]))
    write(store, tenant, request([span("chat gpt-4o", split, parent=root, start=now - 10**9, attributes=tokens)]))
    write(store, tenant, request([span("invoke_agent weather", t, start=now - 10**9,
                                       attributes={**agent, "gen_ai.usage.input_tokens": i,
                                                   "gen_ai.usage.output_tokens": o}) for t, i, o in others]))
    tips = [t for t in analytics.performance(store.client, tenant, days=1)["tips"] if t["kind"] == "token_heavy"]
    assert {t["sampled_executions"] for t in tips} == {3} and {t["sampled_tokens"] for t in tips} == {209}


@pytest.mark.parametrize("shape", ["agent spans only", "calls only", "agent total beside its calls",
                                   "agent total in a later insert", "some executions each way"])
def test_the_windows_usage_is_the_per_trace_rule_whatever_path_computes_it(store: Store, tenant: str,
                                                                           shape: str) -> None:
    """Stats group each trace of the window (70 ms on 1M executions) only where its rows
    hold both kinds of usage; where none carries calls' usage, or none carries agent usage
    without calls' beside it, the sums are every execution's figure. Each shape, with
    executions stored in several inserts, against the grouped query and the rule by hand."""
    now = time.time_ns()
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"}

    def usage(i: int, o: int, cost: float) -> dict[str, object]:
        return {"gen_ai.usage.input_tokens": i, "gen_ai.usage.output_tokens": o, "spanhouse.cost_usd": cost}

    inserts: list[list] = [[], []]
    expected = (0, 0, 0.0)
    for k in range(3):
        t, root = trace_id(), span_id()
        # the agent's own figure differs from its calls' sum (30, 3, 0.3): which one counted shows
        top = span("invoke_agent a", t, sid=root, start=now - 10**9, attributes={**agent, **usage(31, 4, 0.31)})
        calls = [span("chat m", t, parent=root, start=now - 10**9, attributes=usage(10, 1, 0.1)) for _ in range(3)]
        if shape == "agent spans only":  # a nested agent's usage in a later insert too
            inner = span("invoke_agent b", t, parent=root, start=now - 10**9, attributes={**agent, **usage(5, 1, 0.05)})
            inserts[0].append(top)
            inserts[1].append(inner)
            expected = (expected[0] + 36, expected[1] + 5, expected[2] + 0.36)
        elif shape == "calls only":
            inserts[0] += [span("invoke_agent a", t, sid=root, start=now - 10**9, attributes=agent), *calls[:2]]
            inserts[1].append(calls[2])
            expected = (expected[0] + 30, expected[1] + 3, expected[2] + 0.3)
        elif shape == "agent total beside its calls":
            inserts[k % 2] += [top, *calls]
            expected = (expected[0] + 30, expected[1] + 3, expected[2] + 0.3)
        elif shape == "agent total in a later insert":  # the calls end (and are exported) before their agent span
            inserts[0] += calls
            inserts[1].append(top)
            expected = (expected[0] + 30, expected[1] + 3, expected[2] + 0.3)
        elif k == 0:  # some executions each way: this one's usage on its agent span alone
            inserts[0].append(top)
            expected = (expected[0] + 31, expected[1] + 4, expected[2] + 0.31)
        else:  # the others' on their calls alone
            inserts[1] += [span("invoke_agent a", t, sid=root, start=now - 10**9, attributes=agent), *calls]
            expected = (expected[0] + 30, expected[1] + 3, expected[2] + 0.3)
    for spans in inserts:
        if spans:
            write(store, tenant, request(spans))
    got = analytics.stats(store.client, tenant, days=1)
    w = analytics.window(1)
    (grouped,) = queries.rows(store.client, "analytics_usage_by_trace", {"tenant": tenant, **w.params()},
                              analytics.ANALYTICS, [])
    figures = (got["tokens"]["input"], got["tokens"]["output"], got["cost_usd"])
    assert figures == (grouped["input_tokens"], grouped["output_tokens"], pytest.approx(grouped["cost_usd"]))
    assert figures == (expected[0], expected[1], pytest.approx(expected[2]))


def _tool_call(name: str, start: int, duration_ns: int) -> object:
    return span(f"execute_tool {name}", trace_id(), start=start, duration_ns=duration_ns,
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name})


def test_a_zero_latency_baseline_is_no_billion_sigma_anomaly_and_unscored_tools_are_not_counted(
        store: Store, tenant: str) -> None:
    """The latency floor was 1% of the baseline: calls as short as the clock's step (0 ns)
    for hours, then 1 ms calls, scored 995,000,000 sigma. tools_scored counted every tool
    with a bucket, scored or not (one bucket is no baseline)."""
    hour = 3600 * 10**9
    start = (time.time_ns() // hour - 9) * hour
    calls = [_tool_call("cached", start + h * hour + i * 10**9, 0 if h < 7 else 1_000_000)
             for h in range(8) for i in range(6)]
    calls += [_tool_call("lonely", start + 2 * hour + i * 10**9, 5_000_000) for i in range(6)]
    write(store, tenant, request(calls))
    for method in ("zscore", "ewma"):
        got = analytics.anomalies(store.client, tenant, days=1, method=method)
        assert got["anomalies"] == [] and got["tools_scored"] == 1, got


def test_the_token_tip_counts_the_spans_that_used_tokens(store: Store, tenant: str) -> None:
    """Its spans and executions counted every span of the name in the sampled
    executions, agent spans whose usage is their calls' (counted at the calls) among
    them: '800 tokens in 2 spans' for one span in one execution."""
    now = time.time_ns() - 3600 * 10**9
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "x"}
    used, summed = trace_id(), trace_id()
    spans = [span("invoke_agent x", used, start=now, attributes={**agent, "gen_ai.usage.input_tokens": 800})]
    root = span_id()
    spans += [span("invoke_agent x", summed, sid=root, start=now, attributes={**agent, "gen_ai.usage.input_tokens": 300}),
              span("chat m", summed, parent=root, start=now, attributes={
                  "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 300})]
    write(store, tenant, request(spans))
    tips = {t["span_name"]: t for t in analytics.performance(store.client, tenant, days=1)["tips"]
            if t["kind"] == "token_heavy"}
    assert (tips["invoke_agent x"]["tokens"], tips["invoke_agent x"]["spans"], tips["invoke_agent x"]["executions"]) \
        == (800, 1, 1)
    assert (tips["chat m"]["spans"], tips["chat m"]["executions"]) == (1, 1)


def test_one_slow_call_among_few_shows_in_the_percentiles_and_the_anomalies(store: Store, tenant: str) -> None:
    """The rollups' DDSketch answers the lower of the two ranks around a quantile: one
    30 s call among ten of 100 ms left p99 at 100 ms, and a 4 s call in an hour of six
    (a 40x spike) moved no hour's p95, so no anomaly was found."""
    hour = 3600 * 10**9
    start = (time.time_ns() // hour - 9) * hour
    calls = [_tool_call("fetch", start + i * 10**9, 30 * 10**9 if i == 0 else 100_000_000) for i in range(10)]
    calls += [_tool_call("lookup", start + h * hour + i * 10**9, 4 * 10**9 if (h, i) == (4, 0) else 100_000_000)
              for h in range(8) for i in range(6)]
    write(store, tenant, request(calls))
    fetch = next(t for t in analytics.tools(store.client, tenant, days=1)["tools"] if t["tool"] == "fetch")
    assert (fetch["p50_ms"], fetch["p95_ms"], fetch["p99_ms"]) == (100.0, 16545.0, 27309.0)  # linear, as executions'
    found = analytics.anomalies(store.client, tenant, days=1)["anomalies"]
    assert [(a["tool"], a["value"]) for a in found] == [("lookup", 3025.0)]  # 100 + 0.75 * 3900


def test_a_tool_on_both_sides_of_the_exact_threshold_compares_like_with_like(
        store: Store, tenant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each window chose exact or sketch percentiles by its own count: a tool whose every
    call took 1 s, with 10,000 calls now and 9,999 before, showed a p95 'change' of 7 ms
    (a sketch's estimate against the exact value); putting both windows on the sketch
    hid a 30 s call among ten again; comparing the sketches while showing the exact
    figure called a 16 s rise no change; deciding by both windows' counts made
    performance() (which reads no previous window) quote another p95 than tools(). The
    window's own count decides; its previous window follows it (exact up to
    EXACT_BESIDE calls; past it the change compares the two sketches)."""
    now = time.time()
    w = analytics.window(1, now)
    calls = [_tool_call("flat", int((w.since + 60 + i * 0.5) * 10**9), 10**9) for i in range(analytics.EXACT_BELOW)]
    calls += [_tool_call("flat", int((w.prev_since + 60 + i * 0.5) * 10**9), 10**9)
              for i in range(analytics.EXACT_BELOW - 1)]
    calls += [_tool_call("spiky", int((w.since + 60 + i) * 10**9), (30_000 if i == 0 else 100) * 10**6)
              for i in range(10)]
    calls += [_tool_call("spiky", int((w.prev_since + 60 + i * 0.5) * 10**9), 100 * 10**6)
              for i in range(analytics.EXACT_BELOW)]
    for i in range(0, len(calls), 5000):
        write(store, tenant, request(calls[i:i + 5000]))

    def tools() -> dict[str, dict[str, Any]]:
        return {t["tool"]: t for t in analytics.tools(store.client, tenant, 1, now=now)["tools"]}

    flat, spiky = tools()["flat"], tools()["spiky"]
    assert flat["p95_ms"] == flat["trend"]["previous_p95_ms"] and flat["trend"]["p95_change_ms"] == 0  # sketches
    assert (spiky["p95_ms"], spiky["p99_ms"]) == (16545.0, 27309.0)
    assert (spiky["trend"]["previous_p95_ms"], spiky["trend"]["p95_change_ms"]) == (100.0, 16445.0)  # both exact
    tips = {t["tool"]: t["p95_ms"] for t in analytics.performance(store.client, tenant, 1, now=now)["tips"]
            if t["kind"] == "slow_tool"}
    assert tips == {"flat": flat["p95_ms"], "spiky": 16545.0}  # the same figures as the leaderboard's
    monkeypatch.setattr(analytics, "EXACT_BESIDE", analytics.EXACT_BELOW)  # past it, the previous window is sketched
    spiky = tools()["spiky"]
    assert spiky["p95_ms"] == 16545.0 and spiky["trend"]["p95_change_ms"] == 0  # the change: sketch against sketch
