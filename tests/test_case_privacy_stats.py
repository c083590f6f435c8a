"""Confidential reporters (masking, view log, public view) and case statistics, on both databases."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from cases import actions as A
from cases.models import Case, PersonalDataView
from cases.privacy import mask_address, mask_name, mask_phone, personal_view, public_view, visible_fields
from cases.stats import bucket_starts, case_stats
from config.db import transaction

SH = ZoneInfo("Asia/Shanghai")


def at(*a: int) -> dt.datetime:
    return dt.datetime(*a, tzinfo=SH)


def test_masks() -> None:
    assert mask_name("张三丰") == "张**" and mask_name("张") == "张*" and mask_name(None) is None
    assert mask_phone("13812341234") == "138****1234"
    assert mask_phone("+8613812341234") == "+86*******1234"
    assert mask_phone("110") == "*10"
    assert mask_address("城东区建设路88号3栋") == "城东区****"
    assert mask_address("<b>x</b>") == "<b****"


def _case(sessions, ctx, **kw) -> int:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        c = A.create_case(s, ctx=ctx, actor="op1", channel="phone", content="举报北湖派出所民警收受好处",
                          received_at=at(2026, 11, 23, 9, 0), caller_number="13812341234",
                          complainant_name="李四", complainant_phone="13912345678", address="城北区北湖路1号", **kw)
        c.unit = "branch_north"
        return c.id


def test_confidential_reporter(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _case(sessions, ctx, confidential=True)
    with transaction(sessions) as s:
        c = s.get(Case, cid)
        op = personal_view(s, c, viewer="op1", role="operator", purpose="回访")
        assert op["complainant_name"] == "李四" and op["complainant_phone"] == "13912345678"
        unit = personal_view(s, c, viewer="north1", role="unit_handler", unit="branch_north")
        assert unit["complainant_name"] == "李*" and unit["complainant_phone"] == "139****5678"
        assert unit["address"] == "城北区****"
        camp = personal_view(s, c, viewer="cs1", role="campaign_staff")
        assert camp["complainant_phone"] == "13912345678" and camp["complainant_name"] == "李*"
        adm = personal_view(s, c, viewer="root", role="admin")
        assert adm["caller_number"] == "138****1234"
        with pytest.raises(ValueError):
            personal_view(s, c, viewer="x", role="hacker")
    with sessions() as s:
        log = list(s.scalars(select(PersonalDataView).order_by(PersonalDataView.id)))
        assert [(v.viewer, v.role) for v in log] == [("op1", "operator"), ("cs1", "campaign_staff")]
        assert log[0].fields == ["address", "caller_number", "complainant_name", "complainant_phone"]
        assert log[0].purpose == "回访" and log[1].fields == ["caller_number", "complainant_phone"]
        pub = public_view(s.get(Case, cid), tz=SH)
    assert not {"complainant_name", "complainant_phone", "address", "caller_number"} & set(pub)
    assert "李四" not in str(pub) and "13912345678" not in str(pub) and pub["content"] is None


def test_ordinary_case_visibility(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _case(sessions, ctx, no_call=True)
    with transaction(sessions) as s:
        c = s.get(Case, cid)
        assert personal_view(s, c, viewer="north1", role="unit_handler", unit="branch_north")["complainant_name"] == "李四"
        assert personal_view(s, c, viewer="east1", role="unit_handler", unit="branch_east")["complainant_name"] == "李*"
        assert visible_fields("campaign_staff", c) == frozenset()  # asked not to be called back
        pub = public_view(c)
    with sessions() as s:
        assert s.scalars(select(PersonalDataView)).first() is None  # not protected: not logged
    assert pub["content"] == "举报北湖派出所民警收受好处" and "李四" not in str(pub)


def test_bucket_starts() -> None:
    assert bucket_starts(dt.date(2026, 11, 25), dt.date(2026, 11, 27), "day") == [
        dt.date(2026, 11, 25), dt.date(2026, 11, 26), dt.date(2026, 11, 27)]
    assert bucket_starts(dt.date(2026, 11, 25), dt.date(2026, 12, 2), "week") == [
        dt.date(2026, 11, 23), dt.date(2026, 11, 30), dt.date(2026, 12, 7)]
    assert bucket_starts(dt.date(2026, 11, 25), dt.date(2027, 1, 2), "month")[-1] == dt.date(2027, 2, 1)
    for bad in ((dt.date(2026, 1, 2), dt.date(2026, 1, 1), "day"), (dt.date(2026, 1, 1), dt.date(2026, 1, 2), "year")):
        with pytest.raises(ValueError):
            bucket_starts(*bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        bucket_starts(dt.date(2000, 1, 1), dt.date(2026, 1, 1), "day")


def test_case_stats(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    def make(received: dt.datetime, channel: str = "phone") -> Case:
        return A.create_case(s, ctx=ctx, actor="op1", channel=channel, content="户籍窗口态度差", received_at=received,
                             caller_number="13800138000")

    def run(fn, c, t, **kw):  # type: ignore[no-untyped-def]
        return fn(s, c, ctx=ctx, actor="op1", expected_version=c.version, now=t, **kw)

    with transaction(sessions) as s:
        # 23:30 local on the 23rd is 15:30 UTC: must count on the 23rd, not the 24th's UTC day
        late_night = make(at(2026, 11, 23, 23, 30), "voicemail")
        run(A.accept, late_night, at(2026, 11, 24, 8, 35), category="household", handling_form="general")
        run(A.dispatch, late_night, at(2026, 11, 24, 8, 38), unit="population")  # sign due 08:40: in time
        run(A.sign, late_night, at(2026, 11, 24, 9, 0))
        run(A.reply, late_night, at(2026, 11, 25, 9, 0), reply="已处理")
        A.record_return_visit(s, late_night, ctx=ctx, actor="c", outcome="answered", rating="basically_satisfied",
                              now=at(2026, 11, 26, 9, 0))
        slow = make(at(2026, 11, 23, 9, 0))
        run(A.accept, slow, at(2026, 11, 23, 9, 5), category="household", handling_form="general")
        run(A.dispatch, slow, at(2026, 11, 23, 9, 30), unit="population")  # late
        repeat = make(at(2026, 11, 23, 10, 0))
        A.merge(s, repeat, slow, actor="op1", now=at(2026, 11, 23, 10, 5))
        test_call = make(at(2026, 11, 23, 11, 0), "voicemail")
        run(A.discard, test_call, at(2026, 11, 23, 11, 1), reason="测试")
        unhappy = make(at(2026, 11, 24, 9, 0))
        run(A.accept, unhappy, at(2026, 11, 24, 9, 1), category="attitude", handling_form="general")
        run(A.dispatch, unhappy, at(2026, 11, 24, 9, 2), unit="branch_east")
        run(A.sign, unhappy, at(2026, 11, 24, 9, 3))
        run(A.reply, unhappy, at(2026, 12, 10, 9, 0), reply="已处理")  # after the 5 working days
        A.record_return_visit(s, unhappy, ctx=ctx, actor="c", outcome="answered", rating="not_satisfied",
                              now=at(2026, 12, 11, 9, 0))
        make(at(2026, 11, 22, 23, 59))  # the day before the range
        make(at(2026, 11, 25, 0, 0))  # the range's end, excluded

    with sessions() as s:
        cal = ctx.calendar
        days = case_stats(s, cal, dt.date(2026, 11, 23), dt.date(2026, 11, 25))
        assert [(r.bucket, r.received) for r in days] == [(dt.date(2026, 11, 23), 3), (dt.date(2026, 11, 24), 1)]
        d23 = days[0]
        assert (d23.responded_in_time, d23.accepted, d23.closed, d23.repeats) == (1, 2, 1, 1)
        assert (d23.response_rate, d23.completion_rate, d23.repeat_rate) == (0.3333, 0.5, 0.3333)
        assert (d23.on_time_rate, d23.satisfaction_rate) == (1.0, 1.0)
        d24 = days[1]
        # reopened after "not satisfied": the reply was cleared, the rating stays
        assert (d24.replied, d24.on_time_rate, d24.rated, d24.satisfaction_rate) == (0, None, 1, 0.0)
        [week] = case_stats(s, cal, dt.date(2026, 11, 23), dt.date(2026, 11, 25), bucket="week")
        assert (week.bucket, week.received, week.rated, week.satisfied) == (dt.date(2026, 11, 23), 4, 2, 1)
        by_channel = case_stats(s, cal, dt.date(2026, 11, 1), dt.date(2026, 12, 1), bucket="month", by="channel")
        # November also holds the cases of the 22nd and the 25th; the discarded test call is not "received"
        assert [(r.group, r.received) for r in by_channel] == [("phone", 5), ("voicemail", 1)]
        by_unit = case_stats(s, cal, dt.date(2026, 11, 23), dt.date(2026, 11, 24), by="unit")
        assert {r.group: r.received for r in by_unit} == {"population": 2, None: 1}  # None: the merged repeat
        assert case_stats(s, cal, dt.date(2030, 1, 1), dt.date(2030, 1, 2)) == []
        assert by_channel[0].as_dict()["bucket"] == "2026-11-01"
        with pytest.raises(ValueError):
            case_stats(s, cal, dt.date(2026, 11, 1), dt.date(2026, 12, 1), by="caller")  # type: ignore[arg-type]
