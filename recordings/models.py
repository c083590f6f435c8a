"""Recording rows. A row exists only once its file is durably in place (see store.py)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from config.db import Base, UTCDateTime, utcnow


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
