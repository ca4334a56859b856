"""OTLP forwarding: every accepted request also goes to other OTLP backends.

Each destination (``--forward-otlp URL``, repeatable; ``grpc://host:port``,
``grpcs://host:port`` (TLS) or ``http(s)://host:port/v1/traces``, optional
``;header=value`` parts, where ``{tenant}`` in a value is the tenant of each request: the destination sees one stream otherwise,
every tenant's spans together; values are percent-decoded, as in
``OTEL_EXPORTER_OTLP_HEADERS``, so '%2C' is a comma and '%3B' a semicolon) has its own
directory under the spool, into which every sealed spool segment is hard-linked as it
is sealed: no copy, no extra write on the acknowledgement path, and the segment
survives the main spool deleting it after its ClickHouse insert. A thread per
destination sends the segment's requests in order and records its progress durably
(``<segment>.pos``), so a restart resumes where it stopped. The record is written (and
fsync'd) after a request once ``PROGRESS_EVERY_S`` has passed since the last one, and
whenever sending stops, not per request: an fsync per request capped forwarding at a
few hundred requests per second, below ingest. So a crash (not a graceful stop)
resends what the destination acknowledged since the last record, about
``PROGRESS_EVERY_S`` of sending: forwarding is at-least-once, like the OTel Collector's
exporters with a persistent queue.

Requests go one at a time, in order; consecutive requests of a tenant are merged into
one of up to ``MERGE_BYTES`` (their encodings concatenated: protobuf merges the repeated
``resource_spans``), so a destination a round trip away takes many per round trip. A
destination that refuses a merged request for good gets its requests one by one.

A slow or dead destination never slows ingest: its backlog is bounded by
``--forward-max-bytes``; past that its oldest segments are dropped, counted in
``/metrics`` and logged, never silently.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import certifi
import grpc
import httpx
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from spanhouse.collector.metrics import Metrics
from spanhouse.collector.spool import SEGMENT_NAME, Record, Segment, intact_records, sequence, sync_dir, write_atomic
from spanhouse.errors import ConfigError

log = logging.getLogger(__name__)

_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# What a destination's refusal means, as the OTLP spec tells clients: these are worth
# retrying, every other error is dropped (counted): retrying it would only hold up the
# requests behind it. RESOURCE_EXHAUSTED is retried only with RetryInfo (throttling).
_RETRYABLE_GRPC = {grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
                   grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS}
_RETRYABLE_HTTP = {429, 502, 503, 504}
_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?")  # a name, IPv4, or IPv6 (brackets gone)
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HEADER_VALUE = re.compile(r"([\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?)?")  # HTTP's: no space at either end
MAX_RETRY_AFTER_S = 60.0  # a destination asking to wait longer is asked again after this
PROGRESS_EVERY_S = 0.5
MERGE_BYTES = 3 << 20
"""Consecutive requests of a tenant are sent as one of up to this many bytes: below the
4 MiB a gRPC server takes by default (the OpenTelemetry Collector's OTLP receiver too)."""
FAILURE_LOG_EVERY_S = 60.0  # a destination that keeps failing is said again this often (counted every time)
_DONE_FILE = "forwarded"  # the sequence number of the last segment finished (sent or dropped)
_SETTLED_FILE = "settled"  # a start dealt with the leftovers while this destination was configured
_IDENTITY_FILE = "destination.json"  # its label (logs) and its URL and header names, hashed (see take_over)
TENANT = "{tenant}"  # in a header value: the tenant of the request being sent


SCHEMES = ("grpc", "grpcs", "http", "https")
COMPRESSIONS = ("none", "gzip")
_GZIP_LEVEL = 1
_HTTP_DEADLINE = 10.0
"""Seconds an HTTP destination has to send its answer's body once its status came."""
_MAX_ANSWER = 1 << 20
"""Bytes of a destination's answer read: a partial success is far shorter."""
_MAX_REDIRECTS = 5
"""zlib's fastest: forwarding shares the machine with ingest. On 3 MiB of the ingest
benchmark's agent spans, level 1 took 14.5 ms (194 MB/s) for 24% of the size, the
default level 6 49.4 ms (57 MB/s) for 18%."""


@dataclass(frozen=True)
class Transport:
    """How every destination is sent to (``--forward-compression``, ``--forward-ca-file``):
    not part of a destination's identity, so changing them keeps its backlog."""

    compression: str = "none"
    ca_pem: bytes = b""  # the CA file as read at start, given to gRPC beside certifi's roots
    ca_context: ssl.SSLContext | None = field(default=None, compare=False)  # https: httpx's roots and the file's

    @classmethod
    def load(cls, compression: str, ca_file: Path | None) -> Transport:
        """``ConfigError`` for a compression not in ``COMPRESSIONS`` or a CA file OpenSSL
        cannot read (checked at start: a TLS failure at each send says less, and late).
        The file is read once, by OpenSSL as it is (comments in any encoding, TRUSTED
        CERTIFICATE blocks; a damaged block refuses the file): replaced or removed later,
        it changes nothing."""
        if compression not in COMPRESSIONS:
            raise ConfigError(f"--forward-compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
        if ca_file is None:
            return cls(compression)
        try:
            pem = ca_file.read_bytes()
            context = httpx.create_ssl_context()
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--forward-ca-file {ca_file}: OpenSSL cannot read it as PEM CA certificates "
                              f"({type(exc).__name__}: {exc})") from None
        return cls(compression, pem, context)

    def verify(self) -> ssl.SSLContext | bool:
        """For https destinations: httpx's own choice of roots (certifi's, or those of
        ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``), with a CA file the same and the file's."""
        return self.ca_context or True

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        """For grpcs destinations: gRPC's own roots (or ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``'s),
        or with a CA file certifi's public roots and the file's (roots given to gRPC
        replace its own)."""
        if not self.ca_pem:
            return grpc.ssl_channel_credentials()
        return grpc.ssl_channel_credentials(root_certificates=Path(certifi.where()).read_bytes() + b"\n" +
                                            self.ca_pem)


@dataclass(frozen=True)
class Destination:
    """Where to forward, and with which headers."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    ordinal: int = 1  # the second, third... destination with this URL (other headers)
    transport: Transport = Transport()

    @classmethod
    def parse(cls, spec: str) -> Destination:
        """``URL[;name=value...]``; ``ConfigError`` for anything else.

        A value is percent-decoded, as ``OTEL_EXPORTER_OTLP_HEADERS`` values are: the
        list of destinations is split on commas and each one on semicolons, so a
        credential holding either could not be passed otherwise."""
        url, *parts = [p.strip() for p in spec.split(";")]
        # Messages name the destination by its label: the URL's credentials and query, and
        # header values, may be secrets, and the message goes to the log.
        try:
            split = urlsplit(url)
            shown = _label(url)  # reads the port: ValueError if it is no number or out of range
            valid = split.scheme in SCHEMES and _usable_host(url, split.scheme, split.hostname or "")
            if split.scheme.startswith("grpc"):  # its target is host:port, nothing else: gRPC took 443, or
                valid = valid and split.port is not None and "@" not in split.netloc  # the user as the host
        except ValueError:  # a port that is no number or out of range, a malformed IPv6 address
            valid, shown = False, "a URL that cannot be parsed"
        if not valid:
            raise ConfigError(f"--forward-otlp {shown}: use grpc://host:port, grpcs://host:port (TLS) or "
                              "http(s)://host:port/v1/traces, optionally followed by ;header=value")
        headers = []
        for part in parts:
            name, sep, value = (x.strip() for x in part.partition("="))
            value = unquote(value)
            if not sep or not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value) \
                    or name.lower().endswith("-bin"):
                raise ConfigError(f"--forward-otlp {shown}: header {name[:64]!r} must look like name=value, the "
                                  "name letters, digits and -_. (not ending in -bin), the value printable ASCII "
                                  "once percent-decoded (write a comma as %2C, a semicolon as %3B, '%' as %25)")
            headers.append((name.lower(), value))
        return cls(url, tuple(headers))

    @property
    def label(self) -> str:
        """The URL without credentials or query, for metrics and logs; ``#2``... after
        it for further destinations with the same URL (header values may be secrets)."""
        url = _label(self.url)
        return url if self.ordinal == 1 else f"{url} #{self.ordinal}"

    @property
    def lineage(self) -> str:
        """What stays when only header values change (a rotated token): the URL and the
        header names, hashed (the URL may hold credentials)."""
        spec = self.url + "".join(f";{name}" for name, _ in sorted(self.headers))
        return hashlib.sha256(spec.encode()).hexdigest()[:16]

    @property
    def key(self) -> str:
        """The name of its directory. Headers count: one URL with two sets of headers (say
        two X-Scope-OrgIDs) is two destinations, each with its own backlog and progress."""
        spec = self.url + "".join(f";{name}={value}" for name, value in self.headers)
        return hashlib.sha256(spec.encode()).hexdigest()[:16]

    def headers_for(self, tenant: str) -> tuple[tuple[str, str], ...]:
        """The headers of one request, ``{tenant}`` in their values replaced."""
        return tuple((name, value.replace(TENANT, tenant)) for name, value in self.headers)


def _usable_host(url: str, scheme: str, host: str) -> bool:
    """Whether the sender can reach ``host``: for http(s) as httpx reads it (IDNA 2008: an
    internationalized name goes out in punycode; one it cannot encode, or a punycode
    name it cannot decode, would fail every send, or kill the forwarder's client); for
    gRPC an ASCII name or address, all its resolver takes (write such a name in
    punycode, ``xn--...``)."""
    if scheme.startswith("grpc"):
        return bool(_HOST.fullmatch(host))
    try:
        parsed = httpx.URL(url)
        return bool(parsed.host) and bool(_HOST.fullmatch(parsed.raw_host.decode("ascii")))
    except (httpx.InvalidURL, UnicodeError):  # IDNA's errors are UnicodeErrors
        return False


def _label(url: str) -> str:
    """``url`` without credentials or query; ``ValueError`` if its port cannot be read."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname or ""
    return f"{parts.scheme}://{host}:{parts.port or ''}{parts.path}"


def _answer(response: httpx.Response) -> bytes:
    """What of ``response``'s body came within ``_HTTP_DEADLINE`` of its status (up to
    ``_MAX_ANSWER`` bytes; nothing if reading it failed). The status says whether the
    request was taken (a 200 whose body broke off was failed, and sent again), and a
    partial success is short: httpx's timeout bounds each read, and a destination
    sending a byte of its body every few seconds held the forwarder (and everything
    behind the request) for good. (Its status line and headers are bounded by each
    read's timeout only: README, limits.)"""
    deadline = time.monotonic() + _HTTP_DEADLINE
    answer = bytearray()
    try:
        for chunk in response.iter_bytes():
            answer += chunk
            if len(answer) > _MAX_ANSWER or time.monotonic() > deadline:  # the rest is not read
                return b""
    except httpx.HTTPError:  # the body cut, stalled or not the gzip it said: the status came
        return b""
    return bytes(answer)


class Sender:
    """One OTLP client: True when the destination took the request (counted as sent) or
    refused it for good (counted as rejected), False when it should be retried, not
    before ``retry_after`` seconds when the destination said so (Retry-After, RetryInfo),
    ``failure`` saying why. ``refused`` says the last request was refused for good."""

    def __init__(self, destination: Destination, metrics: Metrics) -> None:
        self._d = destination
        self._metrics = metrics
        self.retry_after = 0.0
        self.failure = ""
        self.refused = False
        parts = urlsplit(destination.url)
        transport = destination.transport
        self._gzip = transport.compression == "gzip"
        if parts.scheme.startswith("grpc"):
            compression = grpc.Compression.Gzip if self._gzip else None
            self._channel: grpc.Channel | None = (
                grpc.secure_channel(parts.netloc, transport.grpc_credentials(), compression=compression)
                if parts.scheme == "grpcs" else grpc.insecure_channel(parts.netloc, compression=compression))
            self._call = self._channel.unary_unary(_EXPORT)
            self._http: httpx.Client | None = None
        else:
            self._channel = None
            path = parts.path if parts.path not in ("", "/") else "/v1/traces"
            # Redirects are followed by _post (307/308 only).
            self._home = httpx.URL(f"{parts.scheme}://{parts.netloc}")
            self._http = httpx.Client(base_url=self._home, timeout=10.0, verify=transport.verify(),
                                      event_hooks={"request": [self._headers_stay_home]},
                                      headers={"content-type": "application/x-protobuf",
                                               **({"content-encoding": "gzip"} if self._gzip else {})})
            self._path = f"{path}?{parts.query}" if parts.query else path

    def _headers_stay_home(self, request: httpx.Request) -> None:
        """A redirect away from the destination's origin is sent without its headers:
        httpx drops only Authorization there, and a credential in a header of another
        name (x-honeycomb-team, dd-api-key) went to whatever host it was redirected to.
        Like httpx, a move of the same host from http to https keeps them."""
        url, home = request.url, self._home
        upgrade = (home.scheme, url.scheme) == ("http", "https") and home.port in (None, 80) and url.port in (None, 443)
        if url.host != home.host or ((url.scheme, url.port) != (home.scheme, home.port) and not upgrade):
            for name, _ in self._d.headers:
                request.headers.pop(name, None)

    def send(self, payload: bytes, tenant: str, *, merged: int = 0) -> bool:
        """Send one request. A ``merged`` one (that many requests as one) is counted as
        that many sent; refused for good it is neither counted nor logged: its requests
        are sent again one by one."""
        self.retry_after, self.failure, self.refused = 0.0, "", False
        headers = self._d.headers_for(tenant)
        if self._http is not None:
            body = gzip.compress(payload, _GZIP_LEVEL, mtime=0) if self._gzip else payload
            try:
                response, answer_body = self._post(body, headers)
            except (httpx.HTTPError, UnicodeError) as exc:  # UnicodeError: IDNA, were a name to get past parse
                # A connection's message (refused, reset, a certificate) says what to fix; a
                # request's own (a header value, the URL) may quote a secret.
                own = isinstance(exc, (httpx.LocalProtocolError, httpx.InvalidURL, httpx.UnsupportedProtocol,
                                       UnicodeError))
                self.failure = type(exc).__name__ if own else f"{type(exc).__name__}: {str(exc)[:200]}"
                return False
            status = response.status_code
            if 200 <= status < 300:
                self._taken(answer_body, merged)
                return True
            retry, answer = status in _RETRYABLE_HTTP, f"HTTP {status}"
            self.retry_after = _retry_after_header(response.headers.get("retry-after"))
        else:
            try:
                reply = self._call(payload, metadata=headers, timeout=10.0)
            except grpc.RpcError as err:
                code = err.code()  # type: ignore[attr-defined]
                delay = _retry_info(err)
                retry = code in _RETRYABLE_GRPC or (code is grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None)
                answer = code.name
                self.retry_after = delay or 0.0
            else:
                self._taken(reply, merged)
                return True
        if retry:
            self.failure = answer
            return False
        self.refused = True
        if not merged:
            self._metrics.forward_rejected.labels(destination=self._d.label).inc()
            log.error("%s refused a forwarded request for good (%s); it is dropped", self._d.label, answer)
        return True

    def _post(self, body: bytes, headers: tuple[tuple[str, str], ...]) -> tuple[httpx.Response, bytes]:
        """POST ``body``, following a 307/308 (an endpoint that moved) with the same POST
        as the OTel Collector's Go client does, up to ``_MAX_REDIRECTS`` times (a
        301/302/303 would turn it into a GET: its status is the answer); the answer and
        its body (``_answer``). A redirect's own body is not read: httpx read it whole,
        with no deadline and no bound (a review's 200 MiB one, or one a byte at a time)."""
        assert self._http is not None
        request = self._http.build_request("POST", self._path, content=body, headers=dict(headers))
        for _ in range(_MAX_REDIRECTS + 1):
            response = self._http.send(request, stream=True)
            try:
                moved = response.next_request
                if moved is None or response.status_code not in (307, 308):
                    return response, _answer(response)
            finally:
                response.close()
            request = moved
        raise httpx.TooManyRedirects(f"more than {_MAX_REDIRECTS} redirects", request=request)

    def _taken(self, body: bytes, merged: int) -> None:
        """The destination took the request (``merged`` requests, or one): count it, then
        count and log the spans it says it took the request without (the OTel Collector
        logs them too). The request is not sent again, whatever its answer holds: a
        negative count (an int64 a buggy destination sent) made the counter raise after
        the request was taken, and it was sent again for ever."""
        self._metrics.forward_sent.labels(destination=self._d.label).inc(merged or 1)
        try:
            partial = ExportTraceServiceResponse.FromString(body).partial_success
        except DecodeError:  # a destination that answers 2xx with something else: it took the request
            return
        if partial.rejected_spans or partial.error_message:
            self._metrics.forward_rejected_spans.labels(destination=self._d.label).inc(max(partial.rejected_spans, 0))
            log.warning("%s rejected %d spans of a forwarded request: %s", self._d.label, partial.rejected_spans,
                        partial.error_message or "(no message)")

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        if self._http is not None:
            self._http.close()


def _retry_info(err: grpc.RpcError) -> float | None:
    """The delay (seconds, capped) of a ``google.rpc.RetryInfo`` in a gRPC error's status
    details, or None without one."""
    trailers = dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]
    raw = trailers.get("grpc-status-details-bin")
    if not isinstance(raw, bytes):
        return None
    try:
        details = status_pb2.Status.FromString(raw).details
    except DecodeError:
        return None
    for detail in details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return min(max(info.retry_delay.ToTimedelta().total_seconds(), 0.0), MAX_RETRY_AFTER_S)
    return None


def _retry_after_header(value: str | None) -> float:
    """Seconds to wait from an HTTP ``Retry-After`` (seconds or a date; capped), 0 without one."""
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            return 0.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class Forwarder:
    """One destination: its directory of linked segments, its bound and its thread."""

    def __init__(self, destination: Destination, directory: Path, max_bytes: int, metrics: Metrics, *,
                 merge_bytes: int = MERGE_BYTES) -> None:
        self.destination = destination
        self._merge_bytes = merge_bytes
        self._dir = directory
        self._max_bytes = max_bytes
        self._metrics = metrics
        self._lock = threading.Lock()
        self._sending: Path | None = None  # the segment being sent; the bound leaves it alone
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"spanhouse-forward-{destination.key}", daemon=True)
        # Every series from the start: rate() misses a new series' first event.
        for counter in (metrics.forward_sent, metrics.forward_rejected, metrics.forward_rejected_spans,
                        metrics.forward_dropped_bytes, metrics.forward_failed_attempts):
            counter.labels(destination=destination.label)
        self._damage_counted: dict[str, int] = {}  # damaged bytes counted as dropped, by segment
        # The linked segments and their sizes, oldest first, kept as they are linked and
        # removed: listing and measuring the directory at every seal made each seal cost
        # as much as the backlog is long (30,000 segments: acknowledgements' p90 1.5 s).
        self._backlog: dict[Path, int] = {}
        self._backlog_bytes = 0
        self._dir.mkdir(parents=True, exist_ok=True)
        self._done = _done_in(self._dir)
        # Never through a start's leftovers (``settle``), and nothing of its own: only such
        # a destination may take a leftover backlog over. One added at an earlier start
        # and idle since is another destination, not a successor; one whose start
        # stopped (a crash, a refused setting) before its leftovers were dealt with is new.
        self.fresh = not (self._dir / _SETTLED_FILE).exists() and self._done == -1 and not self._segments()
        if _identity(self._dir) != (destination.label, destination.lineage):  # new, or its ordinal moved
            write_atomic(self._dir / _IDENTITY_FILE, json.dumps({"label": destination.label,
                                                                 "lineage": destination.lineage}))
        for path in self._segments():  # finished just before a crash, not yet removed
            if sequence(path.stem) <= self._done:
                _discard(path)
            else:
                self._counted(path)
        with self._lock:  # the backlog on disk, reported (and bounded) from the start, not once data comes
            self._keep_bound()

    def settle(self) -> None:
        """Record that a start dealt with the leftovers while this destination was configured."""
        if not (self._dir / _SETTLED_FILE).exists():
            write_atomic(self._dir / _SETTLED_FILE, "")
        self.fresh = False

    def take_over(self, directory: Path) -> int:
        """Move the backlog of a directory this destination had under other header values
        (a rotated token) into its own, which holds nothing yet: what the old one had not
        sent is sent with the new headers, and what it had finished is not sent again.
        The bytes moved.

        The finished mark is recorded first: after a crash midway, a restart finds this
        directory not new (the rest of the old backlog is then dropped, counted) and
        does not send again what the old one had finished."""
        moved = 0
        with self._lock:
            self.fresh = False
            old_done = _done_in(directory)
            if old_done > self._done:
                write_atomic(self._dir / _DONE_FILE, str(old_done))
                self._done = old_done
            for path in _segments_in(directory):
                target = self._dir / path.name
                if sequence(path.stem) > self._done and not target.exists():
                    pos = path.with_suffix(".pos")
                    if pos.exists():  # copied, not moved: a crash before the segment moves keeps its progress
                        write_atomic(target.with_suffix(".pos"), pos.read_text())
                    os.replace(path, target)
                    moved += self._counted(target)
            sync_dir(self._dir)
            self._keep_bound()
        return moved

    def adopt(self, segment: Segment) -> None:
        """Take a sealed segment (a hard link, so idempotent and cheap), then keep the bound.

        A segment at or below the recorded sequence was forwarded (or dropped) already:
        on a restart the spool hands over every segment it still holds, and those that
        wait for ClickHouse only must not be sent again."""
        target = self._dir / segment.path.name
        with self._lock:
            if sequence(segment.name) <= self._done:
                return
            try:
                linked = not target.exists()
                if linked:
                    os.link(segment.path, target)
                # counted at its size on disk, before anything can fail: a restart's recovery may
                # have cut a damaged tail from the file the link shares since it was first counted
                self._counted(target)
                if linked:
                    sync_dir(self._dir)
                self._keep_bound()
            except OSError as exc:  # e.g. a full disk: this destination misses the segment, ClickHouse does not
                self._metrics.forward_dropped_bytes.labels(destination=self.destination.label).inc(segment.size)
                log.error("forwarding to %s: cannot take segment %s (%s); dropped", self.destination.label,
                          segment.name, exc)
        self._wake.set()

    def _segments(self) -> list[Path]:
        return _segments_in(self._dir)

    def _counted(self, path: Path) -> int:
        """Count a linked segment in the backlog at its size on disk, again if it was
        (the caller holds the lock, or is the constructor); its size."""
        size = path.stat().st_size
        self._backlog_bytes += size - self._backlog.get(path, 0)
        self._backlog[path] = size
        return size

    def _keep_bound(self) -> None:
        """Drop the oldest segments past the bound, never the one being sent: it is in
        flight, and dropping it counted bytes that were sent after all. A segment after
        it is removed without recording it finished, which would mark the one in flight
        finished too for a restart. The caller holds the lock."""
        total = self._backlog_bytes
        segments = sorted(self._backlog, key=lambda p: p.name) if total > self._max_bytes else []
        droppable = [p for p in segments[:-1] if p != self._sending]  # the newest one always stays
        while total > self._max_bytes and droppable:
            oldest = droppable.pop(0)
            size = self._backlog[oldest]
            if not oldest.exists():  # removed by something else: no longer held, and nothing to count
                _discard(oldest)
                self._unlinked(oldest)
                total -= size
                continue
            unsent = _unsent_bytes(oldest, size) - self._damage_counted.pop(oldest.name, 0)
            if self._sending is not None and sequence(oldest.stem) > sequence(self._sending.stem):
                _discard(oldest)
                self._unlinked(oldest)
            else:
                self._finished(oldest)
            total -= size
            self._metrics.forward_dropped_bytes.labels(destination=self.destination.label).inc(unsent)
            log.warning("forwarding to %s is %d bytes behind (bound %d): dropped segment %s (%d bytes not sent)",
                        self.destination.label, total + size, self._max_bytes, oldest.name, unsent)
        self._report_backlog()

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        """Send no further request: the thread records its progress and ends (``join``)."""
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the thread to end. A request in flight to a
        destination that does not answer can outlast it (up to its 10 s timeout): the
        process then ends without that request's progress recorded, and a restart sends
        it again (at-least-once)."""
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        sender = Sender(self.destination, self._metrics)
        backoff = 0.2
        warned_at: float | None = None  # when a failing stretch was last logged; None while sends succeed
        try:
            while not self._stop.is_set():
                segments = self._segments()
                if not segments:
                    self._wake.wait(1.0)
                    self._wake.clear()
                    continue
                with self._lock:
                    self._sending = segments[0]
                try:
                    done = self._forward(segments[0], sender)
                except Exception:  # e.g. a full disk for the progress record: keep the thread, retry later
                    log.exception("forwarding to %s failed; retrying", self.destination.label)
                    done = False
                finally:
                    with self._lock:
                        self._sending = None
                if done:
                    backoff = 0.2
                    if warned_at is not None and not sender.failure:  # a send succeeded, not a segment gone
                        log.info("forwarding to %s works again", self.destination.label)
                        warned_at = None
                    continue
                if sender.failure:  # not a stop: the destination failed a request
                    self._metrics.forward_failed_attempts.labels(destination=self.destination.label).inc()
                    if warned_at is None or time.monotonic() - warned_at >= FAILURE_LOG_EVERY_S:
                        log.warning("forwarding to %s fails (%s); retrying. Its backlog waits on disk meanwhile, "
                                    "bounded by --forward-max-bytes", self.destination.label, sender.failure)
                        warned_at = time.monotonic()
                self._stop.wait(max(backoff, sender.retry_after))
                backoff = min(backoff * 2, 5.0)
        finally:
            sender.close()

    def _forward(self, path: Path, sender: Sender) -> bool:
        """Send one segment from its recorded position; False to retry later."""
        progress = path.with_suffix(".pos")
        try:
            records, _, damaged = intact_records(path.read_bytes())
        except FileNotFoundError:  # dropped by the bound meanwhile, or removed by something else
            with self._lock:
                self._unlinked(path)
            self._report_backlog()
            return True
        if damaged and path.name not in self._damage_counted:  # counted: a drop is never silent
            self._damage_counted[path.name] = damaged
            self._metrics.forward_dropped_bytes.labels(destination=self.destination.label).inc(damaged)
            log.error("forwarding to %s: %d bytes of segment %s are corrupt; its %d intact requests are sent",
                      self.destination.label, damaged, path.name, len(records))
        start = int(progress.read_text()) if progress.exists() else 0
        sent = saved = start
        saved_at = time.monotonic()
        try:
            while sent < len(records):
                if self._stop.is_set():
                    return False
                end = _merge_end(records, sent, self._merge_bytes)
                taken = self._send(sender, records[sent:end])
                sent += taken
                if sent < end:
                    return False
                if time.monotonic() - saved_at >= PROGRESS_EVERY_S:
                    write_atomic(progress, str(sent))
                    saved, saved_at = sent, time.monotonic()
        finally:  # stopped, failed or raised: record what the destination took, unless the bound dropped it
            if saved < sent < len(records) and path.exists():
                write_atomic(progress, str(sent))
        with self._lock:
            self._finished(path)
        self._report_backlog()
        return True

    def _send(self, sender: Sender, group: list[Record]) -> int:
        """Send ``group`` (requests of one tenant) as one request; how many of them the
        destination took (or refused for good) before a failure to retry. A merged
        request it refuses for good (too large for it, say) is sent again one request
        at a time, so only what it refuses alone is dropped."""
        if len(group) == 1:
            return 1 if sender.send(group[0].payload, group[0].tenant) else 0
        if not sender.send(b"".join(r.payload for r in group), group[0].tenant, merged=len(group)):
            return 0
        if not sender.refused:
            return len(group)
        for taken, record in enumerate(group):
            if self._stop.is_set() or not sender.send(record.payload, record.tenant):
                return taken
        return len(group)

    def _finished(self, path: Path) -> None:
        """Done with a segment (sent or dropped): recorded first, so that a restart never
        takes it again, then removed. The caller holds the lock."""
        seq = sequence(path.stem)
        if seq > self._done:
            write_atomic(self._dir / _DONE_FILE, str(seq))
            self._done = seq
        _discard(path)
        self._unlinked(path)

    def _unlinked(self, path: Path) -> None:
        self._backlog_bytes -= self._backlog.pop(path, 0)

    def _report_backlog(self) -> None:
        self._metrics.forward_backlog.labels(destination=self.destination.label).set(self._backlog_bytes)


def _merge_end(records: list[Record], start: int, limit: int) -> int:
    """Where the request merged from ``records[start:]`` ends: the records after it of the
    same tenant while the bytes stay within ``limit`` (one record alone however large).
    Serialized ExportTraceServiceRequests concatenated are one request holding all their
    spans (protobuf merges repeated fields): one round trip for many, where sending each
    as it came capped forwarding at one request per round trip to the destination."""
    end, size = start + 1, len(records[start].payload)
    while end < len(records) and records[end].tenant == records[start].tenant \
            and size + len(records[end].payload) <= limit:
        size += len(records[end].payload)
        end += 1
    return end


def _segments_in(directory: Path) -> list[Path]:
    """The linked segments of a forward directory, oldest first (other files ignored, as the spool does)."""
    return sorted(p for p in directory.glob("*.seg") if SEGMENT_NAME.fullmatch(p.stem))


def _done_in(directory: Path) -> int:
    """The last segment a forward directory records finished, -1 if none."""
    done = directory / _DONE_FILE
    return int(done.read_text()) if done.exists() else -1


def _unsent_bytes(segment: Path, size: int) -> int:
    """The bytes of a linked segment its destination has not taken: all of them, or
    those after its recorded progress (the damaged bytes after its intact requests too)."""
    progress = segment.with_suffix(".pos")
    if not progress.exists():
        return size
    _, ranges, damaged = intact_records(segment.read_bytes())
    return sum(end - start for start, end in ranges[int(progress.read_text()):]) + damaged


def _discard(segment: Path) -> None:
    """Remove a linked segment and its progress record (either may be gone already)."""
    segment.unlink(missing_ok=True)
    segment.with_suffix(".pos").unlink(missing_ok=True)


def forwarders(specs: tuple[str, ...], spool_dir: Path, max_bytes: int, metrics: Metrics,
               transport: Transport = Transport()) -> list[Forwarder]:
    """One forwarder per ``--forward-otlp`` value, each in ``<spool>/forward/<key>``.
    Every value is checked before any directory is made: a start refused for a typo in
    the second value must not leave the first one's directory looking settled."""
    destinations: dict[str, Destination] = {}
    same_url: Counter[str] = Counter()
    for spec in specs:
        d = Destination.parse(spec)
        if d.key in destinations:  # two threads would share one backlog, each sending part of it
            raise ConfigError(f"--forward-otlp {d.label} is given twice (with the same headers)")
        same_url[d.label] += 1
        destinations[d.key] = replace(d, ordinal=same_url[d.label], transport=transport)
    made = {key: Forwarder(d, spool_dir / "forward" / key, max_bytes, metrics) for key, d in destinations.items()}
    _leftovers(spool_dir / "forward", made, metrics)
    for forwarder in made.values():
        forwarder.settle()
    return list(made.values())


