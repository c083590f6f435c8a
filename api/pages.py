"""Staff web pages: the Jinja environment, the page language and the render helpers.

Templates live in api/templates/ and extend base.html. Autoescaping is on for every
template, so names, addresses and case text typed by anyone are shown, never run.

Language: Chinese by default; `?lang=en` (or `?lang=zh`) on any page switches and is
remembered in a `lang` cookie. Page text goes through `t("key")`, looked up in
api/messages.py; a key missing in English falls back to Chinese, then to the key itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from api.auth import USER, csrf_token
from api.messages import MESSAGES

TEMPLATES = Path(__file__).resolve().parent / "templates"
LANGS = ("zh", "en")
LANG_COOKIE = "lang"


def setup_templates(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        default_helpers=False,
    )


def page_lang(request: web.Request) -> str:
    asked = request.query.get("lang")
    if asked in LANGS:
        return asked
    cookie = request.cookies.get(LANG_COOKIE)
    return cookie if cookie in LANGS else LANGS[0]


def translator(lang: str):  # type: ignore[no-untyped-def]
    own, fallback = MESSAGES.get(lang, {}), MESSAGES[LANGS[0]]

    def t(key: str, **values: Any) -> str:
        text = own.get(key) or fallback.get(key) or key
        return text.format(**values) if values else text

    return t


async def render_page(
    request: web.Request, template: str, context: dict[str, Any] | None = None, *, status: int = 200
) -> web.Response:
    """Render a page with what base.html needs: language, translator, CSRF token, current user."""
    lang = page_lang(request)
    page = {
        "lang": lang,
        "t": translator(lang),
        "csrf_token": await csrf_token(request),
        "user": request.get(USER),
        "path": request.path,
        **(context or {}),
    }
    response = aiohttp_jinja2.render_template(template, request, page, status=status)
    if request.query.get("lang") in LANGS:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="Lax", httponly=True)
    response.headers["Cache-Control"] = "no-store"
    return response


async def render_error(request: web.Request, status: int, message_key: str) -> web.Response:
    return await render_page(request, "error.html", {"status": status, "message_key": message_key}, status=status)
