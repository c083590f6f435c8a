"""One 20 ms media clock per process, shared by every call's RTP session.

Why one ticker and not one task per call: ../shared/MEDIA.md measured both on this kind of
machine; a single ticker paces 200 streams at p99 1.4-1.9 ms where one task per call costs
more CPU and breaks down earlier. Why absolute deadlines: pyVoIP sleeps 20 ms after each
send, so every bit of work and scheduling delay adds up (0.6 % slow at one call, PYVOIP.md
item 8). Here deadline n is `start + n * period` on `loop.time()`, so lateness never
accumulates.

Catch-up policy (decided here): when the loop wakes late, every period that is already due
fires at once (each client's `tick()` runs once per due period, so a 25 ms wake-up sends
two packets back to back: the receiver's jitter buffer absorbs that, and both the RTP
timestamps and the recording stay in step with wall time). Nothing more is burst than the
periods actually due. A stall longer than `max_catchup` periods (default 5 = 100 ms: the
process was starved, e.g. swapped or stopped in a debugger) is not replayed as a burst of
stale packets: the excess periods are skipped, counted in `stats.skipped` and logged, and
the clock re-anchors. Early wake-ups of up to 1 ms (asyncio treats timers within its clock
resolution as due) count as on time instead of spinning.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

_LOGGER = logging.getLogger(__name__)

PERIOD = 0.020
EARLY_TOLERANCE = 0.001
"""Wake-ups this much before a deadline fire it: asyncio's timers are ~1 ms coarse."""


class Tickable(Protocol):
    """Anything the ticker drives: one call per 20 ms period, fast and non-blocking."""

    def tick(self) -> None: ...


@dataclass
class TickerStats:
    ticks: int = 0
    """Periods fired (each fires every registered client once)."""
    late: int = 0
    """Wake-ups that found more than one period due (catch-up happened)."""
    skipped: int = 0
    """Periods dropped after a stall longer than `max_catchup`."""
    max_lateness: float = 0.0
    """Worst delay seen between a deadline and the wake-up that fired it, seconds."""
    errors: int = 0
    """Clients removed because their tick() raised."""


class Ticker:
    """Fire `tick()` on every registered client every `period` seconds, on absolute deadlines.

    `start()`/`stop()` own one asyncio task. A client whose `tick()` raises is logged and
    unregistered, so one broken call cannot stop the media of all the others.
    """

    def __init__(self, period: float = PERIOD, *, max_catchup: int = 5) -> None:
        if period <= 0:
            raise ValueError(f"period must be positive, not {period}")
        if max_catchup < 1:
            raise ValueError(f"max_catchup must be at least 1, not {max_catchup}")
        self.period = period
        self.max_catchup = max_catchup
        self.stats = TickerStats()
        self._clients: dict[int, Tickable] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def __len__(self) -> int:
        return len(self._clients)

    def register(self, client: Tickable) -> None:
        """Start ticking `client` from the next period (idempotent)."""
        self._clients[id(client)] = client

    def unregister(self, client: Tickable) -> None:
        """Stop ticking `client` (idempotent; safe from inside a tick)."""
        self._clients.pop(id(client), None)

    async def start(self) -> None:
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="media-ticker")

    async def stop(self) -> None:
        """Cancel the clock task and wait for it; never hangs, never swallows our own cancellation."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():  # pragma: no cover - the clock task cannot be un-cancelled
                raise
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    def fire(self) -> None:
        """Run one period: every client's tick() once. Public so tests can drive sessions by hand."""
        self.stats.ticks += 1
        for key, client in list(self._clients.items()):
            try:
                client.tick()
            except Exception:
                self.stats.errors += 1
                self._clients.pop(key, None)
                _LOGGER.exception("media client %r failed in tick(); removed from the clock", client)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.period
        deadline = loop.time() + period
        while True:
            delay = deadline - loop.time()
            if delay > EARLY_TOLERANCE:
                await asyncio.sleep(delay)
            now = loop.time()
            if now < deadline - EARLY_TOLERANCE:
                continue
            lateness = now - deadline
            if lateness > self.stats.max_lateness:
                self.stats.max_lateness = lateness
            due = 1 + max(0, int(lateness // period))
            if due > self.max_catchup:
                skip = due - self.max_catchup
                self.stats.skipped += skip
                deadline += skip * period
                due = self.max_catchup
                _LOGGER.warning("media clock stalled %.0f ms; skipped %d periods", lateness * 1000, skip)
            if due > 1:
                self.stats.late += 1
            for _ in range(due):
                self.fire()
                deadline += period
