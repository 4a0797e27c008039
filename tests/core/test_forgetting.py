"""Leaf records and forget events as core builds them (DESIGN.md §6, §15)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oblivio.core.canonical import canonical_json
from oblivio.core.errors import InvalidInputError
from oblivio.core.forgetting import active_record, new_artifact_leaf_json
from oblivio.core.identifiers import CAPABILITIES


@given(st.binary(min_size=32, max_size=32))
def test_a_new_artifacts_leaf_is_the_jcs_of_its_active_record(commitment: bytes) -> None:
    expected = canonical_json(active_record(commitment, CAPABILITIES))
    assert new_artifact_leaf_json(commitment).encode("ascii") == expected


@pytest.mark.parametrize("size", [0, 31, 33])
def test_a_commitment_of_another_size_is_refused(size: int) -> None:
    with pytest.raises(InvalidInputError, match="expected 32 bytes"):
        new_artifact_leaf_json(bytes(size))
