"""The aiohttp application: wiring of middlewares, sessions, templates, the route modules and /metrics.

A new route module declares a `routes = Routes("tag")` table (see api/openapi.py) and is
added to ROUTE_MODULES below; nothing else is needed for its role checks and its entry in
/api/v1/openapi.json.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy import text

from api import (auth_routes, boards, campaign_pages, campaigns, case_export, cases, metrics, open311, openapi, operators,
                 recordings, stats, users)
from api.auth import setup_sessions
from api.context import CTX
from api.errors import MAX_BODY, error, errors_middleware
from api.metrics import count_requests, setup_metrics
from api.pages import admin_pages, assets, case_pages, console_pages, setup_templates, supervision_pages
from config.context import Context
from config.db import DatabaseError, current_revision, head_revision

ROUTE_MODULES = (openapi, auth_routes, cases, case_export, boards, stats, open311, recordings, metrics, operators, campaigns,
                 campaign_pages, users, assets, case_pages, console_pages, supervision_pages, admin_pages)

__all__ = ["CTX", "create_app", "error"]


async def healthz(request: web.Request) -> web.Response:
    """Public on purpose: load balancers and monitoring ask it without credentials."""
    ctx = request.app[CTX]

    def check() -> dict[str, Any]:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        have = current_revision(ctx.engine)
        want = head_revision(ctx.settings.database.url)
        return {"database": "ok", "schema": have, "schema_current": have == want}

    # Parts running in this process (the IVR's SIP side) report through ctx.health; each object
    # is shown, and one that is unhealthy makes the whole answer degraded.
    parts: dict[str, Any] = {}
    parts_ok = True
    for name, probe in ctx.health.items():
        ok, parts[name] = probe()
        parts_ok = parts_ok and ok
    try:
        result = await asyncio.to_thread(check)
    except DatabaseError as e:
        return web.json_response({"status": "unavailable", "database": str(e), **parts}, status=503)
    status = 200 if result["schema_current"] and parts_ok else 503
    return web.json_response({"status": "ok" if status == 200 else "degraded", **result, **parts}, status=status)


def create_app(ctx: Context) -> web.Application:
    api = ctx.settings.api
    app = web.Application(middlewares=[count_requests, errors_middleware], client_max_size=api.max_body_bytes)
    app[CTX] = ctx
    app[MAX_BODY] = api.max_body_bytes
    setup_sessions(app, api, ctx.settings.storage.root)
    setup_templates(app)
    app.router.add_get("/healthz", healthz)
    openapi.install(app, *(m.routes for m in ROUTE_MODULES))
    recordings.setup(app)
    operators.setup(app)
    setup_metrics(app, ctx)
    return app
