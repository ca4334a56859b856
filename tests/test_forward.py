"""OTLP forwarding between two real collectors on 127.0.0.1: A forwards to B; B is down
for a while and A restarts meanwhile; every span A accepted ends up in both stores
exactly once. A dead destination with a small bound drops (and counts), never blocks."""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import http.server
import logging
import os
import shutil
import socket
import threading
import time
import urllib.parse
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from spanhouse.collector import forward
from spanhouse.collector.forward import Destination, Forwarder, Sender, forwarders
from spanhouse.collector.metrics import Metrics
from spanhouse.collector.spool import Segment, Spool, intact_records
from spanhouse.errors import ConfigError
from tests.collector_harness import ServeProcess, count_in_store, grpc_export, metric
from tests.otlp import ExportTraceServiceRequest, request, span, trace_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _send(ports: dict[str, int], prefix: str, n: int, pad: int = 0) -> list[str]:
    names = []
    for i in range(n):
        batch = [f"{prefix}-{i}-{j}" for j in range(10)]
        body = request([span(name, trace_id(), attributes={"pad": "p" * pad}) for name in batch]).SerializeToString()
        assert grpc_export(f"127.0.0.1:{ports['grpc_port']}", body, None)[0] is grpc.StatusCode.OK
        names += batch
    return names


def _wait(condition, timeout: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError("timed out")


def test_chain_survives_downstream_outage_and_upstream_restart(tmp_path: Path) -> None:
    b_grpc = _free_port()
    forward = ["--forward-otlp", f"grpc://127.0.0.1:{b_grpc}", "--batch-delay", "0.2"]
    a = ServeProcess(tmp_path / "a", *forward)
    a_ports = a.start()
    sent = _send(a_ports, "first", 20)  # B is down: A acknowledges anyway
    assert a.terminate() == 0  # restart A while B is still down
    a = ServeProcess(tmp_path / "a", *forward)
    a_ports = a.start()
    sent += _send(a_ports, "second", 20)
    b = ServeProcess(tmp_path / "b", "--batch-delay", "0.2")
    b.args[b.args.index("--grpc-port") + 1] = str(b_grpc)
    b.start()
    _wait(lambda: metric(a.api_url, "spanhouse_forward_backlog_bytes") == 0
          and metric(a.api_url, "spanhouse_spool_segments") == 0)
    _wait(lambda: metric(b.api_url, "spanhouse_spans_accepted_total") >= 200
          and metric(b.api_url, "spanhouse_spool_segments") == 0)
    assert a.terminate() == 0 and b.terminate() == 0
    for data in (tmp_path / "a", tmp_path / "b"):
        counts = dict(count_in_store(data, "SELECT SpanName, count() FROM otel_traces GROUP BY SpanName"))
        assert sorted(counts) == sorted(sent), data
        assert set(counts.values()) == {1}, data


def test_dead_destination_is_bounded_counted_and_never_slows_ingest(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_free_port()}/v1/traces"
    a = ServeProcess(tmp_path / "a", "--forward-otlp", f"{dead};authorization=Bearer x", "--forward-max-bytes",
                     "64KiB", "--batch-delay", "0.1", "--batch-bytes", "64KiB")
    ports = a.start()
    started = time.monotonic()
    sent = _send(ports, "x", 60, pad=2000)  # ~1.2 MB for a 64 KiB bound
    assert time.monotonic() - started < 30
    _wait(lambda: metric(a.api_url, "spanhouse_spool_segments") == 0)
    _wait(lambda: metric(a.api_url, "spanhouse_forward_dropped_bytes_total") > 0)
    assert metric(a.api_url, "spanhouse_forward_backlog_bytes") <= 64 * 1024 * 2
    assert a.terminate() == 0
    assert count_in_store(tmp_path / "a", "SELECT count() FROM otel_traces") == [[len(sent)]]


class _Destination:
    """A sender taking requests until ``fail_at`` of them have arrived, then failing (to
    be retried). It refuses a merged request for good, as a destination with a small
    size limit would: the forwarder then sends its requests one by one, so these tests
    follow progress request by request (merging has tests of its own)."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.got: list[bytes] = []
        self.refused = False

    def send(self, payload: bytes, tenant: str, *, merged: int = 0) -> bool:
        self.refused = bool(merged)
        if merged:
            return True
        if len(self.got) == self.fail_at:
            return False
        self.got.append(payload)
        return True


def test_a_failed_send_records_progress_and_the_next_attempt_resumes_there(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, seal_after=60.0)
    spool.open()
    try:
        for i in range(5):
            spool.append("t", f"r{i}".encode())
        spool.seal()
        segment = spool.next_sealed(timeout=5)
    finally:
        spool.close()
    assert segment is not None
    forwarder = Forwarder(Destination.parse("grpc://127.0.0.1:9"), tmp_path / "fwd", 1 << 20, Metrics())
    forwarder.adopt(segment)
    linked = tmp_path / "fwd" / segment.path.name
    first, second = _Destination(fail_at=3), _Destination(fail_at=99)
    assert forwarder._forward(linked, first) is False  # type: ignore[arg-type]
    assert linked.with_suffix(".pos").read_text() == "3"  # within 0.5 s: written because sending stopped
    assert forwarder._forward(linked, second) is True  # type: ignore[arg-type]
    assert first.got + second.got == [f"r{i}".encode() for i in range(5)]  # each once, in order
    assert not linked.exists() and not linked.with_suffix(".pos").exists()


def test_a_segment_the_forwarder_cannot_take_is_counted_as_dropped(tmp_path: Path) -> None:
    """The hand-off runs on the spool's flusher: a failure there (here the segment's file
    is gone, as a full disk would fail the link) is this destination's loss, counted."""
    metrics = Metrics()
    forwarder = Forwarder(Destination.parse("grpc://127.0.0.1:9"), tmp_path / "fwd", 1 << 20, metrics)
    forwarder.adopt(Segment("000000000001-" + "0" * 32, tmp_path / "missing.seg", 123))
    assert metrics.registry.get_sample_value("spanhouse_forward_dropped_bytes_total",
                                             {"destination": "grpc://127.0.0.1:9"}) == 123
    assert not list((tmp_path / "fwd").glob("*.seg"))


