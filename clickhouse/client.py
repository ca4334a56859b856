"""DSN -> clickhouse-connect client: the embedded engine (chdb) or a ClickHouse server.

There is no storage abstraction of our own: both engines are reached through the same
clickhouse-connect ``Client``, so every query and insert is written once.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path
from typing import Final
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from spanhouse.errors import ConfigError, StoreUnavailable

DSN_ENV = "SPANHOUSE_CLICKHOUSE_DSN"
"""Environment variable holding the store's DSN (used when no DSN is passed)."""

DEFAULT_DSN = "chdb://./spanhouse-data"
"""The embedded store in ``./spanhouse-data``: the default, no server needed."""

SERVER_SCHEMES: Final = ("http", "https", "clickhouse", "clickhouses")

_UNPRUNED: Final = {"use_partition_pruning": 0, "optimize_mutations_with_partition_pruning": 0}
"""The embedded engine takes the time zone of the process that opens it, and a row's
partition (``toDate``, ``toYYYYMM`` of its time) is computed in that zone when it is
written: a process in another zone pruned partitions by its own dates, skipping parts
holding what it read or deleted (an execution's detail showed no spans whenever the two
zones' dates differed). Each part's min-max index of the time itself, which no zone
changes, still prunes, but the partitions' pruning saves a fifth of an execution's
detail: ``open_store`` keeps it where one zone ever opened the store."""

_HOW: Final = "use chdb:///path for the embedded store or http(s)://user:pass@host:8123/db for a ClickHouse server"


def resolve_dsn(dsn: str | None = None) -> str:
    """The DSN to use: the argument, else ``$SPANHOUSE_CLICKHOUSE_DSN``, else the default."""
    return dsn or os.environ.get(DSN_ENV) or DEFAULT_DSN


