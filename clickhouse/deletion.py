"""Deleting executions from every table, including the aggregate rollups.

Tables keyed by trace lose the trace's rows (``queries/delete_traces.sql``). Aggregate
tables cannot subtract one trace, so the groups it contributed to are recomputed from
what remains: the affected groups' rows are deleted and the rollup view's own SELECT
(read back from the engine, so it is never written twice) is run again over the
surviving source rows of those groups. ``tool_stats_1m`` is recomputed per hour, which
its views then rebuild in ``tool_stats_1h`` and ``tool_stats_1h_by_time`` as on any
insert. The daily view adds only those hours to ``tool_stats_1d``, so the days touched
are rebuilt afterwards, whole, from ``tool_stats_1h_by_time``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from spanhouse.clickhouse import queries, sqlfiles
from spanhouse.clickhouse.pool import Reader
from spanhouse.errors import StoreUnavailable


@dataclass(frozen=True)
class _Rollup:
    """An aggregate table, the view feeding it and the table that view reads. How its
    groups are named, found and cleared is in ``queries/rollups/<target>.sql``."""

    view: str
    target: str
    source: str

    def sql(self, block: str) -> str:
        """Block ``affected``, ``clear`` or ``source`` of the rollup's file."""
        return queries.blocks(f"rollups/{self.target}")[block]


_ROLLUPS = (  # in this order: a rollup read by a later one is rebuilt first
    _Rollup("tool_stats_1m_mv", "tool_stats_1m", "tool_calls"),
    _Rollup("tool_stats_1d_mv", "tool_stats_1d", "tool_stats_1h_by_time"),
    _Rollup("error_patterns_mv", "error_patterns", "otel_traces"),
)

_NO_DEDUP = {"insert_deduplicate": 0, "mutations_sync": 2, "lightweight_deletes_sync": 2}


CHUNK = 5_000
"""Traces deleted together. A statement's ``TraceId IN`` list of 40k ids took 25 s where
10k took 0.1 s, and a 30k-execution deletion, holding ingest off, took 4 minutes."""


def delete_traces(client: Reader, tenant: str, trace_ids: Sequence[str],
                  ingest_paused: Callable[[], AbstractContextManager[object]] | None = None,
                  stopping: threading.Event | None = None) -> dict[str, int]:
    """Remove ``trace_ids`` of ``tenant`` everywhere; returns executions and spans removed.

    The traces go ``CHUNK`` at a time, each chunk from every table and rollup before the
    next starts. ``ingest_paused`` (the store writer's ``paused``) holds inserts off
    during each chunk: a tool call inserted between a group's rows being cleared and
    recomputed would be counted by its view and by the recomputation. Without it (a
    script with no writer of its own) nothing else should be writing. ``stopping`` set
    (the collector stopping) ends the deletion between chunks: ``StoreUnavailable`` says
    how many were deleted, whole, and the rest are untouched.
    """
    ids = sorted(set(trace_ids))
    removed = {"executions": 0, "spans": 0}
    if not ids:
        return removed
    # read once, before any change, as each chunk's reads are: a read cancelled (the
    # collector stopping) then ends the deletion with nothing changed
    projected = [row["table"] for row in queries.rows(client, "tables_with_projections", {})]
    selects = {r: queries.rows(client, "view_select", {"view": r.view})[0]["as_select"] for r in _ROLLUPS}
    started = False
    try:
        for start in range(0, len(ids), CHUNK):
            if stopping is not None and stopping.is_set():
                raise StoreUnavailable(f"the collector is stopping: {start} of {len(ids)} trace ids were deleted "
                                       "(each from every table); delete again for the rest")
            started = True
            with ingest_paused() if ingest_paused is not None else nullcontext():
                chunk = _delete_chunk(client, tenant, ids[start:start + CHUNK], selects)
            removed = {k: removed[k] + chunk[k] for k in removed}
    finally:
        if started:
            _apply_masks(client, projected)
    return removed


