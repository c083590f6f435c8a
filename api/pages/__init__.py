"""Staff web pages: the Jinja environment, the page language and the render helpers.

Templates live in api/templates/ and extend base.html. Autoescaping is on for every
template, so names, addresses and case text typed by anyone are shown, never run.

Language: Chinese by default; `?lang=en` (or `?lang=zh`) on any page switches and is
remembered in a `lang` cookie. Page text goes through `t("key")`, looked up in
api/messages.py and api/pages/text.py; a key missing in English falls back to Chinese,
then to the key itself.

The page routes live in api/pages/case_pages.py (queue, detail, draft review and the case
actions), api/pages/supervision_pages.py (overdue board, key cases, recordings, statistics),
api/pages/admin_pages.py (the administrator's users page) and api/pages/console_pages.py
(the operator's console, a script over the JSON API like api/campaign_pages.py).
They read with the domain functions and act by calling cases.actions, like the JSON API:
the page layer holds no business rule of its own. Times are shown in the centre's zone
with the `local` filter.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from api.auth import USER, csrf_token
from api.context import CTX
from api.messages import MESSAGES as BASE_MESSAGES
from api.pages.text import PAGE_MESSAGES

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC = Path(__file__).resolve().parent.parent / "static"
LANGS = ("zh", "en")
LANG_COOKIE = "lang"
MESSAGES: dict[str, dict[str, str]] = {lang: {**BASE_MESSAGES[lang], **PAGE_MESSAGES[lang]} for lang in LANGS}


def setup_templates(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        default_helpers=False,
    )
    tz = app[CTX].settings.calendar.tz

    def local(value: dt.datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        """A stored UTC time as the centre's wall-clock time ("" for none)."""
        return value.astimezone(tz).strftime(fmt) if value is not None else ""

    env.filters["local"] = local


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


def duration_text(lang: str, seconds: float) -> str:
    """Working time as "3 h 05 min" / "3小时05分" (days of working time mean little to a reader)."""
    t = translator(lang)
    minutes = int(abs(seconds)) // 60
    return t("duration", h=minutes // 60, m=f"{minutes % 60:02d}")


async def render_page(
    request: web.Request, template: str, context: dict[str, Any] | None = None, *, status: int = 200
) -> web.Response:
    """Render a page with what base.html needs: language, translator, CSRF token, current user."""
    lang = page_lang(request)
    page = {
        "lang": lang,
        "t": translator(lang),
        "duration": functools.partial(duration_text, lang),
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


async def render_error(request: web.Request, status: int, message_key: str, detail: str | None = None) -> web.Response:
    return await render_page(
        request, "error.html", {"status": status, "message_key": message_key, "detail": detail}, status=status
    )


class PageError(Exception):
    """Raised inside a page handler to answer with the error page (404 unknown case, 400 bad filter…)."""

    def __init__(self, status: int, message_key: str, detail: str | None = None) -> None:
        super().__init__(message_key)
        self.status, self.message_key, self.detail = status, message_key, detail


PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def page(handler: PageHandler) -> PageHandler:
    """Turn a PageError raised by the handler (or the threads it runs) into the error page."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except PageError as e:
            return await render_error(request, e.status, e.message_key, e.detail)

    return wrapped
