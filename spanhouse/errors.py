"""The one exception hierarchy of spanhouse.

Every error spanhouse raises on purpose is a ``SpanhouseError``; its message says what
went wrong and what to do next. Foreign errors (clickhouse-connect, chdb, grpc) are
translated at the boundary that calls them.

::

    SpanhouseError
    ├── ConfigError            a setting, flag or DSN is invalid
    ├── StoreError             the ClickHouse store
    │   ├── StoreUnavailable   cannot reach or open it; retrying later may succeed
    │   ├── MigrationError     the schema cannot be brought up to date
    │   └── WriteError         an insert failed for a reason retrying will not fix
    ├── Stopped                a stop asked for while waiting (not a failure)
    ├── InvalidData            input that can never be stored as sent (bad OTLP)
    │   └── PayloadTooLarge    a request over the size limit
    ├── UnsupportedMediaType   a body in an encoding we do not read
    ├── AuthError              no or an unknown API key
    │   └── Forbidden          a known key without the scope the call needs
    └── Backpressure           we cannot take more right now; retry after a delay
        └── SpoolFull          the durable spool reached its byte bound
"""

from __future__ import annotations


class SpanhouseError(Exception):
    """Base of every error spanhouse raises on purpose."""


class ConfigError(SpanhouseError):
    """A setting, flag or DSN is invalid."""


class StoreError(SpanhouseError):
    """The ClickHouse store failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or opened right now; retrying later may succeed."""


class InsertIncomplete(StoreUnavailable):
    """An insert failed for no known reason, possibly after some tables took the batch:
    the same batch is to be tried again through the same writer, whose deduplication
    token completes it exactly, and which counts how often it failed."""


class MigrationError(StoreError):
    """The schema cannot be brought up to date."""


class WriteError(StoreError):
    """An insert failed for a reason that retrying the same data will not fix."""


class Stopped(SpanhouseError):
    """A stop was asked for while this waited (a collector told to stop while it
    started): not a failure, and nothing was left half done."""


class InvalidData(SpanhouseError):
    """Input that can never be stored as sent."""


class PayloadTooLarge(InvalidData):
    """A request over the configured size limit (after decompression)."""


class UnsupportedMediaType(SpanhouseError):
    """A request body in a content type or encoding we do not read."""


class AuthError(SpanhouseError):
    """No API key, or one we do not know."""


class Forbidden(AuthError):
    """A known API key without the scope this call needs."""


class Backpressure(SpanhouseError):
    """We cannot take more data right now; the client should retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SpoolFull(Backpressure):
    """The durable spool reached its byte bound: acknowledging more could lose data."""


__all__ = [
    "AuthError",
    "Backpressure",
    "ConfigError",
    "Forbidden",
    "InvalidData",
    "MigrationError",
    "PayloadTooLarge",
    "SpanhouseError",
    "SpoolFull",
    "Stopped",
    "StoreError",
    "StoreUnavailable",
    "UnsupportedMediaType",
    "WriteError",
]
