"""Named analytics queries: ``queries/<name>.sql``, shared by the API, CLI, benchmarks
and (where they fit) dashboards.

Values never enter SQL text: they are bound as ClickHouse query parameters
(``{name:Type}``). Optional filters are fixed SQL snippets from
``queries/filters/<group>.sql`` — blocks headed ``-- name`` — that the caller picks by
name; ``{{filters}}`` in a query becomes ``AND (<snippet>) AND (…)`` of the chosen ones
(or nothing), so a filter that is not asked for costs nothing at run time. A column
list (or expression) several queries share lives once in ``queries/parts/<name>.sql``
and stands in a query or a filter snippet as ``{{include:<name>}}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from spanhouse.clickhouse import sqlfiles
from spanhouse.clickhouse.pool import Reader

_MARKER = "{{filters}}"
_INCLUDE = re.compile(r"\{\{include:(\w+)\}\}")


@cache
def blocks(relative: str) -> dict[str, str]:
    """The blocks of ``queries/<relative>.sql`` by name: each is headed by a comment
    line holding its name alone (``-- name``), with its parts in place."""
    text = _INCLUDE.sub(lambda m: _part(m.group(1)), sqlfiles.read_text(f"queries/{relative}.sql"))
    found: dict[str, str] = {}
    for block in re.split(r"^-- (?=\w+\s*$)", text, flags=re.M)[1:]:
        name, _, sql = block.partition("\n")
        found[name.strip()] = sql.strip()
    return found


def filter_snippets(group: str) -> dict[str, str]:
    """The snippets of ``queries/filters/<group>.sql`` by name."""
    return blocks(f"filters/{group}")


@cache
def _part(name: str) -> str:
    """``queries/parts/<name>.sql`` as written (its indentation kept), without the final newline."""
    return sqlfiles.read_text(f"queries/parts/{name}.sql").rstrip()


def render(name: str, group: str | None = None, active: Iterable[str] = ()) -> str:
    """The SQL of query ``name`` with its parts and the ``active`` filters of ``group`` in place."""
    sql = _INCLUDE.sub(lambda m: _part(m.group(1)), sqlfiles.query(name))
    if group is None:
        return sql
    snippets = filter_snippets(group)
    unknown = set(active) - snippets.keys()
    if unknown:
        raise KeyError(f"no filter {sorted(unknown)} in queries/filters/{group}.sql")
    where = "".join(f"\n  AND ({snippets[f]})" for f in sorted(set(active)))
    return sql.replace(_MARKER, where)


def rows(client: Reader, name: str, params: Mapping[str, Any], group: str | None = None,
         active: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Run a named query and return its rows as dicts."""
    result = client.query(render(name, group, active), parameters=dict(params))
    return list(result.named_results())


def raw(client: Reader, name: str, params: Mapping[str, Any], fmt: str, group: str | None = None,
        active: Iterable[str] = ()) -> bytes:
    """Run a named query and return its whole result in ClickHouse output format ``fmt``."""
    return client.raw_query(render(name, group, active), parameters=dict(params), fmt=fmt)
