"""Who is calling, and may they: sessions, bearer tokens, role checks, CSRF and login throttling.

Two ways in:
- **Bearer tokens** (`Authorization: Bearer hl_…`) for scripts and API clients. A request
  that sends one is judged by it alone: a bad token is a 401 even if a cookie is present.
- **The session cookie** set by the web login (aiohttp-session EncryptedCookieStorage:
  Fernet-encrypted and authenticated, HttpOnly, SameSite=Lax, Secure when configured). It
  holds the user id, so disabling a user stops their sessions at the next request. A
  copied cookie stays valid until it expires ([api] session_hours): logout clears the
  browser's copy, it cannot recall others.

Roles: `require(*roles)` wraps every handler (the route declarations in api/openapi.py do
it for you). **admin does not pass every check**: administrators manage accounts, the
calendar and settings, and reporters' personal data in cases is shown only to roles that
handle cases. A route an admin may use lists "admin"; ANY_STAFF lists every role.

CSRF: a request authenticated by the cookie that changes something (POST, PUT, PATCH,
DELETE) must carry the session's CSRF token, as the `csrf_token` form field or the
X-CSRF-Token header (pages put it in forms and in <meta name="csrf-token">). SameSite=Lax
already stops most cross-site posts; the token also covers old browsers and sibling
subdomains. Bearer requests need no token: browsers never add that header by themselves.

Failures: under /api/ and /open311/ a JSON 401 (with WWW-Authenticate: Bearer) or 403;
on pages a redirect to /login?next=… or a 403 page.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import functools
import hmac
import os
import secrets
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlencode

import aiohttp_session
from aiohttp import web
from aiohttp.web_exceptions import NotAppKeyWarning
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from sqlalchemy.exc import IntegrityError

from api.context import CTX
from api.errors import ApiError, wants_json
from cases import login_throttle
from cases.users import ROLES, Staff, authenticate, load_active, normalise_username, user_for_token
from config.db import transaction, utcnow
from config.logs import get_logger
from config.settings import ApiSettings, ConfigError

log = get_logger("api.auth")

ANY_STAFF: tuple[str, ...] = ROLES
SESSION_COOKIE = "hotline_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
KEY_FILE = "session.key"

USER = web.RequestKey("user", Staff)
"""The authenticated user, set by require() before the handler runs."""
AUTH_VIA = web.RequestKey("auth_via", str)
""""token" or "session": how USER was authenticated."""
_BEARER = web.RequestKey("bearer_token", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- the session cookie ---------------------------------------------------------------

def _decode_key(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text.strip(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def session_key(api: ApiSettings, storage_root: Path) -> bytes:
    """The cookie key from [api] session_secret (the key itself, or a file holding it).

    Unset, a key is generated once into <storage root>/session.key (mode 0600) and reused,
    so a restart does not log everybody out. The storage root is chosen because it is the
    one directory a centre already keeps and backs up; several API nodes must share a key,
    so they either share that root or set session_secret.
    """
    if api.session_secret is not None:
        key = _decode_key(api.session_secret)
        if key is not None:
            return key
        path = Path(api.session_secret)
        if not path.is_file():
            raise ConfigError(
                "[api] session_secret is neither 32 bytes of url-safe base64 nor the path of a file holding them"
            )
    else:
        path = storage_root / KEY_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first; use theirs
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(base64.urlsafe_b64encode(os.urandom(32)).decode() + "\n")
                log.info("generated the session cookie key", path=str(path))
    try:
        key = _decode_key(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the session key {path}: {e}") from None
    if key is None:
        raise ConfigError(f"{path} does not hold 32 bytes of url-safe base64 (the session cookie key)")
    return key


def setup_sessions(app: web.Application, api: ApiSettings, storage_root: Path) -> None:
    # aiohttp-session 2.12 keys the request with plain strings, which aiohttp 3.14 warns about
    # on every first use; the library works, the warning only fills the service log.
    warnings.filterwarnings("ignore", category=NotAppKeyWarning, module="aiohttp_session")
    storage = EncryptedCookieStorage(
        session_key(api, storage_root),
        cookie_name=SESSION_COOKIE,
        max_age=int(api.session_hours * 3600),
        httponly=True,
        samesite="Lax",
        secure=api.secure_cookies,
    )
    aiohttp_session.setup(app, storage)


async def csrf_token(request: web.Request) -> str:
    """The session's CSRF token, created on first use (pages put it in every form)."""
    session = await aiohttp_session.get_session(request)
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


async def csrf_ok(request: web.Request) -> bool:
    session = await aiohttp_session.get_session(request)
    expected = session.get("csrf")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    return isinstance(expected, str) and sent is not None and hmac.compare_digest(expected.encode(), sent.encode())


async def start_session(request: web.Request, user: Staff) -> None:
    """A fresh session for a login (a new CSRF token too: nothing from before the login carries over)."""
    session = await aiohttp_session.new_session(request)
    session["uid"] = user.id
    session["csrf"] = secrets.token_urlsafe(32)


