"""The write path lands spans exactly as the OpenTelemetry Collector's ClickHouse
exporter would, through the SQL fast path and the Python exact path alike."""

from __future__ import annotations

import math
import os
import random
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from spanhouse.clickhouse import IngestItem, Store, Writer, otlp_rows
from spanhouse.clickhouse.writer import frame
from spanhouse.clickhouse.history import get_execution
from spanhouse.errors import InvalidData, StoreUnavailable, WriteError
from tests.collector_harness import in_child
from tests.conftest import write
from tests.otlp import AnyValue, KeyValue, KeyValueList, attrs, request, span, span_id, trace_id, value

# (value sent, what the official exporter stores): Go's pdata Value.AsString().
GOLDEN: list[tuple[Any, str]] = [
    ("hello", "hello"),
    ("", ""),
    (True, "true"),
    (False, "false"),
    (42, "42"),
    (-9223372036854775808, "-9223372036854775808"),
    (0.1, "0.1"),
    (100.0, "100"),
    (1e20, "100000000000000000000"),
    (1e21, "1e+21"),
    (1.5e300, "1.5e+300"),
    (1e-6, "0.000001"),
    (1e-7, "1e-7"),
    (1e-10, "1e-10"),
    (-0.0, "-0"),
    (5e-324, "5e-324"),
    (0.1 + 0.2, "0.30000000000000004"),
    (float("nan"), "json: unsupported value: NaN"),
    (float("inf"), "json: unsupported value: +Inf"),
    (float("-inf"), "json: unsupported value: -Inf"),
    (b"\x00\x01hi", "AAFoaQ=="),
    (["a", 1, True, 1.5, None], '["a",1,true,1.5,null]'),
    (["<&>", 'q"\\', "\n\t\r\b\f", "\u2028\u2029", "é☃"],
     '["\\u003c\\u0026\\u003e","q\\"\\\\","\\n\\t\\r\\b\\f","\\u2028\\u2029","é☃"]'),
    ([1e21, 1e-7, -0.0], "[1e+21,1e-7,-0]"),
    ([b"\xff"], '["/w=="]'),
    # below: values only the exact path renders
    (["\x01\x1f"], '["\\u0001\\u001f"]'),
    ([float("nan")], ""),
    ([], "[]"),
    ({}, "{}"),
    (None, ""),
    ({"b": 1, "a": [1, {"c": None}]}, '{"a":[1,{"c":null}],"b":1}'),
    ([[1, 2], ["x"]], '[[1,2],["x"]]'),
    ([{"k": "v"}], '[{"k":"v"}]'),
    ([[[[1]]]], "[[[[1]]]]"),
    (AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="a", value=value(1)),
                                                KeyValue(key="a", value=value(2))])), '{"a":2}'),
    (AnyValue(string_value_strindex=3), ""),  # the Profiles signal's kind: empty to pdata (it was "{}")
]
FAST = GOLDEN[:25]
EXACT = GOLDEN[25:]


def _stored_attributes(store: Store, tenant: str) -> dict[str, str]:
    rows = store.client.query("SELECT SpanAttributes FROM otel_traces WHERE Tenant = {t:String}",
                              parameters={"t": tenant}).result_rows
    assert len(rows) == 1
    return rows[0][0]


@pytest.mark.parametrize("sent,expected", GOLDEN, ids=[repr(v)[:40] for v, _ in GOLDEN])
def test_python_renderer_matches_pdata(sent: Any, expected: str) -> None:
    assert otlp_rows.as_string(value(sent)) == expected


def test_fast_path_renders_every_scalar_and_array_like_pdata(store: Store, tenant: str) -> None:
    before = store.writer.exact_batches
    t = trace_id()
    sent = [(f"k{i}", v) for i, (v, _) in enumerate(FAST)]
    write(store, tenant, request([span("s", t, attributes=dict(sent))]))
    assert store.writer.exact_batches == before, "these values must not need the exact path"
    assert _stored_attributes(store, tenant) == {f"k{i}": e for i, (_, e) in enumerate(FAST)}


