"""Messages being recorded, and the ones a crash left behind.

While a call records, its audio lives in `<storage root>/.live/<call id>.wav` with a JSON
sidecar naming the Call row. When the call ends the message is stored through the
recording store (canonical copy, checksum, transcription job) and both files go. If the
process dies instead, the next start finds the pair, repairs the WAV header and stores it
the same way: all but the last unflushed second survive.

Three kinds share this path: a voicemail message (`<call id>.wav`, mono), a bridged
conversation (`<call id>.conversation.wav`, stereo: left caller, right operator) and the
comment of an outbound return-visit call (`<call id>.campaign.wav`, mono, ivr/dialer.py).
The sidecar says which, so recovery stores each as what it is, stereo kept as stereo.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from config.db import transaction, utcnow
from config.logs import get_logger
from config.settings import Settings
from ivr.call_rows import citizen_number
from ivr.media.wavwriter import WavRepairError, repair_wav
from ivr.models import Call
from recordings.audio import AudioError, write_atomic
from recordings.store import store_recording

log = get_logger("ivr.live")


def live_dir(settings: Settings) -> Path:
    d = settings.storage.root / ".live"
    d.mkdir(parents=True, exist_ok=True)
    return d


VOICEMAIL = "voicemail"
CONVERSATION = "conversation"
CAMPAIGN = "campaign"
"""An outbound return-visit call: the callee's comment after the rating (mono, like a message)."""
_CHANNELS = {VOICEMAIL: 1, CONVERSATION: 2, CAMPAIGN: 1}
_DISPOSITION = {VOICEMAIL: "voicemail", CONVERSATION: "operator", CAMPAIGN: "campaign"}


def live_name(call: Call, kind: str = VOICEMAIL) -> str:
    """The live file's name: ``<call id>.wav`` for a message, ``<call id>.<kind>.wav`` otherwise."""
    return f"{call.id}.wav" if kind == VOICEMAIL else f"{call.id}.{kind}.wav"


def begin(settings: Settings, call: Call, kind: str = VOICEMAIL) -> Path:
    """Write the sidecar before the first audio byte, so a crash always knows whose audio it is.

    Returns the path the live WAV goes to (mono for a message, stereo for a conversation).
    """
    if kind not in _CHANNELS:
        raise ValueError(f"live recording kind must be one of {sorted(_CHANNELS)}, not {kind!r}")
    wav = live_dir(settings) / live_name(call, kind)
    # The recording's "caller" is the citizen speaking: on an outbound call that is the number we rang
    # (a callback's message becomes a draft case whose number must be theirs, not the centre's).
    meta = {"call_id": call.id, "caller": citizen_number(call), "started_at": call.started_at.isoformat(), "kind": kind}
    write_atomic(wav.with_suffix(".json"), json.dumps(meta).encode())
    return wav


def store_message(sessions: sessionmaker[Session], settings: Settings, wav: Path, hooks: list,  # type: ignore[type-arg]
                  *, recovered: bool = False) -> int | None:
    """Move a finished (or repaired) live message into the store; returns the recording id."""
    side = wav.with_suffix(".json")
    meta = json.loads(side.read_text())
    kind = meta.get("kind", VOICEMAIL)  # sidecars written before conversations existed
    if kind not in _CHANNELS:
        kind = VOICEMAIL
    recording_id: int | None = None
    try:
        with transaction(sessions) as s:
            call = s.get(Call, meta["call_id"])
            rec = store_recording(
                s, settings.storage, wav, kind=kind, caller=meta.get("caller"),
                received_at=dt.datetime.fromisoformat(meta["started_at"]), call_id=meta["call_id"], hooks=hooks,
                channels=_CHANNELS[kind],
            )
            recording_id = rec.id
            if call is not None:
                call.recording_id = rec.id
                if recovered:
                    call.ended_at = call.ended_at or utcnow()
                    call.end_reason = call.end_reason or "recovered_after_crash"
                    call.disposition = call.disposition or _DISPOSITION[kind]
                    if kind == VOICEMAIL:
                        call.message_seconds = rec.duration
    except AudioError as e:
        # An empty message (hung up at the tone): nothing to keep; say so and drop the files.
        log.warning("live recording not stored", call_id=meta["call_id"], kind=kind, reason=str(e))
    for p in (wav, side):
        p.unlink(missing_ok=True)
    return recording_id


def recover_live(sessions: sessionmaker[Session], settings: Settings, hooks: list) -> list[int]:  # type: ignore[type-arg]
    """At start: every message a crash left open is repaired, stored and queued."""
    stored = []
    for side in sorted(live_dir(settings).glob("*.json")):
        wav = side.with_suffix(".wav")
        if not wav.exists():
            side.unlink()
            continue
        try:
            seconds = repair_wav(wav)
        except WavRepairError as e:
            # Not even a header made it to disk: there is no audio to keep. Say so, keep the file.
            log.error("live message cannot be repaired; left in place", file=str(wav), reason=str(e))
            continue
        log.warning("recovering message left by a crash", file=str(wav), seconds=round(seconds, 2))
        rid = store_message(sessions, settings, wav, hooks, recovered=True)
        if rid is not None:
            stored.append(rid)
    for tmp in live_dir(settings).glob(".*.tmp"):
        tmp.unlink()
    return stored
