"""The decorators against the real OpenTelemetry SDK and an in-memory exporter: exact
names, kinds, attributes, parentage and status for every decorator and kind of function,
errors, generators' protocol, context-manager forms, record=False, running markers and
the disabled mode."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import gc
import inspect
import json
import re
import sys
import unittest.mock
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from spanhouse import sdk
from spanhouse.sdk._content import REDACTED
from spanhouse.sdk._session import current_attributes
from spanhouse.sdk.testing import CapturedSpans, capture_spans

KINDS = ["sync", "async", "generator", "async_generator", "method", "staticmethod", "classmethod", "async_method"]
DECORATORS = ["execution", "workflow", "agent", "tool", "llm"]


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans() as captured:
        yield captured


class CustomError(Exception):
    """An application's own exception type."""


def make(kind: str, decorate: Callable[[Any], Any], fail: bool = False) -> Callable[..., Any]:
    """A function ``f(x, y=2)`` of ``kind`` returning x + y (generators yield x then y), decorated."""
    if kind == "sync":
        def f(x: int, y: int = 2) -> int:
            if fail:
                raise CustomError(f"bad input {x}")
            return x + y
        return decorate(f)
    if kind == "async":
        async def f(x: int, y: int = 2) -> int:  # type: ignore[misc]
            await asyncio.sleep(0)
            if fail:
                raise CustomError(f"bad input {x}")
            return x + y
        return decorate(f)
    if kind == "generator":
        def f(x: int, y: int = 2) -> Iterator[int]:  # type: ignore[misc]
            yield x
            if fail:
                raise CustomError(f"bad input {x}")
            yield y
        return decorate(f)
    if kind == "async_generator":
        async def f(x: int, y: int = 2) -> AsyncIterator[int]:  # type: ignore[misc]
            yield x
            await asyncio.sleep(0)
            if fail:
                raise CustomError(f"bad input {x}")
            yield y
        return decorate(f)

    class Holder:
        base = 0

        def method(self, x: int, y: int = 2) -> int:
            if fail:
                raise CustomError(f"bad input {x}")
            return x + y + self.base

        async def amethod(self, x: int, y: int = 2) -> int:
            if fail:
                raise CustomError(f"bad input {x}")
            return x + y + self.base

        @staticmethod
        def smethod(x: int, y: int = 2) -> int:
            if fail:
                raise CustomError(f"bad input {x}")
            return x + y

        @classmethod
        def cmethod(cls, x: int, y: int = 2) -> int:
            if fail:
                raise CustomError(f"bad input {x}")
            return x + y + cls.base

    name = {"method": "method", "async_method": "amethod", "staticmethod": "smethod", "classmethod": "cmethod"}[kind]
    setattr(Holder, name, decorate(Holder.__dict__[name]))  # the static/classmethod object itself
    return getattr(Holder(), name)


