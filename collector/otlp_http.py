"""OTLP/HTTP receiver: ``POST /v1/traces``, a thin adapter over ``Ingest.export``.

Binary protobuf and OTLP/JSON (dispatched on the media type, parameters ignored),
``Content-Encoding: gzip``, chunked bodies, a size limit applied while reading and again
after decompression, and every answer in the request's encoding; errors come from the
one map in ``collector.errors`` with a ``google.rpc.Status`` body. As in the
OpenTelemetry Collector, an unknown media type is 415 and any method but POST is 405,
both with a plain-text body.
"""

from __future__ import annotations

import logging
import zlib

import anyio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from spanhouse.collector import encoding
from spanhouse.collector.auth import KeyRing, Principal, key_from_headers
from spanhouse.collector.errors import OUTCOMES, outcome
from spanhouse.collector.ingest import Held, Ingest
from spanhouse.collector.metrics import Metrics
from spanhouse.errors import InvalidData, PayloadTooLarge, SpanhouseError, UnsupportedMediaType

log = logging.getLogger(__name__)

_MEDIA_TYPES = (encoding.PROTOBUF, encoding.JSON)
# Every method reaches the handler, which answers all but POST with 405 itself.
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Outcomes of this transport's own, besides the error map's (spanhouse_requests_total).
_OUTCOMES = ("method_not_allowed", "client_disconnected")


def media_type(content_type: str | None) -> str:
    """The media type without parameters, lower-cased."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def content_coding(request: Request) -> str:
    """``gzip`` or ``identity``; any other ``Content-Encoding`` is refused before the body is read."""
    coding = request.headers.get("content-encoding", "identity").strip().lower() or "identity"
    if coding not in ("identity", "gzip"):
        raise UnsupportedMediaType(f"Content-Encoding {coding!r} is not supported; use gzip or none")
    return coding


async def read_body(request: Request, limit: int, held: Held) -> bytes:
    """The request body as sent, refusing more than ``limit`` bytes; what it keeps in
    memory is ``held`` as it arrives."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body has {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
        held.take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


def gunzip(body: bytes, limit: int) -> bytes:
    """``body`` decompressed, refusing more than ``limit`` bytes of output.

    A gzip stream may hold several members one after the other (``cat a.gz b.gz``; RFC
    1952 2.2): all of them are the body, as for ``gzip -d``, so none is dropped after the
    request was acknowledged.
    """
    out = bytearray()
    rest = body
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise InvalidData(f"the body is not valid gzip: {exc}") from exc
        if len(out) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"the decompressed request exceeds the limit of {limit} bytes")
        if not inflater.eof:
            raise InvalidData("the gzip body is truncated")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)


class HttpReceiver:
    """The ASGI app serving ``/v1/traces``."""

    def __init__(self, ingest: Ingest, keys: KeyRing, metrics: Metrics, max_request_bytes: int,
                 concurrency: int = 64) -> None:
        self._ingest = ingest
        self._keys = keys
        self._metrics = metrics
        self._limit = max_request_bytes
        self._threads = anyio.CapacityLimiter(concurrency)
        self.app = Starlette(routes=[Route("/v1/traces", self._traces, methods=_ALL_METHODS)])
        for name in (*OUTCOMES, *_OUTCOMES):  # every series from the start: rate() misses a new one's first event
            self._count(name, 0)

    async def _traces(self, request: Request) -> Response:
        if request.method != "POST":
            self._count("method_not_allowed")
            return PlainTextResponse("405 method not allowed, supported: [POST]", 405, headers={"Allow": "POST"})
        kind = media_type(request.headers.get("content-type"))
        if kind not in _MEDIA_TYPES:
            self._count("unsupported_media_type")
            return PlainTextResponse(
                f"415 unsupported media type, supported: [{encoding.JSON}, {encoding.PROTOBUF}]", 415)
        try:
            principal = self._keys.authenticate(key_from_headers(request.headers.get))
            principal.require("ingest")  # before the body: a key that may not send holds no request bytes
            coding = content_coding(request)
            with self._ingest.hold() as held:
                sent = await read_body(request, self._limit, held)
                # Decompressing and decoding are CPU work (a 25 MiB JSON body takes ~5 s):
                # on the event loop they would stall every HTTP client, the API and health.
                reply = await anyio.to_thread.run_sync(self._export, sent, coding, kind, principal, held,
                                                       limiter=self._threads)
        except ClientDisconnect:  # the client gave up mid-body: nobody to answer, nothing taken
            self._count("client_disconnected")
            return Response(status_code=400)
        except Exception as exc:  # every failure is answered through the one error map
            return self._error(exc, kind)
        self._count("ok")
        return Response(encoding.encode(reply, kind), 200, media_type=kind)

    def _export(self, sent: bytes, coding: str, kind: str, principal: Principal,
                held: Held) -> ExportTraceServiceResponse:
        """Decompress, admit, decode and export one request body (in a worker thread)."""
        body = sent
        if coding == "gzip":
            body = gunzip(sent, self._limit)
            held.take(len(body))
        self._ingest.admit(principal, len(body))
        message, raw = encoding.decode(body, kind)
        return self._ingest.export(message, principal, raw)

    def _error(self, exc: Exception, kind: str) -> Response:
        result = outcome(exc)
        if not isinstance(exc, SpanhouseError):
            log.exception("unexpected error in HTTP export; the client is told to retry")
        self._count(result.label)
        body = encoding.status(result.grpc_code.value[0], str(exc), result.retry_after,
                               bad_request=result.http_status == 400)
        headers = {"Retry-After": str(max(1, round(result.retry_after)))} if result.retry_after else {}
        if result.http_status == 401:  # RFC 9110: a 401 MUST say how to authenticate
            headers["WWW-Authenticate"] = "Bearer"
        return Response(encoding.encode(body, kind), result.http_status, headers=headers, media_type=kind)

    def _count(self, what: str, n: int = 1) -> None:
        self._metrics.requests.labels(transport="http", outcome=what).inc(n)
