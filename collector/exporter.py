"""The ClickHouse exporter: drains sealed spool segments into the store.

One thread, one segment per insert (so batches are large), the segment's unique name
as the insert's deduplication token (so re-inserting a segment after a crash or a
timeout changes nothing). A segment is deleted only after its insert succeeded. While
the store is unavailable the same segment is retried with exponential backoff; the
spool meanwhile keeps accepting until its bound. A segment the store rejects for its
content is quarantined (kept on disk, logged, counted), never dropped.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from pathlib import Path

from spanhouse.clickhouse import IngestItem, Writer, connect, embedded_path
from spanhouse.clickhouse.migrations import behind_with_spans, stored_spans
from spanhouse.collector.metrics import Metrics
from spanhouse.collector.spool import Segment, Spool, write_atomic
from spanhouse.errors import InvalidData, StoreUnavailable, WriteError

log = logging.getLogger(__name__)


class ClickHouseExporter:
    """Moves spool segments into ClickHouse on a background thread."""

    def __init__(self, spool: Spool, writer: Writer, metrics: Metrics, *,
                 backoff_initial: float = 0.2, backoff_max: float = 30.0) -> None:
        self._spool = spool
        self._writer = writer
        self._metrics = metrics
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._stop = threading.Event()
        self._wake = threading.Event()  # ends a failure's backoff early (stop)
        self._stopping = threading.Event()  # a stop has begun: an insert failing after it is not tried again
        self._parked = threading.Event()  # one has failed: the drain is over
        self._thread = threading.Thread(target=self._run, name="spanhouse-exporter", daemon=True)
        self.healthy = True
        """False while the store refuses inserts (said by /readyz and a gauge)."""
        # Read at scrape time, so the gauges are never stale while an insert runs.
        metrics.spool_bytes.set_function(lambda: spool.bytes)
        metrics.spool_segments.set_function(lambda: spool.segment_count)
        metrics.store_healthy.set_function(lambda: float(self.healthy))
        # from the start: rate() misses a new series' first event
        for kind in ("failed", "unavailable", "rejected", "lost"):
            metrics.insert_errors.labels(kind=kind)

    def start(self) -> None:
        self._thread.start()

    def stop(self, drain_timeout: float, hurry: threading.Event | None = None) -> bool:
        """Drain what is sealed for up to ``drain_timeout`` s (less once ``hurry`` is set),
        then stop; True if all drained.

        An insert already running when the time is up is let finish (the client's own
        timeout bounds it): the store is closed next, and closing the embedded engine
        under a running insert could crash the process. Its segment, if the insert
        did not succeed, stays for the next start.

        A store that failed before the stop (and no hurry) is tried once more at once: its
        backoff, up to 30 s, would outlast the drain. A store back by then is drained
        into; an insert failing once the stop began (that try, or one under way at the
        stop) ends the drain. Each insert is bounded by the client's own timeout."""
        deadline = time.monotonic() + drain_timeout
        self._stopping.set()
        if not (hurry is not None and hurry.is_set()):
            self._wake.set()  # a failure's backoff ends now: its next try is the stop's
        while (time.monotonic() < deadline and self._spool.segment_count and not self._parked.is_set()
               and not (hurry is not None and hurry.is_set())):
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join()
        return self._spool.segment_count == 0

    def _run(self) -> None:
        backoff = self._backoff_initial
        while not self._stop.is_set():
            try:
                segment = self._spool.next_sealed(timeout=0.2)
                if segment is None:
                    continue
                done = self.export(segment)
            except Exception:  # noqa: BLE001 - the thread must outlive any one failure
                # e.g. the disk is full while quarantining or deleting a segment. The
                # segment stays in the spool and is tried again (its token makes a
                # repeated insert a no-op); /readyz says not ready meanwhile.
                self._metrics.insert_errors.labels(kind="failed").inc()
                log.exception("exporting a spool segment failed; it will be retried")
                self.healthy = False
                done = False
            if done:
                backoff = self._backoff_initial
            elif self._stopping.is_set():  # failed once the stop began: that ends its drain
                self._parked.set()
                self._stop.wait()
            else:
                self._wake.wait(backoff)
                self._wake.clear()
                backoff = min(backoff * 2, self._backoff_max)

    def export(self, segment: Segment) -> bool:
        """Insert one segment (deleted once stored, quarantined if refused); False if it
        should be retried later."""
        started = time.perf_counter()
        exact_before = self._writer.exact_batches
        try:
            try:
                records = segment.records()  # InvalidData if it rotted on disk: quarantined below
            except FileNotFoundError:
                # Removed by hand (or its directory with it): retried, it held back every
                # segment after it, and /readyz blamed the store, until a restart.
                self._metrics.insert_errors.labels(kind="lost").inc()
                self._spool.lost(segment)
                log.error("spool segment %s is gone from %s (removed by something else): its %d bytes of "
                          "acknowledged spans are lost; the segments after it go on", segment.name,
                          segment.path.parent, segment.size)
                return True
            except OSError as exc:
                if exc.errno not in _UNREADABLE:
                    raise  # what may pass (EMFILE, ENOMEM, EIO...): tried again after a backoff
                # retried, it held back every segment after it, and /readyz blamed the store
                return self._quarantine(segment, f"it cannot be read: {exc}")
            items = [IngestItem(r.tenant, r.payload) for r in records]
            self._writer.write(items, token=f"spool-{segment.name}")
        except StoreUnavailable as exc:
            self._metrics.insert_errors.labels(kind="unavailable").inc()
            if self.healthy:
                log.warning("ClickHouse insert failed, will retry (data stays in the spool): %s", exc)
            self.healthy = False
            return False
        except (WriteError, InvalidData) as exc:  # refused by ClickHouse, or rotted on disk
            return self._quarantine(segment, str(exc))
        self._metrics.insert_seconds.observe(time.perf_counter() - started)
        self._metrics.insert_batches.inc()
        self._metrics.exact_path_batches.inc(self._writer.exact_batches - exact_before)
        self._spool.delete(segment)
        if not self.healthy:
            log.info("ClickHouse inserts work again")
        self.healthy = True
        return True


    def _quarantine(self, segment: Segment, reason: str) -> bool:
        """Set ``segment`` aside for good (kept in the spool's quarantine, counted, logged)."""
        self._metrics.insert_errors.labels(kind="rejected").inc()
        kept = self._spool.quarantine(segment, reason)
        log.error("spool segment %s cannot be stored; kept as %s: %s", segment.name, kept, reason)
        return True


