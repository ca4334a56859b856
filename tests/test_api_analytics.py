"""The analytics API (/api/v1/stats, /performance, /tools, /tools/{name}, /anomalies)
against data sent through a running collector (tenant A over OTLP/HTTP, tenant B over
OTLP/gRPC), every number checked against a Python model of what was sent.

Times are whole hours before the start of the current hour (`_at`): a window of `days`
holds hour k iff k < days * 24, and the model's hours stay clear of every boundary the
tests use (so an hour turning over mid-run changes nothing). The data touches few days:
each is a partition of the shared store, and every later lightweight DELETE visits each
part."""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from spanhouse.clickhouse import Store, analytics
from spanhouse.collector.auth import add_key
from tests.collector_harness import Running, grpc_export, in_child, running_collector
from tests.otlp import request, span, span_id, trace_id

HOUR = 3600
BASE_HOUR = int(time.time()) // HOUR * HOUR  # start of the current hour when the module loads
TESTED_DAYS = (1, 7, 30, 365)
EDGES = {h for d in TESTED_DAYS for h in (d * 24 - 1, d * 24, 2 * d * 24 - 1, 2 * d * 24)}
"""Hours at the edge of a tested window (or of the window before it): the model avoids them."""
ALPHA = 0.3


def _at(hours_ago: int, second: int = 0) -> int:
    """ns: `second`s past ten minutes into the hour `hours_ago` hours before the current one."""
    return (BASE_HOUR - hours_ago * HOUR + 600 + second) * 10**9


def _in(hours_ago: int, days: int, prev: bool = False) -> bool:
    return days * 24 <= hours_ago < 2 * days * 24 if prev else hours_ago < days * 24


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns // 10**9, timezone.utc).isoformat()


# --------------------------------------------------------------------------------- model


@dataclass
class Call:
    tool: str
    duration_ms: float
    error: tuple[str, str] | None = None  # (error.type or "", status message)
    offset_s: int = 0  # after its execution's start
    sid: bytes = field(default_factory=span_id)


@dataclass
class Exe:
    name: str
    type: str
    hours_ago: int
    duration_s: float
    status: str = "ok"  # ok | error | running
    calls: list[Call] = field(default_factory=list)
    llm: list[tuple[str, int, int, float]] = field(default_factory=list)  # span name, in, out, cost
    feedback: list[tuple[str, float]] = field(default_factory=list)
    second: int = 0
    error_message: str = "failed after 3 retries"
    marker_first: bool = False  # send a running marker first, then the finished root
    trace: bytes = field(default_factory=trace_id)

    @property
    def start(self) -> int:
        return _at(self.hours_ago, self.second)

    def call_start(self, c: Call) -> int:
        return self.start + c.offset_s * 10**9

    @property
    def tokens(self) -> int:
        return sum(i + o for _, i, o, _ in self.llm)


def _calls(tool: str, durations_ms: list[float], errors: dict[int, tuple[str, str]] | None = None,
           first_offset: int = 1) -> list[Call]:
    return [Call(tool, d, (errors or {}).get(i), first_offset + i) for i, d in enumerate(durations_ms)]


TIMEOUT = ("TimeoutError", "timed out after 30s")
NOT_FOUND = ("", "row 123 not found")


def tenant_a() -> list[Exe]:
    ex = [
        # support (invoke_agent)
        Exe("support", "invoke_agent", 2, 0.5, calls=[*_calls("calc", [1, 2, 1, 3, 2, 1]),
                                                       *_calls("web_search", [120, 180], first_offset=10)],
            llm=[("chat big", 3000, 400, 0.12), ("chat small", 200, 50, 0.001)],
            feedback=[("user_rating", 5), ("accuracy", 0.9)]),
        Exe("support", "invoke_agent", 3, 3.0, calls=[*_calls("web_search", [150, 210, 90, 300, 160]),
                                                       *_calls("sql_query", [40, 45], {0: TIMEOUT}, 10)],
            llm=[("chat big", 1200, 300, 0.05)], feedback=[("user_rating", 2)]),
        Exe("support", "invoke_agent", 5, 12.0, "error", calls=_calls("sql_query", [50, 55, 60], {0: TIMEOUT, 1: NOT_FOUND}),
            llm=[("chat small", 100, 20, 0.0005)]),
        Exe("support", "invoke_agent", 9, 5.0, calls=_calls("calc", [2, 2, 2])),  # exactly 5 s: "normal"
        Exe("support", "invoke_agent", 20, 45.0, calls=_calls("web_search", [400, 380]), llm=[("chat big", 800, 100, 0.03)]),
        Exe("support", "invoke_agent", 6, 0, "running"),  # only the start marker arrives
        Exe("support", "invoke_agent", 77, 150.0, second=100, calls=_calls("sql_query", [70, 80, 90, 65], {0: TIMEOUT, 2: TIMEOUT}),
            llm=[("chat big", 5000, 900, 0.2)], feedback=[("user_rating", 4)]),
        Exe("support", "invoke_agent", 77, 2.0, "error", second=200, calls=_calls("web_search", [500, 520, 480])),
        Exe("support", "invoke_agent", 300, 8.0, calls=_calls("sql_query", [30] * 6, {i: NOT_FOUND for i in range(4)}),
            llm=[("chat small", 300, 30, 0.002)], feedback=[("user_rating", 1)]),
        Exe("support", "invoke_agent", 1000, 20.0, calls=[*_calls("web_search", [900, 950]),
                                                            *_calls("legacy_tool", [100, 110], first_offset=5)],
            llm=[("chat big", 9000, 1000, 0.5)], feedback=[("user_rating", 3)]),
        # research (invoke_workflow)
        Exe("research", "invoke_workflow", 4, 0.9, calls=_calls("web_search", [140, 130, 170]),
            llm=[("chat big", 2500, 500, 0.1)], feedback=[("accuracy", 0.5)]),
        Exe("research", "invoke_workflow", 8, 4.0, marker_first=True, calls=_calls("sql_query", [35, 36, 37])),
        Exe("research", "invoke_workflow", 10, 70.0, calls=_calls("web_search", [220, 240, 260, 280]),
            llm=[("chat big", 1500, 700, 0.07)]),
        Exe("research", "invoke_workflow", 30, 6.0, "error", calls=_calls("sql_query", [45, 44], {0: NOT_FOUND, 1: TIMEOUT})),
        Exe("research", "invoke_workflow", 300, 1.5, second=100, calls=_calls("calc", [3, 3, 3, 3, 3]),
            llm=[("chat small", 400, 40, 0.004)]),
        Exe("research", "invoke_workflow", 1000, 3.0, second=100, calls=_calls("calc", [1])),
    ]
    # flaky_api: one monitor run per hour 1..12, 6 equal calls each; a latency spike at hour 3
    # and an error burst at hour 7
    durations = {1: 100, 2: 200, 3: 4000, 4: 150, 5: 300, 6: 120, 7: 250, 8: 180, 9: 220, 10: 130, 11: 170, 12: 260}
    for k, ms in durations.items():
        errors = {i: ("HTTPError", "503 from upstream") for i in range({7: 4, 9: 1}.get(k, 0))}
        ex.append(Exe("monitor", "invoke_agent", k, 1.0, second=1200, calls=_calls("flaky_api", [ms] * 6, errors)))
    # daily_api: one nightly run per day (4 distinct UTC days), a spike on the second newest
    for d, ms in enumerate([200, 3000, 180, 240]):
        ex.append(Exe("nightly", "invoke_workflow", 24 * d + 5, 2.5, second=2400, calls=_calls("daily_api", [ms] * 6)))
    return ex


