"""`hotline cases list`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cases", help="list cases", description="Cases in the handling queue.")
    csub = p.add_subparsers(dest="cases_command", metavar="ACTION", required=True)
    ls = csub.add_parser(
        "list",
        help="list cases, newest first",
        description="List cases, newest received first: a table, or a JSON list with --json. "
        "Times are shown in the centre's time zone ([calendar] timezone).",
    )
    ls.add_argument("--status", metavar="S", help="only cases in this status (draft, accepted, …)")
    ls.add_argument("--json", action="store_true", help="print a JSON list of case objects")
    ls.add_argument("--limit", type=_limit, default=50, metavar="N", help="at most N cases (default 50)")
    ls.set_defaults(handler=_list)


def _limit(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def case_dict(case: Any, tz: Any) -> dict[str, Any]:
    def local(t: Any) -> str | None:
        return t.astimezone(tz).isoformat() if t is not None else None

    return {
        "id": case.id,
        "number": case.number,
        "status": case.status,
        "channel": case.channel,
        "received_at": local(case.received_at),
        "caller_number": case.caller_number,
        "complainant_phone": case.complainant_phone,
        "complainant_name": case.complainant_name,
        "address": case.address,
        "content": case.content,
        "extracted": case.extracted,
        "confidential": case.confidential,
        "source_recording_id": case.source_recording_id,
        "source_transcript_id": case.source_transcript_id,
        "created_at": local(case.created_at),
    }


def _list(args: argparse.Namespace, ctx: Any) -> int:
    from sqlalchemy import select

    from cases.models import Case

    tz = ctx.settings.calendar.tz
    q = select(Case).order_by(Case.received_at.desc(), Case.id.desc()).limit(args.limit)
    if args.status:
        q = q.where(Case.status == args.status)
    with ctx.sessions() as s:
        cases = list(s.scalars(q))
    if args.json:
        json.dump([case_dict(c, tz) for c in cases], sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    if not cases:
        print("no cases" + (f" with status {args.status}" if args.status else ""))
        return 0
    header = ("NUMBER", "STATUS", "CHANNEL", "RECEIVED", "CALLER", "PHONE", "CONTENT")
    rows = [
        (
            c.number,
            c.status,
            c.channel,
            c.received_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
            c.caller_number or "-",
            c.complainant_phone or "-",
            _clip(c.content, 40),
        )
        for c in cases
    ]
    widths = [max(_width(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    for r in (header, *rows):
        cells = [r[i] + " " * (widths[i] - _width(r[i])) for i in range(len(widths))]
        print("  ".join([*cells, r[-1]]))
    return 0


def _width(s: str) -> int:
    """Display width: CJK and Hangul take two columns in a terminal."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def _clip(text: str, cols: int) -> str:
    text = " ".join((text or "").split())
    out, w = "", 0
    for ch in text:
        cw = _width(ch)
        if w + cw > cols - 1:
            return out + "…"
        out += ch
        w += cw
    return out
