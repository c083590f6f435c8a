"""The campaign page: rendered for campaign staff only, and driven in headless Chromium (log in, create,
start, watch progress move when the engine settles a target)."""

from __future__ import annotations

import shutil

import pytest
from api_support import logged_in_client, make_user
from campaign_support import make_case
from sqlalchemy import select

from api.app import create_app
from campaigns.models import CampaignTarget
from config.db import transaction

CHROMIUM = "/usr/bin/chromium"


async def test_page_roles(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client, _ = await logged_in_client(aiohttp_client, ctx, "campaign")
    r = await client.get("/campaigns")
    assert r.status == 200 and 'id="create"' in await r.text()
    r = await client.get("/campaigns?lang=en")
    assert "Return-visit campaigns" in await r.text()
    other, _ = await logged_in_client(aiohttp_client, ctx, "operator")
    assert (await other.get("/campaigns")).status == 403
    anonymous = await aiohttp_client(create_app(ctx))
    r = await anonymous.get("/campaigns", allow_redirects=False)
    assert r.status in (302, 303) and r.headers["Location"].startswith("/login")


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM}")
async def test_create_start_and_watch_progress_in_chromium(aiohttp_server, ctx) -> None:  # type: ignore[no-untyped-def]
    from playwright.async_api import async_playwright, expect

    with transaction(ctx.sessions) as s:
        make_case(s, "20260901-0001", "13800138001")
        make_case(s, "20260901-0002", None)
    user, password = make_user(ctx.sessions, "campaign")
    server = await aiohttp_server(create_app(ctx))
    base = str(server.make_url("/")).rstrip("/")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM)
        try:
            page = await browser.new_page()
            await page.goto(base + "/campaigns")
            await page.fill("input[name=username]", user.username)
            await page.fill("input[name=password]", password)
            await page.click("button[type=submit]")
            await page.wait_for_url(base + "/campaigns")
            await expect(page.locator("#no-campaigns")).to_be_visible()
            form = page.locator("#create")
            await form.locator("input[name=name]").fill("九月 <b>回访</b>")
            await form.locator("input[name=since]").fill("2026-09-01")
            await form.locator("input[name=until]").fill("2026-08-01")
            await form.locator("button[type=submit]").click()
            await expect(page.locator("#create-error")).to_contain_text("selection.until")
            await form.locator("input[name=until]").fill("2026-10-01")
            await form.locator("input[name=windows]").fill("20:00-09:00")
            await form.locator("button[type=submit]").click()
            await expect(page.locator("#create-error")).to_contain_text("windows")
            await form.locator("input[name=windows]").fill("09:00-12:00, 14:30-20:00")
            await form.locator("button[type=submit]").click()
            await expect(page.locator("#create-result")).to_contain_text("九月 <b>回访</b>")
            row = page.locator("#campaigns tbody tr").first
            await expect(row.locator("td").nth(1)).to_have_text("九月 <b>回访</b>")  # shown as text, never as markup
            await expect(row.locator(".state")).to_have_text("draft")
            await row.get_by_role("button", name="预览").click()
            await expect(page.locator("#preview-dropped")).to_have_text("no_phone 1")
            await row.get_by_role("button", name="开始").click()
            await expect(row.locator(".state")).to_have_text("scheduled")
            await expect(row.locator(".pending")).to_have_text("1")
            # the engine answers the one target; the page's poll shows it without a reload
            with transaction(ctx.sessions) as s:
                t = s.scalars(select(CampaignTarget).where(CampaignTarget.state == "pending")).one()
                t.state, t.outcome, t.rating = "done", "answered", 1
            await expect(row.locator(".done")).to_have_text("1", timeout=15_000)
            await expect(row.locator(".pending")).to_have_text("0")
            await row.get_by_role("button", name="暂停").click()
            await expect(row.locator(".state")).to_have_text("paused")
            # do-not-call list
            await page.fill("#dnc-add input[name=phone]", "nonsense")
            await page.click("#dnc-add button")
            await expect(page.locator("#dnc-error")).to_contain_text("phone")
            await page.fill("#dnc-add input[name=phone]", "138 0013 8009")
            await page.click("#dnc-add button")
            await expect(page.locator("#dnc tbody")).to_contain_text("+8613800138009")
            await page.locator("#dnc tbody").get_by_role("button", name="移除").click()
            await expect(page.locator("#dnc tbody tr")).to_have_count(0)
        finally:
            await browser.close()
