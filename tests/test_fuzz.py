"""Fuzzing both transports with mutated and random protobuf and JSON bodies: the
collector never crashes, hangs or answers 5xx, and valid spans sent in between land.

CI runs a few thousand cases; ``SPANHOUSE_FUZZ_EXAMPLES=50000`` runs a longer campaign."""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spanhouse.clickhouse import Store
from tests.collector_harness import Running, grpc_export, running_collector
from tests.otlp import request, span, trace_id
from tests.test_collector import SPEC_EXAMPLE

EXAMPLES = int(os.environ.get("SPANHOUSE_FUZZ_EXAMPLES", "2000"))
SEED_BODY = request([
    span("seed", trace_id(), attributes={"s": "v", "i": 1, "d": 0.5, "b": True, "a": ["x", 2], "m": {"k": [1]}},
         events=[(1_700_000_000_000_000_001, "e", {"k": "v"})], error="boom"),
]).SerializeToString()
SEED_JSON = json.dumps(SPEC_EXAMPLE).encode()


def _mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, val in ops:
        if not buf:
            break
        i = pos % len(buf)
        if kind == 0:
            buf[i] ^= 1 << (val % 8)
        elif kind == 1:
            buf[i] = val % 256
        elif kind == 2:
            del buf[i:i + 1 + val % 8]
        else:
            buf[i:i] = bytes([val % 256]) * (1 + val % 4)
    return bytes(buf)


mutations = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1,
                     max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["resourceSpans", "scopeSpans", "spans", "traceId", "spanId", "name", "attributes", "key",
                         "value", "stringValue", "intValue", "arrayValue", "values", "kvlistValue", "kind",
                         "startTimeUnixNano", "endTimeUnixNano", "events", "links", "status", "code"]) | st.text(max_size=8),
        inner, max_size=5),
    max_leaves=30)
bodies = st.one_of(
    mutations.map(lambda ops: ("protobuf", _mutate(SEED_BODY, ops))),
    st.binary(max_size=300).map(lambda b: ("protobuf", b)),
    mutations.map(lambda ops: ("json", _mutate(SEED_JSON, ops))),
    json_values.map(lambda v: ("json", json.dumps(v).encode())),
)


class Tracker:
    """Sends a valid request every few cases and remembers its span names."""

    def __init__(self, c: Running) -> None:
        self.c = c
        self.cases = 0
        self.valid: list[str] = []

    def check(self, kind: str, body: bytes, client: httpx.Client) -> None:
        content_type = "application/x-protobuf" if kind == "protobuf" else "application/json"
        r = client.post(self.c.http_url, content=body, headers={"content-type": content_type, **self.c.headers()})
        assert r.status_code in (200, 400), (r.status_code, r.content[:200])
        if kind == "protobuf":
            code, _, err = grpc_export(self.c.grpc_target, body, self.c.key)
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, err)
        self.cases += 1
        if self.cases % 50 == 0:
            name = f"valid-{self.cases}"
            ok = client.post(self.c.http_url, content=request([span(name, trace_id())]).SerializeToString(),
                             headers={"content-type": "application/x-protobuf", **self.c.headers()})
            assert ok.status_code == 200
            self.valid.append(name)


def test_fuzzed_bodies_never_break_the_collector(store: Store, tmp_path: Path, tenant: str) -> None:
    with running_collector(store, tmp_path, tenant) as c, httpx.Client(timeout=30) as client:
        tracker = Tracker(c)

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(bodies)
        def run(case: tuple[str, bytes]) -> None:
            tracker.check(*case, client)

        run()
        assert httpx.get(c.api_url + "/healthz").status_code == 200
        c.wait_drained(timeout=120)
        quarantined = list((tmp_path / "spool" / "quarantine").glob("*")) if (tmp_path / "spool" / "quarantine").exists() else []
        assert not quarantined, "the store rejected an acknowledged segment"
    stored = {r[0] for r in store.client.query("SELECT SpanName FROM otel_traces WHERE Tenant = {t:String} AND "
                                                "startsWith(SpanName, 'valid-')", parameters={"t": tenant}).result_rows}
    assert tracker.cases >= EXAMPLES * 0.9
    assert stored == set(tracker.valid) and tracker.valid

