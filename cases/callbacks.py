"""The callback list: callers to ring back because they hung up in the queue or asked for it.

Here in ``cases`` (not ``ivr``) so that the API and the campaigns that dial these numbers can
use it without reaching into the call flows. The IVR adds rows (:func:`add`); staff list,
claim (so two people do not ring the same caller) and mark them done with an outcome.

One caller who gives up three times in a morning is one callback, not three: while a
callback for a number is still open, later ones for the same number are folded into it
(``calls`` counts them; a request upgrades an 'abandoned' entry to 'requested').
"""

from __future__ import annotations

import datetime as dt

import phonenumbers
from sqlalchemy import ForeignKey, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from config.db import Base, UTCDateTime, utcnow
from config.errors import HotlineError

REASONS = ("abandoned", "requested")
OUTCOMES = ("reached", "no_answer", "busy", "invalid_number", "not_needed")
STATES = ("open", "claimed", "done", "all")
NOTE_MAX = 2000
PHONE_REGION = "CN"


class CallbackError(HotlineError):
    """A callback operation that cannot be done (unknown id, already claimed or done, bad value)."""


class CallbackNotFound(CallbackError):
    pass


class CallbackConflict(CallbackError):
    """Claimed by someone else, or already done."""


class Callback(Base):
    __tablename__ = "callback"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(40), index=True)
    """Digits to dial (national form for Chinese numbers, as the caller keyed or presented them)."""
    call_id: Mapped[int | None] = mapped_column(Integer, index=True)
    """The (first) call that put the caller on the list."""
    reason: Mapped[str] = mapped_column(String(10))
    calls: Mapped[int] = mapped_column(Integer, default=1)
    """How many calls were folded into this entry while it was open."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    done_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)
    outcome: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)
    done_by: Mapped[str | None] = mapped_column(String(80))
    """Who closed it when that was not a person with a claim: "campaign <id>" (a callback campaign reached them)."""


def dialable(number: str | None) -> str | None:
    """The number to ring back, or None when there is none usable (anonymous, 'unknown', garbage).

    Accepts what a caller presents or keys: 13812345678, +8613812345678, 010-12345678.
    Returned as digits only (national form for Chinese numbers), so one caller is one entry.
    """
    if not isinstance(number, str) or not number.strip() or len(number) > 40:
        return None
    try:
        parsed = phonenumbers.parse(number.strip(), PHONE_REGION)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    if parsed.country_code == 86:
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL).replace(" ", "").replace("-", "")
    return "00" + str(parsed.country_code) + str(parsed.national_number)


def add(session: Session, phone: str, reason: str, *, call_id: int | None = None,
        now: dt.datetime | None = None) -> Callback:
    """Put a caller on the list, or fold this call into their open entry."""
    if reason not in REASONS:
        raise CallbackError(f"reason must be one of {', '.join(REASONS)}, got {reason!r}")
    number = dialable(phone)
    if number is None:
        raise CallbackError(f"{phone!r} is not a telephone number that can be called back")
    existing = session.scalars(
        select(Callback).where(Callback.phone == number, Callback.done_at.is_(None)).order_by(Callback.id).limit(1)
        .with_for_update()
    ).first()
    if existing is not None:
        existing.calls += 1
        if reason == "requested":
            existing.reason = "requested"
        return existing
    row = Callback(phone=number, call_id=call_id, reason=reason, created_at=now or utcnow())
    session.add(row)
    session.flush()
    return row


def listing(session: Session, *, state: str = "open", after_id: int | None = None, limit: int = 50) -> list[Callback]:
    """Oldest first (who waited longest is rung first); `after_id` is the cursor of the next page."""
    if state not in STATES:
        raise CallbackError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 500:
        raise CallbackError(f"limit must be an integer from 1 to 500, got {limit!r}")
    q = select(Callback).order_by(Callback.id).limit(limit)
    if after_id is not None:
        q = q.where(Callback.id > after_id)
    if state == "open":
        q = q.where(Callback.done_at.is_(None), Callback.claimed_by.is_(None))
    elif state == "claimed":
        q = q.where(Callback.done_at.is_(None), Callback.claimed_by.is_not(None))
    elif state == "done":
        q = q.where(Callback.done_at.is_not(None))
    return list(session.scalars(q).all())


def _get(session: Session, callback_id: int) -> Callback:
    if not isinstance(callback_id, int) or isinstance(callback_id, bool):
        raise CallbackNotFound(f"no callback {callback_id!r}")
    row = session.get(Callback, callback_id)
    if row is None:
        raise CallbackNotFound(f"no callback {callback_id}")
    return row


def claim(session: Session, callback_id: int, user_id: int, now: dt.datetime | None = None) -> Callback:
    """Take a callback so nobody else rings the same caller. One conditional UPDATE: of two
    people claiming at once, exactly one wins and the other gets CallbackConflict."""
    row = _get(session, callback_id)
    done = session.execute(
        update(Callback)
        .where(Callback.id == callback_id, Callback.claimed_by.is_(None), Callback.done_at.is_(None))
        .values(claimed_by=user_id, claimed_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    session.refresh(row)
    if not done.rowcount:
        if row.claimed_by == user_id and row.done_at is None:
            return row  # claiming again is harmless (a double click)
        raise CallbackConflict(f"callback {callback_id} is already {'done' if row.done_at else f'claimed by user {row.claimed_by}'}")
    return row


def complete(session: Session, callback_id: int, user_id: int, outcome: str, note: str | None = None,
             now: dt.datetime | None = None) -> Callback:
    """Mark a callback done with what happened. Only the person who claimed it may."""
    if outcome not in OUTCOMES:
        raise CallbackError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_MAX or "\x00" in note):
        raise CallbackError(f"note must be text of at most {NOTE_MAX} characters, without NUL")
    row = _get(session, callback_id)
    session.refresh(row, with_for_update=True)
    if row.done_at is not None:
        raise CallbackConflict(f"callback {callback_id} is already done")
    if row.claimed_by != user_id:
        who = "nobody" if row.claimed_by is None else f"user {row.claimed_by}"
        raise CallbackConflict(f"callback {callback_id} is claimed by {who}; claim it before marking it done")
    row.done_at, row.outcome, row.note = now or utcnow(), outcome, note
    return row


def append_note(row: Callback, text: str) -> None:
    """Add a line to the entry's note (kept within NOTE_MAX, newest last), for the person who rings next."""
    line = text.replace("\x00", "").strip()
    note = f"{row.note}\n{line}" if row.note else line
    row.note = note[-NOTE_MAX:]


def complete_by_system(session: Session, callback_id: int, by: str, outcome: str, note: str | None = None,
                       now: dt.datetime | None = None) -> bool:
    """Close an entry nobody claimed, on behalf of `by` (e.g. "campaign 3" that reached the caller).

    One conditional UPDATE, like :func:`claim`: if a person claimed it (or closed it) meanwhile,
    nothing changes and False comes back; their claim wins and the caller of this adds a note instead.
    """
    if outcome not in OUTCOMES:
        raise CallbackError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    row = _get(session, callback_id)
    done = session.execute(
        update(Callback)
        .where(Callback.id == callback_id, Callback.claimed_by.is_(None), Callback.done_at.is_(None))
        .values(done_at=now or utcnow(), outcome=outcome, done_by=by[:80])
        .execution_options(synchronize_session=False)
    )
    session.refresh(row)
    if done.rowcount and note:
        append_note(row, note)
    return bool(done.rowcount)
