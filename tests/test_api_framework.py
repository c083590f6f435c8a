"""The API framework: the error shape for every failure, body and query validation, the OpenAPI
document kept in step with the router, and the session cookie key."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from aiohttp import web
from api_support import bearer_headers, make_user
from jsonschema import Draft202012Validator

from api.app import create_app
from api.auth import session_key
from api.errors import json_response
from api.openapi import ENDPOINTS, PUBLIC, Routes, build_document, documented, install, openapi_path
from config.settings import ApiSettings, ConfigError


def assert_error(body: dict, code: str) -> None:  # type: ignore[type-arg]
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body


async def test_router_errors_are_json(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    for path in ("/api/v1/nothing-here", "/open311/v2/nothing.json", "/api/v1/cases/%3Cscript%3E"):
        r = await client.get(path)
        assert r.status == 404 and r.content_type == "application/json", path
        assert_error(await r.json(), "not_found")
    r = await client.put("/api/v1/cases")
    assert r.status == 405 and "GET" in r.headers["Allow"]
    assert_error(await r.json(), "method_not_allowed")
    r = await client.get("/no-such-page")
    assert r.status == 404 and r.content_type != "application/json", "pages keep HTML/text errors"
    assert r.headers["X-Request-ID"]


async def test_bad_bodies(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    url = "/api/v1/auth/token"
    json_ct = {"Content-Type": "application/json"}
    cases = [
        (b"{not json", json_ct, 400, "invalid_json"),
        (b"\xff\xfe{}", json_ct, 400, "invalid_json"),
        (b"", json_ct, 400, "invalid_json"),
        (b'{"username": "a", "password": "b"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b'{"username": "a", "password": "b"}', {"Content-Type": "application/x-www-form-urlencoded"}, 415,
         "unsupported_media_type"),
        (b"[1, 2]", json_ct, 422, "validation_failed"),
        (b'"just a string"', json_ct, 422, "validation_failed"),
        (b"[" * 100000 + b"]" * 100000, json_ct, 400, "invalid_json"),
    ]
    for data, headers, status, code in cases:
        r = await client.post(url, data=data, headers=headers)
        assert r.status == status, (data[:30], await r.text())
        assert_error(await r.json(), code)


async def test_validation_details(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    r = await client.post("/api/v1/auth/token", json={"username": 5, "password": ["x"], "days": "7", "admin": True})
    assert r.status == 422
    body = await r.json()
    assert_error(body, "validation_failed")
    fields = {f["field"]: f["type"] for f in body["error"]["details"]["fields"]}
    assert fields == {"username": "string_type", "password": "string_type", "days": "int_type", "admin": "extra_forbidden"}
    r = await client.post("/api/v1/auth/token", json={"username": "a"})
    assert {f["field"] for f in (await r.json())["error"]["details"]["fields"]} == {"password"}
    secret = "s3cret-<script>"
    r = await client.post("/api/v1/auth/token", json={"username": "a", "password": secret, "x": secret})
    assert r.status == 422 and secret not in await r.text(), "inputs (passwords!) are never echoed back"


async def test_query_validation(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, "supervisor")
    headers = await bearer_headers(client, user.username, password)
    for query, field in [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=1&limit=2", "limit"),
        ("bogus=1", "bogus"),
        ("status=" + "x" * 201, "status"),
        ("status=%27%3BDROP%20TABLE%20x%3B--", "status"),
    ]:
        r = await client.get(f"/api/v1/cases?{query}", headers=headers)
        assert r.status == 422, query
        body = await r.json()
        assert_error(body, "validation_failed")
        assert [f["field"] for f in body["error"]["details"]["fields"]] == [field]
    r = await client.get("/api/v1/cases?limit=5&q=%27%3BDROP%20TABLE%20x%3B--", headers=headers)
    assert r.status == 200 and (await r.json()) == {"items": [], "next_cursor": None}


async def test_oversized_bodies(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    ctx.settings.api.max_body_bytes = 4096
    client = await aiohttp_client(create_app(ctx))
    big = b'{"username": "' + b"a" * 8192 + b'", "password": "x"}'
    r = await client.post("/api/v1/auth/token", data=big, headers={"Content-Type": "application/json"})
    assert r.status == 413
    assert_error(await r.json(), "body_too_large")

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(8):
            yield b"a" * 1024

    # no Content-Length (chunked): caught while reading
    r = await client.post("/api/v1/auth/token", data=chunks(), headers={"Content-Type": "application/json"})
    assert r.status == 413
    assert_error(await r.json(), "body_too_large")
    # also on a route that never reads its body
    r = await client.get("/api/v1/cases", data=io.BytesIO(b"x" * 8192))
    assert r.status == 413
    r = await client.post("/api/v1/auth/token", data=big[:4000], headers={"Content-Type": "application/json"})
    assert r.status == 400, "under the limit it is read (and is not JSON)"


async def test_unexpected_exception_is_a_500_with_request_id(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    routes = Routes("test")

    @routes.get("/api/v1/test/boom", summary="fails", roles=PUBLIC)
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("internal detail /etc/passwd")

    @routes.get("/test/boom-page", summary="fails", roles=PUBLIC, document=False)
    async def boom_page(request: web.Request) -> web.Response:
        raise KeyError("internal detail")

    app = create_app(ctx)
    install(app, routes)
    client = await aiohttp_client(app)
    r = await client.get("/api/v1/test/boom")
    assert r.status == 500
    body = await r.json()
    assert_error(body, "internal_error")
    assert body["error"]["details"]["request_id"] == r.headers["X-Request-ID"]
    text = await r.text()
    assert "internal detail" not in text and "Traceback" not in text
    r = await client.get("/test/boom-page")
    assert r.status == 500 and "internal detail" not in await r.text() and r.headers["X-Request-ID"] in await r.text()


async def test_openapi_matches_the_router(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    app = create_app(ctx)
    client = await aiohttp_client(app)
    r = await client.get("/api/v1/openapi.json")
    assert r.status == 200
    doc = await r.json()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "cookie"}
    served = {
        (route.method, openapi_path(route.resource.canonical))
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
        and route.resource.canonical.startswith(("/api/v1/", "/open311/"))
    }
    in_doc = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert served == in_doc, f"served but undocumented: {served - in_doc}; documented but absent: {in_doc - served}"
    assert ("GET", "/api/v1/cases") in in_doc and ("POST", "/api/v1/auth/token") in in_doc
    # every route goes through a declaration, so none skips its role check
    declared = {(e.method, openapi_path(e.path)) for e in app[ENDPOINTS]}
    for route in app.router.routes():
        if route.method != "HEAD" and route.resource is not None and route.resource.canonical != "/healthz":
            assert (route.method, openapi_path(route.resource.canonical)) in declared, route
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and op["responses"], (method, path)
            if op["security"]:
                assert op["x-roles"] and {"401", "403"} <= set(op["responses"]), (method, path)
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
    cases = doc["paths"]["/api/v1/cases"]["get"]
    assert {"status", "limit", "cursor", "sort", "q"} <= {p["name"] for p in cases["parameters"]}
    export = doc["paths"]["/api/v1/cases/export.csv"]["get"]
    assert list(export["responses"]["200"]["content"]) == ["text/csv"] and export["x-roles"] == ["supervisor", "admin"]
    names = {p["name"] for p in export["parameters"]}
    assert {"status", "sort", "q", "overdue"} <= names and not {"cursor", "limit"} & names, "the list's filters, no pages"


def test_document_covers_path_parameters() -> None:
    routes = Routes("x")

    @routes.get(r"/api/v1/things/{id:\d+}/parts/{name}", summary="a part", roles=("admin",))
    async def part(request: web.Request) -> web.Response:
        return json_response({})

    doc = build_document(routes.endpoints)
    op = doc["paths"]["/api/v1/things/{id}/parts/{name}"]["get"]
    assert [(p["name"], p["schema"]["type"]) for p in op["parameters"]] == [("id", "integer"), ("name", "string")]
    assert documented(routes.endpoints) == routes.endpoints


def test_declarations_refuse_unknown_roles() -> None:
    routes = Routes("x")
    for bad in ((), ("root",), ("admin", "superuser")):
        with pytest.raises(ValueError, match="roles"):
            routes.get("/api/v1/x", summary="x", roles=bad)


def test_session_key_generated_once_and_kept(tmp_path: Path) -> None:
    first = session_key(ApiSettings(), tmp_path / "store")
    path = tmp_path / "store" / "session.key"
    assert len(first) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert session_key(ApiSettings(), tmp_path / "store") == first, "a restart keeps the key (and the sessions)"


def test_session_key_from_config(tmp_path: Path) -> None:
    import base64

    raw = os.urandom(32)
    text = base64.urlsafe_b64encode(raw).decode()
    assert session_key(ApiSettings(session_secret=text), tmp_path) == raw
    f = tmp_path / "k"
    f.write_text(text + "\n")
    assert session_key(ApiSettings(session_secret=str(f)), tmp_path) == raw
    assert not (tmp_path / "session.key").exists()
    for bad in ("too-short", str(tmp_path / "missing"), base64.urlsafe_b64encode(os.urandom(16)).decode()):
        with pytest.raises(ConfigError, match="session_secret"):
            session_key(ApiSettings(session_secret=bad), tmp_path)
    f.write_text("not a key")
    with pytest.raises(ConfigError, match="32 bytes"):
        session_key(ApiSettings(session_secret=str(f)), tmp_path)


def test_two_models_with_one_name_are_refused() -> None:
    from pydantic import BaseModel

    from api.openapi import build_document

    def model() -> type[BaseModel]:
        class Query(BaseModel):
            x: int = 0

        return Query

    routes = Routes("x")

    @routes.get("/api/v1/a", summary="a", roles=("admin",), query=model())
    async def a(request: web.Request) -> web.Response:
        return json_response({})

    @routes.get("/api/v1/b", summary="b", roles=("admin",), query=model())
    async def b(request: web.Request) -> web.Response:
        return json_response({})

    with pytest.raises(ValueError, match="two API models are named Query"):
        build_document(routes.endpoints)
