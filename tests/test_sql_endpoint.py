"""The read-only ClickHouse-HTTP-compatible SQL endpoint, driven by the real
clickhouse-connect HTTP client and by plain HTTP as curl would."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.ctypes import RespBuffCls
from clickhouse_connect.driver.exceptions import DatabaseError, StreamCompleteException
from clickhouse_connect.driver.query import QueryContext

from spanhouse.clickhouse import Store
from spanhouse.clickhouse.store import READERS
from spanhouse.collector.sql_guard import LIMITS
from spanhouse.collector.sql_guard import settings as client_settings
from spanhouse.collector.sql_http import MAX_QUERY_BYTES
from tests.collector_harness import Running, in_child, running_collector
from tests.conftest import write
from tests.otlp import request, span, trace_id


@pytest.fixture(scope="module")
def admin(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tenant = "sql-endpoint"
    write(store, tenant, request([span("execute_tool search", trace_id(), attributes={
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}) for _ in range(3)]))
    with running_collector(store, tmp_path_factory.mktemp("sql"), tenant, scopes="admin") as c:
        yield c


def _client(c: Running, key: str | None = None) -> clickhouse_connect.driver.Client:
    return clickhouse_connect.get_client(host="127.0.0.1", port=c.addresses.sql_port, username="default",
                                         password=key or c.key, interface="http")


def test_clickhouse_connect_http_client_queries_the_embedded_store(admin: Running) -> None:
    client = _client(admin)
    assert client.command("SELECT 1") == 1
    rows = client.query("SELECT ToolName, calls FROM v_tool_stats WHERE Tenant = {t:String}",
                        parameters={"t": "sql-endpoint"}).result_rows
    assert rows == [("search", 3)]
    df_like = client.query("SELECT number, toString(number) AS s FROM numbers(3)").result_columns
    assert df_like == [[0, 1, 2], ["0", "1", "2"]]


def test_writes_and_readonly_changes_are_refused_with_clickhouse_errors(admin: Running) -> None:
    client = _client(admin)
    for sql in ["INSERT INTO otel_traces (SpanName) VALUES ('x')", "DROP TABLE otel_traces",
                "CREATE TABLE t (a UInt8) ENGINE = Memory", "ALTER TABLE otel_traces DELETE WHERE 1",
                "SELECT 1 SETTINGS readonly = 0"]:
        with pytest.raises(DatabaseError, match="READONLY|readonly|ACCESS_DENIED"):
            client.command(sql)
    assert client.command("SELECT count() FROM otel_traces WHERE SpanName = 'x'") == 0


def test_read_only_queries_never_make_ingest_read_only(store: Store, admin: Running) -> None:
    _client(admin).command("SELECT 1")
    write(store, "sql-endpoint-after", request([span("still writable", trace_id())]))
    body = request([span("through the collector", trace_id())]).SerializeToString()
    r = httpx.post(admin.http_url, content=body, headers={"content-type": "application/x-protobuf", **admin.headers()})
    assert r.status_code == 200
    admin.wait_drained()
    assert store.client.command("SELECT count() FROM otel_traces WHERE SpanName IN "
                                "('still writable', 'through the collector')") == 2


def test_a_slow_query_does_not_hold_up_the_others(admin: Running) -> None:
    """Grafana asks for every panel of a dashboard at once: a quick panel must not wait
    for a slow one (they queued on one connection before)."""
    slow = threading.Thread(target=lambda: httpx.post(admin.sql_url, content="SELECT sleep(3)",
                                                      auth=("default", admin.key), timeout=60))
    slow.start()
    time.sleep(0.5)
    r = httpx.post(admin.sql_url, content="SELECT 1", auth=("default", admin.key), timeout=60)
    assert r.status_code == 200 and r.text == "1\n"
    assert slow.is_alive(), "the quick query came back only after the slow one"
    slow.join()


def test_queries_waiting_for_a_client_hold_no_thread_of_the_query_api(admin: Running) -> None:
    """SQL requests waiting for one of the pool's clients held threads of anyio's default
    limiter, which the query API's endpoints run on: a list took 30 s behind them."""
    auth = ("default", admin.key)
    sleepers = [threading.Thread(target=lambda: httpx.post(admin.sql_url, auth=auth, timeout=120,
                                                           content="SELECT sleepEachRow(1) FROM numbers(1)"))
                for _ in range(64)]
    for t in sleepers:
        t.start()
    time.sleep(0.5)
    started = time.monotonic()
    r = httpx.get(admin.api_url + "/api/v1/executions", headers=admin.headers(), timeout=120)
    took = time.monotonic() - started
    waiting = sum(t.is_alive() for t in sleepers)
    for t in sleepers:
        t.join()
    assert r.status_code == 200 and waiting > 40 and took < 1, (took, waiting)


