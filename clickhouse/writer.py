"""The write path: batches of OTLP trace requests -> ``otel_traces``, one insert per batch.

Fast path: ClickHouse parses the protobuf itself (format ``Protobuf`` with
``otlp_ingest.proto``) into the Null table ``otlp_ingest``, whose materialized view
flattens and renders every span in SQL: no Python runs per span. Each request is
framed as one length-delimited ``SpanhouseIngestItem``: the request's bytes followed by
the tenant as field 536870911, which protobuf's concatenation rule merges into the
same message, so one insert can carry requests of many tenants.

Exact path: when the SQL cannot render a batch exactly (see 0002_otlp_ingest.sql) the
view raises ``SPANHOUSE_EXACT_PATH`` before anything is written, and the batch is
decoded in Python (``otlp_rows``) and inserted as exporter-format rows instead. So is a
batch the engine's protobuf reader refuses (it is stricter than protobuf's own), also
before anything is written.

A batch's ``insert_deduplication_token`` makes a retry on the same path a no-op for
every table that already holds it, so retrying after a crash or a timeout never
duplicates rows. The two paths' tables see different tokens, though (the fast path's
views derive theirs): a fast-path failure that may have come after some tables were
written is retried on the fast path, never sent down the exact one.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from spanhouse.clickhouse import history, otlp_rows
from spanhouse.errors import InsertIncomplete, InvalidData, StoreUnavailable, WriteError

log = logging.getLogger(__name__)

_PROTO = "otlp_ingest.proto"
_MESSAGE = "SpanhouseIngestItem"
_TENANT_FIELD = 536870911
_EXACT_MARKER = "SPANHOUSE_EXACT_PATH"
# Server errors that are about the store, not the batch: the same batch is retried later
# and stays in the spool meanwhile (everything else is about the data and takes the exact
# path, then quarantine). A store that is full, misconfigured or missing its tables keeps
# what it acknowledged until someone fixes it.
_TRANSIENT_CODES = frozenset({
    60, 81,  # UNKNOWN_TABLE, UNKNOWN_DATABASE: the schema is gone (a reset server)
    159, 160, 209, 210, 1000,  # TIMEOUT_EXCEEDED, TOO_SLOW, SOCKET_TIMEOUT, NETWORK_ERROR, POCO_EXCEPTION
    164, 242,  # READONLY, TABLE_IS_READ_ONLY
    173, 241,  # CANNOT_ALLOCATE_MEMORY, MEMORY_LIMIT_EXCEEDED
    192, 193, 194, 195, 497, 516,  # unknown user, wrong/required password, IP not allowed, ACCESS_DENIED, AUTH
    202, 252, 439,  # TOO_MANY_SIMULTANEOUS_QUERIES, TOO_MANY_PARTS, CANNOT_SCHEDULE_TASK
    236, 394,  # ABORTED, QUERY_WAS_CANCELLED
    243,  # NOT_ENOUGH_SPACE
    74, 75, 76, 77, 24,  # CANNOT_READ/WRITE_FROM/TO_FILE_DESCRIPTOR, CANNOT_OPEN/CLOSE_FILE, CANNOT_WRITE_TO_OSTREAM:
    # the disk, possibly after some views were written, so never the exact path (a second
    # insert under other tokens would duplicate those); the same batch is retried instead
    285, 319, 999,  # TOO_FEW_LIVE_REPLICAS, UNKNOWN_STATUS_OF_INSERT, KEEPER_EXCEPTION
    225, 279,  # NO_ZOOKEEPER, ALL_CONNECTION_TRIES_FAILED
    425,  # SYSTEM_ERROR
})
_CODE = re.compile(r"Code: (\d+)\.")
_READER = "ProtobufRowInputFormat"
"""Named in the errors of the engine's protobuf reader, which fail before any table is written."""
_FAST_PATH_ATTEMPTS = 8
"""How often a batch is tried on the fast path when it fails there for no known reason
before it is refused (over about 25 s with the collector's exporter's backoff): some
tables may hold it already, so only the same path's tokens can complete it without
duplicates."""


@dataclass(frozen=True)
class IngestItem:
    """One OTLP ``ExportTraceServiceRequest`` (serialized) and the tenant it belongs to."""

    tenant: str
    payload: bytes


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_TENANT_TAG = _varint((_TENANT_FIELD << 3) | 2)


