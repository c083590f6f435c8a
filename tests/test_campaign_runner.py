"""The campaign engine with an injected clock and a fake dialer, on both databases.

The real SIP dialer is another slice (ivr/dialer.py); the crash test kills a real child
process with SIGKILL while its attempt is ringing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from campaigns.lifecycle import progress, transition
from campaigns.models import Campaign, CampaignAttempt, CampaignTarget, DoNotCall, FollowUp
from campaigns.runner import Runner
from campaigns.targets import add_targets, preview
from campaigns.transfer import Handover
from campaign_support import Clock, FakeDialer, at, make_case, new_campaign
from cases.models import Case, CaseEvent
from config.db import transaction
from ivr.flows import CallPort

PHONE = "+8613800138001"


def setup(sessions, n: int = 1, **kw) -> int:  # type: ignore[no-untyped-def]
    """A scheduled campaign with n callable targets (phones 13800138001…); returns its id."""
    with transaction(sessions) as s:
        cases = [make_case(s, f"20260901-{i:04d}", f"1380013{8001 + i - 1:04d}") for i in range(1, n + 1)]
        campaign = new_campaign(s, **kw)
        add_targets(s, campaign, preview(s, cases))
        transition(s, campaign, "scheduled")
        return campaign.id


def runner(ctx, dialer, clock, **kw) -> Runner:  # type: ignore[no-untyped-def]
    return Runner(ctx, dialer, clock=clock, **kw)


def attempts(sessions) -> list[tuple[int, str | None, object]]:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return [(a.number, a.outcome, a.started_at) for a in s.scalars(select(CampaignAttempt).order_by(CampaignAttempt.id))]


async def test_retries_at_the_right_times_then_follow_up(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    cid = setup(sessions)
    clock = Clock(at("2026-09-16 10:00"))  # Wednesday
    dialer = FakeDialer({PHONE: ["no_answer", "busy", "no_answer"]})
    r = runner(ctx, dialer, clock)

    async def tick(when: str) -> int:
        clock.now = at(when)
        claims = await r.tick()
        await r.drain()
        return len(claims)

    assert await tick("2026-09-16 10:00") == 1
    assert await tick("2026-09-16 11:59") == 0  # not due before the retry interval
    assert await tick("2026-09-16 12:00") == 0  # due, but the window is closed (12:00-14:30)
    assert await tick("2026-09-16 14:29") == 0
    assert await tick("2026-09-16 14:30") == 1  # first instant of the next window
    assert await tick("2026-09-16 16:29") == 0
    assert await tick("2026-09-16 16:30") == 1
    assert await tick("2026-09-16 19:00") == 0  # no fourth attempt
    assert dialer.calls == [PHONE] * 3
    assert [(n, o, t) for n, o, t in attempts(sessions)] == [
        (1, "no_answer", at("2026-09-16 10:00")), (2, "busy", at("2026-09-16 14:30")), (3, "no_answer", at("2026-09-16 16:30"))]
    with sessions() as s:
        target = s.scalars(select(CampaignTarget)).one()
        assert (target.state, target.attempts, target.outcome) == ("failed", 3, "no_answer")
        follow = s.scalars(select(FollowUp)).one()
        assert follow.phone == PHONE and "unreachable after 3 attempts" in follow.reason
        event = s.scalars(select(CaseEvent).where(CaseEvent.action == "return_visit_attempt")).one()
        assert event.data["outcome"] == "unreachable"
        assert s.get(Campaign, cid).state == "finished"
        assert progress(s, s.get(Campaign, cid))["failed"] == 1


async def test_no_dialling_on_holiday_or_weekend(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    setup(sessions)
    dialer = FakeDialer()
    r = runner(ctx, dialer, Clock(at("2026-10-01 10:00")))
    assert await r.tick() == []
    assert await r.tick(at("2026-09-19 10:00")) == []  # Saturday
    assert len(await r.tick(at("2026-09-20 10:00"))) == 1  # adjusted working Sunday
    await r.drain()


async def test_answered_ratings_reach_the_case(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    cid = setup(sessions, 3)
    phones = ["+8613800138001", "+8613800138002", "+8613800138003"]
    dialer = FakeDialer(keys=dict(zip(phones, ["1", "3", "8"])))
    seen: list[dict] = []  # type: ignore[type-arg]

    def record_visit(session, case, *, actor, outcome, rating=None, note=None, data=None):  # type: ignore[no-untyped-def]
        assert data == {"campaign_id": cid, "attempt": 1}, "the event names the campaign and attempt (and a real call's id)"
        seen.append({"case": case.number, "actor": actor, "outcome": outcome, "rating": rating, "note": note})

    r = runner(ctx, dialer, Clock(at("2026-09-16 15:00")), record_visit=record_visit)
    await r.tick()
    await r.drain()
    assert sorted(seen, key=lambda d: d["case"]) == [
        {"case": "20260901-0001", "actor": "campaign", "outcome": "answered", "rating": 1, "note": None},
        {"case": "20260901-0002", "actor": "campaign", "outcome": "answered", "rating": 3, "note": None},
        {"case": "20260901-0003", "actor": "campaign", "outcome": "answered", "rating": None,
         "note": "callee opted out of further calls"},
    ]
    with sessions() as s:
        assert [d.phone for d in s.scalars(select(DoNotCall))] == ["+8613800138003"]
        p = progress(s, s.get(Campaign, cid))
        assert p["done"] == 3 and p["ratings"] == {"1": 1, "2": 0, "3": 1, "none": 1} and p["contact_rate"] == 1.0
        keys = {a.target.phone: a.keys for a in s.scalars(select(CampaignAttempt))}
        assert keys == dict(zip(phones, ["1", "3", "8"]))


async def test_key_0_hands_the_call_to_the_queue_and_the_result_says_so(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    """An operator talked with the first callee (transferred), the second hung up while waiting: no rating
    for either, the choice on attempt and target, a note on the case, the count in the progress."""
    cid = setup(sessions, 2)
    phones = ["+8613800138001", "+8613800138002"]
    dialer = FakeDialer(keys={p: "0" for p in phones})
    became = {phones[0]: Handover("operator"), phones[1]: Handover("abandoned")}
    handed: list[str] = []

    async def operator_open() -> bool:
        return True

    async def transfer(call: CallPort) -> Handover:
        number = dialer.calls[dialer.answered.index(call)]  # type: ignore[arg-type]
        handed.append(number)
        return became[number]

    r = runner(ctx, dialer, Clock(at("2026-09-16 15:00")), operator_open=operator_open, transfer=transfer)
    await r.tick()
    await r.drain()
    assert sorted(handed) == phones
    assert all(c.keys()[-1] == "return_visit_transfer" and c.events == ["hangup"] for c in dialer.answered), \
        "nothing after the queue but the runner's hang-up (a no-op once the queue has hung up)"
    with sessions() as s:
        got = {t.phone: (t.state, t.outcome, t.rating, t.choice) for t in s.scalars(select(CampaignTarget))}
        assert got == {phones[0]: ("done", "answered", None, "operator"), phones[1]: ("done", "answered", None, "abandoned")}
        assert {a.target.phone: (a.keys, a.choice) for a in s.scalars(select(CampaignAttempt))} == {
            phones[0]: ("0", "operator"), phones[1]: ("0", "abandoned")}
        notes = {e.case_id: (e.action, e.note, e.data["campaign_id"])
                 for e in s.scalars(select(CaseEvent).where(CaseEvent.actor == "campaign"))}
        cases = {c.complainant_phone: c.id for c in s.scalars(select(Case))}
        assert notes == {
            cases["13800138001"]: ("return_visit_attempt", "callee talked to an operator", cid),
            cases["13800138002"]: ("return_visit_attempt", "callee asked for an operator, hung up while waiting", cid)}
        p = progress(s, s.get(Campaign, cid))
        assert (p["done"], p["transferred"], p["ratings"]["none"]) == (2, 1, 2)


async def test_not_satisfied_reopens_the_case_under_key_supervision(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    setup(sessions)
    r = runner(ctx, FakeDialer(keys={PHONE: "3"}), Clock(at("2026-09-16 15:00")))
    await r.tick()
    await r.drain()
    with sessions() as s:
        case = s.scalars(select(Case)).one()
        assert (case.status, case.key_supervision, case.satisfaction) == ("accepted", True, "not_satisfied")
        actions = [e.action for e in s.scalars(select(CaseEvent).where(CaseEvent.actor == "campaign"))]
        assert actions == ["start_return_visit", "reopen"], actions


async def test_satisfied_closes_the_case(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    setup(sessions)
    r = runner(ctx, FakeDialer(keys={PHONE: "1"}), Clock(at("2026-09-16 15:00")))
    await r.tick()
    await r.drain()
    with sessions() as s:
        case = s.scalars(select(Case)).one()
        assert (case.status, case.satisfaction) == ("closed", "satisfied")


async def test_concurrency_cap_never_exceeded(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    cid = setup(sessions, 10, concurrency=3)
    gate = asyncio.Event()
    dialer = FakeDialer(gate=gate)
    r = runner(ctx, dialer, Clock(at("2026-09-16 15:00")))
    for _ in range(4):
        await r.tick()
        await asyncio.sleep(0)
    assert len(dialer.calls) == 3 and dialer.max_active == 3
    with sessions() as s:
        assert progress(s, s.get(Campaign, cid))["dialing"] == 3
    # a second engine on the same database (another process) respects the same cap
    other = runner(ctx, FakeDialer(), Clock(at("2026-09-16 15:00")))
    assert await other.tick() == []
    gate.set()
    while True:
        await r.drain()
        if not await r.tick():
            break
        assert dialer.max_active <= 3
    assert sorted(dialer.calls) == [f"+86138001380{i:02d}" for i in range(1, 11)]
    with sessions() as s:
        assert progress(s, s.get(Campaign, cid))["done"] == 10


async def test_total_line_cap_across_campaigns(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    """Two campaigns of 4 lines each under ``max_lines`` 5: never more than 5 calls at once, and all 5 used."""
    ctx.settings = ctx.settings.model_copy(update={"campaigns": ctx.settings.campaigns.model_copy(update={"max_lines": 5})})
    with transaction(sessions) as s:
        for name, first in (("North", 8001), ("South", 8101)):
            cases = [make_case(s, f"20260901-{n:04d}", f"1380013{n:04d}") for n in range(first, first + 6)]
            campaign = new_campaign(s, name, concurrency=4)
            add_targets(s, campaign, preview(s, cases))
            transition(s, campaign, "scheduled")
    gate = asyncio.Event()
    dialer = FakeDialer(gate=gate)
    r = runner(ctx, dialer, Clock(at("2026-09-16 15:00")))
    for _ in range(3):
        await r.tick()
        await asyncio.sleep(0)
    assert len(dialer.calls) == 5 and dialer.max_active == 5
    with sessions() as s:
        assert sorted(progress(s, c)["dialing"] for c in s.scalars(select(Campaign))) == [1, 4]
    gate.set()
    while True:
        await r.drain()
        if not await r.tick():
            break
    assert dialer.max_active == 5 and len(dialer.calls) == 12
    with sessions() as s:
        assert [progress(s, c)["done"] for c in s.scalars(select(Campaign))] == [6, 6]


async def test_paused_and_cancelled_campaigns_are_not_dialled(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    cid = setup(sessions)
    with transaction(sessions) as s:
        transition(s, s.get(Campaign, cid), "paused")
    dialer = FakeDialer()
    r = runner(ctx, dialer, Clock(at("2026-09-16 15:00")))
    assert await r.tick() == []
    with transaction(sessions) as s:
        transition(s, s.get(Campaign, cid), "cancelled")
    assert await r.tick() == [] and dialer.calls == []


async def test_future_start_waits(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    setup(sessions, start_at=at("2026-09-17 09:00"))
    r = runner(ctx, FakeDialer(), Clock(at("2026-09-16 15:00")))
    assert await r.tick() == []
    assert len(await r.tick(at("2026-09-17 09:00"))) == 1
    await r.drain()


async def test_case_deleted_or_merged_meanwhile_is_dropped_not_dialled(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    setup(sessions, 3)
    with transaction(sessions) as s:
        s.scalars(select(Case).where(Case.number == "20260901-0001")).one().status = "merged"
        gone = s.scalars(select(Case).where(Case.number == "20260901-0002")).one()
        for e in gone.events:
            s.delete(e)
        s.delete(gone)
    dialer = FakeDialer()
    r = runner(ctx, dialer, Clock(at("2026-09-16 15:00")))
    await r.tick()
    await r.drain()
    assert dialer.calls == ["+8613800138003"]
    with sessions() as s:
        reasons = {t.case_number: t.drop_reason for t in s.scalars(select(CampaignTarget))}
        assert reasons == {"20260901-0001": "case_merged", "20260901-0002": "case_deleted", "20260901-0003": None}


async def test_dialer_exception_is_a_failed_attempt_and_retried(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    setup(sessions)

    class Broken:
        async def dial(self, number, *, ring_timeout, caller_id, purpose):  # type: ignore[no-untyped-def]
            raise OSError("no route to the SIP trunk")

    r = runner(ctx, Broken(), Clock(at("2026-09-16 15:00")))
    await r.tick()
    await r.drain()
    with sessions() as s:
        target = s.scalars(select(CampaignTarget)).one()
        assert (target.state, target.outcome) == ("pending", "failed") and "no route" in target.last_error
        assert target.next_attempt_at == at("2026-09-16 17:00")


async def test_invalid_number_fails_at_once_with_follow_up(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    setup(sessions)
    r = runner(ctx, FakeDialer({PHONE: ["invalid_number"]}), Clock(at("2026-09-16 15:00")))
    await r.tick()
    await r.drain()
    with sessions() as s:
        assert s.scalars(select(CampaignTarget)).one().state == "failed"
        assert "not in service" in s.scalars(select(FollowUp)).one().reason


async def test_crash_after_attempt_written_no_double_call_no_skip(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    setup(sessions)
    clock = Clock(at("2026-09-16 10:00"))
    dead = runner(ctx, FakeDialer(), clock)
    claims = dead.claim_due(clock.now)  # attempt 1 committed; the process "dies" before dialling finishes
    assert len(claims) == 1
    with pytest.raises(IntegrityError), transaction(sessions) as s:  # the same attempt can never be written twice
        s.add(CampaignAttempt(target_id=claims[0].target_id, number=1, phone=PHONE))
    dialer = FakeDialer()
    clock.now = at("2026-09-16 10:30")
    restarted = runner(ctx, dialer, clock)
    assert len(restarted.recover()) == 1
    assert await restarted.tick() == []  # not dialled again at once ...
    clock.now = at("2026-09-16 12:00")
    assert await restarted.tick() == []  # ... due 12:00 (started 10:00 + 2 h) but the window is closed
    clock.now = at("2026-09-16 14:30")
    claims = await restarted.tick()  # ... and not skipped
    await restarted.drain()
    assert [c.attempt for c in claims] == [2] and dialer.calls == [PHONE]
    assert [(n, o) for n, o, _ in attempts(sessions)] == [(1, "interrupted"), (2, "answered")]


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from campaigns.runner import Runner
    from config.context import Context
    from config.settings import load_settings
    sys.path.insert(0, sys.argv[1])
    from campaign_support import Clock, at

    class Ringing:
        async def dial(self, number, *, ring_timeout, caller_id, purpose):
            print("ringing", number, flush=True)
            await asyncio.sleep(3600)

    async def main():
        ctx = Context(load_settings())
        r = Runner(ctx, Ringing(), clock=Clock(at("2026-09-16 10:00")))
        await r.tick()
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_kill_9_mid_call_then_restart(ctx, sessions, env) -> None:  # type: ignore[no-untyped-def]
    setup(sessions, 2)
    tests_dir = str(Path(__file__).parent)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, tests_dir], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    try:
        lines: list[str] = []
        while len(lines) < 2:  # both attempts committed and ringing (log lines share stdout)
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, "the child exited before ringing"
            lines += [line] if line.startswith("ringing") else []
        assert sorted(lines) == ["ringing +8613800138001\n", "ringing +8613800138002\n"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL
    dialer = FakeDialer()
    clock = Clock(at("2026-09-16 10:01"))
    r = runner(ctx, dialer, clock)
    assert len(r.recover()) == 2
    assert await r.tick() == [] and dialer.calls == []
    clock.now = at("2026-09-16 14:30")
    await r.tick()
    await r.drain()
    assert sorted(dialer.calls) == ["+8613800138001", "+8613800138002"]
    assert sorted((n, o) for n, o, _ in attempts(sessions)) == [(1, "interrupted")] * 2 + [(2, "answered")] * 2
