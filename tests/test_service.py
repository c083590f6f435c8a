"""The service process: schema check at start, health, the API's error shape, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from api_support import bearer_headers, make_user
from sqlalchemy import text

from api.app import create_app
from config.db import make_engine, upgrade


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_healthz_and_cases(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    r = await client.get("/healthz")
    assert r.status == 200
    body = await r.json()
    assert body["database"] == "ok" and body["schema_current"] is True
    r = await client.get("/api/v1/cases")
    assert r.status == 401, "the case list is for logged-in staff only"
    user, password = make_user(ctx.sessions, "operator")
    r = await client.get("/api/v1/cases", headers=await bearer_headers(client, user.username, password))
    assert r.status == 200 and (await r.json()) == {"items": [], "next_cursor": None}


async def test_api_errors_are_json(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    user, password = make_user(ctx.sessions, "operator")
    r = await client.get("/api/v1/cases?limit=abc", headers=await bearer_headers(client, user.username, password))
    assert r.status == 422
    body = await r.json()
    assert body["error"]["code"] == "validation_failed" and "limit" in body["error"]["message"]
    r = await client.get("/api/v1/nothing-here")
    assert r.status == 404
    assert (await r.json())["error"]["code"] == "not_found"


def test_refuses_old_schema(hotline, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/old.db"
    eng = make_engine(url)
    with eng.begin() as c:
        c.execute(text("CREATE TABLE unrelated (id INTEGER)"))
    eng.dispose()
    r = hotline("serve", extra_env={"HOTLINE_DATABASE__URL": url})
    assert r.returncode == 1
    assert "hotline db upgrade" in r.stderr and "no schema" in r.stderr


def test_unreachable_database(hotline) -> None:  # type: ignore[no-untyped-def]
    r = hotline("serve", extra_env={"HOTLINE_DATABASE__URL": "postgresql://postgres@127.0.0.1:1/none"})
    assert r.returncode == 1
    assert "cannot reach the database" in r.stderr and "Traceback" not in r.stderr


def test_serve_starts_answers_and_stops(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/serve.db"
    upgrade(url)
    port = free_port()
    e = {**os.environ, **env, "HOTLINE_DATABASE__URL": url, "HOTLINE_API__PORT": str(port)}
    bin_dir = Path(os.sys.executable).parent
    proc = subprocess.Popen([str(bin_dir / "hotline"), "serve", "--only", "api"], env=e, stderr=subprocess.PIPE, text=True)
    try:
        body = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = json.load(r)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"serve exited {proc.returncode}: {proc.communicate()[1]}")
                time.sleep(0.2)
        assert body and body["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "shutting down" in err
