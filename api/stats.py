"""GET /api/v1/stats: case figures by day / week / month and by channel, category or unit, with call figures.

The definitions are cases/stats.py's (cases) and ivr/call_stats.py's (calls); this route
picks the period, adds a total row over it and never shows a case or a person.
The period is given in local days, both ends inclusive; by default the last 30 days.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from aiohttp import web
from pydantic import Field
from sqlalchemy.orm import Session

from api.cases import answer, in_transaction
from api.context import CTX
from api.errors import ApiError
from api.openapi import Routes
from api.validation import ApiModel, parse_query
from cases.stats import StatRow, case_stats
from ivr.call_stats import call_stats

routes = Routes("stats")
STATS_ROLES = ("supervisor", "admin")
"""Leaders on duty, and administrators (figures only, no personal data)."""
DEFAULT_DAYS = 30
_FIRST, _LAST = dt.date(2000, 1, 1), dt.date(2100, 1, 1)


class StatsQuery(ApiModel):
    start: dt.date | None = Field(None, ge=_FIRST, le=_LAST, description="first local day; default 29 days before end")
    end: dt.date | None = Field(None, ge=_FIRST, le=_LAST, description="last local day (inclusive); default today")
    bucket: Literal["day", "week", "month"] = "day"
    by: Literal["channel", "category", "unit"] | None = Field(None, description="one row per bucket and group")


class CaseFigures(ApiModel):
    bucket: str | None = Field(description="first local day of the bucket; null in the total")
    group: str | None
    received: int
    responded_in_time: int
    accepted: int
    closed: int
    replied: int
    replied_on_time: int
    rated: int
    satisfied: int
    repeats: int
    response_rate: float | None = Field(description="signed and routed within the sign deadline / received")
    completion_rate: float | None = Field(description="closed / accepted")
    on_time_rate: float | None = Field(description="replied by the reply deadline / replied")
    satisfaction_rate: float | None = Field(description="satisfied or basically satisfied / rated")
    repeat_rate: float | None = Field(description="merged into another case / received")


class CallFigures(ApiModel):
    bucket: str | None
    inbound: int
    answered: int = Field(description="bridged to an operator")
    voicemail: int
    self_service: int
    abandoned: int
    other: int
    answer_rate: float | None


class Stats(ApiModel):
    start: dt.date
    end: dt.date
    bucket: str
    by: str | None
    rows: list[CaseFigures]
    total: CaseFigures
    calls: list[CallFigures]
    calls_total: CallFigures


def _total_cases(rows: list[StatRow], start: dt.date) -> dict[str, Any]:
    names = ("received", "responded_in_time", "accepted", "closed", "replied", "replied_on_time", "rated",
             "satisfied", "repeats")
    total = StatRow(start, None, *(sum(getattr(r, n) for r in rows) for n in names))
    return {**total.as_dict(), "bucket": None}


@routes.get("/api/v1/stats", summary="Case and call statistics by period, channel, category or unit",
            roles=STATS_ROLES, query=StatsQuery, response=Stats)
async def stats(request: web.Request) -> web.Response:
    q = parse_query(request, StatsQuery)
    ctx = request.app[CTX]
    end = q.end or ctx.calendar.local_date(ctx.now())
    start = q.start or end - dt.timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise ApiError(422, "validation_failed", "invalid query: start: after end",
                       {"fields": [{"field": "start", "message": "must not be after end", "type": "range"}]})

    def load(s: Session) -> Stats:
        try:
            rows = case_stats(s, ctx.calendar, start, end + dt.timedelta(days=1), q.bucket, q.by)
            calls = call_stats(s, ctx.calendar, start, end + dt.timedelta(days=1), q.bucket)
        except ValueError as e:  # too many buckets
            raise ApiError(422, "validation_failed", f"invalid query: bucket: {e}",
                           {"fields": [{"field": "bucket", "message": str(e), "type": "range"}]}) from None
        call_total = {k: sum(getattr(c, k) for c in calls)
                      for k in ("inbound", "answered", "voicemail", "self_service", "abandoned")}
        inbound = call_total["inbound"]
        other = inbound - sum(v for k, v in call_total.items() if k != "inbound")
        return Stats(
            start=start, end=end, bucket=q.bucket, by=q.by,
            rows=[CaseFigures(**r.as_dict()) for r in rows],  # type: ignore[arg-type]
            total=CaseFigures(**_total_cases(rows, start)),
            calls=[CallFigures(**c.as_dict()) for c in calls],  # type: ignore[arg-type]
            calls_total=CallFigures(bucket=None, **call_total, other=other,
                                    answer_rate=round(call_total["answered"] / inbound, 4) if inbound else None),
        )

    return answer(await in_transaction(ctx, load))
