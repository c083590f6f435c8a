"""Staff accounts, their roles, passwords and API tokens.

Lives in cases/ because ivr/ (operators' SIP addresses), campaigns/ and api/ all need the
staff list and may all import cases. Plain functions taking a session; no HTTP here.

Passwords are argon2id hashes (argon2-cffi's defaults, rehashed on login when those
defaults grow). API tokens are random strings of which only the SHA-256 is stored: a
stolen database copy cannot be used to call the API.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass
from collections.abc import Mapping
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Boolean, ForeignKey, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from config.db import Base, UTCDateTime, utcnow
from config.errors import HotlineError

ROLES = ("operator", "supervisor", "unit_handler", "campaign", "admin")
"""operator: takes calls, reviews drafts, accepts cases. supervisor: leader on duty (dispatch,
audit, deadlines). unit_handler: belongs to one responsible unit and sees only its cases.
campaign: return-visit campaign staff. admin: users, calendar and settings."""

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
"""Argon2 hashes any length, but a megabyte "password" per login attempt is a cheap DoS."""
TOKEN_PREFIX = "hl_"


class UserError(HotlineError):
    """A user could not be created or changed as asked (bad name, duplicate, unknown user)."""


class UserExists(UserError):
    """The username is taken (the API answers 409, not 422)."""


class NoSuchUser(UserError):
    """No account has this username (the API answers 404)."""


class User(Base):
    __tablename__ = "staff_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(120), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20), index=True)
    unit: Mapped[str | None] = mapped_column(String(200))
    """The responsible unit of a unit_handler; null for every other role."""
    sip_uri: Mapped[str | None] = mapped_column(String(200))
    """An operator's phone or extension (sip:8001@pbx.local), where the IVR bridges calls."""
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class ApiToken(Base):
    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 (hex) of the token. Tokens carry 256 random bits, so a plain hash is enough:
    there is nothing to brute-force that a slow hash would protect."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class Staff:
    """What request handlers see of the logged-in user: a snapshot, free of the ORM session."""

    id: int
    username: str
    display_name: str
    role: str
    unit: str | None
    sip_uri: str | None

    @classmethod
    def of(cls, u: User) -> Staff:
        return cls(u.id, u.username, u.display_name, u.role, u.unit, u.sip_uri)


@cache
def hasher() -> PasswordHasher:
    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so that answer takes as long as a wrong password."""
    return hasher().hash(secrets.token_urlsafe(16))


def _secret(password: str) -> bytes:
    """UTF-8 bytes; a lone surrogate (valid in JSON strings) must not turn a login into a 500."""
    return password.encode("utf-8", "surrogatepass")


def normalise_username(name: str) -> str:
    """NFKC + lower case, so "Alice", "alice" and full-width "ａｌｉｃｅ" are one account."""
    return unicodedata.normalize("NFKC", name).strip().lower()


def check_password_quality(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"the password must have at most {MAX_PASSWORD} characters")


def create_user(
    session: Session,
    username: str,
    password: str,
    role: str,
    *,
    unit: str | None = None,
    sip_uri: str | None = None,
    display_name: str | None = None,
) -> User:
    name = normalise_username(username)
    if not USERNAME_RE.match(name):
        raise UserError(
            f"bad username {username!r}: 1-64 characters a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
        )
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if role == "unit_handler" and not (unit and unit.strip()):
        raise UserError("a unit_handler needs the responsible unit it belongs to (--unit)")
    if role != "unit_handler" and unit:
        raise UserError(f"only a unit_handler belongs to a unit, not a {role}")
    for label, value in (("display name", display_name), ("unit", unit), ("SIP URI", sip_uri)):
        if value is not None and any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
            raise UserError(f"the {label} holds control characters or invalid Unicode")
    check_password_quality(password)
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        raise UserExists(f"user {name!r} already exists")
    user = User(
        username=name,
        display_name=(display_name or name).strip()[:120],
        password_hash=hasher().hash(_secret(password)),
        role=role,
        unit=unit.strip() if unit else None,
        sip_uri=sip_uri or None,
        active=True,
    )
    session.add(user)
    session.flush()
    return user


def unit_code(units: Mapping[str, str], given: str) -> str:
    """A unit handler's unit as a [cases] units code (``units``: code → name), the value Case.unit
    holds; the unit's name is taken too."""
    if given in units:
        return given
    by_name = {name: code for code, name in units.items()}
    if given in by_name:
        return by_name[given]
    raise UserError(f"{given!r} is not a unit of [cases] units; codes: {', '.join(units)}")


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == normalise_username(username)))
    if user is None:
        raise NoSuchUser(f"no user {username!r}")
    return user