@pytest.mark.parametrize("sent,expected", EXACT, ids=[repr(v)[:40] for v, _ in EXACT])
def test_exact_path_takes_what_sql_cannot_render(store: Store, tenant: str, sent: Any, expected: str) -> None:
    before = store.writer.exact_batches
    other = trace_id()
    # a plain span in the same batch must land as well, identically rendered
    write(store, tenant, request([span("s", trace_id(), attributes={"v": sent})]),
          request([span("plain", other, attributes={"n": 1})]))
    assert store.writer.exact_batches == before + 1
    rows = store.client.query("SELECT SpanName, SpanAttributes FROM otel_traces WHERE Tenant = {t:String} ORDER BY SpanName",
                              parameters={"t": tenant}).result_rows
    assert rows == [("plain", {"n": "1"}), ("s", {"v": expected})]


def test_a_value_kind_pdata_does_not_know_is_empty_inside_arrays_too() -> None:
    """The exact path rendered AnyValue's string_value_strindex (Profiles') as a map,
    "{}", where the fast path stores what pdata does, null in an array: a span's stored
    value depended on the batch it came in."""
    unknown = AnyValue(string_value_strindex=3)
    assert otlp_rows.as_string(value([unknown, 1])) == "[null,1]"
    assert otlp_rows.as_string(value({"k": unknown})) == '{"k":null}'


def _random_double(rng: random.Random) -> float:
    choice = rng.random()
    if choice < 0.3:
        return struct.unpack("<d", rng.randbytes(8))[0]  # any bit pattern: subnormals, huge, NaN
    if choice < 0.6:
        return rng.uniform(-1e6, 1e6)
    return rng.choice([1e-6, 9.999999999999999e-7, 1e21, 9.999999999999999e20, 0.5, 1 / 3, 2.0 ** 60])


def _random_string(rng: random.Random, in_array: bool) -> str:
    alphabet = ['a', 'Z', '0', ' ', '"', '\\', '<', '>', '&', '\n', '\t', '\r', '\b', '\f', '\u2028',
                '\u2029', 'é', '☃', '😀', '/', "'", '\x7f']
    if not in_array:
        alphabet += ['\x00', '\x01', '\x1f']
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def _random_fast_value(rng: random.Random, in_array: bool = False) -> Any:
    kind = rng.randint(0, 5 if in_array else 6)
    if kind == 0:
        return _random_string(rng, in_array)
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-(2 ** 63), 2 ** 63 - 1)
    if kind == 3:
        d = _random_double(rng)
        return d if (not in_array or math.isfinite(d)) else 0.25
    if kind == 4:
        return rng.randbytes(rng.randint(0, 6))
    if kind == 5:
        return _random_string(rng, in_array)
    return [_random_fast_value(rng, in_array=True) for _ in range(rng.randint(1, 5))]


@pytest.mark.parametrize("seed", range(4))
def test_fast_path_agrees_with_python_renderer_on_random_values(store: Store, tenant: str, seed: int) -> None:
    rng = random.Random(seed)
    req = request([span(f"s{i}", trace_id(), attributes={f"a{j}": _random_fast_value(rng) for j in range(10)})
                   for i in range(300)])
    before = store.writer.exact_batches
    write(store, tenant, req)
    assert store.writer.exact_batches == before
    expected = {s.name: otlp_rows.attributes(s.attributes) for s in req.resource_spans[0].scope_spans[0].spans}
    got = dict(store.client.query("SELECT SpanName, SpanAttributes FROM otel_traces WHERE Tenant = {t:String}",
                                  parameters={"t": tenant}).result_rows)
    assert got == expected


def sample_requests() -> list[Any]:
    """Spans of every shape the exporter columns record."""
    t1, t2 = trace_id(), trace_id()
    root = span_id()
    base = 1_760_000_000_123_456_789
    return [
        request([
            span("invoke_agent planner", t1, sid=root, start=base, duration_ns=9_000_000, kind=2,
                 attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
                             "input.value": "plan a trip", "session.id": "s1", "user.id": "u1"},
                 trace_state="vendor=1"),
            span("execute_tool search", t1, parent=root, start=base + 10, duration_ns=2_000_000,
                 attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
                             "gen_ai.tool.call.arguments": '{"q": "x"}', "gen_ai.usage.input_tokens": 12},
                 events=[(base + 20, "log", {"n": 1, "f": 0.5})], status_code=1),
            span("execute_tool fetch", t1, parent=root, start=base + 30, duration_ns=3_000_000,
                 attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "fetch",
                             "error.type": "TimeoutError"}, error="timed out after 30s",
                 events=[(base + 40, "exception", {"exception.type": "TimeoutError",
                                                   "exception.message": "timed out"})]),
        ], service="agents", resource={"host.name": "h1", "pid": 42, "tags": ["a", "b"]}),
        request([
            span("lookup", t2, kind=3, attributes={"openinference.span.kind": "TOOL", "tool.name": "lookup"},
                 links=[(t1, root, "k=v", {"rel": "follows"})]),
            span("weather.task", t2, parent=span_id(), kind=9, status_code=7,
                 attributes={"traceloop.span.kind": "tool", "traceloop.entity.name": "weather"}),
            span("zero-parent", t2, parent=b"\0" * 8, kind=0, attributes={"x": [1.5, 2]}),
            span("spanhouse.feedback", trace_id(), links=[(t1, root, "", {})],
                 attributes={"spanhouse.feedback.name": "user_rating", "spanhouse.feedback.value": 4,
                             "spanhouse.feedback.comment": "good"}),
        ], service="tools", scope=("openinference", "")),
    ]


