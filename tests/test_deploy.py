"""docker-compose.yml and the Dockerfile (Docker cannot run here): every referenced
file exists, and the collector's command and environment match the CLI."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pytest
import yaml

from spanhouse.collector import cli, config

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


_VARIABLE = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


def _interpolated(value: object, environ: dict[str, str]) -> str:
    """``value`` as compose reads it from the file: ``${NAME}``, ``${NAME:-default}``, and
    ``${NAME:?message}``, which stops compose with the message when NAME is unset or empty."""
    def one(m: re.Match[str]) -> str:
        name, kind, rest = m.groups()
        if environ.get(name):
            return environ[name]
        if kind == "?":
            raise LookupError(rest)
        return rest if kind == "-" else ""
    return _VARIABLE.sub(one, str(value))


def _serve_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"]


def test_every_mounted_or_built_file_exists() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} is missing"
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").exists()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


def test_collector_command_and_environment_match_the_cli() -> None:
    collector = _compose()["services"]["collector"]
    args = _serve_parser().parse_args(collector["command"][1:])  # every flag must exist
    assert collector["command"][0] == "serve"
    known = {config.env_name(f) for f in config.Settings.__dataclass_fields__} | {"SPANHOUSE_API_KEYS"}
    for var in collector["environment"]:
        assert var in known, f"{var} is not a setting the collector reads"
    environ = {k: _interpolated(v, {"SPANHOUSE_API_KEY": "s3cret-of-the-user"})
               for k, v in collector["environment"].items()}
    settings = config.from_args(args, environ)
    assert settings.host == "0.0.0.0" and settings.dsn.startswith("http://")
    assert settings.api_keys is None  # keys come from SPANHOUSE_API_KEYS: the auth module reads it
    from spanhouse.collector.auth import KeyRing
    ring = KeyRing.load(None, environ=environ)
    assert ring.enabled
    assert ring.authenticate("s3cret-of-the-user").tenant == "default"


def test_the_collector_on_every_interface_takes_no_key_but_the_users() -> None:
    """The file held an admin key (``sh_demo_change_me``) for a collector listening on every
    interface of the host: anyone reading the repository could read, export and delete
    what a deployment that kept it stored. Compose now stops without a key of the user's
    own, and Grafana (admin/admin unless set) is published on the host's loopback only."""
    services = _compose()["services"]
    keys = services["collector"]["environment"]["SPANHOUSE_API_KEYS"]
    with pytest.raises(LookupError, match="SPANHOUSE_API_KEY"):
        _interpolated(keys, {})
    with pytest.raises(LookupError):
        _interpolated(keys, {"SPANHOUSE_API_KEY": ""})
    assert "=" not in _VARIABLE.sub("", keys).split("=default:", 1)[0], "a key written in the file"
    assert all(port.startswith("127.0.0.1:") for port in services["grafana"]["ports"])


def test_the_collectors_named_volumes_belong_to_its_user() -> None:
    """A new named volume takes the owner of the image's directory at its mount point, and
    root's when the image has none: the non-root collector could not write its spool."""
    compose = _compose()
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = next(line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER "))
    assert user != "root"
    for volume in compose["services"]["collector"]["volumes"]:
        source, target = volume.split(":")[:2]
        if source in compose["volumes"]:
            assert f"install -d -o {user} -g {user} {target}" in dockerfile, f"{target} is not {user}'s in the image"


def test_services_have_health_checks_and_start_in_order() -> None:
    services = _compose()["services"]
    for name in ("clickhouse", "collector", "grafana"):
        assert "healthcheck" in services[name], name
    assert services["collector"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["collector"]["condition"] == "service_healthy"
    assert services["clickhouse"]["image"].split(":")[1][0].isdigit(), "pin the ClickHouse version"


def test_clickhouse_system_logs_have_ttls() -> None:
    text = (ROOT / "deploy/clickhouse/system-logs.xml").read_text()
    for log in ("query_log", "part_log", "text_log"):
        assert f"<{log}>" in text and "INTERVAL" in text


def _compose_value(value: object) -> str:
    """A compose environment value with ``${VAR:-default}`` read as its default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def test_grafana_reads_clickhouse_as_a_read_only_user_of_its_own() -> None:
    """Grafana logged in as the collector's write user, which also has access management: a
    dashboard editor's SQL could write, drop or create users. It has a user of its own."""
    services = _compose()["services"]
    writer = urlsplit(services["collector"]["environment"]["SPANHOUSE_CLICKHOUSE_DSN"]).username
    clickhouse_env = {k: _compose_value(v) for k, v in services["clickhouse"]["environment"].items()}
    grafana_env = {k: _compose_value(v) for k, v in services["grafana"]["environment"].items()}
    user = grafana_env["SPANHOUSE_CLICKHOUSE_USER"]
    assert user not in (writer, clickhouse_env["CLICKHOUSE_USER"], "default")

    mounts = {v.split(":")[0]: v.split(":")[1] for v in services["clickhouse"]["volumes"]}
    users_xml = next(src for src, dst in mounts.items() if dst.startswith("/etc/clickhouse-server/users.d/"))
    root = ElementTree.parse(ROOT / users_xml).getroot()
    (entry,) = root.findall(f"users/{user}")
    assert entry.findtext("access_management", "0").strip() == "0"
    assert entry.find("grants") is None and entry.find("named_collection_control") is None
    password = entry.find("password")
    assert password is not None and password.get("from_env") in clickhouse_env, "a password set in compose"
    assert clickhouse_env[password.get("from_env")] == grafana_env["SPANHOUSE_CLICKHOUSE_PASSWORD"] != ""
    assert "${" in str(services["grafana"]["environment"]["SPANHOUSE_CLICKHOUSE_PASSWORD"]), "a variable of its own"

    (profile,) = root.findall(f"profiles/{entry.findtext('profile')}")
    assert profile.findtext("readonly") == "1"
    # the plugin sets max_execution_time (the data source's queryTimeout) on every query:
    # readonly=1 refuses that unless it is changeable_in_readonly, which needs this server setting;
    # clickhouse-go sends the query's deadline plus 5 s (a review: 65 over a max of 60 refused all)
    constraint = profile.find("constraints/max_execution_time")
    assert constraint is not None and constraint.find("changeable_in_readonly") is not None
    datasource = yaml.safe_load((ROOT / "grafana/provisioning/datasources/spanhouse.yaml").read_text())
    (ds,) = datasource["datasources"]
    assert int(constraint.findtext("min")) <= int(ds["jsonData"]["queryTimeout"]) + 5 <= int(constraint.findtext("max"))
    config = [ElementTree.parse(ROOT / src).getroot() for src, dst in mounts.items()
              if dst.startswith("/etc/clickhouse-server/config.d/")]
    assert any(c.findtext("access_control_improvements/settings_constraints_replace_previous") == "true"
               for c in config)
    assert ds["editable"] is False, "a provisioned data source Grafana's UI cannot point elsewhere"