def test_an_unreadable_segment_is_counted_as_dropped(tmp_path: Path) -> None:
    """It was dropped with a log line only, though a drop is never to be silent."""
    segment = _segments(tmp_path, 1, 2)[0]
    metrics = Metrics()
    forwarder = Forwarder(Destination.parse("grpc://127.0.0.1:9"), tmp_path / "fwd", 1 << 20, metrics)
    forwarder.adopt(segment)
    linked = tmp_path / "fwd" / segment.path.name
    data = bytearray(linked.read_bytes())
    data[-1] ^= 0xFF  # the payload's last byte: its checksum fails
    linked.write_bytes(bytes(data))
    assert forwarder._forward(linked, _Destination(fail_at=99)) is True  # type: ignore[arg-type]
    assert metrics.registry.get_sample_value("spanhouse_forward_dropped_bytes_total",
                                             {"destination": "grpc://127.0.0.1:9"}) == len(data)


class _Answers(http.server.BaseHTTPRequestHandler):
    """Answers a POST to /<status> with that status."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(int(self.path.strip("/")))
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "retried"), [(200, False), (429, True), (502, True), (503, True), (504, True),
                                                 (400, False), (401, False), (404, False), (500, False)])
def test_http_destination_answers_are_retried_as_the_otlp_spec_says(status: int, retried: bool) -> None:
    """429/502/503/504 are retried; every other error is dropped and counted, not retried
    forever ahead of everything behind it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    metrics = Metrics()
    destination = Destination.parse(f"http://127.0.0.1:{server.server_address[1]}/{status}")
    sender = Sender(destination, metrics)
    try:
        assert sender.send(b"request", "t") is not retried
    finally:
        sender.close()
        server.shutdown()
    rejected = metrics.registry.get_sample_value("spanhouse_forward_rejected_total", {"destination": destination.label})
    assert rejected == (1 if status >= 300 and not retried else None)
    # a refused request is not also counted as forwarded
    sent = metrics.registry.get_sample_value("spanhouse_forward_sent_total", {"destination": destination.label})
    assert sent == (1 if status < 300 else None)


@pytest.mark.parametrize(("code", "retry_info", "retried"), [
    (grpc.StatusCode.OK, False, False), (grpc.StatusCode.UNAVAILABLE, False, True),
    (grpc.StatusCode.DEADLINE_EXCEEDED, False, True), (grpc.StatusCode.RESOURCE_EXHAUSTED, True, True),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, False, False), (grpc.StatusCode.UNAUTHENTICATED, False, False),
    (grpc.StatusCode.INVALID_ARGUMENT, False, False), (grpc.StatusCode.INTERNAL, False, False)])
def test_grpc_destination_answers_are_retried_as_the_otlp_spec_says(code: grpc.StatusCode, retry_info: bool,
                                                                    retried: bool) -> None:
    """The retryable codes, and RESOURCE_EXHAUSTED only with RetryInfo (throttling)."""
    def export(body: bytes, context: grpc.ServicerContext) -> bytes:
        if code is grpc.StatusCode.OK:
            return b""
        status = status_pb2.Status(code=code.value[0], message="test")
        if retry_info:
            status.details.add().Pack(error_details_pb2.RetryInfo())
        context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
        context.abort(code, "test")

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": grpc.unary_unary_rpc_method_handler(export)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    metrics = Metrics()
    sender = Sender(Destination.parse(f"grpc://127.0.0.1:{port}"), metrics)
    try:
        assert sender.send(b"", "t") is not retried
    finally:
        sender.close()
        server.stop(0)


def test_a_restart_does_not_forward_again_what_was_forwarded(tmp_path: Path) -> None:
    """After a restart the spool hands every segment it still holds (say ClickHouse is
    down) to the forwarders again; the ones already sent are not taken a second time,
    and a segment sealed after the restart (its sequence continues) is."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, seal_after=60.0)
    spool.open()
    for i in range(3):
        spool.append("t", f"r{i}".encode())
    spool.seal()
    first = spool.next_sealed(timeout=5)
    spool.close()
    assert first is not None
    forwarder = Forwarder(Destination.parse("grpc://127.0.0.1:9"), tmp_path / "fwd", 1 << 20, Metrics())
    forwarder.adopt(first)
    destination = _Destination(fail_at=99)
    assert forwarder._forward(tmp_path / "fwd" / first.path.name, destination) is True  # type: ignore[arg-type]
    assert len(destination.got) == 3

    taken: list[Segment] = []
    restarted = Forwarder(Destination.parse("grpc://127.0.0.1:9"), tmp_path / "fwd", 1 << 20, Metrics())
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, seal_after=60.0, on_seal=restarted.adopt)
    spool.open()  # recovery hands `first` over again
    assert not list((tmp_path / "fwd").glob("*.seg"))
    while (segment := spool.next_sealed(timeout=0.1)) is not None:
        taken.append(segment)
        spool.delete(segment)  # ClickHouse took it: the spool is now empty
    spool.close()
    assert [s.name for s in taken] == [first.name]

    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, seal_after=60.0, on_seal=restarted.adopt)
    spool.open()
    spool.append("t", b"later")
    spool.seal()
    later = spool.next_sealed(timeout=5)
    spool.close()
    assert later is not None and later.name[:12] > first.name[:12]
    assert [p.name for p in (tmp_path / "fwd").glob("*.seg")] == [later.path.name]


def _segments(tmp_path: Path, n: int, size: int) -> list[Segment]:
    """``n`` sealed spool segments of one ``size``-byte request each, oldest first."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 26, seal_after=60.0)
    spool.open()
    (tmp_path / "kept").mkdir()
    made = []
    try:
        for i in range(n):
            spool.append("t", bytes([i]) * size)
            spool.seal()
            segment = spool.next_sealed(timeout=5)
            assert segment is not None
            kept = tmp_path / "kept" / segment.path.name
            os.link(segment.path, kept)
            made.append(Segment(segment.name, kept, segment.size))
            spool.delete(segment)  # drained: the spool hands out the next one
    finally:
        spool.close()
    return made


def test_the_bound_never_drops_the_segment_being_sent(tmp_path: Path) -> None:
    """Dropping the segment in flight counted bytes that were sent after all (and, were
    its finish recorded, a restart would skip what was not sent yet)."""
    metrics = Metrics()
    forwarder = Forwarder(Destination.parse("grpc://127.0.0.1:9"), tmp_path / "fwd", 25_000, metrics)
    first, *rest = _segments(tmp_path, 4, 10_000)
    forwarder.adopt(first)
    forwarder._sending = tmp_path / "fwd" / first.path.name  # what the sending thread sets
    for segment in rest:
        forwarder.adopt(segment)
    kept = sorted(p.name for p in (tmp_path / "fwd").glob("*.seg"))
    assert kept == [first.path.name, rest[-1].path.name]  # in flight, and the newest
    dropped = metrics.registry.get_sample_value("spanhouse_forward_dropped_bytes_total",
                                                {"destination": "grpc://127.0.0.1:9"})
    assert dropped == sum(s.size for s in rest[:-1])
    # the segment in flight is not recorded as finished: after a restart it is sent
    restarted = Forwarder(Destination.parse("grpc://127.0.0.1:9"), tmp_path / "fwd", 25_000, Metrics())
    assert first.path.name in {p.name for p in restarted._segments()}


