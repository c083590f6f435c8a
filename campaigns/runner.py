"""The campaign engine: each tick dials the due targets of running campaigns.

One attempt, crash-safe:

1. **claim** (one transaction, committed before any dial): the target goes ``pending`` →
   ``dialing`` through a guarded UPDATE, ``attempts`` grows by one and a CampaignAttempt row
   ``(target, number)`` is inserted with ``started_at`` and no end;
2. **dial** through the :class:`Dialer` and, when answered, run the survey;
3. **finish** (one transaction): the attempt gets its end and outcome, the target its new
   state, and final results go to the case (:func:`apply_result`).

If the process dies between 1 and 3, the attempt row has no end. :meth:`Runner.recover`
(run once at start, before the first tick) marks such attempts ``interrupted``: the number
*may* have rung, so that attempt is never placed again (the unique (target, number) pair
forbids it anyway), and the target goes back to ``pending`` for its next attempt after the
retry interval, so it is not skipped either. An interrupted attempt does not count towards
``max_attempts`` (the person never got a full chance), but a target interrupted
``max_attempts`` times is failed, so a number that crashes the dialer cannot loop.

Due, window and cap: a target is due when ``pending`` and ``next_attempt_at`` is unset or
past; it is dialled only while the campaign's calling window is open, and never while
``concurrency`` of its targets are ``dialing`` (counted in the database, so the cap holds
across ticks and restarts). On PostgreSQL the campaign row is locked (FOR UPDATE) while its
targets are claimed, so two scheduler processes cannot together exceed the cap; on SQLite
one scheduler per database is assumed (the embedded, one-machine setup). Above the campaigns'
own caps, ``[campaigns] max_lines`` bounds the targets ``dialing`` in all campaigns together
(the trunk's share for outbound calls); it is counted the same way, and holds across the
campaigns of one scheduler because claims are serialised in this process (see Refill). Lines
go to campaigns in id order at a tick, and a freed line first to the campaign that freed it.

Refill: a line freed by an ended attempt is refilled at once, not at the next tick (with a
1 s tick the engine averaged 79 % of the cap). The ended attempt asks for a tick limited
to its campaign, so the due, window and cap rules above are the only ones; claims in one
process are serialised by a lock, so a refill and a periodic tick never both see the same
free line.

Retry rule: after busy, no answer, rejected or a failed dial, the next attempt is due
``retry_minutes`` after the attempt ended (inside the window: if that is outside it, the
first tick in the next window takes it). After the last attempt the target is ``failed``
as unreachable and a FollowUp task (SMS or letter) is written. An invalid number fails at
once, with a follow-up by letter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from cases.actions import HasRules, record_return_visit
from cases.lifecycle import IllegalTransition
from config.context import Context

from campaigns.lifecycle import count_targets, transition
from campaigns.models import (
    DIALING,
    DONE,
    DROPPED,
    FAILED,
    PENDING,
    RATINGS,
    RUNNING,
    SCHEDULED,
    Campaign,
    CampaignAttempt,
    CampaignTarget,
    FollowUp,
)
from campaigns.callback_call import CallbackScript, run_callback_call
from campaigns.callback_targets import callback_answered, callback_unreachable, choice_note, still_callable
from campaigns.survey import SurveyResult, SurveyScript, run_survey
from campaigns.transfer import OperatorOpen, Transfer
from campaigns.targets import GONE_STATUSES, add_do_not_call, do_not_call_set
from campaigns.windows import CallingWindow
from cases.models import Case
from config.db import transaction, utcnow
from config.logs import get_logger
from ivr.flows import CallPort

log = get_logger("campaigns.runner")

RETRYABLE = frozenset({"busy", "no_answer", "rejected", "failed", "interrupted"})
FINAL_FAILURE = frozenset({"invalid_number"})
ACTOR = "campaign"


class DialResult(Protocol):
    """What ivr/dialer.py's ``dial`` returns (structural: any object with these attributes)."""

    outcome: str
    """answered, busy, no_answer, rejected, invalid_number, failed."""
    sip_status: int | None
    call: CallPort | None
    """The answered call (None otherwise)."""
    # ivr/dialer.py's result also carries ``call_id`` (the Call row); read with getattr, as test
    # dialers need not have one.


