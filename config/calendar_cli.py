"""`hotline calendar show [--date YYYY-MM-DD] [--json]`: what the calendar says about a day."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from config.calendar import MAX_SEARCH_DAYS, CalendarError, WorkCalendar
from config.context import Context


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid date {text!r}: expected YYYY-MM-DD") from None


def register(sub: argparse._SubParsersAction) -> None:
    cal = sub.add_parser("calendar", help="working-time calendar").add_subparsers(
        dest="calendar_command", metavar="ACTION", required=True
    )
    p = cal.add_parser(
        "show",
        help="open or closed on a date, why, the hours, and whether the centre is open now",
        description="Open or closed on a date (default: today in the centre's time zone), why "
        "(weekday, weekend, named holiday, adjusted working day, local override), the opening "
        "hours, and whether the centre is open right now.",
    )
    p.add_argument("--date", type=_date, metavar="YYYY-MM-DD", help="the date to show (default: today, local)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_show)
    # The manual override ("hotline hours set open|closed", a later issue) is a state kept
    # outside the schedule; mount it here and report it in _now() next to the schedule.


def _now(cal: WorkCalendar) -> dict[str, Any]:
    """The schedule's answer for this instant: open until when, or when it opens next."""
    now = dt.datetime.now(dt.timezone.utc)
    until = cal.open_until(now)
    try:
        nxt = None if until else cal.next_opening(now)
    except CalendarError:
        nxt = None
    local = cal.tz
    return {
        "time": now.astimezone(local).isoformat(timespec="seconds"),
        "open": until is not None,
        "open_until": until.astimezone(local).isoformat(timespec="seconds") if until else None,
        "next_opening": nxt.astimezone(local).isoformat(timespec="seconds") if nxt else None,
    }


def _show(args: argparse.Namespace, ctx: Context) -> int:
    cal = ctx.calendar
    day = args.date or dt.datetime.now(cal.tz).date()
    info = cal.day_info(day)
    now = _now(cal)
    if args.json:
        print(json.dumps({**info.as_dict(), "timezone": cal.settings.timezone, "now": now}, ensure_ascii=False))
        return 0
    print(f"{day} ({day:%A}, {cal.settings.timezone}): {'open' if info.is_open else 'closed'}")
    print(f"  why:   {info.describe()}")
    print(f"  hours: {', '.join(a for a in info.as_dict()['hours']) or 'none'}")
    stamp = now["time"][:16].replace("T", " ")
    if now["open"]:
        print(f"now ({stamp}): open until {now['open_until'][11:16]}")
    elif now["next_opening"]:
        print(f"now ({stamp}): closed; next opening {now['next_opening'][:16].replace('T', ' ')}")
    else:
        print(f"now ({stamp}): closed; no opening within {MAX_SEARCH_DAYS} days")
    return 0
