"""Authentication over real HTTP: tokens, the login form and session, roles, CSRF, throttling."""

from __future__ import annotations

import re

from aiohttp import web
from api_support import bearer_headers, csrf_from, login_session, make_user

from api.app import create_app
from api.auth import ANY_STAFF, USER
from api.errors import json_response
from api.openapi import Routes, install
from config.db import transaction


async def test_token_issue_use_and_revoke(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, "operator", display_name="<img src=x onerror=alert(1)>")
    r = await client.post("/api/v1/auth/token", json={"username": user.username.upper(), "password": password, "days": 1})
    assert r.status == 201
    body = await r.json()
    assert body["token_type"] == "Bearer" and body["user"]["role"] == "operator"
    headers = {"Authorization": f"Bearer {body['token']}"}
    r = await client.get("/api/v1/auth/me", headers=headers)
    assert r.status == 200 and (await r.json())["display_name"] == "<img src=x onerror=alert(1)>"
    assert "Set-Cookie" not in r.headers, "API calls with a token must not start sessions"
    r = await client.get("/api/v1/cases", headers=headers)
    assert r.status == 200 and (await r.json()) == {"items": [], "next_cursor": None}
    r = await client.delete("/api/v1/auth/token", headers=headers)
    assert r.status == 204
    r = await client.get("/api/v1/cases", headers=headers)
    assert r.status == 401
    assert (await r.json())["error"]["code"] == "unauthenticated" and "Bearer" in r.headers["WWW-Authenticate"]


async def test_token_refusals(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, "supervisor")
    wrong = await client.post("/api/v1/auth/token", json={"username": user.username, "password": "not the password"})
    unknown = await client.post("/api/v1/auth/token", json={"username": "nobody", "password": password})
    assert wrong.status == unknown.status == 401
    assert (await wrong.json()) == (await unknown.json()), "answers must not tell which usernames exist"
    assert (await wrong.json())["error"]["code"] == "invalid_credentials"
    r = await client.post("/api/v1/auth/token", json={"username": user.username, "password": password, "days": 99999})
    assert r.status == 422 and (await r.json())["error"]["details"]["fields"][0]["field"] == "days"
    for header in ("Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Token abc", "Bearer hl_forged", "Bearer \u00e9\u4e2d"):
        r = await client.get("/api/v1/cases", headers={"Authorization": header.encode("utf-8").decode("latin-1")})
        assert r.status == 401, header
        assert (await r.json())["error"]["code"] == "unauthenticated"


async def test_disabled_user_is_locked_out(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    from cases.users import disable_user

    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, "campaign")
    headers = await bearer_headers(client, user.username, password)
    await login_session(client, user.username, password)
    assert (await client.get("/api/v1/cases")).status == 200
    with transaction(ctx.sessions) as s:
        disable_user(s, user.username)
    assert (await client.get("/api/v1/cases", headers=headers)).status == 401
    assert (await client.get("/api/v1/cases")).status == 401, "the session cookie must stop working too"
    r = await client.post("/api/v1/auth/token", json={"username": user.username, "password": password})
    assert r.status == 401


