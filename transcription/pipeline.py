"""One job from recording to draft case.

Two halves, because they run in different processes:

- :func:`transcribe_file` runs in a worker process (it holds the loaded Vosk engine and
  no database connection): it checks the stored file is there and unaltered (SHA-256
  recorded at import), then transcribes it. A missing or altered file is an AudioError:
  a permanent failure, retrying cannot help.
- :func:`store_result` runs in the worker's parent, in **one transaction**: mark the job
  done (guarded: only if this worker still holds it), write the Transcript(s), extract phones
  / address / low-confidence words and create the draft Case with its event.

A stereo operator conversation (left caller, right operator) is transcribed channel by
channel, one Transcript per channel, so a reviewer sees who said what; it creates no draft
case (the operator opens the case during the call). Only voicemail and imported messages
become drafts. Either all
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


DRAFT_KINDS = frozenset({"voicemail", "import"})
"""Recording kinds whose transcript becomes a draft case."""


@dataclass(frozen=True)
class Outcome:
    transcript_id: int
    case_id: int | None
    case_number: str | None
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


def transcribe_file(engine: Engine, path: Path, sha256: str | None, channels: int = 1) -> list[TranscriptResult]:
    """One result per channel of a stereo conversation, else one for the (mono) file."""
    check_stored_file(path, sha256)
    if channels == 2:
        return [engine.transcribe(path, channel=c) for c in range(channels)]
    return [engine.transcribe(path)]


def store_result(factory: sessionmaker[Session], claim: jobs.Claim, results: list[TranscriptResult],
                 settings: Settings) -> Outcome | None:
    """Write transcripts (and the draft case of a message) for a finished job; None if the job is no longer ours."""
    from transcription.extract import extract, low_confidence

    result = results[0]
    words: list[dict[str, Any]] = result.words_as_dicts()
    with factory() as s, s.begin():
        if not jobs.mark_done(s, claim, model=result.model):
            return None
        # Serialise drafts per recording (PostgreSQL row lock; SQLite already holds the write lock).
        rec = s.get(Recording, claim.recording_id, with_for_update=True)
        if rec is None:  # pragma: no cover - foreign key keeps it
            raise AudioError(f"recording {claim.recording_id} no longer exists")
        rows = [
            Transcript(recording_id=rec.id, job_id=claim.job_id, channel=channel, text=r.text, words=r.words_as_dicts(),
                       confidence=r.confidence, model=r.model, duration=r.duration, elapsed=r.elapsed)
            for channel, r in enumerate(results)
        ]
        s.add_all(rows)
        s.flush()
        tr = rows[0]
        if rec.kind not in DRAFT_KINDS:
            return Outcome(tr.id, None, None, False)
        found = extract(result.text)
        marked = low_confidence(words, settings.transcription.low_confidence)
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
