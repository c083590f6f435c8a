"""`hotline calendar show` (what the calendar says about a day) and `hotline hours …` (the manual override).

`calendar show` works without a database (the schedule is config only); when one is
configured and reachable it also shows an active manual override, otherwise it says in one
line that it could not check.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from config.calendar import MAX_SEARCH_DAYS, CalendarError, WorkCalendar, in_zone
from config.context import Context
from config.db import DatabaseError, make_engine, normalise_url, require_current_schema, session_factory, transaction, utcnow
from config.logs import get_logger
from config.models import HoursOverride
from config.overrides import (
    WHY_TEXT,
    OverrideUsageError,
    current_override,
    decide_open,
    describe_override,
    history,
    os_user,
    override_as_dict,
    set_override,
)

log = get_logger("config.hours")


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

    hours = sub.add_parser(
        "hours",
        help="manual override of the open/closed decision (meetings, drills, emergencies)",
        description="Force the centre open or closed regardless of the calendar, or return to the "
        "schedule ('auto'). Each change is stored as a new row with who set it, so `hours show` "
        "is also the log.",
    ).add_subparsers(dest="hours_command", metavar="ACTION", required=True)
    p = hours.add_parser(
        "set",
        help="set open|closed|auto, optionally until an instant",
        description="Set the override. --until takes an ISO 8601 instant; without an offset it is read "
        "in the centre's time zone ([calendar] timezone). When it passes, the schedule decides again. "
        "The change is recorded with the OS user who ran the command.",
    )
    p.add_argument("mode", choices=["open", "closed", "auto"])
    p.add_argument("--until", metavar="ISO8601", help="end of the override, e.g. 2026-10-09T14:00 (local) or …+08:00")
    p.add_argument("--note", metavar="TEXT", help="why (kept in the log), e.g. 'fire drill'")
    p.set_defaults(handler=_hours_set)
    p = hours.add_parser("show", help="the decision now, the override in force and the recent changes")
    p.add_argument("--limit", type=int, default=10, metavar="N", help="changes to list (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_hours_show)


def _now(cal: WorkCalendar, now: dt.datetime) -> dict[str, Any]:
    """The schedule's answer for this instant: open until when, or when it opens next."""
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


def _override_for_show(ctx: Context, now: dt.datetime) -> tuple[HoursOverride | None, str | None]:
    """The active override, or why it could not be read. Never creates a database.

    A short connect timeout for PostgreSQL: a calendar question must not hang on a
    database that is down.
    """
    url = normalise_url(ctx.settings.database.url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None, f"[database] url {url!r} is not a database URL"
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:" or not Path(parsed.database).is_file():
            return None, f"no database at {parsed.database or ':memory:'}"
        engine = make_engine(url)
    else:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        require_current_schema(engine)
        with session_factory(engine)() as session:
            return current_override(session, now), None
    except DatabaseError as e:
        return None, str(e)
    except SQLAlchemyError as e:
        return None, f"cannot read {engine.url.render_as_string()}: {e.__class__.__name__}: {str(e).splitlines()[0]}"
    finally:
        engine.dispose()


def _show(args: argparse.Namespace, ctx: Context) -> int:
    cal = ctx.calendar
    clock = ctx.now()
    day = args.date or clock.astimezone(cal.tz).date()
    info = cal.day_info(day)
    now = _now(cal, clock)
    instant = dt.datetime.fromisoformat(now["time"])
    override, problem = _override_for_show(ctx, instant)
    decision = decide_open(cal, override, instant)
    if args.json:
        now["decision"] = {"open": decision.open, "why": decision.why}
        print(json.dumps({**info.as_dict(), "timezone": cal.settings.timezone, "now": now,
                          "override": override_as_dict(override, cal.tz) if override else None,
                          "override_unknown": " ".join(problem.split()) if problem else None}, ensure_ascii=False))
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
    if override is not None:
        print(f"override: {'OPEN' if decision.open else 'CLOSED'} by manual override: {describe_override(override, cal.tz)}")
    elif problem is not None:
        print(f"note: manual override not checked ({' '.join(problem.split())})")
    return 0


def _parse_until(text: str | None, tz: dt.tzinfo) -> dt.datetime | None:
    """ISO 8601; a naive value is wall-clock time in the centre's zone, where people read clocks."""
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise OverrideUsageError(f"invalid --until {text!r}: expected ISO 8601, e.g. 2026-10-09T14:00 or 2026-10-09T14:00+08:00") from None
    return in_zone(value, tz).astimezone(dt.UTC)


def _hours_set(args: argparse.Namespace, ctx: Context) -> int:
    cal = ctx.calendar
    until = _parse_until(args.until, cal.tz)
    if until is not None and until <= utcnow():
        local = until.astimezone(cal.tz).isoformat(timespec="minutes")
        raise OverrideUsageError(f"--until {args.until} ({local}) is in the past")
    with transaction(ctx.sessions) as session:
        row = set_override(session, args.mode, until, os_user(), args.note)
        now = ctx.now()
        decision = decide_open(cal, row, now)
        text = describe_override(row, cal.tz)
    log.info("hours override set", mode=row.mode, until=row.until.isoformat() if row.until else None,
             set_by=row.set_by, note=row.note, override_id=row.id)
    print(f"hours override: {text}")
    print(f"now: {'open' if decision.open else 'closed'} ({WHY_TEXT[decision.why]})")
    return 0


def _hours_show(args: argparse.Namespace, ctx: Context) -> int:
    if args.limit < 0:
        raise OverrideUsageError("--limit must be >= 0")
    cal = ctx.calendar
    now = ctx.now()
    with ctx.sessions() as session:
        active = current_override(session, now)
        rows = history(session, args.limit)
    decision = decide_open(cal, active, now)
    if args.json:
        print(json.dumps({
            "time": now.astimezone(cal.tz).isoformat(timespec="seconds"),
            "open": decision.open, "why": decision.why,
            "override": override_as_dict(active, cal.tz) if active else None,
            "history": [override_as_dict(r, cal.tz) for r in rows],
        }, ensure_ascii=False))
        return 0
    stamp = now.astimezone(cal.tz).isoformat(timespec="minutes").replace("T", " ")
    print(f"now ({stamp}): {'open' if decision.open else 'closed'} ({WHY_TEXT[decision.why]})")
    print(f"override: {describe_override(active, cal.tz) if active else 'none (the schedule decides)'}")
    if rows:
        print("changes (newest first):")
        for r in rows:
            state = "  in force" if active is not None and r.id == active.id else ""
            print(f"  #{r.id} {describe_override(r, cal.tz)}{state}")
    return 0
