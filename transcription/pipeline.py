"""One job from recording to draft case.

Two halves, because they run in different processes:

- :func:`transcribe_file` runs in a worker process (it holds the loaded Vosk engine and
  no database connection): it checks the stored file is there and unaltered (SHA-256
  recorded at import), then transcribes it. A missing or altered file is an AudioError:
  a permanent failure, retrying cannot help.
- :func:`store_result` runs in the worker's parent, in **one transaction**: mark the job
  done (guarded: only if this worker still holds it), write the Transcript, extract phones
  / address / low-confidence words and create the draft Case with its event. Either all
  of it is committed or none of it, and a job re-run after a crash (or a recording
  transcribed twice) never creates a second case: the draft is keyed on the recording,
  and the job / recording row locks serialise the check with the insert.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from cases.drafts import create_voicemail_draft
from config.settings import Settings
from recordings.models import Recording
from transcription import jobs
from transcription.engine import AudioError
from transcription.models import Transcript

if TYPE_CHECKING:
    from transcription.engine import Engine, TranscriptResult


@dataclass(frozen=True)
class Outcome:
    transcript_id: int
    case_id: int
    case_number: str
    case_created: bool


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_stored_file(path: Path, sha256: str | None) -> None:
    """Raise AudioError when the stored recording is gone or no longer what was stored."""
    if not path.is_file():
        raise AudioError(f"stored recording file is missing: {path}")
    if sha256 and sha256_file(path) != sha256:
        raise AudioError(f"stored recording file was altered (SHA-256 differs from the one recorded at import): {path}")


def transcribe_file(engine: Engine, path: Path, sha256: str | None) -> TranscriptResult:
    check_stored_file(path, sha256)
    return engine.transcribe(path)


def store_result(factory: sessionmaker[Session], claim: jobs.Claim, result: TranscriptResult, settings: Settings) -> Outcome | None:
    """Write transcript and draft case for a finished job; None if the job is no longer ours."""
    from transcription.extract import extract, low_confidence

    words: list[dict[str, Any]] = result.words_as_dicts()
    found = extract(result.text)
    marked = low_confidence(words, settings.transcription.low_confidence)
    with factory() as s, s.begin():
        if not jobs.mark_done(s, claim, model=result.model):
            return None
        # Serialise drafts per recording (PostgreSQL row lock; SQLite already holds the write lock).
        rec = s.get(Recording, claim.recording_id, with_for_update=True)
        if rec is None:  # pragma: no cover - foreign key keeps it
            raise AudioError(f"recording {claim.recording_id} no longer exists")
        tr = Transcript(
            recording_id=rec.id,
            job_id=claim.job_id,
            channel=0,
            text=result.text,
            words=words,
            confidence=result.confidence,
            model=result.model,
            duration=result.duration,
            elapsed=result.elapsed,
        )
        s.add(tr)
        s.flush()
        draft = create_voicemail_draft(
            s,
            tz=settings.calendar.tz,
            content=result.text,
            caller_number=rec.caller,
            received_at=rec.received_at,
            phones=list(found.phones),
            address=found.address,
            low_confidence=marked,
            recording_id=rec.id,
            transcript_id=tr.id,
            job_id=claim.job_id,
        )
        return Outcome(tr.id, draft.case.id, draft.case.number, draft.created)
