"""SIP transactions over UDP (RFC 3261 section 17, RFC 6026): retransmission and matching only.

UDP loses datagrams, so whoever sent the last message of an exchange keeps resending it
until the peer shows it arrived: our final response to an INVITE until the ACK (Timer G,
and for a 2xx the UA core's 13.3.1.4 rule), our BYE until its response (Timer E). Both give
up after 64*T1 (Timers H and F); plain pyVoIP never does, so an unACKed call of it streams
forever (PYVOIP.md item 6). A retransmitted request must get the last response again,
never be handled twice: a second INVITE with the same branch is the same call.

Timers run as loop callbacks, not tasks: thousands of them cost nothing and they need no
cancellation dance. `Timers` is injectable so tests can shrink T1; the defaults are the
RFC values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from ivr.sip.message import Headers, Request, Response, SipParseError

Key = tuple[str | int | None, ...]


@dataclass(frozen=True)
class Timers:
    """RFC 3261 17.1.1.1 timer base values in seconds (T1 RTT estimate, T2 max interval, T4 network lifetime)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    b: float | None = None
    """Timer B (our INVITE unanswered) if not 64*T1: tests shorten it alone, keeping the retransmission pace."""

    @property
    def transaction_timeout(self) -> float:
        """64*T1: Timers B, F, H, J, L all wait this long (32 s at the RFC defaults)."""
        return 64 * self.t1

    @property
    def timer_b(self) -> float:
        return self.b if self.b is not None else self.transaction_timeout


def server_key(request: Request, method: str | None = None) -> Key:
    """The server transaction a request belongs to (RFC 3261 17.2.3).

    An ACK belongs to the INVITE transaction; a CANCEL has its own but names the INVITE's,
    which `method="INVITE"` looks up. Requests without an RFC 3261 branch (RFC 2543 peers,
    a bare magic cookie as in RFC 4475 3.2.1) fall back to Call-ID, From tag, CSeq number
    and sent-by, as section 17.2.3 describes for old clients.
    """
    wanted = method or ("INVITE" if request.method == "ACK" else request.method)
    top = request.vias[0]
    if top.has_rfc3261_branch:
        return ("3261", top.branch, top.sent_by.lower(), wanted)
    return ("2543", request.call_id, request.from_addr.tag, request.cseq.number, top.sent_by.lower(), wanted)


def client_key(message: Request | Response) -> Key | None:
    """The client transaction a response answers: our branch and the CSeq method (17.1.3)."""
    try:
        vias = message.vias
        return (vias[0].branch, message.cseq.method) if vias else None
    except SipParseError:
        return None


Send = Callable[[Response], None]


class InviteServerTransaction:
    """One INVITE we are answering: provisional responses, then one final response held until ACKed.

    `outcome` resolves True when the ACK arrives and False when 64*T1 passed without one
    (Timer H for a non-2xx; for a 2xx RFC 3261 13.3.1.4 then requires a BYE, which the
    UA does). A retransmitted INVITE gets the last response again (17.2.1).
    """

    def __init__(self, invite: Request, send: Send, timers: Timers, on_timeout: Callable[[], None] | None = None) -> None:
        self.invite = invite
        self._send = send
        self._timers = timers
        self._on_timeout = on_timeout
        self._loop = asyncio.get_running_loop()
        self.last_response: Response | None = None
        self.outcome: asyncio.Future[bool] = self._loop.create_future()
        self._retransmit: asyncio.TimerHandle | None = None
        self._give_up: asyncio.TimerHandle | None = None

    @property
    def final_status(self) -> int | None:
        r = self.last_response
        return r.status if r is not None and r.status >= 200 else None

    @property
    def awaiting_ack(self) -> bool:
        return self.final_status is not None and not self.outcome.done()

    def respond(self, response: Response) -> None:
        """Send a response; a final one is retransmitted T1, 2*T1, ... up to T2 until ACK or 64*T1."""
        if self.final_status is not None:
            raise RuntimeError(f"INVITE already answered with {self.final_status}")
        self.last_response = response
        self._send(response)
        if response.status >= 200:
            self._arm(self._timers.t1)
            self._give_up = self._loop.call_later(self._timers.transaction_timeout, self._expire)

    def retransmitted(self) -> None:
        """The peer resent its INVITE: it missed our last response, so send it again."""
        if self.last_response is not None and not (self.outcome.done() and self.outcome.result()):
            self._send(self.last_response)

    def ack(self) -> None:
        """The ACK arrived: stop retransmitting and report success."""
        self._cancel_timers()
        if not self.outcome.done():
            self.outcome.set_result(True)

    def close(self) -> None:
        """Stop all timers (shutdown); an unresolved outcome becomes False."""
        self._cancel_timers()
        if not self.outcome.done():
            self.outcome.set_result(False)

    def _arm(self, interval: float) -> None:
        self._retransmit = self._loop.call_later(interval, self._fire, interval)

    def _fire(self, interval: float) -> None:
        if self.outcome.done() or self.last_response is None:
            return
        self._send(self.last_response)
        self._arm(min(interval * 2, self._timers.t2))

    def _expire(self) -> None:
        self._cancel_timers()
        if not self.outcome.done():
            self.outcome.set_result(False)
            if self._on_timeout is not None:
                self._on_timeout()

    def _cancel_timers(self) -> None:
        for handle in (self._retransmit, self._give_up):
            if handle is not None:
                handle.cancel()
        self._retransmit = self._give_up = None


