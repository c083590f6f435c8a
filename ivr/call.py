"""A live call as the flows see it (`ivr.flows.CallPort`), over a SIP leg (inbound or outbound) and its RTP session."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from config.logs import get_logger
from config.settings import VoicemailSettings
from ivr.flows import RecordOutcome
from ivr.media.session import MediaSession
from ivr.media.silence import SilenceDetector
from ivr.media.tones import beep
from ivr.media.wavwriter import WavAppender
from ivr.sip.leg import SipLeg
from ivr.sip.sdp import AudioChoice

if TYPE_CHECKING:
    from ivr.models import Call

log = get_logger("ivr.call")
FRAME_SECONDS = 0.02
BEEP = beep()
HOLD_SILENCE = bytes(16000)
"""One second of silence, looped when no hold music was given."""


def follow_media(sip: SipLeg, media: MediaSession) -> None:
    """Point `media` at what the SDP negotiated, now and after every re-INVITE/UPDATE that changes it.

    The one place both directions wire SIP to RTP: an inbound call knows the codec from the
    offer, an outbound one from the answer, and either may be moved later by the far side.
    """

    def apply(choice: AudioChoice) -> None:
        media.set_codec(choice.payload_type, choice.dtmf_payload_type)
        media.set_remote((choice.remote_host, choice.remote_port))

    if sip.remote_media is not None:
        apply(sip.remote_media)
    sip.on_media_update = apply
    sip.on_digit = media.key_pressed  # SIP INFO key presses join the RFC 4733 ones


def far_end_may_be_silent(sip: SipLeg) -> bool:
    """True while the far end has said it will send nothing: hold (a=sendonly, a=inactive or
    c=0.0.0.0, which the SIP side reports as `on_hold`) or a=recvonly (our side then does not receive)."""
    choice = sip.remote_media
    return sip.on_hold or (choice is not None and not choice.may_receive)


async def end_when_media_stops(sip: SipLeg, media: MediaSession, seconds: float, *, poll: float = 1.0) -> None:
    """Hang up (BYE, end_reason "no_media") once the far end has sent no RTP for `seconds`.

    Why: a phone that lost power or network, or a PBX that dropped the call without telling
    us, never sends BYE; without this the line stays up until every flow timer has run out
    (and a bridge forever). Runs beside whatever the flow does: ending the SIP leg ends the
    flow's current step the way a caller's BYE does, so a message being recorded is finished
    and stored as usual. Time on hold does not count (a held party rightly sends nothing);
    the count restarts when the hold ends. `seconds` <= 0 disables it.
    """
    if seconds <= 0:
        return
    loop = asyncio.get_running_loop()
    heard = loop.time()
    step = min(poll, seconds / 4)
    while not sip.ended.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sip.ended.wait(), step)
        now = loop.time()
        if sip.ended.is_set():
            return
        if far_end_may_be_silent(sip):
            heard = now
            continue
        if media.last_rx is not None:
            heard = max(heard, media.last_rx)
        if now - heard >= seconds:
            log.warning(f"no RTP for {seconds:g} s: ending the call", call_id=sip.call_id,
                        packets_in=media.stats["packets_in"], latched=str(media.latched))
            await sip.hangup("no_media")
            return


class LiveCall:
    def __init__(self, sip: SipLeg, media: MediaSession, prompts: dict[tuple[str, str], bytes],
                 live_wav: Path, language: str = "zh", hold_music: bytes = b"") -> None:
        self.sip = sip
        self.media = media
        self.prompts = prompts
        self.live_wav = live_wav
        self.language = language
        self.writer: WavAppender | None = None
        self.hold_music = hold_music or HOLD_SILENCE
        self.row: Call | None = None
        """The Call row this leg is kept in (set by whoever made it: the inbound handler, the dialer)."""
        self._music_at = 0
        """Byte offset where the music stopped, so each stretch of waiting continues the tune."""

    @property
    def ended(self) -> bool:
        return self.sip.ended.is_set()

    async def _until_ended(self, aw) -> object:  # type: ignore[no-untyped-def]
        """Run aw, but give up the moment the caller is gone (BYE, CANCEL, no ACK, shutdown)."""
        task = asyncio.ensure_future(aw)
        ended = asyncio.ensure_future(self.sip.ended.wait())
        try:
            await asyncio.wait({task, ended}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # Whoever cancelled us (an operator answering stops the queue announcement) stops
            # the prompt too; left running, it would hold up the next prompt until it ended.
            task.cancel()
            raise
        finally:
            ended.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return None
        return task.result()

    async def play(self, keys: Sequence[str], *, interrupt: bool = False) -> str | None:
        for key in keys:
            if self.ended:
                return None
            if interrupt and not self.media.digits.empty():
                return self._peek_digit()
            digit = await self._until_ended(self.media.play(self.prompts[(self.language, key)], interrupt_on_digit=interrupt))
            if digit:
                return str(digit)
        return None

    def _peek_digit(self) -> str:
        return self.media.digits.peek()

    async def collect(self, *, max_digits: int, timeout: float, terminator: str | None = "#") -> str:
        out = ""
        while len(out) < max_digits and not self.ended:
            try:
                digit = await self._until_ended(asyncio.wait_for(self.media.digits.get(), timeout))
            except TimeoutError:
                break
            if digit is None or digit == terminator:
                break
            out += str(digit)
        return out

    async def music(self, seconds: float) -> str | None:
        """Loop the hold music for up to `seconds`; a key stops it (it stays queued) and is returned."""
        if self.ended or seconds <= 0:
            return None
        if not self.media.digits.empty():
            return self._peek_digit()
        loop = asyncio.get_running_loop()
        size = len(self.hold_music) - len(self.hold_music) % 2

        async def looped() -> str | None:
            while True:
                start, began = self._music_at, loop.time()
                try:
                    digit = await self.media.play(self.hold_music[start:size], interrupt_on_digit=True)
                finally:
                    played = int((loop.time() - began) * 16000) & ~1
                    self._music_at = (start + played) % size if size else 0
                if digit or self.media.closed:
                    return str(digit) if digit else None
                self._music_at = 0

        async def bounded() -> str | None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    return await looped()
            return None

        result = await self._until_ended(bounded())
        return result if isinstance(result, str) else None

    async def tone(self) -> None:
        await self._until_ended(self.media.play(BEEP))

    async def record(self, settings: VoicemailSettings) -> RecordOutcome:
        """Record until max length, silence after speech, '#', or hang-up, whichever is first.

        Frames come from the media clock (one per 20 ms, silence for gaps), so counting them
        is counting wall time, and every frame is on disk within a second.
        """
        self.writer = writer = WavAppender(self.live_wav, sample_rate=8000, channels=1)
        detector = SilenceDetector(threshold=settings.silence_threshold, silence_seconds=settings.silence_seconds)
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        max_frames = int(settings.max_seconds / FRAME_SECONDS)
        frames = 0

        def sink(frame: bytes) -> None:
            nonlocal frames
            if done.done():
                return
            writer.write(frame)
            frames += 1
            if detector.feed(frame):
                done.set_result("silence")
            elif frames >= max_frames:
                done.set_result("max")

        async def hash_key() -> str:
            while True:
                if await self.media.digits.get() == "#":
                    return "digit"

        # Digits typed before the tone (e.g. '#' to skip) must not end the message at once.
        while not self.media.digits.empty():
            self.media.digits.get_nowait()
        self.media.start_recording(sink)
        key_task = asyncio.ensure_future(hash_key())
        try:
            reason = await self._until_ended(asyncio.wait({done, key_task}, return_when=asyncio.FIRST_COMPLETED))
        finally:
            self.media.stop_recording()
            key_task.cancel()
        if reason is None or self.ended:
            why = "no_media" if self.sip.end_reason == "no_media" else "hangup"
        elif done.done():
            why = done.result()
        else:
            why = "digit"
        if not done.done():
            done.cancel()
        # The final fsync can take a while on a busy disk; keep it off the shared media clock.
        seconds = await asyncio.to_thread(writer.close)
        self.writer = None
        log.info("message recorded", call_id=self.sip.call_id, stop=why, seconds=round(seconds, 2))
        return RecordOutcome(why, seconds, detector.heard_speech)

    async def hangup(self) -> None:
        if not self.ended:
            await self.sip.hangup()

    def finish_writer(self) -> float | None:
        """On shutdown or error: close a message still being written, keeping every byte.

        Returns its duration in seconds, or None when no message was being written."""
        if self.writer is None:
            return None
        seconds = self.writer.close()
        self.writer = None
        return seconds
