"""The trunk-mode SIP UA over real loopback UDP, driven by a raw Python peer (tests/sip_peer.py).

Each test names the RFC rule or pyVoIP defect it pins down. Waits are bounded by a safety
limit only; no test asserts on how long anything took.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from config.errors import HotlineError
from config.settings import SipSettings
from ivr.sip.message import Request, Response, build_request
from ivr.sip.sdp import parse_sdp
from ivr.sip.transport import SipTransport
from ivr.sip.ua import IncomingCall, SipServer
from tests.sip_peer import Peer, offer, running_server

RTP_PORT = 31234

PeerFactory = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def open_peer() -> AsyncIterator[PeerFactory]:
    """Raw peers that are closed even when the test fails."""
    peers: list[Peer] = []

    async def make(host: str = "127.0.0.1") -> Peer:
        peer = await Peer.open(host)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()


class Recorder:
    """on_call that records calls and does what the test tells it."""

    def __init__(self, action: str = "accept") -> None:
        self.action = action
        self.calls: list[IncomingCall] = []
        self.accepted: list[bool] = []
        self.offered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, call: IncomingCall) -> None:
        self.calls.append(call)
        self.offered.set()
        if self.action == "accept":
            self.accepted.append(await call.accept(RTP_PORT))
            await call.ended.wait()
        elif self.action == "accept_then_hangup":
            self.accepted.append(await call.accept(RTP_PORT))
            await self.release.wait()
            await call.hangup()
        elif self.action == "ring":
            await self.release.wait()
            self.accepted.append(await call.accept(RTP_PORT))
        elif self.action == "raise":
            raise RuntimeError("call flow bug")


async def establish(peer: Peer, server: SipServer, **kw: object) -> tuple[Request, Response]:
    invite = peer.invite(server.port, **kw)  # type: ignore[arg-type]
    peer.send(invite, ("127.0.0.1", server.port))
    ok = await peer.final(invite.call_id)
    assert ok.status == 200
    peer.send(peer.ack_for(invite, ok), ("127.0.0.1", server.port))
    return invite, ok


# Register mode (and its config validation) is tested in tests/test_sip_register.py.


def test_bad_trusted_peer_is_a_config_error() -> None:
    with pytest.raises(HotlineError, match="trusted_peers"):
        SipServer(SipSettings(trusted_peers=["not-an-address"]), Recorder())


async def test_options_keepalive_gets_200_with_allow(open_peer: PeerFactory) -> None:
    """PBX keep-alives (pyVoIP answers none, PYVOIP.md item 6)."""
    async with running_server(Recorder()) as server:
        peer = await open_peer()
        options = build_request("OPTIONS", f"sip:127.0.0.1:{server.port}", from_="<sip:pbx@127.0.0.1>;tag=1",
                                to=f"<sip:127.0.0.1:{server.port}>", call_id="ka1", cseq=1,
                                via_host=peer.host, via_port=peer.port)
        peer.send(options, ("127.0.0.1", server.port))
        ok = await peer.response(200, "ka1")
        assert "INVITE" in (ok.headers.get("Allow") or "") and "BYE" in (ok.headers.get("Allow") or "")
        assert ok.headers.get("Accept") == "application/sdp"
        assert ok.to_addr.tag


async def test_call_answered_acked_then_caller_bye(open_peer: PeerFactory) -> None:
    rec = Recorder()
    async with running_server(rec) as server:
        peer = await open_peer()
        invite = peer.invite(server.port, headers=[("P-Asserted-Identity", '"Li Si" <sip:+8613900001111@carrier>')])
        peer.send(invite, ("127.0.0.1", server.port))
        trying = await peer.response(100, invite.call_id)
        assert trying.to_addr.tag is None
        ringing = await peer.response(180, invite.call_id)
        ok = await peer.final(invite.call_id)
        assert ok.status == 200 and ok.to_addr.tag == ringing.to_addr.tag
        # The reply came to the INVITE's sender (the Via), not to any registrar.
        answer = parse_sdp(ok.body)
        assert answer.media[0].port == RTP_PORT and answer.connection == "127.0.0.1"
        assert ok.headers.get("Contact") == f"<sip:127.0.0.1:{server.port}>"
        call = rec.calls[0]
        assert (call.caller, call.caller_name, call.called) == ("+8613900001111", "Li Si", "12389")
        assert call.remote_media.codec == "PCMU" and call.remote_media.dtmf_payload_type == 101
        assert call.source == (peer.host, peer.port)

        peer.send(peer.ack_for(invite, ok), ("127.0.0.1", server.port))
        bye = peer.in_dialog("BYE", invite, ok, 2)
        peer.send(bye, ("127.0.0.1", server.port))
        assert (await peer.response(200, invite.call_id, "BYE")).to_addr.tag == ok.to_addr.tag
        await asyncio.wait_for(call.ended.wait(), 10)
        assert call.end_reason == "caller_bye" and rec.accepted == [True]
        # A retransmitted BYE is answered again (Timer J), not treated as an unknown call.
        peer.send(bye, ("127.0.0.1", server.port))
        assert (await peer.final(invite.call_id, "BYE")).status == 200


async def test_caller_from_header_when_no_pai(open_peer: PeerFactory) -> None:
    rec = Recorder()
    async with running_server(rec) as server:
        peer = await open_peer()
        await establish(peer, server)
        assert (rec.calls[0].caller, rec.calls[0].caller_name) == ("13800138000", "Zhang San")


async def test_retransmitted_invite_is_the_same_call(open_peer: PeerFactory) -> None:
    """17.2.3: same branch = same transaction; the last response is resent, no second call."""
    rec = Recorder("ring")
    async with running_server(rec) as server:
        peer = await open_peer()
        invite = peer.invite(server.port)
        peer.send(invite, ("127.0.0.1", server.port))
        first = await peer.response(180, invite.call_id)
        peer.send(invite, ("127.0.0.1", server.port))
        again = await peer.response(180, invite.call_id)
        assert again.to_addr.tag == first.to_addr.tag
        rec.release.set()
        ok = await peer.final(invite.call_id)
        peer.send(invite, ("127.0.0.1", server.port))  # lost 200: the INVITE comes again
        ok_again = await peer.final(invite.call_id)
        assert ok_again.status == 200 and ok_again.body == ok.body
        peer.send(peer.ack_for(invite, ok), ("127.0.0.1", server.port))
        assert len(rec.calls) == 1


async def test_unacked_200_is_retransmitted_then_bye_no_ack(open_peer: PeerFactory) -> None:
    """13.3.1.4: 2xx resent T1, 2T1, ... until ACK; none by 64*T1 -> BYE, call ended "no_ack"."""
    rec = Recorder()
    async with running_server(rec, t1=0.01) as server:
        peer = await open_peer()
        invite = peer.invite(server.port, headers=[("Record-Route", f"<sip:127.0.0.1:{peer.port};lr>")])
        peer.send(invite, ("127.0.0.1", server.port))
        ok = await peer.final(invite.call_id)
        bye = await peer.request("BYE", invite.call_id)
        oks = [m for m in peer.seen if isinstance(m, Response) and m.status == 200]
        assert len(oks) >= 3, "the 200 must be retransmitted while no ACK comes"
        assert all(m.body == ok.body for m in oks)
        peer.send(peer.reply(bye, 200), ("127.0.0.1", server.port))
        call = rec.calls[0]
        await asyncio.wait_for(call.ended.wait(), 10)
        assert call.end_reason == "no_ack"
        assert rec.accepted == [False]
        _check_bye_dialog(bye, invite, ok, peer)


def _check_bye_dialog(bye: Request, invite: Request, ok: Response, peer: Peer) -> None:
    """Our BYE carries the dialog as the caller knows it (12.2.1.1)."""
    assert bye.call_id == invite.call_id
    assert bye.from_addr.tag == ok.to_addr.tag
    assert bye.to_addr.tag == invite.from_addr.tag
    assert bye.uri == f"sip:caller@{peer.host}:{peer.port}"  # the caller's Contact
    assert bye.headers.get_all("Route") == [f"<sip:127.0.0.1:{peer.port};lr>"]
    assert bye.cseq.method == "BYE"
    assert bye.vias[0].has_rfc3261_branch


async def test_hangup_sends_bye_and_retransmits_until_answered(open_peer: PeerFactory) -> None:
    rec = Recorder("accept_then_hangup")
    async with running_server(rec, t1=0.01) as server:
        peer = await open_peer()
        invite, ok = await establish(peer, server, headers=[("Record-Route", f"<sip:127.0.0.1:{peer.port};lr>")])
        await asyncio.wait_for(rec.offered.wait(), 10)
        rec.release.set()
        bye = await peer.request("BYE", invite.call_id)
        again = await peer.request("BYE", invite.call_id)  # not answered: Timer E resends it
        assert again.vias[0].branch == bye.vias[0].branch and again.cseq == bye.cseq
        peer.send(peer.reply(again, 200), ("127.0.0.1", server.port))
        call = rec.calls[0]
        await asyncio.wait_for(call.ended.wait(), 10)
        assert call.end_reason == "local_bye"
        _check_bye_dialog(bye, invite, ok, peer)


async def test_bye_strict_route_uses_route_as_request_uri(open_peer: PeerFactory) -> None:
    """12.2.1.1: a route without `lr` goes in the Request-URI and the Contact moves to the last Route."""
    rec = Recorder("accept_then_hangup")
    async with running_server(rec) as server:
        peer = await open_peer()
        route = f"<sip:127.0.0.1:{peer.port}>"
        invite, ok = await establish(peer, server, headers=[("Record-Route", route)])
        await asyncio.wait_for(rec.offered.wait(), 10)
        rec.release.set()
        bye = await peer.request("BYE", invite.call_id)
        assert bye.uri == f"sip:127.0.0.1:{peer.port}"
        assert bye.headers.get_all("Route") == [f"<sip:caller@{peer.host}:{peer.port}>"]
        peer.send(peer.reply(bye, 200), ("127.0.0.1", server.port))


async def test_hangup_gives_up_when_bye_is_never_answered(open_peer: PeerFactory) -> None:
    rec = Recorder("accept_then_hangup")
    async with running_server(rec, t1=0.005) as server:
        peer = await open_peer()
        invite, _ = await establish(peer, server)
        await asyncio.wait_for(rec.offered.wait(), 10)
        call = rec.calls[0]
        while call.state != "confirmed":
            await asyncio.sleep(0.01)
        await asyncio.wait_for(call.hangup(), 10)  # Timer F: returns although nobody answers
        assert call.end_reason == "local_bye"
        first = await peer.request("BYE", invite.call_id)
        again = await peer.request("BYE", invite.call_id)
        assert again.vias[0].branch == first.vias[0].branch


async def test_cancel_while_ringing(open_peer: PeerFactory) -> None:
    """9.2: 200 to the CANCEL, 487 to the INVITE; the call layer's accept then returns False."""
    rec = Recorder("ring")
    async with running_server(rec) as server:
        peer = await open_peer()
        invite = peer.invite(server.port)
        peer.send(invite, ("127.0.0.1", server.port))
        ringing = await peer.response(180, invite.call_id)
        cancel = build_request("CANCEL", invite.uri, from_=invite.headers.get("From") or "",
                               to=invite.headers.get("To") or "", call_id=invite.call_id, cseq=1,
                               via_host=peer.host, via_port=peer.port, branch=invite.vias[0].branch)
        peer.send(cancel, ("127.0.0.1", server.port))
        assert (await peer.final(invite.call_id, "CANCEL")).status == 200
        terminated = await peer.final(invite.call_id, "INVITE")
        assert terminated.status == 487 and terminated.to_addr.tag == ringing.to_addr.tag
        peer.send(peer.ack_for(invite, terminated), ("127.0.0.1", server.port))
        call = rec.calls[0]
        assert call.ended.is_set() and call.end_reason == "cancel"
        rec.release.set()
        await asyncio.sleep(0)
        # a CANCEL for nothing we know -> 481
        stray = build_request("CANCEL", invite.uri, from_="<sip:x@127.0.0.1>;tag=9", to="<sip:12389@127.0.0.1>",
                              call_id="nope", cseq=1, via_host=peer.host, via_port=peer.port)
        peer.send(stray, ("127.0.0.1", server.port))
        assert (await peer.final("nope", "CANCEL")).status == 481
    assert rec.accepted == [False]