def test_a_segment_dropped_before_its_send_is_no_sign_the_destination_works_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The bound may drop the oldest segment between its listing and its read: that
    was taken for a send that succeeded, and "works again" was logged for a destination
    where nothing listens."""
    forwarder = Forwarder(Destination.parse("http://127.0.0.1:1/v1/traces"), tmp_path / "fwd", 1 << 20, Metrics())
    [segment] = _segments(tmp_path, 1, 100)
    forwarder.adopt(segment)
    linked = tmp_path / "fwd" / segment.path.name
    listings = iter([[linked], [tmp_path / "fwd" / "000000000099-gone.seg"]])

    def listed() -> list[Path]:
        try:
            return next(listings)
        except StopIteration:
            forwarder.request_stop()
            return []

    forwarder._segments = listed  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="spanhouse.collector.forward"):
        forwarder._run()
    said = [r.getMessage() for r in caplog.records]
    assert any("fails" in m for m in said) and not any("works again" in m for m in said), said


class _Throttling(http.server.BaseHTTPRequestHandler):
    """Answers 429 with the Retry-After in its path, or 200 with a partial success."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers["content-length"]))
        if self.path in ("/partial", "/negative"):  # a negative count: an int64 a buggy destination sends
            body = ExportTraceServiceResponse(partial_success=ExportTracePartialSuccess(
                rejected_spans=2 if self.path == "/partial" else -1,
                error_message="span rejected: bad attr")).SerializeToString()
            self.send_response(200)
        else:
            body = b""
            self.send_response(429)
            self.send_header("retry-after", urllib.parse.unquote(self.path.strip("/")))
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_destinations_retry_after_and_partial_success_are_heeded() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Throttling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    metrics, port = Metrics(), server.server_address[1]
    try:
        for path, wait in (("7", 7.0), ("3600", 60.0), ("soon", 0.0),
                           (urllib.parse.quote(email.utils.formatdate(time.time() + 30, usegmt=True)), 30.0)):
            sender = Sender(Destination.parse(f"http://127.0.0.1:{port}/{path}"), metrics)
            assert sender.send(b"request", "t") is False
            assert sender.retry_after == pytest.approx(wait, abs=2), path
            sender.close()
        destination = Destination.parse(f"http://127.0.0.1:{port}/partial")
        negative = Destination.parse(f"http://127.0.0.1:{port}/negative")
        for d in (destination, negative):
            sender = Sender(d, metrics)
            assert sender.send(b"request", "t") is True  # taken, and not sent again (a negative count raised)
            sender.close()
    finally:
        server.shutdown()
    assert metrics.registry.get_sample_value("spanhouse_forward_rejected_spans_total",
                                             {"destination": destination.label}) == 2
    assert metrics.registry.get_sample_value("spanhouse_forward_sent_total", {"destination": negative.label}) == 1


class _Dripping(http.server.BaseHTTPRequestHandler):
    """Answers 200 and then a byte of its body every second (/drip), or 10 bytes of 100
    and hangs up (/cut), or a body that is not the gzip it says (/gzip); or 307 to /ok
    with a body of its own a byte a second (/moved)."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers["content-length"]))
        if self.path in ("/moved", "/ok"):  # a redirect whose own body comes a byte a second
            self.send_response(307 if self.path == "/moved" else 200)
            self.send_header("location", "/ok")
            self.send_header("content-length", "60" if self.path == "/moved" else "0")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(60 if self.path == "/moved" else 0):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(1.0)
            return
        self.send_response(200)
        if self.path == "/gzip":
            self.send_header("content-encoding", "gzip")
        self.send_header("content-length", "100" if self.path == "/cut" else "60")
        self.end_headers()
        with contextlib.suppress(OSError):
            if self.path == "/cut":
                self.wfile.write(b"x" * 10)
                return
            if self.path == "/gzip":
                self.wfile.write(b"y" * 60)
                return
            for _ in range(60):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(1.0)

    def log_message(self, *args: object) -> None:
        pass


def test_an_answer_sent_a_byte_at_a_time_is_read_no_longer_than_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx's timeout bounds each read: a review's destination sending its answer a byte
    every 3 s held the forwarder, and every request behind it, for good. Its status came:
    the request was taken (a first fix failed it at the deadline, and sent it again)."""
    monkeypatch.setattr(forward, "_HTTP_DEADLINE", 2.0)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Dripping)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # a 200 whose body broke off was failed and sent again; a redirect's body was read whole, unbounded
        for path in ("drip", "cut", "gzip", "moved"):
            sender = Sender(Destination.parse(f"http://127.0.0.1:{server.server_address[1]}/{path}"), Metrics())
            started = time.monotonic()
            assert sender.send(b"request", "t") is True, path
            assert time.monotonic() - started < 6
            sender.close()
    finally:
        server.shutdown()


def test_a_grpc_retry_info_delay_is_heeded() -> None:
    def export(body: bytes, context: grpc.ServicerContext) -> bytes:
        status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="busy")
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromSeconds(4)
        status.details.add().Pack(info)
        context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
        context.abort(grpc.StatusCode.UNAVAILABLE, "busy")

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": grpc.unary_unary_rpc_method_handler(export)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sender = Sender(Destination.parse(f"grpc://127.0.0.1:{port}"), Metrics())
    try:
        assert sender.send(b"", "t") is False and sender.retry_after == 4.0
    finally:
        sender.close()
        server.stop(0)


@pytest.mark.parametrize("header", ["x key=1", "x-key=caf\u00e9", "x-key-bin=abc", "=1", "x-key",
                                    # a token pasted with a space at an end: HTTP refuses it at every send
                                    # (retried until the bound dropped data, its value quoted in each warning)
                                    "authorization=Bearer%20s3cr3t%20", "authorization=%20Bearer%20s3cr3t"])
