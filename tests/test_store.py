"""Connecting, migrating (single node and cluster rendering), retention, the CLI."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from spanhouse.clickhouse import IngestItem, Store, connect, embedded_path, migrate, queries, resolve_dsn, sqlfiles
from spanhouse.clickhouse.client import store_identity
from spanhouse.clickhouse import migrations as migrate_module
from spanhouse.clickhouse.deletion import delete_traces
from spanhouse.clickhouse.sqlfiles import split_statements
from spanhouse.collector import cli
from spanhouse.errors import ConfigError, MigrationError, StoreUnavailable
from tests.collector_harness import ServeProcess, count_in_store, in_child, on_a_store_of_its_own
from tests.conftest import write
from tests.otlp import request, span, trace_id


def test_embedded_paths_resolve_absolute_and_relative(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert embedded_path("chdb:///var/data") == Path("/var/data")
    assert embedded_path("chdb://./rel/dir") == tmp_path / "rel" / "dir"
    assert embedded_path("chdb://rel") == tmp_path / "rel"
    assert embedded_path("chdb://backup:old") == tmp_path / "backup:old"  # a path, not a host and port
    assert embedded_path("http://localhost:8123/db") is None
    # a store as clickhouse-connect reaches it, however its DSN spells it (a spool records it)
    assert store_identity("chdb://./rel/dir") == f"chdb://{tmp_path / 'rel' / 'dir'}"
    assert {store_identity(d) for d in ("http://ch.example:8123/spans", "http://CH.example/spans/",
                                        "clickhouse://u:pw@ch.example:8123/spans", "http://ch.example/%73pans/x")
            } == {"http://ch.example:8123/spans"}
    assert store_identity("https://ch.example:8443") == "https://ch.example:8443/default"
    for root in ("chdb://", "chdb:///", "chdb:////", "chdb:///.."):  # the root directory is no data directory
        with pytest.raises(ConfigError, match="names no data directory"):
            embedded_path(root)


def test_dsn_comes_from_argument_then_env_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPANHOUSE_CLICKHOUSE_DSN", raising=False)
    assert resolve_dsn() == "chdb://./spanhouse-data"
    monkeypatch.setenv("SPANHOUSE_CLICKHOUSE_DSN", "http://h:8123/x")
    assert resolve_dsn() == "http://h:8123/x"
    assert resolve_dsn("chdb:///a") == "chdb:///a"


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unsupported DSN scheme 'postgres'"):
        connect("postgres://x")


def test_unreachable_server_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match="is the server running"):
        connect("http://127.0.0.1:1/default")
    with pytest.raises(StoreUnavailable, match="is the server running"):  # an endless bound was an OverflowError
        connect("http://127.0.0.1:1/default", timeout=float("inf"))


def test_second_embedded_store_in_one_process_is_refused_with_advice(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="one embedded store at a time"):
        connect(f"chdb://{tmp_path}")


def test_unwritable_data_directory_is_told_as_such(tmp_path: Path) -> None:
    """The engine reports a data directory it may not write as a bare BAD_ARGUMENTS; the
    error says the directory is not writable, not that another process holds it."""
    data = tmp_path / "data"
    data.mkdir()
    script = ("import sys\nfrom spanhouse.clickhouse import connect\nfrom spanhouse.errors import StoreUnavailable\n"
              "try:\n    connect(sys.argv[1])\nexcept StoreUnavailable as exc:\n    print(exc)\n")
    with _unwritable(data):
        out = in_child(script, data)
    assert len(out) == 1 and f"cannot write to the data directory {data}" in out[0], out
    assert "another process" not in out[0] and "one embedded store" not in out[0]


def test_a_data_directory_that_cannot_be_created_is_told_as_such_at_once(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Its creation raised a bare FileNotFoundError or NotADirectoryError, which the SDK's
    exporter told as a store held by another process; then, as StoreUnavailable, it was
    retried for its 10 s at every export. A setting to change, not an outage."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    from spanhouse.sdk.clickhouse_exporter import ClickHouseSpanExporter
    from tests.test_clickhouse_exporter import _agent_spans

    (tmp_path / "a-file").write_text("")
    dsn = f"chdb://{tmp_path / 'a-file' / 'store'}"
    with pytest.raises(ConfigError, match="cannot create the data directory .*a-file/store"):
        connect(dsn)
    started = time.monotonic()
    assert ClickHouseSpanExporter(dsn).export(_agent_spans()) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 2
    assert "cannot create the data directory" in caplog.text and "holds it open" not in caplog.text


@contextmanager
def _unwritable(directory: Path) -> Iterator[None]:
    """``directory`` made unwritable for this user: by its mode, or for root (whom modes do
    not stop) by the immutable attribute."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode != 0:
        pytest.skip("running as root where `chattr +i` is refused: no way to make a directory unwritable")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)

def test_migrations_are_idempotent(store: Store) -> None:
    assert migrate(store.client) == []
    applied = migrate_module.applied(store.client)
    assert sorted(applied) == [m.version for m in migrate_module.schema_files()]


