"""Tool statistics from the materialized view vs from raw spans: query latency.

Why: per-tool numbers (calls, errors, success rate, p50/p95/p99 latency) are what
dashboards and analysts ask for most, so the schema maintains them at write time in
``tool_stats_1m`` and ``tool_stats_1h`` (0004_tool_calls.sql: sums and DDSketch states per
tenant, service, tool and minute / hour). This measures what they buy over computing the
same numbers from ``otel_traces`` at read time, and checks that all agree on calls and
errors. A week-long window is what the hourly table is for; the minute table is shown too.

Workload: ``--spans`` spans generated inside ClickHouse by ``INSERT INTO otel_traces
SELECT ... FROM numbers(...)`` in chunks, so that every materialized view fires as it
does for ingested spans: traces of one ``invoke_agent`` root and nine ``execute_tool``
spans (20 tools, 3 services, tenants split 70/30), ~5% of tool calls failing, tool
latencies log-uniform over milliseconds to seconds, start times over the last 7 days in
the order a live store receives them.
Both queries compute the stats of one tenant over that window, grouped by tool; each
runs once to warm up and then ``--runs`` times, and the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

from _store import temporary_store
from clickhouse_connect.driver.client import Client


TENANT = "acme"
WEEK_S = 7 * 86400

# One row per number: span number % 10 == 0 is the root of trace number / 10, the rest
# are its tool calls. u(k) is a uniform [0, 1] draw per span, tu(k) one per trace.
GENERATE = """
INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName,
                         ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration,
                         StatusCode, StatusMessage, Tenant)
WITH
    intDiv(number, 10) AS trace,
    number % 10 AS pos,
    pos = 0 AS is_root,
    k -> cityHash64(number, k) / 18446744073709551615 AS u,
    k -> cityHash64(trace, k) / 18446744073709551615 AS tu,
    1 + cityHash64(number, 1) % 20 AS tool_idx,
    ['web_search', 'fetch_url', 'sql_query', 'read_file', 'write_file', 'send_email', 'create_ticket',
     'lookup_customer', 'vector_search', 'run_python', 'calendar_lookup', 'translate', 'summarize',
     'get_weather', 'refund_order', 'check_inventory', 'slack_post', 'jira_search', 'github_search',
     'generate_image'][tool_idx] AS tool,
    ['triage', 'planner', 'researcher', 'refund-agent'][1 + cityHash64(trace, 2) % 4] AS agent,
    ['support-bot', 'research-agent', 'billing-assistant'][1 + cityHash64(trace, 3) % 3] AS service,
    NOT is_root AND u(4) < 0.02 + 0.015 * (tool_idx % 5) AS is_error,
    ['TimeoutError', 'HTTPError', 'ValueError', 'PermissionDenied'][1 + cityHash64(number, 5) % 4] AS error_type,
    {start_ns:UInt64} + toUInt64(trace / {traces:UInt64} * {spread_ns:UInt64}) + toUInt64(tu(6) * 300e9)
        AS trace_start_ns,
    lower(hex(MD5(toString(trace)))) AS trace_id,
    n -> lower(hex(substring(MD5(toString(n)), 1, 8))) AS span_id
SELECT
    fromUnixTimestamp64Nano(toInt64(trace_start_ns + pos * 1000000000)),
    trace_id,
    span_id(number),
    if(is_root, '', span_id(trace * 10)),
    if(is_root, concat('invoke_agent ', agent), concat('execute_tool ', tool)),
    if(is_root, 'Server', 'Internal'),
    service,
    map('service.name', service, 'telemetry.sdk.language', 'python'),
    'agent.sdk',
    '1.4.0',
    if(is_root,
       mapFilter((k, v) -> v != '', map(
           'gen_ai.operation.name', 'invoke_agent', 'gen_ai.agent.name', agent,
           'session.id', concat('sess-', toString(cityHash64(trace, 7) % 5000)),
           'user.id', concat('user-', toString(cityHash64(trace, 8) % 1000)),
           'input.value', concat('Please ', repeat('check the latest order status and report ', 4)),
           'gen_ai.usage.input_tokens', if({usage:UInt8}, toString(200 + cityHash64(trace, 13) % 4000), ''),
           'gen_ai.usage.output_tokens', if({usage:UInt8}, toString(20 + cityHash64(trace, 14) % 800), ''))),
       mapFilter((k, v) -> v != '', map(
           'gen_ai.operation.name', 'execute_tool', 'gen_ai.tool.name', tool,
           'gen_ai.tool.call.id', concat('call_', toString(number)),
           'gen_ai.tool.call.arguments', concat('{"query": "', repeat('lorem ipsum dolor ', 2 + number % 10),
                                                '", "request_id": "', toString(cityHash64(number, 9)), '"}'),
           'error.type', if(is_error, error_type, '')))),
    if(is_root, toUInt64((9 + 20 * tu(10)) * 1e9),
       toUInt64(1e6 * pow(10, 0.3 + 0.5 * (tool_idx % 4) + 2 * u(11)))),
    if(is_error, 'Error', 'Unset'),
    if(is_error, concat(error_type, ': ', tool, ' failed'), ''),
    if(cityHash64(trace, 12) % 10 < 7, 'acme', 'globex')
