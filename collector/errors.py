"""The one map from errors to OTLP outcomes, for both transports.

Like the OpenTelemetry Collector's ``internal/errors``: receivers never pick a status
themselves; they raise, and ``outcome`` says what gRPC code and HTTP status that is.
gRPC -> HTTP follows the OTLP spec: INVALID_ARGUMENT 400, UNAUTHENTICATED 401,
PERMISSION_DENIED 403, RESOURCE_EXHAUSTED 413 for oversize (no RetryInfo, so clients
do not retry), UNAVAILABLE 503 with RetryInfo / Retry-After for backpressure. An error
we did not expect is UNAVAILABLE/503: the client keeps the data and retries, and
nothing is acknowledged that is not durable.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from spanhouse.errors import (
    AuthError,
    Backpressure,
    Forbidden,
    InvalidData,
    PayloadTooLarge,
    UnsupportedMediaType,
)


@dataclass(frozen=True)
class Outcome:
    """How an error is answered on each transport."""

    grpc_code: grpc.StatusCode
    http_status: int
    retry_after: float | None = None

    @property
    def label(self) -> str:
        """Its ``outcome`` label in ``spanhouse_requests_total``: the gRPC code's name, one
        set for both transports; a 415 (which gRPC answers as INVALID_ARGUMENT) apart."""
        return _label(self.grpc_code, self.http_status)


def _label(code: grpc.StatusCode, http_status: int) -> str:
    return "unsupported_media_type" if http_status == 415 else code.name.lower()


# Most specific first: the first matching class wins.
_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode, int], ...] = (
    (PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
    (InvalidData, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (UnsupportedMediaType, grpc.StatusCode.INVALID_ARGUMENT, 415),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED, 403),
    (AuthError, grpc.StatusCode.UNAUTHENTICATED, 401),
    (Backpressure, grpc.StatusCode.UNAVAILABLE, 503),
)


OUTCOMES: tuple[str, ...] = tuple(dict.fromkeys(
    ["ok", *(_label(code, status) for _, code, status in _TABLE), _label(grpc.StatusCode.UNAVAILABLE, 503)]))
"""Every ``outcome`` label a receiver gives an answer from this map (``spanhouse_requests_total``)."""


def outcome(exc: BaseException) -> Outcome:
    """The gRPC code, HTTP status and retry delay for ``exc``."""
    for kind, code, status in _TABLE:
        if isinstance(exc, kind):
            retry = exc.retry_after if isinstance(exc, Backpressure) else None
            return Outcome(code, status, retry)
    return Outcome(grpc.StatusCode.UNAVAILABLE, 503, 5.0)
