"""Who a campaign calls: selection from cases or a CSV, phone checks, the preview, do-not-call.

Selection
    From cases: those that reached ``replied`` or ``closed`` (a CaseEvent with that
    ``to_status``) inside ``[since, until)``, optionally of one category or responsible unit.
    The event time, not ``updated_at``, is what "replied in March" means, and a recurring
    campaign asks for exactly "replied since the last run". From a CSV: one case number per
    row (a ``case_number`` header is optional); bad rows are reported with their line number
    and the good rows kept.

Preview
    Every selected case becomes a :class:`Candidate`, either callable (with its E.164 phone)
    or dropped with one reason (:data:`DROP_REASONS`, first match wins), so staff see how
    many were dropped and why before starting. Dropped candidates are stored as ``dropped``
    targets: the campaign keeps the record of whom it did not call.

"Already visited" reads two records: a target of any campaign answered for the case, and
the case's own history (a rating or a return-visit start by staff on the phone, after the
case's last reply). A case reopened after "not satisfied" and replied again is visited
again: only a visit *after the latest reply* counts.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from campaigns.errors import CampaignError, TargetError
from campaigns.models import DONE, DROPPED, PENDING, Campaign, CampaignTarget, DoNotCall
from cases.models import Case, CaseEvent
from config.db import utcnow

REGION = "CN"
SELECT_STATUSES = ("replied", "closed")
GONE_STATUSES = {"merged": "case_merged", "discarded": "case_discarded", "rejected": "case_rejected"}
"""A case in one of these states is not visited; the value is the drop reason."""
DROP_REASONS = (
    "duplicate",
    "case_deleted",
    "case_merged",
    "case_discarded",
    "case_rejected",
    "no_phone",
    "invalid_phone",
    "do_not_call",
    "confidential_no_calls",
    "no_calls_requested",
    "already_visited",
    "already_targeted",
    # a missed-call callback campaign's targets (campaigns/callback_targets.py)
    "already_calling",
    "callback_claimed",
    "callback_done",
    "callback_deleted",
)
CASE_NUMBER = re.compile(r"^\d{8}-\d{4,}$")
MAX_CSV_BYTES = 5_000_000


class PhoneError(CampaignError):
    """Not a phone number that can be dialled in China."""


def normalise_phone(raw: object) -> str:
    """'138 0013 8000', '+86-138-0013-8000', '010 6552 9988' → E.164; PhoneError otherwise.

    Numbers are read as Chinese (region CN) when they carry no country code, and must be
    *valid* (a real numbering-plan range), not merely shaped like a number.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise PhoneError(f"not a phone number: {raw!r}")
    text = raw.strip()
    if len(text) > 40 or not re.fullmatch(r"[0-9+\-\s().]+", text):
        raise PhoneError(f"not a phone number: {text[:40]!r}")
    try:
        number = phonenumbers.parse(text, REGION)
    except phonenumbers.NumberParseException as e:
        raise PhoneError(f"not a phone number: {text!r} ({e})") from None
    if not phonenumbers.is_valid_number(number):
        raise PhoneError(f"not a valid number: {text!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def select_cases(
    session: Session,
    *,
    since: dt.datetime,
    until: dt.datetime,
    statuses: Sequence[str] = SELECT_STATUSES,
    category: str | None = None,
    unit: str | None = None,
) -> list[Case]:
    """Cases that reached one of ``statuses`` inside [since, until), oldest first."""
    if until <= since:
        raise TargetError(f"the date range ends ({until.isoformat()}) before it starts ({since.isoformat()})")
    bad = [s for s in statuses if s not in SELECT_STATUSES]
    if bad or not statuses:
        raise TargetError(f"targets are selected from cases {' or '.join(SELECT_STATUSES)}, not {bad or 'nothing'}")
    reached = (
        select(CaseEvent.case_id)
        .where(CaseEvent.to_status.in_(statuses), CaseEvent.at >= since, CaseEvent.at < until)
        .distinct()
    )
    q = select(Case).where(Case.id.in_(reached)).order_by(Case.received_at, Case.id)
    if category is not None:
        q = q.where(Case.category == category)
    if unit is not None:
        q = q.where(Case.unit == unit)
    return list(session.scalars(q))


