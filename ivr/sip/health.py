"""What `/healthz` says about the SIP side: mode, where it listens, and in register mode the registration.

Why a registration failure is only "degraded" after a while: one lost REGISTER or a registrar
restart is retried within seconds and the PBX keeps our older binding meanwhile, so paging
someone for it would be noise. Once attempts have kept failing for longer than the longest
retry interval (`RegisterTiming.retry_max`, 5 min by default), a whole retry cycle has failed
too: the PBX is likely routing the hotline nowhere, and monitoring must hear of it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ivr.sip.register import RegistrationStatus
from ivr.sip.ua import SipServer

__all__ = ["registration_healthy", "sip_health"]


def registration_healthy(status: RegistrationStatus, retry_window: float) -> bool:
    """False once the registration has been failing for longer than `retry_window` seconds."""
    return not (status.state == "failed" and status.failing_for is not None and status.failing_for > retry_window)


def sip_health(server: SipServer) -> tuple[bool, dict[str, Any]]:
    """(healthy, JSON-ready details) of a started SipServer, for `Context.health`."""
    settings = server.settings
    info: dict[str, Any] = {"mode": settings.mode, "host": settings.bind_host, "port": server.port,
                            "calls": len(server.calls)}
    registration = server.registration
    if registration is None:
        return True, info
    status = registration.status()
    expires_at = None
    if status.expires_in is not None and status.expires_in > 0:
        expires_at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=status.expires_in)).isoformat(timespec="seconds")
    healthy = registration_healthy(status, registration.timing.retry_max)
    info.update(
        registration=status.state,
        registrar=status.registrar,
        username=status.username,
        expires_at=expires_at,
        last_error=status.last_error,
        failures=status.failures,
        failing_seconds=None if status.failing_for is None else round(status.failing_for, 1),
        retry_window_seconds=registration.timing.retry_max,
    )
    return healthy, info
