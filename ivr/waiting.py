"""The caller's side of the queue: hold music, position announcements, keys 1 and 2, time limits.

Runs after the greeting when the centre is open. Nobody logged in → straight out (the flow
goes to voicemail). Otherwise the caller joins the queue, hears their position at once and
every ``announce_seconds``, hold music in between, and may press 1 (leave a message now) or
2 (be called back: the number is confirmed on the keypad, the callback is booked, the call
ends politely). Other keys are ignored. After ``max_wait_seconds`` the caller goes to
voicemail. An operator answering stops whatever is playing at once.

If an operator answers in the same moment the caller presses a key, the operator wins: a
person on the line is better than a message (see :meth:`CallQueue.leave`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from cases.callbacks import dialable
from config.logs import get_logger
from config.settings import QueueSettings
from ivr.prompts import MAX_COUNT, digit_keys
from ivr.queue import CallQueue, Connection, Waiting

if TYPE_CHECKING:
    from ivr.flows import CallPort

log = get_logger("ivr.waiting")
T = TypeVar("T")

NUMBER_DIGIT_TIMEOUT = 8.0
"""Seconds to wait for each next digit while the caller keys a callback number."""
NUMBER_TRIES = 2


@dataclass
class WaitDeps:
    queue: CallQueue
    settings: QueueSettings
    caller: str | None
    """The caller's number as presented (may be absent or 'anonymous')."""
    call_id: int | None
    request_callback: Callable[[str], Awaitable[None]]
    """Book a callback to this (valid) number; returns once it is stored, before the caller is told."""
    talk: Callable[[WaitOutcome], Awaitable[bool | None]]
    """Bridge the caller to the operator who answered (`outcome.connection.leg`) until either side
    hangs up (ivr/conversation.py). False: the operator hung up before the conversation began,
    and the caller queues again."""


@dataclass
class WaitOutcome:
    exit: str
    """operator, abandoned, voicemail_key, callback, timeout, no_operators, shutdown."""
    entered_at: dt.datetime | None = None
    waited: float | None = None
    """Seconds in the queue until an operator answered or the caller left it."""
    connection: Connection | None = None
    waiting: Waiting | None = None
    callback_phone: str | None = None
    """Set when key 2 booked a callback; None after key 2 means no usable number was given."""


def position_keys(position: int) -> list[str]:
    """'You are number N in line' as segments; past MAX_COUNT the caller hears 'more than …'."""
    if 1 <= position <= MAX_COUNT:
        return ["queue_position", f"count_{position}", "queue_position_end"]
    return ["queue_position_long"]


async def _unless_connected(aw: Awaitable[T], w: Waiting) -> T | None:
    """Run a prompt or the music, stopping it the moment an operator answers."""
    task = asyncio.ensure_future(aw)
    try:
        await asyncio.wait({task, w.connection}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()


async def wait_in_queue(call: CallPort, deps: WaitDeps, *, again: Waiting | None = None) -> WaitOutcome:
    """Wait for an operator. ``again``: the caller's earlier wait, whose operator hung up during the
    consent notice; the caller is not sent to the back, and their max wait is not started over."""
    queue, settings = deps.queue, deps.settings
    if await queue.logged_in() == 0:
        return WaitOutcome("no_operators")
    loop = asyncio.get_running_loop()
    w = queue.join(deps.caller, deps.call_id, again=again)
    outcome = WaitOutcome("abandoned", entered_at=w.entered_at, waiting=w)
    deadline = w.entered + settings.max_wait_seconds
    next_announce = w.entered
    try:
        while True:
            if w.connection.done():
                break
            if call.ended:
                if queue.leave(w, "abandoned"):
                    outcome.exit = "abandoned"
                    return outcome
                continue  # connected in the same instant; the bridge sees the caller gone
            now = loop.time()
            if now >= deadline:
                if queue.leave(w, "timeout"):
                    outcome.exit = "timeout"
                    return outcome
                continue
            if now >= next_announce:
                next_announce = now + settings.announce_seconds
                position = queue.position(w) or 1
                log.info("position announced", call_id=deps.call_id, position=position)
                keys = [*position_keys(position), "queue_options"]
                key = await _unless_connected(call.play(keys, interrupt=True), w)
            else:
                key = await _unless_connected(call.music(min(next_announce, deadline) - now), w)
            if key is None or w.connection.done() or call.ended:
                continue
            digit = await call.collect(max_digits=1, timeout=0.5, terminator=None)
            if digit == "1":
                if queue.leave(w, "voicemail_key"):
                    outcome.exit = "voicemail_key"
                    return outcome
            elif digit == "2":
                if queue.leave(w, "callback_key"):
                    outcome.exit = "callback"
                    outcome.callback_phone = await _book_callback(call, deps)
                    return outcome
            elif digit:
                log.info("key ignored while queued", call_id=deps.call_id, key=digit[:1])
        outcome.exit = "operator"
        outcome.connection = w.connection.result()
        return outcome
    except asyncio.CancelledError:
        if queue.leave(w, "shutdown"):
            outcome.exit = "shutdown"
        raise
    finally:
        end = loop.time()
        if outcome.connection is not None:
            outcome.waited = outcome.connection.waited
        else:
            outcome.waited = end - w.entered
            if w.connection.done() and not w.connection.cancelled() and outcome.exit != "operator":
                # Connected just as the flow was cancelled: the operator is not left on a dead line.
                conn = w.connection.result()
                with contextlib.suppress(Exception):
                    await conn.leg.hangup()
                await queue.finished(w, conn)


async def _book_callback(call: CallPort, deps: WaitDeps) -> str | None:
    """Confirm the caller's number (1) or take another one keyed with '#'; book it. None if no
    usable number came (the flow then offers voicemail rather than losing the caller)."""
    presented = dialable(deps.caller)
    for _ in range(NUMBER_TRIES):
        if presented:
            keys = ["callback_confirm", *digit_keys(presented), "callback_confirm_keys"]
        else:
            keys = ["callback_enter_number"]
        await call.play(keys, interrupt=True)
        typed = await call.collect(max_digits=20, timeout=NUMBER_DIGIT_TIMEOUT, terminator="#")
        if call.ended:
            return None
        chosen = presented if (typed == "1" and presented) else (dialable(typed) if len(typed) > 1 else None)
        if chosen:
            await deps.request_callback(chosen)
            log.info("callback requested", call_id=deps.call_id, confirmed=chosen == presented)
            await call.play(["callback_booked"])
            return chosen
        await call.play(["invalid_input"])
    return None