def tenant_b() -> list[Exe]:
    """Same names and tools as A, other numbers: any leak changes A's figures."""
    return [
        Exe("support", "invoke_agent", 2, 300.0, "error",
            calls=_calls("web_search", [9000] * 25, {i: ("Boom", "b failed") for i in range(25)}),
            llm=[("chat big", 99999, 9999, 9.9)], feedback=[("user_rating", 1), ("accuracy", 0.1)]),
        Exe("support", "invoke_agent", 3, 1.0, calls=[*_calls("calc", [50] * 9), *_calls("secret_tool", [10] * 5, first_offset=20)]),
        Exe("research", "invoke_workflow", 53, 10.0, "running"),
        *[Exe("monitor", "invoke_agent", k, 1.0, second=1200, calls=_calls("flaky_api", [5000 if k == 5 else 10] * 6))
          for k in range(1, 13)],
    ]


def _spans_of(e: Exe, root_sid: bytes) -> list[Any]:
    name_attr = "gen_ai.agent.name" if e.type == "invoke_agent" else "gen_ai.workflow.name"
    attrs = {"gen_ai.operation.name": e.type, name_attr: e.name}
    spans = []
    if e.status != "running":
        spans.append(span(f"{e.type} {e.name}", e.trace, sid=root_sid, start=e.start, duration_ns=int(e.duration_s * 1e9),
                          attributes=attrs, error=e.error_message if e.status == "error" else None))
    for c in e.calls:
        a: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": c.tool}
        if c.error and c.error[0]:
            a["error.type"] = c.error[0]
        spans.append(span(f"execute_tool {c.tool}", e.trace, parent=root_sid, sid=c.sid, start=e.call_start(c),
                          duration_ns=int(c.duration_ms * 1e6), attributes=a, error=c.error[1] if c.error else None))
    for i, (name, tin, tout, cost) in enumerate(e.llm):
        spans.append(span(name, e.trace, parent=root_sid, start=e.start + (30 + i) * 10**9, duration_ns=10**9,
                          attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": tin,
                                      "gen_ai.usage.output_tokens": tout, "spanhouse.cost_usd": cost}))
    for name, value in e.feedback:
        spans.append(span("spanhouse.feedback", trace_id(), start=e.start + 3000 * 10**9,
                          attributes={"spanhouse.feedback.execution_id": e.trace.hex(), "spanhouse.feedback.name": name,
                                      "spanhouse.feedback.value": value}))
    return spans


def _markers(e: Exe) -> list[Any]:
    name_attr = "gen_ai.agent.name" if e.type == "invoke_agent" else "gen_ai.workflow.name"
    return [span(f"{e.type} {e.name}", e.trace, sid=span_id(), start=e.start, duration_ns=0,
                 attributes={"gen_ai.operation.name": e.type, name_attr: e.name, "spanhouse.execution.state": "running"})]


# ------------------------------------------------------------------------------ fixtures


