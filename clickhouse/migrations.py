"""Schema migrations: numbered ``schema/NNNN_name.sql`` files applied once, in order.

Every start of the collector runs ``migrate``: files already recorded in
``spanhouse_migrations`` are skipped (so it is safe to run at every start), new ones
run statement by statement and are then recorded with their checksum, and a recorded
file whose text has changed since is refused (a schema edit must be a new file).

The same files render for a cluster (``render(sql, cluster=...)``): ``ON CLUSTER``,
``Replicated*`` engines, ``<table>_local`` storage behind a ``Distributed`` table of
the original name, and materialized views wired to the local tables.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from spanhouse.clickhouse import queries, sqlfiles
from spanhouse.errors import ConfigError, MigrationError, Stopped

log = logging.getLogger(__name__)

_SCHEMA = "schema"
_FILE_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

# Type macros used by schema files as {{NAME}}: the column type of an OTLP AnyValue,
# mirroring otlp_ingest.proto (AnyValue0 holds scalars or an array of AnyValue1).
_SCALARS = (
    "string_value Nullable(String), bool_value Nullable(Bool), int_value Nullable(Int64), "
    "double_value Nullable(Float64), bytes_value Nullable(String)"
)
_AV1 = f"Tuple({_SCALARS}, array_value Nullable(String), kvlist_value Nullable(String))"
_AV0 = f"Tuple({_SCALARS}, array_value Tuple(values Array({_AV1})), kvlist_value Nullable(String))"
MACROS = {"ANYVALUE0": _AV0}

# Distributed sharding keys; tables not listed shard by rand(). A trace stays on one
# shard so that per-trace rollups are complete where they are computed.
_SHARDING = {"otel_traces": "cityHash64(TraceId)"}


@dataclass(frozen=True)
class Migration:
    """One numbered schema file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, cluster: str | None = None) -> list[str]:
        """The file's statements, rendered for a single node or for ``cluster``."""
        return render(self.sql, cluster)


