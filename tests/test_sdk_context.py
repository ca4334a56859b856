"""Sessions across asyncio tasks and threads, usage and cost, execution ids and feedback."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from spanhouse import sdk
from spanhouse.sdk import _processor, _runtime, _usage
from spanhouse.sdk._content import ContentPolicy
from spanhouse.sdk._processor import SpanhouseSpanProcessor
from spanhouse.sdk.testing import CapturedSpans, capture_spans
from tests.collector_harness import run_child

S1 = {"session.id": "s1", "gen_ai.conversation.id": "s1", "user.id": "u1"}


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans() as captured:
        yield captured


def session_of(span: ReadableSpan) -> dict[str, object]:
    attributes = span.attributes or {}
    return {k: attributes[k] for k in ("session.id", "gen_ai.conversation.id", "user.id") if k in attributes}


@sdk.tool
async def async_step(i: int) -> int:
    await asyncio.sleep(0.001)
    return i


@sdk.tool
def sync_step(i: int) -> int:
    return i


def test_session_reaches_asyncio_tasks(spans: CapturedSpans) -> None:
    async def main() -> None:
        with sdk.session(session_id="s1", user_id="u1"):
            tasks = [asyncio.create_task(async_step(i)) for i in range(4)]
        await asyncio.gather(*tasks)  # created inside the block: they carry its context
        await async_step(99)  # outside

    asyncio.run(main())
    inside = [s for s in spans.spans() if s.attributes["gen_ai.tool.call.arguments"] != '{"i":99}']  # type: ignore[index]
    assert len(inside) == 4 and all(session_of(s) == S1 for s in inside)
    assert session_of(spans.spans()[-1]) == {}


def test_session_reaches_threads_that_carry_the_context(spans: CapturedSpans) -> None:
    with sdk.session(session_id="s1", user_id="u1"):
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = [pool.submit(contextvars.copy_context().run, sync_step, i) for i in range(6)]
            assert sorted(f.result() for f in futures) == list(range(6))
        bare = threading.Thread(target=sync_step, args=(100,))  # a thread started without the context
        bare.start()
        bare.join()
    by_arg = {s.attributes["gen_ai.tool.call.arguments"]: s for s in spans.spans()}  # type: ignore[index]
    assert all(session_of(by_arg[f'{{"i":{i}}}']) == S1 for i in range(6))
    assert session_of(by_arg['{"i":100}']) == {}


def test_nested_sessions_and_spans_of_other_instrumentations(spans: CapturedSpans) -> None:
    other = spans.provider.get_tracer("some.http.client")
    with sdk.session(user_id="u1"):
        with sdk.session(session_id="s2"):
            with other.start_as_current_span("GET /api", kind=SpanKind.CLIENT):
                pass
            sync_step(1)
        with sdk.session(user_id="u2"):
            sync_step(2)
    http, first, second = spans.spans()
    assert session_of(http) == {"session.id": "s2", "gen_ai.conversation.id": "s2", "user.id": "u1"}
    assert session_of(first) == session_of(http)
    assert session_of(second) == {"user.id": "u2"}
    with pytest.raises(ValueError):
        with sdk.session():
            pass
    with pytest.raises(ValueError):
        with sdk.session(session_id=""):
            pass


def test_session_is_on_the_execution_root_and_its_marker(spans: CapturedSpans) -> None:
    @sdk.execution
    def job() -> None:
        sync_step(1)

    with sdk.session(session_id="s1", user_id="u1"):
        job()
    assert all(session_of(s) == S1 for s in spans.all()) and len(spans.all()) == 3


def test_record_usage_adds_up_and_prices(spans: CapturedSpans) -> None:
    @sdk.agent
    def planner() -> None:
        sdk.record_usage(input_tokens=1000, output_tokens=500, model="gpt-4o-mini-2024-07-18")
        sdk.record_usage(input_tokens=1000, output_tokens=500, model="gpt-4o-mini-2024-07-18")
        sdk.record_usage(input_tokens=10, cost_usd=0.5)  # a given cost is taken as is
        sdk.record_usage(input_tokens=7, model="an-unpriced-model")  # tokens, but no guessed cost

    planner()
    attributes = spans.by_name("invoke_agent planner").attributes or {}
    assert attributes["gen_ai.usage.input_tokens"] == 2017
    assert attributes["gen_ai.usage.output_tokens"] == 1000
    assert attributes["gen_ai.response.model"] == "an-unpriced-model"
    assert attributes["spanhouse.cost_usd"] == pytest.approx(2 * (1000 * 0.15 + 500 * 0.60) / 1e6 + 0.5)


def test_usage_recorded_from_several_threads_on_one_span_adds_up(spans: CapturedSpans) -> None:
    """record_usage read, added and wrote back without a lock: four threads recording on
    one agent span kept a third of their tokens."""
    import contextvars
    import sys
    import threading

    @sdk.agent
    def planner() -> None:
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(record,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def record() -> None:
        for _ in range(5_000):
            sdk.record_usage(input_tokens=1, output_tokens=2, cost_usd=0.5)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        planner()
    finally:
        sys.setswitchinterval(interval)
    attributes = spans.by_name("invoke_agent planner").attributes or {}
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"],
            attributes["spanhouse.cost_usd"]) == (20_000, 40_000, 10_000.0)


def test_price_table_is_extendable_and_prefix_matched() -> None:
    saved = dict(_usage.PRICES)
    try:
        sdk.register_price("acme-large", input_per_million=1.0, output_per_million=2.0)
        assert _usage.cost_of("acme-large-v2", 1_000_000, 500_000) == pytest.approx(2.0)
        assert _usage.price_of("gpt-4o-mini-2024-07-18") == _usage.PRICES["gpt-4o-mini"]  # longest prefix wins
        assert _usage.price_of("gpt-4o-2024-08-06") == _usage.PRICES["gpt-4o"]
        assert _usage.price_of("o3-pro-2025-06-10") == (20.0, 80.0)  # not o3's: 10x cheaper
        assert _usage.price_of("claude-opus-4-5-20251101") == (5.0, 25.0)  # not claude-opus-4's
        # variants that took their base model's price (gpt-5-pro 12x under its list price)
        assert _usage.price_of("gpt-5-pro-2025-10-06") == (15.0, 120.0)
        assert _usage.price_of("o3-deep-research-2025-06-26") == (10.0, 40.0)
        assert _usage.price_of("o4-mini-deep-research-2025-06-26") == (2.0, 8.0)
        assert _usage.price_of("gpt-4o-realtime-preview-2024-12-17") == (5.0, 20.0)
        assert _usage.price_of("gpt-4o-mini-realtime-preview-2024-12-17") == (0.6, 2.4)
        assert _usage.price_of("gpt-4o-2024-05-13") == (5.0, 15.0)  # the first gpt-4o, not today's
        # speech models took gpt-4o-mini's text price (audio costs 20x more)
        assert _usage.price_of("gpt-4o-mini-transcribe-2025-03-20") == (3.0, 5.0)
        assert _usage.price_of("gpt-4o-transcribe") == (6.0, 10.0)
        assert _usage.price_of("gpt-4o-mini-tts") == (0.6, 12.0)
        assert _usage.cost_of("unknown", 1, 1) is None and _usage.cost_of(None, 1, 1) is None
        sdk.PRICES["gpt-4o"] = (0.0, 0.0)  # the table itself is public
        assert _usage.cost_of("gpt-4o", 10, 10) == 0.0
        for bad in ({"input_per_million": -1.0, "output_per_million": 1.0},
                    {"input_per_million": float("inf"), "output_per_million": 1.0}):
            with pytest.raises(ValueError):
                sdk.register_price("m", **bad)
        with pytest.raises(ValueError):
            sdk.register_price("", input_per_million=1.0, output_per_million=1.0)
    finally:
        _usage.PRICES.clear()
        _usage.PRICES.update(saved)


def test_cache_reads_are_priced_by_the_entry_the_model_matched() -> None:
    """o3-pro matches its own entry, which has no cache price (its full input price
    applies), not o3's. A price registered again without a cache price keeps its cache
    discount (claude-sonnet-4's was dropped, its reads costing 10x; then kept as it was,
    a model made free still charged for reads); a model naming Claude without one pays
    Anthropic's tenth of the input price for reads, not all of it."""
    saved, saved_cached = dict(_usage.PRICES), dict(_usage.CACHED_INPUT_PRICES)
    try:
        assert _usage.cost_of("gpt-5-2025-08-07", 1_000_000, 0, cache_read_tokens=800_000) == pytest.approx(
            0.2 * 1.25 + 0.8 * 0.125)
        assert _usage.cost_of("o3-pro-2025-06-10", 1_000_000, 0, cache_read_tokens=1_000_000) == pytest.approx(20.0)
        sdk.register_price("acme", input_per_million=4.0, output_per_million=8.0, cached_input_per_million=1.0)
        assert _usage.cost_of("acme-2", 1_000_000, 0, cache_read_tokens=500_000) == pytest.approx(2.0 + 0.5)
        sdk.register_price("acme", input_per_million=2.0, output_per_million=8.0)  # a price cut: reads a quarter still
        assert _usage.cost_of("acme-2", 1_000_000, 0, cache_read_tokens=500_000) == pytest.approx(1.0 + 0.25)
        sdk.register_price("acme", input_per_million=0.0, output_per_million=0.0)
        assert _usage.cost_of("acme-2", 1_000_000, 0, cache_read_tokens=500_000) == 0.0
        sdk.register_price("plain", input_per_million=4.0, output_per_million=8.0)
        assert _usage.cost_of("plain", 1_000_000, 0, cache_read_tokens=500_000) == pytest.approx(4.0)
        sdk.register_price("claude-3-opus", input_per_million=15.0, output_per_million=75.0)
        assert _usage.cost_of("claude-3-opus", 1_000_000, 0, cache_read_tokens=900_000) == pytest.approx(
            1.5 + 0.9 * 1.5)
        sdk.register_price("anthropic.claude-3-haiku", input_per_million=0.25, output_per_million=1.25)  # Bedrock's
        assert _usage.cost_of("anthropic.claude-3-haiku-20240307-v1:0", 1_000_000, 0,
                              cache_read_tokens=900_000) == pytest.approx(0.025 + 0.9 * 0.025)
        with pytest.raises(ValueError, match="cached_input_per_million"):
            sdk.register_price("acme", input_per_million=1.0, output_per_million=1.0, cached_input_per_million=-1)
    finally:
        for table, was in ((_usage.PRICES, saved), (_usage.CACHED_INPUT_PRICES, saved_cached)):
            table.clear()
            table.update(was)  # type: ignore[arg-type]


