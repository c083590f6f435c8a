"""Missed-call callback campaigns (the callback list as targets) and the refill of freed lines, on both databases.

The dialogue runs on ScriptedCall (tests/test_flows.py); the SIPp test in test_campaign_sipp.py
rings a real UAS. The refill tests hold every fake call open until the test lets it end, so
"the line was refilled" is observed (the dialer's open calls back at the cap) without any tick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from api_support import bearer_headers, make_user
from campaign_support import Clock, FakeDialer, FakeResult, at, make_case, new_campaign
from sqlalchemy import select
from test_flows import ScriptedCall

from api.app import create_app
from campaigns.callback_call import CallbackScript, run_callback_call
from campaigns.callback_targets import preview_callbacks, select_callbacks
from campaigns.errors import CampaignError
from campaigns.lifecycle import create_campaign, transition
from campaigns.models import CampaignAttempt, CampaignTarget, DoNotCall, FollowUp
from campaigns.runner import Runner
from campaigns.targets import add_targets, preview
from campaigns.transfer import Handover
from cases import callbacks
from cases.callbacks import Callback
from config.db import transaction
from config.settings import CampaignSettings
from ivr.flows import CallPort, RecordOutcome

API = "/api/v1/campaigns"
WED = at("2026-09-16 10:00")


def callback_campaign(s, name: str = "Missed calls", **kw):  # type: ignore[no-untyped-def]
    return new_campaign(s, name, purpose="callback", selection={"source": "callbacks"}, **kw)


def staff_id(ctx) -> int:  # type: ignore[no-untyped-def]
    user, _ = make_user(ctx.sessions, "operator")
    return user.id


def seed_list(ctx) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """One entry of each kind the selection and the preview must tell apart; returns their ids by name."""
    person = staff_id(ctx)
    with transaction(ctx.sessions) as s:
        ids = {
            "open": callbacks.add(s, "13800138001", "abandoned", now=at("2026-09-16 08:00")).id,
            "requested": callbacks.add(s, "+86 138 0013 8002", "requested", now=at("2026-09-16 08:05")).id,
            "dnc": callbacks.add(s, "13800138008", "abandoned").id,
            "claimed": callbacks.add(s, "13800138003", "abandoned").id,
            "done": callbacks.add(s, "13800138004", "abandoned").id,
        }
        # what a caller keyed may be possible but not a valid number: stored, never dialled
        bad = Callback(phone="12345678901", reason="requested")
        s.add(bad)
        s.flush()
        ids["invalid"] = bad.id
        s.add(DoNotCall(phone="+8613800138008", reason="asked", added_by="test"))
    with transaction(ctx.sessions) as s:
        callbacks.claim(s, ids["claimed"], person)
        callbacks.claim(s, ids["done"], person)
        callbacks.complete(s, ids["done"], person, "reached")
    return ids


def test_selection_and_preview_with_drop_reasons(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    ids = seed_list(ctx)
    with transaction(sessions) as s:
        other = callback_campaign(s, "Morning sweep")
        # another live campaign already rings the "requested" entry
        add_targets(s, other, preview_callbacks(s, [s.get(Callback, ids["requested"])]))
        chosen = select_callbacks(s)
        assert [c.id for c in chosen] == [ids["open"], ids["requested"], ids["dnc"], ids["invalid"]], \
            "open and unclaimed only, oldest first"
        campaign = callback_campaign(s)
        result = preview_callbacks(s, chosen, campaign_id=campaign.id)
        reasons = {c.callback_id: c.drop_reason for c in result.candidates}
        assert reasons == {ids["open"]: None, ids["requested"]: "already_calling", ids["dnc"]: "do_not_call",
                           ids["invalid"]: "invalid_phone"}
        assert [(c.case_id, c.case_number, c.phone) for c in result.callable] == [(None, None, "+8613800138001")]
        assert add_targets(s, campaign, result) == 1
        # selecting again for the same campaign: the entry is there already, nothing stored twice
        again = preview_callbacks(s, select_callbacks(s), campaign_id=campaign.id)
        assert {c.callback_id: c.drop_reason for c in again.candidates}[ids["open"]] == "already_targeted"
        assert add_targets(s, campaign, again) == 0
        stored = s.scalars(select(CampaignTarget).where(CampaignTarget.campaign_id == campaign.id)).all()
        assert sorted((t.callback_id, t.state, t.drop_reason) for t in stored) == sorted([
            (ids["open"], "pending", None), (ids["dnc"], "dropped", "do_not_call"),  # each stored once
            (ids["invalid"], "dropped", "invalid_phone"), (ids["requested"], "dropped", "already_calling")])


def test_purpose_and_source_go_together(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        with pytest.raises(CampaignError, match="from the callback list"):
            new_campaign(s, "a", purpose="callback")
        with pytest.raises(CampaignError, match="from cases or a CSV"):
            new_campaign(s, "b", selection={"source": "callbacks"})
        c = callback_campaign(s)
        assert c.prompt_script == "callback", "the callback dialogue, not the return visit's"
        given = create_campaign(s, CampaignSettings(), name="c", created_by="x", calendar_timezone="Asia/Shanghai",
                                purpose="callback", selection={"source": "callbacks"}, prompt_script="callback_night")
        assert given.prompt_script == "callback_night"


async def test_results_written_back_to_the_callback_list(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    """Answered (any choice) completes the entry as "campaign <id>"; unreachable leaves it open with a note."""
    with transaction(sessions) as s:
        ids = {name: callbacks.add(s, phone, "abandoned").id for name, phone in (
            ("message", "13800138001"), ("silent", "13800138002"), ("busy", "13800138006"), ("gone", "13800138004"))}
        campaign = callback_campaign(s, max_attempts=2, retry_minutes=60)
        add_targets(s, campaign, preview_callbacks(s, select_callbacks(s), campaign_id=campaign.id))
        transition(s, campaign, "scheduled")
        cid = campaign.id
    clock = Clock(WED)
    dialer = FakeDialer({"+8613800138006": ["busy", "busy"], "+8613800138004": ["invalid_number"]},
                        keys={"+8613800138001": "2", "+8613800138002": ""}, prompt="callback_menu")
    r = Runner(ctx, dialer, clock=clock)
    await r.tick()
    await r.drain()
    clock.now = at("2026-09-16 11:00")
    await r.tick()
    await r.drain()
    assert sorted(dialer.calls) == sorted(["+8613800138001", "+8613800138002", "+8613800138006", "+8613800138004",
                                           "+8613800138006"])
    assert set(dialer.purposes) == {"callback"}, "the dialer records a callback's message as a voicemail"
    message_call = next(c for c in dialer.answered if "record" in c.events)
    assert message_call.keys()[:2] == ["callback_intro", "callback_menu"]
    assert message_call.keys()[-2:] == ["voicemail", "thank_you"] and message_call.events == ["tone", "record", "hangup"]
    with sessions() as s:
        rows = {k: s.get(Callback, v) for k, v in ids.items()}
        done = rows["message"]
        assert (done.outcome, done.done_by, done.claimed_by) == ("reached", f"campaign {cid}", None)
        assert done.done_at is not None and "left a message" in done.note and f"campaign {cid}" in done.note
        assert (rows["silent"].outcome, rows["silent"].done_by) == ("reached", f"campaign {cid}")
        assert "chose nothing" in rows["silent"].note
        for name in ("busy", "gone"):
            assert rows[name].done_at is None and rows[name].claimed_by is None, "left open for a person"
        assert "unreachable after 2 attempts (last: busy)" in rows["busy"].note
        assert "number not in service" in rows["gone"].note
        assert s.scalars(select(FollowUp)).all() == [], "the callback list is the task list: no SMS/letter task"
        attempt = s.scalars(select(CampaignAttempt).where(CampaignAttempt.phone == "+8613800138001")).one()
        assert (attempt.outcome, attempt.keys, attempt.comment_seconds, attempt.rating) == ("answered", "2", 12.0, None)
        states = {t.callback_id: (t.state, t.attempts) for t in s.scalars(select(CampaignTarget))}
        assert states == {ids["message"]: ("done", 1), ids["silent"]: ("done", 1), ids["busy"]: ("failed", 2),
                          ids["gone"]: ("failed", 1)}
    with sessions() as s:  # still listed for staff
        assert {c.id for c in callbacks.listing(s, state="open")} == {ids["busy"], ids["gone"]}


async def test_after_the_operator_queue_an_entry_is_closed_only_if_nobody_still_waits(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    """Key 1 and an operator talked: reached. Key 1, then a callback booked (or a hang-up) in the queue:
    the queue folded that request into this very entry, so it stays open with the note."""
    phones = {"talked": "13800138001", "booked": "13800138002", "hung_up": "13800138003"}
    with transaction(sessions) as s:
        ids = {k: callbacks.add(s, p, "abandoned").id for k, p in phones.items()}
        campaign = callback_campaign(s)
        add_targets(s, campaign, preview_callbacks(s, select_callbacks(s), campaign_id=campaign.id))
        transition(s, campaign, "scheduled")
        cid = campaign.id
    dialer = FakeDialer(keys={"+86" + p: "1" for p in phones.values()}, prompt="callback_menu")
    became = {"+86" + phones[k]: Handover(k2) for k, k2 in
              (("talked", "operator"), ("booked", "callback"), ("hung_up", "abandoned"))}

    async def on_duty() -> bool:
        return True

    async def transfer(call: CallPort) -> Handover:
        return became[dialer.calls[dialer.answered.index(call)]]  # type: ignore[arg-type]

    r = Runner(ctx, dialer, clock=Clock(WED), operator_open=on_duty, transfer=transfer)
    await r.tick()
    await r.drain()
    with sessions() as s:
        rows = {k: s.get(Callback, v) for k, v in ids.items()}
        assert (rows["talked"].outcome, rows["talked"].done_by) == ("reached", f"campaign {cid}")
        assert "reached, talked to an operator" in rows["talked"].note
        for name, what in (("booked", "asked to be called back"), ("hung_up", "hung up while waiting")):
            assert rows[name].done_at is None, f"{name}: still wants a call"
            assert f"reached, asked for an operator, {what}" in rows[name].note
        assert {t.callback_id: t.choice for t in s.scalars(select(CampaignTarget))} == {
            ids["talked"]: "operator", ids["booked"]: "callback", ids["hung_up"]: "abandoned"}


async def test_entry_taken_by_a_person_meanwhile_is_not_rung(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    person = staff_id(ctx)
    with transaction(sessions) as s:
        a = callbacks.add(s, "13800138001", "abandoned").id
        b = callbacks.add(s, "13800138002", "abandoned").id
        c = callbacks.add(s, "13800138003", "abandoned").id
        campaign = callback_campaign(s)
        add_targets(s, campaign, preview_callbacks(s, select_callbacks(s), campaign_id=campaign.id))
        transition(s, campaign, "scheduled")
    with transaction(sessions) as s:
        callbacks.claim(s, a, person)
        callbacks.claim(s, b, person)
        callbacks.complete(s, b, person, "reached")
        s.delete(s.get(Callback, c))
    dialer = FakeDialer(prompt="callback_menu")
    r = Runner(ctx, dialer, clock=Clock(WED))
    assert await r.tick() == []
    assert dialer.calls == []
    with sessions() as s:
        got = sorted((t.state, t.drop_reason) for t in s.scalars(select(CampaignTarget)))
    assert got == [("dropped", "callback_claimed"), ("dropped", "callback_deleted"), ("dropped", "callback_done")]


async def test_person_claims_during_the_call_keeps_it(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    person = staff_id(ctx)
    with transaction(sessions) as s:
        entry = callbacks.add(s, "13800138001", "abandoned").id
        campaign = callback_campaign(s)
        add_targets(s, campaign, preview_callbacks(s, select_callbacks(s), campaign_id=campaign.id))
        transition(s, campaign, "scheduled")
    gate = asyncio.Event()
    r = Runner(ctx, FakeDialer(gate=gate, prompt="callback_menu", keys={"+8613800138001": "2"}), clock=Clock(WED))
    await r.tick()
    with transaction(sessions) as s:
        callbacks.claim(s, entry, person)
    gate.set()
    await r.drain()
    with sessions() as s:
        row = s.get(Callback, entry)
        assert (row.claimed_by, row.done_at, row.done_by) == (person, None, None)
        assert "reached, left a message" in row.note, "the person sees what the campaign already did"


# -- the dialogue ------------------------------------------------------------------------------


def script(*, on_duty: bool = False, transfer: Callable[..., object] | None = None) -> CallbackScript:
    async def open_() -> bool:
        return on_duty

    return CallbackScript(operator_open=open_, transfer=transfer)  # type: ignore[arg-type]


async def test_key_2_leaves_a_message() -> None:
    call = ScriptedCall({"callback_menu": "2"})
    result = await run_callback_call(call, script())
    assert call.keys() == ["callback_intro", "callback_menu", "voicemail", "thank_you"]
    assert call.events == ["tone", "record", "hangup"]
    assert (result.choice, result.keys, result.comment.seconds) == ("message", "2", 12.0)  # type: ignore[union-attr]


@pytest.mark.parametrize("on_duty", [False, True])
async def test_key_1_without_a_queue_says_no_operator_and_takes_a_message(on_duty: bool) -> None:
    call = ScriptedCall({"callback_menu": "1"})
    result = await run_callback_call(call, script(on_duty=on_duty))  # no transfer in this process
    assert call.keys() == ["callback_intro", "callback_menu", "callback_no_operator", "voicemail", "thank_you"]
    assert (result.choice, result.operator_requested) == ("message", True)


async def test_key_1_off_duty_never_tries_the_transfer() -> None:
    tried: list[object] = []

    async def transfer(call: object) -> Handover:
        tried.append(call)
        return Handover("operator")

    call = ScriptedCall({"callback_menu": "1"})
    await run_callback_call(call, script(on_duty=False, transfer=transfer))
    assert tried == [] and "callback_no_operator" in call.keys()


async def test_key_1_on_duty_hands_the_call_over() -> None:
    async def transfer(call: ScriptedCall) -> Handover:
        call.events.append("transferred")
        return Handover("operator")

    call = ScriptedCall({"callback_menu": "1"})
    result = await run_callback_call(call, script(on_duty=True, transfer=transfer))
    assert call.keys() == ["callback_intro", "callback_menu", "callback_transfer"] and call.events == ["transferred"]
    assert result.choice == "operator" and result.comment is None


async def test_the_queue_ends_the_call_whatever_became_of_it() -> None:
    """The queue's own fallbacks (a message after the wait, a booked callback) are the whole rest of the call."""
    message = RecordOutcome("digit", 9.0, heard_speech=True)
    for handover in (Handover("message", message), Handover("callback"), Handover("abandoned")):

        async def transfer(call: object, handover: Handover = handover) -> Handover:
            return handover

        call = ScriptedCall({"callback_menu": "1"})
        result = await run_callback_call(call, script(on_duty=True, transfer=transfer))
        assert call.keys()[-1] == "callback_transfer" and call.events == [], "nothing played or recorded twice"
        assert (result.choice, result.comment, result.operator_requested) == (handover.choice, handover.message, True)


