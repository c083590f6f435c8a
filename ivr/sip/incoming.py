"""One inbound call as the call layer sees it: accept, reject, hang up, and the events that end it.

Kept apart from the server's request dispatch (`ua.py`) so the call layer's contract reads
in one place. Everything on the wire goes through the `CallHost` the server provides: the
call never holds a socket, and the server never decides what a call does.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from config.logs import get_logger
from ivr.sip.dialog import Dialog
from ivr.sip.leg import CallHost, DialogLeg
from ivr.sip.message import Request, SipParseError, build_response, parse_name_addr, parse_uri, split_header_list
from ivr.sip.sdp import AudioChoice, SessionDescription
from ivr.sip.transactions import InviteServerTransaction

__all__ = ["CallHost", "IncomingCall", "called_number", "caller_identity"]

_LOGGER = get_logger(__name__)

State = Literal["ringing", "answering", "confirmed", "ended"]


def caller_identity(invite: Request) -> tuple[str, str | None]:
    """User part and display name of P-Asserted-Identity (RFC 3325: what a trusted trunk vouches for), else From."""
    for value in (invite.headers.get("P-Asserted-Identity"), invite.headers.get("From")):
        if not value:
            continue
        try:
            addr = parse_name_addr(split_header_list(value)[0])
            user = parse_uri(addr.uri).user_unescaped
        except SipParseError:
            continue
        if user:
            return user, addr.display_name
    return "", None


def called_number(invite: Request) -> str:
    try:
        return parse_uri(invite.uri).user_unescaped or ""
    except SipParseError:
        return ""


class IncomingCall(DialogLeg):
    """One INVITE we are answering or have answered (see `ivr.sip.ua` for the contract)."""

    REMOTE_BYE = "caller_bye"

    def __init__(
        self,
        host: CallHost,
        invite: Request,
        source: tuple[str, int],
        offer: SessionDescription,
        choice: AudioChoice,
        dialog: Dialog,
        transaction: InviteServerTransaction,
    ) -> None:
        super().__init__(host, invite.call_id, source)
        self._invite = invite
        self._offer = offer
        self._tx = transaction
        self._first_tx = transaction
        self._invite_tx = transaction
        self.dialog: Dialog = dialog
        self.caller, self.caller_name = caller_identity(invite)
        self.called = called_number(invite)
        self.remote_media: AudioChoice = choice
        self.on_hold = choice.on_hold
        self.state: State = "ringing"  # type: ignore[assignment]
        self._log = _LOGGER.bind(call_id=self.call_id)

    # the call layer's verbs ------------------------------------------------------------------

    async def accept(self, local_rtp_port: int) -> bool:
        """Answer 200 with our SDP on `local_rtp_port`; True once ACKed, False if never ACKed or ended first."""
        if self.state != "ringing":
            if self.ended.is_set():
                return False
            raise RuntimeError(f"accept() in state {self.state}")
        self.local_rtp_port = local_rtp_port
        self._sdp_session_id = int.from_bytes(self.dialog.local_tag.encode()[:4], "big") & 0x7FFFFFFF
        body = self._answer_sdp(self._offer, self.remote_media)
        self.state = "answering"
        self._invite_tx.respond(self._ok(self._invite, body))
        self._log.info("sip.call_answered", rtp_port=local_rtp_port, codec=self.remote_media.codec)
        return await asyncio.shield(self._invite_tx.outcome)

    async def reject(self, status: int, reason: str | None = None) -> None:
        """Refuse the ringing call with a final status (4xx-6xx); the caller's ACK stops our retransmissions."""
        if not 300 <= status <= 699:
            raise ValueError(f"reject() needs a status of 300-699, not {status}")
        if self.state != "ringing":
            if self.ended.is_set():
                return
            raise RuntimeError(f"reject() in state {self.state}")
        self._final(status, reason)
        self._end("rejected")

    async def hangup(self, reason: str = "local_bye") -> None:
        """End the call from our side: BYE once the dialog is confirmed (480 if still ringing), wait for its answer.

        `reason` becomes `end_reason` (e.g. "no_media" when the caller's RTP stopped)."""
        await self._terminate(reason, ringing_status=480)

    # events from the server ------------------------------------------------------------------

    def on_cancel(self) -> bool:
        """CANCEL matched our INVITE: 487 it if we have not answered yet. True if that ended the call."""
        if self.state != "ringing":
            return False
        self._final(487)
        self._end("cancel")
        return True

    def on_bye(self) -> None:
        if self.state == "ringing":
            self._final(487)
        super().on_bye()

    async def shutdown(self) -> None:
        """The service is stopping: 503 a ringing call, BYE an answered one."""
        await self._terminate("shutdown", ringing_status=503)

    # internals -------------------------------------------------------------------------------

    async def _terminate(self, reason: str, *, ringing_status: int) -> None:
        if self.ended.is_set():
            if self._bye is not None:
                await asyncio.shield(self._bye)
            return
        if self.state == "ringing":
            self._final(ringing_status)
            self._end(reason)
            return
        answering = self.state == "answering"
        self._end(reason)
        if answering:
            # 15: no BYE before the ACK arrives or the transaction times out.
            await asyncio.shield(self._invite_tx.outcome)
        await self._bye_once()

    def _final(self, status: int, reason: str | None = None) -> None:
        self._invite_tx.respond(
            build_response(self._invite, status, reason, to_tag=self.dialog.local_tag, source=self.source)
        )
