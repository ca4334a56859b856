"""The decorators and their context-manager forms, built by one factory.

``_instrument(func, spec)`` wraps any callable according to what it is — a function, a
coroutine function, a generator function or an async generator function — and keeps
what callers can observe: ``functools.wraps`` metadata, coroutine-ness and
generator-ness. ``staticmethod``/``classmethod`` objects are unwrapped, instrumented and
rewrapped. All span work is in ``_Spec`` (what is known at decoration time) and
``ActiveCall`` (one call in flight); the four wrappers only differ in how they call.

Cost per call is kept close to a bare ``tracer.start_as_current_span``: the span name,
the constant attributes, the parameter names used for argument capture and the kind of
function are all worked out once, at decoration time; a call starts its span with
``start_span`` and attaches the context directly (no generator-based context managers);
arguments are serialised only when content capture is on and the span will record.

Disabled SDK (``OTEL_SDK_DISABLED=true`` or ``configure(disabled=True)``): a function
decorated while the SDK is disabled is returned as it is, so it costs nothing per call; one
decorated before the SDK was disabled keeps a wrapper that calls straight through (one
extra Python call).

Generators: the span opens at the first ``next()`` and closes when the generator is
exhausted, closed or raises, so it covers the whole iteration; the span is the current
span only while the generator's own code runs, never in the consumer between items. As
in a plain generator, ContextVars the consumer sets between items are seen inside; those
the generator sets stay inside (``_Steps``). A generator a decorated function returns
is stepped by the same loop (``ActiveCall.returned``).

Executions are roots. ``@execution`` always starts a new trace (an execution *is* a
trace), linked to whatever span was current, so an execution started inside, say, an
HTTP request handler is still listed as an execution of its own. ``record=False`` makes it
start in an unsampled context instead: with the SDK's default parent-based sampler (and
every ``parentbased_*`` choice of ``OTEL_TRACES_SAMPLER``) no span of that trace is even
created, so nothing of it reaches any processor or exporter. A sampler that ignores the
parent's decision would record its children anyway.
"""

from __future__ import annotations

import collections
import contextvars
import functools
import gc
import inspect
import itertools
import sys
import traceback
import types
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final, ParamSpec, TypeVar, overload

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from spanhouse.sdk import _runtime
from spanhouse.sdk import _semconv as sc
from spanhouse.sdk._content import (RETURN_KEY, error_message, error_secrets, is_secret_key, logger,
                                    scrub_error_text, secret_arguments)
from spanhouse.sdk._feedback import NOT_RECORDED
from spanhouse.sdk._usage import StreamUsage, record_response_usage
from spanhouse.text import utf8_safe

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

_ROOT: Final = context_api.Context()  # a context with no span: start_span(context=_ROOT) makes a root
_ids = RandomIdGenerator()
_INPUT_KEY: Final = "input"
_NOTHING: Any = object()  # "no input given", as distinct from an input of None


class _Spec:
    """Everything about a decorated function's spans that does not change between calls."""

    __slots__ = (
        "attributes",
        "call_id_arg",
        "call_id_index",
        "capture",
        "input_key",
        "kind",
        "name",
        "output_key",
        "params",
        "reads_usage",
        "record",
        "root",
        "secret_positions",
        "skip_first",
        "varargs",
    )

    def __init__(self, name: str, kind: SpanKind, attributes: dict[str, Any], *, input_key: str, output_key: str,
                 capture: bool | None, root: bool = False, record: bool = True, reads_usage: bool = False,
                 call_id_arg: str | None = None) -> None:
        self.name = name
        self.kind = kind
        self.attributes = attributes
        self.root = root
        self.record = record
        self.capture = capture
        self.input_key = input_key
        self.output_key = output_key
        self.reads_usage = reads_usage
        self.call_id_arg = call_id_arg
        self.call_id_index: int | None = None
        self.params: tuple[str, ...] = ()
        self.varargs: str | None = None
        self.secret_positions: tuple[int, ...] = ()  # of the positional parameters whose names look secret
        self.skip_first = False

    def bind_signature(self, func: Callable[..., Any]) -> None:
        """Learn the positional parameter names once, for argument capture and ``call_id_arg``."""
        try:
            parameters = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError):  # builtins and some C callables have no signature
            parameters = []
        positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.skip_first = bool(positional) and positional[0] in ("self", "cls")
        self.params = tuple(positional[1:] if self.skip_first else positional)
        self.varargs = next((p.name for p in parameters if p.kind is p.VAR_POSITIONAL), None)
        self.secret_positions = tuple(i for i, name in enumerate(self.params) if is_secret_key(name))
        if self.call_id_arg is not None:
            if self.call_id_arg not in {p.name for p in parameters}:
                raise ValueError(f"call_id_arg {self.call_id_arg!r} is not a parameter of {func.__qualname__}")
            if self.call_id_arg in self.params:
                self.call_id_index = self.params.index(self.call_id_arg)

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any], *, attach: bool) -> ActiveCall:
        """Start the span of one call of the decorated function."""
        rt = _runtime.current
        if self.skip_first:
            args = args[1:]
        attributes = self.attributes
        if self.call_id_arg is not None:
            call_id = kwargs.get(self.call_id_arg)
            if call_id is None and self.call_id_index is not None and self.call_id_index < len(args):
                call_id = args[self.call_id_index]
            if call_id is not None:
                attributes = {**attributes, sc.TOOL_CALL_ID: str(call_id)}
        capture = rt.capture_content if self.capture is None else self.capture
        captured = rt.content.arguments(self.params, self.varargs, args, kwargs) \
            if capture and self._will_record(rt) else None
        secrets = secret_arguments(self.secret_positions, args, kwargs) if self.secret_positions or kwargs else ()
        return ActiveCall(self, rt, attributes, captured, attach=attach, capture=capture, secrets=secrets)

    def block(self, value: Any, *, as_arguments: bool) -> ActiveCall:
        """Start the span of a ``with`` block; ``value`` is its input (``_NOTHING``: none)."""
        rt = _runtime.current
        if rt.disabled:
            return ActiveCall.unrecorded(self)
        capture = rt.capture_content if self.capture is None else self.capture
        captured = None
        if capture and value is not _NOTHING and self._will_record(rt):
            captured = rt.content.mapping(value) if as_arguments else rt.content.value(value, _INPUT_KEY)
        return ActiveCall(self, rt, self.attributes, captured, attach=True, capture=capture)

    def _will_record(self, rt: _runtime.Runtime) -> bool:
        """Whether the span about to start can record: not inside an unrecorded execution,
        nor without a parent before any TracerProvider is set (``Runtime.records``).

        The input is serialised before the span starts (so that an execution's running
        marker, built as it starts, carries it), hence this look-ahead; it is skipped where
        the span would drop it anyway.
        """
        if self.root:
            return self.record and rt.records()
        parent = trace.get_current_span().get_span_context()
        return parent.trace_flags.sampled if parent.is_valid else rt.records()


