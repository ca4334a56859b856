"""The CLI's query commands: ``executions list|show|delete``, ``feedback
add|show|delete``, ``tools``, ``stats``, ``performance``, ``anomalies``, ``export``,
``sql``.

They talk to a running collector (``--url``, ``--api-key``; env ``SPANHOUSE_URL``,
``SPANHOUSE_API_KEY``), since only the collector may open the embedded store. Output
is a readable table, or the API's JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from string import Formatter
from typing import Any, BinaryIO
from urllib.parse import quote

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from spanhouse import FEEDBACK_ID, TRACE_ID
from spanhouse.collector.client import ApiClient
from spanhouse.errors import ConfigError

_FILTERS = ("status", "service", "name", "type", "user", "session", "since", "until", "min_duration",
            "max_duration", "min_cost", "tool", "has_errors", "q")
# Piped output is not wrapped at 80 columns, so ids stay whole for grep and scripts.
_console = Console() if sys.stdout.isatty() else Console(width=240)


_DEFAULT_URL = "http://127.0.0.1:8080"
_DEFAULT_SQL_URL = "http://127.0.0.1:8124"


def _common(parser: argparse.ArgumentParser, json_help: str | None = "print the API's JSON") -> None:
    """The connection flags, and ``--json`` (saying ``json_help``) unless that is None:
    a command whose output is not a table (export) has no use for it."""
    parser.add_argument("--url", default=os.environ.get("SPANHOUSE_URL", _DEFAULT_URL),
                        help="the collector's API (env SPANHOUSE_URL)")
    parser.add_argument("--api-key", default=os.environ.get("SPANHOUSE_API_KEY"), help="env SPANHOUSE_API_KEY")
    if json_help is not None:
        parser.add_argument("--json", action="store_true", help=json_help)


def _filters(parser: argparse.ArgumentParser) -> None:
    for name in _FILTERS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name)


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(args.url, args.api_key, getattr(args, "sql_url", None))


def _filter_values(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in _FILTERS if getattr(args, name, None) is not None}


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with its control characters shown as ``\\xNN``: span and tool names come
    from the traced code, and an escape sequence in one reached the operator's terminal
    (colours, a window title, an unterminated sequence swallowing the lines after it)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _cell(value: Any) -> str:
    if isinstance(value, float):  # small amounts (costs) keep their significant digits
        return f"{value:.6g}" if abs(value) < 1 else f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, dict)):
        return json.dumps(value)  # escapes control characters itself
    return "" if value is None else printable(str(value))


def table(rows: list[dict[str, Any]], columns: list[str] | None = None, title: str | None = None) -> None:
    """Print dict rows as a table: ``columns``, or every key any row has, in the order
    they first appear (the tips of one list are of kinds with different figures)."""
    if not rows:
        _console.print(f"[dim]{escape(printable(title)) + ': ' if title else ''}nothing found[/dim]")
        return
    rows = [_flat(r) for r in rows]
    cols = columns or list(dict.fromkeys(k for r in rows for k, v in r.items()
                                         if not isinstance(v, (dict, list)) or k == "tools"))
    t = Table(title=None if title is None else Text(printable(title)))
    for c in cols:
        first = next((r[c] for r in rows if r.get(c) is not None), None)
        t.add_column(c, overflow="fold", justify="right" if isinstance(first, (int, float)) else "left")
    for r in rows:
        t.add_row(*(Text(_cell(r.get(c))) for c in cols))  # data, never markup: '[/x]' is a name too
    _console.print(t)


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its nested objects as ``key.field`` columns (a tool's trend)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update({f"{key}.{field}": v for field, v in value.items()})
        else:
            out[key] = value
    return out


def show(data: Any, title: str | None = None) -> None:
    """Print any API answer: lists of rows as tables, scalars as key/value lines."""
    if isinstance(data, list):
        table([d for d in data if isinstance(d, dict)], title=title)
        return
    scalars = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
    if scalars:
        table([{"field": k, "value": _cell(v)} for k, v in scalars.items()], title=title)
    for key, value in data.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            table(value, title=key)
        elif isinstance(value, dict) and value:
            show(value, title=key)


def _emit(args: argparse.Namespace, data: Any, render: Any = show) -> int:
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        render(data)
    return 0


def _list(args: argparse.Namespace) -> int:
    page = _client(args).get("/api/v1/executions", limit=args.limit, cursor=args.cursor, **_filter_values(args))

    def render(data: dict[str, Any]) -> None:
        table(data["items"], ["trace_id", "start_time", "name", "status", "duration_ms", "tool_calls",
                              "failed_tool_calls", "input_tokens", "output_tokens", "cost_usd"],
              title=f"{data['total']} executions")
        if data["next_cursor"]:
            _console.print(f"next page: --cursor {data['next_cursor']}")

    return _emit(args, page, render)


_LABEL_COLUMNS = 40
"""Columns kept for a span's label beside the tree's guides (4 columns a level)."""


def _tree(node: dict[str, Any], into: Tree, levels: int) -> None:
    """Add ``node`` and, down to ``levels`` levels, its subtree. Below that its
    descendants are listed flat, in tree order, under a note: rich prints nothing of a
    node whose guides fill the console's width, so a deep tree lost its lower spans
    without a sign (a chain of 40 showed 19 on an 80-column terminal)."""
    branch = _span(node, into)
    if levels > 1:
        for child in node["children"]:
            _tree(child, branch, levels - 1)
        return
    below, pending = [], list(reversed(node["children"]))
    while pending:
        child = pending.pop()
        below.append(child)
        pending.extend(reversed(child["children"]))
    if len(below) > len(node["children"]):
        branch.add(f"[dim]{len(below)} spans below, listed flat: deeper levels do not fit in "
                   f"{_console.width} columns (--json has the tree)[/dim]")
    for child in below:
        _span(child, branch)


def _span(node: dict[str, Any], into: Tree) -> Tree:
    """One span's line and details (tool arguments and result, model usage)."""
    label = f"{escape(printable(node['name']))}  [dim]{node['duration_ms']:.1f} ms[/dim]"
    if node["status"] == "error":
        label += f"  [red]error[/red] {escape(printable(node.get('status_message') or ''))}"
    branch = into.add(label)
    for part in ("arguments", "result"):  # a failed call has no result: no "result None" line
        if (node.get("tool") or {}).get(part) is not None:
            branch.add(f"[dim]{part}[/dim] {escape(printable(_shortened(str(node['tool'][part]))))}")
    usage = node.get("usage")
    if usage:  # what a model call cost, which the tree otherwise left to --json
        branch.add(f"[dim]usage[/dim] {usage['input_tokens']} input tokens, {usage['output_tokens']} output tokens, "
                   f"{usage['cost_usd']} USD")
    return branch


