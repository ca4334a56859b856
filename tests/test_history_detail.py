"""Execution detail (history.get_execution) over the store: the trace's time range is
looked up once and bounds the span and execution reads, so traces written piecemeal,
running executions, traces without a lookup row and oversized trees are checked here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spanhouse.clickhouse import Store, history, queries
from tests.collector_harness import in_child
from tests.conftest import write
from tests.otlp import request, span, span_id, trace_id

T0 = 1_763_500_000_000_000_000  # 2025-11-18T21:06:40Z in ns
DAY = 86_400_000_000_000
AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}


def _names(tree: list[dict[str, Any]]) -> list[str]:
    """Span names depth first."""
    return [n for node in tree for n in [node["name"], *_names(node["children"])]]


def test_trace_written_in_several_inserts_across_days_is_whole(store: Store, tenant: str) -> None:
    t, root = trace_id(), span_id()
    write(store, tenant, request([span("invoke_agent planner", t, start=T0, duration_ns=0,
                                       attributes={**AGENT, "spanhouse.execution.state": "running"})]))
    write(store, tenant, request([span("step one", t, parent=root, start=T0 + 1_000)]))
    write(store, tenant, request([span("step two", t, parent=root, start=T0 + 8 * DAY)]))
    found = history.get_execution(store.client, tenant, t.hex())
    assert found is not None and found["status"] == "running" and _names(found["spans_tree"]) == ["step one", "step two"]
    write(store, tenant, request([span("invoke_agent planner", t, sid=root, start=T0, duration_ns=9 * DAY,
                                       attributes=AGENT)]))
    found = history.get_execution(store.client, tenant, t.hex())
    assert found is not None and found["status"] == "ok" and found["spans"] == 3
    assert _names(found["spans_tree"]) == ["invoke_agent planner", "step one", "step two"]
    assert found["spans_truncated"] is False


def test_trace_without_a_lookup_row_still_has_its_execution_row(store: Store, tenant: str) -> None:
    t = trace_id()
    write(store, tenant, request([span("invoke_agent planner", t, start=T0, attributes=AGENT)]))
    store.client.command("DELETE FROM otel_traces_trace_id_ts WHERE Tenant = {t:String}", parameters={"t": tenant})
    found = history.get_execution(store.client, tenant, t.hex())
    # Spans are found through the lookup row only (as they always were); the execution is not lost.
    assert found is not None and (found["name"], found["status"], found["spans"]) == ("planner", "ok", 1)
    assert found["spans_tree"] == []
    assert history.get_execution(store.client, tenant, trace_id().hex()) is None


def test_oversized_tree_keeps_the_earliest_spans_and_says_so(store: Store, tenant: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    t, root = trace_id(), span_id()
    write(store, tenant, request([span("invoke_agent planner", t, sid=root, start=T0, attributes=AGENT),
                                  *(span(f"step {i}", t, parent=root, start=T0 + i) for i in range(1, 5))]))
    monkeypatch.setattr(history, "MAX_SPANS", 3)
    found = history.get_execution(store.client, tenant, t.hex())
    assert found is not None and found["spans_truncated"] is True and found["spans"] == 5
    assert _names(found["spans_tree"]) == ["invoke_agent planner", "step 1", "step 2"]
    monkeypatch.setattr(history, "MAX_SPANS", 5)
    found = history.get_execution(store.client, tenant, t.hex())
    assert found is not None and found["spans_truncated"] is False and len(_names(found["spans_tree"])) == 5


def test_a_span_alone_in_its_insert_late_in_the_last_second_is_in_the_tree(store: Store, tenant: str) -> None:
    """The span read is bounded by whole seconds [since, until). Compared with a DateTime
    bound, ClickHouse's index analysis of the DateTime64 Timestamp dropped a part holding
    only spans in the trace's last second; the bounds are DateTime64 now."""
    t, root = trace_id(), span_id()
    write(store, tenant, request([span("step a", t, parent=root, start=T0 + 1_200_000_000)]))
    write(store, tenant, request([span("step b", t, parent=root, start=T0 + 5_500_000_000)]))
    write(store, tenant, request([span("invoke_agent planner", t, sid=root, start=T0, duration_ns=5_600_000_000,
                                       attributes=AGENT)]))
    found = history.get_execution(store.client, tenant, t.hex())
    assert found is not None and found["spans"] == 3
    assert _names(found["spans_tree"]) == ["invoke_agent planner", "step a", "step b"]


