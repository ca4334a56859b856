"""``spanhouse demo``: realistic agent traffic into a running collector, so a fresh
install shows full dashboards and history within a minute.

Three services, each an agent with its tools: different failure rates and latency
distributions per tool, model calls with tokens and cost (priced by the SDK's table),
sessions and users, a few executions still running, and feedback on some. The traffic
is spread over a simulated window (``--hours`` back from now), so spans carry explicit
start and end times through the OpenTelemetry API; attributes follow the same GenAI
conventions as the spanhouse SDK's decorators, and the SDK provides configuration,
sessions, usage pricing and feedback.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from rich.progress import Progress

from spanhouse import sdk
from spanhouse.errors import ConfigError
from spanhouse.sdk import _semconv as sc
from spanhouse.sdk._usage import record_usage_on


@dataclass(frozen=True)
class Tool:
    name: str
    median_ms: float
    failure_rate: float
    errors: tuple[str, ...] = ("TimeoutError",)


@dataclass(frozen=True)
class Agent:
    service: str
    name: str
    model: str
    tools: tuple[Tool, ...]


AGENTS = (
    Agent("support-bot", "triage", "gpt-4o-mini", (
        Tool("lookup_customer", 40, 0.01), Tool("search_kb", 180, 0.03, ("HTTPError",)),
        Tool("create_ticket", 350, 0.08, ("ValidationError", "TimeoutError")))),
    Agent("research-agent", "researcher", "gpt-4o", (
        Tool("web_search", 900, 0.06, ("HTTPError", "RateLimited")), Tool("fetch_url", 1200, 0.12, ("TimeoutError",)),
        Tool("summarize", 2500, 0.02, ("ContextLengthExceeded",)))),
    Agent("billing-assistant", "refund-agent", "claude-3-5-sonnet", (
        Tool("get_invoice", 90, 0.02), Tool("refund_order", 600, 0.15, ("PaymentDeclined", "PermissionDenied")),
        Tool("send_email", 250, 0.04, ("SMTPError",)))),
)
QUESTIONS = ("Where is my order #{n}?", "Summarise the latest papers on topic {n}", "Refund invoice INV-{n}",
             "Why was I charged twice for order {n}?", "Find docs about error code E{n}")


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _execution(tracer: Tracer, agent: Agent, start: float, rng: random.Random, running: bool) -> tuple[str, float]:
    """One execution starting at ``start`` (epoch s); returns its trace id and end time."""
    question = rng.choice(QUESTIONS).format(n=rng.randint(100, 99999))
    root: Span = tracer.start_span(f"{sc.OP_INVOKE_AGENT} {agent.name}", kind=SpanKind.INTERNAL, start_time=_ns(start),
                                   attributes={sc.OPERATION_NAME: sc.OP_INVOKE_AGENT, sc.AGENT_NAME: agent.name,
                                               sc.INPUT: question})
    trace_id = format(root.get_span_context().trace_id, "032x")
    ctx = set_span_in_context(root)
    t = start + rng.uniform(0.01, 0.05)
    failed = False
    for step in range(rng.randint(2, 6)):
        llm = tracer.start_span(f"{sc.OP_CHAT} {agent.model}", context=ctx, kind=SpanKind.CLIENT, start_time=_ns(t),
                                attributes={sc.OPERATION_NAME: sc.OP_CHAT, sc.REQUEST_MODEL: agent.model})
        record_usage_on(llm, rng.randint(300, 4000), rng.randint(20, 600), agent.model, None)
        t += rng.lognormvariate(math.log(0.8), 0.5)
        llm.end(end_time=_ns(t))
        tool = rng.choice(agent.tools)
        calls = 2 if rng.random() < 0.1 else 1  # sometimes the agent retries the same tool
        for _ in range(calls):
            span = tracer.start_span(f"{sc.OP_EXECUTE_TOOL} {tool.name}", context=ctx, start_time=_ns(t), attributes={
                sc.OPERATION_NAME: sc.OP_EXECUTE_TOOL, sc.TOOL_NAME: tool.name, sc.TOOL_TYPE: "function",
                sc.TOOL_CALL_ID: f"call_{rng.getrandbits(40):x}",
                sc.TOOL_CALL_ARGUMENTS: json.dumps({"query": question, "step": step})})
            t += rng.lognormvariate(math.log(tool.median_ms / 1000), 0.7)
            if rng.random() < tool.failure_rate:
                error = rng.choice(tool.errors)
                span.set_attribute(sc.ERROR_TYPE, error)
                span.set_status(Status(StatusCode.ERROR, f"{error}: {tool.name} failed for request {rng.randint(1, 9999)}"))
                failed = failed or rng.random() < 0.3
            else:
                span.set_attribute(sc.TOOL_CALL_RESULT, json.dumps({"ok": True, "items": rng.randint(0, 9)}))
            span.end(end_time=_ns(t))
    if running:  # still going: the root never ends; the SDK's start marker shows it as running
        return trace_id, t
    if failed:
        root.set_status(Status(StatusCode.ERROR, "the agent gave up after a tool failure"))
    else:
        root.set_attribute(sc.OUTPUT, "Done: " + question.lower())
    root.end(end_time=_ns(t))
    return trace_id, t


class _Counted(SpanExporter):
    """An exporter that counts the batches it could not deliver (the OTLP exporter logs
    why, and returns FAILURE) and the spans it did (running markers aside)."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        self.failed = 0
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._exporter.export(spans)
        self.failed += result is not SpanExportResult.SUCCESS
        if result is SpanExportResult.SUCCESS:
            self.spans += sum((s.attributes or {}).get(sc.EXECUTION_STATE) != sc.STATE_RUNNING for s in spans)
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


