"""One function per case action: transition, version, validation, changes, deadlines, event.

Every function takes ``(session, case, *, ctx, actor, expected_version, …fields)`` and, in
this order:

1. checks the transition (:func:`cases.lifecycle.check` → ``IllegalTransition``, 409);
2. compares ``expected_version`` with ``case.version`` explicitly (``StaleVersion``, 409):
   API requests carry the version they saw (If-Match), so a stale edit is refused even
   when the row was loaded fresh for this request; ``None`` skips the check (background
   jobs such as the campaign dialer); a concurrent writer between load and flush is
   still caught by the mapper's ``version_id_col`` and reported the same way;
3. validates every field at once (``CaseValidationError`` with per-field details, 422);
4. applies the changes, recomputes deadlines where their inputs changed;
5. writes one ``CaseEvent`` with the actor, from/to status, note, and the changed fields
   in ``data`` (personal fields by name only: the timeline is shown to unit handlers
   and must not leak a confidential reporter's details).

``ctx`` is anything with ``.settings`` (for ``[cases]``) and ``.calendar`` (a
``WorkCalendar``): the service's ``config.context.Context``. ``now`` defaults to the
database clock helper ``utcnow`` and exists so tests and replays can fix the time.

Strings are stored exactly as given (markup, quotes, SQL, emoji); only NUL characters
are refused, since PostgreSQL text cannot hold them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from cases import deadlines
from cases.lifecycle import (
    CLOSED,
    DISCARDED,
    DRAFT,
    MERGED,
    REJECTED,
    REPLIED,
    RETURN_VISIT,
    IllegalTransition,
    LifecycleError,
    allowed_actions,
    check,
)
from cases.models import Case, CaseEvent
from cases.numbers import next_number
from config.calendar import WorkCalendar
from config.db import utcnow
from config.settings import HandlingForm, Settings

CHANNELS = ("phone", "voicemail", "web", "email", "letter", "wechat", "walk_in")
COMPLEXITIES = ("general", "complex")
SATISFIED, BASICALLY_SATISFIED, NOT_SATISFIED = "satisfied", "basically_satisfied", "not_satisfied"
RATINGS = (SATISFIED, BASICALLY_SATISFIED, NOT_SATISFIED)
VISIT_OUTCOMES = ("answered", "no_answer", "busy", "refused", "invalid_number", "unreachable")
"""Return-visit call outcomes; "unreachable" is the campaign giving up after its last attempt."""
PERSONAL_FIELDS = ("complainant_name", "complainant_phone", "complainant_unit", "address")
MAX_NOTE = 4000

_TEXT_LIMITS = {
    "complainant_name": 120,
    "complainant_phone": 40,
    "complainant_unit": 200,
    "address": 400,
    "caller_number": 40,
    "content": 20000,
    "assignee": 80,
}
_FLAGS = ("anonymous", "confidential", "no_call")
EDITABLE = (*PERSONAL_FIELDS, "content", *_FLAGS, "category", "handling_form", "complexity")


class HasRules(Protocol):
    settings: Settings
    calendar: WorkCalendar


class StaleVersion(LifecycleError):
    """The case changed since the client read it (HTTP 409); ``current`` is the version now stored."""

    def __init__(self, current: int | None, expected: int | None = None) -> None:
        what = f"now version {current}" if current is not None else "changed by a concurrent update"
        super().__init__(f"the case was changed by someone else ({what}, you had {expected}); reload and retry")
        self.current = current
        self.expected = expected


class CaseValidationError(LifecycleError):
    """Field values the action cannot take (HTTP 422); ``details`` maps field → what is wrong."""

    def __init__(self, details: dict[str, str]) -> None:
        super().__init__("invalid case fields: " + "; ".join(f"{k}: {v}" for k, v in details.items()))
        self.details = details


@dataclass
class _Change:
    """Validated field values collected for one action, with per-field problems."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def text(self, name: str, value: Any, *, limit: int, required: bool = False) -> None:
        if value is None:
            if required:
                self.errors[name] = "required"
            else:
                self.values[name] = None
            return
        if not isinstance(value, str):
            self.errors[name] = f"must be text, not {type(value).__name__}"
        elif "\x00" in value:
            self.errors[name] = "must not contain NUL characters"
        elif len(value) > limit:
            self.errors[name] = f"at most {limit} characters (got {len(value)})"
        elif required and not value.strip():
            self.errors[name] = "required"
        else:
            self.values[name] = value

    def flag(self, name: str, value: Any) -> None:
        if not isinstance(value, bool):
            self.errors[name] = f"must be true or false, not {value!r}"
        else:
            self.values[name] = value

    def choice(self, name: str, value: Any, allowed: Any, what: str) -> None:
        choices = list(allowed)
        if not isinstance(value, str) or value not in choices:
            self.errors[name] = f"{value!r} is not {what}; one of: {', '.join(choices)}"
        else:
            self.values[name] = value

    def raise_if_any(self) -> None:
        if self.errors:
            raise CaseValidationError(self.errors)