def test_a_call_past_a_long_context_threshold_is_priced_at_its_tier() -> None:
    """Gemini 2.5 Pro and Claude Sonnet 4/4.5 (1M-token window) charge a whole call more
    when its input, the cache's tokens included, passes 200k tokens: such calls were costed
    at the lower price (Sonnet's 2x input, 1.5x output). A price registered again drops
    the tier."""
    saved, saved_tiers = dict(_usage.PRICES), dict(_usage.LONG_CONTEXT_PRICES)
    try:
        assert _usage.cost_of("gemini-2.5-pro", 200_000, 1_000_000) == pytest.approx(0.25 + 10.0)
        assert _usage.cost_of("gemini-2.5-pro", 200_001, 1_000_000) == pytest.approx(200_001 * 2.5 / 1e6 + 15.0)
        assert _usage.cost_of("gemini-2.5-pro-preview-06-05", 400_000, 0,
                              cache_read_tokens=200_000) == pytest.approx(0.2 * 2.5 + 0.2 * 0.25)
        assert _usage.cost_of("claude-sonnet-4-5-20250929", 500_000, 100_000, cache_read_tokens=100_000,
                              cache_write_tokens=100_000) == pytest.approx(
            0.3 * 6.0 + 0.1 * 0.6 + 0.1 * 1.25 * 6.0 + 0.1 * 22.5)
        assert _usage.cost_of("claude-sonnet-4-5", 150_000, 0,
                              cache_read_tokens=100_000) == pytest.approx(0.05 * 3.0 + 0.1 * 0.3)
        assert _usage.cost_of("gemini-2.5-flash", 1_000_000, 0) == pytest.approx(0.3)  # flat: no tier
        assert _usage.cost_of("claude-opus-4-1", 1_000_000, 0) == pytest.approx(15.0)
        sdk.register_price("gemini-2.5-pro", input_per_million=1.0, output_per_million=2.0)
        assert _usage.cost_of("gemini-2.5-pro", 1_000_000, 1_000_000) == pytest.approx(3.0)
    finally:
        for table, was in ((_usage.PRICES, saved), (_usage.LONG_CONTEXT_PRICES, saved_tiers)):
            table.clear()
            table.update(was)  # type: ignore[arg-type]


