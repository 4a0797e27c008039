"""Leaf records and forget events as core builds them (DESIGN.md §6, §15)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oblivio.core.canonical import canonical_json
from oblivio.core.errors import InvalidInputError
from oblivio.core.forgetting import (
    active_record,
    forget_event,
    forget_event_entries,
    new_artifact_leaf_json,
    tombstone_leaf_json,
    tombstone_record,
)
from oblivio.core.identifiers import CAPABILITIES


@given(st.binary(min_size=32, max_size=32))
def test_a_new_artifacts_leaf_is_the_jcs_of_its_active_record(commitment: bytes) -> None:
    expected = canonical_json(active_record(commitment, CAPABILITIES))
    assert new_artifact_leaf_json(commitment).encode("ascii") == expected


@pytest.mark.parametrize("size", [0, 31, 33])
def test_a_commitment_of_another_size_is_refused(size: int) -> None:
    with pytest.raises(InvalidInputError, match="expected 32 bytes"):
        new_artifact_leaf_json(bytes(size))


_hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
_uuid = st.uuids().map(str)


@given(
    pairs=st.lists(st.tuples(_uuid, _hex64), min_size=1, max_size=5),
    level=st.sampled_from([0, 1, 2]),
    capabilities=st.lists(st.sampled_from(CAPABILITIES), min_size=1, unique=True),
    authority=st.text(min_size=1, max_size=200),
    commitment=_hex64,
)
def test_forget_event_entries_are_the_jcs_of_each_event(
    pairs: list[tuple[str, str]],
    level: int,
    capabilities: list[str],
    authority: str,
    commitment: str,
) -> None:
    common = {
        "level": level,
        "capabilities": capabilities,
        "authority": authority,
        "commitment": commitment,
        "requested_at": "2026-11-22T10:00:00.000Z",
    }
    entries = forget_event_entries(
        event_ids=[e for e, _ in pairs], artifacts=[a for _, a in pairs], **common
    )
    assert entries == [
        canonical_json(forget_event(event_id=e, artifacts=[a], **common)) for e, a in pairs
    ]


@pytest.mark.parametrize(
    "authority",
    [
        'x","id":"00000000-0000-0000-0000-000000000000',
        ',"id":"',
        "\u0000",
        # Equal to the template's markers: the events are then made one by one.
        "00000000-0000-0000-0000-000000000000",
        "0" * 64,
    ],
)
def test_an_authority_that_looks_like_the_id_field_stays_a_string(authority: str) -> None:
    event_id, artifact = "0190aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee", "ab" * 32
    common = {
        "level": 2,
        "capabilities": list(CAPABILITIES),
        "authority": authority,
        "commitment": "cd" * 32,
        "requested_at": "2026-11-22T10:00:00.000Z",
    }
    [entry] = forget_event_entries(event_ids=[event_id], artifacts=[artifact], **common)
    assert entry == canonical_json(forget_event(event_id=event_id, artifacts=[artifact], **common))


@pytest.mark.parametrize("event_id", ["", "not-a-uuid", "0190AAAA-BBBB-7CCC-8DDD-EEEEEEEEEEEE"])
def test_an_event_id_that_is_not_a_lowercase_uuid_is_refused(event_id: str) -> None:
    with pytest.raises(InvalidInputError, match="lowercase UUID"):
        forget_event_entries(
            event_ids=[event_id],
            artifacts=["ab" * 32],
            level=2,
            capabilities=list(CAPABILITIES),
            authority="a",
            commitment="cd" * 32,
            requested_at="2026-11-22T10:00:00.000Z",
        )


@given(
    event_hash=st.binary(min_size=32, max_size=32),
    receipt_hash=st.none() | st.binary(min_size=32, max_size=32),
)
def test_a_tombstone_leaf_is_the_jcs_of_its_record(
    event_hash: bytes, receipt_hash: bytes | None
) -> None:
    expected = canonical_json(tombstone_record(event_hash, receipt_hash))
    assert tombstone_leaf_json(event_hash, receipt_hash) == expected


@pytest.mark.parametrize("digest", [b"\0" * 32, b"\x11" * 32])
def test_a_tombstone_leaf_whose_digests_look_like_the_template_marks(digest: bytes) -> None:
    for event_hash, receipt_hash in [(digest, digest), (digest, None), (bytes(32), b"\x11" * 32)]:
        expected = canonical_json(tombstone_record(event_hash, receipt_hash))
        assert tombstone_leaf_json(event_hash, receipt_hash) == expected


@pytest.mark.parametrize(("event_hash", "receipt_hash"), [(b"", None), (bytes(32), b"1")])
def test_a_tombstone_leaf_needs_32_byte_digests(
    event_hash: bytes, receipt_hash: bytes | None
) -> None:
    with pytest.raises(InvalidInputError, match="32-byte"):
        tombstone_leaf_json(event_hash, receipt_hash)
