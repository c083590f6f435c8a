"""Case deadlines in working time: computing them, their state, the board and the alert scan.

Four deadlines per case, their lengths set per handling form in ``[cases.handling_forms]``:

==========  ===================================  =========================  ===============================
deadline    clock starts                          length                     met by
==========  ===================================  =========================  ===============================
sign        receipt (``received_at``)             working minutes            dispatch / direct answer / reject / discard
contact     acceptance (``clock_started_at``)     working minutes            a recorded contact or the reply
reply       acceptance                            working days (by complexity) the reply
final       acceptance                            calendar days              closing
==========  ===================================  =========================  ===============================

Minute deadlines count opening hours only: a voicemail left at 22:00 is due ten minutes
after the centre opens, since nobody can sign it before (the centre answers calls around
the clock, but only operators sign cases). Working days follow
:meth:`WorkCalendar.add_working_days` (the day of acceptance does not count).
"Remaining" and "overdue by" are working time (``working_time_between``), so a case does
not grow later over a holiday nobody works on.

A contact deadline exists only when there is someone to contact: not for a reporter who
asked not to be called back (``no_call``) nor one without a phone number.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cases.lifecycle import OPEN, TERMINAL
from cases.models import Case, CaseEvent, DeadlineAlert
from config.calendar import CalendarError, WorkCalendar
from config.settings import HandlingForm

DEADLINES = ("sign", "contact", "reply", "final")
State = Literal["ok", "near", "overdue", "met", "met_late"]
SYSTEM_ACTOR = "system"
MAX_DAYS = 400


def add_working_minutes(calendar: WorkCalendar, start: dt.datetime, minutes: int) -> dt.datetime:
    """The instant by which ``minutes`` of opening hours have passed since ``start`` (UTC)."""
    left = dt.timedelta(minutes=minutes)
    t = start.astimezone(dt.UTC)
    day = calendar.local_date(t)
    for _ in range(MAX_DAYS):
        for lo, hi in calendar.open_intervals(day):
            lo = max(lo, t)
            if hi <= lo:
                continue
            if hi - lo >= left:
                return lo + left
            left -= hi - lo
        day += dt.timedelta(days=1)
    raise CalendarError(f"the centre does not open within {MAX_DAYS} days of {start.isoformat()}; check [calendar]")


def sign_due(calendar: WorkCalendar, received_at: dt.datetime, form: HandlingForm | None) -> dt.datetime:
    """Sign-and-route deadline; before a form is chosen the default 10 minutes apply."""
    return add_working_minutes(calendar, received_at, form.sign_minutes if form else 10)


@dataclass(frozen=True)
class ClockDeadlines:
    contact_due: dt.datetime | None
    reply_due: dt.datetime | None
    final_due: dt.datetime | None


def clock_deadlines(
    calendar: WorkCalendar, start: dt.datetime, form: HandlingForm, *, complex_case: bool, contactable: bool
) -> ClockDeadlines:
    """The deadlines that run from acceptance (or reopening)."""
    days = form.complex_reply_working_days if complex_case else form.reply_working_days
    return ClockDeadlines(
        contact_due=add_working_minutes(calendar, start, form.contact_minutes)
        if contactable and form.contact_minutes
        else None,
        reply_due=calendar.add_working_days(start, days) if days else None,
        final_due=start.astimezone(dt.UTC) + dt.timedelta(days=form.final_days) if form.final_days else None,
    )


def contactable(case: Case) -> bool:
    return not case.no_call and bool(case.complainant_phone or case.caller_number)


@dataclass(frozen=True)
class DeadlineState:
    name: str
    due: dt.datetime
    start: dt.datetime
    met_at: dt.datetime | None
    state: State
    remaining: dt.timedelta
    """Working time left until ``due`` (negative: overdue by); for a met deadline, the margin it was met with."""

    @property
    def overdue_by(self) -> dt.timedelta:
        return max(-self.remaining, dt.timedelta())

    def as_dict(self, tz: dt.tzinfo) -> dict[str, object]:
        return {
            "name": self.name,
            "due": self.due.astimezone(tz).isoformat(),
            "met_at": self.met_at.astimezone(tz).isoformat() if self.met_at else None,
            "state": self.state,
            "remaining_seconds": int(self.remaining.total_seconds()),
            "overdue_seconds": int(self.overdue_by.total_seconds()),
        }


def _parts(case: Case) -> list[tuple[str, dt.datetime | None, dt.datetime | None, dt.datetime | None]]:
    """(name, due, clock start, met at) for each deadline."""
    started = case.clock_started_at or case.accepted_at
    contact_met = min((t for t in (case.contacted_at, case.replied_at) if t is not None), default=None)
    return [
        ("sign", case.sign_due, case.received_at, case.responded_at),
        ("contact", case.contact_due, started, contact_met),
        ("reply", case.reply_due, started, case.replied_at),
        ("final", case.final_due, started, case.closed_at),
    ]


def deadline_state(
    case: Case, now: dt.datetime, calendar: WorkCalendar, *, near_fraction: float = 0.2
) -> list[DeadlineState]:
    """Each deadline the case has: due, met or not, remaining / overdue by (working time), state.

    Near: less than ``near_fraction`` of the allotted working time is left. A deadline not
    met when the case ended (rejected, discarded, merged) no longer applies and is left out.
    """
    out: list[DeadlineState] = []
    for name, due, start, met in _parts(case):
        if due is None or start is None:
            continue
        if met is None and case.status in TERMINAL:
            continue
        if met is not None:
            margin = calendar.working_time_between(met, due)
            out.append(DeadlineState(name, due, start, met, "met" if met <= due else "met_late", margin))
            continue
        remaining = calendar.working_time_between(now, due)
        if now >= due:
            state: State = "overdue"
        else:
            allotted = calendar.working_time_between(start, due)
            state = "near" if remaining <= allotted * near_fraction else "ok"
        out.append(DeadlineState(name, due, start, None, state, remaining))
    return out


def _open_with_deadlines(session: Session, unit: str | None = None) -> list[Case]:
    q = select(Case).where(
        Case.status.in_(OPEN),
        or_(Case.sign_due.is_not(None), Case.contact_due.is_not(None), Case.reply_due.is_not(None),
            Case.final_due.is_not(None)),
    )
    if unit is not None:
        q = q.where(Case.unit == unit)
    return list(session.scalars(q.order_by(Case.id)))


@dataclass(frozen=True)
class BoardRow:
    case: Case
    deadlines: list[DeadlineState]
    """The near and overdue ones."""

    @property
    def worst(self) -> dt.timedelta:
        return min(d.remaining for d in self.deadlines)


def overdue_board(
    session: Session,
    calendar: WorkCalendar,
    now: dt.datetime,
    *,
    near_fraction: float = 0.2,
    include_near: bool = True,
    unit: str | None = None,
) -> list[BoardRow]:
    """The supervisor's board: open cases with an overdue (or near) deadline.

    Key-supervision cases first, then the latest (most overdue) first.
    """
    wanted = {"overdue", "near"} if include_near else {"overdue"}
    rows = []
    for case in _open_with_deadlines(session, unit):
        hits = [d for d in deadline_state(case, now, calendar, near_fraction=near_fraction) if d.state in wanted]
        if hits:
            rows.append(BoardRow(case, hits))
    rows.sort(key=lambda r: (not r.case.key_supervision, r.worst, r.case.id))
    return rows


def _insert_alert(session: Session, case_id: int, deadline: str, level: str, due: dt.datetime, now: dt.datetime) -> bool:
    """Record the alert unless it exists; True when this call recorded it (race-free on both databases)."""
    dialect = session.get_bind().dialect.name
    ins = postgresql.insert(DeadlineAlert) if dialect == "postgresql" else sqlite.insert(DeadlineAlert)
    stmt = (
        ins.values(case_id=case_id, deadline=deadline, level=level, due=due, at=now)
        .on_conflict_do_nothing(index_elements=["case_id", "deadline", "level", "due"])
        .returning(DeadlineAlert.id)
    )
    return session.execute(stmt).scalar_one_or_none() is not None


def scan_deadlines(
    session: Session, calendar: WorkCalendar, now: dt.datetime, *, near_fraction: float = 0.2
) -> list[CaseEvent]:
    """Write one "deadline_near" and one "overdue" event per case and deadline (and due time).

    Idempotent and safe to run every minute, from several nodes at once: the alert row's
    unique key decides who writes the event. An overdue deadline that was never seen near
    gets only the overdue event. The case row itself is not touched (no version bump).
    """
    written: list[CaseEvent] = []
    for case in _open_with_deadlines(session):
        for d in deadline_state(case, now, calendar, near_fraction=near_fraction):
            if d.state not in ("near", "overdue"):
                continue
            action = "deadline_near" if d.state == "near" else "overdue"
            if not _insert_alert(session, case.id, d.name, d.state, d.due, now):
                continue
            local = d.due.astimezone(calendar.tz).strftime("%Y-%m-%d %H:%M")
            ev = CaseEvent(
                case_id=case.id,
                at=now,
                actor=SYSTEM_ACTOR,
                action=action,
                from_status=case.status,
                to_status=case.status,
                note=f"{d.name} deadline {'near' if d.state == 'near' else 'passed'}: due {local}",
                data={"deadline": d.name, "due": d.due.isoformat(), "remaining_seconds": int(d.remaining.total_seconds())},
            )
            session.add(ev)
            written.append(ev)
    session.flush()
    return written
