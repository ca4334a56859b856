"""The ``spanhouse`` command.

``serve`` runs the collector; ``migrate`` brings a store's schema up to date (or prints
the DDL for a single node or a cluster); ``keys add`` creates an API key; the query
commands (``executions``, ``tools``, ``stats``, ``export``, ``sql``, …) ask a running
collector (see cli_query).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from spanhouse.clickhouse import DEFAULT_DSN, DSN_ENV, RETENTION_ENV, open_store, retention_from_env
from spanhouse.clickhouse.migrations import retention, schema_files
from spanhouse.collector import cli_query, config
from spanhouse.collector.auth import SCOPES, add_key
from spanhouse.errors import SpanhouseError, Stopped


def _dsn_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn", default=os.environ.get(DSN_ENV, DEFAULT_DSN),
        help=f"store: chdb:///path (embedded) or http(s)://user:pass@host:8123/db "
             f"(env {DSN_ENV}; default {DEFAULT_DSN})",
    )


def _migrate(args: argparse.Namespace) -> int:
    days = args.retention_days if args.retention_days is not None else retention_from_env()
    if args.print:  # what a run with the same flags would apply (a cluster's DBA reviews it)
        for m in [*schema_files(), *([retention(days)] if days is not None else [])]:
            print(f"-- {m.name}")
            for stmt in m.statements(args.cluster):
                print(stmt.rstrip() + ";\n")
        return 0
    store = open_store(args.dsn, retention_days=days, cluster=args.cluster)
    store.close()
    print(f"schema of {args.dsn} is up to date")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from spanhouse.collector.server import Collector  # keeps `spanhouse migrate` light

    settings = config.from_args(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # httpx logs every request's whole URL at info: a forwarding destination's
    # credentials and query (api_key=...), once per forwarded request. The forwarder
    # logs what matters about its requests itself, without them.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    collector = Collector(settings)
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        if stop.is_set():  # a second one: stop now, what is left stays in the spool
            logging.getLogger("spanhouse").warning("stopping without draining the spool (a second signal)")
            collector.hurry()
        stop.set()
        collector.ask_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        addresses = collector.start()
    except Stopped as exc:  # told to stop while it waited to start: nothing was listening
        logging.getLogger("spanhouse").info("%s", exc)
        return 0
    if not stop.is_set():  # told to stop while starting: no line saying it listens
        # The one machine-readable startup line (scripts and tests read the ports from it).
        print(json.dumps({"spanhouse": "listening", "host": addresses.host, "grpc_port": addresses.grpc_port,
                          "http_port": addresses.http_port, "api_port": addresses.api_port,
                          "sql_port": addresses.sql_port,
                          "dsn": settings.dsn, "spool_dir": str(settings.resolved_spool_dir)}), flush=True)
    # Woken now and then: a signal that lands on one of the engine's or gRPC's threads only
    # sets a flag, and a main thread blocked in wait() would never run the handler (a
    # SIGTERM under load was lost now and then, and the collector kept running).
    while not stop.wait(0.5):
        pass
    logging.getLogger("spanhouse").info("shutting down within %.0fs: requests under way finish, then the spool "
                                        "drains (a second signal stops at once)", settings.shutdown_timeout)
    drained = collector.stop()
    if not drained:
        logging.getLogger("spanhouse").warning("the spool did not drain completely; it is replayed at the next start")
    return 0


def _keys_add(args: argparse.Namespace) -> int:
    key = add_key(Path(args.file).expanduser(), args.tenant, args.scopes.split(","))  # as serve reads --api-keys
    print(key)
    print(f"added a key for tenant {args.tenant!r} to {args.file}; this is the only time it is shown",
          file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from spanhouse.collector import demo  # the SDK and OTLP exporter are only needed here

    sent, spans = demo.run(args.endpoint, args.api_key, args.executions, args.hours)
    print(f"sent {sent} executions ({spans} spans) to {args.endpoint}; see `spanhouse executions list` or the "
          "Grafana dashboards", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="spanhouse", description="Execution history for AI agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    mig = sub.add_parser("migrate", help="create or update the ClickHouse schema (safe to repeat)")
    _dsn_arg(mig)
    mig.add_argument("--cluster", help="render for this ClickHouse cluster (ON CLUSTER, Replicated*, Distributed)")
    mig.add_argument("--retention-days", type=int,
                     help=f"drop data older than this many days (env {RETENTION_ENV}; default: keep all)")
    mig.add_argument("--print", action="store_true", help="print the DDL instead of running it")
    mig.set_defaults(run=_migrate)
    serve = sub.add_parser("serve", help="run the collector: OTLP gRPC + HTTP receivers, spool, store, API")
    config.add_arguments(serve)
    serve.set_defaults(run=_serve)
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    add = keys.add_parser("add", help="create a key, store its hash in the keys file, print it once")
    add.add_argument("--file", required=True, help="the API keys file (as given to serve --api-keys)")
    add.add_argument("--tenant", required=True, help="the tenant this key writes and reads")
    add.add_argument("--scopes", default="ingest,read", help=f"comma-separated, of {sorted(SCOPES)}")
    add.set_defaults(run=_keys_add)
    cli_query.add_commands(sub)
    demo = sub.add_parser("demo", help="send realistic agent traffic to a running collector")
    demo.add_argument("--endpoint", default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                      help="the collector's OTLP/gRPC endpoint (env OTEL_EXPORTER_OTLP_ENDPOINT)")
    demo.add_argument("--api-key", default=os.environ.get("SPANHOUSE_API_KEY"), help="env SPANHOUSE_API_KEY")
    demo.add_argument("--executions", type=int, default=2000)
    demo.add_argument("--hours", type=float, default=24.0, help="spread the executions over this many past hours")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spanhouse`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except SpanhouseError as exc:
        print(f"spanhouse: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (an export's partial file is gone by now)
        print("spanhouse: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `spanhouse ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0


if __name__ == "__main__":
    sys.exit(main())
