#!/usr/bin/env python3
"""Added relay delay and loss of the media bridge with M bridged pairs at once (not a test).

Two modes; both print, per M (1, 10, 25, 50; 100 with --full): pairs bridged, the added
delay per relayed packet (p50 / p99 / max), packet loss, and p99 against M = 1.
First bar (issue 5): 25 pairs with p99 added delay <= 5 ms and no loss; goal: 100 pairs at <= 1 ms.

SIPp mode (default): the real service, real calls
-------------------------------------------------
For each M a fresh ``hotline serve --only ivr`` (tests/ivr_harness.py: temporary SQLite and
storage, prompts built once, rehearsal clock inside office hours, a private RTP port range)
with M operators (users ``operator<i>`` at ``sip:<1000+i>@127.0.0.1:P``, all available, a long
wrap-up so none has a second conversation). One SIPp process places M calls (tests/sipp/
vm_leave_message.xml, ``--rate`` calls/s): key 1 (report) half a second in, so each caller
queues; one SIPp UAS on port P (tests/sipp/op_answer.xml) answers every operator's INVITE.
After the consent notice the IVR bridges the two legs and records the conversation in stereo,
as in production. Both sides play white noise (pcap play), so both directions are loaded and
measured; by default the caller offers only PCMA and the operator answers PCMU, so every
packet is transcoded (the worst case, as in --direct); ``--same-codec`` makes both PCMU.
The operators hang up after a hold long enough that all M pairs are bridged together for
``--seconds``; the IVR then hangs up the callers.

How the delay is measured: tcpdump on lo captures the service's RTP port range with kernel
timestamps (one clock for both ends). For each pair, a packet is seen twice: arriving at the
IVR's caller leg (from SIPp) and leaving its operator leg (the relayed copy), and likewise the
other way. Packets are matched by payload: each 20 ms noise frame of a pcap is unique, and a
transcoded frame is matched through its μ-law/A-law image. Delay = leave - arrive: everything
the relay adds inside the service (socket queue, event loop, transcoding, send), and none of
SIPp's own pacing, which the other options (a timestamping probe inside the relay, or a sink
timed against the pcap's send schedule) would either miss (time queued in the socket before
the relay reads it) or include (SIPp's jitter). Legs are paired from the signalling, not
guessed from audio: the caller's Call-ID -> the IVR's port in its 200 OK; the Call row -> the
operator leg's row (the service's "operator rung" log line) -> the IVR's port in the INVITE the
operator UAS got with that Call-ID. Counted: the longest stretch with the most pairs bridged at
once (all M when every call got through; each pair's own ends trimmed by 0.5 s); loss = frames
that arrived at one leg in that window and never left the other.
Everything shares the two cores (service, 2 SIPp, tcpdump, and whatever else runs): the
figures are for this machine as loaded, so each line also gives the service's CPU, the share
of the run its event loop waited for a core (/proc schedstat) and the load average.
Needs root (tcpdump, SIPp's raw socket for pcap play), sipp (Debian sip-tester), tcpdump.

--direct: the relay alone, in process
-------------------------------------
M caller/operator pairs: in this process, 2 M MediaSessions on one Ticker joined by M
Bridges (caller leg PCMU, operator leg PCMA, so every packet is transcoded: the worst case),
each recording a stereo WAV (unless --no-record). In a second process, pinned to the other
core, 2 M raw UDP "phones" send a tone as paced RTP (20 ms, absolute deadlines, each phone at
a random phase, as independent calls are) and receive what the bridge relays.

Delay per packet = kernel receive timestamp (SO_TIMESTAMPNS) at the far phone minus the
clock reading just before the near phone's sendto; each relayed packet is matched to the one
sent by the frame index it carries in its first 8 payload bytes (code words chosen so that the
μ-law/A-law transcoding keeps them apart: `index_symbols`). This is the relay's added delay plus two loopback hops; the
`direct` line measures those hops alone (phone to phone, no bridge). Loss = packets sent in
the measured window that never came out of the other side. No SIP: media only.

    .venv/bin/python bench/bridge.py                   # SIPp: M = 1, 10, 25, 50; 10 s all bridged
    .venv/bin/python bench/bridge.py --full            # and M = 100
    .venv/bin/python bench/bridge.py -m 25 --keep      # only M = 25 (-m repeats), keep capture and traces
    .venv/bin/python bench/bridge.py --direct --seconds 20 --no-record
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import resource
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.calls import Capture, Sampler, free_rtp_range  # noqa: E402
from config.db import make_engine, session_factory, transaction, utcnow  # noqa: E402
from ivr import presence  # noqa: E402
from ivr.media.bridge import Bridge  # noqa: E402
from ivr.media.g711 import PCMA, PCMU, codec_for  # noqa: E402
from ivr.media.session import MediaSession  # noqa: E402
from ivr.media.stereo import StereoRecorder  # noqa: E402
from ivr.media.ticker import Ticker  # noqa: E402
from ivr.media.wavwriter import WavAppender  # noqa: E402
from ivr_harness import IvrService, build_prompts  # noqa: E402
from queue_fakes import seed_operators  # noqa: E402
from sipp_support import (  # noqa: E402
    SippResult,
    SipTraceMessage,
    free_media_port,
    free_udp_port,
    make_rtp_pcap,
    parse_sdp_audio,
    pcap_play_skip_reason,
    read_pcap,
    read_rtp_pcap,
    start_sipp,
)

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
HOST = "127.0.0.1"
PORTS = (36000, 39998)
FIRST_BAR = "first bar: 25 pairs, p99 added delay <= 5 ms, no loss; goal: 100 pairs at <= 1 ms"


PIN = True


def pin(core: int) -> None:
    """Bridges on one core, phones on the other (as bench/media.py). On a machine shared with
    other busy processes, --no-pin lets the scheduler move us off a core they occupy."""
    if PIN and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {core % (os.cpu_count() or 1)})


def tone(freq: float, pt: int, frames: int = 50) -> list[bytes]:
    """`frames` consecutive 20 ms frames of a tone, encoded (a 1 s loop of whole periods)."""
    out = []
    for k in range(frames):
        pcm = struct.pack("<160h", *(int(8000 * math.sin(2 * math.pi * freq * (160 * k + i) / 8000)) for i in range(160)))
        out.append(codec_for(pt).encode(pcm))
    return out


# -- phones (child process) -----------------------------------------------------------------------


def index_symbols(src: int, dst: int) -> tuple[list[int], dict[int, int]]:
    """16 code words of law `src` whose transcoding into law `dst` gives 16 distinct words.

    Each sent frame carries its index in its first 8 bytes, one nibble per byte; the bridge
    transcodes them, and the receiver maps the images back. This identifies every packet
    whatever is lost, which timestamps alone cannot (any shift by a frame also matches).
    """
    a, b = codec_for(src), codec_for(dst)
    symbols: list[int] = []
    images: dict[int, int] = {}
    for word in range(0x20, 0x100):
        image = b.encode(a.decode(bytes([word])))[0] if src != dst else word
        if image not in images:
            images[image] = len(symbols)
            symbols.append(word)
        if len(symbols) == 16:
            break
    return symbols, images


def mark(payload: bytes, k: int, symbols: list[int]) -> bytes:
    return bytes(symbols[(k >> (4 * j)) & 15] for j in range(8)) + payload[8:]


def unmark(payload: bytes, images: dict[int, int]) -> int | None:
    k = 0
    for j in range(8):
        nib = images.get(payload[j])
        if nib is None:
            return None
        k |= nib << (4 * j)
    return k


def phones(args: argparse.Namespace) -> None:
    """Bind 2 M sockets, print their ports; read the legs' ports; send and receive; print stats."""
    pin(1)
    m = args.pairs
    socks = []
    for _ in range(2 * m):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.bind((HOST, 0))
        s.setblocking(False)
        socks.append(s)
    print(json.dumps([s.getsockname()[1] for s in socks]), flush=True)
    targets = json.loads(sys.stdin.readline())  # the port of the leg each phone talks to
    # Phone 2i is pair i's caller (PCMU, 440 Hz), 2i+1 its operator (PCMA, 1 kHz); each hears the other.
    frames = {PCMU: tone(440, PCMU), PCMA: tone(1000, PCMA)}
    pts = [PCMU if i % 2 == 0 else PCMA for i in range(2 * m)]
    silence = {PCMU: codec_for(PCMU).silence(), PCMA: codec_for(PCMA).silence()}
    rng = random.Random(1)
    ssrc = [rng.getrandbits(32) for _ in range(2 * m)]
    ts0 = [rng.getrandbits(31) for _ in range(2 * m)]
    direct = args.no_bridge
    codes = {pt: index_symbols(pt, pt if direct else (PCMA if pt == PCMU else PCMU)) for pt in (PCMU, PCMA)}
    recv_images = [codes[pts[i ^ 1]][1] for i in range(2 * m)]  # phone i decodes what its partner marked
    sent: list[list[int]] = [[] for _ in range(2 * m)]  # phone -> send ns of frame k
    got: list[dict[int, int]] = [{} for _ in range(2 * m)]  # phone -> {partner's frame k: kernel ns}
    start = time.monotonic() + 0.2
    phase = [start + rng.random() * 0.02 for _ in range(2 * m)]
    count = [0] * (2 * m)
    total = int(args.seconds / 0.02)
    poller = select.epoll()
    by_fd = {s.fileno(): i for i, s in enumerate(socks)}
    for s in socks:
        poller.register(s.fileno(), select.EPOLLIN)
    end = start + args.seconds + 0.5
    while True:
        now = time.monotonic()
        if now > end:
            break
        nxt = end
        for i in range(2 * m):
            if count[i] < total:
                due = phase[i] + count[i] * 0.02
                if due <= now:
                    k = count[i]
                    ts = (ts0[i] + 160 * k) & 0xFFFFFFFF
                    payload = mark(frames[pts[i]][k % 50], k, codes[pts[i]][0])
                    pkt = struct.pack("!BBHII", 0x80, pts[i], k & 0xFFFF, ts, ssrc[i]) + payload
                    sent[i].append(time.time_ns())
                    socks[i].sendto(pkt, (HOST, targets[i]))
                    count[i] += 1
                    due += 0.02
                nxt = min(nxt, due)
        for fd, _ in poller.poll(max(0.0, nxt - time.monotonic())):
            i = by_fd[fd]
            s = socks[i]
            while True:
                try:
                    data, anc, _, _ = s.recvmsg(2048, socket.CMSG_SPACE(16))
                except BlockingIOError:
                    break
                if len(data) < 12 or data[12:] == silence[pts[i]]:
                    continue  # the leg's own filler silence, not relayed audio
                kns = time.time_ns()
                for level, kind, raw in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", raw[:16])
                        kns = sec * 1_000_000_000 + nsec
                k = unmark(data[12:], recv_images[i])
                if k is not None:
                    got[i][k] = kns
    delays: list[float] = []
    lost = expected = 0
    warm = int(args.warmup / 0.02)
    for i in range(2 * m):
        peer = i ^ 1  # what phone i receives was sent by its partner
        for k in range(warm, count[peer]):
            expected += 1
            if k in got[i]:
                delays.append((got[i][k] - sent[peer][k]) / 1e6)
            else:
                lost += 1
    print(json.dumps({"delays": delays, "lost": lost, "expected": expected}), flush=True)


