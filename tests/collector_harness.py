"""Running collectors in tests: in this process (sharing the session store) or as a
real ``spanhouse serve`` child process (for kill -9 and signal tests)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx

from spanhouse.clickhouse import IngestItem, Store
from spanhouse.collector.auth import add_key
from spanhouse.collector.config import Settings
from spanhouse.collector.server import Addresses, Collector
from spanhouse.errors import StoreUnavailable

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass
class Running:
    """A collector under test and what a client needs to reach it."""

    collector: Collector
    addresses: Addresses
    key: str
    tenant: str

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.addresses.http_port}/v1/traces"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.addresses.api_port}"

    @property
    def sql_url(self) -> str:
        return f"http://127.0.0.1:{self.addresses.sql_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.addresses.grpc_port}"

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}

    def wait_drained(self, timeout: float = 30.0) -> None:
        """Until every acknowledged request is in the store."""
        spool = self.collector._spool
        assert spool is not None
        deadline = threading.Event()
        waited = 0.0
        while waited < timeout:
            if spool.segment_count == 0 and spool.bytes == 0:
                return
            deadline.wait(0.05)
            waited += 0.05
        raise AssertionError(f"spool not drained after {timeout}s: {spool.segment_count} segments")


class FaultyWriter:
    """A writer that fails like an unreachable ClickHouse (or with ``error()``) until ``heal()``."""

    def __init__(self, real: Any, error: Callable[[], Exception] = lambda: StoreUnavailable(
            "injected fault: ClickHouse is down")) -> None:
        self._real = real
        self._error = error
        self.broken = True
        self.attempts = 0

    @property
    def exact_batches(self) -> int:
        return self._real.exact_batches

    def heal(self) -> None:
        self.broken = False

    def write(self, items: list[IngestItem], token: str | None = None) -> None:
        self.attempts += 1
        if self.broken:
            raise self._error()
        self._real.write(items, token)


@contextmanager
def running_collector(store: Store, tmp_path: Path, tenant: str, *, scopes: str = "ingest,read",
                      **overrides: Any) -> Iterator[Running]:
    """A collector on free loopback ports, using ``store``, with one API key for ``tenant``."""
    keys = tmp_path / "keys"
    key = add_key(keys, tenant, scopes.split(","))
    settings = Settings(dsn=store.dsn, grpc_port=0, http_port=0, api_port=0, sql_port=0, api_keys=keys,
                        spool_dir=tmp_path / "spool", **{"batch_delay": 0.2, **overrides})
    collector = Collector(settings, store=store)
    addresses = collector.start()
    try:
        yield Running(collector, addresses, key, tenant)
    finally:
        collector.stop()


def grpc_export(target: str, body: bytes, key: str | None, timeout: float = 10.0,
                compression: grpc.Compression | None = None) -> tuple[grpc.StatusCode, bytes | None, Any]:
    """One raw Export call: (code, response bytes or None, the RpcError or None)."""
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 256 << 20)]) as channel:
        call = channel.unary_unary(EXPORT)
        metadata = (("authorization", f"Bearer {key}"),) if key else ()
        try:
            reply = call(body, metadata=metadata, timeout=timeout, compression=compression)
            return grpc.StatusCode.OK, reply, None
        except grpc.RpcError as err:
            return err.code(), None, err


_STARTED: list[subprocess.Popen[str]] = []
"""Every ``spanhouse serve`` child started in this session (see ``stop_all``)."""


def stop_all() -> None:
    """Kill the ``spanhouse serve`` children still running: a test that fails before it
    stops its collector left it running after the session (idle, holding ~400 MB)."""
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


class ServeProcess:
    """``spanhouse serve`` as a child process with its own embedded store."""

    def __init__(self, data: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.args = [sys.executable, "-m", "spanhouse.collector.cli", "serve", "--dsn", f"chdb://{data}",
                     "--grpc-port", "0", "--http-port", "0", "--api-port", "0", "--sql-port", "0", *extra]
        self.env = {**os.environ, "SPANHOUSE_LOG_LEVEL": "WARNING", **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.ports: dict[str, Any] = {}

    def start(self, timeout: float = 90.0) -> dict[str, Any]:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=self.env)
        _STARTED.append(self.proc)
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            self.proc.kill()
            raise AssertionError(f"collector did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.ports = json.loads(result[0])
        return self.ports

    @property
    def api_url(self) -> str:
        """The started collector's query API (and /metrics)."""
        return f"http://127.0.0.1:{self.ports['api_port']}"

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(timeout)


def run_child(script: str, *args: str, tz: str | None = None) -> subprocess.CompletedProcess[str]:
    """``script`` run by a fresh interpreter with ``args`` (and in time zone ``tz``, if
    given), which must exit 0; its output. For what needs a process of its own: the
    global TracerProvider, an embedded store (one per process), signals, fork."""
    env = None if tz is None else {**os.environ, "TZ": tz}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done


def in_child(script: str, data: Path, *args: str, tz: str | None = None) -> list[str]:
    """The output lines of ``script`` run by ``run_child`` with the DSN of the embedded
    store in ``data`` as ``sys.argv[1]`` and ``args`` after it: a process holds one
    embedded store at a time, so the store must not be open here."""
    return run_child(script, f"chdb://{data}", *args, tz=tz).stdout.splitlines()


_ON_A_STORE_OF_ITS_OWN = """
import importlib, sys
from spanhouse.clickhouse import open_store
module, name = sys.argv[2].rsplit(":", 1)
store = open_store(sys.argv[1])
try:
    getattr(importlib.import_module(module), name)(store, "t-own")
finally:
    store.close()
"""


def on_a_store_of_its_own(body: Callable[[Store, str], None], data: Path) -> None:
    """``body(store, tenant)`` run in a child process with a new embedded store in
    ``data``; its assertion failures fail the caller. For tests that delete: a deletion's
    mutations visit every part of every table, and by the end of the suite the session's
    shared store makes one take ~35 s where a store of its own takes ~3 s."""
    in_child(_ON_A_STORE_OF_ITS_OWN, data, f"{body.__module__}:{body.__qualname__}")


def count_in_store(data: Path, sql: str) -> Any:
    """Run one query against an embedded store in a child process (the store must be closed)."""
    script = ("import sys, json\nfrom spanhouse.clickhouse import connect\n"
              "c = connect(sys.argv[1])\nprint(json.dumps(c.query(sys.argv[2]).result_rows))\n")
    return json.loads(in_child(script, data, sql)[0])


def metric(api_url: str, name: str) -> float:
    """A collector's Prometheus metric ``name`` from ``/metrics``, summed over its labels."""
    text = httpx.get(api_url + "/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))
