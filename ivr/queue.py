"""The operator queue of one IVR node: waiting callers, offering them to operators, screen-pop events.

What it decides: who is offered to whom. Callers are served first come, first served; each
free operator is offered the longest-waiting caller not already being offered. With
``longest_idle`` one operator rings at a time (the one whose last call ended earliest), with
``ring_all`` every free operator rings and the first to answer takes the call; the others'
ringing is cancelled, and one who answered in the same instant gets hung up (BYE). An
operator who declines or does not answer within ``ring_timeout_seconds`` is not rung again
for that caller.

What it does not do: SIP or media. Ringing an operator is the injected ``ring`` callable
(at merge: the outbound dialer, answering with a leg the media bridge connects), and
presence is behind :class:`Roster` (the database one is :class:`PresenceRoster`). Both can
be faked, which is how the logic is tested.

Everything here runs on the event loop; the only awaits between checking and changing
the state of a waiting caller are roster calls, and each is re-checked after.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from config.db import transaction, utcnow
from config.logs import get_logger
from config.settings import QueueSettings
from ivr import presence

log = get_logger("ivr.queue")

POLL_SECONDS = 1.0
"""How often the queue looks for operators who became free without telling this process
(presence set through the API of another process, wrap-up over)."""


@dataclass(frozen=True)
class Operator:
    user_id: int


class Leg(Protocol):
    """An operator's answered call, as far as the queue needs it."""

    async def hangup(self) -> None: ...


Ring = Callable[[Operator, "Waiting"], Awaitable["Leg | None"]]
"""Ring an operator for this caller: their answered leg, or None when they decline. Cancelled
when the ring times out, the caller leaves or another operator answers (must CANCEL the INVITE)."""


class Roster(Protocol):
    async def available(self) -> list[Operator]:
        """Free operators, the one to ring first first."""

    async def logged_in(self) -> int:
        """Operators at work (any state but offline)."""

    async def claim(self, operator: Operator, call_id: int | None) -> bool:
        """available → busy; False if they are not available any more."""

    async def release(self, operator: Operator, *, wrap_up: bool = True) -> None:
        """busy → wrap-up (or available) after the call."""


@dataclass(frozen=True)
class QueueEvent:
    """For the operator's screen pop (streamed as server-sent events by the API)."""

    kind: str
    """ringing, connected, ended."""
    operator_id: int
    caller: str | None
    call_id: int | None
    reason: str | None = None
    """For 'ended': no_answer, declined, failed, answered_elsewhere, caller_left, not_available, hangup."""
    at: dt.datetime = field(default_factory=utcnow)


class Events:
    """In-process publish/subscribe. A slow subscriber loses its oldest events, never blocks the queue."""

    def __init__(self, backlog: int = 100) -> None:
        self.backlog = backlog
        self._subscribers: set[asyncio.Queue[QueueEvent]] = set()

    def publish(self, event: QueueEvent) -> None:
        for q in self._subscribers:
            if q.full():
                q.get_nowait()
            q.put_nowait(event)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[QueueEvent]]:
        q: asyncio.Queue[QueueEvent] = asyncio.Queue(self.backlog)
        self._subscribers.add(q)
        try:
            yield q
        finally:
            self._subscribers.discard(q)


@dataclass(frozen=True)
class Connection:
    operator: Operator
    leg: Leg
    waited: float
    """Seconds from joining the queue to the operator answering."""
    answered_at: dt.datetime


@dataclass(eq=False)
class Waiting:
    """One caller in the queue."""

    caller: str | None
    call_id: int | None
    entered: float
    """Loop time of joining (for waits and deadlines)."""
    entered_at: dt.datetime
    tried: set[int] = field(default_factory=set)
    """Operators who declined or did not answer: not rung again for this caller."""
    connection: asyncio.Future[Connection] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    exit: str | None = None
    """Why the caller left without an operator (abandoned, voicemail_key, callback_key, timeout, shutdown)."""
    offering: bool = False