def test_an_applied_file_that_changed_is_refused(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    real = migrate_module.schema_files()
    edited = [dataclasses.replace(m, sql=m.sql + "\n-- edited") if m.version == 1 else m for m in real]
    monkeypatch.setattr(migrate_module, "schema_files", lambda: edited)
    with pytest.raises(MigrationError, match="0001_otel_traces.sql was changed after it was applied"):
        migrate(store.client)


def test_migration_files_are_numbered_and_unique() -> None:
    names = [m.name for m in migrate_module.schema_files()]
    assert names == sorted(names) and names[0] == "0000_migrations.sql"
    assert len({m.version for m in migrate_module.schema_files()}) == len(names)


def _cluster_statements() -> list[str]:
    return [s for m in migrate_module.schema_files() for s in m.statements("prod")]


def test_cluster_rendering_parses_and_is_cluster_shaped(store: Store) -> None:
    statements = _cluster_statements()
    for stmt in statements:
        formatted = store.client.command("SELECT formatQuery({q:String})", parameters={"q": stmt})
        assert formatted, stmt
        if re.match(r"\s*(--.*\n\s*)*CREATE", stmt):
            assert "ON CLUSTER prod" in stmt, stmt
    ddl = "\n".join(statements)
    assert "CREATE TABLE IF NOT EXISTS otel_traces_local ON CLUSTER prod" in ddl
    assert "ENGINE = Distributed(prod, currentDatabase(), otel_traces_local, cityHash64(TraceId))" in ddl
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', Version)" in ddl
    assert not re.search(r"ENGINE = (?!Replicated|Distributed|Null)\w*MergeTree", ddl)
    # views fed by a local table stay on the shard; the ingest view writes through Distributed
    assert re.search(r"tool_calls_mv ON CLUSTER prod TO tool_calls_local AS.*FROM otel_traces_local", ddl, re.S)
    assert re.search(r"otlp_ingest_mv ON CLUSTER prod TO otel_traces AS", ddl)
    # a column change goes to the shard's table and to the Distributed table in front of
    # it; a view's new query reads the shard's table, as its CREATE did
    for table in ("feedback_local", "feedback"):
        assert f"ALTER TABLE {table} ON CLUSTER prod MODIFY COLUMN Value Nullable(Float64)" in ddl
    assert re.search(r"ALTER TABLE feedback_mv ON CLUSTER prod MODIFY QUERY\n.*\nFROM otel_traces_local\n", ddl, re.S)
    # emptying a table empties every shard's
    assert re.search(r"^TRUNCATE TABLE IF EXISTS tool_stats_1d_local ON CLUSTER prod$", ddl, re.M)


def test_migration_0010_counts_the_tool_calls_stored_before_it_once(tmp_path: Path) -> None:
    """A store that has tool calls when migration 0010 arrives gets them counted in
    execution_tool_calls; running the file again (as after a failure before it was
    recorded) counts nothing twice. In a child process: one embedded store per process."""
    script = (
        "import sys\n"
        "from spanhouse.clickhouse import open_store, migrate\n"
        "s = open_store(sys.argv[1]); c = s.client\n"
        "c.command(\"INSERT INTO tool_calls (Tenant, Timestamp, TraceId, ToolName) VALUES "
        "('t', now64(9), 'a', 'search'), ('t', now64(9), 'a', 'search'), ('t', now64(9), 'a', 'fetch'), "
        "('u', now64(9), 'a', 'search'), ('t', now64(9), 'b', 'search')\")\n"
        "c.command('DROP VIEW execution_tool_calls_mv'); c.command('DROP TABLE execution_tool_calls')\n"
        "q = 'SELECT Tenant, TraceId, ToolName, sum(Calls) FROM execution_tool_calls GROUP BY ALL ORDER BY ALL'\n"
        "for _ in range(2):\n"
        "    c.command('DELETE FROM spanhouse_migrations WHERE version = 10')\n"
        "    print(migrate(c), c.query(q).result_rows)\n"
        "c.command(\"INSERT INTO tool_calls (Tenant, Timestamp, TraceId, ToolName) VALUES ('t', now64(9), 'b', 'search')\")\n"
        "print(c.query(q).result_rows)\n"
        "s.close()\n"
    )
    counted = [("t", "a", "fetch", 1), ("t", "a", "search", 2), ("t", "b", "search", 1), ("u", "a", "search", 1)]
    assert in_child(script, tmp_path) == [
        f"['0010_execution_tool_calls.sql'] {counted}",
        f"['0010_execution_tool_calls.sql'] {counted}",
        str([*counted[:2], ("t", "b", "search", 2), counted[3]]),  # and the view counts what comes after
    ]


_TOOL_CALLS_OVER_TWO_DAYS = (
    "import sys\n"
    "from spanhouse.clickhouse import open_store, migrate\n"
    "s = open_store(sys.argv[1]); c = s.client\n"
    "def at(t): return f\"toDateTime64('2026-01-0{t}:00:00', 9, 'UTC')\"\n"
    "c.command(f\"INSERT INTO tool_calls (Tenant, Timestamp, TraceId, ToolName, DurationNs, IsError) VALUES \"\n"
    "          f\"('t', {at('1 10')}, 'a', 'search', 10, 0), ('t', {at('1 22')}, 'a', 'search', 30, 1), \"\n"
    "          f\"('t', {at('2 02')}, 'b', 'search', 20, 0), ('u', {at('1 10')}, 'c', 'fetch', 5, 0)\")\n"
    "def days(t):\n"
    "    return c.query(f\"SELECT Tenant, toString(toStartOfDay(Time, 'UTC')), ToolName, sum(Calls), sum(Errors), \"\n"
    "                   f'sum(DurationSumNs), max(DurationMaxNs) FROM {t} GROUP BY ALL ORDER BY ALL').result_rows\n"
)
"""A child's script start: four tool calls over two UTC days, and ``days(table)`` reads a
leaderboard rollup per tenant, day and tool."""

_TWO_DAYS_ROLLED = [("t", "2026-01-01 00:00:00", "search", 2, 1, 40, 30),
                    ("t", "2026-01-02 00:00:00", "search", 1, 0, 20, 20),
                    ("u", "2026-01-01 00:00:00", "fetch", 1, 0, 5, 5)]
"""What ``days`` reads for those calls."""


def test_migration_0011_rolls_up_what_was_stored_before_it_once(tmp_path: Path) -> None:
    """The hours of tool_stats_1h stored before migration 0011 reach tool_stats_1d (per
    UTC day) and tool_stats_1h_by_time, once however often the file runs; their views
    add what comes later."""
    script = _TOOL_CALLS_OVER_TWO_DAYS + (
        "for t in ('tool_stats_1d', 'tool_stats_1h_by_time'):\n"
        "    c.command(f'DROP VIEW {t}_mv'); c.command(f'DROP TABLE {t}')\n"
        "for _ in range(2):\n"
        "    c.command('DELETE FROM spanhouse_migrations WHERE version = 11')\n"
        "    print(migrate(c), days('tool_stats_1d'), days('tool_stats_1h_by_time'))\n"
        "c.command(f\"INSERT INTO tool_calls (Tenant, Timestamp, TraceId, ToolName, DurationNs) VALUES \"\n"
        "          f\"('t', {at('2 05')}, 'd', 'search', 40)\")\n"
        "print(days('tool_stats_1d'), days('tool_stats_1h_by_time'))\n"
        "s.close()\n"
    )
    rolled = _TWO_DAYS_ROLLED
    later = [rolled[0], ("t", "2026-01-02 00:00:00", "search", 2, 0, 60, 40), rolled[2]]
    assert in_child(script, tmp_path) == [f"['0011_tool_leaderboard_rollups.sql'] {rolled} {rolled}"] * 2 + [
        f"{later} {later}"]


def test_migration_0016_rebuilds_tool_rollups_on_utc_hours(tmp_path: Path) -> None:
    """Before 0016, tool_stats_1h took the engine's hours (in Asia/Kolkata from :30 UTC;
    emulated by inserting such rows), and a run of 0011 stopped partway left
    tool_stats_1h_by_time and tool_stats_1d short (emulated by deleting rows of both).
    0016 rebuilds all three from tool_stats_1m on UTC hours, the same however often it
    runs (after a stop of its own before it was recorded)."""
    script = _TOOL_CALLS_OVER_TWO_DAYS + (
        "c.command('INSERT INTO tool_stats_1h (Tenant, ServiceName, ToolName, Hour, Calls) '\n"
        "          'SELECT Tenant, ServiceName, ToolName, toStartOfHour(Minute), Calls FROM tool_stats_1m')\n"
        "c.command(\"DELETE FROM tool_stats_1d WHERE Tenant = 't'\")\n"
        "c.command(\"DELETE FROM tool_stats_1h_by_time WHERE Tenant = 'u'\")\n"
        "def hours():\n"
        "    return c.query(\"SELECT toString(Hour, 'UTC'), sum(Calls) FROM tool_stats_1h GROUP BY ALL ORDER BY ALL\")"
        ".result_rows\n"
        "print(hours())\n"
        "for _ in range(2):\n"
        "    c.command('DELETE FROM spanhouse_migrations WHERE version = 16')\n"
        "    print(migrate(c), days('tool_stats_1d'), days('tool_stats_1h_by_time'), hours())\n"
        "s.close()\n"
    )
    rolled = _TWO_DAYS_ROLLED
    utc = [("2026-01-01 10:00:00", 2), ("2026-01-01 22:00:00", 1), ("2026-01-02 02:00:00", 1)]
    kolkata = [("2026-01-01 09:30:00", 2), ("2026-01-01 21:30:00", 1), ("2026-01-02 01:30:00", 1)]
    assert in_child(script, tmp_path, tz="Asia/Kolkata") == [str(sorted(utc + kolkata))] + [
        f"['0016_tool_rollups_on_utc_hours.sql'] {rolled} {rolled} {utc}"] * 2


def test_migration_0018_resets_a_rollup_cost_that_is_no_number(tmp_path: Path) -> None:
    """Rollup rows stored with a NaN, infinite, negative or huge (1e308: sums overflow)
    cost before 0018 read null for good: the
    migration makes their cost 0 (an unknown one), keeps their other figures and every
    finite cost, and waits for its mutation, so the collector serves the repaired sums."""
    script = (
        "import sys\n"
        "from spanhouse.clickhouse import open_store, migrate\n"
        "s = open_store(sys.argv[1]); c = s.client\n"
        "c.command(\"INSERT INTO execution_rollup (Tenant, TraceId, Spans, CostUsd) VALUES \"\n"
        "          \"('t', 'a', 3, nan), ('t', 'b', 2, inf), ('t', 'c', 1, 0.5), ('t', 'd', 1, 1e308), \"\n"
        "          \"('t', 'e', 1, -2)\")\n"
        "c.command('DELETE FROM spanhouse_migrations WHERE version = 18')\n"
        "print(migrate(c))\n"
        "print(c.query('SELECT TraceId, sum(Spans), sum(CostUsd) FROM execution_rollup GROUP BY TraceId '\n"
        "              'ORDER BY TraceId').result_rows)\n"
        "s.close()\n"
    )
    assert in_child(script, tmp_path) == ["['0018_classification_by_the_conventions.sql']",
                                          "[('a', 3, 0.0), ('b', 2, 0.0), ('c', 1, 0.5), ('d', 1, 0.0), ('e', 1, 0.0)]"]


def test_two_migrators_at_once_apply_a_file_once(tmp_path: Path) -> None:
    """Collectors started together against one server both migrate, and one process can
    open its embedded store twice (the SDK's exporter and the application): one migrator
    waits for the other and finds the file applied, so 0010's backfill counts each stored
    call once (without the lock both ran it and every call counted twice)."""
    script = (
        "import sys, threading\n"
        "from spanhouse.clickhouse import open_store, connect, migrate\n"
        "s = open_store(sys.argv[1]); c = s.client\n"
        "def undo_0010():\n"
        "    c.command('DROP VIEW execution_tool_calls_mv'); c.command('DROP TABLE execution_tool_calls')\n"
        "    c.command('DELETE FROM spanhouse_migrations WHERE version = 10')\n"
        "c.command(\"INSERT INTO tool_calls (Tenant, Timestamp, TraceId, ToolName) \"\n"
        "          \"SELECT 't', now64(9), toString(number % 50000), 'search' FROM numbers(500000)\")\n"
        "for opener in (lambda: migrate(connect(sys.argv[1])), lambda: open_store(sys.argv[1]).close()):\n"
        "    undo_0010()\n"
        "    start = threading.Barrier(2)\n"
        "    def run():\n"
        "        start.wait(); opener()\n"
        "    threads = [threading.Thread(target=run) for _ in range(2)]\n"
        "    [t.start() for t in threads]; [t.join() for t in threads]\n"
        "    print(c.query('SELECT sum(Calls) FROM execution_tool_calls').result_rows[0][0],\n"
        "          c.query('SELECT count() FROM spanhouse_migrations WHERE version = 10').result_rows[0][0])\n"
        "s.close()\n"
    )
    assert in_child(script, tmp_path) == ["500000 1", "500000 1"]


def test_a_held_migration_lock_is_waited_for_then_explained(store: Store) -> None:
    store.client.command(sqlfiles.query("migration_lock_take"))  # as a migrator killed while it held it
    try:
        with pytest.raises(MigrationError, match="DROP TABLE spanhouse_migration_lock"):
            migrate(store.client, lock_wait_s=1)
        # The embedded engine is one process's: what holds the lock there is a killed run.
        assert migrate(store.client, exclusive=True) == []
        assert queries.rows(store.client, "migration_lock_held", {}) == []
    finally:
        store.client.command(sqlfiles.query("migration_lock_release"))


def test_a_signal_ends_a_start_waiting_for_the_migration_lock(tmp_path: Path) -> None:
    """`serve` waiting for another migrator's lock (on a server; a killed one's is
    reported after 10 minutes) took neither SIGTERM nor a second signal: only SIGKILL
    ended it. The child takes a server's path (no lock dropped as a killed run's) on an
    embedded store, whose lock the test holds as another migrator would."""
    data = tmp_path / "data"
    dsn = f"chdb://{data}"
    in_child("import sys\nfrom spanhouse.clickhouse import connect, migrate, sqlfiles\n"
             "c = connect(sys.argv[1]); migrate(c, exclusive=True)\n"
             "c.command(sqlfiles.query('migration_lock_take')); c.close()\n", data)
    child = ("import sys\n"
             "from spanhouse.clickhouse import migrations, store\n"
             "store.migrate = lambda client, **kw: migrations.migrate(client, **{**kw, 'exclusive': False})\n"
             "from spanhouse.collector import cli\n"
             f"sys.exit(cli.main(['serve', '--dsn', {dsn!r}, '--grpc-port', '0', '--http-port', '0',\n"
             "                    '--api-port', '0', '--sql-port', '0']))\n")
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SPANHOUSE_LOG_LEVEL": "INFO"})
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the handlers are in place before the store opens
            if "waiting up to 600 s" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "listening" not in out, err
    assert "stopped while waiting for another migrator's lock" in err, err
    held = in_child("import sys\nfrom spanhouse.clickhouse import connect, queries\n"
                    "print(len(queries.rows(connect(sys.argv[1]), 'migration_lock_held', {})))\n", data)
    assert held == ["1"]  # the other migrator's lock is left alone


def test_tool_rollups_read_by_time_after_a_deletion_count_what_remains(tmp_path: Path) -> None:
    """Deletion recomputes a tool's hour: the rows it deletes must not stay in the
    time-ordered projections (0008), which window reads use, next to the recomputed ones."""
    on_a_store_of_its_own(_tool_rollups_after_a_deletion, tmp_path)


def _tool_rollups_after_a_deletion(store: Store, tenant: str) -> None:
    start = 1_763_500_000_000_000_000
    gone, kept = trace_id(), trace_id()
    write(store, tenant, request([span("execute_tool x", t, start=start + i, attributes={
        "gen_ai.operation.name": "execute_tool"}) for i, t in enumerate((gone, kept))]))
    delete_traces(store.client, tenant, [gone.hex()])
    for table in ("tool_stats_1m", "tool_stats_1h"):
        in_projection = store.client.query(
            "SELECT sum(Calls) FROM mergeTreeProjection(currentDatabase(), {table:String}, 'by_time') "
            "WHERE Tenant = {t:String}", parameters={"t": tenant, "table": table})
        assert in_projection.result_rows == [(1,)], table

class _WriteWhileDeleting:
    """A reader for ``delete_traces`` that, right after its first statement starting with
    ``after`` (by default: once the tool rollups of the affected hours are cleared and
    before they are recomputed), has the writer insert ``batch`` from another thread and
    gives it a second to land."""

    def __init__(self, store: Store, batch: list[IngestItem], after: str = "DELETE FROM tool_stats_1h_by_time ") -> None:
        self._store = store
        self._batch = batch
        self._after = after
        self.writing: threading.Thread | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store.readers, name)

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        result = self._store.readers.command(sql, *args, **kwargs)
        if self.writing is None and sql.startswith(self._after):
            self.writing = threading.Thread(target=self._store.writer.write, args=(self._batch,))
            self.writing.start()
            self.writing.join(timeout=1)
        return result


