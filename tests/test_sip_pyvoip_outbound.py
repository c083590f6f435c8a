"""pyVoIP 1.6.8's outbound defects (PYVOIP.md item 5) shown failing on plain pyVoIP, then passing on ours.

pyVoIP is driven on real loopback sockets: `VoIPPhone.call()` sends its INVITE to a callee
socket of the test (a thread answers 180, as `invite()` blocks for it), and `SIPClient.recv()`
processes exactly one datagram. Its `start()` is not used (it blocks 30 s registering, item 2).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from config.settings import SipSettings
from ivr.sip.message import Request, build_response, parse_message
from ivr.sip.transactions import Timers
from ivr.sip.ua import SipServer
from tests.sip_peer import Peer

SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 40010 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")


@pytest.fixture
def pyvoip_dialing() -> Iterator[tuple[Any, Any, socket.socket, Request]]:
    """A pyVoIP phone that has dialled the test's callee socket and got 180: (phone, call, callee, INVITE)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pyVoIP imports audioop
        import pyVoIP.VoIP as voip  # type: ignore[import-untyped]

    callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    callee.bind(("127.0.0.1", 0))
    callee.settimeout(10)
    phone = voip.VoIPPhone("127.0.0.1", callee.getsockname()[1], "1001", "pw", myIP="127.0.0.1", sipPort=0,
                           rtpPortLow=30000, rtpPortHigh=30100)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    phone.sip.s = phone.sip.out = sock
    phone.sip.myPort = sock.getsockname()[1]
    seen: list[Request] = []

    def ring() -> None:
        data, _ = callee.recvfrom(65535)
        invite = parse_message(data)
        assert isinstance(invite, Request)
        seen.append(invite)
        callee.sendto(build_response(invite, 180, to_tag="callee180").to_bytes(), sock.getsockname())

    thread = threading.Thread(target=ring)
    thread.start()
    call = phone.call("13800138000")
    thread.join()
    yield phone, call, callee, seen[0]
    sock.close()
    callee.close()


@pytest.fixture
async def server() -> Iterator[SipServer]:
    async def no_inbound(call: object) -> None:
        raise AssertionError("no inbound call expected")

    s = SipServer(SipSettings(mode="trunk", bind_host="127.0.0.1", bind_port=0, public_host="127.0.0.1"),
                  no_inbound, timers=Timers(t1=0.1, t2=0.8, b=2.0), shutdown_grace=0.5)
    await s.start()
    yield s  # type: ignore[misc]
    await s.stop()


async def test_ack_for_2xx_pyvoip_wrong_tag_and_branch_ours_right(
    pyvoip_dialing: tuple[Any, Any, socket.socket, Request], server: SipServer,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pyVoIP.SIP import SIPMessage  # type: ignore[import-untyped]
    phone, _call, _callee, invite = pyvoip_dialing
    ok = build_response(invite, 200, to_tag="callee200", body=SDP, content_type="application/sdp",
                        headers=[("Contact", "<sip:callee@127.0.0.1:5999>")])
    # What _callback_RESP_OK sends for this 200 (calling it directly spares starting pyVoIP's RTP threads).
    ack = parse_message(phone.sip.gen_ack(SIPMessage(ok.to_bytes())).encode())
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.to_addr.tag != "callee200"  # plain pyVoIP: a random To-tag, so no PBX matches the ACK ...
    assert ack.vias[0].branch == invite.vias[0].branch  # ... and the INVITE's branch instead of a new transaction

    peer = await Peer.open()
    try:
        task = asyncio.ensure_future(server.dial(f"sip:13800138000@127.0.0.1:{peer.port}", from_user="12389",
                                                 local_rtp_port=30002))
        ours = await peer.request("INVITE")
        peer.send(build_response(ours, 200, to_tag="callee200", body=SDP, content_type="application/sdp",
                                 headers=[("Contact", f"<sip:callee@127.0.0.1:{peer.port}>")]),
                  ("127.0.0.1", server.port))
        call = await asyncio.wait_for(task, 10)
        our_ack = await peer.request("ACK")
        assert our_ack.to_addr.tag == "callee200" and our_ack.vias[0].branch != ours.vias[0].branch
        hang = asyncio.ensure_future(call.hangup())
        bye = await peer.request("BYE")
        peer.send(build_response(bye, 200), ("127.0.0.1", server.port))
        await asyncio.wait_for(hang, 10)
    finally:
        peer.close()


async def test_486_pyvoip_stays_dialing_unacked_ours_busy(
    pyvoip_dialing: tuple[Any, Any, socket.socket, Request], server: SipServer,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pyVoIP.VoIP import CallState  # type: ignore[import-untyped]
    phone, call, callee, invite = pyvoip_dialing
    callee.sendto(build_response(invite, 486, to_tag="busy1").to_bytes(), phone.sip.s.getsockname())
    phone.sip.recv()  # pyVoIP handles exactly that datagram, synchronously
    assert call.state == CallState.DIALING  # plain pyVoIP: DIALING forever ...
    callee.setblocking(False)
    with pytest.raises(BlockingIOError):
        callee.recvfrom(65535)  # ... and no ACK, so the PBX resends its 486 until Timer H

    peer = await Peer.open()
    try:
        task = asyncio.ensure_future(server.dial(f"sip:13800138000@127.0.0.1:{peer.port}", from_user="12389",
                                                 local_rtp_port=30002))
        ours = await peer.request("INVITE")
        peer.send(build_response(ours, 486, to_tag="busy1"), ("127.0.0.1", server.port))
        result = await asyncio.wait_for(task, 10)
        assert (result.outcome, result.sip_status, result.ended.is_set()) == ("busy", 486, True)
        assert (await peer.request("ACK")).to_addr.tag == "busy1"
    finally:
        peer.close()
