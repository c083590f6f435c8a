"""/api/v1/campaigns through the real app (both databases): roles, validation, state changes, CSV in and out,
follow-up tasks and the do-not-call list."""

from __future__ import annotations

import csv
import io

from api_support import bearer_headers, make_user
from campaign_support import at, make_case
from sqlalchemy import select

from api.app import create_app
from campaigns.models import Campaign, CampaignTarget, FollowUp
from config.db import transaction

API = "/api/v1/campaigns"
SEPT = {"source": "cases", "since": "2026-09-01T00:00:00+08:00", "until": "2026-10-01T00:00:00+08:00"}


async def _client(aiohttp_client, ctx, role: str = "campaign"):  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, role)
    return client, await bearer_headers(client, user.username, password)


def _cases(ctx) -> None:  # type: ignore[no-untyped-def]
    with transaction(ctx.sessions) as s:
        make_case(s, "20260901-0001", "13800138001")
        secret = make_case(s, "20260901-0002", "13800138002")
        secret.confidential, secret.no_call, secret.complainant_name = True, True, "张三"
        make_case(s, "20260901-0003", None)
        make_case(s, "20260901-0004", "13800138004", reached=at("2026-08-01 10:00"))  # outside the range


def _fields(body: dict) -> list[str]:  # type: ignore[type-arg]
    assert body["error"]["code"] == "validation_failed", body
    return [f["field"] for f in body["error"]["details"]["fields"]]


