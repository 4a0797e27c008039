"""Seed 001 deletion requests and tombstones, pure and I/O-free (seed 001 "Deletion Flow").

A ``DeletionRequest`` ``{belief_id, tombstone_id, reason, originator_id, signature, timestamp,
propagate, legal_reference?}`` is signed (Ed25519, base64url) by its originator over the
RFC 8785 bytes of the request as received without ``signature``, with the key the originator's
manifest held at ``timestamp`` (seed 001 names no key id). A ``Tombstone`` ``{id, belief_id,
deletion_request, key_revocation: {revoked_key_hash, revocation_timestamp}, created_at}``
carries one; only the request is signed, so the tombstone's ``id`` and ``belief_id`` must be the
request's, and ``key_revocation`` and ``created_at`` are kept as received, vouched for by nobody.

oblivio accepts ids and belief ids in canonical lower-case UUID form, tombstone ids UUIDv7 (they
become §23 record ids ``tomb_<id>``), and refuses unknown fields in either object: the request's
would be signed but meaningless, the tombstone's unsigned.

A node holds a verified seed 001 tombstone as a §23-shaped *view* (``seed001_view``): entity
``belief:<belief_id>``, scope ``*``, ``signed_by`` the originator, ``key_id`` the key that
verified the request, ``signature`` the request's, ``created_at`` its ``timestamp``, and the
tombstone exactly as received under ``seed001``. The view's signature is the request's: verify it
with ``verify_seed001_view``, never as a §23 record. It travels as the original tombstone.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from oblivio.core.canonical import JsonValue, canonical_json
from oblivio.core.encoding import b64url_decode
from oblivio.core.errors import InvalidInputError, VerificationError
from oblivio.core.identifiers import parse_time, uuid7_unix_ms
from oblivio.core.manifest import OrgManifest, org_of_signer, signer_uri
from oblivio.core.signing import VerifyKey
from oblivio.core.tombstones import TOMBSTONE_PREFIX

SEED001_FIELD: Final = "seed001"
"""The field of a §23 view that holds the seed 001 tombstone it stands for."""
REASONS: Final = ("user_request", "legal_requirement", "accidental_share", "other")
ORIGINATOR_AGENT: Final = "originator"
"""The agent name a view's ``signed_by`` gives an originator named by its org alone."""
_REQUEST_FIELDS: Final = frozenset(
    ("belief_id", "tombstone_id", "reason", "originator_id", "signature", "timestamp", "propagate")
)
_TOMBSTONE_FIELDS: Final = frozenset(
    ("id", "belief_id", "deletion_request", "key_revocation", "created_at")
)
_REVOCATION_FIELDS: Final = frozenset(("revoked_key_hash", "revocation_timestamp"))


def _text(data: Mapping[str, Any], name: str, max_chars: int = 600) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise InvalidInputError(f"{name}: expected a string of 1 to {max_chars} characters")
    return value


def _uuid(data: Mapping[str, Any], name: str, *, v7: bool = False) -> str:
    value = _text(data, name, 36)
    try:
        canonical = str(uuid.UUID(value))
    except ValueError as e:
        raise InvalidInputError(f"{name}: expected a UUID, got {value!r}") from e
    if canonical != value:
        raise InvalidInputError(f"{name}: expected a lower-case hyphenated UUID, got {value!r}")
    if v7:
        uuid7_unix_ms(value)
    return value


def _time(data: Mapping[str, Any], name: str) -> str:
    value = _text(data, name, 40)
    parse_time(value)
    return value


def _exact_fields(
    data: object, required: frozenset[str], optional: frozenset[str], what: str
) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{what}: expected a JSON object")
    missing = sorted(required - data.keys())
    unknown = sorted(data.keys() - required - optional)
    if missing or unknown:
        raise InvalidInputError(f"{what}: missing fields {missing}, unknown fields {unknown}")
    return data


@dataclass(frozen=True)
class SignedDeletionRequest:
    """A seed 001 DeletionRequest exactly as received, with its parsed fields."""

    belief_id: str
    tombstone_id: str
    reason: str
    originator_id: str
    org: str
    signature: str
    timestamp: str
    propagate: bool
    raw: Mapping[str, JsonValue] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: object) -> SignedDeletionRequest:
        """Parse a request's shape (not its signature); InvalidInputError naming the field."""
        request = _exact_fields(
            data, _REQUEST_FIELDS, frozenset(("legal_reference",)), "deletion_request"
        )
        reason = request["reason"]
        if reason not in REASONS:
            raise InvalidInputError(f"deletion_request.reason: expected one of {list(REASONS)}")
        propagate = request["propagate"]
        if not isinstance(propagate, bool):
            raise InvalidInputError("deletion_request.propagate: expected a boolean")
        legal_reference = request.get("legal_reference")
        if legal_reference is not None:
            _text(request, "legal_reference")
        originator = _text(request, "originator_id")
        try:
            org = org_of_signer(originator) if ":" in originator else originator
        except VerificationError as e:
            raise InvalidInputError(f"deletion_request.originator_id: {e}") from e
        if not org.isprintable() or any(c.isspace() or c in "/:" for c in org):
            raise InvalidInputError(f"deletion_request.originator_id: no org in {originator!r}")
        return cls(
            belief_id=_uuid(request, "belief_id"),
            tombstone_id=_uuid(request, "tombstone_id", v7=True),
            reason=str(reason),
            originator_id=originator,
            org=org,
            signature=_text(request, "signature", 200),
            timestamp=_time(request, "timestamp"),
            propagate=propagate,
            raw=dict(request),
        )

    @property
    def signed_by(self) -> str:
        """The originator as a §23 ``signed_by`` URI (``agent:ORG/NAME``)."""
        if ":" in self.originator_id:
            return self.originator_id
        return signer_uri(self.org, ORIGINATOR_AGENT)

    def signing_bytes(self) -> bytes:
        """JCS of the request as received, without ``signature``."""
        return canonical_json({k: v for k, v in self.raw.items() if k != "signature"})


