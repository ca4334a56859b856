"""The read-only ClickHouse-HTTP-compatible SQL endpoint, driven by the real
clickhouse-connect HTTP client and by plain HTTP as curl would."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from spanhouse.clickhouse import Store
from spanhouse.clickhouse.store import READERS
from spanhouse.collector.sql_http import LIMITS, client_settings
from tests.collector_harness import Running, running_collector
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
        with pytest.raises(DatabaseError, match="READONLY|readonly"):
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
])
def test_queries_reaching_outside_the_store_are_refused(admin: Running, sql: str) -> None:
    r = httpx.post(admin.sql_url, content=sql, auth=("default", admin.key))
    assert r.status_code == 403 and "ACCESS_DENIED" in r.text and "reads the store only" in r.text


@pytest.mark.parametrize("statement", ["SELECT 'overwritten'", "SHOW TABLES", "DESCRIBE TABLE otel_traces",
                                       "EXPLAIN SYNTAX SELECT 'overwritten'", "SHOW CREATE TABLE otel_traces"])
def test_into_outfile_writes_nothing(admin: Running, tmp_path: Path, statement: str) -> None:
    target = tmp_path / "victim.txt"
    target.write_text("kept")
    r = httpx.post(admin.sql_url, content=f"{statement} INTO OUTFILE '{target}' TRUNCATE",
                   auth=("default", admin.key))
    assert r.status_code == 403 and "INTO OUTFILE" in r.text
    assert target.read_text() == "kept"


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
        **LIMITS, "max_result_bytes": 1024, "readonly": 2}


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