async def test_roles(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    assert (await client.get(API)).status == 401
    for role, status in (("operator", 403), ("unit_handler", 403), ("admin", 403), ("campaign", 200), ("supervisor", 200)):
        user, password = make_user(ctx.sessions, role)
        r = await client.get(API, headers=await bearer_headers(client, user.username, password))
        assert r.status == status, role


async def test_create_validation_names_the_field(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client, h = await _client(aiohttp_client, ctx)
    bad = [
        ({"name": "A", "selection": SEPT, "windows": ["12:00-09:00"]}, ["windows"]),
        ({"name": "A", "selection": SEPT, "windows": ["9 to 12"]}, ["windows"]),
        ({"name": "A", "selection": {**SEPT, "until": "2026-08-01T00:00:00+08:00"}}, ["selection.until"]),
        ({"name": "A", "selection": {**SEPT, "since": "2026-09-01T00:00:00"}}, ["selection.since"]),
        ({"name": "A", "selection": {"source": "cases"}}, ["selection"]),
        ({"name": "A", "selection": SEPT, "timezone": "Mars/Olympus"}, ["timezone"]),
        ({"name": "A", "selection": SEPT, "recurrence": "every monday"}, ["recurrence"]),
        ({"name": "A", "selection": SEPT, "concurrency": "4"}, ["concurrency"]),
        ({"name": "A", "selection": SEPT, "concurrency": 0}, ["concurrency"]),
        ({"name": "", "selection": SEPT}, ["name"]),
        ({"name": "A", "selection": SEPT, "owner": "me"}, ["owner"]),
        ({"name": "A", "selection": {**SEPT, "statuses": ["draft"]}}, ["selection.statuses.0"]),
        ({"name": "A", "selection": SEPT, "caller_id": "<script>"}, ["caller_id"]),
    ]
    for body, fields in bad:
        r = await client.post(API, json=body, headers=h)
        assert r.status == 422, (body, await r.text())
        assert _fields(await r.json()) == fields, body
    assert (await client.post(API, data="name=A", headers=h)).status == 415
    with ctx.sessions() as s:
        assert s.scalars(select(Campaign)).all() == [], "nothing is created by a refused request"


async def test_lifecycle_preview_progress_export(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    _cases(ctx)
    client, h = await _client(aiohttp_client, ctx)
    r = await client.post(API, json={"name": "九月回访", "selection": SEPT, "concurrency": 2, "retry_minutes": 5}, headers=h)
    assert r.status == 201, await r.text()
    c = await r.json()
    assert (c["state"], c["concurrency"], c["retry_minutes"], c["windows"]) == ("draft", 2, 5, ["09:00-12:00", "14:30-20:00"])
    assert c["preview"] == {"targets": 1, "dropped": 2,
                            "dropped_by_reason": {"confidential_no_calls": 1, "no_phone": 1}}
    r = await client.post(API, json={"name": "九月回访", "selection": SEPT}, headers=h)
    assert r.status == 409
    cid = c["id"]
    r = await client.get(f"{API}/{cid}/preview", headers=h)
    items = {t["case_number"]: t for t in (await r.json())["items"]}
    assert items["20260901-0001"]["phone"] == "+8613800138001"
    assert items["20260901-0002"]["phone"] == "+86*******8002", "no-call reporter's number masked for campaign staff"
    assert (await client.get(f"{API}/{cid}", headers=h)).status == 200
    assert (await client.get(f"{API}/999999", headers=h)).status == 404
    assert (await client.get(f"{API}/abc", headers=h)).status == 404
    assert (await client.post(f"{API}/1%3B%20DROP/start", headers=h)).status == 404
    assert (await client.post(f"{API}/{cid}/resume", headers=h)).status == 409
    for action, state in (("start", "scheduled"), ("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
        r = await client.post(f"{API}/{cid}/{action}", headers=h)
        assert r.status == 200 and (await r.json())["state"] == state, (action, await r.text())
    r = await client.post(f"{API}/{cid}/start", headers=h)
    assert r.status == 409 and "final" in (await r.json())["error"]["message"]
    r = await client.get(f"{API}/{cid}/progress", headers=h)
    p = await r.json()
    assert (p["pending"], p["dropped"], p["contact_rate"], p["ratings"]) == (1, 2, None, {"1": 0, "2": 0, "3": 0, "none": 0})
    # results: one row per target, no names or case text, the no-call number masked
    with transaction(ctx.sessions) as s:
        t = s.scalars(select(CampaignTarget).where(CampaignTarget.case_number == "20260901-0001")).one()
        t.state, t.outcome, t.rating, t.attempts = "done", "answered", 1, 1
    r = await client.get(f"{API}/{cid}/results.csv", headers=h)
    assert r.status == 200 and r.content_type == "text/csv"
    text = await r.text()
    assert "张三" not in text and "test" not in text
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    by = {row["case_number"]: row for row in rows}
    assert by["20260901-0001"]["rating"] == "1" and by["20260901-0001"]["outcome"] == "answered"
    assert by["20260901-0001"]["choice"] == ""
    # key 0 instead of a rating: the callee talked to an operator (transferred)
    with transaction(ctx.sessions) as s:
        t = s.scalars(select(CampaignTarget).where(CampaignTarget.case_number == "20260901-0001")).one()
        t.rating, t.choice = None, "operator"
    r = await client.get(f"{API}/{cid}/progress", headers=h)
    assert (await r.json())["transferred"] == 1
    r = await client.get(f"{API}/{cid}/results.csv", headers=h)
    row = {r["case_number"]: r for r in csv.DictReader(io.StringIO((await r.text()).lstrip("\ufeff")))}["20260901-0001"]
    assert (row["outcome"], row["rating"], row["choice"]) == ("answered", "", "operator")
    assert by["20260901-0002"]["phone"] == "+86*******8002"
    # a supervisor sees every number
    user, password = make_user(ctx.sessions, "supervisor")
    r = await client.get(f"{API}/{cid}/results.csv", headers=await bearer_headers(client, user.username, password))
    assert "+8613800138002" in await r.text()


async def test_recurring_campaign_shows_its_next_runs(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    """Weekly in the campaign's zone (UTC here), shown in the centre's (+08:00); not before start_at."""
    client, h = await _client(aiohttp_client, ctx)
    body = {"name": "每周回访", "selection": SEPT, "recurrence": "30 23 * * sun", "timezone": "UTC",
            "start_at": "2090-01-01T00:00:00+08:00", "caller_id": "12389", "days": "every_day"}
    r = await client.post(API, json=body, headers=h)
    assert r.status == 201, await r.text()
    c = await r.json()
    assert (c["recurrence"], c["caller_id"], c["days"]) == ("30 23 * * sun", "12389", "every_day")
    # the first Sunday from start_at is 2090-01-01: 23:30 UTC then is Monday 07:30 in the centre
    assert c["next_runs"] == ["2090-01-02T07:30:00+08:00", "2090-01-09T07:30:00+08:00", "2090-01-16T07:30:00+08:00"]
    assert c["scheduled_run"] is None, "no scheduler has taken it up"
    r = await client.post(API, json={"name": "一次", "selection": SEPT, "start_at": "2090-01-01T09:00:00+08:00"}, headers=h)
    assert (await r.json())["next_runs"] == [], "a campaign that does not recur has no runs to list"
    r = await client.post(f"{API}/{c['id']}/cancel", headers=h)
    assert (await r.json())["next_runs"] == []


async def test_start_without_targets_is_refused(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client, h = await _client(aiohttp_client, ctx)
    r = await client.post(API, json={"name": "empty", "selection": {"source": "csv"}}, headers=h)
    assert r.status == 201 and (await r.json())["preview"]["targets"] == 0
    r = await client.post(f"{API}/{(await r.json())['id']}/start", headers=h)
    assert r.status == 409 and "no targets" in (await r.json())["error"]["message"]


async def test_csv_upload_reports_bad_rows_keeps_good(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    _cases(ctx)
    client, h = await _client(aiohttp_client, ctx)
    r = await client.post(API, json={"name": "csv", "selection": {"source": "csv"}}, headers=h)
    cid = (await r.json())["id"]
    text = "case_number\n20260901-0001\nnonsense\n20260901-9999\n20260901-0004\n<script>alert(1)</script>\n"
    r = await client.post(f"{API}/{cid}/targets/csv", data=text.encode(), headers={**h, "Content-Type": "text/csv"})
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["added"] == 2 and [e["line"] for e in body["errors"]] == [3, 4, 6]
    r = await client.post(f"{API}/{cid}/targets/csv", data=text.encode(), headers={**h, "Content-Type": "text/csv"})
    assert (await r.json())["added"] == 0, "uploading the same file again adds nobody twice"
    r = await client.post(f"{API}/{cid}/targets/csv", json={"x": 1}, headers=h)
    assert r.status == 415
    r = await client.post(f"{API}/{cid}/targets/csv", data=b"\xff\xfe\x00", headers={**h, "Content-Type": "text/csv"})
    assert r.status == 400
    assert (await client.post(f"{API}/424242/targets/csv", data=b"x", headers={**h, "Content-Type": "text/csv"})).status == 404


async def test_follow_ups(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    _cases(ctx)
    client, h = await _client(aiohttp_client, ctx)
    r = await client.post(API, json={"name": "f", "selection": SEPT}, headers=h)
    cid = (await r.json())["id"]
    with transaction(ctx.sessions) as s:
        t = s.scalars(select(CampaignTarget).where(CampaignTarget.state == "pending")).one()
        f = FollowUp(campaign_id=cid, target_id=t.id, case_id=t.case_id, case_number=t.case_number, phone=t.phone,
                     reason="unreachable after 3 attempts: reach by SMS or letter")
        s.add(f)
        s.flush()
        fid = f.id
    r = await client.get(f"{API}/follow-ups?campaign={cid}", headers=h)
    assert [i["id"] for i in (await r.json())["items"]] == [fid]
    assert (await client.get(f"{API}/follow-ups?campaign=abc", headers=h)).status == 422
    r = await client.post(f"{API}/follow-ups/{fid}/done", headers=h)
    assert r.status == 200 and (await r.json())["done_by"]
    assert (await client.post(f"{API}/follow-ups/{fid}/done", headers=h)).status == 409
    assert (await client.post(f"{API}/follow-ups/987654/done", headers=h)).status == 404
    r = await client.get(f"{API}/follow-ups", headers=h)
    assert (await r.json())["items"] == []
    r = await client.get(f"{API}/follow-ups?open_only=false", headers=h)
    assert len((await r.json())["items"]) == 1


async def test_do_not_call(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client, h = await _client(aiohttp_client, ctx)
    r = await client.post(f"{API}/dnc", json={"phone": "138 0013 8000", "reason": "asked"}, headers=h)
    assert r.status == 201 and (await r.json())["phone"] == "+8613800138000"
    assert (await client.post(f"{API}/dnc", json={"phone": "+8613800138000"}, headers=h)).status == 200
    for phone in ("not a number", "12345", "'; DROP TABLE do_not_call; --"):
        r = await client.post(f"{API}/dnc", json={"phone": phone}, headers=h)
        assert r.status == 422 and _fields(await r.json()) == ["phone"], phone
    assert (await client.post(f"{API}/dnc", json={"phone": 13800138000}, headers=h)).status == 422
    r = await client.post(f"{API}/dnc/import", data="phone,reason\n13800138001,x\nbad\n\n13800138002\n".encode(),
                          headers={**h, "Content-Type": "text/csv"})
    assert r.status == 200 and (await r.json())["added"] == 2 and [e["line"] for e in (await r.json())["errors"]] == [3]
    r = await client.get(f"{API}/dnc", headers=h)
    assert {d["phone"] for d in (await r.json())["items"]} == {"+8613800138000", "+8613800138001", "+8613800138002"}
    assert (await client.delete(f"{API}/dnc/13800138000", headers=h)).status == 204
    assert (await client.delete(f"{API}/dnc/13800138000", headers=h)).status == 404
    assert (await client.delete(f"{API}/dnc/abc", headers=h)).status == 422
