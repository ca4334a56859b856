"""End-to-end ingest: spans/s from OTLP clients to rows in ``otel_traces`` and every view.

Why: the collector's promise is the whole path, not its parts: a client's request is
decoded, validated, re-serialized, fsync'd into the spool and acknowledged, then the
exporter reads the sealed segment back and lands it with ``Writer.write`` (one insert
into the Null table ``otlp_ingest``, whose views fill ``otel_traces`` and, synchronously
within the same insert, every materialized view). This measures that path over real
sockets against a real ``spanhouse serve`` child process, and in the same run the raw
ceiling: the same payloads through ``Writer.write`` alone in this process (no network,
no spool, no validation), so the ratio says what the collector costs on top of the
store. Issue targets on the 2-core machine: >= 100k spans/s end to end, >= 70% of the
ceiling, peak RSS < 500 MB during 5 minutes of overload; idle CPU is reported.

Phases, each against a fresh collector (``--grpc-port 0 --http-port 0 --api-port 0 --sql-port 0``,
default batch settings 32 MiB / 1 s, ``SPANHOUSE_LOG_LEVEL=WARNING``) and data directory:

1. idle CPU: the freshly started collector's utime+stime over ``--idle-seconds``, nothing sent;
2. end to end, gRPC then HTTP: ``--clients`` processes with one persistent connection
   each (a gRPC channel calling ``TraceService/Export`` with raw bytes; a keep-alive
   ``http.client`` connection POSTing ``application/x-protobuf`` to ``/v1/traces``) claim
   pre-encoded requests from one shared counter until ``--spans`` spans are acknowledged;
   an UNAVAILABLE / 503 answer is waited out (RetryInfo / Retry-After) and the same
   request sent again. *Acked* is the last acknowledgement; *visible* is when the
   collector's last insert finished (``spanhouse_insert_batches_total`` reached its final
   value, polled every 50 ms), confirmed by ``spanhouse_spool_segments`` and
   ``spanhouse_spool_bytes`` both 0 in a sample taken long enough after *acked* that the
   gauges (refreshed by the exporter every <= 0.2 s) cannot be stale. spans/s =
   spans / time to visible. After SIGTERM (exit code must be 0) a child process counts
   ``otel_traces``, ``tool_calls``, ``tool_stats_1m``, ``executions`` and
   ``execution_rollup`` in the closed store: each must match the acknowledged spans;
3. overload: ``--overload-clients`` processes (default 16), half gRPC and half HTTP, send
   as fast as they can for ``--overload-seconds`` into a collector with ``--spool-max-bytes`` set to
   ``--overload-spool-max-bytes``, cycling over the payloads (so spans repeat; each pass
   after the first marked as new requests, see ``_cycle_mark``; nothing is verified there); the collector's VmRSS is sampled every 0.5 s from
   ``/proc/<pid>/status`` (and VmHWM read at the end). RssAnon is shown next to it:
   VmRSS also counts the resident pages of the mapped chdb library (a few hundred MB).
   More clients than in the end-to-end runs because each has one request in flight and
   waits for the spool's fsync: on the 2-core machine 4 of them never outran the
   exporter (the spool stayed under 50 MB for 300 s, no backpressure), 16 fill 256 MiB
   within a minute;
4. ceiling: for each transport, all payloads through ``Writer.write`` of a
   ``temporary_store()`` in this process, in batches of the average size the collector's
   inserts had in that transport's run (spans acknowledged / inserts), each with a
   deduplication token as the exporter passes one; one warm-up insert first.

Workload: ``writer_throughput.request``: realistic agent traces (one ``invoke_agent``
root and nine ``execute_tool`` spans with gen_ai.* attributes, 200-character inputs,
~8% failing tool calls), ``--request-spans`` spans per request, every span with its own
random trace/span id. All payloads are serialized before any timing (in a process pool)
and written to one file that the client processes map into memory; the same bytes go
through both transports and the ceiling (each into its own empty store).

Noise: the machine's other load matters on 2 cores, so every phase also prints the CPU
that everything else on the machine used meanwhile (``/proc/stat`` minus this script,
its clients and the collector; kernel writeback of the collector's own I/O lands there
too). Figures taken while it is high are not the collector's.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import mmap
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any, Protocol
from urllib.request import urlopen

from _store import temporary_store
from writer_throughput import SPANS_PER_TRACE, request

from spanhouse.clickhouse import IngestItem, Writer

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TOOLS_PER_TRACE = SPANS_PER_TRACE - 1  # writer_throughput's traces: one root, the rest tool calls
HOST = "127.0.0.1"
MB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
GAUGE_SLACK_S = 0.7  # the exporter refreshes the spool gauges every <= 0.2 s while idle; margin for a busy GIL
POLL_S = 0.05
TARGET_E2E = 100_000
TARGET_RATIO = 0.70
TARGET_RSS_MB = 500


# -- payloads ----------------------------------------------------------------------------


def _generate_chunk(job: tuple[int, int, int, int]) -> list[bytes]:
    """``count`` serialized requests from their own seed (runs in a pool worker)."""
    seed, count, request_spans, now_ns = job
    rng = random.Random(seed)
    return [request(rng, now_ns, request_spans).payload for _ in range(count)]


def generate_payloads(requests: int, request_spans: int, seed: int) -> list[bytes]:
    """``requests`` serialized OTLP requests, generated in parallel (ids deterministic per seed)."""
    chunk = 50
    now_ns = time.time_ns()
    jobs = [(seed * 1_000_003 + i, min(chunk, requests - start), request_spans, now_ns)
            for i, start in enumerate(range(0, requests, chunk))]
    with mp.get_context("spawn").Pool(os.cpu_count() or 2) as pool:
        return [p for part in pool.map(_generate_chunk, jobs) for p in part]


@dataclass(frozen=True)
class PayloadFile:
    """Every payload, back to back in one file the client processes map into memory."""

    path: str
    offsets: tuple[tuple[int, int], ...]  # (start, length) per payload
    request_spans: int

    @classmethod
    def write(cls, path: Path, payloads: Sequence[bytes], request_spans: int) -> PayloadFile:
        offsets, pos = [], 0
        with path.open("wb") as f:
            for p in payloads:
                f.write(p)
                offsets.append((pos, len(p)))
                pos += len(p)
        return cls(str(path), tuple(offsets), request_spans)


# -- the collector child process ------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of every thread of ``pid``, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def machine_busy_s() -> float:
    """CPU seconds every process (and the kernel) on this machine has used: ``/proc/stat``."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def proc_status(pid: int) -> dict[str, int]:
    """The ``kB`` figures (VmRSS, VmHWM, RssAnon, ...) of ``/proc/<pid>/status``; empty once it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                parts = value.split()
                if len(parts) == 2 and parts[1] == "kB":
                    out[key] = int(parts[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def proc_status_kb(pid: int, key: str) -> int:
    """One ``kB`` figure of ``/proc/<pid>/status``; 0 once the process is gone."""
    return proc_status(pid).get(key, 0)


@dataclass(frozen=True)
class Sample:
    """One Prometheus sample."""

    name: str
    labels: dict[str, str]
    value: float


class Metrics:
    """A parsed ``/metrics`` page."""

    def __init__(self, text: str) -> None:
        self.samples: list[Sample] = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            head, value = line.rsplit(" ", 1)
            name, _, rest = head.partition("{")
            labels = {}
            for part in filter(None, rest.rstrip("}").split(",")):  # our label values hold no commas
                key, _, val = part.partition("=")
                labels[key] = val.strip('"')
            self.samples.append(Sample(name, labels, float(value)))

    def get(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        return sum(s.value for s in self.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.samples:
            if s.name == name and s.value:
                out[s.labels.get(label, "")] = out.get(s.labels.get(label, ""), 0.0) + s.value
        return out


class ServeChild:
    """``spanhouse serve`` as a child process with its own embedded store in ``workdir``."""

    def __init__(self, workdir: Path, extra: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.log_path = workdir / "serve.log"
        self.args = [sys.executable, "-m", "spanhouse.collector.cli", "serve", "--dsn", f"chdb://{self.data}",
                     "--host", HOST, "--grpc-port", "0", "--http-port", "0", "--api-port", "0", "--sql-port", "0",
                     *extra]
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=log,
                                         env={**os.environ, "SPANHOUSE_LOG_LEVEL": "WARNING"})
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        if not line or not line[0]:
            self.kill()
            raise RuntimeError(f"the collector did not start within {timeout:.0f}s:\n{self.log_tail()}")
        self.ports = json.loads(line[0])

    def metrics(self, timeout: float = 10.0) -> Metrics:
        with urlopen(f"http://{HOST}:{self.ports['api_port']}/metrics", timeout=timeout) as resp:
            return Metrics(resp.read().decode())

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM and wait: the collector drains its spool (up to its shutdown timeout) and exits."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"the collector did not exit within {timeout:.0f}s of SIGTERM:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def print_log(self, lines: int = 8) -> None:
        """The last lines the collector logged (it runs at WARNING), if any."""
        logged = self.log_tail(chars=1 << 20).strip().splitlines()
        if logged:
            print(f"  collector log ({len(logged)} lines at WARNING and above; the last {min(lines, len(logged))}):")
            for line in logged[-lines:]:
                print(f"    {line[:300]}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class RssSampler:
    """VmRSS of a process every ``interval`` s on a thread: the peak, the highest VmHWM
    seen, and the peak of RssAnon (VmRSS without file pages such as the mapped chdb
    library, of which a few hundred MB are resident in any process that opened a store)."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_kb = 0
        self.hwm_kb = 0
        self.anon_kb = 0
        self.samples = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def sample(self) -> None:
        status = proc_status(self._pid)
        if status.get("VmRSS"):
            self.peak_kb = max(self.peak_kb, status["VmRSS"])
            self.hwm_kb = max(self.hwm_kb, status.get("VmHWM", 0))
            self.anon_kb = max(self.anon_kb, status.get("RssAnon", 0))
            self.samples += 1

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def count_in_store(data: Path, queries: dict[str, str], timeout: float = 300.0) -> dict[str, int]:
    """Run count queries against a closed embedded store in a child process (the engine
    can be opened once per process, and this one may already hold another store)."""
    script = ("import sys, json\nfrom spanhouse.clickhouse import connect\n"
              "c = connect(sys.argv[1])\nq = json.loads(sys.argv[2])\n"
              "print(json.dumps({k: int(c.query(s).result_rows[0][0]) for k, s in q.items()}))\n")
    done = subprocess.run([sys.executable, "-c", script, f"chdb://{data}", json.dumps(queries)],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"counting in {data} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def expected_counts(spans: int) -> dict[str, int]:
    traces = spans // SPANS_PER_TRACE
    return {"otel_traces": spans, "tool_calls": traces * TOOLS_PER_TRACE, "tool_stats_1m": traces * TOOLS_PER_TRACE,
            "executions": traces, "execution_rollup": spans}


COUNT_QUERIES = {
    "otel_traces": "SELECT count() FROM otel_traces",
    "tool_calls": "SELECT count() FROM tool_calls",
    "tool_stats_1m": "SELECT sum(Calls) FROM tool_stats_1m",
    "executions": "SELECT uniqExact(TraceId) FROM executions",
    "execution_rollup": "SELECT sum(Spans) FROM execution_rollup",
}


# -- client processes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What one send got: acknowledged spans rejected by the server, or why to retry or give up."""

    ok: bool
    rejected: int = 0
    retry_after: float | None = None  # set: retry the same request after this many seconds
    backpressure: bool = False  # the server said UNAVAILABLE / 503 (as opposed to a broken connection)
    error: str = ""


class Sender(Protocol):
    def send(self, payload: bytes) -> Answer: ...
    def close(self) -> None: ...


def _rejected(reply: bytes | None) -> int:
    if not reply:
        return 0
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
    return int(ExportTraceServiceResponse.FromString(reply).partial_success.rejected_spans)


class GrpcSender:
    """One channel; ``Export`` with raw bytes (no serializer), as any OTLP/gRPC exporter sends them."""

    def __init__(self, port: int, timeout: float) -> None:
        import grpc
        self._grpc = grpc
        self._timeout = timeout
        self._channel = grpc.insecure_channel(f"{HOST}:{port}", options=[("grpc.max_send_message_length", 256 * MB)])
        grpc.channel_ready_future(self._channel).result(timeout=60)
        self._call = self._channel.unary_unary(EXPORT)

    def send(self, payload: bytes) -> Answer:
        grpc = self._grpc
        try:
            return Answer(True, _rejected(self._call(payload, timeout=self._timeout)))
        except grpc.RpcError as err:
            code = err.code()  # type: ignore[attr-defined]
            if code is grpc.StatusCode.UNAVAILABLE:
                delay = self._retry_delay(err)
                # With a google.rpc.Status trailer it is the collector's answer; without, the connection.
                if delay is None:
                    detail = err.details()  # type: ignore[attr-defined]
                    return Answer(False, retry_after=0.2, error=f"UNAVAILABLE without status details: {detail}")
                return Answer(False, retry_after=delay, backpressure=True)
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                return Answer(False, retry_after=0.2, error="DEADLINE_EXCEEDED")
            return Answer(False, error=f"{code.name}: {err.details()}")  # type: ignore[attr-defined]

    @staticmethod
    def _retry_delay(err: Any) -> float | None:
        from google.rpc import error_details_pb2, status_pb2
        for key, value in err.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                status = status_pb2.Status.FromString(value)
                for detail in status.details:
                    info = error_details_pb2.RetryInfo()
                    if detail.Unpack(info):
                        return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
                return 1.0
        return None

    def close(self) -> None:
        self._channel.close()


class HttpSender:
    """One keep-alive connection POSTing binary protobuf to ``/v1/traces``."""

    def __init__(self, port: int, timeout: float) -> None:
        self._port = port
        self._timeout = timeout
        self._conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(HOST, self._port, timeout=self._timeout)
        conn.connect()
        return conn

    def send(self, payload: bytes) -> Answer:
        try:
            self._conn.request("POST", "/v1/traces", body=payload,
                               headers={"Content-Type": "application/x-protobuf"})
            resp = self._conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            self._conn = self._connect()
            return Answer(False, retry_after=0.2, error=f"connection: {exc!r}")
        if resp.status == 200:
            return Answer(True, _rejected(body))
        if resp.status in (429, 502, 503, 504):
            try:
                delay = float(resp.getheader("Retry-After") or 1.0)
            except ValueError:
                delay = 1.0
            return Answer(False, retry_after=delay, backpressure=True)
        return Answer(False, error=f"HTTP {resp.status}: {body[:200]!r}")

    def close(self) -> None:
        self._conn.close()


@dataclass(frozen=True)
class ClientJob:
    """What one client process does. ``limit``: stop when this many requests are claimed
    (end to end); None: cycle over the payloads until stopped (overload)."""

    index: int
    transport: str
    port: int
    payloads: PayloadFile
    limit: int | None
    max_seconds: float
    rpc_timeout: float = 60.0


def _cycle_mark(cycle: int) -> bytes:
    """Bytes that make the overload's ``cycle``-th pass over the payloads new requests (an
    empty ``ResourceSpans`` with schema_url ``cycle-N``): the collector acknowledges a
    request identical to a recent one without storing it again (``--dedup-window``)."""
    if cycle == 0:
        return b""
    url = f"cycle-{cycle}".encode()
    inner = b"\x1a" + bytes([len(url)]) + url  # ResourceSpans.schema_url = 3
    return b"\x0a" + bytes([len(inner)]) + inner  # ExportTraceServiceRequest.resource_spans = 1


@dataclass
class ClientResult:
    index: int
    transport: str
    requests: int = 0
    spans_acked: int = 0
    spans_rejected: int = 0
    backpressure: int = 0
    retries: int = 0  # broken connections, deadlines
    waited_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    last_ack: float = 0.0  # time.monotonic() (system-wide on Linux: comparable across processes)
    cpu_s: float = 0.0
    failed: str = ""


def client_main(job: ClientJob, claim: Any, stop: Event, barrier: Barrier, results: Any) -> None:
    """A client process: connect, wait for the start, send claimed requests until done."""
    result = ClientResult(job.index, job.transport)
    try:
        sender: Sender = GrpcSender(job.port, job.rpc_timeout) if job.transport == "grpc" \
            else HttpSender(job.port, job.rpc_timeout)
        with open(job.payloads.path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        offsets, total = job.payloads.offsets, len(job.payloads.offsets)
        for start, length in offsets:  # fault the pages in before the clock starts
            data[start:start + length]
        barrier.wait(120)
        cpu0 = time.process_time()
        deadline = time.monotonic() + job.max_seconds
        while not stop.is_set() and time.monotonic() < deadline:
            with claim.get_lock():
                i = claim.value
                claim.value += 1
            if job.limit is not None and i >= job.limit:
                break
            start, length = offsets[i % total]
            payload = data[start:start + length] + _cycle_mark(i // total)
            while time.monotonic() < deadline:
                answer = sender.send(payload)
                if answer.ok:
                    result.requests += 1
                    result.spans_acked += job.payloads.request_spans - answer.rejected
                    result.spans_rejected += answer.rejected
                    result.last_ack = time.monotonic()
                    break
                if answer.retry_after is None:  # the server refused the request for good
                    if len(result.errors) < 5:
                        result.errors.append(answer.error)
                    break
                if answer.backpressure:
                    result.backpressure += 1
                else:
                    result.retries += 1
                    if len(result.errors) < 5:
                        result.errors.append(answer.error)
                wait = min(answer.retry_after, max(0.0, deadline - time.monotonic()))
                result.waited_s += wait
                if stop.wait(wait):  # overload ended while waiting: the request stays unacknowledged
                    break
        result.cpu_s = time.process_time() - cpu0
        sender.close()
    except BaseException as exc:  # reported to the parent, which fails the phase
        result.failed = repr(exc)
        barrier.abort()  # a no-op once everyone has passed it; before, it fails the start at once
    results.put(result)


@dataclass
class ClientRun:
    """The clients of one phase, once they are done."""

    results: list[ClientResult]
    started: float  # monotonic, when every client was connected and released

    @property
    def spans_acked(self) -> int:
        return sum(r.spans_acked for r in self.results)

    @property
    def last_ack(self) -> float:
        return max((r.last_ack for r in self.results), default=self.started)

    def total(self, attr: str) -> float:
        return sum(getattr(r, attr) for r in self.results)


@contextmanager
def client_processes(jobs: Sequence[ClientJob]) -> Iterator[tuple[Callable[[], None], Callable[[float], ClientRun],
                                                                  Event]]:
    """Start one process per job; yields (release, collect, stop): ``release()`` waits until
    every client is connected and lets them all go at once, ``collect(timeout)`` waits for
    their results, ``stop`` ends cycling clients. Stragglers are killed on exit."""
    ctx = mp.get_context("spawn")
    claim = ctx.Value("q", 0)
    stop = ctx.Event()
    barrier = ctx.Barrier(len(jobs) + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=client_main, args=(job, claim, stop, barrier, results), daemon=True)
             for job in jobs]
    for p in procs:
        p.start()
    started = [0.0]

    def release() -> None:
        try:
            barrier.wait(180)
        except threading.BrokenBarrierError:
            failed = [r.failed for r in (results.get(timeout=5) for _ in range(results.qsize() or 1)) if r.failed]
            raise RuntimeError(f"the clients did not start: {failed or 'timeout'}") from None
        started[0] = time.monotonic()

    def collect(timeout: float) -> ClientRun:
        out = [results.get(timeout=timeout) for _ in procs]
        for p in procs:
            p.join(30)
        failed = [r.failed for r in out if r.failed]
        if failed:
            raise RuntimeError(f"client process failed: {failed[0]}")
        return ClientRun(sorted(out, key=lambda r: r.index), started[0])

    try:
        yield release, collect, stop
    finally:
        stop.set()
        for p in procs:
            if p.is_alive():
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)


# -- phases -------------------------------------------------------------------------------


@dataclass
class E2E:
    """One transport's end-to-end run."""

    transport: str
    spans: int
    acked_s: float
    visible_s: float
    inserts: int
    insert_s: float
    exact_batches: int
    backpressure: int
    retries: int
    client_cpu_s: float
    collector_cpu_s: float
    others_cpu_s: float  # everything else on the machine: other processes, kernel writeback
    start_rss_mb: float
    peak_rss_mb: float
    peak_anon_mb: float
    exit_code: int
    counts: dict[str, int]
    verified: bool
    request_spans: int
    idle_cpu_pct: float | None = None
    idle_after_cpu_pct: float | None = None
    ceiling_spans: int = 0
    ceiling_s: float = 0.0
    ceiling_batches: int = 0
    ceiling_others_cpu_s: float = 0.0

    @property
    def spans_per_s(self) -> float:
        return self.spans / self.visible_s

    @property
    def ceiling_spans_per_s(self) -> float:
        return self.ceiling_spans / self.ceiling_s if self.ceiling_s else float("nan")

    @property
    def avg_batch_requests(self) -> int:
        """Requests per insert the collector averaged: the ceiling's batch size."""
        return max(1, round(self.spans / max(1, self.inserts) / self.request_spans))


def idle_cpu_pct(pid: int, seconds: float) -> float:
    """CPU used by ``pid`` over ``seconds``, in % of one core."""
    cpu0, t0 = proc_cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (proc_cpu_s(pid) - cpu0) / (time.monotonic() - t0)


def wait_visible(serve: ServeChild, run: ClientRun, timeout: float) -> tuple[float, Metrics]:
    """When the collector's last insert finished (monotonic) and the metrics at that point;
    see the module docstring for why the spool gauges alone are not the clock."""
    deadline = time.monotonic() + timeout
    batches, batches_seen_at = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        now = time.monotonic()
        m = serve.metrics()
        b = m.get("spanhouse_insert_batches_total")
        if b != batches:
            batches, batches_seen_at = b, now
        drained = m.get("spanhouse_spool_segments") == 0 and m.get("spanhouse_spool_bytes") == 0
        if drained and now >= run.last_ack + GAUGE_SLACK_S \
                and m.get("spanhouse_spans_accepted_total") >= run.spans_acked:
            return max(batches_seen_at, run.last_ack), m
        time.sleep(POLL_S)
    raise RuntimeError(f"the spool did not drain within {timeout:.0f}s of the last acknowledgement")


def run_e2e(transport: str, payloads: PayloadFile, args: argparse.Namespace, workdir: Path,
            measure_idle: bool, before_stop: Callable[[ServeChild, ClientRun], None] | None = None) -> E2E:
    """One fresh collector, ``args.clients`` clients of ``transport``, ``args.spans`` spans;
    ``before_stop(serve, run)`` is called once everything is visible, before SIGTERM (bench/forward.py
    waits there for the forwarded copy)."""
    serve = ServeChild(workdir, args.serve_arg)
    serve.start()
    try:
        idle = None
        if measure_idle:
            time.sleep(1.0)  # let the start settle (the startup line is printed as the listeners come up)
            idle = idle_cpu_pct(serve.pid, args.idle_seconds)
        start_rss = proc_status_kb(serve.pid, "VmRSS") / 1024
        limit = args.spans // payloads.request_spans
        jobs = [ClientJob(i, transport, serve.ports[f"{transport}_port"], payloads, limit, args.timeout)
                for i in range(args.clients)]
        with RssSampler(serve.pid) as rss, client_processes(jobs) as (release, collect, _):
            release()
            cpu0, busy0, own0 = proc_cpu_s(serve.pid), machine_busy_s(), time.process_time()
            run = collect(args.timeout + 120)
            visible_at, m = wait_visible(serve, run, timeout=args.timeout)
            collector_cpu = proc_cpu_s(serve.pid) - cpu0
            ours = collector_cpu + run.total("cpu_s") + time.process_time() - own0
            others = max(0.0, machine_busy_s() - busy0 - ours)
            if before_stop is not None:
                before_stop(serve, run)
        idle_after = idle_cpu_pct(serve.pid, args.idle_seconds) if measure_idle else None
        exit_code = serve.stop()
    finally:
        serve.kill()
    acked = run.spans_acked
    # Every span sent must be acknowledged: a client stops at --timeout or on a refusal
    # for good, and the counts of such a run (checked against what was acknowledged)
    # agreed while the ceiling wrote every payload: a cut-short run passed as verified.
    complete = acked == limit * payloads.request_spans and run.total("spans_rejected") == 0
    counts = count_in_store(serve.data, COUNT_QUERIES)
    result = E2E(
        transport=transport, spans=acked, acked_s=run.last_ack - run.started, visible_s=visible_at - run.started,
        inserts=int(m.get("spanhouse_insert_batches_total")), insert_s=m.get("spanhouse_insert_seconds_sum"),
        exact_batches=int(m.get("spanhouse_exact_path_batches_total")),
        backpressure=int(run.total("backpressure")), retries=int(run.total("retries")),
        client_cpu_s=run.total("cpu_s"), collector_cpu_s=collector_cpu, others_cpu_s=others,
        start_rss_mb=start_rss,
        peak_rss_mb=rss.peak_kb / 1024, peak_anon_mb=rss.anon_kb / 1024,
        exit_code=exit_code, counts=counts, verified=complete and counts == expected_counts(acked) and exit_code == 0,
        request_spans=payloads.request_spans, idle_cpu_pct=idle, idle_after_cpu_pct=idle_after)
    errors = [e for r in run.results for e in r.errors]
    print(f"\n{transport}: {acked:,} spans acknowledged by {args.clients} clients "
          f"({int(run.total('requests')):,} requests, {int(run.total('spans_rejected'))} spans rejected)")
    if errors:
        print(f"  client errors (first few): {errors[:5]}")
    print(f"  acked after {result.acked_s:.2f}s, visible after {result.visible_s:.2f}s "
          f"-> {result.spans_per_s:,.0f} spans/s end to end")
    print(f"  collector: {result.inserts} inserts (avg {acked / max(1, result.inserts):,.0f} spans, "
          f"{result.insert_s / max(1, result.inserts):.2f}s each; {result.insert_s:.1f}s inserting = "
          f"{100 * result.insert_s / result.visible_s:.0f}% of the run), exact-path batches {result.exact_batches}, "
          f"CPU {collector_cpu:.1f}s = {100 * collector_cpu / result.visible_s:.0f}% of one core, "
          f"RSS {result.start_rss_mb:.0f} MB before sending, peak {result.peak_rss_mb:.0f} MB "
          f"(RssAnon peak {result.peak_anon_mb:.0f} MB)")
    print(f"  clients: CPU {result.client_cpu_s:.1f}s in total, backpressure answers {result.backpressure}, "
          f"other retries {result.retries}; everything else on the machine: CPU {others:.1f}s = "
          f"{100 * others / result.visible_s:.0f}% of one core")
    print(f"  requests by outcome: {m.by_label('spanhouse_requests_total', 'outcome')}")
    print(f"  SIGTERM -> exit code {exit_code}")
    serve.print_log()
    expected = expected_counts(acked)
    for table, got in counts.items():
        verdict = "ok" if got == expected[table] else "MISMATCH"
        print(f"  {table:<17} {got:>12,}  expected {expected[table]:>12,}  {verdict}")
    if not complete:
        print(f"  only {acked:,} of {limit * payloads.request_spans:,} spans acknowledged "
              f"({int(run.total('spans_rejected'))} rejected): the clients stopped at --timeout or on a refusal")
    print(f"  {'verified' if result.verified else 'NOT VERIFIED'}", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return result


@dataclass
class Overload:
    seconds: float
    spool_max: str
    acked_spans: int
    requests: int
    backpressure_by_transport: dict[str, int]
    server_backpressure: int
    inserts: int
    start_rss_mb: float
    start_anon_mb: float
    peak_rss_mb: float
    peak_anon_mb: float
    hwm_mb: float
    rss_samples: int
    max_spool_mb: float
    exit_code: int
    collector_cpu_s: float
    others_cpu_s: float
    first_backpressure_s: float | None  # when the spool first refused a request
    spans_per_s_when_full: float | None  # accepted from then on: what the exporter drains


def run_overload(payloads: PayloadFile, args: argparse.Namespace, workdir: Path) -> Overload:
    """Clients as fast as they can, half per transport, into a small spool; the collector's memory."""
    serve = ServeChild(workdir, [*args.serve_arg, "--spool-max-bytes", args.overload_spool_max_bytes])
    serve.start()
    max_spool = 0.0
    first_bp: tuple[float, float] | None = None  # (seconds into the phase, spans accepted by then)
    try:
        start = proc_status(serve.pid)
        transports = ["grpc" if i % 2 == 0 else "http" for i in range(args.overload_clients)]
        jobs = [ClientJob(i, t, serve.ports[f"{t}_port"], payloads, None, args.overload_seconds + 60)
                for i, t in enumerate(transports)]
        with RssSampler(serve.pid) as rss, client_processes(jobs) as (release, collect, stop):
            release()
            cpu0, busy0, own0 = proc_cpu_s(serve.pid), machine_busy_s(), time.process_time()
            end = time.monotonic() + args.overload_seconds
            next_report = time.monotonic() + 30
            while time.monotonic() < end:
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
                m = serve.metrics()
                max_spool = max(max_spool, m.get("spanhouse_spool_bytes") / MB)
                if first_bp is None and m.get("spanhouse_backpressure_events_total") > 0:
                    first_bp = (time.monotonic() - (end - args.overload_seconds),
                                m.get("spanhouse_spans_accepted_total"))
                if time.monotonic() >= next_report:
                    next_report += 30
                    print(f"  overload {args.overload_seconds - (end - time.monotonic()):.0f}s: "
                          f"RSS {proc_status_kb(serve.pid, 'VmRSS') / 1024:.0f} MB (peak {rss.peak_kb / 1024:.0f}, "
                          f"RssAnon peak {rss.anon_kb / 1024:.0f}), "
                          f"spool {m.get('spanhouse_spool_bytes') / MB:.0f} MB, "
                          f"accepted {m.get('spanhouse_spans_accepted_total'):,.0f} spans, "
                          f"backpressure {m.get('spanhouse_backpressure_events_total'):,.0f}, "
                          f"inserts {m.get('spanhouse_insert_batches_total'):,.0f}", flush=True)
            stop.set()
            run = collect(180)
            m = serve.metrics()
            rss.sample()
            collector_cpu = proc_cpu_s(serve.pid) - cpu0
            ours = collector_cpu + run.total("cpu_s") + time.process_time() - own0
            others = max(0.0, machine_busy_s() - busy0 - ours)
        hwm = proc_status_kb(serve.pid, "VmHWM") / 1024
        exit_code = serve.stop(timeout=180)
    finally:
        serve.kill()
    serve.print_log()
    by_transport: dict[str, int] = {}
    for r in run.results:
        by_transport[r.transport] = by_transport.get(r.transport, 0) + r.backpressure
    shutil.rmtree(workdir, ignore_errors=True)
    return Overload(args.overload_seconds, args.overload_spool_max_bytes, run.spans_acked, int(run.total("requests")),
                    by_transport, int(m.get("spanhouse_backpressure_events_total")),
                    int(m.get("spanhouse_insert_batches_total")), start.get("VmRSS", 0) / 1024,
                    start.get("RssAnon", 0) / 1024, rss.peak_kb / 1024, rss.anon_kb / 1024, max(hwm, rss.hwm_kb / 1024),
                    rss.samples, max_spool, exit_code, collector_cpu, others,
                    first_bp[0] if first_bp else None,
                    (m.get("spanhouse_spans_accepted_total") - first_bp[1]) / (args.overload_seconds - first_bp[0])
                    if first_bp and first_bp[0] < args.overload_seconds else None)


def run_ceiling(payloads: Sequence[bytes], batch_requests: int,
                tenant: str = "default") -> tuple[float, int, float, dict[str, int]]:
    """Seconds ``Writer.write`` takes for every payload, ``batch_requests`` per insert, in
    a fresh store; the number of inserts, the CPU seconds everything else on the machine
    used meanwhile, and the counts afterwards."""
    items = [IngestItem(tenant, p) for p in payloads]
    batches = [items[i:i + batch_requests] for i in range(0, len(items), batch_requests)]
    with temporary_store() as store:
        writer: Writer = store.writer
        # Warm-up: the first insert pays one-off costs; a request of fresh ids, not counted.
        writer.write([IngestItem(tenant, request(random.Random(-1), time.time_ns(), SPANS_PER_TRACE).payload)],
                     token="ceiling-warm-up")
        gc.freeze()
        try:
            start, busy0, own0 = time.perf_counter(), machine_busy_s(), time.process_time()
            for n, batch in enumerate(batches):
                writer.write(batch, token=f"ceiling-{n}")
            seconds = time.perf_counter() - start
            others = max(0.0, machine_busy_s() - busy0 - (time.process_time() - own0))
        finally:
            gc.unfreeze()
        counts = {k: int(store.client.query(q).result_rows[0][0]) for k, q in COUNT_QUERIES.items()}
    warm = {"otel_traces": SPANS_PER_TRACE, "tool_calls": TOOLS_PER_TRACE, "tool_stats_1m": TOOLS_PER_TRACE,
            "executions": 1, "execution_rollup": SPANS_PER_TRACE}
    return seconds, len(batches), others, {k: v - warm[k] for k, v in counts.items()}


# -- output -------------------------------------------------------------------------------


def met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def print_summary(args: argparse.Namespace, runs: Sequence[E2E], overload: Overload | None) -> None:
    print(f"\n=== summary: {args.spans:,} spans, {args.request_spans} spans/request, {args.clients} client processes, "
          f"{os.cpu_count()} CPUs ===")
    print("(others: CPU used meanwhile by everything else on the machine, in % of one core; noise if high)")
    print(f"{'transport':<9} {'acked s':>8} {'visible s':>10} {'e2e spans/s':>12} {'others':>7} "
          f"{'ceiling spans/s':>16} {'others':>7} {'e2e/ceiling':>12} {'inserts':>8} {'ceiling inserts':>16} "
          f"{'verified':>9}")
    for r in runs:
        print(f"{r.transport:<9} {r.acked_s:>8.2f} {r.visible_s:>10.2f} {r.spans_per_s:>12,.0f} "
              f"{100 * r.others_cpu_s / r.visible_s:>6.0f}% {r.ceiling_spans_per_s:>16,.0f} "
              f"{100 * r.ceiling_others_cpu_s / r.ceiling_s:>6.0f}% {r.spans_per_s / r.ceiling_spans_per_s:>12.2f} "
              f"{r.inserts:>8} {r.ceiling_batches:>16} {'yes' if r.verified else 'NO':>9}")
    idle = next((r for r in runs if r.idle_cpu_pct is not None), None)
    if overload is not None:
        print(f"\noverload: {args.overload_clients} clients for {overload.seconds:.0f}s, "
              f"--spool-max-bytes {overload.spool_max}, "
              f"{overload.acked_spans:,} spans acknowledged ({overload.acked_spans / overload.seconds:,.0f} spans/s) "
              f"in {overload.requests:,} requests; backpressure answers by transport "
              f"{overload.backpressure_by_transport} (collector counted {overload.server_backpressure}); "
              f"{overload.inserts} inserts; spool peaked at {overload.max_spool_mb:.0f} MB; "
              f"SIGTERM -> exit code {overload.exit_code}; collector CPU {overload.collector_cpu_s:.0f}s "
              f"({100 * overload.collector_cpu_s / overload.seconds:.0f}% of one core), everything else on the "
              f"machine {100 * overload.others_cpu_s / overload.seconds:.0f}% of one core")
        if overload.first_backpressure_s is not None and overload.spans_per_s_when_full is not None:
            print(f"first backpressure answer after {overload.first_backpressure_s:.0f}s; from then on the collector "
                  f"accepted {overload.spans_per_s_when_full:,.0f} spans/s (its sustained drain rate)")
        print(f"collector RSS: {overload.start_rss_mb:.0f} MB before sending "
              f"(RssAnon {overload.start_anon_mb:.0f} MB), "
              f"peak {overload.peak_rss_mb:.0f} MB over {overload.rss_samples} samples (RssAnon peak "
              f"{overload.peak_anon_mb:.0f} MB), VmHWM {overload.hwm_mb:.0f} MB")
    print("\ntargets")
    rows: list[tuple[str, str, str, str]] = []
    for r in runs:
        rows.append((f"{r.transport} end to end", f"{r.spans_per_s:,.0f} spans/s", f">= {TARGET_E2E:,} spans/s",
                     met(r.spans_per_s >= TARGET_E2E)))
        ratio = r.spans_per_s / r.ceiling_spans_per_s
        rows.append((f"{r.transport} share of the ceiling", f"{100 * ratio:.0f}%", f">= {100 * TARGET_RATIO:.0f}%",
                     met(ratio >= TARGET_RATIO)))
    if overload is not None:
        peak = max(overload.peak_rss_mb, overload.hwm_mb)
        # The target is over 300 s of overload: a shorter run can miss it, not meet it.
        verdict = met(False) if peak >= TARGET_RSS_MB else met(True) if overload.seconds >= 300 else "(run < 300 s)"
        rows.append((f"peak RSS, {overload.seconds:.0f}s overload", f"{peak:.0f} MB",
                     f"< {TARGET_RSS_MB} MB over 300 s", verdict))
        rows.append(("  of which anonymous (RssAnon peak)", f"{overload.peak_anon_mb:.0f} MB", "(reported)", ""))
    if idle is not None:
        rows.append((f"idle CPU, fresh collector, {args.idle_seconds:.0f}s", f"{idle.idle_cpu_pct:.1f}% of a core",
                     "(reported)", ""))
        rows.append((f"idle CPU right after the {idle.transport} run", f"{idle.idle_after_cpu_pct:.1f}% of a core",
                     "(reported)", ""))
    if runs:
        rows.append(("stored counts match acknowledged spans", "yes" if all(r.verified for r in runs) else "NO",
                     "exact", met(all(r.verified for r in runs))))
    for name, value, target, ok in rows:
        print(f"  {name:<40} {value:>18}   {target:<24} {ok}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spans", type=int, default=1_000_000, help="spans acknowledged per end-to-end run")
    p.add_argument("--clients", type=int, default=4, help="client processes")
    p.add_argument("--request-spans", type=int, default=100, help="spans per OTLP request (whole traces)")
    p.add_argument("--transports", default="grpc,http", help="end-to-end runs, comma-separated")
    p.add_argument("--overload-seconds", type=float, default=300.0, help="0 skips the overload phase")
    p.add_argument("--overload-clients", type=int, default=16, help="client processes in the overload phase")
    p.add_argument("--overload-spool-max-bytes", default="256MiB", help="the collector's --spool-max-bytes there")
    p.add_argument("--idle-seconds", type=float, default=10.0, help="idle CPU measurement window")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds any one run may take before it fails")
    p.add_argument("--serve-arg", action="append", default=[],
                   help="extra argument for `spanhouse serve` (repeat; e.g. --serve-arg=--batch-bytes=64MiB)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    args.transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if args.request_spans % SPANS_PER_TRACE or args.spans % args.request_spans:
        p.error(f"--request-spans must be a multiple of {SPANS_PER_TRACE} and --spans a multiple of it")
    if not set(args.transports) <= {"grpc", "http"} or args.clients < 1 or args.overload_clients < 1:
        p.error("--transports takes grpc and/or http; --clients and --overload-clients must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="spanhouse-ingest-"))
    try:
        t0 = time.perf_counter()
        payloads = generate_payloads(args.spans // args.request_spans, args.request_spans, args.seed)
        payload_file = PayloadFile.write(workdir / "payloads.bin", payloads, args.request_spans)
        size = sum(len(p) for p in payloads)
        print(f"{len(payloads):,} requests of {args.request_spans} spans ({size / MB:,.0f} MB, "
              f"{size / len(payloads) / 1024:.0f} KiB each) serialized in {time.perf_counter() - t0:.1f}s", flush=True)
        runs = [run_e2e(t, payload_file, args, workdir / f"e2e-{t}", measure_idle=(n == 0))
                for n, t in enumerate(args.transports)]
        overload = None
        if args.overload_seconds > 0:
            print(f"\noverload: {args.overload_clients} clients for {args.overload_seconds:.0f}s, "
                  f"--spool-max-bytes {args.overload_spool_max_bytes}", flush=True)
            overload = run_overload(payload_file, args, workdir / "overload")
        for r in runs:
            batch = r.avg_batch_requests
            r.ceiling_s, r.ceiling_batches, r.ceiling_others_cpu_s, counts = run_ceiling(payloads, batch)
            r.ceiling_spans = len(payloads) * args.request_spans
            ok = counts == expected_counts(r.ceiling_spans)
            print(f"\nceiling for {r.transport}: {r.ceiling_spans:,} spans in {r.ceiling_batches} Writer.write calls "
                  f"of {batch} requests: {r.ceiling_s:.2f}s -> {r.ceiling_spans_per_s:,.0f} spans/s; "
                  f"counts {'ok' if ok else counts}; everything else on the machine: CPU "
                  f"{r.ceiling_others_cpu_s:.1f}s = {100 * r.ceiling_others_cpu_s / r.ceiling_s:.0f}% of one core",
                  flush=True)
            r.verified = r.verified and ok
        print_summary(args, runs, overload)
        return 0 if all(r.verified for r in runs) else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