async def test_9_repeats_bad_keys_are_asked_again_then_goodbye() -> None:
    call = ScriptedCall({"callback_menu": "9", "callback_intro": ""})
    call.keys_at["callback_intro"] = ""
    result = await run_callback_call(call, script())
    # 9, then nothing twice: three tries, then goodbye without a message
    assert call.keys().count("callback_intro") == 2 and call.keys()[-1] == "goodbye"
    assert (result.choice, result.keys, result.comment) == (None, "9", None)
    hostile = ScriptedCall({"callback_menu": "#"})
    result = await run_callback_call(hostile, script())
    assert "invalid_input" in hostile.keys() and result.choice is None and "record" not in hostile.events


async def test_hang_up_mid_way_keeps_what_was_pressed() -> None:
    call = ScriptedCall({"callback_menu": "2"}, hang_up_at="voicemail")
    result = await run_callback_call(call, script())
    assert result.keys == "2" and result.choice == "message" and result.comment is None
    assert "hangup" not in call.events  # the callee hung up, nothing to hang up
    mid = ScriptedCall({"callback_menu": "2"}, record=RecordOutcome("hangup", 4.0, True))
    result = await run_callback_call(mid, script())
    assert result.comment is not None and result.comment.seconds == 4.0 and mid.keys()[-1] == "voicemail"


