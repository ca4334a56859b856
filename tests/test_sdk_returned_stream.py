"""An ``@llm`` function that returns its stream unread (``return client.chat.completions.create(stream=True)``)
recorded no tokens and no cost, and its span ended before a token was streamed. The real
OpenAI client streams from a server on 127.0.0.1 answering as OpenAI's API does (SSE
chunks, the usage in a last chunk when ``stream_options.include_usage`` is asked for)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import os
import queue
import subprocess
import sys
import threading
import time
import types
import warnings
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Container, Iterable, Iterator, Sized
from contextlib import AbstractAsyncContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import openai
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from spanhouse import sdk
from spanhouse.sdk.testing import CapturedSpans, capture_spans

MODEL = "gpt-4o-mini"
WORDS = ["Hello", " from", " the", " stream"]
USAGE = {"prompt_tokens": 1000, "completion_tokens": 4, "total_tokens": 1004}
COST = (1000 * 0.15 + 4 * 0.6) / 1e6  # gpt-4o-mini's list price per million tokens
CHAT: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True,
                        "stream_options": {"include_usage": True}}
"""A streamed chat completion asking for its usage, as the OpenAI client is called."""


def _chunk(delta: dict[str, Any], usage: dict[str, int] | None = None, finish: str | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": f"{MODEL}-2024-07-18",
            "choices": choices, "usage": usage}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class _ChatCompletions(BaseHTTPRequestHandler):
    """POST /v1/chat/completions with stream=True, as OpenAI answers it."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        events = [_chunk({"role": "assistant", "content": ""})]
        events += [_chunk({"content": word}) for word in WORDS]
        events.append(_chunk({}, finish="stop"))
        if request.get("stream_options", {}).get("include_usage"):
            events.append(_chunk({}, usage=USAGE))
        events.append(b"data: [DONE]\n\n")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        try:
            for event in events:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):  # a client that closed its stream early
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatCompletions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans(capture_content=False) as captured:
        yield captured


def _async_asker(base_url: str) -> tuple[openai.AsyncOpenAI, Callable[[], Awaitable[openai.AsyncStream[Any]]]]:
    """The real async client, and an @llm function returning its stream unread."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)

    @sdk.llm(model=MODEL)
    async def ask() -> openai.AsyncStream[Any]:
        return await client.chat.completions.create(**CHAT)
    return client, ask


def _sent_to_its_end(stream: Any) -> None:
    """Read a two-item stream with send(), as ``yield from`` or a coroutine-style driver does."""
    stream.send(None)
    stream.send("more")
    with pytest.raises(StopIteration):
        stream.send("more")


def _read_in_its_call(stream: Any, items: int, kept: list[weakref.ref[Any]], captured: CapturedSpans) -> ReadableSpan:
    """Read ``stream`` to its end and keep it: it holds no item read (the first made, in
    ``kept``), and the tool its code called (``lookup``) is the model call's child. The
    model call's span."""
    assert len(list(stream)) == items
    gc.collect()
    assert kept[0]() is None
    llm_span = captured.by_name(f"chat {MODEL}")
    assert _is_child(captured.by_name("execute_tool lookup"), llm_span)
    return llm_span


def _is_child(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return span.parent is not None and span.parent.span_id == parent.context.span_id


def _ended(spans: CapturedSpans) -> list[str]:
    return [span.name for span in spans.spans()]


def test_a_returned_stream_keeps_the_span_open_until_read_and_records_its_usage(
        spans: CapturedSpans, base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="test", max_retries=0)

    @sdk.llm(model=MODEL, provider="openai")
    def ask(question: str) -> openai.Stream[Any]:
        return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                              stream=True, stream_options={"include_usage": True})

    stream = ask("hi")
    assert isinstance(stream, openai.Stream)  # the caller's code sees the client's own type
    assert stream.response.status_code == 200
    assert _ended(spans) == []  # open while the stream is unread
    before_reading = time.time_ns()
    with stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "".join(WORDS)
    span = spans.by_name(f"chat {MODEL}")
    got = span.attributes or {}
    assert (got["gen_ai.usage.input_tokens"], got["gen_ai.usage.output_tokens"]) == (1000, 4)
    assert got["spanhouse.cost_usd"] == pytest.approx(COST)
    assert got["gen_ai.response.model"] == f"{MODEL}-2024-07-18"
    assert span.status.status_code is not StatusCode.ERROR
    assert span.end_time is not None and span.end_time >= before_reading  # it covers the streaming


