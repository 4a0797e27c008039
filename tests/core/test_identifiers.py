"""Entity URIs, scopes, capabilities and time formats (DESIGN.md §3, seed 002 §23.2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oblivio.core.errors import InvalidEntityUriError, InvalidInputError, InvalidScopeError
from oblivio.core.identifiers import (
    format_time,
    parse_artifact_id,
    parse_time,
    scope_pattern_covers,
    validate_capabilities,
    validate_entity_uri,
    validate_scope_pattern,
)


@pytest.mark.parametrize(
    "uri",
    [
        "user:alice",
        "user:alice@example.com",
        "org_x-1:émile",
        "a:" + "x" * 512,
        "artifact:" + "0" * 64,
        "belief:0190a6d4-7c1e-7000-8000-000000000000",
        "n" + "x" * 31 + ":1",
    ],
)
def test_valid_entity_uris(uri: str) -> None:
    assert validate_entity_uri(uri) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "alice",
        "User:alice",
        "1user:alice",
        "user:",
        "user:ali ce",
        "user:alice\n",
        "user:*",
        "user:al*ice",
        "a:" + "x" * 513,
        "n" + "x" * 32 + ":1",
        "artifact:xyz",
        "belief:not-a-uuid",
        "user:\u200balice\u00a0",
    ],
)
def test_invalid_entity_uris(uri: str) -> None:
    with pytest.raises(InvalidEntityUriError):
        validate_entity_uri(uri)


def test_non_string_entity_uri() -> None:
    with pytest.raises(InvalidEntityUriError, match="expected a string"):
        validate_entity_uri(42)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("*", "*"), ("team", "team"), (["local", "public"], ("local", "public"))],
)
def test_valid_scope_patterns(pattern: object, expected: object) -> None:
    assert validate_scope_pattern(pattern) == expected


@pytest.mark.parametrize("pattern", ["", "global", [], ["team", "team"], ["*"], 3, None, b"team"])
def test_invalid_scope_patterns(pattern: object) -> None:
    with pytest.raises(InvalidScopeError):
        validate_scope_pattern(pattern)


def test_scope_pattern_coverage() -> None:
    assert scope_pattern_covers("*", "public")
    assert scope_pattern_covers("team", "team")
    assert not scope_pattern_covers("team", "local")
    assert scope_pattern_covers(("local", "team"), "team")
    assert not scope_pattern_covers(("local", "team"), "company")


def test_capabilities_are_canonically_ordered() -> None:
    assert validate_capabilities(["recover", "decrypt"]) == ("decrypt", "recover")
    for bad in ([], "decrypt", ["read"]):
        with pytest.raises(InvalidInputError):
            validate_capabilities(bad)


def test_artifact_id_grammar() -> None:
    assert parse_artifact_id("a" * 64) == "a" * 64
    for bad in ("A" * 64, "a" * 63, "g" * 64):
        with pytest.raises(InvalidInputError):
            parse_artifact_id(bad)


def test_time_is_rfc3339_utc_milliseconds() -> None:
    moment = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
    assert format_time(moment) == "2026-11-22T10:00:00.123Z"
    other = moment.astimezone(timezone(timedelta(hours=5)))
    assert format_time(other) == "2026-11-22T10:00:00.123Z"


@given(st.datetimes(timezones=st.just(UTC)))
def test_time_round_trip_to_milliseconds(moment: datetime) -> None:
    parsed = parse_time(format_time(moment))
    assert parsed == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@pytest.mark.parametrize(
    "text", ["2026-11-22", "2026-11-22T10:00:00", "yesterday", "2026-13-01T00:00:00Z"]
)
def test_bad_times(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_time(text)
