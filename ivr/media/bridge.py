"""Relay a caller and an operator to each other: two RTP legs, audio both ways, digits across.

pyVoIP has no bridge, so the relay lives in our own media path. Each leg is a MediaSession
(its own socket, SSRC, sequence, latching); the Bridge connects their receive paths to each
other's send paths:

    caller phone ──RTP──▶ leg_a ──(transcode if needed)──▶ leg_b ──RTP──▶ operator phone
    caller phone ◀──RTP── leg_a ◀──(transcode if needed)── leg_b ◀──RTP── operator phone

Forward on arrival, not via the ticker (decided here). A packet is re-sent the moment it is
read, on the other leg's own stream: our SSRC and sequence, the source's timestamp plus a
fixed offset (MediaSession.send_relayed). The added delay is the processing time only
(bench/bridge.py measures it); going through the 20 ms ticker would add up to one period,
10 ms on average and ~20 ms at p99 by construction, plus a jitter buffer if we re-paced,
which is the very latency the phones' own jitter buffers exist to absorb. The pacing the
far phone sees is the near phone's pacing, as with any RTP relay (Asterisk's native RTP
bridge, rtpengine): jitter passes through, and the far phone's jitter buffer handles it.
When one side goes quiet (hold, silence suppression), the other leg fills with codec
silence after 60 ms so its stream and NAT binding stay alive.

Codecs: same law on both legs relays the payload bytes untouched (bit-exact, no cost);
PCMU on one and PCMA on the other goes through linear PCM (g711). Telephone-events (RFC
4733) are re-sent as telephone-events with the other leg's negotiated payload type and the
same timestamp mapping as the audio (so the event's timestamp stays in the audio's clock);
the key presses are also detected on the receiving leg as usual (`digits`).

Recording: with a StereoRecorder, each leg's recording sink feeds one side (leg_a left =
caller, leg_b right = operator), and the recorder, ticking after both legs on the same clock,
writes one stereo frame per 20 ms.

End: when either session is closed (its SIP side got a BYE, or failed), the bridge stops,
finishes the recording and calls `on_end(leg_that_ended)` once, so the SIP side can hang up
the other leg. A re-INVITE changes a leg's remote (`set_remote`) or its `sending` flag; the
bridge keeps relaying through both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ivr.media.dtmf import DtmfParseError, TelephoneEvent
from ivr.media.g711 import codec_for
from ivr.media.rtp import RtpPacket
from ivr.media.session import MediaSession
from ivr.media.stereo import StereoRecorder
from ivr.media.ticker import Ticker

_LOGGER = logging.getLogger(__name__)


@dataclass
class DirectionStats:
    audio: int = 0
    """Audio packets relayed."""
    transcoded: int = 0
    """Of those, converted between μ-law and A-law."""
    events: int = 0
    """Telephone-event packets relayed."""
    dropped_events: int = 0
    """Telephone-events not relayed: unreadable, or the other leg negotiated none."""


class _Direction:
    """One way through the bridge: packets read on `source` are sent on `target`."""

    def __init__(self, source: MediaSession, target: MediaSession) -> None:
        self.source = source
        self.target = target
        self.stats = DirectionStats()
        src, dst = codec_for(source.payload_type), codec_for(target.payload_type)
        self._transcode: Callable[[bytes], bytes] | None = None
        if src.payload_type != dst.payload_type:
            decode, encode = src.decode, dst.encode
            self._transcode = lambda payload: encode(decode(payload))

    def __call__(self, packet: RtpPacket) -> None:
        target = self.target
        if packet.payload_type == self.source.payload_type:
            payload = packet.payload
            if self._transcode is not None:
                payload = self._transcode(payload)
                self.stats.transcoded += 1
            self.stats.audio += 1
            target.send_relayed(target.payload_type, payload, packet.ssrc, packet.timestamp, packet.marker)
            return
        # Telephone-event (the session hands over only negotiated types).
        event_pt = target.dtmf_payload_type
        try:
            TelephoneEvent.parse(packet.payload)
        except DtmfParseError:
            self.stats.dropped_events += 1
            return
        if event_pt is None:
            self.stats.dropped_events += 1
            return
        self.stats.events += 1
        target.send_relayed(event_pt, packet.payload, packet.ssrc, packet.timestamp, packet.marker)


class Bridge:
    """Relay `leg_a` (the caller) and `leg_b` (the operator) both ways until either ends.

        bridge = Bridge(caller_media, operator_media, recorder, on_end=hang_up_the_other)
        bridge.start()
        ended = await bridge.wait()      # the leg whose close() ended it
        await bridge.stop()              # idempotent; closes the recording

    Both sessions must share one ticker (they do in the IVR: one per process).
    """

    def __init__(self, leg_a: MediaSession, leg_b: MediaSession, recorder: StereoRecorder | None = None, *,
                 on_end: Callable[[MediaSession], object] | None = None) -> None:
        if leg_a is leg_b:
            raise ValueError("a bridge needs two different legs")
        if leg_a.ticker is not leg_b.ticker:
            raise ValueError("both legs of a bridge must run on the same ticker")
        self.leg_a = leg_a
        self.leg_b = leg_b
        self.recorder = recorder
        self.on_end = on_end
        self.a_to_b = _Direction(leg_a, leg_b)
        self.b_to_a = _Direction(leg_b, leg_a)
        self.ended_by: MediaSession | None = None
        self.recording_seconds: float | None = None
        self._ticker: Ticker = leg_a.ticker
        self._watch: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._stopping: asyncio.Future[None] | None = None

    @property
    def running(self) -> bool:
        return self._watch is not None and not self._done.is_set()

    def start(self) -> None:
        if self._watch is not None:
            raise RuntimeError("bridge already started")
        if self.leg_a.closed or self.leg_b.closed:
            raise RuntimeError("cannot bridge a leg that has already ended")
        if self.recorder is not None:
            self.leg_a.start_recording(self.recorder.left)
            self.leg_b.start_recording(self.recorder.right)
            self._ticker.register(self.recorder)  # after both sessions: see StereoRecorder
        self.leg_a.start_relay(self.a_to_b)
        self.leg_b.start_relay(self.b_to_a)
        self._watch = asyncio.get_running_loop().create_task(self._watch_legs(), name="bridge-watch")

    async def _watch_legs(self) -> None:
        waits = {asyncio.ensure_future(leg.wait_closed()): leg for leg in (self.leg_a, self.leg_b)}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        self.ended_by = waits[next(iter(done))]
        await self._finish()
        if self.on_end is not None:
            try:
                result = self.on_end(self.ended_by)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                _LOGGER.exception("bridge on_end callback failed")

    async def wait(self) -> MediaSession | None:
        """Until the bridge has stopped; the leg whose end stopped it (None: stopped by `stop()`)."""
        await self._done.wait()
        return self.ended_by

    async def stop(self) -> None:
        """Stop relaying and finish the recording; the legs stay open (idempotent)."""
        watch = self._watch
        if watch is not None and not watch.done() and watch is not asyncio.current_task():
            if self.ended_by is None:  # still watching: stop watching; else let it finish its work
                watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        await self._finish()

    async def _finish(self) -> None:
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
            return
        self._stopping = asyncio.get_running_loop().create_future()
        try:
            for leg in (self.leg_a, self.leg_b):
                leg.stop_relay()
                leg.stop_recording()  # hands the jitter buffer's tail to the recorder
            if self.recorder is not None:
                self._ticker.unregister(self.recorder)
                # The final fsync may take a while on a busy disk: keep it off the media clock.
                self.recording_seconds = await asyncio.to_thread(self.recorder.close)
        finally:
            self._done.set()
            self._stopping.set_result(None)

    @property
    def stats(self) -> dict[str, DirectionStats]:
        return {"a_to_b": self.a_to_b.stats, "b_to_a": self.b_to_a.stats}
