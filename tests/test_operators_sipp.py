"""Live operators end to end: the real `hotline serve --only ivr`, SIPp callers, SIPp operator phones.

The service runs as a subprocess (tests/ivr_harness.py) with the rehearsal clock inside
office hours; operators are made with `hotline users add --role operator --sip-uri ...` and
set available with `hotline operators presence`. Each operator phone is a SIPp UAS on its
own port (tests/sipp/op_answer.xml answers and plays a 1 kHz tone; uas_dial_reject.xml
answers 486). The caller is SIPp playing a pcap: key 1 (report) then a 440 Hz tone.

How we know who heard what: the RTP the service *sends* on each leg is captured on the
loopback interface (an AF_PACKET socket; the tests need root anyway, for SIPp's pcap play).
We do not point the SDP at a capture socket because the service latches to the real source
of the first packet (symmetric RTP), i.e. SIPp's player, so a capture socket named in the
SDP stops receiving after the first packet. The service's ports of the two legs come from
the SDP it sent: its 200 OK to the caller, its INVITE to the operator. The audio is decoded
and each 20 ms frame classified by Goertzel power at 440 Hz and 1 kHz; the stereo recording
is classified the same way per channel. Only counts of frames are asserted, never timings.
"""

from __future__ import annotations

import array
import json
import math
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from config.db import make_engine, session_factory
from ivr.media.g711 import ulaw_decode
from ivr.media.rtp import RtpPacket
from ivr_harness import HOTLINE, IvrService, clean_environ, ivr_prompts, ivr_service  # noqa: F401 (fixtures)
from recordings.models import Recording
from sipp_support import (
    SippProcess,
    load_pcm_8k,
    free_media_port,
    free_udp_port,
    make_rtp_pcap,
    parse_sdp_audio,
    requires_pcap_play,
    start_sipp,
)
from test_ivr_sipp import SPEECH, reference, write_wav
from transcription.models import Transcript, TranscriptionJob

pytestmark = [requires_pcap_play, pytest.mark.slow]

HOST = "127.0.0.1"
CALLER = "13800138001"
OFFICE_HOURS = "2026-12-08T10:00:00+08:00"
"""A Tuesday morning: the centre is open by its calendar."""
FRAME = 160
OPERATOR_PASSWORD = "Operator-pass-2026"
CALLER_CLIPS = ("104_003_0019", "104_003_0253", "104_003_0280")
OPERATOR_CLIPS = ("104_003_0193", "104_003_0294", "104_003_0352")
"""Real Korean read speech (the test model is Korean), different sentences on each side."""


# --------------------------------------------------------------------------- audio helpers


def tone_wav(path: Path, hz: float, seconds: float, amplitude: int = 8000) -> Path:
    samples = array.array("h", (int(amplitude * math.sin(2 * math.pi * hz * i / 8000)) for i in range(int(8000 * seconds))))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples.tobytes())
    return path


def goertzel(frame: array.array, hz: float) -> float:  # type: ignore[type-arg]
    k = 2 * math.cos(2 * math.pi * hz / 8000)
    s1 = s2 = 0.0
    for x in frame:
        s1, s2 = x + k * s1 - s2, s1
    return s1 * s1 + s2 * s2 - k * s1 * s2


def tone_frames(pcm: bytes) -> dict[str, int]:
    """20 ms frames that are a pure 440 Hz or 1 kHz tone: not silence, and that frequency holds
    most of the frame's energy (speech in the prompts has energy near 440 Hz too, never most of it)."""
    a = array.array("h", pcm)
    counts = {"440": 0, "1000": 0}
    for i in range(0, len(a) - FRAME + 1, FRAME):
        frame = a[i : i + FRAME]
        energy = sum(x * x for x in frame)
        if energy < FRAME * 1000**2 / 2:
            continue  # silence or near it (our tones have amplitude 8000)
        for hz in (440, 1000):
            # A pure tone's Goertzel power is ~ (N/2) * energy; ask for at least 70 % of that.
            if goertzel(frame, hz) > 0.7 * energy * FRAME / 2:
                counts[str(hz)] += 1
    return counts


