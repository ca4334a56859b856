"""``configure()``, ``flush()`` and ``shutdown()``: connecting the decorators to a collector.

``configure()`` resolves its settings (``_config``), then either adds spanhouse's span
processor to the TracerProvider the application already has, or, when there is none,
creates one (with the service name and resource attributes) and makes it the global
provider. It never replaces an application's provider and never adds a second
spanhouse processor to one: calling it again with the same arguments does nothing, with
different ones it swaps the exporters inside the processor it added before.

Spans leave through a ``BatchSpanProcessor`` and the OTLP exporter of the chosen
protocol, made fork-safe (``_processor.ForkSafeExporter``). They are flushed by
``flush()``, and at interpreter exit: by the provider's own exit hook, and by one
registered here for providers created with ``shutdown_on_exit=False``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final, cast
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from spanhouse.sdk import _config, _runtime
from spanhouse.sdk._content import ContentPolicy, RedactHook
from spanhouse.sdk._processor import BorrowedExporter, ForkSafeExporter, SpanhouseSpanProcessor

logger = logging.getLogger("spanhouse.sdk")

_lock = threading.Lock()
_processors: weakref.WeakKeyDictionary[TracerProvider, SpanhouseSpanProcessor] = weakref.WeakKeyDictionary()
_active: tuple[tuple[Any, ...], SpanhouseSpanProcessor | None] | None = None  # (what configured it, its processor)
_exit_hook_registered = False


def configure(
    endpoint: str | None = None,
    *,
    protocol: str | None = None,
    service_name: str | None = None,
    api_key: str | None = None,
    capture_content: bool | None = None,
    max_value_length: int | None = None,
    redact: RedactHook | None = None,
    headers: Mapping[str, str] | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    disabled: bool | None = None,
    tracer_provider: TracerProvider | None = None,
    exporter: SpanExporter | None = None,
    dsn: str | None = None,
) -> None:
    """Send the decorators' spans (and every other span of the provider) to spanhouse.

    Every argument left as None falls back to its environment variable, then to its
    default (``spanhouse.sdk._config`` documents each).

    Args:
        endpoint: collector URL; ``http://127.0.0.1:4317`` (grpc) or
            ``http://127.0.0.1:4318`` (http/protobuf, ``/v1/traces`` appended) by default.
        protocol: ``grpc`` (default) or ``http/protobuf``.
        service_name: ``service.name`` of a provider created here.
        api_key: sent as ``authorization: Bearer <key>``.
        capture_content: record arguments, results, inputs and outputs (default True).
        max_value_length: longest captured value before truncation (default 16384).
        redact: ``hook(key, value) -> value``, applied to captured values after the
            built-in redaction of secret-looking keys.
        headers: extra request headers / gRPC metadata.
        resource_attributes: resource attributes of a provider created here.
        disabled: True turns the SDK off (default: ``OTEL_SDK_DISABLED``).
        tracer_provider: add to this provider instead of the global one (which is then
            left alone).
        exporter: export through this exporter instead of OTLP. spanhouse flushes it but never
            shuts it down (it may serve the next ``configure()``): closing it is the caller's.
        dsn: write straight into a spanhouse store instead of sending OTLP
            (``chdb:///path`` embedded, or ``http(s)://…`` a ClickHouse server; default
            ``SPANHOUSE_DSN``), through ``ClickHouseSpanExporter``. Each export is one
            insert, so batches are large: 20k spans, a queue of 80k (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``,
            ``OTEL_BSP_MAX_QUEUE_SIZE``).

    Raises:
        ValueError: an argument is invalid.
    """
    global _active
    settings = _config.resolve(endpoint=endpoint, protocol=protocol, service_name=service_name, api_key=api_key,
                               headers=headers, resource_attributes=resource_attributes,
                               capture_content=capture_content, max_value_length=max_value_length, disabled=disabled)
    if not settings.disabled and _config.otel_env_bool(_config.OTEL_SDK_DISABLED):
        logger.warning("spanhouse: configure(disabled=False) with OTEL_SDK_DISABLED=true records nothing: "
                       "OpenTelemetry's SDK honours the variable itself, and functions decorated before "
                       "configure() were left unwrapped. Unset OTEL_SDK_DISABLED to record spans.")
    if redact is not None and not callable(redact):
        raise ValueError(f"redact must be a callable hook(key, value) -> value, not {redact!r}")
    if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
        raise ValueError(f"tracer_provider must be an opentelemetry.sdk.trace.TracerProvider, not {tracer_provider!r}")
    if exporter is not None and not isinstance(exporter, SpanExporter):
        raise ValueError(f"exporter must be an opentelemetry.sdk.trace.export.SpanExporter, not {exporter!r}")
    dsn = _store_dsn(dsn)
    bulk = False  # the exporter writes each batch in one insert
    if exporter is None and dsn:
        exporter, bulk = _store_exporter(dsn), True
    key = (settings, redact, tracer_provider, exporter)
    with _lock:
        if _active is not None and _active[0] == key:
            return
        content = ContentPolicy(settings.max_value_length, redact)
        if settings.disabled:
            _retire(None)
            _release_store_exporters(keep=None)
            _runtime.install(_runtime.Runtime(trace.get_tracer(_runtime.SCOPE_NAME, _runtime.SCOPE_VERSION),
                                              disabled=True, capture_content=False, content=content))
            _active = (key, None)
            return
        provider = tracer_provider or _global_provider(settings)
        processor = None if provider is None else _attach(provider, settings, exporter, bulk)
        _retire(processor)
        _release_store_exporters(keep=exporter)
        tracer = (provider.get_tracer(_runtime.SCOPE_NAME, _runtime.SCOPE_VERSION) if provider is not None
                  else trace.get_tracer(_runtime.SCOPE_NAME, _runtime.SCOPE_VERSION))
        _runtime.install(_runtime.Runtime(tracer, disabled=False, capture_content=settings.capture_content,
                                          content=content))
        _active = (key, processor)
        _register_exit_hook()


def flush(timeout_millis: int = 30000) -> bool:
    """Export every span and marker that has ended so far; True if all were handed over in time.

    Call it where a process may end without running exit hooks (``os._exit`` in forked
    workers, serverless handlers between invocations).
    """
    processor = _active[1] if _active is not None else None
    return True if processor is None else processor.force_flush(timeout_millis)


def shutdown() -> None:
    """Flush and stop spanhouse's export; the decorators keep working but send nothing.

    ``configure()`` may be called again afterwards.
    """
    global _active
    with _lock:
        _retire(None)
        _active = None
        _runtime.install(_runtime.from_environment())
        _release_store_exporters(keep=None)


def _global_provider(settings: _config.Settings) -> TracerProvider | None:
    """The application's provider, else a new global one; None if one is set that takes
    no span processor. A provider that is not the SDK's but takes processors as it does
    (Logfire's wraps an SDK provider) is added to like the SDK's."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    if not isinstance(current, trace.ProxyTracerProvider):
        if callable(getattr(current, "add_span_processor", None)):
            return cast(TracerProvider, current)
        logger.warning("spanhouse: the global TracerProvider %s is not the OpenTelemetry SDK's and takes no span "
                       "processor; spanhouse cannot add its processor to it and will export nothing",
                       type(current).__qualname__)
        return None
    attributes = dict(settings.resource_attributes)
    if settings.service_name:
        attributes[SERVICE_NAME] = settings.service_name
    provider = TracerProvider(resource=Resource.create(attributes))
    trace.set_tracer_provider(provider)
    return provider


def _store_dsn(arg: str | None) -> str | None:
    """The store to write into: the ``dsn`` argument, else ``SPANHOUSE_DSN``, else None
    (send OTLP), with a relative data directory made absolute now (see ``store_dsn``).
    A DSN that can name no store failed only at the first export, dropping every span:
    as an argument it raises ValueError here, from the environment it is logged and
    ignored (``_config``'s rule).

    Imported here: only applications that write to a store need the storage layer."""
    raw = arg or os.environ.get(_config.SPANHOUSE_DSN, "").strip()
    if not raw:
        return None
    if not isinstance(raw, str):
        raise ValueError(f"dsn must be a string such as chdb:///path or http://user:pass@host:8123/db, not {raw!r}")
    from spanhouse.errors import ConfigError
    from spanhouse.sdk.clickhouse_exporter import store_dsn

    try:
        return store_dsn(raw)
    except ConfigError as exc:
        if arg:
            raise ValueError(str(exc)) from None
        logger.warning("spanhouse: ignoring %s, so spans are sent over OTLP instead: %s", _config.SPANHOUSE_DSN, exc)
        return None


_store_exporters: dict[str, SpanExporter] = {}


def _store_exporter(dsn: str) -> SpanExporter:
    """One ``ClickHouseSpanExporter`` per DSN (so configuring twice stays idempotent).

    Imported here: only applications that write to a store need the storage layer."""
    if dsn not in _store_exporters:
        from spanhouse.sdk.clickhouse_exporter import exporter_in

        owner = os.getpid()
        _store_exporters[dsn] = ForkSafeExporter(lambda: exporter_in(os.getpid(), dsn, owner))
    return _store_exporters[dsn]


def _release_store_exporters(keep: SpanExporter | None) -> None:
    """Shut down the store exporters other than ``keep`` (their spans were flushed when the
    pipeline was replaced). Ours to close, and they must be: a process can hold one
    embedded store at a time, so a configure() with another DSN could not open its store
    (and dropped every span) while the previous one stayed open. A later configure(dsn)
    opens anew."""
    for dsn, store_exporter in list(_store_exporters.items()):
        if store_exporter is not keep:
            store_exporter.shutdown()
            del _store_exporters[dsn]


def _attach(provider: TracerProvider, settings: _config.Settings,
            exporter: SpanExporter | None, bulk: bool) -> SpanhouseSpanProcessor:
    """spanhouse's processor on ``provider``: added once, its exporters replaced afterwards."""
    resource = getattr(provider, "resource", Resource.get_empty()).attributes
    wanted = Resource(dict(settings.resource_attributes)).attributes  # as a resource keeps them: lists as tuples
    ignored = {k: v for k, v in wanted.items() if resource.get(k) != v}
    if settings.service_name and resource.get(SERVICE_NAME) != settings.service_name:
        ignored[SERVICE_NAME] = settings.service_name
    if ignored:
        logger.warning("spanhouse: the TracerProvider already exists with its own resource (service.name=%r), which "
                       "is kept: %s not applied; pass them to the provider when it is created",
                       resource.get(SERVICE_NAME), ", ".join(f"{k}={v!r}" for k, v in ignored.items()))
    span_exporter: SpanExporter | None
    if exporter is not None:
        span_exporter = BorrowedExporter(exporter)
    elif _exports_to(provider, settings.endpoint, grpc=settings.protocol == "grpc"):
        logger.info("spanhouse: the TracerProvider already exports its spans over OTLP to %s; spanhouse adds its "
                    "session attributes and running markers and leaves the spans to that exporter",
                    settings.endpoint)
        span_exporter = None
    else:
        span_exporter = ForkSafeExporter(_otlp_factory(settings))
    marker_exporter = None if exporter is not None else ForkSafeExporter(_otlp_factory(settings))
    processor = _processors.get(provider)
    if processor is None:
        processor = SpanhouseSpanProcessor(span_exporter, marker_exporter=marker_exporter, bulk=bulk)
        provider.add_span_processor(processor)
        _processors[provider] = processor
    else:
        processor.replace(span_exporter, marker_exporter=marker_exporter, bulk=bulk)
    return processor


def _exports_to(provider: TracerProvider, endpoint: str, *, grpc: bool) -> bool:
    """Whether another processor of ``provider`` already sends spans over OTLP to
    ``endpoint``: opentelemetry-instrument installs one from the same ``OTEL_*``
    variables, and spanhouse exporting too stored every span twice. Read from the SDK's
    processors as they are laid out (their exporter's endpoint); any other layout counts
    as not exporting there."""
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
    exporters = [getattr(p, "span_exporter", None) for p in processors if not isinstance(p, SpanhouseSpanProcessor)]
    endpoints = [e for e in (getattr(x, "_endpoint", None) for x in exporters) if isinstance(e, str)]
    ours = _where(endpoint, grpc=grpc)
    return ours is not None and any(_where(e, grpc="://" not in e) == ours for e in endpoints)


_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})


