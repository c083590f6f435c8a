"""The dialer against a REAL callee: SIPp running tests/sipp/uas_dial_*.xml as the UAS, over loopback.

SIPp checks our side of the wire: each scenario fails unless our ACK arrives with the To-tag
of its answer (`check_it`), our CANCEL comes and the 487 is ACKed, our BYE comes. Our side is
checked through the Dialer's result, the Call row and what SIPp's RTP reached (a capture socket
the answer's SDP points at). Ports are all the kernel's picks (other tests run SIPp too).
"""

from __future__ import annotations

import array
import asyncio
import math
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from config.context import Context
from config.settings import SipSettings
from ivr import dialer as dialer_module
from ivr.call_rows import mark_answered
from ivr.dialer import DialError, Dialer
from ivr.media.g711 import alaw_decode, alaw_encode, ulaw_decode
from ivr.media.session import MediaSession
from ivr.media.ticker import Ticker
from ivr.models import Call
from ivr.sip.transactions import Timers
from ivr.sip.ua import SipServer
from tests.sipp_support import (
    RtpCapture,
    SippProcess,
    free_media_port,
    free_udp_port,
    make_rtp_pcap,
    requires_pcap_play,
    requires_sipp,
    start_sipp,
)

pytestmark = requires_sipp

TONE_SECONDS = 1.0


def _tone() -> bytes:
    """A 1 s sweep (not a constant, so a codec mix-up cannot correlate by chance), 16-bit LE 8 kHz."""
    samples = array.array("h", (int(8000 * math.sin(2 * math.pi * (300 + 400 * i / 8000) * i / 8000))
                                for i in range(int(8000 * TONE_SECONDS))))
    return samples.tobytes()


class Rig:
    """Our SIP server, clock and dialer wired as ivr/service.py wires them, on a test database."""

    def __init__(self, ctx: Context, server: SipServer, ticker: Ticker, dialer: Dialer) -> None:
        self.ctx, self.server, self.ticker, self.dialer = ctx, server, ticker, dialer

    def rows(self) -> list[Call]:
        with self.ctx.sessions() as s:
            return list(s.scalars(select(Call).order_by(Call.id)))


@pytest.fixture
async def rig(ctx: Context) -> AsyncIterator[Rig]:
    sip = SipSettings(mode="trunk", bind_host="127.0.0.1", bind_port=0, public_host="127.0.0.1",
                      rtp_port_min=30000, rtp_port_max=39999, dial_uri_template="sip:{number}@127.0.0.1:5060")
    ctx.settings = ctx.settings.model_copy(update={"sip": sip})
    server = SipServer(sip, _no_inbound, timers=Timers(t1=0.5, b=8.0), shutdown_grace=1.0)
    ticker = Ticker()
    await ticker.start()
    await server.start()
    tasks: set[asyncio.Task[None]] = set()

    async def open_media() -> MediaSession:
        return await MediaSession.open("127.0.0.1", (sip.rtp_port_min, sip.rtp_port_max), ticker=ticker, payload_type=0)

    dialer = Dialer(server, settings=ctx.settings, sessions=ctx.sessions, open_media=open_media,
                    prompts={("zh", "tone"): _tone()}, node="test", tasks=tasks)
    yield Rig(ctx, server, ticker, dialer)
    for t in list(tasks):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.stop()
    await ticker.stop()


async def _no_inbound(call: object) -> None:
    raise AssertionError("no inbound call expected")


def _callee(scenario: str, tmp_path: Path, **keys: object) -> tuple[SippProcess, str]:
    port = free_udp_port()
    proc = start_sipp(scenario, local_port=port, media_port=free_media_port(), keys=keys, workdir=tmp_path / "sipp",
                      timeout=60)
    return proc, f"sip:13800138000@127.0.0.1:{port}"


async def _wait(proc: SippProcess):  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(proc.wait, 60)


