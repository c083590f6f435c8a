"""The built-in hold music: a short, calm melody generated in code, so it is ours to use.

A bundled recording would need a licence trail; a generated one needs none. The piece is
a music-box style arpeggio over the I–vi–IV–V progression in C major (the most familiar
of progressions, nothing to get tired of in two minutes) with a soft bass note per bar.
Every note is a sine with a little second harmonic and an exponential decay, all within
the telephone band (the melody sits at 330–1050 Hz, the bass harmonic carries it above
300 Hz), peaking well below full scale so G.711 does not distort it. The last bar dies
away before the end so the file loops without a click.

Deterministic: the same bytes on every machine, so `prompts build` can tell its own file
from a centre's replacement by hash.
"""

from __future__ import annotations

import array
import math
import sys

RATE = 8000
BEAT = 0.3
"""Seconds per arpeggio note (200 notes a minute: unhurried)."""
LEVEL = 0.22
"""Peak amplitude of one note as a fraction of full scale; overlapping tails stay below 0.6."""

# MIDI note numbers. Four chords, each bar: the bass, then an eight-note arpeggio.
_BARS: tuple[tuple[int, tuple[int, ...]], ...] = (
    (48, (72, 76, 79, 84, 79, 76, 72, 76)),  # C
    (45, (69, 72, 76, 81, 76, 72, 69, 72)),  # Am
    (41, (65, 69, 72, 77, 72, 69, 65, 69)),  # F
    (43, (67, 71, 74, 79, 74, 71, 67, 74)),  # G
)
REPEATS = 2
TAIL = 1.5
"""Seconds of decay after the last note, so the loop point is silent."""


def _freq(midi: int) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _add_note(buf: array.array[float], start: float, midi: int, length: float, level: float, decay: float) -> None:
    f = _freq(midi)
    i0 = int(start * RATE)
    n = min(int(length * RATE), len(buf) - i0)
    attack = int(0.008 * RATE)
    w1, w2 = 2 * math.pi * f / RATE, 4 * math.pi * f / RATE
    for i in range(n):
        env = math.exp(-i / (decay * RATE)) * (min(1.0, i / attack) if attack else 1.0)
        buf[i0 + i] += level * env * (math.sin(w1 * i) + 0.35 * math.sin(w2 * i))


def melody() -> bytes:
    """The hold music as 16-bit little-endian mono PCM at 8 kHz (about 21 seconds)."""
    bar = BEAT * 8
    total = REPEATS * len(_BARS) * bar + TAIL
    buf = array.array("d", bytes(8 * int(total * RATE)))
    t = 0.0
    for _ in range(REPEATS):
        for bass, notes in _BARS:
            # The bass an octave up too: a phone line drops the fundamental below 300 Hz.
            _add_note(buf, t, bass + 12, bar + 0.6, LEVEL * 0.7, 0.9)
            for k, note in enumerate(notes):
                _add_note(buf, t + k * BEAT, note, 1.2, LEVEL * (1.0 if k % 4 == 0 else 0.8), 0.35)
            t += bar
    # A fade over the tail so the loop point is exactly silent.
    fade = int(TAIL * RATE)
    for i in range(fade):
        buf[len(buf) - fade + i] *= 1.0 - i / fade
    pcm = array.array("h", (max(-32767, min(32767, int(v * 32767))) for v in buf))
    if sys.byteorder == "big":  # pragma: no cover - WAV is little-endian
        pcm.byteswap()
    return pcm.tobytes()
