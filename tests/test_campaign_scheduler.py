"""APScheduler with the database job store: jobs survive a restart, recurring runs select since the last run."""

from __future__ import annotations

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy import MetaData, select

from campaigns.lifecycle import transition
from campaigns.models import Campaign, CampaignTarget, scheduler_jobs
from campaigns.runner import Runner
from campaigns.scheduler import TICK_JOB, CampaignScheduler, next_runs, recurrence_job_id, run_recurrence, tick_job
from campaigns.targets import add_targets, preview
from campaign_support import Clock, FakeDialer, at, make_case, new_campaign
from config.db import transaction


def test_jobs_table_is_apschedulers_own(ctx) -> None:  # type: ignore[no-untyped-def]
    theirs = SQLAlchemyJobStore(engine=ctx.engine, metadata=MetaData()).jobs_t
    assert [(c.name, type(c.type), c.primary_key, c.nullable, c.index) for c in theirs.columns] == [
        (c.name, type(c.type), c.primary_key, c.nullable, c.index) for c in scheduler_jobs.columns]


def make(ctx, clock, dialer=None) -> CampaignScheduler:  # type: ignore[no-untyped-def]
    runner = Runner(ctx, dialer or FakeDialer(), clock=clock)
    return CampaignScheduler(ctx.engine, runner, tick_seconds=15, timezone="Asia/Shanghai")


