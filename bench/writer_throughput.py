"""Writer throughput: spans/s that ``Writer.write`` lands, against a bare-insert ceiling.

Why: every span the collector receives goes through ``Writer.write``: one insert per
batch into the Null table ``otlp_ingest``, whose view renders the OTLP protobuf into
``otel_traces`` in SQL, which in turn feeds every materialized view (tool calls, tool
stats, executions, rollups, error patterns, trace-id lookup). This measures what that
whole path costs per span and how far it is from the cheapest way to put the same rows
in a table with the same columns: ``client.insert`` of ready-made exporter rows into a
bare MergeTree (``CREATE TABLE bare AS otel_traces ENGINE = MergeTree ORDER BY tuple()``:
same columns, codecs and skip indexes, no sort key, no materialized views; its copy of
otel_traces's ``by_trace`` projection, a second sorted copy of every row, is dropped).

Workload: realistic agent traces, each one ``invoke_agent`` root span and nine
``execute_tool`` spans under it (200-character input and arguments, some failures,
some token counts, durations from milliseconds to seconds), ``--request-spans`` spans
per serialized OTLP ``ExportTraceServiceRequest`` over two tenants. For each batch size
both sides insert the same ``--spans`` spans (fresh ones per size, so that no insert
can be deduplicated against an earlier one), one writer insert and one ceiling insert
in turn, each once no merge runs; requests are serialized and ceiling rows computed
before any timing, so only the inserts are timed (not the merges they start).
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from _store import settle, temporary_store

from spanhouse.clickhouse import IngestItem, Writer, otlp_rows

SPANS_PER_TRACE = 10
TENANTS = ("acme", "globex")
SERVICES = ("support-bot", "research-agent", "billing-assistant")
AGENTS = ("triage", "planner", "researcher", "refund-agent")
TOOLS = ("web_search", "fetch_url", "sql_query", "read_file", "write_file", "send_email",
         "create_ticket", "lookup_customer", "vector_search", "run_python", "calendar_lookup",
         "translate", "summarize", "get_weather", "refund_order", "check_inventory")
TOOL_ERRORS = ("TimeoutError", "HTTPError", "ValueError", "PermissionDenied")
WORDS = ("the", "customer", "order", "refund", "please", "status", "report", "query", "data",
         "invoice", "account", "search", "latest", "summary", "error", "ticket", "shipping")
COLUMNS = [*otlp_rows.COLUMNS, "Tenant"]

T = TypeVar("T")


@dataclass(frozen=True)
class Result:
    """Throughput of one batch size."""

    batch_spans: int
    inserts: int
    writer_spans_per_s: float
    ceiling_spans_per_s: float


def attr(key: str, value: str | int) -> KeyValue:
    """An OTLP attribute with a string or int value."""
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def text(rng: random.Random, chars: int) -> str:
    """Words up to exactly ``chars`` characters."""
    out = ""
    while len(out) < chars:
        out += rng.choice(WORDS) + " "
    return out[:chars]


def log_uniform_ns(rng: random.Random, low_ms: float, high_ms: float) -> int:
    """A duration spread evenly over the orders of magnitude between the bounds."""
    return int(low_ms * (high_ms / low_ms) ** rng.random() * 1e6)


def tool_span(rng: random.Random, trace_id: bytes, parent: bytes, start_ns: int) -> Span:
    """One ``execute_tool`` span: ~8% fail, ~30% carry token usage."""
    tool = rng.choice(TOOLS)
    attrs = [attr("gen_ai.operation.name", "execute_tool"), attr("gen_ai.tool.name", tool),
             attr("gen_ai.tool.call.id", f"call_{rng.getrandbits(48):012x}"),
             attr("gen_ai.tool.call.arguments", text(rng, 200))]
    status = Status()
    if rng.random() < 0.08:
        error = rng.choice(TOOL_ERRORS)
        attrs.append(attr("error.type", error))
        status = Status(code=Status.STATUS_CODE_ERROR, message=f"{error}: {tool} failed")
    if rng.random() < 0.3:
        attrs += [attr("gen_ai.usage.input_tokens", rng.randint(50, 4000)),
                  attr("gen_ai.usage.output_tokens", rng.randint(10, 800))]
    return Span(trace_id=trace_id, span_id=rng.randbytes(8), parent_span_id=parent,
                name=f"execute_tool {tool}", kind=Span.SPAN_KIND_INTERNAL,
                start_time_unix_nano=start_ns, end_time_unix_nano=start_ns + log_uniform_ns(rng, 5, 5000),
                attributes=attrs, status=status)


def trace(rng: random.Random, now_ns: int) -> list[Span]:
    """One agent run: the root span and its tool calls, one after the other."""
    trace_id, root_id = rng.randbytes(16), rng.randbytes(8)
    start = now_ns - rng.randrange(600 * 10**9)
    tools, t = [], start + log_uniform_ns(rng, 10, 500)
    for _ in range(SPANS_PER_TRACE - 1):
        span = tool_span(rng, trace_id, root_id, t)
        tools.append(span)
        t = span.end_time_unix_nano + log_uniform_ns(rng, 1, 300)
    agent = rng.choice(AGENTS)
    root = Span(trace_id=trace_id, span_id=root_id, name=f"invoke_agent {agent}",
                kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=start, end_time_unix_nano=t,
                attributes=[attr("gen_ai.operation.name", "invoke_agent"), attr("gen_ai.agent.name", agent),
                            attr("input.value", text(rng, 200)),
                            attr("session.id", f"sess-{rng.randrange(5000)}"),
                            attr("user.id", f"user-{rng.randrange(1000)}")])
    return [root, *tools]


def request(rng: random.Random, now_ns: int, spans: int) -> IngestItem:
    """A serialized request of ``spans`` spans (whole traces) from one service and tenant."""
    service = rng.choice(SERVICES)
    resource = Resource(attributes=[attr("service.name", service), attr("telemetry.sdk.language", "python"),
                                    attr("deployment.environment", "production")])
    body = [s for _ in range(spans // SPANS_PER_TRACE) for s in trace(rng, now_ns)]
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=resource,
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name="agent.sdk", version="1.4.0"), spans=body)])])
    return IngestItem(rng.choice(TENANTS), req.SerializeToString())


def ceiling_rows(item: IngestItem) -> list[list[Any]]:
    """The exporter-format rows (plus tenant) the ceiling inserts for one request."""
    return [[*r, item.tenant] for r in otlp_rows.rows(ExportTraceServiceRequest.FromString(item.payload))]


def chunks(seq: Sequence[T], size: int) -> list[Sequence[T]]:
    return [seq[i:i + size] for i in range(0, len(seq), size)]


def timed(action: Callable[[], None]) -> float:
    """Seconds ``action`` takes."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def count(client: Client, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])


