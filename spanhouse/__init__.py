"""spanhouse: execution history for AI agents and workflows, stored as OpenTelemetry
traces in ClickHouse.

The distribution is three packages: ``spanhouse.sdk`` (instrumentation),
``spanhouse.collector`` (OTLP receivers, spool, API, CLI) and ``spanhouse.clickhouse``
(connection, schema, write path, queries).
"""

__version__ = "0.1.0"

BOOLEAN_WORDS = {"true": True, "1": True, "yes": True, "on": True,
                 "false": False, "0": False, "no": False, "off": False}
"""How spanhouse reads a boolean setting (lower case): its ``SPANHOUSE_*`` variables and
the collector's flags. OpenTelemetry's own ``OTEL_*`` booleans accept ``true`` alone."""

TRACE_ID = r"^[0-9a-fA-F]{32}$"
"""How an execution id (its trace id) is written wherever one is taken: the API's paths
and bodies, and the CLI's arguments, which check it before building a path from it."""

SPAN_ID = r"^[0-9a-fA-F]{16}$"
"""A span id as hex: also the id of feedback sent over OTLP (its span's), which the API
keeps apart from its own feedback ids."""

FEEDBACK_ID = r"^[A-Za-z0-9_.:-]{1,128}$"
"""A feedback item's id, as the API and the CLI take it: the client's own (Langfuse's
score ids), the API's (32 hex digits) or, sent over OTLP, its span's (16 hex digits)."""
