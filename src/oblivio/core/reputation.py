"""Peer reputation (seed 001 "Reputation Impact", DESIGN.md §12), pure: no I/O, no clock.

A peer's reputation is computed, never stored as a running total: it is a fold over the
peer's recorded events and the time now, in hundredths so that it is exact:

- it starts at 1.0;
- a first violation (``tombstone_ignored``) takes 0.5, every later one
  (``repeated_violation``) 1.0 (seed 001's ``trust_penalties``);
- every full 30 days without an event adds 0.05 (slow recovery), up to 1.0;
- an operator's reinstatement (``reinstated``) puts it back at 1.0 at least;
- it never goes below -1.0 ("effectively untrusted"), so recovery from the floor is bounded.

A peer whose reputation is below the isolation threshold (default 0) is isolated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

EventKind = Literal["tombstone_ignored", "repeated_violation", "reinstated"]
VIOLATIONS: Final = ("tombstone_ignored", "repeated_violation")
START: Final = 100
"""Hundredths: 1.0."""
FLOOR: Final = -100
PENALTY: Final[dict[str, int]] = {"tombstone_ignored": -50, "repeated_violation": -100}
RECOVERY_STEP: Final = 5
RECOVERY_PERIOD: Final = timedelta(days=30)


@dataclass(frozen=True)
class ReputationEvent:
    """One recorded event of a peer."""

    kind: EventKind
    at: datetime


def violation_kind(earlier_violations: int) -> EventKind:
    """The kind of a new violation by a peer with ``earlier_violations`` recorded already."""
    return "tombstone_ignored" if earlier_violations == 0 else "repeated_violation"


def _recovered(score: int, since: datetime | None, until: datetime) -> int:
    if since is None or until <= since:
        return score
    periods = (until - since) // RECOVERY_PERIOD
    return max(score, min(START, score + RECOVERY_STEP * periods))


def reputation(events: Iterable[ReputationEvent], now: datetime) -> float:
    """The reputation after ``events`` (any order), as of ``now`` (module docstring)."""
    score = START
    since: datetime | None = None
    for event in sorted(events, key=lambda e: e.at):
        score = _recovered(score, since, event.at)
        if event.kind == "reinstated":
            score = max(score, START)
        else:
            score = max(FLOOR, score + PENALTY[event.kind])
        since = event.at
    return _recovered(score, since, now) / 100


def is_isolated(score: float, threshold: float) -> bool:
    """A peer below ``threshold`` is isolated."""
    return score < threshold
