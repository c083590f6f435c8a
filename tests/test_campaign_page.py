"""The campaign page: rendered for campaign staff only, and driven in headless Chromium (log in, create,
start, watch progress move when the engine settles a target; a callback-list campaign; a monthly campaign
whose job the running scheduler takes up)."""

from __future__ import annotations

import datetime as dt

from api_support import logged_in_client, make_user
from campaign_support import SH, FakeDialer, make_case
from pages_support import browser_login, chromium, chromium_app, needs_chromium
from sqlalchemy import select

from api.app import create_app
from campaigns.models import Campaign, CampaignTarget
from campaigns.runner import Runner
from campaigns.scheduler import TICK_JOB, CampaignScheduler
from cases import callbacks
from config.db import transaction



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


@needs_chromium
async def test_create_start_and_watch_progress_in_chromium(aiohttp_server, ctx) -> None:  # type: ignore[no-untyped-def]
    from playwright.async_api import expect

    with transaction(ctx.sessions) as s:
        make_case(s, "20260901-0001", "13800138001")
        make_case(s, "20260901-0002", None)
    user, password = make_user(ctx.sessions, "campaign")
    async with chromium_app(aiohttp_server, ctx) as (browser, base):
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
            t.state, t.outcome, t.choice = "done", "answered", "operator"  # pressed 0, talked to an operator
        await expect(row.locator(".done")).to_have_text("1", timeout=15_000)
        await expect(row.locator(".transferred")).to_have_text("1")
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




@needs_chromium
async def test_callback_list_campaign_in_chromium(aiohttp_server, ctx) -> None:  # type: ignore[no-untyped-def]
    """"Who to call: callback list" makes a missed-call callback campaign of the open callback entries (no dates
    asked); a weekly repeat on a weekday becomes a crontab with the weekday's name."""
    from playwright.async_api import expect

    with transaction(ctx.sessions) as s:
        callbacks.add(s, "13800138001", "abandoned")
        callbacks.add(s, "+86 138 0013 8002", "requested")
        make_case(s, "20260901-0001", "13800138009")  # a replied case: never a callback campaign's target
    user, password = make_user(ctx.sessions, "campaign")
    async with chromium_app(aiohttp_server, ctx) as (browser, base):
        page = await browser_login(browser, base, user.username, password)
        await page.goto(base + "/campaigns?lang=en")
        form = page.locator("#create")
        await form.locator("select[name=source]").select_option("callbacks")
        await expect(form.locator("input[name=since]")).to_be_hidden()
        await expect(form.locator("input[name=until]")).to_be_hidden()
        await form.locator("input[name=name]").fill("Missed calls")
        await form.locator("select[name=repeat]").select_option("weekly")
        await expect(form.locator("input[name=day]")).to_be_hidden()
        await form.locator("select[name=weekday]").select_option("fri")
        await form.locator("input[name=time]").fill("14:30")
        await form.locator("button[type=submit]").click()
        await expect(page.locator("#create-result")).to_have_text("Created: Missed calls (Targets 2, Dropped 0)")
        row = page.locator("#campaigns tbody tr").first
        await expect(row.locator(".recurrence")).to_have_text("30 14 * * fri")
        runs = (await row.locator(".next-runs").inner_text()).removeprefix("Next runs: ").split(", ")
        assert len(runs) == 3
        for run in runs:  # shown in the centre's zone, whatever the browser's
            when = dt.datetime.strptime(run, "%Y-%m-%d %H:%M")
            assert (when.strftime("%a"), when.time()) == ("Fri", dt.time(14, 30)), runs
        await row.get_by_role("button", name="Preview").click()
        await expect(page.locator("#preview-targets")).to_have_text("2")
        # back to cases: the date range is asked again
        await form.locator("select[name=source]").select_option("cases")
        await expect(form.locator("input[name=since]")).to_be_visible()
        assert await form.locator("input[name=since]").evaluate("e => e.required && e.validity.valueMissing")
    with ctx.sessions() as s:
        campaign = s.scalars(select(Campaign)).one()
        assert (campaign.purpose, campaign.selection["source"], campaign.recurrence) == ("callback", "callbacks",
                                                                                       "30 14 * * fri")
        targets = s.scalars(select(CampaignTarget).where(CampaignTarget.campaign_id == campaign.id)).all()
        assert sorted(t.phone for t in targets) == ["+8613800138001", "+8613800138002"]
        assert all(t.callback_id is not None and t.case_id is None for t in targets)