class ActiveCall:
    """One span in flight, from a decorated call or a ``with tool_call(...)`` block.

    Attributes:
        span: the OpenTelemetry span, for anything the SDK does not wrap.
    """

    __slots__ = ("_content", "_context", "_item_count", "_items", "_kept", "_secrets", "_spec", "_stream", "_token",
                 "span")

    def __init__(self, spec: _Spec, rt: _runtime.Runtime, attributes: dict[str, Any], captured: str | None, *,
                 attach: bool, capture: bool, secrets: tuple[str, ...] = ()) -> None:
        self._spec = spec
        self._secrets = secrets  # redacted from an error's text (see scrub_error_text)
        if captured is not None:
            attributes = {**attributes, spec.input_key: captured}
        if not spec.root:
            self.span: trace.Span = rt.tracer.start_span(spec.name, None, spec.kind, attributes)
        elif spec.record:
            current = trace.get_current_span().get_span_context()
            links = (Link(current),) if current.is_valid else ()
            self.span = rt.tracer.start_span(spec.name, _ROOT, spec.kind, attributes, links)
        else:
            self.span = NonRecordingSpan(SpanContext(_ids.generate_trace_id(), _ids.generate_span_id(),
                                                     is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT)))
        self._content = rt.content if capture and self.span.is_recording() else None
        self._context = trace.set_span_in_context(self.span)
        if spec.root and not spec.record:  # current_execution_id() names no execution of this trace
            self._context = context_api.set_value(NOT_RECORDED, self.span.get_span_context().trace_id, self._context)
        self._token = context_api.attach(self._context) if attach else None
        self._items: list[Any] | None = None
        self._item_count = 0
        self._kept = 0
        self._stream = StreamUsage() if spec.reads_usage and self.span.is_recording() else None

    @classmethod
    def unrecorded(cls, spec: _Spec) -> ActiveCall:
        """A call that records nothing (the SDK is disabled), for code that needs a call object."""
        call = cls.__new__(cls)
        call._spec = spec
        call._secrets = ()
        call.span = trace.INVALID_SPAN
        call._content = None
        call._context = context_api.get_current()
        call._token = None
        call._items = None
        call._item_count = 0
        call._kept = 0
        call._stream = None
        return call

    def set_result(self, value: Any) -> None:
        """Record ``value`` as the result/output (when content capture is on); for a model
        call, also the usage it reports (a generator's: what its items reported)."""
        if self._content is not None:
            self.span.set_attribute(self._spec.output_key, self._content.value(value, RETURN_KEY))
        if not self._spec.reads_usage or self._recorded_usage():
            return
        if self._stream is not None and self._stream.record(self.span):
            return
        if value is not None:
            record_response_usage(self.span, value)

    def _recorded_usage(self) -> bool:
        """Whether ``record_usage()`` was called inside (as the ``llm`` decorator says to do
        when the function returns no response): then the response's or stream's own
        report is not added to it, which counted the call twice."""
        attributes = getattr(self.span, "attributes", None) or {}
        return any(key in attributes for key in (sc.USAGE_INPUT_TOKENS, sc.USAGE_OUTPUT_TOKENS, sc.COST_USD))

    def succeed(self, result: Any) -> None:
        """End the span after a normal return of ``result``. Recording the result never
        changes what the caller gets, and the span ends (and stops being current) whatever
        happens while recording."""
        try:
            self.set_result(result)
        except Exception:  # noqa: BLE001 - e.g. usage of an odd model response: the call succeeded
            logger.debug("spanhouse could not record the result of %s", self._spec.name, exc_info=True)
        finally:
            self.end()

    def returned(self, result: Any) -> Any:
        """End the span after a normal return of ``result``, and give what the caller gets:
        ``result``, or a stream returned unread, to end the span once it has been read.

        A generator (any decorator's: a tool returning ``(r for r in rows)``, an
        execution returning the generator a web framework streams, as Langfuse's
        ``@observe`` has it) is handed back stepped by the loop of a decorated generator
        function (``_generator_driver``), recording or not: unrecorded, its code still
        runs in the call's context (an execution's ``record=False``, its id). A model
        call's other iterators (``client.chat.completions.create(stream=True)``: its
        usage is in the chunks) come back behind a transparent proxy (``stream_proxy``).
        """
        if isinstance(result, types.GeneratorType) and not result.gi_code.co_flags & inspect.CO_ITERABLE_COROUTINE:
            # Primed (see _generator_driver): closed, thrown into or dropped before its
            # first step, it ends the call then. (A @types.coroutine's is awaited: as it is.)
            self.leave()
            stepping = _generator_driver(lambda: (result, self), primed=True)()
            next(stepping)
            return stepping
        if isinstance(result, types.AsyncGeneratorType):
            return self._stepped_async(result)
        if self._stream is not None:
            # Loaded by the first such return: wrapt (its proxy) takes ~20 ms to import.
            from spanhouse.sdk._returned_stream import stream_proxy
            try:
                proxy = stream_proxy(result, self)
            except Exception:  # noqa: BLE001 - an odd result (an unhashable type): returned as it is
                logger.debug("spanhouse could not watch the stream %s returned", self._spec.name, exc_info=True)
                proxy = None
            if proxy is not None:
                self.leave()
                return proxy
        self.succeed(result)
        return result

    def _stepped_async(self, agen: AsyncGen) -> AsyncGen:
        """``agen`` stepped by ``_async_generator_driver``'s loop in this call, which ends
        with it. It cannot be primed here (a step is awaited): one never started ends
        its call when it is collected (its span was left open), not at its
        ``aclose()``, and not at exit."""
        def start() -> tuple[AsyncGen, ActiveCall]:
            unstarted.detach()  # the loop ends the call now; a finished generator kept holds nothing
            return agen, self

        self.leave()
        stepping = _async_generator_driver(start)()
        unstarted = weakref.finalize(stepping, self._end_unstarted)  # refers to the call, not to the generator
        unstarted.atexit = False
        return stepping

    def _end_unstarted(self) -> None:
        self.succeed(self.yielded())

    def fail(self, exc: BaseException) -> None:
        """End the span after ``exc`` escaped: an exception event, ``error.type``, status ERROR
        for an ``Exception`` or ``sys.exit()`` with a failing status. Not for the other
        ``BaseException``s, as OpenTelemetry's ``use_span`` has it: a task cancelled
        (the loser of a race of tools, ``asyncio.wait_for``'s timeout), Ctrl-C, a consumer
        closing a generator; they counted as failed tool calls. The span ends whatever
        happens while recording (an exception whose ``__str__`` raises), and the caller
        gets ``exc`` itself."""
        try:
            span = self.span
            if self._stream is not None and not self._recorded_usage():  # a stream cut part-way was billed
                self._stream.record(span)  # (cancelled too)
            if not isinstance(exc, Exception) and not (isinstance(exc, SystemExit) and exc.code not in (None, 0)):
                return
            recording = span.is_recording()
            if recording or self._secrets:  # unrecorded, a call still tells the calls around it its secrets
                error_type = qualified_name(type(exc))
                message, stack = error_message(exc), "".join(traceback.format_exception(exc))
                secrets = error_secrets(exc, self._secrets, f"{message}\n{stack}")
            if recording:
                message = scrub_error_text(message, secrets)
                span.set_attribute(sc.ERROR_TYPE, error_type)
                span.set_status(Status(StatusCode.ERROR, utf8_safe(message) or error_type))
                span.add_event("exception", _exception_event(error_type, message, scrub_error_text(stack, secrets)))
        except Exception:  # noqa: BLE001
            logger.debug("spanhouse could not record an exception of %s", self._spec.name, exc_info=True)
        finally:
            self.end()

    def end(self) -> None:
        """End the span (and make it no longer current)."""
        self.span.end()
        self.leave()

    def leave(self) -> None:
        """Make the span no longer current, open or not."""
        if self._token is not None:
            context_api.detach(self._token)
            self._token = None

    def steps(self) -> _Steps:
        """For generators: the context every step of the wrapped generator runs in (see ``_Steps``)."""
        seen = contextvars.copy_context()
        steps = seen.copy()
        steps.run(context_api.attach, self._context)
        return _Steps(steps, seen)

    def collect(self, item: Any) -> None:
        """Keep a yielded item for the result, up to what could fit in the captured value:
        as many items as it has characters at most, and items of about that many bytes
        (their length for text, their own size otherwise): a generator streaming large
        chunks must not have them all held until it ends. A model call's items are also
        looked at for the usage a stream reports (``StreamUsage``)."""
        if self._stream is not None:
            try:
                self._stream.see(item)
            except Exception:  # noqa: BLE001 - an odd chunk: capture must never break the stream
                logger.debug("spanhouse could not read usage off a streamed item", exc_info=True)
        if self._content is None:
            return
        if self._items is None:
            self._items = []
        self._item_count += 1
        limit = self._content.max_length
        if self._kept < limit and len(self._items) < limit // 2 + 1:
            self._items.append(item)
            self._kept += _size_of(item, unknown=limit)

    def yielded(self) -> list[Any] | None:
        """The items kept by ``collect``, with a marker for those left out."""
        if self._items is None:
            return None if self._content is None else []
        left_out = self._item_count - len(self._items)
        return [*self._items, f"[truncated {left_out} more items]"] if left_out else self._items


