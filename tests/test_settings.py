"""Config: a TOML file (--config or HOTLINE_CONFIG) plus HOTLINE_SECTION__KEY overrides.

The CLI checks run `hotline calendar show`, which needs no database, in a subprocess.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.settings import ConfigError, load_settings

CALENDAR_TOML = """
[calendar]
timezone = "Europe/Berlin"
open_days = [2026-10-03]

[calendar.closed_days]
2026-10-13 = "staff training"

[api]
host = "0.0.0.0"
port = 8081
"""


def write(tmp_path: Path, text: str, name: str = "hotline.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def show(hotline, day: str, *args: str, **kw) -> dict:  # type: ignore[no-untyped-def]
    proc = hotline(*args, "calendar", "show", "--date", day, "--json", **kw)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_defaults_without_a_file(hotline) -> None:  # type: ignore[no-untyped-def]
    data = show(hotline, "2026-10-13")
    assert (data["timezone"], data["open"]) == ("Asia/Shanghai", True)


def test_file_via_option(hotline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write(tmp_path, CALENDAR_TOML)
    data = show(hotline, "2026-10-13", "--config", str(cfg))
    assert data["timezone"] == "Europe/Berlin"
    assert (data["open"], data["reason"], data["note"]) == (False, "override_closed", "staff training")


def test_file_via_environment(hotline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write(tmp_path, CALENDAR_TOML)
    data = show(hotline, "2026-10-03", extra_env={"HOTLINE_CONFIG": str(cfg)})
    assert (data["timezone"], data["open"], data["reason"]) == ("Europe/Berlin", True, "override_open")


def test_environment_beats_the_file_and_keeps_its_other_keys(hotline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write(tmp_path, CALENDAR_TOML)
    data = show(hotline, "2026-10-13", "--config", str(cfg), extra_env={"HOTLINE_CALENDAR__TIMEZONE": "Asia/Shanghai"})
    assert data["timezone"] == "Asia/Shanghai"
    assert data["note"] == "staff training"  # closed_days still from the same [calendar] section


def test_api_port_from_environment_merges_with_file(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write(tmp_path, CALENDAR_TOML)
    monkeypatch.setenv("HOTLINE_API__PORT", "9000")
    settings = load_settings(cfg)
    assert (settings.api.host, settings.api.port) == ("0.0.0.0", 9000)
    assert settings.calendar.timezone == "Europe/Berlin"
    monkeypatch.delenv("HOTLINE_API__PORT")
    assert load_settings(cfg).api.port == 8081


def test_lists_and_tables_as_json_in_environment(hotline) -> None:  # type: ignore[no-untyped-def]
    extra = {
        "HOTLINE_CALENDAR__OPEN_DAYS": '["2026-10-03"]',
        "HOTLINE_CALENDAR__CLOSED_DAYS": '{"2026-10-13": "staff training"}',
    }
    assert show(hotline, "2026-10-03", extra_env=extra)["reason"] == "override_open"
    assert show(hotline, "2026-10-13", extra_env=extra)["note"] == "staff training"


def test_malformed_json_in_environment_is_a_config_error(hotline) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("calendar", "show", extra_env={"HOTLINE_CALENDAR__OPEN_DAYS": "[2026-10-03"})
    assert proc.returncode == 1
    assert "calendar" in proc.stderr and "must be JSON" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[api]\nprot = 8081\n", ["[api] prot: unknown key", "accepted keys: host, ", ", port, "]),
        ("[apis]\nport = 8081\n", ["apis: unknown key", "accepted keys: api, calendar, campaigns, cases, database"]),
        ("[calendar]\nclosed = [2026-10-13]\n", ["[calendar] closed: unknown key", "closed_days", "open_days"]),
        (
            '[calendar.years.2027]\nholiday = {2027-10-01 = "National Day"}\n',
            ["years.2027.holiday: unknown key", "accepted keys: holidays, workdays"],
        ),
    ],
)
def test_unknown_key_in_file(hotline, tmp_path: Path, toml: str, expected: list[str]) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("--config", str(write(tmp_path, toml)), "calendar", "show")
    assert proc.returncode == 1, proc.stderr
    for text in expected:
        assert text in proc.stderr


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[api]\nport = 99999\n", ["[api] port", "65535", "HOTLINE_API__PORT"]),
        ('[calendar]\ntimezone = "Asia/Shanghia"\n', ["[calendar] timezone", "'Asia/Shanghia'"]),
        ('[calendar.hours]\nmon = ["17:00-08:00"]\n', ["[calendar] hours", "'17:00-08:00'", "start before end"]),
        ('[calendar]\nadjusted_workday_hours = ["8:30-12:00"]\n', ["[calendar] adjusted_workday_hours", "'8:30-12:00'"]),
        ('[logging]\nlevel = "verbose"\n', ["[logging] level", "'verbose'", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"]),
        ('[calendar.years.27]\nworkdays = [2027-09-26]\n', ['[calendar.years."27"]', "must be a year"]),
    ],
)
def test_bad_value_in_file(hotline, tmp_path: Path, toml: str, expected: list[str]) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("--config", str(write(tmp_path, toml)), "calendar", "show")
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    for text in expected:
        assert text in proc.stderr


def test_bad_value_in_environment_names_the_variable(hotline) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("calendar", "show", extra_env={"HOTLINE_API__PORT": "99999"})
    assert proc.returncode == 1
    assert "[api] port" in proc.stderr and "HOTLINE_API__PORT" in proc.stderr


def test_missing_config_file(hotline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nowhere.toml"
    for args, extra in [(["--config", str(missing)], {}), ([], {"HOTLINE_CONFIG": str(missing)})]:
        proc = hotline(*args, "calendar", "show", extra_env=extra)
        assert proc.returncode == 1
        assert f"config file {missing} not found" in proc.stderr


def test_invalid_toml(hotline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = hotline("--config", str(write(tmp_path, "[api\nport = 1\n")), "calendar", "show")
    assert proc.returncode == 1
    assert "is not valid TOML" in proc.stderr and "Traceback" not in proc.stderr


def test_load_settings_raises_config_error(env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[api\] port"):
        load_settings(write(tmp_path, "[api]\nport = -1\n"))
