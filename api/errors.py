"""One error shape for every JSON client, and the middleware that guarantees it.

Under /api/ and /open311/ every failure, whoever raised it (a handler, aiohttp's router,
the body-size limit, a bug), reaches the client as

    {"error": {"code": "not_found", "message": "...", "details": null}}

with the right status. Unexpected exceptions become a 500 naming a request id that is also
logged with the traceback; the traceback itself never leaves the server. Every response
carries X-Request-ID so a person reporting a problem can quote it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

from config.db import DatabaseError
from config.logs import get_logger

log = get_logger("api.errors")

REQUEST_ID = web.RequestKey("request_id", str)
MAX_BODY = web.AppKey("max_body_bytes", int)
JSON_PREFIXES = ("/api/", "/open311/")

CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_attempts",
    500: "internal_error",
    503: "unavailable",
}


def wants_json(request: web.Request) -> bool:
    """API clients get JSON errors; people on pages get pages and redirects."""
    return request.path.startswith(JSON_PREFIXES)


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """JSON with Chinese text kept readable (not \\uXXXX escaped)."""
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


def error(
    status: int, code: str, message: str, details: Any = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Every API error has this body, so clients handle one shape."""
    return json_response({"error": {"code": code, "message": message, "details": details}}, status, headers)


class ApiError(Exception):
    """Raised anywhere below a handler to answer with the error shape (the middleware renders it)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return error(self.status, self.code, self.message, self.details, self.headers)


def _from_http_exception(e: web.HTTPException) -> web.Response:
    text = e.text or ""
    # aiohttp's own bodies read "404: Not Found"; a handler's custom text is kept.
    message = e.reason if not text or text.startswith(f"{e.status}:") else text
    headers = {k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")}
    return error(e.status, CODES.get(e.status, e.reason.lower().replace(" ", "_")), message, None, headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = uuid.uuid4().hex[:16]
    request[REQUEST_ID] = rid
    with structlog.contextvars.bound_contextvars(request_id=rid):
        try:
            response = await _handle(request, handler, rid)
        except web.HTTPException as e:  # pages' redirects and errors pass through as aiohttp's own
            e.headers["X-Request-ID"] = rid
            raise
    response.headers["X-Request-ID"] = rid
    return response


async def _handle(request: web.Request, handler: Handler, rid: str) -> web.StreamResponse:
    api = wants_json(request)
    try:
        limit = request.app[MAX_BODY]
        if request.content_length is not None and request.content_length > limit:
            # Refused before anyone reads it, also on routes that never read a body.
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        return await handler(request)
    except ApiError as e:
        return e.response()
    except web.HTTPException as e:
        if e.status < 400 or not api:
            raise
        return _from_http_exception(e)
    except DatabaseError as e:
        log.error("database unavailable", error=str(e))
        if api:
            return error(503, "database_unavailable", "the database is unavailable; try again later")
        return web.Response(status=503, text="The database is unavailable; try again later.")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error", method=request.method, path=request.path)
        message = f"internal error; quote request id {rid} when reporting it"
        if api:
            return error(500, "internal_error", message, {"request_id": rid})
        return web.Response(status=500, text=message)