# -- the API -------------------------------------------------------------------------------------


async def test_api_create_preview_and_bad_input(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    ids = seed_list(ctx)
    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, "campaign", username="camp")
    h = await bearer_headers(client, user.username, password)
    r = await client.post(API, json={"name": "Callbacks", "purpose": "callback", "selection": {"source": "callbacks"}},
                          headers=h)
    body = await r.json()
    assert r.status == 201, body
    assert (body["purpose"], body["prompt_script"]) == ("callback", "callback")
    assert body["preview"] == {"targets": 2, "dropped": 2,
                               "dropped_by_reason": {"do_not_call": 1, "invalid_phone": 1}}
    r = await client.get(f"{API}/{body['id']}/preview", headers=h)
    items = (await r.json())["items"]
    assert {i["callback_id"] for i in items if i["drop_reason"] is None} == {ids["open"], ids["requested"]}
    assert all(i["case_number"] is None for i in items)
    # CSV of case numbers into a callback campaign: refused, nothing added
    r = await client.post(f"{API}/{body['id']}/targets/csv", data="20260901-0001\n", headers={**h, "Content-Type": "text/csv"})
    assert r.status == 422 and "callback list" in (await r.json())["error"]["message"]
    for bad in ({"purpose": "callback"},  # the default source is cases
                {"purpose": "return_visit", "selection": {"source": "callbacks"}},
                {"purpose": "callback", "selection": {"source": "callbacks", "since": "yesterday"}},
                {"purpose": "callback", "selection": {"source": "<script>"}},
                {"purpose": ["callback"], "selection": {"source": "callbacks"}}):
        r = await client.post(API, json={"name": "x", **bad}, headers=h)
        err = await r.json()
        assert r.status == 422, (bad, err)
        assert any(f["field"].startswith(("selection", "purpose")) for f in err["error"]["details"]["fields"]), err
    r = await client.post(f"{API}/{body['id']}/start", headers=h)
    assert r.status == 200 and (await r.json())["state"] == "scheduled"


