"""Grafana: every dashboard query runs against the real store as Grafana would send it.

Grafana's ClickHouse plugin (grafana/clickhouse-datasource) turns a panel's SQL into the
statement it sends in three steps, reproduced here exactly:

1. ``applyConditionalAll`` (frontend, src/data/CHDatasource.ts): ``$__conditionalAll(cond,
   $var)`` becomes ``cond``, or ``1=1`` when the variable's current value is '' or All.
2. Grafana's template service (Scenes' interpolator in Grafana 12) with the plugin's format
   function: ``${var:json}``, ``${var:raw}`` and friends (All = every option of the variable).
3. The backend's macros (pkg/macros/macros.go, innermost first): ``$__timeFilter``,
   ``$__fromTime``, ``$__timeInterval``, ``$__interval_s``, ``$__dateFilter`` ...

Demo data goes through the real write path, every variable query runs to fill the next
variable's options, and every panel runs with a concrete selection and with All, over a
short range (per-minute rollups) and a long one (hourly rollups). Each result must have
what its visualisation needs. The plugin's own OTel trace-by-id and trace-search SQL run
against our tables too.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from spanhouse.clickhouse import Store, analytics
from tests.collector_harness import in_child
from tests.conftest import write
from tests.otlp import request, span, span_id, trace_id

GRAFANA = Path(__file__).resolve().parents[1] / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PLUGIN = "grafana-clickhouse-datasource"
DATASOURCE_UID = "spanhouse"

BASE_S = 1_717_200_000  # 2024-06-01T00:00:00Z, a whole hour no other test writes near
MIN_NS = 60_000_000_000
BASE = BASE_S * 1_000_000_000
ALL = ["$__all"]  # Grafana's current value of a multi-value variable set to All


@dataclass(frozen=True)
class TimeContext:
    """What the plugin's backend macros read: the query's time range and interval."""

    name: str
    from_s: int
    to_s: int
    interval_s: int


SHORT = TimeContext("short range, 1m interval", BASE_S - 600, BASE_S + 110 * 60, 60)
LONG = TimeContext("long range, 1h interval", BASE_S - 2 * 86400, BASE_S + 2 * 86400, 3600)


# ---------------------------------------------------------------- the plugin, step 1: $__conditionalAll


def _macro_args(query: str, args_index: int) -> list[str]:
    """CHDatasource.getMacroArgs: the raw arguments of the call whose '(' is at args_index."""
    args: list[str] = []
    depth, last = 0, 1
    sub = query[args_index:]
    for m in re.finditer(r"[(),]", sub):
        if m.group() == "(":
            depth += 1
        elif m.group() == ")":
            depth -= 1
        if m.group() == "," and depth == 1:
            args.append(sub[last:m.end() - 1])
            last = m.end()
        if depth == 0:
            args.append(sub[last:m.end() - 1])
            return args
    return []


def _js_to_string(value: Any) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


def apply_conditional_all(sql: str, current: Mapping[str, Any]) -> str:
    """CHDatasource.applyConditionalAll, which runs before template variables are interpolated."""
    macro = "$__conditionalAll("
    index = sql.rfind(macro)
    while index != -1:
        params = _macro_args(sql, index + len(macro) - 1)
        assert len(params) == 2, f"$__conditionalAll needs exactly 2 arguments: {sql[index:index + 80]}"
        var = re.search(r"(?<=\$\{)[\w\d]+(?=\})|(?<=\$)[\w\d]+", params[1].strip())
        phrase = params[0]
        if var:
            assert var.group() in current, f"$__conditionalAll names unknown variable {var.group()}"
            if _js_to_string(current[var.group()]) in ("", "$__all"):
                phrase = "1=1"
        sql = sql.replace(f"{macro}{params[0]},{params[1]})", phrase, 1)
        index = sql.rfind(macro)
    return sql


# ---------------------------------------------------------------- step 2: Grafana's template service

_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")


def _plugin_format(value: Any) -> str:
    """CHDatasource.format: arrays become 'a','b'; a single value goes in as it is."""
    return "'" + "','".join(value) + "'" if isinstance(value, list) else str(value)


def _single_quote(value: Any) -> str:
    values = value if isinstance(value, list) else [value]
    return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)


def _json_format(value: Any) -> str:
    """Scenes' ``json`` format (formatRegistry.ts): a string goes in as it is, anything else
    (a multi-value variable's array) as JSON.stringify writes it."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


HEREDOC = re.compile(r"\$sh\$.*?\$sh\$", re.S)  # the dashboards' literals: $sh$...$sh$, no escapes inside


def interpolate(sql: str, current: Mapping[str, Any], options: Mapping[str, list[str]]) -> str:
    """getTemplateSrv().replace(sql, scopedVars, plugin format): names that are not dashboard
    variables (the $__ macros, a heredoc's $sh$) are left as they are."""
    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if name not in current:
            return m.group()
        value = current[name]
        if value == ALL:  # no custom allValue: every option of the variable
            value = list(options[name])
        if fmt is None:
            return _plugin_format(value)
        if fmt == "singlequote":
            return _single_quote(value)
        if fmt == "json":
            return _json_format(value)
        if fmt in ("raw", "csv"):
            return ",".join(value) if isinstance(value, list) else str(value)
        raise AssertionError(f"variable format {fmt!r} is not emulated by this test")
    return _VARIABLE.sub(replace, sql)


# ---------------------------------------------------------------- step 3: the backend's macros


def _split_call(sql: str, open_index: int) -> tuple[list[str], int]:
    """The trimmed arguments of the call whose '(' is at open_index, and the index after its ')'."""
    depth, start, args = 0, open_index + 1, []
    for i in range(open_index, len(sql)):
        ch = sql[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i].strip())
                return ([] if args == [""] else args), i + 1
        elif ch == "," and depth == 1:
            args.append(sql[start:i].strip())
            start = i + 1
    raise AssertionError(f"unbalanced macro call: {sql[open_index:open_index + 80]}")


def _expand(name: str, args: list[str] | None, ctx: TimeContext) -> str:
    def one() -> str:
        assert args is not None and len(args) == 1, f"$__{name} expects 1 argument, got {args}"
        return args[0]

    def date(s: int) -> str:
        return datetime.fromtimestamp(s, timezone.utc).strftime("%Y-%m-%d")

    f, t, interval = f"toDateTime({ctx.from_s})", f"toDateTime({ctx.to_s})", max(ctx.interval_s, 1)
    if name == "timeFilter":
        return f"{one()} >= {f} AND {one()} <= {t}"
    if name == "timeFilter_ms":
        return (f"{one()} >= fromUnixTimestamp64Milli({ctx.from_s * 1000}) AND "
                f"{one()} <= fromUnixTimestamp64Milli({ctx.to_s * 1000})")
    if name in ("fromTime", "toTime"):
        return f if name == "fromTime" else t
    if name == "dateFilter":
        return f"{one()} >= toDate('{date(ctx.from_s)}') AND {one()} <= toDate('{date(ctx.to_s)}')"
    if name == "timeInterval":
        return f"toStartOfInterval(toDateTime({one()}), INTERVAL {interval} second)"
    if name == "interval_s":
        return str(interval)
    if name == "timeFrom":
        return f"{one()} >= {f}"
    if name == "timeTo":
        return f"{one()} <= {t}"
    raise AssertionError(f"macro $__{name} is not emulated by this test (add it from pkg/macros/macros.go)")


