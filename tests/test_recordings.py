"""The recording store: formats, canonical copies, checksums, jobs, bad input, verify (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
import wave
from pathlib import Path

import pytest
from sqlalchemy import func, select

from config.context import Context
from config.db import transaction
from recordings.audio import AudioError
from recordings.models import Recording
from recordings.store import INCOMING, recording_path, recover, store_recording, stored_keys
from transcription.models import TranscriptionJob

SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "speech"
CLIP8 = SPEECH / "tts_en_complaint_8k.wav"
CLIP16 = SPEECH / "tts_en_complaint_16k.wav"


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each input format made from real speech with the machine's ffmpeg and sox."""
    d = tmp_path_factory.mktemp("sources")
    out = {
        "pcm8k": d / "pcm8k.wav",
        "ulaw": d / "ulaw.wav",
        "alaw": d / "alaw.wav",
        "mp3_48k_stereo": d / "stereo48k.mp3",
        "m4a": d / "aac.m4a",
        "amr_nb": d / "narrow.amr",
        "pcm44k_stereo": d / "cd.wav",
    }
    shutil.copy(CLIP8, out["pcm8k"])
    _run("sox", str(CLIP8), "-e", "u-law", str(out["ulaw"]))
    _run("sox", str(CLIP8), "-e", "a-law", str(out["alaw"]))
    _run("ffmpeg", "-v", "error", "-i", str(CLIP16), "-ar", "48000", "-ac", "2", "-b:a", "128k", str(out["mp3_48k_stereo"]))
    _run("ffmpeg", "-v", "error", "-i", str(CLIP16), "-c:a", "aac", "-b:a", "64k", str(out["m4a"]))
    # ffmpeg here decodes AMR (amrnb, amrwb) but has no AMR encoder; sox (libopencore) writes AMR-NB.
    _run("sox", str(CLIP8), "-t", "amr-nb", str(out["amr_nb"]))
    _run("sox", str(CLIP16), "-r", "44100", "-c", "2", str(out["pcm44k_stereo"]))
    return out


# (source, codec ffprobe reports, stored rate)
FORMATS = [
    ("pcm8k", "wav/pcm_s16le", 8000),
    ("ulaw", "wav/pcm_mulaw", 8000),
    ("alaw", "wav/pcm_alaw", 8000),
    ("mp3_48k_stereo", "mp3/mp3", 16000),
    ("m4a", "mov/aac", 16000),
    ("amr_nb", "amr/amr_nb", 8000),
    ("pcm44k_stereo", "wav/pcm_s16le", 16000),
]
CLIP_SECONDS = 65717 / 8000


def _store(ctx: Context, src: Path, **kw) -> Recording:  # type: ignore[no-untyped-def]
    with transaction(ctx.sessions) as s:
        return store_recording(s, ctx.settings.storage, src, hooks=ctx.hooks.get("recording_stored", []), **kw)


def _assert_consistent(ctx: Context) -> list[Recording]:
    """The invariant: every row has its intact file, every file its row, nothing temporary left."""
    storage = ctx.settings.storage
    with ctx.sessions() as s:
        rows = list(s.scalars(select(Recording)))
        jobs = {j.recording_id for j in s.scalars(select(TranscriptionJob))}
    files = set(stored_keys(storage))
    assert files == {r.storage_key for r in rows}
    for r in rows:
        data = recording_path(storage, r).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r.sha256 and len(data) == r.bytes
        assert r.id in jobs, f"recording {r.id} has no transcription job"
    incoming = Path(storage.root) / INCOMING
    assert not incoming.exists() or list(incoming.iterdir()) == []
    return rows


