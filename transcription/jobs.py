"""The transcription job queue, kept in the database.

States: ``queued`` → ``running`` → ``done`` | ``failed`` (a failed attempt with attempts
left goes back to ``queued`` with a later ``not_before``).

Claiming
    A job is due when ``state='queued' and not_before <= now``, or when
    ``state='running' and lease_until < now`` (its worker died or hung: the lease was not
    renewed). Claiming sets ``running``, a fresh lease, the worker id and counts the attempt
    (``attempts += 1``).

    - PostgreSQL: ``SELECT … ORDER BY not_before, id LIMIT 1 FOR UPDATE SKIP LOCKED``, then
      ``UPDATE`` in the same transaction, so workers on several machines never wait for
      each other and never take the same row.
    - SQLite: one statement, ``UPDATE … WHERE id = (SELECT id … LIMIT 1) AND <due> RETURNING``.
      A single statement holds SQLite's database write lock from the sub-select to the
      write, so concurrent worker processes on one file cannot both take a row (the other
      waits on ``busy_timeout`` and then sees the row no longer due).

Ownership
    After the claim, every change a worker makes to its job is a guarded ``UPDATE … WHERE
    id = ? AND state = 'running' AND worker = ? AND attempts = ?``: a worker whose lease
    expired and whose job was taken by another worker (attempts moved on) changes nothing
    and learns so from the row count. Timestamps come from the worker's clock: workers on
    several machines need synchronised clocks (NTP), as leases are compared across them.

Failures
    Transient (anything unexpected, a worker process that died): back to ``queued`` with
    ``not_before = now + backoff_seconds × 2^(attempts-1)`` until ``max_attempts``, then
    ``failed``; ``last_error`` keeps the reason. Permanent (AudioError: the stored file is
    missing, altered or not audio): ``failed`` at once. A running job whose lease expired
    with no attempts left (its worker keeps dying on it) is marked ``failed`` by the next
    claimer instead of being run again.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from config.db import utcnow
from recordings.models import Recording
from transcription.models import DONE, FAILED, QUEUED, RUNNING, TranscriptionJob

J = TranscriptionJob
Factory = sessionmaker[Session]
_NOSYNC = {"synchronize_session": False}


@dataclass(frozen=True)
class Claim:
    """A job this worker holds: its id, recording and which attempt this is."""

    job_id: int
    recording_id: int
    attempt: int
    worker: str


def enqueue_for_recording(session: Session, recording: Recording) -> TranscriptionJob:
    """Queue a job in the same transaction that stores the recording: no recording is forgotten."""
    job = TranscriptionJob(recording_id=recording.id)
    session.add(job)
    session.flush()
    return job


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"[:120]


def _due(now: dt.datetime, max_attempts: int):  # type: ignore[no-untyped-def]
    return or_(
        and_(J.state == QUEUED, J.not_before <= now),
        and_(J.state == RUNNING, J.lease_until < now, J.attempts < max_attempts),
    )


def _lease(now: dt.datetime, lease_seconds: float) -> dt.datetime:
    return now + dt.timedelta(seconds=lease_seconds)


def _sweep_dead(session: Session, now: dt.datetime, max_attempts: int) -> int:
    """Fail running jobs whose lease expired with no attempts left (their worker kept dying)."""
    res = session.execute(
        update(J)
        .where(J.state == RUNNING, J.lease_until < now, J.attempts >= max_attempts)
        .values(
            state=FAILED,
            finished_at=now,
            lease_until=None,
            last_error=func.coalesce(J.last_error + " | ", "")
            + f"lease expired on the last of {max_attempts} attempts: the worker died or hung",
        ),
        execution_options=_NOSYNC,
    )
    return res.rowcount or 0


def claim_next(
    factory: Factory,
    worker: str,
    *,
    lease_seconds: float,
    max_attempts: int,
    now: dt.datetime | None = None,
) -> Claim | None:
    """Take the next due job for ``worker``, or None when nothing is due."""
    now = now or utcnow()
    values = dict(
        state=RUNNING,
        attempts=J.attempts + 1,
        lease_until=_lease(now, lease_seconds),
        worker=worker,
        started_at=now,
        finished_at=None,
    )
    with factory() as s, s.begin():
        _sweep_dead(s, now, max_attempts)
        due = _due(now, max_attempts)
        if s.get_bind().dialect.name == "postgresql":
            row = s.execute(
                select(J.id).where(due).order_by(J.not_before, J.id).limit(1).with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            res = s.execute(
                update(J).where(J.id == row.id).values(**values).returning(J.id, J.recording_id, J.attempts),
                execution_options=_NOSYNC,
            ).first()
        else:
            pick = select(J.id).where(due).order_by(J.not_before, J.id).limit(1).scalar_subquery()
            res = s.execute(
                update(J).where(J.id == pick, due).values(**values).returning(J.id, J.recording_id, J.attempts),
                execution_options=_NOSYNC,
            ).first()
        if res is None:
            return None
        return Claim(job_id=res.id, recording_id=res.recording_id, attempt=res.attempts, worker=worker)


def _owned(claim: Claim):  # type: ignore[no-untyped-def]
    return and_(J.id == claim.job_id, J.state == RUNNING, J.worker == claim.worker, J.attempts == claim.attempt)


def renew_lease(factory: Factory, claim: Claim, *, lease_seconds: float, now: dt.datetime | None = None) -> bool:
    """Extend the lease of a job still held; False if it was lost (expired and taken back)."""
    now = now or utcnow()
    with factory() as s, s.begin():
        res = s.execute(
            update(J).where(_owned(claim)).values(lease_until=_lease(now, lease_seconds)), execution_options=_NOSYNC
        )
        return res.rowcount == 1


def release(factory: Factory, claim: Claim, *, now: dt.datetime | None = None) -> bool:
    """Give a job back untouched (worker shutting down): queued again, this attempt not counted."""
    now = now or utcnow()
    with factory() as s, s.begin():
        res = s.execute(
            update(J)
            .where(_owned(claim))
            .values(state=QUEUED, attempts=J.attempts - 1, lease_until=None, worker=None, not_before=now),
            execution_options=_NOSYNC,
        )
        return res.rowcount == 1


def backoff_delay(attempt: int, backoff_seconds: float) -> float:
    return backoff_seconds * 2 ** max(attempt - 1, 0)


def record_failure(
    factory: Factory,
    claim: Claim,
    error: str,
    *,
    permanent: bool,
    max_attempts: int,
    backoff_seconds: float,
    now: dt.datetime | None = None,
) -> str | None:
    """Record a failed attempt. Returns the job's new state (queued or failed), None if no longer ours."""
    now = now or utcnow()
    if permanent or claim.attempt >= max_attempts:
        values = dict(state=FAILED, finished_at=now, lease_until=None, last_error=error)
    else:
        delay = backoff_delay(claim.attempt, backoff_seconds)
        values = dict(
            state=QUEUED,
            lease_until=None,
            worker=None,
            not_before=now + dt.timedelta(seconds=delay),
            last_error=error,
        )
    with factory() as s, s.begin():
        res = s.execute(update(J).where(_owned(claim)).values(**values), execution_options=_NOSYNC)
        return str(values["state"]) if res.rowcount == 1 else None


def mark_done(session: Session, claim: Claim, *, model: str | None, now: dt.datetime | None = None) -> bool:
    """Inside the caller's transaction: the job is done (False if it is no longer ours).

    It is the first write of the pipeline's transaction on purpose: on SQLite it takes the
    write lock, on PostgreSQL the job's row lock, before anything is read for the draft.
    """
    now = now or utcnow()
    res = session.execute(
        update(J).where(_owned(claim)).values(state=DONE, finished_at=now, lease_until=None, model=model),
        execution_options=_NOSYNC,
    )
    return res.rowcount == 1


def state_counts(factory: Factory) -> dict[str, int]:
    with factory() as s:
        rows = s.execute(select(J.state, func.count()).group_by(J.state)).all()
    return {state: n for state, n in rows}
