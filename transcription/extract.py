"""Fields extracted from a Chinese hotline message (interface fixed by the lead).

Contract used by the pipeline and `hotline transcribe --json`:

    extract(text: str) -> Extracted
    Extracted.phones: list[str]   # validated Chinese mobile / landline numbers, digits only, in spoken order
    Extracted.address: str | None # address hint
    low_confidence(words: list[dict], threshold: float) -> list[dict]  # words marked for the reviewer

Also public: `phone_digits(text)` (spoken numerals -> Arabic digits, for phone purposes)
and `normalize_address_numbers(text)` (house numbers in an address -> Arabic).

How phone numbers are found, and why
------------------------------------
Callers read phone numbers digit by digit ("一三九 零七九六 五五六六", "幺", "两"),
often with pauses that the transcript shows as spaces, commas or dashes. Quantities
("二十三号楼", "三次", "两千块") use the positional characters 十百千万亿. So:

1. A *digit* is an Arabic or full-width digit or one of 零〇一二三四五六七八九幺两.
   A *run* is digits joined only by pause marks (spaces, commas, 、, dashes, dots,
   brackets, "+", colons, and the fillers 呃/嗯). Pause marks split a run into *groups*.
2. A digit touching 十百千万亿 belongs to a quantity ("二十三" -> nothing digit-like).
   When such a digit sits at the edge of a longer run ("…五五六六十点以后") it is made
   its own group, so the number can be taken with or without it.
3. The number is read digit by digit with a fixed table, not with `cn2an.transform`:
   cn2an reads a string as a quantity where it can, and a phone number is not one.
4. A phone number is a span of whole consecutive groups of a run whose digits are a
   valid Chinese number for `phonenumbers`: a mobile (1[3-9], 11 digits) or a fixed
   line with its area code (0 + 2-3 digit area code + 7-8 digits, e.g. 0796-8223456,
   010-62345678). An optional 86/0086 country prefix is accepted and dropped. Toll-free
   400/800 numbers, service numbers (110, 12389, 10086) and local numbers without area
   code are not taken: they cannot be called back as given.
   The span may shed one stray digit at either outer edge, when glued to a chunk of at
   least three digits of the number ("统一一三九…", "…五五六六一定"): words ending or
   starting with 一/两 glue onto a number when the transcript has no pause. More is not
   guessed: 13 digits said for a mobile is a misheard number, not a number plus junk.
   A run of one unbroken group longer than a number is only taken when it splits exactly
   into valid numbers (two numbers said without a pause), never cut out of its middle.
   A run written one token per digit ("一 三 九 …", as a recogniser may) counts as one
   unbroken group: those spaces are tokenisation, not pauses.
5. Within a run the split with the most numbers (then the most digits covered) wins;
   numbers are returned in spoken order, without duplicates.
6. Runs that are not phone numbers: after 身份证/证件/银行卡/卡号/账号/单号/车牌/工号/
   警号/编号/QQ (the nearest cue before the run decides), and 17-18 digit runs whose
   digits 7-14 are a birth date (an ID card number read out without a cue).

Address hint, and why
---------------------
Text after an explicit cue (地址是/地址在/住址/住在/家住/家在/位于/地点在…), else after a
bare 在 when what follows names a road, street, community or village. Spaces (a
recogniser's tokenisation) are removed first, except between ASCII letters/digits. The text is cut at a
clause boundary (punctuation), at words that start something else (电话, 号码, 我的, 有人,
楼下, 门口, …) or at a date, and then kept only as far as it reads as address parts
(name + 省/市/区/县/镇/村/路/街/小区/号/栋/单元/室…), so an unpunctuated transcript
("住在文山路二十三号楼下有人天天占道") stops at "文山路二十三号". A trailing room number
said without 室 after 栋/单元/楼/号 is kept ("一栋二零一" -> 1栋201).
Numbers in the house-number positions are written in Arabic digits (二十三号 -> 23号,
三栋二单元五零二室 -> 3栋2单元502室), as an operator would type them; numerals in names
(中山二路, 八一大道, 五一广场) are kept as spoken, because that is how those names are written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

import cn2an
import phonenumbers


@dataclass
class Extracted:
    phones: list[str] = field(default_factory=list)
    address: str | None = None


def extract(text: str) -> Extracted:
    """Phone numbers and an address hint from a transcript or typed message."""
    return Extracted(phones=find_phones(text), address=find_address(text))


def low_confidence(words: list[dict], threshold: float) -> list[dict]:
    """Words whose confidence is below `threshold`, in order, with their timing.

    Returns copies (the caller's list is untouched). A word with no confidence is
    returned too: an unknown confidence is one the reviewer should check.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"confidence threshold must be between 0 and 1, got {threshold!r}")
    out = []
    for w in words:
        conf = w.get("conf")
        if conf is None or conf < threshold:
            out.append(dict(w))
    return out


