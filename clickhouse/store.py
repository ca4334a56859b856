"""Opening a store: connect, bring the schema up to date, apply retention, get a writer.

This is what every process that owns a store does at start (the collector, the SDK's
ClickHouse exporter, benchmarks, tests), so it lives in one place.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from spanhouse.clickhouse import queries, sqlfiles
from spanhouse.clickhouse.client import allow_partition_pruning, connect, embedded_path, resolve_dsn
from spanhouse.clickhouse.migrations import apply_retention, migrate
from spanhouse.clickhouse.pool import ClientPool
from spanhouse.clickhouse.writer import Writer
from spanhouse.errors import ConfigError

log = logging.getLogger(__name__)

RETENTION_ENV = "SPANHOUSE_RETENTION_DAYS"
"""Whole days to keep data for (every table gets a TTL); unset keeps everything."""


READERS = 6
"""Clients in the store's pool: enough for the parallel queries of one request (the
performance call runs five at once) with one to spare for another request."""


@dataclass(frozen=True)
class Store:
    """An open, migrated store: a client for administration (migrations, retention,
    tests), a pool of clients for the API's requests (reads, and the deletions and
    feedback they make), and the writer for spans. Each has connections of its own, so
    a request never waits for an insert of spans."""

    dsn: str
    client: Client
    readers: ClientPool
    writer: Writer
    prunes_partitions: bool = True
    """Whether this store's clients let the engine prune partitions by their keys
    (``connect``): a server, or an embedded store only ever opened in this zone."""

    def close_pool(self, pool: ClientPool) -> bool:
        """Close ``pool`` (this store's readers, or another pool on its engine) and wait up
        to ``CLOSE_WAIT_S`` for its reads still running; True once none is. On the
        embedded engine, where every query is this process's, they are cancelled first:
        closing the engine under a running query crashes the process (SIGSEGV)."""
        if not pool.close() and embedded_path(self.dsn) is not None:
            try:
                self.client.command(sqlfiles.query("cancel_reads"))
            except Exception:  # noqa: BLE001 - a broken engine: the reads are waited for all the same
                log.warning("could not cancel the store's running reads", exc_info=True)
        return pool.close(wait_s=CLOSE_WAIT_S)

    def close(self) -> None:
        """Release the connections (for the embedded engine: the data directory), after the
        reads still running (see ``close_pool``). If one still runs then, the embedded
        engine is left open for the process's exit rather than closed under it."""
        ended = False
        try:
            ended = self.close_pool(self.readers)
            self.writer.close()
        finally:
            if ended or embedded_path(self.dsn) is None:
                self.client.close()
            else:
                log.warning("a read of the store still runs after %.0f s; the store is left open until the process "
                            "exits", CLOSE_WAIT_S)


CLOSE_WAIT_S = 10.0
"""How long closing a store waits for reads still running (cancelled ones end at once)."""


def retention_from_env() -> int | None:
    """``$SPANHOUSE_RETENTION_DAYS`` as an int, or None when unset or empty."""
    raw = os.environ.get(RETENTION_ENV, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{RETENTION_ENV}={raw!r} is not a whole number of days") from None


def open_store(dsn: str | None = None, *, retention_days: int | None = None,
               cluster: str | None = None, timeout: float | None = None,
               stopping: threading.Event | None = None) -> Store:
    """Connect to ``dsn`` (see ``resolve_dsn``), migrate, and apply ``retention_days``.

    ``timeout`` bounds each request to a server (see ``connect``) but the migrations': a
    migration refilling a table, cut off by the client while the server goes on, would
    run again at the next opening and count its rows twice. A server that never answers
    fails within it all the same, at a first connection whose opening asks the server
    its version. ``stopping`` set ends a wait for another migrator (``Stopped``)."""
    dsn = resolve_dsn(dsn)
    if timeout is not None and embedded_path(dsn) is None:
        connect(dsn, timeout=timeout).close()
    client = connect(dsn)
    try:
        embedded = embedded_path(dsn) is not None
        if migrate(client, cluster=cluster, exclusive=embedded, stopping=stopping) and embedded:
            # The engine that created or replaced views holds them otherwise than one
            # loading them from disk, and a view's insert deduplication ids differ between
            # the two: a batch inserted here and replayed from the spool by the next
            # process (after a crash) was stored once in otel_traces but twice in every
            # view's table. Opened again, this process holds them as every later one does.
            client.close()
            client = connect(dsn)
        prunes = not embedded or _one_zone(client)
        if prunes and embedded:
            allow_partition_pruning(client)
        if retention_days is not None:
            apply_retention(client, retention_days, cluster=cluster)
        writer_client = connect(dsn, timeout=timeout, prune_partitions=prunes)
        try:
            writer = Writer(writer_client, embedded_path(dsn))
        except BaseException:
            writer_client.close()
            raise
    except BaseException:
        client.close()  # for the embedded engine: else the data directory stays held by this process
        raise
    return Store(dsn, client, ClientPool(lambda: connect(dsn, timeout=timeout, prune_partitions=prunes), READERS),
                 writer, prunes)


def _one_zone(client: Client) -> bool:
    """Record this process's time zone as one the embedded store was opened in (before
    it writes; once per zone, not a part per opening); whether it is the only one
    recorded (0021): partitions are then computed and pruned in the same zone."""
    zone = queries.rows(client, "server_timezone", {})[0]["timezone"]
    zones = [row["zone"] for row in queries.rows(client, "store_zones", {})]
    if zone not in zones:
        client.insert("spanhouse_zones", [[zone]], column_names=["Zone"])
        zones.append(zone)
    return zones == [zone]
