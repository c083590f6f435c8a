"""The administrator's users page in headless Chromium: an admin adds an operator, who can then
log in; disabled, the operator's open session ends at its next page."""

from __future__ import annotations


import pytest
from api_support import make_user
from pages_support import browser_login, chromium_app, needs_chromium



pytestmark = [
    needs_chromium,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),  # one database: the page, not the SQL
]
PASSWORD = "operator password 1"


async def test_admin_adds_an_operator_who_logs_in(aiohttp_server, ctx) -> None:  # type: ignore[no-untyped-def]
    admin, admin_password = make_user(ctx.sessions, "admin")
    async with chromium_app(aiohttp_server, ctx) as (browser, base):
        page = await browser_login(await browser.new_context(), base, admin.username, admin_password)
        await page.click("header a[href='/admin/users']")
        await page.wait_for_url(base + "/admin/users")
        form = page.locator("#add-user")
        await form.locator("input[name=username]").fill("Op-Wang")
        await form.locator("input[name=display_name]").fill("王接线员")
        await form.locator("select[name=role]").select_option("operator")
        await form.locator("input[name=sip_uri]").fill("sip:8003@pbx.local")
        await form.locator("input[name=password]").fill(PASSWORD)
        await page.click("#add-user-button")
        await page.wait_for_selector("#users tr[data-username='op-wang']")
        row = page.locator("#users tr[data-username='op-wang']")
        assert "sip:8003@pbx.local" in await row.inner_text() and "接线员" in await row.inner_text()

        # the new operator logs in, in a browser of their own
        op = await browser_login(await browser.new_context(), base, "op-wang", PASSWORD)
        assert "王接线员" in await op.locator("#whoami").inner_text()
        assert await op.locator("header a[href='/cases']").count() == 1
        assert await op.locator("header a[href='/admin/users']").count() == 0

        # disabled by the admin: the operator's next page is the login form
        await row.locator("form.disable-form button").click()
        await page.wait_for_selector("#users tr[data-username='op-wang'][data-active='0']")
        await op.goto(base + "/cases")
        assert op.url.startswith(base + "/login")
