"""Collector settings: every one a ``--flag`` and a ``SPANHOUSE_*`` variable.

Precedence is flag > environment > default, as in the OpenTelemetry SDKs; a bad value
is a ``ConfigError`` naming the setting and what it accepts.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from spanhouse import BOOLEAN_WORDS
from spanhouse.clickhouse import DEFAULT_DSN, DSN_ENV, embedded_path
from spanhouse.clickhouse.migrations import MAX_RETENTION_DAYS
from spanhouse.collector.auth import ENV as INLINE_KEYS_ENV
from spanhouse.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """``"512MiB"``, ``"64m"``, ``"1G"`` or a plain number of bytes -> bytes (binary units)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(text)
    if not m:
        raise ConfigError(f"{text!r} is not a size; use bytes or a number with K, M, G (e.g. 512MiB)")
    return int(m.group(1)) * _UNITS[(m.group(2) or "")[:1].lower()]


@dataclass(frozen=True)
class Settings:
    """What ``spanhouse serve`` runs with. Field docs are the ``--help`` texts."""

    dsn: str = DEFAULT_DSN
    host: str = "127.0.0.1"
    grpc_port: int = 4317
    http_port: int = 4318
    api_port: int = 8080
    sql_port: int = 8124
    api_keys: Path | None = None
    spool_dir: Path | None = None
    spool_max_bytes: int = 1 << 30
    max_request_bytes: int = 64 << 20
    dedup_window: float = 300.0
    batch_bytes: int = 32 << 20
    batch_delay: float = 1.0
    allow_unauthenticated: bool = False
    retention_days: int | None = None
    forward_otlp: tuple[str, ...] = ()
    forward_max_bytes: int = 256 << 20
    forward_compression: str = "none"
    forward_ca_file: Path | None = None
    shutdown_timeout: float = 15.0
    log_level: str = "info"

    def validate(self, environ: Mapping[str, str] | None = None) -> None:
        """Raise ``ConfigError`` for settings that cannot work together (``environ``, default
        ``os.environ``, may hold inline API keys)."""
        for name in ("grpc_port", "http_port", "api_port", "sql_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{_named(name)}: {port} is not a TCP port (0-65535; 0 picks a free one)")
        if self.spool_max_bytes < 1 << 20:
            raise ConfigError(f"{_named('spool_max_bytes')} must be at least 1MiB")
        if not 0 < self.batch_delay <= 60:
            raise ConfigError(f"{_named('batch_delay')} must be between 0 and 60 seconds")
        if self.batch_bytes < 1 << 16:
            raise ConfigError(f"{_named('batch_bytes')} must be at least 64KiB")
        if not 1024 <= self.max_request_bytes < 1 << 31:  # gRPC's limit is a signed 32-bit int
            raise ConfigError(f"{_named('max_request_bytes')} must be from 1KiB to just under 2GiB "
                              "(gRPC's largest message)")
        if not 0 <= self.dedup_window <= 3600:
            raise ConfigError(f"{_named('dedup_window')} must be between 0 (off) and 3600 seconds")
        if self.forward_max_bytes < 1 << 16:
            raise ConfigError(f"{_named('forward_max_bytes')} must be at least 64KiB")
        if not 0 < self.shutdown_timeout <= 3600:
            raise ConfigError(f"{_named('shutdown_timeout')} must be between 0 and 3600 seconds")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(f"{_named('log_level')}: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if self.retention_days is not None and not 1 <= self.retention_days <= MAX_RETENTION_DAYS:
            raise ConfigError(f"{_named('retention_days')} must be from 1 to {MAX_RETENTION_DAYS} (leave it unset "
                              "to keep everything)")
        inline_keys = (os.environ if environ is None else environ).get(INLINE_KEYS_ENV, "").strip()
        if self.api_keys is None and not inline_keys and not self.allow_unauthenticated and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to listen on {self.host} without API keys: anyone who can reach it could write "
                "and read every execution. Pass --api-keys FILE (see `spanhouse keys add`), or "
                "--allow-unauthenticated if this network is trusted"
            )

    @property
    def resolved_spool_dir(self) -> Path:
        """The spool directory: as set, else ``spool/`` inside an embedded store's data
        directory (one directory holds everything), else ``./spanhouse-spool`` for a server."""
        if self.spool_dir is not None:
            return self.spool_dir.resolve()
        data = embedded_path(self.dsn)
        return data / "spool" if data else Path("spanhouse-spool").resolve()