async def test_untrusted_source_gets_403_and_no_call(open_peer: PeerFactory) -> None:
    rec = Recorder()
    async with running_server(rec, trusted=["127.0.0.1"]) as server:
        peer = await open_peer("127.0.0.2")
        invite = peer.invite(server.port)
        peer.send(invite, ("127.0.0.1", server.port))
        forbidden = await peer.final(invite.call_id)
        assert forbidden.status == 403
        peer.send(peer.ack_for(invite, forbidden), ("127.0.0.1", server.port))
    assert rec.calls == []


async def test_trusted_cidr_admits_the_network(open_peer: PeerFactory) -> None:
    rec = Recorder()
    async with running_server(rec, trusted=["127.0.0.0/24"]) as server:
        peer = await open_peer("127.0.0.2")
        await establish(peer, server)
        assert len(rec.calls) == 1


async def test_unknown_dialog_bye_481_and_stray_ack_ignored(open_peer: PeerFactory) -> None:
    async with running_server(Recorder()) as server:
        peer = await open_peer()
        common = dict(from_="<sip:a@127.0.0.1>;tag=aa", to="<sip:12389@127.0.0.1>;tag=bb", call_id="ghost",
                      via_host=peer.host, via_port=peer.port)
        peer.send(build_request("ACK", f"sip:127.0.0.1:{server.port}", cseq=1, **common), ("127.0.0.1", server.port))  # type: ignore[arg-type]
        peer.send(build_request("BYE", f"sip:127.0.0.1:{server.port}", cseq=2, **common), ("127.0.0.1", server.port))  # type: ignore[arg-type]
        first = await peer.recv()  # the ACK got nothing, so the first reply is the BYE's
        assert isinstance(first, Response) and first.status == 481 and first.cseq.method == "BYE"


