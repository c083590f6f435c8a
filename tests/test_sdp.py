"""SDP offer parsing, codec choice and the answer, with truncated and invalid bodies."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ivr.sip.message import parse_message
from ivr.sip.sdp import (
    NoCommonCodec,
    SdpError,
    build_answer,
    build_offer,
    format_event_list,
    negotiate,
    parse_event_list,
    parse_sdp,
)

TORTURE = Path(__file__).resolve().parent.parent.parent / "shared" / "sip-torture"

# What a softphone (linphone/baresip style) offers: Opus first, then G.711, telephone-event 101.
OFFER = (
    b"v=0\r\n"
    b"o=caller 8000 8000 IN IP4 192.0.2.10\r\n"
    b"s=Talk\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 96 8 0 101\r\n"
    b"a=rtpmap:96 opus/48000/2\r\n"
    b"a=fmtp:96 useinbandfec=1\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
    b"m=video 40002 RTP/AVP 97\r\n"
    b"a=rtpmap:97 H264/90000\r\n"
)


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


def test_parse_offer() -> None:
    s = parse_sdp(OFFER)
    assert s.connection == "192.0.2.10"
    audio, video = s.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == ("audio", 40000, "RTP/AVP", ["96", "8", "0", "101"])
    assert audio.codec(96).encoding == "opus" and audio.codec(96).channels == 2  # type: ignore[union-attr]
    assert audio.codec(0).encoding == "PCMU"  # static, no rtpmap needed  # type: ignore[union-attr]
    assert audio.fmtp[101] == "0-16" and audio.ptime == 20 and audio.direction == "sendrecv"
    assert video.media == "video" and video.port == 40002


def test_negotiate_prefers_our_order_and_keeps_their_event_type() -> None:
    choice = negotiate(parse_sdp(OFFER))
    assert (choice.codec, choice.payload_type) == ("PCMU", 0)  # our preference, not the offer's order
    assert (choice.remote_host, choice.remote_port) == ("192.0.2.10", 40000)
    assert choice.dtmf_payload_type == 101 and choice.dtmf_events == frozenset(range(16))
    assert choice.direction == "sendrecv" and not choice.on_hold and choice.may_send and choice.may_receive
    assert negotiate(parse_sdp(OFFER), preferences=("PCMA", "PCMU")).payload_type == 8


def test_pcma_only_and_dynamic_event_type() -> None:
    body = sdp(
        "v=0", "o=- 1 1 IN IP4 10.0.0.5", "s=-", "c=IN IP4 10.0.0.5", "t=0 0",
        "m=audio 5004 RTP/AVP 8 96", "a=rtpmap:96 telephone-event/8000", "a=ptime:30",
    )
    choice = negotiate(parse_sdp(body))
    assert (choice.codec, choice.payload_type, choice.dtmf_payload_type, choice.ptime) == ("PCMA", 8, 96, 30)
    assert choice.dtmf_events == frozenset(range(16))  # no fmtp: RFC 4733 default


@pytest.mark.parametrize(("attrs", "maxptime"), [
    (["a=ptime:30"], None), (["a=ptime:40"], None), (["a=ptime:10"], None),
    (["a=ptime:30", "a=maxptime:40"], 40), (["a=maxptime:20"], 20), (["a=ptime:0", "a=maxptime:0"], None),
])
def test_any_ptime_and_a_maxptime_of_20_or_more_negotiate_and_we_answer_20(attrs: list[str], maxptime: int | None) -> None:
    """ptime is the caller's wish (a hint), maxptime its limit: we send 20 ms whenever 20 <= maxptime."""
    offer = parse_sdp(sdp("v=0", "c=IN IP4 10.0.0.5", "t=0 0", "m=audio 5004 RTP/AVP 0", *attrs))
    assert offer.media[0].maxptime == maxptime
    choice = negotiate(offer)
    answer = parse_sdp(build_answer(offer, choice, host="127.0.0.1", port=20000))
    assert answer.media[0].ptime == 20 and answer.media[0].maxptime is None


@pytest.mark.parametrize("maxptime", [10, 19])
def test_maxptime_below_our_20_ms_is_488_naming_it(maxptime: int) -> None:
    offer = parse_sdp(sdp("v=0", "c=IN IP4 10.0.0.5", "m=audio 5004 RTP/AVP 0", "a=ptime:10", f"a=maxptime:{maxptime}"))
    with pytest.raises(NoCommonCodec, match=f"maxptime is {maxptime} ms; we send 20 ms") as info:
        negotiate(offer)
    assert info.value.status == 488


def test_codec_found_by_rtpmap_name_not_only_static_number() -> None:
    body = sdp("v=0", "c=IN IP4 10.0.0.5", "m=audio 5004 RTP/AVP 110", "a=rtpmap:110 pcma/8000")
    choice = negotiate(parse_sdp(body))
    assert (choice.codec, choice.payload_type) == ("PCMA", 110)


