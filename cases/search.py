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

Which way SQLite reads a list filtered by ``q`` depends on how many cases match, which its
planner cannot know (FTS5 gives it no row estimate): from the matches, fetching each case
and sorting them (cheap for a few hundred, 0.3 s for the 55k cases of a common phrase in 1M),
or along the list order's index, testing each case id against the matches until a page
is full (cheap when matches are common, a scan of the whole table when there are none).
:func:`matches` counts the matches up to :data:`COMMON` first (a millisecond) and picks.
PostgreSQL's planner has statistics and chooses by itself.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import ColumnElement, func, literal_column, or_, select, table
from sqlalchemy.orm import Session

from cases.models import Case

FTS_TABLES = ("case_fts",)
"""The FTS5 table; its shadow tables (case_fts_data, _idx, _docsize, _config) share the prefix."""
MIN_INDEXED = 3
COMMON = 2000
"""From this many matches on, SQLite tests cases in list order against the matches instead of
fetching every match. Below it, fetching costs at most ~10 ms (~5 µs a case); from it on, a
page of 50 needs at most 50 × cases / COMMON index entries (25k at 1M cases, ~6 ms at
~0.25 µs each) after the matches' ids are read once (~35 ms for 55k)."""
_NUMBER = re.compile(r"[0-9]+-[0-9]+")

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


def _fts_ids(text: str) -> Any:
    fts = table("case_fts")
    return select(literal_column("rowid")).select_from(fts).where(literal_column("case_fts").op("MATCH")(fts_phrase(text)))


def is_common(s: Session, text: str, *, common: int = COMMON) -> bool:
    """Whether at least ``common`` cases contain ``text`` (SQLite's search table; reads at most that many).

    False for terms too short for the table (they are not looked up in it).
    """
    if len(text.strip()) < MIN_INDEXED:
        return False
    first = _fts_ids(text).limit(common).subquery()
    return (s.scalar(select(func.count()).select_from(first)) or 0) >= common


def content_contains(dialect: str, text: str, *, common: bool = False) -> ColumnElement[bool]:
    """Cases whose content contains ``text`` (case-insensitive), by the fastest means the database has.

    ``common`` (SQLite): many cases match, so test the ids in the order the list reads the
    cases (``id + 0`` is an expression, not the rowid: SQLite cannot start from the matches).
    """
    if dialect == "sqlite" and len(text.strip()) >= MIN_INDEXED:
        return (Case.id + 0 if common else Case.id).in_(_fts_ids(text))
    return Case.content.icontains(text, autoescape=True)


def matches(s: Session, q: str, *, common: int = COMMON) -> ColumnElement[bool]:
    """The list filter ``q``: text in the content, or exactly a case number.

    The number is compared only when ``q`` looks like one: the OR would otherwise make
    SQLite fetch every case to test a number that cannot match.
    """
    dialect = s.get_bind().dialect.name
    many = dialect == "sqlite" and is_common(s, q, common=common)
    found = content_contains(dialect, q, common=many)
    return or_(found, Case.number == q.strip()) if _NUMBER.fullmatch(q.strip()) else found