async def test_methods_refused_as_rfc_3261_says(open_peer: PeerFactory) -> None:
    async with running_server(Recorder()) as server:
        peer = await open_peer()
        expected = {"REGISTER": 405, "MESSAGE": 501, "FOOBAR": 501, "INFO": 481}
        for method, status in expected.items():
            req = build_request(method, f"sip:127.0.0.1:{server.port}", from_="<sip:a@127.0.0.1>;tag=x",
                                to="<sip:127.0.0.1>", call_id=f"m-{method}", cseq=1, via_host=peer.host,
                                via_port=peer.port)
            peer.send(req, ("127.0.0.1", server.port))
            reply = await peer.final(f"m-{method}", method)
            assert reply.status == status, method
            if status in (405, 501):
                assert "INVITE" in (reply.headers.get("Allow") or "")


async def test_in_dialog_info_update_options_and_unknown(open_peer: PeerFactory) -> None:
    rec = Recorder()
    async with running_server(rec) as server:
        peer = await open_peer()
        invite, ok = await establish(peer, server)
        info = peer.in_dialog("INFO", invite, ok, 2, body=b"Signal=5\r\nDuration=160\r\n",
                              content_type="application/dtmf-relay")
        peer.send(info, ("127.0.0.1", server.port))
        assert (await peer.final(invite.call_id, "INFO")).status == 200
        peer.send(peer.in_dialog("UPDATE", invite, ok, 3), ("127.0.0.1", server.port))
        assert (await peer.final(invite.call_id, "UPDATE")).status == 200
        peer.send(peer.in_dialog("REFER", invite, ok, 4), ("127.0.0.1", server.port))
        assert (await peer.final(invite.call_id, "REFER")).status == 501
        # 12.2.2: a lower CSeq than the last one is out of order
        peer.send(peer.in_dialog("OPTIONS", invite, ok, 1), ("127.0.0.1", server.port))
        assert (await peer.final(invite.call_id, "OPTIONS")).status == 500
        assert not rec.calls[0].ended.is_set()