def _where(endpoint: str, *, grpc: bool) -> tuple[bool, str, int, str] | None:
    """Where an OTLP exporter given ``endpoint`` sends, as ``(grpc, host, port, path)``,
    so that two spellings of one collector compare equal: OpenTelemetry's exporters
    default to ``localhost``, spanhouse to ``127.0.0.1``, and the textual comparison took
    them for two collectors (every span was stored twice). The loopback names are one
    host; a missing port is the one the exporter would use (gRPC's 443, else the
    scheme's); the gRPC exporter keeps only ``host:port`` (its ``_endpoint`` has no scheme)
    and ignores any path. None: not a URL either exporter could use."""
    url = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    try:
        port = url.port
    except ValueError:  # a port that is not a number
        return None
    host = (url.hostname or "").lower()
    if not host:
        return None
    if port is None:
        port = 443 if grpc or url.scheme == "https" else 80
    return grpc, "localhost" if host in _LOOPBACK else host, port, "" if grpc else url.path.rstrip("/")


def _retire(keep: SpanhouseSpanProcessor | None) -> None:
    """Shut down the processor of the previous configuration unless it is ``keep``."""
    previous = _active[1] if _active is not None else None
    if previous is not None and previous is not keep:
        previous.shutdown()


def _otlp_factory(settings: _config.Settings) -> Callable[[], SpanExporter]:
    """A maker of the OTLP exporter; imported lazily, so only the chosen transport is loaded."""
    headers = dict(settings.headers)
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return lambda: GrpcExporter(endpoint=settings.endpoint, headers=headers)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return lambda: HttpExporter(endpoint=settings.endpoint, headers=headers)


