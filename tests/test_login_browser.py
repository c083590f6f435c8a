"""The login form in a real browser (headless Chromium): the cookie, CSRF field and logout work
as a person meets them, which an HTTP client with a permissive cookie jar cannot show."""

from __future__ import annotations


from api_support import make_user
from pages_support import chromium_app, needs_chromium



pytestmark = needs_chromium


async def test_login_and_logout_in_chromium(aiohttp_server, ctx) -> None:  # type: ignore[no-untyped-def]
    user, password = make_user(ctx.sessions, "supervisor", display_name="值班领导 <i>张</i>")
    async with chromium_app(aiohttp_server, ctx) as (browser, base):
        page = await browser.new_page()
        await page.goto(base + "/")
        assert page.url.startswith(base + "/login?next=")
        assert await page.locator("h1").inner_text() == "工作人员登录"
        await page.fill("input[name=username]", user.username)
        await page.fill("input[name=password]", "wrong password")
        await page.click("button[type=submit]")
        assert "用户名或密码错误" in await page.locator("[role=alert]").inner_text()
        await page.fill("input[name=password]", password)
        await page.click("button[type=submit]")
        await page.wait_for_url(base + "/")
        assert await page.locator("#whoami").inner_text() == "当前用户：值班领导 <i>张</i>（值班领导）"
        cookies = {c["name"]: c for c in await page.context.cookies()}
        assert cookies["hotline_session"]["httpOnly"] and cookies["hotline_session"]["sameSite"] == "Lax"
        assert await page.evaluate("document.cookie") == "", "scripts cannot read the session"
        api = await page.evaluate("fetch('/api/v1/auth/me').then(r => r.json())")
        assert api["role"] == "supervisor"
        await page.click("text=English")
        assert await page.locator("#whoami").inner_text() == "Logged in as 值班领导 <i>张</i> (leader on duty)"
        await page.click("text=Log out")
        await page.wait_for_url(base + "/login")
        r = await page.goto(base + "/api/v1/cases")
        assert r is not None and r.status == 401
