"""Destruction receipts (*spec* ``oblivio.destruction.v1``, DESIGN.md §5 and §15).

A receipt says that one root key of a wrapping-key backend was destroyed::

    {"type": "oblivio.destruction.v1", "backend": "software|pkcs11|threshold",
     "key_ref": {...}, "epoch": n, "destroyed_at": time, "evidence": {...},
     "signatures": [{"key_id": hex, "signature_b64": ...}]}

Each signature covers the JCS bytes of the receipt without ``signatures``; the node signs every
receipt. For the threshold backend ``key_ref`` names the custodian set and the quorum
(``{"key_id", "custodians": [key ids], "threshold": t}``) and ``evidence.share_deletions`` holds
the custodians' own signed statements (``oblivio.share-deletion.v1``), each over its JCS bytes
without ``signature_b64``. With ``n`` custodians and quorum ``t`` destruction is proven once
``n - t + 1`` distinct custodians have signed: fewer than ``t`` shares can then remain
(seed 000 §4.2, "threshold key shares are deleted below quorum").

Verification is offline and pure: it takes the receipt's bytes and the keys the verifier trusts
(the node's key, and for threshold the custodians' keys) and trusts nothing the receipt says
about who is who.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

from oblivio.core.canonical import JsonValue, canonical_json, parse_json
from oblivio.core.encoding import b64url_decode, b64url_encode
from oblivio.core.errors import InvalidInputError, VerificationError
from oblivio.core.hashing import Digest, sha256
from oblivio.core.identifiers import parse_time
from oblivio.core.signing import SigningKey, VerifyKey

RECEIPT_TYPE: Final = "oblivio.destruction.v1"
SHARE_DELETION_TYPE: Final = "oblivio.share-deletion.v1"
BACKENDS: Final = ("software", "pkcs11", "threshold")


def _signature(key_id: str, signature: bytes) -> dict[str, str]:
    return {"key_id": key_id, "signature_b64": b64url_encode(signature)}


def sign_share_deletion(
    custodian: SigningKey, key_id: str, share_x: int, deleted_at: str
) -> dict[str, JsonValue]:
    """A custodian's signed statement that it deleted its share ``share_x`` of root ``key_id``."""
    statement: dict[str, JsonValue] = {
        "type": SHARE_DELETION_TYPE,
        "key_id": key_id,
        "custodian": custodian.key_id,
        "share": share_x,
        "deleted_at": deleted_at,
    }
    statement["signature_b64"] = b64url_encode(custodian.sign(canonical_json(statement)))
    return statement


