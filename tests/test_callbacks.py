"""The callback list and the queue's Call-row bookkeeping and statistics, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from queue_fakes import seed_operators

from cases import callbacks
from cases.callbacks import CallbackConflict, CallbackError, CallbackNotFound
from config.db import transaction
from ivr.models import Call
from ivr.queue import Connection, Operator
from ivr.queue_calls import queue_stats, record_wait
from ivr.waiting import WaitOutcome

T0 = dt.datetime(2026, 12, 7, 1, 0, tzinfo=dt.UTC)


class NoLeg:
    async def hangup(self) -> None:  # pragma: no cover - never called here
        raise AssertionError


@pytest.mark.parametrize(("given", "expected"), [
    ("13812345678", "13812345678"), ("+8613812345678", "13812345678"), ("010-12345678", "01012345678"),
    ("+44 20 7946 0018", "00442079460018"),
    ("anonymous", None), ("", None), (None, None), ("12", None), ("1" * 60, None), ("<script>", None), (13812345678, None),
])
def test_dialable(given, expected) -> None:  # type: ignore[no-untyped-def]
    assert callbacks.dialable(given) == expected


@pytest.fixture(autouse=True)
def _operators(sessions) -> None:  # type: ignore[no-untyped-def]
    seed_operators(sessions, range(1, 21))



def test_add_folds_repeat_callers_while_open(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        first = callbacks.add(s, "+8613812345678", "abandoned", call_id=1, now=T0)
        again = callbacks.add(s, "13812345678", "requested", call_id=2)
        other = callbacks.add(s, "13900000000", "requested", call_id=3)
    assert again.id == first.id and again.calls == 2 and again.reason == "requested" and again.call_id == 1
    assert other.id != first.id
    with transaction(sessions) as s:
        callbacks.claim(s, first.id, 5)
        callbacks.complete(s, first.id, 5, "reached", "答复已告知")
    with transaction(sessions) as s:  # done: a new call makes a new entry
        assert callbacks.add(s, "13812345678", "abandoned", call_id=4).id not in (first.id, other.id)


@pytest.mark.parametrize(("phone", "reason"), [("anonymous", "abandoned"), ("13812345678", "bored"), ("138", "requested")])
def test_add_refuses_bad_input(sessions, phone, reason) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s, pytest.raises(CallbackError):
        callbacks.add(s, phone, reason)


def test_list_claim_done(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        ids = [callbacks.add(s, f"1380000000{i}", "abandoned", now=T0).id for i in range(5)]
    with transaction(sessions) as s:
        page = callbacks.listing(s, limit=2)
        assert [c.id for c in page] == ids[:2]
        assert [c.id for c in callbacks.listing(s, limit=2, after_id=page[-1].id)] == ids[2:4]
        callbacks.claim(s, ids[0], user_id=7)
        assert callbacks.claim(s, ids[0], user_id=7).claimed_by == 7  # again: harmless
    with transaction(sessions) as s:
        with pytest.raises(CallbackConflict, match="claimed by user 7"):
            callbacks.claim(s, ids[0], user_id=8)
        with pytest.raises(CallbackConflict, match="claimed by user 7"):
            callbacks.complete(s, ids[0], 8, "reached")
        with pytest.raises(CallbackConflict, match="claim it"):
            callbacks.complete(s, ids[1], 8, "reached")
    with transaction(sessions) as s:
        done = callbacks.complete(s, ids[0], 7, "no_answer", note="占线 ' OR 1=1 --")
        assert done.done_at is not None and done.outcome == "no_answer"
    with transaction(sessions) as s:
        assert [c.id for c in callbacks.listing(s)] == ids[1:]
        assert callbacks.listing(s, state="claimed") == []
        assert [c.note for c in callbacks.listing(s, state="done")] == ["占线 ' OR 1=1 --"]
        assert len(callbacks.listing(s, state="all")) == 5
        with pytest.raises(CallbackConflict, match="already done"):
            callbacks.claim(s, ids[0], 7)
        with pytest.raises(CallbackConflict, match="already done"):
            callbacks.complete(s, ids[0], 7, "reached")


def test_bad_ids_states_outcomes_and_notes(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        cid = callbacks.add(s, "13812345678", "requested").id
        callbacks.claim(s, cid, 1)
    with transaction(sessions) as s:
        for bad_id in (999, "1", None, True):
            with pytest.raises(CallbackNotFound):
                callbacks.claim(s, bad_id, 1)
        for state in ("pending", "", "open; --"):
            with pytest.raises(CallbackError, match="state must be"):
                callbacks.listing(s, state=state)
        for limit in (0, 501, "10", True):
            with pytest.raises(CallbackError, match="limit"):
                callbacks.listing(s, limit=limit)
        with pytest.raises(CallbackError, match="outcome"):
            callbacks.complete(s, cid, 1, "happy")
        for note in ("x" * 2001, "nul\x00byte", 42):
            with pytest.raises(CallbackError, match="note"):
                callbacks.complete(s, cid, 1, "reached", note)


def _call(s, caller: str | None, **kw) -> Call:  # type: ignore[no-untyped-def]
    row = Call(sip_call_id="x", caller=caller, started_at=T0, answered_at=T0, **kw)
    s.add(row)
    s.flush()
    return row


def test_abandoned_call_goes_on_the_callback_list(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        row = _call(s, "+8613812345678", disposition="voicemail")
        made = record_wait(s, row, WaitOutcome("abandoned", entered_at=T0, waited=42.5))
        assert made is not None and made.reason == "abandoned" and made.call_id == row.id
        anon = _call(s, "anonymous")
        assert record_wait(s, anon, WaitOutcome("abandoned", entered_at=T0, waited=3.0)) is None
        never = _call(s, "13900000000", disposition="voicemail")
        assert record_wait(s, never, WaitOutcome("no_operators")) is None
    with sessions() as s:
        got = s.get(Call, row.id)
        assert got.disposition == "abandoned" and got.queue_exit == "abandoned" and got.queue_wait_seconds == 42.5
        assert s.get(Call, anon.id).disposition == "abandoned"
        assert s.get(Call, never.id).queue_entered_at is None and s.get(Call, never.id).disposition == "voicemail"
        assert [c.phone for c in callbacks.listing(s)] == ["13812345678"]


def test_an_outbound_call_abandoned_in_the_queue_is_called_back_on_the_number_we_dialled(sessions) -> None:  # type: ignore[no-untyped-def]
    """A campaign callee who asked for an operator and hung up while waiting: the row's caller is the centre."""
    with transaction(sessions) as s:
        row = _call(s, "12389", direction="out", called="13812345679", disposition="campaign")
        made = record_wait(s, row, WaitOutcome("abandoned", entered_at=T0, waited=20.0))
        assert made is not None and (made.phone, made.call_id) == ("13812345679", row.id)


