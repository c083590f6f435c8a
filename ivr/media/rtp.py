"""RTP packets (RFC 3550 section 5.1): parse and serialise, nothing else.

`RtpPacket.parse` raises one `RtpParseError` with a message per defect (truncated CSRC,
truncated extension, bad padding, wrong version), as aiortc's `rtp.py` does, so a stray or
hostile datagram on a media port costs one log line. Ordering a received stream (duplicates,
reordering, loss filled with the codec's silence, restarts) is the clock-driven playout
buffer's job: ivr/media/playout.py.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

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
