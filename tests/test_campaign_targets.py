"""Target selection, CSV import, phone checks, preview drop reasons and do-not-call, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from campaigns.errors import StateError, TargetError
from campaigns.lifecycle import transition
from campaigns.models import DROPPED, PENDING, CampaignTarget, DoNotCall
from campaigns.targets import (
    PhoneError,
    add_do_not_call,
    add_targets,
    import_do_not_call,
    normalise_phone,
    preview,
    read_case_numbers_csv,
    remove_do_not_call,
    select_cases,
)
from campaign_support import at, make_case, new_campaign
from cases.models import Case, CaseEvent
from config.db import transaction


@pytest.mark.parametrize(
    ("raw", "e164"),
    [("13800138000", "+8613800138000"), ("138 0013 8000", "+8613800138000"), ("+86-138-0013-8000", "+8613800138000"),
     ("010 6552 9988", "+861065529988"), ("(021) 6321 5678", "+862163215678")],
)
def test_phone_normalised(raw: str, e164: str) -> None:
    assert normalise_phone(raw) == e164


@pytest.mark.parametrize("raw", ["", "  ", "12345", "not a number", "1380013800", "00000000000", "138001380001234567",
                                 "13800138000; DROP TABLE case", "１３８００１３８０００x", None, 13800138000, ["138"]])
def test_bad_phones(raw: object) -> None:
    with pytest.raises(PhoneError):
        normalise_phone(raw)


def test_select_by_reply_time_and_category(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        make_case(s, "20260901-0001", "13800138001", reached=at("2026-09-05 10:00"), category="conduct")
        make_case(s, "20260901-0002", "13800138002", status="closed", reached=at("2026-09-06 10:00"))
        make_case(s, "20260901-0003", "13800138003", reached=at("2026-08-31 23:59"))  # before the range
        make_case(s, "20260901-0004", "13800138004", status="in_progress", reached=at("2026-09-05 10:00"))
        make_case(s, "20260901-0005", "13800138005", reached=at("2026-09-10 00:00"))  # end excluded
        got = select_cases(s, since=at("2026-09-01 00:00"), until=at("2026-09-10 00:00"))
        assert [c.number for c in got] == ["20260901-0001", "20260901-0002"]
        got = select_cases(s, since=at("2026-09-01 00:00"), until=at("2026-09-10 00:00"), category="conduct")
        assert [c.number for c in got] == ["20260901-0001"]
        with pytest.raises(TargetError, match="ends"):
            select_cases(s, since=at("2026-09-10 00:00"), until=at("2026-09-01 00:00"))
        with pytest.raises(TargetError, match="not \\['in_progress'\\]"):
            select_cases(s, since=at("2026-09-01 00:00"), until=at("2026-09-10 00:00"), statuses=["in_progress"])
        s.get(Case, got[0].id).unit = "traffic"
        s.flush()
        got = select_cases(s, since=at("2026-09-01 00:00"), until=at("2026-09-10 00:00"), unit="traffic")
        assert [c.number for c in got] == ["20260901-0001"]
        assert select_cases(s, since=at("2026-09-01 00:00"), until=at("2026-09-10 00:00"), unit="'; DROP TABLE case") == []


def test_csv_bad_rows_reported_by_line_good_rows_kept(sessions) -> None:  # type: ignore[no-untyped-def]
    text = (
        "\ufeffcase_number,comment\n"
        "20260901-0001,ok\n"
        "2026-09-01,bad format\n"
        "\n"
        "20260901-9999,unknown\n"
        "\"20260901-0002\",quoted ok\n"
        "'; DROP TABLE case; --,hostile\n"
        "20260901-0001,duplicate\n"
    )
    with transaction(sessions) as s:
        make_case(s, "20260901-0001", "13800138001")
        make_case(s, "20260901-0002", "13800138002")
        cases, errors = read_case_numbers_csv(s, text)
        assert [c.number for c in cases] == ["20260901-0001", "20260901-0002", "20260901-0001"]
        assert [e.line for e in errors] == [3, 5, 7]
        assert "not a case number" in str(errors[0]) and "no case 20260901-9999" in str(errors[1])
        assert str(errors[2]).startswith("line 7: ")
        result = preview(s, cases)
        assert result.drop_counts() == {"duplicate": 1}
        cases, errors = read_case_numbers_csv(s, "")
        assert cases == [] and errors == []


def test_preview_drop_reasons(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        ok = make_case(s, "20260901-0001", "138 0013 8001")
        make_case(s, "20260901-0002", None)
        make_case(s, "20260901-0003", "12345")
        make_case(s, "20260901-0004", "13800138004")
        visited = make_case(s, "20260901-0005", "13800138005")
        merged = make_case(s, "20260901-0006", "13800138006", status="merged")
        add_do_not_call(s, "+8613800138004", reason="asked", added_by="staff")
        earlier = new_campaign(s, "August")
        s.add(CampaignTarget(campaign_id=earlier.id, case_id=visited.id, case_number=visited.number,
                             phone="+8613800138005", state="done", outcome="answered", rating=1))
        s.flush()
        cases = select_cases(s, since=at("2026-09-01 00:00"), until=at("2026-09-30 00:00"), statuses=["replied"])
        result = preview(s, [*cases, merged])
        reasons = {c.case_number: c.drop_reason for c in result.candidates}
        assert reasons == {"20260901-0001": None, "20260901-0002": "no_phone", "20260901-0003": "invalid_phone",
                           "20260901-0004": "do_not_call", "20260901-0005": "already_visited",
                           "20260901-0006": "case_merged"}
        assert [c.phone for c in result.callable] == ["+8613800138001"]
        summary = result.as_dict()
        assert summary["targets"] == 1 and summary["dropped"] == 5
        campaign = new_campaign(s)
        assert add_targets(s, campaign, result) == 1
        states = {t.case_number: (t.state, t.drop_reason) for t in s.scalars(select(CampaignTarget).where(CampaignTarget.campaign_id == campaign.id))}
        assert states["20260901-0001"] == (PENDING, None) and states["20260901-0002"] == (DROPPED, "no_phone")
        # selecting again for the same campaign never adds a case twice
        again = preview(s, [ok], campaign_id=campaign.id)
        assert again.drop_counts() == {"already_targeted": 1} and add_targets(s, campaign, again) == 0


def test_schedule_needs_targets_and_states_are_checked(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        campaign = new_campaign(s)
        with pytest.raises(StateError, match="no targets"):
            transition(s, campaign, "scheduled")
        with pytest.raises(StateError, match="cannot become running"):
            transition(s, campaign, "running")
        transition(s, campaign, "cancelled")
        with pytest.raises(StateError, match="final"):
            transition(s, campaign, "scheduled")


def test_do_not_call_add_remove_import(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        case = make_case(s, "20260901-0001", "13800138001")
        campaign = new_campaign(s)
        add_targets(s, campaign, preview(s, [case]))
        entry, created = add_do_not_call(s, "138-0013-8001", reason="  ", added_by="staff")
        assert created and entry.phone == "+8613800138001" and entry.reason == "no reason given"
        assert add_do_not_call(s, "+86 138 0013 8001", reason="again", added_by="x")[1] is False
        target = s.scalars(select(CampaignTarget)).one()
        assert (target.state, target.drop_reason) == (DROPPED, "do_not_call")  # the pending target left the list
        with pytest.raises(PhoneError):
            add_do_not_call(s, "abc", reason="x", added_by="staff")
        assert remove_do_not_call(s, "13800138001") and not remove_do_not_call(s, "13800138001")
        added, errors = import_do_not_call(
            s, "phone,reason\n13800138002,complained\nnonsense\n13800138003\n\n13800138002,dup\n", added_by="staff",
            default_reason="imported",
        )
        assert added == 2 and [e.line for e in errors] == [3]
        assert {d.phone: d.reason for d in s.scalars(select(DoNotCall))} == {
            "+8613800138002": "complained", "+8613800138003": "imported"}


def test_no_call_reporters_and_visits_in_the_case_history(sessions) -> None:  # type: ignore[no-untyped-def]
    """Reporters who asked for no calls are dropped (confidential ones named so); a rating in the case's own
    history after its last reply counts as visited, one before a later reply does not."""
    with transaction(sessions) as s:
        secret = make_case(s, "20260901-0001", "13800138001")
        secret.confidential, secret.no_call = True, True
        plain = make_case(s, "20260901-0002", "13800138002")
        plain.no_call = True
        phoned = make_case(s, "20260901-0003", "13800138003", reached=at("2026-09-05 10:00"))
        s.add(CaseEvent(case_id=phoned.id, actor="staff", action="start_return_visit", from_status="replied",
                        to_status="return_visit", at=at("2026-09-06 10:00")))
        again = make_case(s, "20260901-0004", "13800138004", reached=at("2026-09-05 10:00"))
        s.add(CaseEvent(case_id=again.id, actor="campaign", action="reopen", from_status="return_visit",
                        to_status="accepted", at=at("2026-09-06 10:00"), data={"rating": "not_satisfied"}))
        s.add(CaseEvent(case_id=again.id, actor="unit", action="reply", from_status="in_progress",
                        to_status="replied", at=at("2026-09-20 10:00")))
        s.flush()
        reasons = {c.case_number: c.drop_reason for c in preview(s, [secret, plain, phoned, again]).candidates}
        assert reasons == {"20260901-0001": "confidential_no_calls", "20260901-0002": "no_calls_requested",
                           "20260901-0003": "already_visited", "20260901-0004": None}