async def end_session(request: web.Request) -> None:
    session = await aiohttp_session.get_session(request)
    session.invalidate()


# --- who is calling -------------------------------------------------------------------

async def identify(request: web.Request) -> tuple[Staff | None, Literal["token", "session"]]:
    """The user behind this request, by bearer token if one is sent, else by session cookie.

    Raises a 401 ApiError for a malformed Authorization header or a token that is unknown,
    expired, revoked or belongs to a disabled user.
    """
    ctx = request.app[CTX]
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthenticated("the Authorization header must be 'Bearer <token>'")

        def by_token() -> Staff | None:
            with ctx.sessions() as s:
                user = user_for_token(s, token)
                return Staff.of(user) if user else None

        user = await asyncio.to_thread(by_token)
        if user is None:
            raise _unauthenticated("the token is unknown, expired or revoked")
        request[_BEARER] = token
        return user, "token"
    session = await aiohttp_session.get_session(request)
    uid = session.get("uid")
    if not isinstance(uid, int):
        return None, "session"

    def by_id() -> Staff | None:
        with ctx.sessions() as s:
            user = load_active(s, uid)
            return Staff.of(user) if user else None

    return await asyncio.to_thread(by_id), "session"


def bearer_token(request: web.Request) -> str | None:
    """The token this request was authenticated with (None for a cookie session)."""
    return request.get(_BEARER)


def _unauthenticated(message: str) -> ApiError:
    return ApiError(401, "unauthenticated", message, headers={"WWW-Authenticate": 'Bearer realm="hotline"'})


def login_redirect(request: web.Request) -> web.Response:
    target = "/login?" + urlencode({"next": request.path_qs})
    return web.Response(status=303, headers={"Location": target})


def require(*roles: str) -> Callable[[Handler], Handler]:
    """Wrap a handler so it runs only for an active user holding one of these roles.

    The handler finds the user in request[USER]. See the module docstring for the rules.
    """
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"require() needs roles from {ROLES}, got {roles!r}")

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            api = wants_json(request)
            if api:
                user, via = await identify(request)
            else:
                try:
                    user, via = await identify(request)
                except ApiError:
                    user, via = None, "token"
            if user is None:
                if api:
                    raise _unauthenticated("log in or send a bearer token")
                return login_redirect(request)
            if user.role not in roles:
                if api:
                    raise ApiError(403, "forbidden", f"a {user.role} may not do this", {"roles": list(roles)})
                from api.pages import render_error

                return await render_error(request, 403, "error.forbidden")
            if via == "session" and request.method not in SAFE_METHODS and not await csrf_ok(request):
                if api:
                    raise ApiError(403, "csrf_failed", f"send the session's CSRF token in the {CSRF_HEADER} header")
                from api.pages import render_error

                return await render_error(request, 403, "error.csrf")
            request[USER] = user
            request[AUTH_VIA] = via
            return await handler(request)

        checked.roles = roles  # type: ignore[attr-defined]
        return checked

    return wrap


# --- logging in -------------------------------------------------------------------------

@dataclass(frozen=True)
class LoginResult:
    user: Staff | None
    retry_after: float = 0.0
    """Seconds to wait when the username or address is locked (user is None then)."""


async def login(request: web.Request, username: str, password: str) -> LoginResult:
    """Check a password with the throttle around it (see cases/login_throttle.py)."""
    ctx = request.app[CTX]
    api = ctx.settings.api
    user_key = login_throttle.user_key(normalise_username(username))
    addr_key = login_throttle.address_key(request.remote)
    policies = {
        user_key: login_throttle.Policy(api.login_failures_per_user, api.login_lock_seconds, api.login_lock_max_seconds),
        addr_key: login_throttle.Policy(api.login_failures_per_address, api.login_lock_seconds, api.login_lock_max_seconds),
    }

    def attempt() -> LoginResult:
        now = utcnow()
        with transaction(ctx.sessions) as s:
            wait = login_throttle.retry_after(s, [user_key, addr_key], now)
            if wait > 0:
                return LoginResult(None, wait)
            user = authenticate(s, username, password, now=now)
            if user is not None:
                login_throttle.clear(s, user_key)
                return LoginResult(Staff.of(user))
        for key, policy in policies.items():
            _count_failure(ctx.sessions, key, policy, now)
        return LoginResult(None)

    result = await asyncio.to_thread(attempt)
    if result.user is None:
        shown = username[:64] if username[:64].isprintable() else ascii(username[:64])  # no forged log lines
        log.info("login refused", username=shown, address=request.remote, locked=result.retry_after > 0)
    else:
        log.info("login", username=result.user.username, address=request.remote)
    return result


def _count_failure(sessions, key: str, policy: login_throttle.Policy, now: dt.datetime) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):  # two first failures at once race to insert the row: the loser retries
        try:
            with transaction(sessions) as s:
                login_throttle.record_failure(s, key, policy, now)
            return
        except IntegrityError:
            continue