def test_plain_http_as_curl_sends_it(admin: Running) -> None:
    r = httpx.get(admin.sql_url, params={"query": "SELECT 1+{n:UInt8} AS x FORMAT JSONEachRow", "param_n": "2"},
                  headers={"X-ClickHouse-User": "default", "X-ClickHouse-Key": admin.key})
    assert r.status_code == 200 and json.loads(r.text) == {"x": 3}
    assert r.headers["x-clickhouse-format"] == "JSONEachRow"
    r = httpx.post(admin.sql_url, content="SELECT 'a' AS s", auth=("default", admin.key), params={"default_format": "CSV"})
    assert r.text == '"a"\n'
    r = httpx.post(admin.sql_url, content="SELEC nonsense", auth=("default", admin.key))
    assert r.status_code == 400 and r.text.startswith("Code: 62.") and r.headers["x-clickhouse-exception-code"] == "62"
    r = httpx.post(admin.sql_url, content="SELECT * FROM nope", auth=("default", admin.key))
    assert r.status_code == 404 and "UNKNOWN_TABLE" in r.text
    assert httpx.get(admin.sql_url + "/ping").text == "Ok.\n"


def test_sql_needs_an_admin_key(store: Store, tmp_path: Path, admin: Running) -> None:
    r = httpx.post(admin.sql_url, content="SELECT 1", auth=("default", "wrong"))
    assert r.status_code == 401 and "AUTHENTICATION_FAILED" in r.text
    with running_collector(store, tmp_path, "sql-endpoint", scopes="read") as c:
        r = httpx.post(c.sql_url, content="SELECT 1", auth=("default", c.key))
        assert r.status_code == 401


@pytest.mark.parametrize("sql", [
    "SELECT * FROM file('/proc/self/environ', 'LineAsString')",  # inline API keys live there
    "SELECT file('/etc/hostname')",
    "SELECT count() FROM system.one WHERE dummy IN (SELECT 0 FROM url('http://127.0.0.1:9/', 'CSV', 'a Int'))",
    "SELECT * FROM s3('http://127.0.0.1:9/bucket/x.csv')",
    "SELECT * FROM remote('127.0.0.1:9000', system.one)",
    # readonly=2 allowed these: a request with data out, and a host file read and written
    "INSERT INTO FUNCTION url('http://127.0.0.1:9/x', 'LineAsString', 'l String') SELECT 'secret'",
    "CREATE TEMPORARY TABLE t (l String) ENGINE = URL('http://127.0.0.1:9/x', 'LineAsString')",
    "CREATE TEMPORARY TABLE t (s String) ENGINE = SQLite('/tmp/host.db', 's')",
    "EXPLAIN PIPELINE INSERT INTO FUNCTION url('http://127.0.0.1:9/x', 'LineAsString', 'l String') SELECT 'a'",
    "DESCRIBE url('http://127.0.0.1:9/x', 'CSV', 'a String')",
])
def test_queries_reaching_outside_the_store_are_refused(admin: Running, sql: str) -> None:
    r = httpx.post(admin.sql_url, content=sql, auth=("default", admin.key))
    assert r.status_code == 403 and "ACCESS_DENIED" in r.text and "reads the store only" in r.text


def test_no_temporary_table_can_shadow_a_store_table_for_other_clients(admin: Running) -> None:
    """A temporary table lives on the pooled connection that made it: Grafana's next
    query there read it instead of the store's table of that name."""
    client = _client(admin)
    before = client.command("SELECT count() FROM otel_traces")
    for sql in ["CREATE TEMPORARY TABLE otel_traces (SpanName String) ENGINE = Memory",
                "CREATE TEMPORARY VIEW otel_traces AS SELECT 1", "CREATE TEMPORARY TABLE x AS SELECT 1"]:
        with pytest.raises(DatabaseError, match="ACCESS_DENIED"):
            client.command(sql)
    assert all(client.command("SELECT count() FROM otel_traces") == before for _ in range(8))
    for read in ("EXPLAIN SELECT 1", "EXPLAIN json = 1 SELECT 1", "EXPLAIN SYNTAX SELECT 1 EXCEPT SELECT 2",
                 "SHOW DATABASES", "SHOW TABLES LIKE 'otel%'", "DESC (SELECT 1)", "DESCRIBE TABLE system.one",
                 "SELECT * EXCEPT (a) FROM (SELECT 1 AS a, 2 AS b)", "SELECT sum(number) OVER w FROM numbers(3) WINDOW w AS "
                 "(ORDER BY number)", "WITH 1 AS x SELECT x FROM system.one AS o ARRAY JOIN [1, 2] AS a"):
        assert httpx.post(admin.sql_url, content=read, auth=("default", admin.key)).status_code == 200, read


