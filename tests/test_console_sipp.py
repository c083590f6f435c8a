"""The operator's console with a real call: `hotline serve` (IVR + API in one process), a SIPp caller,
the operator's SIPp phone, the operator's page in headless Chromium.

The operator logs in and sets available on the console; a caller calls in office hours (rehearsal
clock) and the phone answers; the page pops the caller's number and the previous case from that
number; "new case from this call" opens the draft's review page in a new tab, prefilled with the
number and linked to the call; the page says when the call ended and keeps the caller shown. Once
the conversation is stored the case carries its recording. The service and SIPp helpers are
tests/test_operators_sipp.py's; waits are on selectors and log lines, never on sleeps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from pages_support import HOSTILE, browser_login, chromium, needs_chromium
from sqlalchemy import select
from test_operators_sipp import (
    CALLER,
    OPERATOR_PASSWORD,
    add_operator,
    api_url,
    caller_pcap,
    db,
    operator_pcap,
    rtp_range,
    start_caller,
    start_phone,
    start_service,
    state_of,
    wait_log,
)

from cases.models import Case
from config.db import utcnow
from ivr_harness import ivr_prompts, ivr_service  # noqa: F401 (fixtures)
from sipp_support import free_udp_port, requires_pcap_play

CALL_TIMEOUT_MS = 90_000
"""Upper bounds for the page to show a call's events (the machine is shared and SIPp calls are slow)."""

pytestmark = [requires_pcap_play, pytest.mark.slow,
              needs_chromium]


async def test_console_pops_a_real_call_and_opens_a_case_from_it(ivr_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from playwright.async_api import expect

    svc = start_service(ivr_service, rtp_range(), tmp_path, parts=("ivr", "api"), wrap_up_seconds="5")
    port = free_udp_port()
    add_operator(svc, "opconsole", port)
    with db(svc).begin() as s:  # what this caller reported last month
        s.add(Case(number="20261105-0003", channel="phone", status="assigned", caller_number=CALLER,
                   content="小区路灯不亮" + HOSTILE, received_at=utcnow() - dt.timedelta(days=33)))
    base = api_url(svc)
    async with chromium() as browser:
        context = await browser.new_context()
        page = await browser_login(context, base, "opconsole", OPERATOR_PASSWORD)
        await page.goto(base + "/console")
        await expect(page.locator("#stream-status")).to_have_attribute("data-on", "1")
        await page.click("#set-available")
        await expect(page.locator("#presence-state")).to_have_attribute("data-state", "available")
        assert await asyncio.to_thread(state_of, svc, "opconsole") == "available"  # as the queue sees it

        phone = start_phone("op_answer", tmp_path, "op", port, pcap=operator_pcap(tmp_path), hold_ms=20_000)
        caller = start_caller(svc, "vm_leave_message", tmp_path, "caller", pcap=caller_pcap(tmp_path),
                              bye_wait_ms=90_000)
        # the screen pop: the caller's number and the previous case from it
        await expect(page.locator("#caller")).to_have_text(CALLER, timeout=CALL_TIMEOUT_MS)
        previous = page.locator("#previous tr[data-number='20261105-0003']")
        await expect(previous).to_have_count(1)
        assert "<script>" in await previous.inner_text()

        # a new case from this call, opened in another tab: prefilled and linked to the call
        async with context.expect_page() as opened:
            await page.click("#new-case")
        tab = await opened.value
        await tab.wait_for_selector("#case-call")
        call = next(c for c in await asyncio.to_thread(svc.calls) if c["direction"] == "in")
        assert await tab.get_attribute("#case-call", "data-call") == str(call["id"])
        assert await tab.locator("#case-caller").inner_text() == CALLER
        assert await tab.input_value("input[name=complainant_phone]") == CALLER
        number = await page.locator("#case-link").inner_text()

        # the operator's phone hangs up: the page says the call ended, the caller stays shown
        await expect(page.locator("#call")).to_have_attribute("data-kind", "ended", timeout=CALL_TIMEOUT_MS)
        assert await page.locator("#caller").inner_text() == CALLER
        kinds = await page.eval_on_selector_all("#call-log li", "ls => ls.map(l => l.dataset.kind)")
        assert kinds == ["ringing", "connected", "ended"], kinds
        for shown in (page, tab):
            assert await shown.evaluate("window.__pwned") is None

    results = [await asyncio.to_thread(caller.wait, 120), await asyncio.to_thread(phone.wait, 60)]
    assert all(r.ok for r in results), "\n".join(r.describe() for r in results) + svc.describe()
    row = await asyncio.to_thread(svc.wait_call_ended, call["sip_call_id"])
    assert row["disposition"] == "operator" and row["recording_id"] is not None, row
    await asyncio.to_thread(wait_log, svc, "conversation ended")  # logged once the recording is stored
    with db(svc)() as s:
        case = s.scalars(select(Case).where(Case.number == number)).one()
        assert (case.status, case.channel, case.caller_number) == ("draft", "phone", CALLER)
        assert (case.source_call_id, case.source_recording_id) == (row["id"], row["recording_id"])
