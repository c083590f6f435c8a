#!/usr/bin/env python3
"""The case API on a small and a large database (not a test): p50/p99 per request kind and the large/small ratio.

For each database kind (SQLite, PostgreSQL) one fresh database is migrated, filled with
realistic cases (bench/case_data.py: Chinese content, two years of cases, repeat callers,
events) up to the first size, measured, grown to the next size, measured again. Each
measurement runs the real aiohttp application in this process (web.AppRunner on a free
loopback port) and sends real HTTP requests one at a time with an aiohttp client, as a
supervisor with a bearer token, timing each request from send to the last byte read:

* list, default page (newest first, 50 rows);
* list with filters: status + unit, category + a date range, channel + overdue;
* list page 50 through next_cursor (limit 10, so page 50 exists on 1,000 cases too;
  the cursor is found by walking the pages once, then page 50 is timed);
* full-text search (q): a common phrase, a rare one; the caller filter (digits);
* detail of a random case;
* the two selective requests (status + unit, rare search) again with ``limit`` set to the
  answer size they have at 1k (3 and 1 rows): at 1M their plain form returns a full page of
  50 instead of 3 or 1, and building 50 rows costs more than building 3 whatever the database
  does. The "same answer" lines isolate the database's growth from the answer's.

Printed: load time per step, then per database a table of p50/p99 (ms) at each size and
the ratio largest/smallest. The bar of issue 6: ratio <= 5 (goal <= 2). The figures
depend on this machine and its load; the ratio, measured in one run, is the number to read.

    .venv/bin/python bench/api.py                                   # 1k and 1M, both databases
    .venv/bin/python bench/api.py --db sqlite --sizes 1000,100000 --requests 50
    .venv/bin/python bench/api.py --explain                          # also print the query plans at the largest size
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from sqlalchemy import create_engine, select, text  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.case_data import SEARCH_WORDS, CaseGenerator, count, load  # noqa: E402
from cases.models import Case  # noqa: E402
from config.db import transaction, upgrade, utcnow  # noqa: E402

PG_ADMIN = os.environ.get("HOTLINE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CURSOR_PAGE = 50
CURSOR_LIMIT = 10


@dataclass(frozen=True)
class Scenario:
    name: str
    params: Callable[[random.Random], dict[str, str]]
    cursor: bool = False
    """Time page CURSOR_PAGE of these params (cursor found beforehand) instead of page 1."""
    detail: bool = False


def _days_ago(days: int) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).date().isoformat()


UNITS = ("branch_east", "branch_west", "traffic_police", "population")
SCENARIOS = (
    Scenario("list default", lambda r: {}),
    Scenario("list status+unit", lambda r: {"status": "accepted,assigned,in_progress", "unit": r.choice(UNITS)}),
    Scenario("list category+dates", lambda r: {"category": r.choice(("traffic", "attitude", "household")),
                                               "received_from": _days_ago(400), "received_to": _days_ago(300)}),
    Scenario("list channel+overdue", lambda r: {"channel": r.choice(("phone", "web")), "overdue": "true"}),
    Scenario(f"page {CURSOR_PAGE} via cursor", lambda r: {"limit": str(CURSOR_LIMIT)}, cursor=True),
    Scenario(f"page {CURSOR_PAGE} cursor+status", lambda r: {"limit": str(CURSOR_LIMIT), "status": "closed"},
             cursor=True),
    Scenario("search common", lambda r: {"q": SEARCH_WORDS["common"]}),
    Scenario("search rare", lambda r: {"q": SEARCH_WORDS["rare"]}),
    Scenario("status+unit, same answer", lambda r: {"status": "accepted,assigned,in_progress", "unit": r.choice(UNITS),
                                                    "limit": "3"}),
    Scenario("search rare, same answer", lambda r: {"q": SEARCH_WORDS["rare"], "limit": "1"}),
    Scenario("caller digits", lambda r: {}),  # filled per run with a repeat caller's digits
    Scenario("detail", lambda r: {}, detail=True),
)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


# --- databases --------------------------------------------------------------------------


class Database:
    """A fresh, migrated database of one kind; dropped (PostgreSQL) or deleted (SQLite) at the end."""

    def __init__(self, kind: str, work: Path) -> None:
        self.kind = kind
        if kind == "sqlite":
            self.url = f"sqlite:///{work}/bench-api.db"
            self.name = ""
        else:
            self.name = f"bench_api_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            with self._admin() as c:
                c.execute(text(f'CREATE DATABASE "{self.name}"'))
            self.url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.name
        upgrade(self.url)

    def _admin(self) -> Any:
        return create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect()

    def drop(self) -> None:
        if self.kind == "postgres":
            with self._admin() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


def make_context(url: str, work: Path) -> Any:
    os.environ["HOTLINE_DATABASE__URL"] = url
    os.environ["HOTLINE_STORAGE__ROOT"] = str(work / "storage")
    from config.context import Context
    from config.settings import load_settings
    from service.cli import wire

    ctx = Context(load_settings())
    wire(ctx)
    return ctx


def make_supervisor(ctx: Any) -> tuple[str, str]:
    from cases.users import create_user

    with transaction(ctx.sessions) as s:
        create_user(s, "bench", "bench-password-1", "supervisor")
    return "bench", "bench-password-1"


def sample_numbers(ctx: Any, rng: random.Random, n: int = 500) -> list[str]:
    with ctx.engine.connect() as c:
        top = c.scalar(select(Case.id).order_by(Case.id.desc()).limit(1)) or 0
        ids = [rng.randint(1, top) for _ in range(n)]
        return list(c.scalars(select(Case.number).where(Case.id.in_(ids))))


def repeat_caller(ctx: Any) -> str:
    """Digits of a number that called many times: the "caller" filter of a returning reporter."""
    with ctx.engine.connect() as c:
        phone = c.scalar(select(Case.caller_number).where(Case.caller_number.is_not(None))
                         .where(Case.id < 2000).group_by(Case.caller_number)
                         .order_by(text("count(*) DESC")).limit(1))
    return (phone or "13800000000")[-8:]


# --- measuring --------------------------------------------------------------------------


async def measure(ctx: Any, user: tuple[str, str], requests: int, rng: random.Random) -> dict[str, list[float]]:
    """Times (ms) per scenario name, and the rows per answer under "<name>/rows"."""
    from api.app import create_app

    numbers = sample_numbers(ctx, rng)
    caller = repeat_caller(ctx)
    runner = web.AppRunner(create_app(ctx), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    out: dict[str, list[float]] = {}
    try:
        async with aiohttp.ClientSession() as http:
            r = await http.post(f"{base}/api/v1/auth/token", json={"username": user[0], "password": user[1]})
            assert r.status == 201, await r.text()
            headers = {"Authorization": f"Bearer {(await r.json())['token']}"}

            async def get(path: str, params: dict[str, str]) -> tuple[float, Any]:
                t0 = time.perf_counter()
                async with http.get(base + path, params=params, headers=headers) as resp:
                    body = await resp.json()
                    took = (time.perf_counter() - t0) * 1000
                if resp.status != 200:
                    raise SystemExit(f"GET {path} {params} -> {resp.status}: {body}")
                return took, body

            cursors: dict[str, str] = {}

            async def run_scenario(sc: Scenario, n: int) -> tuple[list[float], list[float]]:
                times: list[float] = []
                rows: list[float] = []
                for _ in range(n):
                    params = {"caller": caller} if sc.name == "caller digits" else sc.params(rng)
                    if sc.detail:
                        took, body = await get(f"/api/v1/cases/{rng.choice(numbers)}", {})
                    elif sc.cursor:
                        key = repr(sorted(params.items()))
                        if key not in cursors:
                            cursors[key] = await walk(get, params)
                        took, body = await get("/api/v1/cases", {**params, "cursor": cursors[key]})
                    else:
                        took, body = await get("/api/v1/cases", params)
                    times.append(took)
                    rows.append(len(body["items"]) if "items" in body else 1)
                return times, rows

            for warm_up in (True, False):  # one untimed round of every kind first: caches, pools, imports
                for sc in SCENARIOS:
                    times, rows = await run_scenario(sc, 3 if warm_up else requests)
                    if not warm_up:
                        out[sc.name], out[sc.name + "/rows"] = times, rows
    finally:
        await runner.cleanup()
    return out


async def walk(get: Any, params: dict[str, str]) -> str:
    """The next_cursor that opens page CURSOR_PAGE (following the pages like a client would)."""
    cursor = None
    for _ in range(CURSOR_PAGE - 1):
        _, body = await get("/api/v1/cases", {**params, **({"cursor": cursor} if cursor else {})})
        cursor = body["next_cursor"]
        if cursor is None:
            raise SystemExit(f"fewer than {CURSOR_PAGE} pages for {params}: lower CURSOR_LIMIT or grow the data")
    assert cursor is not None
    return cursor


def explain(ctx: Any) -> None:
    """Print the plans of the list queries as the API builds and sends them (at the current size).

    With the parameters bound as the API sends them: SQLite plans the same query with the
    values written in (literal_binds) differently (channel+overdue: a sort of every phone
    case instead of the received_at index).
    """
    from api.case_schemas import CaseListQuery
    from api.cases import list_statement
    from cases.users import Staff
    from config.db import explain

    user = Staff(0, "bench", "bench", "supervisor", None, None)
    rng = random.Random(1)
    caller = repeat_caller(ctx)  # the query runs once first: a number nobody called scans every case
    prefix = "EXPLAIN QUERY PLAN " if ctx.engine.dialect.name == "sqlite" else "EXPLAIN ANALYZE "
    for sc in SCENARIOS:
        if sc.detail or sc.cursor:
            continue
        params = {"caller": caller} if sc.name == "caller digits" else sc.params(rng)
        with ctx.sessions() as s:
            rows = explain(s, list_statement(ctx, s, CaseListQuery(**params), user, ctx.now()), prefix)
        print(f"\n-- {sc.name}: {params}")
        for row in rows:
            print("   ", row[-1])


# --- the run ----------------------------------------------------------------------------


def run_db(kind: str, sizes: list[int], args: argparse.Namespace, work: Path) -> dict[int, dict[str, list[float]]]:
    print(f"\n=== {kind} ===", flush=True)
    db = Database(kind, work)
    ctx = make_context(db.url, work)
    results: dict[int, dict[str, list[float]]] = {}
    try:
        user = make_supervisor(ctx)
        gen = CaseGenerator(now=utcnow(), seed=args.seed)
        have = 0
        for size in sizes:
            t0 = time.monotonic()
            with tqdm(total=size - have, desc=f"{kind}: load to {size:,}", unit="case", file=sys.stderr) as bar:
                load(ctx.engine, gen, size - have, progress=bar)
            have = count(ctx.engine)
            wall = time.monotonic() - t0
            print(f"{kind}: {have:,} cases, {gen.next_event_id - 1:,} events; loaded the last "
                  f"{size - (sizes[sizes.index(size) - 1] if sizes.index(size) else 0):,} in {wall:.1f} s", flush=True)
            if args.explain and size == sizes[-1]:
                explain(ctx)
            results[size] = asyncio.run(measure(ctx, user, args.requests, random.Random(args.seed)))
            print_table(kind, {s: results[s] for s in results})
    finally:
        ctx.close()
        if not args.keep:
            db.drop()
        else:
            print(f"kept {db.url}")
    return results


def fmt_size(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def print_table(kind: str, results: dict[int, dict[str, list[float]]]) -> None:
    sizes = sorted(results)
    head = f"{'request (ms)':<24}" + "".join(f"{fmt_size(s) + ' p50':>10}{fmt_size(s) + ' p99':>10}" for s in sizes)
    if len(sizes) > 1:
        head += f"{'ratio p50':>11}{'ratio p99':>11}"
    head += "   rows/answer"  # a page of 50 costs more to build than an empty one: read ratios with it
    print(f"\n{kind}: {len(results[sizes[0]][SCENARIOS[0].name])} requests each, one at a time")
    print(head)
    worst = 0.0
    for sc in SCENARIOS:
        line = f"{sc.name:<24}"
        for s in sizes:
            t = results[s][sc.name]
            line += f"{pct(t, .5):>10.1f}{pct(t, .99):>10.1f}"
        if len(sizes) > 1:
            lo, hi = results[sizes[0]][sc.name], results[sizes[-1]][sc.name]
            r50, r99 = pct(hi, .5) / pct(lo, .5), pct(hi, .99) / pct(lo, .99)
            worst = max(worst, r50)
            line += f"{r50:>10.1f}x{r99:>10.1f}x"
        line += "   " + "/".join(f"{statistics.mean(results[s][sc.name + '/rows']):.0f}" for s in sizes)
        print(line)
    if len(sizes) > 1:
        ratios = [pct(results[sizes[-1]][sc.name], .5) / pct(results[sizes[0]][sc.name], .5) for sc in SCENARIOS]
        print(f"worst p50 ratio {fmt_size(sizes[-1])}/{fmt_size(sizes[0])}: {worst:.1f}x (bar <= 5x, goal <= 2x); "
              f"median {statistics.median(ratios):.1f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Prints figures; asserts nothing. See the module docstring for what is timed.")
    ap.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    ap.add_argument("--sizes", default="1000,1000000", help="comma-separated case counts, ascending (grown in place); at least 1000 (page 50 of the status filter)")
    ap.add_argument("--requests", type=int, default=100, help="timed requests per request kind and size")
    ap.add_argument("--seed", type=int, default=12389)
    ap.add_argument("--explain", action="store_true", help="print the list queries' plans at the largest size")
    ap.add_argument("--keep", action="store_true", help="keep the databases (and print where they are)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the SQLite file goes (default: a temp dir)")
    args = ap.parse_args()
    try:
        sizes = [int(x.replace("_", "")) for x in args.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes: not a list of numbers: {args.sizes!r}")
    if sizes != sorted(sizes) or sizes[0] < 1 or len(set(sizes)) != len(sizes):
        ap.error("--sizes must be ascending, distinct and positive (the database grows from one to the next)")
    if args.requests < 1:
        ap.error("--requests must be at least 1")
    kinds = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    tmp = None if args.workdir or args.keep else tempfile.TemporaryDirectory(prefix="bench-api-")
    work = args.workdir or (Path(tmp.name) if tmp else Path(tempfile.mkdtemp(prefix="bench-api-")))
    work.mkdir(parents=True, exist_ok=True)
    try:
        all_results = {kind: run_db(kind, sizes, args, work) for kind in kinds}
    finally:
        if tmp:
            tmp.cleanup()
    print("\n=== summary ===")
    for kind, results in all_results.items():
        print_table(kind, results)


if __name__ == "__main__":
    main()