def _leftovers(root: Path, made: dict[str, Forwarder], metrics: Metrics) -> None:
    """Backlogs of destinations no longer configured as they were. A directory is keyed
    on its URL and headers, so a rotated token made a new one and the old backlog waited
    on disk for good, unsent and uncounted. A backlog goes to the destination of the same
    URL and header names when it is the only such backlog, that destination the only one
    configured with them, and new (never settled, nothing of its own); otherwise it is
    dropped, its unsent bytes counted and logged.

    Every destination of a URL and header names whose backlogs are dropped is settled
    first: a stop midway must not leave a later start to hand over what this one
    counted as dropped."""
    if not root.is_dir():
        return
    leftovers = {p: _identity(p) for p in sorted(root.iterdir()) if p.is_dir() and p.name not in made}
    heirs: dict[Path, Forwarder] = {}
    for directory, (_, lineage) in leftovers.items():
        matching = [f for f in made.values() if f.destination.lineage == lineage]
        twins = [d for d, (_, other) in leftovers.items() if other == lineage]
        if lineage and len(matching) == 1 and matching[0].fresh and len(twins) == 1:
            heirs[directory] = matching[0]
        else:
            for forwarder in matching:
                forwarder.settle()
    for directory, (label, _) in leftovers.items():
        heir = heirs.get(directory)
        if heir is not None:
            moved = heir.take_over(directory)
            log.warning("forwarding to %s: its header values changed; %d bytes of backlog under the old ones are "
                        "sent with the new ones", heir.destination.label, moved)
        else:
            done = _done_in(directory)
            unsent = sum(_unsent_bytes(p, p.stat().st_size) for p in _segments_in(directory) if sequence(p.stem) > done)
            # Without its identity it is never handed over: a stop before its removal
            # must not let a later start send what is counted here as dropped.
            (directory / _IDENTITY_FILE).unlink(missing_ok=True)
            sync_dir(directory)
            metrics.forward_dropped_bytes.labels(destination=label or "(unknown)").inc(unsent)
            log.warning("forwarding: %d bytes of backlog for %s, which is no longer a --forward-otlp destination, "
                        "are dropped", unsent, label or f"a destination of an earlier version ({directory.name})")
        shutil.rmtree(directory)


def _identity(directory: Path) -> tuple[str, str]:
    """(label, lineage) a forward directory records; empty where it records none."""
    try:
        found = json.loads((directory / _IDENTITY_FILE).read_text())
        return str(found["label"]), str(found["lineage"])
    except (OSError, ValueError, KeyError, TypeError):
        return "", ""
