"""Tables owned by campaigns: campaigns, their targets and attempts, do-not-call, follow-ups.

The attempt table is what makes dialling crash-safe: an attempt row is inserted and
committed *before* the number is dialled and completed after, and ``(target_id, number)``
is unique, so a second process (or the same one after a restart) can never place the same
attempt twice; an attempt found without an end after a crash is known to have been
(maybe) placed. :mod:`campaigns.runner` holds the rules built on this.

``apscheduler_jobs`` is APScheduler 3.x's own job-store table, declared here too (same
columns as ``SQLAlchemyJobStore`` builds) so that Alembic creates it with everything else,
``tests/test_migrations.py`` sees no stray table and the test fixtures truncate it;
``tests/test_campaign_scheduler.py`` checks that the two definitions stay the same.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    Unicode,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from config.db import Base, UTCDateTime, utcnow

# Campaign states (issue 7).
DRAFT, SCHEDULED, RUNNING, PAUSED, FINISHED, CANCELLED = "draft", "scheduled", "running", "paused", "finished", "cancelled"
CAMPAIGN_STATES = (DRAFT, SCHEDULED, RUNNING, PAUSED, FINISHED, CANCELLED)

# Target states.
PENDING, DIALING, DONE, FAILED, DROPPED = "pending", "dialing", "done", "failed", "dropped"
TARGET_STATES = (PENDING, DIALING, DONE, FAILED, DROPPED)

# Outcomes of one attempt; "interrupted" is an attempt the service died during.
OUTCOMES = ("answered", "busy", "no_answer", "rejected", "invalid_number", "failed", "interrupted")
RATINGS = {1: "satisfied", 2: "basically_satisfied", 3: "not_satisfied"}

JOBS_TABLE = "apscheduler_jobs"


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Campaign(Base):
    """One campaign: what to call, when, how often, and where it stands."""

    __tablename__ = "campaign"
    __table_args__ = (CheckConstraint(f"state IN ({_in(CAMPAIGN_STATES)})", name="state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    purpose: Mapped[str] = mapped_column(String(20), default="return_visit")
    """return_visit or callback (missed-call callback)."""
    state: Mapped[str] = mapped_column(String(12), default=DRAFT, index=True)
    selection: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """How targets were chosen (source, statuses, date range, category, unit, file name)."""
    windows: Mapped[list[str]] = mapped_column(JSON)
    days: Mapped[Any] = mapped_column(JSON)
    """"working_days", "every_day" or a list of weekday names."""
    timezone: Mapped[str] = mapped_column(String(64))
    max_attempts: Mapped[int] = mapped_column(Integer)
    retry_minutes: Mapped[int] = mapped_column(Integer)
    concurrency: Mapped[int] = mapped_column(Integer)
    caller_id: Mapped[str] = mapped_column(String(40))
    prompt_script: Mapped[str] = mapped_column(String(40))
    recurrence: Mapped[str | None] = mapped_column(String(120))
    """A crontab expression ("0 9 1 * *" monthly, "0 9 * * mon" weekly) in the campaign's zone, or None."""
    start_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """A scheduled campaign starts running at this instant (None: at once)."""
    last_run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """Upper bound of the last selection: a recurring run selects cases replied since then."""
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    targets: Mapped[list[CampaignTarget]] = relationship(back_populates="campaign", order_by="CampaignTarget.id")


class CampaignTarget(Base):
    """One person to call for one case (return visit) or one callback-list entry (missed-call callback)."""

    __tablename__ = "campaign_target"
    __table_args__ = (
        CheckConstraint(f"state IN ({_in(TARGET_STATES)})", name="state"),
        CheckConstraint("rating IS NULL OR rating IN (1, 2, 3)", name="rating"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("case.id", ondelete="SET NULL"), index=True)
    """None once the case was deleted; the number is kept for the record."""
    case_number: Mapped[str | None] = mapped_column(String(20))
    callback_id: Mapped[int | None] = mapped_column(ForeignKey("callback.id", ondelete="SET NULL"), index=True)
    """A missed-call callback campaign's target: the callback-list entry it rings back (cases/callbacks.py)."""
    phone: Mapped[str | None] = mapped_column(String(20), index=True)
    """E.164 (+86…); None only for a dropped target without a usable number."""
    state: Mapped[str] = mapped_column(String(10), default=PENDING)
    drop_reason: Mapped[str | None] = mapped_column(String(40))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Attempts placed so far (interrupted ones included)."""
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(20))
    """The last attempt's outcome."""
    rating: Mapped[int | None] = mapped_column(Integer)
    choice: Mapped[str | None] = mapped_column(String(12))
    """What the answered call became besides the survey (campaigns/transfer.py): "operator" (transferred:
    an operator talked with the callee), "message", "callback", "abandoned"; None when only the survey ran."""
    opted_out: Mapped[bool] = mapped_column(default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    run_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    """When the selection that added it ran (several per recurring campaign)."""
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    campaign: Mapped[Campaign] = relationship(back_populates="targets")
    attempt_rows: Mapped[list[CampaignAttempt]] = relationship(back_populates="target", order_by="CampaignAttempt.number")


# The due-target query of every tick.
Index("ix_campaign_target_due", CampaignTarget.campaign_id, CampaignTarget.state, CampaignTarget.next_attempt_at)


class CampaignAttempt(Base):
    """One dial: written before it (started_at), completed after it (ended_at, outcome)."""

    __tablename__ = "campaign_attempt"
    __table_args__ = (UniqueConstraint("target_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("campaign_target.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    """1, 2, 3…: the unique pair (target, number) forbids placing an attempt twice."""
    phone: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(20))
    sip_status: Mapped[int | None] = mapped_column(Integer)
    rating: Mapped[int | None] = mapped_column(Integer)
    keys: Mapped[str | None] = mapped_column(String(40))
    """Every key the callee pressed, for disputes about a rating."""
    choice: Mapped[str | None] = mapped_column(String(12))
    """As the target's, for this attempt."""
    comment_seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    node: Mapped[str | None] = mapped_column(String(120))
    call_id: Mapped[int | None] = mapped_column(Integer, index=True)
    """The Call row of this dial (ivr/dialer.py); its recording_id leads to the callee's comment."""

    target: Mapped[CampaignTarget] = relationship(back_populates="attempt_rows")


class DoNotCall(Base):
    """A number nobody may call in any campaign (asked by the person, or entered by staff)."""

    __tablename__ = "do_not_call"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    """E.164, so '138 0013 8000' and '+86 13800138000' are one entry."""
    reason: Mapped[str] = mapped_column(String(200))
    added_by: Mapped[str] = mapped_column(String(80))
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class FollowUp(Base):
    """A task for staff: reach by SMS or letter someone the campaign could not reach by phone."""

    __tablename__ = "campaign_follow_up"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("campaign_target.id", ondelete="CASCADE"), unique=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("case.id", ondelete="SET NULL"))
    case_number: Mapped[str | None] = mapped_column(String(20))
    phone: Mapped[str | None] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    done_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    done_by: Mapped[str | None] = mapped_column(String(80))


scheduler_jobs = Table(
    JOBS_TABLE,
    Base.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)