@dataclass(frozen=True)
class Seed001Tombstone:
    """A seed 001 Tombstone exactly as received, with its parsed fields."""

    id: str
    belief_id: str
    request: SignedDeletionRequest
    revoked_key_hash: str
    revocation_timestamp: str
    created_at: str
    raw: Mapping[str, JsonValue] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: object) -> Seed001Tombstone:
        """Parse a tombstone's shape and its request's (not the signature): the ids must be
        the request's. Raises InvalidInputError naming the field."""
        tombstone = _exact_fields(data, _TOMBSTONE_FIELDS, frozenset(), "tombstone")
        request = SignedDeletionRequest.from_dict(tombstone["deletion_request"])
        revocation = _exact_fields(
            tombstone["key_revocation"], _REVOCATION_FIELDS, frozenset(), "key_revocation"
        )
        key_hash = _text(revocation, "revoked_key_hash", 64)
        if len(key_hash) != 64 or any(c not in "0123456789abcdef" for c in key_hash):
            raise InvalidInputError("key_revocation.revoked_key_hash: expected 64 lower-case hex")
        parsed = cls(
            id=_uuid(tombstone, "id", v7=True),
            belief_id=_uuid(tombstone, "belief_id"),
            request=request,
            revoked_key_hash=key_hash,
            revocation_timestamp=_time(revocation, "revocation_timestamp"),
            created_at=_time(tombstone, "created_at"),
            raw=dict(tombstone),
        )
        if parsed.id != request.tombstone_id or parsed.belief_id != request.belief_id:
            raise InvalidInputError(
                "tombstone: id and belief_id must be those of its deletion_request "
                f"(expected {request.tombstone_id}/{request.belief_id}, "
                f"got {parsed.id}/{parsed.belief_id})"
            )
        return parsed

    @property
    def record_id(self) -> str:
        """The id of its §23 view: ``tomb_<id>``."""
        return TOMBSTONE_PREFIX + self.id

    @property
    def entity_uri(self) -> str:
        """What it deletes: ``belief:<belief_id>`` (DESIGN.md §10)."""
        return f"belief:{self.belief_id}"


def is_seed001(data: object) -> bool:
    """Whether an inbound body is a seed 001 Tombstone (it carries a ``deletion_request``)."""
    return isinstance(data, Mapping) and "deletion_request" in data


def key_at(manifest: OrgManifest, moment: str) -> VerifyKey:
    """The key ``manifest`` held at ``moment``; VerificationError when it held none."""
    when = parse_time(moment)
    for entry in manifest.keys:
        if entry.created_at <= when and (entry.retired_at is None or when < entry.retired_at):
            return entry.key
    raise VerificationError(f"org {manifest.org} had no signing key at {moment}")


def verify_deletion_request(request: SignedDeletionRequest, manifest: OrgManifest) -> VerifyKey:
    """Check a request's signature with the key its originator's ``manifest`` held at its
    ``timestamp``; return that key. Raises VerificationError naming the failed step: (1) the
    manifest is the originator org's, (2) a key was valid then, (3) the signature verifies."""
    if manifest.org != request.org:
        raise VerificationError(
            f"deletion request: expected the manifest of {request.org}, got {manifest.org}"
        )
    key = key_at(manifest, request.timestamp)
    try:
        signature = b64url_decode(request.signature)
    except ValueError as e:
        raise VerificationError(f"deletion request: signature is not base64url: {e}") from e
    key.verify(signature, request.signing_bytes())
    return key


def seed001_view(tombstone: Seed001Tombstone, key_id: str) -> dict[str, JsonValue]:
    """The §23-shaped record a node holds for a verified seed 001 tombstone (module docstring);
    ``key_id`` is the key that verified its request."""
    request = tombstone.request
    return {
        "id": tombstone.record_id,
        "entity_uri": tombstone.entity_uri,
        "scope": "*",
        "reason": request.reason,
        "signed_by": request.signed_by,
        "key_id": key_id,
        "signature": request.signature,
        "created_at": request.timestamp,
        "legal_hold": False,
        SEED001_FIELD: dict(tombstone.raw),
    }


def seed001_of(record: Mapping[str, JsonValue]) -> Mapping[str, JsonValue] | None:
    """The seed 001 tombstone a stored record is the view of, or None for a §23 record."""
    original = record.get(SEED001_FIELD)
    return original if isinstance(original, Mapping) else None


def propagates(record: Mapping[str, JsonValue]) -> bool:
    """Whether a stored record is forwarded: §23 records always, a seed 001 tombstone when its
    request says ``propagate`` (seed 001 "Forward tombstone")."""
    original = seed001_of(record)
    if original is None:
        return True
    request = original.get("deletion_request")
    return isinstance(request, Mapping) and request.get("propagate") is True


def verify_seed001_view(record: Mapping[str, JsonValue], manifest: OrgManifest) -> Seed001Tombstone:
    """Offline check of a stored view: the original parses, its request verifies with
    ``manifest``, and the view says what the original says. Raises VerificationError."""
    original = seed001_of(record)
    if original is None:
        raise VerificationError("not the view of a seed 001 tombstone")
    try:
        tombstone = Seed001Tombstone.from_dict(original)
    except InvalidInputError as e:
        raise VerificationError(f"seed 001 tombstone: {e}") from e
    key = verify_deletion_request(tombstone.request, manifest)
    if dict(record) != seed001_view(tombstone, key.key_id):
        raise VerificationError("the view does not match the seed 001 tombstone it holds")
    return tombstone
