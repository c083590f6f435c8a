"""APScheduler 3.x for campaigns: the tick job and one cron job per recurring campaign.

Jobs live in the service's own database (``SQLAlchemyJobStore``, table ``apscheduler_jobs``,
declared in campaigns/models.py so the migration creates it), so a restarted service finds
every recurring schedule where it was. Jobs are stored as *function paths*
(``campaigns.scheduler:tick_job``) with plain arguments, never as objects: a stored job
must be importable by the next process. The functions find this process's engine through
:data:`_ACTIVE`, the one piece of module state here, because APScheduler can only store
a reference to a module-level function.

Misfires and restarts:

* the tick job coalesces (one late tick, never a burst) and has no misfire limit; it is
  harmless to run at any time, because *which* targets are due and whether an attempt was
  already placed are decided from the database (campaigns/runner.py), not from APScheduler;
* a recurring run missed while the service was down runs once at start (coalesce, no
  misfire limit); it selects the cases replied since the *last run*, so a late or merged
  run loses no case and a second run in a row finds nothing new;
* at start, :meth:`Runner.recover` closes attempts a killed process left open before the
  first tick (no double call, no skipped target).

Campaigns are created and started through the API, possibly in another process: each tick
also brings the cron jobs in line with the campaigns (:meth:`CampaignScheduler.sync_recurrences`),
so a recurring campaign made in the page has its job within one tick, without a restart.

One scheduler per database: APScheduler 3 does not coordinate several schedulers over one
job store (each would fire every job).
"""

from __future__ import annotations

import asyncio
import datetime as dt

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from campaigns.callback_targets import SOURCE as CALLBACK_SOURCE
from campaigns.callback_targets import preview_callbacks, select_callbacks
from campaigns.errors import CampaignError, NotFound
from campaigns.lifecycle import count_targets, transition
from campaigns.models import CANCELLED, FINISHED, JOBS_TABLE, PENDING, RUNNING, SCHEDULED, Campaign, scheduler_jobs
from campaigns.runner import Runner
from campaigns.targets import SELECT_STATUSES, add_targets, preview, select_cases
from campaigns.windows import zone
from config.db import transaction
from config.logs import get_logger

log = get_logger("campaigns.scheduler")

TICK_JOB = "campaigns-tick"
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
_ACTIVE: dict[str, CampaignScheduler] = {}
"""The scheduler of this process, for the stored job functions (see the module docstring)."""


class SharedEngineJobStore(SQLAlchemyJobStore):
    """APScheduler's job store on the service's engine, which the job store must not dispose.

    ``SQLAlchemyJobStore.shutdown`` disposes its engine. Ours belongs to the :class:`Context`: disposing it while
    another thread holds a connection orphans that connection (PostgreSQL: "deleted while still open"), and the
    rest of the service would go on with a fresh pool behind its back. The Context disposes it at exit.
    """

    def shutdown(self) -> None:
        pass


def recurrence_job_id(campaign_id: int) -> str:
    return f"campaign-{campaign_id}-recurrence"


def recurrence_trigger(expr: str, timezone: str, start_at: dt.datetime | None = None) -> CronTrigger:
    """The cron trigger of a recurring campaign, read in its own time zone; never before ``start_at``.

    ``CronTrigger.from_crontab`` with a start date (which it does not take). Weekdays are best given
    by name: APScheduler 3 counts 0 as Monday, where crontab counts 0 as Sunday.
    """
    minute, hour, day, month, day_of_week = expr.split()  # five fields: lifecycle.check_recurrence accepted it
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week,
                       timezone=zone(timezone), start_date=start_at)


def next_runs(campaign: Campaign, now: dt.datetime, count: int = 3) -> list[dt.datetime]:
    """The next ``count`` times a recurring campaign's job fires after ``now`` (none when it will not run again)."""
    if campaign.recurrence is None or campaign.state in (FINISHED, CANCELLED):
        return []
    trigger = recurrence_trigger(campaign.recurrence, campaign.timezone, campaign.start_at)
    runs: list[dt.datetime] = []
    fire = trigger.get_next_fire_time(None, now)
    while fire is not None and len(runs) < count:
        runs.append(fire)
        fire = trigger.get_next_fire_time(fire, fire + dt.timedelta(seconds=1))
    return runs


def stored_next_run(session: Session, campaign_id: int) -> dt.datetime | None:
    """When the scheduler's job of a recurring campaign fires next, as the job store holds it; None while the
    running scheduler has not taken the campaign up yet (it does at its next tick), or without a scheduler."""
    value = session.scalar(select(scheduler_jobs.c.next_run_time).where(scheduler_jobs.c.id == recurrence_job_id(campaign_id)))
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


async def tick_job() -> None:
    """Stored job: bring the cron jobs in line with the campaigns, then one runner tick."""
    active = _ACTIVE.get("default")
    if active is None:
        log.warning("campaign tick fired with no scheduler running in this process")
        return
    active.apply_recurrences(await asyncio.to_thread(active.wanted_recurrences))
    await active.runner.tick()