def test_record_usage_validates_and_is_a_noop_outside_spans(spans: CapturedSpans) -> None:
    sdk.record_usage(input_tokens=5)  # no current span: nothing happens
    for bad in ({"input_tokens": -1}, {"output_tokens": 1.5}, {"input_tokens": True}, {"cost_usd": -0.1},
                {"model": 5}):
        with pytest.raises(ValueError):
            sdk.record_usage(**bad)  # type: ignore[arg-type]
    assert spans.all() == []


def test_current_execution_id(spans: CapturedSpans) -> None:
    seen: list[str | None] = []

    @sdk.tool
    def inner() -> None:
        seen.append(sdk.current_execution_id())

    @sdk.execution
    def job() -> None:
        seen.append(sdk.current_execution_id())
        inner()

    assert sdk.current_execution_id() is None
    job()
    root = spans.by_name("invoke_workflow job")
    assert seen == [format(root.context.trace_id, "032x")] * 2


def test_feedback_is_a_linked_span_of_its_own_trace(spans: CapturedSpans) -> None:
    @sdk.execution
    def job() -> str:
        execution_id = sdk.current_execution_id()
        assert execution_id is not None
        sdk.feedback(execution_id, value=0.25, name="groundedness")  # from inside: links the current span
        return execution_id

    execution_id = job()
    with sdk.session(user_id="u9"):
        sdk.feedback(execution_id.upper(), rating=4, comment="helpful")
    score, rating = (s for s in spans.spans() if s.name == "spanhouse.feedback")  # in the order given
    for span in (rating, score):
        assert span.parent is None and span.kind is SpanKind.INTERNAL
        assert format(span.links[0].context.trace_id, "032x") == execution_id
    assert format(score.context.trace_id, "032x") != execution_id  # its own trace, not the execution's
    assert dict(rating.attributes or {}) == {"spanhouse.feedback.execution_id": execution_id,
                                             "spanhouse.feedback.name": "user_rating", "spanhouse.feedback.value": 4.0,
                                             "spanhouse.feedback.comment": "helpful", "user.id": "u9"}
    assert dict(score.attributes or {}) == {"spanhouse.feedback.execution_id": execution_id,
                                            "spanhouse.feedback.name": "groundedness", "spanhouse.feedback.value": 0.25}
    root = spans.by_name("invoke_workflow job")
    assert score.links[0].context.span_id == root.context.span_id
    assert rating.links[0].context.span_id == 0 and dict(rating.links[0].attributes or {}) == {
        "spanhouse.link.type": "feedback_for"}