_SIZE_STEPS: Final = 256
"""Objects ``_size_of`` looks at inside one item before it calls the item large."""

_SCALARS: Final = (int, float, bool, type(None))
_TEXT: Final = (str, bytes, bytearray)
_CONTAINERS: Final = (dict, list, tuple, set, frozenset, collections.deque)
_NOT_HELD: Final = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                    types.CodeType)
"""What an object refers to without holding it as data: its class, code, functions."""


def _size_of(item: Any, *, unknown: int) -> int:
    """About how much of the captured value ``item`` could take, and how much it holds:
    text and buffers by their length, numbers a few characters, containers and other
    objects (slotted, dataclasses, models, a list subclass's attributes) by what
    ``gc.get_referents`` finds, and what their type says in C: its own ``__sizeof__``
    (a numpy array's data) or ``nbytes`` (a view's). No code of theirs runs: types are
    told by ``type()``, not ``isinstance`` (a ``Mock(spec=dict)`` claims to be a dict,
    and its ``items()`` is a call recorded in the test's ``mock_calls``), lengths by the
    builtin's own method. Looked at up to ``_SIZE_STEPS`` objects; past that, or past
    ``unknown`` (a container of more items, whose referents would be copied whole), it is
    ``unknown``: a dict holding a 5 MB buffer measured 184 bytes by its own size, and a
    generator yielding sixty of them held all 300 MB until it ended. ``unknown`` too when
    the size cannot be told: capture must never break the call."""
    total, pending = 0, [item]
    try:
        for _ in range(_SIZE_STEPS):
            if not pending or total >= unknown:
                return total
            x = pending.pop()
            t = type(x)
            if issubclass(t, _NOT_HELD):
                continue
            if t not in _SCALARS and t not in _TEXT and issubclass(t, (*_SCALARS, *_TEXT)):
                pending.extend(itertools.islice(gc.get_referents(x), _SIZE_STEPS))  # a subclass's attributes
            if issubclass(t, _SCALARS):
                total += 8
            elif (base := _builtin_base(t)) is not None and base in _TEXT:
                total += base.__len__(x)
            elif t is memoryview:
                total += x.nbytes
            else:
                if base is not None and base.__len__(x) > _SIZE_STEPS:
                    return unknown
                total += 2 + (0 if base is not None else _c_size(x))
                pending.extend(itertools.islice(gc.get_referents(x), _SIZE_STEPS))
        return total if not pending else unknown
    except Exception:  # noqa: BLE001
        return unknown