def test_the_span_read_uses_the_trace_ordered_projection(store: Store, tenant: str) -> None:
    """With more spans than one granule of otel_traces' own order, a trace's spans are read
    from the trace-ordered projection (0013), one small granule, not from the granule of
    each of its span names; and the tree is the same."""
    traces = [trace_id() for _ in range(4_000)]
    write(store, tenant, *(request([span(f"step {(i * 7 + k) % 40}", t, start=T0 + i * 1_000_000 + k)
                                    for k in range(10)]) for i, t in enumerate(traces)))
    wanted = traces[1_234]
    params = {"tenant": tenant, "trace_id": wanted.hex(), "limit": 5_001,
              **queries.rows(store.client, "execution_bounds", {"tenant": tenant, "trace_id": wanted.hex()})[0]}
    plan = "\n".join(r[0] for r in store.client.query(
        "EXPLAIN indexes = 1 " + queries.render("execution_spans"), parameters=params).result_rows)
    assert "ReadFromMergeTree (by_trace)" in plan, plan
    found = history.get_execution(store.client, tenant, wanted.hex())
    assert found is not None and sorted(_names(found["spans_tree"])) == sorted(
        f"step {(1_234 * 7 + k) % 40}" for k in range(10))



_DELETED_FROM_THE_PROJECTION = """
import sys
from spanhouse.clickhouse import IngestItem, history, open_store
from spanhouse.clickhouse.deletion import delete_traces
from tests.otlp import request, span, trace_id

store = open_store(sys.argv[1])
T0 = int(sys.argv[2])
def write(*requests):
    store.writer.write([IngestItem("acme", r.SerializeToString()) for r in requests])
traces = [trace_id() for _ in range(4_000)]  # more than a granule of otel_traces' own order
write(*(request([span(f"step {(i * 7 + k) % 40}", t, start=T0 + i * 1_000_000 + k) for k in range(10)])
        for i, t in enumerate(traces)))
wanted = traces[1_234]
print(delete_traces(store.client, "acme", [wanted.hex()])["spans"])
by_trace = "SELECT count() FROM otel_traces WHERE Tenant = 'acme' AND TraceId = {trace_id:String}"
read_from_projection = {"preferred_optimize_projection_name": "by_trace", "force_optimize_projection_name": "by_trace"}
print(store.client.query(by_trace, parameters={"trace_id": wanted.hex()}, settings=read_from_projection).result_rows)
write(request([span("late step", wanted, start=T0 + 1_234 * 1_000_000 + 20)]))
found = history.get_execution(store.client, "acme", wanted.hex())
print([node["name"] for node in found["spans_tree"]])
store.close()
"""


def test_deleted_spans_are_gone_from_the_trace_ordered_projection(tmp_path: Path) -> None:
    """The engine keeps a lightweight DELETE's rows in projections until a merge;
    deletion applies the mask: a late span of the trace brings back its lookup bounds,
    and only it is shown. A store of its own (a deletion on the session's large store
    takes ~15 s)."""
    assert in_child(_DELETED_FROM_THE_PROJECTION, tmp_path / "store", str(T0)) == ["10", "[(0,)]", "['late step']"]


_WRITE_THEN_READ = """
import sys
from spanhouse.clickhouse import history, open_store
from tests.conftest import write
from tests.otlp import request, span, trace_id
store = open_store(sys.argv[1])
if sys.argv[2] == "write":
    t = trace_id()
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
    evening = 1_700_000_000_000_000_000  # 2023-11-14 22:13 UTC, 2023-11-15 07:13 in Tokyo
    write(store, "acme", request([span("invoke_agent planner", t, start=evening, duration_ns=10**9),
                                  span("execute_tool search", t, start=evening + 10**8, attributes=tool)]))
    print(t.hex())
else:
    found = history.get_execution(store.readers, "acme", sys.argv[3])
    print(found["spans"], [node["name"] for node in found["spans_tree"]])
    print(store.client.command("SELECT count() FROM tool_calls WHERE Timestamp BETWEEN "
                               "toDateTime64('2023-11-14 22:13:00', 9, 'UTC') AND toDateTime64('2023-11-14 22:14:00', 9, 'UTC')"))
print(store.prunes_partitions)
store.close()
"""


def test_a_store_written_in_one_time_zone_is_read_whole_in_another(tmp_path: Path) -> None:
    """The embedded engine computes a row's day partition in the zone of the process
    writing it and pruned a read's partitions by the reading process's dates: an
    execution written in Tokyo and shown by a collector on UTC had no spans. A store
    only ever opened in one zone keeps that pruning (a fifth of a detail's time)."""
    data = tmp_path / "store"
    written, prunes = in_child(_WRITE_THEN_READ, data, "write", tz="Asia/Tokyo")
    assert prunes == "True"
    assert in_child(_WRITE_THEN_READ, data, "read", written, tz="Asia/Tokyo")[-1] == "True"
    whole = ["2 ['invoke_agent planner', 'execute_tool search']", "1", "False"]
    assert in_child(_WRITE_THEN_READ, data, "read", written, tz="UTC") == whole
    assert in_child(_WRITE_THEN_READ, data, "read", written, tz="Asia/Tokyo") == whole  # two zones wrote it now


