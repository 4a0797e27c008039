"""Canonical JSON (RFC 8785, JCS) and strict JSON parsing.

Every hash or signature over a JSON object is over the bytes made here (DESIGN.md §3); nothing
else in oblivio serialises JSON for hashing or signing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import rfc8785

from oblivio.core.errors import InvalidInputError

JsonValue = Any
"""A value of the JSON data model as the standard library represents it."""


_SAFE_INT = 2**53 - 1  # rfc8785 refuses 2^53 itself


def _plain(value: JsonValue) -> bool:
    """Whether ``value`` holds only what the standard library serialises exactly as RFC 8785
    does: objects with ASCII keys, strings without surrogates, integers below 2^53 in magnitude,
    booleans and null (no floats, where the two number formats differ)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if not item.isascii() and any("\ud800" <= c <= "\udfff" for c in item):
                return False
        elif kind is dict:
            for key, child in item.items():
                if type(key) is not str or not key.isascii():
                    return False
                stack.append(child)
        elif kind is list:
            stack.extend(item)
        elif kind is int:
            if not -_SAFE_INT <= item <= _SAFE_INT:
                return False
        elif item is not None and kind is not bool:
            return False
    return True


def canonical_json(value: JsonValue) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of ``value``.

    Values made only of ASCII-keyed objects, strings, safe integers, booleans and null take the
    standard library's sorted, compact encoding, which is byte-identical to RFC 8785 for them
    (a property test holds the two equal); everything else goes through ``rfc8785``.
    Raises InvalidInputError for values JCS cannot represent: NaN or infinite floats,
    integers outside the IEEE 754 exactly-representable range, non-string keys, or non-JSON types.
    """
    if _plain(value):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8"
        )
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise InvalidInputError(f"value cannot be canonicalised as RFC 8785 JSON: {e}") from e


_TEMPLATE_VALUE_CHARS = frozenset("0123456789abcdef-")


@dataclass(frozen=True)
class CanonicalTemplate:
    """The JCS text of a JSON value cut at some of its string values (holes), to make many
    values that differ only there with one ``canonical_json`` call.

    ``fill`` puts strings of lower-case hex digits and ``-`` (digests, ids, UUIDs) in the holes:
    such strings need no escaping, and JCS orders keys by name, never by value, so the result is
    the JCS of the filled value (callers hold this with property tests)."""

    parts: tuple[str, ...]

    @classmethod
    def of(cls, value: JsonValue, markers: Sequence[str]) -> CanonicalTemplate:
        """Cut ``canonical_json(value)`` at ``markers``, string values of ``value`` given in the
        order they appear in the text. Raises ValueError unless each marker appears exactly
        once as a whole JSON string (another string of ``value`` may equal it)."""
        whole = text = canonical_json(value).decode("utf-8")
        parts = []
        for marker in markers:
            quoted = f'"{marker}"'
            head, found, text = text.partition(quoted)
            if not found or whole.count(quoted) != 1:
                raise ValueError(f"JCS template: {marker!r} is not one string of the value here")
            parts.append(head + '"')
            text = '"' + text
        return cls((*parts, text))

    def fill(self, *values: str) -> bytes:
        """The JCS bytes with ``values`` in the holes, in order. Raises ValueError for a value
        that is not lower-case hex digits and ``-``, or a wrong number of values."""
        if len(values) != len(self.parts) - 1:
            raise ValueError(f"JCS template: expected {len(self.parts) - 1} values")
        text = self.parts[0]
        for value, part in zip(values, self.parts[1:], strict=True):
            if not _TEMPLATE_VALUE_CHARS.issuperset(value):
                raise ValueError(f"JCS template: {value!r} is not lower-case hex")
            text += value + part
        return text.encode("utf-8")


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
