"""Self-tests of tests/sipp_support.py and the caller scenarios in tests/sipp/.

The pcap writer is checked by reading its files back (our reader, and tcpdump when installed).
The caller scenarios (vm_*, uac_options) run against a stand-in IVR that is itself SIPp
(tests/sipp/uas_test_answer.xml) whose SDP points at a Python UDP socket, so the RTP SIPp plays
from our pcaps is captured and compared with what went in. Nothing asserts on timing.
"""

from __future__ import annotations

import array
import math
import os
import shutil
import subprocess
import sys
import wave
import xml.dom.minidom
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ivr.media.dtmf import DtmfDetector, TelephoneEvent
from ivr.media.g711 import PCMA, PCMU, alaw_decode, ulaw_decode
from sipp_support import (
    FRAME_SAMPLES,
    SCENARIOS,
    SIPP_DIR,
    RtpCapture,
    SippProcess,
    cached_rtp_pcap,
    free_media_port,
    free_udp_port,
    load_pcm_8k,
    make_rtp_pcap,
    parse_message_trace,
    parse_sdp_audio,
    read_pcap,
    read_rtp_pcap,
    render_scenario,
    requires_pcap_play,
    rtp_pcaps,
    requires_sipp,
    run_sipp,
    scenario_keys,
    sipp_skip_reason,
    start_sipp,
)

SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "speech"
ZH_8K = SPEECH / "aishell-BAC009S0724W0121_8k.wav"  # 4.3 s, real speech
ZH_16K = SPEECH / "aishell-BAC009S0724W0121.wav"
EN_8K = SPEECH / "librispeech-1995-1837-0001_8k.wav"  # 8.7 s
HOST = "127.0.0.1"


def _samples(pcm: bytes) -> array.array[int]:
    a = array.array("h")
    a.frombytes(pcm)
    if sys.byteorder == "big":
        a.byteswap()
    return a


def correlation(x: bytes, y: bytes) -> float:
    a, b = _samples(x), _samples(y)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    ma, mb = sum(a) / n, sum(b) / n
    sab = sum((p - ma) * (q - mb) for p, q in zip(a, b, strict=True))
    saa = sum((p - ma) ** 2 for p in a)
    sbb = sum((q - mb) ** 2 for q in b)
    return sab / math.sqrt(saa * sbb)


def decode(pt: int, payloads: list[bytes]) -> bytes:
    return (ulaw_decode if pt == PCMU else alaw_decode)(b"".join(payloads))


def wav_samples(path: Path) -> int:
    with wave.open(str(path), "rb") as w:
        return w.getnframes()


# --------------------------------------------------------------------------- pcap writer


@pytest.mark.parametrize("pt", [PCMU, PCMA])
def test_pcap_is_the_audio_as_g711_rtp_every_20_ms(tmp_path: Path, pt: int) -> None:
    info = make_rtp_pcap(ZH_8K, tmp_path / "m.pcap", payload_type=pt)
    raw = (tmp_path / "m.pcap").read_bytes()
    assert raw[:4] == bytes.fromhex("d4c3b2a1") and raw[20:24] == (1).to_bytes(4, "little"), "classic pcap, Ethernet"

    packets = read_rtp_pcap(info.path)
    expected = math.ceil(wav_samples(ZH_8K) / FRAME_SAMPLES)
    assert len(packets) == info.packets == info.audio_packets == expected
    assert info.duration == pytest.approx(expected * 0.02)
    times = [t for t, _ in packets]
    assert {round((b - a) * 1e6) for a, b in zip(times, times[1:], strict=False)} == {20_000}
    rtp = [p for _, p in packets]
    assert {p.payload_type for p in rtp} == {pt}
    assert {len(p.payload) for p in rtp} == {160}
    assert {p.ssrc for p in rtp} == {info.ssrc}
    assert [(p.sequence - rtp[0].sequence) & 0xFFFF for p in rtp] == list(range(len(rtp)))
    assert [p.timestamp - rtp[0].timestamp for p in rtp] == [160 * i for i in range(len(rtp))]
    assert [p.marker for p in rtp] == [True] + [False] * (len(rtp) - 1)

    decoded = decode(pt, [p.payload for p in rtp])
    original = load_pcm_8k(ZH_8K)
    assert correlation(decoded, original) > 0.99
    pad = rtp[-1].payload[wav_samples(ZH_8K) % FRAME_SAMPLES :]
    assert pad == bytes([0xFF if pt == PCMU else 0xD5]) * len(pad), "the last packet is padded with silence"


