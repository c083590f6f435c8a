"""Helpers for API and page tests: users of each role, bearer headers, a logged-in browser session.

    from api.app import create_app
    from api_support import bearer_headers, login_session, make_user

    async def test_something(aiohttp_client, ctx):
        client = await aiohttp_client(create_app(ctx))
        user, password = make_user(ctx.sessions, "supervisor")
        r = await client.get("/api/v1/cases", headers=await bearer_headers(client, user.username, password))
        csrf = await login_session(client, user.username, password)   # cookie now in client's jar
        r = await client.post("/api/v1/…", json={...}, headers={"X-CSRF-Token": csrf})
"""

from __future__ import annotations

import itertools
import re
import secrets
from typing import Any

from aiohttp.test_utils import TestClient

from cases.users import Staff, create_user
from config.db import transaction

_seq = itertools.count(1)
_CSRF = re.compile(r'name="csrf-token" content="([^"]+)"|name="csrf_token" value="([^"]+)"')


def make_user(sessions: Any, role: str = "operator", *, username: str | None = None, unit: str | None = None,
              password: str | None = None, **kw: Any) -> tuple[Staff, str]:
    """Create an active user (a unit_handler gets a unit unless given one); returns it and its password."""
    password = password or secrets.token_urlsafe(12)
    if role == "unit_handler" and unit is None:
        unit = "branch_east"  # a [cases] units code, as `hotline users add --unit` stores it
    with transaction(sessions) as s:
        user = create_user(s, username or f"{role}{next(_seq)}", password, role, unit=unit, **kw)
        return Staff.of(user), password


async def bearer_headers(client: TestClient, username: str, password: str) -> dict[str, str]:
    """Authorization headers with a fresh token from POST /api/v1/auth/token."""
    r = await client.post("/api/v1/auth/token", json={"username": username, "password": password})
    assert r.status == 201, await r.text()
    return {"Authorization": f"Bearer {(await r.json())['token']}"}


def csrf_from(html: str) -> str:
    m = _CSRF.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1) or m.group(2)


async def login_session(client: TestClient, username: str, password: str) -> str:
    """Log in through the form like a browser; returns the session's CSRF token for later POSTs."""
    r = await client.get("/login")
    assert r.status == 200
    r = await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_from(await r.text()), "next": "/"},
        allow_redirects=False,
    )
    assert r.status == 303, await r.text()
    r = await client.get("/")
    assert r.status == 200, await r.text()
    return csrf_from(await r.text())


async def logged_in_client(aiohttp_client: Any, ctx: Any, role: str = "supervisor") -> tuple[TestClient, Staff]:
    """A test client on the real app with a logged-in session of ``role`` (GETs need no CSRF token)."""
    from api.app import create_app

    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, role)
    await login_session(client, user.username, password)
    return client, user
