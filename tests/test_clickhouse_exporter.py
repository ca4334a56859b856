"""ClickHouseSpanExporter: the SDK writing straight into the store gives exactly the
rows and view results the collector gives for the same spans."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from spanhouse.clickhouse import Store
from spanhouse.errors import StoreUnavailable
from spanhouse.sdk.clickhouse_exporter import ClickHouseSpanExporter
from tests.collector_harness import count_in_store, run_child, running_collector
from tests.test_write_path import _DERIVED


def _agent_spans() -> tuple[ReadableSpan, ...]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "exporter-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests", "1.0")
    with tracer.start_as_current_span("invoke_agent planner", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner", "input.value": "plan"}):
        for i in range(6):
            with tracer.start_as_current_span(f"execute_tool t{i % 2}", attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": f"t{i % 2}", "n": i,
                    "ratio": i / 3, "tags": ["a", "b"]}) as s:
                s.add_event("progress", {"step": i})
                if i == 3:
                    s.set_status(Status(StatusCode.ERROR, "broken"))
        with tracer.start_as_current_span("chat gpt", attributes={"gen_ai.usage.input_tokens": 10,
                                                                 "gen_ai.usage.output_tokens": 3}):
            pass
    provider.shutdown()
    return memory.get_finished_spans()


def test_exporter_and_collector_store_identical_rows_and_views(store: Store, tmp_path: Path) -> None:
    spans = _agent_spans()
    direct = ClickHouseSpanExporter(store.dsn, tenant="via-exporter")
    assert direct.export(spans) is SpanExportResult.SUCCESS
    direct.shutdown()
    with running_collector(store, tmp_path, "via-collector") as c:
        otlp = OTLPSpanExporter(endpoint=c.grpc_target, insecure=True, headers=c.headers())
        assert otlp.export(spans) is SpanExportResult.SUCCESS
        otlp.shutdown()
        c.wait_drained()
    for table, sql in _DERIVED.items():
        if table == "feedback":
            continue  # no feedback spans here
        a = store.client.query(sql.format(table=table), parameters={"t": "via-exporter"}).result_rows
        b = store.client.query(sql.format(table=table), parameters={"t": "via-collector"}).result_rows
        assert a and a == b, table
    assert store.client.command("SELECT count() FROM otel_traces WHERE Tenant = 'via-exporter'") == 8


def test_unreachable_store_fails_the_export_within_its_bound_and_never_raises(caplog) -> None:  # type: ignore[no-untyped-def]
    exporter = ClickHouseSpanExporter("http://writer:s3cret-pw@127.0.0.1:1/default", retry_timeout=0.5)
    started = time.monotonic()
    assert exporter.export(_agent_spans()) is SpanExportResult.FAILURE
    assert exporter.export(_agent_spans()) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 5
    errors = [r for r in caplog.records if "could not store" in r.getMessage()]
    assert len(errors) == 1 and "reachable" in errors[0].getMessage()
    assert "writer:***@127.0.0.1:1" in errors[0].getMessage()
    assert not any("s3cret-pw" in r.getMessage() for r in caplog.records)  # the password is never logged
    exporter.shutdown()  # says how many were dropped in all: the first message counted the first batch only
    total = [r.getMessage() for r in caplog.records if "in all" in r.getMessage()]
    assert total == [f"spanhouse dropped {2 * len(_agent_spans())} spans in all for "
                     "http://writer:***@127.0.0.1:1/default since the store began failing"]
    assert exporter.export(_agent_spans()) is SpanExportResult.FAILURE


def test_a_store_that_cannot_be_migrated_is_not_called_unreachable(tmp_path: Path) -> None:
    """The give-up log said "check that the store is reachable" for every failure: for a
    schema file edited after it was applied it is the migration error that says what to do."""
    script = (
        "import logging, sys\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "from spanhouse.clickhouse import open_store\n"
        "from spanhouse.sdk.clickhouse_exporter import ClickHouseSpanExporter\n"
        "logging.basicConfig(level=logging.ERROR)\n"
        "store = open_store(sys.argv[1])\n"
        "store.client.command(\"ALTER TABLE spanhouse_migrations UPDATE checksum = 'edited' WHERE version = 1 \"\n"
        "                     \"SETTINGS mutations_sync = 1\")\n"
        "store.close()\n"
        "memory = InMemorySpanExporter(); provider = TracerProvider()\n"
        "provider.add_span_processor(SimpleSpanProcessor(memory))\n"
        "provider.get_tracer('t').start_span('execute_tool t').end()\n"
        "print(ClickHouseSpanExporter(sys.argv[1], retry_timeout=1).export(memory.get_finished_spans()).name)\n"
    )
    done = run_child(script, f"chdb://{tmp_path / 'store'}")
    assert done.stdout.split() == ["FAILURE"]
    assert "could not store 1 spans" in done.stderr and "was changed after it was applied" in done.stderr
    assert "reachable" not in done.stderr, done.stderr


def test_configure_with_a_dsn_writes_into_the_store(tmp_path: Path) -> None:
    """In a child process (configure() sets the global provider), with an embedded store
    of its own; read back afterwards in another child, as `spanhouse serve` would."""
    data = tmp_path / "store"
    script = (
        "from spanhouse import sdk\n"
        f"sdk.configure(dsn='chdb://{data}', service_name='notebook')\n"
        "@sdk.tool\n"
        "def add(a, b):\n"
        "    return a + b\n"
        "@sdk.execution\n"
        "def run():\n"
        "    return add(1, 2) + add(3, 4)\n"
        "run()\n"
        # other settings, same DSN: the store exporter carries on in the new pipeline
        f"sdk.configure(dsn='chdb://{data}', service_name='notebook', capture_content=False)\n"
        "run()\n"
    )
    run_child(script)
    assert count_in_store(data, "SELECT ToolName, calls FROM v_tool_stats") == [["add", 4]]
    assert count_in_store(data, "SELECT Status FROM executions FINAL") == [["ok"], ["ok"]]


def test_a_span_the_store_cannot_hold_is_dropped_alone(store: Store, caplog) -> None:  # type: ignore[no-untyped-def]
    """As the collector does (collector/validate.py): an end time past 2262 failed the whole
    insert after otel_traces had its rows (stored twice by the retry path, in no view, the
    execution 'running' for ever)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("invoke_agent planner", attributes={"gen_ai.operation.name": "invoke_agent"}):
        with tracer.start_as_current_span("execute_tool search", attributes={"gen_ai.operation.name": "execute_tool"}):
            pass
        tracer.start_span("cache lookup").end(end_time=2**63 + 10)
    provider.shutdown()
    direct = ClickHouseSpanExporter(store.dsn, tenant="exporter-invalid")
    assert direct.export(memory.get_finished_spans()) is SpanExportResult.SUCCESS
    direct.shutdown()
    names = store.client.query("SELECT SpanName FROM otel_traces WHERE Tenant = 'exporter-invalid' ORDER BY 1")
    assert names.result_rows == [("execute_tool search",), ("invoke_agent planner",)]
    assert store.client.query("SELECT Status FROM executions FINAL WHERE Tenant = 'exporter-invalid'").result_rows == [
        ("ok",)]
    assert "1 span(s) rejected: 1 with a timestamp after 2106-02-07 06:28:15 UTC" in caplog.text


