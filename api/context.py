"""Typed application keys shared by the route modules (kept apart from app.py to avoid import cycles)."""

from __future__ import annotations

from aiohttp import web

from config.context import Context

CTX = web.AppKey("ctx", Context)
"""The process's settings, database and calendar (config.context.Context)."""