@pytest.mark.parametrize(("name", "codec", "rate"), FORMATS, ids=[f[0] for f in FORMATS])
def test_import_each_format(ctx: Context, sources: dict[str, Path], name: str, codec: str, rate: int) -> None:
    at = dt.datetime(2026, 12, 6, 22, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    rec = _store(ctx, sources[name], caller="13800138000", received_at=at, kind="voicemail")
    path = recording_path(ctx.settings.storage, rec)
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == rec.sha256
    assert rec.bytes == len(data) == path.stat().st_size
    with wave.open(str(path), "rb") as w:
        assert (w.getsampwidth(), w.getnchannels(), w.getframerate()) == (2, 1, rate)
        assert w.getcomptype() == "NONE"
        assert rec.duration == pytest.approx(w.getnframes() / rate)
    assert rec.duration == pytest.approx(CLIP_SECONDS, abs=0.35)  # codecs pad a few frames
    assert (rec.sample_rate, rec.channels, rec.format) == (rate, 1, "wav/pcm_s16le")
    assert rec.source_format is not None and rec.source_format.startswith(codec)
    assert rec.source_name == sources[name].name
    assert rec.storage_key.startswith("2026/12/06/") and rec.storage_key.endswith(".wav")
    with ctx.sessions() as s:
        row = s.get(Recording, rec.id)
        assert row is not None and row.received_at == at and row.received_at.tzinfo is not None
        assert row.caller == "13800138000" and row.kind == "voicemail"
        jobs = s.scalars(select(TranscriptionJob).where(TranscriptionJob.recording_id == rec.id)).all()
        assert [j.state for j in jobs] == ["queued"]
    _assert_consistent(ctx)


def test_canonical_pcm_is_the_source_samples(ctx: Context) -> None:
    """A 16-bit mono 8 kHz source is stored sample for sample (no resampling, no gain)."""
    rec = _store(ctx, CLIP8)
    with wave.open(str(CLIP8), "rb") as a, wave.open(str(recording_path(ctx.settings.storage, rec)), "rb") as b:
        assert a.readframes(a.getnframes()) == b.readframes(b.getnframes())


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp / "empty.wav"
    empty.write_bytes(b"")
    txt = tmp / "notes.wav"
    txt.write_text("来电人称住在幸福路12号，电话13800138000。\n" * 20, encoding="utf-8")
    truncated = tmp / "truncated.wav"
    truncated.write_bytes(CLIP16.read_bytes()[:40_000])
    header_only = tmp / "header_only.wav"
    header_only.write_bytes(CLIP16.read_bytes()[:30])
    zero = tmp / "zero.wav"
    with wave.open(str(zero), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
    cut_m4a = tmp / "cut.m4a"
    _run("ffmpeg", "-v", "error", "-i", str(CLIP16), "-c:a", "aac", "-movflags", "+faststart", str(tmp / "whole.m4a"))
    cut_m4a.write_bytes((tmp / "whole.m4a").read_bytes()[:20_000])
    return {
        "empty": (empty, "empty file"),
        "text": (txt, "not a readable audio file"),
        "truncated": (truncated, "truncated WAV"),
        "header_only": (header_only, "not a readable audio file"),
        "zero_length": (zero, "zero-length"),
        "cut_m4a": (cut_m4a, "truncated"),
        "missing": (tmp / "nowhere.wav", "no such file"),
    }


@pytest.mark.parametrize("case", ["empty", "text", "truncated", "header_only", "zero_length", "cut_m4a", "missing"])
def test_bad_input_leaves_nothing(ctx: Context, tmp_path: Path, case: str) -> None:
    src, reason = _bad_inputs(tmp_path)[case]
    with pytest.raises(AudioError) as err:
        _store(ctx, src)
    assert str(src) in str(err.value) and reason in str(err.value)
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Recording)) == 0
        assert s.scalar(select(func.count()).select_from(TranscriptionJob)) == 0
    root = Path(ctx.settings.storage.root)
    assert not root.exists() or [p for p in root.rglob("*") if p.is_file()] == []


def test_failing_hook_rolls_back_file_and_row(ctx: Context) -> None:
    def broken(session, rec):  # type: ignore[no-untyped-def]
        raise RuntimeError("queue down")

    with pytest.raises(RuntimeError), transaction(ctx.sessions) as s:
        store_recording(s, ctx.settings.storage, CLIP8, hooks=[broken])
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Recording)) == 0
    assert list(stored_keys(ctx.settings.storage)) == []
    assert list((Path(ctx.settings.storage.root) / INCOMING).iterdir()) == []


def test_caller_rollback_removes_the_file(ctx: Context) -> None:
    """The file follows the caller's transaction, even when the caller rolls back for its own reasons."""
    with ctx.sessions() as s:
        s.begin()
        rec = store_recording(s, ctx.settings.storage, CLIP8)
        assert recording_path(ctx.settings.storage, rec).exists()  # in place before the commit
        s.rollback()
    assert list(stored_keys(ctx.settings.storage)) == []
    assert list((Path(ctx.settings.storage.root) / INCOMING).iterdir()) == []


def test_recover_settles_leftovers(ctx: Context) -> None:
    """Hand-made crash states: renamed-but-uncommitted file, committed-but-intent-left, lone part."""
    storage = ctx.settings.storage
    kept = _store(ctx, CLIP8)
    incoming = Path(storage.root) / INCOMING
    # 1. a committed import whose process died before removing its intent
    (incoming / f"{Path(kept.storage_key).stem}.intent").write_text(json.dumps({"key": kept.storage_key}))
    # 2. a file renamed into place whose transaction never committed
    ghost_key = "2026/12/06/0c0ffee0-0000-4000-8000-000000000001.wav"
    (Path(storage.root) / ghost_key).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(CLIP8, Path(storage.root) / ghost_key)
    (incoming / "0c0ffee0-0000-4000-8000-000000000001.intent").write_text(json.dumps({"key": ghost_key}))
    # 3. killed while converting: intent (torn) and part
    (incoming / "0c0ffee0-0000-4000-8000-000000000002.intent").write_text('{"ke')
    (incoming / "0c0ffee0-0000-4000-8000-000000000002.part").write_bytes(b"RIFF")
    # 4. a part with no intent at all
    (incoming / "0c0ffee0-0000-4000-8000-000000000003.part").write_bytes(b"RIFF")
    with transaction(ctx.sessions) as s:
        assert recover(s, storage) == 3
    rows = _assert_consistent(ctx)
    assert [r.id for r in rows] == [kept.id]