def test_a_forked_child_of_a_process_writing_to_an_embedded_store_neither_hangs_nor_writes(tmp_path: Path) -> None:
    """The child inherits the parent's engine half-way: replacing the parent's exporter let
    the garbage collector close it there, and chdb's close hung the child for good (a
    multiprocessing pool never returned). The child now says why it drops its spans; the
    parent keeps writing."""
    data = tmp_path / "store"
    script = (
        "import faulthandler, os\n"
        "from spanhouse import sdk\n"
        f"sdk.configure(dsn='chdb://{data}', service_name='forks')\n"
        "@sdk.execution\n"
        "def run(who):\n"
        "    return who\n"
        "run('parent'); sdk.flush()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    faulthandler.dump_traceback_later(30, exit=True)\n"
        "    run('child'); print('child flushed', sdk.flush(), flush=True)\n"
        "    os._exit(0)\n"
        "print('child exit', os.waitpid(pid, 0)[1])\n"
        "run('parent again'); sdk.flush()\n"
    )
    done = run_child(script)
    assert done.stdout.splitlines() == ["child flushed True", "child exit 0"]
    assert "belongs to process" in done.stderr and "drops its spans" in done.stderr
    assert count_in_store(data, "SELECT count() FROM executions FINAL") == [[2]]


def test_configure_with_another_embedded_store_lets_go_of_the_first(tmp_path: Path) -> None:
    """A process holds one embedded store at a time (a test suite with a store per test):
    the second store could not open while the first stayed open, and every span after the
    second configure() was dropped."""
    first, second = tmp_path / "first", tmp_path / "second"
    script = (
        "from spanhouse import sdk\n"
        "@sdk.execution\n"
        "def run():\n"
        "    return 1\n"
        f"sdk.configure(dsn='chdb://{first}')\n"
        "run(); sdk.flush()\n"
        f"sdk.configure(dsn='chdb://{second}')\n"
        "run(); run(); sdk.flush()\n"
    )
    done = run_child(script)
    assert "drops them" not in done.stderr, done.stderr
    assert count_in_store(first, "SELECT count() FROM executions FINAL") == [[1]]
    assert count_in_store(second, "SELECT count() FROM executions FINAL") == [[2]]


