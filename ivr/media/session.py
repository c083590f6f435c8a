"""One call's RTP media on asyncio (interface fixed by the lead; the media work fills it in).

Why not pyVoIP's media: three threads per call, sleep-paced sending that drifts, blocking
reads that drop silence and 0x00-filled losses (../shared/PYVOIP.md items 4 and 8). Here all
calls share one 20 ms ticker with absolute deadlines (../shared/MEDIA.md).

Contract used by the call layer (ivr/call.py):

    ticker = Ticker()                    # ivr/media/ticker.py; one per process, started by the IVR
    await ticker.start(); await ticker.stop()
    session = await MediaSession.open(host, (port_min, port_max), ticker=ticker,
                                      payload_type=0|8, dtmf_payload_type=101|None)
    session.local_port: int
    session.set_remote((host, port))     # from the SDP; latches to the real source of the first packet
    await session.play(pcm: bytes, *, interrupt_on_digit: bool = False) -> str | None
        # pcm = 16-bit little-endian mono 8 kHz linear audio; sent as 20 ms frames on the ticker,
        # silence (the codec's silence byte) sent when nothing is playing so NAT/peers see a stream.
        # Returns the digit that interrupted it (and leaves that digit in `digits`), else None.
    session.start_recording(sink: Callable[[bytes], None])
        # sink gets 320-byte (20 ms, 16-bit 8 kHz) frames in sequence order, reordered, duplicates
        # dropped, gaps filled with silence so duration == wall time; also called with silence while
        # no RTP arrives at all (so a caller who sends nothing records as silence, not as nothing).
    session.stop_recording()
    session.digits: asyncio.Queue[str]   # RFC 4733 telephone-events, one per key press
    session.last_rx: float | None        # loop.time() of the last RTP packet received
    session.stats -> dict                # packets in/out, lost, late, duplicates, bad packets
    await session.close()

Additions: `digits` is a `DigitQueue` (an asyncio.Queue with `peek()`, so a flow can see a
typed-ahead key without taking it); `closed`; `remote` (where we send: the latched source
once latched, else the SDP address); `recording_error` (the exception a sink raised, which
stopped the recording but not the call); `open(..., rng=random.Random(...))` for injected
SSRC / initial sequence / timestamp; `open(..., jitter_frames=3)`.

Send path: on every tick a playing session sends the next 20 ms of its prompt, otherwise one
codec-silence frame (only once a remote address is known). Sequence +1 and timestamp +160
per packet, marker on the stream's first packet and on the first packet of each prompt that
follows silence, SSRC and initial sequence/timestamp random (RFC 3550 5.1). The prompt is
encoded once when queued (PCMA really A-law: `g711.CODECS`), so a tick costs one slice,
one `struct.pack` and one `sendto`.

Receive path: every datagram is parsed; anything unusable is counted and dropped, never
raised (a hostile peer costs a counter). Latching (symmetric RTP, as SBCs and Asterisk's
`rtp_symmetric` do): until latched, the first valid packet with a negotiated payload type
(audio or telephone-event) from *any* address fixes the peer, because callers behind NAT
send from an address the SDP does not show; afterwards packets from any other address are
dropped (`wrong_source`) and we send to the latched address. Audio goes into a clock-driven
`PlayoutBuffer` (see ivr/media/playout.py for the 60 ms jitter delay); the recording sink is
fed one decoded frame per tick from it, silence when it has nothing, so duration is wall time.
Packets of any duration are accepted (a=ptime 10, 30, 40, 60 ...: the `Reframer` cuts them into
20 ms frames); we always send 20 ms, the G.711 default every peer takes (ivr/sip/sdp.py).

Digits: RFC 4733 telephone-events, and `key_pressed(digit)` for digits the SIP side received
another way (SIP INFO application/dtmf-relay, some PBXs' fallback): both go into `digits` and
interrupt a prompt the same way.

Relaying (for ivr/media/bridge.py): `start_relay(handler)` hands every accepted audio and
telephone-event packet to `handler` the moment it arrives, and `send_relayed(...)` sends one
packet at once on this session's own stream (our SSRC, our sequence, the source's timestamp
plus a fixed offset, so the far end sees the source's timing, gaps and event timestamps
unchanged). While relaying, the ticker stops sending prompt/silence packets; only when nothing
was relayed for `RELAY_IDLE_TICKS` periods (the other side is on hold, muted with silence
suppression, or gone) does the tick send codec silence again, so NAT bindings and the peer's
stream stay alive; the next relayed packet re-anchors the timestamp after that silence and
carries the marker bit. A new source SSRC (the other leg's phone restarted its stream)
re-anchors the same way.

Re-INVITEs: `set_remote()` with an address different from the previous SDP address forgets
the latched source, so a phone that moved (new address after a re-INVITE) is followed;
`sending = False` (the SIP side sets it for a far end that put us on hold: `a=sendonly` or
`a=inactive`) keeps receiving but sends nothing, and `sending = True` resumes the stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ivr.media.dtmf import DtmfDetector, DtmfParseError
from ivr.media.g711 import FRAME_SAMPLES, codec_for
from ivr.media.playout import PlayoutBuffer, Reframer
from ivr.media.rtp import RtpPacket, RtpParseError
from ivr.media.ticker import Ticker

_LOGGER = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")
_TS_MASK = 0xFFFFFFFF
RELAY_IDLE_TICKS = 3
"""Periods without a relayed packet (60 ms, more than normal jitter) before filler silence is sent."""
PCM_FRAME_BYTES = 2 * FRAME_SAMPLES
"""One 20 ms frame of 16-bit 8 kHz linear PCM: what the recording sink receives."""
PCM_SILENCE = bytes(PCM_FRAME_BYTES)

Address = tuple[str, int]


class MediaError(OSError):
    """The media path cannot be set up (e.g. no free RTP port in the configured range)."""


class DigitQueue(asyncio.Queue[str]):
    """The keypad digits of a call, with `peek()` so a prompt can stop for a typed-ahead key
    while leaving it for the menu to read."""

    def peek(self) -> str | None:
        queue: deque[str] = self._queue  # type: ignore[attr-defined]  # asyncio.Queue's storage hook
        return queue[0] if queue else None


@dataclass
class _Playback:
    """One queued prompt: its encoded bytes and where sending has got to."""

    data: bytes
    future: asyncio.Future[str | None]
    interrupt_on_digit: bool
    pos: int = 0


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, session: MediaSession) -> None:
        self.session = session
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.session._received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a caller who is gone, and the like: counted, not fatal.
        self.session._counters["send_errors"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class MediaSession:
    """RTP for one call, driven by the shared ticker. Build with `await MediaSession.open(...)`."""

    def __init__(
        self,
        *,
        ticker: Ticker,
        payload_type: int,
        dtmf_payload_type: int | None,
        rng: random.Random | None = None,
        jitter_frames: int = 3,
    ) -> None:
        self._codec = codec_for(payload_type)
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self._ticker = ticker
        rng = rng or random.Random()
        self.ssrc = rng.getrandbits(32)
        self._seq = rng.getrandbits(16)
        self._ts = rng.getrandbits(32)
        self._marker = True
        self._silence_payload = self._codec.silence()
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Protocol | None = None
        self.local_port = 0
        self._sdp_remote: Address | None = None
        self._latched: Address | None = None
        self.digits = DigitQueue()
        self.last_rx: float | None = None
        self._dtmf = DtmfDetector()
        self._jitter_frames = jitter_frames
        self._playout = self._new_playout()
        self._plays: deque[_Playback] = deque()
        self._sink: Callable[[bytes], None] | None = None
        self.recording_error: BaseException | None = None
        self._closed = False
        self._closed_event = asyncio.Event()
        self.sending = True
        """False while the far end holds the call (a=sendonly / a=inactive): receive only."""
        self._relay: Callable[[RtpPacket], None] | None = None
        self._relay_anchor: tuple[int, int] | None = None
        """(source SSRC, timestamp offset) of the stream being relayed, None until the next packet."""
        self._relay_idle = 0
        self._loop = asyncio.get_running_loop()
        self._counters = {
            "packets_in": 0,
            "bytes_in": 0,
            "packets_out": 0,
            "dtmf_packets": 0,
            "digits": 0,
            "bad_packets": 0,
            "rtcp": 0,
            "wrong_payload_type": 0,
            "wrong_source": 0,
            "odd_size": 0,
            "send_errors": 0,
            "frames_recorded": 0,
            "relayed_out": 0,
            "relay_errors": 0,
            "filler_out": 0,
        }

    # -- construction -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port_range: tuple[int, int],
        *,
        ticker: Ticker,
        payload_type: int,
        dtmf_payload_type: int | None = 101,
        rng: random.Random | None = None,
        jitter_frames: int = 3,
    ) -> MediaSession:
        """Bind an even UDP port from `port_range` (inclusive) and join the ticker.

        Ports are tried from a random even start, wrapping around, each bound once and kept
        (no bind-close probing, which races between calls). RTCP (port + 1) is not bound.
        """
        session = cls(ticker=ticker, payload_type=payload_type, dtmf_payload_type=dtmf_payload_type,
                      rng=rng, jitter_frames=jitter_frames)
        low, high = port_range
        first = low + (low % 2)
        evens = list(range(first, high + 1, 2))
        if not evens:
            raise MediaError(f"no even port in RTP range {low}-{high}")
        start = random.randrange(len(evens))
        loop = asyncio.get_running_loop()
        last_error: OSError | None = None
        for port in evens[start:] + evens[:start]:
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: _Protocol(session), local_addr=(host, port))
            except OSError as e:
                last_error = e
                continue
            session._transport = transport
            session._protocol = protocol
            session.local_port = port
            ticker.register(session)
            return session
        raise MediaError(f"no free RTP port in {low}-{high} on {host}: {last_error}")

    # -- public API ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ticker(self) -> Ticker:
        """The media clock this session runs on (a bridge and its recorder must share it)."""
        return self._ticker

    @property
    def remote(self) -> Address | None:
        """Where RTP goes: the latched source once a packet came, else the SDP address."""
        return self._latched or self._sdp_remote

    @property
    def latched(self) -> Address | None:
        return self._latched

    def set_remote(self, addr: Address) -> None:
        """The address from the SDP; used until the caller's real source latches.

        A different address than before (a re-INVITE moved the media) also drops the latch:
        the next valid packet, from wherever the phone now sends, latches afresh.
        """
        new = (addr[0], int(addr[1]))
        if self._sdp_remote is not None and new != self._sdp_remote and self._latched is not None:
            _LOGGER.info("RTP remote moved to %s:%d; latching again", new[0], new[1])
            self._latched = None
        self._sdp_remote = new

    async def wait_closed(self) -> None:
        """Return once `close()` has been called (the SIP side ended this leg)."""
        await self._closed_event.wait()

    # -- relaying (see the module docstring) --------------------------------------------------

    @property
    def relaying(self) -> bool:
        return self._relay is not None

    def start_relay(self, handler: Callable[[RtpPacket], None]) -> None:
        """Hand every accepted audio / telephone-event packet to `handler` on arrival; the
        ticker stops sending this session's own silence until the relay goes idle."""
        self._relay = handler
        self._relay_anchor = None
        self._relay_idle = 0

    def stop_relay(self) -> None:
        """Back to normal sending (prompts / silence on the ticker), continuing the same stream."""
        self._relay = None

    def send_relayed(self, payload_type: int, payload: bytes, source_ssrc: int, source_timestamp: int,
                     marker: bool = False) -> None:
        """Send one packet now on this session's stream, timed by the source's RTP timestamp."""
        transport = self._transport
        dest = self._latched or self._sdp_remote
        self._relay_idle = 0
        if transport is None or dest is None or not self.sending:
            return
        anchor = self._relay_anchor
        if anchor is None or anchor[0] != source_ssrc:
            # Continue our stream where it stands: the first relayed packet gets our next timestamp.
            anchor = self._relay_anchor = (source_ssrc, (self._ts - source_timestamp) & _TS_MASK)
            marker = True
        ts = (source_timestamp + anchor[1]) & _TS_MASK
        header = _HEADER.pack(0x80, (0x80 if marker or self._marker else 0) | payload_type, self._seq, ts, self.ssrc)
        self._marker = False
        self._seq = (self._seq + 1) & 0xFFFF
        if payload_type == self.payload_type:
            self._ts = (ts + len(payload)) & _TS_MASK  # G.711: one byte per sample
        transport.sendto(header + payload, dest)
        self._counters["relayed_out"] += 1

    def set_codec(self, payload_type: int, dtmf_payload_type: int | None) -> None:
        """Switch the negotiated payload types: an outbound call opens its port before the answer
        names the codec, and a re-INVITE may change it. Prompts queued later are encoded anew."""
        self._codec = codec_for(payload_type)
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self._silence_payload = self._codec.silence()
        self._playout.silence = self._silence_payload[:1]

    async def play(self, pcm: bytes, *, interrupt_on_digit: bool = False) -> str | None:
        """Send `pcm` (16-bit LE mono 8 kHz) as 20 ms packets; return when the last one is sent.

        With `interrupt_on_digit`, a key press stops the prompt and is returned (it stays in
        `digits`); a key already waiting stops it before it starts. Cancelling the awaiting
        task stops the prompt at once; `close()` makes it return None.
        """
        if self._closed:
            return None
        if interrupt_on_digit:
            waiting = self.digits.peek()
            if waiting is not None:
                return waiting
        data = self._codec.encode(pcm)
        if not data:
            return None
        future: asyncio.Future[str | None] = self._loop.create_future()
        playback = _Playback(data, future, interrupt_on_digit)
        if not self._plays:
            self._marker = True  # a talkspurt starts after silence
        self._plays.append(playback)
        try:
            return await future
        finally:
            if playback in self._plays:
                self._plays.remove(playback)

    def start_recording(self, sink: Callable[[bytes], None]) -> None:
        """Feed `sink` one 320-byte PCM frame per tick from now on (see the module docstring)."""
        self._playout = self._new_playout()
        self.recording_error = None
        self._sink = sink

    def stop_recording(self) -> None:
        """Hand the sink what is still in the jitter buffer (nothing received is lost), then stop."""
        sink, self._sink = self._sink, None
        if sink is None:
            return
        try:
            for frame in self._playout.drain():
                self._counters["frames_recorded"] += 1
                sink(self._decode(frame))
        except Exception as e:
            self.recording_error = e
            _LOGGER.exception("recording sink failed while draining")

    @property
    def recording(self) -> bool:
        return self._sink is not None

    @property
    def stats(self) -> dict[str, int]:
        out = dict(self._counters)
        p = self._playout.stats
        out.update(received=p.received, played=p.played, lost=p.lost, filled=p.filled, late=p.late,
                   duplicates=p.duplicates, restarts=p.restarts, strays=p.strays, overflow=p.overflow)
        return out

    async def close(self) -> None:
        """Leave the clock, finish the recording, release every waiting play(), close the socket."""
        if self._closed:
            return
        self._closed = True
        self._closed_event.set()
        self._relay = None
        self._ticker.unregister(self)
        self.stop_recording()
        while self._plays:
            playback = self._plays.popleft()
            if not playback.future.done():
                playback.future.set_result(None)
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
            if self._protocol is not None:
                await self._protocol.lost

    # -- the clock ----------------------------------------------------------------------------

    def tick(self) -> None:
        """One 20 ms period: send one packet, record one frame. Called by the ticker only."""
        if self._relay is None:
            self._send_one()
        else:
            self._relay_idle += 1
            if self._relay_idle > RELAY_IDLE_TICKS:
                if self._relay_anchor is not None:
                    self._relay_anchor = None  # the next relayed packet continues after this silence
                    self._marker = True
                if self._send_one():
                    self._counters["filler_out"] += 1
        sink = self._sink
        if sink is not None:
            frame = self._playout.tick()
            self._counters["frames_recorded"] += 1
            try:
                sink(self._decode(frame))
            except Exception as e:
                # A full disk must not silence the caller's line: stop recording, keep the call.
                self._sink = None
                self.recording_error = e
                _LOGGER.exception("recording sink failed; recording stopped")

    def _send_one(self) -> bool:
        transport = self._transport
        dest = self._latched or self._sdp_remote
        if transport is None or dest is None or not self.sending:
            return False
        plays = self._plays
        payload = self._silence_payload
        while plays:
            playback = plays[0]
            if playback.future.done():  # cancelled or interrupted
                plays.popleft()
                continue
            start = playback.pos
            payload = playback.data[start : start + FRAME_SAMPLES]
            playback.pos = start + FRAME_SAMPLES
            if len(payload) < FRAME_SAMPLES:
                payload += self._silence_payload[: FRAME_SAMPLES - len(payload)]
            if playback.pos >= len(playback.data):
                plays.popleft()
                playback.future.set_result(None)
            break
        header = _HEADER.pack(0x80, (0x80 if self._marker else 0) | self.payload_type,
                              self._seq, self._ts, self.ssrc)
        self._marker = False
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
        transport.sendto(header + payload, dest)
        self._counters["packets_out"] += 1
        return True

    def _new_playout(self) -> Reframer:
        return Reframer(PlayoutBuffer(delay=self._jitter_frames), silence=self._silence_payload[:1],
                        frame_bytes=FRAME_SAMPLES)

    def _decode(self, frame: bytes | None) -> bytes:
        if frame is None:
            return PCM_SILENCE
        if len(frame) != FRAME_SAMPLES:
            self._counters["odd_size"] += 1
            frame = (frame + self._silence_payload)[:FRAME_SAMPLES]
        return self._codec.decode(frame)

    # -- receive ------------------------------------------------------------------------------

    def _received(self, data: bytes, addr: Any) -> None:
        if self._closed:
            return
        counters = self._counters
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError:
            if len(data) >= 2 and 192 <= data[1] <= 223:
                counters["rtcp"] += 1
            else:
                counters["bad_packets"] += 1
            return
        source: Address = (addr[0], addr[1])
        latched = self._latched
        if latched is not None and source != latched:
            counters["wrong_source"] += 1
            return
        pt = packet.payload_type
        is_audio = pt == self.payload_type
        is_dtmf = pt == self.dtmf_payload_type and self.dtmf_payload_type is not None
        if not (is_audio or is_dtmf):
            counters["wrong_payload_type"] += 1
            return
        if latched is None:
            self._latched = source
            if source != self._sdp_remote:
                _LOGGER.info("RTP latched to %s:%d (SDP said %s)", source[0], source[1], self._sdp_remote)
        counters["packets_in"] += 1
        counters["bytes_in"] += len(data)
        self.last_rx = self._loop.time()
        relay = self._relay
        if relay is not None:
            try:
                relay(packet)
            except Exception:
                # One bad packet must not take down the receive path of the call.
                counters["relay_errors"] += 1
                _LOGGER.exception("relay handler failed on a packet")
        if is_audio:
            if self._sink is not None:
                self._playout.push(packet.sequence, packet.payload, packet.ssrc)
            return
        counters["dtmf_packets"] += 1
        try:
            digit = self._dtmf.feed(packet.timestamp, packet.payload)
        except DtmfParseError:
            counters["bad_packets"] += 1
            return
        if digit is None:
            return
        self.key_pressed(digit)

    def key_pressed(self, digit: str) -> None:
        """One key press, from RFC 4733 or from SIP INFO: queued for the flow, stops an interruptible prompt."""
        if self._closed:
            return
        self._counters["digits"] += 1
        self.digits.put_nowait(digit)
        for playback in self._plays:
            if playback.interrupt_on_digit and not playback.future.done():
                playback.future.set_result(digit)
