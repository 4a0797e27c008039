"""Reputation arithmetic (core/reputation.py, seed 001 "Reputation Impact") with an injected
clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from oblivio.core.reputation import ReputationEvent, is_isolated, reputation, violation_kind

T0 = datetime(2026, 12, 2, tzinfo=UTC)
DAY = timedelta(days=1)


def test_starts_at_one() -> None:
    assert reputation([], T0) == 1.0


def test_first_violation_costs_half_then_each_later_one_a_whole_point() -> None:
    assert violation_kind(0) == "tombstone_ignored"
    assert violation_kind(1) == violation_kind(5) == "repeated_violation"
    first = [ReputationEvent("tombstone_ignored", T0)]
    assert reputation(first, T0) == 0.5
    second = [*first, ReputationEvent("repeated_violation", T0 + DAY)]
    assert reputation(second, T0 + DAY) == -0.5
    third = [*second, ReputationEvent("repeated_violation", T0 + 2 * DAY)]
    assert reputation(third, T0 + 2 * DAY) == -1.0  # the floor: effectively untrusted


def test_isolated_below_the_threshold_only() -> None:
    assert not is_isolated(0.5, 0.0)
    assert not is_isolated(0.0, 0.0)
    assert is_isolated(-0.5, 0.0)
    assert is_isolated(0.5, 0.6)


def test_recovers_005_per_full_30_days_without_a_violation() -> None:
    events = [ReputationEvent("tombstone_ignored", T0)]
    assert reputation(events, T0 + 29 * DAY) == 0.5
    assert reputation(events, T0 + 30 * DAY) == 0.55
    assert reputation(events, T0 + 59 * DAY) == 0.55
    assert reputation(events, T0 + 300 * DAY) == 1.0
    assert reputation(events, T0 + 3000 * DAY) == 1.0  # never above the start


def test_a_violation_restarts_the_recovery_period() -> None:
    events = [
        ReputationEvent("tombstone_ignored", T0),
        ReputationEvent("repeated_violation", T0 + 45 * DAY),  # 0.55 - 1.0
    ]
    assert reputation(events, T0 + 45 * DAY) == -0.45
    assert reputation(events, T0 + 74 * DAY) == -0.45
    assert reputation(events, T0 + 75 * DAY) == -0.4


def test_reinstatement_puts_it_back_at_one_and_history_stays() -> None:
    events = [
        ReputationEvent("tombstone_ignored", T0),
        ReputationEvent("repeated_violation", T0 + DAY),
        ReputationEvent("reinstated", T0 + 2 * DAY),
    ]
    assert reputation(events, T0 + 2 * DAY) == 1.0


def test_a_clock_before_the_events_adds_nothing() -> None:
    assert reputation([ReputationEvent("tombstone_ignored", T0)], T0 - 100 * DAY) == 0.5


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["tombstone_ignored", "repeated_violation", "reinstated"]),
            st.integers(0, 2000),
        ),
        max_size=12,
        unique_by=lambda e: e[1],  # events at one instant have no order but their ids'
    ),
    st.integers(0, 4000),
)
def test_stays_within_bounds_in_hundredths_and_order_free(
    raw: list[tuple[str, int]], now_days: int
) -> None:
    events = [ReputationEvent(kind, T0 + days * DAY) for kind, days in raw]  # type: ignore[arg-type]
    now = T0 + now_days * DAY
    score = reputation(events, now)
    assert -1.0 <= score <= 1.0
    assert round(score * 100) == score * 100 or abs(round(score * 100) - score * 100) < 1e-9
    assert reputation(list(reversed(events)), now) == score
    # time only helps
    assert reputation(events, now + 31 * DAY) >= score
