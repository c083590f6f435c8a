"""The return-visit survey over a scripted fake call (the real call comes with the dialer)."""

from __future__ import annotations

from campaigns.survey import MAX_TRIES, SurveyScript, run_survey
from campaigns.transfer import Handover, Transfer
from ivr.flows import CallPort, RecordOutcome
from test_flows import ScriptedCall


def script(open_: bool | None = None, comment: int = 30, transfer: Transfer | None = None) -> SurveyScript:
    async def operator_open() -> bool:
        return bool(open_)

    return SurveyScript("return_visit", "20261122-0007", opt_out_key="8", comment_seconds=comment,
                        operator_open=operator_open if open_ is not None else None, transfer=transfer)


def queue(handover: Handover, handed: list[CallPort]) -> Transfer:
    """A transfer that notes the call it was given and ends as ``handover`` says."""

    async def transfer(call: CallPort) -> Handover:
        handed.append(call)
        return handover

    return transfer


INTRO = ["return_visit_intro", "digit_2", "digit_0", "digit_2", "digit_6", "digit_1", "digit_1", "digit_2", "digit_2",
         "digit_0", "digit_0", "digit_0", "digit_7"]


async def test_rating_then_comment_then_thanks() -> None:
    call = ScriptedCall({"return_visit_question": "2"})
    result = await run_survey(call, script())
    assert result.rating == 2 and result.keys == "2" and not result.opted_out
    assert call.keys() == [*INTRO, "return_visit_question", "return_visit_comment", "return_visit_thanks"]
    assert call.events == ["tone", "record", "hangup"]
    assert result.comment is not None and result.comment.heard_speech


async def test_each_rating_key() -> None:
    for key, rating in (("1", 1), ("3", 3)):
        result = await run_survey(ScriptedCall({"return_visit_question": key}), script(comment=0))
        assert result.rating == rating and result.comment is None


async def test_repeat_key_replays_intro_with_the_number() -> None:
    call = ScriptedCall({"return_visit_question": "9"})
    # second question: the key arrives when it is played again
    call.keys_at["return_visit_intro"] = ""
    played_questions = 0
    orig = call.play

    async def play(keys, *, interrupt=False):  # type: ignore[no-untyped-def]
        nonlocal played_questions
        if keys == ["return_visit_question"]:
            played_questions += 1
            if played_questions == 2:
                call.keys_at["return_visit_question"] = "1"
        return await orig(keys, interrupt=interrupt)

    call.play = play  # type: ignore[method-assign]
    result = await run_survey(call, script(comment=0))
    assert result.keys == "91" and result.rating == 1
    assert call.keys().count("return_visit_intro") == 2 and call.keys().count("digit_7") == 2


async def test_opt_out_key() -> None:
    call = ScriptedCall({"return_visit_question": "8"})
    result = await run_survey(call, script())
    assert result.opted_out and result.rating is None
    assert call.keys()[-1] == "return_visit_opt_out" and call.events == ["hangup"]


async def test_key_0_without_operators_on_duty_says_so_and_asks_again() -> None:
    handed: list[CallPort] = []
    closed = ScriptedCall({"return_visit_question": "0"})
    result = await run_survey(closed, script(open_=False, comment=0, transfer=queue(Handover("operator"), handed)))
    assert handed == [] and result.choice is None and result.operator_requested  # asked, but none was offered
    assert "return_visit_operator_closed" in closed.keys() and "return_visit_transfer" not in closed.keys()
    assert closed.keys().count("return_visit_question") == MAX_TRIES  # asked again, then gave up


async def test_no_operator_queue_in_this_process_is_like_none_on_duty() -> None:
    for open_ in (None, True):  # no on-duty check, or on duty but nothing to transfer to
        call = ScriptedCall({"return_visit_question": "0"})
        result = await run_survey(call, script(open_=open_, comment=0))
        assert result.choice is None and "return_visit_operator_closed" in call.keys()


async def test_key_0_on_duty_hands_the_call_to_the_queue_and_the_survey_ends() -> None:
    handed: list[CallPort] = []
    call = ScriptedCall({"return_visit_question": "0"})
    result = await run_survey(call, script(open_=True, transfer=queue(Handover("operator"), handed)))
    assert handed == [call] and (result.choice, result.rating, result.keys) == ("operator", None, "0")
    assert call.keys()[-1] == "return_visit_transfer"
    assert call.events == [], "no comment, thanks or hang-up: the queue ends the call"


async def test_a_message_left_after_the_queue_is_the_result_comment() -> None:
    message = RecordOutcome("silence", 7.5, heard_speech=True)
    call = ScriptedCall({"return_visit_question": "0"})
    result = await run_survey(call, script(open_=True, transfer=queue(Handover("message", message), [])))
    assert (result.choice, result.comment, result.rating) == ("message", message, None)


async def test_no_input_and_invalid_keys_give_up_without_rating() -> None:
    call = ScriptedCall()
    result = await run_survey(call, script())
    assert result.rating is None and call.keys().count("no_input") == MAX_TRIES
    assert call.keys()[-1] == "goodbye" and "record" not in call.events
    bad = ScriptedCall({"return_visit_question": "*"})
    result = await run_survey(bad, script())
    assert result.rating is None and "invalid_input" in bad.keys() and result.keys == "*"


async def test_hangup_during_intro_keeps_nothing_and_does_not_play_on() -> None:
    call = ScriptedCall(hang_up_at="return_visit_intro")
    result = await run_survey(call, script())
    assert result.rating is None and call.keys() == ["return_visit_intro"]


async def test_hangup_after_rating_keeps_the_rating() -> None:
    call = ScriptedCall({"return_visit_question": "3"}, hang_up_at="return_visit_comment")
    result = await run_survey(call, script())
    assert result.rating == 3 and result.comment is None
