"""Token usage and cost: ``record_usage()``, the price table, usage read off model responses.

Usage is recorded as the GenAI conventions' ``gen_ai.usage.input_tokens`` and
``gen_ai.usage.output_tokens``; cost as ``spanhouse.cost_usd`` (USD), which the
execution rollup sums per trace. Calls on the same span add up, so an agent span that
makes several model calls can record each of them.

Cost is computed only when the caller does not give it, from ``PRICES``: list prices in
USD per million tokens, keyed by model name; a model matches its own entry or else the
longest entry its name starts with (``gpt-4o-2024-08-06`` uses ``gpt-4o``). Prices change:
the defaults are a convenience, ``register_price()`` overrides or extends them, and a
model without a price gets tokens but no cost rather than a guessed one.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Final

from opentelemetry import trace

from spanhouse.sdk import _semconv as sc

PRICES: dict[str, tuple[float, float]] = {
    # model (or prefix): (USD per 1M input tokens, USD per 1M output tokens), providers' list
    # prices for standard (non-batch, non-cached) use as published in 2025.
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o1": (15.00, 60.00),
    "o1-pro": (150.00, 600.00),
    "o1-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o3-pro": (20.00, 80.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    # variants priced apart from the model their names start with
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o-realtime-preview": (5.00, 20.00),  # text tokens (audio ones cost more)
    "gpt-4o-mini-realtime-preview": (0.60, 2.40),
    "gpt-5-pro": (15.00, 120.00),
    # speech models, whose names start with gpt-4o's and gpt-4o-mini's: priced by their
    # main tokens (transcription: audio in, text out; speech: text in, audio out)
    "gpt-4o-transcribe": (6.00, 10.00),
    "gpt-4o-mini-transcribe": (3.00, 5.00),
    "gpt-4o-mini-tts": (0.60, 12.00),
    "o3-deep-research": (10.00, 40.00),
    "o4-mini-deep-research": (2.00, 8.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-opus-4-5": (5.00, 25.00),
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
}
"""Model → (USD per million input tokens, USD per million output tokens). Edit freely or
use ``register_price``. A variant priced differently from the model its name starts
with needs an entry of its own (o3-pro is not o3), else the prefix's price applies."""

CACHED_INPUT_PRICES: dict[str, float] = {
    # model of PRICES: USD per 1M input tokens read from the provider's prompt cache, as
    # published in 2025. OpenAI caches long prompts by itself, so an agent that resends
    # its history pays this for most of its input: at the full input price its cost was
    # 2x (gpt-4o), 4x (gpt-4.1, o3) or 10x (gpt-5) too high on those tokens.
    "gpt-4o": 1.25,
    "gpt-4o-mini": 0.075,
    "gpt-4.1": 0.50,
    "gpt-4.1-mini": 0.10,
    "gpt-4.1-nano": 0.025,
    "gpt-5": 0.125,
    "gpt-5-mini": 0.025,
    "gpt-5-nano": 0.005,
    "o1": 7.50,
    "o1-mini": 0.55,
    "o3": 0.50,
    "o3-mini": 0.55,
    "o4-mini": 0.275,
    "gpt-4o-realtime-preview": 2.50,
    "gpt-4o-mini-realtime-preview": 0.30,
    "o3-deep-research": 2.50,
    "o4-mini-deep-research": 0.50,
    "claude-3-5-haiku": 0.08,
    "claude-3-5-sonnet": 0.30,
    "claude-3-7-sonnet": 0.30,
    "claude-sonnet-4": 0.30,
    "claude-haiku-4-5": 0.10,
    "claude-opus-4": 1.50,
    "claude-opus-4-5": 0.50,
    "gemini-2.5-pro": 0.125,  # Gemini 2.5's cache reads are a tenth of the input price
    "gemini-2.5-flash": 0.03,
    "gemini-2.5-flash-lite": 0.01,
}
"""PRICES key → USD per million cached input tokens (prompt-cache reads). Looked up by the
key PRICES matched, so a model without an entry here pays its full input price for them."""

