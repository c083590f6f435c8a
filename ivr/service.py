"""The IVR inside `hotline serve`: SIP server, media ticker, one flow per call, and persistence.

Database work runs in threads (asyncio.to_thread) so a slow disk or database never
stalls the 20 ms media ticker that every call shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cases.models import Case
from config.calendar import WorkCalendar
from config.context import Context
from config.db import transaction, utcnow
from config.logs import get_logger
from config.overrides import Decision, current_override, decide_open
from cases import callbacks
from ivr import live, presence
from ivr.call import LiveCall, end_when_media_stops, follow_media
from ivr.call_rows import citizen_number, create_call_row, mark_answered
from ivr.conversation import OperatorLine
from ivr.dialer import Dialer
from ivr.flows import FlowDeps, FlowResult, RecordOutcome, inbound, report
from ivr.media.session import MediaSession
from ivr.media.ticker import Ticker
from ivr.models import Call
from ivr.prompt_cache import load_hold_music, load_prompts
from ivr.queue import CallQueue, PresenceRoster, Ring
from ivr.queue_calls import record_wait
from ivr.sip.health import sip_health
from ivr.sip.ua import IncomingCall, SipServer
from ivr.waiting import WaitDeps, WaitOutcome
from recordings.models import Recording

log = get_logger("ivr.service")


Talk = Callable[[WaitOutcome], Awaitable[bool | None]]
"""Bridge the caller to the operator who answered; False: the operator left before talking (requeue)."""


class Ivr:
    def __init__(self, ctx: Context, *, ring: Ring | None = None, talk: Talk | None = None,
                 queue: bool = True) -> None:
        """The operator queue is on unless `queue=False` (then an open centre takes messages only).
        `ring` and `talk` replace the real dialer and bridge (ivr/conversation.py), for tests."""
        self.ctx = ctx
        self.settings = ctx.settings
        self.prompts = load_prompts(ctx.settings)  # refuses to start naming missing files
        self.hold_music = load_hold_music(ctx.settings)
        self.ticker = Ticker()
        self.server = SipServer(ctx.settings.sip, self.on_call)
        self.calls: dict[str, LiveCall] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.node = socket.gethostname()
        self.dialer = Dialer(self.server, settings=ctx.settings, sessions=ctx.sessions, open_media=self.open_media,
                             prompts=self.prompts, node=self.node, tasks=self.tasks, hooks=self.hooks)
        """Outbound calls for schedulers and queues running in this process (see ivr/dialer.py)."""
        # Messages are stored one at a time: storing runs ffprobe/ffmpeg and fsyncs, and when
        # many calls end together a burst of those in parallel stalled the shared media clock
        # for 100-180 ms (bench/calls.py at 100 calls). Callers never wait for this.
        self.store_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ivr-store")
        self.operators = OperatorLine(self.dialer, settings=ctx.settings, sessions=ctx.sessions,
                                      store=self._in_store_pool, hooks=lambda: self.hooks)
        """Rings operators' phones and bridges them to callers (ivr/conversation.py)."""
        self.talk = talk
        self.queue: CallQueue | None = None
        if queue:
            # On by default: with nobody logged in a caller goes straight to voicemail as before.
            roster = PresenceRoster(ctx.sessions, ctx.settings.queue, node=self.node)
            self.queue = CallQueue(roster, ring or self.operators.ring, ctx.settings.queue, events=ctx.queue_events)

    @property
    def hooks(self) -> list[Any]:
        return self.ctx.hooks.get("recording_stored", [])

    async def start(self) -> None:
        recovered = await asyncio.to_thread(live.recover_live, self.ctx.sessions, self.settings, self.hooks)
        if recovered:
            log.warning("messages recovered after a crash", recordings=recovered)
        self.ctx.now()  # the rehearsal clock (if configured) starts and says so in the log now
        await asyncio.to_thread(self._release_operators)
        if self.queue is not None:
            await self.queue.start()
        await self.ticker.start()
        await self.server.start()
        self.ctx.health["sip"] = partial(sip_health, self.server)
        log.info("ivr listening", mode=self.settings.sip.mode, host=self.settings.sip.bind_host, port=self.server.port)

    async def stop(self) -> None:
        """Graceful: callers hear a closing prompt, messages being recorded are finished and stored."""
        for call in list(self.calls.values()):
            call.shutting_down = True  # type: ignore[attr-defined]
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.ctx.health.pop("sip", None)
        if self.queue is not None:
            await self.queue.stop()
        await self.server.stop()
        await self.ticker.stop()
        self.store_pool.shutdown(wait=True)

    async def on_call(self, sip: IncomingCall) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self._handle(sip)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call failed", call_id=sip.call_id)
        finally:
            self.tasks.discard(task)

    async def _handle(self, sip: IncomingCall) -> None:
        call_row = await asyncio.to_thread(self._create_call, sip)
        media = await self.open_media()
        follow_media(sip, media)
        wav = await asyncio.to_thread(live.begin, self.settings, call_row)
        call = LiveCall(sip, media, self.prompts, wav, language=self.settings.prompts.default_language,
                        hold_music=self.hold_music)
        call.row = call_row
        self.calls[sip.call_id] = call
        result = FlowResult()
        watchdog: asyncio.Future[None] | None = None
        try:
            if not await sip.accept(media.local_port):
                log.warning("call never acknowledged", call_id=sip.call_id)
                return
            watchdog = asyncio.ensure_future(end_when_media_stops(sip, media, self.settings.sip.no_media_seconds))
            await asyncio.to_thread(mark_answered, self.ctx.sessions, call_row.id)
            await inbound(call, self._flow_deps(call, call_row), result)
        except asyncio.CancelledError:
            # Shutdown: finish the message, tell the caller, hang up. `result` keeps what the
            # flow decided so far (open/closed decision); a message cut short stops as "shutdown".
            seconds = call.finish_writer()
            if seconds is not None and result.record is None:
                result.record = RecordOutcome("shutdown", seconds, heard_speech=False)
            caller_was_there = not call.ended
            if caller_was_there:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(call.play(["service_ending"]), 15)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(call.hangup(), 5)
            result.disposition = "voicemail" if wav.exists() and wav.stat().st_size > 44 else result.disposition
            sip.end_reason = "shutdown" if caller_was_there else (sip.end_reason or "shutdown")
        finally:
            if watchdog is not None:
                watchdog.cancel()
            call.finish_writer()
            self.calls.pop(sip.call_id, None)
            await media.close()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.store_pool, self._finish, call_row.id, sip, call, result, wav)

    def _flow_deps(self, call: LiveCall, row: Call) -> FlowDeps:
        """What the report path needs for this call (inbound, or an outbound one handed to the queue)."""
        deps = FlowDeps(decide=self._decide, case_status=self._case_status, voicemail=self.settings.voicemail,
                        message_number=str(row.id), now=self.ctx.now)
        if self.queue is not None:
            deps.queue = WaitDeps(self.queue, self.settings.queue, citizen_number(row), row.id,
                                  request_callback=partial(self._request_callback, row.id),
                                  talk=self.talk or partial(self.operators.talk, call, row))
        return deps

    # -- outbound calls handed to an operator (campaigns: return-visit key 0, callback key 1) ------------

    async def operator_open(self) -> bool:
        """May an outbound callee be offered an operator now? The decision an inbound caller meets
        before queueing: open by the calendar and manual override, and somebody logged in."""
        if self.queue is None:
            return False

        def check() -> bool:
            with self.ctx.sessions() as s:
                return on_duty(s, self.ctx.calendar, self.ctx.now())

        return await asyncio.to_thread(check)

    async def transfer(self, call: LiveCall) -> FlowResult:
        """Put an answered outbound call in the operator queue, exactly as an inbound caller on the report path.

        The callee waits with position announcements and hold music, may press 1 (message) or 2
        (callback); an operator is rung, the consent notice played, the two bridged and recorded in
        stereo on this call's row. When the wait ends without an operator the callee leaves a
        message like any caller; a return visit's call records it as a voicemail from then on (not
        a survey comment), so transcription makes a draft case of it. The call is said goodbye to
        and hung up; the wait and the disposition go on the Call row. Returns what happened.
        """
        row = call.row
        assert row is not None, "an outbound call of the dialer carries its Call row"
        result = FlowResult()
        await asyncio.to_thread(self._messages_as_voicemail, call, row)
        try:
            await report(call, self._flow_deps(call, row), result)
            if not call.ended:
                await call.play(["goodbye"])
                await call.hangup()
        finally:
            await asyncio.to_thread(self._finish_transfer, row.id, result)
        return result

    def _messages_as_voicemail(self, call: LiveCall, row: Call) -> None:
        if call.live_wav.name == live.live_name(row, live.VOICEMAIL) or call.live_wav.exists():
            return  # a callback call records voicemail already; nothing is cut in two
        call.live_wav.with_suffix(".json").unlink(missing_ok=True)
        call.live_wav = live.begin(self.settings, row, live.VOICEMAIL)

    def _finish_transfer(self, call_id: int, result: FlowResult) -> None:
        with transaction(self.ctx.sessions) as s:
            row = s.get(Call, call_id)
            if row is None:
                return
            row.disposition = result.disposition
            write_flow(s, row, result)
        log.info("outbound call handed to the queue ended", row=call_id, disposition=result.disposition,
                 queue_exit=result.queue.exit if result.queue else None)

    async def _in_store_pool(self, store: Callable[[], int | None]) -> int | None:
        """Store a finished recording on the one store thread (see store_pool in __init__)."""
        return await asyncio.get_running_loop().run_in_executor(self.store_pool, store)

    def _create_call(self, sip: IncomingCall) -> Call:
        return create_call_row(self.ctx.sessions, sip_call_id=sip.call_id, direction="in", caller=sip.caller,
                               called=sip.called, language=self.settings.prompts.default_language, node=self.node)

    async def open_media(self) -> MediaSession:
        """An RTP session on a free port of the configured range, on the shared clock (inbound and outbound calls)."""
        sip = self.settings.sip
        return await MediaSession.open(sip.bind_host, (sip.rtp_port_min, sip.rtp_port_max), ticker=self.ticker,
                                       payload_type=0)

    def _finish(self, call_id: int, sip: IncomingCall, call: LiveCall, result: FlowResult, wav: Any) -> None:
        recording_id = None
        if wav.exists():
            recording_id = live.store_message(self.ctx.sessions, self.settings, wav, self.hooks)
        else:
            wav.with_suffix(".json").unlink(missing_ok=True)
        with transaction(self.ctx.sessions) as s:
            row = s.get(Call, call_id)
            if row is None:
                return
            row.ended_at = utcnow()
            row.end_reason = sip.end_reason
            row.disposition = result.disposition if row.answered_at else "abandoned"
            row.language = call.language
            if recording_id is not None:
                row.recording_id = recording_id
            write_flow(s, row, result)
        log.info("call ended", call_id=sip.call_id, row=call_id, disposition=result.disposition,
                 reason=sip.end_reason, recording=recording_id)

    def _release_operators(self) -> None:
        """Operators left busy by a crash of this node are on no call any more."""
        with transaction(self.ctx.sessions) as s:
            presence.recover_after_restart(s, utcnow(), self.settings.queue.wrap_up_seconds, self.node)

    async def _request_callback(self, call_id: int, phone: str) -> None:
        def add() -> None:
            with transaction(self.ctx.sessions) as s:
                callbacks.add(s, phone, "requested", call_id=call_id)

        await asyncio.to_thread(add)

    async def _decide(self, now: dt.datetime) -> Decision:
        def decide() -> Decision:
            with self.ctx.sessions() as s:
                return decide_open(self.ctx.calendar, current_override(s, now), now)

        return await asyncio.to_thread(decide)

    async def _case_status(self, number: str) -> str | None:
        def lookup() -> str | None:
            with self.ctx.sessions() as s:
                return case_status_for(s, number)

        return await asyncio.to_thread(lookup)