class NonInviteClientTransaction:
    """A request we send outside INVITE (our BYE): resend until any final response, give up at 64*T1.

    Timer E starts at T1 and doubles up to T2; after a provisional response it stays at T2
    (17.1.2.2). `result` resolves to the final Response, or None on Timer F.
    """

    def __init__(self, request: Request, send: Callable[[Request], None], timers: Timers) -> None:
        self.request = request
        self._send = send
        self._timers = timers
        self._loop = asyncio.get_running_loop()
        self.result: asyncio.Future[Response | None] = self._loop.create_future()
        self._proceeding = False
        self._retransmit: asyncio.TimerHandle | None = None
        self._give_up: asyncio.TimerHandle | None = None

    @property
    def key(self) -> Key:
        return (self.request.vias[0].branch, self.request.method)

    def start(self) -> None:
        self._send(self.request)
        self._arm(self._timers.t1)
        self._give_up = self._loop.call_later(self._timers.transaction_timeout, self._finish, None)

    def received(self, response: Response) -> None:
        if response.status < 200:
            self._proceeding = True
            return
        self._finish(response)

    def close(self) -> None:
        self._finish(None)

    def _arm(self, interval: float) -> None:
        self._retransmit = self._loop.call_later(interval, self._fire, interval)

    def _fire(self, interval: float) -> None:
        if self.result.done():
            return
        self._send(self.request)
        self._arm(self._timers.t2 if self._proceeding else min(interval * 2, self._timers.t2))

    def _finish(self, response: Response | None) -> None:
        for handle in (self._retransmit, self._give_up):
            if handle is not None:
                handle.cancel()
        if not self.result.done():
            self.result.set_result(response)


def ack_for_failure(invite: Request, response: Response) -> Request:
    """The ACK for a 3xx-6xx to our INVITE (17.1.1.3): part of the INVITE transaction, so its branch.

    Request-URI, Call-ID, From and Route as in the INVITE, only its top Via, To from the
    response (with the callee's tag), CSeq number of the INVITE with method ACK.
    """
    h = Headers()
    h.add("Via", invite.headers.get_all("Via")[0])
    h.add("Max-Forwards", "70")
    for name, value in (("From", invite.headers.get("From")), ("To", response.headers.get("To")),
                        ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq.number} ACK")):
        h.add(name, value or "")
    for route in invite.headers.get_all("Route"):
        h.add("Route", route)
    return Request("ACK", invite.uri, h, b"")


def cancel_for(invite: Request) -> Request:
    """CANCEL for our INVITE (9.1): same Request-URI, Call-ID, From, To, Route, top Via and CSeq number."""
    h = Headers()
    h.add("Via", invite.headers.get_all("Via")[0])
    h.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        h.add(name, invite.headers.get(name) or "")
    h.add("CSeq", f"{invite.cseq.number} CANCEL")
    for route in invite.headers.get_all("Route"):
        h.add("Route", route)
    return Request("CANCEL", invite.uri, h, b"")


