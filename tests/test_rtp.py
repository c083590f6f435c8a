"""RTP packets, G.711 and RFC 4733 telephone-events (the pure media layer; stream ordering: tests/test_media_session.py)."""

from __future__ import annotations

import array
import math
import random
import struct
import sys
import warnings
import wave
from pathlib import Path

import pytest

from ivr.media import g711
from ivr.media.dtmf import DtmfDetector, DtmfParseError, TelephoneEvent
from ivr.media.rtp import RtpPacket, RtpParseError

SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "speech"


def header(*, p: int = 0, x: int = 0, cc: int = 0, m: int = 0, pt: int = 0, seq: int = 1, ts: int = 160, ssrc: int = 0x11223344) -> bytes:
    return struct.pack("!BBHII", (2 << 6) | (p << 5) | (x << 4) | cc, (m << 7) | pt, seq, ts, ssrc)


# ---------------------------------------------------------------------------------------------
# RTP packets


def test_parse_plain_packet_and_serialise_identically() -> None:
    data = header(m=1, pt=8, seq=65535, ts=0xFFFFFFFF) + b"\xd5" * 160
    p = RtpPacket.parse(data)
    assert (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc) == (8, True, 65535, 0xFFFFFFFF, 0x11223344)
    assert p.payload == b"\xd5" * 160 and p.csrc == () and p.extension_profile is None and p.padding == 0
    assert bytes(p) == data


def test_csrc_extension_and_padding() -> None:
    data = (
        header(p=1, x=1, cc=2, pt=0)
        + struct.pack("!II", 1, 2)
        + struct.pack("!HH", 0xBEDE, 1)
        + b"\x10\xaa\x00\x00"
        + b"\xff" * 160
        + b"\x00\x00\x03"
    )
    p = RtpPacket.parse(data)
    assert p.csrc == (1, 2)
    assert p.extension_profile == 0xBEDE and p.extension == b"\x10\xaa\x00\x00"
    assert p.padding == 3 and p.payload == b"\xff" * 160
    assert bytes(p) == data


def test_padding_only_packet() -> None:
    data = header(p=1) + b"\x00\x00\x00\x04"
    p = RtpPacket.parse(data)
    assert p.payload == b"" and p.padding == 4 and bytes(p) == data


def test_every_truncation_of_a_full_packet() -> None:
    data = header(x=1, cc=2) + struct.pack("!II", 1, 2) + struct.pack("!HH", 0xBEDE, 2) + bytes(8) + b"\xff" * 20
    messages = {}
    for cut in range(len(data)):
        try:
            RtpPacket.parse(data[:cut])
        except RtpParseError as e:
            messages[cut] = str(e)
            continue
        assert cut >= 32  # only cuts inside the payload still make (shorter) packets
    assert messages[0] == "RTP packet is shorter than 12 bytes (0)"
    assert messages[11] == "RTP packet is shorter than 12 bytes (11)"
    assert all(messages[c] == "RTP packet has truncated CSRC" for c in range(12, 20))
    assert all(messages[c] == "RTP packet has truncated extension header" for c in range(20, 24))
    assert all(messages[c] == "RTP packet has truncated extension" for c in range(24, 32))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes([0x40]) + header()[1:], "RTP version is 1, not 2"),
        (bytes([0x00]) + header()[1:] + b"\xff", "RTP version is 0, not 2"),
        (header(p=1), "RTP packet has padding flag but no padding"),
        (header(p=1) + b"\xff\xff\x00", "RTP packet padding length 0 is invalid"),
        (header(p=1) + b"\xff\x05", "RTP packet padding length 5 is invalid"),
        (header(m=1, pt=72) + bytes(8), "RTCP packet (type 200) on the RTP port"),
        (header(m=1, pt=73) + bytes(8), "RTCP packet (type 201) on the RTP port"),
    ],
)
def test_invalid_packets(data: bytes, message: str) -> None:
    with pytest.raises(RtpParseError) as info:
        RtpPacket.parse(data)
    assert str(info.value) == message


