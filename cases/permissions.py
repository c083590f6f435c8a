"""Which staff role may run which case action: the one table the JSON API and the web pages share.

cases/lifecycle.py says which actions a *status* allows; this table says which *roles*
may run each of them. What a viewer may do now is both at once (:func:`permitted_actions`).
A unit handler is further limited to the cases of their own unit; that is a question of
which cases they can see at all (api/cases.py ``can_see``), not of the action.

The split (issue 6, DESIGN §1 users):

- the centre (operators and supervisors) registers, accepts, edits, rejects, discards,
  merges, answers consultations and emergencies directly, starts the return visit and closes;
- the supervisor (leader on duty) alone dispatches, reopens and marks key supervision;
- the unit signs, returns with a reason and reports its result: its handlers, or a
  supervisor acting on its behalf (a unit without anyone on duty must not stall a case);
- the caller may be contacted and replied to by the centre and by the unit.

Campaign staff and administrators run no case action: return visits reach cases through
the campaign engine (cases.actions.record_return_visit), not through these actions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from cases.lifecycle import allowed_actions

if TYPE_CHECKING:
    from cases.models import Case
    from config.settings import HandlingForm

CENTRE = ("operator", "supervisor")
SUPERVISOR = ("supervisor",)
UNIT = ("unit_handler", "supervisor")
CONTACTERS = ("operator", "supervisor", "unit_handler")
CASE_ROLES = ("operator", "supervisor", "unit_handler")
"""Roles that read and work on cases (each sees the cases :func:`api.cases.can_see` lets them)."""
EXPORTERS = ("supervisor", "admin")
"""Roles that may export the case list as CSV: the leader on duty, and administrators (who read the
case list too, with every personal field masked). A file leaves the system's control once
downloaded, so in it a protected reporter's personal fields are masked for every role."""

ACTION_ROLES: dict[str, tuple[str, ...]] = {
    "accept": CENTRE,
    "discard": CENTRE,
    "reject": CENTRE,
    "edit": CENTRE,
    "dispatch": SUPERVISOR,
    "answer_directly": CENTRE,
    "sign": UNIT,
    "return_to_dispatch": UNIT,
    "report_result": UNIT,
    "contact": CONTACTERS,
    "reply": CONTACTERS,
    "start_return_visit": CENTRE,
    "close": CENTRE,
    "reopen": SUPERVISOR,
    "merge": CENTRE,
    "mark_key_supervision": SUPERVISOR,
    "unmark_key_supervision": SUPERVISOR,
}


def may(role: str, action: str) -> bool:
    """Whether ``role`` may run ``action`` at all (in some status); unknown actions: no."""
    return role in ACTION_ROLES.get(action, ())


def permitted_actions(status: str, role: str) -> list[str]:
    """The actions ``role`` may run on a case in ``status`` now, in lifecycle table order."""
    return [a for a in allowed_actions(status) if may(role, a)]


def case_actions(case: Case, role: str, handling_forms: Mapping[str, HandlingForm]) -> list[str]:
    """What ``role`` can do to ``case`` now: :func:`permitted_actions`, less what the case's own
    fields rule out (cases.actions would refuse it): dispatch for a form answered directly, the
    direct answer for one that is dispatched, and the key-supervision mark it already has (or
    the removal of one it lacks). The API's ``allowed_actions`` and the case page's forms."""
    form = handling_forms.get(case.handling_form or "")
    direct = form is not None and form.direct
    ruled_out = {"answer_directly" if not direct else "dispatch",
                 "unmark_key_supervision" if not case.key_supervision else "mark_key_supervision"}
    return [a for a in permitted_actions(case.status, role) if a not in ruled_out]
