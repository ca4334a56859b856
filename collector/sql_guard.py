"""What the SQL endpoint lets run, and with which settings (``collector/sql_http.py``
speaks the protocol).

The endpoint runs queries in the collector's own process, on the embedded engine, as
the collector's user. ``readonly=2`` refuses writes to the store and changing
``readonly``, but not reaching outside it: the table functions ``file``, ``url``,
``s3`` ... and the ``file()`` function read the host's files (``/proc/self/environ``
holds inline API keys) or make requests, ``INTO OUTFILE`` and ``INSERT INTO FUNCTION``
write, temporary tables of any engine are allowed (and one on a pooled connection would
shadow a store table for every later client), and a ``SETTINGS`` clause lifts limits.

So each query is formatted by the engine from its text passed as a value
(``formatQuerySingleLine``: nothing runs, and more than one statement is a syntax error,
where the engine would run them all), and the formatted statement is checked before
it alone runs: its parameters must be ones the driver binds on the server (never
written into its text), its names may hold no line break, and its parse tree
(``EXPLAIN AST``) must be a read (SELECT, SHOW TABLES, DESCRIBE, or EXPLAIN of one)
using no table function but the row generators (``numbers``, ``zeros``, ...), no
``file()``, no ``INTO OUTFILE``, no ``SETTINGS``, and no table but the store's (the
embedded engine's default database reads any other name as a host file). The check is
only as good as the dump is complete, so it fails closed: a node kind not known to
print all it holds (``* APPLY(lambda)``, a SHOW's WHERE) is refused. So are functions
whose one row can outlast the time limit, which the engine checks between blocks of
rows. Ten rounds of review found ways past earlier versions of it; each is a test in
``tests/test_sql_endpoint.py``.

Settings come from a short list (output formatting of the text formats and Native, and
limits below the endpoint's own ``LIMITS``), never ones that change how SQL is parsed
or what is allowed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

from clickhouse_connect.driver.binding import bind_query, external_bind_re

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
is held whole in the collector before it is sent; a constant column counts once towards
max_result_bytes, so the formatted answer is checked against it too (sql_http)."""
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

# Table functions that only generate rows; every other one reaches files, URLs or other servers.
_SAFE_TABLE_FUNCTIONS = frozenset({"numbers", "numbers_mt", "zeros", "zeros_mt", "generateseries",
                                   "generate_series", "values", "null"})  # lower case: names are compared so
