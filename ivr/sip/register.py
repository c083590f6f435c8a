"""Register mode: keep one REGISTER binding alive at the centre's PBX or SIP provider (RFC 3261 section 10).

Why our own client and not pyVoIP's: pyVoIP's `start()` blocks up to 30 s on a dead
registrar and its `stop()` blocks as long, it answers only 401 (no 407 proxy auth) and its
digest ignores `qop`, so a registrar that offers qop=auth (RFC 2617 3.2.2, RFC 7616 3.4: the
client MUST then use it) rejects it (PYVOIP.md item 2). Here:

- `Registration.start()` only spawns the loop, so the service starts listening whatever the
  registrar does; `state` (unregistered / registering / registered / failed) is for health.
- Digest (RFC 2617, RFC 7616 algorithms MD5, MD5-sess, SHA-256, SHA-256-sess) with qop=auth
  (cnonce, nc) when offered, no qop when not; 401 -> Authorization, 407 -> Proxy-Authorization.
  The last challenge is reused on refreshes (nc counts up) and a fresh challenge is answered.
- A challenge that comes back after we answered a fresh challenge of our own (and is not
  `stale=true`) means the credentials are wrong: logged as an error naming the username and
  registrar, then retried only every `retry_max` (5 min by default). A wrong password cannot
  fix itself, and hammering a PBX gets an address banned (fail2ban on Asterisk does exactly
  that), so it does not go through the short end of the backoff.
- The binding is refreshed at `refresh_fraction` (85 %) of the granted expiry (the 200's
  Contact `expires` for our Contact, else its Expires header), which also re-creates the
  binding after a registrar restart lost it. Timeouts, 5xx and other refusals retry with a
  doubling backoff from `retry_min` (5 s) to `retry_max` (5 min); Retry-After is honoured
  within that cap. 423 Interval Too Brief is answered at once with its Min-Expires.
- `state` says how the last attempt went: "failed" while retrying even if an older binding has
  not expired yet at the registrar (`status().expires_in` tells that part).
- `stop()` de-registers (Expires: 0 for our Contact only, not `*`, which would also remove
  other devices of the same account) and gives up after `deregister_timeout` (2 s).

The one Call-ID and the rising CSeq across all REGISTERs of a run follow RFC 3261 10.2.4, so
the registrar sees refreshes of one binding, not new registrations. Log lines are the plain
sentences operators grep for: "registered", "re-registering", "registration failed: ...".
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from config.errors import HotlineError
from config.logs import get_logger
from config.settings import SipSettings
from ivr.sip.message import (
    Request,
    Response,
    SipParseError,
    build_request,
    new_call_id,
    new_tag,
    parse_contacts,
    parse_uri,
    split_header_list,
)
from ivr.sip.transport import is_ip_literal

__all__ = [
    "DigestChallenge",
    "RegisterTiming",
    "Registration",
    "RegistrationState",
    "authorization_value",
    "digest_response",
    "parse_challenges",
    "parse_registrar",
]

RegistrationState = Literal["unregistered", "registering", "registered", "failed"]

USER_AGENT = "hotline-12389"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"

_HASHES: dict[str, Callable[[bytes], "hashlib._Hash"]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}
"""RFC 7616 algorithms we answer (each also in its -sess form). SHA-512-256 is left out: no SIP peer here uses it."""
_PREFERENCE = ("SHA-256", "MD5")
"""When a registrar offers several challenges, the strongest we can answer wins (RFC 8760 2.4)."""


class RegistrationConfigError(HotlineError):
    """Register mode is configured without what it needs (registrar, username) or with a bad registrar."""


@dataclass(frozen=True)
class RegisterTiming:
    """Intervals of the registration loop in seconds; injectable so tests run in seconds. Defaults are for production."""

    retry_min: float = 5.0
    """First retry after a failure; doubles on each further failure."""
    retry_max: float = 300.0
    """Cap of the retry backoff, and the retry interval after wrong credentials."""
    refresh_fraction: float = 0.85
    """Re-register when this share of the granted expiry has passed (the rest absorbs a lost datagram or two)."""
    deregister_timeout: float = 2.0
    """How long `stop()` waits for the de-REGISTER (pyVoIP blocks 30 s here)."""


# ------------------------------------------------------------------------------------------
# Digest (RFC 2617, RFC 7616)


@dataclass(frozen=True)
class DigestChallenge:
    """One `Digest` challenge of a WWW-Authenticate (401) or Proxy-Authenticate (407) header."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    """qop options offered, lower-case; empty for an RFC 2069-style challenge."""
    opaque: str | None = None
    stale: bool = False

    @property
    def supported(self) -> bool:
        return self.algorithm.upper().removesuffix("-SESS") in _HASHES and (not self.qop or bool({"auth", "auth-int"} & set(self.qop)))


def _auth_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for piece in split_header_list(text):
        name, eq, value = piece.partition("=")
        if not eq:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        params[name.strip().lower()] = value
    return params


def parse_challenges(values: list[str]) -> list[DigestChallenge]:
    """The Digest challenges in these header values (other schemes and unreadable ones are skipped)."""
    found: list[DigestChallenge] = []
    for value in values:
        # One header may carry several challenges: "Digest a=1, b=2, Digest a=3" -> split at each scheme token.
        chunks: list[list[str]] = []
        for piece in split_header_list(value):
            head = piece.split(None, 1)
            if head and "=" not in head[0]:
                chunks.append([head[0], head[1] if len(head) > 1 else ""])
            elif chunks:
                chunks[-1].append(piece)
        for scheme, *params in chunks:
            if scheme.lower() != "digest":
                continue
            p = _auth_params(", ".join(x for x in params if x))
            if "nonce" not in p or "realm" not in p:
                continue
            qop = tuple(q.strip().lower() for q in p.get("qop", "").split(",") if q.strip())
            found.append(DigestChallenge(
                realm=p["realm"], nonce=p["nonce"], algorithm=p.get("algorithm", "MD5"), qop=qop,
                opaque=p.get("opaque"), stale=p.get("stale", "").lower() == "true",
            ))
    return found


def best_challenge(challenges: list[DigestChallenge]) -> DigestChallenge | None:
    usable = [c for c in challenges if c.supported]
    if not usable:
        return None
    return min(usable, key=lambda c: _PREFERENCE.index(c.algorithm.upper().removesuffix("-SESS")))


def digest_response(
    *,
    username: str,
    password: str,
    realm: str,
    nonce: str,
    method: str,
    uri: str,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The `response` value (RFC 2617 3.2.2.1, RFC 7616 3.4.1): KD(H(A1), nonce[:nc:cnonce:qop]:H(A2))."""
    name = algorithm.upper()
    base = name.removesuffix("-SESS")
    if base not in _HASHES:
        raise ValueError(f"digest algorithm {algorithm!r} is not supported")
    hash_fn = _HASHES[base]

    def h(text: str) -> str:
        return hash_fn(text.encode("utf-8")).hexdigest()

    ha1 = h(f"{username}:{realm}:{password}")
    if name.endswith("-SESS"):
        if cnonce is None:
            raise ValueError("a -sess algorithm needs a cnonce")
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + hash_fn(body).hexdigest()
    ha2 = h(a2)
    if qop:
        if nc is None or cnonce is None:
            raise ValueError("qop needs nc and cnonce")
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return h(f"{ha1}:{nonce}:{ha2}")


