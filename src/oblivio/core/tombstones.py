"""Right-to-be-forgotten tombstones and their revocations (seed 002 §23.2), pure and I/O-free.

A tombstone is signed over the RFC 8785 bytes of the record with ``signature`` and ``reason``
*removed* (never replaced by empty strings), so that ``reason`` can be redacted to ``"redacted"``
before federation rebroadcast without breaking the signature (§23.2.4). ``key_id`` is inside the
signed body so verifiers pick the right key of the signer's rotation chain without trial
verification. Records keep unknown fields on round trip (they are relayed between nodes), and a
signature is always checked over the record exactly as received.

Revocations (§23.2.5) list no ``key_id`` in the seed; oblivio adds it, signed, for the same reason
as §23.2.4 (docs/adr/0002-revocation-key-id.md). A revocation's ``reason`` is its legal basis and
is signed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oblivio.core.canonical import JsonValue, canonical_json
from oblivio.core.encoding import b64url_decode, b64url_encode
from oblivio.core.errors import InvalidInputError, VerificationError
from oblivio.core.identifiers import (
    ScopePattern,
    parse_time,
    uuid7_unix_ms,
    validate_entity_uri,
    validate_scope_pattern,
)
from oblivio.core.signing import SigningKey, VerifyKey

TOMBSTONE_PREFIX = "tomb_"
REVOCATION_PREFIX = "tombrevoke_"
REDACTED = "redacted"
MAX_REASON_CHARS = 2000
MAX_SIGNED_BY_CHARS = 600

_TOMBSTONE_FIELDS = (
    "id",
    "entity_uri",
    "scope",
    "reason",
    "signed_by",
    "key_id",
    "signature",
    "created_at",
    "legal_hold",
)
_REVOCATION_FIELDS = (
    "id",
    "tombstone_id",
    "reason",
    "signed_by",
    "key_id",
    "signature",
    "created_at",
)


def validate_record_id(text: object, prefix: str) -> str:
    """``prefix`` followed by a UUIDv7 (seed 002 §23.2.2 invariant 1); raise InvalidInputError."""
    if not isinstance(text, str) or not text.startswith(prefix):
        raise InvalidInputError(f"id: expected {prefix!r} followed by a UUIDv7, got {text!r}")
    suffix = text.removeprefix(prefix)
    if suffix != suffix.lower():
        raise InvalidInputError(f"id: expected a lower-case UUIDv7 after {prefix!r}, got {text!r}")
    uuid7_unix_ms(suffix)
    return text


def scope_to_json(pattern: ScopePattern) -> JsonValue:
    """A scope pattern as it appears on the wire: ``"*"``, ``"team"`` or ``["local", …]``."""
    return pattern if isinstance(pattern, str) else list(pattern)


def normalise_scope(pattern: ScopePattern) -> str:
    """A canonical text form used to compare patterns: arrays as sorted JSON arrays."""
    if isinstance(pattern, str):
        return pattern
    return canonical_json(sorted(pattern)).decode("ascii")


def _require_str(data: Mapping[str, Any], name: str, max_chars: int = 600) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{name}: expected a non-empty string, got {value!r}")
    if len(value) > max_chars:
        raise InvalidInputError(f"{name}: expected at most {max_chars} characters")
    return value


def _check_signed_by(value: str) -> str:
    if not value.isprintable() or any(c.isspace() for c in value):
        raise InvalidInputError("signed_by: expected a URI without whitespace")
    return value


def _signing_body(record: Mapping[str, JsonValue], excluded: tuple[str, ...]) -> bytes:
    return canonical_json({k: v for k, v in record.items() if k not in excluded})


@dataclass(frozen=True)
class TombstoneRecord:
    """A signed tombstone exactly as received or issued, with its parsed fields."""

    id: str
    entity_uri: str
    scope: ScopePattern
    reason: str | None
    signed_by: str
    key_id: str
    signature: str
    created_at: str
    legal_hold: bool
    raw: Mapping[str, JsonValue] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: object) -> TombstoneRecord:
        """Parse and validate a record's shape (not its signature). Unknown fields are kept.

        Raises InvalidEntityUriError, InvalidScopeError or InvalidInputError naming the field.
        """
        if not isinstance(data, Mapping):
            raise InvalidInputError("tombstone: expected a JSON object")
        missing = [f for f in _TOMBSTONE_FIELDS if f not in data and f != "legal_hold"]
        if missing:
            raise InvalidInputError(f"tombstone: missing fields {missing}")
        reason = data["reason"]
        if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
            raise InvalidInputError("reason: expected null or a string of at most 2000 chars")
        legal_hold = data.get("legal_hold", False)
        if not isinstance(legal_hold, bool):
            raise InvalidInputError(f"legal_hold: expected a boolean, got {legal_hold!r}")
        created_at = _require_str(data, "created_at", 40)
        parse_time(created_at)
        return cls(
            id=validate_record_id(data["id"], TOMBSTONE_PREFIX),
            entity_uri=validate_entity_uri(data["entity_uri"]),
            scope=validate_scope_pattern(data["scope"]),
            reason=reason,
            signed_by=_check_signed_by(_require_str(data, "signed_by", MAX_SIGNED_BY_CHARS)),
            key_id=_hex_key_id(data["key_id"]),
            signature=_require_str(data, "signature", 200),
            created_at=created_at,
            legal_hold=legal_hold,
            raw=dict(data),
        )

    def to_dict(self) -> dict[str, JsonValue]:
        """The record as it travels, unknown fields included."""
        return dict(self.raw)

    def signing_bytes(self) -> bytes:
        """JCS of the record as received, without ``signature`` and ``reason`` (§23.2.4)."""
        return _signing_body(self.raw, ("signature", "reason"))

    def redacted(self) -> TombstoneRecord:
        """The same record with ``reason`` redacted to ``"redacted"``; the signature still holds."""
        return TombstoneRecord.from_dict({**self.raw, "reason": REDACTED})


@dataclass(frozen=True)
class TombstoneRevocationRecord:
    """A signed revocation of one tombstone (§23.2.5)."""

    id: str
    tombstone_id: str
    reason: str
    signed_by: str
    key_id: str
    signature: str
    created_at: str
    raw: Mapping[str, JsonValue] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: object) -> TombstoneRevocationRecord:
        """Parse and validate a revocation's shape (not its signature). Unknown fields are kept."""
        if not isinstance(data, Mapping):
            raise InvalidInputError("tombstone revocation: expected a JSON object")
        missing = [f for f in _REVOCATION_FIELDS if f not in data]
        if missing:
            raise InvalidInputError(f"tombstone revocation: missing fields {missing}")
        created_at = _require_str(data, "created_at", 40)
        parse_time(created_at)
        return cls(
            id=validate_record_id(data["id"], REVOCATION_PREFIX),
            tombstone_id=validate_record_id(data["tombstone_id"], TOMBSTONE_PREFIX),
            reason=_require_str(data, "reason", MAX_REASON_CHARS),
            signed_by=_check_signed_by(_require_str(data, "signed_by", MAX_SIGNED_BY_CHARS)),
            key_id=_hex_key_id(data["key_id"]),
            signature=_require_str(data, "signature", 200),
            created_at=created_at,
            raw=dict(data),
        )

    def to_dict(self) -> dict[str, JsonValue]:
        """The record as it travels."""
        return dict(self.raw)

    def signing_bytes(self) -> bytes:
        """JCS of the record as received, without ``signature``."""
        return _signing_body(self.raw, ("signature",))


