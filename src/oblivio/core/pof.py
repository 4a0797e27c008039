"""Proof of Forgetting (*spec* ``oblivio.pof.v1``, DESIGN.md §9, §15; seed 000 §5).

Verification is offline and pure: it needs the proof's bytes and the node's C2SP verifier key,
and trusts nothing else the proof says. Its links, checked in this order, are named in every
failure:

1. ``input``               the bytes are a JSON object of the oblivio.pof.v1 shape
2. ``checkpoint``          the signed note verifies under the verifier key and parses as a plain
                           tlog-checkpoint whose origin is the key's name
3. ``map_root``            the map_root entry is the checkpoint's last log entry: its inclusion
                           proof is at index size-1 of a tree of the checkpoint's size and root
4. ``forget_event``        the forget event is in the same log, at the same size, names the
                           artifact and is level 2
5. ``record``              the leaf record is a level-2 TOMBSTONE binding H(JCS(forget event))
                           and H(JCS(destruction receipt)) (or null when there is none)
6. ``smt_proof``           the record is the leaf of H(artifact_id) under map_root.smt_root
7. ``destruction_receipt`` when present, it verifies as oblivio.destruction.v1 signed by the node
8. ``cosignatures``        when witnesses are given, at least ``quorum`` of them cosigned the
                           checkpoint (C2SP tlog-cosignature v1; DESIGN.md §17)

Cosignature lines ride in the checkpoint note as extra signature lines: a verifier that knows no
witness ignores them (signed-note), so a cosigned proof is still a plain ``oblivio.pof.v1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from oblivio.core.canonical import JsonValue, canonical_json, parse_json
from oblivio.core.cosignature import WitnessVerifier, verify_cosignatures
from oblivio.core.errors import InvalidInputError, VerificationError
from oblivio.core.forgetting import entry_hash, tombstone_record
from oblivio.core.merkle_log import InclusionProof, leaf_hash
from oblivio.core.note import (
    ED25519_ALGORITHM,
    Checkpoint,
    NoteVerifier,
    open_checkpoint,
    parse_verifier_key,
)
from oblivio.core.receipts import verify_destruction_receipt
from oblivio.core.signing import VerifyKey
from oblivio.core.smt import SmtProof, record_hash, smt_key, verify_inclusion

POF_TYPE: Final = "oblivio.pof.v1"
BUNDLE_TYPE: Final = "oblivio.pof-bundle.v1"
_FIELDS: Final = {
    "type",
    "artifact_id",
    "record",
    "smt_proof",
    "checkpoint",
    "map_root",
    "map_root_inclusion",
    "forget_event",
    "log_inclusion",
    "destruction_receipt",
}


class ProofInputError(InvalidInputError):
    """The proof or the key cannot be used at all (not JSON, wrong shape, bad key text)."""

    code = "proof_input_unusable"


class ProofLinkError(VerificationError):
    """One link of a Proof of Forgetting does not hold; ``link`` names it."""

    code = "proof_invalid"

    def __init__(self, link: str, detail: str) -> None:
        super().__init__(f"{link}: {detail}")
        self.link = link


@dataclass(frozen=True)
class ProvenForgetting:
    """What a valid proof establishes."""

    node: str
    artifact_id: str
    checkpoint_size: int
    epoch: int
    level: int
    forget_event_id: str
    destruction_backend: str | None
    capabilities: tuple[str, ...] = ("decrypt", "prove", "recover")
    cosigned_by: tuple[str, ...] = ()
    """Key ids of the required witnesses whose cosignatures verified (empty when none asked)."""

    def statement(self) -> str:
        """The proven statement in one sentence."""
        evidence = (
            f"; key destruction attested by the {self.destruction_backend} backend"
            if self.destruction_backend
            else ""
        )
        # ``recover`` holds a copy of K_data (DESIGN.md §4): while it lives, the node can still
        # decrypt, whatever happened to ``decrypt``.
        what = (
            "no capability to decrypt"
            if {"decrypt", "recover"} <= set(self.capabilities)
            else "no " + ", ".join(self.capabilities) + " capability for"
        )
        witnessed = (
            f"; checkpoint cosigned by {', '.join(self.cosigned_by)}" if self.cosigned_by else ""
        )
        return (
            f"as of checkpoint {self.checkpoint_size} (epoch {self.epoch}), node {self.node} "
            f"holds {what} artifact {self.artifact_id} (forgotten: "
            f"{', '.join(self.capabilities)}): level {self.level} "
            f"(forget event {self.forget_event_id}){evidence}{witnessed}"
        )

    def to_dict(self) -> dict[str, JsonValue]:
        """Machine-readable form of the statement."""
        return {
            "node": self.node,
            "artifact_id": self.artifact_id,
            "checkpoint_size": self.checkpoint_size,
            "epoch": self.epoch,
            "level": self.level,
            "forget_event_id": self.forget_event_id,
            "destruction_backend": self.destruction_backend,
            "capabilities": list(self.capabilities),
            "cosigned_by": list(self.cosigned_by),
            "statement": self.statement(),
        }


def build_proof(
    *,
    artifact_id: str,
    record: Mapping[str, JsonValue],
    smt_proof: SmtProof,
    checkpoint: str,
    map_root: Mapping[str, JsonValue],
    map_root_inclusion: InclusionProof,
    forget_event: Mapping[str, JsonValue],
    log_inclusion: InclusionProof,
    destruction_receipt: Mapping[str, JsonValue] | None,
) -> dict[str, JsonValue]:
    """Assemble a proof document (the node checks it with ``verify_proof`` before serving)."""
    return {
        "type": POF_TYPE,
        "artifact_id": artifact_id,
        "record": dict(record),
        "smt_proof": smt_proof.to_dict(),
        "checkpoint": checkpoint,
        "map_root": dict(map_root),
        "map_root_inclusion": map_root_inclusion.to_dict(),
        "forget_event": dict(forget_event),
        "log_inclusion": log_inclusion.to_dict(),
        "destruction_receipt": None if destruction_receipt is None else dict(destruction_receipt),
    }


def _object(value: object, link: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProofLinkError(link, f"expected a JSON object, got {type(value).__name__}")
    return value


def _inclusion(value: object, link: str) -> InclusionProof:
    try:
        return InclusionProof.from_dict(value)
    except VerificationError as e:
        raise ProofLinkError(link, str(e)) from e


def _verify_log_entry(
    entry: dict[str, Any], proof: InclusionProof, size: int, root: bytes, link: str
) -> None:
    if proof.tree_size != size:
        raise ProofLinkError(
            link,
            f"expected an inclusion proof at the checkpoint size {size}, got {proof.tree_size}",
        )
    try:
        proof.verify(leaf_hash(canonical_json(entry)), root)
    except VerificationError as e:
        raise ProofLinkError(link, f"not in the log under the checkpoint: {e}") from e


def _checkpoint(proof: Mapping[str, Any], verifier: NoteVerifier) -> Checkpoint:
    note = proof["checkpoint"]
    if not isinstance(note, str):
        raise ProofLinkError("checkpoint", "expected the signed note as a string")
    try:
        checkpoint = open_checkpoint(note.encode("utf-8"), verifier)
    except VerificationError as e:
        raise ProofLinkError("checkpoint", str(e)) from e
    if checkpoint.size < 1:
        raise ProofLinkError("checkpoint", "an empty log proves nothing")
    return checkpoint


def _map_root(proof: Mapping[str, Any], checkpoint: Checkpoint) -> tuple[bytes, int]:
    map_root = _object(proof["map_root"], "map_root")
    if map_root.get("type") != "map_root":
        raise ProofLinkError("map_root", f"expected type 'map_root', got {map_root.get('type')!r}")
    inclusion = _inclusion(proof["map_root_inclusion"], "map_root_inclusion")
    last = checkpoint.size - 1
    if inclusion.leaf_index != last:
        raise ProofLinkError(
            "map_root", f"expected the last entry (index {last}), got {inclusion.leaf_index}"
        )
    _verify_log_entry(map_root, inclusion, checkpoint.size, checkpoint.root, "map_root")
    smt_root, epoch = map_root.get("smt_root"), map_root.get("epoch")
    if not isinstance(smt_root, str) or len(smt_root) != 64 or type(epoch) is not int:
        raise ProofLinkError("map_root", "expected a 64-hex smt_root and an integer epoch")
    try:
        return bytes.fromhex(smt_root), epoch
    except ValueError as e:
        raise ProofLinkError("map_root", f"smt_root is not hex: {smt_root!r}") from e


def _forget_event(
    proof: Mapping[str, Any], checkpoint: Checkpoint, artifact_id: str
) -> dict[str, Any]:
    event = _object(proof["forget_event"], "forget_event")
    inclusion = _inclusion(proof["log_inclusion"], "log_inclusion")
    _verify_log_entry(event, inclusion, checkpoint.size, checkpoint.root, "forget_event")
    artifacts = event.get("artifacts")
    if event.get("type") != "forget" or not isinstance(artifacts, list):
        raise ProofLinkError("forget_event", "expected a forget event with a list of artifacts")
    if artifact_id not in artifacts:
        raise ProofLinkError("forget_event", f"does not name artifact {artifact_id}")
    if event.get("level") != 2:
        raise ProofLinkError("forget_event", f"expected level 2, got {event.get('level')!r}")
    return event


def _record_and_leaf(
    proof: Mapping[str, Any], event: dict[str, Any], key: bytes, smt_root: bytes
) -> None:
    record = _object(proof["record"], "record")
    receipt = proof["destruction_receipt"]
    receipt_hash = None if receipt is None else entry_hash(_object(receipt, "destruction_receipt"))
    expected = tombstone_record(entry_hash(event), receipt_hash)
    if record != expected:
        raise ProofLinkError(
            "record",
            f"expected {canonical_json(expected).decode()}, got {canonical_json(record).decode()}",
        )
    try:
        verify_inclusion(smt_root, key, record_hash(record), SmtProof.from_dict(proof["smt_proof"]))
    except VerificationError as e:
        raise ProofLinkError("smt_proof", str(e)) from e


def _receipt(proof: Mapping[str, Any], verifier: NoteVerifier) -> str | None:
    receipt = proof["destruction_receipt"]
    if receipt is None:
        return None
    try:
        verified = verify_destruction_receipt(
            canonical_json(receipt), VerifyKey(verifier.public_key)
        )
    except VerificationError as e:
        raise ProofLinkError("destruction_receipt", str(e)) from e
    return verified.backend


def _cosignatures(
    proof: Mapping[str, Any], witnesses: Sequence[WitnessVerifier], quorum: int
) -> tuple[str, ...]:
    if not witnesses and not quorum:
        return ()
    try:
        report = verify_cosignatures(str(proof["checkpoint"]).encode("utf-8"), witnesses, quorum)
    except ValueError as e:
        raise ProofInputError(f"witnesses: {e}") from e
    except VerificationError as e:
        raise ProofLinkError("cosignatures", str(e).removeprefix("cosignatures: ")) from e
    return report.signers


def verify_proof(
    proof: Mapping[str, Any],
    verifier_key: str,
    witnesses: Sequence[WitnessVerifier] = (),
    quorum: int = 0,
) -> ProvenForgetting:
    """Verify a parsed Proof of Forgetting offline against the node's verifier key and, when
    ``witnesses`` are given, require ``quorum`` of them to have cosigned its checkpoint.

    Raises ProofInputError if the key, the witnesses or the document is unusable (a quorum
    above the number of witnesses included), ProofLinkError naming the first link that fails
    otherwise (module docstring for the order).
    """
    try:
        verifier = parse_verifier_key(verifier_key)
    except VerificationError as e:
        raise ProofInputError(f"verifier key unusable: {e}") from e
    if verifier.algorithm != ED25519_ALGORITHM:
        raise ProofInputError("verifier key: oblivio nodes sign with Ed25519 keys")
    if set(proof) != _FIELDS or proof.get("type") != POF_TYPE:
        raise ProofInputError(
            f"input: expected an {POF_TYPE} object with fields {sorted(_FIELDS)}, "
            f"got {sorted(proof)}"
        )
    artifact_id = proof["artifact_id"]
    if not isinstance(artifact_id, str):
        raise ProofLinkError("artifact_id", "expected a 64-hex artifact id")
    try:
        key = smt_key(artifact_id)
    except VerificationError as e:
        raise ProofLinkError("artifact_id", str(e)) from e
    checkpoint = _checkpoint(proof, verifier)
    smt_root, epoch = _map_root(proof, checkpoint)
    event = _forget_event(proof, checkpoint, artifact_id)
    _record_and_leaf(proof, event, key, smt_root)
    backend = _receipt(proof, verifier)
    cosigned_by = _cosignatures(proof, witnesses, quorum)
    capabilities = event.get("capabilities")
    if not isinstance(capabilities, list) or not capabilities:
        raise ProofLinkError("forget_event", "expected a non-empty list of capabilities")
    return ProvenForgetting(
        checkpoint.origin,
        artifact_id,
        checkpoint.size,
        epoch,
        2,
        str(event.get("id")),
        backend,
        tuple(str(c) for c in capabilities),
        cosigned_by,
    )


def parse_proof_document(data: bytes) -> Mapping[str, Any]:
    """Parse a proof or a bundle file strictly; raise ProofInputError if it is not JSON."""
    try:
        document = parse_json(data)
    except InvalidInputError as e:
        raise ProofInputError(f"input: {e}") from e
    if not isinstance(document, dict):
        raise ProofInputError("input: expected a JSON object")
    return document


def bundle(proofs: Sequence[Mapping[str, JsonValue]]) -> dict[str, JsonValue]:
    """One document holding a proof per artifact, all under one checkpoint (entity forgets)."""
    return {"type": BUNDLE_TYPE, "proofs": [dict(p) for p in proofs]}


def verify_document(
    document: Mapping[str, Any],
    verifier_key: str,
    witnesses: Sequence[WitnessVerifier] = (),
    quorum: int = 0,
) -> list[ProvenForgetting]:
    """Verify a single proof or a bundle; a bundle's proofs must share one checkpoint.
    ``witnesses`` and ``quorum`` as in ``verify_proof``."""
    if document.get("type") == BUNDLE_TYPE:
        proofs = document.get("proofs")
        if set(document) != {"type", "proofs"} or not isinstance(proofs, list) or not proofs:
            raise ProofInputError("input: a bundle needs a non-empty list of proofs")
        checkpoints = {p.get("checkpoint") if isinstance(p, dict) else None for p in proofs}
        if len(checkpoints) != 1:
            raise ProofLinkError(
                "checkpoint", "the bundle's proofs are under different checkpoints"
            )
        results = []
        for index, item in enumerate(proofs):
            if not isinstance(item, dict):
                raise ProofInputError(f"input: bundle proof {index} is not an object")
            try:
                results.append(verify_proof(item, verifier_key, witnesses, quorum))
            except ProofLinkError as e:
                raise ProofLinkError(f"proofs[{index}].{e.link}", str(e).partition(": ")[2]) from e
        return results
    return [verify_proof(document, verifier_key, witnesses, quorum)]
