"""The working-time calendar on real dates (2026 National Day and its 调休 weekends)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from zoneinfo import ZoneInfo

import pytest

from config.calendar import CalendarError, WorkCalendar
from config.settings import CalendarSettings, ConfigError, YearSchedule

SH = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.timezone.utc
D = dt.date


def at(day: str, hhmm: str, tz: ZoneInfo = SH) -> dt.datetime:
    return dt.datetime.combine(D.fromisoformat(day), dt.time.fromisoformat(hhmm), tz)


def hours(h: float) -> dt.timedelta:
    return dt.timedelta(hours=h)


@pytest.fixture
def cal() -> WorkCalendar:
    return WorkCalendar(CalendarSettings())


OFFICE = ((dt.time(8, 30), dt.time(12)), (dt.time(14, 30), dt.time(17, 30)))


# -- days --------------------------------------------------------------------------------


def test_national_day_is_a_named_holiday(cal: WorkCalendar) -> None:
    info = cal.day_info(D(2026, 10, 1))
    assert (info.is_open, info.reason, info.source) == (False, "holiday", "library")
    assert (info.holiday, info.holiday_cn) == ("National Day", "国庆节")
    assert info.spans == ()
    assert not cal.is_open(at("2026-10-01", "10:00"))


@pytest.mark.parametrize("day", ["2026-09-20", "2026-10-10"])  # a Sunday and a Saturday
def test_adjusted_working_weekends_are_open(cal: WorkCalendar, day: str) -> None:
    info = cal.day_info(D.fromisoformat(day))
    assert info.date.weekday() >= 5
    assert (info.is_open, info.reason, info.holiday) == (True, "adjusted_workday", "National Day")
    assert info.spans == OFFICE
    assert "调休" in info.describe()
    assert cal.is_open(at(day, "09:00"))


def test_ordinary_weekday_hours(cal: WorkCalendar) -> None:
    info = cal.day_info(D(2026, 10, 13))  # Tuesday
    assert (info.is_open, info.reason, info.spans) == (True, "weekday", OFFICE)
    assert cal.open_spans(D(2026, 10, 13)) == OFFICE
    for hhmm, expected in [
        ("08:29:59", False), ("08:30", True), ("11:59:59", True), ("12:00", False),
        ("12:30", False), ("14:30", True), ("17:29", True), ("17:30", False), ("23:00", False),
    ]:
        assert cal.is_open(at("2026-10-13", hhmm)) is expected, hhmm


def test_is_open_uses_the_centre_zone_whatever_the_instant_zone(cal: WorkCalendar) -> None:
    # 01:00 UTC is 09:00 in Shanghai (open); 09:00 UTC is 17:00 there (open), 10:00 UTC is 18:00 (closed).
    assert cal.is_open(dt.datetime(2026, 10, 13, 1, 0, tzinfo=UTC))
    assert cal.is_open(dt.datetime(2026, 10, 13, 9, 0, tzinfo=UTC))
    assert not cal.is_open(dt.datetime(2026, 10, 13, 10, 0, tzinfo=UTC))


def test_plain_saturday_is_closed(cal: WorkCalendar) -> None:
    info = cal.day_info(D(2026, 10, 17))
    assert (info.is_open, info.reason, info.holiday) == (False, "weekend", None)
    assert not cal.is_open(at("2026-10-17", "10:00"))


def test_naive_datetimes_are_refused(cal: WorkCalendar) -> None:
    with pytest.raises(ValueError, match="naive"):
        cal.is_open(dt.datetime(2026, 10, 13, 10, 0))


# -- next opening, deadlines, working time -------------------------------------------------


def test_next_opening(cal: WorkCalendar) -> None:
    # Evening before National Day: the week off, then Thursday 8 October.
    nxt = cal.next_opening(at("2026-09-30", "18:00"))
    assert nxt == at("2026-10-08", "08:30") and nxt.tzinfo is UTC
    assert cal.next_opening(at("2026-10-13", "12:30")) == at("2026-10-13", "14:30")
    assert cal.next_opening(at("2026-10-13", "10:15")) == at("2026-10-13", "10:15")  # already open
    # Friday evening before the 调休 Saturday 10 October.
    assert cal.next_opening(at("2026-10-09", "17:30")) == at("2026-10-10", "08:30")


def test_next_opening_fails_clearly_when_never_open() -> None:
    closed = {d: [] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    never = WorkCalendar(CalendarSettings(hours=closed, adjusted_workday_hours=[]))
    with pytest.raises(CalendarError, match="does not open within 400 days"):
        never.next_opening(at("2026-10-13", "10:00"))
    with pytest.raises(CalendarError, match="no working day"):
        never.add_working_days(at("2026-10-13", "10:00"), 1)


def test_add_working_days_across_national_day(cal: WorkCalendar) -> None:
    received = at("2026-09-30", "10:00")
    assert cal.add_working_days(received, 1) == at("2026-10-08", "10:00")
    # 8 Thu, 9 Fri, 10 Sat (调休) are working days; 11 Sun is not.
    assert cal.add_working_days(received, 3) == at("2026-10-10", "10:00")
    assert cal.add_working_days(received, 4) == at("2026-10-12", "10:00")
    assert cal.add_working_days(received, 0) == received


def test_add_working_days_across_adjusted_weekend(cal: WorkCalendar) -> None:
    # Friday 18 Sep: Saturday 19 is a rest day, Sunday 20 is worked (调休).
    assert cal.add_working_days(at("2026-09-18", "16:00"), 1) == at("2026-09-20", "16:00")
    # An ordinary weekend is skipped.
    assert cal.add_working_days(at("2026-10-16", "16:00"), 1) == at("2026-10-19", "16:00")
    # Received on a closed day, after hours: the day of receipt never counts; the time is kept.
    assert cal.add_working_days(at("2026-10-17", "23:00"), 1) == at("2026-10-19", "23:00")
    with pytest.raises(ValueError):
        cal.add_working_days(at("2026-10-16", "16:00"), -1)


def test_working_time_between(cal: WorkCalendar) -> None:
    assert cal.working_time_between(at("2026-10-13", "08:00"), at("2026-10-13", "18:00")) == hours(6.5)
    assert cal.working_time_between(at("2026-10-13", "11:00"), at("2026-10-13", "15:00")) == hours(1.5)
    assert cal.working_time_between(at("2026-10-13", "12:00"), at("2026-10-13", "14:30")) == hours(0)
    # Across National Day: 16:30-17:30 on the 30th, then 08:30-09:30 on the 8th.
    a, b = at("2026-09-30", "16:30"), at("2026-10-08", "09:30")
    assert cal.working_time_between(a, b) == hours(2)
    assert cal.working_time_between(b, a) == -hours(2)
    # A whole ordinary week: five days of 6.5 h.
    assert cal.working_time_between(at("2026-10-12", "00:00"), at("2026-10-19", "00:00")) == hours(5 * 6.5)


# -- local overrides -----------------------------------------------------------------------


def test_local_overrides_win_over_everything() -> None:
    cal = WorkCalendar(CalendarSettings(
        closed_days={D(2026, 10, 13): "staff training", D(2026, 10, 10): "building works"},
        open_days=[D(2026, 10, 1), D(2026, 10, 3)],
    ))
    closed = cal.day_info(D(2026, 10, 13))
    assert (closed.is_open, closed.reason, closed.note) == (False, "override_closed", "staff training")
    assert "staff training" in closed.describe()
    assert not cal.day_info(D(2026, 10, 10)).is_open  # a 调休 Saturday closed locally
    holiday_thursday = cal.day_info(D(2026, 10, 1))
    assert (holiday_thursday.is_open, holiday_thursday.reason) == (True, "override_open")
    assert cal.day_info(D(2026, 10, 3)).spans == OFFICE  # a Saturday gets the adjusted-day hours
    assert cal.next_opening(at("2026-09-30", "18:00")) == at("2026-10-01", "08:30")
    # Deadlines follow: from Monday 12th, one working day is Wednesday 14th (13th closed).
    assert cal.add_working_days(at("2026-10-12", "09:00"), 1) == at("2026-10-14", "09:00")


def test_override_open_keeps_that_weekdays_own_hours() -> None:
    cal = WorkCalendar(CalendarSettings(hours={"thu": ["09:00-11:00"], "tue": []}, open_days=[D(2026, 10, 1)]))
    assert cal.open_spans(D(2026, 10, 1)) == ((dt.time(9), dt.time(11)),)
    tuesday = cal.day_info(D(2026, 10, 13))
    assert (tuesday.is_open, tuesday.reason, tuesday.describe()) == (False, "weekend", "no regular hours on Tuesday")


def test_one_weekday_given_keeps_the_others() -> None:
    """Adding Saturday hours must not silently close Monday to Friday."""
    cal = WorkCalendar(CalendarSettings(hours={"sat": ["09:00-12:00"]}))
    assert cal.open_spans(D(2026, 11, 28)) == ((dt.time(9), dt.time(12)),)  # Saturday
    assert cal.open_spans(D(2026, 11, 30)) == ((dt.time(8, 30), dt.time(12)), (dt.time(14, 30), dt.time(17, 30)))


def test_contradicting_overrides_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="closed_days and open_days both list 2026-10-13"):
        WorkCalendar(CalendarSettings(closed_days={D(2026, 10, 13): "x"}, open_days=[D(2026, 10, 13)]))


# -- years the package does not know ---------------------------------------------------------


def _year_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "config.calendar" and r.levelno == logging.WARNING]


def test_unknown_year_falls_back_to_weekday_rule_and_warns_once(
    cal: WorkCalendar, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="config.calendar")
    cal.day_info(D(2026, 10, 1))
    assert _year_warnings(caplog) == []
    info = cal.day_info(D(2027, 10, 1))  # surely National Day, but nobody has told us yet
    assert (info.is_open, info.reason, info.source) == (True, "weekday", "fallback")
    assert "weekday rule" in info.describe()
    assert not cal.day_info(D(2027, 10, 2)).is_open  # Saturday
    cal.is_open(at("2027-10-04", "10:00"))
    assert cal.working_time_between(at("2027-10-04", "00:00"), at("2027-10-11", "00:00")) == hours(5 * 6.5)
    warnings = _year_warnings(caplog)
    assert len(warnings) == 1 and "2027" in warnings[0] and 'calendar.years."2027"' in warnings[0]
    cal.day_info(D(2028, 1, 3))
    assert len(_year_warnings(caplog)) == 2


def test_configured_year_schedule_is_honoured(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="config.calendar")
    schedule = YearSchedule(
        holidays={D(2027, 10, 1): "国庆节", D(2027, 10, 4): "National Day"},
        workdays=[D(2027, 9, 26)],  # a Sunday
    )
    cal = WorkCalendar(CalendarSettings(years={"2027": schedule}))
    national = cal.day_info(D(2027, 10, 1))
    assert (national.is_open, national.reason, national.source) == (False, "holiday", "config")
    assert (national.holiday, national.holiday_cn) == ("National Day", "国庆节")
    assert not cal.day_info(D(2027, 10, 4)).is_open  # a Monday
    sunday = cal.day_info(D(2027, 9, 26))
    assert (sunday.is_open, sunday.reason, sunday.spans) == (True, "adjusted_workday", OFFICE)
    plain = cal.day_info(D(2027, 10, 5))
    assert (plain.is_open, plain.reason, plain.source) == (True, "weekday", "config")
    assert cal.next_opening(at("2027-09-30", "18:00")) == at("2027-10-05", "08:30")
    assert _year_warnings(caplog) == []


@pytest.mark.parametrize(
    ("key", "schedule", "message"),
    [
        ("27", YearSchedule(), "must be a year"),
        ("2027", YearSchedule(holidays={D(2028, 1, 1): "New Year's Day"}), "2028-01-01 is not in 2027"),
        ("2027", YearSchedule(holidays={D(2027, 10, 1): "x"}, workdays=[D(2027, 10, 1)]), "both holiday and workday"),
    ],
)
def test_bad_year_schedules_are_config_errors(key: str, schedule: YearSchedule, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WorkCalendar(CalendarSettings(years={key: schedule}))


# -- another time zone ----------------------------------------------------------------------


def test_berlin_zone_with_daylight_saving() -> None:
    cal = WorkCalendar(CalendarSettings(timezone="Europe/Berlin", hours={
        "mon": ["08:30-12:00", "14:30-17:30"], "fri": ["08:30-12:00", "14:30-17:30"], "sun": ["01:00-04:00"],
        "tue": [], "wed": [], "thu": [],
    }))
    # 08:30 in Berlin is 06:30 UTC in summer time and 07:30 UTC after it ends (25 Oct 2026).
    assert cal.is_open(dt.datetime(2026, 10, 23, 6, 30, tzinfo=UTC))
    assert not cal.is_open(dt.datetime(2026, 10, 26, 6, 30, tzinfo=UTC))
    assert cal.is_open(dt.datetime(2026, 10, 26, 7, 30, tzinfo=UTC))
    assert cal.next_opening(at("2026-10-13", "09:00", SH)) == at("2026-10-16", "08:30", BERLIN)  # Tue 03:00 Berlin
    # Same wall-clock time on the next working day, across the change.
    deadline = cal.add_working_days(at("2026-10-23", "10:00", BERLIN), 1)
    assert deadline == at("2026-10-25", "10:00", BERLIN) == dt.datetime(2026, 10, 25, 9, 0, tzinfo=UTC)
    # The Sunday span 01:00-04:00 holds the repeated hour: four real hours of work.
    assert cal.working_time_between(at("2026-10-25", "00:00", BERLIN), at("2026-10-25", "23:00", BERLIN)) == hours(4)


# -- the command ----------------------------------------------------------------------------


def test_cli_show_text(hotline) -> None:  # type: ignore[no-untyped-def]
    out = hotline("calendar", "show", "--date", "2026-10-01", check=True).stdout
    assert "2026-10-01 (Thursday, Asia/Shanghai): closed" in out
    assert "National Day (国庆节)" in out
    assert "hours: none" in out
    assert "now (" in out
    out = hotline("calendar", "show", "--date", "2026-09-20", check=True).stdout
    assert ": open" in out and "调休" in out and "08:30-12:00, 14:30-17:30" in out


def test_cli_show_json(hotline) -> None:  # type: ignore[no-untyped-def]
    before = dt.datetime.now(UTC)
    data = json.loads(hotline("calendar", "show", "--date", "2026-10-10", "--json", check=True).stdout)
    assert data["date"] == "2026-10-10" and data["weekday"] == "Saturday"
    assert (data["open"], data["reason"], data["holiday"], data["holiday_cn"]) == (True, "adjusted_workday", "National Day", "国庆节")
    assert data["hours"] == ["08:30-12:00", "14:30-17:30"]
    assert data["timezone"] == "Asia/Shanghai"
    now = data["now"]
    assert isinstance(now["open"], bool)
    if now["open"]:
        assert now["open_until"] and now["next_opening"] is None
    else:
        assert now["open_until"] is None
        assert dt.datetime.fromisoformat(now["next_opening"]) > before


def test_cli_show_defaults_to_today_in_the_centre_zone(hotline) -> None:  # type: ignore[no-untyped-def]
    before = dt.datetime.now(SH).date().isoformat()
    data = json.loads(hotline("calendar", "show", "--json", check=True).stdout)
    after = dt.datetime.now(SH).date().isoformat()
    assert data["date"] in {before, after}
    assert data["now"]["time"].endswith("+08:00")


def test_cli_unknown_year_warns_once_on_stderr(hotline) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("calendar", "show", "--date", "2027-10-01", check=True)
    assert "weekday rule" in proc.stdout
    assert proc.stderr.count("no official holiday schedule for 2027") == 1


def test_cli_bad_date_is_a_usage_error(hotline) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("calendar", "show", "--date", "2026-02-30")
    assert proc.returncode == 2
    assert "invalid date '2026-02-30'" in proc.stderr


def test_rehearsal_clock_starts_at_the_configured_instant_and_runs(env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from config.context import Context
    from config.settings import ConfigError, load_settings

    monkeypatch.setenv("HOTLINE_CALENDAR__CLOCK_START", "2026-10-01T10:00:00+08:00")
    ctx = Context(load_settings())
    first = ctx.now()
    start = dt.datetime(2026, 10, 1, 2, 0, tzinfo=dt.UTC)
    assert dt.timedelta(0) <= first - start < dt.timedelta(seconds=5)
    assert ctx.now() >= first
    assert ctx.calendar.is_open(first) is False  # National Day
    monkeypatch.setenv("HOTLINE_CALENDAR__CLOCK_START", "2026-10-01T10:00:00")
    with pytest.raises(ConfigError, match="clock_start"):
        load_settings()
    monkeypatch.delenv("HOTLINE_CALENDAR__CLOCK_START")
    assert abs(Context(load_settings()).now() - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=5)


# -- working time: the fast path against the plain day-by-day walk -------------------------


def walk_days(cal: WorkCalendar, a: dt.datetime, b: dt.datetime) -> dt.timedelta:
    """working_time_between as it was before the per-year sums: every local day, span by span."""
    a, b = a.astimezone(UTC), b.astimezone(UTC)
    if b < a:
        return -walk_days(cal, b, a)
    total, day = dt.timedelta(), cal.local_date(a)
    while day <= cal.local_date(b):
        for x, y in cal.open_spans(day):
            start = dt.datetime.combine(day, x, cal.tz).astimezone(UTC)
            end = dt.datetime.combine(day, y, cal.tz).astimezone(UTC)
            lo, hi = max(start, a), min(end, b)
            if hi > lo:
                total += hi - lo
        day += dt.timedelta(days=1)
    return total


NIGHT_AND_DAY = {d: ["00:00-00:45", "01:30-03:30", "08:30-12:00", "23:15-23:59"] for d in ("mon", "wed", "sat", "sun")}
CALENDARS = {
    # holidays, 调休 weekends, local days and a configured year (2028: the weekday fallback)
    "shanghai": CalendarSettings(
        closed_days={D(2026, 12, 24): "move", D(2027, 1, 4): "move"}, open_days=[D(2026, 10, 10), D(2027, 10, 9)],
        years={"2027": YearSchedule(holidays={D(2027, 10, 1): "National Day", D(2027, 10, 4): "National Day"},
                                    workdays=[D(2027, 9, 26)])}),
    # spans across the spring-forward gap and the repeated autumn hour (02:00-03:00)
    "berlin": CalendarSettings(timezone="Europe/Berlin", hours=NIGHT_AND_DAY),
    # DST changes at local midnight, and one of half an hour
    "santiago": CalendarSettings(timezone="America/Santiago", hours=NIGHT_AND_DAY),
    "lord_howe": CalendarSettings(timezone="Australia/Lord_Howe", hours=NIGHT_AND_DAY),
}
START = dt.datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("name", CALENDARS)
def test_working_time_between_equals_the_day_by_day_walk(name: str) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    cal = WorkCalendar(CALENDARS[name])
    seconds = st.integers(0, 4 * 366 * 86400)
    lengths = st.one_of(st.integers(-3 * 86400, 3 * 86400), st.integers(-800 * 86400, 800 * 86400))

    @settings(max_examples=300, derandomize=True, deadline=None, database=None)
    @given(offset=seconds, length=lengths)
    def check(offset: int, length: int) -> None:
        a = START + dt.timedelta(seconds=offset)
        b = a + dt.timedelta(seconds=length)
        assert cal.working_time_between(a, b) == walk_days(cal, a, b)

    check()


def test_working_time_between_at_the_dst_changes() -> None:
    """Every pair of instants a quarter hour apart around the 2026 changes, within a week (each path)."""
    for name in ("berlin", "santiago", "lord_howe"):
        cal = WorkCalendar(CALENDARS[name])
        for change in (c for c in _dst_changes(cal.tz, 2026)):
            grid = [change + dt.timedelta(minutes=15 * i) for i in range(-8, 9)]
            for a in grid:
                for b in (*grid, change + dt.timedelta(days=6, minutes=5), change - dt.timedelta(days=9)):
                    assert cal.working_time_between(a, b) == walk_days(cal, a, b), (name, a, b)


def _dst_changes(tz: ZoneInfo, year: int) -> list[dt.datetime]:
    """The UTC instants (to the hour) where the zone's offset changes during ``year``."""
    hours_ = [dt.datetime(year, 1, 1, tzinfo=UTC) + dt.timedelta(hours=h) for h in range(366 * 24)]
    return [t for prev, t in zip(hours_, hours_[1:]) if prev.astimezone(tz).utcoffset() != t.astimezone(tz).utcoffset()]
