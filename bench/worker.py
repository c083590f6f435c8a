#!/usr/bin/env python3
"""Throughput of `hotline worker` with 1 and with 2 Vosk processes on the same queue.

Builds a private database and storage root, imports real 8 kHz speech repeatedly until the
queue holds at least --minutes of audio (ko-zeroth clips by default), then times

    hotline worker --once --processes 1
    (the same jobs re-queued, transcripts and draft cases removed)
    hotline worker --once --processes 2

through the real console script, and prints both wall times, the audio throughput of each
and their ratio (first bar >= 1.5x, goal >= 1.8x). Each run includes starting its processes
and loading the model in them, as a real `--once` run does. Not a test: nothing is asserted.

    .venv/bin/python bench/worker.py                # 10 minutes of audio
    .venv/bin/python bench/worker.py --minutes 2    # a quick check
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT.parent / "shared" / "speech" / "ko-zeroth"
HOTLINE = Path(sys.executable).parent / "hotline"
sys.path.insert(0, str(ROOT))


def duration(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def hotline(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(HOTLINE), *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"hotline {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def requeue(url: str) -> None:
    """Put every job back to queued and remove what the previous run produced."""
    from sqlalchemy import delete, update

    from cases.models import Case, CaseCounter, CaseEvent
    from config.db import make_engine
    from service.models import import_all_models
    from transcription.models import QUEUED, Transcript, TranscriptionJob

    import_all_models()
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(delete(CaseEvent))
        c.execute(delete(Case))
        c.execute(delete(CaseCounter))
        c.execute(delete(Transcript))
        c.execute(
            update(TranscriptionJob).values(
                state=QUEUED, attempts=0, lease_until=None, worker=None, last_error=None, finished_at=None
            )
        )
    engine.dispose()


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed_run(env: dict[str, str], processes: int) -> float:
    load = os.getloadavg()[0]
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = hotline(env, "worker", "--once", "--processes", str(processes))
    elapsed = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    done = proc.stderr.count("job done")
    # CPU/wall near the process count means the cores were ours; far below, other load shared them.
    print(
        f"  --processes {processes}: {elapsed:7.1f} s wall, {cpu:7.1f} s CPU (CPU/wall {cpu / elapsed:.2f}), "
        f"{done} jobs done; load average before {load:.2f}",
        flush=True,
    )
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="audio in the queue, in minutes (default 10)")
    ap.add_argument("--source", type=Path, default=SPEECH, help="folder of *_8k.wav clips to import (default ko-zeroth)")
    ap.add_argument("--model", type=Path, help="Vosk model folder (default: as `hotline models path` finds it)")
    ap.add_argument("--database", help="database URL (default: a fresh SQLite file in a temporary folder)")
    args = ap.parse_args()

    clips = sorted(args.source.glob("*_8k.wav"))
    if not clips:
        sys.exit(f"no *_8k.wav clips in {args.source}")
    want = args.minutes * 60
    files: list[Path] = []
    total = 0.0
    while total < want:
        for c in clips:
            files.append(c)
            total += duration(c)
            if total >= want:
                break

    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        url = args.database or f"sqlite:///{tmp}/bench.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
        env.update(
            HOTLINE_DATABASE__URL=url,
            HOTLINE_STORAGE__ROOT=f"{tmp}/recordings",
            HOTLINE_TRANSCRIPTION__POLL_SECONDS="0.2",
            HOTLINE_LOGGING__LEVEL="INFO",
        )
        if args.model:
            env["HOTLINE_TRANSCRIPTION__MODEL_PATH"] = str(args.model)
        print(f"queue: {len(files)} recordings, {total / 60:.1f} min of audio ({len(clips)} distinct clips)", flush=True)
        hotline(env, "db", "upgrade")
        for i in range(0, len(files), 50):
            hotline(env, "recordings", "import", *map(str, files[i : i + 50]), "--caller", "13800138000")
        one = timed_run(env, 1)
        requeue(url)
        two = timed_run(env, 2)

    print(f"audio throughput: 1 process {total / one:.2f}x real time, 2 processes {total / two:.2f}x real time")
    print(f"ratio 2 vs 1 processes: {one / two:.2f}x (first bar 1.5x, goal 1.8x); cores here: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
