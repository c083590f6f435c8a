"""Who sees a reporter's personal data (name, phone, unit, address), masking, and the view log.

A case is *protected* when the reporter asked for confidentiality or is anonymous. For a
protected case the personal fields are shown only to the roles that must contact the
reporter, masked for everyone else, and every unmasked view is written to
``personal_data_view``. Open311 (:func:`public_view`) never carries them, for any case;
exports (the staff's CSV of the case list, api/case_export.py) carry a protected
reporter's fields masked whatever the exporter's role, as lists do, since a downloaded
file is out of reach of this table and of the view log.

Decisions (12389 handles complaints *about police units*, so the responsible unit may be
the one complained about):

==============  =====================================  ======================================
role            unprotected case                        protected case
==============  =====================================  ======================================
operator        all fields                              all fields (registers and calls back)
supervisor      all fields                              all fields (leader on duty, audits)
unit_handler    all fields, own unit's cases only       masked: the centre contacts the reporter
campaign_staff  phone only (the return-visit call)      phone only, none when ``no_call``
admin           masked (runs the system, not cases)     masked
==============  =====================================  ======================================

A unit handler of another unit sees nothing unmasked (the API will not even list such
cases; masking here is the second line of defence).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from cases.models import Case, PersonalDataView
from config.db import utcnow

ROLES = ("operator", "supervisor", "unit_handler", "campaign_staff", "admin")
PERSONAL = ("complainant_name", "complainant_phone", "complainant_unit", "address", "caller_number")
_ALL = frozenset(PERSONAL)
_PHONES = frozenset({"complainant_phone", "caller_number"})


def is_protected(case: Case) -> bool:
    return bool(case.confidential or case.anonymous)


def visible_fields(role: str, case: Case, *, unit: str | None = None) -> frozenset[str]:
    """The personal fields ``role`` may see unmasked on ``case`` (see the table above)."""
    if role in ("operator", "supervisor"):
        return _ALL
    if role == "unit_handler":
        return _ALL if unit is not None and unit == case.unit and not is_protected(case) else frozenset()
    if role == "campaign_staff":
        return frozenset() if case.no_call else _PHONES
    return frozenset()


def mask_name(name: str | None) -> str | None:
    """张三丰 → 张**; keeps only the surname-sized first character."""
    if not name:
        return name
    return name[0] + "*" * max(len(name) - 1, 1)


def mask_phone(phone: str | None) -> str | None:
    """13812341234 → 138****1234; short numbers keep their last two digits."""
    if not phone:
        return phone
    if len(phone) >= 11:
        return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
    return "*" * max(len(phone) - 2, 1) + phone[-2:]


def mask_address(address: str | None) -> str | None:
    """城东区建设路88号3栋 → 城东区****: the district is enough to route, never the door."""
    if not address:
        return address
    head = address.split("区", 1)[0] + "区" if "区" in address[:8] else address[:2]
    return head + "****"


_MASKS = {
    "complainant_name": mask_name,
    "complainant_phone": mask_phone,
    "caller_number": mask_phone,
    "complainant_unit": lambda v: (v[:2] + "****") if v else v,
    "address": mask_address,
}


def personal_view(
    session: Session,
    case: Case,
    *,
    viewer: str,
    role: str,
    unit: str | None = None,
    purpose: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The personal fields as ``viewer`` may see them; logs the view when protected data is shown unmasked.

    Unprotected cases are not logged: the log is for reporters who asked for it, and
    logging every list page would bury those entries.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    shown = visible_fields(role, case, unit=unit)
    out = {f: getattr(case, f) if f in shown else _MASKS[f](getattr(case, f)) for f in PERSONAL}
    unmasked = sorted(f for f in shown if getattr(case, f))
    if is_protected(case) and unmasked:
        session.add(PersonalDataView(case_id=case.id, viewer=viewer, role=role, fields=unmasked,
                                     purpose=purpose, at=now or utcnow()))
        session.flush()
    return out


PUBLIC_FIELDS = ("number", "channel", "category", "handling_form", "status", "unit", "received_at",
                 "replied_at", "closed_at", "key_supervision")


def public_view(case: Case, *, tz: dt.tzinfo | None = None) -> dict[str, Any]:
    """What may leave the building to the public (Open311): no personal field, whoever reported it.

    The content is included only for unprotected cases: a confidential reporter's own
    words often identify them.
    """
    out: dict[str, Any] = {}
    for f in PUBLIC_FIELDS:
        v = getattr(case, f)
        out[f] = v.astimezone(tz or dt.UTC).isoformat() if isinstance(v, dt.datetime) else v
    out["content"] = None if is_protected(case) else case.content
    return out