def test_pcap_from_16k_wav_is_resampled(tmp_path: Path) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (apt-get install -y ffmpeg): needed to resample 16 kHz WAVs")
    info = make_rtp_pcap(ZH_16K, tmp_path / "m.pcap")
    with wave.open(str(ZH_16K), "rb") as w:
        seconds = w.getnframes() / w.getframerate()
    assert info.audio_seconds == pytest.approx(seconds, abs=0.002)
    assert info.packets == math.ceil(round(info.audio_seconds * 8000) / FRAME_SAMPLES)
    decoded = decode(PCMU, [p.payload for _, p in read_rtp_pcap(info.path)])
    # the 8 kHz copy beside it was made with sox: a different resampler, nearly the same signal
    assert correlation(decoded, load_pcm_8k(ZH_8K)) > 0.95


def test_pcap_telephone_events(tmp_path: Path) -> None:
    info = make_rtp_pcap(
        ZH_8K, tmp_path / "d.pcap", digits=[(2.0, "#"), (1.0, "1")], trailing_silence=0.5, digit_ms=100
    )
    rtp = [p for _, p in read_rtp_pcap(info.path)]
    audio_slots = math.ceil(wav_samples(ZH_8K) / FRAME_SAMPLES)
    assert len(rtp) == info.packets == audio_slots + 25  # digits take audio slots; 0.5 s silence = 25
    assert info.event_packets == 2 * (5 + 3) and info.audio_packets == len(rtp) - info.event_packets
    assert info.digits == ((1.0, "1"), (2.0, "#"))
    # still one packet per 20 ms slot: sequence and the slot timestamps run on
    assert [(p.sequence - rtp[0].sequence) & 0xFFFF for p in rtp] == list(range(len(rtp)))

    for start_slot, key, code in ((50, "1", 1), (100, "#", 11)):
        group = rtp[start_slot : start_slot + 8]
        assert {p.payload_type for p in group} == {101}
        assert {p.timestamp for p in group} == {rtp[0].timestamp + 160 * start_slot}
        assert [p.marker for p in group] == [True] + [False] * 7
        events = [TelephoneEvent.parse(p.payload) for p in group]
        assert {e.event for e in events} == {code}
        assert [e.end for e in events] == [False] * 5 + [True] * 3
        assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800, 800]
        assert rtp[start_slot - 1].payload_type == PCMU and rtp[start_slot + 8].payload_type == PCMU
        assert rtp[start_slot + 8].timestamp == rtp[0].timestamp + 160 * (start_slot + 8)

    detector = DtmfDetector()
    keys = [k for p in rtp if p.payload_type == 101 and (k := detector.feed(p.timestamp, p.payload))]
    assert keys == ["1", "#"]
    assert {p.payload for p in rtp[-25:]} == {b"\xff" * 160}, "trailing silence is mu-law silence"


def test_pcap_digit_after_the_audio_is_preceded_by_silence(tmp_path: Path) -> None:
    info = make_rtp_pcap(None, tmp_path / "s.pcap", payload_type=PCMA, digits=[(0.5, "#")])
    rtp = [p for _, p in read_rtp_pcap(info.path)]
    assert len(rtp) == 25 + 8
    assert {p.payload for p in rtp[:25]} == {b"\xd5" * 160}
    assert TelephoneEvent.parse(rtp[-1].payload) == TelephoneEvent(11, end=True, volume=10, duration=800)