def expand_macros(sql: str, ctx: TimeContext) -> str:
    """pkg/macros Interpolate: every $__macro, innermost (rightmost) first, arguments trimmed."""
    while matches := list(re.finditer(r"\$__(\w+)", sql)):
        m = matches[-1]
        end, args = m.end(), None
        if end < len(sql) and sql[end] == "(":
            args, end = _split_call(sql, end)
        sql = sql[:m.start()] + _expand(m.group(1), args, ctx) + sql[end:]
    return sql


def render(sql: str, current: Mapping[str, Any], options: Mapping[str, list[str]], ctx: TimeContext) -> str:
    """What the plugin sends for ``sql``: frontend conditionalAll, then variables, then backend macros."""
    assert "--" not in sql and "/*" not in sql, "keep comments out of panel SQL (the backend strips them)"
    out = expand_macros(interpolate(apply_conditional_all(sql, current), current, options), ctx)
    assert "$" not in HEREDOC.sub("", out), f"something was left unexpanded:\n{out}"
    return out


def test_the_emulation_matches_the_plugins_own_test_cases() -> None:
    ctx = TimeContext("plugin tests", 1415792726, 1447328726, 60)
    assert expand_macros("select * from foo where $__timeFilter(cast(sth as timestamp) )", ctx) == (
        "select * from foo where cast(sth as timestamp) >= toDateTime(1415792726) AND "
        "cast(sth as timestamp) <= toDateTime(1447328726)")
    assert expand_macros("SELECT $__timeInterval($__fromTime) AS from_time", ctx) == (
        "SELECT toStartOfInterval(toDateTime(toDateTime(1415792726)), INTERVAL 60 second) AS from_time")
    assert expand_macros("select * from foo where $__timeFilter(coalesce(closed_at, $__toTime))", ctx) == (
        "select * from foo where coalesce(closed_at, toDateTime(1447328726)) >= toDateTime(1415792726) AND "
        "coalesce(closed_at, toDateTime(1447328726)) <= toDateTime(1447328726)")
    assert expand_macros("x >= $__fromTime AND y < $__interval_s", TimeContext("", 0, 0, 0)) == (
        "x >= toDateTime(0) AND y < 1")
    sql = "WHERE $__conditionalAll(a IN ($x), $x) AND $__conditionalAll(b IN (${y:singlequote}), ${y})"
    assert apply_conditional_all(sql, {"x": ALL, "y": ["p", "q"]}) == "WHERE 1=1 AND b IN (${y:singlequote})"
    assert apply_conditional_all(sql, {"x": "", "y": ALL}) == "WHERE 1=1 AND 1=1"
    assert interpolate("IN ($x) AND t = ${t:singlequote} AND $__timeFilter(c)", {"x": ["a", "b"], "t": "o'k"},
                       {}) == "IN ('a','b') AND t = 'o\\'k' AND $__timeFilter(c)"
    # Scenes' json format: JSON.stringify of an array, a string as it is; $sh is no variable
    assert interpolate("$sh$${x:json}$sh$ $sh$${t:json}$sh$ $sh$${t:raw}$sh$", {"x": ["a\\b", 'q"', "é"], "t": "o\\k"},
                       {}) == '$sh$["a\\\\b","q\\"","é"]$sh$ $sh$o\\k$sh$ $sh$o\\k$sh$'
    assert interpolate("${x:json}", {"x": ALL}, {"x": ["p", "q"]}) == '["p","q"]'


# ---------------------------------------------------------------- demo data through the real write path

TOOLS = {  # median seconds, failure rate, how it fails
    "search": (0.15, 0.15, "error.type"),
    "fetch_url": (2.0, 0.25, "message"),
    "sql_query": (0.04, 0.10, "exception"),
    "calculator": (0.003, 0.0, None),
}
AGENTS = {  # execution name: (service, type, tools it calls)
    "support-agent": ("support-bot", "invoke_agent", ["search", "sql_query", "calculator"]),
    "research-agent": ("research", "invoke_agent", ["search", "fetch_url"]),
    "nightly-report": ("research", "invoke_workflow", ["sql_query", "calculator"]),
}
MODELS = [  # request model, response model, USD per 1M input / output tokens
    ("gpt-4o", "gpt-4o-2024-08-06", 2.5, 10.0),
    ("claude-sonnet-4", "", 3.0, 15.0),
]
USERS = ["u-alice", "u-bob", "u-carol", ""]
OTHER_TENANT_VALUES = {"other_tool", "other-svc", "intruder-model", "invoke_agent intruder"}  # never on a panel


@dataclass
class Demo:
    tenant: str
    tool_calls: Counter[str] = field(default_factory=Counter)
    running: int = 0
    executions: dict[str, dict[str, Any]] = field(default_factory=dict)  # trace id -> facts
    model_tokens: Counter[str] = field(default_factory=Counter)
    model_cost: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    spans_by_trace: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))


