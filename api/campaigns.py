"""Return-visit campaigns over HTTP, for campaign staff and supervisors.

The domain rules live in campaigns/ (lifecycle, targets, runner); this module only reads
requests, calls them in a thread (the database never runs on the event loop) and maps their
errors: an unknown campaign is 404, a state change the state machine refuses is 409, any
other CampaignError (a window that ends before it starts, a bad phone number, a date range
backwards) is 422 with ``details.fields`` naming the field, like pydantic's own 422s.

Personal data: campaign staff see the number they call and nothing else of the reporter
(cases.privacy: "campaign_staff" sees the phones, none when the reporter asked for no
calls); the results export carries the same and no names, addresses or case text.

CSV uploads (case numbers, do-not-call numbers) are sent as ``text/csv`` bodies; bad rows
come back by line and the good ones are kept.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import USER
from api.context import CTX
from api.errors import ApiError, json_response
from api.openapi import Routes
from api.spreadsheets import BOM, CONTENT_TYPE, attachment, csv_text
from api.validation import ApiModel, parse_body, parse_query
from campaigns.callback_targets import preview_callbacks, select_callbacks
from campaigns.errors import CampaignError, NotFound, StateError, TargetError, WindowError
from campaigns.lifecycle import check_recurrence, create_campaign, progress, transition
from campaigns.models import CANCELLED, PAUSED, RUNNING, SCHEDULED, Campaign, CampaignTarget, DoNotCall, FollowUp
from campaigns.runner import follow_ups
from campaigns.scheduler import next_runs, stored_next_run
from campaigns.targets import (
    MAX_CSV_BYTES,
    PhoneError,
    SELECT_STATUSES,
    add_do_not_call,
    add_targets,
    import_do_not_call,
    preview,
    read_case_numbers_csv,
    remove_do_not_call,
    select_cases,
)
from campaigns.windows import parse_spans, zone
from cases.models import Case
from cases.privacy import mask_phone, visible_fields
from config.context import Context
from config.db import transaction, utcnow

routes = Routes("campaigns")
ROLES = ("campaign", "supervisor")
BASE = "/api/v1/campaigns"
ID = BASE + "/{id}"
"""Plain {id} (tests/test_api_framework.py compares declared paths with the router's); :func:`_id` checks it."""
T = TypeVar("T")

# -- schemas ----------------------------------------------------------------------------------


class Selection(ApiModel):
    """Cases replied or closed in [since, until), optionally of one category or unit; or none (upload a CSV later);
    or "callbacks": the open entries of the callback list (purpose "callback" only)."""

    source: Literal["cases", "csv", "callbacks"] = "cases"
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    statuses: list[Literal["replied", "closed"]] = Field(default_factory=lambda: list(SELECT_STATUSES))
    category: str | None = Field(None, max_length=80)
    unit: str | None = Field(None, max_length=40)


class CampaignCreate(ApiModel):
    name: str = Field(min_length=1, max_length=120)
    purpose: Literal["return_visit", "callback"] = "return_visit"
    selection: Selection = Field(default_factory=Selection)
    windows: list[str] | None = Field(None, min_length=1, max_length=8, description='e.g. ["09:00-12:00", "14:30-20:00"]')
    days: Literal["working_days", "every_day"] | list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None
    timezone: str | None = Field(None, max_length=64)
    max_attempts: int | None = Field(None, ge=1, le=20)
    retry_minutes: int | None = Field(None, ge=1, le=10080)
    concurrency: int | None = Field(None, ge=1, le=200)
    caller_id: str | None = Field(None, pattern=r"^\+?[0-9A-Za-z_.\-]{1,32}$")
    prompt_script: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]{0,39}$")
    recurrence: str | None = Field(None, max_length=120, description='crontab, e.g. "0 9 1 * *" (monthly)')
    start_at: dt.datetime | None = None


class PreviewOut(ApiModel):
    targets: int
    dropped: int
    dropped_by_reason: dict[str, int]


