"""Campaigns end to end: `hotline serve --only ivr --only scheduler` in a subprocess dialling SIPp "citizens".

The service runs on the rehearsal clock (``[calendar] clock_start``) inside a calling window (a
Tuesday morning) or on a public holiday; one SIPp UAS (tests/sipp/uas_campaign.xml) answers
by the last digit of the called number: 1 and 3 press that key, 5 hangs up, 6 is busy, 7
never answers, 4 is not a number. What SIPp saw (its message trace) is the truth for "who was
called, how often, how many at once"; the database for what the service made of it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from campaign_support import make_case, new_campaign
from ivr_harness import HOTLINE, IvrService, clean_environ, ivr_prompts, ivr_service  # noqa: F401 (fixtures)
from sipp_support import SippProcess, free_media_port, free_udp_port, make_rtp_pcap, requires_sipp, start_sipp
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from campaigns.callback_targets import preview_callbacks, select_callbacks
from campaigns.lifecycle import transition
from campaigns.models import Campaign, CampaignAttempt, CampaignTarget, DoNotCall, FollowUp
from campaigns.targets import add_targets, preview
from cases import callbacks
from cases.callbacks import Callback
from cases.models import Case, CaseEvent
from config.db import make_engine, session_factory, transaction
from ivr.models import Call
from recordings.models import Recording

pytestmark = requires_sipp

IN_WINDOW = "2026-09-15T10:00:00+08:00"  # a Tuesday, inside 09:00-12:00
NATIONAL_DAY = "2026-10-01T10:00:00+08:00"
PHONES = {"key1": "13800138001", "key3": "13800138003", "hangs_up": "13800138005", "busy": "13800138006",
          "no_answer": "13800138007", "not_found": "13800138004", "dnc": "13800138008"}


def e164(phone: str) -> str:
    return "+86" + phone


@pytest.fixture
def citizens(tmp_path: Path) -> Iterator[tuple[SippProcess, int]]:
    pcaps = {}
    for key in "13":
        pcaps[f"pcap{key}"] = tmp_path / f"key{key}.pcap"
        make_rtp_pcap(None, pcaps[f"pcap{key}"], digits=[(1.0, key)], trailing_silence=1.0)
    port = free_udp_port()
    proc = start_sipp("uas_campaign", local_port=port, media_port=free_media_port(), calls=10_000, keys=pcaps,
                      workdir=tmp_path / "sipp", timeout=600)
    yield proc, port
    proc.stop()


def service_env(sipp_port: int, clock: str, **more: str) -> dict[str, str]:
    return {
        "HOTLINE_CALENDAR__CLOCK_START": clock,
        "HOTLINE_SIP__DIAL_URI_TEMPLATE": f"sip:{{number}}@127.0.0.1:{sipp_port}",
        "HOTLINE_CAMPAIGNS__TICK_SECONDS": "1",
        "HOTLINE_CAMPAIGNS__RING_TIMEOUT": "5",
        "HOTLINE_CAMPAIGNS__COMMENT_SECONDS": "5",
        **more,
    }


def db(svc: IvrService) -> sessionmaker[Session]:
    return session_factory(make_engine(svc.db_url))


def setup_campaign(sessions: sessionmaker[Session], phones: dict[str, str], *, concurrency: int,
                   max_attempts: int = 2, dnc_after: tuple[str, ...] = ()) -> int:
    """Cases replied in September, a running campaign over them; numbers in ``dnc_after`` go on the list
    *after* the targets were made (straight into the table, as another node would), so the runner must check."""
    with transaction(sessions) as s:
        cases = [make_case(s, f"20260901-{i:04d}", phone) for i, phone in enumerate(phones.values(), 1)]
        campaign = new_campaign(s, "SIPp", windows=["09:00-12:00", "14:30-20:00"], concurrency=concurrency,
                                max_attempts=max_attempts, retry_minutes=1)
        assert add_targets(s, campaign, preview(s, cases)) == len(cases)
        transition(s, campaign, "scheduled")
        for key in dnc_after:
            s.add(DoNotCall(phone=e164(phones[key]), reason="asked", added_by="test"))
        return campaign.id


def targets(sessions: sessionmaker[Session]) -> dict[str, CampaignTarget]:
    with sessions() as s:
        return {t.phone[-11:]: t for t in s.scalars(select(CampaignTarget))}  # type: ignore[index]


def stored_call(sessions: sessionmaker[Session], call_id: int | None) -> Call | None:
    """The call once it has ended and its recording is stored; None until then."""
    with sessions() as s:
        call = s.get(Call, call_id) if call_id is not None else None
        return call if call is not None and call.recording_id is not None and call.ended_at is not None else None


def wait_for(what: str, check: Callable[[], Any], svc: IvrService, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        assert svc.running(), svc.describe()
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached within {timeout} s\n{svc.describe()}")


def dialled(proc: SippProcess) -> dict[str, int]:
    """Called number (national digits) -> distinct INVITEs (by Call-ID) SIPp received."""
    seen: dict[str, set[str]] = {}
    for m in proc.live.messages():
        if m.direction == "received" and m.method == "INVITE":
            user = m.first_line.split()[1].split("@")[0].removeprefix("sip:")
            seen.setdefault(user[-11:], set()).add(m.header("Call-ID") or "")
    return {k: len(v) for k, v in seen.items()}


def max_simultaneous(proc: SippProcess) -> int:
    """Most calls open at once as SIPp saw them: a call is open from its first INVITE to its last message."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, m in enumerate(proc.live.messages()):
        cid = m.header("Call-ID")
        if cid is None:
            continue
        if m.direction == "received" and m.method == "INVITE":
            first.setdefault(cid, i)
        last[cid] = i
    events = sorted([(i, 1) for i in first.values()] + [(last[c] + 0.5, -1) for c in first])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def test_scheduler_alone_is_refused(tmp_path: Path) -> None:
    env = {**clean_environ(), "HOTLINE_DATABASE__URL": f"sqlite:///{tmp_path}/x.db",
           "HOTLINE_STORAGE__ROOT": str(tmp_path / "storage")}
    r = subprocess.run([HOTLINE, "serve", "--only", "scheduler"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "--only ivr --only scheduler" in r.stderr, (r.returncode, r.stdout, r.stderr)


def test_campaign_calls_citizens(ivr_service, citizens) -> None:  # type: ignore[no-untyped-def]
    proc, port = citizens
    svc = ivr_service(service_env(port, IN_WINDOW), start=False, parts=("ivr", "scheduler"))
    sessions = db(svc)
    setup_campaign(sessions, PHONES, concurrency=2, dnc_after=("dnc",))
    svc.start()

    def settled() -> bool:
        return all(t.state in ("done", "failed", "dropped") for t in targets(sessions).values())

    wait_for("every target settled", settled, svc, timeout=200)
    got = targets(sessions)
    summary = {k: (got[p].state, got[p].outcome, got[p].rating, got[p].attempts) for k, p in PHONES.items()}
    assert summary == {
        "key1": ("done", "answered", 1, 1),
        "key3": ("done", "answered", 3, 1),
        "hangs_up": ("done", "answered", None, 1),
        "busy": ("failed", "busy", None, 2),
        "no_answer": ("failed", "no_answer", None, 2),
        "not_found": ("failed", "invalid_number", None, 1),
        "dnc": ("dropped", None, None, 0),
    }, svc.describe()
    assert got[PHONES["dnc"]].drop_reason == "do_not_call"
    # SIPp's view: each attempt one INVITE, nobody on the list dialled, never more than the cap at once
    assert dialled(proc) == {PHONES[k]: n for k, n in
                             {"key1": 1, "key3": 1, "hangs_up": 1, "busy": 2, "no_answer": 2, "not_found": 1}.items()}
    assert max_simultaneous(proc) == 2, "the cap (2) is reached and never exceeded"
    with sessions() as s:
        cases = {c.complainant_phone: c for c in s.scalars(select(Case))}
        assert (cases[PHONES["key1"]].status, cases[PHONES["key1"]].satisfaction) == ("closed", "satisfied")
        reopened = cases[PHONES["key3"]]
        assert (reopened.status, reopened.satisfaction, reopened.key_supervision) == ("accepted", "not_satisfied", True)
        assert cases[PHONES["hangs_up"]].status == "replied", "answered without a rating: an attempt, no change"
        # the retry came after the retry interval (1 minute), on the service clock
        busy = s.scalars(select(CampaignAttempt).join(CampaignTarget)
                         .where(CampaignTarget.phone == e164(PHONES["busy"])).order_by(CampaignAttempt.number)).all()
        assert [a.outcome for a in busy] == ["busy", "busy"] and [a.sip_status for a in busy] == [486, 486]
        assert (busy[1].started_at - busy[0].ended_at).total_seconds() >= 60
        follow = {f.phone for f in s.scalars(select(FollowUp))}
        assert follow == {e164(PHONES[k]) for k in ("busy", "no_answer", "not_found")}
        # the satisfied call: a "campaign" Call row, its comment stored as a "campaign" recording, the case event links it
        attempt = s.scalars(select(CampaignAttempt).join(CampaignTarget)
                            .where(CampaignTarget.phone == e164(PHONES["key1"]))).one()
        assert attempt.call_id is not None and attempt.keys == "1"
        event = s.scalars(select(CaseEvent).where(CaseEvent.case_id == cases[PHONES["key1"]].id,
                                                  CaseEvent.action == "close")).one()
        assert event.data["call_id"] == attempt.call_id and event.data["satisfaction"] == "satisfied"
    call = wait_for("the comment stored", lambda: stored_call(sessions, attempt.call_id), svc, timeout=30)
    with sessions() as s:
        assert (call.direction, call.disposition) == ("out", "campaign")
        rec = s.get(Recording, call.recording_id)
        assert rec is not None and (rec.kind, rec.call_id, rec.channels) == ("campaign", call.id, 1)
        assert 3 <= rec.duration <= 10
        busy_call = s.scalars(select(Call).where(Call.called.contains(PHONES["busy"]))).first()
        assert busy_call is not None and busy_call.disposition == "busy"
    assert not list(svc.live_dir.glob("*.json")), "no sidecar left behind"


def test_no_dial_on_a_holiday(ivr_service, citizens) -> None:  # type: ignore[no-untyped-def]
    proc, port = citizens
    svc = ivr_service(service_env(port, NATIONAL_DAY), start=False, parts=("ivr", "scheduler"))
    sessions = db(svc)
    setup_campaign(sessions, {"key1": PHONES["key1"]}, concurrency=2)
    with transaction(sessions) as s:
        s.scalars(select(Campaign)).one().days = "every_day"  # even "every day" never includes a public holiday
    svc.start()
    wait_for("the campaign running", lambda: "campaign started" in svc.log(), svc, timeout=30)
    time.sleep(5)  # five ticks
    assert dialled(proc) == {}
    t = targets(sessions)[PHONES["key1"]]
    assert (t.state, t.attempts) == ("pending", 0)


def test_kill_9_mid_campaign(ivr_service, citizens) -> None:  # type: ignore[no-untyped-def]
    """Killed during a call: after restart that attempt is closed as interrupted (never placed again), the
    target is retried as attempt 2 after the retry interval, and the target that waited is called once."""
    proc, port = citizens
    phones = {"first": PHONES["key1"], "second": PHONES["key3"]}
    svc = ivr_service(service_env(port, IN_WINDOW), start=False, parts=("ivr", "scheduler"))
    sessions = db(svc)
    setup_campaign(sessions, phones, concurrency=1, max_attempts=2)
    svc.start()

    def in_call() -> bool:
        with sessions() as s:
            open_ = s.scalars(select(CampaignAttempt).where(CampaignAttempt.ended_at.is_(None))).all()
        return bool(open_) and dialled(proc).get(phones["first"]) == 1

    wait_for("the first call in progress", in_call, svc, timeout=30)
    svc.kill()
    svc.restart()

    def settled() -> bool:
        return all(t.state == "done" for t in targets(sessions).values())

    wait_for("both targets done after the restart", settled, svc, timeout=150)
    with sessions() as s:
        rows = s.execute(select(CampaignTarget.phone, CampaignAttempt.number, CampaignAttempt.outcome)
                         .join(CampaignAttempt).order_by(CampaignTarget.id, CampaignAttempt.number)).all()
    assert [(p[-11:], n, o) for p, n, o in rows] == [
        (phones["first"], 1, "interrupted"), (phones["first"], 2, "answered"), (phones["second"], 1, "answered")]
    assert dialled(proc) == {phones["first"]: 2, phones["second"]: 1}, "one INVITE per attempt, none lost"
    assert max_simultaneous(proc) <= 2  # the dead process's call lingers at SIPp until it gives up on it


def test_callback_campaign_rings_the_callback_list(ivr_service, citizens) -> None:  # type: ignore[no-untyped-def]
    """The callback list as targets: the citizen who presses 1 hears "no operator available" (nobody logged in)
    and leaves a message, stored as a voicemail in their name; the entry is completed by the campaign.
    The busy one stays open for a person with a note; the one on the do-not-call list is never rung."""
    proc, port = citizens
    svc = ivr_service(service_env(port, IN_WINDOW, HOTLINE_VOICEMAIL__MAX_SECONDS="5"), start=False,
                      parts=("ivr", "scheduler"))
    sessions = db(svc)
    phones = {k: PHONES[k] for k in ("key1", "hangs_up", "busy", "dnc")}
    with transaction(sessions) as s:
        ids = {k: callbacks.add(s, p, "abandoned").id for k, p in phones.items()}
        s.add(DoNotCall(phone=e164(PHONES["dnc"]), reason="asked", added_by="test"))
        s.flush()
        campaign = new_campaign(s, "Missed calls", purpose="callback", selection={"source": "callbacks"},
                                windows=["09:00-12:00", "14:30-20:00"], concurrency=2, max_attempts=1)
        assert add_targets(s, campaign, preview_callbacks(s, select_callbacks(s), campaign_id=campaign.id)) == 3
        transition(s, campaign, "scheduled")
        cid = campaign.id
    svc.start()

    def settled() -> bool:
        return all(t.state in ("done", "failed", "dropped") for t in targets(sessions).values())

    wait_for("every target settled", settled, svc, timeout=120)
    got = targets(sessions)
    assert {k: (got[p].state, got[p].outcome, got[p].drop_reason) for k, p in phones.items()} == {
        "key1": ("done", "answered", None), "hangs_up": ("done", "answered", None),
        "busy": ("failed", "busy", None), "dnc": ("dropped", None, "do_not_call")}, svc.describe()
    assert dialled(proc) == {PHONES[k]: 1 for k in ("key1", "hangs_up", "busy")}
    with sessions() as s:
        rows = {k: s.get(Callback, v) for k, v in ids.items()}
        assert {k: (r.outcome, r.done_by) for k, r in rows.items()} == {
            "key1": ("reached", f"campaign {cid}"), "hangs_up": ("reached", f"campaign {cid}"),
            "busy": (None, None), "dnc": (None, None)}
        assert "asked for an operator, none available; left a message" in rows["key1"].note
        assert rows["busy"].done_at is None and "unreachable after 1 attempts (last: busy)" in rows["busy"].note
        attempt = s.scalars(select(CampaignAttempt).join(CampaignTarget)
                            .where(CampaignTarget.phone == e164(PHONES["key1"]))).one()
        assert attempt.keys == "1" and attempt.call_id is not None

    call = wait_for("the message stored", lambda: stored_call(sessions, attempt.call_id), svc, timeout=30)
    with sessions() as s:
        rec = s.get(Recording, call.recording_id)
        assert rec is not None and (rec.kind, rec.call_id, rec.channels) == ("voicemail", call.id, 1)
        assert rec.caller is not None and rec.caller.endswith(PHONES["key1"]), "the citizen's number, not the centre's"
        assert 3 <= rec.duration <= 10
    assert not list(svc.live_dir.glob("*.json")), "no sidecar left behind"