LONG_CONTEXT_PRICES: dict[str, tuple[int, float, float, float]] = {
    # PRICES key: (input tokens past which a call is priced at these, then USD per 1M input,
    # output and cached input tokens), as published in 2025. The whole call takes them, not
    # only its tokens past the threshold; the input counted includes the cache's tokens.
    "gemini-2.5-pro": (200_000, 2.50, 15.00, 0.25),
    "claude-sonnet-4": (200_000, 6.00, 22.50, 0.60),  # Sonnet 4 and 4.5 with the 1M-token context window
}
"""PRICES key → the price of a call whose input is past a threshold (a long-context tier).
Looked up by the key PRICES matched; ``register_price`` drops the tier of a model it
prices again (its new tier cannot be guessed): set one here."""

_PER: Final = 1_000_000
_MAX_TOKENS: Final = 2**63 - 1  # an OTLP int attribute is an int64: the exporter drops larger ones
ANTHROPIC_CACHE_READ_PRICE: Final = 0.1
"""Anthropic's price of a prompt-cache read, as a share of the input price, for every
Claude model: the cache price of an entry naming Claude (``claude-3-opus``,
``anthropic.claude-3-haiku``) without one in CACHED_INPUT_PRICES."""
CACHE_WRITE_PRICE: Final = 1.25
"""Anthropic's price of a prompt-cache write (5-minute cache), as a share of the input price."""


def finite_number(value: object) -> bool:
    """Whether ``value`` is an int or float (not a bool) with a finite float value: an int
    past float's range (10**400) made ``math.isfinite`` raise OverflowError instead."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


_ADDING: Final = threading.Lock()  # one sum at a time (see record_usage_on)


def register_price(model: str, *, input_per_million: float, output_per_million: float,
                   cached_input_per_million: float | None = None) -> None:
    """Set the price of ``model`` (or of every model whose name starts with it);
    ``cached_input_per_million`` is its prompt-cache read price (when not given, one it
    has moves with the input price, keeping its discount; a model without one pays its
    input price, a Claude model a tenth of it). A long-context tier the model had
    (``LONG_CONTEXT_PRICES``) is dropped: the new price applies to every call.

    Raises:
        ValueError: the name is empty or a price is negative or not finite.
    """
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a non-empty string, not {model!r}")
    for label, price in (("input_per_million", input_per_million), ("output_per_million", output_per_million),
                         ("cached_input_per_million", cached_input_per_million)):
        if price is not None and (not finite_number(price) or price < 0):
            raise ValueError(f"{label} must be a finite number >= 0, not {price!r}")
    if cached_input_per_million is not None:
        CACHED_INPUT_PRICES[model] = float(cached_input_per_million)
    elif model in CACHED_INPUT_PRICES:  # its cache discount stays: the cache price moves with the input price
        old_input = PRICES[model][0] if model in PRICES else 0.0
        if old_input > 0:
            CACHED_INPUT_PRICES[model] *= float(input_per_million) / old_input
        else:
            del CACHED_INPUT_PRICES[model]
    LONG_CONTEXT_PRICES.pop(model, None)
    PRICES[model] = (float(input_per_million), float(output_per_million))


def _price_key(model: str) -> str | None:
    """The PRICES entry of ``model``: its own, else the longest prefix entry, else None."""
    if model in PRICES:
        return model
    return max((key for key in PRICES if model.startswith(key)), key=len, default=None)


def price_of(model: str) -> tuple[float, float] | None:
    """The price entry for ``model``: its own, else the longest prefix entry, else None."""
    key = _price_key(model)
    return None if key is None else PRICES[key]


def cost_of(model: str | None, input_tokens: int, output_tokens: int, cache_read_tokens: int = 0,
            cache_write_tokens: int = 0) -> float | None:
    """USD for the tokens at ``model``'s price, or None when the price is unknown.
    ``input_tokens`` includes the cache's tokens: reads are priced from
    ``CACHED_INPUT_PRICES`` (for a model not there, a Claude model's at
    ``ANTHROPIC_CACHE_READ_PRICE`` and any other's at the input price), writes (which
    only Anthropic reports) at ``CACHE_WRITE_PRICE`` times the input price; a call whose
    input is past its model's long-context threshold at ``LONG_CONTEXT_PRICES``."""
    key = _price_key(model) if model else None
    if key is None:
        return None
    price_in, price_out = PRICES[key]
    price_read = CACHED_INPUT_PRICES.get(
        key, price_in * (ANTHROPIC_CACHE_READ_PRICE if "claude" in key.lower() else 1.0))
    tier = LONG_CONTEXT_PRICES.get(key)
    if tier is not None and input_tokens > tier[0]:
        _, price_in, price_out, price_read = tier
    uncached = input_tokens - cache_read_tokens - cache_write_tokens
    inputs = uncached * price_in + cache_read_tokens * price_read + cache_write_tokens * CACHE_WRITE_PRICE * price_in
    return (inputs + output_tokens * price_out) / _PER


