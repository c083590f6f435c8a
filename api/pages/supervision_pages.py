"""Supervisor pages: the overdue board, key-supervision cases, recordings with their access log, statistics.

Supervisors only (the leader on duty audits; operators meet recordings on the draft
review page). Each page reads through one domain function: cases.deadlines.overdue_board,
ivr.recording_search.search_recordings (with the JSON API's own query parser, so the
page and /api/v1/recordings accept the same filters), recordings.access.list_access and
cases.stats.case_stats.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Literal

from aiohttp import web
from pydantic import Field, model_validator
from sqlalchemy import select

from api.context import CTX
from api.errors import ApiError
from api.openapi import Routes
from api.pages import PageError, page, render_page
from api.pages.case_pages import path_id, said, worst
from api.pages.charts import bar_chart
from api.recordings import BadRequest, _parse_query
from api.validation import ApiModel, parse_query
from cases.deadlines import deadline_state, overdue_board
from cases.lifecycle import OPEN
from cases.models import Case
from cases.stats import bucket_starts, case_stats
from ivr.recording_search import RecordingQuery, search_recordings
from recordings.access import list_access

routes = Routes("pages")
SUPERVISORS = ("supervisor",)
ACCESS_LOG_ROWS = 200


class LangOnly(ApiModel):
    lang: Literal["zh", "en"] | None = None


class BoardQuery(LangOnly):
    unit: str = Field("", max_length=40)
    near: Literal["0", "1"] = "1"


class StatsQuery(LangOnly):
    start: dt.date | None = Field(None, alias="from")
    end: dt.date | None = Field(None, alias="to")
    bucket: Literal["day", "week", "month"] = "day"
    by: Literal["", "channel", "category", "unit"] = ""

    @model_validator(mode="after")
    def _order(self) -> StatsQuery:
        if self.start and self.end and self.end < self.start:
            raise ValueError("to is before from")
        return self


def _query(request: web.Request, model: type[Any]) -> Any:
    try:
        return parse_query(request, model)
    except ApiError as e:
        raise PageError(400, "error.bad_query", e.message) from None


@routes.get("/supervision/overdue", summary="Overdue board (page)", roles=SUPERVISORS, document=False)
@page
async def overdue(request: web.Request) -> web.Response:
    q = _query(request, BoardQuery)
    ctx = request.app[CTX]
    now = ctx.now()

    def load() -> list[Any]:
        with ctx.sessions() as s:
            return overdue_board(s, ctx.calendar, now, near_fraction=ctx.settings.cases.deadline_near_fraction,
                                 include_near=q.near == "1", unit=q.unit or None)

    rows = await asyncio.to_thread(load)
    return await render_page(request, "overdue.html", {"rows": rows, "q": q, "units": ctx.settings.cases.unit_names()})


@routes.get("/supervision/key-cases", summary="Cases under key supervision (page)", roles=SUPERVISORS, document=False)
@page
async def key_cases(request: web.Request) -> web.Response:
    _query(request, LangOnly)
    ctx = request.app[CTX]
    now = ctx.now()

    def load() -> list[dict[str, Any]]:
        with ctx.sessions() as s:
            stmt = select(Case).where(Case.key_supervision.is_(True), Case.status.in_(OPEN)).order_by(Case.id)
            return [{"case": c, "deadline": worst(deadline_state(c, now, ctx.calendar,
                                                                 near_fraction=ctx.settings.cases.deadline_near_fraction))}
                    for c in s.scalars(stmt)]

    return await render_page(request, "key_cases.html", {"rows": await asyncio.to_thread(load)})


@routes.get("/recordings", summary="Recordings (page)", roles=SUPERVISORS, document=False)
@page
async def recordings(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    # The language switch adds ?lang=; the rest are the API's filters, parsed by the API's parser.
    filters = request.clone(rel_url=request.rel_url.with_query([(k, v) for k, v in request.query.items() if k != "lang"]))
    try:
        q, cursor, limit = _parse_query(filters)
    except BadRequest as e:
        raise PageError(400, "error.bad_query", e.message) from None
    tz = ctx.settings.calendar.tz

    def load() -> dict[str, Any]:
        with ctx.sessions() as s:
            hits, nxt = search_recordings(s, q, tz, before_id=cursor, limit=limit)
            return {"hits": hits, "next_cursor": nxt}

    return await render_page(request, "recordings.html", {"f": dict(filters.query), **await asyncio.to_thread(load)})


@routes.get("/recordings/{id}", summary="A recording and its access log (page)", roles=SUPERVISORS,
            document=False)
@page
async def recording(request: web.Request) -> web.Response:
    _query(request, LangOnly)
    ctx, rid = request.app[CTX], path_id(request, "error.no_recording")
    tz = ctx.settings.calendar.tz

    def load() -> dict[str, Any]:
        with ctx.sessions() as s:
            hits, _ = search_recordings(s, RecordingQuery(recording_id=rid, include_deleted=True), tz, limit=1)
            if not hits:
                raise PageError(404, "error.no_recording")
            return {"hit": hits[0], "entries": list_access(s, recording_id=rid, limit=ACCESS_LOG_ROWS),
                    "said": said(s, [hits[0].recording])}

    return await render_page(request, "recording.html", await asyncio.to_thread(load))


@routes.get("/stats", summary="Statistics with charts (page)", roles=SUPERVISORS, document=False)
@page
async def stats(request: web.Request) -> web.Response:
    q = _query(request, StatsQuery)
    ctx = request.app[CTX]
    today = ctx.now().astimezone(ctx.settings.calendar.tz).date()
    end = q.end or today
    start = q.start or end - dt.timedelta(days=29)

    def load() -> list[Any]:
        with ctx.sessions() as s:
            return case_stats(s, ctx.calendar, start, end + dt.timedelta(days=1), q.bucket, q.by or None)

    try:
        rows = await asyncio.to_thread(load)
    except ValueError as e:  # too many buckets for the range
        raise PageError(400, "error.bad_query", str(e)) from None
    per_bucket = dict.fromkeys(bucket_starts(start, end + dt.timedelta(days=1), q.bucket)[:-1], 0)
    for r in rows:
        per_bucket[r.bucket] += r.received
    chart = bar_chart([(b.isoformat(), n) for b, n in per_bucket.items()])
    return await render_page(request, "stats.html", {"q": q, "start": start, "end": end, "rows": rows, "chart": chart,
                                                     "total": sum(per_bucket.values())})
