"""Prompt segments rendered for real with espeak-ng and ffmpeg, human recordings kept, the start check."""

from __future__ import annotations

import array
import json
import os
import shutil
import wave
from pathlib import Path

import pytest

from config.settings import Settings, load_settings
from ivr.prompts import (
    CASE_STATUSES,
    CATALOGUE,
    HOLD_MUSIC,
    MANIFEST,
    SEGMENTS,
    PromptError,
    build_prompts,
    digit_keys,
    missing_prompts,
    prompt_path,
    prompt_problems,
)

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None, reason="espeak-ng and ffmpeg are needed"
)


def _settings(root: Path) -> Settings:
    return Settings.model_validate({"prompts": {"dir": str(root)}})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real build of the whole catalogue; tests copy it rather than render again."""
    root = tmp_path_factory.mktemp("prompts-built") / "prompts"
    report = build_prompts(_settings(root))
    assert len(report.rendered) == 2 * len(CATALOGUE) + 1 and not report.kept and not report.up_to_date
    assert report.rendered[-1] == root / HOLD_MUSIC  # the built-in melody, with the speech
    return root


@pytest.fixture
def prompts(built: Path, tmp_path: Path) -> Path:
    root = tmp_path / "prompts"
    shutil.copytree(built, root)
    return root


def _samples(path: Path) -> tuple[wave._wave_params, array.array[int]]:
    with wave.open(str(path), "rb") as w:
        params = w.getparams()
        data = array.array("h", w.readframes(w.getnframes()))
    return params, data


def test_catalogue_covers_the_call_flows() -> None:
    for key in ("greeting", "menu", "menu_language", "closed", "holiday", "closed_temporarily", "no_operator",
                "voicemail", "thank_you", "message_number", "case_not_found", "invalid_input", "goodbye",
                "recording_notice", "enter_case_number", "case_status"):
        assert key in SEGMENTS, key
    assert all(f"digit_{d}" in SEGMENTS for d in range(10))
    assert all(f"status_{s}" in SEGMENTS for s in CASE_STATUSES)
    assert "12389" in SEGMENTS["greeting"].text["zh"] and "12389" in SEGMENTS["greeting"].text["en"]
    assert "姓名、电话、地址和具体情况" in SEGMENTS["voicemail"].text["zh"] and "井号键" in SEGMENTS["voicemail"].text["zh"]
    for seg in CATALOGUE:  # every segment exists in both languages
        assert seg.text["zh"].strip() and seg.text["en"].strip(), seg.key
    assert digit_keys("20261122-0007")[:3] == ["digit_2", "digit_0", "digit_2"] and len(digit_keys("20261122-0007")) == 12


def test_build_renders_8khz_mono_16bit_speech(built: Path) -> None:
    settings = _settings(built)
    assert missing_prompts(settings) == [] and prompt_problems(settings) == []
    for lang, key in (("zh", "greeting"), ("en", "greeting"), ("zh", "voicemail"), ("en", "digit_7"),
                      ("zh", "status_in_progress"), ("zh", "menu_language")):
        path = prompt_path(settings, lang, key)
        assert path == built / lang / f"{key}.wav"
        params, data = _samples(path)
        assert (params.framerate, params.nchannels, params.sampwidth, params.comptype) == (8000, 1, 2, "NONE")
        assert params.nframes > 8000 * 0.2, f"{path} is shorter than 0.2 s"
        peak = max(abs(s) for s in data)
        loud = sum(1 for s in data if abs(s) > 1000)
        assert peak > 5000 and loud > len(data) * 0.1, f"{path} is (nearly) silent: peak {peak}"
    # The greeting is a long sentence; a single digit is short: the texts really differ.
    assert _samples(built / "zh" / "greeting.wav")[0].nframes > 4 * _samples(built / "zh" / "digit_3.wav")[0].nframes
    manifest = json.loads((built / MANIFEST).read_text(encoding="utf-8"))["files"]
    assert set(manifest) == {f"{lang}/{seg.key}.wav" for lang in ("zh", "en") for seg in CATALOGUE} | {HOLD_MUSIC}
    assert not [p for p in built.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".render")]


def test_rebuild_is_a_no_op_and_keeps_human_recordings(prompts: Path) -> None:
    settings = _settings(prompts)
    human = prompts / "zh" / "greeting.wav"
    with wave.open(str(human), "wb") as w:  # a centre's own recording, same name
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(array.array("h", [3000, -3000] * 4000).tobytes())
    before = human.read_bytes()
    (prompts / "en" / "goodbye.wav").unlink()

    report = build_prompts(settings)
    assert report.kept == [human]
    assert report.rendered == [prompts / "en" / "goodbye.wav"]
    assert len(report.up_to_date) == 2 * len(CATALOGUE) - 2 + 1  # + the hold music
    assert human.read_bytes() == before
    assert prompt_problems(settings) == []

    # --force replaces it with our rendering, which is then ours again.
    report = build_prompts(settings, ["zh"], force=True)
    assert len(report.rendered) == len(CATALOGUE) and not report.kept
    assert human.read_bytes() != before
    assert build_prompts(settings, ["zh"]).rendered == []


def test_changed_text_settings_rerender_our_files_only(prompts: Path) -> None:
    settings = Settings.model_validate({"prompts": {"dir": str(prompts), "speed": 120}})
    human = prompts / "en" / "menu.wav"
    shutil.copyfile(prompts / "en" / "goodbye.wav", human)  # someone replaced it by hand
    report = build_prompts(settings, ["en"])
    assert report.kept == [human]
    assert len(report.rendered) == len(CATALOGUE) - 1


def test_check_finds_missing_and_unplayable_files(prompts: Path) -> None:
    settings = _settings(prompts)
    (prompts / "en" / "case_not_found.wav").unlink()
    (prompts / "zh" / "digit_4.wav").unlink()
    with wave.open(str(prompts / "zh" / "goodbye.wav"), "wb") as w:  # 44.1 kHz stereo dropped in
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(b"\0\0" * 2000)
    assert missing_prompts(settings) == [prompts / "zh" / "digit_4.wav", prompts / "en" / "case_not_found.wav"]
    problems = dict(prompt_problems(settings))
    assert problems[prompts / "en" / "case_not_found.wav"] == "missing"
    assert "44100 Hz" in problems[prompts / "zh" / "goodbye.wav"]
    assert len(problems) == 3
    assert missing_prompts(settings, ["en"]) == [prompts / "en" / "case_not_found.wav"]


def test_cli_build_check_and_list(hotline, env, prompts: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env["HOTLINE_PROMPTS__DIR"] = str(prompts)
    ok = hotline("prompts", "check", check=True)
    assert "all present" in ok.stdout
    (prompts / "zh" / "no_operator.wav").unlink()
    proc = hotline("prompts", "check")
    assert proc.returncode == 1
    assert f"{prompts / 'zh' / 'no_operator.wav'}: missing" in proc.stdout and "hotline prompts build" in proc.stdout

    human = prompts / "en" / "thank_you.wav"
    shutil.copyfile(prompts / "en" / "digit_1.wav", human)
    proc = hotline("prompts", "build", check=True)
    assert "1 rendered" in proc.stdout and "1 kept" in proc.stdout and "kept en/thank_you.wav" in proc.stdout
    assert hotline("prompts", "check").returncode == 0
    assert human.read_bytes() == (prompts / "en" / "digit_1.wav").read_bytes()

    rows = json.loads(hotline("prompts", "list", "--lang", "zh", "--json", check=True).stdout)
    assert len(rows) == len(CATALOGUE) and {r["lang"] for r in rows} == {"zh"}
    assert any(r["key"] == "voicemail" and "井号键" in r["text"] for r in rows)

    fresh = tmp_path / "fresh"
    env["HOTLINE_PROMPTS__DIR"] = str(fresh)
    proc = hotline("prompts", "build", "--lang", "en", check=True)
    assert f"{len(CATALOGUE)} rendered" in proc.stdout
    assert not (fresh / "zh").exists() or not list((fresh / "zh").iterdir())
    assert hotline("prompts", "check", "--lang", "en").returncode == 0


def test_cli_without_espeak_is_a_clear_error(hotline, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    only_ffmpeg = tmp_path / "bin"
    only_ffmpeg.mkdir()
    os.symlink(shutil.which("ffmpeg"), only_ffmpeg / "ffmpeg")  # type: ignore[arg-type]
    env["HOTLINE_PROMPTS__DIR"] = str(tmp_path / "prompts")
    proc = hotline("prompts", "build", extra_env={"PATH": str(only_ffmpeg)})
    assert proc.returncode == 1
    assert "espeak-ng is not installed" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("*.wav"))


def test_unknown_voice_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings.model_validate({"prompts": {"dir": str(tmp_path / "p"), "voices": {"en": "no-such-voice"}}})
    with pytest.raises(PromptError, match="no-such-voice"):
        build_prompts(settings, ["en"])
    assert not list((tmp_path / "p").rglob("*.wav"))


def test_settings_defaults_and_environment(env, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    s = load_settings()
    assert (s.prompts.dir, s.prompts.default_language) == (Path("var/prompts"), "zh")
    assert s.prompts.voices == {"zh": "cmn-latn-pinyin", "en": "en"}
    monkeypatch.setenv("HOTLINE_PROMPTS__VOICES", '{"en": "en-us"}')
    assert load_settings().prompts.voices == {"zh": "cmn-latn-pinyin", "en": "en-us"}


def test_queue_prompts_and_hold_music_are_built(built: Path) -> None:
    for key in ("queue_position", "queue_position_end", "queue_position_long", "queue_options", "callback_confirm",
                "callback_confirm_keys", "callback_enter_number", "callback_booked"):
        assert key in SEGMENTS, key
        assert (built / "zh" / f"{key}.wav").is_file() and (built / "en" / f"{key}.wav").is_file()
    assert SEGMENTS["count_3"].text == {"zh": "三", "en": "three"} and SEGMENTS["count_12"].text["zh"] == "十二"
    assert "按1" in SEGMENTS["queue_options"].text["zh"] and "press 2" in SEGMENTS["queue_options"].text["en"]
    params, data = _samples(built / HOLD_MUSIC)
    assert (params.framerate, params.nchannels, params.sampwidth) == (8000, 1, 2)
    assert params.nframes / 8000 > 10  # a tune, not a blip
    assert 4000 < max(abs(v) for v in data) < 30000  # audible, never clipping
    assert data[-1] == 0 and data[0] == 0  # loops without a click


def test_hold_music_kept_if_replaced_and_checked_when_configured(prompts: Path, tmp_path: Path) -> None:
    settings = _settings(prompts)
    mine = prompts / HOLD_MUSIC
    shutil.copyfile(prompts / "zh" / "goodbye.wav", mine)  # a centre's own music under the built-in name
    report = build_prompts(settings)
    assert report.kept == [mine] and report.rendered == []
    own = Settings.model_validate({"prompts": {"dir": str(prompts)}, "queue": {"hold_music": str(tmp_path / "nope.wav")}})
    assert prompt_problems(own) == [(tmp_path / "nope.wav", "missing ([queue] hold_music)")]
    assert prompt_problems(own, ["en"]) == []  # one language's check is about speech only
    (tmp_path / "nope.wav").write_bytes(b"RIFF garbage")
    [(path, why)] = prompt_problems(own)
    assert path == tmp_path / "nope.wav" and "not a PCM WAV" in why
