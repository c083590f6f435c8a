"""Case statistics by day / week / month and by channel, category or unit.

Buckets are days of the centre's zone (``[calendar] timezone``). SQLite has no time-zone
database, so instead of asking the database to convert, the bucket boundaries (local
midnights, as UTC instants) are computed here with zoneinfo and handed to one SQL
``CASE received_at < b1 THEN 0 WHEN received_at < b2 THEN 1 …`` expression: the same
statement runs on SQLite and PostgreSQL, is right across offset changes, and the database
still does the counting (one GROUP BY, no rows fetched). Weeks start on Monday.

Definitions (numerators and denominators are returned too, so pages can show "12 / 15"):

- ``received``: cases received in the bucket, except discarded ones (empty/test calls);
- ``response_rate``: signed and routed within the sign deadline / received;
- ``completion_rate``: closed / accepted;
- ``on_time_rate``: replied by the reply deadline (or with none) / replied;
- ``satisfaction_rate``: satisfied + basically satisfied / rated at the return visit;
- ``repeat_rate``: merged into another case / received.

Rates are ``None`` when the denominator is 0. Call figures come from the IVR later.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from cases.lifecycle import CLOSED, DISCARDED, MERGED
from cases.models import Case
from config.calendar import WorkCalendar

Bucket = Literal["day", "week", "month"]
By = Literal["channel", "category", "unit"]
_BY = {"channel": Case.channel, "category": Case.category, "unit": Case.unit}
MAX_BUCKETS = 1000


@dataclass(frozen=True)
class StatRow:
    bucket: dt.date
    """First local day of the bucket."""
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

    @staticmethod
    def _rate(n: int, d: int) -> float | None:
        return round(n / d, 4) if d else None

    @property
    def response_rate(self) -> float | None:
        return self._rate(self.responded_in_time, self.received)

    @property
    def completion_rate(self) -> float | None:
        return self._rate(self.closed, self.accepted)

    @property
    def on_time_rate(self) -> float | None:
        return self._rate(self.replied_on_time, self.replied)

    @property
    def satisfaction_rate(self) -> float | None:
        return self._rate(self.satisfied, self.rated)

    @property
    def repeat_rate(self) -> float | None:
        return self._rate(self.repeats, self.received)

    def as_dict(self) -> dict[str, object]:
        names = ("received", "responded_in_time", "accepted", "closed", "replied", "replied_on_time", "rated",
                 "satisfied", "repeats", "response_rate", "completion_rate", "on_time_rate", "satisfaction_rate",
                 "repeat_rate")
        return {"bucket": self.bucket.isoformat(), "group": self.group, **{n: getattr(self, n) for n in names}}


def bucket_starts(start: dt.date, end: dt.date, bucket: Bucket) -> list[dt.date]:
    """Local first days of the buckets covering [start, end), plus ``end`` as the last boundary."""
    if end <= start:
        raise ValueError(f"end {end} must be after start {start}")
    if bucket == "day":
        first = start
        step = lambda d: d + dt.timedelta(days=1)  # noqa: E731
    elif bucket == "week":
        first = start - dt.timedelta(days=start.weekday())
        step = lambda d: d + dt.timedelta(days=7)  # noqa: E731
    elif bucket == "month":
        first = start.replace(day=1)
        step = lambda d: (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)  # noqa: E731
    else:
        raise ValueError(f"bucket must be day, week or month, not {bucket!r}")
    out = [first]
    while out[-1] < end:
        out.append(step(out[-1]))
        if len(out) > MAX_BUCKETS:
            raise ValueError(f"more than {MAX_BUCKETS} {bucket} buckets; use a larger bucket")
    return out


def _count(cond):  # type: ignore[no-untyped-def]
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def case_stats(
    session: Session,
    calendar: WorkCalendar,
    start: dt.date,
    end: dt.date,
    bucket: Bucket = "day",
    by: By | None = None,
) -> list[StatRow]:
    """Figures for cases received on local days [start, end), one row per bucket (and group) with cases."""
    if by is not None and by not in _BY:
        raise ValueError(f"by must be channel, category, unit or None, not {by!r}")
    days = bucket_starts(start, end, bucket)
    edges = [dt.datetime.combine(d, dt.time(), calendar.tz).astimezone(dt.UTC) for d in days]
    lo = dt.datetime.combine(start, dt.time(), calendar.tz).astimezone(dt.UTC)
    hi = dt.datetime.combine(end, dt.time(), calendar.tz).astimezone(dt.UTC)
    idx = case(*[(Case.received_at < edges[i + 1], i) for i in range(len(edges) - 1)], else_=-1).label("b")
    group = _BY[by].label("g") if by else None
    live = Case.status != DISCARDED
    q = (
        select(
            idx,
            *( [group] if group is not None else [] ),
            _count(live),
            _count(and_(live, Case.responded_at.is_not(None), Case.responded_at <= Case.sign_due)),
            _count(Case.accepted_at.is_not(None)),
            _count(Case.status == CLOSED),
            _count(Case.replied_at.is_not(None)),
            _count(and_(Case.replied_at.is_not(None), or_(Case.reply_due.is_(None), Case.replied_at <= Case.reply_due))),
            _count(Case.satisfaction.is_not(None)),
            _count(Case.satisfaction.in_(("satisfied", "basically_satisfied"))),
            _count(Case.status == MERGED),
        )
        .where(Case.received_at >= lo, Case.received_at < hi)
        .group_by(idx, *([group] if group is not None else []))
    )
    rows = []
    for r in session.execute(q):
        r = tuple(r)
        b, rest = r[0], r[1:]
        g = None
        if group is not None:
            g, rest = rest[0], rest[1:]
        rows.append(StatRow(days[b], g, *(int(x) for x in rest)))
    rows.sort(key=lambda s: (s.bucket, s.group is None, s.group or ""))
    return rows
