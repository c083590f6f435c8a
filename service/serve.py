"""`hotline serve`: run the API, the SIP IVR, the campaign scheduler and the transcription worker together.

The scheduler part dials through the IVR of the same process, so it runs only together with
``ivr`` (`--only scheduler` alone is refused at start; see campaigns/service.py).

The worker runs as a supervised child process (`hotline worker`), not in the event
loop: Vosk is CPU-bound and memory-heavy, a crash in Kaldi must not take the API down,
and the same command is what a centre runs alone on another machine.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from config.context import Context
from config.logs import get_logger

log = get_logger("service.serve")
PARTS = ("api", "ivr", "scheduler", "worker")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the service (SIP IVR, campaign scheduler, API and transcription worker)")
    p.add_argument("--only", choices=PARTS, action="append", help="run only this part (repeatable)")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, ctx: Context) -> int:
    from campaigns.service import check_parts
    from config.db import transaction
    from recordings.store import recover

    parts = tuple(args.only or PARTS)
    check_parts(parts)  # before anything opens: a part that cannot run is said at once

    # Refuses to start on an old schema (naming `hotline db upgrade`), then finishes or
    # undoes any import a killed process left half-way, before anything reads the store.
    with transaction(ctx.sessions) as session:
        recover(session, ctx.settings.storage)
    worker_argv = [sys.executable, "-m", "service.cli"]
    if args.config:
        worker_argv += ["--config", args.config]
    worker_argv.append("worker")
    asyncio.run(run(ctx, parts, worker_argv))
    return 0


async def supervise(argv: Sequence[str], stop: asyncio.Event) -> None:
    """Keep the worker running; restart it with backoff if it dies, stop it on shutdown."""
    delay = 1.0
    while not stop.is_set():
        proc = await asyncio.create_subprocess_exec(*argv)
        log.info("worker started", pid=proc.pid)
        waiter = asyncio.create_task(proc.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(waiter, 30)
                except TimeoutError:
                    proc.kill()
                    await waiter
            log.info("worker stopped", pid=proc.pid, code=proc.returncode)
            return
        stopper.cancel()
        log.warning("worker exited, restarting", pid=proc.pid, code=proc.returncode, in_seconds=delay)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass
        delay = min(delay * 2, 60.0)


async def run(ctx: Context, parts: Sequence[str], worker_argv: Sequence[str], stop: asyncio.Event | None = None) -> None:
    """Run the parts until SIGTERM/SIGINT (or until ``stop`` is set, for tests and embedding)."""
    from api.app import create_app
    from service.deadline_scan import scan_periodically

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[None]] = []
    runner: web.AppRunner | None = None
    if "api" in parts:
        runner = web.AppRunner(create_app(ctx), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, ctx.settings.api.host, ctx.settings.api.port)
        await site.start()
        log.info("api listening", url=f"http://{ctx.settings.api.host}:{ctx.settings.api.port}/")
        # Deadline alerts ride with the API part: every centre runs one, and extra nodes are harmless.
        tasks.append(asyncio.create_task(scan_periodically(ctx, stop)))
    ivr = None
    if "ivr" in parts:
        from ivr.service import Ivr

        ivr = Ivr(ctx)
        await ivr.start()
    scheduler = None
    if "scheduler" in parts and ivr is not None:
        from campaigns.service import start_scheduler

        scheduler = await start_scheduler(ctx, ivr.dialer, operator_open=ivr.operator_open, transfer=ivr.transfer)
    if "worker" in parts:
        tasks.append(asyncio.create_task(supervise(worker_argv, stop)))
    await stop.wait()
    log.info("shutting down")
    if scheduler is not None:
        # Before the IVR: calls in flight are recorded as interrupted, then the IVR hangs them up.
        await scheduler.stop()
    if ivr is not None:
        await ivr.stop()
    await asyncio.gather(*tasks)
    if runner:
        await runner.cleanup()