def _info_bytes(invite: Request, ok: Response, peer: Peer, cseq: int, content_type: str | None, body: bytes) -> bytes:
    """An in-dialog INFO exactly as a PBX puts it on the wire (CRLF lines, byte-counted Content-Length)."""
    lines = [
        f"INFO {(ok.headers.get('Contact') or '').strip('<>')} SIP/2.0",
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bKinfo{cseq}",
        f"From: {invite.headers.get('From')}", f"To: {ok.headers.get('To')}",
        f"Call-ID: {invite.call_id}", f"CSeq: {cseq} INFO", "Max-Forwards: 70",
    ]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def test_info_dtmf_feeds_the_digit_queue(open_peer: PeerFactory) -> None:
    """SIP INFO key presses (the fallback some PBXs use instead of RFC 4733) reach on_digit once each."""
    rec = Recorder()
    async with running_server(rec) as server:
        peer = await open_peer()
        target = ("127.0.0.1", server.port)
        invite, ok = await establish(peer, server)
        digits: list[str] = []
        rec.calls[0].on_digit = digits.append
        cases: list[tuple[str | None, bytes, int]] = [
            ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", 200),
            ("Application/DTMF-Relay; charset=us-ascii", b"Signal= #\r\nDuration=250\r\n", 200),
            ("application/dtmf-relay", b"Signal=10\r\nDuration=160\r\n", 200),  # event code of '*'
            ("application/dtmf", b"7", 200),
            ("application/dtmf-relay", b"Signal=Z\r\n", 400),
            ("application/dtmf-relay", b"Duration=160\r\n", 400),
            ("application/dtmf-relay", b"Signal=99\r\n", 400),
            ("application/dtmf", "\u4e94".encode(), 400),
            ("text/plain", b"hello", 415),
            (None, b"", 200),  # an empty INFO: keep-alive
        ]
        for cseq, (content_type, body, status) in enumerate(cases, start=2):
            data = _info_bytes(invite, ok, peer, cseq, content_type, body)
            peer.send(data, target)
            reply = await peer.final(invite.call_id, "INFO")
            assert (reply.status, reply.cseq.number) == (status, cseq), (content_type, body)
            if status == 415:
                assert reply.headers.get("Accept") == "application/dtmf-relay, application/dtmf"
        # A retransmission (same branch) is answered from the cache, not pressed twice.
        peer.send(_info_bytes(invite, ok, peer, 2, "application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"), target)
        assert (await peer.final(invite.call_id, "INFO")).status == 200
        assert digits == ["5", "#", "*", "7"]
        assert not rec.calls[0].ended.is_set()


