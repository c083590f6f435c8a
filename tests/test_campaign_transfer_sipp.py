"""Return-visit key 0 end to end: `hotline serve --only ivr --only scheduler` dials a SIPp citizen who presses 0,
and an operator on a SIPp phone takes the call from the same queue inbound callers wait in.

The citizen (tests/sipp/uas_dial_digit.xml) answers, sends RFC 4733 key 0 a second in and then
a 440 Hz tone; the operator phone (tests/sipp/op_answer.xml) answers and plays 1 kHz, and hangs
up after a while. Who heard what is measured as in tests/test_operators_sipp.py: the RTP the
service sends on each leg, captured on the loopback interface, classified per 20 ms frame; the
stereo recording per channel. Only frame counts are asserted, never timings.

Without operators on duty key 0 says so and the survey goes on: that is the survey's unit test
(tests/test_campaign_survey.py) over the decision tested on both databases (tests/test_presence.py).
"""

from __future__ import annotations

import array
import wave
from pathlib import Path
from typing import Any

import pytest
from ivr_harness import IvrService, ivr_prompts, ivr_service  # noqa: F401 (fixtures)
from sipp_support import free_media_port, free_udp_port, make_rtp_pcap, parse_sdp_audio, requires_pcap_play, start_sipp
from sqlalchemy import select
from test_campaign_sipp import db, e164, service_env, setup_campaign, targets, wait_for
from test_operators_sipp import (  # noqa: F401 (sniffer is a fixture)
    OFFICE_HOURS,
    add_operator,
    operator_pcap,
    sniffer,
    start_phone,
    state_of,
    tone_frames,
    tone_wav,
    wait_state,
)

from campaigns.models import CampaignAttempt
from cases.models import Case, CaseEvent
from ivr.models import Call
from recordings.models import Recording

pytestmark = [requires_pcap_play, pytest.mark.slow]

CITIZEN = "13800138001"


def silent_wav(path: Path) -> Path:
    """Hold music of silence: the built-in melody has 440 Hz notes, which would pass for the citizen's tone."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(16000))
    return path


def test_key_0_puts_the_citizen_through_to_an_operator(ivr_service, sniffer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    citizen_port, op_port = free_udp_port(), free_udp_port()
    env = service_env(citizen_port, OFFICE_HOURS, HOTLINE_SIP__RTP_PORT_MIN=str(sniffer.ports.start),
                      HOTLINE_SIP__RTP_PORT_MAX=str(sniffer.ports.stop - 1),
                      HOTLINE_QUEUE__HOLD_MUSIC=str(silent_wav(tmp_path / "hold.wav")),
                      HOTLINE_QUEUE__WRAP_UP_SECONDS="20")
    svc = ivr_service(env, start=False, parts=("ivr", "scheduler"))
    sessions = db(svc)
    cid = setup_campaign(sessions, {"citizen": CITIZEN}, concurrency=1, max_attempts=1)
    op_id = add_operator(svc, "opcampaign", op_port)
    svc.hotline("operators", "presence", "opcampaign", "available")
    phone = start_phone("op_answer", tmp_path, "op", op_port, pcap=operator_pcap(tmp_path), hold_ms=12_000)
    key0_then_tone = make_rtp_pcap(tone_wav(tmp_path / "a440.wav", 440, 60), tmp_path / "citizen.pcap",
                                   digits=[(1.0, "0")]).path
    citizen = start_sipp("uas_dial_digit", local_port=citizen_port, media_port=free_media_port(),
                         keys={"pcap": key0_then_tone, "bye_wait_ms": 120_000}, workdir=tmp_path / "citizen",
                         timeout=150)
    svc.start()

    wait_state(svc, "opcampaign", "busy", timeout=90)
    citizen_result, op_result = citizen.wait(120), phone.wait(60)
    assert citizen_result.ok, citizen_result.describe() + svc.describe()
    assert op_result.ok, op_result.describe() + svc.describe()
    assert citizen_result.received("BYE"), "the operator hung up: the service ends the citizen's leg too"
    wait_state(svc, "opcampaign", "wrap_up", timeout=30)

    # The campaign's result: answered, no rating, transferred; the case says so and links the call.
    t = targets(sessions)[CITIZEN]
    assert (t.state, t.outcome, t.rating, t.choice) == ("done", "answered", None, "operator"), svc.describe()
    with sessions() as s:
        attempt = s.scalars(select(CampaignAttempt)).one()
        assert (attempt.keys, attempt.choice) == ("0", "operator") and attempt.call_id is not None
        case = s.scalars(select(Case)).one()
        event = s.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id, CaseEvent.actor == "campaign")).one()
        assert (event.action, event.note) == ("return_visit_attempt", "callee talked to an operator")
        assert (event.data["campaign_id"], event.data["call_id"]) == (cid, attempt.call_id)
    assert case.status == "replied", "no rating: the case waits for its return visit as before"

    # The citizen's Call row is the campaign call's: queued, answered by the operator, the stereo recording on it.
    def stored() -> Any:
        with sessions() as s:
            row = s.get(Call, attempt.call_id)
            return row if row is not None and row.recording_id is not None and row.ended_at is not None else None

    row = wait_for("the conversation stored", stored, svc, timeout=30)
    assert (row.direction, row.called) == ("out", e164(CITIZEN))
    assert (row.disposition, row.queue_exit, row.operator_user_id) == ("operator", "operator", op_id)
    assert row.queue_wait_seconds is not None
    with sessions() as s:
        recs = s.scalars(select(Recording).where(Recording.call_id == row.id)).all()
    assert [(r.kind, r.channels, r.id) for r in recs] == [("conversation", 2, row.recording_id)], \
        "one recording: the conversation (no survey comment, no message)"
    assert recs[0].caller == e164(CITIZEN), "filed under the citizen's number, not the centre's"

    # Who heard what: the service's own RTP on each leg.
    citizen_sdp = parse_sdp_audio(citizen_result.received("INVITE")[0].body)
    op_sdp = parse_sdp_audio(op_result.received("INVITE")[0].body)
    assert citizen_sdp is not None and op_sdp is not None
    to_citizen = tone_frames(sniffer.audio_from(citizen_sdp.port))
    to_operator = tone_frames(sniffer.audio_from(op_sdp.port))
    assert to_operator["440"] >= 100, f"the operator did not hear the citizen's 440 Hz: {to_operator}"
    assert to_citizen["1000"] >= 100, f"the citizen did not hear the operator's 1 kHz: {to_citizen}"
    assert to_operator["1000"] < 5 and to_citizen["440"] < 5, (to_citizen, to_operator)

    # The stereo recording: citizen left (440 Hz), operator right (1 kHz).
    with wave.open(str(svc.storage / recs[0].storage_key), "rb") as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        stereo = array.array("h", w.readframes(w.getnframes()))
    left, right = tone_frames(stereo[0::2].tobytes()), tone_frames(stereo[1::2].tobytes())
    assert left["440"] >= 100 and left["1000"] < 5, left
    assert right["1000"] >= 100 and right["440"] < 5, right
    assert not list(svc.live_dir.glob("*.json")), "no sidecar left behind"
    assert state_of(svc, "opcampaign") in ("wrap_up", "available")
