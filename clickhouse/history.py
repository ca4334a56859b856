"""Execution history: listing, detail with the span tree, feedback, export, the feed.

Plain functions over a client and a tenant, returning JSON-ready dicts; the query API
and (through it) the CLI are thin layers over them. Every query is tenant-scoped.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from spanhouse import SPAN_ID
from spanhouse.clickhouse import queries
from spanhouse.clickhouse.pool import Reader, gather

GROUP = "executions"
FEEDBACK = "feedback"  # filter group of queries/feedback.sql
FILTERS = frozenset(queries.filter_snippets(GROUP)) - {"trace_ids", "cursor", "through"}
"""The filter names a caller may set (see queries/filters/executions.sql)."""

EXPORT_PAGE = 10_000
"""Executions per query of an export. The collector holds one page's answer at a time,
so an export of any size needs the memory of one page, not of its whole result."""
_EXPORT_QUERY_FORMATS = {"csv": ("CSVWithNames", "CSV"), "json": ("JSONEachRow", "JSONEachRow"),
                         "parquet": ("Arrow", "Arrow")}
"""The engine's output format of an export's first page and of the pages after it (the
CSV header once; Parquet is written here from the pages' Arrow, see ``_parquet``)."""
EXPORT_FORMATS = tuple(_EXPORT_QUERY_FORMATS)


@dataclass(frozen=True)
class Page:
    """One page of executions and how to get the next."""

    items: list[dict[str, Any]]
    total: int
    next_cursor: str | None


def as_utc(value: datetime) -> datetime:
    """A result datetime, aware in UTC. The driver returns naive datetimes from a server in
    UTC and aware ones in the server's zone otherwise (the embedded engine takes the
    process's TZ): a naive one is UTC, never the process's local time."""
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def iso(value: Any) -> Any:
    """A result datetime as ISO 8601 in UTC; anything else as is."""
    return as_utc(value).isoformat() if isinstance(value, datetime) else value


def jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    """A result row with its datetimes as ISO 8601 strings."""
    return {k: iso(v) for k, v in row.items()}


def encode_cursor(start_ns: int, trace_id: str) -> str:
    """An opaque cursor for the row after (start time in ns, trace_id) in newest-first
    order. Nanoseconds, as stored: a cursor at the driver's microseconds skipped the rows
    between the truncated time and the real one. (The live stream's event ids are the
    same encoding of a feed position: stored at, in ms, and trace id.)"""
    raw = json.dumps([start_ns, trace_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The (start time in ns, trace_id) of a cursor; ValueError if it is not one of ours."""
    try:
        start_ns, trace_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError) as exc:  # not base64, not JSON, not a pair
        raise ValueError("malformed cursor") from exc
    if type(start_ns) is not int or not 0 <= start_ns < 2**63 or not isinstance(trace_id, str):
        raise ValueError("malformed cursor")
    try:  # any id a writer stored ('' from the OTel exporter for an all-zero id) comes back
        trace_id.encode()
    except UnicodeEncodeError:  # a lone surrogate, which JSON can spell, cannot be bound: was a 500
        raise ValueError("malformed cursor") from None
    return start_ns, trace_id


def _filters(tenant: str, filters: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Query parameters and active filter names for the given user filters."""
    params: dict[str, Any] = {"tenant": tenant}
    active: list[str] = []
    renames = {"min_duration": "min_duration_ms", "max_duration": "max_duration_ms"}
    for name, value in filters.items():
        if value is None or value == "":
            continue
        if name not in FILTERS:
            raise KeyError(name)
        active.append(name)
        params[renames.get(name, name)] = value
    return params, active


def list_executions(client: Reader, tenant: str, filters: Mapping[str, Any], limit: int = 50,
                    cursor: str | None = None) -> Page:
    """Executions matching ``filters``, newest first, ``limit`` per page. The total is
    counted beside the page and its rollups (``gather``): each reads every part of
    ``executions`` with FINAL, and one after the other they were the list's whole time."""
    params, active = _filters(tenant, filters)
    page_params, page_active = {**params, "limit": limit + 1}, list(active)
    if cursor:
        page_params["cursor_ns"], page_params["cursor_id"] = decode_cursor(cursor)
        page_active.append("cursor")

    def page() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        items = queries.rows(client, "executions_page", page_params, GROUP, page_active)
        return items, _rollups(client, tenant, [i["trace_id"] for i in items[:limit]])

    counted, (items, rollups) = gather(client, lambda: queries.rows(client, "executions_count", params, GROUP, active),
                                       page)
    more = len(items) > limit
    items = items[:limit]
    next_cursor = encode_cursor(items[-1]["start_ns"], items[-1]["trace_id"]) if more and items else None
    out = [jsonable({**_without_cursor(i), **rollups.get(i["trace_id"], _EMPTY_ROLLUP)}) for i in items]
    return Page(out, int(counted[0]["total"]), next_cursor)


def _without_cursor(row: Mapping[str, Any]) -> dict[str, Any]:
    """A page row without its cursor column (start_ns)."""
    return {k: v for k, v in row.items() if k != "start_ns"}


_EMPTY_ROLLUP = {"spans": 0, "error_spans": 0, "tool_calls": 0, "failed_tool_calls": 0, "input_tokens": 0,
                 "output_tokens": 0, "cost_usd": 0.0, "tools": []}


def _rollups(client: Reader, tenant: str, trace_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not trace_ids:
        return {}
    rows = queries.rows(client, "execution_rollups", {"tenant": tenant, "trace_ids": trace_ids})
    return {r.pop("trace_id"): r for r in rows}


MAX_SPANS = 5000
"""Spans in an execution's tree at most: the earliest by start time; the detail says
``spans_truncated`` when there are more (its ``spans`` rollup number still counts all).
It bounds the response for a runaway trace, and a span read with a LIMIT this far under
ClickHouse's lazy-materialization threshold (10000 rows) reads the attribute maps of
the matching rows only, not of every granule they sit in."""
MAX_TREE_DEPTH = 100
"""Levels of the detail's span tree; the spans below a node of the last level are its
children, flat (see ``_flatten_below``)."""


def get_execution(client: Reader, tenant: str, trace_id: str) -> dict[str, Any] | None:
    """One execution with its span tree, rollup and feedback; None if the tenant has no such trace.

    The trace's time range is looked up once and bounds both the span read and the
    execution row (their tables are ordered by time, not by trace id). Without a lookup
    row no span can be found (as the span query's own lookup never could), so only the
    execution row is read, by trace id alone. The reads after the lookup are independent
    and run side by side (``gather``).
    """
    params = {"tenant": tenant, "trace_id": trace_id}
    found = queries.rows(client, "execution_bounds", params)
    window = found[0] if found else {}  # {"since", "until"}: also the executions filters of those names
    rows, listed, rollups, feedback = gather(
        client,
        lambda: queries.rows(client, "execution_spans", {**params, **window, "limit": MAX_SPANS + 1}) if window else [],
        lambda: queries.rows(client, "executions_page", {**params, **window, "trace_ids": [trace_id], "limit": 1},
                             GROUP, ["trace_ids", *window]),
        lambda: _rollups(client, tenant, [trace_id]),
        lambda: queries.rows(client, "feedback", params, FEEDBACK, ["execution"]),
    )
    spans = [s for s in rows[:MAX_SPANS] if not s["is_marker"]]
    if not spans and not listed:
        return None
    summary = jsonable(_without_cursor(listed[0])) if listed else {"trace_id": trace_id, "status": "unknown"}
    summary.update(rollups.get(trace_id, _EMPTY_ROLLUP))
    summary["spans_tree"] = span_tree(spans)
    summary["spans_truncated"] = len(rows) > MAX_SPANS
    summary["feedback"] = [jsonable(f) for f in feedback]
    return summary


def span_tree(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nest spans under their parents (orphans, whose parent is missing, become roots)."""
    nodes: dict[str, dict[str, Any]] = {}
    for s in spans:
        attrs = s["attributes"]
        node = {
            "span_id": s["span_id"], "parent_span_id": s["parent_span_id"], "name": s["name"], "kind": s["kind"],
            "service": s["service"], "start_time": iso(s["start_time"]), "duration_ms": s["duration_ms"],
            "status": "error" if s["is_error"] else "ok", "status_message": s["status_message"],
            "attributes": attrs,
            "events": [{"name": n, "time": iso(t), "attributes": a} for n, t, a in s["events"]],
            "children": [],
        }
        if s["is_tool"]:
            node["tool"] = {"name": s["tool_name"], "arguments": s["tool_arguments"] or None,
                            "result": s["tool_result"] or None, "error_type": s["error_type"] or None}
        if s["input_tokens"] or s["output_tokens"] or s["cost_usd"]:  # as the rollups read a span's usage
            node["usage"] = {"input_tokens": s["input_tokens"], "output_tokens": s["output_tokens"],
                             "cost_usd": s["cost_usd"]}
        nodes[s["span_id"]] = node
    roots = []
    for node in nodes.values():
        parent = nodes.get(node["parent_span_id"])
        (parent["children"] if parent is not None and parent is not node else roots).append(node)
    # Spans whose parents form a cycle (A -> B -> A) reach no root: one span of each cycle
    # (found by walking up from a span left out) becomes a root, cut from its parent, so
    # that no span is lost and the spans below the cycle keep their parents.
    placed: set[int] = set()
    stack = list(roots)
    for node in nodes.values():
        while stack:
            n = stack.pop()
            placed.add(id(n))
            stack.extend(n["children"])
        if id(node) not in placed:
            seen: set[int] = set()
            on_cycle = node
            while id(on_cycle) not in seen:
                seen.add(id(on_cycle))
                on_cycle = nodes[on_cycle["parent_span_id"]]
            nodes[on_cycle["parent_span_id"]]["children"].remove(on_cycle)
            roots.append(on_cycle)
            stack.append(on_cycle)
    _flatten_below(roots, MAX_TREE_DEPTH)
    return roots


def _flatten_below(roots: list[dict[str, Any]], depth: int) -> None:
    """Give each node at ``depth`` all its descendants as direct children, in depth-first
    order (each keeps its ``parent_span_id``). A JSON encoder nests once per level: a
    chain of 3,000 spans (a recursive agent, or any client) made the detail a 500."""
    level = roots
    for _ in range(depth - 1):
        level = [child for node in level for child in node["children"]]
    for node in level:
        below, stack = [], list(reversed(node["children"]))
        while stack:
            n = stack.pop()
            below.append(n)
            stack.extend(reversed(n["children"]))
            n["children"] = []
        node["children"] = below


def execution_exists(client: Reader, tenant: str, trace_id: str) -> bool:
    """Whether ``tenant`` has any span of ``trace_id``."""
    return bool(queries.rows(client, "feedback_insert_check", {"tenant": tenant, "trace_id": trace_id})[0]["known"])


def add_feedback(client: Reader, tenant: str, trace_id: str, name: str, value: float,
                 comment: str = "", user_id: str = "", *, feedback_id: str | None = None) -> dict[str, Any]:
    """Store one feedback row (Source 'api'); the caller checks the execution exists.
    ``feedback_id``, the client's own, makes a resend replace the row of that id and name
    (``feedback`` is a ReplacingMergeTree on them, read with FINAL): a client retrying a
    request whose answer it lost does not count its rating twice."""
    row = {"Tenant": tenant, "TraceId": trace_id, "FeedbackId": feedback_id or uuid.uuid4().hex,
           "Timestamp": datetime.now(timezone.utc),
           "Name": name, "Value": float(value), "Comment": comment, "UserId": user_id, "Source": "api"}
    client.insert("feedback", [list(row.values())], column_names=list(row))
    return {"id": row["FeedbackId"], "execution_id": trace_id, "name": name, "value": float(value),
            "comment": comment, "user_id": user_id, "source": "api"}


def feedback_key(feedback_id: str) -> str:
    """``feedback_id`` as stored: the span id of feedback sent over OTLP (16 hex digits,
    an id the API refuses for its own) is lower-case hex there, as trace ids are."""
    return feedback_id.lower() if re.fullmatch(SPAN_ID, feedback_id) else feedback_id


def feedback_items(client: Reader, tenant: str, feedback_id: str) -> list[dict[str, Any]]:
    """The feedback items of ``feedback_id``, oldest first: one, unless two requests
    gave the same id to different executions or names at the same moment."""
    rows = queries.rows(client, "feedback", {"tenant": tenant, "feedback_id": feedback_key(feedback_id)},
                        FEEDBACK, ["id"])
    return [jsonable(r) for r in rows]


def export_executions(client: Reader, tenant: str, filters: Mapping[str, Any], fmt: str,
                      page: int = EXPORT_PAGE) -> Iterator[bytes]:
    """Executions matching ``filters``, newest first, as csv, json (one object per line) or
    parquet bytes, read ``page`` executions per query as the bytes are consumed.

    The first page is read before this returns, so a query the engine refuses raises here
    (an error status) rather than cutting the body short. An execution stored during the
    export is in it if its start time is below the page being read.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
    params, active = _filters(tenant, filters)
    pages = _export_pages(client, params, active, _EXPORT_QUERY_FORMATS[fmt], page)
    if fmt == "parquet":
        pages = _parquet(pages)
    first = next(pages)
    return itertools.chain([first], pages)


def _export_pages(client: Reader, params: dict[str, Any], active: list[str], formats: tuple[str, str],
                  page: int) -> Iterator[bytes]:
    """Each page of an export in the engine's output format: ``formats[0]`` for the first
    page, ``formats[1]`` for the rest. Pages end at an execution (executions_export_bound)
    and the next starts below it, so none is read twice or skipped whatever is stored
    meanwhile; an execution's rollup numbers are read with its page."""
    cursor: dict[str, Any] = {}
    fmt = formats[0]
    while True:
        where = active + (["cursor"] if cursor else [])
        bound = queries.rows(client, "executions_export_bound", {**params, **cursor, "offset": page - 1}, GROUP, where)
        through = {"through_ns": bound[0]["start_ns"], "through_id": bound[0]["trace_id"]} if bound else {}
        yield queries.raw(client, "executions_export", {**params, **cursor, **through}, fmt, GROUP,
                          where + (["through"] if through else []))
        if not through:
            return
        cursor = {"cursor_ns": through["through_ns"], "cursor_id": through["through_id"]}
        fmt = formats[1]


def _parquet(arrow_pages: Iterator[bytes]) -> Iterator[bytes]:
    """One Parquet file, a row group per page, from pages in the engine's Arrow format:
    the bytes written so far after each page, the footer last."""
    sink = _Chunks()
    writer: pq.ParquetWriter | None = None
    for data in arrow_pages:
        table = pa.ipc.open_file(data).read_all()
        if writer is None:
            writer = pq.ParquetWriter(sink, table.schema)
        writer.write_table(table)
        yield sink.take()
    if writer is not None:
        writer.close()
    yield sink.take()


class _Chunks(io.RawIOBase):
    """A write-only file that hands over what was written since the last ``take``; its
    position counts every byte ever written (Parquet's footer records offsets)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        """The bytes written since the last call."""
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def executions_after(client: Reader, tenant: str, after: datetime, after_id: str,
                     until: datetime) -> list[dict[str, Any]]:
    """Executions stored after the one stored at ``after`` with trace id ``after_id``
    and stamped before ``until`` (a ``feed_watermark``), oldest first, at most 500: the
    feed. Continue from the last row's ``stored_at`` and ``trace_id``."""
    return queries.rows(client, "executions_new",
                        {"tenant": tenant, "after": after, "after_id": after_id, "until": until})


def feed_watermark(client: Reader) -> datetime:
    """The store's clock now (UTC). Read while no insert runs (the caller sees to it),
    every row stamped before it is visible: an insert stamps its rows when it starts."""
    return utc_from_ms(queries.rows(client, "store_now", {})[0]["now_ms"])


def utc_from_ms(ms: int) -> datetime:
    """Milliseconds since the epoch as an aware UTC datetime, exactly (a float of seconds
    would round some to the next or previous millisecond). ``OverflowError`` or
    ``OSError`` past the platform's dates."""
    return datetime.fromtimestamp(ms // 1000, timezone.utc) + timedelta(milliseconds=ms % 1000)


def matching_ids(client: Reader, tenant: str, filters: Mapping[str, Any]) -> list[str]:
    """Trace ids of the executions matching ``filters``."""
    params, active = _filters(tenant, filters)
    return [r["trace_id"] for r in queries.rows(client, "executions_ids", params, GROUP, active)]
