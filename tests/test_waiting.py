"""The caller's wait for an operator, through the whole inbound flow, with a scripted call and fake operators.

Times are fractions of a second (announce every 0.1 s, give up after 0.4 s) so a wait that
would be minutes on a real line runs in a blink; no assertion depends on how long it took.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable

import pytest

from cases import callbacks
from config.db import transaction
from config.overrides import Decision
from config.settings import QueueSettings, VoicemailSettings
from ivr.flows import FlowDeps, FlowResult, inbound
from ivr.models import Call
from ivr.queue import CallQueue, Waiting
from ivr.queue_calls import record_wait
from ivr.waiting import WaitDeps, WaitOutcome, position_keys
from queue_fakes import FakeRoster, Phones, QueuedCall

FAST = QueueSettings(announce_seconds=0.1, max_wait_seconds=0.4, ring_timeout_seconds=0.2)


class Line:
    """One test's queue, operators and what the flow asked for."""

    def __init__(self, roster: FakeRoster, phones: Phones, settings: QueueSettings = FAST) -> None:
        self.roster, self.phones, self.settings = roster, phones, settings
        self.queue = CallQueue(roster, phones.ring, settings, poll_seconds=0.02)
        self.callbacks: list[str] = []
        self.talks: list[WaitOutcome] = []
        self.on_callback: Callable[[str], None] | None = None

    def deps(self, caller: str | None = "13812345678", call_id: int = 42) -> FlowDeps:
        async def decide(now: dt.datetime) -> Decision:
            return Decision(True, "hours")

        async def status(number: str) -> str | None:
            return None

        async def request_callback(phone: str) -> None:
            self.callbacks.append(phone)
            if self.on_callback:
                self.on_callback(phone)

        async def talk(outcome: WaitOutcome) -> None:
            self.talks.append(outcome)

        wait = WaitDeps(self.queue, self.settings, caller, call_id, request_callback=request_callback, talk=talk)
        return FlowDeps(decide=decide, case_status=status, voicemail=VoicemailSettings(),
                        message_number=str(call_id), queue=wait)


@pytest.fixture
async def line() -> AsyncIterator[Callable[..., Line]]:
    made: list[Line] = []

    def build(roster: FakeRoster | None = None, phones: Phones | None = None, settings: QueueSettings = FAST) -> Line:
        ln = Line(roster or FakeRoster([], logged_in=1), phones or Phones(), settings)
        made.append(ln)
        return ln

    yield build
    for ln in made:
        await ln.queue.stop()


def after(played: list[str], key: str) -> list[str]:
    return played[played.index(key) + 1:]


async def test_nobody_logged_in_goes_straight_to_voicemail(line) -> None:  # type: ignore[no-untyped-def]
    ln = line(FakeRoster([], logged_in=0))
    call = QueuedCall()
    result = await inbound(call, ln.deps())
    assert result.queue is not None and result.queue.exit == "no_operators" and result.queue.entered_at is None
    assert after(call.played, "menu_language")[:2] == ["no_operator", "voicemail"]
    assert "queue_position" not in call.played and "<music>" not in call.played
    assert result.disposition == "voicemail" and call.events == ["tone", "record", "hangup"]


async def test_key_1_leaves_a_message_now(line) -> None:  # type: ignore[no-untyped-def]
    ln = line()
    await ln.queue.start()
    call = QueuedCall(keys_in_music={0: "1"})
    result = await inbound(call, ln.deps())
    assert result.queue is not None and result.queue.exit == "voicemail_key"
    # Position on entry, the keys, music, then the message guidance without an apology.
    assert call.played[3:8] == ["queue_position", "count_1", "queue_position_end", "queue_options", "<music>"]
    assert after(call.played, "<music>")[0] == "voicemail" and "no_operator" not in call.played
    assert result.disposition == "voicemail" and len(ln.queue) == 0


