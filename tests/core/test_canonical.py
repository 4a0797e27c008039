"""canonical_json's fast path is byte-identical to the rfc8785 reference for the values it
takes, and every other value still goes through rfc8785."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from oblivio.core.canonical import CanonicalTemplate, canonical_json

plain_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text()  # any Unicode, including control characters, U+2028 and astral characters
)
plain = st.recursive(
    plain_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127)), children, max_size=5)
    ),
    max_leaves=30,
)
anything = st.recursive(
    plain_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=500)
@given(plain)
def test_fast_path_equals_rfc8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@settings(max_examples=300)
@given(anything)
def test_every_value_equals_rfc8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    # U+FB33 sorts after U+1F600 in UTF-16 (0xFB33 > 0xD83D) but before it by code point.
    value = {"\U0001f600": 1, "\ufb33": 2}
    assert canonical_json(value) == rfc8785.dumps(value)


def test_a_template_fills_its_holes_in_text_order() -> None:
    value = {"b": "ff", "a": "ee", "c": [1, "ee-not-a-hole"]}
    template = CanonicalTemplate.of(value, ["ee", "ff"])
    filled = template.fill("0a-1b", "c2")
    assert filled == canonical_json({"b": "c2", "a": "0a-1b", "c": [1, "ee-not-a-hole"]})


@pytest.mark.parametrize(
    ("value", "markers"),
    [
        ({"a": "ee", "b": "ee"}, ["ee"]),  # twice
        ({"a": "ee"}, ["ff"]),  # absent
        ({"a": "ee", "b": "ff"}, ["ff", "ee"]),  # out of text order
    ],
)
def test_a_marker_must_be_one_string_of_the_value_in_order(
    value: dict[str, object], markers: list[str]
) -> None:
    with pytest.raises(ValueError, match="JCS template"):
        CanonicalTemplate.of(value, markers)


@pytest.mark.parametrize("bad", ["AB", 'a"b', "a\\b", "é", "g"])
def test_a_template_takes_only_lowercase_hex_and_dashes(bad: str) -> None:
    template = CanonicalTemplate.of({"a": "ee"}, ["ee"])
    with pytest.raises(ValueError, match="lower-case hex"):
        template.fill(bad)
    with pytest.raises(ValueError, match="expected 1 values"):
        template.fill("aa", "bb")
