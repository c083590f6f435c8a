#!/usr/bin/env python3
"""`hotline transcribe` against a bare Vosk loop on the same audio, in one run.

The audio: the ten real 8 kHz Zeroth-Korean clips and the synthetic 8 kHz voicemails from
../shared/speech, repeated until there are at least --minutes of it (default 10). Both sides
run as fresh processes that load the model once, so each time includes one model load:

    pipeline  the real console script: hotline transcribe --json FILE…  (ffprobe + ffmpeg
              decoding, 8 → 16 kHz interpolation, words, JSON, extraction)
    bare      python: wave module → KaldiRecognizer(model, 8000) → AcceptWaveform(4000 frames)

The audio is split into --rounds parts; each round runs both sides on its part, alternating
which goes first, so a change in machine load hits both alike. Prints wall time, real-time
factor (wall / audio) of each, their ratio (first bar <= 1.2, goal <= 1.05), and the CER of
each on the Zeroth clips (spaces and punctuation removed). Not a test: nothing is asserted.

    .venv/bin/python bench/transcribe.py               # 10 minutes of audio, 4 rounds
    .venv/bin/python bench/transcribe.py --minutes 2   # a quick check
    .venv/bin/python bench/transcribe.py --worker      # also `hotline worker` 1 vs 2 processes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT.parent / "shared" / "speech"
HOTLINE = Path(sys.executable).parent / "hotline"
sys.path.insert(0, str(ROOT))

BARE = r"""
import json, sys, time, wave
import vosk
vosk.SetLogLevel(-1)
model = vosk.Model(sys.argv[1])
for path in sys.argv[2:]:
    with wave.open(path, "rb") as wf:
        rec = vosk.KaldiRecognizer(model, wf.getframerate())
        rec.SetWords(True)
        parts = []
        while True:
            data = wf.readframes(4000)
            if not data:
                break
            if rec.AcceptWaveform(data):
                parts.append(json.loads(rec.Result())["text"])
        parts.append(json.loads(rec.FinalResult())["text"])
    print(json.dumps({"file": path, "text": " ".join(p for p in parts if p)}, ensure_ascii=False), flush=True)
"""


def duration(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def references() -> dict[str, str]:
    refs = {}
    for line in (SPEECH / "references.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        f, _lang, _kind, ref, *_ = line.split("\t")
        refs[str(SPEECH / f)] = ref
    return refs


def audio_list(minutes: float) -> tuple[list[Path], float]:
    base = sorted((SPEECH / "ko-zeroth").glob("*_8k.wav")) + sorted(SPEECH.glob("synth-zh-vm*_8k.wav"))
    files: list[Path] = []
    total = 0.0
    while total < minutes * 60:
        for f in base:
            files.append(f)
            total += duration(f)
    return files, total


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, list[dict[str, object]]]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} … exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return elapsed, [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]


def corpus_cer(outputs: list[dict[str, object]], refs: dict[str, str]) -> float | None:
    from transcription.engine import cer

    edits = total = 0
    seen = set()
    for o in outputs:
        f = str(o["file"])
        if f in seen or "/ko-zeroth/" not in f or f not in refs:
            continue
        seen.add(f)
        e, n = cer(refs[f], str(o["text"]))
        edits += e
        total += n
    return edits / total if total else None


def worker_throughput(args: argparse.Namespace) -> None:
    """`hotline worker` with 1 and with 2 processes on the same queue (issue 3, second half).

    Lives in bench/worker.py (the jobs work); run here with --worker so one command gives
    every figure of the issue. Its own --help has the details.
    """
    if not (ROOT / "transcription" / "worker.py").exists() or not (ROOT / "bench" / "worker.py").exists():
        print("worker throughput: transcription/worker.py or bench/worker.py not there yet; skipped")
        return
    cmd = [sys.executable, str(ROOT / "bench" / "worker.py"), "--minutes", str(args.minutes)]
    if args.model:
        cmd += ["--model", str(args.model)]
    print("\n== hotline worker, 1 vs 2 processes (bench/worker.py) ==", flush=True)
    subprocess.run(cmd, check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="audio per side, in minutes (default 10)")
    ap.add_argument("--rounds", type=int, default=4, help="split the audio into this many alternating rounds (default 4)")
    ap.add_argument("--model", type=Path, help="Vosk model folder (default: as `hotline models path` finds it)")
    ap.add_argument("--worker", action="store_true", help="also measure `hotline worker` with 1 and 2 processes")
    args = ap.parse_args()

    from config.settings import load_settings
    from transcription.engine import locate_model

    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    model = args.model or locate_model(load_settings(None).transcription)
    files, audio = audio_list(args.minutes)
    refs = references()
    print(f"model {model}\naudio {audio / 60:.1f} min in {len(files)} files (8 kHz), {args.rounds} round(s)", flush=True)

    n = max(1, args.rounds)
    parts = [files[i::n] for i in range(n)]
    t_pipe = t_bare = 0.0
    per_round: list[float] = []
    out_pipe: list[dict[str, object]] = []
    out_bare: list[dict[str, object]] = []
    for i, part in enumerate(parts):
        names = [str(f) for f in part]
        sides = [
            ("bare", [sys.executable, "-c", BARE, str(model), *names]),
            ("pipeline", [str(HOTLINE), "transcribe", "--json", "--model", str(model), *names]),
        ]
        if i % 2:
            sides.reverse()
        times: dict[str, float] = {}
        for side, cmd in sides:
            el, out = run(cmd, env)
            times[side] = el
            print(f"round {i + 1}: {side:<8} {el:7.1f} s for {sum(duration(f) for f in part):.0f} s of audio", flush=True)
            if side == "bare":
                t_bare += el
                out_bare += out
            else:
                t_pipe += el
                out_pipe += out
        per_round.append(times["pipeline"] / times["bare"])

    cer_pipe, cer_bare = corpus_cer(out_pipe, refs), corpus_cer(out_bare, refs)
    ratio = t_pipe / t_bare
    print("\n== hotline transcribe vs bare Vosk loop ==")
    print(f"{'':<10}{'wall s':>9}{'RTF':>8}{'CER ko-zeroth 8k':>19}")
    print(f"{'pipeline':<10}{t_pipe:9.1f}{t_pipe / audio:8.3f}{cer_pipe:19.3f}")
    print(f"{'bare':<10}{t_bare:9.1f}{t_bare / audio:8.3f}{cer_bare:19.3f}")
    verdict = "goal met" if ratio <= 1.05 else "first bar met" if ratio <= 1.2 else "ABOVE the 1.2 bar"
    print(f"time ratio pipeline / bare = {ratio:.3f}  ({verdict}; bar <= 1.2, goal <= 1.05)")
    print("per-round ratios (spread = machine load noise): " + ", ".join(f"{r:.3f}" for r in per_round))

    if args.worker:
        worker_throughput(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
