"""RFC 9162 log algorithms against tests/vectors/rfc6962.json, plus property tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oblivio.core.errors import VerificationError
from oblivio.core.merkle_log import (
    EMPTY_ROOT,
    ConsistencyProof,
    InclusionProof,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_at,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "rfc6962.json").read_text("utf-8")
)
LEAVES = [bytes.fromhex(x) for x in VECTORS["leaves"]]
LEAF_HASHES = [leaf_hash(x) for x in LEAVES]


def subtree_of(hashes: list[bytes]) -> Any:
    """A subtree accessor over an in-memory list of leaf hashes (what a store provides)."""

    def subtree(level: int, index: int) -> bytes:
        start = index << level
        end = start + (1 << level)
        assert end <= len(hashes), f"accessor asked beyond the tree: {level}, {index}"
        return root_from_leaf_hashes(hashes[start:end])

    return subtree


def test_leaf_hashes_match() -> None:
    assert [h.hex() for h in LEAF_HASHES] == VECTORS["leaf_hashes"]


def test_node_hashes_by_level() -> None:
    for level, hashes in VECTORS["node_hashes_by_level"].items():
        lvl = int(level)
        computed = [
            root_from_leaf_hashes(LEAF_HASHES[i << lvl : (i + 1) << lvl])
            for i in range(len(hashes))
        ]
        assert [c.hex() for c in computed] == hashes


@pytest.mark.parametrize("vector", VECTORS["hasher_vectors"], ids=lambda v: v["name"])
def test_hasher_vectors(vector: dict[str, str]) -> None:
    if vector["op"] == "MTH({})":
        got = root_from_leaf_hashes([])
        assert got == EMPTY_ROOT
    elif vector["op"] == "leaf_hash":
        got = leaf_hash(bytes.fromhex(vector["input_hex"]))
    else:
        got = node_hash(bytes.fromhex(vector["left_hex"]), bytes.fromhex(vector["right_hex"]))
    assert got.hex() == vector["expected"]


@pytest.mark.parametrize("vector", VECTORS["roots"], ids=lambda v: str(v["tree_size"]))
def test_roots(vector: dict[str, Any]) -> None:
    size = vector["tree_size"]
    assert root_from_leaf_hashes(LEAF_HASHES[:size]).hex() == vector["root"]
    assert root_at(size, subtree_of(LEAF_HASHES)).hex() == vector["root"]


@pytest.mark.parametrize("vector", VECTORS["inclusion_proofs"], ids=lambda v: str(v["leaf_index"]))
def test_published_inclusion_proofs(vector: dict[str, Any]) -> None:
    index, size = vector["leaf_index"], vector["tree_size"]
    path = inclusion_proof(index, size, subtree_of(LEAF_HASHES[:size]))
    assert [p.hex() for p in path] == vector["path"]
    verify_inclusion(
        index, size, bytes.fromhex(vector["leaf_hash"]), path, bytes.fromhex(vector["root"])
    )


@pytest.mark.parametrize("vector", VECTORS["consistency_proofs"], ids=lambda v: str(v["size1"]))
def test_published_consistency_proofs(vector: dict[str, Any]) -> None:
    size1, size2 = vector["size1"], vector["size2"]
    path = consistency_proof(size1, size2, subtree_of(LEAF_HASHES[:size2]))
    assert [p.hex() for p in path] == vector["path"]
    verify_consistency(
        size1, size2, path, bytes.fromhex(vector["root1"]), bytes.fromhex(vector["root2"])
    )


def _probe_id(p: dict[str, Any]) -> str:
    return str(p["file"])


@pytest.mark.parametrize("probe", VECTORS["probes"]["inclusion"], ids=_probe_id)
def test_inclusion_probes(probe: dict[str, Any]) -> None:
    def run() -> None:
        verify_inclusion(
            probe["leaf_index"],
            probe["tree_size"],
            bytes.fromhex(probe["leaf_hash"]),
            [bytes.fromhex(p) for p in probe["proof"]],
            bytes.fromhex(probe["root"]),
        )

    if probe["want_error"]:
        with pytest.raises(VerificationError):
            run()
    else:
        run()


@pytest.mark.parametrize("probe", VECTORS["probes"]["consistency"], ids=_probe_id)
def test_consistency_probes(probe: dict[str, Any]) -> None:
    def run() -> None:
        verify_consistency(
            probe["size1"],
            probe["size2"],
            [bytes.fromhex(p) for p in probe["proof"]],
            bytes.fromhex(probe["root1"]),
            bytes.fromhex(probe["root2"]),
        )

    if probe["want_error"]:
        with pytest.raises(VerificationError):
            run()
    else:
        run()


def test_every_proof_up_to_size_8_verifies_against_published_roots() -> None:
    roots = {v["tree_size"]: bytes.fromhex(v["root"]) for v in VECTORS["roots"]}
    for size in range(1, 9):
        sub = subtree_of(LEAF_HASHES[:size])
        for index in range(size):
            verify_inclusion(
                index, size, LEAF_HASHES[index], inclusion_proof(index, size, sub), roots[size]
            )
        for size1 in range(1, size + 1):
            proof = consistency_proof(size1, size, sub)
            verify_consistency(size1, size, proof, roots[size1], roots[size])


def test_error_names_what_did_not_match() -> None:
    sub = subtree_of(LEAF_HASHES)
    proof = inclusion_proof(3, 8, sub)
    wrong_root = bytes(32)
    with pytest.raises(VerificationError, match=r"root: expected 0{64}, got [0-9a-f]{64}"):
        verify_inclusion(3, 8, LEAF_HASHES[3], proof, wrong_root)


def test_wire_forms_round_trip_and_are_strict() -> None:
    sub = subtree_of(LEAF_HASHES)
    inc = InclusionProof(2, 7, tuple(inclusion_proof(2, 7, sub)))
    assert InclusionProof.from_dict(json.loads(json.dumps(inc.to_dict()))) == inc
    con = ConsistencyProof(3, 7, tuple(consistency_proof(3, 7, sub)))
    assert ConsistencyProof.from_dict(con.to_dict()) == con
    con.verify(root_at(3, sub), root_at(7, sub))
    bad: list[object] = [
        {**inc.to_dict(), "extra": 1},
        {**inc.to_dict(), "leaf_index": -1},
        {**inc.to_dict(), "leaf_index": True},
        {**inc.to_dict(), "path": ["AB" * 32]},
        {**inc.to_dict(), "path": [1]},
        [],
    ]
    for data in bad:
        with pytest.raises(VerificationError):
            InclusionProof.from_dict(data)


def _tree(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_inclusion_property(case: tuple[int, int]) -> None:
    size, index = case
    hashes = _tree(size)
    sub = subtree_of(hashes)
    root = root_from_leaf_hashes(hashes)
    assert root_at(size, sub) == root
    proof = inclusion_proof(index, size, sub)
    verify_inclusion(index, size, hashes[index], proof, root)
    for i, p in enumerate(proof):
        mutated = list(proof)
        mutated[i] = bytes([p[0] ^ 1]) + p[1:]
        with pytest.raises(VerificationError):
            verify_inclusion(index, size, hashes[index], mutated, root)
    with pytest.raises(VerificationError):
        verify_inclusion(index, size, hashes[index], proof[:-1] if proof else [root], root)
    other = (index + 1) % size
    if other != index:
        with pytest.raises(VerificationError):
            verify_inclusion(other, size, hashes[index], proof, root)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))))
def test_consistency_property(case: tuple[int, int]) -> None:
    size1, size2 = case
    hashes = _tree(size2)
    sub = subtree_of(hashes)
    root1, root2 = root_from_leaf_hashes(hashes[:size1]), root_from_leaf_hashes(hashes)
    proof = consistency_proof(size1, size2, sub)
    verify_consistency(size1, size2, proof, root1, root2)
    for i, p in enumerate(proof):
        mutated = list(proof)
        mutated[i] = p[:-1] + bytes([p[-1] ^ 0x80])
        with pytest.raises(VerificationError):
            verify_consistency(size1, size2, mutated, root1, root2)
    with pytest.raises(VerificationError):
        verify_consistency(size1, size2, proof, root2 if size1 != size2 else EMPTY_ROOT, root2)
