"""The inbound call flow: greeting and menu, open/closed routing, operator queue, voicemail, case status.

The flow talks to a call only through `CallPort` (play prompt segments, collect digits,
record, hang up), so it runs the same against the real SIP/RTP call and against a fake in
unit tests. Decisions that need the database (open or closed, case lookup) come in as
plain callables, so this module holds the dialogue and nothing else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from config.overrides import Decision
from config.settings import VoicemailSettings
from ivr.waiting import WaitDeps, WaitOutcome, wait_in_queue

MENU_TIMEOUT = 6.0
"""Seconds after the menu before a caller who presses nothing is taken to the report path."""
CASE_DIGITS_TIMEOUT = 10.0
MAX_MENU_TRIES = 3
CLOSED_PROMPT = {"holiday": "holiday", "manual_closed": "closed_temporarily"}
"""Closed for these reasons gets its own notice; every other closed reason says 'closed'."""


@dataclass
class RecordOutcome:
    reason: str
    """max, silence, digit, hangup."""
    seconds: float
    heard_speech: bool


class CallPort(Protocol):
    language: str

    @property
    def ended(self) -> bool: ...

    async def play(self, keys: Sequence[str], *, interrupt: bool = False) -> str | None:
        """Play prompt segments in order. With interrupt, a key already typed or typed while
        playing stops it at once; the key stays queued for `collect`, and is returned."""

    async def collect(self, *, max_digits: int, timeout: float, terminator: str | None = "#") -> str:
        """Digits from the queue (also those typed during a prompt), without the terminator;
        `timeout` is the wait for each next digit."""

    async def music(self, seconds: float) -> str | None:
        """Loop the hold music for up to `seconds`. A key typed (before or during) stops it at
        once; it stays queued for `collect` and is returned."""

    async def tone(self) -> None: ...

    async def record(self, settings: VoicemailSettings) -> RecordOutcome: ...

    async def hangup(self) -> None: ...


@dataclass
class FlowResult:
    disposition: str = "abandoned"
    """voicemail, self_service, operator, callback, abandoned."""
    decision: Decision | None = None
    queue: WaitOutcome | None = None
    """How the wait for an operator went, when the caller queued."""
    record: RecordOutcome | None = None
    case_queries: list[str] = field(default_factory=list)


@dataclass
class FlowDeps:
    decide: Callable[[dt.datetime], Awaitable[Decision]]
    """Open or closed right now, and why (calendar plus manual override)."""
    case_status: Callable[[str], Awaitable[str | None]]
    """Status of the case with this number (or message number), None if there is none."""
    voicemail: VoicemailSettings
    message_number: str
    """What the caller is told to quote later: the call's number."""
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    queue: WaitDeps | None = None
    """The operator queue; None where there is none (a node without operators): open → voicemail."""


async def inbound(call: CallPort, deps: FlowDeps, result: FlowResult | None = None) -> FlowResult:
    """Greeting → menu (1 report, 2 case status, 9 language) → report path or self-service.

    Fills `result` as it goes (pass one in to keep what was decided if the flow is cancelled,
    e.g. at shutdown) and returns it.
    """
    result = FlowResult() if result is None else result
    key = await _menu(call)
    if call.ended:
        return result
    if key == "2":
        result.disposition = "self_service"
        await _case_status(call, deps, result)
    else:
        await report(call, deps, result)
    if not call.ended:
        await call.play(["goodbye"])
        await call.hangup()
    return result


async def _menu(call: CallPort) -> str | None:
    await call.play(["greeting"], interrupt=True)
    tries = 0
    while not call.ended and tries < MAX_MENU_TRIES:
        await call.play(["menu", "menu_language"], interrupt=True)
        key = await call.collect(max_digits=1, timeout=MENU_TIMEOUT, terminator=None) or None
        if key == "9":
            call.language = "en" if call.language == "zh" else "zh"
            continue
        if key in (None, "1", "2"):
            return key
        tries += 1
        await call.play(["invalid_input"])
    return None


async def report(call: CallPort, deps: FlowDeps, result: FlowResult) -> None:
    """The report path: open → the operator queue (a conversation), else or when the wait ends → a message.

    Also what an outbound campaign callee gets who asked for an operator (ivr/service.py
    ``Ivr.transfer``): same queue, same fallbacks, so nobody who asked is dropped. Leaves the
    goodbye and hang-up to the caller of this function.
    """
    decision = await deps.decide(deps.now())
    result.decision = decision
    notice: list[str] = ["no_operator"] if decision.open else [CLOSED_PROMPT.get(decision.why, "closed")]
    if decision.open and deps.queue is not None:
        again = None
        while True:
            outcome = result.queue = await wait_in_queue(call, deps.queue, again=again)
            if outcome.exit != "operator":
                break
            result.disposition = "operator"
            try:
                talked = await deps.queue.talk(outcome)
            finally:
                assert outcome.waiting is not None and outcome.connection is not None
                await deps.queue.queue.finished(outcome.waiting, outcome.connection)
            if talked is not False or call.ended:
                return
            # The operator hung up before a word was said: back in line, at its head (someone else may be free).
            result.disposition = "abandoned"
            again = outcome.waiting
        if call.ended:
            return
        if outcome.exit == "callback" and outcome.callback_phone:
            result.disposition = "callback"
            return
        if outcome.exit in ("voicemail_key", "callback"):
            notice = []  # they asked for it (or gave no number to call): no apology
    await call.play([*notice, "voicemail"])
    if call.ended:
        return
    await call.tone()
    outcome = await call.record(deps.voicemail)
    result.record = outcome
    result.disposition = "voicemail"
    if call.ended:
        return
    number = [f"digit_{c}" for c in deps.message_number]
    await call.play(["thank_you", "message_number", *number, "repeat_number", *number])


async def _case_status(call: CallPort, deps: FlowDeps, result: FlowResult) -> None:
    for _ in range(2):
        await call.play(["enter_case_number"], interrupt=True)
        digits = await call.collect(max_digits=20, timeout=CASE_DIGITS_TIMEOUT, terminator="#")
        if call.ended:
            return
        if not digits:
            await call.play(["no_input"])
            continue
        result.case_queries.append(digits)
        status = await deps.case_status(digits)
        if status is None:
            await call.play(["case_not_found"])
            continue
        await call.play(["case_status", f"status_{status}"])
        return