def list_users(session: Session, *, include_disabled: bool = True) -> list[User]:
    q = select(User).order_by(User.username)
    if not include_disabled:
        q = q.where(User.active.is_(True))
    return list(session.scalars(q))


def set_active(session: Session, username: str, active: bool, *, now: dt.datetime | None = None) -> User:
    """Disable (or re-enable) an account. Disabling also revokes its tokens, so enabling it
    again does not bring old tokens back to life; its web sessions stop at the next request."""
    user = get_user(session, username)
    user.active = active
    if not active:
        session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now or utcnow())
        )
    return user


def set_password(session: Session, username: str, password: str, *, now: dt.datetime | None = None) -> User:
    """Reset a user's password (an administrator's reset, or `hotline users password`). The user's
    API tokens are revoked as on disabling: a reset often follows a leak, and a token issued with
    the leaked password would outlive it. Web sessions end only at logout or expiry (the cookie
    holds the user id, not the password)."""
    check_password_quality(password)
    user = get_user(session, username)
    user.password_hash = hasher().hash(_secret(password))
    session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    return user


def disable_user(session: Session, username: str) -> User:
    return set_active(session, username, False)


def authenticate(session: Session, username: str, password: str, *, now: dt.datetime | None = None) -> User | None:
    """The active user with this password, else None.

    Unknown names, disabled accounts and wrong passwords cost one argon2 verification each,
    so response times do not tell which usernames exist. A hash made with weaker parameters
    than today's defaults is replaced while the clear password is at hand.
    """
    name = normalise_username(username)
    user = session.scalar(select(User).where(User.username == name)) if USERNAME_RE.match(name) else None
    if len(password) > MAX_PASSWORD:
        user, password = None, ""  # never stored (create_user refuses it); still spend the time
    try:
        hasher().verify(user.password_hash if user else _dummy_hash(), _secret(password))
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.active:
        return None
    if hasher().check_needs_rehash(user.password_hash):
        user.password_hash = hasher().hash(_secret(password))
    user.last_login_at = now or utcnow()
    return user


def load_active(session: Session, user_id: int) -> User | None:
    """The user a session cookie names, if it still exists and is active."""
    user = session.get(User, user_id)
    return user if user is not None and user.active else None


def _token_hash(token: str) -> str:
    return hashlib.sha256(_secret(token)).hexdigest()


def issue_token(session: Session, user: User, *, days: int, now: dt.datetime | None = None) -> tuple[str, ApiToken]:
    """A new bearer token for the user: the clear token (shown once) and its row."""
    if not user.active:
        raise UserError(f"user {user.username!r} is disabled")
    now = now or utcnow()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_hash=_token_hash(token), created_at=now, expires_at=now + dt.timedelta(days=days))
    session.add(row)
    session.flush()
    return token, row


def user_for_token(session: Session, token: str, *, now: dt.datetime | None = None) -> User | None:
    """The active owner of an unexpired, unrevoked token, else None."""
    now = now or utcnow()
    return session.scalar(
        select(User)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(
            ApiToken.token_hash == _token_hash(token),
            ApiToken.revoked_at.is_(None),
            ApiToken.expires_at > now,
            User.active.is_(True),
        )
    )


def revoke_token(session: Session, token: str, *, now: dt.datetime | None = None) -> bool:
    """Revoke one token; False when it was unknown or already revoked."""
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.token_hash == _token_hash(token), ApiToken.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    return bool(result.rowcount)
