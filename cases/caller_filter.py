"""The case list's caller filter (``GET /api/v1/cases?caller=``): digits in the caller's number or the complainant's phone.

Typed digits have always matched as a substring of either column, so a partial number
("8000", the last digits a reporter remembers) finds its cases. On SQLite that reads every
case (plain b-tree indexes; PostgreSQL has trigram indexes): 14.7 s for a number that called
once among 1M cases (bench/api.py).

A *complete* number is looked up through the indexes instead: the column must start with
one of the spellings the service stores for that number — national (13800138000,
01012345678), with the country code (+8613800138000, 8613800138000, 008613800138000,
+00861…) and with or without the trunk 0 (013800138000: PBXs prefix it for another city's
mobile) — keeping only the spellings that contain the typed digits, so that the matches
are those of the substring test whose value begins with the number. A value that carries
text after the number ("13800138000 转 123") still matches; one with text before it
("手机13800138000") no longer does. Numbers the service writes never have a prefix other
than those (SIP user parts, callbacks.dialable, campaigns' E.164, operators' typing).

Complete means that no other number of the Chinese plan can contain the digits, so that
only those spellings could: an 11-digit mobile, or a fixed line written with its trunk 0
or the country code, an area code and 8 digits. Without the 0 it is not (1012345678 lies
inside Handan's 0310-12345678), nor with a 7-digit local number (the start of an 8-digit
one elsewhere): those stay a substring search like any partial number.
"""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement, and_, or_, select

from cases.models import Case

COUNTRY = ("", "+86", "86", "0086", "+0086")
"""How the country code is written in front of a national number, if at all."""
_TYPED = re.compile(r"(?:0086|86)?0?(?P<nsn>1[3-9]\d{9})|(?:(?:0086|86)0?|0)(?P<fixed>(?:10|2\d|[3-9]\d\d)\d{8})")
"""Digits of a complete number: optional country code and trunk 0, then the national significant number."""


def spellings(digits: str) -> tuple[str, ...] | None:
    """The stored forms of the complete number ``digits`` that contain them; None for a partial number."""
    m = _TYPED.fullmatch(digits)
    if m is None:
        return None
    nsn = m.group("nsn") or m.group("fixed")
    forms = (country + trunk + nsn for country in COUNTRY for trunk in ("", "0"))
    return tuple(f for f in forms if digits in f)


def _starts_with(dialect: str, column: ColumnElement[str], prefix: str) -> ColumnElement[bool]:
    """``column`` begins with ``prefix``, as an index range where the database has one for it.

    SQLite compares text bytewise (BINARY), so a prefix is the range [prefix, prefix with its
    last character incremented), read from the column's b-tree. PostgreSQL's b-tree follows a
    linguistic collation where such a range is not a prefix; its trigram index serves LIKE.
    """
    if dialect == "sqlite":
        return and_(column >= prefix, column < prefix[:-1] + chr(ord(prefix[-1]) + 1))
    return column.startswith(prefix, autoescape=True)


def caller_matches(dialect: str, digits: str) -> ColumnElement[bool]:
    """Cases whose caller number or complainant phone holds ``digits`` (see the module docstring)."""
    forms = spellings(digits)
    if forms is None:
        return or_(Case.caller_number.contains(digits, autoescape=True),
                   Case.complainant_phone.contains(digits, autoescape=True))
    found = or_(*(_starts_with(dialect, column, f) for column in (Case.caller_number, Case.complainant_phone)
                  for f in forms))
    if dialect == "sqlite":
        # Without statistics SQLite would read the list order's index and test every case; the
        # ids first (a few index ranges), then those cases sorted: a number has few cases.
        return Case.id.in_(select(Case.id).where(found))
    return found
