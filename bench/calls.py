#!/usr/bin/env python3
"""N concurrent voicemail calls against the real IVR, driven by SIPp (not a test).

For each N (``--calls 1,10,50,100``) the bench starts a fresh ``hotline serve --only ivr``
(temporary SQLite database and storage root, the prompts built once and shared, a free SIP
port, a private RTP port range) with the centre forced closed (``hotline hours set closed``,
so every call takes the same path), captures the RTP on the loopback interface with tcpdump
(kernel timestamps) and lets SIPp place N calls at once (``-m N -l N -r RATE``). Every caller
plays one RTP pcap:

    0.5 s: key 1 (interrupts the greeting, picks "report")
    silence until the prompts are over: the notice for a manual closure + voicemail guidance + tone + margin
            (from the prompt WAVs' durations)
    --seconds of speech (the clips of ../shared/speech repeated to that length)
    0.5 s silence, then '#', then 1 s silence

and waits for the IVR to read the message number back and hang up (SIPp scenario
tests/sipp/vm_leave_message.xml: a call without the IVR's BYE fails).

Printed per N:

* answered: SIPp's successful calls / N, and Call rows that were answered;
* intact: calls whose message passes all of
    (a) the Call row says voicemail, stopped by '#', with a recording;
    (b) the stored WAV's duration equals the Recording row's and the Call row's
        ``message_seconds`` within one frame (0.02 s): what the service says it kept is on disk;
    (c) wall time: |recorded duration - (T# - Ttone)| <= 0.1 s, where Ttone is the end of our
        outgoing tone (last non-silent packet before the long silent stretch of the recording,
        + 20 ms) and T# is the arrival of the caller's first '#' telephone-event packet, both
        kernel timestamps from the capture: the message holds exactly the time the caller was
        being recorded, no more, no less;
    (d) content: every 20 ms frame of the speech the caller sent is in the WAV bit-exact and in
        order (the source after a G.711 round trip, each frame looked up by its bytes), and no
        frame was inserted between them: nothing lost, nothing filled in;
* our outgoing RTP spacing: per stream (our port, consecutive sequence numbers), the interval
  between capture timestamps; p50 / p99 / max of |interval - 20 ms| over all streams and the
  count of intervals over 30 ms; the ratio of p99 against N = 1;
* CPU of the serve process (utime+stime from /proc over the SIPp run, % of one core, and the
  worst 1 s sample), its peak thread count and RSS;
* for context: the same p99 of the callers' (SIPp's) packets towards us, and tcpdump drops.

The machine is small (2 cores) and may be shared: figures are noisy, run it twice before
believing a small difference. Needs root (tcpdump, SIPp's raw socket for pcap play), sipp
(Debian sip-tester) and tcpdump.

    .venv/bin/python bench/calls.py                          # N = 1, 10, 50, 100; 30 s of speech
    .venv/bin/python bench/calls.py --calls 1,50 --seconds 10 --keep
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from ivr.flows import CLOSED_PROMPT  # noqa: E402
from ivr.media.dtmf import EVENT_CHARS  # noqa: E402
from ivr.media.g711 import ULAW_SILENCE, ulaw_decode, ulaw_encode  # noqa: E402
from sipp_support import (  # noqa: E402
    SippResult,
    make_rtp_pcap,
    parse_sdp_audio,
    pcap_play_skip_reason,
    start_sipp,
)

HOTLINE = str(Path(sys.executable).parent / "hotline")
SPEECH_DIR = ROOT.parent / "shared" / "speech"
SPEECH_CLIPS = ["tts_cmn_complaint_8k.wav", "synth-zh-vm01_8k.wav", "synth-zh-vm03_8k.wav", "synth-zh-vm05_8k.wav"]
"""Speech without long pauses (the silence timeout is 10 s; synth-zh-pause12s is left out)."""
LISTENING = re.compile(r"ivr listening\b.*?\bport=(\d+)")
FRAME = 0.020
FRAME_BYTES = 320  # 20 ms of 16-bit 8 kHz PCM
PRESS_SECONDS = 0.14  # a key press in the pcap: 2 update + 3 end packets (sipp_support.make_rtp_pcap)
TONE_SECONDS = 0.4  # ivr.media.tones.beep()
HASH_EVENT = EVENT_CHARS.index("#")
DTMF_PT = 101
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

PYVOIP_REF = {"calls": 50, "p99": 27.6, "max": 104.0, "gaps30": 276, "cpu": 37.0}
"""Plain pyVoIP 1.6.8 at 50 concurrent inbound calls, measured here (../shared/PYVOIP.md item 8)."""


# ------------------------------------------------------------------------------------ inputs


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def ensure_prompts(prompts: Path) -> None:
    if (prompts / "zh" / "voicemail.wav").exists() and (prompts / "zh" / "closed.wav").exists():
        return
    print(f"building prompts into {prompts} (espeak-ng, ~10 s) ...", flush=True)
    r = subprocess.run([HOTLINE, "prompts", "build"], env={**clean_env(), "HOTLINE_PROMPTS__DIR": str(prompts)},
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"hotline prompts build exited {r.returncode}:\n{r.stdout}\n{r.stderr}")


def speech_pcm(seconds: float) -> bytes:
    """The speech clips, one after the other and again, cut to exactly `seconds` (whole frames)."""
    want = round(seconds / FRAME) * FRAME_BYTES
    out = bytearray()
    while len(out) < want:
        for name in SPEECH_CLIPS:
            with wave.open(str(SPEECH_DIR / name), "rb") as w:
                assert w.getframerate() == 8000 and w.getsampwidth() == 2 and w.getnchannels() == 1, name
                out += w.readframes(w.getnframes())
    return bytes(out[:want])


@dataclass
class CallerAudio:
    pcap: Path
    lead: float
    """Seconds from the start of the caller's RTP to the first speech sample."""
    speech: bytes
    """The speech as the IVR should record it (after the G.711 round trip), 16-bit PCM."""
    speech_seconds: float
    hash_at: float
    length: float


