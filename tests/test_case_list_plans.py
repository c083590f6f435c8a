"""The case list's queries on SQLite read an index in list order: no sort of a whole status or channel.

The service never runs ANALYZE, so SQLite plans without statistics, and a plan without
statistics does not depend on the table's size: what the empty test database gets is what a
centre's 1M cases get (bench/api.py measured such a sort of every "closed" case: 1.6 s).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from api.case_schemas import CaseListQuery
from api.cases import _cursor_encode, list_statement
from cases.users import Staff
from config.db import explain

SUPERVISOR = Staff(1, "boss", "boss", "supervisor", None, None)
HANDLER = Staff(2, "east", "east", "unit_handler", "branch_east", None)
CURSOR = _cursor_encode("-received_at", dt.datetime(2026, 10, 1, tzinfo=dt.UTC), 500)


def sent_plan(ctx: Any, query: CaseListQuery, user: Staff) -> str:
    """EXPLAIN QUERY PLAN of the statement exactly as the API sends it (parameters bound, not inlined)."""
    with ctx.sessions() as s:
        rows = explain(s, list_statement(ctx, s, query, user, ctx.now()))
    return " | ".join(str(r[-1]) for r in rows)


@pytest.mark.parametrize(("params", "user", "index"), [
    ({}, SUPERVISOR, "ix_case_received_at"),
    ({"sort": "-updated_at"}, SUPERVISOR, "ix_case_updated_at"),
    ({"status": "closed"}, SUPERVISOR, "ix_case_status_received_at"),
    ({"status": "closed", "limit": 10, "cursor": CURSOR}, SUPERVISOR, "ix_case_status_received_at"),
    ({"status": "accepted,assigned,in_progress", "unit": "branch_west"}, SUPERVISOR, "ix_case_unit_received_at"),
    ({"channel": "phone", "overdue": True}, SUPERVISOR, "ix_case_channel_received_at"),
    ({"channel": "web", "status": "closed"}, SUPERVISOR, None),
    ({"category": "traffic", "received_from": "2025-11-02", "received_to": "2026-02-10"}, SUPERVISOR,
     "ix_case_category_received_at"),
    ({"status": "assigned"}, HANDLER, None),
], ids=lambda v: ",".join(v) if isinstance(v, dict) else v.role if isinstance(v, Staff) else (v or "any"))
def test_lists_read_in_order_without_statistics(ctx, params: dict[str, Any], user: Staff,  # type: ignore[no-untyped-def]
                                                index: str | None) -> None:
    if ctx.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL plans from statistics autovacuum keeps; its plans are measured by bench/api.py")
    plan = sent_plan(ctx, CaseListQuery(**params), user)
    assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan
    assert f"USING INDEX {index or 'ix_case_'}" in plan, plan


def test_several_statuses_sort_only_a_page_each(ctx) -> None:  # type: ignore[no-untyped-def]
    """status=a,b,c: one backwards walk per status, each stopped once it cannot reach the page
    (SQLite's ORDER BY ... LIMIT over an IN on the index's first column), then a sort of those."""
    if ctx.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's planner only")
    plan = sent_plan(ctx, CaseListQuery(status="accepted,assigned,in_progress"), SUPERVISOR)
    assert "SEARCH case USING INDEX ix_case_status_received_at (status=?)" in plan, plan


@pytest.mark.parametrize("caller", ["13800138000", "+86 138 0013 8000", "010-1234 5678"])
def test_a_complete_caller_number_is_looked_up_in_the_number_indexes(ctx, caller: str) -> None:  # type: ignore[no-untyped-def]
    """Not a read of every case testing a substring (14.7 s at 1M): ranges on both number indexes."""
    if ctx.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's planner only")
    plan = sent_plan(ctx, CaseListQuery(caller=caller), SUPERVISOR)
    assert plan.startswith("SEARCH case USING INTEGER PRIMARY KEY (rowid=?)"), plan
    assert "MULTI-INDEX OR" in plan, plan
    assert "USING INDEX ix_case_caller_number (caller_number>? AND caller_number<?)" in plan, plan
    assert "USING INDEX ix_case_complainant_phone (complainant_phone>? AND complainant_phone<?)" in plan, plan
    assert "SCAN case" not in plan.replace("SCAN case USING INDEX ix_case_", ""), plan
