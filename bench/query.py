"""Query latency of the history and analytics API functions on a large store.

Why: the API and CLI answer from these functions; people expect list and detail pages
to feel instant. With ``--spans`` spans (default 10M, i.e. 1M executions of one root
and nine tool calls; generated inside ClickHouse exactly as bench/mv_vs_raw.py does,
every materialized view firing), spread over ``--days`` days (default 7; more shows how
a 7-day window fares in a store that keeps more history), this times each call ``--runs`` times after a warm-up
and prints p50/p95 in ms against the targets (< 100 ms p50 each; detail < 30 ms).

Every execution carries token usage on its agent span (``--no-usage`` leaves it out): the
statistics' usage figures and the performance tips' token-heavy sample then group the
window's executions by trace, their costliest case. The calls are timed twice: after the
background merges settle (what a store has soon after its inserts), and after OPTIMIZE
FINAL of every rollup (what a quiet store's merges reach in time, the best case). The
detail reads executions spread over the whole window, not the newest ones (which sit in
today's small, merged partition).
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from _store import settle, temporary_store
from clickhouse_connect.driver.client import Client
from mv_vs_raw import TENANT, generate

from spanhouse.clickhouse import analytics, history

TARGET_MS = {"detail": 30.0}
DEFAULT_TARGET_MS = 100.0


def timings(call: Callable[[], Any], runs: int) -> tuple[float, float]:
    """(p50, p95) in ms over ``runs`` calls after one warm-up."""
    call()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    # The nearest rank (ceil(0.95 n)): int(0.95 n) is the slowest sample of 20, a maximum.
    return statistics.median(samples), samples[math.ceil(0.95 * len(samples)) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--days", type=int, default=7,
                        help="days the spans are spread over (the windows queried are 7 days)")
    parser.add_argument("--no-usage", dest="usage", action="store_false",
                        help="no token usage on any span (the cheaper case of stats and performance)")
    args = parser.parse_args()
    with temporary_store() as store:
        client = store.client
        end_s = (int(time.time()) // 3600 + 1) * 3600
        gen_s = generate(client, args.spans, args.chunk, end_s, args.days, usage=args.usage)
        settle(client)
        # A different execution per call (one id asked again would be served from warm
        # caches), spread over the window by a hash of the id.
        ids = client.query("SELECT TraceId FROM executions WHERE Tenant = {t:String} ORDER BY cityHash64(TraceId) "
                           "LIMIT 100", parameters={"t": TENANT}).result_columns[0]
        traces = itertools.cycle(ids)
        # Through the store's reader pool, as the API reads; the "one client" rows are the
        # same calls with their queries one after the other (the baseline of gather).
        readers = store.readers
        calls: dict[str, Callable[[], Any]] = {
            "list (first page)": lambda: history.list_executions(readers, TENANT, {}, 50),
            "list (filtered)": lambda: history.list_executions(
                readers, TENANT, {"status": "ok", "service": "support-bot", "min_duration": 15000}, 50),
            "detail": lambda: history.get_execution(readers, TENANT, next(traces)),
            "detail (one client)": lambda: history.get_execution(client, TENANT, next(traces)),
            "stats": lambda: analytics.stats(readers, TENANT, days=7),
            "performance": lambda: analytics.performance(readers, TENANT, days=7),
            "performance (one client)": lambda: analytics.performance(client, TENANT, days=7),
            "tools": lambda: analytics.tools(readers, TENANT, days=7),
            "anomalies": lambda: analytics.anomalies(readers, TENANT, days=7),
        }
        print(f"\n{args.spans:,} spans ({args.spans // 10:,} executions) over {args.days} days generated in "
              f"{gen_s:.0f} s, {'with' if args.usage else 'without'} token usage on agent spans; {args.runs} runs "
              "each after a warm-up")
        report(calls, args.runs, f"after the background merges settled ({parts(client)})")
        # The best case: every rollup folded into one part per partition, what a quiet
        # store's merges reach in time (a busy one keeps several parts, as above).
        for table in ("executions", "execution_rollup", "tool_stats_1m", "tool_stats_1h", "tool_stats_1h_by_time",
                      "tool_stats_1d", "error_patterns"):
            client.command(f"OPTIMIZE TABLE {table} FINAL")
        settle(client)
        report(calls, args.runs, f"after OPTIMIZE FINAL of every rollup ({parts(client)})")


def parts(client: Client) -> str:
    """The active parts of the tables the calls read most, for the reader to judge the state."""
    rows = client.query("SELECT table, count() FROM system.parts WHERE active AND database = currentDatabase() "
                        "AND table IN ('otel_traces', 'executions', 'execution_rollup', 'tool_stats_1h') "
                        "GROUP BY table ORDER BY table").result_rows
    return "active parts: " + ", ".join(f"{t} {n}" for t, n in rows)


def report(calls: dict[str, Callable[[], Any]], runs: int, state: str) -> None:
    print(f"\n{state}")
    print(f"{'call':<26} {'p50 ms':>8} {'p95 ms':>8} {'target p50':>11}  met")
    for name, call in calls.items():
        p50, p95 = timings(call, runs)
        target = TARGET_MS.get(name.split(" ")[0], DEFAULT_TARGET_MS)
        met = "baseline" if name.endswith("(one client)") else "yes" if p50 < target else "NO"
        print(f"{name:<26} {p50:>8.1f} {p95:>8.1f} {target:>11.0f}  {met}", flush=True)


if __name__ == "__main__":
    main()
