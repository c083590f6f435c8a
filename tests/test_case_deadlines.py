"""Deadlines in working time, their state, the overdue board and the idempotent scan."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from cases import actions as A
from cases.deadlines import add_working_minutes, deadline_state, overdue_board, scan_deadlines
from cases.models import Case, CaseEvent, DeadlineAlert
from config.calendar import WorkCalendar
from config.db import transaction
from config.settings import CalendarSettings

SH = ZoneInfo("Asia/Shanghai")
CAL = WorkCalendar(CalendarSettings())


def at(*a: int) -> dt.datetime:
    return dt.datetime(*a, tzinfo=SH)


def test_working_minutes_skip_lunch_nights_and_holidays() -> None:
    assert add_working_minutes(CAL, at(2026, 11, 23, 9, 0), 10) == at(2026, 11, 23, 9, 10)
    assert add_working_minutes(CAL, at(2026, 11, 23, 11, 55), 10) == at(2026, 11, 23, 14, 35)  # lunch 12:00-14:30
    assert add_working_minutes(CAL, at(2026, 11, 23, 22, 0), 30) == at(2026, 11, 24, 9, 0)
    # Wednesday 2026-09-30 17:25: 5 minutes left that day, then National Day (1-7 Oct)
    assert add_working_minutes(CAL, at(2026, 9, 30, 17, 25), 10) == at(2026, 10, 8, 8, 35)


def _accepted(sessions, ctx, received: dt.datetime, accepted: dt.datetime, **kw) -> int:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        c = A.create_case(s, ctx=ctx, actor="op1", channel="voicemail", content="出入境窗口办证拖延",
                          received_at=received, caller_number="13800138000")
        A.accept(s, c, ctx=ctx, actor="op1", expected_version=1, category="exit_entry", handling_form="general",
                 now=accepted, **kw)
        return c.id


def test_accept_before_national_day(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _accepted(sessions, ctx, at(2026, 9, 30, 17, 25), at(2026, 9, 30, 17, 28))
    with sessions() as s:
        c = s.get(Case, cid)
        assert c.sign_due == at(2026, 10, 8, 8, 35)
        assert c.contact_due == at(2026, 10, 8, 8, 58)  # 2 minutes before closing, 28 after opening
        # working days: 8, 9, 10 (adjusted Saturday), 12, 13 October
        assert c.reply_due == at(2026, 10, 13, 17, 28)
        assert c.final_due == at(2026, 10, 30, 17, 28)
        states = {d.name: d for d in deadline_state(c, at(2026, 10, 5, 12, 0), CAL)}
        # during the holiday nothing is consumed: the contact still has 28 working minutes left
        assert states["contact"].state == "ok" and states["contact"].remaining == dt.timedelta(minutes=28)
        states = {d.name: d for d in deadline_state(c, at(2026, 10, 8, 8, 55), CAL)}
        assert states["contact"].state == "near" and states["sign"].state == "overdue"
        assert states["sign"].overdue_by == dt.timedelta(minutes=20)
        assert states["reply"].state == "ok"


def test_met_deadlines_and_late_ones(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _accepted(sessions, ctx, at(2026, 11, 23, 9, 0), at(2026, 11, 23, 9, 5))
    with transaction(sessions) as s:
        c = s.get(Case, cid)
        A.dispatch(s, c, ctx=ctx, actor="op1", expected_version=c.version, unit="exit_entry", now=at(2026, 11, 23, 9, 30))
        A.contact(s, c, ctx=ctx, actor="op1", expected_version=c.version, now=at(2026, 11, 23, 9, 20))
    with sessions() as s:
        states = {d.name: d for d in deadline_state(s.get(Case, cid), at(2026, 11, 23, 10, 0), CAL)}
    assert states["sign"].state == "met_late" and states["sign"].remaining == -dt.timedelta(minutes=20)
    assert states["contact"].state == "met" and states["contact"].met_at == at(2026, 11, 23, 9, 20)
    assert states["reply"].state == "ok"


def test_terminal_case_drops_unmet_deadlines(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _accepted(sessions, ctx, at(2026, 11, 23, 9, 0), at(2026, 11, 23, 9, 5))
    with transaction(sessions) as s:
        c = s.get(Case, cid)
        A.reject(s, c, ctx=ctx, actor="op1", expected_version=c.version, reason="不属于受理范围", now=at(2026, 11, 23, 9, 8))
    with sessions() as s:
        assert [(d.name, d.state) for d in deadline_state(s.get(Case, cid), at(2027, 1, 1, 9, 0), CAL)] == [("sign", "met")]


def test_scan_is_idempotent_and_the_board_shows_overdue(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    late = _accepted(sessions, ctx, at(2026, 11, 23, 9, 0), at(2026, 11, 23, 9, 5))
    fresh = _accepted(sessions, ctx, at(2026, 11, 24, 9, 0), at(2026, 11, 24, 9, 1))
    with transaction(sessions) as s:
        c = s.get(Case, fresh)
        A.mark_key_supervision(s, c, ctx=ctx, actor="sup1", expected_version=c.version, now=at(2026, 11, 24, 9, 2))
    now = at(2026, 11, 24, 9, 8, 30)
    with transaction(sessions) as s:
        first = scan_deadlines(s, CAL, now)
        got = sorted((e.case_id, e.action, e.data["deadline"]) for e in first)
    assert got == [(late, "overdue", "contact"), (late, "overdue", "sign"), (fresh, "deadline_near", "sign")]
    v = {}
    with sessions() as s:
        v = {cid: s.get(Case, cid).version for cid in (late, fresh)}
    for _ in range(3):
        with transaction(sessions) as s:
            assert scan_deadlines(s, CAL, now + dt.timedelta(seconds=30)) == []
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(DeadlineAlert)) == 3
        assert s.scalar(select(func.count()).select_from(CaseEvent).where(CaseEvent.actor == "system")) == 3
        assert {cid: s.get(Case, cid).version for cid in (late, fresh)} == v  # the scan never bumps versions
        board = overdue_board(s, CAL, now)
        assert [r.case.id for r in board] == [fresh, late]  # key supervision first
        assert {d.name for d in board[1].deadlines} == {"sign", "contact"}
        assert [r.case.id for r in overdue_board(s, CAL, now, include_near=False)] == [late]
        assert overdue_board(s, CAL, now, unit="nobody") == []
    # the sign deadline of the fresh case passes: one more event, then quiet again
    with transaction(sessions) as s:
        assert [(e.case_id, e.action) for e in scan_deadlines(s, CAL, at(2026, 11, 24, 9, 11))] == [(fresh, "overdue")]
    with transaction(sessions) as s:
        assert scan_deadlines(s, CAL, at(2026, 11, 24, 9, 12)) == []


def test_accept_needs_content(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(A.CaseValidationError) as e, transaction(sessions) as s:
        c = A.create_case(s, ctx=ctx, actor="op1", channel="voicemail", content="", received_at=at(2026, 11, 23, 9, 0))
        A.accept(s, c, ctx=ctx, actor="op1", expected_version=1, category="traffic", handling_form="general")
    assert list(e.value.details) == ["content"]
