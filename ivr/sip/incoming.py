"""One inbound call as the call layer sees it: accept, reject, hang up, and the events that end it.

Kept apart from the server's request dispatch (`ua.py`) so the call layer's contract reads
in one place. Everything on the wire goes through the `CallHost` the server provides: the
call never holds a socket, and the server never decides what a call does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal, Protocol

from config.logs import get_logger
from ivr.sip.dialog import Dialog
from ivr.sip.message import (
    Request,
    Response,
    SipParseError,
    build_response,
    parse_name_addr,
    parse_uri,
    split_header_list,
)
from ivr.sip.sdp import AudioChoice, NoCommonCodec, SdpError, SessionDescription, build_answer, negotiate, parse_sdp
from ivr.sip.transactions import InviteServerTransaction

_LOGGER = get_logger(__name__)

State = Literal["ringing", "answering", "confirmed", "ended"]


class CallHost(Protocol):
    """What a call needs from the server that owns the socket."""

    public_host: str

    def dialog_headers(self) -> list[tuple[str, str]]:
        """Contact, Allow, Server for a dialog-creating or target-refresh 2xx."""
        ...

    def local_via(self) -> tuple[str, int]: ...

    def contact(self) -> str: ...

    async def send_request(self, request: Request, next_hop: str) -> Response | None: ...


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


class IncomingCall:
    """One INVITE we are answering or have answered (see `ivr.sip.ua` for the contract)."""

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
        self._host = host
        self._invite = invite
        self._offer = offer
        self._tx = transaction
        self._first_tx = transaction
        self.dialog = dialog
        self.call_id = invite.call_id
        self.caller, self.caller_name = caller_identity(invite)
        self.called = called_number(invite)
        self.remote_media = choice
        self.source = source
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self.on_hold = choice.on_hold
        self.on_media_update: Callable[[AudioChoice], None] | None = None
        """Set by the call layer to hear about re-INVITEs that move or hold the media."""
        self.state: State = "ringing"
        self.local_rtp_port: int | None = None
        self._sdp_version = 1
        self._sdp_session_id: int | None = None
        self._bye: asyncio.Task[None] | None = None
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
        self._tx.respond(self._ok(self._invite, body))
        self._log.info("sip.call_answered", rtp_port=local_rtp_port, codec=self.remote_media.codec)
        return await asyncio.shield(self._tx.outcome)

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

    async def hangup(self) -> None:
        """End the call from our side: BYE once the dialog is confirmed (480 if still ringing), wait for its answer."""
        await self._terminate("local_bye", ringing_status=480)

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
        elif self.state == "answering":
            self._tx.close()
        self._end("caller_bye")

    def on_ack(self, ack: Request) -> None:
        tx = self._tx
        if ack.cseq.number != tx.invite.cseq.number or tx.final_status is None or tx.final_status >= 300:
            return
        if tx is not self._first_tx and not tx.invite.body.strip() and ack.body.strip():
            self._apply_answer_in_ack(ack)
        if self.state == "answering":
            self.state = "confirmed"
        tx.ack()

    def on_reinvite(self, request: Request, tx: InviteServerTransaction) -> None:
        """A re-INVITE (hold, unhold, new address): answer with our SDP, same port, direction mirrored."""
        self._tx = tx
        if request.body.strip():
            try:
                offer = parse_sdp(request.body)
                choice = negotiate(offer)
            except NoCommonCodec as e:
                self._log.warning("sip.reinvite_rejected", status=488, reason=e.reason)
                tx.respond(build_response(request, 488, to_tag=self.dialog.local_tag, source=self.source))
                return
            except SdpError as e:
                self._log.warning("sip.reinvite_rejected", status=e.status, reason=e.reason)
                tx.respond(build_response(request, e.status, to_tag=self.dialog.local_tag, source=self.source))
                return
            self._offer = offer
            self._update_media(choice)
            body = self._answer_sdp(offer, choice)
        else:
            body = self._answer_sdp(self._offer, self.remote_media)  # an offer; the answer comes in the ACK
        self._refresh_target(request)
        tx.respond(self._ok(request, body))

    def on_update(self, request: Request) -> Response:
        """UPDATE (RFC 3311): a session-timer refresh without body, or a new offer answered at once."""
        self._refresh_target(request)
        if not request.body.strip():
            return build_response(request, 200, to_tag=self.dialog.local_tag, headers=self._host.dialog_headers())
        try:
            offer = parse_sdp(request.body)
            choice = negotiate(offer)
        except SdpError as e:
            return build_response(request, e.status, to_tag=self.dialog.local_tag)
        self._offer = offer
        self._update_media(choice)
        return self._ok(request, self._answer_sdp(offer, choice))

    def invite_timed_out(self) -> None:
        """Timer H: our 2xx was never ACKed, so the dialog must be ended with a BYE (RFC 3261 13.3.1.4)."""
        if self._tx.final_status is not None and self._tx.final_status < 300 and not self.ended.is_set():
            self._log.warning("sip.no_ack", cseq=self._tx.invite.cseq.number)
            self._end("no_ack")
            self._bye = asyncio.ensure_future(self._send_bye())

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
            await asyncio.shield(self._tx.outcome)
        if self._bye is None:
            self._bye = asyncio.ensure_future(self._send_bye())
        await asyncio.shield(self._bye)

    async def _send_bye(self) -> None:
        host, port = self._host.local_via()
        request, next_hop = self.dialog.request("BYE", via_host=host, via_port=port)
        response = await self._host.send_request(request, next_hop)
        self._log.info("sip.bye_done", status=response.status if response else None, reason=self.end_reason)

    def _final(self, status: int, reason: str | None = None) -> None:
        self._tx.respond(build_response(self._invite, status, reason, to_tag=self.dialog.local_tag, source=self.source))

    def _end(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.state = "ended"
        self.ended.set()
        self._log.info("sip.call_ended", reason=reason)

    def _ok(self, request: Request, body: bytes) -> Response:
        return build_response(
            request, 200, to_tag=self.dialog.local_tag, headers=self._host.dialog_headers(),
            body=body, content_type="application/sdp", source=self.source,
        )

    def _answer_sdp(self, offer: SessionDescription, choice: AudioChoice) -> bytes:
        assert self.local_rtp_port is not None
        body = build_answer(
            offer, choice, host=self._host.public_host, port=self.local_rtp_port,
            session_id=self._sdp_session_id, session_version=self._sdp_version,
        )
        self._sdp_version += 1
        return body

    def _update_media(self, choice: AudioChoice) -> None:
        changed = choice != self.remote_media
        self.remote_media = choice
        if choice.on_hold != self.on_hold:
            self._log.info("sip.hold" if choice.on_hold else "sip.unhold")
        self.on_hold = choice.on_hold
        if changed and self.on_media_update is not None:
            self.on_media_update(choice)

    def _apply_answer_in_ack(self, ack: Request) -> None:
        try:
            self._update_media(negotiate(parse_sdp(ack.body)))
        except SdpError as e:
            self._log.warning("sip.bad_answer_in_ack", reason=e.reason)

    def _refresh_target(self, request: Request) -> None:
        """A re-INVITE or UPDATE may move the caller's Contact (12.2.2 target refresh)."""
        value = request.headers.get("Contact")
        if value:
            try:
                self.dialog.remote_target = parse_name_addr(split_header_list(value)[0]).uri
            except SipParseError:
                pass