@pytest.mark.parametrize("kwargs", [{}, {"rating": 4, "value": 1.0}, {"rating": 0}, {"rating": 6}, {"rating": 3.5},
                                    {"rating": True}, {"value": float("nan")}, {"rating": 3, "name": ""},
                                    {"rating": 3, "comment": 5}])
def test_feedback_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        sdk.feedback("0123456789abcdef0123456789abcdef", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad_id", ["", "xyz", "0" * 32, "0123456789abcdef0123456789abcde", "g" * 32, 123,
                                    # int(x, 16) takes these: another id, or a negative one that broke the export
                                    " 123456789abcdef0123456789abcdef", "+123456789abcdef0123456789abcdef",
                                    "-123456789abcdef0123456789abcdef", "0x23456789abcdef0123456789abcdef",
                                    "0123456789abcdef_123456789abcdef"])
def test_feedback_rejects_bad_execution_ids(bad_id: object) -> None:
    with pytest.raises(ValueError, match="execution_id"):
        sdk.feedback(bad_id, rating=5)  # type: ignore[arg-type]


@contextlib.contextmanager
def _sdk_on(provider: TracerProvider) -> Iterator[None]:
    """The SDK's decorators on ``provider``'s tracer meanwhile; the provider shut down after."""
    previous = _runtime.install(_runtime.Runtime(provider.get_tracer(_runtime.SCOPE_NAME), disabled=False,
                                                 capture_content=True, content=ContentPolicy(1000)))
    try:
        yield
    finally:
        _runtime.install(previous)
        provider.shutdown()