# Columns compared as ns integers: the driver returns DateTime64(9) as microsecond datetimes.
_TRACE_COLUMNS = ("SELECT * EXCEPT (Tenant, Timestamp, `Events.Timestamp`), toUnixTimestamp64Nano(Timestamp), "
                  "arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`) FROM {table} "
                  "WHERE Tenant = {{t:String}} ORDER BY SpanId")
_DERIVED = {
    "otel_traces": _TRACE_COLUMNS,
    "otel_traces_trace_id_ts": "SELECT TraceId, min(Start), max(End) FROM {table} WHERE Tenant = {{t:String}} GROUP BY TraceId ORDER BY TraceId",
    "tool_calls": "SELECT * EXCEPT (Tenant) FROM {table} WHERE Tenant = {{t:String}} ORDER BY SpanId",
    "v_tool_stats_1m": "SELECT * EXCEPT (Tenant) FROM {table} WHERE Tenant = {{t:String}} ORDER BY ALL",
    "v_tool_stats_1h": "SELECT * EXCEPT (Tenant) FROM {table} WHERE Tenant = {{t:String}} ORDER BY ALL",
    "v_tool_latency_histogram": "SELECT * EXCEPT (Tenant) FROM {table} WHERE Tenant = {{t:String}} ORDER BY ALL",
    "v_executions": "SELECT * EXCEPT (Tenant) FROM {table} WHERE Tenant = {{t:String}} ORDER BY TraceId",
    "v_error_patterns": "SELECT * EXCEPT (Tenant) FROM {table} WHERE Tenant = {{t:String}} ORDER BY ALL",
    "feedback": "SELECT * EXCEPT (Tenant) FROM {table} WHERE Tenant = {{t:String}} ORDER BY ALL",
}


def test_exporter_insert_without_our_columns_lands_in_default_tenant(store: Store) -> None:
    """The official exporter's INSERT names only its 22 columns; ours take defaults."""
    count = "SELECT count() FROM otel_traces WHERE Tenant = 'default' AND SpanName = 'exporter-only'"
    before = store.client.command(count)
    rows = otlp_rows.rows(request([span("exporter-only", trace_id())]))
    store.client.insert("otel_traces", rows, column_names=list(otlp_rows.COLUMNS))
    assert store.client.command(count) == before + 1


def test_exporter_insert_lands_in_every_view(store: Store) -> None:
    """An INSERT in the exporter's column format (no spanhouse involved) fills every view
    exactly as our writer does: the views read otel_traces, whoever wrote it."""
    reqs = sample_requests()
    ours = "views-writer"
    before = store.writer.exact_batches
    write(store, ours, *reqs)
    assert store.writer.exact_batches == before, "the writer's side must take the SQL fast path"
    theirs = "views-exporter"
    rows = [[*r, theirs] for req in reqs for r in otlp_rows.rows(req)]
    store.client.insert("otel_traces", rows, column_names=[*otlp_rows.COLUMNS, "Tenant"])
    for table, sql in _DERIVED.items():
        a = store.client.query(sql.format(table=table), parameters={"t": ours}).result_rows
        b = store.client.query(sql.format(table=table), parameters={"t": theirs}).result_rows
        assert a, f"{table} is empty"
        assert a == b, table
    assert len(store.client.query(_TRACE_COLUMNS.format(table="otel_traces"), parameters={"t": ours}).result_rows) == 7