def write_flow(s: Session, row: Call, result: FlowResult) -> None:
    """What the flow decided onto the call's row: open/closed and why, how a message stopped, the queue wait."""
    if result.decision:
        row.open_decision = result.decision.why
    if result.record:
        row.record_stop = result.record.reason
        row.message_seconds = result.record.seconds
    if result.queue is not None:
        record_wait(s, row, result.queue)


def on_duty(session: Session, calendar: WorkCalendar, now: dt.datetime) -> bool:
    """Open now (calendar and manual override, as ``Ivr._decide``) and at least one operator at work
    (presence not offline, as ``wait_in_queue``): what an inbound caller needs to be queued."""
    if not decide_open(calendar, current_override(session, now), now).open:
        return False
    return presence.logged_in_count(session) > 0


def case_status_for(session: Any, typed: str) -> str | None:
    """A case by its number keyed without the dash (202612060007), or by a message (call) number."""
    if len(typed) == 12:
        case = session.scalars(select(Case).where(Case.number == f"{typed[:8]}-{typed[8:]}")).first()
        if case is not None:
            return case.status
    if typed.isdigit() and len(typed) <= 10:
        case = session.scalars(
            select(Case).join(Recording, Recording.id == Case.source_recording_id).where(Recording.call_id == int(typed))
        ).first()
        if case is not None:
            return case.status
    return None
