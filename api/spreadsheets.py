"""CSV that staff open in a spreadsheet: the BOM, defused cells, rows as text.

Every CSV the service hands out goes through here, so each file is safe to open in Excel
or LibreOffice whatever the cells hold:

- **UTF-8 with a BOM**: without it Excel reads UTF-8 as the local ANSI code page and
  Chinese comes out as mojibake.
- **Formula injection defused** (OWASP "CSV injection"): a cell starting with ``=``, ``+``,
  ``-``, ``@``, tab or carriage return is a formula to a spreadsheet, and a caller's text
  such as ``=HYPERLINK(…)`` or ``=cmd|' /C calc'!A0`` would run on the supervisor's desk.
  Such a cell gets a leading ``'``, which spreadsheets read as "text follows"; the text
  itself is kept. One exception: a telephone number in international form (``+8613…``,
  also masked ``+86*******1234``) is left as it is: with only digits and ``* ( ) -`` after
  the plus it can compute nothing, and a quote in every number would spoil the column.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable

BOM = "\ufeff"
CONTENT_TYPE = "text/csv"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PHONE = re.compile(r"\+[0-9][0-9*() -]*")


def safe_cell(value: object) -> str:
    """``value`` as CSV cell text: None is empty, and a would-be formula starts with ``'``."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if text.startswith(FORMULA_START) and not _PHONE.fullmatch(text):
        return "'" + text
    return text


def csv_text(rows: Iterable[Iterable[object]]) -> str:
    """Rows as CSV text (RFC 4180 quoting, CRLF line ends), every cell through :func:`safe_cell`."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerows([safe_cell(v) for v in row] for row in rows)
    return out.getvalue()


def attachment(filename: str) -> dict[str, str]:
    """Headers for a CSV download: a file to save, not a page to show, and not kept in caches."""
    return {"Content-Type": f"{CONTENT_TYPE}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"}


__all__ = ["BOM", "CONTENT_TYPE", "attachment", "csv_text", "safe_cell"]
