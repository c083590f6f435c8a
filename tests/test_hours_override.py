"""The manual open/closed override: stored as a log, latest wins, expiry, the pure decision, the CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from config.calendar import WorkCalendar
from config.context import Context
from config.db import transaction
from config.models import HoursOverride
from config.overrides import (
    OverrideUsageError,
    current_override,
    decide_open,
    history,
    latest_override,
    os_user,
    set_override,
)
from config.settings import CalendarSettings

UTC = dt.UTC
SH = ZoneInfo("Asia/Shanghai")


def at(day: str, hhmm: str) -> dt.datetime:
    """A wall-clock instant in Shanghai."""
    return dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=SH)


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return WorkCalendar(CalendarSettings())


def row(mode: str, until: dt.datetime | None = None) -> HoursOverride:
    return HoursOverride(mode=mode, until=until, set_by="test", set_at=at("2026-01-01", "00:00"))


# -- the pure decision ------------------------------------------------------------------------


def test_decision_follows_the_schedule_without_override(cal: WorkCalendar) -> None:
    assert decide_open(cal, None, at("2026-09-29", "09:00")) == (True, "hours")  # Tuesday morning
    assert decide_open(cal, None, at("2026-09-29", "13:00")) == (False, "after_hours")  # lunch break
    assert decide_open(cal, None, at("2026-09-13", "10:00")) == (False, "weekend")  # a Sunday
    assert decide_open(cal, None, at("2026-10-01", "10:00")) == (False, "holiday")  # National Day
    assert decide_open(cal, None, at("2026-09-20", "10:00")) == (True, "hours")  # adjusted working Sunday
    assert decide_open(cal, row("auto"), at("2026-10-01", "10:00")) == (False, "holiday")
    local = WorkCalendar(CalendarSettings(closed_days={dt.date(2026, 9, 29): "staff meeting"}))
    assert decide_open(local, None, at("2026-09-29", "09:00")) == (False, "closed_day")


def test_decision_obeys_an_active_override_and_ignores_an_expired_one(cal: WorkCalendar) -> None:
    opened = row("open", until=at("2026-10-01", "18:00"))
    assert decide_open(cal, opened, at("2026-10-01", "10:00")) == (True, "manual_open")  # holiday, opened
    assert decide_open(cal, opened, at("2026-10-01", "17:59")).open is True
    assert decide_open(cal, opened, at("2026-10-01", "18:00")) == (False, "holiday")  # until is exclusive
    closed = row("closed")
    decision = decide_open(cal, closed, at("2026-09-29", "09:00"))
    assert decision.open is False and decision.why == "manual_closed"
    open_, why = decision  # unpacks as a pair
    assert (open_, why) == (False, "manual_closed")


def test_decision_needs_aware_instants(cal: WorkCalendar) -> None:
    with pytest.raises(ValueError):
        decide_open(cal, row("closed", until=at("2026-10-01", "18:00")), dt.datetime(2026, 10, 1, 10))


# -- storage, on SQLite and PostgreSQL --------------------------------------------------------


def test_set_appends_rows_and_the_latest_wins(ctx: Context) -> None:
    t0 = at("2026-09-29", "09:00")
    with transaction(ctx.sessions) as s:
        assert current_override(s, t0) is None and latest_override(s) is None
        set_override(s, "closed", None, "alice", "fire drill", now=t0)
    with transaction(ctx.sessions) as s:
        active = current_override(s, t0 + dt.timedelta(hours=1))
        assert active is not None and (active.mode, active.set_by, active.note, active.until) == ("closed", "alice", "fire drill", None)
        assert active.set_at == t0 and active.set_at.tzinfo is not None
        set_override(s, "open", at("2026-09-29", "20:00"), "bob", None, now=t0 + dt.timedelta(hours=2))
    with transaction(ctx.sessions) as s:
        active = current_override(s, at("2026-09-29", "19:00"))
        assert active is not None and (active.mode, active.set_by) == ("open", "bob")
        assert active.until == at("2026-09-29", "20:00") and active.until.tzinfo is not None
        # After bob's override ends the schedule decides, not alice's older "closed".
        assert current_override(s, at("2026-09-29", "20:00")) is None
        set_override(s, "auto", None, "carol", "drill over", now=at("2026-09-29", "19:30"))
    with transaction(ctx.sessions) as s:
        assert current_override(s, at("2026-09-29", "19:31")) is None
        assert latest_override(s).mode == "auto"  # type: ignore[union-attr]
        log = history(s)
        assert [(r.mode, r.set_by) for r in log] == [("auto", "carol"), ("open", "bob"), ("closed", "alice")]
        assert [(r.mode, r.set_by) for r in history(s, 1)] == [("auto", "carol")]
        assert s.scalar(select(func.count()).select_from(HoursOverride)) == 3


def test_set_refuses_nonsense(ctx: Context) -> None:
    now = at("2026-09-29", "09:00")
    with transaction(ctx.sessions) as s:
        with pytest.raises(OverrideUsageError, match="not in the future"):
            set_override(s, "closed", now - dt.timedelta(minutes=1), "alice", None, now=now)
        with pytest.raises(OverrideUsageError, match="not in the future"):
            set_override(s, "open", now, "alice", None, now=now)
        with pytest.raises(OverrideUsageError, match="takes no --until"):
            set_override(s, "auto", now + dt.timedelta(hours=1), "alice", None, now=now)
        with pytest.raises(OverrideUsageError, match="unknown mode"):
            set_override(s, "maybe", None, "alice", None, now=now)
        with pytest.raises(ValueError, match="naive"):
            set_override(s, "open", dt.datetime(2030, 1, 1), "alice", None, now=now)
        assert latest_override(s) is None


def test_who_defaults_to_the_os_user(ctx: Context) -> None:
    with transaction(ctx.sessions) as s:
        r = set_override(s, "closed", None, None, None)
        assert r.set_by == os_user() and r.set_by


# -- the commands -----------------------------------------------------------------------------


def _future_local(hours: int) -> dt.datetime:
    return (dt.datetime.now(SH) + dt.timedelta(hours=hours)).replace(second=0, microsecond=0)


def test_cli_set_show_and_calendar_show(hotline, env, db_url: str) -> None:  # type: ignore[no-untyped-def]
    env["HOTLINE_DATABASE__URL"] = db_url
    cal = json.loads(hotline("calendar", "show", "--json", check=True).stdout)
    assert cal["override"] is None and cal["override_unknown"] is None
    assert cal["now"]["decision"]["open"] == cal["now"]["open"]

    until = _future_local(3)
    naive = until.replace(tzinfo=None).isoformat(timespec="minutes")  # centre's wall clock
    proc = hotline("hours", "set", "closed", "--until", naive, "--note", "消防演练", check=True)
    assert f"closed until {until.isoformat(timespec='minutes').replace('T', ' ')}" in proc.stdout
    assert "消防演练" in proc.stdout and f"set by {os_user()}" in proc.stdout
    assert "now: closed (closed by manual override)" in proc.stdout

    shown = json.loads(hotline("hours", "show", "--json", check=True).stdout)
    assert (shown["open"], shown["why"]) == (False, "manual_closed")
    assert shown["override"]["mode"] == "closed" and shown["override"]["note"] == "消防演练"
    assert dt.datetime.fromisoformat(shown["override"]["until"]) == until
    assert shown["override"]["set_by"] == os_user()

    out = hotline("calendar", "show", check=True).stdout
    assert "override: CLOSED by manual override: closed until" in out and "消防演练" in out
    data = json.loads(hotline("calendar", "show", "--json", check=True).stdout)
    assert data["now"]["decision"] == {"open": False, "why": "manual_closed"}
    assert data["override"]["mode"] == "closed"

    aware = _future_local(1).astimezone(UTC)  # an explicit offset is taken as given
    hotline("hours", "set", "open", "--until", aware.isoformat(), check=True)
    hotline("hours", "set", "auto", "--note", "back to schedule", check=True)
    text = hotline("hours", "show", check=True).stdout
    assert "override: none (the schedule decides)" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("  #")]
    assert len(lines) == 3 and "auto" in lines[0] and "open until" in lines[1] and "closed until" in lines[2]
    shown = json.loads(hotline("hours", "show", "--json", "--limit", "2", check=True).stdout)
    assert [h["mode"] for h in shown["history"]] == ["auto", "open"] and shown["override"] is None
    assert dt.datetime.fromisoformat(shown["history"][1]["until"]) == aware


def test_cli_bad_usage_exits_2(hotline, env, db_url: str) -> None:  # type: ignore[no-untyped-def]
    env["HOTLINE_DATABASE__URL"] = db_url
    proc = hotline("hours", "set", "closed", "--until", "2020-01-01T10:00")
    assert proc.returncode == 2 and "in the past" in proc.stderr
    proc = hotline("hours", "set", "closed", "--until", "next tuesday")
    assert proc.returncode == 2 and "expected ISO 8601" in proc.stderr
    proc = hotline("hours", "set", "auto", "--until", _future_local(2).isoformat())
    assert proc.returncode == 2 and "takes no --until" in proc.stderr
    proc = hotline("hours", "set", "sometimes")
    assert proc.returncode == 2
    assert json.loads(hotline("hours", "show", "--json", check=True).stdout)["history"] == []


def test_calendar_show_works_without_a_database(hotline, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nowhere" / "hotline.db"
    env["HOTLINE_DATABASE__URL"] = f"sqlite:///{missing}"
    proc = hotline("calendar", "show", check=True)
    notes = [ln for ln in proc.stdout.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "manual override not checked" in notes[0] and str(missing) in notes[0]
    assert not missing.parent.exists(), "calendar show must not create a database"

    env["HOTLINE_DATABASE__URL"] = "postgresql://postgres@127.0.0.1:1/nothing"  # nothing listens on port 1
    proc = hotline("calendar", "show", "--json", check=True)
    data = json.loads(proc.stdout)
    assert data["override"] is None and "cannot reach" in data["override_unknown"]
    assert "\n" not in data["override_unknown"]
    proc = hotline("calendar", "show", check=True)
    assert sum(ln.startswith("note:") for ln in proc.stdout.splitlines()) == 1


def test_calendar_show_on_an_unmigrated_database(hotline, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "old.db"
    db.write_bytes(b"")  # exists, no schema
    env["HOTLINE_DATABASE__URL"] = f"sqlite:///{db}"
    proc = hotline("calendar", "show", check=True)
    assert "note: manual override not checked" in proc.stdout and "hotline db upgrade" in proc.stdout
    proc = hotline("hours", "show")
    assert proc.returncode == 1 and "hotline db upgrade" in proc.stderr
