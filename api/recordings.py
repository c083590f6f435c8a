"""Recordings for supervisors: search, details, the audio (seekable), and each one's access log.

Audio and the audit
-------------------
``GET /api/v1/recordings/{id}/audio`` is served by :class:`aiohttp.web.FileResponse`,
which implements Range (206), suffix ranges, 416, If-Range and conditional requests.
Every response that carries audio bytes (status 200 or 206 to a GET) writes one
``RecordingAccess`` entry, with the Range asked for, *before* its headers go out: if the
entry cannot be written the audio is not sent (503). HEAD, 304, 412 and 416 send no
audio and write nothing.

Consecutive Range requests of one playback are deliberately **not** collapsed: any rule
that skips entries by range (e.g. "only requests from byte 0 count") lets a client fetch
the whole file unlogged with ``Range: bytes=1-`` plus one byte later. A browser seek is
therefore a second ``play`` entry whose ``range`` shows where it went; readers of the log
group them by actor, client and time. ``Cache-Control: no-store`` keeps browsers from
replaying audio out of their cache without asking (and being logged).

Roles: operators (they play messages while reviewing drafts) and supervisors (audits);
the access log itself only for supervisors.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from api.auth import USER
from api.context import CTX
from api.errors import error
from api.openapi import Routes
from cases.models import Case
from config.context import Context
from config.db import DatabaseError, transaction
from config.logs import get_logger
from ivr.models import Call
from ivr.recording_search import RecordingHit, RecordingQuery, search_recordings
from recordings.access import append_access, entry_dict, list_access
from recordings.models import KINDS, Recording
from recordings.store import recording_path
from transcription.speakers import speaker, transcripts_of

log = get_logger("api.recordings")
routes = Routes("recordings")
LISTENERS = ("operator", "supervisor")
"""Operators play messages while reviewing drafts; supervisors audit."""

MAX_LIMIT = 200
MAX_ID = 2**31 - 1
"""recording.id is a 32-bit integer: a larger id cannot exist (and PostgreSQL refuses to compare it)."""
_ID = re.compile(r"[0-9]{1,18}")
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


class BadRequest(Exception):
    """A query parameter is wrong; becomes a 400 naming it."""

    def __init__(self, param: str, message: str, value: Any = None) -> None:
        super().__init__(message)
        self.param, self.message, self.value = param, message, value


def _actor(request: web.Request) -> str:
    return request[USER].username


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _ctx(request: web.Request) -> Context:
    return request.app[CTX]


def _positive(param: str, value: str | None, *, default: int | None = None, maximum: int | None = None) -> int | None:
    if value is None:
        return default
    if not _ID.fullmatch(value) or int(value) < 1 or (maximum is not None and int(value) > maximum):
        limit = f"from 1 to {maximum}" if maximum else "of at least 1"
        raise BadRequest(param, f"{param} must be a whole number {limit}", value)
    return int(value)


def _date(param: str, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            raise ValueError(value)
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BadRequest(param, f"{param} must be a date YYYY-MM-DD (local to the centre)", value[:100]) from None


def _text(param: str, value: str | None, max_len: int) -> str | None:
    if value is None:
        return None
    if not value or len(value) > max_len or any(ord(ch) < 32 for ch in value):
        raise BadRequest(param, f"{param} must be 1 to {max_len} printable characters", value[:100])
    return value


def _recording_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    value = _positive("id", raw)
    assert value is not None
    return value


def _parse_query(request: web.Request) -> tuple[RecordingQuery, int | None, int]:
    p = request.query
    known = {"from", "to", "caller", "disposition", "case", "kind", "cursor", "limit"}
    unknown = sorted(set(p) - known)
    if unknown:
        raise BadRequest(unknown[0], f"unknown parameter {unknown[0]!r}; accepted: {', '.join(sorted(known))}")
    date_from, date_to = _date("from", p.get("from")), _date("to", p.get("to"))
    if date_from and date_to and date_from > date_to:
        raise BadRequest("to", "to is before from", {"from": p["from"], "to": p["to"]})
    caller = p.get("caller")
    if caller is not None:
        caller = re.sub(r"[\s\-().]", "", caller)
        if not re.fullmatch(r"\+?[0-9]{1,20}", caller):
            raise BadRequest("caller", "caller must be (part of) a phone number: digits, optional leading +", p["caller"])
    kind = p.get("kind")
    if kind is not None and kind not in KINDS:
        raise BadRequest("kind", f"kind must be one of {', '.join(KINDS)}", kind)
    q = RecordingQuery(
        date_from=date_from,
        date_to=date_to,
        caller=caller,
        disposition=_text("disposition", p.get("disposition"), 20),
        case_number=_text("case", p.get("case"), 20),
        kind=kind,
    )
    cursor = _positive("cursor", p.get("cursor"))
    if cursor is not None and cursor > MAX_ID:
        cursor = None  # every id is below it
    limit = _positive("limit", p.get("limit"), default=50, maximum=MAX_LIMIT)
    assert limit is not None
    return q, cursor, limit


def _call_dict(c: Call | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "id": c.id,
        "direction": c.direction,
        "caller": c.caller,
        "called": c.called,
        "started_at": c.started_at.isoformat(),
        "ended_at": c.ended_at.isoformat() if c.ended_at else None,
        "disposition": c.disposition,
    }


def _case_dict(c: Case | None) -> dict[str, Any] | None:
    return None if c is None else {"number": c.number, "status": c.status}


def _hit_dict(h: RecordingHit, tz: Any, *, full: bool = False) -> dict[str, Any]:
    r = h.recording
    body: dict[str, Any] = {
        "id": r.id,
        "kind": r.kind,
        "caller": r.caller,
        "received_at": r.received_at.isoformat(),
        "received_local": r.received_at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
        "duration": r.duration,
        "bytes": r.bytes,
        "deleted": r.deleted_at is not None,
        "call": _call_dict(h.call),
        "case": _case_dict(h.case),
        "audio_url": f"/api/v1/recordings/{r.id}/audio",
    }
    if full:
        body |= {
            "format": r.format,
            "sample_rate": r.sample_rate,
            "channels": r.channels,
            "sha256": r.sha256,
            "source_name": r.source_name,
            "created_at": r.created_at.isoformat(),
            "retention_until": r.retention_until.isoformat() if r.retention_until else None,
            "deleted_at": r.deleted_at.isoformat() if r.deleted_at else None,
        }
    return body


def _bad(e: BadRequest) -> web.Response:
    return error(400, "bad_request", e.message, {e.param: e.value})


@routes.get("/api/v1/recordings", summary="Search recordings (date, caller, disposition, case, kind)", roles=LISTENERS,
            errors=(400,))
async def search(request: web.Request) -> web.Response:
    """GET /api/v1/recordings?from=&to=&caller=&disposition=&case=&kind=&cursor=&limit="""
    ctx = _ctx(request)
    try:
        q, cursor, limit = _parse_query(request)
    except BadRequest as e:
        return _bad(e)
    tz = ctx.settings.calendar.tz

    def load() -> dict[str, Any]:
        with ctx.sessions() as s:
            hits, nxt = search_recordings(s, q, tz, before_id=cursor, limit=limit)
            return {"items": [_hit_dict(h, tz) for h in hits], "next_cursor": str(nxt) if nxt else None}

    return _json(await asyncio.to_thread(load))


def _load_one(ctx: Any, rec_id: int) -> RecordingHit | None:
    if rec_id > MAX_ID:
        return None
    with ctx.sessions() as s:
        hits, _ = search_recordings(s, RecordingQuery(recording_id=rec_id, include_deleted=True), ctx.settings.calendar.tz, limit=1)
    return hits[0] if hits else None


def _not_found(rec_id: int) -> web.Response:
    return error(404, "not_found", f"no recording {rec_id}", {"id": rec_id})


@routes.get("/api/v1/recordings/{id}", summary="One recording with its call and case", roles=LISTENERS, errors=(400, 404))
async def detail(request: web.Request) -> web.Response:
    """GET /api/v1/recordings/{id}"""
    ctx = _ctx(request)
    try:
        rec_id = _recording_id(request)
    except BadRequest as e:
        return _bad(e)

    def load() -> dict[str, Any] | None:
        hit = _load_one(ctx, rec_id)
        if hit is None:
            return None
        with ctx.sessions() as s:
            said = transcripts_of(s, [rec_id])[rec_id]
        channels = hit.recording.channels
        return _hit_dict(hit, ctx.settings.calendar.tz, full=True) | {"transcripts": [
            {"channel": t.channel, "speaker": speaker(channels, t.channel), "text": t.text,
             "confidence": t.confidence, "model": t.model, "words": list(t.words or [])} for t in said]}

    body = await asyncio.to_thread(load)
    return _not_found(rec_id) if body is None else _json(body)


@routes.get("/api/v1/recordings/{id}/access", summary="Who played or downloaded this recording (hash-chained log)",
            roles=("supervisor",), errors=(400, 404))
async def access_log(request: web.Request) -> web.Response:
    """GET /api/v1/recordings/{id}/access?cursor=&limit= : that recording's entries, newest first."""
    ctx = _ctx(request)
    try:
        rec_id = _recording_id(request)
        cursor = _positive("cursor", request.query.get("cursor"))
        limit = _positive("limit", request.query.get("limit"), default=50, maximum=MAX_LIMIT)
    except BadRequest as e:
        return _bad(e)
    assert limit is not None

    def load() -> dict[str, Any] | None:
        with ctx.sessions() as s:
            if rec_id > MAX_ID or s.get(Recording, rec_id) is None:
                return None
            entries = list_access(s, recording_id=rec_id, before_seq=cursor, limit=limit + 1)
        more = len(entries) > limit
        entries = entries[:limit]
        return {"items": [entry_dict(e) for e in entries], "next_cursor": str(entries[-1].seq) if more else None}

    body = await asyncio.to_thread(load)
    return _not_found(rec_id) if body is None else _json(body)


