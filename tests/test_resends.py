"""A client's resend of an acknowledged request (its answer was lost) is stored once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from spanhouse.clickhouse import Store
from spanhouse.collector import api
from spanhouse.collector.auth import Principal, add_key
from spanhouse.collector.config import Settings
from spanhouse.collector.ingest import Ingest
from spanhouse.collector.metrics import Metrics
from spanhouse.collector.resends import RecentRequests
from spanhouse.collector.spool import Spool
from spanhouse.errors import ConfigError, SpoolFull
from tests.collector_harness import ServeProcess, grpc_export, metric, running_collector
from tests.otlp import request, span, trace_id


def _delete(url: str, **kwargs: Any) -> httpx.Response:
    """A deletion through the API: its mutations take seconds."""
    return httpx.delete(url, timeout=60, **kwargs)


def _count(store: Store, tenant: str) -> int:
    return int(store.client.command("SELECT count() FROM otel_traces WHERE Tenant = {t:String}",
                                    parameters={"t": tenant}))


def test_a_resend_after_the_clients_deadline_is_acknowledged_and_stored_once(store: Store, tmp_path: Path,
                                                                          tenant: str) -> None:
    """The spool is slow once: the client's deadline passes while the collector still
    writes, and the client (as the OpenTelemetry Collector's exporter does) sends the
    same request again, first while the first copy is still being written, then once
    it is durable, over both transports. Each copy used to be stored: its spans, tokens
    and cost counted two and three times."""
    body = request([span("search", trace_id()), span("answer", trace_id())]).SerializeToString()
    with running_collector(store, tmp_path, tenant) as c:
        spool = c.collector._spool
        assert spool is not None
        append, written = spool.append, threading.Event()

        def slow_append(t: str, payload: bytes) -> None:
            time.sleep(1.5)
            append(t, payload)
            written.set()

        spool.append = slow_append  # type: ignore[method-assign]
        code, _, _ = grpc_export(c.grpc_target, body, c.key, timeout=0.3)
        assert code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert not written.is_set()
        assert grpc_export(c.grpc_target, body, c.key)[0] is grpc.StatusCode.OK  # waits for the first copy
        assert written.is_set()
        spool.append = append  # type: ignore[method-assign]
        r = httpx.post(c.http_url, content=body, headers={"content-type": "application/x-protobuf", **c.headers()})
        assert r.status_code == 200
        c.wait_drained()
        assert metric(c.api_url, "spanhouse_resends_total") == 2
        assert metric(c.api_url, "spanhouse_spans_accepted_total") == 6  # every answer acknowledged its spans
    assert _count(store, tenant) == 2


def test_the_same_request_from_another_tenant_or_with_the_window_off_is_stored(store: Store, tmp_path: Path,
                                                                              tenant: str) -> None:
    other = tenant + "-other"
    other_key = add_key(tmp_path / "keys", other, ["ingest"])
    body = request([span("lookup", trace_id())]).SerializeToString()
    with running_collector(store, tmp_path, tenant) as c:
        for key in (c.key, other_key):
            assert grpc_export(c.grpc_target, body, key)[0] is grpc.StatusCode.OK
        c.wait_drained()
    assert (_count(store, tenant), _count(store, other)) == (1, 1)

    (tmp_path / "off").mkdir()
    with running_collector(store, tmp_path / "off", tenant, dedup_window=0) as c:
        for _ in range(2):
            assert grpc_export(c.grpc_target, body, c.key)[0] is grpc.StatusCode.OK
        c.wait_drained()
        assert metric(c.api_url, "spanhouse_resends_total") == 0
    assert _count(store, tenant) == 3


class _FullOnce(Spool):
    """A spool that is full for the first record offered to it."""

    refused = False

    def append(self, tenant: str, payload: bytes) -> None:
        if not self.refused:
            self.refused = True
            raise SpoolFull("the spool is full; retry later")
        super().append(tenant, payload)


def test_a_request_the_spool_refused_is_stored_when_sent_again(tmp_path: Path) -> None:
    spool = _FullOnce(tmp_path, max_bytes=1 << 20, seal_after=60.0)
    spool.open()
    try:
        ingest = Ingest(spool, Metrics(), recent=RecentRequests(300))
        message = request([span("ok", trace_id())])
        principal = Principal("t", frozenset({"ingest"}))
        with pytest.raises(SpoolFull):
            ingest.export(message, principal)
        ingest.export(message, principal)
        assert spool.bytes > 0
    finally:
        spool.close()


def test_a_resend_waiting_for_a_copy_that_fails_stores_it_itself() -> None:
    recent = RecentRequests(300)
    key = recent.key("t", b"payload")
    assert recent.begin(key)
    outcome: list[bool] = []
    waiter = threading.Thread(target=lambda: outcome.append(recent.begin(key)))
    waiter.start()
    time.sleep(0.2)
    assert outcome == []  # waits for the copy being stored
    recent.end(key, "t", acknowledged=False)
    waiter.join(5)
    assert outcome == [True]
    recent.end(key, "t", acknowledged=True)
    assert not recent.begin(key)


def test_requests_are_forgotten_after_the_window_or_past_the_limit() -> None:
    recent = RecentRequests(0.3, limit=2)
    keys = [recent.key("t", bytes([i])) for i in range(3)]
    for k in keys:
        assert recent.begin(k)
        recent.end(k, "t", acknowledged=True)
    assert recent.begin(keys[0])  # the oldest, past the limit
    recent.end(keys[0], "t", acknowledged=True)
    assert not recent.begin(keys[2])
    time.sleep(0.35)
    assert recent.begin(keys[2])
    assert recent.key("t", b"x") != recent.key("u", b"x")
    assert RecentRequests(0).key("t", b"x") is None


def test_spans_deleted_and_sent_again_are_stored_again(tmp_path: Path) -> None:
    """A replayed file (the same bytes) after its execution was deleted was acknowledged
    as a resend and stored nowhere. A deletion forgets the tenant's recent requests;
    another tenant's stay remembered. A collector with a store of its own: a deletion on
    the session's large store takes ~25 s."""
    t = trace_id()
    body = request([span("invoke_agent triage", t)]).SerializeToString()
    keys = tmp_path / "keys"
    mine, other = add_key(keys, "acme", ["ingest", "read", "admin"]), add_key(keys, "globex", ["ingest", "read"])
    serve = ServeProcess(tmp_path / "store", "--api-keys", str(keys))
    target = f"127.0.0.1:{serve.start()['grpc_port']}"
    execution = f"{serve.api_url}/api/v1/executions/{t.hex()}"

    def stored_spans(key: str) -> int:
        found = httpx.get(execution, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        return int(found.json()["spans"]) if found.status_code == 200 else 0

    def sent_and_stored() -> None:
        for key in (mine, other):
            assert grpc_export(target, body, key)[0] is grpc.StatusCode.OK
        deadline = time.monotonic() + 30
        while stored_spans(mine) == 0 or stored_spans(other) == 0:
            assert time.monotonic() < deadline, "the spans were not stored"
            time.sleep(0.1)

    try:
        sent_and_stored()
        r = _delete(execution, headers={"Authorization": f"Bearer {mine}"})
        assert r.status_code == 200 and r.json()["spans"] == 1
        sent_and_stored()
        assert metric(serve.api_url, "spanhouse_resends_total") == 1  # the other tenant's
        assert (stored_spans(mine), stored_spans(other)) == (1, 1)
    finally:
        assert serve.terminate() == 0


@pytest.mark.parametrize(("outcome", "forgets"), [
    ({"executions": 1, "spans": 2}, True),
    # an execution still running has only its start marker, which the span count leaves
    # out: forgot nothing, and the marker sent again was acknowledged and stored nowhere
    ({"executions": 1, "spans": 0}, True),
    ({"feedback": 1, "spans": 1}, True),  # feedback sent over OTLP: its span went
    # a bulk delete that matched nothing, an API feedback item (no span): forgot all the
    # tenant's requests, whose resends were then stored twice
    ({"executions": 0, "spans": 0}, False), ({"feedback": 1, "spans": 0}, False), (None, False),
    # failed after its DELETE statements ran (a rollup's rebuild, a stop between chunks):
    # skipped the forgetting, and a retried DELETE is a 404
    (RuntimeError("injected: ClickHouse failed rebuilding a rollup"), True),
])
def test_a_deletion_forgets_once_it_removed_something_or_failed(outcome: object, forgets: bool) -> None:
    """The rule every deletion endpoint applies (``api._delete``); the whole path, a
    deletion through the API and the same bytes sent again, is the test above (each
    deletion on the session's store takes ~25 s in the full suite)."""
    recent = RecentRequests(300)
    key = recent.key("t", b"payload")
    assert recent.begin(key)
    recent.end(key, "t", acknowledged=True)
    other = recent.key("u", b"payload")
    assert recent.begin(other)
    recent.end(other, "u", acknowledged=True)
    ctx = api.ApiContext(None, None, recent)  # type: ignore[arg-type]  # _delete reads only ctx.recent

    def run() -> object:
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    if isinstance(outcome, Exception):
        with pytest.raises(RuntimeError):
            api._delete(ctx, "t", run)
    else:
        assert api._delete(ctx, "t", run) == outcome
    assert recent.begin(key) is forgets
    assert not recent.begin(other)  # another tenant's requests stay remembered


@pytest.mark.parametrize("window", [-1, 3601])
def test_a_dedup_window_out_of_range_is_refused(window: float) -> None:
    with pytest.raises(ConfigError, match="--dedup-window"):
        Settings(dedup_window=window).validate({})
