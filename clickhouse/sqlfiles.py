"""Loading the SQL that ships in this package: schema files and named queries.

SQL lives in ``.sql`` files beside this module (``schema/``, ``queries/``) so that the
API, CLI, dashboards and analysts read the same text. Statements in a file are split
on ``;`` outside quotes and comments.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

_PACKAGE = "spanhouse.clickhouse"


def read_text(relative: str) -> str:
    """The text of a packaged file such as ``"schema/0001_otel_traces.sql"``."""
    return resources.files(_PACKAGE).joinpath(relative).read_text(encoding="utf-8")


def list_dir(relative: str) -> list[str]:
    """Names of the files in a packaged folder, sorted."""
    return sorted(p.name for p in resources.files(_PACKAGE).joinpath(relative).iterdir() if p.is_file())


@cache
def query(name: str) -> str:
    """The named query ``queries/<name>.sql`` (cached: these files never change at run time)."""
    return read_text(f"queries/{name}.sql").strip().rstrip(";")


def split_statements(sql: str) -> list[str]:
    """Split a file into statements on ``;`` that is outside quotes and comments.

    Comments are kept with the statement they precede; empty statements are dropped.
    """
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    quote: str | None = None
    while i < n:
        ch = sql[i]
        if quote:
            current.append(ch)
            if ch == "\\" and i + 1 < n:
                current.append(sql[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in ("'", '"', "`"):
            quote = ch
            current.append(ch)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            current.append(sql[i:end])
            i = end
            continue
        elif ch == ";":
            _flush(current, statements)
            current = []
        else:
            current.append(ch)
        i += 1
    _flush(current, statements)
    return statements


def _flush(chars: list[str], out: list[str]) -> None:
    text = "".join(chars).strip()
    code = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--")).strip()
    if code:
        out.append(text)
