"""A model call that returns its client's stream unread: ``return client.chat.completions.create(stream=True)``.

The function returns before a token is streamed, so its span could hold no usage and no
cost, and its duration was the time to the response's headers. The stream is handed back
behind a transparent proxy (``wrapt.ObjectProxy``: ``isinstance(stream, openai.Stream)``,
``stream.response`` and the rest still answer as the stream's own) that keeps the span
open while the caller reads it and ends it, with the usage its chunks reported
(``StreamUsage``), when the stream is read to its end, fails, is closed (``close()``,
``aclose()``, the end of a ``with`` block) or is dropped unfinished (garbage collected,
or at interpreter exit). Closing early or dropping it is a success with what was read,
as for a decorated generator closed by its consumer. (A returned generator, any
decorator's, is stepped by a decorated generator function's loop instead:
``ActiveCall.returned``.)

A stream is what iteration steps through itself: an object whose type has ``__next__``
(OpenAI's and Anthropic's ``Stream``, any iterator) or ``__anext__`` (their
``AsyncStream``), or both (LiteLLM's stream). A response model iterable over its fields
(pydantic's ``__iter__``) is not one, nor is a ``unittest.mock`` object, which answers
to every magic method.

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
import threading
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import wrapt

from spanhouse.sdk._decorators import InContext, _Steps

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


class _Reading:
    """One returned stream's call while it is read: the context the stream's own code
    runs in, the call's span current as in a decorated generator (``ActiveCall.steps``:
    what the stream's code records belongs to the call, not to the caller), and the
    call's end, exactly once, whoever comes first: the reader (its end, a
    failure, a close), the garbage collector, or the interpreter's exit. Both are let go
    of then: a caller keeping a finished stream kept what the call had captured.

    At exit, ``weakref.finalize`` would run only after the tracer provider's shutdown
    when anything (a ``TemporaryDirectory``) made the first finalizer before the
    provider was configured, and the span was never exported: a recorded stream still
    open is ended by spanhouse's own exit hook instead, registered again as each one
    opens (after any provider made before it, so it runs before their shutdown). An
    unrecorded call has nothing to export and is not held there."""

    __slots__ = ("__weakref__", "_busy", "_call", "_finalizer", "_running", "_steps")

    def __init__(self, proxy: object, call: ActiveCall) -> None:
        self._call: ActiveCall | None = call
        self._steps: _Steps | None = call.steps()
        self._running = threading.Lock()  # held while a step runs in the steps' context
        self._busy = False  # an async step is being awaited
        self._finalizer = weakref.finalize(proxy, self._succeed)  # refers to this, not to the proxy
        self._finalizer.atexit = False
        if call.span.is_recording():
            atexit.unregister(_end_open_streams)  # to run before the shutdown of every provider made so far
            atexit.register(_end_open_streams)
            _open.add(self)

    def run(self, end: type[BaseException] | tuple[()], step: Callable[..., Any], *args: Any) -> Any:
        """One step of the stream's own code, in the call's context while it is open;
        ``end`` ends the call as a success, another exception as ``stop`` says.

        A context runs one step at a time: a step while another runs (a close from
        another thread, the usual way to cancel a stream, or a second reader) runs in
        a copy of it, as the raw stream would let it (entered twice, the context
        refused it, and the close did not happen), and only its ``end`` is the call's:
        a stream refusing it goes on being read."""
        steps = self._steps
        if steps is None:
            return step(*args)
        own = self._running.acquire(blocking=False)
        try:
            return steps.run(step, *args) if own else steps.context.copy().run(step, *args)
        except BaseException as exc:
            self._stopped(exc, end, own=own)
            raise
        finally:
            if own:
                self._running.release()

    async def awaited(self, end: type[BaseException] | tuple[()], awaitable: Awaitable[Any]) -> Any:
        """``run`` for an async step: ``awaitable`` awaited in the call's context; one
        awaited while another is (an ``aclose()`` from another task) in the caller's."""
        steps = self._steps
        own = steps is not None and not self._busy
        if own:
            self._busy = True
        try:
            return await (InContext(steps, awaitable) if own and steps is not None else awaitable)
        except BaseException as exc:
            if steps is not None:
                self._stopped(exc, end, own=own)
            raise
        finally:
            if own:
                self._busy = False

    def collect(self, item: Any) -> None:
        """An item read: looked at for usage and kept for the output (``ActiveCall.collect``)."""
        call = self._call
        if call is not None:
            call.collect(item)

    def succeed(self) -> None:
        """The stream was read to its end, closed or left: a success, with the items read."""
        self._finalizer()

    def _stopped(self, exc: BaseException, end: type[BaseException] | tuple[()], *, own: bool) -> None:
        """A step raised ``exc``: ``end`` (StopIteration...) is a success, an
        ``Exception`` a failure of the call. Anything else (a read cut by a per-chunk
        timeout, Ctrl-C) leaves it open: the stream goes on being read, and a close, the
        garbage collector or the exit ends it. Out of a step that ran beside another,
        only its end counts."""
        if isinstance(exc, end):
            self.succeed()
        elif own and isinstance(exc, Exception) and self._finalizer.detach() is not None:
            if (call := self._release()) is not None:
                call.fail(exc)

    def _succeed(self) -> None:
        if (call := self._release()) is not None:
            call.succeed(call.yielded())

    def _release(self) -> ActiveCall | None:
        _open.discard(self)
        call, self._call, self._steps = self._call, None, None
        return call