LOG_LEVELS = ("debug", "info", "warning", "warn", "error", "critical", "fatal", "notset")
"""Python's level names, as SPANHOUSE_LOG_LEVEL took them when it went to logging unchecked."""


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_HELP = {
    "dsn": f"store: chdb:///path (embedded, default {DEFAULT_DSN}) or http(s)://user:pass@host:8123/db",
    "host": "address to listen on (non-loopback needs --api-keys or --allow-unauthenticated)",
    "grpc_port": "OTLP/gRPC port (0 = pick a free port)",
    "http_port": "OTLP/HTTP port (0 = pick a free port)",
    "api_port": "query API, /healthz, /readyz and /metrics port (0 = pick a free port)",
    "sql_port": "read-only ClickHouse-HTTP-compatible SQL port for Grafana and ClickHouse clients (admin key)",
    "api_keys": "API keys file (see `spanhouse keys add`); without it every request is tenant 'default'",
    "spool_dir": "durable spool directory (default: spool/ inside an embedded store's data directory, "
                 "./spanhouse-spool with a server DSN)",
    "spool_max_bytes": "spool bound; when full, clients are told to retry later (e.g. 1GiB)",
    "max_request_bytes": "largest accepted request after decompression (e.g. 64MiB)",
    "dedup_window": "seconds for which a client's resend of an acknowledged request (its answer was lost) is "
                    "acknowledged again without storing its spans twice; 0 stores every request",
    "batch_bytes": "insert into ClickHouse once this much is spooled (one insert per batch; e.g. 32MiB)",
    "batch_delay": "or once the oldest spooled request is this many seconds old",
    "allow_unauthenticated": "allow a non-loopback --host without API keys",
    "forward_otlp": "also send every accepted request to this OTLP endpoint (repeatable): grpc://host:port, "
                    "grpcs://host:port (TLS) or http(s)://host:port/v1/traces, optionally ;header=value "
                    "({tenant} in a value: each request's tenant; values percent-decoded, a comma as %%2C)",
    "forward_max_bytes": "per forwarding destination: backlog bound, past which its oldest data is dropped and counted",
    "forward_compression": "none or gzip: how forwarded requests are sent (gzip at zlib's fastest level; "
                           "every OTLP receiver takes it)",
    "forward_ca_file": "PEM file of CA certificates trusted, besides the public roots, by https:// and grpcs:// "
                       "forwarding destinations (a private CA)",
    "retention_days": "drop data older than this many days (default: keep everything)",
    "shutdown_timeout": "seconds from SIGTERM to exit: requests under way finish, then the spool drains into the store",
    "log_level": "what is logged to stderr: debug, info, warning, error or critical (Python's level names)",
}
# The keys file is SPANHOUSE_API_KEYS_FILE: SPANHOUSE_API_KEYS holds inline keys (auth.ENV).
_ENV_OVERRIDES = {"dsn": DSN_ENV, "api_keys": "SPANHOUSE_API_KEYS_FILE"}


def env_name(field: str) -> str:
    """The environment variable of a setting."""
    return _ENV_OVERRIDES.get(field, f"SPANHOUSE_{field.upper()}")


def _named(field: str) -> str:
    """A setting as a message names it: its flag and its variable, since either may
    have set it (an error named only the flag when the variable held the bad value)."""
    return f"--{field.replace('_', '-')} (env {env_name(field)})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; defaults stay None so that the environment can fill in."""
    for f in fields(Settings):
        flag = f"--{f.name.replace('_', '-')}"
        help_text = f"{_HELP[f.name]} (env {env_name(f.name)})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        elif "tuple" in str(f.type):
            parser.add_argument(flag, action="append", default=None, help=help_text + ", comma-separated")
        else:
            parser.add_argument(flag, default=None, help=help_text)


def _convert(name: str, kind: Any, raw: str | bool | list[str]) -> Any:
    kind = str(kind)
    try:
        if "tuple" in kind:  # repeated flags, each of which may also be comma-separated, as the env var
            items = [part for item in (raw if isinstance(raw, list) else [str(raw)]) for part in item.split(",")]
            return tuple(i.strip() for i in items if i.strip())
        if "bool" in kind:
            if isinstance(raw, bool):
                return raw
            word = str(raw).strip().lower()
            if word not in BOOLEAN_WORDS:  # a typo must not quietly mean "off" (or "on")
                raise ValueError(word)
            return BOOLEAN_WORDS[word]
        if name.endswith("_bytes"):
            return parse_size(str(raw))
        if "Path" in kind:
            return Path(str(raw)).expanduser()
        if "float" in kind:
            return float(raw)
        if "int" in kind:
            return int(raw)
    except ValueError:
        raise ConfigError(f"{_named(name)}: {raw!r} is not a valid value") from None
    return raw


def from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Settings:
    """Settings from parsed flags, then ``environ`` (default ``os.environ``), then defaults."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = getattr(args, f.name, None)
        if raw is None and environ.get(env_name(f.name), "").strip():
            raw = environ[env_name(f.name)].strip()
        if raw is not None:
            values[f.name] = _convert(f.name, f.type, raw)
    settings = Settings(**values)
    settings.validate(environ)
    return settings
