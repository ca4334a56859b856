"""Builders for OTLP trace requests in tests: real protobuf messages, readable call sites."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

_ids = itertools.count(1)


def trace_id() -> bytes:
    """A fresh random 16-byte trace id."""
    return os.urandom(16)


def span_id() -> bytes:
    """A fresh, unique, non-zero 8-byte span id."""
    return os.urandom(4) + next(_ids).to_bytes(4, "big")


def value(v: Any) -> AnyValue:
    """A Python value as an AnyValue: str, bool, int, float, bytes, list, dict, None (empty)."""
    if v is None:
        return AnyValue()
    if isinstance(v, AnyValue):
        return v
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, str):
        return AnyValue(string_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[value(x) for x in v]))
    if isinstance(v, dict):
        return AnyValue(kvlist_value=KeyValueList(values=attrs(v)))
    raise TypeError(type(v))


def attrs(d: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[KeyValue]:
    """Attributes from a dict (or key/value pairs, to allow duplicate keys)."""
    items = d.items() if isinstance(d, Mapping) else d
    return [KeyValue(key=k, value=value(v)) for k, v in items]


def span(name: str, trace: bytes, *, parent: bytes = b"", sid: bytes | None = None,
         start: int = 1_700_000_000_000_000_000, duration_ns: int = 1_000_000, kind: int = 1,
         attributes: Mapping[str, Any] | None = None, error: str | None = None,
         status_code: int | None = None, events: Sequence[tuple[int, str, Mapping[str, Any]]] = (),
         links: Sequence[tuple[bytes, bytes, str, Mapping[str, Any]]] = (), trace_state: str = "") -> Span:
    """A span; ``error`` sets status ERROR with that message."""
    s = Span(trace_id=trace, span_id=sid or span_id(), parent_span_id=parent, name=name, kind=kind,  # type: ignore[arg-type]
             start_time_unix_nano=start, end_time_unix_nano=start + duration_ns, trace_state=trace_state,
             attributes=attrs(attributes or {}))
    if error is not None:
        s.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
    elif status_code is not None:
        s.status.code = status_code  # type: ignore[assignment]
    for t, n, a in events:
        s.events.add(time_unix_nano=t, name=n, attributes=attrs(a))
    for tid, sid_, ts, a in links:
        s.links.add(trace_id=tid, span_id=sid_, trace_state=ts, attributes=attrs(a))
    return s


def request(spans: Iterable[Span], *, service: str = "svc", resource: Mapping[str, Any] | None = None,
            scope: tuple[str, str] = ("tests", "1.0")) -> ExportTraceServiceRequest:
    """One request holding ``spans`` under one resource and scope."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(attrs({"service.name": service, **(resource or {})}))
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = scope
    ss.spans.extend(spans)
    return req