@pytest.mark.parametrize("statement", ["SELECT 'overwritten'", "SHOW TABLES", "DESCRIBE TABLE otel_traces",
                                       "EXPLAIN SYNTAX SELECT 'overwritten'"])
def test_into_outfile_writes_nothing(admin: Running, tmp_path: Path, statement: str) -> None:
    target = tmp_path / "victim.txt"
    target.write_text("kept")
    r = httpx.post(admin.sql_url, content=f"{statement} INTO OUTFILE '{target}' TRUNCATE",
                   auth=("default", admin.key))
    assert r.status_code == 403 and "INTO OUTFILE" in r.text
    assert target.read_text() == "kept"


def test_a_format_that_is_no_format_name_never_reaches_the_engine(admin: Running, tmp_path: Path) -> None:
    """default_format was appended to the checked statement by the driver as text:
    'TSV; <anything>' ran a second statement unchecked (host files read and written,
    temporary tables and SETs left on the pooled connection)."""
    target = tmp_path / "written.txt"
    for fmt in (f"TSV; INSERT INTO FUNCTION file('{target}', 'TSV', 'x String') VALUES ('pwned')",
                "TSV; SET limit = 1", "TSV\nSELECT 2"):
        r = httpx.post(admin.sql_url, params={"default_format": fmt}, content="SELECT 1", auth=("default", admin.key))
        assert r.status_code == 400 and r.headers["x-clickhouse-exception-code"] == "73", r.text
    assert not target.exists()
    assert httpx.post(admin.sql_url, content="SELECT number FROM numbers(3)", auth=("default", admin.key)).text \
        == "0\n1\n2\n"


def test_a_line_break_in_a_name_cannot_forge_the_checked_tree(admin: Running) -> None:
    """EXPLAIN AST prints aliases raw: an alias 'x<newline>  Explain' made the SETTINGS
    clause that followed look like an EXPLAIN's options, and every limit was lifted."""
    auth = ("default", admin.key)
    for sql in ("SELECT number AS `x\n  Explain` FROM numbers(1500000) SETTINGS max_result_rows = 0, "
                "max_result_bytes = 0", "SELECT 1 AS \"a\rb\" SETTINGS max_memory_usage = 0",
                "SELECT 1 AS `a\\nb`"):
        r = httpx.post(admin.sql_url, content=sql, auth=auth, timeout=60)
        assert r.status_code == 403 and "line break" in r.text, r.text[:300]
    r = httpx.post(admin.sql_url, content="SELECT 'two\nlines' AS s FORMAT JSONEachRow", auth=auth)
    assert r.status_code == 200 and json.loads(r.text) == {"s": "two\nlines"}  # in a string it is harmless
    r = httpx.post(admin.sql_url, params={"max_threads": "10000"}, content="SELECT getSetting('max_threads')",
                   auth=auth)
    assert r.status_code == 200 and 1 <= int(r.text) <= (os.cpu_count() or 1)
    r = httpx.post(admin.sql_url, content="SELECT getSetting('allow_introspection_functions')", auth=auth)
    assert r.text in ("0\n", "false\n")


def test_parameters_are_never_written_into_the_query_text(admin: Running, tmp_path: Path) -> None:
    """The endpoint passed a parameter the driver did not see a placeholder for ('{x:'
    has no closing brace for it), so the driver wrote the value into the SQL text with
    Python's % itself: '%(x)s' in a string literal became the value as bare SQL, and a
    '; <statement>' in it ran unchecked (host files read and written, requests, limits)."""
    target = tmp_path / "pwned.txt"
    attack = (", 42 AS a; INSERT INTO FUNCTION file($$" + str(target) + "$$, RawBLOB, $$c String$$) "
              "SELECT $$written$$ --")
    r = httpx.post(admin.sql_url, params={"param_x": attack}, content="SELECT '{x:', '%(x)s'",
                   auth=("default", admin.key))
    assert not target.exists()
    assert r.status_code == 200 and r.text == "{x:\t%(x)s\n"  # the literals, as written
    r = httpx.post(admin.sql_url, params={"param_x": "it's"}, content="SELECT {x:String}, '%(x)s'",
                   auth=("default", admin.key))
    assert r.status_code == 200 and r.text == "it\\'s\t%(x)s\n"  # server-side binding only (TSV escapes ')
    # a quote in one name hid a line break in the next from the check
    r = httpx.post(admin.sql_url, content="SELECT 1 AS `a'`, 2 AS `x\nForged`, 3 AS `'`", auth=("default", admin.key))
    assert r.status_code == 403 and "line break" in r.text


