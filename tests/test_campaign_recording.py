"""A campaign call's comment takes the inbound messages' path (ivr/live.py): sidecar first, stored as a
"campaign" recording of its Call, or recovered as one after a crash."""

from __future__ import annotations

import wave

from config.db import transaction, utcnow
from ivr import live
from ivr.models import Call
from recordings.models import Recording


def _half_written_wav(path, seconds: float) -> None:  # type: ignore[no-untyped-def]
    """A mono 8 kHz WAV whose header still says 0 frames, as a killed writer leaves it."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((b"\x10\x27\xf0\xd8" * 2) * int(8000 * seconds / 4))
    data = bytearray(path.read_bytes())
    data[40:44] = b"\0\0\0\0"  # the data chunk size a crash never updated
    path.write_bytes(bytes(data))


def test_comment_left_by_a_crash_is_recovered_as_a_campaign_recording(settings, sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        row = Call(sip_call_id="campaign-crash@test", direction="out", caller="12389", called="+8613800138001",
                   started_at=utcnow(), answered_at=utcnow(), disposition="campaign")
        s.add(row)
        s.flush()
        wav = live.begin(settings, row, live.CAMPAIGN)
        call_id = row.id
    assert wav.name == f"{call_id}.campaign.wav" and wav.with_suffix(".json").exists()
    _half_written_wav(wav, 2.0)
    stored = live.recover_live(sessions, settings, [])
    assert len(stored) == 1 and not wav.exists() and not wav.with_suffix(".json").exists()
    with sessions() as s:
        rec = s.get(Recording, stored[0])
        row = s.get(Call, call_id)
        assert rec is not None and row is not None
        assert (rec.kind, rec.channels, rec.call_id) == ("campaign", 1, call_id)
        assert 1.9 <= rec.duration <= 2.1
        assert (row.recording_id, row.disposition, row.end_reason) == (rec.id, "campaign", "recovered_after_crash")
