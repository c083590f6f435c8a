"""Seed data for the page tests: a voicemail draft with a real stored recording and timed words,
a repeat from the same number, an overdue case and one whose content is hostile markup."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cases import actions
from cases.drafts import create_voicemail_draft
from cases.models import Case
from config.context import Context
from config.db import transaction, utcnow
from recordings.store import store_recording
from transcription.models import Transcript

CLIP = Path(__file__).resolve().parent.parent.parent / "shared" / "speech" / "tts_cmn_complaint_8k.wav"
"""18.7 s of synthetic Mandarin: 您好，我要举报我们小区门口有人占道经营，地址是青原区滨江路十八号，电话…"""
CALLER = "13807961234"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">"\'&amp;'
WORDS = [  # (word, start, end, confidence): what Vosk hands back, timings within the clip
    ("您好", 0.3, 0.9, 0.98), ("我要", 1.1, 1.5, 0.95), ("举报", 1.5, 2.0, 0.91), ("我们", 2.0, 2.4, 0.88),
    ("小区", 2.4, 2.9, 0.52), ("门口", 2.9, 3.4, 0.97), ("有人", 3.5, 3.9, 0.93), ("占道", 3.9, 4.4, 0.41),
    ("经营", 4.4, 5.0, 0.9), ("地址", 5.6, 6.1, 0.96), ("是", 6.1, 6.3, 0.99), ("青原区", 6.3, 7.2, 0.35),
    ("滨江路", 7.2, 8.0, 0.77), ("十八号", 8.0, 8.8, 0.84), ("电话", 9.4, 9.9, 0.97),
    ("一三八零七九六一二三四", 9.9, 14.6, 0.66),
]
LOW = [w for w, _, _, c in WORDS if c < 0.6]


@dataclass(frozen=True)
class Seeded:
    draft_id: int
    recording_id: int
    repeat_id: int
    """A second draft from the same number: its review page suggests the first one."""
    overdue_id: int
    hostile_id: int


def voicemail_draft(ctx: Context, *, caller: str = CALLER, content: str | None = None) -> tuple[int, int]:
    """A stored recording of the clip, its transcript with timed words and its draft case: (case id, recording id)."""
    text = content or "".join(w for w, *_ in WORDS)
    with transaction(ctx.sessions) as s:
        rec = store_recording(s, ctx.settings.storage, CLIP, kind="voicemail", caller=caller)
        words = [{"word": w, "start": a, "end": b, "conf": c} for w, a, b, c in WORDS]
        tr = Transcript(recording_id=rec.id, text=text, words=words, confidence=0.8, model="test", duration=rec.duration,
                        elapsed=1.0)
        s.add(tr)
        s.flush()
        draft = create_voicemail_draft(
            s, tz=ctx.settings.calendar.tz, content=text, caller_number=caller, received_at=rec.received_at,
            phones=["13807961234"], address="青原区滨江路十八号", low_confidence=[w for w in words if w["conf"] < 0.6],
            recording_id=rec.id, transcript_id=tr.id, job_id=None,
        )
        return draft.case.id, rec.id


def seed(ctx: Context) -> Seeded:
    draft_id, rec_id = voicemail_draft(ctx)
    repeat_id, _ = voicemail_draft(ctx, content="我再反映一次，小区门口占道经营还是没人管")
    with transaction(ctx.sessions) as s:
        late = actions.create_case(s, ctx=ctx, actor="operator", channel="phone", content="派出所不立案",
                                   received_at=utcnow() - dt.timedelta(days=40), caller_number="13900000001")
        hostile = actions.create_case(s, ctx=ctx, actor="operator", channel="web", content=HOSTILE,
                                      caller_number="13900000002", complainant_name=HOSTILE)
        return Seeded(draft_id, rec_id, repeat_id, late.id, hostile.id)


def case_row(ctx: Context, case_id: int) -> Case:
    with ctx.sessions() as s:
        case = s.get(Case, case_id)
        assert case is not None
        s.expunge(case)
        return case


UNIT = "branch_east"
"""The unit cases are dispatched to in these tests (api_support.make_user gives unit handlers this one)."""
PATH = ("accepted", "assigned", "in_progress", "replied", "return_visit", "closed")


def case_in(ctx: Context, status: str, *, handling_form: str = "general", content: str = "派出所民警态度恶劣，推诿不办",
            **fields: object) -> int:
    """A phone case driven through cases.actions to ``status`` along the general path (draft → … → closed);
    a case in a direct handling form stops at accepted. Returns its id."""
    with transaction(ctx.sessions) as s:
        case = actions.create_case(s, ctx=ctx, actor="seed", channel="phone", content=content,
                                   caller_number="13900001111", complainant_name="王五", complainant_phone="13900001111",
                                   address="城东区建设路88号3栋", **fields)
        steps = {
            "accepted": lambda: actions.accept(s, case, ctx=ctx, actor="seed", expected_version=None,
                                               category="public_order", handling_form=handling_form),
            "assigned": lambda: actions.dispatch(s, case, ctx=ctx, actor="seed", expected_version=None, unit=UNIT),
            "in_progress": lambda: actions.sign(s, case, ctx=ctx, actor="seed", expected_version=None),
            "replied": lambda: (actions.report_result(s, case, ctx=ctx, actor="seed", expected_version=None,
                                                      result="已核实并整改"),
                                actions.reply(s, case, ctx=ctx, actor="seed", expected_version=None, reply="已答复")),
            "return_visit": lambda: actions.start_return_visit(s, case, ctx=ctx, actor="seed", expected_version=None),
            "closed": lambda: actions.close(s, case, ctx=ctx, actor="seed", expected_version=None),
        }
        if status != "draft":
            for step in PATH[: PATH.index(status) + 1]:
                steps[step]()
        s.flush()
        return case.id


async def browser_login(browser: Any, base: str, username: str, password: str) -> Any:
    """A new Playwright page (of a browser or a browser context) logged in through the login form."""
    page = await browser.new_page()
    await page.goto(base + "/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#whoami")
    return page


CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium, driven by Playwright (no browser download: closed networks have none)."""
needs_chromium = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM}")


@contextlib.asynccontextmanager
async def chromium(*args: str) -> AsyncIterator[Any]:
    """A headless Chromium, closed however the test ends."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=list(args))
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def chromium_app(aiohttp_server: Any, ctx: Context, *args: str) -> AsyncIterator[tuple[Any, str]]:
    """The real app on a test server and a Chromium to browse it: (browser, base URL without the slash)."""
    from api.app import create_app

    server = await aiohttp_server(create_app(ctx))
    async with chromium(*args) as browser:
        yield browser, str(server.make_url("/")).rstrip("/")
