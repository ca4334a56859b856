"""``spanhouse serve``: the collector process, wired the OpenTelemetry Collector way.

    receivers (otlp_grpc, otlp_http) -> ingest (auth, validate, spool) -> exporter (ClickHouse)

plus the query API and the read-only SQL endpoint. Start order: store (migrations), spool (recovery), exporter, then the
listeners; the machine-readable startup line is printed only when all are listening.
Shutdown (SIGTERM/SIGINT): stop listening and finish in-flight requests, seal the
spool, drain it into the store within ``shutdown_timeout``, exit 0; what did not drain
stays in the spool for the next start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from spanhouse.clickhouse import Store, connect, open_store
from spanhouse.clickhouse.client import embedded_path, store_identity
from spanhouse.clickhouse.migrations import remove_retention
from spanhouse.clickhouse.pool import ClientPool
from spanhouse.clickhouse.store import READERS
from spanhouse.collector.api import ApiContext, create_app
from spanhouse.collector.auth import KeyRing
from spanhouse.collector.config import Settings
from spanhouse.collector.exporter import ClickHouseExporter, migrated, replay_before_migrating
from spanhouse.collector.ingest import Ingest
from spanhouse.collector.metrics import Metrics
from spanhouse.collector.resends import RecentRequests
from spanhouse.collector.otlp_grpc import GrpcReceiver
from spanhouse.collector.otlp_http import HttpReceiver
from spanhouse.collector.forward import Forwarder, Transport, forwarders
from spanhouse.collector.spool import Segment, Spool, holds_segments, write_atomic
from spanhouse.collector.sql_http import SqlEndpoint
from spanhouse.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Addresses:
    """Where a running collector listens."""

    host: str
    grpc_port: int
    http_port: int
    api_port: int
    sql_port: int


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # asyncio turns Nagle's algorithm off only on connections of a socket whose proto is
    # IPPROTO_TCP: without it a response's body waited ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}; pick another port (0 picks a free one)") from exc
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


class Collector:
    """A collector that can be started, and stopped gracefully, in this process."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        """``store``: an already open store to use (and leave open) instead of ``settings.dsn``."""
        settings.validate()
        self.settings = settings
        self.metrics = Metrics()
        self._keys = KeyRing.load(settings.api_keys)
        self._own_store = store is None
        self._store: Store | None = store
        self._spool: Spool | None = None
        self._exporter: ClickHouseExporter | None = None
        self._grpc: GrpcReceiver | None = None
        self._servers: list[uvicorn.Server] = []
        self._loop_thread: threading.Thread | None = None
        self._stopping = False
        self._hurry = threading.Event()
        self._stop_asked = threading.Event()
        self._forwarders: list[Forwarder] = []
        self._sql_clients: ClientPool | None = None
        self._api_context: ApiContext | None = None

    @property
    def store(self) -> Store:
        assert self._store is not None, "start() first"
        return self._store

    def start(self) -> Addresses:
        """Open everything and start listening; returns the bound ports. A start that
        fails stops what it had started, the spool directory's lock included (what
        reached the spool stays there): fixed settings can then start in this process."""
        if self._spool is not None:
            raise RuntimeError("a Collector starts once; make a new one to start again")
        try:
            return self._start()
        except BaseException:
            self._hurry.set()
            self.stop()
            raise

    def _start(self) -> Addresses:
        s = self.settings
        # The spool's directory first: a start refused because another collector holds
        # it must change nothing there (forwarders() clears leftover backlogs in it; they
        # were the running collector's own) nor in the store.
        self._spool = Spool(s.resolved_spool_dir, max_bytes=s.spool_max_bytes, segment_bytes=s.batch_bytes,
                            seal_after=s.batch_delay, on_seal=self._forward)
        self._spool.lock()
        bound = _SpoolStore(s.resolved_spool_dir, s.dsn)
        bound.refuse_another()  # before anything in the spool's directory changes
        self._forwarders = forwarders(s.forward_otlp, s.resolved_spool_dir, s.forward_max_bytes, self.metrics,
                                      Transport.load(s.forward_compression, s.forward_ca_file))
        report = self._spool.open()
        if report.segments:
            log.info("spool: replaying %d segment(s) with %d request(s); %d torn byte(s) cut",
                     report.segments, report.records, report.torn_bytes)
        if self._store is None:
            if report.segments:  # into the schema it may have been written through (see replay_before_migrating)
                replay_before_migrating(s.dsn, self._spool, s.resolved_spool_dir, self.metrics, self._stop_asked)
            self._store = open_store(s.dsn, retention_days=s.retention_days, stopping=self._stop_asked)
            migrated(s.resolved_spool_dir)
            # The collector owns the retention setting, so unset means keep everything: a
            # TTL left by an earlier --retention-days goes. (Other openers of a store, such
            # as the SDK's store exporter, leave the tables' TTLs alone.)
            if s.retention_days is None and (kept := remove_retention(self._store.client)):
                log.info("retention is unset: data is kept again in %s", ", ".join(kept))
        bound.record()  # the store opened: a mistyped --dsn's failed start named none
        self._exporter = ClickHouseExporter(self._spool, self._store.writer, self.metrics)
        self._exporter.start()
        for forwarder in self._forwarders:
            forwarder.start()
        recent = RecentRequests(s.dedup_window)
        ingest = Ingest(self._spool, self.metrics, max_held_bytes=2 * s.max_request_bytes, recent=recent)
        socks: list[socket.socket] = []
        try:
            for port in (s.http_port, s.api_port, s.sql_port):
                socks.append(_bind(s.host, port))
            return self._listen(ingest, *socks)
        except BaseException:
            # Closed here, not whenever the failed frame is collected: an error kept alive
            # (a caller's, a log record's) kept the ports, and fixed settings could not start.
            for sock in socks:
                sock.close()
            raise

    def _listen(self, ingest: Ingest, http_sock: socket.socket, api_sock: socket.socket,
                sql_sock: socket.socket) -> Addresses:
        """Start the receivers, the API and the SQL endpoint on their bound sockets."""
        s = self.settings
        self._grpc = GrpcReceiver(ingest, self._keys, self.metrics, s.host, s.grpc_port, s.max_request_bytes)
        if not self._grpc.port:
            raise ConfigError(f"cannot listen for gRPC on {s.host}:{s.grpc_port}; pick another --grpc-port")
        # Started as soon as it is bound: grpcio keeps the port of a server that never
        # started for the life of the process, stopped or not, so a start failing after
        # this point could not free it for the corrected settings.
        self._grpc.start()
        http = HttpReceiver(ingest, self._keys, self.metrics, s.max_request_bytes)
        self._api_context = ApiContext(self._store, self._keys, ingest.recent)
        api = create_app(self._api_context, self.metrics, self._readiness)
        # Its own connections: read-only settings must never reach the sessions that ingest or serve the API.
        dsn, prunes = self.store.dsn, self.store.prunes_partitions
        self._sql_clients = ClientPool(lambda: connect(dsn, prune_partitions=prunes), READERS)
        sql = SqlEndpoint(self._sql_clients, self._keys)
        self._serve_asgi([(http.app, http_sock), (api, api_sock), (sql.app, sql_sock)])
        return Addresses(s.host, self._grpc.port, http_sock.getsockname()[1], api_sock.getsockname()[1],
                         sql_sock.getsockname()[1])

    def _forward(self, segment: Segment) -> None:
        for forwarder in self._forwarders:
            forwarder.adopt(segment)

    def _serve_asgi(self, apps: list[tuple[object, socket.socket]]) -> None:
        """Run the ASGI apps on one event loop in a background thread; wait until they listen."""
        self._servers = [
            uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                          timeout_graceful_shutdown=self.settings.shutdown_timeout))
            for app, _ in apps
        ]

        async def main() -> None:
            await asyncio.gather(*(srv.serve(sockets=[sock]) for srv, (_, sock) in zip(self._servers, apps)))

        self._loop_thread = threading.Thread(target=asyncio.run, args=(main(),), name="spanhouse-http", daemon=True)
        self._loop_thread.start()
        while not all(srv.started for srv in self._servers):
            if not self._loop_thread.is_alive():
                raise ConfigError("the HTTP listeners failed to start; see the log above")
            threading.Event().wait(0.01)

    def _readiness(self) -> tuple[bool, str]:
        """Whether requests are accepted now, and what an operator should know. A store
        refusing inserts is said but is no reason to be unready: the spool exists to
        take data through that (as the OpenTelemetry Collector stays ready while an
        exporter fails), and a load balancer taking every replica out would lose it."""
        if self._stopping:
            return False, "shutting down"
        refusing = self._spool.refusing if self._spool is not None else None
        if refusing is not None:
            return False, refusing
        if self._exporter is not None and not self._exporter.healthy:
            return True, "ClickHouse is refusing inserts; data is kept in the spool"
        return True, ""

    def ask_stop(self) -> None:
        """Say a stop is coming (a signal): a start still waiting for another migrator's
        lock on the store gives up (``Stopped``) rather than wait up to its 10 minutes."""
        self._stop_asked.set()

    def hurry(self) -> None:
        """Make a ``stop`` under way end without draining the spool (a second signal):
        what is left stays there for the next start."""
        self._hurry.set()

    def stop(self) -> bool:
        """Graceful shutdown within ``shutdown_timeout`` in all: requests under way finish,
        then the spool drains for what is left of it; True if it drained completely."""
        deadline = time.monotonic() + self.settings.shutdown_timeout

        def left() -> float:
            return 0.0 if self._hurry.is_set() else max(0.0, deadline - time.monotonic())

        self._stopping = True
        for forwarder in self._forwarders:  # their backlogs wait on disk for the next start
            forwarder.request_stop()
        if self._grpc is not None:
            self._grpc.stop(grace=min(5.0, left()))
        if self._api_context is not None:
            self._api_context.stopping.set()
        for srv in self._servers:
            srv.should_exit = True
        while self._loop_thread is not None and self._loop_thread.is_alive() and left() > 0:
            self._loop_thread.join(timeout=0.1)  # in slices: a second signal (hurry) ends the wait
        if self._sql_clients is not None and self._store is not None:
            # Queries still running (a long one, a client that went away): see close_pool.
            self._store.close_pool(self._sql_clients)
        drained = True
        if self._spool is not None:
            self._spool.seal()  # nothing is appended any more: hand the active segment to the exporter
        if self._exporter is not None:
            drained = self._exporter.stop(left(), self._hurry)
        if self._spool is not None:
            self._spool.close()
        for forwarder in self._forwarders:
            forwarder.join(left())
        if self._store is not None and self._own_store:
            self._store.close()
        return drained


_STORE_FILE = "store"
"""In the spool's directory: the store (``store_identity``) its segments are for."""


