"""docker-compose.yml and the Dockerfile (Docker cannot run here): every referenced
file exists, and the collector's command and environment match the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from spanhouse.collector import cli, config

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


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
    settings = config.from_args(args, {k: str(v) for k, v in collector["environment"].items()})
    assert settings.host == "0.0.0.0" and settings.dsn.startswith("http://")
    assert settings.api_keys is None  # keys come from SPANHOUSE_API_KEYS: the auth module reads it
    from spanhouse.collector.auth import KeyRing
    ring = KeyRing.load(None, environ={k: str(v) for k, v in collector["environment"].items()})
    assert ring.enabled


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
