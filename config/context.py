"""What a command handler gets: settings, and the database opened only when it asks.

Lives in config (not service) so each package's cli.py can use it without importing
the composition root.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.db import make_engine, require_current_schema, session_factory
from config.settings import Settings

if TYPE_CHECKING:
    from config.calendar import WorkCalendar
    from ivr.queue import Events

Handler = Callable[[argparse.Namespace, "Context"], int]


@dataclass
class Context:
    settings: Settings
    hooks: dict[str, list[Callable[..., None]]] = field(default_factory=dict)
    """Cross-package wiring set up by the composition root, e.g. 'recording_stored'."""
    health: dict[str, Callable[[], tuple[bool, dict[str, Any]]]] = field(default_factory=dict)
    """Live parts of this process report here for /healthz: name -> () -> (healthy, details).
    The IVR adds "sip" while it runs (ivr/sip/health.py); the API reads whatever is there."""

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database.url, echo=self.settings.database.echo)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        """Sessions on a database whose schema is current (else a DatabaseError naming the fix)."""
        require_current_schema(self.engine)
        return session_factory(self.engine)

    @cached_property
    def calendar(self) -> "WorkCalendar":
        """One calendar per process, so the unknown-year warning is given once."""
        from config.calendar import WorkCalendar

        return WorkCalendar(self.settings.calendar)

    @cached_property
    def queue_events(self) -> "Events":
        """The operator queue's screen-pop events, one object per process: the IVR publishes on
        it and the API streams it (both run in `hotline serve`). Here, not in either package,
        so neither has to import the other."""
        from ivr.queue import Events

        return Events()

    @cached_property
    def _clock_offset(self) -> dt.timedelta:
        start = self.settings.calendar.clock_start
        if start is None:
            return dt.timedelta(0)
        from config.logs import get_logger

        offset = start - dt.datetime.now(dt.UTC)
        get_logger("config.clock").warning("rehearsal clock: decisions use a shifted time", clock_start=start.isoformat(),
                                           offset_seconds=round(offset.total_seconds()))
        return offset

    def now(self) -> dt.datetime:
        """The instant that open/closed decisions use: the OS time, or the rehearsal clock
        (`[calendar] clock_start`) advancing from the moment this context first asked."""
        offset = self._clock_offset  # first: the first answer is then clock_start itself, not before it
        return dt.datetime.now(dt.UTC) + offset

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
