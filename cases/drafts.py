"""Draft cases created from voicemail transcripts.

``cases`` may import only ``config`` (DESIGN.md layout), so the pipeline hands in plain
values rather than Recording / Transcript rows.

Choices:
- ``complainant_phone`` is the first phone number *spoken* in the message (the number the
  caller asked to be called back on); without one it falls back to the caller's number.
  ``caller_number`` always keeps the number the call came from, and ``extracted["phones"]``
  keeps every spoken number, so the reviewer sees both.
- The public number is drawn for the local day the message was *received* (when the
  complaint was lodged), not the day the worker got round to it.
- One case per recording: if a case with this ``source_recording_id`` exists it is returned
  unchanged (``created=False``). The caller must hold a lock that serialises drafts for the
  same recording (the pipeline locks the job and recording rows first), so the check and
  the insert cannot race.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from cases.models import Case, CaseEvent
from cases.numbers import next_number

DRAFT = "draft"
VOICEMAIL = "voicemail"
CREATED_FROM_VOICEMAIL = "created_from_voicemail"


@dataclass
class DraftResult:
    case: Case
    created: bool


def case_for_recording(session: Session, recording_id: int) -> Case | None:
    return session.scalars(
        select(Case).where(Case.source_recording_id == recording_id).order_by(Case.id).limit(1)
    ).first()


def create_voicemail_draft(
    session: Session,
    *,
    tz: ZoneInfo,
    content: str,
    caller_number: str | None,
    received_at: dt.datetime,
    phones: list[str],
    address: str | None,
    low_confidence: list[dict[str, Any]],
    recording_id: int,
    transcript_id: int,
    job_id: int | None,
    actor: str = "pipeline",
) -> DraftResult:
    """Create the draft case and its "created_from_voicemail" event (idempotent per recording)."""
    existing = case_for_recording(session, recording_id)
    if existing is not None:
        return DraftResult(existing, False)
    case = Case(
        number=next_number(session, tz, received_at),
        channel=VOICEMAIL,
        status=DRAFT,
        content=content,
        caller_number=caller_number,
        complainant_phone=phones[0] if phones else caller_number,
        address=address,
        received_at=received_at,
        extracted={"phones": list(phones), "address": address, "low_confidence": list(low_confidence)},
        source_recording_id=recording_id,
        source_transcript_id=transcript_id,
    )
    session.add(case)
    session.flush()
    session.add(
        CaseEvent(
            case_id=case.id,
            actor=actor,
            action=CREATED_FROM_VOICEMAIL,
            from_status=None,
            to_status=DRAFT,
            note="draft created from voicemail transcript",
            data={"recording_id": recording_id, "transcript_id": transcript_id, "job_id": job_id},
        )
    )
    session.flush()
    return DraftResult(case, True)