@functools.lru_cache(maxsize=256)
def _builtin_base(t: type) -> type | None:
    """The builtin text or container type ``t`` is or derives from, else None."""
    return next((base for base in (*_TEXT, *_CONTAINERS) if issubclass(t, base)), None)


def _c_size(x: Any) -> int:
    """The bytes ``x``'s type reports in C: ``nbytes`` (a numpy array or view, a tensor),
    else a ``__sizeof__`` of its own (an owning array's data); 0 when it reports none."""
    nbytes, sizeof = _c_sizers(type(x))
    if nbytes is not None:
        value = nbytes.__get__(x, type(x))
        return value if isinstance(value, int) else 0
    return sys.getsizeof(x) if sizeof else 0


@functools.lru_cache(maxsize=256)
def _c_sizers(t: type) -> tuple[Any, bool]:
    """``t``'s ``nbytes`` when it is a C descriptor, and whether ``t`` has a ``__sizeof__``
    of its own written in C. Looked up without running descriptors (a Mock's class makes
    a mock when asked)."""
    nbytes = inspect.getattr_static(t, "nbytes", None)
    sizeof = inspect.getattr_static(t, "__sizeof__", None)
    return (nbytes if isinstance(nbytes, types.GetSetDescriptorType) else None,  # not a Python slot named so
            sizeof is not object.__dict__["__sizeof__"] and
            isinstance(sizeof, (types.MethodDescriptorType, types.WrapperDescriptorType)))


def _exception_event(error_type: str, message: str, stack: str) -> dict[str, str]:
    """The attributes of the exception event, as ``Span.record_exception`` writes them
    (type, message, stack trace, escaped; the latter two scrubbed by the caller), with
    the text made UTF-8-safe: the OTLP encoder drops an attribute UTF-8 cannot carry,
    and a message naming a non-UTF-8 file, or a chained exception's, would lose the
    message or the whole stack trace. Written here rather than by ``record_exception``,
    which formats the stack trace itself (twice the work to repair and scrub it) and
    loses the event if ``str(exc)`` raises."""
    return {sc.EXCEPTION_TYPE: error_type, sc.EXCEPTION_MESSAGE: utf8_safe(message),
            sc.EXCEPTION_STACKTRACE: utf8_safe(stack), sc.EXCEPTION_ESCAPED: "True"}


def qualified_name(cls: type) -> str:
    """``module.QualName``, or just ``QualName`` for builtins (``ValueError``): what the SDK
    writes as ``exception.type``, so the two always agree."""
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _instrument(func: Any, make_spec: Callable[[Callable[..., Any]], _Spec]) -> Any:
    """Wrap ``func`` (any kind of function, or a static/class method object) with spans from ``make_spec``."""
    if isinstance(func, (staticmethod, classmethod)):
        return type(func)(_instrument(func.__func__, make_spec))
    if not callable(func):
        raise TypeError(f"cannot instrument {func!r}: not callable (use the decorator as @tool or @tool(name=...))")
    spec = make_spec(func)
    spec.bind_signature(func)
    if _runtime.current.disabled:  # decided before decorating: no wrapper at all, zero cost per call
        return func
    # A callable object is the kind of its __call__ (an `async def __call__` is a coroutine
    # function, which inspect does not see in the object itself). A class is not: calling
    # it makes an instance, whatever its instances' __call__ is.
    kind = (func if inspect.isroutine(func) or isinstance(func, (functools.partial, type))
            else getattr(func, "__call__", func))
    if inspect.isasyncgenfunction(kind):
        wrapper = _async_generator_wrapper(func, spec)
    elif inspect.iscoroutinefunction(kind):
        wrapper = _coroutine_wrapper(func, spec)
    elif inspect.isgeneratorfunction(kind):
        wrapper = _generator_wrapper(func, spec)
    else:
        wrapper = _function_wrapper(func, spec)
    return wrapper if _binds(func) else _Unbound(wrapper)