# -- bridges (this process) ------------------------------------------------------------------------


def quantile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run_direct(m: int, args: argparse.Namespace, tmp: Path, direct: bool = False) -> dict[str, float]:
    """One point of the --direct mode: M pairs (`direct`: no bridge, phone to phone)."""
    child = subprocess.Popen([sys.executable, __file__, "--phones", "--pairs", str(m), "--seconds", str(args.seconds),
                              "--warmup", str(args.warmup)] + (["--no-pin"] if args.no_pin else [])
                             + (["--no-bridge"] if direct else []), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    ports = json.loads(child.stdout.readline())
    ticker = Ticker()
    await ticker.start()
    legs: list[MediaSession] = []
    bridges: list[Bridge] = []
    try:
        if direct:
            targets = [ports[i ^ 1] for i in range(2 * m)]
        else:
            for i in range(m):
                a = await MediaSession.open(HOST, PORTS, ticker=ticker, payload_type=PCMU)
                b = await MediaSession.open(HOST, PORTS, ticker=ticker, payload_type=PCMA)
                a.set_remote((HOST, ports[2 * i]))
                b.set_remote((HOST, ports[2 * i + 1]))
                legs += [a, b]
                rec = None if args.no_record else StereoRecorder(WavAppender(tmp / f"{m}-{i}.wav", channels=2))
                bridge = Bridge(a, b, rec)
                bridge.start()
                bridges.append(bridge)
            targets = [leg.local_port for leg in legs]
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        child.stdin.write(json.dumps(targets) + "\n")
        child.stdin.flush()
        line = await asyncio.get_running_loop().run_in_executor(None, child.stdout.readline)
        wall = time.monotonic() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        for bridge in bridges:
            await bridge.stop()
        for leg in legs:
            await leg.close()
        await ticker.stop()
        child.stdin.close()
        child.stdout.close()
        child.wait()
    res = json.loads(line)
    d = res["delays"]
    cpu = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / wall
    return {"n": len(d), "p50": quantile(d, 0.5), "p99": quantile(d, 0.99), "max": max(d) if d else float("nan"),
            "lost": res["lost"], "expected": res["expected"], "cpu": cpu, "skipped": ticker.stats.skipped}


async def direct_main(args: argparse.Namespace) -> None:
    pin(0)
    print(f"bench/bridge.py (--direct): {args.seconds:g} s per point ({args.warmup:g} s warm-up excluded), caller leg PCMU, "
          f"operator leg PCMA (every packet transcoded), stereo recording {'off' if args.no_record else 'on'}; "
          f"bridges in this process, phones in another ({'unpinned' if args.no_pin else 'cores 0 / 1'}). "
          f"No SIP/SIPp: media only. Load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores.")
    print(FIRST_BAR)
    with tempfile.TemporaryDirectory() as tmp:
        base = await run_direct(1, args, Path(tmp), direct=True)
        print(f"direct (no bridge, loopback hops only): p50 {base['p50']:.3f} ms  p99 {base['p99']:.3f} ms")
        print(f"{'M':>4} {'packets':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'loss':>9} {'p99/M=1':>8} "
              f"{'bridge CPU':>10}")
        first: float | None = None
        for m in args.m:
            r = await run_direct(m, args, Path(tmp))
            first = first or r["p99"]
            loss = f"{r['lost']}/{r['expected']}"
            print(f"{m:>4} {r['n']:>8} {r['p50']:>7.3f} {r['p99']:>7.3f} {r['max']:>7.2f} {loss:>9} "
                  f"{r['p99'] / first:>8.2f} {100 * r['cpu']:>9.0f}%"
                  + (f"  (clock skipped {r['skipped']} periods)" if r["skipped"] else ""), flush=True)


# -- SIPp mode ------------------------------------------------------------------------------------

OFFICE_HOURS = "2026-12-08T10:00:00+08:00"
"""A Tuesday morning by the rehearsal clock: the centre is open, callers queue for operators."""
PROMPTS = Path(tempfile.gettempdir()) / "hotline-bench-prompts"
"""Shared with bench/calls.py: built once (espeak-ng), reused by later runs."""
SET_UP_SECONDS = 3.0
"""From a caller's ACK to its bridge, besides the consent notice: greeting cut by key 1, queue, ring, margin."""
EDGE = 0.5
"""Seconds left out at each end of the all-bridged window (the last bridge starting, the first ending)."""
STALLED = re.compile(r"media clock stalled (\d+) ms")
RUNG_FIELD = re.compile(r"\b(\w+)=(\S+)")


def ensure_prompts() -> Path:
    if not all((PROMPTS / "zh" / f"{p}.wav").exists() for p in ("voicemail", "call_recorded")):
        print(f"building prompts into {PROMPTS} (espeak-ng) ...", flush=True)
        build_prompts(PROMPTS)
    return PROMPTS


@dataclass
class Side:
    """One side's pcap (noise after any keys) and how to recognise its frames on either leg."""

    pcap: Path
    sent: dict[bytes, int]
    """Audio payload as this side sends it -> frame index in the pcap."""
    relayed: dict[bytes, int]
    """The same frame as the bridge sends it on the other leg (transcoded when the laws differ)."""


def noise_side(work: Path, name: str, seconds: float, pt: int, other_pt: int, seed: int,
               digits: list[tuple[float, str]]) -> Side:  # fmt: skip
    """White noise as `pt`: every 20 ms frame differs from every other, so a payload names its frame."""
    rng = random.Random(seed)
    wav = work / f"{name}.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        n = int(8000 * seconds)
        w.writeframes(struct.pack(f"<{n}h", *(rng.randint(-12000, 12000) for _ in range(n))))
    info = make_rtp_pcap(wav, work / f"{name}.pcap", payload_type=pt, digits=digits)
    wav.unlink()
    src, dst = codec_for(pt), codec_for(other_pt)
    sent: dict[bytes, int] = {}
    relayed: dict[bytes, int] = {}
    for k, (_, pkt) in enumerate(read_rtp_pcap(info.path)):
        if pkt.payload_type != pt:
            continue  # a key press
        sent[pkt.payload] = k
        relayed[pkt.payload if pt == other_pt else dst.encode(src.decode(pkt.payload))] = k
    if len(sent) != info.audio_packets or len(relayed) != info.audio_packets:
        raise SystemExit(f"{name}: noise frames are not unique ({len(sent)}, {len(relayed)} of {info.audio_packets})")
    return Side(info.path, sent, relayed)


@dataclass
class Point:
    m: int
    bridged: int = 0
    """Calls bridged with audio relayed both ways."""
    at_once: int = 0
    """The most pairs bridged at the same time; the window is the longest stretch with that many."""
    window: float = float("nan")
    delays: list[float] = field(default_factory=list)
    lost: int = 0
    expected: int = 0
    cpu: float = float("nan")
    cpu_peak: float = float("nan")
    sipp_cpu: float = float("nan")
    run_queue: float = float("nan")
    """% of the SIPp run the service's event-loop thread spent runnable but waiting for a core."""
    capture: dict[str, int] = field(default_factory=dict)
    stalls: list[int] = field(default_factory=list)
    """The service's own "media clock stalled N ms" warnings (its event loop held up), for context."""
    problems: list[str] = field(default_factory=list)


def seed(svc: IvrService, m: int, op_port: int) -> None:
    """M operators, all available, reached at one SIPp UAS (see seed_operators)."""
    engine = make_engine(svc.db_url)
    try:
        sessions = session_factory(engine)
        seed_operators(sessions, range(1, m + 1), sip_host=f"127.0.0.1:{op_port}")
        with transaction(sessions) as s:
            for i in range(1, m + 1):
                presence.set_state(s, i, "available", utcnow())
    finally:
        engine.dispose()


def set_up_seconds(prompts: Path) -> float:
    """A caller's ACK to the bridge (the operator's ACK is a little later; it counts the hold from there)."""
    with wave.open(str(prompts / "zh" / "call_recorded.wav"), "rb") as w:
        return SET_UP_SECONDS + w.getnframes() / w.getframerate()


def run_queue_wait(pid: int) -> float | None:
    """Seconds the process's main thread (the event loop) has been runnable but not running: waiting
    for a core other processes held (/proc schedstat). High while delays are high = a starved service."""
    try:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def ended_rows(svc: IvrService, m: int, timeout: float = 120) -> list[dict[str, object]]:
    """The Call rows once every call has ended (conversations are stored one after the other)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = svc.calls(limit=4 * m + 20)
        if all(r["end_reason"] is not None for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def pairs_from_signalling(callers: SippResult, operators: SippResult, rows: list[dict[str, object]], log: str,
                          problems: list[str]) -> list[tuple[int, int]]:  # fmt: skip
    """(IVR caller-leg port, IVR operator-leg port) per bridged call, from the SIP traces, the Call rows
    and the service's log: the caller's Call-ID -> the port in the IVR's 200 OK; the Call row -> the
    operator leg's row (the last answered "operator rung" before the conversation; an operator may be
    rung again for another caller when the first one left) -> its Call-ID -> the port in the IVR's INVITE."""
    def sdp_ports(messages: list[SipTraceMessage]) -> dict[str, int]:
        ports = {}
        for msg in messages:
            media = parse_sdp_audio(msg.body) if msg.body.strip() else None
            cid = msg.header("Call-ID")
            if media is not None and cid is not None:
                ports[cid] = media.port
        return ports

    answers = [m for m in callers.received(200) if m.cseq_method == "INVITE"]
    caller_port, operator_port = sdp_ports(answers), sdp_ports(operators.received("INVITE"))
    leg_row: dict[int, int] = {}
    for line in log.splitlines():
        if "operator rung" in line:
            kv = dict(RUNG_FIELD.findall(line))
            if kv.get("outcome") == "answered" and kv.get("call_id", "").isdigit() and kv.get("leg_row", "").isdigit():
                leg_row[int(kv["call_id"])] = int(kv["leg_row"])
    call_ids = {r["id"]: str(r["sip_call_id"]) for r in rows}
    pairs = []
    for row in rows:
        if row["direction"] != "in":
            continue
        a = caller_port.get(str(row["sip_call_id"]))
        leg = leg_row.get(row["id"]) if isinstance(row["id"], int) else None
        b = operator_port.get(call_ids.get(leg, "")) if leg is not None else None
        if a is None or b is None or row["disposition"] != "operator":
            problems.append(f"call {row['id']} ({row['disposition']}, {row['end_reason']}): caller leg port {a}, "
                            f"operator leg row {leg} port {b}")  # fmt: skip
            continue
        pairs.append((a, b))
    return pairs