_UNREADABLE = frozenset({errno.EACCES, errno.EPERM, errno.EISDIR})
"""Why a spool segment cannot be read for good: it is quarantined (any other read error
is tried again)."""

_REPLAYED = "replayed-before-migrating"
"""In the spool's directory from a replay before migrating until the migration ends: the
spans the store held then (a first line ``spans <n>``) and the names of the segments left
then, none of which was stored."""
_REPLAY_ATTEMPTS = 5


def replay_before_migrating(dsn: str, spool: Spool, spool_dir: Path, metrics: Metrics,
                            stopping: threading.Event | None = None) -> None:
    """Insert the spool's oldest segment into a store whose schema is behind this
    version's, before it is migrated.

    The exporter inserts one segment at a time, oldest first, and deletes it once
    stored: a crash can leave at most that one stored (the process died during its
    insert or before deleting it), and its replay is then a no-op, each table
    recognising the segment's token. But a migration that fills a table anew from the
    stored spans (0010, 0016 and 0020 did) counts the segment in that table and drops
    the table's record of it, so a replay after the migration counted it twice there.
    Replayed first, through the views it was (perhaps) written through, it is recognised
    everywhere, and the migration counts it once. Only that one: the others were never
    stored, and stored now they would take the old schema's reading of spans that the
    migrations correct (a review's drain of every segment counted an OK tool call as
    failed for good). A store holding no span has stored no segment: nothing is
    replayed. Nor after a replay whose migration was cut off, when the oldest segment
    is one that was left then (a mark in the spool's directory names them until
    ``migrated``) and the store holds the spans it held then: it was never stored. A
    segment written since, or a store that took spans since (a previous version run
    again meanwhile may have stored the oldest and died), is replayed. A store failing
    five times, a second apart, leaves the segment for the exporter, after the
    migration, as before."""
    oldest = spool.next_sealed(timeout=0.0)
    if oldest is None:
        return
    mark = spool_dir / _REPLAYED
    lines = mark.read_text().split("\n") if mark.exists() else []
    spans_then = int(lines[0].split()[1]) if lines and lines[0].startswith("spans ") else None
    client = connect(dsn)
    try:
        behind, spans = behind_with_spans(client)
        if not behind:
            return
        if oldest.name in lines and spans_then == spans:
            log.info("spool: segment %s was left by a replay whose migration did not end, and nothing was stored "
                     "since; not replayed", oldest.name)
            return
        log.info("spool: replaying segment %s into the store before migrating it (%s): a crash may have stored it",
                 oldest.name, ", ".join(behind))
        writer = Writer(connect(dsn), embedded_path(dsn))
        try:
            exporter = ClickHouseExporter(spool, writer, metrics)
            for attempt in range(_REPLAY_ATTEMPTS):
                if exporter.export(oldest):  # the mark must outlive a crash during the migration
                    write_atomic(mark, "\n".join([f"spans {stored_spans(client)}", *spool.sealed_names()]))
                    return
                if attempt + 1 < _REPLAY_ATTEMPTS and stopping is not None and stopping.wait(1.0):
                    return
        finally:
            writer.close()
    finally:
        client.close()


def migrated(spool_dir: Path) -> None:
    """The store's migration has ended: the next start may replay before migrating again."""
    (spool_dir / _REPLAYED).unlink(missing_ok=True)
