"""Recordings over HTTP: search, details, seekable audio with Range, the access log it writes (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from api_support import logged_in_client
from cases.models import Case
from config.context import Context
from config.db import transaction, utcnow
from ivr.models import Call
from recordings.access import verify_chain
from recordings.models import Recording, RecordingAccess
from transcription.models import Transcript
from recordings.store import recording_path, store_recording

CLIP8 = Path(__file__).resolve().parent.parent.parent / "shared" / "speech" / "tts_en_complaint_8k.wav"
UTC = dt.UTC


def _stored(ctx: Context, caller: str = "13800138000") -> Recording:
    """A real recording through the store (ffmpeg, checksum), with its call and its draft case."""
    with transaction(ctx.sessions) as s:
        rec = store_recording(s, ctx.settings.storage, CLIP8, caller=caller)
        call = Call(sip_call_id=uuid.uuid4().hex, caller=caller, disposition="voicemail", recording_id=rec.id)
        s.add(call)
        s.flush()
        rec.call_id = call.id
        s.add(Case(number=f"20260301-{rec.id:04d}", channel="voicemail", source_recording_id=rec.id))
    return rec


def _row(s, *, at: dt.datetime, caller: str | None = None, kind: str = "voicemail", deleted: bool = False) -> Recording:  # type: ignore[no-untyped-def]
    """A recording row without a file: enough for searching."""
    rec = Recording(kind=kind, storage_key=f"x/{uuid.uuid4()}.wav", sample_rate=8000, duration=1.0, bytes=16044,
                    sha256="0" * 64, caller=caller, received_at=at, deleted_at=at if deleted else None)  # fmt: skip
    s.add(rec)
    s.flush()
    return rec


def _entries(ctx: Context) -> list[RecordingAccess]:
    with ctx.sessions() as s:
        return list(s.scalars(select(RecordingAccess).order_by(RecordingAccess.seq)))


async def test_full_get_serves_the_file_and_logs_a_play(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    rec = _stored(ctx)
    data = recording_path(ctx.settings.storage, rec).read_bytes()
    client, user = await logged_in_client(aiohttp_client, ctx)
    r = await client.get(f"/api/v1/recordings/{rec.id}/audio", headers={"User-Agent": "player/1"})
    assert r.status == 200
    assert await r.read() == data
    assert r.headers["Content-Type"] == "audio/wav"
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["Cache-Control"] == "no-store"
    assert "Content-Disposition" not in r.headers
    [e] = _entries(ctx)
    assert (e.recording_id, e.actor, e.action, e.client, e.user_agent, e.range) == (
        rec.id, user.username, "play", "127.0.0.1", "player/1", None)  # fmt: skip


async def test_ranges_for_a_seekable_player(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    rec = _stored(ctx)
    data = recording_path(ctx.settings.storage, rec).read_bytes()
    size = len(data)
    client, user = await logged_in_client(aiohttp_client, ctx)
    url = f"/api/v1/recordings/{rec.id}/audio"

    r = await client.get(url, headers={"Range": "bytes=0-99"})
    assert r.status == 206
    assert await r.read() == data[:100]
    assert r.headers["Content-Range"] == f"bytes 0-99/{size}"

    r = await client.get(url, headers={"Range": "bytes=-50"})  # suffix: the last 50 bytes
    assert r.status == 206 and await r.read() == data[-50:]

    r = await client.get(url, headers={"Range": "bytes=1000-"})  # a seek
    assert r.status == 206 and await r.read() == data[1000:]

    for unsatisfiable in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=abc"):
        r = await client.get(url, headers={"Range": unsatisfiable})
        assert r.status == 416, unsatisfiable
        assert r.headers["Content-Range"] == f"bytes */{size}"

    r = await client.head(url)  # no audio sent: nothing logged
    assert r.status == 200 and r.headers["Content-Length"] == str(size)

    entries = _entries(ctx)
    assert [(e.action, e.range) for e in entries] == [
        ("play", "bytes=0-99"), ("play", "bytes=-50"), ("play", "bytes=1000-")]  # fmt: skip
    with ctx.sessions() as s:
        assert verify_chain(s) == []


async def test_download_is_an_attachment_and_logged_as_download(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    rec = _stored(ctx)
    client, user = await logged_in_client(aiohttp_client, ctx)
    r = await client.get(f"/api/v1/recordings/{rec.id}/audio?download=1")
    assert r.status == 200
    assert r.headers["Content-Disposition"] == f'attachment; filename="recording-{rec.id}.wav"'
    assert len(await r.read()) == rec.bytes
    r = await client.get(f"/api/v1/recordings/{rec.id}/audio?download=perhaps")
    assert r.status == 400 and (await r.json())["error"]["details"] == {"download": "perhaps"}
    assert [e.action for e in _entries(ctx)] == ["download"]


async def test_access_log_endpoint_lists_the_chain(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    rec = _stored(ctx)
    client, user = await logged_in_client(aiohttp_client, ctx)
    for _ in range(3):
        assert (await client.get(f"/api/v1/recordings/{rec.id}/audio")).status == 200
    r = await client.get(f"/api/v1/recordings/{rec.id}/access?limit=2")
    assert r.status == 200
    page = await r.json()
    assert [e["seq"] for e in page["items"]] == [3, 2] and page["next_cursor"] == "2"
    assert page["items"][1]["hash"] == page["items"][0]["prev_hash"]
    r = await client.get(f"/api/v1/recordings/{rec.id}/access?cursor={page['next_cursor']}")
    assert [e["seq"] for e in (await r.json())["items"]] == [1]
    r = await client.get("/api/v1/recordings/999999/access")
    assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize("suffix", ["", "/audio", "/access"])
async def test_unknown_and_malformed_ids(aiohttp_client, ctx: Context, suffix: str) -> None:  # type: ignore[no-untyped-def]
    client, user = await logged_in_client(aiohttp_client, ctx)
    r = await client.get(f"/api/v1/recordings/123456789012{suffix}")
    assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    for bad in ("abc", "-1", "0", "1.5", "1e3", "9" * 30, "%27%20OR%201%3D1"):
        r = await client.get(f"/api/v1/recordings/{bad}{suffix}")
        assert r.status == 400, bad
        assert (await r.json())["error"]["code"] == "bad_request"
    assert _entries(ctx) == []


async def test_missing_altered_and_deleted_files(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    gone, short, deleted = _stored(ctx), _stored(ctx, "13900139000"), _stored(ctx, "13700137000")
    recording_path(ctx.settings.storage, gone).unlink()
    with recording_path(ctx.settings.storage, short).open("r+b") as f:
        f.truncate(100)
    with transaction(ctx.sessions) as s:
        row = s.get(Recording, deleted.id)
        assert row is not None
        row.deleted_at = utcnow()
    client, user = await logged_in_client(aiohttp_client, ctx)
    r = await client.get(f"/api/v1/recordings/{gone.id}/audio")
    assert r.status == 410 and (await r.json())["error"]["code"] == "recording_file_missing"
    r = await client.get(f"/api/v1/recordings/{short.id}/audio")
    assert r.status == 500 and (await r.json())["error"]["details"]["bytes"] == 100
    r = await client.get(f"/api/v1/recordings/{deleted.id}/audio")
    assert r.status == 410 and (await r.json())["error"]["code"] == "recording_deleted"
    assert _entries(ctx) == []


async def test_no_audio_without_an_access_entry(aiohttp_client, ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    rec = _stored(ctx)

    def broken(*a, **kw):  # type: ignore[no-untyped-def]
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr("api.recordings.append_access", broken)
    client, user = await logged_in_client(aiohttp_client, ctx)
    r = await client.get(f"/api/v1/recordings/{rec.id}/audio")
    assert r.status == 503
    body = await r.json()
    assert body["error"]["code"] == "audit_unavailable"
    assert r.headers["Content-Type"].startswith("application/json")


async def test_detail(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    rec = _stored(ctx)
    client, user = await logged_in_client(aiohttp_client, ctx)
    r = await client.get(f"/api/v1/recordings/{rec.id}")
    assert r.status == 200
    body = await r.json()
    assert (body["id"], body["sha256"], body["bytes"], body["caller"]) == (rec.id, rec.sha256, rec.bytes, "13800138000")
    assert body["call"]["disposition"] == "voicemail" and body["case"] == {"number": f"20260301-{rec.id:04d}", "status": "draft"}
    assert body["audio_url"] == f"/api/v1/recordings/{rec.id}/audio"
    assert _entries(ctx) == []  # looking at metadata is not listening


async def test_conversation_transcripts_say_who_spoke(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    """A stereo conversation's channels are the caller (left) and the operator (right): the API, the recording
    page and the case page all say so; a mono voicemail's one channel is the caller's."""
    with transaction(ctx.sessions) as s:
        talk = _row(s, at=utcnow(), caller="13800138000", kind="conversation")
        talk.channels = 2
        mono = _row(s, at=utcnow(), caller="13800138000")
        for rec, channel, text in ((talk, 1, "您好 这里 是 热线"), (talk, 0, "我 要 投诉 <b>派出所</b>"), (mono, 0, "留言 内容")):
            s.add(Transcript(recording_id=rec.id, channel=channel, text=text, words=[], confidence=0.9, model="t",
                             duration=1.0, elapsed=0.1))
        s.add(Case(number="20260301-0900", channel="phone", source_recording_id=talk.id, content="x"))
        s.flush()
        case_id = s.scalars(select(Case.id).where(Case.number == "20260301-0900")).one()
    client, _ = await logged_in_client(aiohttp_client, ctx)
    body = await (await client.get(f"/api/v1/recordings/{talk.id}")).json()
    assert [(t["channel"], t["speaker"], t["text"]) for t in body["transcripts"]] == [
        (0, "caller", "我 要 投诉 <b>派出所</b>"), (1, "operator", "您好 这里 是 热线")]
    body = await (await client.get(f"/api/v1/recordings/{mono.id}")).json()
    assert [(t["channel"], t["speaker"]) for t in body["transcripts"]] == [(0, "caller")]
    case = (await (await client.get("/api/v1/cases/20260301-0900")).json())["case"]
    assert [(t["recording_id"], t["speaker"]) for t in case["transcripts"]] == [(talk.id, "caller"), (talk.id, "operator")]
    for path in (f"/recordings/{talk.id}", f"/cases/{case_id}"):
        html = await (await client.get(path, params={"lang": "en"})).text()
        assert '<strong>Caller</strong>: 我 要 投诉 &lt;b&gt;派出所&lt;/b&gt;' in html, path
        assert '<strong>Operator</strong>: 您好 这里 是 热线' in html, path
        assert html.index("data-speaker=\"caller\"") < html.index("data-speaker=\"operator\""), path


@pytest.fixture
def corpus(ctx: Context) -> dict[str, int]:
    """Recordings spread over local days (Asia/Shanghai), callers, kinds, dispositions and cases."""
    ids: dict[str, int] = {}
    with transaction(ctx.sessions) as s:
        # 2026-03-01 16:30 UTC is 2026-03-02 00:30 in Shanghai: a local date filter must put it on the 2nd.
        ids["late"] = _row(s, at=dt.datetime(2026, 3, 1, 16, 30, tzinfo=UTC), caller="13800138000").id
        ids["early"] = _row(s, at=dt.datetime(2026, 3, 1, 15, 59, tzinfo=UTC), caller="+8613900139000").id
        ids["conv"] = _row(s, at=dt.datetime(2026, 3, 3, 2, 0, tzinfo=UTC), kind="conversation").id
        ids["deleted"] = _row(s, at=dt.datetime(2026, 3, 2, 2, 0, tzinfo=UTC), caller="13800138000", deleted=True).id
        abandoned = Call(sip_call_id="a", caller="02112345678", disposition="abandoned", recording_id=ids["conv"])
        voicemail = Call(sip_call_id="v", caller="13800138000", disposition="voicemail")
        s.add_all([abandoned, voicemail])
        s.flush()
        s.get(Recording, ids["late"]).call_id = voicemail.id  # type: ignore[union-attr]
        s.add(Case(number="20260302-0001", channel="voicemail", source_recording_id=ids["late"]))
        s.add(Case(number="20260302-0002", channel="voicemail", status="merged", source_recording_id=ids["late"]))
    return ids


async def _ids(client, query: str) -> list[int]:  # type: ignore[no-untyped-def]
    r = await client.get(f"/api/v1/recordings?{query}")
    assert r.status == 200, await r.text()
    return [i["id"] for i in (await r.json())["items"]]


async def test_search_filters(aiohttp_client, ctx: Context, corpus: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    client, user = await logged_in_client(aiohttp_client, ctx)
    late, early, conv = corpus["late"], corpus["early"], corpus["conv"]
    assert await _ids(client, "") == [conv, early, late]  # newest id first, deleted left out
    assert await _ids(client, "from=2026-03-02&to=2026-03-02") == [late]
    assert await _ids(client, "from=2026-03-01&to=2026-03-01") == [early]
    assert await _ids(client, "from=2026-03-03") == [conv]
    assert await _ids(client, "to=2026-02-28") == []
    assert await _ids(client, "caller=138-0013-8000") == [late]
    assert await _ids(client, "caller=%2B8613900139000") == [early]
    assert await _ids(client, "caller=139001") == [early]  # part of a number
    assert await _ids(client, "caller=0211234") == [conv]  # the call's caller
    assert await _ids(client, "disposition=abandoned") == [conv]
    assert await _ids(client, "disposition=voicemail") == [late]
    assert await _ids(client, "case=20260302-0001") == [late]
    assert await _ids(client, "case=20260302-0002") == [late]  # a merged case also finds its source
    assert await _ids(client, "case=20991231-0001") == []
    assert await _ids(client, "kind=conversation") == [conv]
    assert await _ids(client, "kind=voicemail&caller=13800138000&from=2026-03-02") == [late]
    assert await _ids(client, "case=%27%3BDROP%20TABLE%20call--") == []  # hostile text is just text
    r = await client.get("/api/v1/recordings?case=20260302-0001")
    [item] = (await r.json())["items"]
    assert item["case"] == {"number": "20260302-0001", "status": "draft"}  # the first case made from it
    assert item["call"]["disposition"] == "voicemail" and item["received_local"] == "2026-03-02 00:30:00"


async def test_search_pages_by_cursor(aiohttp_client, ctx: Context, corpus: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    client, user = await logged_in_client(aiohttp_client, ctx)
    seen, cursor = [], None
    while True:
        r = await client.get("/api/v1/recordings", params={"limit": "1", **({"cursor": cursor} if cursor else {})})
        page = await r.json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [corpus["conv"], corpus["early"], corpus["late"]]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("from=2026-13-01", "from"),
        ("from=yesterday", "from"),
        ("to=2026-02-30", "to"),
        ("from=2026-03-02&to=2026-03-01", "to"),
        ("caller=abc", "caller"),
        ("caller=" + "1" * 30, "caller"),
        ("kind=bogus", "kind"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("cursor=-5", "cursor"),
        ("disposition=" + "x" * 21, "disposition"),
        ("case=%00", "case"),
        ("sort=id", "sort"),
    ],
)
async def test_search_bad_parameters(aiohttp_client, ctx: Context, query: str, param: str) -> None:  # type: ignore[no-untyped-def]
    client, user = await logged_in_client(aiohttp_client, ctx)
    r = await client.get(f"/api/v1/recordings?{query}")
    assert r.status == 400
    body = await r.json()
    assert body["error"]["code"] == "bad_request" and param in body["error"]["message"]


def test_search_counts_match_the_database(ctx: Context, corpus: dict[str, int]) -> None:
    """The query the API uses agrees with a plain count (no duplicate rows from the joins)."""
    from ivr.recording_search import RecordingQuery, search_recordings

    with ctx.sessions() as s:
        hits, nxt = search_recordings(s, RecordingQuery(include_deleted=True), ctx.settings.calendar.tz, limit=100)
        total = s.scalar(select(func.count()).select_from(Recording))
    assert nxt is None and len(hits) == total == 4
