"""The case state machine and its actions, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from cases import actions as A
from cases.lifecycle import ACTIONS, STATUSES, TRANSITIONS, IllegalTransition, UnknownAction, allowed_actions, check
from cases.models import Case, CaseEvent
from config.db import transaction
from config.errors import HotlineError

SH = ZoneInfo("Asia/Shanghai")
T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=SH)  # a Monday, open
DRAFT_ALLOWED = ["accept", "discard", "reject", "edit", "merge", "mark_key_supervision", "unmark_key_supervision"]
HOSTILE = "<script>alert('x')</script>'; DROP TABLE \"case\"; -- 😀\u202e\r\n名字"


# -- the table, no database ------------------------------------------------------------------


def test_every_action_names_known_statuses() -> None:
    for action, t in TRANSITIONS.items():
        assert set(t.sources) <= set(STATUSES), action
        assert t.to is None or t.to in STATUSES, action


def test_allowed_actions_per_status() -> None:
    assert allowed_actions("draft") == DRAFT_ALLOWED
    assert allowed_actions("accepted")[:3] == ["reject", "edit", "dispatch"]
    assert "answer_directly" in allowed_actions("accepted")
    assert allowed_actions("closed") == ["reopen"]
    assert allowed_actions("merged") == allowed_actions("discarded") == allowed_actions("rejected") == []
    assert allowed_actions("no such status") == []


def test_check_gives_the_next_status_or_lists_what_is_allowed() -> None:
    assert check("accept", "draft") == "accepted"
    assert check("edit", "assigned") == "assigned"
    assert check("return_to_dispatch", "in_progress") == "accepted"
    with pytest.raises(IllegalTransition) as e:
        check("dispatch", "draft")
    assert isinstance(e.value, HotlineError)
    assert e.value.allowed == DRAFT_ALLOWED
    assert "allowed now: accept, discard, reject, edit, merge, mark_key_supervision" in str(e.value)
    with pytest.raises(UnknownAction):
        check("explode", "draft")
    assert set(A.ACTIONS) | {"merge"} == set(ACTIONS)


# -- helpers ---------------------------------------------------------------------------------


def _new(sessions, ctx, **kw) -> int:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        c = A.create_case(
            s, ctx=ctx, actor="op1", channel=kw.pop("channel", "phone"),
            content=kw.pop("content", "建设路派出所民警态度恶劣"), received_at=kw.pop("received_at", T0),
            caller_number=kw.pop("caller_number", "13800138000"), **kw,
        )
        return c.id


def _do(sessions, ctx, case_id: int, fn, **kw):  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        c = s.get(Case, case_id)
        kw.setdefault("expected_version", c.version)
        if fn is not A.merge:
            kw.setdefault("ctx", ctx)
        kw.setdefault("actor", "op1")
        kw.setdefault("now", T0 + dt.timedelta(minutes=5))
        return fn(s, c, **kw)


def _case(sessions, case_id: int) -> Case:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return s.get(Case, case_id)


def _events(sessions, case_id: int) -> list[CaseEvent]:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return list(s.scalars(select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)))


ACCEPT = {"category": "attitude", "handling_form": "general"}


# -- the loop --------------------------------------------------------------------------------


def test_full_loop_writes_an_event_per_step(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _new(sessions, ctx)
    assert _case(sessions, cid).sign_due == T0 + dt.timedelta(minutes=10)
    _do(sessions, ctx, cid, A.accept, **ACCEPT, complainant_name="张三", address="城东区建设路88号")
    c = _case(sessions, cid)
    assert (c.status, c.category, c.accepted_at) == ("accepted", "attitude", T0 + dt.timedelta(minutes=5))
    assert c.contact_due == T0 + dt.timedelta(minutes=35)
    assert c.reply_due == dt.datetime(2026, 11, 30, 9, 5, tzinfo=SH)  # 5 working days
    assert c.final_due == T0 + dt.timedelta(days=30, minutes=5)
    _do(sessions, ctx, cid, A.dispatch, unit="branch_east", assignee="王警官")
    _do(sessions, ctx, cid, A.sign, actor="east1")
    _do(sessions, ctx, cid, A.contact, actor="op1", note="电话联系，来电人同意等待结果")
    _do(sessions, ctx, cid, A.report_result, actor="east1", result="已约谈该民警并责令整改")
    _do(sessions, ctx, cid, A.reply, reply="经核查属实，已责令整改")
    with transaction(sessions) as s:
        evs = A.record_return_visit(s, s.get(Case, cid), ctx=ctx, actor="campaign", outcome="answered",
                                    rating="satisfied", now=T0 + dt.timedelta(days=3))
        assert [e.action for e in evs] == ["start_return_visit", "close"]
    c = _case(sessions, cid)
    assert (c.status, c.satisfaction, c.unit, c.result) == ("closed", "satisfied", "branch_east", "已约谈该民警并责令整改")
    assert c.closed_at == T0 + dt.timedelta(days=3)
    evs = _events(sessions, cid)
    assert [e.action for e in evs] == ["created", "accept", "dispatch", "sign", "contact", "report_result", "reply",
                                       "start_return_visit", "close"]
    assert [e.to_status for e in evs] == ["draft", "accepted", "assigned", "in_progress", "in_progress", "in_progress",
                                          "replied", "return_visit", "closed"]
    assert evs[3].actor == "east1"
    assert evs[1].data["changed"]["category"] == "attitude"
    # personal fields are named in the event, never copied into it
    assert evs[1].data["changed_personal"] == ["address", "complainant_name"]
    assert "张三" not in str(evs[1].data)
    assert evs[-1].data["satisfaction"] == "satisfied"
    assert c.version == 9  # created + 8 updates


def test_consultation_answered_directly(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _new(sessions, ctx, content="请问开无犯罪记录证明要什么材料")
    _do(sessions, ctx, cid, A.accept, category="consultation", handling_form="consultation")
    assert _case(sessions, cid).reply_due is None and _case(sessions, cid).contact_due is None
    with pytest.raises(A.CaseValidationError) as e:
        _do(sessions, ctx, cid, A.dispatch, unit="population")
    assert "handling_form" in e.value.details
    _do(sessions, ctx, cid, A.answer_directly, reply="带身份证到户籍地派出所申请")
    c = _case(sessions, cid)
    assert c.status == "replied" and c.replied_at is not None and c.responded_at == c.replied_at


def test_general_case_cannot_be_answered_directly(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _new(sessions, ctx)
    _do(sessions, ctx, cid, A.accept, **ACCEPT)
    with pytest.raises(A.CaseValidationError) as e:
        _do(sessions, ctx, cid, A.answer_directly, reply="x")
    assert list(e.value.details) == ["handling_form"]


def test_unit_returns_case_with_reason(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _new(sessions, ctx)
    _do(sessions, ctx, cid, A.accept, **ACCEPT)
    _do(sessions, ctx, cid, A.dispatch, unit="traffic_police")
    with pytest.raises(A.CaseValidationError) as e:
        _do(sessions, ctx, cid, A.return_to_dispatch, reason="   ")
    assert e.value.details == {"reason": "required"}
    _do(sessions, ctx, cid, A.return_to_dispatch, reason="不属于交警管辖，系派出所辖区纠纷")
    c = _case(sessions, cid)
    assert (c.status, c.unit, c.assignee) == ("accepted", None, None)
    ev = _events(sessions, cid)[-1]
    assert (ev.action, ev.note, ev.data["unit"]) == ("return_to_dispatch", "不属于交警管辖，系派出所辖区纠纷", "traffic_police")
    _do(sessions, ctx, cid, A.dispatch, unit="branch_east")
    assert _case(sessions, cid).status == "assigned"


def test_reject_and_discard_need_a_reason(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    a, b = _new(sessions, ctx), _new(sessions, ctx, content="")
    with pytest.raises(A.CaseValidationError):
        _do(sessions, ctx, a, A.reject, reason="")
    _do(sessions, ctx, a, A.reject, reason="属于法院审判事项，不在受理范围")
    _do(sessions, ctx, b, A.discard, reason="空白留言")
    assert _case(sessions, a).status == "rejected" and _case(sessions, b).status == "discarded"
    assert _case(sessions, b).responded_at is not None
    with pytest.raises(IllegalTransition) as e:
        _do(sessions, ctx, a, A.accept, **ACCEPT)
    assert e.value.allowed == []


def test_illegal_transition_lists_allowed_and_changes_nothing(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _new(sessions, ctx)
    for fn, kw in ((A.dispatch, {"unit": "branch_east"}), (A.reply, {"reply": "x"}), (A.close, {}),
                   (A.sign, {}), (A.reopen, {"reason": "x"})):
        with pytest.raises(IllegalTransition) as e:
            _do(sessions, ctx, cid, fn, **kw)
        assert e.value.status == "draft"
        assert e.value.allowed == DRAFT_ALLOWED
    assert [e.action for e in _events(sessions, cid)] == ["created"]
    assert _case(sessions, cid).version == 1


def test_stale_version_is_refused(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _new(sessions, ctx)
    _do(sessions, ctx, cid, A.edit, expected_version=1, content="第一次修改")
    with pytest.raises(A.StaleVersion) as e:
        _do(sessions, ctx, cid, A.edit, expected_version=1, content="基于旧版本的修改")
    assert e.value.current == 2 and e.value.expected == 1
    assert _case(sessions, cid).content == "第一次修改"
    with pytest.raises(A.StaleVersion):
        _do(sessions, ctx, cid, A.edit, expected_version=True, content="bool is not a version")
    _do(sessions, ctx, cid, A.edit, expected_version=None, content="no If-Match: background job")
    assert _case(sessions, cid).version == 3


def test_concurrent_writer_between_load_and_flush_is_stale(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _new(sessions, ctx)
    with pytest.raises(A.StaleVersion) as e, transaction(sessions) as s1:
        c1 = s1.get(Case, cid)
        _do(sessions, ctx, cid, A.edit, content="the other writer wins")  # its own transaction, commits
        A.edit(s1, c1, ctx=ctx, actor="op2", expected_version=1, content="lost update", now=T0)
    assert e.value.current is None
    assert _case(sessions, cid).content == "the other writer wins"


def test_validation_details_per_field(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _new(sessions, ctx)
    with pytest.raises(A.CaseValidationError) as e:
        _do(sessions, ctx, cid, A.accept, category="divorce", handling_form="fast", complexity="hard",
            confidential="yes", complainant_name=12, address="x" * 401, status="closed")
    d = e.value.details
    assert set(d) == {"category", "handling_form", "complexity", "confidential", "complainant_name", "address", "status"}
    assert "acceptance scope" in d["category"] and "attitude" in d["category"]
    assert "not an editable field" in d["status"]
    _do(sessions, ctx, cid, A.accept, **ACCEPT)
    with pytest.raises(A.CaseValidationError) as e:
        _do(sessions, ctx, cid, A.dispatch, unit="no_such_unit")
    assert "known unit" in e.value.details["unit"]
    with pytest.raises(A.CaseValidationError) as e:
        _do(sessions, ctx, cid, A.edit, content="nul\x00byte")
    assert "NUL" in e.value.details["content"]
    with pytest.raises(A.CaseValidationError) as e:
        _do(sessions, ctx, cid, A.edit)
    assert "fields" in e.value.details
    with pytest.raises(A.CaseValidationError) as e:
        _do(sessions, ctx, cid, A.edit, actor="", content="x")
    assert "actor" in e.value.details
    with pytest.raises(A.CaseValidationError) as e:
        with transaction(sessions) as s:
            A.create_case(s, ctx=ctx, actor="op1", channel="fax", content="x", received_at=dt.datetime(2026, 1, 1))
    assert set(e.value.details) == {"channel", "received_at"}
    assert _case(sessions, cid).version == 2


def test_hostile_strings_are_stored_as_is(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _new(sessions, ctx, content=HOSTILE, complainant_name=HOSTILE[:120], address=HOSTILE)
    _do(sessions, ctx, cid, A.accept, **ACCEPT, note=HOSTILE)
    _do(sessions, ctx, cid, A.dispatch, unit="branch_east", assignee=HOSTILE[:80])
    c = _case(sessions, cid)
    assert (c.content, c.complainant_name, c.address, c.assignee) == (HOSTILE, HOSTILE[:120], HOSTILE, HOSTILE[:80])
    assert _events(sessions, cid)[1].note == HOSTILE
    with sessions() as s:
        assert s.scalars(select(Case).where(Case.content == HOSTILE)).one().id == cid


def test_edit_recomputes_deadlines(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _new(sessions, ctx)
    _do(sessions, ctx, cid, A.accept, **ACCEPT)
    general = _case(sessions, cid).reply_due
    _do(sessions, ctx, cid, A.edit, complexity="complex", no_call=True)
    c = _case(sessions, cid)
    assert c.reply_due == dt.datetime(2026, 12, 14, 9, 5, tzinfo=SH) != general  # 15 working days
    assert c.contact_due is None  # the reporter asked not to be called back
    assert _events(sessions, cid)[-1].data["changed"] == {"complexity": "complex", "no_call": True}


def test_key_supervision_marks(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _new(sessions, ctx)
    _do(sessions, ctx, cid, A.mark_key_supervision, actor="sup1", note="领导批示")
    assert _case(sessions, cid).key_supervision
    with pytest.raises(A.CaseValidationError):
        _do(sessions, ctx, cid, A.mark_key_supervision, actor="sup1")
    _do(sessions, ctx, cid, A.unmark_key_supervision, actor="sup1")
    assert not _case(sessions, cid).key_supervision
    assert [e.action for e in _events(sessions, cid)][-2:] == ["mark_key_supervision", "unmark_key_supervision"]


def _replied(sessions, ctx) -> int:  # type: ignore[no-untyped-def]
    cid = _new(sessions, ctx)
    _do(sessions, ctx, cid, A.accept, **ACCEPT)
    _do(sessions, ctx, cid, A.dispatch, unit="branch_east")
    _do(sessions, ctx, cid, A.sign)
    _do(sessions, ctx, cid, A.reply, reply="已处理")
    return cid


def test_not_satisfied_reopens_under_key_supervision(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _replied(sessions, ctx)
    later = T0 + dt.timedelta(days=2)
    with transaction(sessions) as s:
        evs = A.record_return_visit(s, s.get(Case, cid), ctx=ctx, actor="campaign", outcome="answered",
                                    rating="not_satisfied", now=later)
    assert [e.action for e in evs] == ["start_return_visit", "reopen"]
    c = _case(sessions, cid)
    assert (c.status, c.key_supervision, c.satisfaction, c.replied_at) == ("accepted", True, "not_satisfied", None)
    assert c.clock_started_at == later and c.reply_due == dt.datetime(2026, 12, 2, 9, 0, tzinfo=SH)


def test_return_visit_attempts_change_nothing(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _replied(sessions, ctx)
    v = _case(sessions, cid).version
    for outcome in ("no_answer", "busy", "unreachable", "answered"):
        with transaction(sessions) as s:
            [ev] = A.record_return_visit(s, s.get(Case, cid), ctx=ctx, actor="campaign", outcome=outcome)
            assert ev.action == "return_visit_attempt" and ev.data["outcome"] == outcome
    c = _case(sessions, cid)
    assert (c.status, c.version, c.satisfaction) == ("replied", v, None)
    with pytest.raises(A.CaseValidationError) as e, transaction(sessions) as s:
        A.record_return_visit(s, s.get(Case, cid), ctx=ctx, actor="c", outcome="busy", rating="satisfied")
    assert "rating" in e.value.details
    with pytest.raises(A.CaseValidationError), transaction(sessions) as s:
        A.record_return_visit(s, s.get(Case, cid), ctx=ctx, actor="c", outcome="answered", rating="happy")
    draft = _new(sessions, ctx)
    with pytest.raises(IllegalTransition), transaction(sessions) as s:
        A.record_return_visit(s, s.get(Case, draft), ctx=ctx, actor="c", outcome="answered", rating="satisfied")
    assert _case(sessions, draft).satisfaction is None


def test_close_without_visit_and_reopen_from_closed(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    cid = _replied(sessions, ctx)
    _do(sessions, ctx, cid, A.close, actor="sup1", note="来电人要求不回访")
    assert _case(sessions, cid).status == "closed"
    _do(sessions, ctx, cid, A.reopen, actor="sup1", reason="来电人再次来电表示不满意")
    assert _case(sessions, cid).status == "accepted" and _case(sessions, cid).closed_at is None


# -- merging ---------------------------------------------------------------------------------


def test_merge_and_timeline_of_the_survivor(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    a = _new(sessions, ctx, content="建设路派出所民警态度差")
    b = _new(sessions, ctx, content="还是建设路派出所民警态度差的事")
    c = _new(sessions, ctx, content="第三次反映建设路派出所")
    with transaction(sessions) as s:
        s.get(Case, b).source_recording_id = 77
        s.get(Case, c).source_recording_id = 78
    _do(sessions, ctx, a, A.accept, **ACCEPT)
    with transaction(sessions) as s:
        A.merge(s, s.get(Case, b), s.get(Case, a), actor="op1", expected_version=2)
    # c merged into b (already merged): follows the chain to a
    with transaction(sessions) as s:
        ev = A.merge(s, s.get(Case, c), s.get(Case, b), actor="op1")
        assert ev.data["into_id"] == a and ev.data["requested_into_id"] == b
    assert _case(sessions, b).merged_into_id == a and _case(sessions, c).merged_into_id == a
    assert [e.action for e in _events(sessions, a)] == ["created", "accept", "merged_in", "merged_in"]
    with sessions() as s:
        tl = A.timeline(s, s.get(Case, a))
        assert sorted(tl.merged_case_ids) == [b, c]
        assert sorted(tl.recording_ids) == [77, 78]
        assert {e.case_id for e in tl.events} == {a, b, c}
        assert [e.at for e in tl.events] == sorted(e.at for e in tl.events)
        from cases.duplicates import repeat_count

        assert repeat_count(s, s.get(Case, a)) == 2


def test_merge_refusals(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    a, b, d = _new(sessions, ctx), _new(sessions, ctx), _new(sessions, ctx)
    with transaction(sessions) as s:
        A.merge(s, s.get(Case, b), s.get(Case, a), actor="op1")
    with pytest.raises(A.CaseValidationError) as e, transaction(sessions) as s:
        A.merge(s, s.get(Case, a), s.get(Case, a), actor="op1")
    assert "itself" in e.value.details["into"]
    with pytest.raises(A.CaseValidationError), transaction(sessions) as s:
        A.merge(s, s.get(Case, a), s.get(Case, b), actor="op1")  # b's survivor is a: a cycle
    _do(sessions, ctx, d, A.discard, reason="测试电话")
    with pytest.raises(A.CaseValidationError) as e, transaction(sessions) as s:
        A.merge(s, s.get(Case, a), s.get(Case, d), actor="op1")
    assert "discarded" in e.value.details["into"]
    with pytest.raises(IllegalTransition), transaction(sessions) as s:
        A.merge(s, s.get(Case, b), s.get(Case, a), actor="op1")  # already merged
    assert _case(sessions, a).status == "draft"
