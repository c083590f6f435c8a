"""Staff accounts over HTTP, for administrators: /api/v1/users (JSON) and the users page's work.

The same operations as `hotline users add|list|disable|enable|password` (cases/users_cli.py),
through the same cases/users.py functions: the API and the admin's page (api/pages/admin_pages.py)
call the helpers below, so a unit handler's unit is resolved, and an account created or
changed, one way wherever it is done. Only administrators may use them (api.auth: admin does not
pass other roles' checks, and no other role passes this one).

Errors: an unknown username is 404, a taken one 409, anything else cases/users.py refuses (bad
name, password too short, a unit for a role that has none, an unknown unit) 422 with its reason.
Passwords are never echoed, in answers or in errors.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Literal, TypeVar

from aiohttp import web
from pydantic import Field
from sqlalchemy.orm import Session

from api.auth import Handler
from api.context import CTX
from api.errors import ApiError, json_response
from api.openapi import Routes
from api.validation import ApiModel, parse_body
from cases.users import (
    MAX_PASSWORD,
    ROLES,
    NoSuchUser,
    User,
    UserError,
    UserExists,
    create_user,
    get_user,
    list_users,
    set_active,
    set_password,
    unit_code,
)
from config.context import Context
from config.db import transaction

routes = Routes("users")

ADMIN = ("admin",)
USER_PATH = "/api/v1/users/{username}"
T = TypeVar("T")


class UserAccount(ApiModel):
    username: str
    display_name: str
    role: str
    unit: str | None = Field(description="a unit handler's [cases] units code")
    sip_uri: str | None = Field(description="an operator's phone or extension, where the IVR bridges calls")
    active: bool
    created_at: dt.datetime
    last_login_at: dt.datetime | None

    @classmethod
    def of(cls, u: User) -> UserAccount:
        return cls(username=u.username, display_name=u.display_name, role=u.role, unit=u.unit, sip_uri=u.sip_uri,
                   active=u.active, created_at=u.created_at, last_login_at=u.last_login_at)


class UserList(ApiModel):
    items: list[UserAccount]


class UserCreate(ApiModel):
    username: str = Field(max_length=200, description="1-64 of a-z 0-9 . _ - (stored in lower case)")
    password: str = Field(max_length=MAX_PASSWORD, description="at least 10 characters")
    role: Literal[*ROLES]  # type: ignore[valid-type]
    unit: str | None = Field(None, max_length=200, description="required for a unit_handler, only for it: a "
                             "[cases] units code (or the unit's name)")
    sip_uri: str | None = Field(None, max_length=200, description="an operator's phone, e.g. sip:8001@pbx.local")
    display_name: str | None = Field(None, max_length=120, description="shown on pages; default: the username")


class PasswordBody(ApiModel):
    password: str = Field(max_length=MAX_PASSWORD, description="the new password, at least 10 characters")


# --- the operations, for the API and the page alike ----------------------------------------


async def in_transaction(ctx: Context, work: Callable[[Session], T]) -> T:
    """Run ``work(session)`` in one transaction off the event loop (cases.users errors pass through)."""

    def run() -> T:
        with transaction(ctx.sessions) as s:
            return work(s)

    return await asyncio.to_thread(run)


async def accounts(ctx: Context) -> list[UserAccount]:
    return await in_transaction(ctx, lambda s: [UserAccount.of(u) for u in list_users(s)])


async def add_account(ctx: Context, body: UserCreate) -> UserAccount:
    """Create the account as `hotline users add` does; a unit given by name is stored as its code."""
    unit = body.unit.strip() if body.unit and body.unit.strip() else None
    sip_uri = body.sip_uri.strip() if body.sip_uri and body.sip_uri.strip() else None
    if unit is not None:
        unit = unit_code(ctx.settings.cases.unit_names(), unit)
    return await in_transaction(ctx, lambda s: UserAccount.of(create_user(
        s, body.username, body.password, body.role, unit=unit, sip_uri=sip_uri,
        display_name=body.display_name.strip() if body.display_name else None)))


async def change_account(ctx: Context, username: str, change: Literal["disable", "enable", "password"],
                         password: str = "") -> UserAccount:
    """Disable or enable an account (its tokens revoked on disabling), or reset its password."""

    def work(s: Session) -> UserAccount:
        if change == "password":
            return UserAccount.of(set_password(s, username, password))
        return UserAccount.of(set_active(s, username, change == "enable"))

    return await in_transaction(ctx, work)


def user_error(e: UserError) -> ApiError:
    if isinstance(e, NoSuchUser):
        return ApiError(404, "not_found", str(e))
    if isinstance(e, UserExists):
        return ApiError(409, "user_exists", str(e))
    return ApiError(422, "user_refused", str(e))


# --- the routes ----------------------------------------------------------------------------


def _answer(account: UserAccount, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(account.model_dump(mode="json"), status, headers)


@routes.get("/api/v1/users", summary="Every staff account, disabled ones too", roles=ADMIN, response=UserList)
async def list_accounts(request: web.Request) -> web.Response:
    items = await accounts(request.app[CTX])
    return json_response(UserList(items=items).model_dump(mode="json"))


@routes.post("/api/v1/users", summary="Create a staff account", roles=ADMIN, body=UserCreate, response=UserAccount,
             status=201, errors=(409,),
             description="As `hotline users add`: a unit_handler needs its unit, only it has one; an operator's "
             "sip_uri is where the IVR rings them.")
async def create_account(request: web.Request) -> web.Response:
    body = await parse_body(request, UserCreate)
    try:
        account = await add_account(request.app[CTX], body)
    except UserError as e:
        raise user_error(e) from None
    return _answer(account, 201, {"Location": f"/api/v1/users/{account.username}"})


@routes.get(USER_PATH, summary="One staff account", roles=ADMIN, response=UserAccount, errors=(404,))
async def get_account(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    try:
        return _answer(await in_transaction(request.app[CTX], lambda s: UserAccount.of(get_user(s, username))))
    except UserError as e:
        raise user_error(e) from None


def _change_handler(change: Literal["disable", "enable"]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        try:
            return _answer(await change_account(request.app[CTX], request.match_info["username"], change))
        except UserError as e:
            raise user_error(e) from None

    handler.__name__ = handler.__qualname__ = f"{change}_account"  # the OpenAPI operationId
    return handler


routes.post(USER_PATH + "/disable", summary="Disable an account: logins refused, its API tokens revoked, its web "
            "sessions end at their next request", roles=ADMIN, response=UserAccount,
            errors=(404,))(_change_handler("disable"))
routes.post(USER_PATH + "/enable", summary="Enable a disabled account again (old tokens stay revoked)", roles=ADMIN,
            response=UserAccount, errors=(404,))(_change_handler("enable"))


@routes.put(USER_PATH + "/password", summary="Reset an account's password; its API tokens are revoked", roles=ADMIN,
            body=PasswordBody, status=204, errors=(404,))
async def reset_password(request: web.Request) -> web.Response:
    body = await parse_body(request, PasswordBody)
    try:
        await change_account(request.app[CTX], request.match_info["username"], "password", body.password)
    except UserError as e:
        raise user_error(e) from None
    return web.Response(status=204)


__all__ = ["ADMIN", "UserAccount", "UserCreate", "accounts", "add_account", "change_account", "routes", "user_error"]
