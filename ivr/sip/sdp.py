"""SDP offer/answer for one audio stream (RFC 4566 syntax, RFC 3264 negotiation, RFC 4733 events).

What the IVR needs from a caller's SDP: where to send RTP, which G.711 law, which payload
type carries telephone-events, and whether the caller has put us on hold. `negotiate`
returns that as an `AudioChoice` or raises `NoCommonCodec` (the call layer answers 488);
a body that is not SDP at all raises `SdpError` (400). `build_answer` keeps one m= line per
offered stream, rejecting the others with port 0, as RFC 3264 section 6 requires: an answer
that drops the offer's video line is refused by strict peers.

Packetization (RFC 4566 6, RFC 3264 6.1, RFC 3551 4.2/4.5): an offer's a=ptime is the
duration the caller would *like* to receive, a hint; a=maxptime is the most it can take, a
limit. We always send 20 ms (the G.711 default every RTP/AVP endpoint must accept), so any
ptime is fine and only a maxptime below 20 cannot work: that offer gets 488, naming why. Our
answer says a=ptime:20 (what we would like), but we accept packets of any duration the caller
sends (10, 30, 40, 60 ms...; RFC 3551 4.2 asks receivers for 0-200 ms): the media layer cuts
them into 20 ms frames (ivr/media/playout.py `Reframer`).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

PCMU = "PCMU"
PCMA = "PCMA"
TELEPHONE_EVENT = "telephone-event"
DEFAULT_PREFERENCES = (PCMU, PCMA)
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
_HOLD_ADDRESSES = ("0.0.0.0", "::")
SEND_PTIME = 20
"""Milliseconds of audio in every packet we send (one tick of the media clock)."""
DTMF_EVENTS = frozenset(range(16))
"""0-9, *, #, A-D: the events a keypad sends and the RFC 4733 default when fmtp is absent."""

_LINE = re.compile(r"([a-z])=(.*)\Z")
_DIGITS = re.compile(r"[0-9]{1,10}\Z")


class SdpError(ValueError):
    """The body is not usable SDP; a server answers `status` (400)."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoCommonCodec(SdpError):
    """Valid SDP with nothing we can speak; the answer is 488 Not Acceptable Here (RFC 3261 13.3.1.4)."""

    status = 488


@dataclass(frozen=True)
class RtpMap:
    encoding: str
    clock_rate: int
    channels: int = 1


STATIC_PAYLOAD_TYPES = {
    0: RtpMap("PCMU", 8000),
    3: RtpMap("GSM", 8000),
    4: RtpMap("G723", 8000),
    8: RtpMap("PCMA", 8000),
    9: RtpMap("G722", 8000),
    18: RtpMap("G729", 8000),
}
"""RFC 3551 table 4, the audio entries a phone offers; an offer need not send a=rtpmap for them."""


@dataclass
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    direction: str | None = None
    ptime: int | None = None
    maxptime: int | None = None
    rtpmap: dict[int, RtpMap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def codec(self, payload_type: int) -> RtpMap | None:
        """What a payload type means here: its a=rtpmap, else the static table."""
        return self.rtpmap.get(payload_type) or STATIC_PAYLOAD_TYPES.get(payload_type)

    def payload_types(self) -> list[int]:
        return [int(f) for f in self.formats if _DIGITS.match(f) and int(f) <= 127]


@dataclass
class SessionDescription:
    origin: str = ""
    connection: str | None = None
    direction: str | None = None
    media: list[MediaDescription] = field(default_factory=list)


def parse_sdp(body: bytes | str) -> SessionDescription:
    """Parse an SDP body; anything that would leave the audio stream ambiguous raises SdpError."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SdpError(f"SDP is not UTF-8 (byte {e.start})") from None
    else:
        text = body
    lines = [ln for ln in re.split(r"\r?\n", text) if ln.strip()]
    if not lines:
        raise SdpError("empty SDP")
    if lines[0].strip() != "v=0":
        raise SdpError(f"SDP must start with v=0, not {lines[0][:40]!r}")
    sdp = SessionDescription()
    current: MediaDescription | None = None
    for line in lines[1:]:
        m = _LINE.match(line.rstrip())
        if not m:
            raise SdpError(f"malformed SDP line {line[:60]!r}")
        kind, value = m.groups()
        if kind == "m":
            current = _parse_media(value)
            sdp.media.append(current)
        elif kind == "c":
            address = _parse_connection(value)
            if current is None:
                sdp.connection = address
            else:
                current.connection = address
        elif kind == "o" and current is None:
            sdp.origin = value
        elif kind == "a":
            _apply_attribute(sdp, current, value)
    return sdp


def _parse_media(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"m= line needs media, port, proto and a format: {value[:60]!r}")
    media, port_text, proto, *formats = parts
    port_text = port_text.split("/", 1)[0]
    if not _DIGITS.match(port_text) or int(port_text) > 65535:
        raise SdpError(f"invalid media port {port_text[:20]!r}")
    return MediaDescription(media.lower(), int(port_text), proto, formats)


