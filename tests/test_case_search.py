"""Content search (cases/search.py) on both databases: the FTS5 table on SQLite, the trigram index on PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import inspect, select, text, update

from cases.models import Case
from cases.search import COMMON, fts_phrase, is_common, matches
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


# SQLite reads a search two ways by the number of matches (cases/search.py); common=1 makes
# every term with a match "common", so both ways answer the same questions here.
WAYS = pytest.mark.parametrize("common", [COMMON, 1], ids=["from_matches", "in_list_order"])


def found(sessions, q: str, common: int = COMMON) -> set[str]:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return set(s.scalars(select(Case.number).where(matches(s, q, common=common))))


@WAYS
def test_substrings_of_three_or_more_characters(sessions, numbers, common: int) -> None:  # type: ignore[no-untyped-def]
    assert found(sessions, "噪声扰民", common) == {numbers["a"]}
    assert found(sessions, "补办一个月", common) == {numbers["b"]}
    assert found(sessions, "民警", common) == {numbers["d"]}, "two characters fall back to the scan, same answer"
    assert found(sessions, "police station", common) == {numbers["b"]}, "case-insensitive like ILIKE"
    assert found(sessions, "无人机", common) == set()
    assert found(sessions, numbers["c"], common) == {numbers["c"]}, "a case number finds its case"
    assert found(sessions, f" {numbers['c']} ", common) == {numbers["c"]}


@WAYS
@pytest.mark.parametrize("hostile", ['said "wait"', '"', '""', "100%", "%", "_", "a OR b", "NEAR(a b)", "*", "'; --",
                                     "噪声\" OR \"民警", "   ", "^x", "a:b", "\\"])
def test_hostile_queries_are_text(sessions, numbers, hostile: str, common: int) -> None:  # type: ignore[no-untyped-def]
    expected = {n for k, n in numbers.items() if hostile.lower() in CONTENTS[k].lower() or hostile.strip() == n}
    assert found(sessions, hostile, common) == expected


def test_common_terms_are_read_in_list_order(sessions, numbers) -> None:  # type: ignore[no-untyped-def]
    """SQLite: a term in many cases walks the list's index; a rare one starts from its matches."""
    with sessions() as s:
        if s.get_bind().dialect.name != "sqlite":
            pytest.skip("PostgreSQL's planner picks from its statistics; nothing chosen by hand")
        assert is_common(s, "扰民", common=1) is False, "too short for the search table: not looked up"
        assert is_common(s, "噪声扰民", common=1) and not is_common(s, "噪声扰民", common=2)

        def plan(common: int) -> str:
            stmt = select(Case.id).where(matches(s, "噪声扰民", common=common)).order_by(
                Case.received_at.desc(), Case.id.desc()).limit(51)
            sql = str(stmt.compile(s.get_bind(), compile_kwargs={"literal_binds": True}))
            return " | ".join(str(r[-1]) for r in s.execute(text("EXPLAIN QUERY PLAN " + sql)))

        assert "INTEGER PRIMARY KEY" in plan(2), plan(2)
        assert "ix_case_received_at" in plan(1) and "INTEGER PRIMARY KEY" not in plan(1), plan(1)


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
