"""The ``spanhouse`` command.

Subcommands so far: ``migrate`` (bring a store's schema up to date, or print the DDL
for a single node or a cluster).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from spanhouse.clickhouse import DEFAULT_DSN, DSN_ENV, RETENTION_ENV, open_store, retention_from_env
from spanhouse.clickhouse.migrations import schema_files
from spanhouse.errors import SpanhouseError


def _dsn_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn", default=os.environ.get(DSN_ENV, DEFAULT_DSN),
        help=f"store: chdb:///path (embedded) or http(s)://user:pass@host:8123/db "
             f"(env {DSN_ENV}; default {DEFAULT_DSN})",
    )


def _migrate(args: argparse.Namespace) -> int:
    if args.print:
        for m in schema_files():
            print(f"-- {m.name}")
            for stmt in m.statements(args.cluster):
                print(stmt.rstrip() + ";\n")
        return 0
    retention = args.retention_days if args.retention_days is not None else retention_from_env()
    store = open_store(args.dsn, retention_days=retention, cluster=args.cluster)
    store.close()
    print(f"schema of {args.dsn} is up to date")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spanhouse`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except SpanhouseError as exc:
        print(f"spanhouse: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
