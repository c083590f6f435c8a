"""The trunk-mode UA against a real SIP peer: SIPp (Debian sip-tester) with tests/sipp/ua_*.xml.

SIPp exits 0 only when every message of its scenario came as written, so the exit code is
the assertion on the wire; the UA's side is checked through what on_call saw.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest

from ivr.sip.ua import IncomingCall
from tests.sip_peer import running_server

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).resolve().parent / "sipp"

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def run_sipp(scenario: str, server_port: int, *, local_ip: str = "127.0.0.1") -> tuple[int, str]:
    """Run one SIPp call of `scenario` against the UA; return its exit code and output."""
    assert SIPP is not None
    args = [
        SIPP, f"127.0.0.1:{server_port}", "-sf", str(SCENARIOS / scenario), "-s", "12389",
        "-i", local_ip, "-p", str(_free_udp_port(local_ip)), "-mp", str(_free_udp_port(local_ip)),
        "-cp", str(_free_udp_port("127.0.0.1")), "-m", "1", "-l", "1", "-nostdin",
        "-timeout", "30s", "-timeout_error", "-recv_timeout", "15000",
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd="/tmp"
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")[-3000:]


class Handler:
    def __init__(self, ring_until_cancelled: bool = False) -> None:
        self.calls: list[IncomingCall] = []
        self.accepted: list[bool] = []
        self.ring_until_cancelled = ring_until_cancelled

    async def __call__(self, call: IncomingCall) -> None:
        self.calls.append(call)
        if self.ring_until_cancelled:
            await call.ended.wait()  # the call layer is slow to answer; the caller gives up
        self.accepted.append(await call.accept(32000))
        await call.ended.wait()


async def test_sipp_call_ack_bye() -> None:
    handler = Handler()
    async with running_server(handler) as server:
        code, out = await run_sipp("ua_call.xml", server.port)
        assert code == 0, out
    call = handler.calls[0]
    assert handler.accepted == [True]
    assert call.end_reason == "caller_bye"
    assert call.caller == "13800000001" and call.called == "12389"
    assert call.remote_media.codec == "PCMA"


async def test_sipp_options() -> None:
    async with running_server(Handler()) as server:
        code, out = await run_sipp("ua_options.xml", server.port)
        assert code == 0, out


async def test_sipp_cancel_while_ringing() -> None:
    handler = Handler(ring_until_cancelled=True)
    async with running_server(handler) as server:
        code, out = await run_sipp("ua_cancel.xml", server.port)
        assert code == 0, out
        await asyncio.wait_for(handler.calls[0].ended.wait(), 10)
    assert handler.calls[0].end_reason == "cancel"
    assert handler.accepted == [False]


async def test_sipp_untrusted_address_gets_403() -> None:
    handler = Handler()
    async with running_server(handler, trusted=["127.0.0.1"]) as server:
        code, out = await run_sipp("ua_untrusted.xml", server.port, local_ip="127.0.0.2")
        assert code == 0, out
    assert handler.calls == []
