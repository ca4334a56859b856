"""A small client for the query API and the SQL endpoint (used by the CLI).

Errors come back as ``ApiError`` carrying the server's message (the API says what was
wrong and what to do), or ``StoreUnavailable`` when no collector answers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from spanhouse.errors import ConfigError, SpanhouseError, StoreUnavailable


class ApiError(SpanhouseError):
    """The API refused a request; the message is the server's."""


_HINTS = {401: " (pass --api-key KEY or set SPANHOUSE_API_KEY)",
          403: " (use a key with that scope: `spanhouse keys add --scopes ...`)"}
"""What a CLI user does about an answer: the server's message speaks of HTTP headers."""


class ApiClient:
    """Talks to a running collector's API (``url``) and SQL endpoint (``sql_url``)."""

    def __init__(self, url: str, api_key: str | None = None, sql_url: str | None = None,
                 timeout: float = 60.0) -> None:
        if api_key and not api_key.isascii():  # httpx cannot send it: a traceback at the first request
            raise ConfigError("the API key (--api-key or SPANHOUSE_API_KEY) holds a character that is not ASCII "
                              "(a non-breaking space or a typographic quote, pasted with it?); copy the key again")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        except httpx.InvalidURL as exc:
            raise ConfigError(f"--url {url!r} is not a URL ({exc}); give the collector's API as "
                              "http://HOST:PORT (or set SPANHOUSE_URL)") from exc
        self._sql_url = sql_url
        self._key = api_key

    def _send(self, method: str, path: str, params: Mapping[str, Any] | None = None,
              body: Any = None) -> httpx.Response:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self._http.request(method, path, params=clean, json=body)
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"no collector answers at {self._http.base_url}: {exc}; is `spanhouse serve` "
                                   "running there? (set --url or SPANHOUSE_URL)") from exc
        if resp.status_code >= 400:
            hint = _HINTS.get(resp.status_code, "")
            raise ApiError(f"{resp.status_code}: {_message(resp)}{hint}")
        return resp

    def get(self, path: str, **params: Any) -> Any:
        return self._json(self._send("GET", path, params))

    def delete(self, path: str, **params: Any) -> Any:
        return self._json(self._send("DELETE", path, params))

    def post(self, path: str, body: Any) -> Any:
        return self._json(self._send("POST", path, body=body))

    def _json(self, resp: httpx.Response) -> Any:
        """The answer's JSON; an answer that is none comes from something else than the API."""
        try:
            return resp.json()
        except ValueError as exc:
            raise ApiError(f"{self._http.base_url} answered {resp.request.url.path} with something other than "
                           f"the API's JSON ({resp.headers.get('content-type', 'no content type')}): is --url "
                           "the collector's API (its --api-port, 8080 by default)?") from exc

    def stream(self, path: str, **params: Any) -> Iterator[bytes]:
        """Chunks of a streamed response (export)."""
        clean = {k: v for k, v in params.items() if v is not None}
        received: int | None = None  # bytes of the answer, once it began
        try:
            with self._http.stream("GET", path, params=clean) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise ApiError(f"{resp.status_code}: {_message(resp)}")
                received = 0
                for chunk in resp.iter_bytes():
                    received += len(chunk)
                    yield chunk
        except httpx.TransportError as exc:
            if received is not None:  # it answered: told as no collector, the user looked for the wrong fault
                raise StoreUnavailable(f"the collector's answer at {self._http.base_url} broke off after {received} "
                                       f"bytes: {exc}; it is incomplete, run it again") from exc
            raise StoreUnavailable(f"no collector answers at {self._http.base_url}: {exc}") from exc

    def sql(self, query: str, fmt: str) -> str:
        """Run a read-only query on the SQL endpoint; the result in ClickHouse format ``fmt``."""
        if not self._sql_url:
            raise ApiError("no SQL endpoint URL (set --sql-url or SPANHOUSE_SQL_URL)")
        try:
            resp = httpx.post(self._sql_url, content=query.encode(), params={"default_format": fmt},
                              headers={"X-ClickHouse-Key": self._key or ""}, timeout=self._http.timeout)
        except httpx.InvalidURL as exc:
            raise ConfigError(f"--sql-url {self._sql_url!r} is not a URL ({exc}); give the collector's SQL "
                              "endpoint as http://HOST:PORT (or set SPANHOUSE_SQL_URL)") from exc
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"no SQL endpoint answers at {self._sql_url}: {exc}") from exc
        if resp.status_code >= 400:
            raise ApiError(resp.text.strip())
        return resp.text


def _message(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        return resp.text.strip()
    if isinstance(detail, list):  # FastAPI validation errors: say which parameter and why
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail)
    return str(detail)
