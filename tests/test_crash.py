"""Crash safety of a real ``spanhouse serve`` process: kill -9 while a client streams,
restart, and every acknowledged span is stored exactly once; SIGTERM drains and exits 0."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from tests.collector_harness import ServeProcess, count_in_store, grpc_export, metric, run_child
from tests.otlp import request, span, trace_id


_TOOL = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}


class Streamer:
    """Sends requests of 20 uniquely named spans (each an execution and a tool call, so
    that the views' tables count them too) until stopped; remembers what was acked."""

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
            body = request([span(name, trace_id(), attributes={"pad": "x" * 200, **_TOOL})
                            for name in names]).SerializeToString()
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
    # the views' tables count each stored span once too (a replay by the next process of a batch
    # the store's first process had inserted counted it twice there)
    derived = count_in_store(data, "SELECT (SELECT count() FROM tool_calls), (SELECT sum(Calls) FROM tool_stats_1m), "
                                   "(SELECT sum(Spans) FROM execution_rollup)")
    assert derived == [[len(counts)] * 3]


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


def test_sigterm_while_a_long_sql_query_runs_exits_zero(tmp_path: Path) -> None:
    """Closing the embedded engine under a query still running in another thread crashed
    the collector (SIGSEGV, exit -11) on every such stop: running reads are cancelled and
    their clients waited for before the store closes."""
    import httpx

    proc = ServeProcess(tmp_path / "data", "--shutdown-timeout", "2")
    ports = proc.start()
    answers: list[object] = []

    def long_query() -> None:
        try:
            answers.append(httpx.post(f"http://127.0.0.1:{ports['sql_port']}/",
                                      content="SELECT count() FROM numbers(5000000000) WHERE sipHash64(number) % 7 = 3",
                                      timeout=120).status_code)
        except httpx.HTTPError as exc:  # the server went away: fine, as long as it exited cleanly
            answers.append(type(exc).__name__)

    asking = threading.Thread(target=long_query)
    asking.start()
    probe = "SELECT count() FROM system.processes WHERE query LIKE '%sipHash64%' AND query NOT LIKE '%system.processes%'"
    deadline = time.monotonic() + 30  # a slow machine takes a while to start it: stop only once it runs
    while httpx.post(f"http://127.0.0.1:{ports['sql_port']}/", content=probe).text.strip() != "1":
        assert time.monotonic() < deadline, "the long query never started"
        time.sleep(0.1)
    assert proc.terminate() == 0
    asking.join(timeout=30)
    assert answers


def test_sigterm_landing_on_another_thread_still_stops_the_collector(tmp_path: Path) -> None:
    """A signal that lands on one of the engine's or gRPC's threads only sets a flag: a
    main thread blocked in Event.wait() never ran the handler, and the collector kept
    serving (2 of ~13 SIGTERMs under load)."""
    script = (
        "import signal, sys, threading, time\n"
        "from spanhouse.collector import cli\n"
        "def poke():\n"
        "    while not any(t.name == 'spanhouse-http' for t in threading.enumerate()):\n"
        "        time.sleep(0.1)\n"
        "    time.sleep(1)\n"
        "    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # to this thread, not the main one\n"
        "threading.Thread(target=poke, daemon=True).start()\n"
        f"sys.exit(cli.main(['serve', '--dsn', 'chdb://{tmp_path / 'data'}', '--grpc-port', '0', '--http-port', '0',\n"
        "                    '--api-port', '0', '--sql-port', '0']))\n"
    )
    run_child(script)


def test_open_event_streams_do_not_hold_the_shutdown(tmp_path: Path) -> None:
    """A stream never learned the collector was stopping: uvicorn waited the whole
    shutdown timeout for it (then cancelled it with ERROR tracebacks) before the spool's
    drain even began."""
    import httpx

    proc = ServeProcess(tmp_path / "data", "--shutdown-timeout", "10")
    ports = proc.start()
    connected = threading.Event()
    heard: list[list[str]] = []

    def listen() -> None:
        lines: list[str] = []
        heard.append(lines)
        try:
            with httpx.stream("GET", f"http://127.0.0.1:{ports['api_port']}/api/v1/executions/stream",
                              timeout=60) as r:
                for line in r.iter_lines():
                    lines.append(line)
                    connected.set()
        except httpx.HTTPError:
            pass

    listeners = [threading.Thread(target=listen) for _ in range(3)]
    for t in listeners:
        t.start()
    assert connected.wait(30)
    started = time.monotonic()
    assert proc.terminate() == 0
    assert time.monotonic() - started < 9  # gRPC's 5 s grace at most, not + 10 s for the streams
    assert proc.proc is not None and proc.proc.stderr is not None and "ERROR" not in proc.proc.stderr.read()
    for t in listeners:
        t.join(timeout=10)
    # each ends with a word, as for a store gone (a review saw them end silently, like an answer's end)
    assert [[line for line in lines if line] for lines in heard] == [
        [": connected", ": the collector is stopping; reconnect with Last-Event-ID"]] * 3


def _trickling_request(http_port: int) -> socket.socket:
    """An OTLP/HTTP request whose body never finishes: uvicorn waits for it when stopping."""
    sock = socket.create_connection(("127.0.0.1", http_port))
    sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\ncontent-type: application/x-protobuf\r\n"
                 b"content-length: 100000\r\n\r\n" + b"\x0a" * 10)
    return sock


