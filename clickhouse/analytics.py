"""Analytics: execution stats, performance and tips, per-tool numbers and trends, anomalies.

Plain functions over a client and a tenant, returning JSON-ready dicts, like
``history.py``; the query API is a thin layer over them. Every query is tenant-scoped
and filters by tenant and time first, and reads the rollups where they exist
(``tool_stats_1h`` / ``tool_stats_1m``, ``execution_rollup``, ``error_patterns``);
``executions`` is read ``FINAL`` (a finished root replaces its running marker).

**Window.** ``days`` means the last ``days * 24`` hourly buckets, counting the current
(partial) hour: ``[start of this hour + 1 h - days, start of this hour + 1 h)``, so the
hourly rollup covers it exactly. The trend compares it with the window of the same
length just before it. Error patterns are counted per day, so their window starts at
the beginning of the day that holds the window's start.

**Percentiles.** Execution durations: exact (``quantilesExactInclusive``, linear
interpolation between closest ranks). Tool latencies: the same, from the tool's calls,
for a tool with fewer than ``EXACT_BELOW`` calls in the window (each bucket of a series
too); for busier tools, merged DDSketch states of the rollups, within 1% of the value
at rank floor(q * (n - 1)).

**Tips** (``performance``), each with the figures behind it:

- ``slow_tool``: of the tools with at least ``min_calls`` calls in the window, the
  ``TIPS_PER_KIND`` with the highest p95 latency (ties: name order).
- ``failing_tool``: of the tools with at least ``min_calls`` calls and at least one
  failure, the ``TIPS_PER_KIND`` with the highest error rate (ties: more failures first).
- ``token_heavy``: the span names that used the most tokens within the
  ``TOKEN_SAMPLE`` executions of the window with the most tokens (found in
  ``execution_rollup``, each execution by the sum of its rows in the window; only
  those traces are read from ``otel_traces``, within the
  seconds their spans cover), with their share of those executions' tokens. Per-span
  tokens exist only in ``otel_traces``, whose attribute maps cost ~3 ms per granule
  read, so the sample is small.
- ``repeated_tool``: tools called at least ``min_repeats`` times within one execution:
  ``tool_calls`` of the window grouped by trace and tool, for the traces that can have
  such a repeat (execution_rollup: ``ToolCalls >= distinct tools + min_repeats - 1``;
  the ``REPEAT_SAMPLE`` of them with the most repeated calls, so the lookup stays narrow;
  the tip says how many candidates there were and how many were examined): in how many
  executions, the most calls in one, an example trace.

Tokens and cost are those of the ``execution_rollup`` rows whose first span is in the
window (the rollup has no time key; this avoids joining a million executions). A trace
whose spans arrived in several inserts has one row per insert until the rollup's parts
merge in the background, so near the window's start (and for the repeat candidates) a
trace counts by insert rather than as a whole.

**Anomalies.** Per tool and bucket (hour or day) from ``tool_stats_1h``: the p95 latency
(ms) or the error rate (errors / calls) of each bucket with at least ``min_calls``
calls; buckets without enough calls are neither scored nor part of a baseline.

- ``zscore``: ``(value - mean) / std`` where mean and (sample) standard deviation are
  those of the tool's *other* buckets in the window; needs ``MIN_BASELINE`` of them.
- ``ewma``: the deviation from an exponentially weighted moving average, in units of
  its running standard deviation, both taken *before* the bucket is added: with
  ``d = x - mean``, ``mean += ALPHA * d`` and ``var = (1 - ALPHA) * (var + ALPHA * d * d)``
  (ALPHA = 0.3: the last ~3 buckets carry 2/3 of the weight). The first
  ``MIN_BASELINE`` buckets only warm it up.

The standard deviation is floored (``STD_FLOOR``: 1% of the baseline for latency, the
sketch's accuracy, and at least 1 ms; 0.02 for the error rate) so a perfectly flat
baseline does not turn every small change into an infinite score. Buckets with
``|score| >= threshold`` are returned, newest first.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from spanhouse.clickhouse import queries
from spanhouse.clickhouse.history import iso, jsonable
from spanhouse.clickhouse.pool import Reader, gather

EXECUTIONS = "executions"  # filter group of queries that read executions (alias e)
ANALYTICS = "analytics"  # filter group of queries over tool_calls / tool_stats_*

HOUR_S = 3600
DAY_S = 86400
BUCKETS = {  # bucket -> (rollup table, its time column, seconds per bucket)
    "minute": ("tool_stats_1m", "Minute", 60),
    "hour": ("tool_stats_1h", "Hour", HOUR_S),
    "day": ("tool_stats_1h", "Hour", DAY_S),
}

DURATION_BUCKETS = ("very_fast", "fast", "normal", "slow", "very_slow")
DEFAULT_THRESHOLDS_S = (1.0, 5.0, 30.0, 120.0)
"""Upper bounds (seconds, exclusive) of very_fast, fast, normal and slow; very_slow is the rest."""

QUANTILES = {"p50_ms": 0.5, "p90_ms": 0.9, "p95_ms": 0.95, "p99_ms": 0.99}  # the levels of tool_stats_* (0004)
EXACT_BELOW = 10_000
"""A tool with fewer calls than this in a window has its percentiles (of the window and
of each bucket of a series) computed exactly from its calls (analytics_tool_exact.sql),
not from the rollups' DDSketch, whose lower-rank answer hid the slowest of few calls (a
30 s call among ten of 100 ms: p99 100 ms). Busier tools read the sketch: within 1% of
the value at rank floor(q * (n - 1)), which from a thousand calls on is the exact
percentile's neighbour. The trend's previous p95 is on the window's basis (see
``EXACT_BESIDE``), so p95, previous p95 and their change agree, but past that bound."""
EXACT_BESIDE = 100_000
"""The previous window of an exact window's trend is read exactly too, up to this many
calls (a tool called less now); past it, that change compares the two sketches."""
TIPS_PER_KIND = 3
TOKEN_SAMPLE = 3  # executions whose spans are read from otel_traces (~6 granules each)
REPEAT_SAMPLE = 50  # candidate executions looked up in tool_calls (beyond ~20 that scan its TraceIds)
MAX_LOOKUP_SECONDS = 3600  # seconds listed to narrow that span lookup; beyond, the range only
ERROR_PATTERNS = 10
RECENT_ERRORS = 20

ALPHA = 0.3
MIN_BASELINE = 3
STD_FLOOR = {"latency_p95": ("relative", 0.01, 1.0), "error_rate": ("absolute", 0.02, 0.02)}
"""Per metric: the smallest standard deviation a score divides by, as (kind, share of
the mean or absolute amount, least amount): 1% of the mean latency but at least 1 ms
(a baseline of 0 ms, calls as short as the clock's step, scored 1 ms at 995,000,000
sigma), 2 points of error rate."""
MAX_MINUTE_BUCKET_DAYS = 7


@dataclass(frozen=True)
class Window:
    """``[since, until)`` in Unix seconds (hour-aligned) and the window before it."""

    days: int
    since: int
    until: int

    @property
    def prev_since(self) -> int:
        return self.since - self.days * DAY_S

    def params(self) -> dict[str, int]:
        return {"since": self.since, "until": self.until, "prev_since": self.prev_since}

    def describe(self) -> dict[str, Any]:
        return {"days": self.days, "since": _iso_s(self.since), "until": _iso_s(self.until)}


def window(days: int, now: float | None = None) -> Window:
    """The last ``days * 24`` hourly buckets, the current one included."""
    now_s = int(time.time() if now is None else now)
    until = now_s - now_s % HOUR_S + HOUR_S
    return Window(days, until - days * DAY_S, until)


def parse_thresholds(raw: str) -> tuple[float, ...]:
    """``"1,5,30,120"`` -> four increasing positive seconds; ValueError says what is wrong."""
    parts = [p.strip() for p in raw.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected {len(DEFAULT_THRESHOLDS_S)} comma-separated numbers of seconds, "
                         f"e.g. '1,5,30,120', got {raw!r}") from None
    return check_thresholds(values)


MAX_THRESHOLD_S = 1e10
"""The largest duration threshold: about 317 years, and its nanoseconds still fit the
UInt64 the durations are stored in (beyond ~1.8e10 s they do not)."""


def check_thresholds(values: Sequence[float]) -> tuple[float, ...]:
    """``values`` if they are four increasing positive seconds (what analytics_executions.sql
    assumes); ValueError says what is wrong."""
    if len(values) != len(DEFAULT_THRESHOLDS_S):
        raise ValueError(f"expected {len(DEFAULT_THRESHOLDS_S)} thresholds (the upper bounds of "
                         f"{', '.join(DURATION_BUCKETS[:-1])}), got {len(values)}")
    if not all(math.isfinite(v) and 0 < v <= MAX_THRESHOLD_S for v in values):
        raise ValueError(f"thresholds must be positive numbers of seconds, at most {MAX_THRESHOLD_S:.0f}")
    ns = _ns(values)  # as the durations are compared: below a nanosecond apart, two are one
    if ns[0] < 1 or any(b <= a for a, b in zip(ns, ns[1:])):
        raise ValueError(f"thresholds must be strictly increasing, at least a nanosecond (1e-9 s) apart and from "
                         f"zero, got {', '.join(map(str, values))}")
    return tuple(values)


def _ns(seconds: Sequence[float]) -> list[int]:
    return [int(round(t * 1e9)) for t in seconds]


# ---------------------------------------------------------------------------------- stats


def stats(client: Reader, tenant: str, days: int, name: str | None = None, now: float | None = None) -> dict[str, Any]:
    """Executions of the window: totals per status, success rate, durations, tokens and
    cost, a breakdown per type, first/last execution and a feedback summary."""
    w = window(days, now)
    params = _params(tenant, w, name)
    active = ["name"] if name else []
    (groups, total), (usage,), feedback = gather(
        client,
        lambda: _executions(client, params, active, DEFAULT_THRESHOLDS_S),
        lambda: _usage(client, params, active),
        lambda: queries.rows(client, "analytics_feedback", params, EXECUTIONS, active),
    )

    totals = {"total": 0, "ok": 0, "error": 0, "running": 0}
    types: dict[str, dict[str, Any]] = {}
    for g in groups:
        n = int(g["executions"])
        totals["total"] += n
        totals[g["status"]] = totals.get(g["status"], 0) + n
        t = types.setdefault(g["type"], {"type": g["type"], "executions": 0, "ok": 0, "error": 0, "running": 0,
                                         "_finished": 0, "_duration_ns": 0})
        t["executions"] += n
        t[g["status"]] = t.get(g["status"], 0) + n
        t["_finished"] += int(g["finished"])
        t["_duration_ns"] += int(g["duration_sum_ns"])
    by_type = []
    for t in sorted(types.values(), key=lambda t: (-t["executions"], t["type"])):
        finished, duration_ns = t.pop("_finished"), t.pop("_duration_ns")
        by_type.append({**t, "success_rate": _ratio(t["ok"], t["ok"] + t["error"]),
                        "avg_duration_ms": _ms(duration_ns / finished) if finished else None})
    tokens_in, tokens_out = int(usage["input_tokens"]), int(usage["output_tokens"])
    return {
        "window": w.describe(),
        "name": name,
        "executions": totals,
        "success_rate": _ratio(totals["ok"], totals["ok"] + totals["error"]),
        "duration_ms": {k: total[k] for k in ("finished", "avg", "p50", "p95")},
        "tokens": {"input": tokens_in, "output": tokens_out, "total": tokens_in + tokens_out},
        "cost_usd": round(float(usage["cost_usd"]), 8),
        "types": by_type,
        "most_common_type": by_type[0]["type"] if by_type else None,
        "first_execution": total["first"],
        "last_execution": total["last"],
        "feedback": [{"name": f["name"], "count": int(f["count"]), "with_value": int(f["with_value"]),
                      "average": None if f["average"] is None else round(f["average"], 6),
                      "min": f["min"], "max": f["max"]} for f in feedback],
    }


def _usage(client: Reader, params: dict[str, Any], active: list[str]) -> list[dict[str, Any]]:
    """The window's tokens and cost, each the model-call sum or the agent-span sum where
    the window's rows decide it for every execution alike, else each trace grouped (see
    analytics_usage.sql)."""
    (r,) = queries.rows(client, "analytics_usage", params, ANALYTICS, active)
    tokens = _uniform(r["call_token_rows"], r["agent_only_token_rows"])
    cost = _uniform(r["call_cost_rows"], r["agent_only_cost_rows"])
    if tokens is None or cost is None:
        return queries.rows(client, "analytics_usage_by_trace", params, ANALYTICS, active)
    return [{"input_tokens": r[f"{tokens}input_tokens"], "output_tokens": r[f"{tokens}output_tokens"],
             "cost_usd": r[f"{cost}cost_usd"]}]


def _uniform(call_rows: int, agent_only_rows: int) -> str | None:
    """Which sum is every execution's figure ('' the model calls', 'agent_' the agent
    spans'), or None when the rows leave it to each trace: without agent usage lacking
    calls' beside it, an execution's calls decide (its agent usage, if any, sits in a
    row with usage of calls); without any calls' usage, its agent spans do."""
    if not agent_only_rows:
        return ""
    if not call_rows:
        return "agent_"
    return None


