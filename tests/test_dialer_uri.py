"""How the dialer turns what it is given into a SIP URI (ivr/dialer.py dial_uri, `[sip] dial_uri_template`)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.settings import SipSettings
from ivr.dialer import DialError, dial_uri

TEMPLATE = "sip:{number}@pbx.example:5060"


@pytest.mark.parametrize(("given", "uri"), [
    ("13800138000", "sip:13800138000@pbx.example:5060"),
    ("+86 138-0013-8000", "sip:+8613800138000@pbx.example:5060"),
    (" (010) 12389 ", "sip:01012389@pbx.example:5060"),
    ("sip:op7@10.0.0.5:5070", "sip:op7@10.0.0.5:5070"),
    ("SIPS:op@pbx.example", "SIPS:op@pbx.example"),
])
def test_numbers_and_uris(given: str, uri: str) -> None:
    assert dial_uri(given, TEMPLATE) == uri


@pytest.mark.parametrize("bad", ["", "   ", "12a34", "1" * 33, "+", "1;2", "sip:", "sip:@", "tel:+861",
                                 "138\r\nVia: x", "${jndi:x}", "１２３"])
def test_bad_input_is_a_dial_error(bad: str) -> None:
    with pytest.raises(DialError):
        dial_uri(bad, TEMPLATE)


@pytest.mark.parametrize("bad", [None, 13800138000, b"138", ["138"]])
def test_wrong_types_are_a_dial_error(bad: object) -> None:
    with pytest.raises(DialError):
        dial_uri(bad, TEMPLATE)  # type: ignore[arg-type]


@pytest.mark.parametrize("template", ["sip:pbx.example", "tel:{number}", "sip:{number}@{host}", "sip:{0}@x",
                                      "{number}@pbx"])
def test_bad_templates_are_refused_at_load(template: str) -> None:
    with pytest.raises(ValidationError, match="dial_uri_template"):
        SipSettings(dial_uri_template=template)