# ---------------------------------------------------------------- digits

_DIGIT_MAP = {
    **{c: str(i) for i, c in enumerate("零一二三四五六七八九")},
    "〇": "0",
    "幺": "1",
    "两": "2",
    **{chr(0xFF10 + i): str(i) for i in range(10)},  # full-width ０-９
    **{str(i): str(i) for i in range(10)},
}
_DIGIT_CHARS = "".join(_DIGIT_MAP)
_QUANTITY_CHARS = "十拾百佰千仟万萬亿億"
# Pause marks that may sit between the digits of one spoken number.
_SEP = r"[\s,，、\-－—–~～.。…·()（）+＋:：呃嗯]"
_RUN = re.compile(rf"[{_DIGIT_CHARS}](?:{_SEP}*[{_DIGIT_CHARS}])*")
_GROUP = re.compile(rf"[{_DIGIT_CHARS}]+")


def phone_digits(text: str) -> str:
    """Spoken/full-width digit strings in `text` rewritten as Arabic digits.

    "一三九 零七九六 五五六六" -> "139 0796 5566", "幺八六" -> "186", "０７９６" -> "0796".
    Numerals that are part of a quantity (touching 十百千万亿: "二十三号", "两千") are left
    as they are; that is cn2an's business (see `normalize_address_numbers`).
    """

    def repl(m: re.Match[str]) -> str:
        s, e = m.span()
        if (s and text[s - 1] in _QUANTITY_CHARS) or (e < len(text) and text[e] in _QUANTITY_CHARS):
            return m.group()
        return "".join(_DIGIT_MAP[c] for c in m.group())

    return _GROUP.sub(repl, text)


# ---------------------------------------------------------------- phones

_NOT_PHONE_CUE = re.compile(r"身份证|证件|银行卡|卡号|账号|账户|帐号|单号|订单|车牌|工号|警号|编号|学号|QQ|qq|扣扣")
_PHONE_CUE = re.compile(r"电话|手机|号码|座机|联系|打给|拨打|致电|回电")
_CUE_LOOKBACK = 12
_STRAY = 1  # stray digits a number may shed at its outer edges (a glued 一/两)


def _valid_phone(digits: str) -> str | None:
    """The callable number in `digits` (digits only) if it is a CN mobile/landline, else None."""
    n = len(digits)
    if digits.startswith("0086"):
        digits, n = digits[4:], n - 4
        intl = True
    elif digits.startswith("86") and n >= 12:
        digits, n = digits[2:], n - 2
        intl = True
    else:
        intl = False
    if intl and digits.startswith("0"):
        return None  # +86 is followed by the area code without its 0
    if not intl and not digits.startswith(("0", "1")):
        return None
    if not (9 if intl else 10) <= n <= 12:
        return None
    try:
        num = phonenumbers.parse("+86" + digits if intl else digits, "CN")
    except phonenumbers.NumberParseException:
        return None
    if num.country_code != 86 or not phonenumbers.is_valid_number(num):
        return None
    kind = phonenumbers.number_type(num)
    nsn = phonenumbers.national_significant_number(num)
    T = phonenumbers.PhoneNumberType
    if kind in (T.MOBILE, T.FIXED_LINE_OR_MOBILE) and re.fullmatch(r"1[3-9]\d{9}", nsn):
        # "0" + mobile parses as the mobile; accept only the plain 11 digits as said.
        return nsn if intl or digits == nsn else None
    if kind == T.FIXED_LINE and re.fullmatch(r"[1-9]\d{8,10}", nsn):
        return "0" + nsn
    return None


def _looks_like_id_card(digits: str, after: str) -> bool:
    """18 digits, or 17 followed by X, with a birth date at positions 7-14."""
    if not (len(digits) == 18 or (len(digits) == 17 and after[:1] in ("X", "x", "叉"))):
        return False
    try:
        born = date(int(digits[6:10]), int(digits[10:12]), int(digits[12:14]))
    except ValueError:
        return False
    return 1900 <= born.year <= 2100


