"""`hotline users …` through the real console script, with its exit codes."""

from __future__ import annotations

import json
import subprocess

from cases.users import authenticate, user_for_token
from config.db import transaction

PW = "a long enough password"


def test_add_list_disable_token(hotline, settings, sessions) -> None:  # type: ignore[no-untyped-def]
    r = hotline("users", "add", "Chief", "--role", "admin", "--display-name", "主任 <b>", "--password-stdin",
                input=PW + "\n")
    assert r.returncode == 0, r.stderr
    assert "created admin chief" in r.stdout and PW not in r.stdout + r.stderr
    r = hotline("users", "add", "h1", "--role", "unit_handler", "--unit", "城东分局", "--password-stdin", input=PW)
    assert r.returncode == 0, r.stderr
    with transaction(sessions) as s:
        assert authenticate(s, "chief", PW) is not None, "the password read from stdin is the one stored"

    r = hotline("users", "list", "--json", check=True)
    users = {u["username"]: u for u in json.loads(r.stdout)}
    assert users["chief"]["display_name"] == "主任 <b>" and users["chief"]["last_login_at"] is not None
    assert users["h1"]["unit"] == "branch_east" and users["h1"]["role"] == "unit_handler"
    r = hotline("users", "list", check=True)
    assert r.stdout.splitlines()[0].split()[:3] == ["USERNAME", "ROLE", "UNIT"] and "branch_east" in r.stdout

    r = hotline("users", "token", "chief", "--days", "3", check=True)
    token = r.stdout.strip()
    assert token.startswith("hl_") and "expires" in r.stderr
    with sessions() as s:
        assert user_for_token(s, token).username == "chief"  # type: ignore[union-attr]

    r = hotline("users", "disable", "CHIEF")
    assert r.returncode == 0 and "disabled chief" in r.stdout
    with sessions() as s:
        assert user_for_token(s, token) is None
    r = hotline("users", "token", "chief")
    assert r.returncode == 1 and "disabled" in r.stderr
    assert hotline("users", "enable", "chief").returncode == 0
    assert hotline("users", "token", "chief").returncode == 0



def test_password_reset(hotline, settings, sessions) -> None:  # type: ignore[no-untyped-def]
    assert _adder(hotline)("ann", "--role", "operator").returncode == 0
    token = hotline("users", "token", "ann", check=True).stdout.strip()
    new = "another long password"
    _check([
        (hotline("users", "password", "ann", "--password-stdin", input="short\n"), 1, "at least 10"),
        (hotline("users", "password", "ghost", "--password-stdin", input=new + "\n"), 1, "no user"),
        (hotline("users", "password", "ann", stdin=subprocess.DEVNULL), 2, "--password-stdin"),
    ])
    r = hotline("users", "password", "ANN", "--password-stdin", input=new + "\n")
    assert r.returncode == 0 and "password reset for ann" in r.stdout and new not in r.stdout + r.stderr
    with transaction(sessions) as s:
        assert authenticate(s, "ann", PW) is None and authenticate(s, "ann", new) is not None
        assert user_for_token(s, token) is None, "tokens issued before the reset are revoked"

def _adder(hotline, **kw):  # type: ignore[no-untyped-def]
    def add(*args: str, stdin: str | None = PW) -> subprocess.CompletedProcess[str]:
        if stdin is None:
            return hotline("users", "add", *args, stdin=subprocess.DEVNULL, **kw)
        return hotline("users", "add", *args, "--password-stdin", input=stdin, **kw)

    return add


def _check(cases: list[tuple[subprocess.CompletedProcess[str], int, str]]) -> None:
    for proc, code, text in cases:
        assert proc.returncode == code, (proc.args, proc.stdout, proc.stderr)
        assert text in proc.stderr, (proc.args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_bad_usage_exits_2(hotline, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    """Refused before the database is touched, so once (not per database) is enough."""
    db = {"extra_env": {"HOTLINE_DATABASE__URL": sqlite_url}}
    add = _adder(hotline, **db)
    _check([
        (add("bob", "--role", "root"), 2, "invalid choice"),
        (add("bob"), 2, "--role"),
        (add("bob", "--role", "unit_handler"), 2, "--unit is required"),
        (add("bob", "--role", "operator", "--unit", "x"), 2, "only for a unit_handler"),
        (add("bob", "--role", "unit_handler", "--unit", "城关派出所"), 2, "codes: traffic_police"),
        (add("bob", "--role", "operator", stdin=None), 2, "--password-stdin"),
        (add("bob", "--role", "operator", stdin="short\n"), 1, "at least 10"),
        (hotline("users", "token", "ann", "--days", "0", **db), 2, "from 1 to 3650"),
        (hotline("users", "token", "ann", "--days", "x", **db), 2, "not a number"),
        (hotline("users", **db), 2, "ACTION"),
    ])
    assert json.loads(hotline("users", "list", "--json", check=True, **db).stdout) == []


def test_refusals_on_the_database(hotline, settings) -> None:  # type: ignore[no-untyped-def]
    add = _adder(hotline)
    assert add("ann", "--role", "operator", "--sip-uri", "sip:8001@pbx.local").returncode == 0
    _check([
        (add("ANN", "--role", "operator"), 1, "already exists"),
        (add("<script>", "--role", "operator"), 1, "bad username"),
        (add("bob", "--role", "operator", "--display-name", "a\x1bb"), 1, "control characters"),
        (hotline("users", "disable", "ghost"), 1, "no user"),
        (hotline("users", "token", "ghost"), 1, "no user"),
    ])
    r = hotline("users", "list", "--json", check=True)
    assert [u["username"] for u in json.loads(r.stdout)] == ["ann"], "nothing half-created"


def test_empty_list_says_how_to_start(hotline, settings) -> None:  # type: ignore[no-untyped-def]
    r = hotline("users", "list", check=True)
    assert "hotline users add" in r.stdout and "--role admin" in r.stdout
    assert json.loads(hotline("users", "list", "--json", check=True).stdout) == []
