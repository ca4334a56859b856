"""OTLP's two encodings behind one interface: binary protobuf and OTLP/JSON.

Requests decode to an ``ExportTraceServiceRequest``; responses and errors
(``google.rpc.Status``) encode in the request's encoding, as the spec requires.

OTLP/JSON is proto3 JSON with deviations (PROTO-SPEC "JSON Protobuf Encoding"): trace
and span ids are hex strings (case-insensitive), not base64; enums are integers; 64-bit
integers may be strings or numbers; unknown fields are ignored.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor, FileDescriptor
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
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
MAX_MESSAGE = 1024
"""Characters of an error message sent back: the parser's messages quote the offending
value whole, and OTLP says a server MUST limit its response body."""


def decode(body: bytes, media_type: str) -> tuple[ExportTraceServiceRequest, bytes | None]:
    """The request in ``body``, and ``body`` again if it is the request's protobuf
    encoding as received (None for JSON, or a body whose text was mended);
    ``InvalidData`` (400) if it cannot be decoded."""
    if media_type == PROTOBUF:
        try:
            return ExportTraceServiceRequest.FromString(body), body
        except DecodeError as exc:
            mended = _mend_utf8(body)
            if mended is None:
                raise InvalidData(f"the body is not a valid OTLP protobuf ExportTraceServiceRequest: {exc}") from exc
            return mended, None
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
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True), None
    except MemoryError:
        raise
    except Exception as exc:
        # Parsing is a function of the body alone, so whatever it raises the same body
        # raises again: a 400, never the retry an unexpected error gets. (A lone UTF-16
        # surrogate escape in a key or an enum's name makes upb raise SystemError.)
        raise InvalidData(f"the body is not a valid OTLP/JSON ExportTraceServiceRequest: {exc}") from exc


def _mend_utf8(body: bytes) -> ExportTraceServiceRequest | None:
    """The request in ``body`` with text that is not UTF-8 mended (each bad sequence
    U+FFFD), or None if that is not why it failed to decode. Protobuf refuses a string
    field that is not UTF-8, so the whole request was refused: the OpenTelemetry
    Collector does not check (a C++ or Rust SDK, or a collector forwarding here, sends
    such text), and OTLP asks receivers not to be stricter than that. Decoded again
    with every string field read as bytes (the same wire type), mended, encoded."""
    lenient, strings = _lenient_request()
    try:
        request = lenient.FromString(body)
    except DecodeError:
        return None
    stack: list[Message] = [request]
    while stack:
        message = stack.pop()
        for field, value in message.ListFields():
            if field.full_name in strings:
                if _repeated(field):
                    value[:] = [v.decode("utf-8", "replace").encode() for v in value]
                else:
                    setattr(message, field.name, value.decode("utf-8", "replace").encode())
            elif field.message_type is not None:  # (OTLP's trace messages hold no map field)
                stack.extend(value if _repeated(field) else [value])
    return ExportTraceServiceRequest.FromString(request.SerializeToString())


def _repeated(field: FieldDescriptor) -> bool:
    """Whether ``field`` is repeated (``label`` is gone from protobuf 7, ``is_repeated``
    came in 5.29)."""
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED


@functools.cache
def _lenient_request() -> tuple[type[Message], frozenset[str]]:
    """``ExportTraceServiceRequest`` with every string field declared bytes (in a pool
    of its own), and the full names of those fields."""
    pool = descriptor_pool.DescriptorPool()
    strings: set[str] = set()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        stack = [(f"{proto.package}.{m.name}", m) for m in proto.message_type]
        while stack:
            name, message = stack.pop()
            stack += [(f"{name}.{m.name}", m) for m in message.nested_type]
            for field in message.field:
                if field.type == field.TYPE_STRING:
                    field.type = field.TYPE_BYTES
                    strings.add(f"{name}.{field.name}")
        pool.Add(proto)
        added.add(file.name)

    add(ExportTraceServiceRequest.DESCRIPTOR.file)
    name = ExportTraceServiceRequest.DESCRIPTOR.full_name
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name)), frozenset(strings)


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
    """The list under the field of ``obj`` spelt one of ``keys`` (its JSON name, its
    proto name). Both spellings in one object are refused: the parser keeps the last
    list, dropping the other's spans though they were acknowledged."""
    if not isinstance(obj, dict):
        return []
    present = [key for key in keys if key in obj]
    if len(present) > 1:
        raise InvalidData(f"{' and '.join(present)} are one field: send it once")
    value = obj.get(present[0]) if present else None
    return value if isinstance(value, list) else []


def _convert_ids(obj: Any) -> None:
    if not isinstance(obj, dict):
        return
    for key in _ID_FIELDS:
        value = obj.get(key)
        if isinstance(value, str):
            if not _HEX.fullmatch(value):  # bytes.fromhex skips spaces and line breaks
                raise InvalidData(f"{key} {value[:40]!r} is not a hex string (OTLP/JSON ids are hex)")
            obj[key] = base64.b64encode(bytes.fromhex(value)).decode()


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