def _nearest_cue_says_not_phone(text: str, start: int) -> bool:
    # Spaces are dropped first: a transcript may spell the cue as "身份证 号" or "Q Q 号".
    window = re.sub(r"\s+", "", text[max(0, start - 4 * _CUE_LOOKBACK) : start])[-_CUE_LOOKBACK:]
    last_not = max((m.end() for m in _NOT_PHONE_CUE.finditer(window)), default=-1)
    last_phone = max((m.end() for m in _PHONE_CUE.finditer(window)), default=-1)
    return last_not > last_phone


def _groups(text: str, run: re.Match[str]) -> list[str]:
    """The run's digit groups (Arabic), splitting off an edge digit that touches a quantity."""
    groups = ["".join(_DIGIT_MAP[c] for c in g) for g in _GROUP.findall(run.group())]
    s, e = run.span()
    if e < len(text) and text[e] in _QUANTITY_CHARS:
        last = groups.pop()
        groups += [last[:-1], last[-1]] if len(last) > 1 else [last]
    if s > 0 and text[s - 1] in _QUANTITY_CHARS:
        first = groups.pop(0)
        groups[:0] = [first[0], first[1:]] if len(first) > 1 else [first]
    groups = [g for g in groups if g]
    # One token per digit ("一 三 九 …", how a recogniser may write it): the spaces are
    # tokenisation, not pauses, so they say nothing about where a number starts or ends.
    if len(groups) > 1 and all(len(g) == 1 for g in groups):
        groups = ["".join(groups)]
    return groups


def _exact_split(digits: str) -> list[str] | None:
    """`digits` cut into valid numbers with nothing left over (said without a pause)."""
    if not digits:
        return []
    for k in range(min(12, len(digits)), 9, -1):
        if _valid_phone(digits[:k]):
            rest = _exact_split(digits[k:])
            if rest is not None:
                return [digits[:k], *rest]
    return None


def _span_phone(groups: list[str], i: int, j: int) -> tuple[str, int] | None:
    """A valid number made of groups i..j (inclusive), shedding <= _STRAY outer digits."""
    digits = "".join(groups[i : j + 1])
    if len(digits) > 15 + 2 * _STRAY:
        return None
    best = None
    # Shed digits must have been glued to a chunk of at least 3 digits of the number.
    for a in range(min(_STRAY, len(groups[i]) - 3) + 1 if len(groups[i]) > 3 else 1):
        for b in range(min(_STRAY, len(groups[j]) - 3) + 1 if len(groups[j]) > 3 else 1):
            if i == j and a + b > len(digits) - 3:
                continue
            phone = _valid_phone(digits[a : len(digits) - b])
            if phone and (best is None or a + b < best[1]):
                best = (phone, a + b)
    return best


def _phones_in_run(groups: list[str]) -> list[str]:
    # A long unbroken group that splits exactly into numbers is two numbers said at once.
    expanded: list[str] = []
    for g in groups:
        parts = _exact_split(g) if 12 < len(g) <= 36 else None
        expanded += parts if parts else [g]
    groups = expanded
    n = len(groups)
    # best[k] = (count, covered digits, phones) for groups[k:]
    best: list[tuple[int, int, list[str]]] = [(0, 0, [])] * (n + 1)
    for i in range(n - 1, -1, -1):
        cand = best[i + 1]
        length = 0
        for j in range(i, n):
            length += len(groups[j])
            if length > 15 + 2 * _STRAY:
                break
            found = _span_phone(groups, i, j)
            if found:
                phone, shed = found
                rest = best[j + 1]
                option = (rest[0] + 1, rest[1] + length - shed, [phone, *rest[2]])
                if option[:2] > cand[:2]:
                    cand = option
        best[i] = cand
    return best[0][2]


def find_phones(text: str) -> list[str]:
    """Valid Chinese mobile/landline numbers in `text`, digits only, spoken order, no duplicates."""
    phones: list[str] = []
    for run in _RUN.finditer(text):
        groups = _groups(text, run)
        digits = "".join(groups)
        if len(digits) < 10:
            continue
        if _nearest_cue_says_not_phone(text, run.start()):
            continue
        if _looks_like_id_card(digits, text[run.end() :]):
            continue
        for p in _phones_in_run(groups):
            if p not in phones:
                phones.append(p)
    return phones


# ---------------------------------------------------------------- address