def _register_exit_hook() -> None:
    """Flush at the interpreter's exit, and at the exit of a multiprocessing worker forked
    from this process: it ends with ``os._exit`` after multiprocessing's own finalizers,
    so no atexit hook runs there and its spans were lost without a word (the README's
    advice, a collector's endpoint, did not help; an embedded store's refusal was never
    said)."""
    global _exit_hook_registered
    if not _exit_hook_registered:
        import multiprocessing.util  # here, not at import: 5 ms that a process never configured need not pay

        # weakref.finalize's own exit hook, which closes chdb's engine handles, is registered
        # by the first finalizer made: made now, it runs after the flush (exit hooks run last
        # registered first). Made by chdb once the store opened, it ran first, and a process
        # ending while its first batch opened a new store dropped the batch (20,000 spans).
        weakref.finalize(_register_exit_hook, lambda: None).atexit = False  # on a function that lives on
        atexit.register(flush)
        multiprocessing.util.register_after_fork(flush, _flush_at_worker_exit)
        _exit_hook_registered = True


def _flush_at_worker_exit(flush_spans: Callable[[], bool]) -> None:
    """In a worker multiprocessing forked (after it cleared the finalizers it inherited):
    flush when the worker ends."""
    import multiprocessing.util

    multiprocessing.util.Finalize(None, flush_spans, exitpriority=0)
