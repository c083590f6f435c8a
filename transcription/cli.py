"""`hotline transcribe`, `hotline models`, `hotline worker`, `hotline extract`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    _register_transcribe(sub)
    _register_models(sub)
    _register_worker(sub)
    _register_extract(sub)


def _register_transcribe(sub: argparse._SubParsersAction) -> None:
    """hotline transcribe [--model PATH] [--json] FILE… (engine work)."""
    from transcription.models_cli import register_transcribe

    register_transcribe(sub)


def _register_models(sub: argparse._SubParsersAction) -> None:
    """hotline models list|path|verify (engine work)."""
    from transcription.models_cli import register_models

    register_models(sub)


def _register_worker(sub: argparse._SubParsersAction) -> None:
    """hotline worker [--once] [--processes N] (jobs work)."""
    from pathlib import Path

    def positive(v: str) -> int:
        n = int(v)
        if not 1 <= n <= 64:
            raise argparse.ArgumentTypeError("must be between 1 and 64")
        return n

    def handler(args: argparse.Namespace, ctx) -> int:  # type: ignore[no-untyped-def]
        from transcription.worker import run_worker

        return run_worker(ctx, once=args.once, processes=args.processes, grace=args.grace, model=args.model)

    p = sub.add_parser(
        "worker",
        help="transcribe queued recordings into draft cases",
        description=(
            "Claim transcription jobs from the database queue, run Vosk in N worker processes "
            "(each loads the model once) and store transcripts and draft cases. Without --once it "
            "polls every [transcription] poll_seconds and stops on SIGTERM/SIGINT, letting jobs in "
            "hand finish for --grace seconds, then releasing them to the queue. Exit codes: 0 ok; "
            "1 model or database error, or with --once any job of this run not done; 2 bad usage."
        ),
    )
    p.add_argument("--once", action="store_true", help="process every job due now, then exit")
    p.add_argument(
        "--processes", type=positive, metavar="N", help="Vosk worker processes (default [transcription] processes)"
    )
    p.add_argument("--model", type=Path, metavar="PATH", help="Vosk model folder (default: as `hotline models path`)")
    p.add_argument(
        "--grace", type=float, default=20.0, metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long jobs in hand may finish before they are released (default 20)",
    )
    p.set_defaults(handler=handler)


def _register_extract(sub: argparse._SubParsersAction) -> None:
    """hotline extract [--json] TEXT (text post-processing work)."""
    import json
    import sys

    from config.errors import HotlineError
    from transcription.extract import extract

    p = sub.add_parser(
        "extract",
        help="show the phone numbers and address hint found in a message text",
        description="Run the draft-case extraction rules (phones, address) on a text, "
        "so staff can check them on real messages. Needs no database.",
    )
    p.add_argument("--json", action="store_true", help='print {"phones": [...], "address": ...}')
    p.add_argument("text", nargs="+", metavar="TEXT", help="the message text (several words are joined by spaces); - reads stdin")

    def handler(args: argparse.Namespace, ctx: object) -> int:
        if args.text == ["-"]:
            try:
                text = sys.stdin.buffer.read().decode("utf-8")
            except UnicodeDecodeError as e:
                raise HotlineError(f"stdin is not UTF-8 text: {e}") from e
        else:
            text = " ".join(args.text)
        found = extract(text)
        if args.json:
            print(json.dumps({"phones": found.phones, "address": found.address}, ensure_ascii=False))
        else:
            print("phones:  " + (", ".join(found.phones) if found.phones else "(none)"))
            print("address: " + (found.address if found.address is not None else "(none)"))
        return 0

    p.set_defaults(handler=handler)
