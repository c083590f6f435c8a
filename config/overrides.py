"""The manual override of the open/closed decision, and the decision itself.

Centres close the phones for a staff meeting or a drill and open them out of hours in an
emergency. That is a person's decision on top of the schedule (:class:`WorkCalendar`),
so it lives in the database (every IVR node sees it at once) and not in the config file.

Rules:

* each ``set`` inserts a row, none is ever updated: the table is the audit log;
* the latest row wins; ``auto`` means "the schedule decides again";
* an override with ``until`` stops at that instant and the schedule decides again — it does
  not fall back to an older override (people expect "open until 14:00" to end in normal
  service, not in whatever someone set last week).

:func:`decide_open` is pure (calendar, override row, instant) so the IVR can cache the row
and decide for each call with the call's own clock, and tests can inject any instant.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from typing import Literal, NamedTuple, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.calendar import WorkCalendar
from config.db import utcnow
from config.errors import HotlineError
from config.models import HoursOverride

Mode = Literal["open", "closed", "auto"]
MODES: tuple[str, ...] = get_args(Mode)

Why = Literal["manual_open", "manual_closed", "hours", "after_hours", "weekend", "holiday", "closed_day"]
WHY_TEXT: dict[str, str] = {
    "manual_open": "opened by manual override",
    "manual_closed": "closed by manual override",
    "hours": "within opening hours",
    "after_hours": "outside opening hours",
    "weekend": "no opening hours that day (weekend)",
    "holiday": "public holiday",
    "closed_day": "local closed day",
}
"""For people (logs, `hours show`); the IVR chooses its prompt by the code."""


class OverrideUsageError(HotlineError):
    """A request that makes no sense (unknown mode, an end in the past): bad usage, exit 2."""

    exit_code = 2


class Decision(NamedTuple):
    """Open or not, and why (a stable code from :data:`WHY_TEXT`); unpacks as ``(open, why)``."""

    open: bool
    why: str


def _aware(instant: dt.datetime, name: str) -> dt.datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"naive datetime for {name}: pass an aware one")
    return instant.astimezone(dt.UTC)


def os_user() -> str:
    """Who runs the command, for the log; never fails (containers may have no passwd entry)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"{user} (sudo by {sudo})" if sudo and sudo != user else user


def set_override(
    session: Session,
    mode: str,
    until: dt.datetime | None = None,
    who: str | None = None,
    note: str | None = None,
    *,
    now: dt.datetime | None = None,
) -> HoursOverride:
    """Record a new override (a new row; the caller commits). ``who`` defaults to the OS user."""
    if mode not in MODES:
        raise OverrideUsageError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    now = _aware(now, "now") if now is not None else utcnow()
    if until is not None:
        until = _aware(until, "until")
        if mode == "auto":
            raise OverrideUsageError("'auto' returns to the schedule and takes no --until")
        if until <= now:
            raise OverrideUsageError(f"--until {until.isoformat()} is not in the future (now {now.isoformat(timespec='seconds')})")
    row = HoursOverride(mode=mode, until=until, set_by=who or os_user(), set_at=now, note=note or None)
    session.add(row)
    session.flush()
    return row


def latest_override(session: Session) -> HoursOverride | None:
    """The most recent row, whatever its state (the one `hours show` explains)."""
    return session.scalars(select(HoursOverride).order_by(HoursOverride.id.desc()).limit(1)).first()


def is_active(override: HoursOverride | None, now: dt.datetime) -> bool:
    """Does this row force open/closed at ``now``? (auto and expired rows do not.)"""
    if override is None or override.mode == "auto":
        return False
    return override.until is None or _aware(now, "now") < override.until


def current_override(session: Session, now: dt.datetime | None = None) -> HoursOverride | None:
    """The override in force at ``now``, or None when the schedule decides (auto, expired, none)."""
    row = latest_override(session)
    return row if is_active(row, now or utcnow()) else None


def history(session: Session, limit: int = 20) -> list[HoursOverride]:
    """The latest ``limit`` rows, newest first."""
    return list(session.scalars(select(HoursOverride).order_by(HoursOverride.id.desc()).limit(limit)))


def decide_open(calendar: WorkCalendar, override: HoursOverride | None, now: dt.datetime) -> Decision:
    """Is the centre open at ``now``: the override if one is active then, else the schedule.

    Re-checks the override's expiry against ``now``, so a row read minutes ago is still
    decided correctly.
    """
    if is_active(override, now):
        assert override is not None
        return Decision(override.mode == "open", f"manual_{override.mode}")
    if calendar.is_open(now):
        return Decision(True, "hours")
    reason = calendar.day_info(calendar.local_date(now)).reason
    why = {"weekend": "weekend", "holiday": "holiday", "override_closed": "closed_day"}.get(reason, "after_hours")
    return Decision(False, why)


def describe_override(row: HoursOverride, tz: dt.tzinfo) -> str:
    """One line for people: mode, until, who, when, note (times in the centre's zone)."""

    def local(t: dt.datetime) -> str:
        return t.astimezone(tz).isoformat(timespec="minutes").replace("T", " ")

    text = {"open": "open", "closed": "closed", "auto": "auto (schedule decides)"}[row.mode]
    if row.until is not None:
        text += f" until {local(row.until)}"
    text += f", set by {row.set_by} at {local(row.set_at)}"
    if row.note:
        text += f": {row.note}"
    return text


def override_as_dict(row: HoursOverride, tz: dt.tzinfo) -> dict[str, object]:
    return {
        "id": row.id,
        "mode": row.mode,
        "until": row.until.astimezone(tz).isoformat(timespec="seconds") if row.until else None,
        "set_by": row.set_by,
        "set_at": row.set_at.astimezone(tz).isoformat(timespec="seconds"),
        "note": row.note,
    }
