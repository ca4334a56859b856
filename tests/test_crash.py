"""Crash safety of a real ``spanhouse serve`` process: kill -9 while a client streams,
restart, and every acknowledged span is stored exactly once; SIGTERM drains and exits 0."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc

from tests.collector_harness import ServeProcess, count_in_store, grpc_export, metric
from tests.otlp import request, span, trace_id


class Streamer:
    """Sends requests of 20 uniquely named spans until stopped; remembers what was acked."""

    def __init__(self, target: str, prefix: str) -> None:
        self.target = target
        self.prefix = prefix
        self.acked: list[str] = []
        self.sent: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            names = [f"{self.prefix}-{n}-{j}" for j in range(20)]
            n += 1
            body = request([span(name, trace_id(), attributes={"pad": "x" * 200}) for name in names]).SerializeToString()
            self.sent += names
            code, _, _ = grpc_export(self.target, body, None, timeout=5)
            if code is grpc.StatusCode.OK:
                self.acked += names
            elif code is grpc.StatusCode.UNAVAILABLE:
                return  # the collector is gone

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _wait_drained(api_url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(api_url, "spanhouse_spool_segments") == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the restarted collector did not drain its spool")


def test_kill9_at_several_points_loses_and_duplicates_nothing_acknowledged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acked: list[str] = []
    sent: list[str] = []
    for round_, run_for in enumerate((0.4, 1.0, 2.0)):
        proc = ServeProcess(data)
        ports = proc.start()
        streamer = Streamer(f"127.0.0.1:{ports['grpc_port']}", f"r{round_}")
        streamer.start()
        time.sleep(run_for)
        proc.kill9()  # mid-stream: requests in flight, segments half written, inserts under way
        streamer.stop()
        assert streamer.acked, "the client should have been acknowledged before the kill"
        acked += streamer.acked
        sent += streamer.sent
    proc = ServeProcess(data)
    ports = proc.start()
    _wait_drained(proc.api_url)
    assert proc.terminate() == 0
    counts = dict(count_in_store(data, "SELECT SpanName, count() FROM otel_traces GROUP BY SpanName"))
    missing = [n for n in acked if n not in counts]
    assert not missing, f"{len(missing)} acknowledged spans lost, e.g. {missing[:3]}"
    duplicated = {n: c for n, c in counts.items() if c != 1}
    assert not duplicated, f"spans stored more than once: {list(duplicated.items())[:3]}"
    assert set(counts) <= set(sent)


def test_sigterm_drains_the_spool_and_exits_zero(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = ServeProcess(data)
    ports = proc.start()
    names = [f"t-{i}" for i in range(200)]
    for i in range(0, 200, 50):
        body = request([span(n, trace_id()) for n in names[i:i + 50]]).SerializeToString()
        assert grpc_export(f"127.0.0.1:{ports['grpc_port']}", body, None)[0] is grpc.StatusCode.OK
    assert proc.terminate() == 0  # immediately: the spool is drained during shutdown
    assert count_in_store(data, "SELECT count() FROM otel_traces") == [[200]]
    assert not list((data / "spool").glob("*.seg"))
