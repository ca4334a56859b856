"""The collector's Prometheus metrics (``/metrics`` on the API port).

One registry per collector instance, so several collectors in one process (tests)
keep separate counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Counters and gauges named ``spanhouse_*``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("spanhouse_requests", "OTLP export requests by transport and outcome (a gRPC "
                                "message over the size limit is refused by grpcio before the collector sees it, "
                                "uncounted)", ["transport", "outcome"], registry=r)
        self.spans_received = Counter("spanhouse_spans_received", "Spans in decoded export requests that were "
                                      "answered: accepted plus rejected (a request asked to retry counts in "
                                      "spanhouse_backpressure_events_total instead; one larger than the spool "
                                      "can ever hold, answered 413, in spanhouse_requests_total only)", registry=r)
        self.spans_accepted = Counter("spanhouse_spans_accepted", "Spans acknowledged (durable in the spool)",
                                      registry=r)
        self.resends = Counter("spanhouse_resends", "Requests identical to one acknowledged within "
                               "--dedup-window (a client's resend after a lost answer): acknowledged again, "
                               "not stored again (their spans count as accepted)", registry=r)
        self.spans_rejected = Counter("spanhouse_spans_rejected", "Spans rejected, by reason", ["reason"],
                                      registry=r)
        self.backpressure = Counter("spanhouse_backpressure_events", "Requests asked to retry: the spool was full, "
                                    "closed or could not write (a full disk), or the receivers held their bound of "
                                    "request bytes", registry=r)
        self.request_bytes_held = Gauge("spanhouse_request_bytes_held",
                                        "Bytes of OTLP requests the receivers hold (received, decompressed)", registry=r)
        self.spool_bytes = Gauge("spanhouse_spool_bytes", "Bytes held in the spool", registry=r)
        self.spool_segments = Gauge("spanhouse_spool_segments", "Segments held in the spool", registry=r)
        self.store_healthy = Gauge("spanhouse_store_healthy", "1 while ClickHouse takes inserts, 0 while it refuses "
                                   "them (data waits in the spool)", registry=r)
        self.insert_batches = Counter("spanhouse_insert_batches", "Spool segments inserted into ClickHouse",
                                      registry=r)
        self.insert_errors = Counter("spanhouse_insert_errors", "Failed inserts, by kind (lost: a spool segment "
                                     "whose file something else removed)", ["kind"], registry=r)
        self.insert_seconds = Histogram("spanhouse_insert_seconds", "Insert latency per spool segment",
                                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.forward_sent = Counter("spanhouse_forward_sent", "Requests forwarded, by destination (as clients "
                                    "sent them: several can go in one merged request)",
                                    ["destination"], registry=r)
        self.forward_rejected = Counter("spanhouse_forward_rejected",
                                        "Forwarded requests a destination refused for good", ["destination"], registry=r)
        self.forward_rejected_spans = Counter("spanhouse_forward_rejected_spans",
                                              "Spans a destination took a forwarded request without (partial success)",
                                              ["destination"], registry=r)
        self.forward_failed_attempts = Counter("spanhouse_forward_failed_attempts",
                                               "Forwarded requests a destination failed and that are retried "
                                               "(unreachable, timed out, or asked to retry)", ["destination"],
                                               registry=r)
        self.forward_dropped_bytes = Counter("spanhouse_forward_dropped_bytes",
                                             "Bytes not forwarded: a destination fell too far behind, or a "
                                             "segment could not be handed to it",
                                             ["destination"], registry=r)
        self.forward_backlog = Gauge("spanhouse_forward_backlog_bytes", "Bytes waiting to be forwarded",
                                     ["destination"], registry=r)
        self.exact_path_batches = Counter("spanhouse_exact_path_batches",
                                          "Batches the SQL fast path could not render exactly", registry=r)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
