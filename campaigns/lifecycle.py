"""Creating campaigns, their state machine, and their progress figures.

States (issue 7)::

    draft ──schedule──▶ scheduled ──(start_at reached / recurrence fires)──▶ running
      │                    │  ▲                                            │  ▲ │
      └──cancel──▶ cancelled ◀──cancel── any non-final state                 │  │ └─▶ finished
                           │  └──── a recurring campaign's run ends ─────────┘  │    (no target left)
                           └──pause──▶ paused ──resume──▶ running ◀──────────────┘

``finished`` and ``cancelled`` are final. A recurring campaign never finishes by itself:
after each run it waits in ``scheduled`` for its next cron time. Cancelling or pausing
stops new dials at the next tick; calls already ringing end normally and are recorded.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns.callback_call import SCRIPT as CALLBACK_SCRIPT
from campaigns.callback_targets import SOURCE as CALLBACK_SOURCE
from campaigns.errors import CampaignError, NotFound, StateError
from campaigns.models import (
    CANCELLED,
    DIALING,
    DONE,
    DRAFT,
    DROPPED,
    FAILED,
    FINISHED,
    PAUSED,
    PENDING,
    RUNNING,
    SCHEDULED,
    Campaign,
    CampaignTarget,
)
from campaigns.windows import parse_days, parse_spans, zone
from config.db import utcnow
from config.settings import CampaignSettings

PURPOSES = ("return_visit", "callback")
TRANSITIONS: dict[str, frozenset[str]] = {
    DRAFT: frozenset({SCHEDULED, CANCELLED}),
    SCHEDULED: frozenset({RUNNING, PAUSED, CANCELLED}),
    RUNNING: frozenset({PAUSED, FINISHED, CANCELLED, SCHEDULED}),
    PAUSED: frozenset({RUNNING, CANCELLED}),
    FINISHED: frozenset(),
    CANCELLED: frozenset(),
}


def check_recurrence(expr: str, timezone: str) -> str:
    """A crontab expression APScheduler accepts ("0 9 1 * *": monthly on the 1st at 09:00)."""
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expr, timezone=zone(timezone))
    except ValueError as e:
        raise CampaignError(f"recurrence {expr!r} is not a crontab expression (minute hour day month weekday): {e}") from None
    return expr


def create_campaign(
    session: Session,
    defaults: CampaignSettings,
    *,
    name: str,
    created_by: str,
    calendar_timezone: str,
    purpose: str = "return_visit",
    selection: dict[str, Any] | None = None,
    windows: list[str] | None = None,
    days: Any = None,
    timezone: str | None = None,
    max_attempts: int | None = None,
    retry_minutes: int | None = None,
    concurrency: int | None = None,
    caller_id: str | None = None,
    prompt_script: str | None = None,
    recurrence: str | None = None,
    start_at: dt.datetime | None = None,
) -> Campaign:
    """A new draft campaign; every setting not given is copied from ``[campaigns]`` now, so
    later config changes do not alter a campaign already planned."""
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise CampaignError("a campaign needs a name of 1 to 120 characters")
    if purpose not in PURPOSES:
        raise CampaignError(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}")
    from_callbacks = (selection or {}).get("source") == CALLBACK_SOURCE
    if from_callbacks != (purpose == "callback"):
        # The callback list has no cases to rate, and a return visit has no callback entry to close.
        raise CampaignError(f"a {purpose} campaign selects its targets "
                            f"{'from the callback list' if purpose == 'callback' else 'from cases or a CSV'}, "
                            f"not from {'the callback list' if from_callbacks else 'cases'}")
    if session.scalar(select(Campaign.id).where(Campaign.name == name)) is not None:
        raise CampaignError(f"a campaign named {name!r} exists already")
    tz = timezone or defaults.timezone or calendar_timezone
    zone(tz)
    spans = list(windows if windows is not None else defaults.windows)
    parse_spans(spans)
    day_rule = days if days is not None else defaults.days
    parse_days(day_rule)
    numbers = {
        "max_attempts": (max_attempts, defaults.max_attempts, 1, 20),
        "retry_minutes": (retry_minutes, defaults.retry_minutes, 1, 10080),
        "concurrency": (concurrency, defaults.concurrency, 1, 200),
    }
    values: dict[str, int] = {}
    for key, (given, default, lo, hi) in numbers.items():
        v = default if given is None else given
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise CampaignError(f"{key} must be a whole number from {lo} to {hi}, not {v!r}")
        values[key] = v
    if recurrence is not None:
        check_recurrence(recurrence, tz)
    if start_at is not None and start_at.tzinfo is None:
        raise CampaignError("start_at must carry a time zone")
    campaign = Campaign(
        name=name,
        purpose=purpose,
        state=DRAFT,
        selection=selection or {},
        windows=spans,
        days=day_rule if isinstance(day_rule, str) else list(day_rule),
        timezone=tz,
        caller_id=caller_id or defaults.caller_id,
        prompt_script=prompt_script or (CALLBACK_SCRIPT if purpose == "callback" else defaults.prompt_script),
        recurrence=recurrence,
        start_at=start_at,
        created_by=created_by,
        **values,
    )
    session.add(campaign)
    session.flush()
    return campaign


def get_campaign(session: Session, ref: str | int) -> Campaign:
    """By id (digits) or by name."""
    text = str(ref).strip()
    campaign = session.get(Campaign, int(text)) if text.isdigit() else None
    if campaign is None:
        campaign = session.scalar(select(Campaign).where(Campaign.name == text))
    if campaign is None:
        raise NotFound(f"no campaign {text!r}")
    return campaign


def count_targets(session: Session, campaign_id: int, *states: str) -> int:
    return session.scalar(
        select(func.count()).select_from(CampaignTarget).where(
            CampaignTarget.campaign_id == campaign_id, CampaignTarget.state.in_(states)
        )
    ) or 0


def transition(session: Session, campaign: Campaign, to: str, *, now: dt.datetime | None = None) -> Campaign:
    """Move a campaign to state ``to`` or raise StateError naming what is allowed."""
    allowed = TRANSITIONS[campaign.state]
    if to not in allowed:
        options = ", ".join(sorted(allowed)) or "nothing (it is final)"
        raise StateError(f"campaign {campaign.name!r} is {campaign.state}: it cannot become {to} (allowed: {options})")
    if to == SCHEDULED and campaign.state == DRAFT and campaign.recurrence is None:
        if count_targets(session, campaign.id, PENDING) == 0:
            raise StateError(f"campaign {campaign.name!r} has no targets to call: select targets before scheduling it")
    campaign.state = to
    if to in (FINISHED, CANCELLED):
        campaign.finished_at = now or utcnow()
    session.flush()
    return campaign


def progress(session: Session, campaign: Campaign) -> dict[str, Any]:
    """Targets done / pending / failed / dropped, ratings, those transferred to an operator, and the contact rate."""
    rows = session.execute(
        select(CampaignTarget.state, CampaignTarget.outcome, CampaignTarget.rating, CampaignTarget.choice, func.count())
        .where(CampaignTarget.campaign_id == campaign.id)
        .group_by(CampaignTarget.state, CampaignTarget.outcome, CampaignTarget.rating, CampaignTarget.choice)
    ).all()
    by_state = {s: 0 for s in (PENDING, DIALING, DONE, FAILED, DROPPED)}
    ratings = {"1": 0, "2": 0, "3": 0, "none": 0}
    answered = transferred = 0
    for state, outcome, rating, choice, n in rows:
        by_state[state] += n
        if state == DONE and outcome == "answered":
            answered += n
            ratings[str(rating) if rating else "none"] += n
            transferred += n if choice == "operator" else 0
    settled = by_state[DONE] + by_state[FAILED]
    return {
        "campaign": campaign.name,
        "state": campaign.state,
        "targets": sum(by_state.values()),
        "done": by_state[DONE],
        "pending": by_state[PENDING] + by_state[DIALING],
        "dialing": by_state[DIALING],
        "failed": by_state[FAILED],
        "dropped": by_state[DROPPED],
        "ratings": ratings,
        "transferred": transferred,
        "contact_rate": round(answered / settled, 4) if settled else None,
    }
