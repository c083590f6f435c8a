"""Realistic synthetic cases and events for benchmarks: Chinese content from templates, bulk loading.

Why synthetic: no real case data may leave a centre, and the API's costs depend on the
*shape* of the data (how many cases per status, per category, per day, how long the
content is, how often a caller calls again), not on its words. The shape here:

* received_at spread over the last ~2 years, a little more in working hours;
* old cases mostly closed (or rejected / discarded / merged), recent ones spread over the
  open statuses, a few drafts from the last days; deadlines set so that some open cases
  are overdue;
* categories, units, channels and handling forms weighted like a real centre (complaints
  about attitude and traffic far more often than praise), key supervision rare;
* caller numbers drawn from a pool a third of the size with a heavy tail, so some numbers
  call dozens of times (duplicates, "caller" filter);
* content 60-250 characters assembled from phrase templates (places, complaints, requests),
  so a search word occurs in a realistic fraction of the cases;
* 1-7 events per case following its path through the lifecycle.

Loading: PostgreSQL through COPY (psycopg), SQLite through the driver's executemany in
transactions of 20k cases with the secondary indexes and FTS5 triggers set aside until
the end (:func:`_sqlite_load`), both with explicit ids so events can point at their case
without a round trip. Minutes for a million cases, not hours (SQLite: ~5 min on a loaded
2-core machine, most of it generating the rows in Python).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import JSON, Engine, Table, delete, func, insert, select, text

from cases.models import Case, CaseCounter, CaseEvent
from cases.search import FTS_TABLES

TZ = ZoneInfo("Asia/Shanghai")
SPAN_DAYS = 730

CATEGORIES = (("attitude", 18), ("traffic", 16), ("case_handling", 12), ("law_enforcement", 8), ("misconduct", 4),
              ("household", 9), ("id_card", 7), ("exit_entry", 6), ("public_order", 8), ("fraud", 5),
              ("suggestion", 3), ("praise", 2), ("consultation", 12))
UNITS = (("traffic_police", 15), ("exit_entry", 6), ("population", 12), ("public_order", 10), ("criminal", 6),
         ("anti_fraud", 5), ("discipline", 4), ("branch_east", 11), ("branch_west", 10), ("branch_south", 11),
         ("branch_north", 10))
CHANNELS = (("phone", 55), ("voicemail", 20), ("web", 12), ("wechat", 7), ("email", 2), ("letter", 2), ("walk_in", 2))
FORMS = (("general", 70), ("consultation", 25), ("emergency", 5))

DISTRICTS = ("城东区", "城西区", "城南区", "城北区", "高新区", "开发区", "江北区", "滨湖区")
ROADS = ("建设路", "人民路", "解放路", "中山路", "和平街", "长江路", "黄河路", "新华路", "文化路", "胜利街", "光明路",
         "朝阳路", "幸福街", "东风路", "青年路", "花园路", "学府路", "工业大道", "滨江路", "迎宾大道")
PLACES = ("派出所", "交警大队", "车管所", "出入境接待大厅", "户籍窗口", "政务服务中心", "治安岗亭", "小区门口",
          "农贸市场", "地铁站", "汽车站", "学校门口", "医院附近", "商场停车场", "夜市")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志明海燕红梅晓东文"

COMPLAINTS: dict[str, tuple[str, ...]] = {
    "attitude": ("窗口工作人员态度生硬，说话很不耐烦", "民警接电话时语气恶劣，还挂断电话", "办事民警玩手机不理群众",
                 "工作人员推诿扯皮，让我来回跑了三趟"),
    "traffic": ("交警开罚单时不说明理由", "违章停车被贴条但现场没有禁停标志", "路口信号灯时间太短行人过不去",
                "电动车被扣押后一直不给处理", "驾驶证换证排队时间太长"),
    "case_handling": ("报警后民警一直没有到场", "被盗电动车报案两个月没有任何消息", "报警求助后派出所不立案",
                      "案件拖延办理，承办民警联系不上"),
    "law_enforcement": ("执法过程中没有出示证件", "处罚决定书内容与事实不符", "扣押物品没有开具清单"),
    "misconduct": ("有民警在办事时暗示要好处费", "辅警在执勤时吃拿卡要", "民警酒后驾驶警车"),
    "household": ("孩子落户手续材料要求反复变化", "户口迁移办理时间过长", "集体户口证明开具困难"),
    "id_card": ("身份证补办一个月还没拿到", "临时身份证办理需要排队很久", "身份证照片采集设备经常坏"),
    "exit_entry": ("护照办理预约不上", "港澳通行证续签材料说法不一", "出入境大厅取号机故障"),
    "public_order": ("楼下烧烤摊深夜噪声扰民", "娱乐场所音乐声太大影响休息", "小区有人聚众赌博", "广场舞噪声扰民"),
    "fraud": ("接到冒充客服的诈骗电话被骗走两万元", "网购刷单被骗，报案后想了解进展", "冒充公检法的诈骗短信"),
    "suggestion": ("建议在学校门口增加护学岗", "建议延长户籍窗口周末办公时间", "建议在路口增设电子警察"),
    "praise": ("感谢民警帮忙找回走失的老人", "表扬交警冒雨疏导交通", "感谢派出所帮我追回被骗的钱"),
    "consultation": ("咨询新生儿落户需要哪些材料", "咨询驾驶证到期换证流程", "咨询护照加急办理的条件",
                     "咨询居住证办理需要多长时间"),
}
OPENERS = ("您好，我反映一个问题。", "我要投诉。", "你好，我想咨询一下。", "喂，是12389吗？", "我之前打过电话，",
           "")
WHENS = ("昨天下午", "今天上午", "上周五晚上", "前天夜里", "本月初", "三天前", "上个月中旬", "刚才")
REQUESTS = ("希望有关部门尽快核实处理。", "请给我一个答复。", "希望能加强管理。", "请尽快回电话给我。",
            "希望对相关人员严肃处理。", "谢谢。", "请帮忙查一下。")
SEARCH_WORDS = {
    "common": "噪声扰民",    # public_order template, several % of cases
    "medium": "身份证补办",   # one template of id_card
    "rare": "无人机黑飞",     # in a handful of cases only (added below)
}


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]


@dataclass
class CaseGenerator:
    """Deterministic stream of case rows (dicts of column values) and their events.

    Keeps the per-day sequence so numbers stay unique when a database is grown in steps.
    """

    now: dt.datetime
    seed: int = 12389
    next_id: int = 1
    next_event_id: int = 1
    day_seq: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(init=False)
    phones: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _phone(self) -> str:
        rng = self.rng
        # a heavy tail: most numbers call once, a few dozens of times
        if self.phones and rng.random() < 0.35:
            idx = min(int(rng.paretovariate(1.2)) - 1, len(self.phones) - 1)
            return self.phones[-1 - idx] if rng.random() < 0.5 else self.phones[idx]
        p = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
        self.phones.append(p)
        return p

    def _received(self) -> dt.datetime:
        rng = self.rng
        day = self.now - dt.timedelta(days=rng.random() * SPAN_DAYS)
        local = day.astimezone(TZ)
        if rng.random() < 0.7:  # most calls in working hours
            local = local.replace(hour=rng.randrange(8, 18), minute=rng.randrange(60), second=rng.randrange(60))
        when = local.astimezone(dt.UTC)
        return min(when, self.now - dt.timedelta(minutes=1))

    def _content(self, category: str, address: str) -> str:
        rng = self.rng
        parts = [rng.choice(OPENERS), rng.choice(WHENS), "在", address, rng.choice(PLACES), "，",
                 rng.choice(COMPLAINTS[category]), "。"]
        if rng.random() < 0.5:
            other = rng.choice(list(COMPLAINTS))
            parts += ["另外，", rng.choice(COMPLAINTS[other]), "。"]
        if rng.random() < 0.0005:
            parts += ["最近小区附近经常有无人机黑飞，", "担心安全。"]
        parts.append(rng.choice(REQUESTS))
        return "".join(parts)

    def _status(self, age_days: float, form: str) -> str:
        rng = self.rng
        r = rng.random()
        if age_days > 45:
            for status, p in (("closed", 0.80), ("rejected", 0.05), ("discarded", 0.06), ("merged", 0.03),
                              ("replied", 0.03), ("return_visit", 0.02)):
                if r < p:
                    return status
                r -= p
            return "in_progress"  # a few long-running ones
        if age_days < 1 and r < 0.5:
            return "draft"
        if form != "general":
            return rng.choice(("replied", "closed", "closed", "accepted"))
        return rng.choice(("accepted", "assigned", "in_progress", "in_progress", "replied", "return_visit", "closed"))

    def case(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rng = self.rng
        received = self._received()
        age = (self.now - received).total_seconds() / 86400
        category = _weighted(rng, CATEGORIES)
        form = "consultation" if category == "consultation" else _weighted(rng, FORMS)
        status = self._status(age, form)
        day = received.astimezone(TZ).strftime("%Y%m%d")
        seq = self.day_seq.get(day, 0) + 1
        self.day_seq[day] = seq
        district = rng.choice(DISTRICTS)
        address = f"{district}{rng.choice(ROADS)}{rng.randrange(1, 300)}号"
        channel = _weighted(rng, CHANNELS)
        caller = self._phone()
        anonymous = rng.random() < 0.03
        confidential = rng.random() < 0.08
        name = None if anonymous else rng.choice(SURNAMES) + "".join(rng.sample(GIVEN, rng.choice((1, 2))))
        draft = status == "draft"
        accepted = None if draft else received + dt.timedelta(minutes=rng.uniform(2, 60))
        dispatched = status not in ("draft", "accepted", "rejected", "discarded") and form == "general"
        unit = _weighted(rng, UNITS) if dispatched or (status == "closed" and form == "general") else None
        steps = _path(status, form)
        t = received
        events = []
        for action, frm, to in steps:
            t = min(t + dt.timedelta(hours=rng.uniform(0.1, 72)), self.now)
            events.append({"id": self.next_event_id, "case_id": self.next_id, "at": t, "actor": "bench",
                           "action": action, "from_status": frm, "to_status": to, "note": None, "data": "{}"})
            self.next_event_id += 1
        last = events[-1]["at"]
        replied = last if status in ("replied", "return_visit", "closed") else None
        row = {
            "id": self.next_id, "number": f"{day}-{seq:04d}", "channel": channel,
            "category": None if draft else category, "handling_form": None if draft else form, "status": status,
            "complainant_name": name, "complainant_phone": None if anonymous else caller,
            "complainant_unit": None, "address": address, "content": self._content(category, address),
            "caller_number": caller if channel in ("phone", "voicemail") else None, "received_at": received,
            "anonymous": anonymous, "confidential": confidential, "extracted": "{}",
            "source_recording_id": None, "source_transcript_id": None, "source_call_id": None,
            "complexity": "general",
            "no_call": rng.random() < 0.02, "unit": unit, "assignee": None,
            "key_supervision": rng.random() < 0.01, "merged_into_id": None,
            "result": "已核实并处理。" if replied else None, "reply": "已向来电人答复处理结果。" if replied else None,
            "satisfaction": rng.choice(("satisfied", "basically_satisfied", "not_satisfied")) if status == "closed" else None,
            "accepted_at": accepted, "responded_at": accepted, "contacted_at": replied, "replied_at": replied,
            "closed_at": last if status == "closed" else None,
            "sign_due": received + dt.timedelta(minutes=10),
            "contact_due": None if draft else accepted + dt.timedelta(minutes=30),  # type: ignore[operator]
            "reply_due": None if draft else accepted + dt.timedelta(days=7),  # type: ignore[operator]
            "final_due": None if draft else accepted + dt.timedelta(days=30),  # type: ignore[operator]
            "clock_started_at": accepted, "version": len(events), "created_at": received, "updated_at": last,
        }
        self.next_id += 1
        return row, events

    def batches(self, n: int, size: int) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        while n > 0:
            cases, events = [], []
            for _ in range(min(size, n)):
                c, ev = self.case()
                cases.append(c)
                events.extend(ev)
            n -= len(cases)
            yield cases, events


_PATHS = {
    "draft": [],
    "accepted": [("accept", "draft", "accepted")],
    "rejected": [("reject", "draft", "rejected")],
    "discarded": [("discard", "draft", "discarded")],
    "merged": [("merge", "draft", "merged")],
    "assigned": [("accept", "draft", "accepted"), ("dispatch", "accepted", "assigned")],
    "in_progress": [("accept", "draft", "accepted"), ("dispatch", "accepted", "assigned"),
                    ("sign", "assigned", "in_progress")],
}
_PATHS["replied"] = [*_PATHS["in_progress"], ("reply", "in_progress", "replied")]
_PATHS["return_visit"] = [*_PATHS["replied"], ("start_return_visit", "replied", "return_visit")]
_PATHS["closed"] = [*_PATHS["return_visit"], ("close", "return_visit", "closed")]
_DIRECT = {"replied": [("accept", "draft", "accepted"), ("answer_directly", "accepted", "replied")]}
_DIRECT["closed"] = [*_DIRECT["replied"], ("close", "replied", "closed")]


def _path(status: str, form: str) -> list[tuple[str, str | None, str]]:
    """The events a case took to reach ``status``: always "create", then the lifecycle steps."""
    steps = _DIRECT.get(status) if form != "general" else None
    return [("create", None, "draft"), *(steps if steps is not None else _PATHS.get(status, _PATHS["in_progress"]))]


CASE_COLUMNS = [c.name for c in Case.__table__.columns]
EVENT_COLUMNS = [c.name for c in CaseEvent.__table__.columns]


def _copy(cur: Any, table: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
    cols = ", ".join(f'"{c}"' for c in columns)
    with cur.copy(f'COPY "{table}" ({cols}) FROM STDIN') as copy:
        for r in rows:
            copy.write_row([r[c] for c in columns])


def load(engine: Engine, gen: CaseGenerator, n: int, *, batch: int = 20000, progress: Any = None) -> None:
    """Append ``n`` cases (and their events) to the database behind ``engine``."""
    if engine.dialect.name == "postgresql":
        for cases, events in gen.batches(n, batch):
            raw = engine.raw_connection()
            try:
                with raw.cursor() as cur:  # type: ignore[attr-defined]
                    _copy(cur, "case", CASE_COLUMNS, cases)
                    _copy(cur, "case_event", EVENT_COLUMNS, events)
                raw.commit()
            finally:
                raw.close()
            if progress is not None:
                progress.update(len(cases))
    else:
        _sqlite_load(engine, gen, n, batch=batch, progress=progress)
    finish(engine, gen)


BULK_TABLES = ("case", "case_event")


def _sqlite_rows(engine: Engine, table: Table, rows: list[dict[str, Any]]) -> tuple[str, list[tuple[Any, ...]]]:
    """The INSERT and its parameter tuples, each value converted as SQLAlchemy would bind it.

    Why not ``conn.execute(insert(Case), rows)``: SQLAlchemy's per-row work costs more than
    SQLite's; the column types' own bind processors keep the stored form identical
    (UTC datetimes as text, booleans). JSON columns come from the generator as JSON text
    already (what COPY takes too) and go in as they are.
    """
    dialect = engine.dialect
    cols = list(table.columns)
    procs = [None if isinstance(c.type, JSON) else c.type.dialect_impl(dialect).bind_processor(dialect) for c in cols]
    names = [c.name for c in cols]
    quoted = ", ".join(f'"{n}"' for n in names)
    sql = f'INSERT INTO "{table.name}" ({quoted}) VALUES ({", ".join("?" * len(names))})'
    pairs = list(zip(names, procs, strict=True))
    out = [tuple(r[n] if f is None or r[n] is None else f(r[n]) for n, f in pairs) for r in rows]
    return sql, out


def _sqlite_load(engine: Engine, gen: CaseGenerator, n: int, *, batch: int, progress: Any) -> None:
    """SQLite: executemany on one connection, with what slows a million inserts set aside.

    The bench's database is a throwaway file, so for the load only: no rollback journal and
    no fsync (a crash loses the file, not data anyone needs); a large page cache. The
    secondary indexes and the FTS5 triggers of the two tables are dropped and created again
    afterwards from their own stored SQL (sqlite_master), so the schema ends up exactly as
    the migration made it: one sort per index and one FTS5 'rebuild' instead of a B-tree
    update per index and an FTS5 update per row (the loader's time grew with the table).
    """
    engine.dispose()  # journal_mode leaves WAL only on the file's sole connection
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-500000", "temp_store=MEMORY"):
            cur.execute(f"PRAGMA {pragma}")
        tables = ", ".join(f"'{t}'" for t in BULK_TABLES)
        saved = cur.execute(f"SELECT type, name, sql FROM sqlite_master WHERE tbl_name IN ({tables}) "
                            "AND type IN ('index', 'trigger') AND sql IS NOT NULL").fetchall()
        for kind, name, _ in saved:
            cur.execute(f'DROP {kind.upper()} "{name}"')
        case_t, event_t = Case.__table__, CaseEvent.__table__
        for cases, events in gen.batches(n, batch):
            cur.executemany(*_sqlite_rows(engine, case_t, cases))
            cur.executemany(*_sqlite_rows(engine, event_t, events))
            raw.commit()
            if progress is not None:
                progress.update(len(cases))
        for _, _, sql in sorted(saved, key=lambda row: row[0] != "index"):  # indexes, then triggers
            cur.execute(sql)
        for fts in FTS_TABLES:  # its triggers were off: index everything once
            if any(kind == "trigger" and name.startswith(fts) for kind, name, _ in saved):
                cur.execute(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")
        raw.commit()
        cur.close()
    finally:
        raw.invalidate()  # not back to the pool with the load's pragmas


def finish(engine: Engine, gen: CaseGenerator) -> None:
    """Counters and sequences as the application would have left them, and planner statistics as it has them.

    PostgreSQL: fresh statistics, as autovacuum keeps them. SQLite: none. The service never
    runs ANALYZE, so a centre's database plans without sqlite_stat1; measuring with it hid
    plans that sort every case of a status or channel (cases/models.py).
    """
    with engine.begin() as conn:
        conn.execute(delete(CaseCounter))
        if gen.day_seq:
            conn.execute(insert(CaseCounter), [{"day": d, "last": n} for d, n in gen.day_seq.items()])
        if engine.dialect.name == "postgresql":
            for table in ("case", "case_event"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                                  f"(SELECT max(id) FROM \"{table}\"))"))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text('VACUUM ANALYZE "case"'))
            conn.execute(text('VACUUM ANALYZE case_event'))


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(Case)) or 0)


__all__ = ["SEARCH_WORDS", "CaseGenerator", "count", "load"]