async def test_jobs_survive_a_restart(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        monthly = new_campaign(s, "Monthly", recurrence="0 9 1 * *").id
        transition(s, s.get(Campaign, monthly), "scheduled")
    clock = Clock(at("2026-09-16 10:00"))
    first = make(ctx, clock)
    await first.start(paused=True)
    before = dict(first.jobs())
    assert set(before) == {TICK_JOB, recurrence_job_id(monthly)}
    assert before[recurrence_job_id(monthly)].astimezone(at("2026-10-01 09:00").tzinfo).day == 1
    await first.stop()
    second = make(ctx, clock)  # a new process on the same database
    second.scheduler.start(paused=True)
    try:
        assert dict(second.jobs()) == before  # read back from the job store, nothing re-added
    finally:
        second.scheduler.shutdown(wait=False)
    with transaction(sessions) as s:
        transition(s, s.get(Campaign, monthly), "cancelled")
    third = make(ctx, clock)
    await third.start(paused=True)
    try:
        assert [j for j, _ in third.jobs()] == [TICK_JOB]  # a cancelled campaign's schedule is removed
    finally:
        await third.stop()


async def test_stored_tick_job_drives_the_active_runner(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        case = make_case(s, "20260901-0001", "13800138001")
        from campaigns.targets import add_targets, preview

        campaign = new_campaign(s)
        add_targets(s, campaign, preview(s, [case]))
        transition(s, campaign, "scheduled")
    dialer = FakeDialer()
    sched = make(ctx, Clock(at("2026-09-16 10:00")), dialer)
    await tick_job()  # no scheduler in this process: a warning, nothing dialled
    assert dialer.calls == []
    await sched.start(paused=True)
    try:
        job = sched.scheduler.get_job(TICK_JOB)
        assert job.func_ref == "campaigns.scheduler:tick_job" and job.coalesce and job.misfire_grace_time is None
        await job.func()
        await sched.runner.drain()
    finally:
        await sched.stop()
    assert dialer.calls == ["+8613800138001"]


async def test_stopping_leaves_the_service_engine_alone(ctx) -> None:  # type: ignore[no-untyped-def]
    """APScheduler's own job store disposes its engine at shutdown; ours is the Context's and stays."""
    sched = make(ctx, Clock(at("2026-09-16 10:00")))
    pool = ctx.engine.pool
    with ctx.engine.connect() as held:  # another thread's connection, open across the stop
        await sched.start(paused=True)
        await sched.stop()
        assert ctx.engine.pool is pool
        assert held.exec_driver_sql("select 1").scalar() == 1


def test_recurring_selection_since_last_run(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        campaign = new_campaign(s, "Weekly", recurrence="0 10 * * mon")
        campaign.created_at = at("2026-09-01 00:00")
        transition(s, campaign, "scheduled")  # a recurring campaign may be scheduled before it has targets
        cid = campaign.id
        make_case(s, "20260901-0001", "13800138001", reached=at("2026-09-03 10:00"))
        make_case(s, "20260901-0002", "13800138002", reached=at("2026-08-20 10:00"))  # before the campaign
    assert run_recurrence(sessions, cid, at("2026-09-07 10:00")) == 1
    assert run_recurrence(sessions, cid, at("2026-09-07 10:00")) == 0  # the same run again adds nothing
    with transaction(sessions) as s:
        assert s.get(Campaign, cid).state == "running"
        make_case(s, "20260901-0003", "13800138003", reached=at("2026-09-07 09:59"))  # inside run 1's range
        make_case(s, "20260901-0004", "13800138004", reached=at("2026-09-10 10:00"))
    # run 2 covers [09-07 10:00, 09-14 10:00): only case 4 (events are stamped when written, so none arrives late)
    assert run_recurrence(sessions, cid, at("2026-09-14 10:00")) == 1
    with sessions() as s:
        numbers = sorted(t.case_number for t in s.scalars(select(CampaignTarget).where(CampaignTarget.campaign_id == cid)))
    assert numbers == ["20260901-0001", "20260901-0004"]
    with transaction(sessions) as s:
        transition(s, s.get(Campaign, cid), "paused")
    assert run_recurrence(sessions, cid, at("2026-09-21 10:00")) == 0


async def test_a_campaign_made_while_running_gets_its_job_at_the_next_tick(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    sched = make(ctx, Clock(at("2026-09-16 10:00")))
    await sched.start(paused=True)
    try:
        assert [j for j, _ in sched.jobs()] == [TICK_JOB]
        with transaction(sessions) as s:  # made and started through the API, meanwhile
            weekly = new_campaign(s, "Weekly", recurrence="30 9 * * mon", start_at=at("2090-01-01 00:00"))
            transition(s, weekly, "scheduled")
            cid = weekly.id
        await sched.scheduler.get_job(TICK_JOB).func()
        jobs = dict(sched.jobs())
        assert set(jobs) == {TICK_JOB, recurrence_job_id(cid)}
        # APScheduler fires on the wall clock; never before start_at: the first Monday of 2090, 09:30 in Shanghai
        assert jobs[recurrence_job_id(cid)] == at("2090-01-02 09:30")
        with sessions() as s:
            assert next_runs(s.get(Campaign, cid), at("2026-09-16 10:00")) == [
                at("2090-01-02 09:30"), at("2090-01-09 09:30"), at("2090-01-16 09:30")]
            assert next_runs(s.get(Campaign, cid), at("2090-01-09 09:30")) == [
                at("2090-01-09 09:30"), at("2090-01-16 09:30"), at("2090-01-23 09:30")]
        with transaction(sessions) as s:
            transition(s, s.get(Campaign, cid), "cancelled")
        await sched.scheduler.get_job(TICK_JOB).func()
        assert [j for j, _ in sched.jobs()] == [TICK_JOB]
        with sessions() as s:
            assert next_runs(s.get(Campaign, cid), at("2026-09-16 10:00")) == []
    finally:
        await sched.stop()


def test_first_run_dials_the_targets_selected_at_creation(ctx, sessions) -> None:  # type: ignore[no-untyped-def]
    """A recurring campaign made with a first date range: those targets wait for the first run, which
    starts the campaign even when no case was replied since."""
    with transaction(sessions) as s:
        case = make_case(s, "20260901-0001", "13800138001", reached=at("2026-09-03 10:00"))
        campaign = new_campaign(s, "Monthly", recurrence="0 9 1 * *")
        add_targets(s, campaign, preview(s, [case]))
        campaign.last_run_at = at("2026-09-15 00:00")
        transition(s, campaign, "scheduled")
        cid = campaign.id
    assert run_recurrence(sessions, cid, at("2026-10-01 09:00")) == 0
    with sessions() as s:
        assert s.get(Campaign, cid).state == "running"
