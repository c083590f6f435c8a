"""Probe and convert audio with ffprobe / ffmpeg subprocesses.

Audio is never loaded into memory: ffmpeg reads the source and writes the canonical WAV
(16-bit PCM, mono, the source rate capped at ``max_sample_rate``; a conversation keeps its
two channels, caller and operator, see ``convert(channels=2)``) straight to a file, and
the checksum is computed by streaming that file back in chunks. A two-hour message costs
the same memory as a ten-second one.

Everything that can go wrong with a source file (empty, not audio, truncated, no samples,
ffmpeg missing) is an :class:`AudioError` whose message names the file and the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

from config.errors import HotlineError

CANONICAL_FORMAT = "wav/pcm_s16le"
CHUNK = 1 << 20
_STREAMING_SIZES = (0, 0xFFFFFFFF)  # WAV writers that never patched the header leave these
_INDEXED = ("mov",)
"""Containers whose header states the true duration (MP4/M4A/3GP): fewer decoded seconds means a cut file.
(An MP3's duration is only estimated from its bitrate, so it cannot show truncation.)"""


class AudioError(HotlineError):
    """A source file that cannot become a stored recording (the message says which and why)."""


@dataclass(frozen=True)
class Probe:
    path: Path
    container: str
    codec: str
    sample_rate: int
    channels: int
    duration: float | None
    bytes: int

    @property
    def source_format(self) -> str:
        """Short description kept with the recording, e.g. 'wav/pcm_mulaw 8000 Hz 1 ch'."""
        return f"{self.container}/{self.codec} {self.sample_rate} Hz {self.channels} ch"[:80]


@dataclass(frozen=True)
class Canonical:
    """What ended up in the canonical WAV (read back from the written file, not assumed)."""

    sample_rate: int
    channels: int
    frames: int
    bytes: int
    sha256: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AudioError(f"{name} is not installed (needed to read audio): install ffmpeg, e.g. `apt-get install ffmpeg`")
    return path


def _last_line(text: str, src: Path) -> str:
    """ffmpeg's last complaint, without the file name it repeats (our message names the file)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else "no message"
    return line.removeprefix(f"{_file_url(src)}: ").removeprefix(f"{src}: ")


def _file_url(path: Path) -> str:
    """Always a local file for ffmpeg, even for names like 'pipe:0' or 'http://…'."""
    return "file:" + str(Path(path).absolute())


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: ffmpeg gets SIGKILL when the importing process dies, so no orphan keeps writing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the orphan just finishes a file recover removes
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        errors="replace",
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )


def probe(src: Path) -> Probe:
    """Describe the first audio stream of src, or refuse the file with a clear reason."""
    try:
        size = src.stat().st_size
    except FileNotFoundError:
        raise AudioError(f"{src}: no such file") from None
    except OSError as e:
        raise AudioError(f"{src}: cannot read: {e.strerror}") from None
    if not src.is_file():
        raise AudioError(f"{src}: not a regular file")
    if size == 0:
        raise AudioError(f"{src}: empty file (0 bytes)")
    proc = _run([_tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_format", "-show_streams", _file_url(src)])
    if proc.returncode != 0:
        raise AudioError(f"{src}: not a readable audio file ({_last_line(proc.stderr, src)})")
    try:
        info = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        raise AudioError(f"{src}: ffprobe gave no usable description of the file") from None
    fmt = info.get("format") or {}
    audio = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if not audio:
        kinds = sorted({s.get("codec_type", "?") for s in info.get("streams", [])}) or ["no streams"]
        raise AudioError(
            f"{src}: not audio (ffprobe reads it as {fmt.get('format_name', 'unknown')!r} with {', '.join(kinds)})"
        )
    s = audio[0]
    try:
        rate = int(s.get("sample_rate") or 0)
        channels = int(s.get("channels") or 0)
    except ValueError:
        rate = channels = 0
    if rate <= 0 or channels <= 0:
        raise AudioError(f"{src}: audio stream without a sample rate or channel count (codec {s.get('codec_name')})")
    duration: float | None
    try:
        duration = float(s.get("duration") or fmt.get("duration"))
    except (TypeError, ValueError):
        duration = None
    container = str(fmt.get("format_name", "unknown")).split(",")[0]
    p = Probe(src, container, str(s.get("codec_name", "unknown")), rate, channels, duration, size)
    if container in ("wav", "rf64", "w64"):
        _check_wav_complete(src, size)
    return p


def _check_wav_complete(src: Path, size: int) -> None:
    """Refuse a RIFF WAV whose data chunk is shorter than its header declares.

    ffmpeg silently decodes whatever is there, so a copy cut short would be stored as if
    it were the whole message. Headers that were never patched (size 0 or 0xFFFFFFFF, as
    left by a streaming writer) declare nothing and are accepted.
    """
    try:
        with src.open("rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return  # RF64/W64/odd variants: leave them to ffmpeg
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                hdr = f.read(8)
                if len(hdr) < 8:
                    break
                cid, csize = hdr[:4], struct.unpack("<I", hdr[4:])[0]
                if cid == b"data":
                    have = size - pos - 8
                    if csize not in _STREAMING_SIZES and csize > have:
                        raise AudioError(
                            f"{src}: truncated WAV: header declares {csize} bytes of audio, the file holds {have}"
                        )
                    return
                pos += 8 + csize + (csize & 1)
    except OSError as e:
        raise AudioError(f"{src}: cannot read: {e.strerror}") from None


def target_rate(source_rate: int, max_rate: int) -> int:
    return min(source_rate, max_rate)


def convert(src: Path, dst: Path, p: Probe, max_rate: int, channels: int = 1) -> Canonical:
    """Write the canonical WAV of src to dst (which may exist and is overwritten), then check it.

    `channels` is the most channels kept: 1 mixes down (messages, imports); 2 keeps a
    stereo conversation's sides apart (a mono source stays mono, never duplicated).
    The output is read back: its header must say 16-bit PCM with those channels at the
    expected rate with at least one frame, and its SHA-256 is taken over the bytes on disk.
    """
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, not {channels!r}")
    want = min(channels, p.channels)
    rate = target_rate(p.sample_rate, max_rate)
    cmd = [
        _tool("ffmpeg"), "-nostdin", "-hide_banner", "-v", "error", "-y",
        "-i", _file_url(src),
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-ac", str(want), "-ar", str(rate), "-c:a", "pcm_s16le",
        "-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1",
        "-f", "wav", _file_url(dst),
    ]  # fmt: skip
    proc = _run(cmd)
    if proc.returncode != 0:
        raise AudioError(f"{src}: ffmpeg cannot decode it ({_last_line(proc.stderr, src)})")
    try:
        with wave.open(str(dst), "rb") as w:
            got = (w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes())
    except (wave.Error, EOFError) as e:
        raise AudioError(f"{src}: conversion produced no valid WAV ({e})") from None
    width, got_channels, out_rate, frames = got
    if (width, got_channels, out_rate) != (2, want, rate):
        raise AudioError(f"{src}: conversion produced {width * 8}-bit {got_channels} ch {out_rate} Hz, "
                         f"expected 16-bit {want} ch {rate} Hz")
    if frames == 0:
        raise AudioError(f"{src}: no audio in it (zero-length: 0 samples decoded)")
    if p.container in _INDEXED and p.duration and frames / rate < p.duration - max(0.5, 0.02 * p.duration):
        raise AudioError(
            f"{src}: truncated or damaged: the container declares {p.duration:.1f} s, "
            f"only {frames / rate:.1f} s could be decoded"
        )
    digest, size = sha256_file(dst)
    return Canonical(out_rate, got_channels, frames, size, digest)


def sha256_file(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file, read in chunks."""
    h = hashlib.sha256()
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a crash leaves the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
