"""G.711 μ-law (PCMU, payload type 0) and A-law (PCMA, payload type 8) on 16-bit linear PCM.

Bytes in, bytes out: 16-bit little-endian mono PCM at 8 kHz (what `wave` reads and what
the recorder writes) to one byte per sample, and back. The work is done by the standard
library's `audioop`; this is the one module that imports it, silencing its Python 3.11/3.12
DeprecationWarning in one place (on 3.13+ the `audioop-lts` package supplies the same
module without the warning). Each codec knows its own law and its own silence byte: pyVoIP
sends μ-law bytes labelled PT 8 (PYVOIP.md item 3), a mistake this table makes impossible.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PCMU = 0
PCMA = 8
SAMPLE_RATE = 8000
FRAME_SAMPLES = 160
"""Samples in one 20 ms packet at 8 kHz."""
ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5
"""The code words linear 0 encodes to; not 0x00, which is (near) full scale in both laws."""


def _native(pcm: bytes) -> bytes:
    """audioop works in native byte order; our PCM is little-endian everywhere else."""
    if len(pcm) % 2:
        raise ValueError(f"16-bit PCM needs an even number of bytes, got {len(pcm)}")
    return audioop.byteswap(pcm, 2) if sys.byteorder == "big" else pcm


def _little(native: bytes) -> bytes:
    return audioop.byteswap(native, 2) if sys.byteorder == "big" else native


def ulaw_encode(pcm: bytes) -> bytes:
    return audioop.lin2ulaw(_native(pcm), 2)


def ulaw_decode(data: bytes) -> bytes:
    return _little(audioop.ulaw2lin(data, 2))


def alaw_encode(pcm: bytes) -> bytes:
    return audioop.lin2alaw(_native(pcm), 2)


def alaw_decode(data: bytes) -> bytes:
    return _little(audioop.alaw2lin(data, 2))


@dataclass(frozen=True)
class G711:
    name: str
    payload_type: int
    silence_byte: int
    encode: Callable[[bytes], bytes]
    decode: Callable[[bytes], bytes]

    def silence(self, samples: int = FRAME_SAMPLES) -> bytes:
        """`samples` of encoded silence: what a lost frame becomes in a recording."""
        return bytes([self.silence_byte]) * samples


CODECS = {
    PCMU: G711("PCMU", PCMU, ULAW_SILENCE, ulaw_encode, ulaw_decode),
    PCMA: G711("PCMA", PCMA, ALAW_SILENCE, alaw_encode, alaw_decode),
}
BY_NAME = {c.name: c for c in CODECS.values()}


def codec_for(payload_type: int) -> G711:
    """The codec of a static payload type; KeyError names the type for anything else."""
    try:
        return CODECS[payload_type]
    except KeyError:
        raise KeyError(f"payload type {payload_type} is not G.711 (PCMU 0 or PCMA 8)") from None