class ProgressOut(ApiModel):
    campaign: str
    state: str
    targets: int
    done: int
    pending: int
    dialing: int
    failed: int
    dropped: int
    ratings: dict[str, int]
    transferred: int = 0
    """Answered targets an operator talked with (choice "operator")."""
    contact_rate: float | None


class CampaignOut(ApiModel):
    id: int
    name: str
    purpose: str
    state: str
    selection: dict[str, Any]
    windows: list[str]
    days: Any
    timezone: str
    max_attempts: int
    retry_minutes: int
    concurrency: int
    caller_id: str
    prompt_script: str
    recurrence: str | None
    start_at: dt.datetime | None
    next_runs: list[dt.datetime] = Field(description="a recurring campaign's next runs by its schedule, in the "
                                                     "centre's time zone (empty when it will not run again)")
    scheduled_run: dt.datetime | None = Field(description="its next run as the scheduler's job holds it (centre's time "
                                                          "zone); null until the running scheduler takes it up, "
                                                          "within one tick")
    created_by: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    progress: ProgressOut


class CampaignCreated(CampaignOut):
    preview: PreviewOut


class CampaignList(ApiModel):
    items: list[CampaignOut]


class TargetOut(ApiModel):
    id: int
    case_number: str | None
    callback_id: int | None = None
    """A callback campaign's target: the callback-list entry."""
    phone: str | None
    state: str
    drop_reason: str | None
    attempts: int
    outcome: str | None
    rating: int | None
    choice: str | None = None
    """What the answered call became besides the survey: operator (transferred), message, callback, abandoned."""
    next_attempt_at: dt.datetime | None


class TargetPreview(PreviewOut):
    items: list[TargetOut]


class LineErrorOut(ApiModel):
    line: int
    message: str


class UploadOut(ApiModel):
    added: int
    preview: PreviewOut
    errors: list[LineErrorOut]


class FollowUpQuery(ApiModel):
    campaign: int | None = Field(None, ge=1)
    open_only: bool = True


class FollowUpOut(ApiModel):
    id: int
    campaign_id: int
    case_number: str | None
    phone: str | None
    reason: str
    created_at: dt.datetime
    done_at: dt.datetime | None
    done_by: str | None


class FollowUpList(ApiModel):
    items: list[FollowUpOut]


class DncIn(ApiModel):
    phone: str = Field(min_length=1, max_length=40)
    reason: str = Field("added by staff", max_length=200)


class DncOut(ApiModel):
    phone: str
    reason: str
    added_by: str
    added_at: dt.datetime


class DncList(ApiModel):
    items: list[DncOut]


class DncImportOut(ApiModel):
    added: int
    errors: list[LineErrorOut]


# -- helpers ----------------------------------------------------------------------------------

FIELD_OF = {WindowError: "windows", PhoneError: "phone", TargetError: "selection"}


def _error(e: CampaignError, field: str | None = None) -> ApiError:
    if isinstance(e, NotFound):
        return ApiError(404, "not_found", str(e))
    if isinstance(e, StateError):
        return ApiError(409, "conflict", str(e))
    name = field or next((f for cls, f in FIELD_OF.items() if isinstance(e, cls)), "(body)")
    return ApiError(422, "validation_failed", f"invalid {name}: {e}",
                    {"fields": [{"field": name, "message": str(e), "type": "value_error"}]})


async def _db(request: web.Request, work: Callable[[Session], T], *, write: bool = True) -> T:
    """Run ``work`` on a session in a thread; campaign errors become API errors."""
    ctx = request.app[CTX]

    def run() -> T:
        if write:
            with transaction(ctx.sessions) as s:
                return work(s)
        with ctx.sessions() as s:
            return work(s)

    try:
        return await asyncio.to_thread(run)
    except CampaignError as e:
        raise _error(e) from None


def _id(request: web.Request, what: str) -> int:
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise NotFound(f"no {what} {text[:40]!r}")
    return int(text)


def _campaign(s: Session, request: web.Request) -> Campaign:
    campaign = s.get(Campaign, _id(request, "campaign"))
    if campaign is None:
        raise NotFound(f"no campaign {request.match_info['id']}")
    return campaign


def campaign_out(s: Session, c: Campaign, ctx: Context) -> CampaignOut:
    tz = ctx.settings.calendar.tz
    stored = stored_next_run(s, c.id) if c.recurrence is not None else None
    return CampaignOut(
        id=c.id, name=c.name, purpose=c.purpose, state=c.state, selection=c.selection or {}, windows=c.windows,
        days=c.days, timezone=c.timezone, max_attempts=c.max_attempts, retry_minutes=c.retry_minutes,
        concurrency=c.concurrency, caller_id=c.caller_id, prompt_script=c.prompt_script, recurrence=c.recurrence,
        start_at=c.start_at, next_runs=[r.astimezone(tz) for r in next_runs(c, ctx.now())],
        scheduled_run=stored.astimezone(tz) if stored is not None else None,
        created_by=c.created_by, created_at=c.created_at, finished_at=c.finished_at,
        progress=ProgressOut(**progress(s, c)),
    )


def _privacy_role(role: str) -> str:
    return "campaign_staff" if role == "campaign" else role


def shown_phone(role: str, case: Case | None, phone: str | None) -> str | None:
    """The target's number as this role may see it (cases.privacy); masked when the reporter asked for no calls."""
    if case is None or "complainant_phone" in visible_fields(_privacy_role(role), case):
        return phone
    return mask_phone(phone)


def _target_out(role: str, t: CampaignTarget, case: Case | None) -> TargetOut:
    return TargetOut(id=t.id, case_number=t.case_number, callback_id=t.callback_id, phone=shown_phone(role, case, t.phone), state=t.state,
                     drop_reason=t.drop_reason, attempts=t.attempts, outcome=t.outcome, rating=t.rating,
                     choice=t.choice, next_attempt_at=t.next_attempt_at)


def _targets(s: Session, campaign_id: int) -> list[tuple[CampaignTarget, Case | None]]:
    rows = s.execute(
        select(CampaignTarget, Case).outerjoin(Case, Case.id == CampaignTarget.case_id)
        .where(CampaignTarget.campaign_id == campaign_id).order_by(CampaignTarget.id)
    ).all()
    return [(t, c) for t, c in rows]


def _stored_preview(s: Session, campaign_id: int) -> PreviewOut:
    counts: dict[str, int] = {}
    targets = 0
    for t, _ in _targets(s, campaign_id):
        if t.drop_reason:
            counts[t.drop_reason] = counts.get(t.drop_reason, 0) + 1
        else:
            targets += 1
    return PreviewOut(targets=targets, dropped=sum(counts.values()), dropped_by_reason=counts)


async def _csv_body(request: web.Request) -> str:
    if request.content_type not in ("text/csv", "text/plain"):
        raise ApiError(415, "unsupported_media_type", "send the CSV as text/csv (UTF-8)")
    raw = await request.read()
    if len(raw) > MAX_CSV_BYTES:
        raise ApiError(413, "body_too_large", f"the CSV is larger than {MAX_CSV_BYTES // 1_000_000} MB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "the CSV is not UTF-8 text") from None


def _actor(request: web.Request) -> str:
    return request[USER].username


# -- campaigns --------------------------------------------------------------------------------


@routes.post(BASE, summary="Create a draft campaign and select its targets", roles=ROLES, body=CampaignCreate,
             response=CampaignCreated, status=201, errors=(409,))
async def create(request: web.Request) -> web.Response:
    body = await parse_body(request, CampaignCreate)
    ctx = request.app[CTX]
    sel = body.selection
    if (sel.source == "callbacks") != (body.purpose == "callback"):
        raise _error(CampaignError('a "callback" campaign selects from source "callbacks" (the callback list), '
                                   "and only it does"), "selection.source")
    if sel.source == "cases" and (sel.since is None or sel.until is None):
        raise _error(TargetError("give selection.since and selection.until (or source \"csv\")"), "selection")
    for name, value in (("selection.since", sel.since), ("selection.until", sel.until), ("start_at", body.start_at)):
        if value is not None and value.tzinfo is None:
            raise _error(CampaignError("give a UTC offset (e.g. +08:00)"), name)
    if sel.since is not None and sel.until is not None and sel.until <= sel.since:
        raise _error(TargetError("the date range ends before it starts"), "selection.until")
    # Checked here, each naming its own field, before the lifecycle checks them all again.
    checks: list[tuple[str, Callable[[], object]]] = [
        ("windows", lambda: parse_spans(body.windows) if body.windows is not None else None),
        ("timezone", lambda: zone(body.timezone) if body.timezone is not None else None),
        ("recurrence", lambda: check_recurrence(body.recurrence, body.timezone or ctx.settings.calendar.timezone)
         if body.recurrence is not None else None),
    ]
    for name, check in checks:
        try:
            check()
        except CampaignError as e:
            raise _error(e, name) from None

    def work(s: Session) -> CampaignCreated:
        campaign = create_campaign(
            s, ctx.settings.campaigns, name=body.name, created_by=_actor(request),
            calendar_timezone=ctx.settings.calendar.timezone, purpose=body.purpose,
            selection=sel.model_dump(mode="json", exclude_none=True), windows=body.windows, days=body.days,
            timezone=body.timezone, max_attempts=body.max_attempts, retry_minutes=body.retry_minutes,
            concurrency=body.concurrency, caller_id=body.caller_id, prompt_script=body.prompt_script,
            recurrence=body.recurrence, start_at=body.start_at,
        )
        if sel.source == "cases":
            assert sel.since is not None and sel.until is not None
            cases = select_cases(s, since=sel.since, until=sel.until, statuses=sel.statuses, category=sel.category,
                                 unit=sel.unit)
            add_targets(s, campaign, preview(s, cases, campaign_id=campaign.id), now=utcnow())
            campaign.last_run_at = sel.until if campaign.recurrence else None
        elif sel.source == "callbacks":
            add_targets(s, campaign, preview_callbacks(s, select_callbacks(s), campaign_id=campaign.id), now=utcnow())
        out = campaign_out(s, campaign, ctx)
        return CampaignCreated(**out.model_dump(), preview=_stored_preview(s, campaign.id))

    def named_once(s: Session) -> None:
        if s.scalar(select(Campaign.id).where(Campaign.name == body.name.strip())) is not None:
            raise ApiError(409, "conflict", f"a campaign named {body.name.strip()!r} exists already")

    await _db(request, named_once, write=False)
    result = await _db(request, work)
    return json_response(result.model_dump(mode="json"), status=201)


@routes.get(BASE, summary="List campaigns with their progress", roles=ROLES, response=CampaignList)
async def list_campaigns(request: web.Request) -> web.Response:
    ctx = request.app[CTX]

    def work(s: Session) -> CampaignList:
        return CampaignList(items=[campaign_out(s, c, ctx) for c in s.scalars(select(Campaign).order_by(Campaign.id.desc()))])

    return json_response((await _db(request, work, write=False)).model_dump(mode="json"))


@routes.get(ID, summary="One campaign", roles=ROLES, response=CampaignOut, errors=(404,))
async def get_one(request: web.Request) -> web.Response:
    result = await _db(request, lambda s: campaign_out(s, _campaign(s, request), request.app[CTX]), write=False)
    return json_response(result.model_dump(mode="json"))


@routes.get(ID + "/preview", summary="Its targets, and how many were dropped and why", roles=ROLES,
            response=TargetPreview, errors=(404,))
async def preview_targets(request: web.Request) -> web.Response:
    role = request[USER].role

    def work(s: Session) -> TargetPreview:
        campaign = _campaign(s, request)
        summary = _stored_preview(s, campaign.id)
        return TargetPreview(**summary.model_dump(), items=[_target_out(role, t, c) for t, c in _targets(s, campaign.id)])

    return json_response((await _db(request, work, write=False)).model_dump(mode="json"))


@routes.get(ID + "/progress", summary="Done / pending / failed, ratings and contact rate", roles=ROLES,
            response=ProgressOut, errors=(404,))
async def get_progress(request: web.Request) -> web.Response:
    result = await _db(request, lambda s: ProgressOut(**progress(s, _campaign(s, request))), write=False)
    return json_response(result.model_dump(mode="json"))


def _state_route(action: str, to: str, summary: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        def work(s: Session) -> CampaignOut:
            campaign = _campaign(s, request)
            transition(s, campaign, to, now=utcnow())
            return campaign_out(s, campaign, request.app[CTX])

        return json_response((await _db(request, work)).model_dump(mode="json"))

    handler.__name__ = f"{action}_campaign"
    routes.post(f"{ID}/{action}", summary=summary, roles=ROLES, response=CampaignOut, errors=(404, 409))(handler)


_state_route("start", SCHEDULED, "Start (schedule) a draft: it dials from start_at, inside its windows")
_state_route("pause", PAUSED, "Pause: no new dials (calls ringing end normally)")
_state_route("resume", RUNNING, "Resume a paused campaign")
_state_route("cancel", CANCELLED, "Cancel: final, no new dials")


@routes.post(ID + "/targets/csv", summary="Add targets from a CSV of case numbers (text/csv body)", roles=ROLES,
             response=UploadOut, errors=(400, 404, 409, 413, 415),
             description="One case number per row, optional `case_number` header. Bad rows are reported by line; "
                         "the good ones are added.")
async def upload_targets(request: web.Request) -> web.Response:
    text = await _csv_body(request)

    def work(s: Session) -> UploadOut:
        campaign = _campaign(s, request)
        if campaign.state in ("finished", "cancelled"):
            raise StateError(f"campaign {campaign.name!r} is {campaign.state}: no targets can be added")
        if campaign.purpose == "callback":
            raise TargetError(f"campaign {campaign.name!r} rings the callback list: it takes no case numbers")
        cases, errors = read_case_numbers_csv(s, text)
        result = preview(s, cases, campaign_id=campaign.id)
        added = add_targets(s, campaign, result, now=utcnow())
        summary = PreviewOut(targets=len(result.callable), dropped=len(result.dropped),
                             dropped_by_reason=result.drop_counts())
        return UploadOut(added=added, preview=summary, errors=[LineErrorOut(line=e.line, message=e.message) for e in errors])

    return json_response((await _db(request, work)).model_dump(mode="json"))


EXPORT_COLUMNS = ("case_number", "phone", "state", "drop_reason", "attempts", "outcome", "rating", "choice",
                  "updated_at")


@routes.get(ID + "/results.csv", summary="Results as CSV (case number, number called, outcome, rating)", roles=ROLES,
            errors=(404,), produces=CONTENT_TYPE)
async def export_results(request: web.Request) -> web.Response:
    role = request[USER].role
    tz = request.app[CTX].settings.calendar.tz

    def work(s: Session) -> str:
        campaign = _campaign(s, request)
        rows = [[t.case_number, shown_phone(role, case, t.phone), t.state, t.drop_reason, t.attempts, t.outcome,
                 t.rating, t.choice, t.updated_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")]
                for t, case in _targets(s, campaign.id)]
        return csv_text([EXPORT_COLUMNS, *rows])

    text = await _db(request, work, write=False)
    return web.Response(body=(BOM + text).encode(),
                        headers=attachment(f"campaign-{request.match_info['id']}.csv"))


# -- follow-up tasks --------------------------------------------------------------------------


def _follow_up_out(f: FollowUp, role: str, case: Case | None) -> FollowUpOut:
    return FollowUpOut(id=f.id, campaign_id=f.campaign_id, case_number=f.case_number,
                       phone=shown_phone(role, case, f.phone), reason=f.reason, created_at=f.created_at,
                       done_at=f.done_at, done_by=f.done_by)


@routes.get(BASE + "/follow-ups", summary="Unreachable targets to reach by SMS or letter", roles=ROLES,
            query=FollowUpQuery, response=FollowUpList)
async def list_follow_ups(request: web.Request) -> web.Response:
    q = parse_query(request, FollowUpQuery)
    role = request[USER].role

    def work(s: Session) -> FollowUpList:
        items = [f for f in follow_ups(s, open_only=q.open_only) if q.campaign is None or f.campaign_id == q.campaign]
        return FollowUpList(items=[_follow_up_out(f, role, s.get(Case, f.case_id) if f.case_id else None) for f in items])

    return json_response((await _db(request, work, write=False)).model_dump(mode="json"))


@routes.post(BASE + "/follow-ups/{id}/done", summary="Mark a follow-up task done", roles=ROLES,
             response=FollowUpOut, errors=(404, 409))
async def follow_up_done(request: web.Request) -> web.Response:
    role = request[USER].role

    def work(s: Session) -> FollowUpOut:
        f = s.get(FollowUp, _id(request, "follow-up task"))
        if f is None:
            raise NotFound(f"no follow-up task {request.match_info['id']}")
        if f.done_at is not None:
            raise StateError(f"follow-up task {f.id} was done already by {f.done_by}")
        f.done_at, f.done_by = utcnow(), _actor(request)
        s.flush()
        return _follow_up_out(f, role, s.get(Case, f.case_id) if f.case_id else None)

    return json_response((await _db(request, work)).model_dump(mode="json"))


# -- do-not-call ------------------------------------------------------------------------------


def _dnc_out(d: DoNotCall) -> DncOut:
    return DncOut(phone=d.phone, reason=d.reason, added_by=d.added_by, added_at=d.added_at)


@routes.get(BASE + "/dnc", summary="The do-not-call list", roles=ROLES, response=DncList)
async def list_dnc(request: web.Request) -> web.Response:
    def work(s: Session) -> DncList:
        return DncList(items=[_dnc_out(d) for d in s.scalars(select(DoNotCall).order_by(DoNotCall.added_at.desc()))])

    return json_response((await _db(request, work, write=False)).model_dump(mode="json"))


@routes.post(BASE + "/dnc", summary="Put a number on the do-not-call list (pending targets with it are dropped)",
             roles=ROLES, body=DncIn, response=DncOut, status=201)
async def add_dnc(request: web.Request) -> web.Response:
    body = await parse_body(request, DncIn)

    def work(s: Session) -> tuple[DncOut, bool]:
        entry, created = add_do_not_call(s, body.phone, reason=body.reason, added_by=_actor(request))
        return _dnc_out(entry), created

    out, created = await _db(request, work)
    return json_response(out.model_dump(mode="json"), status=201 if created else 200)


@routes.delete(BASE + "/dnc/{phone}", summary="Take a number off the do-not-call list", roles=ROLES, status=204,
               errors=(404,))
async def remove_dnc(request: web.Request) -> web.Response:
    phone = request.match_info["phone"]

    def work(s: Session) -> None:
        if not remove_do_not_call(s, phone):
            raise NotFound(f"{phone[:40]} is not on the do-not-call list")

    await _db(request, work)
    return web.Response(status=204)


@routes.post(BASE + "/dnc/import", summary="Import phone[,reason] rows (text/csv body); bad rows by line",
             roles=ROLES, response=DncImportOut, errors=(400, 413, 415))
async def import_dnc(request: web.Request) -> web.Response:
    text = await _csv_body(request)

    def work(s: Session) -> DncImportOut:
        added, errors = import_do_not_call(s, text, added_by=_actor(request), default_reason="imported")
        return DncImportOut(added=added, errors=[LineErrorOut(line=e.line, message=e.message) for e in errors])

    return json_response((await _db(request, work)).model_dump(mode="json"))


# Static paths (/dnc, /follow-ups) before /{id}, so "dnc" is never taken for a campaign id.
routes.endpoints.sort(key=lambda e: "{id}" in e.path)

__all__ = ["routes"]
