"""The state the decorators read on every call, swapped whole by ``configure()``.

One immutable snapshot behind one module attribute: a call reads it once and sees a
consistent tracer, switch and content policy even while another thread reconfigures,
and the per-call cost is one attribute load. Before ``configure()`` runs, the snapshot
comes from the environment and uses a proxy tracer that follows the global
TracerProvider, so an application that sets up OpenTelemetry itself can use the
decorators without calling ``configure()`` at all.
"""

from __future__ import annotations

from typing import Final

from opentelemetry import trace

from spanhouse import __version__
from spanhouse.sdk._config import (
    DEFAULT_MAX_VALUE_LENGTH,
    OTEL_SDK_DISABLED,
    SPANHOUSE_CAPTURE_CONTENT,
    SPANHOUSE_MAX_VALUE_LENGTH,
    env_bool,
    env_positive_int,
    otel_env_bool,
)
from spanhouse.sdk._content import ContentPolicy

SCOPE_NAME: Final = "spanhouse.sdk"
SCOPE_VERSION: Final = __version__


class Runtime:
    """What a decorated call needs: the tracer, the off switch, the content policy."""

    __slots__ = ("capture_content", "content", "disabled", "tracer")

    def __init__(self, tracer: trace.Tracer, *, disabled: bool, capture_content: bool, content: ContentPolicy) -> None:
        self.tracer = tracer
        self.disabled = disabled
        self.capture_content = capture_content
        self.content = content

    def records(self) -> bool:
        """Whether a span this tracer starts without a parent can record: not before any
        TracerProvider is set (the proxy tracer of an unconfigured process, in a library
        whose application never set OpenTelemetry up, makes spans that drop everything,
        and their arguments were serialised on every call for nothing)."""
        if isinstance(self.tracer, trace.ProxyTracer):  # follows the global provider, once one is set
            return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
        return not isinstance(self.tracer, trace.NoOpTracer)


def from_environment() -> Runtime:
    """The snapshot an unconfigured process uses."""
    return Runtime(
        trace.get_tracer(SCOPE_NAME, SCOPE_VERSION),
        disabled=otel_env_bool(OTEL_SDK_DISABLED),
        capture_content=env_bool(SPANHOUSE_CAPTURE_CONTENT, True),
        content=ContentPolicy(env_positive_int(SPANHOUSE_MAX_VALUE_LENGTH, DEFAULT_MAX_VALUE_LENGTH)),
    )


current: Runtime = from_environment()


def install(runtime: Runtime) -> Runtime:
    """Make ``runtime`` the one every call reads; return the one it replaces."""
    global current
    previous, current = current, runtime
    return previous
