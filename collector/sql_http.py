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

What may run, and with which settings, is ``collector/sql_guard.py``'s to decide.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid

import anyio
from clickhouse_connect.driver.exceptions import ClickHouseError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from spanhouse.clickhouse import queries
from spanhouse.clickhouse.pool import ClientPool
from spanhouse.collector import native, sql_guard
from spanhouse.collector.auth import KeyRing, key_from_headers
from spanhouse.errors import AuthError

log = logging.getLogger(__name__)

# URL parameters that are part of the protocol, not settings.
_PROTOCOL_PARAMS = {"query", "database", "default_format", "query_id", "session_id", "session_timeout",
                    "session_check", "user", "password", "quota_key", "compress", "decompress", "buffer_size",
                    "wait_end_of_query", "client_protocol_version", "role"}
_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)
_CHECK_LIMITS = {k: sql_guard.LIMITS[k] for k in ("max_result_rows", "max_result_bytes")}
"""The result limits of the guard's own EXPLAIN AST: the endpoint's, whatever the client lowered."""
_CODE = re.compile(r"Code: (\d+)\.")
_STATUS = {164: 403, 497: 403, 516: 401, 60: 404, 81: 404, 62: 400, 115: 400, 47: 400, 36: 400, 43: 400, 6: 400,
           27: 400, 26: 400, 41: 400, 72: 400, 42: 400, 46: 404, 456: 400, 457: 400, 73: 400, 50: 400}
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "0": "\0", "a": "\a", "v": "\v"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)", re.S)
_OUTPUT_FORMAT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
MAX_QUERY_BYTES = 256 << 10
"""The engine's own max_query_size: a longer statement would be refused by it, after the
collector had held the body and the engine formatted it (a 400 MiB body peaked at 10 GB)."""
_MEDIA = {"JSON": "application/json", "JSONEachRow": "application/x-ndjson", "JSONCompact": "application/json",
          "CSV": "text/csv", "CSVWithNames": "text/csv", "TabSeparated": "text/tab-separated-values"}


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


async def _body(request: Request, limit: int) -> str | None:
    """A POST's body as text, or None once it passes ``limit`` bytes (read no further)."""
    if request.method != "POST":
        return ""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


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
        body = await _body(request, MAX_QUERY_BYTES - len(params.get("query", "")))
        if body is None:
            return _error(f"Code: 62. DB::Exception: Max query size exceeded: the query is over {MAX_QUERY_BYTES} "
                          "bytes. (SYNTAX_ERROR)", 400)
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
            settings = sql_guard.settings({k: v for k, v in params.items()
                                           if k not in _PROTOCOL_PARAMS and not k.startswith("param_")})
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
        except OverflowError as exc:
            return _error(f"Code: 396. DB::Exception: {exc}. (TOO_MANY_ROWS_OR_BYTES)", 500)
        except LookupError as exc:
            return _error(f"Code: 60. DB::Exception: Table {exc.args[0]} does not exist in the store (on the SQL "
                          "endpoint a CTE's name cannot be used as a table; use a subquery). (UNKNOWN_TABLE)")
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

    def _tables(self) -> set[str]:
        """The names a query may use for a table (``queries/sql_tables.sql``)."""
        return {row["name"] for row in queries.rows(self._clients, "sql_tables", {})}

    def _run(self, sql: str, query_params: dict[str, str | None], settings: dict[str, object], fmt: str) -> bytes:
        """Run ``sql`` read-only; ``PermissionError`` if ``sql_guard`` refuses it. What runs
        is the one statement the engine formatted from ``sql``, with the parameters it uses."""
        statement = queries.rows(self._clients, "sql_statement", {"sql": sql})[0]["statement"]
        query_params = sql_guard.parameters(statement, query_params)
        # the client's result limits are its answer's, not the check's: under max_result_rows=5
        # a one-row SELECT was refused for the rows of its AST
        ast = self._clients.raw_query(f"EXPLAIN AST {statement}", parameters=query_params or None,
                                     settings={**settings, **_CHECK_LIMITS},
                                     fmt="TabSeparatedRaw").decode("utf-8", "replace")
        reason = sql_guard.refusal(statement, ast)
        if reason is not None:
            raise PermissionError(reason)
        table = sql_guard.unknown_table(ast, self._tables)
        if table is not None:
            raise LookupError(table)
        data = self._clients.raw_query(statement, parameters=query_params or None, settings=settings, fmt=fmt)
        limit = int(settings["max_result_bytes"])  # type: ignore[call-overload]
        if len(data) > limit:  # a wide constant column counts once towards the engine's limit
            raise OverflowError(f"the answer has {len(data)} bytes; max_result_bytes is {limit}")
        return data
