"""A case followed from the night's voicemail draft to closure, by every role, in headless Chromium.

One server on a real socket, one browser, a context (its own session cookie) per person:
the operator accepts the draft as a general case, the supervisor dispatches it, the unit
handler signs and reports, the operator replies, starts the return visit and closes it.
Along the way: the timeline names each step's actor, a handler of another unit meets a
404 page, a confidential reporter is masked for the unit, and hostile text typed into the
case and the forms never runs on any page. Waits are on selectors, never on sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from api_support import make_user
from pages_support import HOSTILE, UNIT, browser_login, case_in, case_row, chromium_app, needs_chromium, voicemail_draft



pytestmark = [
    needs_chromium,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),  # one database: the pages, not the SQL
]
SCRIPT = "<script>window.__pwned = 1</script>"


async def _unharmed(page: Any) -> None:
    """The hostile markup on this page stayed text: none of its scripts or handlers ran."""
    assert await page.evaluate("window.__pwned") is None, page.url


async def _submit(page: Any, action: str, status: str | None = None, **fields: str) -> None:
    """Fill the case page's form for ``action`` and submit it; wait for the case page it leads back to."""
    form = page.locator(f"#form-{action}")
    for name, value in fields.items():
        target = form.locator(f"[name={name}]")
        if await target.evaluate("e => e.tagName") == "SELECT":
            await target.select_option(value)
        else:
            await target.fill(value)
    await form.locator("button[type=submit]").click()
    await page.wait_for_selector(f"#timeline li[data-action={action}]")
    if status is not None:
        assert await page.get_attribute("#case-status", "data-status") == status
    await _unharmed(page)


async def test_a_draft_followed_to_closure_by_every_role(aiohttp_server, ctx) -> None:  # type: ignore[no-untyped-def]
    cid, _ = voicemail_draft(ctx, content="小区门口有人占道经营，" + HOSTILE)
    number = case_row(ctx, cid).number
    people = {role: make_user(ctx.sessions, role) for role in ("operator", "supervisor", "unit_handler")}
    stranger = make_user(ctx.sessions, "unit_handler", unit="branch_west")
    async with chromium_app(aiohttp_server, ctx) as (browser, base):
        case_url = f"{base}/cases/{cid}"
        async def login(who: tuple[Any, str]) -> Any:
            return await browser_login(await browser.new_context(), base, who[0].username, who[1])

        # the operator accepts the draft as a general case, the reporter asking for confidentiality
        op = await login(people["operator"])
        await op.goto(f"{case_url}/review")
        await _unharmed(op)
        await op.select_option("select[name=category]", "public_order")
        await op.select_option("select[name=handling_form]", "general")
        await op.fill("input[name=complainant_name]", "张三")
        await op.check("input[name=confidential]")
        await op.click("#accept")
        await op.wait_for_url(case_url)
        assert await op.get_attribute("#case-status", "data-status") == "accepted"
        assert SCRIPT in await op.locator("#case-content").inner_text()
        assert await op.locator("#form-dispatch").count() == 0  # dispatching is the leader on duty's
        await _unharmed(op)

        # the supervisor dispatches it to the unit
        sup = await login(people["supervisor"])
        await sup.goto(f"{base}/cases")
        await sup.click(f"a:text-is('{number}')")
        await sup.wait_for_url(case_url)
        await _submit(sup, "dispatch", "assigned", unit=UNIT, note=HOSTILE)
        assert SCRIPT in await sup.locator("#timeline li[data-action=dispatch]").inner_text()

        # the unit handler finds it in the unit's queue, reporter masked; signs and reports
        handler = await login(people["unit_handler"])
        await handler.click("header a[href='/cases']")
        row = handler.locator(f"#queue tr[data-number='{number}']")
        assert "张*" in await row.locator("td.reporter").inner_text()
        await _unharmed(handler)
        await row.locator("a").click()
        await handler.wait_for_url(case_url)
        main = await handler.locator("main").inner_text()
        assert "张*" in main and "张三" not in main and "13807961234" not in main
        offered = await handler.eval_on_selector_all("form.action-form", "fs => fs.map(f => f.dataset.action)")
        assert offered == ["sign", "return_to_dispatch", "report_result", "contact"]
        await _submit(handler, "sign", "in_progress", assignee="李警官")
        await _submit(handler, "report_result", "in_progress", result="已核实并清理占道摊位。" + HOSTILE)
        assert SCRIPT in await handler.locator("#case-result").inner_text()

        # a handler of another unit cannot open it, nor find it
        other = await login(stranger)
        response = await other.goto(case_url)
        assert response is not None and response.status == 404
        assert "没有这个案件" in await other.locator("#error-message").inner_text()
        await other.goto(f"{base}/cases?status=all")
        assert await other.locator(f"#queue tr[data-number='{number}']").count() == 0

        # the operator replies, starts the return visit and closes the case
        await op.goto(case_url)
        await _submit(op, "reply", "replied", reply="经核查，占道摊位已清理。")
        await _submit(op, "start_return_visit", "return_visit")
        await _submit(op, "close", "closed", note="来电人表示满意")
        assert await op.locator("form.action-form").count() == 0  # nothing left for an operator

        # the timeline shows each step with its actor
        expected = [("created_from_voicemail", None), ("accept", "operator"), ("dispatch", "supervisor"),
                    ("sign", "unit_handler"), ("report_result", "unit_handler"), ("reply", "operator"),
                    ("start_return_visit", "operator"), ("close", "operator")]
        steps = op.locator("#timeline > li")
        assert await steps.count() == len(expected)
        for i, (action, role) in enumerate(expected):
            step = steps.nth(i)
            assert await step.get_attribute("data-action") == action
            if role is not None:
                assert await step.locator(".actor").inner_text() == people[role][0].username
        await _unharmed(op)


