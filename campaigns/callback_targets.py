"""The callback list as a campaign's target source ("missed-call callback" purpose), and results written back.

Selection
    Open entries of the callback list (cases/callbacks.py): not claimed by a person and not
    done, oldest first, so who waited longest is rung first. An entry a person claims later
    is left to them: the runner checks again just before each dial (:func:`still_callable`).

Preview drop reasons (first match wins)
    ``already_targeted`` (in this campaign already: a recurring sweep never stores an entry
    twice), ``invalid_phone`` (not a valid number for phonenumbers: the list keeps what
    callers keyed), ``do_not_call`` and ``already_calling`` (a pending or dialling target of
    another live campaign rings the same entry).

Results
    Answered: the entry is completed as "reached" by ``campaign <id>`` with a note saying
    what the caller chose (a person who claimed it meanwhile keeps it, with the note added).
    A callee who asked for an operator and then booked a callback or hung up in the queue
    still wants a call: the entry stays open with the note.
    Unreachable after the last attempt (or an invalid number): the entry stays open for a
    person, with a note of the attempts; no SMS/letter task, the callback list is the task.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns.models import CANCELLED, DIALING, FINISHED, PENDING, Campaign, CampaignTarget
from campaigns.targets import Candidate, PhoneError, Preview, do_not_call_set, normalise_phone
from campaigns.transfer import ABANDONED, CALLBACK, MESSAGE, OPERATOR
from cases.callbacks import Callback, append_note, complete_by_system, listing

SOURCE = "callbacks"
MAX_SELECTED = 5000
"""Upper bound of one selection (the list is paged by 500 in cases/callbacks.listing)."""


def select_callbacks(session: Session) -> list[Callback]:
    """Every open, unclaimed entry of the callback list, oldest first."""
    out: list[Callback] = []
    after: int | None = None
    while len(out) < MAX_SELECTED:
        page = listing(session, state="open", after_id=after, limit=500)
        out += page
        if len(page) < 500:
            break
        after = page[-1].id
    return out[:MAX_SELECTED]


def being_called(session: Session, callback_ids: Sequence[int], *, exclude_campaign: int | None = None) -> set[int]:
    """Entries a pending or dialling target of a live campaign (other than ``exclude_campaign``) will ring."""
    if not callback_ids:
        return set()
    q = (
        select(CampaignTarget.callback_id)
        .join(Campaign, Campaign.id == CampaignTarget.campaign_id)
        .where(CampaignTarget.callback_id.in_(callback_ids), CampaignTarget.state.in_((PENDING, DIALING)),
               Campaign.state.not_in((FINISHED, CANCELLED)))
    )
    if exclude_campaign is not None:
        q = q.where(CampaignTarget.campaign_id != exclude_campaign)
    return {i for i in session.scalars(q) if i is not None}


def preview_callbacks(session: Session, callbacks: Sequence[Callback], *, campaign_id: int | None = None) -> Preview:
    """Decide for each entry whether it will be rung, or why not (see the module docstring)."""
    phones: dict[int, str | None] = {}
    for cb in callbacks:
        try:
            phones[cb.id] = normalise_phone(cb.phone)
        except PhoneError:
            phones[cb.id] = None
    dnc = do_not_call_set(session, (p for p in phones.values() if p))
    ids = [cb.id for cb in callbacks]
    elsewhere = being_called(session, ids, exclude_campaign=campaign_id)
    here: set[int] = set()
    if campaign_id is not None:
        here = {i for i in session.scalars(select(CampaignTarget.callback_id).where(
            CampaignTarget.campaign_id == campaign_id, CampaignTarget.callback_id.in_(ids))) if i is not None}
    out, seen = Preview(), set()
    for cb in callbacks:
        phone = phones[cb.id]
        reason: str | None = None
        if cb.id in seen:
            reason = "duplicate"
        elif cb.id in here:
            reason = "already_targeted"  # first: an entry already in the campaign is never stored twice
        elif phone is None:
            reason = "invalid_phone"
        elif phone in dnc:
            reason = "do_not_call"
        elif cb.id in elsewhere:
            reason = "already_calling"
        seen.add(cb.id)
        out.candidates.append(Candidate(None, None, phone, reason, callback_id=cb.id))
    return out


def still_callable(session: Session, target: CampaignTarget) -> str | None:
    """Just before a dial: a drop reason when the entry was claimed, done or deleted meanwhile."""
    cb = session.get(Callback, target.callback_id) if target.callback_id is not None else None
    if cb is None:
        return "callback_deleted"
    if cb.done_at is not None:
        return "callback_done"
    if cb.claimed_by is not None:
        return "callback_claimed"
    return None


CHOICE_NOTE = {
    OPERATOR: "talked to an operator",
    MESSAGE: "left a message (a draft case follows from its transcript)",
    CALLBACK: "asked to be called back",
    ABANDONED: "hung up while waiting",
    None: "answered but chose nothing",
}
LEFT_OPEN = frozenset({CALLBACK, ABANDONED})
"""Choices after which the person still wants a call: their entry is not completed."""


def choice_note(choice: str | None, *, operator_requested: bool) -> str:
    """What the callee did, for notes on the callback entry and the case ("asked for an operator, …")."""
    what = CHOICE_NOTE.get(choice, CHOICE_NOTE[None])
    if not operator_requested or choice == OPERATOR:
        return what
    if choice in LEFT_OPEN:
        return f"asked for an operator, {what}"
    return f"asked for an operator, none available; {what}"


def callback_answered(session: Session, campaign: Campaign, target: CampaignTarget, *, attempt: int,
                      choice: str | None, operator_requested: bool) -> bool:
    """Complete the entry as reached by this campaign; False when a person holds it (a note is added instead)
    or when the callee still wants a call (booked a callback or hung up in the operator queue: the entry
    stays open for the next call, since the queue folds such a request into this very entry)."""
    cb = session.get(Callback, target.callback_id) if target.callback_id is not None else None
    if cb is None:
        return False
    what = choice_note(choice, operator_requested=operator_requested)
    note = f"campaign {campaign.id} ({campaign.name}), attempt {attempt}: reached, {what}"
    if choice not in LEFT_OPEN and complete_by_system(session, cb.id, f"campaign {campaign.id}", "reached", note):
        return True
    append_note(cb, note)
    return False


def callback_unreachable(session: Session, campaign: Campaign, target: CampaignTarget, reason: str) -> None:
    """Leave the entry open for a person, saying what the campaign tried."""
    cb = session.get(Callback, target.callback_id) if target.callback_id is not None else None
    if cb is not None and cb.done_at is None:
        append_note(cb, f"campaign {campaign.id} ({campaign.name}): {reason}; left for a person to call")
