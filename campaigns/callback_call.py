"""The missed-call callback spoken to an answered callee, over the IVR's CallPort.

Dialogue (segments ``<script>_<part>``, script "callback", see ivr/prompts.py):

1. "this is the 12389 hotline returning your call";
2. one key: 1 talk to an operator now, 2 leave a message, 9 hear the intro again; anything
   else (or nothing) is asked again, up to MAX_TRIES;
3. key 1 is taken only while operators are on duty *and* this process can hand the call to
   one (``transfer``, campaigns/transfer.py): the call then waits in the operator queue and
   ends there (an operator, or what an inbound caller gets when the wait ends: a message, a
   booked callback). Otherwise the callee hears "no operator available" and goes straight on
   to the message, so the reason they called is never lost;
4. the message is recorded like an inbound voicemail (same guidance, tone and limits); the
   runner dials callback campaigns with record kind "voicemail", so the recording goes
   through transcription and becomes a draft case like any other message.

As with the survey, the flow decides nothing about the database: it fills a SurveyResult
(``comment`` holds the message, ``choice`` what the callee chose) and the runner writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from config.settings import VoicemailSettings
from ivr.flows import CallPort

from campaigns.survey import KEY_TIMEOUT, MAX_TRIES, REPEAT_KEY, SurveyResult
from campaigns.transfer import MESSAGE, OperatorOpen, Transfer, hand_over

OPERATOR_KEY = "1"
MESSAGE_KEY = "2"
SCRIPT = "callback"
"""The prompt script of a callback campaign (the return visit's is ``[campaigns] prompt_script``)."""

@dataclass(frozen=True)
class CallbackScript:
    prompt_script: str = SCRIPT
    limits: VoicemailSettings = field(default_factory=VoicemailSettings)
    """Message length and silence limits: the centre's voicemail ones."""
    operator_open: OperatorOpen | None = None
    """Are operators on duty right now? None: never."""
    transfer: Transfer | None = None
    """None when this process has no operator queue to hand the call to."""


async def run_callback_call(call: CallPort, script: CallbackScript, result: SurveyResult | None = None) -> SurveyResult:
    """Run the dialogue on an answered call; fills ``result`` as it goes (kept if cancelled)."""
    result = SurveyResult() if result is None else result
    seg = script.prompt_script
    await call.play([f"{seg}_intro"], interrupt=True)
    tries = 0
    wants_message = False
    while not call.ended and tries < MAX_TRIES:
        await call.play([f"{seg}_menu"], interrupt=True)
        key = await call.collect(max_digits=1, timeout=KEY_TIMEOUT, terminator=None)
        if call.ended and not key:
            return result
        result.keys += key
        if key == OPERATOR_KEY:
            if await hand_over(call, f"{seg}_transfer", script.operator_open, script.transfer, result):
                return result
            await call.play([f"{seg}_no_operator"])
            wants_message = True
            break
        if key == MESSAGE_KEY:
            wants_message = True
            break
        tries += 1
        if key == REPEAT_KEY:
            await call.play([f"{seg}_intro"], interrupt=True)
        else:
            await call.play(["invalid_input" if key else "no_input"])
    if call.ended:
        return result
    if wants_message:
        result.choice = MESSAGE
        await call.play(["voicemail"])
        if not call.ended:
            await call.tone()
            result.comment = await call.record(script.limits)
        if not call.ended:
            await call.play(["thank_you"])
    elif not call.ended:
        await call.play(["goodbye"])
    if not call.ended:
        await call.hangup()
    return result