class AudioResponse(web.FileResponse):
    """A recording's file; :func:`audit_audio` logs it once aiohttp has decided the status."""

    def __init__(self, path: Path, *, recording_id: int, action: str, actor: str, headers: dict[str, str]) -> None:
        super().__init__(path, headers=headers)
        self.recording_id, self.action, self.actor = recording_id, action, actor

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        # The handler prepares (sends) it itself, to turn a failed audit into a JSON error;
        # FileResponse would otherwise send the file a second time when aiohttp finishes it.
        if self.prepared:
            return None
        return await super().prepare(request)


class AuditUnavailable(Exception):
    """The access entry could not be written, so the audio must not be sent."""


async def audit_audio(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: write the access entry for audio about to be sent (see module doc)."""
    if not isinstance(response, AudioResponse) or request.method != "GET" or response.status not in (200, 206):
        return
    ctx = _ctx(request)
    rng = request.headers.get("Range") if response.status == 206 else None

    def write() -> None:
        with transaction(ctx.sessions) as s:
            append_access(s, response.recording_id, response.actor, response.action,
                          client=request.remote, user_agent=request.headers.get("User-Agent"), range_=rng)  # fmt: skip

    try:
        await asyncio.to_thread(write)
    except Exception as e:  # noqa: BLE001 - any failure means: no audit, no audio
        log.error("access entry not written; audio refused", recording=response.recording_id, error=str(e))
        raise AuditUnavailable(str(e)) from e


@routes.get("/api/v1/recordings/{id}/audio", summary="The audio (WAV, HTTP Range); each response is logged",
            roles=LISTENERS, errors=(400, 404, 410, 416))
async def audio(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/recordings/{id}/audio[?download=1]"""
    ctx = _ctx(request)
    try:
        rec_id = _recording_id(request)
        flag = request.query.get("download", "0").lower()
        if flag not in _TRUE + _FALSE:
            raise BadRequest("download", "download must be 1 or 0", request.query["download"])
    except BadRequest as e:
        return _bad(e)
    hit = await asyncio.to_thread(_load_one, ctx, rec_id)
    if hit is None:
        return _not_found(rec_id)
    rec = hit.recording
    if rec.deleted_at is not None:
        return error(410, "recording_deleted", f"recording {rec_id} was deleted", {"deleted_at": rec.deleted_at.isoformat()})
    path = recording_path(ctx.settings.storage, rec)
    try:
        size = path.stat().st_size
    except OSError as e:
        log.error("recording file missing", recording=rec_id, path=str(path), error=e.strerror)
        return error(410, "recording_file_missing", f"the audio file of recording {rec_id} is missing from the store",
                      {"id": rec_id, "hint": "run `hotline recordings verify`"})  # fmt: skip
    if size != rec.bytes:
        log.error("recording file altered", recording=rec_id, path=str(path), bytes=size, expected=rec.bytes)
        return error(500, "recording_file_altered", f"the audio file of recording {rec_id} is not the one stored",
                      {"id": rec_id, "bytes": size, "expected_bytes": rec.bytes})  # fmt: skip
    download = flag in _TRUE
    headers = {"Content-Type": "audio/wav", "Cache-Control": "no-store"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="recording-{rec_id}.wav"'
    response = AudioResponse(path, recording_id=rec_id, action="download" if download else "play",
                             actor=_actor(request), headers=headers)  # fmt: skip
    try:
        await response.prepare(request)  # sends the file, after audit_audio wrote the entry
    except AuditUnavailable:
        return error(503, "audit_unavailable", "the access could not be logged, so the audio is not served")
    except DatabaseError as e:
        return error(503, "database_unavailable", str(e))
    return response


def setup(app: web.Application) -> None:
    """The audit hook: an access entry is written as the audio response's headers go out."""
    app.on_response_prepare.append(audit_audio)
