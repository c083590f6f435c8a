"""Content search (cases/search.py) on both databases: the FTS5 table on SQLite, the trigram index on PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import inspect, select, text, update

from cases.models import Case
from cases.search import fts_phrase, matches
from config.db import transaction

CONTENTS = {
    "a": "楼下烧烤摊深夜噪声扰民，希望尽快处理。",
    "b": "身份证补办一个月还没拿到。Police STATION said \"wait\".",
    "c": "咨询护照加急办理的条件 100% 需要预约吗",
    "d": "感谢民警帮忙找回走失的老人。",
}


@pytest.fixture
def numbers(sessions):  # type: ignore[no-untyped-def]
    now = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)
    with transaction(sessions) as s:
        for i, (key, content) in enumerate(CONTENTS.items()):
            s.add(Case(number=f"20261201-{i + 1:04d}", channel="phone", content=content, received_at=now))
    return {key: f"20261201-{i + 1:04d}" for i, key in enumerate(CONTENTS)}


def found(sessions, q: str) -> set[str]:  # type: ignore[no-untyped-def]
    with sessions() as s:
        dialect = s.get_bind().dialect.name
        return set(s.scalars(select(Case.number).where(matches(dialect, q))))


def test_substrings_of_three_or_more_characters(sessions, numbers) -> None:  # type: ignore[no-untyped-def]
    assert found(sessions, "噪声扰民") == {numbers["a"]}
    assert found(sessions, "补办一个月") == {numbers["b"]}
    assert found(sessions, "民警") == {numbers["d"]}, "two characters fall back to the scan, same answer"
    assert found(sessions, "police station") == {numbers["b"]}, "case-insensitive like ILIKE"
    assert found(sessions, "无人机") == set()
    assert found(sessions, numbers["c"]) == {numbers["c"]}, "a case number finds its case"


@pytest.mark.parametrize("hostile", ['said "wait"', '"', '""', "100%", "%", "_", "a OR b", "NEAR(a b)", "*", "'; --",
                                     "噪声\" OR \"民警", "   ", "^x", "a:b", "\\"])
def test_hostile_queries_are_text(sessions, numbers, hostile: str) -> None:  # type: ignore[no-untyped-def]
    expected = {n for k, n in numbers.items() if hostile.lower() in CONTENTS[k].lower() or hostile.strip() == n}
    assert found(sessions, hostile) == expected


def test_edited_content_is_searched(sessions, numbers) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        s.execute(update(Case).where(Case.number == numbers["d"]).values(content="无人机黑飞扰民"))
    assert found(sessions, "无人机黑飞") == {numbers["d"]}
    assert found(sessions, "走失的老人") == set(), "the old text is gone from the index"
    with transaction(sessions) as s:
        s.execute(Case.__table__.delete().where(Case.number == numbers["d"]))
    assert found(sessions, "无人机黑飞") == set()


def test_the_search_structures_exist(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as s:
        bind = s.get_bind()
        if bind.dialect.name == "sqlite":
            assert "case_fts" in inspect(bind).get_table_names()
            plan = " ".join(str(r[-1]) for r in s.execute(text(
                "EXPLAIN QUERY PLAN SELECT rowid FROM case_fts WHERE case_fts MATCH :q"), {"q": fts_phrase("噪声扰民")}))
            assert "VIRTUAL TABLE INDEX" in plan
        else:
            names = {i["name"] for i in inspect(bind).get_indexes("case")}
            assert {"ix_case_content_trgm", "ix_case_caller_number_trgm", "ix_case_complainant_phone_trgm"} <= names


def test_fts_phrase_quotes() -> None:
    assert fts_phrase('a"b') == '"a""b"'
    assert fts_phrase("噪声") == '"噪声"'