@pytest.mark.parametrize("sampler", [TraceIdRatioBased(0.0), ParentBased(TraceIdRatioBased(0.0))])
def test_feedback_is_kept_whatever_the_sampler(sampler: Sampler) -> None:
    """A ratio sampler decided on the feedback span's own random trace id, so it dropped
    ratings of executions it had kept (half of them at 0.5): feedback passes it by."""
    provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SpanhouseSpanProcessor(exporter, synchronous=True))
    with _sdk_on(provider):
        with sdk.session(user_id="u1"):
            sdk.feedback("ab" * 16, rating=5)
    (span,) = exporter.get_finished_spans()
    assert span.name == "spanhouse.feedback" and span.context.trace_flags.sampled
    assert (span.attributes or {})["spanhouse.feedback.value"] == 5.0 and (span.attributes or {})["user.id"] == "u1"


def test_feedback_passes_the_sampler_of_a_provider_set_after_the_import() -> None:
    """Without configure(), the SDK's tracer is OpenTelemetry's proxy for the provider the
    application sets later: feedback was left to that provider's sampler, which dropped
    ratings of executions it had kept."""
    script = (
        "from spanhouse import sdk\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "from opentelemetry.sdk.trace.sampling import TraceIdRatioBased\n"
        "memory = InMemorySpanExporter(); provider = TracerProvider(sampler=TraceIdRatioBased(0.0))\n"
        "provider.add_span_processor(SimpleSpanProcessor(memory)); trace.set_tracer_provider(provider)\n"
        "for _ in range(10):\n"
        "    sdk.feedback('ab' * 16, rating=5)\n"
        "print(sorted({s.name for s in memory.get_finished_spans()}), len(memory.get_finished_spans()))\n"
    )
    assert run_child(script).stdout.split("\n")[0] == "['spanhouse.feedback'] 10"


def test_an_execution_the_sampler_left_out_still_has_an_id_for_feedback() -> None:
    """The README's quick start rates its execution with the id it got: with a ratio
    sampler, half the executions were left out, current_execution_id() said None and
    feedback(None) raised out of the application."""
    provider = TracerProvider(sampler=TraceIdRatioBased(0.0), shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SpanhouseSpanProcessor(exporter, synchronous=True))
    with _sdk_on(provider):
        @sdk.execution
        def handle() -> str | None:
            return sdk.current_execution_id()

        @sdk.execution(record=False)
        def private() -> tuple[str | None, str | None]:
            return sdk.current_execution_id(), handle()  # a recorded execution inside: its own id

        execution_id = handle()
        assert execution_id is not None and len(execution_id) == 32
        sdk.feedback(execution_id, rating=5)
        hidden, nested = private()
        assert hidden is None and nested is not None
    assert [s.name for s in exporter.get_finished_spans()] == ["spanhouse.feedback"]


