"""Prompt audio loaded once at IVR start, so a call never waits on disk or finds a file missing."""

from __future__ import annotations

import wave
from pathlib import Path

from config.errors import HotlineError
from config.settings import Settings
from ivr.prompts import CATALOGUE, LANGUAGES, hold_music_path, prompt_path, prompt_problems


class PromptsMissing(HotlineError):
    pass


def load_prompts(settings: Settings) -> dict[tuple[str, str], bytes]:
    """All segments as 8 kHz 16-bit mono PCM; refuses to start naming every bad file."""
    problems = prompt_problems(settings)
    if problems:
        listing = "\n  ".join(f"{p}: {why}" for p, why in problems)
        raise PromptsMissing(f"prompt files missing or unusable (run `hotline prompts build`):\n  {listing}")
    pcm: dict[tuple[str, str], bytes] = {}
    for lang in LANGUAGES:
        for seg in CATALOGUE:
            pcm[(lang, seg.key)] = read_pcm(prompt_path(settings, lang, seg.key))
    return pcm


def read_pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes())


def load_hold_music(settings: Settings) -> bytes:
    """The hold music as 8 kHz 16-bit mono PCM (checked at start by `load_prompts`)."""
    return read_pcm(hold_music_path(settings))
