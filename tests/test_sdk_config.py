"""configure(): settings precedence (argument > environment > default), idempotence,
adding to an existing TracerProvider, the disabled switch, flush and shutdown.

Anything that touches the *global* TracerProvider runs in a child interpreter, so no
global state leaks between tests; the rest uses ``configure(tracer_provider=...)`` on a
private provider and ``shutdown()`` afterwards.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spanhouse import sdk
from spanhouse.sdk import _config, _runtime
from spanhouse.sdk._processor import SpanhouseSpanProcessor

REPO = Path(__file__).resolve().parents[1]
OTEL_VARS = [v for v in vars(_config).values() if isinstance(v, str) and v.startswith(("OTEL_", "SPANHOUSE_"))]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [*OTEL_VARS, "OTEL_EXPORTER_OTLP_INSECURE"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def private_provider() -> Iterator[TracerProvider]:
    provider = TracerProvider(shutdown_on_exit=False)
    try:
        yield provider
    finally:
        sdk.shutdown()
        provider.shutdown()


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """Run ``code`` in a fresh interpreter (cwd: the repository); return its stdout."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANHOUSE_"))}
    full_env.update(env or {})
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def test_documented_env_vars_are_exactly_the_standard_ones_plus_ours() -> None:
    assert sorted(OTEL_VARS) == sorted([
        "OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
        "SPANHOUSE_CAPTURE_CONTENT", "SPANHOUSE_MAX_VALUE_LENGTH", "SPANHOUSE_DSN"])
    source = (REPO / "sdk" / "_config.py").read_text()
    assert all(f".. envvar:: {name}" in source for name in OTEL_VARS)


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    assert _config.resolve() == _config.Settings(
        disabled=False, endpoint="http://127.0.0.1:4317", protocol="grpc", headers={}, service_name=None,
        resource_attributes={}, capture_content=True, max_value_length=16384)
    assert _config.resolve(protocol="http/protobuf").endpoint == "http://127.0.0.1:4318/v1/traces"


def test_environment_is_read(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example:4318/")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    clean_env.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=ml,Authorization=Bearer%20abc")
    clean_env.setenv("OTEL_SDK_DISABLED", "TRUE")
    clean_env.setenv("SPANHOUSE_CAPTURE_CONTENT", "off")
    clean_env.setenv("SPANHOUSE_MAX_VALUE_LENGTH", "100")
    settings = _config.resolve()
    assert (settings.endpoint, settings.protocol) == ("https://collector.example:4318/v1/traces", "http/protobuf")
    assert settings.headers == {"x-team": "ml", "authorization": "Bearer abc"}
    assert (settings.disabled, settings.capture_content, settings.max_value_length) == (True, False, 100)

    clean_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces.example/custom")  # used as is
    clean_env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    clean_env.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-only=traces")
    settings = _config.resolve()
    assert (settings.endpoint, settings.protocol, settings.headers) == ("http://traces.example/custom", "grpc",
                                                                         {"x-only": "traces"})


def test_arguments_win_over_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    clean_env.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=ml,authorization=Bearer%20env")
    clean_env.setenv("OTEL_SDK_DISABLED", "true")
    clean_env.setenv("SPANHOUSE_CAPTURE_CONTENT", "false")
    clean_env.setenv("SPANHOUSE_MAX_VALUE_LENGTH", "100")
    settings = _config.resolve(endpoint="http://arg:4318", protocol="http/protobuf", api_key="k1",
                               headers={"X-Extra": "1"}, disabled=False, capture_content=True, max_value_length=7,
                               service_name="svc", resource_attributes={"deployment.environment": "prod"})
    assert settings == _config.Settings(
        disabled=False, endpoint="http://arg:4318/v1/traces", protocol="http/protobuf",
        headers={"x-team": "ml", "x-extra": "1", "authorization": "Bearer k1"}, service_name="svc",
        resource_attributes={"deployment.environment": "prod"}, capture_content=True, max_value_length=7)
    assert _config.resolve(endpoint="http://arg:4318/v1/traces", protocol="http/protobuf").endpoint == \
        "http://arg:4318/v1/traces"


