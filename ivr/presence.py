"""Operator presence: whether an operator's phone may ring, kept in the database.

States: ``available`` (may be offered a caller), ``busy`` (on a call; set by the queue when a
call is bridged), ``wrap_up`` (notes after a call, ``[queue] wrap_up_seconds``; becomes
available by itself), ``away`` and ``offline`` (set by the operator through the API).

Presence lives in a table rather than in memory so that it survives a restart and so
that several IVR nodes sharing one database see the same operators. Wrap-up expiry is
evaluated lazily (:func:`expire_wrap_up`, called before every selection) instead of by a
timer, so nothing is lost when the process that started the wrap-up dies.

Plain functions over a session; the caller owns the transaction. ``busy`` is only ever
entered through :func:`claim`, a conditional UPDATE, so two nodes (or two callers on one
node) can never both take the same operator.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ForeignKey, Integer, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from cases.users import User
from config.db import Base, UTCDateTime
from config.errors import HotlineError
from config.logs import get_logger

log = get_logger("ivr.presence")

STATES = ("available", "busy", "wrap_up", "away", "offline")
OPERATOR_SETTABLE = ("available", "away", "offline")
"""What an operator may choose; busy and wrap_up follow calls."""
LOGGED_IN = ("available", "busy", "wrap_up", "away")
"""An operator in any of these is at work: a caller waits for them rather than going straight to voicemail."""


class PresenceError(HotlineError):
    """A presence change that is not allowed (unknown state, on a call, unknown operator)."""


class OperatorPresence(Base):
    __tablename__ = "operator_presence"

    user_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id"), primary_key=True, autoincrement=False)
    """The operator (user table id; the foreign key is added when users land)."""
    state: Mapped[str] = mapped_column(String(10), default="offline", index=True)
    since: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    """When the current state began."""
    last_call_ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """For 'longest idle first': the operator whose last call ended earliest is offered first."""
    wrap_up_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    call_id: Mapped[int | None] = mapped_column(Integer)
    """The call the operator is on while busy."""
    node: Mapped[str | None] = mapped_column(String(80))
    """The IVR node whose call made the operator busy: only that node's restart may release them."""


@dataclass(frozen=True)
class Idle:
    """An available operator and since when they count as idle."""

    user_id: int
    idle_since: dt.datetime


def get(session: Session, user_id: int) -> OperatorPresence | None:
    return session.get(OperatorPresence, user_id)


def _row(session: Session, user_id: int, now: dt.datetime) -> OperatorPresence:
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
        raise PresenceError(f"operator id must be a positive integer, got {user_id!r}")
    row = session.get(OperatorPresence, user_id, with_for_update=True)
    if row is None:
        row = OperatorPresence(user_id=user_id, state="offline", since=now)
        session.add(row)
        session.flush()
    return row


def set_state(session: Session, user_id: int, state: str, now: dt.datetime) -> OperatorPresence:
    """What the operator chooses (API): available, away or offline.

    Refused while on a call: the call ends first (and then wrap-up). Choosing 'available'
    during wrap-up ends it early: the operator says they are ready.
    """
    if state not in OPERATOR_SETTABLE:
        raise PresenceError(f"presence {state!r} cannot be chosen; choose one of {', '.join(OPERATOR_SETTABLE)}")
    row = _row(session, user_id, now)
    if row.state == "busy":
        raise PresenceError(f"operator {user_id} is on a call; presence changes after it ends")
    if row.state != state:
        row.state, row.since = state, now
    row.wrap_up_until = None
    return row