# -- refill ----------------------------------------------------------------------------------------


class HeldDialer:
    """Every call stays open until the test ends it, so the test sees the engine refill a line (no tick)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.open: list[asyncio.Event] = []
        self.active = 0
        self.max_active = 0
        self.changed = asyncio.Condition()

    async def dial(self, number: str, *, ring_timeout: float, caller_id: str, purpose: str) -> FakeResult:
        end = asyncio.Event()
        async with self.changed:
            self.calls.append(number)
            self.open.append(end)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.changed.notify_all()
        try:
            await end.wait()
            return FakeResult("no_answer", 408, None)
        finally:
            async with self.changed:
                self.active -= 1
                self.changed.notify_all()

    async def end_one(self) -> None:
        next(e for e in self.open if not e.is_set()).set()

    async def wait_until(self, check: Callable[[], bool]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(check), 30)


def setup_return_visit(sessions, n: int, **kw) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        cases = [make_case(s, f"20260901-{i:04d}", f"1380013{8000 + i:04d}") for i in range(1, n + 1)]
        campaign = new_campaign(s, max_attempts=1, **kw)
        add_targets(s, campaign, preview(s, cases))
        transition(s, campaign, "scheduled")


async def test_a_freed_line_is_refilled_at_once_and_the_cap_held(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    setup_return_visit(sessions, 10, concurrency=3)
    dialer = HeldDialer()
    r = Runner(ctx, dialer, clock=Clock(WED))
    assert len(await r.tick()) == 3  # the only tick of this test
    await dialer.wait_until(lambda: dialer.active == 3)
    for ended in range(1, 8):
        await dialer.end_one()
        # the line comes back while targets remain: 3 open again, the 3 + ended-th call placed
        await dialer.wait_until(lambda n=ended: len(dialer.calls) == 3 + n and dialer.active == 3)
    for _ in range(3):
        await dialer.end_one()
    await r.drain()
    assert dialer.max_active == 3 and len(dialer.calls) == len(set(dialer.calls)) == 10
    with sessions() as s:
        assert {t.state for t in s.scalars(select(CampaignTarget))} == {"failed"}
        assert s.scalar(select(CampaignAttempt.id).where(CampaignAttempt.ended_at.is_(None))) is None


async def test_refill_keeps_the_window_rule(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    setup_return_visit(sessions, 5, concurrency=2)
    clock = Clock(at("2026-09-16 11:59"))
    dialer = HeldDialer()
    r = Runner(ctx, dialer, clock=clock)
    assert len(await r.tick()) == 2
    await dialer.wait_until(lambda: dialer.active == 2)
    clock.now = at("2026-09-16 12:00")  # the window closes while both calls are open
    await dialer.end_one()
    await dialer.end_one()
    await r.drain()
    assert len(dialer.calls) == 2, "no refill outside the window"
    with sessions() as s:
        assert sorted(t.state for t in s.scalars(select(CampaignTarget))) == ["failed"] * 2 + ["pending"] * 3


async def test_refill_off_waits_for_the_tick(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    setup_return_visit(sessions, 4, concurrency=2)
    dialer = HeldDialer()
    r = Runner(ctx, dialer, clock=Clock(WED), refill=False)
    await r.tick()
    await dialer.wait_until(lambda: dialer.active == 2)
    await dialer.end_one()
    await dialer.end_one()
    await r.drain()
    assert len(dialer.calls) == 2
    await r.tick()
    await dialer.wait_until(lambda: dialer.active == 2)
    assert len(dialer.calls) == 4
    await dialer.end_one()
    await dialer.end_one()
    await r.drain()