@pytest.mark.parametrize(("name", "value"), [
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/thrift"),
    ("OTEL_SDK_DISABLED", "maybe"), ("SPANHOUSE_CAPTURE_CONTENT", "sometimes"), ("SPANHOUSE_MAX_VALUE_LENGTH", "-5"),
    ("SPANHOUSE_MAX_VALUE_LENGTH", "lots")])
def test_bad_environment_values_log_and_fall_back(clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                                  name: str, value: str) -> None:
    clean_env.setenv(name, value)
    with caplog.at_level(logging.WARNING, logger="spanhouse.sdk"):
        assert _config.resolve() == _config.Settings()
    assert name in caplog.text


@pytest.mark.parametrize(("value", "disabled"), [("true", True), ("True", True), (" TRUE ", True), ("1", False),
                                                ("yes", False), ("on", False), ("false", False), ("", False)])
def test_otel_sdk_disabled_is_true_only_for_true(clean_env: pytest.MonkeyPatch, value: str, disabled: bool) -> None:
    """As the OpenTelemetry specification reads its booleans: only 'true', any case."""
    clean_env.setenv("OTEL_SDK_DISABLED", value)
    assert _config.resolve().disabled is disabled


def test_an_empty_spanhouse_boolean_is_unset(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SPANHOUSE_CAPTURE_CONTENT", "")
    assert _config.resolve().capture_content is True


def test_an_unsupported_traces_protocol_falls_back_to_the_general_one(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/thrift")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert _config.resolve().protocol == "http/protobuf"


def test_http_json_is_sent_as_http_protobuf_to_its_endpoint(clean_env: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """http/json fell back to gRPC, sent to the HTTP endpoint the variable came with."""
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with caplog.at_level(logging.WARNING, logger="spanhouse.sdk"):
        settings = _config.resolve()
    assert (settings.protocol, settings.endpoint) == ("http/protobuf", "http://collector:4318/v1/traces")
    assert "http/json is not supported" in caplog.text


@pytest.mark.parametrize("kwargs", [
    {"endpoint": "collector:4317"}, {"endpoint": ""}, {"protocol": "http/json"}, {"api_key": ""},
    {"headers": {"a": 1}}, {"capture_content": "yes"}, {"max_value_length": 0}, {"max_value_length": True},
    {"disabled": 1}, {"service_name": ""}, {"resource_attributes": [("a", "b")]}])
def test_bad_arguments_raise(clean_env: pytest.MonkeyPatch, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _config.resolve(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sdk.configure(**kwargs)  # type: ignore[arg-type]


def test_configure_arguments_checked_before_anything_changes(clean_env: pytest.MonkeyPatch) -> None:
    before = _runtime.current
    for kwargs in ({"redact": "not callable"}, {"tracer_provider": object()}, {"exporter": object()}):
        with pytest.raises(ValueError):
            sdk.configure(**kwargs)  # type: ignore[arg-type]
    assert _runtime.current is before


@pytest.mark.parametrize(("dsn", "why"), [
    ("postgres://db.internal/traces", "unsupported DSN scheme 'postgres'"), ("chdb://", "names no data directory"),
    ("file:///tmp/store", "unsupported DSN scheme 'file'"),
    ("http://writer:s3cret-pw@[::1:8123/db", r"'http://\*\*\*@\[::1:8123/db' is not a valid URL")])
def test_a_dsn_that_names_no_store_raises_at_configure(clean_env: pytest.MonkeyPatch, dsn: str, why: str) -> None:
    """As a bad endpoint does: it was accepted, and every span was dropped at the first export."""
    before = _runtime.current
    with pytest.raises(ValueError, match=why):
        sdk.configure(dsn=dsn)
    assert _runtime.current is before


def test_a_spanhouse_dsn_that_names_no_store_is_logged_and_ignored(
        clean_env: pytest.MonkeyPatch, private_provider: TracerProvider, caplog: pytest.LogCaptureFixture) -> None:
    clean_env.setenv("SPANHOUSE_DSN", "postgres://db.internal/traces")
    with caplog.at_level(logging.WARNING, logger="spanhouse.sdk"):
        sdk.configure(tracer_provider=private_provider)
    assert "ignoring SPANHOUSE_DSN, so spans are sent over OTLP instead: unsupported DSN scheme 'postgres'" \
        in caplog.text


def spanhouse_processors(provider: TracerProvider) -> list[SpanhouseSpanProcessor]:
    return [p for p in provider._active_span_processor._span_processors
            if isinstance(p, SpanhouseSpanProcessor)]


def test_configure_is_idempotent_and_reconfigures_in_place(clean_env: pytest.MonkeyPatch,
                                                            private_provider: TracerProvider) -> None:
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    sdk.configure(tracer_provider=private_provider, exporter=first)
    runtime = _runtime.current
    sdk.configure(tracer_provider=private_provider, exporter=first)
    assert _runtime.current is runtime  # same arguments: nothing happened
    assert len(spanhouse_processors(private_provider)) == 1

    @sdk.tool
    def step() -> None:
        pass

    step()
    assert first.get_finished_spans() == ()  # batched
    assert sdk.flush()
    assert [s.name for s in first.get_finished_spans()] == ["execute_tool step"]

    sdk.configure(tracer_provider=private_provider, exporter=second, capture_content=False)
    assert len(spanhouse_processors(private_provider)) == 1  # swapped inside, not added
    step()
    sdk.flush()
    assert len(first.get_finished_spans()) == 1
    assert [dict(s.attributes or {}).get("gen_ai.tool.call.arguments") for s in second.get_finished_spans()] == [None]


def test_reconfiguring_with_the_same_exporter_keeps_it_working(clean_env: pytest.MonkeyPatch,
                                                               private_provider: TracerProvider) -> None:
    """The retired pipeline must not shut down an exporter the next one uses (as a
    BatchSpanProcessor's shutdown would): exports would fail from then on, silently."""
    exporter = InMemorySpanExporter()
    sdk.configure(tracer_provider=private_provider, exporter=exporter)

    @sdk.tool
    def step() -> None:
        pass

    step()
    sdk.configure(tracer_provider=private_provider, exporter=exporter, capture_content=False)
    step()
    assert sdk.flush()
    assert [s.name for s in exporter.get_finished_spans()] == ["execute_tool step"] * 2


def test_running_marker_leaves_at_once_while_the_execution_runs(clean_env: pytest.MonkeyPatch,
                                                               private_provider: TracerProvider) -> None:
    exporter = InMemorySpanExporter()
    sdk.configure(tracer_provider=private_provider, exporter=exporter)
    release = threading.Event()
    seen: list[list[str]] = []

    @sdk.execution
    def long_job() -> None:
        deadline = time.monotonic() + 5
        while not exporter.get_finished_spans() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append([s.name for s in exporter.get_finished_spans()])
        release.set()

    long_job()
    assert release.is_set()
    assert seen == [["invoke_workflow long_job"]]  # the marker, exported without flush() and before the end
    marker = exporter.get_finished_spans()[0]
    assert marker.attributes["spanhouse.execution.state"] == "running"  # type: ignore[index]
    sdk.flush()
    assert len(exporter.get_finished_spans()) == 2


def test_shutdown_stops_export_and_configure_works_again(clean_env: pytest.MonkeyPatch,
                                                          private_provider: TracerProvider) -> None:
    exporter = InMemorySpanExporter()
    sdk.configure(tracer_provider=private_provider, exporter=exporter)
    sdk.shutdown()
    assert sdk.flush()  # nothing configured: trivially done

    @sdk.tool
    def step() -> None:
        pass

    step()
    again = InMemorySpanExporter()
    sdk.configure(tracer_provider=private_provider, exporter=again)
    step()
    sdk.flush()
    assert [s.name for s in again.get_finished_spans()] == ["execute_tool step"]
    assert len(spanhouse_processors(private_provider)) == 1


def test_configure_creates_the_global_provider_from_the_environment() -> None:
    out = run_python("""
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from spanhouse import sdk
        sdk.configure(exporter=InMemorySpanExporter())
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        attrs = provider.resource.attributes
        print(attrs["service.name"], attrs["deployment.environment"])
        sdk.configure(service_name="from-arg", exporter=None)  # provider exists now: its resource is kept
        assert trace.get_tracer_provider() is provider
    """, env={"OTEL_SERVICE_NAME": "from-env", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test"})
    assert out.split() == ["from-env", "test"]
    out = run_python("""
        from opentelemetry import trace
        from spanhouse import sdk
        sdk.configure(service_name="from-arg", resource_attributes={"team": "ml"})
        print(trace.get_tracer_provider().resource.attributes["service.name"],
              trace.get_tracer_provider().resource.attributes["team"])
    """, env={"OTEL_SERVICE_NAME": "from-env"})
    assert out.split() == ["from-arg", "ml"]


def test_configure_adds_to_the_applications_provider() -> None:
    out = run_python("""
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from spanhouse import sdk

        app_exporter, ours = InMemorySpanExporter(), InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "app"}))
        provider.add_span_processor(SimpleSpanProcessor(app_exporter))
        trace.set_tracer_provider(provider)
        sdk.configure(exporter=ours)
        sdk.configure(exporter=ours)

        @sdk.tool
        def step():
            pass

        step()
        sdk.flush()
        assert trace.get_tracer_provider() is provider
        print([s.name for s in app_exporter.get_finished_spans()], [s.name for s in ours.get_finished_spans()])
    """)
    assert out.strip() == "['execute_tool step'] ['execute_tool step']"


def test_configure_adds_to_a_provider_that_wraps_the_sdks() -> None:
    """Logfire's global provider is a proxy of its own around an SDK provider, with the
    SDK's add_span_processor: spanhouse warned it was not the SDK's and recorded nothing."""
    out = run_python("""
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from spanhouse import sdk

        class WrappingProvider(trace.TracerProvider):  # the shape of logfire's ProxyTracerProvider
            def __init__(self, provider):
                self.provider = provider
            def get_tracer(self, *args, **kwargs):
                return self.provider.get_tracer(*args, **kwargs)
            def add_span_processor(self, processor):
                self.provider.add_span_processor(processor)
            @property
            def resource(self):
                return self.provider.resource

        trace.set_tracer_provider(WrappingProvider(TracerProvider()))
        ours = InMemorySpanExporter()
        sdk.configure(exporter=ours)
        sdk.tool(name="step")(lambda: None)()
        print(sdk.flush(), [s.name for s in ours.get_finished_spans()])
    """)
    assert out.strip() == "True ['execute_tool step']"


def test_a_provider_already_exporting_to_the_collector_gets_no_second_copy() -> None:
    """opentelemetry-instrument sets up OTLP export from the same OTEL_* variables that
    configure() reads: spanhouse exported every span again, and the collector stored
    each twice. It now adds its session attributes and markers only."""
    out = run_python("""
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
        from spanhouse import sdk

        received = []

        class Collector(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                received.extend((s.name, [a.value.string_value for a in s.attributes if a.key == "session.id"])
                                for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}"
        provider = TracerProvider()  # what opentelemetry-instrument installs
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/traces")))
        trace.set_tracer_provider(provider)
        sdk.configure(endpoint=url, protocol="http/protobuf")

        @sdk.execution
        def handle():
            sdk.tool(name="lookup")(lambda: None)()

        with sdk.session("s-1"):
            handle()
        sdk.flush()
        provider.force_flush()
        print(sorted(received))
    """)
    # the workflow twice: one is its running marker; the session stamped by spanhouse's processor
    assert out.strip() == ("[('execute_tool lookup', ['s-1']), ('invoke_workflow handle', ['s-1']), "
                           "('invoke_workflow handle', ['s-1'])]")

@pytest.mark.parametrize(("make_exporter", "exporter_kwargs", "configure_kwargs", "same"), [
    # opentelemetry-instrument's defaults (localhost) against spanhouse's (127.0.0.1)
    (GrpcExporter, {}, {}, True),
    (HttpExporter, {}, {"protocol": "http/protobuf"}, True),
    (GrpcExporter, {"endpoint": "http://[::1]:4317"}, {"endpoint": "http://localhost:4317/"}, True),
    (HttpExporter, {"endpoint": "http://[::1]:4318/v1/traces/"},
     {"endpoint": "http://localhost:4318", "protocol": "http/protobuf"}, True),
    (GrpcExporter, {"endpoint": "https://collector.example"}, {"endpoint": "https://Collector.example:443"}, True),
    (HttpExporter, {"endpoint": "http://collector.example/v1/traces"},
     {"endpoint": "http://collector.example:80/v1/traces", "protocol": "http/protobuf"}, True),
    # other collectors: another port, path, host or protocol
    (GrpcExporter, {}, {"endpoint": "http://127.0.0.1:4318"}, False),
    (HttpExporter, {}, {"endpoint": "http://localhost:4318/otlp/v1/traces", "protocol": "http/protobuf"}, False),
    (HttpExporter, {"endpoint": "http://collector.example:4318/v1/traces"}, {"protocol": "http/protobuf"}, False),
    (HttpExporter, {"endpoint": "http://localhost:4317/v1/traces"}, {}, False),
])
def test_one_collector_spelled_two_ways_is_exported_to_once(
        clean_env: pytest.MonkeyPatch, private_provider: TracerProvider, caplog: pytest.LogCaptureFixture,
        make_exporter: type[SpanExporter], exporter_kwargs: dict[str, str], configure_kwargs: dict[str, str],
        same: bool) -> None:
    """OpenTelemetry's exporters default to localhost, spanhouse to 127.0.0.1: compared as
    text they were two collectors, and under opentelemetry-instrument with default
    endpoints every span was exported twice."""
    private_provider.add_span_processor(BatchSpanProcessor(make_exporter(**exporter_kwargs)))
    caplog.set_level(logging.INFO, logger="spanhouse.sdk")
    sdk.configure(tracer_provider=private_provider, **configure_kwargs)
    assert ("leaves the spans to that exporter" in caplog.text) is same


def test_spans_reach_a_collector_named_localhost_and_127_0_0_1_once(
        clean_env: pytest.MonkeyPatch, private_provider: TracerProvider) -> None:
    received: list[bytes] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["content-length"])))
            received.extend(s.span_id for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_port
        private_provider.add_span_processor(  # what opentelemetry-instrument installs
            BatchSpanProcessor(HttpExporter(endpoint=f"http://localhost:{port}/v1/traces")))
        sdk.configure(tracer_provider=private_provider, endpoint=f"http://127.0.0.1:{port}", protocol="http/protobuf")
        sdk.tool(name="lookup")(lambda: None)()
        sdk.flush()
        private_provider.force_flush()
    finally:
        server.shutdown()
        server.server_close()
    assert len(received) == 1


def test_resource_settings_a_provider_already_has_not_are_said_to_be_ignored(
        clean_env: pytest.MonkeyPatch, private_provider: TracerProvider, caplog: pytest.LogCaptureFixture) -> None:
    """A provider's resource is fixed when it is made: a later configure() dropped its
    resource_attributes without a word (a changed service_name was warned about)."""
    sdk.configure(tracer_provider=private_provider, exporter=InMemorySpanExporter())
    with caplog.at_level(logging.WARNING, logger="spanhouse.sdk"):
        sdk.configure(tracer_provider=private_provider, exporter=InMemorySpanExporter(),
                      resource_attributes={"deployment.environment": "prod"})
    assert "deployment.environment='prod' not applied" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spanhouse.sdk"):  # what the provider has: nothing to say
        sdk.configure(tracer_provider=private_provider, exporter=InMemorySpanExporter(),
                      resource_attributes={"service.name": private_provider.resource.attributes["service.name"]})
    assert "not applied" not in caplog.text


def test_list_valued_resource_attributes_the_provider_has_are_not_said_to_be_ignored(
        clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A resource keeps a list as a tuple: compared as given, the list was 'not applied'."""
    provider = TracerProvider(resource=Resource.create({"team.tags": ["a", "b"]}))
    try:
        with caplog.at_level(logging.WARNING, logger="spanhouse.sdk"):
            sdk.configure(tracer_provider=provider, exporter=InMemorySpanExporter(),
                          resource_attributes={"team.tags": ["a", "b"]})
        assert "not applied" not in caplog.text
    finally:
        sdk.shutdown()
        provider.shutdown()

def test_otel_sdk_disabled_turns_everything_off() -> None:
    out = run_python("""
        from opentelemetry import trace
        from spanhouse import sdk

        def f(x):
            return x

        sdk.configure(endpoint="http://127.0.0.1:9")
        assert sdk.tool(f) is f  # no wrapper at all
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # nothing installed
        with sdk.tool_call("t") as call:
            call.set_result(1)
        sdk.feedback("0123456789abcdef0123456789abcdef", rating=5)
        print("ok", sdk.flush())
    """, env={"OTEL_SDK_DISABLED": "true"})
    assert out.strip() == "ok True"


def test_a_child_forked_while_an_export_is_under_way_can_export() -> None:
    """The exporter lock a parent's thread held when the process forked (an export under
    way: a store insert takes a while) was never released in the child, and every
    export there, a flush too, waited for ever."""
    out = run_python("""
        import os, threading
        from opentelemetry.sdk.trace.export import SpanExportResult
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from spanhouse.sdk._processor import BorrowedExporter, ForkSafeExporter

        borrowed, fork_safe = BorrowedExporter(InMemorySpanExporter()), ForkSafeExporter(InMemorySpanExporter)
        borrowed._lock.acquire()  # as the parent's exporting thread holds them at the fork
        fork_safe._lock.acquire()
        pid = os.fork()
        if pid == 0:
            done = []
            worker = threading.Thread(target=lambda: done.append((borrowed.export([]), fork_safe.export([]))))
            worker.start()
            worker.join(10)
            os._exit(0 if done == [(SpanExportResult.SUCCESS, SpanExportResult.SUCCESS)] else 1)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """, timeout=30)
    assert out.strip() == "0"

def test_forked_child_has_working_marker_thread_and_batch_worker() -> None:
    out = run_python("""
        import json, os, time
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from spanhouse import sdk

        exporter = InMemorySpanExporter()
        sdk.configure(tracer_provider=TracerProvider(), exporter=exporter)

        @sdk.tool
        def step(who):
            return who

        @sdk.execution
        def job(who):
            deadline = time.monotonic() + 5  # the marker leaves from the marker thread, without flush()
            while not any(s.name == "invoke_workflow job" for s in exporter.get_finished_spans()):
                assert time.monotonic() < deadline, "no marker thread"
                time.sleep(0.01)
            step(who)

        step("queued-before-fork")  # still in the parent's batch queue at fork time
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            exporter.clear()
            job("child")
            sdk.flush()
            names = sorted(s.name for s in exporter.get_finished_spans())
            args = sorted(s.attributes.get("gen_ai.tool.call.arguments", "") for s in exporter.get_finished_spans())
            os.write(write_end, json.dumps([names, args]).encode())
            os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        print(os.read(read_end, 65536).decode())
        sdk.flush()
        spans = exporter.get_finished_spans()
        print(json.dumps(sorted(s.attributes.get("gen_ai.tool.call.arguments", "") for s in spans)))
    """)
    child, parent = out.strip().splitlines()
    # the child exports its own spans and marker, and not the parent's queued span
    assert child == ('[["execute_tool step", "invoke_workflow job", "invoke_workflow job"], '
                     '["", "", "{\\"who\\":\\"child\\"}"]]')
    assert parent == '["{\\"who\\":\\"queued-before-fork\\"}"]'


def test_an_unconfigured_process_follows_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SPANHOUSE_CAPTURE_CONTENT", "0")
    clean_env.setenv("SPANHOUSE_MAX_VALUE_LENGTH", "64")
    clean_env.setenv("OTEL_SDK_DISABLED", "true")
    runtime = _runtime.from_environment()
    assert (runtime.capture_content, runtime.content.max_length, runtime.disabled) == (False, 64, True)
    clean_env.delenv("OTEL_SDK_DISABLED")
    assert not _runtime.from_environment().disabled


def test_arguments_are_not_serialised_before_any_tracer_provider_is_set() -> None:
    """A library's decorated calls in an application that never set OpenTelemetry up:
    their spans record nothing, yet every call serialised its arguments (260 us with a
    200-row argument). Once a provider is set, they are captured again."""
    out = run_python("""
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from spanhouse import sdk
        seen = []

        class Rows:
            def __repr__(self):
                seen.append(1)
                return "rows"

        @sdk.tool
        def lookup(rows):
            return 1

        @sdk.execution
        def run(rows):
            return lookup(rows)

        run(Rows())
        before = len(seen)
        trace.set_tracer_provider(TracerProvider())
        run(Rows())
        print(before, len(seen) > 0)
    """)
    assert out.split() == ["0", "True"]


class _OneAtATime(InMemorySpanExporter):
    """Records whether export() was ever entered while another call was running."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.overlapped = False

    def export(self, spans: Any) -> Any:
        self.active += 1
        self.overlapped |= self.active > 1
        time.sleep(0.005)
        try:
            return super().export(spans)
        finally:
            self.active -= 1


def test_markers_and_batches_never_export_through_one_exporter_at_once(clean_env: pytest.MonkeyPatch,
                                                                         private_provider: TracerProvider) -> None:
    """With exporter= the running markers (their own thread) and the batch worker share
    the exporter; OpenTelemetry exporters may assume one export() at a time."""
    exporter = _OneAtATime()
    sdk.configure(tracer_provider=private_provider, exporter=exporter)

    @sdk.execution
    def job() -> None:
        time.sleep(0.001)

    done = threading.Event()

    def jobs() -> None:  # each start sends a marker at once, on the marker thread
        for _ in range(100):
            job()
        done.set()

    def flushes() -> None:  # each flush exports the ended spans, on the batch worker
        while not done.is_set():
            sdk.flush()

    threads = [threading.Thread(target=jobs), threading.Thread(target=flushes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sdk.flush()
    assert len(exporter.get_finished_spans()) == 2 * 100 and not exporter.overlapped


def test_disabled_false_under_otel_sdk_disabled_says_it_records_nothing(
        clean_env: pytest.MonkeyPatch, private_provider: TracerProvider, caplog: pytest.LogCaptureFixture) -> None:
    """OpenTelemetry's SDK honours OTEL_SDK_DISABLED itself (its provider hands out no-op
    tracers) and functions decorated before configure() were left unwrapped: the argument
    cannot turn recording back on. It recorded nothing, silently."""
    clean_env.setenv("OTEL_SDK_DISABLED", "true")
    sdk.configure(tracer_provider=private_provider, exporter=InMemorySpanExporter(), disabled=False)
    assert "Unset OTEL_SDK_DISABLED to record spans" in caplog.text
    caplog.clear()
    clean_env.delenv("OTEL_SDK_DISABLED")
    sdk.configure(tracer_provider=private_provider, exporter=InMemorySpanExporter(), disabled=False)
    assert "OTEL_SDK_DISABLED" not in caplog.text