def test_an_async_returned_stream_records_its_usage_at_its_end(spans: CapturedSpans, base_url: str) -> None:
    async def run() -> str:
        client, ask = _async_asker(base_url)

        stream = await ask()
        assert isinstance(stream, openai.AsyncStream)
        assert _ended(spans) == []
        async with stream:
            parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        await client.close()
        return "".join(parts)

    assert asyncio.run(run()) == "".join(WORDS)
    got = spans.by_name(f"chat {MODEL}").attributes or {}
    assert (got["gen_ai.usage.input_tokens"], got["gen_ai.usage.output_tokens"]) == (1000, 4)
    assert got["spanhouse.cost_usd"] == pytest.approx(COST)


def test_a_returned_stream_closed_early_or_dropped_ends_its_span(spans: CapturedSpans, base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="test", max_retries=0)

    @sdk.llm(model=MODEL)
    def ask() -> openai.Stream[Any]:
        return client.chat.completions.create(**CHAT)

    stream = ask()
    next(stream)
    stream.close()
    assert _ended(spans) == [f"chat {MODEL}"]
    spans.clear()

    stream = ask()
    with stream:
        next(stream)
    assert _ended(spans) == [f"chat {MODEL}"]
    spans.clear()

    ask()  # dropped unread
    gc.collect()
    assert _ended(spans) == [f"chat {MODEL}"]
    assert spans.spans()[0].status.status_code is not StatusCode.ERROR


def test_a_returned_stream_failing_part_way_fails_its_call_with_the_usage_so_far(spans: CapturedSpans) -> None:
    def anthropic_events() -> Iterator[dict[str, Any]]:
        yield {"type": "message_start", "message": {"model": "claude-sonnet-4-5-20250929",
                                                    "usage": {"input_tokens": 1000, "output_tokens": 1}}}
        raise ConnectionError("stream reset")

    @sdk.llm(model="claude-sonnet-4-5")
    def ask() -> Iterator[dict[str, Any]]:
        return anthropic_events()

    stream = ask()
    with pytest.raises(ConnectionError):
        list(stream)
    span = spans.by_name("chat claude-sonnet-4-5")
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["gen_ai.usage.input_tokens"] == 1000


def test_what_is_not_a_stream_ends_the_span_at_return(spans: CapturedSpans) -> None:
    """A response model iterable over its fields, a mock answering every magic method, and
    the result of a tool (not a model call) are returned as they are."""
    response = {"model": MODEL, "usage": USAGE}

    @sdk.llm(model=MODEL)
    def ask() -> Any:
        return response

    mock = MagicMock()

    @sdk.llm(model=MODEL)
    def mocked() -> Any:
        return mock

    @sdk.tool
    def numbers() -> Iterator[int]:
        return iter([1, 2])

    assert ask() is response
    assert mocked() is mock
    assert type(numbers()).__name__ == "list_iterator"
    assert sorted(_ended(spans)) == sorted([f"chat {MODEL}", f"chat {MODEL}", "execute_tool numbers"])


ANTHROPIC_START = {"type": "message_start", "message": {"model": "claude-sonnet-4-5-20250929",
                                                        "usage": {"input_tokens": 1000, "output_tokens": 1}}}
ANTHROPIC_DELTA = {"type": "message_delta", "usage": {"output_tokens": 50}}


