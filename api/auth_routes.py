"""Logging in and out: bearer tokens for API clients, the login form and session for people."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from typing import Literal

from aiohttp import web
from pydantic import Field

from api.auth import (
    ANY_STAFF,
    USER,
    LoginResult,
    bearer_token,
    csrf_ok,
    end_session,
    login,
    start_session,
)
from api.context import CTX
from api.errors import ApiError, json_response
from api.openapi import PUBLIC, Routes
from api.pages import page_lang, render_page, translator
from api.validation import ApiModel, parse_body
from cases.users import MAX_PASSWORD, Staff, User, issue_token, revoke_token
from config.db import transaction

routes = Routes("auth")


class TokenRequest(ApiModel):
    username: str = Field(max_length=200)
    password: str = Field(max_length=MAX_PASSWORD)
    days: int | None = Field(None, ge=1, description="Lifetime in days; default and maximum: [api] token_days")


class UserOut(ApiModel):
    username: str
    display_name: str
    role: str
    unit: str | None
    sip_uri: str | None

    @classmethod
    def of(cls, s: Staff) -> UserOut:
        return cls(username=s.username, display_name=s.display_name, role=s.role, unit=s.unit, sip_uri=s.sip_uri)


class TokenOut(ApiModel):
    token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_at: dt.datetime
    user: UserOut


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def throttled(result: LoginResult) -> ApiError:
    wait = max(1, math.ceil(result.retry_after))
    return ApiError(
        429,
        "too_many_attempts",
        f"too many failed logins for this username or address; try again in {wait} s",
        {"retry_after": wait},
        retry_after_header(wait),
    )


@routes.post(
    "/api/v1/auth/token",
    summary="Exchange a username and password for a bearer token",
    roles=PUBLIC,
    body=TokenRequest,
    response=TokenOut,
    status=201,
    errors=(401, 429),
)
async def create_token(request: web.Request) -> web.Response:
    body = await parse_body(request, TokenRequest)
    limit = request.app[CTX].settings.api.token_days
    if body.days is not None and body.days > limit:
        raise ApiError(
            422,
            "validation_failed",
            f"invalid body: days: at most {limit}",
            {"fields": [{"field": "days", "message": f"at most {limit} ([api] token_days)", "type": "less_than_equal"}]},
        )
    result = await login(request, body.username, body.password)
    if result.retry_after > 0:
        raise throttled(result)
    if result.user is None:
        raise ApiError(401, "invalid_credentials", "wrong username or password")
    ctx, user_id = request.app[CTX], result.user.id

    def issue() -> tuple[str, dt.datetime]:
        with transaction(ctx.sessions) as s:
            token, row = issue_token(s, s.get_one(User, user_id), days=body.days or limit)
            return token, row.expires_at

    token, expires = await asyncio.to_thread(issue)
    out = TokenOut(token=token, expires_at=expires, user=UserOut.of(result.user))
    return json_response(out.model_dump(mode="json"), status=201)


@routes.delete(
    "/api/v1/auth/token",
    summary="Revoke the bearer token this request is sent with",
    roles=ANY_STAFF,
    status=204,
    errors=(400,),
)
async def delete_token(request: web.Request) -> web.Response:
    token = bearer_token(request)
    if token is None:
        raise ApiError(400, "not_token_auth", "send the token to revoke as 'Authorization: Bearer …'; "
                       "a web session ends with POST /logout")
    ctx = request.app[CTX]

    def revoke() -> None:
        with transaction(ctx.sessions) as s:
            revoke_token(s, token)

    await asyncio.to_thread(revoke)
    return web.Response(status=204)


@routes.get("/api/v1/auth/me", summary="The logged-in user", roles=ANY_STAFF, response=UserOut)
async def me(request: web.Request) -> web.Response:
    return json_response(UserOut.of(request[USER]).model_dump(mode="json"))


# --- pages ---------------------------------------------------------------------------------

def safe_next(value: object) -> str:
    """Only a path on this site: never //evil.example or https://evil.example (open redirect)."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith(("//", "/\\")) and len(value) < 2000:
        if all(32 < ord(ch) < 127 for ch in value):
            return value
    return "/"


def _text(form: object, name: str) -> str:
    value = form.get(name) if hasattr(form, "get") else None  # type: ignore[union-attr]
    return value if isinstance(value, str) else ""


@routes.get("/login", summary="Login form", roles=PUBLIC, document=False)
async def login_form(request: web.Request) -> web.Response:
    return await render_page(
        request, "login.html", {"next": safe_next(request.query.get("next")), "username": "", "message": None}
    )


@routes.post("/login", summary="Log in (form)", roles=PUBLIC, document=False)
async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    username, password, target = _text(form, "username"), _text(form, "password"), safe_next(_text(form, "next"))
    page = {"next": target, "username": username[:200]}
    if not await csrf_ok(request):
        return await render_page(request, "login.html", {**page, "message": _t(request, "login.expired")}, status=403)
    result = await login(request, username, password)
    if result.retry_after > 0:
        wait = max(1, math.ceil(result.retry_after))
        response = await render_page(
            request, "login.html", {**page, "message": _t(request, "login.throttled", seconds=wait)}, status=429
        )
        response.headers.update(retry_after_header(wait))
        return response
    if result.user is None:
        return await render_page(request, "login.html", {**page, "message": _t(request, "login.failed")}, status=401)
    await start_session(request, result.user)
    return web.Response(status=303, headers={"Location": target})


def _t(request: web.Request, key: str, **values: object) -> str:
    return translator(page_lang(request))(key, **values)


@routes.post("/logout", summary="Log out (form)", roles=ANY_STAFF, document=False)
async def logout(request: web.Request) -> web.Response:
    await end_session(request)
    return web.Response(status=303, headers={"Location": "/login"})


@routes.get("/", summary="Home page", roles=ANY_STAFF, document=False)
async def home(request: web.Request) -> web.Response:
    return await render_page(request, "home.html")
