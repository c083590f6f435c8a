"""Offline speech recognition with Vosk, its job queue, and Chinese text post-processing."""