def _fields(ch: _Change, ctx: HasRules, fields: dict[str, Any]) -> None:
    """Validate editable case fields given by keyword (unknown names are errors too)."""
    cfg = ctx.settings.cases
    for name, value in fields.items():
        if name in _TEXT_LIMITS and name in EDITABLE:
            ch.text(name, value, limit=_TEXT_LIMITS[name], required=name == "content")
        elif name in _FLAGS:
            ch.flag(name, value)
        elif name == "category":
            ch.choice(name, value, cfg.category_names(), "in the acceptance scope ([cases] categories)")
        elif name == "handling_form":
            ch.choice(name, value, cfg.handling_forms, "a handling form ([cases.handling_forms])")
        elif name == "complexity":
            ch.choice(name, value, COMPLEXITIES, "a complexity")
        else:
            ch.errors[name] = f"not an editable field; editable: {', '.join(sorted(EDITABLE))}"


def _form(ctx: HasRules, case: Case) -> HandlingForm | None:
    return ctx.settings.cases.handling_forms.get(case.handling_form or "")


def _recompute_clock(ctx: HasRules, case: Case) -> None:
    """Contact / reply / final due from the clock start, after a form, complexity or contact change."""
    form = _form(ctx, case)
    if form is None or case.clock_started_at is None:
        return
    d = deadlines.clock_deadlines(
        ctx.calendar,
        case.clock_started_at,
        form,
        complex_case=case.complexity == "complex",
        contactable=deadlines.contactable(case),
    )
    case.contact_due, case.reply_due, case.final_due = d.contact_due, d.reply_due, d.final_due


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _apply(
    session: Session,
    case: Case,
    action: str,
    *,
    actor: str,
    expected_version: int | None,
    ch: _Change,
    note: str | None = None,
    now: dt.datetime | None = None,
    after: Callable[[Case, dt.datetime], None] | None = None,
    data: dict[str, Any] | None = None,
    validate: Callable[[_Change], None] | None = None,
) -> CaseEvent:
    """The common steps of every action (see the module docstring)."""
    to_status = check(action, case.status)
    if expected_version is not None and (isinstance(expected_version, bool) or expected_version != case.version):
        raise StaleVersion(case.version, expected_version)
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 80 or "\x00" in actor:
        ch.errors["actor"] = "a user name of 1-80 characters is required"
    if note is not None:
        ch.text("note", note, limit=MAX_NOTE)
        ch.values.pop("note", None)
    if validate is not None:
        validate(ch)
    ch.raise_if_any()

    now = now or utcnow()
    from_status = case.status
    changed: dict[str, Any] = {}
    personal: list[str] = []
    for name, value in ch.values.items():
        if getattr(case, name) == value:
            continue
        setattr(case, name, value)
        if name in PERSONAL_FIELDS:
            personal.append(name)
        else:
            changed[name] = _json(value)
    case.status = to_status
    if after is not None:
        after(case, now)
    event_data: dict[str, Any] = dict(data or {})
    if changed:
        event_data["changed"] = changed
    if personal:
        event_data["changed_personal"] = sorted(personal)
    event = CaseEvent(
        case_id=case.id,
        at=now,
        actor=actor,
        action=action,
        from_status=from_status,
        to_status=to_status,
        note=note,
        data=event_data,
    )
    session.add(event)
    try:
        session.flush()
    except StaleDataError:
        raise StaleVersion(None, expected_version) from None
    return event


# -- creating ------------------------------------------------------------------------------


