"""The query API (port 8080): execution history and analytics over REST, plus health,
readiness and metrics. OpenAPI at ``/openapi.json``, docs at ``/docs``.

Every data endpoint is tenant-scoped by the caller's API key (``read`` scope; deleting
needs ``admin``); a wrong scope is 403, bad parameters 422 with what and why, an
execution of another tenant is 404 exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, model_validator

from spanhouse import FEEDBACK_ID, SPAN_ID, TRACE_ID, __version__
from spanhouse.clickhouse import Store, deletion, history
from spanhouse.collector.asgi import BodyLimit, HeadAsGet
from spanhouse.collector.auth import KeyRing, Principal, key_from_headers
from spanhouse.collector.metrics import CONTENT_TYPE, Metrics
from spanhouse.collector.resends import RecentRequests
from spanhouse.errors import AuthError, Forbidden, StoreUnavailable
from spanhouse.text import utf8_safe

log = logging.getLogger(__name__)


def _storable(value: datetime) -> datetime:
    """The instant, aware in UTC (without an offset it is UTC), so that times given with
    and without an offset compare, and the driver binds the same instant in the store's
    time zone (a naive one would be read as local time there: the embedded engine takes
    the process's TZ). Times outside what DateTime64(9) holds (1900-2262) are a
    parameter error (422)."""
    value = history.as_utc(value)
    if not 1900 <= value.year <= 2261:
        raise ValueError("must be between the years 1900 and 2261")
    return value


Timestamp = Annotated[datetime, AfterValidator(_storable)]


@dataclass
class ApiContext:
    """What the endpoints need from the running collector."""

    store: Store
    keys: KeyRing
    recent: RecentRequests = field(default_factory=lambda: RecentRequests(0))
    """The requests ingest acknowledged lately: a deletion forgets its tenant's, so the
    same spans sent again are stored again."""
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set when the collector stops: open event streams end instead of holding the
    shutdown for its whole timeout (and being cancelled with tracebacks)."""


MAX_BODY_BYTES = 1 << 20
"""The largest request body the API reads: feedback, its one body, takes at most ~64 KB."""


def _context(request: Request) -> ApiContext:
    return request.app.state.context  # type: ignore[no-any-return]


# The two ways to send a key, declared for the OpenAPI document (its securitySchemes);
# the key itself is read by key_from_headers, the rule the OTLP receivers follow too.
_BEARER = HTTPBearer(auto_error=False, description="an API key as a bearer token")
_API_KEY = APIKeyHeader(name="x-api-key", auto_error=False, description="an API key")
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no API key, or an unknown one"},
    403: {"description": "the key lacks the scope this endpoint needs (read or admin)"},
}


def caller(scope: str) -> Callable[..., Principal]:
    """A dependency: the authenticated caller, who must hold ``scope``."""

    def dependency(request: Request, _bearer: Annotated[object, Security(_BEARER)] = None,
                   _api_key: Annotated[object, Security(_API_KEY)] = None) -> Principal:
        try:
            principal = _context(request).keys.authenticate(key_from_headers(request.headers.get))
            principal.require(scope)
        except Forbidden as exc:
            raise HTTPException(403, str(exc)) from exc
        except AuthError as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
        _refuse_unknown_query(request)
        return principal

    return dependency


def _refuse_unknown_query(request: Request) -> None:
    """422 for a query parameter the endpoint does not take, or one given twice. Ignored,
    a misspelt filter (``servce=``) widened what a call reads, and what a bulk delete
    removes, to everything; given twice, the last value was read (``before=2000-01-01
    &before=2261-01-01`` deleted everything)."""
    route = request.scope["route"]
    allowed = _query_names(request.app, route.path_format, request.method.lower())
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise HTTPException(422, f"unknown query parameter {', '.join(map(repr, unknown))}: "
                                 f"{request.method} {route.path_format} takes {', '.join(sorted(allowed)) or 'none'}")
    given = Counter(name for name, _ in request.query_params.multi_items())
    repeated = sorted(name for name, times in given.items() if times > 1)
    if repeated:
        raise HTTPException(422, f"query parameter {', '.join(map(repr, repeated))} given more than once; "
                                 "give each once")