def _params(tenant: str, w: Window, name: str | None) -> dict[str, Any]:
    return {"tenant": tenant, **w.params(), **({"name": name} if name else {})}


def _executions(client: Reader, params: Mapping[str, Any], active: Sequence[str],
                thresholds_s: Sequence[float], by_group: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows per (type, status) (none unless ``by_group``) and the window's total:
    finished count, average and p50/p95 duration (ms), count per duration bucket, first
    and last start."""
    thresholds_ns = _ns(check_thresholds(thresholds_s))
    rows = queries.rows(client, "analytics_executions" if by_group else "analytics_executions_total",
                        {**params, "thresholds_ns": thresholds_ns}, EXECUTIONS, active)
    groups = [r for r in rows if not r["is_total"]]
    total_row = next((r for r in rows if r["is_total"] and r["executions"]), None)  # none: no execution
    finished = int(total_row["finished"]) if total_row else 0
    total: dict[str, Any] = {"finished": finished, "avg": None, "p50": None, "p95": None,
                             "buckets": [0] * (len(thresholds_s) + 1), "first": None, "last": None}
    if total_row:
        total.update(first=iso(total_row["first_start"]), last=iso(total_row["last_start"]))
    if finished:
        p50, p95 = total_row["quantiles_ns"]  # type: ignore[index]
        total.update(avg=_ms(total_row["duration_sum_ns"] / finished), p50=_ms(p50), p95=_ms(p95),  # type: ignore[index]
                     buckets=[int(c) for c in total_row["buckets"]])  # type: ignore[index]
    return groups, total


# ---------------------------------------------------------------------------- performance


def performance(client: Reader, tenant: str, days: int, name: str | None = None,
                thresholds_s: Sequence[float] = DEFAULT_THRESHOLDS_S, min_calls: int = 10, min_repeats: int = 5,
                now: float | None = None) -> dict[str, Any]:
    """Duration distribution, top error patterns and rule-based optimization tips.

    ``name`` restricts what is measured per execution (the distribution, token-heavy
    and repeated-tool tips); tool latencies, failure rates and error patterns come from
    the tenant-wide rollups, which do not record the execution a call belonged to.
    """
    w = window(days, now)
    params = _params(tenant, w, name)
    active = ["name"] if name else []
    (_, total), patterns, tool_rows, token_tips, repeat_tips = gather(
        client,
        lambda: _executions(client, params, active, thresholds_s, by_group=False),
        lambda: queries.rows(client, "analytics_error_patterns", {**params, "limit": ERROR_PATTERNS}),
        # the current window only: prev_since = since leaves the previous one empty
        lambda: _tool_stats(client, {**params, "prev_since": w.since}, min_calls),
        lambda: _token_tips(client, params, active),
        lambda: _repeat_tips(client, params, active, min_repeats),
    )
    finished = total["finished"]
    bounds = [None, *thresholds_s, None]
    distribution = [{"bucket": b, "min_s": bounds[i], "max_s": bounds[i + 1], "executions": c,
                     "share": _ratio(c, finished)}
                    for i, (b, c) in enumerate(zip(DURATION_BUCKETS, total["buckets"]))]
    tools = [_tool_item(r) for r in tool_rows]
    tips = [*_slow_tool_tips(tools), *_failing_tool_tips(tools), *token_tips, *repeat_tips]
    return {
        "window": w.describe(),
        "name": name,
        "duration": {"finished": finished, "avg_ms": total["avg"], "p50_ms": total["p50"], "p95_ms": total["p95"],
                     "thresholds_s": list(thresholds_s), "buckets": distribution},
        "error_patterns": [jsonable(p) for p in patterns],
        "tips": tips,
        "rules": {"min_calls": min_calls, "min_repeats": min_repeats, "tips_per_kind": TIPS_PER_KIND,
                  "token_sample": TOKEN_SAMPLE, "repeat_sample": REPEAT_SAMPLE},
    }


def _slow_tool_tips(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ranked = sorted((t for t in tools if t["p95_ms"] is not None), key=lambda t: (-t["p95_ms"], t["tool"]))
    return [{"kind": "slow_tool", "tool": t["tool"], "p95_ms": t["p95_ms"], "p50_ms": t["p50_ms"],
             "p99_ms": t["p99_ms"], "calls": t["calls"],
             "message": f"{t['tool']} is among the slowest tools: p95 {t['p95_ms']:.0f} ms (p50 {t['p50_ms']:.0f} ms) "
                        f"over {t['calls']} calls; consider caching, a timeout or a faster alternative"}
            for t in ranked[:TIPS_PER_KIND]]


def _failing_tool_tips(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ranked = sorted((t for t in tools if t["errors"] > 0), key=lambda t: (-t["error_rate"], -t["errors"], t["tool"]))
    return [{"kind": "failing_tool", "tool": t["tool"], "error_rate": t["error_rate"], "errors": t["errors"],
             "calls": t["calls"],
             "message": f"{t['tool']} fails {t['error_rate']:.1%} of its calls ({t['errors']} of {t['calls']}); "
                        "see its recent errors and add retries or input validation"}
            for t in ranked[:TIPS_PER_KIND]]


def _token_tips(client: Reader, params: dict[str, Any], active: list[str]) -> list[dict[str, Any]]:
    top = queries.rows(client, "analytics_token_executions", {**params, "limit": TOKEN_SAMPLE}, ANALYTICS, active)
    if not top:
        return []
    sampled = sum(int(r["input_tokens"] + r["output_tokens"]) for r in top)
    # Counted before they are listed: one trace claiming to last years must not make a
    # set of a billion seconds.
    covered = sum(r["last_seen_s"] - r["first_seen_s"] + 1 for r in top)
    seconds = sorted({s for r in top for s in range(r["first_seen_s"], r["last_seen_s"] + 1)}) \
        if covered <= MAX_LOOKUP_SECONDS else []
    spans = queries.rows(client, "analytics_token_spans", {
        "tenant": params["tenant"], "trace_ids": [r["trace_id"] for r in top], "limit": TIPS_PER_KIND,
        "start_s": min(r["first_seen_s"] for r in top), "end_s": max(r["last_seen_s"] for r in top),
        "seconds": seconds})
    tips = []
    for s in spans:
        tokens = int(s["input_tokens"] + s["output_tokens"])
        share = _ratio(tokens, sampled)
        tips.append({"kind": "token_heavy", "span_name": s["span_name"], "tokens": tokens,
                     "input_tokens": int(s["input_tokens"]), "output_tokens": int(s["output_tokens"]),
                     "spans": int(s["spans"]), "executions": int(s["executions"]), "share": share,
                     "sampled_executions": len(top), "sampled_tokens": sampled,
                     "sampled_trace_ids": [r["trace_id"] for r in top],
                     "message": f"'{s['span_name']}' used {share:.0%} of the tokens of the {len(top)} most "
                                f"token-heavy executions ({tokens:,} of {sampled:,} tokens in {s['spans']} spans); "
                                "consider a smaller model, shorter prompts or caching"})
    return tips


def _repeat_tips(client: Reader, params: dict[str, Any], active: list[str], min_repeats: int) -> list[dict[str, Any]]:
    candidates = queries.rows(client, "analytics_repeat_candidates",
                              {**params, "min_repeats": min_repeats, "limit": REPEAT_SAMPLE}, ANALYTICS, active)
    if not candidates:
        return []
    rows = queries.rows(client, "analytics_repeated_tools",
                        {"tenant": params["tenant"], "min_repeats": min_repeats, "limit": TIPS_PER_KIND,
                         "trace_ids": sorted({c["trace_id"] for c in candidates})})
    total = int(candidates[0]["candidates"])
    among = f" of the {len(candidates)} examined" if total > len(candidates) else ""
    return [{"kind": "repeated_tool", "tool": r["tool"], "executions": int(r["executions"]),
             "max_calls": int(r["max_calls"]), "calls": int(r["calls"]), "min_repeats": min_repeats,
             "example_trace_id": r["example_trace_id"], "examined_executions": len(candidates),
             "candidate_executions": total,
             "message": f"{r['tool']} was called {min_repeats} or more times within one execution in "
                        f"{r['executions']} execution(s){among} (up to {r['max_calls']} calls, e.g. trace "
                        f"{r['example_trace_id']}); consider caching its results or batching the calls"}
            for r in rows]


# ---------------------------------------------------------------------------------- tools

def _tool_stats(client: Reader, params: dict[str, Any], min_calls: int,
                active: Sequence[str] = ()) -> list[dict[str, Any]]:
    """analytics_tool_stats.sql over the windows [since, until) and [prev_since, since)
    of ``params``, each one's whole UTC days read from the daily rollup."""
    days, prev_days = _whole_days(params["since"], params["until"]), _whole_days(params["prev_since"], params["since"])
    rows = queries.rows(client, "analytics_tool_stats", {
        **params, "min_calls": min_calls, "days_since": days[0], "days_until": days[1],
        "prev_days_since": prev_days[0], "prev_days_until": prev_days[1]}, ANALYTICS, active)
    # The window's own count decides (the same in every caller: performance() reads no
    # previous window); the previous one follows it, for a trend of like with like.
    exact_now = [r for r in rows if 0 < r["calls"] < EXACT_BELOW]
    exact_prev = [r for r in exact_now if 0 < r["prev_calls"] < EXACT_BESIDE]
    for r in exact_now:
        if r["prev_calls"] >= EXACT_BESIDE:  # its trend compares these two (_tool_item)
            r["trend_sketches_ns"] = (r["quantiles_ns"], r["prev_quantiles_ns"])
    for few, key, since, until in ((exact_now, "quantiles_ns", params["since"], params["until"]),
                                   (exact_prev, "prev_quantiles_ns", params["prev_since"], params["since"])):
        exact = _exact(client, {**params, "since": since, "until": until}, active, [r["tool"] for r in few], 0)
        for r in few:
            r[key] = exact.get((r["tool"], since), r[key])
    return rows


def _exact(client: Reader, params: Mapping[str, Any], active: Sequence[str], tools: list[str],
           bucket_s: int) -> dict[tuple[str, int], list[float]]:
    """Exact percentiles of ``tools`` in ``params``' window, by (tool, bucket start in
    Unix seconds); ``bucket_s`` 0: one bucket, the window's."""
    if not tools:
        return {}
    rows = queries.rows(client, "analytics_tool_exact", {**params, "tools": tools, "bucket_s": bucket_s},
                        ANALYTICS, active)
    return {(r["tool"], _unix(r["bucket"])): r["quantiles_ns"] for r in rows}


def _unix(at: datetime) -> int:
    """A bucket's start in Unix seconds, whatever time zone the driver gave it."""
    return int((at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp())


def _whole_days(since: int, until: int) -> tuple[int, int]:
    """The first and past-the-last UTC midnight of the whole days in [since, until), in
    Unix seconds; an empty range (since, since) when it holds no whole day."""
    first, last = -(-since // DAY_S) * DAY_S, until // DAY_S * DAY_S
    return (first, last) if first < last else (since, since)


TOOL_SORTS = {
    "calls": lambda t: t["calls"],
    "error_rate": lambda t: t["error_rate"],
    "p95": lambda t: t["p95_ms"],
    "p99": lambda t: t["p99_ms"],
    "name": lambda t: t["tool"],
}


def tools(client: Reader, tenant: str, days: int, sort: str = "calls", order: str = "desc", min_calls: int = 1,
          limit: int = 100, now: float | None = None) -> dict[str, Any]:
    """Per tool over the window: calls, success and error rate, latency percentiles, and
    the trend against the previous window of the same length."""
    w = window(days, now)
    rows = _tool_stats(client, {"tenant": tenant, **w.params()}, min_calls)
    items = sorted((_tool_item(r) for r in rows), key=lambda t: t["tool"])
    items.sort(key=TOOL_SORTS[sort], reverse=order == "desc")  # stable: ties stay in name order
    return {"window": w.describe(), "sort": sort, "order": order, "min_calls": min_calls, "total": len(items),
            "tools": items[:limit]}


def _tool_item(r: Mapping[str, Any]) -> dict[str, Any]:
    calls, errors = int(r["calls"]), int(r["errors"])
    q = _quantiles(r["quantiles_ns"] if calls else [])
    prev_calls, prev_errors = int(r["prev_calls"]), int(r["prev_errors"])
    prev_p95 = _quantiles(r["prev_quantiles_ns"])["p95_ms"] if prev_calls else None
    p95_change = None
    if prev_p95 is not None and q["p95_ms"] is not None:
        now_p95, before_p95 = q["p95_ms"], prev_p95
        if "trend_sketches_ns" in r:  # exact now, EXACT_BESIDE calls or more before
            now_p95, before_p95 = (_quantiles(ns)["p95_ms"] for ns in r["trend_sketches_ns"])
        p95_change = (round(now_p95 - before_p95, 3), _pct(now_p95, before_p95))  # type: ignore[operator]
    error_rate = _ratio(errors, calls)
    prev_rate = _ratio(prev_errors, prev_calls)
    return {
        "tool": r["tool"], "services": list(r["services"]),
        "calls": calls, "errors": errors, "success_rate": _ratio(calls - errors, calls), "error_rate": error_rate,
        "avg_ms": _ms(r["duration_sum_ns"] / calls) if calls else None,
        "max_ms": _ms(r["duration_max_ns"]) if calls else None,
        **q,
        "trend": {
            "previous_calls": prev_calls,
            "calls_change": calls - prev_calls,
            "calls_change_pct": _pct(calls, prev_calls),
            "previous_error_rate": prev_rate,
            "error_rate_change": None if prev_rate is None or error_rate is None else round(error_rate - prev_rate, 6),
            "previous_p95_ms": prev_p95,
            "p95_change_ms": None if p95_change is None else p95_change[0],
            "p95_change_pct": None if p95_change is None else p95_change[1],
        },
    }


def tool_detail(client: Reader, tenant: str, tool: str, days: int, bucket: str = "hour",
                now: float | None = None) -> dict[str, Any] | None:
    """One tool: summary and trend, a time series per minute, hour or day, its newest
    failures and when it was first and last called; None if the tenant never called it."""
    seen = queries.rows(client, "analytics_tool_seen", {"tenant": tenant, "tool": tool})[0]
    if not seen["total_calls"]:
        return None
    w = window(days, now)
    params = {"tenant": tenant, "tool": tool, **w.params()}
    summary = _tool_stats(client, params, 1, ["tool"])
    series = _series(client, params, bucket, ["tool"])
    errors = queries.rows(client, "analytics_tool_errors", {**params, "limit": RECENT_ERRORS})
    return {
        "tool": tool,
        "window": w.describe(),
        "bucket": bucket,
        "first_seen": iso(seen["first_seen"]),
        "last_seen": iso(seen["last_seen"]),
        "total_calls": int(seen["total_calls"]),
        "summary": _tool_item(summary[0]) if summary else None,
        "series": [{"time": iso(p["bucket"]), "calls": int(p["calls"]), "errors": int(p["errors"]),
                    "error_rate": _ratio(p["errors"], p["calls"]), "avg_ms": _ms(p["duration_sum_ns"] / p["calls"]),
                    **{k: v for k, v in _quantiles(p["quantiles_ns"]).items() if k != "p90_ms"}} for p in series],
        "recent_errors": [jsonable(e) for e in errors],
    }


def _series(client: Reader, params: dict[str, Any], bucket: str, active: list[str],
            quantiles: bool = True) -> list[dict[str, Any]]:
    """Per tool and bucket: calls, errors and (if ``quantiles``) duration sum and percentiles."""
    rollup, at, bucket_s = BUCKETS[bucket]
    rows = queries.rows(client, "analytics_tool_series" if quantiles else "analytics_tool_counts",
                        {**params, "rollup": rollup, "at": at, "bucket_s": bucket_s}, ANALYTICS, active)
    if quantiles:
        calls: dict[str, int] = defaultdict(int)
        for r in rows:
            calls[r["tool"]] += r["calls"]
        few = {t for t, n in calls.items() if n < EXACT_BELOW}
        exact = _exact(client, params, active, sorted(few), bucket_s)
        for r in rows:
            if r["tool"] in few:  # the others' buckets are many: no lookup key made for them
                r["quantiles_ns"] = exact.get((r["tool"], _unix(r["bucket"])), r["quantiles_ns"])
    return rows


# ------------------------------------------------------------------------------ anomalies


def anomalies(client: Reader, tenant: str, metric: str = "latency_p95", method: str = "zscore",
              threshold: float = 3.0, days: int = 7, bucket: str = "hour", min_calls: int = 5, limit: int = 100,
              now: float | None = None) -> dict[str, Any]:
    """Buckets whose per-tool p95 latency or error rate is ``threshold`` or more standard
    deviations from the tool's baseline (see the module docstring), newest first."""
    w = window(days, now)
    rows = _series(client, {"tenant": tenant, **w.params()}, bucket, [], quantiles=metric == "latency_p95")
    per_tool: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["calls"] >= min_calls:
            value = (_quantiles(r["quantiles_ns"])["p95_ms"] if metric == "latency_p95"
                     else round(r["errors"] / r["calls"], 6))
            per_tool[r["tool"]].append({"time": r["bucket"], "value": value, "calls": int(r["calls"]),
                                        "errors": int(r["errors"])})
    score = _zscores if method == "zscore" else _ewma_scores
    found = []
    scored = 0  # tools with a baseline long enough for a score
    for tool, points in per_tool.items():
        scores = score([p["value"] for p in points], metric)
        scored += any(s is not None for s, _, _ in scores)
        for p, (s, baseline, std) in zip(points, scores):
            if s is not None and abs(s) >= threshold:
                found.append({"tool": tool, "time": p["time"], "value": p["value"], "baseline": round(baseline, 6),
                              "std": round(std, 6), "score": round(s, 3), "calls": p["calls"], "errors": p["errors"],
                              "direction": "above" if s > 0 else "below",
                              "hint": _hint(tool, metric, method, p, s, baseline, days)})
    found.sort(key=lambda a: (a["time"], abs(a["score"])), reverse=True)
    out = {"window": w.describe(), "metric": metric, "method": method, "threshold": threshold, "bucket": bucket,
           "min_calls": min_calls, "tools_scored": scored, "total": len(found),
           "anomalies": [{**a, "time": iso(a["time"])} for a in found[:limit]]}
    if method == "ewma":
        out["alpha"] = ALPHA
    return out


def _floor(metric: str, mean: float) -> float:
    kind, amount, least = STD_FLOOR[metric]
    return max(amount * abs(mean), least) if kind == "relative" else amount


def _zscores(values: list[float], metric: str) -> list[tuple[float | None, float, float]]:
    """Per value: its z-score against the other values (None without enough of them).

    Leave-one-out mean and sample variance from the sums of the (shifted) values, so a
    tool's series costs O(n), not O(n^2)."""
    n = len(values)
    if n - 1 < MIN_BASELINE:
        return [(None, 0.0, 0.0)] * n
    shift = statistics.fmean(values)
    d = [x - shift for x in values]
    total, squares = math.fsum(d), math.fsum(x * x for x in d)
    out: list[tuple[float | None, float, float]] = []
    for x, dx in zip(values, d):
        m = n - 1
        mean_d = (total - dx) / m
        var = max((squares - dx * dx - m * mean_d * mean_d) / (m - 1), 0.0)
        mean = shift + mean_d
        std = max(math.sqrt(var), _floor(metric, mean))
        out.append(((x - mean) / std, mean, std))
    return out


def _ewma_scores(values: list[float], metric: str) -> list[tuple[float | None, float, float]]:
    """Per value: its deviation from the EWMA of the values before it, in running stds."""
    out: list[tuple[float | None, float, float]] = []
    mean, var = 0.0, 0.0
    for i, x in enumerate(values):
        if i == 0:
            mean = x
            out.append((None, 0.0, 0.0))
            continue
        std = max(math.sqrt(var), _floor(metric, mean))
        out.append(((x - mean) / std if i >= MIN_BASELINE else None, mean, std))
        d = x - mean
        mean += ALPHA * d
        var = (1 - ALPHA) * (var + ALPHA * d * d)
    return out


def _hint(tool: str, metric: str, method: str, p: Mapping[str, Any], score: float, baseline: float, days: int) -> str:
    where = "above" if score > 0 else "below"
    against = f"its {days}-day mean" if method == "zscore" else f"its moving average (EWMA, alpha {ALPHA})"
    if metric == "latency_p95":
        return (f"p95 latency of {tool} {p['value']:.0f} ms is {abs(score):.1f} sigma {where} {against} "
                f"{baseline:.0f} ms")
    return (f"error rate of {tool} {p['value']:.1%} ({p['errors']} of {p['calls']} calls) is {abs(score):.1f} sigma "
            f"{where} {against} {baseline:.1%}")


# -------------------------------------------------------------------------------- helpers


def _quantiles(values_ns: Sequence[float]) -> dict[str, float | None]:
    """The DDSketch levels (0.5, 0.9, 0.95, 0.99) in ns -> p50_ms … p99_ms."""
    if not values_ns:
        return dict.fromkeys(QUANTILES)
    return {n: _ms(v) for n, v in zip(QUANTILES, values_ns)}


def _ms(ns: float | None) -> float | None:
    if ns is None or (isinstance(ns, float) and not math.isfinite(ns)):
        return None
    return round(ns / 1e6, 3)


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


def _pct(now: float, before: float) -> float | None:
    return round((now - before) / before * 100, 2) if before else None


def _iso_s(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()
