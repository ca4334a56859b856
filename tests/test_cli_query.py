"""The query commands of the CLI against a running collector."""

from __future__ import annotations

import argparse
import http.server
import io
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from spanhouse.clickhouse import Store
from spanhouse.collector import cli, cli_query
from tests.collector_harness import Running, running_collector
from tests.conftest import write
from tests.otlp import request, span, span_id, trace_id


@pytest.fixture(scope="module")
def served(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, str]]:
    tenant = "cli-query"
    t, root = trace_id(), span_id()
    write(store, tenant, request([
        span("invoke_agent helper", t, sid=root, attributes={"gen_ai.operation.name": "invoke_agent",
                                                             "gen_ai.agent.name": "helper", "input.value": "hi"}),
        span("execute_tool search", t, parent=root, attributes={"gen_ai.operation.name": "execute_tool",
                                                                "gen_ai.tool.name": "search",
                                                                "gen_ai.tool.call.arguments": "{\"q\": 1}"},
             error="search down"),
        span("chat gpt-4o", t, parent=root, attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 420,
                                                        "gen_ai.usage.output_tokens": 35, "spanhouse.cost_usd": 0.0014}),
    ]))
    with running_collector(store, tmp_path_factory.mktemp("cli"), tenant, scopes="ingest,read,admin") as c:
        yield c, t.hex()


