"""Calling windows: on which days and at which local times a campaign may dial.

A day is a calling day when the campaign's day rule allows it *and* it is not a public
holiday or a local closed day of the centre's calendar (nobody is rung on National Day,
whatever the rule says). The day rule is ``working_days`` (the calendar's: Monday to Friday
plus adjusted working weekends such as Sunday 2026-09-20, minus holidays), ``every_day``,
or a list of weekday names. The *hours* are always the campaign's own spans (default
09:00-12:00 and 14:30-20:00), not the office hours: people are reached after work.

Days and spans are read on the wall clock of the campaign's time zone; instants in and
out are aware datetimes, results in UTC.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from campaigns.errors import WindowError
from config.calendar import MAX_SEARCH_DAYS, WorkCalendar
from config.settings import WEEKDAYS

UTC = dt.UTC
Span = tuple[dt.time, dt.time]
NEVER = frozenset({"holiday", "override_closed"})
"""Calendar reasons that close a day to every campaign."""
_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_spans(spans: Sequence[Any]) -> tuple[Span, ...]:
    """'09:00-12:00' strings → sorted (start, end) times; a clear WindowError for each kind of mistake."""
    if isinstance(spans, str) or not isinstance(spans, Sequence) or not spans:
        raise WindowError(f"calling windows must be a non-empty list of 'HH:MM-HH:MM' spans, got {spans!r}")
    out: list[Span] = []
    for text in spans:
        m = _SPAN.match(text) if isinstance(text, str) else None
        if m is None:
            raise WindowError(f"calling window {text!r} is not 'HH:MM-HH:MM'")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise WindowError(f"calling window {text!r} holds a time that does not exist")
        start, end = dt.time(h1, m1), (dt.time.max if h2 == 24 else dt.time(h2, m2))
        if end <= start:
            raise WindowError(
                f"calling window {text!r} ends before it starts (or at the same time); "
                "a window cannot cross midnight: split it into two"
            )
        out.append((start, end))
    out.sort()
    for a, b in zip(out, out[1:]):
        if b[0] < a[1]:
            raise WindowError(f"calling windows {a[0]:%H:%M}-{a[1]:%H:%M} and {b[0]:%H:%M}-{b[1]:%H:%M} overlap")
    return tuple(out)


def parse_days(days: Any) -> str | frozenset[int]:
    """'working_days' | 'every_day' | ['mon', …] → the rule, weekday lists as numbers (Monday 0)."""
    if days in ("working_days", "every_day"):
        return str(days)
    if isinstance(days, str) or not isinstance(days, Sequence) or not days:
        raise WindowError(f"calling days must be 'working_days', 'every_day' or a list of weekdays, got {days!r}")
    bad = [d for d in days if d not in WEEKDAYS]
    if bad:
        raise WindowError(f"unknown weekday(s) {bad!r}; use {', '.join(WEEKDAYS)}")
    return frozenset(WEEKDAYS.index(d) for d in days)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(f"unknown time zone {name!r}; use an IANA name such as 'Asia/Shanghai'") from None


def _utc(instant: dt.datetime) -> dt.datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"naive datetime {instant.isoformat()}: pass an aware one")
    return instant.astimezone(UTC)


@dataclass(frozen=True)
class CallingWindow:
    """The when-to-dial rule of one campaign."""

    spans: tuple[Span, ...]
    days: str | frozenset[int]
    tz: ZoneInfo
    calendar: WorkCalendar

    @classmethod
    def build(cls, spans: Sequence[Any], days: Any, timezone: str, calendar: WorkCalendar) -> CallingWindow:
        return cls(parse_spans(spans), parse_days(days), zone(timezone), calendar)

    def day_allowed(self, day: dt.date) -> bool:
        info = self.calendar.day_info(day)
        if info.reason in NEVER:
            return False
        if self.days == "working_days":
            return info.is_open
        if self.days == "every_day":
            return True
        assert isinstance(self.days, frozenset)
        return day.weekday() in self.days

    def intervals(self, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        """The windows of a local date as [start, end) UTC instants (empty on a non-calling day)."""
        if not self.day_allowed(day):
            return []
        out = []
        for a, b in self.spans:
            start = dt.datetime.combine(day, a, self.tz)
            end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), self.tz) if b == dt.time.max else dt.datetime.combine(day, b, self.tz)
            out.append((start.astimezone(UTC), end.astimezone(UTC)))
        return out

    def window_end(self, now: dt.datetime) -> dt.datetime | None:
        """End of the window ``now`` lies in (UTC), None when outside every window."""
        t = _utc(now)
        for start, end in self.intervals(t.astimezone(self.tz).date()):
            if start <= t < end:
                return end
        return None

    def in_window(self, now: dt.datetime) -> bool:
        return self.window_end(now) is not None

    def next_window_start(self, now: dt.datetime) -> dt.datetime:
        """The first instant at or after ``now`` inside a window (``now`` itself when inside), in UTC."""
        t = _utc(now)
        first = t.astimezone(self.tz).date()
        for i in range(MAX_SEARCH_DAYS + 1):
            for start, end in self.intervals(first + dt.timedelta(days=i)):
                if t < end:
                    return max(start, t)
        raise WindowError(f"no calling window within {MAX_SEARCH_DAYS} days of {first}: check the campaign's days and windows")
