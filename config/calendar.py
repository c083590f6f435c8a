"""The working-time calendar: when the centre has operators, and working-day deadlines.

A day is classified in this order, first match wins:

1. local overrides from config (``closed_days``, ``open_days``): the centre knows best;
2. the config's official schedule for that year (``years["2027"]``): lets a centre enter a
   State Council schedule the installed ``chinese-calendar`` package does not know yet,
   or correct a single day of it;
3. ``chinese-calendar``: named public holidays (closed) and adjusted working weekends
   (调休, open with ``adjusted_workday_hours``);
4. the weekly hours (``hours``): a weekday with spans is open, one without is "weekend".

For a year neither the package nor the config knows, step 4 alone decides: holidays are
then missed, so the calendar logs a warning once per year and calendar instance.

Instants are aware datetimes; results are returned in UTC (what we store) while every
rule is applied on the wall clock of the centre's zone (``[calendar] timezone``).
Nothing here knows about the manual "open now / closed now" switch (``hotline hours set``):
it is a layer on top of :meth:`WorkCalendar.is_open` in :mod:`config.overrides`, not part
of the schedule (its ``override_*`` reasons are the config's local days, not that switch).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Literal
from zoneinfo import ZoneInfo

import chinese_calendar

from config.errors import HotlineError
from config.settings import WEEKDAYS, CalendarSettings, ConfigError

log = logging.getLogger(__name__)

UTC = dt.timezone.utc
MAX_SEARCH_DAYS = 400
"""How far next_opening / add_working_days look before deciding the config is wrong."""

Reason = Literal["weekday", "weekend", "holiday", "adjusted_workday", "override_closed", "override_open"]
Source = Literal["override", "config", "library", "fallback"]
"""Where the classification came from; "fallback" means the weekday rule for a year nobody knows."""
Span = tuple[dt.time, dt.time]
Interval = tuple[dt.datetime, dt.datetime]
"""[start, end) in UTC."""


class CalendarError(HotlineError):
    """The calendar cannot answer, e.g. the centre never opens within MAX_SEARCH_DAYS."""


@dataclass(frozen=True)
class DayInfo:
    """One local date: open or not, why, and the opening spans (local wall-clock times)."""

    date: dt.date
    is_open: bool
    reason: Reason
    source: Source
    spans: tuple[Span, ...] = ()
    holiday: str | None = None
    """The holiday's name (for an adjusted working day: the holiday it makes up for)."""
    holiday_cn: str | None = None
    """Its Chinese name, when known."""
    note: str | None = None
    """The reason given for a local closed day."""

    def describe(self) -> str:
        """Why the day is open or closed, in one line for people."""
        name = f"{self.holiday} ({self.holiday_cn})" if self.holiday and self.holiday_cn else (self.holiday or self.holiday_cn)
        weekday = self.date.strftime("%A")
        text = {
            "weekday": f"regular working day ({weekday})",
            "weekend": f"weekend ({weekday})" if self.date.weekday() >= 5 else f"no regular hours on {weekday}",
            "holiday": f"public holiday {name}" if name else "public holiday",
            "adjusted_workday": f"adjusted working day (调休) for {name}" if name else "adjusted working day (调休)",
            "override_closed": f"local closed day ({self.note})" if self.note else "local closed day",
            "override_open": "local extra working day",
        }[self.reason]
        if self.source == "config":
            text += f" [configured {self.date.year} schedule]"
        elif self.source == "fallback":
            text += f" [no official schedule known for {self.date.year}: weekday rule only]"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "date": self.date.isoformat(),
            "weekday": self.date.strftime("%A"),
            "open": self.is_open,
            "reason": self.reason,
            "source": self.source,
            "holiday": self.holiday,
            "holiday_cn": self.holiday_cn,
            "note": self.note,
            "hours": [format_span(s) for s in self.spans],
            "description": self.describe(),
        }


def parse_span(text: str) -> Span:
    """'08:30-12:00' → (08:30, 12:00); settings have already checked the shape."""
    start, end = text.split("-")
    return dt.time.fromisoformat(start), dt.time.fromisoformat(end)


def format_span(span: Span) -> str:
    return f"{span[0]:%H:%M}-{span[1]:%H:%M}"


def _holiday_names(name: str) -> tuple[str, str | None]:
    """English and Chinese names when the package knows the holiday (by either name)."""
    for h in chinese_calendar.Holiday:
        if name in (h.value, h.chinese):
            return h.value, h.chinese
    return name, None


def _utc(instant: dt.datetime) -> dt.datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"naive datetime {instant.isoformat()}: the calendar needs aware datetimes")
    return instant.astimezone(UTC)