def expect_rows(client: Client, table: str, expected: int) -> None:
    """Fail loudly if an insert was dropped (e.g. deduplicated): the figure would be wrong."""
    got = count(client, table)
    if got != expected:
        raise RuntimeError(f"{table} holds {got} rows, expected {expected}")


def measure(client: Client, writer: Writer, rng: random.Random, spans: int, batch_spans: int,
            request_spans: int) -> Result:
    """Land ``spans`` fresh spans through the writer and into ``bare``, ``batch_spans`` per insert."""
    now_ns = time.time_ns()
    items = [request(rng, now_ns, request_spans) for _ in range(spans // request_spans)]
    item_batches = chunks(items, batch_spans // request_spans)
    row_batches = [[r for item in batch for r in ceiling_rows(item)] for batch in item_batches]
    before_writer, before_bare = count(client, "otel_traces"), count(client, "bare")

    # The prepared data is millions of objects; frozen, the garbage collector stops
    # rescanning it during the inserts, a cost the product does not have.
    gc.freeze()
    writer_s = ceiling_s = 0.0
    try:
        # Interleaved, so that both sides see the same machine noise; each insert starts on
        # a quiet engine (no merge running): the writer's inserts start merges of a dozen
        # tables, which took CPU from the bare inserts timed after them (8-25% slower).
        for item_batch, row_batch in zip(item_batches, row_batches):
            settle(client, poll=0.05)
            writer_s += timed(lambda: writer.write(item_batch))
            settle(client, poll=0.05)
            ceiling_s += timed(lambda: client.insert("bare", row_batch, column_names=COLUMNS))
    finally:
        gc.unfreeze()

    expect_rows(client, "otel_traces", before_writer + spans)
    expect_rows(client, "bare", before_bare + spans)
    return Result(batch_spans, len(item_batches), spans / writer_s, spans / ceiling_s)


def print_results(results: Sequence[Result], spans: int, exact_batches: int) -> None:
    print(f"\n{spans:,} spans per batch size, {SPANS_PER_TRACE} spans per trace; "
          "writer = Writer.write (Null table + all views), ceiling = client.insert into bare MergeTree")
    print(f"{'batch spans':>12} {'inserts':>8} {'writer spans/s':>15} {'ceiling spans/s':>16} {'writer/ceiling':>15}")
    for r in results:
        print(f"{r.batch_spans:>12,} {r.inserts:>8} {r.writer_spans_per_s:>15,.0f} "
              f"{r.ceiling_spans_per_s:>16,.0f} {r.writer_spans_per_s / r.ceiling_spans_per_s:>15.2f}")
    print(f"batches that took the exact (Python) path: {exact_batches}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spans", type=int, default=200_000, help="spans inserted per batch size (each side)")
    p.add_argument("--batch-sizes", default="5000,20000,50000", help="spans per insert, comma-separated")
    p.add_argument("--request-spans", type=int, default=100, help="spans per OTLP request (whole traces)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    args.batch_sizes = [int(s) for s in args.batch_sizes.split(",")]
    if args.request_spans % SPANS_PER_TRACE or any(b % args.request_spans for b in args.batch_sizes) \
            or any(args.spans % b for b in args.batch_sizes):
        p.error(f"--request-spans must be a multiple of {SPANS_PER_TRACE}, each batch size a multiple "
                "of it, and --spans a multiple of each batch size")
    return args


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    with temporary_store() as store:
        store.client.command("CREATE TABLE bare AS otel_traces ENGINE = MergeTree ORDER BY tuple()")
        # CREATE ... AS copies the projection of migration 0013 too: the ceiling then wrote
        # every row twice, once sorted, and flattered the writer's share by ~20%.
        store.client.command("ALTER TABLE bare DROP PROJECTION by_trace")
        # Warm-up: the first insert of each kind pays one-off costs (tables opened, caches filled).
        warm = [request(rng, time.time_ns(), args.request_spans)]
        store.writer.write(warm)
        store.client.insert("bare", ceiling_rows(warm[0]), column_names=COLUMNS)
        results = []
        for batch_spans in args.batch_sizes:
            results.append(measure(store.client, store.writer, rng, args.spans, batch_spans,
                                   args.request_spans))
            print(f"batch size {batch_spans:,}: done", flush=True)
        print_results(results, args.spans, store.writer.exact_batches)


if __name__ == "__main__":
    main()