@pytest.mark.parametrize(("attrs", "status"), [
    ("a=ptime:30\r\n", 200), ("a=ptime:40\r\na=maxptime:40\r\n", 200), ("a=ptime:10\r\n", 200),
    ("a=ptime:10\r\na=maxptime:10\r\n", 488),
])
async def test_offers_with_other_ptimes_are_answered_with_20_ms(open_peer: PeerFactory, attrs: str, status: int) -> None:
    """RFC 4566 ptime is a wish, maxptime a limit: we send 20 ms unless the caller cannot take it (488)."""
    rec = Recorder()
    async with running_server(rec) as server:
        peer = await open_peer()
        body = offer(peer.host).replace(b"a=sendrecv\r\n", attrs.encode() + b"a=sendrecv\r\n")
        invite = peer.invite(server.port, body=body)
        peer.send(invite, ("127.0.0.1", server.port))
        final = await peer.final(invite.call_id)
        assert final.status == status
        if status == 200:
            answer = parse_sdp(final.body).media[0]
            assert answer.ptime == 20 and answer.maxptime is None
            peer.send(peer.ack_for(invite, final), ("127.0.0.1", server.port))
        else:
            assert "maxptime is 10 ms; we send 20 ms" in (final.headers.get("Warning") or "")
            assert not rec.calls