def test_a_tool_call_written_while_a_deletion_rebuilds_its_hour_counts_once(tmp_path: Path) -> None:
    on_a_store_of_its_own(_a_tool_call_written_while_its_hour_is_rebuilt, tmp_path)


def _a_tool_call_written_while_its_hour_is_rebuilt(store: Store, tenant: str) -> None:
    hour = 1_700_002_800_000_000_000  # 2023-11-14 23:00 UTC, a whole hour
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
    gone, kept, late = trace_id(), trace_id(), trace_id()
    write(store, tenant, request([span("execute_tool search", gone, start=hour, attributes=tool)]),
          request([span("execute_tool search", kept, start=hour + 60 * 10**9, attributes=tool)]))
    late_batch = [IngestItem(tenant, request([span("execute_tool search", late, start=hour + 120 * 10**9,
                                                   attributes=tool)]).SerializeToString())]
    reader = _WriteWhileDeleting(store, late_batch)
    delete_traces(reader, tenant, [gone.hex()], store.writer.paused)
    assert reader.writing is not None
    reader.writing.join()
    calls = {table: store.client.command(f"SELECT sum(Calls) FROM {table} WHERE Tenant = {{t:String}}",
                                         parameters={"t": tenant})
             for table in ("tool_stats_1m", "tool_stats_1h", "tool_stats_1h_by_time", "tool_stats_1d")}
    assert calls == dict.fromkeys(calls, 2)  # kept and late, each once



