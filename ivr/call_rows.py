"""The Call row of each call, both directions: created when the call starts, stamped when answered, closed at the end.

Inbound calls (ivr/service.py) and outbound ones (ivr/dialer.py) write the same table the
same way, so the call list and reports read one shape. Plain functions on a session factory,
called through asyncio.to_thread by the async callers (the media clock must not wait on a disk).
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from config.db import transaction, utcnow
from ivr.models import Call


def create_call_row(sessions: sessionmaker[Session], *, sip_call_id: str, direction: str, caller: str | None,
                    called: str | None, language: str, node: str) -> Call:
    with transaction(sessions) as s:
        row = Call(sip_call_id=sip_call_id, direction=direction, caller=caller, called=called,
                   started_at=utcnow(), language=language, node=node)
        s.add(row)
        s.flush()
        return row


def citizen_number(row: Call) -> str | None:
    """The citizen's number on a call of either direction: who rang us, or whom we rang.

    What a recording is filed under, what an operator's phone shows and what the callback list
    gets when they hang up in the queue (an outbound row's caller is the centre's own number)."""
    return row.called if row.direction == "out" else row.caller


def mark_answered(sessions: sessionmaker[Session], call_id: int, disposition: str | None = None) -> None:
    with transaction(sessions) as s:
        row = s.get(Call, call_id)
        if row is not None:
            row.answered_at = utcnow()
            if disposition is not None:
                row.disposition = disposition


def close_call_row(sessions: sessionmaker[Session], call_id: int, *, disposition: str | None,
                   end_reason: str | None) -> None:
    """End time, why it ended and how it went; a disposition already set (by a flow) is kept when None is given."""
    with transaction(sessions) as s:
        row = s.get(Call, call_id)
        if row is None:
            return
        row.ended_at = utcnow()
        row.end_reason = end_reason
        if disposition is not None:
            row.disposition = disposition
