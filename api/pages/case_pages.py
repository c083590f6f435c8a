"""Case pages for operators and supervisors: the queue, a case with its timeline, the draft review.

Reading goes through the domain functions (deadline_state, timeline, duplicates.suggest,
privacy.personal_view); every change is a small form posting to a route here that calls
the one cases.actions function for it, with the version the page was rendered from (a
stale form is refused with 409, like the API's If-Match). Errors the action raises are
shown on the page the form came from, with what was typed kept.

Unit handlers and campaign staff have their own views (later); these pages are for the
centre's roles, CASE_STAFF.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from aiohttp import web
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import USER
from api.context import CTX
from api.errors import ApiError
from api.openapi import Routes
from api.pages import PageError, page, render_page
from api.validation import ApiModel, parse_query
from cases import actions, duplicates
from cases.deadlines import DeadlineState, deadline_state
from cases.actions import CaseValidationError, StaleVersion
from cases.lifecycle import OPEN, STATUSES, IllegalTransition, LifecycleError, allowed_actions
from cases.models import Case
from cases.privacy import personal_view
from config.context import Context
from config.db import transaction
from recordings.models import Recording
from transcription.extract import low_confidence
from transcription.models import Transcript

routes = Routes("pages")
CASE_STAFF = ("operator", "supervisor")
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


def load_case(s: Session, cid: int) -> Case:
    case = s.get(Case, cid)
    if case is None:
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


@routes.get("/cases", summary="The case queue (page)", roles=CASE_STAFF, document=False)
@page
async def queue(request: web.Request) -> web.Response:
    try:
        q = parse_query(request, QueueQuery)
    except ApiError as e:
        raise PageError(400, "error.bad_query", e.message) from None
    ctx = request.app[CTX]
    now = ctx.now()
    near = ctx.settings.cases.deadline_near_fraction

    def load() -> dict[str, Any]:
        stmt = select(Case).order_by(Case.id.desc())
        if q.status == "open":
            stmt = stmt.where(Case.status.in_(OPEN))
        elif q.status != "all":
            stmt = stmt.where(Case.status == q.status)
        for name in ("channel", "category", "unit"):
            if getattr(q, name):
                stmt = stmt.where(getattr(Case, name) == getattr(q, name))
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
                rows.append({"case": case, "deadline": state})
                if len(rows) == PAGE_SIZE:
                    break
        more = last_id is not None and len(rows) == PAGE_SIZE
        return {"rows": rows, "next_before": last_id if more else None}

    data = await asyncio.to_thread(load)
    return await render_page(request, "queue.html", {"q": q, "statuses": STATUSES, "channels": actions.CHANNELS,
                                                     **choices(ctx), **data})


# --- one case ------------------------------------------------------------------------------


def _personal(s: Session, case: Case, request: web.Request, purpose: str) -> dict[str, Any]:
    user = request[USER]
    return personal_view(s, case, viewer=user.username, role=user.role, unit=user.unit, purpose=purpose)


@routes.get("/cases/{id}", summary="A case with its timeline (page)", roles=CASE_STAFF, document=False)
@page
async def detail(request: web.Request) -> web.Response:
    ctx, cid = request.app[CTX], path_id(request)
    now = ctx.now()

    def load() -> dict[str, Any]:
        with transaction(ctx.sessions) as s:  # personal_view may log the view of a protected reporter
            case = load_case(s, cid)
            tl = actions.timeline(s, case)
            merged_into = s.get(Case, case.merged_into_id) if case.merged_into_id else None
            recs = [r for r in (s.get(Recording, i) for i in tl.recording_ids) if r is not None]
            return {
                "case": case,
                "personal": _personal(s, case, request, "case detail"),
                "deadlines": deadline_state(case, now, ctx.calendar,
                                            near_fraction=ctx.settings.cases.deadline_near_fraction),
                "events": tl.events,
                "numbers": {c.id: c.number for c in s.scalars(select(Case).where(Case.id.in_(
                    [e.case_id for e in tl.events])))},
                "merged_into": merged_into,
                "recordings": recs,
                "allowed": allowed_actions(case.status),
            }

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
    suggestions = duplicates.suggest(s, case, settings=ctx.settings.cases)
    others = {c.id: c for c in s.scalars(select(Case).where(Case.id.in_([x.case_id for x in suggestions])))}
    return {
        "case": case,
        "personal": _personal(s, case, request, "draft review"),
        "recording": recording if recording is not None and recording.deleted_at is None else None,
        "words": words,
        "threshold": threshold,
        "suggestions": [{"s": x, "case": others[x.case_id]} for x in suggestions if x.case_id in others],
        "allowed": allowed_actions(case.status),
        "form": {},
        "field_errors": {},
        "message": None,
    }


@routes.get("/cases/{id}/review", summary="Review a draft (page)", roles=CASE_STAFF, document=False)
@page
async def review(request: web.Request) -> web.Response:
    ctx, cid = request.app[CTX], path_id(request)

    def load() -> dict[str, Any]:
        with transaction(ctx.sessions) as s:
            return review_context(s, ctx, request, load_case(s, cid))

    data = await asyncio.to_thread(load)
    return await render_page(request, "review.html", {**choices(ctx), **data})


def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _version(form: Any) -> int:
    raw = _text(form, "version")
    if not raw.isdigit() or len(raw) > 9:
        raise PageError(400, "error.bad_form", "version")
    return int(raw)


def accept_fields(form: Any) -> dict[str, Any]:
    """The review form as accept()'s keywords: an empty personal field is "not given" (None)."""
    fields: dict[str, Any] = {name: (_text(form, name).strip() or None) for name in TEXT_FIELDS}
    fields |= {name: _text(form, name) == "1" for name in FLAGS}
    fields["content"] = _text(form, "content")
    return fields