def test_a_second_signal_stops_without_draining_and_loses_nothing(tmp_path: Path) -> None:
    """A second SIGTERM/SIGINT was ignored: the collector went on waiting for a request
    that never finishes (the whole shutdown timeout), then drained. Now it stops at once;
    what it acknowledged stays in the spool and lands at the next start."""
    data = tmp_path / "data"
    proc = ServeProcess(data, "--shutdown-timeout", "60", "--batch-delay", "60")
    ports = proc.start()
    body = request([span(f"keep-{i}", trace_id()) for i in range(30)]).SerializeToString()
    assert grpc_export(f"127.0.0.1:{ports['grpc_port']}", body, None)[0] is grpc.StatusCode.OK
    trickle = _trickling_request(ports["http_port"])
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert proc.proc.poll() is None  # still waiting for the trickling request, as it should
    started = time.monotonic()
    assert proc.terminate(timeout=30) == 0  # the second signal
    assert time.monotonic() - started < 20  # not the 60 s the first one allows
    trickle.close()
    again = ServeProcess(data)
    again.start()
    _wait_drained(again.api_url)
    assert again.terminate() == 0
    assert count_in_store(data, "SELECT count() FROM otel_traces") == [[30]]


def test_a_signal_during_start_up_prints_no_listening_line(tmp_path: Path) -> None:
    """Scripts and tests take the startup line for 'up': a SIGTERM while the store was
    opening still let the collector print it before it stopped."""
    proc = ServeProcess(tmp_path / "data", env={"SPANHOUSE_LOG_LEVEL": "INFO"})
    proc.proc = subprocess.Popen(proc.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=proc.env)
    assert proc.proc.stderr is not None
    for line in proc.proc.stderr:  # the signal handlers are in place before the store opens
        if "migration" in line or "spool" in line:
            proc.proc.send_signal(signal.SIGTERM)
            break
    out, _ = proc.proc.communicate(timeout=90)
    assert proc.proc.returncode == 0 and "listening" not in out, out


_STORED_BY_AN_OLDER_VERSION = """
import sys
from pathlib import Path
from spanhouse.clickhouse import IngestItem, Writer, connect, embedded_path, migrations
from spanhouse.collector.spool import Spool
from tests.otlp import request, span, trace_id
known = migrations.schema_files
migrations.schema_files = lambda: [m for m in known() if m.version < 10]  # before 0010, 0016 and 0020
client = connect(sys.argv[1])
migrations.migrate(client, exclusive=True)
tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
spool = Spool(Path(sys.argv[2]), max_bytes=1 << 30, seal_after=60.0)
spool.lock()
spool.open()
for n in range(3):
    spool.append("default", request([span(f"call-{n}-{j}", trace_id(), attributes=tool,
                                          error="timed out" if j % 3 == 0 else None)
                                     for j in range(30)]).SerializeToString())
spool.seal()
segment = spool.next_sealed(timeout=5)
writer = Writer(connect(sys.argv[1]), embedded_path(sys.argv[1]))
# stored, and the process gone before it deleted the segment (a crash mid-insert or right after it)
writer.write([IngestItem(r.tenant, r.payload) for r in segment.records()], token=f"spool-{segment.name}")
writer.close()
# a later segment, never stored: a tool call whose OK status is final, which 0018 reads as no
# failure (the old schema as one, for good: stored rows are not read again)
spool.append("default", request([span("call-ok", trace_id(), attributes={**tool, "error.type": "HTTP 404"},
                                      status_code=1)]).SerializeToString())
spool.seal()
spool.close()
client.close()
"""


