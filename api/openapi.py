"""Route declarations: one place that says path, roles and schemas, for the router, the role
check and the OpenAPI 3.1 document at /api/v1/openapi.json alike.

A route module declares its routes on a `Routes` table and api/app.py installs it:

    routes = Routes("cases")

    class CaseList(ApiModel):            # api.validation.ApiModel: unknown fields refused
        items: list[CaseOut]

    @routes.get("/api/v1/cases", summary="List cases", roles=ANY_STAFF, query=CaseListQuery, response=CaseList)
    async def list_cases(request: web.Request) -> web.Response:
        q = parse_query(request, CaseListQuery)
        user = request[USER]
        ...

`roles` is required: a tuple of roles (api.auth.ANY_STAFF for every logged-in user), or
PUBLIC. install() wraps each handler in api.auth.require(*roles), so a route cannot forget
its check. Handlers still parse their own input with api.validation.parse_body/parse_query,
passing the model they declared. Pages (/login, /) are declared the same way with
`document=False`; only /api/ and /open311/ routes appear in the document.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.auth import ANY_STAFF, SESSION_COOKIE, Handler, require
from api.errors import JSON_PREFIXES, json_response
from cases.users import ROLES

PUBLIC: Literal["public"] = "public"
OPENAPI_PATH = "/api/v1/openapi.json"
REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    roles: tuple[str, ...] | Literal["public"]
    tag: str
    description: str = ""
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    """Statuses this route may answer besides the common ones (401/403/422/413 are added for you)."""
    document: bool = True
    if_match: bool = False
    """The route changes a versioned resource: If-Match (its ETag) is required, 428 without it."""
    produces: str | None = None
    """The media type of a successful answer that is not a JSON model (e.g. "text/csv")."""


@dataclass
class Routes:
    """A module's routes, declared with their roles and schemas (like aiohttp's RouteTableDef)."""

    tag: str
    endpoints: list[Endpoint] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        roles: Sequence[str] | Literal["public"],
        **more: Any,
    ) -> Callable[[Handler], Handler]:
        if roles != PUBLIC:
            roles = tuple(roles)
            if not roles or set(roles) - set(ROLES):
                raise ValueError(f"{method} {path}: roles must be PUBLIC or roles from {ROLES}, got {roles!r}")

        def add(handler: Handler) -> Handler:
            self.endpoints.append(Endpoint(method, path, handler, summary, roles, self.tag, **more))  # type: ignore[arg-type]
            return handler

        return add

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kw)


ENDPOINTS = web.AppKey("endpoints", list[Endpoint])


def install(app: web.Application, *tables: Routes) -> None:
    """Add the tables' routes to the app, each behind its role check."""
    endpoints = app.setdefault(ENDPOINTS, [])
    for table in tables:
        for e in table.endpoints:
            handler = e.handler if e.roles == PUBLIC else require(*e.roles)(e.handler)
            if e.method == "GET":
                app.router.add_get(e.path, handler)  # and HEAD, as HTTP expects of a GET resource
            else:
                app.router.add_route(e.method, e.path, handler)
            endpoints.append(e)


# --- the document ------------------------------------------------------------------------

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
        }
    },
}
STATUS_TEXT = {
    400: "Bad request or invalid JSON",
    401: "Not authenticated: log in or send a bearer token",
    403: "Authenticated, but the role may not do this (or the CSRF token is missing)",
    404: "Not found",
    409: "Conflict",
    413: "Body larger than [api] max_body_bytes",
    415: "Body is not application/json",
    422: "Validation failed: details.fields lists each field",
    428: "If-Match missing: send the ETag of the version you read",
    429: "Too many failed attempts: wait Retry-After seconds",
}
_PARAM = re.compile(r"\{(\w+)(?::([^{}]+))?\}")


def openapi_path(path: str) -> str:
    """aiohttp's /cases/{id:\\d+} is OpenAPI's /cases/{id}."""
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def documented(endpoints: Sequence[Endpoint]) -> list[Endpoint]:
    return [e for e in endpoints if e.document and e.path.startswith(JSON_PREFIXES)]


def build_document(endpoints: Sequence[Endpoint], *, title: str = "12389 hotline API", version: str = "1") -> dict[str, Any]:
    endpoints = documented(endpoints)
    models = {m for e in endpoints for m in (e.query, e.body, e.response) if m is not None}
    names: dict[str, type[BaseModel]] = {}
    for m in models:
        if names.setdefault(m.__name__, m) is not m:
            # Schemas are keyed by class name; two models with one name would silently swap.
            raise ValueError(f"two API models are named {m.__name__} ({m.__module__}, {names[m.__name__].__module__}): rename one")
    keyed = sorted(((m, "validation") for m in models), key=lambda x: x[0].__name__)
    refs, defs = models_json_schema(keyed, ref_template=REF) if keyed else ({}, {})
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA, **defs.get("$defs", {})}

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return refs[(model, "validation")]

    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        op: dict[str, Any] = {
            "operationId": e.handler.__name__,
            "summary": e.summary,
            "tags": [e.tag],
            "x-roles": [] if e.roles == PUBLIC else list(e.roles),
            "security": [] if e.roles == PUBLIC else [{"bearer": []}, {"cookie": []}],
        }
        if e.description:
            op["description"] = e.description
        params = [
            {"name": m.group(1), "in": "path", "required": True,
             "schema": {"type": "integer"} if m.group(2) == r"\d+" else {"type": "string"}}
            for m in _PARAM.finditer(e.path)
        ]
        if e.if_match:
            params.append({"name": "If-Match", "in": "header", "required": True, "schema": {"type": "string"},
                           "description": 'the ETag of the version you read, e.g. "3"'})
        if e.query is not None:
            props = schemas[e.query.__name__].get("properties", {})
            required = set(schemas[e.query.__name__].get("required", []))
            params += [{"name": n, "in": "query", "required": n in required, "schema": s} for n, s in props.items()]
        if params:
            op["parameters"] = params
        if e.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(e.body)}}}
        ok: dict[str, Any] = {"description": HTTPStatus(e.status).phrase}
        if e.response is not None:
            ok["content"] = {"application/json": {"schema": ref(e.response)}}
        elif e.produces is not None:
            ok["content"] = {e.produces: {"schema": {"type": "string"}}}
        responses: dict[str, Any] = {str(e.status): ok}
        statuses = set(e.errors)
        if e.roles != PUBLIC:
            statuses |= {401, 403}
        if e.query is not None or e.body is not None:
            statuses.add(422)
        if e.body is not None:
            statuses |= {400, 413, 415}
        if e.if_match:
            statuses |= {400, 409, 428}
        for s in sorted(statuses):
            responses[str(s)] = {
                "description": STATUS_TEXT.get(s, "Error"),
                "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
            }
        op["responses"] = responses
        paths.setdefault(openapi_path(e.path), {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Staff API of the 12389 hotline. Errors are {\"error\": {\"code\", \"message\", \"details\"}}. "
            "x-roles lists the roles allowed on each operation.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "POST /api/v1/auth/token or `hotline users token`"},
                "cookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE,
                    "description": "Web login (POST /login); changing requests also need the X-CSRF-Token header",
                },
            },
        },
    }


routes = Routes("meta")


@routes.get(OPENAPI_PATH, summary="This OpenAPI 3.1 document", roles=PUBLIC)
async def openapi_document(request: web.Request) -> web.Response:
    return json_response(build_document(request.app[ENDPOINTS]))


__all__ = ["ANY_STAFF", "PUBLIC", "Endpoint", "Routes", "build_document", "install", "routes"]
