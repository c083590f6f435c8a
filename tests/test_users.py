"""Staff accounts, passwords, tokens and the login throttle, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from cases import login_throttle
from cases.login_throttle import LoginThrottle, Policy
from cases.users import (
    ApiToken,
    User,
    UserError,
    authenticate,
    create_user,
    disable_user,
    issue_token,
    list_users,
    revoke_token,
    set_active,
    user_for_token,
)
from config.db import transaction, utcnow

PW = "correct horse battery"


def test_create_and_authenticate(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        u = create_user(s, "  Alice ", PW, "operator", sip_uri="sip:8001@pbx.local", display_name="王丽")
        assert u.username == "alice" and u.password_hash.startswith("$argon2id$") and PW not in u.password_hash
    with transaction(sessions) as s:
        assert authenticate(s, "ALICE", "wrong password!") is None
        assert authenticate(s, "nobody", PW) is None
        ok = authenticate(s, "alice", PW)
        assert ok is not None and ok.display_name == "王丽" and ok.last_login_at is not None
        assert authenticate(s, "alice", PW + "x" * 2000) is None  # over-long: refused, not truncated
        assert authenticate(s, "alice", "\ud800") is None  # a lone surrogate from JSON is just wrong
        assert authenticate(s, "<script>", PW) is None
    with transaction(sessions) as s:
        disable_user(s, "alice")
    with transaction(sessions) as s:
        assert authenticate(s, "alice", PW) is None
        assert [u.active for u in list_users(s)] == [False]


@pytest.mark.parametrize(
    ("name", "role", "unit", "password", "why"),
    [
        ("<script>alert(1)</script>", "operator", None, PW, "bad username"),
        ("", "operator", None, PW, "bad username"),
        ("a" * 65, "operator", None, PW, "bad username"),
        ("bob", "root", None, PW, "unknown role"),
        ("bob", "unit_handler", None, PW, "needs the responsible unit"),
        ("bob", "unit_handler", "  ", PW, "needs the responsible unit"),
        ("bob", "operator", "城关派出所", PW, "only a unit_handler"),
        ("bob", "operator", None, "short", "at least 10"),
    ],
)
def test_create_refuses(sessions, name, role, unit, password, why) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match=why), transaction(sessions) as s:
        create_user(s, name, password, role, unit=unit)


def test_duplicate_and_control_characters(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        create_user(s, "carol", PW, "unit_handler", unit="城关派出所")
    with pytest.raises(UserError, match="already exists"), transaction(sessions) as s:
        create_user(s, "CAROL", PW, "operator")
    with pytest.raises(UserError, match="control characters"), transaction(sessions) as s:
        create_user(s, "dave", PW, "operator", display_name="a\x00b")
    with sessions() as s:
        assert [u.username for u in list_users(s)] == ["carol"]


def test_weak_hash_is_upgraded_on_login(sessions) -> None:  # type: ignore[no-untyped-def]
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    with transaction(sessions) as s:
        u = create_user(s, "erin", PW, "supervisor")
        u.password_hash = weak.hash(PW)
    with transaction(sessions) as s:
        assert authenticate(s, "erin", PW) is not None
    with sessions() as s:
        new = s.scalar(select(User.password_hash).where(User.username == "erin"))
    assert PasswordHasher().check_needs_rehash(weak.hash(PW))
    assert not PasswordHasher().check_needs_rehash(new)
    PasswordHasher().verify(new, PW)


def test_tokens(sessions) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    with transaction(sessions) as s:
        u = create_user(s, "frank", PW, "campaign")
        token, row = issue_token(s, u, days=2, now=now)
        other, _ = issue_token(s, u, days=30, now=now)
    assert token.startswith("hl_") and len(token) > 40
    with sessions() as s:
        stored = s.scalars(select(ApiToken.token_hash)).all()
        assert token not in stored and len(stored) == 2
        assert user_for_token(s, token, now=now).username == "frank"  # type: ignore[union-attr]
        assert user_for_token(s, token, now=now + dt.timedelta(days=2, seconds=1)) is None
        assert user_for_token(s, "hl_" + "x" * 43, now=now) is None
        assert user_for_token(s, "", now=now) is None
    with transaction(sessions) as s:
        assert revoke_token(s, token) is True
        assert revoke_token(s, token) is False
        assert user_for_token(s, token) is None and user_for_token(s, other) is not None
    with transaction(sessions) as s:
        set_active(s, "frank", False)
    with transaction(sessions) as s:
        assert user_for_token(s, other) is None
        set_active(s, "frank", True)
    with transaction(sessions) as s:
        assert user_for_token(s, other) is None, "enabling again must not revive tokens revoked by disabling"
        with pytest.raises(UserError, match="no user"):
            set_active(s, "ghost", False)


def test_throttle_doubles_and_forgets(sessions) -> None:  # type: ignore[no-untyped-def]
    policy = Policy(free=2, lock_seconds=10, lock_max_seconds=40)
    t0 = dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC)
    key = login_throttle.user_key("alice")
    locks = []
    with transaction(sessions) as s:
        for i in range(5):
            row = login_throttle.record_failure(s, key, policy, t0)
            locks.append(None if row.locked_until is None else (row.locked_until - t0).total_seconds())
        assert locks == [None, None, 10, 20, 40]
        other = login_throttle.address_key("10.0.0.9")
        assert login_throttle.retry_after(s, [key, other], t0) == 40
        assert login_throttle.retry_after(s, [other], t0) == 0
        assert login_throttle.retry_after(s, [key], t0 + dt.timedelta(seconds=41)) == 0
        # failures long ago are forgotten: the count starts over
        row = login_throttle.record_failure(s, key, policy, t0 + dt.timedelta(seconds=100))
        assert row.failures == 1
        login_throttle.clear(s, key)
        assert s.get(LoginThrottle, key) is None