def test_a_stream_read_both_ways_or_driven_by_send_and_throw_ends_its_span(spans: CapturedSpans) -> None:
    """A review found a stream iterable both ways (LiteLLM's) given the async proxy, whose
    inherited __iter__ handed a `for` loop the raw stream (no chunk seen, the span open
    until collected), and a returned generator's send() and throw() passing the proxy by
    (its end and its failure ended nothing)."""
    class BothWays:  # litellm's CustomStreamWrapper: __next__ and __anext__, each iterator itself
        def __init__(self) -> None:
            self._events = iter([ANTHROPIC_START, ANTHROPIC_DELTA])

        def __iter__(self) -> BothWays:
            return self

        def __aiter__(self) -> BothWays:
            return self

        def __next__(self) -> dict[str, Any]:
            return next(self._events)

        async def __anext__(self) -> dict[str, Any]:
            return next(self._events, None) or self._stop()

        def _stop(self) -> Any:
            raise StopAsyncIteration

    def events() -> Iterator[dict[str, Any]]:
        yield ANTHROPIC_START
        yield ANTHROPIC_DELTA

    @sdk.llm(model="claude-sonnet-4-5")
    def ask(stream: Any) -> Any:
        return stream

    assert len(list(ask(BothWays()))) == 2
    assert [(span.attributes or {})["gen_ai.usage.output_tokens"] for span in spans.spans()] == [50]
    spans.clear()

    _sent_to_its_end(ask(events()))
    assert [(span.attributes or {})["gen_ai.usage.output_tokens"] for span in spans.spans()] == [50]
    spans.clear()

    failed = ask(events())
    next(failed)
    with pytest.raises(ConnectionError):
        failed.throw(ConnectionError("stream reset"))
    assert [span.status.status_code for span in spans.spans()] == [StatusCode.ERROR]


def test_a_returned_stream_gains_no_way_of_being_read_or_closed(spans: CapturedSpans) -> None:
    """The first proxy had close(), __iter__ and a context manager's methods whatever the
    stream had: a WSGI server closing what has close() called a map object's missing one,
    and httpx took an async stream given as a request body for a sync one (Iterable)."""
    @sdk.llm(model=MODEL)
    def ask(stream: Any) -> Any:
        return stream

    async def events() -> Any:
        yield {"model": MODEL, "usage": USAGE}

    mapped = ask(map(dict, [{"model": MODEL, "usage": USAGE}]))
    assert not hasattr(mapped, "close")
    with pytest.raises(TypeError):
        with mapped:
            pass
    assert not isinstance(ask(iter([])), Sized | Container | AbstractAsyncContextManager)
    streamed = ask(events())
    assert not isinstance(streamed, Iterable) and isinstance(streamed, AsyncIterable)
    assert not hasattr(streamed, "close") and hasattr(streamed, "aclose")
    asyncio.run(streamed.aclose())
    del streamed  # closed unstarted, it ends when collected
    gc.collect()
    list(mapped)
    assert len(spans.spans()) == 3


EXIT_SCRIPT = """
import tempfile
scratch = tempfile.TemporaryDirectory()  # a weakref.finalize made before the SDK's provider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from spanhouse import sdk

class Print(SpanExporter):
    def export(self, spans):
        for span in spans:
            if span.name.startswith("chat"):
                print("exported", span.name, flush=True)
        return SpanExportResult.SUCCESS

@sdk.tool
def rows():
    return (i for i in range(2))

assert list(rows()) == [0, 1]  # a generator returned before configure(): its exit hook came first

sdk.configure(exporter=Print(), service_name="exit-test")

@sdk.llm(model="gpt-4o-mini")
def ask():
    return iter([{"model": "gpt-4o-mini", "usage": {"prompt_tokens": 3, "completion_tokens": 1}}])

stream = ask()  # still unread at exit
"""


