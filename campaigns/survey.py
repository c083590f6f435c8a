"""The return-visit survey spoken to an answered callee, over the IVR's CallPort.

Dialogue (segments ``<script>_<part>``, see ivr/prompts.py):

1. intro with the case number read digit by digit, then the question;
2. one key: 1 satisfied, 2 basically satisfied, 3 not satisfied; 9 repeats intro and
   question; 0 asks for an operator: while operators are on duty the call goes to their queue
   and the survey ends there (campaigns/transfer.py: no rating, the result says what became
   of it), otherwise the callee hears that no operator is available and is asked again; the
   opt-out key puts the number on the do-not-call list; anything else (or nothing) is asked
   again, up to MAX_TRIES;
3. after a rating, an optional short spoken comment (ended by #, silence or the limit);
4. thanks and hang up.

The flow decides nothing about the database: it returns a :class:`SurveyResult` and the
runner writes it. A callee who hangs up mid-way keeps what they already pressed.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.settings import VoicemailSettings
from ivr.flows import CallPort, RecordOutcome

from campaigns.transfer import OperatorOpen, Transfer, hand_over

KEY_TIMEOUT = 8.0
"""Seconds to wait for the rating key after the question."""
MAX_TRIES = 3
"""Invalid or missing keys before the survey gives up (repeats with 9 count too, so it ends)."""
RATING_KEYS = {"1": 1, "2": 2, "3": 3}
REPEAT_KEY = "9"
OPERATOR_KEY = "0"


@dataclass
class SurveyResult:
    rating: int | None = None
    opted_out: bool = False
    operator_requested: bool = False
    """Pressed the operator key (return visit 0, callback 1), whether or not one could be offered."""
    comment: RecordOutcome | None = None
    """What the callee said: a comment after the rating, or a message (callback call, or after the queue)."""
    choice: str | None = None
    """What the call became instead of (or besides) a rating: campaigns.transfer.CHOICES ("operator": an
    operator talked with them; "message", "callback", "abandoned"); None when only the survey ran."""
    keys: str = ""
    """Every key pressed, in order (kept on the attempt for disputes)."""


@dataclass(frozen=True)
class SurveyScript:
    prompt_script: str
    case_number: str | None
    opt_out_key: str = "8"
    comment_seconds: int = 30
    operator_open: OperatorOpen | None = None
    """Are operators on duty right now? None: never."""
    transfer: Transfer | None = None
    """None when this process has no operator queue to hand the call to."""


def _digits(number: str | None) -> list[str]:
    return [f"digit_{c}" for c in (number or "") if c.isascii() and c.isdigit()]


async def run_survey(call: CallPort, script: SurveyScript, result: SurveyResult | None = None) -> SurveyResult:
    """Run the dialogue on an answered call; fills ``result`` as it goes (kept if cancelled)."""
    result = SurveyResult() if result is None else result
    seg = script.prompt_script
    intro = [f"{seg}_intro", *_digits(script.case_number)]
    await call.play(intro, interrupt=True)
    tries = 0
    while not call.ended and tries < MAX_TRIES:
        await call.play([f"{seg}_question"], interrupt=True)
        key = await call.collect(max_digits=1, timeout=KEY_TIMEOUT, terminator=None)
        if call.ended and not key:
            return result
        result.keys += key
        if key in RATING_KEYS:
            result.rating = RATING_KEYS[key]
            break
        if key == script.opt_out_key:
            result.opted_out = True
            await call.play([f"{seg}_opt_out"])
            await call.hangup()
            return result
        tries += 1
        if key == REPEAT_KEY:
            await call.play(intro, interrupt=True)
        elif key == OPERATOR_KEY:
            if await hand_over(call, f"{seg}_transfer", script.operator_open, script.transfer, result):
                return result
            await call.play([f"{seg}_operator_closed"])
        else:
            await call.play(["invalid_input" if key else "no_input"])
    if call.ended:
        return result
    if result.rating is not None and script.comment_seconds > 0:
        await call.play([f"{seg}_comment"])
        if not call.ended:
            await call.tone()
            limits = VoicemailSettings(max_seconds=max(5, script.comment_seconds), silence_seconds=4.0)
            result.comment = await call.record(limits)
    if not call.ended:
        await call.play([f"{seg}_thanks" if result.rating is not None else "goodbye"])
        await call.hangup()
    return result
