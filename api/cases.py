"""The Cases API under /api/v1/cases: list, detail, create, edit, every lifecycle action, duplicates.

Conventions (also stated in the OpenAPI document):

- A case is named in URLs by its public number (``20261207-0001``); a number that does
  not exist, or a case a unit handler of another unit asks for, is 404 alike (a 403
  would confirm that the case exists).
- ``ETag`` is the case version (``"3"``). Every change needs ``If-Match`` with it:
  without one the answer is **428** (a client that never read the case must not
  overwrite it blindly); with an old one **409 stale_version** and the current version
  in ``details``. ``*`` is refused (400) for the same reason.
- An action not allowed in the case's status is **409 illegal_transition**, with the
  status and the actions allowed now in ``details``.
- Every change is one cases/actions.py function and writes a CaseEvent naming the user.
- Lists use keyset pagination: ``next_cursor`` encodes the last row's sort value and id,
  so pages neither repeat nor skip rows when cases arrive in between. The order is
  stable: the sort column, then the id in the same direction.
- "now" (deadline states, event times) is ``ctx.now()``, the rehearsal clock when one
  is configured.

Roles: reading is for every staff role (personal data per cases/privacy.py, see
api/case_schemas.py); operators and supervisors create cases; who may run each action is
cases/permissions.py ACTION_ROLES, the table the web pages use too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy import Select, and_, false, or_, select, tuple_
from sqlalchemy.orm import Session

from api.auth import ANY_STAFF, USER
from api.case_schemas import (
    AcceptBody,
    CaseAnswer,
    CaseCreate,
    CaseEdit,
    CaseList,
    CaseListQuery,
    DispatchBody,
    Duplicates,
    MergeBody,
    NoteBody,
    ReasonBody,
    ReplyBody,
    ResultBody,
    SignBody,
    detail,
    duplicates_out,
    event_out,
    parse_statuses,
    summary,
)
from api.context import CTX
from api.errors import ApiError, json_response
from api.openapi import Routes
from api.validation import ApiModel, parse_body, parse_query
from cases import actions, search
from cases.caller_filter import caller_matches
from cases.lifecycle import OPEN, IllegalTransition, LifecycleError
from cases.models import Case, CaseEvent
from cases.permissions import ACTION_ROLES, CENTRE
from cases.users import Staff
from config.context import Context
from config.db import transaction

routes = Routes("cases")

NUMBER = r"{number:[0-9]+-[0-9]+}"
CASE_PATH = "/api/v1/cases/" + NUMBER
_IF_MATCH = re.compile(r'\s*(?:W/)?"?([0-9]{1,9})"?\s*')
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


# --- shared pieces ----------------------------------------------------------------------


def can_see(user: Staff, case: Case) -> bool:
    """A unit handler sees only the cases currently with their unit; every other role sees all."""
    return user.role != "unit_handler" or (case.unit is not None and case.unit == user.unit)


def not_found(number: str) -> ApiError:
    return ApiError(404, "not_found", f"no case {number}")


def load_case(s: Session, number: str, user: Staff, *, lock: bool = False) -> Case:
    stmt = select(Case).where(Case.number == number)
    if lock:
        stmt = stmt.with_for_update()
    case = s.scalar(stmt)
    if case is None or not can_see(user, case):
        raise not_found(number)
    return case


def expected_version(request: web.Request) -> int:
    header = request.headers.get("If-Match")
    if header is None:
        raise ApiError(428, "precondition_required", "send If-Match with the ETag of the case version you read",
                       {"header": "If-Match"})
    m = _IF_MATCH.fullmatch(header)
    if m is None:
        raise ApiError(400, "bad_if_match", 'If-Match must be one ETag such as "3" (the case version); * is not accepted')
    return int(m.group(1))


def lifecycle_error(e: LifecycleError) -> ApiError:
    """The case errors as API answers (409 / 422)."""
    if isinstance(e, IllegalTransition):
        return ApiError(409, "illegal_transition", str(e),
                        {"action": e.action, "status": e.status, "allowed": e.allowed})
    if isinstance(e, actions.StaleVersion):
        return ApiError(409, "stale_version", "the case changed since you read it; read it again and redo the change",
                        {"current_version": e.current, "expected_version": e.expected})
    if isinstance(e, actions.CaseValidationError):
        fields = [{"field": k, "message": v, "type": "invalid"} for k, v in e.details.items()]
        return ApiError(422, "validation_failed", str(e), {"fields": fields})
    return ApiError(409, "conflict", str(e))


def answer(body: BaseModel, status: int = 200, *, version: int | None = None, location: str | None = None) -> web.Response:
    headers = {}
    if version is not None:
        headers["ETag"] = f'"{version}"'
    if location is not None:
        headers["Location"] = location
    return json_response(body.model_dump(mode="json"), status, headers)


async def in_transaction(ctx: Context, work: Callable[[Session], Any]) -> Any:
    """Run ``work`` in one database transaction off the event loop; case errors become API errors."""

    def run() -> Any:
        with transaction(ctx.sessions) as s:
            return work(s)

    try:
        return await asyncio.to_thread(run)
    except LifecycleError as e:
        raise lifecycle_error(e) from None


def _answer_for(s: Session, ctx: Context, case: Case, user: Staff, now: dt.datetime, *, purpose: str,
                event: CaseEvent | None = None, duplicates: bool = False) -> CaseAnswer:
    s.flush()
    s.refresh(case)
    tl = actions.timeline(s, case)
    out = detail(s, ctx, tl, user, now, purpose=purpose)
    ev = event_out(event, {case.id: case.number}) if event is not None else None
    return CaseAnswer(case=out, event=ev, duplicates=duplicates_out(s, ctx, case) if duplicates else None)


# --- reading ----------------------------------------------------------------------------


def _cursor_encode(sort: str, value: dt.datetime, ident: int) -> str:
    raw = json.dumps([sort, value.isoformat(), ident], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_decode(cursor: str, sort: str) -> tuple[dt.datetime, int]:
    bad = ApiError(422, "validation_failed", "invalid query: cursor: not a cursor of this list",
                   {"fields": [{"field": "cursor", "message": "not a next_cursor of this sort", "type": "cursor"}]})
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        s, value, ident = json.loads(raw)
        when = dt.datetime.fromisoformat(value)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise bad from None
    if s != sort or not isinstance(ident, int) or isinstance(ident, bool) or when.tzinfo is None \
            or not 0 < ident < 2**31:
        raise bad
    return when, ident


def _local_midnight(ctx: Context, day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), ctx.settings.calendar.tz).astimezone(dt.UTC)


def overdue_clause(now: dt.datetime) -> Any:
    """Open cases with a deadline passed and not met (the same rule as cases/deadlines.py, in SQL)."""
    return and_(
        Case.status.in_(OPEN),
        or_(
            and_(Case.sign_due < now, Case.responded_at.is_(None)),
            and_(Case.contact_due < now, Case.contacted_at.is_(None), Case.replied_at.is_(None)),
            and_(Case.reply_due < now, Case.replied_at.is_(None)),
            and_(Case.final_due < now, Case.closed_at.is_(None)),
        ),
    )


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def list_statement(ctx: Context, s: Session, q: CaseListQuery, user: Staff, now: dt.datetime) -> Select[tuple[Case]]:
    """The list query; ``s`` because the content search may first count its matches (cases/search.py)."""
    try:
        statuses = parse_statuses(q.status)
    except ValueError as e:
        raise ApiError(422, "validation_failed", f"invalid query: status: {e}",
                       {"fields": [{"field": "status", "message": str(e), "type": "enum"}]}) from None
    stmt = select(Case)
    if user.role == "unit_handler":
        stmt = stmt.where(Case.unit == user.unit)
    if statuses:
        stmt = stmt.where(Case.status.in_(statuses))
    for name in ("channel", "category", "unit", "handling_form", "key_supervision"):
        value = getattr(q, name)
        if value is not None:
            stmt = stmt.where(getattr(Case, name) == value)
    if q.overdue is not None:
        clause = overdue_clause(now)
        stmt = stmt.where(clause if q.overdue else ~clause)
    if q.caller is not None:
        digits = _digits(q.caller)
        if len(digits) < 4:
            stmt = stmt.where(false())  # too short to mean a number; never "every case"
        else:
            stmt = stmt.where(caller_matches(s.get_bind().dialect.name, digits))
            if user.role not in CENTRE:
                # Roles that see a protected reporter's phone masked cannot find them by it either.
                stmt = stmt.where(Case.confidential.is_(False), Case.anonymous.is_(False))
    if q.received_from is not None:
        stmt = stmt.where(Case.received_at >= _local_midnight(ctx, q.received_from))
    if q.received_to is not None:
        stmt = stmt.where(Case.received_at < _local_midnight(ctx, q.received_to + dt.timedelta(days=1)))
    if q.q:
        stmt = stmt.where(search.matches(s, q.q))
    desc = q.sort.startswith("-")
    col = Case.received_at if q.sort.endswith("received_at") else Case.updated_at
    if q.cursor is not None:
        value, ident = _cursor_decode(q.cursor, q.sort)
        # A row-value comparison, not "col < v OR (col = v AND id < i)": both databases start
        # the index scan at the cursor (PostgreSQL: range on col, SQLite: on col + rowid),
        # where the OR form is a filter applied row by row from the first page onwards.
        key = tuple_(col, Case.id)
        stmt = stmt.where(key < tuple_(value, ident) if desc else key > tuple_(value, ident))
    order = (col.desc(), Case.id.desc()) if desc else (col.asc(), Case.id.asc())
    return stmt.order_by(*order).limit(q.limit + 1)


def list_page(ctx: Context, s: Session, q: CaseListQuery, user: Staff, now: dt.datetime) -> tuple[list[Case], str | None]:
    """One page of the list and the cursor of the next one (None on the last page): the API's
    list pages and the CSV export's batches alike."""
    rows = list(s.scalars(list_statement(ctx, s, q, user, now)))
    page = rows[: q.limit]
    if len(rows) <= q.limit:
        return page, None
    last = page[-1]
    return page, _cursor_encode(q.sort, last.received_at if q.sort.endswith("received_at") else last.updated_at, last.id)


