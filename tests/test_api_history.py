"""The execution-history API over a running collector: list with every filter and
cursor pages, detail with the span tree, delete (single and bulk) from every table,
feedback, export, the live stream, scopes and tenant isolation."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from spanhouse.clickhouse import Store, deletion, history
from spanhouse.collector import api
from tests.collector_harness import Running, ServeProcess, running_collector
from tests.conftest import write
from tests.otlp import request, span, span_id, trace_id

T0 = 1_763_500_000_000_000_000  # 2025-11-18T21:06:40Z in ns


def _execution(i: int, *, status: str = "ok", service: str = "svc-a", name: str = "triage", user: str = "u1",
               session: str = "s1", duration_ms: int = 1000, tools: tuple[tuple[str, bool], ...] = (),
               cost: float = 0.0, text: str = "") -> tuple[str, Any]:
    """One execution as a request (its service is the resource's service.name)."""
    t, root = trace_id(), span_id()
    start = T0 + i * 60_000_000_000
    attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name, "user.id": user,
             "session.id": session, "input.value": f"question {i} {text}", "output.value": f"answer {i}"}
    spans = [span(f"invoke_agent {name}", t, sid=root, start=start, duration_ns=duration_ms * 1_000_000,
                  attributes=attrs, error="root failed badly" if status == "error" else None)]
    for k, (tool, failed) in enumerate(tools):
        spans.append(span(f"execute_tool {tool}", t, parent=root, start=start + k + 1, duration_ns=5_000_000,
                          attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                                      "gen_ai.tool.call.arguments": json.dumps({"k": k}),
                                      "gen_ai.tool.call.result": "ok"},
                          error=f"{tool} exploded" if failed else None,
                          events=[(start + k + 2, "exception", {"exception.type": "ToolError",
                                                               "exception.message": f"{tool} exploded"})] if failed else ()))
    if cost:
        spans.append(span("chat model", t, parent=root, start=start + 50, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20,
            "spanhouse.cost_usd": cost}))
    return t.hex(), request(spans, service=service)


@pytest.fixture(scope="module")
def dataset(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, dict[str, Any]]]:
    tenant = "history-api"
    specs = {
        "a": _execution(0, tools=(("search", False),), cost=0.5),
        "b": _execution(1, status="error", service="svc-b", name="billing", user="u2", session="s2",
                        duration_ms=9000, tools=(("search", True), ("pay", False))),
        "c": _execution(2, name="billing", duration_ms=200, text="needle in haystack", cost=2.0),
        "d": _execution(3, user="u3", tools=(("lookup", False), ("lookup", False), ("lookup", False))),
        "e": _execution(4, service="svc-b", session="s9", duration_ms=30000),
    }
    write(store, tenant, *(req for _, req in specs.values()))
    # a running execution: only the SDK's start marker so far
    running_t = trace_id()
    write(store, tenant, request([span("invoke_agent longjob", running_t, start=T0 + 10 * 60_000_000_000,
                                       duration_ns=0, attributes={"spanhouse.execution.state": "running",
                                                                   "gen_ai.agent.name": "longjob"})]))
    # another tenant with a lookalike execution, which must never show
    write(store, "history-api-other", _execution(5, name="billing")[1])
    ids = {k: v[0] for k, v in specs.items()} | {"running": running_t.hex()}
    with running_collector(store, tmp_path_factory.mktemp("api"), tenant, scopes="ingest,read,admin") as c:
        yield c, ids


def _delete(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.delete(url, timeout=60, **kwargs)


def _post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, timeout=60, **kwargs)


def _get(c: Running, path: str, **params: Any) -> httpx.Response:
    return httpx.get(c.api_url + path, params=params, headers=c.headers(), timeout=30)


def _names(resp: httpx.Response, ids: dict[str, str]) -> list[str]:
    by_id = {v: k for k, v in ids.items()}
    return [by_id[i["trace_id"]] for i in resp.json()["items"]]


@pytest.mark.parametrize("params,expected", [
    ({}, ["running", "e", "d", "c", "b", "a"]),
    ({"status": "error"}, ["b"]),
    ({"status": "running"}, ["running"]),
    ({"service": "svc-b"}, ["e", "b"]),
    ({"name": "billing"}, ["c", "b"]),
    ({"user": "u3"}, ["d"]),
    ({"session": "s9"}, ["e"]),
    ({"since": "2025-11-18T21:08:40Z"}, ["running", "e", "d", "c"]),
    ({"until": "2025-11-18T21:08:40Z"}, ["b", "a"]),
    ({"min_duration": 5000}, ["e", "b"]),
    ({"max_duration": 500}, ["c"]),  # a running one has no duration yet: its 0 matched every max_duration
    ({"min_duration": 0}, ["e", "d", "c", "b", "a"]),
    ({"min_cost": 1}, ["c"]),
    ({"min_cost": 0}, ["running", "e", "d", "c", "b", "a"]),  # a running one (no rollup yet) costs 0 so far
    ({"tool": "search"}, ["b", "a"]),
    ({"has_errors": "true"}, ["b"]),
    ({"q": "NEEDLE"}, ["c"]),
    ({"q": "exploded"}, ["b"]),
    ({"type": "invoke_agent", "service": "svc-a", "max_duration": 1000}, ["d", "c", "a"]),
])
def test_list_filters(dataset: tuple[Running, dict[str, str]], params: dict[str, Any], expected: list[str]) -> None:
    c, ids = dataset
    r = _get(c, "/api/v1/executions", **params)
    assert r.status_code == 200, r.text
    assert _names(r, ids) == expected
    assert r.json()["total"] == len(expected)


def test_list_items_carry_rollup_numbers(dataset: tuple[Running, dict[str, str]]) -> None:
    c, ids = dataset
    items = {i["trace_id"]: i for i in _get(c, "/api/v1/executions").json()["items"]}
    b = items[ids["b"]]
    assert (b["status"], b["spans"], b["tool_calls"], b["failed_tool_calls"], b["tools"]) == ("error", 3, 2, 1, ["pay", "search"])
    assert b["error_message"] == "root failed badly" and b["duration_ms"] == 9000
    a = items[ids["a"]]
    assert (a["input_tokens"], a["output_tokens"], a["cost_usd"]) == (100, 20, 0.5)
    assert items[ids["running"]]["status"] == "running"


def test_cursor_pagination_walks_every_execution_once(dataset: tuple[Running, dict[str, str]]) -> None:
    c, ids = dataset
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = _get(c, "/api/v1/executions", **params).json()
        assert body["total"] == 6
        seen += [i["trace_id"] for i in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [ids[k] for k in ["running", "e", "d", "c", "b", "a"]]


def test_a_listed_duration_given_back_as_a_bound_matches_its_execution(store: Store, tmp_path: Path) -> None:
    """min/max_duration compare in the unit the list shows; multiplied into ns instead,
    33551.689829 ms and 0.000498 ms missed the executions listed with them."""
    tenant = "duration-bounds"
    traces = [trace_id() for _ in range(2)]
    write(store, tenant, request([span("agent", t, start=T0, duration_ns=ns)
                                  for t, ns in zip(traces, (33_551_689_829, 498))]))
    with running_collector(store, tmp_path, tenant, scopes="read") as c:
        listed = {i["trace_id"]: i["duration_ms"] for i in _get(c, "/api/v1/executions").json()["items"]}
        assert sorted(listed.values()) == [0.000498, 33551.689829]
        for t, ms in listed.items():
            for bounds in ({"min_duration": ms}, {"max_duration": ms}):
                assert t in [i["trace_id"] for i in _get(c, "/api/v1/executions", **bounds).json()["items"]]
            exact = _get(c, "/api/v1/executions", min_duration=ms, max_duration=ms).json()
            assert [i["trace_id"] for i in exact["items"]] == [t] and exact["total"] == 1


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"status": "weird"}, {"min_duration": -1},
                                    {"since": "not a date"}, {"cursor": "garbage!!"}, {"has_errors": "maybe"},
                                    {"since": "2025-11-19T00:00:00Z", "until": "2025-11-18T00:00:00Z"}])
