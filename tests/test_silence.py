"""SilenceDetector: speech must start before silence can end a message; frames are the clock."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import pytest

from ivr.media.silence import SilenceDetector, SilenceEvent, rms

SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "speech" / "tts_cmn_complaint_8k.wav"
QUIET = bytes(320)
HISS = struct.pack("<2h", 60, -60) * 80  # line noise, RMS 60
LOUD = struct.pack("<2h", 3000, -3000) * 80  # RMS 3000


def test_rms() -> None:
    assert rms(QUIET) == 0
    assert rms(HISS) == 60
    assert rms(LOUD) == 3000
    assert rms(b"") == 0
    with pytest.raises(ValueError):
        rms(b"\x00")


def test_silence_before_speech_never_ends_the_message() -> None:
    d = SilenceDetector(threshold=500, silence_seconds=1.0)
    assert not any(d.feed(HISS) for _ in range(500))
    assert not d.heard_speech


def test_events_and_exact_frame_of_timeout() -> None:
    d = SilenceDetector(threshold=500, silence_seconds=1.0, min_speech_frames=3)
    events = [d.feed_event(f) for f in [QUIET] * 10 + [LOUD] * 5]
    assert events.count(SilenceEvent.SPEECH_STARTED) == 1
    assert events.index(SilenceEvent.SPEECH_STARTED) == 12  # the third loud frame
    quiet = [d.feed_event(HISS) for _ in range(60)]
    assert quiet.index(SilenceEvent.SILENCE_AFTER_SPEECH) == 49  # 50 frames = 1.0 s
    assert quiet.count(SilenceEvent.SILENCE_AFTER_SPEECH) == 1  # once only
    assert d.timed_out


def test_a_click_does_not_count_as_speech_and_loud_frames_reset_the_count() -> None:
    d = SilenceDetector(threshold=500, silence_seconds=0.2, min_speech_frames=3)
    assert not any(d.feed(f) for f in [LOUD, LOUD, QUIET] * 20)  # 40 ms clicks, never speech
    assert not d.heard_speech
    for f in [LOUD] * 3 + [QUIET] * 9 + [LOUD] + [QUIET] * 9:
        assert not d.feed(f)  # 9 quiet frames (< 10), a loud one resets, 9 again
    assert d.feed(QUIET)  # the tenth in a row


def test_real_speech_then_silence() -> None:
    with wave.open(str(SPEECH)) as w:
        pcm = w.readframes(w.getnframes())
    d = SilenceDetector(threshold=500, silence_seconds=2.0)
    frames = [pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320)]
    fired = [i for i, f in enumerate(frames) if d.feed(f)]
    assert d.heard_speech
    # Natural pauses between phrases in this clip are shorter than 2 s.
    assert fired == []
    tail = [d.feed(QUIET) for _ in range(150)]
    assert tail.index(True) < 100  # within 2 s of silence after the last loud frame
    assert tail.count(True) == 1


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        SilenceDetector(threshold=0)
    with pytest.raises(ValueError):
        SilenceDetector(silence_seconds=0)