@routes.get("/api/v1/cases", summary="List cases: filters, sort and cursor pagination", roles=ANY_STAFF,
            query=CaseListQuery, response=CaseList,
            description="A unit handler sees only their unit's cases. Protected reporters' personal fields are "
            "masked in lists; open a case to see them (if your role may), which is logged.")
async def list_cases(request: web.Request) -> web.Response:
    q = parse_query(request, CaseListQuery)
    ctx, user = request.app[CTX], request[USER]
    now = ctx.now()

    def load(s: Session) -> CaseList:
        page, nxt = list_page(ctx, s, q, user, now)
        return CaseList(items=[summary(s, ctx, c, user, now) for c in page], next_cursor=nxt)

    return answer(await in_transaction(ctx, load))


@routes.get(CASE_PATH, summary="A case with its deadlines, timeline, recordings and transcripts", roles=ANY_STAFF,
            response=CaseAnswer, errors=(404,),
            description="ETag is the case version; send it as If-Match with changes. Viewing a protected "
            "reporter's personal data unmasked is logged.")
async def get_case(request: web.Request) -> web.Response:
    ctx, user = request.app[CTX], request[USER]
    number = request.match_info["number"]
    now = ctx.now()

    def load(s: Session) -> CaseAnswer:
        case = load_case(s, number, user)
        return _answer_for(s, ctx, case, user, now, purpose=f"GET {request.path}")

    out: CaseAnswer = await in_transaction(ctx, load)
    return answer(out, version=out.case.version)


