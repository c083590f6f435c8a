"""End-of-message detection for voicemail: "speech started", then "N seconds of silence after it".

Why this simple: the issue asks to stop recording after `silence_seconds` (default 10) of
silence *following speech*, so a caller who thinks before speaking is not cut off, and one who
has finished does not leave minutes of line noise. An energy gate per 20 ms frame is what
answering machines use and is enough for that; Vosk decides what was said later.

- A frame is *loud* when its RMS (16-bit linear) is at or above `threshold`
  (`[voicemail] silence_threshold`, default 500 ≈ -36 dBFS; line noise on a quiet phone is
  well below 100).
- Speech *starts* after `min_speech_frames` loud frames in a row (default 3 = 60 ms), so a
  click, a key press or a plosive burst on the line does not arm the timeout.
- Silence is counted in frames, not wall time: the recorder's frames come from the media clock,
  one per 20 ms (silence for lost packets too), so frames are time and tests need no clock.
  Any loud frame resets the count.

`feed(frame)` returns True exactly once: on the frame that completes `silence_seconds` of
quiet after speech. `feed_event()` gives the same as a `SilenceEvent` for callers that also
want the moment speech started.
"""

from __future__ import annotations

import enum
import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FRAME_SECONDS = 0.02


class SilenceEvent(enum.Enum):
    SPEECH_STARTED = "speech_started"
    SILENCE_AFTER_SPEECH = "silence_after_speech"


def rms(frame: bytes) -> int:
    """RMS of 16-bit little-endian linear PCM (0 for an empty frame)."""
    if len(frame) % 2:
        raise ValueError(f"16-bit PCM needs an even number of bytes, got {len(frame)}")
    if sys.byteorder == "big":  # pragma: no cover - little-endian everywhere we run
        frame = audioop.byteswap(frame, 2)
    return int(audioop.rms(frame, 2)) if frame else 0


class SilenceDetector:
    """Watch 20 ms PCM frames for speech, then for `silence_seconds` of quiet after it."""

    def __init__(self, *, threshold: int = 500, silence_seconds: float = 10.0,
                 min_speech_frames: int = 3, frame_seconds: float = FRAME_SECONDS) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, not {threshold}")
        if silence_seconds <= 0:
            raise ValueError(f"silence_seconds must be positive, not {silence_seconds}")
        if min_speech_frames < 1:
            raise ValueError(f"min_speech_frames must be at least 1, not {min_speech_frames}")
        self.threshold = threshold
        self.silence_frames = max(1, round(silence_seconds / frame_seconds))
        self.min_speech_frames = min_speech_frames
        self.heard_speech = False
        """True once speech has started (a message with none is likely an empty call)."""
        self.timed_out = False
        self.frames = 0
        self._loud_run = 0
        self._quiet_run = 0

    @property
    def quiet_seconds(self) -> float:
        """Silence since the last loud frame, in seconds of audio."""
        return self._quiet_run * FRAME_SECONDS

    def feed_event(self, frame: bytes) -> SilenceEvent | None:
        """One frame in; an event when speech starts, or when the silence after it is long enough."""
        self.frames += 1
        if self.timed_out:
            return None
        if rms(frame) >= self.threshold:
            self._quiet_run = 0
            self._loud_run += 1
            if not self.heard_speech and self._loud_run >= self.min_speech_frames:
                self.heard_speech = True
                return SilenceEvent.SPEECH_STARTED
            return None
        self._loud_run = 0
        self._quiet_run += 1
        if self.heard_speech and self._quiet_run >= self.silence_frames:
            self.timed_out = True
            return SilenceEvent.SILENCE_AFTER_SPEECH
        return None

    def feed(self, frame: bytes) -> bool:
        """True exactly once: on the frame that completes the silence after speech."""
        return self.feed_event(frame) is SilenceEvent.SILENCE_AFTER_SPEECH
