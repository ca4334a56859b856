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
    └── InvalidData            input that can never be stored as sent (bad OTLP)
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


class MigrationError(StoreError):
    """The schema cannot be brought up to date."""


class WriteError(StoreError):
    """An insert failed for a reason that retrying the same data will not fix."""


class InvalidData(SpanhouseError):
    """Input that can never be stored as sent."""


__all__ = [
    "ConfigError",
    "InvalidData",
    "MigrationError",
    "SpanhouseError",
    "StoreError",
    "StoreUnavailable",
    "WriteError",
]