def test_telephone_event_at_other_rate_is_not_ours() -> None:
    body = sdp("v=0", "c=IN IP4 10.0.0.5", "m=audio 5004 RTP/AVP 0 100", "a=rtpmap:100 telephone-event/48000")
    assert negotiate(parse_sdp(body)).dtmf_payload_type is None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (sdp("v=0", "c=IN IP4 10.0.0.5", "m=audio 5004 RTP/AVP 18 4", "a=rtpmap:18 G729/8000"), "offered 18 G729/8000, 4 G723/8000"),
        (sdp("v=0", "c=IN IP4 10.0.0.5", "m=audio 0 RTP/AVP 0"), "no active RTP/AVP audio"),
        (sdp("v=0", "c=IN IP4 10.0.0.5", "m=audio 5004 RTP/SAVP 0"), "no active RTP/AVP audio"),
        (sdp("v=0", "c=IN IP4 10.0.0.5", "m=video 5004 RTP/AVP 31"), "no active RTP/AVP audio"),
        (sdp("v=0", "c=IN IP4 10.0.0.5"), "no m= lines"),
        (sdp("v=0", "c=IN IP4 10.0.0.5", "m=audio 5004 RTP/AVP 0", "a=rtpmap:0 PCMU/16000"), "none of PCMU, PCMA"),
        (sdp("v=0", "c=IN IP4 10.0.0.5", "m=audio 5004 RTP/AVP 8", "a=rtpmap:8 PCMA/8000/2"), "none of PCMU, PCMA"),
    ],
)
def test_no_common_codec_is_488(body: bytes, fragment: str) -> None:
    with pytest.raises(NoCommonCodec, match=fragment) as info:
        negotiate(parse_sdp(body))
    assert info.value.status == 488


@pytest.mark.parametrize(
    ("offered", "answered", "hold"),
    [("sendrecv", "sendrecv", False), ("sendonly", "recvonly", True), ("recvonly", "sendonly", False), ("inactive", "inactive", True)],
)
def test_direction_mirrored(offered: str, answered: str, hold: bool) -> None:
    choice = negotiate(parse_sdp(OFFER.replace(b"a=sendrecv", f"a={offered}".encode())))
    assert (choice.direction, choice.on_hold) == (answered, hold)


def test_session_level_direction_applies_and_media_level_wins() -> None:
    base = ["v=0", "c=IN IP4 10.0.0.5", "a=sendonly", "m=audio 5004 RTP/AVP 0"]
    assert negotiate(parse_sdp(sdp(*base))).direction == "recvonly"
    assert negotiate(parse_sdp(sdp(*base, "a=inactive"))).direction == "inactive"


def test_rfc2543_hold_address() -> None:
    choice = negotiate(parse_sdp(OFFER.replace(b"c=IN IP4 192.0.2.10", b"c=IN IP4 0.0.0.0")))
    assert choice.on_hold and choice.direction == "recvonly" and not choice.may_send


def test_media_level_connection_overrides_session() -> None:
    body = sdp("v=0", "c=IN IP4 10.0.0.5", "m=audio 5004 RTP/AVP 0", "c=IN IP4 10.0.0.9/127")
    assert negotiate(parse_sdp(body)).remote_host == "10.0.0.9"


def test_answer_has_one_line_per_offered_stream() -> None:
    offer_sdp = parse_sdp(OFFER)
    choice = negotiate(offer_sdp)
    answer = build_answer(offer_sdp, choice, host="198.51.100.1", port=30000, session_id=42)
    text = answer.decode()
    assert "o=- 42 1 IN IP4 198.51.100.1\r\n" in text and "c=IN IP4 198.51.100.1\r\n" in text
    assert "m=audio 30000 RTP/AVP 0 101\r\n" in text and "m=video 0 RTP/AVP 97\r\n" in text
    assert "a=fmtp:101 0-15\r\n" in text and "opus" not in text
    parsed = parse_sdp(answer)
    assert [m.port for m in parsed.media] == [30000, 0]
    again = negotiate(parsed)  # the answer is itself valid SDP we could negotiate against
    assert (again.codec, again.dtmf_payload_type, again.direction) == ("PCMU", 101, "sendrecv")


def test_answer_to_hold_is_recvonly_and_ipv6() -> None:
    offer_sdp = parse_sdp(OFFER.replace(b"a=sendrecv", b"a=sendonly"))
    answer = build_answer(offer_sdp, negotiate(offer_sdp), host="2001:db8::1", port=30000).decode()
    assert "a=recvonly\r\n" in answer and "c=IN IP6 2001:db8::1\r\n" in answer


def test_offer_for_outbound_calls() -> None:
    body = build_offer(host="198.51.100.1", port=31000, session_id=7)
    choice = negotiate(parse_sdp(body))
    assert (choice.codec, choice.remote_port, choice.dtmf_payload_type) == ("PCMU", 31000, 101)
    assert parse_sdp(body).media[0].formats == ["0", "8", "101"]