def test_a_header_no_destination_could_take_is_refused_at_start(header: str) -> None:
    with pytest.raises(ConfigError, match="must look like name=value"):
        Destination.parse(f"grpc://127.0.0.1:4317;{header}")


class _Recording(http.server.BaseHTTPRequestHandler):
    """Takes every POST under /otel/, recording path and headers; /old/ moved there (308)."""

    got: list[tuple[str, dict[str, str]]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers["content-length"]))
        if self.path.startswith("/old/"):
            self.send_response(308)
            self.send_header("location", self.path.replace("/old/", "/otel/", 1))
        else:
            self.got.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_an_http_destination_gets_its_query_its_redirect_and_each_requests_tenant() -> None:
    """The URL's query was dropped, a 308 (an endpoint that moved) was taken for a refusal
    and the request dropped, and nothing told the destination whose spans it got."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recording)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recording.got = []
    port, metrics = server.server_address[1], Metrics()
    destination = Destination.parse(f"http://127.0.0.1:{port}/old/v1/traces?org=7;x-scope-orgid={{tenant}};x-k=v")
    sender = Sender(destination, metrics)
    try:
        assert sender.send(b"a", "acme") is True and sender.send(b"b", "globex") is True
    finally:
        sender.close()
        server.shutdown()
    assert [(path, h["x-scope-orgid"], h["x-k"]) for path, h in _Recording.got] == [
        ("/otel/v1/traces?org=7", "acme", "v"), ("/otel/v1/traces?org=7", "globex", "v")]
    assert metrics.registry.get_sample_value("spanhouse_forward_sent_total", {"destination": destination.label}) == 2


class _MovedAway(http.server.BaseHTTPRequestHandler):
    """Answers every POST with a 308 to ``to``, another origin."""

    to = ""

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(308)
        self.send_header("location", self.to)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_redirect_to_another_origin_gets_none_of_the_destinations_headers() -> None:
    """httpx drops only Authorization on a redirect away from the origin, so a credential
    in a header of another name (Honeycomb's x-honeycomb-team, Datadog's dd-api-key) went
    to whatever host the destination redirected to."""
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recording)
    home = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MovedAway)
    for server in (other, home):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recording.got = []
    _MovedAway.to = f"http://127.0.0.1:{other.server_address[1]}/otel/v1/traces"
    sender = Sender(Destination.parse(f"http://127.0.0.1:{home.server_address[1]}/v1/traces"
                                      ";x-honeycomb-team=s3cret;x-scope-orgid={tenant}"), Metrics())
    try:
        assert sender.send(b"a", "acme") is True
    finally:
        sender.close()
        for server in (other, home):
            server.shutdown()
    [(path, headers)] = _Recording.got
    assert path == "/otel/v1/traces" and "x-honeycomb-team" not in headers and "x-scope-orgid" not in headers


def test_one_url_with_two_header_sets_is_two_destinations_and_twice_the_same_is_refused(tmp_path: Path) -> None:
    """Keyed by URL alone, two destinations (say two X-Scope-OrgIDs of one backend)
    shared one backlog: each thread sent part of it and deleted it for the other."""
    url = "grpc://127.0.0.1:9"
    made = forwarders((f"{url};x-scope-orgid=a", f"{url};x-scope-orgid=b", url), tmp_path, 1 << 20, Metrics())
    assert len({f._dir for f in made}) == 3
    assert [f.destination.label for f in made] == [url, f"{url} #2", f"{url} #3"]
    assert made[2]._dir.name == hashlib.sha256(url.encode()).hexdigest()[:16]  # as before: kept across an upgrade
    with pytest.raises(ConfigError, match="given twice"):
        forwarders((f"{url};x-scope-orgid=a", f"{url};x-scope-orgid=a"), tmp_path, 1 << 20, Metrics())


def test_a_header_value_with_a_comma_or_semicolon_reaches_the_destination_percent_decoded() -> None:
    """Destinations are split on commas and headers on semicolons, so a credential with
    either could not be passed at all; values are percent-decoded now, as the OTel
    exporters decode OTEL_EXPORTER_OTLP_HEADERS."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recording)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recording.got = []
    url = f"http://127.0.0.1:{server.server_address[1]}/otel/v1/traces"
    sender = Sender(Destination.parse(f"{url};authorization=Basic%20a%2Cb%3Bc%25"), Metrics())
    try:
        assert sender.send(b"a", "acme") is True
    finally:
        sender.close()
        server.shutdown()
    assert [h["authorization"] for _, h in _Recording.got] == ["Basic a,b;c%"]
    with pytest.raises(ConfigError, match="percent-decoded"):
        Destination.parse(f"{url};x-k=a%0Ab")  # a newline is no header value, encoded or not


def _backlog(tmp_path: Path, n: int) -> Segment:
    """A sealed segment of ``n`` requests ``r0``, ``r1``... of equal size, numbered after
    the ones made before (drained from the spool, kept in ``kept/``)."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, seal_after=60.0)
    spool.open()
    try:
        for i in range(n):
            spool.append("t", b"r%d" % i)
        spool.seal()
        segment = spool.next_sealed(timeout=5)
        assert segment is not None
        (tmp_path / "kept").mkdir(exist_ok=True)
        kept = tmp_path / "kept" / segment.path.name
        os.link(segment.path, kept)
        spool.delete(segment)
    finally:
        spool.close()
    return Segment(segment.name, kept, segment.size)


def _dropped(metrics: Metrics, destination: str) -> float | None:
    return metrics.registry.get_sample_value("spanhouse_forward_dropped_bytes_total", {"destination": destination})


def test_a_restart_reports_the_backlog_on_disk_at_once(tmp_path: Path) -> None:
    """The gauge was set only when new data came or a send succeeded: after a restart
    with the destination still down, a backlog alert stayed quiet."""
    forwarder = Forwarder(Destination.parse("grpc://127.0.0.1:9"), tmp_path / "fwd", 1 << 20, Metrics())
    forwarder.adopt(segment := _backlog(tmp_path, 3))
    metrics = Metrics()
    Forwarder(Destination.parse("grpc://127.0.0.1:9"), tmp_path / "fwd", 1 << 20, metrics)
    assert metrics.registry.get_sample_value("spanhouse_forward_backlog_bytes",
                                             {"destination": "grpc://127.0.0.1:9"}) == segment.size


def test_a_seal_under_the_bound_does_not_list_the_backlog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: every seal listed and measured the whole backlog (on the spool's flusher,
    which acknowledgements wait for): with 30,000 segments of a dead destination, the
    p90 acknowledgement took 1.5 s against 14 ms. The backlog is kept in memory; its
    gauge and bound stay exact."""
    metrics = Metrics()
    forwarder = Forwarder(Destination.parse("grpc://127.0.0.1:9"), tmp_path / "fwd", 1 << 20, metrics)
    segments = [_backlog(tmp_path, 3) for _ in range(3)]
    listed: list[Path] = []
    monkeypatch.setattr(forward, "_segments_in", lambda directory: listed.append(directory) or [])
    for segment in segments:
        forwarder.adopt(segment)
    assert listed == []
    assert metrics.registry.get_sample_value("spanhouse_forward_backlog_bytes",
                                             {"destination": "grpc://127.0.0.1:9"}) == sum(s.size for s in segments)
    first = tmp_path / "fwd" / segments[0].path.name
    assert forwarder._forward(first, _Destination(fail_at=99)) is True  # type: ignore[arg-type]
    assert metrics.registry.get_sample_value("spanhouse_forward_backlog_bytes",
                                             {"destination": "grpc://127.0.0.1:9"}) == sum(s.size for s in segments[1:])
    # a restart's recovery cuts a damaged tail from the file the link shares; handed over again, it
    # is counted at its size on disk (a review: the old size stayed, and the bound dropped another)
    second = tmp_path / "fwd" / segments[1].path.name
    os.truncate(second, 10)
    forwarder.adopt(segments[1])
    assert metrics.registry.get_sample_value("spanhouse_forward_backlog_bytes",
                                             {"destination": "grpc://127.0.0.1:9"}) == 10 + segments[2].size


