"""Captured content: JSON-safe serialisation, redaction of secrets, visible truncation.

This runs at capture time, inside the decorators, not as a span processor (Logfire's
choice). Three reasons:

* A secret never reaches a span. With a processor, the raw value would sit on the span
  for every other processor and exporter of the application's provider to see; here it
  is replaced before the span gets it.
* Redaction is structural. The decorator still holds the Python objects, so a secret is
  found by its key at any depth (``{"db": {"password": …}}``, a ``password`` parameter, a
  dataclass field, a ``(name, value)`` pair such as an ASGI header) instead of by
  pattern-matching a JSON string afterwards. What cannot be walked by name is not shown:
  a value nested deeper than ``MAX_DEPTH`` is named by its type, a Pydantic model that
  cannot dump itself is walked by its fields. Strings are searched for URLs only: a
  URL's password and its secret-named query parameters (``api_key=``, ``key=``) are
  redacted, as no key names a secret passed inside one.
* It costs nothing on spans that carry no content: a processor would inspect every
  attribute of every span, including the many that other instrumentations produce.

What it does not cover: attributes that code sets itself with ``span.set_attribute``.
Those are the caller's to scrub.

A value becomes JSON: mappings, sequences and sets as objects and arrays, dataclasses and
Pydantic models (anything with ``model_dump``) as objects of their fields, bytes as text
(or base64 when not UTF-8, unless they hold a URL's secret: see ``_bytes_text``), dates as ISO 8601, enums as their value, namespaces
(``argparse``'s, ``SimpleNamespace``) and attrs classes as objects of their attributes,
anything else as its ``repr``. A value that becomes text at the top level (a string,
bytes, a date, a repr) is recorded as that text, not as a quoted JSON string. Nothing is dropped silently: a string,
container or the whole value over the limit is cut and ends with a ``…[truncated …]``
marker saying how much was left out.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime
import enum
import functools
import json
import logging
import math
import re
import sys
import types
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence, Set, ValuesView
from typing import Any, Final

from spanhouse.text import utf8_safe

logger = logging.getLogger("spanhouse.sdk")

REDACTED: Final = "[REDACTED]"
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
RETURN_KEY: Final = "return"
MAX_DEPTH: Final = 8

RedactHook = Callable[[str, Any], Any]
"""``hook(key, value) -> value``: called for each captured argument (key: the parameter
name), return value (key: ``"return"``) and mapping entry inside them (key: the entry's
key) whose key does not already look secret; what it returns is recorded instead of
``value``. If it raises, the value is recorded as ``[REDACTED]``: failing closed."""

SECRET_KEY_PATTERN: Final = re.compile(
    r"passw(or)?d|passphrase"
    r"|(?<!by)(?<!com)(?<!sur)(?<!tres)(?<!first[._ -])(?<!is[._ -])(?<!has[._ -])(?<!did[._ -])"
    r"pass([._ -]?(code|word|phrase|key|hash(ed)?|enc(rypted)?|b64|base64|value|v?\d+(?!\d)))*$"
    r"|pwd|secret"
    r"|(?<!bos[._ -])(?<!eos[._ -])(?<!pad[._ -])(?<!unk[._ -])(?<!sep[._ -])(?<!cls[._ -])(?<!mask[._ -])"
    r"token(?!s|_?(count|limit|usage|type|ids?\b|logprobs?|details?|budget)|izer)"
    r"|api[._ -]?key|auth(?!ors?\b)"
    r"|(access|refresh|api|id|session|oauth|bearer|personal)[._ -]?tokens"
    r"|credential|(private|access|session|encryption|signing|hmac|master|ssh|subscription|license)[._ -]?key"
    r"|cookie|jwt|bearer|signature|csrf|xsrf|credit[._ -]?card|card[._ -]?number|cvv|(?<![a-z])ssn(?![a-z])"
    r"|social[._ -]?security",
    re.IGNORECASE,
)
"""Keys whose values are replaced by ``[REDACTED]``: password, passphrase, a key ending in
``pass``, or in ``pass`` and words that say what of it is kept (``passcode``,
``pass_code``, ``pass_key``, ``pass_hash``, ``vault_pass_b64``, ``pass_value``),
perhaps numbered (``DB_PASS``, ``dbpass``, ``pass1``, ``pass_v2``, ``pass2_hash``,
``pass_word``; not ``bypass``, ``compass``, ``first_pass``, ``is_pass``, nor ``pass``
followed by another word: ``pass_fds``, ``pass_through``, the evals' ``pass@1`` and
``pass_rate``), secret, token
(but not the token *data* of LLM APIs: ``tokens``, ``max_tokens``, ``token_count``,
``token_ids``, ``token_logprobs``, ``input_token_details`` (LangChain's usage),
``token_budget``, a tokenizer's ``eos_token`` and the like, nor ``tokenizer``; plural credentials such as ``refresh_tokens`` or ``api_tokens`` are
secret), api_key, authorization, credentials, private, access, session, encryption,
signing, HMAC, master, SSH, subscription (Azure's ``Ocp-Apim-Subscription-Key``) and
license keys, cookies, JWTs, signatures, CSRF tokens, card numbers and social security
numbers (Logfire's list, but ``session``: sessions are a spanhouse concept)."""

_URL_PARTS: Final = (urllib.parse.SplitResult, urllib.parse.ParseResult, urllib.parse.SplitResultBytes,
                     urllib.parse.ParseResultBytes)
_URL_SECRET: Final = re.compile(
    r"(://(?!\[)(?:[^/?#\s:@\"\\]|\\.)*:)(?!\d{1,5}(?:[/?#\s\"',;)\]]|$))"
    r"((?:(?!://)(?:[^\s\"\\]|\\(?!://)[^@\n]|\\(?=@)))*?)(@)"
    r"(?=[^@/?#\s\"',;)\]]*(?:[/?#\s\"',;)\]]|$))"
    r"|([?&;]|(?<![.{(;])#)([^=&#\s?;/\"']{1,64})=")
"""In a string holding a URL: the password of ``scheme://user:password@host`` (the user
may be empty, as in Redis URLs; ``/``, ``?``, ``#``, ``'`` or ``@`` left unencoded in
the password, as SQLAlchemy and libpq take them, are taken up to the ``@`` a host
follows, and so is ``\"`` as JSON escapes a quote; ``host:8080/…@…`` and
``host:8080?…@…`` are a port, and ``[::1]:…`` an IPv6 host; a bare ``"``, whitespace and
JSON's delimiters after the host end it, so it never runs into the next value of a
JSON text), and the start of a query or fragment parameter ``name=`` (after ``?``,
``&``, ``;`` or ``#``: an OAuth implicit flow's ``#access_token=``, but not a ``#`` that
follows one of ``_NOT_A_FRAGMENT``, as in code; the name is judged by
``is_secret_key``, or is ``key`` or ``sig``: Google's API keys, signed URLs), whose value
``_PARAM_VALUE`` takes only when the name is a secret's: the value of any other is
searched too, for a parameter after a ``;`` (``?q=1;token=…``) or a URL passed in it
(``?next=https://u:pw@db/x``, ``?redirect=/a?api_key=…``). A password never runs past
the next ``://``, so the stretches searched from two URLs do not overlap and the search
stays linear on long text, whatever the password's length (IAM and OAuth tokens used
as passwords run past a kilobyte)."""

_PARAM_VALUE: Final = re.compile(r"[\"']?(?:[^&#\s\"']|[\"'](?![\s,;:)\]}>&#]|$))+")
"""A secret parameter's value: up to the next ``&``, ``#`` or whitespace; a quote
followed by a delimiter ends it (it otherwise ran over the rest of a compact JSON text),
and it may be quoted."""


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether ``key`` names a secret. Cached: the same parameter names come back on every call."""
    return SECRET_KEY_PATTERN.search(key) is not None


_QUERY: Final = re.compile(r"[?#][^\s=?#&;/\"']{1,64}[=&]")
"""A query's or fragment's first parameter (``?api_key=``, ``?verbose&``,
``#access_token=``), where a relative URL (``/v1/geo?key=…``, an HTTP request line,
an OAuth callback's path) starts its parameters."""


def _may_hold_url(text: str) -> bool:
    """Whether ``text`` may hold a URL's secret: it names a scheme (``://``) or has a
    ``?`` or ``#`` starting parameters. Found by looking at each ``?`` and ``#`` (a
    question in a prompt is one look), not by the whole pattern: a 10k-character
    prompt took 360 µs there."""
    if "://" in text:
        return True
    for mark in "?#":
        at = text.find(mark)
        while at != -1:
            if _QUERY.match(text, at) and (mark == "?" or at == 0 or text[at - 1] not in _NOT_A_FRAGMENT):
                return True
            at = text.find(mark, at + 1)
    return False


_NOT_A_FRAGMENT: Final = ".{(;"
"""What a ``#`` follows in code, not in a URL: a JavaScript private field (``this.#token=t``,
``{#key=0``), a Markdown link's anchor (``(#x=y)``)."""


def scrub_urls(text: str) -> str:
    """``text`` with the secrets of the URLs it holds redacted (``_URL_SECRET``): a tool
    fetching ``https://maps.example.com/geocode?address=…&key=AIza…`` is called with its
    key in a string, where no key names it."""
    if not _may_hold_url(text):  # most captured strings: no generator made for them
        return text
    kept: list[str] = []
    at = 0
    for start, end, redacted in _url_secrets(text):
        kept += (text[at:start], redacted)
        at = end
    kept.append(text[at:])
    return "".join(kept)


def scrub_error_text(text: str, secrets: Sequence[str] = ()) -> str:
    """An exception's message or stack trace with its URLs' secrets redacted and so is
    each of ``secrets`` (the values of the failed call's secret-named arguments): a
    driver's error names the connection string it was given (``could not connect to
    postgresql://app:pw@db``), an HTTP client's the URL with its ``key=``, an API client
    the key it refused, while the span's captured arguments had them redacted. Recorded
    whether content is captured or not, as the exception itself is. Other text in an
    error is kept: a secret written into it that no argument names is not found."""
    text = scrub_urls(text)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


_SECRETS_ATTRIBUTE: Final = "_spanhouse_secrets"
_HELD_ATTRIBUTE: Final = "_spanhouse_held_secrets"


class _Held(tuple):  # type: ignore[type-arg]
    """Secrets an error carries for another of its chain that could not (a frozen
    error): pickled or copied, it is empty, since the error's own text does not show
    them (a process pool or a task queue's result backend would have had them in clear)."""

    __slots__ = ()

    def __reduce__(self) -> tuple[type[_Held], tuple[()]]:
        return _Held, ()
_CHAIN_LIMIT: Final = 100_000
"""Errors walked in one chain: past it, a group of 30 errors of 40 retries each (1,231)
showed keys in clear with 1,000. A few ms; the stack trace formatted already cost more."""


def error_secrets(exc: BaseException, own: Sequence[str], text: str) -> tuple[str, ...]:
    """What to redact from the ``text`` (message and stack trace) of ``exc``, which a
    failed call records: ``own``, the values of the call's secret-named arguments, and
    those that calls the error left before found in it, kept on the errors it is made of
    (itself, its cause and context, an exception group's members, and theirs). An error
    leaving a decorated call goes on through the calls around it, whose spans record it
    again: a tool's refused API key was redacted on the tool's span and stored in clear
    on its execution's. Each value known is kept (an attribute) on every error of the
    chain whose own message or notes show it, so nothing travels with an error, pickled
    without its chain, that its text did not show (a wrapper whose message repeats it
    carries it). An error that takes no attribute (``__slots__``, a frozen dataclass)
    has its values kept on ``exc`` instead, which the calls around go on with, but not
    in its pickle (``_Held``); raised itself, it is redacted by its own call only."""
    chain = _chain(exc)
    found = set(own)
    for error in chain:
        for attribute in (_SECRETS_ATTRIBUTE, _HELD_ATTRIBUTE):
            kept = getattr(error, attribute, ())
            if isinstance(kept, tuple):
                found.update(s for s in kept if isinstance(s, str))
    refused: list[str] = []
    for error in chain if found else ():
        shown = _shown(error)
        if (mine := [s for s in found if s in shown]) and not _keep(error, _SECRETS_ATTRIBUTE, mine):
            refused += mine
    if refused:
        _keep(exc, _HELD_ATTRIBUTE, refused)
    return tuple(sorted((s for s in found if s in text), key=len, reverse=True))


def _shown(error: BaseException) -> str:
    """The text a traceback prints of ``error`` itself: its message and its notes."""
    lines = [error_message(error)]
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, list):
        lines += [n for n in notes if isinstance(n, str)]
    return "\n".join(lines)


def _keep(error: BaseException, attribute: str, secrets: Sequence[str]) -> bool:
    """Add ``secrets`` to those kept on ``error`` as ``attribute``; False if it takes no
    attribute."""
    kept = getattr(error, attribute, ())
    merged = {*kept, *secrets} if isinstance(kept, tuple) else set(secrets)
    try:
        setattr(error, attribute, _Held(merged) if attribute == _HELD_ATTRIBUTE else tuple(merged))
    except Exception:  # noqa: BLE001 - __slots__, a frozen dataclass
        return False
    return True


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the errors it holds, nearest first (a group's members in their order,
    as a traceback prints the first of them), at most ``_CHAIN_LIMIT``."""
    chain: list[BaseException] = []
    pending, seen = collections.deque([exc]), set()
    while pending and len(chain) < _CHAIN_LIMIT:
        error = pending.popleft()
        if id(error) in seen:
            continue
        seen.add(id(error))
        chain.append(error)
        members = getattr(error, "exceptions", ())  # an ExceptionGroup's
        if isinstance(members, tuple):
            pending += [e for e in members if isinstance(e, BaseException)]
        pending += [e for e in (error.__cause__, error.__context__) if e is not None]
    return chain


def error_message(error: BaseException) -> str:
    """``str(error)``, or nothing if that raises."""
    try:
        return str(error)
    except Exception:  # noqa: BLE001
        return ""


def secret_arguments(secret_positions: Sequence[int], args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """The text of a call's arguments whose parameter names look secret (``api_key``,
    ``password``; ``secret_positions``: the positional ones), longest first, for
    ``scrub_error_text``. Strings and UTF-8 bytes of at least eight characters: a shorter
    value (a test password, ``1234``) would be redacted wherever the message or stack
    trace holds the same characters (a line number)."""
    if not secret_positions and not any(map(is_secret_key, kwargs)):  # most calls: nothing to build
        return ()
    found: list[str] = []
    values = [args[i] for i in secret_positions if i < len(args)]
    values += [v for k, v in kwargs.items() if is_secret_key(k)] if kwargs else []
    for value in values:
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("utf-8", "replace")
        if isinstance(value, str) and len(value) >= 8:
            found.append(value)
    return tuple(sorted(found, key=len, reverse=True))


def _url_secrets(text: str) -> Iterator[tuple[int, int, str]]:
    """Where ``text``'s URLs hold secrets, in order and apart: (start, end, what replaces
    ``text[start:end]``). Only a secret parameter's value is skipped: the search goes on
    inside any other's."""
    if not _may_hold_url(text):
        return
    at = 0  # where the search goes on: past a secret, or past a parameter's name
    while (m := _URL_SECRET.search(text, at)) is not None:
        at = m.end()
        if m.group(1) is not None:
            yield m.start(), at, f"{m.group(1)}{REDACTED}{m.group(3)}"
            continue
        name = m.group(5)
        if not (name.lower() in ("key", "sig") or is_secret_key(name)):
            continue  # its value is searched on: each character once, whatever the parameters
        value = _PARAM_VALUE.match(text, at)
        if value is not None:
            opening = value.group(0)[0] if value.group(0)[0] in "\"'" else ""  # a quoted value keeps its quotes
            yield m.start(), value.end(), f"{m.group(4)}{name}={opening}{REDACTED}"
            at = value.end()


def truncated(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters plus a marker that says what was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[truncated {len(text) - limit} of {len(text)} chars]"


_SCRUB_MARGIN: Final = 8192
"""Characters past the cut searched with the kept ones: a URL secret found by what
follows it (a password by the ``@`` after it) and starting before the cut is then found
unless it is longer than this."""


def scrubbed(text: str, limit: int) -> str:
    """``text`` with its URLs' secrets redacted, cut to about ``limit`` characters
    (``truncated``'s marker counting the text as given). Only the start of the text is
    searched, ``limit`` and a margin: the whole of a 5.7 MB API response took 276 ms to
    record 16 KB of it. The redacted text is kept up to ``limit`` characters, but none
    of the original's past ``limit`` + half the margin: cutting the redacted window
    instead let its end, where a password's ``@`` lay past the window, move up into what
    is kept, unredacted."""
    if len(text) <= limit:
        return scrub_urls(text)
    window = text[:limit + _SCRUB_MARGIN]
    cap = min(len(text), limit + _SCRUB_MARGIN // 2)  # every character kept has half the margin searched after it
    kept: list[str] = []
    size = at = 0  # characters kept; how far the original is consumed
    for start, end, redacted in _url_secrets(window):
        if start >= cap or size + start - at >= limit:
            break
        kept += (window[at:start], redacted)
        size += start - at + len(redacted)
        at = end
    rest = window[at:min(cap, at + max(0, limit - size))]
    kept.append(rest)
    at += len(rest)
    if at >= len(text):
        return "".join(kept)
    return f"{''.join(kept)}…[truncated {len(text) - at} of {len(text)} chars]"


class ContentPolicy:
    """How captured values are turned into attribute strings."""

    __slots__ = ("_max_items", "hook", "max_length")

    def __init__(self, max_length: int, hook: RedactHook | None = None) -> None:
        self.max_length = max_length
        self.hook = hook
        # Each item takes at least two characters of JSON, so more than this many could
        # never fit: stop walking there instead of serialising what would be cut anyway.
        self._max_items = max_length // 2 + 1

    def arguments(self, names: Sequence[str], varargs: str | None, args: tuple[Any, ...],
                  kwargs: Mapping[str, Any]) -> str:
        """The call's arguments as a JSON object keyed by parameter name.

        ``names`` are the positional parameter names (without ``self``/``cls`` when
        ``args`` has had them removed); extra positional values are listed under
        ``varargs`` (the ``*args`` name). Computed without ``inspect.Signature.bind``,
        which costs several microseconds per call.
        """
        bound: dict[str, Any] = dict(zip(names, args, strict=False))  # extra args: below
        if len(args) > len(names):
            bound[varargs or "args"] = list(args[len(names):])
        bound.update(kwargs)
        return self.mapping(bound)

    def mapping(self, items: Mapping[str, Any]) -> str:
        """Named values (arguments given by name) as a JSON object."""
        try:
            return self._dump(self._mapping(items, 0, [self.max_length]))
        except Exception as exc:  # noqa: BLE001 - capturing must never break the call it records
            return _not_captured(exc)

    def value(self, value: Any, key: str = RETURN_KEY) -> str:
        """One value (a return value, a result) as an attribute string."""
        if is_secret_key(key):
            return REDACTED
        try:
            hooked = self._hooked(key, value)
            if isinstance(hooked, str):  # text is kept as it is: escaped (an escape is six characters) before the cut
                hooked = utf8_safe(str(hooked))
            walked = self._walk(hooked, 0, [self.max_length])
            return walked if type(walked) is str else self._dump(walked)  # text (str, bytes, dates) as it is
        except Exception as exc:  # noqa: BLE001 - capturing must never break the call it records
            return _not_captured(exc)

    def _dump(self, obj: Any) -> str:
        return truncated(utf8_safe(_encode(obj)), self.max_length)

    def _hooked(self, key: str, value: Any) -> Any:
        if self.hook is None:
            return value
        try:
            return self.hook(key, value)
        except Exception:  # a broken hook must neither break the call nor leak the value
            logger.exception("spanhouse redact hook failed on %r; recording [REDACTED]", key)
            return REDACTED

    def _mapping(self, items: Mapping[Any, Any], depth: int, budget: list[int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        hook, limit = self.hook, self._max_items
        for i, (k, v) in enumerate(items.items()):
            if i == limit or budget[0] <= 0:
                out["…"] = f"[truncated {len(items) - i} more entries]"
                break
            key = k if type(k) is str else str(k)
            # OpenAI's logprobs: {"token": "Hello", "logprob": -0.01, ...} is text, not a credential
            secret = is_secret_key(key) and not (key == "token" and "logprob" in items)
            walked = REDACTED if secret else \
                self._walk(v if hook is None else self._hooked(key, v), depth + 1, budget)
            out[key] = walked
            budget[0] -= len(key) + (len(walked) if type(walked) is str else 0) + 4
        return out

    def _walk(self, v: Any, depth: int, budget: list[int]) -> Any:
        """``v`` as JSON-compatible Python: the decision tree of the module docstring.

        Exact-type checks for the common JSON types come first: ``isinstance`` against the
        ``collections.abc`` classes is several times slower, and this runs for every value.
        ``budget`` is about how many characters the whole value may still take: the
        containers stop (with a marker) once it is spent, since the encoded value is cut
        at ``max_length`` anyway; without it a list of 2,000 embeddings was walked whole.
        """
        t = type(v)
        if t is str:
            return scrubbed(v, self.max_length)
        if t is int or t is bool or v is None:
            return v
        if t is float:
            return v if math.isfinite(v) else str(v)
        if depth >= MAX_DEPTH:  # named, not shown: a repr would show the secrets below it unredacted
            return f"[nested deeper than {MAX_DEPTH}: {type(v).__qualname__}]"
        if t is dict:
            return self._mapping(v, depth, budget)
        if t is list or t is tuple:
            if _secret_pair(v):  # wherever it is: an argument, a return value, an item, an entry
                return [self._walk(v[0], depth + 1, budget), REDACTED]
            return self._sequence(v, depth, budget)
        if isinstance(v, enum.Enum):
            return self._walk(v.value, depth + 1, budget)
        if isinstance(v, str):  # subclasses of the JSON scalars, as their plain values
            return scrubbed(str(v), self.max_length)
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return self._walk(float(v), depth, budget)
        if isinstance(v, Mapping):
            return self._mapping(v, depth, budget)
        if isinstance(v, (bytes, bytearray, memoryview)):
            return _bytes_text(bytes(v), self.max_length)
        if isinstance(v, (datetime.date, datetime.time)):
            return v.isoformat()
        if isinstance(v, _URL_PARTS):  # a namedtuple, but its secrets are in the URL it splits
            return self._walk(v.geturl(), depth, budget)
        if isinstance(v, tuple) and isinstance(getattr(t, "_fields", None), tuple):  # a namedtuple: by field,
            return self._mapping(v._asdict(), depth, budget)  # type: ignore[attr-defined]  # so secrets are redacted
        if isinstance(v, (Sequence, Set, collections.deque, ValuesView)):
            return self._sequence(v, depth, budget)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return self._mapping({f.name: getattr(v, f.name) for f in dataclasses.fields(v)}, depth, budget)
        # Namespaces and attrs classes: their repr shows every attribute, a secret too
        if isinstance(v, types.SimpleNamespace) or _is_argparse_namespace(v):
            return self._mapping(vars(v), depth, budget)
        if isinstance(attrs := getattr(t, "__attrs_attrs__", None), tuple) and not isinstance(v, type):
            return self._mapping({a.name: getattr(v, a.name, None) for a in attrs}, depth, budget)
        # A Pydantic model: model_dump defined by the class. Asked of the instance, any
        # proxy whose __getattr__ answers everything (a Mock) would pass, and recurse.
        if callable(getattr(t, "model_dump", None)) and not isinstance(v, type):
            try:
                return self._walk(v.model_dump(mode="json"), depth + 1, budget)
            except Exception:  # e.g. a field of an arbitrary type: by field, so secrets are redacted
                fields = getattr(t, "model_fields", None)  # (its repr would show them)
                if isinstance(fields, Mapping):
                    return self._mapping({name: getattr(v, name, None) for name in fields}, depth, budget)
                return f"<{t.__qualname__} (not captured)>"
        return scrubbed(_repr(v), self.max_length)  # httpx.URL, pydantic's HttpUrl: a URL in it

    def _sequence(self, items: Any, depth: int, budget: list[int]) -> list[Any]:
        out: list[Any] = []
        for i, item in enumerate(items):
            if i == self._max_items or budget[0] <= 0:
                out.append(f"[truncated {len(items) - i} more items]")
                break
            walked = self._walk(item, depth + 1, budget)
            out.append(walked)
            budget[0] -= (len(walked) if type(walked) is str else 0) + 2
        return out


def _is_argparse_namespace(v: Any) -> bool:
    """Whether ``v`` is an ``argparse.Namespace`` (a CLI agent's parsed arguments); none
    can exist before argparse is imported, so it is not imported here."""
    argparse = sys.modules.get("argparse")
    return argparse is not None and isinstance(v, argparse.Namespace)


def _secret_pair(item: Any) -> bool:
    """Whether ``item`` is a two-item tuple or list whose first item names a secret: HTTP
    headers as ASGI and most clients keep them (``[(b"authorization", b"Bearer ...")]``),
    ``dict.items()``, or one such pair passed or returned on its own."""
    if type(item) not in (tuple, list) or len(item) != 2:
        return False
    name = item[0]
    if type(name) in (bytes, bytearray):
        name = name.decode("latin-1")
    return type(name) is str and is_secret_key(name)


def _c_encoder() -> Callable[[Any], str]:
    """A reusable compact JSON encoder for already JSON-safe values.

    ``json.dumps`` (and ``JSONEncoder.encode``) build a new C encoder on every call, which
    is most of the cost for the small values a tool call usually has; the C encoder itself
    can be kept. No circular-reference tracking is needed: ``_walk`` has a depth limit.
    Falls back to ``JSONEncoder.encode`` where the C accelerator does not exist.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    basestring = getattr(json.encoder, "c_encode_basestring", None)
    if make is None or basestring is None:
        return _ENCODER.encode
    iterencode = make(None, None, basestring, None, ":", ",", False, False, True)
    return lambda obj: "".join(iterencode(obj, 0))


_encode: Final = _c_encoder()


def _bytes_text(data: bytes, limit: int) -> str:
    """Bytes as their UTF-8 text, else as base64; but bytes holding a URL's secret (a
    request line, a connection string with one Latin-1 byte) as text with the bytes
    UTF-8 cannot read escaped (``\\xe4``) and the secret redacted: base64 hid the secret
    from the search, not from whoever decodes it."""
    try:
        return scrubbed(data.decode("utf-8"), limit)
    except UnicodeDecodeError:
        pass
    # searched as UTF-8 with the odd bytes escaped: as Latin-1, the second byte of a UTF-8
    # "à" (0xa0) was a no-break space, which ends a password, and hid it
    if next(_url_secrets(data[:limit + _SCRUB_MARGIN].decode("utf-8", "surrogateescape")), None) is not None:
        return scrubbed(data.decode("utf-8", "backslashreplace"), limit)
    head = data[: limit * 3 // 4]  # base64 grows by 4/3: encode only what can be kept
    text = "base64:" + base64.b64encode(head).decode("ascii")
    return text if len(head) == len(data) else f"{text}…[truncated {len(data) - len(head)} of {len(data)} bytes]"


def _not_captured(exc: Exception) -> str:
    """What is recorded for a value that could not be captured (e.g. an int too long to
    print); logged at debug level, as a value that cannot be shown is not an error of the call."""
    logger.debug("spanhouse could not capture a value", exc_info=True)
    return f"[not captured: {type(exc).__qualname__}]"


def _repr(v: Any) -> str:
    try:
        return repr(v)
    except Exception:
        return f"<{type(v).__qualname__} (repr failed)>"