def create_case(
    session: Session,
    *,
    ctx: HasRules,
    actor: str,
    channel: str,
    content: str,
    received_at: dt.datetime | None = None,
    caller_number: str | None = None,
    note: str | None = None,
    **fields: Any,
) -> Case:
    """A new draft case from any channel, with its sign-and-route deadline and a "created" event."""
    ch = _Change()
    ch.choice("channel", channel, CHANNELS, "a channel")
    ch.text("caller_number", caller_number, limit=_TEXT_LIMITS["caller_number"])
    # A draft may be empty (a silent voicemail, to be discarded); accepting needs content.
    ch.text("content", content, limit=_TEXT_LIMITS["content"])
    _fields(ch, ctx, fields)
    if received_at is not None and (not isinstance(received_at, dt.datetime) or received_at.tzinfo is None):
        ch.errors["received_at"] = "must be an aware datetime"
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 80:
        ch.errors["actor"] = "a user name of 1-80 characters is required"
    if note is not None:
        ch.text("note", note, limit=MAX_NOTE)
        ch.values.pop("note")
    ch.raise_if_any()
    received = (received_at or utcnow()).astimezone(dt.UTC)
    ch.values["content"] = ch.values.get("content") or ""
    case = Case(number=next_number(session, ctx.calendar.tz, received), status=DRAFT, received_at=received)
    for name, value in ch.values.items():
        setattr(case, name, value)
    case.sign_due = deadlines.sign_due(ctx.calendar, received, _form(ctx, case))
    session.add(case)
    session.flush()
    session.add(
        CaseEvent(
            case_id=case.id,
            at=received,
            actor=actor,
            action="created",
            from_status=None,
            to_status=DRAFT,
            note=note,
            data={"channel": channel},
        )
    )
    session.flush()
    return case


# -- the centre ----------------------------------------------------------------------------


def accept(
    session: Session,
    case: Case,
    *,
    ctx: HasRules,
    actor: str,
    expected_version: int | None,
    category: str,
    handling_form: str,
    complexity: str = "general",
    note: str | None = None,
    now: dt.datetime | None = None,
    **fields: Any,
) -> CaseEvent:
    """Register a draft: edit its fields, classify it within the acceptance scope, choose the handling form."""
    ch = _Change()
    _fields(ch, ctx, {"category": category, "handling_form": handling_form, "complexity": complexity, **fields})
    if "content" not in fields and not (case.content or "").strip():
        ch.errors["content"] = "required: a case cannot be accepted without content"

    def after(c: Case, t: dt.datetime) -> None:
        c.accepted_at = c.clock_started_at = t
        if c.sign_due is None:  # drafts from voicemail arrive without one
            c.sign_due = deadlines.sign_due(ctx.calendar, c.received_at, _form(ctx, c))
        _recompute_clock(ctx, c)

    return _apply(session, case, "accept", actor=actor, expected_version=expected_version, ch=ch, note=note,
                  now=now, after=after)


def edit(
    session: Session,
    case: Case,
    *,
    ctx: HasRules,
    actor: str,
    expected_version: int | None,
    note: str | None = None,
    now: dt.datetime | None = None,
    **fields: Any,
) -> CaseEvent:
    """Change fields while work is ahead (draft … in_progress); deadlines follow form/complexity/no_call."""
    ch = _Change()
    if not fields:
        ch.errors["fields"] = "nothing to change"
    _fields(ch, ctx, fields)
    return _apply(session, case, "edit", actor=actor, expected_version=expected_version, ch=ch, note=note,
                  now=now, after=lambda c, t: _recompute_clock(ctx, c))


def _reason(ch: _Change, reason: Any) -> None:
    ch.text("reason", reason, limit=MAX_NOTE, required=True)
    ch.values.pop("reason", None)


def _responded(c: Case, t: dt.datetime) -> None:
    if c.responded_at is None:
        c.responded_at = t


def reject(
    session: Session, case: Case, *, ctx: HasRules, actor: str, expected_version: int | None, reason: str,
    now: dt.datetime | None = None,
) -> CaseEvent:
    """Out of the acceptance scope: refuse it, with the reason the caller is told."""
    ch = _Change()
    _reason(ch, reason)
    return _apply(session, case, "reject", actor=actor, expected_version=expected_version, ch=ch, note=reason,
                  now=now, after=_responded)


def discard(
    session: Session, case: Case, *, ctx: HasRules, actor: str, expected_version: int | None, reason: str,
    now: dt.datetime | None = None,
) -> CaseEvent:
    """An empty message or a test call: drop the draft, with the reason."""
    ch = _Change()
    _reason(ch, reason)
    return _apply(session, case, "discard", actor=actor, expected_version=expected_version, ch=ch, note=reason,
                  now=now, after=_responded)


