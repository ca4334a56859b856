"""ASGI middleware of the query API: what HTTP asks of every endpoint alike.

``BodyLimit`` bounds a request body: the API read a whole body (FastAPI does, before
the key is checked) whatever its size, so anyone reaching the port could make the
collector hold hundreds of MB. ``HeadAsGet`` answers HEAD as GET without the body,
which HTTP requires of a server (RFC 9110 §9.3.2) and which FastAPI's routes do not do.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """413 for a request body over ``max_bytes``, never held: one whose ``Content-Length``
    says so is refused before the endpoint runs, a chunked one as soon as the bytes read
    pass the bound. The rest of the body is read and dropped first (up to ``_DRAIN``
    times the bound), so the client, still sending, reads the answer: a connection
    closed on unread bytes is reset, and the client saw a reset instead of the 413."""

    _DRAIN = 8

    def __init__(self, app: App, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:  # the server checked its form
            # A client that asked to be told first (Expect: 100-continue, curl's way past
            # 1 MiB) has sent nothing yet: it is told now, and sends nothing.
            waiting = headers.get(b"expect", b"").lower() == b"100-continue"
            drained = not waiting and await self._drain(receive, more=True)
            await _refuse(send, self._message(), close=not drained)
            return
        read = 0

        async def limited() -> Message:
            nonlocal read
            message = await receive()
            read += len(message.get("body", b""))
            if read > self._max:  # raised where the endpoint reads its body: FastAPI answers it
                drained = await self._drain(receive, more=message.get("more_body", False))
                raise HTTPException(413, self._message(), headers=None if drained else {"Connection": "close"})
            return message

        await self._app(scope, limited, send)

    async def _drain(self, receive: Receive, *, more: bool) -> bool:
        """Read and drop the rest of the body; False if it goes on past the drain bound."""
        dropped = 0
        while more:
            if dropped > self._DRAIN * self._max:
                return False
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return True
            dropped += len(message.get("body", b""))
            more = message.get("more_body", False)
        return True

    def _message(self) -> str:
        return f"the request body is over {self._max:,} bytes, the most this API takes"


async def _refuse(send: Send, detail: str, *, close: bool) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413,
                "headers": headers + [(b"connection", b"close")] if close else headers})
    await send({"type": "http.response.body", "body": body})


class _Answered(Exception):
    """Raised out of a HEAD's endpoint once its headers are sent: the body is not wanted."""


class HeadAsGet:
    """HEAD runs the GET endpoint and sends its status and headers (Content-Length
    included), never its body. The endpoint is stopped at its first body message: a
    stream (the live feed, an export) would otherwise run on, for nothing, and hold the
    connection until the client went away."""

    def __init__(self, app: App) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self._app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] != "http.response.body":
                await send(message)
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            raise _Answered

        try:
            await self._app({**scope, "method": "GET"}, receive, headers_only)
        except _Answered:
            pass