def test_queue_statistics(sessions) -> None:  # type: ignore[no-untyped-def]
    def outcome(exit_: str, waited: float, minute: int, operator: int | None = None) -> WaitOutcome:
        conn = None if operator is None else Connection(Operator(operator), NoLeg(), waited, T0)
        return WaitOutcome(exit_, entered_at=T0 + dt.timedelta(minutes=minute), waited=waited, connection=conn)

    with transaction(sessions) as s:
        for o in (outcome("operator", 5, 1, 7), outcome("operator", 14.9, 2, 8), outcome("operator", 40, 3, 7),
                  outcome("abandoned", 20, 4), outcome("timeout", 120, 5), outcome("voicemail_key", 0.5, 6),
                  outcome("operator", 1, 90, 7)):  # outside the period
            record_wait(s, _call(s, "13812345678"), o)
        _call(s, "13812345678")  # not queued at all
    with sessions() as s:
        st = queue_stats(s, T0, T0 + dt.timedelta(hours=1))
        assert (st.queued, st.answered, st.answered_within, st.abandoned) == (6, 3, 2, 1)
        assert st.service_level == pytest.approx(2 / 6) and st.abandonment_rate == pytest.approx(1 / 6)
        assert st.average_wait_seconds == pytest.approx((5 + 14.9 + 40 + 20 + 120 + 0.5) / 6)
        assert st.average_answer_seconds == pytest.approx((5 + 14.9 + 40) / 3)
        empty = queue_stats(s, T0 - dt.timedelta(days=1), T0)
        assert empty.queued == 0 and empty.service_level is None and empty.average_wait_seconds is None
        with pytest.raises(ValueError, match="naive"):
            queue_stats(s, dt.datetime(2026, 12, 7), T0)