def test_bad_parameters_are_422_naming_the_problem(dataset: tuple[Running, dict[str, str]],
                                                   params: dict[str, Any]) -> None:
    c, _ = dataset
    r = _get(c, "/api/v1/executions", **params)
    assert r.status_code == 422, r.text
    detail = json.dumps(r.json()["detail"])
    assert any(k in detail for k in params) or "since must be before until" in detail


@pytest.mark.parametrize("path", ["/api/v1/executions", "/api/v1/export", "/api/v1/stats", "/api/v1/tools",
                                  "/api/v1/tools/search", "/api/v1/performance", "/api/v1/anomalies"])
def test_an_unknown_query_parameter_is_a_422_naming_it_and_what_is_taken(
        dataset: tuple[Running, dict[str, str]], path: str) -> None:
    c, _ = dataset
    r = _get(c, path, has_error="true", limit=5) if path == "/api/v1/executions" else _get(c, path, dayz=3)
    assert r.status_code == 422, r.text
    assert ("'has_error'" if path == "/api/v1/executions" else "'dayz'") in r.json()["detail"]
    assert ("has_errors" if path in ("/api/v1/executions", "/api/v1/export") else "days") in r.json()["detail"]


@pytest.mark.parametrize("field", ["service", "name", "type", "user", "session", "tool", "q"])
def test_sql_injection_in_string_filters_changes_nothing(dataset: tuple[Running, dict[str, str]], field: str) -> None:
    c, _ = dataset
    for attack in ["x' OR 1=1 --", "') OR ('1'='1", "x\\' OR 1=1", "{tenant:String}", "'; DROP TABLE otel_traces; --"]:
        r = _get(c, "/api/v1/executions", **{field: attack})
        assert r.status_code in (200, 422)
        if r.status_code == 200:
            assert r.json()["items"] == [] and r.json()["total"] == 0
    assert _get(c, "/api/v1/executions").json()["total"] == 6


def test_detail_has_span_tree_tool_calls_events_rollup_feedback(dataset: tuple[Running, dict[str, str]]) -> None:
    c, ids = dataset
    r = _get(c, f"/api/v1/executions/{ids['b']}")
    assert r.status_code == 200
    body = r.json()
    assert (body["name"], body["status"], body["failed_tool_calls"]) == ("billing", "error", 1)
    [root] = body["spans_tree"]
    assert root["name"] == "invoke_agent billing" and root["status"] == "error"
    children = {ch["tool"]["name"]: ch for ch in root["children"]}
    assert children["search"]["status"] == "error"
    assert children["search"]["tool"]["arguments"] == '{"k": 0}' and children["pay"]["tool"]["result"] == "ok"
    assert children["search"]["events"][0]["attributes"]["exception.message"] == "search exploded"
    # the type from the exception event when no error.type attribute is set, as in tool_calls
    assert (children["search"]["tool"]["error_type"], children["pay"]["tool"]["error_type"]) == ("ToolError", None)


def test_detail_of_unknown_and_foreign_executions_is_404(store: Store, dataset: tuple[Running, dict[str, str]]) -> None:
    c, _ = dataset
    foreign = store.client.command("SELECT any(TraceId) FROM otel_traces WHERE Tenant = 'history-api-other'")
    assert _get(c, f"/api/v1/executions/{foreign}").status_code == 404
    assert _get(c, f"/api/v1/executions/{'0' * 32}").status_code == 404
    assert _get(c, "/api/v1/executions/not-an-id").status_code == 422


def test_feedback_shows_in_detail(dataset: tuple[Running, dict[str, str]]) -> None:
    c, ids = dataset
    r = _post(c.api_url + "/api/v1/feedback", headers=c.headers(),
                   json={"execution_id": ids["a"], "rating": 4, "comment": "useful"})
    assert r.status_code == 201, r.text
    r = _post(c.api_url + "/api/v1/feedback", headers=c.headers(),
                   json={"execution_id": ids["a"], "name": "accuracy", "value": 0.9})
    assert r.status_code == 201
    fb = {f["name"]: f for f in _get(c, f"/api/v1/executions/{ids['a']}").json()["feedback"]}
    assert fb["user_rating"]["value"] == 4 and fb["user_rating"]["comment"] == "useful"
    assert fb["accuracy"]["value"] == 0.9
    for bad in [{"execution_id": ids["a"], "rating": 6}, {"execution_id": ids["a"]},
                {"execution_id": ids["a"], "rating": 3, "value": 1.0}, {"execution_id": "xyz", "rating": 3},
                {"execution_id": ids["a"], "rating": True}, {"execution_id": ids["a"], "rating": "3"},
                {"execution_id": ids["a"], "rating": 4.5}]:
        assert _post(c.api_url + "/api/v1/feedback", headers=c.headers(), json=bad).status_code == 422
    for number in ["NaN", "Infinity", "-Infinity"]:  # JSON as Python writes it; NaN made averages null
        raw = f'{{"execution_id": "{ids["a"]}", "name": "accuracy", "value": {number}}}'
        r = _post(c.api_url + "/api/v1/feedback", headers={**c.headers(), "content-type": "application/json"},
                  content=raw)
        assert r.status_code == 422, number
    assert _post(c.api_url + "/api/v1/feedback", headers=c.headers(),
                      json={"execution_id": "f" * 32, "rating": 3}).status_code == 404


def test_feedback_refuses_fields_it_does_not_know_and_answers_any_text(dataset: tuple[Running, dict[str, str]]) -> None:
    """A misspelt field (``coment``, ``userId``) was dropped and the rest stored; half an
    emoji (a lone surrogate escape, as JSON.stringify writes a string cut inside one) in
    a refused body made the 422 itself fail (a 500)."""
    c, ids = dataset
    r = _post(c.api_url + "/api/v1/feedback", headers=c.headers(),
              json={"execution_id": ids["a"], "rating": 2, "coment": "typo", "userId": "ada"})
    assert r.status_code == 422 and "coment" in r.text and "userId" in r.text, r.text
    for field in ("comment", "user_id", "name"):
        raw = f'{{"execution_id": "{ids["a"]}", "rating": 2, "{field}": "great \\ud83d"}}'
        r = _post(c.api_url + "/api/v1/feedback", headers={**c.headers(), "content-type": "application/json"},
                  content=raw)
        assert r.status_code == 422, (field, r.status_code, r.text)


