"""API keys -> tenant and scopes.

Keys are stored hashed (SHA-256): the keys file holds one key per line,

    sha256:<64 hex digits>  tenant=<tenant>  scopes=ingest,read,admin   # comment

and ``spanhouse keys add`` appends such a line and prints the key once. Keys may also
come from ``SPANHOUSE_API_KEYS`` as ``<key>=<tenant>[:<scope>+<scope>]`` items separated
by commas; they are hashed on load and never kept in clear. Clients send a key as
``Authorization: Bearer <key>`` or ``x-api-key: <key>`` (HTTP headers or gRPC metadata).

With no keys configured (allowed on loopback only, see config.validate) every caller is
tenant ``default`` with every scope.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from spanhouse.errors import AuthError, ConfigError, Forbidden

SCOPES = frozenset({"ingest", "read", "admin"})
ENV = "SPANHOUSE_API_KEYS"
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Principal:
    """Who is calling: their tenant and what they may do."""

    tenant: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        """Raise ``Forbidden`` unless this caller has ``scope`` (admin implies every scope)."""
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(f"this API key lacks the {scope!r} scope; ask for a key with scopes={scope}")


ANONYMOUS = Principal("default", SCOPES)


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def _principal(tenant: str, scopes: Iterable[str], where: str) -> Principal:
    if not _TENANT.fullmatch(tenant):  # match() let a final newline through ('$' matches before it)
        raise ConfigError(f"{where}: tenant {tenant!r} must be 1-64 letters, digits, '_', '.' or '-'")
    scope_set = frozenset(s for s in scopes if s)
    if not scope_set or scope_set - SCOPES:
        raise ConfigError(f"{where}: scopes {sorted(scope_set)} must be a non-empty subset of {sorted(SCOPES)}")
    return Principal(tenant, scope_set)


def _file_line(line: str, where: str) -> tuple[str, Principal]:
    """(key hash, principal) of one keys-file line, without its comment. Strict: a line
    glued to the next (a file without a final newline) or a misspelt field must fail
    loudly, not authenticate a key with another tenant or default scopes."""
    digest, *fields = line.split()
    parts: dict[str, str] = {}
    for field in fields:
        name, sep, value = field.partition("=")
        if not sep or name not in ("tenant", "scopes") or name in parts:
            raise ConfigError(f"{where}: unexpected {field!r}; expected 'sha256:<hex> tenant=<name> scopes=<a,b>'")
        parts[name] = value
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest) or "tenant" not in parts:
        raise ConfigError(f"{where}: expected 'sha256:<hex> tenant=<name> scopes=<a,b>'")
    return digest[7:], _principal(parts["tenant"], parts.get("scopes", "ingest,read").split(","), where)


class KeyRing:
    """Known key hashes and their principals."""

    def __init__(self, principals: Mapping[str, Principal]) -> None:
        self._by_hash = dict(principals)

    @property
    def enabled(self) -> bool:
        """False when no keys are configured (every caller is ``ANONYMOUS``)."""
        return bool(self._by_hash)

    @classmethod
    def load(cls, path: Path | None, environ: Mapping[str, str] | None = None) -> KeyRing:
        """Keys from ``path`` (if given) and ``$SPANHOUSE_API_KEYS``."""
        found: dict[str, Principal] = {}
        if path is not None:
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read API keys file {path}: {exc}") from exc
            except UnicodeDecodeError as exc:
                raise ConfigError(f"API keys file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                  "save it as UTF-8") from exc
            for n, line in enumerate(text.splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if line:
                    digest, principal = _file_line(line, f"{path}:{n}")
                    if digest in found:
                        raise ConfigError(f"{path}:{n}: this key's hash is already on an earlier line; remove one")
                    found[digest] = principal
        raw = (os.environ if environ is None else environ).get(ENV, "")
        from_env: set[str] = set()
        for item in filter(None, (i.strip() for i in raw.split(","))):
            key, sep, rest = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"{ENV}: expected '<key>=<tenant>[:<scope>+<scope>]', got an item without '='")
            tenant, _, scopes = rest.partition(":")
            digest = hash_key(key)
            if digest in found:  # the later one won silently: a key of one tenant became another's admin key
                where = "earlier in it" if digest in from_env else f"in {path}"
                raise ConfigError(f"{ENV}: the key given for tenant {tenant!r} is already given {where}; "
                                  "give each key once")
            found[digest] = _principal(tenant, (scopes or "ingest+read").split("+"), ENV)
            from_env.add(digest)
        if not found and (path is not None or raw.strip()):
            # Keys were asked for: starting without any would let every caller in as an admin.
            raise ConfigError(f"no API key in {path or ENV}; create one with `spanhouse keys add --file FILE "
                              "--tenant NAME`, or drop the setting to run without keys on loopback")
        return cls(found)

    def authenticate(self, key: str | None) -> Principal:
        """The principal of ``key``; ``AuthError`` if keys are on and it is missing or unknown."""
        if not self.enabled:
            return ANONYMOUS
        if not key:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
        principal = self._by_hash.get(hash_key(key))
        if principal is None:
            raise AuthError("unknown API key; check the key, or create one with `spanhouse keys add`")
        return principal


def key_from_headers(get: Callable[[str], str | None]) -> str | None:
    """The key from ``authorization: Bearer …`` or ``x-api-key``; ``get`` reads a
    lower-case header or metadata name (None if absent)."""
    auth = get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return get("x-api-key")


def add_key(path: Path, tenant: str, scopes: Iterable[str]) -> str:
    """Create a key for ``tenant``, append its hash to ``path`` and return the key."""
    principal = _principal(tenant, scopes, "keys add")
    key = "sh_" + secrets.token_urlsafe(32)
    line = f"sha256:{hash_key(key)} tenant={principal.tenant} scopes={','.join(sorted(principal.scopes))}\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+b") as f:
            os.fchmod(fd, 0o600)
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(size - 1)
                if f.read(1) != b"\n":  # a hand-edited file may lack its final newline
                    line = "\n" + line
            f.write(line.encode())
    except OSError as exc:
        raise ConfigError(f"cannot write API keys file {path}: {exc}") from exc
    return key