class _SpoolStore:
    """The store a spool's segments are for. A spool review acknowledged spans for one
    store, stopped with them spooled and started with another ``--dsn`` on the same spool
    directory (the default for every server DSN): they went to the second store without
    a word. A spool inside an embedded store's data directory (its default) records the
    store by where it is from the spool (``chdb:..``), so that it moves with the store."""

    def __init__(self, spool_dir: Path, dsn: str) -> None:
        self._spool_dir = spool_dir
        self._path = spool_dir / _STORE_FILE
        data_dir, here = embedded_path(dsn), spool_dir.resolve()
        inside = data_dir is not None and here.is_relative_to(data_dir)
        self._store = f"chdb:{os.path.relpath(data_dir, here)}" if inside else store_identity(dsn)
        self._same = {self._store, store_identity(dsn)}  # an inside spool recorded absolutely by an earlier start

    def refuse_another(self) -> None:
        """``ConfigError`` if the spool holds segments recorded for another store."""
        bound = self._recorded()
        if bound and bound not in self._same and holds_segments(self._spool_dir):
            raise ConfigError(f"the spool in {self._spool_dir} holds segments acknowledged for the store {bound}, "
                              f"not {self._store}: start with that store's --dsn to store them first, or give this "
                              f"one a --spool-dir of its own (if it is that store moved, delete {self._path})")

    def record(self) -> None:
        """Record the store (once it opened: a failed start with a mistyped DSN named none)."""
        if self._recorded() != self._store:
            write_atomic(self._path, self._store)

    def _recorded(self) -> str:
        try:
            return self._path.read_text().strip() if self._path.exists() else ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {self._path}, the store the spool's segments are for ({exc}): "
                              "mend or delete it") from exc
