"""Two-channel conversation audio: interleaving on the media clock, and splitting it again.

A bridged conversation is recorded as one 8 kHz 16-bit stereo WAV, left = caller, right =
operator, so a reviewer hears who said what and each side can be transcribed on its own.
Both channels must advance on the *same* 20 ms clock or they drift apart over a long call:
`StereoRecorder` is a ticker client that writes exactly one stereo frame per period, taking
one frame from each side's queue and zeros (silence) where a side has nothing, the same
rule the mono recorder follows for a caller who sends nothing. Each side is fed by its
`MediaSession.start_recording` sink (jitter-buffered, gaps already silence), and since the
sessions sit on the same ticker, the frames of one period are paired with each other.

Crash safety is the writer's (ivr/media/wavwriter.py): on disk within a second, repairable
after kill -9. Interleaving uses `array` slice assignment (C speed, no numpy needed).
"""

from __future__ import annotations

import array
import logging
import sys
import wave
from collections import deque
from pathlib import Path

from ivr.media.session import PCM_FRAME_BYTES, PCM_SILENCE
from ivr.media.wavwriter import WavAppender

_LOGGER = logging.getLogger(__name__)

MAX_BACKLOG = 50
"""Frames (1 s) a side may run ahead of the clock before the oldest are dropped (never in normal use)."""


def _samples(pcm: bytes) -> array.array[int]:
    a = array.array("h")
    a.frombytes(pcm)
    if sys.byteorder == "big":  # pragma: no cover - our PCM is little-endian on every host
        a.byteswap()
    return a


def _bytes(a: array.array[int]) -> bytes:
    if sys.byteorder == "big":  # pragma: no cover
        a = array.array("h", a)
        a.byteswap()
    return a.tobytes()


def interleave(left: bytes, right: bytes) -> bytes:
    """Two 16-bit LE mono buffers of equal length into one stereo buffer (L R L R ...)."""
    if len(left) != len(right) or len(left) % 2:
        raise ValueError(f"channels need the same even length, got {len(left)} and {len(right)} bytes")
    out = array.array("h", bytes(2 * len(left)))
    out[0::2] = _samples(left)
    out[1::2] = _samples(right)
    return _bytes(out)


def split(stereo: bytes) -> tuple[bytes, bytes]:
    """A 16-bit LE stereo buffer into its (left, right) mono buffers."""
    if len(stereo) % 4:
        raise ValueError(f"16-bit stereo needs a multiple of 4 bytes, got {len(stereo)}")
    a = _samples(stereo)
    return _bytes(a[0::2]), _bytes(a[1::2])


def split_wav(path: str | Path, left: str | Path, right: str | Path) -> float:
    """Write the channels of a 16-bit stereo WAV as two mono WAVs; returns the duration.

    For tools that take mono files only; the transcription engine itself reads one channel
    of a stereo file directly (`Engine.transcribe(channel=...)`).
    """
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 2 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: not a 16-bit stereo WAV ({w.getnchannels()} ch, {8 * w.getsampwidth()} bit)")
        rate = w.getframerate()
        frames = w.readframes(w.getnframes())
    for target, data in zip((left, right), split(frames), strict=True):
        with wave.open(str(target), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(data)
    return len(frames) / (4 * rate)


class StereoRecorder:
    """Write a live stereo WAV, one frame per tick: `left`/`right` are the two sessions' sinks.

    Register it on the ticker *after* both sessions (the Bridge does), so each period's
    frames are paired; were it ticked first, each side would lag one frame, equally.
    A write error (full disk) stops the recording, never the call, as in MediaSession.
    """

    def __init__(self, writer: WavAppender) -> None:
        if writer.channels != 2 or writer.sample_width != 2:
            raise ValueError(f"StereoRecorder needs a 16-bit 2-channel writer, not {writer.channels} ch")
        self.writer = writer
        self._left: deque[bytes] = deque()
        self._right: deque[bytes] = deque()
        self.frames = 0
        self.dropped = 0
        self.error: BaseException | None = None

    @property
    def path(self) -> Path:
        return self.writer.path

    def left(self, frame: bytes) -> None:
        self._put(self._left, frame)

    def right(self, frame: bytes) -> None:
        self._put(self._right, frame)

    def _put(self, queue: deque[bytes], frame: bytes) -> None:
        if len(frame) != PCM_FRAME_BYTES:
            frame = (frame + PCM_SILENCE)[:PCM_FRAME_BYTES]
        queue.append(frame)
        if len(queue) > MAX_BACKLOG:
            queue.popleft()
            self.dropped += 1

    def tick(self) -> None:
        """One period: one stereo frame, silence for a side that gave nothing."""
        left = self._left.popleft() if self._left else PCM_SILENCE
        right = self._right.popleft() if self._right else PCM_SILENCE
        self._write(left, right)

    def _write(self, left: bytes, right: bytes) -> None:
        if self.error is not None or self.writer.closed:
            return
        try:
            self.writer.write(interleave(left, right))
            self.frames += 1
        except Exception as e:
            self.error = e
            _LOGGER.exception("conversation recording failed; recording stopped, call continues")

    def close(self) -> float:
        """Write what the sides still hold (the jitter buffers' tail), fix the header; seconds."""
        while self._left or self._right:
            self.tick()
        return self.writer.close()
