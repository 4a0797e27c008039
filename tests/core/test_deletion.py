"""Seed 001 deletion requests and tombstones (core/deletion.py): the vectors of
tests/vectors/seed001_tombstones.json and property tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oblivio.core.canonical import canonical_json
from oblivio.core.deletion import (
    Seed001Tombstone,
    is_seed001,
    propagates,
    seed001_of,
    verify_deletion_request,
    verify_seed001_view,
)
from oblivio.core.encoding import b64url_encode
from oblivio.core.errors import InvalidInputError, VerificationError
from oblivio.core.manifest import verify_manifest
from oblivio.core.signing import SigningKey
from oblivio.core.tombstones import TombstoneRecord

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "seed001_tombstones.json").read_text()
)
MANIFEST = verify_manifest(VECTORS["manifest"])
ERRORS = {"invalid_input": InvalidInputError, "verification_failed": VerificationError}


def _check(tombstone: object) -> tuple[Seed001Tombstone, str]:
    parsed = Seed001Tombstone.from_dict(tombstone)
    return parsed, verify_deletion_request(parsed.request, MANIFEST).key_id


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_valid_vectors_verify_and_give_their_view(case: dict[str, Any]) -> None:
    parsed, key_id = _check(case["tombstone"])
    assert key_id == case["key_id"]
    assert is_seed001(case["tombstone"])
    view = case["view"]
    assert seed001_of(view) == case["tombstone"]
    assert verify_seed001_view(view, MANIFEST) == parsed
    record = TombstoneRecord.from_dict(view)  # a §23-shaped record the tables can hold
    assert record.entity_uri == f"belief:{parsed.belief_id}"
    assert propagates(view) is parsed.request.propagate


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["name"])
def test_invalid_vectors_are_refused_with_their_kind_of_error(case: dict[str, Any]) -> None:
    expected = ERRORS[case["error"]]
    with pytest.raises(expected):
        _check(case["tombstone"])
    if expected is VerificationError:  # well formed: only the signature or its key fails
        Seed001Tombstone.from_dict(case["tombstone"])


def test_a_view_that_says_something_else_is_refused() -> None:
    view = {
        **VECTORS["valid"][0]["view"],
        "entity_uri": "belief:00000000-0000-4000-8000-000000000000",
    }
    with pytest.raises(VerificationError, match="does not match"):
        verify_seed001_view(view, MANIFEST)
    with pytest.raises(VerificationError):
        verify_seed001_view({k: v for k, v in view.items() if k != "seed001"}, MANIFEST)


_GOOD = VECTORS["valid"][0]["tombstone"]
_SIGNED_FIELDS = sorted(k for k in _GOOD["deletion_request"] if k != "signature")
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(_SIGNED_FIELDS), value=_JSON)
def test_changing_any_signed_field_breaks_the_tombstone(field: str, value: object) -> None:
    request = dict(_GOOD["deletion_request"])
    if request[field] == value:
        return
    request[field] = value
    tombstone = {**_GOOD, "deletion_request": request}
    if field in ("tombstone_id", "belief_id"):  # the tombstone must follow its request
        tombstone[{"tombstone_id": "id", "belief_id": "belief_id"}[field]] = value
    with pytest.raises((InvalidInputError, VerificationError)):
        _check(tombstone)


@settings(max_examples=60, deadline=None)
@given(data=st.dictionaries(st.sampled_from([*_GOOD, "other"]), _JSON, max_size=6))
def test_any_object_is_parsed_or_refused_as_invalid_input(data: dict[str, Any]) -> None:
    try:
        Seed001Tombstone.from_dict({**data, "deletion_request": data.get("deletion_request")})
    except InvalidInputError:
        return
    raise AssertionError("an arbitrary object parsed as a seed 001 tombstone")


@settings(max_examples=25, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    propagate=st.booleans(),
    reason=st.sampled_from(["user_request", "legal_requirement", "accidental_share", "other"]),
)
def test_a_request_signed_with_the_current_key_round_trips(
    seed: bytes, propagate: bool, reason: str
) -> None:
    from oblivio.core.manifest import new_manifest

    key = SigningKey(seed)
    manifest = verify_manifest(new_manifest("origin.example", key, "2026-01-01T00:00:00.000Z"))
    body = {**_GOOD["deletion_request"], "propagate": propagate, "reason": reason}
    del body["signature"]
    request = body | {"signature": b64url_encode(key.sign(canonical_json(body)))}
    parsed = Seed001Tombstone.from_dict({**_GOOD, "deletion_request": request})
    assert verify_deletion_request(parsed.request, manifest).key_id == key.key_id
    assert parsed.raw == {**_GOOD, "deletion_request": request}  # kept exactly as received
