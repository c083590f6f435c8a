"""How autogenerate writes the :func:`config.db.only_on` indexes: under a dialect check.

Alembic renders every index of the models unconditionally (``ddl_if`` is not consulted),
so the one migration, generated on SQLite by tools/regen_initial_migration.py, would
create a PostgreSQL GIN index as a plain btree on SQLite. These renderers replace the
default ones for the marked indexes only and write raw DDL compiled for the index's
database, each line guarded by ``op.get_bind().dialect.name``.
"""

from __future__ import annotations

from alembic.autogenerate import renderers
from alembic.operations import ops
from sqlalchemy import Index
from sqlalchemy.dialects import registry
from sqlalchemy.schema import CreateIndex, DropIndex

from config.db import Base

_default_create = renderers.dispatch(ops.CreateIndexOp)
_default_drop = renderers.dispatch(ops.DropIndexOp)


def _marked(name: str | None) -> Index | None:
    for table in Base.metadata.tables.values():
        for index in table.indexes:
            if index.name == name and "only_on" in index.info:
                return index
    return None


def _guarded(dialect: str, statements: list[str]) -> list[str]:
    return [f"if op.get_bind().dialect.name == {dialect!r}: op.execute({sql!r})" for sql in statements]


def _ddl(index: Index, construct: type) -> str:
    dialect = registry.load(index.info["only_on"])()
    return str(construct(index).compile(dialect=dialect)).strip()


@renderers.dispatch_for(ops.CreateIndexOp, replace=True)
def _create(autogen_context, op: ops.CreateIndexOp):  # type: ignore[no-untyped-def]
    index = _marked(op.index_name)
    if index is None:
        return _default_create(autogen_context, op)
    ext = index.info.get("extension")
    statements = [f"CREATE EXTENSION IF NOT EXISTS {ext}"] if ext else []
    return _guarded(index.info["only_on"], [*statements, _ddl(index, CreateIndex)])


@renderers.dispatch_for(ops.DropIndexOp, replace=True)
def _drop(autogen_context, op: ops.DropIndexOp):  # type: ignore[no-untyped-def]
    index = _marked(op.index_name)
    if index is None:
        return _default_drop(autogen_context, op)
    return _guarded(index.info["only_on"], [_ddl(index, DropIndex)])