async def recurrence_job(campaign_id: int) -> None:
    """Stored job: one run of a recurring campaign."""
    active = _ACTIVE.get("default")
    if active is None:
        log.warning("campaign recurrence fired with no scheduler running in this process", campaign=campaign_id)
        return
    await asyncio.to_thread(run_recurrence, active.runner.sessions, campaign_id, active.runner.clock())


def run_recurrence(sessions: sessionmaker[Session], campaign_id: int, now: dt.datetime) -> int:
    """Add targets for the cases replied since the last run, and start the run; returns how many.

    A paused, cancelled or finished campaign selects nothing (its schedule stays, so resuming
    a paused one catches up at its next run, from the same ``last_run_at``).
    """
    with transaction(sessions) as s:
        campaign = s.get(Campaign, campaign_id)
        if campaign is None:
            raise NotFound(f"no campaign {campaign_id}")
        if campaign.state not in (SCHEDULED, RUNNING):
            log.info("recurrence skipped", campaign=campaign.name, state=campaign.state)
            return 0
        since = campaign.last_run_at or campaign.created_at
        if now <= since:
            return 0
        sel = campaign.selection or {}
        if sel.get("source") == CALLBACK_SOURCE:
            # A recurring callback sweep: whoever is on the list and open now.
            result = preview_callbacks(s, select_callbacks(s), campaign_id=campaign.id)
        else:
            cases = select_cases(
                s, since=since, until=now, statuses=sel.get("statuses") or SELECT_STATUSES,
                category=sel.get("category"), unit=sel.get("unit"),
            )
            result = preview(s, cases, campaign_id=campaign.id)
        n = add_targets(s, campaign, result, now=now)
        campaign.last_run_at = now
        # Targets selected when the campaign was made (its first date range) wait for its first run too.
        if campaign.state == SCHEDULED and count_targets(s, campaign.id, PENDING):
            transition(s, campaign, RUNNING, now=now)
        log.info("recurring run selected targets", campaign=campaign.name, since=since.isoformat(), targets=n)
        return n


class CampaignScheduler:
    """The AsyncIOScheduler with its database job store, driving one :class:`Runner`."""

    def __init__(self, engine: Engine, runner: Runner, *, tick_seconds: float, timezone: str) -> None:
        self.runner = runner
        self.tick_seconds = tick_seconds
        self.scheduler = AsyncIOScheduler(
            jobstores={"default": SharedEngineJobStore(engine=engine, tablename=JOBS_TABLE)},
            job_defaults=JOB_DEFAULTS,
            timezone=zone(timezone),
        )

    async def start(self, *, paused: bool = False) -> None:
        """Recover interrupted attempts, then start the jobs (``paused``: store only, fire nothing; tests)."""
        if _ACTIVE.get("default") not in (None, self):
            raise CampaignError("a campaign scheduler is already running in this process")
        await asyncio.to_thread(self.runner.recover)
        _ACTIVE["default"] = self
        self.scheduler.start(paused=paused)
        self.scheduler.add_job(
            tick_job, IntervalTrigger(seconds=self.tick_seconds), id=TICK_JOB, name=TICK_JOB, replace_existing=True
        )
        self.sync_recurrences()

    def sync_recurrences(self) -> None:
        """One cron job per recurring campaign that is not final; keep unchanged jobs (and their misfires)."""
        self.apply_recurrences(self.wanted_recurrences())

    def wanted_recurrences(self) -> dict[str, tuple[int, str, str, dt.datetime | None]]:
        """The cron jobs the campaigns call for, by job id (reads the database: run it in a thread on the loop)."""
        with self.runner.sessions() as s:
            return {
                recurrence_job_id(c.id): (c.id, c.recurrence, c.timezone, c.start_at)
                for c in s.scalars(select(Campaign).where(Campaign.recurrence.is_not(None), Campaign.state.not_in((FINISHED, CANCELLED))))
                if c.recurrence is not None
            }

    def apply_recurrences(self, wanted: dict[str, tuple[int, str, str, dt.datetime | None]]) -> None:
        existing = {job.id: job for job in self.scheduler.get_jobs()}  # one read of the job store per tick
        for job in existing.values():
            if job.id.startswith("campaign-") and job.id not in wanted:
                job.remove()
        for job_id, (campaign_id, expr, tz, start_at) in wanted.items():
            # The name says what the job was made from: a changed campaign gets a new trigger, an unchanged one keeps its job.
            name = f"{expr} ({tz})" + (f" from {start_at.isoformat()}" if start_at is not None else "")
            job = existing.get(job_id)
            if job is not None and job.name == name:
                continue
            self.scheduler.add_job(
                recurrence_job, recurrence_trigger(expr, tz, start_at), args=[campaign_id],
                id=job_id, name=name, replace_existing=True,
            )

    def jobs(self) -> list[tuple[str, dt.datetime | None]]:
        return [(j.id, j.next_run_time) for j in self.scheduler.get_jobs()]

    async def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down in a loop callback: let it run before we return
        await self.runner.stop()
        if _ACTIVE.get("default") is self:
            del _ACTIVE["default"]
