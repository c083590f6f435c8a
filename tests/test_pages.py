"""The staff pages over real HTTP on the real app (SQLite and PostgreSQL): what they show, the forms
that act through cases.actions, role checks, CSRF, bad input and hostile text.

The same flows in a real browser are in tests/test_pages_browser.py."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from pathlib import Path
from typing import Any

import pytest
from api_support import login_session, make_user
from pages_support import CALLER, HOSTILE, LOW, WORDS, case_row, seed, voicemail_draft
from sqlalchemy import select

from api.app import create_app
from api.pages import MESSAGES, TEMPLATES
from api.pages.charts import bar_chart, nice_top
from cases.actions import CHANNELS
from cases.lifecycle import ACTIONS, STATUSES
from cases.models import Case, CaseEvent
from recordings.models import RecordingAccess


async def _client(aiohttp_client: Any, ctx: Any, role: str = "operator") -> tuple[Any, str, Any]:
    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, role, display_name=f"{role} 王")
    csrf = await login_session(client, user.username, password)
    return client, csrf, user


def _events(ctx: Any, case_id: int) -> list[str]:
    with ctx.sessions() as s:
        return list(s.scalars(select(CaseEvent.action).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)))


# --- pure parts ----------------------------------------------------------------------------


def test_chart_geometry_scales_to_a_round_top() -> None:
    assert [nice_top(v) for v in (0, 1, 3, 7, 10, 11, 120, 501)] == [1, 1, 5, 10, 10, 20, 200, 1000]
    chart = bar_chart([("a", 5), ("b", 10), ("c", 0), ("d", -3)], width=440, height=230)
    assert chart.top == 10
    a, b, c, d = chart.bars
    assert b.height == chart.plot_bottom - chart.plot_top and b.y == chart.plot_top
    assert a.height == pytest.approx(b.height / 2)
    assert c.height == 0 and d.height == 0 and d.value == -3
    assert a.x < b.x < c.x < d.x and all(bar.width == a.width for bar in chart.bars)
    assert chart.ticks[0] == (chart.plot_bottom, 0) and chart.ticks[-1] == (chart.plot_top, 10)
    assert bar_chart([]).bars == [] and bar_chart([]).top == 1


def test_every_page_text_exists_in_both_languages() -> None:
    used = set()
    for path in Path(TEMPLATES).glob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_.]+[a-z_])["']""", path.read_text(encoding="utf-8")))
    used |= {f"status.{s}" for s in STATUSES} | {f"channel.{c}" for c in CHANNELS} | {f"action.{a}" for a in ACTIONS}
    for lang in ("zh", "en"):
        missing = sorted(k for k in used if k not in MESSAGES[lang])
        assert not missing, f"{lang}: {missing}"


# --- reading -------------------------------------------------------------------------------


