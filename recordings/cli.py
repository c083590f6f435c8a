"""`hotline recordings import|verify|audit`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError

from config.calendar import in_zone
from config.context import Context
from config.db import DatabaseError, transaction
from recordings.access import chain_head, entry_dict, list_access, verify_chain
from recordings.audio import AudioError, sha256_file
from recordings.models import KINDS, Recording
from recordings.store import in_flight_keys, recover, store_recording, stored_keys



def register(sub: argparse._SubParsersAction) -> None:
    rec = sub.add_parser("recordings", help="the recording store: import audio, verify checksums")
    actions = rec.add_subparsers(dest="recordings_command", metavar="ACTION", required=True)

    p = actions.add_parser(
        "import",
        help="store audio files as recordings and queue their transcription",
        description="Convert each FILE (anything ffmpeg reads: WAV, μ-law/A-law WAV, MP3, AMR, M4A, …) to the "
        "canonical WAV (16-bit PCM mono, rate capped at [storage] max_sample_rate), store it with its SHA-256 "
        "and queue a transcription job. A bad file is reported and skipped; the exit code is then 1.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--caller", type=_caller, metavar="NUMBER", help="the caller's phone number, e.g. 13800138000")
    p.add_argument(
        "--received-at",
        type=_iso_datetime,
        metavar="ISO8601",
        help="when the message was received, e.g. 2026-12-06T21:15:00+08:00; without an offset it is taken "
        "in the centre's time zone ([calendar] timezone); default: now",
    )
    p.add_argument("--kind", choices=KINDS, default="voicemail", help="what the recording is (default: voicemail)")
    p.set_defaults(handler=_import)

    v = actions.add_parser(
        "verify",
        help="re-hash every stored recording; report missing, altered and unknown files",
        description="Re-hashes every stored file against its row. Exit 1 if any file is missing or altered, "
        "or a file lies in the store without a row.",
    )
    v.add_argument("--json", action="store_true", help="print one JSON object with the findings")
    v.set_defaults(handler=_verify)

    audit = actions.add_parser(
        "audit",
        help="the access log of plays and downloads: list it, verify its hash chain",
        description="Every play, download, delete or export of a recording is logged in a chain of SHA-256 "
        "hashes, so an edited, deleted or inserted entry shows (see recordings/access.py).",
    )
    audit_actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    av = audit_actions.add_parser(
        "verify",
        help="check every entry's hash and link; exit 1 naming each broken one",
        description="Recompute every entry's hash and check it links to the one before and that the chain "
        "head matches the newest entry. Prints the head (seq and hash): keep a copy elsewhere; a later "
        "verify must still show that hash at that seq.",
    )
    av.add_argument("--json", action="store_true", help="print one JSON object with the head and the problems")
    av.set_defaults(handler=_audit_verify)
    al = audit_actions.add_parser("list", help="show access entries, newest first")
    al.add_argument("--recording", type=_positive_int, metavar="ID", help="only this recording's entries")
    al.add_argument("--limit", type=_positive_int, default=50, metavar="N", help="at most N entries (default 50)")
    al.add_argument("--json", action="store_true", help="print one JSON object with the entries")
    al.set_defaults(handler=_audit_list)


def _caller(value: str) -> str:
    number = re.sub(r"[\s\-().]", "", value)
    if not re.fullmatch(r"\+?\d{3,20}", number):
        raise argparse.ArgumentTypeError(f"{value!r} is not a phone number (digits, optional leading +)")
    return number


def _positive_int(value: str) -> int:
    if not re.fullmatch(r"[0-9]{1,18}", value) or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return int(value)


def _iso_datetime(value: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 date-time (e.g. 2026-12-06T21:15:00 or 2026-12-06T21:15:00+08:00)"
        ) from None


@contextmanager
def _database(ctx: Context) -> Iterator[None]:
    """Turn a database that goes away mid-command into a clear message instead of a traceback."""
    try:
        yield
    except (OperationalError, InterfaceError) as e:
        url = ctx.engine.url.render_as_string()
        raise DatabaseError(f"lost the database at {url}: {getattr(e, 'orig', e)}") from None


def _recover(ctx: Context) -> None:
    with transaction(ctx.sessions) as s:
        n = recover(s, ctx.settings.storage)
    if n:
        print(f"recovered {n} interrupted import(s) left in the store", file=sys.stderr)


def _import(args: argparse.Namespace, ctx: Context) -> int:
    received_at = in_zone(args.received_at, ctx.settings.calendar.tz) if args.received_at else None
    hooks: list[Callable[..., Any]] = list(ctx.hooks.get("recording_stored", []))
    failed = 0
    with _database(ctx):
        _recover(ctx)
        for f in args.files:
            try:
                with transaction(ctx.sessions) as s:
                    rec = store_recording(
                        s,
                        ctx.settings.storage,
                        f,
                        kind=args.kind,
                        caller=args.caller,
                        received_at=received_at,
                        hooks=hooks,
                    )
            except AudioError as e:
                failed += 1
                print(f"FAILED {e}", flush=True)
                continue
            print(
                f"stored {f}: recording {rec.id} ({rec.duration:.1f} s, {rec.sample_rate} Hz, "
                f"{rec.bytes} bytes, sha256 {rec.sha256[:12]}…, key {rec.storage_key})",
                flush=True,
            )
    if failed:
        print(f"{failed} of {len(args.files)} file(s) not imported", file=sys.stderr)
    return 1 if failed else 0


def _verify(args: argparse.Namespace, ctx: Context) -> int:
    from tqdm import tqdm

    storage = ctx.settings.storage
    root = Path(storage.root)
    missing: list[dict[str, Any]] = []
    altered: list[dict[str, Any]] = []
    with _database(ctx):
        _recover(ctx)
        with ctx.sessions() as s:
            rows = s.execute(
                select(Recording.id, Recording.storage_key, Recording.sha256, Recording.bytes)
                .where(Recording.deleted_at.is_(None))
                .order_by(Recording.id)
            ).all()
    known = {r.storage_key for r in rows}
    total = sum(r.bytes for r in rows)
    bar = tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc="verifying",
        disable=args.json or not sys.stderr.isatty(),
        file=sys.stderr,
    )
    ok = 0
    with bar:
        for r in rows:
            path = root / r.storage_key
            try:
                digest, size = sha256_file(path)
            except FileNotFoundError:
                missing.append({"id": r.id, "key": r.storage_key})
                bar.update(r.bytes)
                continue
            except OSError as e:
                missing.append({"id": r.id, "key": r.storage_key, "error": e.strerror})
                bar.update(r.bytes)
                continue
            bar.update(r.bytes)
            if digest != r.sha256 or size != r.bytes:
                altered.append(
                    {"id": r.id, "key": r.storage_key, "expected_sha256": r.sha256, "sha256": digest,
                     "expected_bytes": r.bytes, "bytes": size}
                )  # fmt: skip
            else:
                ok += 1
    busy = in_flight_keys(storage)
    orphans = [k for k in stored_keys(storage) if k not in known and k not in busy]
    bad = bool(missing or altered or orphans)
    if args.json:
        print(
            json.dumps(
                {"root": str(root), "checked": len(rows), "bytes": total, "ok": ok, "missing": missing,
                 "altered": altered, "orphans": orphans, "in_flight": sorted(busy)},
                ensure_ascii=False,
            )  # fmt: skip
        )
        return 1 if bad else 0
    for m in missing:
        print(f"MISSING recording {m['id']}: {root / m['key']}" + (f" ({m['error']})" if "error" in m else ""))
    for a in altered:
        print(
            f"ALTERED recording {a['id']}: {root / a['key']} (sha256 {a['sha256'][:12]}…, {a['bytes']} bytes; "
            f"stored {a['expected_sha256'][:12]}…, {a['expected_bytes']} bytes)"
        )
    for k in orphans:
        print(f"UNKNOWN file without a recording row: {root / k}")
    print(
        f"checked {len(rows)} recording(s), {total} bytes: {ok} ok, {len(missing)} missing, "
        f"{len(altered)} altered, {len(orphans)} unknown file(s)"
    )
    return 1 if bad else 0


def _audit_verify(args: argparse.Namespace, ctx: Context) -> int:
    with _database(ctx), ctx.sessions() as s:
        problems = verify_chain(s)
        head = chain_head(s)
    if args.json:
        body = {"ok": not problems, "head": {"seq": head.seq, "hash": head.last_hash},
                "problems": [p.as_dict() for p in problems]}  # fmt: skip
        print(json.dumps(body, ensure_ascii=False))
    else:
        for p in problems:
            print(f"BROKEN {p.message}")
        state = f"{len(problems)} problem(s)" if problems else "intact"
        print(f"access log {state}; head seq {head.seq} hash {head.last_hash}")
    return 1 if problems else 0


def _audit_list(args: argparse.Namespace, ctx: Context) -> int:
    tz = ctx.settings.calendar.tz
    with _database(ctx), ctx.sessions() as s:
        entries = list_access(s, recording_id=args.recording, limit=args.limit)
    if args.json:
        print(json.dumps({"entries": [entry_dict(e) for e in entries]}, ensure_ascii=False))
        return 0
    for e in entries:
        print(f"{e.seq:>7}  {e.at.astimezone(tz):%Y-%m-%d %H:%M:%S}  {e.action:8}  recording {e.recording_id:<6}  "
              f"{e.actor:16}  {e.client or '-':15}  {e.range or '-'}")  # fmt: skip
    if not entries:
        print("no access entries")
    return 0