def test_exporter_encoding_of_ids_kinds_and_statuses(store: Store, tenant: str) -> None:
    t = bytes.fromhex("5B8EFFF798038103D269B633813FC60C")
    write(store, tenant, request([
        span("a", t, sid=bytes.fromhex("EEE19B7EC3C1B174"), parent=b"\0" * 8, kind=2, status_code=1),
        span("b", t, sid=bytes.fromhex("00000000000000AA"), parent=bytes.fromhex("EEE19B7EC3C1B174"), kind=5,
             error="bad"),
        span("c", t, sid=bytes.fromhex("00000000000000BB"), kind=0, duration_ns=0),
    ]))
    rows = store.client.query(
        "SELECT SpanName, TraceId, SpanId, ParentSpanId, SpanKind, StatusCode, StatusMessage, ServiceName, ScopeName, "
        "ScopeVersion FROM otel_traces WHERE Tenant = {t:String} ORDER BY SpanName", parameters={"t": tenant}).result_rows
    tid = "5b8efff798038103d269b633813fc60c"
    assert rows == [
        ("a", tid, "eee19b7ec3c1b174", "", "Server", "Ok", "", "svc", "tests", "1.0"),
        ("b", tid, "00000000000000aa", "eee19b7ec3c1b174", "Consumer", "Error", "bad", "svc", "tests", "1.0"),
        ("c", tid, "00000000000000bb", "", "Unspecified", "Unset", "", "svc", "tests", "1.0"),
    ]


def test_duration_wraps_like_uint64_when_end_precedes_start(store: Store, tenant: str) -> None:
    s = span("backwards", trace_id(), start=2_000, duration_ns=0)
    s.end_time_unix_nano = 1_000
    write(store, tenant, request([s]))
    assert store.client.command("SELECT Duration FROM otel_traces WHERE Tenant = {t:String}",
                                parameters={"t": tenant}) == (1_000 - 2_000) % (1 << 64)
    assert otlp_rows.rows(request([s]))[0][12] == (1_000 - 2_000) % (1 << 64)


def test_retried_batch_with_same_token_is_stored_once(store: Store, tenant: str) -> None:
    reqs = [request([span(f"s{i}", trace_id()) for i in range(5)]) for _ in range(3)]
    for _ in range(3):
        write(store, tenant, *reqs, token=f"{tenant}-batch-1")
    write(store, tenant, request([span("x", trace_id(), attributes={"v": {}})]), token=f"{tenant}-batch-2")
    write(store, tenant, request([span("x", trace_id(), attributes={"v": {}})]), token=f"{tenant}-batch-2")
    assert store.client.command("SELECT count() FROM otel_traces WHERE Tenant = {t:String}",
                                parameters={"t": tenant}) == 16


def test_a_batch_without_a_token_is_never_taken_for_a_repeat(tmp_path: Path) -> None:
    """Without a token the tables' deduplication window compared block contents: a trace
    deleted and then sent again byte for byte was dropped without a word. In a child
    with a store of its own: a deletion's mutations visit every part of the shared store."""
    script = (
        "import sys\n"
        "from spanhouse.clickhouse import IngestItem, open_store\n"
        "from spanhouse.clickhouse.deletion import delete_traces\n"
        "from tests.otlp import request, span, trace_id\n"
        "s = open_store(sys.argv[1])\n"
        "t = trace_id()\n"
        "item = IngestItem('t', request([span('again', t)]).SerializeToString())\n"
        "s.writer.write([item])\n"
        "delete_traces(s.client, 't', [t.hex()])\n"
        "s.writer.write([item])\n"
        "print(s.client.command('SELECT count() FROM otel_traces'), s.client.command('SELECT count() FROM tool_calls'),\n"
        "      s.client.command('SELECT count() FROM executions FINAL'))\n"
        "s.close()\n"
    )
    assert in_child(script, tmp_path) == ["1 0 1"]

def test_a_replayed_batch_over_more_than_a_thousand_days_is_stored_once(tmp_path: Path) -> None:
    """A block per day a batch touches, each an entry of the deduplication window: past
    1000 days (a backfill) the replay pushed its own first entries out and stored every
    row again. In a child with a store of its own: 1,100 daily parts stay out of the
    shared one."""
    script = (
        "import sys\n"
        "from spanhouse.clickhouse import IngestItem, open_store\n"
        "from tests.otlp import request, span, trace_id\n"
        "s = open_store(sys.argv[1])\n"
        "day = 86_400 * 10**9\n"
        "spans = [span('execute_tool t', trace_id(), start=1_600_000_000 * 10**9 + d * day,\n"
        "              attributes={'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 't'})\n"
        "         for d in range(1_100)]\n"
        "item = IngestItem('t', request(spans).SerializeToString())\n"
        "for _ in range(2):\n"
        "    s.writer.write([item], token='spool-backfill')\n"
        "print(s.client.command('SELECT count() FROM otel_traces'), s.client.command('SELECT count() FROM tool_calls'))\n"
        "s.close()\n"
    )
    assert in_child(script, tmp_path) == ["1100 1100"]


