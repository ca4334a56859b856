"""DSN -> clickhouse-connect client: the embedded engine (chdb) or a ClickHouse server.

There is no storage abstraction of our own: both engines are reached through the same
clickhouse-connect ``Client``, so every query and insert is written once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from spanhouse.errors import ConfigError, StoreUnavailable

DSN_ENV = "SPANHOUSE_CLICKHOUSE_DSN"
"""Environment variable holding the store's DSN (used when no DSN is passed)."""

DEFAULT_DSN = "chdb://./spanhouse-data"
"""The embedded store in ``./spanhouse-data``: the default, no server needed."""


def resolve_dsn(dsn: str | None = None) -> str:
    """The DSN to use: the argument, else ``$SPANHOUSE_CLICKHOUSE_DSN``, else the default."""
    return dsn or os.environ.get(DSN_ENV) or DEFAULT_DSN


def redacted(dsn: str) -> str:
    """``dsn`` with its password (if any) replaced by ``***``: for logs and messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def embedded_path(dsn: str) -> Path | None:
    """The data directory of a ``chdb://`` DSN as an absolute path, or None for a server.

    ``chdb:///abs/path`` is absolute; ``chdb://./rel`` and ``chdb://rel`` are relative to
    the current directory, resolved once here so that later ``chdir``s change nothing.
    """
    parts = urlsplit(dsn)
    if parts.scheme != "chdb":
        return None
    raw = (parts.netloc + parts.path) if parts.netloc else parts.path
    if not raw:
        raise ConfigError(f"DSN {dsn!r} names no data directory; use chdb:///abs/path or chdb://./relative")
    return Path(raw).expanduser().resolve()


def connect(dsn: str | None = None) -> Client:
    """Open a clickhouse-connect client for ``dsn`` (see ``resolve_dsn``).

    ``chdb://path`` opens the embedded engine on that data directory (created if missing);
    only one process may hold it open. ``http(s)://user:pass@host:port/db`` connects to a
    server. Raises ``ConfigError`` for an unknown scheme and ``StoreUnavailable`` when
    the store cannot be opened or reached.
    """
    dsn = resolve_dsn(dsn)
    scheme = urlsplit(dsn).scheme
    path = embedded_path(dsn)
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        target = f"chdb://{path}"
    elif scheme in ("http", "https", "clickhouse", "clickhouses"):
        target = dsn
    else:
        raise ConfigError(
            f"unsupported DSN scheme {scheme!r} in {redacted(dsn)!r}: use chdb:///path for the embedded "
            "store or http(s)://user:pass@host:8123/db for a ClickHouse server"
        )
    try:
        return clickhouse_connect.get_client(dsn=target)
    except Exception as exc:  # clickhouse-connect and chdb raise several unrelated types
        if path is None:
            hint = "is the server running and the DSN's host, port and credentials right?"
        elif (unwritable := _unwritable(path)) is not None:
            hint = (f"this process cannot write to the data directory {path} ({unwritable}): run it as a user "
                    "who may, or give it another directory (chdb:///path)")
        else:
            hint = ("an embedded store can be open in one process only, and a process can hold one "
                    "embedded store at a time: is a running `spanhouse serve` holding this data "
                    "directory (then talk to it instead), or is another store open in this process?")
        raise StoreUnavailable(f"cannot open ClickHouse store {redacted(dsn)!r}: "
                               f"{str(exc).replace(dsn, redacted(dsn))}; {hint}") from exc


def _unwritable(path: Path) -> str | None:
    """Why this process cannot create a file in ``path``, or None if it can. The engine
    reports a data directory it may not write as a bare BAD_ARGUMENTS (the reason goes to
    its stderr), which would otherwise be told as the store being held elsewhere."""
    try:
        with tempfile.TemporaryFile(dir=path):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)
