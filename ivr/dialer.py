"""Outbound calls for the rest of the service: the operator queue and return-visit campaigns use this, nothing lower.

    result = await ivr.dialer.dial("13800138000", ring_timeout=30, caller_id="12389")
    result.outcome     # "answered", "busy", "no_answer", "rejected", "invalid_number", "failed"
    result.sip_status  # the final SIP status (None on timeout or an unreachable callee)
    result.call        # a LiveCall (play / collect / record / hangup) when answered, else None
    result.call_id     # the Call row (direction "out"), written whatever the outcome

A number becomes a URI through `[sip] dial_uri_template`; a `sip:` URI is dialled as given.
The Call row gets disposition = the outcome (an answered call starts as "answered"; a flow
may overwrite it) and is closed when the call ends, by a task of the IVR that also closes
the RTP session: whoever uses `result.call` only has to hang up (or let the callee do it).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from config.errors import HotlineError
from config.logs import get_logger
from config.settings import Settings
from ivr import live
from ivr.call import LiveCall, end_when_media_stops, follow_media
from ivr.call_rows import close_call_row, create_call_row, mark_answered
from ivr.media.session import MediaSession
from ivr.models import Call
from ivr.sip.message import SipParseError, new_call_id, parse_uri
from ivr.sip.outgoing import DialOutcome, OutgoingCall
from ivr.sip.ua import SipServer

__all__ = ["DialError", "DialResult", "Dialer", "dial_uri"]

log = get_logger("ivr.dialer")

_NUMBER = re.compile(r"\+?[0-9]{1,32}\Z")
_CALLER_ID = re.compile(r"\+?[0-9A-Za-z_.\-]{1,32}\Z")


class DialError(HotlineError):
    """What was asked cannot be dialled at all (not a number or SIP URI, bad caller id): nothing was sent."""


@dataclass
class DialResult:
    outcome: DialOutcome
    sip_status: int | None
    call: LiveCall | None
    """The answered call (flows play, collect, record on it); None when not answered."""
    call_id: int
    """The Call row's id."""
    uri: str


def dial_uri(number_or_uri: str, template: str) -> str:
    """The SIP URI to call: a sip:/sips: URI as given, else digits (optionally +) put into `template`."""
    if not isinstance(number_or_uri, str):
        raise DialError(f"cannot dial {type(number_or_uri).__name__} {number_or_uri!r}: give a number or a sip: URI")
    text = number_or_uri.strip()
    if text.lower().startswith(("sip:", "sips:")):
        try:
            uri = parse_uri(text)
        except SipParseError as e:
            raise DialError(f"cannot dial {text[:80]!r}: {e.reason}") from None
        if not uri.host:
            raise DialError(f"cannot dial {text[:80]!r}: no host")
        return text
    digits = re.sub(r"[\s\-()]", "", text)
    if not _NUMBER.match(digits):
        raise DialError(f"cannot dial {text[:80]!r}: not a phone number (digits, optionally a leading +)")
    uri = template.format(number=digits)
    try:
        parse_uri(uri)
    except SipParseError as e:
        raise DialError(f"[sip] dial_uri_template gives {uri[:80]!r}, not a SIP URI: {e.reason}") from None
    return uri