async def test_queue_colours_deadlines_and_filters(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    data = seed(ctx)
    client, _, _ = await _client(aiohttp_client, ctx)
    numbers = {i: case_row(ctx, i).number for i in (data.draft_id, data.overdue_id, data.hostile_id)}
    r = await client.get("/cases")
    assert r.status == 200
    html = await r.text()
    assert re.search(rf'class="dl-overdue" data-number="{numbers[data.overdue_id]}" data-deadline="overdue"', html)
    assert re.search(rf'class="dl-(ok|near)" data-number="{numbers[data.hostile_id]}"', html)
    assert re.search(rf'class="dl-none" data-number="{numbers[data.draft_id]}"', html)  # voicemail drafts: no sign clock
    assert f'href="/cases/{data.draft_id}/review"' in html and f'href="/cases/{data.overdue_id}/review"' in html
    assert "<script>window.__pwned" not in html and "&lt;script&gt;window.__pwned" in html

    r = await client.get("/cases", params={"deadline": "overdue"})
    html = await r.text()
    assert numbers[data.overdue_id] in html and numbers[data.draft_id] not in html
    r = await client.get("/cases", params={"status": "draft", "channel": "voicemail"})
    html = await r.text()
    assert numbers[data.draft_id] in html and numbers[data.overdue_id] not in html
    r = await client.get("/cases", params={"status": "closed"})
    assert "没有符合条件的案件" in await r.text()

    for bad in ({"status": "<script>x</script>"}, {"before": "-1"}, {"channel": "fax"}, {"key": "yes"},
                {"status": ["draft", "open"]}, {"category": "x" * 81}, {"bogus": "1"}):
        r = await client.get("/cases", params=bad)
        assert r.status == 400, bad
        html = await r.text()
        assert "筛选条件有误" in html and "<script>x</script>" not in html


async def test_queue_links_its_csv_export_for_supervisors(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    seed(ctx)
    client, _, _ = await _client(aiohttp_client, ctx, "supervisor")

    async def queue_and_export(params: dict[str, str]) -> tuple[list[str], list[str]]:
        html = await (await client.get("/cases", params=params)).text()
        m = re.search(r'<a id="export-csv" href="([^"]+)"', html)
        assert m, params
        r = await client.get(m.group(1).replace("&amp;", "&"))  # the session cookie is enough for a GET
        assert r.status == 200 and r.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO((await r.text()).lstrip("\ufeff"), newline="")))
        return sorted(re.findall(r'data-number="([^"]+)"', html)), sorted(row["number"] for row in rows)

    for params in ({}, {"status": "draft", "channel": "voicemail"}, {"status": "all", "deadline": "overdue"},
                   {"status": "closed"}, {"status": "all", "channel": "web", "key": ""}):
        shown, exported = await queue_and_export(params)
        assert shown == exported, params
    assert len((await queue_and_export({"status": "draft", "channel": "voicemail"}))[1]) == 2
    html = await (await client.get("/cases", params={"deadline": "near"})).text()
    assert 'id="export-csv"' not in html and 'id="export-csv-none"' in html, "no export of more than the page shows"
    html = await (await client.get("/cases", params={"lang": "en"})).text()
    assert ">Export CSV</a>" in html
    for role in ("operator", "unit_handler"):
        other, _, _ = await _client(aiohttp_client, ctx, role)
        html = await (await other.get("/cases")).text()
        assert "export.csv" not in html and "export-csv" not in html, role
        assert (await other.get("/api/v1/cases/export.csv")).status == 403, role