def test_a_settings_clause_of_an_explain_is_refused_its_options_are_not(admin: Running, tmp_path: Path) -> None:
    """EXPLAIN (SELECT ...) SETTINGS ... put the clause where an EXPLAIN's own options go,
    and the engine applied it to all the EXPLAIN ran: output_format_schema wrote a file,
    format_template_resultset read one (/proc/self/environ) into an error message, the
    memory and time limits were lifted for the scalar subqueries it ran."""
    auth, target = ("default", admin.key), tmp_path / "victim.txt"
    target.write_text("kept")
    for fmt, clause in (("Protobuf", f"output_format_schema = '{target}'"),
                        ("Template", "format_template_resultset = '/proc/self/environ'"),
                        ("TSV", "max_memory_usage = 0, max_execution_time = 0")):
        r = httpx.post(admin.sql_url, params={"default_format": fmt}, auth=auth,
                       content=f"EXPLAIN QUERY TREE (SELECT (SELECT 1)) SETTINGS {clause}")
        assert r.status_code == 403 and "SETTINGS clause" in r.text, r.text[:300]
    assert target.read_text() == "kept"
    assert httpx.post(admin.sql_url, content="EXPLAIN header = 1 SELECT 1", auth=auth).status_code == 200
    # an Identifier parameter is printed raw in the dump the check reads
    r = httpx.post(admin.sql_url, params={"param_t": "otel_traces\\n Explain"}, auth=auth,
                   content="SELECT count() FROM {t:Identifier}")
    assert r.status_code == 403 and "line break" in r.text


@pytest.mark.parametrize(("sql", "params"), [
    # expressions the dump leaves out, which the engine runs: read the environment's keys
    ("SHOW TABLES LIMIT (SELECT toUInt64(file('/proc/self/environ')))", {}),
    ("SHOW COLUMNS FROM system.one WHERE (SELECT count() FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')) > 0", {}),
    ("SELECT * APPLY(x -> (SELECT file('/proc/self/environ'))) FROM numbers(1)", {}),
    # output settings that read files (and aborted the engine on an empty one) or run past the time limit
    ("SELECT now()::DateTime64(3) AS t FORMAT ORC", {"output_format_orc_writer_time_zone_name": "../../../../dev/null"}),
    ("SELECT 1 AS x, 1 AS y, 1 AS v FORMAT PNG", {"output_format_image_width": "20000"}),
])
def test_what_the_check_cannot_see_is_refused(admin: Running, sql: str, params: dict[str, str]) -> None:
    r = httpx.post(admin.sql_url, params=params, content=sql, auth=("default", admin.key), timeout=60)
    assert r.status_code == 403 and "SPANHOUSE" not in r.text, r.text[:300]
    assert httpx.post(admin.sql_url, content="SELECT 1", auth=("default", admin.key)).text == "1\n"


@pytest.mark.parametrize("sql", [
    "SELECT _path, * FROM `/{etc/hostname,proc/self/environ}`", "SELECT * FROM `/etc/hostname`",
    "SELECT * FROM default.`/etc/hostname`", "DESCRIBE TABLE `/etc/passwd`", "SELECT * FROM `pyproject.toml`",
    "SELECT 'x' IN `/etc/hostname`", "SELECT count() FROM system.one WHERE 'x' NOT IN `pyproject.toml`",
    "WITH t AS (SELECT 1) SELECT * FROM `/etc/hostname` AS t",
    # ' (alias ' in the name made the check read the name as otel_traces
    "SELECT * FROM `otel_traces (alias /../../../../etc/passwd` AS y",
    "SELECT * FROM default.`otel_traces (alias /../pyproject.toml` AS y",
    # a table name in a string: the default database reads it as a host file too
    "SELECT hasColumnInTable('default', '/etc/passwd', 'c1')", "SELECT joinGet('/etc/passwd', 'c1', 1)",
    "SELECT joinGetOrNull('pyproject', 'c1', 1)",
    # every IN function takes a table name second: the IgnoreSet ones were not checked
    *[f"SELECT {f}(1, `/{{etc/hostname,proc/self/environ}}`)" for f in (
        "nullInIgnoreSet", "notNullInIgnoreSet", "globalInIgnoreSet", "globalNotInIgnoreSet", "globalNullInIgnoreSet",
        "globalNotNullInIgnoreSet", "notIn", "globalNullIn")]])