class Dialer(Protocol):
    async def dial(self, number: str, *, ring_timeout: float, caller_id: str, purpose: str) -> DialResult: ...
    """``purpose`` is the campaign's: a callback call's message is recorded as a voicemail (campaigns/service.py)."""


RecordVisit = Callable[..., Any]
"""``record_return_visit(session, case, *, actor, outcome, rating=None, note=None, data=None)``."""


@dataclass(frozen=True)
class Claim:
    """One attempt this process holds: written and committed before the dial."""

    campaign_id: int
    campaign_name: str
    target_id: int
    attempt_id: int
    attempt: int
    phone: str
    case_number: str | None
    caller_id: str
    prompt_script: str
    purpose: str = "return_visit"


def node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:120]


# -- results on the case ---------------------------------------------------------------------


def case_record_visit(rules: HasRules) -> RecordVisit:
    """The case lifecycle's return-visit rule (cases.actions.record_return_visit) for this centre.

    The campaign keeps keypad ratings as 1/2/3 (what the callee pressed); the case stores
    the lifecycle's rating words. Only "answered" and "unreachable" (given up after the last
    attempt) reach a case: a busy line that will be retried is not a result yet.
    """

    def record(session: Session, case: Case, *, actor: str, outcome: str, rating: int | None = None,
               note: str | None = None, data: dict[str, Any] | None = None) -> Any:
        word = RATINGS[rating] if rating else None
        try:
            events = record_return_visit(session, case, ctx=rules, actor=actor, outcome=outcome, rating=word, note=note)
            for ev in events if data else ():
                # Which campaign, attempt and Call: the way from the case to the call and its recording.
                ev.data = {**(ev.data or {}), **data}
            return events
        except IllegalTransition as e:
            # The case moved on meanwhile (reopened, merged): the answer stays on the target.
            log.warning("return-visit result not put on the case", case=case.number, status=case.status, error=str(e))
            return None

    return record


def apply_result(
    session: Session,
    target: CampaignTarget,
    *,
    outcome: str,
    rating: int | None = None,
    note: str | None = None,
    record_visit: RecordVisit,
    data: dict[str, Any] | None = None,
) -> bool:
    """Put a target's final result on its case; False when the case is gone (deleted meanwhile)."""
    case = session.get(Case, target.case_id) if target.case_id is not None else None
    if case is None:
        return False
    record_visit(session, case, actor=ACTOR, outcome=outcome, rating=rating, note=note, data=data)
    return True


# -- the engine ------------------------------------------------------------------------------