def dispatch(
    session: Session, case: Case, *, ctx: HasRules, actor: str, expected_version: int | None, unit: str,
    assignee: str | None = None, note: str | None = None, now: dt.datetime | None = None,
) -> CaseEvent:
    """Route an accepted general case to the responsible unit."""
    ch = _Change()
    ch.choice("unit", unit, ctx.settings.cases.unit_names(), "a known unit ([cases] units)")
    ch.text("assignee", assignee, limit=_TEXT_LIMITS["assignee"])
    form = _form(ctx, case)
    if form is not None and form.direct:
        ch.errors["handling_form"] = f"{case.handling_form!r} is answered directly, not dispatched; change the form first"
    return _apply(session, case, "dispatch", actor=actor, expected_version=expected_version, ch=ch, note=note,
                  now=now, after=_responded, data={"unit": unit})


def answer_directly(
    session: Session, case: Case, *, ctx: HasRules, actor: str, expected_version: int | None, reply: str,
    now: dt.datetime | None = None,
) -> CaseEvent:
    """Consultation / emergency transfer: the centre replies itself (accepted → replied)."""
    ch = _Change()
    ch.text("reply", reply, limit=20000, required=True)
    form = _form(ctx, case)
    if form is None or not form.direct:
        ch.errors["handling_form"] = f"{case.handling_form!r} is not answered directly; dispatch it to a unit"

    def after(c: Case, t: dt.datetime) -> None:
        _responded(c, t)
        c.replied_at = t

    return _apply(session, case, "answer_directly", actor=actor, expected_version=expected_version, ch=ch,
                  now=now, after=after)


# -- the unit ------------------------------------------------------------------------------


def sign(
    session: Session, case: Case, *, ctx: HasRules, actor: str, expected_version: int | None,
    assignee: str | None = None, note: str | None = None, now: dt.datetime | None = None,
) -> CaseEvent:
    """The unit signs for the case and starts on it (assigned → in_progress)."""
    ch = _Change()
    if assignee is not None:
        ch.text("assignee", assignee, limit=_TEXT_LIMITS["assignee"])
    return _apply(session, case, "sign", actor=actor, expected_version=expected_version, ch=ch, note=note, now=now)


def return_to_dispatch(
    session: Session, case: Case, *, ctx: HasRules, actor: str, expected_version: int | None, reason: str,
    now: dt.datetime | None = None,
) -> CaseEvent:
    """Not this unit's business: back to the centre for re-dispatch, with a reason. Deadlines keep running."""
    ch = _Change()
    _reason(ch, reason)
    ch.values.update(unit=None, assignee=None)
    return _apply(session, case, "return_to_dispatch", actor=actor, expected_version=expected_version, ch=ch,
                  note=reason, now=now, data={"unit": case.unit})


def report_result(
    session: Session, case: Case, *, ctx: HasRules, actor: str, expected_version: int | None, result: str,
    now: dt.datetime | None = None,
) -> CaseEvent:
    """The unit's report of what it did and found."""
    ch = _Change()
    ch.text("result", result, limit=20000, required=True)
    return _apply(session, case, "report_result", actor=actor, expected_version=expected_version, ch=ch, now=now)


def contact(
    session: Session, case: Case, *, ctx: HasRules, actor: str, expected_version: int | None,
    note: str | None = None, now: dt.datetime | None = None,
) -> CaseEvent:
    """Record that the caller was contacted (meets the contact deadline)."""

    def after(c: Case, t: dt.datetime) -> None:
        if c.contacted_at is None:
            c.contacted_at = t

    return _apply(session, case, "contact", actor=actor, expected_version=expected_version, ch=_Change(),
                  note=note, now=now, after=after)


def reply(
    session: Session, case: Case, *, ctx: HasRules, actor: str, expected_version: int | None, reply: str,
    now: dt.datetime | None = None,
) -> CaseEvent:
    """Reply to the caller with the outcome (in_progress → replied)."""
    ch = _Change()
    ch.text("reply", reply, limit=20000, required=True)

    def after(c: Case, t: dt.datetime) -> None:
        c.replied_at = t

    return _apply(session, case, "reply", actor=actor, expected_version=expected_version, ch=ch, now=now,
                  after=after)


