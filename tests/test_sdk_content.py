"""Content capture: JSON-safe serialisation, visible truncation, redaction, the user hook,
and the switches that turn capture off globally and per decorator."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import enum
import json
import logging
import signal
import time
import types
import urllib.parse
import tracemalloc
import unittest.mock
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import pydantic
import pytest

from spanhouse import sdk
from spanhouse.sdk._content import REDACTED, ContentPolicy, is_secret_key, scrub_urls
from spanhouse.sdk.testing import CapturedSpans, capture_spans

ARGS = "gen_ai.tool.call.arguments"
RESULT = "gen_ai.tool.call.result"


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    with capture_spans() as captured:
        yield captured


@dataclasses.dataclass
class Credentials:
    user: str
    password: str


class Color(enum.Enum):
    RED = "red"


class Order(pydantic.BaseModel):
    id: int
    api_key: str
    items: list[str]


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque 1>"


class Unreprable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_values_become_json() -> None:
    policy = ContentPolicy(1000)
    value = {
        "n": 1, "f": 1.5, "nan": float("nan"), "inf": float("-inf"), "b": True, "none": None, "s": "é",
        "list": [1, (2, 3)], "set": {4}, "deque": deque([5]), "bytes": b"hi", "binary": b"\xff\x00",
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5), "day": datetime.date(2026, 1, 2), "color": Color.RED,
        "creds": Credentials("ann", "hunter2"), "order": Order(id=1, api_key="k", items=["a"]),
        "path": PurePosixPath("/tmp/x"), "id": uuid.UUID(int=1), "opaque": Opaque(), "bad": Unreprable(), 7: "int key",
    }
    out = json.loads(policy.value(value))
    assert out == {
        "n": 1, "f": 1.5, "nan": "nan", "inf": "-inf", "b": True, "none": None, "s": "é",
        "list": [1, [2, 3]], "set": [4], "deque": [5], "bytes": "hi", "binary": "base64:/wA=",
        "when": "2026-01-02T03:04:05", "day": "2026-01-02", "color": "red",
        "creds": {"user": "ann", "password": REDACTED}, "order": {"id": 1, "api_key": REDACTED, "items": ["a"]},
        "path": "PurePosixPath('/tmp/x')", "id": "UUID('00000000-0000-0000-0000-000000000001')", "opaque": "<Opaque 1>",
        "bad": "<Unreprable (repr failed)>", "7": "int key",
    }
    assert policy.value("plain text") == "plain text"  # a top-level string is recorded as it is
    assert policy.value(None) == "null" and policy.value(3) == "3"


def test_bytes_utf8_cannot_read_holding_a_urls_secret_are_text_with_it_redacted() -> None:
    """Such bytes were recorded as base64 and never searched: a request line's api_key=
    or a connection string with one Latin-1 byte in its password came back decoded."""
    policy = ContentPolicy(1000)
    request = b"GET /v1/q?api_key=SECRETBYTES HTTP/1.1\r\nHost: x\r\n\r\n\x1f\x8b\x08"
    dsn = b"postgresql://app:p\xe4ss-SECRET@db.internal/orders"
    accented = "postgresql://app:voilà-SECRET@db/x ".encode() + b"\xff"  # UTF-8 but for one byte
    assert policy.value(accented) == f"postgresql://app:{REDACTED}@db/x \\xff"
    assert policy.value(request) == "GET /v1/q?api_key=[REDACTED] HTTP/1.1\r\nHost: x\r\n\r\n\x1f\\x8b\x08"
    assert policy.value(dsn) == f"postgresql://app:{REDACTED}@db.internal/orders"
    assert policy.value(b"\xff\x00" * 600).startswith("base64:/wD/")  # binary without a URL: base64, cut
    assert json.loads(policy.value({"body": request}))["body"].startswith("GET /v1/q?api_key=[REDACTED] ")


def test_deep_nesting_is_cut_with_a_marker() -> None:
    value: Any = "bottom"
    for _ in range(12):
        value = [value]
    out = ContentPolicy(1000).value(value)
    assert out.startswith("[[[[[[[[") and "[nested deeper than 8:" in out


def test_what_is_nested_too_deep_is_named_not_rendered() -> None:
    """Below the depth limit a value is named by its type: its repr was rendered whole
    (0.3 s for 5M items) and, cut or not, showed the secrets in it unredacted."""
    rendered = []

    class Item:
        def __repr__(self) -> str:
            rendered.append(1)
            return "item"

    value: Any = [Item() for _ in range(5_000)]
    for _ in range(8):
        value = {"k": value}
    assert ContentPolicy(1000).value(value).endswith('{"k":"[nested deeper than 8: list]"}}}}}}}}') and not rendered
    deep: Any = {"auth": {"api_key": "sk-live-SECRET", "password": "hunter2"}}
    for _ in range(7):
        deep = {"k": deep}
    assert "SECRET" not in ContentPolicy(1000).value(deep) and "hunter2" not in ContentPolicy(1000).value(deep)


def test_secrets_in_name_value_pairs_and_undumpable_models_are_redacted() -> None:
    """Headers kept as (name, value) pairs (ASGI's scope, so a Starlette Request passed
    to a decorated endpoint; dict.items()) passed by name; a Pydantic model that could
    not dump itself to JSON was recorded by its repr, every field shown."""
    from pydantic import BaseModel, ConfigDict

    class Conn:
        pass

    class Settings(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        api_key: str
        conn: Conn
        region: str

    scope = {"type": "http", "headers": [(b"authorization", b"Bearer sk-live-SECRET"), (b"cookie", b"s=COOKIE"),
                                         (b"accept", b"*/*")]}
    out = ContentPolicy(4000).value({"scope": scope, "items": {"token": "abc123"}.items(),
                                     "pairs": [["password", "hunter2"]], "settings": Settings(
                                         api_key="sk-live-SECRET", conn=Conn(), region="eu")})
    assert not any(secret in out for secret in ("SECRET", "COOKIE", "abc123", "hunter2")), out
    assert '["authorization","[REDACTED]"]' in out and '["accept","*/*"]' in out and '"region":"eu"' in out


def test_a_lone_secret_pair_is_redacted_as_argument_return_value_and_entry(spans: CapturedSpans) -> None:
    """A (name, value) pair was redacted only as an item of a sequence: one passed as an
    argument or returned on its own was recorded with its secret."""
    @sdk.tool
    def credential(header: tuple[str, str], options: dict[str, Any]) -> tuple[str, str]:
        return ("api_key", "sk-live-RETURNED")

    credential(("Authorization", "Bearer sk-live-ARG"), {"auth": ["user", "x"], "h": (b"cookie", b"s=COOKIE")})
    span = spans.by_name("execute_tool credential")
    assert json.loads(span.attributes[ARGS]) == {  # type: ignore[index,arg-type]
        "header": ["Authorization", REDACTED], "options": {"auth": REDACTED, "h": ["cookie", REDACTED]}}
    assert json.loads(span.attributes[RESULT]) == ["api_key", REDACTED]  # type: ignore[index,arg-type]
    assert ContentPolicy(100).value(["password", "hunter2"]) == '["password","[REDACTED]"]'
    assert ContentPolicy(100).value(("user", "ada")) == '["user","ada"]'


@pytest.mark.parametrize("key", ["password", "db_password", "passwd", "pwd", "db_pwd", "id_jwt", "token",
                                 "access_token", "refresh-token", "refresh_tokens", "api_tokens", "accessTokens",
                                 "id_tokens", "oauth_tokens",
                                 "api_key", "apiKey", "x-api-key", "secret", "client_secret", "authorization",
                                 "Authorization", "auth", "credentials", "private_key", "aws_access_key_id",
                                 "cookie", "session_key", "jwt", "bearer", "signature", "passphrase",
                                 "encryption_key", "hmac_key", "Ocp-Apim-Subscription-Key", "ssh_key", "csrf_token",
                                 "X-XSRF-TOKEN", "credit_card", "card_number", "cvv", "ssn", "user_ssn", "SSN",
                                 "social_security_number", "pass", "DB_PASS", "smtp-pass", "passcode", "pass1",
                                 "pass2", "pass_word", "pass_phrase", "db_pass_1", "passcode_2", "dbpass", "DBPASS",
                                 "smtppass", "rootpass", "adminpass", "userpass", "mysqlpass", "pass_code", "pass_key",
                                 "PASS_KEY", "vault_pass_b64", "pass_hash", "pass_enc", "pass_v2", "pass_value",
                                 "passkey", "pass_hashed", "pass2_hash", "db_pass_v2_enc", "SMTP_PASS_1_B64",
                                 "vault_pass2_key", "admin_pass_2_hash"])
def test_secret_looking_keys(key: str) -> None:
    assert is_secret_key(key)


def test_a_long_name_of_pass_and_digits_is_read_at_once() -> None:
    """A diff review: "pass" + 24 digits + a letter took 3 s (exponential: each digit could
    end one repetition or go on with the next), where any argument name, mapping key or
    URL parameter of recorded text is checked."""
    def too_slow(*_: object) -> None:
        raise TimeoutError("the secret-key pattern backtracks")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(5)
    try:
        assert not is_secret_key("pass" + "1" * 60 + "x")
        assert scrub_urls("https://a.example/?pass" + "1" * 60 + "x=value").endswith("=value")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("key", ["max_tokens", "input_tokens", "tokens_used", "token_count", "token_type", "tokenizer",
                                 "tokens", "output_tokens", "completion_tokens", "total_tokens", "max_new_tokens",
                                 "author", "token_ids", "prompt_token_ids", "token_logprobs", "eos_token_id",
                                 "pad_token_id", "bos_token", "mask_token", "sort_key", "monkey", "lesson",
                                 "authors", "user", "query", "session_id", "name", "input_token_details",
                                 "output_token_details", "token_budget", "bypass", "passenger", "compass",
                                 "pass@1", "pass@k", "pass_rate", "pass_at_1", "first_pass", "is_pass",
                                 "pass_threshold", "pass_fds", "pass_through", "pass_context", "pass_obj",
                                 "pass_filenames", "pass_name", "pass_id", "pass_score", "pass_kwargs",
                                 "surpass", "trespass"])
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_secrets_inside_urls_are_redacted_and_the_rest_kept() -> None:
    """A key passed inside a URL (Google's ``key=``, ``api_key=``, a password in the
    userinfo) was recorded as it was: no key named it."""
    policy = ContentPolicy(1000)
    url = ("https://maps.example.com/geocode?address=Main%20St&key=AIzaSyEXAMPLE&access_token=ya29.x&sort_key=name"
           "#top")
    assert policy.value(url) == ("https://maps.example.com/geocode?address=Main%20St&key=[REDACTED]"
                                 "&access_token=[REDACTED]&sort_key=name#top")
    assert json.loads(policy.mapping({"dsn": "postgres://ada:hunter2@db:5432/app?sslmode=require"})) == {
        "dsn": "postgres://ada:[REDACTED]@db:5432/app?sslmode=require"}
    prose = "set key=value in the config; email ada@example.com"  # no URL: kept
    assert policy.value(prose) == prose
    for url, scrubbed in [
        ("redis://:s3cret@cache:6379/0", "redis://:[REDACTED]@cache:6379/0"),  # no user, as redis-py writes it
        ("postgresql://ada:Ab/Cd+Ef@db:5432/app", "postgresql://ada:[REDACTED]@db:5432/app"),  # as SQLAlchemy takes it
        ("redis://:p@ss@cache:6379", "redis://:[REDACTED]@cache:6379"),  # as urllib takes it (the last @)
        ("https://u:p@h.io/mail/x@y.com", "https://u:[REDACTED]@h.io/mail/x@y.com"),
        ("http://localhost:8080?email=ada@example.com", None),  # a port and a query: no password
        ("http://registry:4873/@scope/pkg", None),  # a port and a path
        ("ftp://anonymous@host/f", None),
        ("postgresql://app:Xy#9k?Lm@db:5432/app", "postgresql://app:[REDACTED]@db:5432/app"),  # as libpq takes it
        ('{"cache":"redis://default:pw@cache:6379","owner":"ops@example.com"}',  # compact JSON: the quote ends it
         '{"cache":"redis://default:[REDACTED]@cache:6379","owner":"ops@example.com"}'),
        ('{"endpoint":"http://localhost:8080","owner":"ada@example.com"}', None),
        ("http://[::1]:5173/@vite/client", None),  # an IPv6 host, a port and a path
        ("postgresql://app:it's-s3cret@db:5432/app", "postgresql://app:[REDACTED]@db:5432/app"),
        ("connecting to mysql://o'brien:hunter2@db:3306/crm", "connecting to mysql://o'brien:[REDACTED]@db:3306/crm"),
        ('{"dsn": "postgresql://app:Pa\\"ss9@db/app"}', '{"dsn": "postgresql://app:[REDACTED]@db/app"}'),  # \" in JSON
        ("origins=http://localhost:3000,http://localhost:3001", None),  # ports followed by a comma
        ("postgresql://app:Xk9#q\\@db:5432/app", "postgresql://app:[REDACTED]@db:5432/app"),  # ends in a backslash
        (f"postgresql://iam:{'tok%2B' * 200}@db:5432/app", "postgresql://iam:[REDACTED]@db:5432/app"),  # 1,200 chars
        ('{"docs":"https://x.com/a?q=1","db":"redis://:hunter2@cache:6379/0"}',  # a query value ends at its quote
         '{"docs":"https://x.com/a?q=1","db":"redis://:[REDACTED]@cache:6379/0"}'),
        ('{"url":"https://x.com/?key=AIzaXYZ","note":"hello world"}',
         '{"url":"https://x.com/?key=[REDACTED]","note":"hello world"}'),
        ("https://h.io/login?user=bob&password=Pa'ss-w0rd", "https://h.io/login?user=bob&password=[REDACTED]"),
        ('https://h.io/cb?access_token="tok-9f8e7d6c"', 'https://h.io/cb?access_token="[REDACTED]"'),
        ("https://h.io/x?api_key='sk-live-9f8e7d6c'&page=2", "https://h.io/x?api_key='[REDACTED]'&page=2"),
        # the value of a parameter that is no secret was taken whole, what it held unsearched
        ("https://h.io/a?q=1;token=abc&b=2", "https://h.io/a?q=1;token=[REDACTED]&b=2"),
        ("https://app.io/login?next=https://u:pw@db/x", "https://app.io/login?next=https://u:[REDACTED]@db/x"),
        ("https://app.io/?redirect=/cb?api_key=zz&page=2", "https://app.io/?redirect=/cb?api_key=[REDACTED]&page=2"),
        # a relative URL (no scheme to look for) and an OAuth implicit flow's fragment were not searched
        ("/v1/geocode?address=x&key=SECRET2", "/v1/geocode?address=x&key=[REDACTED]"),
        ("GET /v1/q?api_key=SECRET3 HTTP/1.1", "GET /v1/q?api_key=[REDACTED] HTTP/1.1"),
        ("https://app.io/cb#access_token=SECRET1&token_type=bearer",
         "https://app.io/cb#access_token=[REDACTED]&token_type=bearer"),
        ("Is it raining? key=value pairs? a?b", None),  # questions in a prompt are no query
        ("GET /v1/items?verbose&api_key=SECRET6 HTTP/1.1", "GET /v1/items?verbose&api_key=[REDACTED] HTTP/1.1"),
        ("/oauth/callback#access_token=SECRET7&token_type=bearer",
         "/oauth/callback#access_token=[REDACTED]&token_type=bearer"),
        ("# Heading #python #1", None),
        ("class Cache{#key=0;get(){return this.#key}} // see ?", None),  # code, not a fragment
        ("this.#token=t;this.#secret=s", None),
        ("Issue #12&13: [docs](#api_key=usage)", None),
        ("callback.html#access_token=SECRET8&state=xyz", "callback.html#access_token=[REDACTED]&state=xyz"),
        ("location.hash = '#access_token=SECRET9&state=xyz'", "location.hash = '#access_token=[REDACTED]&state=xyz'"),
    ]:
        assert policy.value(url) == (scrubbed or url), url


def test_a_long_text_is_scrubbed_where_it_is_kept_and_counted_whole() -> None:
    """A 5.7 MB API response was scrubbed whole (276 ms) to keep 16 KB of it; only the
    start is now. A password cut by the limit is still found by the '@' after it; the
    marker counts the text as given; text far past the limit never moves up into what
    is kept when redactions shorten it (a password there, whose '@' lay past the part
    searched, showed unredacted)."""
    policy = ContentPolicy(1000)
    text = "x" * 980 + "postgres://ada:" + "p" * 300 + "@db/app " + "y" * 5_000_000
    kept = policy.value(text)
    consumed = 980 + len("postgres://ada:") + 300 + 1
    assert kept == "x" * 980 + f"postgres://ada:[REDACTED]@…[truncated {len(text) - consumed} of {len(text)} chars]"
    assert policy.value("x" * 900 + "https://h.io/?key=SECRETVALUE") == (
        "x" * 900 + "https://h.io/?key=[REDACTED]")  # short enough: scrubbed whole, as before
    tokens = " ".join(f"https://b.s3.amazonaws.com/o{i}?X-Amz-Security-Token={'T' * 2100}" for i in range(4)) + " "
    late = "postgres://ada:hunter2"  # ends where the searched part ends: its '@' is past it
    shifted = tokens + "z" * (1000 + 8192 - len(tokens) - len(late)) + late + "@db/app " + "y" * 100_000
    assert "hunter2" not in policy.value(shifted) and "Token=[REDACTED]" in policy.value(shifted)
    # a long value of a parameter that is no secret is cut at the limit like any text
    long_query = policy.value("x" * 50 + "https://h/p?q=" + "v" * 20_000)
    assert long_query.startswith("x" * 50 + "https://h/p?q=vvv") and len(long_query) < 1100


def test_url_objects_are_scrubbed_as_their_text() -> None:
    """A URL held as an object (httpx.URL, pydantic's HttpUrl, urllib's SplitResult) was
    recorded by its repr or its fields, where the string check never looked."""
    import httpx
    import pydantic

    url = "https://ada:hunter2@maps.example.com/geocode?address=x&key=AIzaSyEXAMPLE"
    policy = ContentPolicy(1000)
    for value in (httpx.URL(url), pydantic.TypeAdapter(pydantic.HttpUrl).validate_python(url),
                  urllib.parse.urlsplit(url), urllib.parse.urlparse(url), url.encode()):
        text = policy.value(value)
        assert "hunter2" not in text and "AIzaSyEXAMPLE" not in text and "maps.example.com" in text, text


def test_a_token_beside_its_logprob_is_text() -> None:
    """OpenAI's logprobs hold each token as ``{"token": ..., "logprob": ...}``: every
    token of the answer was recorded as [REDACTED]."""
    logprobs = {"content": [{"token": "Hello", "logprob": -0.01}, {"token": "!", "logprob": -0.2}]}
    assert json.loads(ContentPolicy(1000).value(logprobs)) == logprobs
    assert json.loads(ContentPolicy(1000).value({"token": "sk-live", "user": "ada"}))["token"] == REDACTED


def test_redaction_in_arguments_at_any_depth(spans: CapturedSpans) -> None:
    @sdk.tool
    def connect(host: str, password: str, options: dict[str, Any], max_tokens: int = 10) -> dict[str, Any]:
        return {"session": {"token": "abc", "expires": 5}, "ok": True}

    connect("db", "hunter2", {"nested": [{"api_key": "k1", "Authorization": "Bearer x"}], "timeout": 3}, max_tokens=10)
    span = spans.by_name("execute_tool connect")
    assert json.loads(span.attributes[ARGS]) == {  # type: ignore[index,arg-type]
        "host": "db", "password": REDACTED, "max_tokens": 10,
        "options": {"nested": [{"api_key": REDACTED, "Authorization": REDACTED}], "timeout": 3}}
    assert json.loads(span.attributes[RESULT]) == {"session": {"token": REDACTED, "expires": 5}, "ok": True}  # type: ignore[index,arg-type]
    assert "hunter2" not in str(span.attributes) and "k1" not in str(span.attributes)


def test_only_the_arguments_given_are_captured_by_name(spans: CapturedSpans) -> None:
    @sdk.tool
    def many(a: int, *rest: int, flag: bool = False, **extra: Any) -> None:
        return None

    many(1, 2, 3, flag=True, color="red")  # defaults not given are not recorded
    assert json.loads(spans.by_name("execute_tool many").attributes[ARGS]) == {  # type: ignore[index,arg-type]
        "a": 1, "rest": [2, 3], "flag": True, "color": "red"}
    assert spans.by_name("execute_tool many").attributes[RESULT] == "null"  # type: ignore[index]


def test_truncation_is_visible_never_silent() -> None:
    with capture_spans(max_value_length=40) as spans:
        @sdk.tool
        def echo(text: str) -> str:
            return text

        @sdk.tool
        def rows(n: int) -> list[int]:
            return list(range(n))

        echo("x" * 100)
        rows(1000)
    args = spans.by_name("execute_tool echo").attributes[ARGS]  # type: ignore[index]
    result = spans.by_name("execute_tool echo").attributes[RESULT]  # type: ignore[index]
    assert result == "x" * 40 + "…[truncated 60 of 100 chars]"
    assert args.startswith('{"text":"' + "x" * 31) and "…[truncated" in args  # type: ignore[union-attr]
    listed = spans.by_name("execute_tool rows").attributes[RESULT]  # type: ignore[index]
    assert listed.startswith("[0,1,2,3") and listed.endswith("chars]") and "…[truncated" in listed  # type: ignore[union-attr]


def test_long_containers_stop_early_with_a_count() -> None:
    policy = ContentPolicy(10)
    assert policy._sequence(list(range(100)), 0, [10**9])[-1] == "[truncated 94 more items]"
    assert policy._mapping({str(i): i for i in range(100)}, 0, [10**9])["…"] == "[truncated 94 more entries]"
    assert ContentPolicy(8).value(b"\xff" * 100).endswith("…[truncated 94 of 100 bytes]")


def test_redact_hook(spans: CapturedSpans, caplog: pytest.LogCaptureFixture) -> None:
    def hook(key: str, value: Any) -> Any:
        if key == "email":
            return "<email>"
        if key == "return" and isinstance(value, str):
            return value.replace("4111", "****")
        if key == "explode":
            raise RuntimeError("hook bug")
        return value

    with capture_spans(redact=hook) as captured:
        @sdk.tool
        def charge(email: str, card: dict[str, Any], explode: str = "boom", password: str = "p") -> str:
            return "charged 4111"

        with caplog.at_level(logging.ERROR, logger="spanhouse.sdk"):
            charge("a@b.c", {"email": "c@d.e", "last4": "4242"}, "boom", password="p")
    span = captured.by_name("execute_tool charge")
    assert json.loads(span.attributes[ARGS]) == {  # type: ignore[index,arg-type]
        "email": "<email>", "card": {"email": "<email>", "last4": "4242"}, "explode": REDACTED, "password": REDACTED}
    assert span.attributes[RESULT] == "charged ****"  # type: ignore[index]
    assert "hook bug" in caplog.text  # a broken hook fails closed and says so


def test_capture_off_globally_and_per_decorator() -> None:
    with capture_spans(capture_content=False) as spans:
        @sdk.tool
        def off(q: str) -> str:
            return q

        @sdk.tool(capture_content=True)
        def forced_on(q: str) -> str:
            return q

        @sdk.execution
        def run() -> None:
            off("a")
            forced_on("b")

        run()
    assert ARGS not in (spans.by_name("execute_tool off").attributes or {})
    assert RESULT not in (spans.by_name("execute_tool off").attributes or {})
    assert "spanhouse.input" not in (spans.by_name("invoke_workflow run").attributes or {})
    assert spans.by_name("execute_tool forced_on").attributes[ARGS] == '{"q":"b"}'  # type: ignore[index]

    with capture_spans() as spans:
        @sdk.tool(capture_content=False)
        def private(q: str) -> str:
            return q

        private("secret")
    assert ARGS not in (spans.by_name("execute_tool private").attributes or {})


def test_methods_do_not_capture_self_or_cls(spans: CapturedSpans) -> None:
    class Agent:
        @sdk.tool
        def act(self, step: int) -> int:
            return step

        @sdk.tool
        @classmethod
        def build(cls, size: int) -> int:
            return size

    Agent().act(1)
    Agent.build(2)
    assert spans.by_name("execute_tool act").attributes[ARGS] == '{"step":1}'  # type: ignore[index]
    assert spans.by_name("execute_tool build").attributes[ARGS] == '{"size":2}'  # type: ignore[index]


class _BadMessage(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


def test_a_value_that_cannot_be_captured_changes_nothing_for_the_caller(spans: CapturedSpans) -> None:
    """An int too long to print (Python's 4300-digit limit), in or out, or an exception
    whose __str__ raises: the call behaves as undecorated, the span ends and is no
    longer current, so the next call is a root of its own again."""
    huge = 10 ** 5000

    @sdk.tool
    def echo(n: int) -> int:
        return n

    @sdk.tool
    def explode() -> None:
        raise _BadMessage()

    assert echo(huge) == huge
    with pytest.raises(_BadMessage):
        explode()
    assert echo(1) == 1
    first, failed, after = spans.spans()
    assert first.attributes[ARGS] == "[not captured: ValueError]"
    assert first.attributes[RESULT] == "[not captured: ValueError]"
    assert failed.status.status_code.name == "ERROR" and failed.end_time is not None
    assert after.parent is None and after.context.trace_id != first.context.trace_id


def test_namedtuple_fields_are_redacted_by_name() -> None:
    creds = collections.namedtuple("creds", "user password")("bob", "hunter2")
    assert json.loads(ContentPolicy(1000).value({"creds": creds})) == {"creds": {"user": "bob", "password": REDACTED}}


def test_namespace_attributes_are_redacted_by_name() -> None:
    """A CLI agent passes its parsed arguments on; their repr showed every attribute."""
    parsed = argparse.ArgumentParser().parse_args([], argparse.Namespace(api_key="sk-live-123", region="eu"))
    simple = types.SimpleNamespace(password="hunter2", user="bob")

    class Creds:  # what attrs makes of a class: its fields in __attrs_attrs__, a repr showing them
        __attrs_attrs__ = (types.SimpleNamespace(name="user"), types.SimpleNamespace(name="token"))

        def __init__(self) -> None:
            self.user, self.token = "bob", "t0k"

        def __repr__(self) -> str:
            return f"Creds(user={self.user!r}, token={self.token!r})"

    assert json.loads(ContentPolicy(1000).value({"args": parsed, "cfg": simple, "creds": Creds()})) == {
        "args": {"api_key": REDACTED, "region": "eu"}, "cfg": {"password": REDACTED, "user": "bob"},
        "creds": {"user": "bob", "token": REDACTED}}


def test_an_object_answering_every_attribute_is_not_taken_for_a_model() -> None:
    """A Mock has a callable ``model_dump`` too; walking what it returns recursed for
    seconds. Only a class that defines model_dump is a model."""
    started = time.perf_counter()
    out = ContentPolicy(1000).value({"client": unittest.mock.MagicMock()})
    assert time.perf_counter() - started < 1.0
    assert json.loads(out)["client"].startswith("<MagicMock")


def test_a_generator_streaming_large_chunks_holds_only_what_is_captured(spans: CapturedSpans) -> None:
    """The result of a generator is its items, cut to the captured size: 50 chunks of
    1 MB are not all held until the generator ends (they were: 8,193 items could be)."""
    @sdk.tool
    def chunks() -> Iterator[bytes]:
        for i in range(50):
            yield bytes([65 + i % 26]) * 1_000_000

    tracemalloc.start()
    try:
        total = sum(len(c) for c in chunks())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 50_000_000 and peak < 10_000_000
    result = spans.spans()[0].attributes[RESULT]
    assert result.startswith('["AAAA') and len(result) <= 16_384 + 100  # the first chunk already fills it


def test_an_item_whose_size_cannot_be_told_does_not_break_the_iteration(spans: CapturedSpans) -> None:
    """Collecting a generator's items asked each its size unguarded: a proxy whose
    ``__sizeof__`` raises ended the consumer's loop with that error."""
    class Unsized:
        def __sizeof__(self) -> int:
            raise TypeError("unsized")

        def __repr__(self) -> str:
            return "<Unsized>"

    @sdk.tool
    def items() -> Iterator[object]:
        yield Unsized()
        yield "after"

    assert len(list(items())) == 2
    # a __sizeof__ written in Python is not asked (nor a Mock's, which makes mocks): the
    # item is measured by what it refers to
    result = spans.spans()[0].attributes[RESULT]
    assert json.loads(result) == ["<Unsized>", "after"]  # type: ignore[arg-type]


def test_a_yielded_mock_is_measured_without_being_called(spans: CapturedSpans) -> None:
    """Measuring a yielded MagicMock asked its __sizeof__ and walked its attributes: each
    made a new child mock, recorded in the test's own mock_calls (256 of them)."""
    item = unittest.mock.MagicMock()

    @sdk.tool
    def items() -> Iterator[object]:
        yield item

    assert list(items()) == [item]
    assert item.mock_calls == []


def test_a_huge_value_is_walked_only_as_far_as_it_can_be_shown() -> None:
    """2,000 embeddings of 1,536 floats end up cut to max_length characters: the walk
    stops about there instead of converting all 3M floats first (~1 s per call)."""
    embeddings = [[0.123456789] * 1536 for _ in range(2000)]
    policy = ContentPolicy(16384)
    started = time.perf_counter()
    out = policy.value(embeddings)
    assert time.perf_counter() - started < 0.2
    assert out.startswith("[[0.123456789,") and len(out) <= 16384 + 100
    small = {"a": [1, 2, 3], "b": "x" * 100}
    assert json.loads(policy.value(small)) == small  # what fits is recorded whole, as before


def test_text_utf8_cannot_carry_is_escaped_before_it_is_cut() -> None:
    """A lone surrogate (a non-UTF-8 file name's byte) is written as its six-character
    escape; escaped after the cut, a value came out up to six times its limit."""
    policy = ContentPolicy(100)
    out = policy.value("\udcff" * 300)
    assert out.startswith("\\udcff" * 16) and len(out) <= 100 + len("…[truncated 1700 of 1800 chars]")
    out.encode("utf-8")
    assert policy.value("naïve ☃") == "naïve ☃"  # text UTF-8 carries is left alone