def run(kind: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn`` and drive it to completion the way its kind needs."""
    if kind in ("async", "async_method"):
        return asyncio.run(fn(*args))
    if kind == "generator":
        return list(fn(*args))
    if kind == "async_generator":
        async def collect() -> list[Any]:
            return [item async for item in fn(*args)]
        return asyncio.run(collect())
    return fn(*args)


def decorator(name: str, **kwargs: Any) -> Callable[[Any], Any]:
    dec = getattr(sdk, name)
    return dec(**kwargs) if kwargs else dec


FN_NAME = {"sync": "f", "async": "f", "generator": "f", "async_generator": "f", "method": "method",
           "async_method": "amethod", "staticmethod": "smethod", "classmethod": "cmethod"}


def expected(dec: str, fn_name: str, arguments: str, result: str) -> tuple[str, SpanKind, dict[str, Any]]:
    """Name, kind and exact attributes each decorator must produce."""
    if dec in ("execution", "workflow"):
        return (f"invoke_workflow {fn_name}", SpanKind.INTERNAL,
                {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": fn_name,
                 "spanhouse.input": arguments, "spanhouse.output": result})
    if dec == "agent":
        return (f"invoke_agent {fn_name}", SpanKind.INTERNAL,
                {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": fn_name,
                 "spanhouse.input": arguments, "spanhouse.output": result})
    if dec == "tool":
        return (f"execute_tool {fn_name}", SpanKind.INTERNAL,
                {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": fn_name, "gen_ai.tool.type": "function",
                 "gen_ai.tool.call.arguments": arguments, "gen_ai.tool.call.result": result})
    assert dec == "llm"
    return (f"chat {fn_name}", SpanKind.CLIENT,
            {"gen_ai.operation.name": "chat", "spanhouse.input": arguments, "spanhouse.output": result})


def only(spans: list[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dec", DECORATORS)
def test_every_decorator_on_every_kind_of_function(spans: CapturedSpans, dec: str, kind: str) -> None:
    fn = make(kind, decorator(dec))
    result = run(kind, fn, 1)
    generator = kind in ("generator", "async_generator")
    assert result == ([1, 2] if generator else 3)

    span = only(spans.spans())
    name, span_kind, attributes = expected(dec, FN_NAME[kind], '{"x":1}', "[1,2]" if generator else "3")
    assert (span.name, span.kind, dict(span.attributes or {})) == (name, span_kind, attributes)
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()
    assert span.parent is None and span.end_time is not None and span.end_time >= span.start_time  # type: ignore[operator]
    markers = spans.markers()
    if dec in ("execution", "workflow", "agent"):  # roots that are executions get a running marker
        marker = only(markers)
        assert (marker.name, marker.context.trace_id, marker.parent) == (span.name, span.context.trace_id, None)
        assert marker.context.span_id != span.context.span_id
        assert marker.start_time == marker.end_time == span.start_time
        at_start = {k: v for k, v in attributes.items() if k != "spanhouse.output"}  # as it started: no output yet
        assert dict(marker.attributes or {}) == {**at_start, "spanhouse.execution.state": "running"}
    else:
        assert markers == []


def test_marker_is_the_execution_as_it_started(spans: CapturedSpans) -> None:
    @sdk.execution(name="nightly")
    def nightly(day: str) -> str:
        marker = only(spans.markers())  # exported at start, before the execution ends
        assert dict(marker.attributes or {}) == {"gen_ai.operation.name": "invoke_workflow",
                                                 "gen_ai.workflow.name": "nightly", "spanhouse.input": '{"day":"mon"}',
                                                 "spanhouse.execution.state": "running"}
        assert spans.spans() == []
        return "done"

    assert nightly("mon") == "done"
    assert spans.by_name("invoke_workflow nightly").attributes["spanhouse.output"] == "done"  # type: ignore[index]


@pytest.mark.parametrize("code,failed", [(None, False), (0, False), (1, True), ("usage: cli FILE", True)])
def test_sys_exit_fails_a_run_only_with_a_failing_status(spans: CapturedSpans, code: object, failed: bool) -> None:
    """A CLI agent that ends with sys.exit() (status 0) went well; exit(1) did not."""
    @sdk.execution
    def cli_main() -> None:
        raise SystemExit(code)

    with pytest.raises(SystemExit):
        cli_main()
    span = only(spans.spans())
    assert (span.status.status_code is StatusCode.ERROR) is failed
    assert ("error.type" in (span.attributes or {})) is failed


def test_a_cancelled_or_interrupted_call_is_not_a_failure(spans: CapturedSpans) -> None:
    """The loser of a race of tools (asyncio.wait FIRST_COMPLETED, then cancel) and a tool
    cut by Ctrl-C were failed tool calls (status ERROR, CancelledError's exception event)
    in every tool statistic; OpenTelemetry's own use_span records only Exceptions."""
    @sdk.tool
    async def search(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "found"

    @sdk.tool
    def interrupted() -> None:
        raise KeyboardInterrupt

    async def race() -> None:
        fast, slow = asyncio.ensure_future(search(0)), asyncio.ensure_future(search(10))
        await asyncio.wait([fast, slow], return_when=asyncio.FIRST_COMPLETED)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow

    asyncio.run(race())
    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert len(spans.spans()) == 3
    for span in spans.spans():
        assert span.status.status_code is StatusCode.UNSET and not span.events
        assert "error.type" not in (span.attributes or {})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dec", ["execution", "tool"])
def test_exceptions_are_recorded_and_propagate_unchanged(spans: CapturedSpans, dec: str, kind: str) -> None:
    fn = make(kind, decorator(dec), fail=True)
    with pytest.raises(CustomError) as raised:
        run(kind, fn, 7)
    assert str(raised.value) == "bad input 7" and type(raised.value) is CustomError

    span = only(spans.spans())
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "bad input 7"
    assert span.attributes["error.type"] == f"{__name__}.CustomError"  # type: ignore[index]
    event = only(list(span.events))  # type: ignore[arg-type]
    assert event.name == "exception"
    assert event.attributes["exception.type"] == f"{__name__}.CustomError"  # type: ignore[index]
    assert event.attributes["exception.message"] == "bad input 7"  # type: ignore[index]
    assert "CustomError: bad input 7" in event.attributes["exception.stacktrace"]  # type: ignore[index,operator]
    output_key = "gen_ai.tool.call.result" if dec == "tool" else "spanhouse.output"
    assert output_key not in (span.attributes or {})


def test_an_exception_naming_a_non_utf8_file_is_recorded_in_text_utf8_can_carry(spans: CapturedSpans) -> None:
    """A file name as os.listdir decodes it (a lone surrogate for a byte that is not
    UTF-8) in the message and the arguments: the OTLP encoder raised on the status
    description, losing the span's whole batch, and dropped the exception event's message
    and stack trace and the captured arguments."""
    name = b"report-\xff.csv".decode("utf-8", "surrogateescape")

    @sdk.tool
    def parse(file: str) -> None:
        raise ValueError(f"cannot parse {file}")

    with pytest.raises(ValueError):
        parse(name)
    encoded = encode_spans(spans.spans()).resource_spans[0].scope_spans[0].spans[0]  # what OTLP and dsn= send
    assert encoded.status.message == "cannot parse report-\\udcff.csv"
    event = {kv.key: kv.value.string_value for kv in encoded.events[0].attributes}
    assert event["exception.message"] == "cannot parse report-\\udcff.csv"
    assert "ValueError: cannot parse report-\\udcff.csv" in event["exception.stacktrace"]
    attributes = {kv.key: kv.value.string_value for kv in encoded.attributes}
    assert json.loads(attributes["gen_ai.tool.call.arguments"]) == {"file": name}  # a JSON escape: read back as was


def test_a_chained_exception_naming_a_non_utf8_file_keeps_the_stack_trace(spans: CapturedSpans) -> None:
    """The message UTF-8 carries, the exception it was raised from does not: the stack
    trace (which quotes both) was dropped by the OTLP encoder."""
    name = b"cache-\xfe.db".decode("utf-8", "surrogateescape")

    @sdk.tool
    def load() -> None:
        try:
            raise OSError(f"cannot open {name}")
        except OSError as exc:
            raise RuntimeError("cache unavailable") from exc

    with pytest.raises(RuntimeError):
        load()
    encoded = encode_spans(spans.spans()).resource_spans[0].scope_spans[0].spans[0]
    event = {kv.key: kv.value.string_value for kv in encoded.events[0].attributes}
    assert event["exception.message"] == "cache unavailable"
    assert event["exception.escaped"] == "True"
    assert "OSError: cannot open cache-\\udcfe.db" in event["exception.stacktrace"]
    assert "RuntimeError: cache unavailable" in event["exception.stacktrace"]


@pytest.mark.parametrize("capture", [True, False])
def test_an_errors_text_has_the_secrets_its_call_redacted_redacted_too(spans: CapturedSpans, capture: bool) -> None:
    """A review stored a connection string's password, a URL's key= and a refused API key
    in the failed call's status, exception message and stack trace, while the same span's
    arguments had them redacted. The secret-named arguments' values and the URLs' secrets
    are redacted there now, whether content is captured or not; other text is kept."""
    @sdk.tool(capture_content=capture)
    def connect(dsn: str) -> None:
        raise ConnectionError(f"could not connect to {dsn}")

    @sdk.tool(capture_content=capture)
    def call_api(query: str, api_key: str) -> None:
        raise PermissionError(f"invalid API key: {api_key} for {query}")

    @sdk.tool(capture_content=capture)
    def fetch(url: str, *, password: bytes) -> None:
        try:
            raise OSError(f"401 Unauthorized for url: {url} (user a, {password.decode()})")
        except OSError as exc:
            raise RuntimeError("fetch failed") from exc

    with pytest.raises(ConnectionError):
        connect("postgresql://app:SECRETPW-1@db.internal:5432/orders")
    with pytest.raises(PermissionError):
        call_api("weather in Paris", "sk-SECRETKEY-2")
    with pytest.raises(PermissionError):
        call_api("weather in Oslo", api_key="sk-SECRETKEY-3")
    with pytest.raises(RuntimeError):
        fetch("https://maps.example.com/geo?address=x&key=SECRETEXC-4", password=b"hunter2-SECRET-5")
    recorded = [s for s in spans.spans() if s.name.startswith("execute_tool")]
    assert len(recorded) == 4
    for span in recorded:
        texts = [span.status.description or "", *(str(v) for e in span.events for v in (e.attributes or {}).values())]
        texts += [str(v) for v in (span.attributes or {}).values()]
        assert not any("SECRET" in text for text in texts), texts
        assert REDACTED in (span.status.description or "") or span.name.endswith("fetch")
        assert REDACTED in str((span.events[0].attributes or {})["exception.stacktrace"])
    assert recorded[0].status.description == f"could not connect to postgresql://app:{REDACTED}@db.internal:5432/orders"
    assert recorded[2].status.description == f"invalid API key: {REDACTED} for weather in Oslo"

    # the error goes on through the calls around it, whose spans recorded the key in clear
    @sdk.execution(capture_content=capture)
    def agent() -> None:
        call_api("weather in Rome", api_key="sk-SECRETKEY-6")

    @sdk.execution(record=False)
    def unrecorded() -> None:  # its tool's span records nothing: the secret still travels with the error
        call_api("weather in Lima", api_key="sk-SECRETKEY-7")

    @sdk.execution(capture_content=capture)
    def batch() -> None:
        try:
            unrecorded()
        except PermissionError as exc:
            raise RuntimeError("the batch failed") from exc

    spans.clear()
    with pytest.raises(PermissionError):
        agent()
    with pytest.raises(RuntimeError):
        batch()
    assert [s.name for s in spans.spans()] == ["execute_tool call_api", "invoke_workflow agent",
                                               "invoke_workflow batch"]
    for span in spans.spans():
        texts = [span.status.description or "", *(str(v) for e in span.events for v in (e.attributes or {}).values())]
        assert not any("SECRET" in text for text in texts), (span.name, texts)
        assert REDACTED in str((span.events[0].attributes or {})["exception.stacktrace"])
    assert spans.spans()[1].status.description == f"invalid API key: {REDACTED} for weather in Rome"

    # a value redacted from one error is not redacted from another that does not come from it
    @sdk.tool(capture_content=capture)
    def login(user: str, auth_method: str) -> None:
        raise PermissionError(f"{user} may not log in by {auth_method}")

    @sdk.tool(capture_content=capture)
    def set_password(length: int) -> None:
        raise ValueError(f"password must be at least 12 characters, not {length}")

    spans.clear()
    with pytest.raises(PermissionError):
        login("bob", auth_method="password")
    with pytest.raises(ValueError):
        set_password(8)
    assert [s.status.description for s in spans.spans()] == [
        f"bob may not log in by {REDACTED}", "password must be at least 12 characters, not 8"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup came with Python 3.11")
def test_the_secrets_of_a_group_of_errors_are_redacted_and_not_pickled_with_what_did_not_show_them(
        spans: CapturedSpans) -> None:
    """A second review of the redaction: a group of 30 errors of 40 retries each showed
    keys in clear on the execution (the walk stopped at 1,000 errors, last ones first),
    and an error raised over a tool's (its context) carried the key into its pickle,
    where its own text never showed it."""
    import pickle

    @sdk.tool
    def call(account: int, api_key: str) -> None:
        def attempt(n: int) -> None:
            if n == 0:
                raise PermissionError(f"account {account} refused {api_key}")
            try:
                attempt(n - 1)
            except OSError:
                raise TimeoutError(f"retry {n} of account {account}")  # noqa: B904 - a retry's chain
        attempt(40)

    @sdk.execution
    def sync_all() -> None:
        errors = []
        for account in range(30):
            try:
                call(account, f"sk-live-{account:04d}-SECRET")
            except TimeoutError as exc:
                errors.append(exc)
        raise ExceptionGroup("sync failed", errors)

    @sdk.execution
    def sync_one() -> None:
        try:
            call(99, "sk-live-0099-SECRET")
        except TimeoutError:
            raise RuntimeError("sync failed")  # noqa: B904 - its context is the tool's error

    with pytest.raises(ExceptionGroup):
        sync_all()
    with pytest.raises(RuntimeError) as raised:
        sync_one()
    key = re.compile(r"sk-live-\d{4}-SECRET")  # a key's value (the source lines quoted show its template)
    for span in spans.spans():
        texts = [span.status.description or "", *(str(v) for e in span.events for v in (e.attributes or {}).values())]
        assert not any(key.search(text) for text in texts), (span.name, texts)
    assert b"SECRET" not in pickle.dumps(raised.value)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="add_note came with Python 3.11")
def test_a_secret_shown_by_a_note_a_frozen_error_or_a_wrapper_pickled_is_redacted_around_its_tool(
        spans: CapturedSpans) -> None:
    """A third review: a key kept only on the errors whose message showed it was stored
    in clear on the execution around the tool when a note showed it, when the error
    showing it took no attribute (a frozen dataclass) and the tool wrapped it, and when
    a call around the tool repeated it in its own error, which reached the execution
    pickled (without its chain). (A fourth: the key kept for the frozen error went into
    the wrapper's pickle, whose text never showed it.)"""
    import dataclasses
    import pickle

    @dataclasses.dataclass(frozen=True)
    class ApiError(Exception):
        detail: str

        def __str__(self) -> str:
            return self.detail

    @sdk.tool
    def noted(api_key: str) -> None:
        error = PermissionError("refused")
        error.add_note(f"while using key {api_key}")
        raise error

    @sdk.tool
    def frozen(api_key: str) -> None:
        try:
            raise ApiError(f"key {api_key} refused")
        except ApiError as exc:
            raise RuntimeError("tool failed") from exc

    @sdk.tool
    def middle() -> None:
        try:
            noted("sk-live-0003-SECRET")
        except PermissionError as exc:
            raise RuntimeError(f"middle failed: {exc} {exc.__notes__}") from exc

    @sdk.execution
    def run(case: int) -> None:
        if case == 1:
            noted("sk-live-0001-SECRET")
        elif case == 2:
            frozen("sk-live-0002-SECRET")
        try:
            middle()
        except RuntimeError as exc:
            raise pickle.loads(pickle.dumps(exc)) from None

    for case, kind in ((1, PermissionError), (2, RuntimeError), (3, RuntimeError)):
        with pytest.raises(kind) as raised:
            run(case)
        if case == 2:  # the wrapper carries the frozen error's key for the calls around, not into its pickle
            assert b"SECRET" not in pickle.dumps(raised.value)
    executions = [s for s in spans.spans() if s.name == "invoke_workflow run"]
    assert len(executions) == 3
    for span in spans.spans():
        texts = [span.status.description or "", *(str(v) for e in span.events for v in (e.attributes or {}).values())]
        assert not any("SECRET" in text for text in texts), (span.name, texts)


def test_names_given_by_the_user_are_sent_in_text_utf8_can_carry(spans: CapturedSpans) -> None:
    """A tool or execution named after a non-UTF-8 file: the OTLP encoder raised on the
    span name (OpenTelemetry's exporter then lost the span's whole batch) and dropped
    the name attributes."""
    name = b"import-\xff.csv".decode("utf-8", "surrogateescape")

    @sdk.execution(name=name)
    def run_import() -> None:
        with sdk.tool_call(name, description=name):
            pass
        with sdk.llm_call(name):
            pass

    run_import()
    encoded = {s.name: {kv.key: kv.value.string_value for kv in s.attributes}
               for s in encode_spans(spans.spans()).resource_spans[0].scope_spans[0].spans}
    safe = "import-\\udcff.csv"
    assert encoded[f"invoke_workflow {safe}"]["gen_ai.workflow.name"] == safe
    tool = encoded[f"execute_tool {safe}"]
    assert (tool["gen_ai.tool.name"], tool["gen_ai.tool.description"]) == (safe, safe)
    assert encoded[f"chat {safe}"]["gen_ai.request.model"] == safe


def test_an_exception_whose_message_cannot_be_read_is_still_recorded(spans: CapturedSpans) -> None:
    """``str(exc)`` raising lost the exception event (record_exception calls it)."""
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no message")

    @sdk.tool
    def explode() -> None:
        raise Unprintable()

    with pytest.raises(Unprintable):
        explode()
    event = only(list(spans.by_name("execute_tool explode").events))  # type: ignore[arg-type]
    assert event.attributes["exception.type"].endswith("Unprintable")  # type: ignore[index,union-attr]
    assert event.attributes["exception.message"] == ""  # type: ignore[index]
    assert "Unprintable" in event.attributes["exception.stacktrace"]  # type: ignore[index,operator]


def test_builtin_exception_type_is_unqualified_and_empty_message_falls_back(spans: CapturedSpans) -> None:
    @sdk.tool
    def divide(a: int, b: int) -> float:
        return a / b

    @sdk.tool
    def silent() -> None:
        raise KeyError

    with pytest.raises(ZeroDivisionError):
        divide(1, 0)
    with pytest.raises(KeyError):
        silent()
    failed = spans.by_name("execute_tool divide")
    assert (failed.attributes["error.type"], failed.status.description) == ("ZeroDivisionError", "division by zero")  # type: ignore[index]
    empty = spans.by_name("execute_tool silent")
    assert (empty.attributes["error.type"], empty.status.description) == ("KeyError", "KeyError")  # type: ignore[index]


def test_nested_spans_have_the_right_parents_and_one_trace(spans: CapturedSpans) -> None:
    @sdk.tool
    def search(q: str) -> list[str]:
        return [q]

    @sdk.llm(model="gpt-4o", provider="openai")
    async def think(prompt: str) -> str:
        return "search"

    @sdk.agent(description="Plans the work")
    async def planner(goal: str) -> list[str]:
        await think(goal)
        return search(goal)

    @sdk.execution(name="support")
    async def handle(ticket: str) -> list[str]:
        return await planner(ticket)

    assert asyncio.run(handle("refund")) == ["refund"]
    root = spans.by_name("invoke_workflow support")
    agent_span = spans.by_name("invoke_agent planner")
    llm_span = spans.by_name("chat gpt-4o")
    tool_span = spans.by_name("execute_tool search")
    assert root.parent is None
    assert agent_span.parent.span_id == root.context.span_id  # type: ignore[union-attr]
    assert llm_span.parent.span_id == agent_span.context.span_id  # type: ignore[union-attr]
    assert tool_span.parent.span_id == agent_span.context.span_id  # type: ignore[union-attr]
    assert {s.context.trace_id for s in spans.all()} == {root.context.trace_id}
    assert agent_span.attributes["gen_ai.agent.description"] == "Plans the work"  # type: ignore[index]
    assert dict(llm_span.attributes or {}) == {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai",
        "spanhouse.input": '{"prompt":"refund"}', "spanhouse.output": "search"}
    assert len(spans.markers()) == 1  # only the execution: the nested agent is not a root


def test_execution_is_always_a_root_linked_to_the_current_span(spans: CapturedSpans) -> None:
    @sdk.execution
    def job() -> str | None:
        return sdk.current_execution_id()

    outer_tracer = spans.provider.get_tracer("app")
    with outer_tracer.start_as_current_span("GET /run") as outer:
        execution_id = job()
    root = spans.by_name("invoke_workflow job")
    assert root.parent is None
    assert root.context.trace_id != outer.get_span_context().trace_id
    assert execution_id == format(root.context.trace_id, "032x")
    link = only(list(root.links))  # type: ignore[arg-type]
    assert link.context.span_id == outer.get_span_context().span_id


def test_tool_options_and_call_id_argument(spans: CapturedSpans) -> None:
    @sdk.tool(name="db.query", description="Runs SQL", tool_type="datastore", call_id_arg="call_id")
    def query(sql: str, call_id: str | None = None) -> int:
        return 1

    @sdk.tool
    def documented() -> None:
        """Looks things up.

        More details that are not the description.
        """

    query("select 1", "call_1")
    query("select 2", call_id="call_2")
    query("select 3")
    documented()
    first, second, third, doc = spans.spans()
    assert dict(first.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "db.query", "gen_ai.tool.type": "datastore",
        "gen_ai.tool.description": "Runs SQL", "gen_ai.tool.call.id": "call_1",
        "gen_ai.tool.call.arguments": '{"sql":"select 1","call_id":"call_1"}', "gen_ai.tool.call.result": "1"}
    assert first.name == "execute_tool db.query"
    assert second.attributes["gen_ai.tool.call.id"] == "call_2"  # type: ignore[index]
    assert "gen_ai.tool.call.id" not in (third.attributes or {})
    assert doc.attributes["gen_ai.tool.description"] == "Looks things up."  # type: ignore[index]
    with pytest.raises(ValueError, match="call_id_arg 'nope'"):
        sdk.tool(call_id_arg="nope")(lambda: None)


def test_wraps_and_kind_of_function_are_kept() -> None:
    def plain(a: int) -> int:
        """Doc."""
        return a

    async def coro(a: int) -> int:
        return a

    def gen(a: int) -> Iterator[int]:
        yield a

    async def agen(a: int) -> AsyncIterator[int]:
        yield a

    for dec in DECORATORS:
        for fn, check in ((plain, inspect.isfunction), (coro, inspect.iscoroutinefunction),
                          (gen, inspect.isgeneratorfunction), (agen, inspect.isasyncgenfunction)):
            for wrapped in (getattr(sdk, dec)(fn), getattr(sdk, dec)()(fn)):
                assert check(wrapped), (dec, fn)
                assert wrapped is not fn and wrapped.__wrapped__ is fn  # type: ignore[attr-defined]
                assert (wrapped.__name__, wrapped.__qualname__, wrapped.__doc__) == (fn.__name__, fn.__qualname__,
                                                                                   fn.__doc__)
                assert inspect.signature(wrapped) == inspect.signature(fn)
    assert not inspect.iscoroutinefunction(sdk.tool(plain))
    assert isinstance(sdk.tool(staticmethod(plain)), staticmethod)
    assert isinstance(sdk.tool(classmethod(plain)), classmethod)
    with pytest.raises(TypeError, match="not callable"):
        sdk.tool("search")  # type: ignore[call-overload]


def test_a_callable_object_with_an_async_call_is_timed_over_its_await(spans: CapturedSpans) -> None:
    """inspect sees no coroutine function in the object itself: the span ended when the
    coroutine was made, before it ran (0.05 ms, status UNSET, its failure not recorded)."""
    class AsyncTool:
        async def __call__(self, q: str) -> str:
            await asyncio.sleep(0.05)
            raise RuntimeError(f"no {q}")

    search = sdk.tool(name="search")(AsyncTool())
    assert inspect.iscoroutinefunction(search)
    with pytest.raises(RuntimeError):
        asyncio.run(search("x"))
    span = spans.by_name("execute_tool search")
    assert span.status.status_code is StatusCode.ERROR
    assert span.end_time - span.start_time >= 50_000_000  # type: ignore[operator]


def test_a_decorated_class_makes_instances_whatever_its_instances_call_is(spans: CapturedSpans) -> None:
    """A review decorated classes whose __call__ is async or a generator: the class got the
    coroutine (generator) wrapper, and calling it gave a coroutine, not an instance."""
    @sdk.tool
    class AsyncTool:
        async def __call__(self) -> str:
            return "called"

    @sdk.tool
    class GenTool:
        def __call__(self) -> Iterator[int]:
            yield 1

    assert not inspect.iscoroutinefunction(AsyncTool)
    made = AsyncTool()
    assert isinstance(made, AsyncTool.__wrapped__) and asyncio.run(made()) == "called"
    assert list(GenTool()()) == [1]
    assert [s.name for s in spans.spans()] == ["execute_tool AsyncTool", "execute_tool GenTool"]


def test_generator_protocol_send_throw_close(spans: CapturedSpans) -> None:
    @sdk.tool
    def accumulate() -> Iterator[int]:
        total = 0
        while True:
            try:
                value = yield total
            except ValueError:
                value = 100
            total += value or 0

    gen = accumulate()
    assert next(gen) == 0
    assert spans.spans() == []  # still running
    assert gen.send(5) == 5
    assert gen.throw(ValueError("skip")) == 105
    gen.close()  # the consumer stops early: not an error
    span = spans.by_name("execute_tool accumulate")
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes["gen_ai.tool.call.result"] == "[0,5,105]"  # type: ignore[index]
    assert "error.type" not in (span.attributes or {})


def test_generator_return_value_and_span_is_current_only_inside(spans: CapturedSpans) -> None:
    seen: list[trace.Span] = []

    @sdk.tool
    def gen() -> Iterator[int]:
        seen.append(trace.get_current_span())
        yield 1
        seen.append(trace.get_current_span())
        return 42

    def consume() -> int:
        result = yield from gen()
        return result

    driver = consume()
    assert next(driver) == 1
    assert trace.get_current_span() is trace.INVALID_SPAN  # the consumer is not inside the tool span
    with pytest.raises(StopIteration) as stop:
        next(driver)
    assert stop.value.value == 42
    span = spans.by_name("execute_tool gen")
    assert all(s.get_span_context().span_id == span.context.span_id for s in seen) and len(seen) == 2


def _streaming_agent_spans(spans: CapturedSpans, asynchronous: bool) -> dict[str, tuple[str | None, Any, Any]]:
    """An agent streaming a model's answer: the model call and the session it entered
    before its first ``yield`` are still current after it (usage, children, session)."""
    if asynchronous:
        @sdk.agent(name="streamer")
        async def agen() -> AsyncIterator[str]:
            with sdk.session(session_id="s1"), sdk.llm_call("gpt-4o"):
                yield "chunk"
                sdk.record_usage(input_tokens=100, output_tokens=20)
                with sdk.tool_call("after"):
                    pass

        async def drain() -> list[str]:
            return [x async for x in agen()]

        assert asyncio.run(drain()) == ["chunk"]
    else:
        @sdk.agent(name="streamer")
        def gen() -> Iterator[str]:
            with sdk.session(session_id="s1"), sdk.llm_call("gpt-4o"):
                yield "chunk"
                assert trace.get_current_span().name == "chat gpt-4o"  # type: ignore[attr-defined]
                sdk.record_usage(input_tokens=100, output_tokens=20)
                with sdk.tool_call("after"):
                    pass

        assert list(gen()) == ["chunk"]
    by_id = {s.context.span_id: s.name for s in spans.spans()}
    return {s.name: (by_id.get(s.parent.span_id) if s.parent else None, s.attributes.get("session.id"),
                     s.attributes.get("gen_ai.usage.input_tokens")) for s in spans.spans()}


@pytest.mark.parametrize("asynchronous", [False, True], ids=["generator", "async generator"])
def test_a_generator_keeps_what_it_entered_across_a_yield(spans: CapturedSpans, asynchronous: bool) -> None:
    got = _streaming_agent_spans(spans, asynchronous)
    assert got["execute_tool after"] == ("chat gpt-4o", "s1", None)
    assert got["chat gpt-4o"] == ("invoke_agent streamer", "s1", 100)
    assert got["invoke_agent streamer"][2] is None  # the usage is the model call's


_step_var: contextvars.ContextVar[str] = contextvars.ContextVar("step_var", default="start")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["generator", "async generator"])
def test_a_generator_sees_its_consumers_context_changes_and_keeps_its_own(spans: CapturedSpans,
                                                                         asynchronous: bool) -> None:
    """Every step ran in one context copied at the first: what the consumer set between
    steps was never seen inside, unlike in a plain generator. It is now; what the
    generator sets stays inside (carried out, a variable it set and reset stayed set in
    the consumer); and the span is still current in every step and only there."""
    inside: list[tuple[str, str]] = []

    def step(span_name: str) -> str:
        inside.append((_step_var.get(), span_name))
        return _step_var.get()

    if asynchronous:
        @sdk.tool(name="stream")
        async def agen() -> AsyncIterator[str]:
            yield step(trace.get_current_span().name)  # type: ignore[attr-defined]
            yield step(trace.get_current_span().name)  # type: ignore[attr-defined]
            _step_var.set("set inside")
            yield step(trace.get_current_span().name)  # type: ignore[attr-defined]

        async def consume() -> list[str]:
            items = agen()
            got = [await items.__anext__()]
            _step_var.set("set by the consumer")
            got += [await items.__anext__(), await items.__anext__()]
            got.append(_step_var.get())
            await items.aclose()
            return got

        got = asyncio.run(consume())
    else:
        @sdk.tool(name="stream")
        def gen() -> Iterator[str]:
            yield step(trace.get_current_span().name)  # type: ignore[attr-defined]
            yield step(trace.get_current_span().name)  # type: ignore[attr-defined]
            _step_var.set("set inside")
            yield step(trace.get_current_span().name)  # type: ignore[attr-defined]

        def consume() -> list[str]:
            items = gen()
            got = [next(items)]
            _step_var.set("set by the consumer")
            got += [next(items), next(items)]
            assert trace.get_current_span() is trace.INVALID_SPAN
            return [*got, _step_var.get()]

        got = contextvars.copy_context().run(consume)
    assert got == ["start", "set by the consumer", "set inside", "set by the consumer"]
    assert [name for _, name in inside] == ["execute_tool stream"] * 3


class _Ambiguous:
    """A value whose comparison raises, as a numpy array's truth value does."""

    def __eq__(self, other: object) -> bool:
        raise ValueError("The truth value of an array with more than one element is ambiguous")

    __hash__ = object.__hash__


def test_a_consumer_value_whose_comparison_raises_does_not_break_the_generator(spans: CapturedSpans) -> None:
    """Checking whether the consumer changed its context compares the values it set:
    an array set between items made next() raise ValueError."""
    @sdk.tool(name="stream")
    def gen() -> Iterator[object]:
        yield _step_var.get()
        yield _step_var.get()

    def consume() -> list[object]:
        _step_var.set(_Ambiguous())
        items = gen()
        got = [next(items)]
        _step_var.set(array := _Ambiguous())
        return [*got, next(items), array]

    first, second, array = contextvars.copy_context().run(consume)
    assert second is array and first is not array


def test_a_disabled_async_generator_keeps_what_it_entered_across_a_yield(spans: CapturedSpans) -> None:
    """Disabled, an async generator runs through the same loop with a call that records
    nothing; its code's context must survive a ``yield`` there too."""
    seen: list[object] = []

    @sdk.tool
    async def agen() -> AsyncIterator[int]:
        with sdk.session(session_id="s1"):
            yield 1
            seen.append(current_attributes())

    async def drain() -> list[int]:
        return [x async for x in agen()]

    with capture_spans(disabled=True):
        assert asyncio.run(drain()) == [1]
    assert seen == [{"session.id": "s1", "gen_ai.conversation.id": "s1"}]


def test_async_generator_protocol_and_early_close(spans: CapturedSpans) -> None:
    @sdk.agent
    async def stream() -> AsyncIterator[int]:
        total = 0
        while True:
            try:
                value = yield total
            except KeyError:
                value = 10
            total += value or 0

    async def drive() -> list[int]:
        agen = stream()
        out = [await agen.__anext__(), await agen.asend(2), await agen.athrow(KeyError("k"))]
        await agen.aclose()
        return out

    assert asyncio.run(drive()) == [0, 2, 12]
    span = spans.by_name("invoke_agent stream")
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes["spanhouse.output"] == "[0,2,12]"  # type: ignore[index]


def test_a_generator_of_large_items_keeps_only_what_can_be_captured(spans: CapturedSpans) -> None:
    """Items were measured by their own size (a dict of a 5 MB buffer: 184 bytes), so a
    generator streaming sixty batches held all 300 MB until it ended; then by what their
    dicts and lists held, which missed slotted objects, deques and memoryviews. Past the
    first item of a size the captured value cannot hold, the items are left to the
    consumer."""
    class Batch:
        __slots__ = ("number", "rows", "__weakref__")  # slotted: no __dict__ to look into

        def __init__(self, number: int, rows: collections.deque[memoryview]) -> None:
            self.number, self.rows = number, rows

    taken: list[weakref.ref[Batch]] = []
    alive: list[int] = []

    @sdk.tool
    def batches() -> Iterator[Batch]:
        for i in range(8):
            yield Batch(i, collections.deque([memoryview(bytearray(1 << 20))]))
        gc.collect()  # before the generator ends: what its span still holds
        alive.extend(batch.number for r in taken if (batch := r()) is not None)

    for b in batches():
        taken.append(weakref.ref(b))
        del b  # the consumer lets go of each batch
    assert alive == [0, 7]  # the first, kept for the result; the last, the wrapper's until its next step
    result = spans.by_name("execute_tool batches").attributes["gen_ai.tool.call.result"]  # type: ignore[index]
    assert "[truncated 7 more items]" in result


def test_items_are_measured_as_their_data_whatever_their_container() -> None:
    """A dict subclass counted its hash table's bytes (an OrderedDict chunk 438 where a
    dict measured 22: 20x fewer streamed chunks kept) and a bytes subclass its object
    header only; a memoryview inside a slotted object or a deque was missed."""
    from spanhouse.sdk._decorators import _size_of

    chunk = {"id": "c1", "delta": {"content": "hello"}, "index": 0}
    sizes = [_size_of(kind(chunk), unknown=10**9) for kind in (dict, collections.OrderedDict,
                                                                 lambda c: collections.defaultdict(int, c))]
    assert max(sizes) < 2 * min(sizes) < 100

    class Page(list):  # a subclass's attributes count too
        pass

    page = Page([1])
    page.raw = bytearray(5 << 20)  # type: ignore[attr-defined]
    assert _size_of(page, unknown=10**9) >= 5 << 20

    class Progress:
        __slots__ = ("nbytes", "text")  # a Python slot named nbytes is no C size

        def __init__(self) -> None:
            self.nbytes, self.text = 5_000_000_000, "hi"

    assert _size_of(Progress(), unknown=10**9) < 100
    spec = unittest.mock.Mock(spec=dict)  # claims to be a dict: its items() would be a recorded call
    _size_of(spec, unknown=10**9)
    assert spec.mock_calls == []

    class Blob(bytes):
        pass

    assert _size_of(Blob(5 << 20), unknown=10**9) >= 5 << 20
    tagged = Blob(b"id")
    tagged.raw = bytearray(5 << 20)  # type: ignore[attr-defined]  # a text subclass's attributes count too
    assert _size_of(tagged, unknown=10**9) >= 5 << 20
    assert _size_of(collections.deque([memoryview(bytearray(1 << 20))]), unknown=10**9) >= 1 << 20


def test_generator_spans_open_at_first_item_and_cover_the_iteration(spans: CapturedSpans) -> None:
    @sdk.tool
    def numbers() -> Iterator[int]:
        yield 1

    gen = numbers()
    assert spans.all() == []  # calling a generator function runs nothing
    list(gen)
    assert len(spans.spans()) == 1


def test_context_managers(spans: CapturedSpans) -> None:
    with sdk.execution_span("batch", input={"day": "mon"}) as run_:
        with sdk.agent_span("planner", description="plans"):
            with sdk.tool_call("search", arguments={"q": "x", "password": "p"}, call_id="c1") as call:
                call.set_result(["hit"])
            with sdk.llm_call("gpt-4o-mini", provider="openai") as model:
                sdk.record_usage(input_tokens=1000, output_tokens=100)
                model.set_result("answer")
        run_.set_result("ok")
    with pytest.raises(CustomError):
        with sdk.tool_call("broken"):
            raise CustomError("nope")

    root = spans.by_name("invoke_workflow batch")
    tool_span = spans.by_name("execute_tool search")
    assert dict(root.attributes or {}) == {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "batch",
                                           "spanhouse.input": '{"day":"mon"}', "spanhouse.output": "ok"}
    assert dict(tool_span.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search", "gen_ai.tool.type": "function",
        "gen_ai.tool.call.id": "c1", "gen_ai.tool.call.arguments": '{"q":"x","password":"[REDACTED]"}',
        "gen_ai.tool.call.result": '["hit"]'}
    llm_span = spans.by_name("chat gpt-4o-mini")
    assert llm_span.kind is SpanKind.CLIENT
    assert llm_span.attributes["gen_ai.usage.input_tokens"] == 1000  # type: ignore[index]
    assert llm_span.attributes["spanhouse.cost_usd"] == pytest.approx((1000 * 0.15 + 100 * 0.60) / 1e6)  # type: ignore[index]
    assert tool_span.parent.span_id == spans.by_name("invoke_agent planner").context.span_id  # type: ignore[union-attr]
    broken = spans.by_name("execute_tool broken")
    assert broken.status.status_code is StatusCode.ERROR and broken.attributes["error.type"].endswith("CustomError")  # type: ignore[index,union-attr]
    assert trace.get_current_span() is trace.INVALID_SPAN  # every block detached its context
    assert len(spans.markers()) == 1


def test_llm_reads_usage_off_the_response(spans: CapturedSpans) -> None:
    class Usage:
        prompt_tokens = 1200
        completion_tokens = 300

    class ChatCompletion:  # the shape of an OpenAI chat completion
        model = "gpt-4o-2024-08-06"
        usage = Usage()

    @sdk.llm(model="gpt-4o", capture_content=False)
    def complete(prompt: str) -> ChatCompletion:
        return ChatCompletion()

    @sdk.llm(model="claude-sonnet-4-20250514")
    def message(prompt: str) -> dict[str, Any]:  # the shape of an Anthropic message, as a dict
        return {"model": "claude-sonnet-4-20250514", "usage": {"input_tokens": 10, "output_tokens": 20}}

    complete("hi")
    message("hi")
    openai_span = spans.by_name("chat gpt-4o")
    assert dict(openai_span.attributes or {}) == {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300,
        "spanhouse.cost_usd": pytest.approx((1200 * 2.5 + 300 * 10) / 1e6)}
    anthropic_span = spans.by_name("chat claude-sonnet-4-20250514")
    assert anthropic_span.attributes["spanhouse.cost_usd"] == pytest.approx((10 * 3 + 20 * 15) / 1e6)  # type: ignore[index]


def test_anthropic_prompt_cache_tokens_count_as_input_at_their_price(spans: CapturedSpans) -> None:
    """Anthropic's input_tokens leaves out the prompt cache's tokens (the GenAI
    conventions count them as input); reads cost a tenth of the input price, writes 1.25x.
    Dropping them recorded 12 input tokens and a tenth of the cost for a 50k-token prompt."""
    @sdk.llm(model="claude-sonnet-4")
    def message(prompt: str) -> dict[str, Any]:
        return {"model": "claude-sonnet-4", "usage": {"input_tokens": 12, "output_tokens": 100,
                                                      "cache_read_input_tokens": 50_000,
                                                      "cache_creation_input_tokens": 2_000}}

    message("hi")
    got = spans.by_name("chat claude-sonnet-4").attributes or {}
    assert got["gen_ai.usage.input_tokens"] == 52_012 and got["gen_ai.usage.output_tokens"] == 100
    assert got["spanhouse.cost_usd"] == pytest.approx(((12 + 50_000 * 0.1 + 2_000 * 1.25) * 3 + 100 * 15) / 1e6)


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 12_100, "completion_tokens": 500, "total_tokens": 12_600,
     "prompt_tokens_details": {"cached_tokens": 10_000, "cache_creation_tokens": 2_000},
     "cache_read_input_tokens": 10_000, "cache_creation_input_tokens": 2_000},
    # LiteLLM before late 2025: the cache's writes are not in prompt_tokens
    {"prompt_tokens": 10_100, "completion_tokens": 500, "total_tokens": 10_600,
     "prompt_tokens_details": {"cached_tokens": 10_000},
     "cache_read_input_tokens": 10_000, "cache_creation_input_tokens": 2_000},
])
def test_litellm_usage_of_a_claude_call_counts_the_cache_once(spans: CapturedSpans, usage: dict[str, Any]) -> None:
    """LiteLLM's usage for a Claude call counts the cache's reads in prompt_tokens (as
    OpenAI does) and also carries Anthropic's cache fields: they were added again, the
    cache reads priced twice (12,100 input tokens recorded as 24,100, the cost 49% high).
    Its cache writes are in prompt_tokens only where the details name them."""

    @sdk.llm(model="claude-sonnet-4")
    def complete(prompt: str) -> dict[str, Any]:
        return {"model": "claude-sonnet-4-20250514", "usage": usage}

    complete("hi")
    got = spans.by_name("chat claude-sonnet-4").attributes or {}
    assert got["gen_ai.usage.input_tokens"] == 12_100 and got["gen_ai.usage.output_tokens"] == 500
    assert got["spanhouse.cost_usd"] == pytest.approx((100 * 3.0 + 10_000 * 0.30 + 2_000 * 3.0 * 1.25
                                                       + 500 * 15.0) / 1e6)


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 10_000, "completion_tokens": 50, "prompt_tokens_details": {"cached_tokens": 9_000}},
    {"input_tokens": 10_000, "output_tokens": 50, "input_tokens_details": {"cached_tokens": 9_000}},
])
def test_openai_cached_prompt_tokens_are_priced_as_cache_reads(spans: CapturedSpans, usage: dict[str, Any]) -> None:
    """OpenAI counts its (automatic) prompt-cache reads inside the input tokens and names
    them in the details (Chat Completions and Responses). They were priced at the full
    input price: for an agent resending its history, gpt-5's input cost was ~7x too high."""
    @sdk.llm(model="gpt-5")
    def complete(prompt: str) -> dict[str, Any]:
        return {"model": "gpt-5-2025-08-07", "usage": usage}

    complete("hi")
    got = spans.by_name("chat gpt-5").attributes or {}
    assert got["gen_ai.usage.input_tokens"] == 10_000 and got["gen_ai.usage.output_tokens"] == 50
    assert got["spanhouse.cost_usd"] == pytest.approx((1_000 * 1.25 + 9_000 * 0.125 + 50 * 10.0) / 1e6)


