"""Register mode over real loopback UDP: a raw Python registrar (tests/sip_peer.py) and SIPp as registrar.

The registrar side checks every Authorization with its own digest arithmetic written here
from RFC 2617 / RFC 7616 (not with ivr.sip.register), so a wrong formula in the client
fails these tests. Intervals are injected (RegisterTiming, Timers) so the tests take
seconds; waits are bounded by a safety limit only and nothing asserts on how long anything
took: the backoff is checked through the delays the client chose (`retry_delays`), the
refresh point through the values it logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs

from config.errors import HotlineError
from config.settings import SipSettings
from ivr.sip.message import Request, build_response, parse_contacts, parse_uri
from ivr.sip.register import DigestChallenge, RegisterTiming, authorization_value, digest_response
from ivr.sip.transactions import Timers
from ivr.sip.ua import IncomingCall, SipServer
from tests.sip_peer import SAFETY, Peer
from tests.sipp_support import free_udp_port, run_sipp, sipp_skip_reason, start_sipp

USER, PASSWORD, REALM = "1001", "secret", "ivr.test"
TIMING = RegisterTiming(retry_min=0.05, retry_max=0.2, deregister_timeout=1.0)
TIMERS = Timers(t1=0.02, t2=0.16, t4=0.2)
"""64*T1 = 1.28 s: a REGISTER nobody answers fails that fast here (32 s at the RFC values)."""


# --------------------------------------------------------------------------- digest by the book


def _params(value: str) -> dict[str, str]:
    scheme, _, rest = value.partition(" ")
    assert scheme == "Digest", value
    return {k.lower(): v1 if v1 else v2 for k, v1, v2 in re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', rest)}


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def expected_response(p: dict[str, str], method: str, password: str = PASSWORD) -> str:
    """RFC 2617 3.2.2.1 (MD5): with qop, KD(HA1, nonce:nc:cnonce:qop:HA2); without, KD(HA1, nonce:HA2)."""
    ha1 = md5(f"{p['username']}:{p['realm']}:{password}")
    ha2 = md5(f"{method}:{p['uri']}")
    if "qop" in p:
        return md5(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:{p['qop']}:{ha2}")
    return md5(f"{ha1}:{p['nonce']}:{ha2}")


def strict_registrar_accepts(auth: str, method: str, offered_qop: str | None, nonce: str) -> bool:
    """What a registrar that offered `offered_qop` checks (RFC 7616 3.4: the client MUST answer with a qop it offered)."""
    p = _params(auth)
    if p.get("nonce") != nonce or p.get("username") != USER:
        return False
    if offered_qop is not None and (p.get("qop") != offered_qop or "cnonce" not in p or "nc" not in p):
        return False
    return p.get("response") == expected_response(p, method)


def test_rfc2617_example() -> None:
    """RFC 2617 section 3.5: the Mufasa example (qop=auth, MD5)."""
    assert digest_response(
        username="Mufasa", password="Circle Of Life", realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", method="GET", uri="/dir/index.html",
        qop="auth", nc="00000001", cnonce="0a4f113b",
    ) == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(("algorithm", "expected"), [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    """RFC 7616 section 3.9.1, both algorithms, through the full Authorization value."""
    challenge = DigestChallenge(realm="http-auth@example.org", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                                algorithm=algorithm, qop=("auth", "auth-int"),
                                opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
    value = authorization_value(challenge, username="Mufasa", password="Circle of Life", method="GET",
                                uri="/dir/index.html", nc=1, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    p = _params(value)
    assert p["response"] == expected
    assert (p["qop"], p["nc"], p["opaque"]) == ("auth", "00000001", challenge.opaque)


# --------------------------------------------------------------------------- config


def test_register_mode_without_registrar_or_username_names_the_keys() -> None:
    with pytest.raises(HotlineError, match=r"\[sip\] registrar and \[sip\] username"):
        SipServer(SipSettings(mode="register"), _no_calls)
    with pytest.raises(HotlineError, match=r"needs \[sip\] username") as info:
        SipServer(SipSettings(mode="register", registrar="127.0.0.1:5060"), _no_calls)
    assert "registrar" not in str(info.value).split("needs", 1)[1].split("(")[0]
    with pytest.raises(HotlineError, match=r"\[sip\] registrar 'sip:1001@pbx' is not host\[:port\]"):
        SipServer(SipSettings(mode="register", registrar="sip:1001@pbx", username="1001"), _no_calls)


def test_username_that_cannot_be_a_uri_user_is_refused() -> None:
    with pytest.raises(HotlineError, match=r"\[sip\] username 'a@b'"):
        SipServer(SipSettings(mode="register", registrar="pbx.example", username="a@b"), _no_calls)


def test_trunk_mode_has_no_registration() -> None:
    assert SipServer(SipSettings(), _no_calls).registration is None


# --------------------------------------------------------------------------- raw registrar


async def _no_calls(call: IncomingCall) -> None:
    await call.reject(480)


class RawRegistrar:
    """A registrar made of one UDP socket: the test decides each answer."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.registers: list[Request] = []

    @property
    def address(self) -> tuple[str, int]:
        return self.peer.host, self.peer.port

    async def register(self) -> Request:
        request = await self.peer.request("REGISTER")
        self.registers.append(request)
        return request

    def send(self, request: Request, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        response = build_response(request, status, headers=headers or [], to_tag="reg" + secrets.token_hex(3))
        self.peer.send(response, (request.vias[0].host, request.vias[0].port or 5060))

    def challenge(self, request: Request, nonce: str, *, qop: str | None = None, proxy: bool = False,
                  stale: bool = False) -> None:
        value = f'Digest realm="{REALM}", nonce="{nonce}", algorithm=MD5'
        if qop:
            value += f', qop="{qop}"'
        if stale:
            value += ", stale=true"
        if proxy:
            self.send(request, 407, [("Proxy-Authenticate", value)])
        else:
            self.send(request, 401, [("WWW-Authenticate", value)])

    def ok(self, request: Request, expires: int = 120, *, in_contact: bool = True) -> None:
        contact = request.headers.get("Contact") or ""
        headers = [("Contact", f"{contact};expires={expires}" if in_contact else contact)]
        headers.append(("Expires", str(expires if not in_contact else 3600)))  # Contact's value must win
        self.send(request, 200, headers)


@asynccontextmanager
async def register_server(
    registrar: tuple[str, int], *, password: str | None = PASSWORD, host: str = "127.0.0.1",
    trusted: list[str] | None = None, timing: RegisterTiming = TIMING,
) -> AsyncIterator[SipServer]:
    fields: dict[str, Any] = dict(mode="register", bind_host=host, bind_port=0, public_host=host,
                                  registrar=f"{registrar[0]}:{registrar[1]}", username=USER, password=password)
    if trusted is not None:
        fields["trusted_peers"] = trusted
    server = SipServer(SipSettings(**fields), _no_calls, timers=TIMERS, shutdown_grace=0.2, register_timing=timing)
    await server.start()
    try:
        yield server
    finally:
        await asyncio.wait_for(server.stop(), SAFETY)


@asynccontextmanager
async def raw_registrar(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[RawRegistrar]:
    peer = await Peer.open(host, port)
    try:
        yield RawRegistrar(peer)
    finally:
        peer.close()


@contextmanager
def logs() -> Iterator[list[dict[str, Any]]]:
    with capture_logs() as entries:
        yield entries


def events(entries: list[dict[str, Any]]) -> list[str]:
    return [str(e["event"]) for e in entries]


async def until(server: SipServer, state: str) -> None:
    reg = server.registration
    assert reg is not None
    await asyncio.wait_for(reg.wait_for(lambda r: r.state == state), SAFETY)


@pytest.mark.parametrize("qop", [None, "auth"])
async def test_401_then_200_with_correct_digest(qop: str | None) -> None:
    with logs() as entries:
        async with raw_registrar() as reg, register_server(reg.address) as server:
            assert server.registration is not None
            first = await reg.register()  # start() returned before any answer: it does not block
            assert server.registration.state == "registering"
            assert "Authorization" not in first.headers
            assert first.uri == f"sip:{reg.peer.host}:{reg.peer.port}"
            assert parse_uri(first.to_addr.uri).user == USER and first.from_addr.tag
            contact = parse_contacts(first.headers.get("Contact") or "")[0]
            assert contact.uri == f"sip:{USER}@127.0.0.1:{server.port}"
            assert first.headers.get("Expires") == "300"
            reg.challenge(first, "nonce-1", qop=qop)

            second = await reg.register()
            auth = second.headers.get("Authorization") or ""
            p = _params(auth)
            assert (p["username"], p["realm"], p["nonce"], p["uri"]) == (USER, REALM, "nonce-1", second.uri)
            assert p["response"] == expected_response(p, "REGISTER")
            if qop:
                assert p["qop"] == "auth" and p["nc"] == "00000001" and len(p["cnonce"]) >= 8
            else:
                assert "qop" not in p and "cnonce" not in p and "nc" not in p
            assert strict_registrar_accepts(auth, "REGISTER", qop, "nonce-1")
            # RFC 3261 10.2.4: same Call-ID, CSeq one higher, new transaction.
            assert second.call_id == first.call_id and second.cseq.number == first.cseq.number + 1
            assert second.vias[0].branch != first.vias[0].branch
            reg.ok(second, 120)
            await until(server, "registered")
            assert server.registration.granted == 120  # the Contact's expires, not the Expires header
    registered = [e for e in entries if e["event"] == "registered"]
    assert registered and registered[0]["expires"] == 120 and registered[0]["username"] == USER


async def test_registrar_by_name_is_resolved_and_trusted() -> None:
    async with raw_registrar() as reg:
        async with register_server(("localhost", reg.peer.port)) as server:
            assert server.registration is not None
            request = await reg.register()
            assert request.uri == f"sip:localhost:{reg.peer.port}" and request.to_addr.uri == f"sip:{USER}@localhost"
            reg.ok(request)
            await until(server, "registered")
            assert server.registration.is_registrar("127.0.0.1")
            assert server.registration.status().addresses == ["127.0.0.1"]


async def test_407_proxy_authentication() -> None:
    async with raw_registrar() as reg, register_server(reg.address) as server:
        first = await reg.register()
        reg.challenge(first, "proxy-nonce", proxy=True, qop="auth")
        second = await reg.register()
        assert "Authorization" not in second.headers
        p = _params(second.headers.get("Proxy-Authorization") or "")
        assert p["nonce"] == "proxy-nonce" and p["response"] == expected_response(p, "REGISTER")
        reg.ok(second, 60, in_contact=False)
        await until(server, "registered")
        assert server.registration is not None and server.registration.granted == 60  # the Expires header: no Contact param


async def test_refresh_before_expiry_reuses_the_nonce_and_answers_a_new_challenge() -> None:
    """Granted 2 s: a refresh is scheduled inside those 2 s; a registrar that forgot us (restart) re-challenges."""
    with logs() as entries:
        async with raw_registrar() as reg, register_server(reg.address) as server:
            assert server.registration is not None
            first = await reg.register()
            reg.challenge(first, "n-a", qop="auth")
            reg.ok(await reg.register(), 2)
            await until(server, "registered")

            refresh = await reg.register()
            p = _params(refresh.headers.get("Authorization") or "")
            # Pre-emptive credentials on the cached challenge: nc counts up (RFC 2617 3.2.2).
            assert p["nonce"] == "n-a" and p["nc"] == "00000002" and p["response"] == expected_response(p, "REGISTER")
            assert refresh.call_id == first.call_id
            reg.challenge(refresh, "n-b", qop="auth")  # nonce no longer known: e.g. the PBX restarted
            answered = await reg.register()
            q = _params(answered.headers.get("Authorization") or "")
            assert q["nonce"] == "n-b" and q["nc"] == "00000001" and q["response"] == expected_response(q, "REGISTER")
            reg.ok(answered, 120)
            await asyncio.wait_for(server.registration.wait_for(lambda r: r.registrations == 2), SAFETY)
            assert server.registration.state == "registered" and server.registration.failures == 0
    first_ok = next(e for e in entries if e["event"] == "registered")
    assert first_ok["expires"] == 2 and 0 < first_ok["refresh_in"] < 2
    assert any(e["event"] == "re-registering" and e["reason"] == "refresh" for e in entries)


async def test_503_then_recovery() -> None:
    with logs() as entries:
        async with raw_registrar() as reg, register_server(reg.address) as server:
            assert server.registration is not None
            reg.send(await reg.register(), 503)
            await until(server, "failed")
            assert server.registration.last_error is not None and "503" in server.registration.last_error
            retry = await reg.register()
            reg.challenge(retry, "n1")
            reg.ok(await reg.register())
            await until(server, "registered")
    failed = [e for e in entries if e["event"].startswith("registration failed: ")]
    assert failed[0]["event"] == f"registration failed: 503 Service Unavailable from 127.0.0.1:{reg.peer.port}"
    assert failed[0]["log_level"] == "warning" and failed[0]["retry_in"] == TIMING.retry_min
    names = events(entries)
    failed_at = names.index(failed[0]["event"])
    assert "re-registering" in names[failed_at:] and "registered" in names[failed_at:]


async def test_registrar_gone_then_restarted_on_the_same_address() -> None:
    """Timeouts back off (doubling, capped); the registrar coming back on its address gets us registered again."""
    async with raw_registrar() as reg:
        address = reg.address
        async with register_server(address) as server:
            assert server.registration is not None
            reg.ok(await reg.register(), 2)
            await until(server, "registered")
            reg.peer.close()  # registrar down: refreshes time out (64*T1)
            await asyncio.wait_for(server.registration.wait_for(lambda r: r.failures >= 2), SAFETY * 2)
            assert server.registration.state == "failed"
            assert "no response" in (server.registration.last_error or "")
            delays = server.registration.retry_delays
            assert delays[:2] == [TIMING.retry_min, TIMING.retry_min * 2] and max(delays) <= TIMING.retry_max
            async with raw_registrar(*address) as restarted:
                request = await restarted.register()
                restarted.challenge(request, "after-restart")
                restarted.ok(await restarted.register())
                await until(server, "registered")
                assert server.registration.failures == 0


async def test_wrong_password_fails_clearly_and_retries_at_the_cap() -> None:
    with logs() as entries:
        async with raw_registrar() as reg, register_server(reg.address, password="wrong") as server:
            assert server.registration is not None
            for attempt in range(2):
                request = await reg.register()
                assert "Authorization" not in request.headers or attempt > 0
                reg.challenge(request, f"n{attempt}", qop="auth")
                answered = await reg.register()
                assert not strict_registrar_accepts(answered.headers.get("Authorization") or "", "REGISTER",
                                                    "auth", f"n{attempt}")
                reg.challenge(answered, f"n{attempt}-again", qop="auth")  # a registrar refuses with a new challenge
                await asyncio.wait_for(server.registration.wait_for(lambda r, a=attempt: r.failures == a + 1), SAFETY)
                assert server.registration.state == "failed"
            # Two REGISTERs per attempt, never more: the client does not spin on a refusal.
            assert len(reg.registers) == 4
            assert server.registration.retry_delays == [TIMING.retry_max, TIMING.retry_max]
    errors = [e for e in entries if e["log_level"] == "error"]
    assert errors, events(entries)
    message = errors[0]["event"]
    assert message.startswith("registration failed: wrong username or password")
    assert f"'{USER}'" in message and f"127.0.0.1:{reg.peer.port}" in message


async def test_deregister_on_stop() -> None:
    async with raw_registrar() as reg:
        async with register_server(reg.address) as server:
            registration = server.registration
            assert registration is not None
            first = await reg.register()
            reg.challenge(first, "n1", qop="auth")
            binding = await reg.register()
            reg.ok(binding)
            await until(server, "registered")
            stopping = asyncio.ensure_future(server.stop())
            bye = await reg.register()
            reg.ok(bye, 0)
            await asyncio.wait_for(stopping, SAFETY)
        assert bye.headers.get("Expires") == "0"
        assert bye.headers.get("Contact") == binding.headers.get("Contact")  # only our binding, not '*'
        assert bye.call_id == binding.call_id and bye.cseq.number > binding.cseq.number
        p = _params(bye.headers.get("Authorization") or "")
        assert p["response"] == expected_response(p, "REGISTER")
        assert registration.state == "unregistered"


async def test_stop_does_not_wait_long_for_a_dead_registrar() -> None:
    """pyVoIP's stop() blocks 30 s here (PYVOIP.md item 2); ours gives up after deregister_timeout."""
    async with raw_registrar() as reg:
        server_cm = register_server(reg.address, timing=RegisterTiming(retry_min=0.05, retry_max=0.2,
                                                                       deregister_timeout=0.3))
        async with server_cm as server:
            reg.ok(await reg.register())
            await until(server, "registered")
            reg.peer.close()
        # leaving the block ran stop() under a SAFETY bound; the de-REGISTER went unanswered
        assert server.registration is not None and server.registration.state == "unregistered"


async def test_invites_accepted_from_the_registrar_only() -> None:
    """Register mode: the PBX (registrar address) may call us; the trunk-mode loopback default no longer applies."""
    answered: list[IncomingCall] = []

    async def on_call(call: IncomingCall) -> None:
        answered.append(call)
        await call.accept(31000)
        await call.ended.wait()

    async with raw_registrar("127.0.0.3") as reg:
        settings = SipSettings(mode="register", bind_host="127.0.0.1", bind_port=0, public_host="127.0.0.1",
                               registrar=f"127.0.0.3:{reg.peer.port}", username=USER, password=PASSWORD)
        server = SipServer(settings, on_call, timers=TIMERS, shutdown_grace=0.2, register_timing=TIMING)
        await server.start()
        stranger = await Peer.open("127.0.0.1")
        try:
            reg.ok(await reg.register())
            await until(server, "registered")
            invite = reg.peer.invite(server.port)
            reg.peer.send(invite, ("127.0.0.1", server.port))
            ok = await reg.peer.final(invite.call_id)
            assert ok.status == 200 and len(answered) == 1
            reg.peer.send(reg.peer.ack_for(invite, ok), ("127.0.0.1", server.port))
            bye = reg.peer.in_dialog("BYE", invite, ok, 2)
            reg.peer.send(bye, ("127.0.0.1", server.port))
            assert (await reg.peer.final(invite.call_id, "BYE")).status == 200

            other = stranger.invite(server.port)
            stranger.send(other, ("127.0.0.1", server.port))
            assert (await stranger.final(other.call_id)).status == 403
            assert len(answered) == 1
        finally:
            stranger.close()
            stopping = asyncio.ensure_future(server.stop())
            reg.ok(await reg.register(), 0)
            await asyncio.wait_for(stopping, SAFETY)


async def test_explicit_trusted_peers_still_apply_in_register_mode() -> None:
    async with raw_registrar("127.0.0.3") as reg, register_server(reg.address, trusted=["127.0.0.2"]) as server:
        caller = await Peer.open("127.0.0.2")
        try:
            invite = caller.invite(server.port)
            caller.send(invite, ("127.0.0.1", server.port))
            assert (await caller.final(invite.call_id)).status == 480  # reached on_call (_no_calls), not 403
        finally:
            caller.close()


# --------------------------------------------------------------------------- pyVoIP's digest


def test_pyvoip_ignores_qop_and_a_qop_registrar_refuses_it() -> None:
    """PYVOIP.md item 2: pyVoIP's REGISTER answer to a qop=auth challenge has no qop/cnonce/nc, so it is refused.

    pyVoIP's own `gen_register` is fed the same 401 our client answers in
    test_401_then_200_with_correct_digest[auth]; no socket or registrar is needed to see what it would send.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pyVoIP imports audioop
        import pyVoIP.VoIP  # type: ignore[import-untyped]  # noqa: F401 - SIP alone hits an import cycle
        from pyVoIP.SIP import SIPClient, SIPMessage  # type: ignore[import-untyped]

    challenge = (
        "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKx;rport\r\n"
        f"From: <sip:{USER}@127.0.0.1>;tag=1\r\nTo: <sip:{USER}@127.0.0.1>;tag=2\r\nCall-ID: c1@x\r\n"
        f'CSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm="{REALM}", nonce="pv-nonce", qop="auth", algorithm=MD5\r\n'
        "Content-Length: 0\r\n\r\n"
    ).encode()
    client = SIPClient("127.0.0.1", 5070, USER, PASSWORD, phone=None, myIP="127.0.0.1", myPort=5099)
    register = client.gen_register(SIPMessage(challenge))
    auth = next(line.split(":", 1)[1].strip() for line in register.split("\r\n") if line.startswith("Authorization:"))
    p = _params(auth)
    assert "qop" not in p and "cnonce" not in p and "nc" not in p
    assert p["response"] == expected_response(p, "REGISTER")  # right password, RFC 2069 formula
    assert not strict_registrar_accepts(auth, "REGISTER", "auth", "pv-nonce")
    # Ours, for the same challenge, passes the same check.
    ours = authorization_value(DigestChallenge(REALM, "pv-nonce", qop=("auth",)), username=USER, password=PASSWORD,
                               method="REGISTER", uri="sip:127.0.0.1:5070", nc=1)
    assert strict_registrar_accepts(ours, "REGISTER", "auth", "pv-nonce")


# --------------------------------------------------------------------------- SIPp as registrar


@pytest.mark.skipif(sipp_skip_reason() is not None, reason=str(sipp_skip_reason()))
@pytest.mark.parametrize("scenario", ["reg_auth.xml", "reg_auth_qop.xml"])
async def test_sipp_registrar_then_call_from_the_pbx_address(scenario: str) -> None:
    """SIPp checks our digest (verifyauth), then, as the PBX on the same address and port, calls us.

    SIPp runs one scenario per process, so the registrar runs first and the caller (tests/sipp/ua_call.xml)
    after it from the same IP and port. 127.0.0.4 is outside the default trusted_peers: only being the
    registrar lets it call.
    """
    calls: list[IncomingCall] = []

    async def on_call(call: IncomingCall) -> None:
        calls.append(call)
        await call.accept(31002)
        await call.ended.wait()

    host = "127.0.0.4"
    port = free_udp_port(host)
    registrar = await asyncio.to_thread(start_sipp, scenario, local_ip=host, local_port=port, timeout=30,
                                        extra_args=["-trace_logs"])
    with registrar:
        settings = SipSettings(mode="register", bind_host="127.0.0.1", bind_port=0, public_host="127.0.0.1",
                               registrar=f"{host}:{port}", username=USER, password=PASSWORD)
        server = SipServer(settings, on_call, timers=Timers(t1=0.1), shutdown_grace=0.2, register_timing=TIMING)
        await server.start()
        try:
            assert server.registration is not None
            await asyncio.wait_for(server.registration.wait_for(lambda r: r.state != "registering"), 30)
            result = await asyncio.to_thread(registrar.wait, 20)
            assert result.ok, result.describe()
            assert server.registration.state == "registered", server.registration.last_error
            assert server.registration.granted == 120
            assert "verifyauth=true" in _sipp_logs(result.workdir), result.describe()

            call = await asyncio.to_thread(run_sipp, "ua_call.xml", "127.0.0.1", server.port,
                                           local_ip=host, local_port=port, timeout=30)
            assert call.ok, call.describe()
            assert len(calls) == 1 and calls[0].source[0] == host and calls[0].end_reason == "caller_bye"
        finally:
            # SIPp has exited: the de-REGISTER goes unanswered and stop() gives up after deregister_timeout.
            await asyncio.wait_for(server.stop(), SAFETY)


@pytest.mark.skipif(sipp_skip_reason() is not None, reason=str(sipp_skip_reason()))
async def test_sipp_registrar_refuses_a_wrong_password() -> None:
    """The control for the test above: SIPp's verifyauth really checks (403 with the wrong password), and we say so."""
    host = "127.0.0.4"
    port = free_udp_port(host)
    registrar = await asyncio.to_thread(start_sipp, "reg_auth_qop.xml", local_ip=host, local_port=port, timeout=30,
                                        extra_args=["-trace_logs"])
    with registrar, logs() as entries:
        settings = SipSettings(mode="register", bind_host="127.0.0.1", bind_port=0, public_host="127.0.0.1",
                               registrar=f"{host}:{port}", username=USER, password="not-the-password")
        server = SipServer(settings, _no_calls, timers=Timers(t1=0.1), shutdown_grace=0.2, register_timing=TIMING)
        await server.start()
        try:
            assert server.registration is not None
            await asyncio.wait_for(server.registration.wait_for(lambda r: r.state == "failed"), 30)
            result = await asyncio.to_thread(registrar.wait, 20)
            assert "verifyauth=false" in _sipp_logs(result.workdir), result.describe()
            assert result.sent(403), result.describe()
        finally:
            await asyncio.wait_for(server.stop(), SAFETY)
    errors = [e["event"] for e in entries if e["log_level"] == "error"]
    assert errors and errors[0].startswith(f"registration failed: 403 Forbidden from {host}:{port} for user '{USER}' (wrong password")
    assert server.registration.retry_delays[0] == TIMING.retry_max


def _sipp_logs(workdir: Any) -> str:
    return "".join(p.read_text(errors="replace") for p in workdir.glob("*_logs.log"))
