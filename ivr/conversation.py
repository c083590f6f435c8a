"""A queued caller and an operator: ringing the operator's phone, and the recorded conversation.

The queue (ivr/queue.py) decides who is offered to whom; this module is what it plugs in:

* :meth:`OperatorLine.ring` dials the operator's SIP address (``[users] sip_uri`` of the
  user) through the IVR's own Dialer, so the operator leg is an ordinary outbound call on
  the same SIP stack and media clock. The queue cancels it at ``ring_timeout_seconds``
  (the dialer then sends CANCEL); the dialer's own timeout is a second later so the queue's
  reason ("no_answer") is the one reported. The answered leg is a LiveCall, whose
  ``hangup()`` sends BYE: that is how a ring-all operator who answered second is let go.
* :meth:`OperatorLine.talk` tells the caller the call is recorded, then bridges the two RTP
  sessions (ivr/media/bridge.py) with a StereoRecorder written live through
  ``live.begin(..., "conversation")`` (left caller, right operator). Whoever hangs up first,
  the other leg is hung up too, and the recording is stored like a voicemail (Recording
  kind "conversation" linked to the Call; the worker transcribes each channel). A kill -9
  leaves the live file and sidecar, which the next start repairs and stores.

Why the consent prompt is played *after* the operator answered and not before ringing: the
operator must not wait long, but a caller must never be recorded without hearing the
notice, and the recording starts only with the bridge. An operator who hangs up during the
notice has not talked to the caller: ``talk`` returns False and the caller queues again
(ivr/flows.py) rather than being sent to voicemail, since someone else may be free.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from cases.models import Case
from cases.users import User
from config.db import transaction
from config.logs import get_logger
from config.settings import Settings
from ivr import live
from ivr.call import LiveCall
from ivr.dialer import DialError, Dialer
from ivr.media.bridge import Bridge
from ivr.media.stereo import StereoRecorder
from ivr.media.wavwriter import WavAppender
from ivr.models import Call
from ivr.queue import Operator, Waiting
from ivr.waiting import WaitOutcome

log = get_logger("ivr.conversation")

CONSENT_PROMPT = "call_recorded"
DIALER_GRACE_SECONDS = 1.0
"""The dialer's own ring timeout is this much longer than the queue's, so the queue decides."""
_PRESENTABLE = re.compile(r"\+?[0-9]{1,32}\Z")
"""A caller number the operator's phone can display as the calling party."""


def operator_uri(sessions: sessionmaker[Session], user_id: int) -> str | None:
    """The SIP address to ring for an operator; None when they have none or are disabled."""
    with sessions() as s:
        user = s.get(User, user_id)
        if user is None or not user.active or user.role != "operator":
            return None
        return user.sip_uri


async def _first(*aws: Awaitable[Any]) -> set[asyncio.Future[Any]]:
    """Run the awaitables until one finishes; cancel (and reap) the rest. Returns the finished ones."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return done


class OperatorLine:
    """Ring and talk for the CallQueue of one IVR (see the module docstring)."""

    def __init__(self, dialer: Dialer, *, settings: Settings, sessions: sessionmaker[Session],
                 store: Callable[[Callable[[], int | None]], Awaitable[int | None]],
                 hooks: Callable[[], list[Any]]) -> None:
        self.dialer = dialer
        self.settings = settings
        self.sessions = sessions
        self._store = store
        """Runs the storing of a finished recording off the event loop (the IVR's one store thread)."""
        self._hooks = hooks
        """The 'recording_stored' hooks (the transcription job), read when a recording is stored."""

    async def ring(self, operator: Operator, waiting: Waiting) -> LiveCall | None:
        uri = await asyncio.to_thread(operator_uri, self.sessions, operator.user_id)
        if not uri:
            log.warning("operator has no SIP address; skipped", operator=operator.user_id, call_id=waiting.call_id)
            return None
        caller_id = waiting.caller if waiting.caller and _PRESENTABLE.match(waiting.caller) else None
        try:
            result = await self.dialer.dial(
                uri, ring_timeout=self.settings.queue.ring_timeout_seconds + DIALER_GRACE_SECONDS, caller_id=caller_id)
        except DialError as e:
            log.warning("operator SIP address cannot be dialled; skipped", operator=operator.user_id, reason=str(e))
            return None
        log.info("operator rung", operator=operator.user_id, call_id=waiting.call_id, outcome=result.outcome,
                 status=result.sip_status, leg_row=result.call_id)
        return result.call

    async def talk(self, caller: LiveCall, call_row: Call, outcome: WaitOutcome) -> bool:
        """Consent notice, then the recorded bridge until either side hangs up; both legs end.

        Returns False when the operator hung up during the notice (nothing was said to each
        other, nothing recorded: the caller should queue again), True otherwise.
        """
        assert outcome.connection is not None
        operator = outcome.connection.leg
        assert isinstance(operator, LiveCall), "the operator leg comes from OperatorLine.ring"
        op_id = outcome.connection.operator.user_id
        await _first(caller.play([CONSENT_PROMPT]), operator.sip.ended.wait())
        if operator.ended:
            log.info("operator hung up during the consent notice; caller queues again", call_id=call_row.id,
                     operator=op_id)
            return caller.ended  # a caller who left too is not requeued
        if caller.ended:
            await self._hangup(operator)
            return True
        wav = await asyncio.to_thread(live.begin, self.settings, call_row, live.CONVERSATION)
        recorder = StereoRecorder(WavAppender(wav, sample_rate=8000, channels=2))
        bridge = Bridge(caller.media, operator.media, recorder)
        try:
            bridge.start()
            log.info("conversation started", call_id=call_row.id, operator=op_id)
            await _first(caller.sip.ended.wait(), operator.sip.ended.wait(), bridge.wait())
        finally:
            await bridge.stop()  # finishes the stereo file (header, fsync)
            await asyncio.gather(self._hangup(caller), self._hangup(operator))
            rid = await self._store(lambda: self._store_conversation(wav, call_row.id))
            log.info("conversation ended", call_id=call_row.id, operator=op_id, recording=rid,
                     seconds=round(bridge.recording_seconds or 0.0, 2), caller_end=caller.sip.end_reason,
                     operator_end=operator.sip.end_reason)
        return True

    def _store_conversation(self, wav: Path, call_id: int) -> int | None:
        """Store the stereo file (Recording kind conversation, linked to the Call, transcription
        queued) and link the cases the operator opened from this call to it."""
        rid = live.store_message(self.sessions, self.settings, wav, self._hooks())
        if rid is not None:
            with transaction(self.sessions) as s:
                s.execute(update(Case).where(Case.source_call_id == call_id, Case.source_recording_id.is_(None))
                          .values(source_recording_id=rid).execution_options(synchronize_session=False))
        return rid

    @staticmethod
    async def _hangup(call: LiveCall) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(call.hangup(), 5)


__all__ = ["CONSENT_PROMPT", "OperatorLine", "operator_uri"]