def schema_files() -> list[Migration]:
    """Every packaged schema file, in version order."""
    found = []
    for name in sqlfiles.list_dir(_SCHEMA):
        m = _FILE_RE.match(name)
        if m:
            found.append(Migration(int(m.group(1)), name, sqlfiles.read_text(f"{_SCHEMA}/{name}")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two schema files share a version number: {[m.name for m in found]}")
    return found


def render(sql: str, cluster: str | None = None) -> list[str]:
    """Expand type macros and split into statements; for ``cluster``, rewrite as above."""
    expanded = re.sub(r"\{\{(\w+)\}\}", lambda m: MACROS[m.group(1)], sql)
    statements = sqlfiles.split_statements(expanded)
    if cluster is None:
        return statements
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", cluster):
        raise ConfigError(f"cluster name {cluster!r} must be a plain identifier")
    local_tables = _merge_tree_tables()
    out: list[str] = []
    for s in statements:
        out.extend(_render_cluster(s, cluster, local_tables))
    return out


@cache
def _merge_tree_tables() -> frozenset[str]:
    """Every table any schema file creates with a *MergeTree engine: on a cluster these
    become ``<name>_local`` behind a Distributed table, wherever they are referenced."""
    return frozenset(
        m.group(1)
        for f in schema_files()
        for stmt in sqlfiles.split_statements(f.sql)
        if (m := re.search(r"CREATE TABLE IF NOT EXISTS (\w+)\b.*ENGINE\s*=\s*\w*MergeTree", stmt, re.S))
    )


def _render_cluster(stmt: str, cluster: str, local_tables: set[str]) -> list[str]:
    on = f"ON CLUSTER {cluster}"
    head = re.search(r"CREATE (?:(TABLE|MATERIALIZED VIEW|VIEW|FUNCTION) IF NOT EXISTS|OR REPLACE (FUNCTION|VIEW)) "
                     r"(\w+)", stmt)
    if head is None:
        return _render_cluster_alter(stmt, on, local_tables)
    kind, name = head.group(1) or head.group(2), head.group(3)
    if kind == "TABLE" and name in local_tables:
        body = stmt.replace(head.group(0), f"CREATE TABLE IF NOT EXISTS {name}_local {on}", 1)
        body = re.sub(
            r"ENGINE\s*=\s*(\w*)MergeTree(?:\(([^)]*)\))?",
            lambda m: "ENGINE = Replicated{}MergeTree('/clickhouse/tables/{{shard}}/{{database}}/{{table}}', "
            "'{{replica}}'{})".format(m.group(1), f", {m.group(2)}" if m.group(2) else ""),
            body,
            count=1,
        )
        dist = (
            f"CREATE TABLE IF NOT EXISTS {name} {on} AS {name}_local\n"
            f"ENGINE = Distributed({cluster}, currentDatabase(), {name}_local, {_SHARDING.get(name, 'rand()')})"
        )
        return [body, dist]
    renamed = stmt.replace(head.group(0), f"{head.group(0)} {on}", 1)
    return [_view_on_shard(renamed, local_tables) if kind == "MATERIALIZED VIEW" else renamed]


def _view_on_shard(stmt: str, local_tables: set[str]) -> str:
    """A materialized view fed by a local table reads and writes the shard's local
    tables; one fed by a Null (ingest) table keeps writing to the Distributed table,
    which shards."""
    source = re.search(r"\bFROM (\w+)", stmt)
    if source is None or source.group(1) not in local_tables:
        return stmt
    for table in local_tables:
        stmt = re.sub(rf"\b(FROM|TO) {table}\b", rf"\1 {table}_local", stmt)
    return stmt


def _render_cluster_alter(stmt: str, on: str, local_tables: set[str]) -> list[str]:
    """``ALTER TABLE t`` or ``TRUNCATE TABLE t`` on the cluster. A local table's storage
    changes on ``t_local``, and a change of its columns also on the Distributed ``t`` in
    front of it, which keeps a column list of its own. A view's new query (MODIFY QUERY)
    is wired as its CREATE was."""
    name = re.search(r"\b(?:ALTER|TRUNCATE) TABLE (?:IF EXISTS )?(\w+)", stmt)
    if name is None:
        return [stmt]
    table = name.group(1)
    if table not in local_tables:
        altered = stmt.replace(name.group(0), f"{name.group(0)} {on}", 1)
        return [_view_on_shard(altered, local_tables) if re.search(r"\bMODIFY QUERY\b", stmt) else altered]
    local = stmt.replace(name.group(0), f"{name.group(0)}_local {on}", 1)
    if re.search(r"\b(ADD|DROP|MODIFY|RENAME) COLUMN\b", stmt):
        return [local, stmt.replace(name.group(0), f"{name.group(0)} {on}", 1)]
    return [local]


def applied(client: Client) -> dict[int, tuple[str, str]]:
    """Recorded migrations: version -> (file name, checksum)."""
    rows = client.query(sqlfiles.query("migrations_applied")).result_rows
    return {int(v): (name, checksum) for v, name, checksum in rows}


_INGEST_TABLE_VERSION = 2
"""The migration that creates ``otlp_ingest``, the table the writer inserts into."""


def behind_with_spans(client: Client) -> tuple[list[str], int]:
    """The schema files a store has not applied yet, and the spans it holds; no files
    when it holds none (a store without the writer's tables, or without a span, has
    stored no spool segment). The bookkeeping table is created first, as ``migrate``
    does (idempotent)."""
    known = schema_files()
    _run(client, known[0], None)
    done = applied(client)
    if _INGEST_TABLE_VERSION not in done:
        return [], 0
    spans = stored_spans(client)
    return ([m.name for m in known if m.version not in done] if spans else []), spans


def stored_spans(client: Client) -> int:
    """The spans in ``otel_traces``, of every tenant (from the parts' row counts)."""
    return int(client.query(sqlfiles.query("store_span_count")).result_rows[0][0])


LOCK_WAIT_S = 600.0
"""How long a migrator waits for another one: the backfills of a large store take minutes."""


def migrate(client: Client, cluster: str | None = None, *, exclusive: bool = False,
            lock_wait_s: float = LOCK_WAIT_S, stopping: threading.Event | None = None) -> list[str]:
    """Bring the schema up to date; return the names of the files applied now.

    One migrator at a time (``migration_lock_take.sql``): another one waits up to
    ``lock_wait_s`` for it, or until ``stopping`` is set (a collector told to stop while
    it starts: ``Stopped``). ``exclusive``: no other process can reach this store (the
    embedded engine); migrators in this process take turns, so a lock found then was
    left by a killed run and is dropped rather than waited for.

    Raises ``MigrationError`` if an applied file was changed, the lock stays held, or a
    statement fails (the message names the file and statement; fix it and run again:
    statements are idempotent, and a file is recorded only once all of it ran).
    """
    known = schema_files()
    _run(client, known[0], cluster)  # the bookkeeping table itself (idempotent DDL)
    with _migration_lock(client, exclusive, lock_wait_s, stopping):
        done = applied(client)  # read under the lock: what a migrator before us applied counts
        ran: list[str] = []
        for m in known:
            if m.version in done:
                name, checksum = done[m.version]
                if checksum != m.checksum:
                    raise MigrationError(
                        f"schema file {m.name} was changed after it was applied (as {name}); "
                        "schema changes must go into a new numbered file. Restore the file's "
                        "original text and add the change as the next NNNN_*.sql"
                    )
                continue
            _run(client, m, cluster)
            client.insert("spanhouse_migrations", [[m.version, m.name, m.checksum]],
                          column_names=["version", "name", "checksum"])
            ran.append(m.name)
    return ran


_IN_THIS_PROCESS = threading.Lock()
"""Held by every migrator of this process while it holds the store's lock: one process
may open one embedded store more than once (the SDK's exporter and the application)."""


@contextmanager
def _migration_lock(client: Client, exclusive: bool, wait_s: float,
                    stopping: threading.Event | None) -> Iterator[None]:
    with _IN_THIS_PROCESS:
        if exclusive:
            client.command(sqlfiles.query("migration_lock_release"))
        with _store_lock(client, wait_s, stopping or threading.Event()):
            yield


@contextmanager
def _store_lock(client: Client, wait_s: float, stopping: threading.Event) -> Iterator[None]:
    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        try:
            client.command(sqlfiles.query("migration_lock_take"))
            break
        except DatabaseError as exc:
            if "TABLE_ALREADY_EXISTS" not in str(exc):
                raise
        if not waited:  # else a start waiting here looks hung
            log.warning("another migrator holds the lock on the store's schema (table spanhouse_migration_lock); "
                        "waiting up to %.0f s for it", wait_s)
            waited = True
        if time.monotonic() >= deadline:
            held = queries.rows(client, "migration_lock_held", {})
            since = f" since {held[0]['since']}" if held else ""
            raise MigrationError(
                f"another migrator has held the migration lock{since} (table spanhouse_migration_lock) for over "
                f"{wait_s:.0f} s. If none is running (one was killed), DROP TABLE spanhouse_migration_lock and "
                "start again")
        if stopping.wait(0.5):  # a signal would otherwise wait out the whole lock_wait_s
            raise Stopped("stopped while waiting for another migrator's lock on the store (table "
                          "spanhouse_migration_lock); nothing was changed")
    try:
        yield
    finally:
        client.command(sqlfiles.query("migration_lock_release"))


MAX_RETENTION_DAYS = 10_000
"""About 27 years. The TTLs add days to DateTime values, which end in 2106 and wrap
around past it: 36,500 days from 2026 is 1989, a TTL that deletes everything at once."""


def retention(days: int) -> Migration:
    """The statements setting every table's TTL to ``days`` (``schema/retention.sql``);
    ``ConfigError`` for a number of days out of range."""
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_RETENTION_DAYS:
        raise ConfigError(f"retention must be a whole number of days from 1 to {MAX_RETENTION_DAYS}, not {days!r}; "
                          "to keep everything, leave it unset")
    return Migration(0, "retention.sql", sqlfiles.read_text(f"{_SCHEMA}/retention.sql").replace("{days}", str(days)))


def apply_retention(client: Client, days: int, cluster: str | None = None) -> None:
    """Set every table's TTL to ``days``; parts older are dropped."""
    _run(client, retention(days), cluster)


def remove_retention(client: Client) -> list[str]:
    """Drop the TTL that an earlier retention left on a table (retention unset now means
    keep everything); the tables changed. Single node: on a cluster, retention is
    managed with ``spanhouse migrate --cluster``."""
    tables = re.findall(r"^ALTER TABLE (\w+) MODIFY TTL", sqlfiles.read_text(f"{_SCHEMA}/retention.sql"), re.M)
    with_ttl = [r["name"] for r in queries.rows(client, "tables_with_ttl", {"tables": tables})]
    for name in with_ttl:
        client.command(queries.render("remove_ttl"), parameters={"table": name})
    return with_ttl


def _run(client: Client, m: Migration, cluster: str | None) -> None:
    for stmt in m.statements(cluster):
        try:
            client.command(stmt)
        except Exception as exc:
            code = [line for line in stmt.splitlines() if line.strip() and not line.strip().startswith("--")]
            raise MigrationError(f"schema file {m.name} failed at `{code[0][:120]}…`: {exc}") from exc
