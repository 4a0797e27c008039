"""Forget events, SMT leaf records and requestor commitments (DESIGN.md §6, §8, §13, §15).

Everything that enters the public log or the SMT is built here, so that no personal data can
slip in: a forget event names artifact ids, the level, the capabilities and a *commitment* to
who asked, on what authority and why; the requestor's receipt carries the opening. Its
``authority`` field is ``COMMITTED_AUTHORITY`` for every new event, so that the public log does
not say why anything was forgotten, nor tell a tombstone's forget from any other (ADR 0017).

    forget event = {"type": "forget", "id": uuid7, "artifacts": [artifactID, ...], "level": n,
                    "capabilities": [...], "authority": "committed",
                    "requestor_commitment": hex32, "requested_at": time}
    ACTIVE leaf  = {"state": "ACTIVE", "key_commitment": hex, "capabilities": [...],
                    "policy": {"revoked": bool, "legal_hold": bool}}
    TOMBSTONE    = {"state": "TOMBSTONE", "forget_event_hash": hex,
                    "destruction_receipt_hash": hex | null, "level": 2}
    requestor_commitment = H("oblivio/requestor-commit/v1" || salt(32) || JCS(opening.value))
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from oblivio.core.canonical import CanonicalTemplate, JsonValue, canonical_json
from oblivio.core.errors import InvalidInputError, VerificationError
from oblivio.core.hashing import sha256, sha256_concat
from oblivio.core.identifiers import CAPABILITIES, Capability, parse_artifact_id

REQUESTOR_COMMIT_PREFIX: Final = b"oblivio/requestor-commit/v1"
LEVELS: Final = (0, 1, 2)
MAX_AUTHORITY_CHARS: Final = 200
COMMITTED_AUTHORITY: Final = "committed"
"""The ``authority`` of every new forget event and legal-hold entry: the authority itself is in
the opening of the entry's ``requestor_commitment`` (ADR 0017). Events logged before carry the
authority in clear; verifiers never read the field."""


def validate_level(level: object) -> int:
    """A forget level: 0 (revoke), 1 (cryptographic erasure) or 2 (verifiable)."""
    if type(level) is not int or level not in LEVELS:
        raise InvalidInputError(f"level: expected 0, 1 or 2, got {level!r}")
    return level


def requestor_commitment(salt: bytes, value: Mapping[str, JsonValue]) -> str:
    """The commitment a forget event carries about who asked, for whom and why."""
    if len(salt) != 32:
        raise ValueError("requestor commitment: the salt must be 32 bytes")
    return sha256_concat(REQUESTOR_COMMIT_PREFIX, salt, canonical_json(dict(value))).hex()


def open_requestor_commitment(commitment: str, salt: bytes, value: Mapping[str, Any]) -> None:
    """Check a receipt's opening against an event's commitment; raise VerificationError."""
    computed = requestor_commitment(salt, value)
    if not hmac.compare_digest(computed, commitment):
        raise VerificationError(
            f"requestor commitment: expected {commitment}, the opening gives {computed}"
        )


def forget_event(
    *,
    event_id: str,
    artifacts: Sequence[str],
    level: int,
    capabilities: Sequence[Capability],
    authority: str,
    commitment: str,
    requested_at: str,
) -> dict[str, JsonValue]:
    """The forget event log entry (DESIGN.md §15), validated; artifacts sorted and distinct.

    ``capabilities`` are those the node holds no more of once the event is executed: a node
    passes those its request forgets and those earlier executed forgets already destroyed, so
    that a proof, which carries the latest event only, states them all (docs/adr/0019)."""
    ids = sorted({parse_artifact_id(a) for a in artifacts})
    if not ids:
        raise InvalidInputError("forget: no artifact to forget")
    if not isinstance(authority, str) or not authority or len(authority) > MAX_AUTHORITY_CHARS:
        raise InvalidInputError(
            f"authority: expected 1 to {MAX_AUTHORITY_CHARS} characters, got {authority!r}"
        )
    return {
        "type": "forget",
        "id": event_id,
        "artifacts": list(ids),
        "level": validate_level(level),
        "capabilities": [c for c in CAPABILITIES if c in capabilities],
        "authority": authority,
        "requestor_commitment": commitment,
        "requested_at": requested_at,
    }


def active_record(
    key_commitment: bytes,
    capabilities: Sequence[Capability],
    *,
    revoked: bool = False,
    legal_hold: bool = False,
) -> dict[str, JsonValue]:
    """An ACTIVE leaf: the key itself is committed, not its (re-wrapped) bytes (§6)."""
    return {
        "state": "ACTIVE",
        "key_commitment": key_commitment.hex(),
        "capabilities": [c for c in CAPABILITIES if c in capabilities],
        "policy": {"revoked": revoked, "legal_hold": legal_hold},
    }


_EVENT_ID_MARK: Final = "00000000-0000-0000-0000-000000000000"
_ARTIFACT_MARK: Final = "0" * 64
_UUID_CHARS: Final = frozenset("0123456789abcdef-")


def forget_event_entries(
    *,
    event_ids: Sequence[str],
    artifacts: Sequence[str],
    level: int,
    capabilities: Sequence[Capability],
    authority: str,
    commitment: str,
    requested_at: str,
) -> list[bytes]:
    """The JCS bytes of one forget event per artifact (``event_ids[i]`` names the event of
    ``artifacts[i]``), equal to ``canonical_json(forget_event(...))`` of each (a property test
    holds them equal).

    The events of a request differ only in their artifact and id, so they are made from one
    ``CanonicalTemplate`` (or one by one when another field of the request happens to equal a
    marker). Raises InvalidInputError as ``forget_event`` does, or for an event id that is not a
    lower-case UUID.
    """
    if len(event_ids) != len(artifacts):
        raise ValueError("forget events: one event id per artifact")
    common: dict[str, Any] = {
        "level": level,
        "capabilities": capabilities,
        "authority": authority,
        "commitment": commitment,
        "requested_at": requested_at,
    }
    marked = forget_event(event_id=_EVENT_ID_MARK, artifacts=[_ARTIFACT_MARK], **common)
    try:
        # JCS key order: "artifacts" comes before "id".
        template: CanonicalTemplate | None = CanonicalTemplate.of(
            marked, [_ARTIFACT_MARK, _EVENT_ID_MARK]
        )
    except ValueError:
        template = None
    entries = []
    for event_id, artifact_id in zip(event_ids, artifacts, strict=True):
        if len(event_id) != 36 or not _UUID_CHARS.issuperset(event_id):
            raise InvalidInputError(f"forget event id: expected a lowercase UUID, got {event_id!r}")
        aid = parse_artifact_id(artifact_id)
        entries.append(
            template.fill(aid, event_id)
            if template is not None
            else canonical_json(forget_event(event_id=event_id, artifacts=[aid], **common))
        )
    return entries


_NEW_LEAF: Final = CanonicalTemplate.of(active_record(bytes(32), CAPABILITIES), ["00" * 32])


def new_artifact_leaf_json(key_commitment: bytes) -> str:
    """The JCS text of a new artifact's ACTIVE leaf (every capability, no revocation, no hold).

    Equal to ``canonical_json(active_record(key_commitment, CAPABILITIES))`` (a property test
    holds them equal), made from one ``CanonicalTemplate``. A put makes one per artifact.
    """
    if len(key_commitment) != 32:
        raise InvalidInputError(f"key commitment: expected 32 bytes, got {len(key_commitment)}")
    return _NEW_LEAF.fill(key_commitment.hex()).decode("ascii")


def tombstone_record(
    forget_event_hash: bytes, destruction_receipt_hash: bytes | None
) -> dict[str, JsonValue]:
    """A TOMBSTONE leaf binding the forget event and the destruction receipt (level 2)."""
    return {
        "state": "TOMBSTONE",
        "forget_event_hash": forget_event_hash.hex(),
        "destruction_receipt_hash": None
        if destruction_receipt_hash is None
        else destruction_receipt_hash.hex(),
        "level": 2,
    }


_EVENT_HASH_MARK: Final = "00" * 32
_RECEIPT_HASH_MARK: Final = "11" * 32
# JCS key order: "destruction_receipt_hash" comes before "forget_event_hash".
_TOMBSTONE_WITH_RECEIPT: Final = CanonicalTemplate.of(
    tombstone_record(bytes.fromhex(_EVENT_HASH_MARK), bytes.fromhex(_RECEIPT_HASH_MARK)),
    [_RECEIPT_HASH_MARK, _EVENT_HASH_MARK],
)
_TOMBSTONE_WITHOUT_RECEIPT: Final = CanonicalTemplate.of(
    tombstone_record(bytes.fromhex(_EVENT_HASH_MARK), None), [_EVENT_HASH_MARK]
)


def tombstone_leaf_json(forget_event_hash: bytes, destruction_receipt_hash: bytes | None) -> bytes:
    """``canonical_json(tombstone_record(...))`` (a property test holds them equal), made from
    one ``CanonicalTemplate``; an epoch makes one per level-2 forget."""
    if len(forget_event_hash) != 32 or (
        destruction_receipt_hash is not None and len(destruction_receipt_hash) != 32
    ):
        raise InvalidInputError("tombstone leaf: expected 32-byte digests")
    if destruction_receipt_hash is None:
        return _TOMBSTONE_WITHOUT_RECEIPT.fill(forget_event_hash.hex())
    return _TOMBSTONE_WITH_RECEIPT.fill(destruction_receipt_hash.hex(), forget_event_hash.hex())


def entry_hash(entry: Mapping[str, JsonValue]) -> bytes:
    """``H(JCS(entry))``: how leaves and proofs refer to a log entry or a receipt."""
    return sha256(canonical_json(dict(entry)))


@dataclass(frozen=True)
class RequestorOpening:
    """What a requestor's receipt carries so they can open the event's commitment."""

    salt_hex: str
    value: Mapping[str, JsonValue]

    def to_dict(self) -> dict[str, JsonValue]:
        """``{"salt": hex, "value": {...}}``."""
        return {"salt": self.salt_hex, "value": dict(self.value)}
