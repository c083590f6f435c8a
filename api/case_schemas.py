"""The Cases API's request and response schemas, and how a case becomes JSON for one viewer.

Limits here repeat cases/actions.py's (so the OpenAPI document states them); the action
functions still validate everything themselves, the API only rejects earlier.

Who sees what (cases/privacy.py decides the fields, this module applies it):

- detail (GET /cases/{number} and the answers to changes): personal fields as the
  viewer's role may see them, and each unmasked view of a protected (confidential or
  anonymous) reporter is logged in personal_data_view;
- lists and boards: a protected reporter's fields are masked for everyone, so browsing a
  queue never needs a log entry and never shows what nobody asked to see;
- ``extracted`` (phones and addresses the transcription found), recordings and
  transcripts: only for roles that see the personal fields unmasked (operators and
  supervisors), since they carry the same data in other words.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.validation import ApiModel
from cases import privacy
from cases.actions import Timeline
from cases.deadlines import deadline_state
from cases.lifecycle import STATUSES
from cases.models import Case, CaseEvent
from cases.permissions import case_actions
from cases.users import Staff
from config.context import Context

NUMBER_RE = r"^[0-9]{8}-[0-9]{4,6}$"
"""Public case numbers: local receipt day and the day's sequence (20261207-0001)."""
STAFF_CHANNELS = Literal["phone", "web", "email", "letter", "wechat", "walk_in"]
"""Channels staff register cases from; voicemail drafts come only from the recording pipeline."""
LISTENERS = ("operator", "supervisor")
"""Roles that may play recordings (api/recordings.py), and so see them and their transcripts here."""


