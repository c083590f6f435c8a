"""Import every package's models so the shared metadata (Alembic, create_all) sees all tables."""


def import_all_models() -> None:
    import campaigns.models  # noqa: F401
    import cases.callbacks  # noqa: F401
    import cases.login_throttle  # noqa: F401
    import cases.models  # noqa: F401
    import cases.users  # noqa: F401
    import config.models  # noqa: F401
    import ivr.models  # noqa: F401
    import ivr.presence  # noqa: F401
    import recordings.models  # noqa: F401
    import transcription.models  # noqa: F401
