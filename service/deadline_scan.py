"""The minute-by-minute deadline scan that `hotline serve` runs beside the API.

cases.deadlines.scan_deadlines is idempotent and safe on several nodes at once (its alert
rows decide who writes each event), so every API node may run this loop; no leader is
needed. "Now" is ctx.now(): with a rehearsal clock ([calendar] clock_start) the alerts
follow the rehearsed time like every other decision. A failed pass (database away) is
logged and the loop goes on; the next pass catches up, since a scan looks at the state,
not at what happened since the last one.
"""

from __future__ import annotations

import asyncio

from cases.deadlines import scan_deadlines
from config.context import Context
from config.db import transaction
from config.logs import get_logger

log = get_logger("service.deadline_scan")
INTERVAL = 60.0


def scan_once(ctx: Context) -> int:
    """One pass; the number of alert events written."""
    with transaction(ctx.sessions) as s:
        events = scan_deadlines(s, ctx.calendar, ctx.now(), near_fraction=ctx.settings.cases.deadline_near_fraction)
        return len(events)


async def scan_periodically(ctx: Context, stop: asyncio.Event, interval: float = INTERVAL) -> None:
    """Scan now and then every ``interval`` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            written = await asyncio.to_thread(scan_once, ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("deadline scan failed; trying again at the next interval")
        else:
            if written:
                log.info("deadline alerts", events=written)
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass
