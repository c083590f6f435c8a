"""Case pages: the queue, a case with its timeline and action forms, the draft review.

Reading goes through the domain functions (deadline_state, timeline, duplicates.suggest,
privacy.personal_view); every change is a small form posting to a route here that calls
the one cases.actions function for it, with the version the page was rendered from (a
stale form is refused with 409, like the API's If-Match). Errors the action raises are
shown on the page the form came from, with what was typed kept: the review page for
accept / discard (and a draft's merge), the case page for every other action.

Who sees what: the queue and the case page are for every case role (operators,
supervisors and unit handlers); a unit handler's queue holds only their unit's cases and
another unit's case is a 404 page, like the API (api.cases.can_see). The case page offers
a form for each action the case's status allows *and* the viewer's role may run
(cases.permissions, the table the API's routes are declared with), and each form's route
is declared with the same roles, so a forged post from another role is a 403. The draft
review is for the centre (operators and supervisors).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

from aiohttp import web
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import USER
from api.case_export import EXPORT_PATH
from api.case_schemas import LISTENERS, NUMBER_RE, list_personal, privacy_role
from api.cases import can_see
from api.context import CTX
from api.errors import ApiError
from api.openapi import Routes
from api.pages import PageError, page, render_page
from api.validation import ApiModel, parse_query
from cases import actions, duplicates
from cases.deadlines import DeadlineState, deadline_state
from cases.actions import CaseValidationError, StaleVersion
from cases.lifecycle import DRAFT, OPEN, STATUSES, IllegalTransition, LifecycleError, allowed_actions
from cases.models import Case
from cases.permissions import ACTION_ROLES, CASE_ROLES, CENTRE, EXPORTERS, case_actions, permitted_actions
from cases.users import Staff
from cases.privacy import personal_view
from config.context import Context
from config.db import transaction
from recordings.models import Recording
from transcription.extract import low_confidence
from transcription.models import Transcript
from transcription.speakers import speaker, transcripts_of

routes = Routes("pages")
CASE_STAFF = CENTRE
"""The draft review is the centre's."""
MAX_ID = 2**31 - 1
"""Ids are 32-bit integers: a larger one cannot exist (and PostgreSQL refuses to compare it)."""
PAGE_SIZE = 100
SEVERITY = {"overdue": 3, "near": 2, "ok": 1}
TEXT_FIELDS = ("complainant_name", "complainant_phone", "complainant_unit", "address")
FLAGS = ("anonymous", "confidential", "no_call")


class QueueQuery(ApiModel):
    status: Literal["open", "all", *STATUSES] = "open"  # type: ignore[valid-type]
    channel: Literal["", *actions.CHANNELS] = ""  # type: ignore[valid-type]
    category: str = Field("", max_length=80)
    unit: str = Field("", max_length=40)
    deadline: Literal["", "overdue", "near"] = ""
    key: Literal["", "1"] = ""
    before: int | None = Field(None, ge=1)
    lang: Literal["zh", "en"] | None = None


def export_link(q: QueueQuery) -> str | None:
    """The CSV export (api/case_export.py) of the cases this queue shows, in the API's filter
    words; None for the "deadline near" filter, which the export has no equivalent of (an
    export of more cases than the page shows would be a wrong file, not a convenience)."""
    if q.deadline == "near":
        return None
    params: dict[str, str] = {}
    if q.status != "all":
        params["status"] = ",".join(OPEN) if q.status == "open" else q.status
    for name in ("channel", "category", "unit"):
        if getattr(q, name):
            params[name] = getattr(q, name)
    if q.deadline == "overdue":
        params["overdue"] = "true"
    if q.key:
        params["key_supervision"] = "true"
    return EXPORT_PATH + ("?" + urlencode(params) if params else "")


def worst(states: list[DeadlineState]) -> DeadlineState | None:
    """The deadline to colour a row by: the most urgent one not met yet (overdue, then near, then ok)."""
    running = [d for d in states if d.met_at is None]
    return max(running, key=lambda d: (SEVERITY[d.state], -d.remaining), default=None)


def path_id(request: web.Request, missing: str = "error.no_case") -> int:
    """The {id} of the path; anything but an id that can exist is a 404 page.

    (Plain {id} rather than a {id:\\d+} pattern: route declarations are matched to the
    router by their canonical path.)
    """
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10 and 1 <= int(raw) <= MAX_ID):
        raise PageError(404, missing)
    return int(raw)


def load_case(s: Session, cid: int, user: Staff) -> Case:
    """The case, or the 404 page: for an unknown id and, alike, for another unit's case
    (a 403 would confirm that it exists)."""
    case = s.get(Case, cid)
    if case is None or not can_see(user, case):
        raise PageError(404, "error.no_case")
    return case


def choices(ctx: Context) -> dict[str, Any]:
    cfg = ctx.settings.cases
    return {
        "categories": cfg.category_names(),
        "units": cfg.unit_names(),
        "forms": {code: f.name for code, f in cfg.handling_forms.items()},
        "complexities": actions.COMPLEXITIES,
    }


# --- the queue -----------------------------------------------------------------------------


@routes.get("/cases", summary="The case queue (page)", roles=CASE_ROLES, document=False)
@page
async def queue(request: web.Request) -> web.Response:
    try:
        q = parse_query(request, QueueQuery)
    except ApiError as e:
        raise PageError(400, "error.bad_query", e.message) from None
    ctx, user = request.app[CTX], request[USER]
    now = ctx.now()
    near = ctx.settings.cases.deadline_near_fraction
    unit = user.unit if user.role == "unit_handler" else q.unit  # a unit handler's queue is their unit's

    def load() -> dict[str, Any]:
        stmt = select(Case).order_by(Case.id.desc())
        if q.status == "open":
            stmt = stmt.where(Case.status.in_(OPEN))
        elif q.status != "all":
            stmt = stmt.where(Case.status == q.status)
        for name in ("channel", "category"):
            if getattr(q, name):
                stmt = stmt.where(getattr(Case, name) == getattr(q, name))
        if unit:
            stmt = stmt.where(Case.unit == unit)
        if q.key:
            stmt = stmt.where(Case.key_supervision.is_(True))
        if q.before is not None:
            stmt = stmt.where(Case.id < min(q.before, MAX_ID))
        rows, last_id = [], None
        with ctx.sessions() as s:
            # The deadline filter needs the working-time state, computed here: read in pages until full.
            for case in s.scalars(stmt.limit(PAGE_SIZE * (5 if q.deadline else 1))):
                last_id = case.id
                state = worst(deadline_state(case, now, ctx.calendar, near_fraction=near))
                if q.deadline and (state is None or state.state != q.deadline):
                    continue
                rows.append({"case": case, "deadline": state, "personal": list_personal(s, case, user)})
                if len(rows) == PAGE_SIZE:
                    break
        more = last_id is not None and len(rows) == PAGE_SIZE
        return {"rows": rows, "next_before": last_id if more else None}

    data = await asyncio.to_thread(load)
    exporter = user.role in EXPORTERS
    return await render_page(request, "queue.html", {"q": q, "statuses": STATUSES, "channels": actions.CHANNELS,
                                                     "unit_queue": user.role == "unit_handler", "exporter": exporter,
                                                     "export_url": export_link(q) if exporter else None,
                                                     **choices(ctx), **data})


# --- one case ------------------------------------------------------------------------------


def _personal(s: Session, case: Case, request: web.Request, purpose: str) -> dict[str, Any]:
    user = request[USER]
    return personal_view(s, case, viewer=user.username, role=privacy_role(user.role), unit=user.unit, purpose=purpose)


def page_actions(ctx: Context, case: Case, role: str) -> list[str]:
    """The action forms the case page offers ``role``: what the role can do to the case now
    (cases.permissions.case_actions, the API's ``allowed_actions`` too), less accept and discard,
    which are on the draft review page (with the recording), as is the merge of a draft."""
    review_only = {"accept", "discard"} | ({"merge"} if case.status == DRAFT else set())
    return [a for a in case_actions(case, role, ctx.settings.cases.handling_forms) if a not in review_only]


def merge_suggestions(s: Session, ctx: Context, case: Case) -> list[dict[str, Any]]:
    """The likely duplicates to merge ``case`` into (cases.duplicates), each with its case row."""
    suggestions = duplicates.suggest(s, case, settings=ctx.settings.cases)
    others = {c.id: c for c in s.scalars(select(Case).where(Case.id.in_([x.case_id for x in suggestions])))}
    return [{"s": x, "case": others[x.case_id]} for x in suggestions if x.case_id in others]


def said(s: Session, recordings: list[Recording]) -> dict[int, list[dict[str, Any]]]:
    """Each recording's transcripts as the pages show them: who spoke (left caller, right operator) and what."""
    channels = {r.id: r.channels for r in recordings}
    return {rid: [{"channel": t.channel, "speaker": speaker(channels[rid], t.channel), "text": t.text} for t in ts]
            for rid, ts in transcripts_of(s, channels).items()}


def case_context(s: Session, ctx: Context, request: web.Request, case: Case) -> dict[str, Any]:
    """What the case page shows the viewer: fields (personal ones per privacy), deadlines, timeline, forms."""
    user = request[USER]
    tl = actions.timeline(s, case)
    merged_into = s.get(Case, case.merged_into_id) if case.merged_into_id else None
    recs = [r for r in (s.get(Recording, i) for i in tl.recording_ids) if r is not None and r.deleted_at is None] \
        if user.role in LISTENERS else []
    can = page_actions(ctx, case, user.role)
    return {
        "case": case,
        "personal": _personal(s, case, request, "case detail"),
        "deadlines": deadline_state(case, ctx.now(), ctx.calendar,
                                    near_fraction=ctx.settings.cases.deadline_near_fraction),
        "events": tl.events,
        "numbers": {c.id: c.number for c in s.scalars(select(Case).where(Case.id.in_(
            [e.case_id for e in tl.events])))},
        "merged_into": merged_into,
        "recordings": recs,
        "said": said(s, recs),
        "allowed": allowed_actions(case.status),
        "can": can,
        "suggestions": merge_suggestions(s, ctx, case) if "merge" in can else [],
        "segments": SEGMENTS,
        "form": {},
        "field_errors": {},
        "message": None,
        "failed": None,
    }


@routes.get("/cases/{id}", summary="A case with its timeline and action forms (page)", roles=CASE_ROLES,
            document=False)
@page
async def detail(request: web.Request) -> web.Response:
    ctx, cid = request.app[CTX], path_id(request)

    def load() -> dict[str, Any]:
        with transaction(ctx.sessions) as s:  # personal_view may log the view of a protected reporter
            return case_context(s, ctx, request, load_case(s, cid, request[USER]))

    data = await asyncio.to_thread(load)
    return await render_page(request, "case.html", {**choices(ctx), **data})


# --- the draft review ----------------------------------------------------------------------


def review_context(s: Session, ctx: Context, request: web.Request, case: Case) -> dict[str, Any]:
    """What the review page shows: the audio, the transcript words, the prefilled fields, duplicates."""
    threshold = ctx.settings.transcription.low_confidence
    recording = s.get(Recording, case.source_recording_id) if case.source_recording_id else None
    transcript = s.get(Transcript, case.source_transcript_id) if case.source_transcript_id else None
    words = [
        {"word": str(w.get("word", "")), "start": float(w.get("start", 0.0)), "end": float(w.get("end", 0.0)),
         "conf": w.get("conf"), "low": bool(low_confidence([w], threshold))}
        for w in (transcript.words if transcript else [])
        if isinstance(w, dict)
    ]
    return {
        "case": case,
        "personal": _personal(s, case, request, "draft review"),
        "recording": recording if recording is not None and recording.deleted_at is None else None,
        "words": words,
        "threshold": threshold,
        "suggestions": merge_suggestions(s, ctx, case),
        "allowed": allowed_actions(case.status),
        "form": {},
        "field_errors": {},
        "message": None,
        "failed": None,
    }


@routes.get("/cases/{id}/review", summary="Review a draft (page)", roles=CASE_STAFF, document=False)
@page
async def review(request: web.Request) -> web.Response:
    ctx, cid = request.app[CTX], path_id(request)

    def load() -> dict[str, Any]:
        with transaction(ctx.sessions) as s:
            return review_context(s, ctx, request, load_case(s, cid, request[USER]))

    data = await asyncio.to_thread(load)
    return await render_page(request, "review.html", {**choices(ctx), **data})