class InviteClientTransaction:
    """Our INVITE (17.1.1 with RFC 6026): Timer A resends it until a response, Timer B gives up.

    Every response goes to `on_response`: provisionals, the first final, and each
    retransmitted 2xx during the 64*T1 "accepted" state (the call re-sends its ACK for
    those: a 2xx ACK belongs to the dialog, not to this transaction). A 3xx-6xx is ACKed
    here with the INVITE's branch, again for each retransmission (Timer D). `on_done` runs
    once the transaction is over, so the server can forget its key; `on_timeout` on Timer B.
    """

    def __init__(self, invite: Request, send: Callable[[Request], None], timers: Timers, *,
                 on_response: Callable[[Response], None], on_timeout: Callable[[], None],
                 on_done: Callable[[], None]) -> None:
        self.invite = invite
        self._send = send
        self._timers = timers
        self._on_response = on_response
        self._on_timeout = on_timeout
        self._on_done = on_done
        self._loop = asyncio.get_running_loop()
        self.provisional = False
        self.final: Response | None = None
        self._ack: Request | None = None
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._over = False

    @property
    def key(self) -> Key:
        return (self.invite.vias[0].branch, "INVITE")

    def start(self) -> None:
        self._send(self.invite)
        self._later("A", self._timers.t1, self._retransmit, self._timers.t1)
        self._later("B", self._timers.timer_b, self._timer_b)

    def received(self, response: Response) -> None:
        if self._over:
            return
        if response.status < 200:
            if self.final is None:
                self.provisional = True
                self._cancel("A")
                self._on_response(response)
            return
        first = self.final is None
        if first:
            self.final = response
            for name in ("A", "B"):
                self._cancel(name)
        if response.status < 300:
            if first:
                # RFC 6026 "Accepted": keep absorbing retransmitted 2xx (forked ones too) for 64*T1.
                self._later("M", self._timers.transaction_timeout, self.close)
            self._on_response(response)
            return
        if self.final.status < 300:
            return  # a late failure after a 2xx: the call is already up
        if first:
            self._ack = ack_for_failure(self.invite, response)
            self._later("D", self._timers.transaction_timeout, self.close)  # Timer D: >= 32 s over UDP
            self._send(self._ack)
            self._on_response(response)
        elif self._ack is not None:
            self._send(self._ack)

    def close(self) -> None:
        for name in list(self._handles):
            self._cancel(name)
        if not self._over:
            self._over = True
            self._on_done()

    def _later(self, name: str, delay: float, fn: Callable[..., None], *args: float) -> None:
        self._cancel(name)
        self._handles[name] = self._loop.call_later(delay, fn, *args)

    def _cancel(self, name: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _retransmit(self, interval: float) -> None:
        if self.provisional or self.final is not None or self._over:
            return
        self._send(self.invite)
        self._later("A", interval * 2, self._retransmit, interval * 2)

    def _timer_b(self) -> None:
        if self.final is None and not self._over:
            self.close()
            self._on_timeout()


class ResponseCache:
    """Last responses to non-INVITE requests, kept 64*T1 (Timer J) so a retransmitted BYE or OPTIONS is answered again, not re-run."""

    def __init__(self, timers: Timers) -> None:
        self._timers = timers
        self._entries: dict[Key, tuple[Response, tuple[str, int]]] = {}
        self._handles: dict[Key, asyncio.TimerHandle] = {}

    def get(self, key: Key) -> tuple[Response, tuple[str, int]] | None:
        return self._entries.get(key)

    def put(self, key: Key, response: Response, target: tuple[str, int]) -> None:
        self._entries[key] = (response, target)
        old = self._handles.pop(key, None)
        if old is not None:
            old.cancel()
        self._handles[key] = asyncio.get_running_loop().call_later(self._timers.transaction_timeout, self._drop, key)

    def _drop(self, key: Key) -> None:
        self._entries.pop(key, None)
        self._handles.pop(key, None)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        self._entries.clear()