def _build_demo(tenant: str) -> tuple[Demo, list[Any]]:
    rng = random.Random(20240601)
    demo = Demo(tenant)
    requests = []
    names = list(AGENTS)
    for i in range(80):
        name = names[i % 3]
        service, op, tools = AGENTS[name]
        t, root = trace_id(), span_id()
        start = BASE + i * 67 * 1_000_000_000 + rng.randrange(1_000_000_000)
        user = USERS[i % 4]
        spans, cursor, cost, tokens, tokens_in = [], start + 5_000_000, 0.0, 0, 0
        for call in range(1 + (i % 2)):
            request_model, response_model, price_in, price_out = MODELS[(i + call) % 2]
            tin, tout = rng.randint(200, 3000), rng.randint(50, 800)
            usd = round(tin * price_in / 1e6 + tout * price_out / 1e6, 6)
            attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": request_model,
                     "gen_ai.usage.input_tokens": tin, "gen_ai.usage.output_tokens": tout, "spanhouse.cost_usd": usd}
            if response_model:
                attrs["gen_ai.response.model"] = response_model
            d = rng.randint(300, 3000) * 1_000_000
            spans.append(span(f"chat {request_model}", t, parent=root, start=cursor, duration_ns=d, attributes=attrs))
            model = response_model or request_model
            demo.model_tokens[model] += tin + tout
            demo.model_cost[model] += usd
            cost, tokens, tokens_in, cursor = cost + usd, tokens + tin + tout, tokens_in + tin, cursor + d
            for _ in range(rng.randint(1, 3)):
                tool = rng.choice(tools)
                median, failure, how = TOOLS[tool]
                d = max(1_000_000, int(rng.lognormvariate(math.log(median * 1e9), 0.6)))
                attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                         "gen_ai.agent.name": name, "gen_ai.tool.call.id": f"call-{i}-{call}"}
                kw: dict[str, Any] = {}
                if rng.random() < failure:
                    if how == "error.type":
                        attrs["error.type"] = "RateLimitError"
                        kw["error"] = "429 Too Many Requests"
                    elif how == "message":
                        kw["error"] = f"timed out after {rng.randint(20, 40)} seconds fetching https://example.org/{i}"
                    else:
                        kw["status_code"] = 2
                        kw["events"] = [(cursor, "exception", {"exception.type": "LookupError",
                                                               "exception.message": f"row {rng.randint(1, 999)} not found"})]
                spans.append(span(f"execute_tool {tool}", t, parent=root, start=cursor, duration_ns=d,
                                  attributes=attrs, **kw))
                demo.tool_calls[tool] += 1
                cursor += d
        failed = i % 7 == 3
        root_attrs = {"gen_ai.operation.name": op, "user.id": user, "session.id": f"s-{i % 11}",
                      "input.value": f"request {i}", "output.value": f"result {i}",
                      ("gen_ai.workflow.name" if op == "invoke_workflow" else "gen_ai.agent.name"): name}
        if not user:
            del root_attrs["user.id"]
        if i % 5 == 0:  # the agent span also carries its calls' total, as pydantic-ai records it: counted once
            root_attrs |= {"gen_ai.request.model": MODELS[0][0], "gen_ai.usage.input_tokens": tokens_in,
                           "gen_ai.usage.output_tokens": tokens - tokens_in, "spanhouse.cost_usd": round(cost, 6)}
        spans.insert(0, span(f"{op} {name}", t, sid=root, start=start, duration_ns=cursor - start + 2_000_000,
                             attributes=root_attrs, error="agent gave up after 3 attempts" if failed else None))
        demo.executions[t.hex()] = {"name": name, "service": service, "cost": cost, "tokens": tokens,
                                    "status": "error" if failed else "ok", "user": user}
        demo.spans_by_trace[t.hex()] = spans
        reqs = [request(spans, service=service)]
        if i % 4 == 1:  # feedback on a quarter of the executions, from its own trace
            rating = 1 + (i // 4) % 5
            reqs.append(request([span("spanhouse.feedback", trace_id(), start=cursor + 30 * 1_000_000_000,
                                      attributes={"spanhouse.feedback.execution_id": t.hex(),
                                                  "spanhouse.feedback.value": rating, "user.id": user or "anon",
                                                  "spanhouse.feedback.comment": "wrong answer" if rating < 3 else ""})],
                                service="feedback-ui"))
            if (i // 4) % 2 == 0:
                reqs.append(request([span("spanhouse.feedback", trace_id(), start=cursor + 40 * 1_000_000_000,
                                          attributes={"spanhouse.feedback.execution_id": t.hex(),
                                                      "spanhouse.feedback.name": "accuracy",
                                                      "spanhouse.feedback.value": round(rng.random(), 2)})],
                                    service="feedback-ui"))
        requests += reqs
    for k in range(2):  # running: the SDK's start marker, no finished root yet
        start = BASE + (80 + 5 * k) * MIN_NS
        requests.append(request([span("invoke_agent support-agent", trace_id(), start=start, duration_ns=0,
                                       attributes={"spanhouse.execution.state": "running",
                                                   "gen_ai.operation.name": "invoke_agent",
                                                   "gen_ai.agent.name": "support-agent"})], service="support-bot"))
        demo.running += 1
    return demo, requests


@pytest.fixture(scope="module")
def demo(store: Store) -> Demo:
    tenant = f"grafana-{random.randrange(1 << 32):08x}"
    data, requests = _build_demo(tenant)
    for part in range(3):  # several inserts: aggregate states must merge across them
        write(store, tenant, *requests[part::3])
    # another tenant in the same minutes: must never show up
    other_trace, other_root = trace_id(), span_id()
    write(store, f"{tenant}-other", request([
        span("invoke_agent intruder", other_trace, sid=other_root, start=BASE + 5 * MIN_NS, duration_ns=10 ** 9,
             attributes={"gen_ai.operation.name": "invoke_agent", "spanhouse.cost_usd": 99.0}),
        *[span("execute_tool other_tool", other_trace, parent=other_root, start=BASE + 5 * MIN_NS + k, error="x",
               attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "other_tool",
                           "gen_ai.request.model": "intruder-model", "gen_ai.usage.input_tokens": 5})
          for k in range(20)]], service="other-svc"))
    return data


# ---------------------------------------------------------------- dashboards


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dashboard["panels"]:
        if p["type"] == "row":
            yield from p.get("panels", [])
        else:
            yield p


def _query_sql(variable: Mapping[str, Any]) -> str:
    q = variable["query"]
    return q if isinstance(q, str) else q["rawSql"]


def _run(store: Store, sql: str) -> tuple[list[str], list[str], list[tuple]]:
    result = store.client.query(sql)
    return list(result.column_names), [t.name for t in result.column_types], result.result_rows


@dataclass
class Selection:
    """Current values and the options of every variable, as Grafana holds them."""

    current: dict[str, Any]
    options: dict[str, list[str]]


def _resolve_variables(store: Store, dashboard: Mapping[str, Any], demo: Demo, ctx: TimeContext,
                       wanted: Mapping[str, Any]) -> Selection:
    """Run each query variable in order (each may use the ones before), like Grafana on load."""
    sel = Selection({}, {})
    for v in dashboard["templating"]["list"]:
        name = v["name"]
        if v["type"] == "datasource":
            sel.current[name] = v["current"]["value"]
        elif v["type"] in ("custom", "textbox", "constant"):
            sel.current[name] = v["current"]["value"]
            sel.options[name] = [o["value"] for o in v.get("options", [])]
        elif v["type"] == "query":
            assert v["datasource"] == {"type": PLUGIN, "uid": "${datasource}"}, name
            sql = render(_query_sql(v), sel.current, sel.options, ctx)
            columns, _, rows = _run(store, sql)
            assert len(columns) == 1, f"variable {name}: one column (text = value), got {columns}"
            sel.options[name] = [r[0] for r in rows]
            if name == "tenant":
                assert demo.tenant in sel.options[name] and f"{demo.tenant}-other" in sel.options[name]
                sel.current[name] = demo.tenant
            else:
                want = wanted.get(name, ALL)
                assert sel.options[name], f"variable {name} has no options"
                if want != ALL:
                    assert set(want) <= set(sel.options[name]), (name, want, sel.options[name])
                sel.current[name] = want
        else:
            raise AssertionError(f"variable type {v['type']} not expected")
    return sel


_NUMERIC = re.compile(r"^(Nullable\()?(U?Int\d+|Float\d+|Decimal.*)\)?$")
_TIME = re.compile(r"^(Nullable\()?DateTime(64)?(\(.*\))?\)?$")
_STRING = re.compile(r"^(LowCardinality\()?(Nullable\()?String\)?\)?$")


def _overridden_columns(p: Mapping[str, Any]) -> set[str]:
    names = {o["matcher"]["options"] for o in p["fieldConfig"]["overrides"] if o["matcher"]["id"] == "byName"}
    for t in p.get("transformations", []):
        if t["id"] == "organize":
            for key in ("indexByName", "renameByName", "excludeByName"):
                names |= set(t["options"].get(key, {}))
    return names


def _check_panel(p: Mapping[str, Any], target: Mapping[str, Any], columns: list[str], types: list[str],
                 rows: list[tuple], *, everything: bool) -> None:
    """The shape each visualisation needs from its frame (series overrides checked when All is selected,
    where every series exists)."""
    title, kind = p["title"], p["type"]
    assert rows, f"{title}: no rows"
    numeric = [c for c, t in zip(columns, types) if _NUMERIC.match(t)]
    if kind in ("timeseries", "heatmap"):
        assert target["format"] == 0, f"{title}: time series format (0)"
        assert _TIME.match(types[0]), f"{title}: first column must be the time, got {types[0]}"
        times = [r[0] for r in rows]
        assert times == sorted(times), f"{title}: rows must be sorted by time (long-to-wide needs it)"
        assert numeric, f"{title}: no numeric column"
        for c, t in zip(columns[1:], types[1:]):
            assert _NUMERIC.match(t) or _STRING.match(t), f"{title}: column {c} is {t}"
        if kind == "heatmap":
            assert columns[1:] == numeric, f"{title}: every bucket column numeric"
            bounds = [float(c) for c in columns[1:]]
            assert bounds == sorted(bounds) and math.isinf(bounds[-1]), f"{title}: bucket columns in 'le' order"
        labels = {r[i] for r in rows for i, t in enumerate(types) if _STRING.match(t)}
        for name in _overridden_columns(p) if everything else ():  # a column or a label value
            assert name in columns or name in labels, f"{title}: override {name!r} matches no series"
    else:
        assert target["format"] == 1, f"{title}: table format (1)"
        assert set(_overridden_columns(p)) <= set(columns), \
            f"{title}: overrides/organize name {sorted(set(_overridden_columns(p)) - set(columns))}, not in {columns}"
        if kind == "stat":
            assert len(rows) == 1 and numeric == columns, f"{title}: one row of numbers, got {columns} {types}"
        elif kind in ("bargauge", "barchart"):
            assert numeric and any(_STRING.match(t) for t in types), f"{title}: a label column and a value"
        else:
            assert kind == "table", f"{title}: unexpected panel type {kind}"


@dataclass
class Results:
    by_title: dict[str, tuple[list[str], list[tuple]]]


def _run_dashboard(store: Store, dashboard: Mapping[str, Any], demo: Demo, ctx: TimeContext,
                   wanted: Mapping[str, Any]) -> Results:
    sel = _resolve_variables(store, dashboard, demo, ctx, wanted)
    out = Results({})
    for p in _panels(dashboard):
        assert p["datasource"] == {"type": PLUGIN, "uid": "${datasource}"}, p["title"]
        (target,) = p["targets"]
        assert target["datasource"] == p["datasource"] and target["editorType"] == "sql", p["title"]
        sql = render(target["rawSql"], sel.current, sel.options, ctx)
        try:
            columns, types, rows = _run(store, sql)
        except Exception as exc:  # pragma: no cover - the message is what matters
            raise AssertionError(f"{dashboard['title']} / {p['title']} ({ctx.name}) failed:\n{sql}\n{exc}") from exc
        _check_panel(p, target, columns, types, rows, everything=not wanted)
        for column, values in zip(columns, zip(*rows)):
            assert not OTHER_TENANT_VALUES & set(map(str, values)), f"{p['title']}: another tenant in {column}"
        out.by_title[p["title"]] = (columns, rows)
    return out


def _col(result: tuple[list[str], list[tuple]], name: str) -> list[Any]:
    columns, rows = result
    return [r[columns.index(name)] for r in rows]


CONCRETE = {"service": ["support-bot"], "tool": ["search", "sql_query"]}


def test_dashboard_files_are_valid_and_consistent() -> None:
    assert [p.name for p in DASHBOARDS] == ["cost-and-tokens.json", "executions.json", "tool-health.json"]
    uids = set()
    for path in DASHBOARDS:
        d = _load(path)
        assert d["schemaVersion"] >= 39 and d["uid"].startswith("spanhouse-") and d["id"] is None
        uids.add(d["uid"])
        names = [v["name"] for v in d["templating"]["list"]]
        assert names[:4] == ["datasource", "tenant", "service", "tool"], path.name
        ds = d["templating"]["list"][0]
        assert ds["query"] == PLUGIN and ds["current"]["value"] == DATASOURCE_UID
        tenant = d["templating"]["list"][1]
        assert not tenant["includeAll"] and not tenant["multi"], "one tenant at a time"
        for v in d["templating"]["list"][2:4]:
            assert v["includeAll"] and v["multi"] and v["allValue"] is None
        ids = [p["id"] for p in d["panels"]] + [q["id"] for r in d["panels"] for q in r.get("panels", [])]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids must be unique"
        queries = [_query_sql(v) for v in d["templating"]["list"] if v["type"] == "query"]
        for sql in queries + [p["targets"][0]["rawSql"] for p in _panels(d)]:
            # Grafana's singlequote escapes ' but not \, which ClickHouse reads as an escape: names go in
            # heredocs, as written (raw: one value) or as a JSON array (json: multi-value, All = the options)
            assert ":singlequote" not in sql and not re.search(r"\$\{?(tenant|min_calls)\b(?!:raw\}\$sh\$)", sql), sql
            for m in re.finditer(r"\$\{(service|tool)(:\w+)?\}", sql):
                assert sql[m.start() - 4:m.end() + 4] == f"$sh$${{{m.group(1)}:json}}$sh$", sql
            assert len(HEREDOC.findall(sql)) == sql.count("$sh$") // 2
        for p in _panels(d):
            sql = p["targets"][0]["rawSql"]
            assert "Tenant = $sh$${tenant:raw}$sh$" in sql, f"{p['title']}: every panel filters by tenant"
            assert "$service" in sql and "$tool" in sql, f"{p['title']}: honours the service and tool variables"
            if re.search(r"\botel_traces\b", sql):  # raw spans only when bounded by the range, and said so
                assert "$__timeFilter(Timestamp)" in sql, p["title"]
                assert "otel_traces" in p["description"] and "$__timeFilter" in p["description"], p["title"]
            for unit in re.findall(r'"unit": "([^"]+)"', json.dumps(p["fieldConfig"])):
                assert unit in {"ms", "s", "percentunit", "currencyUSD", "short", "cpm", "none"}, (p["title"], unit)
    assert len(uids) == 3


@pytest.mark.parametrize("ctx", [SHORT, LONG], ids=lambda c: c.name)
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_query_runs_with_all_and_with_a_selection(store: Store, demo: Demo, path: Path,
                                                              ctx: TimeContext) -> None:
    dashboard = _load(path)
    everything = _run_dashboard(store, dashboard, demo, ctx, {})
    some = _run_dashboard(store, dashboard, demo, ctx, CONCRETE)
    assert everything.by_title.keys() == some.by_title.keys() == {p["title"] for p in _panels(dashboard)}
    total_cost = sum(e["cost"] for e in demo.executions.values())
    uid = dashboard["uid"]
    if uid == "spanhouse-tool-health":
        calls = everything.by_title["Calls per minute by tool"]
        per_tool: Counter[str] = Counter()
        for tool, rate in zip(_col(calls, "tool"), _col(calls, "calls_per_min")):
            per_tool[tool] += round(rate * ctx.interval_s / 60)
        assert per_tool == demo.tool_calls
        assert set(_col(some.by_title["Calls per minute by tool"], "tool")) == {"search", "sql_query"}
        heatmap_columns, heatmap_rows = everything.by_title["Latency distribution (heatmap)"]
        assert sum(sum(r[1:]) for r in heatmap_rows) == sum(demo.tool_calls.values())
        slowest = everything.by_title["Slowest tools"]
        assert _col(slowest, "tool")[0] == "fetch_url" and _col(slowest, "tool")[-1] == "calculator"
        assert dict(zip(_col(slowest, "tool"), _col(slowest, "calls"))) == demo.tool_calls
        unreliable = everything.by_title["Least reliable tools"]
        assert "calculator" not in _col(unreliable, "tool") and min(_col(unreliable, "total_calls")) >= 10
        assert set(_col(everything.by_title["Top tool error patterns"], "pattern")) >= {
            "RateLimitError", "LookupError", "timed out after <n> seconds fetching https://example.org/<n>"}
    elif uid == "spanhouse-executions":
        assert everything.by_title["Running now"][1] == [(demo.running,)]
        assert everything.by_title["Executions"][1] == [(len(demo.executions) + demo.running,)]
        failed = everything.by_title["Recent failed executions"]
        assert sorted(_col(failed, "trace_id")) == sorted(
            t for t, e in demo.executions.items() if e["status"] == "error")
        assert set(_col(some.by_title["Recent failed executions"], "execution")) == {"support-agent"}
        per_min = everything.by_title["Executions per minute by status"]
        for status in ("ok", "error", "running"):
            expected = demo.running if status == "running" else sum(
                e["status"] == status for e in demo.executions.values())
            assert round(sum(_col(per_min, status)) * ctx.interval_s / 60) == expected
        assert set(_col(everything.by_title["Executions by type"], "type")) == {"invoke_agent", "invoke_workflow"}
        assert set(_col(everything.by_title["User ratings"], "rating")) == {"1", "2", "3", "4", "5"}
        assert _col(everything.by_title["Lowest-rated executions"], "rating")[0] == 1
        assert set(_col(everything.by_title["Average feedback score"], "score")) == {"user_rating", "accuracy"}
    else:
        assert everything.by_title["Cost"][1][0][0] == pytest.approx(total_cost, abs=1e-5)
        tokens = everything.by_title["Tokens"][1][0]
        assert sum(tokens) == sum(e["tokens"] for e in demo.executions.values())
        by_model: Counter[str] = Counter()
        result = everything.by_title["Tokens by model"]
        for model, tin, tout in zip(_col(result, "model"), _col(result, "input_tokens"), _col(result, "output_tokens")):
            by_model[model] += tin + tout
        assert by_model == demo.model_tokens
        cost_by_model: dict[str, float] = defaultdict(float)
        result = everything.by_title["Cost by model"]
        for model, usd in zip(_col(result, "model"), _col(result, "cost_usd")):
            cost_by_model[model] += usd
        assert cost_by_model == pytest.approx(demo.model_cost, abs=1e-5)
        result = everything.by_title["Cost by service"]
        assert sum(_col(result, "cost_usd")) == pytest.approx(total_cost, abs=1e-4)
        users = everything.by_title["Cost by user"]
        assert set(_col(users, "user")) == {"u-alice", "u-bob", "u-carol", "(no user.id)"}
        expensive = everything.by_title["Most expensive executions"]
        top = max(demo.executions.items(), key=lambda kv: kv[1]["cost"])
        assert _col(expensive, "trace_id")[0] == top[0]
        assert _col(expensive, "cost_usd")[0] == pytest.approx(top[1]["cost"], abs=1e-6)
        assert sum(_col(some.by_title["Cost by service"], "cost_usd")) < total_cost


# ---------------------------------------------------------------- links to the trace view


def _trace_links(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for p in _panels(dashboard):
        for o in p["fieldConfig"]["overrides"]:
            for prop in o["properties"]:
                if prop["id"] == "links":
                    for link in prop["value"]:
                        yield p["title"], o["matcher"]["options"], link


def test_trace_links_open_the_plugins_trace_view_and_its_query_finds_the_trace(store: Store, demo: Demo) -> None:
    linked_panels = set()
    trace = next(t for t, e in demo.executions.items() if e["status"] == "error")
    for path in DASHBOARDS:
        dashboard = _load(path)
        for title, column, link in _trace_links(dashboard):
            linked_panels.add(title)
            values = {"${__data.fields.trace_id}": trace, "${datasource}": DATASOURCE_UID,
                      "${__from}": str(SHORT.from_s * 1000), "${__to}": str(SHORT.to_s * 1000)}
            url = link["url"]
            for ref in set(re.findall(r"\$\{[^}]+\}", url)):
                assert ref in values, f"{title}: link uses {ref}"
                url = url.replace(ref, values[ref])
            parts = urlsplit(url)
            assert parts.path == "/explore"
            query = parse_qs(parts.query)
            assert query["schemaVersion"] == ["1"]
            (pane,) = json.loads(query["panes"][0]).values()
            assert pane["datasource"] == DATASOURCE_UID
            (q,) = pane["queries"]
            assert q["datasource"] == {"type": PLUGIN, "uid": DATASOURCE_UID} and q["format"] == 3
            options = q["builderOptions"]
            assert options["queryType"] == "traces" and options["table"] == "otel_traces"
            assert options["meta"]["isTraceIdMode"] and options["meta"]["traceId"] == trace
            # the SQL the plugin generates for that query (and runs when the link opens): every span
            assert q["rawSql"] == TRACE_BY_ID.format(trace_id=trace)
            columns, _, rows = _run(store, q["rawSql"])
            spans = [dict(zip(columns, r)) for r in rows]
            assert {s["spanID"] for s in spans} == {s.span_id.hex() for s in demo.spans_by_trace[trace]}
            # and the column the plugin hangs its own "View trace" link on exists in that table
            (target,) = next(p for p in _panels(dashboard) if p["title"] == title)["targets"]
            assert re.search(r"\bAS trace_id\b", target["rawSql"]), title
    assert linked_panels == {"Top tool error patterns", "Recent failed executions", "Lowest-rated executions",
                             "Most expensive executions"}


# ---------------------------------------------------------------- the plugin's own trace queries

TRACE_BY_ID = (  # generateTraceIdQuery, OTel column map (reference §2.2, verbatim apart from the id)
    "WITH '{trace_id}' as __gf_trace_id, (SELECT min(Start) FROM \"default\".\"otel_traces_trace_id_ts\" WHERE "
    "TraceId = __gf_trace_id) as __gf_trace_start, (SELECT max(End) + 1 FROM \"default\".\"otel_traces_trace_id_ts\" "
    "WHERE TraceId = __gf_trace_id) as __gf_trace_end SELECT \"TraceId\" as traceID, \"SpanId\" as spanID, "
    "\"ParentSpanId\" as parentSpanID, \"ServiceName\" as serviceName, \"SpanName\" as operationName, "
    "multiply(toUnixTimestamp64Nano(\"Timestamp\"), 0.000001) as startTime, multiply(\"Duration\", 0.000001) as "
    "duration, arrayMap(key -> map('key', key, 'value',\"SpanAttributes\"[key]), mapKeys(\"SpanAttributes\")) as tags, "
    "arrayMap(key -> map('key', key, 'value',\"ResourceAttributes\"[key]), mapKeys(\"ResourceAttributes\")) as "
    "serviceTags, if(\"StatusCode\" IN ('Error', 'STATUS_CODE_ERROR'), 2, 0) as statusCode, "
    "arrayMap((name, timestamp, attributes) -> tuple(name, toString(toUnixTimestamp64Milli(timestamp)), "
    "arrayMap(key -> map('key', key, 'value', attributes[key]), mapKeys(attributes)))::Tuple(name String, timestamp "
    "String, fields Array(Map(String, String))), \"Events\".Name, \"Events\".Timestamp, \"Events\".Attributes) AS logs, "
    "arrayMap((traceID, spanID, attributes) -> tuple(traceID, spanID, arrayMap(key -> map('key', key, 'value', "
    "attributes[key]), mapKeys(attributes)))::Tuple(traceID String, spanID String, tags Array(Map(String, String))), "
    "\"Links\".TraceId, \"Links\".SpanId, \"Links\".Attributes) AS references, \"SpanKind\" as kind, "
    "\"StatusMessage\" as statusMessage, \"TraceState\" as traceState FROM \"default\".\"otel_traces\" WHERE "
    "traceID = __gf_trace_id AND \"Timestamp\" >= __gf_trace_start AND \"Timestamp\" <= __gf_trace_end"
)
TRACE_SEARCH = (  # generateTraceSearchQuery with the default filters (reference §2.3, verbatim)
    "SELECT \"TraceId\" as traceID, \"ServiceName\" as serviceName, \"SpanName\" as operationName, \"Timestamp\" as "
    "startTime, multiply(\"Duration\", 0.000001) as duration FROM \"default\".\"otel_traces\" WHERE ( Timestamp >= "
    "$__fromTime AND Timestamp <= $__toTime ) AND ( ParentSpanId = '' ) AND ( Duration > 0 ) ORDER BY Timestamp DESC, "
    "Duration DESC LIMIT 1000"
)


def test_the_plugins_trace_by_id_query_returns_our_spans(store: Store, demo: Demo) -> None:
    trace = next(t for t, spans in demo.spans_by_trace.items()
                 if any(s.events for s in spans) and demo.executions[t]["status"] == "error")
    columns, _, rows = _run(store, TRACE_BY_ID.format(trace_id=trace))
    got = {r["spanID"]: r for r in (dict(zip(columns, row)) for row in rows)}
    sent = {s.span_id.hex(): s for s in demo.spans_by_trace[trace]}
    assert got.keys() == sent.keys()
    for sid, s in sent.items():
        g = got[sid]
        assert g["traceID"] == trace and g["parentSpanID"] == s.parent_span_id.hex()
        assert g["operationName"] == s.name and g["serviceName"] == demo.executions[trace]["service"]
        assert g["startTime"] == pytest.approx(s.start_time_unix_nano / 1e6, abs=0.01)
        assert g["duration"] == pytest.approx((s.end_time_unix_nano - s.start_time_unix_nano) / 1e6, abs=1e-6)
        assert g["statusCode"] == (2 if s.status.code == 2 else 0)
        assert {t["key"] for t in g["tags"]} == {a.key for a in s.attributes}
        assert {"key": "service.name", "value": g["serviceName"]} in g["serviceTags"]
        assert [e["name"] for e in g["logs"]] == [e.name for e in s.events]
        assert g["kind"] == "Internal" and g["references"] == []


def test_the_plugins_trace_search_query_lists_our_executions(store: Store, demo: Demo) -> None:
    columns, _, rows = _run(store, expand_macros(TRACE_SEARCH, SHORT))
    found = {r[columns.index("traceID")] for r in rows}
    assert set(demo.executions) <= found  # finished roots; running markers have no duration yet
    assert all(r[columns.index("duration")] > 0 for r in rows)


# ---------------------------------------------------------------- provisioning


def test_provisioning_points_at_the_dashboards_and_the_datasource_uid() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML parses the provisioning files (dev extra)")
    ds_file = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "spanhouse.yaml").read_text())
    assert ds_file["apiVersion"] == 1
    (ds,) = ds_file["datasources"]
    assert ds["type"] == PLUGIN and ds["uid"] == DATASOURCE_UID
    j = ds["jsonData"]
    assert j["protocol"] == "http"
    assert j["host"] == "${SPANHOUSE_CLICKHOUSE_HOST}" and j["port"] == "${SPANHOUSE_CLICKHOUSE_PORT}"
    assert ds["secureJsonData"]["password"] == "${SPANHOUSE_CLICKHOUSE_PASSWORD}"
    traces = j["traces"]
    assert traces == {**traces, "defaultTable": "otel_traces", "otelEnabled": True, "otelVersion": "latest",
                      "durationUnit": "nanoseconds", "traceTimestampTableSuffix": "_trace_id_ts",
                      "flattenNested": False, "traceEventsColumnPrefix": "Events", "traceLinksColumnPrefix": "Links"}
    assert traces["defaultDatabase"] == j["defaultDatabase"] == "default"
    used = set(re.findall(r"\$\{(\w+)\}", json.dumps(ds_file)))
    assert used == {f"SPANHOUSE_CLICKHOUSE_{v}" for v in ("HOST", "PORT", "USER", "PASSWORD")}

    provider_file = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "spanhouse.yaml").read_text())
    (provider,) = provider_file["providers"]
    assert provider["type"] == "file" and not provider["options"]["foldersFromFilesStructure"]
    dashboards_path = provider["options"]["path"].rstrip("/")
    for path in DASHBOARDS:
        for v in _load(path)["templating"]["list"]:
            if v["type"] == "datasource":
                assert v["current"]["value"] == ds["uid"]

    compose_file = GRAFANA.parent / "docker-compose.yml"
    if compose_file.exists():  # Grafana there gets both folders and every variable the data source reads
        grafana = yaml.safe_load(compose_file.read_text())["services"]["grafana"]
        mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
        assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
        assert mounts["./grafana/dashboards"] == dashboards_path
        assert used <= set(grafana["environment"]) and "grafana-clickhouse-datasource" in json.dumps(grafana)


