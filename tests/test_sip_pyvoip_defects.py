"""The pyVoIP 1.6.8 defects our UA works around, shown failing on plain pyVoIP (PYVOIP.md items 1 and 6).

The same datagram goes to pyVoIP's own SIPClient and to our SipServer. pyVoIP's receive
path is run once by hand (`SIPClient.recv()` on a real loopback socket) with its outgoing
socket replaced by a recorder, so what it sends, and where, is read without a registrar
and without waiting on a clock. Its `start()` is not used: it blocks 30 s registering
(PYVOIP.md item 2).
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from ivr.sip.message import Request, build_request, parse_message
from tests.sip_peer import Peer, running_server

REGISTRAR = ("192.0.2.10", 5060)
"""The registrar pyVoIP was configured with (TEST-NET: nothing there)."""


class RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        self.sent.append((data, address))
        return len(data)

    def close(self) -> None:
        pass


@pytest.fixture
def pyvoip_client() -> Iterator[tuple[Any, RecordingSocket, tuple[str, int]]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pyVoIP imports audioop
        import pyVoIP.VoIP  # type: ignore[import-untyped]  # noqa: F401 - SIP alone hits an import cycle
        from pyVoIP.SIP import SIPClient  # type: ignore[import-untyped]

    client = SIPClient(REGISTRAR[0], REGISTRAR[1], "1001", "secret", phone=None, myIP="127.0.0.1", myPort=0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    recorder = RecordingSocket()
    client.s, client.out = sock, recorder
    yield client, recorder, sock.getsockname()
    sock.close()


def _deliver(client: Any, sock_addr: tuple[str, int], message: Request) -> None:
    """Send one datagram from a caller socket to pyVoIP and let it process exactly that datagram."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind(("127.0.0.1", message.vias[0].port or 0))
        caller.sendto(message.to_bytes(), sock_addr)
        client.recv()


def _options(port: int, via_port: int) -> Request:
    return build_request("OPTIONS", f"sip:127.0.0.1:{port}", from_="<sip:pbx@127.0.0.1>;tag=k",
                         to=f"<sip:127.0.0.1:{port}>", call_id="keepalive-1", cseq=1,
                         via_host="127.0.0.1", via_port=via_port)


async def test_options_pyvoip_silent_ours_200(pyvoip_client: tuple[Any, RecordingSocket, tuple[str, int]]) -> None:
    client, recorder, addr = pyvoip_client
    _deliver(client, addr, _options(addr[1], 0))
    assert recorder.sent == []  # plain pyVoIP: a PBX keep-alive gets nothing, the trunk goes "down"

    async with running_server(lambda call: call.reject(486)) as server:  # type: ignore[arg-type, return-value]
        peer = await Peer.open()
        try:
            peer.send(_options(server.port, peer.port), ("127.0.0.1", server.port))
            assert (await peer.final("keepalive-1", "OPTIONS")).status == 200
        finally:
            peer.close()


async def test_invite_reply_goes_to_sender_not_registrar(
    pyvoip_client: tuple[Any, RecordingSocket, tuple[str, int]],
) -> None:
    client, recorder, addr = pyvoip_client
    peer = await Peer.open()
    try:
        invite = peer.invite(addr[1], call_id="trunk-1@127.0.0.1")
        peer.send(invite, addr)
        client.recv()  # no call callback: pyVoIP answers 486 Busy
        assert len(recorder.sent) == 1
        data, target = recorder.sent[0]
        assert parse_message(data).status == 486  # type: ignore[union-attr]
        assert target == REGISTRAR  # plain pyVoIP: the answer goes to the registrar
        assert target != (peer.host, peer.port)  # ... not to the caller who asked

        async with running_server(lambda call: call.reject(486)) as server:  # type: ignore[arg-type, return-value]
            invite = peer.invite(server.port, call_id="trunk-2@127.0.0.1")
            peer.send(invite, ("127.0.0.1", server.port))
            busy = await peer.final(invite.call_id)  # ours: it arrives at the caller's own socket
            assert busy.status == 486
            peer.send(peer.ack_for(invite, busy), ("127.0.0.1", server.port))
    finally:
        peer.close()
