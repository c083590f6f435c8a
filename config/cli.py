"""`hotline db …` and `hotline calendar …`."""

from __future__ import annotations

import argparse

from config.context import Context
from config.db import upgrade


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", metavar="ACTION", required=True)
    p = db.add_parser("upgrade", help="create or migrate the schema to this code's version")
    p.set_defaults(handler=_db_upgrade)

    from config import calendar_cli

    calendar_cli.register(sub)


def _db_upgrade(args: argparse.Namespace, ctx: Context) -> int:
    upgrade(ctx.settings.database.url)
    print(f"database at {ctx.engine.url.render_as_string()} is up to date")
    return 0