@routes.get(CASE_PATH + "/duplicates", summary="Likely duplicates of a case, to merge", roles=CENTRE,
            response=Duplicates, errors=(404,))
async def case_duplicates(request: web.Request) -> web.Response:
    ctx, user = request.app[CTX], request[USER]
    number = request.match_info["number"]

    def load(s: Session) -> Duplicates:
        return Duplicates(items=duplicates_out(s, ctx, load_case(s, number, user)))

    return answer(await in_transaction(ctx, load))


# --- changing ---------------------------------------------------------------------------


@routes.post("/api/v1/cases", summary="Register a case (phone, web, e-mail, letter, WeChat, walk-in)", roles=CENTRE,
             body=CaseCreate, response=CaseAnswer, status=201,
             description="The case starts as a draft; the answer lists likely duplicates.")
async def create_case(request: web.Request) -> web.Response:
    body = await parse_body(request, CaseCreate)
    ctx, user = request.app[CTX], request[USER]
    now = ctx.now()
    if body.received_at is not None and body.received_at.tzinfo is not None and not (
        EARLIEST <= body.received_at <= now + dt.timedelta(minutes=5)
    ):
        raise ApiError(422, "validation_failed", "invalid body: received_at: must be between 2000 and now",
                       {"fields": [{"field": "received_at", "message": "between 2000-01-01 and now", "type": "range"}]})
    fields = body.model_dump(exclude_unset=True)
    fields.setdefault("received_at", now)

    def work(s: Session) -> CaseAnswer:
        case = actions.create_case(s, ctx=ctx, actor=user.username, **fields)
        event = s.scalar(select(CaseEvent).where(CaseEvent.case_id == case.id))
        return _answer_for(s, ctx, case, user, now, purpose="POST /api/v1/cases", event=event, duplicates=True)

    out: CaseAnswer = await in_transaction(ctx, work)
    return answer(out, 201, version=out.case.version, location=f"/api/v1/cases/{out.case.number}")


@routes.patch(CASE_PATH, summary="Edit a case's fields while work is ahead", roles=ACTION_ROLES["edit"],
              body=CaseEdit, response=CaseAnswer, errors=(404,), if_match=True)
async def edit_case(request: web.Request) -> web.Response:
    return await _act(request, "edit", CaseEdit)