def _binds(func: Any) -> bool:
    """Whether ``func``, as a class attribute, is bound to the instance it is read from:
    a function, or a method descriptor (``str.upper``; ``functools.partial`` from Python
    3.14). A callable object, a partial before 3.14, a class, a builtin or a bound method
    is not, and its wrapper must not be either."""
    return inspect.isfunction(func) or inspect.ismethoddescriptor(func)


_FUNCTION_LIKE: Final = ("__code__", "__defaults__", "__kwdefaults__")


class _Unbound:
    """The wrapper of a callable that does not bind as a method (see ``_binds``).

    The wrappers are functions, which bind: stored as a class attribute, a decorated
    callable object or partial was handed the instance, which it never got undecorated
    (a ``TypeError``, or a wrong first argument). This has no ``__get__``, so it is called
    as the callable itself would be. It carries the wrapper's code object, which is how
    ``inspect`` recognises function-like objects (Cython's functions): its
    ``iscoroutinefunction`` and ``isgeneratorfunction`` answer as for the wrapper.
    """

    def __init__(self, wrapper: Callable[..., Any]) -> None:
        functools.update_wrapper(self, wrapper, assigned=(*functools.WRAPPER_ASSIGNMENTS, *_FUNCTION_LIKE))
        self.__wrapped__ = wrapper.__wrapped__  # type: ignore[attr-defined]  # the decorated callable, not the wrapper
        self._wrapper = wrapper

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapper(*args, **kwargs)


def _function_wrapper(func: Callable[P, R], spec: _Spec) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if _runtime.current.disabled:
            return func(*args, **kwargs)
        call = spec.call(args, kwargs, attach=True)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        return call.returned(result)

    return wrapper


def _coroutine_wrapper(func: Callable[P, Any], spec: _Spec) -> Callable[P, Any]:
    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        if _runtime.current.disabled:
            return await func(*args, **kwargs)
        call = spec.call(args, kwargs, attach=True)
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        return call.returned(result)

    return wrapper


def _runtime_context_var() -> contextvars.ContextVar[Any] | None:
    """The ContextVar OpenTelemetry keeps its current context in (found by attaching a
    context in a scratch copy: its name and place are private to OpenTelemetry)."""
    probe = context_api.Context()

    def holder() -> contextvars.ContextVar[Any] | None:
        context_api.attach(probe)
        return next((var for var, value in contextvars.copy_context().items() if value is probe), None)
    return contextvars.copy_context().run(holder)


_OTEL_CONTEXT: Final = _runtime_context_var()


class _Steps:
    """The one context every step of a decorated generator runs in, kept in step with
    the consumer's as a plain generator's would be.

    One context, whoever drives the steps: what the generator's code made current and
    has not left yet (a model call, a session) is current again at its next step, and a
    ``with`` across a yield is left in the context it was entered in. Starlette runs
    each next() of a sync iterator in a worker thread with a copy of its own, and
    wait_for runs each __anext__ in a task of its own: stepped in the caller's context, a
    block entered in one copy could not be left in another (its span stayed current).

    A plain generator runs in its caller's context, so it sees the ContextVars its
    consumer sets between steps: before each step, what the consumer's context changed
    since the previous one is set here too (OpenTelemetry's context excepted: inside,
    the current span is the generator's). What the generator sets stays inside, as it
    did before this carried anything: set out in the consumer's context, a variable the
    generator set and then reset (structlog's bound_contextvars) stayed set there, a
    ContextVar having no way to be unset without the token of its setting.
    """

    __slots__ = ("_seen", "context")

    def __init__(self, context: contextvars.Context, seen: contextvars.Context) -> None:
        self.context = context
        self._seen = seen  # the consumer's context as the previous step began

    def run(self, step: Callable[..., Any], *args: Any) -> Any:
        """One step of a generator, called from the consumer's context."""
        self.enter()
        return self.context.run(step, *args)

    def enter(self) -> None:
        """Before a step: bring in what the consumer changed since the last one. Contexts
        compare in constant time when one is a copy of the other unchanged (the usual
        case: nothing changed), so only a change costs a walk over the variables. The
        comparison calls ``__eq__`` of a value set anew: one that raises (a numpy array)
        counts as changed, and one equal to the value it replaced is not brought in."""
        consumer = contextvars.copy_context()
        try:
            unchanged = bool(consumer == self._seen)
        except Exception:  # noqa: BLE001  # the consumer's values' __eq__ must not break its iteration
            unchanged = False
        if not unchanged:
            changed = _changes(self._seen, consumer)
            if changed:
                self.context.run(_set_all, changed)
            self._seen = consumer


def _changes(before: contextvars.Context, after: contextvars.Context) -> list[tuple[contextvars.ContextVar[Any], Any]]:
    """The ContextVars set differently in ``after`` than in ``before``, OpenTelemetry's own excepted."""
    return [(var, value) for var, value in after.items()
            if var is not _OTEL_CONTEXT and before.get(var, _NOTHING) is not value]


def _set_all(changes: list[tuple[contextvars.ContextVar[Any], Any]]) -> None:
    for var, value in changes:
        var.set(value)


class InContext:
    """Await ``awaitable`` with its code running in the steps' context: what asyncio does
    for a task's coroutine, here for one step of an async generator (see ``_Steps``)."""

    __slots__ = ("_awaitable", "_steps")

    def __init__(self, steps: _Steps, awaitable: Awaitable[Any]) -> None:
        self._steps = steps
        self._awaitable = awaitable

    def __await__(self) -> Generator[Any, Any, Any]:
        it = self._awaitable.__await__()
        resume: Callable[[Any], Any] = it.send
        value: Any = None
        self._steps.enter()
        while True:
            try:
                signal = self._steps.context.run(resume, value)
            except StopIteration as stop:
                return stop.value
            try:  # hand the event loop what the step waits on; pass back what it answers
                value, resume = (yield signal), it.send
            except BaseException as exc:  # thrown into the await (a cancellation): into the step
                value, resume = exc, it.throw