def authorization_value(
    challenge: DigestChallenge, *, username: str, password: str, method: str, uri: str, nc: int,
    cnonce: str | None = None,
) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge` (qop=auth preferred when offered)."""
    qop = None
    if challenge.qop:
        qop = "auth" if "auth" in challenge.qop else "auth-int"
    needs_cnonce = qop is not None or challenge.algorithm.upper().endswith("-SESS")
    cnonce = (cnonce or secrets.token_hex(8)) if needs_cnonce else None
    nc_text = f"{nc:08x}"
    response = digest_response(
        username=username, password=password, realm=challenge.realm, nonce=challenge.nonce, method=method,
        uri=uri, algorithm=challenge.algorithm, qop=qop, nc=nc_text if qop else None, cnonce=cnonce,
    )
    parts = [
        f'username="{_quote(username)}"', f'realm="{_quote(challenge.realm)}"', f'nonce="{_quote(challenge.nonce)}"',
        f'uri="{uri}"', f'response="{response}"', f"algorithm={challenge.algorithm}",
    ]
    if cnonce is not None:
        parts.append(f'cnonce="{cnonce}"')
    if challenge.opaque is not None:
        parts.append(f'opaque="{_quote(challenge.opaque)}"')
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc_text}"]
    return "Digest " + ", ".join(parts)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# ------------------------------------------------------------------------------------------
# The registration loop


def parse_registrar(value: str | None) -> tuple[str, int | None]:
    """`[sip] registrar` as (host, port or None): "pbx.example", "10.0.0.5:5060", "[2001:db8::1]:5060", "sip:..." too."""
    text = (value or "").strip()
    if not text.lower().startswith(("sip:", "sips:")):
        text = "sip:" + text
    try:
        uri = parse_uri(text)
    except SipParseError as e:
        raise RegistrationConfigError(f"[sip] registrar {value!r} is not host[:port]: {e.reason}") from None
    if uri.user is not None or not uri.host:
        raise RegistrationConfigError(f"[sip] registrar {value!r} is not host[:port]")
    return uri.host.strip("[]"), uri.port


def check_register_settings(settings: SipSettings) -> tuple[str, int | None]:
    """Refuse register mode without the keys it needs, naming them (at service start, not at the first REGISTER)."""
    missing = [k for k in ("registrar", "username") if not (getattr(settings, k) or "").strip()]
    if missing:
        raise RegistrationConfigError(
            '[sip] mode = "register" needs ' + " and ".join(f"[sip] {k}" for k in missing)
            + ' (the PBX address as host[:port] and the account to register); or use mode = "trunk"'
        )
    return parse_registrar(settings.registrar)


class RegisterHost(Protocol):
    """What the registration needs from the UA (SipServer): its address and its client transactions."""

    @property
    def port(self) -> int: ...

    async def send_request(self, request: Request, next_hop: str) -> Response | None: ...


class _Failed(Exception):
    """One attempt failed; `reason` goes into "registration failed: ..."."""

    def __init__(self, reason: str, *, auth: bool = False, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.auth = auth
        self.retry_after = retry_after


@dataclass
class _Auth:
    challenge: DigestChallenge
    nc: int = 0


@dataclass
class RegistrationStatus:
    """A snapshot for health endpoints."""

    state: RegistrationState
    registrar: str
    username: str
    expires_in: float | None
    last_error: str | None
    failures: int = 0
    addresses: list[str] = field(default_factory=list)
    failing_for: float | None = None
    """Seconds since the first of the current run of failed attempts; None while the last one succeeded."""


class Registration:
    """Keeps our Contact registered at `[sip] registrar` for as long as the UA runs (see the module docstring)."""

    def __init__(self, settings: SipSettings, host: RegisterHost, timing: RegisterTiming | None = None) -> None:
        self.host_name, self.registrar_port = check_register_settings(settings)
        self.settings = settings
        self.timing = timing or RegisterTiming()
        self.username: str = settings.username or ""
        self.password: str | None = settings.password
        self.expires: int = settings.register_expires
        self._host = host
        hostport = f"[{self.host_name}]" if ":" in self.host_name else self.host_name
        self.registrar = hostport + (f":{self.registrar_port}" if self.registrar_port else "")
        self.request_uri = f"sip:{self.registrar}"
        self.aor = f"sip:{self.username}@{hostport}"
        try:
            if parse_uri(self.aor).user != self.username:
                raise SipParseError("user part changed")
        except SipParseError:
            raise RegistrationConfigError(f"[sip] username {self.username!r} cannot be the user part of a SIP URI") from None
        self.call_id = new_call_id(settings.public_host)
        self._from_tag = new_tag()
        self._cseq = 0
        self._auth: dict[str, _Auth] = {}
        self.state: RegistrationState = "unregistered"
        self.addresses: set[str] = {self.host_name} if is_ip_literal(self.host_name) else set()
        """The registrar's IP addresses: INVITEs from these are the PBX's (SipServer trusts them)."""
        self.granted: int | None = None
        self.registered_until: float | None = None
        self.last_error: str | None = None
        self.failures = 0
        self._failing_since: float | None = None
        self.registrations = 0
        """Successful REGISTERs (first and refreshes), for tests and health."""
        self.retry_delays: list[float] = []
        """Every retry delay chosen after a failure, in order (the backoff, observable without a clock)."""
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._log = get_logger(__name__).bind(registrar=self.registrar, username=self.username)

    # public ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Begin registering in the background: never blocks the UA's start on the registrar."""
        if self._task is None:
            self._set_state("registering")
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop refreshing and de-register (Expires: 0) if a binding may exist, waiting at most `deregister_timeout`."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.registered_until is not None and self.registered_until > time.monotonic():
            try:
                await asyncio.wait_for(self._register(0), self.timing.deregister_timeout)
                self._log.info("unregistered")
            except _Failed as e:
                self._log.warning(f"de-registration failed: {e.reason}")
            except TimeoutError:
                self._log.warning("de-registration failed: no answer within "
                                  f"{self.timing.deregister_timeout:g} s; the binding expires by itself")
        self.registered_until = None
        self._set_state("unregistered")

    def status(self) -> RegistrationStatus:
        remaining = None
        if self.registered_until is not None:
            remaining = max(0.0, self.registered_until - time.monotonic())
        failing_for = None if self._failing_since is None else time.monotonic() - self._failing_since
        return RegistrationStatus(self.state, self.registrar, self.username, remaining, self.last_error,
                                  self.failures, sorted(self.addresses), failing_for)

    def is_registrar(self, address: str) -> bool:
        """True if `address` is one of the registrar's addresses (the PBX that sends our calls)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip == ipaddress.ip_address(a) for a in self.addresses)

    async def wait_for(self, predicate: Callable[[Registration], bool]) -> None:
        """Wait until `predicate(self)` holds (checked at each state change or outcome); for tests and startup probes."""
        while not predicate(self):
            self._changed.clear()
            await self._changed.wait()

    # loop ------------------------------------------------------------------------------------

    def _set_state(self, state: RegistrationState) -> None:
        self.state = state
        self._changed.set()

    async def _run(self) -> None:
        backoff = self.timing.retry_min
        while True:
            try:
                granted = await self._register(self.expires)
                if granted <= 0:
                    raise _Failed(f"{self.registrar} answered 2xx but granted no binding (expires {granted})")
            except Exception as exc:  # noqa: BLE001 - one bad answer must not end registering for good
                e = exc if isinstance(exc, _Failed) else _Failed(f"internal error: {exc!r}")
                if not isinstance(exc, _Failed):
                    self._log.exception("registration attempt crashed")
                self.failures += 1
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                self.last_error = e.reason
                if e.auth:
                    delay = self.timing.retry_max
                    self._log.error(f"registration failed: {e.reason}", retry_in=delay)
                else:
                    delay = backoff
                    if e.retry_after is not None:
                        delay = max(delay, e.retry_after)
                    delay = min(delay, self.timing.retry_max)
                    backoff = min(backoff * 2, self.timing.retry_max)
                    self._log.warning(f"registration failed: {e.reason}", retry_in=delay)
                self.retry_delays.append(delay)
                self._set_state("failed")
                await asyncio.sleep(delay)
                self._log.info("re-registering", reason="retry")
                continue
            backoff = self.timing.retry_min
            self.failures = 0
            self._failing_since = None
            self.last_error = None
            self.registrations += 1
            self.granted = granted
            self.registered_until = time.monotonic() + granted
            refresh = max(granted * self.timing.refresh_fraction, 0.0)
            self._log.info("registered", expires=granted, refresh_in=round(refresh, 3), contact=self._contact())
            self._set_state("registered")
            await asyncio.sleep(refresh)
            self._log.info("re-registering", reason="refresh", expires_in=round(granted - refresh, 3))

    # one REGISTER exchange -------------------------------------------------------------------

    def _contact(self) -> str:
        host = self.settings.public_host
        host = f"[{host}]" if ":" in host else host
        return f"<sip:{self.username}@{host}:{self._host.port}>"

    async def _resolve(self) -> str:
        """The registrar's address to send to; all its addresses are remembered as trusted."""
        if is_ip_literal(self.host_name):
            return self.host_name
        port = self.registrar_port or 5060
        # Only addresses our socket can reach: "localhost" gives ::1 first on many hosts, useless to an IPv4 socket.
        family = socket.AF_INET6 if ":" in self.settings.bind_host else socket.AF_INET
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(self.host_name, port, family=family, type=socket.SOCK_DGRAM),
                timeout=5,
            )
        except (OSError, TimeoutError) as e:
            raise _Failed(f"cannot resolve registrar host {self.host_name!r}: {e or 'timeout'}") from None
        found = [str(info[4][0]) for info in infos]
        self.addresses.update(found)
        return found[0]

    def _request(self, expires: int) -> Request:
        self._cseq += 1
        via_host = self.settings.public_host
        headers: list[tuple[str, str]] = [
            ("Expires", str(expires)), ("Allow", ALLOW), ("User-Agent", USER_AGENT),
        ]
        for header, auth in self._auth.items():
            if header == "Authorization" and self.password is None:
                continue
            auth.nc += 1
            headers.append((header, authorization_value(
                auth.challenge, username=self.username, password=self.password or "", method="REGISTER",
                uri=self.request_uri, nc=auth.nc,
            )))
        return build_request(
            "REGISTER", self.request_uri, from_=f"<{self.aor}>;tag={self._from_tag}", to=f"<{self.aor}>",
            call_id=self.call_id, cseq=self._cseq, via_host=via_host, via_port=self._host.port,
            contact=self._contact(), headers=headers,
        )

    async def _register(self, expires: int) -> int:
        """One registration (or de-registration with 0): REGISTER, answering challenges; the granted expiry."""
        address = await self._resolve()
        port = self.registrar_port or 5060
        next_hop = f"sip:[{address}]:{port}" if ":" in address else f"sip:{address}:{port}"
        answered_fresh: set[str] = set()
        interval_retried = False
        for _ in range(6):
            response = await self._host.send_request(self._request(expires), next_hop)
            if response is None:
                raise _Failed(f"no response from {self.registrar} (timeout)")
            if 200 <= response.status < 300:
                return self._granted(response, expires)
            if response.status in (401, 407):
                header = "Authorization" if response.status == 401 else "Proxy-Authorization"
                asked = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
                challenge = best_challenge(parse_challenges(response.headers.get_all(asked)))
                if challenge is None:
                    raise _Failed(f"{response.status} {response.reason} with no Digest challenge we can answer "
                                  f"({(response.headers.get(asked) or 'none')[:120]})", auth=True)
                if self.password is None:
                    raise _Failed(f"{self.registrar} asks for a password (digest, realm {challenge.realm!r}) "
                                  f"but [sip] password is not set", auth=True)
                if header in answered_fresh and not challenge.stale:
                    raise _Failed(
                        f"wrong username or password: {self.registrar} refused user {self.username!r} "
                        f"({response.status} {response.reason} after our credentials, realm {challenge.realm!r})",
                        auth=True,
                    )
                self._auth[header] = _Auth(challenge)
                answered_fresh.add(header)
                continue
            if response.status == 423 and not interval_retried:
                minimum = _int_header(response, "Min-Expires")
                if minimum is not None and minimum > expires:
                    self._log.info("registrar wants a longer expiry", requested=expires, min_expires=minimum)
                    expires = self.expires = minimum
                    interval_retried = True
                    continue
            if response.status in (403, 404):
                raise _Failed(f"{response.status} {response.reason} from {self.registrar} for user "
                              f"{self.username!r} (wrong password, or the account may not register from here)",
                              auth=True)
            raise _Failed(f"{response.status} {response.reason} from {self.registrar}",
                          retry_after=_int_header(response, "Retry-After"))
        raise _Failed(f"{self.registrar} keeps challenging (gave up after 6 REGISTERs)")

    def _granted(self, response: Response, requested: int) -> int:
        """Our Contact's `expires` in the 200, else its Expires header, else what we asked (RFC 3261 10.2.4)."""
        ours = _contact_key(self._contact())
        for value in response.headers.get_all("Contact"):
            try:
                contacts = parse_contacts(value)
            except SipParseError:
                continue
            for contact in contacts:
                if contact.uri != "*" and _contact_key(f"<{contact.uri}>") == ours:
                    raw = contact.params.get("expires")
                    if raw is not None and raw.strip().isdigit():
                        return int(raw)
        header = _int_header(response, "Expires")
        return header if header is not None else requested


def _contact_key(value: str) -> tuple[str | None, str, int | None]:
    uri = parse_uri(value.strip().strip("<>"))
    return (uri.user, uri.host.lower().strip("[]"), uri.port)


def _int_header(response: Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    head = value.split(";", 1)[0].split("(", 1)[0].strip()
    return int(head) if head.isdigit() else None