@pytest.mark.parametrize("response", [
    # google-genai's GenerateContentResponse (attributes), and the REST API's JSON
    SimpleNamespace(model_version="gemini-2.5-flash", usage_metadata=SimpleNamespace(
        prompt_token_count=10_000, cached_content_token_count=8_000, tool_use_prompt_token_count=500,
        candidates_token_count=40, thoughts_token_count=300, total_token_count=10_840)),
    {"modelVersion": "gemini-2.5-flash", "usageMetadata": {
        "promptTokenCount": 10_000, "cachedContentTokenCount": 8_000, "toolUsePromptTokenCount": 500,
        "candidatesTokenCount": 40, "thoughtsTokenCount": 300, "totalTokenCount": 10_840}},
])
def test_gemini_usage_metadata_is_read_with_thinking_as_output_and_cache_reads_priced(
        spans: CapturedSpans, response: Any) -> None:
    """Gemini reports usage as usage_metadata, not usage: its calls had no tokens and no cost."""
    @sdk.llm(model="gemini-2.5-flash")
    def generate(prompt: str) -> Any:
        return response

    generate("hi")
    got = spans.by_name("chat gemini-2.5-flash").attributes or {}
    assert got["gen_ai.usage.input_tokens"] == 10_500 and got["gen_ai.usage.output_tokens"] == 340
    assert got["gen_ai.response.model"] == "gemini-2.5-flash"
    assert got["spanhouse.cost_usd"] == pytest.approx((2_500 * 0.30 + 8_000 * 0.03 + 340 * 2.50) / 1e6)