Gen = Generator[Any, Any, Any]
AsyncGen = AsyncGenerator[Any, Any]


def _generator_driver(start: Callable[..., tuple[Gen, ActiveCall | None]], *, primed: bool = False
                      ) -> Callable[..., Gen]:
    """A generator function that steps the generator ``start`` returns with the call it
    returns (None: the SDK is disabled, and it only delegates), in the call's context,
    keeping what it yields and ending the call when the generator ends: the one loop
    behind a decorated generator function and a generator a decorated function returns
    (``ActiveCall.returned``). ``start`` runs at the first step.

    ``primed``: the first step yields ``_PRIMED`` before stepping the generator (the
    returned generator's call is open already): advanced past it at once, the stepping
    generator then ends the call when it is closed, thrown into or collected before its
    first real step, as the generator it steps would end there (unstarted, Python runs
    none of its code then)."""
    def drive(*args: Any, **kwargs: Any) -> Gen:
        gen, call = start(*args, **kwargs)
        if call is None:
            return (yield from gen)
        steps = call.steps()
        sent: Any = None
        thrown: BaseException | None = None
        item: Any = _PRIMED
        stepping = not primed
        try:
            while True:
                if stepping:
                    item = steps.run(gen.send, sent) if thrown is None else steps.run(gen.throw, thrown)
                    sent = thrown = None
                    call.collect(item)
                stepping = True
                try:
                    sent = yield item
                except GeneratorExit:
                    steps.run(gen.close)
                    raise
                except BaseException as exc:  # consumer's gen.throw(): pass it into the generator
                    thrown = exc
        except StopIteration as stop:
            call.succeed(call.yielded())
            return stop.value
        except GeneratorExit:  # closed early by the consumer: a success, with what it got
            call.succeed(call.yielded())
            raise
        except BaseException as exc:
            call.fail(exc)
            raise

    return drive


_PRIMED: Final = object()
"""What a primed ``_generator_driver`` yields first, to ``ActiveCall.returned`` only."""


def _async_generator_driver(start: Callable[..., tuple[AsyncGen, ActiveCall]]) -> Callable[..., AsyncGen]:
    """``_generator_driver`` for async generators (no ``yield from`` for them: a disabled
    SDK's call is one that records nothing)."""
    async def drive(*args: Any, **kwargs: Any) -> AsyncGen:
        agen, call = start(*args, **kwargs)
        steps = call.steps()
        sent: Any
        thrown: BaseException | None
        try:
            # The event loop would know the generator from its first step and close it
            # itself, outside the call, when the loop ends (shutdown_asyncgens); it knows
            # this one only, which closes the generator inside the call. (The loop's
            # finalizer stays: collected in a cycle before this one, the generator is
            # closed by it, outside the call, rather than left with its finally cut.)
            hooks = sys.get_asyncgen_hooks()
            sys.set_asyncgen_hooks(firstiter=None, finalizer=_finalizer_beside(hooks.finalizer))
            try:
                first = agen.asend(None)
            finally:
                sys.set_asyncgen_hooks(*hooks)
            item = await InContext(steps, first)
            while True:
                call.collect(item)
                sent, thrown = None, None
                try:
                    sent = yield item
                except GeneratorExit:
                    if not agen.ag_running:  # (the loop may be closing it already: a cycle, the loop's end)
                        await InContext(steps, agen.aclose())
                    raise
                except BaseException as exc:  # consumer's athrow(): pass it into the generator
                    thrown = exc
                item = await InContext(steps, agen.asend(sent) if thrown is None else agen.athrow(thrown))
        except (StopAsyncIteration, GeneratorExit) as end:  # exhausted, or closed early by the consumer
            call.succeed(call.yielded())
            if isinstance(end, GeneratorExit):
                raise
        except BaseException as exc:
            call.fail(exc)
            raise

    return drive


def _finalizer_beside(finalizer: Callable[[Any], object] | None) -> Callable[[Any], object] | None:
    """The loop's finalizer for a generator a stepping generator holds, which may be
    closing it when the loop's task for it runs (both collected in a cycle: asyncio then
    logged "aclose(): asynchronous generator is already running" each time): asyncio's
    own hook, with the close skipped when the generator is running by then. Any other
    (a loop's override of it, uvloop's, trio's) is kept as it is."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None or getattr(finalizer, "__func__", None) is not asyncio.BaseEventLoop._asyncgen_finalizer_hook:
        return finalizer
    loop = finalizer.__self__  # type: ignore[union-attr]

    def finalize(agen: AsyncGen) -> None:
        if not loop.is_closed():  # the close is made when it runs: a loop closed first drops nothing unawaited
            loop.call_soon_threadsafe(lambda: loop.create_task(_aclose_unless_running(agen)))
    return finalize


async def _aclose_unless_running(agen: AsyncGen) -> None:
    if not agen.ag_running:  # type: ignore[attr-defined]
        await agen.aclose()


def _generator_wrapper(func: Callable[P, Gen], spec: _Spec) -> Callable[P, Gen]:
    def start(*args: Any, **kwargs: Any) -> tuple[Gen, ActiveCall | None]:
        if _runtime.current.disabled:
            return func(*args, **kwargs), None
        gen = func(*args, **kwargs)
        return gen, spec.call(args, kwargs, attach=False)

    return functools.wraps(func)(_generator_driver(start))


def _async_generator_wrapper(func: Callable[P, AsyncGen], spec: _Spec) -> Callable[P, AsyncGen]:
    def start(*args: Any, **kwargs: Any) -> tuple[AsyncGen, ActiveCall]:
        agen = func(*args, **kwargs)
        return agen, ActiveCall.unrecorded(spec) if _runtime.current.disabled else spec.call(args, kwargs,
                                                                                             attach=False)

    return functools.wraps(func)(_async_generator_driver(start))


def _name_of(func: Callable[..., Any]) -> str:
    return getattr(func, "__name__", None) or type(func).__name__


def _docstring_line(func: Callable[..., Any]) -> str | None:
    """The first line of a function's own docstring (not of a partial's or callable's class)."""
    doc = func.__doc__ if inspect.isroutine(func) else None
    return doc.strip().splitlines()[0].strip() if doc and doc.strip() else None