# Scalar functions that read the host: file(), and those that look a table up by a name
# in a string, which the embedded engine's default database resolves as a host file.
_HOST_FUNCTIONS = frozenset({"file", "hascolumnintable", "joinget", "joingetornull"})
# Scalar functions whose cost per row has no bound but its arguments' size (quadratic
# string and array distances, polygon geometry), and the model calls: the engine checks
# the time limit between blocks of rows, so one block of them ran for minutes
# (editDistance of two 64k strings: 3.6 s a row) and six held every connection.
_UNBOUNDED_FUNCTIONS = frozenset({
    "editdistance", "editdistanceutf8", "levenshteindistance", "levenshteindistanceutf8",
    "dameraulevenshteindistance", "jarosimilarity", "jarowinklersimilarity", "arraylevenshteindistance",
    "arraylevenshteindistanceweighted", "arraysimilarity",
})
_UNBOUNDED_PREFIXES = ("polygon", "ai")  # polygonsDistance*, polygonsIntersection*...; aiGenerate...
_AST_LINE = re.compile(r"^( *)(\w+)(?: (\S+))?")
# A string literal or a quoted name, whichever starts first (a quote inside the other kind
# is part of it): literals are printed escaped in EXPLAIN AST, names raw.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"", re.S)
_LINE_BREAK = re.compile(r"[\n\r]|\\[nr]|\\x0[adAD]")
# A time zone named 'file:<path>' is that host file, opened as time zone data (a device
# or a pipe blocked the query past its time limit, and the engine's time zone cache with it).
# Matched at a value's start, as the engine reads the prefix: a tool named
# 'user_profile:get' picked in a dashboard was refused. (A constant expression that builds
# such a name is not seen here: README, limits.)
_FILE_ZONE = re.compile(r"file:", re.I)
# In a name, what only a path or a glob has: the default database reads such a name as
# host files wherever the engine takes a name for a table (a second line of defence).
_PATH_CHARACTERS = re.compile(r"[/{}*?\[\]~\\]")
# The statements that run (their EXPLAIN AST root): reads only. readonly=2 alone lets
# through INSERT INTO FUNCTION url(...) and CREATE TEMPORARY TABLE ... ENGINE = URL/SQLite
# (requests and host files), and a temporary table on a pooled connection would shadow a
# store table for every later client of that connection.
_STATEMENTS = frozenset({"SelectWithUnionQuery", "ShowTables", "DescribeQuery", "Explain"})
# The node kinds a query may hold: those whose line in the dump is followed by all they
# hold, so that the walk sees every expression. Others keep expressions out of the dump
# (the lambda of * APPLY(...), a SHOW's WHERE and LIMIT) and are refused, whatever they are.
_KINDS = _STATEMENTS | {
    "ArrayJoin", "Asterisk", "ColumnsExceptTransformer", "ColumnsRegexpMatcher", "ColumnsTransformerList",
    "ExpressionList", "Function", "Identifier", "Literal", "OrderByElement", "QualifiedAsterisk", "SampleRatio",
    "SelectIntersectExceptQuery", "SelectQuery", "Set", "Subquery", "TableExpression", "TableIdentifier",
    "TableJoin", "TablesInSelectQuery", "TablesInSelectQueryElement", "WindowDefinition", "WindowListElement",
    "WithElement"}
# The functions whose second argument may name a table (x IN t), which the walk cannot check.
# Matched by pattern, as the engine's isNameOfInFunction does (all 16: nullInIgnoreSet ...).
_IN_FUNCTION = re.compile(r"(global)?(not)?(null)?in(ignoreset)?")
# A SHOW's WHERE and LIMIT expressions are not in its dump, and the engine runs them.
# A table node of the dump: the rest of its line is the name, raw (and its alias).
_TABLE_IDENTIFIER = re.compile(r"^ *TableIdentifier (.*)$", re.M)
# A table name as the store's are: [database.]name of plain words, with a plain alias.
_PLAIN_TABLE = re.compile(r"(\w+(?:\.\w+)?)(?: \(alias \w+\))?", re.A)
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
    in_arguments: list[list[int]] = []  # per IN function: [its depth, arguments seen] (arguments at depth + 2)
    for line in ast.split("\n"):
        if not (m := _AST_LINE.match(line)):
            continue
        depth, kind, name = len(m.group(1)), m.group(2), m.group(3) or ""
        while ancestors and ancestors[-1][0] >= depth:
            ancestors.pop()
        parent = ancestors[-1][1] if ancestors else ""
        while in_arguments and depth <= in_arguments[-1][0]:
            in_arguments.pop()
        if in_arguments and depth == in_arguments[-1][0] + 2:
            in_arguments[-1][1] += 1
            if in_arguments[-1][1] == 2 and kind == "Identifier":  # the engine would look it up as a table
                return "IN followed by a table name; write IN (SELECT ... FROM the table)"
        if kind == "Function" and _IN_FUNCTION.fullmatch(name.lower()):
            in_arguments.append([depth, 0])
        if kind == "Function" and parent == "TableExpression" and name.lower() not in _SAFE_TABLE_FUNCTIONS:
            return f"table function {name}() reaches outside the store"
        if kind == "Function" and name.lower() in _HOST_FUNCTIONS:
            return f"function {name}() reads the host's files (a table name in a string can be one)"
        if kind == "Function" and (name.lower() in _UNBOUNDED_FUNCTIONS or name.lower().startswith(_UNBOUNDED_PREFIXES)):
            return f"function {name}() can run past the time limit on a single row"
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
        if m.group()[0] != "'" and _PATH_CHARACTERS.search(m.group()[1:-1]):
            return "a name with / { } * ? [ ] ~ or \\ in it (the engine may read it as a host file)"
    if any(m.group()[0] == "'" and _FILE_ZONE.match(m.group(), 1) for m in _QUOTED.finditer(statement)):
        return "'file:' (a time zone so named is a host file the engine opens)"
    unquoted = _QUOTED.sub("", statement)
    if "\n" in unquoted or "\r" in statement:  # a formatted statement is one line
        return "a line break outside a string"
    if _SHOW_FILTER.search(unquoted):
        return "SHOW ... WHERE/LIMIT (its expressions are not checked); SELECT from system.tables instead"
    return None