# Spaces in a transcript are tokenisation; only those between two ASCII letters/digits are kept.
_TOKEN_SPACE = re.compile(r"(?<![A-Za-z0-9])\s+|\s+(?![A-Za-z0-9])")
# Explicit cues first; a bare 在 needs a named road/street/community/village after it.
_CUE = re.compile(r"(?:地址|住址|地点)(?:是|在|为|：|:)?|家住在?|住在|家在|位于|坐落于")
_BARE_CUE = re.compile(r"在")
_STRONG_PLACE = re.compile(r"路|街|大道|巷|弄|胡同|小区|村|社区|镇|乡|花园|大厦|广场|公寓")
_CLAUSE_END = re.compile(r"[，,。.！!？?；;：:\n、“”\"（）()]")
_STOP = re.compile(
    r"电话|手机|号码|座机|联系|我的|我是|我姓|我叫|我要|我想|谢谢|请|麻烦|有人|那个|这个"
    r"|楼下|楼上|门口|附近|旁边|对面|(?<=路)口|交叉|交界|里面|外面|这边|那边"
    r"|(?<=[村镇区])里|路灯|(?<=[路街])[上边面]"
    r"|" + _NOT_PHONE_CUE.pattern  # 车牌号, 工号 … end in 号 but never continue an address
    + r"|[零〇一二三四五六七八九十两\d]{1,3}月[零〇一二三四五六七八九十两\d]{1,3}[日号]"
    r"|[零〇一二三四五六七八九两\d]{2,4}年"
)
_NAME = r"[^\s，,。.！!？?；;：:我你他她的了是有在也吗呢吧啊呃嗯]"
_SUFFIX = (
    r"(?:自治州|自治县|街道|社区|小区|花园|公寓|大厦|广场|大道|胡同|号楼|号院|单元"
    r"|省|市|州|区|县|旗|镇|乡|村|组|路|街|巷|弄|号|栋|幢|座|楼|层|室)"
)
# A room number said without 室 may close an address after 栋/单元/楼/号 ("一栋二零一").
_ROOM = r"(?:(?<=栋)|(?<=幢)|(?<=单元)|(?<=楼)|(?<=号))[零〇一二三四五六七八九幺两0-9]{3,4}(?![零〇一二三四五六七八九幺两0-9十百])"
_ADDRESS = re.compile(rf"(?:{_NAME}{{1,12}}?{_SUFFIX})+(?:{_ROOM})?")
_CN_NUM = "零〇一二三四五六七八九十百千两幺"
_HOUSE_NUMBER = re.compile(rf"([{_CN_NUM}]+)(?=号|栋|幢|单元|层|室|组|楼)")


def normalize_address_numbers(address: str) -> str:
    """Numerals before house-number units in Arabic digits: 二十三号 -> 23号, 五零二室 -> 502室.

    Quantities (with 十/百/千) go through cn2an; digit-by-digit readings through the digit
    table (cn2an would read "五零二" right too, but "一零一" style room numbers are not
    quantities and the table is exact).
    """

    def repl(m: re.Match[str]) -> str:
        s = m.group(1)
        if any(c in s for c in "十百千"):
            try:
                return str(cn2an.cn2an(s, "smart"))
            except (ValueError, KeyError):
                return s
        return "".join(_DIGIT_MAP.get(c, c) for c in s)

    address = _HOUSE_NUMBER.sub(repl, address)
    room = re.search(rf"(?:{_ROOM})$", address)
    if room:
        address = address[: room.start()] + "".join(_DIGIT_MAP.get(c, c) for c in room.group())
    return address


def _address_after(text: str, start: int) -> str | None:
    rest = text[start : start + 60]
    for pat in (_CLAUSE_END, _STOP):
        m = pat.search(rest)
        if m:
            rest = rest[: m.start()]
    m = _ADDRESS.match(rest)
    return m.group() if m else None


def _candidates(text: str) -> Iterable[str | None]:
    for m in _CUE.finditer(text):
        yield _address_after(text, m.end())
    for m in _BARE_CUE.finditer(text):
        a = _address_after(text, m.end())
        if a and _STRONG_PLACE.search(a):
            yield a


def find_address(text: str) -> str | None:
    """The first address hint in `text`, house numbers in Arabic digits, or None."""
    text = _TOKEN_SPACE.sub("", text)
    text = text.translate({0xFF10 + i: str(i) for i in range(10)})
    for a in _candidates(text):
        if a and len(a) >= 2:
            return normalize_address_numbers(a)
    return None
