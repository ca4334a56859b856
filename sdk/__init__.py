"""spanhouse.sdk: record AI agents' executions as OpenTelemetry traces, one decorator at a time.

::

    from spanhouse import sdk

    sdk.configure(service_name="support-bot")          # OTLP to 127.0.0.1:4317 by default

    @sdk.tool
    def lookup_order(order_id: str) -> dict: ...

    @sdk.execution
    def handle(ticket): ...

An execution is a trace (``@execution``, alias ``@workflow``); inside it ``@agent``,
``@tool`` and ``@llm`` mark agents, tool calls and model calls with the OpenTelemetry
GenAI conventions, which is what spanhouse's views read. ``record_usage()`` adds tokens
and cost, ``session()`` users and conversations, ``feedback()`` ratings. The SDK is a
thin layer over the OpenTelemetry SDK: it adds to the application's TracerProvider when
there is one (leaving the export to it when it already sends OTLP to the same endpoint,
as under ``opentelemetry-instrument``), and every span it makes is an ordinary
OpenTelemetry span.
"""

from types import FunctionType

from spanhouse.sdk._decorators import (
    ActiveCall,
    agent,
    agent_span,
    execution,
    execution_span,
    llm,
    llm_call,
    tool,
    tool_call,
    workflow,
)
from spanhouse.sdk._feedback import current_execution_id, feedback
from spanhouse.sdk._processor import SpanhouseSpanProcessor
from spanhouse.sdk._session import session
from spanhouse.sdk._setup import configure, flush, shutdown
from spanhouse.sdk._usage import CACHED_INPUT_PRICES, LONG_CONTEXT_PRICES, PRICES, record_usage, register_price

__all__ = [
    "CACHED_INPUT_PRICES",
    "LONG_CONTEXT_PRICES",
    "PRICES",
    "ActiveCall",
    "SpanhouseSpanProcessor",
    "agent",
    "agent_span",
    "configure",
    "current_execution_id",
    "execution",
    "execution_span",
    "feedback",
    "flush",
    "llm",
    "llm_call",
    "record_usage",
    "register_price",
    "session",
    "shutdown",
    "tool",
    "tool_call",
    "workflow",
]

for _name in __all__:  # show the public path in reprs and docs, as httpx does
    _obj = globals()[_name]
    if isinstance(_obj, (type, FunctionType)):
        _obj.__module__ = __name__
del _name, _obj
