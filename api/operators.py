"""Operators over HTTP: presence, the screen pop (server-sent events), the callback list, queue statistics.

The screen pop
--------------
``GET /api/v1/operators/me/events`` is a Server-Sent Events stream (``text/event-stream``):
one event per thing the queue does for *this* operator: ``ringing`` (their phone rings for
a caller), ``connected`` (they answered and are bridged), ``ended`` (with a reason). Each
event's data is JSON with the caller's number, the call id, the recording id once the
conversation is stored (so on ``ended`` after a bridged call), and the previous cases from
that number, most recent first (each with its id, for a link to its page).
``POST /api/v1/calls/{id}/case`` opens a case prefilled from the call (channel phone, the
caller's number, linked to the call and its recording). The operator's console (/console,
api/pages/console_pages.py) is the page that shows the events and opens the case.

The events come from the queue of the IVR running in the same process (``hotline serve``
runs both): ``Context.queue_events`` is the one object both see. An API process without the
IVR streams only keep-alive comments. SSE rather than a WebSocket: one direction is all a
screen pop needs, the browser's EventSource reconnects by itself, and it passes proxies as
plain HTTP.

A stream never ends by itself, so the app closes every stream when it shuts down (``setup``):
otherwise aiohttp waits for each open operator console up to its shutdown timeout (twice
60 s) before `hotline serve` can exit. The browser reconnects to the next process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any, Literal

from aiohttp import web
from pydantic import Field
from sqlalchemy import or_, select

from api.auth import USER
from api.context import CTX
from api.errors import REQUEST_ID, ApiError, json_response
from api.openapi import Routes
from api.validation import ApiModel, parse_body, parse_query
from cases import callbacks
from cases.actions import CaseValidationError, create_case
from cases.models import Case
from cases.users import User
from config.context import Context
from config.db import transaction, utcnow
from config.logs import get_logger
from ivr import presence
from ivr.models import Call
from ivr.queue import QueueEvent
from ivr.queue_calls import SERVICE_LEVEL_SECONDS, queue_stats

log = get_logger("api.operators")
routes = Routes("operators")

OPERATOR = ("operator",)
SUPERVISOR = ("supervisor",)
CALLBACK_ROLES = ("operator", "supervisor", "campaign")
"""Operators ring callers back between calls, supervisors oversee, campaigns dial them."""
STATS_ROLES = ("operator", "supervisor")
KEEPALIVE_SECONDS = 15.0
"""A comment line this often keeps proxies and the browser from closing an idle stream."""
PREVIOUS_CASES = 10
STREAMS_CLOSING = web.AppKey("operator_streams_closing", asyncio.Event)
"""Set when the app shuts down: every event stream ends."""


def setup(app: web.Application) -> None:
    """End the event streams at shutdown, before aiohttp waits for the handlers still running."""
    closing = asyncio.Event()
    app[STREAMS_CLOSING] = closing

    async def close_streams(_: web.Application) -> None:
        closing.set()

    app.on_shutdown.append(close_streams)


# --- presence ----------------------------------------------------------------------------


class PresenceOut(ApiModel):
    user_id: int
    username: str
    display_name: str | None
    sip_uri: str | None
    state: str = Field(description="available, busy, wrap_up, away or offline")
    since: dt.datetime | None
    wrap_up_until: dt.datetime | None
    call_id: int | None = Field(description="the call the operator is on while busy")


class PresenceList(ApiModel):
    items: list[PresenceOut]


class PresenceIn(ApiModel):
    state: Literal["available", "away", "offline"] = Field(
        description="busy and wrap_up follow calls and cannot be chosen")


def _presence_out(v: presence.OperatorView) -> PresenceOut:
    return PresenceOut(user_id=v.user_id, username=v.username, display_name=v.display_name, sip_uri=v.sip_uri,
                       state=v.state, since=v.since, wrap_up_until=v.wrap_up_until, call_id=v.call_id)


def _me(s: Any, request: web.Request) -> User:
    user = s.get(User, request[USER].id)
    if user is None:  # deleted between the auth check and now
        raise ApiError(401, "unauthenticated", "your account no longer exists")
    return user


@routes.get("/api/v1/operators/me/presence", summary="My presence", roles=OPERATOR, response=PresenceOut)
async def my_presence(request: web.Request) -> web.Response:
    ctx = request.app[CTX]

    def load() -> PresenceOut:
        with transaction(ctx.sessions) as s:
            return _presence_out(presence.operator_state(s, _me(s, request), utcnow()))

    return json_response((await asyncio.to_thread(load)).model_dump(mode="json"))


@routes.put("/api/v1/operators/me/presence", summary="Set my presence (available, away, offline)", roles=OPERATOR,
            body=PresenceIn, response=PresenceOut, errors=(409,),
            description="Refused with 409 while on a call. Choosing available during wrap-up ends it early.")
async def set_my_presence(request: web.Request) -> web.Response:
    body = await parse_body(request, PresenceIn)
    ctx = request.app[CTX]

    def change() -> PresenceOut:
        with transaction(ctx.sessions) as s:
            return _presence_out(presence.set_operator_state(s, _me(s, request), body.state, utcnow()))

    try:
        out = await asyncio.to_thread(change)
    except presence.PresenceError as e:
        raise ApiError(409, "conflict", str(e)) from None
    log.info("presence set", user=request[USER].username, state=out.state)
    return json_response(out.model_dump(mode="json"))


@routes.get("/api/v1/operators", summary="Every operator's presence", roles=SUPERVISOR, response=PresenceList)
async def list_operators(request: web.Request) -> web.Response:
    ctx = request.app[CTX]

    def load() -> PresenceList:
        with transaction(ctx.sessions) as s:
            return PresenceList(items=[_presence_out(v) for v in presence.operators(s, utcnow())])

    return json_response((await asyncio.to_thread(load)).model_dump(mode="json"))


# --- the screen pop ----------------------------------------------------------------------


def previous_cases(s: Any, number: str | None, tz: Any, *, before_call: int | None = None) -> list[dict[str, Any]]:
    """Cases from this caller's number (as presented or normalised), most recent first."""
    if not number:
        return []
    numbers = {number, callbacks.dialable(number) or number}
    q = (select(Case).where(or_(Case.caller_number.in_(numbers), Case.complainant_phone.in_(numbers)))
         .order_by(Case.received_at.desc(), Case.id.desc()).limit(PREVIOUS_CASES))
    if before_call is not None:
        q = q.where(or_(Case.source_call_id.is_(None), Case.source_call_id != before_call))
    return [{"id": c.id, "number": c.number, "status": c.status, "category": c.category,
             "received_at": c.received_at.isoformat(),
             "received_local": c.received_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"), "content": c.content[:200]}
            for c in s.scalars(q)]


def screen_pop(ctx: Context, event: QueueEvent) -> dict[str, Any]:
    """What the operator's page shows for one queue event (read from the database as it is now)."""
    data: dict[str, Any] = {"kind": event.kind, "call_id": event.call_id, "caller": event.caller,
                            "reason": event.reason, "at": event.at.isoformat(), "recording_id": None,
                            "previous_cases": []}
    with ctx.sessions() as s:
        call = s.get(Call, event.call_id) if event.call_id is not None else None
        if call is not None:
            data["recording_id"] = call.recording_id
        data["previous_cases"] = previous_cases(s, event.caller, ctx.settings.calendar.tz, before_call=event.call_id)
    return data


def sse(event: str, data: dict[str, Any], event_id: int) -> bytes:
    """One SSE message; JSON never holds a raw newline, so `data:` is one line."""
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


@routes.get("/api/v1/operators/me/events", summary="My screen pop: server-sent events of my calls", roles=OPERATOR,
            description="text/event-stream; events ringing, connected, ended (see api/operators.py).")
async def my_events(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    me = request[USER].id
    closing = request.app[STREAMS_CLOSING]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no", "X-Request-ID": request[REQUEST_ID]})
    with ctx.queue_events.subscribe() as queue:  # before the headers: nothing published after them is missed
        await resp.prepare(request)
        await resp.write(b"retry: 3000\n: connected\n\n")
        sent = 0
        closed = asyncio.create_task(closing.wait())
        got: asyncio.Task[QueueEvent] | None = None
        try:
            while not closing.is_set():
                got = got or asyncio.create_task(queue.get())
                await asyncio.wait((got, closed), timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                if not got.done():
                    if not closing.is_set():
                        await resp.write(b": keep-alive\n\n")
                    continue  # the same get() goes on waiting
                event, got = got.result(), None
                if event.operator_id != me:
                    continue
                data = await asyncio.to_thread(screen_pop, ctx, event)
                sent += 1
                await resp.write(sse(event.kind, data, sent))
        except (ConnectionResetError, ConnectionError):
            pass  # the page closed
        finally:
            closed.cancel()
            if got is not None:
                got.cancel()
    return resp


class CaseFromCall(ApiModel):
    content: str = Field("", max_length=20000, description="what the caller reports (may be filled in later)")
    complainant_name: str | None = Field(None, max_length=120)
    address: str | None = Field(None, max_length=400)


class CaseCreated(ApiModel):
    id: int
    number: str
    status: str
    channel: str
    caller_number: str | None
    source_call_id: int
    source_recording_id: int | None = Field(description="null until the conversation is stored; set then")


@routes.post("/api/v1/calls/{id}/case", summary="Open a case prefilled from a call (screen pop)",
             roles=("operator", "supervisor"), body=CaseFromCall, response=CaseCreated, status=201, errors=(404,))
async def case_from_call(request: web.Request) -> web.Response:
    body = await parse_body(request, CaseFromCall)
    ctx = request.app[CTX]
    call_id = _path_id(request, "call")
    actor = request[USER].username

    def create() -> CaseCreated:
        with transaction(ctx.sessions) as s:
            call = s.get(Call, call_id)
            if call is None or call.direction != "in":
                raise ApiError(404, "not_found", f"no inbound call {call_id}")
            fields = {k: v for k, v in (("complainant_name", body.complainant_name), ("address", body.address),
                                        ("complainant_phone", callbacks.dialable(call.caller))) if v}
            case = create_case(s, ctx=ctx, actor=actor, channel="phone", content=body.content,
                               received_at=call.started_at, caller_number=call.caller, note=f"opened from call {call.id}",
                               **fields)
            case.source_call_id = call.id
            case.source_recording_id = call.recording_id
            s.flush()
            return CaseCreated(id=case.id, number=case.number, status=case.status, channel=case.channel,
                               caller_number=case.caller_number, source_call_id=call.id,
                               source_recording_id=case.source_recording_id)

    try:
        out = await asyncio.to_thread(create)
    except CaseValidationError as e:
        raise ApiError(422, "validation_failed", str(e), {"fields": [{"field": k, "message": v, "type": "invalid"}
                                                                      for k, v in e.details.items()]}) from None
    log.info("case opened from call", call=call_id, case=out.number, actor=actor)
    return json_response(out.model_dump(mode="json"), 201)


# --- callbacks ---------------------------------------------------------------------------


class CallbackQuery(ApiModel):
    state: Literal["open", "claimed", "done", "all"] = "open"
    after: int | None = Field(None, ge=0, le=2**31 - 1, description="cursor: the last id of the previous page")
    limit: int = Field(50, ge=1, le=500)


class CallbackOut(ApiModel):
    id: int
    phone: str
    reason: str = Field(description="abandoned (hung up in the queue) or requested (key 2)")
    calls: int
    call_id: int | None
    created_at: dt.datetime
    claimed_by: int | None
    claimed_at: dt.datetime | None
    done_at: dt.datetime | None
    outcome: str | None
    note: str | None


class CallbackList(ApiModel):
    items: list[CallbackOut]
    next_after: int | None = Field(description="pass as ?after= for the next page; null on the last one")


class CallbackDone(ApiModel):
    outcome: Literal["reached", "no_answer", "busy", "invalid_number", "not_needed"]
    note: str | None = Field(None, max_length=callbacks.NOTE_MAX)


def _path_id(request: web.Request, what: str) -> int:
    """The {id} of the path; anything but a 32-bit positive integer names nothing (404)."""
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10 or not 0 < int(raw) <= 2**31 - 1:
        raise ApiError(404, "not_found", f"no {what} {raw[:40]!r}")
    return int(raw)


def _callback_out(c: callbacks.Callback) -> CallbackOut:
    return CallbackOut(id=c.id, phone=c.phone, reason=c.reason, calls=c.calls, call_id=c.call_id,
                       created_at=c.created_at, claimed_by=c.claimed_by, claimed_at=c.claimed_at, done_at=c.done_at,
                       outcome=c.outcome, note=c.note)


@routes.get("/api/v1/callbacks", summary="The callback list (abandoned calls and callback requests), oldest first",
            roles=CALLBACK_ROLES, query=CallbackQuery, response=CallbackList)
async def list_callbacks(request: web.Request) -> web.Response:
    q = parse_query(request, CallbackQuery)
    ctx = request.app[CTX]

    def load() -> CallbackList:
        with ctx.sessions() as s:
            rows = callbacks.listing(s, state=q.state, after_id=q.after, limit=q.limit)
            return CallbackList(items=[_callback_out(c) for c in rows],
                                next_after=rows[-1].id if len(rows) == q.limit else None)

    return json_response((await asyncio.to_thread(load)).model_dump(mode="json"))


async def _callback_action(request: web.Request, action: Any) -> web.Response:
    ctx = request.app[CTX]
    callback_id = _path_id(request, "callback")

    def run() -> CallbackOut:
        with transaction(ctx.sessions) as s:
            return _callback_out(action(s, callback_id))

    try:
        out = await asyncio.to_thread(run)
    except callbacks.CallbackNotFound as e:
        raise ApiError(404, "not_found", str(e)) from None
    except callbacks.CallbackConflict as e:
        raise ApiError(409, "conflict", str(e)) from None
    return json_response(out.model_dump(mode="json"))


@routes.post("/api/v1/callbacks/{id}/claim", summary="Claim a callback so nobody else rings the same caller",
             roles=CALLBACK_ROLES, response=CallbackOut, errors=(404, 409))
async def claim_callback(request: web.Request) -> web.Response:
    me = request[USER].id
    return await _callback_action(request, lambda s, cid: callbacks.claim(s, cid, me))


@routes.post("/api/v1/callbacks/{id}/done", summary="Mark a claimed callback done with its outcome",
             roles=CALLBACK_ROLES, body=CallbackDone, response=CallbackOut, errors=(404, 409))
async def complete_callback(request: web.Request) -> web.Response:
    body = await parse_body(request, CallbackDone)
    me = request[USER].id
    return await _callback_action(request, lambda s, cid: callbacks.complete(s, cid, me, body.outcome, body.note))


# --- statistics --------------------------------------------------------------------------


class QueueStatsQuery(ApiModel):
    from_: dt.date | None = Field(None, alias="from", description="first day (local to the centre); default today")
    to: dt.date | None = Field(None, description="last day, inclusive; default the first day")


class QueueStatsOut(ApiModel):
    from_: dt.date = Field(alias="from")
    to: dt.date
    queued: int
    answered: int
    answered_within_15s: int
    service_level: float | None = Field(description="share of queued callers answered within 15 s")
    average_wait_seconds: float | None
    average_answer_seconds: float | None
    abandoned: int
    abandonment_rate: float | None


@routes.get("/api/v1/stats/queue", summary="Queue statistics: answered within 15 s, average wait, abandonment rate",
            roles=STATS_ROLES, query=QueueStatsQuery, response=QueueStatsOut)
async def stats_queue(request: web.Request) -> web.Response:
    q = parse_query(request, QueueStatsQuery)
    ctx = request.app[CTX]
    tz = ctx.settings.calendar.tz
    first = q.from_ or utcnow().astimezone(tz).date()
    last = q.to or first
    if last < first or (last - first).days > 366:
        raise ApiError(422, "validation_failed", "to must be on or after from, at most 366 days later",
                       {"fields": [{"field": "to", "message": "before from or too far", "type": "range"}]})
    start = dt.datetime.combine(first, dt.time(), tz)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tz)

    def load() -> QueueStatsOut:
        with ctx.sessions() as s:
            st = queue_stats(s, start, end, SERVICE_LEVEL_SECONDS)
        return QueueStatsOut.model_validate({
            "from": first, "to": last, "queued": st.queued, "answered": st.answered,
            "answered_within_15s": st.answered_within, "service_level": st.service_level,
            "average_wait_seconds": st.average_wait_seconds, "average_answer_seconds": st.average_answer_seconds,
            "abandoned": st.abandoned, "abandonment_rate": st.abandonment_rate,
        })

    return json_response((await asyncio.to_thread(load)).model_dump(mode="json", by_alias=True))