# --- the forms -----------------------------------------------------------------------------


def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _optional(form: Any, name: str) -> str | None:
    """A free-text field that may be left empty (a note, an assignee): empty is "not given"."""
    return _text(form, name).strip() or None


def _version(form: Any) -> int:
    raw = _text(form, "version")
    if not raw.isdigit() or len(raw) > 9:
        raise PageError(400, "error.bad_form", "version")
    return int(raw)


def accept_fields(form: Any) -> dict[str, Any]:
    """The review form as accept()'s keywords: an empty personal field is "not given" (None)."""
    fields: dict[str, Any] = {name: _optional(form, name) for name in TEXT_FIELDS}
    fields |= {name: _text(form, name) == "1" for name in FLAGS}
    fields["content"] = _text(form, "content")
    return fields


def edit_fields(form: Any, case: Case) -> dict[str, Any]:
    """The edit form as edit()'s keywords: only the fields that differ from the case (an unchanged
    form is "nothing to change", not an empty event); an unchosen category or form is left as it is."""
    fields = accept_fields(form)
    fields |= {name: _text(form, name) for name in ("category", "handling_form", "complexity") if _text(form, name)}
    changed = {k: v for k, v in fields.items() if getattr(case, k) != v}
    return {**changed, "note": _optional(form, "note")}


FormReader = Callable[[Any, Case], dict[str, Any]]


@dataclass(frozen=True)
class PageAction:
    """A case-page form: the action it runs, its URL segment, and how its fields become the action's keywords."""

    action: str
    segment: str
    read: FormReader


def _reason(form: Any, case: Case) -> dict[str, Any]:
    return {"reason": _text(form, "reason")}


def _note(form: Any, case: Case) -> dict[str, Any]:
    return {"note": _optional(form, "note")}


PAGE_ACTIONS = (
    PageAction("edit", "edit", edit_fields),
    PageAction("reject", "reject", _reason),
    PageAction("dispatch", "dispatch", lambda f, c: {"unit": _text(f, "unit"), "assignee": _optional(f, "assignee"),
                                                     "note": _optional(f, "note")}),
    PageAction("answer_directly", "answer", lambda f, c: {"reply": _text(f, "reply")}),
    PageAction("sign", "sign", lambda f, c: {"assignee": _optional(f, "assignee"), "note": _optional(f, "note")}),
    PageAction("return_to_dispatch", "return", _reason),
    PageAction("report_result", "result", lambda f, c: {"result": _text(f, "result")}),
    PageAction("contact", "contact", _note),
    PageAction("reply", "reply", lambda f, c: {"reply": _text(f, "reply")}),
    PageAction("start_return_visit", "return-visit", _note),
    PageAction("close", "close", _note),
    PageAction("reopen", "reopen", _reason),
)
SEGMENTS = {pa.action: pa.segment for pa in PAGE_ACTIONS} | {
    "mark_key_supervision": "key-supervision", "unmark_key_supervision": "key-supervision"}

Run = Callable[[Session, Context, Case, Any, str], int]
"""One form's work: (session, ctx, the case, the posted form, the actor) → the id of the case to show next."""


async def _act(request: web.Request, action: str, run: Run, *,
               back_to: Literal["review", "case"]) -> web.StreamResponse:
    """Run one case action in a transaction; redirect to the case, or re-show the form's page with the error.

    The page the form came from (the review page or the case page) comes back with what was
    typed, each field's problem, and for an illegal action the actions allowed now: 422 for
    invalid fields, 409 for a stale version or an action the status does not allow.
    """
    ctx, cid, user = request.app[CTX], path_id(request), request[USER]
    form = await request.post()
    build = review_context if back_to == "review" else case_context

    def attempt() -> tuple[int, dict[str, Any] | None]:
        try:
            with transaction(ctx.sessions) as s:
                return run(s, ctx, load_case(s, cid, user), form, user.username), None
        except LifecycleError as e:
            with transaction(ctx.sessions) as s:
                page_data = build(s, ctx, request, load_case(s, cid, user))
            page_data |= {"form": {k: v for k, v in form.items() if isinstance(v, str)},
                          "field_errors": getattr(e, "details", {}), "message": str(e), "failed": action,
                          "status": 422 if isinstance(e, CaseValidationError) else 409,
                          "stale": isinstance(e, StaleVersion), "illegal": isinstance(e, IllegalTransition),
                          "allowed_now": permitted_actions(page_data["case"].status, user.role)}
            return cid, page_data

    target, failed = await asyncio.to_thread(attempt)
    if failed is None:
        return web.Response(status=303, headers={"Location": f"/cases/{target}"})
    status = failed.pop("status")
    return await render_page(request, f"{back_to}.html", {**choices(ctx), **failed}, status=status)


