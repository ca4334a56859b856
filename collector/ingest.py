"""The one export path both receivers call: validate, then make durable, then answer.

A receiver authenticates the caller, asks ``Ingest.admit`` whether the spool has room
(a full spool refuses before any decoding), decodes its transport's body into an
``ExportTraceServiceRequest`` and calls ``Ingest.export``. Meanwhile it holds the
request's bytes in ``Ingest.hold()``: how much all receivers hold at once is bounded,
so memory is too, however many clients send at once. Invalid spans are dropped and
reported as a partial success; the rest is appended to the spool, and only when the
spool has fsync'd it does ``export`` return — that return is the acknowledgement. A
resend of a request acknowledged within the dedup window is acknowledged again without
being spooled again (``resends``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from spanhouse.collector import encoding
from spanhouse.collector.auth import Principal
from spanhouse.collector.metrics import Metrics
from spanhouse.collector.resends import RecentRequests
from spanhouse.collector.spool import Spool
from spanhouse.collector.validate import REASONS, validate
from spanhouse.errors import Backpressure


class Held:
    """The bytes one request holds against ``Ingest``'s bound (see ``Ingest.hold``)."""

    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest
        self.bytes = 0

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes, or raise ``Backpressure`` (nothing held) if all
        requests together would hold more than the bound."""
        self._ingest._take(self, size)


class Ingest:
    """Validate -> spool -> acknowledge.

    ``max_held_bytes`` bounds the request bytes the receivers hold at once: bodies as
    they arrive, decompressed, until answered. Past it a request is asked to retry
    (503 / UNAVAILABLE with RetryInfo), like a full spool. With twice the largest
    request allowed, one request (compressed and decompressed) always fits alone.
    ``recent``: the requests acknowledged lately, whose resends are acknowledged again
    and not stored again (default: none remembered, every request stored).
    """

    def __init__(self, spool: Spool, metrics: Metrics, max_held_bytes: int = 128 << 20,
                 recent: RecentRequests | None = None) -> None:
        self._spool = spool
        self._metrics = metrics
        self.recent = recent or RecentRequests(0)
        self._max_held = max_held_bytes
        self._held = 0
        self._lock = threading.Lock()
        metrics.request_bytes_held.set_function(lambda: self._held)
        for reason in REASONS:  # every series from the start: rate() misses the first event of a new one
            metrics.spans_rejected.labels(reason=reason)

    @contextmanager
    def hold(self) -> Iterator[Held]:
        """The bytes of one request, given back when it is answered. Every receiver
        handles a request inside it, so a request asked to retry is counted here, once,
        whichever step refused it: the bound of held bytes, ``admit`` (spool full) or
        ``export`` (spool full, or its write failed: a full disk)."""
        held = Held(self)
        try:
            yield held
        except Backpressure:
            self._metrics.backpressure.inc()
            raise
        finally:
            with self._lock:
                self._held -= held.bytes

    def _take(self, held: Held, size: int) -> None:
        with self._lock:
            if self._held + size > self._max_held:
                raise Backpressure(f"the collector is receiving {self._held} bytes of requests at once, its "
                                   f"bound; retry shortly")
            self._held += size
            held.bytes += size

    def admit(self, principal: Principal, size: int) -> None:
        """Refuse a request of ``size`` bytes before it is decoded: ``Forbidden`` without
        the ingest scope (a wrong key is told so, not asked to retry), ``SpoolFull`` when
        the spool has no room for it, so under overload the CPU goes to draining, not to
        parsing requests that would be refused anyway."""
        principal.require("ingest")
        self._spool.check_room(size)

    def export(self, request: ExportTraceServiceRequest, principal: Principal,
               raw: bytes | None = None) -> ExportTraceServiceResponse:
        """Store the valid spans of ``request`` for ``principal``'s tenant.

        ``raw`` is the request's protobuf encoding when the receiver has it: a request
        with nothing rejected is spooled byte for byte when that encoding is canonical
        (``_payload``), not encoded again. Raises
        ``Forbidden`` without the ingest scope and ``SpoolFull`` under backpressure.
        """
        principal.require("ingest")
        verdict = validate(request)
        if verdict.accepted:
            payload = _payload(request, raw if not verdict.rejected else None)
            key = self.recent.key(principal.tenant, payload)
            if not self.recent.begin(key):
                self._metrics.resends.inc()
            else:
                stored = False
                try:
                    self._spool.append(principal.tenant, payload)
                    stored = True
                finally:
                    self.recent.end(key, principal.tenant, stored)
        # Counted once answered: a request the spool refused is sent again, and was
        # counted as received on every try, its spans neither accepted nor rejected.
        self._metrics.spans_received.inc(verdict.accepted + verdict.rejected_count)
        self._metrics.spans_accepted.inc(verdict.accepted)
        for reason, n in verdict.rejected.items():
            self._metrics.spans_rejected.labels(reason=reason).inc(n)
        return encoding.response(verdict.rejected_count, verdict.message())


def _payload(request: ExportTraceServiceRequest, raw: bytes | None) -> bytes:
    """What to spool for ``request``: ``raw`` (its encoding as received) when that is
    canonical, else ``request`` encoded again.

    ClickHouse's protobuf reader, which the writer feeds the spooled bytes to, differs
    from protobuf on two things a client can send: a singular field sent twice
    (protobuf keeps the last value, which validation saw; the reader stored an empty
    one) and a top-level field with the number the writer frames the tenant with
    (it then stood for the tenant: the spans left the caller's tenant). A body with a
    field sent twice is longer than the canonical encoding; one with a top-level
    unknown field is encoded again without unknown fields. Bytes the reader refuses
    otherwise (e.g. an unknown field reusing a number with another wire type) are
    handled by the writer's exact path.
    """
    if UnknownFieldSet(request):
        request.DiscardUnknownFields()
    elif raw is not None and len(raw) == request.ByteSize():
        return raw
    return request.SerializeToString()
