"""Federation settings, read once from the ``federation`` section of config.json."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Literal

from oblivio.core.errors import InvalidInputError

PushSchedule = Literal["backoff", "fixed"]
MASTODON_DELAYS: Final = tuple(timedelta(seconds=count**4 + 15) for count in range(16))
"""A Mastodon-like fixed schedule: Sidekiq's default retry delay ``count**4 + 15`` s for
retries 0-15 (Mastodon's ActivityPub::DeliveryWorker: ``retry: 16, dead: false``, its own
jitter left out), about 1.7 days in all, then the delivery is dropped."""


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
    push_schedule: PushSchedule = "backoff"
    """``backoff`` (the default, DESIGN.md §12): full jitter, no retry limit while the peer
    is active. ``fixed``: ``push_delays`` in turn (the last one repeated), and after
    ``push_retry_limit`` failed retries the delivery is given up (audited) — a fediverse
    server's behaviour, kept to measure what oblivio's own schedule, pull and announce add;
    a deletion given up reaches that peer only by pull."""
    push_delays: tuple[timedelta, ...] = MASTODON_DELAYS
    push_retry_limit: int = len(MASTODON_DELAYS)
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
        **_push_schedule(section, defaults),
        probe_interval=seconds("probe_interval_seconds", defaults.probe_interval, 1, 30 * 86400),
        isolation_threshold=_threshold(section.get("isolation_threshold")),
        propagation_delay=seconds(
            "propagation_delay_seconds", defaults.propagation_delay, 0, 7 * 86400
        ),
    )


def _push_schedule(section: Mapping[str, Any], defaults: FederationSettings) -> dict[str, Any]:
    """``push_schedule`` ("backoff" or "fixed"), ``push_delays_seconds`` (a non-empty list of
    seconds, each 0 to 30 days) and ``push_retry_limit`` (0 to 1000) of config.json."""
    schedule = section.get("push_schedule", defaults.push_schedule)
    if schedule not in ("backoff", "fixed"):
        raise InvalidInputError('federation.push_schedule: expected "backoff" or "fixed"')
    delays = section.get("push_delays_seconds")
    if delays is None:
        parsed = defaults.push_delays
    elif (
        not isinstance(delays, list)
        or not 1 <= len(delays) <= 1000
        or not all(
            not isinstance(d, bool) and isinstance(d, int | float) and 0 <= d <= 30 * 86400
            for d in delays
        )
    ):
        raise InvalidInputError(
            "federation.push_delays_seconds: expected a list of 1 to 1000 delays in seconds "
            "(0 to 30 days each)"
        )
    else:
        parsed = tuple(timedelta(seconds=d) for d in delays)
    limit = section.get("push_retry_limit", len(parsed) if delays is not None else None)
    if limit is None:
        limit = defaults.push_retry_limit
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 1000:
        raise InvalidInputError("federation.push_retry_limit: expected an integer from 0 to 1000")
    return {"push_schedule": schedule, "push_delays": parsed, "push_retry_limit": limit}


def _threshold(value: object) -> float:
    """The isolation threshold: a number from -1 to 1 (reputations stay in that range)."""
    if value is None:
        return FederationSettings.isolation_threshold
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1 <= value <= 1:
        raise InvalidInputError("federation.isolation_threshold: expected a number from -1 to 1")
    return float(value)
