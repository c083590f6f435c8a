"""Likely duplicates of a case, for the operator to merge (never merged automatically).

Two reasons, either suffices:

- ``same_number``: the caller's number or the complainant's phone equals one of another
  case's (normalised: digits only, without the +86 / 0086 prefix) and the two were
  received within ``[cases] duplicate_days`` of each other. Frequent callers report
  different matters too, so these are suggestions, ranked by content similarity.
- ``similar_content``: the contents are at least ``duplicate_similarity`` alike *and*
  the cases share an address (normalised, fuzzy: ASR gets "八十八号" for "88号") or a
  responsible unit. Similar text alone is not enough: "the KTV is too loud" arrives
  from every district; the place tells one matter from another.

Content similarity: jieba word segmentation (a Chinese text has no spaces, and
character n-grams over-match shared boilerplate such as 派出所 / 民警), stop words and
punctuation dropped, then rapidfuzz ``token_set_ratio`` (order-free, tolerant of one text
saying more than the other) blended with a character-level ``ratio`` that still sees
ASR homophone errors (拍出所 for 派出所) that split differently into words. Precision
and recall on tests/fixtures/duplicates.tsv are printed by tests/test_duplicates.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

import jieba
from rapidfuzz import fuzz
from sqlalchemy import select
from sqlalchemy.orm import Session

from cases.lifecycle import DISCARDED, MERGED
from cases.models import Case
from config.settings import CasesSettings

jieba.setLogLevel(logging.WARNING)  # it logs its dictionary loading at DEBUG/INFO on first use

SAME_NUMBER = "same_number"
SIMILAR_CONTENT = "similar_content"
_STOP = frozenset(
    "的 了 是 我 我们 在 有 和 就 也 都 他 她 他们 这 那 个 着 还 说 你 吗 呢 吧 啊 对 把 被 给 去 到 要 会 让 很 "
    "一个 什么 这个 那个 现在 已经 一直 希望 请 请求 要求 反映 情况 问题 事情 事 上次 之前 再次 还是 非常 太 特别 "
    "就是 但是 而且 因为 所以 然后 可以 没有 一下".split()
)
_PUNCT = re.compile(r"[\W_]+", re.UNICODE)
_ADDRESS_NOISE = re.compile(r"(附近|旁边|周边|门口|对面|一带|那边|这边|边上|旁|楼下|一条街)")
_DISTRICT = re.compile(r"^(\w{1,6}?[区县])")
_ZH_DIGITS = str.maketrans("〇零一二两三四五六七八九", "001223456789")


@lru_cache(maxsize=20000)
def tokens(text: str) -> tuple[str, ...]:
    """Content words of a text (cached: the same candidates are compared again and again)."""
    norm = unicodedata.normalize("NFKC", text or "").lower()
    return tuple(w for w in jieba.lcut(norm) if w.strip() and not _PUNCT.fullmatch(w) and w not in _STOP)


def content_similarity(a: str, b: str) -> float:
    """0-1: word-set similarity blended with character similarity (see the module docstring)."""
    ta, tb = tokens(a), tokens(b)
    if not ta or not tb:
        return 0.0
    words = fuzz.token_set_ratio(" ".join(ta), " ".join(tb)) / 100
    chars = fuzz.ratio("".join(ta), "".join(tb)) / 100
    return 0.6 * words + 0.4 * chars


def normalise_phone(number: str | None) -> str | None:
    """Digits only, without the country prefix; None when nothing dialable is left."""
    if not number:
        return None
    digits = re.sub(r"\D", "", unicodedata.normalize("NFKC", number))
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) - len(prefix) >= 7:
            digits = digits[len(prefix):]
            break
    return digits if len(digits) >= 5 else None


def _zh_number(m: re.Match[str]) -> str:
    """一百二十三 → 123, 八十八 → 88, 十五 → 15 (what ASR writes for house numbers)."""
    s = m.group(0)
    total, cur = 0, 0
    units = {"十": 10, "百": 100, "千": 1000}
    for ch in s:
        if ch in units:
            total += (cur or 1) * units[ch]
            cur = 0
        else:
            cur = cur * 10 + int(ch.translate(_ZH_DIGITS))
    return str(total + cur)


def normalise_address(address: str | None) -> str:
    """Comparable form: full-width → half-width, Chinese numerals → digits, punctuation and vague words dropped."""
    if not address:
        return ""
    s = unicodedata.normalize("NFKC", address).lower()
    s = re.sub(r"[〇零一二两三四五六七八九十百千]+", _zh_number, s)
    s = s.replace("楼", "层") if re.search(r"\d+楼(?!下)", s) else s
    s = _ADDRESS_NOISE.sub("", s)
    return _PUNCT.sub("", s)


def address_similarity(a: str | None, b: str | None) -> float:
    na, nb = normalise_address(a), normalise_address(b)
    if not na or not nb:
        return 0.0
    da, db = _DISTRICT.match(na), _DISTRICT.match(nb)
    if da and db and da.group(1) != db.group(1):
        return 0.0  # 城东区万达广场 and 城西区万达广场 are two places
    # partial_ratio: "城东区新华街15号" is the same place as "城东区新华街15号1层".
    return max(fuzz.ratio(na, nb), fuzz.partial_ratio(na, nb) if min(len(na), len(nb)) >= 6 else 0) / 100


@dataclass(frozen=True)
class Suggestion:
    case_id: int
    number: str
    score: float
    """Content similarity 0-1 (the ranking key)."""
    reasons: tuple[str, ...]
    same_address: bool = False
    same_unit: bool = False
    details: dict[str, float] = field(default_factory=dict)


def _numbers(case: Case) -> set[str]:
    return {n for n in (normalise_phone(case.caller_number), normalise_phone(case.complainant_phone)) if n}


def suggest(
    session: Session, case: Case, limit: int = 5, *, settings: CasesSettings | None = None
) -> list[Suggestion]:
    """Up to ``limit`` likely duplicates of ``case`` received within ``duplicate_days`` of it.

    Discarded cases and merged ones (their survivor is suggested instead) are left out.
    """
    cfg = settings or CasesSettings()
    window = dt.timedelta(days=cfg.duplicate_days)
    q = select(Case).where(
        Case.id != case.id,
        Case.status.not_in((DISCARDED, MERGED)),
        Case.received_at >= case.received_at - window,
        Case.received_at <= case.received_at + window,
    )
    mine = _numbers(case)
    out: list[Suggestion] = []
    for other in session.scalars(q):
        sim = content_similarity(case.content, other.content)
        reasons = []
        if mine & _numbers(other):
            reasons.append(SAME_NUMBER)
        addr = address_similarity(case.address, other.address)
        same_address = addr >= cfg.duplicate_address_similarity
        same_unit = bool(case.unit) and case.unit == other.unit
        if sim >= cfg.duplicate_similarity and (same_address or same_unit):
            reasons.append(SIMILAR_CONTENT)
        if reasons:
            out.append(Suggestion(other.id, other.number, round(sim, 4), tuple(reasons), same_address, same_unit,
                                  {"content": round(sim, 4), "address": round(addr, 4)}))
    out.sort(key=lambda s: (-len(s.reasons), -s.score, s.case_id))
    return out[:limit]


def repeat_count(session: Session, case: Case) -> int:
    """How many cases were merged into this one (directly or through a chain)."""
    from cases.actions import merged_cases

    return len(merged_cases(session, case))