def _check_accepted(endpoint: str, exporters: Sequence[_Counted]) -> None:
    failed = sum(e.failed for e in exporters)
    if failed:
        raise ConfigError(f"the collector at {endpoint} did not accept {failed} batch(es) of spans (the errors are "
                          "above): is it running there? If it has API keys, pass --api-key (or SPANHOUSE_API_KEY) "
                          "with the ingest scope")


class _Ended(SpanProcessor):
    """Counts the spans that ended: what the exporters should have delivered."""

    def __init__(self) -> None:
        self.spans = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.spans += 1


_FLUSH_EVERY = 50
"""Executions between flushes: the demo makes spans far faster than a batch processor's
queue (2,048) drains, which then dropped ~4% of one service's spans."""


def run(endpoint: str, api_key: str | None, executions: int, hours: float, seed: int = 7) -> tuple[int, int]:
    """Send ``executions`` executions spread over the last ``hours``; returns how many,
    and how many spans they made.

    Raises:
        ConfigError: the collector did not accept some of them (a missing or wrong key),
            or spans were dropped on the way.
    """
    rng = random.Random(seed)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else None
    providers = {}
    exporters = [_Counted(OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers)) for _ in AGENTS]
    ended = _Ended()
    for i, agent in enumerate(AGENTS):
        provider = TracerProvider(resource=Resource.create({"service.name": agent.service}))
        provider.add_span_processor(ended)
        if i == 0:  # the first service goes through the spanhouse SDK's configuration (and feedback)
            sdk.configure(exporter=exporters[i], tracer_provider=provider, capture_content=True)
        else:
            provider.add_span_processor(BatchSpanProcessor(exporters[i]))
        providers[agent.service] = provider
    now = time.time()
    window = hours * 3600
    with Progress() as progress:
        task = progress.add_task("sending executions", total=executions)
        for n in range(executions):
            running = n >= executions - 3
            # running executions belong to the SDK-configured service, whose processor sends start markers
            agent = AGENTS[0] if running else rng.choices(AGENTS, weights=(5, 2, 3))[0]
            start = now - window + window * n / executions + rng.uniform(0, window / executions)
            tracer = providers[agent.service].get_tracer("spanhouse.demo")
            user = f"user-{rng.randint(1, 40)}"
            with sdk.session(session_id=f"{user}-s{rng.randint(1, 3)}", user_id=user):
                trace_id, _ = _execution(tracer, agent, start, rng, running)
            if agent.service == AGENTS[0].service and rng.random() < 0.2:
                sdk.feedback(trace_id, rating=rng.choices((1, 2, 3, 4, 5), weights=(1, 1, 2, 4, 5))[0],
                             comment=rng.choice(("", "", "great answer", "took too long", "wrong order")) or None)
            progress.advance(task)
            if n % _FLUSH_EVERY == _FLUSH_EVERY - 1:
                for provider in providers.values():
                    provider.force_flush()
                _check_accepted(endpoint, exporters)  # a collector that is not there: say so now
    sdk.flush()
    for provider in providers.values():
        provider.shutdown()
    sdk.shutdown()
    exporters[0].shutdown()  # the SDK flushes an exporter it is given but leaves it open
    _check_accepted(endpoint, exporters)
    delivered = sum(e.spans for e in exporters)
    if delivered < ended.spans:
        raise ConfigError(f"{ended.spans - delivered} of {ended.spans} spans were dropped before they could be sent")
    return executions, delivered