@needs_chromium
async def test_schedule_a_monthly_campaign_in_chromium(aiohttp_server, ctx) -> None:  # type: ignore[no-untyped-def]
    """Monthly on the 1st at 09:00 from a start time: the page shows the next runs, and once started, the
    scheduler's job (taken up by the running scheduler at its next tick, no restart)."""
    from playwright.async_api import expect

    with transaction(ctx.sessions) as s:
        make_case(s, "20260901-0001", "13800138001")
    user, password = make_user(ctx.sessions, "campaign")
    scheduler = CampaignScheduler(ctx.engine, Runner(ctx, FakeDialer(), clock=ctx.now), tick_seconds=15,
                                  timezone=ctx.settings.calendar.timezone)
    await scheduler.start(paused=True)  # the service's scheduler, its ticks fired by hand below
    server = await aiohttp_server(create_app(ctx))
    base = str(server.make_url("/")).rstrip("/")
    try:
        async with chromium() as browser:
            page = await browser_login(browser, base, user.username, password)
            await page.goto(base + "/campaigns")
            form = page.locator("#create")
            await form.locator("input[name=name]").fill("每月回访")
            await form.locator("input[name=since]").fill("2026-09-01")
            await form.locator("input[name=until]").fill("2026-10-01")
            await form.locator("select[name=days]").select_option("every_day")
            await form.locator("input[name=caller_id]").fill("0796 12389")
            await form.locator("input[name=start_at]").fill("2090-01-01T00:00")
            await expect(form.locator("input[name=time]")).to_be_hidden()
            await form.locator("select[name=repeat]").select_option("monthly")
            await expect(form.locator("select[name=weekday]")).to_be_hidden()
            await form.locator("input[name=day]").fill("1")
            await form.locator("input[name=time]").fill("09:00")
            await form.locator("button[type=submit]").click()
            await expect(page.locator("#create-error")).to_contain_text("caller_id")
            await form.locator("input[name=caller_id]").fill("079612389")
            await form.locator("button[type=submit]").click()
            await expect(page.locator("#create-result")).to_contain_text("每月回访")
            row = page.locator("#campaigns tbody tr").first
            await expect(row.locator(".recurrence")).to_have_text("0 9 1 * *")
            await expect(row.locator(".next-runs")).to_have_text(
                "下次运行: 2090-01-01 09:00, 2090-02-01 09:00, 2090-03-01 09:00")
            await expect(row.locator(".job")).to_have_count(0)  # a draft has no job to wait for
            await row.get_by_role("button", name="开始").click()
            await expect(row.locator(".state")).to_have_text("scheduled")
            await expect(row.locator(".job")).to_have_text("调度器尚未接手")
            await scheduler.scheduler.get_job(TICK_JOB).func()  # the scheduler's next tick
            await expect(row.locator(".job")).to_have_text("调度器已排定: 2090-01-01 09:00", timeout=15_000)
    finally:
        await scheduler.stop()
    with ctx.sessions() as s:
        campaign = s.scalars(select(Campaign)).one()
        assert (campaign.recurrence, campaign.days, campaign.caller_id, campaign.state) == (
            "0 9 1 * *", "every_day", "079612389", "scheduled")
        assert campaign.start_at == dt.datetime(2090, 1, 1, tzinfo=SH)