def redacted(dsn: str) -> str:
    """``dsn`` with its password (if any) replaced by ``***``: for logs and messages.

    Never raises: it is what the messages about a malformed DSN show, so a DSN that is
    no URL has everything before its host's ``@`` replaced instead."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        credentials = _credentials(dsn)
        return dsn.replace(f"{credentials}@", "***@", 1) if credentials else dsn
    if parts.password is None:
        return dsn
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _credentials(dsn: str) -> str:
    """The ``user:password`` of ``dsn`` as written (empty if none), found without parsing
    it as a URL, which it may not be."""
    netloc = re.split(r"[/?#]", dsn.partition("://")[2], maxsplit=1)[0]
    return netloc.rpartition("@")[0]


def _split(dsn: str) -> SplitResult:
    """``dsn`` parsed; ``ConfigError`` if it is no URL (an unclosed ``[``, a port that is
    not a number), which urllib reports as a ValueError that named neither the DSN nor the fix."""
    try:
        parts = urlsplit(dsn)
        if parts.scheme != "chdb":  # chdb's "host" is a path, which may hold a colon
            _ = parts.port  # a port that is not a number raises only when it is read
    except ValueError as exc:
        credentials = _credentials(dsn)
        reason = str(exc).replace(credentials, "***") if credentials else str(exc)
        raise ConfigError(f"DSN {redacted(dsn)!r} is not a valid URL ({reason}): {_HOW}") from None
    return parts


def store_identity(dsn: str) -> str:
    """The store ``dsn`` reaches, whatever credentials or options it passes, as
    clickhouse-connect reads it: an embedded store's data directory; a server's
    interface, host, port and database (the scheme does not choose the interface: the
    port does, and stands for its default when left out)."""
    path = embedded_path(dsn)
    if path is not None:
        return f"chdb://{path}"
    parts = _split(dsn)
    tls = parts.port in (443, 8443)
    port = parts.port or (8443 if tls else 8123)
    host = (parts.hostname or "localhost").lower()
    host = f"[{host}]" if ":" in host else host
    database = unquote(parts.path[1:].split("/")[0]) or "default"
    return f"{'https' if tls else 'http'}://{host}:{port}/{database}"


def embedded_path(dsn: str) -> Path | None:
    """The data directory of a ``chdb://`` DSN as an absolute path, or None for a server.

    ``chdb:///abs/path`` is absolute; ``chdb://./rel`` and ``chdb://rel`` are relative to
    the current directory, resolved once here so that later ``chdir``s change nothing.
    """
    parts = _split(dsn)
    if parts.scheme != "chdb":
        return None
    raw = (parts.netloc + parts.path) if parts.netloc else parts.path
    path = Path(raw).expanduser().resolve() if raw else None
    if path is None or path == Path(path.anchor):  # chdb:/// : the engine's files across the root directory
        raise ConfigError(f"DSN {dsn!r} names no data directory; use chdb:///abs/path or chdb://./relative")
    return path


def store_dsn(dsn: str) -> str:
    """``dsn`` as it is connected to: an embedded store's data directory made absolute
    against the current directory now (a later ``chdir`` must not move the store), a
    server's DSN as it is. Raises ``ConfigError``, saying what to write instead, for a
    DSN that can name no store."""
    path = embedded_path(dsn)
    if path is not None:
        return f"chdb://{path}"
    scheme = _split(dsn).scheme
    if scheme not in SERVER_SCHEMES:
        raise ConfigError(f"unsupported DSN scheme {scheme!r} in {redacted(dsn)!r}: {_HOW}")
    return dsn


def connect(dsn: str | None = None, *, timeout: float | None = None, prune_partitions: bool = False) -> Client:
    """Open a clickhouse-connect client for ``dsn`` (see ``resolve_dsn``).

    ``chdb://path`` opens the embedded engine on that data directory (created if missing);
    only one process may hold it open. ``http(s)://user:pass@host:port/db`` connects to a
    server; ``timeout`` (seconds) bounds each of its requests instead of clickhouse-connect's
    300 s, for a caller that must not wait on a server that accepts connections but never
    answers. ``prune_partitions``: on the embedded engine, let it prune partitions by
    their keys, safe only where every process that opened the store ran in this one's
    time zone (``Store.prunes_partitions`` says; a server has one zone and always does).
    Raises ``ConfigError`` for a DSN that names no store (see ``store_dsn``) or a data
    directory that cannot be created, and ``StoreUnavailable`` when the store cannot be
    opened or reached.
    """
    dsn = resolve_dsn(dsn)
    target = store_dsn(dsn)
    path = embedded_path(target)
    bounds: dict[str, int] = {}
    settings: dict[str, int] = {}
    if path is not None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # it escaped as a bare FileNotFoundError/PermissionError, told as unreachable;
            # not StoreUnavailable either, which the SDK's exporter retries for 10 s at every flush
            raise ConfigError(f"cannot create the data directory {path} of ClickHouse store {redacted(dsn)!r}: "
                              f"{exc.strerror or exc}; give it a directory this process may create "
                              "(chdb:///path)") from exc
        settings = {} if prune_partitions else _UNPRUNED
    elif timeout is not None and math.isfinite(timeout):  # an endless retry waits as long as the driver does
        seconds = max(1, math.ceil(timeout))  # clickhouse-connect takes whole seconds, and 0 as no wait at all
        bounds = {"connect_timeout": seconds, "send_receive_timeout": seconds}
    try:
        return clickhouse_connect.get_client(dsn=target, settings=settings, **bounds)
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


def allow_partition_pruning(client: Client) -> None:
    """Let a client ``connect`` made for the embedded engine without it prune partitions
    by their keys (see ``_UNPRUNED``)."""
    for name in _UNPRUNED:
        client.set_client_setting(name, 1)


def _unwritable(path: Path) -> str | None:
    """Why this process cannot create a file in ``path``, or None if it can. The engine
    reports a data directory it may not write as a bare BAD_ARGUMENTS (the reason goes to
    its stderr), which would otherwise be told as the store being held elsewhere."""
    try:
        with tempfile.TemporaryFile(dir=path):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)
