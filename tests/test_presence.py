"""Operator presence on SQLite and PostgreSQL: transitions, longest-idle order, restart recovery."""

from __future__ import annotations

import datetime as dt

import pytest
from queue_fakes import seed_operators

from config.db import transaction
from ivr import presence
from config.overrides import set_override
from ivr.presence import PresenceError
from ivr.service import on_duty

T0 = dt.datetime(2026, 12, 7, 1, 0, tzinfo=dt.UTC)  # 09:00 in Shanghai, a Monday


@pytest.fixture(autouse=True)
def _operators(sessions) -> None:  # type: ignore[no-untyped-def]
    seed_operators(sessions, range(1, 21))



def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def state(sessions, user_id: int) -> str | None:  # type: ignore[no-untyped-def]
    with sessions() as s:
        row = presence.get(s, user_id)
        return None if row is None else row.state


def test_call_cycle_available_busy_wrap_up_available(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        presence.set_state(s, 7, "available", at(0))
    with transaction(sessions) as s:
        assert [i.user_id for i in presence.available(s, at(1))] == [7]
        assert presence.claim(s, 7, at(5), call_id=11, node="n1") is True
        assert presence.claim(s, 7, at(5), call_id=12, node="n1") is False  # taken: never twice
    assert state(sessions, 7) == "busy"
    with transaction(sessions) as s:
        assert presence.available(s, at(6)) == []
        with pytest.raises(PresenceError, match="on a call"):
            presence.set_state(s, 7, "away", at(7))
    with transaction(sessions) as s:
        row = presence.call_ended(s, 7, at(100), wrap_up_seconds=30)
        assert row is not None and row.state == "wrap_up" and row.wrap_up_until == at(130) and row.call_id is None
    with transaction(sessions) as s:
        assert presence.available(s, at(129)) == []
        assert presence.logged_in_count(s) == 1  # in wrap-up is still at work
    with transaction(sessions) as s:
        assert [(i.user_id, i.idle_since) for i in presence.available(s, at(131))] == [(7, at(100))]
    with sessions() as s:
        row = presence.get(s, 7)
        assert row is not None and row.state == "available" and row.since == at(130) and row.last_call_ended_at == at(100)


def test_no_wrap_up_and_early_ready(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        presence.set_state(s, 1, "available", at(0))
        presence.set_state(s, 2, "available", at(0))
        assert presence.claim(s, 1, at(1)) and presence.claim(s, 2, at(1))
        presence.call_ended(s, 1, at(10), wrap_up_seconds=0)
        presence.call_ended(s, 2, at(10), wrap_up_seconds=600)
    assert state(sessions, 1) == "available" and state(sessions, 2) == "wrap_up"
    with transaction(sessions) as s:
        presence.set_state(s, 2, "available", at(20))  # ready before the wrap-up is over
    with sessions() as s:
        row = presence.get(s, 2)
        assert row is not None and row.state == "available" and row.wrap_up_until is None


def test_longest_idle_first(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        for uid in (1, 2, 3, 4):
            presence.set_state(s, uid, "available", at(0))
        for uid, ended in ((1, 300), (2, 100), (3, 200)):
            assert presence.claim(s, uid, at(50))
            presence.call_ended(s, uid, at(ended), wrap_up_seconds=0)
        presence.set_state(s, 5, "away", at(0))
    with transaction(sessions) as s:
        # 4 never had a call: idle since it became available (t=0), before everyone else.
        assert [i.user_id for i in presence.available(s, at(400))] == [4, 2, 3, 1]
        assert presence.logged_in_count(s) == 5
        presence.set_state(s, 5, "offline", at(401))
        assert presence.logged_in_count(s) == 4


@pytest.mark.parametrize("bad", ["busy", "wrap_up", "", "AVAILABLE", "available'; DROP TABLE x;--", None, 3])
def test_operator_cannot_choose_automatic_or_unknown_states(sessions, bad) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s, pytest.raises(PresenceError, match="cannot be chosen"):
        presence.set_state(s, 1, bad, at(0))
    assert state(sessions, 1) is None


@pytest.mark.parametrize("bad", [0, -1, "7", True, None])
def test_bad_operator_ids(sessions, bad) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s, pytest.raises(PresenceError, match="positive integer"):
        presence.set_state(s, bad, "available", at(0))


def test_unknown_operator_call_end_and_claim(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        assert presence.call_ended(s, 999, at(0), 30) is None
        assert presence.claim(s, 999, at(0)) is False
        presence.set_state(s, 3, "away", at(0))
        assert presence.claim(s, 3, at(1)) is False  # away is not available


def test_restart_releases_only_this_nodes_busy_operators(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        for uid in (1, 2, 3):
            presence.set_state(s, uid, "available", at(0))
        presence.claim(s, 1, at(10), call_id=1, node="ivr-a")
        presence.claim(s, 2, at(10), call_id=2, node="ivr-b")
        presence.claim(s, 3, at(10), call_id=3, node=None)
    # ivr-a crashed and starts again.
    with transaction(sessions) as s:
        released = presence.recover_after_restart(s, at(60), wrap_up_seconds=30, node="ivr-a")
    assert sorted(released) == [1, 3]
    assert [state(sessions, u) for u in (1, 2, 3)] == ["wrap_up", "busy", "wrap_up"]
    with transaction(sessions) as s:
        assert [i.user_id for i in presence.available(s, at(91))] == [1, 3]
        assert presence.recover_after_restart(s, at(92), 30, "ivr-a") == []  # idempotent


def test_presence_survives_a_new_engine(ctx) -> None:  # type: ignore[no-untyped-def]
    """'Survives a restart of the service': a fresh engine (a new process) reads the same state."""
    from config.context import Context

    with transaction(ctx.sessions) as s:
        presence.set_state(s, 4, "away", at(0))
    ctx.close()
    fresh = Context(ctx.settings)
    try:
        with fresh.sessions() as s:
            row = presence.get(s, 4)
            assert row is not None and row.state == "away" and row.since == at(0)
    finally:
        fresh.close()


def test_operators_on_duty_for_a_campaign_callee(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    """What key 0 of a return visit (key 1 of a callback) needs: open by calendar and override, and somebody at work."""
    monday_10 = T0 + dt.timedelta(hours=1)
    sunday_10 = monday_10 - dt.timedelta(days=1)

    def on_duty_at(now: dt.datetime) -> bool:
        with sessions() as s:
            return on_duty(s, ctx.calendar, now)

    assert not on_duty_at(monday_10), "open, but nobody logged in"
    with transaction(sessions) as s:
        presence.set_state(s, 3, "away", monday_10)
    assert on_duty_at(monday_10), "logged in (away): a callee waits for them, as an inbound caller would"
    assert not on_duty_at(sunday_10), "closed by the calendar"
    with transaction(sessions) as s:
        set_override(s, "closed", None, "supervisor", "drill", now=monday_10)
    assert not on_duty_at(monday_10 + dt.timedelta(minutes=1)), "closed by the manual override"
    with transaction(sessions) as s:
        set_override(s, "auto", None, "supervisor", None, now=monday_10 + dt.timedelta(minutes=2))
        presence.set_state(s, 3, "offline", monday_10 + dt.timedelta(minutes=2))
    assert not on_duty_at(monday_10 + dt.timedelta(minutes=3))
