"""The Vosk engine (interface fixed by the lead; the engine work fills in the bodies).

Contract used by the worker, the CLI and the bench:

    locate_model(settings: TranscriptionSettings, override: Path | None = None) -> Path
        raises ModelError (a HotlineError) naming every place looked at and how to install one.
    Engine(model_path: Path, feed_rate: str = "model")   # loads once; raises ModelError
        .name -> str                                      # model folder name
        .transcribe(source: Path, *, channel: int | None = None,
                    on_progress: Callable[[float], None] | None = None) -> TranscriptResult
        raises AudioError (a HotlineError) for unreadable / empty / non-audio input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from config.errors import HotlineError


class ModelError(HotlineError):
    """No usable Vosk model: missing, incomplete, LFS pointers, wrong checksum."""


class AudioError(HotlineError):
    """The input cannot be decoded as audio, or holds no audio at all."""


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    conf: float


@dataclass
class TranscriptResult:
    text: str
    words: list[Word] = field(default_factory=list)
    duration: float = 0.0
    """Seconds of audio."""
    model: str = ""
    elapsed: float = 0.0
    """Wall seconds spent decoding and recognising."""

    @property
    def confidence(self) -> float | None:
        return sum(w.conf for w in self.words) / len(self.words) if self.words else None

    @property
    def rtf(self) -> float | None:
        return self.elapsed / self.duration if self.duration else None

    def words_as_dicts(self) -> list[dict[str, float | str]]:
        return [asdict(w) for w in self.words]
