"""What an answered call is in SIP, whichever side placed it: one dialog with one audio stream.

An inbound call (`IncomingCall`, we are the UAS) and an outbound one (`OutgoingCall`, we are
the UAC) differ only until the dialog is confirmed. After that both get the same BYE, the
same re-INVITE (hold, new address) and UPDATE from the far side, and end the same way, so
that behaviour lives here once (`DialogLeg`) and the call layer sees one protocol (`SipLeg`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from config.logs import get_logger
from ivr.sip.dialog import Dialog
from ivr.sip.info import DTMF_TYPES, DtmfInfoError, dtmf_from_info
from ivr.sip.message import Request, Response, SipParseError, build_response, parse_name_addr, split_header_list
from ivr.sip.sdp import AudioChoice, NoCommonCodec, SdpError, SessionDescription, build_answer, negotiate, parse_sdp
from ivr.sip.transactions import InviteServerTransaction

_LOGGER = get_logger("ivr.sip.leg")


class CallHost(Protocol):
    """What a call needs from the server that owns the socket."""

    public_host: str

    def dialog_headers(self) -> list[tuple[str, str]]:
        """Contact, Allow, Server for a dialog-creating or target-refresh 2xx."""
        ...

    def local_via(self) -> tuple[str, int]: ...

    def contact(self) -> str: ...

    async def send_request(self, request: Request, next_hop: str) -> Response | None: ...


class SipLeg(Protocol):
    """The SIP side of a call as the media and call layers (ivr/call.py) use it."""

    call_id: str
    ended: asyncio.Event
    end_reason: str | None
    remote_media: AudioChoice | None
    on_media_update: Callable[[AudioChoice], None] | None
    on_digit: Callable[[str], None] | None
    on_hold: bool

    async def hangup(self, reason: str = "local_bye") -> None: ...


class DialogLeg:
    """In-dialog behaviour shared by both directions; subclasses set `dialog`, `remote_media` and `_offer`."""

    REMOTE_BYE = "remote_bye"
    """`end_reason` when the far side sends BYE (the subclasses name the party)."""

    def __init__(self, host: CallHost, call_id: str, source: tuple[str, int] | None) -> None:
        self._host = host
        self.call_id = call_id
        self.source = source
        self.dialog: Dialog | None = None
        self.remote_media: AudioChoice | None = None
        self.on_hold = False
        self.on_media_update: Callable[[AudioChoice], None] | None = None
        """Set by the call layer to hear about re-INVITEs that move or hold the media."""
        self.on_digit: Callable[[str], None] | None = None
        """Set by the call layer to receive key presses sent as SIP INFO (ivr/sip/info.py)."""
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self.state = "new"
        self.local_rtp_port: int | None = None
        self._offer: SessionDescription | None = None
        """The far side's last SDP (its offer, or its answer to ours): what a re-offer of ours mirrors."""
        self._tx: InviteServerTransaction | None = None
        """The INVITE transaction we answer last (the first INVITE inbound, else the latest re-INVITE)."""
        self._first_tx: InviteServerTransaction | None = None
        self._sdp_version = 1
        self._sdp_session_id: int | None = None
        self._bye: asyncio.Task[None] | None = None
        self._log = _LOGGER.bind(call_id=call_id)

    # events from the server (in-dialog) -------------------------------------------------------

    def on_bye(self) -> None:
        if self.state == "answering" and self._tx is not None:
            self._tx.close()
        self._end(self.REMOTE_BYE)

    def on_ack(self, ack: Request) -> None:
        tx = self._tx
        if tx is None or ack.cseq.number != tx.invite.cseq.number or tx.final_status is None or tx.final_status >= 300:
            return
        if tx is not self._first_tx and not tx.invite.body.strip() and ack.body.strip():
            self._apply_answer_in_ack(ack)
        if self.state == "answering":
            self.state = "confirmed"
        tx.ack()

    def on_reinvite(self, request: Request, tx: InviteServerTransaction) -> None:
        """A re-INVITE (hold, unhold, new address): answer with our SDP, same port, direction mirrored."""
        assert self.dialog is not None and self.remote_media is not None and self._offer is not None
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
        assert self.dialog is not None
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

    def on_info(self, request: Request) -> Response:
        """INFO in this dialog: a key press (dtmf-relay / dtmf) goes to `on_digit`; see ivr/sip/info.py for the answers."""
        assert self.dialog is not None
        tag = self.dialog.local_tag
        if not request.body.strip():
            return build_response(request, 200, to_tag=tag, source=self.source)  # legacy keep-alive
        try:
            digit = dtmf_from_info(request.content_type, request.body)
        except DtmfInfoError as e:
            self._log.warning("sip.info_refused", reason=str(e))
            return build_response(request, 400, str(e)[:100], to_tag=tag, source=self.source)
        if digit is None:
            self._log.info("sip.info_refused", content_type=(request.content_type or "")[:60])
            return build_response(request, 415, to_tag=tag, headers=[("Accept", ", ".join(DTMF_TYPES))],
                                  source=self.source)
        self._log.info("sip.info_dtmf", digit=digit)
        if self.on_digit is not None:
            self.on_digit(digit)
        return build_response(request, 200, to_tag=tag, source=self.source)

    def invite_timed_out(self) -> None:
        """Timer H: our 2xx was never ACKed, so the dialog must be ended with a BYE (RFC 3261 13.3.1.4)."""
        tx = self._tx
        if tx is not None and tx.final_status is not None and tx.final_status < 300 and not self.ended.is_set():
            self._log.warning("sip.no_ack", cseq=tx.invite.cseq.number)
            self._end("no_ack")
            self._bye = asyncio.ensure_future(self._send_bye())

    # internals --------------------------------------------------------------------------------

    async def _send_bye(self) -> None:
        assert self.dialog is not None
        host, port = self._host.local_via()
        request, next_hop = self.dialog.request("BYE", via_host=host, via_port=port)
        response = await self._host.send_request(request, next_hop)
        self._log.info("sip.bye_done", status=response.status if response else None, reason=self.end_reason)

    async def _bye_once(self) -> None:
        """Send our BYE (only one, however many callers ask) and wait for its answer."""
        if self._bye is None:
            self._bye = asyncio.ensure_future(self._send_bye())
        await asyncio.shield(self._bye)

    def _end(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.state = "ended"
        self.ended.set()
        self._log.info("sip.call_ended", reason=reason)

    def _ok(self, request: Request, body: bytes) -> Response:
        assert self.dialog is not None
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
        """A re-INVITE or UPDATE may move the peer's Contact (12.2.2 target refresh)."""
        value = request.headers.get("Contact")
        if value and self.dialog is not None:
            try:
                self.dialog.remote_target = parse_name_addr(split_header_list(value)[0]).uri
            except SipParseError:
                pass