def frame(items: Sequence[IngestItem]) -> bytes:
    """The ``Protobuf``-format input for ``items``: length-delimited ingest messages."""
    parts: list[bytes] = []
    for item in items:
        tenant = item.tenant.encode()
        suffix = _TENANT_TAG + _varint(len(tenant)) + tenant
        parts += (_varint(len(item.payload) + len(suffix)), item.payload, suffix)
    return b"".join(parts)


class Writer:
    """Lands batches of OTLP requests in ``otel_traces`` (and so in every view).

    Thread-safe: ``write`` calls take turns on the writer's client (``close`` closes it).
    ``paused`` holds them off: deletion rebuilds the rollups of the hours it touched
    inside it, so no insert lands between a rollup's rows being cleared and recomputed
    from their source (the view's rows and the recomputed ones would both count it).
    ``embedded_dir`` is the data directory of an embedded (chdb) store; the engine then
    reads the protobuf schema from a file kept there, so nothing is written to the
    process's working directory. For a server the schema travels as text with the query.

    With the embedded engine the insert runs in this process, and its allocator
    (jemalloc) keeps the pages an insert freed for about five seconds, per CPU arena:
    under a steady stream of inserts that held several hundred MB on top of the insert
    actually running. After each insert the writer hands them back to the OS
    (``SYSTEM JEMALLOC PURGE``), so the process's memory is what it uses, not what it
    used a few seconds ago. A server's memory is its own business: nothing is purged there.
    """

    def __init__(self, client: Client, embedded_dir: Path | None = None) -> None:
        self._client = client
        self._exact_batches = 0
        self._gate = threading.Lock()  # held for each insert, and by ``paused``
        self._inserting = threading.Lock()  # held for each insert only (see ``clock_between_inserts``)
        self._failing: tuple[str | None, int] = (None, 0)  # a token that failed unexplained, and how often
        self._purge = embedded_dir is not None
        source = resources.files("spanhouse.clickhouse").joinpath(_PROTO)
        if embedded_dir is not None:
            target = embedded_dir / "format_schemas" / _PROTO
            target.parent.mkdir(parents=True, exist_ok=True)
            with resources.as_file(source) as src:
                shutil.copyfile(src, target)
            self._schema_settings = {"format_schema": f"{target}:{_MESSAGE}"}
        else:
            self._schema_settings = {
                "format_schema_source": "string",
                "format_schema": source.read_text(encoding="utf-8"),
                "format_schema_message_name": _MESSAGE,
            }

    def close(self) -> None:
        """Close the client: the store gives its writer a connection of its own. A clock
        read under way (``clock_between_inserts``, from another thread) ends first: the
        embedded engine closed under a running query can crash the process."""
        with self._inserting:
            self._client.close()

    @property
    def exact_batches(self) -> int:
        """How many batches took the exact (Python) path so far."""
        return self._exact_batches

    def write(self, items: Sequence[IngestItem], token: str | None = None) -> None:
        """Insert ``items`` as one batch; ``token`` makes a retry of the same batch a no-op.

        Raises ``InvalidData`` if a request cannot be decoded, ``StoreUnavailable`` if
        the store is unreachable or fails in a way a retry may fix, ``WriteError`` if
        the store rejects the data itself.
        """
        if not items:
            return
        # A batch may hold spans of any number of days (a backfill; one request's spans
        # can be years apart): past the engine's default limit of 100 partitions per
        # insert it refused the batch with the code of TOO_MANY_PARTS, a transient error,
        # so the batch was retried forever and the spool behind it stopped draining.
        settings: dict[str, object] = {"max_partitions_per_insert_block": 0}
        if token:
            # Every table below carries a deduplication window; the token reaches the
            # views' inserts too, so a replayed batch changes no count anywhere.
            settings |= {"insert_deduplication_token": token, "deduplicate_blocks_in_dependent_materialized_views": 1}
        else:  # no retry to recognise: a block equal to an earlier one (a trace deleted, then sent
            # again) is new data, in the views' tables too (which compare blocks by default)
            settings |= {"insert_deduplicate": 0, "deduplicate_blocks_in_dependent_materialized_views": 0}
        with self._gate, self._inserting:
            try:
                self._insert(items, settings, token)
            finally:
                self._release_memory()  # on this writer's connection, which no one else uses meanwhile

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No batch is inserted while the block runs; an insert under way finishes first."""
        with self._gate:
            yield

    def clock_between_inserts(self) -> datetime:
        """The store's clock, read on this writer's connection while none of its inserts
        runs (an insert under way finishes first): every row an insert stamped before it
        (``executions.InsertedAt``, taken when the insert starts) is visible by then.
        The live stream's watermark. Neither ``paused``, which waits through a deletion's
        chunks (no insert runs then either), nor a reader of the pool, which would be
        held while an insert ends and keep the API's reads waiting for it."""
        with self._inserting:
            try:
                return history.feed_watermark(self._client)
            except ClickHouseError as exc:  # closed (the collector stopping) or unreachable
                raise StoreUnavailable(f"the store's clock could not be read: {str(exc)[:200]}") from exc

    def _insert(self, items: Sequence[IngestItem], settings: dict[str, object], token: str | None) -> None:
        try:
            self._client.raw_insert(
                "otlp_ingest", insert_block=frame(items), fmt="Protobuf",
                settings={**self._schema_settings, **settings},
            )
        except ClickHouseError as exc:
            text = str(exc)
            if _transient(exc):
                raise StoreUnavailable(f"ClickHouse insert failed; it will be retried: {text[:500]}") from exc
            if _EXACT_MARKER in text:
                log.debug("batch takes the exact path: %s", text.split(_EXACT_MARKER, 1)[1][:120])
            elif _READER in text:
                log.warning("ClickHouse's protobuf reader refused a batch; taking the exact path: %s", text[:300])
            else:
                raise self._unexplained(token, text) from exc
            self._write_exact(items, settings)
        self._failing = (None, 0)

    def _unexplained(self, token: str | None, text: str) -> InsertIncomplete | WriteError:
        """The error for a fast-path failure of no known cause: retry the batch (on the
        same path, where its token completes it exactly) up to ``_FAST_PATH_ATTEMPTS``
        times, then refuse it (the spool quarantines it) rather than stall the spool."""
        failed, attempts = self._failing
        attempts = attempts + 1 if token and token == failed else 1
        self._failing = (token, attempts)
        if not token:
            return WriteError(f"ClickHouse insert failed, and a batch without a deduplication token cannot be "
                              f"retried without duplicates: {text[:500]}")
        if attempts < _FAST_PATH_ATTEMPTS:
            return InsertIncomplete(f"ClickHouse insert failed for no known reason (attempt {attempts} of "
                                    f"{_FAST_PATH_ATTEMPTS}): {text[:500]}")
        return WriteError(f"ClickHouse insert failed {attempts} times in a row; the batch is refused: {text[:500]}")

    def _release_memory(self) -> None:
        """Return the pages the insert freed to the OS (embedded engine only; see the class)."""
        if not self._purge:
            return
        try:
            self._client.command("SYSTEM JEMALLOC PURGE")
        except ClickHouseError as exc:
            if not _transient(exc):  # an engine built without jemalloc: nothing to purge, ever
                self._purge = False
            log.info("the embedded engine's freed memory was not purged: %s", str(exc)[:200])

    def _write_exact(self, items: Sequence[IngestItem], settings: dict[str, object]) -> None:
        rows: list[list[object]] = []
        for item in items:
            try:
                request = ExportTraceServiceRequest.FromString(item.payload)
            except DecodeError as exc:
                raise InvalidData(f"an OTLP request of tenant {item.tenant!r} cannot be decoded: {exc}") from exc
            rows += [[*r, item.tenant] for r in otlp_rows.rows(request)]
        try:
            self._client.insert("otel_traces", rows, column_names=[*otlp_rows.COLUMNS, "Tenant"],
                                settings=settings)
        except ClickHouseError as exc:
            if _transient(exc):
                raise StoreUnavailable(f"ClickHouse insert failed; it will be retried: {str(exc)[:500]}") from exc
            raise WriteError(f"ClickHouse rejected the batch's data: {str(exc)[:500]}") from exc
        self._exact_batches += 1  # under the gate


def _transient(exc: ClickHouseError) -> bool:
    """A failure that retrying the same batch later may fix (connection, load, limits)."""
    if isinstance(exc, OperationalError):
        return True
    code = _CODE.search(str(exc))
    return code is None or int(code.group(1)) in _TRANSIENT_CODES
