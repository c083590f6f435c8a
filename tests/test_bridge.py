"""The media bridge over real UDP on loopback: two MediaSessions, two raw-socket "phones".

The caller's phone sends a 440 Hz tone in PCMU, the operator's a 1 kHz tone in PCMA (so every
packet is transcoded); each phone must hear the other's tone, and the stereo recording must
hold 440 Hz left and 1 kHz right (frequency found by a Goertzel scan, numpy is not installed).
No timing assertions: waits have generous deadlines, checks count packets and frequencies.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ivr.media.bridge import Bridge
from ivr.media.dtmf import TelephoneEvent
from ivr.media.g711 import PCMA, PCMU, codec_for
from ivr.media.rtp import RtpPacket
from ivr.media.session import MediaSession
from ivr.media.stereo import StereoRecorder, interleave, split, split_wav
from ivr.media.ticker import Ticker
from ivr.media.wavwriter import WavAppender, repair_wav
from tests.test_media_session import HOST, Peer, until

PORTS = (33000, 33998)
A_DTMF, B_DTMF = 101, 96  # different event payload types on the two legs: the bridge maps them
RATE = 8000


# -- signal analysis -------------------------------------------------------------------------


def goertzel(x: list[int] | tuple[int, ...], freq: float) -> float:
    w = 2 * math.pi * freq / RATE
    c = 2 * math.cos(w)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + c * s1 - s2, s1
    return s1 * s1 + s2 * s2 - c * s1 * s2


def peak_frequency(pcm: bytes) -> float:
    """The strongest frequency (1 Hz resolution after a 10 Hz scan) of 16-bit LE mono PCM."""
    n = len(pcm) // 2
    x = struct.unpack(f"<{n}h", pcm)[:4000]
    coarse = max(range(100, 3900, 10), key=lambda f: goertzel(x, f))
    return max(range(coarse - 10, coarse + 11), key=lambda f: goertzel(x, f))


def loud(pcm: bytes, level: int = 1000) -> bool:
    n = len(pcm) // 2
    return n > 0 and max(abs(v) for v in struct.unpack(f"<{n}h", pcm)) > level


# -- phones ----------------------------------------------------------------------------------


class Phone(Peer):
    """A raw UDP endpoint that sends a paced tone as RTP (absolute 20 ms deadlines)."""

    def __init__(self, freq: float, pt: int, ssrc: int) -> None:
        super().__init__()
        self.freq = freq
        self.pt = pt
        self.ssrc = ssrc
        self.seq = 1000
        self.ts = 50_000
        self.n = 0
        self.sent = 0
        self.to: tuple[str, int] | None = None

    def frame(self) -> bytes:
        pcm = struct.pack("<160h", *(int(8000 * math.sin(2 * math.pi * self.freq * (self.n + i) / RATE))
                                     for i in range(160)))
        self.n += 160
        return codec_for(self.pt).encode(pcm)

    def send_frame(self) -> None:
        assert self.to is not None
        self.send(RtpPacket(self.pt, self.seq & 0xFFFF, self.ts & 0xFFFFFFFF, self.ssrc, self.frame()).serialize(),
                  self.to)
        self.seq += 1
        self.ts += 160
        self.sent += 1

    async def talk(self, frames: int) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k in range(frames):
            self.send_frame()
            await asyncio.sleep(max(0.0, start + (k + 1) * 0.02 - loop.time()))

    def audio(self, pt: int, after: int = 0) -> bytes:
        """Decoded audio of the received packets with payload type `pt` (from index `after`)."""
        codec = codec_for(pt)
        return b"".join(codec.decode(p.payload) for p in self.packets()[after:] if p.payload_type == pt)


async def open_phone(freq: float, pt: int, ssrc: int) -> Phone:
    loop = asyncio.get_running_loop()
    _, phone = await loop.create_datagram_endpoint(lambda: Phone(freq, pt, ssrc), local_addr=(HOST, 0))
    return phone


def close_phone(phone: Phone) -> None:
    if phone.transport is not None:
        phone.transport.close()


@pytest.fixture
async def ticker() -> AsyncIterator[Ticker]:
    t = Ticker()
    await t.start()
    yield t
    await t.stop()


class Call:
    """Caller phone (PCMU, 440 Hz) -- leg_a | bridge | leg_b -- operator phone (PCMA, 1 kHz)."""

    caller: Phone
    operator: Phone
    leg_a: MediaSession
    leg_b: MediaSession


@pytest.fixture
async def call(ticker: Ticker) -> AsyncIterator[Call]:
    c = Call()
    c.caller = await open_phone(440, PCMU, 0xCA11)
    c.operator = await open_phone(1000, PCMA, 0x0BE2)
    c.leg_a = await MediaSession.open(HOST, PORTS, ticker=ticker, payload_type=PCMU, dtmf_payload_type=A_DTMF)
    c.leg_b = await MediaSession.open(HOST, PORTS, ticker=ticker, payload_type=PCMA, dtmf_payload_type=B_DTMF,
                                      jitter_frames=10)
    c.leg_a.set_remote(c.caller.addr)
    c.leg_b.set_remote(c.operator.addr)
    c.caller.to = (HOST, c.leg_a.local_port)
    c.operator.to = (HOST, c.leg_b.local_port)
    yield c
    await c.leg_a.close()
    await c.leg_b.close()
    close_phone(c.caller)
    close_phone(c.operator)


def stereo_recorder(path: Path) -> StereoRecorder:
    return StereoRecorder(WavAppender(path, sample_rate=8000, channels=2))


# -- the bridge ------------------------------------------------------------------------------


async def test_tones_cross_transcoded_and_recorded_in_stereo(call: Call, tmp_path: Path) -> None:
    wav = tmp_path / "conv.wav"
    ended: list[MediaSession] = []
    bridge = Bridge(call.leg_a, call.leg_b, stereo_recorder(wav), on_end=ended.append)
    bridge.start()
    before_a, before_b = len(call.caller.received), len(call.operator.received)
    await asyncio.gather(call.caller.talk(100), call.operator.talk(100))
    await until(lambda: bridge.a_to_b.stats.audio >= 100 and bridge.b_to_a.stats.audio >= 100, "all relayed")
    await until(lambda: len(call.operator.received) >= before_b + 100, "operator got them")
    await bridge.stop()
    assert not ended  # stopped by us, not by a leg ending

    # Each phone hears the other's tone, in its own law, on the session's own stream.
    to_operator = [p for p in call.operator.packets()[before_b:] if p.payload_type == PCMA]
    to_caller = [p for p in call.caller.packets()[before_a:] if p.payload_type == PCMU]
    heard_by_operator = b"".join(codec_for(PCMA).decode(p.payload) for p in to_operator if p.payload != codec_for(PCMA).silence())
    heard_by_caller = b"".join(codec_for(PCMU).decode(p.payload) for p in to_caller if p.payload != codec_for(PCMU).silence())
    assert abs(peak_frequency(heard_by_operator) - 440) <= 3
    assert abs(peak_frequency(heard_by_caller) - 1000) <= 3
    assert {p.ssrc for p in call.operator.packets()} == {call.leg_b.ssrc}
    assert {p.ssrc for p in call.caller.packets()} == {call.leg_a.ssrc}
    assert {p.payload_type for p in call.operator.packets()} == {PCMA}
    assert bridge.a_to_b.stats.transcoded == bridge.a_to_b.stats.audio == 100
    # One continuous outgoing stream: sequence +1 per packet across silence and relay.
    pkts = call.operator.packets()
    assert all(y.sequence == (x.sequence + 1) & 0xFFFF for x, y in zip(pkts, pkts[1:], strict=False))
    relayed = [p for p in pkts if p.payload != codec_for(PCMA).silence()]
    assert all(y.timestamp - x.timestamp == 160 for x, y in zip(relayed, relayed[1:], strict=False))

    # The recording: stereo, 8 kHz, left = caller's 440 Hz, right = operator's 1 kHz.
    with wave.open(str(wav)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        left, right = split(w.readframes(w.getnframes()))
    assert bridge.recording_seconds == pytest.approx(len(left) / 2 / RATE)
    start = next(i for i in range(0, len(left), 320) if loud(left[i : i + 320]))
    assert abs(peak_frequency(left[start + 3200 :]) - 440) <= 3
    start = next(i for i in range(0, len(right), 320) if loud(right[i : i + 320]))
    assert abs(peak_frequency(right[start + 3200 :]) - 1000) <= 3
    # No crosstalk: the other side's tone is far weaker in each channel.
    x = struct.unpack(f"<{len(left) // 2}h", left)
    assert goertzel(x[:8000], 1000) < goertzel(x[:8000], 440) / 100


def key_press(seq: int, ts: int, event: int, pt: int) -> list[bytes]:
    """A key press as a phone sends it: growing duration, then the end packet three times."""
    out = []
    for k, (dur, end) in enumerate(((160, False), (320, False), (480, False), (640, True), (640, True), (640, True))):
        out.append(RtpPacket(pt, seq + k, ts, 0x5EED, TelephoneEvent(event, end=end, duration=dur).serialize(),
                             marker=k == 0).serialize())
    return out


async def test_digits_cross_as_telephone_events_with_the_other_legs_payload_type(call: Call) -> None:
    bridge = Bridge(call.leg_a, call.leg_b)
    bridge.start()
    try:
        assert call.caller.to is not None and call.operator.to is not None
        await call.caller.talk(5)
        for pkt in key_press(call.caller.seq, call.caller.ts, 5, A_DTMF):
            call.caller.send(pkt, call.caller.to)
        for pkt in key_press(9000, 777_000, 11, B_DTMF):  # '#' from the operator
            call.operator.send(pkt, call.operator.to)
        await until(lambda: bridge.a_to_b.stats.events >= 6 and bridge.b_to_a.stats.events >= 6, "events relayed")
        await until(lambda: sum(p.payload_type == B_DTMF for p in call.operator.packets()) >= 6, "events at operator")
        await until(lambda: sum(p.payload_type == A_DTMF for p in call.caller.packets()) >= 6, "events at caller")
    finally:
        await bridge.stop()
    at_operator = [p for p in call.operator.packets() if p.payload_type == B_DTMF]
    events = [TelephoneEvent.parse(p.payload) for p in at_operator]
    assert {e.event for e in events} == {5}
    assert [e.end for e in events] == [False] * 3 + [True] * 3
    assert len({p.timestamp for p in at_operator}) == 1  # one event: one timestamp
    assert at_operator[0].marker
    assert {p.ssrc for p in at_operator} == {call.leg_b.ssrc}
    assert {TelephoneEvent.parse(p.payload).event for p in call.caller.packets() if p.payload_type == A_DTMF} == {11}
    # The receiving legs also detected the presses, once each.
    assert call.leg_a.digits.get_nowait() == "5"
    assert call.leg_b.digits.get_nowait() == "#"


async def test_bad_events_and_garbage_are_dropped_and_the_bridge_keeps_relaying(call: Call) -> None:
    bridge = Bridge(call.leg_a, call.leg_b)
    bridge.start()
    try:
        assert call.caller.to is not None
        call.caller.send(RtpPacket(A_DTMF, 1, 1, 0xCA11, b"\x01").serialize(), call.caller.to)  # short event
        call.caller.send(b"\x80\x00garbage", call.caller.to)
        call.caller.send(RtpPacket(PCMU, 2, 2, 0xCA11, b"\x55" * 7).serialize(), call.caller.to)  # odd size audio
        await until(lambda: bridge.a_to_b.stats.dropped_events == 1 and call.leg_a.stats["bad_packets"] >= 2, "drops")
        await call.caller.talk(20)
        await until(lambda: bridge.a_to_b.stats.audio >= 21, "audio still relayed")
    finally:
        await bridge.stop()
    assert call.leg_a.stats["relay_errors"] == 0
    assert not [p for p in call.operator.packets() if p.payload_type != PCMA]


async def test_either_leg_ending_stops_the_bridge_and_reports_which(call: Call, tmp_path: Path) -> None:
    ended: list[MediaSession] = []

    async def hang_up_other(leg: MediaSession) -> None:
        ended.append(leg)

    bridge = Bridge(call.leg_a, call.leg_b, stereo_recorder(tmp_path / "c.wav"), on_end=hang_up_other)
    bridge.start()
    await call.caller.talk(10)
    await call.leg_b.close()  # the operator hung up
    assert await asyncio.wait_for(bridge.wait(), 30) is call.leg_b
    assert ended == [call.leg_b]
    assert not bridge.running and not call.leg_a.relaying and not call.leg_a.recording
    assert bridge.recording_seconds is not None and bridge.recording_seconds > 0
    await bridge.stop()  # idempotent
    assert ended == [call.leg_b]
    # The caller's leg is back to normal sending (silence on the clock) for the SIP side to end.
    n = len(call.caller.received)
    await until(lambda: len(call.caller.received) >= n + 3, "caller leg still sending")


async def test_remote_moves_and_hold_keep_the_bridge_going(call: Call) -> None:
    """A re-INVITE moves the caller to a new address; a hold stops sending to one side only."""
    bridge = Bridge(call.leg_a, call.leg_b)
    bridge.start()
    moved = await open_phone(440, PCMU, 0x0E11)
    try:
        await asyncio.gather(call.caller.talk(20), call.operator.talk(20))
        await until(lambda: bridge.a_to_b.stats.audio >= 20, "first leg relayed")
        # Re-INVITE: the caller's media now comes from (and must go to) another address.
        call.leg_a.set_remote(moved.addr)
        moved.to = call.caller.to
        at_operator = len(call.operator.received)
        await asyncio.gather(moved.talk(50), call.operator.talk(50))
        await until(lambda: len(moved.received) >= 40, "the moved phone hears the operator")
        assert call.leg_a.latched == moved.addr
        assert abs(peak_frequency(moved.audio(PCMU)[-8000:]) - 1000) <= 3
        heard = call.operator.audio(PCMA, at_operator)
        assert abs(peak_frequency(heard[-8000:]) - 440) <= 3
        assert call.leg_a.stats["wrong_source"] == 0
        # Hold: the operator's phone put the call on hold (a=sendonly): nothing is sent to it,
        # but what it sends (music on hold) still reaches the caller.
        call.leg_b.sending = False
        await asyncio.sleep(0.1)
        n_op, n_moved = len(call.operator.received), len(moved.received)
        await asyncio.gather(moved.talk(25), call.operator.talk(25))
        await until(lambda: len(moved.received) >= n_moved + 20, "caller still hears the held side")
        assert len(call.operator.received) == n_op
        call.leg_b.sending = True  # resumed
        await moved.talk(25)
        await until(lambda: len(call.operator.received) >= n_op + 20, "sending resumed")
        assert bridge.running
    finally:
        await bridge.stop()
        close_phone(moved)


async def test_a_silent_side_gets_filler_silence_then_relay_resumes_with_marker(call: Call) -> None:
    bridge = Bridge(call.leg_a, call.leg_b)
    bridge.start()
    try:
        await call.caller.talk(10)
        await until(lambda: call.leg_b.stats["filler_out"] >= 5, "filler while the caller is silent")
        n = len(call.operator.received)
        await call.caller.talk(10)
        await until(lambda: bridge.a_to_b.stats.audio >= 20, "relayed again")
        await until(lambda: len(call.operator.received) >= n + 10, "at the operator")
    finally:
        await bridge.stop()
    pkts = call.operator.packets()
    assert all(y.sequence == (x.sequence + 1) & 0xFFFF for x, y in zip(pkts, pkts[1:], strict=False))
    silence = codec_for(PCMA).silence()
    resumed = next(i for i in range(n, len(pkts)) if pkts[i].payload != silence)
    assert pkts[resumed].marker
    assert pkts[resumed].timestamp == (pkts[resumed - 1].timestamp + 160) & 0xFFFFFFFF


async def test_bridge_refuses_bad_setups(ticker: Ticker, call: Call, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two different legs"):
        Bridge(call.leg_a, call.leg_a)
    other = Ticker()
    lone = await MediaSession.open(HOST, PORTS, ticker=other, payload_type=PCMU)
    try:
        with pytest.raises(ValueError, match="same ticker"):
            Bridge(call.leg_a, lone)
    finally:
        await lone.close()
    with pytest.raises(ValueError, match="2-channel"):
        StereoRecorder(WavAppender(tmp_path / "mono.wav", channels=1))
    bridge = Bridge(call.leg_a, call.leg_b)
    bridge.start()
    with pytest.raises(RuntimeError, match="already started"):
        bridge.start()
    await bridge.stop()
    await call.leg_b.close()
    with pytest.raises(RuntimeError, match="already ended"):
        Bridge(call.leg_a, call.leg_b).start()


# -- stereo helpers --------------------------------------------------------------------------


def test_interleave_and_split_round_trip_and_reject_bad_lengths(tmp_path: Path) -> None:
    left = struct.pack("<4h", 1, -2, 3, 32767)
    right = struct.pack("<4h", -32768, 5, 6, 7)
    both = interleave(left, right)
    assert struct.unpack("<8h", both) == (1, -32768, -2, 5, 3, 6, 32767, 7)
    assert split(both) == (left, right)
    with pytest.raises(ValueError, match="same even length"):
        interleave(left, right[:-2])
    with pytest.raises(ValueError, match="same even length"):
        interleave(b"\x01", b"\x01")
    with pytest.raises(ValueError, match="multiple of 4"):
        split(both[:-2])
    path = tmp_path / "s.wav"
    with WavAppender(path, channels=2) as w:
        w.write(both * 100)
    assert split_wav(path, tmp_path / "l.wav", tmp_path / "r.wav") == pytest.approx(400 / 8000)
    with wave.open(str(tmp_path / "l.wav")) as w:
        assert (w.getnchannels(), w.readframes(400)) == (1, left * 100)
    with pytest.raises(ValueError, match="not a 16-bit stereo"):
        split_wav(tmp_path / "l.wav", tmp_path / "x.wav", tmp_path / "y.wav")


def test_recorder_keeps_channels_aligned_when_one_side_is_missing(tmp_path: Path) -> None:
    rec = stereo_recorder(tmp_path / "r.wav")
    a, b = b"\x01\x00" * 160, b"\x02\x00" * 160
    rec.left(a)
    rec.right(b)
    rec.tick()
    rec.left(a)  # the right side gave nothing this period: zeros there, not a shift
    rec.tick()
    rec.right(b[:10])  # a short frame is padded to 20 ms
    rec.tick()
    assert rec.close() == pytest.approx(0.06)
    with wave.open(str(rec.path)) as w:
        left, right = split(w.readframes(w.getnframes()))
    assert left == a + a + bytes(320)
    assert right == b + bytes(320) + (b[:10] + bytes(310))


def test_recorder_write_error_stops_recording_not_the_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = StereoRecorder(WavAppender(tmp_path / "r.wav", channels=2, flush_seconds=0.001))  # flush each frame
    rec.left(b"\x01\x00" * 160)
    rec.tick()

    def full(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ivr.media.wavwriter.os.write", full)
    rec.tick()
    assert isinstance(rec.error, OSError)
    rec.tick()  # no raise: the media clock must not lose this client's neighbours
    assert rec.frames == 1
    monkeypatch.undo()
    rec.writer.close()


# -- kill -9 during a bridged call -----------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import asyncio, json, math, struct, sys
    from ivr.media.stereo import StereoRecorder
    from ivr.media.ticker import Ticker
    from ivr.media.wavwriter import WavAppender

    def tone(freq, n):
        return struct.pack("<160h", *(int(8000 * math.sin(2 * math.pi * freq * (n + i) / 8000)) for i in range(160)))

    class Side:
        def __init__(self, freq, sink):
            self.freq, self.sink, self.n = freq, sink, 0
        def tick(self):
            self.sink(tone(self.freq, self.n))
            self.n += 160

    async def main():
        ticker = Ticker()
        rec = StereoRecorder(WavAppender(sys.argv[1], sample_rate=8000, channels=2))
        ticker.register(Side(440, rec.left))
        ticker.register(Side(1000, rec.right))
        ticker.register(rec)
        await ticker.start()
        while True:
            await asyncio.sleep(0.1)
            print(json.dumps({"frames": rec.frames}), flush=True)

    asyncio.run(main())
    """
)