async def test_session_login_cookie_and_logout(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, "operator", display_name="值班员 <b>甲</b>")
    r = await client.get("/api/v1/cases")
    assert r.status == 401
    r = await client.get("/", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login?next=%2F"
    r = await client.get("/login")
    form = {"username": user.username, "password": password, "csrf_token": csrf_from(await r.text()), "next": "/x?y=1"}
    r = await client.post("/login", data=form, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/x?y=1"
    cookie = r.headers["Set-Cookie"]
    assert "hotline_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # [api] secure_cookies defaults to off (plain HTTP on loopback)
    r = await client.get("/api/v1/auth/me")
    assert r.status == 200 and (await r.json())["username"] == user.username
    r = await client.get("/")
    html = await r.text()
    assert "值班员 &lt;b&gt;甲&lt;/b&gt;" in html and "<b>甲" not in html
    csrf = csrf_from(html)
    # a changing request on the cookie needs the CSRF token
    r = await client.delete("/api/v1/auth/token")
    assert r.status == 403 and (await r.json())["error"]["code"] == "csrf_failed"
    r = await client.delete("/api/v1/auth/token", headers={"X-CSRF-Token": "wrong"})
    assert r.status == 403
    r = await client.delete("/api/v1/auth/token", headers={"X-CSRF-Token": csrf})
    assert r.status == 400 and (await r.json())["error"]["code"] == "not_token_auth"
    r = await client.post("/logout", data={}, allow_redirects=False)
    assert r.status == 403, "logout without the token is refused (a cross-site page could log people out)"
    r = await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login"
    assert (await client.get("/api/v1/cases")).status == 401
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_login_form_refusals_and_escaping(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, "operator")
    r = await client.post("/login", data={"username": user.username, "password": password}, allow_redirects=False)
    assert r.status == 403, "a login without the form's CSRF token (login CSRF) is refused"
    csrf = csrf_from(await (await client.get("/login")).text())
    hostile = '"><script>alert(1)</script>'
    r = await client.post("/login", data={"username": hostile, "password": "x", "csrf_token": csrf})
    html = await r.text()
    assert r.status == 401 and "<script>alert" not in html and "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "用户名或密码错误" in html
    r = await client.post(
        "/login",
        data={"username": user.username, "password": password, "csrf_token": csrf, "next": "//evil.example/"},
        allow_redirects=False,
    )
    assert r.status == 303 and r.headers["Location"] == "/", "no open redirect"


async def test_language_switch(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    assert "工作人员登录" in await (await client.get("/login")).text()
    r = await client.get("/login?lang=en")
    assert "Staff login" in await r.text()
    assert any(c.startswith("lang=en") for c in r.headers.getall("Set-Cookie"))
    assert "Staff login" in await (await client.get("/login")).text(), "the choice is remembered"
    r = await client.get("/login?lang=%3Cscript%3E")
    assert r.status == 200 and "Staff login" in await r.text(), "an unknown language is ignored"
    assert "工作人员登录" in await (await client.get("/login?lang=zh")).text()


def _limited_routes() -> Routes:
    routes = Routes("test")

    @routes.get("/api/v1/test/duty", summary="supervisors only", roles=("supervisor",))
    async def duty(request: web.Request) -> web.Response:
        return json_response({"user": request[USER].username})

    @routes.get("/test/duty-page", summary="a page for supervisors", roles=("supervisor",), document=False)
    async def duty_page(request: web.Request) -> web.Response:
        return web.Response(text="duty page")

    @routes.get("/api/v1/test/any", summary="any staff", roles=ANY_STAFF)
    async def anyone(request: web.Request) -> web.Response:
        return json_response({"role": request[USER].role})

    return routes


async def test_401_vs_403_per_role(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    app = create_app(ctx)
    install(app, _limited_routes())
    client = await aiohttp_client(app)
    r = await client.get("/api/v1/test/duty")
    assert r.status == 401 and (await r.json())["error"]["code"] == "unauthenticated"
    for role in ("operator", "supervisor", "unit_handler", "campaign", "admin"):
        user, password = make_user(ctx.sessions, role)
        headers = await bearer_headers(client, user.username, password)
        r = await client.get("/api/v1/test/duty", headers=headers)
        if role == "supervisor":
            assert r.status == 200 and (await r.json()) == {"user": user.username}
        else:
            assert r.status == 403, role  # admin too: it does not pass every role check
            body = await r.json()
            assert body["error"]["code"] == "forbidden" and body["error"]["details"] == {"roles": ["supervisor"]}
        r = await client.get("/api/v1/test/any", headers=headers)
        assert r.status == 200 and (await r.json()) == {"role": role}
    # pages: a redirect to the login form, then a 403 page
    r = await client.get("/test/duty-page?a=1", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login?next=%2Ftest%2Fduty-page%3Fa%3D1"
    op, password = make_user(ctx.sessions, "operator")
    await login_session(client, op.username, password)
    r = await client.get("/test/duty-page?lang=en")
    assert r.status == 403 and "Your role may not open this page" in await r.text()


async def test_throttling(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    api = ctx.settings.api
    api.login_failures_per_user, api.login_failures_per_address, api.login_lock_seconds = 2, 5, 60
    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, "operator")
    bad = {"username": user.username, "password": "wrong password"}
    for _ in range(3):  # two free failures, the third locks the username
        r = await client.post("/api/v1/auth/token", json=bad)
        assert r.status == 401
    r = await client.post("/api/v1/auth/token", json={"username": user.username, "password": password})
    assert r.status == 429, "while locked even the right password is refused"
    body = await r.json()
    assert body["error"]["code"] == "too_many_attempts"
    assert 1 <= int(r.headers["Retry-After"]) <= 60 and body["error"]["details"]["retry_after"] == int(r.headers["Retry-After"])
    # the form says so too, in the page's language
    csrf = csrf_from(await (await client.get("/login?lang=en")).text())
    r = await client.post("/login", data={"username": user.username, "password": password, "csrf_token": csrf})
    assert r.status == 429 and "Retry-After" in r.headers and "Too many failed attempts" in await r.text()
    # another user from the same address still gets in until the address itself is locked
    other, other_pw = make_user(ctx.sessions, "operator")
    r = await client.post("/api/v1/auth/token", json={"username": other.username, "password": other_pw})
    assert r.status == 201
    for name in ("ghost1", "ghost2", "ghost3"):  # unknown names count like real ones (no username probing)
        r = await client.post("/api/v1/auth/token", json={"username": name, "password": "whatever1"})
        assert r.status == 401
    r = await client.post("/api/v1/auth/token", json={"username": other.username, "password": other_pw})
    assert r.status == 429, "6 failures from the address (5 free): now it is locked for every username"


async def test_successful_login_clears_the_username_count(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    ctx.settings.api.login_failures_per_user = 2
    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, "operator")
    for _ in range(2):
        assert (await client.post("/api/v1/auth/token", json={"username": user.username, "password": "nope nope"})).status == 401
    assert (await client.post("/api/v1/auth/token", json={"username": user.username, "password": password})).status == 201
    for _ in range(2):
        assert (await client.post("/api/v1/auth/token", json={"username": user.username, "password": "nope nope"})).status == 401
    r = await client.post("/api/v1/auth/token", json={"username": user.username, "password": password})
    assert r.status == 201, "two new failures after a success are still within the free ones"


def test_login_page_has_no_unescaped_user_text() -> None:
    # the template escapes by configuration, not by remembering |e in each place
    from api.pages import TEMPLATES

    for f in TEMPLATES.glob("*.html"):
        assert not re.search(r"\|\s*safe\b", f.read_text(encoding="utf-8")), f
