"""spanhouse: execution history for AI agents and workflows, stored as OpenTelemetry
traces in ClickHouse.

The distribution is three packages: ``spanhouse.sdk`` (instrumentation),
``spanhouse.collector`` (OTLP receivers, spool, API, CLI) and ``spanhouse.clickhouse``
(connection, schema, write path, queries).
"""

__version__ = "0.1.0"
