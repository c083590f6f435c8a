"""A clock-driven playout buffer for recording: one frame out per 20 ms tick, whatever arrives.

Why clock-driven: a tracker that releases frames when *packets* arrive records a caller who
sends nothing (or stops, or whose phone suppresses silence) as nothing, and the file is
shorter than the call (the very pyVoIP defect of PYVOIP.md item 4). Here the media clock
pulls exactly one frame per tick and the buffer answers with the next frame in sequence, or
None (the recorder writes silence), so the recording's duration is wall time. (An earlier
packet-driven `SequenceTracker` in rtp.py did the ordering alone; it was removed so that
ordering, loss and restarts are decided in one place, here.)

`PlayoutBuffer` orders *packets*. `Reframer` on top of it cuts them into the 20 ms frames the
recorder takes, so a caller whose phone sends 10, 30, 40 or 60 ms packets (a=ptime, RFC 3551
4.2: a receiver should accept 0-200 ms per packet) records as exactly as one sending 20 ms.

Jitter delay: playout starts `delay` ticks (default 3 = 60 ms) after the first packet of a
talkspurt arrives (or at once if `delay + 1` frames are already waiting), so a packet may
arrive up to ~60 ms after its successor and still land in order. A missing frame whose
successors are already here when its turn comes is declared lost (None, counted). If the
buffer runs dry (the caller stopped sending, silence suppression, a DTMF press that replaced
audio), the tick yields None without consuming a sequence number and the buffer re-primes with
the same delay when packets return, so the recording always lags real time by at most about
`delay` ticks and those frames are handed out by `drain()` when recording stops: nothing received
is lost. Duplicates and frames arriving after their turn ("late") are counted and dropped.
A jump of more than `max_dropout` ahead or `max_misorder` behind is held on probation (RFC 3550
A.1): confirmed by the next packet it is a restart and the new stream continues the recording
after what is already buffered; alone it is a stray and dropped. A new SSRC restarts at once.

Pure: no sockets, no clock (the tick is the clock), so every case is unit-tested directly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class PlayoutStats:
    received: int = 0
    """Unique audio packets accepted into the buffer."""
    played: int = 0
    """Frames handed out with audio."""
    lost: int = 0
    """Frames given up as missing while later ones were waiting (filled with silence)."""
    filled: int = 0
    """Ticks with nothing to play (caller silent, buffer priming): silence, no frame consumed."""
    late: int = 0
    """Packets that came after their turn had passed."""
    duplicates: int = 0
    restarts: int = 0
    strays: int = 0
    overflow: int = 0
    """Packets dropped because `max_frames` were already waiting."""


@dataclass
class PlayoutBuffer:
    delay: int = 3
    max_dropout: int = 3000
    max_misorder: int = 100
    max_frames: int = 1500
    """30 s of 20 ms frames: only a sender far faster than real time fills it."""
    stats: PlayoutStats = field(default_factory=PlayoutStats)
    _pending: dict[int, bytes] = field(default_factory=dict)
    _ready: deque[bytes | None] = field(default_factory=deque)
    _next: int | None = None
    """Extended sequence number of the frame the next tick plays (a floor while priming)."""
    _priming: bool = True
    _top: int | None = None
    """Highest extended sequence number accepted (the reference for unwrapping)."""
    _held: int = 0
    """Ticks spent priming with something waiting."""
    _ssrc: int | None = None
    _probe: tuple[int, bytes] | None = None
    """(sequence, payload) of a far-off packet waiting for confirmation."""
    _played_recent: set[int] = field(default_factory=set)
    """Positions played lately: a packet behind the playout point is a duplicate if here, else late."""
    lost_last_tick: bool = False
    """The last `tick()` gave None for a packet given up as lost (not for a dry or priming buffer)."""

    def __len__(self) -> int:
        return len(self._pending) + len(self._ready)

    def push(self, sequence: int, payload: bytes, ssrc: int | None = None) -> None:
        """Accept one audio packet (any arrival order)."""
        if not 0 <= sequence <= 0xFFFF:
            raise ValueError(f"sequence {sequence} is outside 0..65535")
        if ssrc is not None:
            if self._ssrc is not None and ssrc != self._ssrc and self._top is not None:
                self._restart()
            self._ssrc = ssrc
        if self._top is None:
            self._top = sequence
            self._store(sequence, payload)
            return
        delta = ((sequence - self._top + 0x8000) & 0xFFFF) - 0x8000
        ext = self._top + delta
        if delta > self.max_dropout or delta < -self.max_misorder:
            probe, self._probe = self._probe, (sequence, payload)
            if probe is None or sequence != (probe[0] + 1) & 0xFFFF:
                self.stats.strays += 1
                return
            self.stats.strays -= 1  # the probe is confirmed: a restart, not a stray
            self._probe = None
            self._restart()
            self._top = probe[0]
            self._store(probe[0], probe[1])
            self._top = probe[0] + 1
            self._store(probe[0] + 1, payload)
            return
        self._probe = None
        if ext in self._pending:
            self.stats.duplicates += 1
            return
        if self._next is not None and ext < self._next:
            if ext in self._played_recent:
                self.stats.duplicates += 1
            else:
                self.stats.late += 1
            return
        if ext > self._top:
            self._top = ext
        self._store(ext, payload)

    def tick(self) -> bytes | None:
        """The frame for this 20 ms period: a payload, or None for silence."""
        self.lost_last_tick = False
        if self._ready:
            frame = self._ready.popleft()
            self._count(frame)
            self.lost_last_tick = frame is None
            return frame
        pending = self._pending
        if self._priming:
            if not pending:
                self._held = 0
                self.stats.filled += 1
                return None
            self._held += 1
            if self._held <= self.delay and len(pending) <= self.delay:
                self.stats.filled += 1
                return None
            self._priming = False
            self._next = min(pending)  # frames never received during a pause are not "lost"
        nxt = self._next
        assert nxt is not None
        frame = pending.pop(nxt, None)
        self._next = nxt + 1
        if frame is not None:
            self._mark(nxt)
            self.stats.played += 1
            return frame
        if pending:
            self.stats.lost += 1
            self.lost_last_tick = True
            return None
        # Dry: the caller stopped sending. Keep the position; re-prime when packets return.
        self._next = nxt
        self._priming = True
        self._held = 0
        self.stats.filled += 1
        return None

    def drain(self) -> list[bytes | None]:
        """Everything still buffered, in order, gaps as None: call when recording stops."""
        out: list[bytes | None] = list(self._ready)
        self._ready.clear()
        out += self._take_pending()
        for frame in out:
            self._count(frame)
        self._priming = True
        self._held = 0
        return out

    # -- internals ---------------------------------------------------------------------------

    def _mark(self, ext: int) -> None:
        """Remember recently played positions, to tell a duplicate from a late packet."""
        recent = self._played_recent
        recent.add(ext)
        if len(recent) > 2 * self.max_misorder:
            floor = ext - self.max_misorder
            self._played_recent = {s for s in recent if s >= floor}

    def _store(self, ext: int, payload: bytes) -> None:
        if len(self._pending) >= self.max_frames:
            self.stats.overflow += 1
            return
        self._pending[ext] = payload
        self.stats.received += 1

    def _count(self, frame: bytes | None) -> None:
        if frame is None:
            self.stats.lost += 1
        else:
            self.stats.played += 1

    def _restart(self) -> None:
        """A new stream: queue what the old one left (in order, gaps as None), start afresh."""
        self.stats.restarts += 1
        self._ready.extend(self._take_pending())
        self._next = None
        self._priming = True
        self._top = None
        self._held = self.delay  # the leftover frames already waited; the new ones start at once
        self._played_recent = set()

    def _take_pending(self) -> list[bytes | None]:
        """Remove and return the waiting frames from the playout point on, gaps as None."""
        pending = self._pending
        if not pending:
            return []
        start = min(pending) if self._priming or self._next is None else self._next
        out = [pending.pop(e, None) for e in range(start, max(pending) + 1)]
        pending.clear()
        if self._next is not None or out:
            self._next = start + len(out)
        return out


@dataclass
class Reframer:
    """20 ms frames for the recorder from a `PlayoutBuffer` of packets of any duration.

    A 20 ms packet (the usual case) passes straight through, one per tick. Longer packets
    are cut across ticks (a 40 ms packet feeds two ticks, two 30 ms packets three), shorter
    ones are joined, and a packet lost is filled with as much silence as the packets around
    it carry, so the recording still lasts as long as the call. Works on encoded G.711
    (one byte per sample): `silence` is the codec's one-byte silence (0xFF for PCMU).
    """

    buffer: PlayoutBuffer = field(default_factory=PlayoutBuffer)
    silence: bytes = b"\xff"
    frame_bytes: int = 160
    _carry: bytearray = field(default_factory=bytearray)
    _packet_bytes: int = 160
    """Size of the last audio packet played: what a lost one stood for."""

    @property
    def stats(self) -> PlayoutStats:
        return self.buffer.stats

    def push(self, sequence: int, payload: bytes, ssrc: int | None = None) -> None:
        self.buffer.push(sequence, payload, ssrc)

    def tick(self) -> bytes | None:
        """This period's frame (`frame_bytes` long), or None when there is nothing to play."""
        carry, size = self._carry, self.frame_bytes
        while len(carry) < size:
            frame = self.buffer.tick()
            if frame is not None:
                if not carry and len(frame) == size:
                    self._packet_bytes = size
                    return frame  # the 20 ms fast path: no copying
                if frame:
                    self._packet_bytes = len(frame)
                carry += frame
            elif self.buffer.lost_last_tick:
                if not carry and self._packet_bytes == size:
                    return None
                carry += self.silence * self._packet_bytes
            else:  # dry or priming: the caller sends nothing right now
                if not carry:
                    return None
                carry += self.silence * (size - len(carry))
        out = bytes(carry[:size])
        del carry[:size]
        return out

    def drain(self) -> list[bytes | None]:
        """What is still buffered, cut into frames (the last one padded with silence)."""
        data = bytearray(self._carry)
        self._carry.clear()
        for frame in self.buffer.drain():
            data += self.silence * self._packet_bytes if frame is None else frame
        if not data:
            return []
        size = self.frame_bytes
        data += self.silence * (-len(data) % size)
        return [bytes(data[i : i + size]) for i in range(0, len(data), size)]