def _hex_key_id(value: object) -> str:
    if not isinstance(value, str) or len(value) != 64 or value != value.lower():
        raise InvalidInputError(f"key_id: expected 64 lower-case hex characters, got {value!r}")
    try:
        bytes.fromhex(value)
    except ValueError as e:
        raise InvalidInputError(f"key_id: expected hex, got {value!r}") from e
    return value


def sign_tombstone(
    signing_key: SigningKey,
    *,
    record_id: str,
    entity_uri: str,
    scope: ScopePattern,
    reason: str | None,
    signed_by: str,
    created_at: str,
    legal_hold: bool,
) -> TombstoneRecord:
    """Issue a tombstone signed by ``signing_key``; validates every field first."""
    body: dict[str, JsonValue] = {
        "id": record_id,
        "entity_uri": entity_uri,
        "scope": scope_to_json(validate_scope_pattern(scope)),
        "signed_by": signed_by,
        "key_id": signing_key.key_id,
        "created_at": created_at,
        "legal_hold": legal_hold,
    }
    signature = b64url_encode(signing_key.sign(canonical_json(body)))
    return TombstoneRecord.from_dict({**body, "reason": reason, "signature": signature})


def sign_revocation(
    signing_key: SigningKey,
    *,
    record_id: str,
    tombstone_id: str,
    reason: str,
    signed_by: str,
    created_at: str,
) -> TombstoneRevocationRecord:
    """Issue a revocation signed by ``signing_key``; validates every field first."""
    body: dict[str, JsonValue] = {
        "id": record_id,
        "tombstone_id": tombstone_id,
        "reason": reason,
        "signed_by": signed_by,
        "key_id": signing_key.key_id,
        "created_at": created_at,
    }
    signature = b64url_encode(signing_key.sign(canonical_json(body)))
    return TombstoneRevocationRecord.from_dict({**body, "signature": signature})


def verify_record_signature(
    record: TombstoneRecord | TombstoneRevocationRecord, key: VerifyKey
) -> None:
    """Check a record's Ed25519 signature under ``key``.

    Raises VerificationError if the key is not the one the record names (``key_id``), the
    signature is malformed, or it does not verify over the record's signing bytes.
    """
    if key.key_id != record.key_id:
        raise VerificationError(
            f"tombstone signature: expected key_id {record.key_id}, got key {key.key_id}"
        )
    try:
        signature = b64url_decode(record.signature)
    except ValueError as e:
        raise VerificationError(f"tombstone signature: not base64url: {e}") from e
    key.verify(signature, record.signing_bytes())