async def test_key_2_books_a_callback_on_the_confirmed_number(line, sessions) -> None:  # type: ignore[no-untyped-def]
    ln = line()

    def store(phone: str) -> None:  # the real list, on both databases
        with transaction(sessions) as s:
            callbacks.add(s, phone, "requested", call_id=42)

    ln.on_callback = store
    await ln.queue.start()
    call = QueuedCall(keys_at={"queue_options": "2", "callback_confirm_keys": "1"})
    result = await inbound(call, ln.deps(caller="+8613812345678"))
    assert result.queue is not None and result.queue.exit == "callback" and result.queue.callback_phone == "13812345678"
    digits = [f"digit_{c}" for c in "13812345678"]
    assert after(call.played, "queue_options") == ["callback_confirm", *digits, "callback_confirm_keys",
                                                   "callback_booked", "goodbye"]
    assert result.disposition == "callback" and call.events == ["hangup"]
    with sessions() as s:
        [row] = callbacks.listing(s)
        assert (row.phone, row.reason, row.call_id) == ("13812345678", "requested", 42)


async def test_key_2_with_another_number_and_a_withheld_caller(line) -> None:  # type: ignore[no-untyped-def]
    ln = line()
    await ln.queue.start()
    call = QueuedCall(keys_at={"queue_options": "2", "callback_confirm_keys": "13900001111#"})
    await inbound(call, ln.deps())
    assert ln.callbacks == ["13900001111"]

    call = QueuedCall(keys_at={"queue_options": "2", "callback_enter_number": "1#"})  # '1' confirms nothing here
    call.keys_at["invalid_input"] = "02087654321#"
    result = await inbound(call, ln.deps(caller="anonymous"))
    # The number typed during 'invalid_input' is taken at once (it interrupts the repeated request).
    assert after(call.played, "queue_options") == ["callback_enter_number", "invalid_input", "callback_booked", "goodbye"]
    assert ln.callbacks[-1] == "02087654321" and result.disposition == "callback"


async def test_key_2_without_a_usable_number_ends_in_voicemail(line) -> None:  # type: ignore[no-untyped-def]
    ln = line()
    await ln.queue.start()
    call = QueuedCall(keys_at={"queue_options": "2", "callback_enter_number": "12#"})
    call.keys_at["invalid_input"] = "<>'\"#"  # hostile, not digits: ignored as a number
    result = await inbound(call, ln.deps(caller=None))
    assert ln.callbacks == [] and result.queue is not None and result.queue.callback_phone is None
    assert after(call.played, "queue_options").count("invalid_input") == 2
    assert after(call.played, "queue_options")[-10:-8] == ["invalid_input", "voicemail"]  # then the message
    assert "no_operator" not in call.played and result.disposition == "voicemail" and "record" in call.events


async def test_other_keys_are_ignored_then_max_wait_to_voicemail(line) -> None:  # type: ignore[no-untyped-def]
    ln = line()
    await ln.queue.start()
    call = QueuedCall(keys_at={"queue_options": "5"}, keys_in_music={1: "*", 2: "9"})
    result = await inbound(call, ln.deps())
    assert result.queue is not None and result.queue.exit == "timeout"
    assert result.queue.waited is not None and result.queue.waited >= FAST.max_wait_seconds
    waiting = call.played[3:call.played.index("no_operator")]
    assert waiting.count("queue_position") >= 2  # on entry and again every announce_seconds
    assert "invalid_input" not in waiting and "<music>" in waiting
    assert after(call.played, "no_operator")[0] == "voicemail" and result.disposition == "voicemail"
    assert len(ln.queue) == 0


async def test_hang_up_while_waiting_is_an_abandoned_call_with_a_callback(line, sessions) -> None:  # type: ignore[no-untyped-def]
    ln = line()
    await ln.queue.start()
    with transaction(sessions) as s:
        row = Call(sip_call_id="abc", caller="13812345678", started_at=dt.datetime.now(dt.UTC))
        s.add(row)
        s.flush()
        call_id = row.id
    call = QueuedCall(hang_up_in_music=1)
    result = await inbound(call, ln.deps(call_id=call_id))
    assert result.disposition == "abandoned" and result.queue is not None and result.queue.exit == "abandoned"
    assert "voicemail" not in call.played and call.events == [] and len(ln.queue) == 0
    with transaction(sessions) as s:  # what the service does when the call ends
        made = record_wait(s, s.get(Call, call_id), result.queue)
    assert made is not None
    with sessions() as s:
        got = s.get(Call, call_id)
        assert got.disposition == "abandoned" and got.queue_exit == "abandoned" and got.queue_wait_seconds is not None
        [cb] = callbacks.listing(s)
        assert (cb.phone, cb.reason, cb.call_id) == ("13812345678", "abandoned", call_id)