def test_feedback_sent_again_with_its_id_replaces_itself(dataset: tuple[Running, dict[str, str]]) -> None:
    """Without an id of the client's own, a retry whose answer was lost stored the rating
    twice (and counted it twice in averages). With one (Langfuse's score id), a resend
    replaces it; a changed rating too."""
    c, ids = dataset
    url = c.api_url + "/api/v1/feedback"
    for rating in (2, 2, 4):
        r = _post(url, headers=c.headers(), json={"execution_id": ids["c"], "name": "helpful", "rating": rating,
                                                  "id": "client-7f3a:1"})
        assert r.status_code == 201 and r.json()["id"] == "client-7f3a:1", r.text
    for _ in range(2):
        assert _post(url, headers=c.headers(), json={"execution_id": ids["c"], "name": "helpful",
                                                     "rating": 1}).status_code == 201
    values = sorted(f["value"] for f in _get(c, f"/api/v1/executions/{ids['c']}").json()["feedback"]
                    if f["name"] == "helpful")
    assert values == [1, 1, 4]
    for bad in ("no spaces", "0123456789abcdef"):  # a feedback span's id: the SDK's rating would be replaced
        assert _post(url, headers=c.headers(), json={"execution_id": ids["c"], "rating": 1, "id": bad}
                     ).status_code == 422, bad


def test_one_feedback_item_is_read_refused_a_second_use_of_its_id_and_deleted(
        dataset: tuple[Running, dict[str, str]]) -> None:
    """There was no way to read, or take back, one rating (Langfuse: GET and DELETE
    /scores/{id}); an id reused for another name or execution made a second item."""
    c, ids = dataset
    url = c.api_url + "/api/v1/feedback"
    r = _post(url, headers=c.headers(), json={"execution_id": ids["d"].upper(), "name": "tone", "value": 0.25,
                                              "comment": "curt", "user_id": "ada", "id": "fb.tone:1"})
    assert r.status_code == 201, r.text
    got = _get(c, "/api/v1/feedback/fb.tone:1")
    assert got.status_code == 200, got.text
    assert {k: v for k, v in got.json().items() if k != "time"} == {
        "id": "fb.tone:1", "execution_id": ids["d"], "name": "tone", "value": 0.25, "comment": "curt",
        "user_id": "ada", "source": "api"}
    for other in ({"execution_id": ids["d"], "name": "accuracy"}, {"execution_id": ids["e"], "name": "tone"}):
        r = _post(url, headers=c.headers(), json={**other, "value": 1.0, "id": "fb.tone:1"})
        assert r.status_code == 409 and "DELETE /api/v1/feedback/fb.tone:1" in r.text, r.text
    assert [f["name"] for f in _get(c, f"/api/v1/executions/{ids['e']}").json()["feedback"]] == []
    assert _post(url, headers=c.headers(), json={"execution_id": ids["d"], "name": "tone", "value": 0.5,
                                                 "id": "fb.tone:1"}).status_code == 201  # a change: same item
    assert _get(c, "/api/v1/feedback/fb.tone:1").json()["value"] == 0.5
    for missing in ("fb.tone:2", "0123456789abcdef"):
        assert _get(c, f"/api/v1/feedback/{missing}").status_code == 404
        assert _delete(f"{url}/{missing}", headers=c.headers()).status_code == 404
    assert _get(c, "/api/v1/feedback/no%20spaces").status_code == 422
    r = _delete(f"{url}/fb.tone:1", headers=c.headers())
    assert r.status_code == 200 and r.json() == {"feedback": 1, "spans": 0}, r.text
    assert _get(c, "/api/v1/feedback/fb.tone:1").status_code == 404
    assert "tone" not in [f["name"] for f in _get(c, f"/api/v1/executions/{ids['d']}").json()["feedback"]]
    assert _get(c, f"/api/v1/executions/{ids['d']}").status_code == 200  # the execution stays


def test_the_api_refuses_a_large_body_before_reading_it(dataset: tuple[Running, dict[str, str]]) -> None:
    """Every body was read whole (before the key was checked): 300 MB without a key grew
    the collector by ~1 GB."""
    c, ids = dataset
    big = b"x" * (2 << 20)
    r = _post(c.api_url + "/api/v1/feedback", headers={"content-type": "application/json"}, content=big)
    assert r.status_code == 413 and "1,048,576 bytes" in r.json()["detail"], r.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it is read
        yield b'{"execution_id": "' + ids["a"].encode() + b'", "rating": 3, "comment": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    r = _post(c.api_url + "/api/v1/feedback", headers={**c.headers(), "content-type": "application/json"},
              content=chunks())
    assert r.status_code == 413, r.text
    comments = [f["comment"] for f in _get(c, f"/api/v1/executions/{ids['a']}").json()["feedback"]]
    assert not any(x.startswith("yyy") for x in comments)
    r = _post(c.api_url + "/api/v1/feedback", headers=c.headers(),
              json={"execution_id": ids["a"], "rating": 3, "comment": "z" * 10_000})  # the largest there is
    assert r.status_code == 201, r.text


def test_a_query_parameter_given_twice_is_refused(dataset: tuple[Running, dict[str, str]]) -> None:
    """The last value was read: ``before=2000-01-01&before=2261-01-01`` deleted everything."""
    c, _ = dataset
    r = httpx.delete(c.api_url + "/api/v1/executions", headers=c.headers(), timeout=30,
                     params=[("before", "2000-01-01T00:00:00"), ("before", "2261-01-01T00:00:00"),
                             ("dry_run", "true")])
    assert r.status_code == 422 and "'before' given more than once" in r.text, r.text
    r = httpx.get(c.api_url + "/api/v1/executions", headers=c.headers(), timeout=30,
                  params=[("service", "nope"), ("service", "svc-b")])
    assert r.status_code == 422, r.text


def test_head_answers_as_get_without_a_body(dataset: tuple[Running, dict[str, str]]) -> None:
    """HTTP requires HEAD wherever GET is served (load balancers probe with it): every GET
    endpoint answered 405."""
    c, ids = dataset
    for path, headers in [("/healthz", {}), ("/readyz", {}), (f"/api/v1/executions/{ids['a']}", c.headers()),
                          ("/api/v1/executions?limit=2", c.headers())]:
        got = httpx.get(c.api_url + path, headers=headers, timeout=30)
        head = httpx.head(c.api_url + path, headers=headers, timeout=30)
        assert (head.status_code, head.content) == (200, b""), path
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert int(head.headers["content-length"]) > 0, path
    assert httpx.head(c.api_url + "/api/v1/executions", timeout=30).status_code == 401  # the key still counts
    with httpx.Client(headers=c.headers(), timeout=10) as client:  # a stream's HEAD ends, and the connection serves on
        for path in ("/api/v1/executions/stream", "/api/v1/export"):
            head = client.head(c.api_url + path)
            assert head.status_code == 200 and head.content == b"", path
            assert client.get(c.api_url + "/healthz").json() == {"status": "ok"}, path


