"""A read-only, ClickHouse-HTTP-compatible SQL endpoint (``--sql-port``, default 8124).

Only the collector process can open the embedded store, so this is how Grafana
(ClickHouse data source, protocol ``http``), clickhouse-connect's HTTP client, curl and
other ClickHouse tools query it. It speaks the subset of ClickHouse's HTTP interface
those clients use: the query in the ``query`` URL parameter and/or the POST body,
``param_<name>`` query parameters, ``default_format`` and a trailing ``FORMAT``, other
URL parameters as settings, credentials as ``X-ClickHouse-User``/``X-ClickHouse-Key``
headers, basic auth, ``user``/``password`` parameters or a bearer token (the password is
an API key with the ``admin`` scope: SQL sees every tenant), ``GET /ping``, and the
``X-ClickHouse-*`` response headers. Every query runs with ``readonly=2``, so writes,
DDL and changing ``readonly`` are refused with ClickHouse's own errors.

``readonly`` does not stop a query from reaching outside the store: with the embedded
engine the table functions ``file``, ``url``, ``s3`` ... and the ``file()`` function read
the host's files (``/proc/self/environ`` holds inline API keys) or make requests, and
``INTO OUTFILE`` writes files, all as the collector's user. So each query is first
formatted by the engine from its text passed as a value (``formatQuerySingleLine``:
nothing runs, and more than one statement is a syntax error, where the engine would
run them all), the formatted statement parsed (``EXPLAIN AST``) and refused (403,
ACCESS_DENIED) if it is not a read (SELECT, SHOW, DESCRIBE, EXISTS, EXPLAIN of one:
``readonly=2`` lets ``INSERT INTO FUNCTION`` and temporary tables of any engine through)
or uses any of them, and only that statement runs; the table functions that only
generate rows (``numbers``, ``zeros``, ...) stay. The check is only as good as the
dump is complete, so it fails closed: a node kind not known to print everything it
holds (``* APPLY(lambda)``, a SHOW's WHERE) is refused. The dump is text, so a name
with a line break in it (which would forge lines of it) is refused, and the output
format, which the driver appends to the statement, must be a format's name. Output
settings are those of the text formats and Native.

The collector runs these queries in its own process: settings in the URL are taken
from a list of harmless ones (output formats, result and time limits below the
endpoint's own), never ones that change how SQL is parsed or what is allowed, and
every query runs with the limits ``LIMITS`` (time, result size, memory), so one query
cannot hold the collector's memory or CPU.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import uuid
from collections.abc import Mapping

import anyio
from clickhouse_connect.driver.binding import bind_query, external_bind_re
from clickhouse_connect.driver.exceptions import ClickHouseError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from spanhouse.clickhouse import queries
from spanhouse.clickhouse.pool import ClientPool
from spanhouse.collector import native
from spanhouse.collector.auth import KeyRing, key_from_headers
from spanhouse.errors import AuthError

log = logging.getLogger(__name__)

# URL parameters that are part of the protocol, not settings.
_PROTOCOL_PARAMS = {"query", "database", "default_format", "query_id", "session_id", "session_timeout",
                    "session_check", "user", "password", "quota_key", "compress", "decompress", "buffer_size",
                    "wait_end_of_query", "client_protocol_version", "role"}
_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)
_CODE = re.compile(r"Code: (\d+)\.")
_STATUS = {164: 403, 497: 403, 516: 401, 60: 404, 81: 404, 62: 400, 115: 400, 47: 400, 36: 400, 43: 400, 6: 400,
           27: 400, 26: 400, 41: 400, 72: 400, 42: 400, 46: 404, 456: 400, 457: 400, 73: 400, 50: 400}
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "0": "\0", "a": "\a", "v": "\v"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)", re.S)
_MEDIA = {"JSON": "application/json", "JSONEachRow": "application/x-ndjson", "JSONCompact": "application/json",
          "CSV": "text/csv", "CSVWithNames": "text/csv", "TabSeparated": "text/tab-separated-values"}


# URL settings a client may pass: what clickhouse-connect and Grafana's ClickHouse data
# source send, output formatting, and limits (never above LIMITS). Anything else (the SQL
# dialect, allow_* switches, ...) is refused by name.
_CLIENT_SETTINGS = frozenset({"cancel_http_readonly_queries_on_client_close", "send_progress_in_http_headers",
                              "http_headers_progress_interval_ms", "enable_http_compression",
                              "http_zlib_compression_level", "add_http_cors_header",
                              "cast_string_to_dynamic_use_inference",
                              "date_time_input_format", "date_time_output_format", "session_timezone",
                              "join_use_nulls", "extremes", "result_overflow_mode", "timeout_overflow_mode"})
LIMITS: dict[str, int] = {"max_execution_time": 60, "max_result_rows": 1_000_000, "max_result_bytes": 256 << 20,
                          "max_memory_usage": 2 << 30}
"""Every query's limits (seconds, rows, bytes); a client may ask for lower ones. The result
is held whole in the collector before it is sent (a constant column counts once towards
max_result_bytes, so the row limit bounds those)."""
# Output settings that make an answer larger than its result: a client may lower them,
# not raise them past the engine's defaults (raised, 10,000 rows of Pretty output padded
# to 1 GB in the collector's memory under a 1 MB max_result_bytes).
# max_threads likewise: no more than the machine has.
_CAPS = {"output_format_pretty_max_rows": 10_000, "output_format_pretty_max_column_pad_width": 250,
         "output_format_pretty_max_value_width": 10_000, "max_threads": os.cpu_count() or 1}
# The output settings a client may pass: of the text formats and Native. Others read
# files (output_format_orc_writer_time_zone_name opened any path as a time zone, and an
# empty one aborted the engine), write them (output_format_schema), or make an answer
# many times its result or its time limit (Parquet row groups, PNG image sizes).
_OUTPUT_PREFIXES = ("output_format_json_", "output_format_pretty_", "output_format_csv_", "output_format_tsv_",
                    "output_format_native_", "output_format_decimal_trailing_zeros", "output_format_write_statistics",
                    "output_format_arrow_string_as_string", "output_format_parquet_string_as_string")
# Settings of every query, which no client changes: reads only; no introspection of the
# collector's own memory (addressToLine, system.stack_trace's symbols).
_FIXED: dict[str, object] = {"readonly": 2, "allow_introspection_functions": 0}
_OUTPUT_FORMAT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

# Table functions that only generate rows; every other one reaches files, URLs or other servers.
_SAFE_TABLE_FUNCTIONS = frozenset({"numbers", "numbers_mt", "zeros", "zeros_mt", "generateseries",
                                   "generate_series", "values", "null"})  # lower case: names are compared so
_HOST_FUNCTIONS = frozenset({"file"})  # scalar functions that read the host
_AST_LINE = re.compile(r"^( *)(\w+)(?: (\S+))?")
# A string literal or a quoted name, whichever starts first (a quote inside the other kind
# is part of it): literals are printed escaped in EXPLAIN AST, names raw.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"", re.S)
_LINE_BREAK = re.compile(r"[\n\r]|\\[nr]|\\x0[adAD]")
# The statements that run (their EXPLAIN AST root): reads only. readonly=2 alone lets
# through INSERT INTO FUNCTION url(...) and CREATE TEMPORARY TABLE ... ENGINE = URL/SQLite
# (requests and host files), and a temporary table on a pooled connection would shadow a
# store table for every later client of that connection.
_STATEMENTS = frozenset({"SelectWithUnionQuery", "ShowTables", "DescribeQuery", "ShowCreateTableQuery",
                         "ExistsTableQuery", "Explain"})
# The node kinds a query may hold: those whose line in the dump is followed by all they
# hold, so that the walk sees every expression. Others keep expressions out of the dump
# (the lambda of * APPLY(...), a SHOW's WHERE and LIMIT) and are refused, whatever they are.
_KINDS = _STATEMENTS | {
    "ArrayJoin", "Asterisk", "ColumnsExceptTransformer", "ColumnsRegexpMatcher", "ColumnsTransformerList",
    "ExpressionList", "Function", "Identifier", "Literal", "OrderByElement", "QualifiedAsterisk", "SampleRatio",
    "SelectIntersectExceptQuery", "SelectQuery", "Set", "Subquery", "TableExpression", "TableIdentifier",
    "TableJoin", "TablesInSelectQuery", "TablesInSelectQueryElement", "WindowDefinition", "WindowListElement",
    "WithElement"}
# A SHOW's WHERE and LIMIT expressions are not in its dump, and the engine runs them.
_SHOW_FILTER = re.compile(r"^SHOW\b.*\b(WHERE|LIMIT)\b", re.I)


def _statement(ast: str) -> str:
    """The kind of statement ``ast`` is (its root); for an EXPLAIN, the kind of the one it
    explains (the root's child that is not its ``Set`` of options)."""
    nodes = [(len(m.group(1)), m.group(2)) for line in ast.split("\n") if (m := _AST_LINE.match(line))]
    if nodes[:1] == [(0, "Explain")]:
        return next((kind for depth, kind in nodes if depth == 1 and kind != "Set"), "")
    return nodes[0][1] if nodes else ""


def outside_reach(ast: str) -> str | None:
    """Why a query whose ``EXPLAIN AST`` is ``ast`` is no read (see ``_STATEMENTS``),
    reaches outside the store (a table function other than a row generator, ``file()``,
    ``INTO OUTFILE``) or outside the endpoint's limits (a ``SETTINGS`` clause, which would
    override them), or None."""
    ancestors: list[tuple[int, str]] = []  # (indentation, node kind) from the root to the line's parent
    # An EXPLAIN's own options (EXPLAIN json = 1 ...) are a Set child before the statement
    # it explains; a Set after it is a SETTINGS clause of the EXPLAIN (EXPLAIN (...)
    # SETTINGS ...), which the engine applies to everything the EXPLAIN runs.
    options_allowed = ast.startswith("Explain")
    for line in ast.split("\n"):
        if not (m := _AST_LINE.match(line)):
            continue
        depth, kind, name = len(m.group(1)), m.group(2), m.group(3) or ""
        while ancestors and ancestors[-1][0] >= depth:
            ancestors.pop()
        parent = ancestors[-1][1] if ancestors else ""
        if kind == "Function" and parent == "TableExpression" and name.lower() not in _SAFE_TABLE_FUNCTIONS:
            return f"table function {name}() reaches outside the store"
        if kind == "Function" and name.lower() in _HOST_FUNCTIONS:
            return f"function {name}() reads the host's files"
        if kind == "Literal" and len(ancestors) == 1:  # a statement's only literal child: INTO OUTFILE
            return "INTO OUTFILE writes the host's files"
        if kind not in _KINDS:
            return f"{kind} is not supported here"
        if kind == "Set" and not (options_allowed and depth == 1):
            return "SET or a SETTINGS clause would lift the endpoint's limits; pass output settings as URL parameters"
        if depth == 1 and kind != "Set":
            options_allowed = False
        ancestors.append((depth, kind))
    kind = _statement(ast)
    if kind not in _STATEMENTS - {"Explain"}:
        return (f"only SELECT, SHOW, DESCRIBE, EXISTS and EXPLAIN of them run here, not {kind or 'this'} "
                "statements")
    return None


def _broken_name(statement: str) -> str | None:
    """Why the names of a formatted statement cannot be checked, or None. EXPLAIN AST
    prints identifiers and aliases raw: a line break in one (``AS `x\\n  Explain```) would
    forge lines of the dump that ``outside_reach`` reads its tree from."""
    for m in _QUOTED.finditer(statement):
        if m.group()[0] != "'" and _LINE_BREAK.search(m.group()):
            return "a name (identifier or alias) with a line break in it"
    unquoted = _QUOTED.sub("", statement)
    if "\n" in unquoted or "\r" in statement:  # a formatted statement is one line
        return "a line break outside a string"
    if _SHOW_FILTER.search(unquoted):
        return "SHOW ... WHERE/LIMIT (its expressions are not checked); SELECT from system.tables instead"
    return None


def client_settings(params: Mapping[str, str]) -> dict[str, object]:
    """The settings of a request's URL parameters with the endpoint's own on top;
    ``ValueError`` names a setting a client may not pass."""
    settings: dict[str, object] = dict(LIMITS)
    for name, value in params.items():
        if name in _PROTOCOL_PARAMS or name.startswith("param_"):
            continue
        if name in LIMITS or name in _CAPS:
            cap = LIMITS.get(name) or _CAPS[name]
            try:
                settings[name] = min(cap, max(0, int(value))) or cap  # 0 is "no limit"
            except ValueError:
                raise ValueError(f"setting {name}={value!r} is not a whole number") from None
        elif name in _CLIENT_SETTINGS or name.startswith(_OUTPUT_PREFIXES):
            settings[name] = value
        else:
            raise ValueError(f"setting {name} cannot be changed on the SQL endpoint")
    return settings | _FIXED


def unescape(value: str) -> str | None:
    r"""A ``param_<name>`` value as ClickHouse reads it: in the Escaped format (``\'``,
    ``\t``, ``\xHH`` ...; ``\N`` alone is NULL). The driver escapes what it binds, so it
    must be given the unescaped value, or ``it\'s`` arrives as ``it\\'s``."""
    if value == "\\N":
        return None
    out, pos = bytearray(), 0
    for m in _ESCAPE.finditer(value):
        code = m.group(1)
        out += value[pos:m.start()].encode()
        out += bytes([int(code[1:], 16)]) if len(code) == 3 else _ESCAPES.get(code, code).encode()
        pos = m.end()
    out += value[pos:].encode()
    return out.decode("utf-8", "replace")


def split_format(sql: str, default: str) -> tuple[str, str]:
    """The query without a trailing ``FORMAT x`` clause, and the format to use."""
    m = _FORMAT.search(sql)
    return (sql[:m.start()].rstrip(), m.group(1)) if m else (sql.rstrip().rstrip(";"), default)


def _credentials(request: Request) -> str | None:
    headers = request.headers
    if headers.get("x-clickhouse-key"):
        return headers["x-clickhouse-key"]
    auth = headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            return base64.b64decode(auth[6:]).decode().partition(":")[2] or None
        except (ValueError, UnicodeDecodeError):
            return None
    return request.query_params.get("password") or key_from_headers(headers.get)


def _error(text: str, status: int | None = None) -> Response:
    code = int(m.group(1)) if (m := _CODE.search(text)) else 0
    body = text if text.startswith("Code:") else f"Code: {code}. DB::Exception: {text}"
    return PlainTextResponse(body.rstrip() + "\n", status or _STATUS.get(code, 500),
                             headers={"X-ClickHouse-Exception-Code": str(code)})


class SqlEndpoint:
    """The ASGI app of the SQL port."""

    def __init__(self, clients: ClientPool, keys: KeyRing) -> None:
        """``clients`` must be connections of their own: with the embedded engine, per-query
        settings are applied to the connection's session, and ``readonly`` cannot be
        switched back off once on. A pool, because Grafana asks for every panel of a
        dashboard at once: on one connection the panels would load one after the other."""
        self._clients = clients
        self._keys = keys
        # Its own threads, one per client: on anyio's default limiter, queries waiting for
        # a client held the threads the query API's endpoints run on (a list took 30 s).
        self._threads = anyio.CapacityLimiter(clients.size)
        self._timezone: str = queries.rows(clients, "server_timezone", {})[0]["timezone"]
        self.app = Starlette(routes=[Route("/", self._query, methods=["GET", "POST"]),
                                     Route("/ping", lambda _: PlainTextResponse("Ok.\n"), methods=["GET", "HEAD"])])

    async def _query(self, request: Request) -> Response:
        try:
            self._keys.authenticate(_credentials(request)).require("admin")
        except AuthError as exc:
            return _error(f"Code: 516. DB::Exception: {exc}. (AUTHENTICATION_FAILED)", 401)
        params = request.query_params
        body = (await request.body()).decode("utf-8", "replace") if request.method == "POST" else ""
        sql = " ".join(part for part in (params.get("query", ""), body) if part.strip())
        if not sql.strip():
            return _error("Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)", 400)
        if params.get("database", "default") not in ("", "default"):
            return _error(f"Code: 81. DB::Exception: Database {params['database']} does not exist. (UNKNOWN_DATABASE)")
        sql, fmt = split_format(sql, params.get("default_format", "TabSeparated"))
        if not _OUTPUT_FORMAT.fullmatch(fmt):  # the driver appends it to the checked statement as text
            return _error(f"Code: 73. DB::Exception: Unknown format {fmt[:64]!r}. (UNKNOWN_FORMAT)")
        query_params = {k[6:]: unescape(v) for k, v in params.items() if k.startswith("param_")}
        try:
            settings = client_settings(params)
        except ValueError as exc:
            return _error(f"Code: 164. DB::Exception: {exc}. (READONLY)")
        try:
            revision = int(params.get("client_protocol_version", "0")) if fmt == "Native" else 0
        except ValueError:
            return _error("Code: 27. DB::Exception: client_protocol_version must be an integer. (CANNOT_PARSE_INPUT)")
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            data = await anyio.to_thread.run_sync(
                lambda: native.for_revision(self._run(sql, query_params, settings, fmt), revision),
                limiter=self._threads)
        except ClickHouseError as exc:
            return _error(str(exc))
        except PermissionError as exc:
            return _error(f"Code: 497. DB::Exception: the SQL endpoint reads the store only: {exc}. (ACCESS_DENIED)")
        except native.UnsupportedNativeType as exc:
            return _error(f"Code: 50. DB::Exception: {exc}. (UNKNOWN_TYPE)")
        except Exception as exc:  # a defect of ours: still an answer ClickHouse clients can read
            log.exception("SQL endpoint: unexpected error")
            return _error(f"Code: 1001. DB::Exception: {type(exc).__name__}: {exc}. (STD_EXCEPTION)", 500)
        headers = {"X-ClickHouse-Format": fmt, "X-ClickHouse-Query-Id": query_id,
                   "X-ClickHouse-Timezone": str(settings.get("session_timezone") or self._timezone),
                   "X-ClickHouse-Summary": json.dumps({"read_rows": "0", "read_bytes": "0", "written_rows": "0",
                                                       "written_bytes": "0", "total_rows_to_read": "0",
                                                       "result_rows": "0", "result_bytes": str(len(data))}),
                   "X-ClickHouse-Server-Display-Name": "spanhouse"}
        return Response(data, 200, headers=headers, media_type=_MEDIA.get(fmt, "application/octet-stream"))

    def _run(self, sql: str, query_params: dict[str, str | None], settings: dict[str, object], fmt: str) -> bytes:
        """Run ``sql`` read-only; ``PermissionError`` if it would reach outside the store.
        What runs is the one statement the engine formatted from ``sql`` (see the module),
        with the parameters it uses: given others, the driver would format the query
        with Python's ``%`` itself (a ``LIKE '%b%'`` failed), where a server ignores them."""
        statement = queries.rows(self._clients, "sql_statement", {"sql": sql})[0]["statement"]
        placeholders = external_bind_re.findall(statement)  # the driver's own reading: (name, type)
        used = {name for name, _ in placeholders}
        query_params = {name: value for name, value in query_params.items() if name in used}
        names = {name for name, kind in placeholders if kind.strip() == "Identifier"}
        if any(_LINE_BREAK.search(query_params[n] or "") for n in names & query_params.keys()):
            raise PermissionError("an Identifier parameter with a line break in it")
        if bind_query(statement, query_params)[0] != statement:  # what runs must be what is checked
            raise PermissionError("its parameters would be written into its text; use {name:Type} placeholders")
        ast = self._clients.raw_query(f"EXPLAIN AST {statement}", parameters=query_params or None, settings=settings,
                                     fmt="TabSeparatedRaw")
        reason = _broken_name(statement) or outside_reach(ast.decode("utf-8", "replace"))
        if reason is not None:
            raise PermissionError(reason)
        return self._clients.raw_query(statement, parameters=query_params or None, settings=settings, fmt=fmt)
