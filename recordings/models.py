"""Recording rows and their access log.

A recording row exists only once its file is durably in place (see store.py). Access
entries form a hash chain (see access.py); they deliberately have no foreign key to
``recording`` so that purging a recording under retention never has to touch the audit.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from config.db import Base, UTCDateTime, utcnow

KINDS = ("voicemail", "conversation", "campaign", "import")


class Recording(Base):
    __tablename__ = "recording"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int | None] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(20), default="voicemail")  # voicemail, conversation, campaign, import
    storage_key: Mapped[str] = mapped_column(String(255), unique=True)
    format: Mapped[str] = mapped_column(String(20), default="wav/pcm_s16le")
    sample_rate: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer, default=1)
    duration: Mapped[float] = mapped_column(Float)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    source_name: Mapped[str | None] = mapped_column(String(255))
    source_format: Mapped[str | None] = mapped_column(String(80))
    caller: Mapped[str | None] = mapped_column(String(40), index=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retention_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class RecordingAccess(Base):
    """One play, download, delete or export of a recording; chained by hash to the one before."""

    __tablename__ = "recording_access"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    """Position in the chain, 1, 2, 3, … without gaps (ids may have gaps: rolled-back inserts)."""
    recording_id: Mapped[int] = mapped_column(Integer, index=True)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(10))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    client: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(400))
    range: Mapped[str | None] = mapped_column(String(100))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class RecordingAccessHead(Base):
    """The chain's single head row (id 1): the lock appenders queue on, and the tail's fingerprint.

    Without it, deleting the newest entries would leave a chain that still verifies.
    """

    __tablename__ = "recording_access_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
