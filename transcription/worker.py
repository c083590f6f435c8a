"""`hotline worker`: take transcription jobs from the queue and turn them into draft cases.

Process layout
    The parent process owns the database: it claims jobs, renews their leases, and writes
    transcripts and draft cases. Vosk runs in a ``ProcessPoolExecutor`` of N worker
    processes (``spawn`` start method, so no database connection or lock is inherited);
    each loads the model once in the pool initializer and then only turns a file path into
    a TranscriptResult. Claiming in the parent keeps one small connection pool per
    worker command instead of one per Vosk process, lets a single place renew leases and
    handle signals, and means a crashing Kaldi process cannot leave a transaction open: the
    parent sees BrokenProcessPool, counts a failed attempt for the jobs it held, and starts
    a fresh pool. The parent claims at most N jobs at a time (one per process), so jobs
    stay in the queue for other workers rather than piling up locally.

    Worker processes ignore SIGINT/SIGTERM (the parent decides what happens to their
    jobs) and ask the kernel to SIGKILL them when the parent dies (PR_SET_PDEATHSIG), so a
    ``kill -9`` of the parent leaves no 650 MB orphan decoding a job that somebody else
    will take back once its lease expires.

``--once``
    Works until no job is due, then exits: jobs re-queued with a backoff that is not over
    yet are left for a later run. Exit code 0 when every job taken in this run ended
    ``done``; 1 when any ended otherwise (failed for good, or re-queued after an error), so
    a cron job or a script notices. A missing or broken model exits 1 with its message.

Daemon (no ``--once``)
    Polls every ``[transcription] poll_seconds`` when idle. On SIGTERM or SIGINT it stops
    claiming and lets the jobs in hand finish for up to ``--grace`` seconds (default 20,
    below the 30 s ``hotline serve`` waits); jobs still running then are released (queued
    again, the attempt not counted) and the worker processes are killed. A second signal
    releases at once. Exit code 0.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from config.context import Context
from config.db import DatabaseError
from config.errors import HotlineError
from config.logs import get_logger
from transcription import jobs, pipeline

log = get_logger("transcription.worker")

EngineFactory = Callable[[Path, str], Any]

# --- worker-process side ---------------------------------------------------------------

_ENGINE: Any = None
_INIT_ERROR: BaseException | None = None


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: orphans finish their file and exit on the broken pipe
        pass


def _init_process(model_path: str, feed_rate: str, engine_factory: EngineFactory | None) -> None:
    global _ENGINE, _INIT_ERROR
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    try:
        if engine_factory is None:
            from transcription.engine import Engine

            _ENGINE = Engine(Path(model_path), feed_rate=feed_rate)
        else:
            _ENGINE = engine_factory(Path(model_path), feed_rate)
    except Exception as e:  # noqa: BLE001 - reported on the first task, the pool must not break
        _INIT_ERROR = e


def _ready() -> str:
    if _INIT_ERROR is not None:
        raise _model_error(_INIT_ERROR)
    return str(getattr(_ENGINE, "name", ""))


def _transcribe(path: str, sha256: str | None, channels: int) -> Any:
    if _INIT_ERROR is not None:
        raise _model_error(_INIT_ERROR)
    return pipeline.transcribe_file(_ENGINE, Path(path), sha256, channels)


def _model_error(e: BaseException) -> BaseException:
    from transcription.engine import ModelError

    if isinstance(e, HotlineError):
        return e
    return ModelError(f"loading the speech model failed: {e.__class__.__name__}: {e}")


# --- parent side -------------------------------------------------------------------------


@dataclass
class _Running:
    claim: jobs.Claim
    recording_id: int
    audio: str
    renew_at: float
    pool: ProcessPoolExecutor
    lost: bool = False


@dataclass
class RunStats:
    done: int = 0
    failed: int = 0
    requeued: int = 0
    released: int = 0
    outcome: dict[int, str] = field(default_factory=dict)
    """Final state of each job handled in this run (job id → done/queued/failed/released)."""


class Worker:
    def __init__(
        self,
        ctx: Context,
        *,
        processes: int,
        once: bool,
        grace: float = 20.0,
        model_path: Path,
        engine_factory: EngineFactory | None = None,
        install_signals: bool = True,
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.ts = ctx.settings.transcription
        self.factory = ctx.sessions
        self.processes = processes
        self.once = once
        self.grace = grace
        self.model_path = model_path
        self.engine_factory = engine_factory
        self.install_signals = install_signals
        self.id = jobs.new_worker_id()
        self.stop = threading.Event()
        self.signals = 0
        self.stats = RunStats()
        self.inflight: dict[Future[Any], _Running] = {}
        self.pool: ProcessPoolExecutor | None = None
        self.fatal: BaseException | None = None
        self.log = log.bind(worker=self.id)

    # lifecycle

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_process,
            initargs=(str(self.model_path), self.ts.feed_rate, self.engine_factory),
        )

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.signals += 1
        self.stop.set()

    def run(self) -> int:
        old: dict[int, Any] = {}
        if self.install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                old[sig] = signal.signal(sig, self._on_signal)
        self.pool = self._new_pool()
        try:
            self.log.info("worker started", processes=self.processes, once=self.once, model=str(self.model_path))
            self._warm_up()
            self._loop()
        finally:
            self._shutdown()
            for sig, handler in old.items():
                signal.signal(sig, handler)
        s = self.stats
        self.log.info("worker stopped", done=s.done, failed=s.failed, requeued=s.requeued, released=s.released)
        if self.fatal is not None:
            raise self.fatal
        if self.once and any(v != "done" for v in s.outcome.values()):
            return 1
        return 0

    def _warm_up(self) -> None:
        """Start every process and load the model now, so a broken model stops the start."""
        assert self.pool is not None
        futures = [self.pool.submit(_ready) for _ in range(self.processes)]
        for f in futures:
            f.result()  # raises the ModelError of a model that does not load

    def _loop(self) -> None:
        tick = 0.5
        stop_deadline: float | None = None
        next_claim = 0.0  # while busy with an empty queue, look again only every poll_seconds
        while True:
            if self.fatal is not None:
                self._release_all()
                return
            if self.stop.is_set():
                if stop_deadline is None:
                    stop_deadline = time.monotonic() + self.grace
                    self.log.info("stopping", in_hand=len(self.inflight), grace_s=self.grace)
                if not self.inflight:
                    return
                if self.signals >= 2 or time.monotonic() >= stop_deadline:
                    self._release_all()
                    return
            elif time.monotonic() >= next_claim and len(self.inflight) < self.processes:
                try:
                    idle = self._fill()
                except OperationalError as e:
                    if self.once:
                        raise DatabaseError(f"lost the database while claiming jobs: {e.orig}") from None
                    # Daemon: ride out a database restart; jobs in hand keep their leases meanwhile.
                    self.log.warning("database unavailable, retrying", error=str(e.orig), in_s=self.ts.poll_seconds)
                    idle = True
                if idle:
                    if not self.inflight:
                        if self.once:
                            return
                        self.stop.wait(self.ts.poll_seconds)
                        continue
                    next_claim = time.monotonic() + self.ts.poll_seconds
            if self.inflight:
                done, _ = wait(list(self.inflight), timeout=tick, return_when=FIRST_COMPLETED)
                for fut in done:
                    self._finish(fut)
                if done:
                    next_claim = 0.0
                self._renew()

    def _fill(self) -> bool:
        """Claim jobs up to one per process. True when the queue had nothing due."""
        while len(self.inflight) < self.processes and not self.stop.is_set():
            claim = jobs.claim_next(
                self.factory, self.id, lease_seconds=self.ts.lease_seconds, max_attempts=self.ts.max_attempts
            )
            if claim is None:
                return True
            self._start(claim)
        return False

    def _start(self, claim: jobs.Claim) -> None:
        from recordings.models import Recording
        from recordings.store import recording_path

        with self.factory() as s:
            rec = s.get(Recording, claim.recording_id)
        if rec is None or rec.deleted_at is not None:
            why = "recording row is gone" if rec is None else f"recording was deleted at {rec.deleted_at.isoformat()}"
            self._failed(claim, why, permanent=True)
            return
        path = recording_path(self.settings.storage, rec)
        if not path.is_file():
            self._failed(claim, f"stored recording file is missing: {path}", permanent=True)
            return
        assert self.pool is not None
        fut = self.pool.submit(_transcribe, str(path), rec.sha256, rec.channels)
        self.inflight[fut] = _Running(
            claim, rec.id, str(path), renew_at=time.monotonic() + self.ts.lease_seconds / 3, pool=self.pool
        )
        self.log.info("job started", job=claim.job_id, recording=rec.id, attempt=claim.attempt, file=str(path))

    def _finish(self, fut: Future[Any]) -> None:
        from transcription.engine import AudioError, ModelError

        run = self.inflight.pop(fut)
        claim = run.claim
        try:
            results = fut.result()
        except AudioError as e:
            self._failed(claim, str(e), permanent=True)
            return
        except ModelError as e:
            self.fatal = e
            self._release(claim)
            return
        except BrokenProcessPool as e:
            if self.stop.is_set():
                self._release(claim)
            else:
                self._failed(claim, f"worker process died while transcribing ({e})", permanent=False)
            self._replace_pool(run.pool)
            return
        except Exception as e:  # noqa: BLE001 - any other error is worth a retry
            self._failed(claim, f"{e.__class__.__name__}: {e}", permanent=False)
            return
        try:
            outcome = pipeline.store_result(self.factory, claim, results, self.settings)
        except Exception as e:  # noqa: BLE001 - e.g. database trouble: retry later
            self._failed(claim, f"storing the transcript failed: {e.__class__.__name__}: {e}", permanent=False)
            return
        if outcome is None:
            self.stats.outcome[claim.job_id] = "lost"
            self.log.warning("job lease lost, result discarded", job=claim.job_id, attempt=claim.attempt)
            return
        self.stats.done += 1
        self.stats.outcome[claim.job_id] = "done"
        self.log.info(
            "job done",
            job=claim.job_id,
            recording=run.recording_id,
            attempt=claim.attempt,
            transcript=outcome.transcript_id,
            case=outcome.case_number,
            case_created=outcome.case_created,
            channels=len(results),
            audio_s=round(results[0].duration, 2),
            elapsed_s=round(sum(r.elapsed for r in results), 2),
            rtf=round(sum(r.elapsed for r in results) / results[0].duration, 3) if results[0].duration else None,
            confidence=round(results[0].confidence, 3) if results[0].confidence is not None else None,
            model=results[0].model,
        )

    def _failed(self, claim: jobs.Claim, error: str, *, permanent: bool) -> None:
        try:
            state = jobs.record_failure(
                self.factory,
                claim,
                error,
                permanent=permanent,
                max_attempts=self.ts.max_attempts,
                backoff_seconds=self.ts.backoff_seconds,
            )
        except OperationalError as e:
            # Cannot record it now: the job stays running and is taken back when its lease expires.
            self.log.error("could not record a job failure", job=claim.job_id, error=error, db_error=str(e.orig))
            self.stats.outcome[claim.job_id] = "lost"
            return
        self.stats.outcome[claim.job_id] = state or "lost"
        if state == "failed":
            self.stats.failed += 1
        elif state == "queued":
            self.stats.requeued += 1
        retry_in = (
            jobs.backoff_delay(claim.attempt, self.ts.backoff_seconds) if state == "queued" else None
        )
        self.log.warning(
            "job failed",
            job=claim.job_id,
            recording=claim.recording_id,
            attempt=claim.attempt,
            state=state,
            permanent=permanent,
            retry_in_s=retry_in,
            error=error,
        )

    def _release(self, claim: jobs.Claim) -> None:
        if jobs.release(self.factory, claim):
            self.stats.released += 1
            self.stats.outcome[claim.job_id] = "released"
            self.log.info("job released", job=claim.job_id, attempt=claim.attempt)

    def _release_all(self) -> None:
        for run in list(self.inflight.values()):
            self._release(run.claim)
        self.inflight.clear()
        self._kill_pool()

    def _renew(self) -> None:
        now = time.monotonic()
        for run in self.inflight.values():
            if run.lost or now < run.renew_at:
                continue
            run.renew_at = now + self.ts.lease_seconds / 3
            try:
                ok = jobs.renew_lease(self.factory, run.claim, lease_seconds=self.ts.lease_seconds)
            except Exception as e:  # noqa: BLE001 - database hiccup: try again next tick
                self.log.warning("lease renewal failed", job=run.claim.job_id, error=str(e))
                continue
            if not ok:
                run.lost = True
                self.log.warning("job lease lost", job=run.claim.job_id, attempt=run.claim.attempt)

    def _replace_pool(self, broken: ProcessPoolExecutor) -> None:
        # Every future of a broken pool fails with BrokenProcessPool; replace the pool once.
        if broken is self.pool:
            self.log.warning("worker process died, starting a new pool")
            broken.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()

    def _kill_pool(self) -> None:
        pool, self.pool = self.pool, None
        if pool is None:
            return
        # ProcessPoolExecutor (3.11) has no public way to stop a task in progress.
        for proc in list(getattr(pool, "_processes", {}).values()):
            if proc.is_alive():
                proc.kill()
        pool.shutdown(wait=True, cancel_futures=True)

    def _shutdown(self) -> None:
        if self.pool is not None:
            if self.inflight:
                self._release_all()
            else:
                self.pool.shutdown(wait=True, cancel_futures=True)
                self.pool = None


def run_worker(
    ctx: Context,
    *,
    once: bool,
    processes: int | None = None,
    grace: float = 20.0,
    model: Path | None = None,
    engine_factory: EngineFactory | None = None,
    install_signals: bool = True,
) -> int:
    from transcription.engine import locate_model

    ctx.sessions  # noqa: B018 - the schema check, with its `hotline db upgrade` hint
    model_path = locate_model(ctx.settings.transcription, model)
    worker = Worker(
        ctx,
        processes=processes or ctx.settings.transcription.processes,
        once=once,
        grace=grace,
        model_path=model_path,
        engine_factory=engine_factory,
        install_signals=install_signals,
    )
    return worker.run()