def test_the_error_patterns_panel_keeps_the_latest_failures_east_of_utc(tmp_path: Path) -> None:
    """error_patterns keeps days of the engine's time zone; the plugin's $__dateFilter
    sends UTC dates, so in Asia/Kolkata a failure at 20:00 UTC (a Kolkata day later) fell
    out of a range ending at 21:00 UTC."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from spanhouse.clickhouse import IngestItem, open_store\n"
        "from tests import test_grafana as g\n"
        "from tests.otlp import request, span, span_id, trace_id\n"
        "s = open_store(sys.argv[1])\n"
        "t, root, at = trace_id(), span_id(), g.BASE + 20 * 3600 * 10**9\n"
        "s.writer.write([IngestItem('tz', request([\n"
        "    span('invoke_agent a', t, sid=root, start=at, attributes={'gen_ai.operation.name': 'invoke_agent'}),\n"
        "    span('execute_tool search', t, parent=root, start=at + 1, error='boom', attributes={\n"
        "        'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 'search', 'error.type': 'LateError'})])\n"
        "    .SerializeToString())])\n"
        "panel = next(p for d in g.DASHBOARDS for p in g._panels(g._load(d)) if p['title'] == 'Top tool error patterns')\n"
        "ctx = g.TimeContext('15:00-21:00 UTC', g.BASE_S + 15 * 3600, g.BASE_S + 21 * 3600, 60)\n"
        "sql = g.render(panel['targets'][0]['rawSql'], {'tenant': 'tz', 'service': g.ALL, 'tool': g.ALL}, {}, ctx)\n"
        "print([(r[0], r[1], r[2]) for r in s.client.query(sql).result_rows])\n"
        "s.close()\n"
    )
    assert in_child(script, tmp_path, tz="Asia/Kolkata") == ["[('LateError', 'search', 1)]"]


def test_tool_panels_read_the_hourly_rollup_over_long_intervals_and_ranges() -> None:
    """Over days, a per-minute rollup has 60x the rows of the hourly one: every panel that
    reads it has an hourly branch, for intervals of an hour or more in time series and for
    ranges over 24 h in tables (grafana/README.md)."""
    for path in DASHBOARDS:
        for p in _panels(_load(path)):
            for target in p.get("targets", []):
                sql = target.get("rawSql", "")
                if re.search(r"\b(v_)?tool_stats_1m\b|\bv_tool_latency_histogram\b", sql):
                    branches = (("$__interval_s < 3600", "$__interval_s >= 3600") if p["type"] in ("timeseries", "heatmap")
                                else ("dateDiff('hour', $__fromTime, $__toTime) <= 24",
                                      "dateDiff('hour', $__fromTime, $__toTime) > 24"))
                    assert all(b in sql for b in branches), p["title"]
                    assert re.search(r"\b(v_)?tool_stats_1h\b", sql), p["title"]


def _panel_rows(store: Store, dashboard: str, title: str, current: Mapping[str, Any], ctx: TimeContext,
                options: Mapping[str, list[str]] | None = None) -> list[tuple]:
    panel = next(p for p in _panels(_load(GRAFANA / "dashboards" / f"{dashboard}.json")) if p["title"] == title)
    return _run(store, render(panel["targets"][0]["rawSql"], current, options or {}, ctx))[2]


def _agent_run(at_ns: int, *, tool_error: str | None = None, service: str = "svc",
               cost: float = 0.0, tool: str = "search") -> Any:
    """One execution calling ``tool`` at ``at_ns``."""
    t, root = trace_id(), span_id()
    return request([span("invoke_agent a", t, sid=root, start=at_ns, duration_ns=10**9, attributes={
                        "gen_ai.operation.name": "invoke_agent", **({"spanhouse.cost_usd": cost} if cost else {})}),
                    span(f"execute_tool {tool}", t, parent=root, start=at_ns + 1, duration_ns=10**8, error=tool_error,
                         attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool})],
                   service=service)


def test_execution_percentiles_are_exact_as_the_apis(store: Store) -> None:
    """The panels took ``quantile``, which samples 8,192 values: past that many executions
    in a bucket their p95 drifted from the API's exact one (quantilesExactInclusive)."""
    tenant, n = "grafana-exact-quantiles", 10_000
    roots = [span("invoke_agent a", trace_id(), start=BASE + i * 1_000_000, duration_ns=(i + 1) * 1_000_000,
                  attributes={"gen_ai.operation.name": "invoke_agent"}) for i in range(n)]
    write(store, tenant, request(roots, service="svc"))
    ctx = TimeContext("one bucket", BASE_S, BASE_S + 3600, 3600)
    current = {"tenant": tenant, "service": ALL, "tool": ALL}
    exact = {q: round((1 + q * (n - 1)), 3) for q in (0.5, 0.9, 0.95, 0.99)}  # ms: durations 1..n ms
    (by_type,) = _panel_rows(store, "executions", "Executions by type", current, ctx)
    assert by_type[-1] == exact[0.95]
    (series,) = _panel_rows(store, "executions", "Execution duration p50 / p90 / p99", current, ctx)
    assert series[1:] == (exact[0.5], exact[0.9], exact[0.99])


