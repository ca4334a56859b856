"""OTLP's two encodings behind one interface: binary protobuf and OTLP/JSON.

Requests decode to an ``ExportTraceServiceRequest``; responses and errors
(``google.rpc.Status``) encode in the request's encoding, as the spec requires.

OTLP/JSON is proto3 JSON with deviations (PROTO-SPEC "JSON Protobuf Encoding"): trace
and span ids are hex strings (case-insensitive), not base64; enums are integers; 64-bit
integers may be strings or numbers; unknown fields are ignored.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from spanhouse.errors import InvalidData
from spanhouse.text import utf8_safe

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
_EXTENSION_KEY = re.compile(r"\[[a-zA-Z0-9._]*\]$")  # as json_format tells an extension's name
_MAY_BRACKET = re.compile(rb'"\[|\\u005[bB]')  # a string starting with "[", or a "[" escaped
_MAY_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")  # a UTF-16 surrogate, escaped or in (CESU) bytes
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_MESSAGE = 1024
"""Characters of an error message sent back: the parser's messages quote the offending
value whole, and OTLP says a server MUST limit its response body."""


def decode(body: bytes, media_type: str) -> ExportTraceServiceRequest:
    """The request in ``body``; ``InvalidData`` (400) if it cannot be decoded."""
    if media_type == PROTOBUF:
        try:
            return ExportTraceServiceRequest.FromString(body)
        except DecodeError as exc:
            raise InvalidData(f"the body is not a valid OTLP protobuf ExportTraceServiceRequest: {exc}") from exc
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise InvalidData(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidData("an OTLP/JSON request must be a JSON object with resourceSpans")
    if _MAY_SURROGATE.search(body):  # cheap tests that keep the walks off other bodies
        _replace_lone_surrogates(doc)
    _hex_ids_to_base64(doc)
    if _MAY_BRACKET.search(body):
        _drop_extension_keys(doc)
    try:
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except MemoryError:
        raise
    except Exception as exc:
        # Parsing is a function of the body alone, so whatever it raises the same body
        # raises again: a 400, never the retry an unexpected error gets. (A lone UTF-16
        # surrogate escape in a key or an enum's name makes upb raise SystemError.)
        raise InvalidData(f"the body is not a valid OTLP/JSON ExportTraceServiceRequest: {exc}") from exc


def _replace_lone_surrogates(doc: dict[str, Any]) -> None:
    """Replace every unpaired UTF-16 surrogate in ``doc``'s strings and keys by U+FFFD,
    in place, as the OpenTelemetry Collector's JSON reader does. JavaScript's exporters
    send them (an attribute cut by UTF-16 units halves an emoji, and JSON.stringify
    escapes the half); protobuf cannot hold one, and the whole request was refused.
    After ``json.loads`` a surrogate left in a string has no pair. Iterative: the
    document may nest as deep as the JSON parser allowed."""
    stack: list[Any] = [doc]
    while stack:
        obj = stack.pop()
        if isinstance(obj, dict):
            for key in [k for k in obj if _SURROGATE.search(k)]:
                obj[_SURROGATE.sub("\ufffd", key)] = obj.pop(key)
            slots: Any = obj.items()
        else:
            slots = enumerate(obj)
        for slot, value in list(slots):
            if isinstance(value, str):
                if _SURROGATE.search(value):
                    obj[slot] = _SURROGATE.sub("\ufffd", value)
            elif isinstance(value, (dict, list)):
                stack.append(value)


def _drop_extension_keys(obj: Any) -> None:
    """Remove keys written as extension names (``"[a.b]"``) at every depth. OTLP has no
    extensions, so they are unknown fields, which receivers must ignore; proto3 JSON
    parsing looks them up as extensions even with ``ignore_unknown_fields`` and fails."""
    if isinstance(obj, dict):
        for key in [k for k in obj if _EXTENSION_KEY.match(k)]:
            del obj[key]
        values: Any = obj.values()
    elif isinstance(obj, list):
        values = obj
    else:
        return
    for value in values:
        _drop_extension_keys(value)


def _hex_ids_to_base64(doc: dict[str, Any]) -> None:
    """Rewrite OTLP/JSON's hex ids as the base64 that proto3 JSON parsing expects."""
    for rs in _items(doc, "resourceSpans", "resource_spans"):
        for ss in _items(rs, "scopeSpans", "scope_spans"):
            for span in _items(ss, "spans"):
                _convert_ids(span)
                for link in _items(span, "links"):
                    _convert_ids(link)


def _items(obj: Any, *keys: str) -> list[Any]:
    if not isinstance(obj, dict):
        return []
    for key in keys:
        value = obj.get(key)
        if isinstance(value, list):
            return value
    return []


def _convert_ids(obj: Any) -> None:
    if not isinstance(obj, dict):
        return
    for key in _ID_FIELDS:
        value = obj.get(key)
        if isinstance(value, str):
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise InvalidData(f"{key} {value[:40]!r} is not a hex string (OTLP/JSON ids are hex)") from None


def encode(message: Message, media_type: str) -> bytes:
    """``message`` in the request's encoding (int64s as JSON strings, per proto3 JSON)."""
    if media_type == PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()


def response(rejected: int = 0, message: str = "") -> ExportTraceServiceResponse:
    """A success (partial_success unset) or a partial success."""
    if not rejected and not message:
        return ExportTraceServiceResponse()
    return ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=rejected, error_message=message))


def status(grpc_code: int, message: str, retry_after: float | None = None,
           bad_request: bool = False) -> status_pb2.Status:
    """A ``google.rpc.Status`` with RetryInfo or BadRequest details, for error bodies/trailers."""
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE - 1] + "…"
    message = utf8_safe(message)  # it may quote a lone surrogate the client sent, which a Status refuses
    st = status_pb2.Status(code=grpc_code, message=message)
    if retry_after is not None:
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromNanoseconds(int(retry_after * 1e9))
        st.details.add().Pack(info)
    if bad_request:
        br = error_details_pb2.BadRequest()
        br.field_violations.add(field="body", description=message)
        st.details.add().Pack(br)
    return st

