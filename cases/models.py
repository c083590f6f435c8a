"""Cases and their events. Nothing about a case changes without a CaseEvent."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from config.db import Base, UTCDateTime, only_on, utcnow


class Case(Base):
    __tablename__ = "case"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    channel: Mapped[str] = mapped_column(String(20))
    category: Mapped[str | None] = mapped_column(String(80), index=True)
    handling_form: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="draft")
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
    source_call_id: Mapped[int | None] = mapped_column(Integer, index=True)
    """The call an operator opened the case from (screen pop); its conversation recording, once
    stored, becomes source_recording_id."""

    # -- the handling loop (cases/lifecycle.py, cases/actions.py) -----------------------
    complexity: Mapped[str] = mapped_column(String(10), default="general")
    """general / complex: picks the reply deadline of the handling form."""
    no_call: Mapped[bool] = mapped_column(Boolean, default=False)
    """The reporter asked not to be called back: no contact deadline, no return-visit call."""
    unit: Mapped[str | None] = mapped_column(String(40))
    """Code of the responsible unit ([cases] units)."""
    assignee: Mapped[str | None] = mapped_column(String(80))
    key_supervision: Mapped[bool] = mapped_column(Boolean, default=False)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("case.id"), index=True)
    result: Mapped[str | None] = mapped_column(Text)
    """What the unit reports it did and found."""
    reply: Mapped[str | None] = mapped_column(Text)
    """What the caller was told."""
    satisfaction: Mapped[str | None] = mapped_column(String(24))
    """satisfied / basically_satisfied / not_satisfied, from the return visit."""
    accepted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    responded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """When the centre signed and routed it (dispatch, direct answer, reject or discard)."""
    contacted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    replied_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    sign_due: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    contact_due: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    reply_due: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    final_due: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    clock_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """Start of the contact/reply/final clocks: acceptance, or the reopening after a not-satisfied visit."""

    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, index=True)
    """Indexed for the "recently changed" list order (sort=-updated_at), read a page at a time."""

    events: Mapped[list[CaseEvent]] = relationship(
        back_populates="case", order_by="CaseEvent.id", foreign_keys="CaseEvent.case_id"
    )

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_case_category_received_at", "category", "received_at"),
        # Substring search (GET /cases?q= and ?caller=) on PostgreSQL: trigrams work for
        # Chinese text too (any UTF-8 locale) and serve (I)LIKE '%…%' of 3+ characters.
        *(only_on("postgresql", Index(f"ix_case_{c}_trgm", c, postgresql_using="gin",
                                      postgresql_ops={c: "gin_trgm_ops"}), extension="pg_trgm")
          for c in ("content", "caller_number", "complainant_phone")),
        # A unit's queue (every unit handler's list, supervisors filtering by unit) newest
        # first: walked backwards without sorting the unit's whole history.
        Index("ix_case_unit_received_at", "unit", "received_at"),
        # The same for the status and channel filters (and what a status alone needs). A plain
        # index on either makes SQLite, on a database never ANALYZEd (the service does not),
        # fetch and sort every case of that status or channel: 1.6 s for "closed" at 1M cases.
        Index("ix_case_status_received_at", "status", "received_at"),
        Index("ix_case_channel_received_at", "channel", "received_at"),
    )


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


class DeadlineAlert(Base):
    """One "deadline_near" / "overdue" alert per case, deadline, level and due time.

    The unique key makes the minute-by-minute scan idempotent even when two service nodes
    run it at once; a due time that moves (complexity changed, case reopened) alerts again.
    Kept apart from the case row so a scan never bumps the case version under an operator.
    """

    __tablename__ = "case_deadline_alert"
    __table_args__ = (UniqueConstraint("case_id", "deadline", "level", "due", name="uq_case_deadline_alert_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"), index=True)
    deadline: Mapped[str] = mapped_column(String(10))
    level: Mapped[str] = mapped_column(String(10))
    due: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PersonalDataView(Base):
    """Every unmasked view of a protected (confidential or anonymous) reporter's personal data."""

    __tablename__ = "personal_data_view"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"), index=True)
    viewer: Mapped[str] = mapped_column(String(80), index=True)
    role: Mapped[str] = mapped_column(String(20))
    fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    purpose: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