def measure(point: Point, cap_path: Path, rtp: tuple[int, int], pairs: list[tuple[int, int]], caller: Side,
            operator: Side) -> None:  # fmt: skip
    """Delays and loss while the most pairs were bridged at once (all M when all went well; module doc)."""
    a_ports = {a for a, _ in pairs}
    b_ports = {b for _, b in pairs}
    lo, hi = rtp
    # port -> {frame: capture time}: what arrived at a leg from its phone, what left a leg towards its phone
    arrived: dict[int, dict[int, float]] = {p: {} for p in a_ports | b_ports}
    left: dict[int, dict[int, float]] = {p: {} for p in a_ports | b_ports}
    for rec in read_pcap(cap_path):
        (_, sport), (_, dport) = rec.src, rec.dst
        payload = rec.payload[12:]
        if not lo <= sport <= hi and dport in arrived:
            k = (caller.sent if dport in a_ports else operator.sent).get(payload)
            if k is not None:
                arrived[dport].setdefault(k, rec.time)
        elif sport in left:
            k = (operator.relayed if sport in a_ports else caller.relayed).get(payload)
            if k is not None:
                left[sport].setdefault(k, rec.time)
    # Each pair is bridged from its first to its last relayed frame (arrival times), in both directions.
    spans: dict[tuple[int, int], tuple[float, float]] = {}
    for a, b in pairs:
        ends = []
        for src, dst in ((a, b), (b, a)):
            relayed = [arrived[src][k] for k in left[dst] if k in arrived[src]]
            ends.append((min(relayed), max(relayed)) if relayed else None)
        if ends[0] is not None and ends[1] is not None:
            spans[(a, b)] = (max(ends[0][0], ends[1][0]) + EDGE, min(ends[0][1], ends[1][1]) - EDGE)
    point.bridged = len(spans)
    if point.bridged < point.m:
        point.problems.append(f"only {point.bridged} of {point.m} calls were bridged with audio both ways")
    # The longest stretch with the most pairs bridged at once.
    kept = [(t0, t1) for t0, t1 in spans.values() if t1 > t0]
    events = sorted([(t0, 1) for t0, _ in kept] + [(t1, -1) for _, t1 in kept])  # an end before a start at a tie
    now, best, start, end = 0, 0, 0.0, 0.0
    for i, (t, step) in enumerate(events):
        now += step
        if step > 0 and i + 1 < len(events) and (now > best or (now == best and events[i + 1][0] - t > end - start)):
            best, start, end = now, t, events[i + 1][0]
    point.at_once, point.window = best, end - start
    if best == 0:
        return
    if best < point.m:
        point.problems.append(f"at most {best} of {point.m} pairs bridged at once: delays are for {best}")
    for (a, b), (t0, t1) in spans.items():
        if t0 > start or t1 < end:
            continue  # not bridged throughout the window
        for src, dst in ((a, b), (b, a)):
            for k, t_in in arrived[src].items():
                if start <= t_in <= end:
                    point.expected += 1
                    t_out = left[dst].get(k)
                    if t_out is None:
                        point.lost += 1
                    else:
                        point.delays.append((t_out - t_in) * 1000)


