"""RFC 4733 (formerly RFC 2833) telephone-events: payload format and a digit detector.

A keypad press arrives as several packets with the same RTP timestamp (the event's start),
a growing duration, and an end packet that senders repeat three times (RFC 4733 2.5.1.4).
`DtmfDetector` yields each press exactly once, on the first packet seen for it, so a menu
reacts without waiting for the key to be released and a lost start packet costs nothing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

EVENT_CHARS = "0123456789*#ABCD"
"""Events 0-15 as keypad characters (RFC 4733 table 3); 16 is hook flash, ignored here."""
_PAYLOAD = struct.Struct("!BBH")


class DtmfParseError(ValueError):
    """A telephone-event payload that cannot be read."""


@dataclass(frozen=True)
class TelephoneEvent:
    event: int
    end: bool = False
    volume: int = 10
    """Power level in -dBm0 (0-63); 10 is typical for keypads."""
    duration: int = 0
    """In RTP timestamp units (samples at 8 kHz) since the event started."""

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Read the first 4-byte event block; extra bytes (rare redundancy blocks) are ignored."""
        if len(payload) < 4:
            raise DtmfParseError(f"telephone-event payload is {len(payload)} bytes, needs 4")
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialize(self) -> bytes:
        if not 0 <= self.event <= 255 or not 0 <= self.volume <= 63 or not 0 <= self.duration <= 0xFFFF:
            raise ValueError(f"telephone-event field out of range: {self}")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    def __bytes__(self) -> bytes:
        return self.serialize()

    @property
    def char(self) -> str | None:
        return EVENT_CHARS[self.event] if self.event < len(EVENT_CHARS) else None


class DtmfDetector:
    """Turn (RTP timestamp, telephone-event payload) pairs into keypad characters, once each.

    A new timestamp starts a new event, except the continuation segment of a press longer
    than the 16-bit duration field (RFC 4733 2.5.1.3): same event, not ended, starting
    where the previous segment's duration ran out.
    """

    def __init__(self) -> None:
        self._timestamp: int | None = None
        self._event: TelephoneEvent | None = None

    def feed(self, timestamp: int, payload: bytes) -> str | None:
        ev = TelephoneEvent.parse(payload)
        if timestamp == self._timestamp and self._event is not None and ev.event == self._event.event:
            self._event = ev
            return None
        previous, previous_ts = self._event, self._timestamp
        self._timestamp, self._event = timestamp, ev
        if (
            previous is not None
            and previous_ts is not None
            and not previous.end
            and previous.event == ev.event
            and timestamp == (previous_ts + previous.duration) & 0xFFFFFFFF
        ):
            return None
        return ev.char
