"""Settings of ``configure()``: every environment variable, its default, one precedence rule.

Precedence is the OpenTelemetry SDK's: an argument wins over the environment, the
environment over the default. A bad *argument* is a programming error and raises
``ValueError`` at once; a bad *environment value* is an operations mistake that must not
take the application down, so it is logged and the default is used instead.

The standard ``OTEL_*`` variables mean what the OpenTelemetry specification says, so an
application configured for any OpenTelemetry backend works unchanged; the two
``SPANHOUSE_*`` variables cover what the specification has no variable for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlparse

from opentelemetry.util.re import parse_env_headers

from spanhouse import BOOLEAN_WORDS

logger = logging.getLogger("spanhouse.sdk")

Protocol = Literal["grpc", "http/protobuf"]
PROTOCOLS: Final[tuple[Protocol, ...]] = ("grpc", "http/protobuf")

OTEL_SDK_DISABLED: Final = "OTEL_SDK_DISABLED"
""".. envvar:: OTEL_SDK_DISABLED

``true`` (any case; nothing else, as the OpenTelemetry specification says) turns the SDK
off: ``configure()`` installs nothing and the decorators call the function directly.
Default ``false``. Argument: ``configure(disabled=...)``; ``disabled=False`` cannot turn
it back on (OpenTelemetry's own SDK honours the variable, and functions decorated before
``configure()`` stay unwrapped), and says so in a warning.
"""

SPANHOUSE_DSN: Final = "SPANHOUSE_DSN"
""".. envvar:: SPANHOUSE_DSN

A spanhouse store to write into directly instead of sending OTLP: ``chdb:///path``
(embedded; the store belongs to this process while it runs; a relative ``chdb://./path``
is resolved when ``configure()`` runs) or ``http(s)://…`` (a ClickHouse server). Unset by
default; a value that names no store is logged and ignored. Argument: ``configure(dsn=...)``.
"""

OTEL_EXPORTER_OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
""".. envvar:: OTEL_EXPORTER_OTLP_ENDPOINT

Base URL of the collector for every signal, e.g. ``http://127.0.0.1:4317``. With
``http/protobuf`` the SDK appends ``/v1/traces`` (as the specification says for this
variable). Default ``http://127.0.0.1:4317`` (grpc) or ``http://127.0.0.1:4318/v1/traces``
(http/protobuf): where ``spanhouse serve`` listens by default. Argument: ``endpoint``.
"""

OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
""".. envvar:: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT

URL for traces only, used exactly as given (no path appended). Wins over
:envvar:`OTEL_EXPORTER_OTLP_ENDPOINT`.
"""

OTEL_EXPORTER_OTLP_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_PROTOCOL"
""".. envvar:: OTEL_EXPORTER_OTLP_PROTOCOL