@dataclass
class World:
    c: Running
    a: str
    b: str
    key_a: str
    key_b: str
    key_ingest_only: str
    model_a: list[Exe]
    model_b: list[Exe]
    client: httpx.Client
    cache: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def get(self, path: str, key: str | None = None, **params: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {key or self.key_a}"}
        return self.client.get(f"{self.c.api_url}/api/v1{path}", params=params, headers=headers)

    def ok(self, path: str, key: str | None = None, **params: Any) -> dict[str, Any]:
        r = self.get(path, key, **params)
        assert r.status_code == 200, (path, params, r.status_code, r.text)
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp("analytics")
    a, b = f"a-{uuid.uuid4().hex[:10]}", f"b-{uuid.uuid4().hex[:10]}"
    key_b = add_key(tmp / "keys", b, ["ingest", "read"])
    key_ingest_only = add_key(tmp / "keys", a, ["ingest"])
    model_a, model_b = tenant_a(), tenant_b()
    assert not {e.hours_ago for e in [*model_a, *model_b]} & EDGES
    with running_collector(store, tmp, a) as c, httpx.Client(timeout=30) as client:
        roots = {id(e): span_id() for e in [*model_a, *model_b]}
        # running markers first (their own inserts), then everything else: A over HTTP, B over gRPC
        markers_a = [s for e in model_a if e.marker_first or e.status == "running" for s in _markers(e)]
        markers_b = [s for e in model_b if e.status == "running" for s in _markers(e)]
        hdrs = {"content-type": "application/x-protobuf", **c.headers()}
        assert client.post(c.http_url, content=request(markers_a).SerializeToString(), headers=hdrs).status_code == 200
        assert grpc_export(c.grpc_target, request(markers_b).SerializeToString(), key_b)[0] == grpc.StatusCode.OK
        c.wait_drained()
        body_a = request([s for e in model_a for s in _spans_of(e, roots[id(e)])]).SerializeToString()
        assert client.post(c.http_url, content=body_a, headers=hdrs).status_code == 200
        body_b = request([s for e in model_b for s in _spans_of(e, roots[id(e)])]).SerializeToString()
        assert grpc_export(c.grpc_target, body_b, key_b)[0] == grpc.StatusCode.OK
        c.wait_drained()
        yield World(c, a, b, c.key, key_b, key_ingest_only, model_a, model_b, client)
    _leave_no_parts(store, [a, b])


TABLES = ("otel_traces", "otel_traces_trace_id_ts", "tool_calls", "tool_stats_1m", "tool_stats_1h", "executions",
          "execution_rollup", "error_patterns", "feedback")


def _leave_no_parts(store: Store, tenants: list[str]) -> None:
    """Drop the partitions that hold only these tenants' rows and merge the rest.

    A lightweight DELETE visits every part of its table (~0.1-0.2 s each in the embedded
    engine), so parts left in the shared store slow down every later deletion test."""
    for table in TABLES:
        rows = store.client.query(f"SELECT _partition_id, countIf(Tenant NOT IN {{t:Array(String)}}) FROM {table} "
                                  "GROUP BY _partition_id", parameters={"t": tenants}).result_rows
        for partition, foreign in rows:
            assert re.fullmatch(r"\w+", partition), partition
            if not foreign:
                store.client.command(f"ALTER TABLE {table} DROP PARTITION ID '{partition}'")
        store.client.command(f"OPTIMIZE TABLE {table} FINAL")


# ------------------------------------------------------------------------- expectations


def _linear_quantile(values: list[float], level: float) -> float:
    v = sorted(values)
    pos = level * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _dd_close(got: float, values: list[float], level: float) -> bool:
    """A tool's percentile: exact (linear between the two nearest) below EXACT_BELOW
    calls, which every tool of these tests has; the rollups' DDSketch answered a value
    a rank or two away (30 s hidden among ten calls of 100 ms)."""
    assert len(values) < analytics.EXACT_BELOW
    return got == pytest.approx(_linear_quantile(values, level), abs=1.5e-3)


def _executions(model: list[Exe], days: int, name: str | None = None) -> list[Exe]:
    return [e for e in model if _in(e.hours_ago, days) and (name is None or e.name == name)]


def _tool_calls(model: list[Exe], days: int, prev: bool = False) -> dict[str, list[Call]]:
    out: dict[str, list[Call]] = defaultdict(list)
    for e in model:
        if _in(e.hours_ago, days, prev):
            for c in e.calls:
                out[c.tool].append(c)
    return out


def expected_stats(model: list[Exe], days: int, name: str | None = None) -> dict[str, Any]:
    ex = _executions(model, days, name)
    finished = [e for e in ex if e.status != "running"]
    counts = Counter(e.status for e in ex)
    durations = [e.duration_s * 1000 for e in finished]
    by_type: dict[str, list[Exe]] = defaultdict(list)
    for e in ex:
        by_type[e.type].append(e)
    types = []
    for t, es in sorted(by_type.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        c = Counter(e.status for e in es)
        done = [e for e in es if e.status != "running"]
        types.append({"type": t, "executions": len(es), "ok": c["ok"], "error": c["error"], "running": c["running"],
                      "success_rate": round(c["ok"] / len(done), 6) if done else None,
                      "avg_duration_ms": round(sum(e.duration_s * 1000 for e in done) / len(done), 3) if done else None})
    feedback: dict[str, list[float]] = defaultdict(list)
    for e in ex:
        for n, v in e.feedback:
            feedback[n].append(v)
    with_tokens = [e for e in ex if e.status != "running"]
    return {
        "executions": {"total": len(ex), "ok": counts["ok"], "error": counts["error"], "running": counts["running"]},
        "success_rate": round(counts["ok"] / len(finished), 6) if finished else None,
        "duration_ms": {"finished": len(finished),
                        "avg": round(sum(durations) / len(durations), 3) if durations else None,
                        "p50": round(_linear_quantile(durations, 0.5), 3) if durations else None,
                        "p95": round(_linear_quantile(durations, 0.95), 3) if durations else None},
        "tokens": {"input": sum(i for e in with_tokens for _, i, _, _ in e.llm),
                   "output": sum(o for e in with_tokens for _, _, o, _ in e.llm)},
        "cost_usd": round(sum(c for e in with_tokens for *_, c in e.llm), 8),
        "types": types,
        "most_common_type": types[0]["type"] if types else None,
        "first_execution": _iso(min(e.start for e in ex)) if ex else None,
        "last_execution": _iso(max(e.start for e in ex)) if ex else None,
        "feedback": [{"name": n, "count": len(v), "with_value": len(v), "average": round(sum(v) / len(v), 6),
                      "min": min(v), "max": max(v)}
                     for n, v in sorted(feedback.items())],
    }


def _check_stats(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["executions"] == want["executions"]
    assert got["success_rate"] == want["success_rate"]
    for k, v in want["duration_ms"].items():
        assert got["duration_ms"][k] == (pytest.approx(v, abs=1e-3) if v is not None else None), k
    assert got["tokens"] == {**want["tokens"], "total": want["tokens"]["input"] + want["tokens"]["output"]}
    assert got["cost_usd"] == pytest.approx(want["cost_usd"], abs=1e-8)
    assert got["types"] == want["types"]
    assert got["most_common_type"] == want["most_common_type"]
    assert got["first_execution"] == want["first_execution"]
    assert got["last_execution"] == want["last_execution"]
    assert got["feedback"] == [{**f, "average": pytest.approx(f["average"], abs=1e-6)} for f in want["feedback"]]


def expected_tools(model: list[Exe], days: int) -> dict[str, dict[str, Any]]:
    cur, prev = _tool_calls(model, days), _tool_calls(model, days, prev=True)
    out = {}
    for tool, calls in cur.items():
        errors = sum(1 for c in calls if c.error)
        p_calls = prev.get(tool, [])
        p_errors = sum(1 for c in p_calls if c.error)
        out[tool] = {"calls": len(calls), "errors": errors, "error_rate": round(errors / len(calls), 6),
                     "success_rate": round((len(calls) - errors) / len(calls), 6),
                     "avg_ms": round(sum(c.duration_ms for c in calls) / len(calls), 3),
                     "max_ms": max(c.duration_ms for c in calls), "durations": [c.duration_ms for c in calls],
                     "prev_calls": len(p_calls), "prev_errors": p_errors,
                     "prev_durations": [c.duration_ms for c in p_calls]}
    return out


def _check_tool(got: dict[str, Any], want: dict[str, Any]) -> None:
    for k in ("calls", "errors", "error_rate", "success_rate"):
        assert got[k] == want[k], (got["tool"], k)
    assert got["avg_ms"] == pytest.approx(want["avg_ms"], abs=1e-3)
    assert got["max_ms"] == pytest.approx(want["max_ms"], abs=1e-3)
    for key, level in (("p50_ms", 0.5), ("p90_ms", 0.9), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        assert _dd_close(got[key], want["durations"], level), (got["tool"], key, got[key])
    t = got["trend"]
    assert t["previous_calls"] == want["prev_calls"]
    assert t["calls_change"] == want["calls"] - want["prev_calls"]
    if want["prev_calls"]:
        prev_rate = want["prev_errors"] / want["prev_calls"]
        assert t["calls_change_pct"] == pytest.approx((want["calls"] - want["prev_calls"]) / want["prev_calls"] * 100,
                                                      abs=0.01)
        assert t["previous_error_rate"] == pytest.approx(prev_rate, abs=1e-6)
        assert t["error_rate_change"] == pytest.approx(want["error_rate"] - prev_rate, abs=2e-6)
        assert _dd_close(t["previous_p95_ms"], want["prev_durations"], 0.95)
        assert t["p95_change_ms"] == pytest.approx(got["p95_ms"] - t["previous_p95_ms"], abs=2e-3)
    else:
        assert t["calls_change_pct"] is t["previous_error_rate"] is t["error_rate_change"] is None
        assert t["previous_p95_ms"] is t["p95_change_ms"] is t["p95_change_pct"] is None


# --------------------------------------------------------------------------------- stats


@pytest.mark.parametrize("days", TESTED_DAYS)
@pytest.mark.parametrize("name", [None, "support", "research", "nobody"])
def test_stats_match_the_model(world: World, days: int, name: str | None) -> None:
    params = {"days": days, **({"name": name} if name else {})}
    got = world.ok("/stats", **params)
    assert got["window"]["days"] == days and got["name"] == name
    _check_stats(got, expected_stats(world.model_a, days, name))


def test_stats_default_window_is_7_days_and_other_tenant_sees_only_its_own(world: World) -> None:
    _check_stats(world.ok("/stats"), expected_stats(world.model_a, 7))
    for days in (1, 7):
        _check_stats(world.ok("/stats", world.key_b, days=days), expected_stats(world.model_b, days))
    # the running marker that was later finished counts once, as finished
    assert world.ok("/stats", days=1, name="research")["executions"] == {"total": 3, "ok": 3, "error": 0, "running": 0}


# --------------------------------------------------------------------------- performance


def _expected_buckets(model: list[Exe], days: int, name: str | None, thresholds: list[float]) -> list[int]:
    counts = [0] * 5
    for e in _executions(model, days, name):
        if e.status != "running":
            counts[sum(1 for t in thresholds if e.duration_s >= t)] += 1
    return counts


def _expected_patterns(model: list[Exe], since: str) -> list[tuple[str, int, str, int]]:
    """Error patterns count per day: from the first day of the window (`since`, as the API reports it)."""
    first_day = datetime.fromisoformat(since).date()

    def in_window(ns: int) -> bool:
        return datetime.fromtimestamp(ns // 10**9, timezone.utc).date() >= first_day

    found: Counter[tuple[str, int, str]] = Counter()
    for e in model:
        if e.status == "error" and in_window(e.start):
            found[(f"{e.type} {e.name}", 0, re.sub(r"\d+", "<n>", e.error_message))] += 1
        for c in e.calls:
            if c.error and in_window(e.call_start(c)):
                found[(c.tool, 1, c.error[0] or re.sub(r"\d+", "<n>", c.error[1]))] += 1
    return sorted(((*k, n) for k, n in found.items()), key=lambda r: (-r[3], r[0], r[2]))


def _expected_repeats(model: list[Exe], days: int, name: str | None, min_repeats: int,
                      candidates_out: list[int] | None = None) -> dict[str, tuple[int, int, str]]:
    per_tool: dict[str, list[tuple[int, str]]] = defaultdict(list)
    candidates = 0
    for e in _executions(model, days, name):
        counts = Counter(c.tool for c in e.calls)
        if counts and len(e.calls) + 1 >= len(counts) + min_repeats:
            candidates += 1
        for tool, n in counts.items():
            if n >= min_repeats:
                per_tool[tool].append((n, e.trace.hex()))
    assert candidates <= 50, "the test data must stay within the repeat sample"
    if candidates_out is not None:
        candidates_out.append(candidates)
    return {t: (len(v), max(v)[0], max(v)[1]) for t, v in per_tool.items()}


@pytest.mark.parametrize("days,name", [(1, None), (7, None), (30, None), (7, "support"), (30, "research"), (7, "nobody")])
def test_performance_distribution_patterns_and_tips(world: World, days: int, name: str | None) -> None:
    params = {"days": days, **({"name": name} if name else {})}
    got = world.ok("/performance", **params)
    dist = got["duration"]
    assert [b["bucket"] for b in dist["buckets"]] == ["very_fast", "fast", "normal", "slow", "very_slow"]
    assert [(b["min_s"], b["max_s"]) for b in dist["buckets"]] == [(None, 1), (1, 5), (5, 30), (30, 120), (120, None)]
    want = _expected_buckets(world.model_a, days, name, [1, 5, 30, 120])
    assert [b["executions"] for b in dist["buckets"]] == want
    assert dist["finished"] == sum(want)
    if sum(want):
        assert [b["share"] for b in dist["buckets"]] == [round(n / sum(want), 6) for n in want]
    stats = expected_stats(world.model_a, days, name)["duration_ms"]
    assert dist["p50_ms"] == (pytest.approx(stats["p50"], abs=1e-3) if stats["p50"] is not None else None)

    # error patterns: tenant-wide, per tool (or span name) and pattern, most frequent first
    patterns = [(p["tool"], p["is_tool"], p["pattern"], p["count"]) for p in got["error_patterns"]]
    assert sorted(patterns, key=lambda r: (-r[3], r[0], r[2])) == _expected_patterns(world.model_a,
                                                                                       got["window"]["since"])

    tips: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in got["tips"]:
        tips[t["kind"]].append(t)
        assert t["message"]

    tools = {t: v for t, v in expected_tools(world.model_a, days).items() if v["calls"] >= 10}  # default min_calls
    exact_p95 = {t: _linear_quantile(v["durations"], 0.95) for t, v in tools.items()}
    assert [t["tool"] for t in tips["slow_tool"]] == sorted(exact_p95, key=lambda t: -exact_p95[t])[:3]
    for t in tips["slow_tool"]:
        assert t["calls"] == tools[t["tool"]]["calls"] and _dd_close(t["p95_ms"], tools[t["tool"]]["durations"], 0.95)
    failing = sorted((t for t in tools if tools[t]["errors"]), key=lambda t: (-tools[t]["error_rate"], t))[:3]
    assert [(t["tool"], t["errors"], t["calls"], t["error_rate"]) for t in tips["failing_tool"]] == [
        (t, tools[t]["errors"], tools[t]["calls"], tools[t]["error_rate"]) for t in failing]

    # token-heavy: span names within the 3 executions with the most tokens
    top = sorted((e for e in _executions(world.model_a, days, name) if e.tokens), key=lambda e: -e.tokens)[:3]
    per_span: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for e in top:
        for span_name, tin, tout, _ in e.llm:
            per_span[span_name][0] += tin + tout
            per_span[span_name][1] += 1
    sampled = sum(e.tokens for e in top)
    want_tokens = sorted(per_span.items(), key=lambda kv: (-kv[1][0], kv[0]))[:3]
    assert [(t["span_name"], t["tokens"], t["spans"], t["share"], t["sampled_tokens"], t["sampled_executions"])
            for t in tips["token_heavy"]] == [(n, v[0], v[1], round(v[0] / sampled, 6), sampled, len(top))
                                              for n, v in want_tokens]

    candidates: list[int] = []
    repeats = _expected_repeats(world.model_a, days, name, 5, candidates)
    want_repeats = sorted(repeats.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:3]
    assert [(t["tool"], t["executions"], t["max_calls"], t["example_trace_id"], t["candidate_executions"],
             t["examined_executions"]) for t in tips["repeated_tool"]] == [
        (tool, n, mx, trace, candidates[0], candidates[0]) for tool, (n, mx, trace) in want_repeats]


def test_performance_custom_thresholds_and_rule_parameters(world: World) -> None:
    got = world.ok("/performance", days=30, thresholds="0.5, 2.5,10,60.5")
    assert got["duration"]["thresholds_s"] == [0.5, 2.5, 10, 60.5]
    assert [b["executions"] for b in got["duration"]["buckets"]] == _expected_buckets(world.model_a, 30, None,
                                                                                      [0.5, 2.5, 10, 60.5])
    # a bound is the lower end of its bucket: the 5 s execution is "normal", not "fast"
    buckets = world.ok("/performance", days=1, name="support")["duration"]["buckets"]
    assert [b["executions"] for b in buckets] == [1, 1, 2, 1, 0]

    # min_calls: which tools may get slow/failing tips
    tools = expected_tools(world.model_a, 30)
    for min_calls in (1, 15, 10_000):
        tips = world.ok("/performance", days=30, min_calls=min_calls)["tips"]
        eligible = {t for t, v in tools.items() if v["calls"] >= min_calls}
        slow = {t["tool"] for t in tips if t["kind"] == "slow_tool"}
        failing = {t["tool"] for t in tips if t["kind"] == "failing_tool"}
        assert slow <= eligible and failing <= eligible
        assert len(slow) == min(3, len(eligible))
        assert len(failing) == min(3, sum(1 for t in eligible if tools[t]["errors"]))

    # min_repeats: what counts as calling a tool repeatedly
    for min_repeats in (3, 5, 6, 7):
        tips = world.ok("/performance", days=30, min_repeats=min_repeats)["tips"]
        got_repeats = {t["tool"]: (t["executions"], t["max_calls"], t["example_trace_id"])
                       for t in tips if t["kind"] == "repeated_tool"}
        want = dict(sorted(_expected_repeats(world.model_a, 30, None, min_repeats).items(),
                           key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:3])
        assert got_repeats == want, min_repeats
        assert all(t["min_repeats"] == min_repeats for t in tips if t["kind"] == "repeated_tool")


def test_repeated_tool_tips_say_when_they_examined_a_sample(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from spanhouse.clickhouse import analytics  # the collector runs in this process

    monkeypatch.setattr(analytics, "REPEAT_SAMPLE", 3)
    candidates: list[int] = []
    _expected_repeats(world.model_a, 30, None, 5, candidates)
    tips = [t for t in world.ok("/performance", days=30)["tips"] if t["kind"] == "repeated_tool"]
    assert tips and candidates[0] > 3
    for t in tips:
        assert (t["candidate_executions"], t["examined_executions"]) == (candidates[0], 3)
        assert t["executions"] <= 3 and "of the 3 examined" in t["message"]


def test_performance_of_the_other_tenant(world: World) -> None:
    got = world.ok("/performance", world.key_b, days=7, min_calls=1)
    assert [b["executions"] for b in got["duration"]["buckets"]] == _expected_buckets(world.model_b, 7, None,
                                                                                      [1, 5, 30, 120])
    assert {(p["tool"], p["pattern"], p["count"]) for p in got["error_patterns"]} == {
        ("web_search", "Boom", 25), ("invoke_agent support", "failed after <n> retries", 1)}
    tips = {(t["kind"], t.get("tool") or t.get("span_name")) for t in got["tips"]}
    assert ("failing_tool", "web_search") in tips and ("repeated_tool", "calc") in tips
    assert ("token_heavy", "chat big") in tips
    assert not {t for t in tips if t[1] in ("sql_query", "daily_api", "chat small")}  # tenant A's only


# --------------------------------------------------------------------------------- tools


@pytest.mark.parametrize("days", TESTED_DAYS)
def test_tools_numbers_and_trend(world: World, days: int) -> None:
    got = world.ok("/tools", days=days)
    want = expected_tools(world.model_a, days)
    assert got["total"] == len(want)
    assert {t["tool"] for t in got["tools"]} == set(want)
    for t in got["tools"]:
        _check_tool(t, want[t["tool"]])
        assert t["services"] == ["svc"]


def test_tools_sorting_filtering_and_limit(world: World) -> None:
    want = expected_tools(world.model_a, 30)
    exact = {"calls": lambda t: want[t]["calls"], "error_rate": lambda t: want[t]["error_rate"],
             "p95": lambda t: _linear_quantile(want[t]["durations"], 0.95),
             "p99": lambda t: _linear_quantile(want[t]["durations"], 0.99), "name": lambda t: t}
    assert [t["tool"] for t in world.ok("/tools", days=30)["tools"]] == sorted(
        sorted(want), key=lambda t: want[t]["calls"], reverse=True)  # default: calls, desc
    for sort, key in exact.items():
        for order in ("asc", "desc"):
            got = world.ok("/tools", days=30, sort=sort, order=order)
            assert (got["sort"], got["order"]) == (sort, order)
            expected = sorted(sorted(want), key=key, reverse=order == "desc")  # ties in name order
            assert [t["tool"] for t in got["tools"]] == expected, (sort, order)
    for min_calls in (1, 9, 20, 10_000):
        got = world.ok("/tools", days=30, min_calls=min_calls)
        assert {t["tool"] for t in got["tools"]} == {t for t, v in want.items() if v["calls"] >= min_calls}
    got = world.ok("/tools", days=30, limit=2, sort="name", order="asc")
    assert [t["tool"] for t in got["tools"]] == sorted(want)[:2] and got["total"] == len(want)


def test_tools_of_the_other_tenant(world: World) -> None:
    for days in (1, 7):
        got = world.ok("/tools", world.key_b, days=days)
        want = expected_tools(world.model_b, days)
        assert {t["tool"] for t in got["tools"]} == set(want)
        for t in got["tools"]:
            _check_tool(t, want[t["tool"]])


# ----------------------------------------------------------------------------- one tool


def _bucket_of(ns: int, bucket: str) -> str:
    s = ns // 10**9
    size = {"minute": 60, "hour": HOUR, "day": 86400}[bucket]
    return datetime.fromtimestamp(s - s % size, timezone.utc).isoformat()


@pytest.mark.parametrize("tool,days,bucket", [
    ("web_search", 7, "hour"), ("web_search", 30, "day"), ("sql_query", 30, "hour"), ("sql_query", 1, "minute"),
    ("daily_api", 7, "day"), ("daily_api", 7, "minute"), ("flaky_api", 1, "hour"), ("calc", 365, "day"),
])
def test_tool_detail_series_errors_and_summary(world: World, tool: str, days: int, bucket: str) -> None:
    got = world.ok(f"/tools/{tool}", days=days, bucket=bucket)
    all_calls = [(e, c) for e in world.model_a for c in e.calls if c.tool == tool]
    window = [(e, c) for e, c in all_calls if _in(e.hours_ago, days)]
    assert (got["tool"], got["bucket"], got["total_calls"]) == (tool, bucket, len(all_calls))
    assert got["first_seen"] == _iso(min(e.call_start(c) for e, c in all_calls))
    assert got["last_seen"] == _iso(max(e.call_start(c) for e, c in all_calls))
    _check_tool({"tool": tool, **got["summary"]}, expected_tools(world.model_a, days)[tool])

    series: dict[str, list[Call]] = defaultdict(list)
    for e, c in window:
        series[_bucket_of(e.call_start(c), bucket)].append(c)
    assert [p["time"] for p in got["series"]] == sorted(series)
    for p in got["series"]:
        calls = series[p["time"]]
        errors = sum(1 for c in calls if c.error)
        assert (p["calls"], p["errors"], p["error_rate"]) == (len(calls), errors, round(errors / len(calls), 6))
        assert p["avg_ms"] == pytest.approx(sum(c.duration_ms for c in calls) / len(calls), abs=1e-3)
        for key, level in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            assert _dd_close(p[key], [c.duration_ms for c in calls], level), (p["time"], key)

    failed = sorted(((e, c) for e, c in window if c.error), key=lambda ec: ec[0].call_start(ec[1]), reverse=True)
    assert [(r["time"], r["trace_id"], r["span_id"], r["error_type"], r["message"]) for r in got["recent_errors"]] == [
        (_iso(e.call_start(c)), e.trace.hex(), c.sid.hex(), c.error[0] or "", c.error[1])  # type: ignore[index]
        for e, c in failed[:20]]


def test_recent_errors_are_capped_at_20_newest_first(world: World) -> None:
    got = world.ok("/tools/web_search", world.key_b, days=1)["recent_errors"]  # 25 failures
    assert len(got) == 20
    e = world.model_b[0]
    newest = sorted(e.calls, key=e.call_start, reverse=True)[:20]
    assert [r["span_id"] for r in got] == [c.sid.hex() for c in newest]
    assert {(r["error_type"], r["message"], r["service"]) for r in got} == {("Boom", "b failed", "svc")}


def test_tool_detail_unknown_other_tenants_and_idle_tools(world: World) -> None:
    for path in ("/tools/no_such_tool", "/tools/secret_tool"):  # secret_tool is tenant B's
        r = world.get(path)
        assert r.status_code == 404 and "no tool" in r.json()["detail"]
    assert world.ok("/tools/secret_tool", world.key_b, days=1)["summary"]["calls"] == 5
    # a tool called only long ago: 200 with no numbers for the window, but when it was seen
    idle = world.ok("/tools/legacy_tool", days=1)
    assert idle["summary"] is None and idle["series"] == [] and idle["recent_errors"] == []
    assert idle["total_calls"] == 2 and idle["first_seen"] == _iso(_at(1000, 5))
    assert world.ok("/tools/legacy_tool", days=365)["summary"]["calls"] == 2


def test_tool_names_with_slashes_and_spaces_are_one_path_parameter(world: World) -> None:
    for name in ("mcp/server/tool", "a tool", "two\nlines", "tab\there"):
        r = world.get(f"/tools/{quote(name, safe='')}")
        assert r.status_code == 404 and repr(name) in r.json()["detail"]  # the handler's answer, not the router's


# ----------------------------------------------------------------------------- anomalies


def _floor(metric: str, mean: float) -> float:
    return max(0.01 * abs(mean), 1.0) if metric == "latency_p95" else 0.02


def _z(values: list[float], metric: str) -> list[tuple[float | None, float]]:
    out: list[tuple[float | None, float]] = []
    for i, x in enumerate(values):
        others = values[:i] + values[i + 1:]
        if len(others) < 3:
            out.append((None, 0.0))
            continue
        mean = sum(others) / len(others)
        std = math.sqrt(sum((o - mean) ** 2 for o in others) / (len(others) - 1))
        out.append(((x - mean) / max(std, _floor(metric, mean)), mean))
    return out


def _ewma(values: list[float], metric: str) -> list[tuple[float | None, float]]:
    if not values:
        return []
    out: list[tuple[float | None, float]] = [(None, 0.0)]
    mean, var = values[0], 0.0
    for i, x in enumerate(values[1:], 1):
        std = max(math.sqrt(var), _floor(metric, mean))
        out.append(((x - mean) / std if i >= 3 else None, mean))
        diff = x - mean
        mean, var = mean + ALPHA * diff, (1 - ALPHA) * (var + ALPHA * diff * diff)
    return out


def _series_values(world: World, key: str, tool: str, days: int, bucket: str, metric: str,
                   min_calls: int) -> list[tuple[str, float, int]]:
    """(bucket, value, calls) of one tool, from the tool endpoint (checked against the model elsewhere)."""
    cached = (key, tool, days, bucket)
    if cached not in world.cache:
        world.cache[cached] = world.ok(f"/tools/{tool}", key, days=days, bucket=bucket)["series"]
    series = world.cache[cached]
    return [(p["time"], p["p95_ms"] if metric == "latency_p95" else p["error_rate"], p["calls"])
            for p in series if p["calls"] >= min_calls]


@pytest.mark.parametrize("metric", ["latency_p95", "error_rate"])
@pytest.mark.parametrize("method", ["zscore", "ewma"])
@pytest.mark.parametrize("days,bucket", [(1, "hour"), (7, "day"), (7, "hour")])
def test_anomalies_match_scores_computed_from_the_series(world: World, metric: str, method: str, days: int,
                                                         bucket: str) -> None:
    for key, model in ((world.key_a, world.model_a), (world.key_b, world.model_b)):
        got = world.ok("/anomalies", key, metric=metric, method=method, days=days, bucket=bucket)
        assert (got["metric"], got["method"], got["threshold"], got["bucket"]) == (metric, method, 3, bucket)
        assert ("alpha" in got) == (method == "ewma")
        expected = []
        tools = {c.tool for e in model if _in(e.hours_ago, days) for c in e.calls}
        scored = 0
        for tool in sorted(tools):
            points = _series_values(world, key, tool, days, bucket, metric, 5)
            scores = (_z if method == "zscore" else _ewma)([v for _, v, _ in points], metric)
            scored += any(score is not None for score, _ in scores)  # a tool with too few buckets is not scored
            for (when, value, calls), (score, baseline) in zip(points, scores):
                if score is not None and abs(score) >= 3:
                    expected.append((when, tool, value, calls, score, baseline))
        assert got["tools_scored"] == scored
        expected.sort(key=lambda a: (a[0], abs(a[4])), reverse=True)
        assert [(a["time"], a["tool"], a["value"], a["calls"]) for a in got["anomalies"]] == [a[:4] for a in expected]
        for a, (*_, score, baseline) in zip(got["anomalies"], expected):
            assert a["score"] == pytest.approx(score, rel=1e-3, abs=1e-3)
            assert a["baseline"] == pytest.approx(baseline, rel=1e-5, abs=1e-6)
            assert a["direction"] == ("above" if score > 0 else "below")
            assert a["tool"] in a["hint"] and " sigma " in a["hint"] and a["direction"] in a["hint"]


def test_anomalies_find_the_planted_spikes(world: World) -> None:
    def planted(got: dict[str, Any]) -> list[dict[str, Any]]:
        return [a for a in got["anomalies"] if a["tool"] in ("flaky_api", "daily_api")]

    got = planted(world.ok("/anomalies", days=1))  # latency_p95, zscore, hourly, threshold 3
    assert [(a["tool"], a["time"]) for a in got] == [("flaky_api", _bucket_of(_at(3), "hour"))]
    assert got[0]["value"] == pytest.approx(4000, rel=0.01)
    assert re.fullmatch(r"p95 latency of flaky_api (39|40)\d\d ms is [\d.]+ sigma above its 1-day mean 1[89]\d ms",
                        got[0]["hint"]), got[0]["hint"]
    got = planted(world.ok("/anomalies", metric="error_rate", days=1))
    assert [(a["tool"], a["time"], a["errors"], a["calls"]) for a in got] == [
        ("flaky_api", _bucket_of(_at(7), "hour"), 4, 6)]
    assert got[0]["hint"].startswith("error rate of flaky_api 66.7% (4 of 6 calls) is ")
    got = planted(world.ok("/anomalies", days=7, bucket="day"))
    assert [(a["tool"], a["time"]) for a in got] == [("daily_api", _bucket_of(_at(24 * 1 + 5, 2400), "day"))]
    got = planted(world.ok("/anomalies", world.key_b, days=1))
    assert [(a["tool"], a["time"]) for a in got] == [("flaky_api", _bucket_of(_at(5), "hour"))]


def test_anomalies_threshold_min_calls_and_limit(world: World) -> None:
    low = world.ok("/anomalies", days=1, threshold=0.1)
    assert low["total"] > 1 and all(abs(a["score"]) >= 0.1 for a in low["anomalies"])
    times = [a["time"] for a in low["anomalies"]]
    assert times == sorted(times, reverse=True)  # newest first
    assert world.ok("/anomalies", days=1, threshold=1000)["anomalies"] == []
    limited = world.ok("/anomalies", days=1, threshold=0.1, limit=2)
    assert limited["anomalies"] == low["anomalies"][:2] and limited["total"] == low["total"]
    # flaky_api has 6 calls per hour: with min_calls 7 no bucket of it is scored
    high = world.ok("/anomalies", days=1, min_calls=7)
    assert high["anomalies"] == [] and high["tools_scored"] == 0


# ------------------------------------------------------------------------- the contract


ENDPOINTS = ["/stats", "/performance", "/tools", "/tools/web_search", "/anomalies"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_key_without_read_is_403_and_no_key_is_401(world: World, path: str) -> None:
    r = world.get(path, world.key_ingest_only)
    assert r.status_code == 403 and "read" in r.json()["detail"]
    r = world.client.get(f"{world.c.api_url}/api/v1{path}")
    assert r.status_code == 401


BAD_PARAMS = [
    ("/stats", {"days": 0}, "days"), ("/stats", {"days": 366}, "days"), ("/stats", {"days": "week"}, "days"),
    ("/stats", {"name": ""}, "name"), ("/stats", {"name": "x" * 513}, "name"),
    ("/performance", {"days": -1}, "days"), ("/performance", {"thresholds": "1,5,30"}, "thresholds"),
    ("/performance", {"thresholds": "1,5,5,120"}, "thresholds"), ("/performance", {"thresholds": "5,1,30,120"}, "thresholds"),
    ("/performance", {"thresholds": "0,1,2,3"}, "thresholds"), ("/performance", {"thresholds": "1,5,30,inf"}, "thresholds"),
    ("/performance", {"thresholds": "1,5,30,abc"}, "thresholds"), ("/performance", {"thresholds": "1,5,30,120,600"}, "thresholds"),
    ("/performance", {"thresholds": "1,5,30,1e300"}, "thresholds"),  # its nanoseconds overflowed: a 500
    ("/performance", {"thresholds": "1e-10,2e-10,3e-10,4e-10"}, "thresholds"),  # all 0 ns: every duration very_slow
    ("/performance", {"thresholds": "1,1.0000000001,2,3"}, "thresholds"),  # 0.1 ns apart: one bound
    ("/performance", {"min_calls": 0}, "min_calls"), ("/performance", {"min_repeats": 1}, "min_repeats"),
    ("/tools", {"sort": "latency"}, "sort"), ("/tools", {"order": "up"}, "order"), ("/tools", {"limit": 0}, "limit"),
    ("/tools", {"limit": 1001}, "limit"), ("/tools", {"min_calls": 0}, "min_calls"), ("/tools", {"days": 400}, "days"),
    ("/tools/web_search", {"bucket": "week"}, "bucket"), ("/tools/web_search", {"bucket": "minute", "days": 8}, "bucket"),
    ("/tools/web_search", {"days": 0}, "days"),
    ("/anomalies", {"metric": "p50"}, "metric"), ("/anomalies", {"method": "mad"}, "method"),
    ("/anomalies", {"threshold": 0}, "threshold"), ("/anomalies", {"threshold": -3}, "threshold"),
    ("/anomalies", {"threshold": "high"}, "threshold"), ("/anomalies", {"bucket": "minute"}, "bucket"),
    ("/anomalies", {"days": 366}, "days"), ("/anomalies", {"limit": 0}, "limit"), ("/anomalies", {"min_calls": 0}, "min_calls"),
]


@pytest.mark.parametrize("path,params,param", BAD_PARAMS)
def test_bad_parameters_are_422_naming_the_parameter(world: World, path: str, params: dict[str, Any],
                                                     param: str) -> None:
    r = world.get(path, **params)
    assert r.status_code == 422, r.text
    assert any(err["loc"][-1] == param and err["msg"] for err in r.json()["detail"]), r.json()


INJECTIONS = ["x' OR 1=1 --", "support' OR '1'='1", "support'--", "'; DROP TABLE executions; --",
              "support\\' OR 1=1 --", "{name:String}", "support) OR (1=1", "%' OR Name LIKE '%"]


def test_sql_injection_in_string_parameters_changes_nothing(world: World) -> None:
    before = world.ok("/stats", days=30)
    for attempt in INJECTIONS:
        got = world.ok("/stats", days=30, name=attempt)
        assert got["executions"]["total"] == 0 and got["tokens"]["total"] == 0 and got["feedback"] == []
        assert got["name"] == attempt
        perf = world.ok("/performance", days=30, name=attempt)
        assert perf["duration"]["finished"] == 0
        assert not [t for t in perf["tips"] if t["kind"] in ("token_heavy", "repeated_tool")]
        assert world.get(f"/tools/{attempt}", days=30).status_code == 404
        assert world.get(f"/tools/web_search{attempt}", days=30).status_code == 404
        for param in ("thresholds", "sort", "order", "metric", "method", "bucket", "days", "min_calls", "limit"):
            path = {"thresholds": "/performance", "sort": "/tools", "order": "/tools", "limit": "/tools",
                    "metric": "/anomalies", "method": "/anomalies", "bucket": "/anomalies"}.get(param, "/stats")
            if param == "min_calls":
                path = "/tools"
            assert world.get(path, **{param: f"1,5,30,120{attempt}" if param == "thresholds" else attempt}
                             ).status_code == 422, (param, attempt)
    assert world.ok("/stats", days=30) == before  # nothing was dropped or changed
    assert world.ok("/tools", days=30)["total"] == len(expected_tools(world.model_a, 30))


def test_openapi_lists_the_analytics_endpoints(world: World) -> None:
    spec = world.client.get(f"{world.c.api_url}/openapi.json").json()
    for path in ("/api/v1/stats", "/api/v1/performance", "/api/v1/tools", "/api/v1/tools/{name}", "/api/v1/anomalies"):
        assert path in spec["paths"], sorted(spec["paths"])
        assert spec["paths"][path]["get"]["tags"] == ["analytics"]


def test_tool_numbers_keep_to_utc_hours_in_a_half_hour_time_zone(tmp_path: Path) -> None:
    """The embedded engine takes the process's TZ; the hourly tool rollup grouped by its
    hours, which in Asia/Kolkata (+05:30) start at :30 UTC while windows are cut at whole
    UTC hours: a call in the window's first half hour fell out of it, one in the half
    hour before was counted, and the series was labelled half an hour early."""
    script = (
        "import sys\n"
        "from spanhouse.clickhouse import IngestItem, analytics, open_store\n"
        "from tests.otlp import request, span, span_id, trace_id\n"
        "s = open_store(sys.argv[1])\n"
        "now = 1767225600 + 12 * 3600 + 1234  # 2026-01-01 12:20:34 UTC\n"
        "since = analytics.window(1, now).since\n"
        "spans = []\n"
        "for at, error in ((since + 600, 'boom'), (since - 600, None), (since + 12 * 3600 + 600, None)):\n"
        "    t, root = trace_id(), span_id()\n"
        "    spans += [span('invoke_agent a', t, sid=root, start=at * 10**9, attributes={'gen_ai.operation.name': 'invoke_agent'}),\n"
        "              span('execute_tool x', t, parent=root, start=at * 10**9 + 1, error=error,\n"
        "                   attributes={'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 'x'})]\n"
        "s.writer.write([IngestItem('tz', request(spans).SerializeToString())])\n"
        "x = analytics.tools(s.readers, 'tz', 1, now=now)['tools'][0]\n"
        "print(x['calls'], x['errors'], x['trend']['previous_calls'])\n"
        "d = analytics.tool_detail(s.readers, 'tz', 'x', 1, now=now)\n"
        "print(d['summary']['calls'], [(str(p['time']), p['calls']) for p in d['series']])\n"
        "s.close()\n"
    )
    assert in_child(script, tmp_path, tz="Asia/Kolkata") == [
        "2 1 1", "2 [('2025-12-31T13:00:00+00:00', 1), ('2026-01-01T01:00:00+00:00', 1)]"]


def test_error_patterns_count_by_utc_day_whatever_the_engines_zone(tmp_path: Path) -> None:
    """error_patterns kept days of the engine's time zone (the process's TZ for the
    embedded engine) while windows are cut in UTC: in Asia/Kolkata a failure at 10:00 UTC
    the day after a window counted in it (a Kolkata day's 15:30)."""
    script = (
        "import sys\n"
        "from spanhouse.clickhouse import IngestItem, analytics, open_store\n"
        "from tests.otlp import request, span, span_id, trace_id\n"
        "s = open_store(sys.argv[1])\n"
        "day = 1_749_513_600  # 2025-06-10T00:00:00Z\n"
        "def failure(at_s):\n"
        "    t, root = trace_id(), span_id()\n"
        "    return IngestItem('tz', request([\n"
        "        span('invoke_agent a', t, sid=root, start=at_s * 10**9, attributes={'gen_ai.operation.name': 'invoke_agent'}),\n"
        "        span('execute_tool search', t, parent=root, start=at_s * 10**9 + 1, error='boom', attributes={\n"
        "            'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 'search', 'error.type': 'E'})])\n"
        "        .SerializeToString())\n"
        "s.writer.write([failure(day + 2 * 3600), failure(day + 34 * 3600)])  # 02:00 that day, 10:00 the next\n"
        "got = analytics.performance(s.client, 'tz', days=1, now=day + 22 * 3600)  # the window ends 23:00 UTC\n"
        "print([(p['tool'], p['count']) for p in got['error_patterns']])\n"
        "s.close()\n"
    )
    assert in_child(script, tmp_path, tz="Asia/Kolkata") == ["[('search', 1)]"]


def test_the_token_sample_ranks_an_execution_by_all_its_inserts(store: Store) -> None:
    """execution_rollup holds a row per insert until its parts merge. The sample of the
    executions with the most tokens ranked each by its largest row: one whose three
    model calls (400 tokens each) came in three inserts lost to three of 1,000 tokens
    stored at once, and its span name never showed in the token-heavy tip."""
    from spanhouse.clickhouse import analytics
    from tests.conftest import write

    tenant = f"token-sample-{uuid.uuid4().hex[:8]}"
    now = time.time_ns() - 3_600 * 10**9

    def chat(name: str, trace: bytes, tokens: int, at: int, parent: bytes) -> Any:
        return span(name, trace, start=at, parent=parent, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": tokens // 2,
            "gen_ai.usage.output_tokens": tokens - tokens // 2})

    long_run, root = trace_id(), span_id()
    store.client.command("SYSTEM STOP MERGES execution_rollup")  # the rows stay one per insert
    try:
        write(store, tenant, request([span("invoke_agent long", long_run, sid=root, start=now, attributes={
            "gen_ai.operation.name": "invoke_agent"})]))
        for i in range(3):
            write(store, tenant, request([chat("chat long-run", long_run, 400, now + i, root)]))
        for i in range(3):
            t, r = trace_id(), span_id()
            write(store, tenant, request([
                span("invoke_agent short", t, sid=r, start=now + 10 + i, attributes={
                    "gen_ai.operation.name": "invoke_agent"}),
                chat("chat one-shot", t, 1_000, now + 10 + i, r)]))
        tips = analytics.performance(store.client, tenant, days=1, min_calls=1)["tips"]
    finally:
        store.client.command("SYSTEM START MERGES execution_rollup")
    heavy = {t["span_name"]: t["tokens"] for t in tips if t["kind"] == "token_heavy"}
    assert heavy == {"chat long-run": 1_200, "chat one-shot": 2_000}, heavy


def test_the_token_sample_counts_an_agents_own_usage_beside_its_calls_once(store: Store) -> None:
    """An agent span often records the total of its model calls, and ends (and so is
    stored) after them: with the rollup's rows unmerged, a rank summing each row's larger
    usage counted such an execution twice (150 tokens ranked as 300, above 250, 240, 230)."""
    from spanhouse.clickhouse import analytics
    from tests.conftest import write

    tenant = f"token-twice-{uuid.uuid4().hex[:8]}"
    now = time.time_ns() - 3_600 * 10**9
    usage = {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 50}
    doubled, root = trace_id(), span_id()
    store.client.command("SYSTEM STOP MERGES execution_rollup")
    try:
        write(store, tenant, request([span("chat doubled", doubled, start=now + 1, parent=root, attributes={
            "gen_ai.operation.name": "chat", **usage})]))
        write(store, tenant, request([span("invoke_agent doubled", doubled, sid=root, start=now, attributes={
            "gen_ai.operation.name": "invoke_agent", **usage})]))
        for i, tokens in enumerate((250, 240, 230)):
            write(store, tenant, request([span("chat single", trace_id(), start=now + 10 + i, attributes={
                "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": tokens})]))
        tips = analytics.performance(store.client, tenant, days=1, min_calls=1)["tips"]
    finally:
        store.client.command("SYSTEM START MERGES execution_rollup")
    heavy = {t["span_name"]: t["tokens"] for t in tips if t["kind"] == "token_heavy"}
    assert heavy == {"chat single": 720}, heavy