@routes.post("/cases/{id}/accept", summary="Accept a draft (form)", roles=ACTION_ROLES["accept"], document=False)
@page
async def accept(request: web.Request) -> web.StreamResponse:
    def run(s: Session, ctx: Context, case: Case, form: Any, actor: str) -> int:
        actions.accept(s, case, ctx=ctx, actor=actor, expected_version=_version(form),
                       category=_text(form, "category"), handling_form=_text(form, "handling_form"),
                       complexity=_text(form, "complexity") or "general", note=_optional(form, "note"),
                       **accept_fields(form))
        return case.id

    return await _act(request, "accept", run, back_to="review")


@routes.post("/cases/{id}/discard", summary="Discard a draft (form)", roles=ACTION_ROLES["discard"], document=False)
@page
async def discard(request: web.Request) -> web.StreamResponse:
    def run(s: Session, ctx: Context, case: Case, form: Any, actor: str) -> int:
        actions.discard(s, case, ctx=ctx, actor=actor, expected_version=_version(form), reason=_text(form, "reason"))
        return case.id

    return await _act(request, "discard", run, back_to="review")


@routes.post("/cases/{id}/merge", summary="Merge into another case (form)", roles=ACTION_ROLES["merge"], document=False)
@page
async def merge(request: web.Request) -> web.StreamResponse:
    """The case to merge into is named by its number, as in the API (a suggestion's button sends
    it, or the operator types it); a refused merge comes back to the page the form was on."""
    back: Literal["review", "case"] = "review" if _text(await request.post(), "back") == "review" else "case"

    def run(s: Session, ctx: Context, case: Case, form: Any, actor: str) -> int:
        number = _text(form, "into").strip()
        into = s.scalar(select(Case).where(Case.number == number)) if re.fullmatch(NUMBER_RE, number) else None
        if into is None:
            raise CaseValidationError({"into": f"no such case: {number[:40]}" if number else "no such case"})
        actions.merge(s, case, into, actor=actor, expected_version=_version(form), note=_optional(form, "note"))
        return case.id

    return await _act(request, "merge", run, back_to=back)


@routes.post("/cases/{id}/key-supervision", summary="Mark or unmark key supervision (form)",
             roles=ACTION_ROLES["mark_key_supervision"], document=False)
@page
async def key_supervision(request: web.Request) -> web.StreamResponse:
    action = "mark_key_supervision" if _text(await request.post(), "mark") == "1" else "unmark_key_supervision"

    def run(s: Session, ctx: Context, case: Case, form: Any, actor: str) -> int:
        actions.ACTIONS[action](s, case, ctx=ctx, actor=actor, expected_version=_version(form),
                                note=_optional(form, "note"))
        return case.id

    return await _act(request, action, run, back_to="case")


def _case_form(pa: PageAction) -> Callable[[web.Request], Any]:
    """The route handler of one case-page form: the cases.actions function with the form's fields."""

    async def handler(request: web.Request) -> web.StreamResponse:
        def run(s: Session, ctx: Context, case: Case, form: Any, actor: str) -> int:
            version = _version(form)
            actions.ACTIONS[pa.action](s, case, ctx=ctx, actor=actor, expected_version=version, **pa.read(form, case))
            return case.id

        return await _act(request, pa.action, run, back_to="case")

    handler.__name__ = handler.__qualname__ = f"{pa.action}_form"
    return page(handler)


for _pa in PAGE_ACTIONS:
    routes.post(f"/cases/{{id}}/{_pa.segment}", summary=f"{_pa.action} (form)", roles=ACTION_ROLES[_pa.action],
                document=False)(_case_form(_pa))
