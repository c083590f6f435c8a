"""WavAppender and repair_wav: readable while growing, complete on close, repairable after kill -9."""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import pytest

from ivr.media.wavwriter import HEADER_SIZE, WavAppender, WavRepairError, repair_wav

FRAME = 320  # 20 ms of 16-bit 8 kHz


def pattern(i: int) -> bytes:
    """Frame i: its index in every sample, so any frame on disk can be checked in place."""
    return struct.pack("<h", i % 32000) * (FRAME // 2)


def read(path: Path) -> tuple[wave._wave_params, bytes]:
    with wave.open(str(path)) as w:
        return w.getparams(), w.readframes(w.getnframes())


def test_written_frames_read_back_with_correct_header(tmp_path: Path) -> None:
    path = tmp_path / "m.wav"
    w = WavAppender(path)
    for i in range(123):
        w.write(pattern(i))
    assert w.duration == pytest.approx(123 * 0.02)
    assert w.close() == pytest.approx(2.46)
    params, data = read(path)
    assert (params.nchannels, params.sampwidth, params.framerate, params.nframes) == (1, 2, 8000, 123 * 160)
    assert data == b"".join(pattern(i) for i in range(123))
    assert w.closed
    with pytest.raises(ValueError, match="closed"):
        w.write(pattern(0))


def test_header_is_there_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "m.wav"
    w = WavAppender(path)
    try:
        assert path.stat().st_size == HEADER_SIZE
        params, data = read(path)
        assert (params.framerate, params.nframes, data) == (8000, 0, b"")
    finally:
        w.close()


def test_audio_reaches_the_file_every_second_not_at_close(tmp_path: Path) -> None:
    path = tmp_path / "m.wav"
    w = WavAppender(path, flush_seconds=1.0)
    try:
        for i in range(49):
            w.write(pattern(i))
        assert path.stat().st_size == HEADER_SIZE  # 0.98 s: still buffered
        w.write(pattern(49))
        assert path.stat().st_size == HEADER_SIZE + 50 * FRAME  # 1 s: on disk
        for i in range(50, 75):
            w.write(pattern(i))
        assert path.stat().st_size == HEADER_SIZE + 50 * FRAME
    finally:
        w.close()
    assert path.stat().st_size == HEADER_SIZE + 75 * FRAME


def test_repair_fixes_sizes_and_cuts_a_half_sample(tmp_path: Path) -> None:
    path = tmp_path / "m.wav"
    WavAppender(path).close()  # the header as written at open: sizes 0
    # What a crash leaves: audio appended, sizes never fixed, a torn write's odd last byte.
    with open(path, "ab") as f:
        f.write(b"".join(pattern(i) for i in range(60)) + b"\x01")
    assert struct.unpack("<I", path.read_bytes()[40:44])[0] == 0
    assert repair_wav(path) == pytest.approx(1.2)
    params, data = read(path)
    assert params.nframes == 60 * 160
    assert data == b"".join(pattern(i) for i in range(60))
    assert repair_wav(path) == pytest.approx(1.2)  # idempotent on a good file
    assert path.stat().st_size == HEADER_SIZE + 60 * FRAME


def test_repair_walks_extra_chunks(tmp_path: Path) -> None:
    path = tmp_path / "other.wav"
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"LIST" + struct.pack("<I", 5) + b"abcde\x00"
    body += b"data" + struct.pack("<I", 0) + bytes(1600)
    path.write_bytes(b"RIFF" + struct.pack("<I", 0) + body)
    assert repair_wav(path) == pytest.approx(0.1)
    assert read(path)[0].nframes == 800


@pytest.mark.parametrize("content", [b"", b"RIFF", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"not a wav file at all"])
def test_repair_refuses_what_is_not_a_wav(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(WavRepairError):
        repair_wav(path)


WRITER = textwrap.dedent(
    """
    import struct, sys, time
    from ivr.media.wavwriter import WavAppender

    w = WavAppender(sys.argv[1])
    i = 0
    while True:
        w.write(struct.pack("<h", i % 32000) * 160)
        i += 1
        print(i, flush=True)  # after write(): frames reported are frames handed to the writer
        time.sleep(0.002)
    """
)


def test_kill_9_while_writing_loses_at_most_the_last_second(tmp_path: Path) -> None:
    path = tmp_path / "live.wav"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout is not None
    reported = 0
    try:
        for line in proc.stdout:
            reported = int(line)
            if reported >= 400:  # 8 s of audio, several flushes
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for line in proc.stdout:  # whatever it printed before dying
            reported = int(line)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    seconds = repair_wav(path)
    params, data = read(path)
    frames = params.nframes // 160
    assert seconds == pytest.approx(frames * 0.02)
    assert reported - 50 <= frames <= reported  # all but at most the last second (50 frames)
    assert frames >= 350
    assert data == b"".join(pattern(i) for i in range(frames))
    ffprobe = shutil.which("ffprobe")
    if ffprobe:
        out = subprocess.run([ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                              str(path)], capture_output=True, text=True, check=True, timeout=60)
        assert float(out.stdout) == pytest.approx(seconds, abs=0.001)
