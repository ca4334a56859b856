"""The named queries: every file renders (parts included, filters placed) into SQL the
engine parses, and an unknown filter is refused by name."""

from __future__ import annotations

import pytest

from spanhouse.clickhouse import Store, queries, sqlfiles

NAMES = [n.removesuffix(".sql") for n in sqlfiles.list_dir("queries") if n.endswith(".sql")]


@pytest.mark.parametrize("name", NAMES)
def test_every_query_renders_to_sql_the_engine_parses(store: Store, name: str) -> None:
    sql = queries.render(name, "executions" if "{{filters}}" in sqlfiles.query(name) else None)
    assert "{{" not in sql, sql
    for statement in sqlfiles.split_statements(sql):  # delete_traces holds several
        assert store.client.command("SELECT formatQuery({q:String})", parameters={"q": statement})


def test_shared_column_lists_are_included_once_per_place() -> None:
    page, new = queries.render("executions_page", "executions"), queries.render("executions_new")
    for sql in (page, new):
        assert sql.count("e.TraceId AS trace_id") == 1 and "    e.DurationNs / 1e6 AS duration_ms" in sql
    assert "e.ErrorType AS error_type" in page and "e.ErrorType" not in new


def test_an_unknown_filter_is_refused_by_name() -> None:
    with pytest.raises(KeyError, match="no filter \\['nope'\\]"):
        queries.render("executions_page", "executions", ["nope"])