def test_a_destination_whose_headers_changed_takes_its_backlog_over(tmp_path: Path) -> None:
    """Its directory is keyed on URL and headers: a rotated token made a new one, and the
    old backlog stayed on disk for good, unsent and uncounted. A destination no longer
    configured at all has its backlog dropped, counted and logged."""
    old = Forwarder(Destination.parse("http://127.0.0.1:9/v1/traces;authorization=Bearer OLD"),
                    tmp_path / "spool" / "forward" / "old-key-placeholder", 1 << 20, Metrics())
    old.adopt(segment := _backlog(tmp_path, 4))
    linked = old._dir / segment.path.name
    assert old._forward(linked, _Destination(fail_at=1)) is False  # type: ignore[arg-type]  # r0 went
    gone = Forwarder(Destination.parse("grpc://127.0.0.1:7"), tmp_path / "spool" / "forward" / "gone", 1 << 20,
                     Metrics())
    gone.adopt(segment)

    metrics = Metrics()
    (new,) = forwarders(("http://127.0.0.1:9/v1/traces;authorization=Bearer NEW",), tmp_path / "spool", 1 << 20,
                        metrics)
    assert sorted(p.name for p in (tmp_path / "spool" / "forward").iterdir()) == [new.destination.key]
    resumed = _Destination(fail_at=99)
    assert new._forward(new._dir / segment.path.name, resumed) is True  # type: ignore[arg-type]
    assert resumed.got == [b"r1", b"r2", b"r3"]  # from where the old headers stopped
    assert _dropped(metrics, "grpc://127.0.0.1:7") == segment.size


def test_a_partly_sent_segment_dropped_by_the_bound_counts_only_what_was_not_sent(tmp_path: Path) -> None:
    metrics = Metrics()
    forwarder = Forwarder(Destination.parse("grpc://127.0.0.1:9"), tmp_path / "fwd", 1 << 20, metrics)
    forwarder.adopt(segment := _backlog(tmp_path, 10))
    linked = tmp_path / "fwd" / segment.path.name
    assert forwarder._forward(linked, _Destination(fail_at=9)) is False  # type: ignore[arg-type]
    forwarder._max_bytes = 0  # the bound drops it (the newest stays: another segment comes after it)
    forwarder.adopt(_backlog(tmp_path, 1))
    assert _dropped(metrics, "grpc://127.0.0.1:9") == segment.size // 10  # the tenth request alone


def test_a_corrupt_request_in_a_linked_segment_drops_it_and_keeps_the_ones_before(tmp_path: Path) -> None:
    """A linked segment that rots after recovery: the forwarder dropped the whole
    segment, the requests before the corrupt one too. It sends what recovery would keep
    (the intact requests before it) and counts the rest as dropped."""
    metrics = Metrics()
    forwarder = Forwarder(Destination.parse("grpc://127.0.0.1:9"), tmp_path / "fwd", 1 << 20, metrics)
    forwarder.adopt(segment := _backlog(tmp_path, 10))
    linked = tmp_path / "fwd" / segment.path.name
    data = bytearray(linked.read_bytes())
    size = segment.size // 10
    data[5 * size + size - 1] ^= 0x01  # r5's last byte
    linked.write_bytes(bytes(data))
    destination = _Destination(fail_at=99)
    assert forwarder._forward(linked, destination) is True  # type: ignore[arg-type]
    assert destination.got == [b"r%d" % i for i in range(5)]
    assert _dropped(metrics, "grpc://127.0.0.1:9") == 5 * size


def test_a_destination_that_never_answers_does_not_hold_the_stop_past_its_timeout(tmp_path: Path) -> None:
    """The forwarders were stopped after the drain with 15 s each, and a send waits 10 s
    for an answer: --shutdown-timeout 1 took 9 s, past a pod's grace period."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(8)  # accepts connections (the kernel does), never answers
    try:
        url = f"http://127.0.0.1:{blackhole.getsockname()[1]}/v1/traces"
        a = ServeProcess(tmp_path / "a", "--forward-otlp", url, "--shutdown-timeout", "1", "--batch-delay", "0.1")
        ports = a.start()
        _send(ports, "x", 1)
        _wait(lambda: metric(a.api_url, "spanhouse_spool_segments") == 0)
        started = time.monotonic()
        assert a.terminate() == 0
        assert time.monotonic() - started < 5
    finally:
        blackhole.close()


def test_removing_one_of_two_destinations_on_a_url_leaves_the_others_backlog_alone(tmp_path: Path) -> None:
    """The one left became ordinal 1, took the label of the one removed and, taking its
    backlog over, its finished mark: its own unsent requests were discarded at the next
    start, uncounted. A destination with a backlog of its own takes no other's."""
    url = "http://127.0.0.1:9/v1/traces"
    a_spec, b_spec = f"{url};x-scope-orgid=a", f"{url};x-scope-orgid=b"
    a, b = forwarders((a_spec, b_spec), tmp_path / "spool", 1 << 20, Metrics())
    for _ in range(3):
        segment = _backlog(tmp_path, 1)
        a.adopt(segment)
        b.adopt(segment)
    for path in a._segments():  # A's destination took everything; B's is down
        with a._lock:
            a._finished(path)
    b_backlog = sorted(p.name for p in b._segments())

    metrics = Metrics()
    for _ in range(2):  # a start without A, then another
        (b,) = forwarders((b_spec,), tmp_path / "spool", 1 << 20, metrics)
        assert sorted(p.name for p in b._segments()) == b_backlog
    assert _dropped(metrics, url) == 0  # A had nothing left to drop


