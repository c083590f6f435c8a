"""Public case numbers and draft cases from voicemail, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from cases.drafts import CREATED_FROM_VOICEMAIL, case_for_recording, create_voicemail_draft
from cases.models import Case, CaseCounter, CaseEvent
from cases.numbers import case_day, next_number
from config.db import transaction
from recordings.models import Recording

SH = ZoneInfo("Asia/Shanghai")


def test_number_day_is_the_centres_local_day() -> None:
    # 15:59 UTC is 23:59 in Shanghai on the 6th; 16:00 UTC is already the 7th there.
    assert case_day(dt.datetime(2026, 12, 6, 15, 59, tzinfo=dt.UTC), SH) == "20261206"
    assert case_day(dt.datetime(2026, 12, 6, 16, 0, tzinfo=dt.UTC), SH) == "20261207"
    with pytest.raises(ValueError):
        case_day(dt.datetime(2026, 12, 6, 12, 0), SH)


def test_numbers_count_per_day(sessions) -> None:  # type: ignore[no-untyped-def]
    day6 = dt.datetime(2026, 12, 6, 1, 0, tzinfo=dt.UTC)
    day7 = dt.datetime(2026, 12, 6, 17, 0, tzinfo=dt.UTC)
    got = []
    for at in (day6, day6, day7, day6, day7):
        with transaction(sessions) as s:
            got.append(next_number(s, SH, at))
    assert got == ["20261206-0001", "20261206-0002", "20261207-0001", "20261206-0003", "20261207-0002"]


def test_rolled_back_number_is_given_back(sessions) -> None:  # type: ignore[no-untyped-def]
    at = dt.datetime(2026, 12, 6, 1, 0, tzinfo=dt.UTC)
    with transaction(sessions) as s:
        assert next_number(s, SH, at) == "20261206-0001"
    with pytest.raises(RuntimeError), transaction(sessions) as s:
        assert next_number(s, SH, at) == "20261206-0002"
        raise RuntimeError("case insert failed")
    with transaction(sessions) as s:
        assert next_number(s, SH, at) == "20261206-0002"


def test_numbers_unique_under_concurrent_writers(sessions) -> None:  # type: ignore[no-untyped-def]
    at = dt.datetime(2026, 12, 6, 1, 0, tzinfo=dt.UTC)
    threads_n, each = 6, 12
    got: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads_n)

    def draw() -> None:
        try:
            start.wait()
            for _ in range(each):
                with transaction(sessions) as s:  # its own session and connection
                    n = next_number(s, SH, at)
                with lock:
                    got.append(n)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=draw) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(got) == [f"20261206-{i:04d}" for i in range(1, threads_n * each + 1)]
    with sessions() as s:
        assert s.get(CaseCounter, "20261206").last == threads_n * each


def _recording(sessions, caller: str | None = "13800138000") -> Recording:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        rec = Recording(
            storage_key=f"test/{caller}-{dt.datetime.now().timestamp()}.wav",
            sample_rate=8000,
            duration=3.0,
            bytes=48044,
            sha256="0" * 64,
            caller=caller,
            received_at=dt.datetime(2026, 12, 6, 14, 30, tzinfo=dt.UTC),  # 22:30 in Shanghai
        )
        s.add(rec)
    return rec


def _draft(s, rec: Recording, **kw):  # type: ignore[no-untyped-def]
    args = dict(
        tz=SH,
        content="我要投诉 我的电话是13912345678 我住在朝阳区建国路88号",
        caller_number=rec.caller,
        received_at=rec.received_at,
        phones=["13912345678", "01065529988"],
        address="朝阳区建国路88号",
        low_confidence=[{"word": "建国", "start": 1.0, "end": 1.4, "conf": 0.41}],
        recording_id=rec.id,
        transcript_id=7,
        job_id=3,
    )
    args.update(kw)
    return create_voicemail_draft(s, **args)


def test_voicemail_draft_fields_and_event(sessions) -> None:  # type: ignore[no-untyped-def]
    rec = _recording(sessions)
    with transaction(sessions) as s:
        res = _draft(s, rec)
    assert res.created
    with sessions() as s:
        case = s.scalars(select(Case)).one()
        assert case.number == "20261206-0001"  # received 22:30 local on the 6th
        assert (case.status, case.channel) == ("draft", "voicemail")
        assert case.caller_number == "13800138000"
        assert case.complainant_phone == "13912345678"  # the number spoken for the callback
        assert case.address == "朝阳区建国路88号"
        assert case.received_at == rec.received_at
        assert case.extracted == {
            "phones": ["13912345678", "01065529988"],
            "address": "朝阳区建国路88号",
            "low_confidence": [{"word": "建国", "start": 1.0, "end": 1.4, "conf": 0.41}],
        }
        assert (case.source_recording_id, case.source_transcript_id) == (rec.id, 7)
        ev = s.scalars(select(CaseEvent)).one()
        assert (ev.case_id, ev.action, ev.actor, ev.to_status) == (case.id, CREATED_FROM_VOICEMAIL, "pipeline", "draft")
        assert ev.data == {"recording_id": rec.id, "transcript_id": 7, "job_id": 3}


def test_without_spoken_phone_the_caller_number_is_the_contact(sessions) -> None:  # type: ignore[no-untyped-def]
    rec = _recording(sessions, caller="075512345678")
    with transaction(sessions) as s:
        case = _draft(s, rec, phones=[], address=None).case
    assert case.complainant_phone == "075512345678"
    assert case.caller_number == "075512345678"
    assert case.extracted["phones"] == []


def test_draft_is_idempotent_per_recording(sessions) -> None:  # type: ignore[no-untyped-def]
    rec = _recording(sessions)
    with transaction(sessions) as s:
        first = _draft(s, rec)
    with transaction(sessions) as s:
        again = _draft(s, rec, transcript_id=8, job_id=4, content="second run")
    assert first.created and not again.created
    assert again.case.id == first.case.id
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 1
        assert s.scalar(select(func.count()).select_from(CaseEvent)) == 1
        assert case_for_recording(s, rec.id).content.startswith("我要投诉")
        # the second attempt did not draw a number either
        assert s.get(CaseCounter, "20261206").last == 1


def test_cases_list_cli_table_and_json(ctx, hotline) -> None:  # type: ignore[no-untyped-def]
    import json

    rec = _recording(ctx.sessions)
    other = _recording(ctx.sessions, caller="075512345678")
    with transaction(ctx.sessions) as s:
        _draft(s, rec)
        case = _draft(s, other, phones=[], address=None, content="no number here").case
        case.status = "accepted"

    out = hotline("cases", "list", "--json", check=True)
    listed = json.loads(out.stdout)
    assert [c["number"] for c in listed] == ["20261206-0002", "20261206-0001"]
    first = listed[1]
    assert first["received_at"] == "2026-12-06T22:30:00+08:00"  # the centre's time zone
    assert (first["status"], first["channel"], first["caller_number"], first["complainant_phone"]) == (
        "draft", "voicemail", "13800138000", "13912345678"
    )
    assert first["extracted"]["phones"] == ["13912345678", "01065529988"]

    drafts = json.loads(hotline("cases", "list", "--json", "--status", "draft", check=True).stdout)
    assert [c["number"] for c in drafts] == ["20261206-0001"]
    assert len(json.loads(hotline("cases", "list", "--json", "--limit", "1", check=True).stdout)) == 1

    table = hotline("cases", "list", check=True).stdout.splitlines()
    assert table[0].split() == ["NUMBER", "STATUS", "CHANNEL", "RECEIVED", "CALLER", "PHONE", "CONTENT"]
    row = next(line for line in table if line.startswith("20261206-0001"))
    assert "2026-12-06 22:30" in row and "13800138000" in row and "13912345678" in row and "我要投诉" in row

    assert hotline("cases", "list", "--limit", "0").returncode == 2
