"""The SIP wire layer: pure parsing and building of SIP messages and SDP, no sockets, no call state.

Kept apart from call handling (as voip-utils keeps `sip.py` apart from its call protocol) so
that every malformed datagram a trunk can send is tested here, byte for byte, and the call
layer only ever sees a parsed message or one `SipParseError` / `SdpError`.
"""

from ivr.sip.message import (
    Headers,
    NameAddr,
    Request,
    Response,
    SipParseError,
    SipUri,
    Via,
    build_request,
    build_response,
    parse_message,
)
from ivr.sip.sdp import AudioChoice, NoCommonCodec, SdpError, SessionDescription, build_answer, negotiate, parse_sdp

__all__ = [
    "AudioChoice",
    "Headers",
    "NameAddr",
    "NoCommonCodec",
    "Request",
    "Response",
    "SdpError",
    "SessionDescription",
    "SipParseError",
    "SipUri",
    "Via",
    "build_answer",
    "build_request",
    "build_response",
    "negotiate",
    "parse_message",
    "parse_sdp",
]