def run_sipp_point(m: int, args: argparse.Namespace, work: Path, prompts: Path, caller: Side,
                   operator: Side) -> Point:  # fmt: skip
    point = Point(m)
    wd = work / f"m{m}"
    rtp = free_rtp_range(max(64, 8 * m))
    hold_ms = int((args.seconds + set_up_seconds(prompts) + m / args.rate + 2 * EDGE) * 1000)
    op_port = free_udp_port()
    svc = IvrService(wd / "svc", prompts, {
        "HOTLINE_CALENDAR__CLOCK_START": OFFICE_HOURS,
        "HOTLINE_SIP__RTP_PORT_MIN": str(rtp[0]),
        "HOTLINE_SIP__RTP_PORT_MAX": str(rtp[1]),
        "HOTLINE_QUEUE__WRAP_UP_SECONDS": "3600",  # one call per operator
    })  # fmt: skip
    seed(svc, m, op_port)
    cap = Capture(wd / "rtp.pcap", rtp)
    samplers: list[Sampler] = []
    try:
        cap.start()
        ops = start_sipp("op_answer", local_port=op_port, media_port=free_media_port(), calls=m, pcap=operator.pcap,
                         keys={"hold_ms": hold_ms}, workdir=wd / "operators",
                         timeout=hold_ms / 1000 + m / args.rate + 90)  # fmt: skip
        svc.start()
        assert svc.proc is not None and svc.port is not None
        samplers = [Sampler(svc.proc.pid), Sampler(ops.pid)]
        callers = start_sipp("vm_leave_message", "127.0.0.1", svc.port, calls=m, limit=m, rate=args.rate,
                             pcap=caller.pcap, keys={"bye_wait_ms": hold_ms + 60_000, "offer_pts": args.offer_pts},
                             workdir=wd / "callers")  # fmt: skip
        samplers.append(Sampler(callers.pid))
        for sampler in samplers:
            sampler.start()
        wait0, t0 = run_queue_wait(svc.proc.pid), time.monotonic()
        rc = callers.wait()
        wait1, t1 = run_queue_wait(svc.proc.pid), time.monotonic()
        if wait0 is not None and wait1 is not None:
            point.run_queue = 100 * (wait1 - wait0) / (t1 - t0)
        ro = ops.wait(60)
        for sampler in samplers:
            sampler.stop()
        serve = samplers[0].summary()
        point.cpu, point.cpu_peak = serve["cpu"], serve["cpu_peak"]
        point.sipp_cpu = sum(sampler.summary()["cpu"] for sampler in samplers[1:])
        for name, r in (("callers", rc), ("operators", ro)):
            if not r.ok:
                point.problems.append(f"sipp {name}: " + r.describe().splitlines()[0]
                                      + (f"; errors: {r.errors.strip()[-400:]}" if r.errors.strip() else ""))
        time.sleep(0.5)
        point.capture = cap.stop()
        rows = ended_rows(svc, m)
    finally:
        for sampler in samplers:
            if sampler.is_alive():
                sampler.stop()
        if cap.proc is not None and cap.proc.poll() is None:
            cap.stop()
        if svc.running():
            code = svc.stop()
            if code != 0:
                point.problems.append(f"serve exited {code} on SIGTERM")
        point.stalls = [int(ms) for ms in STALLED.findall(svc.log())]
    pairs = pairs_from_signalling(rc, ro, rows, svc.log(), point.problems)
    measure(point, cap.path, rtp, pairs, caller, operator)
    if not args.keep:
        cap.path.unlink(missing_ok=True)
    return point