def _delete_chunk(client: Reader, tenant: str, ids: list[str], selects: dict[_Rollup, str]) -> dict[str, int]:
    """Remove ``ids`` from every table and rebuild the rollup groups they touched with
    their views' ``selects``."""
    params = {"tenant": tenant, "trace_ids": ids}
    spans = queries.rows(client, "trace_span_counts", params)[0]["spans"]
    executions = queries.rows(client, "executions_count", params, "executions", ["trace_ids"])[0]["total"]
    feedback_traces = [r["trace_id"] for r in queries.rows(client, "feedback_only_traces", params)]
    params = {"tenant": tenant, "trace_ids": sorted({*ids, *feedback_traces})}
    # Every read comes before the first change: a read cancelled (the collector
    # stopping) then ends the chunk with nothing changed, not half done.
    affected = {r: _affected(client, r, params) for r in _ROLLUPS}
    for stmt in sqlfiles.split_statements(queries.render("delete_traces")):
        client.command(stmt, parameters=params, settings=_NO_DEDUP)
    for rollup, groups in affected.items():
        if groups:
            _recompute(client, rollup, selects[rollup], tenant, groups)
    return {"executions": int(executions), "spans": int(spans)}


def delete_feedback(client: Reader, tenant: str, feedback_id: str,
                    ingest_paused: Callable[[], AbstractContextManager[object]] | None = None) -> dict[str, int] | None:
    """Remove the feedback item ``feedback_id`` (as stored: ``history.feedback_key``) of
    ``tenant``; returns the items and spans removed, None if there is no such item.

    Feedback sent over OTLP is also a span (its id the item's), removed with it from
    ``otel_traces`` (and a trace it leaves empty from ``otel_traces_trace_id_ts``). No
    view counts a feedback span but ``error_patterns``, for one sent with an error
    status: then the days it counted in are recomputed as ``delete_traces`` does, with
    ingest held off by ``ingest_paused``.
    """
    params: dict[str, object] = {"tenant": tenant, "feedback_id": feedback_id}
    items = queries.rows(client, "feedback", params, "feedback", ["id"])
    if not items:
        return None
    traces = queries.rows(client, "feedback_span_traces", params)
    params.update(emptied=[t["trace_id"] for t in traces if t["alone"]],
                  trace_ids=[t["trace_id"] for t in traces if t["errors"]])
    errors = next(r for r in _ROLLUPS if r.target == "error_patterns")
    projected = [row["table"] for row in queries.rows(client, "tables_with_projections", {})] if traces else []
    recompute = bool(params["trace_ids"])
    with ingest_paused() if recompute and ingest_paused is not None else nullcontext():
        groups = _affected(client, errors, params) if recompute else []
        select = queries.rows(client, "view_select", {"view": errors.view})[0]["as_select"] if groups else ""
        for stmt in sqlfiles.split_statements(queries.render("delete_feedback")):
            client.command(stmt, parameters=params, settings=_NO_DEDUP)
        if groups:
            _recompute(client, errors, select, tenant, groups)
    _apply_masks(client, projected)
    return {"feedback": len(items), "spans": sum(int(t["spans"]) for t in traces)}


def _apply_masks(client: Reader, projected: list[str]) -> None:
    """A projection keeps the rows a lightweight DELETE masked (the engine does not
    rebuild it) until its part is merged: reads it serves (a trace by id, a rollup
    window) would still return them. Applying the mask to the ``projected`` tables
    rewrites the masked parts and their projections."""
    for table in projected:
        client.command(queries.render("apply_deleted_mask"), parameters={"table": table}, settings=_NO_DEDUP)


def _affected(client: Reader, r: _Rollup, params: dict[str, object]) -> list[tuple[object, ...]]:
    return [row[0] for row in client.query(r.sql("affected"), parameters=params).result_rows]


def _recompute(client: Reader, r: _Rollup, select: str, tenant: str, groups: list[tuple[object, ...]]) -> None:
    """Clear ``groups`` of ``r``'s target (and the tables it feeds) and run its view's
    ``select`` again over the groups' source rows."""
    params = {"tenant": tenant, "groups": groups}
    for stmt in sqlfiles.split_statements(r.sql("clear")):
        client.command(stmt, parameters=params, settings=_NO_DEDUP)
    select, n = re.subn(rf"\bFROM\s+(?:\w+\.)?{r.source}\b", lambda _: f"FROM ({r.sql('source')})", select, count=1)
    assert n == 1, f"view {r.view} does not read {r.source}"
    client.command(f"INSERT INTO {r.target} {select}", parameters=params, settings=_NO_DEDUP)