async def test_operator_answer_stops_the_music_and_connects(line) -> None:  # type: ignore[no-untyped-def]
    phones = Phones(op7="manual")
    roster = FakeRoster([7])
    ln = line(roster, phones, QueueSettings(announce_seconds=5, max_wait_seconds=10, ring_timeout_seconds=5))
    await ln.queue.start()
    call = QueuedCall()
    task = asyncio.create_task(inbound(call, ln.deps()))
    async with asyncio.timeout(5):
        while not (call.music_stretches and phones[7].rings):
            await asyncio.sleep(0.005)
    phones[7].pick_up.set()
    result: FlowResult = await asyncio.wait_for(task, 5)
    assert result.disposition == "operator" and result.queue is not None and result.queue.exit == "operator"
    assert call.music_cut == 1  # the music stopped the moment the operator answered
    assert [t.connection.operator.user_id for t in ln.talks if t.connection] == [7]
    assert roster.released == [(7, True)]  # after the talk: wrap-up
    assert "voicemail" not in call.played and call.played[-1] == "goodbye"


async def test_operator_leaving_during_consent_puts_the_caller_back_at_the_head(line) -> None:  # type: ignore[no-untyped-def]
    """The first operator hangs up before a word is said: the caller queues again ahead of a later caller, on
    the first wait's clock (max wait is not started over), and the next ring goes to another operator."""
    phones = Phones(op7="answer", op8="manual")
    ln = line(FakeRoster([7, 8]), phones, QueueSettings(announce_seconds=5, max_wait_seconds=30, ring_timeout_seconds=5))
    talks: list[WaitOutcome] = []
    first_join: list[Waiting] = []

    async def talk(outcome: WaitOutcome) -> bool:
        talks.append(outcome)
        if len(talks) == 1:  # op 7 hung up during the notice; meanwhile another caller joined
            first_join.append(ln.queue.join("13900000009", 99))
            return False
        return True

    deps = ln.deps()
    assert deps.queue is not None
    deps.queue.talk = talk
    await ln.queue.start()
    call = QueuedCall()
    task = asyncio.create_task(inbound(call, deps))
    async with asyncio.timeout(5):
        while not phones[8].rings:
            await asyncio.sleep(0.005)
    assert talks[0].waiting is not None and ln.queue.position(talks[0].waiting) is None  # the first wait is over ...
    waiting = [w for w in ln.queue._waiting if w.call_id == 42]
    assert len(waiting) == 1 and ln.queue.position(waiting[0]) == 1  # ... and the caller is first, not behind 99
    assert waiting[0].entered == talks[0].waiting.entered and waiting[0].entered_at == talks[0].waiting.entered_at
    assert 7 in waiting[0].tried and [op for op, c in phones.log if c == 42] == [7, 8]
    phones[8].pick_up.set()
    result: FlowResult = await asyncio.wait_for(task, 5)
    assert result.disposition == "operator"
    assert [t.connection.operator.user_id for t in talks if t.connection] == [7, 8]
    ln.queue.leave(first_join[0], "abandoned")


async def test_positions_announced_move_up(line) -> None:  # type: ignore[no-untyped-def]
    ln = line()
    await ln.queue.start()
    ahead: list[Waiting] = [ln.queue.join("13900000000", 1), ln.queue.join("13900000001", 2)]

    async def first_leaves() -> None:
        await asyncio.sleep(0.15)
        ln.queue.leave(ahead[0], "abandoned")

    call = QueuedCall(keys_in_music={3: "1"})
    leaver = asyncio.create_task(first_leaves())
    await inbound(call, ln.deps())
    await leaver
    counts = [k for k in call.played if k.startswith("count_")]
    assert counts[0] == "count_3" and "count_2" in counts and counts.index("count_2") > 0
    ln.queue.leave(ahead[1], "abandoned")


def test_position_words() -> None:
    assert position_keys(1) == ["queue_position", "count_1", "queue_position_end"]
    assert position_keys(20)[1] == "count_20"
    assert position_keys(21) == ["queue_position_long"]
    assert position_keys(0) == ["queue_position_long"]