def test_the_error_patterns_panel_leaves_out_the_day_after_a_range_ending_at_midnight(store: Store) -> None:
    """The range's end is exclusive, as the API's window is: toDate($__toTime) took the
    whole next UTC day in when a range ended at midnight."""
    tenant, hour = "grafana-patterns-midnight", 3600 * 10**9
    write(store, tenant, _agent_run(BASE + 12 * hour, tool_error="inside"),
          _agent_run(BASE + 26 * hour, tool_error="the next day"))
    ctx = TimeContext("one UTC day", BASE_S, BASE_S + 24 * 3600, 300)
    rows = _panel_rows(store, "tool-health", "Top tool error patterns", {"tenant": tenant, "service": ALL, "tool": ALL},
                       ctx)
    assert [r[0] for r in rows] == ["inside"]


def test_tool_tables_over_days_leave_out_the_hour_after_the_range(store: Store) -> None:
    """The hourly branch read ``Hour <= $__toTime``: a range ending on the hour counted
    the whole hour after it (two failures after the range made a clean tool 'least reliable')."""
    tenant, hour = "grafana-hour-end", 3600 * 10**9
    write(store, tenant, _agent_run(BASE + 36 * hour), _agent_run(BASE + 48 * hour + MIN_NS, tool_error="boom"))
    ctx = TimeContext("2 days ending on the hour", BASE_S, BASE_S + 48 * 3600, 300)
    current = {"tenant": tenant, "service": ALL, "tool": ALL, "min_calls": "1"}
    assert _panel_rows(store, "tool-health", "Success rate by tool", current, ctx) == [("search", 1, 1.0)]
    assert _panel_rows(store, "tool-health", "Least reliable tools", current, ctx) == []
    assert [r[:3] for r in _panel_rows(store, "tool-health", "Slowest tools", current, ctx)] == [("search", "svc", 1)]