def test_a_streamed_model_call_records_the_usage_its_chunks_report(spans: CapturedSpans) -> None:
    """An @llm generator's items were read as one response (a list, no usage): every
    streamed call had no tokens and no cost. OpenAI's last chunk carries the usage
    (stream_options include_usage); Anthropic's message_start the input and cache, its
    message_delta the output so far."""
    def chunk(usage: Any = None) -> SimpleNamespace:
        return SimpleNamespace(model="gpt-4o-mini-2024-07-18", choices=[], usage=usage)

    @sdk.llm(model="gpt-4o-mini", capture_content=False)
    def openai_stream() -> Iterator[SimpleNamespace]:
        yield chunk()
        yield chunk()
        yield chunk(SimpleNamespace(prompt_tokens=1000, completion_tokens=2, prompt_tokens_details=None))

    @sdk.llm(model="claude-sonnet-4-5")
    async def anthropic_stream() -> AsyncIterator[dict[str, Any]]:
        yield {"type": "message_start", "message": {"model": "claude-sonnet-4-5-20250929", "usage": {
            "input_tokens": 100, "output_tokens": 1, "cache_read_input_tokens": 5000,
            "cache_creation_input_tokens": 0}}}
        yield {"type": "content_block_delta", "delta": {"text": "hi"}}
        yield {"type": "message_delta", "usage": {"output_tokens": 40}}

    assert len(list(openai_stream())) == 3

    async def consume() -> None:
        assert len([e async for e in anthropic_stream()]) == 3

    asyncio.run(consume())
    got = spans.by_name("chat gpt-4o-mini").attributes or {}
    assert (got["gen_ai.usage.input_tokens"], got["gen_ai.usage.output_tokens"]) == (1000, 2)
    assert got["spanhouse.cost_usd"] == pytest.approx((1000 * 0.15 + 2 * 0.6) / 1e6)
    got = spans.by_name("chat claude-sonnet-4-5").attributes or {}
    assert (got["gen_ai.usage.input_tokens"], got["gen_ai.usage.output_tokens"]) == (5100, 40)
    assert got["spanhouse.cost_usd"] == pytest.approx((100 * 3 + 5000 * 0.3 + 40 * 15) / 1e6)