def test_a_destination_added_at_an_earlier_start_takes_no_backlog_over(tmp_path: Path) -> None:
    """Idle since it was added, it held nothing and passed for a successor: team-a's
    backlog went to team-b and was sent with team-b's org id."""
    url = "http://127.0.0.1:9/v1/traces"
    a_spec, b_spec = f"{url};x-scope-orgid=team-a", f"{url};x-scope-orgid=team-b"
    (a,) = forwarders((a_spec,), tmp_path / "spool", 1 << 20, Metrics())  # team-a's endpoint is down
    a.adopt(segment := _backlog(tmp_path, 1))
    forwarders((a_spec, b_spec), tmp_path / "spool", 1 << 20, Metrics())  # team-b added, no traffic
    metrics = Metrics()
    (b,) = forwarders((b_spec,), tmp_path / "spool", 1 << 20, metrics)  # team-a removed
    assert b._segments() == []
    assert _dropped(metrics, url) == segment.size


def test_a_crash_during_a_take_over_sends_nothing_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The finished mark was copied after the segments were moved: a crash in between
    left the new directory without it, and a restart sent again what the old headers
    had sent."""
    old_spec, new_spec = "http://127.0.0.1:9/v1/traces;authorization=Bearer OLD", \
        "http://127.0.0.1:9/v1/traces;authorization=Bearer NEW"
    (old,) = forwarders((old_spec,), tmp_path / "spool", 1 << 20, Metrics())
    segments = [_backlog(tmp_path, 1) for _ in range(3)]
    for segment in segments:
        old.adopt(segment)
    assert old._forward(old._dir / segments[0].path.name, _Destination(fail_at=99)) is True  # type: ignore[arg-type]

    moved: list[object] = []

    def crash_at_the_second_segment_moved(src: object, dst: object) -> None:
        if str(src).endswith(".seg"):
            if moved:
                raise KeyboardInterrupt("the crash")
            moved.append(src)
        os.rename(src, dst)  # type: ignore[arg-type]  # also the marks' own write_atomic

    monkeypatch.setattr("spanhouse.collector.forward.os.replace", crash_at_the_second_segment_moved)
    with pytest.raises(KeyboardInterrupt):
        forwarders((new_spec,), tmp_path / "spool", 1 << 20, Metrics())
    monkeypatch.undo()
    (new,) = forwarders((new_spec,), tmp_path / "spool", 1 << 20, Metrics())
    for segment in segments:  # the restart's spool hands over what it still holds
        new.adopt(segment)
    assert segments[0].path.name not in {p.name for p in new._segments()}


def test_a_start_refused_for_a_typo_leaves_the_rotated_destination_its_inheritance(tmp_path: Path) -> None:
    """The refused start had made the new token's directory before reading the second,
    misspelt value; the corrected start took it for settled and dropped the old token's
    backlog instead of sending it."""
    url = "http://127.0.0.1:9/v1/traces"
    old_spec, new_spec = f"{url};authorization=Bearer OLD", f"{url};authorization=Bearer NEW"
    (old,) = forwarders((old_spec,), tmp_path / "spool", 1 << 20, Metrics())
    old.adopt(segment := _backlog(tmp_path, 2))
    with pytest.raises(ConfigError):
        forwarders((new_spec, "htp://typo"), tmp_path / "spool", 1 << 20, Metrics())
    metrics = Metrics()
    (new,) = forwarders((new_spec,), tmp_path / "spool", 1 << 20, metrics)
    assert [p.name for p in new._segments()] == [segment.path.name]
    assert _dropped(metrics, url) == 0


def test_a_removed_destinations_backlog_never_goes_to_another_of_its_url_and_header_names(tmp_path: Path) -> None:
    """team-b removed and team-c added while team-a stays: team-c is not the one
    destination with that URL and those header names, and took team-b's backlog."""
    url = "http://127.0.0.1:9/v1/traces"
    a_spec, b_spec, c_spec = (f"{url};x-scope-orgid=team-{t}" for t in "abc")
    _, b = forwarders((a_spec, b_spec), tmp_path / "spool", 1 << 20, Metrics())
    b.adopt(segment := _backlog(tmp_path, 2))
    metrics = Metrics()
    _, c = forwarders((a_spec, c_spec), tmp_path / "spool", 1 << 20, metrics)
    assert c._segments() == [] and _dropped(metrics, f"{url} #2") == segment.size


