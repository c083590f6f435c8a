"""One outbound call, the UAC side of a dialog: INVITE, ringing, answer or outcome, CANCEL, BYE.

Why this is ours and not pyVoIP's `VoIPPhone.call()` (PYVOIP.md item 5): pyVoIP ACKs a 2xx
with a random To-tag and the INVITE's branch, so a real PBX never matches the ACK, keeps
resending its 200 and drops the call after about 32 s; and 486 and most 4xx leave its call
DIALING forever. Here (RFC 3261 13.2.2, 17.1.1, 9.1):

- the ACK for a 2xx is a new transaction: new branch, the INVITE's CSeq number, To WITH the
  callee's tag, sent along the dialog's route set (Record-Route reversed) to its Contact, and
  sent again for every retransmitted 2xx;
- a 3xx-6xx is ACKed inside the INVITE transaction (same branch; `InviteClientTransaction`)
  and becomes an outcome: busy, rejected, invalid_number, failed;
- ring timeout (or hang-up while ringing) sends CANCEL, but only after a provisional
  response (9.1), then the 487 ends the attempt as no_answer; a 200 crossing our CANCEL is
  ACKed and BYEd at once;
- 401/407 is answered once per challenge with register.py's digest code when register
  mode has a password;
- a 2xx without usable SDP is ACKed (the callee waits for it) and BYEd: outcome failed.

After the answer the call is a `DialogLeg` like an inbound one: BYE and re-INVITE (hold) from
the callee are handled by the same code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal, Protocol

from config.logs import get_logger
from ivr.sip.dialog import Dialog
from ivr.sip.leg import CallHost, DialogLeg
from ivr.sip.message import Request, Response, SipParseError, build_request, new_branch
from ivr.sip.register import authorization_value, best_challenge, parse_challenges
from ivr.sip.sdp import SdpError, negotiate, parse_sdp
from ivr.sip.transactions import InviteClientTransaction, cancel_for

__all__ = ["Credentials", "DialOutcome", "OutgoingCall", "outcome_for_status"]

_LOGGER = get_logger(__name__)

DialOutcome = Literal["answered", "busy", "no_answer", "rejected", "invalid_number", "failed"]
State = Literal["calling", "ringing", "confirmed", "ended"]

_BUSY = frozenset({486, 600})
_INVALID = frozenset({404, 484, 485, 604})
_NOT_ANSWERED = frozenset({408, 480, 487})
"""408 Request Timeout and 480 Temporarily Unavailable are what PBXs send when nobody picks up."""


def outcome_for_status(status: int) -> DialOutcome:
    """The outcome a final response to our INVITE means (the dialer's and campaigns' vocabulary)."""
    if 200 <= status < 300:
        return "answered"
    if status in _BUSY:
        return "busy"
    if status in _INVALID:
        return "invalid_number"
    if status in _NOT_ANSWERED:
        return "no_answer"
    if 400 <= status < 500 or status >= 600:
        return "rejected"
    return "failed"  # 3xx (we follow no redirects), 5xx


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


class DialHost(CallHost, Protocol):
    """What an outbound call needs from the server beyond an inbound one's."""

    def start_invite(self, invite: Request, target: tuple[str, int], call: OutgoingCall) -> InviteClientTransaction: ...

    async def send_to(self, request: Request, next_hop: str) -> None:
        """One datagram to a URI's address (for the 2xx ACK, which has no transaction)."""
        ...

    def dialog_confirmed(self, call: OutgoingCall) -> None:
        """Route the callee's in-dialog requests (BYE, re-INVITE) to `call` from now on."""
        ...

    def spawn(self, coro: object) -> None: ...