class LoopbackSniffer:
    """UDP packets sent from a port range on lo, kept as (source port, RTP packet)."""

    def __init__(self, ports: range) -> None:
        self.ports = ports
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.packets: list[tuple[int, RtpPacket]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if addr[2] == socket.PACKET_OUTGOING or data[12:14] != b"\x08\x00":
                continue  # each loopback packet is seen twice; keep the incoming copy. IPv4 only.
            ip = data[14:]
            if ip[9] != 17:
                continue
            udp = ip[(ip[0] & 15) * 4 :]
            sport, _ = struct.unpack("!HH", udp[:4])
            if sport in self.ports:
                try:
                    self.packets.append((sport, RtpPacket.parse(udp[8:])))
                except Exception:  # noqa: BLE001 - not RTP (SIP from the same range cannot be: other ports)
                    continue

    def audio_from(self, port: int) -> bytes:
        return b"".join(ulaw_decode(p.payload) for sp, p in self.packets if sp == port and p.payload_type == 0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


# --------------------------------------------------------------------------- service helpers


def rtp_range() -> range:
    """A private RTP port range for the service, so the sniffer sees only its packets."""
    base = 41000 + (free_udp_port() % 40) * 500
    return range(base, base + 400)


def start_service(ivr_service, ports: range, tmp: Path, env: dict[str, str] | None = None,  # type: ignore[no-untyped-def]
                  parts: tuple[str, ...] = ("ivr",), **queue: str) -> IvrService:
    """Office hours by the rehearsal clock, RTP on `ports`, and silent hold music (the built-in
    melody has A4 = 440 Hz notes, which would pass for the caller's tone). With "api" in `parts`
    the API listens on a free port too (`api_url`)."""
    silence = tmp / "hold-silence.wav"
    with wave.open(str(silence), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(16000))
    env = {**(env or {}), "HOTLINE_CALENDAR__CLOCK_START": OFFICE_HOURS, "HOTLINE_SIP__RTP_PORT_MIN": str(ports.start),
           "HOTLINE_SIP__RTP_PORT_MAX": str(ports.stop - 1), "HOTLINE_QUEUE__HOLD_MUSIC": str(silence)}
    env.update({f"HOTLINE_QUEUE__{k.upper()}": v for k, v in queue.items()})
    if "api" in parts:
        with socket.socket() as s:
            s.bind((HOST, 0))
            env["HOTLINE_API__PORT"] = str(s.getsockname()[1])
    svc = ivr_service(env, parts=parts)
    if "api" in parts:
        wait_log(svc, "api listening")
    return svc  # type: ignore[no-any-return]


def api_url(svc: IvrService) -> str:
    return f"http://{HOST}:{svc.env['HOTLINE_API__PORT']}"


def api(svc: IvrService, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """One JSON request to the service's API: (status, decoded body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api_url(svc) + path, data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read() or b"null")


def api_token(svc: IvrService, username: str, password: str = OPERATOR_PASSWORD) -> str:
    status, body = api(svc, "POST", "/api/v1/auth/token", {"username": username, "password": password})
    assert status == 201, body
    return body["token"]  # type: ignore[no-any-return]


def add_operator(svc: IvrService, name: str, sip_port: int) -> int:
    r = subprocess.run([HOTLINE, "users", "add", name, "--role", "operator", "--sip-uri", f"sip:{name}@{HOST}:{sip_port}",
                        "--password-stdin"], input=OPERATOR_PASSWORD + "\n", env={**clean_environ(), **svc.env},
                       capture_output=True, text=True, timeout=120, cwd=svc.workdir)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return next(o["user_id"] for o in operators(svc) if o["username"] == name)


def operators(svc: IvrService) -> list[dict[str, Any]]:
    return json.loads(svc.hotline("operators", "list", "--json").stdout)  # type: ignore[no-any-return]


def state_of(svc: IvrService, name: str) -> str:
    return next(o["state"] for o in operators(svc) if o["username"] == name)


def wait_state(svc: IvrService, name: str, state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = state_of(svc, name)
        if seen == state:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} not {state} within {timeout} s (last {seen})\n{svc.describe()}")


def wait_log(svc: IvrService, text: str, count: int = 1, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if svc.log().count(text) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{count}x {text!r} not logged within {timeout} s\n{svc.describe()}")


def db(svc: IvrService) -> Any:
    return session_factory(make_engine(svc.db_url))


def caller_pcap(tmp: Path, seconds: float = 30) -> Path:
    """Key 1 (report) half a second in, then a 440 Hz tone: what the operator must hear."""
    return make_rtp_pcap(tone_wav(tmp / "a440.wav", 440, seconds), tmp / "caller.pcap", digits=[(0.5, "1")]).path


def operator_pcap(tmp: Path, seconds: float = 20) -> Path:
    return make_rtp_pcap(tone_wav(tmp / "a1k.wav", 1000, seconds), tmp / "operator.pcap").path


def speech_wav(path: Path, clips: tuple[str, ...], seconds: float) -> Path:
    """The Zeroth clips one after another, again and again, for `seconds`."""
    pcm = b""
    while len(pcm) < seconds * 16000:
        pcm += b"".join(load_pcm_8k(SPEECH / "ko-zeroth" / f"{c}_8k.wav") for c in clips)
    return write_wav(path, pcm[: int(seconds * 16000)])


def bigrams(text: str) -> set[str]:
    t = "".join(text.split())
    return {t[i : i + 2] for i in range(len(t) - 1)}


def closer_to(text: str, mine: tuple[str, ...], theirs: tuple[str, ...]) -> tuple[float, float]:
    """Share of the transcript's character bigrams found in each side's reference sentences."""
    got = bigrams(text)
    ref = {side: set().union(*(bigrams(reference(f"ko-zeroth/{c}_8k.wav")) for c in clips))
           for side, clips in (("mine", mine), ("theirs", theirs))}
    return len(got & ref["mine"]) / max(1, len(got)), len(got & ref["theirs"]) / max(1, len(got))


def start_caller(svc: IvrService, scenario: str, tmp: Path, name: str, caller: str = CALLER, **keys: Any) -> SippProcess:
    assert svc.port is not None
    return start_sipp(scenario, HOST, svc.port, keys={"caller": caller, **keys}, workdir=tmp / name, timeout=150)


def start_phone(scenario: str, tmp: Path, name: str, port: int, **keys: Any) -> SippProcess:
    return start_sipp(scenario, local_port=port, media_port=free_media_port(), keys=keys, workdir=tmp / name,
                      timeout=150)


@pytest.fixture
def sniffer() -> Iterator[LoopbackSniffer]:
    ports = rtp_range()
    s = LoopbackSniffer(ports)
    yield s
    s.close()


# --------------------------------------------------------------------------- tests


def test_caller_reaches_operator_both_hear_each_other_recorded_in_stereo(ivr_service, sniffer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """486 from the first operator → the next one rings; bridged audio both ways; stereo recording; presence cycle."""
    svc = start_service(ivr_service, sniffer.ports, tmp_path, ring_timeout_seconds="8", wrap_up_seconds="20",
                        strategy="longest_idle")
    busy_port, ok_port = free_udp_port(), free_udp_port()
    busy_id = add_operator(svc, "opbusy", busy_port)
    ok_id = add_operator(svc, "opok", ok_port)
    svc.hotline("operators", "presence", "opbusy", "available")  # idle longer: rung first
    time.sleep(0.05)
    svc.hotline("operators", "presence", "opok", "available")
    busy = start_phone("uas_dial_reject", tmp_path, "busy", busy_port, status=486, reason="Busy Here")
    ok = start_phone("op_answer", tmp_path, "ok", ok_port, pcap=operator_pcap(tmp_path), hold_ms=12_000)
    caller = start_caller(svc, "vm_leave_message", tmp_path, "caller", pcap=caller_pcap(tmp_path), bye_wait_ms=90_000)
    wait_state(svc, "opok", "busy")
    assert state_of(svc, "opbusy") == "available"  # declining does not change presence
    caller_result = caller.wait(120)
    ok_result, busy_result = ok.wait(60), busy.wait(60)
    assert caller_result.ok, caller_result.describe()
    assert ok_result.ok and busy_result.ok, ok_result.describe() + busy_result.describe()
    assert not ok_result.received("BYE"), "the operator hung up: the service must BYE the caller, not the operator"
    assert caller_result.received("BYE")
    wait_state(svc, "opok", "wrap_up", timeout=30)
    wait_state(svc, "opok", "available", timeout=90)

    # The Call row: answered by the second operator, after a wait; the operator legs are outbound rows.
    row = next(c for c in svc.calls() if c["direction"] == "in")
    assert (row["disposition"], row["operator_user_id"], row["queue_exit"]) == ("operator", ok_id, "operator"), row
    assert row["queue_wait_seconds"] is not None and row["recording_id"] is not None
    outs = sorted((c["disposition"], c["called"]) for c in svc.calls() if c["direction"] == "out")
    assert outs == [("answered", "opok"), ("busy", "opbusy")], outs
    assert busy_id != ok_id

    # Who heard what: the service's own RTP on each leg.
    caller_sdp = parse_sdp_audio(caller_result.answer_sdp or "")
    invite = ok_result.received("INVITE")[0]
    op_sdp = parse_sdp_audio(invite.body)
    assert caller_sdp is not None and op_sdp is not None
    to_caller = tone_frames(sniffer.audio_from(caller_sdp.port))
    to_operator = tone_frames(sniffer.audio_from(op_sdp.port))
    assert to_operator["440"] >= 100, f"operator did not hear the caller's 440 Hz: {to_operator}"
    assert to_caller["1000"] >= 100, f"caller did not hear the operator's 1 kHz: {to_caller}"
    assert to_operator["1000"] < 5 and to_caller["440"] < 5, (to_caller, to_operator)  # no echo of one's own voice

    # The stereo recording: caller left (440 Hz), operator right (1 kHz); transcription queued.
    with db(svc)() as s:
        rec = s.get(Recording, row["recording_id"])
        assert rec is not None and (rec.kind, rec.call_id) == ("conversation", row["id"])
        jobs = s.scalars(select(TranscriptionJob).where(TranscriptionJob.recording_id == rec.id)).all()
        assert len(jobs) == 1
        path = svc.storage / rec.storage_key
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        stereo = array.array("h", w.readframes(w.getnframes()))
    left, right = tone_frames(stereo[0::2].tobytes()), tone_frames(stereo[1::2].tobytes())
    assert left["440"] >= 100 and left["1000"] < 5, left
    assert right["1000"] >= 100 and right["440"] < 5, right
    log = svc.log()
    assert "operator rung" in log and "conversation started" in log and "conversation ended" in log
    assert not list(svc.live_dir.glob("*.conversation.wav"))


def test_three_callers_hear_positions_abandon_to_callbacks_and_overflow(ivr_service, sniffer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Nobody free (one operator away): positions 1, 2, 3; hang-ups become callbacks; max wait → voicemail."""
    svc = start_service(ivr_service, sniffer.ports, tmp_path, max_wait_seconds="25", announce_seconds="60",
                        env={"HOTLINE_VOICEMAIL__MAX_SECONDS": "5"})  # the overflow caller's message: short
    add_operator(svc, "opaway", free_udp_port())
    svc.hotline("operators", "presence", "opaway", "away")  # logged in, not free: callers wait
    pcap = make_rtp_pcap(None, tmp_path / "key1.pcap", digits=[(0.5, "1")], trailing_silence=40).path
    callers = []
    for n in range(3):
        callers.append(start_caller(svc, "vm_hangup_midway", tmp_path, f"c{n}", caller=f"1380013800{n + 2}",
                                    pcap=pcap, hangup_ms=14_000 - 3_000 * n))
        wait_log(svc, "caller queued", n + 1)
    results = [c.wait(90) for c in callers]
    assert all(r.ok for r in results), "\n".join(r.describe() for r in results)
    rows = {c["caller"]: c for c in svc.calls() if c["direction"] == "in"}
    positions: dict[int, int] = {}
    for m in re.finditer(r"position announced.*?call_id=(\d+).*?position=(\d+)", svc.log()):
        positions.setdefault(int(m.group(1)), int(m.group(2)))  # the first announcement, on joining
    assert [positions.get(rows[f"1380013800{n + 2}"]["id"]) for n in range(3)] == [1, 2, 3], positions
    for n in range(3):
        row = rows[f"1380013800{n + 2}"]
        assert (row["disposition"], row["queue_exit"]) == ("abandoned", "abandoned"), row
    with db(svc)() as s:
        from cases.callbacks import Callback

        phones = sorted((c.phone, c.reason) for c in s.scalars(select(Callback)))
    assert phones == [(f"1380013800{n + 2}", "abandoned") for n in range(3)], phones

    # Overflow: a fourth caller waits max_wait_seconds, then leaves a message.
    speech_then_hash = make_rtp_pcap(tone_wav(tmp_path / "talk.wav", 300, 3), tmp_path / "vm.pcap",
                                     digits=[(0.5, "1")]).path
    late = start_caller(svc, "vm_leave_message", tmp_path, "late", caller="13800138009", pcap=speech_then_hash,
                        bye_wait_ms=100_000)
    result = late.wait(140)
    assert result.ok, result.describe()
    row = svc.wait_call_ended(next(c["sip_call_id"] for c in svc.calls() if c["caller"] == "13800138009"))
    assert (row["disposition"], row["queue_exit"]) == ("voicemail", "timeout"), row
    assert row["queue_wait_seconds"] >= 25


def test_kill_during_bridged_call_keeps_recording_and_frees_operator(ivr_service, sniffer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    svc = start_service(ivr_service, sniffer.ports, tmp_path, wrap_up_seconds="30")
    port = free_udp_port()
    add_operator(svc, "opkill", port)
    svc.hotline("operators", "presence", "opkill", "available")
    phone = start_phone("op_answer", tmp_path, "op", port, pcap=operator_pcap(tmp_path, 60), hold_ms=120_000)
    caller = start_caller(svc, "vm_leave_message", tmp_path, "caller", pcap=caller_pcap(tmp_path, 60),
                          bye_wait_ms=120_000)
    wait_log(svc, "conversation started")
    live = list(svc.live_dir.glob("*.conversation.wav"))
    assert len(live) == 1
    deadline = time.monotonic() + 30
    while live[0].stat().st_size < 44 + 3 * 32000 and time.monotonic() < deadline:
        time.sleep(0.2)  # at least 3 s of stereo on disk (the writer flushes every second)
    svc.kill()
    on_disk = live[0].stat().st_size
    assert on_disk >= 44 + 3 * 32000
    caller.stop()
    phone.stop()
    with db(svc)() as s:
        from ivr.presence import OperatorPresence

        assert s.scalars(select(OperatorPresence.state)).one() == "busy"  # what the crash left
    svc.restart()
    assert state_of(svc, "opkill") in ("wrap_up", "available")
    row = next(c for c in svc.calls() if c["direction"] == "in")
    assert row["recording_id"] is not None and row["disposition"] == "operator", row
    with db(svc)() as s:
        rec = s.get(Recording, row["recording_id"])
        assert rec is not None and rec.kind == "conversation" and rec.duration >= 3.0
    with wave.open(str(svc.storage / rec.storage_key), "rb") as w:
        assert w.getnchannels() == 2
        stereo = array.array("h", w.readframes(w.getnframes()))
    assert tone_frames(stereo[0::2].tobytes())["440"] >= 50
    assert "recovering message left by a crash" in svc.log()
    assert not list(svc.live_dir.glob("*.conversation.*"))



def test_operator_hanging_up_during_consent_notice_sends_caller_back_to_queue(ivr_service, sniffer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The first operator answers and hangs up at once (during 'this call is recorded'): nothing was
    said, so the caller queues again and the next operator takes the call."""
    svc = start_service(ivr_service, sniffer.ports, tmp_path, wrap_up_seconds="60")
    hang_port, ok_port = free_udp_port(), free_udp_port()
    add_operator(svc, "ophang", hang_port)
    ok_id = add_operator(svc, "opnext", ok_port)
    svc.hotline("operators", "presence", "ophang", "available")
    time.sleep(0.05)
    svc.hotline("operators", "presence", "opnext", "available")
    hang = start_phone("op_answer", tmp_path, "hang", hang_port, pcap=operator_pcap(tmp_path, 1), hold_ms=300)
    nxt = start_phone("op_answer", tmp_path, "next", ok_port, pcap=operator_pcap(tmp_path, 10), hold_ms=15_000)
    caller = start_caller(svc, "vm_leave_message", tmp_path, "caller", pcap=caller_pcap(tmp_path), bye_wait_ms=90_000)
    results = [caller.wait(120), hang.wait(60), nxt.wait(60)]
    assert all(r.ok for r in results), "\n".join(r.describe() for r in results) + svc.describe(12000)
    assert "operator hung up during the consent notice" in svc.log()
    assert state_of(svc, "ophang") == "wrap_up"  # released after the aborted call, not left busy
    row = next(c for c in svc.calls() if c["direction"] == "in")
    assert (row["disposition"], row["operator_user_id"]) == ("operator", ok_id), row
    assert svc.log().count("caller queued") == 2
    with db(svc)() as s:
        recs = s.scalars(select(Recording).where(Recording.call_id == row["id"])).all()
    assert [r.kind for r in recs] == ["conversation"]  # one conversation: nothing recorded with the first operator


def test_conversation_transcribed_per_channel_and_shown_with_the_case(ivr_service, sniffer, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                       ko_model: Path) -> None:
    """Done when of issue 5: the stereo recording and its two transcripts are attached to the call.

    Both sides speak (real Korean read speech, other sentences on each side). During the call the
    operator opens a case from it (the screen pop's POST /api/v1/calls/{id}/case); the real worker
    then transcribes each channel with the real Vosk model, and the case as the API shows it has
    the conversation with a transcript per channel: left the caller's sentences, right the operator's."""
    svc = start_service(ivr_service, sniffer.ports, tmp_path, parts=("ivr", "api"), wrap_up_seconds="5")
    port = free_udp_port()
    add_operator(svc, "optalk", port)
    svc.hotline("operators", "presence", "optalk", "available")
    op_pcap = make_rtp_pcap(speech_wav(tmp_path / "op.wav", OPERATOR_CLIPS, 40), tmp_path / "op.pcap").path
    phone = start_phone("op_answer", tmp_path, "op", port, pcap=op_pcap, hold_ms=25_000)  # then the operator hangs up
    caller_wav = speech_wav(tmp_path / "caller.wav", CALLER_CLIPS, 60)
    caller = start_caller(svc, "vm_leave_message", tmp_path, "caller", bye_wait_ms=90_000,
                          pcap=make_rtp_pcap(caller_wav, tmp_path / "caller.pcap", digits=[(0.5, "1")]).path)
    wait_log(svc, "conversation started")
    call = next(c for c in svc.calls() if c["direction"] == "in")
    token = api_token(svc, "optalk")
    status, case = api(svc, "POST", f"/api/v1/calls/{call['id']}/case", {"content": "opened while talking"}, token)
    assert status == 201, case
    assert (case["source_call_id"], case["source_recording_id"]) == (call["id"], None)  # not stored yet
    results = [caller.wait(120), phone.wait(60)]
    assert all(r.ok for r in results), "\n".join(r.describe() for r in results) + svc.describe()
    row = svc.wait_call_ended(call["sip_call_id"])
    assert row["disposition"] == "operator" and row["recording_id"] is not None, row

    svc.hotline("worker", "--once", extra_env={"HOTLINE_TRANSCRIPTION__MODEL_PATH": str(ko_model)}, timeout=900)
    with db(svc)() as s:
        rec = s.get(Recording, row["recording_id"])
        assert rec is not None and (rec.kind, rec.channels, rec.call_id) == ("conversation", 2, row["id"])
        transcripts = s.scalars(select(Transcript).where(Transcript.recording_id == rec.id)
                                .order_by(Transcript.channel)).all()
        assert [t.channel for t in transcripts] == [0, 1], [(t.channel, t.text) for t in transcripts]
        left, right = transcripts
        assert left.words and right.words and left.text.strip() and right.text.strip()
        assert left.duration == right.duration == pytest.approx(rec.duration, abs=0.1)
    # Who said what: each channel's words come from its own side's sentences, not the other's.
    caller_side, operator_side = closer_to(left.text, CALLER_CLIPS, OPERATOR_CLIPS), closer_to(right.text, OPERATOR_CLIPS, CALLER_CLIPS)
    print(f"\nleft {caller_side} {left.text[:120]!r}\nright {operator_side} {right.text[:120]!r}")
    assert caller_side[0] > 2 * caller_side[1] and operator_side[0] > 2 * operator_side[1], (caller_side, operator_side)

    # The reviewer's view: the case opened from the call carries the recording and both transcripts.
    status, body = api(svc, "GET", f"/api/v1/cases/{case['number']}", token=token)
    assert status == 200, body
    detail = body["case"]
    assert [r["id"] for r in detail["recordings"]] == [rec.id] and detail["recordings"][0]["kind"] == "conversation"
    shown = {(t["recording_id"], t["channel"]): t for t in detail["transcripts"]}
    assert set(shown) == {(rec.id, 0), (rec.id, 1)}, detail["transcripts"]
    assert (shown[rec.id, 0]["text"], shown[rec.id, 1]["text"]) == (left.text, right.text)
    assert shown[rec.id, 0]["words"] and shown[rec.id, 1]["words"]


def test_ring_all_two_operators_answer_at_once_one_is_bridged_the_other_gets_a_bye(ivr_service, sniffer,  # type: ignore[no-untyped-def]
                                                                                 tmp_path: Path) -> None:
    """Both phones of a ring-all answer the instant they ring: one operator talks with the caller,
    the other is hung up by the service (BYE) and stays available. Neither is left up: a phone the
    service forgot would hang up by itself after its 60 s hold, and its scenario would get no BYE."""
    svc = start_service(ivr_service, sniffer.ports, tmp_path, strategy="ring_all", wrap_up_seconds="5")
    ports = {"opa": free_udp_port(), "opb": free_udp_port()}
    ids = {name: add_operator(svc, name, port) for name, port in ports.items()}
    for name in ports:
        svc.hotline("operators", "presence", name, "available")
    phones = {name: start_phone("op_answer", tmp_path, name, port, pcap=operator_pcap(tmp_path, 30), hold_ms=60_000)
              for name, port in ports.items()}
    caller = start_caller(svc, "vm_hangup_midway", tmp_path, "caller", pcap=caller_pcap(tmp_path), hangup_ms=25_000)
    caller_result = caller.wait(120)
    results = {name: p.wait(90) for name, p in phones.items()}
    assert caller_result.ok, caller_result.describe() + svc.describe()
    for name, r in results.items():
        assert r.ok, r.describe()
        assert r.received("INVITE") and r.received("BYE"), f"{name} was rung but never hung up by the service\n" + r.describe()

    row = next(c for c in svc.calls() if c["direction"] == "in")
    assert (row["disposition"], row["queue_exit"]) == ("operator", "operator"), row
    winner = next(name for name, i in ids.items() if i == row["operator_user_id"])
    loser = next(name for name in ids if name != winner)
    assert svc.log().count("conversation started") == 1
    # Bridged to one of them only: the winner's leg carried the caller's 440 Hz, the loser's did not.
    heard = {}
    for name, r in results.items():
        sdp = parse_sdp_audio(r.received("INVITE")[0].body)
        assert sdp is not None
        heard[name] = tone_frames(sniffer.audio_from(sdp.port))["440"]
    assert heard[winner] >= 100 and heard[loser] < 5, heard
    assert state_of(svc, loser) == "available"  # never claimed: released straight away
    assert state_of(svc, winner) in ("wrap_up", "available")
    with db(svc)() as s:
        recs = s.scalars(select(Recording).where(Recording.call_id == row["id"])).all()
    assert [r.kind for r in recs] == ["conversation"]


def test_hold_and_resume_from_either_side_during_the_bridge_keep_the_call(ivr_service, sniffer,  # type: ignore[no-untyped-def]
                                                                          tmp_path: Path) -> None:
    """A re-INVITE (a=sendonly, then a=sendrecv) from the operator and from the caller while bridged:
    the service answers each and keeps both legs up (either SIPp scenario fails on a BYE before its
    own hang-up point); the operator hangs up at the end, then the caller gets the service's BYE."""
    svc = start_service(ivr_service, sniffer.ports, tmp_path, wrap_up_seconds="5",
                        env={"HOTLINE_SIP__NO_MEDIA_SECONDS": "120"})  # the held caller sends nothing after its pcap
    port = free_udp_port()
    add_operator(svc, "ophold", port)
    svc.hotline("operators", "presence", "ophold", "available")
    # The operator holds 8 s after answering (the consent notice is over by then: the bridge is up),
    # resumes 3 s later and talks 25 s more; the caller holds and resumes meanwhile, 30 s after its answer.
    phone = start_phone("op_hold", tmp_path, "op", port, pcap=operator_pcap(tmp_path, 60), talk_ms=8_000,
                        held_ms=3_000, hold_ms=25_000)
    caller = start_caller(svc, "vm_hold_silent", tmp_path, "caller", pcap=caller_pcap(tmp_path, 45), quiet_ms=30_000,
                          hold_ms=3_000, bye_wait_ms=90_000)
    results = [caller.wait(150), phone.wait(120)]
    assert all(r.ok for r in results), "\n".join(r.describe() for r in results) + svc.describe(12000)
    caller_result, phone_result = results
    assert caller_result.received("BYE") and not phone_result.received("BYE")  # the operator ended it
    wait_log(svc, "conversation ended")  # logged once the recording is stored, after both BYEs
    log = svc.log()
    started, ended = log.index("conversation started"), log.index("conversation ended")
    assert log.count("sip.hold", started, ended) == 2 and log.count("sip.unhold", started, ended) == 2, log[started:ended]
    assert log.count("conversation started") == 1
    row = next(c for c in svc.calls() if c["direction"] == "in")
    assert row["disposition"] == "operator" and row["recording_id"] is not None, row
    with db(svc)() as s:
        rec = s.get(Recording, row["recording_id"])
        assert rec is not None
        path = svc.storage / rec.storage_key
    with wave.open(str(path), "rb") as w:
        stereo = array.array("h", w.readframes(w.getnframes()))
    # Both sides kept flowing into the recording across the holds (≥ 15 s of the operator's tone).
    assert tone_frames(stereo[1::2].tobytes())["1000"] >= 750
    assert tone_frames(stereo[0::2].tobytes())["440"] >= 100