@dataclass(frozen=True)
class LineError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def read_case_numbers_csv(session: Session, text: str) -> tuple[list[Case], list[LineError]]:
    """Cases named in a CSV (first column, optional ``case_number`` header); bad rows by line."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CSV_BYTES:
        raise TargetError(f"the CSV is larger than {MAX_CSV_BYTES // 1_000_000} MB")
    text = text.lstrip("\ufeff")  # Excel writes a BOM
    errors: list[LineError] = []
    wanted: list[tuple[int, str]] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            line = reader.line_num
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            value = cells[0]
            if line == 1 and value.lower().replace(" ", "_") in ("case_number", "number", "case"):
                continue
            if not CASE_NUMBER.match(value):
                errors.append(LineError(line, f"{value[:40]!r} is not a case number (YYYYMMDD-NNNN)"))
                continue
            wanted.append((line, value))
    except csv.Error as e:
        errors.append(LineError(reader.line_num, f"unreadable CSV: {e}; the rest of the file was skipped"))
    found = {c.number: c for c in session.scalars(select(Case).where(Case.number.in_({n for _, n in wanted})))}
    cases = []
    for line, number in wanted:
        case = found.get(number)
        if case is None:
            errors.append(LineError(line, f"no case {number}"))
        else:
            cases.append(case)
    errors.sort(key=lambda e: e.line)
    return cases, errors


@dataclass(frozen=True)
class Candidate:
    case_id: int | None
    case_number: str | None
    phone: str | None
    drop_reason: str | None = None
    callback_id: int | None = None
    """Set for a callback-list entry (then case_id and case_number are None)."""


@dataclass
class Preview:
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def callable(self) -> list[Candidate]:
        return [c for c in self.candidates if c.drop_reason is None]

    @property
    def dropped(self) -> list[Candidate]:
        return [c for c in self.candidates if c.drop_reason is not None]

    def drop_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.dropped:
            counts[c.drop_reason] = counts.get(c.drop_reason, 0) + 1  # type: ignore[index]
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "targets": len(self.callable),
            "dropped": len(self.dropped),
            "dropped_by_reason": self.drop_counts(),
            "candidates": [c.__dict__ for c in self.candidates],
        }


def case_phone(case: Case) -> str | None:
    """The number to call back: the one the complainant gave, else the one they called from."""
    return case.complainant_phone or case.caller_number or None


def do_not_call_set(session: Session, phones: Iterable[str]) -> set[str]:
    wanted = set(phones)
    if not wanted:
        return set()
    return set(session.scalars(select(DoNotCall.phone).where(DoNotCall.phone.in_(wanted))))


def preview(session: Session, cases: Sequence[Case], *, campaign_id: int | None = None) -> Preview:
    """Decide for each case whether it will be called, or why not (first reason of DROP_REASONS)."""
    phones: dict[int, str | None] = {}
    bad_phone: set[int] = set()
    for case in cases:
        raw = case_phone(case)
        try:
            phones[case.id] = normalise_phone(raw) if raw else None
        except PhoneError:
            phones[case.id] = None
            bad_phone.add(case.id)
    dnc = do_not_call_set(session, (p for p in phones.values() if p))
    ids = [c.id for c in cases]
    visited = set(
        session.scalars(
            select(CampaignTarget.case_id).where(
                CampaignTarget.case_id.in_(ids), CampaignTarget.state == DONE, CampaignTarget.outcome == "answered"
            )
        )
    )
    targeted: set[int] = set()
    if campaign_id is not None:
        targeted = set(
            session.scalars(
                select(CampaignTarget.case_id).where(
                    CampaignTarget.campaign_id == campaign_id, CampaignTarget.case_id.in_(ids)
                )
            )
        )
    visited |= visited_in_history(session, ids)
    out, seen = Preview(), set()
    for case in cases:
        phone = phones[case.id]
        reason: str | None = None
        if case.id in seen:
            reason = "duplicate"
        elif case.status in GONE_STATUSES:
            reason = GONE_STATUSES[case.status]
        elif case.id in bad_phone:
            reason = "invalid_phone"
        elif phone is None:
            reason = "no_phone"
        elif phone in dnc:
            reason = "do_not_call"
        elif case.no_call:
            reason = "confidential_no_calls" if case.confidential else "no_calls_requested"
        elif case.id in visited:
            reason = "already_visited"
        elif case.id in targeted:
            reason = "already_targeted"
        seen.add(case.id)
        out.candidates.append(Candidate(case.id, case.number, phone, reason))
    return out


VISIT_ACTIONS = ("start_return_visit", "return_visit_attempt", "close", "reopen")


def visited_in_history(session: Session, case_ids: Sequence[int]) -> set[int]:
    """Cases whose history shows a return visit (a rating, or the visit stage) after their last reply."""
    if not case_ids:
        return set()
    rows = session.execute(
        select(CaseEvent.case_id, CaseEvent.at, CaseEvent.id, CaseEvent.action, CaseEvent.to_status, CaseEvent.data)
        .where(CaseEvent.case_id.in_(case_ids),
               (CaseEvent.to_status == "replied") | CaseEvent.action.in_(VISIT_ACTIONS))
        .order_by(CaseEvent.case_id, CaseEvent.at, CaseEvent.id)
    ).all()
    visited: set[int] = set()
    for case_id, _at, _id, action, to_status, data in rows:
        if to_status == "replied" and action not in VISIT_ACTIONS:
            visited.discard(case_id)  # replied (again): earlier visits were about an earlier answer
        elif action == "start_return_visit" or (data or {}).get("rating") or (data or {}).get("satisfaction"):
            visited.add(case_id)
    return visited


def add_targets(session: Session, campaign: Campaign, result: Preview, *, now: dt.datetime | None = None) -> int:
    """Store the preview as targets (callable ones pending, the rest dropped); returns the callable count.

    Duplicates within one selection and cases already in this campaign are not stored
    again: one case, one target per campaign.
    """
    now = now or utcnow()
    n = 0
    for c in result.candidates:
        if c.drop_reason in ("duplicate", "already_targeted"):
            continue
        callable_ = c.drop_reason is None
        session.add(
            CampaignTarget(
                campaign_id=campaign.id,
                case_id=c.case_id,
                case_number=c.case_number,
                callback_id=c.callback_id,
                phone=c.phone,
                state=PENDING if callable_ else DROPPED,
                drop_reason=c.drop_reason,
                next_attempt_at=None,
                run_at=now,
            )
        )
        n += callable_
    session.flush()
    return n


# -- do-not-call ---------------------------------------------------------------------------


def add_do_not_call(session: Session, phone: str, *, reason: str, added_by: str, at: dt.datetime | None = None) -> tuple[DoNotCall, bool]:
    """Put a number on the list (normalised); returns (entry, created). Pending targets with it are dropped."""
    e164 = normalise_phone(phone)
    reason = (reason or "").strip()[:200] or "no reason given"
    existing = session.get(DoNotCall, e164)
    if existing is not None:
        return existing, False
    entry = DoNotCall(phone=e164, reason=reason, added_by=added_by[:80], added_at=at or utcnow())
    session.add(entry)
    session.flush()
    for target in session.scalars(select(CampaignTarget).where(CampaignTarget.phone == e164, CampaignTarget.state == PENDING)):
        target.state, target.drop_reason = DROPPED, "do_not_call"
    session.flush()
    return entry, True


def remove_do_not_call(session: Session, phone: str) -> bool:
    """Take a number off the list; False when it was not on it. Dropped targets stay dropped."""
    e164 = normalise_phone(phone)
    return bool(session.execute(delete(DoNotCall).where(DoNotCall.phone == e164)).rowcount)


def import_do_not_call(session: Session, text: str, *, added_by: str, default_reason: str) -> tuple[int, list[LineError]]:
    """CSV rows ``phone[,reason]``; returns (numbers added, bad rows by line). Good rows are kept."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CSV_BYTES:
        raise TargetError(f"the CSV is larger than {MAX_CSV_BYTES // 1_000_000} MB")
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    added, errors = 0, []
    try:
        for row in reader:
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if reader.line_num == 1 and cells[0].lower() in ("phone", "number", "phone_number"):
                continue
            try:
                _, created = add_do_not_call(
                    session, cells[0], reason=cells[1] if len(cells) > 1 and cells[1] else default_reason, added_by=added_by
                )
            except PhoneError as e:
                errors.append(LineError(reader.line_num, str(e)))
                continue
            added += created
    except csv.Error as e:
        errors.append(LineError(reader.line_num, f"unreadable CSV: {e}; the rest of the file was skipped"))
    return added, errors
