"""`hotline campaigns list|show|preview|dnc add|remove|import`."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("campaigns", help="return-visit campaigns and the do-not-call list",
                       description="Return-visit campaigns: list, progress, target preview, do-not-call list.")
    csub = p.add_subparsers(dest="campaigns_command", metavar="ACTION", required=True)
    ls = csub.add_parser("list", help="list campaigns with their progress")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_list)
    show = csub.add_parser("show", help="one campaign: settings, progress, open follow-ups")
    show.add_argument("campaign", help="id or name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)
    pv = csub.add_parser("preview", help="who would be called, and how many are dropped and why",
                         description="Select cases replied or closed in [--since, --until) (local dates, centre's zone), "
                                     "or the case numbers of a CSV file, and show who would be called.")
    pv.add_argument("--since", type=_date, help="first day (YYYY-MM-DD)")
    pv.add_argument("--until", type=_date, help="day after the last (YYYY-MM-DD)")
    pv.add_argument("--status", action="append", choices=["replied", "closed"], help="repeatable; default both")
    pv.add_argument("--category")
    pv.add_argument("--unit")
    pv.add_argument("--csv", type=Path, metavar="FILE", help="case numbers, one per row")
    pv.add_argument("--json", action="store_true")
    pv.set_defaults(handler=_preview)
    dnc = csub.add_parser("dnc", help="the do-not-call list")
    dsub = dnc.add_subparsers(dest="dnc_command", metavar="ACTION", required=True)
    add = dsub.add_parser("add", help="add a number")
    add.add_argument("phone")
    add.add_argument("--reason", default="added by staff")
    add.set_defaults(handler=_dnc_add)
    rm = dsub.add_parser("remove", help="remove a number")
    rm.add_argument("phone")
    rm.set_defaults(handler=_dnc_remove)
    imp = dsub.add_parser("import", help="import a CSV of phone[,reason] rows; bad rows are reported by line")
    imp.add_argument("file", type=Path)
    imp.add_argument("--reason", default="imported")
    imp.set_defaults(handler=_dnc_import)


def _date(v: str) -> dt.date:
    try:
        return dt.date.fromisoformat(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {v!r}") from None


def _read(path: Path) -> str:
    from campaigns.errors import CampaignError

    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CampaignError(f"cannot read {path}: {e}") from None


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")


def _list(args: argparse.Namespace, ctx: Any) -> int:
    from sqlalchemy import select

    from campaigns.lifecycle import progress
    from campaigns.models import Campaign

    with ctx.sessions() as s:
        rows = [progress(s, c) | {"id": c.id} for c in s.scalars(select(Campaign).order_by(Campaign.id))]
    if args.json:
        _print_json(rows)
    elif not rows:
        print("no campaigns")
    for r in [] if args.json else rows:
        print(f"{r['id']:>4}  {r['campaign']}  {r['state']}  done {r['done']}  pending {r['pending']}  "
              f"failed {r['failed']}  dropped {r['dropped']}  contact rate {r['contact_rate']}")
    return 0


def _show(args: argparse.Namespace, ctx: Any) -> int:
    from sqlalchemy import select

    from campaigns.lifecycle import get_campaign, progress
    from campaigns.models import FollowUp

    with ctx.sessions() as s:
        c = get_campaign(s, args.campaign)
        info = {
            "id": c.id, "name": c.name, "purpose": c.purpose, "state": c.state, "windows": c.windows, "days": c.days,
            "timezone": c.timezone, "max_attempts": c.max_attempts, "retry_minutes": c.retry_minutes,
            "concurrency": c.concurrency, "caller_id": c.caller_id, "prompt_script": c.prompt_script,
            "recurrence": c.recurrence, "selection": c.selection, "progress": progress(s, c),
            "follow_ups": [
                {"case_number": f.case_number, "phone": f.phone, "reason": f.reason}
                for f in s.scalars(select(FollowUp).where(FollowUp.campaign_id == c.id, FollowUp.done_at.is_(None)))
            ],
        }
    if args.json:
        _print_json(info)
        return 0
    for k, v in info.items():
        print(f"{k}: {v}")
    return 0


def _preview(args: argparse.Namespace, ctx: Any) -> int:
    from campaigns.errors import CampaignError
    from campaigns.targets import SELECT_STATUSES, preview, read_case_numbers_csv, select_cases

    tz = ctx.settings.calendar.tz
    errors: list[Any] = []
    with ctx.sessions() as s:
        if args.csv is not None:
            if args.since or args.until:
                raise CampaignError("give either --csv or --since/--until, not both")
            cases, errors = read_case_numbers_csv(s, _read(args.csv))
        else:
            if not (args.since and args.until):
                raise CampaignError("give --since and --until (or --csv)")
            cases = select_cases(
                s, since=dt.datetime.combine(args.since, dt.time(), tz), until=dt.datetime.combine(args.until, dt.time(), tz),
                statuses=args.status or SELECT_STATUSES, category=args.category, unit=args.unit,
            )
        result = preview(s, cases)
    if args.json:
        _print_json(result.as_dict() | {"csv_errors": [str(e) for e in errors]})
    else:
        for e in errors:
            print(f"{args.csv}: {e}", file=sys.stderr)
        print(f"{len(result.callable)} to call, {len(result.dropped)} dropped")
        for reason, n in sorted(result.drop_counts().items()):
            print(f"  {reason}: {n}")
    return 1 if errors else 0


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _dnc_add(args: argparse.Namespace, ctx: Any) -> int:
    from campaigns.targets import add_do_not_call
    from config.db import transaction

    with transaction(ctx.sessions) as s:
        entry, created = add_do_not_call(s, args.phone, reason=args.reason, added_by=_actor())
        print(f"{entry.phone} {'added' if created else 'already on the list'}")
    return 0


def _dnc_remove(args: argparse.Namespace, ctx: Any) -> int:
    from campaigns.errors import NotFound
    from campaigns.targets import remove_do_not_call
    from config.db import transaction

    with transaction(ctx.sessions) as s:
        if not remove_do_not_call(s, args.phone):
            raise NotFound(f"{args.phone} is not on the do-not-call list")
    print("removed")
    return 0


def _dnc_import(args: argparse.Namespace, ctx: Any) -> int:
    from campaigns.targets import import_do_not_call
    from config.db import transaction

    with transaction(ctx.sessions) as s:
        added, errors = import_do_not_call(s, _read(args.file), added_by=_actor(), default_reason=args.reason)
    for e in errors:
        print(f"{args.file}: {e}", file=sys.stderr)
    print(f"{added} added, {len(errors)} bad rows")
    return 1 if errors else 0
