"""Handlers for `hotline transcribe` and `hotline models list|path|verify` (no database needed)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from config.context import Context
from config.errors import HotlineError
from transcription.engine import (
    AudioError,
    Engine,
    ModelError,
    TranscriptResult,
    check_model,
    discover_models,
    locate_model,
    model_sample_rate,
    probe,
)

# ---------------------------------------------------------------------------------------
# hotline transcribe


def _extract(text: str) -> tuple[list[str], str | None]:
    try:
        from transcription import extract as ex
    except ImportError:
        return [], None
    fn = getattr(ex, "extract", None)
    if fn is None:
        return [], None
    found = fn(text)
    return list(found.phones), found.address


def result_json(path: Path, r: TranscriptResult) -> dict[str, Any]:
    phones, address = _extract(r.text)
    conf = r.confidence
    rtf = r.rtf
    return {
        "file": str(path),
        "duration": round(r.duration, 3),
        "text": r.text,
        "words": [{"word": w.word, "start": w.start, "end": w.end, "conf": round(w.conf, 4)} for w in r.words],
        "confidence": round(conf, 4) if conf is not None else None,
        "phones": phones,
        "address": address,
        "model": r.model,
        "rtf": round(rtf, 4) if rtf is not None else None,
    }


def _progress_wanted() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def transcribe_handler(args: argparse.Namespace, ctx: Context) -> int:
    ts = ctx.settings.transcription
    model_path = locate_model(ts, args.model)
    engine = Engine(model_path, feed_rate=ts.feed_rate)
    files: list[Path] = args.files
    several = len(files) > 1
    failed = 0

    bar = None
    if _progress_wanted():
        from tqdm import tqdm

        total = 0.0
        for f in files:
            try:
                total += probe(f).duration or 0.0
            except AudioError:
                pass  # reported when its turn comes
        import shutil

        width = shutil.get_terminal_size((100, 24)).columns or 100
        bar = tqdm(total=round(total, 1), unit="s", unit_scale=False, file=sys.stderr, ncols=width,
                   bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")

    def say_error(msg: str) -> None:
        if bar is not None:
            bar.write(f"hotline: error: {msg}", file=sys.stderr)
        else:
            print(f"hotline: error: {msg}", file=sys.stderr, flush=True)

    def out(line: str) -> None:
        if bar is not None:
            bar.clear()
        print(line, flush=True)
        if bar is not None:
            bar.refresh()

    try:
        for i, f in enumerate(files, 1):
            base = bar.n if bar is not None else 0.0
            if bar is not None:
                bar.set_description_str(f"file {i}/{len(files)} {f.name}")

            def progress(done: float, base: float = base) -> None:
                if bar is not None:
                    bar.n = round(min(base + done, bar.total or base + done), 1)
                    bar.refresh()

            try:
                r = engine.transcribe(f, channel=args.channel, on_progress=progress if bar is not None else None)
            except AudioError as e:
                failed += 1
                say_error(str(e))
                if args.json:
                    out(json.dumps({"file": str(f), "error": str(e)}, ensure_ascii=False))
                continue
            if args.json:
                out(json.dumps(result_json(f, r), ensure_ascii=False))
            else:
                if several:
                    out(f"==> {f} <==")
                out(r.text)
    finally:
        if bar is not None:
            bar.close()
    if failed:
        print(f"hotline: {failed} of {len(files)} file(s) failed", file=sys.stderr)
        return 1
    return 0


def register_transcribe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transcribe",
        help="transcribe audio files with the Vosk model (no database needed)",
        description=(
            "Transcribe audio files offline with Vosk. Any format ffmpeg reads; 8 kHz telephone audio is "
            "brought to the model's rate as [transcription] feed_rate says. Shows a progress bar on a "
            "terminal. A file that cannot be read is reported and skipped; the exit code is then 1."
        ),
    )
    p.add_argument("--model", type=Path, metavar="PATH", help="Vosk model folder (default: as `hotline models path`)")
    p.add_argument(
        "--json", action="store_true",
        help='one JSON object per line per file: file, duration, text, words [{word,start,end,conf}], '
        'confidence, phones, address, model, rtf (a failed file: {"file", "error"})',
    )
    p.add_argument("--channel", type=int, metavar="N", help="transcribe only channel N (from 0) of a multi-channel file")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio files")
    p.set_defaults(handler=transcribe_handler)


# ---------------------------------------------------------------------------------------
# hotline models


@dataclass(frozen=True)
class ChecksumEntry:
    sha256: str
    size: int
    path: str


def known_checksum_lists() -> dict[str, Traversable]:
    base = resources.files("transcription.checksums")
    return {p.name[: -len(".sha256")]: p for p in base.iterdir() if p.name.endswith(".sha256")}


def parse_checksums(text: str) -> list[ChecksumEntry]:
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sha, size, path = line.split(None, 2)
        entries.append(ChecksumEntry(sha.lower(), int(size), path))
    return entries


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _pick_checksums(folder: Path, choice: str | None) -> tuple[str, list[ChecksumEntry]] | None:
    known = known_checksum_lists()
    if choice:
        if choice in known:
            return choice, parse_checksums(known[choice].read_text(encoding="utf-8"))
        p = Path(choice)
        if p.is_file():
            return p.name, parse_checksums(p.read_text(encoding="utf-8"))
        raise HotlineError(f"--checksums {choice}: neither a known model ({', '.join(sorted(known)) or 'none'}) nor a file")
    name = folder.resolve().name
    for key in sorted(known, key=len, reverse=True):
        if name == key or name.startswith(key):
            return key, parse_checksums(known[key].read_text(encoding="utf-8"))
    return None


def verify_handler(args: argparse.Namespace, ctx: Context) -> int:
    folder: Path = args.path
    bad = 0
    problems = check_model(folder)
    for p in problems:
        print(f"FAIL structure: {p}")
    bad += len(problems)
    if not folder.is_dir():
        print(f"{folder}: not usable")
        return 1
    picked = _pick_checksums(folder, args.checksums)
    if picked is None:
        print(f"{folder}: no published checksums known for this model "
              f"(known: {', '.join(sorted(known_checksum_lists())) or 'none'}; use --checksums FILE); structure checked only")
    else:
        name, entries = picked
        listed = set()
        for e in entries:
            listed.add(e.path)
            f = folder / e.path
            if not f.is_file():
                print(f"FAIL missing: {e.path}")
                bad += 1
                continue
            size = f.stat().st_size
            if size != e.size:
                print(f"FAIL size: {e.path}: {size} bytes, published {e.size}")
                bad += 1
                continue
            if _sha256(f) != e.sha256:
                print(f"FAIL sha256: {e.path}: content differs from the published file")
                bad += 1
                continue
            if args.verbose:
                print(f"ok   {e.path}")
        extra = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
                       and p.relative_to(folder).as_posix() not in listed)
        for x in extra:
            print(f"note extra file not in the published list: {x}")
        print(f"{folder}: {len(entries)} files checked against {name}: "
              + ("all match" if bad == 0 else f"{bad} problem(s)"))
    if bad:
        print(f"{folder}: NOT OK", file=sys.stderr)
        return 1
    print(f"{folder}: OK ({model_sample_rate(folder)} Hz model)")
    return 0


def list_handler(args: argparse.Namespace, ctx: Context) -> int:
    ts = ctx.settings.transcription
    cands = discover_models(ts)
    try:
        chosen: Path | None = locate_model(ts)
        why = None
    except ModelError as e:
        chosen, why = None, str(e)
    if args.json:
        print(json.dumps({
            "models": [{"path": str(c.path), "source": c.source, "ok": c.ok, "problems": c.problems,
                        "used": chosen is not None and c.path == chosen} for c in cands],
            "used": str(chosen) if chosen else None,
            "models_dir": str(ts.models_dir),
            "model_path": str(ts.model_path) if ts.model_path else None,
        }, ensure_ascii=False))
        return 0 if chosen else 1
    print(f"model_path setting: {ts.model_path or '(not set)'}")
    print(f"models_dir:         {ts.models_dir.resolve()}{'' if ts.models_dir.is_dir() else ' (does not exist)'}")
    if not cands:
        print("no model folders found")
    for c in cands:
        mark = "*" if chosen is not None and c.path == chosen else " "
        state = "ok" if c.ok else "BROKEN: " + "; ".join(c.problems)
        print(f"{mark} {c.source:<24} {c.path}  [{state}]")
    if chosen:
        print(f"* = used (feed_rate {ts.feed_rate})")
        return 0
    print(f"hotline: error: {why}", file=sys.stderr)
    return 1


def path_handler(args: argparse.Namespace, ctx: Context) -> int:
    print(locate_model(ctx.settings.transcription))
    return 0


def register_models(sub: argparse._SubParsersAction) -> None:
    mp = sub.add_parser(
        "models",
        help="find and check Vosk speech models",
        description="Where the Vosk model comes from: [transcription] model_path, else the first model folder "
        "under [transcription] models_dir, else installed vosk_model_* packages.",
    )
    ms = mp.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    p = ms.add_parser("list", help="show every model found, where, and which would be used")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=list_handler)
    p = ms.add_parser("path", help="print the folder of the model that would be used")
    p.set_defaults(handler=path_handler)
    p = ms.add_parser(
        "verify",
        help="check a model folder's structure and, for known models, every file's SHA-256",
        description="Check that PATH is a loadable Vosk model folder (no Git LFS pointers, am/final.mdl, "
        "conf/mfcc.conf, a decoding graph) and, when its published checksums are known (by folder name, "
        "e.g. vosk-model-small-cn-0.22, or --checksums), each file's size and SHA-256. Exit 1 on any problem.",
    )
    p.add_argument("path", type=Path, metavar="PATH", help="model folder")
    p.add_argument("--checksums", metavar="NAME|FILE", help="published list to check against (a known model name or a .sha256 file)")
    p.add_argument("-v", "--verbose", action="store_true", help="list every file that matches too")
    p.set_defaults(handler=verify_handler)