def test_a_client_waiting_to_send_a_large_body_is_refused_before_it_sends(dataset: tuple[Running, dict[str, str]]
                                                                         ) -> None:
    """With Expect: 100-continue (curl's way for bodies past 1 MiB) the client was told to
    go on and sent up to 8 MiB before it was refused."""
    c, _ = dataset
    port = int(c.api_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export_streams_filtered_executions(dataset: tuple[Running, dict[str, str]], fmt: str) -> None:
    c, ids = dataset
    r = _get(c, "/api/v1/export", format=fmt, service="svc-b")
    assert r.status_code == 200
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [row["trace_id"] for row in rows] == [ids["e"], ids["b"]]
        assert rows[1]["tool_calls"] == "2"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", rows[1]["start_time"])
    elif fmt == "json":
        rows = [json.loads(line) for line in r.text.splitlines()]
        assert [row["trace_id"] for row in rows] == [ids["e"], ids["b"]]
        # every field the list gives, with its value (error_spans and tools were left out); the
        # export's start_time keeps the stored nanoseconds
        listed = _get(c, "/api/v1/executions", service="svc-b").json()["items"]
        assert [(k, row.get(k)) for row, item in zip(rows, listed) for k in item
                if k != "start_time" and row.get(k) != item[k]] == []
    else:
        assert r.content[:4] == b"PAR1" and r.content[-4:] == b"PAR1"


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export_read_in_pages_holds_every_execution_once_in_order(store: Store, fmt: str) -> None:
    """An export is read a page at a time (bounded memory); pages of 2 give what one page
    gives, with two executions starting at the same instant across a page boundary."""
    tenant = f"export-pages-{fmt}"
    specs = [_execution(i, tools=(("search", i == 3),) * (i % 3), cost=0.25 * i) for i in (0, 1, 2, 2, 3, 4, 5)]
    write(store, tenant, *(req for _, req in specs))

    def rows(page: int) -> list[dict[str, Any]]:
        data = b"".join(history.export_executions(store.readers, tenant, {}, fmt, page=page))
        if fmt == "csv":
            text = data.decode()
            assert text.count("trace_id") == 1  # one header
            return list(csv.DictReader(io.StringIO(text)))
        if fmt == "json":
            return [json.loads(line) for line in data.decode().splitlines()]
        parquet = pq.ParquetFile(io.BytesIO(data))
        assert parquet.metadata.num_row_groups == (4 if page == 2 else 1)
        return [{k: str(v) for k, v in row.items()} for row in parquet.read().to_pylist()]

    paged, whole = rows(2), rows(1000)
    listed = [i["trace_id"] for i in history.list_executions(store.readers, tenant, {}, limit=100).items]
    assert [r["trace_id"] for r in paged] == listed and len(set(listed)) == 7
    assert paged == whole
    assert {str(r["tool_calls"]) for r in paged} >= {"1", "2"}


def test_scopes(store: Store, tmp_path: Path, dataset: tuple[Running, dict[str, str]]) -> None:
    _, ids = dataset
    with running_collector(store, tmp_path, "history-api", scopes="ingest") as c:
        assert _get(c, "/api/v1/executions").status_code == 403
    with running_collector(store, tmp_path / "r", "history-api", scopes="read") as c:
        assert _get(c, "/api/v1/executions").status_code == 200
        r = _delete(c.api_url + f"/api/v1/executions/{ids['a']}", headers=c.headers())
        assert r.status_code == 403
        assert httpx.get(c.api_url + "/api/v1/executions").status_code == 401


def test_openapi_document_and_docs(dataset: tuple[Running, dict[str, str]]) -> None:
    c, _ = dataset
    doc = httpx.get(c.api_url + "/openapi.json").json()
    assert "/api/v1/executions/{trace_id}" in doc["paths"] and "/api/v1/export" in doc["paths"]
    # how to authenticate, and what an endpoint answers without a key or the scope
    assert {s["type"] for s in doc["components"]["securitySchemes"].values()} == {"http", "apiKey"}
    for path in ("/api/v1/executions", "/api/v1/export", "/api/v1/tools", "/api/v1/stats"):
        assert {"401", "403"} <= set(doc["paths"][path]["get"]["responses"]), path
        assert doc["paths"][path]["get"]["security"], path
    assert set(doc["paths"]["/api/v1/export"]["get"]["responses"]["200"]["content"]) >= {
        "text/csv", "application/x-ndjson", "application/vnd.apache.parquet"}
    assert "text/event-stream" in doc["paths"]["/api/v1/executions/stream"]["get"]["responses"]["200"]["content"]
    assert httpx.get(c.api_url + "/docs").status_code == 200


def _counts(store: Store, tenant: str, trace: str) -> dict[str, int]:
    """Rows of ``trace`` in every stored table keyed by trace id (whatever tables the schema grows)."""
    tables = [t for (t,) in store.client.query(
        "SELECT table FROM system.columns WHERE database = currentDatabase() AND name = 'TraceId' AND table IN "
        "(SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree') "
        "ORDER BY table").result_rows]
    assert tables == ["execution_rollup", "execution_tool_calls", "executions", "feedback", "otel_traces",
                      "otel_traces_trace_id_ts", "tool_calls"]
    return {t: int(store.client.command(f"SELECT count() FROM {t} WHERE Tenant = {{a:String}} AND TraceId = {{b:String}}",
                                        parameters={"a": tenant, "b": trace})) for t in tables}


def test_delete_one_execution_removes_it_everywhere_and_fixes_rollups(store: Store, tmp_path: Path) -> None:
    tenant = "delete-one"
    keep_id, keep = _execution(0, tools=(("search", False), ("search", True)))
    gone_id, gone = _execution(1, status="error", tools=(("search", True), ("fetch", False)))
    write(store, tenant, keep, gone)
    stats = "SELECT ToolName, calls, errors FROM v_tool_stats WHERE Tenant = {t:String} ORDER BY ToolName"
    assert store.client.query(stats, parameters={"t": tenant}).result_rows == [("fetch", 1, 0), ("search", 3, 2)]
    # the tool leaderboards' rollups: the hours touched are rebuilt, and their days whole
    leaderboard = ("SELECT ToolName, sum(Calls), sum(Errors), quantilesDDMerge(0.01, 0.5)(DurationQuantiles) "
                   "FROM {table:Identifier} WHERE Tenant = {t:String} GROUP BY ToolName ORDER BY ToolName")
    for table in ("tool_stats_1d", "tool_stats_1h_by_time"):
        assert store.client.query(leaderboard, parameters={"t": tenant, "table": table}).result_rows == [
            ("fetch", 1, 0, [pytest.approx(5e6, rel=0.01)]), ("search", 3, 2, [pytest.approx(5e6, rel=0.01)])]
    with running_collector(store, tmp_path, tenant, scopes="admin") as c:
        _post(c.api_url + "/api/v1/feedback", headers=c.headers(), json={"execution_id": gone_id, "rating": 1})
        r = _delete(c.api_url + f"/api/v1/executions/{gone_id}", headers=c.headers())
        assert r.status_code == 200 and r.json() == {"executions": 1, "spans": 3}
        assert _delete(c.api_url + f"/api/v1/executions/{gone_id}", headers=c.headers()).status_code == 404
        assert _get(c, f"/api/v1/executions/{gone_id}").status_code == 404
    assert set(_counts(store, tenant, gone_id).values()) == {0}
    assert _counts(store, tenant, keep_id)["otel_traces"] == 3
    assert store.client.query(stats, parameters={"t": tenant}).result_rows == [("search", 2, 1)]
    for table in ("tool_stats_1d", "tool_stats_1h_by_time"):
        assert store.client.query(leaderboard, parameters={"t": tenant, "table": table}).result_rows == [
            ("search", 2, 1, [pytest.approx(5e6, rel=0.01)])]
    per_minute = "SELECT sum(calls) FROM v_tool_stats_1m WHERE Tenant = {t:String}"
    assert store.client.query(per_minute, parameters={"t": tenant}).result_rows == [(2,)]
    patterns = "SELECT ToolName, count FROM v_error_patterns WHERE Tenant = {t:String} ORDER BY ToolName"
    assert store.client.query(patterns, parameters={"t": tenant}).result_rows == [("search", 1)]


def test_bulk_delete_by_time_and_filters(store: Store, tmp_path: Path) -> None:
    tenant = "delete-bulk"
    made = [_execution(i, service="old" if i < 3 else "new") for i in range(5)]
    write(store, tenant, *(req for _, req in made))
    with running_collector(store, tmp_path, tenant, scopes="admin") as c:
        assert _delete(c.api_url + "/api/v1/executions", headers=c.headers()).status_code == 422  # before required
        # a misspelt or empty filter is refused, not read as "every execution"
        for mistake in ({"servce": "old"}, {"service": ""}):
            r = _delete(c.api_url + "/api/v1/executions", headers=c.headers(),
                        params={"before": "2025-11-18T21:10:00Z", **mistake})
            assert r.status_code == 422 and next(iter(mistake)) in r.text, r.text
        assert _get(c, "/api/v1/executions").json()["total"] == 5
        r = _delete(c.api_url + "/api/v1/executions", headers=c.headers(),
                         params={"before": "2025-11-18T21:10:00Z", "service": "old"})
        assert r.json() == {"executions": 3, "spans": 3}
        remaining = [i["trace_id"] for i in _get(c, "/api/v1/executions").json()["items"]]
    assert remaining == [made[4][0], made[3][0]]


def _first_event(api_url: str, headers: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The first execution event of the live stream at ``api_url``, and every line read up to it."""
    lines: list[str] = []
    with httpx.stream("GET", api_url + "/api/v1/executions/stream", params={"poll": 0.2}, headers=headers,
                      timeout=30) as r:
        for line in r.iter_lines():
            lines.append(line)
            if line.startswith("data: "):
                return json.loads(line[6:]), lines
    raise AssertionError(lines)


def _listen(api_url: str, headers: dict[str, str]) -> tuple[threading.Thread, list[tuple[dict[str, Any], list[str]]]]:
    """``_first_event`` in a thread, started: its result lands in the list once it has one."""
    got: list[tuple[dict[str, Any], list[str]]] = []
    listener = threading.Thread(target=lambda: got.append(_first_event(api_url, headers)), daemon=True)
    listener.start()
    return listener, got


def test_stream_sends_newly_stored_executions(store: Store, tmp_path: Path) -> None:
    tenant = "stream-api"
    with running_collector(store, tmp_path, tenant) as c:
        listener, got = _listen(c.api_url, c.headers())
        time.sleep(0.5)
        new_id, req = _execution(0, name="fresh")
        body = req.SerializeToString()
        _post(c.http_url, content=body, headers={"content-type": "application/x-protobuf", **c.headers()})
        write(store, "stream-api-other", _execution(1, name="foreign")[1])
        listener.join(20)
    assert [(e["trace_id"], e["name"]) for e, _ in got] == [(new_id, "fresh")]


def test_a_stream_connecting_during_an_insert_misses_none_of_its_executions(store: Store, tmp_path: Path) -> None:
    """An insert stamps its rows (InsertedAt) when it starts and shows them when it ends.
    A stream connecting in between started past them: the client, listing what was
    stored once connected, did not see them yet, and the stream never sent them (a
    review reproduced it with a batch of 150k executions: 100 ms). The writer's locks,
    held here, stand for that insert; its row is stamped before the stream connects and
    shows after."""
    tenant = "stream-mid-insert"
    with running_collector(store, tmp_path, tenant) as c:
        stamped = store.client.command("SELECT toUnixTimestamp64Milli(now64(3))")
        trace = trace_id().hex()
        listed: list[str] = []
        streamed: list[str] = []
        has_listed = threading.Event()

        def client() -> None:
            with contextlib.suppress(httpx.ReadTimeout), httpx.stream(  # read until 3 s pass without a line
                    "GET", c.api_url + "/api/v1/executions/stream", params={"poll": 0.2}, headers=c.headers(),
                    timeout=httpx.Timeout(30, read=3)) as r:
                for line in r.iter_lines():
                    if line == ": connected":  # what was stored before: the client draws its table
                        page = httpx.get(c.api_url + "/api/v1/executions", headers=c.headers()).json()
                        listed.extend(i["trace_id"] for i in page["items"])
                        has_listed.set()
                    elif line.startswith("data: "):
                        streamed.append(json.loads(line[6:])["trace_id"])

        reader = threading.Thread(target=client, daemon=True)
        with store.writer.paused(), store.writer._inserting:  # what an insert under way holds
            reader.start()
            has_listed.wait(1.5)  # at once before the fix; after it the stream waits for the insert
            store.client.command(
                "INSERT INTO executions (Tenant, StartTime, TraceId, SpanId, Name, SpanName, Status, Version, "
                "InsertedAt) VALUES ({t:String}, now64(9), {id:String}, 'ab', 'mid-insert', 'invoke_agent', 'ok', 1, "
                "fromUnixTimestamp64Milli({at:Int64}))", parameters={"t": tenant, "id": trace, "at": stamped})
        reader.join(10)
    assert has_listed.is_set()
    assert trace in listed + streamed, (listed, streamed)


def test_a_stream_waits_neither_for_a_deletion_nor_holds_inserts_off_waiting_for_a_reader(
        store: Store, tmp_path: Path) -> None:
    """A deletion holds inserts off chunk after chunk (75k executions: 68 s): a stream
    waiting for the writer's gate got no answer, not even ': connected', and its
    keep-alives slipped past 15 s; no insert runs then, so it need not wait. And a
    stream took the gate before a reader: with every reader busy, inserts waited for
    the slowest read."""
    tenant = "stream-beside-deletion"

    def connected_within(c: Running, seconds: float) -> bool:
        try:
            with httpx.stream("GET", c.api_url + "/api/v1/executions/stream", headers=c.headers(),
                              timeout=httpx.Timeout(30, read=seconds)) as r:
                return next(r.iter_lines()) == ": connected"
        except httpx.ReadTimeout:
            return False

    with running_collector(store, tmp_path, tenant) as c:
        with store.writer.paused():  # a deletion's chunk
            assert connected_within(c, 2.0)
        with contextlib.ExitStack() as busy:  # every reader taken by a long read
            for _ in range(store.readers.size):
                busy.enter_context(store.readers.borrow())
            waiting = threading.Thread(target=connected_within, args=(c, 10.0), daemon=True)
            waiting.start()
            time.sleep(0.5)  # the stream is waiting for a reader now
            done = threading.Thread(target=write, args=(store, tenant, _execution(0)[1]), daemon=True)
            done.start()
            done.join(3.0)
            blocked = done.is_alive()  # the insert waiting for the readers to come back
        waiting.join(10)
        done.join(10)
    assert not blocked


def test_streams_waiting_for_an_insert_hold_no_reader(store: Store, tmp_path: Path) -> None:
    """A stream's start waits for an insert under way. It waited holding one of the
    store's six readers: six streams starting during an insert took them all, and every
    API read waited for the insert to end (the store promises a read never waits for an
    insert of spans)."""
    tenant = "stream-no-reader-held"
    with running_collector(store, tmp_path, tenant) as c:
        streams: list[threading.Thread] = []

        def start_stream() -> None:
            with contextlib.suppress(httpx.ReadTimeout), httpx.stream(
                    "GET", c.api_url + "/api/v1/executions/stream", headers=c.headers(),
                    timeout=httpx.Timeout(30, read=6)) as r:
                next(r.iter_lines())

        with store.writer._inserting:  # an insert under way, for 4 s
            for _ in range(store.readers.size + 2):
                streams.append(threading.Thread(target=start_stream, daemon=True))
                streams[-1].start()
            time.sleep(1.0)  # every stream is waiting for the insert now
            started = time.monotonic()
            try:
                answered = httpx.get(c.api_url + "/api/v1/executions", headers=c.headers(), timeout=3).status_code
            except httpx.ReadTimeout:  # waiting for a reader the streams hold until the insert ends
                answered = None
            took = time.monotonic() - started
            time.sleep(max(0.0, 3.0 - took))
        for t in streams:
            t.join(10)
    assert answered == 200 and took < 2.0, (answered, took)


def test_a_stream_whose_store_becomes_unavailable_ends_with_a_word(store: Store, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A read of the feed that fails once the answer has begun (the store closing at a
    shutdown past its timeout, or down) escaped the stream's generator: the server
    logged a traceback and dropped the connection without a word."""
    from spanhouse.errors import StoreUnavailable

    tenant = "stream-store-gone"
    with running_collector(store, tmp_path, tenant) as c:
        clock = store.writer.clock_between_inserts
        calls: list[int] = []

        def failing_after_the_start() -> datetime:
            calls.append(1)
            if len(calls) > 1:
                raise StoreUnavailable("the store's clock could not be read: The client has been closed")
            return clock()

        monkeypatch.setattr(store.writer, "clock_between_inserts", failing_after_the_start)
        with httpx.stream("GET", c.api_url + "/api/v1/executions/stream", params={"poll": 0.2}, headers=c.headers(),
                          timeout=10) as r:
            lines = [line for line in r.iter_lines() if line]
    assert lines == [": connected", ": the store is unavailable; reconnect with Last-Event-ID"]


def test_the_feed_resumes_inside_an_insert_of_more_executions_than_a_page(store: Store, tenant: str) -> None:
    """One insert stores 700 executions at one InsertedAt; the feed pages by 500, so its
    position is (stored at, trace id), not the time alone (which skipped the last 200)."""
    before = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=1)
    write(store, tenant, *[_execution(i)[1] for i in range(700)])
    seen: list[str] = []
    after, after_id = before, ""
    until = history.feed_watermark(store.client)
    for _ in range(5):
        rows = history.executions_after(store.client, tenant, after, after_id, until)
        if not rows:
            break
        seen += [r["trace_id"] for r in rows]
        after, after_id = rows[-1]["stored_at"], rows[-1]["trace_id"]
    assert len(seen) == 700 and len(set(seen)) == 700


def test_pages_walk_executions_that_start_within_the_same_microsecond(store: Store, tenant: str) -> None:
    """Start times are nanoseconds; a cursor at the driver's microseconds skipped the rows
    between the truncated time and the real one (4 executions, limit 1: 1 listed)."""
    start = T0 + 123_456_789  # not a whole microsecond
    write(store, tenant, *[request([span("invoke_agent triage", trace_id(), start=start, attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"})]) for _ in range(4)])
    seen, cursor = [], None
    for _ in range(6):
        page = history.list_executions(store.client, tenant, {}, 1, cursor)
        seen += [i["trace_id"] for i in page.items]
        assert all("start_ns" not in i for i in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert page.total == 4 and len(seen) == 4 and len(set(seen)) == 4


def test_a_cursor_past_an_execution_another_writer_stored_without_a_trace_id_pages_on(store: Store,
                                                                                     tenant: str) -> None:
    """The OpenTelemetry Collector's exporter stores an all-zero trace id as ''; a cursor
    naming it (the API's own next_cursor) was refused as not one of ours, and paging
    stopped there."""
    now = time.time_ns()
    store.client.command(
        "INSERT INTO otel_traces (Tenant, Timestamp, TraceId, SpanId, ParentSpanId, SpanName, ServiceName, Duration,"
        " StatusCode) VALUES ({t:String}, fromUnixTimestamp64Nano({a:Int64}), '', 'aaaaaaaaaaaaaaaa', '', "
        "'zero trace id', 'svc', 1000, 'Ok'), ({t:String}, fromUnixTimestamp64Nano({b:Int64}), {x:String}, "
        "'bbbbbbbbbbbbbbbb', '', 'ordinary', 'svc', 1000, 'Ok')",
        parameters={"t": tenant, "a": now, "b": now - 10**9, "x": "ab" * 16})
    first = history.list_executions(store.client, tenant, {}, 1)
    assert [i["trace_id"] for i in first.items] == [""]
    second = history.list_executions(store.client, tenant, {}, 1, first.next_cursor)
    assert [i["name"] for i in second.items] == ["ordinary"]


@pytest.mark.parametrize("cursor", ["NQ", "bnVsbA", "WyJ4IiwgMV0", "!!", "WzEsIDJd", "Wy0xLCAiYSJd",
                                    "WzEsIlx1ZDgwMCJd"])  # [1,"\ud800"]: a lone surrogate was a 500
def test_a_cursor_that_is_not_ours_is_a_422(dataset: tuple[Running, dict[str, Any]], cursor: str) -> None:
    c, _ = dataset
    r = httpx.get(c.api_url + "/api/v1/executions", params={"cursor": cursor}, headers=c.headers())
    assert r.status_code == 422 and "cursor" in r.text


def test_deleting_an_execution_deletes_the_feedback_spans_about_it(store: Store, tenant: str) -> None:
    """The SDK sends feedback as a span of a trace of its own (and may send it inside
    another trace); deleting the execution leaves neither span, nor its comment, behind."""
    gone_id, gone = _execution(0)
    keep_id, keep = _execution(1)
    own_trace, other_root = trace_id(), span_id()

    def feedback(execution: str, trace: bytes, comment: str, parent: bytes = b"") -> Any:
        return span("spanhouse.feedback", trace, parent=parent, start=T0 + 10**9, attributes={
            "spanhouse.feedback.execution_id": execution, "spanhouse.feedback.value": "1",
            "spanhouse.feedback.comment": comment})

    host = trace_id()
    inside = request([span("invoke_agent other", host, sid=other_root, start=T0)])
    write(store, tenant, gone, keep, request([feedback(gone_id, own_trace, "private complaint by alice")]),
          request([feedback(keep_id, trace_id(), "fine")]), inside,
          request([feedback(gone_id, host, "second complaint", parent=other_root)]))
    assert deletion.delete_traces(store.client, tenant, [gone_id]) == {"executions": 1, "spans": 1}
    comments = store.client.query(
        "SELECT SpanAttributes['spanhouse.feedback.comment'] FROM otel_traces WHERE Tenant = {t:String} "
        "AND SpanName = 'spanhouse.feedback'", parameters={"t": tenant}).result_rows
    assert comments == [("fine",)]
    assert history.get_execution(store.client, tenant, own_trace.hex()) is None
    assert store.client.command("SELECT count() FROM execution_rollup WHERE Tenant = {t:String} AND TraceId = {x:String}",
                                parameters={"t": tenant, "x": own_trace.hex()}) == 0
    assert store.client.command("SELECT count() FROM otel_traces WHERE Tenant = {t:String} AND TraceId = {x:String}",
                                parameters={"t": tenant, "x": host.hex()}) == 1  # the host trace keeps its own span


def test_deleting_an_execution_keeps_feedback_about_another_sent_in_the_same_trace(store: Store,
                                                                                  tenant: str) -> None:
    """A trace of feedback spans only, about two executions: deleting one execution took
    the trace whole, and the other execution's rating left otel_traces (its feedback row
    stayed: the two disagreed). The count deleted is the spans the detail shows (the
    SDK's running marker was counted too)."""
    gone_id, gone = _execution(0)
    keep_id, keep = _execution(1)
    shared = trace_id()
    marker = span("invoke_agent triage", bytes.fromhex(gone_id), start=T0, duration_ns=0,
                  attributes={"spanhouse.execution.state": "running"})

    def feedback(execution: str, comment: str) -> Any:
        return span("spanhouse.feedback", shared, start=T0 + 10**9, attributes={
            "spanhouse.feedback.execution_id": execution, "spanhouse.feedback.value": "1",
            "spanhouse.feedback.comment": comment})

    write(store, tenant, gone, keep, request([marker]),
          request([feedback(gone_id, "about the one deleted"), feedback(keep_id, "about the one kept")]))
    shown = history.get_execution(store.client, tenant, gone_id)
    assert shown is not None and shown["spans"] == 1  # the marker is not a span there
    assert deletion.delete_traces(store.client, tenant, [gone_id]) == {"executions": 1, "spans": 1}
    comments = store.client.query(
        "SELECT SpanAttributes['spanhouse.feedback.comment'] FROM otel_traces WHERE Tenant = {t:String} "
        "AND SpanName = 'spanhouse.feedback'", parameters={"t": tenant}).result_rows
    assert comments == [("about the one kept",)]
    kept = history.get_execution(store.client, tenant, keep_id)
    assert kept is not None and [f["comment"] for f in kept["feedback"]] == ["about the one kept"]


def test_feedback_goes_with_the_span_that_carried_it_whichever_trace_is_deleted(store: Store, tenant: str) -> None:
    """A review deleted the trace holding a feedback span (an execution a judge rated
    another from, the SDK's feedback trace by its id): the span went, its rating stayed
    in the rated execution's detail and statistics. And deleting the rated execution
    took a failed feedback span from another trace while error_patterns kept counting
    it: that trace's service and day were not rebuilt."""
    rated_id, rated = _execution(0)
    judge_id, _ = _execution(1, service="svc-judge")
    judge_root = span_id()
    sdk_trace = trace_id()

    def feedback(trace: bytes, comment: str, **kw: Any) -> Any:
        return span("spanhouse.feedback", trace, start=T0 + 10**9, attributes={
            "spanhouse.feedback.execution_id": rated_id, "spanhouse.feedback.value": "1",
            "spanhouse.feedback.comment": comment}, **kw)

    def comments() -> list[str]:
        shown = history.get_execution(store.client, tenant, rated_id)
        return sorted(f["comment"] for f in shown["feedback"]) if shown is not None else []

    def failed_feedback_counted() -> int:
        return int(store.client.command(
            "SELECT sum(Count) FROM error_patterns WHERE Tenant = {t:String} AND ToolName = 'spanhouse.feedback'",
            parameters={"t": tenant}))

    judge_trace = bytes.fromhex(judge_id)
    write(store, tenant, rated, request([span("invoke_agent judge", judge_trace, sid=judge_root, start=T0)]),
          request([feedback(judge_trace, "by the judge", parent=judge_root)], service="svc-judge"),
          request([feedback(sdk_trace, "by the sdk")]))
    assert comments() == ["by the judge", "by the sdk"]
    deletion.delete_traces(store.client, tenant, [judge_id])
    assert comments() == ["by the sdk"]
    deletion.delete_traces(store.client, tenant, [sdk_trace.hex()])
    assert comments() == []
    assert history.feedback_items(store.client, tenant, rated_id) == []

    other_id, other = _execution(2, service="svc-other")
    other_root = span_id()
    other_trace = bytes.fromhex(other_id)
    write(store, tenant, other, request([span("invoke_agent host", other_trace, sid=other_root, start=T0),
                                          feedback(other_trace, "angry", parent=other_root, error="judge failed")],
                                         service="svc-other"))
    assert failed_feedback_counted() == 1
    deletion.delete_traces(store.client, tenant, [rated_id])  # its failed rating, in svc-other's trace, goes
    assert store.client.command("SELECT count() FROM otel_traces WHERE Tenant = {t:String} AND SpanName = "
                                "'spanhouse.feedback'", parameters={"t": tenant}) == 0
    assert failed_feedback_counted() == 0


def test_a_feedback_span_id_sent_again_in_another_trace_rates_its_own_execution_in_deletion(
        store: Store, tenant: str) -> None:
    """A client with deterministic span ids sends two feedback spans with one id, in two
    traces, about two executions. Deleting one execution took the other's feedback span
    (matched by span id alone); deleting the trace carrying one span took the other's
    rating (its feedback row has the same id)."""
    x_id, x = _execution(0)
    y_id, y = _execution(1)
    z_id, z = _execution(2)
    shared = span_id()

    def feedback(execution: str, comment: str) -> Any:
        return span("spanhouse.feedback", trace_id(), sid=shared, start=T0 + 10**9, attributes={
            "spanhouse.feedback.execution_id": execution, "spanhouse.feedback.value": "1",
            "spanhouse.feedback.comment": comment})

    def comments(execution: str) -> list[str]:
        shown = history.get_execution(store.client, tenant, execution)
        return [f["comment"] for f in shown["feedback"]] if shown is not None else []

    def feedback_spans() -> list[str]:
        return sorted(c for (c,) in store.client.query(
            "SELECT SpanAttributes['spanhouse.feedback.comment'] FROM otel_traces WHERE Tenant = {t:String} "
            "AND SpanName = 'spanhouse.feedback'", parameters={"t": tenant}).result_rows)

    about_z = feedback(z_id, "about z")
    write(store, tenant, x, y, z, request([feedback(x_id, "about x")]), request([feedback(y_id, "about y")]),
          request([about_z]))
    deletion.delete_traces(store.client, tenant, [x_id])
    assert feedback_spans() == ["about y", "about z"]
    assert comments(y_id) == ["about y"] and comments(z_id) == ["about z"]
    deletion.delete_traces(store.client, tenant, [about_z.trace_id.hex()])  # the trace carrying z's rating
    assert comments(z_id) == [] and comments(y_id) == ["about y"]
    assert feedback_spans() == ["about y"]


def test_deleting_feedback_sent_over_otlp_removes_its_span_and_what_counted_it(store: Store, tenant: str) -> None:
    """Feedback sent over OTLP is a span: deleting the item removes it from otel_traces
    (a trace of its own, as the SDK sends, also from the trace-time lookup), and a
    feedback span sent with an error status from the error patterns it counted in.
    Feedback sent inside another trace leaves that trace's spans alone."""
    rated_id, rated = _execution(0)
    own, host, root = trace_id(), trace_id(), span_id()
    own_sid, inside_sid = span_id(), span_id()

    def feedback(trace: bytes, sid: bytes, comment: str, **kw: Any) -> Any:
        return span("spanhouse.feedback", trace, sid=sid, start=T0 + 10**9, attributes={
            "spanhouse.feedback.execution_id": rated_id, "spanhouse.feedback.value": "1",
            "spanhouse.feedback.comment": comment}, **kw)

    def count(sql: str, **params: Any) -> int:
        return int(store.client.command(sql, parameters={"t": tenant, **params}))

    write(store, tenant, rated, request([feedback(own, own_sid, "bad", error="rated in anger")]),
          request([span("invoke_agent host", host, sid=root, start=T0),
                   feedback(host, inside_sid, "inside", parent=root)]))
    patterns = "SELECT sum(Count) FROM error_patterns WHERE Tenant = {t:String} AND ToolName = 'spanhouse.feedback'"
    assert count(patterns) == 1
    item = history.feedback_items(store.client, tenant, own_sid.hex().upper())
    assert [(f["id"], f["execution_id"], f["source"]) for f in item] == [(own_sid.hex(), rated_id, "otlp")]

    removed = deletion.delete_feedback(store.client, tenant, history.feedback_key(own_sid.hex().upper()))
    assert removed == {"feedback": 1, "spans": 1}
    assert count("SELECT count() FROM otel_traces WHERE Tenant = {t:String} AND TraceId = {x:String}", x=own.hex()) == 0
    assert count("SELECT count() FROM otel_traces_trace_id_ts WHERE Tenant = {t:String} AND TraceId = {x:String}",
                 x=own.hex()) == 0
    assert count(patterns) == 0
    assert history.feedback_items(store.client, tenant, own_sid.hex()) == []
    assert deletion.delete_feedback(store.client, tenant, own_sid.hex()) is None

    assert deletion.delete_feedback(store.client, tenant, inside_sid.hex()) == {"feedback": 1, "spans": 1}
    assert count("SELECT count() FROM otel_traces WHERE Tenant = {t:String} AND TraceId = {x:String}", x=host.hex()) == 1
    assert count("SELECT count() FROM otel_traces_trace_id_ts WHERE Tenant = {t:String} AND TraceId = {x:String}",
                 x=host.hex()) == 1
    shown = history.get_execution(store.client, tenant, rated_id)
    assert shown is not None and shown["feedback"] == []
    assert count("SELECT count() FROM feedback WHERE Tenant = {t:String}") == 0


def test_times_are_utc_whatever_the_collectors_time_zone(tmp_path: Path) -> None:
    """The embedded engine takes the process's TZ: a collector started in Asia/Kolkata
    read the API's UTC times as local ones (filters and deletion off by 5.5 hours),
    printed local times as UTC, and the live stream replayed executions stored before
    it connected (in a zone west of UTC it stayed silent for hours)."""
    start = 1_763_500_000 * 10**9  # 2025-11-18T21:06:40Z
    traces = [trace_id() for _ in range(4)]
    serve = ServeProcess(tmp_path / "store", env={"TZ": "Asia/Kolkata"})
    ports = serve.start()
    api, otlp = serve.api_url + "/api/v1", f"http://127.0.0.1:{ports['http_port']}/v1/traces"
    try:
        for i, t in enumerate(traces):  # an hour apart
            body = request([span("agent", t, start=start + i * 3600 * 10**9)]).SerializeToString()
            assert httpx.post(otlp, content=body, headers={"content-type": "application/x-protobuf"}).status_code == 200
        deadline = time.monotonic() + 30
        while httpx.get(api + "/executions").json()["total"] < 4:
            assert time.monotonic() < deadline, "the executions were not stored"
            time.sleep(0.2)
        listed = httpx.get(api + "/executions").json()["items"]
        assert [e["start_time"] for e in listed][::-1] == [
            f"2025-11-18T{h}:06:40+00:00" for h in ("21", "22", "23")] + ["2025-11-19T00:06:40+00:00"]
        assert httpx.get(api + "/executions", params={"since": "2025-11-18T22:06:40Z"}).json()["total"] == 3
        assert httpx.get(api + "/executions", params={"until": "2025-11-18T22:06:40+00:00"}).json()["total"] == 1
        assert httpx.get(api + "/executions", params={"until": "2025-11-18T22:06:40"}).json()["total"] == 1
        # One bound without an offset and one with: the same instants (this was a 500)
        assert httpx.get(api + "/executions", params={"since": "2025-11-18T22:06:40",
                                                      "until": "2025-11-19T04:36:40+05:30"}).json()["total"] == 1
        mixed = httpx.get(api + "/export", params={"since": "2025-11-18T23:06:40+00:00", "until": "2025-11-18T22:06:40"})
        assert mixed.status_code == 422 and "since must be before until" in mixed.text
        export = [json.loads(line)["start_time"] for line in httpx.get(api + "/export").text.splitlines()]
        assert export[-1] == "2025-11-18T21:06:40.000000000Z"  # ISO 8601 in UTC, as the list's
        assert httpx.delete(api + "/executions", params={"before": "2025-11-18T22:06:40Z", "dry_run": "true"}
                            ).json() == {"executions": 1}
        listener, got = _listen(serve.api_url, {})
        time.sleep(1)  # connected: only executions stored from now on
        late = trace_id()
        body = request([span("agent", late, start=time.time_ns())]).SerializeToString()
        assert httpx.post(otlp, content=body, headers={"content-type": "application/x-protobuf"}).status_code == 200
        listener.join(30)
        assert [e["trace_id"] for e, _ in got] == [late.hex()]
    finally:
        assert serve.terminate() == 0


def test_min_cost_compares_the_cost_as_shown(store: Store, tenant: str) -> None:
    """0.1 + 0.7 is 0.7999999999999999 in floating point: shown as 0.8, it was left out of
    min_cost=0.8."""
    two, one = trace_id(), trace_id()
    write(store, tenant, request([span("agent", two, attributes={"spanhouse.cost_usd": 0.1}),
                                  span("llm", two, attributes={"spanhouse.cost_usd": 0.7})]),
          request([span("agent", one, attributes={"spanhouse.cost_usd": 0.8})]))
    page = history.list_executions(store.client, tenant, {"min_cost": 0.8})
    assert sorted(i["trace_id"] for i in page.items) == sorted([two.hex(), one.hex()])
    assert [i["cost_usd"] for i in page.items] == [0.8, 0.8]


def test_a_reconnecting_stream_resumes_after_its_last_event(store: Store, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Each event has an id; a client reconnecting with Last-Event-ID gets what was stored
    while it was away (the browser's EventSource does this by itself). An idle stream
    sends keep-alive comments."""
    monkeypatch.setattr(api, "KEEPALIVE_S", 0.5)
    tenant = "stream-resume"
    with running_collector(store, tmp_path, tenant) as c:
        listener, got = _listen(c.api_url, c.headers())
        time.sleep(1.5)  # idle: keep-alive comments come meanwhile
        first_id, first_req = _execution(0, name="before-gap")
        _post(c.http_url, content=first_req.SerializeToString(),
              headers={"content-type": "application/x-protobuf", **c.headers()})
        listener.join(20)
        event, lines = got[0]
        assert event["trace_id"] == first_id and ": keep-alive" in lines
        event_id = next(line[4:] for line in lines if line.startswith("id: "))
        # away: an execution is stored; reconnecting with the last id delivers it first
        gap_id, gap_req = _execution(1, name="during-gap")
        write(store, tenant, gap_req)
        resumed, _ = _first_event(c.api_url, {**c.headers(), "Last-Event-ID": event_id})
        assert resumed["trace_id"] == gap_id
        # not ours, past every date (was a 500), in the year 9999 (waited for nothing), or with a
        # lone surrogate for a trace id (could not be bound: the stream was cut at each reconnect)
        for bad in ("nonsense", history.encode_cursor(2**62, "ab" * 16),
                    history.encode_cursor(253402300799000, "ab" * 16), history.encode_cursor(1, "\ud800")):
            r = httpx.get(c.api_url + "/api/v1/executions/stream", headers={**c.headers(), "Last-Event-ID": bad})
            assert r.status_code == 422 and "Last-Event-ID" in r.text


def test_stream_event_ids_read_a_naive_time_as_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ClickHouse server in UTC hands back naive datetimes: read as local time, a client
    west of UTC resumed hours ahead (missing what was stored meanwhile), east of it hours
    behind (executions again)."""
    naive = datetime(2025, 11, 18, 21, 6, 40, 123_000)
    for zone in ("America/New_York", "Asia/Kolkata"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        try:
            assert api._event_id(naive, "ab" * 16) == api._event_id(naive.replace(tzinfo=timezone.utc), "ab" * 16)
        finally:
            monkeypatch.undo()
            time.tzset()