def test_a_name_the_store_does_not_list_is_no_host_file(admin: Running, sql: str) -> None:
    """chdb's default database is an Overlay with a Filesystem database: any table name
    that is a path (or a file in the working directory) read that file, the process's
    environment with the inline keys included (a glob got past format detection)."""
    r = httpx.post(admin.sql_url, content=sql, auth=("default", admin.key))
    assert r.status_code in (403, 404) and "SPANHOUSE" not in r.text and "root:" not in r.text, r.text[:300]


@pytest.mark.parametrize("sql", [
    "SELECT sum(editDistance(repeat('a', 65536), repeat(toString(number % 10), 65536))) FROM numbers(3)",
    "SELECT levenshteinDistanceUTF8('a', 'b')", "SELECT jaroWinklerSimilarity('a', 'b')",
    "SELECT arrayLevenshteinDistance([1], [2])", "SELECT polygonsDistanceCartesian([[[(0., 0.)]]], [[[(1., 1.)]]])",
    "SELECT aiGenerate('hello')",
])
def test_functions_whose_one_row_outlasts_the_time_limit_are_refused(admin: Running, sql: str) -> None:
    """The engine checks max_execution_time between blocks of rows: editDistance of two
    64k strings took 3.6 s a row, a 5 s limit ended after 36 s, and six such queries held
    every connection of the endpoint for 145 s."""
    r = httpx.post(admin.sql_url, content=sql, auth=("default", admin.key), timeout=30)
    assert r.status_code == 403 and "past the time limit" in r.text, r.text[:300]


def test_a_query_over_the_engines_size_limit_is_refused_before_it_is_read_whole(admin: Running) -> None:
    """A 400 MiB body was held, and formatted by the engine with none of the limits, before
    the engine refused it as over max_query_size: the collector peaked at 10 GB."""
    def body() -> Iterator[bytes]:
        yield b"SELECT 1 -- "
        for _ in range(64):  # 64 MiB, stopped at the first chunk past the limit
            yield b"x" * (1 << 20)

    r = httpx.post(admin.sql_url, content=body(), auth=("default", admin.key), timeout=60)
    # the collector's refusal, before the engine sees any of it
    assert r.status_code == 400 and f"the query is over {MAX_QUERY_BYTES} bytes" in r.text, r.text[:300]
    assert httpx.post(admin.sql_url, content="SELECT 1 -- " + "x" * 200_000, auth=("default", admin.key)).text == "1\n"

def test_a_time_zone_that_names_a_file_is_refused_and_answers_stay_within_the_byte_limit(admin: Running) -> None:
    """'file:/dev/ptmx' as a time zone made the engine read that device (past the time
    limit, the engine's time zone cache held with it); and a wide constant column,
    counted once by the engine, made a 1 GB answer under a 256 MiB max_result_bytes."""
    auth = ("default", admin.key)
    for params, sql in (({}, "SELECT toTimeZone(now(), 'FILE:/dev/ptmx')"),
                        ({"param_tz": "file:/dev/ptmx"}, "SELECT toTimeZone(now(), {tz:String})"),
                        ({"session_timezone": "file:/dev/ptmx"}, "SELECT 1")):
        r = httpx.post(admin.sql_url, params=params, content=sql, auth=auth, timeout=20)
        assert r.status_code == 403 and "file" in r.text, r.text[:200]
    # a name holding 'file:' is no time zone: a dashboard's tool 'user_profile:get' was refused
    for params, sql in (({}, "SELECT $sh$user_profile:get$sh$ = 'user_profile:get'"),
                        ({"param_tool": "profile:api"}, "SELECT {tool:String} = 'profile:api'")):
        r = httpx.post(admin.sql_url, params=params, content=sql, auth=auth, timeout=20)
        assert r.status_code == 200 and r.text == "1\n", r.text[:200]
    r = httpx.post(admin.sql_url, params={"max_result_bytes": "1000000"}, auth=auth, timeout=60,
                   content="SELECT repeat('x', 1000) AS a FROM numbers(10000)")
    assert r.status_code == 500 and "TOO_MANY_ROWS_OR_BYTES" in r.text and len(r.content) < 1000


