"""Crash-safe WAV writing for live recordings (interface fixed by the lead).

Contract:

    w = WavAppender(path, sample_rate=8000, channels=1)   # writes a header with size 0 at once
    w.write(frames: bytes)      # buffered; flushed + fsynced at least every `flush_seconds` (1 s)
    w.duration -> float
    w.close() -> float          # final flush, header sizes fixed, fsync; returns duration seconds
    repair_wav(path) -> float   # fix a header a crash left with wrong sizes; returns duration
"""
