"""The transcription job queue (jobs work fills this in)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from recordings.models import Recording
from transcription.models import TranscriptionJob


def enqueue_for_recording(session: Session, recording: Recording) -> TranscriptionJob:
    """Queue a job in the same transaction that stores the recording: no recording is forgotten."""
    job = TranscriptionJob(recording_id=recording.id)
    session.add(job)
    session.flush()
    return job
