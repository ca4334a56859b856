"""Feedback on an execution, sent as a span so that it travels over plain OTLP.

``feedback()`` emits one ``spanhouse.feedback`` span carrying the rated execution's id,
the name, value and comment; the store's ``feedback`` view files it (see
clickhouse/schema/0006_errors_feedback.sql). It is its own trace (a rating given in a
later HTTP request must not become part of that request's trace, nor be counted as
work of the execution it rates) and links to the execution's trace.

The link points at the current span when feedback is given from inside the execution
itself; otherwise the process does not know which span is the execution's root, so the
link names the trace with no span id (kept by the SDK because it carries an attribute,
and the attribute ``spanhouse.feedback.execution_id`` is what the store reads first).
"""

from __future__ import annotations

import re
import time
from typing import Final

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import INVALID_SPAN_ID, Link, SpanContext, SpanKind, TraceFlags

from spanhouse import TRACE_ID
from spanhouse.sdk import _runtime
from spanhouse.sdk import _semconv as sc
from spanhouse.sdk._session import current_attributes
from spanhouse.sdk._usage import finite_number

DEFAULT_NAME: Final = "user_rating"
NOT_RECORDED: Final = context_api.create_key("spanhouse.execution.not_recorded")
"""Set by ``@execution(record=False)`` in its context: the trace id it does not record
(an id, not a flag: a span of another trace used inside it, e.g. an incoming request's,
has its own id)."""
_LINK_ATTRIBUTES: Final = {"spanhouse.link.type": "feedback_for"}


def current_execution_id() -> str | None:
    """The id of the execution the caller runs in (its trace id, 32 hex digits).

    None outside any span, and inside an execution that is not recorded by choice
    (``@execution(record=False)``), where feedback would have nothing to attach to. An
    execution the trace sampler left out has its id (feedback on it is still kept).
    """
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid or context_api.get_value(NOT_RECORDED) == ctx.trace_id:
        return None
    return format(ctx.trace_id, "032x")


def feedback(execution_id: str, *, rating: int | None = None, value: float | None = None, name: str = DEFAULT_NAME,
             comment: str | None = None) -> None:
    """Record feedback on an execution: a 1–5 ``rating`` or any numeric ``value``.

    Args:
        execution_id: what ``current_execution_id()`` returned while the execution ran.
        rating: an int from 1 to 5 (give this or ``value``).
        value: any finite number, e.g. a 0–1 score from an evaluator.
        name: what is measured; ``user_rating`` unless given.
        comment: free text.

    The span is exported like any other (``flush()`` sends it at once), whatever the
    sampler (a rating is kept even where its execution was sampled out). ``user.id``
    comes from an enclosing ``session()``.

    Raises:
        ValueError: the id is not 32 hex digits, both or neither of ``rating`` and
            ``value`` are given, the rating is not 1–5, or the value is not finite.
    """
    trace_id = _parse_execution_id(execution_id)
    score = _score(rating, value)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, not {name!r}")
    if comment is not None and not isinstance(comment, str):
        raise ValueError(f"comment must be a string, not {comment!r}")
    rt = _runtime.current
    if rt.disabled:
        return
    attributes: dict[str, str | float] = {
        sc.FEEDBACK_EXECUTION_ID: format(trace_id, "032x"),
        sc.FEEDBACK_NAME: name,
        sc.FEEDBACK_VALUE: score,
    }
    if comment is not None:
        attributes[sc.FEEDBACK_COMMENT] = comment
    tracer = rt.tracer
    if isinstance(tracer, trace.ProxyTracer):  # not configure()d: the provider the application set since
        tracer = trace.get_tracer_provider().get_tracer(_runtime.SCOPE_NAME, _runtime.SCOPE_VERSION)
    if not isinstance(tracer, sdk_trace.Tracer):  # the application's own tracing: its sampler decides
        tracer.start_span(sc.FEEDBACK_SPAN_NAME, context_api.Context(), SpanKind.INTERNAL, attributes,
                          [_link_to(trace_id)]).end()
        return
    # Ended straight into the provider's processors, past its sampler: a ratio sampler
    # decides on a new trace by its own random id, so it dropped ratings of executions it
    # had kept (half of them at 0.5). A rating is rare and is kept whatever was sampled.
    now = time.time_ns()
    ids = tracer.id_generator
    tracer.span_processor.on_end(sdk_trace.ReadableSpan(
        name=sc.FEEDBACK_SPAN_NAME,
        context=SpanContext(ids.generate_trace_id(), ids.generate_span_id(), is_remote=False,
                            trace_flags=TraceFlags(TraceFlags.SAMPLED)),
        resource=tracer.resource,
        attributes={**(current_attributes() or {}), **attributes},
        links=(_link_to(trace_id),),
        kind=SpanKind.INTERNAL,
        start_time=now,
        end_time=now,
        instrumentation_scope=InstrumentationScope(_runtime.SCOPE_NAME, _runtime.SCOPE_VERSION),
    ))


def _link_to(trace_id: int) -> Link:
    here = trace.get_current_span().get_span_context()
    if here.is_valid and here.trace_id == trace_id:
        return Link(here, _LINK_ATTRIBUTES)
    return Link(SpanContext(trace_id, INVALID_SPAN_ID, is_remote=True), _LINK_ATTRIBUTES)


def _parse_execution_id(execution_id: str) -> int:
    # Matched before int(), which also takes a sign, spaces, "_" and "0x": " 1234…" named
    # another id, and "-1234…" made the exporter raise, losing the span's whole batch.
    if isinstance(execution_id, str) and re.fullmatch(TRACE_ID, execution_id):
        trace_id = int(execution_id, 16)
        if trace_id:
            return trace_id
    raise ValueError(f"execution_id must be a trace id of 32 hex digits (not all zero), not {execution_id!r}")


def _score(rating: int | None, value: float | None) -> float:
    if (rating is None) == (value is None):
        raise ValueError("give exactly one of rating (1-5) and value")
    if rating is not None:
        if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
            raise ValueError(f"rating must be an int from 1 to 5, not {rating!r}")
        return float(rating)
    if not finite_number(value):
        raise ValueError(f"value must be a finite number, not {value!r}")
    return float(value)