def test_model_panels_select_executions_by_the_service_the_variable_lists(store: Store) -> None:
    """The Service variable lists executions' (root spans') services; the per-model
    panels filtered on each LLM span's own service, so a model called through a gateway
    service vanished from them when its execution's service was selected."""
    tenant, t, root, at = "grafana-model-service", trace_id(), span_id(), BASE + 10 * MIN_NS
    write(store, tenant,
          request([span("invoke_agent planner", t, sid=root, start=at, duration_ns=5 * 10**9,
                        attributes={"gen_ai.operation.name": "invoke_agent"})], service="orchestrator"),
          request([span("chat gpt-4o", t, parent=root, start=at + 1, attributes={
              "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000,
              "gen_ai.usage.output_tokens": 500, "spanhouse.cost_usd": 1.0})], service="llm-gateway"))
    ctx = TimeContext("1h", BASE_S, BASE_S + 3600, 3600)
    dashboard = _load(GRAFANA / "dashboards" / "cost-and-tokens.json")
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "service")
    options = [r[0] for r in _run(store, render(_query_sql(variable), {"tenant": tenant}, {}, ctx))[2]]
    assert options == ["orchestrator"]
    current = {"tenant": tenant, "service": options, "tool": ALL}
    assert [r[1:] for r in _panel_rows(store, "cost-and-tokens", "Cost by model", current, ctx)] == [("gpt-4o", 1.0)]
    assert [r[1:] for r in _panel_rows(store, "cost-and-tokens", "Tokens by model", current, ctx)] == [
        ("gpt-4o", 1000, 500)]