def claim(session: Session, user_id: int, now: dt.datetime, *, call_id: int | None = None,
          node: str | None = None) -> bool:
    """available → busy when a call is bridged to the operator; False if they are no longer available
    (chose away meanwhile, or another caller or node took them first)."""
    result = session.execute(
        update(OperatorPresence)
        .where(OperatorPresence.user_id == user_id, OperatorPresence.state == "available")
        .values(state="busy", since=now, call_id=call_id, node=node, wrap_up_until=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def call_ended(session: Session, user_id: int, now: dt.datetime, wrap_up_seconds: float) -> OperatorPresence | None:
    """busy → wrap_up (or straight to available without wrap-up). None for an unknown operator."""
    row = session.get(OperatorPresence, user_id, with_for_update=True)
    if row is None:
        return None
    row.last_call_ended_at = now
    if row.state != "busy":
        return row  # they went offline by other means (recovery, admin): only note the call
    row.call_id = None
    row.node = None
    if wrap_up_seconds > 0:
        row.state, row.since = "wrap_up", now
        row.wrap_up_until = now + dt.timedelta(seconds=wrap_up_seconds)
    else:
        row.state, row.since, row.wrap_up_until = "available", now, None
    return row


def expire_wrap_up(session: Session, now: dt.datetime) -> int:
    """wrap_up → available for every operator whose wrap-up is over; returns how many."""
    rows = session.scalars(
        select(OperatorPresence).where(OperatorPresence.state == "wrap_up", OperatorPresence.wrap_up_until <= now)
    ).all()
    for row in rows:
        # Available since the wrap-up ended, not since someone happened to look.
        row.state, row.since = "available", row.wrap_up_until or now
        row.wrap_up_until = None
    return len(rows)


def available(session: Session, now: dt.datetime) -> list[Idle]:
    """Available operators, longest idle first.

    Idle since the last call ended; an operator who has not had a call yet counts from when
    they became available. Sorted here rather than in SQL so NULL ordering cannot differ
    between SQLite and PostgreSQL; ties go to the lower id so the order is stable.
    """
    expire_wrap_up(session, now)
    rows = session.scalars(select(OperatorPresence).where(OperatorPresence.state == "available")).all()
    idle = [Idle(r.user_id, r.last_call_ended_at or r.since) for r in rows]
    return sorted(idle, key=lambda i: (i.idle_since, i.user_id))


def logged_in_count(session: Session) -> int:
    """Operators at work (not offline). Zero means a caller goes straight to voicemail."""
    return len(session.scalars(select(OperatorPresence.user_id).where(OperatorPresence.state.in_(LOGGED_IN))).all())


def recover_after_restart(session: Session, now: dt.datetime, wrap_up_seconds: float, node: str | None) -> list[int]:
    """After a crash no call survives, so an operator left 'busy' by this node is not on a call.

    They go to wrap-up (not straight to available): the call they were on was cut off, and the
    operator gets the usual pause to note it before the next caller rings. Operators busy on
    another node's calls are left alone. Returns the ids released.
    """
    rows = session.scalars(
        select(OperatorPresence).where(OperatorPresence.state == "busy",
                                       (OperatorPresence.node == node) | OperatorPresence.node.is_(None))
    ).all()
    released = []
    for row in rows:
        call_ended(session, row.user_id, now, wrap_up_seconds)
        released.append(row.user_id)
    if released:
        log.warning("operators left busy by a previous run released", operators=released, node=node)
    return released


@dataclass(frozen=True)
class OperatorView:
    """An operator as supervisors see them: who, where their phone is, and their presence now."""

    user_id: int
    username: str
    display_name: str | None
    sip_uri: str | None
    state: str
    since: dt.datetime | None
    wrap_up_until: dt.datetime | None
    call_id: int | None


def view(user: User, row: OperatorPresence | None) -> OperatorView:
    if row is None:
        return OperatorView(user.id, user.username, user.display_name, user.sip_uri, "offline", None, None, None)
    return OperatorView(user.id, user.username, user.display_name, user.sip_uri, row.state, row.since,
                        row.wrap_up_until, row.call_id)


def operators(session: Session, now: dt.datetime) -> list[OperatorView]:
    """Every active operator with their presence (never set: offline), by user name.

    Expired wrap-ups are ended first, so a reader never sees 'wrap_up' that is over."""
    expire_wrap_up(session, now)
    users = session.scalars(select(User).where(User.role == "operator", User.active.is_(True))
                            .order_by(User.username)).all()
    rows = {r.user_id: r for r in session.scalars(select(OperatorPresence)
                                                  .where(OperatorPresence.user_id.in_([u.id for u in users])))}
    return [view(u, rows.get(u.id)) for u in users]


def operator_state(session: Session, user: User, now: dt.datetime) -> OperatorView:
    expire_wrap_up(session, now)
    return view(user, get(session, user.id))


def set_operator_state(session: Session, user: User, state: str, now: dt.datetime) -> OperatorView:
    """What an operator (or a supervisor for them, through the CLI) chooses; only users with the operator role."""
    if user.role != "operator" or not user.active:
        raise PresenceError(f"{user.username} is not an active operator (role {user.role})")
    row = set_state(session, user.id, state, now)
    return view(user, row)
