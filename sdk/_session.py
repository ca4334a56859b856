"""``session()``: who and which conversation, on every span started inside.

The ids live in the OpenTelemetry context (a ``contextvars`` value), not in a global or
a thread-local, so they follow the code the way context does: into every asyncio task
created inside the block (tasks copy the context), into threads that run with a copy of
it (``contextvars.copy_context().run``, or an executor that propagates context), and
into nothing else. spanhouse's span processor stamps them on each span when it starts,
so spans of other instrumentations inside the block (an HTTP client, an LLM library)
carry them too, not only the decorators' spans.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Final

from opentelemetry import context as context_api

from spanhouse.sdk import _semconv as sc

SESSION_KEY: Final = context_api.create_key("spanhouse.session")


@contextmanager
def session(session_id: str | None = None, user_id: str | None = None) -> Iterator[None]:
    """Put ``session.id`` (and ``gen_ai.conversation.id``) and ``user.id`` on every span inside.

    Nested blocks add to the outer one; an inner id replaces the outer id of the same kind.
    Use it as a ``with`` block, in sync and async code alike.

    Raises:
        ValueError: neither id is given, or an id is not a non-empty string.
    """
    if session_id is None and user_id is None:
        raise ValueError("session() needs session_id, user_id or both")
    for label, value in (("session_id", session_id), ("user_id", user_id)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{label} must be a non-empty string, not {value!r}")
    attributes = dict(current_attributes() or {})
    if session_id is not None:
        attributes[sc.SESSION_ID] = session_id
        attributes[sc.CONVERSATION_ID] = session_id
    if user_id is not None:
        attributes[sc.USER_ID] = user_id
    token = context_api.attach(context_api.set_value(SESSION_KEY, MappingProxyType(attributes)))
    try:
        yield
    finally:
        context_api.detach(token)


def current_attributes() -> Mapping[str, str] | None:
    """The attributes of the innermost ``session()`` block around the caller, if any."""
    return context_api.get_value(SESSION_KEY)  # type: ignore[return-value]
