"""The rules of an erasure request (DESIGN.md §18, docs/adr/0032): statuses, the transitions
between them, and due dates by regime. Pure: no I/O, the time is passed in.

GDPR (Art. 12(3)): one month after receipt, extendable by two further months in total with a
recorded reason. CCPA (Cal. Civ. Code §1798.130(a)(2)): 45 days, extendable by 45 days in total.
Time spent waiting on the requester (``received``: identity not yet verified) does not count.
A "month" ends on the same date of the next month, or on its last day when it has no such date
(Regulation 1182/71 Art. 3(2)(c)).
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from oblivio.core.errors import ConflictError, InvalidInputError

Status = Literal[
    "received", "identity_verified", "in_processing", "paused", "complete", "error", "canceled"
]
STATUSES: Final[tuple[Status, ...]] = (
    "received",
    "identity_verified",
    "in_processing",
    "paused",
    "complete",
    "error",
    "canceled",
)
OPEN_STATUSES: Final = frozenset(STATUSES) - {"complete", "canceled"}

TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "received": frozenset({"identity_verified", "canceled"}),
    "identity_verified": frozenset({"in_processing", "canceled"}),
    "in_processing": frozenset({"paused", "complete", "error"}),
    "paused": frozenset({"in_processing", "error", "canceled"}),
    "error": frozenset({"in_processing", "canceled"}),
    "complete": frozenset(),
    "canceled": frozenset(),
}
"""Which status may follow which. ``in_processing`` cannot be canceled mid-step (a step under
way finishes, then the request pauses or fails); canceling later undoes nothing already done."""

Regime = Literal["gdpr", "ccpa"]
REGIMES: Final[tuple[Regime, ...]] = ("gdpr", "ccpa")
LEGAL_BASIS: Final[Mapping[Regime, str]] = {
    "gdpr": "GDPR Art. 17",
    "ccpa": "CCPA §1798.105",
}


class InvalidTransitionError(ConflictError):
    """A status change the transition table does not allow: 409, nothing changed."""

    code = "erasure_request_invalid_transition"


class ExtensionRefusedError(ConflictError):
    """An extension past what the regime allows, or of a closed request: 409."""

    code = "erasure_request_extension_refused"


def check_transition(current: str, wanted: str) -> None:
    """Raise InvalidTransitionError unless ``current`` -> ``wanted`` is in TRANSITIONS."""
    allowed = TRANSITIONS.get(current, frozenset())
    if wanted not in allowed:
        permitted = ", ".join(sorted(allowed)) or "none: the request is closed"
        raise InvalidTransitionError(
            f"erasure request: cannot go from {current} to {wanted} (allowed from {current}: "
            f"{permitted})"
        )


def validate_regime(regime: object) -> Regime:
    """Return ``regime`` if it is ``gdpr`` or ``ccpa``; raise InvalidInputError otherwise."""
    if regime == "gdpr":
        return "gdpr"
    if regime == "ccpa":
        return "ccpa"
    raise InvalidInputError(f"regime: expected gdpr or ccpa, got {regime!r}")


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` plus calendar months: the same day of the month, or the month's last day."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


@dataclass(frozen=True)
class Deadline:
    """A request's due date now: when it is due, the latest it may be extended to, and
    whether its clock runs (it stops while waiting on the requester)."""

    due_at: datetime
    latest_due_at: datetime
    extended_days: int
    clock_running: bool

    def overdue(self, status: str, now: datetime) -> bool:
        """An open request past its due date."""
        return status in OPEN_STATUSES and self.clock_running and now > self.due_at


def deadline(
    regime: Regime,
    received_at: datetime,
    verified_at: datetime | None,
    extended_days: int,
    now: datetime,
) -> Deadline:
    """The due date of a request received at ``received_at`` whose identity was verified at
    ``verified_at`` (None: still waiting on the requester, whose time up to ``now`` does not
    count), extended by ``extended_days`` in total."""
    waited = (verified_at or max(now, received_at)) - received_at
    start = received_at + waited
    if regime == "gdpr":
        base, latest = add_months(start, 1), add_months(start, 3)
    else:
        base, latest = start + timedelta(days=45), start + timedelta(days=90)
    return Deadline(
        base + timedelta(days=extended_days), latest, extended_days, verified_at is not None
    )


def check_extension(current: Deadline, status: str, days: int, reason: str) -> None:
    """Raise unless a request in ``status`` with ``current`` due date may be extended by
    ``days`` for ``reason``: InvalidInputError for a bad number or an empty reason,
    ExtensionRefusedError for a closed request or past the regime's limit."""
    if not 1 <= days <= 366:
        raise InvalidInputError(f"extension: expected 1 to 366 days, got {days}")
    if not reason.strip():
        raise InvalidInputError("extension: a reason is required (GDPR Art. 12(3))")
    if status not in OPEN_STATUSES:
        raise ExtensionRefusedError(f"extension: the request is {status}")
    extended = current.due_at + timedelta(days=days)
    if extended > current.latest_due_at:
        room = (current.latest_due_at - current.due_at).days
        raise ExtensionRefusedError(
            f"extension: {days} days would move the due date past the regime's limit "
            f"({current.latest_due_at.date().isoformat()}); at most {room} more days"
        )
