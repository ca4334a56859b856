"""End to end: decorated applications in child interpreters send through a real collector
on 127.0.0.1 into the embedded store, and spanhouse's views show what they did: per-tool
statistics, executions (running while they run), usage and cost, sessions, feedback,
nothing of an unrecorded execution; and a forked worker's spans arrive too."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spanhouse.clickhouse import Store
from tests.collector_harness import running_collector

REPO = Path(__file__).resolve().parents[1]


def sample_app() -> None:
    """A small research agent, configured only through the standard OTEL_* variables; it
    never calls flush(): the spans must leave at interpreter exit."""
    from spanhouse import sdk

    sdk.configure()
    research_ids: list[str] = []

    @sdk.tool
    def search(query: str) -> list[str]:
        if query == "fail":
            raise TimeoutError("search backend timed out after 30s")
        return [f"{query}-1", f"{query}-2"]

    @sdk.tool
    def fetch(url: str) -> str:
        return f"contents of {url}"

    @sdk.llm(model="gpt-4o", provider="openai")
    def think(prompt: str) -> str:
        sdk.record_usage(input_tokens=1000, output_tokens=200)
        return "search, then fetch"

    @sdk.agent
    def researcher(topic: str) -> str:
        think(topic)
        return fetch(search(topic)[0])

    @sdk.execution(name="research")
    def research(topic: str) -> str:
        research_ids.append(sdk.current_execution_id() or "")
        return researcher(topic)

    @sdk.tool
    def secret_tool(data: str) -> str:
        return data

    @sdk.execution(name="private", record=False)
    def private() -> str:
        return secret_tool("do-not-store")

    @sdk.execution(name="long")
    def long_running() -> None:
        print("started", sdk.current_execution_id(), flush=True)
        sys.stdin.readline()  # until the test has seen it listed as running

    with sdk.session(session_id="sess-1", user_id="alice"):
        for topic in ("a", "b", "fail"):
            with contextlib.suppress(TimeoutError):
                research(topic)
        private()
        sdk.feedback(research_ids[0], rating=5, comment="great answer")
        print("rated", research_ids[0], flush=True)
        long_running()


def start_app(target: str, env: dict[str, str]) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANHOUSE_"))}
    full_env.update(env)
    return subprocess.Popen([sys.executable, "-c", f"from tests.test_sdk_e2e import {target}; {target}()"],
                            cwd=REPO, env=full_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def query(store: Store, tenant: str, sql: str) -> list[tuple[Any, ...]]:
    return store.client.query(sql, parameters={"t": tenant}).result_rows  # type: ignore[no-any-return]


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_sample_app_through_a_real_collector(store: Store, tmp_path: Path, tenant: str) -> None:
    with running_collector(store, tmp_path, tenant) as c:
        app = start_app("sample_app", {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{c.grpc_target}",
            "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{c.key}",
            "OTEL_SERVICE_NAME": "sample-app",
        })
        try:
            assert app.stdout is not None and app.stdin is not None
            rated, started = app.stdout.readline().split(), app.stdout.readline().split()
            if rated[:1] != ["rated"] or started[:1] != ["started"]:  # the app died: show why
                app.kill()
                raise AssertionError(f"{rated} {started}\n{app.stderr.read() if app.stderr else ''}")
            rated_id, long_id = rated[1], started[1]

            def long_status() -> list[tuple[Any, ...]]:
                c.wait_drained()
                return query(store, tenant, "SELECT Status, duration_ms FROM v_executions "
                                            f"WHERE Tenant = {{t:String}} AND TraceId = '{long_id}'")

            assert eventually(long_status) == [("running", 0.0)]  # listed while it runs, before any flush
            app.stdin.write("\n")
            app.stdin.flush()
            assert app.wait(60) == 0, app.stderr.read() if app.stderr else ""
        finally:
            if app.poll() is None:
                app.kill()
        c.wait_drained()

        assert query(store, tenant, "SELECT ServiceName, ToolName, calls, errors, successes, success_rate "
                                    "FROM v_tool_stats WHERE Tenant = {t:String} ORDER BY ToolName") == [
            ("sample-app", "fetch", 2, 0, 2, 1.0),
            ("sample-app", "search", 3, 1, 2, 0.666667),
        ]
        executions = query(store, tenant, "SELECT Name, Type, Status, ErrorType, UserId, SessionId, Input, spans, "
                                          "tool_calls, failed_tool_calls, input_tokens, output_tokens, "
                                          "round(cost_usd, 6), tool_names FROM v_executions "
                                          "WHERE Tenant = {t:String} ORDER BY Name, Input")
        cost = round((1000 * 2.5 + 200 * 10) / 1e6, 6)
        assert [(*row[:-1], sorted(row[-1])) for row in executions] == [
            ("long", "invoke_workflow", "ok", "", "alice", "sess-1", "{}", 1, 0, 0, 0, 0, 0.0, []),
            ("research", "invoke_workflow", "ok", "", "alice", "sess-1", '{"topic":"a"}', 5, 2, 0, 1000, 200, cost,
             ["fetch", "search"]),
            ("research", "invoke_workflow", "ok", "", "alice", "sess-1", '{"topic":"b"}', 5, 2, 0, 1000, 200, cost,
             ["fetch", "search"]),
            ("research", "invoke_workflow", "error", "TimeoutError", "alice", "sess-1", '{"topic":"fail"}', 4, 1, 1,
             1000, 200, cost, ["search"]),
        ]
        assert query(store, tenant, "SELECT Name, Value, Comment, UserId FROM feedback FINAL "
                                    f"WHERE Tenant = {{t:String}} AND TraceId = '{rated_id}'") == [
            ("user_rating", 5.0, "great answer", "alice")]
        # the unrecorded execution left nothing, not even its tool call; markers are not spans anywhere
        assert query(store, tenant, "SELECT count() FROM otel_traces WHERE Tenant = {t:String} "
                                    "AND (SpanName LIKE '%private%' OR SpanName LIKE '%secret%' "
                                    "OR has(mapValues(SpanAttributes), 'do-not-store'))") == [(0,)]
        assert query(store, tenant, "SELECT count() FROM otel_traces WHERE Tenant = {t:String} "
                                    "AND SpanAttributes['spanhouse.execution.state'] = 'running'") == [(4,)]
        assert query(store, tenant, "SELECT count() FROM tool_calls WHERE Tenant = {t:String}") == [(5,)]


FORKING_APP = """
import os, sys, warnings
from spanhouse import sdk

