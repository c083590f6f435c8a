"""The recording store (interface fixed by the lead; the recordings work fills it in).

Contract used by the import CLI, the worker and later the IVR:

    store_recording(session, storage: StorageSettings, src: Path, *, kind="import",
                    caller: str | None = None, received_at: datetime | None = None,
                    call_id: int | None = None, hooks: Sequence[Callable[[Session, Recording], None]] = ()
                    ) -> Recording
        Converts src to the canonical WAV, stores it durably, adds the Recording row and runs the
        hooks (e.g. enqueue a transcription job) in the caller's transaction. Raises AudioError.
    recording_path(storage: StorageSettings, rec: Recording) -> Path
"""
