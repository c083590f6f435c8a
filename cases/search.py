"""Substring search in case content that stays fast on a million cases, on both databases.

``GET /api/v1/cases?q=`` finds text anywhere in the content (Chinese has no spaces to
split words on, so "contains" is what operators expect). A plain ``LIKE '%…%'`` reads
every row: about 4 s on PostgreSQL and far longer on SQLite for 1M cases (bench/api.py).

* PostgreSQL: a pg_trgm GIN index on ``content`` (cases/models.py, created only there);
  ``ILIKE`` uses it as is, so the query does not change.
* SQLite: an FTS5 table with the trigram tokenizer (SQLite >= 3.34) mirrors ``content``
  (external content, kept in step by triggers); a phrase query on it is a substring
  match, case-insensitive like ``ILIKE``. Autogenerate cannot describe a virtual table
  or triggers, so the initial migration calls :func:`upgrade` / :func:`downgrade`
  (migrations/script.py.mako), and the schema comparison leaves :data:`FTS_TABLES` out.

Trigrams need 3 characters: shorter terms (2-character Chinese words) fall back to the
scan, which on a large database is slow but still correct.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, literal_column, or_, select, table

from cases.models import Case

FTS_TABLES = ("case_fts",)
"""The FTS5 table; its shadow tables (case_fts_data, _idx, _docsize, _config) share the prefix."""
MIN_INDEXED = 3

_SQLITE_UP = (
    "CREATE VIRTUAL TABLE case_fts USING fts5(content, content='case', content_rowid='id', tokenize='trigram')",
    'CREATE TRIGGER case_fts_ai AFTER INSERT ON "case" BEGIN '
    "INSERT INTO case_fts(rowid, content) VALUES (new.id, new.content); END",
    'CREATE TRIGGER case_fts_ad AFTER DELETE ON "case" BEGIN '
    "INSERT INTO case_fts(case_fts, rowid, content) VALUES ('delete', old.id, old.content); END",
    'CREATE TRIGGER case_fts_au AFTER UPDATE OF content ON "case" BEGIN '
    "INSERT INTO case_fts(case_fts, rowid, content) VALUES ('delete', old.id, old.content); "
    "INSERT INTO case_fts(rowid, content) VALUES (new.id, new.content); END",
    "INSERT INTO case_fts(case_fts) VALUES ('rebuild')",  # cases already there
)
_SQLITE_DOWN = ("DROP TRIGGER IF EXISTS case_fts_au", "DROP TRIGGER IF EXISTS case_fts_ad",
                "DROP TRIGGER IF EXISTS case_fts_ai", "DROP TABLE IF EXISTS case_fts")


def upgrade(op: Any) -> None:
    """Create the SQLite search table (a no-op on PostgreSQL, which has its trigram index)."""
    if op.get_bind().dialect.name == "sqlite":
        for sql in _SQLITE_UP:
            op.execute(sql)


def downgrade(op: Any) -> None:
    if op.get_bind().dialect.name == "sqlite":
        for sql in _SQLITE_DOWN:
            op.execute(sql)


def fts_phrase(text: str) -> str:
    """``text`` as one FTS5 phrase: inside double quotes every character is literal."""
    return '"' + text.replace('"', '""') + '"'


def content_contains(dialect: str, text: str) -> ColumnElement[bool]:
    """Cases whose content contains ``text`` (case-insensitive), by the fastest means the database has."""
    if dialect == "sqlite" and len(text.strip()) >= MIN_INDEXED:
        fts = table("case_fts")
        ids = select(literal_column("rowid")).select_from(fts).where(literal_column("case_fts").op("MATCH")(fts_phrase(text)))
        return Case.id.in_(ids)
    return Case.content.icontains(text, autoescape=True)


def matches(dialect: str, q: str) -> ColumnElement[bool]:
    """The list filter ``q``: text in the content, or exactly a case number."""
    return or_(content_contains(dialect, q), Case.number == q.strip())
