"""Canonical JSON (RFC 8785, JCS) and strict JSON parsing.

Every hash or signature over a JSON object is over the bytes made here (DESIGN.md §3); nothing
else in oblivio serialises JSON for hashing or signing.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from oblivio.core.errors import InvalidInputError

JsonValue = Any
"""A value of the JSON data model as the standard library represents it."""


def canonical_json(value: JsonValue) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of ``value``.

    Raises InvalidInputError for values JCS cannot represent: NaN or infinite floats,
    integers outside the IEEE 754 exactly-representable range, non-string keys, or non-JSON types.
    """
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise InvalidInputError(f"value cannot be canonicalised as RFC 8785 JSON: {e}") from e


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, item in pairs:
        if key in obj:
            raise ValueError(f"duplicate object key {key!r}")
        obj[key] = item
    return obj


def parse_json(text: str | bytes) -> JsonValue:
    """Parse JSON strictly: no NaN/Infinity, no duplicate keys, UTF-8 only.

    Raises InvalidInputError with the parser's reason when the text is not such JSON.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_reject_duplicates
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InvalidInputError(f"invalid JSON: {e}") from e
