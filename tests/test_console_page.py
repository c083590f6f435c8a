"""The operator's console page (api/pages/console_pages.py): who may open it and what it renders
(real app, SQLite and PostgreSQL), then the page's script in headless Chromium against the real
app, the queue's events published in-process: presence buttons, the screen pop with previous
cases, the case opened from the call, the callback list. The same page with a real SIPp call
through `hotline serve` is tests/test_console_sipp.py."""

from __future__ import annotations

import datetime as dt

import pytest
from api_support import logged_in_client, login_session, make_user
from pages_support import HOSTILE, browser_login, chromium_app, needs_chromium
from sqlalchemy import select

from api.app import create_app
from api.pages.console_pages import TEXT
from cases import callbacks
from cases.models import Case
from cases.users import User
from config.context import Context
from config.db import transaction, utcnow
from ivr import presence
from ivr.models import Call
from ivr.queue import QueueEvent

CALLER = "13800138000"


def test_console_words_exist_in_both_languages() -> None:
    assert TEXT["zh"].keys() == TEXT["en"].keys()


async def test_console_is_for_operators_only(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    anonymous = await aiohttp_client(create_app(ctx))
    r = await anonymous.get("/console", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login?next=%2Fconsole"
    for role in ("supervisor", "unit_handler", "campaign", "admin"):
        other, _ = await logged_in_client(aiohttp_client, ctx, role)
        r = await other.get("/console")
        assert r.status == 403, role
        assert "无权访问" in await r.text()
        assert 'href="/console"' not in await (await other.get("/")).text(), role
    op, _ = await logged_in_client(aiohttp_client, ctx, "operator")
    home = await (await op.get("/")).text()
    assert home.count('href="/console"') == 2  # the header and the home page's list
    r = await op.get("/console")
    html = await r.text()
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    for element in ('id="set-available"', 'id="set-away"', 'id="set-offline"', 'id="new-case"', 'id="callbacks"',
                    'new EventSource("/api/v1/operators/me/events")'):
        assert element in html, element
    assert "接线台" in html and "未配置话机地址" in html  # this operator has no phone address
    english = await (await op.get("/console?lang=en")).text()
    assert "Operator console" in english and "New case from this call" in english


async def test_console_escapes_what_it_shows(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, "operator", display_name=HOSTILE, sip_uri=f"sip:{HOSTILE}@127.0.0.1")
    await login_session(client, user.username, password)
    html = await (await client.get("/console")).text()
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    assert html.count("&lt;script&gt;window.__pwned = 1&lt;/script&gt;") == 2  # the header's name, the phone address


def _call(ctx: Context, caller: str) -> int:
    with transaction(ctx.sessions) as s:
        row = Call(sip_call_id=f"console-{caller}", direction="in", caller=caller, called="12389", started_at=utcnow())
        s.add(row)
        s.flush()
        return row.id


@needs_chromium
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # one database: the page's script, not the SQL
async def test_console_in_chromium(aiohttp_server, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    """Presence buttons (and the 409 while on a call), a ringing → connected → ended call shown with the
    previous case (hostile text stays text), a case opened from it in a new tab, callbacks claimed and done."""
    from playwright.async_api import expect

    op, password = make_user(ctx.sessions, "operator", sip_uri="sip:op@127.0.0.1:5070")
    call_id = _call(ctx, CALLER)
    with transaction(ctx.sessions) as s:
        s.add(Case(number="20261101-0007", channel="phone", status="accepted", caller_number=CALLER,
                   content="路灯坏了" + HOSTILE, received_at=utcnow() - dt.timedelta(days=30)))
        s.flush()
        previous_id = s.scalar(select(Case.id).where(Case.number == "20261101-0007"))
        first = callbacks.add(s, "13900139000", "abandoned", call_id=None).id
        second = callbacks.add(s, "13700137000", "requested", call_id=None).id
    async with chromium_app(aiohttp_server, ctx) as (browser, base):
        context = await browser.new_context()
        page = await browser_login(context, base, op.username, password)
        await page.click("header a[href='/console']")
        await page.wait_for_url(base + "/console")
        await expect(page.locator("#stream-status")).to_have_attribute("data-on", "1")
        await expect(page.locator("#presence-state")).to_have_attribute("data-state", "offline")

        # presence: the operator picks available; while on a call the API refuses a change and the page says why
        await page.click("#set-available")
        await expect(page.locator("#presence-state")).to_have_attribute("data-state", "available")
        with ctx.sessions() as s:
            me = s.get(User, op.id)
            assert me is not None and presence.operator_state(s, me, utcnow()).state == "available"

        # the screen pop
        ctx.queue_events.publish(QueueEvent("ringing", op.id, CALLER, call_id))
        await expect(page.locator("#call")).to_have_attribute("data-kind", "ringing")
        assert await page.locator("#caller").inner_text() == CALLER
        row = page.locator("#previous tr[data-number='20261101-0007']")
        await expect(row.locator(f"a[href='/cases/{previous_id}']")).to_have_count(1)
        assert "<script>" in await row.inner_text()  # shown as text, not run
        with transaction(ctx.sessions) as s:
            assert presence.claim(s, op.id, utcnow(), call_id=call_id)
        ctx.queue_events.publish(QueueEvent("connected", op.id, CALLER, call_id))
        await expect(page.locator("#presence-state")).to_have_attribute("data-state", "busy")
        await page.click("#set-away")
        await expect(page.locator("#presence-error")).to_contain_text("on a call")

        # a new case from the call opens in a new tab: the draft's review page, prefilled and linked
        async with context.expect_page() as opened:
            await page.click("#new-case")
        tab = await opened.value
        await tab.wait_for_selector("#case-call")
        assert tab.url.endswith("/review")
        assert await tab.get_attribute("#case-call", "data-call") == str(call_id)
        assert await tab.locator("#case-caller").inner_text() == CALLER
        assert await tab.input_value("input[name=complainant_phone]") == CALLER
        await expect(page.locator("#case-opened")).to_be_visible()
        assert await page.locator("#new-case").is_disabled()  # one case per call from here
        with ctx.sessions() as s:
            made = s.scalars(select(Case).where(Case.source_call_id == call_id)).one()
            assert (made.status, made.caller_number) == ("draft", CALLER)
        assert await page.locator("#case-link").inner_text() == made.number

        # the call ends: said so, the caller still shown
        ctx.queue_events.publish(QueueEvent("ended", op.id, CALLER, call_id, "hangup"))
        await expect(page.locator("#call")).to_have_attribute("data-kind", "ended")
        assert await page.locator("#caller").inner_text() == CALLER
        logged = await page.eval_on_selector_all("#call-log li", "ls => ls.map(l => l.dataset.kind)")
        assert logged == ["ringing", "connected", "ended"]

        # callbacks: claim the first, mark it done; the other stays open
        cb = page.locator(f"#callbacks tr[data-id='{first}']")
        await cb.locator("button.claim").click()
        await expect(cb).to_have_attribute("data-state", "claimed")
        await cb.locator("select[name=outcome]").select_option("no_answer")
        await cb.locator("button.done").click()
        await expect(cb).to_have_count(0)
        await expect(page.locator(f"#callbacks tr[data-id='{second}']")).to_have_attribute("data-state", "open")
        with ctx.sessions() as s:
            done = s.get(callbacks.Callback, first)
            assert done is not None and (done.claimed_by, done.outcome) == (op.id, "no_answer")
        for p_ in (page, tab):
            assert await p_.evaluate("window.__pwned") is None