def _run(c: Running, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    extra = ["--url", c.api_url, "--api-key", c.key]
    if argv[0] == "sql":
        extra += ["--sql-url", c.sql_url]
    code = cli.main([*argv, *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_executions_list_table_and_json(served: tuple[Running, str], capsys: pytest.CaptureFixture[str]) -> None:
    c, tid = served
    text = _run(c, capsys, "executions", "list")
    assert "1 executions" in text and "helper" in text and tid[:12] in text
    body = json.loads(_run(c, capsys, "executions", "list", "--json", "--status", "error"))
    assert body["total"] == 0
    body = json.loads(_run(c, capsys, "executions", "list", "--json", "--tool", "search"))
    assert [i["trace_id"] for i in body["items"]] == [tid]


def test_executions_show_prints_the_span_tree(served: tuple[Running, str], capsys: pytest.CaptureFixture[str]) -> None:
    c, tid = served
    text = _run(c, capsys, "executions", "show", tid)
    assert "invoke_agent helper" in text and "execute_tool search" in text and "search down" in text
    assert 'arguments {"q": 1}' in text and "result" not in text  # the failed call has no result to show
    assert "usage 420 input tokens, 35 output tokens, 0.0014 USD" in text  # the model call's


@pytest.mark.parametrize("width", [80, 240])  # a terminal's, and piped output's
def test_executions_show_prints_every_span_of_a_deep_tree(store: Store, tenant: str, tmp_path: Path, width: int,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A chain of 70 spans: rich prints nothing of a node whose tree guides fill the
    width, so the lower spans were left out without a sign (19 of 40 at 80 columns)."""
    t, ids = trace_id(), [span_id() for _ in range(70)]
    write(store, tenant, request([span(f"step-{i}", t, sid=sid, parent=ids[i - 1] if i else b"")
                                  for i, sid in enumerate(ids)]))
    monkeypatch.setattr(cli_query, "_console", cli_query.Console(width=width))
    with running_collector(store, tmp_path, tenant) as c:
        text = _run(c, capsys, "executions", "show", t.hex())
    assert all(f"step-{i} " in text for i in range(70))
    levels = (width - 40) // 4
    assert f"{70 - levels} spans below, listed flat" in text and f"{width} columns" in text


def test_export_writes_a_file(served: tuple[Running, str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    c, tid = served
    out = tmp_path / "x.csv"
    _run(c, capsys, "export", "--format", "csv", "--output", str(out))
    lines = out.read_text().splitlines()
    assert lines[0].startswith('"trace_id"') and tid in lines[1]
    # a refused export leaves the file as it was (it was emptied before anything came back)
    assert cli.main(["export", "--status", "bogus", "--output", str(out), "--url", c.api_url, "--api-key", c.key]) == 2
    assert out.read_text().splitlines() == lines and [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def test_export_to_a_path_it_cannot_write_is_a_message(served: tuple[Running, str], capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    """A missing folder or a directory as --output was a traceback (and a directory left a
    stray partial file beside it); --json, which export does not use, was taken silently."""
    c, _ = served
    connect = ["--url", c.api_url, "--api-key", c.key]
    assert cli.main(["export", "--output", str(tmp_path / "missing" / "x.csv"), *connect]) == 2
    assert "cannot write the export to" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    assert cli.main(["export", "--output", str(tmp_path / "out"), *connect]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not any((tmp_path / "out").iterdir())
    (tmp_path / "a-file").write_text("")
    assert cli.main(["export", "--output", str(tmp_path / "a-file" / "x.csv"), *connect]) == 2
    assert "cannot write the export to" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export", "--json", *connect])
    assert "unrecognized arguments: --json" in capsys.readouterr().err
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")  # a symlink loop was a traceback
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    assert cli.main(["export", "--output", str(tmp_path / "loop-a"), *connect]) == 2
    assert "cannot write the export to" in capsys.readouterr().err
    long_names = [tmp_path / ("x" * 250), tmp_path / ("\u00e9" * 125)]  # names a file may have (250 bytes): the
    for long_name in long_names:  # temporary one beside it was too long (the second by bytes, not characters)
        assert cli.main(["export", "--output", str(long_name), *connect]) == 0 and long_name.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", "a-file", "loop-a", "loop-b",
                                                                 *(n.name for n in long_names)])


def test_export_writes_into_devices_fifos_and_symlinked_files_without_replacing_them(
        served: tuple[Running, str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The export was written beside the target and renamed over it, whatever it was: a
    review's `-o /dev/full` (as root) became a regular file, a FIFO's reader got nothing,
    a symlink was replaced by a file."""
    c, tid = served
    connect = ["--url", c.api_url, "--api-key", c.key]
    fifo = tmp_path / "fifo"  # as a device (not written here: run as root on the old code, it replaced it)
    os.mkfifo(fifo)
    read: list[bytes] = []
    reader = threading.Thread(target=lambda: read.append(fifo.read_bytes()))
    reader.start()
    assert cli.main(["export", "--format", "csv", "--output", str(fifo), *connect]) == 0
    reader.join(30)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and tid.encode() in read[0]
    (tmp_path / "real.csv").write_text("old")
    (tmp_path / "link.csv").symlink_to(tmp_path / "real.csv")
    assert cli.main(["export", "--format", "csv", "--output", str(tmp_path / "link.csv"), *connect]) == 0
    assert (tmp_path / "link.csv").is_symlink() and tid in (tmp_path / "real.csv").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.csv", "real.csv"]  # no partial left


def test_control_characters_in_names_reach_the_terminal_escaped(served: tuple[Running, str],
                                                                capsys: pytest.CaptureFixture[str],
                                                                store: Store) -> None:
    """Span and tool names come from the traced code: an escape sequence in one reached
    the operator's terminal (colours, a window title, lines swallowed)."""
    write(store, "cli-query", request([span("execute_tool odd", trace_id(), start=time.time_ns(), attributes={
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "evil\x1b]0;pwned\x07\x1b[31mred"})]))
    text = _run(served[0], capsys, "tools")
    assert "\x1b]0;pwned" not in text and "\x07" not in text and "\x1b[31mred" not in text
    assert "\\x1b" in text and "\\x07" in text  # shown escaped (the narrow column folds the name)


def test_a_large_tool_result_is_shown_cut_in_the_span_tree(served: tuple[Running, str],
                                                          capsys: pytest.CaptureFixture[str], store: Store) -> None:
    """A review's 30 MB tool result took `executions show` 7 minutes to lay out."""
    t = trace_id()
    write(store, "cli-query", request([span("execute_tool fetch", t, start=time.time_ns(), attributes={
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "fetch",
        "gen_ai.tool.call.result": "r" * 100_000})]))
    text = _run(served[0], capsys, "executions", "show", t.hex())
    assert "98,000 more characters: --json shows them" in text and text.count("r") < 10_000


def test_a_feedback_value_that_is_no_finite_number_is_a_usage_error(served: tuple[Running, str],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """'nan' and 'inf' are floats to Python: the request could not be encoded (a traceback)."""
    c, tid = served
    for value in ("nan", "inf", "Infinity"):
        with pytest.raises(SystemExit) as exited:
            cli.main(["feedback", "add", tid, "--value", value, "--url", c.api_url, "--api-key", c.key])
        assert exited.value.code == 2 and "is not a finite number" in capsys.readouterr().err


def test_an_export_stopped_by_sigterm_leaves_no_temporary_file(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """SIGTERM's default action killed the CLI mid-export and left `.x.csv.*.partial`
    beside the target (Ctrl-C removed it); and `-o ''` was called a directory."""
    import signal
    import subprocess
    import sys

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - an export that starts, then waits
            self.send_response(200)
            self.send_header("content-length", "100000")
            self.end_headers()
            self.wfile.write(b'"trace_id"\n')
            self.wfile.flush()
            time.sleep(30)

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow) as web:
        web.daemon_threads = True
        threading.Thread(target=web.serve_forever, daemon=True).start()
        proc = subprocess.Popen([sys.executable, "-m", "spanhouse.collector.cli", "export", "--url",
                                 f"http://127.0.0.1:{web.server_address[1]}", "--output", str(tmp_path / "x.csv")],
                                stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while not list(tmp_path.glob(".x.csv.*.partial")):  # writing: the answer has begun
                assert time.monotonic() < deadline and proc.poll() is None, "the export did not start"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 128 + signal.SIGTERM
        finally:
            proc.kill()
            web.shutdown()
    assert list(tmp_path.iterdir()) == []
    assert cli.main(["export", "--output", ""]) == 2
    assert "--output is empty" in capsys.readouterr().err


def test_sql_runs_read_only_queries(served: tuple[Running, str], capsys: pytest.CaptureFixture[str]) -> None:
    c, _ = served
    text = _run(c, capsys, "sql", "SELECT ToolName, calls, errors FROM v_tool_stats WHERE Tenant = 'cli-query'")
    assert "search" in text
    # one JSON document whatever the rows: JSONEachRow's lines were printed as they came
    assert json.loads(_run(c, capsys, "sql", "--json", "SELECT 1 AS one")) == [{"one": 1}]
    assert json.loads(_run(c, capsys, "sql", "--json", "SELECT number AS n FROM numbers(3)")) == [
        {"n": 0}, {"n": 1}, {"n": 2}]
    assert json.loads(_run(c, capsys, "sql", "--json", "SELECT 1 WHERE 0")) == []
    assert json.loads(_run(c, capsys, "sql", "--json", "SELECT concat('a', char(0xC2, 0x85), 'b') AS s")) == [
        {"s": "a\u0085b"}]  # a character splitlines() cuts at
    code = cli.main(["sql", "--json", "SELECT 1 FORMAT TSV", "--url", c.api_url, "--api-key", c.key,
                     "--sql-url", c.sql_url])
    assert code == 2 and "leave the FORMAT clause out" in capsys.readouterr().err
    code = cli.main(["sql", "DROP TABLE otel_traces", "--url", c.api_url, "--api-key", c.key, "--sql-url", c.sql_url])
    assert code == 2 and "ACCESS_DENIED" in capsys.readouterr().err


def test_errors_are_one_line_with_what_to_do(served: tuple[Running, str], capsys: pytest.CaptureFixture[str]) -> None:
    c, _ = served
    assert cli.main(["executions", "show", "0" * 32, "--url", c.api_url, "--api-key", c.key]) == 2
    assert "404: no execution" in capsys.readouterr().err
    assert cli.main(["executions", "list", "--limit", "0", "--url", c.api_url, "--api-key", c.key]) == 2
    assert "limit:" in capsys.readouterr().err
    assert cli.main(["executions", "list", "--url", "http://127.0.0.1:1"]) == 2
    assert "is `spanhouse serve` running" in capsys.readouterr().err
    assert cli.main(["executions", "list", "--url", c.api_url, "--api-key", ""]) == 2  # no key, keys required
    assert "pass --api-key KEY or set SPANHOUSE_API_KEY" in capsys.readouterr().err
    # a URL that is none, and one of another web server (Grafana's port, say), were tracebacks
    assert cli.main(["executions", "list", "--url", "http://127.0.0.1:8080x"]) == 2
    assert "is not a URL" in capsys.readouterr().err
    assert cli.main(["sql", "SELECT 1", "--sql-url", "http://127.0.0.1:abc"]) == 2
    assert "--sql-url 'http://127.0.0.1:abc' is not a URL" in capsys.readouterr().err

    # another web server (Grafana's port, say), and an export's answer breaking off
    assert cli.main(["stats", "--url", _other_server({"content-type": "text/html"}, b"<html>Grafana</html>")]) == 2
    assert "is --url the collector's API" in capsys.readouterr().err
    assert cli.main(["export", "--url", _other_server({"content-length": "1000"}, b'"trace_id"\n')]) == 2
    err = capsys.readouterr().err  # it answered: "no collector answers" sent the user after the wrong fault
    assert "answer at http://127.0.0.1" in err and "broke off after 11 bytes" in err and "no collector" not in err


def _other_server(headers: dict[str, str], body: bytes) -> str:
    """The URL of a web server answering every GET once with ``headers`` and ``body``
    (a ``content-length`` past the body breaks the answer off), for the one request a
    command sends; it stops after answering."""
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the handler's name
            self.send_response(200)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    web = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=lambda: (web.handle_request(), web.server_close()), daemon=True).start()
    return f"http://127.0.0.1:{web.server_address[1]}"


@pytest.mark.parametrize("command", ["show", "delete"])
def test_an_id_that_is_no_trace_id_is_refused_before_any_request(served: tuple[Running, str], command: str) -> None:
    """`executions show stream` reached the live stream (/executions/stream) and waited on
    it for ever; `delete ../stats` would have been sent to another path."""
    import subprocess
    import sys

    c, _ = served
    for bad in ("stream", "../stats"):
        done = subprocess.run([sys.executable, "-m", "spanhouse.collector.cli", "executions", command, bad,
                               "--url", c.api_url, "--api-key", c.key], capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and "is not an execution id (a trace id of 32 hex digits)" in done.stderr


def test_a_reader_that_stops_reading_is_no_error(tmp_path: Path) -> None:
    """`spanhouse migrate --print | head` ended in a BrokenPipeError traceback."""
    import subprocess
    import sys

    done = subprocess.run(f"{sys.executable} -m spanhouse.collector.cli migrate --print --cluster prod | head -1",
                          shell=True, capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("-- 0000") and "Traceback" not in done.stderr, done.stderr


def test_a_tool_name_is_one_path_segment(served: tuple[Running, str], capsys: pytest.CaptureFixture[str],
                                        store: Store) -> None:
    """'#' and '?' in a tool's name cut the name short ("no tool 'a'") before it was quoted."""
    write(store, "cli-query", request([span("execute_tool odd", trace_id(), start=time.time_ns(), attributes={
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "a#b?c=1 %2F"})]))
    body = json.loads(_run(served[0], capsys, "tool", "a#b?c=1 %2F", "--json"))
    assert body["tool"] == "a#b?c=1 %2F" and sum(p["calls"] for p in body["series"]) == 1


@pytest.mark.parametrize("name", [".", "..", "t" * 600])
def test_every_listed_tool_name_opens_its_detail(served: tuple[Running, str], capsys: pytest.CaptureFixture[str],
                                                 store: Store, name: str) -> None:
    """A URL resolves '.' and '..' away ('tool .' printed the leaderboard, 'tool ..' was a
    404), and names over 512 characters, which ingest takes, were a 422."""
    write(store, "cli-query", request([span("execute_tool odd", trace_id(), start=time.time_ns(), attributes={
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name})]))
    body = json.loads(_run(served[0], capsys, "tool", name, "--json"))
    assert body["tool"] == name and sum(p["calls"] for p in body["series"]) == 1


def test_delete_by_id(served: tuple[Running, str], capsys: pytest.CaptureFixture[str], store: Store) -> None:
    c, _ = served
    extra = request([span("invoke_agent doomed", trace_id())])
    write(store, "cli-query", extra)
    doomed = extra.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    # filters beside an id were ignored and the execution deleted whatever they said
    for extra_args in (["--service", "no-such-service"], ["--before", "2000-01-01T00:00:00"]):
        assert cli.main(["executions", "delete", doomed, *extra_args, "--url", c.api_url, "--api-key", c.key]) == 2
        assert f"drop {extra_args[0]}" in capsys.readouterr().err
    body = json.loads(_run(c, capsys, "executions", "delete", doomed, "--json"))
    assert body == {"executions": 1, "spans": 1}
    # the counts are read before the change: that it happened shows here
    assert cli.main(["executions", "show", doomed, "--url", c.api_url, "--api-key", c.key]) == 2
    assert "404: no execution" in capsys.readouterr().err
    assert store.client.command("SELECT count() FROM otel_traces WHERE TraceId = {t:String}",
                                parameters={"t": doomed}) == 0


def test_feedback_is_added_shown_and_deleted(served: tuple[Running, str], capsys: pytest.CaptureFixture[str]) -> None:
    c, tid = served
    added = json.loads(_run(c, capsys, "feedback", "add", tid, "--rating", "2", "--comment", "slow answer",
                            "--id", "cli:1", "--json"))
    assert added["id"] == "cli:1" and added["value"] == 2 and added["name"] == "user_rating"
    text = _run(c, capsys, "feedback", "show", "cli:1")
    assert "slow answer" in text and tid in text
    assert json.loads(_run(c, capsys, "feedback", "delete", "cli:1", "--json")) == {"feedback": 1, "spans": 0}
    assert cli.main(["feedback", "show", "cli:1", "--url", c.api_url, "--api-key", c.key]) == 2
    assert "404: no feedback cli:1" in capsys.readouterr().err
    score = json.loads(_run(c, capsys, "feedback", "add", tid, "--value", "0.75", "--name", "accuracy", "--json"))
    assert (score["name"], score["value"]) == ("accuracy", 0.75)
    for argv in (["feedback", "add", tid], ["feedback", "add", tid, "--rating", "1", "--value", "1"],
                 ["feedback", "show", "../executions"]):
        with pytest.raises(SystemExit) as exc:
            cli.main([*argv, "--url", c.api_url])
        assert exc.value.code == 2, argv
    capsys.readouterr()


def test_an_api_key_that_is_not_ascii_is_a_message(served: tuple[Running, str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A key pasted with a non-breaking space or typographic quotes was a
    UnicodeEncodeError traceback from httpx in every command."""
    c, _ = served
    for key in (c.key + "\xa0", "\u201c" + c.key + "\u201d"):
        assert cli.main(["executions", "list", "--url", c.api_url, "--api-key", key]) == 2
        assert "not ASCII" in capsys.readouterr().err


class _Terminal(io.StringIO):
    """A terminal's stdin with ``answer`` typed."""

    def isatty(self) -> bool:
        return True


def test_bulk_delete_asks_with_the_count_of_both_bounds(served: tuple[Running, str], capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --yes the CLI counts what it is about to delete (started before --before
    and before --until) and asks on stderr (stdout is the result); no, or the end of
    input, deletes nothing."""
    c, tid = served
    bulk = ["executions", "delete", "--before", "2100-01-01T00:00:00Z", "--url", c.api_url, "--api-key", c.key]
    monkeypatch.setattr("sys.stdin", _Terminal("n\n"))
    assert cli.main([*bulk, "--until", "2000-01-01T00:00:00"]) == 1
    out, err = capsys.readouterr()
    assert err == "delete 0 executions? [y/N] " and out == ""
    monkeypatch.setattr("sys.stdin", _Terminal(""))  # end of input
    assert cli.main(bulk) == 1
    err = capsys.readouterr().err
    assert err.startswith("delete ") and err != "delete 0 executions? [y/N] "
    # not a terminal (a pipe, a cron job): no question that nobody can answer, and no guess
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert cli.main([*bulk, "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "pass --yes" in err
    # usage errors exit 2 like every other error
    assert cli.main(["executions", "delete", "--url", c.api_url, "--api-key", c.key]) == 2
    assert "give a trace id, or --before" in capsys.readouterr().err
    assert json.loads(_run(c, capsys, "executions", "list", "--json"))["total"] >= 1  # nothing deleted


def test_values_that_look_like_markup_are_printed_as_they_are(store: Store, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Names, messages and arguments are data: '[/tmp/data]' made the console's markup
    parser raise (a traceback, exit 1) and '[red]x[/red]' lost its brackets."""
    tenant, t, root = "cli-markup", trace_id(), span_id()
    name = "parse [/tmp/data] [red]files[/red]"
    write(store, tenant, request([
        span(f"invoke_agent {name}", t, sid=root, attributes={"gen_ai.operation.name": "invoke_agent",
                                                              "gen_ai.agent.name": name}),
        span("execute_tool read", t, parent=root, error="No such file: [/etc/app.conf]",
             attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.call.arguments": "[bold]{}[/bold]"}),
    ]))
    with running_collector(store, tmp_path, tenant, scopes="read") as c:
        listed = _run(c, capsys, "executions", "list")
        shown = _run(c, capsys, "executions", "show", t.hex())
    assert name in listed
    assert f"invoke_agent {name}" in shown and "No such file: [/etc/app.conf]" in shown and "[bold]{}[/bold]" in shown


def test_list_shows_tokens_and_tools_show_their_trend(store: Store, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """README: the list 'with tool calls, errors, tokens, cost'; tools 'with ... trend' (a
    nested object the table used to leave out)."""
    tenant, t, root = "cli-columns", trace_id(), span_id()
    now = time.time_ns()
    write(store, tenant, request([
        span("invoke_agent helper", t, sid=root, start=now, attributes={"gen_ai.operation.name": "invoke_agent",
                                                                         "gen_ai.usage.input_tokens": 321}),
        span("execute_tool search", t, parent=root, start=now + 1,
             attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"})]))
    with running_collector(store, tmp_path, tenant, scopes="read") as c:
        listed = _run(c, capsys, "executions", "list")
        tools = _run(c, capsys, "tools", "--days", "1")
    assert "input_tokens" in listed and "321" in listed
    assert "search" in tools and "trend." in tools  # trend.calls_change, trend.p95_change_pct, ...


def test_sql_pointed_at_another_collectors_api_asks_for_its_sql_url(capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """--url names the API; the SQL endpoint is another port: the query went to whatever
    answered on 127.0.0.1:8124, another collector's store."""
    monkeypatch.delenv("SPANHOUSE_SQL_URL", raising=False)
    assert cli.main(["sql", "SELECT 1", "--url", "http://127.0.0.1:38307"]) == 2
    assert "pass --sql-url" in capsys.readouterr().err


def test_a_list_of_rows_of_different_kinds_shows_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    """The performance tips mix kinds with different figures; the columns were the first
    tip's, so a failing tool's error rate and a token-heavy span's tokens were not shown."""
    cli_query.show({"tips": [{"kind": "slow_tool", "tool": "search", "p95_ms": 1200},
                             {"kind": "failing_tool", "tool": "fetch", "error_rate": 0.25, "errors": 7},
                             {"kind": "token_heavy", "span_name": "chat big", "tokens": 98765}]})
    out = capsys.readouterr().out
    for shown in ("error_rate", "0.25", "errors", "span_name", "chat big", "tokens", "98765", "p95_ms", "1200"):
        assert shown in out, (shown, out)


@pytest.mark.parametrize("command, path", [("tools", "/api/v1/tools"), ("stats", "/api/v1/stats"),
                                           ("performance", "/api/v1/performance"), ("anomalies", "/api/v1/anomalies"),
                                           ("tool", "/api/v1/tools/{name}")])
def test_every_query_parameter_of_the_api_is_a_flag_of_its_command(served: tuple[Running, str], command: str,
                                                                    path: str) -> None:
    """performance lacked --min-calls and --min-repeats, anomalies --min-calls and
    --limit: the API's own options, out of the CLI's reach."""
    operation = httpx.get(served[0].api_url + "/openapi.json").json()["paths"][path]["get"]
    wanted = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags = {a.dest for a in sub._actions}
    assert wanted <= flags, sorted(wanted - flags)
