"""Pure parts of propagation: the pull cursor, the backoff schedule, what leaves a node."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oblivio.core.errors import InvalidInputError
from oblivio.federation.propagation import (
    InvalidCursorError,
    as_sent,
    backoff_delay,
    decode_cursor,
    encode_cursor,
    kind_of,
    retry_delay,
)
from oblivio.federation.settings import FederationSettings, federation_settings


@given(st.integers(min_value=0, max_value=2**53 - 1))
def test_cursor_round_trips(seq: int) -> None:
    cursor = encode_cursor(seq)
    assert cursor.startswith("c1.")
    assert decode_cursor(cursor) == (seq, None)


@given(st.text(max_size=120))
def test_anything_else_is_an_invalid_cursor_or_a_time(text: str) -> None:
    try:
        seq, since = decode_cursor(text)
    except InvalidCursorError:
        return
    assert (seq, since) == (0, text)  # only an RFC 3339 time gets through


@pytest.mark.parametrize(
    "since",
    ["c1.", "c1.e30", "c1.eyJzZXEiOi0xfQ", "c1.eyJzZXEiOnRydWV9", "yesterday", "2026-13-01"],
)
def test_malformed_cursors_are_refused(since: str) -> None:
    # e30 = {}, eyJzZXEiOi0xfQ = {"seq":-1}, eyJzZXEiOnRydWV9 = {"seq":true}
    with pytest.raises(InvalidCursorError):
        decode_cursor(since)


def test_a_time_starts_from_the_beginning_filtered_by_created_at() -> None:
    assert decode_cursor("2026-12-01T00:00:00.000Z") == (0, "2026-12-01T00:00:00.000Z")


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=2**32))
def test_backoff_is_full_jitter_capped_at_five_minutes(attempts: int, seed: int) -> None:
    settings = FederationSettings()
    delay = backoff_delay(attempts, settings, random.Random(seed))  # noqa: S311 - a seeded schedule
    ceiling = min(300.0, 2.0**attempts)
    assert timedelta(0) <= delay <= timedelta(seconds=ceiling)


def test_backoff_doubles_from_one_second() -> None:
    settings = FederationSettings()
    rngs = [random.Random(s) for s in range(200)]  # noqa: S311 - seeded schedules
    highest = [max(backoff_delay(n, settings, r) for r in rngs).total_seconds() for n in range(10)]
    assert highest[0] <= 1.0
    assert 1.0 < highest[1] <= 2.0
    assert 150.0 < highest[8] <= 256.0
    assert 150.0 < highest[9] <= 300.0


def test_only_a_tombstones_reason_is_redacted() -> None:
    tombstone = {"id": "tomb_x", "reason": "Art. 17 #42", "signature": "s"}
    revocation = {"id": "tombrevoke_x", "reason": "court order", "signature": "s"}
    assert as_sent(tombstone) == {**tombstone, "reason": "redacted"}
    assert as_sent({**tombstone, "reason": None})["reason"] is None
    assert as_sent(revocation) == revocation  # a revocation's reason is signed
    assert (kind_of("tomb_x"), kind_of("tombrevoke_x")) == ("tombstone", "revocation")


def test_settings_are_read_and_checked() -> None:
    settings = federation_settings({"poll_interval_seconds": 30, "ack_deadline_seconds": 5})
    assert settings.poll_interval == timedelta(seconds=30)
    assert settings.ack_deadline == timedelta(seconds=5)
    for bad in (
        {"poll_interval_seconds": 301},
        {"poll_interval_seconds": True},
        {"backoff_cap_seconds": "1"},
    ):
        with pytest.raises(InvalidInputError):
            federation_settings(bad)


def test_a_seed001_tombstone_leaves_as_it_came() -> None:
    import json
    from pathlib import Path

    vectors = json.loads(
        (Path(__file__).parents[1] / "vectors" / "seed001_tombstones.json").read_text()
    )
    view = vectors["valid"][0]["view"]
    assert as_sent(view) == vectors["valid"][0]["tombstone"]  # its reason is signed: kept


def test_the_default_schedule_is_the_backoff_without_a_limit() -> None:
    settings = federation_settings({})
    assert settings.push_schedule == "backoff"
    rng = random.Random(7)  # noqa: S311 - a seeded schedule
    assert all(retry_delay(n, settings, rng) is not None for n in range(1, 500))


def test_the_fixed_schedule_is_mastodons_and_gives_up_after_16_retries() -> None:
    settings = federation_settings({"push_schedule": "fixed"})
    rng = random.Random(7)  # noqa: S311 - unused by a fixed schedule
    delays = [retry_delay(n, settings, rng) for n in range(1, 18)]
    assert [d.total_seconds() for d in delays[:5] if d is not None] == [15, 16, 31, 96, 271]
    assert delays[15] == timedelta(seconds=15**4 + 15)  # the 16th retry
    assert delays[16] is None  # the 16th retry failed too: given up


@given(
    st.lists(st.integers(min_value=0, max_value=3600), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=20),
    st.integers(min_value=1, max_value=40),
)
def test_a_configured_fixed_schedule_takes_its_delays_in_turn(
    delays: list[int], limit: int, failures: int
) -> None:
    settings = federation_settings(
        {"push_schedule": "fixed", "push_delays_seconds": delays, "push_retry_limit": limit}
    )
    delay = retry_delay(failures, settings, random.Random(0))  # noqa: S311 - unused
    if failures - 1 >= limit:
        assert delay is None
    else:
        assert delay == timedelta(seconds=delays[min(failures - 1, len(delays) - 1)])


@pytest.mark.parametrize(
    "bad",
    [
        {"push_schedule": "mastodon"},
        {"push_delays_seconds": []},
        {"push_delays_seconds": [1, -1]},
        {"push_delays_seconds": "15"},
        {"push_retry_limit": -1},
        {"push_retry_limit": True},
    ],
)
def test_bad_push_schedules_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        federation_settings(bad)