def test_a_service_without_a_name_is_no_option_that_would_mean_all(store: Store) -> None:
    """Spans without service.name are stored with ServiceName ''. Offered as an option,
    selecting it alone made the plugin's $__conditionalAll see '' (its All) and show every
    service. It is no option; All still counts those executions."""
    tenant, at = "grafana-unnamed-service", BASE + 10 * MIN_NS
    unnamed = _agent_run(at + MIN_NS, cost=2.0)
    del unnamed.resource_spans[0].resource.attributes[:]
    write(store, tenant, _agent_run(at, service="svc-a", cost=1.0), unnamed)
    ctx = TimeContext("1h", BASE_S, BASE_S + 3600, 60)
    for name in ("cost-and-tokens", "executions", "tool-health"):
        dashboard = _load(GRAFANA / "dashboards" / f"{name}.json")
        variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "service")
        options = [r[0] for r in _run(store, render(_query_sql(variable), {"tenant": tenant}, {}, ctx))[2]]
        assert options == ["svc-a"], name
    current = {"tenant": tenant, "service": ALL, "tool": ALL}
    assert _panel_rows(store, "cost-and-tokens", "Cost", current, ctx, {"service": ["svc-a"]}) == [(3.0,)]


def test_tool_tables_over_hours_leave_out_the_minute_after_the_range(store: Store) -> None:
    """The per-minute branch read ``$__timeFilter(Minute)``, ``Minute <= $__toTime``: a range
    ending on a minute counted the whole minute after it (a failure 10 s after the range
    made a clean tool 'least reliable')."""
    tenant, hour = "grafana-minute-end", 3600 * 10**9
    write(store, tenant, _agent_run(BASE + 2 * hour + MIN_NS),
          _agent_run(BASE + 3 * hour + 10 * 10**9, tool_error="after the range"))
    ctx = TimeContext("02:00-03:00", BASE_S + 2 * 3600, BASE_S + 3 * 3600, 60)
    current = {"tenant": tenant, "service": ALL, "tool": ALL, "min_calls": "1"}
    assert _panel_rows(store, "tool-health", "Success rate by tool", current, ctx) == [("search", 1, 1.0)]
    assert _panel_rows(store, "tool-health", "Least reliable tools", current, ctx) == []
    assert [r[:3] for r in _panel_rows(store, "tool-health", "Slowest tools", current, ctx)] == [("search", "svc", 1)]
    for title in ("Calls per minute by tool", "Error rate by tool", "Latency p50 / p90 / p99 by tool"):
        times = [r[0].timestamp() for r in _panel_rows(store, "tool-health", title, current, ctx)]
        assert times == [BASE_S + 2 * 3600 + 60], title
    assert [r[0].timestamp() for r in _panel_rows(store, "tool-health", "Latency distribution (heatmap)", current, ctx)
            ] == [BASE_S + 2 * 3600 + 60]