class WorkCalendar:
    """The centre's opening days and hours, built once from ``[calendar]`` settings."""

    def __init__(self, settings: CalendarSettings) -> None:
        self.settings = settings
        self.tz = ZoneInfo(settings.timezone)
        self._weekly = {d: tuple(parse_span(s) for s in settings.hours.get(d, [])) for d in WEEKDAYS}  # type: ignore[call-overload]
        self._adjusted = tuple(parse_span(s) for s in settings.adjusted_workday_hours)
        self._check()
        self._days: dict[dt.date, DayInfo] = {}
        self._intervals: dict[dt.date, tuple[Interval, ...]] = {}
        self._year_sums: dict[int, list[dt.timedelta]] = {}
        self._warned: set[int] = set()

    def _check(self) -> None:
        """Contradictions the field validators cannot see; each names its key."""
        s = self.settings
        both = sorted(set(s.closed_days) & set(s.open_days))
        if both:
            raise ConfigError(f"[calendar] closed_days and open_days both list {', '.join(map(str, both))}")
        for key, year in s.years.items():
            where = f'[calendar.years."{key}"]'
            if not (key.isdigit() and len(key) == 4):
                raise ConfigError(f"{where}: the key must be a year such as \"2027\"")
            for d in [*year.holidays, *year.workdays]:
                if d.year != int(key):
                    raise ConfigError(f"{where}: {d} is not in {key}")
            clash = sorted(set(year.holidays) & set(year.workdays))
            if clash:
                raise ConfigError(f"{where}: {', '.join(map(str, clash))} listed as both holiday and workday")

    # -- days ---------------------------------------------------------------------------

    def day_info(self, day: dt.date) -> DayInfo:
        """Open or closed on this local date, and why (see the module docstring for the order)."""
        if day not in self._days:
            self._days[day] = self._classify(day)
        return self._days[day]

    def _classify(self, day: dt.date) -> DayInfo:
        s = self.settings
        weekly = self._weekly[WEEKDAYS[day.weekday()]]
        if day in s.closed_days:
            return DayInfo(day, False, "override_closed", "override", note=s.closed_days[day] or None)
        if day in s.open_days:
            # An extra working day keeps that weekday's hours, or gets the adjusted-day hours.
            spans = weekly or self._adjusted
            return DayInfo(day, bool(spans), "override_open", "override", spans)

        year = s.years.get(str(day.year))
        if year is not None and day in year.holidays:
            return DayInfo(day, False, "holiday", "config", (), *_holiday_names(year.holidays[day]))
        if year is not None and day in year.workdays:
            return DayInfo(day, bool(self._adjusted), "adjusted_workday", "config", self._adjusted)

        try:
            rest, name = chinese_calendar.get_holiday_detail(day)
        except NotImplementedError:
            source: Source = "config" if year is not None else "fallback"
            if source == "fallback":
                self._warn_unknown_year(day.year)
        else:
            source = "library"
            if name is not None and rest:
                return DayInfo(day, False, "holiday", source, (), *_holiday_names(name))
            if name is not None:
                return DayInfo(day, bool(self._adjusted), "adjusted_workday", source, self._adjusted, *_holiday_names(name))
        # No holiday involved: the weekly hours decide (the package's own weekend rule is
        # ignored so that a centre may open on Saturdays).
        return DayInfo(day, bool(weekly), "weekday" if weekly else "weekend", source, weekly)

    def _warn_unknown_year(self, year: int) -> None:
        if year in self._warned:
            return
        self._warned.add(year)
        log.warning(
            "no official holiday schedule for %d (chinesecalendar %s does not know it and [calendar.years.\"%d\"] "
            "is not configured): public holidays and adjusted working days are missed, the weekday rule applies; "
            "enter the State Council schedule in the config or upgrade chinesecalendar",
            year, version("chinesecalendar"), year,
        )

    def open_spans(self, day: dt.date) -> tuple[Span, ...]:
        """The local opening spans of a date (empty when closed)."""
        return self.day_info(day).spans

    def open_intervals(self, day: dt.date) -> list[Interval]:
        """The opening spans of a local date as [start, end) instants in UTC."""
        return list(self._utc_intervals(day))

    def _utc_intervals(self, day: dt.date) -> tuple[Interval, ...]:
        """open_intervals, kept per date: the zone conversion is most of the cost of a deadline's
        state. Safe to keep for the calendar's life: a day depends only on the settings this
        calendar was built from (like ``_days``), never on the manual open/closed switch."""
        got = self._intervals.get(day)
        if got is None:
            got = self._intervals[day] = tuple(
                (dt.datetime.combine(day, a, self.tz).astimezone(UTC), dt.datetime.combine(day, b, self.tz).astimezone(UTC))
                for a, b in self.open_spans(day)
            )
        return got

    def local_date(self, instant: dt.datetime) -> dt.date:
        return _utc(instant).astimezone(self.tz).date()

    # -- instants -----------------------------------------------------------------------

    def is_open(self, instant: dt.datetime) -> bool:
        """Is ``instant`` inside an opening span (start included, end excluded)?"""
        return self.open_until(instant) is not None

    def open_until(self, instant: dt.datetime) -> dt.datetime | None:
        """End (UTC) of the span ``instant`` lies in, or None when the centre is closed then."""
        t = _utc(instant)
        for start, end in self.open_intervals(self.local_date(t)):
            if start <= t < end:
                return end
        return None

    def next_opening(self, instant: dt.datetime) -> dt.datetime:
        """The first instant at or after ``instant`` when the centre is open (itself if open), in UTC."""
        t = _utc(instant)
        first = self.local_date(t)
        for i in range(MAX_SEARCH_DAYS + 1):
            for start, end in self.open_intervals(first + dt.timedelta(days=i)):
                if t < end:
                    return max(start, t)
        raise CalendarError(f"the centre does not open within {MAX_SEARCH_DAYS} days of {first}; check [calendar]")

    def add_working_days(self, instant: dt.datetime, n: int) -> dt.datetime:
        """The deadline ``n`` working days after ``instant``, in UTC.

        Precisely: the same local time of day as ``instant``, on the n-th working day
        (a day with opening hours) strictly after ``instant``'s local date. The day of
        receipt never counts, whether it was a working day or not, as in the usual
        administrative rule (期限开始之日不计算在内): a message left at 10:00 on Friday
        with n=1 is due Monday 10:00, one left on Saturday at 23:00 is due Monday 23:00.
        n=0 returns ``instant`` itself.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        t = _utc(instant)
        if n == 0:
            return t
        local = t.astimezone(self.tz)
        day, found, gap = local.date(), 0, 0
        while found < n:
            day += dt.timedelta(days=1)
            if self.day_info(day).is_open:
                found, gap = found + 1, 0
            else:
                gap += 1
                if gap > MAX_SEARCH_DAYS:
                    raise CalendarError(f"no working day within {MAX_SEARCH_DAYS} days after {day - dt.timedelta(days=gap)}")
        return dt.datetime.combine(day, local.time(), self.tz).astimezone(UTC)

    def working_time_between(self, a: dt.datetime, b: dt.datetime) -> dt.timedelta:
        """Open time between two instants: the overlap of [a, b) with the opening spans.

        Negative when ``b`` is before ``a``, so "time left" and "time overdue" share one call.

        The case list asks this for every open deadline, often a year or two away from now, so
        the days inside the range are added from per-year running sums of whole days' opening
        time. The two days at each end are clipped span by span, as all days were before: the
        sums assume a day's spans lie wholly inside [a, b), which the day next to an end need
        not (a zone change that repeats a stretch of local time across midnight).
        """
        a, b = _utc(a), _utc(b)
        if b < a:
            return -self.working_time_between(b, a)
        first, last = self.local_date(a).toordinal(), self.local_date(b).toordinal()
        if last - first < 5:
            edges, total = range(first, last + 1), dt.timedelta()
        else:
            edges, total = (first, first + 1, last - 1, last), self._open_time(first + 2, last - 1)
        for day in edges:
            for start, end in self._utc_intervals(dt.date.fromordinal(day)):
                lo, hi = max(start, a), min(end, b)
                if hi > lo:
                    total += hi - lo
        return total

    def _open_time(self, first: int, stop: int) -> dt.timedelta:
        """Opening time of the whole local days with ordinals first..stop-1 (first <= stop)."""
        y1, i1 = self._year_index(first)
        y2, i2 = self._year_index(stop)
        if y1 == y2:
            sums = self._year_sum(y1)
            return sums[i2] - sums[i1]
        start = self._year_sum(y1)
        total = start[-1] - start[i1] + self._year_sum(y2)[i2]
        for year in range(y1 + 1, y2):
            total += self._year_sum(year)[-1]
        return total

    @staticmethod
    def _year_index(ordinal: int) -> tuple[int, int]:
        day = dt.date.fromordinal(ordinal)
        return day.year, ordinal - dt.date(day.year, 1, 1).toordinal()

    def _year_sum(self, year: int) -> list[dt.timedelta]:
        """Opening time of the year's days before day index i (0 = 1 January), for i up to the year's length.

        Whole years, so only years a caller's range touches are classified (the unknown-year
        warning names the same years as walking day by day would)."""
        sums = self._year_sums.get(year)
        if sums is None:
            jan1, run = dt.date(year, 1, 1).toordinal(), dt.timedelta()
            sums = [run]
            for day in range(jan1, dt.date(year, 12, 31).toordinal() + 1):
                for start, end in self._utc_intervals(dt.date.fromordinal(day)):
                    run += end - start
                sums.append(run)
            self._year_sums[year] = sums
        return sums


def in_zone(value: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """A time typed without an offset is wall-clock time in the centre's zone, where people read clocks."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=tz)
    return value
