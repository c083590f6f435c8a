"""Cases and their events. Nothing about a case changes without a CaseEvent."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from config.db import Base, UTCDateTime, utcnow


class Case(Base):
    __tablename__ = "case"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    channel: Mapped[str] = mapped_column(String(20))
    category: Mapped[str | None] = mapped_column(String(80))
    handling_form: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="draft", index=True)
    complainant_name: Mapped[str | None] = mapped_column(String(120))
    complainant_phone: Mapped[str | None] = mapped_column(String(40), index=True)
    complainant_unit: Mapped[str | None] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(400))
    content: Mapped[str] = mapped_column(Text, default="")
    caller_number: Mapped[str | None] = mapped_column(String(40), index=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    confidential: Mapped[bool] = mapped_column(Boolean, default=False)
    extracted: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What the pipeline found for the reviewer: phones, address hint, low-confidence words."""
    source_recording_id: Mapped[int | None] = mapped_column(Integer, index=True)
    source_transcript_id: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    events: Mapped[list[CaseEvent]] = relationship(back_populates="case", order_by="CaseEvent.id")

    __mapper_args__ = {"version_id_col": version}


class CaseEvent(Base):
    __tablename__ = "case_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(40))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    case: Mapped[Case] = relationship(back_populates="events")


class CaseCounter(Base):
    """Per-day sequence for public case numbers (20261122-0007), safe under concurrent writers."""

    __tablename__ = "case_counter"

    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last: Mapped[int] = mapped_column(Integer, default=0)