@pytest.mark.parametrize(("codec", "pt", "decode"), [("PCMA", 8, alaw_decode), ("PCMU", 0, ulaw_decode)])
async def test_answered_call_plays_prompt_then_our_bye(rig: Rig, tmp_path: Path, codec: str, pt: int,
                                                       decode: object) -> None:
    """SIPp matches our ACK (To-tag checked) and stops resending its 200; the prompt reaches it in its codec."""
    with RtpCapture() as capture:
        proc, uri = _callee("uas_dial_answer", tmp_path, rtp_ip="127.0.0.1", rtp_port=capture.port, answer_pt=pt,
                            answer_codec=codec, hold_ms=20_000)
        result = await rig.dialer.dial(uri, ring_timeout=10, caller_id="12389")
        assert (result.outcome, result.sip_status) == ("answered", 200)
        assert result.call is not None
        await result.call.play(["tone"])
        await asyncio.sleep(1.0)  # with T1 = 500 ms SIPp would have resent an unmatched 200 by now
        await result.call.hangup()
        sipp = await _wait(proc)
        capture.wait_quiet(0.5, 10)
    assert sipp.ok, sipp.describe()
    messages = sipp.messages()
    ack_at = next(i for i, m in enumerate(messages) if m.direction == "received" and m.method == "ACK")
    assert not [m for m in messages[ack_at:] if m.direction == "sent" and m.status == 200 and m.cseq_method == "INVITE"]
    assert sipp.received("BYE")
    packets = [p for p in capture.rtp() if p.payload_type == pt]
    assert len(packets) >= TONE_SECONDS / 0.02
    # PCMA really A-law (pyVoIP mu-law-encodes PT 8, PYVOIP.md item 3): find the sweep in what arrived.
    received = array.array("h", b"".join(decode(p.payload) for p in packets))  # type: ignore[operator]
    sent = array.array("h", alaw_decode(alaw_encode(_tone())) if pt == 8 else _tone())
    best = max(_correlation(received, sent, off) for off in range(0, len(received) - len(sent) + 1, 160))
    assert best > 0.95
    await asyncio.sleep(0.1)
    row = rig.rows()[-1]
    assert (row.direction, row.called, row.caller, row.disposition) == ("out", "13800138000", "12389", "answered")
    assert row.answered_at is not None and row.ended_at is not None and row.end_reason == "local_bye"


def _correlation(received: array.array, sent: array.array, offset: int) -> float:  # type: ignore[type-arg]
    window = received[offset : offset + len(sent)]
    dot = sum(a * b for a, b in zip(window, sent, strict=True))
    norm = math.sqrt(sum(a * a for a in window) * sum(b * b for b in sent)) or 1.0
    return dot / norm


async def test_callee_hangs_up(rig: Rig, tmp_path: Path) -> None:
    with RtpCapture() as capture:
        proc, uri = _callee("uas_dial_answer", tmp_path, rtp_ip="127.0.0.1", rtp_port=capture.port, answer_pt=0,
                            answer_codec="PCMU", hold_ms=1_000)
        result = await rig.dialer.dial(uri, ring_timeout=10)
        assert result.call is not None
        await asyncio.wait_for(result.call.sip.ended.wait(), 20)
        sipp = await _wait(proc)
    assert sipp.ok, sipp.describe()
    assert result.call.sip.end_reason == "callee_bye" and result.call.ended
    await asyncio.sleep(0.2)
    assert rig.rows()[-1].end_reason == "callee_bye"


@requires_pcap_play
async def test_callee_presses_1_and_we_hang_up(rig: Rig, tmp_path: Path) -> None:
    pcap = tmp_path / "digit1.pcap"
    make_rtp_pcap(None, pcap, digits=[(0.4, "1")], trailing_silence=0.5)
    proc, uri = _callee("uas_dial_digit", tmp_path, pcap=pcap, bye_wait_ms=20_000)
    result = await rig.dialer.dial(uri, ring_timeout=10)
    assert result.call is not None
    digits = await result.call.collect(max_digits=1, timeout=10)
    await result.call.hangup()
    sipp = await _wait(proc)
    assert sipp.ok, sipp.describe()
    assert digits == "1"


