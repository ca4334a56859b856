"""OTLP requests -> ``otel_traces`` rows, encoded exactly as the OpenTelemetry
Collector's ClickHouse exporter encodes them.

This is the writer's exact path (see ``writer.py``): it runs for the rare batch the
SQL fast path cannot render exactly, and it is the reference the fast path is tested
against. The rules, from the exporter and pdata:

* ids: lowercase hex; an all-zero or empty id becomes ``''``;
* ``SpanKind`` / ``StatusCode``: pdata names (``Internal``, ``Ok``...), ``''`` if unknown;
* attribute values: pdata ``Value.AsString()``: strings as-is, ints and bools as text,
  doubles in ES6 form (``float64AsString``), bytes base64, arrays and maps as Go
  ``json.Marshal`` output (sorted keys, HTML-escaped, ``""`` if a NaN/Inf is inside);
* ``Timestamp`` is the span start; ``Duration`` is end - start in ns, wrapping as uint64.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

COLUMNS: tuple[str, ...] = (
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind",
    "ServiceName", "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes",
    "Duration", "StatusCode", "StatusMessage", "Events.Timestamp", "Events.Name",
    "Events.Attributes", "Links.TraceId", "Links.SpanId", "Links.TraceState", "Links.Attributes",
)
"""The official exporter's INSERT column list, in its order."""

_SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
_STATUS_CODES = ("Unset", "Ok", "Error")
_UINT64 = 1 << 64


class _Unsupported(ValueError):
    """Go's json.Marshal fails (NaN/Inf inside an array or map): AsString gives ''."""


def hex_id(raw: bytes) -> str:
    """pdata's TraceIDToHexOrEmptyString: lowercase hex, '' when empty or all zero."""
    return raw.hex() if raw.strip(b"\0") else ""


def go_float(f: float) -> str:
    """pdata float64AsString: ES6 number formatting of a float64."""
    if math.isnan(f):
        return "json: unsupported value: NaN"
    if math.isinf(f):
        return "json: unsupported value: " + ("+Inf" if f > 0 else "-Inf")
    return _es6(f)


_REPR = re.compile(r"^(-?)(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$")


def _es6(f: float) -> str:
    """Go's strconv 'f'/'e' with -1 precision, picked and cleaned up as pdata does."""
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    m = _REPR.match(repr(f))  # Python's repr is the same shortest round-trip digits
    assert m is not None, f
    sign, int_part, frac, exp = m.group(1), m.group(2), m.group(3) or "", int(m.group(4) or 0)
    combined = int_part + frac
    digits = combined.lstrip("0")
    point = len(int_part) + exp - (len(combined) - len(digits))  # value = 0.<digits> x 10**point
    digits = digits.rstrip("0")
    if abs(f) < 1e-6 or abs(f) >= 1e21:
        e = point - 1
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e-{-e}" if -10 < e < 0 else f"{sign}{mantissa}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
                 "\f": "\\f", "<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                 "\u2028": "\\u2028", "\u2029": "\\u2029"}
_JSON_SPECIAL = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029]')


def go_json_string(s: str) -> str:
    """A JSON string as Go's json.Marshal writes it (HTML-escaped)."""
    return '"' + _JSON_SPECIAL.sub(lambda m: _JSON_ESCAPES.get(m.group(0), f"\\u{ord(m.group(0)):04x}"), s) + '"'


_KNOWN_KINDS = frozenset({"string_value", "bool_value", "int_value", "double_value", "bytes_value", "array_value",
                          "kvlist_value"})
"""The value kinds pdata's Value knows; any other (the Profiles signal's string-table
index, ``string_value_strindex``, now in AnyValue's oneof) it reads as empty."""


def _json(v: AnyValue) -> str:
    kind = v.WhichOneof("value")
    if kind not in _KNOWN_KINDS:
        return "null"
    if kind == "string_value":
        return go_json_string(v.string_value)
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        if not math.isfinite(v.double_value):
            raise _Unsupported()
        return _es6(v.double_value)
    if kind == "bytes_value":
        return '"' + base64.b64encode(v.bytes_value).decode() + '"'
    if kind == "array_value":
        return "[" + ",".join(_json(x) for x in v.array_value.values) + "]"
    return _kvlist_json(v.kvlist_value.values)


def _kvlist_json(values: Iterable[KeyValue]) -> str:
    merged: dict[str, AnyValue] = {}
    for kv in values:  # Go map semantics: the last duplicate key wins
        merged[kv.key] = kv.value
    return "{" + ",".join(go_json_string(k) + ":" + _json(merged[k]) for k in sorted(merged)) + "}"


def as_string(v: AnyValue) -> str:
    """pdata ``Value.AsString()``."""
    kind = v.WhichOneof("value")
    if kind not in _KNOWN_KINDS:
        return ""
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        return go_float(v.double_value)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    try:
        return _json(v)
    except _Unsupported:
        return ""


def attributes(kvs: Iterable[KeyValue]) -> dict[str, str]:
    """An attribute list as the exporter's Map column value (wire order kept). A key sent
    twice (invalid OTLP) keeps its first value: the SQL fast path stores both and a
    lookup finds the first, so the views (tool name, error type...) read the same value
    whichever path a batch took."""
    out: dict[str, str] = {}
    for kv in kvs:
        if kv.key not in out:
            out[kv.key] = as_string(kv.value)
    return out


def rows(request: ExportTraceServiceRequest) -> list[list[Any]]:
    """The exporter-format rows (``COLUMNS`` order) of one request."""
    out: list[list[Any]] = []
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        service = resource.get("service.name", "")
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append([
                    s.start_time_unix_nano,
                    hex_id(s.trace_id),
                    hex_id(s.span_id),
                    hex_id(s.parent_span_id),
                    s.trace_state,
                    s.name,
                    _SPAN_KINDS[s.kind] if 0 <= s.kind < len(_SPAN_KINDS) else "",
                    service,
                    resource,
                    ss.scope.name,
                    ss.scope.version,
                    attributes(s.attributes),
                    (s.end_time_unix_nano - s.start_time_unix_nano) % _UINT64,
                    _STATUS_CODES[s.status.code] if 0 <= s.status.code < len(_STATUS_CODES) else "",
                    s.status.message,
                    [e.time_unix_nano for e in s.events],
                    [e.name for e in s.events],
                    [attributes(e.attributes) for e in s.events],
                    [hex_id(link.trace_id) for link in s.links],
                    [hex_id(link.span_id) for link in s.links],
                    [link.trace_state for link in s.links],
                    [attributes(link.attributes) for link in s.links],
                ])
    return out