def test_a_span_of_a_trace_arriving_while_it_is_deleted_is_stored_whole(tmp_path: Path) -> None:
    """A running execution deleted while it still sends spans: one landing between two of
    the deletion's statements stayed in otel_traces and lost its tool_calls row, and its
    tool call, in an hour the deletion had not found affected, stayed in the tool stats."""
    on_a_store_of_its_own(_a_span_landing_during_its_deletion, tmp_path)


def _a_span_landing_during_its_deletion(store: Store, tenant: str) -> None:
    hour = 1_700_002_800_000_000_000  # 2023-11-14 23:00 UTC
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
    running = trace_id()
    write(store, tenant, request([span("execute_tool search", running, start=hour, attributes=tool)]))
    late = [IngestItem(tenant, request([span("execute_tool search", running, start=hour + 7_200 * 10**9,
                                              attributes=tool)]).SerializeToString())]
    reader = _WriteWhileDeleting(store, late, after="DELETE FROM otel_traces WHERE Tenant = {tenant:String} AND TraceId")
    delete_traces(reader, tenant, [running.hex()], store.writer.paused)
    assert reader.writing is not None
    reader.writing.join()
    counts = [store.client.command(sql, parameters={"t": tenant}) for sql in (
        "SELECT count() FROM otel_traces WHERE Tenant = {t:String}",
        "SELECT count() FROM tool_calls WHERE Tenant = {t:String}",
        "SELECT sum(Calls) FROM tool_stats_1m WHERE Tenant = {t:String}",
        "SELECT sum(Calls) FROM tool_stats_1d WHERE Tenant = {t:String}",
        "SELECT sum(Spans) FROM execution_rollup WHERE Tenant = {t:String}")]
    assert counts == [1] * 5  # the late span alone, in every table


