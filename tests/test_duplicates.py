"""Duplicate suggestions: normalisation, and precision / recall on the labelled set (both databases)."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
from pathlib import Path
from zoneinfo import ZoneInfo

from cases import actions as A
from cases.duplicates import (
    SAME_NUMBER,
    SIMILAR_CONTENT,
    address_similarity,
    content_similarity,
    normalise_address,
    normalise_phone,
    suggest,
)
from cases.models import Case
from config.db import transaction

FIXTURE = Path(__file__).parent / "fixtures" / "duplicates.tsv"
BASE = dt.datetime(2026, 6, 1, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
PRECISION_FLOOR = 0.75
RECALL_FLOOR = 0.75


def _rows() -> list[dict[str, str]]:
    with FIXTURE.open(encoding="utf-8") as f:
        return list(csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t"))


def test_fixture_is_big_and_labelled() -> None:
    rows = _rows()
    assert len(rows) >= 120
    groups = [r["group"] for r in rows]
    assert len({g for g in groups if groups.count(g) > 1}) >= 30
    assert len({r["id"] for r in rows}) == len(rows)


def test_normalisation() -> None:
    assert normalise_phone("+86 138-0013-8000") == normalise_phone("008613800138000") == "13800138000"
    assert normalise_phone("１３８００１３８０００") == "13800138000"  # full-width digits
    assert normalise_phone("abc") is None and normalise_phone(None) is None
    assert normalise_address("城东区建设路八十八号") == normalise_address("城东区 建设路88号") == "城东区建设路88号"
    assert normalise_address("东城大厦十二楼") == normalise_address("东城大厦12层")
    assert address_similarity("城东区万达广场", "城西区万达广场地下停车场") == 0.0
    assert address_similarity("城东区新华街15号", "城东区新华街15号1楼") >= 0.8
    assert address_similarity(None, "x") == 0.0
    assert content_similarity("", "派出所") == 0.0
    assert content_similarity("<script>", "'; DROP TABLE case; --") < 0.5


def test_precision_and_recall_on_the_labelled_set(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    rows = _rows()
    ids: dict[str, int] = {}
    with transaction(sessions) as s:
        for r in rows:
            c = A.create_case(
                s, ctx=ctx, actor="fixture", channel="phone", content=r["content"],
                received_at=BASE + dt.timedelta(days=int(r["day"])),
                caller_number=r["caller"], address=None if r["address"] == "-" else r["address"],
            )
            c.unit = None if r["unit"] == "-" else r["unit"]
            ids[r["id"]] = c.id
    group = {ids[r["id"]]: r["group"] for r in rows}
    truth = {frozenset((ids[a["id"]], ids[b["id"]])) for a, b in itertools.combinations(rows, 2) if a["group"] == b["group"]}
    found: set[frozenset[int]] = set()
    by_reason: dict[str, list[bool]] = {SAME_NUMBER: [], SIMILAR_CONTENT: []}
    with sessions() as s:
        for cid in ids.values():
            for sug in suggest(s, s.get(Case, cid), settings=ctx.settings.cases):
                pair = frozenset((cid, sug.case_id))
                found.add(pair)
                for reason in sug.reasons:
                    by_reason[reason].append(group[cid] == group[sug.case_id])
    tp = len(found & truth)
    precision, recall = tp / len(found), tp / len(truth)
    print(f"\nduplicates: {len(rows)} cases, {len(truth)} true pairs, {len(found)} suggested pairs, "
          f"precision {precision:.3f}, recall {recall:.3f}; "
          + ", ".join(f"{k} precision {sum(v) / len(v):.3f} ({len(v)} suggestions)" for k, v in by_reason.items()))
    assert precision >= PRECISION_FLOOR
    assert recall >= RECALL_FLOOR


def test_window_merged_and_discarded_are_left_out(sessions, ctx) -> None:  # type: ignore[no-untyped-def]
    text = "北湖派出所补办身份证要求开各种证明，跑了四趟都没办成"
    made = []
    with transaction(sessions) as s:
        for days in (0, 1, 2, 3, 120):
            made.append(A.create_case(s, ctx=ctx, actor="t", channel="phone", content=text,
                                      received_at=BASE + dt.timedelta(days=days), caller_number="+86 131 0000 2222").id)
        A.discard(s, s.get(Case, made[1]), ctx=ctx, actor="t", expected_version=1, reason="测试")
        A.merge(s, s.get(Case, made[2]), s.get(Case, made[3]), actor="t")
    with sessions() as s:
        got = suggest(s, s.get(Case, made[0]), settings=ctx.settings.cases)
        assert [g.case_id for g in got] == [made[3]]
        assert got[0].reasons == (SAME_NUMBER,) and got[0].score > 0.99
        assert suggest(s, s.get(Case, made[0]), limit=0) == []