class _RecordOnly(Sampler):
    """Records every span but samples none (OpenTelemetry's RECORD_ONLY decision)."""

    def should_sample(self, parent_context: object, trace_id: int, name: str, kind: object = None,
                      attributes: object = None, links: object = None, trace_state: object = None) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY, attributes)  # type: ignore[arg-type]

    def get_description(self) -> str:
        return "RecordOnly"


def test_an_execution_recorded_but_not_sampled_sends_no_running_marker() -> None:
    """OpenTelemetry's processors export no span of a trace a sampler left recording but
    unsampled; its running marker went out all the same, and the store showed the
    execution 'running' for ever (its root span never came)."""
    provider = TracerProvider(sampler=_RecordOnly(), shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SpanhouseSpanProcessor(exporter, synchronous=True))
    with _sdk_on(provider):
        @sdk.execution
        def handle() -> bool:
            return trace.get_current_span().is_recording()

        assert handle()  # recorded: the application's own processors see it
    assert exporter.get_finished_spans() == ()


class _Stuck(InMemorySpanExporter):
    """An exporter whose markers hang until ``release`` (an unreachable collector, which
    OTLP's exporters retry for ~10 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.release, self.exporting = threading.Event(), threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exporting.set()
        self.release.wait(30)
        return super().export(spans)


@pytest.mark.parametrize("sender_busy", [True, False])
def test_flush_keeps_to_its_timeout_while_a_marker_export_hangs(sender_busy: bool) -> None:
    """flush(timeout_millis=500) with the collector down took 12 s and said True: it
    waited without a limit for the marker thread's export first, or (a flush right
    after a short execution, before that thread woke) ran the export itself."""
    provider = TracerProvider(shutdown_on_exit=False)
    markers = _Stuck()
    processor = SpanhouseSpanProcessor(InMemorySpanExporter(), marker_exporter=markers)
    provider.add_span_processor(processor)
    with _sdk_on(provider):
        try:
            sdk.execution(lambda: None)()
            if sender_busy:
                assert markers.exporting.wait(10)  # the sender thread is inside the export now
            started = time.monotonic()
            assert processor.force_flush(timeout_millis=300) is False
            assert time.monotonic() - started < 2
        finally:
            markers.release.set()
    assert [s.name for s in markers.get_finished_spans()] == ["invoke_workflow <lambda>"]  # sent once released


def test_a_flush_overlapping_the_senders_shutdown_or_with_nothing_to_send_is_answered_at_once() -> None:
    """A flush waiting on the marker thread when the sender shut down (configure()
    replacing the pipeline) was never answered: its whole timeout, then False, though
    every marker was sent. A flush of 0 ms with nothing pending said False."""
    markers = _Stuck()
    sender = _processor._MarkerSender(markers, owns_exporter=True, synchronous=False)
    assert sender.flush(0) is True
    sender.send(ReadableSpan(name="marker"))
    assert markers.exporting.wait(10)  # the thread is exporting
    answer: list[bool] = []
    waiting = threading.Thread(target=lambda: answer.append(sender.flush(8)))
    waiting.start()
    time.sleep(0.2)  # the flush waits on the thread
    markers.release.set()
    started = time.monotonic()
    sender.shutdown()
    waiting.join()
    assert answer == [True] and time.monotonic() - started < 4
    assert [s.name for s in markers.get_finished_spans()] == ["marker"]


def test_another_traces_span_inside_an_unrecorded_execution_has_its_id(spans: CapturedSpans) -> None:
    """The unrecorded mark was a flag in the context: a span of another, recorded trace
    used inside the execution (an incoming request's, via use_span) lost its id too."""
    other = spans.provider.get_tracer("app").start_span("GET /rate")

    @sdk.execution(record=False)
    def private() -> tuple[str | None, str | None]:
        with trace.use_span(other, end_on_exit=True):
            inside = sdk.current_execution_id()
        return sdk.current_execution_id(), inside

    hidden, inside = private()
    assert hidden is None and inside == format(other.get_span_context().trace_id, "032x")
