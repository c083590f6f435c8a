"""The staff pages in headless Chromium against a real HTTP server on a real socket (SQLite).

What only a browser shows: the review page's script (a click on a word seeks the audio),
the <audio> element fetching the recording with Range requests the server logs, forms
posting with their CSRF field, hostile case text staying text (no script runs), and an
operator meeting a supervisor page. Kept few and waiting on selectors, never on sleeps.
"""

from __future__ import annotations


import pytest
from api_support import make_user
from pages_support import WORDS, browser_login as _login, case_row, chromium_app, needs_chromium, seed
from sqlalchemy import select

from recordings.models import RecordingAccess


pytestmark = [
    needs_chromium,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),  # one database: the pages, not the SQL
]


async def test_operator_reviews_accepts_and_merges_in_chromium(aiohttp_server, ctx) -> None:  # type: ignore[no-untyped-def]
    data = seed(ctx)
    user, password = make_user(ctx.sessions, "operator")
    async with chromium_app(aiohttp_server, ctx, "--autoplay-policy=no-user-gesture-required") as (browser, base):
        draft, repeat = case_row(ctx, data.draft_id), case_row(ctx, data.repeat_id)
        page = await _login(browser, base, user.username, password)
        await page.goto(base + "/cases")
        # hostile content is shown as text and never runs
        hostile = page.locator(f"tr[data-number='{case_row(ctx, data.hostile_id).number}'] td").nth(5)
        assert "<script>window.__pwned = 1</script>" in await hostile.inner_text()
        assert await page.evaluate("window.__pwned") is None
        assert await page.locator(f"tr[data-number='{case_row(ctx, data.overdue_id).number}']").get_attribute(
            "class") == "dl-overdue"

        # review the draft: words, low-confidence marks, click-to-seek, Range requests
        await page.click(f"a:text-is('{draft.number}')")
        await page.wait_for_selector("#transcript .w")
        assert await page.locator("#transcript .w").count() == len(WORDS)
        low = page.locator("#transcript .w.low")
        assert await low.count() == sum(1 for *_, c in WORDS if c < 0.6)
        word, start = next((w, a) for w, a, _, c in WORDS if c < 0.6 and a > 5)
        await page.click(f"#transcript .w:text-is('{word}')")
        await page.wait_for_function(f"Math.abs(document.getElementById('player').currentTime - {start}) < 1.0")
        with ctx.sessions() as s:
            ranges = list(s.scalars(select(RecordingAccess.range).where(
                RecordingAccess.recording_id == data.recording_id, RecordingAccess.actor == user.username)))
        assert ranges and all(r is not None and r.startswith("bytes=") for r in ranges), ranges

        # accept with the prefilled fields and a category
        assert await page.input_value("input[name=complainant_phone]") == "13807961234"
        await page.select_option("select[name=category]", "public_order")
        await page.fill("input[name=complainant_name]", "李四 <b>")
        await page.click("#accept")
        await page.wait_for_url(f"{base}/cases/{data.draft_id}")
        assert await page.get_attribute("#case-status", "data-status") == "accepted"
        assert await page.locator("#timeline li[data-action=accept]").count() == 1
        assert "李四 <b>" in await page.locator("main").inner_text()

        # the repeat from the same number: merge it into the accepted case
        await page.goto(f"{base}/cases/{data.repeat_id}/review")
        row = page.locator(f"#duplicates tr[data-number='{draft.number}']")
        await row.locator("button").click()
        await page.wait_for_url(f"{base}/cases/{data.repeat_id}")
        assert await page.get_attribute("#case-status", "data-status") == "merged"
        assert await page.locator("#merged-into a").inner_text() == draft.number
        assert case_row(ctx, data.repeat_id).merged_into_id == data.draft_id != repeat.id


async def test_operator_cannot_open_supervisor_pages_in_chromium(aiohttp_server, ctx) -> None:  # type: ignore[no-untyped-def]
    data = seed(ctx)
    operator, op_password = make_user(ctx.sessions, "operator")
    supervisor, sup_password = make_user(ctx.sessions, "supervisor")
    async with chromium_app(aiohttp_server, ctx) as (browser, base):
        page = await _login(browser, base, operator.username, op_password)
        assert await page.locator("a[href='/supervision/overdue']").count() == 0
        r = await page.goto(base + "/supervision/overdue")
        assert r is not None and r.status == 403
        assert "无权访问" in await page.locator("#error-message").inner_text()

        page = await _login(await browser.new_context(), base, supervisor.username, sup_password)
        await page.click("a[href='/supervision/overdue']")
        await page.wait_for_selector("#board")
        assert await page.locator(f"#board tr[data-number='{case_row(ctx, data.overdue_id).number}']").count() == 1
        await page.click("a[href='/stats']")
        await page.wait_for_selector("#received-chart rect.bar", state="attached")
        assert await page.locator("#received-chart rect.bar").count() == 30
        await page.goto(f"{base}/recordings/{data.recording_id}?lang=en")
        assert await page.locator("h1").inner_text() == f"Recording {data.recording_id}"
        assert await page.locator("#access-log").is_visible()
