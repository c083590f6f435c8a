"""The one migration creates exactly the tables and columns the models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from cases.search import FTS_TABLES
from config.db import Base, include_for, make_engine


def test_migration_matches_models(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_object": include_for(conn.dialect.name, foreign=FTS_TABLES)})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ; run tools/regen_initial_migration.py: {diff}"
