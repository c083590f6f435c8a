"""/metrics: Prometheus text with the database's figures at scrape time and per-app HTTP counters."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api_support import logged_in_client
from cases.models import Case
from config.context import Context
from config.db import transaction, utcnow
from config.settings import load_settings
from ivr.models import Call
from ivr.recording_search import day_bounds
from recordings.access import append_access
from recordings.models import Recording
from transcription.models import TranscriptionJob


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def _scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # type: ignore[no-untyped-def]
    r = await client.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    return _samples(await r.text())


def _recording(s, size: int, *, deleted: bool = False) -> Recording:  # type: ignore[no-untyped-def]
    rec = Recording(storage_key=f"x/{uuid.uuid4()}.wav", sample_rate=8000, duration=1.0, bytes=size, sha256="0" * 64,
                    deleted_at=utcnow() if deleted else None)  # fmt: skip
    s.add(rec)
    s.flush()
    return rec


async def test_database_figures_at_scrape_time(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    before = await _scrape(client)
    assert before[("hotline_database_up", ())] == 1
    assert before[("hotline_recordings", ())] == 0 and before[("hotline_recording_bytes", ())] == 0
    assert before[("hotline_transcription_jobs", (("state", "queued"),))] == 0

    tz = ctx.settings.calendar.tz
    today_start, _ = day_bounds(utcnow().astimezone(tz).date(), tz)
    with transaction(ctx.sessions) as s:
        recs = [_recording(s, 1000), _recording(s, 2500), _recording(s, 7, deleted=True)]
        for status, n in (("draft", 2), ("accepted", 1)):
            for _ in range(n):
                s.add(Case(number=uuid.uuid4().hex[:20], channel="phone", status=status))
        s.add_all([TranscriptionJob(recording_id=recs[0].id, state="queued"),
                   TranscriptionJob(recording_id=recs[1].id, state="done"),
                   TranscriptionJob(recording_id=recs[1].id, state="done")])  # fmt: skip
        midday = today_start + dt.timedelta(hours=12)
        for disposition in ("voicemail", "voicemail", "abandoned", None):
            s.add(Call(sip_call_id=uuid.uuid4().hex, disposition=disposition, started_at=midday))
        s.add(Call(sip_call_id="yesterday", disposition="voicemail", started_at=today_start - dt.timedelta(minutes=1)))
        for _ in range(3):
            append_access(s, recs[0].id, "sup", "play")

    m = await _scrape(client)
    assert m[("hotline_cases", (("status", "draft"),))] == 2
    assert m[("hotline_cases", (("status", "accepted"),))] == 1
    assert m[("hotline_transcription_jobs", (("state", "queued"),))] == 1
    assert m[("hotline_transcription_jobs", (("state", "done"),))] == 2
    assert m[("hotline_transcription_jobs", (("state", "failed"),))] == 0
    assert m[("hotline_calls_today", (("disposition", "voicemail"),))] == 2
    assert m[("hotline_calls_today", (("disposition", "abandoned"),))] == 1
    assert m[("hotline_calls_today", (("disposition", "in_progress"),))] == 1
    assert m[("hotline_recordings", ())] == 2
    assert m[("hotline_recording_bytes", ())] == 3500
    assert m[("hotline_recording_access_entries", ())] == 3


async def test_http_counters_by_route_template(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    client, _ = await logged_in_client(aiohttp_client, ctx)
    assert (await client.get("/api/v1/cases")).status == 200
    assert (await client.get("/api/v1/cases?limit=abc")).status == 422
    for rid in ("1", "2", "3"):
        assert (await client.get(f"/api/v1/recordings/{rid}")).status == 404
    assert (await client.get("/no/such/page")).status == 404
    m = await _scrape(client)

    def count(route: str, status: str) -> float:
        return m.get(("hotline_http_requests_total", (("method", "GET"), ("route", route), ("status", status))), 0)

    assert count("/api/v1/cases", "200") == 1
    assert count("/api/v1/cases", "422") == 1
    assert count("/api/v1/recordings/{id}", "404") == 3  # one series for every id
    assert count("unmatched", "404") == 1
    assert m[("hotline_http_request_duration_seconds_count", (("method", "GET"), ("route", "/api/v1/cases")))] == 2
    assert not any("/no/such/page" in dict(labels).get("route", "") for _, labels in m)


async def test_openmetrics_when_asked(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

    client = await aiohttp_client(create_app(ctx))
    r = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/openmetrics-text")
    names = {f.name for f in parse_openmetrics(await r.text())}
    assert {"hotline_database_up", "hotline_recordings", "hotline_http_requests"} <= names


async def test_each_app_has_its_own_registry(aiohttp_client, ctx: Context) -> None:  # type: ignore[no-untyped-def]
    first, second = await aiohttp_client(create_app(ctx)), await aiohttp_client(create_app(ctx))
    await first.get("/api/v1/cases")
    m1, m2 = await _scrape(first), await _scrape(second)
    key = ("hotline_http_requests_total", (("method", "GET"), ("route", "/api/v1/cases"), ("status", "401")))
    assert m1[key] == 1 and key not in m2


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_database_down_still_answers(aiohttp_client, env, monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOTLINE_DATABASE__URL", "postgresql://postgres@127.0.0.1:1/none")
    down = Context(load_settings())
    try:
        client = await aiohttp_client(create_app(down))
        m = await _scrape(client)
    finally:
        down.close()
    assert m[("hotline_database_up", ())] == 0
    assert not any(name.startswith("hotline_cases") for name, _ in m)