def _parse_connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"c= must be 'IN IP4|IP6 address': {value[:60]!r}")
    address = parts[2].split("/", 1)[0]
    if not re.match(r"[A-Za-z0-9.:\-]+\Z", address):
        raise SdpError(f"invalid connection address {address[:60]!r}")
    return address


def _apply_attribute(sdp: SessionDescription, media: MediaDescription | None, value: str) -> None:
    name, colon, arg = value.partition(":")
    if name in DIRECTIONS:
        if media is None:
            sdp.direction = name
        else:
            media.direction = name
        return
    if media is None:
        return
    media.attributes.append((name, arg if colon else None))
    if media.media != "audio":
        return  # never used, always rejected in the answer: its attributes cannot spoil the call
    if name == "rtpmap":
        pt, rtpmap = _parse_rtpmap(arg)
        media.rtpmap[pt] = rtpmap
    elif name == "fmtp":
        pt_text, _, params = arg.partition(" ")
        media.fmtp[_payload_type(pt_text)] = params.strip()
    elif name in ("ptime", "maxptime"):
        if not _DIGITS.match(arg.strip()):
            raise SdpError(f"invalid {name} {arg[:20]!r}")
        setattr(media, name, int(arg) or None)  # 0 is no value (RFC 3264 6.1: ptime MUST be > 0): ignored


def _payload_type(text: str) -> int:
    if not _DIGITS.match(text) or int(text) > 127:
        raise SdpError(f"invalid payload type {text[:20]!r}")
    return int(text)


def _parse_rtpmap(arg: str) -> tuple[int, RtpMap]:
    pt_text, _, spec = arg.partition(" ")
    pt = _payload_type(pt_text)
    parts = spec.strip().split("/")
    if len(parts) not in (2, 3) or not parts[0] or not all(_DIGITS.match(p) for p in parts[1:]):
        raise SdpError(f"a=rtpmap must be 'pt encoding/rate[/channels]': {arg[:60]!r}")
    channels = int(parts[2]) if len(parts) == 3 else 1
    return pt, RtpMap(parts[0], int(parts[1]), channels)


def parse_event_list(text: str) -> frozenset[int]:
    """Parse a telephone-event fmtp such as `0-15` or `0-11,16` (RFC 4733 2.4.1)."""
    events: set[int] = set()
    for item in text.replace(" ", "").split(","):
        lo, dash, hi = item.partition("-")
        if not _DIGITS.match(lo) or (dash and not _DIGITS.match(hi)):
            raise SdpError(f"invalid telephone-event list {text[:40]!r}")
        first, last = int(lo), int(hi) if dash else int(lo)
        if first > last or last > 255:
            raise SdpError(f"invalid telephone-event range {item!r}")
        events.update(range(first, last + 1))
    return frozenset(events)


def format_event_list(events: frozenset[int] | set[int]) -> str:
    out: list[str] = []
    for e in sorted(events):
        if out and out[-1][1] == e - 1:
            out[-1] = (out[-1][0], e)
        else:
            out.append((e, e))  # type: ignore[arg-type]
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)  # type: ignore[misc]


