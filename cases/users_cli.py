"""`hotline users add|list|disable|enable|password|token`: staff accounts from the command line.

The first admin of a new centre is created here; later ones may also use the admin's users
page and /api/v1/users (api/users.py), which call the same cases/users.py functions. Passwords never go on the command line
(other users see argv in `ps`, and shells keep history): they are typed twice at a prompt,
or read from the first line of stdin with --password-stdin for scripts.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from cases.users import ROLES
from config.db import transaction
from config.errors import HotlineError


class UsageError(HotlineError):
    """Bad usage that argparse cannot see by itself (exit code 2, like argparse's own)."""

    exit_code = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="staff accounts", description="Staff accounts, roles and API tokens.")
    usub = p.add_subparsers(dest="users_command", metavar="ACTION", required=True)

    add = usub.add_parser(
        "add",
        help="create a user",
        description="Create a staff user. The password is asked twice at the terminal, or read from the "
        "first line of stdin with --password-stdin; it is never taken from the command line.",
    )
    add.add_argument("username", metavar="USERNAME", help="1-64 of a-z 0-9 . _ - (stored in lower case)")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--unit", metavar="U", help="the responsible unit (required for unit_handler, only for it)")
    add.add_argument("--sip-uri", metavar="URI", help="an operator's phone or extension, e.g. sip:8001@pbx.local")
    add.add_argument("--display-name", metavar="N", help="the name shown on pages (default: the username)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add.set_defaults(handler=_add)

    ls = usub.add_parser("list", help="list users", description="List users: a table, or JSON with --json.")
    ls.add_argument("--json", action="store_true", help="print a JSON list")
    ls.set_defaults(handler=_list)

    dis = usub.add_parser(
        "disable",
        help="disable a user",
        description="Disable a user: logins are refused, web sessions end at their next request and "
        "every API token of the user is revoked.",
    )
    dis.add_argument("username", metavar="USERNAME")
    dis.set_defaults(handler=_set_active, active=False)

    en = usub.add_parser("enable", help="enable a disabled user again (old tokens stay revoked)")
    en.add_argument("username", metavar="USERNAME")
    en.set_defaults(handler=_set_active, active=True)

    pw = usub.add_parser(
        "password",
        help="reset a user's password",
        description="Set a new password for the user (asked twice, or --password-stdin); the user's API "
        "tokens are revoked.",
    )
    pw.add_argument("username", metavar="USERNAME")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    pw.set_defaults(handler=_password)

    tok = usub.add_parser(
        "token",
        help="print a new API token for a user",
        description="Print a new bearer token for the user (for scripts); only its hash is stored, "
        "so it cannot be shown again.",
    )
    tok.add_argument("username", metavar="USERNAME")
    tok.add_argument("--days", type=_days, metavar="N", help="lifetime in days (default: [api] token_days)")
    tok.set_defaults(handler=_token)


def _days(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {v!r}") from None
    if not 1 <= n <= 3650:
        raise argparse.ArgumentTypeError("must be from 1 to 3650")
    return n


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        return password[:-1] if password.endswith("\r") else password
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask the password on: pipe it in with --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise HotlineError("the two passwords differ; nothing was changed")
    return first


def _unit_code(ctx: Any, given: str) -> str:
    """A unit handler's unit is a [cases] units code, the value Case.unit holds (a name is taken too)."""
    from cases.users import UserError, unit_code

    try:
        return unit_code(ctx.settings.cases.unit_names(), given)
    except UserError as e:
        raise UsageError(f"--unit {e}") from None


def _add(args: argparse.Namespace, ctx: Any) -> int:
    from cases.users import check_password_quality, create_user

    if args.role == "unit_handler" and not args.unit:
        raise UsageError("--unit is required for a unit_handler")
    if args.unit and args.role != "unit_handler":
        raise UsageError("--unit is only for a unit_handler")
    unit = _unit_code(ctx, args.unit) if args.unit else None
    password = read_password(args.password_stdin)
    check_password_quality(password)
    with transaction(ctx.sessions) as s:
        user = create_user(
            s, args.username, password, args.role, unit=unit, sip_uri=args.sip_uri, display_name=args.display_name
        )
        print(f"created {user.role} {user.username}" + (f" of {user.unit}" if user.unit else ""))
    return 0


def user_dict(u: Any, tz: Any) -> dict[str, Any]:
    return {
        "username": u.username,
        "display_name": u.display_name,
        "role": u.role,
        "unit": u.unit,
        "sip_uri": u.sip_uri,
        "active": u.active,
        "created_at": u.created_at.astimezone(tz).isoformat(),
        "last_login_at": u.last_login_at.astimezone(tz).isoformat() if u.last_login_at else None,
    }


def _list(args: argparse.Namespace, ctx: Any) -> int:
    from cases.cli import _width
    from cases.users import list_users

    tz = ctx.settings.calendar.tz
    with ctx.sessions() as s:
        users = [user_dict(u, tz) for u in list_users(s)]
    if args.json:
        json.dump(users, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    if not users:
        print("no users: create the first admin with `hotline users add NAME --role admin`")
        return 0
    header = ("USERNAME", "ROLE", "UNIT", "SIP", "ACTIVE", "LAST LOGIN", "NAME")
    rows = [
        (
            u["username"],
            u["role"],
            u["unit"] or "-",
            u["sip_uri"] or "-",
            "yes" if u["active"] else "no",
            (u["last_login_at"] or "-")[:16].replace("T", " "),
            u["display_name"],
        )
        for u in users
    ]
    widths = [max(_width(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    for r in (header, *rows):
        print("  ".join([*(r[i] + " " * (widths[i] - _width(r[i])) for i in range(len(widths))), r[-1]]))
    return 0


def _set_active(args: argparse.Namespace, ctx: Any) -> int:
    from cases.users import set_active

    with transaction(ctx.sessions) as s:
        user = set_active(s, args.username, args.active)
        print(f"{'enabled' if args.active else 'disabled'} {user.username}")
    return 0


def _password(args: argparse.Namespace, ctx: Any) -> int:
    from cases.users import check_password_quality, set_password

    password = read_password(args.password_stdin)
    check_password_quality(password)
    with transaction(ctx.sessions) as s:
        user = set_password(s, args.username, password)
        print(f"password reset for {user.username}; its API tokens are revoked")
    return 0


def _token(args: argparse.Namespace, ctx: Any) -> int:
    from cases.users import get_user, issue_token

    with transaction(ctx.sessions) as s:
        token, row = issue_token(s, get_user(s, args.username), days=args.days or ctx.settings.api.token_days)
        expires = row.expires_at.astimezone(ctx.settings.calendar.tz).isoformat(timespec="minutes")
    print(token)
    print(f"expires {expires}; send it as 'Authorization: Bearer <token>'", file=sys.stderr)
    return 0
