"""`hotline operators list|presence`: what a supervisor (or a test) uses to see and set presence."""

from __future__ import annotations

import json

from api_support import make_user
from config.db import transaction, utcnow
from ivr import presence


def test_presence_set_and_listed(hotline, settings, sessions) -> None:  # type: ignore[no-untyped-def]
    op, _ = make_user(sessions, "operator", username="ann", sip_uri="sip:8001@pbx.local")
    make_user(sessions, "supervisor", username="sue")
    r = hotline("operators", "list", "--json", check=True)
    assert [(o["username"], o["state"], o["sip_uri"]) for o in json.loads(r.stdout)] == [("ann", "offline", "sip:8001@pbx.local")]
    r = hotline("operators", "presence", "ANN", "available", check=True)
    assert r.stdout.strip() == "ann is available"
    assert "ann" in hotline("operators", "list", check=True).stdout
    with transaction(sessions) as s:
        assert presence.claim(s, op.id, utcnow(), call_id=3)
    for args, code, text in [
        (("operators", "presence", "ann", "offline"), 1, "on a call"),   # busy follows the call
        (("operators", "presence", "ghost", "away"), 1, "no user"),
        (("operators", "presence", "sue", "available"), 1, "not an active operator"),
        (("operators", "presence", "ann", "busy"), 2, "invalid choice"),  # busy/wrap_up are not chosen
        (("operators", "presence", "<script>", "away"), 1, "no user"),
    ]:
        r = hotline(*args)
        assert r.returncode == code and text in r.stderr, (args, r.returncode, r.stderr)
    assert json.loads(hotline("operators", "list", "--json", check=True).stdout)[0]["state"] == "busy"
