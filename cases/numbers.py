"""Public case numbers: ``YYYYMMDD-NNNN`` from a per-day counter in the centre's time zone.

The day is the local date (``[calendar] timezone``) of the instant given, and the
sequence comes from one atomic upsert on ``case_counter``::

    INSERT INTO case_counter (day, last) VALUES (:day, 1)
    ON CONFLICT (day) DO UPDATE SET last = case_counter.last + 1
    RETURNING last

On PostgreSQL the upsert takes the row lock of that day until the surrounding
transaction ends, so two concurrent writers get distinct numbers and a rolled-back
transaction gives its number back (no gaps, no duplicates). On SQLite the statement
takes the database write lock, which serialises writers the same way. The number is
therefore only as final as the transaction that drew it: call this inside the
transaction that inserts the case.

More than 9999 cases a day widen the sequence (``-10000``); numbers stay unique.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cases.models import CaseCounter
from config.db import utcnow


def case_day(at: dt.datetime, tz: ZoneInfo) -> str:
    if at.tzinfo is None:
        raise ValueError("naive datetime: pass an aware one")
    return at.astimezone(tz).strftime("%Y%m%d")


def format_number(day: str, seq: int) -> str:
    return f"{day}-{seq:04d}"


def next_number(session: Session, tz: ZoneInfo, at: dt.datetime | None = None) -> str:
    """Draw the next public number for the local day of ``at`` (default now)."""
    day = case_day(at or utcnow(), tz)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        ins = postgresql.insert(CaseCounter)
    elif dialect == "sqlite":
        ins = sqlite.insert(CaseCounter)
    else:  # pragma: no cover - only the two supported databases
        raise NotImplementedError(f"case numbers on {dialect}")
    stmt = (
        ins.values(day=day, last=1)
        .on_conflict_do_update(index_elements=[CaseCounter.day], set_={"last": CaseCounter.last + 1})
        .returning(CaseCounter.last)
    )
    seq = session.execute(stmt).scalar_one()
    return format_number(day, seq)
