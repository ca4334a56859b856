"""``ClickHouseSpanExporter``: spans straight into a spanhouse store, no collector needed.

This module is the one part of ``spanhouse.sdk`` that needs the storage layer (and its
ClickHouse driver); the rest of the SDK depends on OpenTelemetry only.

The SDK's finished spans are encoded with the OTLP encoder that
opentelemetry-exporter-otlp ships (the same protobuf the collector receives) and
landed through the storage layer's writer, so the rows, and every view, are exactly
what the collector would have stored. ``chdb:///path`` (or ``chdb://./relative``) is an
embedded store that belongs to this process while it runs; ``http(s)://`` a ClickHouse
server.

Each export is one insert, and an insert has a fixed cost (~0.1 s): use it under a
``BatchSpanProcessor`` with large batches (``configure(dsn=...)`` sets one up). A store
that fails is retried within ``retry_timeout`` seconds, which also bounds each request
to a server; then the export returns FAILURE and logs once what to do. It never raises
into the application.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status

from spanhouse.clickhouse import IngestItem, Store, open_store
from spanhouse.clickhouse.client import embedded_path, redacted, store_dsn
from spanhouse.collector.validate import validate
from spanhouse.errors import ConfigError, InsertIncomplete, SpanhouseError, StoreUnavailable
from spanhouse.text import utf8_safe

logger = logging.getLogger("spanhouse.sdk")


class ClickHouseSpanExporter(SpanExporter):
    """An OpenTelemetry ``SpanExporter`` writing into a spanhouse store."""

    def __init__(self, dsn: str, tenant: str = "default", *, retry_timeout: float = 10.0,
                 retention_days: int | None = None) -> None:
        """The store is opened (and migrated) at the first export, so that an unreachable
        store never breaks the application's start. A relative data directory is resolved
        here, once: resolved at each opening, a ``chdir`` in between moved the store."""
        with contextlib.suppress(ConfigError):  # kept as given: every export fails, saying why
            dsn = store_dsn(dsn)
        self._dsn = dsn
        self._retention_days = retention_days
        self._store: Store | None = None
        self._tenant = tenant
        self._retry_timeout = retry_timeout
        self._lock = threading.Lock()
        self._shutdown = False
        self._failing = False
        self._dropped = 0  # spans given up in the current failing stretch

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Insert ``spans`` as one batch; FAILURE (logged) if the store stays unavailable.
        Spans the collector would reject (collector/validate.py) are dropped and logged."""

        if self._shutdown:
            return SpanExportResult.FAILURE
        request = _encoded(spans)
        # The collector's rules: a span the store cannot hold (e.g. an end time past 2262)
        # would fail the whole insert, after otel_traces took its rows and before the views did.
        verdict = validate(request)
        if verdict.rejected:
            logger.warning("spanhouse drops spans it cannot store: %s", verdict.message())
        if not verdict.accepted:
            return SpanExportResult.SUCCESS
        item = IngestItem(self._tenant, request.SerializeToString())
        # One token for the batch and all its retries: an insert that timed out on the
        # client but committed on the server is not stored twice by the next attempt.
        token = f"sdk-{uuid.uuid4().hex}"
        deadline = time.monotonic() + self._retry_timeout
        delay = 0.1
        while True:
            try:
                with self._lock:
                    if self._shutdown:  # meanwhile (configure() moved to another store): reopened, the
                        # store stayed open for good and the next one could not open beside it. Said
                        # whatever the stretch said: shutdown() may have told its total already.
                        self._dropped += len(spans)
                        logger.error("spanhouse drops %d spans for %s: the exporter was shut down while the "
                                     "store was failing", len(spans), redacted(self._dsn))
                        return SpanExportResult.FAILURE
                    if self._store is None:
                        self._store = open_store(self._dsn, retention_days=self._retention_days,
                                                 timeout=self._retry_timeout)
                    self._store.writer.write([item], token=token)
            except SpanhouseError as exc:
                if isinstance(exc, StoreUnavailable) and not isinstance(exc, InsertIncomplete):
                    # The next attempt opens the store anew: its client may be gone for
                    # good (at interpreter exit, chdb's finalizers close every engine
                    # handle, possibly before the span processor's last export). Not
                    # after an incomplete insert: its writer counts the attempts.
                    self._drop_store()
                # Only an unavailable store may come back within the retry window; the
                # store refusing the data, or a wrong DSN, will not.
                if not isinstance(exc, StoreUnavailable) or time.monotonic() + delay > deadline:
                    return self._give_up(len(spans), str(exc), unreachable=isinstance(exc, StoreUnavailable))
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except Exception as exc:  # noqa: BLE001 - the driver's own, e.g. a client closed by chdb's finalizers at exit
                self._drop_store()
                logger.debug("the store's driver raised", exc_info=True)
                return self._give_up(len(spans), f"{type(exc).__name__}: {exc}", unreachable=True)
            if self._failing:
                logger.warning("spanhouse stores spans in %s again; %d spans were dropped meanwhile",
                               redacted(self._dsn), self._dropped)
            self._failing, self._dropped = False, 0
            return SpanExportResult.SUCCESS

    def _give_up(self, spans: int, why: str, *, unreachable: bool) -> SpanExportResult:
        """Fail the export of ``spans`` spans, saying why once per failing stretch (its
        end, or the exporter's shutdown, says how many were dropped in all: a review saw
        'could not store 5 spans' and 12 more dropped without a word). The
        reachability hint only when the store could not be reached: another error (a
        schema that cannot be migrated, data the store refuses) says what to do itself."""
        self._dropped += spans
        if not self._failing:
            hint = (" Check that the store is reachable (and, for an embedded store, that no other process "
                    "holds it open)." if unreachable else "")
            logger.error("spanhouse could not store %d spans in %s and drops them: %s.%s", spans,
                         redacted(self._dsn), why, hint)
        self._failing = True
        return SpanExportResult.FAILURE

    def _drop_store(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception:  # noqa: BLE001 - it is being given up anyway
                logger.debug("closing the failed store connection raised", exc_info=True)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here: every export is written before it returns."""
        return True

    def shutdown(self) -> None:
        """Release the store (for an embedded store: the data directory)."""
        with self._lock:
            if not self._shutdown:
                self._shutdown = True
                if self._store is not None:
                    self._store.close()
                if self._failing and self._dropped:
                    logger.error("spanhouse dropped %d spans in all for %s since the store began failing",
                                 self._dropped, redacted(self._dsn))


def _encoded(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """``spans`` as one OTLP request. A span whose name, event name or status holds text
    UTF-8 cannot carry (see ``utf8_safe``) made the encoder raise, out of ``export()``,
    and the whole batch was lost: then each span is encoded alone, with that text
    repaired, and one that still fails is dropped alone, saying so."""
    try:
        return encode_spans(spans)
    except Exception:  # noqa: BLE001 - the encoder raises whatever protobuf does (UnicodeEncodeError, ValueError)
        logger.debug("spanhouse encodes the batch span by span", exc_info=True)
    kept: list[ReadableSpan] = []
    failures: list[str] = []
    for span in spans:
        try:
            repaired = _utf8_span(span)
            encode_spans([repaired])
        except Exception as exc:  # noqa: BLE001 - as above
            failures.append(f"{utf8_safe(str(span.name))!r}: {type(exc).__name__}: {exc}")
            continue
        kept.append(repaired)
    if failures:
        logger.warning("spanhouse drops %d span(s) it cannot encode, e.g. %s", len(failures), failures[0])
    return encode_spans(kept)


def _utf8_span(span: ReadableSpan) -> ReadableSpan:
    """``span`` with its name, event names and status description made UTF-8-safe: the
    text the encoder fails on rather than drops (as it drops an attribute)."""
    status = span.status
    return ReadableSpan(
        name=utf8_safe(span.name), context=span.get_span_context(), parent=span.parent, resource=span.resource,
        attributes=span.attributes, links=span.links, kind=span.kind, start_time=span.start_time,
        end_time=span.end_time, instrumentation_scope=span.instrumentation_scope,
        events=[Event(utf8_safe(e.name), e.attributes, e.timestamp) for e in span.events],
        status=Status(status.status_code, None if status.description is None else utf8_safe(status.description)))


class ParentsStore(SpanExporter):
    """What a forked child exports to when the parent configured an embedded store: one
    process only may hold it (and the child inherits the parent's engine half-way, where
    opening or closing it hangs), so the child's spans are dropped, saying so once."""

    def __init__(self, dsn: str, owner: int) -> None:
        self._dsn = dsn
        self._owner = owner
        self._told = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self._told:
            self._told = True
            logger.error("spanhouse: the embedded store %s belongs to process %d, so this forked process (%d) drops "
                         "its spans. To record forked workers, run `spanhouse serve --dsn %s` and configure() them "
                         "with its endpoint instead of dsn=.", redacted(self._dsn), self._owner, os.getpid(),
                         redacted(self._dsn))
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Nothing to release."""


def exporter_in(pid: int, dsn: str, owner: int) -> SpanExporter:
    """The exporter process ``pid`` writes ``dsn`` through, ``owner`` having configured it.
    A forked child makes its own: the parent's client (an HTTP connection pool) is not
    the child's. An embedded store stays the parent's: one process only may hold it, and
    the child inherits the parent's engine half-way."""
    if pid != owner and embedded_path(dsn) is not None:
        return ParentsStore(dsn, owner)
    return ClickHouseSpanExporter(dsn)
