"""Test helpers: run decorated code against an in-memory exporter, without global state.

``capture_spans()`` gives the decorators a private TracerProvider with spanhouse's real
span processor (sessions, running markers) in synchronous mode and an
``InMemorySpanExporter``, for the duration of a ``with`` block; the global
TracerProvider and any ``configure()`` are left untouched and restored afterwards. A
pytest fixture is one line::

    @pytest.fixture
    def spans():
        with capture_spans() as captured:
            yield captured
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spanhouse.sdk import _runtime
from spanhouse.sdk import _semconv as sc
from spanhouse.sdk._config import DEFAULT_MAX_VALUE_LENGTH
from spanhouse.sdk._content import ContentPolicy, RedactHook
from spanhouse.sdk._processor import SpanhouseSpanProcessor

__all__ = ["CapturedSpans", "capture_spans"]


class CapturedSpans:
    """What the decorated code exported inside ``capture_spans()``, in order of export."""

    def __init__(self, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
        self.provider = provider
        self.exporter = exporter

    def all(self) -> list[ReadableSpan]:
        """Every exported span, running markers included."""
        return list(self.exporter.get_finished_spans())

    def spans(self) -> list[ReadableSpan]:
        """Exported spans without the running markers."""
        return [s for s in self.all() if not is_marker(s)]

    def markers(self) -> list[ReadableSpan]:
        """Only the running markers."""
        return [s for s in self.all() if is_marker(s)]

    def by_name(self, name: str) -> ReadableSpan:
        """The one exported span (not marker) called ``name``."""
        found = [s for s in self.spans() if s.name == name]
        if len(found) != 1:
            raise AssertionError(f"{len(found)} spans named {name!r}; have {[s.name for s in self.spans()]}")
        return found[0]

    def clear(self) -> None:
        self.exporter.clear()


def is_marker(span: ReadableSpan) -> bool:
    """Whether ``span`` is a running marker rather than work."""
    return (span.attributes or {}).get(sc.EXECUTION_STATE) == sc.STATE_RUNNING


@contextmanager
def capture_spans(*, capture_content: bool = True, max_value_length: int = DEFAULT_MAX_VALUE_LENGTH,
                  redact: RedactHook | None = None, disabled: bool = False,
                  resource: Resource | None = None) -> Iterator[CapturedSpans]:
    """Route the decorators to a private provider and an in-memory exporter inside the block."""
    provider = TracerProvider(resource=resource or Resource.create({"service.name": "spanhouse-test"}),
                              shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SpanhouseSpanProcessor(exporter, synchronous=True))
    runtime = _runtime.Runtime(provider.get_tracer(_runtime.SCOPE_NAME, _runtime.SCOPE_VERSION), disabled=disabled,
                               capture_content=capture_content, content=ContentPolicy(max_value_length, redact))
    previous = _runtime.install(runtime)
    try:
        yield CapturedSpans(provider, exporter)
    finally:
        _runtime.install(previous)
        provider.shutdown()
