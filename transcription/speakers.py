"""Who is speaking on each channel of a recording, so a reviewer reads "caller: … / operator: …".

A bridged conversation is recorded in stereo, left = the citizen, right = the operator
(ivr/media/stereo.py), and each channel is transcribed on its own (transcription/pipeline.py).
Everything else the service records is one voice: the citizen's.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from transcription.models import Transcript

CALLER, OPERATOR = "caller", "operator"
STEREO_SPEAKERS = (CALLER, OPERATOR)


def speaker(channels: int, channel: int) -> str:
    """The speaker of ``channel`` in a recording of ``channels`` channels."""
    if channels == 2 and channel in (0, 1):
        return STEREO_SPEAKERS[channel]
    return CALLER


def transcripts_of(s: Session, recording_ids: Iterable[int]) -> dict[int, list[Transcript]]:
    """Each recording's transcripts in channel order (left before right)."""
    ids = list(recording_ids)
    out: dict[int, list[Transcript]] = {i: [] for i in ids}
    if ids:
        for t in s.scalars(select(Transcript).where(Transcript.recording_id.in_(ids))
                           .order_by(Transcript.recording_id, Transcript.channel, Transcript.id)):
            out[t.recording_id].append(t)
    return out
