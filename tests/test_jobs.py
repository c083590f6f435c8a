"""The transcription job queue: claiming, leases, backoff, failures (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import threading
import uuid
from concurrent.futures import ProcessPoolExecutor

from sqlalchemy import select

from config.db import make_engine, session_factory, transaction
from recordings.models import Recording
from transcription import jobs
from transcription.models import TranscriptionJob

T0 = dt.datetime(2026, 12, 6, 2, 0, tzinfo=dt.UTC)
LEASE = 60.0


def add_jobs(sessions, n: int, *, not_before: dt.datetime = T0) -> list[int]:  # type: ignore[no-untyped-def]
    ids = []
    with transaction(sessions) as s:
        for i in range(n):
            rec = Recording(
                storage_key=f"t/{uuid.uuid4().hex}.wav", sample_rate=8000, duration=1.0, bytes=16044, sha256="0" * 64, caller="13800138000"
            )
            s.add(rec)
            s.flush()
            job = jobs.enqueue_for_recording(s, rec)
            job.not_before = not_before
            ids.append(job.id)
    return ids


def job(sessions, job_id: int) -> TranscriptionJob:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return s.get(TranscriptionJob, job_id)


def claim(sessions, worker: str = "w1", now: dt.datetime = T0, max_attempts: int = 3):  # type: ignore[no-untyped-def]
    return jobs.claim_next(sessions, worker, lease_seconds=LEASE, max_attempts=max_attempts, now=now)


def test_enqueue_in_the_recordings_transaction(sessions) -> None:  # type: ignore[no-untyped-def]
    [jid] = add_jobs(sessions, 1)
    j = job(sessions, jid)
    assert (j.state, j.attempts, j.lease_until, j.worker) == ("queued", 0, None, None)


def test_claim_takes_due_jobs_in_order_and_counts_attempts(sessions) -> None:  # type: ignore[no-untyped-def]
    a, b = add_jobs(sessions, 2)
    later = add_jobs(sessions, 1, not_before=T0 + dt.timedelta(seconds=30))[0]
    c1 = claim(sessions)
    c2 = claim(sessions)
    assert (c1.job_id, c2.job_id) == (a, b)
    assert c1.attempt == 1 and c1.worker == "w1"
    assert claim(sessions) is None  # the third is not due yet
    j = job(sessions, a)
    assert (j.state, j.attempts, j.worker) == ("running", 1, "w1")
    assert j.lease_until == T0 + dt.timedelta(seconds=LEASE)
    assert claim(sessions, now=T0 + dt.timedelta(seconds=30)).job_id == later  # leases still valid


def test_concurrent_claimers_never_share_a_job(sessions) -> None:  # type: ignore[no-untyped-def]
    ids = add_jobs(sessions, 40)
    n_threads = 6
    got: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def claimer(name: str) -> None:
        mine: list[int] = []
        try:
            barrier.wait()
            while (c := claim(sessions, worker=name)) is not None:
                mine.append(c.job_id)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        got[name] = mine

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    taken = [j for mine in got.values() for j in mine]
    assert sorted(taken) == ids  # every job exactly once
    with sessions() as s:
        rows = s.execute(select(TranscriptionJob.id, TranscriptionJob.worker, TranscriptionJob.attempts)).all()
    owner = {j: name for name, mine in got.items() for j in mine}
    assert all(r.worker == owner[r.id] and r.attempts == 1 for r in rows)


def _claim_all_in_process(url: str, name: str, now_iso: str) -> list[int]:
    engine = make_engine(url)
    factory = session_factory(engine)
    now = dt.datetime.fromisoformat(now_iso)
    mine = []
    while (c := jobs.claim_next(factory, name, lease_seconds=LEASE, max_attempts=3, now=now)) is not None:
        mine.append(c.job_id)
    engine.dispose()
    return mine


def test_concurrent_worker_processes_never_share_a_job(sessions, db_url: str) -> None:  # type: ignore[no-untyped-def]
    ids = add_jobs(sessions, 60)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=ctx) as pool:
        futures = [pool.submit(_claim_all_in_process, db_url, f"p{i}", T0.isoformat()) for i in range(4)]
        results = [f.result() for f in futures]
    taken = [j for r in results for j in r]
    assert sorted(taken) == ids


def test_expired_lease_is_taken_back(sessions) -> None:  # type: ignore[no-untyped-def]
    [jid] = add_jobs(sessions, 1)
    dead = claim(sessions, worker="dead")
    assert claim(sessions, worker="w2", now=T0 + dt.timedelta(seconds=LEASE - 1)) is None
    later = T0 + dt.timedelta(seconds=LEASE + 1)
    back = claim(sessions, worker="w2", now=later)
    assert (back.job_id, back.attempt, back.worker) == (jid, 2, "w2")
    # The presumed-dead worker wakes up: it owns nothing any more and changes nothing.
    assert not jobs.renew_lease(sessions, dead, lease_seconds=LEASE)
    assert jobs.record_failure(sessions, dead, "late", permanent=True, max_attempts=3, backoff_seconds=60) is None
    with transaction(sessions) as s:
        assert not jobs.mark_done(s, dead, model="m")
    j = job(sessions, jid)
    assert (j.state, j.worker, j.attempts, j.last_error) == ("running", "w2", 2, None)


def test_renewed_lease_keeps_the_job(sessions) -> None:  # type: ignore[no-untyped-def]
    add_jobs(sessions, 1)
    c = claim(sessions)
    assert jobs.renew_lease(sessions, c, lease_seconds=LEASE, now=T0 + dt.timedelta(seconds=50))
    assert claim(sessions, worker="w2", now=T0 + dt.timedelta(seconds=LEASE + 1)) is None
    assert claim(sessions, worker="w2", now=T0 + dt.timedelta(seconds=50 + LEASE + 1)) is not None


def test_backoff_doubles_until_max_attempts_then_failed(sessions) -> None:  # type: ignore[no-untyped-def]
    [jid] = add_jobs(sessions, 1)
    now = T0
    expected_delays = [60, 120]
    for attempt, delay in enumerate(expected_delays, start=1):
        c = claim(sessions, now=now)
        assert c.attempt == attempt
        state = jobs.record_failure(
            sessions, c, f"boom {attempt}", permanent=False, max_attempts=3, backoff_seconds=60, now=now
        )
        assert state == "queued"
        j = job(sessions, jid)
        assert j.not_before == now + dt.timedelta(seconds=delay)
        assert (j.last_error, j.worker, j.lease_until) == (f"boom {attempt}", None, None)
        assert claim(sessions, now=now + dt.timedelta(seconds=delay - 1)) is None
        now = now + dt.timedelta(seconds=delay)
    c = claim(sessions, now=now)
    assert c.attempt == 3
    assert jobs.record_failure(sessions, c, "boom 3", permanent=False, max_attempts=3, backoff_seconds=60, now=now) == "failed"
    j = job(sessions, jid)
    assert (j.state, j.attempts, j.last_error) == ("failed", 3, "boom 3")
    assert j.finished_at == now
    assert claim(sessions, now=now + dt.timedelta(days=1)) is None


def test_permanent_error_fails_at_once(sessions) -> None:  # type: ignore[no-untyped-def]
    [jid] = add_jobs(sessions, 1)
    c = claim(sessions)
    why = "stored recording file is missing: /x/y.wav"
    assert jobs.record_failure(sessions, c, why, permanent=True, max_attempts=3, backoff_seconds=60) == "failed"
    j = job(sessions, jid)
    assert (j.state, j.attempts, j.last_error) == ("failed", 1, why)


def test_job_that_keeps_killing_its_worker_ends_failed(sessions) -> None:  # type: ignore[no-untyped-def]
    [jid] = add_jobs(sessions, 1)
    now = T0
    for _ in range(2):
        assert claim(sessions, now=now, max_attempts=2) is not None
        now += dt.timedelta(seconds=LEASE + 1)  # the worker died: nobody renewed the lease
    assert claim(sessions, now=now, max_attempts=2) is None
    j = job(sessions, jid)
    assert (j.state, j.attempts) == ("failed", 2)
    assert "lease expired" in j.last_error


def test_release_gives_the_job_back_without_counting(sessions) -> None:  # type: ignore[no-untyped-def]
    [jid] = add_jobs(sessions, 1)
    c = claim(sessions)
    assert jobs.release(sessions, c, now=T0)
    j = job(sessions, jid)
    assert (j.state, j.attempts, j.worker, j.lease_until) == ("queued", 0, None, None)
    assert claim(sessions, worker="w2").attempt == 1
    assert jobs.state_counts(sessions) == {"running": 1}