@pytest.mark.parametrize(("status", "reason", "outcome"), [(486, "Busy Here", "busy"), (404, "Not Found", "invalid_number")])
async def test_refusals_are_acked_and_recorded(rig: Rig, tmp_path: Path, status: int, reason: str, outcome: str) -> None:
    proc, uri = _callee("uas_dial_reject", tmp_path, status=status, reason=reason)
    result = await rig.dialer.dial(uri, ring_timeout=10)
    sipp = await _wait(proc)
    assert sipp.ok, sipp.describe()
    assert (result.outcome, result.sip_status, result.call) == (outcome, status, None)
    row = rig.rows()[-1]
    assert (row.disposition, row.direction, row.answered_at) == (outcome, "out", None) and row.ended_at is not None


async def test_never_answered_is_cancelled_at_ring_timeout(rig: Rig, tmp_path: Path) -> None:
    proc, uri = _callee("uas_dial_no_answer", tmp_path, cancel_wait_ms=20_000)
    result = await rig.dialer.dial(uri, ring_timeout=1.0)
    sipp = await _wait(proc)
    assert sipp.ok, sipp.describe()
    assert (result.outcome, result.sip_status) == ("no_answer", 487)
    assert rig.rows()[-1].disposition == "no_answer"


async def test_unreachable_callee_fails_and_bad_input_is_refused(rig: Rig) -> None:
    dead = free_udp_port()
    result = await rig.dialer.dial(f"sip:1@127.0.0.1:{dead}", ring_timeout=30)
    assert (result.outcome, result.sip_status, result.call) == ("failed", None, None)
    assert rig.rows()[-1].disposition == "failed"
    count = len(rig.rows())
    for bad in ("12 34; DROP TABLE call", "sip:", "<script>", "", "1" * 40, 13800138000):
        with pytest.raises(DialError):
            await rig.dialer.dial(bad, ring_timeout=5)  # type: ignore[arg-type]
    for caller_id in ('"evil', "a b", "x" * 60):
        with pytest.raises(DialError):
            await rig.dialer.dial("13800138000", ring_timeout=5, caller_id=caller_id)
    for ring in (0, -1, 1e9, "30"):
        with pytest.raises(DialError):
            await rig.dialer.dial("13800138000", ring_timeout=ring)  # type: ignore[arg-type]
    assert len(rig.rows()) == count  # nothing was written (or sent) for input that cannot be dialled


async def test_dial_cancelled_while_the_answer_is_written_down_still_byes_the_callee(
        rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race of a ring-all queue: the operator answered, and the ring is cancelled (the caller
    left, another operator won) while the dialer writes the answer to the Call row. The caller of
    dial() sees the cancel; the callee must still get a BYE, not hang on until they give up."""
    writing, go_on = threading.Event(), threading.Event()

    def held_mark_answered(*args: Any, **kwargs: Any) -> None:
        writing.set()
        go_on.wait(30)
        mark_answered(*args, **kwargs)

    monkeypatch.setattr(dialer_module, "mark_answered", held_mark_answered)
    with RtpCapture() as capture:
        proc, uri = _callee("uas_dial_answer", tmp_path, rtp_ip="127.0.0.1", rtp_port=capture.port, answer_pt=0,
                            answer_codec="PCMU", hold_ms=20_000)  # without our BYE it hangs up itself at 20 s
        dialing = asyncio.ensure_future(rig.dialer.dial(uri, ring_timeout=10))
        assert await asyncio.to_thread(writing.wait, 30), "the callee never answered"
        dialing.cancel()
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await dialing
        sipp = await _wait(proc)
    assert sipp.ok, sipp.describe()
    assert sipp.received("BYE"), "the answered callee was left up: no BYE from us\n" + sipp.describe()
    async with asyncio.timeout(10):
        while (row := rig.rows()[-1]).ended_at is None:
            await asyncio.sleep(0.05)  # the call's own task closes the row after the BYE
    assert (row.direction, row.end_reason) == ("out", "local_bye"), (row.direction, row.end_reason)
