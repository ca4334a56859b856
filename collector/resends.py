"""Recognise a client's resend of a request the collector already acknowledged.

OTLP delivery is at-least-once: an exporter whose answer was lost (a gRPC deadline or
an HTTP timeout passed while the collector was still writing the spool) sends the same
request again, and each copy would count its spans, tokens and cost again. Phoenix and
Langfuse store a span once whatever the number of deliveries; spanhouse keeps the
OpenTelemetry Collector's table layout, where a span cannot be replaced, so it stops
the copy before the spool instead: OpenTelemetry's exporters retry with the very bytes
they sent first, and a request whose spooled payload and tenant hash like one
acknowledged within the window is acknowledged again without being stored again.

Kept in memory: after a restart the first resend is stored (at-least-once, as before).
A deletion through the API that removed spans forgets its tenant's requests (``forget``):
spans deleted and then sent again are stored again (and so, within the window, is a
resend of another of the tenant's requests: a key does not say which traces it held).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict

MAX_REMEMBERED = 65_536
"""Acknowledged requests remembered at most (~220 bytes each, 14 MiB in all). The
OpenTelemetry Collector's exporters resend after 5, 10, 20, 30 s ... for up to 5
minutes (the default window); the SDKs' exporters within their 10 s timeout. At the
largest rate one collector takes here (~500 requests of 100 spans a second) this keeps
the last ~2 minutes."""


class RecentRequests:
    """The keys of the requests acknowledged in the last ``window`` seconds (at most
    ``MAX_REMEMBERED``, oldest forgotten first), and of those being stored right now: a
    resend that arrives while its first copy is still being written (the client's
    deadline passed because the spool was slow) waits for that copy's outcome. A
    window of 0 remembers nothing and lets every request through."""

    def __init__(self, window: float, limit: int = MAX_REMEMBERED) -> None:
        self._window = window
        self._limit = limit
        self._acked: OrderedDict[bytes, tuple[float, str]] = OrderedDict()  # key -> (when acknowledged, tenant)
        self._storing: dict[bytes, threading.Event] = {}
        self._lock = threading.Lock()

    def key(self, tenant: str, payload: bytes) -> bytes | None:
        """128 bits of SHA-256 over the tenant and the spooled payload (the same spans
        of another tenant are another request), or None with a window of 0. SHA-256,
        not a checksum: a collision would drop a request (~1e-29 for two within the
        window)."""
        if self._window <= 0:
            return None
        h = hashlib.sha256(tenant.encode())
        h.update(b"\0")
        h.update(payload)
        return h.digest()[:16]

    def begin(self, key: bytes | None) -> bool:
        """True if the caller is to store this request, and then must call ``end``;
        False if it is a resend of one acknowledged (or acknowledged meanwhile)."""
        if key is None:
            return True
        while True:
            with self._lock:
                self._forget(time.monotonic())
                if key in self._acked:
                    return False
                other = self._storing.get(key)
                if other is None:
                    self._storing[key] = threading.Event()
                    return True
            other.wait()  # then acknowledged (False next round) or failed (this copy stores)

    def end(self, key: bytes | None, tenant: str, acknowledged: bool) -> None:
        """The outcome of a ``begin`` that returned True: ``acknowledged`` once durable."""
        if key is None:
            return
        with self._lock:
            now = time.monotonic()
            if acknowledged:
                self._acked[key] = (now, tenant)
                self._acked.move_to_end(key)
                self._forget(now)
            self._storing.pop(key).set()

    def forget(self, tenant: str) -> None:
        """Forget ``tenant``'s acknowledged requests: its data was deleted, and the same
        spans sent again (a replayed file, a test's fixture) must be stored again, not
        acknowledged as already stored. Called once the deletion is done."""
        with self._lock:
            for key in [k for k, (_, t) in self._acked.items() if t == tenant]:
                del self._acked[key]

    def _forget(self, now: float) -> None:
        while self._acked:
            key, (at, _) = next(iter(self._acked.items()))
            if len(self._acked) <= self._limit and now - at < self._window:
                return
            del self._acked[key]
