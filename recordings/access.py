"""The recording access log: every play, download, delete or export, chained by SHA-256.

Why a chain
-----------
Supervisors audit calls; the audit of who listened to what must itself be trustworthy.
Each entry stores the hash of the entry before it (``prev_hash``) and its own ``hash``
over its fields plus ``prev_hash``. Editing a row changes its hash (or, if the editor
also recomputes that, breaks the next row's ``prev_hash``); deleting or inserting a row
breaks the link of the row after it and leaves a gap in ``seq``. Deleting the newest
rows is caught by the one-row head table, which remembers the last ``seq`` and hash.
Someone who can rewrite the whole table and the head can forge a consistent chain: to
catch that, copy :func:`chain_head` (``hotline recordings audit verify`` prints it) to
somewhere else now and then; every later verify must still contain that hash at that seq.

Canonical form (what is hashed), version 1
-----------------------------------------
UTF-8 bytes of ``json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``
where ``fields`` is::

    {"v": 1, "seq": int, "recording_id": int, "actor": str, "action": str,
     "at": "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, always 6 fraction digits),
     "client": str|null, "user_agent": str|null, "range": str|null, "prev_hash": 64 hex}

Only values both SQLite and PostgreSQL hand back unchanged are hashed: integers, text
(truncated to the column size *before* hashing) and the time as UTC text with
microseconds (both keep microseconds). ``ensure_ascii`` makes the bytes independent of
how a driver returns non-ASCII text. The row ``id`` is not hashed (it is known only
after the insert); ``seq`` is, and is unique. The first entry's ``prev_hash`` is
:data:`GENESIS` (64 zeros).

Concurrent writers
------------------
Two API workers logging at once must not both chain to the same previous entry. An
appender first runs ``INSERT … ON CONFLICT DO NOTHING`` on the head row (creating it on
first use) and then reads it ``FOR UPDATE``:

- PostgreSQL: ``SELECT … FOR UPDATE`` locks the head row until commit; a second appender
  waits, then (READ COMMITTED) reads the head as the first one left it.
- SQLite: the INSERT is a write statement, so it takes the database write lock (waiting
  up to ``busy_timeout``) before anything is read; ``FOR UPDATE`` is ignored there.

So appends are serialised by the head row and hold it only until the caller commits:
callers must commit soon after :func:`append_access`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from config.db import utcnow
from recordings.models import RecordingAccess, RecordingAccessHead

__all__ = [
    "ACTIONS",
    "GENESIS",
    "ChainHead",
    "Problem",
    "append_access",
    "canonical_bytes",
    "chain_head",
    "entry_dict",
    "entry_hash",
    "list_access",
    "verify_chain",
]

ACTIONS = ("play", "download", "delete", "export")
GENESIS = "0" * 64
HEAD_ID = 1
_CANON_VERSION = 1
_LIMITS = {"actor": 80, "client": 64, "user_agent": 400, "range": 100}


def _clip(value: str | None, field: str) -> str | None:
    return None if value is None else value[: _LIMITS[field]]


def _iso(at: dt.datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("access time must be timezone-aware")
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_bytes(e: RecordingAccess) -> bytes:
    """The exact bytes hashed for an entry (see the module doc for the format)."""
    fields: dict[str, Any] = {
        "v": _CANON_VERSION,
        "seq": int(e.seq),
        "recording_id": int(e.recording_id),
        "actor": e.actor,
        "action": e.action,
        "at": _iso(e.at),
        "client": e.client,
        "user_agent": e.user_agent,
        "range": e.range,
        "prev_hash": e.prev_hash,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_hash(e: RecordingAccess) -> str:
    return hashlib.sha256(canonical_bytes(e)).hexdigest()


def _lock_head(session: Session) -> RecordingAccessHead:
    """Create the head row if needed and lock it for this transaction (see module doc)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(RecordingAccessHead)
        .values(id=HEAD_ID, seq=0, last_hash=GENESIS, updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=["id"])
    )
    return session.execute(
        select(RecordingAccessHead)
        .where(RecordingAccessHead.id == HEAD_ID)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def append_access(
    session: Session,
    recording_id: int,
    actor: str,
    action: str,
    *,
    client: str | None = None,
    user_agent: str | None = None,
    range_: str | None = None,
    at: dt.datetime | None = None,
) -> RecordingAccess:
    """Add one entry at the end of the chain, in the caller's transaction (commit it soon)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown access action {action!r}; one of {', '.join(ACTIONS)}")
    if not actor:
        raise ValueError("an access entry needs an actor")
    at = utcnow() if at is None else at
    _iso(at)  # refuse naive times before taking the lock
    head = _lock_head(session)
    entry = RecordingAccess(
        seq=head.seq + 1,
        recording_id=recording_id,
        actor=_clip(actor, "actor"),
        action=action,
        at=at.astimezone(dt.UTC),
        client=_clip(client, "client"),
        user_agent=_clip(user_agent, "user_agent"),
        range=_clip(range_, "range"),
        prev_hash=head.last_hash,
    )
    entry.hash = entry_hash(entry)
    session.add(entry)
    head.seq = entry.seq
    head.last_hash = entry.hash
    head.updated_at = utcnow()
    session.flush()
    return entry


@dataclass(frozen=True)
class Problem:
    """One broken link: which entry (None when the problem is the head) and what is wrong."""

    entry_id: int | None
    seq: int | None
    kind: str
    """hash_mismatch (row edited), link_broken (row deleted/inserted before it), head_mismatch (tail cut)."""
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"entry_id": self.entry_id, "seq": self.seq, "kind": self.kind, "message": self.message}


@dataclass(frozen=True)
class ChainHead:
    seq: int
    last_hash: str


def chain_head(session: Session) -> ChainHead:
    head = session.get(RecordingAccessHead, HEAD_ID)
    return ChainHead(0, GENESIS) if head is None else ChainHead(head.seq, head.last_hash)


def verify_chain(session: Session, *, batch: int = 1000) -> list[Problem]:
    """Walk the whole chain in seq order; return every problem found (empty: intact)."""
    problems: list[Problem] = []
    prev_seq, prev_hash, prev_id = 0, GENESIS, None
    rows = session.execute(select(RecordingAccess).order_by(RecordingAccess.seq).execution_options(yield_per=batch))
    for e in rows.scalars():
        if entry_hash(e) != e.hash:
            problems.append(Problem(e.id, e.seq, "hash_mismatch",
                f"entry {e.id} (seq {e.seq}): its hash does not match its contents: the row was edited"))  # fmt: skip
        if e.prev_hash != prev_hash or e.seq != prev_seq + 1:
            before = "the start of the chain" if prev_id is None else f"entry {prev_id} (seq {prev_seq})"
            missing = e.seq - prev_seq - 1
            if missing > 0:
                why = f"{missing} entr{'y' if missing == 1 else 'ies'} missing between them (deleted)"
            elif e.prev_hash != prev_hash:
                why = f"{before} was rewritten or an entry was inserted"
            else:
                why = "its seq is out of order (renumbered)"
            problems.append(Problem(e.id, e.seq, "link_broken",
                f"entry {e.id} (seq {e.seq}) does not chain to {before}: {why}"))  # fmt: skip
        prev_seq, prev_hash, prev_id = e.seq, e.hash, e.id
    head = session.get(RecordingAccessHead, HEAD_ID)
    if head is None:
        if prev_id is not None:
            problems.append(Problem(None, None, "head_mismatch", "the chain head row is missing (deleted)"))
    elif head.seq != prev_seq or head.last_hash != prev_hash:
        last = "no entries" if prev_id is None else f"entry {prev_id} (seq {prev_seq})"
        cut = head.seq - prev_seq
        why = f"{cut} newest entr{'y was' if cut == 1 else 'ies were'} deleted" if cut > 0 else "head and tail disagree"
        problems.append(Problem(None, head.seq, "head_mismatch",
            f"the chain head says seq {head.seq} but the log ends at {last}: {why}"))  # fmt: skip
    return problems


def entry_dict(e: RecordingAccess) -> dict[str, Any]:
    """One entry as JSON-ready values (times in UTC ISO 8601), for the CLI and the API alike."""
    return {"id": e.id, "seq": e.seq, "recording_id": e.recording_id, "actor": e.actor, "action": e.action,
            "at": e.at.isoformat(), "client": e.client, "user_agent": e.user_agent, "range": e.range,
            "prev_hash": e.prev_hash, "hash": e.hash}  # fmt: skip


def list_access(
    session: Session, *, recording_id: int | None = None, before_seq: int | None = None, limit: int = 50
) -> list[RecordingAccess]:
    """The newest entries first (keyset by seq), optionally for one recording."""
    q = select(RecordingAccess).order_by(RecordingAccess.seq.desc()).limit(limit)
    if recording_id is not None:
        q = q.where(RecordingAccess.recording_id == recording_id)
    if before_seq is not None:
        q = q.where(RecordingAccess.seq < before_seq)
    return list(session.scalars(q))

