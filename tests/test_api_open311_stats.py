"""Open311 GeoReport v2, /api/v1/stats on a known dataset, the deadline scan inside `hotline serve`,
and a bounded schemathesis run over the whole OpenAPI document (no 500s)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from api_support import bearer_headers, make_user
from sqlalchemy import select

from api.app import create_app
from cases import actions as A
from cases.models import Case, CaseEvent
from config.db import transaction

SH = ZoneInfo("Asia/Shanghai")
KEY = "portal-key-0123456789abcdefghij"
PERSONAL = ("张三丰", "13812341234", "建设路88号", "zs@example.com", "城东区建设路")


def _at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=SH)


def _case(s: Any, ctx: Any, when: dt.datetime, **kw: Any) -> Case:
    fields = {"channel": "phone", "content": "民警办事拖延，三次去开证明都没办", "complainant_name": "张三丰",
              "complainant_phone": "13812341234", "address": "城东区建设路88号", **kw}
    return A.create_case(s, ctx=ctx, actor="op", received_at=when, **fields)


# --- Open311 ---------------------------------------------------------------------------


async def test_open311_services_and_public_requests(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    r = await client.get("/open311/v2/services.json")
    assert r.status == 200
    services = await r.json()
    assert [s["service_code"] for s in services] == [c.code for c in ctx.settings.cases.categories]
    assert services[0]["metadata"] is False and services[0]["type"] == "realtime"
    assert (await client.get("/open311/v2/services.json?jurisdiction_id=other")).status == 404

    now = ctx.now()
    with transaction(ctx.sessions) as s:
        plain = _case(s, ctx, now - dt.timedelta(hours=3))
        A.accept(s, plain, ctx=ctx, actor="op", expected_version=None, category="attitude", handling_form="general")
        secret = _case(s, ctx, now - dt.timedelta(hours=2), confidential=True, content="我是张三丰，住城东区建设路")
        A.accept(s, secret, ctx=ctx, actor="op", expected_version=None, category="misconduct", handling_form="general")
        draft = _case(s, ctx, now - dt.timedelta(hours=1), content="张三丰 13812341234 留言")
        gone = _case(s, ctx, now - dt.timedelta(minutes=30), content="测试")
        A.discard(s, gone, ctx=ctx, actor="op", expected_version=None, reason="测试电话")
        numbers = plain.number, secret.number, draft.number, gone.number
    r = await client.get("/open311/v2/requests.json")
    assert r.status == 200
    text = await r.text()
    body = await r.json()
    assert [x["service_request_id"] for x in body] == [numbers[2], numbers[1], numbers[0]], "newest first, no discarded"
    for word in PERSONAL:
        assert word not in text, word
    by_id = {x["service_request_id"]: x for x in body}
    assert by_id[numbers[0]]["description"] == "民警办事拖延，三次去开证明都没办"
    assert by_id[numbers[1]]["description"] is None, "a confidential reporter's words stay inside"
    assert by_id[numbers[2]]["description"] is None and by_id[numbers[2]]["status"] == "open", "an unreviewed draft"
    assert all(x["address"] is None and x["lat"] is None for x in body)
    assert by_id[numbers[0]]["service_code"] == "attitude" and by_id[numbers[0]]["expected_datetime"]

    r = await client.get(f"/open311/v2/requests/{numbers[1]}.json")
    assert r.status == 200 and (await r.json())[0]["service_request_id"] == numbers[1]
    for missing in (numbers[3], "20991231-0001"):
        r = await client.get(f"/open311/v2/requests/{missing}.json")
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    r = await client.get(f"/open311/v2/requests.json?service_request_id={numbers[0]},{numbers[3]}")
    assert [x["service_request_id"] for x in await r.json()] == [numbers[0]]
    r = await client.get("/open311/v2/requests.json?status=closed")
    assert await r.json() == []
    for bad in ("status=done", "start_date=yesterday", "service_request_id=" + ",".join(["1-1"] * 51), "x=1"):
        r = await client.get("/open311/v2/requests.json?" + bad)
        assert r.status == 422, bad


async def test_open311_post_needs_the_key_and_creates_a_web_draft(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    ctx.settings.open311.api_keys = {"portal": KEY}
    client = await aiohttp_client(create_app(ctx))
    form = {"service_code": "traffic", "description": "路口红绿灯坏了<script>", "first_name": "三丰", "last_name": "张",
            "phone": "13812341234", "address_string": "城东区建设路88号", "email": "zs@example.com", "lat": "30.5"}
    r = await client.post("/open311/v2/requests.json", data=form)
    assert r.status == 401 and (await r.json())["error"]["code"] == "unauthenticated"
    r = await client.post("/open311/v2/requests.json", data={**form, "api_key": "x" * 30})
    assert r.status == 403
    r = await client.post("/open311/v2/requests.json", data={**form, "api_key": KEY})
    assert r.status == 201, await r.text()
    (created,) = await r.json()
    number = created["service_request_id"]
    with ctx.sessions() as s:
        c = s.scalar(select(Case).where(Case.number == number))
        assert (c.channel, c.status, c.category) == ("web", "draft", "traffic")
        assert c.content == "路口红绿灯坏了<script>" and c.complainant_name == "三丰 张" and c.address == "城东区建设路88号"
        assert c.extracted["open311"] == {"client": "portal", "email": "zs@example.com", "lat": 30.5}
        assert s.scalar(select(CaseEvent.actor).where(CaseEvent.case_id == c.id)) == "open311:portal"
    # JSON works too, with the key in the header; and it is strict about types
    r = await client.post("/open311/v2/requests.json", json={"service_code": "traffic", "description": "x"},
                          headers={"X-API-Key": KEY})
    assert r.status == 201
    for payload, status in [({"service_code": "nope", "description": "x"}, 422),
                            ({"service_code": "traffic"}, 422),
                            ({"service_code": "traffic", "description": "x", "lat": "30"}, 422),
                            ({"service_code": "traffic", "description": "x", "lat": 91.0}, 422),
                            ({"service_code": "traffic", "description": "x", "attribute[x]": "1"}, 422),
                            ({"service_code": "traffic", "description": "x", "jurisdiction_id": "other"}, 404)]:
        r = await client.post("/open311/v2/requests.json", json=payload, headers={"X-API-Key": KEY})
        assert r.status == status, (payload, await r.text())
    r = await client.post("/open311/v2/requests.json", data=b"[1,", headers={"X-API-Key": KEY,
                                                                          "Content-Type": "application/json"})
    assert r.status == 400
    r = await client.post("/open311/v2/requests.json", data=b"x", headers={"X-API-Key": KEY, "Content-Type": "text/plain"})
    assert r.status == 415
    # what the public sees of it: nothing personal
    r = await client.get(f"/open311/v2/requests/{number}.json")
    text = await r.text()
    for word in ("三丰", "13812341234", "建设路", "zs@example.com"):
        assert word not in text


# --- statistics ----------------------------------------------------------------------------


async def test_stats_on_a_known_dataset(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    from ivr.models import Call

    with transaction(ctx.sessions) as s:
        a = _case(s, ctx, _at(23, 9))  # Monday: signed in time, replied on time, closed satisfied
        A.accept(s, a, ctx=ctx, actor="op", expected_version=None, category="attitude", handling_form="general",
                 now=_at(23, 9, 2))
        A.dispatch(s, a, ctx=ctx, actor="sup", expected_version=None, unit="branch_east", now=_at(23, 9, 5))
        A.report_result(s, a, ctx=ctx, actor="east", expected_version=None, result="已处理", now=_at(24, 10))
        A.reply(s, a, ctx=ctx, actor="east", expected_version=None, reply="已答复", now=_at(24, 11))
        A.record_return_visit(s, a, ctx=ctx, actor="campaign", outcome="answered", rating="satisfied", now=_at(25, 10))
        b = _case(s, ctx, _at(23, 9, 30), content="")  # an empty message: not counted
        A.discard(s, b, ctx=ctx, actor="op", expected_version=None, reason="空白留言", now=_at(23, 9, 31))
        c = _case(s, ctx, _at(23, 10), channel="web", complainant_phone="13900000000")  # signed late
        A.accept(s, c, ctx=ctx, actor="op", expected_version=None, category="traffic", handling_form="general",
                 now=_at(23, 10, 30))
        A.dispatch(s, c, ctx=ctx, actor="sup", expected_version=None, unit="traffic_police", now=_at(23, 10, 31))
        d = _case(s, ctx, _at(24, 9))  # Tuesday: the same caller again, merged
        A.merge(s, d, a, actor="op", now=_at(24, 9, 3))
        for when, direction, disposition in [(_at(23, 8), "in", "operator"), (_at(23, 9), "in", "voicemail"),
                                             (_at(23, 20), "in", "abandoned"), (_at(23, 21), "out", "campaign"),
                                             (_at(24, 8), "in", "self_service"), (_at(22, 23, 59), "in", "operator")]:
            s.add(Call(sip_call_id=f"c{when.isoformat()}", direction=direction, started_at=when,
                       disposition=disposition))
    client = await aiohttp_client(create_app(ctx))
    sup, pw = make_user(ctx.sessions, "supervisor")
    headers = await bearer_headers(client, sup.username, pw)
    r = await client.get("/api/v1/stats?start=2026-11-23&end=2026-11-24", headers=headers)
    assert r.status == 200, await r.text()
    body = await r.json()
    rows = {x["bucket"]: x for x in body["rows"]}
    assert set(rows) == {"2026-11-23", "2026-11-24"}
    mon, tue = rows["2026-11-23"], rows["2026-11-24"]
    assert (mon["received"], mon["responded_in_time"], mon["accepted"], mon["closed"], mon["replied"],
            mon["replied_on_time"], mon["rated"], mon["satisfied"], mon["repeats"]) == (2, 1, 2, 1, 1, 1, 1, 1, 0)
    assert (mon["response_rate"], mon["completion_rate"], mon["on_time_rate"], mon["satisfaction_rate"]) == (
        0.5, 0.5, 1.0, 1.0)
    assert (tue["received"], tue["repeats"], tue["repeat_rate"], tue["accepted"], tue["completion_rate"]) == (
        1, 1, 1.0, 0, None)
    assert body["total"]["received"] == 3 and body["total"]["repeat_rate"] == round(1 / 3, 4)
    calls = {x["bucket"]: x for x in body["calls"]}
    assert (calls["2026-11-23"]["inbound"], calls["2026-11-23"]["answered"], calls["2026-11-23"]["voicemail"],
            calls["2026-11-23"]["abandoned"]) == (3, 1, 1, 1)
    assert calls["2026-11-24"]["self_service"] == 1 and body["calls_total"]["inbound"] == 4
    assert body["calls_total"]["answer_rate"] == 0.25

    r = await client.get("/api/v1/stats?start=2026-11-01&end=2026-11-30&bucket=week&by=channel", headers=headers)
    body = await r.json()
    assert [(x["bucket"], x["group"], x["received"]) for x in body["rows"]] == [
        ("2026-11-23", "phone", 2), ("2026-11-23", "web", 1)]
    r = await client.get("/api/v1/stats?start=2026-11-01&end=2026-11-30&bucket=month&by=unit", headers=headers)
    groups = {x["group"]: x["received"] for x in (await r.json())["rows"]}
    assert groups == {"branch_east": 1, "traffic_police": 1, None: 1}
    for bad in ("start=2026-11-30&end=2026-11-01", "bucket=year", "by=caller", "start=1999-01-01",
                "start=2000-01-01&end=2099-12-31&bucket=day"):
        r = await client.get("/api/v1/stats?" + bad, headers=headers)
        assert r.status == 422, bad
    op, pw = make_user(ctx.sessions, "operator")
    r = await client.get("/api/v1/stats", headers=await bearer_headers(client, op.username, pw))
    assert r.status == 403


# --- the deadline scan inside `hotline serve` ------------------------------------------------


async def test_serve_runs_the_deadline_scan(ctx, unused_tcp_port) -> None:  # type: ignore[no-untyped-def]
    from service.serve import run

    with transaction(ctx.sessions) as s:
        late = _case(s, ctx, ctx.now() - dt.timedelta(days=3)).id  # a draft nobody signed for days
    ctx.settings.api.port = unused_tcp_port
    stop = asyncio.Event()
    server = asyncio.create_task(run(ctx, ["api"], [], stop=stop))

    def alerts() -> list[tuple[str, str]]:
        with ctx.sessions() as s:
            return [(e.action, e.actor) for e in s.scalars(select(CaseEvent).where(CaseEvent.case_id == late,
                                                                                   CaseEvent.action == "overdue"))]

    try:
        for _ in range(300):
            if alerts() or server.done():
                break
            await asyncio.sleep(0.1)
        assert alerts() == [("overdue", "system")]
    finally:
        stop.set()
        await asyncio.wait_for(server, 30)
    assert alerts() == [("overdue", "system")], "one alert, however often it scans"


async def test_scan_loop_survives_a_failing_pass(ctx, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from service import deadline_scan

    calls = []

    def flaky(c: Any) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database away")
        if len(calls) == 3:
            stop.set()
        return 0

    monkeypatch.setattr(deadline_scan, "scan_once", flaky)
    stop = asyncio.Event()
    await asyncio.wait_for(deadline_scan.scan_periodically(ctx, stop, interval=0.01), 30)
    assert len(calls) == 3
