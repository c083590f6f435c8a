"""The one case state machine (DESIGN.md §4): which action may run in which status.

Every status change in the code base goes through :func:`check` (cases/actions.py calls
it first), so the diagram lives here once. Actions whose ``to`` is ``None`` keep the
status (edits, contact, supervision marks); they still have a table entry so "what may I
do now?" (:func:`allowed_actions`) is answered by one lookup for the API and the pages.

Choices where DESIGN §4 is silent:

- ``sign``: the unit signs for a dispatched case (assigned → in_progress); a unit may
  also report its result straight from ``assigned`` (the signing is implied).
- ``return_to_dispatch``: the unit sends a case back (assigned / in_progress → accepted)
  with a reason; the deadlines keep running (a return gives no extra time).
- ``answer_directly``: consultation and emergency forms go accepted → replied; the
  handling form is checked in actions.py (a general case must be dispatched).
- ``start_return_visit`` (replied → return_visit) happens when the callback begins; a
  satisfied answer closes the case, a not-satisfied one reopens it (→ accepted, key
  supervision). ``close`` is allowed from replied too: callers who asked not to be called
  back, anonymous reporters and unreachable ones cannot be visited.
- ``reopen`` also from ``closed``: a late "not satisfied" reaches a case already archived.
- ``merge`` only from the statuses where work is still ahead (draft … in_progress): a
  replied case has had its answer and is not someone's repeat any more.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.errors import HotlineError

DRAFT = "draft"
ACCEPTED = "accepted"
ASSIGNED = "assigned"
IN_PROGRESS = "in_progress"
REPLIED = "replied"
RETURN_VISIT = "return_visit"
CLOSED = "closed"
REJECTED = "rejected"
DISCARDED = "discarded"
MERGED = "merged"

STATUSES = (DRAFT, ACCEPTED, ASSIGNED, IN_PROGRESS, REPLIED, RETURN_VISIT, CLOSED, REJECTED, DISCARDED, MERGED)
TERMINAL = frozenset({CLOSED, REJECTED, DISCARDED, MERGED})
"""No further action except ``reopen`` of a closed case."""
WORK_AHEAD = (DRAFT, ACCEPTED, ASSIGNED, IN_PROGRESS)
"""Statuses a case can be edited or merged in."""
OPEN = (*WORK_AHEAD, REPLIED, RETURN_VISIT)
"""Not finished: deadlines run and supervision marks apply."""


@dataclass(frozen=True)
class Transition:
    sources: tuple[str, ...]
    to: str | None
    """The new status, or None when the action keeps the status."""


TRANSITIONS: dict[str, Transition] = {
    "accept": Transition((DRAFT,), ACCEPTED),
    "discard": Transition((DRAFT,), DISCARDED),
    "reject": Transition((DRAFT, ACCEPTED), REJECTED),
    "edit": Transition(WORK_AHEAD, None),
    "dispatch": Transition((ACCEPTED,), ASSIGNED),
    "answer_directly": Transition((ACCEPTED,), REPLIED),
    "sign": Transition((ASSIGNED,), IN_PROGRESS),
    "return_to_dispatch": Transition((ASSIGNED, IN_PROGRESS), ACCEPTED),
    "report_result": Transition((ASSIGNED, IN_PROGRESS), IN_PROGRESS),
    "contact": Transition((ACCEPTED, ASSIGNED, IN_PROGRESS), None),
    "reply": Transition((IN_PROGRESS,), REPLIED),
    "start_return_visit": Transition((REPLIED,), RETURN_VISIT),
    "close": Transition((REPLIED, RETURN_VISIT), CLOSED),
    "reopen": Transition((REPLIED, RETURN_VISIT, CLOSED), ACCEPTED),
    "merge": Transition(WORK_AHEAD, MERGED),
    "mark_key_supervision": Transition(OPEN, None),
    "unmark_key_supervision": Transition(OPEN, None),
}
ACTIONS = tuple(TRANSITIONS)


class LifecycleError(HotlineError):
    """Base of the case-handling errors the API maps to 4xx answers."""


class UnknownAction(LifecycleError):
    def __init__(self, action: str) -> None:
        super().__init__(f"unknown case action {action!r}; known: {', '.join(ACTIONS)}")
        self.action = action


class IllegalTransition(LifecycleError):
    """The action is not allowed in the case's status (HTTP 409 with ``allowed``)."""

    def __init__(self, action: str, status: str, allowed: list[str]) -> None:
        super().__init__(
            f"cannot {action} a case in status {status!r}; allowed now: {', '.join(allowed) or 'nothing'}"
        )
        self.action = action
        self.status = status
        self.allowed = allowed


def allowed_actions(status: str) -> list[str]:
    """The actions possible in ``status``, in table order (empty for an unknown status)."""
    return [a for a, t in TRANSITIONS.items() if status in t.sources]


def check(action: str, status: str) -> str:
    """The status after ``action`` from ``status``, or IllegalTransition listing the allowed actions."""
    t = TRANSITIONS.get(action)
    if t is None:
        raise UnknownAction(action)
    if status not in t.sources:
        raise IllegalTransition(action, status, allowed_actions(status))
    return t.to or status