def test_a_stream_unread_at_exit_is_exported(tmp_path: Path) -> None:
    """A review found weakref.finalize's exit hook, registered at the first finalizer anyone
    made (here a TemporaryDirectory's, before configure()), running after the tracer
    provider's shutdown: the span of a stream still open at exit was lost. The next
    found spanhouse's own hook placed as early by a generator returned before configure()."""
    script = tmp_path / "exit.py"
    script.write_text(EXIT_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OTEL_SDK_DISABLED": "false"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["exported chat gpt-4o-mini"]


def test_a_returned_generator_runs_in_its_call_and_lets_go_of_it_once_ended(spans: CapturedSpans) -> None:
    """A second review: a returned generator's code ran in the caller's context (a tool it
    called was the caller's child, its record_usage() landed on the caller's span); a
    finished stream the caller kept held what the call had kept of its items; a close
    that raised was a success; an unhashable stream type made the call raise."""
    class Chunk:
        pass

    kept: list[weakref.ref[Chunk]] = []

    @sdk.tool
    def lookup() -> str:
        return "found"

    def chunks() -> Iterator[Chunk]:
        lookup()
        sdk.record_usage(input_tokens=10, output_tokens=2)
        chunk = Chunk()
        kept.append(weakref.ref(chunk))
        yield chunk

    @sdk.llm(model=MODEL)
    def ask() -> Iterator[Chunk]:
        return chunks()

    @sdk.agent
    def agent() -> Iterator[Chunk]:
        return ask()

    with capture_spans(capture_content=True) as captured:
        llm_span = _read_in_its_call(agent(), 1, kept, captured)
    assert (llm_span.attributes or {})["gen_ai.usage.input_tokens"] == 10

    def failing_cleanup() -> Iterator[int]:
        try:
            yield 1
        finally:
            raise ConnectionError("cleanup failed")

    class Meta(type):
        def __eq__(cls, other: object) -> bool:
            return cls is other
        __hash__ = None  # type: ignore[assignment]

    class Unhashable(metaclass=Meta):
        def __iter__(self) -> Unhashable:
            return self

        def __next__(self) -> int:
            raise StopIteration

    @sdk.llm(model=MODEL)
    def returned(stream: Any) -> Any:
        return stream

    closing = returned(failing_cleanup())
    next(closing)
    with pytest.raises(ConnectionError):
        closing.close()
    assert [span.status.status_code for span in spans.spans()] == [StatusCode.ERROR]
    odd = Unhashable()
    assert returned(odd) is odd
    assert len(spans.spans()) == 2


def test_a_read_cut_by_a_per_chunk_timeout_leaves_the_stream_open(spans: CapturedSpans) -> None:
    """A per-chunk timeout (wait_for on each __anext__) cancels a read the stream
    survives: the first one ended the span, and the usage read after it was lost."""
    class Queued:
        def __init__(self) -> None:
            self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def __aiter__(self) -> Queued:
            return self

        async def __anext__(self) -> dict[str, Any]:
            chunk = await self.queue.get()
            if not chunk:
                raise StopAsyncIteration
            return chunk

    @sdk.llm(model=MODEL)
    async def ask(stream: Queued) -> Any:
        return stream

    async def run() -> None:
        source = Queued()
        stream = await ask(source)
        with pytest.raises(asyncio.TimeoutError):  # TimeoutError from 3.11, a class of its own before
            await asyncio.wait_for(stream.__anext__(), 0.01)
        assert _ended(spans) == []
        source.queue.put_nowait({"model": MODEL, "usage": USAGE})
        source.queue.put_nowait({})
        assert [chunk async for chunk in stream] == [{"model": MODEL, "usage": USAGE}]

    asyncio.run(run())
    assert [(span.attributes or {})["gen_ai.usage.input_tokens"] for span in spans.spans()] == [1000]


def test_a_returned_async_generator_runs_in_its_call_and_sees_the_callers_variables(spans: CapturedSpans) -> None:
    """A third review: nothing tested the async steps' context, nor that a ContextVar the
    caller sets between reads reaches the stream's code, as in a plain generator."""
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
    seen: list[str] = []

    @sdk.tool
    async def lookup() -> str:
        return "found"

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        await lookup()
        sdk.record_usage(input_tokens=10, output_tokens=2)
        yield {"n": 1}
        seen.append(request_id.get())
        yield {"n": 2}

    @sdk.llm(model=MODEL)
    async def ask() -> AsyncIterator[dict[str, Any]]:
        return chunks()

    async def run() -> None:
        stream = await ask()
        await stream.__anext__()
        request_id.set("r-42")
        await stream.__anext__()
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()

    asyncio.run(run())
    llm_span, tool_span = spans.by_name(f"chat {MODEL}"), spans.by_name("execute_tool lookup")
    assert _is_child(tool_span, llm_span)
    assert (llm_span.attributes or {})["gen_ai.usage.input_tokens"] == 10
    assert seen == ["r-42"]


def test_an_async_stream_closed_or_left_early_ends_its_span(spans: CapturedSpans, base_url: str) -> None:
    async def run() -> None:
        client, ask = _async_asker(base_url)

        stream = await ask()
        await stream.__anext__()
        await stream.close()
        assert len(spans.spans()) == 1
        async with await ask() as stream:
            async for _ in stream:
                break
        assert len(spans.spans()) == 2
        await client.close()

    asyncio.run(run())


def test_a_stream_closed_from_another_thread_while_read_is_closed(spans: CapturedSpans) -> None:
    """Every step entered one context, which cannot be entered twice at once: a close()
    from another thread (a stop button) while the reader waited raised RuntimeError,
    did not close the stream, and failed the call."""
    class Waiting:
        def __init__(self) -> None:
            self.items: queue.Queue[dict[str, Any] | None] = queue.Queue()

        def __iter__(self) -> Waiting:
            return self

        def __next__(self) -> dict[str, Any]:
            item = self.items.get(timeout=30)
            if item is None:
                raise StopIteration
            return item

        def close(self) -> None:
            self.items.put(None)

    @sdk.llm(model=MODEL)
    def ask() -> Any:
        return Waiting()

    stream = ask()
    reader = threading.Thread(target=lambda: list(stream))
    reader.start()
    time.sleep(0.1)  # the reader waits inside the stream's __next__
    stream.close()
    reader.join(30)
    assert not reader.is_alive()
    assert [span.status.status_code for span in spans.spans()] == [StatusCode.UNSET]


def test_an_llm_returning_another_llms_stream_answers_as_the_stream(spans: CapturedSpans) -> None:
    """The third review: the outer proxy, built from the inner proxy's class, took its
    blanked methods for the stream's own (an async stream became Iterable again)."""
    async def events() -> AsyncIterator[dict[str, Any]]:
        yield {"model": MODEL, "usage": USAGE}

    @sdk.llm(model=MODEL)
    def inner(stream: Any) -> Any:
        return stream

    @sdk.llm(model=MODEL)
    def outer(stream: Any) -> Any:
        return inner(stream)

    synchronous = outer(iter([{"model": MODEL, "usage": USAGE}]))
    assert not isinstance(synchronous, Sized | Container | AbstractAsyncContextManager)
    asynchronous = outer(events())
    assert not isinstance(asynchronous, Iterable)
    list(synchronous)
    del asynchronous  # never started: ended when collected
    gc.collect()
    assert len(spans.spans()) == 4


def test_a_generator_returned_by_any_decorator_is_covered_by_its_span() -> None:
    """As Langfuse's @observe does: a tool returning a generator ended its span before the
    work (and the model calls made while it is read were the caller's); an execution
    returning the generator a web framework streams ended before its answer was sent."""
    @sdk.llm(model=MODEL)
    def summarize(row: int) -> dict[str, Any]:
        return {"model": MODEL, "usage": USAGE}

    @sdk.tool
    def search(query: str) -> Iterator[int]:
        return (summarize(row) and row for row in range(3))

    @sdk.execution
    def handle() -> AsyncIterator[str]:
        async def answer() -> AsyncIterator[str]:
            for row in search("q"):
                yield str(row)
        return answer()

    async def serve() -> list[str]:
        return [part async for part in handle()]

    with capture_spans(capture_content=True) as captured:
        assert asyncio.run(serve()) == ["0", "1", "2"]
        execution, tool = captured.by_name("invoke_workflow handle"), captured.by_name("execute_tool search")
        calls = [span for span in captured.spans() if span.name == f"chat {MODEL}"]
    assert len(calls) == 3 and all(_is_child(c, tool) for c in calls)
    assert _is_child(tool, execution)
    assert json.loads((tool.attributes or {})["gen_ai.tool.call.result"]) == [0, 1, 2]
    assert execution.end_time is not None and tool.end_time is not None and execution.end_time >= tool.end_time


def test_a_returned_generator_ends_as_a_generator_function_would(spans: CapturedSpans) -> None:
    """A fourth review: an unrecorded execution's returned generator ran in the caller's
    context (its tools recorded as roots); a close the running generator refused
    ("already executing", from another thread) failed the call and lost what was read
    after it; a sys.exit() out of it left the span open, to end at collection as a
    success."""
    @sdk.tool
    def lookup(i: int) -> int:
        return i

    @sdk.execution(record=False)
    def unrecorded() -> Iterator[int]:
        return (lookup(i) for i in range(2))

    assert list(unrecorded()) == [0, 1]
    assert spans.spans() == []

    inside, go_on = threading.Event(), threading.Event()

    def slow() -> Iterator[int]:
        yield 0
        inside.set()
        go_on.wait(30)
        yield 1

    @sdk.tool
    def stream() -> Iterator[int]:
        return slow()

    read: list[int] = []
    with capture_spans(capture_content=True) as captured:
        returned = stream()
        reader = threading.Thread(target=lambda: read.extend(returned))
        reader.start()
        assert inside.wait(30)
        with pytest.raises(ValueError, match="already executing"):
            returned.close()
        go_on.set()
        reader.join(30)
        span = captured.by_name("execute_tool stream")
    assert read == [0, 1]
    assert span.status.status_code is StatusCode.UNSET
    assert json.loads((span.attributes or {})["gen_ai.tool.call.result"]) == [0, 1]

    def exits() -> Iterator[int]:
        yield 0
        sys.exit(3)

    @sdk.tool
    def leaving() -> Iterator[int]:
        return exits()

    kept = leaving()
    with pytest.raises(SystemExit):
        list(kept)
    assert [(span.status.status_code, (span.attributes or {}).get("error.type")) for span in spans.spans()] == [
        (StatusCode.ERROR, "SystemExit")]


def test_a_returned_generator_dropped_or_refusing_a_step_stays_in_its_call(spans: CapturedSpans) -> None:
    """A fifth review: a returned generator dropped unfinished was closed after its call
    had ended, in the caller's context (its cleanup's tool a child of the caller); a
    @types.coroutine's generator could no longer be awaited."""
    @sdk.tool
    def cleanup() -> None:
        pass

    def rows() -> Iterator[int]:
        try:
            yield 0
            yield 1
        finally:
            cleanup()

    @sdk.tool
    def returns_rows() -> Iterator[int]:
        return rows()

    for _ in returns_rows():
        break
    gc.collect()
    outer, inner = spans.by_name("execute_tool returns_rows"), spans.by_name("execute_tool cleanup")
    assert _is_child(inner, outer)
    spans.clear()

    # Closed, thrown into or dropped before its first step, a returned generator ends its
    # call then (a seventh review: closed, it ended only when collected; thrown into, as a
    # success). A value sent before the first step, which Python refuses and a generator
    # survives, now fails the call and finishes the one handed back (it was stepped once).
    closed = returns_rows()
    closed.close()
    assert [span.name for span in spans.spans()] == ["execute_tool returns_rows"]
    spans.clear()
    with pytest.raises(ValueError):
        returns_rows().throw(ValueError("no rows wanted"))
    assert [span.status.status_code for span in spans.spans()] == [StatusCode.ERROR]
    spans.clear()
    returns_rows()
    assert [span.status.status_code for span in spans.spans()] == [StatusCode.UNSET]

    @types.coroutine
    def later() -> Iterator[None]:
        yield None

    @sdk.tool
    def scheduled() -> Any:
        return later()

    async def run() -> None:
        await asyncio.sleep(0)
        await scheduled()

    asyncio.run(run())


def test_an_async_generator_returned_and_dropped_unfinished_closes_inside_its_call(spans: CapturedSpans) -> None:
    """Behind the proxy, a returned async generator dropped unfinished was closed by the
    event loop in the loop's context, after its call had ended: a block it held across
    a yield failed to detach its context, and its finally's tool was the caller's
    child. Stepped as a decorated generator function's, the loop closes the stepping
    generator, which closes it inside the call."""
    @sdk.tool
    def cleanup() -> None:
        pass

    async def rows() -> AsyncIterator[int]:
        try:
            with sdk.tool_call("inner"):
                yield 1
                yield 2
        finally:
            cleanup()

    @sdk.tool
    async def returns_rows() -> AsyncIterator[int]:
        return rows()

    @sdk.agent
    async def caller() -> None:
        returned = await returns_rows()
        async for _ in returned:
            break
        del returned
        for _ in range(5):
            await asyncio.sleep(0)

    asyncio.run(caller())
    outer = spans.by_name("execute_tool returns_rows")
    for name in ("execute_tool inner", "execute_tool cleanup"):
        span = spans.by_name(name)
        assert span.parent is not None and span.parent.span_id != spans.by_name("invoke_agent caller").context.span_id
        assert span.end_time is not None and outer.end_time is not None and span.end_time <= outer.end_time


def test_an_async_generator_left_open_when_its_loop_ends_is_closed_inside_its_call(spans: CapturedSpans) -> None:
    """A seventh review: asyncio.run's shutdown_asyncgens closed every async generator the
    loop knew, the returned one too, in no particular order: its finally ran outside the
    call most of the time. The loop knows the stepping generator only now."""
    seen: list[str | None] = []

    async def rows() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            seen.append(getattr(trace.get_current_span(), "name", None))

    @sdk.tool
    async def returns_rows() -> AsyncIterator[int]:
        return rows()

    kept: list[Any] = []

    async def main() -> None:
        stream = await returns_rows()
        await stream.__anext__()
        kept.append(stream)  # still open when asyncio.run ends

    for _ in range(3):
        asyncio.run(main())
    assert seen == ["execute_tool returns_rows"] * 3
    assert len(spans.spans()) == 3


def test_a_decorated_async_generator_collected_in_a_cycle_finishes_its_cleanup(spans: CapturedSpans) -> None:
    """An eighth review: stepped with the loop's hooks both off, a generator collected in
    a cycle with its holder was closed without the loop's finalizer, and its finally
    stopped at its first await (a connection never closed)."""
    log: list[str] = []

    class Reader:
        stream: Any

        @sdk.tool
        async def rows(self) -> AsyncIterator[int]:
            holder = self  # the generator's frame refers to its holder: a cycle
            try:
                yield 1
                yield 2
            finally:
                await asyncio.sleep(0)
                log.append(f"closed by {type(holder).__name__}")

    errors: list[str] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(str(context)))
        reader = Reader()
        reader.stream = reader.rows()
        await reader.stream.__anext__()
        del reader
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0.01)
        gc.collect()  # a task that failed unseen is reported when it is collected

    asyncio.run(main())
    assert log == ["closed by Reader"]
    assert len(spans.spans()) == 1
    assert errors == []  # a tenth review: the loop's own close of it found it running, each time