class Dialer:
    """Places outbound calls on the IVR's SIP server and media clock (see the module docstring)."""

    def __init__(
        self,
        server: SipServer,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        open_media: Callable[[], Awaitable[MediaSession]],
        prompts: dict[tuple[str, str], bytes],
        node: str,
        tasks: set[asyncio.Task[None]],
        hooks: list[Callable[..., None]] | None = None,
    ) -> None:
        self.server = server
        self.settings = settings
        self.sessions = sessions
        self._open_media = open_media
        self.prompts = prompts
        self.node = node
        self._tasks = tasks
        """The IVR's call tasks: stopping the IVR cancels them, which hangs up and closes what is left."""
        self.hooks = hooks if hooks is not None else []
        """Called for each stored recording ('recording_stored': queues transcription), as for inbound calls."""

    async def dial(self, number_or_uri: str, *, ring_timeout: float = 30.0, caller_id: str | None = None,
                   disposition: str = "answered", record_kind: str = live.CAMPAIGN) -> DialResult:
        """Call and wait for the outcome (up to `ring_timeout` of ringing, then CANCEL).

        An answered call's row gets `disposition` ("campaign" for a return-visit call); whatever
        the flow records on it (`call.record`) goes through ivr/live.py as `record_kind`, the same
        sidecar-first path as inbound messages, and is stored when the call ends (or recovered
        at the next start after a crash)."""
        uri = dial_uri(number_or_uri, self.settings.sip.dial_uri_template)
        if caller_id is not None and (not isinstance(caller_id, str) or not _CALLER_ID.match(caller_id)):
            raise DialError(f"caller id {str(caller_id)[:80]!r} is not a number or SIP user name")
        if not isinstance(ring_timeout, (int, float)) or not 0 < ring_timeout <= 600:
            raise DialError(f"ring_timeout {ring_timeout!r} must be a number of seconds in (0, 600]")
        from_user = caller_id or self.settings.sip.username or "12389"
        called = parse_uri(uri).user_unescaped or uri[:80]
        call_id = new_call_id(self.settings.sip.public_host)
        row = await asyncio.to_thread(
            create_call_row, self.sessions, sip_call_id=call_id, direction="out", caller=from_user,
            called=called[:80], language=self.settings.prompts.default_language, node=self.node,
        )
        row_id = row.id
        leg: OutgoingCall | None = None
        try:
            media = await self._open_media()
        except BaseException:
            await asyncio.to_thread(close_call_row, self.sessions, row_id, disposition="failed", end_reason="no_rtp_port")
            raise
        try:
            leg = await self.server.dial(uri, from_user=from_user, local_rtp_port=media.local_port,
                                         ring_timeout=float(ring_timeout), call_id=call_id)
        except BaseException:
            # Cancelled while ringing (the server CANCELs in the background) or a bug: nothing left to use.
            await media.close()
            await asyncio.to_thread(close_call_row, self.sessions, row_id, disposition="failed",
                                    end_reason="dial_cancelled")
            raise
        outcome = leg.outcome or "failed"
        if outcome != "answered":
            await media.close()
            await asyncio.to_thread(close_call_row, self.sessions, row_id, disposition=outcome,
                                    end_reason=leg.end_reason)
            log.info("dial ended", uri=uri[:120], outcome=outcome, status=leg.sip_status, row=row_id)
            return DialResult(outcome, leg.sip_status, None, row_id, uri)
        # Writing the answer down takes two trips to threads. A dial cancelled meanwhile (the queue's
        # ring timed out, the caller left, another ring-all operator answered first) must not leave
        # the callee up with nobody knowing: the set-up runs on, shielded, and its call is hung up.
        setup = asyncio.ensure_future(self._take_answer(leg, media, row, disposition, record_kind))
        try:
            call = await asyncio.shield(setup)
        except asyncio.CancelledError:
            self._keep(self._hang_up_when_set_up(setup, uri))
            raise
        log.info("dial answered", uri=uri[:120], row=row_id, codec=leg.remote_media.codec if leg.remote_media else None)
        return DialResult(outcome, leg.sip_status, call, row_id, uri)

    async def _take_answer(self, leg: OutgoingCall, media: MediaSession, row: Call, disposition: str,
                           record_kind: str) -> LiveCall:
        """The answered leg as a LiveCall whose end is looked after (`_close_when_ended`); if this fails
        or is cancelled before that, the callee gets a BYE and the port and row are closed here."""
        wav: Path | None = None
        try:
            follow_media(leg, media)
            await asyncio.to_thread(mark_answered, self.sessions, row.id, disposition)
            wav = await asyncio.to_thread(live.begin, self.settings, row, record_kind)
            call = LiveCall(leg, media, self.prompts, wav, language=self.settings.prompts.default_language)
            call.row = row
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(leg.hangup(), 5)
            await media.close()
            if wav is not None:
                wav.with_suffix(".json").unlink(missing_ok=True)
            await asyncio.to_thread(close_call_row, self.sessions, row.id, disposition=None, end_reason=leg.end_reason)
            raise
        self._keep(self._close_when_ended(leg, media, row.id, call))
        return call

    async def _hang_up_when_set_up(self, setup: asyncio.Future[LiveCall], uri: str) -> None:
        """The dial was cancelled after the callee answered: BYE them once the set-up is done
        (a failed set-up has hung up already; `_close_when_ended` then closes the rest)."""
        try:
            call = await setup
        except Exception:  # noqa: BLE001 - nobody awaits the dial any more; _take_answer has hung up
            log.exception("answered call could not be set up after the dial was cancelled", uri=uri[:120])
            return
        log.info("dial cancelled after the answer; hanging up", uri=uri[:120])
        with contextlib.suppress(Exception):
            await asyncio.wait_for(call.hangup(), 5)

    def _keep(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as one of the IVR's call tasks (stopping the IVR cancels it)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_when_ended(self, leg: OutgoingCall, media: MediaSession, row_id: int, call: LiveCall) -> None:
        """Whoever ends the call, the RTP port is released, the recording stored and the row closed;
        a stopping IVR hangs up first. A callee whose RTP stops is hung up after `[sip] no_media_seconds`,
        as inbound callers are."""
        watchdog = asyncio.ensure_future(end_when_media_stops(leg, media, self.settings.sip.no_media_seconds))
        try:
            await leg.ended.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(leg.hangup(), 5)
            raise
        finally:
            watchdog.cancel()
            call.finish_writer()
            await media.close()
            await asyncio.to_thread(self._store, call.live_wav)
            await asyncio.to_thread(close_call_row, self.sessions, row_id, disposition=None,
                                    end_reason=leg.end_reason)

    def _store(self, wav: Path) -> None:
        """The call's recording into the store (linked to its Call row), or its sidecar away when nothing was recorded."""
        if wav.exists():
            live.store_message(self.sessions, self.settings, wav, self.hooks)
        else:
            wav.with_suffix(".json").unlink(missing_ok=True)