_open: set[_Reading] = set()
"""The returned streams whose calls have not ended, ended at exit."""


def _end_open_streams() -> None:
    for reading in list(_open):
        reading.succeed()


class _Watched(wrapt.ObjectProxy):  # type: ignore[misc]
    """What every proxy holds: the call being read (``_Reading``)."""

    def __init__(self, wrapped: Any, call: ActiveCall) -> None:
        super().__init__(wrapped)
        self._self_reading = _Reading(self, call)

    def _self_step(self, end: type[BaseException], step: Callable[..., Any], *args: Any) -> Any:
        item = self._self_reading.run(end, step, *args)
        self._self_reading.collect(item)
        return item

    async def _self_astep(self, step: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        item = await self._self_reading.awaited(StopAsyncIteration, step(*args))
        self._self_reading.collect(item)
        return item

    def _self_closed(self, close: Callable[[], Any]) -> Any:
        result = self._self_reading.run((), close)
        self._self_reading.succeed()
        return result

    async def _self_aclosed(self, close: Callable[[], Awaitable[Any]]) -> Any:
        result = await self._self_reading.awaited((), close())
        self._self_reading.succeed()
        return result


class _Next(_Watched):
    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return self._self_step(StopIteration, self.__wrapped__.__next__)


class _Send(_Watched):  # a generator-like object's (Cython's)
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


class _ASend(_Watched):  # an async-generator-like object's
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
    proxy_class = type(f"Returned{kind.__name__}", tuple(pieces), {})
    # What the stream cannot do the proxy cannot either: wrapt's ObjectProxy has every
    # operator's and protocol's method (an async stream looked iterable, a generator
    # Sized, a sync stream an async context manager).
    for name in _PROXY_SPECIALS:
        # (None: blanked, where the stream is another call's proxy)
        if getattr(kind, name, None) is None and getattr(proxy_class, name, None) is getattr(wrapt.ObjectProxy, name, None):
            setattr(proxy_class, name, None)
    return proxy_class


_PROXY_SPECIALS: Final = frozenset(
    name for proxy_class in wrapt.ObjectProxy.__mro__ for name in vars(proxy_class)
    if name.startswith("__") and name.endswith("__") and not hasattr(object, name)
) - {"__getattr__", "__wrapped__", "__bool__", "__copy__", "__deepcopy__", "__annotations__", "__class_getitem__",
     "__mro_entries__", "__object_proxy__", "__self_dict__", "__self_setattr__"}
"""ObjectProxy's special methods an object may lack (its own workings and ``__bool__``,
true for any object, apart)."""