def record_usage(input_tokens: int | None = None, output_tokens: int | None = None, model: str | None = None,
                 cost_usd: float | None = None) -> None:
    """Add token usage (and cost) to the current span.

    ``model`` is the model that answered (``gen_ai.response.model``); it also picks the
    price when ``cost_usd`` is not given, falling back to the span's
    ``gen_ai.request.model`` (set by ``@llm(model=...)``). Outside any recording span this
    does nothing.

    Raises:
        ValueError: a token count is negative, past 2**63 - 1 or not an int, or the cost is
            negative or not finite.
    """
    record_usage_on(trace.get_current_span(), input_tokens, output_tokens, model, cost_usd)


def record_usage_on(span: trace.Span, input_tokens: int | None, output_tokens: int | None, model: str | None,
                    cost_usd: float | None, cached: tuple[int, int] = (0, 0)) -> None:
    """``record_usage`` for a given span. ``cached``: how many of ``input_tokens`` were
    read from and written to the model's prompt cache (priced differently)."""
    for label, count in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or not 0 <= count <= _MAX_TOKENS):
            raise ValueError(f"{label} must be an int from 0 to 2**63 - 1, not {count!r}")
    if cost_usd is not None and (not finite_number(cost_usd) or cost_usd < 0):
        raise ValueError(f"cost_usd must be a finite number >= 0, not {cost_usd!r}")
    if model is not None and not isinstance(model, str):
        raise ValueError(f"model must be a string, not {model!r}")
    if not span.is_recording():
        return
    inputs, outputs = input_tokens or 0, output_tokens or 0
    with _ADDING:  # read, add, write: threads recording on one span lost counts without it
        existing: Any = getattr(span, "attributes", None) or {}
        if input_tokens is not None:  # sums saturate: past an int64 the exporter would drop the attribute
            span.set_attribute(sc.USAGE_INPUT_TOKENS, min(existing.get(sc.USAGE_INPUT_TOKENS, 0) + inputs, _MAX_TOKENS))
        if output_tokens is not None:
            span.set_attribute(sc.USAGE_OUTPUT_TOKENS,
                               min(existing.get(sc.USAGE_OUTPUT_TOKENS, 0) + outputs, _MAX_TOKENS))
        if model:
            span.set_attribute(sc.RESPONSE_MODEL, model)
        if cost_usd is None and (input_tokens is not None or output_tokens is not None):
            # the model that answered (as a gateway names it: "openai/gpt-4o-mini", a Bedrock inference
            # profile), else the one asked for; a model alone is no usage (its cost of 0 was taken for one)
            cost_usd = cost_of(_priced_name(model, existing.get(sc.REQUEST_MODEL)), inputs, outputs, *cached)
        if cost_usd is not None:
            span.set_attribute(sc.COST_USD, existing.get(sc.COST_USD, 0.0) + float(cost_usd))


_GATEWAY_PREFIXES: Final = ("us", "eu", "apac", "global", "anthropic", "amazon", "meta", "mistral", "cohere", "ai21")
"""The dotted prefixes of Bedrock's model ids and cross-region inference profiles."""