async def test_reinvite_hold_and_unhold_keep_the_call(open_peer: PeerFactory) -> None:
    rec = Recorder()
    async with running_server(rec) as server:
        peer = await open_peer()
        invite, ok = await establish(peer, server)
        call = rec.calls[0]
        updates: list[bool] = []
        call.on_media_update = lambda choice: updates.append(choice.on_hold)
        cseq = 2
        for body, held, direction in [
            (offer(direction="sendonly"), True, "recvonly"),
            (offer(host="0.0.0.0"), True, "recvonly"),
            (offer(direction="inactive"), True, "inactive"),
            (offer(port=40002), False, "sendrecv"),
        ]:
            reinvite = peer.in_dialog("INVITE", invite, ok, cseq, body=body, content_type="application/sdp")
            peer.send(reinvite, ("127.0.0.1", server.port))
            answer = await peer.final(invite.call_id, "INVITE")
            while answer.cseq.number != cseq:  # skip a late retransmission of the previous 200
                answer = await peer.final(invite.call_id, "INVITE")
            assert answer.status == 200
            sdp = parse_sdp(answer.body)
            assert sdp.media[0].port == RTP_PORT and sdp.media[0].direction == direction
            peer.send(peer.ack_for(reinvite, answer), ("127.0.0.1", server.port))
            assert call.on_hold is held
            cseq += 1
        assert call.remote_media.remote_port == 40002 and not call.ended.is_set()
        assert updates[0] is True and updates[-1] is False
        # a re-INVITE we cannot speak: 488, the call stays up with its media unchanged
        bad = peer.in_dialog("INVITE", invite, ok, cseq, content_type="application/sdp",
                             body=b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4 RTP/AVP 18\r\n")
        peer.send(bad, ("127.0.0.1", server.port))
        refused = await peer.final(invite.call_id, "INVITE")
        while refused.cseq.number != cseq:
            refused = await peer.final(invite.call_id, "INVITE")
        assert refused.status == 488
        peer.send(peer.ack_for(bad, refused), ("127.0.0.1", server.port))
        assert call.remote_media.remote_port == 40002 and not call.ended.is_set()


async def test_no_common_codec_488_and_other_offer_refusals(open_peer: PeerFactory) -> None:
    rec = Recorder()
    async with running_server(rec) as server:
        peer = await open_peer()
        g729 = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\n"
        cases = [
            (peer.invite(server.port, body=g729), 488),
            (peer.invite(server.port, body=b""), 488),  # delayed offer: not supported (see report)
            (peer.invite(server.port, body=b"not sdp at all"), 400),
            (peer.invite(server.port, headers=[("Require", "100rel")]), 420),
            (peer.invite(server.port, headers=[("Accept", "text/plain")]), 406),
        ]
        for invite, status in cases:
            peer.send(invite, ("127.0.0.1", server.port))
            final = await peer.final(invite.call_id)
            assert final.status == status, invite.call_id
            peer.send(peer.ack_for(invite, final), ("127.0.0.1", server.port))
        weird_type = peer.invite(server.port)
        weird_type.headers.set("Content-Type", "application/x-unknown")
        peer.send(weird_type, ("127.0.0.1", server.port))
        assert (await peer.final(weird_type.call_id)).status == 415
    assert rec.calls == []


async def test_on_call_exception_answers_500_and_server_survives(open_peer: PeerFactory) -> None:
    rec = Recorder("raise")
    async with running_server(rec) as server:
        peer = await open_peer()
        invite = peer.invite(server.port)
        peer.send(invite, ("127.0.0.1", server.port))
        assert (await peer.final(invite.call_id)).status == 500
        rec.action = "accept"
        await establish(peer, server)


async def test_shutdown_byes_answered_calls(open_peer: PeerFactory) -> None:
    rec = Recorder()
    peer = await open_peer()
    async with running_server(rec) as server:
        invite, _ = await establish(peer, server)
        await asyncio.wait_for(rec.offered.wait(), 10)
        while not rec.accepted:
            await asyncio.sleep(0.01)
    assert rec.calls[0].end_reason == "shutdown"
    assert (await peer.request("BYE", invite.call_id)).cseq.method == "BYE"


def _raw(method: str, port: int, peer_port: int, call_id: str | None, extra: str = "", body: str = "",
         content_length: int | None = None) -> bytes:
    lines = [f"{method} sip:12389@127.0.0.1:{port} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{peer_port};branch=z9hG4bK{call_id or 'x'}{len(extra)}",
             "From: <sip:13800138000@127.0.0.1>;tag=f1", f"To: <sip:12389@127.0.0.1:{port}>",
             f"CSeq: 1 {method}", "Max-Forwards: 70", f"Contact: <sip:c@127.0.0.1:{peer_port}>"]
    if call_id is not None:
        lines.append(f"Call-ID: {call_id}")
    if extra:
        lines.append(extra)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode()) if content_length is None else content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