@dataclass(frozen=True)
class DestructionReceipt:
    """A destruction receipt as served: its body fields and the signatures over them."""

    backend: str
    key_ref: Mapping[str, JsonValue]
    epoch: int
    destroyed_at: str
    evidence: Mapping[str, JsonValue]
    signatures: tuple[Mapping[str, str], ...] = ()

    def body(self) -> dict[str, JsonValue]:
        """The signed part: everything but ``signatures``."""
        return {
            "type": RECEIPT_TYPE,
            "backend": self.backend,
            "key_ref": dict(self.key_ref),
            "epoch": self.epoch,
            "destroyed_at": self.destroyed_at,
            "evidence": dict(self.evidence),
        }

    def to_dict(self) -> dict[str, JsonValue]:
        """The wire form (DESIGN.md §15)."""
        return self.body() | {"signatures": [dict(s) for s in self.signatures]}

    def to_bytes(self) -> bytes:
        """The JCS bytes of the wire form: what is stored, served and hashed."""
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        return canonical_json(self.to_dict())

    def digest(self) -> Digest:
        """``H(JCS(receipt))`` of the whole receipt as served: what tombstone leaves bind."""
        return sha256(self._encoded)

    def signed_by(self, signer: SigningKey) -> DestructionReceipt:
        """A copy with ``signer``'s signature over the body added."""
        signature = _signature(signer.key_id, signer.sign(canonical_json(self.body())))
        return DestructionReceipt(
            self.backend,
            self.key_ref,
            self.epoch,
            self.destroyed_at,
            self.evidence,
            (*self.signatures, signature),
        )

    @classmethod
    def from_dict(cls, data: object) -> DestructionReceipt:
        """Read the wire form; raise InvalidInputError naming the first malformed field."""
        if not isinstance(data, dict):
            raise InvalidInputError("destruction receipt: expected a JSON object")
        expected = {"type", "backend", "key_ref", "epoch", "destroyed_at", "evidence", "signatures"}
        if set(data) != expected:
            raise InvalidInputError(
                f"destruction receipt: expected fields {sorted(expected)}, got {sorted(data)}"
            )
        if data["type"] != RECEIPT_TYPE:
            raise InvalidInputError(
                f"destruction receipt: expected type {RECEIPT_TYPE}, got {data['type']!r}"
            )
        if data["backend"] not in BACKENDS:
            raise InvalidInputError(
                f"destruction receipt: expected backend in {BACKENDS}, got {data['backend']!r}"
            )
        for name in ("key_ref", "evidence"):
            if not isinstance(data[name], dict):
                raise InvalidInputError(f"destruction receipt: {name} must be an object")
        epoch = data["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise InvalidInputError(f"destruction receipt: epoch must be >= 0, got {epoch!r}")
        parse_time(data["destroyed_at"])
        signatures = data["signatures"]
        if not isinstance(signatures, list) or not all(
            isinstance(s, dict)
            and set(s) == {"key_id", "signature_b64"}
            and all(isinstance(v, str) for v in s.values())
            for s in signatures
        ):
            raise InvalidInputError(
                "destruction receipt: signatures must be a list of {key_id, signature_b64}"
            )
        return cls(
            data["backend"],
            data["key_ref"],
            epoch,
            data["destroyed_at"],
            data["evidence"],
            tuple(signatures),
        )


@dataclass(frozen=True)
class VerifiedDestruction:
    """What a verified receipt proves."""

    backend: str
    key_id: str
    epoch: int
    destroyed_at: str
    receipt_hash: Digest
    custodians_attesting: int = 0


def _check_signature(key: VerifyKey, signature_b64: str, message: bytes, what: str) -> None:
    try:
        signature = b64url_decode(signature_b64)
    except ValueError as e:
        raise VerificationError(f"{what}: signature_b64 is not base64url") from e
    try:
        key.verify(signature, message)
    except VerificationError as e:
        raise VerificationError(f"{what}: signature by {key.key_id} does not verify") from e


def _string(data: Mapping[str, Any], name: str, what: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise VerificationError(f"{what}: expected a non-empty string {name!r}, got {value!r}")
    return value


def _verify_share_deletions(
    receipt: DestructionReceipt, key_id: str, custodian_keys: Sequence[VerifyKey]
) -> int:
    trusted = {key.key_id: key for key in custodian_keys}
    listed = receipt.key_ref.get("custodians")
    threshold = receipt.key_ref.get("threshold")
    # Step 3a: the custodian set the receipt names is the one the verifier trusts.
    if not isinstance(listed, list) or sorted(listed) != sorted(trusted):
        raise VerificationError(
            f"step 3: receipt names custodians {listed!r}, expected {sorted(trusted)}"
        )
    n = len(trusted)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= n:
        raise VerificationError(f"step 3: expected a threshold in 1..{n}, got {threshold!r}")
    statements = receipt.evidence.get("share_deletions")
    if not isinstance(statements, list):
        raise VerificationError("step 3: evidence.share_deletions must be a list")
    attesting: set[str] = set()
    shares: set[int] = set()
    # Step 3b: each statement is signed by a trusted custodian, about this key, once each.
    for statement in statements:
        if not isinstance(statement, dict) or statement.get("type") != SHARE_DELETION_TYPE:
            raise VerificationError(f"step 3: expected {SHARE_DELETION_TYPE} statements")
        custodian = _string(statement, "custodian", "step 3: share deletion")
        if custodian not in trusted:
            raise VerificationError(
                f"step 3: share deletion signed by {custodian}, who is not a custodian"
            )
        if statement.get("key_id") != key_id:
            raise VerificationError(
                f"step 3: share deletion for key {statement.get('key_id')!r}, expected {key_id}"
            )
        share = statement.get("share")
        if isinstance(share, bool) or not isinstance(share, int) or share in shares:
            raise VerificationError(f"step 3: share index {share!r} missing or repeated")
        if custodian in attesting:
            raise VerificationError(f"step 3: custodian {custodian} attests twice")
        parse_time(_string(statement, "deleted_at", "step 3: share deletion"))
        unsigned = {k: v for k, v in statement.items() if k != "signature_b64"}
        _check_signature(
            trusted[custodian],
            _string(statement, "signature_b64", "step 3: share deletion"),
            canonical_json(unsigned),
            f"step 3: share deletion by {custodian}",
        )
        attesting.add(custodian)
        shares.add(share)
    # Step 3c: below quorum: n - t + 1 deletions leave at most t - 1 shares.
    needed = n - threshold + 1
    if len(attesting) < needed:
        raise VerificationError(
            f"step 3: expected share deletions by at least n - t + 1 = {needed} custodians, "
            f"got {len(attesting)}"
        )
    return len(attesting)


def verify_destruction_receipt(
    data: bytes, node_key: VerifyKey, custodian_keys: Sequence[VerifyKey] = ()
) -> VerifiedDestruction:
    """Verify a destruction receipt offline, from the bytes received.

    1. the bytes are strict JSON of the ``oblivio.destruction.v1`` shape;
    2. every signature is by ``node_key`` (which must sign) or a custodian, and verifies over
       the JCS body without ``signatures``;
    3. for ``threshold``: the receipt's custodian set is ``custodian_keys`` and at least
       ``n - t + 1`` of them signed share-deletion statements for this key.

    Raises VerificationError naming the failing step.
    """
    try:
        receipt = DestructionReceipt.from_dict(parse_json(data))
    except InvalidInputError as e:
        raise VerificationError(f"step 1: {e}") from e
    key_id = receipt.key_ref.get("key_id")
    if not isinstance(key_id, str) or not key_id:
        raise VerificationError("step 1: key_ref.key_id must be a non-empty string")
    message = canonical_json(receipt.body())
    trusted = {node_key.key_id: node_key} | {key.key_id: key for key in custodian_keys}
    if not receipt.signatures:
        raise VerificationError("step 2: the receipt carries no signature")
    for signature in receipt.signatures:
        signer = trusted.get(signature["key_id"])
        if signer is None:
            raise VerificationError(
                f"step 2: signed by {signature['key_id']}, expected the node {node_key.key_id} "
                "or a custodian"
            )
        _check_signature(signer, signature["signature_b64"], message, "step 2: receipt")
    if node_key.key_id not in {s["key_id"] for s in receipt.signatures}:
        raise VerificationError(f"step 2: expected a signature by the node {node_key.key_id}")
    attesting = 0
    if receipt.backend == "threshold":
        if not custodian_keys:
            raise VerificationError("step 3: a threshold receipt needs the custodians' keys")
        attesting = _verify_share_deletions(receipt, key_id, custodian_keys)
    return VerifiedDestruction(
        receipt.backend, key_id, receipt.epoch, receipt.destroyed_at, sha256(data), attesting
    )
