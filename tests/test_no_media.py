"""The no-media timer (ivr/call.py end_when_media_stops) on a real MediaSession fed over loopback UDP.

The SIP leg is a small stand-in here (what the timer reads: ended, on_hold, remote_media, and
hangup(reason)); the SIPp tests in tests/test_ivr_sipp.py run the same timer through the real
service (a caller whose RTP stops, and one on hold). Waits only bound a hang; nothing asserts
how long anything took.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator

import pytest

from ivr.call import end_when_media_stops, far_end_may_be_silent
from ivr.media.g711 import PCMU
from ivr.media.rtp import RtpPacket
from ivr.media.session import MediaSession
from ivr.media.ticker import Ticker
from ivr.sip.sdp import AudioChoice

HOST = "127.0.0.1"
SENDRECV = AudioChoice(media_index=0, remote_host=HOST, remote_port=40000, payload_type=0, codec="PCMU",
                       dtmf_payload_type=101, dtmf_events=frozenset(range(16)), direction="sendrecv",
                       on_hold=False, ptime=20)


class Leg:
    """What the timer needs of a SIP leg."""

    def __init__(self) -> None:
        self.call_id = "no-media-test"
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self.on_hold = False
        self.remote_media: AudioChoice | None = SENDRECV
        self.on_media_update = None
        self.on_digit = None
        self.hangups: list[str] = []

    async def hangup(self, reason: str = "local_bye") -> None:
        self.hangups.append(reason)
        self.end_reason = reason
        self.ended.set()


@pytest.fixture
async def media() -> AsyncIterator[MediaSession]:
    ticker = Ticker()
    await ticker.start()
    session = await MediaSession.open(HOST, (34000, 34998), ticker=ticker, payload_type=PCMU)
    yield session
    await session.close()
    await ticker.stop()


def send_rtp(port: int, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(count):
            s.sendto(RtpPacket(0, i, i * 160, 7, b"\xff" * 160).serialize(), (HOST, port))


@pytest.mark.parametrize(("direction", "on_hold", "silent"), [
    ("sendrecv", False, False), ("recvonly", True, True), ("inactive", True, True), ("sendonly", False, True),
])
def test_far_end_may_be_silent_on_hold_or_when_it_only_receives(direction: str, on_hold: bool, silent: bool) -> None:
    """Our answer's direction mirrors the offer: we are sendonly when the far end is recvonly (sends nothing)."""
    leg = Leg()
    leg.remote_media = dataclasses.replace(SENDRECV, direction=direction, on_hold=on_hold)
    leg.on_hold = on_hold
    assert far_end_may_be_silent(leg) is silent  # type: ignore[arg-type]


async def test_zero_disables_the_timer(media: MediaSession) -> None:
    leg = Leg()
    await asyncio.wait_for(end_when_media_stops(leg, media, 0), 5)  # type: ignore[arg-type]
    assert leg.hangups == []


async def test_rtp_that_stops_ends_the_call_with_no_media(media: MediaSession) -> None:
    leg = Leg()
    timer = asyncio.ensure_future(end_when_media_stops(leg, media, 0.3, poll=0.05))  # type: ignore[arg-type]
    send_rtp(media.local_port, 5)
    await asyncio.wait_for(timer, 10)
    assert leg.hangups == ["no_media"]
    assert media.stats["packets_in"] == 5  # it heard the caller, then the caller went quiet


async def test_hold_pauses_the_count_and_resume_restarts_it(media: MediaSession) -> None:
    leg = Leg()
    leg.on_hold = True
    leg.remote_media = dataclasses.replace(SENDRECV, direction="recvonly", on_hold=True)
    timer = asyncio.ensure_future(end_when_media_stops(leg, media, 0.2, poll=0.05))  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    held_until = loop.time() + 1.0  # five times the timer, all on hold
    while loop.time() < held_until:
        await asyncio.sleep(0.05)
    assert not timer.done() and leg.hangups == []
    leg.on_hold = False
    leg.remote_media = SENDRECV
    await asyncio.wait_for(timer, 10)
    assert leg.hangups == ["no_media"]


async def test_a_call_ended_otherwise_stops_the_timer_quietly(media: MediaSession) -> None:
    leg = Leg()
    timer = asyncio.ensure_future(end_when_media_stops(leg, media, 30, poll=0.05))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    leg.ended.set()  # the caller's BYE
    await asyncio.wait_for(timer, 5)
    assert leg.hangups == []