@dataclass(frozen=True)
class ActionRoute:
    action: str
    segment: str
    body: type[ApiModel] | None
    summary: str
    duplicates: bool = False

    @property
    def roles(self) -> tuple[str, ...]:
        return ACTION_ROLES[self.action]


ACTION_ROUTES = (
    ActionRoute("accept", "accept", AcceptBody,
                "Accept a draft: edit fields, choose the category (acceptance scope) and handling form", True),
    ActionRoute("reject", "reject", ReasonBody, "Reject: outside the acceptance scope, with the reason"),
    ActionRoute("discard", "discard", ReasonBody, "Discard a draft: empty or test message, with the reason"),
    ActionRoute("dispatch", "dispatch", DispatchBody, "Dispatch an accepted case to the responsible unit"),
    ActionRoute("answer_directly", "answer", ReplyBody, "Answer a consultation or emergency case directly"),
    ActionRoute("sign", "sign", SignBody, "The unit signs for the case and starts on it"),
    ActionRoute("return_to_dispatch", "return", ReasonBody,
                "The unit returns the case for re-dispatch, with the reason"),
    ActionRoute("report_result", "result", ResultBody, "The unit reports what it did and found"),
    ActionRoute("contact", "contact", NoteBody, "Record a contact with the caller"),
    ActionRoute("reply", "reply", ReplyBody, "Reply to the caller with the outcome"),
    ActionRoute("start_return_visit", "return-visit", NoteBody, "Start the return visit (callback)"),
    ActionRoute("close", "close", NoteBody, "Close (archive) a replied or visited case"),
    ActionRoute("reopen", "reopen", ReasonBody, "Reopen under key supervision, with the reason"),
    ActionRoute("mark_key_supervision", "key-supervision", NoteBody, "Mark for key supervision"),
)


async def _act(request: web.Request, action: str, model: type[ApiModel] | None) -> web.Response:
    ctx, user = request.app[CTX], request[USER]
    number = request.match_info["number"]
    version = expected_version(request)
    body = await parse_body(request, model) if model is not None else None
    kwargs = body.model_dump(exclude_unset=True) if body is not None else {}
    fn = actions.ACTIONS[action]
    now = ctx.now()

    def work(s: Session) -> CaseAnswer:
        case = load_case(s, number, user, lock=True)
        event = fn(s, case, ctx=ctx, actor=user.username, expected_version=version, now=now, **kwargs)
        return _answer_for(s, ctx, case, user, now, purpose=f"{request.method} {request.path}", event=event,
                           duplicates=action == "accept")

    out: CaseAnswer = await in_transaction(ctx, work)
    return answer(out, version=out.case.version)


def _action_handler(action: str, model: type[ApiModel] | None) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        return await _act(request, action, model)

    handler.__name__ = handler.__qualname__ = f"{action}_case"  # the OpenAPI operationId
    return handler


for _r in ACTION_ROUTES:
    routes.post(f"{CASE_PATH}/{_r.segment}", summary=_r.summary, roles=_r.roles, body=_r.body, response=CaseAnswer,
                errors=(404,), if_match=True)(_action_handler(_r.action, _r.body))
routes.delete(f"{CASE_PATH}/key-supervision", summary="Remove the key supervision mark",
              roles=ACTION_ROLES["unmark_key_supervision"], response=CaseAnswer, errors=(404,),
              if_match=True)(_action_handler("unmark_key_supervision", None))


@routes.post(CASE_PATH + "/merge", summary="Merge this case into the one it repeats", roles=ACTION_ROLES["merge"],
             body=MergeBody, response=CaseAnswer, errors=(404,), if_match=True,
             description="The survivor's timeline then includes this case's events and recordings.")
async def merge_case(request: web.Request) -> web.Response:
    ctx, user = request.app[CTX], request[USER]
    number = request.match_info["number"]
    version = expected_version(request)
    body = await parse_body(request, MergeBody)
    now = ctx.now()

    def work(s: Session) -> CaseAnswer:
        case = load_case(s, number, user, lock=True)
        into = s.scalar(select(Case).where(Case.number == body.into))
        if into is None or not can_see(user, into):
            raise ApiError(422, "validation_failed", f"invalid body: into: no case {body.into}",
                           {"fields": [{"field": "into", "message": "no such case", "type": "not_found"}]})
        event = actions.merge(s, case, into, actor=user.username, expected_version=version, note=body.note, now=now)
        return _answer_for(s, ctx, case, user, now, purpose=f"POST {request.path}", event=event)

    out: CaseAnswer = await in_transaction(ctx, work)
    return answer(out, version=out.case.version)


__all__ = ["ACTION_ROUTES", "can_see", "list_page", "list_statement", "load_case", "overdue_clause", "routes"]
