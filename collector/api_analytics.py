"""The analytics part of the query API: execution stats, performance and tips, per-tool
numbers and trends, anomalies. Thin endpoints over ``spanhouse.clickhouse.analytics``
(whose docstring defines the window, the tips and the anomaly scores).

Every endpoint needs the ``read`` scope and sees only the caller's tenant. ``days`` is
1-365 (the last ``days * 24`` hourly buckets, the current one included); bad
parameters are 422 with the parameter's name in ``detail[].loc``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.exceptions import RequestValidationError
from starlette.convertors import PathConvertor, register_url_convertor

from spanhouse.clickhouse import analytics as numbers
from spanhouse.collector.api import AUTH_RESPONSES, Context, Reader

analytics = APIRouter(prefix="/api/v1", tags=["analytics"], responses=AUTH_RESPONSES)


class _Text(PathConvertor):
    """A path parameter of any characters, '/' and line breaks included: a tool name is
    whatever the spans said, and Starlette's ``path`` (``.*``) stops at a newline."""

    regex = r"[\s\S]*"


register_url_convertor("text", _Text())

Days = Annotated[int, Query(ge=1, le=365, description="the last `days` × 24 hourly buckets, the current one included")]
Name = Annotated[str | None, Query(min_length=1, max_length=512, description="only executions with this name")]
Thresholds = Annotated[str, Query(max_length=200, description=(
    "upper bounds in seconds of very_fast, fast, normal and slow (very_slow is the rest), strictly "
    "increasing"))]


def _invalid(param: str, message: str, value: Any) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("query", param), "msg": message, "input": value}])


@analytics.get("/stats")
def stats(who: Reader, ctx: Context, days: Days = 7, name: Name = None) -> dict[str, Any]:
    """Executions started in the window: totals per status (ok/error/running), success rate
    (ok / finished), average/p50/p95 duration of the finished ones (exact), tokens and
    cost (execution rollup rows of the traces whose first span is in the window), a
    breakdown per type with its success rate and average duration, the most common type,
    first and last start, and per feedback name given on these executions: how many,
    how many carry a value, and the average/min/max of those (feedback sent over OTLP
    without a numeric value, a comment alone, counts but is not averaged)."""
    return numbers.stats(ctx.store.readers, who.tenant, days, name)


@analytics.get("/performance")
def performance(who: Reader, ctx: Context, days: Days = 7, name: Name = None,
                thresholds: Thresholds = "1,5,30,120",
                min_calls: Annotated[int, Query(ge=1, le=1_000_000, description=(
                    "tools with fewer calls in the window get no slow/failing tip"))] = 10,
                min_repeats: Annotated[int, Query(ge=2, le=100_000, description=(
                    "calls of one tool within one execution that make a repeated_tool tip"))] = 5,
                ) -> dict[str, Any]:
    """Duration distribution of the finished executions in named buckets (very_fast < 1 s,
    fast 1-5 s, normal 5-30 s, slow 30-120 s, very_slow >= 120 s by default; lower bounds
    inclusive), the top error patterns, and optimization tips with the figures behind
    them: slow_tool (highest p95), failing_tool (highest error rate), token_heavy (span
    names using the most tokens in the most token-heavy executions) and repeated_tool
    (tools called `min_repeats`+ times in one execution).

    `name` restricts the distribution and the token_heavy and repeated_tool tips; tool
    latencies, failure rates and error patterns are tenant-wide (their rollups do not
    record which execution a call belonged to)."""
    try:
        bounds = numbers.parse_thresholds(thresholds)
    except ValueError as exc:
        raise _invalid("thresholds", str(exc), thresholds) from exc
    return numbers.performance(ctx.store.readers, who.tenant, days, name, bounds, min_calls, min_repeats)


@analytics.get("/tools")
def tools(who: Reader, ctx: Context, days: Days = 7,
          sort: Annotated[Literal["calls", "error_rate", "p95", "p99", "name"], Query()] = "calls",
          order: Annotated[Literal["desc", "asc"], Query()] = "desc",
          min_calls: Annotated[int, Query(ge=1, le=1_000_000_000, description="leave out tools with fewer calls")] = 1,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Per tool in the window (from the hourly rollup): calls, success and error rate,
    average/max and p50/p90/p95/p99 latency (exact, linear between the nearest calls,
    for tools with fewer than 10,000 calls in the window; else DDSketch, 1% relative
    accuracy), and the trend against the previous window of the same length (calls,
    error rate and p95 change). Ties are in name order."""
    return numbers.tools(ctx.store.readers, who.tenant, days, sort, order, min_calls, limit)


@analytics.get("/tools/{name:text}", responses={404: {"description": "this tenant never called this tool"}})
def tool(who: Reader, ctx: Context, name: Annotated[str, Path(min_length=1)], days: Days = 7,
         bucket: Annotated[Literal["minute", "hour", "day"], Query(description=(
             f"minute (tool_stats_1m; days <= {numbers.MAX_MINUTE_BUCKET_DAYS}), hour or day (tool_stats_1h)"))] = "hour",
         ) -> dict[str, Any]:
    """One tool: its summary and trend over the window, a time series (calls, errors,
    p50/p95/p99 per bucket that has calls), its newest 20 failures in the window (time,
    trace id, error type, message) and when it was first and last called."""
    if bucket == "minute" and days > numbers.MAX_MINUTE_BUCKET_DAYS:
        raise _invalid("bucket", f"bucket=minute allows days <= {numbers.MAX_MINUTE_BUCKET_DAYS} "
                                 f"(got days={days}); use bucket=hour or day", bucket)
    found = numbers.tool_detail(ctx.store.readers, who.tenant, name, days, bucket)
    if found is None:
        raise HTTPException(404, f"no tool {name!r}")
    return found


@analytics.get("/anomalies")
def anomalies(who: Reader, ctx: Context,
              metric: Annotated[Literal["latency_p95", "error_rate"], Query()] = "latency_p95",
              method: Annotated[Literal["zscore", "ewma"], Query()] = "zscore",
              threshold: Annotated[float, Query(gt=0, le=1000, description="report |score| >= this")] = 3.0,
              days: Days = 7,
              bucket: Annotated[Literal["hour", "day"], Query()] = "hour",
              min_calls: Annotated[int, Query(ge=1, le=1_000_000, description=(
                  "buckets with fewer calls are neither scored nor part of a baseline"))] = 5,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Per tool and bucket, the p95 latency or error rate, scored against the tool's
    baseline: zscore (vs the mean and standard deviation of its other buckets in the
    window) or ewma (vs an exponentially weighted moving average and its running
    variance, alpha 0.3). Returns the buckets with |score| >= threshold, newest first,
    each with a readable hint."""
    return numbers.anomalies(ctx.store.readers, who.tenant, metric, method, threshold, days, bucket, min_calls, limit)
