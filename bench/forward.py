"""OTLP forwarding throughput, and what forwarding costs ingest.

Why: ``spanhouse serve --forward-otlp URL`` promises that forwarding never slows ingest
into ClickHouse (each destination is fed from hard links to sealed spool segments by its
own thread) and that the forwarded copy keeps up. This measures both in one run, with
bench/ingest.py's end-to-end machinery (``--clients`` gRPC client processes sending
pre-encoded 100-span requests until ``--spans`` are acknowledged, then waiting until the
collector's last insert finished):

1. baseline: collector A alone; spans/s until visible in A's store;
2. sink: A with ``--forward-otlp grpc://`` to a minimal OTLP/gRPC server in its own
   process that acknowledges every request and counts its spans (the forwarder's own
   ceiling: the destination costs almost nothing). ``--sink-delay-ms`` makes it answer
   each request that much later, a destination across a network: the forwarder sends
   one request at a time, merging consecutive requests of a tenant (up to 3 MiB), so
   its rate is bounded by merged requests per round trip;
3. spanhouse: A forwarding to collector B, a second ``spanhouse serve`` with its own
   embedded store (the A -> B chain of the tests; B's inserts compete with A's for the
   same two cores).

For 2 and 3: A's ingest spans/s (to visible in A, as in 1) and its ratio to 1, and the
forwarded spans/s: spans / time until the destination had acknowledged every request
(from the same start). Counts in A's store (and B's) are checked after each run. A's
backlog bound per destination (``--forward-max-bytes``, default 1 GiB here) is set above
the run's ~460 MB so that a destination slower than ingest shows as lag, not as drops;
with the collector's default (256 MiB) a destination that falls that far behind loses
its oldest segments, counted in /metrics (drops are printed here if they happen).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from ingest import (COUNT_QUERIES, E2E, HOST, MB, ClientRun, PayloadFile, ServeChild, count_in_store, expected_counts,
                    generate_payloads, run_e2e)

EXPORT_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def sink_main(port_out: Any, spans: Synchronized, requests: Synchronized, last_at: Synchronized,
              delay_s: float) -> None:
    """An OTLP/gRPC server that acknowledges every Export (empty response) ``delay_s``
    after it came, counting it and its spans."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    def export(payload: bytes, _context: Any) -> bytes:
        request = ExportTraceServiceRequest.FromString(payload)
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        time.sleep(delay_s)
        with spans.get_lock():
            spans.value += n
            requests.value += 1
            last_at.value = time.monotonic()
        return b""

    handler = grpc.method_handlers_generic_handler(
        EXPORT_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler],
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    port_out.put(server.add_insecure_port(f"{HOST}:0"))
    server.start()
    server.wait_for_termination()


@dataclass
class Forwarded:
    destination: str
    ingest: E2E
    spans: int
    seconds: float  # from the clients' start until the destination had every request
    dropped_bytes: float  # what A's bound dropped because the destination fell behind
    verified: bool

    @property
    def spans_per_s(self) -> float:
        return self.spans / self.seconds