``grpc`` (default) or ``http/protobuf``; ``http/json`` (optional in the specification, and
OpenTelemetry Python's exporters have none) is sent as ``http/protobuf`` to the same
endpoint, with a warning: its endpoint is an HTTP one. Argument: ``protocol``.
"""

OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
""".. envvar:: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL

As :envvar:`OTEL_EXPORTER_OTLP_PROTOCOL`, for traces only; wins over it.
"""

OTEL_EXPORTER_OTLP_HEADERS: Final = "OTEL_EXPORTER_OTLP_HEADERS"
""".. envvar:: OTEL_EXPORTER_OTLP_HEADERS

Request headers (gRPC metadata), ``key=value,key2=value2`` with URL-encoded values, e.g.
``authorization=Bearer%20<key>``. Malformed entries are logged and skipped. The
``headers`` argument is merged over them, and ``api_key`` over both.
"""

OTEL_EXPORTER_OTLP_TRACES_HEADERS: Final = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
""".. envvar:: OTEL_EXPORTER_OTLP_TRACES_HEADERS

As :envvar:`OTEL_EXPORTER_OTLP_HEADERS`, for traces only; wins over it.
"""

OTEL_SERVICE_NAME: Final = "OTEL_SERVICE_NAME"
""".. envvar:: OTEL_SERVICE_NAME

The ``service.name`` resource attribute (spanhouse's ``ServiceName`` column). Read by
the OpenTelemetry SDK's ``Resource.create``, so it behaves exactly as in any OpenTelemetry
application; the ``service_name`` argument wins over it.
"""

OTEL_RESOURCE_ATTRIBUTES: Final = "OTEL_RESOURCE_ATTRIBUTES"
""".. envvar:: OTEL_RESOURCE_ATTRIBUTES

Extra resource attributes, ``key=value,key2=value2``. Read by ``Resource.create``; the
``resource_attributes`` and ``service_name`` arguments win over it.
"""

SPANHOUSE_CAPTURE_CONTENT: Final = "SPANHOUSE_CAPTURE_CONTENT"
""".. envvar:: SPANHOUSE_CAPTURE_CONTENT

``false`` stops the decorators from recording arguments, results, inputs and outputs
(names, timings, errors and usage are still recorded). Default ``true``. Argument:
``capture_content``; a decorator's own ``capture_content=`` wins over both.
"""

SPANHOUSE_MAX_VALUE_LENGTH: Final = "SPANHOUSE_MAX_VALUE_LENGTH"
""".. envvar:: SPANHOUSE_MAX_VALUE_LENGTH

The longest captured value, in characters, before it is cut and marked
``…[truncated …]``. A positive integer; default 16384. Argument: ``max_value_length``.
"""

DEFAULT_PROTOCOL: Final[Protocol] = "grpc"
DEFAULT_GRPC_ENDPOINT: Final = "http://127.0.0.1:4317"
DEFAULT_HTTP_ENDPOINT: Final = "http://127.0.0.1:4318/v1/traces"
DEFAULT_MAX_VALUE_LENGTH: Final = 16384
TRACES_PATH: Final = "/v1/traces"


@dataclass(frozen=True)
class Settings:
    """The resolved configuration: what ``configure()`` builds its pipeline from."""

    disabled: bool = False
    endpoint: str = DEFAULT_GRPC_ENDPOINT
    protocol: Protocol = DEFAULT_PROTOCOL
    headers: Mapping[str, str] = field(default_factory=dict)
    service_name: str | None = None
    resource_attributes: Mapping[str, Any] = field(default_factory=dict)
    capture_content: bool = True
    max_value_length: int = DEFAULT_MAX_VALUE_LENGTH


def resolve(
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    service_name: str | None = None,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    capture_content: bool | None = None,
    max_value_length: int | None = None,
    disabled: bool | None = None,
) -> Settings:
    """Apply argument > environment > default to every setting.

    Raises:
        ValueError: an argument is invalid.
    """
    proto = _protocol(protocol)
    return Settings(
        disabled=_bool_arg("disabled", disabled) if disabled is not None else otel_env_bool(OTEL_SDK_DISABLED),
        endpoint=_endpoint(endpoint, proto),
        protocol=proto,
        headers=_headers(headers, api_key),
        service_name=_optional_str("service_name", service_name),
        resource_attributes=_mapping_arg("resource_attributes", resource_attributes),
        capture_content=(_bool_arg("capture_content", capture_content) if capture_content is not None
                         else env_bool(SPANHOUSE_CAPTURE_CONTENT, True)),
        max_value_length=(_positive_int_arg("max_value_length", max_value_length) if max_value_length is not None
                          else env_positive_int(SPANHOUSE_MAX_VALUE_LENGTH, DEFAULT_MAX_VALUE_LENGTH)),
    )


def otel_env_bool(name: str) -> bool:
    """An OpenTelemetry boolean variable, read as the specification says: true only for
    ``true`` (any case); unset, empty and anything else are false (anything else is logged)."""
    value = os.environ.get(name, "").strip().lower()
    if value not in ("true", "false", ""):
        logger.warning("%s=%r is not 'true' or 'false'; reading it as false, as OpenTelemetry does", name,
                       os.environ[name])
    return value == "true"


def env_bool(name: str, default: bool) -> bool:
    """A spanhouse boolean variable; unset or empty gives ``default``; anything but
    true/false/1/0/yes/no/on/off is logged and ignored."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = BOOLEAN_WORDS.get(raw.strip().lower())
    if value is None:
        logger.warning("%s=%r is not a boolean; using the default %s", name, raw, default)
        return default
    return value


def env_positive_int(name: str, default: int) -> int:
    """A positive integer variable; anything else is logged and ignored."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value > 0:
        return value
    logger.warning("%s=%r is not a positive integer; using the default %d", name, raw, default)
    return default


def _protocol(arg: str | None) -> Protocol:
    if arg is not None:
        if arg not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {arg!r}")
        return arg
    for name in (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL):
        raw = os.environ.get(name, "").strip()
        if raw:
            if raw in PROTOCOLS:
                return raw
            if raw == "http/json":  # sent as gRPC, it went to an HTTP endpoint (4318) and failed
                logger.warning("%s=http/json is not supported; sending http/protobuf to the same endpoint", name)
                return "http/protobuf"
            logger.warning("%s=%r is not supported (use %s); ignored", name, raw, " or ".join(PROTOCOLS))
    return DEFAULT_PROTOCOL


def _endpoint(arg: str | None, protocol: Protocol) -> str:
    """The URL handed to the exporter: the traces URL for http/protobuf, the base URL for grpc."""
    if arg is not None:
        if not isinstance(arg, str) or not _is_url(arg):
            raise ValueError(f"endpoint must be an http:// or https:// URL, not {arg!r}")
        return _traces_url(arg, protocol, append=not arg.rstrip("/").endswith(TRACES_PATH))
    for name, append in ((OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, False), (OTEL_EXPORTER_OTLP_ENDPOINT, True)):
        raw = os.environ.get(name, "").strip()
        if raw:
            if _is_url(raw):
                return _traces_url(raw, protocol, append=append)
            logger.warning("%s=%r is not an http:// or https:// URL; ignoring it", name, raw)
    return DEFAULT_GRPC_ENDPOINT if protocol == "grpc" else DEFAULT_HTTP_ENDPOINT


def _traces_url(url: str, protocol: Protocol, *, append: bool) -> str:
    if protocol == "grpc" or not append:
        return url
    return url.rstrip("/") + TRACES_PATH


def _is_url(value: str) -> bool:
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def _headers(arg: Mapping[str, str] | None, api_key: str | None) -> dict[str, str]:
    """Environment headers, then the ``headers`` argument, then ``api_key`` (gRPC wants lower-case keys)."""
    merged: dict[str, str] = {}
    for name in (OTEL_EXPORTER_OTLP_TRACES_HEADERS, OTEL_EXPORTER_OTLP_HEADERS):
        raw = os.environ.get(name, "")
        if raw.strip():
            merged.update(parse_env_headers(raw, liberal=True))
            break
    if arg is not None:
        if not isinstance(arg, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in arg.items()):
            raise ValueError("headers must be a mapping of str to str")
        merged.update({k.lower(): v for k, v in arg.items()})
    if api_key is not None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("api_key must be a non-empty string")
        merged["authorization"] = f"Bearer {api_key.strip()}"
    return merged


def _bool_arg(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, not {value!r}")
    return value


def _positive_int_arg(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


def _optional_str(name: str, value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{name} must be a non-empty string, not {value!r}")
    return value


def _mapping_arg(name: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping, not {value!r}")
    return dict(value)
