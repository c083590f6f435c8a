"""Job → transcript → draft case: the pipeline transaction, the worker loop, and end to end.

The worker-loop tests use a stand-in engine (FakeEngine below, loaded in the real spawn
worker processes) so the queue paths run in seconds; the end-to-end tests run the real
console scripts with real Vosk on real speech.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cases.models import Case, CaseEvent
from config.db import transaction
from recordings.models import Recording
from transcription import jobs, pipeline
from transcription.engine import TranscriptResult, Word
from transcription.models import Transcript, TranscriptionJob
from transcription.worker import Worker

SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "speech"
KO_CLIP = SPEECH / "ko-zeroth" / "104_003_0019_8k.wav"
KO_REF = "지난해 삼 월 김 전 장관의 동료 인 장동 련 홍익대 교수가 민간 자문단 장으로 위촉 되면서 본격적인 공모 와 개발 작업에 들어갔다"
CALLER = "13800138000"

# --- a stand-in engine for the worker-loop tests (imported by the spawned processes) ---


class FakeEngine:
    name = "fake-model"

    def __init__(self, model_path: Path, feed_rate: str) -> None:
        self.model_path = model_path

    def transcribe(self, path: Path, *, channel: int | None = None, on_progress=None) -> TranscriptResult:  # type: ignore[no-untyped-def]
        if "flaky" in path.name:
            raise RuntimeError("decoder hiccup")
        if "slow" in path.name:
            time.sleep(16)  # well beyond than the 10 s lease of the renewal test
        words = [Word("我的电话是", 0.0, 0.8, 0.95), Word("13912345678", 0.8, 2.0, 0.52)]
        return TranscriptResult(
            text=f"我的电话是13912345678 {path.stem}", words=words, duration=2.0, model=self.name, elapsed=0.01
        )


def fake_result(text: str = "我的电话是13912345678 我住在朝阳区建国路88号") -> TranscriptResult:
    words = [Word("我的电话是", 0.0, 0.8, 0.95), Word("13912345678", 0.8, 2.0, 0.42), Word("建国路", 2.0, 2.5, 0.9)]
    return TranscriptResult(text=text, words=words, duration=3.0, model="fake-model", elapsed=0.5)


def add_recording(ctx, name: str = "vm", *, src: Path = KO_CLIP, received_at: dt.datetime | None = None):  # type: ignore[no-untyped-def]
    """A recording row with its file in the storage root, and its queued job (as an import makes)."""
    key = f"test/{name}-{uuid.uuid4().hex[:8]}.wav"
    path = Path(ctx.settings.storage.root) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, path)
    with transaction(ctx.sessions) as s:
        rec = Recording(
            storage_key=key,
            sample_rate=8000,
            duration=10.9,
            bytes=path.stat().st_size,
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            caller=CALLER,
            received_at=received_at or dt.datetime(2026, 12, 6, 14, 30, tzinfo=dt.UTC),
        )
        s.add(rec)
        s.flush()
        job = jobs.enqueue_for_recording(s, rec)
    return rec, job.id, path


def claim(ctx, worker: str = "w1"):  # type: ignore[no-untyped-def]
    return jobs.claim_next(ctx.sessions, worker, lease_seconds=600, max_attempts=3)


def count(ctx, model) -> int:  # type: ignore[no-untyped-def]
    with ctx.sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


# --- the pipeline transaction -----------------------------------------------------------


def test_store_result_writes_transcript_and_draft_case(ctx) -> None:  # type: ignore[no-untyped-def]
    rec, job_id, _ = add_recording(ctx)
    c = claim(ctx)
    out = pipeline.store_result(ctx.sessions, c, [fake_result()], ctx.settings)
    assert out is not None and out.case_created
    assert out.case_number == "20261206-0001"
    with ctx.sessions() as s:
        job = s.get(TranscriptionJob, job_id)
        assert (job.state, job.model, job.lease_until) == ("done", "fake-model", None)
        tr = s.get(Transcript, out.transcript_id)
        assert (tr.recording_id, tr.job_id, tr.model, tr.duration, tr.elapsed) == (rec.id, job_id, "fake-model", 3.0, 0.5)
        assert tr.confidence == pytest.approx((0.95 + 0.42 + 0.9) / 3)
        assert [w["word"] for w in tr.words] == ["我的电话是", "13912345678", "建国路"]
        case = s.get(Case, out.case_id)
        assert (case.status, case.channel, case.content) == ("draft", "voicemail", tr.text)
        assert (case.caller_number, case.complainant_phone) == (CALLER, "13912345678")
        assert case.received_at == rec.received_at
        assert case.address and case.address.startswith("朝阳区建国路")
        assert case.extracted["phones"] == ["13912345678"]
        assert [w["word"] for w in case.extracted["low_confidence"]] == ["13912345678"]
        assert (case.source_recording_id, case.source_transcript_id) == (rec.id, tr.id)
        [ev] = s.scalars(select(CaseEvent)).all()
        assert (ev.action, ev.actor) == ("created_from_voicemail", "pipeline")
        assert ev.data == {"recording_id": rec.id, "transcript_id": tr.id, "job_id": job_id}


def test_crash_inside_the_transaction_leaves_nothing_then_retry_makes_one_case(ctx, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rec, job_id, _ = add_recording(ctx)
    c = claim(ctx)

    def crash(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError("disk full while creating the case")

    monkeypatch.setattr(pipeline, "create_voicemail_draft", crash)
    with pytest.raises(OSError):
        pipeline.store_result(ctx.sessions, c, [fake_result()], ctx.settings)
    monkeypatch.undo()
    assert count(ctx, Transcript) == 0 and count(ctx, Case) == 0
    with ctx.sessions() as s:
        assert s.get(TranscriptionJob, job_id).state == "running"  # still ours: rolled back with the rest
    assert jobs.record_failure(ctx.sessions, c, "OSError", permanent=False, max_attempts=3, backoff_seconds=0) == "queued"
    c2 = claim(ctx, "w2")
    assert pipeline.store_result(ctx.sessions, c2, [fake_result()], ctx.settings).case_created
    assert count(ctx, Transcript) == 1 and count(ctx, Case) == 1


def test_rerun_for_the_same_recording_makes_no_second_case(ctx) -> None:  # type: ignore[no-untyped-def]
    rec, job_id, _ = add_recording(ctx)
    first = pipeline.store_result(ctx.sessions, claim(ctx), [fake_result()], ctx.settings)
    # The same job stored twice (a retry after a crash that happened after the commit).
    with ctx.sessions() as s:
        done_claim = jobs.Claim(job_id, rec.id, 1, "w1")
    assert pipeline.store_result(ctx.sessions, done_claim, [fake_result()], ctx.settings) is None
    # The recording queued again (e.g. by hand, with a better model): new transcript, same case.
    with transaction(ctx.sessions) as s:
        jobs.enqueue_for_recording(s, s.get(Recording, rec.id))
    again = pipeline.store_result(ctx.sessions, claim(ctx, "w2"), [fake_result("second text")], ctx.settings)
    assert again is not None and not again.case_created
    assert again.case_id == first.case_id and again.transcript_id != first.transcript_id
    assert count(ctx, Case) == 1 and count(ctx, CaseEvent) == 1 and count(ctx, Transcript) == 2
    with ctx.sessions() as s:
        assert s.get(Case, first.case_id).content == fake_result().text  # the draft is not overwritten


def test_result_of_a_lost_lease_is_discarded(ctx) -> None:  # type: ignore[no-untyped-def]
    add_recording(ctx)
    stale = claim(ctx, "slow")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=601)
    assert jobs.claim_next(ctx.sessions, "w2", lease_seconds=600, max_attempts=3, now=later) is not None
    assert pipeline.store_result(ctx.sessions, stale, [fake_result()], ctx.settings) is None
    assert count(ctx, Transcript) == 0 and count(ctx, Case) == 0


# --- the worker loop (real worker processes, stand-in engine) ----------------------------


def run_worker(ctx, processes: int = 2) -> tuple[int, Worker]:  # type: ignore[no-untyped-def]
    w = Worker(
        ctx, processes=processes, once=True, model_path=Path("unused"), engine_factory=FakeEngine, install_signals=False
    )
    return w.run(), w


def job_row(ctx, job_id: int) -> TranscriptionJob:  # type: ignore[no-untyped-def]
    with ctx.sessions() as s:
        return s.get(TranscriptionJob, job_id)


def test_worker_once_drains_the_queue(ctx) -> None:  # type: ignore[no-untyped-def]
    ids = [add_recording(ctx, f"vm{i}")[1] for i in range(5)]
    code, w = run_worker(ctx)
    assert code == 0
    assert w.stats.done == 5
    assert all(job_row(ctx, j).state == "done" for j in ids)
    with ctx.sessions() as s:
        numbers = sorted(s.scalars(select(Case.number)))
    assert numbers == [f"20261206-{i:04d}" for i in range(1, 6)]


def test_worker_missing_file_fails_at_once_with_its_reason(ctx) -> None:  # type: ignore[no-untyped-def]
    _, gone, path = add_recording(ctx, "gone")
    _, ok, _ = add_recording(ctx, "ok")
    path.unlink()
    code, _ = run_worker(ctx)
    assert code == 1  # a job of this run did not end done
    j = job_row(ctx, gone)
    assert (j.state, j.attempts) == ("failed", 1)
    assert "missing" in j.last_error and str(path) in j.last_error
    assert job_row(ctx, ok).state == "done"
    assert count(ctx, Case) == 1


def test_worker_altered_file_fails_at_once(ctx) -> None:  # type: ignore[no-untyped-def]
    _, jid, path = add_recording(ctx, "altered")
    with path.open("r+b") as f:
        f.seek(2000)
        f.write(b"\x00" * 64)
    code, _ = run_worker(ctx, processes=1)
    assert code == 1
    j = job_row(ctx, jid)
    assert (j.state, j.attempts) == ("failed", 1)
    assert "altered" in j.last_error


def test_worker_transient_errors_retry_until_max_attempts(ctx) -> None:  # type: ignore[no-untyped-def]
    ctx.settings.transcription.backoff_seconds = 0  # due again at once: retried within this run
    ctx.settings.transcription.max_attempts = 2
    _, jid, _ = add_recording(ctx, "flaky")
    code, w = run_worker(ctx, processes=1)
    assert code == 1
    j = job_row(ctx, jid)
    assert (j.state, j.attempts) == ("failed", 2)
    assert j.last_error == "RuntimeError: decoder hiccup"
    assert w.stats.requeued == 1 and w.stats.failed == 1
    assert count(ctx, Case) == 0


def test_worker_renews_the_lease_of_a_long_job(ctx) -> None:  # type: ignore[no-untyped-def]
    import threading

    ctx.settings.transcription.lease_seconds = 10  # renewed every ~3.3 s
    _, jid, _ = add_recording(ctx, "slow")
    w = Worker(ctx, processes=1, once=True, model_path=Path("unused"), engine_factory=FakeEngine, install_signals=False)
    codes: list[int] = []
    t = threading.Thread(target=lambda: codes.append(w.run()))
    t.start()
    try:
        wait_for(lambda: job_row(ctx, jid).state == "running", 60, "the job to be claimed")
        first_lease = job_row(ctx, jid).lease_until
        wait_for(lambda: dt.datetime.now(dt.UTC) > first_lease + dt.timedelta(seconds=1), 30, "the first lease to pass")
        j = job_row(ctx, jid)
        assert j.state == "running"
        assert j.lease_until > first_lease  # renewed while the job ran
        assert jobs.claim_next(ctx.sessions, "other", lease_seconds=10, max_attempts=3) is None
    finally:
        t.join(120)
    assert codes == [0]
    j = job_row(ctx, jid)
    assert (j.state, j.attempts) == ("done", 1)


# --- end to end: the real console scripts, real Vosk, real speech -------------------------


def cer(hyp: str, ref: str) -> float:
    from rapidfuzz.distance import Levenshtein

    h, r = "".join(hyp.split()), "".join(ref.split())
    return Levenshtein.distance(h, r) / len(r)


def model_env(ko_model: Path, **more: str) -> dict[str, str]:
    return {"HOTLINE_TRANSCRIPTION__MODEL_PATH": str(ko_model), **more}


@pytest.mark.slow
def test_import_then_worker_then_cases_list(ctx, hotline, ko_model) -> None:  # type: ignore[no-untyped-def]
    extra = model_env(ko_model)
    hotline("recordings", "import", str(KO_CLIP), "--caller", CALLER, check=True, extra_env=extra)
    run = hotline("worker", "--once", check=True, extra_env=extra)
    assert "job done" in run.stderr

    listed = json.loads(hotline("cases", "list", "--json", check=True).stdout)
    assert len(listed) == 1
    case = listed[0]
    assert (case["status"], case["channel"], case["caller_number"]) == ("draft", "voicemail", CALLER)
    assert case["complainant_phone"] == CALLER  # nothing spoken: the caller's number is the contact
    assert case["content"].strip()
    assert cer(case["content"], KO_REF) <= 0.28, case["content"]  # measured 0.196; bare 8 kHz loop averages 0.278
    with ctx.sessions() as s:
        tr = s.get(Transcript, case["source_transcript_id"])
        assert tr.text == case["content"] and tr.words and 0 < tr.confidence <= 1
        assert tr.duration == pytest.approx(10.93, abs=0.1)
        job = s.scalars(select(TranscriptionJob)).one()
        assert (job.state, job.attempts) == ("done", 1)
    table = hotline("cases", "list", check=True).stdout
    assert case["number"] in table and CALLER in table

    # Nothing left: a second run is a no-op that succeeds.
    assert hotline("worker", "--once", extra_env=extra).returncode == 0
    assert count(ctx, Case) == 1


@pytest.mark.slow
def test_worker_refuses_to_start_without_a_model(ctx, hotline, tmp_path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "no-model"
    empty.mkdir()
    r = hotline("worker", "--once", "--model", str(empty))
    assert r.returncode == 1
    assert r.stderr.startswith("hotline: error:") and "Traceback" not in r.stderr


def long_clip(tmp_path: Path) -> Path:
    """About 95 s of real Korean speech: the ten ko-zeroth 8 kHz clips one after another."""
    import wave

    out = tmp_path / "long_8k.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        for clip in sorted((SPEECH / "ko-zeroth").glob("*_8k.wav")):
            with wave.open(str(clip)) as r:
                assert (r.getframerate(), r.getnchannels(), r.getsampwidth()) == (8000, 1, 2)
                w.writeframes(r.readframes(r.getnframes()))
    return out


def start_daemon(env: dict[str, str], extra: dict[str, str], *args: str) -> subprocess.Popen[str]:
    import sys

    hotline_bin = Path(sys.executable).parent / "hotline"
    return subprocess.Popen(
        [str(hotline_bin), "worker", *args],
        env={**os.environ, **env, **extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_worker_killed_mid_job_is_taken_back_after_its_lease(ctx, hotline, env, ko_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The lease leaves room for a `hotline worker --once` to start (several seconds on a loaded machine).
    extra = model_env(ko_model, HOTLINE_TRANSCRIPTION__LEASE_SECONDS="30", HOTLINE_TRANSCRIPTION__POLL_SECONDS="0.5")
    hotline("recordings", "import", str(long_clip(tmp_path)), "--caller", CALLER, check=True, extra_env=extra)
    with ctx.sessions() as s:
        job_id = s.scalars(select(TranscriptionJob.id)).one()

    proc = start_daemon(env, extra, "--processes", "1")
    try:
        wait_for(lambda: job_row(ctx, job_id).state == "running", 120, "the worker to claim the job")
        vosk_pids = [c for c in children(proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        time.sleep(1.0)  # let it get into the decoding
        assert job_row(ctx, job_id).state == "running", "the job finished before it could be interrupted"
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert vosk_pids
    wait_for(lambda: not any(alive(p) for p in vosk_pids), 30, "the orphaned Vosk process to die with its parent")

    j = job_row(ctx, job_id)
    assert (j.state, j.attempts) == ("running", 1)
    # Within the lease nobody takes it: the worker might only be slow.
    if dt.datetime.now(dt.UTC) < j.lease_until - dt.timedelta(seconds=15):
        early = hotline("worker", "--once", check=True, extra_env=extra)
        assert "job started" not in early.stderr
        assert job_row(ctx, job_id).state == "running"
    wait_for(lambda: dt.datetime.now(dt.UTC) > j.lease_until, 60, "the lease to expire")

    hotline("worker", "--once", check=True, extra_env=extra)
    j = job_row(ctx, job_id)
    assert (j.state, j.attempts) == ("done", 2)
    assert count(ctx, Case) == 1 and count(ctx, Transcript) == 1


@pytest.mark.slow
def test_sigterm_releases_the_job_in_hand(ctx, hotline, env, ko_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    extra = model_env(ko_model, HOTLINE_TRANSCRIPTION__POLL_SECONDS="0.5")
    hotline("recordings", "import", str(long_clip(tmp_path)), "--caller", CALLER, check=True, extra_env=extra)
    with ctx.sessions() as s:
        job_id = s.scalars(select(TranscriptionJob.id)).one()
    proc = start_daemon(env, extra, "--processes", "1", "--grace", "0")
    try:
        wait_for(lambda: job_row(ctx, job_id).state == "running", 120, "the worker to claim the job")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    j = job_row(ctx, job_id)
    if j.state == "done":  # pragma: no cover - only if decoding beat the signal
        pytest.fail("the job finished before SIGTERM arrived; make the clip longer")
    assert (j.state, j.attempts, j.worker, j.lease_until) == ("queued", 0, None, None)
    assert "job released" in err


# --- operator conversations: one transcript per channel, no draft ----------------------


def test_conversation_is_transcribed_per_channel_and_makes_no_draft(ctx, tmp_path, ko_model) -> None:  # type: ignore[no-untyped-def]
    """Left = caller (real speech), right = operator (a quiet line): who said what stays apart."""
    import array
    import wave

    from transcription.engine import Engine

    with wave.open(str(KO_CLIP)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        rate, left = w.getframerate(), array.array("h", w.readframes(w.getnframes()))
    both = array.array("h", bytes(4 * len(left)))
    both[0::2] = left  # right channel stays zeros
    stereo_path = tmp_path / "conversation.wav"
    with wave.open(str(stereo_path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(both.tobytes())
    rec, _job, path = add_recording(ctx, "conv", src=stereo_path)
    with transaction(ctx.sessions) as s:
        row = s.get(Recording, rec.id)
        row.kind, row.channels = "conversation", 2
    results = pipeline.transcribe_file(Engine(ko_model), path, rec.sha256, channels=2)
    assert len(results) == 2
    caller_cer = cer(results[0].text, KO_REF)
    print(f"\nconversation: caller channel CER {caller_cer:.3f}, operator channel {results[1].text!r}")
    assert caller_cer < 0.35, results[0].text
    assert len(results[1].text.replace(" ", "")) < 3, results[1].text

    out = pipeline.store_result(ctx.sessions, claim(ctx), results, ctx.settings)
    assert out is not None and out.case_id is None and not out.case_created
    with ctx.sessions() as s:
        rows = s.scalars(select(Transcript).where(Transcript.recording_id == rec.id).order_by(Transcript.channel)).all()
        assert [(t.channel, t.text) for t in rows] == [(0, results[0].text), (1, results[1].text)]
        assert s.scalar(select(func.count()).select_from(Case)) == 0
