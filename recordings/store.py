"""The recording store: canonical WAV files under the storage root, each with exactly one row.

Contract used by the import CLI, the worker and later the IVR:

    store_recording(session, storage: StorageSettings, src: Path, *, kind="import",
                    caller: str | None = None, received_at: datetime | None = None,
                    call_id: int | None = None, hooks: Sequence[Callable[[Session, Recording], None]] = ()
                    ) -> Recording
        Converts src to the canonical WAV, stores it durably, adds the Recording row and runs the
        hooks (e.g. enqueue a transcription job) in the caller's transaction. Raises AudioError.
    recording_path(storage: StorageSettings, rec: Recording) -> Path
    recover(session, storage) -> int
        Settles what crashed imports left behind; run it before imports, verify and at service start.

Invariant
---------
Outside ``<root>/.incoming/`` every file has its row and every row (not deleted) has its
file, whatever moment a process is killed at (``kill -9``, power loss).

Ordering, and why
-----------------
A file and a row cannot be created atomically together, so one of them must come first
and the gap must be closable after a crash. The order is:

1. ``.incoming/<uuid>.intent`` is created exclusively, **locked** (``flock``, held until the
   end), its content (the storage key) written and fsynced, and the directory fsynced.
   It is the promise "a file may appear at this key"; the lock says "its owner is alive".
2. ffmpeg writes the canonical WAV to ``.incoming/<uuid>.part``; it is checked, hashed and fsynced.
3. In the caller's transaction (PostgreSQL) ``pg_advisory_xact_lock(<uuid>)``.
4. ``.part`` is renamed to ``YYYY/MM/DD/<uuid>.wav``; both directories are fsynced.
5. The row is inserted and the hooks run (job queued) in the same transaction; the caller commits.
6. When the caller's transaction ends (commit, rollback or close), the store checks on a
   fresh connection whether the row is there: if so the intent is removed; if not (rolled
   back, failed hook, savepoint undone) the file is deleted, then the intent. A failure
   before the rename deletes the ``.part`` and the intent at once (no row was added yet).

Rename-before-commit means no reader can ever see a row whose file is not yet in place
(the worker may claim the job the moment the commit lands). Its cost is a window where the
file exists and the row does not; the intent covers exactly that window, because it is
durable before the rename and removed only after the outcome is known. So after a crash:

- intent, no row       → the transaction never committed: delete the final file (if the
                         rename happened) and the ``.part``, then the intent;
- intent, row present  → the commit landed before the crash: keep the file, drop the intent;
- ``.part`` without intent → cannot arise from our own ordering; garbage, deleted.

:func:`recover` only touches intents whose lock it can take, i.e. whose owner is dead (the
kernel drops a ``flock`` when its holder dies), so it is safe to run while other imports
are in flight, on this machine or another one sharing the storage root.

"Owner dead" is not yet "transaction over": a client killed right after sending COMMIT
leaves a server that may still commit. On PostgreSQL the importer holds an advisory lock
on the uuid inside its transaction; recover takes the same lock before looking for the
row, so it waits for any such ghost transaction to finish. On SQLite the equivalent ghost
is a commit frame written to the WAL by a writer killed before it published the frame;
it becomes visible only when the WAL is next recovered. Before deleting a file for a
missing row, recover therefore runs ``PRAGMA wal_checkpoint(TRUNCATE)``: once the WAL is
truncated such a frame can never come back; if the checkpoint cannot complete (busy
readers), the intent is left for the next recover.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, event, select, text
from sqlalchemy.orm import Session, SessionTransaction

from config.db import utcnow
from config.settings import StorageSettings
from recordings.audio import CANONICAL_FORMAT, AudioError, convert, fsync_dir, fsync_file, probe
from recordings.models import Recording

__all__ = ["AudioError", "INCOMING", "recording_path", "recover", "store_recording", "stored_keys"]

log = logging.getLogger(__name__)

INCOMING = ".incoming"
"""Directory under the storage root for temporary files (same file system, so rename is atomic)."""
Hook = Callable[[Session, Recording], object]
_PENDING = "hotline.recordings.pending"


def recording_path(storage: StorageSettings, rec: Recording) -> Path:
    return Path(storage.root) / rec.storage_key


def _advisory_key(uid: uuid.UUID) -> int:
    return int.from_bytes(uid.bytes[:8], "big", signed=True)


def _lock_in_transaction(conn: Connection | Session, uid: uuid.UUID) -> None:
    """PostgreSQL: tie this transaction to the uuid, so recover can wait for it to end."""
    bind = conn.get_bind() if isinstance(conn, Session) else conn
    if bind.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _advisory_key(uid)})


@dataclass
class _Intent:
    """``.incoming/<uuid>.intent``, held locked by the process that may create ``key``."""

    root: Path
    uid: uuid.UUID
    key: str | None
    fd: int

    @property
    def incoming(self) -> Path:
        return self.root / INCOMING

    @property
    def path(self) -> Path:
        return self.incoming / f"{self.uid}.intent"

    @property
    def part(self) -> Path:
        return self.incoming / f"{self.uid}.part"

    @property
    def final(self) -> Path | None:
        return self.root / self.key if self.key else None

    @classmethod
    def create(cls, root: Path, uid: uuid.UUID, key: str, source: Path) -> _Intent:
        incoming = root / INCOMING
        path = incoming / f"{uid}.intent"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            body = json.dumps({"key": key, "pid": os.getpid(), "source": str(source), "at": utcnow().isoformat()})
            os.write(fd, body.encode())
            os.fsync(fd)
            fsync_dir(incoming)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return cls(root, uid, key, fd)

    @classmethod
    def try_take(cls, path: Path) -> _Intent | None:
        """Lock an intent left by another process; None when its owner is alive (or it is gone)."""
        try:
            uid = uuid.UUID(path.name.removesuffix(".intent"))
        except ValueError:
            return None
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The owner may have removed it between our open and our lock: check it is still this file.
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(path)
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        key: str | None = None
        try:
            key = json.loads(os.pread(fd, 1 << 16, 0).decode()).get("key")
        except (ValueError, UnicodeDecodeError, AttributeError):
            key = None  # killed while writing it: nothing can have been renamed yet (the intent is fsynced first)
        if key is not None and (key.startswith("/") or ".." in key.split("/") or not key.endswith(f"{uid}.wav")):
            log.warning("recordings: intent %s names an unexpected key %r; leaving it for a person", path, key)
            os.close(fd)
            return None
        return cls(path.parent.parent, uid, key, fd)

    def discard_files(self, *, final: bool) -> None:
        """Delete the part (and the final file if asked), then the intent; all durable."""
        _unlink(self.part)
        if final and self.final is not None and _unlink(self.final):
            fsync_dir(self.final.parent)
        self.drop()

    def drop(self) -> None:
        _unlink(self.path)
        fsync_dir(self.incoming)
        self.release()

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the flock
            self.fd = -1


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def _makedirs_durable(root: Path, rel: Path) -> Path:
    """Create root/rel level by level, fsyncing each parent whose entry we added."""
    current = root
    for part in rel.parts:
        nxt = current / part
        if not nxt.is_dir():
            try:
                nxt.mkdir()
            except FileExistsError:
                pass
            fsync_dir(current)
        current = nxt
    return current


def _row_exists(conn: Connection, key: str) -> bool:
    return conn.execute(select(Recording.id).where(Recording.storage_key == key)).first() is not None


def _sqlite_wal_truncated(conn: Connection) -> bool:
    """Checkpoint and truncate the WAL, so no unpublished commit frame can resurface later."""
    busy, _log, _ckpt = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    return busy == 0


def _settle(engine: Engine, intent: _Intent, *, after_crash: bool) -> bool:
    """Decide an intent by the database: keep the file if its row exists, else delete it.

    Returns False (intent left in place, lock released) when the database cannot answer.
    """
    try:
        if intent.key is None:
            intent.discard_files(final=False)
            return True
        with engine.connect() as conn:
            _lock_in_transaction(conn, intent.uid)  # waits for a ghost transaction on PostgreSQL
            exists = _row_exists(conn, intent.key)
            if not exists and after_crash and engine.dialect.name == "sqlite":
                conn.rollback()
                if not _sqlite_wal_truncated(conn):
                    log.warning("recordings: WAL busy, leaving %s for the next recover", intent.path)
                    intent.release()
                    return False
                exists = _row_exists(conn, intent.key)
            if exists:
                _unlink(intent.part)
                intent.drop()
            else:
                intent.discard_files(final=True)
            conn.rollback()
        return True
    except Exception as e:  # noqa: BLE001 - the intent stays; the next recover settles it
        log.warning("recordings: cannot settle %s now (%s); the next recover will", intent.path, e)
        intent.release()
        return False


def _on_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None or transaction.nested:
        return
    pending: list[_Intent] = session.info.pop(_PENDING, [])
    if not pending:
        return
    engine = session.get_bind()
    for intent in pending:
        _settle(engine, intent, after_crash=False)  # type: ignore[arg-type]


def _watch(session: Session, intent: _Intent) -> None:
    if not event.contains(session, "after_transaction_end", _on_transaction_end):
        event.listen(session, "after_transaction_end", _on_transaction_end)
    session.info.setdefault(_PENDING, []).append(intent)


def store_recording(
    session: Session,
    storage: StorageSettings,
    src: Path,
    *,
    kind: str = "import",
    caller: str | None = None,
    received_at: dt.datetime | None = None,
    call_id: int | None = None,
    hooks: Sequence[Hook] = (),
    channels: int = 1,
) -> Recording:
    """Convert src to the canonical WAV, store it, add its row and run the hooks (see module doc).

    `channels=2` keeps a stereo source's channels (a conversation: left caller, right operator).

    Must be called inside a transaction the caller then ends; the file's fate follows that
    transaction's outcome. Raises AudioError (nothing is left behind) for unusable sources.
    """
    src = Path(src)
    if received_at is None:
        received_at = utcnow()
    elif received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    p = probe(src)  # refuse bad input before anything is created
    root = Path(storage.root)
    incoming = root / INCOMING
    if not incoming.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        _makedirs_durable(root, Path(INCOMING))
    uid = uuid.uuid4()
    day = received_at.astimezone(dt.UTC)
    key = f"{day:%Y/%m/%d}/{uid}.wav"
    intent = _Intent.create(root, uid, key, src)
    renamed = False
    try:
        canon = convert(src, intent.part, p, storage.max_sample_rate, channels)
        fsync_file(intent.part)
        final = _makedirs_durable(root, Path(key).parent) / f"{uid}.wav"
        _lock_in_transaction(session, uid)
        os.rename(intent.part, final)
        renamed = True  # from here on the database decides the file's fate (see _settle)
        fsync_dir(final.parent)
        fsync_dir(incoming)
        rec = Recording(
            call_id=call_id,
            kind=kind,
            storage_key=key,
            format=CANONICAL_FORMAT,
            sample_rate=canon.sample_rate,
            channels=canon.channels,
            duration=canon.duration,
            bytes=canon.bytes,
            sha256=canon.sha256,
            source_name=src.name[:255],
            source_format=p.source_format,
            caller=caller,
            received_at=received_at,
            created_at=utcnow(),
        )
        session.add(rec)
        session.flush()
        for hook in hooks:
            hook(session, rec)
        session.flush()
    except BaseException:
        if renamed:
            _watch(session, intent)  # the row may be in the caller's transaction: settle when it ends
        else:
            intent.discard_files(final=False)
        raise
    _watch(session, intent)
    return rec


def recover(session: Session, storage: StorageSettings) -> int:
    """Settle everything crashed imports left in ``.incoming``; return how many intents were settled.

    Each decision is taken on a fresh connection of the session's engine (not in the
    session's own transaction, whose snapshot may predate the commit being looked for).
    Intents of live imports are skipped: they are locked.
    """
    incoming = Path(storage.root) / INCOMING
    if not incoming.is_dir():
        return 0
    engine = session.get_bind()
    settled = 0
    for path in sorted(incoming.glob("*.intent")):
        intent = _Intent.try_take(path)
        if intent is not None and _settle(engine, intent, after_crash=True):  # type: ignore[arg-type]
            settled += 1
    for part in incoming.glob("*.part"):
        # An intent is created before its part and removed after it, so a lone part is garbage.
        if not part.with_suffix(".intent").exists():
            _unlink(part)
    return settled


def stored_keys(storage: StorageSettings) -> Iterator[str]:
    """Storage keys of the canonical files present under the root (temporary files excluded)."""
    root = Path(storage.root)
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d != INCOMING]
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(".wav"):
                yield Path(dirpath, name).relative_to(root).as_posix()


def in_flight_keys(storage: StorageSettings) -> set[str]:
    """Keys promised by intents still present (live imports, or crashed ones not yet recovered)."""
    keys: set[str] = set()
    incoming = Path(storage.root) / INCOMING
    for path in incoming.glob("*.intent") if incoming.is_dir() else ():
        with contextlib.suppress(OSError, ValueError, AttributeError, UnicodeDecodeError):
            key = json.loads(path.read_text()).get("key")
            if key:
                keys.add(key)
    return keys