def test_a_store_holding_spans_before_its_zones_were_recorded_is_read_without_pruning(tmp_path: Path) -> None:
    """Which zones wrote a store that held spans before migration 0021 is unknown."""
    old = ("import sys\n"
           "from spanhouse.clickhouse import IngestItem, Writer, connect, embedded_path, migrations\n"
           "from tests.otlp import request, span, trace_id\n"
           "known = migrations.schema_files\n"
           "migrations.schema_files = lambda: [m for m in known() if m.version < 21]\n"
           "client = connect(sys.argv[1])\n"
           "migrations.migrate(client, exclusive=True)\n"
           "writer = Writer(connect(sys.argv[1]), embedded_path(sys.argv[1]))\n"
           "writer.write([IngestItem('acme', request([span('s', trace_id())]).SerializeToString())])\n"
           "writer.close(); client.close()\n")
    opened = ("import sys\nfrom spanhouse.clickhouse import open_store\ns = open_store(sys.argv[1])\n"
              "print(s.prunes_partitions)\ns.close()\n")
    in_child(old, tmp_path / "old")
    assert in_child(opened, tmp_path / "old") == ["False"] and in_child(opened, tmp_path / "new") == ["True"]


def test_tool_calls_of_every_convention_show_their_arguments_and_result(store: Store, tenant: str) -> None:
    t, root = trace_id(), span_id()
    write(store, tenant, request([
        span("invoke_agent planner", t, sid=root, start=T0, attributes=AGENT),
        span("execute_tool a", t, parent=root, start=T0 + 1, attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.call.arguments": "{\"q\": 1}",
            "gen_ai.tool.call.result": "r1"}),
        span("tool b", t, parent=root, start=T0 + 2, attributes={
            "openinference.span.kind": "TOOL", "input.value": "in2", "output.value": "r2"}),
        span("web_search.tool", t, parent=root, start=T0 + 3, attributes={
            "traceloop.span.kind": "tool", "traceloop.entity.input": "{\"query\": \"weather\"}",
            "traceloop.entity.output": "{\"temp\": 20}"}),
        span("execute_tool d", t, parent=root, start=T0 + 4, attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.call.arguments": "", "input.value": "in4"}),
    ]))
    found = history.get_execution(store.client, tenant, t.hex())
    assert found is not None
    tools = [(c["tool"]["arguments"], c["tool"]["result"]) for c in found["spans_tree"][0]["children"]]
    assert tools == [("{\"q\": 1}", "r1"), ("in2", "r2"), ("{\"query\": \"weather\"}", "{\"temp\": 20}"), ("in4", None)]


def test_spans_whose_parents_form_a_cycle_stay_in_the_tree(store: Store, tenant: str) -> None:
    """Spans below a cycle keep their parents, even when one of them starts before the
    cycle's spans (clock skew): only a span of the cycle is cut to become a root."""
    t, a, b, c, e = trace_id(), span_id(), span_id(), span_id(), span_id()
    write(store, tenant, request([
        span("invoke_agent planner", t, start=T0 + 5, attributes=AGENT),
        span("e", t, sid=e, parent=c, start=T0),  # the earliest: below c, below the cycle
        span("c", t, sid=c, parent=a, start=T0 + 1),
        span("a", t, sid=a, parent=b, start=T0 + 2),
        span("b", t, sid=b, parent=a, start=T0 + 3),
    ]))
    found = history.get_execution(store.client, tenant, t.hex())
    assert found is not None and sorted(_names(found["spans_tree"])) == ["a", "b", "c", "e", "invoke_agent planner"]

    def shape(node: dict[str, Any]) -> object:
        return node["name"], sorted(shape(child) for child in node["children"])

    assert sorted(shape(root) for root in found["spans_tree"]) == [
        ("a", [("b", []), ("c", [("e", [])])]), ("invoke_agent planner", [])]


def test_a_chain_deeper_than_the_tree_keeps_every_span_below_its_last_level(store: Store, tenant: str) -> None:
    """A chain of 3,000 spans (a recursive agent; any client can send one) nested 3,000
    levels deep, and the API's JSON encoder gave up: the detail was a 500. Below
    MAX_TREE_DEPTH the spans are the last level's children, in order, each with its
    real parent's id."""
    t, ids = trace_id(), [span_id() for _ in range(3000)]
    write(store, tenant, request([span(f"s{i}", t, sid=sid, parent=ids[i - 1] if i else b"", start=T0 + i)
                                  for i, sid in enumerate(ids)]))
    found = history.get_execution(store.client, tenant, t.hex())
    assert found is not None
    json.dumps(found)  # as the API answers it
    node, depth = found["spans_tree"][0], 1
    while len(node["children"]) == 1:
        node, depth = node["children"][0], depth + 1
    assert depth == history.MAX_TREE_DEPTH and node["name"] == f"s{depth - 1}"
    below = node["children"]
    assert [n["name"] for n in below] == [f"s{i}" for i in range(depth, 3000)]
    assert [n["parent_span_id"] for n in below] == [sid.hex() for sid in ids[depth - 1:2999]]
    assert all(n["children"] == [] for n in below)