FROM numbers({first:UInt64}, {count:UInt64})
"""

WINDOW = "Tenant = {tenant:String} AND {time} >= toDateTime({start:UInt32}) AND {time} < toDateTime({end:UInt32})"

# quantilesDDMerge's parameters must be those of the column's state (0004): accuracy
# 0.01, levels 0.5, 0.9, 0.95, 0.99.
MV_QUERY = """
SELECT ToolName AS tool, sum(Calls) AS calls, sum(Errors) AS errors, (calls - errors) / calls AS success_rate,
       [(quantilesDDMerge(0.01, 0.5, 0.9, 0.95, 0.99)(DurationQuantiles) AS qs)[1], qs[3], qs[4]] AS quantiles
FROM {table}
WHERE {window}
GROUP BY tool ORDER BY tool
"""
MV_HOUR_QUERY = MV_QUERY.format(table="tool_stats_1h", window=WINDOW.replace("{time}", "Hour"))
MV_MINUTE_QUERY = MV_QUERY.format(table="tool_stats_1m", window=WINDOW.replace("{time}", "Minute"))

RAW_QUERY = f"""
SELECT spanhouse_tool_name(SpanAttributes, SpanName) AS tool, count() AS calls,
       countIf(spanhouse_is_error(StatusCode, SpanAttributes)) AS errors, (calls - errors) / calls AS success_rate,
       quantiles(0.5, 0.95, 0.99)(Duration) AS quantiles