_WRITE_ONE_BATCH = """
import sys
from spanhouse.clickhouse import IngestItem, open_store
from tests.otlp import request, span
s = open_store(sys.argv[1])
t, root = bytes.fromhex("ab" * 16), bytes.fromhex("cd" * 8)
tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
batch = request([span("invoke_agent planner", t, sid=root, attributes={"gen_ai.operation.name": "invoke_agent"}),
                 span("execute_tool search", t, parent=root, sid=bytes.fromhex("ef" * 8), attributes=tool,
                      error="timed out")])
s.writer.write([IngestItem("t", batch.SerializeToString())], token="spool-000000000001")
print([s.client.command(f"SELECT {n} FROM {table} WHERE Tenant = 't'") for table, n in (
    ("otel_traces", "count()"), ("tool_calls", "count()"), ("tool_stats_1m", "sum(Calls)"),
    ("tool_stats_1d", "sum(Calls)"), ("error_patterns", "sum(Count)"), ("execution_rollup", "sum(Spans)"),
    ("execution_tool_calls", "count()"), ("executions", "count()"))])
s.close()
"""


def test_a_batch_replayed_by_the_next_process_is_counted_once_in_every_table(tmp_path: Path) -> None:
    """The engine that created the views (a new store's first process, or one that ran a
    migration) gave their inserts other deduplication ids than an engine loading them:
    a batch inserted there and replayed from the spool by the next process (after a
    crash) was stored once in otel_traces and twice in every view's table."""
    once = str([2, 1, 1, 1, 1, 2, 1, 1])
    assert in_child(_WRITE_ONE_BATCH, tmp_path) == [once]  # creates the store, then writes
    assert in_child(_WRITE_ONE_BATCH, tmp_path) == [once]  # the replay: the same batch, the same token


def test_retried_batch_changes_no_derived_count(store: Store, tenant: str) -> None:
    t = trace_id()
    reqs = [request([span("execute_tool x", t, attributes={"gen_ai.operation.name": "execute_tool"}, error="e 1"),
                     span("root", t, error="boom")])]
    for _ in range(3):
        write(store, tenant, *reqs, token=f"{tenant}-replayed")
    counts = store.client.query(
        "SELECT (SELECT count() FROM otel_traces WHERE Tenant = {t:String}), "
        "(SELECT count() FROM tool_calls WHERE Tenant = {t:String}), "
        "(SELECT sum(Calls) FROM tool_stats_1m WHERE Tenant = {t:String}), "
        "(SELECT sum(Calls) FROM tool_stats_1h WHERE Tenant = {t:String}), "
        "(SELECT count() FROM executions WHERE Tenant = {t:String}), "
        "(SELECT sum(Spans) FROM execution_rollup WHERE Tenant = {t:String}), "
        "(SELECT sum(Count) FROM error_patterns WHERE Tenant = {t:String}), "
        "(SELECT count() FROM otel_traces_trace_id_ts WHERE Tenant = {t:String})", parameters={"t": tenant}).result_rows
    assert counts == [(2, 1, 1, 1, 1, 2, 2, 1)]


def test_a_batch_spanning_hundreds_of_days_is_stored_once(tmp_path: Path) -> None:
    """One partition per day: past the engine's default of 100 partitions per insert the
    batch was refused with a code the writer retries, forever (the spool behind it
    stopped draining). Fast path and exact path, each written twice with its token."""
    script = (
        "import sys\n"
        "from spanhouse.clickhouse import IngestItem, open_store\n"
        "from tests.otlp import request, span, trace_id\n"
        "s = open_store(sys.argv[1])\n"
        "day = 86_400 * 10**9\n"
        "for path, extra in (('fast', {}), ('exact', {'v': {}})):\n"
        "    spans = [span(path, trace_id(), start=1_700_000_000 * 10**9 + i * day, attributes=extra) for i in range(150)]\n"
        "    for _ in range(2):\n"
        "        s.writer.write([IngestItem('t', request(spans).SerializeToString())], token=path)\n"
        "print(s.client.query('SELECT SpanName, count(), uniq(toDate(Timestamp)) FROM otel_traces GROUP BY 1 ORDER BY 1')\n"
        "      .result_rows, s.writer.exact_batches)\n"
        "s.close()\n"
    )
    # both writes of the exact-path batch take that path; the second stores nothing
    assert in_child(script, tmp_path) == ["[('exact', 150, 150), ('fast', 150, 150)] 2"]


