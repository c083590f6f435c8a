"""RTP packets (RFC 3550 section 5.1) and a receiver's sequence tracker.

`RtpPacket.parse` raises one `RtpParseError` with a message per defect (truncated CSRC,
truncated extension, bad padding, wrong version), as aiortc's `rtp.py` does, so a stray or
hostile datagram on a media port costs one log line. `SequenceTracker` turns arrival order
into playout order: duplicates dropped, reordering repaired within a small window, and each
lost 20 ms frame reported as `None` so the recorder writes *silence* for it. pyVoIP writes
0x00 bytes instead, which is full-scale in its 8-bit unsigned audio (PYVOIP.md item 4), and
the issue asks that recorded duration match wall time.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

RTP_VERSION = 2
HEADER_SIZE = 12
_HEADER = struct.Struct("!BBHII")


class RtpParseError(ValueError):
    """A datagram on the media port that is not a usable RTP packet."""


@dataclass
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""
    padding: int = 0
    """Number of padding octets at the end, the count octet included; 0 means no P bit."""

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < HEADER_SIZE:
            raise RtpParseError(f"RTP packet is shorter than {HEADER_SIZE} bytes ({len(data)})")
        b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        version = b0 >> 6
        if version != RTP_VERSION:
            raise RtpParseError(f"RTP version is {version}, not 2")
        if 192 <= b1 <= 223:
            raise RtpParseError(f"RTCP packet (type {b1}) on the RTP port")
        pos = HEADER_SIZE
        cc = b0 & 0x0F
        if len(data) < pos + 4 * cc:
            raise RtpParseError("RTP packet has truncated CSRC")
        csrc = struct.unpack_from(f"!{cc}I", data, pos)
        pos += 4 * cc
        profile = None
        extension = b""
        if b0 & 0x10:
            if len(data) < pos + 4:
                raise RtpParseError("RTP packet has truncated extension header")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if len(data) < pos + 4 * words:
                raise RtpParseError("RTP packet has truncated extension")
            extension = data[pos : pos + 4 * words]
            pos += 4 * words
        end = len(data)
        padding = 0
        if b0 & 0x20:
            if end == pos:
                raise RtpParseError("RTP packet has padding flag but no padding")
            padding = data[-1]
            if padding == 0 or padding > end - pos:
                raise RtpParseError(f"RTP packet padding length {padding} is invalid")
            end -= padding
        return cls(
            payload_type=b1 & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=data[pos:end],
            marker=bool(b1 & 0x80),
            csrc=tuple(csrc),
            extension_profile=profile,
            extension=extension,
            padding=padding,
        )

    def serialize(self) -> bytes:
        _check_range("payload type", self.payload_type, 127)
        _check_range("sequence", self.sequence, 0xFFFF)
        _check_range("timestamp", self.timestamp, 0xFFFFFFFF)
        _check_range("SSRC", self.ssrc, 0xFFFFFFFF)
        _check_range("padding", self.padding, 255)
        if len(self.csrc) > 15:
            raise ValueError(f"at most 15 CSRCs, not {len(self.csrc)}")
        if len(self.extension) % 4 or len(self.extension) > 4 * 0xFFFF:
            raise ValueError("extension must be a whole number of 32-bit words")
        has_ext = self.extension_profile is not None
        b0 = (RTP_VERSION << 6) | (0x20 if self.padding else 0) | (0x10 if has_ext else 0) | len(self.csrc)
        b1 = (0x80 if self.marker else 0) | self.payload_type
        out = [_HEADER.pack(b0, b1, self.sequence, self.timestamp, self.ssrc)]
        out += [struct.pack("!I", c) for c in self.csrc]
        if has_ext:
            out.append(struct.pack("!HH", self.extension_profile, len(self.extension) // 4))
            out.append(self.extension)
        out.append(self.payload)
        if self.padding:
            out.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(out)

    def __bytes__(self) -> bytes:
        return self.serialize()


def _check_range(what: str, value: int, top: int) -> None:
    if not 0 <= value <= top:
        raise ValueError(f"{what} {value} is outside 0..{top}")


@dataclass
class SequenceStats:
    received: int = 0
    """Unique packets accepted."""
    lost: int = 0
    """Frames given up on and reported as None (filled with silence)."""
    duplicates: int = 0
    late: int = 0
    """Packets that arrived after their frame had already been filled with silence."""
    restarts: int = 0
    """Sequence jumps confirmed by a following packet (a sender restart or a new stream)."""
    strays: int = 0
    """Single packets far off the sequence, dropped (RFC 3550 A.1 probation)."""


@dataclass
class SequenceTracker:
    """Order one RTP stream by sequence number (wraparound included) for a recorder.

    `push` returns the frames now ready in playout order: payloads, and None for each frame
    given up as lost. A missing packet is waited for until `depth` later packets have come
    (depth 0: fill at once; 2-3 repairs the reordering seen on real networks at 40-60 ms
    extra latency for the recording only). Timestamps are not used, so a sender using
    silence suppression (timestamp jumps, continuous sequence) needs the caller to fill
    by timestamp as well.
    """

    depth: int = 2
    max_dropout: int = 3000
    max_misorder: int = 100
    stats: SequenceStats = field(default_factory=SequenceStats)
    _next: int | None = None
    _pending: dict[int, bytes] = field(default_factory=dict)
    _seen: set[int] = field(default_factory=set)
    _probe: tuple[int, bytes] | None = None

    def push(self, sequence: int, payload: bytes) -> list[bytes | None]:
        if not 0 <= sequence <= 0xFFFF:
            raise ValueError(f"sequence {sequence} is outside 0..65535")
        if self._next is None:
            self._next = sequence
        delta = ((sequence - self._next + 0x8000) & 0xFFFF) - 0x8000
        ext = self._next + delta
        out: list[bytes | None] = []
        if delta > self.max_dropout or delta < -self.max_misorder:
            probe, self._probe = self._probe, (ext, payload)
            if probe is None or ext != probe[0] + 1:
                self.stats.strays += 1
                return out
            self._probe = None
            self.stats.strays -= 1  # the probe is confirmed: a restart, not a stray
            out = self.flush()
            self.stats.restarts += 1
            self._next = probe[0]
            self._accept(probe[0], probe[1])
        else:
            self._probe = None
            if ext < self._next or ext in self._pending:
                if ext in self._seen or ext in self._pending:
                    self.stats.duplicates += 1
                else:
                    self.stats.late += 1
                return out
        self._accept(ext, payload)
        return out + self._drain()

    def flush(self) -> list[bytes | None]:
        """Everything still waiting, gaps as None: call at the end of the stream."""
        out: list[bytes | None] = []
        while self._pending and self._next is not None:
            out += self._emit_next()
        return out

    def _accept(self, ext: int, payload: bytes) -> None:
        self._pending[ext] = payload
        self._seen.add(ext)
        self.stats.received += 1
        if len(self._seen) > 4 * self.max_misorder:
            floor = (self._next or 0) - self.max_misorder
            self._seen = {s for s in self._seen if s >= floor}

    def _drain(self) -> list[bytes | None]:
        out: list[bytes | None] = []
        while self._pending and self._next is not None:
            if self._next in self._pending or max(self._pending) - self._next > self.depth:
                out += self._emit_next()
            else:
                break
        return out

    def _emit_next(self) -> list[bytes | None]:
        assert self._next is not None
        payload = self._pending.pop(self._next, None)
        if payload is None:
            self.stats.lost += 1
        self._next += 1
        return [payload]


def fill_silence(frames: Iterable[bytes | None], silence: bytes) -> bytes:
    """Join playout frames, writing `silence` (one frame of the codec's silence) for each None."""
    return b"".join(silence if f is None else f for f in frames)
