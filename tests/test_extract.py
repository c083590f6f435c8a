"""Chinese text post-processing: spoken numerals, phone numbers, address hints, low-confidence words.

The main evidence is tests/fixtures/messages_zh.tsv: hotline messages of the kind callers
leave at 12389, each with the phones and address a careful operator would type from it.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import phonenumbers
import pytest

from transcription.extract import (
    Extracted,
    extract,
    find_address,
    find_phones,
    low_confidence,
    normalize_address_numbers,
    phone_digits,
)

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "messages_zh.tsv"
REFERENCES = HERE.parent.parent / "shared" / "speech" / "references.tsv"


def _load_messages() -> list[dict[str, str]]:
    with FIXTURE.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


MESSAGES = _load_messages()


def _phones(cell: str) -> list[str]:
    return [p for p in cell.split(",") if p]


# ---------------------------------------------------------------- the fixture itself


def test_fixture_is_large_and_covers_the_hard_cases() -> None:
    assert len(MESSAGES) >= 40
    assert len({m["id"] for m in MESSAGES}) == len(MESSAGES)
    texts = [m["text"] for m in MESSAGES]
    assert sum(not _phones(m["phones"]) for m in MESSAGES) >= 8, "messages with no phone at all"
    assert sum(len(_phones(m["phones"])) >= 2 for m in MESSAGES) >= 4, "two numbers in one message"
    assert sum(_phones(m["phones"])[:1] != [] and _phones(m["phones"])[0].startswith("0") for m in MESSAGES) >= 4
    assert any("幺" in t for t in texts) and any("两两" in t or "两三四" in t for t in texts)
    assert any(re.search("[０-９]", t) for t in texts), "full-width digits"
    assert any(re.search(r"[一二三四五六七八九零]+\d|\d+[一二三四五六七八九零]", t) for t in texts), "mixed digits"


# ---------------------------------------------------------------- realistic messages


@pytest.mark.parametrize("msg", MESSAGES, ids=[m["id"] for m in MESSAGES])
def test_message_phones(msg: dict[str, str]) -> None:
    assert find_phones(msg["text"]) == _phones(msg["phones"]), msg["note"]


@pytest.mark.parametrize("msg", MESSAGES, ids=[m["id"] for m in MESSAGES])
def test_message_address(msg: dict[str, str]) -> None:
    assert find_address(msg["text"]) == (msg["address"] or None), msg["note"]


def _as_transcript(text: str) -> str:
    """The same message as a recogniser writes it: no punctuation, a space between tokens."""
    return " ".join(c for c in re.sub(r"[，。、：？！；,?!;:（）()]", "", text) if not c.isspace())


@pytest.mark.parametrize("msg", MESSAGES, ids=[m["id"] for m in MESSAGES])
def test_message_as_raw_transcript(msg: dict[str, str]) -> None:
    """Vosk output has no punctuation and spaces between tokens; the answer must not change."""
    got = extract(_as_transcript(msg["text"]))
    assert got.phones == _phones(msg["phones"]), msg["note"]
    assert got.address == (msg["address"] or None), msg["note"]


def test_fixture_scores() -> None:
    """Overall precision/recall on the fixture, so a rule change that trades one for the other shows."""
    tp = fp = fn = 0
    for m in MESSAGES:
        got, want = set(find_phones(m["text"])), set(_phones(m["phones"]))
        tp, fp, fn = tp + len(got & want), fp + len(got - want), fn + len(want - got)
    assert tp > 0
    assert tp / (tp + fp) == 1.0 and tp / (tp + fn) == 1.0, (tp, fp, fn)


def test_every_phone_found_is_a_valid_chinese_number() -> None:
    for m in MESSAGES:
        for p in find_phones(m["text"]):
            assert p.isascii() and p.isdigit()
            assert phonenumbers.is_valid_number(phonenumbers.parse(p, "CN")), (m["id"], p)
            assert re.fullmatch(r"1[3-9]\d{9}|0\d{9,11}", p), (m["id"], p)


# ---------------------------------------------------------------- reference texts of the recordings


# The phones column of references.tsv is empty for the tts_cmn_complaint rows, although their
# reference text ends "电话一三八零七九六一二三四" (a valid mobile; same message as m07 in
# our fixture). Reported to the lead; used only while the shared column stays empty.
REFERENCE_ERRATA = {
    "tts_cmn_complaint_16k.wav": ["13807961234"],
    "tts_cmn_complaint_8k.wav": ["13807961234"],
}


def _zh_references() -> list[tuple[str, str, list[str]]]:
    with REFERENCES.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    by_file = {r["file"]: r["reference"] for r in rows}
    out = []
    for r in rows:
        if r["language"] != "zh":
            continue
        text = r["reference"]
        if text.startswith("("):
            # A description of a spliced recording, e.g. "(synth-zh-vm02, then 12 s of silence,
            # then synth-zh-vm03)": its text is the referenced messages in that order.
            parts = re.findall(r"synth-zh-vm\d+", text)
            assert parts, text
            text = " ".join(by_file[f"{p}_8k.wav"] for p in parts)
        phones = _phones(r["phones"]) or REFERENCE_ERRATA.get(r["file"], [])
        out.append((r["file"], text, phones))
    return out


@pytest.mark.skipif(not REFERENCES.exists(), reason=f"shared speech references not found at {REFERENCES}")
def test_reference_texts_phones() -> None:
    refs = _zh_references()
    assert len(refs) >= 8
    assert sum(bool(p) for _, _, p in refs) >= 5
    for name, text, phones in refs:
        assert find_phones(text) == phones, name


# ---------------------------------------------------------------- numerals


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("一三九 零七九六 五五六六", "139 0796 5566"),
        ("幺八六两两三三", "1862233"),
        ("０７９６－８２２３４５６", "0796－8223456"),
        ("〇七九六", "0796"),
        ("一三九0796五五六六", "13907965566"),
        # quantities are left alone: they are not digit strings
        ("二十三号楼", "二十三号楼"),
        ("两千块", "两千块"),
        ("一百零八号", "一百零八号"),
        ("二零二五年", "2025年"),
    ],
)
def test_phone_digits(text: str, expected: str) -> None:
    assert phone_digits(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("文山路二十三号", "文山路23号"),
        ("井冈山大道一百零八号", "井冈山大道108号"),
        ("三栋二单元五零二室", "3栋2单元502室"),
        ("十楼", "10楼"),
        ("上田村三组", "上田村3组"),
        ("中山二路", "中山二路"),
        ("八一大道", "八一大道"),
        ("五一广场", "五一广场"),
    ],
)
def test_normalize_address_numbers(text: str, expected: str) -> None:
    assert normalize_address_numbers(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "我家住二十三号楼，已经反映了三次",
        "二零二五年十月一号到十月八号放假",
        "等了两个多小时，前面还有十五个人",
        "被骗了两万三千五百元",
        "一九九零年出生，今年三十五岁",
        "三栋二单元五零二室",
        "我打了一一零，也打了一二三八九，还打了幺零零八六",
        "晚上十一点到凌晨两点一直很吵",
        "警号是零一二三四五六七八九零",
        "订单号一三九零七九六五五六六",
        "我的身份证号码是一 三 零 一 零 二 一 九 九 零 零 一 零 一 一 二 三 四",
        "一三零一零二一九九零零一零一一二三四",  # an ID card number without a cue (birth date inside)
        "是这个，三六零八零二 一九九零零一零一 一二三四",  # read in its parts: 1990010112(3) must not become a 199 mobile
        "号是三六零八零二 一九九零零一零一 一二三叉",  # 17 digits and X
        "四零零 八八八 一二三四",  # toll-free: cannot be called back as given
        "八二二三四五六",  # local number without area code
    ],
)
def test_no_phone_in_quantities_dates_and_other_numbers(text: str) -> None:
    assert find_phones(text) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("电话一三九零七九六五五六六", ["13907965566"]),
        ("电话 一 三 九 零 七 九 六 五 五 六 六", ["13907965566"]),
        ("电话一三九，零七九六，五五六六", ["13907965566"]),
        ("电话一三九——零七九六——五五六六", ["13907965566"]),
        ("电话（零七九六）八二二三四五六", ["07968223456"]),
        ("电话0086 139 0796 5566", ["13907965566"]),
        ("零幺零 六二三四 五六七八", ["01062345678"]),
        ("一三九零七九六五五六六和一三九零七九六五五六六", ["13907965566"]),
        ("先打一八六零七九六零零零零，不通再打一三九零七九六五五六六", ["18607960000", "13907965566"]),
        # a digit that belongs to the time after the number
        ("一三九零七九六五五六六十点以后打", ["13907965566"]),
        # twelve digits with a glued 一 at the end: the stray digit is shed
        ("一三九零七九六五五六六一定要回电话", ["13907965566"]),
        # the ID number is not a phone, the number after it is
        ("身份证号360802199001011234电话13907965566", ["13907965566"]),
    ],
)
def test_phones_in_short_texts(text: str, expected: list[str]) -> None:
    assert find_phones(text) == expected


def test_eleven_digits_that_are_not_a_mobile() -> None:
    assert find_phones("电话一二三四五六七八九零一") == []
    assert find_phones("电话16012345678") == []  # 160 is not an allocated mobile prefix
    # the same shape with a real prefix is taken, so the rejections above are about validity
    assert find_phones("电话一五三四五六七八九零一") == ["15345678901"]


def test_empty_and_blank_text() -> None:
    for text in ("", "   ", "\n", "，。"):
        assert extract(text) == Extracted(phones=[], address=None)


def test_extract_combines_phones_and_address() -> None:
    got = extract("地址是青原区滨江路十八号，电话一三八零七九六一二三四")
    assert got == Extracted(phones=["13807961234"], address="青原区滨江路18号")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我在网上被人骗了", None),  # 在 without a place
        ("我在这里办居住证", None),
        ("我在三月五号去过派出所", None),  # a date is not a house number
        ("位于八一大道三百号", "八一大道300号"),
        ("家住吉州区文山路二十三号，电话一三九零七九六五五六六", "吉州区文山路23号"),
        ("地址在吉州区文山路二十三号我的电话是一三九零七九六五五六六", "吉州区文山路23号"),
        ("住在文山小区七栋楼下有人烧烤", "文山小区7栋"),
    ],
)
def test_address_rules(text: str, expected: str | None) -> None:
    assert find_address(text) == expected


# ---------------------------------------------------------------- low-confidence words

WORDS = [
    {"word": "我", "start": 0.0, "end": 0.2, "conf": 0.99},
    {"word": "住在", "start": 0.2, "end": 0.5, "conf": 0.61},
    {"word": "文山", "start": 0.5, "end": 0.9, "conf": 0.42},
    {"word": "路", "start": 0.9, "end": 1.0, "conf": 0.8},
    {"word": "二十三", "start": 1.0, "end": 1.4, "conf": 0.3},
]


def test_low_confidence_keeps_order_and_timing() -> None:
    got = low_confidence(WORDS, 0.7)
    assert [w["word"] for w in got] == ["住在", "文山", "二十三"]
    assert got[1] == {"word": "文山", "start": 0.5, "end": 0.9, "conf": 0.42}


def test_low_confidence_threshold_is_strict_and_bounded() -> None:
    assert [w["word"] for w in low_confidence(WORDS, 0.8)] == ["住在", "文山", "二十三"]
    assert low_confidence(WORDS, 0.0) == []
    assert len(low_confidence(WORDS, 1.0)) == len(WORDS)
    assert low_confidence([], 0.5) == []
    with pytest.raises(ValueError, match="between 0 and 1"):
        low_confidence(WORDS, 1.5)


def test_low_confidence_returns_copies_and_flags_unknown_confidence() -> None:
    words = [dict(w) for w in WORDS] + [{"word": "喂", "start": 1.4, "end": 1.6}]
    got = low_confidence(words, 0.5)
    assert [w["word"] for w in got] == ["文山", "二十三", "喂"]
    got[0]["word"] = "changed"
    assert words[2]["word"] == "文山"


# ---------------------------------------------------------------- the real console script


def test_cli_json(hotline) -> None:  # type: ignore[no-untyped-def]
    text = "我住在吉州区文山路二十三号，电话一五八 七零六九 八八七七，座机零七九六八二二三四五六"
    proc = hotline("extract", "--json", text)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"phones": ["15870698877", "07968223456"], "address": "吉州区文山路23号"}


def test_cli_human_readable(hotline) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("extract", "地址是青原区滨江路十八号，电话一三八零七九六一二三四")
    assert proc.returncode == 0, proc.stderr
    assert "13807961234" in proc.stdout
    assert "青原区滨江路18号" in proc.stdout
    assert not proc.stdout.lstrip().startswith("{")


def test_cli_nothing_found_and_empty_text(hotline) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("extract", "--json", "")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"phones": [], "address": None}
    proc = hotline("extract", "我想表扬出入境大厅的工作人员")
    assert proc.returncode == 0, proc.stderr
    assert "(none)" in proc.stdout


def test_cli_reads_stdin(hotline) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("extract", "--json", "-", input="对方号码是一七七幺二三四五六七八\n我的电话是一八六零七九六零零零零\n")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["phones"] == ["17712345678", "18607960000"]


def test_cli_bad_usage(hotline) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("extract")
    assert proc.returncode == 2
    assert "TEXT" in proc.stderr
