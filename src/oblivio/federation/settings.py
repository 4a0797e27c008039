"""Federation settings, read once from the ``federation`` section of config.json."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from oblivio.core.errors import InvalidInputError


@dataclass(frozen=True)
class FederationSettings:
    """How often to pull, how long to wait for acks, how far to back off (DESIGN.md §12)."""

    poll_interval: timedelta = timedelta(minutes=5)
    """Each node pulls from each peer at least this often (seed 002 §23.4.3: 5 minutes)."""
    announce_pull_within: timedelta = timedelta(seconds=1)
    """After an announcement, a pull starts within this (at most 60 s, §23.4.3)."""
    backoff_base: timedelta = timedelta(seconds=1)
    backoff_cap: timedelta = timedelta(minutes=5)
    ack_deadline: timedelta = timedelta(hours=1)
    """A peer with no ack this long after a tombstone was issued is ``silent``."""
    token_lifetime: timedelta = timedelta(days=365)
    pull_page: int = 500
    probe_interval: timedelta = timedelta(days=1)
    """After a probe found a belief still served, the next probe of that peer comes this much
    later (docs/adr/0027); a second finding is a repeated violation."""
    isolation_threshold: float = 0.0
    """A peer whose reputation falls below this is isolated (seed 001, DESIGN.md §12)."""
    propagation_delay: timedelta = timedelta(minutes=5)
    """A shared belief waits this long as ``pending_federation`` before any delivery; deleting
    it meanwhile needs no tombstone (seed 001 grace period)."""


def federation_settings(section: Mapping[str, Any]) -> FederationSettings:
    """Settings from config.json's ``federation`` object (seconds); defaults for what is absent.
    Raises InvalidInputError naming a bad value."""
    defaults = FederationSettings()

    def seconds(name: str, default: timedelta, low: float, high: float) -> timedelta:
        value = section.get(name)
        if value is None:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise InvalidInputError(f"federation.{name}: expected seconds from {low} to {high}")
        return timedelta(seconds=value)

    return FederationSettings(
        poll_interval=seconds("poll_interval_seconds", defaults.poll_interval, 1, 300),
        announce_pull_within=seconds(
            "announce_pull_within_seconds", defaults.announce_pull_within, 0, 60
        ),
        backoff_base=defaults.backoff_base,
        backoff_cap=seconds("backoff_cap_seconds", defaults.backoff_cap, 1, 300),
        ack_deadline=seconds("ack_deadline_seconds", defaults.ack_deadline, 1, 30 * 86400),
        token_lifetime=seconds(
            "token_lifetime_seconds", defaults.token_lifetime, 60, 10 * 365 * 86400
        ),
        probe_interval=seconds("probe_interval_seconds", defaults.probe_interval, 1, 30 * 86400),
        isolation_threshold=_threshold(section.get("isolation_threshold")),
        propagation_delay=seconds(
            "propagation_delay_seconds", defaults.propagation_delay, 0, 7 * 86400
        ),
    )


def _threshold(value: object) -> float:
    """The isolation threshold: a number from -1 to 1 (reputations stay in that range)."""
    if value is None:
        return FederationSettings.isolation_threshold
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1 <= value <= 1:
        raise InvalidInputError("federation.isolation_threshold: expected a number from -1 to 1")
    return float(value)