_SHOWN_CHARS = 2000
"""Characters of a tool's arguments or result the span tree shows: a review's 30 MB
result took 7 minutes to lay out (the terminal's tree folds every line)."""


def _shortened(text: str) -> str:
    """``text`` cut to ``_SHOWN_CHARS``, saying how much more ``--json`` has."""
    if len(text) <= _SHOWN_CHARS:
        return text
    return f"{text[:_SHOWN_CHARS]}… ({len(text) - _SHOWN_CHARS:,} more characters: --json shows them)"


def _trace_id(text: str) -> str:
    """An execution id as an argument. Checked here because it becomes part of a path:
    ``show stream`` reached the live stream and waited on it for ever."""
    if not re.fullmatch(TRACE_ID, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an execution id (a trace id of 32 hex digits)")
    return text


def _show(args: argparse.Namespace) -> int:
    found = _client(args).get(f"/api/v1/executions/{args.trace_id}")

    def render(data: dict[str, Any]) -> None:
        show({k: v for k, v in data.items() if k not in ("spans_tree", "feedback")}, title=data["trace_id"])
        root = Tree("spans")
        levels = max(1, (_console.width - _LABEL_COLUMNS) // 4)
        for node in data["spans_tree"]:
            _tree(node, root, levels)
        _console.print(root)
        table(data["feedback"], title="feedback")

    return _emit(args, found, render)


def _delete(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.trace_id:
        given = [f"--{name.replace('_', '-')}" for name in _filter_values(args)] + (["--before"] if args.before else [])
        if given:  # ignored, they deleted the execution whatever they said (the API refuses them too)
            raise ConfigError(f"a trace id deletes that execution alone: drop {', '.join(given)}, or the id for "
                              "a bulk delete")
        return _emit(args, client.delete(f"/api/v1/executions/{args.trace_id}"))
    if not args.before:
        raise ConfigError("give a trace id, or --before (and filters) for a bulk delete")
    if not args.yes:  # the API counts what it would delete: one rule for which executions those are
        if not sys.stdin.isatty():
            raise ConfigError("a bulk delete asks for confirmation on a terminal; pass --yes to run it without")
        count = client.delete("/api/v1/executions", before=args.before, dry_run="true",
                              **_filter_values(args))["executions"]
        print(f"delete {count} executions? [y/N] ", end="", file=sys.stderr, flush=True)  # stdout is the result
        if sys.stdin.readline().strip().lower() != "y":  # end of input is a no
            return 1
    return _emit(args, client.delete("/api/v1/executions", before=args.before, **_filter_values(args)))


def _feedback_id(text: str) -> str:
    """A feedback id as an argument: checked here, as ``_trace_id`` is, because it
    becomes part of a path."""
    if not re.fullmatch(FEEDBACK_ID, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a feedback id (1-128 letters, digits or _.:-)")
    return text


def _finite(text: str) -> float:
    """A finite number as an argument: 'nan' and 'inf' are floats to Python, and JSON has
    no such number (the request was never sent: a traceback)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _feedback_add(args: argparse.Namespace) -> int:
    body = {"execution_id": args.execution_id, "name": args.name, "comment": args.comment, "user_id": args.user_id,
            "id": args.id, **({"rating": args.rating} if args.rating is not None else {"value": args.value})}
    return _emit(args, _client(args).post("/api/v1/feedback", {k: v for k, v in body.items() if v is not None}))


def _export(args: argparse.Namespace) -> int:
    """Write the export to ``--output`` (or stdout): a regular file whole or not at all
    (``_replace_whole``), a device or FIFO as it comes (never replaced by a file)."""
    chunks = _client(args).stream("/api/v1/export", format=args.format, **_filter_values(args))
    if args.output == "-":
        _copy(chunks, sys.stdout.buffer, None)
        return 0
    if not args.output:
        raise ConfigError("--output is empty: name a file, or - for standard output")
    try:
        target = Path(args.output).resolve()  # a symlink's file is replaced, not the link
    except (OSError, RuntimeError) as exc:  # a symlink loop: RuntimeError before Python 3.13
        raise ConfigError(f"cannot write the export to {args.output}: {exc}") from exc
    if target.is_symlink():  # still a link once resolved: a loop (Python 3.13 resolves it without a word)
        raise ConfigError(f"cannot write the export to {args.output}: a symlink loop")
    if target.is_dir():
        raise ConfigError(f"--output {args.output} is a directory; name a file in it")
    try:
        if target.exists() and not target.is_file():  # /dev/null, a FIFO
            with open(target, "wb") as out:
                _copy(chunks, out, f"export {args.format}")
        else:
            _replace_whole(target, chunks, f"export {args.format}")
    except OSError as exc:  # not the collector's errors: the file's, said as the user's to mend
        raise ConfigError(f"cannot write the export to {target}: {exc.strerror or exc}") from exc
    return 0


def _replace_whole(target: Path, chunks: Iterable[bytes], progress: str) -> None:
    """Write ``chunks`` to a temporary file of its own beside ``target`` (two exports to
    one path shared one before) and rename it over ``target`` once complete, with the
    mode a new file would have (not the temporary file's 0600): a refused, broken or
    interrupted export (Ctrl-C, SIGTERM) leaves an existing file as it was."""
    partial: Path | None = None
    with _sigterm_exits():  # to the rename: a SIGTERM between the copy and it left the file
        try:
            # the name cut so that the temporary one stays within a file name's 255 bytes
            prefix = os.fsdecode(os.fsencode(target.name)[:200])
            with tempfile.NamedTemporaryFile("wb", dir=target.parent, prefix=f".{prefix}.",
                                             suffix=".partial", delete=False) as out:
                partial = Path(out.name)
                _copy(chunks, out, progress)
            umask = os.umask(0)
            os.umask(umask)
            partial.chmod(target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~umask)
            partial.replace(target)
        except BaseException:
            if partial is not None:
                with contextlib.suppress(OSError):
                    partial.unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM ends the block by ``SystemExit`` (143), so that what it wrote is cleaned up:
    killed by the signal's default action, an export left its temporary file behind."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _copy(chunks: Iterable[bytes], out: BinaryIO, progress: str | None) -> None:
    """Write ``chunks`` to ``out``, with a progress bar on stderr titled ``progress`` (if any)."""
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=Console(stderr=True), disable=progress is None) as bar:
        task = bar.add_task(progress or "", total=None)
        for chunk in chunks:
            out.write(chunk)
            bar.advance(task, len(chunk))


def _segment(value: str) -> str:
    """``value`` (a tool's name) as one path segment, whatever it holds: '/', '#', '?' and
    '%' are quoted, and so are the dots of '.' and '..', which a URL resolves away (a tool
    named '.' asked for the leaderboard)."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def _get_command(path: str, *params: str) -> Any:
    return _path_command("GET", path, *params)


def _delete_command(path: str) -> Any:
    return _path_command("DELETE", path)


def _path_command(method: str, path: str, *params: str) -> Any:
    """A command sending ``method`` to ``path`` (its ``{fields}`` the arguments of those
    names, each one path segment) with the query ``params`` given, printing the answer."""
    def run(args: argparse.Namespace) -> int:
        values = {p: getattr(args, p) for p in params if getattr(args, p, None) is not None}
        segments = {field: _segment(str(getattr(args, field))) for _, field, _, _ in Formatter().parse(path) if field}
        client = _client(args)
        send = client.get if method == "GET" else client.delete
        return _emit(args, send(path.format(**segments), **values))

    return run


def _sql(args: argparse.Namespace) -> int:
    if args.sql_url is None:
        if args.url != _DEFAULT_URL:  # pointed at another collector: its SQL port is not 8124's
            raise ConfigError("`spanhouse sql` queries the collector's SQL endpoint, not its API (--url): pass "
                              "--sql-url http://HOST:PORT with that collector's --sql-port (its startup line "
                              "prints sql_port), or set SPANHOUSE_SQL_URL")
        args.sql_url = _DEFAULT_SQL_URL
    if args.json:
        text = _client(args).sql(args.query, "JSONEachRow")
        rows: list[Any] | None
        try:  # on "\n" only: splitlines() also cuts at characters a row's strings hold (U+0085)
            rows = [json.loads(line) for line in text.split("\n") if line]
        except ValueError:
            rows = None
        if rows is None or not all(isinstance(row, dict) for row in rows):  # a FORMAT in the query won
            raise ConfigError("--json reads the rows as JSONEachRow: leave the FORMAT clause out of the query "
                              "(or drop --json to print the format it names)")
        print(json.dumps(rows, indent=2))
    else:
        sys.stdout.write(_client(args).sql(args.query, args.format))
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the query commands on the ``spanhouse`` parser."""
    ex = sub.add_parser("executions", help="list, show or delete executions").add_subparsers(
        dest="executions_command", required=True)
    ls = ex.add_parser("list", help="executions, newest first")
    _common(ls)
    _filters(ls)
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--cursor")
    ls.set_defaults(run=_list)
    sh = ex.add_parser("show", help="one execution with its span tree")
    _common(sh)
    sh.add_argument("trace_id", type=_trace_id)
    sh.set_defaults(run=_show)
    rm = ex.add_parser("delete", help="delete one execution, or all before a time matching filters")
    _common(rm)
    _filters(rm)
    rm.add_argument("trace_id", nargs="?", type=_trace_id)
    rm.add_argument("--before", help="bulk: executions started before this time (ISO 8601)")
    rm.add_argument("--yes", action="store_true", help="do not ask")
    rm.set_defaults(run=_delete)

    fb = sub.add_parser("feedback", help="rate an execution, read or delete one feedback item").add_subparsers(
        dest="feedback_command", required=True)
    add = fb.add_parser("add", help="rate an execution (--rating 1-5) or attach a named score (--value)")
    _common(add)
    add.add_argument("execution_id", type=_trace_id)
    value = add.add_mutually_exclusive_group(required=True)
    value.add_argument("--rating", type=int)
    value.add_argument("--value", type=_finite)
    add.add_argument("--name", help="default user_rating")
    add.add_argument("--comment")
    add.add_argument("--user-id")
    add.add_argument("--id", type=_feedback_id, help="your own id: adding it again replaces that item")
    add.set_defaults(run=_feedback_add)
    for command, help_text, run in (("show", "one feedback item", _get_command("/api/v1/feedback/{feedback_id}")),
                                    ("delete", "delete one feedback item (admin key)", _delete_command(
                                        "/api/v1/feedback/{feedback_id}"))):
        p = fb.add_parser(command, help=help_text)
        _common(p)
        p.add_argument("feedback_id", type=_feedback_id)
        p.set_defaults(run=run)

    for name, path, params, extra, help_text in (
        ("tools", "/api/v1/tools", ("days", "sort", "order", "min_calls", "limit"),
         (("--days", int), ("--sort", str), ("--order", str), ("--min-calls", int), ("--limit", int)),
         "per tool: calls, success rate, latency percentiles, trend"),
        ("stats", "/api/v1/stats", ("days", "name"), (("--days", int), ("--name", str)),
         "execution totals, success rate, durations, tokens, cost"),
        ("performance", "/api/v1/performance", ("days", "name", "thresholds", "min_calls", "min_repeats"),
         (("--days", int), ("--name", str), ("--thresholds", str), ("--min-calls", int), ("--min-repeats", int)),
         "duration buckets, top error patterns, optimization tips"),
        ("anomalies", "/api/v1/anomalies", ("metric", "method", "threshold", "days", "bucket", "min_calls", "limit"),
         (("--metric", str), ("--method", str), ("--threshold", float), ("--days", int), ("--bucket", str),
          ("--min-calls", int), ("--limit", int)),
         "per-tool latency or error-rate anomalies"),
    ):
        p = sub.add_parser(name, help=help_text)
        _common(p)
        for flag, kind in extra:
            p.add_argument(flag, type=kind)
        p.set_defaults(run=_get_command(path, *params))
    tool = sub.add_parser("tool", help="one tool: time series and recent errors")
    _common(tool)
    tool.add_argument("tool_name")
    tool.add_argument("--days", type=int)
    tool.add_argument("--bucket")
    tool.set_defaults(run=_get_command("/api/v1/tools/{tool_name}", "days", "bucket"))

    exp = sub.add_parser("export", help="stream executions to a file (csv, json lines, parquet)")
    _common(exp, json_help=None)
    _filters(exp)
    exp.add_argument("--format", choices=("csv", "json", "parquet"), default="csv")
    exp.add_argument("--output", "-o", default="-", help="file (default: stdout)")
    exp.set_defaults(run=_export)

    sql = sub.add_parser("sql", help="run a read-only SQL query on the collector's store (admin key)")
    _common(sql, json_help="print the rows as one JSON array")
    sql.add_argument("query")
    sql.add_argument("--sql-url", default=os.environ.get("SPANHOUSE_SQL_URL"),
                     help=f"the collector's SQL endpoint (env SPANHOUSE_SQL_URL; default {_DEFAULT_SQL_URL})")
    sql.add_argument("--format", default="PrettyCompactMonoBlock", help="any ClickHouse output format")
    sql.set_defaults(run=_sql)
