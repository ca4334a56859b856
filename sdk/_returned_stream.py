"""A model call that returns its stream unread: ``return client.chat.completions.create(stream=True)``.

The decorated function returns before a token is streamed, so its span could hold no
usage and no cost, and its duration was the time to the response's headers. As
Langfuse's ``@observe`` does for a returned generator, the stream is handed back behind
a transparent proxy (``wrapt.ObjectProxy``: ``isinstance(stream, openai.Stream)``,
``stream.response`` and the rest still answer as the stream's own) that keeps the span
open while the caller reads it and ends it, with the usage its chunks reported
(``StreamUsage``), when the stream is read to its end, fails, is closed (``close()``,
``aclose()``, the end of a ``with`` block) or is dropped unfinished (garbage collected,
or at interpreter exit). Closing early or dropping it is a success with what was read,
as for a decorated generator closed by its consumer.

A stream is what iteration steps through itself: an object whose type has ``__next__``
(OpenAI's and Anthropic's ``Stream``, a generator, any iterator) or ``__anext__``
(their ``AsyncStream``, an async generator). A response model iterable over its fields
(pydantic's ``__iter__``) is not one, nor is a ``unittest.mock`` object, which answers
to every magic method.
"""

from __future__ import annotations

import sys
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any

import wrapt

if TYPE_CHECKING:
    from spanhouse.sdk._decorators import ActiveCall


def stream_proxy(value: Any, call: ActiveCall) -> Any | None:
    """``value`` behind a proxy that ends ``call`` when it has been read, or None when
    ``value`` is not a stream."""
    kind = type(value)
    mock = sys.modules.get("unittest.mock")
    if mock is not None and isinstance(value, mock.NonCallableMock):
        return None
    if hasattr(kind, "__anext__"):
        return _AsyncStream(value, call)
    if hasattr(kind, "__next__"):
        return _Stream(value, call)
    return None


def _succeed(call: ActiveCall) -> None:
    """The end of a stream read to its end, closed or dropped: a success, with the items read."""
    call.succeed(call.yielded())


class _Watched(wrapt.ObjectProxy):  # type: ignore[misc]
    """What both proxies share: the call, and ending it exactly once whoever ends it
    first (the reader, a failure, the garbage collector)."""

    def __init__(self, wrapped: Any, call: ActiveCall) -> None:
        super().__init__(wrapped)
        self._self_call = call
        # finalize runs its function at most once: at the first of __call__/detach, the
        # proxy's collection, or interpreter exit (before the tracer provider's shutdown,
        # registered earlier, exports what is left).
        self._self_end = weakref.finalize(self, _succeed, call)

    def _self_read(self, item: Any) -> Any:
        self._self_call.collect(item)
        return item

    def _self_stop(self, exc: BaseException, end: type[BaseException]) -> None:
        """The stream raised ``exc``: its ``end`` (StopIteration...) is a success, any
        other a failure of the call (``ActiveCall.fail`` tells a cancellation apart)."""
        if isinstance(exc, end):
            self._self_end()
        elif self._self_end.detach() is not None:
            self._self_call.fail(exc)


class _Stream(_Watched):
    """A synchronous stream (``__next__``)."""

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> Any:
        try:
            item = self.__wrapped__.__next__()
        except BaseException as exc:
            self._self_stop(exc, StopIteration)
            raise
        return self._self_read(item)

    def __enter__(self) -> _Stream:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Any:
        try:
            return self.__wrapped__.__exit__(kind, exc, tb)
        finally:
            self._self_end()

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_end()


class _AsyncStream(_Watched):
    """An asynchronous stream (``__anext__``)."""

    def __aiter__(self) -> _AsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self.__wrapped__.__anext__()
        except BaseException as exc:
            self._self_stop(exc, StopAsyncIteration)
            raise
        return self._self_read(item)

    async def __aenter__(self) -> _AsyncStream:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> Any:
        try:
            return await self.__wrapped__.__aexit__(kind, exc, tb)
        finally:
            self._self_end()

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_end()

    async def aclose(self) -> None:
        try:
            await self.__wrapped__.aclose()
        finally:
            self._self_end()
