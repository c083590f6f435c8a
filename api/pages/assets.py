"""The pages' own script and style sheet, served from api/static/ (no CDN: the centre's network is closed).

Declared as a PUBLIC route like every other (the login page needs the style sheet before
anyone is logged in); the name must be a plain file name, so no path leaves
the folder.
"""

from __future__ import annotations

import re

from aiohttp import web

from api.openapi import PUBLIC, Routes
from api.pages import STATIC

routes = Routes("pages")
TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}


NAME = re.compile(r"[a-z0-9_-]+\.(js|css)")


@routes.get("/static/{name}", summary="Page script or style sheet", roles=PUBLIC,
            document=False)
async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    m = NAME.fullmatch(name)
    if m is None or not (STATIC / name).is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC / name, headers={"Content-Type": TYPES[m.group(1)],
                                           "Cache-Control": "no-cache"})