def sipp_main(args: argparse.Namespace) -> None:
    why = pcap_play_skip_reason()
    if why:
        raise SystemExit(why)
    if os.geteuid() != 0:
        raise SystemExit("run as root: tcpdump on lo")
    prompts = ensure_prompts()
    args.offer_pts = "0 101" if args.same_codec else "8 101"
    seconds = args.seconds + set_up_seconds(prompts) + max(args.m) / args.rate + 60  # outlasts the call
    work = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    caller_pt = PCMU if args.same_codec else PCMA
    caller = noise_side(work, "caller", seconds, caller_pt, PCMU, 1, [(0.5, "1")])
    operator = noise_side(work, "operator", seconds, PCMU, caller_pt, 2, [])
    print(f"bench/bridge.py (SIPp): M SIPp callers -> IVR queue -> M SIPp operators; {args.seconds:g} s with all M "
          f"bridged; noise both ways, caller {'PCMU' if args.same_codec else 'PCMA'} / operator PCMU"
          f"{'' if args.same_codec else ' (every packet transcoded)'}, stereo recording on; calls at {args.rate:g}/s. "
          f"Delay = relayed copy leaving one leg - original arriving at the other (tcpdump on lo). "
          f"Load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores.", flush=True)  # fmt: skip
    print(FIRST_BAR)
    head = (f"{'M':>4} {'bridged':>8} {'window s':>8} {'packets':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
            f"{'loss':>11} {'p99/M=1':>8} {'serve CPU':>9} {'peak':>5} {'run q':>6} {'SIPp CPU':>8} "
            f"{'load':>5}")  # fmt: skip
    points = []
    try:
        for m in args.m:
            p = run_sipp_point(m, args, work, prompts, caller, operator)
            points.append(p)
            if len(points) == 1:
                print(head)
            d = sorted(p.delays)
            base = quantile(sorted(points[0].delays), 0.99) if points[0].m == 1 else float("nan")
            p99 = quantile(d, 0.99)
            print(f"{m:>4} {f'{p.at_once}/{m}':>8} {p.window:>8.1f} {len(d):>8} {quantile(d, 0.5):>7.3f} {p99:>7.3f} "
                  f"{(d[-1] if d else float('nan')):>7.2f} {f'{p.lost}/{p.expected}':>11} {p99 / base:>8.2f} "
                  f"{p.cpu:>8.0f}% {p.cpu_peak:>4.0f}% {p.run_queue:>5.0f}% {p.sipp_cpu:>7.0f}% "
                  f"{os.getloadavg()[0]:>5.2f}",
                  flush=True)  # fmt: skip
    finally:
        print("bridged = the most pairs bridged at once / M; delays in ms over the longest window (s) with that "
              "many; loss = frames lost / frames in the window, both ways; serve CPU = the IVR process, % of one "
              "core over the SIPp run (peak: worst 1 s); run q = time its event loop was runnable but waiting for a "
              "core (other processes had both), % of that run; SIPp CPU = both SIPp processes; load = 1-min load "
              "average after the point.")  # fmt: skip
        for p in points:
            notes = list(p.problems)
            if p.stalls:
                notes.append(f"the service logged {len(p.stalls)} media clock stalls (max {max(p.stalls)} ms) "
                             f"during the run (whole run, not only the window)")
            if p.capture.get("dropped", 0) > 0:
                notes.append(f"tcpdump dropped {p.capture['dropped']} packets: those count as lost")
            if notes:
                more = f" ... ({len(notes) - 10} more)" if len(notes) > 10 else ""
                print(f"M = {p.m}: " + "; ".join(notes[:10]) + more)
        for p in points:
            ok = p.at_once == p.m and p.lost == 0 and quantile(sorted(p.delays), 0.99) <= 5.0
            if p.m == 25:
                print(f"First bar (25 pairs, p99 <= 5 ms, no loss): {'MET' if ok else 'NOT MET'}")
            if p.m == 100:
                ok = p.at_once == p.m and p.lost == 0 and quantile(sorted(p.delays), 0.99) <= 1.0
                print(f"Goal (100 pairs, p99 <= 1 ms, no loss): {'MET' if ok else 'NOT MET'}")
        print(f"work dir {work} ({'kept' if args.keep else 'removed'})")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", type=int, action="append", help="bridged pairs (repeatable); default 1 10 25 50")
    parser.add_argument("--full", action="store_true", help="also M = 100")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="SIPp: seconds with all M pairs bridged; --direct: seconds per point (default 10)")
    parser.add_argument("--direct", action="store_true", help="the relay alone, in process, no SIP (see above)")
    parser.add_argument("--rate", type=float, default=10.0, help="SIPp: calls placed per second (default 10)")
    parser.add_argument("--same-codec", action="store_true", help="SIPp: PCMU on both legs (no transcoding)")
    parser.add_argument("--keep", action="store_true", help="SIPp: keep the work dir (capture, logs, traces)")
    parser.add_argument("--warmup", type=float, default=1.0, help="--direct: seconds left out at the start")
    parser.add_argument("--no-record", action="store_true", help="--direct: bridges without stereo recording")
    parser.add_argument("--no-pin", action="store_true", help="--direct: do not pin bridges and phones to cores")
    parser.add_argument("--phones", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--no-bridge", action="store_true", help=argparse.SUPPRESS)
    a = parser.parse_args()
    PIN = not a.no_pin
    a.m = (a.m or [1, 10, 25, 50]) + ([100] if a.full else [])
    if a.phones:
        phones(a)
    elif a.direct:
        asyncio.run(direct_main(a))
    else:
        sipp_main(a)
