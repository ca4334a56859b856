"""OTLP/gRPC receiver: ``TraceService/Export`` as a thin adapter over ``Ingest.export``.

Registered as a generic handler with no deserializer, so the request arrives as bytes
and is decoded once, here. gzip is gRPC message compression, handled by grpcio; a
message over the size limit is refused by grpcio itself with RESOURCE_EXHAUSTED, before
the handler runs, so no metric counts it (as in the OpenTelemetry Collector): letting
larger ones through to count them would let each worker hold more than the limit.
Calls beyond the worker threads wait in grpcio's queue, as in the OpenTelemetry
Collector (no concurrent-call limit): a queued call holds no message yet (grpcio reads
it on the worker), so memory stays bounded by the workers. grpcio's own limit would
refuse the overflow with RESOURCE_EXHAUSTED and no RetryInfo, which OTLP clients take
as "do not retry": spans dropped under load instead of delayed.
Errors are answered through ``collector.errors.outcome`` with a ``google.rpc.Status``
in the ``grpc-status-details-bin`` trailer (RetryInfo when the client should retry).
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc

from spanhouse.collector import encoding
from spanhouse.collector.auth import KeyRing, key_from_headers
from spanhouse.collector.errors import OUTCOMES, outcome
from spanhouse.collector.ingest import Ingest
from spanhouse.collector.metrics import Metrics
from spanhouse.errors import SpanhouseError

log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class GrpcReceiver:
    """The gRPC server on ``host:port`` (port 0 picks a free one; see ``port``)."""

    def __init__(self, ingest: Ingest, keys: KeyRing, metrics: Metrics, host: str, port: int,
                 max_request_bytes: int, workers: int = 16) -> None:
        self._ingest = ingest
        self._keys = keys
        self._metrics = metrics
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spanhouse-grpc"),
            options=[("grpc.max_receive_message_length", max_request_bytes),
                     ("grpc.max_send_message_length", 4 << 20),
                     # grpcio sets SO_REUSEPORT by default: a second collector on a taken
                     # port then shared it silently, the kernel splitting clients between
                     # two stores. Off, a taken port fails to bind like the other ports.
                     ("grpc.so_reuseport", 0)],
        )
        for name in OUTCOMES:  # every series from the start: rate() misses the first event of a new one
            metrics.requests.labels(transport="grpc", outcome=name)
        handler = grpc.unary_unary_rpc_method_handler(self._export)
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),))
        try:  # an IPv6 address in brackets, as a gRPC target has it ('::1:0' parsed as a name)
            self.port = self._server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        except RuntimeError:  # grpcio >= 1.5x raises where older ones returned 0: the address is taken
            self.port = 0

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float) -> None:
        """Stop taking calls; in-flight calls get ``grace`` seconds to finish."""
        self._server.stop(grace).wait()

    def _export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            metadata = dict(context.invocation_metadata())
            principal = self._keys.authenticate(key_from_headers(metadata.get))
            with self._ingest.hold() as held:
                held.take(len(body))  # already received: what it bounds is the decoding
                self._ingest.admit(principal, len(body))
                request, raw = encoding.decode(body, encoding.PROTOBUF)
                reply = self._ingest.export(request, principal, raw=raw)
        except Exception as exc:  # every failure is answered through the one error map
            self._abort(context, exc)
        self._metrics.requests.labels(transport="grpc", outcome="ok").inc()
        return reply.SerializeToString()

    def _abort(self, context: grpc.ServicerContext, exc: Exception) -> None:
        result = outcome(exc)
        if not isinstance(exc, SpanhouseError):
            log.exception("unexpected error in gRPC export; the client is told to retry")
        self._metrics.requests.labels(transport="grpc", outcome=result.label).inc()
        details = encoding.status(result.grpc_code.value[0], str(exc), result.retry_after,
                                  bad_request=result.grpc_code is grpc.StatusCode.INVALID_ARGUMENT)
        context.set_trailing_metadata((("grpc-status-details-bin", details.SerializeToString()),))
        context.abort(result.grpc_code, details.message)  # as cut and made valid UTF-8 there: they must agree