def test_recover_skips_live_imports(ctx: Context) -> None:
    """An intent whose owner still holds its lock is someone's import in flight: left alone."""
    storage = ctx.settings.storage
    with ctx.sessions() as s:
        s.begin()
        rec = store_recording(s, storage, CLIP8, hooks=ctx.hooks["recording_stored"])
        with transaction(ctx.sessions) as other:
            assert recover(other, storage) == 0
        assert recording_path(storage, rec).exists()
        s.commit()
    _assert_consistent(ctx)


# ---------------------------------------------------------------- the CLI


def test_cli_import_reports_each_file_and_continues(ctx: Context, hotline, sources: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = _bad_inputs(tmp_path)
    files = [sources["ulaw"], bad["text"][0], sources["mp3_48k_stereo"], bad["truncated"][0]]
    proc = hotline("recordings", "import", *map(str, files), "--caller", "138 0013 8000", "--received-at", "2026-12-06T23:30:00")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(f"stored {files[0]}: recording ")
    assert lines[1].startswith("FAILED ") and str(files[1]) in lines[1] and "not a readable audio file" in lines[1]
    assert lines[2].startswith(f"stored {files[2]}: recording ")
    assert lines[3].startswith("FAILED ") and "truncated WAV" in lines[3]
    rows = _assert_consistent(ctx)
    assert len(rows) == 2
    # naive time = the centre's time zone (Asia/Shanghai, UTC+8): 23:30 local is 15:30 UTC
    assert {r.received_at for r in rows} == {dt.datetime(2026, 12, 6, 15, 30, tzinfo=dt.UTC)}
    assert {r.caller for r in rows} == {"13800138000"}
    assert {r.kind for r in rows} == {"voicemail"}
    ids = sorted(int(ln.split("recording ")[1].split()[0]) for ln in (lines[0], lines[2]))
    assert ids == sorted(r.id for r in rows)


def test_cli_bad_usage_exits_2(ctx: Context, hotline) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("recordings", "import", str(CLIP8), "--received-at", "6 Dec 2026")
    assert proc.returncode == 2 and "ISO 8601" in proc.stderr
    proc = hotline("recordings", "import", str(CLIP8), "--caller", "call me")
    assert proc.returncode == 2 and "phone number" in proc.stderr
    _assert_consistent(ctx)


def test_cli_unreachable_database(env: dict[str, str], hotline) -> None:  # type: ignore[no-untyped-def]
    proc = hotline(
        "recordings", "import", str(CLIP8),
        extra_env={"HOTLINE_DATABASE__URL": "postgresql://postgres@127.0.0.1:1/none?connect_timeout=3"},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "cannot reach the database" in proc.stderr and "Traceback" not in proc.stderr
    assert not Path(env["HOTLINE_STORAGE__ROOT"]).exists() or not any(Path(env["HOTLINE_STORAGE__ROOT"]).rglob("*.wav"))


def test_verify_clean_deleted_and_altered(ctx: Context, hotline, sources: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    storage = ctx.settings.storage
    a, b, c = (_store(ctx, sources[n]) for n in ("ulaw", "alaw", "amr_nb"))
    proc = hotline("recordings", "verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 ok, 0 missing, 0 altered" in proc.stdout

    recording_path(storage, a).unlink()
    p = recording_path(storage, b)
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x01  # one bit of one sample
    p.write_bytes(bytes(data))
    stray = Path(storage.root) / "2026" / "stray.wav"
    shutil.copy(CLIP8, stray)

    proc = hotline("recordings", "verify")
    assert proc.returncode == 1
    assert f"MISSING recording {a.id}:" in proc.stdout
    assert f"ALTERED recording {b.id}:" in proc.stdout
    assert "UNKNOWN file without a recording row" in proc.stdout and "stray.wav" in proc.stdout
    assert f"recording {c.id}" not in proc.stdout

    proc = hotline("recordings", "verify", "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["checked"] == 3 and report["ok"] == 1
    assert [m["id"] for m in report["missing"]] == [a.id]
    assert [x["id"] for x in report["altered"]] == [b.id]
    assert report["altered"][0]["expected_sha256"] == b.sha256 != report["altered"][0]["sha256"]
    assert report["orphans"] == ["2026/stray.wav"]