def test_random_datagrams_only_raise_rtp_parse_error() -> None:
    rng = random.Random(3550)
    good = 0
    for _ in range(5000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        if len(data) > 0 and rng.random() < 0.7:
            data = bytes([0x80 | (data[0] & 0x3F)]) + data[1:]  # mostly version 2, to reach the deeper checks
        try:
            p = RtpPacket.parse(data)
        except RtpParseError:
            continue
        good += 1
        assert RtpPacket.parse(bytes(p)) == p
        if not p.padding:  # padding octets are arbitrary on the wire; we write zeros
            assert bytes(p) == data
    assert good > 100


@pytest.mark.parametrize(
    "field",
    [{"payload_type": 128}, {"sequence": 65536}, {"timestamp": -1}, {"ssrc": 2**32}, {"csrc": tuple(range(16))}, {"extension_profile": 1, "extension": b"abc"}, {"padding": 256}],
)
def test_serialise_refuses_out_of_range_fields(field: dict[str, object]) -> None:
    p = RtpPacket(payload_type=0, sequence=1, timestamp=2, ssrc=3, payload=b"x")
    for name, value in field.items():
        setattr(p, name, value)
    with pytest.raises(ValueError):
        p.serialize()


# ---------------------------------------------------------------------------------------------
# G.711


def read_wav(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        return w.readframes(w.getnframes())


def samples(pcm: bytes) -> list[int]:
    a = array.array("h", pcm)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tolist()


def correlation(x: list[int], y: list[int]) -> float:
    assert len(x) == len(y) and x
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


@pytest.fixture(scope="module")
def clip() -> bytes:
    return read_wav(SPEECH / "aishell-BAC009S0724W0121_8k.wav")


@pytest.mark.parametrize("pt", [g711.PCMU, g711.PCMA])
def test_real_speech_round_trips(clip: bytes, pt: int) -> None:
    codec = g711.codec_for(pt)
    encoded = codec.encode(clip)
    assert len(encoded) == len(clip) // 2
    decoded = codec.decode(encoded)
    assert correlation(samples(clip), samples(decoded)) > 0.99


def test_laws_are_not_interchangeable(clip: bytes) -> None:
    """The same bytes decoded with the wrong law are badly distorted: the tests above can fail."""
    wrong = g711.ulaw_decode(g711.alaw_encode(clip))
    assert correlation(samples(clip), samples(wrong)) < 0.9


def sine(freq: float = 1000.0, amplitude: int = 12000, n: int = 8000) -> bytes:
    a = array.array("h", (int(amplitude * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n)))
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def test_pcma_sine_decodes_as_alaw() -> None:
    tone = sine()
    decoded = samples(g711.alaw_decode(g711.alaw_encode(tone)))
    assert correlation(samples(tone), decoded) > 0.999
    assert 11000 < max(decoded) < 13000


def test_silence_bytes() -> None:
    assert g711.ulaw_encode(bytes(320)) == b"\xff" * 160 == g711.CODECS[g711.PCMU].silence()
    assert g711.alaw_encode(bytes(320)) == b"\xd5" * 160 == g711.CODECS[g711.PCMA].silence()
    assert max(abs(s) for s in samples(g711.alaw_decode(b"\xd5" * 160))) <= 8
    assert min(samples(g711.ulaw_decode(b"\x00" * 4))) < -30000  # 0x00 is near full scale, not silence


def test_odd_length_pcm_and_unknown_payload_type() -> None:
    with pytest.raises(ValueError, match="even number"):
        g711.ulaw_encode(b"\x00\x00\x00")
    with pytest.raises(KeyError, match="not G.711"):
        g711.codec_for(18)


def test_pyvoip_pcma_transmit_is_mulaw_and_ours_is_alaw(clip: bytes) -> None:
    """PYVOIP.md defect 3: pyVoIP's RTPClient labels PT 8 but μ-law-encodes the audio."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pyVoIP.RTP import PayloadType, RTPClient, TransmitType

    # pyVoIP takes 8-bit unsigned linear audio; give it the same clip, so only the law differs.
    unsigned8 = bytes(((s >> 8) + 128) & 0xFF for s in samples(clip))
    reference = samples(clip)

    pyvoip_pcma = RTPClient({8: PayloadType.PCMA}, "127.0.0.1", 0, "127.0.0.1", 0, TransmitType.SENDRECV)
    assert pyvoip_pcma.preference == PayloadType.PCMA
    theirs = samples(g711.alaw_decode(pyvoip_pcma.encode_packet(unsigned8)))
    assert correlation(reference, theirs) < 0.9

    pyvoip_pcmu = RTPClient({0: PayloadType.PCMU}, "127.0.0.1", 0, "127.0.0.1", 0, TransmitType.SENDRECV)
    control = samples(g711.ulaw_decode(pyvoip_pcmu.encode_packet(unsigned8)))
    assert correlation(reference, control) > 0.99  # its 8-bit input is fine; the law is the defect

    ours = samples(g711.alaw_decode(g711.CODECS[g711.PCMA].encode(clip)))
    assert correlation(reference, ours) > 0.99


# ---------------------------------------------------------------------------------------------
# RFC 4733 telephone-events


def test_event_payload_round_trip() -> None:
    ev = TelephoneEvent(event=11, end=True, volume=10, duration=1280)
    assert bytes(ev) == b"\x0b\x8a\x05\x00"
    assert TelephoneEvent.parse(b"\x0b\x8a\x05\x00") == ev and ev.char == "#"
    assert TelephoneEvent.parse(b"\x05\x0a\x00\xa0\xde\xad").event == 5  # extra bytes ignored
    assert TelephoneEvent(event=16).char is None
    with pytest.raises(ValueError):
        TelephoneEvent(event=1, volume=64).serialize()


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\x01\x0a", b"\x01\x0a\x00"])
def test_truncated_event_payload_raises(payload: bytes) -> None:
    with pytest.raises(DtmfParseError, match="needs 4"):
        TelephoneEvent.parse(payload)


def press(event: int, timestamp: int, updates: int = 4, end_repeats: int = 3) -> list[tuple[int, bytes]]:
    """The packets one key press produces: growing durations, then the end packet repeated."""
    packets = [(timestamp, bytes(TelephoneEvent(event, False, 10, 160 * (i + 1)))) for i in range(updates)]
    packets += [(timestamp, bytes(TelephoneEvent(event, True, 10, 160 * (updates + 1))))] * end_repeats
    return packets


def detect(packets: list[tuple[int, bytes]]) -> str:
    d = DtmfDetector()
    return "".join(c for ts, p in packets if (c := d.feed(ts, p)) is not None)


def test_one_digit_per_press_despite_end_retransmissions() -> None:
    assert detect(press(5, 1000)) == "5"


def test_same_digit_twice_is_two_presses() -> None:
    assert detect(press(1, 1000) + press(1, 3000) + press(11, 5000)) == "11#"


def test_lost_start_packets_still_yield_the_digit() -> None:
    assert detect(press(9, 1000)[-3:]) == "9"


def test_long_press_continuation_segment_is_not_a_new_digit() -> None:
    first = [(1000, bytes(TelephoneEvent(2, False, 10, 0xFFFF)))]
    second = [(1000 + 0xFFFF, bytes(TelephoneEvent(2, False, 10, 800)))]
    assert detect(first + second + press(2, 1000 + 0xFFFF + 8000)) == "22"


def test_non_keypad_events_are_ignored() -> None:
    assert detect(press(16, 1000) + press(32, 3000)) == ""