def test_a_second_statement_is_refused_and_never_runs(admin: Running, tmp_path: Path) -> None:
    """The guard parsed the first statement; the embedded engine ran them all, even
    inside the guard's own EXPLAIN."""
    secret, target = tmp_path / "secret.txt", tmp_path / "written.txt"
    secret.write_text("api key")
    for sql in (f"SELECT 1; SELECT * FROM file('{secret}', 'LineAsString')",
                f"SELECT 1; SELECT 'pwn' INTO OUTFILE '{target}'", f"SELECT 1;\nSELECT 'pwn' INTO OUTFILE '{target}';"):
        r = httpx.post(admin.sql_url, content=sql, auth=("default", admin.key))
        assert r.status_code == 400 and "Multi-statements are not allowed" in r.text and "api key" not in r.text
    assert not target.exists()
    r = httpx.post(admin.sql_url, content="SELECT 1;", auth=("default", admin.key))
    assert r.status_code == 200 and r.text == "1\n"


def test_settings_are_a_harmless_few_under_the_endpoints_limits(admin: Running) -> None:
    auth = ("default", admin.key)
    r = httpx.post(admin.sql_url, params={"dialect": "prql"}, content="SELECT 1", auth=auth)
    assert r.status_code == 403 and "setting dialect cannot be changed" in r.text
    # the connection it would have run on still answers SQL (a prql dialect stuck to it before)
    for _ in range(READERS + 1):
        assert httpx.post(admin.sql_url, content="SELECT 1", auth=auth).text == "1\n"
    r = httpx.post(admin.sql_url, params={"output_format_json_quote_64bit_integers": "0", "max_threads": "1"},
                   content="SELECT toUInt64(5) AS n FORMAT JSONEachRow", auth=auth)
    assert r.status_code == 200 and r.text == '{"n":5}\n'
    # a result larger than the endpoint holds is refused, not built in the collector's memory
    r = httpx.post(admin.sql_url, content="SELECT number FROM numbers(2000000)", auth=auth, timeout=60)
    assert r.status_code != 200 and "TOO_MANY_ROWS_OR_BYTES" in r.text
    r = httpx.post(admin.sql_url, params={"max_result_bytes": "100000"}, auth=auth,
                   content="SELECT repeat(toString(number), 100) FROM numbers(10000)")
    assert r.status_code != 200 and "max bytes: 97.66 KiB" in r.text
    # lowered limits are the answer's, not the check's (its EXPLAIN AST counted against them)
    r = httpx.post(admin.sql_url, params={"max_result_rows": "1", "max_result_bytes": "100"}, auth=auth,
                   content="SELECT 1")
    assert r.status_code == 200 and r.text == "1\n"
    # nor through a SETTINGS clause, which would override them for the query
    r = httpx.post(admin.sql_url, content="SELECT number FROM numbers(2000000) SETTINGS max_result_rows = 0",
                   auth=auth)
    assert r.status_code == 403 and "SETTINGS clause" in r.text
    for statement in ("SET max_result_rows = 0", "SET dialect = 'prql'"):  # nor for the pooled connection
        r = httpx.post(admin.sql_url, content=statement, auth=auth)
        assert r.status_code == 403 and "SET or a SETTINGS clause" in r.text
    assert httpx.post(admin.sql_url, content="SELECT 1", auth=auth).text == "1\n"
    # a client may lower the limits, never raise or lift them (0 is "no limit")
    assert client_settings({"max_execution_time": "3600", "max_result_bytes": "1024", "max_memory_usage": "0"}) == {
        **LIMITS, "max_result_bytes": 1024, "readonly": 2, "allow_introspection_functions": 0}
    # nor make the answer larger than its result past the engine's defaults (1 GB of Pretty
    # padding under a 1 MB max_result_bytes), nor write a file through output_format_schema
    assert client_settings({"output_format_pretty_max_rows": "100000000", "output_format_pretty_max_value_width": "5",
                            "output_format_pretty_max_column_pad_width": "0"}) == {
        **LIMITS, "output_format_pretty_max_rows": 10_000, "output_format_pretty_max_value_width": 5,
        "output_format_pretty_max_column_pad_width": 250, "readonly": 2, "allow_introspection_functions": 0}
    r = httpx.post(admin.sql_url, params={"output_format_schema": "/tmp/spanhouse-victim.proto"}, auth=auth,
                   content="SELECT 1 AS x FORMAT Protobuf")
    assert r.status_code == 403 and "setting output_format_schema cannot be changed" in r.text
    assert not Path("/tmp/spanhouse-victim.proto").exists()