def _query_names(app: FastAPI, path: str, method: str) -> frozenset[str]:
    """The query parameters of an endpoint, as its OpenAPI document lists them (a filter
    model's fields one by one)."""
    operation = app.openapi()["paths"][path][method]
    return frozenset(p["name"] for p in operation.get("parameters", ()) if p["in"] == "query")


Reader = Annotated[Principal, Depends(caller("read"))]
Admin = Annotated[Principal, Depends(caller("admin"))]
Context = Annotated[ApiContext, Depends(_context)]


class ExecutionFilters(BaseModel):
    """Filters shared by list, export and bulk delete."""

    status: Literal["ok", "error", "running"] | None = None
    # An empty value is refused, not read as "any": a bulk delete with ``service=`` took
    # every service's executions.
    service: str | None = Field(None, min_length=1, max_length=256)
    name: str | None = Field(None, min_length=1, max_length=512)
    type: str | None = Field(None, min_length=1, max_length=128)
    user: str | None = Field(None, min_length=1, max_length=512)
    session: str | None = Field(None, min_length=1, max_length=512)
    since: Timestamp | None = Field(None, description="start time >= (ISO 8601, UTC without an offset; "
                                                      "years 1900-2261)")
    until: Timestamp | None = Field(None, description="start time < (ISO 8601, UTC without an offset; years "
                                                      "1900-2261; after since)")
    min_duration: float | None = Field(None, ge=0, description="milliseconds; leaves out running executions")
    max_duration: float | None = Field(None, ge=0, description="milliseconds; leaves out running executions")
    min_cost: float | None = Field(None, ge=0, description="USD")
    tool: str | None = Field(None, min_length=1, max_length=256, description="called this tool")
    has_errors: bool | None = Field(None, description="any failed span")
    q: str | None = Field(None, min_length=1, max_length=512, description="text in input, output or error messages")

    @model_validator(mode="after")
    def _ranges(self) -> ExecutionFilters:
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be before until")
        if self.min_duration is not None and self.max_duration is not None and self.min_duration > self.max_duration:
            raise ValueError("min_duration must not exceed max_duration")
        return self

    def values(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


Filters = Annotated[ExecutionFilters, Query()]


class FeedbackIn(BaseModel):
    """Feedback on one execution: a 1-5 rating, or any named numeric value. A field it
    does not know is refused (``coment``, ``userId`` were dropped without a word)."""

    model_config = ConfigDict(extra="forbid")

    execution_id: str = Field(pattern=TRACE_ID)
    rating: StrictInt | None = Field(None, ge=1, le=5)  # strict: true and "3" are not ratings
    value: float | None = Field(None, allow_inf_nan=False)  # NaN would make every average of its name null
    name: str = Field("user_rating", min_length=1, max_length=128)
    comment: str = Field("", max_length=10_000)
    user_id: str = Field("", max_length=512)
    id: str | None = Field(None, pattern=FEEDBACK_ID,
                           description="the client's own id of this feedback, as Langfuse's score id: sent "
                                       "again (a retry, a changed rating) it replaces that item; given to "
                                       "another execution or name it is refused (409)")

    @model_validator(mode="after")
    def _one_value(self) -> FeedbackIn:
        if (self.rating is None) == (self.value is None):
            raise ValueError("give exactly one of rating (1-5) or value")
        if self.id is not None and re.fullmatch(SPAN_ID, self.id):
            # Feedback sent over OTLP (the SDK's) has its span's id, 16 hex digits: replaced by
            # a row of this API's, the span would be lost to the deletion of its execution.
            raise ValueError("an id of 16 hex digits is a feedback span's (sent over OTLP); choose another id")
        return self


executions = APIRouter(prefix="/api/v1", tags=["executions"], responses=AUTH_RESPONSES)


@executions.get("/executions")
def list_executions(who: Reader, ctx: Context, filters: Filters,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50,
                    cursor: Annotated[str | None, Query(max_length=512)] = None) -> dict[str, Any]:
    """Executions, newest first, with rollup numbers; ``next_cursor`` fetches the next page."""
    try:
        page = history.list_executions(ctx.store.readers, who.tenant, filters.values(), limit, cursor)
    except ValueError as exc:
        raise HTTPException(422, f"cursor: not a cursor from this API ({exc})") from exc
    return {"items": page.items, "total": page.total, "next_cursor": page.next_cursor}


KEEPALIVE_S = 15.0
"""An SSE comment is sent after this long without events, so that proxies and clients
with a read timeout keep an idle stream open."""


def _event_id(stored_at: datetime, trace_id: str) -> str:
    """An event's ``id:``: where the feed stands after it (stored at, in ms, and trace
    id), encoded as the list's cursors are."""
    return history.encode_cursor(round(history.as_utc(stored_at).timestamp() * 1000), trace_id)


def _resume_point(last_event_id: str) -> tuple[datetime, str]:
    """The feed position a ``Last-Event-ID`` names; ``HTTPException`` 422 if it is not
    an id this stream sends."""
    try:
        ms, trace_id = history.decode_cursor(last_event_id)
        after = history.utc_from_ms(ms)
        if after > datetime.now(timezone.utc) + timedelta(days=1):  # would wait for nothing, silently
            raise ValueError("a time to come")
    except (ValueError, OverflowError, OSError):  # OverflowError, OSError: past the platform's dates
        raise HTTPException(422, f"Last-Event-ID {last_event_id[:80]!r} is not an id this stream sent; "
                                 "reconnect without it to start from now") from None
    return after, trace_id


@executions.get("/executions/stream", response_class=StreamingResponse,
                responses={200: {"content": {"text/event-stream": {}}}})
async def stream_executions(who: Reader, ctx: Context, request: Request,
                            poll: Annotated[float, Query(ge=0.2, le=30)] = 1.0,
                            last_event_id: Annotated[str | None, Header(max_length=200)] = None) -> StreamingResponse:
    """Server-sent events: one ``execution`` event per execution stored from now on, or
    after the event a reconnecting client names in ``Last-Event-ID`` (each event's
    ``id``), so nothing stored while it was away is missed."""
    # Positions are the store's clock read between inserts (see clock_between_inserts): a
    # stream starting, or reading up to, a time read while an insert ran would pass over
    # that insert's rows, stamped before and shown after.
    watermark = ctx.store.writer.clock_between_inserts
    after, after_id = _resume_point(last_event_id) if last_event_id else (await asyncio.to_thread(watermark), "")

    async def events() -> AsyncIterator[bytes]:
        nonlocal after, after_id
        yield b": connected\n\n"
        quiet_since = time.monotonic()
        while not ctx.stopping.is_set() and not await request.is_disconnected():
            try:
                until = await asyncio.to_thread(watermark)
                rows = await asyncio.to_thread(history.executions_after, ctx.store.readers, who.tenant, after,
                                               after_id, until)
            except StoreUnavailable as exc:  # the answer has begun: end it, and the client reconnects
                log.warning("a live stream ends: %s", exc)
                yield b": the store is unavailable; reconnect with Last-Event-ID\n\n"
                return
            for row in rows:
                after, after_id = row["stored_at"], row["trace_id"]
                payload = json.dumps({k: history.iso(v) for k, v in row.items()})
                yield f"id: {_event_id(after, after_id)}\nevent: execution\ndata: {payload}\n\n".encode()
                quiet_since = time.monotonic()
            if time.monotonic() - quiet_since >= KEEPALIVE_S:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            next_poll = time.monotonic() + poll
            while time.monotonic() < next_poll and not ctx.stopping.is_set():
                await asyncio.sleep(0.2)
        if ctx.stopping.is_set():  # said, as a store gone is: the client can tell it from an answer's end
            yield b": the collector is stopping; reconnect with Last-Event-ID\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@executions.get("/executions/{trace_id}", responses={404: {"description": "no such execution"}})
def get_execution(who: Reader, ctx: Context, trace_id: Annotated[str, Path(pattern=TRACE_ID)]) -> dict[str, Any]:
    """One execution: its span tree (tool calls with arguments and results, events, errors),
    rollup numbers and feedback."""
    found = history.get_execution(ctx.store.readers, who.tenant, trace_id.lower())
    if found is None:
        raise HTTPException(404, f"no execution {trace_id}")
    return found


@executions.delete("/executions/{trace_id}", responses={404: {"description": "no such execution"}})
def delete_execution(who: Admin, ctx: Context, trace_id: Annotated[str, Path(pattern=TRACE_ID)]) -> dict[str, int]:
    """Remove one execution from every table; says how many executions and spans went."""
    trace_id = trace_id.lower()
    if not history.execution_exists(ctx.store.readers, who.tenant, trace_id):
        raise HTTPException(404, f"no execution {trace_id}")
    return _delete(ctx, who.tenant, lambda: deletion.delete_traces(
        ctx.store.readers, who.tenant, [trace_id], ctx.store.writer.paused, ctx.stopping))


@executions.delete("/executions")
def delete_executions(who: Admin, ctx: Context, filters: Filters,
                      before: Annotated[Timestamp, Query(description="delete executions started before this (ISO "
                                                                     "8601, UTC without an offset; years 1900-2261)")],
                      dry_run: Annotated[bool, Query(description="only count what would be deleted")] = False,
                      ) -> dict[str, int]:
    """Remove every execution started before ``before`` that matches the filters
    (``dry_run``: say how many executions that would be, and remove nothing)."""
    values = {**filters.values(), "until": min(before, filters.values().get("until", before))}
    ids = history.matching_ids(ctx.store.readers, who.tenant, values)
    if dry_run:
        return {"executions": len(ids)}
    return _delete(ctx, who.tenant, lambda: deletion.delete_traces(
        ctx.store.readers, who.tenant, ids, ctx.store.writer.paused, ctx.stopping))


Removed = TypeVar("Removed", bound="dict[str, int] | None")


def _delete(ctx: ApiContext, tenant: str, run: Callable[[], Removed]) -> Removed:
    """``run()``'s answer (what a deletion removed). Once it removed an execution or
    spans (an execution still running has only its start marker, which ``spans`` does
    not count), or failed (it may have removed some first), ingest forgets the tenant's recent requests (see
    ``ApiContext.recent``), so spans deleted and sent again are stored again. A key does
    not say which traces its request held: resends of the tenant's other requests within
    the window are then stored again too (at-least-once, as without the window)."""
    try:
        removed = run()
    except BaseException:
        ctx.recent.forget(tenant)
        raise
    if removed and (removed.get("executions") or removed.get("spans")):
        ctx.recent.forget(tenant)
    return removed


@executions.post("/feedback", status_code=201, responses={
    404: {"description": "no such execution"}, 409: {"description": "the id names feedback of another execution or name"},
    413: {"description": f"a body over {MAX_BODY_BYTES:,} bytes"}})
def post_feedback(who: Reader, ctx: Context, body: FeedbackIn) -> dict[str, Any]:
    """Rate an execution (rating 1-5) or attach a named score; shows in detail and stats."""
    trace_id = body.execution_id.lower()
    if not history.execution_exists(ctx.store.readers, who.tenant, trace_id):
        raise HTTPException(404, f"no execution {body.execution_id} is stored; one sent a moment ago may still be "
                                 "on its way from the spool: try again in a few seconds")
    if body.id is not None:
        for item in history.feedback_items(ctx.store.readers, who.tenant, body.id):
            if (item["execution_id"], item["name"]) != (trace_id, body.name):
                raise HTTPException(409, f"feedback id {body.id!r} is already {item['name']!r} on execution "
                                         f"{item['execution_id']}: an id names one item; choose another id, or "
                                         f"delete that one first (DELETE /api/v1/feedback/{body.id})")
    value = float(body.rating) if body.rating is not None else float(body.value)  # type: ignore[arg-type]
    return history.add_feedback(ctx.store.readers, who.tenant, trace_id, body.name, value, body.comment, body.user_id,
                                feedback_id=body.id)


FeedbackKey = Annotated[str, Path(pattern=FEEDBACK_ID, description="the id POST /feedback answered with, or "
                                                                      "the span id of feedback sent over OTLP")]


@executions.get("/feedback/{feedback_id}", responses={404: {"description": "no such feedback"}})
def get_feedback(who: Reader, ctx: Context, feedback_id: FeedbackKey) -> dict[str, Any]:
    """One feedback item: the execution it rates, its name, value, comment and source."""
    items = history.feedback_items(ctx.store.readers, who.tenant, feedback_id)
    if not items:
        raise HTTPException(404, f"no feedback {feedback_id}")
    return items[-1]  # the newest, where two requests gave one id to two items at once


@executions.delete("/feedback/{feedback_id}", responses={404: {"description": "no such feedback"}})
def delete_feedback(who: Admin, ctx: Context, feedback_id: FeedbackKey) -> dict[str, int]:
    """Remove one feedback item (and, sent over OTLP, its span); says how many items and
    spans went. Its execution stays."""
    removed = _delete(ctx, who.tenant, lambda: deletion.delete_feedback(
        ctx.store.readers, who.tenant, history.feedback_key(feedback_id), ctx.store.writer.paused))
    if removed is None:
        raise HTTPException(404, f"no feedback {feedback_id}")
    return removed


@executions.get("/export", response_class=StreamingResponse, responses={200: {"content": {
    "text/csv": {}, "application/x-ndjson": {}, "application/vnd.apache.parquet": {}}}})
def export(who: Reader, ctx: Context, filters: Filters,
           format: Annotated[Literal["csv", "json", "parquet"], Query()] = "json") -> StreamingResponse:
    """Stream executions with the fields the list gives as CSV, JSON lines or Parquet."""
    media = {"csv": "text/csv", "json": "application/x-ndjson", "parquet": "application/vnd.apache.parquet"}[format]
    body = history.export_executions(ctx.store.readers, who.tenant, filters.values(), format)
    return StreamingResponse(body, media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="executions.{format}"'})


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as strings (strict JSON has no word for them) and
    text UTF-8-safe (a JSON ``"\\ud83d"`` escape, half an emoji cut by a client, is a lone
    surrogate, which the answer could not encode: a 500)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return utf8_safe(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, also when the refused input is NaN, infinite or a lone surrogate
    (which its default handler cannot encode, answering 500 instead)."""
    return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, 422)


async def _unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
    """503 for a store that cannot answer now (closing, unreachable), saying why."""
    return JSONResponse({"detail": str(exc)}, 503, headers={"Retry-After": "5"})


def create_app(context: ApiContext, metrics: Metrics, readiness: Callable[[], tuple[bool, str]]) -> FastAPI:
    """The API app; ``readiness`` returns (ready, why-not)."""
    app = FastAPI(title="spanhouse", version=__version__,
                  description="Execution history for AI agents and workflows.")
    app.state.context = context
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(StoreUnavailable, _unavailable)  # type: ignore[arg-type]
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)  # type: ignore[arg-type]
    app.add_middleware(HeadAsGet)  # type: ignore[arg-type]
    app.include_router(executions)
    from spanhouse.collector.api_analytics import analytics  # here: that module imports this one
    app.include_router(analytics)

    # The ops endpoints do no I/O and run on the event loop itself: as plain functions they
    # queued for the worker threads behind slow reads, and a liveness probe timed out.
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "not accepting data right now"}})
    async def readyz() -> JSONResponse:
        """Ready to accept data."""
        ready, why = readiness()
        return JSONResponse({"status": "ready" if ready else "not ready", "reason": why}, 200 if ready else 503)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app