class Runner:
    """Dials due targets; one per process (see the module docstring for the rules)."""

    def __init__(
        self,
        ctx: Context,
        dialer: Dialer,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        record_visit: RecordVisit | None = None,
        operator_open: OperatorOpen | None = None,
        transfer: Transfer | None = None,
        refill: bool = True,
    ) -> None:
        self.sessions = ctx.sessions
        self.calendar = ctx.calendar
        self.settings = ctx.settings.campaigns
        self.dialer = dialer
        self.clock = clock
        self.record_visit = record_visit or case_record_visit(ctx)
        self.operator_open = operator_open
        self.transfer = transfer
        self.voicemail = ctx.settings.voicemail
        self.refill = refill
        self.node = node_id()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._claiming = asyncio.Lock()
        """One claim at a time in this process: the free-line count read by one must include the other's claims."""
        self._refill_wanted: set[int] = set()
        self._refill_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def window(self, campaign: Campaign) -> CallingWindow:
        return CallingWindow.build(campaign.windows, campaign.days, campaign.timezone, self.calendar)

    async def tick(self, now: dt.datetime | None = None, *, campaign_ids: Sequence[int] | None = None) -> list[Claim]:
        """Claim and start every attempt due at ``now``; returns the claims (dials run as tasks).

        ``campaign_ids``: only these campaigns (a refill after an attempt ended, see :meth:`_attempt_ended`).
        """
        if self._stopping:
            return []
        async with self._claiming:
            now = now or self.clock()
            claims = await asyncio.to_thread(self.claim_due, now, campaign_ids)
            for claim in claims:
                self._start(claim)
        return claims

    def _start(self, claim: Claim) -> None:
        task = asyncio.create_task(self._attempt(claim), name=f"campaign-attempt-{claim.attempt_id}")
        self._tasks[claim.target_id] = task
        task.add_done_callback(lambda t, tid=claim.target_id: self._tasks.pop(tid) if self._tasks.get(tid) is t else None)

    def _attempt_ended(self, campaign_id: int) -> None:
        """A line is free: claim for its campaign now rather than at the next tick.

        The refill is an ordinary (campaign-only) tick, so the cap, the window and the due
        rules stay in :meth:`claim_due` alone. Attempts ending together share one refill task
        (their campaigns are collected while it runs); the periodic tick remains the backstop
        if a refill fails.
        """
        if not self.refill or self._stopping:
            return
        self._refill_wanted.add(campaign_id)
        if self._refill_task is None or self._refill_task.done():
            self._refill_task = asyncio.create_task(self._refill(), name="campaign-refill")

    async def _refill(self) -> None:
        while self._refill_wanted and not self._stopping:
            ids = sorted(self._refill_wanted)
            self._refill_wanted.clear()
            try:
                await self.tick(campaign_ids=ids)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next periodic tick claims instead
                log.exception("refill after an attempt failed", campaigns=ids)

    async def drain(self) -> None:
        """Wait for every attempt in flight and the refills they start (tests, graceful shutdown)."""
        while self._tasks or (self._refill_task is not None and not self._refill_task.done()):
            pending: list[asyncio.Task[None]] = list(self._tasks.values())
            if self._refill_task is not None and not self._refill_task.done():
                pending.append(self._refill_task)
            await asyncio.gather(*pending, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel attempts in flight; each records itself as interrupted before it ends."""
        self._stopping = True
        if self._refill_task is not None:
            self._refill_task.cancel()
        for task in list(self._tasks.values()):
            task.cancel()
        await self.drain()

    # -- claiming ------------------------------------------------------------------------

    def claim_due(self, now: dt.datetime, campaign_ids: Sequence[int] | None = None) -> list[Claim]:
        claims: list[Claim] = []
        with transaction(self.sessions) as s:
            q = select(Campaign.id).where(Campaign.state.in_((SCHEDULED, RUNNING))).order_by(Campaign.id)
            if campaign_ids is not None:
                q = q.where(Campaign.id.in_(campaign_ids))
            ids = list(s.scalars(q))
        for campaign_id in ids:
            with transaction(self.sessions) as s:
                claims += self._claim_campaign(s, campaign_id, now)
        return claims

    def _claim_campaign(self, s: Session, campaign_id: int, now: dt.datetime) -> list[Claim]:
        q = select(Campaign).where(Campaign.id == campaign_id)
        if s.get_bind().dialect.name == "postgresql":
            q = q.with_for_update()
        campaign = s.scalars(q).one()
        if campaign.state == SCHEDULED:
            if campaign.recurrence is not None or (campaign.start_at is not None and campaign.start_at > now):
                return []
            transition(s, campaign, RUNNING, now=now)
            log.info("campaign started", campaign=campaign.name)
        if campaign.state != RUNNING:
            return []
        if self._maybe_finish(s, campaign, now):
            return []
        if not self.window(campaign).in_window(now):
            return []
        free = min(campaign.concurrency - count_targets(s, campaign.id, DIALING),
                   self.settings.max_lines - lines_in_use(s))
        claims: list[Claim] = []
        while free > 0:
            due = list(
                s.scalars(
                    select(CampaignTarget)
                    .where(
                        CampaignTarget.campaign_id == campaign.id,
                        CampaignTarget.state == PENDING,
                        (CampaignTarget.next_attempt_at.is_(None)) | (CampaignTarget.next_attempt_at <= now),
                    )
                    .order_by(CampaignTarget.next_attempt_at.is_not(None), CampaignTarget.next_attempt_at, CampaignTarget.id)
                    .limit(free)
                )
            )
            if not due:
                break
            before = len(claims)
            for target in due:
                claim = self._claim_target(s, campaign, target, now)
                if claim is not None:
                    claims.append(claim)
                    free -= 1
            if len(claims) == before and all(t.state == PENDING for t in due):
                break  # taken by another process meanwhile: leave them to it
        return claims

    def _claim_target(self, s: Session, campaign: Campaign, target: CampaignTarget, now: dt.datetime) -> Claim | None:
        """Check the target is still callable, then write the attempt; None when it was dropped instead."""
        reason = self._still_callable(s, campaign, target)
        if reason is not None:
            target.state, target.drop_reason = DROPPED, reason
            s.flush()
            log.info("target dropped before dialling", campaign=campaign.name, target=target.id, reason=reason)
            return None
        number = target.attempts + 1
        taken = s.execute(
            update(CampaignTarget)
            .where(CampaignTarget.id == target.id, CampaignTarget.state == PENDING, CampaignTarget.attempts == target.attempts)
            .values(state=DIALING, attempts=number, updated_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if taken != 1:
            return None
        attempt = CampaignAttempt(target_id=target.id, number=number, phone=target.phone, started_at=now, node=self.node)
        s.add(attempt)
        s.flush()
        s.expire(target)
        return Claim(
            campaign.id, campaign.name, target.id, attempt.id, number, target.phone or "", target.case_number,
            campaign.caller_id, campaign.prompt_script, campaign.purpose,
        )

    def _still_callable(self, s: Session, campaign: Campaign, target: CampaignTarget) -> str | None:
        """A drop reason when the case was deleted or merged meanwhile, the callback taken by a person,
        or the number went on the DNC list."""
        if target.phone is None:
            return "no_phone"
        if target.phone in do_not_call_set(s, [target.phone]):
            return "do_not_call"
        if campaign.purpose == "callback":
            return still_callable(s, target)
        if target.case_number is not None:
            case = s.get(Case, target.case_id) if target.case_id is not None else None
            if case is None:
                return "case_deleted"
            if case.status in GONE_STATUSES:
                return GONE_STATUSES[case.status]
        return None

    def _maybe_finish(self, s: Session, campaign: Campaign, now: dt.datetime) -> bool:
        if count_targets(s, campaign.id, PENDING, DIALING):
            return False
        transition(s, campaign, SCHEDULED if campaign.recurrence else "finished", now=now)
        log.info("campaign run complete", campaign=campaign.name, state=campaign.state)
        return True

    # -- one attempt ---------------------------------------------------------------------

    async def _attempt(self, claim: Claim) -> None:
        outcome, sip_status, error, call_id = "failed", None, None, None
        survey = SurveyResult()
        try:
            try:
                result = await self.dialer.dial(
                    claim.phone, ring_timeout=self.settings.ring_timeout, caller_id=claim.caller_id,
                    purpose=claim.purpose,
                )
                outcome, sip_status = result.outcome, result.sip_status
                call_id = getattr(result, "call_id", None)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any dialer failure is this attempt's outcome
                log.exception("dial failed", target=claim.target_id, attempt=claim.attempt)
                outcome, error = "failed", f"{type(e).__name__}: {e}"
                result = None
            if outcome == "answered" and result is not None and result.call is not None:
                await self._survey(result.call, claim, survey)
        except asyncio.CancelledError:
            # Shutdown: the callee may have heard us, so the attempt counts as interrupted.
            await asyncio.to_thread(self.finish, claim, "interrupted", sip_status, survey,
                                    "the service stopped during the call", call_id)
            raise
        await asyncio.to_thread(self.finish, claim, outcome, sip_status, survey, error, call_id)
        self._attempt_ended(claim.campaign_id)

    async def _survey(self, call: CallPort, claim: Claim, survey: SurveyResult) -> None:
        try:
            if claim.purpose == "callback":
                await run_callback_call(call, CallbackScript(
                    prompt_script=claim.prompt_script, limits=self.voicemail, operator_open=self.operator_open,
                    transfer=self.transfer,
                ), survey)
            else:
                await run_survey(call, SurveyScript(
                    prompt_script=claim.prompt_script,
                    case_number=claim.case_number,
                    opt_out_key=self.settings.opt_out_key,
                    comment_seconds=self.settings.comment_seconds,
                    operator_open=self.operator_open,
                    transfer=self.transfer,
                ), survey)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - keep what the callee already pressed
            log.exception("survey failed", target=claim.target_id, attempt=claim.attempt)
        finally:
            if not call.ended:
                await call.hangup()

    def finish(
        self, claim: Claim, outcome: str, sip_status: int | None, survey: SurveyResult | None, error: str | None = None,
        call_id: int | None = None,
    ) -> None:
        """Write the attempt's end and the target's new state in one transaction."""
        now = self.clock()
        survey = survey or SurveyResult()
        with transaction(self.sessions) as s:
            attempt = s.get(CampaignAttempt, claim.attempt_id)
            target = s.get(CampaignTarget, claim.target_id)
            if attempt is None or target is None or attempt.ended_at is not None:
                log.warning("attempt already closed or gone", attempt=claim.attempt_id)
                return
            campaign = s.get(Campaign, claim.campaign_id)
            assert campaign is not None
            attempt.ended_at, attempt.outcome, attempt.sip_status, attempt.error = now, outcome, sip_status, error
            attempt.rating, attempt.keys, attempt.choice = survey.rating, survey.keys or None, survey.choice
            attempt.comment_seconds = survey.comment.seconds if survey.comment else None
            attempt.call_id = call_id
            s.flush()
            link = {"campaign_id": campaign.id, "attempt": claim.attempt}
            if call_id is not None:
                link["call_id"] = call_id
            settle(s, campaign, target, outcome=outcome, rating=survey.rating, error=error, now=now,
                   opted_out=survey.opted_out, record_visit=self.record_visit, data=link, survey=survey)
        log.info("attempt done", campaign=claim.campaign_name, target=claim.target_id, attempt=claim.attempt,
                 outcome=outcome, rating=survey.rating)

    def recover(self) -> list[int]:
        """At start: close attempts a dead process left open (see the module docstring); returns their ids."""
        now = self.clock()
        with transaction(self.sessions) as s:
            open_attempts = list(
                s.scalars(select(CampaignAttempt).where(CampaignAttempt.ended_at.is_(None)).order_by(CampaignAttempt.id))
            )
            for attempt in open_attempts:
                attempt.ended_at, attempt.outcome = now, "interrupted"
                attempt.error = "the service stopped during this attempt (it may have rung)"
                target = attempt.target
                s.flush()
                if target.state == DIALING:
                    settle(s, target.campaign, target, outcome="interrupted", rating=None, error=attempt.error,
                           now=now, retry_from=attempt.started_at, record_visit=self.record_visit)
            # A target left "dialing" without an open attempt (cannot happen by the rules above,
            # but a hand-edited database might): give it back so it is not stuck forever.
            s.execute(
                update(CampaignTarget)
                .where(CampaignTarget.state == DIALING, ~CampaignTarget.attempt_rows.any(CampaignAttempt.ended_at.is_(None)))
                .values(state=PENDING)
                .execution_options(synchronize_session=False)
            )
        if open_attempts:
            log.warning("recovered interrupted attempts", count=len(open_attempts))
        return [a.id for a in open_attempts]


def lines_in_use(s: Session) -> int:
    """Targets ``dialing`` in all campaigns: the lines ``[campaigns] max_lines`` bounds."""
    return s.scalar(select(func.count()).select_from(CampaignTarget).where(CampaignTarget.state == DIALING)) or 0


def settle(
    s: Session,
    campaign: Campaign,
    target: CampaignTarget,
    *,
    outcome: str,
    rating: int | None,
    error: str | None,
    now: dt.datetime,
    opted_out: bool = False,
    retry_from: dt.datetime | None = None,
    record_visit: RecordVisit,
    data: dict[str, Any] | None = None,
    survey: SurveyResult | None = None,
) -> None:
    """The target's next state after an attempt with ``outcome`` (the retry and final rules)."""
    target.outcome, target.last_error = outcome, error
    if opted_out and target.phone:
        target.opted_out = True
        add_do_not_call(s, target.phone, reason=f"pressed the opt-out key in campaign {campaign.name!r}",
                        added_by=f"campaign:{campaign.id}", at=now)
    if outcome == "answered":
        target.choice = survey.choice if survey else None
    if outcome == "answered" and campaign.purpose == "callback":
        target.state, target.next_attempt_at = DONE, None
        callback_answered(s, campaign, target, attempt=target.attempts, choice=survey.choice if survey else None,
                          operator_requested=bool(survey and survey.operator_requested))
        s.flush()
        return
    if outcome == "answered":
        target.state, target.rating, target.next_attempt_at = DONE, rating, None
        notes = ["callee opted out of further calls"] if opted_out else []
        if survey is not None and survey.operator_requested:
            # A return visit's choice is set only by the operator queue: None means none could be offered.
            what = (choice_note(survey.choice, operator_requested=True) if survey.choice
                    else "asked for an operator, none available")
            notes.append(f"callee {what}")
        apply_result(s, target, outcome=outcome, rating=rating, note="; ".join(notes) or None,
                     record_visit=record_visit, data=data)
        return
    counted, interrupted = _attempt_counts(s, target.id)
    if outcome in FINAL_FAILURE:
        _fail(s, campaign, target, f"number not in service ({outcome})", record_visit)
    elif counted >= campaign.max_attempts:
        _fail(s, campaign, target, f"unreachable after {counted} attempts (last: {outcome})", record_visit)
    elif interrupted >= campaign.max_attempts:
        _fail(s, campaign, target, f"{interrupted} attempts interrupted by service stops", record_visit)
    else:
        target.state = PENDING
        target.next_attempt_at = (retry_from or now) + dt.timedelta(minutes=campaign.retry_minutes)
    s.flush()


def _attempt_counts(s: Session, target_id: int) -> tuple[int, int]:
    """(attempts that count towards max_attempts, interrupted attempts) of one target."""
    interrupted = case((CampaignAttempt.outcome == "interrupted", 1), else_=0)
    total, stopped = s.execute(
        select(func.count(), func.coalesce(func.sum(interrupted), 0))
        .where(CampaignAttempt.target_id == target_id, CampaignAttempt.ended_at.is_not(None))
    ).one()
    return int(total) - int(stopped), int(stopped)


def _fail(s: Session, campaign: Campaign, target: CampaignTarget, reason: str, record_visit: RecordVisit) -> None:
    target.state, target.next_attempt_at = FAILED, None
    if campaign.purpose == "callback":
        callback_unreachable(s, campaign, target, reason)  # the callback list is the person's task list
        return
    s.add(FollowUp(campaign_id=campaign.id, target_id=target.id, case_id=target.case_id,
                   case_number=target.case_number, phone=target.phone, reason=f"{reason}: reach by SMS or letter"))
    apply_result(s, target, outcome="unreachable", note=reason, record_visit=record_visit)


def follow_ups(s: Session, *, open_only: bool = True) -> Sequence[FollowUp]:
    q = select(FollowUp).order_by(FollowUp.created_at, FollowUp.id)
    if open_only:
        q = q.where(FollowUp.done_at.is_(None))
    return list(s.scalars(q))
