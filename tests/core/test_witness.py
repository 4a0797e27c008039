"""C2SP tlog-witness add-checkpoint bodies, the witness's checks, and equivocation evidence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oblivio.core.errors import VerificationError
from oblivio.core.merkle_log import consistency_proof, leaf_hash, root_at, root_from_leaf_hashes
from oblivio.core.note import Checkpoint, NoteSigner, sign_checkpoint
from oblivio.core.signing import SigningKey
from oblivio.core.witness import (
    MAX_PROOF_LINES,
    AddCheckpointRequest,
    BadConsistencyProofError,
    EquivocationError,
    EquivocationEvidence,
    UntrustedCheckpointError,
    WitnessConflictError,
    WitnessRequestError,
    check_extension,
    open_submitted,
    parse_add_checkpoint,
    parse_size_body,
    size_body,
    submitted_checkpoint,
    verify_equivocation,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "c2sp_cosignature.json").read_text("utf-8")
)
LOG = NoteSigner("log.example/a", SigningKey(b"\x01" * 32))


def _tree(entries: list[bytes]) -> Any:
    leaves = [leaf_hash(e) for e in entries]

    def subtree(level: int, index: int) -> bytes:
        width = 1 << level
        return root_from_leaf_hashes(leaves[index * width : (index + 1) * width])

    return subtree


def _log(n: int, tag: bytes = b"e") -> tuple[Any, list[bytes]]:
    entries = [tag + str(i).encode() for i in range(n)]
    return _tree(entries), entries


def _checkpoint(size: int, tag: bytes = b"e") -> tuple[Checkpoint, bytes]:
    subtree, _ = _log(size, tag)
    checkpoint = Checkpoint(LOG.name, size, root_at(size, subtree))
    return checkpoint, sign_checkpoint(checkpoint, LOG).encode()


def test_spec_example_request_body_parses() -> None:
    examples = {e["name"]: e for e in VECTORS["format_only_examples"]}
    body = examples["tlog-witness-add-checkpoint-request-body"]["http_body"].encode()
    request = parse_add_checkpoint(body)
    assert request.old_size == 20852014
    assert len(request.proof) == 4
    assert request.to_bytes() == body
    checkpoint = submitted_checkpoint(request.note)
    assert (checkpoint.origin, checkpoint.size) == ("example.com/behind-the-sofa", 20852163)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"old 1\n",
        b"old 01\n\nx",
        b"new 1\n\nx",
        b"old -1\n\nx",
        b"old 1\nnot base64\n\nx",
        b"old 1\nAAAA\n\nx",
        b"old \xff\n\nx",
        b"old 1\n" + (b"A" * 43 + b"=\n") * (MAX_PROOF_LINES + 1) + b"\nx",
    ],
)
def test_malformed_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(WitnessRequestError):
        parse_add_checkpoint(body)


@given(
    old=st.integers(0, 2**63),
    proof=st.lists(st.binary(min_size=32, max_size=32), max_size=MAX_PROOF_LINES),
    note=st.binary(max_size=100),
)
def test_request_round_trip(old: int, proof: list[bytes], note: bytes) -> None:
    request = AddCheckpointRequest(old, tuple(proof), note)
    assert parse_add_checkpoint(request.to_bytes()) == request


@given(size=st.integers(0, 2**64))
def test_size_body_round_trip(size: int) -> None:
    assert parse_size_body(size_body(size)) == size


def test_untrusted_signature_is_refused() -> None:
    _, note = _checkpoint(3)
    other = NoteSigner(LOG.name, SigningKey(b"\x02" * 32))
    with pytest.raises(UntrustedCheckpointError):
        open_submitted(note, [other.verifier()])
    assert open_submitted(note, [other.verifier(), LOG.verifier()]).size == 3


def test_extension_checks_in_order() -> None:
    first, _ = _checkpoint(3)
    second, _ = _checkpoint(7)
    subtree, _ = _log(7)
    proof = tuple(consistency_proof(3, 7, subtree))
    # First sight: old 0, empty proof.
    check_extension(AddCheckpointRequest(0, (), b""), first, 0, None, None)
    with pytest.raises(BadConsistencyProofError):
        check_extension(AddCheckpointRequest(0, proof, b""), first, 0, None, None)
    # A consistent extension.
    check_extension(AddCheckpointRequest(3, proof, b""), second, 3, first.root, None)
    # Old size above the new: 400.
    with pytest.raises(WitnessRequestError):
        check_extension(AddCheckpointRequest(9, proof, b""), second, 3, first.root, None)
    # Old size not the stored one: 409 naming it.
    with pytest.raises(WitnessConflictError) as conflict:
        check_extension(AddCheckpointRequest(2, proof, b""), second, 3, first.root, None)
    assert conflict.value.latest_size == 3
    # A wrong proof: 422.
    with pytest.raises(BadConsistencyProofError):
        check_extension(AddCheckpointRequest(3, proof[1:], b""), second, 3, first.root, None)
    forked, _ = _checkpoint(7, b"f")
    with pytest.raises(BadConsistencyProofError):
        check_extension(AddCheckpointRequest(3, proof, b""), forked, 3, first.root, None)
    # Same size, same root: fine; different root: a fork (409).
    check_extension(AddCheckpointRequest(7, (), b""), second, 7, second.root, None)
    with pytest.raises(EquivocationError) as fork:
        check_extension(AddCheckpointRequest(7, (), b""), forked, 7, second.root, None)
    assert fork.value.latest_size == 7
    # A root cosigned earlier at this size that differs: equivocation, whatever the old size.
    with pytest.raises(EquivocationError):
        check_extension(AddCheckpointRequest(9, (), b""), forked, 11, b"\0" * 32, second.root)


def test_equivocation_evidence_verifies_offline() -> None:
    first, note1 = _checkpoint(5)
    _, note2 = _checkpoint(5, b"f")
    evidence = EquivocationEvidence(LOG.name, 5, note1.decode(), note2.decode())
    assert EquivocationEvidence.from_dict(json.loads(json.dumps(evidence.to_dict()))) == evidence
    assert verify_equivocation(evidence, LOG.verifier_key) == first
    same = EquivocationEvidence(LOG.name, 5, note1.decode(), note1.decode())
    with pytest.raises(VerificationError, match="same root"):
        verify_equivocation(same, LOG.verifier_key)
    _, note3 = _checkpoint(6, b"f")
    with pytest.raises(VerificationError, match="size 5"):
        verify_equivocation(
            EquivocationEvidence(LOG.name, 5, note1.decode(), note3.decode()), LOG.verifier_key
        )
    stranger = NoteSigner(LOG.name, SigningKey(b"\x03" * 32))
    with pytest.raises(VerificationError, match="second checkpoint"):
        verify_equivocation(
            EquivocationEvidence(
                LOG.name,
                5,
                note1.decode(),
                sign_checkpoint(Checkpoint(LOG.name, 5, b"\x09" * 32), stranger),
            ),
            LOG.verifier_key,
        )


@given(
    origin=st.text(min_size=1, max_size=30),
    size=st.integers(0, 2**63),
    first=st.text(max_size=200),
    second=st.text(max_size=200),
)
def test_evidence_round_trip(origin: str, size: int, first: str, second: str) -> None:
    evidence = EquivocationEvidence(origin, size, first, second)
    wire = json.loads(json.dumps(evidence.to_dict()))
    assert EquivocationEvidence.from_dict(wire) == evidence
    assert EquivocationEvidence.from_dict(wire | {"id": "kept by the witness"}) == evidence
