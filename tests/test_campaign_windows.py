"""Calling windows on the real calendar: working days, adjusted weekends, holidays, zones, bad input."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from campaigns.errors import WindowError
from campaigns.windows import CallingWindow, parse_days, parse_spans
from config.calendar import WorkCalendar
from config.settings import CalendarSettings

SH = ZoneInfo("Asia/Shanghai")
DEFAULT = ["09:00-12:00", "14:30-20:00"]


def window(spans=DEFAULT, days="working_days", tz="Asia/Shanghai", **cal) -> CallingWindow:  # type: ignore[no-untyped-def]
    return CallingWindow.build(spans, days, tz, WorkCalendar(CalendarSettings(**cal)))


def at(text: str, tz: ZoneInfo = SH) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz)


@pytest.mark.parametrize(
    ("instant", "inside"),
    [
        ("2026-09-16 08:59:59", False),  # Wednesday, before the morning window
        ("2026-09-16 09:00:00", True),  # start included
        ("2026-09-16 11:59:59", True),
        ("2026-09-16 12:00:00", False),  # end excluded
        ("2026-09-16 14:30:00", True),
        ("2026-09-16 19:59:59", True),  # evening: after office hours (17:30) but inside the campaign's window
        ("2026-09-16 20:00:00", False),
        ("2026-09-19 10:00:00", False),  # plain Saturday
        ("2026-09-20 10:00:00", True),  # Sunday, adjusted working day (调休) for National Day
        ("2026-09-20 19:00:00", True),  # ... with the campaign's hours, not the office's adjusted hours
        ("2026-10-01 10:00:00", False),  # National Day
        ("2026-10-07 15:00:00", False),  # still the holiday
        ("2026-10-10 10:00:00", True),  # Saturday, adjusted working day
    ],
)
def test_working_day_windows(instant: str, inside: bool) -> None:
    assert window().in_window(at(instant)) is inside


def test_holiday_is_never_a_calling_day_whatever_the_rule() -> None:
    for rule in ("every_day", ["thu"]):
        w = window(days=rule)
        assert not w.in_window(at("2026-10-01 10:00:00"))
        assert w.in_window(at("2026-10-08 10:00:00"))  # Thursday after the holiday: both rules allow it
        assert w.in_window(at("2026-10-09 10:00:00")) is (rule == "every_day")  # Friday
    closed = window(days="every_day", closed_days={dt.date(2026, 9, 16): "staff meeting"})
    assert not closed.in_window(at("2026-09-16 10:00:00"))


def test_every_day_includes_weekends_weekday_list_only_those() -> None:
    assert window(days="every_day").in_window(at("2026-09-19 10:00:00"))
    sat = window(days=["sat"])
    assert sat.in_window(at("2026-09-19 10:00:00")) and not sat.in_window(at("2026-09-16 10:00:00"))


def test_next_window_start() -> None:
    w = window()
    assert w.next_window_start(at("2026-09-16 10:00:00")) == at("2026-09-16 10:00:00")  # inside: itself
    assert w.next_window_start(at("2026-09-16 12:00:00")) == at("2026-09-16 14:30:00")
    assert w.next_window_start(at("2026-09-18 20:00:00")) == at("2026-09-20 09:00:00")  # Fri night → adjusted Sunday
    assert w.next_window_start(at("2026-09-30 20:30:00")) == at("2026-10-08 09:00:00")  # over the whole holiday
    assert w.next_window_start(at("2026-09-16 10:00:00")).tzinfo == dt.UTC


def test_campaign_time_zone_is_used() -> None:
    # 09:00-12:00 in Urumqi (UTC+6) is 11:00-14:00 in Beijing.
    w = window(tz="Asia/Urumqi")
    assert not w.in_window(at("2026-09-16 10:30:00"))
    assert w.in_window(at("2026-09-16 13:30:00"))
    assert w.next_window_start(at("2026-09-16 10:30:00")) == at("2026-09-16 11:00:00")


def test_naive_instant_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        window().in_window(dt.datetime(2026, 9, 16, 10))


@pytest.mark.parametrize(
    ("spans", "message"),
    [
        (["20:00-14:30"], "ends before it starts"),
        (["09:00-09:00"], "ends before it starts"),
        (["22:00-02:00"], "cannot cross midnight"),
        (["9-12"], "is not 'HH:MM-HH:MM'"),
        (["25:00-26:00"], "does not exist"),
        (["09:00-12:00", "11:00-13:00"], "overlap"),
        ([], "non-empty list"),
        ("09:00-12:00", "non-empty list"),
        ([None], "is not 'HH:MM-HH:MM'"),
        (["09:00-12:00; DROP TABLE campaign"], "is not 'HH:MM-HH:MM'"),
    ],
)
def test_bad_windows(spans, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(WindowError, match=message):
        parse_spans(spans)


def test_window_to_midnight_and_sorting() -> None:
    spans = parse_spans(["18:00-24:00", "08:00-09:00"])
    assert spans[0] == (dt.time(8), dt.time(9)) and spans[1][1] == dt.time.max
    w = window(spans=["18:00-24:00"], days="every_day")
    assert w.in_window(at("2026-09-19 23:59:59")) and not w.in_window(at("2026-09-20 00:00:00"))


@pytest.mark.parametrize("days", ["weekdays", ["monday"], [], 5, ["mon", 1]])
def test_bad_days(days) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(WindowError):
        parse_days(days)


def test_bad_zone() -> None:
    with pytest.raises(WindowError, match="unknown time zone"):
        window(tz="Mars/Olympus")


def test_never_open_is_an_error() -> None:
    w = window(days=["sat"], hours={"sat": []}, open_days=[], closed_days={})
    # every Saturday closed as a local day would take 400 days to find out: use a list that cannot match
    w = CallingWindow(w.spans, frozenset(), w.tz, w.calendar)
    with pytest.raises(WindowError, match="no calling window"):
        w.next_window_start(at("2026-09-16 10:00:00"))
