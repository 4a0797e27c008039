"""The shared Proof of Forgetting vectors (tests/vectors/pof/): made deterministically, here.

    .venv/bin/python -m tests.core.pof_vectors          # rewrite tests/vectors/pof/

A fixed signing key, fixed ids and times, and core's own algorithms (SMT, RFC 9162 log, signed
note, destruction receipt) make a node's history of three epochs without any I/O but the
writing: a proof of one artifact under the latest checkpoint, the same artifact's proof under
the previous one, a proof with no destruction receipt, a proof whose checkpoint carries
witness cosignatures, and a bundle of three. Then every single-field tampering that
tests/core/test_pof.py applies (its ``mutations`` and ``note_mutations``, lines of the note
dropped or added, an older valid checkpoint, pieces of another valid proof, a mutated bundle)
is written as a file of its own, with the result the Python verifier gives in
``manifest.json``: ``valid`` (and the statements), ``input`` (an unusable document), or the
name of the failing link. The Python verifier (tests/core/test_pof_vectors.py) and the
browser's (static/pof-verify.js, tests/interfaces/test_console_browser.py) must both give it.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oblivio.core.canonical import canonical_json
from oblivio.core.cosignature import WitnessSigner, append_signature_lines, note_body
from oblivio.core.forgetting import active_record, entry_hash, forget_event, tombstone_record
from oblivio.core.hashing import sha256
from oblivio.core.identifiers import CAPABILITIES
from oblivio.core.merkle_log import (
    InclusionProof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
)
from oblivio.core.note import Checkpoint, NoteSigner, sign_checkpoint
from oblivio.core.pof import (
    ProofInputError,
    ProofLinkError,
    build_proof,
    bundle,
    parse_proof_document,
    verify_document,
)
from oblivio.core.receipts import DestructionReceipt
from oblivio.core.signing import SigningKey
from oblivio.core.smt import SparseMerkleTree, record_hash, smt_key
from tests.core.test_pof import apply_mutation, mutations, note_mutations

DIRECTORY = Path(__file__).resolve().parents[1] / "vectors" / "pof"
NAME = "vectors.example"
SIGNER = NoteSigner(NAME, SigningKey(bytes(range(1, 33))))
OTHER_SIGNER = NoteSigner(NAME, SigningKey(bytes(range(101, 133))))
WITNESSES = [WitnessSigner(f"w{i}.example", SigningKey(bytes([60 + i]) * 32)) for i in range(2)]


def _artifact(label: str) -> str:
    return sha256(b"oblivio pof vectors/" + label.encode()).hex()


def _time(minute: int) -> str:
    return f"2026-12-02T10:{minute:02d}:00.000Z"


@dataclass
class _History:
    """A log and a versioned SMT built epoch by epoch, signing a checkpoint at each."""

    entries: list[bytes]
    tree: SparseMerkleTree
    notes: dict[int, str]
    trees: dict[int, SparseMerkleTree]
    sizes: dict[int, int]
    epoch: int = 0

    def append(self, entry: dict[str, Any]) -> int:
        self.entries.append(canonical_json(entry))
        return len(self.entries) - 1

    def commit(self, updates: dict[bytes, bytes]) -> dict[str, Any]:
        previous = self.tree.root
        self.epoch += 1
        if updates:
            self.tree, _ = self.tree.apply(updates, self.epoch)
        else:
            self.tree = SparseMerkleTree(self.tree.root_node, self.epoch)
        map_root = {
            "type": "map_root",
            "epoch": self.epoch,
            "smt_root": self.tree.root.hex(),
            "prev_smt_root": previous.hex(),
            "changes": len(updates),
        }
        self.append(map_root)
        size = len(self.entries)
        root = root_from_leaf_hashes([leaf_hash(e) for e in self.entries])
        self.notes[self.epoch] = sign_checkpoint(Checkpoint(NAME, size, root), SIGNER)
        self.trees[self.epoch] = self.tree
        self.sizes[self.epoch] = size
        return map_root

    def inclusion(self, index: int, size: int) -> InclusionProof:
        leaves = [leaf_hash(e) for e in self.entries[:size]]

        def subtree(level: int, at: int) -> bytes:
            return root_from_leaf_hashes(leaves[at << level : (at + 1) << level])

        return InclusionProof(index, size, tuple(inclusion_proof(index, size, subtree)))


@dataclass(frozen=True)
class _Forgotten:
    artifact_id: str
    event: dict[str, Any]
    event_index: int
    receipt: dict[str, Any] | None


def _history() -> tuple[_History, dict[str, _Forgotten], dict[int, dict[str, Any]]]:
    """Three epochs: artifacts put; four forgotten at level 2 (one without a receipt); a
    heartbeat. Returns the history, the forgotten artifacts, and each epoch's map_root."""
    history = _History([], SparseMerkleTree(), {}, {}, {})
    labels = [f"bob-{i}" for i in range(12)] + ["alice", "carol-0", "carol-1", "carol-2", "dave"]
    ids = {label: _artifact(label) for label in labels}
    active = {
        smt_key(aid): record_hash(active_record(sha256(b"dek/" + aid.encode()), CAPABILITIES))
        for aid in ids.values()
    }
    map_roots = {1: history.commit(active)}
    receipt = (
        DestructionReceipt(
            "software",
            {"key_id": "software:root/0002"},
            2,
            _time(5),
            {
                "method": "overwrite-in-place+fsync",
                "confirmed_by": "key file re-read: no live slot",
                "limitation": "flash media may keep overwritten blocks (docs/key-erasure.md)",
            },
        )
        .signed_by(SIGNER.signing_key)
        .to_dict()
    )
    forgotten: dict[str, _Forgotten] = {}
    for n, label in enumerate(["alice", "carol-0", "carol-1", "carol-2", "dave"]):
        aid = ids[label]
        event = forget_event(
            event_id=f"01938f3a-0000-7000-8000-{n:012d}",
            artifacts=[aid],
            level=2,
            capabilities=CAPABILITIES,
            authority="committed",
            commitment=sha256(b"requestor/" + label.encode()).hex(),
            requested_at=_time(4),
        )
        index = history.append(event)
        forgotten[label] = _Forgotten(aid, event, index, None if label == "dave" else receipt)
    history.append(receipt)
    updates = {
        smt_key(f.artifact_id): record_hash(
            tombstone_record(
                entry_hash(f.event), None if f.receipt is None else entry_hash(f.receipt)
            )
        )
        for f in forgotten.values()
    }
    map_roots[2] = history.commit(updates)
    map_roots[3] = history.commit({})  # a heartbeat: the same map under a later checkpoint
    return history, forgotten, map_roots


