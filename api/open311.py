"""Open311 GeoReport v2 at /open311/v2 (https://wiki.open311.org/GeoReport_v2), JSON format only.

- ``GET services.json``: the acceptance categories ([cases] categories) as services.
- ``GET requests.json`` / ``GET requests/{id}.json``: cases as service requests, built from
  cases/privacy.public_view only: never a name, phone, unit or address, whoever reported.
  The description (the case content) is shown only for an unprotected case that an
  operator has accepted: a draft is an unreviewed transcript or message that may hold
  anything, and a confidential reporter's own words can identify them. Discarded cases
  (empty and test messages) are not requests at all. ``service_request_id`` is the
  public case number.
- ``POST requests.json``: a new draft case on the web channel. It needs an API key from
  ``[open311] api_keys`` (``api_key`` parameter, as GeoReport has it, or the
  ``X-API-Key`` header): none sent is 401, a wrong one 403. Form-encoded bodies (the
  GeoReport way) and JSON are both accepted. The client's name is the case's creator
  ("open311:<name>"). email, lat/long, device and account ids go into the case's
  ``extracted`` data, which only operators and supervisors see. Answers 201.

Errors use the API's shape ({"error": {...}}), not GeoReport's list: one shape for
every client of this service.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
from typing import Any, Literal

from aiohttp import web
from pydantic import Field, RootModel, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.case_schemas import NUMBER_RE, Text
from api.cases import answer, in_transaction
from api.context import CTX
from api.errors import ApiError
from api.openapi import PUBLIC, Routes
from api.validation import ApiModel, parse_query, validation_failed
from cases import actions
from cases.lifecycle import CLOSED, DISCARDED, DRAFT, MERGED, REJECTED
from cases.models import Case
from cases.privacy import is_protected, public_view
from config.context import Context

routes = Routes("open311")
BASE = "/open311/v2"
MAX_RESULTS = 200
DEFAULT_DAYS = 90
"""GeoReport: without dates, the requests of the last 90 days."""
_CLOSED = (CLOSED, REJECTED, MERGED)


class Service(ApiModel):
    service_code: str
    service_name: str
    description: str
    metadata: bool
    type: Literal["realtime", "batch", "blackbox"]
    keywords: str
    group: str


class Services(RootModel[list[Service]]):
    pass


class ServiceRequest(ApiModel):
    service_request_id: str
    status: Literal["open", "closed"]
    status_notes: str | None
    service_name: str | None
    service_code: str | None
    description: str | None
    agency_responsible: str | None
    service_notice: str | None
    requested_datetime: str
    updated_datetime: str
    expected_datetime: str | None
    address: None = None
    address_id: None = None
    zipcode: None = None
    lat: None = None
    long: None = None
    media_url: None = None


class ServiceRequests(RootModel[list[ServiceRequest]]):
    pass


class RequestsQuery(ApiModel):
    jurisdiction_id: str | None = Field(None, max_length=40)
    service_request_id: str | None = Field(None, max_length=1100, pattern=r"^[0-9,-]*$",
                                           description="comma-separated request ids (at most 50)")
    service_code: str | None = Field(None, max_length=40, pattern=r"^[a-z0-9_]*$")
    start_date: dt.datetime | None = Field(None, ge=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
                                           le=dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
    end_date: dt.datetime | None = Field(None, ge=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
                                         le=dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
    status: Literal["open", "closed"] | None = None


class JurisdictionQuery(ApiModel):
    jurisdiction_id: str | None = Field(None, max_length=40)


class NewRequest(ApiModel):
    api_key: str | None = Field(None, max_length=200, description="or the X-API-Key header")
    jurisdiction_id: str | None = Field(None, max_length=40)
    service_code: str = Field(max_length=40, description="a service_code of services.json")
    description: Text(20000, min_length=1)  # type: ignore[valid-type]
    first_name: Text(60) | None = None
    last_name: Text(60) | None = None
    email: Text(200) | None = None
    phone: Text(40) | None = None
    address_string: Text(400) | None = None
    lat: float | None = Field(None, ge=-90, le=90)
    long: float | None = Field(None, ge=-180, le=180)
    device_id: Text(100) | None = None
    account_id: Text(100) | None = None


class Created(ApiModel):
    service_request_id: str
    service_notice: str | None
    account_id: str | None


class CreatedList(RootModel[list[Created]]):
    pass


def _check_jurisdiction(ctx: Context, given: str | None) -> None:
    if given is not None and given != ctx.settings.open311.jurisdiction_id:
        raise ApiError(404, "unknown_jurisdiction", f"this service answers for jurisdiction_id "
                       f"{ctx.settings.open311.jurisdiction_id!r} only")


def _iso(value: dt.datetime | None, tz: dt.tzinfo) -> str | None:
    return value.astimezone(tz).isoformat() if value is not None else None


def service_request(ctx: Context, c: Case, into: str | None = None) -> ServiceRequest:
    """A case as GeoReport sees it: public_view plus status words, nothing personal."""
    tz = ctx.settings.calendar.tz
    pub = public_view(c, tz=tz)
    notes = {
        REJECTED: "outside the scope of the 12389 hotline",
        MERGED: f"merged into request {into}" if into else "merged into another request",
        CLOSED: "handled and replied",
        DRAFT: "received, waiting to be registered",
    }.get(c.status)
    cfg = ctx.settings.cases
    show = pub["content"] is not None and c.accepted_at is not None and not is_protected(c)
    return ServiceRequest(
        service_request_id=pub["number"],
        status="closed" if c.status in _CLOSED else "open",
        status_notes=notes,
        service_name=cfg.category_names().get(c.category or ""),
        service_code=pub["category"],
        description=pub["content"] if show else None,
        agency_responsible=cfg.unit_names().get(c.unit or ""),
        service_notice=None,
        requested_datetime=pub["received_at"],
        updated_datetime=_iso(c.updated_at, tz) or pub["received_at"],
        expected_datetime=_iso(c.reply_due, tz),
    )


def _requests(s: Session, ctx: Context, cases: list[Case]) -> ServiceRequests:
    into_ids = {c.merged_into_id for c in cases if c.merged_into_id is not None}
    numbers = dict(s.execute(select(Case.id, Case.number).where(Case.id.in_(into_ids))).all()) if into_ids else {}
    return ServiceRequests([service_request(ctx, c, numbers.get(c.merged_into_id)) for c in cases])  # type: ignore[arg-type]


@routes.get(BASE + "/services.json", summary="Open311: the services (acceptance categories)", roles=PUBLIC,
            query=JurisdictionQuery, response=Services, errors=(404,))
async def services(request: web.Request) -> web.Response:
    q = parse_query(request, JurisdictionQuery)
    ctx = request.app[CTX]
    _check_jurisdiction(ctx, q.jurisdiction_id)
    out = Services([Service(service_code=c.code, service_name=c.name, description=c.name, metadata=False,
                            type="realtime", keywords="", group="12389")
                    for c in ctx.settings.cases.categories])
    return answer(out)


@routes.get(BASE + "/requests.json", summary="Open311: service requests (public fields only)", roles=PUBLIC,
            query=RequestsQuery, response=ServiceRequests, errors=(404,),
            description=f"Newest first, at most {MAX_RESULTS}; without dates, the last {DEFAULT_DAYS} days.")
async def list_requests(request: web.Request) -> web.Response:
    q = parse_query(request, RequestsQuery)
    ctx = request.app[CTX]
    _check_jurisdiction(ctx, q.jurisdiction_id)
    ids = [i for i in (q.service_request_id or "").split(",") if i]
    if len(ids) > 50:
        raise ApiError(422, "validation_failed", "invalid query: service_request_id: at most 50 ids",
                       {"fields": [{"field": "service_request_id", "message": "at most 50", "type": "too_long"}]})
    for name in ("start_date", "end_date"):
        value = getattr(q, name)
        if value is not None and value.tzinfo is None:
            setattr(q, name, value.replace(tzinfo=ctx.settings.calendar.tz))
    stmt = select(Case).where(Case.status != DISCARDED)
    if ids:
        stmt = stmt.where(Case.number.in_(ids))
    else:
        end = q.end_date or ctx.now()
        start = q.start_date or end - dt.timedelta(days=DEFAULT_DAYS)
        stmt = stmt.where(Case.received_at >= start, Case.received_at <= end)
        if q.service_code:
            stmt = stmt.where(Case.category == q.service_code)
        if q.status == "closed":
            stmt = stmt.where(Case.status.in_(_CLOSED))
        elif q.status == "open":
            stmt = stmt.where(Case.status.not_in(_CLOSED))
    stmt = stmt.order_by(Case.received_at.desc(), Case.id.desc()).limit(MAX_RESULTS)

    def load(s: Session) -> ServiceRequests:
        return _requests(s, ctx, list(s.scalars(stmt)))

    return answer(await in_transaction(ctx, load))


@routes.get(BASE + "/requests/{id:[0-9]+-[0-9]+}.json", summary="Open311: one service request", roles=PUBLIC,
            query=JurisdictionQuery, response=ServiceRequests, errors=(404,))
async def get_request(request: web.Request) -> web.Response:
    q = parse_query(request, JurisdictionQuery)
    ctx = request.app[CTX]
    _check_jurisdiction(ctx, q.jurisdiction_id)
    number = request.match_info["id"]

    def load(s: Session) -> ServiceRequests:
        c = s.scalar(select(Case).where(Case.number == number, Case.status != DISCARDED))
        if c is None:
            raise ApiError(404, "not_found", f"no request {number}")
        return _requests(s, ctx, [c])

    return answer(await in_transaction(ctx, load))


def _client_for(ctx: Context, key: str | None) -> str:
    """The configured client name owning ``key``; 401 without a key, 403 for a wrong one."""
    if not key:
        raise ApiError(401, "unauthenticated", "send the Open311 API key as api_key or in the X-API-Key header")
    found = None
    for name, expected in ctx.settings.open311.api_keys.items():
        if hmac.compare_digest(expected.encode(), key.encode("utf-8", "surrogateescape")):
            found = name
    if found is None:
        raise ApiError(403, "forbidden", "the API key is not valid")
    return found


async def _raw_body(request: web.Request) -> tuple[dict[str, Any], bool]:
    """The body as a dict, and whether it was JSON (validated strictly) or a form (text, lax)."""
    if request.content_type == "application/json":
        try:
            data = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_json", "the body is not valid JSON (UTF-8)") from None
        if not isinstance(data, dict):
            raise ApiError(422, "validation_failed", "invalid body: must be an object",
                           {"fields": [{"field": "(body)", "message": "must be an object", "type": "dict_type"}]})
        return data, True
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        data = {}
        for key in form:
            values = form.getall(key)
            if len(values) > 1 or not isinstance(values[0], str):
                raise ApiError(422, "validation_failed", f"invalid body: {key}: give it once, as text",
                               {"fields": [{"field": key, "message": "once, as text", "type": "duplicate"}]})
            data[key] = values[0]
        return data, False
    raise ApiError(415, "unsupported_media_type", "send application/x-www-form-urlencoded or application/json")


@routes.post(BASE + "/requests.json", summary="Open311: create a service request (needs an API key)", roles=PUBLIC,
             body=NewRequest, response=CreatedList, status=201, errors=(401, 403, 404),
             description="Creates a draft case on the web channel; service_request_id is its number.")
async def create_request(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    data, strict = await _raw_body(request)
    header = request.headers.get("X-API-Key")
    key = header if header is not None else data.get("api_key")
    client = _client_for(ctx, key if isinstance(key, str) else None)
    try:
        body = NewRequest.model_validate(data, strict=strict)
    except ValidationError as e:
        raise validation_failed("body", e) from None
    _check_jurisdiction(ctx, body.jurisdiction_id)
    if body.service_code not in ctx.settings.cases.category_names():
        raise ApiError(422, "validation_failed", "invalid body: service_code: not a service of services.json",
                       {"fields": [{"field": "service_code", "message": "unknown service", "type": "enum"}]})
    name = " ".join(p for p in (body.first_name, body.last_name) if p) or None
    extra = {k: v for k, v in body.model_dump(include={"email", "lat", "long", "device_id", "account_id"}).items()
             if v is not None}
    now = ctx.now()

    def work(s: Session) -> Created:
        case = actions.create_case(
            s, ctx=ctx, actor=f"open311:{client}", channel="web", content=body.description, received_at=now,
            category=body.service_code, complainant_name=name, complainant_phone=body.phone,
            address=body.address_string,
        )
        case.extracted = {"open311": {"client": client, **extra}}
        return Created(service_request_id=case.number, service_notice="received; an operator will register it",
                       account_id=body.account_id)

    created = await in_transaction(ctx, work)
    return answer(CreatedList([created]), 201)


__all__ = ["NUMBER_RE", "routes", "service_request"]
