"""The inbound dialogue, driven by a scripted fake call (the real SIP call is tested with SIPp)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from config.overrides import Decision
from config.settings import VoicemailSettings
from ivr.flows import FlowDeps, RecordOutcome, inbound


class ScriptedCall:
    """Keys arrive at given prompts: {prompt_key: digits typed while it plays}."""

    def __init__(self, keys_at: dict[str, str] | None = None, hang_up_at: str | None = None,
                 record: RecordOutcome | None = None) -> None:
        self.language = "zh"
        self.keys_at = dict(keys_at or {})
        self.hang_up_at = hang_up_at
        self.queue = ""
        self.played: list[tuple[str, str]] = []
        self.events: list[str] = []
        self._ended = False
        self.record_outcome = record or RecordOutcome("digit", 12.0, True)

    @property
    def ended(self) -> bool:
        return self._ended

    async def play(self, keys: Sequence[str], *, interrupt: bool = False) -> str | None:
        for k in keys:
            if self._ended or (interrupt and self.queue):
                break
            self.played.append((self.language, k))
            if k == self.hang_up_at:
                self._ended = True
                break
            self.queue += self.keys_at.pop(k, "")
        return self.queue[:1] if interrupt and self.queue else None

    async def collect(self, *, max_digits: int, timeout: float, terminator: str | None = "#") -> str:
        out = ""
        while self.queue and len(out) < max_digits:
            c, self.queue = self.queue[0], self.queue[1:]
            if c == terminator:
                break
            out += c
        return out

    async def tone(self) -> None:
        self.events.append("tone")

    async def record(self, settings: VoicemailSettings) -> RecordOutcome:
        self.events.append("record")
        if self.record_outcome.reason == "hangup":
            self._ended = True
        return self.record_outcome

    async def hangup(self) -> None:
        self.events.append("hangup")
        self._ended = True

    def keys(self) -> list[str]:
        return [k for _, k in self.played]


def deps(open_: bool = False, why: str = "after_hours", cases: dict[str, str] | None = None) -> FlowDeps:
    async def decide(now: dt.datetime) -> Decision:
        return Decision(open_, why)

    async def status(number: str) -> str | None:
        return (cases or {}).get(number)

    return FlowDeps(decide=decide, case_status=status, voicemail=VoicemailSettings(), message_number="42")


async def test_closed_night_goes_to_voicemail_and_reads_the_number() -> None:
    call = ScriptedCall()
    result = await inbound(call, deps())
    assert result.disposition == "voicemail" and result.record and result.record.reason == "digit"
    keys = call.keys()
    assert keys[:3] == ["greeting", "menu", "menu_language"]
    assert keys[3:5] == ["closed", "voicemail"]
    assert call.events == ["tone", "record", "hangup"]
    assert keys[5:] == ["thank_you", "message_number", "digit_4", "digit_2", "repeat_number", "digit_4", "digit_2", "goodbye"]


async def test_holiday_and_manual_closure_have_their_own_notice() -> None:
    for why, notice in (("holiday", "holiday"), ("manual_closed", "closed_temporarily"), ("weekend", "closed")):
        call = ScriptedCall(keys_at={"greeting": "1"})
        await inbound(call, deps(why=why))
        assert call.keys()[call.keys().index("voicemail") - 1] == notice


async def test_open_without_operators_says_so_then_voicemail() -> None:
    call = ScriptedCall()
    result = await inbound(call, deps(open_=True, why="hours"))
    assert "no_operator" in call.keys() and result.disposition == "voicemail"
    assert result.decision == Decision(True, "hours")


async def test_key_9_switches_to_english() -> None:
    call = ScriptedCall(keys_at={"menu": "9"})
    await inbound(call, deps())
    assert call.played[0] == ("zh", "greeting")
    assert ("en", "voicemail") in call.played and ("zh", "voicemail") not in call.played


async def test_case_status_self_service() -> None:
    call = ScriptedCall(keys_at={"menu": "2", "enter_case_number": "202612060007#"})
    result = await inbound(call, deps(cases={"202612060007": "accepted"}))
    assert result.disposition == "self_service" and result.case_queries == ["202612060007"]
    assert call.keys()[-3:] == ["case_status", "status_accepted", "goodbye"]
    assert "record" not in call.events


async def test_unknown_case_gets_a_second_try() -> None:
    call = ScriptedCall(keys_at={"menu": "2", "enter_case_number": "999#"})
    call2_keys = {"case_not_found": "5#"}
    call.keys_at.update(call2_keys)
    result = await inbound(call, deps(cases={"5": "replied"}))
    assert result.case_queries == ["999", "5"]
    assert call.keys()[-3:] == ["case_status", "status_replied", "goodbye"]


async def test_invalid_keys_then_report_path() -> None:
    call = ScriptedCall(keys_at={"menu": "7"})
    await inbound(call, deps())
    assert "invalid_input" in call.keys() and "voicemail" in call.keys()


async def test_caller_hangs_up_during_message() -> None:
    call = ScriptedCall(record=RecordOutcome("hangup", 3.2, True))
    result = await inbound(call, deps())
    assert result.disposition == "voicemail" and result.record and result.record.reason == "hangup"
    assert "thank_you" not in call.keys() and "hangup" not in call.events


async def test_caller_hangs_up_during_greeting() -> None:
    call = ScriptedCall(hang_up_at="greeting")
    result = await inbound(call, deps())
    assert result.disposition == "abandoned" and result.record is None and call.events == []
