"""Collector settings (flags > env > defaults) and API keys."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from spanhouse.collector import cli, config
from spanhouse.collector.auth import ANONYMOUS, KeyRing, Principal, add_key, hash_key, key_from_headers
from spanhouse.errors import AuthError, ConfigError, Forbidden


def _settings(argv: list[str], env: dict[str, str]) -> config.Settings:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.from_args(parser.parse_args(argv), env)


def test_flags_beat_environment_beats_defaults() -> None:
    s = _settings(["--grpc-port", "0"], {"SPANHOUSE_GRPC_PORT": "5000", "SPANHOUSE_HTTP_PORT": "5001",
                                         "SPANHOUSE_SPOOL_MAX_BYTES": "2GiB", "SPANHOUSE_CLICKHOUSE_DSN": "chdb:///x"})
    assert (s.grpc_port, s.http_port, s.api_port) == (0, 5001, 8080)
    assert s.spool_max_bytes == 2 << 30 and s.dsn == "chdb:///x"
    assert s.resolved_spool_dir == Path("/x/spool")


@pytest.mark.parametrize("argv,match", [
    (["--grpc-port", "70000"], "is not a TCP port"),
    (["--spool-max-bytes", "lots"], "is not a size"),
    (["--http-port", "x"], "is not a valid value"),
    (["--host", "10.1.2.3"], "refusing to listen on 10.1.2.3 without API keys"),
    (["--retention-days", "36500"], "from 1 to 10000"),
    (["--shutdown-timeout", "-5"], "between 0 and 3600"),
    (["--forward-max-bytes", "0"], "at least 64KiB"),
    (["--max-request-bytes", "2GiB"], "just under 2GiB"),  # passed, then grpcio's OverflowError at start
    (["--log-level", "verbose"], "is not one of debug, info, warning, warn, error, critical, fatal, notset"),
])
def test_bad_settings_say_what_to_do(argv: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _settings(argv, {})


@pytest.mark.parametrize("variable,value", [
    ("SPANHOUSE_HTTP_PORT", "99999"), ("SPANHOUSE_BATCH_DELAY", "100"), ("SPANHOUSE_SPOOL_MAX_BYTES", "1k"),
    ("SPANHOUSE_RETENTION_DAYS", "0"), ("SPANHOUSE_LOG_LEVEL", "verbose"), ("SPANHOUSE_DEDUP_WINDOW", "x"),
])
def test_a_bad_value_from_the_environment_names_its_variable(variable: str, value: str) -> None:
    """A value out of range named the flag alone, which the user had not passed."""
    with pytest.raises(ConfigError, match=f"\\(env {variable}\\)"):
        _settings([], {variable: value})


def test_a_boolean_typo_is_an_error_not_false() -> None:
    assert _settings([], {"SPANHOUSE_ALLOW_UNAUTHENTICATED": "yes"}).allow_unauthenticated is True
    with pytest.raises(ConfigError, match="'ture' is not a valid value"):
        _settings([], {"SPANHOUSE_ALLOW_UNAUTHENTICATED": "ture"})


def test_forward_flags_are_comma_separated_like_the_variable() -> None:
    s = _settings(["--forward-otlp", "grpc://a:4317,http://b:4318/v1/traces", "--forward-otlp", "grpc://c:4317"], {})
    assert s.forward_otlp == ("grpc://a:4317", "http://b:4318/v1/traces", "grpc://c:4317")


def test_sizes() -> None:
    assert [config.parse_size(x) for x in ("10", "1k", "64MiB", "1G", "2gb")] == [10, 1024, 64 << 20, 1 << 30, 2 << 30]


def test_keys_file_round_trip_stores_only_hashes(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    key = add_key(path, "acme", ["ingest"])
    admin = add_key(path, "ops", ["admin"])
    text = path.read_text()
    assert key not in text and hash_key(key) in text
    ring = KeyRing.load(path, environ={})
    p = ring.authenticate(key)
    assert p.tenant == "acme" and p.scopes == {"ingest"}
    p.require("ingest")
    with pytest.raises(Forbidden, match="lacks the 'read' scope"):
        p.require("read")
    ring.authenticate(admin).require("read")  # admin implies every scope
    with pytest.raises(AuthError, match="unknown API key"):
        ring.authenticate("sh_wrong")
    with pytest.raises(AuthError, match="missing API key"):
        ring.authenticate(None)


def test_keys_from_environment_and_anonymous_without_keys() -> None:
    ring = KeyRing.load(None, environ={"SPANHOUSE_API_KEYS": "k1=acme, k2=beta:read+ingest"})
    assert ring.authenticate("k1").scopes == {"ingest", "read"}
    assert ring.authenticate("k2").tenant == "beta"
    assert KeyRing.load(None, environ={}).authenticate(None) is ANONYMOUS


@pytest.mark.parametrize("line", ["sha256:abc tenant=x", "nonsense", f"sha256:{'0' * 64} scopes=read",
                                  f"sha256:{'0' * 64} tenant=bad/name", f"sha256:{'0' * 64} tenant=x scopes=root"])
def test_malformed_keys_file_lines_are_config_errors(tmp_path: Path, line: str) -> None:
    (tmp_path / "k").write_text(line + "\n")
    with pytest.raises(ConfigError):
        KeyRing.load(tmp_path / "k", environ={})


def test_a_keys_file_not_in_utf8_is_a_config_error(tmp_path: Path) -> None:
    """A Latin-1 comment (`# clé`) stopped `serve` with a UnicodeDecodeError traceback."""
    (tmp_path / "k").write_bytes(f"# cl\xe9 de l'équipe\nsha256:{'0' * 64} tenant=x scopes=read\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text .*save it as UTF-8"):
        KeyRing.load(tmp_path / "k", environ={})


def test_a_tenant_ending_in_a_newline_is_refused(tmp_path: Path) -> None:
    """`keys add --tenant $'acme\\n'` wrote the key's line in two, and the next start
    refused the whole file: every key in it stopped working."""
    with pytest.raises(ConfigError, match=r"tenant 'acme\\n' must be"):
        add_key(tmp_path / "k", "acme\n", ["read"])
    assert not (tmp_path / "k").exists()


def test_keys_add_reads_a_home_path_as_serve_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`keys add --file ~/keys` wrote ./~/keys, and serve (which expands it) read another file."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    assert cli.main(["keys", "add", "--file", "~/keys", "--tenant", "acme"]) == 0
    assert (tmp_path / "home" / "keys").exists() and not (tmp_path / "~").exists()
    assert _settings(["--api-keys", "~/keys"], {}).api_keys == tmp_path / "home" / "keys"


def test_key_headers() -> None:
    assert key_from_headers({"authorization": "Bearer abc"}.get) == "abc"
    assert key_from_headers({"authorization": "Basic abc", "x-api-key": "def"}.get) == "def"
    assert key_from_headers({}.get) is None


def test_cli_keys_add_prints_the_key_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "add", "--file", str(tmp_path / "k"), "--tenant", "acme", "--scopes", "ingest,read"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("sh_")
    assert KeyRing.load(tmp_path / "k", environ={}).authenticate(key).tenant == "acme"


def test_cli_serve_refuses_a_public_address_without_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in capsys.readouterr().err


@pytest.mark.parametrize("level", ["DEBUG", "info", "WARN", "warning", "error", "Critical", "FATAL", "NOTSET"])
def test_every_level_name_python_knows_is_taken(level: str) -> None:
    assert _settings([], {"SPANHOUSE_LOG_LEVEL": level}).log_level == level


def test_a_bad_log_level_in_the_environment_is_a_clear_error_not_a_traceback(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANHOUSE_LOG_LEVEL", "verbose")
    assert cli.main(["serve", "--dsn", "chdb:///nonexistent/never-opened"]) == 2
    assert "--log-level (env SPANHOUSE_LOG_LEVEL): 'verbose' is not one of" in capsys.readouterr().err


def test_keys_add_after_a_last_line_without_newline_keeps_both_keys(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first = add_key(path, "acme", ["ingest", "read"])
    path.write_text(path.read_text().rstrip("\n"))  # hand-edited: no final newline
    second = add_key(path, "globex", ["admin"])
    ring = KeyRing.load(path, environ={})
    assert ring.authenticate(first) == Principal("acme", frozenset({"ingest", "read"}))
    assert ring.authenticate(second).tenant == "globex"


@pytest.mark.parametrize("fields", ["tenant=acme tenant=globex", "tenant=acme scope=admin",
                                    "tenant=acme scopes=ingest, admin", f"tenant=acme sha256:{'1' * 64}",
                                    "tenant=acme stray"])
def test_keys_file_fields_are_checked_strictly(tmp_path: Path, fields: str) -> None:
    (tmp_path / "k").write_text(f"sha256:{'0' * 64} {fields}\n")
    with pytest.raises(ConfigError, match="unexpected"):
        KeyRing.load(tmp_path / "k", environ={})


def test_a_key_hash_twice_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "k").write_text(f"sha256:{'0' * 64} tenant=a\nsha256:{'0' * 64} tenant=b\n")
    with pytest.raises(ConfigError, match="already on an earlier line"):
        KeyRing.load(tmp_path / "k", environ={})


def test_a_key_given_twice_in_the_environment_or_also_in_the_file_is_an_error(tmp_path: Path) -> None:
    """The later one won silently: a key meant for tenant acme became a beta admin key."""
    with pytest.raises(ConfigError, match="already given earlier in it"):
        KeyRing.load(None, environ={"SPANHOUSE_API_KEYS": "k1=acme,k1=beta:admin"})
    (tmp_path / "k").write_text(f"sha256:{hash_key('k1')} tenant=acme scopes=ingest,read\n")
    with pytest.raises(ConfigError, match=f"already given in {tmp_path / 'k'}"):
        KeyRing.load(tmp_path / "k", environ={"SPANHOUSE_API_KEYS": "k1=beta:admin"})
    assert KeyRing.load(None, environ={"SPANHOUSE_API_KEYS": "k1=acme,k2=beta"}).authenticate("k2").tenant == "beta"


@pytest.mark.parametrize("text,env", [("", ""), ("# only a comment\n", ""), (None, ","), (None, " , ")])
def test_keys_asked_for_but_none_found_refuses_to_start(tmp_path: Path, text: str | None, env: str) -> None:
    """Otherwise every caller would be the anonymous admin, on any address."""
    path = None
    if text is not None:
        path = tmp_path / "k"
        path.write_text(text)
    with pytest.raises(ConfigError, match="no API key in"):
        KeyRing.load(path, environ={"SPANHOUSE_API_KEYS": env})


def test_cli_keys_add_to_an_unwritable_place_is_a_clear_error(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "add", "--file", str(tmp_path), "--tenant", "acme"]) == 2
    err = capsys.readouterr().err
    assert "cannot write API keys file" in err and "Traceback" not in err