class _Chunks:
    """A client's stream as a class (not a generator, which is stepped another way):
    ``__next__`` runs the stream's code, ``fail_at`` raises part-way, ``send``/``throw``
    make it generator-like (Cython's generators)."""

    def __init__(self, items: list[Any], *, fail_at: int | None = None, step: Any = None) -> None:
        self.items, self.fail_at, self.step, self.read = list(items), fail_at, step, 0

    def __iter__(self) -> _Chunks:
        return self

    def __next__(self) -> Any:
        if self.step is not None:
            self.step()
        if self.read == self.fail_at:
            raise ConnectionError("stream reset")
        if not self.items:
            raise StopIteration
        self.read += 1
        return self.items.pop(0)  # what was read is the reader's only

    def send(self, value: Any) -> Any:
        return self.__next__()

    def throw(self, exc: BaseException) -> Any:
        raise exc

    def close(self) -> None:
        self.items.clear()


class _AsyncChunks:
    def __init__(self, items: list[Any], step: Any = None) -> None:
        self.items, self.step, self.closed = list(items), step, False

    def __aiter__(self) -> _AsyncChunks:
        return self

    async def __anext__(self) -> Any:
        if self.step is not None:
            await self.step()
        if not self.items or self.closed:
            raise StopAsyncIteration
        return self.items.pop(0)

    async def aclose(self) -> None:
        self.closed = True