def test_row_generating_table_functions_and_parameters_still_work(admin: Running) -> None:
    r = httpx.post(admin.sql_url, params={"param_n": "4"}, auth=("default", admin.key),
                   content="SELECT sum(number) FROM numbers({n:UInt8}) WHERE number IN (SELECT number FROM numbers(10))")
    assert r.status_code == 200 and r.text == "6\n"
    r = httpx.post(admin.sql_url, auth=("default", admin.key), content="SELECT sum(a) FROM VALUES('a UInt8', 1, 2)")
    assert r.status_code == 200 and r.text == "3\n"
    r = httpx.post(admin.sql_url, auth=("default", admin.key), content="DESCRIBE TABLE otel_traces")
    assert r.status_code == 200 and "TraceId" in r.text


def test_a_bad_query_parameter_or_format_is_a_400(admin: Running) -> None:
    r = httpx.post(admin.sql_url, params={"param_x": "abc"}, content="SELECT {x:UInt8}", auth=("default", admin.key))
    assert r.status_code == 400 and r.headers["x-clickhouse-exception-code"] == "457"
    r = httpx.post(admin.sql_url, params={"default_format": "Nope"}, content="SELECT 1", auth=("default", admin.key))
    assert r.status_code == 400 and r.headers["x-clickhouse-exception-code"] == "73"
    r = httpx.post(admin.sql_url, content="SELECT {s:String}", auth=("default", admin.key))  # not given: a 500 before
    assert r.status_code == 400 and r.headers["x-clickhouse-exception-code"] == "456"


def test_query_parameters_are_read_as_clickhouse_reads_them(admin: Running) -> None:
    """Clients send param_ values escaped (the Escaped format); the endpoint passed them
    on to the driver, which escaped them again ("it's" came back as "it\\'s"). A
    parameter the query does not use made the driver format the query with Python's %
    itself: a LIKE '%b%' was a bare 500."""
    client = _client(admin)
    for value in ("it's", "tab\there", "two\nlines", "back\\slash", "caf\u00e9", "100%"):
        assert client.query("SELECT {v:String}", parameters={"v": value}).result_rows == [(value,)]
    assert client.query("SELECT {v:Nullable(String)}", parameters={"v": None}).result_rows == [(None,)]
    r = httpx.post(admin.sql_url, params={"param_unused": "x"}, content="SELECT 1 WHERE 'abc' LIKE '%b%'",
                   auth=("default", admin.key))
    assert r.status_code == 200 and r.text == "1\n"


class _Body:
    """A response body as clickhouse-connect's ResponseBuffer reads it (one chunk)."""

    def __init__(self, data: bytes) -> None:
        self.gen = iter([data])

    def close(self) -> None:
        pass


def _read_as_go_driver(data: bytes, revision: int) -> tuple[int, list[str], list[tuple]]:
    """(blocks, type names, rows) of a Native answer read as clickhouse-go reads it for
    ``revision`` (lib/proto/block.go: a BlockInfo before each block, and from 54454 a
    custom-serialization flag after each column's type), the columns decoded by
    clickhouse-connect's own readers: a byte out of place fails here."""
    source = RespBuffCls(_Body(data))
    blocks, types, rows = 0, [], []
    while True:
        try:
            first = source.read_byte()
        except StreamCompleteException:
            return blocks, types, rows
        if revision > 0:
            info = bytes([first, *source.read_bytes(7)])
            assert info == bytes([1, 0, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0])  # is_overflows 0, bucket_num -1, end
            first = source.read_leb128()
        num_columns, num_rows = first, source.read_leb128()
        columns, types = [], []
        for _ in range(num_columns):
            source.read_leb128_str()
            types.append(source.read_leb128_str())
            if revision >= 54454:
                assert source.read_byte() == 0  # no custom serialization
            ch_type = get_from_name(types[-1])
            columns.append(ch_type.read_column(source, num_rows, QueryContext()) if num_rows else [])
        rows += list(zip(*columns))
        blocks += 1


TYPES_SQL = """
SELECT number AS n, toString(number) AS s, toLowCardinality(toString(number % 3)) AS lc,
       CAST(if(number % 2 = 1, NULL, toString(number)) AS LowCardinality(Nullable(String))) AS lcn,
       if(number % 2 = 1, NULL, number) AS nn, [number, number + 1] AS arr, [[toString(number)], []] AS arr2,
       map('k', toString(number), 'j', '') AS m, (number, toString(number)) AS tup,
       CAST((1, 'x'), 'Tuple(a UInt8, b String)') AS named, [map('a', [toLowCardinality('x')])] AS deep,
       toDateTime64(1700000000 + number, 9, 'UTC') AS dt64, toDateTime(1700000000 + number, 'UTC') AS dt,
       toDate('2025-01-01') AS d, toDecimal64(number / 3, 4) AS dec, toUUID('61f0c404-5cb3-11e7-907b-a6006ad3dba0') AS u,
       CAST('b', 'Enum8(\\'a\\' = 1, \\'b\\' = 2)') AS e, toFixedString('ab', 2) AS fs, number % 2 = 0 AS b,
       toIPv4('1.2.3.4') AS ip, CAST([], 'Array(Nullable(UInt8))') AS empty, (1.5, 2.5)::Point AS p, 0.25 AS f
FROM numbers(FIRST, 5)
"""


