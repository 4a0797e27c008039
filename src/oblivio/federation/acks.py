"""Tombstone acknowledgements (*spec* ``oblivio.tombstone-ack.v1``, DESIGN.md §12), pure.

A receiving node answers each tombstone with a signed ack::

    {"type": "oblivio.tombstone-ack.v1", "tombstone_id": "tomb_…", "node": org,
     "status": "applied" | "held" | "rejected", "level": 0-2, "received_at": time,
     "applied_at": time | null, "artifacts": [artifact ids], "checkpoint": note | null,
     "proofs": [oblivio.pof.v1, …], "key_id": hex, "signature": b64url}

signed (Ed25519) over the RFC 8785 bytes of the ack without ``signature``, with the key
``key_id`` names in the acking node's manifest. At level 2 ``proofs`` holds the node's Proof of
Forgetting of every artifact in ``artifacts``; the originator checks each with the node's
verifier key and calls the peer ``proved`` only when all of them verify.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from oblivio.core.canonical import JsonValue, canonical_json
from oblivio.core.encoding import b64url_decode, b64url_encode
from oblivio.core.errors import InvalidInputError, VerificationError
from oblivio.core.manifest import OrgManifest
from oblivio.core.note import verifier_key
from oblivio.core.pof import verify_proof
from oblivio.core.signing import SigningKey

ACK_TYPE: Final = "oblivio.tombstone-ack.v1"
AckStatus = Literal["applied", "held", "rejected"]
Verdict = Literal["proved", "acknowledged", "held", "non_compliant"]


def sign_ack(
    signing_key: SigningKey,
    *,
    tombstone_id: str,
    node: str,
    status: AckStatus,
    level: int,
    received_at: str,
    applied_at: str | None,
    artifacts: Sequence[str],
    checkpoint: str | None,
    proofs: Sequence[Mapping[str, JsonValue]],
) -> dict[str, JsonValue]:
    """A signed ack (module docstring)."""
    body: dict[str, JsonValue] = {
        "type": ACK_TYPE,
        "tombstone_id": tombstone_id,
        "node": node,
        "status": status,
        "level": level,
        "received_at": received_at,
        "applied_at": applied_at,
        "artifacts": list(artifacts),
        "checkpoint": checkpoint,
        "proofs": [dict(p) for p in proofs],
        "key_id": signing_key.key_id,
    }
    return {**body, "signature": b64url_encode(signing_key.sign(canonical_json(body)))}


@dataclass(frozen=True)
class AckVerdict:
    """What an ack establishes for its tombstone and peer."""

    verdict: Verdict
    detail: str


def judge_ack(ack: Mapping[str, Any], manifest: OrgManifest, tombstone_id: str) -> AckVerdict:
    """Verify an ack from the org of ``manifest`` for ``tombstone_id`` and judge it.

    Steps: (1) type, tombstone and node; (2) the signature with the manifest key ``key_id``
    names, valid at ``received_at``; (3) by status: ``held`` and ``rejected`` are final;
    ``applied`` at level 2 with artifacts needs one valid proof (verified with the node's
    verifier key) per artifact: ``proved``, else ``non_compliant``; ``applied`` otherwise is
    ``acknowledged``. Raises VerificationError when steps 1-2 fail (nothing to judge).
    """
    if ack.get("type") != ACK_TYPE or ack.get("tombstone_id") != tombstone_id:
        raise VerificationError(f"ack: expected an {ACK_TYPE} for {tombstone_id}")
    if ack.get("node") != manifest.org:
        raise VerificationError(f"ack: expected node {manifest.org!r}, got {ack.get('node')!r}")
    key = manifest.key_for(str(ack.get("key_id")), str(ack.get("received_at")))
    try:
        signature = b64url_decode(str(ack.get("signature")))
    except ValueError as e:
        raise VerificationError(f"ack signature: not base64url: {e}") from e
    key.verify(signature, canonical_json({k: v for k, v in ack.items() if k != "signature"}))
    status = ack.get("status")
    if status == "held":
        return AckVerdict("held", "legal hold: the peer keeps the keys (seed 001)")
    if status == "rejected":
        return AckVerdict("non_compliant", "the peer rejected the tombstone")
    if status != "applied":
        raise VerificationError(f"ack: unknown status {status!r}")
    artifacts = ack.get("artifacts")
    proofs = ack.get("proofs")
    if not isinstance(artifacts, list) or not isinstance(proofs, list):
        raise VerificationError("ack: expected lists of artifacts and proofs")
    if ack.get("level") != 2 or not artifacts:
        return AckVerdict("acknowledged", f"applied at level {ack.get('level')}, no proof due")
    return _judge_proofs(artifacts, proofs, verifier_key(manifest.org, key.public_bytes))


def _judge_proofs(artifacts: list[Any], proofs: list[Any], vkey: str) -> AckVerdict:
    """``proved`` when every artifact has a proof that verifies with ``vkey``."""
    proven: set[str] = set()
    for proof in proofs:
        if not isinstance(proof, Mapping):
            return AckVerdict("non_compliant", "a proof is not an object")
        try:
            proven.add(verify_proof(proof, vkey).artifact_id)
        except (VerificationError, InvalidInputError) as e:
            return AckVerdict("non_compliant", f"a proof does not verify: {e}")
    missing = sorted(set(map(str, artifacts)) - proven)
    if missing:
        return AckVerdict("non_compliant", f"no valid proof for {len(missing)} artifacts")
    return AckVerdict("proved", f"{len(proven)} proofs verify with {vkey}")