@pytest.mark.parametrize(
    "kw",
    [
        {"payload_type": 18},
        {"digits": [(1.0, "1"), (1.1, "2")]},
        {"digits": [(1.0, "x")]},
        {"dtmf_pt": 8},
        {"trailing_silence": -1.0},
    ],
)
def test_pcap_bad_arguments(tmp_path: Path, kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_rtp_pcap(ZH_8K, tmp_path / "x.pcap", **kw)  # type: ignore[arg-type]
    assert not (tmp_path / "x.pcap").exists()


def test_tcpdump_reads_the_pcap_as_rtp_with_good_checksums(tmp_path: Path) -> None:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.skip("tcpdump is not installed (apt-get install -y tcpdump): second reader of the pcaps")
    info = make_rtp_pcap(ZH_8K, tmp_path / "t.pcap", payload_type=PCMA, digits=[(1.0, "5")])
    rtp = subprocess.run([tcpdump, "-nn", "-r", str(info.path), "-T", "rtp"], capture_output=True, text=True, check=True)
    lines = rtp.stdout.splitlines()
    assert len(lines) == info.packets
    assert sum(" udp/rtp 160 c8 " in ln for ln in lines) == info.audio_packets
    assert sum(" udp/rtp 4 c101 " in ln for ln in lines) == info.event_packets == 8
    verbose = subprocess.run([tcpdump, "-vv", "-nn", "-r", str(info.path)], capture_output=True, text=True, check=True)
    assert verbose.stdout.count("[udp sum ok]") == info.packets


def test_cached_pcap_is_made_once(tmp_path: Path) -> None:
    a = cached_rtp_pcap(tmp_path, ZH_8K, payload_type=PCMA)
    stamp = a.stat().st_mtime_ns
    assert cached_rtp_pcap(tmp_path, ZH_8K, payload_type=PCMA) == a and a.stat().st_mtime_ns == stamp
    assert cached_rtp_pcap(tmp_path, ZH_8K, payload_type=PCMU) != a
    assert len(read_pcap(a)) == math.ceil(wav_samples(ZH_8K) / FRAME_SAMPLES)


def test_rtp_pcaps_fixture_caches_per_session(rtp_pcaps) -> None:  # type: ignore[no-untyped-def]
    a = rtp_pcaps(ZH_8K, digits=[(1.0, "#")])
    assert rtp_pcaps(ZH_8K, digits=[(1.0, "#")]) == a
    assert a.is_file() and Path(__file__).parent not in a.parents, "generated outside the source tree"


assert rtp_pcaps  # a fixture, imported to be used above


# --------------------------------------------------------------------------- scenarios, offline


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_renders_to_complete_xml(tmp_path: Path, name: str) -> None:
    keys: dict[str, object] = {}
    for key in SCENARIOS[name].keys:
        if key.startswith("pcap"):
            keys[key] = make_rtp_pcap(None, tmp_path / f"{key}.pcap", trailing_silence=1.0).path
    if "rtp_port" in SCENARIOS[name].keys:
        keys["rtp_port"] = 40000
    out = render_scenario(name, tmp_path / "r.xml", keys)
    text = out.read_text(encoding="iso-8859-1")
    xml.dom.minidom.parseString(text.encode("iso-8859-1"))
    for key in SCENARIOS[name].keys:
        assert f"[{key}]" not in text
    # SIPp's own keywords are left for SIPp (a callee scenario echoes the caller's headers instead)
    assert ("[last_Via:]" if name.startswith("uas_") else "[service]") in text


def test_scenario_files_are_all_described() -> None:
    ours = {p.stem for p in SIPP_DIR.glob("*.xml") if p.stem.startswith(("vm_", "uac_", "uas_test_", "uas_campaign"))}
    assert ours == set(SCENARIOS)


def test_scenario_keys_defaults_and_errors(tmp_path: Path) -> None:
    pcap = make_rtp_pcap(None, tmp_path / "s.pcap", trailing_silence=2.0).path
    k = scenario_keys("vm_leave_message_bye", {"pcap": pcap})
    assert k["hangup_ms"] == "3000" and k["offer_pts"] == "0 8 101"
    assert scenario_keys("uas_test_answer", {"rtp_port": 1, "answer_pt": 8})["answer_codec"] == "PCMA"
    with pytest.raises(ValueError, match="needs key 'pcap'"):
        scenario_keys("vm_leave_message", {})
    with pytest.raises(ValueError, match="no key"):
        scenario_keys("vm_no_audio", {"hangup_after": 1})
    with pytest.raises(ValueError, match="cannot go into SIPp XML"):
        scenario_keys("vm_no_audio", {"caller": 'x"<y>'})
    with pytest.raises(FileNotFoundError):
        render_scenario("vm_nonexistent", tmp_path / "n.xml")


def test_trace_and_sdp_parsers() -> None:
    trace = (
        "----------------------------------------------- 2026-01-01 10:00:00.000001\n"
        "UDP message sent (10 bytes):\n\nINVITE sip:12389@127.0.0.1:5060 SIP/2.0\nCSeq: 1 INVITE\n\n"
        "----------------------------------------------- 2026-01-01 10:00:00.000002\n"
        "UDP message received [10] bytes :\n\nSIP/2.0 200 OK\nCSeq: 1 INVITE\nContent-Type: application/sdp\n\n"
        "v=0\nc=IN IP4 127.0.0.9\nm=audio 4000 RTP/AVP 8 101\na=rtpmap:8 PCMA/8000\n\n"
        "----------------------------------------------- 2026-01-01 10:00:01.000000\n"
        "UDP message received [10] bytes :\n\nBYE sip:caller@127.0.0.1 SIP/2.0\nCSeq: 1 BYE\n\n"
    )
    msgs = parse_message_trace(trace)
    assert [(m.direction, m.method, m.status) for m in msgs] == [
        ("sent", "INVITE", None),
        ("received", None, 200),
        ("received", "BYE", None),
    ]
    assert msgs[1].cseq_method == "INVITE"
    media = parse_sdp_audio(msgs[1].body)
    assert media is not None and (media.ip, media.port, media.payload_types) == ("127.0.0.9", 4000, (8, 101))
    assert media.rtpmap == {8: "PCMA/8000"}


def test_skip_reason_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOTLINE_SIPP", str(tmp_path / "no-sipp"))
    reason = sipp_skip_reason()
    assert reason is not None and "apt-get install -y sip-tester" in reason


# --------------------------------------------------------------------------- scenarios against SIPp


@pytest.fixture
def capture() -> Iterator[RtpCapture]:
    with RtpCapture(HOST) as c:
        yield c


@contextmanager
def standin_ivr(tmp_path: Path, capture: RtpCapture, *, calls: int = 1, **keys: object) -> Iterator[tuple[int, SippProcess]]:
    """The SIPp stand-in IVR on a free port, its SDP pointing at `capture`; stopped on exit."""
    port = free_udp_port(HOST)
    with start_sipp(
        "uas_test_answer",
        local_ip=HOST,
        local_port=port,
        calls=calls,
        keys={"rtp_ip": HOST, "rtp_port": capture.port, **keys},
        workdir=tmp_path / "standin",
    ) as uas:
        assert uas.running(), f"stand-in IVR did not start:\n{uas.stop().describe()}"
        yield port, uas


def rtp_received(capture: RtpCapture) -> list:  # type: ignore[type-arg]
    capture.wait_quiet(quiet=0.5, limit=5)
    return sorted(capture.rtp(), key=lambda p: p.sequence)


@requires_pcap_play
@pytest.mark.parametrize(("pt", "offer"), [(PCMU, "0 8 101"), (PCMA, "8 0 101")])
def test_leave_message_streams_the_whole_pcap_then_takes_the_ivr_bye(
    tmp_path: Path, capture: RtpCapture, pt: int, offer: str
) -> None:
    info = make_rtp_pcap(ZH_8K, tmp_path / "m.pcap", payload_type=pt, digits=[(4.4, "1")], trailing_silence=0.2)
    with standin_ivr(
        tmp_path, capture, answer_pt=pt, bye_after_ms=int(info.duration * 1000) + 2000
    ) as (port, uas):
        res = run_sipp(
            "vm_leave_message", HOST, port, pcap=info.path, keys={"offer_pts": offer, "caller": "13907965566"},
            workdir=tmp_path / "uac",
        )  # fmt: skip
        standin = uas.wait()
    assert res.ok and res.successful == 1 and res.failed == 0, res.describe()
    assert standin.ok, standin.describe()
    assert res.bye_received and not res.bye_sent
    invite = res.sent("INVITE")[0]
    assert "13907965566" in (invite.header("From") or "")
    offer_media = parse_sdp_audio(invite.body)
    assert offer_media is not None and offer_media.payload_types == tuple(int(x) for x in offer.split())
    answer = res.answer_media()
    assert answer is not None and (answer.ip, answer.port) == (HOST, capture.port)
    assert answer.payload_types[0] == pt

    got = rtp_received(capture)
    sent = [p for _, p in read_rtp_pcap(info.path)]
    assert len(got) == info.packets, "every packet of the pcap arrived"
    assert [(p.payload_type, p.sequence, p.timestamp, p.ssrc, p.payload) for p in got] == [
        (p.payload_type, p.sequence, p.timestamp, p.ssrc, p.payload) for p in sent
    ], "SIPp relays the RTP of the pcap unchanged"
    audio = [p.payload for p in got if p.payload_type == pt]
    assert correlation(decode(pt, audio), load_pcm_8k(ZH_8K)) > 0.99
    detector = DtmfDetector()
    assert [k for p in got if p.payload_type == 101 and (k := detector.feed(p.timestamp, p.payload))] == ["1"]


@requires_pcap_play
def test_leave_message_fails_when_the_ivr_never_hangs_up(tmp_path: Path, capture: RtpCapture) -> None:
    info = make_rtp_pcap(None, tmp_path / "s.pcap", trailing_silence=0.4)
    with standin_ivr(tmp_path, capture, bye_after_ms=60_000) as (port, uas):
        res = run_sipp("vm_leave_message", HOST, port, pcap=info.path, keys={"bye_wait_ms": 1500}, workdir=tmp_path / "uac")
        standin = uas.wait()
    assert res.returncode == 1 and res.failed == 1 and res.successful == 0, res.describe()
    assert "receive timeout" in res.errors
    assert res.bye_sent, "SIPp hangs up the call it gives up on"
    assert standin.ok and standin.bye_received, standin.describe()


@requires_pcap_play
def test_leave_message_bye_caller_hangs_up_after_the_pcap(tmp_path: Path, capture: RtpCapture) -> None:
    info = make_rtp_pcap(ZH_8K, tmp_path / "m.pcap")
    with standin_ivr(tmp_path, capture, bye_after_ms=120_000) as (port, uas):
        res = run_sipp("vm_leave_message_bye", HOST, port, pcap=info.path, workdir=tmp_path / "uac")
        standin = uas.wait()
    assert res.ok and res.successful == 1, res.describe()
    assert res.bye_sent and not res.bye_received
    assert res.received(200)[-1].cseq_method == "BYE"
    assert standin.ok and standin.bye_received, standin.describe()
    assert len(rtp_received(capture)) == info.packets, "the caller hung up after the whole pcap"


@requires_pcap_play
def test_leave_message_bye_accepts_the_ivr_hanging_up_first(tmp_path: Path, capture: RtpCapture) -> None:
    info = make_rtp_pcap(ZH_8K, tmp_path / "m.pcap")
    with standin_ivr(tmp_path, capture, bye_after_ms=1000) as (port, uas):
        res = run_sipp(
            "vm_leave_message_bye", HOST, port, pcap=info.path, keys={"hangup_ms": 60_000}, workdir=tmp_path / "uac"
        )
        standin = uas.wait()
    assert res.ok and res.successful == 1, res.describe()
    assert res.bye_received and not res.bye_sent
    assert standin.ok, standin.describe()


@requires_pcap_play
def test_hangup_midway_sends_bye_while_the_audio_plays(tmp_path: Path, capture: RtpCapture) -> None:
    info = make_rtp_pcap(EN_8K, tmp_path / "m.pcap")  # 8.7 s; the caller hangs up at 1.5 s
    with standin_ivr(tmp_path, capture, bye_after_ms=120_000) as (port, uas):
        res = run_sipp("vm_hangup_midway", HOST, port, pcap=info.path, keys={"hangup_ms": 1500}, workdir=tmp_path / "uac")
        standin = uas.wait()
    assert res.ok and res.successful == 1, res.describe()
    assert res.bye_sent and not res.bye_received
    assert standin.ok and standin.bye_received, standin.describe()
    got = rtp_received(capture)
    assert got, "the audio had started"
    assert len(got) < info.packets, "SIPp stops playing the pcap when the call ends"


@requires_pcap_play
def test_hangup_midway_fails_if_the_ivr_hangs_up_first(tmp_path: Path, capture: RtpCapture) -> None:
    info = make_rtp_pcap(EN_8K, tmp_path / "m.pcap")
    with standin_ivr(tmp_path, capture, bye_after_ms=500) as (port, uas):
        res = run_sipp(
            "vm_hangup_midway", HOST, port, pcap=info.path, keys={"hangup_ms": 30_000}, workdir=tmp_path / "uac"
        )
        standin = uas.wait()
    assert res.returncode == 1 and res.failed == 1, res.describe()
    assert "unexpected BYE" in res.errors
    assert res.sent(200) and res.sent(200)[0].cseq_method == "BYE", "the IVR's BYE is still answered"
    assert standin.ok, standin.describe()


@requires_sipp
def test_no_audio_sends_no_rtp_and_takes_the_ivr_bye(tmp_path: Path, capture: RtpCapture) -> None:
    with standin_ivr(tmp_path, capture, bye_after_ms=1500) as (port, uas):
        res = run_sipp("vm_no_audio", HOST, port, keys={"bye_wait_ms": 30_000}, workdir=tmp_path / "uac")
        standin = uas.wait()
    assert res.ok and res.successful == 1, res.describe()
    assert res.bye_received and not res.bye_sent
    assert standin.ok, standin.describe()
    assert capture.packets == []


@requires_sipp
def test_no_audio_fails_when_the_ivr_never_hangs_up(tmp_path: Path, capture: RtpCapture) -> None:
    with standin_ivr(tmp_path, capture, bye_after_ms=60_000) as (port, uas):
        res = run_sipp("vm_no_audio", HOST, port, keys={"bye_wait_ms": 1000}, workdir=tmp_path / "uac")
        standin = uas.wait()
    assert res.returncode == 1 and res.failed == 1, res.describe()
    assert standin.ok and standin.bye_received, standin.describe()


@requires_pcap_play
def test_early_hash_ends_with_a_hash_event(tmp_path: Path, capture: RtpCapture) -> None:
    # 1 s of speech, then '#'
    one_second = tmp_path / "1s.wav"
    with wave.open(str(ZH_8K), "rb") as w_in, wave.open(str(one_second), "wb") as w_out:
        w_out.setparams(w_in.getparams())
        w_out.writeframes(w_in.readframes(8000))
    short = make_rtp_pcap(one_second, tmp_path / "h.pcap", digits=[(1.0, "#")])
    assert short.digits == ((1.0, "#"),) and short.packets == 50 + 8
    with standin_ivr(tmp_path, capture, bye_after_ms=int(short.duration * 1000) + 1500) as (port, uas):
        res = run_sipp("vm_early_hash", HOST, port, pcap=short.path, workdir=tmp_path / "uac")
        standin = uas.wait()
    assert res.ok and res.successful == 1 and res.bye_received, res.describe()
    assert standin.ok, standin.describe()
    got = rtp_received(capture)
    assert len(got) == short.packets
    assert [TelephoneEvent.parse(p.payload).end for p in got[-3:]] == [True] * 3
    detector = DtmfDetector()
    assert [k for p in got if p.payload_type == 101 and (k := detector.feed(p.timestamp, p.payload))] == ["#"]


@requires_sipp
def test_options_ping_and_several_calls(tmp_path: Path, capture: RtpCapture) -> None:
    with standin_ivr(tmp_path, capture, calls=3) as (port, uas):
        res = run_sipp("uac_options", HOST, port, calls=3, rate=10, workdir=tmp_path / "uac")
        standin = uas.wait()
    assert res.ok and (res.successful, res.failed) == (3, 0), res.describe()
    assert len(res.sent("OPTIONS")) == 3 and len(res.received(200)) == 3
    assert standin.ok and standin.successful == 3, standin.describe()


@requires_sipp
def test_options_against_nobody_fails_within_the_timeout(tmp_path: Path) -> None:
    res = run_sipp("uac_options", HOST, free_udp_port(HOST), timeout=5, workdir=tmp_path / "uac")
    assert not res.ok and res.returncode != 0, res.describe()
    assert not res.timed_out and not res.stopped, "sipp's own -timeout ended it"
    assert "timed out" in res.errors


@requires_sipp
def test_stopping_a_running_sipp_is_never_ok(tmp_path: Path, capture: RtpCapture) -> None:
    with standin_ivr(tmp_path, capture) as (_port, uas):
        pid = uas.pid
        result = uas.stop()
    assert result.stopped and not result.ok, result.describe()
    assert not uas.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_port_handed_out_is_not_handed_out_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may offer a just-picked (not yet bound) port again: a phone's media port must never be
    its own SIP port (CI saw "Unable to bind audio RTP socket ... Address already in use")."""
    import sipp_support

    sip = free_udp_port()
    media = sipp_support._kernel_port("127.0.0.1") & ~1  # a free neighbourhood for the media pick to land on
    while not all(_udp_free(q) for q in range(media, media + 4)) or sip in range(media - 4, media + 4):
        media = sipp_support._kernel_port("127.0.0.1") & ~1
    offers = iter([sip, sip, sip + 1 if sip % 2 == 0 else sip, media])
    monkeypatch.setattr(sipp_support, "_kernel_port", lambda host: next(offers))
    assert free_media_port() == media
    offers = iter([sip, media + 2, sip + 10_000 if sip < 50_000 else sip - 10_000])
    assert free_udp_port() not in (sip, media + 2)


def _udp_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