class OutgoingCall(DialogLeg):
    """One INVITE we sent (see the module docstring); `await wait()` gives the outcome."""

    REMOTE_BYE = "callee_bye"

    def __init__(
        self,
        host: DialHost,
        invite: Request,
        *,
        next_hop: str,
        target: tuple[str, int],
        local_rtp_port: int,
        ring_timeout: float,
        credentials: Credentials | None = None,
    ) -> None:
        super().__init__(host, invite.call_id, target)
        self._dial_host = host
        self.invite = invite
        """The INVITE as last sent (the authenticated one after a challenge)."""
        self.next_hop = next_hop
        self.target = target
        self.local_rtp_port = local_rtp_port
        self.ring_timeout = ring_timeout
        self._credentials = credentials
        self.called = invite.parsed_uri.user_unescaped or ""
        self.state: State = "calling"  # type: ignore[assignment]
        self.ringing = asyncio.Event()
        self.outcome: DialOutcome | None = None
        self.sip_status: int | None = None
        self._result: asyncio.Future[DialOutcome] = asyncio.get_running_loop().create_future()
        self._invite_tx: InviteClientTransaction | None = None
        self._cancel_reason: str | None = None
        self._cancel_sent = False
        self._answered_challenges: set[str] = set()
        self._ack: Request | None = None
        self._ack_hop: str | None = None
        self._ring_timer: asyncio.TimerHandle | None = None
        self._log = _LOGGER.bind(call_id=self.call_id)

    # the dialer's verbs -------------------------------------------------------------------------

    def start(self) -> None:
        """Send the INVITE and start the ring timer (from the INVITE, as a phone's "ring for 30 s")."""
        self._send_invite(self.invite)
        self._ring_timer = asyncio.get_running_loop().call_later(self.ring_timeout, self._want_cancel, "ring_timeout")
        self._log.info("sip.dialing", uri=self.invite.uri[:120], next_hop=f"{self.target[0]}:{self.target[1]}")

    async def wait(self) -> DialOutcome:
        """The outcome once known: answered (dialog confirmed, ACK sent) or why not."""
        return await asyncio.shield(self._result)

    async def hangup(self, reason: str = "local_bye") -> None:
        """CANCEL while ringing (then wait for the outcome), BYE once answered; `reason` becomes end_reason."""
        await self._terminate(reason)

    async def shutdown(self) -> None:
        await self._terminate("shutdown")

    # responses from the INVITE transaction --------------------------------------------------------

    def on_response(self, response: Response) -> None:
        if response.status < 200:
            if response.status > 100 and self.state == "calling":
                self.state = "ringing"
                self.ringing.set()
                self._log.info("sip.ringing", status=response.status)
            if self._cancel_reason is not None:
                self._send_cancel()
            return
        if response.status < 300:
            self._on_2xx(response)
            return
        if response.status in (401, 407) and self._retry_with_auth(response):
            return
        outcome = outcome_for_status(response.status)
        if self._cancel_reason is not None:
            outcome = "no_answer"
        self._finish(outcome, response.status)
        self._end(self._cancel_reason or outcome)

    def on_timeout(self) -> None:
        """Timer B: no final response. After our CANCEL that is still "nobody answered" (9.1)."""
        outcome: DialOutcome = "no_answer" if self._cancel_sent else "failed"
        self._log.warning("sip.invite_timeout", outcome=outcome, provisional=self.state == "ringing")
        self._finish(outcome, None)
        self._end(self._cancel_reason or "timeout")

    def transport_failed(self, reason: str) -> None:
        self._log.warning("sip.dial_failed", reason=reason)
        self._finish("failed", None)
        self._end("unreachable")

    # internals ----------------------------------------------------------------------------------

    def _send_invite(self, invite: Request) -> None:
        self.invite = invite
        self._invite_tx = self._dial_host.start_invite(invite, self.target, self)

    def _on_2xx(self, response: Response) -> None:
        tag = response.to_addr.tag
        if self.dialog is not None:
            if tag == self.dialog.remote_tag:
                self._resend_ack()  # the callee did not see our ACK: 13.2.2.4, ACK every 2xx
            else:
                self._log.warning("sip.forked_answer", to_tag=(tag or "")[:40])
                self._spawn(self._ack_and_bye(response))
            return
        try:
            self.dialog = Dialog.from_response(self.invite, response)
        except SipParseError as e:
            # Without a To tag or Contact there is no dialog to ACK into; the callee times out.
            self._log.warning("sip.bad_2xx", reason=e.reason)
            self._finish("failed", response.status)
            self._end("bad_answer")
            return
        self._sdp_session_id = int.from_bytes(self.dialog.local_tag.encode()[:4], "big") & 0x7FFFFFFF
        self._sdp_version = 2  # our offer was version 1
        self._spawn(self._send_ack())
        if self._cancel_reason is not None:
            self._log.info("sip.answer_crossed_cancel")
            self._finish("no_answer", response.status)
            self._end(self._cancel_reason)
            self._spawn(self._bye_once())
            return
        try:
            if response.content_type != "application/sdp" or not response.body.strip():
                raise SdpError("2xx without an SDP answer")
            answer = parse_sdp(response.body)
            choice = negotiate(answer)
        except SdpError as e:
            self._log.warning("sip.bad_answer_sdp", reason=e.reason)
            self._finish("failed", response.status)
            self._end("bad_answer_sdp")
            self._spawn(self._bye_once())
            return
        self._offer = answer
        self.remote_media = choice
        self.on_hold = choice.on_hold
        self.state = "confirmed"
        self._dial_host.dialog_confirmed(self)
        self._log.info("sip.answered", codec=choice.codec, remote=f"{choice.remote_host}:{choice.remote_port}")
        self._finish("answered", response.status)

    async def _send_ack(self) -> None:
        assert self.dialog is not None
        host, port = self._host.local_via()
        self._ack, self._ack_hop = self.dialog.request("ACK", via_host=host, via_port=port,
                                                       cseq=self.invite.cseq.number)
        await self._dial_host.send_to(self._ack, self._ack_hop)

    def _resend_ack(self) -> None:
        if self._ack is not None and self._ack_hop is not None:
            self._spawn(self._dial_host.send_to(self._ack, self._ack_hop))

    async def _ack_and_bye(self, response: Response) -> None:
        """A second callee answered a forked INVITE: accept its dialog only to end it (13.2.2.4)."""
        try:
            other = Dialog.from_response(self.invite, response)
        except SipParseError:
            return
        host, port = self._host.local_via()
        ack, hop = other.request("ACK", via_host=host, via_port=port, cseq=self.invite.cseq.number)
        await self._dial_host.send_to(ack, hop)
        bye, hop = other.request("BYE", via_host=host, via_port=port)
        await self._host.send_request(bye, hop)

    def _retry_with_auth(self, response: Response) -> bool:
        """Answer a 401/407 once per challenge with a new INVITE (CSeq + 1, new branch); False if we cannot."""
        header = "Authorization" if response.status == 401 else "Proxy-Authorization"
        asked = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        challenge = best_challenge(parse_challenges(response.headers.get_all(asked)))
        if self._credentials is None or challenge is None or self._cancel_reason is not None:
            self._log.warning("sip.dial_auth_impossible", status=response.status,
                              has_credentials=self._credentials is not None)
            return False
        if header in self._answered_challenges and not challenge.stale:
            self._log.error("sip.dial_auth_refused", username=self._credentials.username, realm=challenge.realm)
            return False
        self._answered_challenges.add(header)
        old = self.invite
        value = authorization_value(challenge, username=self._credentials.username,
                                    password=self._credentials.password, method="INVITE", uri=old.uri, nc=1)
        headers = old.headers.copy()
        headers.remove(header)
        headers.set("CSeq", f"{old.cseq.number + 1} INVITE")
        via = old.headers.get_all("Via")[0]
        headers.set("Via", via.replace(f"branch={old.vias[0].branch}", f"branch={new_branch()}"))
        headers.add(header, value)
        self.state = "calling"
        self._send_invite(Request("INVITE", old.uri, headers, old.body))
        self._log.info("sip.dial_authenticating", status=response.status, realm=challenge.realm)
        return True

    def _want_cancel(self, reason: str) -> None:
        if self._result.done() or self._cancel_reason is not None:
            return
        self._cancel_reason = reason
        tx = self._invite_tx
        if tx is not None and tx.provisional:
            self._send_cancel()
        else:
            self._log.info("sip.cancel_deferred", reason="no provisional response yet (RFC 3261 9.1)")

    def _send_cancel(self) -> None:
        if self._cancel_sent or self._result.done():
            return
        self._cancel_sent = True
        self._log.info("sip.cancel", reason=self._cancel_reason)
        self._spawn(self._host.send_request(cancel_for(self.invite), self.next_hop))

    async def _terminate(self, reason: str) -> None:
        if not self._result.done():
            self._want_cancel("local_cancel" if reason == "local_bye" else reason)
            await asyncio.shield(self._result)
        if self.ended.is_set():
            if self._bye is not None:
                await asyncio.shield(self._bye)
            return
        self._end(reason)
        await self._bye_once()

    def _finish(self, outcome: DialOutcome, status: int | None) -> None:
        if self._ring_timer is not None:
            self._ring_timer.cancel()
        if self._result.done():
            return
        self.outcome = outcome
        self.sip_status = status
        self._result.set_result(outcome)
        self._log.info("sip.dial_outcome", outcome=outcome, status=status)

    def _spawn(self, coro: object) -> None:
        self._dial_host.spawn(coro)


def build_invite(
    target_uri: str,
    *,
    from_uri: str,
    display_name: str | None,
    from_tag: str,
    call_id: str,
    via: tuple[str, int],
    contact: str,
    body: bytes,
    routes: list[str],
    user_agent: str,
) -> Request:
    """Our first INVITE: SDP offer, Route for an outbound proxy, CSeq 1."""
    name = f'"{display_name}" ' if display_name else ""
    return build_request(
        "INVITE", target_uri, from_=f"{name}<{from_uri}>;tag={from_tag}", to=f"<{target_uri}>", call_id=call_id,
        cseq=1, via_host=via[0], via_port=via[1], contact=contact, body=body, content_type="application/sdp",
        headers=[*(("Route", r) for r in routes), ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"),
                 ("User-Agent", user_agent)],
    )
