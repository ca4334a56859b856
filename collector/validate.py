"""Span validation: the processor that decides which spans of a request are stored.

OTLP lets a server reject individual spans and store the rest (partial success). A
span is rejected when its trace id is not 16 bytes or all zero, its span id is not 8
bytes or all zero, its parent id is neither empty nor 8 bytes, a link's ids are
neither empty nor 16 and 8 bytes, its name is empty, it
ends before it starts, or it ends after 2106-02-07 06:28:15 UTC: spans hold times to
2262 (DateTime64(9)), but the rollups count them by DateTime, which ends there (past it,
toDateTime wraps round: retention deleted such a trace at once from the span tables
while the rollups kept counting it for ever). It is also rejected when it starts more
than 20 years before the collector's clock or more than a year after it (a client's
clock or encoding gone wrong): the span tables are partitioned by day, and an insert
writes one part per day its spans fall on. A batch spread over more days than the
deduplication window of migration 0019 (10,000 parts) was stored twice whole when
replayed from the spool after a crash, and each day costs the insert a part (10,000
days took 53 s, holding every tenant's ingest).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)

# reason code (a metrics label) -> the English the client reads
REASONS = {
    "invalid_trace_id": "with an invalid trace id (must be 16 bytes, not all zero)",
    "invalid_span_id": "with an invalid span id (must be 8 bytes, not all zero)",
    "invalid_parent_span_id": "with an invalid parent span id (must be empty or 8 bytes)",
    "invalid_link": "with a link whose trace id is not 16 bytes or span id not 8 bytes (or empty)",
    "empty_name": "without a name",
    "end_before_start": "ending before they start",
    "timestamp_out_of_range": "with a timestamp after 2106-02-07 06:28:15 UTC (beyond ClickHouse's DateTime)",
    "implausible_start": "starting more than 20 years before the collector's clock or more than a year after it "
                         "(check the sender's clock and how it encodes times: nanoseconds since 1970)",
}
_MAX_NANOS = ((1 << 32) - 1) * 10**9  # DateTime's last second
_DAY_NANOS = 86_400 * 10**9
MAX_PAST_NANOS = 7_305 * _DAY_NANOS  # 20 years: with the year ahead, 7,670 days < the 10,000 of 0019
MAX_AHEAD_NANOS = 365 * _DAY_NANOS


@dataclass
class Verdict:
    """What validation kept and dropped."""

    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_count(self) -> int:
        return sum(self.rejected.values())

    def message(self) -> str:
        """An English summary for ``partial_success.error_message``."""
        reasons = ", ".join(f"{n} {REASONS[code]}" for code, n in sorted(self.rejected.items()))
        return f"{self.rejected_count} span(s) rejected: {reasons}" if self.rejected else ""


def problem(span: Span, earliest_ns: int, latest_ns: int) -> str | None:
    """The reason code why ``span`` cannot be stored (see ``REASONS``), or None if it
    can; ``earliest_ns`` and ``latest_ns`` bound a plausible start (``validate``)."""
    if len(span.trace_id) != 16 or span.trace_id == _ZERO_TRACE:
        return "invalid_trace_id"
    if len(span.span_id) != 8 or span.span_id == _ZERO_SPAN:
        return "invalid_span_id"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return "invalid_parent_span_id"
    if span.links and any(_bad_link(link.trace_id, link.span_id) for link in span.links):  # (most have none)
        return "invalid_link"
    if not span.name:
        return "empty_name"
    if span.end_time_unix_nano < span.start_time_unix_nano:
        return "end_before_start"
    if span.end_time_unix_nano > _MAX_NANOS or any(e.time_unix_nano > _MAX_NANOS for e in span.events):
        return "timestamp_out_of_range"
    if not earliest_ns <= span.start_time_unix_nano <= latest_ns:
        return "implausible_start"
    return None


def _bad_link(trace: bytes, span: bytes) -> bool:
    """A link's ids are OTLP's (16 and 8 bytes) or empty, as the OpenTelemetry
    Collector takes them (an empty one: a link to a context the sender did not have)."""
    return len(trace) not in (0, 16) or len(span) not in (0, 8)


def validate(request: ExportTraceServiceRequest, now_ns: int | None = None) -> Verdict:
    """Remove invalid spans from ``request`` in place and say what was removed
    (``now_ns``: the clock to judge start times by, default the system's)."""
    now = time.time_ns() if now_ns is None else now_ns
    earliest, latest = now - MAX_PAST_NANOS, now + MAX_AHEAD_NANOS  # once per request, not per span
    verdict = Verdict()
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            problems = [problem(s, earliest, latest) for s in ss.spans]
            bad = [p for p in problems if p is not None]
            verdict.accepted += len(problems) - len(bad)
            if bad:
                verdict.rejected.update(bad)
                kept = [s for s, p in zip(ss.spans, problems) if p is None]
                del ss.spans[:]
                ss.spans.extend(kept)
    return verdict
