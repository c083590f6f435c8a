"""`kill -9` in the middle of `hotline recordings import`: rows and files never part company.

Real import processes are SIGKILLed at moments spread over a whole import (start-up,
probe, conversion, rename, commit), plus a few killed the instant their file appears in
the store (between rename and commit, the one window where a file exists without its
committed row). Before recovery no row may lack its file; after the next import's
recover step (and an explicit recover) every row has its intact file, every file its
row, and nothing temporary is left. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import collections
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from config.context import Context
from config.db import transaction
from recordings.models import Recording
from recordings.store import INCOMING, recording_path, recover, stored_keys
from transcription.models import TranscriptionJob

SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "speech"
HOTLINE = str(Path(sys.executable).parent / "hotline")
RECEIVED = "2026-12-06T12:00:00+00:00"
STORING_KILLS = 9
KILLS_ON_RENAME = 3


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About three minutes of 44.1 kHz stereo speech (~30 MB): conversion takes a noticeable while."""
    out = tmp_path_factory.mktemp("big") / "long_message.wav"
    subprocess.run(
        ["sox", str(SPEECH / "tts_en_complaint_16k.wav"), "-r", "44100", "-c", "2", str(out), "repeat", "21"],
        check=True,
        capture_output=True,
    )
    return out


def _rows(ctx: Context) -> tuple[list[Recording], set[int]]:
    with ctx.sessions() as s:
        return list(s.scalars(select(Recording))), {j.recording_id for j in s.scalars(select(TranscriptionJob))}


def _rows_have_files(ctx: Context) -> list[Recording]:
    """Holds at every moment, even before recovery: no row without its intact file and its job."""
    rows, jobs = _rows(ctx)
    for r in rows:
        data = recording_path(ctx.settings.storage, r).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r.sha256, f"recording {r.id}: file differs from its row"
        assert r.id in jobs, f"recording {r.id} has no transcription job"
    return rows


def _fully_consistent(ctx: Context) -> list[Recording]:
    rows = _rows_have_files(ctx)
    assert set(stored_keys(ctx.settings.storage)) == {r.storage_key for r in rows}, "a stored file has no row"
    incoming = Path(ctx.settings.storage.root) / INCOMING
    assert sorted(os.listdir(incoming)) == [], "temporary files left after recover"
    return rows


def _start(big: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [HOTLINE, "recordings", "import", str(big), "--caller", "13800138000", "--received-at", RECEIVED],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(proc: subprocess.Popen[bytes], cond, poll: float = 0.001) -> None:  # type: ignore[no-untyped-def]
    """Poll until cond() holds or the process has exited."""
    while proc.poll() is None:
        try:
            if cond():
                return
        except FileNotFoundError:
            pass
        time.sleep(poll)


def _phase(ctx: Context, incoming: Path, day: Path, before: set[str], leftovers: set[str]) -> str:
    """Where the killed import stood, seen from the file system right after the kill."""
    new = set(os.listdir(day)) - before if day.is_dir() else set()
    names = set(os.listdir(incoming)) - leftovers
    if new:
        with ctx.sessions() as s:
            keys = {f"2026/12/06/{n}" for n in new}
            committed = s.scalars(select(Recording.id).where(Recording.storage_key.in_(keys))).first() is not None
        return "after commit" if committed else "renamed, not committed"
    if any(n.endswith(".part") for n in names):
        return "converting (part written)"
    if any(n.endswith(".intent") for n in names):
        return "intent taken"
    return "start-up / probe"


def test_kill_9_during_import_keeps_rows_and_files_together(
    ctx: Context, env: dict[str, str], big_source: Path
) -> None:
    storage = ctx.settings.storage
    root = Path(storage.root)
    incoming, day = root / INCOMING, root / "2026" / "12" / "06"

    # Calibrate on one uninterrupted import: when its intent appears, when it is done.
    t0 = time.monotonic()
    first = _start(big_source, env)
    _wait_for(first, lambda: incoming.is_dir() and any(n.endswith(".intent") for n in os.listdir(incoming)))
    t_store = time.monotonic() - t0
    _, err = first.communicate(timeout=300)
    t_done = time.monotonic() - t0
    assert first.returncode == 0, err.decode()
    storing = max(t_done - t_store, 0.05)

    outcomes: collections.Counter[str] = collections.Counter()
    # Kill moments: a few during start-up (fixed delays), most spread over the storing phase
    # (timed from the moment the intent appears, since start-up time varies with machine load),
    # and a few the instant the file lands in the store (rename done, commit not yet).
    plan: list[tuple[str, float]] = [("startup", d) for d in (0.05, 0.3, 0.8)]
    plan += [("storing", storing * (i + 0.5) / STORING_KILLS) for i in range(STORING_KILLS)]
    plan += [("rename", 0.0)] * KILLS_ON_RENAME
    for anchor, delay in plan:
        before, leftovers = set(os.listdir(day)), set(os.listdir(incoming))
        proc = _start(big_source, env)

        def own_intent() -> bool:  # leftovers of the previous kill are this import's to recover
            return any(n.endswith(".intent") and n not in leftovers for n in os.listdir(incoming))

        if anchor == "startup":
            time.sleep(delay)
        elif anchor == "storing":
            _wait_for(proc, own_intent)
            time.sleep(delay)
        else:
            _wait_for(proc, lambda: set(os.listdir(day)) != before, poll=0.0002)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        if proc.returncode == 0:
            outcomes["finished before the kill"] += 1
        else:
            assert proc.returncode == -signal.SIGKILL
            outcomes[_phase(ctx, incoming, day, before, leftovers)] += 1
        expected = len(_rows_have_files(ctx))  # never a row without its file, even before any recovery

    print(f"\none import: intent after {t_store:.2f} s, done after {t_done:.2f} s; kills landed: {dict(outcomes)}")
    with transaction(ctx.sessions) as s:
        recover(s, storage)
    rows = _fully_consistent(ctx)
    assert len(rows) == expected

    after = subprocess.run(
        [HOTLINE, "recordings", "import", str(SPEECH / "tts_en_complaint_8k.wav")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert after.returncode == 0, after.stdout + after.stderr
    assert len(_fully_consistent(ctx)) == expected + 1
    verify = subprocess.run(
        [HOTLINE, "recordings", "verify"], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
