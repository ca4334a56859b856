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
(their ``AsyncStream``, an async generator), or both (LiteLLM's stream). A response
model iterable over its fields (pydantic's ``__iter__``) is not one, nor is a
``unittest.mock`` object, which answers to every magic method.

The proxy has the stream's own ways of being read and ended and no others: its class is
made for the stream's type from the pieces below (``_proxy_class``), so a ``map`` object
gains no ``close`` (``wsgiref`` calls one when it is there) and an async stream does not
become iterable (httpx tells a request body's kind that way).
"""

from __future__ import annotations

import atexit
import functools
import inspect
import sys
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import wrapt

if TYPE_CHECKING:
    from spanhouse.sdk._decorators import ActiveCall


def stream_proxy(value: Any, call: ActiveCall) -> Any | None:
    """``value`` behind a proxy that ends ``call`` when it has been read, or None when
    ``value`` is not a stream."""
    mock = sys.modules.get("unittest.mock")
    if mock is not None and isinstance(value, mock.NonCallableMock):
        return None
    proxy_class = _proxy_class(type(value))
    return None if proxy_class is None else proxy_class(value, call)


class _Ending:
    """Ends one returned stream's call exactly once, whoever comes first: the reader
    (its end, a failure, a close), the garbage collector, or the interpreter's exit.

    At exit, ``weakref.finalize`` would run only after the tracer provider's shutdown
    when anything (a ``TemporaryDirectory``) made the first finalizer before the
    provider was configured, and the span was never exported: the open streams are
    ended by spanhouse's own exit hook instead, registered with the first of them (after
    the provider that records them), so it runs before the provider's shutdown."""

    __slots__ = ("__weakref__", "_call", "_finalizer")

    def __init__(self, proxy: object, call: ActiveCall) -> None:
        self._call = call
        self._finalizer = weakref.finalize(proxy, self._succeed)  # refers to this, not to the proxy
        self._finalizer.atexit = False
        _open.add(self)
        _exit_hook()

    def _succeed(self) -> None:
        _open.discard(self)
        self._call.succeed(self._call.yielded())

    def succeed(self) -> None:
        """The stream was read to its end, closed or left: a success, with the items read."""
        self._finalizer()

    def stop(self, exc: BaseException, end: type[BaseException]) -> None:
        """The stream raised ``exc``: its ``end`` (StopIteration...) is a success, any
        other a failure of the call (``ActiveCall.fail`` tells a cancellation apart)."""
        if isinstance(exc, end):
            self.succeed()
        elif self._finalizer.detach() is not None:
            _open.discard(self)
            self._call.fail(exc)


_open: set[_Ending] = set()
"""The returned streams whose calls have not ended, ended at exit."""


@functools.cache
def _exit_hook() -> None:
    atexit.register(_end_open_streams)


def _end_open_streams() -> None:
    for ending in list(_open):
        ending.succeed()


class _Watched(wrapt.ObjectProxy):  # type: ignore[misc]
    """What every proxy holds: the call, ended once (``_Ending``), and each item read
    looked at (``ActiveCall.collect``)."""

    def __init__(self, wrapped: Any, call: ActiveCall) -> None:
        super().__init__(wrapped)
        self._self_call = call
        self._self_ending = _Ending(self, call)

    def _self_step(self, end: type[BaseException], step: Callable[..., Any], *args: Any) -> Any:
        try:
            item = step(*args)
        except BaseException as exc:
            self._self_ending.stop(exc, end)
            raise
        self._self_call.collect(item)
        return item

    async def _self_astep(self, step: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        try:
            item = await step(*args)
        except BaseException as exc:
            self._self_ending.stop(exc, StopAsyncIteration)
            raise
        self._self_call.collect(item)
        return item

    def _self_closed(self, close: Callable[[], Any]) -> Any:
        try:
            return close()
        finally:
            self._self_ending.succeed()

    async def _self_aclosed(self, close: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await close()
        finally:
            self._self_ending.succeed()


class _Next(_Watched):
    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return self._self_step(StopIteration, self.__wrapped__.__next__)


class _Send(_Watched):  # a generator's
    def send(self, value: Any) -> Any:
        return self._self_step(StopIteration, self.__wrapped__.send, value)

    def throw(self, *args: Any) -> Any:
        return self._self_step(StopIteration, self.__wrapped__.throw, *args)


class _Close(_Watched):
    def close(self) -> Any:
        return self._self_closed(self.__wrapped__.close)


class _With(_Watched):
    def __enter__(self) -> Any:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Any:
        return self._self_closed(lambda: self.__wrapped__.__exit__(kind, exc, tb))


class _ANext(_Watched):
    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> Any:
        return await self._self_astep(self.__wrapped__.__anext__)


class _ASend(_Watched):  # an async generator's
    async def asend(self, value: Any) -> Any:
        return await self._self_astep(self.__wrapped__.asend, value)

    async def athrow(self, *args: Any) -> Any:
        return await self._self_astep(self.__wrapped__.athrow, *args)


class _AClose(_Watched):
    async def aclose(self) -> Any:
        return await self._self_aclosed(self.__wrapped__.aclose)


class _AsyncClose(_Watched):  # OpenAI's and Anthropic's AsyncStream: an async close()
    async def close(self) -> Any:
        return await self._self_aclosed(self.__wrapped__.close)


class _AWith(_Watched):
    async def __aenter__(self) -> Any:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> Any:
        return await self._self_aclosed(lambda: self.__wrapped__.__aexit__(kind, exc, tb))


@functools.lru_cache(maxsize=256)
def _proxy_class(kind: type) -> type[_Watched] | None:
    """The proxy class for streams of type ``kind``: the pieces for what ``kind`` has,
    or None when it is not a stream."""
    def has(name: str) -> bool:
        return callable(getattr(kind, name, None))

    close = getattr(kind, "close", None)
    pieces = [piece for piece, present in (
        (_Next, has("__next__")), (_ANext, has("__anext__")),
        (_Send, has("send") and has("throw")), (_ASend, has("asend") and has("athrow")),
        (_Close, callable(close) and not inspect.iscoroutinefunction(close)),
        (_AsyncClose, inspect.iscoroutinefunction(close)), (_AClose, has("aclose")),
        (_With, has("__enter__") and has("__exit__")), (_AWith, has("__aenter__") and has("__aexit__")),
    ) if present]
    if not pieces or pieces[0] not in (_Next, _ANext):
        return None
    # What the stream cannot do the proxy cannot either: wrapt's ObjectProxy has an
    # __iter__ (an async stream would look iterable) and a context manager's methods.
    namespace: dict[str, Any] = {}
    if not has("__iter__"):
        namespace["__iter__"] = None
    if _With not in pieces:
        namespace["__enter__"] = namespace["__exit__"] = None
    return type(f"Returned{kind.__name__}", tuple(pieces), namespace)
