"""GET /api/v1/cases/export.csv: the case list as a spreadsheet for supervisors.

- **Same cases as the list.** The filters and the order are the case list's
  (api/case_schemas.py CaseFilters, api/cases.py list_page); the export reads them in
  batches of :data:`BATCH` along the list's keyset cursor, so memory stays flat however
  many cases match, rows are neither repeated nor skipped when cases arrive meanwhile, and
  each batch is its own short transaction (no database connection is held while a slow
  client reads).
- **Streamed.** The first batch is read before anything is sent, so a bad filter is still
  a JSON error; after that a failure cannot change the status any more, so the connection
  is cut without the closing chunk and the client sees a broken download, never a
  truncated file that looks complete.
- **Confidentiality.** A file leaves the system's control once downloaded: protected
  (confidential or anonymous) reporters' personal fields are masked in it *whatever the
  role*, exactly as in the list (api/case_schemas.py list_personal), which also means no
  personal-data view is logged for them. Unprotected cases show what the role may see
  (cases/privacy.py: everything for a supervisor, nothing for an admin).
- **Spreadsheet-safe.** UTF-8 with a BOM and formula cells defused (api/spreadsheets.py).
- **Audited.** Every export writes one log line ``cases exported`` with the user, the
  filters given, the rows sent and whether the file was complete.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import USER
from api.case_schemas import CaseFilters, CaseListQuery, list_personal
from api.cases import list_page
from api.context import CTX
from api.errors import REQUEST_ID
from api.openapi import Routes
from api.spreadsheets import BOM, CONTENT_TYPE, attachment, csv_text
from api.validation import parse_query
from cases.deadlines import deadline_state
from cases.models import Case
from cases.permissions import EXPORTERS
from cases.users import Staff
from config.context import Context
from config.logs import get_logger

log = get_logger("api.case_export")
routes = Routes("cases")

EXPORT_PATH = "/api/v1/cases/export.csv"
BATCH = 500
"""Cases read per database round trip (the list's largest page)."""
DEADLINES = ("sign", "contact", "reply", "final")
COLUMNS = (
    "number", "status", "channel", "category", "unit", "handling_form", "received",
    *(f"{d}_{part}" for d in DEADLINES for part in ("due", "state")),
    "caller_number", "complainant_name", "complainant_phone", "address",
    "content", "result", "reply", "satisfaction", "merged_into", "key_supervision",
)
LOCAL = "%Y-%m-%d %H:%M"


@dataclass(frozen=True)
class Batch:
    text: str
    rows: int
    next_cursor: str | None


def export_rows(s: Session, ctx: Context, cases: list[Case], user: Staff, now: dt.datetime) -> list[list[object]]:
    """The CSV rows of ``cases`` as ``user`` may see them (times in the centre's time zone)."""
    tz = ctx.settings.calendar.tz
    near = ctx.settings.cases.deadline_near_fraction
    into_ids = {c.merged_into_id for c in cases if c.merged_into_id is not None}
    numbers = dict(s.execute(select(Case.id, Case.number).where(Case.id.in_(into_ids))).tuples()) if into_ids else {}
    rows: list[list[object]] = []
    for c in cases:
        personal = list_personal(s, c, user)
        deadlines = {d.name: d for d in deadline_state(c, now, ctx.calendar, near_fraction=near)}
        cells: list[object] = [c.number, c.status, c.channel, c.category, c.unit, c.handling_form,
                               c.received_at.astimezone(tz).strftime(LOCAL)]
        for name in DEADLINES:
            d = deadlines.get(name)
            cells += [d.due.astimezone(tz).strftime(LOCAL), d.state] if d else [None, None]
        cells += [personal["caller_number"], personal["complainant_name"], personal["complainant_phone"],
                  personal["address"], c.content, c.result, c.reply, c.satisfaction,
                  numbers.get(c.merged_into_id) if c.merged_into_id is not None else None,
                  "true" if c.key_supervision else "false"]
        rows.append(cells)
    return rows


@routes.get(EXPORT_PATH, summary="Export the case list as CSV (the list's filters; protected reporters masked)",
            roles=EXPORTERS, query=CaseFilters, produces=CONTENT_TYPE,
            description="UTF-8 with a BOM, one row per case in the list's order, times in the centre's time zone. "
            "Personal fields of confidential or anonymous reporters are always masked; cells a spreadsheet "
            "would run as formulas are prefixed with '. Each export is written to the audit log.")
async def export_cases(request: web.Request) -> web.StreamResponse:
    filters = parse_query(request, CaseFilters)
    ctx, user = request.app[CTX], request[USER]
    now = ctx.now()
    given = filters.model_dump(mode="json", exclude_unset=True)

    def read(cursor: str | None) -> Batch:
        q = CaseListQuery(**filters.model_dump(), cursor=cursor, limit=BATCH)
        with ctx.sessions() as s:
            cases, nxt = list_page(ctx, s, q, user, now)
            return Batch(csv_text(export_rows(s, ctx, cases, user, now)), len(cases), nxt)

    batch = await asyncio.to_thread(read, None)  # a bad filter is still a JSON error: nothing sent yet
    stamp = now.astimezone(ctx.settings.calendar.tz).strftime("%Y%m%d-%H%M")
    response = web.StreamResponse(headers={**attachment(f"cases-{stamp}.csv"), "X-Request-ID": request[REQUEST_ID]})
    await response.prepare(request)
    sent, outcome = 0, "failed"
    try:
        await response.write((BOM + csv_text([COLUMNS])).encode())
        while True:
            await response.write(batch.text.encode())
            sent += batch.rows
            if batch.next_cursor is None:
                break
            batch = await asyncio.to_thread(read, batch.next_cursor)
        await response.write_eof()
        outcome = "complete"
    except ConnectionError:
        outcome = "client_gone"
    except Exception:
        # The status line is gone: cut the connection so the client cannot take the part for the whole.
        log.exception("case export failed while streaming", user=user.username)
        if request.transport is not None:
            request.transport.close()
    finally:
        log.info("cases exported", user=user.username, role=user.role, filters=given, rows=sent, outcome=outcome)
    return response


__all__ = ["COLUMNS", "EXPORT_PATH", "export_rows", "routes"]