def test_a_client_stream_behind_the_proxy_is_read_in_its_call_and_ended_once() -> None:
    """A ninth review: the tests of the proxy's failure, context, release, send/throw and
    aclose used generators, which are no longer proxied; a client stream (a class, as
    OpenAI's) had none of them tested."""
    @sdk.tool
    def lookup() -> str:
        return "found"

    @sdk.tool
    async def alookup() -> str:
        return "found"

    class Chunk:
        pass

    kept: list[weakref.ref[Chunk]] = []

    def chunk() -> Chunk:
        item = Chunk()
        kept.append(weakref.ref(item))
        return item

    @sdk.llm(model=MODEL)
    def ask(stream: Any) -> Any:
        return stream

    @sdk.llm(model=MODEL)
    async def aask(stream: Any) -> Any:
        return stream

    with capture_spans(capture_content=True) as captured:
        calls = 0

        def step() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                lookup()

        finished = ask(_Chunks([chunk(), {"model": MODEL, "usage": USAGE}], step=step))  # (no other reference)
        llm_span = _read_in_its_call(finished, 2, kept, captured)
        assert (llm_span.attributes or {})["gen_ai.usage.input_tokens"] == 1000
        captured.clear()

        with pytest.raises(ConnectionError):
            list(ask(_Chunks([{"n": 1}], fail_at=1)))
        assert [span.status.status_code for span in captured.spans()] == [StatusCode.ERROR]
        captured.clear()

        _sent_to_its_end(ask(_Chunks([{"n": 1}, {"model": MODEL, "usage": USAGE}])))
        assert [(s.attributes or {})["gen_ai.usage.input_tokens"] for s in captured.spans()] == [1000]
        captured.clear()

        thrown = ask(_Chunks([{"n": 1}]))
        with pytest.raises(ValueError):
            thrown.throw(ValueError("no more"))
        assert [span.status.status_code for span in captured.spans()] == [StatusCode.ERROR]
        captured.clear()

        async def run() -> None:
            async def astep() -> None:
                if not captured.spans():
                    await alookup()

            stream = await aask(_AsyncChunks([{"n": 1}, {"n": 2}], step=astep))
            await stream.__anext__()
            await stream.aclose()
            assert [span.name for span in captured.spans()] == ["execute_tool alookup", f"chat {MODEL}"]

        asyncio.run(run())
        llm_span, tool_span = captured.by_name(f"chat {MODEL}"), captured.by_name("execute_tool alookup")
        assert _is_child(tool_span, llm_span)

    class Manager:  # openai's ChatCompletionStreamManager: a context manager, not an iterator
        def __enter__(self) -> Manager:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def close(self) -> None:
            pass

    manager = Manager()
    assert ask(manager) is manager


