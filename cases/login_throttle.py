"""Slowing down password guessing: failed logins counted per username and per client address.

After `free` failures for one key, each further failure locks that key for a time that
doubles from `lock_seconds` up to `lock_max_seconds`; while locked, every attempt is
refused before the password is even checked (a correct password too, or the lock would
only slow a guesser down when it guessed wrong). Failures older than `lock_max_seconds`
are forgotten.

Usernames are counted whether or not the account exists, so the answers never tell an
outsider which names are real. The state lives in the database, so several API nodes
share it and a restart does not reset it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Integer, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from config.db import Base, UTCDateTime


class LoginThrottle(Base):
    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    """"user:<normalised name>" or "addr:<client address>"."""
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class Policy:
    free: int
    lock_seconds: float
    lock_max_seconds: float


def user_key(normalised_username: str) -> str:
    return "user:" + normalised_username[:100]


def address_key(address: str | None) -> str:
    return "addr:" + (address or "unknown")[:100]


def retry_after(session: Session, keys: list[str], now: dt.datetime) -> float:
    """Seconds until every one of these keys may try again (0: go ahead)."""
    until = session.scalars(select(LoginThrottle.locked_until).where(LoginThrottle.key.in_(keys))).all()
    return max([(u - now).total_seconds() for u in until if u is not None] + [0.0])


def record_failure(session: Session, key: str, policy: Policy, now: dt.datetime) -> LoginThrottle:
    row = session.get(LoginThrottle, key, with_for_update=True)
    if row is None:
        row = LoginThrottle(key=key, failures=0, last_failure_at=now)
        session.add(row)
    elif (now - row.last_failure_at).total_seconds() > policy.lock_max_seconds:
        row.failures, row.locked_until = 0, None
    row.failures += 1
    row.last_failure_at = now
    over = row.failures - policy.free
    if over > 0:
        seconds = min(policy.lock_seconds * 2 ** min(over - 1, 32), policy.lock_max_seconds)
        row.locked_until = now + dt.timedelta(seconds=seconds)
    session.flush()
    return row


def clear(session: Session, key: str) -> None:
    """A successful login forgets the username's failures (not the address's: one valid
    account must not let a guesser on the same address reset its own counter)."""
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))
