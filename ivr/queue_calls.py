"""What the queue leaves in the Call rows, and the queue statistics computed from them.

At the end of a queued call the wait is written to its Call row (entered, seconds, how it
ended, which operator answered); a caller who hung up while queued is an abandoned call
and goes on the callback list. Outbound calls queue too (a campaign callee who asked for an
operator): the number to ring back is then the one we dialled. The statistics are plain
queries over Call rows, so they cover every IVR node sharing the database and survive restarts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from cases import callbacks
from config.logs import get_logger
from ivr.call_rows import citizen_number
from ivr.models import Call
from ivr.waiting import WaitOutcome

log = get_logger("ivr.queue_calls")

SERVICE_LEVEL_SECONDS = 15.0
"""'Answered within 15 s' (issue 5): the usual hotline service-level target."""


def record_wait(session: Session, row: Call, outcome: WaitOutcome) -> callbacks.Callback | None:
    """Write the queue part of a finished call; an abandoned caller is put on the callback list.

    Returns the callback entry made for an abandoned caller (None when the number cannot be
    called back: withheld, 'anonymous')."""
    if outcome.entered_at is None:
        return None  # nobody was logged in: the caller never queued
    row.queue_entered_at = outcome.entered_at
    row.queue_wait_seconds = outcome.waited
    row.queue_exit = outcome.exit
    if outcome.connection is not None:
        row.operator_user_id = outcome.connection.operator.user_id
        row.operator_answered_at = outcome.connection.answered_at
    if outcome.exit != "abandoned":
        return None
    row.disposition = "abandoned"
    number = citizen_number(row)
    if callbacks.dialable(number) is None:
        log.info("abandoned call without a number to call back", call=row.id)
        return None
    return callbacks.add(session, number or "", "abandoned", call_id=row.id)


@dataclass(frozen=True)
class QueueStats:
    queued: int
    """Callers who joined the queue in the period."""
    answered: int
    answered_within: int
    """Answered by an operator within SERVICE_LEVEL_SECONDS of joining."""
    abandoned: int
    """Hung up while waiting."""
    average_wait_seconds: float | None
    """Over every queued caller, however the wait ended (None without callers)."""
    average_answer_seconds: float | None
    """Over answered callers only (the 'average speed of answer')."""

    @property
    def service_level(self) -> float | None:
        """Share of queued callers answered within SERVICE_LEVEL_SECONDS."""
        return self.answered_within / self.queued if self.queued else None

    @property
    def abandonment_rate(self) -> float | None:
        return self.abandoned / self.queued if self.queued else None


def queue_stats(session: Session, start: dt.datetime, end: dt.datetime,
                within: float = SERVICE_LEVEL_SECONDS) -> QueueStats:
    """Statistics of the callers who joined the queue in [start, end).

    Calls still waiting (no wait recorded yet) are left out: their outcome is not known.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("naive datetime: pass aware ones (times are stored in UTC)")
    rows = session.execute(
        select(Call.queue_wait_seconds, Call.queue_exit, Call.operator_answered_at)
        .where(Call.queue_entered_at >= start, Call.queue_entered_at < end, Call.queue_wait_seconds.is_not(None))
    ).all()
    waits = [float(r.queue_wait_seconds) for r in rows]
    answered = [float(r.queue_wait_seconds) for r in rows if r.operator_answered_at is not None]
    return QueueStats(
        queued=len(rows),
        answered=len(answered),
        answered_within=sum(1 for w in answered if w <= within),
        abandoned=sum(1 for r in rows if r.queue_exit == "abandoned"),
        average_wait_seconds=sum(waits) / len(waits) if waits else None,
        average_answer_seconds=sum(answered) / len(answered) if answered else None,
    )