# -- after the reply -----------------------------------------------------------------------


def start_return_visit(
    session: Session, case: Case, *, ctx: HasRules, actor: str, expected_version: int | None,
    note: str | None = None, now: dt.datetime | None = None,
) -> CaseEvent:
    return _apply(session, case, "start_return_visit", actor=actor, expected_version=expected_version,
                  ch=_Change(), note=note, now=now)


def close(
    session: Session, case: Case, *, ctx: HasRules, actor: str, expected_version: int | None,
    note: str | None = None, now: dt.datetime | None = None,
) -> CaseEvent:
    """Archive a replied or visited case."""

    def after(c: Case, t: dt.datetime) -> None:
        c.closed_at = t

    return _apply(session, case, "close", actor=actor, expected_version=expected_version, ch=_Change(),
                  note=note, now=now, after=after)


def reopen(
    session: Session, case: Case, *, ctx: HasRules, actor: str, expected_version: int | None, reason: str,
    now: dt.datetime | None = None,
) -> CaseEvent:
    """Back to accepted under key supervision; the sign/contact/reply/final clocks start again."""
    ch = _Change()
    _reason(ch, reason)
    ch.values["key_supervision"] = True

    def after(c: Case, t: dt.datetime) -> None:
        c.replied_at = c.closed_at = c.responded_at = c.contacted_at = None
        c.clock_started_at = t
        c.sign_due = deadlines.sign_due(ctx.calendar, t, _form(ctx, c))
        _recompute_clock(ctx, c)

    return _apply(session, case, "reopen", actor=actor, expected_version=expected_version, ch=ch, note=reason,
                  now=now, after=after)


def mark_key_supervision(
    session: Session, case: Case, *, ctx: HasRules, actor: str, expected_version: int | None,
    note: str | None = None, now: dt.datetime | None = None,
) -> CaseEvent:
    ch = _Change()
    if case.key_supervision:
        ch.errors["key_supervision"] = "already marked"
    ch.values["key_supervision"] = True
    return _apply(session, case, "mark_key_supervision", actor=actor, expected_version=expected_version, ch=ch,
                  note=note, now=now)


def unmark_key_supervision(
    session: Session, case: Case, *, ctx: HasRules, actor: str, expected_version: int | None,
    note: str | None = None, now: dt.datetime | None = None,
) -> CaseEvent:
    ch = _Change()
    if not case.key_supervision:
        ch.errors["key_supervision"] = "not marked"
    ch.values["key_supervision"] = False
    return _apply(session, case, "unmark_key_supervision", actor=actor, expected_version=expected_version, ch=ch,
                  note=note, now=now)


def record_return_visit(
    session: Session,
    case: Case,
    *,
    ctx: HasRules,
    actor: str,
    outcome: str,
    rating: str | None = None,
    note: str | None = None,
    now: dt.datetime | None = None,
) -> list[CaseEvent]:
    """What a return-visit call found (called by the campaign engine, no If-Match).

    - answered with a rating: the satisfaction is stored; a replied case passes through
      return_visit; satisfied / basically satisfied close the case, not satisfied reopens it
      under key supervision (its clocks restart);
    - anything else (no answer, busy, refused, invalid number, answered without a rating,
      unreachable after the last attempt): one "return_visit_attempt" event, no change.
    """
    ch = _Change()
    ch.choice("outcome", outcome, VISIT_OUTCOMES, "a return-visit outcome")
    if rating is not None:
        ch.choice("rating", rating, RATINGS, "a satisfaction rating")
        if outcome != "answered":
            ch.errors["rating"] = "only an answered call has a rating"
    if note is not None:
        ch.text("note", note, limit=MAX_NOTE)
    ch.raise_if_any()
    if case.status not in (REPLIED, RETURN_VISIT, CLOSED):
        raise IllegalTransition("record_return_visit", case.status, allowed_actions(case.status))
    now = now or utcnow()
    data = {"outcome": outcome, "rating": rating}
    if rating is None or (case.status == CLOSED and rating != NOT_SATISFIED):
        # No status change: an attempt, or a late "satisfied" for an archived case.
        if rating is not None:
            case.satisfaction = rating
        ev = CaseEvent(case_id=case.id, at=now, actor=actor, action="return_visit_attempt",
                       from_status=case.status, to_status=case.status, note=note, data=data)
        session.add(ev)
        session.flush()
        return [ev]
    events = []
    if case.status == REPLIED:
        events.append(start_return_visit(session, case, ctx=ctx, actor=actor, expected_version=None, now=now))
    case.satisfaction = rating
    if rating == NOT_SATISFIED:
        events.append(reopen(session, case, ctx=ctx, actor=actor, expected_version=None,
                             reason=note or "caller not satisfied at the return visit", now=now))
    else:
        events.append(close(session, case, ctx=ctx, actor=actor, expected_version=None, note=note, now=now))
    events[-1].data = {**events[-1].data, **data, "satisfaction": rating}
    session.flush()
    return events