def _no_nul(v: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; refusing it here keeps a query from becoming a 500.
    if v is not None and "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


def Text(max_length: int, **kw: Any) -> Any:  # noqa: N802 - reads like a type in the models
    return Annotated[str, Field(max_length=max_length, **kw), AfterValidator(_no_nul)]


# --- requests ---------------------------------------------------------------------------


class CaseFields(ApiModel):
    """Editable fields; in a PATCH, a field left out is unchanged and null clears it."""

    complainant_name: Text(120) | None = None
    complainant_phone: Text(40) | None = None
    complainant_unit: Text(200) | None = None
    address: Text(400) | None = None
    content: Text(20000) | None = None
    anonymous: bool | None = None
    confidential: bool | None = None
    no_call: bool | None = Field(None, description="the reporter asked not to be called back")
    category: Text(40) | None = Field(None, description="a code of [cases] categories (GET /open311/v2/services.json)")
    handling_form: Text(20) | None = Field(None, description="a code of [cases.handling_forms]")
    complexity: Literal["general", "complex"] | None = None


class CaseEdit(CaseFields):
    note: Text(4000) | None = None


class CaseCreate(CaseFields):
    channel: STAFF_CHANNELS
    content: Text(20000)  # type: ignore[valid-type]
    caller_number: Text(40) | None = None
    received_at: dt.datetime | None = Field(None, description="when it arrived (a letter days ago); default now")
    note: Text(4000) | None = None


class AcceptBody(CaseFields):
    category: Text(40) = Field(description="a code of [cases] categories (the acceptance scope)")  # type: ignore[valid-type]
    handling_form: Text(20) = Field(description="a code of [cases.handling_forms]")  # type: ignore[valid-type]
    note: Text(4000) | None = None


class ReasonBody(ApiModel):
    reason: Text(4000, min_length=1)  # type: ignore[valid-type]


class NoteBody(ApiModel):
    note: Text(4000) | None = None


class DispatchBody(ApiModel):
    unit: Text(40) = Field(description="a code of [cases] units")  # type: ignore[valid-type]
    assignee: Text(80) | None = None
    note: Text(4000) | None = None


class SignBody(ApiModel):
    assignee: Text(80) | None = None
    note: Text(4000) | None = None


class ResultBody(ApiModel):
    result: Text(20000, min_length=1)  # type: ignore[valid-type]


class ReplyBody(ApiModel):
    reply: Text(20000, min_length=1)  # type: ignore[valid-type]


class MergeBody(ApiModel):
    into: str = Field(pattern=NUMBER_RE, description="number of the case this one repeats")
    note: Text(4000) | None = None


class CaseFilters(ApiModel):
    """Which cases, in which order: the case list's filters, shared by the CSV export."""

    status: str | None = Field(None, max_length=200, description="comma-separated statuses, e.g. draft,accepted")
    channel: Text(20) | None = None
    category: Text(40) | None = None
    unit: Text(40) | None = Field(None, description="responsible unit code")
    handling_form: Text(20) | None = None
    key_supervision: bool | None = None
    overdue: bool | None = Field(None, description="true: only open cases with a deadline passed and not met")
    caller: str | None = Field(None, max_length=40, pattern=r"^[0-9+*#() -]*$",
                               description="digits of the caller's number or the complainant's phone")
    received_from: dt.date | None = Field(None, ge=dt.date(2000, 1, 1), le=dt.date(2100, 1, 1),
                                          description="first local day (inclusive)")
    received_to: dt.date | None = Field(None, ge=dt.date(2000, 1, 1), le=dt.date(2100, 1, 1),
                                        description="last local day (inclusive)")
    q: Text(200) | None = Field(None, description="text in the content, or a case number")
    sort: Literal["-received_at", "received_at", "-updated_at", "updated_at"] = "-received_at"


class CaseListQuery(CaseFilters):
    """The filters, and the page: after which row, how many."""

    cursor: str | None = Field(None, max_length=400, description="next_cursor of the previous page")
    limit: int = Field(50, ge=1, le=500)


# --- responses --------------------------------------------------------------------------


class DeadlineOut(ApiModel):
    name: Literal["sign", "contact", "reply", "final"]
    due: str
    met_at: str | None
    state: Literal["ok", "near", "overdue", "met", "met_late"]
    remaining_seconds: int = Field(description="working time left (negative when late); for a met one, its margin")
    overdue_seconds: int


class CaseSummary(ApiModel):
    number: str
    status: str
    channel: str
    category: str | None
    handling_form: str | None
    unit: str | None
    received_at: dt.datetime
    received_local: str = Field(description="received_at in the centre's time zone, YYYY-MM-DD HH:MM")
    updated_at: dt.datetime
    caller_number: str | None
    complainant_name: str | None
    complainant_phone: str | None
    complainant_unit: str | None
    address: str | None
    masked: list[str] = Field(description="personal fields shown masked to this viewer")
    content: str
    anonymous: bool
    confidential: bool
    key_supervision: bool
    version: int
    deadlines: list[DeadlineOut]


class CaseList(ApiModel):
    items: list[CaseSummary]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last page")


class EventOut(ApiModel):
    id: int
    case: str = Field(description="number of the case the event belongs to (merged cases' events are included)")
    at: dt.datetime
    actor: str
    action: str
    from_status: str | None
    to_status: str | None
    note: str | None
    data: dict[str, Any]


class RecordingOut(ApiModel):
    id: int
    case: str
    kind: str
    duration: float
    received_at: dt.datetime
    audio_url: str


class TranscriptOut(ApiModel):
    recording_id: int
    channel: int
    speaker: Literal["caller", "operator"] = Field(
        description="who speaks on this channel: a conversation is recorded left = caller, right = operator")
    text: str
    confidence: float | None
    model: str
    words: list[dict[str, Any]]


class CaseDetail(CaseSummary):
    category_name: str | None
    unit_name: str | None
    complexity: str
    no_call: bool
    assignee: str | None
    merged_into: str | None
    merged_cases: list[str]
    result: str | None
    reply: str | None
    satisfaction: str | None
    accepted_at: dt.datetime | None
    responded_at: dt.datetime | None
    contacted_at: dt.datetime | None
    replied_at: dt.datetime | None
    closed_at: dt.datetime | None
    extracted: dict[str, Any]
    allowed_actions: list[str] = Field(
        description="what this viewer can do now: the status allows it, the role may run it and the case's "
        "fields do not rule it out (cases/permissions.py, the table the pages use too)")
    events: list[EventOut]
    recordings: list[RecordingOut]
    transcripts: list[TranscriptOut]


class DuplicateOut(ApiModel):
    number: str
    status: str
    received_at: dt.datetime
    score: float = Field(description="content similarity 0-1")
    reasons: list[str]
    same_address: bool
    same_unit: bool
    content: str = Field(description="the first 200 characters")


class Duplicates(ApiModel):
    items: list[DuplicateOut]


class CaseAnswer(ApiModel):
    case: CaseDetail
    event: EventOut | None = Field(None, description="the event this change wrote")
    duplicates: list[DuplicateOut] | None = Field(None, description="likely duplicates (create and accept only)")


class BoardRowOut(ApiModel):
    case: CaseSummary
    late: list[DeadlineOut] = Field(description="the deadlines overdue (or near)")


class Board(ApiModel):
    items: list[BoardRowOut]


# --- building them ----------------------------------------------------------------------


def privacy_role(role: str) -> str:
    """cases/privacy.py names the campaign role campaign_staff."""
    return "campaign_staff" if role == "campaign" else role


def deadlines_out(ctx: Context, c: Case, now: dt.datetime) -> list[DeadlineOut]:
    near = ctx.settings.cases.deadline_near_fraction
    tz = ctx.settings.calendar.tz
    return [DeadlineOut(**d.as_dict(tz)) for d in deadline_state(c, now, ctx.calendar, near_fraction=near)]  # type: ignore[arg-type]


def _summary_fields(ctx: Context, c: Case, personal: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    return dict(
        number=c.number,
        status=c.status,
        channel=c.channel,
        category=c.category,
        handling_form=c.handling_form,
        unit=c.unit,
        received_at=c.received_at,
        received_local=c.received_at.astimezone(ctx.settings.calendar.tz).strftime("%Y-%m-%d %H:%M"),
        updated_at=c.updated_at,
        **personal,
        masked=sorted(f for f in privacy.PERSONAL if personal[f] is not None and personal[f] != getattr(c, f)),
        content=c.content,
        anonymous=c.anonymous,
        confidential=c.confidential,
        key_supervision=c.key_supervision,
        version=c.version,
        deadlines=deadlines_out(ctx, c, now),
    )


def list_personal(s: Session, c: Case, user: Staff) -> dict[str, Any]:
    """Personal fields for a list row (API lists, boards, the queue page): a protected reporter's
    masked for everyone, so browsing never needs a view log entry; otherwise as the role may see them."""
    role = "admin" if privacy.is_protected(c) else privacy_role(user.role)  # admin: everything masked
    return privacy.personal_view(s, c, viewer=user.username, role=role, unit=user.unit)


def summary(s: Session, ctx: Context, c: Case, user: Staff, now: dt.datetime) -> CaseSummary:
    """A list row: a protected reporter's fields masked for everyone (no view to log)."""
    return CaseSummary(**_summary_fields(ctx, c, list_personal(s, c, user), now))


def event_out(e: CaseEvent, numbers: dict[int, str]) -> EventOut:
    return EventOut(id=e.id, case=numbers.get(e.case_id, ""), at=e.at, actor=e.actor, action=e.action,
                    from_status=e.from_status, to_status=e.to_status, note=e.note, data=e.data or {})


def detail(s: Session, ctx: Context, tl: Timeline, user: Staff, now: dt.datetime, *, purpose: str) -> CaseDetail:
    """The full case for ``user``; logs the view when a protected reporter's data is shown unmasked."""
    from recordings.models import Recording
    from transcription.speakers import speaker, transcripts_of

    c = tl.case
    role = privacy_role(user.role)
    personal = privacy.personal_view(s, c, viewer=user.username, role=role, unit=user.unit, purpose=purpose)
    sees_all = privacy.visible_fields(role, c, unit=user.unit) == frozenset(privacy.PERSONAL)
    merged = list(s.scalars(select(Case).where(Case.id.in_(tl.merged_case_ids)).order_by(Case.id))) if tl.merged_case_ids else []
    numbers = {c.id: c.number, **{m.id: m.number for m in merged}}
    by_recording = {m.source_recording_id: m.number for m in (c, *merged) if m.source_recording_id is not None}
    recordings: list[RecordingOut] = []
    transcripts: list[TranscriptOut] = []
    if user.role in LISTENERS and tl.recording_ids:
        for r in s.scalars(select(Recording).where(Recording.id.in_(tl.recording_ids), Recording.deleted_at.is_(None))
                           .order_by(Recording.id)):
            recordings.append(RecordingOut(id=r.id, case=by_recording.get(r.id, c.number), kind=r.kind,
                                           duration=r.duration, received_at=r.received_at,
                                           audio_url=f"/api/v1/recordings/{r.id}/audio"))
        channels = {r.id: r.channels for r in s.scalars(select(Recording).where(Recording.id.in_(tl.recording_ids)))}
        for said in transcripts_of(s, sorted(channels)).values():
            transcripts.extend(TranscriptOut(recording_id=t.recording_id, channel=t.channel,
                                             speaker=speaker(channels[t.recording_id], t.channel),  # type: ignore[arg-type]
                                             text=t.text, confidence=t.confidence, model=t.model,
                                             words=list(t.words or [])) for t in said)
    into = s.get(Case, c.merged_into_id) if c.merged_into_id is not None else None
    cfg = ctx.settings.cases
    return CaseDetail(
        **_summary_fields(ctx, c, personal, now),
        category_name=cfg.category_names().get(c.category or ""),
        unit_name=cfg.unit_names().get(c.unit or ""),
        complexity=c.complexity,
        no_call=c.no_call,
        assignee=c.assignee,
        merged_into=into.number if into else None,
        merged_cases=[m.number for m in merged],
        result=c.result,
        reply=c.reply,
        satisfaction=c.satisfaction,
        accepted_at=c.accepted_at,
        responded_at=c.responded_at,
        contacted_at=c.contacted_at,
        replied_at=c.replied_at,
        closed_at=c.closed_at,
        extracted=(c.extracted or {}) if sees_all else {},
        allowed_actions=case_actions(c, user.role, cfg.handling_forms),
        events=[event_out(e, numbers) for e in tl.events],
        recordings=recordings,
        transcripts=transcripts,
    )


def duplicates_out(s: Session, ctx: Context, c: Case) -> list[DuplicateOut]:
    from cases.duplicates import suggest

    found = suggest(s, c, settings=ctx.settings.cases)
    others = {o.id: o for o in s.scalars(select(Case).where(Case.id.in_([d.case_id for d in found])))} if found else {}
    return [
        DuplicateOut(number=d.number, status=others[d.case_id].status, received_at=others[d.case_id].received_at,
                     score=d.score, reasons=list(d.reasons), same_address=d.same_address, same_unit=d.same_unit,
                     content=others[d.case_id].content[:200])
        for d in found
    ]


def parse_statuses(value: str | None) -> list[str]:
    """"draft,accepted" → the list; unknown names raise ValueError naming them."""
    if not value:
        return []
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in STATUSES]
    if unknown:
        raise ValueError(f"unknown status {', '.join(unknown)!s}; known: {', '.join(STATUSES)}")
    return names
