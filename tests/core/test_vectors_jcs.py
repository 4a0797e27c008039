"""RFC 8785 canonical JSON against the published vectors (tests/vectors/README.md)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from oblivio.core.canonical import canonical_json, parse_json
from oblivio.core.errors import InvalidInputError

VECTORS = Path(__file__).parent.parent / "vectors"
CASES = json.loads((VECTORS / "jcs_cases.json").read_text("utf-8"))
INVALID = json.loads((VECTORS / "jcs_invalid_numbers.json").read_text("utf-8"))["cases"]


def _double(hex_bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(hex_bits.rjust(16, "0")))[0]
    return value


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_published_jcs_case(case: dict[str, str]) -> None:
    out = canonical_json(parse_json(case["input_json_text"]))
    assert out == case["expected_canonical_text"].encode("utf-8")
    if "expected_utf8_hex" in case:
        assert out.hex() == case["expected_utf8_hex"]


def test_first_10000_es6_numbers() -> None:
    lines = (VECTORS / "jcs_es6_numbers_first10000.txt").read_text("ascii").splitlines()
    assert len(lines) == 10_000
    for line in lines:
        hex_bits, expected = line.split(",")
        assert canonical_json(_double(hex_bits)).decode("ascii") == expected, line


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_non_finite_numbers_are_rejected(case: dict[str, str]) -> None:
    with pytest.raises(InvalidInputError):
        canonical_json(_double(case["ieee754_hex"]))


def test_parse_rejects_duplicate_keys_and_constants() -> None:
    with pytest.raises(InvalidInputError, match="duplicate"):
        parse_json('{"a":1,"a":2}')
    with pytest.raises(InvalidInputError):
        parse_json("[NaN]")
    with pytest.raises(InvalidInputError):
        parse_json(b"\xff")