async def test_bad_input_is_answered_or_dropped_and_calls_still_work(open_peer: PeerFactory) -> None:
    rec = Recorder()
    async with running_server(rec) as server:
        peer = await open_peer()
        target = ("127.0.0.1", server.port)
        sdp = offer().decode()
        peer.send(b"\x00\xff\x13garbage" * 20, target)  # dropped: nothing to answer
        peer.send(b"\r\n\r\n", target)  # keep-alive: ignored
        peer.send(_raw("INVITE", server.port, peer.port, "trunc")[:150], target)
        peer.send(_raw("INVITE", server.port, peer.port, None), target)  # no Call-ID
        peer.send(_raw("INVITE", server.port, peer.port, "liar", body=sdp, content_length=5000), target)
        peer.send(_raw("INVITE", server.port, peer.port, "negcl", body=sdp, content_length=-3), target)
        big = _raw("OPTIONS", server.port, peer.port, "bighdr", extra="X-Filler: " + "a" * 60000)
        peer.send(big, target)  # 60 kB: as large as a UDP datagram gets; a valid request
        replies: dict[str, int] = {}
        while "bighdr" not in replies:
            m = await peer.recv()
            assert isinstance(m, Response)
            replies[m.call_id] = m.status
        assert replies == {"": 400, "liar": 400, "negcl": 400, "bighdr": 200}
        # The truncated INVITE (cut inside From) and the one without Call-ID both got a 400
        # copying what could be read; the garbage and the keep-alive got nothing.
        no_id = [m for m in peer.seen if isinstance(m, Response) and not m.call_id]
        assert [m.status for m in no_id] == [400, 400]
        # A Content-Length shorter than the body: the SDP is cut before its m= line, so the
        # offer is refused (488, no audio stream), not guessed from the ignored octets.
        short = _raw("INVITE", server.port, peer.port, "short", body=sdp, content_length=20)
        peer.send(short, target)
        assert (await peer.final("short")).status == 488
        await establish(peer, server)  # and a normal call still works
        assert len(rec.calls) == 1


def test_100_kb_datagram_gets_513() -> None:
    """UDP on loopback cannot carry 100 kB, so feed it to the protocol directly (what a jumbo path would deliver)."""
    sent: list[tuple[bytes, tuple[str, int]]] = []

    class FakeTransport(asyncio.DatagramTransport):
        def sendto(self, data: bytes, addr: tuple[str, int] | None = None) -> None:  # type: ignore[override]
            assert addr is not None
            sent.append((bytes(data), addr))

        def is_closing(self) -> bool:
            return False

    protocol = SipTransport(lambda r, s: None, lambda r, s: None)
    protocol.connection_made(FakeTransport())
    data = _raw("INVITE", 5060, 5070, "huge", extra="X-Filler: " + "b" * 100_000)
    protocol.datagram_received(data, ("127.0.0.1", 5070))
    assert len(sent) == 1
    reply = sent[0][0].decode()
    assert reply.startswith("SIP/2.0 513 ") and "Call-ID: huge" in reply
    assert sent[0][1] == ("127.0.0.1", 5070)