def test_a_burst_through_configure_dsn_is_stored_whole(tmp_path: Path) -> None:
    """Each batch is one insert: with OpenTelemetry's default 512-span batches and 2048-span
    queue, a burst of 3,000 tool calls lost ~440 spans ('Queue full'); the collector path
    kept them all."""
    data = tmp_path / "store"
    script = (
        "from spanhouse import sdk\n"
        f"sdk.configure(dsn='chdb://{data}')\n"
        "@sdk.tool\n"
        "def step(i):\n"
        "    return i\n"
        "@sdk.execution\n"
        "def run():\n"
        "    return sum(step(i) for i in range(3000))\n"
        "run()\n"
    )
    done = run_child(script)
    assert "dropping" not in done.stderr, done.stderr
    assert count_in_store(data, "SELECT count() FROM otel_traces WHERE SpanName = 'execute_tool step'") == [[3000]]


def test_a_process_ending_while_its_first_batch_opens_a_new_store_keeps_the_batch(tmp_path: Path) -> None:
    """chdb's engine handles are closed at exit by weakref.finalize's exit hook, which the
    first finalizer registers: registered when the store opened, after the SDK's flush,
    it ran first, under the migrations of the store the first batch was opening, and the
    batch (20,000 spans in a review) was dropped. The migrations are slowed here so that
    the process ends while they run."""
    data = tmp_path / "store"
    script = (
        "import threading, time\n"
        "from spanhouse.clickhouse import store\n"
        "real, migrating = store.migrate, threading.Event()\n"
        "store.migrate = lambda *a, **k: (migrating.set(), time.sleep(2), real(*a, **k))[2]\n"
        "from spanhouse import sdk\n"
        f"sdk.configure(dsn='chdb://{data}')\n"
        "@sdk.tool\n"
        "def step(i):\n"
        "    return i\n"
        "for i in range(20000):\n"  # a full batch: exported at once, opening the store
        "    step(i)\n"
        "assert migrating.wait(60)\n"  # then the process ends, no flush(), while the store is migrated
    )
    done = run_child(script)
    assert "drops them" not in done.stderr, done.stderr
    assert count_in_store(data, "SELECT count() FROM otel_traces") == [[20000]]


def test_batch_sizes_from_the_environment_never_stop_the_application(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from spanhouse.sdk._processor import batch_processor

    def sizes(bulk: bool) -> tuple[int, int]:
        processor = batch_processor(InMemorySpanExporter(), bulk=bulk)
        processor.shutdown()
        batching = processor._batch_processor  # noqa: SLF001 - OpenTelemetry keeps them there
        return batching._max_queue_size, batching._max_export_batch_size  # noqa: SLF001

    assert sizes(bulk=False) == (2048, 512) and sizes(bulk=True) == (80_000, 20_000)
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "20000")  # past OpenTelemetry's 2048 queue: one to fit
    assert sizes(bulk=False) == (20_000, 20_000)
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "lots")
    assert sizes(bulk=True) == (80_000, 20_000)
    monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
    # a queue the application sets bounds what it holds: the batch is cut to it (a review
    # saw 100 raised to 512, and 1,000 to 20,000 with a store's exporter)
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
    assert sizes(bulk=False) == (100, 100)
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "1000")
    assert sizes(bulk=True) == (1000, 1000)