async def test_queue_pages_by_id(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    from api.pages import case_pages

    data = seed(ctx)
    client, _, _ = await _client(aiohttp_client, ctx)
    old, case_pages.PAGE_SIZE = case_pages.PAGE_SIZE, 2
    try:
        r = await client.get("/cases", params={"status": "all"})
        html = await r.text()
        m = re.search(r'id="next-page" href="([^"]+)"', html)
        assert m, html
        assert html.count("data-number=") == 2
        r = await client.get(m.group(1).replace("&amp;", "&"))
        second = await r.text()
        assert second.count("data-number=") == 2
        assert case_row(ctx, data.draft_id).number in second  # the oldest two
    finally:
        case_pages.PAGE_SIZE = old


async def test_review_page_prefills_and_marks_low_confidence_words(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    data = seed(ctx)
    client, _, _ = await _client(aiohttp_client, ctx)
    r = await client.get(f"/cases/{data.repeat_id}/review")
    assert r.status == 200
    html = await r.text()
    spans = re.findall(r'<span class="w( low)?" data-start="([0-9.]+)" data-end="([0-9.]+)"[^>]*>([^<]+)</span>', html)
    assert [(w, float(a), float(b)) for _, a, b, w in spans] == [(w, a, b) for w, a, b, _ in WORDS]
    assert [w for low, _, _, w in spans if low] == LOW
    assert f'src="/api/v1/recordings/' in html and 'preload="metadata"' in html
    assert 'name="complainant_phone" value="13807961234"' in html
    assert 'name="address" value="青原区滨江路十八号"' in html
    assert "我再反映一次" in html
    # the first draft, same number, is suggested for merging
    first = case_row(ctx, data.draft_id)
    assert f'data-number="{first.number}"' in html and f'name="into" value="{first.number}"' in html
    assert "同一号码" in html
    r = await client.get(f"/cases/{data.repeat_id}/review", params={"lang": "en"})
    assert "Possible duplicates" in await r.text()


async def test_unknown_cases_are_404_pages(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client, csrf, _ = await _client(aiohttp_client, ctx)
    for path in ("/cases/999", "/cases/999/review", "/cases/0", f"/cases/{2**31}", "/cases/99999999999999999999"):
        r = await client.get(path)
        assert r.status == 404, path
        assert "没有这个案件" in await r.text()
    for path in ("/cases/abc", "/cases/%EF%BC%91", "/cases/1e3/review", "/recordings/abc"):
        r = await client.get(path)
        assert r.status in (403, 404), path  # /recordings/… is for supervisors: 403 before looking
    r = await client.post("/cases/999/accept", data={"csrf_token": csrf, "version": "1"})
    assert r.status == 404


async def test_detail_shows_timeline_personal_data_and_escapes(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    data = seed(ctx)
    client, _, _ = await _client(aiohttp_client, ctx, "supervisor")
    r = await client.get(f"/cases/{data.hostile_id}")
    assert r.status == 200
    html = await r.text()
    assert "<script>" not in html.split("</head>")[1].replace('<script src="/static/review.js"', "")
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    assert 'data-action="created"' in html and 'id="form-mark_key_supervision"' in html
    assert re.search(r'data-deadline="sign" data-state="(ok|near)"', html)


# --- acting --------------------------------------------------------------------------------


def _accept_form(csrf: str, version: int | str, **kw: str) -> dict[str, str]:
    return {"csrf_token": csrf, "version": str(version), "category": "public_order", "handling_form": "general",
            "complexity": "general", "complainant_name": "张三", "complainant_phone": CALLER, "complainant_unit": "",
            "address": "青原区滨江路18号", "content": "小区门口有人占道经营", "confidential": "1", **kw}


async def test_accept_registers_the_draft(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    draft_id, _ = voicemail_draft(ctx)
    client, csrf, user = await _client(aiohttp_client, ctx)
    case = case_row(ctx, draft_id)
    r = await client.post(f"/cases/{draft_id}/accept", data=_accept_form(csrf, case.version), allow_redirects=False)
    assert r.status == 303, await r.text()
    assert r.headers["Location"] == f"/cases/{draft_id}"
    case = case_row(ctx, draft_id)
    assert (case.status, case.category, case.complainant_name, case.address, case.confidential, case.anonymous,
            case.complainant_unit, case.content) == ("accepted", "public_order", "张三", "青原区滨江路18号", True,
                                                     False, None, "小区门口有人占道经营")
    assert _events(ctx, draft_id) == ["created_from_voicemail", "accept"]
    with ctx.sessions() as s:
        assert s.scalars(select(CaseEvent.actor).where(CaseEvent.action == "accept")).one() == user.username
    r = await client.get(f"/cases/{draft_id}")
    html = await r.text()
    assert 'data-status="accepted"' in html and 'data-action="accept"' in html
    assert 'data-deadline="reply"' in html and "张三" in html  # operators see a confidential reporter
    # accepting again: the status no longer allows it
    r = await client.post(f"/cases/{draft_id}/accept", data=_accept_form(csrf, case.version))
    assert r.status == 409
    assert "不允许此操作" in await r.text()


async def test_accept_refuses_bad_and_stale_forms_keeping_what_was_typed(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    draft_id, _ = voicemail_draft(ctx)
    client, csrf, _ = await _client(aiohttp_client, ctx)
    v = case_row(ctx, draft_id).version

    r = await client.post(f"/cases/{draft_id}/accept", data=_accept_form(csrf, v, category="<b>nope</b>",
                                                                          content=HOSTILE))
    assert r.status == 422
    html = await r.text()
    assert "请修正标出的内容" in html and "is not in the acceptance scope" in html
    assert "&lt;script&gt;window.__pwned" in html and "<script>window.__pwned" not in html  # typed text kept, escaped
    assert "<b>nope</b>" not in html

    r = await client.post(f"/cases/{draft_id}/accept", data=_accept_form(csrf, v, content="   "))
    assert r.status == 422 and "required" in await r.text()
    r = await client.post(f"/cases/{draft_id}/accept", data=_accept_form(csrf, v, complainant_name="张" * 121))
    assert r.status == 422 and "at most 120 characters" in await r.text()
    r = await client.post(f"/cases/{draft_id}/accept", data=_accept_form(csrf, v + 1))
    assert r.status == 409
    html = await r.text()
    assert "已被他人修改" in html and "小区门口有人占道经营" in html
    for version in ("", "x", "1e3", "-1", "9" * 30):
        r = await client.post(f"/cases/{draft_id}/accept", data=_accept_form(csrf, version))
        assert r.status == 400, version
    r = await client.post(f"/cases/{draft_id}/accept", data={k: v2 for k, v2 in _accept_form("wrong", v).items()})
    assert r.status == 403 and "表单已过期" in await r.text()
    r = await client.post(f"/cases/{draft_id}/accept", data={k: v2 for k, v2 in _accept_form(csrf, v).items()
                                                             if k != "csrf_token"})
    assert r.status == 403
    assert case_row(ctx, draft_id).status == "draft"
    assert _events(ctx, draft_id) == ["created_from_voicemail"]


async def test_merge_and_discard_forms(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    data = seed(ctx)
    client, csrf, _ = await _client(aiohttp_client, ctx)
    repeat = case_row(ctx, data.repeat_id)
    draft = case_row(ctx, data.draft_id)
    # the case to merge into is named by its number (an id is not one), and a refusal comes back to the review page
    for into, message in (("20000101-9999", "no such case"), (str(data.draft_id), "no such case"),
                          ("abc", "no such case"), (repeat.number, "itself")):
        r = await client.post(f"/cases/{data.repeat_id}/merge",
                              data={"csrf_token": csrf, "version": str(repeat.version), "into": into, "back": "review"})
        assert r.status == 422, into
        html = await r.text()
        assert message in html and 'id="accept-form"' in html, into
    r = await client.post(f"/cases/{data.repeat_id}/merge", allow_redirects=False,
                          data={"csrf_token": csrf, "version": str(repeat.version), "into": draft.number,
                                "back": "review"})
    assert r.status == 303
    merged = case_row(ctx, data.repeat_id)
    assert (merged.status, merged.merged_into_id) == ("merged", data.draft_id)
    assert _events(ctx, data.draft_id)[-1] == "merged_in"
    r = await client.get(f"/cases/{data.repeat_id}")
    assert f'id="merged-into">' in await r.text()
    r = await client.get(f"/cases/{data.draft_id}")
    assert 'data-action="merged_in"' in await r.text() and 'data-action="merge"' in await r.text()

    hostile = case_row(ctx, data.hostile_id)
    r = await client.post(f"/cases/{data.hostile_id}/discard", data={"csrf_token": csrf, "version": str(hostile.version),
                                                                   "reason": " "})
    assert r.status == 422
    r = await client.post(f"/cases/{data.hostile_id}/discard", allow_redirects=False,
                          data={"csrf_token": csrf, "version": str(hostile.version), "reason": "测试来电 <i>"})
    assert r.status == 303
    assert case_row(ctx, data.hostile_id).status == "discarded"
    r = await client.get(f"/cases/{data.hostile_id}")
    assert "测试来电 &lt;i&gt;" in await r.text()


async def test_key_supervision_form_is_for_supervisors(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    data = seed(ctx)
    client, csrf, _ = await _client(aiohttp_client, ctx, "supervisor")
    v = case_row(ctx, data.overdue_id).version
    r = await client.post(f"/cases/{data.overdue_id}/key-supervision", allow_redirects=False,
                          data={"csrf_token": csrf, "version": str(v), "mark": "1"})
    assert r.status == 303
    assert case_row(ctx, data.overdue_id).key_supervision
    r = await client.post(f"/cases/{data.overdue_id}/key-supervision",
                          data={"csrf_token": csrf, "version": str(v + 1), "mark": "1"})
    assert r.status == 422 and "already marked" in await r.text()
    r = await client.get("/supervision/key-cases")
    assert case_row(ctx, data.overdue_id).number in await r.text()
    op, op_csrf, _ = await _client(aiohttp_client, ctx, "operator")
    r = await op.post(f"/cases/{data.overdue_id}/key-supervision", data={"csrf_token": op_csrf, "version": "1"})
    assert r.status == 403


# --- roles ---------------------------------------------------------------------------------


SUPERVISOR_PAGES = ("/supervision/overdue", "/supervision/key-cases", "/recordings", "/recordings/1", "/stats")


async def test_pages_check_roles(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    r = await client.get("/cases", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login?next=%2Fcases"
    op, _, _ = await _client(aiohttp_client, ctx, "operator")
    for path in SUPERVISOR_PAGES:
        r = await op.get(path)
        assert r.status == 403, path
        assert "无权访问" in await r.text()
    for role in ("campaign", "admin"):
        other, _, _ = await _client(aiohttp_client, ctx, role)
        for path in ("/cases", "/cases/1", "/cases/1/review", *SUPERVISOR_PAGES):
            assert (await other.get(path)).status == 403, (role, path)
        home = await (await other.get("/")).text()
        assert 'href="/cases"' not in home
        assert ('href="/campaigns"' in home) == (role == "campaign")
    # unit handlers have a queue and case pages (tests/test_case_forms.py), not the centre's review or supervision
    handler, _, _ = await _client(aiohttp_client, ctx, "unit_handler")
    for path in ("/cases/1/review", *SUPERVISOR_PAGES):
        assert (await handler.get(path)).status == 403, path
    assert 'href="/cases"' in await (await handler.get("/")).text()


# --- supervisors ---------------------------------------------------------------------------


async def test_supervisor_pages(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    data = seed(ctx)
    client, _, user = await _client(aiohttp_client, ctx, "supervisor")
    overdue_number = case_row(ctx, data.overdue_id).number

    r = await client.get("/supervision/overdue")
    html = await r.text()
    assert r.status == 200 and f'data-number="{overdue_number}"' in html and "dl-overdue" in html
    r = await client.get("/supervision/overdue", params={"near": "2"})
    assert r.status == 400

    r = await client.get(f"/api/v1/recordings/{data.recording_id}/audio", headers={"Range": "bytes=0-99"})
    assert r.status == 206
    r = await client.get("/recordings", params={"caller": CALLER})
    html = await r.text()
    assert f'data-recording="{data.recording_id}"' in html
    for bad in ({"caller": "<script>"}, {"from": "2026-13-01"}, {"limit": "0"}):
        r = await client.get("/recordings", params=bad)
        assert r.status == 400, bad
        assert "<script>" not in (await r.text()).split("</head>")[1]
    r = await client.get(f"/recordings/{data.recording_id}", params={"lang": "en"})
    html = await r.text()
    assert "Access log" in html and "bytes=0-99" in html and user.username in html
    assert (await client.get("/recordings/999")).status == 404
    assert (await client.get(f"/recordings/{2**40}")).status == 404

    r = await client.get("/stats")
    html = await r.text()
    assert r.status == 200
    bars = re.findall(r'<rect class="bar"[^>]*data-label="([0-9-]+)" data-value="([0-9]+)"', html)
    assert len(bars) == 30
    today = dt.datetime.now(ctx.settings.calendar.tz).date().isoformat()
    assert dict(bars)[today] == "3"  # the draft, the repeat and the hostile case; the 40-day-old one is outside
    r = await client.get("/stats", params={"from": "2025-01-01", "to": "2026-12-31", "bucket": "month", "by": "channel"})
    assert r.status == 200 and len(re.findall(r'<rect class="bar"', await r.text())) == 24
    for bad in ({"bucket": "year"}, {"from": "2026-02-01", "to": "2026-01-01"}, {"by": "<x>"},
                {"from": "1900-01-01", "to": "2026-01-01"}, {"from": "yesterday"}):
        r = await client.get("/stats", params=bad)
        assert r.status == 400, bad
    with ctx.sessions() as s:
        assert s.scalar(select(RecordingAccess.range).where(RecordingAccess.recording_id == data.recording_id)) == "bytes=0-99"
        assert s.get(Case, data.draft_id) is not None


async def test_static_assets_are_public_and_confined(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    r = await client.get("/static/review.js")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
    assert "currentTime" in await r.text()
    r = await client.get("/static/pages.css")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/css")
    for bad in ("/static/nope.js", "/static/__init__.py", "/static/..%2Fpages%2F__init__.py",
                "/static/REVIEW.JS", "/static/review.js%00.css"):
        assert (await client.get(bad)).status == 404, bad
