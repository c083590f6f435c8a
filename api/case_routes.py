"""The case queue over HTTP. Issue 3 brought the read-only list; the case loop adds the rest here."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from aiohttp import web
from pydantic import Field
from sqlalchemy import select

from api.auth import ANY_STAFF
from api.context import CTX
from api.errors import json_response
from api.openapi import Routes
from api.validation import ApiModel, parse_query
from cases.models import Case

routes = Routes("cases")


class CaseListQuery(ApiModel):
    status: str | None = Field(None, max_length=20, description="only cases in this status (draft, accepted, …)")
    limit: int = Field(50, ge=1, le=500, description="at most this many cases, newest first")


class CaseSummary(ApiModel):
    number: str
    status: str
    channel: str
    received_at: dt.datetime
    received_local: str = Field(description="received_at in the centre's time zone, YYYY-MM-DD HH:MM")
    caller_number: str | None
    complainant_phone: str | None
    address: str | None
    content: str
    extracted: dict[str, Any]


class CaseList(ApiModel):
    items: list[CaseSummary]


def case_summary(c: Case, tz: Any) -> CaseSummary:
    return CaseSummary(
        number=c.number,
        status=c.status,
        channel=c.channel,
        received_at=c.received_at,
        received_local=c.received_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
        caller_number=c.caller_number,
        complainant_phone=c.complainant_phone,
        address=c.address,
        content=c.content,
        extracted=c.extracted,
    )


@routes.get("/api/v1/cases", summary="List cases, newest first", roles=ANY_STAFF, query=CaseListQuery, response=CaseList)
async def list_cases(request: web.Request) -> web.Response:
    q = parse_query(request, CaseListQuery)
    ctx = request.app[CTX]
    tz = ctx.settings.calendar.tz

    def load() -> CaseList:
        with ctx.sessions() as s:
            stmt = select(Case).order_by(Case.id.desc()).limit(q.limit)
            if q.status:
                stmt = stmt.where(Case.status == q.status)
            return CaseList(items=[case_summary(c, tz) for c in s.scalars(stmt)])

    return json_response((await asyncio.to_thread(load)).model_dump(mode="json"))