def _unprefixed(model: str | None) -> str | None:
    """``model`` without a gateway's provider (OpenRouter's ``openai/gpt-4o-mini``) or
    Bedrock's prefixes (``us.anthropic.claude-sonnet-4-5-20250929-v1:0``), a Claude
    name's dots as dashes (OpenRouter's ``claude-opus-4.5`` is Anthropic's
    ``claude-opus-4-5``: by prefix it was priced as ``claude-opus-4``, 3x), or None when
    that changes nothing."""
    if not model:
        return None
    name = model.rsplit("/", 1)[-1]
    while "." in name and name.split(".", 1)[0] in _GATEWAY_PREFIXES:
        name = name.split(".", 1)[1]
    if name.startswith("claude"):
        name = name.replace(".", "-")
    return name if name != model else None


def _priced_name(*models: str | None) -> str | None:
    """Which of ``models`` (the one that answered, then the one asked for) prices a call:
    the first that has a price. A model's own entry comes first, as given or without a
    gateway's prefixes (one registered for ``openrouter/openai/gpt-4o``), then the entry
    its name starts with, its gateway's prefixes gone first (``claude-opus-4.5`` is not
    ``claude-opus-4``). The asked-for model's own entry does not outrank the answering
    model's prefix: ``gpt-4o`` asked and ``gpt-4o-mini-2024-07-18`` answering (a router's
    fallback, a dated snapshot) was priced as gpt-4o, 16x too high."""
    for model in models:
        if not model:
            continue
        bare = _unprefixed(model)
        for name in (model, bare):
            if name and name in PRICES:
                return name
        for name in (bare, model):
            if name and _price_key(name) is not None:
                return name
    return None


def record_response_usage(span: trace.Span, response: Any) -> None:
    """Record the usage a model client's response reports, if it reports any.

    Duck-typed, so no client library is imported: ``response.usage`` (attribute or key)
    with ``input_tokens``/``output_tokens`` (Anthropic, OpenAI Responses) or
    ``prompt_tokens``/``completion_tokens`` (OpenAI Chat Completions), and
    ``response.model``. Anthropic counts the prompt cache's tokens apart
    (``cache_read_input_tokens``, ``cache_creation_input_tokens``); they are added to the
    input tokens, as the GenAI conventions count them. OpenAI counts its cache reads in
    the input tokens and names them (``prompt_tokens_details.cached_tokens``; the
    Responses API's ``input_tokens_details``). Either way they are priced as cache reads.
    ``prompt_tokens`` holds the cache's reads whatever else the usage says (LiteLLM's
    usage for a Claude call has Anthropic's cache fields too: counted twice before),
    and its writes when ``prompt_tokens_details.cache_creation_tokens`` says so.
    Bedrock's Converse API (``inputTokens``, ``cacheReadInputTokens``...) counts as
    Anthropic does. Gemini's and LangChain's ``usage_metadata`` is read by
    ``_usage_metadata``.
    """
    usage = _field(response, "usage")
    if usage is None:
        _usage_metadata(span, response)
        return
    inputs = _field(usage, "input_tokens", "prompt_tokens", "inputTokens")
    outputs = _field(usage, "output_tokens", "completion_tokens", "outputTokens")
    if not isinstance(inputs, int) and not isinstance(outputs, int):
        return
    apart = (_count(_field(usage, "cache_read_input_tokens", "cacheReadInputTokens")),
             _count(_field(usage, "cache_creation_input_tokens", "cacheWriteInputTokens")))
    if not isinstance(inputs, int):
        inputs, cached = None, (0, 0)
    else:
        details = _field(usage, "prompt_tokens_details", "input_tokens_details")
        included = 0 if details is None else _count(_field(details, "cached_tokens"))
        if _field(usage, "prompt_tokens") is None:  # Anthropic's, Bedrock's: the cache's tokens are apart
            inputs += sum(apart)
            cached = (apart[0] + min(included, max(inputs, 0)), apart[1])
        else:  # prompt_tokens (OpenAI's, LiteLLM's for any provider): the cache's reads are in it,
            # and its writes where the details name them (LiteLLM before late 2025 left them out)
            if _field(details, "cache_creation_tokens") is None:
                inputs += apart[1]
            read = min(max(included, apart[0]), max(inputs, 0))
            cached = (read, min(apart[1], max(inputs, 0) - read))
    model = _field(response, "model")
    record_usage_on(span, inputs, outputs if isinstance(outputs, int) else None,
                    model if isinstance(model, str) and model else None, None, cached)


