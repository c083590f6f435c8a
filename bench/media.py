#!/usr/bin/env python3
"""Outgoing RTP pacing of our asyncio media path with N concurrent sessions (not a test).

N `MediaSession`s on one `Ticker` (the production code path: PCMU encoding, struct header,
one sendto per tick; optionally each also records an inbound stream into a WavAppender) each
play a real 8 kHz speech clip in a loop to a receiver in a *separate process*, pinned to the
other core. The receiver timestamps every datagram in the kernel (SO_TIMESTAMPNS) and, per
stream, measures the interval between consecutive sequence numbers; the table shows the
deviation from 20 ms (p50 / p99 / max), intervals over 30 ms, sender CPU (one core) and the
p99 ratio against N = 1. ../shared/MEDIA.md and ../shared/PYVOIP.md hold the reference figures
(plain pyVoIP at 50 calls: p99 27.6 ms, 276 gaps > 30 ms).

    .venv/bin/python bench/media.py                      # N = 1, 50, 100, 200; 10 s each
    .venv/bin/python bench/media.py -n 1 -n 50 --seconds 20
    .venv/bin/python bench/media.py --record             # also record an inbound stream per call
    .venv/bin/python bench/media.py --uvloop             # if uvloop is installed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ivr.media.g711 import PCMU  # noqa: E402
from ivr.media.session import MediaSession  # noqa: E402
from ivr.media.ticker import Ticker  # noqa: E402
from ivr.media.wavwriter import WavAppender  # noqa: E402

CLIP = ROOT.parent / "shared" / "speech" / "tts_cmn_complaint_8k.wav"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
PYVOIP_50 = "pyVoIP 1.6.8 at 50 calls (PYVOIP.md): p99 27.6 ms, max 104 ms, 276 gaps > 30 ms"


def pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {core % (os.cpu_count() or 1)})


# -- receiver (child process) ------------------------------------------------------------------


def receive(args: argparse.Namespace) -> None:
    """Bind, print the port, timestamp datagrams until told to stop (stdin closes), print stats."""
    pin(1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    kernel = True
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        kernel = False
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    print(sock.getsockname()[1], flush=True)
    last: dict[int, tuple[int, int]] = {}
    intervals: list[int] = []
    measuring = False
    # With --record the receiver is also every caller: it sends each session (by the address
    # its packets come from) one PCMU packet per 20 ms, so the sessions latch to it and record.
    callers: set[tuple[str, int]] = set()
    out_seq = 0
    deadline = time.monotonic() + 0.02
    while True:
        timeout = max(0.0, deadline - time.monotonic()) if args.record else 1.0
        ready, _, _ = select.select([sock, sys.stdin], [], [], timeout)
        if args.record and time.monotonic() >= deadline:
            deadline += 0.02
            out_seq = (out_seq + 1) & 0xFFFF
            packet = struct.pack("!BBHII", 0x80, PCMU, out_seq, out_seq * 160, 0x5EED) + b"\xff" * 160
            for addr in callers:
                try:
                    sock.sendto(packet, addr)
                except BlockingIOError:
                    pass
        if sys.stdin in ready:
            line = sys.stdin.readline()
            if line.strip() == "start":
                measuring, last, intervals = True, {}, []
                continue
            break
        if sock not in ready:
            continue
        while True:
            try:
                data, anc, _, source = sock.recvmsg(2048, 64)
            except BlockingIOError:
                break
            if args.record:
                callers.add(source)
            now = time.monotonic_ns()
            if kernel:
                for level, kind, value in anc:
                    if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", value[:16])
                        now = sec * 1_000_000_000 + nsec
            if not measuring or len(data) < 12:
                continue
            seq, ssrc = struct.unpack_from("!H", data, 2)[0], struct.unpack_from("!I", data, 8)[0]
            prev = last.get(ssrc)
            if prev is not None and seq == (prev[0] + 1) & 0xFFFF:
                intervals.append(now - prev[1])
            last[ssrc] = (seq, now)
    devs = sorted(abs(i - 20_000_000) / 1e6 for i in intervals)

    def pct(p: float) -> float:
        return devs[min(len(devs) - 1, int(p * len(devs)))] if devs else float("nan")

    print(json.dumps({
        "streams": len(last), "intervals": len(intervals), "kernel_timestamps": kernel,
        "p50": pct(0.50), "p99": pct(0.99), "max": devs[-1] if devs else float("nan"),
        "gaps30": sum(1 for i in intervals if i > 30_000_000),
        "mean_ms": (sum(intervals) / len(intervals) / 1e6) if intervals else float("nan"),
    }), flush=True)


# -- sender (this process) ---------------------------------------------------------------------


async def run_point(n: int, args: argparse.Namespace, clip: bytes) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--_receiver"] + (["--record"] if args.record else [])
    rx = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    assert rx.stdin is not None and rx.stdout is not None
    port = int(rx.stdout.readline())
    ticker = Ticker()
    await ticker.start()
    sessions: list[MediaSession] = []
    writers: list[WavAppender] = []
    tmp = tempfile.TemporaryDirectory(prefix="bench-media-")
    stop = asyncio.Event()

    async def keep_playing(s: MediaSession) -> None:
        while not stop.is_set() and not s.closed:
            await s.play(clip)

    tasks = []
    try:
        for i in range(n):
            s = await MediaSession.open("127.0.0.1", (40000, 49998), ticker=ticker, payload_type=PCMU)
            s.set_remote(("127.0.0.1", port))
            if args.record:
                w = WavAppender(Path(tmp.name) / f"{i}.wav")
                writers.append(w)
                s.start_recording(w.write)
            sessions.append(s)
        tasks = [asyncio.ensure_future(keep_playing(s)) for s in sessions]
        await asyncio.sleep(args.warmup)
        rx.stdin.write("start\n")
        rx.stdin.flush()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        await asyncio.sleep(args.seconds)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        rx.stdin.write("stop\n")
        rx.stdin.flush()
        result = json.loads(await asyncio.to_thread(rx.stdout.readline))
        result["cpu"] = 100 * ((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) / (t1 - t0)
        result["skipped"] = ticker.stats.skipped
        result["recorded_lost"] = sum(s.stats["lost"] for s in sessions)
        result["recorded_in"] = sum(s.stats["packets_in"] for s in sessions)
        return result
    finally:
        stop.set()
        for s in sessions:
            await s.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in writers:
            w.close()
        await ticker.stop()
        tmp.cleanup()
        rx.stdin.close()
        rx.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("-n", "--calls", type=int, action="append", help="sessions per point (repeatable)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--record", action="store_true", help="also record an inbound stream per session to WAV")
    parser.add_argument("--uvloop", action="store_true", help="run the sender on uvloop")
    parser.add_argument("--_receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._receiver:
        receive(args)
        return 0
    points = args.calls or [1, 50, 100, 200]
    pin(0)
    with wave.open(str(CLIP)) as w:
        clip = w.readframes(w.getnframes())
    if args.uvloop:
        import uvloop

        uvloop.install()
    loop_name = "uvloop" if args.uvloop else "asyncio"
    results = []
    for n in points:
        r = asyncio.run(run_point(n, args, clip))
        results.append((n, r))
        print(f"N={n}: done", file=sys.stderr, flush=True)
    base = next((r["p99"] for n, r in results if n == 1), None)
    print(f"\nOutgoing RTP interval deviation from 20 ms, {loop_name}, one ticker, "
          f"{args.seconds:.0f} s per point{', recording inbound' if args.record else ''}")
    print(f"{'N':>5} {'intervals':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'>30 ms':>7} "
          f"{'mean ms':>8} {'CPU %':>6} {'p99/N=1':>8}")
    for n, r in results:
        ratio = f"{r['p99'] / base:.2f}" if base else "-"
        print(f"{n:>5} {r['intervals']:>10} {r['p50']:>8.3f} {r['p99']:>8.3f} {r['max']:>8.2f} "
              f"{r['gaps30']:>7} {r['mean_ms']:>8.3f} {r['cpu']:>6.1f} {ratio:>8}")
    if args.record:
        for n, r in results:
            print(f"N={n}: inbound packets recorded {r['recorded_in']}, frames lost {r['recorded_lost']}")
    kernel = all(r["kernel_timestamps"] for _, r in results)
    print(f"\nreceive timestamps: {'kernel SO_TIMESTAMPNS' if kernel else 'time.monotonic_ns in the receiver'}")
    print(f"baseline: {PYVOIP_50}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