def kill_9_while_recording(wav: Path, seconds: float = 3.5) -> int:
    """Run WRITER into `wav`, kill -9 it after `seconds` of conversation; frames it had written."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(wav)], stdout=subprocess.PIPE, text=True, env=env)
    frames = 0
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while frames < seconds / 0.02 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            frames = json.loads(line)["frames"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert frames >= seconds / 0.02, "the writer did not get going"
    return frames


def check_tones(wav: Path) -> None:
    with wave.open(str(wav)) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        left, right = split(w.readframes(w.getnframes()))
    assert abs(peak_frequency(left) - 440) <= 3
    assert abs(peak_frequency(right) - 1000) <= 3


def test_kill_9_while_recording_leaves_a_repairable_stereo_file_missing_at_most_a_second(tmp_path: Path) -> None:
    wav = tmp_path / "live.conversation.wav"
    frames = kill_9_while_recording(wav)
    seconds = repair_wav(wav)
    assert frames * 0.02 - 1.0 - 0.2 <= seconds <= frames * 0.02 + 0.2  # +0.2: frames written after the last report
    check_tones(wav)


def test_conversation_left_by_a_crash_is_recovered_as_stereo_linked_to_its_call(settings, sessions) -> None:  # type: ignore[no-untyped-def]
    from config.db import transaction, utcnow
    from ivr import live
    from ivr.models import Call as CallRow
    from recordings.models import Recording
    from recordings.store import recording_path

    with transaction(sessions) as s:
        row = CallRow(sip_call_id="bridge-crash@test", caller="13800138000", started_at=utcnow())
        s.add(row)
        s.flush()
        wav = live.begin(settings, row, live.CONVERSATION)
        call_id = row.id
    assert wav.name == f"{call_id}.conversation.wav"
    with pytest.raises(ValueError, match="kind"):
        live.begin(settings, row, "karaoke")
    frames = kill_9_while_recording(wav, 2.5)
    stored = live.recover_live(sessions, settings, [])
    assert len(stored) == 1
    assert not wav.exists() and not wav.with_suffix(".json").exists()
    with sessions() as s:
        rec = s.get(Recording, stored[0])
        row = s.get(CallRow, call_id)
        assert rec is not None and row is not None
        assert (rec.kind, rec.channels, rec.sample_rate, rec.call_id) == ("conversation", 2, 8000, call_id)
        assert frames * 0.02 - 1.2 <= rec.duration <= frames * 0.02 + 0.2
        assert row.recording_id == rec.id
        assert (row.disposition, row.end_reason) == ("operator", "recovered_after_crash")
        assert row.message_seconds is None  # a conversation is not a message
        path = recording_path(settings.storage, rec)
    check_tones(path)