def _usage_metadata(span: trace.Span, response: Any) -> None:
    """Record the usage of a Gemini response (google-genai's ``GenerateContentResponse``,
    or its REST JSON as a dict), if it reports any: ``usage_metadata`` counts the input
    as ``prompt_token_count`` (cached content included: ``cached_content_token_count``,
    priced as cache reads) plus ``tool_use_prompt_token_count``, and the output as
    ``candidates_token_count`` plus ``thoughts_token_count`` (billed as output); the
    model that answered is ``model_version``. A LangChain message's ``usage_metadata``
    has ``input_tokens`` (the cache's included, ``input_token_details.cache_read`` and
    ``cache_creation``) and ``output_tokens``; its model is in ``response_metadata``."""
    meta = _field(response, "usage_metadata", "usageMetadata")
    if meta is None:
        return
    if isinstance(_field(meta, "input_tokens"), int) or isinstance(_field(meta, "output_tokens"), int):
        details = _field(meta, "input_token_details")
        inputs, outputs = _field(meta, "input_tokens"), _field(meta, "output_tokens")
        read = min(_count(_field(details, "cache_read")), _count(inputs))
        cached = (read, min(_count(_field(details, "cache_creation")), _count(inputs) - read))
        model = _field(_field(response, "response_metadata"), "model_name", "model")
        record_usage_on(span, inputs if isinstance(inputs, int) else None,
                        outputs if isinstance(outputs, int) else None,
                        model if isinstance(model, str) and model else None, None, cached)
        return
    prompt = _field(meta, "prompt_token_count", "promptTokenCount")
    candidates = _field(meta, "candidates_token_count", "candidatesTokenCount")
    thoughts = _field(meta, "thoughts_token_count", "thoughtsTokenCount")
    if not any(isinstance(n, int) and not isinstance(n, bool) for n in (prompt, candidates, thoughts)):
        return
    inputs = _count(prompt) + _count(_field(meta, "tool_use_prompt_token_count", "toolUsePromptTokenCount"))
    cached = min(_count(_field(meta, "cached_content_token_count", "cachedContentTokenCount")), _count(prompt))
    model = _field(response, "model_version", "modelVersion")
    record_usage_on(span, inputs, _count(candidates) + _count(thoughts),
                    model if isinstance(model, str) and model else None, None, (cached, 0))


_ANTHROPIC_USAGE: Final = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
_RESPONSE_ENDS: Final = ("response.completed", "response.incomplete", "response.failed")
"""The Responses API's last stream event, which carries the response and its usage (an
incomplete one, cut by ``max_output_tokens``, is billed too)."""