def settings(requested: Mapping[str, str]) -> dict[str, object]:
    """The settings a request asks for (its URL parameters that are no protocol's) with
    the endpoint's own on top; ``ValueError`` names a setting a client may not pass."""
    chosen: dict[str, object] = dict(LIMITS)
    for name, value in requested.items():
        if name in LIMITS or name in _CAPS:
            cap = LIMITS.get(name) or _CAPS[name]
            try:
                chosen[name] = min(cap, max(0, int(value))) or cap  # 0 is "no limit"
            except ValueError:
                raise ValueError(f"setting {name}={value!r} is not a whole number") from None
        elif name in _CLIENT_SETTINGS or name.startswith(_OUTPUT_PREFIXES):
            if _FILE_ZONE.match(value):  # session_timezone=file:/dev/ptmx hung the query
                raise ValueError(f"setting {name}={value!r} names a file")
            chosen[name] = value
        else:
            raise ValueError(f"setting {name} cannot be changed on the SQL endpoint")
    return chosen | _FIXED


def parameters(statement: str, given: Mapping[str, str | None]) -> dict[str, str | None]:
    """The parameters of ``given`` that ``statement`` uses, as the driver reads it (a
    whole ``{name:Type}``); ``PermissionError`` if binding them would change its text.
    Given a parameter it sees no placeholder for, the driver writes the value into the
    SQL with Python's ``%`` itself: ``'%(x)s'`` in a literal became the value as SQL."""
    placeholders = external_bind_re.findall(statement)  # (name, type)
    used = {name for name, _ in placeholders}
    chosen = {name: value for name, value in given.items() if name in used}
    identifiers = {name for name, kind in placeholders if kind.strip() == "Identifier"}  # printed raw in the dump
    if any(_LINE_BREAK.search(chosen[n] or "") for n in identifiers & chosen.keys()):
        raise PermissionError("an Identifier parameter with a line break in it")
    if any(_FILE_ZONE.match(value or "") for value in chosen.values()):
        raise PermissionError("a parameter naming a file ('file:'), which a time zone argument would open")
    if bind_query(statement, chosen)[0] != statement:  # what runs must be what is checked
        raise PermissionError("its parameters would be written into its text; use {name:Type} placeholders")
    return chosen


def refusal(statement: str, ast: str) -> str | None:
    """Why ``statement``, whose ``EXPLAIN AST`` is ``ast``, may not run, or None."""
    return _broken_name(statement) or outside_reach(ast)


def unknown_table(ast: str, tables: Callable[[], set[str]]) -> str | None:
    """A table ``ast`` names that is not one of ``tables()`` (``queries/sql_tables.sql``),
    or None. The embedded engine reads any other name as a file of the host (``FROM
    `/etc/passwd```, or a file in its working directory by a bare name); a CTE's name is
    not in the dump, so a CTE cannot be used as a table here (a subquery can)."""
    named = set()
    for m in _TABLE_IDENTIFIER.finditer(ast):
        if not (plain := _PLAIN_TABLE.fullmatch(m.group(1))):  # ' (alias ' in a name hid the rest of it
            return m.group(1)
        named.add(plain.group(1))
    unknown = named - tables() if named else set()
    return min(unknown) if unknown else None
