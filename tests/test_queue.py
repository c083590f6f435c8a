"""The operator queue with fake operators: order, ring timeout, decliners, ring-all races, positions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from config.settings import QueueSettings
from ivr.queue import CallQueue, Events, QueueEvent, Waiting
from queue_fakes import FakeLeg, FakeRoster, Phones

RING = 0.2
"""Ring timeout of the tests: short, and only reached by phones that never answer."""


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition the queue reaches by itself (no fixed sleeps)."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., CallQueue]]:
    queues: list[CallQueue] = []

    def build(roster: FakeRoster, phones: Phones, strategy: str = "longest_idle") -> CallQueue:
        q = CallQueue(roster, phones.ring, QueueSettings(strategy=strategy, ring_timeout_seconds=RING),  # type: ignore[arg-type]
                      poll_seconds=0.05)
        queues.append(q)
        return q

    yield build
    for q in queues:
        await q.stop()


def kinds(events: asyncio.Queue[QueueEvent]) -> list[tuple[str, int, str | None]]:
    out = []
    while not events.empty():
        e = events.get_nowait()
        out.append((e.kind, e.operator_id, e.reason))
    return out


async def test_longest_idle_operator_is_offered_first(make) -> None:  # type: ignore[no-untyped-def]
    phones = Phones(op1="answer", op2="answer", op3="answer")
    q = make(FakeRoster([3, 1, 2]), phones)
    await q.start()
    w = q.join("13812345678", 1)
    conn = await asyncio.wait_for(w.connection, 5)
    assert conn.operator.user_id == 3 and phones.log == [(3, 1)]
    assert q.position(w) is None and len(q) == 0


async def test_ring_timeout_then_next_and_not_again(make) -> None:  # type: ignore[no-untyped-def]
    phones = Phones(op1="ignore", op2="decline", op3="answer")
    roster = FakeRoster([1, 2, 3])
    q = make(roster, phones)
    with q.events.subscribe() as events:
        await q.start()
        w = q.join("13812345678", 1)
        conn = await asyncio.wait_for(w.connection, 5)
        assert conn.operator.user_id == 3
        assert [u for u, _ in phones.log] == [1, 2, 3]  # each once: skipped ones are not rung again
        assert phones[1].cancelled == 1 and w.tried == {1, 2}
        assert kinds(events) == [("ringing", 1, None), ("ended", 1, "no_answer"), ("ringing", 2, None),
                                 ("ended", 2, "declined"), ("ringing", 3, None), ("connected", 3, None)]
        await q.finished(w, conn)
        assert roster.released == [(3, True)] and kinds(events) == [("ended", 3, "hangup")]


async def test_caller_skipped_by_everyone_keeps_waiting(make) -> None:  # type: ignore[no-untyped-def]
    phones = Phones(op1="decline", op2="decline")
    q = make(FakeRoster([1, 2]), phones)
    await q.start()
    w = q.join("13812345678", 1)
    await until(lambda: w.tried == {1, 2} and not w.offering)
    q.wake()
    await asyncio.sleep(0.15)  # a few polls: nobody is rung again for this caller
    assert len(phones.log) == 2 and q.position(w) == 1 and not w.connection.done()
    # A second caller is still offered to them.
    w2 = q.join("13900000000", 2)
    await until(lambda: len(phones.log) == 4)
    assert phones.log[2:] == [(1, 2), (2, 2)]
    assert q.leave(w, "timeout") and q.leave(w2, "abandoned")


async def test_ring_all_first_answer_wins_others_cancelled(make) -> None:  # type: ignore[no-untyped-def]
    phones = Phones(op1="manual", op2="manual", op3="manual")
    q = make(FakeRoster([1, 2, 3]), phones, strategy="ring_all")
    with q.events.subscribe() as events:
        await q.start()
        w = q.join("13812345678", 5)
        await until(lambda: all(phones[u].rings for u in (1, 2, 3)))
        phones[2].pick_up.set()
        conn = await asyncio.wait_for(w.connection, 5)
        assert conn.operator.user_id == 2
        await until(lambda: not w.offering)  # the offer is over: every ring settled
        assert phones[1].cancelled == 1 and phones[3].cancelled == 1 and phones[2].cancelled == 0
        got = kinds(events)
        assert sorted(e for e in got if e[0] == "ringing") == [("ringing", 1, None), ("ringing", 2, None), ("ringing", 3, None)]
        assert ("connected", 2, None) in got
        assert sorted(e for e in got if e[0] == "ended") == [("ended", 1, "answered_elsewhere"), ("ended", 3, "answered_elsewhere")]


async def test_ring_all_two_answer_at_once_one_bridged_other_hung_up(make) -> None:  # type: ignore[no-untyped-def]
    phones = Phones(op1="manual", op2="manual")
    roster = FakeRoster([1, 2])
    q = make(roster, phones, strategy="ring_all")
    await q.start()
    w = q.join("13812345678", 5)
    await until(lambda: phones[1].rings and phones[2].rings)
    phones[1].pick_up.set()
    phones[2].pick_up.set()  # both in the same instant
    conn = await asyncio.wait_for(w.connection, 5)
    await until(lambda: len(phones[1].legs) + len(phones[2].legs) == 2 and not w.offering)
    legs: list[FakeLeg] = phones[1].legs + phones[2].legs
    winner = [leg for leg in legs if leg.operator == conn.operator.user_id]
    loser = [leg for leg in legs if leg.operator != conn.operator.user_id]
    assert len(winner) == 1 and not winner[0].hung_up
    assert len(loser) == 1 and loser[0].hung_up  # the other one gets a BYE
    assert roster.busy == {conn.operator.user_id}


async def test_three_callers_positions_move_up(make) -> None:  # type: ignore[no-untyped-def]
    phones = Phones(op1="manual")
    roster = FakeRoster([1])
    q = make(roster, phones)
    await q.start()
    ws: list[Waiting] = [q.join(f"1380000000{i}", i) for i in (1, 2, 3)]
    assert [q.position(w) for w in ws] == [1, 2, 3]
    await until(lambda: phones[1].rings == [1])  # the first caller is offered first
    phones[1].pick_up.set()
    conn = await asyncio.wait_for(ws[0].connection, 5)
    assert [q.position(w) for w in ws] == [None, 1, 2]
    assert q.leave(ws[1], "abandoned")
    assert [q.position(w) for w in ws] == [None, None, 1]
    phones[1].pick_up.clear()
    await q.finished(ws[0], conn)  # operator free again: the last caller is next
    await until(lambda: phones[1].rings == [1, 3])
    assert q.leave(ws[2], "abandoned") and q.position(ws[2]) is None


async def test_caller_leaving_while_ringing_stops_the_ring(make) -> None:  # type: ignore[no-untyped-def]
    phones = Phones(op1="manual")
    q = make(FakeRoster([1]), phones)
    with q.events.subscribe() as events:
        await q.start()
        w = q.join("13812345678", 1)
        await until(lambda: bool(phones[1].rings))
        assert q.leave(w, "abandoned") and w.exit == "abandoned"
        await until(lambda: phones[1].cancelled == 1)
        await until(lambda: ("ended", 1, "caller_left") in kinds(events))
    assert q.leave(w, "timeout") and w.exit == "abandoned"  # leaving twice keeps the first reason


async def test_answer_beats_a_late_key(make) -> None:  # type: ignore[no-untyped-def]
    phones = Phones(op1="answer")
    q = make(FakeRoster([1]), phones)
    await q.start()
    w = q.join("13812345678", 1)
    await asyncio.wait_for(w.connection, 5)
    assert q.leave(w, "voicemail_key") is False and w.exit is None


async def test_operator_gone_away_while_ringing_is_hung_up(make) -> None:  # type: ignore[no-untyped-def]
    phones = Phones(op1="answer", op2="answer")
    roster = FakeRoster([1, 2])
    roster.refuse_claim.add(1)  # chose 'away' on another screen as the phone was picked up
    q = make(roster, phones)
    await q.start()
    w = q.join("13812345678", 1)
    conn = await asyncio.wait_for(w.connection, 5)
    assert conn.operator.user_id == 2
    assert phones[1].legs[0].hung_up and 1 in w.tried


async def test_a_failing_dialer_is_one_operator_not_reached(make) -> None:  # type: ignore[no-untyped-def]
    phones = Phones(op2="answer")

    async def ring(op, w):  # type: ignore[no-untyped-def]
        if op.user_id == 1:
            raise OSError("no route to the operator's phone")
        return await phones.ring(op, w)

    q = make(FakeRoster([1, 2]), phones)
    q.ring = ring
    await q.start()
    w = q.join("13812345678", 1)
    assert (await asyncio.wait_for(w.connection, 5)).operator.user_id == 2


async def test_slow_subscriber_loses_oldest_events_only() -> None:
    hub = Events(backlog=2)
    with hub.subscribe() as q:
        for i in range(5):
            hub.publish(QueueEvent("ringing", i, "138", i))
        assert [q.get_nowait().operator_id for _ in range(2)] == [3, 4]
    hub.publish(QueueEvent("ringing", 9, None, None))  # nobody listening: nothing breaks
