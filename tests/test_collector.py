"""The collector over real sockets on 127.0.0.1: the official OpenTelemetry exporters,
OTLP/JSON, every error path with its status and body, auth, backpressure, recovery."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import gzip
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from spanhouse.clickhouse import Store
from spanhouse.clickhouse.writer import _varint
from spanhouse.collector.auth import KeyRing, Principal
from spanhouse.collector.config import Settings
from spanhouse.collector.exporter import ClickHouseExporter
from spanhouse.collector.ingest import Ingest
from spanhouse.collector.metrics import Metrics
from spanhouse.collector.validate import validate
from spanhouse.collector.server import Collector
from spanhouse.collector.otlp_grpc import GrpcReceiver
from spanhouse.collector.otlp_http import gunzip
from spanhouse.collector.spool import Spool
from spanhouse.errors import (Backpressure, ConfigError, Forbidden, InvalidData, PayloadTooLarge, SpoolFull,
                             StoreUnavailable)
from tests.collector_harness import EXPORT, FaultyWriter, Running, grpc_export, metric, running_collector
from tests.otlp import request, span, trace_id


def _count(store: Store, tenant: str, table: str = "otel_traces") -> int:
    return int(store.client.command(f"SELECT count() FROM {table} WHERE Tenant = {{t:String}}",
                                    parameters={"t": tenant}))


def _send_with_sdk(exporter: object, service: str, n_tools: int) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))  # type: ignore[arg-type]
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("invoke_agent planner", attributes={"gen_ai.operation.name": "invoke_agent"}):
        for i in range(n_tools):
            with tracer.start_as_current_span(f"execute_tool t{i % 3}", attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": f"t{i % 3}",
                    "tags": ["a", "b"], "n": i}) as s:
                if i % 4 == 0:
                    s.set_status(Status(StatusCode.ERROR, "nope"))
    provider.shutdown()


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_official_otel_exporters_land_spans_in_tables_and_views(store: Store, tmp_path: Path, tenant: str,
                                                                 transport: str) -> None:
    with running_collector(store, tmp_path, tenant) as c:
        if transport == "grpc":
            exporter = GrpcSpanExporter(endpoint=c.grpc_target, insecure=True, headers=c.headers())
        else:
            exporter = HttpSpanExporter(endpoint=c.http_url, headers=c.headers())
        _send_with_sdk(exporter, f"svc-{transport}", n_tools=12)
        c.wait_drained()
        assert _count(store, tenant) == 13
        stats = store.client.query("SELECT ToolName, calls, errors FROM v_tool_stats WHERE Tenant = {t:String} "
                                   "ORDER BY ToolName", parameters={"t": tenant}).result_rows
        expected = [(f"t{k}", sum(1 for i in range(12) if i % 3 == k), sum(1 for i in range(12) if i % 3 == k and i % 4 == 0))
                    for k in range(3)]
        assert stats == expected
        assert store.client.query("SELECT Name, Status, tool_calls FROM v_executions WHERE Tenant = {t:String}",
                                  parameters={"t": tenant}).result_rows == [("invoke_agent planner", "ok", 12)]
        assert store.client.command("SELECT ServiceName FROM otel_traces WHERE Tenant = {t:String} LIMIT 1",
                                    parameters={"t": tenant}) == f"svc-{transport}"


SPEC_EXAMPLE = {  # the OTLP spec's example trace (opentelemetry-proto examples/trace.json), plus extras
    "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}],
                     "schemaUrl": "https://js-puts-this-here.example"},
        "scopeSpans": [{
            "scope": {"name": "my.library", "version": "1.0.0",
                      "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}]},
            "spans": [{
                "traceId": "5B8EFFF798038103D269B633813FC60C",
                "spanId": "EEE19B7EC3C1B174",
                "parentSpanId": "EEE19B7EC3C1B173",
                "name": "I'm a server span",
                "startTimeUnixNano": "1544712660000000000",
                "endTimeUnixNano": 1544712661000000000,
                "kind": 2,
                "attributes": [
                    {"key": "my.span.attr", "value": {"stringValue": "some value"}},
                    {"key": "count", "value": {"intValue": 7}},
                    {"key": "count_str", "value": {"intValue": "9007199254740993"}},
                    {"key": "ratio", "value": {"doubleValue": 0.5}},
                    {"key": "blob", "value": {"bytesValue": "AAE="}},
                ],
                "futureField": {"ignored": True},
            }],
        }],
    }],
}


def _json_post(c: Running, doc: object, *, gzip_it: bool = False, headers: dict[str, str] | None = None) -> httpx.Response:
    body = json.dumps(doc).encode()
    hdrs = {"content-type": "application/json; charset=utf-8", **c.headers(), **(headers or {})}
    if gzip_it:
        body = gzip.compress(body)
        hdrs["content-encoding"] = "gzip"
    return httpx.post(c.http_url, content=body, headers=hdrs, timeout=30)


@pytest.mark.parametrize("gzip_it", [False, True])
def test_otlp_json_spec_example_with_gzip_and_string_int64s(store: Store, tmp_path: Path, tenant: str,
                                                            gzip_it: bool) -> None:
    with running_collector(store, tmp_path, tenant) as c:
        r = _json_post(c, SPEC_EXAMPLE, gzip_it=gzip_it)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert r.json() == {}
        c.wait_drained()
    rows = store.client.query(
        "SELECT TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, ScopeName, Duration, SpanAttributes "
        "FROM otel_traces WHERE Tenant = {t:String}", parameters={"t": tenant}).result_rows
    assert rows == [("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173", "I'm a server span",
                     "Server", "my.service", "my.library", 1_000_000_000,
                     {"my.span.attr": "some value", "count": "7", "count_str": "9007199254740993", "ratio": "0.5",
                      "blob": "AAE="})]


def test_every_member_of_a_multi_member_gzip_body_is_read() -> None:
    a, b = b"first member " * 100, b"second member" * 100
    assert gunzip(gzip.compress(a) + gzip.compress(b), 10_000) == a + b
    with pytest.raises(PayloadTooLarge):  # the limit holds across members
        gunzip(gzip.compress(a) + gzip.compress(b), len(a) + 10)
    with pytest.raises(InvalidData):  # trailing bytes that are no gzip member are not ignored
        gunzip(gzip.compress(a) + b"garbage", 10_000)


def test_a_multi_member_gzip_request_stores_the_spans_of_every_member(store: Store, tmp_path: Path,
                                                                     tenant: str) -> None:
    body = request([span(f"s{i}", trace_id()) for i in range(6)]).SerializeToString()
    cut = len(body) // 2
    with running_collector(store, tmp_path, tenant) as c:
        r = httpx.post(c.http_url, content=gzip.compress(body[:cut]) + gzip.compress(body[cut:]),
                       headers={"content-type": "application/x-protobuf", "content-encoding": "gzip", **c.headers()})
        assert r.status_code == 200
        c.wait_drained()
    assert _count(store, tenant) == 6


def test_chunked_request_body_is_accepted(store: Store, tmp_path: Path, tenant: str) -> None:
    body = request([span("chunky", trace_id())]).SerializeToString()
    with running_collector(store, tmp_path, tenant) as c:
        r = httpx.post(c.http_url, content=iter([body[:7], body[7:]]),  # an iterator: Transfer-Encoding: chunked
                       headers={"content-type": "application/x-protobuf", **c.headers()})
        assert r.status_code == 200 and r.content == b""
        c.wait_drained()
    assert _count(store, tenant) == 1


def test_partial_success_rejects_invalid_spans_and_stores_the_rest(store: Store, tmp_path: Path, tenant: str) -> None:
    good = span("good", trace_id())
    bad = [span("zero trace", bytes(16)), span("short span id", trace_id(), sid=b"\x01\x02"),
           span("", trace_id()), span("backwards", trace_id(), duration_ns=0),
           span("after DateTime's end, which the rollups count by", trace_id(), start=((1 << 32) - 1) * 10**9,
                duration_ns=1)]
    bad[3].end_time_unix_nano = bad[3].start_time_unix_nano - 1
    body = request([good, *bad]).SerializeToString()
    with running_collector(store, tmp_path, tenant) as c:
        code, reply, _ = grpc_export(c.grpc_target, body, c.key)
        assert code is grpc.StatusCode.OK
        partial = ExportTraceServiceResponse.FromString(reply).partial_success
        assert partial.rejected_spans == 5
        assert "1 with an invalid trace id" in partial.error_message and "1 without a name" in partial.error_message
        assert "1 with a timestamp after 2106-02-07 06:28:15 UTC" in partial.error_message
        again = request([span("good", trace_id()), *bad]).SerializeToString()  # not a resend: new spans
        r = httpx.post(c.http_url, content=again, headers={"content-type": "application/x-protobuf", **c.headers()})
        assert r.status_code == 200
        assert ExportTraceServiceResponse.FromString(r.content).partial_success.rejected_spans == 5
        c.wait_drained()
        metrics = httpx.get(c.api_url + "/metrics").text
    assert _count(store, tenant) == 2
    assert 'spanhouse_spans_rejected_total{reason="empty_name"} 2.0' in metrics


def test_text_that_is_not_utf8_is_mended_and_the_spans_beside_it_stored(store: Store, tmp_path: Path,
                                                                           tenant: str) -> None:
    """Protobuf refuses a string field that is not UTF-8, so a review's request of one
    valid span and one named b"bad\\xff\\xfename" was refused whole (400, not retried):
    every span of a batch a C++ SDK or a forwarding collector sent was lost. The text is
    mended (U+FFFD), as the OpenTelemetry Collector, which does not check, would pass it on."""
    def body(transport: str) -> bytes:
        spans = [span(f"neighbour over {transport}", trace_id()),
                 span("placeholder", trace_id(), attributes={"note": "placeholder"})]
        return request(spans).SerializeToString().replace(b"placeholder", b"bad\xff\xfename\xe2\x28")

    with running_collector(store, tmp_path, tenant) as c:
        code, reply, _ = grpc_export(c.grpc_target, body("grpc"), c.key)
        assert code is grpc.StatusCode.OK and reply == b""
        r = httpx.post(c.http_url, content=body("http"), headers={"content-type": "application/x-protobuf",
                                                                  **c.headers()})
        assert r.status_code == 200 and r.content == b""
        c.wait_drained()
    rows = store.client.query("SELECT SpanName, SpanAttributes['note'] FROM otel_traces WHERE Tenant = {t:String} "
                              "ORDER BY SpanName", parameters={"t": tenant}).result_rows
    mended = "bad\ufffd\ufffdname\ufffd("
    assert rows == [(mended, mended), (mended, mended), ("neighbour over grpc", ""), ("neighbour over http", "")]


def test_json_ids_with_spaces_and_a_field_spelt_twice_are_400_and_bad_link_ids_rejected(
        store: Store, tmp_path: Path, tenant: str) -> None:
    """A review's OTLP/JSON: ids with spaces in them were taken (bytes.fromhex skips
    them); resourceSpans and resource_spans in one body acknowledged both and stored the
    last (the first's spans lost); a link's ids of any length were stored."""
    spaced = json.loads(json.dumps(SPEC_EXAMPLE))
    first = spaced["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    first["traceId"] = " ".join(first["traceId"][i:i + 2] for i in range(0, 32, 2))
    twice = json.loads(json.dumps(SPEC_EXAMPLE))
    twice["resource_spans"] = twice["resourceSpans"]
    links = json.loads(json.dumps(SPEC_EXAMPLE))
    linked = links["resourceSpans"][0]["scopeSpans"][0]["spans"]
    linked.append({**linked[0], "spanId": "1111111111111111", "links": [{"traceId": "abcdef", "spanId": "01"}]})
    linked.append({**linked[0], "spanId": "2222222222222222", "links": [{"traceId": "", "spanId": ""}]})
    with running_collector(store, tmp_path, tenant) as c:
        r = _json_post(c, spaced)
        assert r.status_code == 400 and "traceId" in r.json()["message"]
        r = _json_post(c, twice)
        assert r.status_code == 400 and "resourceSpans and resource_spans" in r.json()["message"]
        r = _json_post(c, links)
        assert r.status_code == 200 and r.json()["partialSuccess"]["rejectedSpans"] == "1"
        assert "1 with a link whose trace id" in r.json()["partialSuccess"]["errorMessage"]
        c.wait_drained()
    assert _count(store, tenant) == len(linked) - 1


def test_spans_starting_at_implausible_times_are_rejected_with_the_reason() -> None:
    """A request spread over more days than migration 0019's deduplication window (a
    span per day since 1971: a broken clock, seconds sent as nanoseconds) was stored
    twice whole when replayed from the spool after a crash, and its 10,000 parts (one
    per day) took the insert 53 s."""
    now = 1_790_000_000 * 10**9  # 2026-09-21
    day, year = 86_400 * 10**9, 365 * 86_400 * 10**9
    starts = {"1971": 365 * day, "21 years ago": now - 21 * year, "19 years ago": now - 19 * year,
              "now": now, "11 months ahead": now + 335 * day, "2 years ahead": now + 2 * year,
              "seconds as ns": 1_790_000_000}
    req = request([span(name, trace_id(), start=start) for name, start in starts.items()])
    verdict = validate(req, now_ns=now)
    kept = [s.name for s in req.resource_spans[0].scope_spans[0].spans]
    assert kept == ["19 years ago", "now", "11 months ahead"]
    assert verdict.rejected == {"implausible_start": 4}
    assert "4 starting more than 20 years before the collector's clock" in verdict.message()
    assert not validate(request([span("now", trace_id(), start=time.time_ns())])).rejected  # the system's clock


def _status(body: bytes, kind: str) -> status_pb2.Status:
    if kind == "json":
        doc = json.loads(body)
        return status_pb2.Status(code=doc.get("code", 0), message=doc.get("message", ""))
    return status_pb2.Status.FromString(body)


@pytest.mark.parametrize("kind", ["protobuf", "json"])
def test_undecodable_body_is_400_with_a_status_in_the_request_encoding(store: Store, tmp_path: Path,
                                                                       tenant: str, kind: str) -> None:
    with running_collector(store, tmp_path, tenant) as c:
        body = b"\xff\x00garbage{" if kind == "protobuf" else b'{"resourceSpans": [{"scopeSpans": 5'
        r = httpx.post(c.http_url, content=body, headers={"content-type": f"application/x-{kind}".replace(
            "x-json", "json"), **c.headers()})
        assert r.status_code == 400
        assert r.headers["content-type"].startswith("application/json" if kind == "json" else "application/x-protobuf")
        st = _status(r.content, kind)
        assert st.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and st.message
        code, _, err = grpc_export(c.grpc_target, b"\xff\x00garbage{", c.key)
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        details = dict(err.trailing_metadata())["grpc-status-details-bin"]
        assert status_pb2.Status.FromString(details).details[0].Is(error_details_pb2.BadRequest.DESCRIPTOR)


def test_a_grpc_error_names_the_same_message_in_its_status_and_its_details(
        store: Store, tmp_path: Path, tenant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The google.rpc.Status in the trailers cut a message to 1,024 characters while the
    call's own status kept all of it, and gRPC's status library refuses a call whose
    two messages differ (``rpc_status.from_call``: ValueError)."""
    def fails(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the spool's disk said: " + "x" * 3_000)

    monkeypatch.setattr(Ingest, "export", fails)
    with running_collector(store, tmp_path, tenant) as c:
        code, _, err = grpc_export(c.grpc_target, request([span("s", trace_id())]).SerializeToString(), c.key)
    assert code is grpc.StatusCode.UNAVAILABLE
    details = status_pb2.Status.FromString(dict(err.trailing_metadata())["grpc-status-details-bin"])
    assert details.message == err.details() and details.message.startswith("the spool's disk said: xxx")


def test_json_nested_too_deep_is_400_not_a_retry(store: Store, tmp_path: Path, tenant: str) -> None:
    with running_collector(store, tmp_path, tenant) as c:
        r = httpx.post(c.http_url, content=b"[" * 100_000, headers={"content-type": "application/json", **c.headers()})
    assert r.status_code == 400 and "Retry-After" not in r.headers and "not valid JSON" in r.json()["message"]


def _field(number: int, data: bytes) -> bytes:
    """One length-delimited protobuf field (numbers and lengths below 2**28 here)."""
    return _varint((number << 3) | 2) + _varint(len(data)) + data


def test_protobuf_bodies_that_are_not_canonical_are_stored_as_protobuf_reads_them(
        store: Store, tmp_path: Path, tenant: str) -> None:
    """The writer frames a request's bytes with the tenant as field 536870911, and
    ClickHouse's protobuf reader stored an empty value for a singular field sent twice:
    a body carrying either was acknowledged and then stored outside the caller's tenant,
    or with its span's name and trace id blank."""
    def body(name: str) -> tuple[bytes, bytes]:
        t = trace_id()
        return t, request([span(name, t)]).SerializeToString()
    t1, plain = body("tenant field first")
    spoofed_first = _field(536870911, b"other-tenant") + plain
    t2, plain = body("tenant field last")
    spoofed_last = plain + _field(536870911, b"other-tenant")
    t3, plain = body("name sent twice")
    resource_spans = ExportTraceServiceRequest.FromString(plain).resource_spans[0]
    span_bytes = resource_spans.scope_spans[0].spans[0].SerializeToString()
    # the span's trace id and name sent twice: zeros and "first" before the real ones
    twice = _field(1, _field(2, _field(2, _field(1, bytes(16)) + _field(5, b"first") + span_bytes)))
    with running_collector(store, tmp_path, tenant) as c:
        hdrs = {"content-type": "application/x-protobuf", **c.headers()}
        for b in (spoofed_first, twice):
            assert httpx.post(c.http_url, content=b, headers=hdrs).status_code == 200
        code, _, _ = grpc_export(c.grpc_target, spoofed_last, c.key)
        assert code is grpc.StatusCode.OK
        c.wait_drained()
    rows = store.client.query("SELECT TraceId, SpanName FROM otel_traces WHERE Tenant = {t:String} ORDER BY SpanName",
                              parameters={"t": tenant}).result_rows
    assert rows == sorted([(t3.hex(), "name sent twice"), (t1.hex(), "tenant field first"),
                           (t2.hex(), "tenant field last")], key=lambda r: r[1])


def test_json_bracketed_keys_are_ignored_and_lone_surrogates_are_replaced(
        store: Store, tmp_path: Path, tenant: str) -> None:
    """A key written as an extension name (``"[x.y]"``) is an unknown field, which OTLP
    says to ignore: it was a 400 for the whole request. A lone surrogate escape in a key
    or an enum's name made the parser raise SystemError, answered 503 + Retry-After: a
    retry of a body that can never be read; then a 400 for the whole request, also where
    JavaScript's exporters put one (an attribute value cut by UTF-16 units halves an
    emoji). It becomes U+FFFD, as the OpenTelemetry Collector reads it: an unknown key
    or enum name is ignored, a value is stored with the replacement. An error's message
    quoted a bad value whole (a 400 twice the request's size)."""
    doc = json.loads(json.dumps(SPEC_EXAMPLE))
    doc["[vendor.top]"] = 1
    the_span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    the_span["[vendor.ext]"] = {"nested": [{"[deeper]": 2}]}
    the_span["attributes"][0]["value"]["[x]"] = "y"
    escaped = json.loads(json.dumps(SPEC_EXAMPLE))  # the bracket written as an escape alone
    escaped["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "eee19b7ec3c1b175"
    escaped["resourceSpans"][0]["[escaped]"] = {"a": 1}
    escaped_body = json.dumps(escaped).replace('"[escaped]"', '"\\u005bescaped]"').encode()
    assert b'"\\u005bescaped]"' in escaped_body and b'"[' not in escaped_body
    surrogate_kind = json.loads(json.dumps(SPEC_EXAMPLE))
    surrogate_kind["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["kind"] = "\ud800"
    surrogate_kind["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "eee19b7ec3c1b177"
    surrogate_key = json.loads(json.dumps(SPEC_EXAMPLE))
    surrogate_key["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["x\ud800"] = 1
    surrogate_key["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "eee19b7ec3c1b178"
    surrogate_value = json.loads(json.dumps(SPEC_EXAMPLE))
    surrogate_value["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "eee19b7ec3c1b176"
    surrogate_value["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"][0]["value"] = {
        "stringValue": "truncated \ud83d"}
    surrogate_quoted = json.loads(json.dumps(SPEC_EXAMPLE))  # the parser's message quotes it: a 500 then
    surrogate_quoted["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"][3]["value"] = {
        "doubleValue": "\ud800 not a number"}
    deep_unknown = json.loads(json.dumps(SPEC_EXAMPLE))  # the walk recursed: a RecursionError answered 503
    nested: dict[str, Any] = {"x": "\ud83d"}
    for _ in range(600):
        nested = {"x": nested}
    deep_unknown["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["vendorExtra"] = nested
    deep_unknown["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "eee19b7ec3c1b179"
    huge_value = json.loads(json.dumps(SPEC_EXAMPLE))
    huge_value["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["startTimeUnixNano"] = "1 " + "9" * 1_000_000
    with running_collector(store, tmp_path, tenant) as c:
        assert _json_post(c, doc).status_code == 200
        r = httpx.post(c.http_url, content=escaped_body, headers={"content-type": "application/json", **c.headers()})
        assert r.status_code == 200, r.text
        for replaced in (surrogate_kind, surrogate_key, surrogate_value):
            r = _json_post(c, replaced)
            assert r.status_code == 200, r.text
        r = httpx.post(c.http_url, content=json.dumps(deep_unknown).encode(),
                       headers={"content-type": "application/json", **c.headers()})
        assert r.status_code == 200, r.text  # an unknown field, however deep
        r = _json_post(c, surrogate_quoted)  # not a number, whatever the replacement
        assert r.status_code == 400 and "Retry-After" not in r.headers, r.text
        r = _json_post(c, huge_value)
        assert r.status_code == 400 and len(r.content) < 4096 and r.json()["message"].endswith("…")
        c.wait_drained()
    assert _count(store, tenant) == 6
    values = store.client.query("SELECT DISTINCT SpanAttributes['my.span.attr'] FROM otel_traces WHERE Tenant = "
                                "{t:String}", parameters={"t": tenant}).result_rows
    assert ("truncated \ufffd",) in values


def test_json_with_a_non_hex_id_is_400(store: Store, tmp_path: Path, tenant: str) -> None:
    doc = json.loads(json.dumps(SPEC_EXAMPLE))
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "not-hex"
    with running_collector(store, tmp_path, tenant) as c:
        r = _json_post(c, doc)
    assert r.status_code == 400 and "traceId" in r.json()["message"]


def test_oversize_requests_are_413_and_resource_exhausted_without_retry_info(store: Store, tmp_path: Path,
                                                                              tenant: str) -> None:
    big = request([span("s", trace_id(), attributes={"blob": "x" * 20_000})]).SerializeToString()
    with running_collector(store, tmp_path, tenant, max_request_bytes=10_000) as c:
        hdrs = {"content-type": "application/x-protobuf", **c.headers()}
        assert httpx.post(c.http_url, content=big, headers=hdrs).status_code == 413
        # small on the wire, too big once decompressed
        r = httpx.post(c.http_url, content=gzip.compress(big), headers={**hdrs, "content-encoding": "gzip"})
        assert r.status_code == 413 and "Retry-After" not in r.headers
        code, _, err = grpc_export(c.grpc_target, big, c.key)
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "grpc-status-details-bin" not in dict(err.trailing_metadata() or ())
        small = request([span("fits", trace_id())]).SerializeToString()
        assert httpx.post(c.http_url, content=small, headers=hdrs).status_code == 200
        c.wait_drained()
    assert _count(store, tenant) == 1


def test_unknown_media_type_is_415_and_other_methods_405(store: Store, tmp_path: Path, tenant: str) -> None:
    with running_collector(store, tmp_path, tenant) as c:
        r = httpx.post(c.http_url, content=b"x", headers={"content-type": "text/plain", **c.headers()})
        assert r.status_code == 415 and "unsupported media type" in r.text
        r = httpx.get(c.http_url)
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        r = httpx.post(c.http_url, content=b"x", headers={"content-type": "application/x-protobuf",
                                                          "content-encoding": "br", **c.headers()})
        assert r.status_code == 415


def test_missing_unknown_and_underprivileged_keys(store: Store, tmp_path: Path, tenant: str) -> None:
    body = request([span("s", trace_id())]).SerializeToString()
    with running_collector(store, tmp_path, tenant) as c:
        hdrs = {"content-type": "application/x-protobuf"}
        r = httpx.post(c.http_url, content=body, headers=hdrs)
        assert r.status_code == 401 and "missing API key" in status_pb2.Status.FromString(r.content).message
        assert r.headers["www-authenticate"] == "Bearer"  # RFC 9110: a 401 says how to authenticate
        r = httpx.post(c.http_url, content=body, headers={**hdrs, "x-api-key": "nope"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert grpc_export(c.grpc_target, body, None)[0] is grpc.StatusCode.UNAUTHENTICATED
        assert grpc_export(c.grpc_target, body, "nope")[0] is grpc.StatusCode.UNAUTHENTICATED
        r = httpx.post(c.http_url, content=body, headers={**hdrs, "x-api-key": c.key})
        assert r.status_code == 200
    with running_collector(store, tmp_path / "ro", tenant, scopes="read") as c:
        r = httpx.post(c.http_url, content=body, headers={"content-type": "application/x-protobuf", **c.headers()})
        assert r.status_code == 403
        assert grpc_export(c.grpc_target, body, c.key)[0] is grpc.StatusCode.PERMISSION_DENIED
        # refused before its body is read: a read key's upload was read (and gunzipped) whole
        # first, holding part of the request-bytes bound every client shares
        import socket
        with socket.create_connection(("127.0.0.1", c.addresses.http_port), timeout=10) as sock:
            sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                         + f"Authorization: Bearer {c.key}\r\nContent-Length: 1000000\r\n\r\n".encode())
            assert sock.recv(64).startswith(b"HTTP/1.1 403 ")  # answered with 999,999 bytes unsent


def test_admission_checks_the_key_scope_before_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=300, seal_after=60.0)
    spool.open()
    try:
        with pytest.raises(SpoolFull):
            for _ in range(10):
                spool.append("t", b"x" * 50)
        ingest = Ingest(spool, Metrics())
        with pytest.raises(Forbidden):  # a read-only key is told so, not asked to retry while the spool is full
            ingest.admit(Principal("t", frozenset({"read"})), 50)
        with pytest.raises(SpoolFull):
            ingest.admit(Principal("t", frozenset({"ingest"})), 50)
    finally:
        spool.close()



class _FailingSpool(Spool):
    """A spool whose writes fail as on a full disk (its group write raised)."""

    def append(self, tenant: str, payload: bytes) -> None:
        raise Backpressure("the spool could not store the record ([Errno 28] No space left on device); retry")


def test_a_request_asked_to_retry_is_counted_as_backpressure_not_as_received(tmp_path: Path) -> None:
    """A failed spool write (a full disk) asked the client to retry without counting a
    backpressure event, and the request's spans were counted as received on every try,
    neither accepted nor rejected: received drifted from accepted + rejected."""
    spool = _FailingSpool(tmp_path, max_bytes=1 << 20, seal_after=60.0)
    spool.open()
    metrics = Metrics()
    ingest = Ingest(spool, metrics)
    sample = metrics.registry.get_sample_value
    try:
        message = request([span("ok", trace_id()), span("", trace_id())])  # one valid, one without a name
        for _ in range(3):  # the client retries
            with pytest.raises(Backpressure), ingest.hold():
                ingest.export(message, Principal("t", frozenset({"ingest"})))
    finally:
        spool.close()
    assert sample("spanhouse_backpressure_events_total") == 3
    assert (sample("spanhouse_spans_received_total"), sample("spanhouse_spans_accepted_total")) == (0, 0)
    assert sum(s.value for m in metrics.registry.collect() if m.name == "spanhouse_spans_rejected"
               for s in m.samples if s.name.endswith("_total")) == 0


def test_every_outcome_and_kind_has_a_series_from_the_start(store: Store, tmp_path: Path, tenant: str) -> None:
    """A labelled series appeared only with its first event, and Prometheus's rate() and
    increase() take a series' first sample as its start: the first quarantine after a
    start (insert_errors{kind="rejected"}) raised no alert. And an unsupported
    Content-Encoding (415) was counted as 'invalid_argument' with the real 400s."""
    with running_collector(store, tmp_path, tenant) as c:
        text = httpx.get(c.api_url + "/metrics").text
        r = httpx.post(c.http_url, content=b"x", headers={"content-type": "application/x-protobuf",
                                                          "content-encoding": "br", **c.headers()})
        after = httpx.get(c.api_url + "/metrics").text
    for series in ('spanhouse_requests_total{outcome="unavailable",transport="grpc"} 0.0',
                   'spanhouse_requests_total{outcome="resource_exhausted",transport="http"} 0.0',
                   'spanhouse_requests_total{outcome="unsupported_media_type",transport="http"} 0.0',
                   'spanhouse_spans_rejected_total{reason="invalid_trace_id"} 0.0',
                   'spanhouse_insert_errors_total{kind="rejected"} 0.0'):
        assert series in text, series
    assert r.status_code == 415
    assert 'spanhouse_requests_total{outcome="unsupported_media_type",transport="http"} 1.0' in after
    assert 'spanhouse_requests_total{outcome="invalid_argument",transport="http"} 0.0' in after


def test_a_grpc_port_another_server_holds_is_refused_not_shared() -> None:
    """grpcio binds with SO_REUSEPORT by default: a second collector on a taken gRPC port
    shared it silently (the kernel split clients between two stores) while its HTTP, API
    and SQL ports failed as they should."""
    other = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=1))  # grpcio's defaults, as a collector had
    port = other.add_insecure_port("127.0.0.1:0")
    other.start()
    try:
        receiver = GrpcReceiver(None, KeyRing({}), Metrics(), "127.0.0.1", port, 1 << 20)  # type: ignore[arg-type]
        assert receiver.port == 0  # Collector.start turns this into "pick another --grpc-port"
    finally:
        other.stop(0)

def test_non_loopback_without_keys_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="refusing to listen on 0.0.0.0 without API keys"):
        Settings(host="0.0.0.0").validate()
    Settings(host="0.0.0.0", allow_unauthenticated=True).validate()
    Settings(host="::1").validate()


def test_store_outage_fills_the_spool_then_backpressure_then_everything_lands(store: Store, tmp_path: Path,
                                                                             tenant: str) -> None:
    def new_body() -> bytes:
        return request([span(f"s{i}", trace_id(), attributes={"pad": "p" * 3000}) for i in range(20)]).SerializeToString()

    body = new_body()
    faulty = FaultyWriter(store.writer)
    broken = dataclasses.replace(store, writer=faulty)  # type: ignore[arg-type]
    with running_collector(broken, tmp_path, tenant, spool_max_bytes=1 << 20) as c:
        hdrs = {"content-type": "application/x-protobuf", **c.headers()}
        acked = 0
        for _ in range(200):
            r = httpx.post(c.http_url, content=body, headers=hdrs, timeout=30)
            if r.status_code != 200:
                break
            acked += 1
            body = new_body()
        assert 0 < acked < 200
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        # a full spool refuses before decoding: even a body that is not OTLP is asked to come back
        not_otlp = b"\xff" * len(body)
        assert httpx.post(c.http_url, content=not_otlp, headers=hdrs, timeout=30).status_code == 503
        assert grpc_export(c.grpc_target, not_otlp, c.key)[0] is grpc.StatusCode.UNAVAILABLE
        st = status_pb2.Status.FromString(r.content)
        assert st.details[0].Is(error_details_pb2.RetryInfo.DESCRIPTOR)
        code, _, err = grpc_export(c.grpc_target, body, c.key)
        assert code is grpc.StatusCode.UNAVAILABLE
        details = status_pb2.Status.FromString(dict(err.trailing_metadata())["grpc-status-details-bin"])
        assert details.details[0].Is(error_details_pb2.RetryInfo.DESCRIPTOR)
        ready = httpx.get(c.api_url + "/readyz")
        assert ready.status_code == 503
        assert faulty.attempts >= 1
        faulty.heal()
        c.wait_drained(timeout=60)
        assert httpx.get(c.api_url + "/readyz").status_code == 200
        assert httpx.post(c.http_url, content=body, headers=hdrs).status_code == 200  # the one refused
        c.wait_drained()
        metrics = httpx.get(c.api_url + "/metrics").text
    assert _count(store, tenant) == (acked + 1) * 20
    assert re.search(r"^spanhouse_backpressure_events_total [1-9]", metrics, re.M)
    assert re.search(r'^spanhouse_insert_errors_total\{kind="unavailable"\} [1-9]', metrics, re.M)


def test_a_segment_removed_by_something_else_is_counted_lost_and_the_rest_drains(store: Store, tmp_path: Path,
                                                                                 tenant: str) -> None:
    """A spool review removed the oldest segment while the store was down: once back, the
    exporter retried the missing file for ever, nothing behind it drained (the spool
    filled, every client got 503) and /readyz blamed the store."""
    faulty = FaultyWriter(store.writer)
    broken = dataclasses.replace(store, writer=faulty)  # type: ignore[arg-type]
    with running_collector(broken, tmp_path, tenant) as c:
        hdrs = {"content-type": "application/x-protobuf", **c.headers()}
        for n in range(3):
            body = request([span(f"s{n}-{i}", trace_id()) for i in range(10)]).SerializeToString()
            assert httpx.post(c.http_url, content=body, headers=hdrs).status_code == 200
            assert c.collector._spool is not None
            c.collector._spool.seal()  # a segment of its own
        first, rotted, _ = sorted((tmp_path / "spool").glob("*.seg"))
        first.unlink()
        data = bytearray(rotted.read_bytes())  # and one rots on disk: quarantined, as before (a first fix
        data[len(data) // 2] ^= 0xFF  # retried it for ever, holding back the rest)
        rotted.write_bytes(bytes(data))
        faulty.heal()
        c.wait_drained(timeout=30)
        assert httpx.get(c.api_url + "/readyz").status_code == 200
        metrics = httpx.get(c.api_url + "/metrics").text
    assert _count(store, tenant) == 10
    assert re.search(r'^spanhouse_insert_errors_total\{kind="lost"\} 1\.0$', metrics, re.M)
    assert re.search(r'^spanhouse_insert_errors_total\{kind="rejected"\} 1\.0$', metrics, re.M)
    assert (tmp_path / "spool" / "quarantine" / rotted.name).exists()


def test_a_segment_that_cannot_be_read_is_quarantined_and_the_rest_drains(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review made the oldest segment unreadable (EACCES; EIO alike): it was retried for
    ever as the store's failure, holding back every segment after it."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, seal_after=60.0)
    spool.lock()
    spool.open()
    for i in range(3):
        spool.append("t", request([span(f"s{i}", trace_id())]).SerializeToString())
        spool.seal()
    unreadable, flaky, _ = sorted((tmp_path / "spool").glob("*.seg"))
    opened = Path.open
    failed: list[Path] = []

    def refusing(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == unreadable:
            raise PermissionError(13, "Permission denied", str(self))
        if self == flaky and not failed:  # what may pass is tried again (a second review: it was quarantined)
            failed.append(self)
            raise OSError(24, "Too many open files", str(self))
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing)
    written: list[str | None] = []

    class Recording:
        exact_batches = 0

        def write(self, items: list[Any], token: str | None = None) -> None:
            written.append(token)

    exporter = ClickHouseExporter(spool, Recording(), Metrics())  # type: ignore[arg-type]
    assert exporter.export(spool.next_sealed(timeout=0.0))  # type: ignore[arg-type]
    with pytest.raises(OSError, match="Too many open files"):  # the exporter's loop tries it again
        exporter.export(spool.next_sealed(timeout=0.0))  # type: ignore[arg-type]
    while (segment := spool.next_sealed(timeout=0.0)) is not None:
        assert exporter.export(segment)
    assert len(written) == 2 and exporter.healthy
    assert (tmp_path / "spool" / "quarantine" / unreadable.name).exists()
    spool.close()


def test_exporter_outlives_an_unexpected_failure_and_keeps_the_segment(store: Store, tmp_path: Path,
                                                                       tenant: str) -> None:
    """A failure that is neither the store's nor the data's (here the disk, while the
    segment is handled) must not end the exporter thread: the segment stays, /readyz says
    so while staying ready (it said 503 while the spool still took data), and once the
    cause is gone everything acknowledged lands."""
    faulty = FaultyWriter(store.writer, error=lambda: OSError(28, "No space left on device"))
    with running_collector(dataclasses.replace(store, writer=faulty), tmp_path, tenant) as c:  # type: ignore[arg-type]
        body = request([span(f"s{i}", trace_id()) for i in range(5)]).SerializeToString()
        hdrs = {"content-type": "application/x-protobuf", **c.headers()}
        assert httpx.post(c.http_url, content=body, headers=hdrs).status_code == 200
        deadline = time.monotonic() + 30
        while faulty.attempts < 2 and time.monotonic() < deadline:  # retried: the thread is alive
            time.sleep(0.05)
        assert faulty.attempts >= 2
        # still ready: the spool takes data through the outage (a load balancer taking every
        # replica out would lose it); the store's state is said, and is a gauge
        ready = httpx.get(c.api_url + "/readyz")
        assert ready.status_code == 200 and "ClickHouse is refusing inserts" in ready.json()["reason"]
        assert "spanhouse_store_healthy 0.0" in httpx.get(c.api_url + "/metrics").text
        body = request([span(f"t{i}", trace_id()) for i in range(5)]).SerializeToString()
        assert httpx.post(c.http_url, content=body, headers=hdrs).status_code == 200
        faulty.heal()
        c.wait_drained(timeout=60)
        assert httpx.get(c.api_url + "/readyz").json() == {"status": "ready", "reason": ""}
        metrics = httpx.get(c.api_url + "/metrics").text
        assert "spanhouse_store_healthy 1.0" in metrics
    assert _count(store, tenant) == 10
    assert not (tmp_path / "spool" / "quarantine").exists()
    assert re.search(r'^spanhouse_insert_errors_total\{kind="failed"\} [1-9]', metrics, re.M)


def test_a_stop_tries_a_failed_store_again_at_once_and_drains_into_it(store: Store, tmp_path: Path,
                                                                      tenant: str) -> None:
    """One failed insert just before a stop skipped the whole drain: the stop ended as
    soon as the store was unhealthy, its 30 s backoff unexpired, though the store was
    back; the spans waited in the spool for the next start."""
    faulty = FaultyWriter(store.writer)
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, seal_after=0.05)
    spool.open()
    exporter = ClickHouseExporter(spool, faulty, Metrics(), backoff_initial=30)  # type: ignore[arg-type]
    spool.append(tenant, request([span(f"s{i}", trace_id()) for i in range(5)]).SerializeToString())
    spool.seal()
    exporter.start()
    try:
        deadline = time.monotonic() + 30
        while faulty.attempts < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        faulty.heal()  # back, while the exporter waits out its backoff
        started = time.monotonic()
        assert exporter.stop(drain_timeout=10) is True
        assert time.monotonic() - started < 5
    finally:
        spool.close()
    assert _count(store, tenant) == 5
    broken = FaultyWriter(store.writer)  # still down at the stop: one try, then the stop ends
    spool = Spool(tmp_path / "spool2", max_bytes=1 << 20, seal_after=0.05)
    spool.open()
    exporter = ClickHouseExporter(spool, broken, Metrics(), backoff_initial=30)  # type: ignore[arg-type]
    spool.append(tenant, b"")
    spool.seal()
    exporter.start()
    try:
        while broken.attempts < 1:
            time.sleep(0.01)
        started = time.monotonic()
        assert exporter.stop(drain_timeout=10) is False
        assert broken.attempts == 2 and time.monotonic() - started < 5
    finally:
        spool.close()


class _GoesDown:
    """A writer that stores its first batch, then fails each one after 0.5 s (a store
    going down during a drain)."""

    exact_batches = 0

    def __init__(self) -> None:
        self.attempts = 0

    def write(self, items: list[Any], token: str | None = None) -> None:
        self.attempts += 1
        if self.attempts > 1:
            time.sleep(0.5)
            raise StoreUnavailable("injected: down during the drain")


def test_a_store_failing_during_the_drain_is_tried_no_more(tmp_path: Path) -> None:
    """The stop's wake-up, meant for a store that had failed before it, was left set for
    a healthy one: failing during the drain, it was tried once more at once, and the stop
    waited for that insert too."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, seal_after=0.05)
    spool.open()
    writer = _GoesDown()
    exporter = ClickHouseExporter(spool, writer, Metrics(), backoff_initial=0.2)  # type: ignore[arg-type]
    for _ in range(2):
        spool.append("t", b"x")
        spool.seal()
    exporter.start()
    try:
        assert exporter.stop(drain_timeout=10) is False
    finally:
        spool.close()
    assert writer.attempts == 2


class _SlowlyDown:
    """A store that takes 0.5 s to fail each insert (a client's timeout)."""

    exact_batches = 0

    def __init__(self) -> None:
        self.started = self.done = 0

    def write(self, items: list[Any], token: str | None = None) -> None:
        self.started += 1
        try:
            time.sleep(0.5)
            raise StoreUnavailable("injected: connect timeout")
        finally:
            self.done += 1


def test_a_stop_during_a_retry_starts_no_further_insert(tmp_path: Path) -> None:
    """A stop arriving while the exporter retried a down store left its wake-up set:
    once that insert failed, the thread skipped its backoff and started another, which
    the stop then waited for."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, seal_after=0.05)
    spool.open()
    writer = _SlowlyDown()
    exporter = ClickHouseExporter(spool, writer, Metrics(), backoff_initial=0.05,  # type: ignore[arg-type]
                                  backoff_max=0.05)
    spool.append("t", b"x")
    spool.seal()
    exporter.start()
    try:
        deadline = time.monotonic() + 30
        while not (writer.done >= 1 and writer.started == writer.done + 1) and time.monotonic() < deadline:
            time.sleep(0.01)  # until a retry is under way
        in_flight = writer.started
        assert exporter.stop(drain_timeout=10) is False
    finally:
        spool.close()
    assert writer.started == in_flight


class _HeldIngest(Ingest):
    """An ingest whose exports wait until ``release``: calls pile up in the receiver."""

    def __init__(self) -> None:
        super().__init__(None, Metrics())  # type: ignore[arg-type]  # nothing reaches a spool
        self.release = threading.Event()
        self.started = 0

    def admit(self, principal: Principal, size: int) -> None:
        pass

    def export(self, request: object, principal: Principal, raw: bytes | None = None) -> ExportTraceServiceResponse:
        self.started += 1
        self.release.wait(30)
        return ExportTraceServiceResponse()


def test_calls_beyond_the_grpc_workers_wait_their_turn_instead_of_being_refused() -> None:
    """More calls at once than the receiver has workers: they wait in grpcio's queue and
    are all answered. (grpcio's own concurrent-call limit, 8x the workers, refused the
    overflow with RESOURCE_EXHAUSTED without RetryInfo, which OTLP clients do not retry.)"""
    ingest = _HeldIngest()
    receiver = GrpcReceiver(ingest, KeyRing({}), Metrics(), "127.0.0.1", 0, 1 << 20,  # type: ignore[arg-type]
                            workers=2)
    receiver.start()
    calls = 40
    try:
        with grpc.insecure_channel(f"127.0.0.1:{receiver.port}") as channel:
            export = channel.unary_unary(EXPORT)
            pending = [export.future(b"", timeout=60) for _ in range(calls)]
            deadline = time.monotonic() + 10
            while ingest.started < 2 and time.monotonic() < deadline:  # both workers held, the rest queued
                time.sleep(0.01)
            time.sleep(0.5)
            ingest.release.set()
            codes = [f.code() for f in pending]
    finally:
        receiver.stop(grace=1)
    assert codes == [grpc.StatusCode.OK] * calls and ingest.started == calls


def test_a_large_json_request_does_not_stall_the_other_http_clients(tmp_path: Path) -> None:
    """OTLP/JSON was decoded on the event loop every HTTP listener shares: while one
    25 MiB request was parsed (~5 s) every other export and /healthz waited for it."""
    from tests.collector_harness import ServeProcess

    serve = ServeProcess(tmp_path / "store")
    ports = serve.start()
    url, health = f"http://127.0.0.1:{ports['http_port']}/v1/traces", serve.api_url + "/healthz"
    start = time.time_ns()
    spans = [{"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": "s", "startTimeUnixNano": str(start),
              "endTimeUnixNano": str(start + 1), "attributes": [{"key": f"k{j}", "value": {"stringValue": "v"}}
                                                                for j in range(5)]}
             for i in range(40_000)]
    big = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()
    small = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans[:1]}]}]}).encode()
    headers = {"content-type": "application/json"}
    waits: list[float] = []
    try:
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(httpx.post, url, content=big, headers=headers, timeout=120)
            time.sleep(0.3)  # the body is sent by now; the collector decodes it
            while not answer.done():
                t = time.perf_counter()
                assert httpx.post(url, content=small, headers=headers, timeout=120).status_code == 200
                assert httpx.get(health, timeout=120).status_code == 200
                waits.append(time.perf_counter() - t)
        took = time.perf_counter() - started
        assert answer.result().status_code == 200
    finally:
        assert serve.terminate() == 0
    assert took > 1.5 and waits, f"the large request took {took:.1f} s: too quick to show a stall"
    # One C-level json.loads of the body holds the GIL for its length (0.7 s on a quiet
    # machine, 1.7 s of 4.9 once in a loaded suite run): a wait that long is the GIL, not
    # a stalled loop, which held every request for the whole decode.
    assert max(waits) < took / 2, f"an export and a health check waited {max(waits):.1f} s of {took:.1f} s"


def test_a_client_that_hangs_up_mid_body_is_no_error(store: Store, tmp_path: Path, tenant: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A client giving up mid-upload was logged as an unexpected error with a traceback
    and counted as a 503 answer nobody received."""
    import socket

    with running_collector(store, tmp_path, tenant) as c:
        with socket.create_connection(("127.0.0.1", c.addresses.http_port)) as sock:
            sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                         + f"Authorization: Bearer {c.key}\r\nContent-Length: 1000\r\n\r\n".encode() + b"\n\x10" * 8)
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while 'outcome="client_disconnected",transport="http"} 1.0' not in httpx.get(c.api_url + "/metrics").text:
            assert time.monotonic() < deadline, "the hang-up was not counted"
            time.sleep(0.1)
        assert 'outcome="unavailable",transport="http"} 0.0' in httpx.get(c.api_url + "/metrics").text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_request_bytes_held_at_once_are_bounded_and_the_overflow_is_asked_to_retry(
        store: Store, tmp_path: Path, tenant: str) -> None:
    """Two slow uploads hold most of the bound (twice the largest request); a third
    request is answered 503 + Retry-After before its body is kept, and every request
    lands once it is sent again."""
    mib = 1 << 20
    bodies = [request([span(f"s{i}-{j}", trace_id(), attributes={"pad": "p" * 8000}) for j in range(100)])
              .SerializeToString() for i in range(3)]
    assert all(0.75 * mib < len(b) < mib for b in bodies)
    go = threading.Event()

    def stalled(body: bytes) -> Iterator[bytes]:
        yield body[:-100]  # most of it, then wait
        go.wait(30)
        yield body[-100:]

    with running_collector(store, tmp_path, tenant, max_request_bytes=mib) as c:
        hdrs = {"content-type": "application/x-protobuf", **c.headers()}
        slow = [concurrent.futures.ThreadPoolExecutor(1).submit(
            httpx.post, c.http_url, content=stalled(b), headers=hdrs, timeout=60) for b in bodies[:2]]
        deadline = time.monotonic() + 30
        held = len(bodies[0]) + len(bodies[1]) - 300
        while metric(c.api_url, "spanhouse_request_bytes_held") < held and time.monotonic() < deadline:
            time.sleep(0.02)
        refused = httpx.post(c.http_url, content=bodies[2], headers=hdrs, timeout=30)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        go.set()
        assert [f.result().status_code for f in slow] == [200, 200]
        assert httpx.post(c.http_url, content=bodies[2], headers=hdrs, timeout=30).status_code == 200
        assert metric(c.api_url, "spanhouse_request_bytes_held") == 0
        c.wait_drained()
    assert _count(store, tenant) == 300


def test_health_endpoints(store: Store, tmp_path: Path, tenant: str) -> None:
    with running_collector(store, tmp_path, tenant) as c:
        assert httpx.get(c.api_url + "/healthz").json() == {"status": "ok"}
        assert httpx.get(c.api_url + "/readyz").json()["status"] == "ready"
        assert "spanhouse_spool_bytes" in httpx.get(c.api_url + "/metrics").text


def test_a_response_with_a_body_is_not_held_for_the_clients_delayed_ack(store: Store, tmp_path: Path,
                                                                          tenant: str) -> None:
    """The listening sockets were made without IPPROTO_TCP, so asyncio left Nagle's
    algorithm on for their connections: a response's body waited for the client's delayed
    ACK of its headers, 40 ms a response for Python's HTTP clients (httpx, the OTLP
    exporter's requests) on every partial success, error, API and SQL answer."""
    with running_collector(store, tmp_path, tenant) as c, httpx.Client() as client:
        calls = {
            "otlp 400": lambda: client.post(c.http_url, content=b"\xff", headers={
                "content-type": "application/x-protobuf", **c.headers()}),
            "api": lambda: client.get(c.api_url + "/api/v1/executions", headers=c.headers()),
            "sql 401": lambda: client.post(c.sql_url, content="SELECT 1", auth=("default", "wrong")),
        }
        fastest = {}
        for name, call in calls.items():
            took = []
            for _ in range(20):
                started = time.perf_counter()
                assert call().content
                took.append(time.perf_counter() - started)
            fastest[name] = min(took)  # never below the 40 ms timer while held, whatever the load
        assert all(t < 0.02 for t in fastest.values()), fastest


def test_gzip_grpc_compression(store: Store, tmp_path: Path, tenant: str) -> None:
    body = request([span("gz", trace_id(), attributes={"a": "b" * 100})]).SerializeToString()
    with running_collector(store, tmp_path, tenant) as c:
        code, reply, _ = grpc_export(c.grpc_target, body, c.key, compression=grpc.Compression.Gzip)
        assert code is grpc.StatusCode.OK and reply == b""
        c.wait_drained()
    assert _count(store, tenant) == 1



def test_an_ipv6_loopback_host_listens_on_every_transport(store: Store, tmp_path: Path, tenant: str) -> None:
    """--host ::1 is loopback (no keys needed), but the gRPC address was built as
    '::1:0', which grpcio parses as a name: start-up failed blaming the port."""
    with running_collector(store, tmp_path, tenant, host="::1") as c:
        body = request([span("v6", trace_id())]).SerializeToString()
        hdrs = {"content-type": "application/x-protobuf", **c.headers()}
        assert httpx.post(f"http://[::1]:{c.addresses.http_port}/v1/traces", content=body, headers=hdrs).status_code == 200
        body = request([span("v6 over gRPC", trace_id())]).SerializeToString()
        assert grpc_export(f"[::1]:{c.addresses.grpc_port}", body, c.key)[0] is grpc.StatusCode.OK
        c.wait_drained()
    assert _count(store, tenant) == 2


def test_both_transports_count_outcomes_by_the_same_names(store: Store, tmp_path: Path, tenant: str) -> None:
    """gRPC counted 'unauthenticated' and HTTP '401' for the same refusal: a sum by
    outcome across transports split every kind in two."""
    with running_collector(store, tmp_path, tenant) as c:
        body = request([span("s", trace_id())]).SerializeToString()
        assert httpx.post(c.http_url, content=body, headers={"content-type": "application/x-protobuf"}).status_code == 401
        assert grpc_export(c.grpc_target, body, None)[0] is grpc.StatusCode.UNAUTHENTICATED
        text = httpx.get(c.api_url + "/metrics").text
    assert 'spanhouse_requests_total{outcome="unauthenticated",transport="http"} 1.0' in text, text
    assert 'spanhouse_requests_total{outcome="unauthenticated",transport="grpc"} 1.0' in text, text


def test_a_start_that_fails_lets_go_of_the_spool(store: Store, tmp_path: Path) -> None:
    """The spool's directory is locked first (so a refused start touches nothing in it): a
    start that failed after that (a --forward-otlp typo) kept the lock, and the corrected
    settings could not start in this process ('in use by another spool')."""
    settings = Settings(dsn=store.dsn, grpc_port=0, http_port=0, api_port=0, sql_port=0, spool_dir=tmp_path / "spool",
                        forward_otlp=("http://127.0.0.1:43l8/v1/traces",))
    with pytest.raises(ConfigError, match="--forward-otlp"):
        Collector(settings, store=store).start()
    fixed = Collector(dataclasses.replace(settings, forward_otlp=()), store=store)
    fixed.start()
    try:
        with pytest.raises(RuntimeError, match="starts once"):  # it replaced its running spool with one refused
            fixed.start()
    finally:
        assert fixed.stop()
    again = Collector(dataclasses.replace(settings, forward_otlp=()), store=store)
    again.start()  # the stopped one let go of the directory, its lock included
    assert again.stop()


def test_a_spool_holding_another_stores_segments_refuses_to_start(store: Store, tmp_path: Path) -> None:
    """A spool review acknowledged spans for one store, stopped with them spooled, and
    started with another --dsn on the same spool directory (the default for every server
    DSN): they went to the second store without a word. The start is refused, saying
    which store they are for, and that store's start drains them. A start that failed
    (a mistyped DSN) records no store; a spool inside an embedded store's data directory
    records it by where it is, and moves with it (a diff review's moved store was refused)."""
    def spooled(spool_dir: Path, name: str) -> None:
        spool = Spool(spool_dir, max_bytes=1 << 30, seal_after=60.0)
        spool.lock()
        spool.open()
        spool.append("t-spool-bound", request([span(name, trace_id())]).SerializeToString())
        spool.seal()
        spool.close()

    def count() -> int:
        return int(store.client.command("SELECT count() FROM otel_traces WHERE Tenant = 't-spool-bound'"))

    spool_dir = tmp_path / "spool"
    settings = Settings(dsn=store.dsn, grpc_port=0, http_port=0, api_port=0, sql_port=0, spool_dir=spool_dir)
    first = Collector(settings, store=store)
    first.start()
    assert first.stop()
    spooled(spool_dir, "for the first store")
    other = dataclasses.replace(settings, dsn=f"chdb://{tmp_path / 'other-store'}")
    with pytest.raises(ConfigError, match=f"holds segments acknowledged for the store {store.dsn}, not"):
        Collector(other).start()
    (spool_dir / "store").unlink()  # as after an upgrade: no record yet
    with pytest.raises(StoreUnavailable):  # (this process holds an embedded store already: a failed start)
        Collector(other).start()
    assert not (spool_dir / "store").exists()
    again = Collector(settings, store=store)
    again.start()
    assert again.stop()
    assert count() == 1 and (spool_dir / "store").read_text() == store.dsn

    inside = Path(store.dsn[len("chdb://"):]) / "spool-of-a-moved-store"
    spooled(inside, "in a store moved")
    (inside / "store").write_text("chdb:..")  # as it records itself: the store around it, wherever that is
    moved = Collector(dataclasses.replace(settings, spool_dir=inside), store=store)
    moved.start()
    assert moved.stop()
    assert count() == 2
    spooled(inside, "recorded absolutely")  # as an earlier version recorded an inside spool: still this store's
    (inside / "store").write_text(store.dsn)
    moved = Collector(dataclasses.replace(settings, spool_dir=inside), store=store)
    moved.start()
    assert moved.stop()
    assert count() == 3 and (inside / "store").read_text() == "chdb:.."
    spooled(inside, "for a server")  # a spool inside a data directory is checked too (a first fix did not)
    (inside / "store").write_text("http://ch.example:8123/default")
    with pytest.raises(ConfigError, match="acknowledged for the store http://ch.example:8123/default, not chdb:.."):
        Collector(dataclasses.replace(settings, spool_dir=inside), store=store).start()
    (inside / "store").write_bytes(b"\xff\xfe")  # a record that cannot be read says so (it was a traceback)
    with pytest.raises(ConfigError, match="cannot read .*store"):
        Collector(dataclasses.replace(settings, spool_dir=inside), store=store).start()


@contextlib.contextmanager
def _a_taken_port_and_a_free_one() -> Iterator[tuple[int, int]]:
    """A loopback port held (listening) while the block runs, and one free to bind."""
    with socket.socket() as taken, socket.socket() as probe:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
        probe.close()
        yield taken.getsockname()[1], free


def test_a_start_failing_on_a_taken_port_frees_the_ports_it_had(store: Store, tmp_path: Path) -> None:
    """grpcio keeps the port of a server that was bound but never started, even stopped:
    a start failing on a taken HTTP port held its gRPC port for the rest of the process."""
    with _a_taken_port_and_a_free_one() as (taken, grpc_port):
        settings = Settings(dsn=store.dsn, grpc_port=grpc_port, http_port=taken, api_port=0, sql_port=0,
                            spool_dir=tmp_path / "spool")
        with pytest.raises(ConfigError, match="cannot listen"):
            Collector(settings, store=store).start()
    fixed = Collector(dataclasses.replace(settings, http_port=0), store=store)
    assert fixed.start().grpc_port == grpc_port
    assert fixed.stop()


def test_a_start_failing_on_the_grpc_port_frees_the_http_ports(store: Store, tmp_path: Path) -> None:
    """The HTTP, API and SQL sockets are bound before the gRPC port: a start failing on a
    taken gRPC port left them bound while its error was kept alive (pytest's, a log
    record's), so the same HTTP port could not be used by the corrected settings."""
    with _a_taken_port_and_a_free_one() as (taken, http_port):
        settings = Settings(dsn=store.dsn, grpc_port=taken, http_port=http_port, api_port=0, sql_port=0,
                            spool_dir=tmp_path / "spool")
        with pytest.raises(ConfigError, match="cannot listen for gRPC") as failed:
            Collector(settings, store=store).start()
    assert failed.value is not None  # the error, and its frames, still alive here
    fixed = Collector(dataclasses.replace(settings, grpc_port=0), store=store)
    assert fixed.start().http_port == http_port
    assert fixed.stop()
