"""The aiohttp application: health, the case list, recordings (search, audio, access log), /metrics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from sqlalchemy import select, text

from cases.models import Case
from config.context import Context
from config.db import DatabaseError, current_revision, head_revision

CTX = web.AppKey("ctx", Context)


def error(status: int, code: str, message: str, details: Any = None) -> web.Response:
    """Every API error has this body, so clients handle one shape."""
    body = {"error": {"code": code, "message": message, "details": details}}
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


@web.middleware
async def errors_as_json(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400 or not request.path.startswith("/api/"):
            raise
        return error(e.status, e.reason.lower().replace(" ", "_"), e.text or e.reason)
    except DatabaseError as e:
        return error(503, "database_unavailable", str(e))


async def healthz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]

    def check() -> dict[str, Any]:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        have = current_revision(ctx.engine)
        want = head_revision(ctx.settings.database.url)
        return {"database": "ok", "schema": have, "schema_current": have == want}

    try:
        result = await asyncio.to_thread(check)
    except DatabaseError as e:
        return web.json_response({"status": "unavailable", "database": str(e)}, status=503)
    status = 200 if result["schema_current"] else 503
    return web.json_response({"status": "ok" if status == 200 else "degraded", **result}, status=status)


def case_summary(c: Case, tz: Any) -> dict[str, Any]:
    return {
        "number": c.number,
        "status": c.status,
        "channel": c.channel,
        "received_at": c.received_at.isoformat(),
        "received_local": c.received_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
        "caller_number": c.caller_number,
        "complainant_phone": c.complainant_phone,
        "address": c.address,
        "content": c.content,
        "extracted": c.extracted,
    }


async def list_cases(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    status = request.query.get("status")
    try:
        limit = int(request.query.get("limit", "50"))
        if not 1 <= limit <= 500:
            raise ValueError
    except ValueError:
        return error(400, "bad_request", "limit must be an integer from 1 to 500", {"limit": request.query.get("limit")})
    tz = ctx.settings.calendar.tz

    def load() -> list[dict[str, Any]]:
        with ctx.sessions() as s:
            q = select(Case).order_by(Case.id.desc()).limit(limit)
            if status:
                q = q.where(Case.status == status)
            return [case_summary(c, tz) for c in s.scalars(q)]

    items = await asyncio.to_thread(load)
    return web.json_response({"items": items}, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def create_app(ctx: Context) -> web.Application:
    # Imported here: these modules use CTX and error from this one.
    from api.metrics import count_requests, setup_metrics
    from api.recordings import add_routes as add_recording_routes

    app = web.Application(middlewares=[count_requests, errors_as_json])
    app[CTX] = ctx
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/cases", list_cases)
    add_recording_routes(app)
    setup_metrics(app, ctx)
    return app
