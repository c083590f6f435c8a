"""Calls: one row per inbound or outbound call, written at answer and completed at the end."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from config.db import Base, UTCDateTime, utcnow


class Call(Base):
    __tablename__ = "call"

    id: Mapped[int] = mapped_column(primary_key=True)
    sip_call_id: Mapped[str] = mapped_column(String(255), index=True)
    direction: Mapped[str] = mapped_column(String(3), default="in")
    caller: Mapped[str | None] = mapped_column(String(80), index=True)
    called: Mapped[str | None] = mapped_column(String(80))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    disposition: Mapped[str | None] = mapped_column(String(20))
    """Inbound: voicemail, self_service, operator, callback, abandoned, rejected, failed. Outbound: the dial
    outcome, or campaign for an answered return-visit call."""
    end_reason: Mapped[str | None] = mapped_column(String(40))
    language: Mapped[str] = mapped_column(String(2), default="zh")
    open_decision: Mapped[str | None] = mapped_column(String(20))
    """Why the centre was open or closed for this call (hours, holiday, manual_closed, …)."""
    recording_id: Mapped[int | None] = mapped_column(Integer)
    record_stop: Mapped[str | None] = mapped_column(String(20))
    """What ended the message: max, silence, digit, hangup, shutdown."""
    message_seconds: Mapped[float | None] = mapped_column(Float)
    node: Mapped[str | None] = mapped_column(String(80))
    queue_entered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)
    """When the caller joined the operator queue (None: never queued). Queue statistics start here."""
    queue_wait_seconds: Mapped[float | None] = mapped_column(Float)
    """From joining the queue to an operator answering, or to leaving it (hang-up, key, timeout)."""
    queue_exit: Mapped[str | None] = mapped_column(String(20))
    """How the wait ended: operator, abandoned, voicemail_key, callback_key, timeout, shutdown."""
    operator_user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    operator_answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