@pytest.mark.parametrize("revision", [54460, 54453, 0])
def test_native_answers_follow_the_go_drivers_protocol_version(admin: Running, revision: int) -> None:
    """Grafana's ClickHouse data source (clickhouse-go over HTTP) sends client_protocol_version
    and reads the blocks in that revision's layout; the engine writes revision 0's."""
    sql = f"{TYPES_SQL.replace('FIRST', '{a:UInt64}')} UNION ALL {TYPES_SQL.replace('FIRST', '{b:UInt64}')}"
    params = {"param_a": "0", "param_b": "100", "database": "default", "default_format": "Native"}
    if revision:
        params["client_protocol_version"] = str(revision)
    r = httpx.post(admin.sql_url, params=params, content=sql,
                   headers={"X-ClickHouse-User": "grafana", "X-ClickHouse-Key": admin.key})
    assert r.status_code == 200, r.text
    blocks, types, rows = _read_as_go_driver(r.content, revision)
    expected = _client(admin).query(sql, parameters={"a": 0, "b": 100}).result_rows
    assert blocks >= 2 and sorted(rows) == sorted(expected) and len(rows) == 10
    assert "LowCardinality(Nullable(String))" in types and "Map(String, String)" in types

    # What the driver asks first when it connects, and an empty answer (a header block).
    for sql, count in [("SELECT displayName(), version(), revision(), timezone()", 1),
                       ("SELECT toLowCardinality('x') AS lc, [1] AS a FROM numbers(0)", 0)]:
        r = httpx.post(admin.sql_url, params={**params, "query": sql}, content=b"",
                       headers={"X-ClickHouse-User": "grafana", "X-ClickHouse-Key": admin.key})
        assert r.status_code == 200 and len(_read_as_go_driver(r.content, revision)[2]) == count


def test_a_native_column_the_endpoint_cannot_lay_out_is_a_clear_400(admin: Running) -> None:
    r = httpx.post(admin.sql_url, params={"default_format": "Native", "client_protocol_version": "54460"},
                   content="SELECT 1::Dynamic AS d", auth=("default", admin.key))
    assert r.status_code == 400 and "cast it to String" in r.text
    r = httpx.post(admin.sql_url, params={"default_format": "Native", "client_protocol_version": "54460",
                                          "output_format_native_encode_types_in_binary_format": "1"},
                   content="""SELECT '{"a":1}'::JSON AS j""", auth=("default", admin.key))
    assert r.status_code == 400 and "binary-encoded" in r.text
    r = httpx.post(admin.sql_url, params={"default_format": "Native", "client_protocol_version": "54460"},
                   content="SELECT tuple() AS t FROM numbers(3)", auth=("default", admin.key))  # a bare 500 before
    assert r.status_code == 400 and "cast it to String" in r.text
    r = httpx.post(admin.sql_url, params={"default_format": "Native", "client_protocol_version": "new"},
                   content="SELECT 1", auth=("default", admin.key))
    assert r.status_code == 400 and "must be an integer" in r.text


def test_the_time_zone_header_is_the_one_text_times_are_written_in(tmp_path: Path) -> None:
    """Clients that read text formats (the Java client, curl scripts) take DateTime text to be
    in X-ClickHouse-Timezone: the store's zone, or the session_timezone the client asked for."""
    script = """
import sys, httpx
from pathlib import Path
from spanhouse.clickhouse import open_store
from tests.collector_harness import running_collector
store = open_store(sys.argv[1])
with running_collector(store, Path(sys.argv[2]), "tz", scopes="admin") as c:
    for extra in ({}, {"session_timezone": "UTC"}):
        r = httpx.post(c.sql_url, params=extra, content="SELECT toDateTime(1717200000) AS t", auth=("d", c.key))
        print(r.headers["x-clickhouse-timezone"], r.text.strip())
store.close()
"""
    (tmp_path / "run").mkdir()
    assert in_child(script, tmp_path / "store", str(tmp_path / "run"), tz="Asia/Kolkata") == [
        "Asia/Kolkata 2024-06-01 05:30:00", "UTC 2024-06-01 00:00:00"]
