"""Tones generated in code (the beep before a message is not a prompt a centre re-records)."""

from __future__ import annotations

import math
import struct

RATE = 8000


def beep(freq: float = 1000.0, seconds: float = 0.4, level: float = 0.3) -> bytes:
    """16-bit little-endian mono PCM at 8 kHz, with 10 ms ramps so it does not click."""
    n = int(RATE * seconds)
    ramp = int(RATE * 0.01)
    out = []
    for i in range(n):
        gain = min(1.0, i / ramp, (n - 1 - i) / ramp) if ramp else 1.0
        out.append(int(32767 * level * gain * math.sin(2 * math.pi * freq * i / RATE)))
    return struct.pack(f"<{n}h", *out)
