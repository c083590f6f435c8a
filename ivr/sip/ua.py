"""The SIP user agent on asyncio UDP (interface fixed by the lead; the SIP work fills it in).

Contract used by the call layer (ivr/service.py):

    server = SipServer(settings: SipSettings, on_call: Callable[[IncomingCall], Awaitable[None]])
    await server.start(); server.port -> int (the bound UDP port); await server.stop()
    IncomingCall:
        call_id: str; caller: str (user part of P-Asserted-Identity, else From); caller_name: str | None
        called: str (request-URI user); remote_media: AudioChoice (ivr.sip.sdp) from the offer
        source: tuple[str, int]
        await accept(local_rtp_port: int) -> bool      # 200 OK with our SDP answer; True once ACKed,
                                                        # False if never ACKed (Timer H: call ended)
        await reject(status: int, reason: str | None = None)
        await hangup(reason="local_bye")               # BYE (our side ends the call); reason -> end_reason
        ended: asyncio.Event                           # set on BYE/CANCEL from the peer, Timer H, or our hangup
        end_reason: str | None                         # "caller_bye", "cancel", "no_ack", "local_bye", "shutdown",
                                                       # "no_media" (ivr/call.py ended a call whose RTP stopped)
        on_hold: bool                                  # re-INVITE put us on hold (keep the call)
        on_digit: Callable[[str], None] | None         # key presses sent as SIP INFO (ivr/sip/info.py)

Additions beyond that contract:
    SipServer(..., timers=Timers(t1=...)) shrinks the RFC 3261 timers for tests (defaults: RFC values).
    end_reason may also be "rejected" (our reject()).
    IncomingCall.on_media_update: Callable[[AudioChoice], None] | None, called when a re-INVITE or
    UPDATE changes remote_media (new address, hold, codec); IncomingCall.state.
    on_call owns the call: when it returns (or raises) a still-ringing call is refused (480, or
    500 after an exception) and an answered one is hung up, so no call outlives its handler.

Why our own UA and not pyVoIP's SIPClient (STYLE.md rule 3 keeps pyVoIP behind ivr/sip/):
pyVoIP sends every reply to its registrar, never answers OPTIONS or bad requests, has no
trunk mode, no ACK timeout and no re-INVITE (PYVOIP.md items 1, 6, 7). Trunk mode needs
all of those, so signalling here is ours; pyVoIP stays the reference the tests compare
against.

Register mode (`[sip] mode = "register"`, ivr/sip/register.py): the same UA, plus a
`Registration` that keeps our Contact `<sip:username@public_host:port>` bound at `registrar`
(digest auth, refresh before expiry, backoff on failure, de-REGISTER on stop).
- `SipServer(...)` refuses register mode without `registrar`/`username` (HotlineError naming them);
  `SipServer(..., register_timing=RegisterTiming(...))` shrinks its intervals for tests.
- `start()` does not wait for the registrar: the loop runs in the background and
  `server.registration` (a `Registration`, None in trunk mode) has `.state`
  ("unregistered", "registering", "registered", "failed") and `.status()` for health.
- Out-of-dialog requests (INVITE, OPTIONS) are accepted from the registrar's addresses (the
  PBX sends our calls from there) and from `trusted_peers` only if that key was set
  explicitly (in the file, the environment or the constructor); its default (loopback) does
  not apply in register mode, so a PBX elsewhere is the only caller. Everyone else gets 403.
- `stop()` de-registers first (bounded by `RegisterTiming.deregister_timeout`), so the PBX
  stops routing new calls here while the calls in progress are ended.

Outbound calls (ivr/sip/outgoing.py; the dialer in ivr/dialer.py is what other packages use):
    call = await server.dial(target_uri, from_user=..., local_rtp_port=..., ring_timeout=30.0,
                             display_name=None)  -> OutgoingCall, returned once call.outcome is known
    call.outcome: "answered" | "busy" | "no_answer" | "rejected" | "invalid_number" | "failed"
    call.sip_status: int | None; an answered call is a SipLeg like an IncomingCall (ended,
    end_reason "callee_bye"/"local_bye"/..., remote_media, hangup()). Cancelling `dial()`
    CANCELs the ringing call in the background.
  Next hop: `[sip] outbound_proxy` if set (also put in a Route header with `lr`), else in
  register mode the registrar, else the target URI's host. From: register mode uses the
  account (`sip:username@registrar`) and answers 401/407 with its password; trunk mode
  `sip:<from_user>@public_host`. `Timers(b=...)` shortens Timer B alone for tests.

Trunk mode policy (the RFC decisions are in the report and in the tests):
- out-of-dialog requests from a source outside `trusted_peers` get 403, whatever the method;
- INVITE: 100 at once, then 180; 415/406/416/420/488/400 before ringing when the offer or
  the request cannot work; the call layer decides the rest through `on_call`;
- OPTIONS 200 with Allow/Accept; REGISTER 405 (we are no registrar); other methods 501;
- in-dialog: BYE 200, re-INVITE 200 with our SDP, UPDATE 200, OPTIONS 200; INFO: 200 with a
  key press (application/dtmf-relay or application/dtmf, fed to the call's digits like RFC 4733)
  or without body, 400 for a DTMF body naming no key, 415 for other bodies (ivr/sip/info.py);
  anything else 501; unknown dialog 481; ACK never answered.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from config.errors import HotlineError
from config.logs import get_logger
from config.settings import SipSettings
from ivr.sip.dialog import Dialog, next_hop_address
from ivr.sip.incoming import IncomingCall
from ivr.sip.leg import DialogLeg
from ivr.sip.message import (
    Request,
    Response,
    SipParseError,
    build_response,
    new_call_id,
    new_tag,
    parse_uri,
    split_header_list,
)
from ivr.sip.outgoing import Credentials, OutgoingCall, build_invite
from ivr.sip.register import RegisterTiming, Registration
from ivr.sip.sdp import SdpError, build_offer, negotiate, parse_sdp
from ivr.sip.transactions import (
    InviteClientTransaction,
    InviteServerTransaction,
    Key,
    NonInviteClientTransaction,
    ResponseCache,
    Timers,
    client_key,
    server_key,
)
from ivr.sip.transport import SipTransport, is_ip_literal, open_transport, reply_address

__all__ = ["IncomingCall", "OutgoingCall", "RegisterTiming", "Registration", "SipServer", "Timers"]

_LOGGER = get_logger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset()
"""Option tags we could honour in Require (none yet: no 100rel, no timer)."""
URI_SCHEMES = ("sip", "sips", "tel")
SERVER_NAME = "hotline-12389"

OnCall = Callable[[IncomingCall], Awaitable[None]]
CallKey = tuple[str, str | None, str]


class SipServer:
    """A SIP UAS: answers INVITEs from trusted peers (register mode: the PBX) and hands each call to `on_call`."""

    def __init__(
        self,
        settings: SipSettings,
        on_call: OnCall,
        *,
        timers: Timers | None = None,
        shutdown_grace: float = 2.0,
        register_timing: RegisterTiming | None = None,
    ) -> None:
        self.settings = settings
        self.public_host = settings.public_host
        self._on_call = on_call
        self.timers = timers or Timers()
        self._shutdown_grace = shutdown_grace
        self._trusted = _parse_peers(settings.trusted_peers)
        self.registration: Registration | None = None
        if settings.mode == "register":
            # Register mode trusts the PBX; the loopback default of trusted_peers is meant for trunk mode.
            if "trusted_peers" not in settings.model_fields_set:
                self._trusted = []
            self.registration = Registration(settings, self, register_timing)
        self._transport: SipTransport | None = None
        self._calls: dict[CallKey, DialogLeg] = {}
        self._dialing: set[OutgoingCall] = set()
        self._ringing: dict[Key, IncomingCall] = {}
        self._invite_txs: dict[Key, InviteServerTransaction] = {}
        self._client_txs: dict[Key, NonInviteClientTransaction | InviteClientTransaction] = {}
        self._cache = ResponseCache(self.timers)
        self._tasks: set[asyncio.Task[None]] = set()
        self._expiries: set[asyncio.TimerHandle] = set()
        self._log = _LOGGER.bind(mode=settings.mode)

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._transport = await open_transport(
            self.settings.bind_host, self.settings.bind_port, self._on_request, self._on_response
        )
        self._log.info("sip.started", address=f"{self.settings.bind_host}:{self.port}",
                       trusted=[str(n) for n in self._trusted],
                       registrar=self.registration.registrar if self.registration else None)
        if self.registration is not None:
            self.registration.start()

    @property
    def port(self) -> int:
        return self._require_transport().local_address[1]

    @property
    def calls(self) -> list[DialogLeg]:
        """Calls not yet ended, both directions, ringing outbound ones too (for health and shutdown)."""
        legs: list[DialogLeg] = [*self._calls.values(), *self._dialing]
        return list({id(c): c for c in legs if not c.ended.is_set()}.values())

    async def stop(self) -> None:
        """De-register (register mode), 503 ringing calls, BYE answered ones (waiting `shutdown_grace` for their 200s), then close."""
        if self.registration is not None and self._transport is not None:
            await self.registration.stop()
        ending = [asyncio.ensure_future(c.shutdown()) for c in self.calls]
        if ending:
            done, pending = await asyncio.wait(ending, timeout=self._shutdown_grace)
            for t in pending:
                t.cancel()
            await asyncio.gather(*ending, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for tx in self._invite_txs.values():
            tx.close()
        for ctx in list(self._client_txs.values()):
            ctx.close()
        for handle in self._expiries:
            handle.cancel()
        self._cache.close()
        if self._transport is not None:
            self._transport.close()
        self._log.info("sip.stopped")

    # CallHost --------------------------------------------------------------------------------

    def local_via(self) -> tuple[str, int]:
        return self.public_host, self.port

    def contact(self) -> str:
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return f"<sip:{host}:{self.port}>"

    def dialog_headers(self) -> list[tuple[str, str]]:
        return [("Contact", self.contact()), ("Allow", ALLOW), ("Server", SERVER_NAME)]

    async def send_request(self, request: Request, next_hop: str) -> Response | None:
        """Send a non-INVITE request to the next hop URI; the final response, or None after 64*T1."""
        target = await self._resolve(next_hop)
        if target is None:
            return None
        transport = self._require_transport()
        tx = NonInviteClientTransaction(request, lambda r: transport.send(r, target), self.timers)
        self._client_txs[tx.key] = tx
        try:
            tx.start()
            return await asyncio.shield(tx.result)
        except asyncio.CancelledError:
            tx.close()  # the caller gave up (de-REGISTER timeout, registration stopped): stop retransmitting
            raise
        finally:
            self._client_txs.pop(tx.key, None)

    # outbound calls (DialHost) ---------------------------------------------------------------

    async def dial(
        self,
        target_uri: str,
        *,
        from_user: str,
        local_rtp_port: int,
        ring_timeout: float = 30.0,
        display_name: str | None = None,
        call_id: str | None = None,
    ) -> OutgoingCall:
        """Call `target_uri` offering G.711 on `local_rtp_port`; returns once the outcome is known (see module doc)."""
        uri = parse_uri(target_uri)  # SipParseError for a URI we could not even route
        if uri.scheme not in ("sip", "sips"):
            raise SipParseError(f"cannot dial a {uri.scheme}: URI; give a sip: URI")
        next_hop, routes = self._dial_route(target_uri)
        host, port = self.local_via()
        credentials = None
        if self.registration is not None:
            from_uri = self.registration.aor
            if self.registration.password is not None:
                credentials = Credentials(self.registration.username, self.registration.password)
        else:
            from_uri = f"sip:{from_user}@{f'[{host}]' if ':' in host else host}"
        call_id = call_id or new_call_id(host)
        body = build_offer(host=self.public_host, port=local_rtp_port,
                           session_id=int.from_bytes(call_id.encode()[:4], "big") & 0x7FFFFFFF)
        invite = build_invite(target_uri, from_uri=from_uri, display_name=display_name, from_tag=new_tag(),
                              call_id=call_id, via=(host, port), contact=self.contact(), body=body, routes=routes,
                              user_agent=SERVER_NAME)
        target = await self._resolve(next_hop)
        call = OutgoingCall(self, invite, next_hop=next_hop, target=target or ("0.0.0.0", 0),
                            local_rtp_port=local_rtp_port, ring_timeout=ring_timeout, credentials=credentials)
        if target is None:
            call.transport_failed(f"cannot resolve next hop {next_hop[:80]}")
            return call
        self._dialing.add(call)
        self._spawn(self._forget_when_ended(call))
        call.start()
        try:
            await call.wait()
        except asyncio.CancelledError:
            self._spawn(call.hangup())  # CANCEL (or BYE if the answer crossed) outlives the caller's task
            raise
        return call

    def _dial_route(self, target_uri: str) -> tuple[str, list[str]]:
        """Next hop URI and Route headers of a new outbound INVITE (8.1.2)."""
        proxy = (self.settings.outbound_proxy or "").strip()
        if proxy:
            uri = proxy if proxy.lower().startswith(("sip:", "sips:")) else f"sip:{proxy}"
            loose = uri if ";lr" in uri else f"{uri};lr"
            return uri, [f"<{loose}>"]
        if self.registration is not None:
            return f"sip:{self.registration.registrar}", []
        return target_uri, []

    def start_invite(self, invite: Request, target: tuple[str, int], call: OutgoingCall) -> InviteClientTransaction:
        transport = self._require_transport()
        holder: list[InviteClientTransaction] = []
        tx = InviteClientTransaction(
            invite, lambda r: transport.send(r, target), self.timers, on_response=call.on_response,
            on_timeout=call.on_timeout, on_done=lambda: self._client_txs.pop(holder[0].key, None),
        )
        holder.append(tx)
        self._client_txs[tx.key] = tx
        tx.start()
        return tx

    async def send_to(self, request: Request, next_hop: str) -> None:
        target = await self._resolve(next_hop)
        if target is not None:
            self._require_transport().send(request, target)

    def dialog_confirmed(self, call: OutgoingCall) -> None:
        assert call.dialog is not None
        self._calls[call.dialog.key] = call

    def spawn(self, coro: object) -> None:
        self._spawn(coro)  # type: ignore[arg-type]

    async def _forget_when_ended(self, call: OutgoingCall) -> None:
        try:
            await call.ended.wait()
        finally:
            self._dialing.discard(call)
            if call.dialog is not None:
                self._expire(self.timers.transaction_timeout, self._calls, call.dialog.key, call)

    # dispatch --------------------------------------------------------------------------------

    def _on_response(self, response: Response, source: tuple[str, int]) -> None:
        key = client_key(response)
        tx = self._client_txs.get(key) if key else None
        if tx is None:
            self._log.info("sip.stray_response", status=response.status, source=f"{source[0]}:{source[1]}",
                           call_id=response.call_id[:80])
            return
        tx.received(response)

    def _on_request(self, request: Request, source: tuple[str, int]) -> None:
        if request.method == "ACK":
            self._on_ack(request)
            return
        key = server_key(request)
        if request.method == "INVITE" and (itx := self._invite_txs.get(key)) is not None:
            itx.retransmitted()
            return
        cached = self._cache.get(key)
        if cached is not None:
            self._require_transport().send(*cached)
            return
        if request.method == "CANCEL":
            self._on_cancel(request, source)
            return
        if request.to_addr.tag:
            self._in_dialog(request, source)
        else:
            self._out_of_dialog(request, source)

    def _answer(self, request: Request, source: tuple[str, int], response: Response) -> None:
        """Send a non-INVITE final response and keep it for retransmissions of the request."""
        target = reply_address(request, source)
        response.headers.set("Server", SERVER_NAME)
        self._require_transport().send(response, target)
        self._cache.put(server_key(request), response, target)

    def _refuse(self, request: Request, source: tuple[str, int], status: int, reason: str | None = None,
                headers: list[tuple[str, str]] | None = None) -> None:
        """A final error response to any request: INVITEs through a transaction (retransmit until ACK)."""
        response = build_response(request, status, reason, headers=headers or [], source=source)
        if request.method == "INVITE":
            self._invite_tx(request, source).respond(response)
        else:
            self._answer(request, source, response)

    def _out_of_dialog(self, request: Request, source: tuple[str, int]) -> None:
        if not self._is_trusted(source[0]):
            self._log.warning("sip.untrusted_peer", source=f"{source[0]}:{source[1]}", method=request.method,
                              call_id=request.call_id[:80])
            self._refuse(request, source, 403)
            return
        if request.method not in ("INVITE", "OPTIONS"):
            if request.method in ("BYE", "INFO", "UPDATE"):
                self._refuse(request, source, 481)
            elif request.method == "REGISTER":
                self._refuse(request, source, 405, headers=[("Allow", ALLOW)])
            else:
                self._refuse(request, source, 501, headers=[("Allow", ALLOW)])
            self._log.info("sip.method_refused", method=request.method[:40], source=source[0])
            return
        if self._header_refusal(request, source):
            return
        if request.method == "OPTIONS":
            self._answer(request, source, build_response(
                request, 200, headers=[("Allow", ALLOW), ("Accept", "application/sdp")], source=source
            ))
        else:
            self._new_call(request, source)

    def _header_refusal(self, request: Request, source: tuple[str, int]) -> bool:
        """RFC 3261 8.2.2: Request-URI scheme (416), then Require (420). True if refused."""
        try:
            scheme = parse_uri(request.uri).scheme
        except SipParseError:
            scheme = ""
        if scheme not in URI_SCHEMES:
            self._refuse(request, source, 416)
            return True
        required = [t.strip() for v in request.headers.get_all("Require") for t in v.split(",") if t.strip()]
        unsupported = [t for t in required if t.lower() not in SUPPORTED_EXTENSIONS]
        if unsupported:
            self._refuse(request, source, 420, headers=[("Unsupported", ", ".join(unsupported))])
            return True
        return False

    # INVITE ----------------------------------------------------------------------------------

    def _invite_tx(self, invite: Request, source: tuple[str, int], on_timeout: Callable[[], None] | None = None
                   ) -> InviteServerTransaction:
        """A server transaction for this INVITE, kept 64*T1 after creation to absorb retransmissions and ACKs."""
        target = reply_address(invite, source)
        transport = self._require_transport()
        tx = InviteServerTransaction(invite, lambda r: transport.send(r, target), self.timers, on_timeout)
        key = server_key(invite)
        self._invite_txs[key] = tx
        self._expire(self.timers.transaction_timeout + self.timers.t4, self._invite_txs, key, tx)
        return tx

    def _new_call(self, invite: Request, source: tuple[str, int]) -> None:
        refusal = _offer_refusal(invite)
        if refusal is not None:
            status, reason, headers = refusal
            self._log.warning("sip.invite_refused", status=status, reason=reason, call_id=invite.call_id[:80])
            self._refuse(invite, source, status, headers=headers + [("Warning", f'399 {self.public_host} "{reason[:120]}"')])
            return
        offer = parse_sdp(invite.body)
        choice = negotiate(offer)
        try:
            dialog = Dialog.from_invite(invite, new_tag())
        except SipParseError as e:
            self._log.warning("sip.invite_refused", status=400, reason=e.reason, call_id=invite.call_id[:80])
            self._refuse(invite, source, 400, e.reason[:100])
            return
        holder: list[IncomingCall] = []
        tx = self._invite_tx(invite, source, on_timeout=lambda: holder[0].invite_timed_out() if holder else None)
        tx.respond(build_response(invite, 100, source=source))
        call = IncomingCall(self, invite, source, offer, choice, dialog, tx)
        holder.append(call)
        key = server_key(invite)
        self._ringing[key] = call
        self._expire(self.timers.transaction_timeout + self.timers.t4, self._ringing, key, call)
        call_key = (dialog.call_id, dialog.remote_tag, dialog.local_tag)
        self._calls[call_key] = call
        tx.respond(build_response(invite, 180, to_tag=dialog.local_tag, headers=[("Contact", self.contact())], source=source))
        self._log.info("sip.call_offered", call_id=call.call_id, caller=call.caller, called=call.called,
                       source=f"{source[0]}:{source[1]}", codec=choice.codec)
        self._spawn(self._run_call(call, call_key))

    async def _run_call(self, call: IncomingCall, call_key: CallKey) -> None:
        """on_call owns the call: whatever it leaves behind is ended here."""
        failed = False
        try:
            await self._on_call(call)
        except asyncio.CancelledError:
            raise
        except Exception:
            failed = True
            _LOGGER.exception("sip.on_call_failed", call_id=call.call_id)
        try:
            if call.state == "ringing":
                await call.reject(500 if failed else 480)
            elif not call.ended.is_set():
                await call.hangup()
            await call.ended.wait()
        finally:
            self._expire(self.timers.transaction_timeout, self._calls, call_key, call)

    def _on_cancel(self, cancel: Request, source: tuple[str, int]) -> None:
        """9.2: 200 to the CANCEL first, then 487 to the INVITE if it was still ringing; 481 if no such INVITE."""
        key = server_key(cancel, method="INVITE")
        if key not in self._invite_txs:
            self._answer(cancel, source, build_response(cancel, 481, source=source))
            return
        call = self._ringing.get(key)
        tag = call.dialog.local_tag if call is not None else None
        self._answer(cancel, source, build_response(cancel, 200, to_tag=tag, source=source))
        if call is not None and call.on_cancel():
            self._log.info("sip.cancelled", call_id=call.call_id)

    def _on_ack(self, ack: Request) -> None:
        try:
            tx = self._invite_txs.get(server_key(ack))
        except SipParseError:
            tx = None
        if tx is not None and tx.final_status is not None and tx.final_status >= 300:
            tx.ack()
            return
        call = self._find_call(ack)
        if call is None:
            self._log.debug("sip.stray_ack", call_id=ack.call_id[:80])
            return
        call.on_ack(ack)

    # in-dialog -------------------------------------------------------------------------------

    def _find_call(self, request: Request) -> DialogLeg | None:
        return self._calls.get((request.call_id, request.from_addr.tag, request.to_addr.tag or ""))

    def _in_dialog(self, request: Request, source: tuple[str, int]) -> None:
        call = self._find_call(request)
        if call is None:
            self._log.info("sip.unknown_dialog", method=request.method[:40], call_id=request.call_id[:80])
            self._refuse(request, source, 481)
            return
        method = request.method
        if call.ended.is_set() and method != "BYE":
            self._refuse(request, source, 481)
            return
        if request.cseq.number < call.dialog.remote_cseq:
            self._refuse(request, source, 500, "CSeq out of order")
            return
        call.dialog.remote_cseq = request.cseq.number
        ok = build_response(request, 200, source=source)
        if method == "BYE":
            call.on_bye()
            self._answer(request, source, ok)
        elif method == "INVITE":
            self._reinvite(call, request, source)
        elif method == "UPDATE":
            self._answer(request, source, call.on_update(request))
        elif method == "INFO":
            self._answer(request, source, call.on_info(request))
        elif method == "OPTIONS":
            self._log.info("sip.in_dialog", method=method, call_id=call.call_id)
            ok.headers.add("Allow", ALLOW)
            ok.headers.add("Accept", "application/sdp")
            self._answer(request, source, ok)
        else:
            self._refuse(request, source, 501, headers=[("Allow", ALLOW)])

    def _reinvite(self, call: DialogLeg, request: Request, source: tuple[str, int]) -> None:
        if call.state != "confirmed":
            # 14.2: an INVITE arriving while our previous one is unfinished waits and retries.
            self._refuse(request, source, 500, headers=[("Retry-After", "1")])
            return
        refusal = _offer_refusal(request, offer_required=False)
        if refusal is not None and refusal[0] != 488:
            self._refuse(request, source, refusal[0], headers=refusal[2])
            return
        tx = self._invite_tx(request, source, on_timeout=call.invite_timed_out)
        self._log.info("sip.reinvite", call_id=call.call_id)
        call.on_reinvite(request, tx)

    # helpers ---------------------------------------------------------------------------------

    def _is_trusted(self, host: str) -> bool:
        if self.registration is not None and self.registration.is_registrar(host):
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self._trusted)

    async def _resolve(self, uri: str) -> tuple[str, int] | None:
        try:
            host, port = next_hop_address(uri)
        except SipParseError as e:
            self._log.warning("sip.bad_next_hop", uri=uri[:80], reason=e.reason)
            return None
        if is_ip_literal(host):
            return host, port
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM), timeout=5
            )
        except (OSError, TimeoutError) as e:
            self._log.warning("sip.resolve_failed", host=host, error=str(e))
            return None
        address = infos[0][4]
        return str(address[0]), int(address[1])

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _expire(self, delay: float, table: dict, key: object, value: object) -> None:  # type: ignore[type-arg]
        """Drop `table[key]` after `delay` if it still holds `value` (tables must not grow forever)."""

        def drop() -> None:
            self._expiries.discard(handle)
            if table.get(key) is value:
                del table[key]

        handle = asyncio.get_running_loop().call_later(delay, drop)
        self._expiries.add(handle)

    def _require_transport(self) -> SipTransport:
        if self._transport is None:
            raise RuntimeError("SipServer.start() has not been awaited")
        return self._transport


def _parse_peers(peers: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for peer in peers:
        try:
            nets.append(ipaddress.ip_network(peer.strip(), strict=False))
        except ValueError:
            raise HotlineError(f"[sip] trusted_peers: {peer!r} is not an IP address or CIDR network") from None
    return nets


def _offer_refusal(invite: Request, *, offer_required: bool = True) -> tuple[int, str, list[tuple[str, str]]] | None:
    """Why this INVITE's body cannot start a call: (status, reason, extra headers), or None if it can."""
    accept = invite.headers.get_all("Accept")
    if accept and not _accepts_sdp(accept):
        return 406, "response would be application/sdp, which Accept excludes", [("Accept", "application/sdp")]
    if not invite.body.strip():
        if offer_required:
            return 488, "INVITE without SDP offer (delayed offer) is not supported", []
        return None
    if invite.content_type != "application/sdp":
        return 415, f"body is {invite.content_type}, not application/sdp", [("Accept", "application/sdp")]
    try:
        negotiate(parse_sdp(invite.body))
    except SdpError as e:
        return e.status, e.reason, []
    return None


def _accepts_sdp(values: list[str]) -> bool:
    for value in values:
        for item in split_header_list(value):
            media = item.split(";", 1)[0].strip().lower()
            if media in ("application/sdp", "application/*", "*/*", ""):
                return True
    return False

