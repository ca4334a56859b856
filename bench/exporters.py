"""Application-side cost: spans/s through BatchSpanProcessor + ClickHouseSpanExporter
(straight into an embedded store) vs the OTLP gRPC exporter to a local collector.

Why: ``configure(dsn=...)`` is meant for notebooks, CLI agents and test suites that want
history without a collector; this shows what it costs the application compared to the
usual OTLP path. Both run in this process on one embedded store (two tenants): the
collector in-process on free loopback ports. Each run creates ``--spans`` spans (10 per
execution) and ends with ``force_flush``; spans/s = spans / (creation + flush). Stored
counts are checked for both.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _store import temporary_store
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from spanhouse.clickhouse import Store
from spanhouse.collector.config import Settings
from spanhouse.collector.server import Collector
from spanhouse.sdk.clickhouse_exporter import ClickHouseSpanExporter


def emit(exporter: SpanExporter, spans: int, batch: int) -> float:
    """Seconds to create ``spans`` spans and flush them through ``exporter``."""
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=max(spans, batch) + 1,
                                                   max_export_batch_size=batch, schedule_delay_millis=200))
    tracer = provider.get_tracer("bench")
    started = time.perf_counter()
    for _ in range(spans // 10):
        with tracer.start_as_current_span("invoke_agent bench", attributes={"gen_ai.operation.name": "invoke_agent"}):
            for i in range(9):
                with tracer.start_as_current_span(f"execute_tool t{i}", attributes={
                        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": f"t{i}",
                        "gen_ai.tool.call.arguments": "x" * 200}):
                    pass
    provider.force_flush(600_000)
    elapsed = time.perf_counter() - started
    provider.shutdown()
    return elapsed


def count(store: Store, tenant: str) -> int:
    return int(store.client.command("SELECT count() FROM otel_traces WHERE Tenant = {t:String}",
                                    parameters={"t": tenant}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000, help="BatchSpanProcessor max_export_batch_size")
    args = parser.parse_args()
    if args.spans < 10 or args.spans % 10 or args.batch < 1:
        parser.error("--spans must be a positive multiple of 10 (executions of 10 spans), --batch at least 1")
    with temporary_store() as store, tempfile.TemporaryDirectory(prefix="spanhouse-bench-spool-") as spool:
        direct_s = emit(ClickHouseSpanExporter(store.dsn, tenant="direct"), args.spans, args.batch)
        assert count(store, "direct") == args.spans
        settings = Settings(dsn=store.dsn, grpc_port=0, http_port=0, api_port=0, sql_port=0, batch_delay=0.5,
                            spool_dir=Path(spool))
        collector = Collector(settings, store=store)
        ports = collector.start()
        try:
            otlp_s = emit(OTLPSpanExporter(endpoint=f"127.0.0.1:{ports.grpc_port}", insecure=True), args.spans,
                          args.batch)
            deadline = time.monotonic() + 600
            while count(store, "default") < args.spans:  # acknowledged, then stored: every one must arrive
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {count(store, 'default'):,} of {args.spans:,} spans were stored in 600 s")
                time.sleep(0.05)
        finally:
            collector.stop()
    print(f"\n{args.spans:,} spans, BatchSpanProcessor max_export_batch_size={args.batch:,}")
    print(f"{'path':<48} {'spans/s':>10}")
    print(f"{'ClickHouseSpanExporter (stored when flushed)':<48} {args.spans / direct_s:>10,.0f}")
    print(f"{'OTLP gRPC exporter -> collector (acknowledged)':<48} {args.spans / otlp_s:>10,.0f}")
    print(f"ratio direct/OTLP: {otlp_s / direct_s:.2f}x")


if __name__ == "__main__":
    main()