async def _act(request: web.Request, run: Any, *, review_on_error: bool = True) -> web.StreamResponse:
    """Run one case action in a transaction; redirect to the case, or re-show the form with the error.

    The review page's forms (accept, discard, merge) come back to it with what was typed and
    each field's problem; other forms get the error page with the action's message.
    """
    ctx, cid = request.app[CTX], path_id(request)
    form = await request.post()

    def attempt() -> tuple[int, dict[str, Any] | None]:
        try:
            with transaction(ctx.sessions) as s:
                case = load_case(s, cid)
                target = run(s, ctx, case, form, request[USER].username)
                return target, None
        except LifecycleError as e:
            status = 422 if isinstance(e, CaseValidationError) else 409
            if not review_on_error:
                raise PageError(status, "error.action_failed", str(e)) from None
            with transaction(ctx.sessions) as s:
                page_data = review_context(s, ctx, request, load_case(s, cid))
            page_data |= {"form": {k: v for k, v in form.items() if isinstance(v, str)},
                          "field_errors": getattr(e, "details", {}), "message": str(e),
                          "status": status, "stale": isinstance(e, StaleVersion),
                          "illegal": isinstance(e, IllegalTransition)}
            return cid, page_data

    target, failed = await asyncio.to_thread(attempt)
    if failed is None:
        return web.Response(status=303, headers={"Location": f"/cases/{target}"})
    status = failed.pop("status")
    return await render_page(request, "review.html", {**choices(ctx), **failed}, status=status)


@routes.post("/cases/{id}/accept", summary="Accept a draft (form)", roles=CASE_STAFF, document=False)
@page
async def accept(request: web.Request) -> web.StreamResponse:
    def run(s: Session, ctx: Context, case: Case, form: Any, actor: str) -> int:
        actions.accept(s, case, ctx=ctx, actor=actor, expected_version=_version(form),
                       category=_text(form, "category"), handling_form=_text(form, "handling_form"),
                       complexity=_text(form, "complexity") or "general", note=_text(form, "note") or None,
                       **accept_fields(form))
        return case.id

    return await _act(request, run)


@routes.post("/cases/{id}/discard", summary="Discard a draft (form)", roles=CASE_STAFF, document=False)
@page
async def discard(request: web.Request) -> web.StreamResponse:
    def run(s: Session, ctx: Context, case: Case, form: Any, actor: str) -> int:
        actions.discard(s, case, ctx=ctx, actor=actor, expected_version=_version(form), reason=_text(form, "reason"))
        return case.id

    return await _act(request, run)


@routes.post("/cases/{id}/merge", summary="Merge into another case (form)", roles=CASE_STAFF, document=False)
@page
async def merge(request: web.Request) -> web.StreamResponse:
    def run(s: Session, ctx: Context, case: Case, form: Any, actor: str) -> int:
        raw = _text(form, "into")
        into = s.get(Case, int(raw)) if raw.isdigit() and 1 <= int(raw) <= MAX_ID else None
        if into is None:
            raise CaseValidationError({"into": "no such case"})
        actions.merge(s, case, into, actor=actor, expected_version=_version(form), note=_text(form, "note") or None)
        return case.id

    return await _act(request, run)


@routes.post("/cases/{id}/key-supervision", summary="Mark or unmark key supervision (form)",
             roles=("supervisor",), document=False)
@page
async def key_supervision(request: web.Request) -> web.StreamResponse:
    def run(s: Session, ctx: Context, case: Case, form: Any, actor: str) -> int:
        act = actions.mark_key_supervision if _text(form, "mark") == "1" else actions.unmark_key_supervision
        act(s, case, ctx=ctx, actor=actor, expected_version=_version(form), note=_text(form, "note") or None)
        return case.id

    return await _act(request, run, review_on_error=False)