@dataclass(frozen=True)
class AudioChoice:
    """The negotiated audio stream, from our side.

    `direction` is what we put in the answer; `on_hold` is true when the caller does not
    want to receive (sendonly/inactive, or the RFC 2543 hold address c=0.0.0.0), so the
    media layer stops sending but keeps the call.
    """

    media_index: int
    remote_host: str
    remote_port: int
    payload_type: int
    codec: str
    dtmf_payload_type: int | None
    dtmf_events: frozenset[int]
    direction: str
    on_hold: bool
    ptime: int

    @property
    def may_send(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def may_receive(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


def negotiate(offer: SessionDescription, preferences: tuple[str, ...] = DEFAULT_PREFERENCES) -> AudioChoice:
    """Pick the first usable audio stream and our most preferred codec in it (RFC 3264 6.1)."""
    audio = [
        (i, m) for i, m in enumerate(offer.media) if m.media == "audio" and m.port != 0 and m.proto.upper() == "RTP/AVP"
    ]
    if not audio:
        kinds = ", ".join(f"{m.media} {m.port} {m.proto}" for m in offer.media) or "no m= lines"
        raise NoCommonCodec(f"no active RTP/AVP audio stream ({kinds})")
    index, media = audio[0]
    if media.maxptime is not None and media.maxptime < SEND_PTIME:
        raise NoCommonCodec(f"offer's maxptime is {media.maxptime} ms; we send {SEND_PTIME} ms packets")
    payload_type, codec = _choose_codec(media, preferences)
    host = media.connection or offer.connection
    if host is None:
        raise SdpError("no c= line for the audio stream")
    dtmf_pt, events = _choose_events(media)
    offered = media.direction or offer.direction or "sendrecv"
    hold_address = host in _HOLD_ADDRESSES
    if hold_address:
        offered = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(offered, offered)
    return AudioChoice(
        media_index=index,
        remote_host=host,
        remote_port=media.port,
        payload_type=payload_type,
        codec=codec,
        dtmf_payload_type=dtmf_pt,
        dtmf_events=events,
        direction=_MIRROR[offered],
        on_hold=offered in ("sendonly", "inactive"),
        ptime=media.ptime or 20,
    )


def _choose_codec(media: MediaDescription, preferences: tuple[str, ...]) -> tuple[int, str]:
    for wanted in preferences:
        for pt in media.payload_types():
            c = media.codec(pt)
            if c and c.encoding.upper() == wanted.upper() and c.clock_rate == 8000 and c.channels == 1:
                return pt, wanted.upper()
    offered = ", ".join(
        f"{pt} {c.encoding}/{c.clock_rate}" if (c := media.codec(pt)) else f"{pt} (unknown)"
        for pt in media.payload_types()
    )
    raise NoCommonCodec(f"offer has none of {', '.join(preferences)}: offered {offered or 'nothing'}")


def _choose_events(media: MediaDescription) -> tuple[int | None, frozenset[int]]:
    """The offer's telephone-event/8000 payload type and the DTMF events both sides know.

    A malformed or missing fmtp means the RFC 4733 default 0-15: a caller's keypad matters
    more here than a strict reading of one attribute.
    """
    for pt in media.payload_types():
        c = media.codec(pt)
        if c and c.encoding.lower() == TELEPHONE_EVENT and c.clock_rate == 8000:
            try:
                events = parse_event_list(media.fmtp[pt]) & DTMF_EVENTS if pt in media.fmtp else DTMF_EVENTS
            except SdpError:
                events = DTMF_EVENTS
            if events:
                return pt, frozenset(events)
    return None, frozenset()


def _session_lines(host: str, session_id: int | None, session_version: int) -> list[str]:
    family = "IP6" if ":" in host else "IP4"
    sid = session_id if session_id is not None else secrets.randbelow(2**31)
    return ["v=0", f"o=- {sid} {session_version} IN {family} {host}", "s=-", f"c=IN {family} {host}", "t=0 0"]


def _audio_lines(port: int, pt: int, codec: str, dtmf_pt: int | None, events: frozenset[int], direction: str, ptime: int) -> list[str]:
    formats = f"{pt}" if dtmf_pt is None else f"{pt} {dtmf_pt}"
    lines = [f"m=audio {port} RTP/AVP {formats}", f"a=rtpmap:{pt} {codec}/8000"]
    if dtmf_pt is not None:
        lines += [f"a=rtpmap:{dtmf_pt} {TELEPHONE_EVENT}/8000", f"a=fmtp:{dtmf_pt} {format_event_list(events)}"]
    return lines + [f"a=ptime:{ptime}", f"a={direction}"]


def build_answer(
    offer: SessionDescription,
    choice: AudioChoice,
    *,
    host: str,
    port: int,
    session_id: int | None = None,
    session_version: int = 1,
    ptime: int = 20,
) -> bytes:
    """Our answer: the chosen audio stream on `host:port`, every other offered stream rejected."""
    lines = _session_lines(host, session_id, session_version)
    for i, m in enumerate(offer.media):
        if i == choice.media_index:
            lines += _audio_lines(
                port, choice.payload_type, choice.codec, choice.dtmf_payload_type, choice.dtmf_events,
                choice.direction, ptime,
            )
        else:
            lines.append(f"m={m.media} 0 {m.proto} {m.formats[0]}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def build_offer(
    *,
    host: str,
    port: int,
    codecs: tuple[str, ...] = DEFAULT_PREFERENCES,
    dtmf_payload_type: int = 101,
    session_id: int | None = None,
    session_version: int = 1,
    direction: str = "sendrecv",
    ptime: int = 20,
) -> bytes:
    """An offer for outbound calls (return visits): G.711 in our order plus telephone-event."""
    static = {"PCMU": 0, "PCMA": 8}
    pts = [static[c.upper()] for c in codecs]
    lines = _session_lines(host, session_id, session_version)
    lines.append(f"m=audio {port} RTP/AVP {' '.join(map(str, pts))} {dtmf_payload_type}")
    lines += [f"a=rtpmap:{pt} {c.upper()}/8000" for pt, c in zip(pts, codecs)]
    lines += [
        f"a=rtpmap:{dtmf_payload_type} {TELEPHONE_EVENT}/8000",
        f"a=fmtp:{dtmf_payload_type} 0-15",
        f"a=ptime:{ptime}",
        f"a={direction}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
