"""The case page's action forms over real HTTP on the real app (SQLite and PostgreSQL).

For every form: it works for its role (303 back to the case, the status moved, an event
naming the user), and it refuses a post without the CSRF token (403), from a stale page
(409), in a status that does not allow it (409, with what is allowed shown), from a role
that may not run it (403) and with invalid fields (422, the typed text kept and escaped),
changing nothing each time. Then: which forms the page offers whom, the unit handler's
queue and privacy, another unit's case, and the role table shared with the API.

The whole loop in a browser is tests/test_case_loop_browser.py.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from api_support import login_session, make_user
from pages_support import HOSTILE, UNIT, case_in, case_row
from sqlalchemy import select

from api.app import create_app
from api.pages import MESSAGES
from api.pages.case_pages import PAGE_ACTIONS, SEGMENTS
from cases.lifecycle import ACTIONS
from cases.models import Case, CaseEvent, PersonalDataView
from cases.permissions import ACTION_ROLES, permitted_actions
from cases.users import ROLES


async def _login(client: Any, ctx: Any, role: str, **kw: Any) -> tuple[str, str]:
    """Log ``client`` in as a new user of ``role``: (username, CSRF token)."""
    user, password = make_user(ctx.sessions, role, **kw)
    return user.username, await login_session(client, user.username, password)


def _events(ctx: Any, case_id: int) -> list[tuple[str, str]]:
    with ctx.sessions() as s:
        return [(e.action, e.actor) for e in s.scalars(select(CaseEvent).where(CaseEvent.case_id == case_id)
                                                        .order_by(CaseEvent.id))]


def _allowed_shown(page: str) -> list[str]:
    m = re.search(r'<ul id="allowed-now">(.*?)</ul>', page, re.S)
    assert m, "no allowed list on the page"
    return re.findall(r'data-action="([a-z_]+)"', m.group(1))


@dataclass(frozen=True)
class FormCase:
    segment: str
    action: str
    role: str
    status: str
    """The status the case is driven to before posting."""
    valid: dict[str, str]
    invalid: dict[str, str]
    problem: str
    """Text of the 422 page naming what is wrong."""
    after: str
    illegal_status: str = "closed"
    handling_form: str = "general"
    check: dict[str, Any] = field(default_factory=dict)
    """Case attributes after the valid post."""


FORMS = [
    FormCase("edit", "edit", "operator", "accepted",
             {"content": "改：派出所民警态度恶劣", "category": "public_order", "handling_form": "general",
              "complexity": "complex", "complainant_name": "王五", "complainant_phone": "13900001111",
              "address": "城东区建设路88号3栋"},
             {"content": "   ", "category": "<b>bogus</b>"}, "is not in the acceptance scope", "accepted",
             check={"complexity": "complex", "content": "改：派出所民警态度恶劣"}),
    FormCase("reject", "reject", "operator", "accepted", {"reason": "不属于公安机关职责 <i>"}, {"reason": "  "},
             "required", "rejected"),
    FormCase("dispatch", "dispatch", "supervisor", "accepted", {"unit": UNIT, "assignee": "张警官", "note": "请核查"},
             {"unit": "<script>x</script>"}, "is not a known unit", "assigned", check={"unit": UNIT}),
    FormCase("answer", "answer_directly", "operator", "accepted", {"reply": "办理护照请到出入境大厅"}, {"reply": ""},
             "required", "replied", handling_form="consultation", check={"reply": "办理护照请到出入境大厅"}),
    FormCase("sign", "sign", "unit_handler", "assigned", {"assignee": "李警官"}, {"assignee": "李" * 81},
             "at most 80 characters", "in_progress", check={"assignee": "李警官"}),
    FormCase("return", "return_to_dispatch", "unit_handler", "assigned", {"reason": "不属本单位管辖"}, {"reason": ""},
             "required", "accepted", check={"unit": None}),
    FormCase("result", "report_result", "unit_handler", "in_progress", {"result": "已约谈当事民警并整改"},
             {"result": " "}, "required", "in_progress", check={"result": "已约谈当事民警并整改"}),
    FormCase("contact", "contact", "unit_handler", "assigned", {"note": "电话联系，已说明进展"}, {"note": "话" * 4001},
             "at most 4000 characters", "assigned"),
    FormCase("reply", "reply", "operator", "in_progress", {"reply": "经核查，已对当事民警批评教育"}, {"reply": ""},
             "required", "replied", check={"reply": "经核查，已对当事民警批评教育"}),
    FormCase("return-visit", "start_return_visit", "operator", "replied", {"note": "开始回访"}, {"note": "a\x00b"},
             "NUL", "return_visit"),
    FormCase("close", "close", "operator", "return_visit", {"note": "来电人表示满意"}, {"note": "话" * 4001},
             "at most 4000 characters", "closed", illegal_status="accepted"),
    FormCase("reopen", "reopen", "supervisor", "closed", {"reason": "来电人再次反映"}, {"reason": ""}, "required",
             "accepted", illegal_status="accepted", check={"key_supervision": True}),
    FormCase("key-supervision", "mark_key_supervision", "supervisor", "accepted", {"mark": "1", "note": "领导督办"},
             {"mark": "0"}, "not marked", "accepted", check={"key_supervision": True}),
]


def _wrong_role(action: str) -> str:
    return next(r for r in ("unit_handler", "operator", "campaign", "admin") if r not in ACTION_ROLES[action])


def test_every_case_page_form_is_tested_and_named_in_both_languages() -> None:
    assert {f.action for f in FORMS} | {"unmark_key_supervision"} == set(SEGMENTS)
    assert {pa.action for pa in PAGE_ACTIONS} | {"accept", "discard", "merge", "mark_key_supervision",
                                                "unmark_key_supervision"} == set(ACTIONS)
    for lang in ("zh", "en"):
        assert not [a for a in ACTIONS if f"act.{a}" not in MESSAGES[lang]], lang


@pytest.mark.parametrize("fc", FORMS, ids=[f.segment for f in FORMS])
async def test_case_page_form(aiohttp_client, ctx, fc: FormCase) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    username, csrf = await _login(client, ctx, fc.role)
    cid = case_in(ctx, fc.status, handling_form=fc.handling_form)
    url = f"/cases/{cid}/{fc.segment}"
    before = case_row(ctx, cid)
    events_before = _events(ctx, cid)

    # the page offers this form to this role, posting to this route
    page = await (await client.get(f"/cases/{cid}")).text()
    assert f'id="form-{fc.action}"' in page and f'action="{url}"' in page

    def post(data: dict[str, str], **kw: Any) -> Any:
        return client.post(url, data=data, allow_redirects=False, **kw)

    # no CSRF token, a stale version, invalid fields: refused, nothing changed
    r = await post({"version": str(before.version), **fc.valid})
    assert r.status == 403 and "表单已过期" in await r.text()
    r = await post({"csrf_token": csrf, "version": str(before.version + 1), **fc.valid})
    assert r.status == 409
    text = await r.text()
    assert "已被他人修改" in text and f'data-action="{fc.action}"' in text
    typed = next((v for k, v in fc.valid.items() if k not in ("mark", "unit", "category", "handling_form")), None)
    if typed is not None:
        assert html_lib.escape(typed, quote=True) in text  # what was typed is kept in the form
    r = await post({"csrf_token": csrf, "version": str(before.version), **fc.invalid})
    assert r.status == 422
    text = await r.text()
    assert fc.problem in text and "请修正标出的内容" in text
    assert "<script>x</script>" not in text and "<b>bogus</b>" not in text
    for bad_version in ("", "x", "-1", "9" * 30):
        assert (await post({"csrf_token": csrf, "version": bad_version, **fc.valid})).status == 400
    assert case_row(ctx, cid).version == before.version and _events(ctx, cid) == events_before

    # a role that may not run it: 403 before anything is looked at
    other = await aiohttp_client(create_app(ctx))
    wrong = _wrong_role(fc.action)
    _, other_csrf = await _login(other, ctx, wrong)
    r = await other.post(url, data={"csrf_token": other_csrf, "version": str(before.version), **fc.valid})
    assert r.status == 403 and "无权访问" in await r.text(), wrong
    if wrong in ("unit_handler", "operator"):
        assert f'id="form-{fc.action}"' not in await (await other.get(f"/cases/{cid}")).text()

    # the form works: back to the case, the status moved, an event names the user
    r = await post({"csrf_token": csrf, "version": str(before.version), **fc.valid})
    assert r.status == 303, await r.text()
    assert r.headers["Location"] == f"/cases/{cid}"
    after = case_row(ctx, cid)
    assert after.status == fc.after and after.version > before.version
    for name, value in fc.check.items():
        assert getattr(after, name) == value, name
    assert _events(ctx, cid)[-1] == (fc.action, username)
    r = await client.get(f"/cases/{cid}")
    if fc.action == "return_to_dispatch":
        assert r.status == 404  # back with the centre: no longer the unit's case
    else:
        page = await r.text()
        assert f'<li data-action="{fc.action}">' in page and f'<span class="actor">{username}</span>' in page

    # the same form on a case whose status does not allow it: 409 listing what is allowed
    illegal = case_in(ctx, fc.illegal_status)
    version = case_row(ctx, illegal).version
    r = await client.post(f"/cases/{illegal}/{fc.segment}", data={"csrf_token": csrf, "version": str(version), **fc.valid})
    assert r.status == 409
    text = await r.text()
    assert "不允许此操作" in text
    assert f"cannot {fc.action} a case in status {fc.illegal_status!r}" in html_lib.unescape(text)
    assert _allowed_shown(text) == permitted_actions(fc.illegal_status, fc.role)
    assert case_row(ctx, illegal).version == version


async def test_unmark_key_supervision_form(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    username, csrf = await _login(client, ctx, "supervisor")
    cid = case_in(ctx, "in_progress")
    r = await client.post(f"/cases/{cid}/key-supervision", allow_redirects=False,
                          data={"csrf_token": csrf, "version": str(case_row(ctx, cid).version), "mark": "1"})
    assert r.status == 303
    page = await (await client.get(f"/cases/{cid}")).text()
    assert 'id="form-unmark_key_supervision"' in page and 'id="form-mark_key_supervision"' not in page
    r = await client.post(f"/cases/{cid}/key-supervision", allow_redirects=False,
                          data={"csrf_token": csrf, "version": str(case_row(ctx, cid).version), "mark": "0"})
    assert r.status == 303 and not case_row(ctx, cid).key_supervision
    assert _events(ctx, cid)[-2:] == [("mark_key_supervision", username), ("unmark_key_supervision", username)]


# --- what the page offers whom -------------------------------------------------------------


def _forms(page: str) -> list[str]:
    return re.findall(r'<form class="stacked action-form"[^>]*data-action="([a-z_]+)"', page)


async def test_the_page_offers_only_what_the_status_and_role_allow(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    general, consult = case_in(ctx, "accepted"), case_in(ctx, "accepted", handling_form="consultation")
    assigned, closed, draft = case_in(ctx, "assigned"), case_in(ctx, "closed"), case_in(ctx, "draft")
    offered: dict[str, dict[int, list[str]]] = {}
    for role in ("operator", "supervisor", "unit_handler"):
        client = await aiohttp_client(create_app(ctx))
        await _login(client, ctx, role)
        offered[role] = {}
        for cid in (general, consult, assigned, closed, draft):
            r = await client.get(f"/cases/{cid}")
            offered[role][cid] = _forms(await r.text()) if r.status == 200 else [f"status {r.status}"]
    assert offered["operator"][general] == ["reject", "edit", "contact", "merge"]
    assert offered["supervisor"][general] == ["reject", "edit", "dispatch", "contact", "merge", "mark_key_supervision"]
    assert offered["operator"][consult] == ["reject", "edit", "answer_directly", "contact", "merge"]
    assert offered["supervisor"][assigned] == ["edit", "sign", "return_to_dispatch", "report_result", "contact",
                                               "merge", "mark_key_supervision"]
    assert offered["unit_handler"][assigned] == ["sign", "return_to_dispatch", "report_result", "contact"]
    assert offered["operator"][closed] == [] and offered["supervisor"][closed] == ["reopen"]
    assert offered["unit_handler"][closed] == []  # the case was their unit's: readable, nothing left to do
    assert offered["operator"][draft] == ["reject", "edit"]  # a draft's accept / discard / merge: on the review page
    for role in ("unit_handler",):
        for cid in (general, consult, draft):  # not (or no longer) with a unit: another unit's alike
            assert offered[role][cid] == ["status 404"]


# --- unit handlers -------------------------------------------------------------------------


async def test_unit_handler_queue_and_case_page(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    ours = case_in(ctx, "assigned")
    protected = case_in(ctx, "assigned", confidential=True)
    hostile = case_in(ctx, "assigned", content=HOSTILE)
    theirs = case_in(ctx, "accepted")
    with ctx.sessions() as s, s.begin():
        from cases import actions

        actions.dispatch(s, s.get(Case, theirs), ctx=ctx, actor="seed", expected_version=None, unit="branch_west")
    client = await aiohttp_client(create_app(ctx))
    username, csrf = await _login(client, ctx, "unit_handler")

    r = await client.get("/cases")
    assert r.status == 200
    page = await r.text()
    numbers = {cid: case_row(ctx, cid).number for cid in (ours, protected, hostile, theirs)}
    assert all(f'data-number="{numbers[c]}"' in page for c in (ours, protected, hostile))
    assert numbers[theirs] not in page
    assert "城东分局" in page and 'name="unit"' not in page  # their unit's queue, no unit filter
    row = re.search(rf'data-number="{numbers[protected]}".*?</tr>', page, re.S)
    assert row and "王*" in row.group(0) and "139****1111" in row.group(0) and "王五" not in row.group(0)
    row = re.search(rf'data-number="{numbers[ours]}".*?</tr>', page, re.S)
    assert row and "王五 13900001111" in row.group(0)  # an unprotected reporter of their own case
    assert "&lt;script&gt;window.__pwned" in page and "<script>window.__pwned" not in page
    r = await client.get("/cases", params={"unit": "branch_west", "status": "all"})  # the filter cannot widen it
    assert numbers[theirs] not in await r.text()

    # a confidential reporter is masked on the case page too, and nothing was logged as seen
    page = await (await client.get(f"/cases/{protected}")).text()
    assert "王*" in page and "城东区****" in page and "王五" not in page and "13900001111" not in page
    assert "/api/v1/recordings/" not in page
    with ctx.sessions() as s:
        assert s.scalar(select(PersonalDataView).where(PersonalDataView.viewer == username)) is None

    # another unit's case: a 404 page for reading and for every form, like an unknown one
    r = await client.get(f"/cases/{theirs}")
    assert r.status == 404 and "没有这个案件" in await r.text()
    for segment in ("sign", "return", "result", "contact", "reply"):
        r = await client.post(f"/cases/{theirs}/{segment}",
                              data={"csrf_token": csrf, "version": str(case_row(ctx, theirs).version), "reason": "x",
                                    "result": "x", "reply": "x"})
        assert r.status == 404, segment
    assert case_row(ctx, theirs).status == "assigned"

    # hostile text typed into a form is stored as typed and shown as text
    r = await client.post(f"/cases/{hostile}/result", allow_redirects=False,
                          data={"csrf_token": csrf, "version": str(case_row(ctx, hostile).version), "result": HOSTILE})
    assert r.status == 303
    page = await (await client.get(f"/cases/{hostile}")).text()
    assert case_row(ctx, hostile).result == HOSTILE
    assert "<script>window.__pwned" not in page and page.count("&lt;script&gt;window.__pwned = 1&lt;/script&gt;") == 3
    # (the content, the result, and the result form prefilled with it: a unit may report again)


async def test_unknown_and_malformed_ids_on_forms(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(ctx))
    _, csrf = await _login(client, ctx, "supervisor")
    for path in ("/cases/999/dispatch", "/cases/0/reply", f"/cases/{2**31}/close", "/cases/abc/reopen",
                 "/cases/99999999999999999999/edit"):
        r = await client.post(path, data={"csrf_token": csrf, "version": "1", "unit": UNIT})
        assert r.status == 404, path
        assert "没有这个案件" in await r.text()


# --- one role table ------------------------------------------------------------------------


async def test_api_and_pages_declare_the_same_roles(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    assert set(ACTION_ROLES) == set(ACTIONS)
    assert all(roles and set(roles) <= set(ROLES) for roles in ACTION_ROLES.values())
    client = await aiohttp_client(create_app(ctx))
    doc = await (await client.get("/api/v1/openapi.json")).json()
    api_roles = {op["operationId"].removesuffix("_case"): set(op["x-roles"])
                 for item in doc["paths"].values() for method, op in item.items()
                 if method in ("post", "patch", "delete") and op.get("operationId", "").endswith("_case")}
    for action, roles in ACTION_ROLES.items():
        assert api_roles.get(action) == set(roles), action
    app = client.app
    page_roles = {r.resource.canonical.rsplit("/", 1)[-1]: set(getattr(r.handler, "roles", ()))
                  for r in app.router.routes() if r.method == "POST" and r.resource is not None
                  and r.resource.canonical.startswith("/cases/{id}/")}
    for action, segment in SEGMENTS.items():
        assert page_roles[segment] == set(ACTION_ROLES[action]), action


async def test_merge_form_on_the_case_page(aiohttp_client, ctx) -> None:  # type: ignore[no-untyped-def]
    """Merge on the case page: the suggestions, a refusal shown on the case page (not the review
    page), the unit's roles refused; the browser run is tests/test_case_loop_browser.py."""
    first, repeat = case_in(ctx, "accepted"), case_in(ctx, "assigned")  # one caller number: suggested
    client = await aiohttp_client(create_app(ctx))
    username, csrf = await _login(client, ctx, "operator")
    number = case_row(ctx, first).number
    page = await (await client.get(f"/cases/{repeat}")).text()
    assert 'id="form-merge"' in page and f'<tr data-number="{number}">' in page
    assert f'name="into" value="{number}"' in page and 'name="back" value="case"' in page
    version = case_row(ctx, repeat).version
    r = await client.post(f"/cases/{repeat}/merge", data={"csrf_token": csrf, "version": str(version + 1), "into": number})
    assert r.status == 409
    text = await r.text()
    assert "已被他人修改" in text and 'id="form-merge"' in text and 'id="accept-form"' not in text
    assert re.search(rf'id="form-merge".*?<input type="text" name="into"[^>]*value="{number}"', text, re.S)  # kept

    handler = await aiohttp_client(create_app(ctx))
    _, handler_csrf = await _login(handler, ctx, "unit_handler")
    assert 'id="form-merge"' not in await (await handler.get(f"/cases/{repeat}")).text()
    r = await handler.post(f"/cases/{repeat}/merge", data={"csrf_token": handler_csrf, "version": str(version),
                                                           "into": number})
    assert r.status == 403 and case_row(ctx, repeat).status == "assigned"

    r = await client.post(f"/cases/{repeat}/merge", allow_redirects=False,
                          data={"csrf_token": csrf, "version": str(version), "into": number, "note": "重复反映"})
    assert r.status == 303 and r.headers["Location"] == f"/cases/{repeat}"
    assert (case_row(ctx, repeat).status, case_row(ctx, repeat).merged_into_id) == ("merged", first)
    assert _events(ctx, first)[-1] == ("merged_in", username)