def test_stream_usage_is_counted_once_whatever_the_stream_does(spans: CapturedSpans) -> None:
    """A review of the stream usage: record_usage() inside (as @llm's docstring says to
    do) was counted again with the chunks' report; a stream failing part-way recorded
    nothing of the tokens already billed; Anthropic's cumulative input in message_delta
    (server tools) and LangChain's per-chunk usage (to be summed) were misread; the
    Responses API's response.incomplete was ignored; a Bedrock model id had no price."""
    def start(model: str = "claude-sonnet-4-5-20250929") -> dict[str, Any]:
        return {"type": "message_start", "message": {"model": model, "usage": {"input_tokens": 1000,
                                                                               "output_tokens": 1}}}

    @sdk.llm(model="claude-sonnet-4-5")
    def told() -> Iterator[dict[str, Any]]:
        yield start()
        yield {"type": "message_delta", "usage": {"output_tokens": 50}}
        sdk.record_usage(input_tokens=1000, output_tokens=50)

    @sdk.llm(model="claude-sonnet-4-5")
    def cut() -> Iterator[dict[str, Any]]:
        yield start()
        raise ConnectionError("stream reset")

    @sdk.llm(model="claude-sonnet-4-5")
    def server_tools() -> Iterator[dict[str, Any]]:
        yield start()
        yield {"type": "message_delta", "usage": {"input_tokens": 5000, "output_tokens": 50}}

    class AIMessageChunk(SimpleNamespace):
        pass

    @sdk.llm(model="claude-sonnet-4-5")
    def langchain() -> Iterator[SimpleNamespace]:
        yield AIMessageChunk(usage_metadata={"input_tokens": 1000, "output_tokens": 0},
                             response_metadata={"model_name": "claude-sonnet-4-5-20250929"})
        yield AIMessageChunk(usage_metadata={"input_tokens": 0, "output_tokens": 50}, response_metadata={})

    @sdk.llm(model="gpt-4o")
    def incomplete() -> Iterator[SimpleNamespace]:
        yield SimpleNamespace(type="response.incomplete", response=SimpleNamespace(
            model="gpt-4o-2024-08-06", usage=SimpleNamespace(input_tokens=1000, output_tokens=50)))

    @sdk.llm(model="us.anthropic.claude-sonnet-4-5-20250929-v1:0")
    def bedrock() -> dict[str, Any]:
        return {"usage": {"inputTokens": 1000, "outputTokens": 50}}

    @sdk.llm(model="claude-sonnet-4-5")
    async def cancelled() -> AsyncIterator[dict[str, Any]]:
        yield start()
        raise asyncio.CancelledError

    async def consume() -> None:
        with pytest.raises(asyncio.CancelledError):
            [e async for e in cancelled()]

    for stream in (told, server_tools, langchain, incomplete):
        list(stream())
    with pytest.raises(ConnectionError):
        list(cut())
    asyncio.run(consume())
    bedrock()
    got = [(s.attributes or {}) for s in spans.spans()]
    tokens = [(a.get("gen_ai.usage.input_tokens"), a.get("gen_ai.usage.output_tokens")) for a in got]
    assert tokens == [(1000, 50), (5000, 50), (1000, 50), (1000, 50), (1000, 1), (1000, 1), (1000, 50)]
    sonnet = (1000 * 3 + 50 * 15) / 1e6
    assert [a.get("spanhouse.cost_usd") for a in got] == pytest.approx(
        [sonnet, (5000 * 3 + 50 * 15) / 1e6, sonnet, (1000 * 2.5 + 50 * 10) / 1e6, (1000 * 3 + 15) / 1e6,
         (1000 * 3 + 15) / 1e6, sonnet])


