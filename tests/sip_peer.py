"""A raw SIP peer over real loopback UDP for the UA tests: send exact bytes, read what comes back.

SIPp cannot express "resend this exact INVITE" or "never ACK and watch the 200s" as
precisely, so these cases use this peer; the conversation-shaped cases use SIPp.
Waits take a generous safety limit so a broken server fails the test instead of hanging
it; nothing asserts on how long anything took.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from config.settings import SipSettings
from ivr.sip.message import Request, Response, SipParseError, build_request, build_response, parse_message
from ivr.sip.transactions import Timers
from ivr.sip.ua import IncomingCall, SipServer

SAFETY = 10.0
"""Upper bound on any wait: reached only when the server is broken."""

PCMU_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na={direction}\r\n"
)


def offer(host: str = "127.0.0.1", port: int = 40000, direction: str = "sendrecv") -> bytes:
    return PCMU_OFFER.format(host=host, port=port, direction=direction).encode()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[tuple[bytes, tuple[str, int]]]) -> None:
        self.queue = queue

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.queue.put_nowait((data, (addr[0], addr[1])))


class Peer:
    """One UDP socket acting as caller, PBX or proxy."""

    def __init__(self, transport: asyncio.DatagramTransport, queue: asyncio.Queue[tuple[bytes, tuple[str, int]]]) -> None:
        self.transport = transport
        self.queue = queue
        self.seen: list[Request | Response] = []
        host, port = transport.get_extra_info("sockname")[:2]
        self.host: str = host
        self.port: int = port

    @classmethod
    async def open(cls, host: str = "127.0.0.1", port: int = 0) -> Peer:
        queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Protocol(queue), local_addr=(host, port)
        )
        return cls(transport, queue)  # type: ignore[arg-type]

    def close(self) -> None:
        self.transport.close()

    def send(self, data: bytes | Request | Response, target: tuple[str, int]) -> None:
        self.transport.sendto(data if isinstance(data, bytes) else data.to_bytes(), target)

    async def recv(self) -> Request | Response:
        data, _ = await asyncio.wait_for(self.queue.get(), SAFETY)
        try:
            message = parse_message(data)
        except SipParseError as e:  # our 400 to a request without Call-ID has none either
            if e.partial is None:
                raise
            message = e.partial
        self.seen.append(message)
        return message

    async def expect(self, match: Callable[[Request | Response], bool]) -> Request | Response:
        """The next message that matches; others are kept in `seen` (retransmissions, provisionals)."""
        while True:
            message = await self.recv()
            if match(message):
                return message

    async def response(self, status: int, call_id: str | None = None, method: str | None = None) -> Response:
        def match(m: Request | Response) -> bool:
            return (
                isinstance(m, Response)
                and m.status == status
                and (call_id is None or m.call_id == call_id)
                and (method is None or m.cseq.method == method)
            )

        message = await self.expect(match)
        assert isinstance(message, Response)
        return message

    async def request(self, method: str, call_id: str | None = None) -> Request:
        message = await self.expect(
            lambda m: isinstance(m, Request) and m.method == method and (call_id is None or m.call_id == call_id)
        )
        assert isinstance(message, Request)
        return message

    async def final(self, call_id: str, method: str = "INVITE") -> Response:
        message = await self.expect(
            lambda m: isinstance(m, Response) and m.status >= 200 and m.call_id == call_id and m.cseq.method == method
        )
        assert isinstance(message, Response)
        return message

    # building ------------------------------------------------------------------------------

    def invite(
        self,
        server_port: int,
        *,
        call_id: str | None = None,
        body: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
        from_: str | None = None,
        cseq: int = 1,
    ) -> Request:
        return build_request(
            "INVITE",
            f"sip:12389@127.0.0.1:{server_port}",
            from_=from_ or f'"Zhang San" <sip:13800138000@{self.host}>;tag={secrets.token_hex(4)}',
            to=f"<sip:12389@127.0.0.1:{server_port}>",
            call_id=call_id or f"{secrets.token_hex(8)}@{self.host}",
            cseq=cseq,
            via_host=self.host,
            via_port=self.port,
            contact=f"<sip:caller@{self.host}:{self.port}>",
            headers=headers or [],
            body=offer(self.host) if body is None else body,
            content_type="application/sdp",
        )

    def in_dialog(self, method: str, invite: Request, final: Response, cseq: int, *, body: bytes = b"",
                  content_type: str | None = None, branch: str | None = None) -> Request:
        """A request in the dialog `invite` created, as the caller sends it (to the server's Contact)."""
        contact = final.headers.get("Contact") or ""
        uri = contact.strip().strip("<>").split(">")[0] if contact else invite.uri
        return build_request(
            method,
            uri,
            from_=invite.headers.get("From") or "",
            to=final.headers.get("To") or "",
            call_id=invite.call_id,
            cseq=cseq,
            via_host=self.host,
            via_port=self.port,
            branch=branch,
            contact=f"<sip:caller@{self.host}:{self.port}>",
            body=body,
            content_type=content_type,
        )

    def ack_for(self, invite: Request, final: Response) -> Request:
        """ACK: same branch as the INVITE for a non-2xx (17.1.1.3), a new one for a 2xx (13.2.2.4)."""
        same_branch = invite.vias[0].branch if final.status >= 300 else None
        ack = self.in_dialog("ACK", invite, final, invite.cseq.number, branch=same_branch)
        if final.status >= 300:
            ack.uri = invite.uri
        return ack

    def reply(self, request: Request, status: int) -> Response:
        return build_response(request, status)


@asynccontextmanager
async def running_server(
    on_call: Callable[[IncomingCall], Awaitable[None]],
    *,
    trusted: list[str] | None = None,
    t1: float = 0.5,
    host: str = "127.0.0.1",
) -> AsyncIterator[SipServer]:
    """A trunk-mode SipServer on a free loopback port, stopped afterwards."""
    settings = SipSettings(mode="trunk", bind_host=host, bind_port=0, public_host=host,
                           trusted_peers=trusted or ["127.0.0.1"])
    server = SipServer(settings, on_call, timers=Timers(t1=t1, t2=max(t1 * 8, 0.04), t4=t1 * 10), shutdown_grace=0.2)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
