"""Tables owned by config: the manual open/closed override of the working-time calendar."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from config.db import Base, UTCDateTime, utcnow


class HoursOverride(Base):
    """One decision by a person to force the centre open or closed (or back to the schedule).

    Rows are only ever inserted: the latest row wins, and the table is the log of who set
    what and when (supervision asks exactly that after a drill or an outage).
    """

    __tablename__ = "hours_override"
    __table_args__ = (CheckConstraint("mode IN ('open', 'closed', 'auto')", name="mode"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mode: Mapped[str] = mapped_column(String(10))
    until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """When the override stops applying (UTC); None: until someone sets another mode."""
    set_by: Mapped[str] = mapped_column(String(120))
    set_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    note: Mapped[str | None] = mapped_column(Text)