def test_a_driver_error_outside_the_projects_own_fails_the_export_without_raising(
        monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """At interpreter exit chdb's finalizers can close the client while the store opens:
    the driver's ProgrammingError reached the marker thread as a traceback."""
    from clickhouse_connect.driver.exceptions import ProgrammingError

    from spanhouse.sdk import clickhouse_exporter

    def closed(*_: object, **__: object) -> None:
        raise ProgrammingError("The client has been closed")

    monkeypatch.setattr(clickhouse_exporter, "open_store", closed)
    exporter = ClickHouseSpanExporter("chdb:///nowhere")
    assert exporter.export(_agent_spans()) is SpanExportResult.FAILURE
    assert "ProgrammingError: The client has been closed" in caplog.text


def test_an_insert_failing_for_no_known_reason_is_retried_on_the_same_store(
        store: Store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Such a failure may come after some tables took the batch; the writer retries it
    under its token (which completes it exactly) and counts the attempts. The exporter
    opened the store anew for each retry, with a new writer counting from one again."""
    from clickhouse_connect.driver.exceptions import DatabaseError

    from spanhouse.sdk import clickhouse_exporter

    opened: list[Store] = []
    real_open = clickhouse_exporter.open_store

    def opening(*args: Any, **kwargs: Any) -> Store:
        s = real_open(*args, **kwargs)
        opened.append(s)
        insert, failures = s.writer._client.raw_insert, [1]

        def committing_then_failing(*a: Any, **k: Any) -> Any:
            result = insert(*a, **k)
            if failures[0]:
                failures[0] -= 1
                raise DatabaseError("Code: 1001. DB::Exception: std::exception. (STD_EXCEPTION)")
            return result

        s.writer._client.raw_insert = committing_then_failing
        return s

    monkeypatch.setattr(clickhouse_exporter, "open_store", opening)
    exporter = ClickHouseSpanExporter(store.dsn, tenant="exporter-incomplete", retry_timeout=5)
    spans = _agent_spans()
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert len(opened) == 1
    assert store.client.command("SELECT count() FROM otel_traces WHERE Tenant = 'exporter-incomplete'") == len(spans)


def test_an_export_retrying_through_its_exporters_shutdown_does_not_open_the_store_again(
        store: Store, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """configure() switching stores shut the old exporter down while an export of it was
    retrying a failure: the retry opened the old store again, for good, and the new one
    could not open beside it (a review lost every span after the switch). The batch it
    gives up is said even in a failing stretch, whose total shutdown() may have told."""
    from spanhouse.sdk import clickhouse_exporter

    opened: list[Store] = []
    failed = threading.Event()
    real_open = clickhouse_exporter.open_store

    def opening(*args: Any, **kwargs: Any) -> Store:
        s = real_open(*args, **kwargs)
        opened.append(s)

        def unavailable(*_: Any, **__: Any) -> None:
            failed.set()
            time.sleep(0.3)  # the shutdown lands while this export is failing
            raise StoreUnavailable("injected: the store is restarting")

        s.writer.write = unavailable  # type: ignore[method-assign]
        return s

    monkeypatch.setattr(clickhouse_exporter, "open_store", opening)
    exporter = ClickHouseSpanExporter(store.dsn, tenant="exporter-shut", retry_timeout=5)
    exporter._failing = True  # noqa: SLF001 - a stretch already failing, as after an earlier batch given up
    results: list[SpanExportResult] = []
    exporting = threading.Thread(target=lambda: results.append(exporter.export(_agent_spans())))
    exporting.start()
    assert failed.wait(10)
    exporter.shutdown()
    exporting.join(10)
    assert results == [SpanExportResult.FAILURE]
    assert len(opened) == 1 and exporter._store is None  # noqa: SLF001
    assert any(f"drops {len(_agent_spans())} spans for" in r.getMessage() and "shut down" in r.getMessage()
               for r in caplog.records)


def test_spans_with_text_utf8_cannot_carry_are_stored_with_their_batch(store: Store) -> None:
    """A name, event name or status naming a file as os.listdir decodes it (a lone
    surrogate): the encoder raised out of export(), which promises never to raise, and
    the batch processor lost the whole batch."""
    bad = b"report-\xff.csv".decode("utf-8", "surrogateescape")
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("plain"):
        pass
    with tracer.start_as_current_span(f"read {bad}") as span:
        span.add_event(f"opened {bad}")
        span.set_status(Status(StatusCode.ERROR, f"cannot read {bad}"))
    provider.shutdown()
    exporter = ClickHouseSpanExporter(store.dsn, tenant="exporter-surrogates")
    assert exporter.export(memory.get_finished_spans()) is SpanExportResult.SUCCESS
    exporter.shutdown()
    rows = store.client.query("SELECT SpanName, Events.Name, StatusMessage FROM otel_traces "
                              "WHERE Tenant = 'exporter-surrogates' ORDER BY SpanName").result_rows
    assert rows == [("plain", [], ""), ("read report-\\udcff.csv", ["opened report-\\udcff.csv"],
                                        "cannot read report-\\udcff.csv")]


def test_a_span_that_cannot_be_encoded_is_dropped_alone(store: Store, caplog) -> None:  # type: ignore[no-untyped-def]
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("kept"):
        tracer.start_span("unencodable").end(end_time=2**64)  # past protobuf's fixed64
    provider.shutdown()
    exporter = ClickHouseSpanExporter(store.dsn, tenant="exporter-unencodable")
    assert exporter.export(memory.get_finished_spans()) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert store.client.query("SELECT SpanName FROM otel_traces WHERE Tenant = 'exporter-unencodable'").result_rows \
        == [("kept",)]
    assert "drops 1 span(s) it cannot encode, e.g. 'unencodable'" in caplog.text


def test_a_relative_embedded_dsn_is_resolved_when_the_exporter_is_made(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Resolved at each opening, a chdir between configure() and the first export (or a
    reopening after a failure) put the store somewhere else."""
    from spanhouse.errors import StoreUnavailable
    from spanhouse.sdk import clickhouse_exporter

    opened: list[str] = []

    def unavailable(dsn: str, **_: object) -> Store:
        opened.append(dsn)
        raise StoreUnavailable("not now")

    monkeypatch.setattr(clickhouse_exporter, "open_store", unavailable)
    (tmp_path / "app").mkdir()
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "app")
    exporter = ClickHouseSpanExporter("chdb://./spanhouse-data", retry_timeout=0.3)
    monkeypatch.chdir(tmp_path / "checkout")
    assert exporter.export(_agent_spans()) is SpanExportResult.FAILURE
    assert len(opened) > 1 and set(opened) == {f"chdb://{tmp_path / 'app' / 'spanhouse-data'}"}


def test_configure_with_a_relative_dsn_keeps_the_store_where_it_was_configured(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from spanhouse import sdk\n"
        "os.chdir(sys.argv[1])\n"
        "sdk.configure(dsn='chdb://./spanhouse-data')\n"
        "@sdk.tool\n"
        "def step():\n"
        "    return 1\n"
        "os.chdir(sys.argv[2])\n"
        "step()\n"
    )
    (tmp_path / "app").mkdir()
    (tmp_path / "checkout").mkdir()
    run_child(script, str(tmp_path / "app"), str(tmp_path / "checkout"))
    assert not (tmp_path / "checkout" / "spanhouse-data").exists()
    assert count_in_store(tmp_path / "app" / "spanhouse-data", "SELECT count() FROM otel_traces") == [[1]]


def test_a_server_that_never_answers_fails_the_export_within_its_bound() -> None:
    """It accepts connections and reads nothing back (hung, overloaded): one attempt was
    bounded by clickhouse-connect's read timeout only, and export() blocked ~300 s."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # until the server is closed
            while True:
                held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    exporter = ClickHouseSpanExporter(f"http://default:@127.0.0.1:{server.getsockname()[1]}/default",
                                      retry_timeout=1)
    results: list[SpanExportResult] = []
    export = threading.Thread(target=lambda: results.append(exporter.export(_agent_spans())), daemon=True)
    try:
        export.start()
        export.join(timeout=6)
        assert results == [SpanExportResult.FAILURE]
    finally:
        server.close()
        for connection in held:
            connection.close()
        export.join(timeout=10)


def test_a_malformed_dsn_fails_the_export_saying_why_without_its_password(caplog) -> None:  # type: ignore[no-untyped-def]
    exporter = ClickHouseSpanExporter("http://writer:s3cret-pw@[::1:8123/default")
    assert exporter.export(_agent_spans()) is SpanExportResult.FAILURE
    assert "'http://***@[::1:8123/default' is not a valid URL (Invalid IPv6 URL)" in caplog.text
    assert "s3cret-pw" not in caplog.text