# -- merging -------------------------------------------------------------------------------


def survivor(session: Session, case: Case) -> Case:
    """The case at the end of a merge chain (``case`` itself when it was not merged)."""
    seen = {case.id}
    while case.merged_into_id is not None:
        nxt = session.get(Case, case.merged_into_id)
        if nxt is None or nxt.id in seen:  # pragma: no cover - merge() never builds a cycle
            break
        seen.add(nxt.id)
        case = nxt
    return case


def merge(
    session: Session,
    case: Case,
    into: Case,
    *,
    actor: str,
    expected_version: int | None = None,
    note: str | None = None,
    now: dt.datetime | None = None,
) -> CaseEvent:
    """Merge a repeat into another case: status merged, ``merged_into`` set, an event on both.

    Merging into a case that was itself merged follows the chain to its survivor (the
    operator meant "the same matter"); merging into itself, into a case that was merged
    into this one, or into a rejected / discarded case is refused.
    """
    target = survivor(session, into)
    ch = _Change()

    def validate(c: _Change) -> None:
        if target.id == case.id:
            c.errors["into"] = "a case cannot be merged into itself (or a case merged into it)"
        elif target.status in (REJECTED, DISCARDED, MERGED):
            c.errors["into"] = f"case {target.number} is {target.status}; merge into a live case"

    ch.values["merged_into_id"] = target.id
    event = _apply(session, case, "merge", actor=actor, expected_version=expected_version, ch=ch, note=note,
                   now=now, validate=validate,
                   data={"into_id": target.id, "into_number": target.number, "requested_into_id": into.id})
    session.add(CaseEvent(case_id=target.id, at=event.at, actor=actor, action="merged_in",
                          from_status=target.status, to_status=target.status, note=note,
                          data={"case_id": case.id, "case_number": case.number}))
    session.flush()
    return event


@dataclass(frozen=True)
class Timeline:
    case: Case
    events: list[CaseEvent]
    """The case's events and those of every case merged into it (recursively), oldest first."""
    merged_case_ids: list[int]
    recording_ids: list[int]
    """Source recordings of the case and the merged ones (load them from recordings.models)."""


def merged_cases(session: Session, case: Case) -> list[Case]:
    """Every case merged into ``case``, directly or through a chain."""
    found: list[Case] = []
    frontier = [case.id]
    while frontier:
        batch = list(session.scalars(select(Case).where(Case.merged_into_id.in_(frontier)).order_by(Case.id)))
        found += batch
        frontier = [c.id for c in batch]
    return found


def timeline(session: Session, case: Case) -> Timeline:
    merged = merged_cases(session, case)
    ids = [case.id, *(c.id for c in merged)]
    events = list(
        session.scalars(select(CaseEvent).where(CaseEvent.case_id.in_(ids)).order_by(CaseEvent.at, CaseEvent.id))
    )
    recordings = [c.source_recording_id for c in (case, *merged) if c.source_recording_id is not None]
    return Timeline(case, events, [c.id for c in merged], recordings)


ACTIONS: dict[str, Callable[..., CaseEvent]] = {
    "accept": accept,
    "edit": edit,
    "reject": reject,
    "discard": discard,
    "dispatch": dispatch,
    "answer_directly": answer_directly,
    "sign": sign,
    "return_to_dispatch": return_to_dispatch,
    "report_result": report_result,
    "contact": contact,
    "reply": reply,
    "start_return_visit": start_return_visit,
    "close": close,
    "reopen": reopen,
    "mark_key_supervision": mark_key_supervision,
    "unmark_key_supervision": unmark_key_supervision,
}
"""Action name → function taking ctx, for the API's one POST /cases/{id}/actions/{name} route
(``merge`` takes a second case and has no ctx, so the API calls it by itself)."""

