"""Outbound calls (ivr/sip/outgoing.py) byte by byte, against a raw Python callee on loopback UDP (tests/sip_peer.py).

What SIPp cannot show precisely is checked here: the exact ACK and CANCEL we send (branch,
CSeq, To-tag, Route, Request-URI), CANCEL only after a provisional, the ACK repeated for a
retransmitted 200, bad answers, digest on a 407, a callee that never answers. Waits are
bounded by a safety limit; nothing asserts on how long anything took.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from config.settings import SipSettings
from ivr.sip.message import Request, Response, SipParseError, build_response
from ivr.sip.register import RegisterTiming, digest_response, parse_challenges
from ivr.sip.outgoing import OutgoingCall, outcome_for_status
from ivr.sip.sdp import parse_sdp
from ivr.sip.transactions import Timers
from ivr.sip.ua import SipServer
from tests.sip_peer import Peer, offer

RTP_PORT = 31236
TIMERS = Timers(t1=0.1, t2=0.8, t4=1.0, b=1.5)


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    p = await Peer.open()
    yield p
    p.close()


@pytest.fixture
async def server() -> AsyncIterator[SipServer]:
    s = SipServer(SipSettings(mode="trunk", bind_host="127.0.0.1", bind_port=0, public_host="127.0.0.1"),
                  _no_inbound, timers=TIMERS, shutdown_grace=0.5)
    await s.start()
    yield s
    await s.stop()


async def _no_inbound(call: object) -> None:
    raise AssertionError("no inbound call expected")


def _uri(peer: Peer, user: str = "13800138000") -> str:
    return f"sip:{user}@127.0.0.1:{peer.port}"


def _dial(server: SipServer, peer: Peer, ring_timeout: float = 10.0) -> asyncio.Task[OutgoingCall]:
    return asyncio.ensure_future(server.dial(_uri(peer), from_user="12389", local_rtp_port=RTP_PORT,
                                             ring_timeout=ring_timeout))


def _reply(invite: Request, status: int, tag: str | None = "callee1", *, body: bytes = b"",
           headers: list[tuple[str, str]] | None = None, peer: Peer | None = None) -> Response:
    extra = list(headers or [])
    if peer is not None and 100 < status < 300:
        extra.append(("Contact", f"<sip:callee@127.0.0.1:{peer.port}>"))
    return build_response(invite, status, to_tag=tag, body=body, content_type="application/sdp" if body else None,
                          headers=extra)


def _answer_sdp(pt: int = 8, codec: str = "PCMA") -> bytes:
    return (f"v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio 40002 RTP/AVP {pt} 101\r\na=rtpmap:{pt} {codec}/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n").encode()


async def _answered(server: SipServer, peer: Peer, headers: list[tuple[str, str]] | None = None
                    ) -> tuple[OutgoingCall, Request, Response, Request]:
    task = _dial(server, peer)
    invite = await peer.request("INVITE")
    to = ("127.0.0.1", server.port)
    peer.send(_reply(invite, 180, peer=peer), to)
    ok = _reply(invite, 200, body=_answer_sdp(), headers=headers, peer=peer)
    peer.send(ok, to)
    call = await asyncio.wait_for(task, 10)
    ack = await peer.request("ACK")
    return call, invite, ok, ack


def test_outcome_for_status() -> None:
    cases = {200: "answered", 486: "busy", 600: "busy", 404: "invalid_number", 484: "invalid_number",
             485: "invalid_number", 604: "invalid_number", 403: "rejected", 603: "rejected", 488: "rejected",
             480: "no_answer", 487: "no_answer", 500: "failed", 503: "failed", 302: "failed"}
    assert {s: outcome_for_status(s) for s in cases} == cases


async def test_invite_offers_g711_and_telephone_event(server: SipServer, peer: Peer) -> None:
    task = _dial(server, peer)
    invite = await peer.request("INVITE")
    media = parse_sdp(invite.body).media[0]
    assert invite.uri == _uri(peer) and invite.content_type == "application/sdp"
    assert media.port == RTP_PORT and media.formats[:3] == ["0", "8", "101"]
    assert {media.codec(0).encoding, media.codec(8).encoding, media.codec(101).encoding} == {  # type: ignore[union-attr]
        "PCMU", "PCMA", "telephone-event"}
    assert invite.from_addr.tag and invite.to_addr.tag is None and invite.cseq.number == 1
    assert invite.vias[0].has_rfc3261_branch and invite.headers.get("Contact") == server.contact()
    assert "12389@" in invite.from_addr.uri
    peer.send(_reply(invite, 486), ("127.0.0.1", server.port))
    assert (await asyncio.wait_for(task, 10)).outcome == "busy"


async def test_2xx_ack_is_a_new_transaction_in_the_dialog(server: SipServer, peer: Peer) -> None:
    """13.2.2.4 / 12.1.2: new branch, INVITE's CSeq number, callee's To-tag, route set = Record-Route reversed."""
    rr = [("Record-Route", "<sip:10.255.0.9;lr>, <sip:127.0.0.1:%d;lr>" % peer.port)]
    call, invite, ok, ack = await _answered(server, peer, headers=rr)
    assert call.outcome == "answered" and call.sip_status == 200 and call.state == "confirmed"
    assert call.remote_media is not None and call.remote_media.codec == "PCMA"
    assert ack.vias[0].branch != invite.vias[0].branch and ack.vias[0].has_rfc3261_branch
    assert str(ack.cseq) == "1 ACK"
    assert ack.to_addr.tag == "callee1" and ack.from_addr.tag == invite.from_addr.tag
    assert ack.call_id == invite.call_id
    assert ack.uri == f"sip:callee@127.0.0.1:{peer.port}"  # the Contact of the 200 (remote target)
    assert ack.headers.get_all("Route") == [f"<sip:127.0.0.1:{peer.port};lr>", "<sip:10.255.0.9;lr>"]
    # The callee missed our ACK and resends its 200: the same ACK again, no new dialog.
    peer.send(ok, ("127.0.0.1", server.port))
    again = await peer.request("ACK")
    assert again.to_bytes() == ack.to_bytes()
    # Our BYE: next CSeq, same dialog, same route.
    hang = asyncio.ensure_future(call.hangup())
    bye = await peer.request("BYE")
    assert bye.cseq.number == 2 and bye.to_addr.tag == "callee1" and bye.from_addr.tag == invite.from_addr.tag
    assert bye.headers.get_all("Route") == ack.headers.get_all("Route")
    peer.send(build_response(bye, 200), ("127.0.0.1", server.port))
    await asyncio.wait_for(hang, 10)
    assert call.end_reason == "local_bye"


async def test_callee_bye_and_hold_reinvite_keep_then_end_the_call(server: SipServer, peer: Peer) -> None:
    call, invite, ok, ack = await _answered(server, peer)
    updates = []
    call.on_media_update = updates.append
    to = ("127.0.0.1", server.port)
    hold = peer.in_dialog("INVITE", invite, ok, 1, body=offer(direction="sendonly"), content_type="application/sdp")
    hold.headers.set("From", ok.headers.get("To") or "")
    hold.headers.set("To", invite.headers.get("From") or "")
    peer.send(hold, to)
    answer = await peer.final(invite.call_id, "INVITE")
    assert answer.status == 200 and b"a=recvonly" in answer.body and f" {RTP_PORT} ".encode() in answer.body
    ack2 = peer.ack_for(hold, answer)
    peer.send(ack2, to)
    assert call.on_hold and not call.ended.is_set() and updates and updates[-1].on_hold
    bye = peer.in_dialog("BYE", invite, ok, 2)
    bye.headers.set("From", ok.headers.get("To") or "")
    bye.headers.set("To", invite.headers.get("From") or "")
    peer.send(bye, to)
    assert (await peer.final(invite.call_id, "BYE")).status == 200
    await asyncio.wait_for(call.ended.wait(), 10)
    assert call.end_reason == "callee_bye"


@pytest.mark.parametrize(("status", "outcome"), [(486, "busy"), (404, "invalid_number"), (603, "rejected"),
                                                 (403, "rejected"), (503, "failed")])
async def test_failure_is_acked_in_the_invite_transaction(server: SipServer, peer: Peer, status: int,
                                                          outcome: str) -> None:
    """17.1.1.3: same branch, To with the response's tag, CSeq n ACK, INVITE's Request-URI; again per retransmission."""
    task = _dial(server, peer)
    invite = await peer.request("INVITE")
    failure = _reply(invite, status, tag="busy7")
    peer.send(failure, ("127.0.0.1", server.port))
    call = await asyncio.wait_for(task, 10)
    assert (call.outcome, call.sip_status) == (outcome, status) and call.ended.is_set()
    ack = await peer.request("ACK")
    assert ack.vias[0].branch == invite.vias[0].branch and len(ack.vias) == 1
    assert ack.to_addr.tag == "busy7" and str(ack.cseq) == "1 ACK" and ack.uri == invite.uri
    assert ack.headers.get("From") == invite.headers.get("From")
    peer.send(failure, ("127.0.0.1", server.port))
    assert (await peer.request("ACK")).to_bytes() == ack.to_bytes()


async def test_ring_timeout_cancels_after_provisional_then_487(server: SipServer, peer: Peer) -> None:
    task = _dial(server, peer, ring_timeout=0.3)
    invite = await peer.request("INVITE")
    to = ("127.0.0.1", server.port)
    peer.send(_reply(invite, 180, peer=peer), to)
    cancel = await peer.request("CANCEL")
    assert cancel.vias[0].branch == invite.vias[0].branch and str(cancel.cseq) == "1 CANCEL"
    assert cancel.uri == invite.uri and cancel.to_addr.tag is None
    assert cancel.headers.get("From") == invite.headers.get("From") and cancel.call_id == invite.call_id
    peer.send(build_response(cancel, 200), to)
    peer.send(_reply(invite, 487), to)
    call = await asyncio.wait_for(task, 10)
    assert (call.outcome, call.sip_status, call.end_reason) == ("no_answer", 487, "ring_timeout")
    assert (await peer.request("ACK")).vias[0].branch == invite.vias[0].branch


async def test_no_cancel_before_a_provisional_response(server: SipServer, peer: Peer) -> None:
    """9.1: a CANCEL may not overtake the INVITE; it goes once the callee has said something."""
    task = _dial(server, peer, ring_timeout=0.2)
    invite = await peer.request("INVITE")
    # The ring timeout passes in silence: only INVITE retransmissions (Timer A) may arrive.
    await asyncio.sleep(0.5)
    while not peer.queue.empty():
        assert (await peer.recv()).method == "INVITE"  # type: ignore[union-attr]
    peer.send(_reply(invite, 183, peer=peer), ("127.0.0.1", server.port))
    cancel = await peer.request("CANCEL")
    peer.send(build_response(cancel, 200), ("127.0.0.1", server.port))
    peer.send(_reply(invite, 487), ("127.0.0.1", server.port))
    assert (await asyncio.wait_for(task, 10)).outcome == "no_answer"


async def test_200_crossing_cancel_is_acked_and_byed(server: SipServer, peer: Peer) -> None:
    task = _dial(server, peer, ring_timeout=0.2)
    invite = await peer.request("INVITE")
    peer.send(_reply(invite, 180, peer=peer), ("127.0.0.1", server.port))
    await peer.request("CANCEL")
    peer.send(_reply(invite, 200, body=_answer_sdp(), peer=peer), ("127.0.0.1", server.port))
    call = await asyncio.wait_for(task, 10)
    assert call.outcome == "no_answer"
    assert (await peer.request("ACK")).to_addr.tag == "callee1"
    bye = await peer.request("BYE")
    peer.send(build_response(bye, 200), ("127.0.0.1", server.port))


@pytest.mark.parametrize("body", [b"", _answer_sdp(18, "G729")], ids=["no_sdp", "no_common_codec"])
async def test_200_without_usable_sdp_is_acked_then_byed(server: SipServer, peer: Peer, body: bytes) -> None:
    task = _dial(server, peer)
    invite = await peer.request("INVITE")
    peer.send(_reply(invite, 200, body=body, peer=peer), ("127.0.0.1", server.port))
    call = await asyncio.wait_for(task, 10)
    assert (call.outcome, call.sip_status, call.end_reason) == ("failed", 200, "bad_answer_sdp")
    ack = await peer.request("ACK")
    bye = await peer.request("BYE")
    assert ack.to_addr.tag == bye.to_addr.tag == "callee1" and bye.cseq.number == 2
    peer.send(build_response(bye, 200), ("127.0.0.1", server.port))


async def test_hangup_while_ringing_cancels(server: SipServer, peer: Peer) -> None:
    task = _dial(server, peer)
    invite = await peer.request("INVITE")
    peer.send(_reply(invite, 180, peer=peer), ("127.0.0.1", server.port))
    await asyncio.sleep(0.05)
    task.cancel()  # the dialer's caller gave up: the server CANCELs in the background
    cancel = await peer.request("CANCEL")
    peer.send(build_response(cancel, 200), ("127.0.0.1", server.port))
    peer.send(_reply(invite, 487), ("127.0.0.1", server.port))
    await peer.request("ACK")
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_unreachable_callee_fails_after_timer_b(server: SipServer) -> None:
    """Nothing listens there (ICMP port unreachable, logged by the transport): Timer B ends it as failed."""
    closed = await Peer.open()
    port = closed.port
    closed.close()
    call = await asyncio.wait_for(
        server.dial(f"sip:1@127.0.0.1:{port}", from_user="12389", local_rtp_port=RTP_PORT), 20)
    assert (call.outcome, call.sip_status, call.end_reason) == ("failed", None, "timeout")
    assert server.calls == []


async def test_response_for_unknown_transaction_is_ignored(server: SipServer, peer: Peer) -> None:
    task = _dial(server, peer)
    invite = await peer.request("INVITE")
    stray = _reply(invite, 200, body=_answer_sdp(), peer=peer)
    stray.headers.set("Via", f"SIP/2.0/UDP 127.0.0.1:{server.port};branch=z9hG4bKnotours")
    peer.send(stray, ("127.0.0.1", server.port))
    peer.send(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKx\r\n\r\n", ("127.0.0.1", server.port))
    await asyncio.sleep(0.3)
    assert not task.done()  # neither response touched our call
    peer.send(_reply(invite, 486), ("127.0.0.1", server.port))
    assert (await asyncio.wait_for(task, 10)).outcome == "busy"
    assert [m.method for m in peer.seen if isinstance(m, Request)].count("ACK") <= 1


async def test_bad_dial_targets_are_refused_before_sending(server: SipServer) -> None:
    for bad in ("not a uri", "tel:+861234", "sip:"):
        with pytest.raises(SipParseError):
            await server.dial(bad, from_user="12389", local_rtp_port=RTP_PORT)


async def test_register_mode_answers_407_with_digest(peer: Peer) -> None:
    """The registrar (here the peer) challenges our INVITE; we answer once with register.py's digest."""
    settings = SipSettings(mode="register", bind_host="127.0.0.1", bind_port=0, public_host="127.0.0.1",
                           registrar=f"127.0.0.1:{peer.port}", username="1001", password="s3cret")
    server = SipServer(settings, _no_inbound, timers=TIMERS, shutdown_grace=0.5,
                       register_timing=RegisterTiming(retry_min=60, retry_max=60, deregister_timeout=0.5))
    await server.start()
    to = ("127.0.0.1", 0)
    try:
        register = await peer.request("REGISTER")
        to = ("127.0.0.1", server.port)
        peer.send(build_response(register, 200, headers=[("Expires", "300")]), to)
        task = asyncio.ensure_future(server.dial("sip:13800138000@pbx.invalid", from_user="x",
                                                 local_rtp_port=RTP_PORT))
        first = await peer.request("INVITE")  # sent to the registrar although the URI names another host
        assert first.uri == "sip:13800138000@pbx.invalid" and "1001@" in first.from_addr.uri
        peer.send(_reply(first, 407, tag="auth1", headers=[
            ("Proxy-Authenticate", 'Digest realm="pbx", nonce="abc123", qop="auth", algorithm=MD5')]), to)
        assert (await peer.request("ACK")).vias[0].branch == first.vias[0].branch
        second = await peer.request("INVITE")
        assert second.cseq.number == 2 and second.vias[0].branch != first.vias[0].branch
        assert second.call_id == first.call_id and second.from_addr.tag == first.from_addr.tag
        auth = second.headers.get("Proxy-Authorization") or ""
        params = dict(p.strip().split("=", 1) for p in auth.removeprefix("Digest ").split(","))
        params = {k: v.strip('"') for k, v in params.items()}
        challenge = parse_challenges(['Digest realm="pbx", nonce="abc123", qop="auth"'])[0]
        assert params["response"] == digest_response(
            username="1001", password="s3cret", realm=challenge.realm, nonce="abc123", method="INVITE",
            uri=second.uri, qop="auth", nc=params["nc"], cnonce=params["cnonce"])
        # A second challenge after our answer means wrong credentials: no third INVITE, outcome rejected.
        peer.send(_reply(second, 407, tag="auth2", headers=[
            ("Proxy-Authenticate", 'Digest realm="pbx", nonce="def456", algorithm=MD5')]), to)
        call = await asyncio.wait_for(task, 10)
        assert (call.outcome, call.sip_status) == ("rejected", 407)
    finally:
        stop = asyncio.ensure_future(server.stop())
        with_unregister = await peer.request("REGISTER")
        peer.send(build_response(with_unregister, 200), to)
        await stop