def test_one_batch_carries_many_tenants(store: Store, tenant: str) -> None:
    a, b = f"{tenant}-a", f"{tenant}-b"
    store.writer.write([IngestItem(a, request([span("one", trace_id())]).SerializeToString()),
                        IngestItem(b, request([span("two", trace_id()), span("three", trace_id())]).SerializeToString())])
    got = dict(store.client.query("SELECT Tenant, count() FROM otel_traces WHERE Tenant IN ({a:String}, {b:String}) "
                                  "GROUP BY Tenant", parameters={"a": a, "b": b}).result_rows)
    assert got == {a: 1, b: 2}


def test_framing_is_length_delimited_protobuf() -> None:
    payload = request([span("s", trace_id())]).SerializeToString()
    framed = frame([IngestItem("tenant-x", payload)])
    assert framed[1:].startswith(payload) or framed[2:].startswith(payload)
    assert framed.endswith(b"tenant-x")


def test_undecodable_request_in_exact_path_is_invalid_data(store: Store) -> None:
    with pytest.raises(InvalidData, match="cannot be decoded"):
        store.writer._write_exact([IngestItem("x", b"\xff\xff\xff")], {})


def test_embedded_engine_writes_nothing_into_the_working_directory(store: Store, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, tenant: str) -> None:
    monkeypatch.chdir(tmp_path)
    write(store, tenant, request([span("s", trace_id(), attributes={"a": [1]})]))
    write(store, tenant, request([span("s", trace_id(), attributes={"a": {}})]))
    assert os.listdir(tmp_path) == []


def test_attributes_keep_wire_order(store: Store, tenant: str) -> None:
    write(store, tenant, request([span("s", trace_id(), attributes={"z": 1, "a": 2, "m": 3})]))
    assert list(_stored_attributes(store, tenant)) == ["z", "a", "m"]


def test_resource_attributes_of_every_kind(store: Store, tenant: str) -> None:
    write(store, tenant, request([span("s", trace_id())], service="svc-x",
                                 resource={"i": 7, "b": True, "d": 2.5, "arr": ["x", 1]}))
    got = store.client.query("SELECT ServiceName, ResourceAttributes FROM otel_traces WHERE Tenant = {t:String}",
                             parameters={"t": tenant}).result_rows
    assert got == [("svc-x", {"service.name": "svc-x", "i": "7", "b": "true", "d": "2.5", "arr": '["x",1]'})]


def test_attrs_helper_allows_duplicate_keys() -> None:
    assert [kv.key for kv in attrs([("a", 1), ("a", 2)])] == ["a", "a"]


def test_payload_the_engine_cannot_parse_takes_the_exact_path(store: Store, tenant: str) -> None:
    """A bool encoded as varint 9: protobuf reads it as true, ClickHouse's reader refuses
    the message; the batch still lands, through the exact path."""
    payload = request([span("odd", trace_id(), attributes={"flag": True})]).SerializeToString()
    encoded_true = b"\x0a\x04flag\x12\x02\x10\x01"  # KeyValue{key: "flag", value: {bool_value: 1}}
    assert payload.count(encoded_true) == 1
    odd = payload.replace(encoded_true, b"\x0a\x04flag\x12\x02\x10\x09")
    before = store.writer.exact_batches
    store.writer.write([IngestItem(tenant, odd)])
    assert store.writer.exact_batches == before + 1
    assert store.client.query("SELECT SpanName, SpanAttributes FROM otel_traces WHERE Tenant = {t:String}",
                              parameters={"t": tenant}).result_rows == [("odd", {"flag": "true"})]


def test_a_resource_without_service_name_gets_an_empty_service(store: Store, tenant: str) -> None:
    req = request([span("no service", trace_id())])
    del req.resource_spans[0].resource.attributes[:]
    before = store.writer.exact_batches
    write(store, tenant, req)
    assert store.writer.exact_batches == before
    assert store.client.query("SELECT ServiceName, ResourceAttributes FROM otel_traces WHERE Tenant = {t:String}",
                              parameters={"t": tenant}).result_rows == [("", {})]