def test_a_cost_given_a_gateways_dotted_claude_name_and_a_final_langchain_message(spans: CapturedSpans) -> None:
    """A review of 10a86f3: record_usage(cost_usd=...) alone was added to the response's
    cost; OpenRouter's anthropic/claude-opus-4.5 was priced as claude-opus-4 ($15, not
    $5); the message a LangChain stream's chunks add up to, yielded after them, was
    counted on top of them."""
    @sdk.llm(model="gpt-4o")
    def priced_by_hand() -> dict[str, Any]:
        sdk.record_usage(cost_usd=0.5)
        return {"model": "gpt-4o", "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0}}

    @sdk.llm(model="claude-opus-4-5")
    def routed() -> dict[str, Any]:
        return {"model": "anthropic/claude-opus-4.5", "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0}}

    class AIMessageChunk(SimpleNamespace):  # LangChain's names: each chunk its own usage
        pass

    class AIMessage(SimpleNamespace):  # a whole message: the response's usage
        pass

    @sdk.llm(model="gpt-4o")
    def langchain() -> Iterator[SimpleNamespace]:
        yield AIMessageChunk(usage_metadata={"input_tokens": 10, "output_tokens": 1})
        yield AIMessageChunk(usage_metadata={"input_tokens": 0, "output_tokens": 5})
        yield AIMessage(usage_metadata={"input_tokens": 10, "output_tokens": 6})  # the chunks' sum

    @sdk.llm(model="gpt-4o")
    def equal_chunks() -> Iterator[SimpleNamespace]:  # two chunks alike are two chunks
        yield AIMessageChunk(usage_metadata={"input_tokens": 0, "output_tokens": 5})
        yield AIMessageChunk(usage_metadata={"input_tokens": 0, "output_tokens": 5})

    @sdk.llm(model="gpt-4o")
    def model_named_only() -> dict[str, Any]:  # a model alone is no usage: the response's stays
        sdk.record_usage(model="gpt-4o-2024-08-06")
        return {"model": "gpt-4o", "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}

    @sdk.llm(model="gpt-4o")
    def two_langchain_calls() -> Iterator[SimpleNamespace]:  # each a chunk, then its whole message
        for n in (100, 200):
            yield AIMessageChunk(usage_metadata={"input_tokens": n, "output_tokens": n // 10})
            yield AIMessage(usage_metadata={"input_tokens": n, "output_tokens": n // 10})

    @sdk.llm(model="claude-opus-4.5")  # OpenRouter's dotted name, asked for directly
    def dotted() -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0}}

    @sdk.llm(model="gpt-4o")
    def chunks_then_invoke() -> Iterator[SimpleNamespace]:  # call 1 streamed, call 2 invoked whole
        yield AIMessageChunk(usage_metadata={"input_tokens": 100, "output_tokens": 0})
        yield AIMessageChunk(usage_metadata={"input_tokens": 0, "output_tokens": 10})
        yield AIMessage(usage_metadata={"input_tokens": 200, "output_tokens": 20})

    @sdk.llm(model="gpt-4o")
    def chunks_then_their_sum() -> Iterator[SimpleNamespace]:  # the chunks' `+`: a chunk too
        yield AIMessageChunk(usage_metadata={"input_tokens": 100, "output_tokens": 0})
        yield AIMessageChunk(usage_metadata={"input_tokens": 0, "output_tokens": 10})
        yield AIMessageChunk(usage_metadata={"input_tokens": 100, "output_tokens": 10})

    @sdk.llm(model="openrouter/openai/gpt-4o")  # a price registered for the gateway's own name wins
    def registered() -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0}}

    model_named_only()
    list(two_langchain_calls())
    dotted()
    list(chunks_then_invoke())
    list(chunks_then_their_sum())
    saved = dict(sdk.PRICES)
    try:
        sdk.register_price("openrouter/openai/gpt-4o", input_per_million=100, output_per_million=100)
        registered()
    finally:
        sdk.PRICES.clear()
        sdk.PRICES.update(saved)
    named_only, two_calls, dotted_cost, then_invoke, then_sum, by_registry = (s.attributes or {} for s in spans.spans())
    assert named_only["spanhouse.cost_usd"] == pytest.approx((1000 * 2.5 + 100 * 10) / 1e6)
    assert (two_calls["gen_ai.usage.input_tokens"], two_calls["gen_ai.usage.output_tokens"]) == (300, 30)
    assert dotted_cost["spanhouse.cost_usd"] == pytest.approx(5.0)
    assert (then_invoke["gen_ai.usage.input_tokens"], then_invoke["gen_ai.usage.output_tokens"]) == (300, 30)
    assert (then_sum["gen_ai.usage.input_tokens"], then_sum["gen_ai.usage.output_tokens"]) == (100, 10)
    assert by_registry["spanhouse.cost_usd"] == pytest.approx(100.0)
    spans.clear()

    priced_by_hand()
    routed()
    list(langchain())
    list(equal_chunks())
    by_hand, by_route, summed, alike = (s.attributes or {} for s in spans.spans())
    assert alike["gen_ai.usage.output_tokens"] == 10
    assert by_hand["spanhouse.cost_usd"] == 0.5 and "gen_ai.usage.input_tokens" not in by_hand
    assert by_route["spanhouse.cost_usd"] == pytest.approx(5.0)
    assert (summed["gen_ai.usage.input_tokens"], summed["gen_ai.usage.output_tokens"]) == (10, 6)


@pytest.mark.parametrize(("response", "tokens", "cost"), [
    # Bedrock's Converse API: camelCase, the cache's tokens apart as Anthropic's (model: the requested one)
    ({"usage": {"inputTokens": 1000, "outputTokens": 100, "cacheReadInputTokens": 5000, "cacheWriteInputTokens": 0}},
     (6000, 100), (1000 * 3 + 5000 * 0.3 + 100 * 15) / 1e6),
    # LangChain's AIMessage: usage_metadata, the cache's reads inside input_tokens
    (SimpleNamespace(usage_metadata={"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100,
                                     "input_token_details": {"cache_read": 800}},
                     response_metadata={"model_name": "claude-sonnet-4-5-20250929"}),
     (1000, 100), (200 * 3 + 800 * 0.3 + 100 * 15) / 1e6),
    # a gateway's name for the model (OpenRouter's "anthropic/..."): no price of its own, the requested one's
    ({"model": "anthropic/claude-sonnet-4.5", "usage": {"prompt_tokens": 1000, "completion_tokens": 100}},
     (1000, 100), (1000 * 3 + 100 * 15) / 1e6),
])
def test_bedrock_langchain_and_gateway_responses_have_usage_and_cost(spans: CapturedSpans, response: Any,
                                                                     tokens: tuple[int, int], cost: float) -> None:
    """Bedrock's and LangChain's usage were dropped without a sign; a response naming the
    model as a gateway does had tokens but no cost though the requested model is priced."""
    @sdk.llm(model="claude-sonnet-4-5")
    def call() -> Any:
        return response

    call()
    got = spans.by_name("chat claude-sonnet-4-5").attributes or {}
    assert (got["gen_ai.usage.input_tokens"], got["gen_ai.usage.output_tokens"]) == tokens
    assert got["spanhouse.cost_usd"] == pytest.approx(cost)


def test_the_model_that_answered_prices_the_call_over_the_one_asked_for(spans: CapturedSpans) -> None:
    """The asked-for model's own entry outranked the answering model's prefix: gpt-4o
    asked, gpt-4o-mini-2024-07-18 answering (a router's fallback) was priced 16x too high."""
    @sdk.llm(model="gpt-4o")
    def routed() -> dict[str, Any]:
        return {"model": "gpt-4o-mini-2024-07-18", "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0}}

    @sdk.llm(model="gpt-4.1")
    def by_hand() -> None:
        sdk.record_usage(input_tokens=1_000_000, output_tokens=0, model="gpt-4.1-nano-2025-04-14")

    @sdk.llm(model="gpt-4o")
    def unknown_answer() -> dict[str, Any]:  # no price for what answered: the asked-for model's
        return {"model": "house-model-7", "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0}}

    routed()
    by_hand()
    unknown_answer()
    costs = [(s.attributes or {})["spanhouse.cost_usd"] for s in spans.spans()]
    assert costs == [pytest.approx(0.15), pytest.approx(0.10), pytest.approx(2.50)]


@pytest.mark.parametrize("call", [
    lambda: sdk.record_usage(cost_usd=10**400), lambda: sdk.record_usage(input_tokens=2**63),
    lambda: sdk.register_price("m", input_per_million=10**400, output_per_million=1),
    lambda: sdk.feedback("0" * 31 + "1", value=10**400),
])
def test_numbers_past_what_can_be_stored_are_a_value_error(spans: CapturedSpans, call: Callable[[], None]) -> None:
    """10**400 made math.isfinite raise OverflowError (not the documented ValueError), and
    a count past an int64 was accepted and then dropped by the OTLP encoder."""
    with pytest.raises(ValueError):
        call()


def test_record_false_drops_the_whole_execution_but_not_others(spans: CapturedSpans) -> None:
    @sdk.tool
    def lookup(q: str) -> str:
        return q

    @sdk.llm(model="gpt-4o")
    def think() -> None:
        sdk.record_usage(input_tokens=5, output_tokens=5)

    @sdk.execution(record=False)
    def private(q: str) -> tuple[str, str | None]:
        think()
        with spans.provider.get_tracer("other-library").start_as_current_span("http GET"):
            pass
        with sdk.tool_call("inline"):
            pass
        return lookup(q), sdk.current_execution_id()

    @sdk.execution
    def public(q: str) -> str:
        return lookup(q)

    assert private("secret") == ("secret", None)
    assert public("hello") == "hello"
    names = sorted(s.name for s in spans.all())
    assert names == ["execute_tool lookup", "invoke_workflow public", "invoke_workflow public"]  # marker + span
    assert "secret" not in json.dumps([dict(s.attributes or {}) for s in spans.all()])
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_record_false_on_async_generator_and_context_manager(spans: CapturedSpans) -> None:
    @sdk.tool
    async def fetch() -> int:
        return 1

    @sdk.execution(record=False)
    async def stream() -> AsyncIterator[int]:
        yield await fetch()

    async def drive() -> list[int]:
        return [i async for i in stream()]

    assert asyncio.run(drive()) == [1]
    with sdk.execution_span("quiet", record=False):
        with sdk.tool_call("t"):
            pass
    assert spans.all() == []


def test_runtime_disabled_calls_straight_through_for_every_kind(spans: CapturedSpans) -> None:
    functions = {kind: make(kind, sdk.tool) for kind in KINDS}  # decorated while enabled
    with capture_spans(disabled=True) as disabled:
        for kind, fn in functions.items():
            assert run(kind, fn, 1) == ([1, 2] if kind in ("generator", "async_generator") else 3)
        with sdk.tool_call("inline") as call:
            call.set_result("x")
        sdk.record_usage(input_tokens=1)
        sdk.feedback("0" * 31 + "1", rating=5)
        assert disabled.all() == []
    assert spans.all() == []


def test_decorating_while_disabled_returns_the_function_itself() -> None:
    def f() -> int:
        return 1

    async def g() -> int:
        return 1

    with capture_spans(disabled=True):
        assert sdk.tool(f) is f and sdk.execution(record=False)(g) is g and sdk.llm(model="m")(f) is f
        static = sdk.agent(staticmethod(f))
        assert isinstance(static, staticmethod) and static.__func__ is f
        with pytest.raises(ValueError):
            sdk.tool(name="")(f)  # arguments are still checked


def test_decorator_argument_errors() -> None:
    with pytest.raises(ValueError, match="name"):
        sdk.execution(name="")
    with pytest.raises(ValueError, match="record"):
        sdk.execution(record="no")(lambda: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="capture_content"):
        sdk.tool(capture_content="yes")(lambda: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="arguments"):
        sdk.tool_call("t", arguments=["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model"):
        sdk.llm_call("")


def test_concurrent_async_executions_stay_separate(spans: CapturedSpans) -> None:
    @sdk.tool
    async def step(i: int) -> int:
        await asyncio.sleep(0.001)
        return i

    @sdk.execution
    async def job(i: int) -> int:
        for _ in range(3):
            await step(i)
        return i

    async def main() -> list[int]:
        return await asyncio.gather(*(job(i) for i in range(5)))

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    roots = [s for s in spans.spans() if s.parent is None]
    assert len(roots) == 5 and len(spans.markers()) == 5
    by_span_id = {r.context.span_id: r for r in roots}
    for tool_span in (s for s in spans.spans() if s.parent is not None):
        root = by_span_id[tool_span.parent.span_id]  # type: ignore[union-attr]
        assert tool_span.attributes["gen_ai.tool.call.arguments"] == root.attributes["spanhouse.input"]  # type: ignore[index]


def test_functools_partial_and_callable_objects_are_sync(spans: CapturedSpans) -> None:
    def add(a: int, b: int) -> int:
        return a + b

    partial_tool = sdk.tool(name="add")(functools.partial(add, 1))
    assert partial_tool(2) == 3
    assert spans.by_name("execute_tool add").attributes["gen_ai.tool.call.arguments"] == '{"b":2}'  # type: ignore[index]


def test_callables_that_do_not_bind_stay_unbound_as_class_attributes(spans: CapturedSpans) -> None:
    """The wrapper was a function, which binds: a decorated callable object or partial
    stored on a class was handed the instance, which it never got undecorated."""
    class Adder:
        def __call__(self, x: int) -> int:
            return x + 1

    class AsyncAdder:
        async def __call__(self, x: int) -> int:
            return x + 2

    def count(n: int) -> Iterator[int]:
        yield from range(n)

    class Holder:
        add = sdk.tool(name="add")(Adder())
        add_async = sdk.tool(name="add_async")(AsyncAdder())
        largest = sdk.tool(name="largest")(functools.partial(max, 0))
        counted = sdk.tool(name="count")(functools.partial(count, 2))
        length = sdk.tool(name="len")(len)

        @sdk.tool
        def method(self, x: int) -> int:  # a function still binds
            return x

    holder = Holder()
    assert holder.add(1) == 2 and asyncio.run(holder.add_async(1)) == 3 and holder.largest(5) == 5
    assert list(holder.counted()) == [0, 1] and holder.length("abc") == 3 and holder.method(7) == 7
    assert sorted(s.name.removeprefix("execute_tool ") for s in spans.spans()) == [
        "add", "add_async", "count", "largest", "len", "method"]
    assert inspect.iscoroutinefunction(Holder.add_async) and inspect.isgeneratorfunction(Holder.counted)
    assert not inspect.iscoroutinefunction(Holder.add) and not inspect.isgeneratorfunction(Holder.largest)
    assert Holder.largest.__wrapped__.func is max and Holder.length.__wrapped__ is len
    assert Holder.length.__name__ == "len"
    assert inspect.signature(Holder.add) == inspect.signature(Adder())


def _parents(spans: CapturedSpans) -> dict[str, str | None]:
    names = {s.context.span_id: s.name for s in spans.all()}
    return {s.name: names.get(s.parent.span_id) if s.parent else None for s in spans.all()}


def test_a_generator_stepped_from_other_threads_leaves_a_block_across_a_yield(spans: CapturedSpans,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Starlette steps a sync iterator in a worker thread with its own context copy: a
    `with` across a yield entered in one copy could not be left in another, and the
    ended block stayed current for the rest of the generator (and the log said so)."""
    import concurrent.futures
    import contextvars

    @sdk.tool
    def after() -> None:
        pass

    @sdk.llm(model="gpt-4o")
    def stream() -> Iterator[int]:
        with sdk.tool_call("inside"):
            yield 1
            yield 2
        after()
        yield 3

    with sdk.execution_span("e"):
        it, out = stream(), []
        while True:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a fresh thread and context copy per step
                try:
                    out.append(pool.submit(contextvars.copy_context().run, next, it).result())
                except StopIteration:
                    break
    assert out == [1, 2, 3]
    assert _parents(spans) == {"execute_tool inside": "chat gpt-4o", "execute_tool after": "chat gpt-4o",
                               "chat gpt-4o": "invoke_workflow e", "invoke_workflow e": None}
    assert "Failed to detach context" not in caplog.text


def test_an_async_generator_read_with_a_timeout_per_item_leaves_a_block_across_a_yield(
        spans: CapturedSpans, caplog: pytest.LogCaptureFixture) -> None:
    """asyncio.wait_for(anext(g), t) runs each step in a task of its own (a context copy)."""
    @sdk.tool
    async def after() -> None:
        pass

    @sdk.llm(model="gpt-4o")
    async def stream() -> AsyncIterator[int]:
        with sdk.tool_call("inside"):
            yield 1
            yield 2
        await after()
        yield 3

    @sdk.execution
    async def run() -> list[int]:
        g, out = stream(), []
        while True:
            try:
                out.append(await asyncio.wait_for(g.__anext__(), timeout=5))
            except StopAsyncIteration:
                return out

    assert asyncio.run(run()) == [1, 2, 3]
    assert _parents(spans) == {"execute_tool inside": "chat gpt-4o", "execute_tool after": "chat gpt-4o",
                               "chat gpt-4o": "invoke_workflow run", "invoke_workflow run": None}
    assert "Failed to detach context" not in caplog.text
