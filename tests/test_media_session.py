"""The asyncio media path: ticker, playout buffer and MediaSession over real UDP on loopback.

Nothing here asserts on timing (the machine is shared with heavy tests): waits use generous
deadlines and assertions count frames, packets and bytes. Where a test needs to know how
many 20 ms periods passed, a counter registered on the same ticker counts them.
"""

from __future__ import annotations

import array
import asyncio
import math
import random
import warnings
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from ivr.media.dtmf import TelephoneEvent
from ivr.media.g711 import PCMA, PCMU, codec_for
from ivr.media.playout import PlayoutBuffer, Reframer
from ivr.media.rtp import RtpPacket
from ivr.media.session import PCM_FRAME_BYTES, PCM_SILENCE, MediaError, MediaSession
from ivr.media.ticker import Ticker

SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "speech" / "tts_cmn_complaint_8k.wav"
HOST = "127.0.0.1"
PORTS = (31000, 31998)
DTMF_PT = 101


# -- helpers ---------------------------------------------------------------------------------


async def until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `cond` on the loop; the timeout only guards against a hang, it is not a measurement."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class Counter:
    """A ticker client that counts periods, to compare frame counts with elapsed ticks."""

    def __init__(self) -> None:
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1


class Peer(asyncio.DatagramProtocol):
    """A raw UDP socket on loopback that records what it receives and sends crafted packets."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append((data, addr))

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    def packets(self) -> list[RtpPacket]:
        return [RtpPacket.parse(d) for d, _ in self.received]


def load_clip(seconds: float) -> bytes:
    with wave.open(str(SPEECH)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
        return w.readframes(int(seconds * 8000))


def samples(pcm: bytes) -> array.array[int]:
    a = array.array("h")
    a.frombytes(pcm)
    return a


def correlation(x: array.array[int], y: array.array[int]) -> float:
    n = min(len(x), len(y))
    mx = sum(x[:n]) / n
    my = sum(y[:n]) / n
    sxy = sxx = syy = 0.0
    for a, b in zip(x[:n], y[:n], strict=True):
        a -= mx
        b -= my
        sxy += a * b
        sxx += a * a
        syy += b * b
    return sxy / math.sqrt(sxx * syy)


def first_loud_frame(pcm: bytes, level: int = 200) -> int:
    for i in range(0, len(pcm), PCM_FRAME_BYTES):
        if max(abs(s) for s in samples(pcm[i : i + PCM_FRAME_BYTES])) > level:
            return i // PCM_FRAME_BYTES
    raise AssertionError("no loud frame")


def rtp(seq: int, payload: bytes, *, pt: int = PCMU, ts: int | None = None, ssrc: int = 0x1234,
        marker: bool = False) -> bytes:
    return RtpPacket(pt, seq & 0xFFFF, (ts if ts is not None else seq * 160) & 0xFFFFFFFF, ssrc,
                     payload, marker=marker).serialize()


# μ-law code words with distinct, clearly non-silent decoded values: frame i carries word i.
WORDS = [w for w in range(0x10, 0x70)]


def frame_word(i: int) -> bytes:
    return bytes([WORDS[i % len(WORDS)]]) * 160


def decoded_word(i: int) -> bytes:
    return codec_for(PCMU).decode(frame_word(i))


@pytest.fixture
async def ticker() -> AsyncIterator[Ticker]:
    t = Ticker()
    await t.start()
    yield t
    await t.stop()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Peer, local_addr=(HOST, 0))
    yield protocol
    transport.close()


async def open_session(ticker: Ticker, pt: int = PCMU, **kw: Any) -> MediaSession:
    return await MediaSession.open(HOST, PORTS, ticker=ticker, payload_type=pt, dtmf_payload_type=DTMF_PT, **kw)


# -- ticker ----------------------------------------------------------------------------------


class Boom:
    def __init__(self) -> None:
        self.calls = 0

    def tick(self) -> None:
        self.calls += 1
        raise RuntimeError("broken prompt source")


async def test_ticker_ticks_clients_and_drops_one_that_raises(ticker: Ticker, caplog: pytest.LogCaptureFixture) -> None:
    good, bad = Counter(), Boom()
    ticker.register(bad)
    ticker.register(good)
    await until(lambda: good.ticks >= 5, "five ticks")
    assert bad.calls == 1  # removed after its first failure, the other client kept going
    assert ticker.stats.errors == 1
    assert "failed in tick()" in caplog.text
    ticker.unregister(good)
    seen = good.ticks
    before = ticker.stats.ticks
    await until(lambda: ticker.stats.ticks >= before + 3, "three more ticks")
    assert good.ticks == seen


async def test_ticker_fires_every_due_period() -> None:
    """Each wake-up fires as many periods as have passed, so ticks track elapsed loop time."""
    t = Ticker(period=0.02)
    c = Counter()
    t.register(c)
    loop = asyncio.get_running_loop()
    await t.start()
    start = loop.time()
    await until(lambda: c.ticks >= 10, "ten ticks")
    # Block the loop for ~5 periods: the ticker must catch up rather than lose them.
    await asyncio.sleep(0.03)
    import time

    time.sleep(0.1)
    await until(lambda: c.ticks >= 20, "twenty ticks")
    elapsed = loop.time() - start
    await t.stop()
    assert not t.running
    # Not a timing assertion: ticks fired can never exceed the periods that have elapsed
    # (+1 for the one due at the end), and catch-up fired more than one per wake-up.
    assert c.ticks <= elapsed / 0.02 + 2
    assert t.stats.late >= 1


# -- playout buffer (pure) -------------------------------------------------------------------


def run(buf: PlayoutBuffer, ticks: int) -> list[bytes | None]:
    return [buf.tick() for _ in range(ticks)]


def test_playout_primes_then_plays_in_sequence_order() -> None:
    buf = PlayoutBuffer(delay=3)
    assert run(buf, 2) == [None, None]  # nothing received: silence, no frame consumed
    buf.push(100, b"a")
    buf.push(102, b"c")  # reordered: 101 comes later but within the jitter delay
    assert run(buf, 2) == [None, None]
    buf.push(101, b"b")
    assert run(buf, 4) == [None, b"a", b"b", b"c"]  # played 3 ticks after the first arrival
    buf.push(103, b"d")
    assert run(buf, 2) == [b"d", None]
    assert buf.stats.lost == 0 and buf.stats.played == 4


def test_playout_loss_duplicate_and_late() -> None:
    buf = PlayoutBuffer(delay=2)
    for seq in (10, 11, 13, 14, 14, 15):
        buf.push(seq, bytes([seq]))
    out = run(buf, 6)
    assert out == [bytes([10]), bytes([11]), None, bytes([13]), bytes([14]), bytes([15])]
    buf.push(12, b"late")  # its turn has passed: dropped, not played out of order
    buf.push(11, b"dup")
    assert buf.stats.lost == 1
    assert buf.stats.late == 1
    assert buf.stats.duplicates == 2
    assert run(buf, 2) == [None, None]


def test_playout_dry_buffer_does_not_consume_sequence() -> None:
    """A caller who pauses (no packets) records silence for the pause, and nothing is skipped."""
    buf = PlayoutBuffer(delay=1)
    buf.push(0, b"0")
    buf.push(1, b"1")
    assert run(buf, 3) == [b"0", b"1", None]
    assert run(buf, 10) == [None] * 10
    buf.push(2, b"2")
    assert run(buf, 2) == [None, b"2"]  # re-primed with the jitter delay
    buf.push(3, b"3")
    assert run(buf, 1) == [b"3"]
    assert buf.stats.lost == 0


def test_playout_sequence_wraparound() -> None:
    buf = PlayoutBuffer(delay=0)
    for seq in (65534, 65535, 0, 1):
        buf.push(seq, seq.to_bytes(2, "big"))
    assert run(buf, 4) == [s.to_bytes(2, "big") for s in (65534, 65535, 0, 1)]


def test_playout_stray_dropped_restart_followed() -> None:
    buf = PlayoutBuffer(delay=0)
    buf.push(5, b"5")
    buf.push(40000, b"stray")  # one far-off packet: dropped
    buf.push(6, b"6")
    assert run(buf, 2) == [b"5", b"6"]
    assert buf.stats.strays == 1
    buf.push(20000, b"x")
    buf.push(20001, b"y")  # confirmed: a new stream continues the recording
    assert run(buf, 3) == [b"x", b"y", None]
    assert buf.stats.restarts == 1 and buf.stats.strays == 1


def test_playout_new_ssrc_keeps_old_frames_first() -> None:
    buf = PlayoutBuffer(delay=3)
    buf.push(1, b"old1", ssrc=1)
    buf.push(2, b"old2", ssrc=1)
    buf.push(7, b"new7", ssrc=2)
    assert run(buf, 3) == [b"old1", b"old2", b"new7"]


def test_playout_drain_returns_what_is_buffered() -> None:
    buf = PlayoutBuffer(delay=5)
    buf.push(1, b"1")
    buf.push(3, b"3")
    assert buf.drain() == [b"1", None, b"3"]
    assert len(buf) == 0


def word_packet(i: int, size: int) -> bytes:
    """Packet i of a stream: `size` bytes of one distinct non-silent μ-law word."""
    return bytes([WORDS[i % len(WORDS)]]) * size


def test_reframer_passes_20_ms_packets_through_unchanged() -> None:
    r = Reframer(PlayoutBuffer(delay=0))
    for seq in (1, 2, 4):
        r.push(seq, word_packet(seq, 160))
    assert [r.tick() for _ in range(5)] == [word_packet(1, 160), word_packet(2, 160), None, word_packet(4, 160), None]
    assert r.stats.lost == 1


@pytest.mark.parametrize("ptime", [10, 30, 40, 60])
def test_reframer_cuts_any_ptime_into_20_ms_frames_and_fills_a_loss_to_length(ptime: int) -> None:
    size = ptime * 8
    count = 3840 // size  # 480 ms of audio: 24 frames
    lost = count // 2
    r = Reframer(PlayoutBuffer(delay=0), silence=b"\xff")
    for i in range(count):
        if i != lost:
            r.push(1000 + i, word_packet(i, size))
    out = [r.tick() for _ in range(30)]
    frames = [f for f in out if f is not None]
    assert all(len(f) == 160 for f in frames)
    assert b"".join(frames) == b"".join(b"\xff" * size if i == lost else word_packet(i, size) for i in range(count))
    assert out[24:] == [None] * 6  # dry afterwards: silence, nothing invented
    assert r.stats.lost == 1


def test_reframer_pads_a_frame_cut_short_and_drains_the_rest() -> None:
    r = Reframer(PlayoutBuffer(delay=0), silence=b"\xd5")
    r.push(7, word_packet(0, 240))  # one 30 ms packet, then the caller stops
    assert r.tick() == word_packet(0, 160)
    assert r.tick() == word_packet(0, 80) + b"\xd5" * 80
    assert r.tick() is None
    r.push(8, word_packet(1, 240))
    r.push(9, word_packet(2, 240))
    assert r.drain() == [word_packet(1, 160), word_packet(1, 80) + word_packet(2, 80), word_packet(2, 160)]
    assert r.drain() == []


# -- sessions over UDP -----------------------------------------------------------------------


async def test_ports_are_even_and_range_exhaustion_is_an_error(ticker: Ticker) -> None:
    ports = (32100, 32103)  # two even ports: 32100 and 32102
    a = await MediaSession.open(HOST, ports, ticker=ticker, payload_type=PCMU)
    b = await MediaSession.open(HOST, ports, ticker=ticker, payload_type=PCMU)
    try:
        assert {a.local_port, b.local_port} == {32100, 32102}
        with pytest.raises(MediaError, match="no free RTP port"):
            await MediaSession.open(HOST, ports, ticker=ticker, payload_type=PCMU)
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("pt", [PCMU, PCMA])
async def test_played_audio_arrives_intact(ticker: Ticker, pt: int) -> None:
    clip = load_clip(4.0)
    a = await open_session(ticker, pt)
    # A generous jitter allowance on the receiver, so a loaded machine cannot insert silence
    # into the middle of the clip (the two sessions share one clock, see Ticker.max_catchup).
    b = await open_session(ticker, pt, jitter_frames=10)
    try:
        a.set_remote((HOST, b.local_port))
        b.set_remote((HOST, a.local_port))
        frames: list[bytes] = []
        b.start_recording(frames.append)
        assert await a.play(clip) is None
        await until(lambda: b.stats["packets_in"] >= a.stats["packets_out"], "all packets received")
        b.stop_recording()
        got = b"".join(frames)
        assert all(len(f) == PCM_FRAME_BYTES for f in frames)
        offset = first_loud_frame(got) - first_loud_frame(clip)
        assert offset >= 0
        received = got[offset * PCM_FRAME_BYTES : offset * PCM_FRAME_BYTES + len(clip)]
        assert len(received) == len(clip)
        assert correlation(samples(clip), samples(received)) > 0.99
        # The law really is the negotiated one: decoding A's bytes with the other law is poor.
        other = codec_for(PCMA if pt == PCMU else PCMU)
        wrong = other.decode(codec_for(pt).encode(clip))
        assert correlation(samples(clip), samples(wrong)) < 0.9
        assert b.stats["lost"] == 0 and b.stats["bad_packets"] == 0
    finally:
        await a.close()
        await b.close()


async def test_outgoing_stream_headers(ticker: Ticker, peer: Peer) -> None:
    s = await open_session(ticker, PCMA, rng=random.Random(7))
    try:
        s.set_remote(peer.addr)
        await until(lambda: len(peer.received) >= 3, "silence packets")
        clip = load_clip(3.0)
        start = first_loud_frame(clip) * PCM_FRAME_BYTES
        tone = clip[start : start + 25 * PCM_FRAME_BYTES]  # 25 frames of speech
        await s.play(tone)
        await until(lambda: len(peer.received) >= 32, "more packets")
    finally:
        await s.close()
    pkts = peer.packets()
    assert {p.ssrc for p in pkts} == {s.ssrc}
    assert {p.payload_type for p in pkts} == {PCMA}
    for x, y in zip(pkts, pkts[1:], strict=False):
        assert y.sequence == (x.sequence + 1) & 0xFFFF
        assert y.timestamp == (x.timestamp + 160) & 0xFFFFFFFF
    assert pkts[0].marker
    silence = codec_for(PCMA).silence()
    talk = [i for i, p in enumerate(pkts) if p.payload != silence]
    assert len(talk) == 25 and talk == list(range(talk[0], talk[0] + 25))
    assert [i for i, p in enumerate(pkts) if p.marker] == [0, talk[0]]
    assert all(len(p.payload) == 160 for p in pkts)
    wire = b"".join(pkts[i].payload for i in talk)
    assert wire == codec_for(PCMA).encode(tone)
    # Really A-law (pyVoIP sends μ-law labelled 8): the standard library's A-law decoder agrees.
    assert correlation(samples(tone), samples(audioop.alaw2lin(wire, 2))) > 0.99
    assert correlation(samples(tone), samples(audioop.ulaw2lin(wire, 2))) < 0.9


async def test_reordered_duplicated_lost_packets_record_in_order(ticker: Ticker, peer: Peer) -> None:
    s = await open_session(ticker, PCMU)
    counter = Counter()
    frames: list[bytes] = []
    try:
        s.set_remote(peer.addr)
        s.start_recording(frames.append)
        ticker.register(counter)  # same synchronous step: counts exactly the recording's ticks
        order = list(range(60))
        lost = {10, 11, 37}
        order = [i for i in order if i not in lost]
        order[20], order[21] = order[21], order[20]  # swapped pair
        order.insert(30, 25)  # duplicate, arriving late
        order.insert(5, 4)  # duplicate, back to back
        base = 65500  # the sequence wraps inside the burst
        for i in order:
            peer.send(rtp(base + i, frame_word(i)), (HOST, s.local_port))
        await until(lambda: s.stats["played"] + s.stats["lost"] >= 60, "all frames played")
        ticks = counter.ticks
        recorded = len(frames)
        s.stop_recording()
        ticker.unregister(counter)
    finally:
        await s.close()
    assert recorded == ticks  # one frame per tick, whatever arrived
    body = frames[frames.index(decoded_word(0)) :]
    expected = [PCM_SILENCE if i in lost else decoded_word(i) for i in range(60)]
    assert body[:60] == expected
    assert all(f == PCM_SILENCE for f in body[60:])
    assert s.stats["lost"] == 3
    assert s.stats["duplicates"] == 2


@pytest.mark.parametrize("ptime", [10, 30, 40, 60])
async def test_caller_with_other_ptime_records_exactly(ticker: Ticker, peer: Peer, ptime: int) -> None:
    """a=ptime:30 and friends: packets of any duration record sample-exact, a lost one as its length of silence."""
    size = ptime * 8
    count = 3840 // size
    lost = count // 2
    s = await open_session(ticker, PCMU)
    counter = Counter()
    frames: list[bytes] = []
    try:
        s.set_remote(peer.addr)
        s.start_recording(frames.append)
        ticker.register(counter)
        for i in range(count):
            if i != lost:
                peer.send(rtp(40000 + i, word_packet(i, size), ts=i * size), (HOST, s.local_port))
        await until(lambda: s.stats["played"] + s.stats["lost"] >= count, "all packets played")
        played_at = counter.ticks
        await until(lambda: counter.ticks >= played_at + 30, "the frames of the last packets")
        ticks, recorded = counter.ticks, len(frames)
        s.stop_recording()
        ticker.unregister(counter)
    finally:
        await s.close()
    assert recorded == ticks  # one 20 ms frame per tick, whatever the caller's ptime
    start = next(i for i, f in enumerate(frames) if f != PCM_SILENCE)
    body = b"".join(frames[start:])
    pcmu = codec_for(PCMU)
    expected = b"".join(pcmu.decode(b"\xff" * size if i == lost else word_packet(i, size)) for i in range(count))
    assert body[: len(expected)] == expected
    assert set(body[len(expected) :]) <= {0}
    assert s.stats["lost"] == 1 and s.stats["odd_size"] == 0


async def test_caller_sending_nothing_records_silence_for_every_tick(ticker: Ticker, peer: Peer) -> None:
    s = await open_session(ticker, PCMU)
    counter = Counter()
    frames: list[bytes] = []
    try:
        s.set_remote(peer.addr)
        s.start_recording(frames.append)
        ticker.register(counter)
        await until(lambda: counter.ticks >= 50, "fifty ticks")
        ticks, recorded = counter.ticks, len(frames)
        s.stop_recording()
        ticker.unregister(counter)
    finally:
        await s.close()
    assert recorded == ticks
    assert len(frames) == ticks  # nothing buffered to drain
    assert set(frames) == {PCM_SILENCE}
    assert s.last_rx is None
    assert len(peer.received) >= 50  # while we keep sending silence to the caller


def dtmf_press(seq: int, ts: int, event: int) -> list[bytes]:
    """A key press as a phone sends it: growing duration, then the end packet three times."""
    out = []
    for k, dur in enumerate((160, 320, 480)):
        out.append(rtp(seq + k, TelephoneEvent(event, duration=dur).serialize(), pt=DTMF_PT, ts=ts,
                       marker=k == 0))
    for k in range(3):
        out.append(rtp(seq + 3 + k, TelephoneEvent(event, end=True, duration=640).serialize(), pt=DTMF_PT, ts=ts))
    return out


async def test_dtmf_events_give_one_digit_per_press(ticker: Ticker, peer: Peer) -> None:
    s = await open_session(ticker, PCMU)
    try:
        s.set_remote(peer.addr)
        for n, (event, ts) in enumerate(((5, 8000), (11, 16000), (5, 24000))):  # 5, #, 5 again
            for pkt in dtmf_press(100 + 6 * n, ts, event):
                peer.send(pkt, (HOST, s.local_port))
        await until(lambda: s.stats["dtmf_packets"] >= 18, "all event packets")
        got = [s.digits.get_nowait() for _ in range(s.digits.qsize())]
    finally:
        await s.close()
    assert got == ["5", "#", "5"]
    assert s.stats["digits"] == 3


async def test_bad_datagrams_are_counted_and_ignored(ticker: Ticker, peer: Peer) -> None:
    loop = asyncio.get_running_loop()
    _, intruder = await loop.create_datagram_endpoint(Peer, local_addr=(HOST, 0))
    s = await open_session(ticker, PCMU)
    frames: list[bytes] = []
    try:
        s.set_remote(peer.addr)
        s.start_recording(frames.append)
        to = (HOST, s.local_port)
        peer.send(b"\x00garbage\xff" * 3, to)  # version 0
        peer.send(b"\x80\x00\x00", to)  # shorter than a header
        peer.send(b"\x81" + rtp(1, b"x")[1:12], to)  # CSRC count 1, CSRC missing
        peer.send(b"\x80\xc8\x00\x06" + bytes(24), to)  # RTCP sender report on the RTP port
        peer.send(rtp(1, frame_word(1), pt=18), to)  # G.729, not negotiated
        peer.send(rtp(2, b"\x01\x02", pt=DTMF_PT), to)  # telephone-event too short
        await until(lambda: s.stats["bad_packets"] + s.stats["rtcp"] + s.stats["wrong_payload_type"] >= 6, "counts")
        assert s.latched == peer.addr  # the short event had the right payload type and latched
        intruder.send(rtp(3, frame_word(3)), to)  # right packet, wrong source after latching
        await until(lambda: s.stats["wrong_source"] >= 1, "wrong source counted")
        for i in range(4, 10):
            peer.send(rtp(i, frame_word(i)), to)
        await until(lambda: s.stats["played"] >= 6, "good packets still recorded")
        s.stop_recording()
    finally:
        await s.close()
        assert intruder.transport is not None
        intruder.transport.close()
    assert s.stats["bad_packets"] == 4  # garbage, short, truncated CSRC, short event
    assert s.stats["rtcp"] == 1
    assert s.stats["wrong_payload_type"] == 1
    assert s.stats["wrong_source"] == 1
    assert decoded_word(3) not in frames
    assert [f for f in frames if f != PCM_SILENCE] == [decoded_word(i) for i in range(4, 10)]


async def test_latches_to_real_source_behind_nat(ticker: Ticker, peer: Peer) -> None:
    loop = asyncio.get_running_loop()
    _, nat = await loop.create_datagram_endpoint(Peer, local_addr=(HOST, 0))
    s = await open_session(ticker, PCMU)
    try:
        s.set_remote(peer.addr)  # what the SDP said
        await until(lambda: len(peer.received) >= 2, "packets to the SDP address")
        nat.send(rtp(1, frame_word(1)), (HOST, s.local_port))  # the caller's real source
        await until(lambda: len(nat.received) >= 3, "packets to the latched source")
        assert s.remote == nat.addr
    finally:
        await s.close()
        assert nat.transport is not None
        nat.transport.close()


async def test_play_interrupted_by_digit_leaves_it_queued(ticker: Ticker, peer: Peer) -> None:
    clip = load_clip(10.0)
    s = await open_session(ticker, PCMU)
    try:
        s.set_remote(peer.addr)
        task = asyncio.ensure_future(s.play(clip, interrupt_on_digit=True))
        await until(lambda: len(peer.received) >= 5, "prompt started")
        for pkt in dtmf_press(500, 4000, 1):
            peer.send(pkt, (HOST, s.local_port))
        assert await asyncio.wait_for(task, 30) == "1"
        sent = len(peer.received)
        assert s.digits.peek() == "1"
        assert await s.digits.get() == "1"
        # A digit already waiting stops the next interruptible prompt before it starts.
        s.digits.put_nowait("9")
        assert await s.play(clip, interrupt_on_digit=True) == "9"
        n = len(peer.received)
        await until(lambda: len(peer.received) >= n + 5, "more packets")
    finally:
        await s.close()
    silence = codec_for(PCMU).silence()
    assert sent < 500 - 5  # the 10 s prompt was cut short
    assert all(p.payload == silence for p in peer.packets()[n:])


async def test_sip_info_digit_interrupts_like_rfc_4733(ticker: Ticker, peer: Peer) -> None:
    """follow_media wires the SIP leg's INFO key presses into the same queue and interruption as RFC 4733."""
    from ivr.call import follow_media

    class Leg:
        call_id = "info-test"
        remote_media = None
        on_media_update = None
        on_digit = None
        on_hold = False

    s = await open_session(ticker, PCMU)
    leg = Leg()
    try:
        follow_media(leg, s)  # type: ignore[arg-type]
        s.set_remote(peer.addr)
        task = asyncio.ensure_future(s.play(load_clip(10.0), interrupt_on_digit=True))
        await until(lambda: len(peer.received) >= 5, "prompt started")
        assert leg.on_digit is not None
        leg.on_digit("5")  # what the SIP side calls for INFO "Signal=5"
        assert await asyncio.wait_for(task, 30) == "5"
        assert await s.digits.get() == "5" and s.stats["digits"] == 1
    finally:
        await s.close()
    leg.on_digit("6")  # a late INFO after the call's media closed: dropped, no error
    assert s.digits.empty()