def test_event_lists() -> None:
    assert parse_event_list("0-15") == frozenset(range(16))
    assert parse_event_list("0-11, 16") == frozenset([*range(12), 16])
    assert format_event_list(frozenset([0, 1, 2, 5, 7, 8])) == "0-2,5,7-8"
    for bad in ("", "a-b", "5-1", "0-300", "1-"):
        with pytest.raises(SdpError):
            parse_event_list(bad)


def test_event_fmtp_narrows_or_defaults() -> None:
    narrow = OFFER.replace(b"a=fmtp:101 0-16", b"a=fmtp:101 0-11")
    assert negotiate(parse_sdp(narrow)).dtmf_events == frozenset(range(12))
    broken = OFFER.replace(b"a=fmtp:101 0-16", b"a=fmtp:101 zz")
    assert negotiate(parse_sdp(broken)).dtmf_events == frozenset(range(16))


def test_broken_attribute_on_an_unused_stream_is_ignored() -> None:
    body = OFFER.replace(b"a=rtpmap:97 H264/90000", b"a=rtpmap:97 H264")
    assert negotiate(parse_sdp(body)).codec == "PCMU"


def test_torture_message_bodies() -> None:
    """The SDP inside RFC 4475 INVITEs: audio 0/12 plus video, negotiated to PCMU, video refused."""
    msg = parse_message((TORTURE / "wsinv.dat").read_bytes())
    offered = parse_sdp(msg.body)
    choice = negotiate(offered)
    assert (choice.codec, choice.remote_host, choice.remote_port) == ("PCMU", "192.0.2.4", 49217)
    assert b"m=video 0 RTP/AVP 31" in build_answer(offered, choice, host="198.51.100.1", port=30000)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"\r\n", "empty"),
        (b"o=- 1 1 IN IP4 10.0.0.5\r\n", "start with v=0"),
        (b"v=1\r\n", "start with v=0"),
        (b"v=0\r\nthis is not sdp\r\n", "malformed SDP line"),
        (b"v=0\r\nM=audio 1 RTP/AVP 0\r\n", "malformed SDP line"),
        (sdp("v=0", "m=audio 5004 RTP/AVP"), "needs media, port, proto"),
        (sdp("v=0", "m=audio"), "needs media, port, proto"),
        (sdp("v=0", "m=audio port RTP/AVP 0"), "invalid media port"),
        (sdp("v=0", "m=audio 70000 RTP/AVP 0"), "invalid media port"),
        (sdp("v=0", "c=IN IP4"), "c= must be"),
        (sdp("v=0", "c=IN IPX 10.0.0.5"), "c= must be"),
        (sdp("v=0", "c=IN IP4 10.0.0.5<"), "invalid connection address"),
        (sdp("v=0", "m=audio 5004 RTP/AVP 0", "a=rtpmap:0 PCMU"), "a=rtpmap must be"),
        (sdp("v=0", "m=audio 5004 RTP/AVP 0", "a=rtpmap:300 PCMU/8000"), "invalid payload type"),
        (sdp("v=0", "m=audio 5004 RTP/AVP 0", "a=rtpmap:x PCMU/8000"), "invalid payload type"),
        (sdp("v=0", "m=audio 5004 RTP/AVP 0", "a=ptime:twenty"), "invalid ptime"),
        (sdp("v=0", "m=audio 5004 RTP/AVP 0", "a=maxptime:-20"), "invalid maxptime"),
        (b"v=0\r\ns=\xff\xfe\r\n", "not UTF-8"),
    ],
)
def test_invalid_sdp(body: bytes, fragment: str) -> None:
    with pytest.raises(SdpError, match=fragment) as info:
        parse_sdp(body)
    assert info.value.status == 400


def test_missing_connection_is_an_error_not_a_guess() -> None:
    with pytest.raises(SdpError, match="no c= line"):
        negotiate(parse_sdp(sdp("v=0", "m=audio 5004 RTP/AVP 0")))


def test_every_truncation_is_sdp_error_or_a_choice() -> None:
    zero = OFFER.index(b" 0 101") + 1
    eight = OFFER.index(b" 8 0 101") + 1
    choices = 0
    for cut in range(len(OFFER)):
        try:
            choice = negotiate(parse_sdp(OFFER[:cut]))
        except SdpError:
            continue  # a half line ("a", "a=rtpm") or a cut before the formats
        choices += 1
        # What a cut leaves negotiable is the codec the surviving format list allows, at the offered address.
        assert cut > eight
        assert choice.codec == ("PCMU" if cut > zero else "PCMA")
        assert (choice.remote_host, choice.remote_port) == ("192.0.2.10", 40000)
    assert choices > 0


def test_random_corruption_never_crashes() -> None:
    rng = random.Random(3264)
    outcomes = set()
    for _ in range(3000):
        data = bytearray(OFFER)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.choice((rng.randrange(256), *b" =:/\r\n0123456789"))
        try:
            negotiate(parse_sdp(bytes(data)))
            outcomes.add("choice")
        except NoCommonCodec:
            outcomes.add("488")
        except SdpError:
            outcomes.add("400")
    assert outcomes == {"choice", "488", "400"}