async def test_operator_merges_an_accepted_case_from_its_page(aiohttp_server, ctx) -> None:  # type: ignore[no-untyped-def]
    """An accepted voicemail case repeats an accepted phone case from the same number: the operator
    merges it from the case page (a typo in the number first), and the surviving case then shows
    the repeat's events and its recording."""
    from cases import actions
    from cases.models import Case
    from config.db import transaction

    survivor_id = case_in(ctx, "accepted")  # caller 13900001111
    repeat_id, recording_id = voicemail_draft(ctx, caller="13900001111", content="又反映一次，民警推诿不办。" + HOSTILE)
    with transaction(ctx.sessions) as s:
        actions.accept(s, s.get(Case, repeat_id), ctx=ctx, actor="seed", expected_version=None,
                       category="public_order", handling_form="general")
    survivor, repeat = case_row(ctx, survivor_id), case_row(ctx, repeat_id)
    operator = make_user(ctx.sessions, "operator")
    async with chromium_app(aiohttp_server, ctx) as (browser, base):
        op = await browser_login(browser, base, operator[0].username, operator[1])
        await op.goto(f"{base}/cases/{repeat_id}")
        await _unharmed(op)
        # the earlier case from the same number is suggested
        assert await op.locator(f"#duplicates tr[data-number='{survivor.number}']").count() == 1
        # a number that names no case: refused on the case page, what was typed kept
        await op.fill("#form-merge input[name=into]", "20000101-9999")
        await op.click("#form-merge button[type=submit]")
        await op.wait_for_selector("#action-error[data-action=merge]")
        assert "no such case" in await op.locator("[data-field-error=into]").inner_text()
        assert await op.input_value("#form-merge input[name=into]") == "20000101-9999"
        assert case_row(ctx, repeat_id).status == "accepted"
        # the right number: merged, and the page says into which case
        await op.fill("#form-merge input[name=into]", survivor.number)
        await op.fill("#form-merge input[name=note]", "同一来电人重复反映")
        await op.click("#form-merge button[type=submit]")
        await op.wait_for_selector("#merged-into")
        assert op.url == f"{base}/cases/{repeat_id}"
        assert await op.get_attribute("#case-status", "data-status") == "merged"
        assert await op.locator("form.action-form").count() == 0
        # the surviving case shows the repeat's events (linked to it) and its recording
        await op.click("#merged-into a")
        await op.wait_for_url(f"{base}/cases/{survivor_id}")
        assert await op.get_attribute("#case-status", "data-status") == "accepted"
        theirs = op.locator(f"#timeline li:has(a[href='/cases/{repeat_id}'])")
        assert [await theirs.nth(i).get_attribute("data-action") for i in range(await theirs.count())] == [
            "created_from_voicemail", "accept", "merge"]
        assert "同一来电人重复反映" in await op.locator("#timeline li[data-action=merged_in]").inner_text()
        assert await op.locator(f"audio[src='/api/v1/recordings/{recording_id}/audio']").count() == 1
        assert case_row(ctx, repeat_id).merged_into_id == survivor_id != repeat.merged_into_id
        await _unharmed(op)
