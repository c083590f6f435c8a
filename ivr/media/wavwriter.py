"""Crash-safe WAV writing for live recordings (interface fixed by the lead).

Contract:

    w = WavAppender(path, sample_rate=8000, channels=1)   # writes a header with size 0 at once
    w.write(frames: bytes)      # buffered; flushed + fsynced at least every `flush_seconds` (1 s)
    w.duration -> float
    w.close() -> float          # final flush, header sizes fixed, fsync; returns duration seconds
    repair_wav(path) -> float   # fix a header a crash left with wrong sizes; returns duration

Additions: `WavAppender(..., sample_width=2, flush_seconds=1.0)`, `closed`, `path`,
`bytes_written`; `WavRepairError` for a file that is not a WAV we can repair.

Why this shape: a message must survive `kill -9` and a power cut with at most the last
second missing (issue 4). Audio is appended with a plain `os.write` once `flush_seconds` of it
is buffered, which puts it in the page cache: that alone survives the process being killed.
The `fsync` that makes it survive a power cut runs on one background thread per process,
because an fsync can take tens of milliseconds and the writer is called from the 20 ms media
tick shared by every call; `close()` waits for it. The header is written first with zero sizes
(a player reading a file cut short still sees valid 16-bit PCM), and `close()` or, after a
crash, `repair_wav()` sets the RIFF and data sizes from what is on disk.
"""

from __future__ import annotations

import os
import struct
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

HEADER_SIZE = 44
_SYNC_LOCK = threading.Lock()
_SYNC_POOL: ThreadPoolExecutor | None = None


class WavRepairError(ValueError):
    """The file is not a RIFF/WAVE PCM file with a data chunk, so it cannot be repaired."""


def _sync_pool() -> ThreadPoolExecutor:
    """One fsync thread for the process, created on first use (os.fsync releases the GIL)."""
    global _SYNC_POOL
    with _SYNC_LOCK:
        if _SYNC_POOL is None:
            _SYNC_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wav-fsync")
        return _SYNC_POOL


def _header(sample_rate: int, channels: int, sample_width: int, data_size: int) -> bytes:
    block_align = channels * sample_width
    return (
        b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align,
                                block_align, 8 * sample_width)
        + b"data" + struct.pack("<I", data_size)
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WavAppender:
    """Append 16-bit PCM to a WAV file that is valid and durable while it grows."""

    def __init__(self, path: str | os.PathLike[str], sample_rate: int = 8000, channels: int = 1, *,
                 sample_width: int = 2, flush_seconds: float = 1.0) -> None:
        if flush_seconds <= 0:
            raise ValueError(f"flush_seconds must be positive, not {flush_seconds}")
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.sample_width = sample_width
        self._block = channels * sample_width
        self._flush_bytes = max(self._block, int(flush_seconds * sample_rate) * self._block)
        self._buffer = bytearray()
        self._pending_sync: Future[None] | None = None
        self.bytes_written = 0
        """Audio bytes handed to write() so far (on disk or buffered)."""
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(self._fd, _header(sample_rate, channels, sample_width, 0))
            os.fsync(self._fd)
            _fsync_dir(self.path.parent)  # the file itself must exist after a power cut
        except BaseException:
            os.close(self._fd)
            raise
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def duration(self) -> float:
        return self.bytes_written / (self._block * self.sample_rate)

    def write(self, frames: bytes) -> None:
        if self._closed:
            raise ValueError(f"write to closed WAV {self.path}")
        self._buffer += frames
        self.bytes_written += len(frames)
        if len(self._buffer) >= self._flush_bytes:
            self.flush()

    def flush(self) -> None:
        """Put everything buffered on disk now and schedule its fsync."""
        if self._buffer:
            _write_all(self._fd, bytes(self._buffer))
            self._buffer.clear()
            previous = self._pending_sync
            if previous is None or previous.done() or previous.running():
                self._pending_sync = _sync_pool().submit(os.fsync, self._fd)
            # else: an fsync is queued, not yet started: it runs after this write and covers it

    def close(self) -> float:
        """Final flush, pad to whole samples, fix the sizes, fsync; returns the duration."""
        if self._closed:
            return self.duration
        try:
            self.flush()
            if self._pending_sync is not None:
                self._pending_sync.result()
            data_size = self.bytes_written - self.bytes_written % self._block
            if data_size != self.bytes_written:
                os.ftruncate(self._fd, HEADER_SIZE + data_size)
                self.bytes_written = data_size
            os.pwrite(self._fd, struct.pack("<I", 36 + data_size), 4)
            os.pwrite(self._fd, struct.pack("<I", data_size), 40)
            os.fsync(self._fd)
        finally:
            self._closed = True
            os.close(self._fd)
        return self.duration

    def __enter__(self) -> WavAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def repair_wav(path: str | os.PathLike[str]) -> float:
    """Make a WAV that a crash left open consistent; return its duration in seconds.

    The data size is taken from the file length (a half-written last sample is cut off, a
    trailing odd byte too), and the RIFF and data sizes are rewritten and fsynced. Safe to
    run on a file that is already correct. Chunks before `data` (LIST, fact) are walked, so
    a WAV written by another tool can be repaired too; anything after `data` is treated as
    audio, since our writer puts nothing there.
    """
    p = Path(path)
    with open(p, "r+b") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise WavRepairError(f"{p}: not a RIFF/WAVE file")
        pos = 12
        block_align = 0
        rate = 0
        f.seek(0, os.SEEK_END)
        size = f.tell()
        while True:
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                raise WavRepairError(f"{p}: no data chunk")
            cid, clen = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(16)
                if len(fmt) < 16:
                    raise WavRepairError(f"{p}: truncated fmt chunk")
                _, _, rate, _, block_align, _ = struct.unpack("<HHIIHH", fmt)
            elif cid == b"data":
                break
            pos += 8 + clen + (clen & 1)
        if not block_align or not rate:
            raise WavRepairError(f"{p}: no usable fmt chunk before the data")
        data_start = pos + 8
        data_size = max(0, size - data_start)
        data_size -= data_size % block_align
        if data_start + data_size != size:
            f.truncate(data_start + data_size)
        f.seek(4)
        f.write(struct.pack("<I", data_start - 8 + data_size))
        f.seek(pos + 4)
        f.write(struct.pack("<I", data_size))
        f.flush()
        os.fsync(f.fileno())
    return data_size / (block_align * rate)
