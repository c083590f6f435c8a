"""`hotline campaigns …` through the real console script."""

from __future__ import annotations

import json
from pathlib import Path

from campaign_support import make_case
from config.db import transaction


def test_campaigns_cli(hotline, settings, sessions, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        make_case(s, "20260901-0001", "13800138001")
        make_case(s, "20260901-0002", "13800138002")
    assert hotline("campaigns", "dnc", "add", "138 0013 8002", "--reason", "asked").stdout.strip() == "+8613800138002 added"
    bad = hotline("campaigns", "dnc", "add", "not-a-phone")
    assert bad.returncode == 1 and "not a phone number" in bad.stderr
    csv = tmp_path / "cases.csv"
    csv.write_text("case_number\n20260901-0001\n20260901-0002\nbogus\n", encoding="utf-8")
    proc = hotline("campaigns", "preview", "--csv", str(csv), "--json")
    assert proc.returncode == 1, proc.stderr  # a bad row: reported, the good rows previewed
    out = json.loads(proc.stdout)
    assert out["targets"] == 1 and out["dropped_by_reason"] == {"do_not_call": 1}
    assert out["csv_errors"] == ["line 4: 'bogus' is not a case number (YYYYMMDD-NNNN)"]
    proc = hotline("campaigns", "preview", "--since", "2026-09-01", "--until", "2026-10-01")
    assert proc.returncode == 0 and "1 to call, 1 dropped" in proc.stdout and "do_not_call: 1" in proc.stdout
    assert hotline("campaigns", "preview", "--since", "yesterday", "--until", "2026-10-01").returncode == 2
    assert "no campaigns" in hotline("campaigns", "list").stdout
    missing = hotline("campaigns", "show", "nope")
    assert missing.returncode == 1 and "no campaign 'nope'" in missing.stderr
    imp = tmp_path / "dnc.csv"
    imp.write_text("13800138003,complaint\nxyz\n", encoding="utf-8")
    proc = hotline("campaigns", "dnc", "import", str(imp))
    assert proc.returncode == 1 and "1 added, 1 bad rows" in proc.stdout and "line 2" in proc.stderr
    assert hotline("campaigns", "dnc", "remove", "13800138003").returncode == 0
    assert hotline("campaigns", "dnc", "remove", "13800138003").returncode == 1