def test_a_loop_closed_with_a_generators_close_queued_warns_of_nothing(spans: CapturedSpans) -> None:
    """An eleventh review: the finalizer of 'already running' made its close coroutine
    at once, so a loop closed with it still queued (collected after the loop stopped,
    before it closed) warned that a coroutine was never awaited. Nothing more than an
    undecorated generator warns of (on Python 3.13 asyncio's own finalizer does, for
    the generator the caller holds)."""
    class Holder:
        stream: Any

    async def plain(holder: Holder) -> AsyncIterator[int]:
        kept = holder  # a cycle: the holder keeps the generator
        try:
            yield 1
            yield 2
        finally:
            del kept

    def never_awaited(function: Callable[[Holder], AsyncIterator[int]]) -> list[str]:
        async def main() -> None:
            holder = Holder()
            holder.stream = function(holder)
            await holder.stream.__anext__()

        loop = asyncio.new_event_loop()
        enabled = gc.isenabled()
        gc.disable()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loop.run_until_complete(main())
                gc.collect()  # stopped, not closed: the finalizers queue their closes
                loop.close()
                gc.collect()
        finally:
            if enabled:
                gc.enable()
        return [str(w.message) for w in caught if "never awaited" in str(w.message)]

    assert never_awaited(sdk.tool(name="plain")(plain)) == never_awaited(plain)
