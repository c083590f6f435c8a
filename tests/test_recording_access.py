"""The recording access log: hash chain, tampering found and named, concurrent appenders (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading

import pytest
from sqlalchemy import select, text

from config.context import Context
from config.db import transaction
from recordings.access import GENESIS, append_access, canonical_bytes, chain_head, entry_hash, verify_chain
from recordings.models import RecordingAccess


def _append(ctx: Context, n: int, recording_id: int = 7, **kw) -> list[int]:  # type: ignore[no-untyped-def]
    ids = []
    for i in range(n):
        with transaction(ctx.sessions) as s:
            e = append_access(s, recording_id, f"user{i}", "play", client="10.0.0.1", user_agent="pytest", **kw)
            ids.append(e.id)
    return ids


def _problems(ctx: Context) -> list[tuple[int | None, str, str]]:
    with ctx.sessions() as s:
        return [(p.entry_id, p.kind, p.message) for p in verify_chain(s)]


def test_chain_links_and_survives_the_round_trip(ctx: Context) -> None:
    assert _problems(ctx) == []  # an empty log is intact
    _append(ctx, 3)
    with ctx.sessions() as s:
        rows = list(s.scalars(select(RecordingAccess).order_by(RecordingAccess.seq)))
        head = chain_head(s)
    assert [r.seq for r in rows] == [1, 2, 3]
    assert rows[0].prev_hash == GENESIS
    assert [r.prev_hash for r in rows[1:]] == [r.hash for r in rows[:-1]]
    # Hashes recomputed from what the database hands back equal those computed before the insert.
    assert all(entry_hash(r) == r.hash == hashlib.sha256(canonical_bytes(r)).hexdigest() for r in rows)
    assert (head.seq, head.last_hash) == (3, rows[-1].hash)
    assert _problems(ctx) == []


def test_canonical_form_is_documented_json(ctx: Context) -> None:
    at = dt.datetime(2026, 3, 1, 9, 30, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    with transaction(ctx.sessions) as s:
        e = append_access(s, 42, "张三", "download", client="::1", user_agent='ua "quoted"', range_="bytes=0-99", at=at)
    with ctx.sessions() as s:
        e = s.get(RecordingAccess, e.id)
        assert e is not None
        body = canonical_bytes(e)
    assert body.isascii()
    assert json.loads(body) == {
        "v": 1, "seq": 1, "recording_id": 42, "actor": "张三", "action": "download",
        "at": "2026-03-01T01:30:00.000005Z", "client": "::1", "user_agent": 'ua "quoted"',
        "range": "bytes=0-99", "prev_hash": GENESIS,
    }  # fmt: skip


def test_edited_row_is_named(ctx: Context) -> None:
    ids = _append(ctx, 4)
    with ctx.engine.begin() as c:
        c.execute(text("UPDATE recording_access SET actor = 'someone_else' WHERE id = :id"), {"id": ids[1]})
    problems = _problems(ctx)
    assert [(p[0], p[1]) for p in problems] == [(ids[1], "hash_mismatch")]
    assert f"entry {ids[1]}" in problems[0][2] and "edited" in problems[0][2]


def test_edit_with_recomputed_hash_breaks_the_next_link(ctx: Context) -> None:
    ids = _append(ctx, 3)
    with transaction(ctx.sessions) as s:
        e = s.get(RecordingAccess, ids[0])
        assert e is not None
        e.action = "download"
        e.hash = entry_hash(e)  # a careful forger fixes the row's own hash
    problems = _problems(ctx)
    assert [(p[0], p[1]) for p in problems] == [(ids[1], "link_broken")]
    assert f"entry {ids[0]}" in problems[0][2]


def test_deleted_row_names_the_gap(ctx: Context) -> None:
    ids = _append(ctx, 4)
    with ctx.engine.begin() as c:
        c.execute(text("DELETE FROM recording_access WHERE id = :id"), {"id": ids[1]})
    problems = _problems(ctx)
    assert [(p[0], p[1]) for p in problems] == [(ids[2], "link_broken")]
    assert f"entry {ids[2]}" in problems[0][2] and f"entry {ids[0]}" in problems[0][2]
    assert "1 entry missing" in problems[0][2]


def test_deleted_newest_rows_are_caught_by_the_head(ctx: Context) -> None:
    ids = _append(ctx, 4)
    with ctx.engine.begin() as c:
        c.execute(text("DELETE FROM recording_access WHERE id >= :id"), {"id": ids[2]})
    problems = _problems(ctx)
    assert [p[1] for p in problems] == ["head_mismatch"]
    assert "2 newest entries were deleted" in problems[0][2]
    with ctx.engine.begin() as c:
        c.execute(text("DELETE FROM recording_access_head"))
    assert [p[1] for p in _problems(ctx)] == ["head_mismatch"]


def test_concurrent_appenders_never_share_a_predecessor(ctx: Context) -> None:
    """Threads with their own sessions append at once; the chain stays one line."""
    threads, per_thread = 6, 8
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with transaction(ctx.sessions) as s:
                    append_access(s, n, f"worker{n}", "play", range_=f"bytes={i}-")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    with ctx.sessions() as s:
        rows = list(s.scalars(select(RecordingAccess).order_by(RecordingAccess.seq)))
    assert [r.seq for r in rows] == list(range(1, threads * per_thread + 1))
    assert len({r.prev_hash for r in rows}) == len(rows)
    assert _problems(ctx) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "listen"}, "unknown access action"),
        ({"actor": ""}, "needs an actor"),
        ({"at": dt.datetime(2026, 1, 1, 12, 0)}, "timezone-aware"),
    ],
)
def test_bad_entries_are_refused(ctx: Context, kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    args = {"recording_id": 1, "actor": "a", "action": "play", **kwargs}
    with pytest.raises(ValueError, match=message), transaction(ctx.sessions) as s:
        append_access(s, args.pop("recording_id"), args.pop("actor"), args.pop("action"), **args)
    with ctx.sessions() as s:
        assert chain_head(s).seq == 0


def test_long_and_hostile_values_are_clipped_before_hashing(ctx: Context) -> None:
    hostile = "Mozilla/5.0 '); DROP TABLE recording_access; -- \u202e\U0001f600" + "x" * 1000
    with transaction(ctx.sessions) as s:
        e = append_access(s, 1, "a" * 200, "export", client="1" * 100, user_agent=hostile, range_="bytes=" + "9" * 200)
    with ctx.sessions() as s:
        e = s.get(RecordingAccess, e.id)
        assert e is not None
        assert (len(e.actor), len(e.client or ""), len(e.user_agent or ""), len(e.range or "")) == (80, 64, 400, 100)
        assert e.user_agent == hostile[:400]
    assert _problems(ctx) == []


def test_cli_verify_and_list(ctx: Context, hotline) -> None:  # type: ignore[no-untyped-def]
    r = hotline("recordings", "audit", "verify")
    assert r.returncode == 0, r.stderr
    assert "intact" in r.stdout and "head seq 0" in r.stdout
    ids = _append(ctx, 3, recording_id=5)
    _append(ctx, 1, recording_id=6)
    r = hotline("recordings", "audit", "list", "--recording", "5", "--json")
    assert r.returncode == 0, r.stderr
    entries = json.loads(r.stdout)["entries"]
    assert [e["id"] for e in entries] == ids[::-1]
    assert {e["recording_id"] for e in entries} == {5}
    r = hotline("recordings", "audit", "list", "--limit", "2")
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 2
    with ctx.engine.begin() as c:
        c.execute(text("UPDATE recording_access SET client = '6.6.6.6' WHERE id = :id"), {"id": ids[2]})
    r = hotline("recordings", "audit", "verify")
    assert r.returncode == 1
    assert f"entry {ids[2]}" in r.stdout and "BROKEN" in r.stdout
    r = hotline("recordings", "audit", "verify", "--json")
    body = json.loads(r.stdout)
    assert r.returncode == 1 and body["ok"] is False
    assert [(p["entry_id"], p["kind"]) for p in body["problems"]] == [(ids[2], "hash_mismatch")]


@pytest.mark.parametrize("args", [("list", "--recording", "abc"), ("list", "--recording", "0"), ("frobnicate",), ()])
def test_cli_bad_usage_exits_2(ctx: Context, hotline, args: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    r = hotline("recordings", "audit", *args)
    assert r.returncode == 2
    assert "usage:" in r.stderr