def test_a_deletion_goes_in_chunks_and_a_stop_ends_it_between_them(tmp_path: Path) -> None:
    """A 30k-execution deletion took 4 minutes with ingest held off throughout (a TraceId
    IN list of 40k ids took 25 s a statement, 10k 0.1 s), and the collector stopping
    under it left tables disagreeing. Chunks are deleted whole, ingest may go on between
    them, and a stop ends the deletion there. In a child with a store of its own: a
    deletion's mutations visit every part of the shared store."""
    script = (
        "import sys, threading\n"
        "from contextlib import contextmanager\n"
        "from spanhouse.clickhouse import IngestItem, deletion, open_store\n"
        "from spanhouse.errors import StoreUnavailable\n"
        "from tests.otlp import request, span, trace_id\n"
        "s = open_store(sys.argv[1])\n"
        "deletion.CHUNK = 2\n"
        "tool = {'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 'search'}\n"
        "ids = [trace_id() for _ in range(5)]\n"
        "s.writer.write([IngestItem('t', request([span('invoke_agent a', t), span('execute_tool search', t, "
        "attributes=tool)]).SerializeToString()) for t in ids], token='all')\n"
        "stopping, pauses = threading.Event(), []\n"
        "@contextmanager\n"
        "def paused():\n"
        "    with s.writer.paused():\n"
        "        pauses.append(1)\n"
        "        yield\n"
        "    stopping.set()  # the collector is told to stop while the first chunk is deleted\n"
        "try:\n"
        "    deletion.delete_traces(s.readers, 't', [t.hex() for t in ids], paused, stopping)\n"
        "except StoreUnavailable as exc:\n"
        "    print(exc)\n"
        "print(pauses)\n"
        "print([s.client.command(f\"SELECT {n} FROM {table} WHERE Tenant = 't'\") for table, n in (\n"
        "    ('otel_traces', 'uniqExact(TraceId)'), ('tool_calls', 'count()'), ('tool_stats_1m', 'sum(Calls)'),\n"
        "    ('tool_stats_1d', 'sum(Calls)'), ('executions FINAL', 'count()'), ('execution_rollup', 'uniqExact(TraceId)'))])\n"
        "print(deletion.delete_traces(s.readers, 't', [t.hex() for t in ids], s.writer.paused))\n"
        "s.close()\n"
    )
    assert in_child(script, tmp_path) == [
        "the collector is stopping: 2 of 5 trace ids were deleted (each from every table); delete again for the rest",
        "[1]",  # ingest held off for the chunk, not the whole deletion
        str([3] * 6),  # the first chunk from every table, the rest untouched
        "{'executions': 3, 'spans': 6}"]


