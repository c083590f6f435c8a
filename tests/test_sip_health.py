"""/healthz shows the SIP side of the IVR running in the same process (ctx.health, ivr/sip/health.py).

Trunk mode runs the real Ivr (prompts built once per session by ivr_harness); register mode
runs the SipServer against SIPp as the registrar (tests/sipp/reg_auth*.xml) with short retry
intervals injected, and publishes it the way Ivr.start does. Nothing asserts on how long
anything took: the degraded answer is awaited, not timed.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from config.context import Context
from ivr.service import Ivr
from ivr.sip.health import registration_healthy, sip_health
from ivr.sip.register import RegisterTiming, RegistrationStatus
from ivr.sip.transactions import Timers
from ivr.sip.ua import IncomingCall, SipServer
from ivr_harness import ivr_prompts  # noqa: F401 (fixture)
from tests.sip_peer import SAFETY
from tests.sipp_support import free_udp_port, sipp_skip_reason, start_sipp

TIMING = RegisterTiming(retry_min=0.05, retry_max=0.5, deregister_timeout=1.0)
USER, PASSWORD = "1001", "secret"
needs_sipp = pytest.mark.skipif(sipp_skip_reason() is not None, reason=str(sipp_skip_reason()))


def status(state: str, failing_for: float | None) -> RegistrationStatus:
    return RegistrationStatus(state, "pbx:5060", USER, None, "503 Service Unavailable" if failing_for else None,  # type: ignore[arg-type]
                              failing_for=failing_for)


@pytest.mark.parametrize(("state", "failing_for", "healthy"), [
    ("registered", None, True),
    ("registering", None, True),
    ("failed", 1.0, True),  # a retry or two inside the window: not worth paging anyone
    ("failed", 300.0, True),
    ("failed", 300.1, False),  # failing longer than the longest retry interval
    ("unregistered", None, True),
])
def test_registration_is_unhealthy_only_after_its_retry_window(state: str, failing_for: float | None,
                                                               healthy: bool) -> None:
    assert registration_healthy(status(state, failing_for), retry_window=300.0) is healthy


async def _healthz(aiohttp_client: Any, ctx: Context) -> tuple[int, dict[str, Any]]:
    client = await aiohttp_client(create_app(ctx))
    r = await client.get("/healthz")
    return r.status, await r.json()


async def test_healthz_without_ivr_has_no_sip_object(aiohttp_client: Any, ctx: Context) -> None:
    code, body = await _healthz(aiohttp_client, ctx)
    assert code == 200 and "sip" not in body


async def test_trunk_mode_shows_mode_and_port_while_the_ivr_runs(aiohttp_client: Any, ctx: Context,
                                                                  ivr_prompts: Path) -> None:
    s = ctx.settings
    ctx.settings = s.model_copy(update={
        "sip": s.sip.model_copy(update={"bind_port": 0, "rtp_port_min": 33000, "rtp_port_max": 33999}),
        "prompts": s.prompts.model_copy(update={"dir": ivr_prompts}),
    })  # fmt: skip
    ivr = Ivr(ctx)
    await ivr.start()
    try:
        code, body = await _healthz(aiohttp_client, ctx)
        assert code == 200 and body["status"] == "ok", body
        assert body["sip"] == {"mode": "trunk", "host": "127.0.0.1", "port": ivr.server.port, "calls": 0}
    finally:
        await ivr.stop()
    code, body = await _healthz(aiohttp_client, ctx)
    assert code == 200 and "sip" not in body  # a stopped IVR reports nothing


async def _no_calls(call: IncomingCall) -> None:
    await call.reject(480)


def _register_server(ctx: Context, registrar: str, password: str) -> SipServer:
    settings = ctx.settings.sip.model_copy(update={
        "mode": "register", "bind_port": 0, "registrar": registrar, "username": USER, "password": password,
    })  # fmt: skip
    server = SipServer(settings, _no_calls, timers=Timers(t1=0.1), shutdown_grace=0.2, register_timing=TIMING)
    ctx.health["sip"] = partial(sip_health, server)  # as Ivr.start publishes it
    return server


@needs_sipp
async def test_register_mode_registered_shows_registrar_and_expiry(aiohttp_client: Any, ctx: Context) -> None:
    host = "127.0.0.4"
    port = free_udp_port(host)
    registrar = await asyncio.to_thread(start_sipp, "reg_auth.xml", local_ip=host, local_port=port, timeout=30)
    with registrar:
        server = _register_server(ctx, f"{host}:{port}", PASSWORD)
        await server.start()
        try:
            assert server.registration is not None
            await asyncio.wait_for(server.registration.wait_for(lambda r: r.state != "registering"), SAFETY * 3)
            code, body = await _healthz(aiohttp_client, ctx)
        finally:
            await asyncio.wait_for(server.stop(), SAFETY)
    assert code == 200 and body["status"] == "ok", body
    sip = body["sip"]
    assert (sip["mode"], sip["registration"], sip["registrar"], sip["username"]) == (
        "register", "registered", f"{host}:{port}", USER)
    assert sip["last_error"] is None and sip["failures"] == 0 and sip["failing_seconds"] is None
    assert sip["expires_at"] is not None and sip["expires_at"].endswith("+00:00")  # granted 120 s by reg_auth.xml


@needs_sipp
async def test_register_mode_wrong_password_becomes_degraded_with_the_error(aiohttp_client: Any,
                                                                           ctx: Context) -> None:
    host = "127.0.0.4"
    port = free_udp_port(host)
    registrar = await asyncio.to_thread(start_sipp, "reg_auth_qop.xml", local_ip=host, local_port=port, timeout=30)
    with registrar:
        server = _register_server(ctx, f"{host}:{port}", "not-the-password")
        await server.start()
        try:
            reg = server.registration
            assert reg is not None
            await asyncio.wait_for(reg.wait_for(lambda r: r.state == "failed"), SAFETY * 3)

            async def past_window() -> None:
                while (reg.status().failing_for or 0) <= TIMING.retry_max:
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(past_window(), SAFETY)
            code, body = await _healthz(aiohttp_client, ctx)
        finally:
            await asyncio.wait_for(server.stop(), SAFETY)
    assert code == 503 and body["status"] == "degraded", body
    assert body["database"] == "ok"  # the database is fine: only the SIP part degrades the answer
    sip = body["sip"]
    assert sip["registration"] == "failed" and sip["expires_at"] is None
    assert sip["last_error"].startswith("403 Forbidden from 127.0.0.4"), sip
    assert sip["failing_seconds"] >= sip["retry_window_seconds"] == TIMING.retry_max  # (rounded to 0.1 s)
