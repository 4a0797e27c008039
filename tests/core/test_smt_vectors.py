"""oblivio-smt-v1 against tests/vectors/oblivio_smt_v1.json (self-generated; it pins the format
so that any change to hashing, compaction or the proof wire form is caught)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oblivio.core.canonical import canonical_json
from oblivio.core.smt import (
    SmtProof,
    SparseMerkleTree,
    leaf_hash,
    record_hash,
    root_from_leaves,
    smt_key,
    verify_inclusion,
    verify_non_inclusion,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "oblivio_smt_v1.json").read_text("utf-8")
)
CASES = {c["name"]: c for c in VECTORS["cases"]}


def test_file_says_it_is_self_generated() -> None:
    assert VECTORS["self_generated"] is True
    assert "SELF-GENERATED" in VECTORS["note"]


@pytest.mark.parametrize("name", ["artifacts-with-records", "raw-keys-long-shared-prefixes"])
def test_roots_and_proofs(name: str) -> None:
    case = CASES[name]
    leaves: dict[bytes, bytes] = {}
    for leaf in case["leaves"]:
        key = bytes.fromhex(leaf["key"])
        if "artifact_id" in leaf:
            assert smt_key(leaf["artifact_id"]) == key
            assert record_hash(leaf["record"]).hex() == leaf["value_hash"]
        value = bytes.fromhex(leaf["value_hash"])
        assert leaf_hash(key, value).hex() == leaf["leaf_hash"]
        leaves[key] = value
    root = bytes.fromhex(case["root"])
    assert root_from_leaves(leaves) == root
    tree, _ = SparseMerkleTree().apply(leaves, 1)
    assert tree.root == root
    for entry in case["proofs"]:
        key = bytes.fromhex(entry["key"])
        proof = SmtProof.from_dict(entry["proof"])
        assert canonical_json(tree.prove(key).to_dict()) == canonical_json(entry["proof"])
        if entry["present"]:
            verify_inclusion(root, key, leaves[key], proof)
        else:
            verify_non_inclusion(root, key, proof)


def test_batches_with_removals() -> None:
    tree = SparseMerkleTree()
    leaves: dict[bytes, bytes] = {}
    for version, batch in enumerate(CASES["batches-with-removals"]["batches"], start=1):
        updates: dict[bytes, bytes | None] = {
            smt_key(a): record_hash(r) for a, r in batch["set"].items()
        }
        updates.update({smt_key(a): None for a in batch["remove"]})
        tree, _ = tree.apply(updates, version)
        for key, value in updates.items():
            if value is None:
                leaves.pop(key, None)
            else:
                leaves[key] = value
        assert tree.root.hex() == batch["root_after"] == root_from_leaves(leaves).hex()
