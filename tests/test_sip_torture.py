"""Every RFC 4475 torture message sent over UDP to the running UA, then a normal call.

Replies go where the RFC says (RFC 3261 18.2.2): the datagram's source address with the
Via's port (5060 when absent, 5050 for quotbal, the source port when rport is asked for).
So the messages are sent from a socket on 127.0.0.77:5060 (a private loopback address,
nothing else listens there) with a second socket on :5050. After each message we send an
OPTIONS "sentinel" from the same socket: the UA handles datagrams in order, so every reply
the torture message caused has arrived once the sentinel's 200 has. That is how "no reply"
is checked without waiting on a clock.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.sip.message import Request, Response, build_request
from ivr.sip.ua import IncomingCall, SipServer
from tests.sip_peer import Peer, running_server

TORTURE = Path(__file__).resolve().parents[2] / "shared" / "sip-torture"
HOSTS = ("127.0.0.77", "127.0.0.78", "127.0.0.79")

# What this UA (an endpoint in trunk mode trusting the sender) answers, and why.
EXPECTED: dict[str, set[int] | None] = {
    # valid requests
    "wsinv": {481},  # its To has a tag: a re-INVITE for a dialog we do not have (12.2.2)
    "intmeth": {501},  # unknown method at an endpoint
    "esc01": {486},
    "escnull": {405},  # REGISTER: we are no registrar
    "esc02": {501},  # RE%47IST%45R is an unknown method
    "lwsdisp": {200},
    "longreq": {486},
    "dblreq": {405},
    "semiuri": {200},
    "transports": {200},
    "mpart01": {501},  # MESSAGE
    "unkscm": {416},
    "novelsc": {416},
    "unksm2": {405},
    "bext01": {420},
    "invut": {415},
    "regaut01": {405},  # RFC: non-registrar endpoint 405
    "zeromf": {200},  # Max-Forwards 0 binds proxies, not endpoints
    "cparam01": {405},
    "cparam02": {405},
    "regescrt": {405},
    "sdp01": {406},  # Accept excludes application/sdp
    "inv2543": {486},  # RFC 2543 INVITE accepted as a call
    # valid responses: no transaction of ours, dropped
    "unreason": None,
    "noreason": None,
    "bcast": None,
    # invalid requests
    "badinv01": {400},
    "clerr": {400},
    "ncl": {400},
    "scalar02": {400},
    "quotbal": {400},
    "ltgtruri": {400},
    "lwsruri": {400},
    "lwsstart": {486},  # allowed leniency: extra SP ignored
    "trws": {200},  # allowed leniency: trailing SP ignored
    "escruri": {486},  # allowed: escaped headers ignored, never applied
    "baddate": {486},  # Date is not used: ignored
    "regbadct": {405},  # REGISTER refused by method before its Contact matters (RFC's 400 is for registrars)
    "badaspec": {200, 400},
    "baddn": {200, 400},
    "badvers": {505},
    "mismatch01": {400},
    "mismatch02": {400},  # RFC: 501, 400 also acceptable
    "badbranch": {200},  # RFC 2543-style matching fallback
    "insuf": {400},
    "multi01": {400},
    "mcl01": {400},
    # invalid responses: dropped
    "scalarlg": None,
    "bigcode": None,
}


def _index() -> list[dict[str, str]]:
    with (TORTURE / "INDEX.tsv").open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


class Declining:
    def __init__(self) -> None:
        self.calls: list[IncomingCall] = []

    async def __call__(self, call: IncomingCall) -> None:
        self.calls.append(call)
        if call.call_id.startswith("normal-"):
            await call.accept(30000)
            await call.ended.wait()
        else:
            await call.reject(486)


@pytest.fixture
async def sender() -> AsyncIterator[tuple[Peer, Peer]]:
    for host in HOSTS:
        try:
            main = await Peer.open(host, 5060)
        except OSError:
            continue
        try:
            side = await Peer.open(host, 5050)
        except OSError:
            main.close()
            continue
        yield main, side
        main.close()
        side.close()
        return
    pytest.fail(f"could not bind ports 5060/5050 on any of {HOSTS}")


def _sentinel(peer: Peer, server: SipServer, n: int) -> Request:
    return build_request("OPTIONS", f"sip:127.0.0.1:{server.port}", from_="<sip:s@127.0.0.1>;tag=s",
                         to="<sip:127.0.0.1>", call_id=f"sentinel-{n}", cseq=1, via_host=peer.host,
                         via_port=peer.port)


async def _replies_until_sentinel(main: Peer, side: Peer, sentinel: str) -> list[Response]:
    out: list[Response] = []
    while True:
        message = await main.recv()
        if isinstance(message, Response) and message.call_id == sentinel:
            break
        if isinstance(message, Response) and message.status >= 200:
            out.append(message)
    while not side.queue.empty():
        message = await side.recv()
        if isinstance(message, Response) and message.status >= 200:
            out.append(message)
    return out


async def test_rfc4475_torture_then_normal_call(sender: tuple[Peer, Peer]) -> None:
    main, side = sender
    rows = _index()
    assert len(rows) == 49 and set(EXPECTED) == {r["name"] for r in rows}
    handler = Declining()
    seen_call_ids: set[str] = set()
    results: dict[str, list[int]] = {}
    async with running_server(handler, trusted=["127.0.0.0/8"], t1=0.02) as server:
        target = ("127.0.0.1", server.port)
        for n, row in enumerate(rows):
            name = row["name"]
            main.send((TORTURE / f"{name}.dat").read_bytes(), target)
            main.send(_sentinel(main, server, n), target)
            replies = await _replies_until_sentinel(main, side, f"sentinel-{n}")
            # Final INVITE responses are retransmitted until ACKed (nobody ACKs here): those
            # belong to earlier messages, not to this one.
            fresh = [r for r in replies if not (r.call_id and r.call_id in seen_call_ids)]
            seen_call_ids.update(r.call_id for r in fresh if (r.headers.get("CSeq") or "").endswith("INVITE"))
            results[name] = sorted({r.status for r in fresh})
        mismatches = {}
        for name, statuses in results.items():
            expected = EXPECTED[name]
            if expected is None:
                ok = statuses == []
            else:
                ok = len(statuses) == 1 and statuses[0] in expected
            if not ok:
                mismatches[name] = (statuses, expected)
        assert mismatches == {}, mismatches

        # The server still answers a normal call from a normal peer.
        caller = await Peer.open()
        try:
            invite = caller.invite(server.port, call_id="normal-1@127.0.0.1")
            caller.send(invite, target)
            ok_ = await caller.final(invite.call_id)
            assert ok_.status == 200
            caller.send(caller.ack_for(invite, ok_), target)
            caller.send(caller.in_dialog("BYE", invite, ok_, 2), target)
            assert (await caller.final(invite.call_id, "BYE")).status == 200
        finally:
            caller.close()
    # The valid INVITEs reached the call layer; none of the invalid ones did.
    offered = {c.call_id for c in handler.calls}
    assert len(offered) == 1 + sum(1 for s in EXPECTED.values() if s == {486})