class _CancelledAt:
    """A reader for ``delete_traces`` whose read of ``marker`` is cancelled, as the
    collector's shutdown cancels running reads."""

    def __init__(self, store: Store, marker: str) -> None:
        self._store, self._marker = store, marker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store.readers, name)

    def query(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if self._marker in sql:
            raise DatabaseError("Code: 394. DB::Exception: Query was cancelled. (QUERY_WAS_CANCELLED)")
        return self._store.readers.query(sql, *args, **kwargs)


@pytest.mark.parametrize("marker", ["system.tables", "system.projections"])  # a view's SELECT; the mask's tables
def test_a_deletion_whose_read_is_cancelled_changes_nothing(store: Store, tenant: str, marker: str) -> None:
    """The view's SELECT was read after the rollup's groups were cleared: cancelled there,
    the deletion left the surviving execution's tool calls uncounted for good."""
    hour = 1_700_002_800_000_000_000
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
    gone, kept = trace_id(), trace_id()
    write(store, tenant, request([span("execute_tool search", gone, start=hour, attributes=tool),
                                  span("execute_tool search", kept, start=hour + 1, attributes=tool)]))
    with pytest.raises(DatabaseError, match="QUERY_WAS_CANCELLED"):
        delete_traces(_CancelledAt(store, marker), tenant, [gone.hex()])
    calls = [store.client.command(f"SELECT {n} FROM {t} WHERE Tenant = {{t:String}}", parameters={"t": tenant})
             for t, n in (("tool_calls", "count()"), ("tool_stats_1m", "sum(Calls)"), ("tool_stats_1d", "sum(Calls)"))]
    assert calls == [2, 2, 2]  # nothing deleted, nothing cleared

@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata"])
def test_deleting_rebuilds_the_day_its_hour_bucket_is_in(tmp_path: Path, tz: str) -> None:
    """Hour buckets follow the engine's time zone; in one half an hour off UTC, a call at
    00:10 UTC sits in the bucket of 23:30 the day before, and that day is the one the
    deletion must rebuild."""
    script = (
        "import sys\n"
        "from spanhouse.clickhouse import open_store\n"
        "from spanhouse.clickhouse.deletion import delete_traces\n"
        "s = open_store(sys.argv[1]); c = s.client\n"
        "c.command(\"INSERT INTO tool_calls (Tenant, Timestamp, TraceId, ToolName, DurationNs) VALUES \"\n"
        "          \"('t', toDateTime64('2026-01-01 23:55:00', 9, 'UTC'), 'kept', 'search', 10), \"\n"
        "          \"('t', toDateTime64('2026-01-02 00:10:00', 9, 'UTC'), 'gone', 'search', 20)\")\n"
        "delete_traces(c, 't', ['gone'])\n"
        "for t, n in (('tool_calls', 'count()'), ('tool_stats_1h', 'sum(Calls)'), ('tool_stats_1h_by_time', 'sum(Calls)'),\n"
        "             ('tool_stats_1d', 'sum(Calls)')):\n"
        "    print(t, c.command(f\"SELECT {n} FROM {t} WHERE Tenant = 't'\"))\n"
        "s.close()\n"
    )
    assert in_child(script, tmp_path, tz=tz) == [f"{t} 1" for t in ("tool_calls", "tool_stats_1h",
                                                                  "tool_stats_1h_by_time", "tool_stats_1d")]


def test_retention_removes_an_expired_execution_from_every_table_at_once(tmp_path: Path) -> None:
    """Two executions in one month, the first past the retention: it used to stay listed
    (without spans, tool calls or tokens) and counted in the tool stats until its whole
    month expired, because those tables dropped whole monthly parts only."""
    script = (
        "import sys, time\n"
        "from datetime import datetime, timedelta, timezone\n"
        "from spanhouse.clickhouse import IngestItem, history, open_store\n"
        "from tests.otlp import request, span, span_id, trace_id\n"
        "now = datetime.now(timezone.utc)\n"
        "month = (now.replace(day=1) - timedelta(days=1)).replace(day=1, hour=12, minute=0, second=0, microsecond=0)\n"
        "old_at, new_at = month + timedelta(days=1), month + timedelta(days=26)  # the same monthly partition\n"
        "days = (now - (month + timedelta(days=14))).days  # old_at is past it, new_at is not\n"
        "def execution(at, tool):\n"
        "    t, root, ns = trace_id(), span_id(), int(at.timestamp()) * 10**9\n"
        "    return t.hex(), [span('invoke_agent a', t, sid=root, start=ns, duration_ns=10**9,\n"
        "                          attributes={'gen_ai.operation.name': 'invoke_agent', 'gen_ai.usage.input_tokens': 100}),\n"
        "                     span('execute_tool ' + tool, t, parent=root, start=ns + 1,\n"
        "                          attributes={'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': tool})]\n"
        "old, old_spans = execution(old_at, 'old_tool')\n"
        "new, new_spans = execution(new_at, 'new_tool')\n"
        "s = open_store(sys.argv[1])\n"
        "s.writer.write([IngestItem('t', request(old_spans + new_spans).SerializeToString())])\n"
        "s.close()\n"
        "s = open_store(sys.argv[1], retention_days=days)\n"
        "print([e['trace_id'] == new for e in history.list_executions(s.client, 't', {}).items])\n"
        "for table in ('tool_stats_1m', 'tool_stats_1h', 'tool_stats_1h_by_time', 'tool_stats_1d'):\n"
        "    print(table, s.client.query(f'SELECT ToolName, sum(Calls) FROM {table} GROUP BY ToolName').result_rows)\n"
        "s.close()\n"
    )
    lines = in_child(script, tmp_path)
    assert lines[0] == "[True]"
    assert lines[1:5] == [f"{t} [('new_tool', 1)]" for t in ("tool_stats_1m", "tool_stats_1h", "tool_stats_1h_by_time",
                                                              "tool_stats_1d")]


def test_retention_keeps_a_rollup_row_as_long_as_an_execution_it_counts(tmp_path: Path) -> None:
    """The day-level rollups expired at the start of their day plus the retention: an
    execution still kept (and listed) had already left the tool leaderboard and the
    error patterns, for up to a day."""
    script = (
        "import sys\n"
        "from datetime import datetime, timedelta, timezone\n"
        "from spanhouse.clickhouse import IngestItem, history, open_store\n"
        "from tests.otlp import request, span, span_id, trace_id\n"
        "days = 2\n"
        "at = datetime.now(timezone.utc) - timedelta(days=days) + timedelta(minutes=10)  # kept 10 more minutes\n"
        "t, root, ns = trace_id(), span_id(), int(at.timestamp()) * 10**9\n"
        "s = open_store(sys.argv[1])\n"
        "s.writer.write([IngestItem('t', request([\n"
        "    span('invoke_agent a', t, sid=root, start=ns, duration_ns=10**9, attributes={'gen_ai.operation.name': 'invoke_agent'}),\n"
        "    span('execute_tool lookup', t, parent=root, start=ns + 1, error='boom',\n"
        "         attributes={'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 'lookup'})]).SerializeToString())])\n"
        "s.close()\n"
        "s = open_store(sys.argv[1], retention_days=days)\n"
        "for table in ('tool_stats_1m', 'tool_stats_1h', 'tool_stats_1h_by_time', 'tool_stats_1d', 'error_patterns'):\n"
        "    s.client.command(f'OPTIMIZE TABLE {table} FINAL')  # apply the TTL now\n"
        "print([e['trace_id'] == t.hex() for e in history.list_executions(s.client, 't', {}).items])\n"
        "for table, n in (('tool_stats_1m', 'sum(Calls)'), ('tool_stats_1h', 'sum(Calls)'), ('tool_stats_1d', 'sum(Calls)'),\n"
        "                 ('tool_stats_1h_by_time', 'sum(Calls)'), ('error_patterns', 'sum(Count)')):\n"
        "    print(table, s.client.command(f'SELECT {n} FROM {table}'))\n"
        "s.close()\n"
    )
    assert in_child(script, tmp_path) == ["[True]", "tool_stats_1m 1", "tool_stats_1h 1", "tool_stats_1d 1",
                                          "tool_stats_1h_by_time 1", "error_patterns 1"]


def test_retention_sets_a_ttl_on_every_table(tmp_path: Path) -> None:
    # In a child process: the session store's test data is older than any retention.
    script = (
        "import sys\n"
        "from spanhouse.clickhouse import open_store, apply_retention\n"
        "from spanhouse.errors import ConfigError\n"
        "s = open_store(sys.argv[1], retention_days=45)\n"
        "for t in ('otel_traces', 'otel_traces_trace_id_ts', 'tool_calls', 'tool_stats_1m', 'tool_stats_1h', 'tool_stats_1d', 'tool_stats_1h_by_time', 'executions', 'error_patterns', 'execution_rollup', 'execution_tool_calls', 'feedback'):\n"
        "    print(t, 'toIntervalDay(45)' in s.client.command('SHOW CREATE TABLE ' + t))\n"
        "for days in (0, 36500):\n"
        "    try:\n"
        "        apply_retention(s.client, days)\n"
        "    except ConfigError as e:\n"
        "        print('refused', e)\n"
        "s.close()\n"
    )
    lines = in_child(script, tmp_path)
    assert lines[:12] == [f"{t} True" for t in ("otel_traces", "otel_traces_trace_id_ts", "tool_calls",
                                                "tool_stats_1m", "tool_stats_1h", "tool_stats_1d",
                                                "tool_stats_1h_by_time", "executions", "error_patterns",
                                                "execution_rollup", "execution_tool_calls", "feedback")]
    assert lines[12].startswith("refused retention must be a whole number of days from 1 to 10000")
    # 36,500 days past 2026 wraps around DateTime's end (2106) to 1989: it would delete everything
    assert lines[13].startswith("refused retention must be a whole number of days from 1 to 10000")
    # Unset again, `spanhouse serve` keeps everything: it removes the TTLs it finds. Any
    # other opener of the store (the SDK's store exporter) leaves them alone.
    ttls = "SELECT countIf(engine_full LIKE '% TTL %') FROM system.tables WHERE database = currentDatabase()"
    check = ("import sys\nfrom spanhouse.clickhouse import open_store\ns = open_store(sys.argv[1])\n"
             f"print(s.client.command({ttls!r}))\n")
    assert in_child(check, tmp_path) == ["12"]
    serve = ServeProcess(tmp_path)
    serve.start()
    assert serve.terminate() == 0
    assert count_in_store(tmp_path, ttls) == [[0]]


def test_statement_splitter_respects_quotes_and_comments() -> None:
    sql = "-- a; comment\nSELECT 'x;y';\nSELECT \"a;b\" -- c;\n;\n\n"
    assert split_statements(sql) == ["-- a; comment\nSELECT 'x;y'", 'SELECT "a;b" -- c;']


def test_cli_migrate_prints_cluster_ddl(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate", "--print", "--cluster", "prod"]) == 0
    out = capsys.readouterr().out
    assert "-- 0001_otel_traces.sql" in out and "ON CLUSTER prod" in out
    assert "MODIFY TTL" not in out


def test_cli_migrate_prints_the_retention_it_would_set(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`--print` left out the TTLs of `--retention-days` (the DDL a cluster's DBA reviews
    before `migrate --cluster NAME --retention-days N`) and took any number of days."""
    assert cli.main(["migrate", "--print", "--cluster", "prod", "--retention-days", "30"]) == 0
    out = capsys.readouterr().out
    assert "-- retention.sql" in out and "toIntervalDay(30)" in out
    assert re.search(r"ALTER TABLE otel_traces_local ON CLUSTER prod\s+MODIFY TTL", out), out
    monkeypatch.setenv("SPANHOUSE_RETENTION_DAYS", "7")
    assert cli.main(["migrate", "--print"]) == 0
    assert "toIntervalDay(7)" in capsys.readouterr().out
    assert cli.main(["migrate", "--print", "--retention-days", "0"]) == 2
    assert "from 1 to 10000" in capsys.readouterr().err


def test_cli_migrate_creates_a_store_in_another_process(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'data'}"
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "spanhouse.collector.cli", "migrate", "--dsn", dsn],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "is up to date" in done.stdout
    assert (tmp_path / "data" / "store").exists() or any((tmp_path / "data").iterdir())


def test_cli_reports_errors_without_traceback(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "spanhouse.collector.cli", "migrate", "--dsn", "ftp://x"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("spanhouse: error: unsupported DSN scheme") and "Traceback" not in done.stderr


def test_spans_and_tool_rollups_carry_their_projections(store: Store, tenant: str) -> None:
    tool_call = span("execute_tool x", trace_id(), attributes={"gen_ai.operation.name": "execute_tool"})
    write(store, tenant, request([tool_call]))
    got = store.client.query("SELECT table, name FROM system.projections WHERE database = currentDatabase() "
                             "ORDER BY table").result_rows
    assert got == [("otel_traces", "by_trace"), ("tool_stats_1h", "by_time"), ("tool_stats_1m", "by_time")]
    built = store.client.query("SELECT DISTINCT table FROM system.projection_parts WHERE active "
                               "AND database = currentDatabase() ORDER BY table").result_rows
    assert built == [("otel_traces",), ("tool_stats_1h",), ("tool_stats_1m",)]  # built by the insert itself


def test_closing_an_embedded_store_cancels_its_running_reads(tmp_path: Path) -> None:
    """Closing waited 10 s for a running read, then closed the engine under it anyway: the
    process crashed (SIGSEGV). Its reads are cancelled first now."""
    script = (
        "import sys, threading, time\n"
        "from spanhouse.clickhouse import open_store\n"
        "s = open_store(sys.argv[1])\n"
        "out = []\n"
        "def read():\n"
        "    try:\n"
        "        s.readers.query('SELECT count() FROM numbers(5000000000) WHERE sipHash64(number) % 7 = 3')\n"
        "    except Exception as exc:\n"
        "        out.append(type(exc).__name__)\n"
        "t = threading.Thread(target=read); t.start(); time.sleep(1.0)\n"
        "started = time.monotonic(); s.close(); t.join()\n"
        "print(out, time.monotonic() - started < 5)\n"
    )
    assert in_child(script, tmp_path) == ["['DatabaseError'] True"]


def test_an_error_pattern_expires_with_the_last_failure_it_counts_east_of_utc(tmp_path: Path) -> None:
    """Its Day is a UTC day; a Date's TTL starts at the server's local midnight: in
    Asia/Kolkata the row of a failure at 20:00 UTC expired 1.5 h before the failure."""
    script = (
        "import sys\n"
        "from spanhouse.clickhouse import IngestItem, open_store\n"
        "from tests.otlp import request, span, trace_id\n"
        "s = open_store(sys.argv[1], retention_days=1000)\n"
        "at = 1_749_513_600 + 20 * 3600  # 2025-06-10T20:00:00Z\n"
        "s.writer.write([IngestItem('ttl', request([span('execute_tool search', trace_id(), start=at * 10**9,\n"
        "    error='boom', attributes={'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 'search'})])\n"
        "    .SerializeToString())])\n"
        "for r in s.client.query(\"SELECT table, toUnixTimestamp(delete_ttl_info_max) FROM system.parts WHERE active \"\n"
        "        \"AND database = currentDatabase() AND table IN ('otel_traces', 'error_patterns') AND rows > 0 \"\n"
        "        \"ORDER BY table\").result_rows:\n"
        "    print(r[0], r[1])\n"
        "s.close()\n"
    )
    expiry = dict(line.split() for line in in_child(script, tmp_path, tz="Asia/Kolkata"))
    assert int(expiry["error_patterns"]) >= int(expiry["otel_traces"])