class StreamUsage:
    """The usage a streamed model response reports in its chunks, recorded once when the
    stream ends (``@llm`` on a generator; also when it fails part-way, its tokens were
    billed): an OpenAI chat chunk's ``usage`` (the last one's, with
    ``stream_options={"include_usage": True}``), the Responses API's last event,
    Gemini's and LiteLLM's last chunk with usage (cumulative), LangChain's message
    chunks' ``usage_metadata`` (each chunk's own: summed), and Anthropic's
    ``message_start`` (input, cache, model) updated by each ``message_delta`` (the
    counts so far). One model response per stream: a generator that streams two records
    the last one's (OpenAI, Gemini) or their sum (LangChain). Streamed calls had no
    tokens and no cost: the stream's items were read as one response."""

    __slots__ = ("_anthropic", "_chunk_count", "_langchain", "_langchain_chunks", "_last")

    def __init__(self) -> None:
        self._last: Any = None
        self._anthropic: dict[str, Any] | None = None
        self._langchain: dict[str, Any] | None = None  # whole messages' usage, summed
        self._langchain_chunks: dict[str, Any] | None = None  # the chunks' since the last whole message
        self._chunk_count = 0  # how many

    def see(self, item: Any) -> None:
        """Look at one streamed item."""
        kind = _field(item, "type")
        if kind == "message_start":
            message = _field(item, "message")
            usage = _field(message, "usage")
            if usage is not None:
                self._anthropic = {"model": _field(message, "model"),
                                   "usage": {name: _field(usage, name) for name in _ANTHROPIC_USAGE}}
        elif kind == "message_delta":
            usage = _field(item, "usage")
            if self._anthropic is not None and usage is not None:
                for name in _ANTHROPIC_USAGE:  # cumulative; input and cache there too with server tools
                    if isinstance(count := _field(usage, name), int):
                        self._anthropic["usage"][name] = count
        else:
            if kind in _RESPONSE_ENDS:
                item = _field(item, "response")
            meta = _field(item, "usage_metadata")
            if isinstance(_field(meta, "input_tokens"), int) or isinstance(_field(meta, "output_tokens"), int):
                self._add_langchain(item, meta)
            elif _field(item, "usage") is not None or _field(item, "usage_metadata", "usageMetadata") is not None:
                self._last = item

    def _add_langchain(self, item: Any, meta: Any) -> None:
        """Add a LangChain item's usage. What the chunks since the last whole message add
        up to, yielded after them (their ``AIMessage``, or the chunk their ``+`` makes),
        replaces them; any other chunk (``AIMessageChunk``) adds to them, any other whole
        message to the messages' sum (another call's: the chunks before it stay)."""
        pending = self._langchain_chunks
        chunk = type(item).__name__.endswith("Chunk")
        if pending is not None and self._chunk_count >= (2 if chunk else 1) and \
                _tokens(meta) == _tokens(pending["usage_metadata"]):  # their sum: counted once
            self._langchain = _plus(self._langchain, item, meta)
            self._langchain_chunks, self._chunk_count = None, 0
        elif chunk:
            self._langchain_chunks = _plus(pending, item, meta)
            self._chunk_count += 1
        else:
            self._langchain = _plus(self._langchain, item, meta)

    def record(self, span: trace.Span) -> bool:
        """Record what the stream reported on ``span``; False if it reported nothing."""
        langchain = self._langchain
        if self._langchain_chunks is not None:
            meta = self._langchain_chunks["usage_metadata"]
            langchain = _plus(langchain, self._langchain_chunks, meta)
        response = next((r for r in (self._anthropic, langchain, self._last) if r is not None), None)
        if response is None:
            return False
        record_response_usage(span, response)
        return True


def _tokens(meta: Any) -> tuple[int, int]:
    return _count(_field(meta, "input_tokens")), _count(_field(meta, "output_tokens"))


def _plus(total: dict[str, Any] | None, item: Any, meta: Any) -> dict[str, Any]:
    """``total`` (a LangChain message's shape, as a dict) with ``meta``'s usage added, and
    ``item``'s model when it names one."""
    details = _field(meta, "input_token_details")
    old = total["usage_metadata"] if total is not None else {}
    old_details = old.get("input_token_details", {})
    model_of = _field(_field(item, "response_metadata"), "model_name", "model")
    return {"usage_metadata": {
        "input_tokens": old.get("input_tokens", 0) + _count(_field(meta, "input_tokens")),
        "output_tokens": old.get("output_tokens", 0) + _count(_field(meta, "output_tokens")),
        "input_token_details": {name: old_details.get(name, 0) + _count(_field(details, name))
                                for name in ("cache_read", "cache_creation")}},
        "response_metadata": {"model_name": model_of} if model_of is not None else
        (total or {}).get("response_metadata")}


def _count(value: Any) -> int:
    """A token count a response reports, or 0 when it reports none (or nonsense)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _field(obj: Any, *names: str) -> Any:
    if obj is None:
        return None
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None:
            return value
    return None
