"""Inbound call figures per day / week / month of the centre's zone, for /api/v1/stats.

Buckets as in cases/stats.py (the same boundaries, one SQL CASE expression, counted by
the database). An inbound call counts by its start time:

- ``answered``: bridged to an operator (disposition ``operator``);
- ``voicemail``: a message was left; ``self_service``: the caller used the menu only
  (status lookup) and hung up; ``abandoned``: hung up while waiting or in the menu;
- ``other``: rejected, failed, still running, or dispositions added later.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from cases.stats import Bucket, bucket_starts
from config.calendar import WorkCalendar
from ivr.models import Call

_NAMED = ("operator", "voicemail", "self_service", "abandoned")


@dataclass(frozen=True)
class CallRow:
    bucket: dt.date
    inbound: int
    answered: int
    voicemail: int
    self_service: int
    abandoned: int

    @property
    def other(self) -> int:
        return self.inbound - self.answered - self.voicemail - self.self_service - self.abandoned

    @property
    def answer_rate(self) -> float | None:
        return round(self.answered / self.inbound, 4) if self.inbound else None

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "bucket": self.bucket.isoformat(), "other": self.other, "answer_rate": self.answer_rate}


def _count(cond):  # type: ignore[no-untyped-def]
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def call_stats(session: Session, calendar: WorkCalendar, start: dt.date, end: dt.date,
               bucket: Bucket = "day") -> list[CallRow]:
    """Inbound calls started on local days [start, end), one row per bucket with calls."""
    days = bucket_starts(start, end, bucket)
    edges = [dt.datetime.combine(d, dt.time(), calendar.tz).astimezone(dt.UTC) for d in days]
    lo = dt.datetime.combine(start, dt.time(), calendar.tz).astimezone(dt.UTC)
    hi = dt.datetime.combine(end, dt.time(), calendar.tz).astimezone(dt.UTC)
    idx = case(*[(Call.started_at < edges[i + 1], i) for i in range(len(edges) - 1)], else_=-1).label("b")
    q = (
        select(idx, func.count(), *(_count(Call.disposition == d) for d in _NAMED))
        .where(Call.direction == "in", Call.started_at >= lo, Call.started_at < hi)
        .group_by(idx)
    )
    rows = [CallRow(days[r[0]], *(int(x) for x in r[1:])) for r in session.execute(q)]
    return sorted(rows, key=lambda r: r.bucket)