def build_caller(work: Path, prompts: Path, seconds: float, margin: float) -> CallerAudio:
    """The caller's pcap; the silence before the speech is computed from the prompt durations."""
    zh = prompts / "zh"
    # The centre is forced closed (`hours set closed`): the flow says the manual-closure notice.
    notice = CLOSED_PROMPT.get("manual_closed", "closed")
    before_tone = wav_seconds(zh / f"{notice}.wav") + wav_seconds(zh / "voicemail.wav")
    lead = round((0.5 + PRESS_SECONDS + before_tone + TONE_SECONDS + margin) / FRAME) * FRAME
    speech = speech_pcm(seconds)
    gap = 0.5
    pcm = bytes(round(lead / FRAME) * FRAME_BYTES) + speech + bytes(round(gap / FRAME) * FRAME_BYTES)
    wav = work / "caller.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm)
    hash_at = lead + seconds + gap
    info = make_rtp_pcap(wav, work / "caller.pcap", payload_type=0, digits=[(0.5, "1"), (hash_at, "#")],
                         trailing_silence=1.0)  # fmt: skip
    return CallerAudio(info.path, lead, ulaw_decode(ulaw_encode(speech)), seconds, hash_at, info.duration)


# ------------------------------------------------------------------------------------ ports


def bound_udp_ports() -> set[int]:
    ports = set()
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            for line in Path(name).read_text().splitlines()[1:]:
                ports.add(int(line.split()[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def free_rtp_range(size: int, start: int = 24000, stop: int = 32000) -> tuple[int, int]:
    """An even-aligned range of `size` ports with nothing bound, below the kernel's ephemeral
    range (SIPp's own ports come from there) and away from the default 20000-20999."""
    busy = bound_udp_ports()
    base = start
    while base + size <= stop:
        if not any(p in busy for p in range(base, base + size)):
            return base, base + size - 1
        base += size
    raise SystemExit(f"no {size} free UDP ports between {start} and {stop}")


# ------------------------------------------------------------------------------------ service


class Service:
    def __init__(self, work: Path, prompts: Path, rtp: tuple[int, int], max_seconds: int) -> None:
        from config.db import upgrade

        self.work = work
        self.storage = work / "storage"
        self.db_path = work / "hotline.db"
        self.env = {
            **clean_env(),
            "HOTLINE_DATABASE__URL": f"sqlite:///{self.db_path}",
            "HOTLINE_STORAGE__ROOT": str(self.storage),
            "HOTLINE_TRANSCRIPTION__MODELS_DIR": str(work / "models"),
            "HOTLINE_PROMPTS__DIR": str(prompts),
            "HOTLINE_SIP__BIND_HOST": "127.0.0.1",
            "HOTLINE_SIP__PUBLIC_HOST": "127.0.0.1",
            "HOTLINE_SIP__BIND_PORT": "0",
            "HOTLINE_SIP__RTP_PORT_MIN": str(rtp[0]),
            "HOTLINE_SIP__RTP_PORT_MAX": str(rtp[1]),
            "HOTLINE_VOICEMAIL__MAX_SECONDS": str(max_seconds),
        }
        upgrade(self.env["HOTLINE_DATABASE__URL"])
        self.log_path = work / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def cli(self, *args: str) -> str:
        r = subprocess.run([HOTLINE, *args], env=self.env, capture_output=True, text=True, timeout=300, cwd=self.work)
        if r.returncode != 0:
            raise RuntimeError(f"hotline {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r.stdout

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([HOTLINE, "serve", "--only", "ivr"], env=self.env, cwd=self.work,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = LISTENING.search(self.log())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"hotline serve exited {self.proc.returncode} at start:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"hotline serve did not log 'ivr listening' in 60 s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def rows(self) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]]]:
        calls = json.loads(self.cli("calls", "list", "--json", "--limit", "100000"))
        con = sqlite3.connect(self.db_path)
        try:
            recs = {r[0]: {"storage_key": r[1], "duration": r[2]}
                    for r in con.execute("select id, storage_key, duration from recording")}  # fmt: skip
        finally:
            con.close()
        return calls, recs


# ------------------------------------------------------------------------------------ /proc


@dataclass
class ProcSample:
    t: float
    cpu: float  # seconds of utime+stime
    threads: int
    rss: int  # bytes


def proc_sample(pid: int) -> ProcSample | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)
    rss = int(fields[21]) * PAGE
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return ProcSample(time.monotonic(), cpu, threads, rss)


class Sampler(threading.Thread):
    def __init__(self, pid: int, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.every = every
        self.samples: list[ProcSample] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while True:
            s = proc_sample(self.pid)
            if s is not None:
                self.samples.append(s)
            if self._halt.wait(self.every):
                s = proc_sample(self.pid)
                if s is not None:
                    self.samples.append(s)
                return

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def summary(self) -> dict[str, float]:
        s = self.samples
        if len(s) < 2:
            return {"cpu": float("nan"), "cpu_peak": float("nan"), "threads": 0, "rss_mib": 0.0}
        mean = (s[-1].cpu - s[0].cpu) / (s[-1].t - s[0].t) * 100
        peak = max((b.cpu - a.cpu) / (b.t - a.t) * 100 for a, b in zip(s, s[1:], strict=False) if b.t > a.t)
        return {"cpu": mean, "cpu_peak": peak, "threads": max(x.threads for x in s),
                "rss_mib": max(x.rss for x in s) / 2**20}  # fmt: skip


# ------------------------------------------------------------------------------------ capture


class Capture:
    def __init__(self, path: Path, rtp: tuple[int, int]) -> None:
        self.path = path
        self.err_path = path.with_suffix(".tcpdump.txt")
        self.filter = f"udp and portrange {rtp[0]}-{rtp[1]}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("tcpdump")
        if exe is None:
            raise SystemExit("tcpdump is not installed (apt-get install -y tcpdump)")
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [exe, "-i", "lo", "-n", "-s", "256", "-B", "65536", "--time-stamp-precision=nano", "-w",
                 str(self.path), self.filter],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if "listening on" in self.err_path.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"tcpdump exited {self.proc.returncode}: {self.err_path.read_text()}")
            time.sleep(0.05)
        raise SystemExit(f"tcpdump did not start: {self.err_path.read_text()}")

    def stop(self) -> dict[str, int]:
        """SIGINT (tcpdump flushes and prints its counters); its counters."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        text = self.err_path.read_text(errors="replace")
        out = {}
        for key, pat in (("captured", r"(\d+) packets captured"), ("dropped", r"(\d+) packets dropped by kernel"),
                         ("if_dropped", r"(\d+) packets dropped by interface")):  # fmt: skip
            m = re.search(pat, text)
            out[key] = int(m.group(1)) if m else -1
        return out


@dataclass
class Stream:
    """One direction of one call's RTP as captured: (time, seq, silent payload) per packet."""

    packets: list[tuple[float, int, bool]] = field(default_factory=list)
    hash_at: float | None = None


def read_capture(path: Path, rtp: tuple[int, int]) -> tuple[dict[int, Stream], dict[int, Stream]]:
    """(outgoing by our port, incoming by our port) from the tcpdump file (Ethernet on lo)."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    magic = struct.unpack_from(endian + "I", data)[0]
    frac = 1e-9 if magic == 0xA1B23C4D else 1e-6
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    l2 = {1: 14, 113: 16}[linktype]
    rec = struct.Struct(endian + "IIII")
    out: dict[int, Stream] = {}
    inc: dict[int, Stream] = {}
    lo, hi = rtp
    off = 24
    n = len(data)
    silence = bytes([ULAW_SILENCE]) * 160
    while off + 16 <= n:
        sec, sub, incl, _ = rec.unpack_from(data, off)
        off += 16
        frame = data[off : off + incl]
        off += incl
        ip = frame[l2:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport = struct.unpack_from("!HH", ip, ihl)
        rtp_bytes = ip[ihl + 8 :]
        if len(rtp_bytes) < 12 or rtp_bytes[0] >> 6 != 2:
            continue
        t = sec + sub * frac
        pt = rtp_bytes[1] & 0x7F
        seq = (rtp_bytes[2] << 8) | rtp_bytes[3]
        payload = rtp_bytes[12:]
        if lo <= sport <= hi:  # ours, outgoing
            out.setdefault(sport, Stream()).packets.append((t, seq, payload == silence))
        elif lo <= dport <= hi:  # the caller's, towards us
            s = inc.setdefault(dport, Stream())
            if pt == DTMF_PT:
                if payload and payload[0] == HASH_EVENT and s.hash_at is None:
                    s.hash_at = t
            else:
                s.packets.append((t, seq, False))
    return out, inc


def phases(streams: dict[int, Stream]) -> tuple[float, float]:
    """(end of call set-up, start of tear-down), capture times: 1 s after the last stream began,
    1 s before the first stream ended. Between them every call is up (prompts, recording)."""
    firsts = [s.packets[0][0] for s in streams.values() if s.packets]
    lasts = [s.packets[-1][0] for s in streams.values() if s.packets]
    if not firsts:
        return math.inf, -math.inf
    return max(firsts) + 1.0, min(lasts) - 1.0


def deviations(streams: dict[int, Stream], window: tuple[float, float] | None = None,
               gap_phases: dict[str, int] | None = None) -> tuple[list[float], int]:  # fmt: skip
    """|interval - 20 ms| (ms) between consecutive sequence numbers of every stream; intervals > 30 ms.

    With `window`, only intervals that start inside it. With `gap_phases`, the intervals over 30 ms
    are also counted by phase (set-up / steady / tear-down, see `phases`)."""
    devs: list[float] = []
    over = 0
    setup_end, teardown = phases(streams) if gap_phases is not None else (0.0, 0.0)
    for s in streams.values():
        seen: dict[int, float] = {}
        prev: tuple[float, int] | None = None
        for t, seq, _ in s.packets:
            if seq in seen:
                continue  # a duplicate in the capture
            seen[seq] = t
            if prev is not None and (seq - prev[1]) & 0xFFFF == 1 and (
                    window is None or window[0] <= prev[0] <= window[1]):  # fmt: skip
                iv = (t - prev[0]) * 1000
                devs.append(abs(iv - 20.0))
                if iv > 30.0:
                    over += 1
                    if gap_phases is not None:
                        ph = "setup" if prev[0] < setup_end else "teardown" if prev[0] > teardown else "steady"
                        gap_phases[ph] = gap_phases.get(ph, 0) + 1
            prev = (t, seq)
    return devs, over


def pct(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, math.ceil(q / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def tone_end(s: Stream) -> float | None:
    """End of the tone: the last non-silent packet before the longest run of silent ones (the
    recording window, when we send only silence), + 20 ms."""
    best_len, best_start = 0, None
    run_start = None
    for i, (_, _, silent) in enumerate(s.packets):
        if silent:
            if run_start is None:
                run_start = i
            if i - run_start + 1 > best_len:
                best_len, best_start = i - run_start + 1, run_start
        else:
            run_start = None
    if best_start is None or best_start == 0:
        return None
    return s.packets[best_start - 1][0] + FRAME


# ------------------------------------------------------------------------------------ checks


def speech_check(wav_path: Path, speech: bytes) -> tuple[int, int, int, float | None]:
    """(speech frames missing, frames inserted inside the speech, speech frames, seconds into the
    WAV where the speech starts).

    The WAV is written in whole 20 ms frames, so each frame the caller sent is looked up by its
    bytes at frame positions; a frame counts as present only after the previous present one
    (order kept). Inserted = recording frames between the first and the last present speech
    frame beyond the speech's own length (silence the service filled in, e.g. after a stall)."""
    with wave.open(str(wav_path), "rb") as w:
        pcm = w.readframes(w.getnframes())
    frames = len(speech) // FRAME_BYTES
    where: dict[bytes, list[int]] = {}
    for k in range(len(pcm) // FRAME_BYTES):
        where.setdefault(pcm[k * FRAME_BYTES : (k + 1) * FRAME_BYTES], []).append(k)
    found: list[tuple[int, int]] = []  # (speech index, recording frame)
    last = -1
    for i in range(frames):
        positions = where.get(speech[i * FRAME_BYTES : (i + 1) * FRAME_BYTES], [])
        # the first occurrence after the previous match, but not absurdly far ahead (all-zero frames)
        pos = next((p for p in positions if p > last), None)
        if pos is not None and (last < 0 or pos - last <= 50 + (i - found[-1][0] if found else 0)):
            found.append((i, pos))
            last = pos
    if not found:
        return frames, 0, frames, None
    missing = frames - len(found)
    (i0, p0), (i1, p1) = found[0], found[-1]
    inserted = max(0, (p1 - p0) - (i1 - i0))
    return missing, inserted, frames, (p0 - i0) * FRAME_BYTES / 2 / 8000


@dataclass
class CallCheck:
    call_id: str
    port: int | None
    row: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)
    expected: float | None = None
    recorded: float | None = None
    speech_missing: int | None = None
    speech_inserted: int | None = None

    @property
    def intact(self) -> bool:
        return not self.problems


def check_calls(sipp: SippResult, svc: Service, out: dict[int, Stream], inc: dict[int, Stream],
                caller: CallerAudio) -> tuple[list[CallCheck], list[dict[str, Any]]]:  # fmt: skip
    ports: dict[str, int | None] = {}
    for m in sipp.messages():
        if m.direction == "received" and m.is_response and m.cseq_method == "INVITE" and (m.status or 0) // 100 == 2:
            cid = m.header("Call-ID") or m.header("i")
            media = parse_sdp_audio(m.body) if m.body.strip() else None
            if cid and cid not in ports:
                ports[cid] = media.port if media else None
    for m in sipp.messages():  # calls that never got a 2xx
        if m.direction == "sent" and m.method == "INVITE":
            cid = m.header("Call-ID") or m.header("i")
            if cid:
                ports.setdefault(cid, None)
    calls, recs = svc.rows()
    by_cid = {c["sip_call_id"]: c for c in calls}
    checks = []
    for cid, port in sorted(ports.items()):
        row = by_cid.get(cid)
        c = CallCheck(cid, port, row)
        checks.append(c)
        if port is None:
            c.problems.append("not answered (no 200 OK with SDP)")
        if row is None:
            c.problems.append("no Call row")
            continue
        if row["disposition"] != "voicemail" or row["record_stop"] != "digit" or row["recording_id"] is None:
            c.problems.append(f"row: disposition={row['disposition']} record_stop={row['record_stop']} "
                              f"end_reason={row['end_reason']} recording={row['recording_id']}")  # fmt: skip
        rec = recs.get(row["recording_id"]) if row["recording_id"] is not None else None
        if rec is None:
            if row["recording_id"] is not None:
                c.problems.append(f"recording {row['recording_id']} has no row")
            continue
        wav_path = svc.storage / rec["storage_key"]
        if not wav_path.exists():
            c.problems.append(f"recording file missing: {wav_path}")
            continue
        file_seconds = wav_seconds(wav_path)
        c.recorded = file_seconds
        ms = row["message_seconds"]
        if abs(file_seconds - rec["duration"]) > 0.02 or ms is None or abs(file_seconds - ms) > 0.02:
            c.problems.append(f"durations disagree: file {file_seconds:.3f} s, recording row {rec['duration']:.3f} s, "
                              f"message_seconds {ms}")  # fmt: skip
        if port is not None and port in out and port in inc:
            t0, t1 = tone_end(out[port]), inc[port].hash_at
            if t0 is not None and t1 is not None:
                c.expected = t1 - t0
                if abs(file_seconds - c.expected) > 0.1:
                    c.problems.append(f"recorded {file_seconds:.3f} s but the caller was recorded for "
                                      f"{c.expected:.3f} s (tone end to '#')")  # fmt: skip
            else:
                c.problems.append(f"capture: tone end {t0}, '#' at {t1}")
        else:
            c.problems.append(f"no RTP captured on port {port}")
        missing, inserted, frames, start = speech_check(wav_path, caller.speech)
        c.speech_missing, c.speech_inserted = missing, inserted
        if missing or inserted:
            c.problems.append(f"speech: {missing} of {frames} frames missing, {inserted} frames inserted "
                              f"(speech starts at {'-' if start is None else f'{start:.2f} s'} in the WAV)")  # fmt: skip
    return checks, calls


# ------------------------------------------------------------------------------------ one N


@dataclass
class Result:
    n: int
    sipp_ok: int | None = None
    sipp_failed: int | None = None
    rows_answered: int = 0
    rows: int = 0
    intact: int = 0
    p50: float = float("nan")
    p99: float = float("nan")
    max: float = float("nan")
    gaps30: int = 0
    intervals: int = 0
    streams: int = 0
    in_p99: float = float("nan")
    steady_p99: float = float("nan")
    """p99 between call set-up and tear-down (all calls up), see `phases`."""
    gap_phases: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    capture: dict[str, int] = field(default_factory=dict)
    wall_err_max: float = float("nan")
    wall_err_mean: float = float("nan")
    speech_missing: int = 0
    speech_inserted: int = 0
    problems: list[str] = field(default_factory=list)
    log_notes: list[str] = field(default_factory=list)
    exit_code: int | None = None


def run_one(n: int, args: argparse.Namespace, work: Path, prompts: Path, caller: CallerAudio) -> Result:
    res = Result(n)
    wd = work / f"n{n}"
    wd.mkdir(parents=True, exist_ok=True)
    rtp = free_rtp_range(max(64, 4 * n))
    svc = Service(wd, prompts, rtp, max_seconds=int(caller.length + 60))
    svc.cli("hours", "set", "closed", "--note", "bench/calls.py")
    cap = Capture(wd / "rtp.pcap", rtp)
    sampler: Sampler | None = None
    bye_wait_ms = int((caller.length + 60) * 1000)
    try:
        svc.start()
        cap.start()
        assert svc.proc is not None
        sampler = Sampler(svc.proc.pid)
        sampler.start()
        t0 = time.monotonic()
        sp = start_sipp("vm_leave_message", "127.0.0.1", svc.port, calls=n, limit=n, rate=args.rate,
                        pcap=caller.pcap, keys={"bye_wait_ms": bye_wait_ms}, workdir=wd / "sipp")  # fmt: skip
        sipp = sp.wait()
        elapsed = time.monotonic() - t0
        sampler.stop()
        res.cpu = sampler.summary()
        res.cpu["window_s"] = elapsed
        res.sipp_ok, res.sipp_failed = sipp.successful, sipp.failed
        if sipp.returncode != 0 or (sipp.failed or 0) > 0:
            res.problems.append("sipp: " + sipp.describe().splitlines()[0])
            if sipp.errors.strip():
                res.problems.append("sipp errors (tail): " + sipp.errors.strip()[-800:])
        # The Call rows are completed right after the BYE; give the last ones a moment.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            calls, _ = svc.rows()
            if len(calls) >= n and all(c["end_reason"] is not None for c in calls):
                break
            time.sleep(0.5)
        time.sleep(0.5)
        res.capture = cap.stop()
        out, inc = read_capture(cap.path, rtp)
        devs, res.gaps30 = deviations(out, gap_phases=res.gap_phases)
        devs.sort()
        steady, _ = deviations(out, window=phases(out))
        steady.sort()
        res.steady_p99 = pct(steady, 99)
        res.intervals, res.streams = len(devs), len(out)
        res.p50, res.p99, res.max = pct(devs, 50), pct(devs, 99), (devs[-1] if devs else float("nan"))
        in_devs, _ = deviations(inc)
        in_devs.sort()
        res.in_p99 = pct(in_devs, 99)
        checks, calls = check_calls(sipp, svc, out, inc, caller)
        res.rows = len(calls)
        res.rows_answered = sum(1 for c in calls if c["disposition"] not in (None, "abandoned"))
        res.intact = sum(1 for c in checks if c.intact)
        errs = [c.recorded - c.expected for c in checks if c.recorded is not None and c.expected is not None]
        res.wall_err_max = max(abs(e) for e in errs) if errs else float("nan")
        res.wall_err_mean = sum(errs) / len(errs) if errs else float("nan")
        res.speech_missing = sum(c.speech_missing or 0 for c in checks)
        res.speech_inserted = sum(c.speech_inserted or 0 for c in checks)
        for c in checks:
            if not c.intact:
                rid = c.row["id"] if c.row else "-"
                res.problems.append(f"call {c.call_id} (row {rid}, port {c.port}): " + "; ".join(c.problems))
        (wd / "checks.json").write_text(json.dumps(
            [{"call_id": c.call_id, "port": c.port, "row": c.row, "expected": c.expected, "recorded": c.recorded,
              "speech_missing": c.speech_missing, "speech_inserted": c.speech_inserted, "problems": c.problems} for c in checks], indent=1))  # fmt: skip
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        if cap.proc is not None and cap.proc.poll() is None:
            cap.stop()
        res.exit_code = svc.stop()
        log = svc.log()
        res.log_notes = [ln for ln in log.splitlines() if re.search(r"\b(warning|error|critical|exception|stalled|"
                                                                    r"Traceback)\b", ln, re.IGNORECASE)]  # fmt: skip
        if not args.keep:
            for p in (cap.path,):
                p.unlink(missing_ok=True)
    return res


# ------------------------------------------------------------------------------------ report


def fmt(v: float, spec: str = ".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def print_table(results: list[Result], seconds: float) -> None:
    base = next((r.p99 for r in results if r.n == 1), float("nan"))
    head = (f"{'calls':>5} {'answered':>9} {'rows':>5} {'intact':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
            f"{'>30ms':>6} {'CPU %':>6} {'peak %':>6} {'thr':>4} {'RSS MiB':>7} {'p99/N1':>7} {'wall err':>8} "
            f"{'caller p99':>10} {'steady p99':>10}")  # fmt: skip
    print()
    print(f"Outgoing RTP spacing: |interval - 20 ms| over all our streams; {seconds:g} s of speech per call")
    print(head)
    print("-" * len(head))
    for r in results:
        ratio = r.p99 / base if base and not math.isnan(base) and base > 0 else float("nan")
        print(f"{r.n:>5} {f'{r.sipp_ok}/{r.n}':>9} {r.rows_answered:>5} {f'{r.intact}/{r.n}':>7} {fmt(r.p50):>7} "
              f"{fmt(r.p99):>7} {fmt(r.max, '.1f'):>7} {r.gaps30:>6} {fmt(r.cpu.get('cpu', float('nan')), '.1f'):>6} "
              f"{fmt(r.cpu.get('cpu_peak', float('nan')), '.0f'):>6} {int(r.cpu.get('threads', 0)):>4} "
              f"{fmt(r.cpu.get('rss_mib', float('nan')), '.0f'):>7} {fmt(ratio, '.2f'):>7} "
              f"{fmt(r.wall_err_max, '.3f'):>8} {fmt(r.in_p99):>10} {fmt(r.steady_p99):>10}")  # fmt: skip
    ref = PYVOIP_REF
    print(f"{ref['calls']:>5} {'pyVoIP 1.6.8 baseline (PYVOIP.md):':>33} p99 {ref['p99']} ms, max {ref['max']:.0f} ms, "
          f"{ref['gaps30']} intervals > 30 ms, CPU {ref['cpu']:.0f} %")  # fmt: skip
    print()
    print("answered = SIPp successful calls / N; rows = Call rows answered; intact = (a)-(d) of the module doc;")
    print("CPU % = serve process utime+stime over the SIPp run, % of one core (peak: worst 1 s); thr = peak threads;")
    print("wall err = worst |recorded duration - (tone end -> '#')| in s; caller p99 = SIPp's own packet spacing")
    print("towards us (|interval - 20 ms|, ms), for context: a late caller is not our jitter; steady p99 = ours")
    print("from 1 s after the last call started to 1 s before the first one ended (no set-up or tear-down).")
    r50 = next((r for r in results if r.n == 50), None)
    if r50 is not None:
        ok = r50.intact == 50 and r50.p99 <= 5.0
        print(f"First bar (50 calls all intact, p99 <= 5 ms): {'MET' if ok else 'NOT MET'} "
              f"(intact {r50.intact}/50, p99 {fmt(r50.p99)} ms)")  # fmt: skip
    r200 = next((r for r in results if r.n == 200), None)
    if r200 is not None:
        ok = r200.intact == 200 and r200.p99 <= 2.0
        print(f"Goal (200 calls, p99 <= 2 ms): {'MET' if ok else 'NOT MET'} (intact {r200.intact}/200, "
              f"p99 {fmt(r200.p99)} ms)")  # fmt: skip
    for r in results:
        extra = []
        if r.capture.get("dropped", 0) > 0:
            extra.append(f"tcpdump dropped {r.capture['dropped']} packets: spacing figures incomplete")
        if r.exit_code not in (0, None):
            extra.append(f"serve exited {r.exit_code} on SIGTERM")
        if r.gaps30:
            extra.append("intervals > 30 ms by phase: " + ", ".join(f"{k} {v}" for k, v in sorted(r.gap_phases.items())))
        extra.append(f"{r.streams} outgoing streams, {r.intervals} intervals, speech frames missing "
                     f"{r.speech_missing}, inserted {r.speech_inserted}, recorded - (tone end -> '#') mean {fmt(r.wall_err_mean, '+.3f')} s, "
                     f"tcpdump captured {r.capture.get('captured')} dropped {r.capture.get('dropped')}")
        if r.problems or r.log_notes or extra:
            print(f"\nN = {r.n}: " + "; ".join(extra))
            for p in r.problems[:20]:
                print("  problem: " + p)
            if len(r.problems) > 20:
                print(f"  ... {len(r.problems) - 20} more problems")
            for ln in r.log_notes[:10]:
                print("  log: " + ln[:300])
            if len(r.log_notes) > 10:
                print(f"  ... {len(r.log_notes) - 10} more warning/error log lines")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Needs root, sipp (Debian sip-tester) and tcpdump; see the module doc.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--calls", default="1,10,50,100", help="comma-separated N values (default 1,10,50,100)")
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds of speech each caller leaves (default 30)")
    ap.add_argument("--rate", type=float, default=200.0, help="SIPp call rate, calls/s (default 200: all at once)")
    ap.add_argument("--margin", type=float, default=2.0,
                    help="seconds of silence after the prompts and tone before the speech (default 2)")
    ap.add_argument("--prompts", type=Path, default=Path(tempfile.gettempdir()) / "hotline-bench-prompts",
                    help="prompt directory, built there if missing (default: $TMPDIR/hotline-bench-prompts)")
    ap.add_argument("--workdir", type=Path, help="where to work (default: a new temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (captures, logs, databases, recordings)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    ns = [int(x) for x in args.calls.split(",") if x.strip()]
    if any(n < 1 for n in ns):
        ap.error("--calls: every N must be at least 1")
    why = pcap_play_skip_reason()
    if why:
        raise SystemExit(why)
    if os.geteuid() != 0:
        raise SystemExit("run as root: tcpdump on lo")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-calls-"))
    work.mkdir(parents=True, exist_ok=True)
    ensure_prompts(args.prompts)
    caller = build_caller(work, args.prompts, args.seconds, args.margin)
    print(f"work dir {work}; caller pcap {caller.length:.2f} s: key 1 at 0.5 s, speech {caller.lead:.2f}-"
          f"{caller.lead + caller.speech_seconds:.2f} s, '#' at {caller.hash_at:.2f} s; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (shared machine: figures are noisy)",
          flush=True)  # fmt: skip
    results = []
    try:
        for n in ns:
            t = time.monotonic()
            print(f"N = {n}: running ...", flush=True)
            r = run_one(n, args, work, args.prompts, caller)
            results.append(r)
            print(f"N = {n}: done in {time.monotonic() - t:.0f} s: sipp {r.sipp_ok} ok / {r.sipp_failed} failed, "
                  f"intact {r.intact}/{n}, p99 {fmt(r.p99)} ms, CPU {fmt(r.cpu.get('cpu', float('nan')), '.1f')} %",
                  flush=True)  # fmt: skip
    finally:
        print_table(results, args.seconds)
        if args.json:
            args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1, default=str))
        if args.keep:
            print(f"\nwork dir kept: {work}")
        elif args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if results and all(r.intact == r.n for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
