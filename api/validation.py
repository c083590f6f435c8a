"""Reading request bodies and query strings into pydantic models, with one error vocabulary.

- body not JSON (or not UTF-8)              -> 400 invalid_json
- body sent as something other than JSON    -> 415 unsupported_media_type (this also keeps
  cross-site HTML forms, which cannot send application/json, away from the JSON API)
- body or query valid JSON but wrong        -> 422 validation_failed, details.fields lists
  (wrong type, missing, unknown field)          each field with a message; the offending
                                                input is never echoed back
- body over [api] max_body_bytes            -> 413 body_too_large (aiohttp's limit)

JSON bodies are validated in pydantic's strict mode: "5" is not an integer and 1 is not a
string, as a client would expect from a JSON API. Query strings are text by nature, so
they are validated in lax mode ("50" is the integer 50).
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from api.errors import ApiError

M = TypeVar("M", bound=BaseModel)


class ApiModel(BaseModel):
    """Base of request and response schemas: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


def _fields(e: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"], "type": err["type"]}
        for err in e.errors(include_url=False, include_input=False, include_context=False)
    ]


def validation_failed(what: str, e: ValidationError) -> ApiError:
    fields = _fields(e)
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return ApiError(422, "validation_failed", f"invalid {what}: {summary}", {"fields": fields})


async def parse_body(request: web.Request, model: type[M]) -> M:
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = await request.read()  # over client_max_size: aiohttp raises 413, rendered by the middleware
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as e:
        if any(err["type"] in ("json_invalid", "json_type") for err in e.errors()):
            raise ApiError(400, "invalid_json", "the body is not valid JSON (UTF-8)") from None
        raise validation_failed("body", e) from None


def parse_query(request: web.Request, model: type[M]) -> M:
    data: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        if len(values) > 1:
            raise ApiError(
                422,
                "validation_failed",
                f"invalid query: {key}: given more than once",
                {"fields": [{"field": key, "message": "given more than once", "type": "duplicate"}]},
            )
        data[key] = values[0]
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_failed("query", e) from None