def _prove(
    history: _History, forgotten: _Forgotten, epoch: int, map_root: dict[str, Any]
) -> dict[str, Any]:
    """The proof of ``forgotten`` under ``epoch``'s checkpoint (the tree as of that epoch)."""
    size = history.sizes[epoch]
    tree = history.trees[epoch]
    record = tombstone_record(
        entry_hash(forgotten.event),
        None if forgotten.receipt is None else entry_hash(forgotten.receipt),
    )
    return build_proof(
        artifact_id=forgotten.artifact_id,
        record=record,
        smt_proof=tree.prove(smt_key(forgotten.artifact_id)),
        checkpoint=history.notes[epoch],
        map_root=map_root,
        map_root_inclusion=history.inclusion(size - 1, size),
        forget_event=forgotten.event,
        log_inclusion=history.inclusion(forgotten.event_index, size),
        destruction_receipt=forgotten.receipt,
    )


@dataclass(frozen=True)
class Vector:
    """One file of the set and the result every verifier must give for it."""

    file: str
    what: str
    document: Any
    expect: str
    key: str = SIGNER.verifier_key


def _expected(document: Any, key: str) -> tuple[str, list[str]]:
    """What the Python verifier says: ``valid`` with the statements, ``input``, or the link."""
    try:
        proven = verify_document(parse_proof_document(json.dumps(document).encode()), key)
    except ProofInputError:
        return "input", []
    except ProofLinkError as e:
        return e.link, []
    return "valid", [p.statement() for p in proven]


def _cosigned(proof: dict[str, Any]) -> dict[str, Any]:
    cosigned = copy.deepcopy(proof)
    body = note_body(proof["checkpoint"].encode())
    lines = [w.cosign(body, 1_796_000_000 + i).to_line() for i, w in enumerate(WITNESSES)]
    cosigned["checkpoint"] = append_signature_lines(proof["checkpoint"], lines)
    return cosigned