FROM otel_traces
WHERE {WINDOW.replace('{time}', 'Timestamp')} AND spanhouse_is_tool(SpanAttributes)
GROUP BY tool ORDER BY tool
"""

# Untimed: exact quantiles, the reference the DDSketch estimates are judged against.
EXACT_QUERY = RAW_QUERY.replace("quantiles(0.5, 0.95, 0.99)", "quantilesExact(0.5, 0.95, 0.99)")


@dataclass(frozen=True)
class Stats:
    """One tool's numbers as compared: calls, errors and (p50, p95, p99) in ns. The success
    rate is computed by both queries (its cost counts) but follows from calls and errors."""

    calls: int
    errors: int
    quantiles_ns: tuple[float, ...]


def generate(client: Client, spans: int, chunk: int, end_s: int, days: int = 7, *, usage: bool = False) -> float:
    """Insert ``spans`` spans, ``chunk`` per INSERT, in the ``days`` days before ``end_s`` less
    its last hour, in time order as a live store receives them (each chunk a stretch of the
    days after the one before; a trace starts up to 5 minutes after its place, so
    neighbouring chunks overlap a little, as late arrivals do); return the seconds taken.
    ``usage`` puts token usage (200-4,200 input, 20-820 output) on every root span, as agent
    frameworks that total a run on its agent span do (pydantic-ai): the usage figures then
    need each trace grouped."""
    params = {"start_ns": (end_s - days * 86400) * 10**9, "spread_ns": (days * 86400 - 3600) * 10**9,
              "usage": int(usage), "traces": max(spans // 10, 1)}
    start = time.perf_counter()
    for first in range(0, spans, chunk):
        client.command(GENERATE, parameters={**params, "first": first, "count": min(chunk, spans - first)})
        print(f"  generated {min(first + chunk, spans):,} spans", flush=True)
    return time.perf_counter() - start


def run(client: Client, sql: str, params: dict[str, Any]) -> tuple[float, dict[str, Stats]]:
    """Milliseconds one execution took, and its per-tool stats."""
    start = time.perf_counter()
    rows = client.query(sql, parameters=params).result_rows
    ms = (time.perf_counter() - start) * 1000
    return ms, {r[0]: Stats(int(r[1]), int(r[2]), tuple(r[4])) for r in rows}


def bench(client: Client, sql: str, params: dict[str, Any], runs: int) -> tuple[float, dict[str, Stats]]:
    """Median milliseconds over ``runs`` executions after one warm-up, and the stats."""
    _, stats = run(client, sql, params)
    times = [run(client, sql, params)[0] for _ in range(runs)]
    return statistics.median(times), stats


def max_quantile_gap(mv: dict[str, Stats], raw: dict[str, Stats]) -> list[float]:
    """Largest relative difference, MV vs raw, of p50, p95 and p99 over all tools."""
    return [max(abs(mv[t].quantiles_ns[i] / raw[t].quantiles_ns[i] - 1) for t in raw) for i in range(3)]


def count(client: Client, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])


def report(client: Client, spans: int, gen_s: float, runs: int, results: dict[str, tuple[float, dict[str, Stats]]],
           raw: tuple[float, dict[str, Stats]], exact: dict[str, Stats]) -> None:
    raw_ms, raw_stats = raw
    print(f"\ngenerated {spans:,} spans in {gen_s:.1f} s ({spans / gen_s:,.0f} spans/s, all views firing)")
    print(f"otel_traces rows: {count(client, 'otel_traces'):,}; tool_stats_1m rows: "
          f"{count(client, 'tool_stats_1m'):,}; tool_stats_1h rows: {count(client, 'tool_stats_1h'):,}")
    print(f"\nper-tool stats, tenant {TENANT!r}, last 7 days: {len(raw_stats)} tools, "
          f"{sum(s.calls for s in raw_stats.values()):,} calls; median of {runs} runs after a warm-up")
    print(f"{'source':<28} {'median ms':>10} {'raw/this':>9}")
    for label, (ms, _) in results.items():
        print(f"{label:<28} {ms:>10.1f} {raw_ms / ms:>8.1f}x")
    print(f"{'raw (otel_traces)':<28} {raw_ms:>10.1f} {1:>8.1f}x")
    for label, (_, mv_stats) in results.items():
        agree = {t: (s.calls, s.errors) for t, s in mv_stats.items()} == \
                {t: (s.calls, s.errors) for t, s in raw_stats.items()}
        print(f"{label}: calls and errors agree with raw for every tool: {'YES' if agree else 'NO'}")
        if agree:
            p50, p95, p99 = max_quantile_gap(mv_stats, exact)
            within = max(p50, p95, p99) <= 0.01
            print(f"  largest relative error of its p50/p95/p99 vs exact quantiles: "
                  f"{p50:.2%} / {p95:.2%} / {p99:.2%} (DDSketch, documented bound 1%: "
                  f"{'within it' if within else 'OVER IT'})")
        else:
            for tool in sorted(mv_stats.keys() | raw_stats.keys()):
                print(f"  {tool}: MV {mv_stats.get(tool)}; raw {raw_stats.get(tool)}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spans", type=int, default=10_000_000, help="spans to generate")
    p.add_argument("--chunk", type=int, default=1_000_000, help="spans per INSERT ... SELECT")
    p.add_argument("--runs", type=int, default=5, help="timed runs of each query (after one warm-up)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    with temporary_store() as store:
        end_s = (int(time.time()) // 3600 + 1) * 3600  # hour-aligned: the coarsest MV grain
        gen_s = generate(store.client, args.spans, args.chunk, end_s)
        params = {"tenant": TENANT, "start": end_s - WEEK_S, "end": end_s}
        results = {"MV hourly (tool_stats_1h)": bench(store.client, MV_HOUR_QUERY, params, args.runs),
                   "MV minute (tool_stats_1m)": bench(store.client, MV_MINUTE_QUERY, params, args.runs)}
        raw = bench(store.client, RAW_QUERY, params, args.runs)
        exact = run(store.client, EXACT_QUERY, params)[1]
        report(store.client, args.spans, gen_s, args.runs, results, raw, exact)


if __name__ == "__main__":
    main()
