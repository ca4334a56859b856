"""The one export path both receivers call: validate, then make durable, then answer.

A receiver authenticates the caller, asks ``Ingest.admit`` whether the spool has room
(a full spool refuses before any decoding), decodes its transport's body into an
``ExportTraceServiceRequest`` and calls ``Ingest.export``. Invalid spans are dropped and
reported as a partial success; the rest is appended to the spool, and only when the
spool has fsync'd it does ``export`` return — that return is the acknowledgement.
"""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from spanhouse.collector import encoding
from spanhouse.collector.auth import Principal
from spanhouse.collector.metrics import Metrics
from spanhouse.collector.spool import Spool
from spanhouse.collector.validate import validate
from spanhouse.errors import SpoolFull


class Ingest:
    """Validate -> spool -> acknowledge."""

    def __init__(self, spool: Spool, metrics: Metrics) -> None:
        self._spool = spool
        self._metrics = metrics

    def admit(self, principal: Principal, size: int) -> None:
        """Refuse a request of ``size`` bytes before it is decoded: ``Forbidden`` without
        the ingest scope (a wrong key is told so, not asked to retry), ``SpoolFull`` when
        the spool has no room for it, so under overload the CPU goes to draining, not to
        parsing requests that would be refused anyway."""
        principal.require("ingest")
        try:
            self._spool.check_room(size)
        except SpoolFull:
            self._metrics.backpressure.inc()
            raise

    def export(self, request: ExportTraceServiceRequest, principal: Principal,
               raw: bytes | None = None) -> ExportTraceServiceResponse:
        """Store the valid spans of ``request`` for ``principal``'s tenant.

        ``raw`` is the request's protobuf encoding when the receiver has it: a request
        with nothing rejected is spooled byte for byte, not encoded again. Raises
        ``Forbidden`` without the ingest scope and ``SpoolFull`` under backpressure.
        """
        principal.require("ingest")
        verdict = validate(request)
        self._metrics.spans_received.inc(verdict.accepted + verdict.rejected_count)
        for reason, n in verdict.rejected.items():
            self._metrics.spans_rejected.labels(reason=reason).inc(n)
        if verdict.accepted:
            # Bytes ClickHouse's protobuf reader refuses (e.g. an unknown field reusing a
            # number with another wire type) are handled by the writer's exact path.
            payload = raw if raw is not None and not verdict.rejected else request.SerializeToString()
            try:
                self._spool.append(principal.tenant, payload)
            except SpoolFull:
                self._metrics.backpressure.inc()
                raise
            self._metrics.spans_accepted.inc(verdict.accepted)
        return encoding.response(verdict.rejected_count, verdict.message())
