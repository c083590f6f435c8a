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

from ivr.sip.message import Request, Response, SipParseError

Key = tuple[str | int | None, ...]


@dataclass(frozen=True)
class Timers:
    """RFC 3261 17.1.1.1 timer base values in seconds (T1 RTT estimate, T2 max interval, T4 network lifetime)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def transaction_timeout(self) -> float:
        """64*T1: Timers B, F, H, J, L all wait this long (32 s at the RFC defaults)."""
        return 64 * self.t1


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
