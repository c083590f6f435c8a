"""api/operators.py on the real app: presence, the SSE screen pop, the callback list, queue statistics, cases from calls."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select

from api.app import create_app
from api_support import bearer_headers, make_user
from cases import callbacks
from cases.models import Case
from config.context import Context
from config.db import transaction, utcnow
from ivr import presence
from ivr.models import Call
from ivr.queue import QueueEvent


async def _client(aiohttp_client: Any, ctx: Context, role: str = "operator", **kw: Any) -> tuple[Any, Any, dict[str, str]]:
    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, role, **kw)
    return client, user, await bearer_headers(client, user.username, password)


async def test_operator_sets_own_presence_and_supervisor_sees_everyone(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    client, op, h = await _client(aiohttp_client, ctx, sip_uri="sip:op1@127.0.0.1:5070")
    r = await client.get("/api/v1/operators/me/presence", headers=h)
    assert r.status == 200 and (await r.json())["state"] == "offline"
    r = await client.put("/api/v1/operators/me/presence", json={"state": "available"}, headers=h)
    body = await r.json()
    assert r.status == 200 and body["state"] == "available" and body["sip_uri"] == "sip:op1@127.0.0.1:5070"
    sup, password = make_user(ctx.sessions, "supervisor")
    hs = await bearer_headers(client, sup.username, password)
    r = await client.get("/api/v1/operators", headers=hs)
    items = (await r.json())["items"]
    assert [(i["username"], i["state"]) for i in items] == [(op.username, "available")]
    # Roles: a supervisor has no presence of their own, an operator cannot list everyone.
    assert (await client.get("/api/v1/operators/me/presence", headers=hs)).status == 403
    assert (await client.get("/api/v1/operators", headers=h)).status == 403
    assert (await client.get("/api/v1/operators")).status == 401


@pytest.mark.parametrize("body", [{"state": "busy"}, {"state": "wrap_up"}, {"state": 1}, {"state": "x" * 500},
                                  {}, {"state": "available", "extra": 1}, ["available"]])
async def test_presence_bad_input(aiohttp_client, ctx: Context, body: Any) -> None:  # type: ignore[no-untyped-def]
    client, _, h = await _client(aiohttp_client, ctx)
    r = await client.put("/api/v1/operators/me/presence", json=body, headers=h)
    assert r.status == 422, await r.text()
    assert (await (await client.get("/api/v1/operators/me/presence", headers=h)).json())["state"] == "offline"


async def test_presence_refused_while_on_a_call(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    client, op, h = await _client(aiohttp_client, ctx)
    assert (await client.put("/api/v1/operators/me/presence", json={"state": "available"}, headers=h)).status == 200
    with transaction(ctx.sessions) as s:
        assert presence.claim(s, op.id, utcnow(), call_id=5)
    r = await client.put("/api/v1/operators/me/presence", json={"state": "offline"}, headers=h)
    assert r.status == 409 and "on a call" in (await r.json())["error"]["message"]
    body = await (await client.get("/api/v1/operators/me/presence", headers=h)).json()
    assert (body["state"], body["call_id"]) == ("busy", 5)


def _call(ctx: Context, caller: str | None = "13800138000", **kw: Any) -> int:
    with transaction(ctx.sessions) as s:
        row = Call(sip_call_id=f"c{utcnow().timestamp()}-{caller}", direction="in", caller=caller, called="12389",
                   started_at=utcnow(), **kw)
        s.add(row)
        s.flush()
        return row.id


async def _read_events(resp: Any, count: int) -> list[tuple[str, dict[str, Any]]]:
    """SSE messages (event, data) until `count` events came; comments are skipped."""
    out: list[tuple[str, dict[str, Any]]] = []
    event = None
    while len(out) < count:
        line = (await asyncio.wait_for(resp.content.readline(), 10)).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            assert event is not None
            out.append((event, json.loads(line[6:])))
            event = None
    return out


async def test_screen_pop_streams_my_events_with_previous_cases(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    client, op, h = await _client(aiohttp_client, ctx)
    other, _ = make_user(ctx.sessions, "operator")
    call_id = _call(ctx, recording_id=None)
    with transaction(ctx.sessions) as s:  # two earlier cases of this caller and one of someone else
        for n, (who, day) in enumerate([("13800138000", 1), ("13800138000", 3), ("13900000000", 2)]):
            s.add(Case(number=f"20260101-{n:04d}", channel="phone", status="accepted", caller_number=who,
                       content=f"case {n}", received_at=utcnow() - dt.timedelta(days=10 - day)))
    r = await client.get("/api/v1/operators/me/events", headers=h)
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    assert (await r.content.readline()).startswith(b"retry:")
    events = ctx.queue_events
    events.publish(QueueEvent("ringing", other.id, "13700000000", 999))  # not mine: not streamed
    events.publish(QueueEvent("ringing", op.id, "13800138000", call_id))
    events.publish(QueueEvent("connected", op.id, "13800138000", call_id))
    got = await _read_events(r, 2)
    with transaction(ctx.sessions) as s:  # the conversation is stored: the next event carries its recording
        s.get(Call, call_id).recording_id = 77  # type: ignore[union-attr]
    events.publish(QueueEvent("ended", op.id, "13800138000", call_id, "hangup"))
    got += await _read_events(r, 1)
    r.close()
    assert [e for e, _ in got] == ["ringing", "connected", "ended"]
    ringing = got[0][1]
    assert ringing["call_id"] == call_id and ringing["caller"] == "13800138000"
    assert [c["number"] for c in ringing["previous_cases"]] == ["20260101-0001", "20260101-0000"]  # most recent first
    assert ringing["recording_id"] is None and got[2][1]["recording_id"] == 77 and got[2][1]["reason"] == "hangup"


async def test_screen_pop_streams_end_when_the_app_shuts_down(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    """An open console must not hold `hotline serve` up at SIGTERM (aiohttp waits for running handlers)."""
    client, op, h = await _client(aiohttp_client, ctx)
    r = await client.get("/api/v1/operators/me/events", headers=h)
    assert (await r.content.readline()).startswith(b"retry:")
    await client.app.shutdown()  # what the runner does first at SIGTERM: on_shutdown
    rest = await asyncio.wait_for(r.content.read(), 10)  # the stream ends (without this, only keep-alives)
    assert b"event:" not in rest
    r.close()


async def test_screen_pop_needs_the_operator_role(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    client, _, h = await _client(aiohttp_client, ctx, role="supervisor")
    assert (await client.get("/api/v1/operators/me/events", headers=h)).status == 403
    assert (await client.get("/api/v1/operators/me/events")).status == 401


async def test_case_from_call_is_prefilled_and_linked(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    client, op, h = await _client(aiohttp_client, ctx)
    call_id = _call(ctx, caller="+8613800138000")
    r = await client.post(f"/api/v1/calls/{call_id}/case", json={"content": "路灯坏了 <script>", "address": "城关路1号"},
                          headers=h)
    assert r.status == 201, await r.text()
    body = await r.json()
    assert (body["channel"], body["caller_number"], body["source_call_id"], body["source_recording_id"]) == \
        ("phone", "+8613800138000", call_id, None)
    with ctx.sessions() as s:
        case = s.scalars(select(Case).where(Case.number == body["number"])).one()
        assert (case.complainant_phone, case.address, case.content) == ("13800138000", "城关路1号", "路灯坏了 <script>")
    for bad_id in ("999999", "99999999999999999999"):
        assert (await client.post(f"/api/v1/calls/{bad_id}/case", json={}, headers=h)).status == 404
    assert (await client.post("/api/v1/calls/abc/case", json={}, headers=h)).status == 404
    for bad in ({"content": 5}, {"content": "x" * 20001}, {"unknown": 1}, {"address": "a\x00b"}):
        r = await client.post(f"/api/v1/calls/{call_id}/case", json=bad, headers=h)
        assert r.status == 422, (bad, await r.text())


async def test_callback_list_claim_and_done(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    client, op, h = await _client(aiohttp_client, ctx)
    other_client_user, other_pw = make_user(ctx.sessions, "operator")
    h2 = await bearer_headers(client, other_client_user.username, other_pw)
    with transaction(ctx.sessions) as s:
        first = callbacks.add(s, "13800138000", "abandoned", call_id=1).id
        callbacks.add(s, "13900139000", "requested", call_id=2)
    r = await client.get("/api/v1/callbacks", headers=h)
    items = (await r.json())["items"]
    assert [(i["phone"], i["reason"]) for i in items] == [("13800138000", "abandoned"), ("13900139000", "requested")]
    page = await (await client.get("/api/v1/callbacks?limit=1", headers=h)).json()
    assert len(page["items"]) == 1 and page["next_after"] == first
    r = await client.post(f"/api/v1/callbacks/{first}/claim", headers=h)
    assert r.status == 200 and (await r.json())["claimed_by"] == op.id
    assert (await client.post(f"/api/v1/callbacks/{first}/claim", headers=h2)).status == 409
    assert (await client.post(f"/api/v1/callbacks/{first}/done", json={"outcome": "reached"}, headers=h2)).status == 409
    r = await client.post(f"/api/v1/callbacks/{first}/done", json={"outcome": "reached", "note": "ok"}, headers=h)
    assert r.status == 200 and (await r.json())["outcome"] == "reached"
    assert (await client.post(f"/api/v1/callbacks/{first}/done", json={"outcome": "reached"}, headers=h)).status == 409
    done = await (await client.get("/api/v1/callbacks?state=done", headers=h)).json()
    assert [i["id"] for i in done["items"]] == [first]
    for path in ("/api/v1/callbacks/424242/claim", "/api/v1/callbacks/99999999999999/claim"):
        assert (await client.post(path, headers=h)).status == 404
    for q in ("state=nope", "limit=0", "limit=x", "after=-1", "bogus=1"):
        assert (await client.get(f"/api/v1/callbacks?{q}", headers=h)).status == 422, q
    for bad in ({"outcome": "great"}, {"outcome": "reached", "note": 3}, {}):
        assert (await client.post(f"/api/v1/callbacks/{first}/done", json=bad, headers=h)).status == 422


async def test_queue_stats(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    client, _, h = await _client(aiohttp_client, ctx, role="supervisor")
    now = utcnow()
    for wait, exit_, answered in ((5.0, "operator", True), (20.0, "operator", True), (30.0, "abandoned", False),
                                  (120.0, "timeout", False)):
        _call(ctx, queue_entered_at=now, queue_wait_seconds=wait, queue_exit=exit_,
              operator_answered_at=now if answered else None)
    today = now.astimezone(ctx.settings.calendar.tz).date().isoformat()
    r = await client.get(f"/api/v1/stats/queue?from={today}", headers=h)
    body = await r.json()
    assert r.status == 200, body
    assert (body["queued"], body["answered"], body["answered_within_15s"], body["abandoned"]) == (4, 2, 1, 1)
    assert body["service_level"] == 0.25 and body["abandonment_rate"] == 0.25
    assert body["average_wait_seconds"] == pytest.approx(43.75) and body["average_answer_seconds"] == 12.5
    empty = await (await client.get("/api/v1/stats/queue?from=2020-01-01&to=2020-01-02", headers=h)).json()
    assert (empty["queued"], empty["service_level"], empty["abandonment_rate"]) == (0, None, None)
    for q in ("from=2026-13-01", "from=2026-01-02&to=2026-01-01", "from=2020-01-01&to=2026-01-01", "to=x"):
        assert (await client.get(f"/api/v1/stats/queue?{q}", headers=h)).status == 422, q