@pytest.mark.parametrize("stopped_with", ["team-c", "another destination"])
def test_a_start_stopped_while_dropping_leftovers_hands_none_over_later(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         stopped_with: str) -> None:
    """Two backlogs of one URL and header names are dropped at a start stopped while
    removing the second; the next start, with team-c, handed that one over: counted and
    logged as dropped, then sent with team-c's org id. Whether team-c was configured at
    the stopped start (still new then) or not (nothing of that lineage to settle)."""
    url = "http://127.0.0.1:9/v1/traces"
    a_spec, b_spec, c_spec = (f"{url};x-scope-orgid=team-{t}" for t in "abc")
    a, b = forwarders((a_spec, b_spec), tmp_path / "spool", 1 << 20, Metrics())
    a.adopt(_backlog(tmp_path, 1))
    b.adopt(_backlog(tmp_path, 1))
    removed: list[object] = []
    real_rmtree = shutil.rmtree

    def stop_at_the_second(path: object, *args: object, **kwargs: object) -> None:
        if removed:
            raise KeyboardInterrupt("the stop")
        removed.append(path)
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("spanhouse.collector.forward.shutil.rmtree", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        forwarders((c_spec if stopped_with == "team-c" else "grpc://127.0.0.1:7",), tmp_path / "spool", 1 << 20,
                   Metrics())
    monkeypatch.undo()
    (c,) = forwarders((c_spec,), tmp_path / "spool", 1 << 20, Metrics())
    assert c._segments() == []


def test_a_dropped_leftover_counts_only_what_was_not_sent(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/v1/traces"
    (old,) = forwarders((f"{url};x-scope-orgid=x",), tmp_path / "spool", 1 << 20, Metrics())
    old.adopt(segment := _backlog(tmp_path, 10))
    assert old._forward(old._dir / segment.path.name, _Destination(fail_at=9)) is False  # type: ignore[arg-type]
    metrics = Metrics()
    forwarders(("grpc://127.0.0.1:7",), tmp_path / "spool", 1 << 20, metrics)
    assert _dropped(metrics, url) == segment.size // 10


def test_damaged_bytes_are_counted_once_when_the_bound_drops_their_segment(tmp_path: Path) -> None:
    metrics = Metrics()
    forwarder = Forwarder(Destination.parse("grpc://127.0.0.1:9"), tmp_path / "fwd", 1 << 20, metrics)
    forwarder.adopt(segment := _backlog(tmp_path, 10))
    linked = tmp_path / "fwd" / segment.path.name
    data = bytearray(linked.read_bytes())
    data[6 * (segment.size // 10) - 1] ^= 0x01  # r5 rots
    linked.write_bytes(bytes(data))
    assert forwarder._forward(linked, _Destination(fail_at=0)) is False  # type: ignore[arg-type]  # down at once
    forwarder._max_bytes = 0
    forwarder.adopt(_backlog(tmp_path, 1))
    assert _dropped(metrics, "grpc://127.0.0.1:9") == segment.size  # each byte once


@pytest.mark.parametrize("odd", ["notes.seg", "copy-of-000000000001.seg"])
def test_a_file_that_is_no_segment_in_a_forward_directory_is_ignored(tmp_path: Path, odd: str) -> None:
    """The spool ignores such names; the forwarder's start raised ValueError on them."""
    d = Destination.parse("grpc://127.0.0.1:9")
    (tmp_path / "spool" / "forward" / d.key).mkdir(parents=True)
    (tmp_path / "spool" / "forward" / d.key / odd).write_bytes(b"x")
    (forwarder,) = forwarders(("grpc://127.0.0.1:9",), tmp_path / "spool", 1 << 20, Metrics())
    assert forwarder._segments() == []


def test_a_crash_inside_a_take_over_keeps_the_progress_of_the_segment_not_yet_moved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The progress file moved before its segment: a crash in between left the segment
    without it, and the next start counted the requests the destination had taken as
    dropped."""
    url = "http://127.0.0.1:9/v1/traces"
    old_spec, new_spec = f"{url};authorization=Bearer OLD", f"{url};authorization=Bearer NEW"
    (old,) = forwarders((old_spec,), tmp_path / "spool", 1 << 20, Metrics())
    sent, partly = _backlog(tmp_path, 1), _backlog(tmp_path, 10)
    old.adopt(sent)
    old.adopt(partly)
    assert old._forward(old._dir / sent.path.name, _Destination(fail_at=99)) is True  # type: ignore[arg-type]
    assert old._forward(old._dir / partly.path.name, _Destination(fail_at=9)) is False  # type: ignore[arg-type]

    def crash_at_the_segment_move(src: object, dst: object) -> None:
        if str(src).endswith(".seg"):
            raise KeyboardInterrupt("the crash")
        os.rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr("spanhouse.collector.forward.os.replace", crash_at_the_segment_move)
    with pytest.raises(KeyboardInterrupt):
        forwarders((new_spec,), tmp_path / "spool", 1 << 20, Metrics())
    monkeypatch.undo()
    metrics = Metrics()
    forwarders((new_spec,), tmp_path / "spool", 1 << 20, metrics)
    assert _dropped(metrics, url) == partly.size // 10  # the one request not taken


class _Taking(http.server.BaseHTTPRequestHandler):
    """Takes every POST (200), counting them."""

    got = 0

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers["content-length"]))
        type(self).got += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_destinations_credentials_are_never_logged(tmp_path: Path) -> None:
    """httpx logs each request's whole URL at info, the default level: a destination's
    password and query token were written once per forwarded request."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Taking)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Taking.got = 0
    url = f"http://alice:S3CRET-PW@127.0.0.1:{server.server_address[1]}/v1/traces?api_key=S3CRET-QUERY"
    a = ServeProcess(tmp_path / "a", "--forward-otlp", url, "--batch-delay", "0.1", env={"SPANHOUSE_LOG_LEVEL": "INFO"})
    try:
        _send(a.start(), "x", 3)
        _wait(lambda: _Taking.got >= 1 and metric(a.api_url, "spanhouse_forward_backlog_bytes") == 0)
        assert a.terminate() == 0
    finally:
        server.shutdown()
    assert a.proc is not None and a.proc.stderr is not None
    log = a.proc.stderr.read()
    assert "spanhouse" in log and "S3CRET" not in log, log


def test_a_start_refused_on_a_spool_in_use_leaves_its_forward_backlogs_alone(tmp_path: Path) -> None:
    """The second start cleared the forward directories as leftovers before it found the
    spool taken: the running collector's backlog was gone and every segment after it
    dropped ('cannot take segment')."""
    spool = tmp_path / "spool"
    dead = f"grpc://127.0.0.1:{_free_port()}"
    a = ServeProcess(tmp_path / "a", "--spool-dir", str(spool), "--forward-otlp", dead, "--batch-delay", "0.1")
    ports = a.start()
    _send(ports, "before", 5)
    _wait(lambda: metric(a.api_url, "spanhouse_forward_backlog_bytes") > 0)
    with pytest.raises(AssertionError, match="in use by another spool"):
        ServeProcess(tmp_path / "b", "--spool-dir", str(spool)).start()
    assert list((spool / "forward").iterdir())
    backlog = metric(a.api_url, "spanhouse_forward_backlog_bytes")
    _send(ports, "after", 5)
    _wait(lambda: metric(a.api_url, "spanhouse_forward_backlog_bytes") > backlog)
    assert metric(a.api_url, "spanhouse_forward_dropped_bytes_total") == 0
    assert a.terminate() == 0


@pytest.mark.parametrize("spec", ["http://127.0.0.1:43l8/v1/traces", "grpc://127.0.0.1:99999",
                                  "http://[::1:4318/v1/traces", "http://my host:4318/v1/traces",
                                  # names httpx's IDNA cannot send (its client, made in the forwarder's thread,
                                  # raised there), and one gRPC's resolver cannot read (retried for ever)
                                  "http://\u2603.example/v1/traces", "http://xn--n3h.example/v1/traces",
                                  "grpc://b\u00fccher.example:4317",
                                  # a gRPC target is host:port: without a port gRPC took 443, a user stayed
                                  # in the target's host; both started and failed every send (a review)
                                  "grpc://127.0.0.1", "grpc://user:GRPC-SECRET@127.0.0.1:4317",
                                  "https://bob:URL-PW@api.example.com/v1/traces?k=Q-SECRET;x-api-key=TOKEN;x y=z"])
def test_a_malformed_destination_is_a_config_error_quoting_no_secret(spec: str) -> None:
    """A port typo or a malformed IPv6 address was a traceback (ValueError), a host with
    a space was taken; a refused value was quoted whole, credentials and header values
    included, into the log."""
    with pytest.raises(ConfigError, match="--forward-otlp") as refused:
        Destination.parse(spec)
    assert not any(secret in str(refused.value) for secret in ("URL-PW", "Q-SECRET", "TOKEN", "GRPC-SECRET"))


def test_a_destination_with_an_internationalized_host_name_is_taken() -> None:
    assert Destination.parse("http://bücher.example:4318/v1/traces").label == "http://bücher.example:4318/v1/traces"


def test_a_failing_destination_is_said_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Sends to an unreachable destination failed without a word until the bound began
    to drop (hours at the default bound)."""
    segment = _segments(tmp_path, 1, 2)[0]
    metrics, dead = Metrics(), f"http://127.0.0.1:{_free_port()}/v1/traces"
    forwarder = Forwarder(Destination.parse(dead), tmp_path / "fwd", 1 << 20, metrics)
    forwarder.adopt(segment)
    caplog.set_level("INFO", logger="spanhouse.collector.forward")
    forwarder.start()
    try:
        _wait(lambda: (metrics.registry.get_sample_value("spanhouse_forward_failed_attempts_total",
                                                          {"destination": forwarder.destination.label}) or 0) >= 3,
              timeout=30)
    finally:
        forwarder.request_stop()
        forwarder.join(10)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "fails (ConnectError" in warnings[0], warnings


class _Merging(http.server.BaseHTTPRequestHandler):
    """Takes POSTs of up to ``limit`` bytes (200), refuses larger ones for good (413);
    records what it took: (tenant header, the request's span names)."""

    limit = 1 << 30
    got: list[tuple[str, list[str]]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["content-length"]))
        if len(body) > self.limit:
            self.send_response(413)
        else:
            names = [s.name for rs in ExportTraceServiceRequest.FromString(body).resource_spans
                     for ss in rs.scope_spans for s in ss.spans]
            type(self).got.append((self.headers["x-tenant"], names))
            self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _segment_of(tmp_path: Path, requests: list[tuple[str, str]]) -> Segment:
    """One sealed segment of OTLP requests, each (tenant, span name)."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 26, seal_after=60.0)
    spool.open()
    try:
        for tenant, name in requests:
            spool.append(tenant, request([span(name, trace_id())]).SerializeToString())
        spool.seal()
        segment = spool.next_sealed(timeout=5)
        assert segment is not None
        (tmp_path / "kept").mkdir()
        kept = tmp_path / "kept" / segment.path.name
        os.link(segment.path, kept)  # the spool's copy goes when it closes
        return Segment(segment.name, kept, segment.size)
    finally:
        spool.close()


@pytest.mark.parametrize("small_limit", [False, True])
def test_consecutive_requests_of_a_tenant_are_forwarded_as_one(tmp_path: Path, small_limit: bool) -> None:
    """Each request went on its own, one per round trip: a destination 50 ms away took 20
    requests a second, and a collector taking 100 a second dropped most of its backlog.
    Requests of one tenant in a row go as one (their spans in order, each once); a
    destination refusing the merged request for good (413: too large for it) gets them
    one by one, and refuses nothing."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Merging)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sent = [("acme", f"a{i}") for i in range(40)] + [("globex", f"g{i}") for i in range(5)] + [("acme", "last")]
    segment = _segment_of(tmp_path, sent)
    largest = max(len(r.payload) for r in intact_records(segment.path.read_bytes())[0])
    _Merging.limit, _Merging.got = largest if small_limit else 1 << 30, []
    metrics = Metrics()
    destination = Destination.parse(f"http://127.0.0.1:{server.server_address[1]}/v1/traces;x-tenant={{tenant}}")
    forwarder = Forwarder(destination, tmp_path / "fwd", 1 << 20, metrics)
    forwarder.adopt(segment)
    sender = Sender(destination, metrics)
    try:
        assert forwarder._forward(tmp_path / "fwd" / segment.path.name, sender) is True
    finally:
        sender.close()
        server.shutdown()
    assert [(tenant, name) for tenant, names in _Merging.got for name in names] == sent
    assert metrics.registry.get_sample_value("spanhouse_forward_sent_total",  # requests as the clients sent them
                                             {"destination": destination.label}) == len(sent)
    if not small_limit:
        assert [(tenant, len(names)) for tenant, names in _Merging.got] == [("acme", 40), ("globex", 5), ("acme", 1)]
    else:
        assert len(_Merging.got) == len(sent)  # each merged request refused: every request alone
    assert metrics.registry.get_sample_value("spanhouse_forward_rejected_total",
                                             {"destination": destination.label}) == 0


def test_a_merged_request_stays_within_the_merge_bound(tmp_path: Path) -> None:
    segment = _segment_of(tmp_path, [("t", f"s{i:03d}") for i in range(30)])
    records, _, _ = intact_records(segment.path.read_bytes())
    bound = sum(len(r.payload) for r in records[:7]) + 1  # seven requests fit, eight do not
    forwarder = Forwarder(Destination.parse("grpc://127.0.0.1:9"), tmp_path / "fwd", 1 << 20, Metrics(),
                          merge_bytes=bound)
    forwarder.adopt(segment)
    taken: list[bytes] = []

    class Taking:
        refused = False

        def send(self, payload: bytes, tenant: str, *, merged: int = 0) -> bool:
            taken.append(payload)
            return True

    assert forwarder._forward(tmp_path / "fwd" / segment.path.name, Taking()) is True  # type: ignore[arg-type]
    assert [len(ExportTraceServiceRequest.FromString(p).resource_spans) for p in taken] == [7, 7, 7, 7, 2]
    assert b"".join(taken) == b"".join(r.payload for r in records)
