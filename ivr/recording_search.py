"""Search recordings with their call and case, for supervisors auditing calls.

Lives in ``ivr`` because it joins three packages' tables (recording, call, case) and
DESIGN.md lets only ``ivr`` (of the domain packages) import both ``recordings`` and
``cases``; ``recordings`` itself may import nothing but ``config``.

One hit per recording, newest first, keyset-paginated by recording id (stable while new
calls arrive, unlike offsets). A recording's call is the one it names (``Recording.call_id``)
or else the call that names it (``Call.recording_id``); its case is the first case made
from it (``Case.source_recording_id``; a merge may leave several), while filtering by case
number matches any of them.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from cases.models import Case
from ivr.models import Call
from recordings.models import Recording

__all__ = ["RecordingHit", "RecordingQuery", "day_bounds", "search_recordings"]


@dataclass(frozen=True)
class RecordingQuery:
    """Filters; None means "any". Dates are local dates in the centre's zone, both inclusive."""

    date_from: dt.date | None = None
    date_to: dt.date | None = None
    caller: str | None = None
    """Digits (a leading + is ignored); matches anywhere in the recording's or the call's caller."""
    disposition: str | None = None
    case_number: str | None = None
    kind: str | None = None
    recording_id: int | None = None
    include_deleted: bool = False


@dataclass(frozen=True)
class RecordingHit:
    recording: Recording
    call: Call | None
    case: Case | None


def day_bounds(day: dt.date, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC of one local calendar day (23 or 25 hours long across DST shifts)."""
    start = dt.datetime.combine(day, dt.time.min, tzinfo=tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min, tzinfo=tz)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def _digits(caller: str) -> str:
    digits = caller.removeprefix("+")
    if not re.fullmatch(r"[0-9]{1,20}", digits):
        raise ValueError(f"caller {caller!r} must be digits (an optional leading +)")
    return digits


def _query(q: RecordingQuery, tz: ZoneInfo) -> Select[tuple[Recording, Call, Case]]:
    call_naming_it = select(func.min(Call.id)).where(Call.recording_id == Recording.id).scalar_subquery()
    first_case = select(func.min(Case.id)).where(Case.source_recording_id == Recording.id).scalar_subquery()
    call, case = aliased(Call), aliased(Case)
    stmt = (
        select(Recording, call, case)
        .select_from(Recording)
        .outerjoin(call, call.id == func.coalesce(Recording.call_id, call_naming_it))
        .outerjoin(case, case.id == first_case)
    )
    if not q.include_deleted:
        stmt = stmt.where(Recording.deleted_at.is_(None))
    if q.date_from is not None:
        stmt = stmt.where(Recording.received_at >= day_bounds(q.date_from, tz)[0])
    if q.date_to is not None:
        stmt = stmt.where(Recording.received_at < day_bounds(q.date_to, tz)[1])
    if q.caller is not None:
        pattern = f"%{_digits(q.caller)}%"
        stmt = stmt.where(or_(Recording.caller.like(pattern), call.caller.like(pattern)))
    if q.disposition is not None:
        stmt = stmt.where(call.disposition == q.disposition)
    if q.case_number is not None:
        stmt = stmt.where(
            Recording.id.in_(
                select(Case.source_recording_id).where(
                    and_(Case.number == q.case_number, Case.source_recording_id.is_not(None))
                )
            )
        )
    if q.kind is not None:
        stmt = stmt.where(Recording.kind == q.kind)
    if q.recording_id is not None:
        stmt = stmt.where(Recording.id == q.recording_id)
    return stmt


def search_recordings(
    session: Session, q: RecordingQuery, tz: ZoneInfo, *, before_id: int | None = None, limit: int = 50
) -> tuple[list[RecordingHit], int | None]:
    """One page of hits, newest first, and the cursor (a recording id) for the next page or None.

    Raises ValueError for a caller that is not a phone number.
    """
    stmt = _query(q, tz).order_by(Recording.id.desc()).limit(limit + 1)
    if before_id is not None:
        stmt = stmt.where(Recording.id < before_id)
    rows = session.execute(stmt).all()
    hits = [RecordingHit(r, c, k) for r, c, k in rows[:limit]]
    next_cursor = hits[-1].recording.id if len(rows) > limit else None
    return hits, next_cursor
