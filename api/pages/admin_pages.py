"""The administrator's users page: list accounts, add one, disable / enable it, reset its password.

Administrators only. Each form posts to a route here that calls the same helper as
/api/v1/users (api/users.py), which calls cases/users.py like `hotline users …`: the page
holds no account rule of its own. After a change the browser is sent back to the list
(303); a refusal (bad name, taken name, short password, a unit for a role without one)
shows the page again with the reason, what was typed kept except passwords.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import ValidationError

from api.context import CTX
from api.openapi import Routes
from api.pages import page, render_page
from api.users import ADMIN, UserCreate, accounts, add_account, change_account, user_error
from cases.users import ROLES, UserError

routes = Routes("pages")
FIELDS = ("username", "display_name", "role", "unit", "sip_uri")
"""The add form's fields kept when it is shown again (never the password)."""


def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


async def _show(request: web.Request, *, status: int = 200, message: str | None = None, failed: str | None = None,
                form: dict[str, str] | None = None) -> web.Response:
    ctx = request.app[CTX]
    return await render_page(request, "admin_users.html", {
        "accounts": await accounts(ctx),
        "roles": ROLES,
        "units": ctx.settings.cases.unit_names(),
        "message": message,
        "failed": failed,
        "form": form or {},
    }, status=status)


def _back() -> web.Response:
    return web.Response(status=303, headers={"Location": "/admin/users"})


@routes.get("/admin/users", summary="Staff accounts (page)", roles=ADMIN, document=False)
@page
async def users_page(request: web.Request) -> web.Response:
    return await _show(request)


@routes.post("/admin/users", summary="Add a staff account (form)", roles=ADMIN, document=False)
@page
async def add_user(request: web.Request) -> web.Response:
    form = await request.post()
    typed = {name: _text(form, name) for name in FIELDS}
    try:
        body = UserCreate.model_validate({**{k: v or None for k, v in typed.items()},
                                          "username": typed["username"], "password": _text(form, "password")})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in
                             e.errors(include_url=False, include_input=False, include_context=False))
        return await _show(request, status=422, message=problems, failed="add", form=typed)
    try:
        await add_account(request.app[CTX], body)
    except UserError as e:
        error = user_error(e)
        return await _show(request, status=error.status, message=error.message, failed="add", form=typed)
    return _back()


def _change_form(change: Literal["disable", "enable", "password"]) -> Any:  # a PageHandler
    async def handler(request: web.Request) -> web.Response:
        username = request.match_info["username"]
        password = _text(await request.post(), "password") if change == "password" else ""
        try:
            await change_account(request.app[CTX], username, change, password)
        except UserError as e:
            error = user_error(e)
            return await _show(request, status=error.status, message=error.message, failed=f"{change}:{username}")
        return _back()

    handler.__name__ = handler.__qualname__ = f"{change}_user_form"
    return page(handler)


Change = Literal["disable", "enable", "password"]
CHANGES: tuple[tuple[Change, str], ...] = (
    ("disable", "Disable a staff account (form)"),
    ("enable", "Enable a staff account (form)"),
    ("password", "Reset a staff account's password (form)"),
)
for _change, _summary in CHANGES:
    routes.post(f"/admin/users/{{username}}/{_change}", summary=_summary, roles=ADMIN,
                document=False)(_change_form(_change))
