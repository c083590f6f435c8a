"""The `hotline` command. Each domain package mounts its subcommands from its cli.py.

Exit codes: 0 ok, 1 failure (a HotlineError, with its message), 2 bad usage (argparse).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from config.context import Context
from config.errors import HotlineError
from config.logs import setup_logging
from config.settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    import campaigns.cli
    import cases.cli
    import cases.users_cli
    import config.cli
    import ivr.cli
    import recordings.cli
    import service.serve
    import transcription.cli

    parser = argparse.ArgumentParser(
        prog="hotline",
        description="12389 hotline service: SIP IVR, recordings, offline transcription and cases.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: $HOTLINE_CONFIG, else built-in defaults)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override [logging] level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (service.serve, config.cli, recordings.cli, transcription.cli, cases.cli, cases.users_cli, ivr.cli,
                   campaigns.cli):
        module.register(sub)
    return parser


def wire(ctx: Context) -> None:
    """Cross-package wiring that no domain package may do itself (see DESIGN.md layout)."""
    from transcription.jobs import enqueue_for_recording

    ctx.hooks.setdefault("recording_stored", []).append(enqueue_for_recording)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        setup_logging(args.log_level or settings.logging.level, settings.logging.format)
        ctx = Context(settings)
        wire(ctx)
        try:
            return int(args.handler(args, ctx) or 0)
        finally:
            ctx.close()
    except HotlineError as e:
        print(f"hotline: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # `hotline cases list | head`: the reader left; not an error worth a traceback.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("hotline: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