async def test_close_releases_a_waiting_play(ticker: Ticker, peer: Peer) -> None:
    s = await open_session(ticker, PCMU)
    s.set_remote(peer.addr)
    task = asyncio.ensure_future(s.play(load_clip(10.0)))
    await until(lambda: len(peer.received) >= 3, "prompt started")
    await s.close()
    await asyncio.sleep(0)
    assert task.done() and task.result() is None
    assert s.closed
    assert await s.play(b"\x00\x00" * 160) is None  # a closed session plays nothing


async def test_cancelled_play_stops_sending_the_prompt(ticker: Ticker, peer: Peer) -> None:
    s = await open_session(ticker, PCMU)
    try:
        s.set_remote(peer.addr)
        task = asyncio.ensure_future(s.play(load_clip(10.0)))
        await until(lambda: len(peer.received) >= 3, "prompt started")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        n = len(peer.received)
        await until(lambda: len(peer.received) >= n + 10, "more packets")
    finally:
        await s.close()
    silence = codec_for(PCMU).silence()
    assert all(p.payload == silence for p in peer.packets()[n + 2 :])  # +2: in flight at cancel


async def test_failing_sink_stops_recording_not_the_call(ticker: Ticker, peer: Peer) -> None:
    s = await open_session(ticker, PCMU)
    try:
        s.set_remote(peer.addr)

        def sink(frame: bytes) -> None:
            raise OSError(28, "No space left on device")

        s.start_recording(sink)
        await until(lambda: not s.recording, "recording stopped")
        n = len(peer.received)
        await until(lambda: len(peer.received) >= n + 3, "still sending")
        assert isinstance(s.recording_error, OSError)
    finally:
        await s.close()