def wait_forwarded(a: ServeChild, received: Callable[[], int], run: ClientRun, timeout: float) -> dict[str, float]:
    """Wait until the destination has every acknowledged span, or A has given up on some
    (its backlog bound dropped segments and nothing is left to send): when, and the bytes dropped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = a.metrics()
        dropped = sum(m.by_label("spanhouse_forward_dropped_bytes_total", "destination").values())
        if received() >= run.spans_acked or (dropped and not any(
                m.by_label("spanhouse_forward_backlog_bytes", "destination").values())):
            return {"seconds": time.monotonic() - run.started, "dropped_bytes": dropped}
        time.sleep(0.05)
    raise RuntimeError(f"forwarding did not finish within {timeout:.0f}s")


def with_sink(payloads: PayloadFile, args: argparse.Namespace, workdir: Path) -> Forwarded:
    ctx = mp.get_context("spawn")
    port_out, spans, requests = ctx.Queue(), ctx.Value("q", 0), ctx.Value("q", 0)
    last_at = ctx.Value("d", 0.0)
    sink = ctx.Process(target=sink_main, args=(port_out, spans, requests, last_at, args.sink_delay_ms / 1000),
                       daemon=True)
    sink.start()
    seen: dict[str, float] = {}
    try:
        port = port_out.get(timeout=60)

        def drained(a: ServeChild, run: ClientRun) -> None:
            seen.update(wait_forwarded(a, lambda: spans.value, run, args.timeout))
            seen["seconds"] = last_at.value - run.started  # the sink's own clock of its last request

        ingest = run_e2e("grpc", payloads, with_forward(args, f"grpc://{HOST}:{port}"), workdir, False, drained)
        print(f"  the sink took {spans.value:,} spans in {requests.value:,} requests "
              f"({spans.value / max(requests.value, 1):,.0f} spans each; the clients sent {payloads.request_spans})")
        label = f"sink (acks after {args.sink_delay_ms:g} ms)" if args.sink_delay_ms else "sink (acks only)"
        return reported(Forwarded(label, ingest, spans.value, seen["seconds"], seen["dropped_bytes"],
                                  ingest.verified and spans.value == ingest.spans))
    finally:
        sink.kill()
        sink.join(10)


def with_spanhouse(payloads: PayloadFile, args: argparse.Namespace, workdir: Path) -> Forwarded:
    b = ServeChild(workdir / "b")
    b.start()
    seen: dict[str, float] = {}
    # B's count is watched from the start on its own thread: read only once A's inserts
    # ended (when run_e2e hands over), B's finish could never come out before A's.
    stop, accepted_all_at = threading.Event(), []

    def watch() -> None:
        while not stop.is_set():
            try:
                accepted = b.metrics().get("spanhouse_spans_accepted_total")
            except OSError:  # B stopped
                return
            if accepted >= args.spans:  # every span sent is acknowledged (--spans is whole requests)
                accepted_all_at.append(time.monotonic())
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        def drained(a: ServeChild, run: ClientRun) -> None:
            seen.update(wait_forwarded(a, lambda: int(b.metrics().get("spanhouse_spans_accepted_total")), run,
                                       args.timeout))
            watcher.join(timeout=5)
            if accepted_all_at:
                seen["seconds"] = accepted_all_at[0] - run.started
            else:  # some were dropped on the way: the time is when A had nothing left to send
                print(f"  B never accepted all {args.spans:,} spans; the time below is A's", flush=True)

        ingest = run_e2e("grpc", payloads, with_forward(args, f"grpc://{HOST}:{b.ports['grpc_port']}"),
                         workdir / "a", False, drained)
        exit_code = b.stop()
    finally:
        stop.set()
        b.kill()
    counts = count_in_store(b.data, COUNT_QUERIES)
    verified = ingest.verified and exit_code == 0 and counts == expected_counts(ingest.spans)
    print(f"  collector B: exit code {exit_code}, counts {counts} ({'ok' if verified else 'MISMATCH'})")
    return reported(Forwarded("spanhouse B (stores too)", ingest, counts["otel_traces"], seen["seconds"],
                              seen["dropped_bytes"], verified))


def reported(f: Forwarded) -> Forwarded:
    print(f"  forwarded: {f.spans:,} spans accepted by the destination {f.seconds:.2f}s after the start "
          f"-> {f.spans_per_s:,.0f} spans/s; dropped by the backlog bound: {f.dropped_bytes / MB:,.0f} MB",
          flush=True)
    return f


def with_forward(args: argparse.Namespace, url: str) -> argparse.Namespace:
    extra = ["--forward-otlp", url, "--forward-max-bytes", args.forward_max_bytes]
    return argparse.Namespace(**{**vars(args), "serve_arg": [*args.serve_arg, *extra]})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spans", type=int, default=1_000_000, help="spans acknowledged per run")
    p.add_argument("--clients", type=int, default=4, help="gRPC client processes")
    p.add_argument("--request-spans", type=int, default=100, help="spans per OTLP request")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds any one run may take")
    p.add_argument("--forward-max-bytes", default="1GiB",
                   help="A's backlog bound per destination; above the run's total so that throughput, not the "
                        "bound, is measured (tests/test_forward.py covers drops past a bound)")
    p.add_argument("--sink-delay-ms", type=float, default=0.0,
                   help="the sink answers each request this much later (a destination across a network)")
    p.add_argument("--serve-arg", action="append", default=[], help="extra argument for every `spanhouse serve`")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if args.spans % args.request_spans:
        p.error("--spans must be a multiple of --request-spans (the clients send whole requests)")
    args.idle_seconds = 0.0
    workdir = Path(tempfile.mkdtemp(prefix="spanhouse-forward-"))
    try:
        payloads = generate_payloads(args.spans // args.request_spans, args.request_spans, args.seed)
        payload_file = PayloadFile.write(workdir / "payloads.bin", payloads, args.request_spans)
        del payloads
        print("\n--- baseline: no forwarding", flush=True)
        base = run_e2e("grpc", payload_file, args, workdir / "base", False)
        print("\n--- forwarding to a sink", flush=True)
        sink = with_sink(payload_file, args, workdir / "sink")
        print("\n--- forwarding to a second spanhouse collector", flush=True)
        chain = with_spanhouse(payload_file, args, workdir / "chain")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n=== summary: {args.spans:,} spans, {args.request_spans} spans/request, {args.clients} gRPC clients ===")
    print(f"{'forwarding to':<28} {'A ingest spans/s':>17} {'vs none':>8} {'forwarded spans/s':>18} "
          f"{'forwarded after s':>18} {'dropped MB':>11} {'verified':>9}")
    print(f"{'(none)':<28} {base.spans_per_s:>17,.0f} {1.0:>8.2f} {'-':>18} {'-':>18} {'-':>11} "
          f"{'yes' if base.verified else 'NO':>9}")
    for f in (sink, chain):
        print(f"{f.destination:<28} {f.ingest.spans_per_s:>17,.0f} {f.ingest.spans_per_s / base.spans_per_s:>8.2f} "
              f"{f.spans_per_s:>18,.0f} {f.seconds:>18.2f} {f.dropped_bytes / MB:>11,.0f} "
              f"{'yes' if f.verified else 'NO':>9}")
    return 0 if base.verified and sink.verified and chain.verified else 1


if __name__ == "__main__":
    sys.exit(main())