def _check_name(label: str, value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{label} must be a non-empty string, not {value!r}")


@overload
def _named(label: str, value: str) -> str: ...
@overload
def _named(label: str, value: str | None) -> str | None: ...
def _named(label: str, value: str | None) -> str | None:
    """``value`` checked (``_check_name``) and made UTF-8-safe: it becomes part of a span
    name and an attribute, which OpenTelemetry's OTLP encoder cannot carry otherwise (it
    raised on such a name, losing the span's whole batch; see ``utf8_safe``)."""
    _check_name(label, value)
    return None if value is None else utf8_safe(value)


def _check_capture(value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"capture_content must be True, False or None, not {value!r}")


def _execution_spec(name: str, record: bool, capture: bool | None) -> _Spec:
    name = _named("name", name)
    _check_capture(capture)
    if not isinstance(record, bool):
        raise ValueError(f"record must be True or False, not {record!r}")
    return _Spec(f"{sc.OP_INVOKE_WORKFLOW} {name}", SpanKind.INTERNAL,
                 {sc.OPERATION_NAME: sc.OP_INVOKE_WORKFLOW, sc.WORKFLOW_NAME: name},
                 input_key=sc.INPUT, output_key=sc.OUTPUT, capture=capture, root=True, record=record)


def _agent_spec(name: str, description: str | None, capture: bool | None) -> _Spec:
    name, description = _named("name", name), _named("description", description)
    _check_capture(capture)
    attributes = {sc.OPERATION_NAME: sc.OP_INVOKE_AGENT, sc.AGENT_NAME: name}
    if description:
        attributes[sc.AGENT_DESCRIPTION] = description
    return _Spec(f"{sc.OP_INVOKE_AGENT} {name}", SpanKind.INTERNAL, attributes,
                 input_key=sc.INPUT, output_key=sc.OUTPUT, capture=capture)


def _tool_spec(name: str, description: str | None, tool_type: str, call_id: str | None, call_id_arg: str | None,
               capture: bool | None) -> _Spec:
    name, description = _named("name", name), _named("description", description)
    tool_type = _named("tool_type", tool_type)
    call_id = _named("call_id", call_id)
    _check_name("call_id_arg", call_id_arg)  # a parameter's name: matched against the signature, never recorded
    _check_capture(capture)
    attributes = {sc.OPERATION_NAME: sc.OP_EXECUTE_TOOL, sc.TOOL_NAME: name, sc.TOOL_TYPE: tool_type}
    if description:
        attributes[sc.TOOL_DESCRIPTION] = description
    if call_id:
        attributes[sc.TOOL_CALL_ID] = call_id
    return _Spec(f"{sc.OP_EXECUTE_TOOL} {name}", SpanKind.INTERNAL, attributes, input_key=sc.TOOL_CALL_ARGUMENTS,
                 output_key=sc.TOOL_CALL_RESULT, capture=capture, call_id_arg=call_id_arg)


def _llm_spec(model: str | None, fallback_name: str, provider: str | None, operation: str,
              capture: bool | None) -> _Spec:
    model, provider = _named("model", model), _named("provider", provider)
    operation = _named("operation", operation)
    fallback_name = utf8_safe(fallback_name)
    _check_capture(capture)
    attributes = {sc.OPERATION_NAME: operation}
    if model:
        attributes[sc.REQUEST_MODEL] = model
    if provider:
        attributes[sc.PROVIDER_NAME] = provider
    return _Spec(f"{operation} {model or fallback_name}", SpanKind.CLIENT, attributes, input_key=sc.INPUT,
                 output_key=sc.OUTPUT, capture=capture, reads_usage=True)


@overload
def execution(func: F, /) -> F: ...
@overload
def execution(*, name: str | None = None, record: bool = True,
              capture_content: bool | None = None) -> Callable[[F], F]: ...
def execution(func: Any = None, /, *, name: str | None = None, record: bool = True,
              capture_content: bool | None = None) -> Any:
    """Mark a function as an execution: the root of its own trace, ``invoke_workflow {name}``.

    Args:
        name: the execution's name (``gen_ai.workflow.name``); the function's name by default.
        record: False drops every span of this execution (see the module docstring).
        capture_content: record arguments and return value as ``spanhouse.input`` /
            ``spanhouse.output``; None follows ``configure(capture_content=...)``.

    While it runs, the execution is listed as running (the processor exports a start
    marker). If a span is current when it starts, the execution links to it.
    """
    _check_name("name", name)

    def decorate(f: Any) -> Any:
        return _instrument(f, lambda fn: _execution_spec(name or _name_of(fn), record, capture_content))
    return decorate(func) if func is not None else decorate


workflow = execution
"""Alias of ``execution``, in the GenAI conventions' word (``invoke_workflow``)."""


@overload
def agent(func: F, /) -> F: ...
@overload
def agent(*, name: str | None = None, description: str | None = None,
          capture_content: bool | None = None) -> Callable[[F], F]: ...
def agent(func: Any = None, /, *, name: str | None = None, description: str | None = None,
          capture_content: bool | None = None) -> Any:
    """Mark a function as an agent: ``invoke_agent {name}`` with ``gen_ai.agent.name``.

    Inside an execution it is a span of that execution; called with no span current it
    starts a trace of its own and is an execution itself (listed as running while it runs).

    Args:
        name: the agent's name; the function's name by default.
        description: ``gen_ai.agent.description``.
        capture_content: as for ``execution``.
    """
    _check_name("name", name)

    def decorate(f: Any) -> Any:
        return _instrument(f, lambda fn: _agent_spec(name or _name_of(fn), description, capture_content))
    return decorate(func) if func is not None else decorate


@overload
def tool(func: F, /) -> F: ...
@overload
def tool(*, name: str | None = None, description: str | None = None, tool_type: str = "function",
         call_id_arg: str | None = None, capture_content: bool | None = None) -> Callable[[F], F]: ...
def tool(func: Any = None, /, *, name: str | None = None, description: str | None = None, tool_type: str = "function",
         call_id_arg: str | None = None, capture_content: bool | None = None) -> Any:
    """Mark a function as a tool: ``execute_tool {name}``, what spanhouse's tool statistics count.

    Args:
        name: ``gen_ai.tool.name``; the function's name by default.
        description: ``gen_ai.tool.description``; the first line of the docstring by default.
        tool_type: ``gen_ai.tool.type``: ``function`` (default), ``extension`` or ``datastore``.
        call_id_arg: the parameter holding the model's tool-call id, recorded as
            ``gen_ai.tool.call.id``.
        capture_content: record arguments and result as ``gen_ai.tool.call.arguments`` /
            ``gen_ai.tool.call.result``; None follows ``configure(capture_content=...)``.
    """
    _check_name("name", name)

    def decorate(f: Any) -> Any:
        return _instrument(f, lambda fn: _tool_spec(name or _name_of(fn), description or _docstring_line(fn),
                                                    tool_type, None, call_id_arg, capture_content))
    return decorate(func) if func is not None else decorate


@overload
def llm(func: F, /) -> F: ...
@overload
def llm(*, model: str | None = None, provider: str | None = None, operation: str = sc.OP_CHAT,
        capture_content: bool | None = None) -> Callable[[F], F]: ...
def llm(func: Any = None, /, *, model: str | None = None, provider: str | None = None, operation: str = sc.OP_CHAT,
        capture_content: bool | None = None) -> Any:
    """Mark a function as a model call: ``chat {model}``, kind CLIENT, ``gen_ai.request.model``.

    If the function returns a response that reports usage (``response.usage`` with
    ``input_tokens``/``output_tokens`` or ``prompt_tokens``/``completion_tokens``, as the
    Anthropic and OpenAI clients' responses do; Gemini's, Bedrock's and LangChain's
    shapes), or is a generator whose items (a stream's chunks or events) report it, it
    is recorded with its cost; otherwise call ``record_usage()`` inside, which then
    replaces what the response reports. A function that returns its stream unread
    (``return client.chat.completions.create(stream=True)``) keeps its span open until
    the caller has read, closed or dropped the stream (see ``_returned_stream``).

    Args:
        model: ``gen_ai.request.model``, also the price-table key; without it the span is
            named after the function.
        provider: ``gen_ai.provider.name`` (``openai``, ``anthropic``, …).
        operation: ``gen_ai.operation.name``: ``chat`` (default), ``text_completion``,
            ``generate_content``, ``embeddings``.
        capture_content: as for ``execution``.
    """
    def decorate(f: Any) -> Any:
        return _instrument(f, lambda fn: _llm_spec(model, _name_of(fn), provider, operation, capture_content))
    return decorate(func) if func is not None else decorate


@contextmanager
def _block(spec: _Spec, value: Any, *, as_arguments: bool = False) -> Iterator[ActiveCall]:
    call = spec.block(value, as_arguments=as_arguments)
    try:
        yield call
    except BaseException as exc:
        call.fail(exc)
        raise
    call.end()


def execution_span(name: str, *, record: bool = True, input: Any = _NOTHING,
                   capture_content: bool | None = None) -> AbstractContextManager[ActiveCall]:
    """``with execution_span("nightly-report") as run:``: ``@execution`` for a block of code.

    ``input`` is recorded as ``spanhouse.input``; ``run.set_result(x)`` records the output.
    """
    return _block(_execution_spec(name, record, capture_content), input)


def agent_span(name: str, *, description: str | None = None, input: Any = _NOTHING,
               capture_content: bool | None = None) -> AbstractContextManager[ActiveCall]:
    """``with agent_span("planner") as a:``: ``@agent`` for a block of code."""
    return _block(_agent_spec(name, description, capture_content), input)


def tool_call(name: str, *, arguments: Mapping[str, Any] | None = None, call_id: str | None = None,
              description: str | None = None, tool_type: str = "function",
              capture_content: bool | None = None) -> AbstractContextManager[ActiveCall]:
    """``with tool_call("search", arguments={"q": q}) as t: ... t.set_result(hits)``: ``@tool`` for a block."""
    if arguments is not None and not isinstance(arguments, Mapping):
        raise ValueError(f"arguments must be a mapping of argument names to values, not {arguments!r}")
    spec = _tool_spec(name, description, tool_type, call_id, None, capture_content)
    return _block(spec, _NOTHING if arguments is None else arguments, as_arguments=True)


def llm_call(model: str, *, provider: str | None = None, operation: str = sc.OP_CHAT, input: Any = _NOTHING,
             capture_content: bool | None = None) -> AbstractContextManager[ActiveCall]:
    """``with llm_call("gpt-4o") as c: ... record_usage(...)``: ``@llm`` for a block of code.

    ``c.set_result(response)`` records the output; usage is read off it as ``@llm`` does.
    """
    _check_name("model", model)
    return _block(_llm_spec(model, model, provider, operation, capture_content), input)
