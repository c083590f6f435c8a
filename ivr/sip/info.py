"""Key presses sent as SIP INFO, the fallback some PBXs use instead of RFC 4733 telephone-events.

Two bodies are in use (neither has an RFC; both predate RFC 6086 Info-Packages, so they come
without an Info-Package header and are answered as legacy INFO):

    Content-Type: application/dtmf-relay        Content-Type: application/dtmf
    Signal=5                                    5
    Duration=160

The signal is one of 0-9 * # A-D, or the RFC 4733 event code of one (10 = *, 11 = #,
12-15 = A-D), which Cisco and some Asterisk versions send. Pure: bytes in, a digit out, so
every hostile body is tested here; the UA answers 200 for a digit, 400 for a DTMF body
without one, 415 for a body of any other type (RFC 3261 8.2.3), 200 for an empty INFO.
"""

from __future__ import annotations

DTMF_TYPES = ("application/dtmf-relay", "application/dtmf")
_KEYS = "0123456789*#ABCD"


class DtmfInfoError(ValueError):
    """A DTMF INFO body that names no key we know."""


def _key(signal: str) -> str:
    text = signal.strip().upper()
    if len(text) == 1 and text in _KEYS:
        return text
    if text.isdigit() and len(text) <= 2 and int(text) < len(_KEYS):
        return _KEYS[int(text)]
    raise DtmfInfoError(f"Signal {signal.strip()[:20]!r} is not a key (0-9, *, #, A-D or event 0-15)")


def dtmf_from_info(content_type: str | None, body: bytes) -> str | None:
    """The key an INFO carries: a digit for a DTMF content type, None for any other.

    Raises DtmfInfoError for a DTMF body without a usable signal.
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind not in DTMF_TYPES:
        return None
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise DtmfInfoError("DTMF INFO body is not ASCII") from None
    if kind == "application/dtmf":
        return _key(text)
    for line in text.splitlines():
        name, eq, value = line.partition("=")
        if eq and name.strip().lower() == "signal":
            return _key(value)
    raise DtmfInfoError("application/dtmf-relay body has no Signal= line")