ODD_TOOLS = ["fs\\read", "x\\", "it's", 'say "hi"', "a\\'b", "$tool"]
ODD_SERVICES = ["svc\\1", "o'svc"]


def test_names_with_backslashes_and_quotes_select_their_own_rows(store: Store) -> None:
    r"""Grafana's singlequote format escapes ' but not \, which ClickHouse reads as an escape
    in a string literal: a tool fs\read offered as an option selected nothing (\r is a
    carriage return), and x\ made every panel a syntax error. The names now go in as JSON
    arrays in heredocs."""
    tenant = "grafana-odd-names"
    at = BASE + 30 * MIN_NS
    runs = [(tool, ODD_SERVICES[i % 2], float(i + 1)) for i, tool in enumerate(ODD_TOOLS)]
    write(store, tenant, *[_agent_run(at + i * 10**9, service=svc, cost=cost, tool=tool, tool_error=f"{tool} failed")
                           for i, (tool, svc, cost) in enumerate(runs)],
          _agent_run(at, service="plain", tool="plain", cost=100.0))
    ctx = TimeContext("1h", BASE_S, BASE_S + 3600, 60)
    for name in ("cost-and-tokens", "executions", "tool-health"):
        dashboard = _load(GRAFANA / "dashboards" / f"{name}.json")
        sel = Selection({"tenant": tenant, "service": ALL}, {})
        for v in dashboard["templating"]["list"]:
            if v["name"] in ("service", "tool"):
                sel.options[v["name"]] = [r[0] for r in _run(store, render(_query_sql(v), sel.current, sel.options,
                                                                           ctx))[2]]
        assert sorted(sel.options["service"]) == sorted(ODD_SERVICES + ["plain"]), name
        assert sorted(sel.options["tool"]) == sorted(ODD_TOOLS + ["plain"]), name
    options = {"service": ODD_SERVICES + ["plain"], "tool": ODD_TOOLS + ["plain"]}

    def rows(dashboard: str, title: str, service: Any, tool: Any) -> list[tuple]:
        current = {"tenant": tenant, "service": service, "tool": tool, "min_calls": "1"}
        return _panel_rows(store, dashboard, title, current, ctx, options)

    for tool, svc, cost in runs:
        assert rows("tool-health", "Success rate by tool", ALL, [tool]) == [(tool, 1, 0.0)], tool
        assert [r[:3] for r in rows("tool-health", "Slowest tools", ALL, [tool])] == [(tool, svc, 1)], tool
        assert {r[1] for r in rows("tool-health", "Calls per minute by tool", ALL, [tool])} == {tool}, tool
        assert [r[1] for r in rows("tool-health", "Top tool error patterns", ALL, [tool])] == [tool], tool
        assert rows("executions", "Executions", ALL, [tool]) == [(1,)], tool
        assert rows("cost-and-tokens", "Cost", ALL, [tool]) == [(cost,)], tool
    for svc in ODD_SERVICES:
        mine = {tool for tool, s, _ in runs if s == svc}
        assert {r[0] for r in rows("tool-health", "Slowest tools", [svc], ALL)} == mine, svc
        assert rows("executions", "Executions", [svc], ALL) == [(len(mine),)], svc
        assert {r[1] for r in rows("cost-and-tokens", "Cost by service", [svc], ALL)} == {svc}, svc
    assert {r[0] for r in rows("tool-health", "Slowest tools", ODD_SERVICES, ODD_TOOLS)} == set(ODD_TOOLS)
    assert rows("cost-and-tokens", "Cost", ODD_SERVICES, ALL) == [(sum(c for _, _, c in runs),)]


def test_cost_and_tokens_are_the_apis_stats_also_for_traces_rooted_elsewhere(store: Store) -> None:
    """/api/v1/stats and Cost by model count every trace's usage in the window; Cost and
    Tokens counted only traces with an execution, so an LLM gateway's calls whose caller
    sends no spans (a parent that never arrives) were left out of them alone."""
    tenant, at = "grafana-remote-parent", BASE + 20 * MIN_NS
    t, root = trace_id(), span_id()
    chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt"}
    write(store, tenant,
          request([span("invoke_agent a", t, sid=root, start=at, duration_ns=10**9,
                        attributes={"gen_ai.operation.name": "invoke_agent"}),
                   span("chat gpt", t, parent=root, start=at + 1, attributes={
                       **chat, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10,
                       "spanhouse.cost_usd": 1.0})], service="svc"),
          request([span("chat gpt", trace_id(), parent=span_id(), start=at + 5 * 10**9, attributes={
              **chat, "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100,
              "spanhouse.cost_usd": 5.0})], service="llm-gateway"))
    now = BASE_S + 1800
    stats, window = analytics.stats(store.client, tenant, days=1, now=now), analytics.window(1, now)
    ctx = TimeContext("the API's window", window.since, window.until, 60)
    current = {"tenant": tenant, "service": ALL, "tool": ALL}
    options = {"service": ["svc"], "tool": ["search"]}
    assert stats["cost_usd"] == 6.0 and stats["tokens"] == {"input": 1100, "output": 110, "total": 1210}
    ((cost,),) = _panel_rows(store, "cost-and-tokens", "Cost", current, ctx, options)
    ((tokens_in, tokens_out),) = _panel_rows(store, "cost-and-tokens", "Tokens", current, ctx, options)
    by_model = _panel_rows(store, "cost-and-tokens", "Cost by model", current, ctx, options)
    assert cost == pytest.approx(stats["cost_usd"]) and cost == pytest.approx(sum(r[2] for r in by_model))
    assert (tokens_in, tokens_out) == (stats["tokens"]["input"], stats["tokens"]["output"])
    # a selected service: its executions' traces, in both
    current["service"] = ["svc"]
    ((cost,),) = _panel_rows(store, "cost-and-tokens", "Cost", current, ctx, options)
    by_model = _panel_rows(store, "cost-and-tokens", "Cost by model", current, ctx, options)
    assert cost == 1.0 == sum(r[2] for r in by_model)
    assert _panel_rows(store, "cost-and-tokens", "Tokens", current, ctx, options) == [(100, 10)]