endpoint, protocol, key = sys.argv[1:4]
sdk.configure(endpoint, protocol=protocol, api_key=key, service_name="forking-worker")

@sdk.tool
def work(who: str) -> str:
    return who

@sdk.execution
def job(who: str) -> None:
    work(who)
    work(who)

job("parent-before")
assert sdk.flush()                 # the parent's connection is open and used before the fork
# Python 3.12+ warns of any fork with threads running (the batch processor has one): what
# this test looks at is whether the child's spans arrive
warnings.filterwarnings("ignore", r"This process .* is multi-threaded", DeprecationWarning)
pid = os.fork()
who = "child" if pid == 0 else "parent-after"
for i in range(ROUNDS):            # parent and child export at the same time, over their own connections
    job(f"{who}-{i}")
    assert sdk.flush()
if pid == 0:                       # a gunicorn/celery-style worker: ends with os._exit, no exit hooks
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
job("parent-last")                 # exported at interpreter exit
"""
ROUNDS = 20


MULTIPROCESSING_APP = """
import multiprocessing, sys
from spanhouse import sdk

endpoint, key = sys.argv[1:3]
sdk.configure(endpoint, protocol="http/protobuf", api_key=key, service_name="mp-worker")

@sdk.execution
def job(who: str) -> str:
    return who

ctx = multiprocessing.get_context("fork")
workers = [ctx.Process(target=job, args=(f"process-{i}",)) for i in range(2)]
for w in workers:
    w.start()
for w in workers:
    w.join()
pool = ctx.Pool(2)
assert pool.map(job, ["pool-0", "pool-1", "pool-2"]) == ["pool-0", "pool-1", "pool-2"]
pool.close()
pool.join()                        # the workers end as multiprocessing ends them: os._exit, no exit hooks
"""


def test_multiprocessing_workers_export_their_spans_when_they_end(store: Store, tmp_path: Path, tenant: str) -> None:
    """A worker that multiprocessing forked ends with os._exit after its own finalizers:
    the spans it had not exported yet were lost without a word, configured with a
    collector's endpoint as README advises."""
    with running_collector(store, tmp_path, tenant) as c:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANHOUSE_"))}
        done = subprocess.run([sys.executable, "-c", MULTIPROCESSING_APP, c.http_url.removesuffix("/v1/traces"), c.key],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        c.wait_drained()
        got = query(store, tenant, "SELECT Input FROM v_executions WHERE Tenant = {t:String} ORDER BY Input")
    assert got == [(f'{{"who":"{who}"}}',) for who in ("pool-0", "pool-1", "pool-2", "process-0", "process-1")]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_forked_worker_exports_its_spans(store: Store, tmp_path: Path, tenant: str, protocol: str) -> None:
    with running_collector(store, tmp_path, tenant) as c:
        endpoint = f"http://{c.grpc_target}" if protocol == "grpc" else c.http_url.removesuffix("/v1/traces")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANHOUSE_"))}
        app = textwrap.dedent(FORKING_APP).replace("ROUNDS", str(ROUNDS))
        done = subprocess.run([sys.executable, "-c", app, endpoint, protocol, c.key], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # no export errors, no fork warnings
        c.wait_drained()
        inputs = [f'{{"who":"{who}-{i}"}}' for who in ("child", "parent-after") for i in range(ROUNDS)]
        expected = sorted(['{"who":"parent-before"}', '{"who":"parent-last"}', *inputs])
        rows = query(store, tenant, "SELECT Input, Status, tool_calls, ServiceName FROM v_executions "
                                    "WHERE Tenant = {t:String} ORDER BY Input")
        assert rows == [(i, "ok", 2, "forking-worker") for i in expected]
        assert query(store, tenant, "SELECT count() FROM otel_traces WHERE Tenant = {t:String} "
                                    "AND SpanName = 'execute_tool work'") == [(2 * len(expected),)]
