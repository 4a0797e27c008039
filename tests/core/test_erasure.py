"""The rules of erasure requests (core/erasure.py): transitions, due dates, extensions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oblivio.core.erasure import (
    STATUSES,
    TRANSITIONS,
    ExtensionRefusedError,
    InvalidTransitionError,
    add_months,
    check_extension,
    check_transition,
    deadline,
    validate_regime,
)
from oblivio.core.errors import InvalidInputError

T0 = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.mark.parametrize("current", STATUSES)
@pytest.mark.parametrize("wanted", STATUSES)
def test_every_pair_of_statuses_is_allowed_exactly_as_the_table_says(
    current: str, wanted: str
) -> None:
    if wanted in TRANSITIONS[current]:
        check_transition(current, wanted)
    else:
        with pytest.raises(InvalidTransitionError, match=f"cannot go from {current} to {wanted}"):
            check_transition(current, wanted)


def test_closed_requests_allow_nothing_and_the_design_path_is_allowed() -> None:
    assert TRANSITIONS["complete"] == TRANSITIONS["canceled"] == frozenset()
    path = ["received", "identity_verified", "in_processing", "paused", "in_processing"]
    for current, wanted in zip(path, [*path[1:], "complete"], strict=True):
        check_transition(current, wanted)
    check_transition("in_processing", "error")
    check_transition("error", "in_processing")
    with pytest.raises(InvalidTransitionError, match="none: the request is closed"):
        check_transition("complete", "in_processing")


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (datetime(2026, 1, 31, tzinfo=UTC), 1, datetime(2026, 2, 28, tzinfo=UTC)),
        (datetime(2028, 1, 31, tzinfo=UTC), 1, datetime(2028, 2, 29, tzinfo=UTC)),
        (datetime(2026, 11, 30, tzinfo=UTC), 3, datetime(2027, 2, 28, tzinfo=UTC)),
        (datetime(2026, 12, 2, 10, tzinfo=UTC), 1, datetime(2027, 1, 2, 10, tzinfo=UTC)),
        (datetime(2026, 3, 31, tzinfo=UTC), 1, datetime(2026, 4, 30, tzinfo=UTC)),
    ],
)
def test_a_month_ends_on_the_same_date_or_the_last_day_of_the_month(
    start: datetime, months: int, expected: datetime
) -> None:
    assert add_months(start, months) == expected


def test_gdpr_and_ccpa_due_dates_and_their_limits() -> None:
    gdpr = deadline("gdpr", T0, T0, 0, T0)
    assert gdpr.due_at == datetime(2026, 2, 15, 9, 30, tzinfo=UTC)
    assert gdpr.latest_due_at == datetime(2026, 4, 15, 9, 30, tzinfo=UTC)
    ccpa = deadline("ccpa", T0, T0, 0, T0)
    assert ccpa.due_at == T0 + 45 * DAY
    assert ccpa.latest_due_at == T0 + 90 * DAY


def test_the_clock_waits_while_the_identity_is_not_verified() -> None:
    waiting = deadline("gdpr", T0, None, 0, T0 + 10 * DAY)
    assert not waiting.clock_running
    assert waiting.due_at == add_months(T0 + 10 * DAY, 1)
    assert not waiting.overdue("received", T0 + 400 * DAY)
    verified = deadline("ccpa", T0, T0 + 3 * DAY, 0, T0 + 49 * DAY)
    assert verified.due_at == T0 + 48 * DAY
    assert verified.overdue("in_processing", T0 + 49 * DAY)
    assert verified.overdue("paused", T0 + 49 * DAY)
    assert not verified.overdue("complete", T0 + 49 * DAY)
    assert not verified.overdue("canceled", T0 + 49 * DAY)


def test_gdpr_extensions_stop_at_two_further_months() -> None:
    current = deadline("gdpr", T0, T0, 0, T0)
    room = (current.latest_due_at - current.due_at).days
    assert room == 59  # 15 Feb -> 15 Apr 2026
    check_extension(current, "in_processing", room, "complex request")
    with pytest.raises(ExtensionRefusedError, match="at most 59 more days"):
        check_extension(current, "in_processing", room + 1, "complex request")
    extended = deadline("gdpr", T0, T0, 30, T0)
    check_extension(extended, "paused", 29, "still complex")
    with pytest.raises(ExtensionRefusedError, match="at most 29 more days"):
        check_extension(extended, "paused", 30, "still complex")


def test_ccpa_extensions_stop_at_45_days() -> None:
    check_extension(deadline("ccpa", T0, T0, 0, T0), "received", 45, "r")
    with pytest.raises(ExtensionRefusedError):
        check_extension(deadline("ccpa", T0, T0, 0, T0), "received", 46, "r")
    with pytest.raises(ExtensionRefusedError):
        check_extension(deadline("ccpa", T0, T0, 40, T0), "received", 6, "r")


@pytest.mark.parametrize(
    ("days", "reason", "status", "error"),
    [
        (0, "r", "received", InvalidInputError),
        (-3, "r", "received", InvalidInputError),
        (5, "  ", "received", InvalidInputError),
        (5, "r", "complete", ExtensionRefusedError),
        (5, "r", "canceled", ExtensionRefusedError),
    ],
)
def test_bad_extensions_are_refused(
    days: int, reason: str, status: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        check_extension(deadline("gdpr", T0, T0, 0, T0), status, days, reason)


def test_unknown_regimes_are_refused() -> None:
    assert validate_regime("gdpr") == "gdpr"
    with pytest.raises(InvalidInputError, match="expected gdpr or ccpa"):
        validate_regime("lgpd")


moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=60, deadline=None)
@given(
    regime=st.sampled_from(["gdpr", "ccpa"]),
    received=moments,
    waited=st.integers(0, 400),
    days=st.lists(st.integers(1, 100), max_size=4),
)
def test_accepted_extensions_never_pass_the_limit_and_waiting_only_moves_the_date_later(
    regime: str, received: datetime, waited: int, days: list[int]
) -> None:
    kind = validate_regime(regime)
    verified = received + waited * DAY
    total = 0
    for extra in days:
        current = deadline(kind, received, verified, total, verified)
        try:
            check_extension(current, "in_processing", extra, "reason")
        except ExtensionRefusedError:
            assert current.due_at + extra * DAY > current.latest_due_at
            continue
        total += extra
    final = deadline(kind, received, verified, total, verified)
    assert final.due_at <= final.latest_due_at
    assert final.due_at >= deadline(kind, received, received, total, received).due_at