def test_a_segment_an_older_version_stored_is_counted_once_after_the_upgrade(tmp_path: Path) -> None:
    """A review upgraded stores whose last segment the old collector had stored but not
    deleted: the replay skipped otel_traces, tool_calls and tool_stats_1m, but migrations
    that fill a table anew (0010's execution_tool_calls, 0016's hourly and daily tool
    rollups, 0020's error_patterns) had counted the batch already and lost its
    deduplication record, so they counted it again. The collector now replays the oldest
    segment, the only one a crash can leave stored, into the store's old schema before
    migrating it; the others after, read as this version reads spans (a second review
    saw a first fix, replaying every segment first, store an OK tool call as failed)."""
    data, spool = tmp_path / "data", tmp_path / "spool"
    run_child(_STORED_BY_AN_OLDER_VERSION, f"chdb://{data}", str(spool))
    proc = ServeProcess(data, "--spool-dir", str(spool))
    proc.start()
    _wait_drained(proc.api_url)
    assert proc.terminate() == 0
    counts = count_in_store(data, """
        SELECT (SELECT count() FROM otel_traces), (SELECT count() FROM tool_calls),
               (SELECT sum(Calls) FROM tool_stats_1m), (SELECT sum(Calls) FROM tool_stats_1h),
               (SELECT sum(Calls) FROM tool_stats_1h_by_time), (SELECT sum(Calls) FROM tool_stats_1d),
               (SELECT sum(Calls) FROM execution_tool_calls),
               (SELECT sum(Count) FROM error_patterns), (SELECT countIf(StatusCode = 'Error') FROM otel_traces),
               (SELECT sum(IsError) FROM tool_calls)""")
    assert counts == [[91] * 7 + [30, 30, 30]]


def test_a_start_after_a_replay_whose_migration_was_cut_off_replays_nothing_before_migrating(tmp_path: Path) -> None:
    """A second review killed the collector during the migration after its replay: the
    next start took the next segment, never stored, for the one a crash may have stored,
    and stored it with the old schema's reading (an OK tool call counted as failed)."""
    data, spool = tmp_path / "data", tmp_path / "spool"
    run_child(_STORED_BY_AN_OLDER_VERSION, f"chdb://{data}", str(spool))
    # what the first start left: its replay done (the oldest segment deleted), the mark naming
    # the segments left, no migration
    min(spool.glob("*.seg")).unlink()
    (spool / "replayed-before-migrating").write_text("\n".join(["spans 90", *(p.stem for p in spool.glob("*.seg"))]))
    proc = ServeProcess(data, "--spool-dir", str(spool))
    proc.start()
    _wait_drained(proc.api_url)
    assert proc.terminate() == 0
    assert count_in_store(data, "SELECT count(), sum(IsError) FROM tool_calls") == [[91, 30]]
    assert not (spool / "replayed-before-migrating").exists()  # migrated: the next upgrade may replay again


@pytest.mark.parametrize("since", ["segment", "spans"])
def test_a_mark_left_by_an_earlier_replay_does_not_stop_the_replay_of_a_segment_stored_since(
        tmp_path: Path, since: str) -> None:
    """A third review: after a replay whose migration failed, the previous version run
    again (a rollback) stored and crashed; the upgrade's next start found the mark and
    replayed nothing, and the segment was counted twice (181 calls of 91). The mark names
    the segments it left: one written since is replayed. A fourth: the rollback stored
    the oldest segment the mark names (the previous version knows no mark) and died;
    the mark says the spans the store held, and a store that took spans since replays."""
    data, spool = tmp_path / "data", tmp_path / "spool"
    run_child(_STORED_BY_AN_OLDER_VERSION, f"chdb://{data}", str(spool))
    left = sorted(p.stem for p in spool.glob("*.seg"))  # both: the rollback's store of the oldest came after the mark
    (spool / "replayed-before-migrating").write_text(
        "spans 40\n000000000000-segment-of-long-ago" if since == "segment" else "\n".join(["spans 40", *left]))
    proc = ServeProcess(data, "--spool-dir", str(spool))
    proc.start()
    _wait_drained(proc.api_url)
    assert proc.terminate() == 0
    assert count_in_store(data, "SELECT (SELECT sum(Calls) FROM tool_stats_1h), (SELECT sum(Count) FROM error_patterns)"
                          ) == [[91, 30]]
