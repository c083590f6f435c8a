"""SIP messages on the wire (RFC 3261 section 7, 18.3, 20, 25): parse a datagram, build, serialise.

Pure functions on bytes and strings: no sockets, no transactions, no dialogs. The call layer
gets either a `Request` / `Response` or one `SipParseError`, whose `status` says what a
server should answer (400, 505, 513) and whose `partial` carries whatever headers could be
read, so the error response can still copy Via/From/To/Call-ID/CSeq (RFC 3261 8.2.6).
Nothing else may escape from `parse_message`: a trunk sends garbage sometimes, and one bad
datagram must never take the process down (pyVoIP answers none of them; PYVOIP.md item 6).

Deliberate leniency, each allowed by RFC 4475: runs of spaces between request-line elements
and trailing spaces after it (3.1.2.9/10), spaces inside `< >` (3.1.2.14), display names
that are not tokens (3.1.2.15, callers' UTF-8 names arrive like that), CRLFs before the
start line (RFC 3261 7.5), header lines that are not UTF-8 (read as Latin-1 and listed in
`non_utf8_headers`, so an old phone's "Müller" does not cost the caller the call).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

MAX_MESSAGE_BYTES = 65536
"""Larger datagrams are refused (513). UDP cannot carry more than 65507 bytes anyway."""

SIP_VERSION = "SIP/2.0"
BRANCH_COOKIE = "z9hG4bK"
MAX_CSEQ = 2**31 - 1
"""RFC 3261 8.1.1.5: the CSeq number MUST be less than 2**31."""

MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
SINGLE_VALUED = ("From", "To", "Call-ID", "CSeq", "Content-Length", "Content-Type", "Max-Forwards")

COMPACT = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}
"""Compact header forms (RFC 3261 7.3.3 and the extensions that registered one)."""

_CANONICAL_NAMES = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
    "Content-Encoding", "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date",
    "Error-Info", "Event", "Expires", "From", "Identity", "Identity-Info", "In-Reply-To",
    "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version", "Organization",
    "P-Asserted-Identity", "P-Preferred-Identity", "Priority", "Privacy", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To",
    "Referred-By", "Reject-Contact", "Remote-Party-ID", "Reply-To", "Request-Disposition",
    "Require", "Retry-After", "Route", "RSeq", "Server", "Session-Expires", "Subject",
    "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
    "Warning", "WWW-Authenticate",
)
_CANONICAL = {n.lower(): n for n in _CANONICAL_NAMES}

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout",
    413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    503: "Service Unavailable", 505: "Version Not Supported", 513: "Message Too Large",
    603: "Decline",
}

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_PARAM_VALUE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+\Z")
_DIGITS = re.compile(r"[0-9]+\Z")
_VERSION = re.compile(r"SIP/([0-9]{1,4})\.([0-9]{1,4})\Z", re.IGNORECASE)
# absoluteURI: scheme ":" then printable ASCII except space, '"', '<' and '>' (RFC 3261 25.1).
_REQUEST_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[!#-;=?-~]+\Z")
_STATUS_LINE = re.compile(r"(SIP/[^ \t]*)[ \t]+([0-9]+)(?:[ \t](.*))?\Z", re.IGNORECASE | re.DOTALL)
_VIA_PROTOCOL = re.compile(r"SIP[ \t]*/[ \t]*([^ \t/]*)[ \t]*/[ \t]*([^ \t/;]+)[ \t]+(.*)\Z", re.IGNORECASE | re.DOTALL)
_HOST = re.compile(r"[A-Za-z0-9\-._]+\Z")
_LINE_END = re.compile(rb"\r?\n")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


class SipParseError(ValueError):
    """The one error a malformed SIP message raises.

    `status` is what a server should answer if the message was a request (400 Bad Request,
    505 Version Not Supported, 513 Message Too Large); a malformed response is dropped.
    `partial` is the message as far as it could be read (a `Request` only when the start
    line looked like a request), so a stateless error response can copy its headers; it is
    None when the framing itself could not be trusted.
    """

    def __init__(self, reason: str, *, status: int = 400, partial: Request | Response | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial


# ---------------------------------------------------------------------------------------------
# Headers


def header_key(name: str) -> str:
    """The comparison key of a header name: case-insensitive, compact forms expanded."""
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT:
        return COMPACT[lower].lower()
    return lower


def canonical_name(name: str) -> str:
    """How we write a header name: the RFC spelling when we know it, else as received."""
    return _CANONICAL.get(header_key(name), name)


class Headers:
    """An ordered multi-dict of header fields.

    Order matters in SIP (Via, Route, Record-Route are lists read top to bottom) and names
    are case-insensitive with compact forms, so neither a dict nor an email.Message fits.
    """

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def get(self, name: str, default: str | None = None) -> str | None:
        key = header_key(name)
        for n, v in self._items:
            if header_key(n) == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        key = header_key(name)
        return [v for n, v in self._items if header_key(n) == key]

    def set(self, name: str, value: str) -> None:
        """Replace every field of this name with one, kept where the first one was."""
        key = header_key(name)
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self._items:
            if header_key(n) != key:
                out.append((n, v))
            elif not placed:
                out.append((canonical_name(name), value))
                placed = True
        if not placed:
            out.append((canonical_name(name), value))
        self._items = out

    def remove(self, name: str) -> None:
        key = header_key(name)
        self._items = [(n, v) for n, v in self._items if header_key(n) != key]

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


# ---------------------------------------------------------------------------------------------
# Field values


def _scan_quoted(text: str, start: int) -> int:
    """Index just past the closing quote of the quoted-string opening at `start`."""
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    raise SipParseError(f"unterminated quoted string: {text[start:start + 40]!r}")


def _unquote(text: str) -> str:
    """The content of a quoted-string, with quoted-pairs resolved."""
    inner = text[1:-1]
    return re.sub(r"\\(.)", r"\1", inner, flags=re.DOTALL)


def split_header_list(value: str) -> list[str]:
    """Split a comma-separated header value (Via, Contact, Route) outside quotes and < >."""
    parts: list[str] = []
    start = 0
    depth = 0
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == '"':
            i = _scan_quoted(value, i)
            continue
        if ch == "<":
            depth += 1
        elif ch == ">" and depth:
            depth -= 1
        elif ch == "," and not depth:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return parts


def parse_params(text: str) -> dict[str, str | None]:
    """Parse `;name=value;flag` parameters (header params, not URI params).

    Empty parameters (`;;`) and a comma outside quotes (a second value in a single-valued
    field) are errors: RFC 4475 3.1.2.1 and 3.3.8 expect 400 for both.
    """
    params: dict[str, str | None] = {}
    text = text.strip()
    if not text:
        return params
    if text.startswith(","):
        raise SipParseError("comma outside quotes: more than one value where one is allowed")
    if not text.startswith(";"):
        raise SipParseError(f"unexpected text before parameters: {text[:40]!r}")
    pieces: list[str] = []
    start = 1
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            i = _scan_quoted(text, i)
            continue
        if ch == ",":
            raise SipParseError("comma outside quotes: more than one value where one is allowed")
        if ch == ";":
            pieces.append(text[start:i])
            start = i + 1
        i += 1
    pieces.append(text[start:])
    for piece in pieces:
        name, eq, raw = piece.partition("=")
        name = name.strip()
        if not name:
            raise SipParseError("empty parameter (extraneous ';')")
        if not _TOKEN.match(name):
            raise SipParseError(f"invalid parameter name {name[:40]!r}")
        if not eq:
            params[name.lower()] = None
            continue
        raw = raw.strip()
        if raw.startswith('"'):
            if _scan_quoted(raw, 0) != len(raw):
                raise SipParseError(f"text after quoted parameter value {name!r}")
            params[name.lower()] = _unquote(raw)
        elif raw and not any(c in raw for c in ' \t"'):
            params[name.lower()] = raw
        else:
            raise SipParseError(f"invalid value for parameter {name!r}")
    return params


def _render_params(params: dict[str, str | None]) -> str:
    out = []
    for name, value in params.items():
        if value is None:
            out.append(f";{name}")
        elif _PARAM_VALUE.match(value):
            out.append(f";{name}={value}")
        else:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f';{name}="{escaped}"')
    return "".join(out)


def _small_int(text: str, limit: int, what: str) -> int:
    """An ASCII decimal number no larger than `limit` (leading zeros allowed, RFC 4475 3.1.1.1)."""
    text = text.strip()
    if not _DIGITS.match(text):
        raise SipParseError(f"{what} is not a non-negative integer: {text[:40]!r}")
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(limit)) or int(digits) > limit:
        raise SipParseError(f"{what} {text[:40]} is larger than {limit}")
    return int(digits)


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2:
        raise SipParseError(f"CSeq must be 'number METHOD': {value[:60]!r}")
    number = _small_int(parts[0], MAX_CSEQ, "CSeq number")
    if not _TOKEN.match(parts[1]):
        raise SipParseError(f"CSeq method is not a token: {parts[1][:40]!r}")
    return CSeq(number, parts[1])


@dataclass(frozen=True)
class SipUri:
    """A SIP, SIPS or tel URI split into parts; other schemes keep only `scheme` and `opaque`.

    `user` stays escaped as received; `user_unescaped` is what to compare or show
    (RFC 4475 3.1.1.3: escapes are resolved for comparison).
    """

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None
    opaque: str = ""

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unquote(self.user, errors="replace")


def parse_uri(text: str) -> SipUri:
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    if not colon or not re.match(r"[A-Za-z][A-Za-z0-9+.\-]*\Z", scheme) or not rest:
        raise SipParseError(f"not an absolute URI: {text[:60]!r}")
    if any(c in rest for c in ' \t"<>'):
        raise SipParseError(f"URI contains space, quote or angle bracket: {text[:60]!r}")
    scheme = scheme.lower()
    if scheme == "tel":
        number, _, params = rest.partition(";")
        return SipUri(scheme, user=number, params=_uri_params(params), opaque=rest)
    if scheme not in ("sip", "sips"):
        return SipUri(scheme, opaque=rest)
    user = password = None
    if "@" in rest:
        userinfo, _, rest = rest.partition("@")
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
        if not user:
            raise SipParseError(f"empty user part in {text[:60]!r}")
    rest, q, headers = rest.partition("?")
    hostport, _, params = rest.partition(";")
    host, port = _host_port(hostport)
    return SipUri(scheme, user, password, host, port, _uri_params(params), headers if q else None)


def _uri_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for piece in text.split(";") if text else ():
        name, eq, value = piece.partition("=")
        if not name:
            raise SipParseError("empty URI parameter")
        params[name.lower()] = value if eq else None
    return params


def _host_port(text: str) -> tuple[str, int | None]:
    """Split `host[:port]`, IPv6 references in brackets; hostnames and IPv4 only otherwise."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference: {text[:60]!r}")
        host, rest = text[: end + 1], text[end + 1 :].strip()
        if rest and not rest.startswith(":"):
            raise SipParseError(f"text after IPv6 reference: {text[:60]!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_ = text.partition(":")
        host = host.strip()
        port_text = port_text_ if colon else None
        if not _HOST.match(host):
            raise SipParseError(f"invalid host {host[:60]!r}")
    port = None if port_text is None else _small_int(port_text, 65535, "port")
    return host, port


@dataclass
class NameAddr:
    """A From/To/Contact value: optional display name, URI, header parameters (tag, expires, q)."""

    display_name: str | None
    uri: str
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        name = ""
        if self.display_name:
            escaped = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
            name = f'"{escaped}" '
        return f"{name}<{self.uri}>{_render_params(self.params)}"


def parse_name_addr(value: str) -> NameAddr:
    """Parse `"Name" <uri>;params`, `Name <uri>;params` or `uri;params` (RFC 3261 20.10, 20.20).

    In the bare form everything after the first ';' is a header parameter, and a URI with
    '?' headers or ',' must be in < > (RFC 4475 3.1.2.13): we reject it rather than guess.
    """
    s = value.strip()
    if not s:
        raise SipParseError("empty name-addr")
    display: str | None = None
    if s.startswith('"'):
        end = _scan_quoted(s, 0)
        display = _unquote(s[:end])
        rest = s[end:].lstrip()
        if not rest.startswith("<"):
            raise SipParseError(f"quoted display name not followed by <uri>: {s[:60]!r}")
    elif "<" in s:
        lt = s.find("<")
        display = s[:lt].strip() or None
        if display is not None and '"' in display:
            raise SipParseError(f"stray quote in display name: {s[:60]!r}")
        rest = s[lt:]
    else:
        uri, _, params = s.partition(";")
        uri = uri.strip()
        if "?" in uri or "," in uri:
            raise SipParseError(f"URI with headers or commas must be enclosed in <>: {uri[:60]!r}")
        parse_uri(uri)
        return NameAddr(None, uri, parse_params(";" + params) if params else {})
    gt = rest.find(">")
    if gt < 0:
        raise SipParseError(f"missing '>' after URI: {s[:60]!r}")
    uri = rest[1:gt].strip()
    parse_uri(uri)
    return NameAddr(display, uri, parse_params(rest[gt + 1 :]))


def parse_contacts(value: str) -> list[NameAddr]:
    """All Contact values of one header field; `*` (REGISTER wildcard) gives `[NameAddr(None, "*")]`."""
    if value.strip() == "*":
        return [NameAddr(None, "*")]
    return [parse_name_addr(part) for part in split_header_list(value)]


@dataclass
class Via:
    """One Via entry (RFC 3261 20.42; received/rport from RFC 3581)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def has_rfc3261_branch(self) -> bool:
        """False for RFC 2543 peers and for a bare magic cookie (RFC 4475 3.2.1): match them otherwise."""
        b = self.branch
        return b is not None and b.startswith(BRANCH_COOKIE) and len(b) > len(BRANCH_COOKIE)

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def wants_rport(self) -> bool:
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value is not None and _DIGITS.match(value) and len(value) <= 5 else None

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{_render_params(self.params)}"


def parse_via(value: str) -> list[Via]:
    """Every Via entry of one header field (one field may carry several, comma-separated)."""
    vias = []
    for entry in split_header_list(value):
        if not entry:
            raise SipParseError("empty Via entry (extraneous ',')")
        m = _VIA_PROTOCOL.match(entry)
        if not m:
            raise SipParseError(f"Via is not 'SIP/2.0/transport host': {entry[:60]!r}")
        version, transport, rest = m.groups()
        if version != "2.0":
            raise SipParseError(f"Via names SIP version {version[:10]!r}")
        sent_by, semi, params = rest.partition(";")
        host, port = _host_port(sent_by)
        vias.append(Via(transport.upper(), host, port, parse_params(semi + params)))
    return vias


def response_target(via: Via, source: tuple[str, int]) -> tuple[str, int]:
    """Where a UDP response goes (RFC 3261 18.2.2, RFC 3581): to the packet's source, not a registrar.

    The host is `maddr` if given, else the source address (what `received` records); the
    port is the source port when the client asked for rport, else the sent-by port or 5060.
    pyVoIP sends every response to its registrar instead (PYVOIP.md item 1).
    """
    host = via.params.get("maddr") or source[0]
    port = source[1] if via.wants_rport else (via.port or 5060)
    return host, port


def stamp_via(value: str, source: tuple[str, int]) -> str:
    """The top Via field with `received` (if the sent-by host differs) and `rport` filled in."""
    entries = split_header_list(value)
    top = parse_via(entries[0])[0]
    params = dict(top.params)
    if top.host != source[0]:
        params["received"] = source[0]
    if top.wants_rport:
        params["rport"] = str(source[1])
    entries[0] = str(Via(top.transport, top.host, top.port, params))
    return ", ".join(entries)


# ---------------------------------------------------------------------------------------------
# Messages


class _MessageFields:
    """Typed access to the fields every request and response carries; parsed when asked."""

    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return (self.headers.get("Call-ID") or "").strip()

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self.headers.get("CSeq") or "")

    @property
    def from_addr(self) -> NameAddr:
        return parse_name_addr(self.headers.get("From") or "")

    @property
    def to_addr(self) -> NameAddr:
        return parse_name_addr(self.headers.get("To") or "")

    @property
    def vias(self) -> list[Via]:
        return [v for value in self.headers.get_all("Via") for v in parse_via(value)]

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return None if value is None else value.split(";", 1)[0].strip().lower()

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return None if value is None else _small_int(value, 255, "Max-Forwards")

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise with one Content-Length that matches the body, written last."""
        lines = [self.start_line()]
        lines += [f"{n}: {v}" for n, v in self.headers if header_key(n) != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


@dataclass
class Request(_MessageFields):
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    non_utf8_headers: tuple[str, ...] = ()
    """Header names whose bytes were not UTF-8 and were read as Latin-1 (worth a log line)."""
    extra_bytes: int = 0
    """Octets after Content-Length in the datagram, ignored (RFC 4475 3.1.1.8)."""

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    @property
    def parsed_uri(self) -> SipUri:
        return parse_uri(self.uri)


@dataclass
class Response(_MessageFields):
    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    non_utf8_headers: tuple[str, ...] = ()
    extra_bytes: int = 0

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"


def is_keepalive(data: bytes) -> bool:
    """True for the bare CRLFs phones send to keep NAT bindings open: not an error, just ignore."""
    return bool(data) and not data.strip(b"\r\n")


def parse_message(data: bytes) -> Request | Response:
    """Parse one UDP datagram into a Request or Response, or raise SipParseError.

    Over UDP a missing Content-Length means the body runs to the end of the datagram and
    octets after Content-Length are ignored (RFC 3261 18.3); a Content-Length beyond the
    datagram means the datagram was truncated (400, RFC 4475 3.1.2.2).
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit", status=513)
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty datagram")
    blank = _BLANK_LINE.search(data)
    head = data[: blank.start()] if blank else data.rstrip(b"\r\n")
    rest = data[blank.end() :] if blank else b""
    raw_lines = _LINE_END.split(head)

    start, start_utf8 = _decode(raw_lines[0])
    headers, non_utf8, line_error = _parse_header_lines(raw_lines[1:])
    if not start_utf8:
        non_utf8.insert(0, "(start line)")

    msg, start_error = _parse_start_line(start, headers)
    msg.non_utf8_headers = tuple(non_utf8)
    if start_error is not None:
        raise SipParseError(start_error[0], status=start_error[1], partial=msg)
    if line_error is not None:
        raise SipParseError(line_error, partial=msg)
    if blank is None:
        raise SipParseError("no blank line after the headers", partial=msg)
    _frame_body(msg, rest)
    _check_fields(msg)
    return msg


def _decode(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("latin-1"), False


def _parse_header_lines(raw_lines: list[bytes]) -> tuple[Headers, list[str], str | None]:
    """Unfold continuation lines (RFC 3261 7.3.1) and split `name: value` fields.

    A broken line is skipped and reported (the first one) rather than raised at once, so
    the error can carry the other headers and the client still gets its 400.
    """
    fields: list[list[str]] = []
    non_utf8: list[str] = []
    error: str | None = None
    for raw in raw_lines:
        line, ok = _decode(raw)
        if line[:1] in (" ", "\t"):
            if not fields:
                error = error or "continuation line before any header field"
                continue
            fields[-1][1] += " " + line.strip()
            if not ok:
                non_utf8.append(fields[-1][0])
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon:
            error = error or f"header line without a colon: {line[:40]!r}"
            continue
        if not _TOKEN.match(name):
            error = error or f"invalid header name {name[:40]!r}"
            continue
        fields.append([name, value.strip()])
        if not ok:
            non_utf8.append(canonical_name(name))
    return Headers((n, v.strip()) for n, v in fields), non_utf8, error


def _parse_start_line(line: str, headers: Headers) -> tuple[Request | Response, tuple[str, int] | None]:
    """Build the message shell; a start-line defect is returned, not raised, so headers survive."""
    if line[:4].upper() == "SIP/":
        m = _STATUS_LINE.match(line)
        if not m:
            raise SipParseError(f"malformed status line: {line[:60]!r}")
        version, code, reason = m.groups()
        if len(code) != 3 or not 100 <= int(code) <= 699:
            raise SipParseError(f"status code {code[:20]} is not three digits 100-699")
        resp = Response(int(code), (reason or "").strip(), headers)
        error = _version_error(version)
        return resp, error
    parts = line.split()
    method = parts[0] if parts and _TOKEN.match(parts[0]) else ""
    uri = parts[1] if len(parts) > 1 else ""
    req = Request(method, uri, headers)
    if len(parts) != 3:
        return req, (f"request line is not 'METHOD Request-URI SIP/2.0': {line[:80]!r}", 400)
    if not method:
        return req, (f"method is not a token: {parts[0][:40]!r}", 400)
    if not _REQUEST_URI.match(uri):
        return req, (f"Request-URI is not an absolute URI: {uri[:60]!r}", 400)
    return req, _version_error(parts[2])


def _version_error(version: str) -> tuple[str, int] | None:
    m = _VERSION.match(version)
    if not m:
        return (f"not a SIP version: {version[:20]!r}", 400)
    if (int(m.group(1)), int(m.group(2))) != (2, 0):
        return (f"unsupported SIP version {version[:20]}", 505)
    return None


def _frame_body(msg: Request | Response, rest: bytes) -> None:
    lengths = msg.headers.get_all("Content-Length")
    if len(lengths) > 1:
        raise SipParseError("more than one Content-Length", partial=msg)
    if not lengths:
        msg.body = rest
        return
    try:
        n = _small_int(lengths[0], MAX_MESSAGE_BYTES, "Content-Length")
    except SipParseError as e:
        raise SipParseError(e.reason, partial=msg) from None
    if n > len(rest):
        raise SipParseError(
            f"Content-Length {n} exceeds the {len(rest)} bytes after the headers (truncated)", partial=msg
        )
    msg.body = rest[:n]
    msg.extra_bytes = len(rest) - n


def _check_fields(msg: Request | Response) -> None:
    """The checks without which no response could be built or matched (RFC 3261 8.1.1, 8.2)."""
    missing = [h for h in MANDATORY if h not in msg.headers]
    if missing:
        raise SipParseError(f"missing mandatory header(s): {', '.join(missing)}", partial=msg)
    for name in SINGLE_VALUED:
        if len(msg.headers.get_all(name)) > 1:
            raise SipParseError(f"more than one {name} header", partial=msg)
    try:
        cseq = msg.cseq
        if isinstance(msg, Request) and cseq.method != msg.method:
            raise SipParseError(f"CSeq method {cseq.method!r} does not match request method {msg.method!r}")
        call_id = msg.call_id
        if not call_id or any(c.isspace() for c in call_id):
            raise SipParseError(f"invalid Call-ID {call_id[:60]!r}")
        _ = (msg.from_addr, msg.to_addr, msg.vias, msg.max_forwards)
    except SipParseError as e:
        raise SipParseError(e.reason, status=e.status, partial=msg) from None


# ---------------------------------------------------------------------------------------------
# Building


def new_tag() -> str:
    return secrets.token_hex(8)


def new_branch() -> str:
    """A fresh RFC 3261 branch: every new transaction (an ACK for a 2xx too) needs its own."""
    return BRANCH_COOKIE + secrets.token_hex(10)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


def build_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
    source: tuple[str, int] | None = None,
) -> Response:
    """A response that the client can match: Via, From, Call-ID, CSeq copied (RFC 3261 8.2.6.2).

    To gets `to_tag` (or a fresh one) unless it has a tag already or this is a 100; a
    dialog-creating response to INVITE copies Record-Route (12.1.1) so proxies stay in the
    path. With `source` (the datagram's address) the top Via gets received/rport. Works on
    the `partial` of a SipParseError too, copying whichever of those headers exist.
    """
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} is not 100-699")
    h = Headers()
    for i, via in enumerate(request.headers.get_all("Via")):
        if i == 0 and source is not None:
            try:
                via = stamp_via(via, source)
            except SipParseError:
                pass
        h.add("Via", via)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.headers.get(name)
        if value is None:
            continue
        if name == "To" and status > 100:
            value = _with_tag(value, to_tag)
        h.add(name, value)
    if request.method == "INVITE" and 100 < status < 300:
        for rr in request.headers.get_all("Record-Route"):
            h.add("Record-Route", rr)
    for name, value in headers:
        h.add(name, value)
    if body and content_type:
        h.set("Content-Type", content_type)
    return Response(status, reason if reason is not None else REASONS.get(status, ""), h, body)


def _with_tag(to_value: str, tag: str | None) -> str:
    try:
        if parse_name_addr(to_value).tag:
            return to_value
    except SipParseError:
        return to_value
    return f"{to_value};tag={tag or new_tag()}"


def build_request(
    method: str,
    uri: str,
    *,
    from_: str,
    to: str,
    call_id: str,
    cseq: int,
    via_host: str,
    via_port: int | None = None,
    transport: str = "UDP",
    branch: str | None = None,
    contact: str | None = None,
    max_forwards: int = 70,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    """A new request with its own branch (asking for rport, so NATed answers find us)."""
    if not _TOKEN.match(method):
        raise ValueError(f"method {method!r} is not a token")
    if not _REQUEST_URI.match(uri):
        raise ValueError(f"{uri!r} is not an absolute URI")
    h = Headers()
    sent_by = via_host if via_port is None else f"{via_host}:{via_port}"
    h.add("Via", f"SIP/2.0/{transport} {sent_by};branch={branch or new_branch()};rport")
    h.add("Max-Forwards", str(max_forwards))
    h.add("From", from_)
    h.add("To", to)
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} {method}")
    if contact is not None:
        h.add("Contact", contact)
    for name, value in headers:
        h.add(name, value)
    if body and content_type:
        h.set("Content-Type", content_type)
    return Request(method, uri, h, body)
