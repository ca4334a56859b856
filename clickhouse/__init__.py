"""Storage layer: DSN -> client, schema migrations, the OTLP write path, named queries."""

from spanhouse.clickhouse.client import DEFAULT_DSN, DSN_ENV, connect, embedded_path, resolve_dsn
from spanhouse.clickhouse.migrations import apply_retention, migrate
from spanhouse.clickhouse.store import RETENTION_ENV, Store, open_store, retention_from_env
from spanhouse.clickhouse.writer import IngestItem, Writer

__all__ = [
    "DEFAULT_DSN",
    "DSN_ENV",
    "IngestItem",
    "RETENTION_ENV",
    "Store",
    "Writer",
    "apply_retention",
    "connect",
    "embedded_path",
    "migrate",
    "open_store",
    "resolve_dsn",
    "retention_from_env",
]
