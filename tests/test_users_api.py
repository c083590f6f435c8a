"""Staff accounts over /api/v1/users and the administrator's users page, on the real app (SQLite
and PostgreSQL): the same operations as `hotline users add|list|disable|enable|password`,
administrators only. The page in a browser is tests/test_users_browser.py."""

from __future__ import annotations

import re
from typing import Any

from api_support import bearer_headers, login_session, make_user

from api.app import create_app
from cases.users import authenticate, get_user
from config.db import transaction

PW = "a long enough password"


async def _admin(aiohttp_client: Any, ctx: Any) -> tuple[Any, dict[str, str]]:
    client = await aiohttp_client(create_app(ctx))
    admin, password = make_user(ctx.sessions, "admin")
    return client, await bearer_headers(client, admin.username, password)


def _logs_in(ctx: Any, username: str, password: str) -> bool:
    with transaction(ctx.sessions) as s:
        return authenticate(s, username, password) is not None


async def test_admin_manages_accounts_through_the_api(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client, headers = await _admin(aiohttp_client, ctx)
    r = await client.post("/api/v1/users", headers=headers, json={
        "username": "Op-Li", "password": PW, "role": "operator", "sip_uri": "sip:8001@pbx.local",
        "display_name": "李 <b>接线员</b>"})
    assert r.status == 201, await r.text()
    created = await r.json()
    assert r.headers["Location"] == "/api/v1/users/op-li" and "password" not in created
    assert (created["username"], created["role"], created["sip_uri"], created["active"]) == (
        "op-li", "operator", "sip:8001@pbx.local", True)
    # a unit handler's unit, given by its name, is stored as the code (as `hotline users add --unit` does)
    r = await client.post("/api/v1/users", headers=headers,
                          json={"username": "h-east", "password": PW, "role": "unit_handler", "unit": "城东分局"})
    assert r.status == 201 and (await r.json())["unit"] == "branch_east"
    r = await client.get("/api/v1/users", headers=headers)
    listed = {u["username"]: u for u in (await r.json())["items"]}
    assert {"op-li", "h-east"} <= set(listed) and listed["op-li"]["display_name"] == "李 <b>接线员</b>"
    assert (await (await client.get("/api/v1/users/OP-LI", headers=headers)).json())["username"] == "op-li"

    # the new operator logs in; a reset password replaces the old one and revokes its tokens
    op_headers = await bearer_headers(client, "op-li", PW)
    new = "another long password"
    r = await client.put("/api/v1/users/op-li/password", headers=headers, json={"password": new})
    assert r.status == 204 and new not in await r.text()
    assert (await client.get("/api/v1/auth/me", headers=op_headers)).status == 401
    assert not _logs_in(ctx, "op-li", PW) and _logs_in(ctx, "op-li", new)

    # disabled: no login, no token; enabled again: logs in
    op_headers = await bearer_headers(client, "op-li", new)
    r = await client.post("/api/v1/users/op-li/disable", headers=headers)
    assert r.status == 200 and (await r.json())["active"] is False
    assert (await client.get("/api/v1/auth/me", headers=op_headers)).status == 401
    assert not _logs_in(ctx, "op-li", new)
    r = await client.post("/api/v1/users/op-li/enable", headers=headers)
    assert r.status == 200 and (await r.json())["active"] is True and _logs_in(ctx, "op-li", new)


async def test_refusals(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client, headers = await _admin(aiohttp_client, ctx)
    make_user(ctx.sessions, "operator", username="ann", password=PW)

    async def create(status: int, code: str, text: str, **body: Any) -> None:
        r = await client.post("/api/v1/users", headers=headers, json={"password": PW, "role": "operator", **body})
        answer = await r.json()
        assert (r.status, answer["error"]["code"]) == (status, code), answer
        assert text in answer["error"]["message"] and PW not in await r.text()

    await create(409, "user_exists", "already exists", username="ANN")
    await create(422, "user_refused", "bad username", username="<script>")
    await create(422, "user_refused", "at least 10", username="bob", password="short")
    await create(422, "user_refused", "needs the responsible unit", username="bob", role="unit_handler")
    await create(422, "user_refused", "only a unit_handler", username="bob", unit="branch_east")
    await create(422, "user_refused", "codes: traffic_police", username="bob", role="unit_handler", unit="城关派出所")
    await create(422, "validation_failed", "role", username="bob", role="root")
    await create(422, "validation_failed", "is_admin", username="bob", is_admin=True)
    for method, path, body in (("GET", "/api/v1/users/ghost", None), ("POST", "/api/v1/users/ghost/disable", None),
                               ("PUT", "/api/v1/users/ghost/password", {"password": PW})):
        r = await client.request(method, path, headers=headers, json=body)
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found", path
    r = await client.put("/api/v1/users/ann/password", headers=headers, json={"password": "short"})
    assert r.status == 422 and _logs_in(ctx, "ann", PW), "a refused reset leaves the password"
    r = await client.get("/api/v1/users", headers=headers)
    assert "bob" not in {u["username"] for u in (await r.json())["items"]}, "nothing half-created"


async def test_only_admins(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    target, _ = make_user(ctx.sessions, "operator")
    for role in ("operator", "supervisor", "unit_handler", "campaign"):
        user, password = make_user(ctx.sessions, role)
        headers = await bearer_headers(client, user.username, password)
        for method, path, body in (
            ("GET", "/api/v1/users", None),
            ("POST", "/api/v1/users", {"username": "sneaky", "password": PW, "role": "admin"}),
            ("GET", f"/api/v1/users/{target.username}", None),
            ("POST", f"/api/v1/users/{target.username}/disable", None),
            ("POST", f"/api/v1/users/{target.username}/enable", None),
            ("PUT", f"/api/v1/users/{target.username}/password", {"password": PW}),
        ):
            r = await client.request(method, path, headers=headers, json=body)
            assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden", (role, method, path)
        # and the page, with a session of that role
        page_client = await aiohttp_client(create_app(ctx))
        csrf = await login_session(page_client, user.username, password)
        r = await page_client.get("/admin/users")
        assert r.status == 403 and 'href="/admin/users"' not in await r.text(), role
        r = await page_client.post(f"/admin/users/{target.username}/disable", data={"csrf_token": csrf})
        assert r.status == 403, role
    assert (await client.get("/api/v1/users")).status == 401
    with ctx.sessions() as s:
        assert get_user(s, target.username).active


async def test_the_users_page(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    admin, password = make_user(ctx.sessions, "admin")
    csrf = await login_session(client, admin.username, password)
    home = await (await client.get("/")).text()
    assert 'href="/admin/users"' in home

    def add(**fields: str) -> Any:
        return client.post("/admin/users", allow_redirects=False,
                           data={"csrf_token": csrf, "role": "operator", "password": PW, **fields})

    r = await add(username="op-zhang", display_name="<script>window.__pwned=1</script>", sip_uri="sip:8002@pbx.local")
    assert r.status == 303 and r.headers["Location"] == "/admin/users"
    page = await (await client.get("/admin/users")).text()
    row = re.search(r'<tr data-username="op-zhang".*?</tr>', page, re.S)
    assert row and "sip:8002@pbx.local" in row.group(0) and "接线员" in row.group(0)
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in row.group(0) and "<script>window" not in page
    # refused: the reason shown, what was typed kept, never the password
    r = await add(username="op-zhang")
    assert r.status == 409
    text = await r.text()
    assert "already exists" in text and 'name="username" required maxlength="64" autocomplete="off" value="op-zhang"' in text
    assert PW not in text
    r = await add(username="h-west", role="unit_handler")
    assert r.status == 422 and "needs the responsible unit" in await r.text()
    r = await add(username="h-west", role="unit_handler", unit="branch_west")
    assert r.status == 303
    with ctx.sessions() as s:
        assert get_user(s, "h-west").unit == "branch_west"
    r = await add(username="x", role="root")
    assert r.status == 422 and "role" in await r.text()
    # without the CSRF token nothing happens
    r = await client.post("/admin/users/op-zhang/disable", data={})
    assert r.status == 403
    # disable, enable, reset the password
    r = await client.post("/admin/users/op-zhang/disable", data={"csrf_token": csrf}, allow_redirects=False)
    assert r.status == 303 and not _logs_in(ctx, "op-zhang", PW)
    page = await (await client.get("/admin/users", params={"lang": "en"})).text()
    assert re.search(r'<tr data-username="op-zhang" data-active="0">.*?Enable', page, re.S)
    r = await client.post("/admin/users/op-zhang/enable", data={"csrf_token": csrf}, allow_redirects=False)
    assert r.status == 303 and _logs_in(ctx, "op-zhang", PW)
    r = await client.post("/admin/users/op-zhang/password", data={"csrf_token": csrf, "password": "short"})
    assert r.status == 422 and "at least 10" in await r.text() and _logs_in(ctx, "op-zhang", PW)
    r = await client.post("/admin/users/op-zhang/password", allow_redirects=False,
                          data={"csrf_token": csrf, "password": "a new long password"})
    assert r.status == 303 and _logs_in(ctx, "op-zhang", "a new long password") and not _logs_in(ctx, "op-zhang", PW)
    r = await client.post("/admin/users/ghost/disable", data={"csrf_token": csrf})
    assert r.status == 404 and "no user" in await r.text()
