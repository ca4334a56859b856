"""OTLP forwarding between two real collectors on 127.0.0.1: A forwards to B; B is down
for a while and A restarts meanwhile; every span A accepted ends up in both stores
exactly once. A dead destination with a small bound drops (and counts), never blocks."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import grpc
import httpx

from tests.collector_harness import ServeProcess, count_in_store, grpc_export
from tests.otlp import request, span, trace_id


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


def _metric(ports: dict[str, int], name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{ports['api_port']}/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


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
    b_ports = b.start()
    _wait(lambda: _metric(a_ports, "spanhouse_forward_backlog_bytes") == 0
          and _metric(a_ports, "spanhouse_spool_segments") == 0)
    _wait(lambda: _metric(b_ports, "spanhouse_spans_accepted_total") >= 200
          and _metric(b_ports, "spanhouse_spool_segments") == 0)
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
    _wait(lambda: _metric(ports, "spanhouse_spool_segments") == 0)
    _wait(lambda: _metric(ports, "spanhouse_forward_dropped_bytes_total") > 0)
    assert _metric(ports, "spanhouse_forward_backlog_bytes") <= 64 * 1024 * 2
    assert a.terminate() == 0
    assert count_in_store(tmp_path / "a", "SELECT count() FROM otel_traces") == [[len(sent)]]