class CallQueue:
    def __init__(self, roster: Roster, ring: Ring, settings: QueueSettings, *, events: Events | None = None,
                 poll_seconds: float = POLL_SECONDS) -> None:
        self.roster = roster
        self.ring = ring
        self.settings = settings
        self.events = events or Events()
        self.poll_seconds = poll_seconds
        self._waiting: list[Waiting] = []
        self._ringing: set[int] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._offers: set[asyncio.Task[None]] = set()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="call-queue")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._offers) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    def wake(self) -> None:
        """Look for operators now (a caller joined, a ring ended, presence changed)."""
        self._wake.set()

    # -- what the waiting flow uses -----------------------------------------------------

    async def logged_in(self) -> int:
        return await self.roster.logged_in()

    def join(self, caller: str | None, call_id: int | None, *, again: Waiting | None = None) -> Waiting:
        """Queue a caller at the back; or, ``again``, one whose operator left before a word was said:
        back at the front, on the first wait's clock (max wait, statistics), that operator skipped."""
        if again is None:
            w = Waiting(caller, call_id, asyncio.get_running_loop().time(), utcnow())
            self._waiting.append(w)
        else:
            left = again.connection.result().operator.user_id if again.connection.done() else None
            w = Waiting(caller, call_id, again.entered, again.entered_at,
                        tried=again.tried | ({left} if left is not None else set()))
            self._waiting.insert(0, w)
        log.info("caller queued", call_id=call_id, position=self._waiting.index(w) + 1, again=again is not None)
        self.wake()
        return w

    def position(self, w: Waiting) -> int | None:
        """1 for the caller served next; None once connected or gone."""
        try:
            return self._waiting.index(w) + 1
        except ValueError:
            return None

    def __len__(self) -> int:
        return len(self._waiting)

    def leave(self, w: Waiting, reason: str) -> bool:
        """The caller leaves without an operator. False when an operator has already answered:
        then the caller is connected and must be bridged (a human beats a voicemail)."""
        if w.connection.done():
            return False
        if w.exit is None:
            w.exit = reason
            with contextlib.suppress(ValueError):
                self._waiting.remove(w)
            w.gone.set()
            log.info("caller left the queue", call_id=w.call_id, reason=reason)
            self.wake()
        return True

    async def finished(self, w: Waiting, conn: Connection) -> None:
        """The conversation is over: the operator goes to wrap-up, the screen pop closes."""
        await self.roster.release(conn.operator)
        self.events.publish(QueueEvent("ended", conn.operator.user_id, w.caller, w.call_id, "hangup"))
        self.wake()

    # -- dispatching --------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._pump()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a database hiccup must not end the queue
                log.exception("queue dispatch failed; retrying")
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives as
            # the wake-up completes, and stop() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()

    async def _pump(self) -> None:
        if not any(not w.offering for w in self._waiting):
            return
        free = [op for op in await self.roster.available() if op.user_id not in self._ringing]
        for w in list(self._waiting):
            if not free:
                return
            if w.offering or w.gone.is_set() or w.connection.done():
                continue
            candidates = [op for op in free if op.user_id not in w.tried]
            if not candidates:
                continue
            chosen = candidates if self.settings.strategy == "ring_all" else candidates[:1]
            for op in chosen:
                free.remove(op)
                self._ringing.add(op.user_id)
            w.offering = True
            task = asyncio.create_task(self._offer(w, chosen))
            self._offers.add(task)
            task.add_done_callback(self._offers.discard)

    async def _offer(self, w: Waiting, ops: list[Operator]) -> None:
        try:
            await self._ring(w, ops)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one failed offer must not leave operators marked ringing
            log.exception("offering a caller failed", call_id=w.call_id)
        finally:
            w.offering = False
            for op in ops:
                self._ringing.discard(op.user_id)
            self.wake()

    async def _ring_one(self, w: Waiting, op: Operator) -> tuple[Leg | None, str]:
        try:
            async with asyncio.timeout(self.settings.ring_timeout_seconds):
                leg = await self.ring(op, w)
        except TimeoutError:
            return None, "no_answer"
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a dialer error is one operator not reached
            log.exception("ringing an operator failed", operator=op.user_id, call_id=w.call_id)
            return None, "failed"
        return (leg, "answered") if leg is not None else (None, "declined")

    async def _ring(self, w: Waiting, ops: list[Operator]) -> None:
        rings = {asyncio.create_task(self._ring_one(w, op)): op for op in ops}
        for op in ops:
            self.events.publish(QueueEvent("ringing", op.user_id, w.caller, w.call_id))
        gone = asyncio.ensure_future(w.gone.wait())
        pending: set[asyncio.Future[object]] = set(rings)
        connected = False
        try:
            while pending and not connected and not gone.done():
                done, pending = await asyncio.wait(pending | {gone}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(gone)
                for task in done:
                    if task is gone:
                        continue
                    op = rings[task]  # type: ignore[index]
                    leg, reason = task.result()  # type: ignore[misc]
                    if leg is None:
                        w.tried.add(op.user_id)
                        self._ended(w, op, reason)
                    elif connected:
                        await self._drop(w, op, leg, "answered_elsewhere")
                    else:
                        connected = await self._connect(w, op, leg)
        finally:
            gone.cancel()
            for task in pending:
                task.cancel()
            # A ring cancelled in the instant its operator answered still hands back the leg.
            results = await asyncio.gather(*pending, return_exceptions=True)
            for task, res in zip(pending, results, strict=True):
                op = rings[task]  # type: ignore[index]
                why = "answered_elsewhere" if connected else "caller_left"
                if isinstance(res, tuple) and res[0] is not None:
                    await self._drop(w, op, res[0], why)
                else:
                    self._ended(w, op, why)

    async def _connect(self, w: Waiting, op: Operator, leg: Leg) -> bool:
        if w.gone.is_set():
            await self._drop(w, op, leg, "caller_left")
            return False
        if not await self.roster.claim(op, w.call_id):
            w.tried.add(op.user_id)
            await self._drop(w, op, leg, "not_available")
            return False
        if w.gone.is_set():  # the caller left while the claim was being written
            await self.roster.release(op, wrap_up=False)
            await self._drop(w, op, leg, "caller_left")
            return False
        loop = asyncio.get_running_loop()
        conn = Connection(op, leg, loop.time() - w.entered, utcnow())
        with contextlib.suppress(ValueError):
            self._waiting.remove(w)
        w.connection.set_result(conn)
        self.events.publish(QueueEvent("connected", op.user_id, w.caller, w.call_id))
        log.info("caller connected", call_id=w.call_id, operator=op.user_id, waited=round(conn.waited, 1))
        return True

    async def _drop(self, w: Waiting, op: Operator, leg: Leg, reason: str) -> None:
        try:
            await leg.hangup()
        except Exception:  # noqa: BLE001 - the leg may already be gone; the operator still needs the event
            log.exception("hanging up an operator leg failed", operator=op.user_id)
        self._ended(w, op, reason)

    def _ended(self, w: Waiting, op: Operator, reason: str) -> None:
        self.events.publish(QueueEvent("ended", op.user_id, w.caller, w.call_id, reason))


class PresenceRoster:
    """The roster over the presence table; database work in threads off the event loop."""

    def __init__(self, sessions: sessionmaker[Session], settings: QueueSettings, node: str | None = None,
                 now: Callable[[], dt.datetime] = utcnow) -> None:
        self.sessions = sessions
        self.settings = settings
        self.node = node
        self.now = now

    async def available(self) -> list[Operator]:
        def run() -> list[Operator]:
            with transaction(self.sessions) as s:
                return [Operator(i.user_id) for i in presence.available(s, self.now())]

        return await asyncio.to_thread(run)

    async def logged_in(self) -> int:
        def run() -> int:
            with self.sessions() as s:
                return presence.logged_in_count(s)

        return await asyncio.to_thread(run)

    async def claim(self, operator: Operator, call_id: int | None) -> bool:
        def run() -> bool:
            with transaction(self.sessions) as s:
                return presence.claim(s, operator.user_id, self.now(), call_id=call_id, node=self.node)

        return await asyncio.to_thread(run)

    async def release(self, operator: Operator, *, wrap_up: bool = True) -> None:
        seconds = self.settings.wrap_up_seconds if wrap_up else 0.0

        def run() -> None:
            with transaction(self.sessions) as s:
                presence.call_ended(s, operator.user_id, self.now(), seconds)

        await asyncio.to_thread(run)
