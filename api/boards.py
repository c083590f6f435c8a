"""Supervisors' boards: cases late or nearly late, and the cases under key supervision.

Both show open cases only. A unit handler may look too and sees their own unit's rows
(the same rule as the case list); operators see the whole board, they chase contacts.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import USER
from api.case_schemas import Board, BoardRowOut, DeadlineOut, summary
from api.cases import in_transaction, answer
from api.context import CTX
from api.openapi import Routes
from api.validation import ApiModel, parse_query
from cases.deadlines import overdue_board
from cases.lifecycle import OPEN
from cases.models import Case

routes = Routes("boards")
BOARD_ROLES = ("operator", "supervisor", "unit_handler")


class OverdueQuery(ApiModel):
    include_near: bool = Field(True, description="also the deadlines that are close (see [cases] deadline_near_fraction)")
    unit: str | None = Field(None, max_length=40, pattern=r"^[a-z0-9_]*$", description="only this unit's cases")


class KeyCasesQuery(ApiModel):
    unit: str | None = Field(None, max_length=40, pattern=r"^[a-z0-9_]*$")


@routes.get("/api/v1/boards/overdue", summary="Open cases with a deadline passed (or near), key cases first",
            roles=BOARD_ROLES, query=OverdueQuery, response=Board)
async def overdue(request: web.Request) -> web.Response:
    q = parse_query(request, OverdueQuery)
    ctx, user = request.app[CTX], request[USER]
    unit = user.unit if user.role == "unit_handler" else q.unit
    now = ctx.now()
    tz = ctx.settings.calendar.tz

    def load(s: Session) -> Board:
        rows = overdue_board(s, ctx.calendar, now, near_fraction=ctx.settings.cases.deadline_near_fraction,
                             include_near=q.include_near, unit=unit)
        return Board(items=[
            BoardRowOut(case=summary(s, ctx, r.case, user, now),
                        late=[DeadlineOut(**d.as_dict(tz)) for d in r.deadlines])  # type: ignore[arg-type]
            for r in rows
        ])

    return answer(await in_transaction(ctx, load))


@routes.get("/api/v1/boards/key-cases", summary="Open cases under key supervision, the most urgent first",
            roles=BOARD_ROLES, query=KeyCasesQuery, response=Board)
async def key_cases(request: web.Request) -> web.Response:
    q = parse_query(request, KeyCasesQuery)
    ctx, user = request.app[CTX], request[USER]
    unit = user.unit if user.role == "unit_handler" else q.unit
    now = ctx.now()

    def load(s: Session) -> Board:
        stmt = select(Case).where(Case.key_supervision.is_(True), Case.status.in_(OPEN))
        if unit is not None:
            stmt = stmt.where(Case.unit == unit)
        items = []
        for c in s.scalars(stmt.order_by(Case.received_at, Case.id)):
            row = summary(s, ctx, c, user, now)
            items.append(BoardRowOut(case=row, late=[d for d in row.deadlines if d.state in ("near", "overdue")]))
        # Most urgent first: the smallest working time left on an unmet deadline; none left at the end.
        items.sort(key=lambda r: min((d.remaining_seconds for d in r.case.deadlines if d.met_at is None),
                                     default=2**62))
        return Board(items=items)

    return answer(await in_transaction(ctx, load))
