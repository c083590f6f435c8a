"""Shared helpers for the campaign tests: cases with a reply event, a fake dialer, a settable clock."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from campaigns.lifecycle import create_campaign
from campaigns.models import Campaign
from cases.models import Case, CaseEvent
from config.settings import CampaignSettings
from test_flows import ScriptedCall

SH = ZoneInfo("Asia/Shanghai")


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=SH)


def make_case(s: Session, number: str, phone: str | None, *, status: str = "replied", reached: dt.datetime | None = None,
              category: str | None = None) -> Case:
    case = Case(number=number, channel="phone", status=status, complainant_phone=phone, category=category,
                content="test", received_at=at("2026-09-01 10:00"))
    s.add(case)
    s.flush()
    s.add(CaseEvent(case_id=case.id, actor="handler", action="reply", from_status="in_progress", to_status=status,
                    at=reached or at("2026-09-10 10:00")))
    s.flush()
    return case


def new_campaign(s: Session, name: str = "September", **kw) -> Campaign:  # type: ignore[no-untyped-def]
    return create_campaign(s, CampaignSettings(), name=name, created_by="staff", calendar_timezone="Asia/Shanghai", **kw)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class FakeResult:
    outcome: str
    sip_status: int | None
    call: ScriptedCall | None


class FakeDialer:
    """Outcomes scripted per number (default answered); answered calls press ``keys[number]`` at ``prompt``."""

    def __init__(self, outcomes: dict[str, list[str]] | None = None, keys: dict[str, str] | None = None,
                 gate: asyncio.Event | None = None, prompt: str = "return_visit_question") -> None:
        self.outcomes = {k: list(v) for k, v in (outcomes or {}).items()}
        self.keys = keys or {}
        self.gate = gate
        self.prompt = prompt
        self.purposes: list[str] = []
        self.answered: list[ScriptedCall] = []
        self.calls: list[str] = []
        self.active = 0
        self.max_active = 0

    async def dial(self, number: str, *, ring_timeout: float, caller_id: str, purpose: str = "return_visit") -> FakeResult:
        self.calls.append(number)
        self.purposes.append(purpose)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            queue = self.outcomes.get(number)
            outcome = queue.pop(0) if queue else "answered"
            if outcome == "answered":
                call = ScriptedCall({self.prompt: self.keys.get(number, "1")})
                self.answered.append(call)
                return FakeResult(outcome, 200, call)
            return FakeResult(outcome, {"busy": 486, "no_answer": 408, "rejected": 603, "invalid_number": 404}.get(outcome), None)
        finally:
            self.active -= 1