def _anonymous_rss_mb() -> float:
    """This process's resident anonymous memory (``RssAnon``), in MB."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("RssAnon:")).split()[1]) / 1024


def test_a_large_insert_leaves_no_freed_memory_resident(store: Store, tenant: str) -> None:
    """The embedded engine's allocator kept ~300 MB of pages freed by a 40k-span insert
    for seconds afterwards; the writer purges them after each insert (see Writer)."""
    now = 1_700_000_000_000_000_000
    payloads = []
    for r in range(300):  # 30k tool spans with 200-character attributes: ~14 MB of OTLP
        trace = trace_id()
        payloads.append(IngestItem(tenant, request([
            span("execute_tool lookup", trace, start=now + i, attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": f"tool-{i % 16}",
                "gen_ai.tool.call.arguments": f"{r}-{i} " * 40}) for i in range(100)]).SerializeToString()))
    store.writer.write(payloads[:1])  # one-off costs (tables opened, caches filled) before measuring
    # Background merges of the shared test store (other tests' parts) allocate in this
    # process too: held off, so that what is measured is the insert's own memory.
    store.client.command("SYSTEM STOP MERGES")
    try:
        while store.client.command("SELECT count() FROM system.merges"):
            time.sleep(0.1)
        before = _anonymous_rss_mb()
        store.writer.write(payloads[1:])
        assert _anonymous_rss_mb() - before < 64
    finally:
        store.client.command("SYSTEM START MERGES")
    assert store.client.command(f"SELECT count() FROM otel_traces WHERE Tenant = '{tenant}'") == 30_000


class _RefusingClient:
    """The store's client, except that inserts of the fast path fail with ``message``."""

    def __init__(self, real: Any, message: str) -> None:
        self._real, self._message = real, message

    def raw_insert(self, *args: Any, **kwargs: Any) -> None:
        raise DatabaseError(self._message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.parametrize("message", [
    "Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)",
    "Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)",
    "Code: 60. DB::Exception: Table default.otlp_ingest does not exist. (UNKNOWN_TABLE)",
    "Code: 75. DB::ErrnoException: Cannot write to file: No space left on device. (CANNOT_WRITE_TO_FILE_DESCRIPTOR)",
])
def test_a_store_that_is_full_or_misconfigured_keeps_the_batch_for_a_retry(store: Store, tenant: str,
                                                                           message: str) -> None:
    """Not the data's fault: StoreUnavailable (the exporter retries, the spool keeps the
    batch), never the exact path and its WriteError (which would quarantine the batch)."""
    writer = Writer(_RefusingClient(store.client, message))  # type: ignore[arg-type]
    item = IngestItem(tenant, request([span("s", trace_id())]).SerializeToString())
    with pytest.raises(StoreUnavailable):
        writer.write([item])
    assert writer.exact_batches == 0


def test_a_batch_the_engines_protobuf_reader_refuses_takes_the_exact_path(store: Store, tenant: str) -> None:
    """The engine's reader is stricter than protobuf's own: a known field sent with
    another wire type is an unknown field to protobuf (kept, skipped) and an error to the
    engine. Nothing is written before the reader fails, so the exact path stores it."""
    valid = request([span("s", trace_id())]).SerializeToString()
    payload = valid + bytes([(1 << 3) | 0, 5])  # resource_spans (field 1) as a varint
    before = store.writer.exact_batches
    store.writer.write([IngestItem(tenant, payload)], token=f"reader-{tenant}")
    assert store.writer.exact_batches == before + 1
    assert store.client.command(f"SELECT count() FROM otel_traces WHERE Tenant = '{tenant}'") == 1


class _CommittingThenFailingClient(_RefusingClient):
    """The store's client, except that the fast path's first ``failures`` inserts commit
    and then fail with ``message`` (the answer lost after the server wrote the batch)."""

    def __init__(self, real: Any, message: str, failures: int) -> None:
        super().__init__(real, message)
        self.failures = failures

    def raw_insert(self, *args: Any, **kwargs: Any) -> None:
        self._real.raw_insert(*args, **kwargs)
        if self.failures:
            self.failures -= 1
            raise DatabaseError(self._message)


def test_a_fast_path_failure_of_no_known_cause_is_retried_there_not_duplicated(store: Store, tenant: str) -> None:
    """Some tables may hold the batch when the fast path fails for no known reason; the
    exact path's tables see other deduplication tokens and stored it a second time. The
    batch is retried on the fast path, where its token makes the retry exact."""
    client = _CommittingThenFailingClient(
        store.client, "Code: 1001. DB::Exception: std::exception: filesystem error. (STD_EXCEPTION)", failures=1)
    writer = Writer(client)  # type: ignore[arg-type]
    item = IngestItem(tenant, request([span("s", trace_id())]).SerializeToString())
    with pytest.raises(StoreUnavailable, match="attempt 1 of"):
        writer.write([item], token=f"t-{tenant}")
    writer.write([item], token=f"t-{tenant}")  # the exporter's retry
    assert writer.exact_batches == 0
    for table in ("otel_traces", "executions"):
        assert store.client.command(f"SELECT count() FROM {table} WHERE Tenant = '{tenant}'") == 1, table


def test_a_fast_path_failure_that_persists_refuses_the_batch(store: Store, tenant: str) -> None:
    """Retried a bounded number of times, then refused (the spool quarantines it) rather
    than stalling the spool behind it; at once without a token to retry under."""
    message = "Code: 1001. DB::Exception: std::exception. (STD_EXCEPTION)"
    writer = Writer(_RefusingClient(store.client, message))  # type: ignore[arg-type]
    item = IngestItem(tenant, request([span("s", trace_id())]).SerializeToString())
    with pytest.raises(WriteError, match="cannot be retried"):
        writer.write([item])
    for _ in range(7):
        with pytest.raises(StoreUnavailable):
            writer.write([item], token="same")
    with pytest.raises(WriteError, match="8 times in a row"):
        writer.write([item], token="same")
    with pytest.raises(StoreUnavailable, match="attempt 1 of"):  # another batch starts its own count
        writer.write([item], token="other")
    assert writer.exact_batches == 0


def test_a_key_sent_twice_reads_the_same_through_both_paths(store: Store, tenant: str) -> None:
    """Duplicate keys are invalid OTLP but arrive; which path a batch takes depends on the
    other requests in it, so the views and the span detail must read the same first value
    either way (the detail, reading the Map into a dict, showed the fast path's last)."""
    twice = [("gen_ai.operation.name", "execute_tool"), ("gen_ai.tool.name", "first"), ("gen_ai.tool.name", "second"),
             ("error.type", "E"), ("error.type", "")]
    traces: list[bytes] = []

    def tool_span() -> Any:
        traces.append(trace_id())
        s = span("execute_tool x", traces[-1])
        s.attributes.extend(attrs(twice))
        s.events.add(name="exception", time_unix_nano=s.start_time_unix_nano).attributes.extend(
            attrs([("exception.type", "First"), ("exception.type", "Second")]))
        return s

    write(store, tenant, request([tool_span()]))  # fast path
    exact_before = store.writer.exact_batches
    write(store, tenant, request([tool_span()]), request([span("m", trace_id(), attributes={"map": {"k": 1}})]))
    assert store.writer.exact_batches == exact_before + 1  # the map sent that whole batch down the exact path
    rows = store.client.query("SELECT ToolName, IsError, ErrorType FROM tool_calls WHERE Tenant = {t:String}",
                              parameters={"t": tenant}).result_rows
    assert rows == [("first", 1, "E"), ("first", 1, "E")]
    for t in traces:
        (detail,) = get_execution(store.readers, tenant, t.hex())["spans_tree"]  # type: ignore[index]
        assert detail["attributes"] == {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "first",
                                        "error.type": "E"}
        assert detail["events"][0]["attributes"] == {"exception.type": "First"}


def test_closing_the_writer_waits_for_a_clock_read_and_later_reads_say_the_store_is_unavailable(
        store: Store) -> None:
    """The live stream reads the store's clock on the writer's connection from another
    thread. ``close`` did not wait for such a read (the embedded engine closed under a
    running query can crash the process), and a read after it raised the driver's
    ProgrammingError, which the stream let out as a 500 or a broken response."""
    import threading

    from spanhouse.clickhouse import connect, embedded_path

    writer = Writer(connect(store.dsn), embedded_path(store.dsn))
    writer.clock_between_inserts()
    reading = threading.Event()

    def hold_like_a_read() -> None:
        with writer._inserting:  # what a clock read holds
            reading.set()
            time.sleep(0.5)

    holder = threading.Thread(target=hold_like_a_read)
    holder.start()
    reading.wait(5)
    started = time.monotonic()
    writer.close()
    waited = time.monotonic() - started
    holder.join()
    assert waited >= 0.3, waited
    with pytest.raises(StoreUnavailable, match="clock could not be read"):
        writer.clock_between_inserts()
