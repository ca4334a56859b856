"""spanhouse's span processor: sessions on every span, running markers, batched export.

``SpanhouseSpanProcessor`` is the one thing ``configure()`` adds to a TracerProvider (its
own or the application's). It

* stamps the ids of the enclosing ``session()`` on every span as it starts, whoever
  started it;
* exports a *running marker* the moment an execution starts (below);
* hands finished spans to a ``BatchSpanProcessor`` (or, in tests, a
  ``SimpleSpanProcessor``), unchanged.

Running marker. A span is exported only when it ends, so without help an execution that
is still running is invisible. When a root span (no parent) whose
``gen_ai.operation.name`` is ``invoke_workflow`` or ``invoke_agent`` starts, the processor
builds a copy of it as it is at that moment (same trace, name, start time, resource and
attributes; a new span id; no parent; ending when it starts) plus
``spanhouse.execution.state = running``, and sends it at once from a background thread,
not waiting for the batch. The store lists it as a running execution and replaces it by
the real root span when that arrives (0005_executions.sql keys both on tenant, start time
and trace id); every other view ignores it by that attribute.

Fork. The SDK's BatchSpanProcessor already restarts its worker thread in a forked child
and empties the child's copy of the queue (``os.register_at_fork`` in ``BatchProcessor``,
checked in opentelemetry-sdk 1.45), so that is not repeated here. What it does not do is
give the child its own connection: the HTTP exporter's pooled keep-alive socket is shared
with the parent after a fork, and when both export at once the collector receives
interleaved bytes (400 Bad Request; tests/test_sdk_e2e.py shows it). ``ForkSafeExporter``
therefore builds a fresh exporter the first time it exports in a new process (for gRPC,
which reconnects by itself, this just costs a new channel), and the marker sender here
restarts its own thread through ``os.register_at_fork``.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Final

from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanContext

from spanhouse.sdk import _semconv as sc
from spanhouse.sdk._config import env_positive_int
from spanhouse.sdk._session import SESSION_KEY

logger = logging.getLogger("spanhouse.sdk")

EXECUTION_OPERATIONS: Final = frozenset({sc.OP_INVOKE_WORKFLOW, sc.OP_INVOKE_AGENT})
MAX_PENDING_MARKERS: Final = 2048  # like the batch queue: bounded, so a dead collector cannot grow memory
_ids = RandomIdGenerator()


class SpanhouseSpanProcessor(SpanProcessor):
    """Sessions, running markers and batched export (see the module docstring).

    Args:
        exporter: where finished spans go; None when another processor of the provider
            already sends them to the same place (only markers go out here then).
        marker_exporter: where markers go; ``exporter`` when not given (it must be given
            when ``exporter`` is None). A separate instance keeps markers off the
            connection a large batch is using.
        synchronous: export each span and marker in the calling thread, for tests.
        bulk: the exporter writes each batch in one ClickHouse insert (see ``batch_processor``).

    A TracerProvider has no way to remove a processor, so a reconfiguration does not add
    a second one: ``replace`` swaps the export pipeline inside this one.
    """

    def __init__(self, exporter: SpanExporter | None, *, marker_exporter: SpanExporter | None = None,
                 synchronous: bool = False, bulk: bool = False) -> None:
        self._pipeline: _Pipeline | None = _Pipeline(exporter, marker_exporter, synchronous, bulk)

    def replace(self, exporter: SpanExporter | None, *, marker_exporter: SpanExporter | None = None,
                bulk: bool = False) -> None:
        """Export through new exporters from now on; flush and shut down the old ones."""
        old, self._pipeline = self._pipeline, _Pipeline(exporter, marker_exporter, synchronous=False, bulk=bulk)
        if old is not None:
            old.shutdown()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        stamp = context_api.get_value(SESSION_KEY)
        if stamp:
            span.set_attributes(stamp)  # type: ignore[arg-type]
        # A span recorded but not sampled (a sampler's RECORD_ONLY) is never exported:
        # its marker would leave the execution 'running' for good.
        if span.parent is None and span.get_span_context().trace_flags.sampled and is_execution(span):
            pipeline = self._pipeline
            if pipeline is not None:
                pipeline.markers.send(running_marker(span))

    def on_end(self, span: ReadableSpan) -> None:
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.spans.on_end(span)

    def shutdown(self) -> None:
        old, self._pipeline = self._pipeline, None
        if old is not None:
            old.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        pipeline = self._pipeline
        if pipeline is None:
            return True
        deadline = time.monotonic() + timeout_millis / 1000
        if not pipeline.markers.flush(timeout_millis / 1000):
            return False
        return pipeline.spans.force_flush(max(0, int((deadline - time.monotonic()) * 1000)))


class _Pipeline:
    """The span processor and marker sender that share one destination."""

    __slots__ = ("markers", "spans")

    def __init__(self, exporter: SpanExporter | None, marker_exporter: SpanExporter | None, synchronous: bool,
                 bulk: bool) -> None:
        markers = marker_exporter or exporter
        if markers is None:
            raise ValueError("a pipeline that exports no spans needs a marker exporter")
        self.spans: SpanProcessor = (SpanProcessor() if exporter is None  # the base class does nothing
                                     else SimpleSpanProcessor(exporter) if synchronous
                                     else batch_processor(exporter, bulk=bulk))
        self.markers = _MarkerSender(markers, owns_exporter=marker_exporter is not None, synchronous=synchronous)

    def shutdown(self) -> None:
        self.markers.shutdown()
        self.spans.shutdown()


def batch_processor(exporter: SpanExporter, *, bulk: bool) -> BatchSpanProcessor:
    """OpenTelemetry's BatchSpanProcessor, its ``OTEL_BSP_*`` sizes read leniently: a batch
    larger than the queue, which it refuses with a ValueError out of ``configure()``, is cut
    to a queue the variables set (the application's bound on the spans it holds), and
    otherwise gets a default queue that fits it. ``bulk``: each batch is one ClickHouse
    insert (~0.1 s fixed), so batches of 20k spans and a queue of four of them unless the
    variables say otherwise: with OpenTelemetry's 512 and 2048 such an exporter dropped
    spans past a few thousand a second (2,561 of 3,002 in a burst), where the OTLP path
    stored them all."""
    batch = env_positive_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 20_000 if bulk else 512)
    default_queue = 4 * batch if bulk else max(2048, batch)
    queue = env_positive_int("OTEL_BSP_MAX_QUEUE_SIZE", default_queue)
    return BatchSpanProcessor(exporter, max_queue_size=queue, max_export_batch_size=min(batch, queue))


def is_execution(span: ReadableSpan) -> bool:
    """Whether ``span`` is an execution, should it be a root: a workflow or an agent."""
    operation = (span.attributes or {}).get(sc.OPERATION_NAME)
    return isinstance(operation, str) and operation in EXECUTION_OPERATIONS


def running_marker(span: Span) -> ReadableSpan:
    """The start marker of the execution ``span`` (see the module docstring)."""
    ctx = span.get_span_context()
    return ReadableSpan(
        name=span.name,
        context=SpanContext(ctx.trace_id, _ids.generate_span_id(), is_remote=False, trace_flags=ctx.trace_flags,
                            trace_state=ctx.trace_state),
        parent=None,
        resource=span.resource,
        attributes={**(span.attributes or {}), sc.EXECUTION_STATE: sc.STATE_RUNNING},
        kind=span.kind,
        start_time=span.start_time,
        end_time=span.start_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class _MarkerSender:
    """Exports markers as soon as they exist, off the caller's thread, in one request per wake-up."""

    def __init__(self, exporter: SpanExporter, *, owns_exporter: bool, synchronous: bool) -> None:
        self._exporter = exporter
        self._owns_exporter = owns_exporter
        self._synchronous = synchronous
        self._pending: collections.deque[ReadableSpan] = collections.deque(maxlen=MAX_PENDING_MARKERS)
        self._closed = False
        self._start()
        if not synchronous:
            _in_each_child(self._start)

    def _start(self) -> None:
        """(Re)create the lock, queue state and thread; in a forked child, the parent's are gone."""
        self._lock = threading.Lock()  # guards _flushes
        self._exporting = threading.Lock()  # one export at a time
        self._wake = threading.Event()
        self._flushes: list[threading.Event] = []  # set once what was pending when they were asked for is sent
        self._pending.clear()
        if not self._synchronous and not self._closed:
            self._thread = threading.Thread(target=self._run, name="SpanhouseMarkerSender", daemon=True)
            self._thread.start()

    def send(self, marker: ReadableSpan) -> None:
        if self._closed:
            return
        if len(self._pending) == MAX_PENDING_MARKERS:
            logger.warning("spanhouse: running-marker queue full (collector unreachable?); dropping the oldest")
        self._pending.append(marker)
        if self._synchronous:
            self._export_now()
        else:
            self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            asked = self._take_flushes()  # before the export: what they wait for is pending now
            self._export_now()
            for done in asked:
                done.set()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Export every pending marker; False if that took past ``timeout_s`` (default
        no limit). The export runs on the sender's thread, so an unreachable collector
        (OTLP's exporters retry for ~10 s) holds the caller no longer than it asked."""
        if self._synchronous or self._closed:
            self._export_now()
            return True
        if not self._pending and not self._exporting.locked():  # nothing to wait for (a flush with 0 s)
            return True
        done = threading.Event()
        with self._lock:
            self._flushes.append(done)
        self._wake.set()
        if self._closed:  # shut down meanwhile: the thread may have left without seeing it
            self._export_now()
            return True
        return done.wait(timeout_s)

    def _take_flushes(self) -> list[threading.Event]:
        with self._lock:
            asked, self._flushes = self._flushes, []
        return asked

    def _export_now(self) -> None:
        """Export what is pending, in the calling thread, one export at a time."""
        with self._exporting:
            batch: list[ReadableSpan] = []
            while self._pending:
                batch.append(self._pending.popleft())
            if not batch:
                return
            token = context_api.attach(context_api.set_value(context_api._SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                if self._exporter.export(batch) is not SpanExportResult.SUCCESS:
                    logger.warning("spanhouse: %d running marker(s) were not exported", len(batch))
            except Exception:  # an exporter must never break the application
                logger.exception("spanhouse: exporting running markers failed")
            finally:
                context_api.detach(token)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if not self._synchronous:
            self._thread.join(timeout=5)
        self._export_now()
        for done in self._take_flushes():  # those the thread left unanswered: their markers are sent
            done.set()
        if self._owns_exporter:
            self._exporter.shutdown()


def _in_each_child(method: Callable[[], None]) -> None:
    """Call the bound ``method`` in every forked child, as long as its object lives (the
    hook holds it weakly: a hook cannot be unregistered)."""
    weak = weakref.WeakMethod(method)

    def after_fork_in_child() -> None:
        alive = weak()
        if alive is not None:
            alive()

    os.register_at_fork(after_in_child=after_fork_in_child)


class _LockRenewedInChildren:
    """``_lock``, replaced by a new one in each forked child: a lock a thread of the parent
    held when it forked (an export under way) is never released in the child, and every
    export there waited on it for ever."""

    _lock: threading.Lock

    def _init_lock(self) -> None:
        self._renew_lock()
        _in_each_child(self._renew_lock)

    def _renew_lock(self) -> None:
        self._lock = threading.Lock()


class BorrowedExporter(_LockRenewedInChildren, SpanExporter):
    """An exporter a pipeline uses but does not own: one passed to ``configure(exporter=)``
    or the store exporter of a DSN. ``configure()`` hands the same object to the next
    pipeline when the settings change, so retiring a pipeline flushes it and leaves it
    open (a BatchSpanProcessor's shutdown would close it for good: every later export
    would fail, silently). Exports through it are serialised."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        # Running markers and batches both leave through it here, from two threads; an
        # exporter may assume (as OpenTelemetry's contract lets it) one export at a time.
        self._init_lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            return self._exporter.export(spans)

    def shutdown(self) -> None:
        self._exporter.force_flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class ForkSafeExporter(_LockRenewedInChildren, SpanExporter):
    """An exporter made by ``factory``, made again in each forked child before its first export.

    The parent's exporter object is abandoned in the child, never shut down there: closing
    it would act on sockets and threads that belong to the parent. It stays referenced,
    too: garbage-collected, its finalizers would close them all the same (chdb's close
    then hangs the child for good).
    """

    def __init__(self, factory: Callable[[], SpanExporter]) -> None:
        self._factory = factory
        self._exporter = factory()
        self._pid = os.getpid()
        self._init_lock()
        self._abandoned: list[SpanExporter] = []

    def _current(self) -> SpanExporter:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._abandoned.append(self._exporter)
                    self._exporter = self._factory()
                    self._pid = os.getpid()
        return self._exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._current().export(spans)

    def shutdown(self) -> None:
        if self._pid == os.getpid():  # nothing of this process's own to shut down otherwise
            self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis) if self._pid == os.getpid() else True