def _tamperings(
    proof: dict[str, Any], early: dict[str, Any], other: dict[str, Any], proofs: dict[str, Any]
) -> Iterator[tuple[str, Any]]:
    """(what, document) for every single tampering of tests/core/test_pof.py."""
    for path, what, new in mutations(proof):
        mutated = apply_mutation(proof, path, new)
        if mutated != proof:
            yield f"{what} at {'.'.join(map(str, path)) or '(document)'}", mutated
    note = proof["checkpoint"]
    for index, changed in enumerate(note_mutations(note)):
        yield f"checkpoint note character {index} flipped", {**proof, "checkpoint": changed}
    lines = note.split("\n")
    for index in range(len(lines)):
        shorter = "\n".join(lines[:index] + lines[index + 1 :])
        yield f"checkpoint note without line {index}", {**proof, "checkpoint": shorter}
    extended = note.replace("\n\n", "\nextension line\n\n", 1)
    yield "checkpoint note with an extension line", {**proof, "checkpoint": extended}
    yield "a valid checkpoint of an earlier epoch", {**proof, "checkpoint": early["checkpoint"]}
    for field in sorted(proof):
        if field != "type" and proof[field] != other[field]:
            yield f"{field} of another valid proof", {**proof, field: other[field]}
    record = copy.deepcopy(proofs)
    entry = record["proofs"][1]["record"]
    entry["forget_event_hash"] = ("1" if entry["forget_event_hash"][0] == "0" else "0") + entry[
        "forget_event_hash"
    ][1:]
    yield "bundle: record of proof 1 changed", record
    dropped = copy.deepcopy(proofs)
    del dropped["proofs"][2]["smt_proof"]
    yield "bundle: smt_proof of proof 2 removed", dropped
    yield "bundle: unknown field added", {**copy.deepcopy(proofs), "unexpected": 1}
    yield "bundle: proofs under two checkpoints", {**proofs, "proofs": [*proofs["proofs"], early]}
    yield "bundle: no proofs", {"type": proofs["type"], "proofs": []}


def vectors() -> list[Vector]:
    """Every vector, in a fixed order (the files are named by it)."""
    history, forgotten, map_roots = _history()
    proof = _prove(history, forgotten["alice"], 3, map_roots[3])
    early = _prove(history, forgotten["alice"], 2, map_roots[2])
    no_receipt = _prove(history, forgotten["dave"], 3, map_roots[3])
    carol = [_prove(history, forgotten[f"carol-{i}"], 3, map_roots[3]) for i in range(3)]
    proofs = bundle(carol)
    valid = [
        ("valid-proof.json", "a proof under the latest checkpoint", proof),
        ("valid-proof-earlier-checkpoint.json", "the same artifact under the epoch before", early),
        (
            "valid-proof-without-receipt.json",
            "a level-2 proof with no destruction receipt",
            no_receipt,
        ),
        (
            "valid-proof-cosigned.json",
            "a checkpoint carrying two witness cosignatures",
            _cosigned(proof),
        ),
        ("valid-bundle.json", "an entity forget: three proofs under one checkpoint", proofs),
    ]
    out = [Vector(name, what, doc, "valid") for name, what, doc in valid]
    out.append(
        Vector("wrong-key.json", "a valid proof checked with another node's key of the same name",
               proof, "", OTHER_SIGNER.verifier_key)
    )  # fmt: skip
    for n, (what, document) in enumerate(_tamperings(proof, early, carol[0], proofs)):
        out.append(Vector(f"tampered-{n:04d}.json", what, document, ""))
    return [Vector(v.file, v.what, v.document, _expected(v.document, v.key)[0], v.key) for v in out]


def write(directory: Path = DIRECTORY) -> int:
    """Rewrite ``directory``: one file per vector and manifest.json. Returns the count."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    entries = []
    for v in vectors():
        (directory / v.file).write_text(json.dumps(v.document, separators=(",", ":")) + "\n")
        entry: dict[str, Any] = {"file": v.file, "what": v.what, "expect": v.expect}
        if v.key != SIGNER.verifier_key:
            entry["key"] = v.key
        if v.expect == "valid":
            entry["statements"] = _expected(v.document, v.key)[1]
        entries.append(entry)
    manifest = {
        "type": "oblivio.pof-vectors.v1",
        "made_by": "python -m tests.core.pof_vectors",
        "verifier_key": SIGNER.verifier_key,
        "vectors": entries,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return len(entries)


if __name__ == "__main__":
    print(f"wrote {write()} vectors to {DIRECTORY}")
