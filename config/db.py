"""Database plumbing: the declarative Base, engines, sessions and the schema check.

SQLite (the embedded default) runs in WAL mode so the API can read while a worker
writes; PostgreSQL is chosen by URL. Every package defines its tables on this Base.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, Index, MetaData, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from config.errors import HotlineError

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = ROOT / "alembic.ini"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class DatabaseError(HotlineError):
    """The database cannot be reached or its schema is not the one this code needs."""


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timestamps stored in UTC and always handed back timezone-aware.

    SQLite has no time zones; without this a round trip would return naive datetimes
    and comparisons with aware ones would raise.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one (times are stored in UTC)")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def only_on(dialect: str, index: Index, *, extension: str | None = None) -> Index:
    """An index that exists on one kind of database only (e.g. a PostgreSQL trigram index).

    Why: some indexes are what makes a query fast on one database and mean nothing (or do
    harm) on the other: a GIN trigram index for substring search has no SQLite form, and
    its btree stand-in would only double the stored text. ``ddl_if`` covers create_all;
    the ``info`` marks let migrations/render.py write the migration step under a dialect
    check (Alembic itself ignores ddl_if) and :func:`include_for` leave the index out of
    the schema comparison on the other databases. ``extension`` is created first
    (CREATE EXTENSION IF NOT EXISTS).
    """
    index.info["only_on"] = dialect
    if extension:
        index.info["extension"] = extension
    return index.ddl_if(dialect=dialect)


def include_for(dialect: str, *, foreign: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """An Alembic ``include_object`` that skips the :func:`only_on` indexes of other databases
    and the tables whose names start with one of ``foreign`` (made by hand-written migration
    steps that no model describes, such as an FTS5 table and its shadow tables)."""

    def include(obj, name, type_, reflected, compare_to) -> bool:  # type: ignore[no-untyped-def]
        if type_ == "table" and reflected and compare_to is None and name and name.startswith(foreign):
            return False
        wanted = getattr(obj, "info", {}).get("only_on") if type_ == "index" and not reflected else None
        return wanted is None or wanted == dialect

    return include


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def normalise_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use the psycopg 3 driver we install."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, *, echo: bool = False) -> Engine:
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"[database] url {url!r} is not a database URL (e.g. sqlite:///var/hotline.db)") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    with factory() as session, session.begin():
        yield session


def explain(s: Session, stmt: Any, prefix: str = "EXPLAIN QUERY PLAN ") -> list[Any]:
    """The plan of ``stmt`` exactly as the driver is sent it (parameters bound, not written in):
    SQLite plans a query with literal values differently. Runs the statement once to catch it."""
    sent: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        sent.append((statement, parameters))

    engine = s.get_bind()
    event.listen(engine, "before_cursor_execute", grab)
    try:
        s.execute(stmt).all()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    statement, parameters = sent[-1]
    return list(s.connection().exec_driver_sql(prefix + statement, parameters).all())


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    try:
        command.upgrade(alembic_config(url), revision)
    except OperationalError as e:
        raise DatabaseError(f"cannot reach the database at {url}: {e.orig}") from None


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as e:
        raise DatabaseError(f"cannot reach the database at {engine.url.render_as_string()}: {e.orig}") from None


def head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def require_current_schema(engine: Engine) -> None:
    """Refuse to run on a database whose schema is older (or newer) than this code."""
    have = current_revision(engine)
    want = head_revision(engine.url.render_as_string(hide_password=False))
    if have != want:
        state = "has no schema yet" if have is None else f"is at revision {have}, this code needs {want}"
        raise DatabaseError(f"the database {engine.url.render_as_string()} {state}: run `hotline db upgrade`")


def table_names(engine: Engine) -> list[str]:
    return inspect(engine).get_table_names()
