"""The recording store: canonical WAV files with checksums, their rows, and the playback audit."""
