#!/usr/bin/env python3
"""Added relay delay and loss of the media bridge with M bridged pairs at once (not a test).

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
the measured window that never came out of the other side. SIPp is not used: no SIP is
involved in relaying media, and the phones here measure every packet themselves.

    .venv/bin/python bench/bridge.py                   # M = 1, 10, 25, 50, 100; 10 s each
    .venv/bin/python bench/bridge.py -m 25 --seconds 20 --no-record
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ivr.media.bridge import Bridge  # noqa: E402
from ivr.media.g711 import PCMA, PCMU, codec_for  # noqa: E402
from ivr.media.session import MediaSession  # noqa: E402
from ivr.media.stereo import StereoRecorder  # noqa: E402
from ivr.media.ticker import Ticker  # noqa: E402
from ivr.media.wavwriter import WavAppender  # noqa: E402

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
    direct = args.direct
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


async def run(m: int, args: argparse.Namespace, tmp: Path, direct: bool = False) -> dict[str, float]:
    child = subprocess.Popen([sys.executable, __file__, "--phones", "--pairs", str(m), "--seconds", str(args.seconds),
                              "--warmup", str(args.warmup)] + (["--no-pin"] if args.no_pin else [])
                             + (["--direct"] if direct else []), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
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


async def main(args: argparse.Namespace) -> None:
    pin(0)
    print(f"bench/bridge.py: {args.seconds:g} s per point ({args.warmup:g} s warm-up excluded), caller leg PCMU, "
          f"operator leg PCMA (every packet transcoded), stereo recording {'off' if args.no_record else 'on'}; "
          f"bridges in this process, phones in another ({'unpinned' if args.no_pin else 'cores 0 / 1'}). "
          f"No SIP/SIPp: media only. Load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores.")
    print(FIRST_BAR)
    with tempfile.TemporaryDirectory() as tmp:
        base = await run(1, args, Path(tmp), direct=True)
        print(f"direct (no bridge, loopback hops only): p50 {base['p50']:.3f} ms  p99 {base['p99']:.3f} ms")
        print(f"{'M':>4} {'packets':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'loss':>9} {'p99/M=1':>8} "
              f"{'bridge CPU':>10}")
        first: float | None = None
        for m in args.m:
            r = await run(m, args, Path(tmp))
            first = first or r["p99"]
            loss = f"{r['lost']}/{r['expected']}"
            print(f"{m:>4} {r['n']:>8} {r['p50']:>7.3f} {r['p99']:>7.3f} {r['max']:>7.2f} {loss:>9} "
                  f"{r['p99'] / first:>8.2f} {100 * r['cpu']:>9.0f}%"
                  + (f"  (clock skipped {r['skipped']} periods)" if r["skipped"] else ""), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", type=int, action="append", help="bridged pairs (repeatable); default 1 10 25 50 100")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--no-pin", action="store_true", help="do not pin bridges and phones to separate cores")
    parser.add_argument("--phones", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--direct", action="store_true", help=argparse.SUPPRESS)
    a = parser.parse_args()
    PIN = not a.no_pin
    if a.phones:
        phones(a)
    else:
        a.m = a.m or [1, 10, 25, 50, 100]
        asyncio.run(main(a))
