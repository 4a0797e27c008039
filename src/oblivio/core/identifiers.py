"""Identifiers and their grammars (DESIGN.md §3): artifact ids, entity URIs, scopes, time.

Generation of fresh ids needs a clock and randomness, so it lives in the node layer; this module
only computes, formats and validates.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, Literal, NewType

from oblivio.core.errors import InvalidEntityUriError, InvalidInputError, InvalidScopeError

ArtifactId = NewType("ArtifactId", str)
"""64 lower-case hex characters: H(ciphertext || H(JCS(metadata)))."""

_ARTIFACT_ID = re.compile(r"[0-9a-f]{64}")
_NAMESPACE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# Printable characters with no whitespace: visible ASCII plus any non-ASCII character that is
# neither a control, a separator nor whitespace.
_LOCAL_PART_MAX = 512

FACT_SCOPES: Final = ("local", "team", "company", "public")
"""Seed 002 §23.2.3: the visibility scopes of a fact."""

Capability = Literal["decrypt", "prove", "recover"]
CAPABILITIES: Final[tuple[Capability, ...]] = ("decrypt", "prove", "recover")
"""DESIGN.md §4: the key material an artifact holds, each forgettable on its own."""

ScopePattern = str | tuple[str, ...]
"""``"*"``, one scope, or a non-empty tuple of scopes (seed 002 §23.2.3)."""


def parse_artifact_id(text: str) -> ArtifactId:
    """Return ``text`` as an ArtifactId; raise InvalidInputError unless 64 lower-case hex."""
    if not isinstance(text, str) or not _ARTIFACT_ID.fullmatch(text):
        raise InvalidInputError(f"artifact id: expected 64 lower-case hex characters, got {text!r}")
    return ArtifactId(text)


def _is_printable_non_space(ch: str) -> bool:
    if ch.isascii():
        return "!" <= ch <= "~"
    return ch.isprintable() and not ch.isspace()


def validate_entity_uri(uri: object) -> str:
    """Return ``uri`` if it is ``namespace:local-part`` as DESIGN.md §3 defines it.

    Namespace ``[a-z][a-z0-9_-]{0,31}``; local part 1-512 printable characters, no whitespace, no
    wildcard ``*``. ``artifact:`` must name an artifact id and ``belief:`` a UUID.
    Raises InvalidEntityUriError naming what is wrong.
    """
    if not isinstance(uri, str):
        raise InvalidEntityUriError(f"entity URI: expected a string, got {type(uri).__name__}")
    namespace, sep, local = uri.partition(":")
    if not sep:
        raise InvalidEntityUriError(f"entity URI: expected 'namespace:local-part', got {uri!r}")
    if not _NAMESPACE.fullmatch(namespace):
        raise InvalidEntityUriError(
            f"entity URI: namespace must match [a-z][a-z0-9_-]{{0,31}}, got {namespace!r}"
        )
    if not 1 <= len(local) <= _LOCAL_PART_MAX:
        raise InvalidEntityUriError(
            f"entity URI: local part must be 1 to {_LOCAL_PART_MAX} characters, got {len(local)}"
        )
    if not all(_is_printable_non_space(ch) for ch in local):
        raise InvalidEntityUriError("entity URI: local part must be printable with no whitespace")
    if "*" in local:
        raise InvalidEntityUriError("entity URI: wildcards are not allowed (seed 002 §23.2.2)")
    if namespace == "artifact" and not _ARTIFACT_ID.fullmatch(local):
        raise InvalidEntityUriError(
            "entity URI: artifact: must be followed by a 64-hex artifact id"
        )
    if namespace == "belief":
        try:
            uuid.UUID(local)
        except ValueError as e:
            raise InvalidEntityUriError("entity URI: belief: must be followed by a UUID") from e
    return uri


def validate_scope(scope: object) -> str:
    """Return ``scope`` if it is a fact scope of seed 002 §23.2.3; raise InvalidScopeError."""
    if not isinstance(scope, str) or scope not in FACT_SCOPES:
        raise InvalidScopeError(f"scope: expected one of {', '.join(FACT_SCOPES)}, got {scope!r}")
    return scope


def validate_scope_pattern(pattern: object) -> ScopePattern:
    """Return a scope pattern (``"*"``, a scope, or a non-empty list of distinct scopes).

    Lists come back as tuples in the order given. Raises InvalidScopeError otherwise.
    """
    if pattern == "*":
        return "*"
    if isinstance(pattern, str):
        return validate_scope(pattern)
    if isinstance(pattern, Sequence) and not isinstance(pattern, bytes):
        items = list(pattern)
        if not items:
            raise InvalidScopeError("scope pattern: an array of scopes must not be empty")
        scopes = tuple(validate_scope(item) for item in items)
        if len(set(scopes)) != len(scopes):
            raise InvalidScopeError("scope pattern: an array of scopes must not repeat a scope")
        return scopes
    raise InvalidScopeError(
        f"scope pattern: expected '*', a scope or an array of scopes, got {pattern!r}"
    )


def scope_pattern_covers(pattern: ScopePattern, scope: str) -> bool:
    """Whether ``pattern`` includes the fact scope ``scope``."""
    if pattern == "*":
        return True
    if isinstance(pattern, str):
        return pattern == scope
    return scope in pattern


def validate_capabilities(items: object) -> tuple[Capability, ...]:
    """Return a non-empty set of capabilities in canonical order; raise InvalidInputError."""
    if isinstance(items, str) or not isinstance(items, Sequence) or not items:
        raise InvalidInputError(
            f"capabilities: expected a non-empty list of {CAPABILITIES}, got {items!r}"
        )
    unknown = [item for item in items if item not in CAPABILITIES]
    if unknown:
        raise InvalidInputError(f"capabilities: expected items of {CAPABILITIES}, got {unknown!r}")
    return tuple(c for c in CAPABILITIES if c in items)


def uuid7_unix_ms(text: str) -> int:
    """The 48-bit Unix-millisecond timestamp of a UUIDv7 (RFC 9562 §5.7).

    Raises InvalidInputError if ``text`` is not a UUID of version 7 and the RFC variant.
    """
    try:
        value = uuid.UUID(text)
    except (ValueError, TypeError, AttributeError) as e:
        raise InvalidInputError(f"UUIDv7: expected a UUID, got {text!r}") from e
    if value.version != 7 or value.variant != uuid.RFC_4122:
        raise InvalidInputError(f"UUIDv7: expected version 7, got version {value.version}")
    return value.int >> 80


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with ``Z`` and millisecond precision, e.g. ``2026-11-22T10:00:00.000Z``."""
    if moment.tzinfo is None:
        raise ValueError("format_time needs an aware datetime")
    utc = moment.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )


_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with an explicit offset; raise InvalidInputError otherwise."""
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        raise InvalidInputError(
            f"time: expected RFC 3339 such as 2026-11-22T10:00:00.000Z, got {text!r}"
        )
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise InvalidInputError(f"time: {e}") from e
