"""oblivio-smt-v1 (DESIGN.md §6, §15): batch updates, proofs, and the attacks a verifier must
reject. Property tests run over random key sets, including keys that share long prefixes."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oblivio.core import smt as smt_module
from oblivio.core.canonical import canonical_json, parse_json
from oblivio.core.errors import InvalidInputError, VerificationError
from oblivio.core.smt import (
    EMPTY,
    SmtInner,
    SmtLeaf,
    SmtNode,
    SmtProof,
    SmtStub,
    SparseMerkleTree,
    leaf_hash,
    node_hash,
    record_hash,
    root_from_leaves,
    smt_key,
    subtree_from_leaves,
    verify_inclusion,
    verify_non_inclusion,
)


def _key_with_prefix(prefix_bits: int, prefix_len: int, tail: bytes) -> bytes:
    """A 32-byte key whose first ``prefix_len`` bits are ``prefix_bits``, the rest from ``tail``."""
    rest = int.from_bytes(tail, "big") & ((1 << (256 - prefix_len)) - 1)
    return ((prefix_bits << (256 - prefix_len)) | rest).to_bytes(32, "big")


# Keys drawn either freely or under one of a few long shared prefixes (up to 250 bits), so that
# compaction is exercised deep in the tree and at the last bits.
_PREFIX_LEN = st.sampled_from([0, 1, 7, 8, 9, 63, 128, 200, 250, 255])
keys = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.tuples(_PREFIX_LEN, st.binary(min_size=32, max_size=32)).map(
        lambda t: (
            _key_with_prefix(0x5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A >> max(0, 128 - t[0]), t[0], t[1])
            if t[0] <= 128
            else _key_with_prefix((1 << t[0]) // 3, t[0], t[1])
        )
    ),
)
values = st.binary(min_size=32, max_size=32)
key_sets = st.dictionaries(keys, values, max_size=40)


def _build(leaves: dict[bytes, bytes]) -> SparseMerkleTree:
    tree, _ = SparseMerkleTree().apply(leaves, 1)
    return tree


def test_empty_tree() -> None:
    tree = SparseMerkleTree()
    assert tree.root == EMPTY == root_from_leaves({})
    key = bytes(range(32))
    proof = tree.prove(key)
    assert proof.to_dict() == {
        "depth": 0,
        "bitmap": "",
        "siblings": [],
        "terminal": {"empty": True},
    }
    verify_non_inclusion(EMPTY, key, proof)


def test_single_leaf_is_the_root() -> None:
    key, value = bytes([0x80] * 32), bytes([7] * 32)
    tree = _build({key: value})
    assert tree.root == leaf_hash(key, value)
    verify_inclusion(tree.root, key, value, tree.prove(key))


def test_two_leaves_split_at_first_differing_bit() -> None:
    # Keys share their first 3 bits (101) and differ at bit 3.
    a = bytes([0b10100000]) + bytes(31)
    b = bytes([0b10110000]) + bytes(31)
    va, vb = bytes([1] * 32), bytes([2] * 32)
    tree = _build({a: va, b: vb})
    inner = node_hash(leaf_hash(a, va), leaf_hash(b, vb))
    expected = node_hash(EMPTY, node_hash(node_hash(EMPTY, inner), EMPTY))
    assert tree.root == expected == root_from_leaves({a: va, b: vb})
    proof = tree.prove(a)
    assert proof.depth == 4
    assert proof.bitmap == bytes([0b00010000])
    assert proof.siblings == (leaf_hash(b, vb),)


def test_key_and_record_hash() -> None:
    artifact_id = "ab" * 32
    assert smt_key(artifact_id) == __import__("hashlib").sha256(bytes.fromhex(artifact_id)).digest()
    record = {"state": "TOMBSTONE", "forget_event_hash": "00" * 32, "level": 2}
    assert record_hash(record) == __import__("hashlib").sha256(canonical_json(record)).digest()
    with pytest.raises(VerificationError):
        smt_key("AB" * 32)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key_sets, st.lists(st.tuples(key_sets, st.lists(keys, max_size=10)), max_size=4))
def test_batches_equal_rebuild_and_every_proof_verifies(
    initial: dict[bytes, bytes], batches: list[tuple[dict[bytes, bytes], list[bytes]]]
) -> None:
    tree = _build(initial)
    leaves = dict(initial)
    assert tree.root == root_from_leaves(leaves)
    version = 1
    for sets, deletes in batches:
        updates: dict[bytes, bytes | None] = dict(sets)
        for key in deletes + list(leaves)[:2]:
            updates[key] = None
        version += 1
        tree, result = tree.apply(updates, version)
        for key, value in updates.items():
            if value is None:
                leaves.pop(key, None)
            else:
                leaves[key] = value
        assert tree.root == root_from_leaves(leaves) == result.root
        assert sorted(tree.leaves()) == sorted(leaves.items())
    for key, value in leaves.items():
        verify_inclusion(tree.root, key, value, tree.prove(key))
        assert tree.get(key) == value


@settings(max_examples=100, deadline=None)
@given(key_sets, keys)
def test_non_inclusion_proofs_verify_for_absent_keys(
    leaves: dict[bytes, bytes], key: bytes
) -> None:
    tree = _build(leaves)
    proof = tree.prove(key)
    if key in leaves:
        verify_inclusion(tree.root, key, leaves[key], proof)
        with pytest.raises(VerificationError):
            verify_non_inclusion(tree.root, key, proof)
    else:
        verify_non_inclusion(tree.root, key, proof)
        assert tree.get(key) is None


def _flip_each_byte(data: bytes) -> list[bytes]:
    return [data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :] for i in range(len(data))]


def _mutations(proof: SmtProof) -> list[SmtProof]:
    """Every single-byte change to every binary field, and ±1 on the depth."""
    out: list[SmtProof] = []
    for b in _flip_each_byte(proof.bitmap):
        out.append(
            SmtProof(proof.depth, b, proof.siblings, proof.terminal_key, proof.terminal_value_hash)
        )
    for i, sibling in enumerate(proof.siblings):
        for s in _flip_each_byte(sibling):
            siblings = (*proof.siblings[:i], s, *proof.siblings[i + 1 :])
            out.append(
                SmtProof(
                    proof.depth,
                    proof.bitmap,
                    siblings,
                    proof.terminal_key,
                    proof.terminal_value_hash,
                )
            )
    if proof.terminal_key is not None and proof.terminal_value_hash is not None:
        for k in _flip_each_byte(proof.terminal_key):
            out.append(
                SmtProof(proof.depth, proof.bitmap, proof.siblings, k, proof.terminal_value_hash)
            )
        for v in _flip_each_byte(proof.terminal_value_hash):
            out.append(SmtProof(proof.depth, proof.bitmap, proof.siblings, proof.terminal_key, v))
    for d in (proof.depth - 1, proof.depth + 1):
        if 0 <= d <= 256:
            out.append(
                SmtProof(
                    d, proof.bitmap, proof.siblings, proof.terminal_key, proof.terminal_value_hash
                )
            )
    return out


def _verifies(root: bytes, key: bytes, value: bytes | None, proof_json: bytes) -> bool:
    try:
        proof = SmtProof.from_dict(parse_json(proof_json))
        if value is None:
            verify_non_inclusion(root, key, proof)
        else:
            verify_inclusion(root, key, value, proof)
    except (VerificationError, InvalidInputError):
        return False
    return True


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key_sets.filter(lambda d: len(d) >= 1), keys)
def test_any_single_byte_change_fails(leaves: dict[bytes, bytes], absent: bytes) -> None:
    tree = _build(leaves)
    root = tree.root
    key, value = next(iter(leaves.items()))
    cases: list[tuple[bytes, bytes | None]] = [(key, value)]
    if absent not in leaves:
        cases.append((absent, None))
    for k, v in cases:
        proof = tree.prove(k)
        text = canonical_json(proof.to_dict())
        assert _verifies(root, k, v, text)
        for mutated in _mutations(proof):
            assert not _verifies(root, k, v, canonical_json(mutated.to_dict())), mutated
        for mutated_text in _flip_each_byte(text):
            assert not _verifies(root, k, v, mutated_text), mutated_text
        for r in _flip_each_byte(root):
            assert not _verifies(r, k, v, text)
        if v is not None:
            # The leaf itself: another key or another value under the same proof.
            for kk in _flip_each_byte(k):
                assert not _verifies(root, kk, v, text)
            for vv in _flip_each_byte(v):
                assert not _verifies(root, k, vv, text)


def _attacks(tree: SparseMerkleTree, key: bytes, others: list[bytes]) -> list[SmtProof]:
    """Proofs a dishonest prover might offer to show a present ``key`` absent."""
    honest = tree.prove(key)
    out: list[SmtProof] = []
    # A truncated path ending in EMPTY at every shallower depth.
    for d in range(honest.depth + 1):
        bits = int.from_bytes(honest.bitmap, "big") >> (-honest.depth % 8) if honest.depth else 0
        bits >>= honest.depth - d
        count = bits.bit_count()
        bitmap = (bits << (-d % 8)).to_bytes((d + 7) // 8, "big")
        out.append(SmtProof(d, bitmap, honest.siblings[:count], None, None))
    # The honest path with an EMPTY terminal.
    out.append(SmtProof(honest.depth, honest.bitmap, honest.siblings, None, None))
    # Another key's proof, as is.
    for other in others:
        out.append(tree.prove(other))
    # The honest path ending in another leaf (another prefix).
    for other in others:
        value = tree.get(other)
        assert value is not None
        out.append(SmtProof(honest.depth, honest.bitmap, honest.siblings, other, value))
    return out


@settings(max_examples=60, deadline=None)
@given(key_sets.filter(lambda d: len(d) >= 2))
def test_present_key_cannot_be_shown_absent(leaves: dict[bytes, bytes]) -> None:
    tree = _build(leaves)
    present = list(leaves)
    for key in present[:3]:
        for proof in _attacks(tree, key, [k for k in present if k != key][:3]):
            with pytest.raises(VerificationError):
                verify_non_inclusion(tree.root, key, proof)


def test_deep_shared_prefix_pair() -> None:
    # Two keys that differ only in their last bit sit at depth 256.
    a = bytes(31) + b"\x00"
    b = bytes(31) + b"\x01"
    tree = _build({a: bytes([1] * 32), b: bytes([2] * 32)})
    proof = tree.prove(a)
    assert proof.depth == 256
    assert len(proof.siblings) == 1
    verify_inclusion(tree.root, a, bytes([1] * 32), proof)
    c = bytes(31) + b"\x02"  # shares 254 bits, absent
    verify_non_inclusion(tree.root, c, tree.prove(c))


def test_versions_share_nodes_and_old_trees_still_prove() -> None:
    rng = random.Random(7)  # noqa: S311 - reproducible test keys, not secrets
    leaves = {rng.randbytes(32): rng.randbytes(32) for _ in range(200)}
    t1 = _build(leaves)
    k = next(iter(leaves))
    t2, result = t1.apply({k: None}, 2)
    assert result.changes == 1
    verify_inclusion(t1.root, k, leaves[k], t1.prove(k))
    verify_non_inclusion(t2.root, k, t2.prove(k))
    # The batch rewrote only the path to the removed leaf.
    assert len(result.rows()) <= t1.prove(k).depth
    assert all(row[2] == 2 for row in result.rows())


def test_version_must_increase() -> None:
    tree = _build({bytes(32): bytes(32)})
    with pytest.raises(ValueError, match="not above"):
        tree.apply({}, 1)


def test_proof_wire_form_is_strict() -> None:
    tree = _build({bytes([i]) * 32: bytes([i]) * 32 for i in range(1, 9)})
    proof = tree.prove(bytes([3]) * 32)
    data = proof.to_dict()
    assert SmtProof.from_dict(json.loads(json.dumps(data))) == proof
    bad: list[object] = [
        {**data, "extra": 1},
        {**data, "depth": 257},
        {**data, "depth": "3"},
        {**data, "bitmap": data["bitmap"].upper() or "00"},
        {**data, "terminal": {"empty": False}},
        {**data, "terminal": {"leaf": {"key": "00" * 32}}},
        {**data, "siblings": "00"},
    ]
    for b in bad:
        with pytest.raises(VerificationError):
            SmtProof.from_dict(b)


def test_error_names_expected_and_got() -> None:
    tree = _build({bytes([1]) * 32: bytes([1]) * 32, bytes([2]) * 32: bytes([2]) * 32})
    proof = tree.prove(bytes([1]) * 32)
    with pytest.raises(VerificationError, match=r"expected value hash 0202.*got 0101"):
        verify_inclusion(tree.root, bytes([1]) * 32, bytes([2]) * 32, proof)
    with pytest.raises(VerificationError, match=f"expected root {'00' * 32}, got"):
        verify_inclusion(EMPTY, bytes([1]) * 32, bytes([1]) * 32, proof)


class _CountingSha256:
    """Counts SHA-256 computations made by core/smt.py (the real hash, counted)."""

    def __init__(self) -> None:
        self.calls = 0
        self._real = hashlib.sha256

    def __call__(self, data: bytes = b"") -> Any:
        self.calls += 1
        return self._real(data)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key_sets, key_sets, st.lists(keys, max_size=6))
def test_each_changed_node_is_hashed_once_per_batch(
    monkeypatch: pytest.MonkeyPatch,
    initial: dict[bytes, bytes],
    sets: dict[bytes, bytes],
    deletes: list[bytes],
) -> None:
    tree = _build(initial)
    updates: dict[bytes, bytes | None] = {**sets, **dict.fromkeys(deletes + list(initial)[:3])}
    counter = _CountingSha256()
    with monkeypatch.context() as patch:
        patch.setattr(smt_module, "_sha256", counter)
        new_tree, result = tree.apply(updates, 2)
    # Every node the batch made is hashed exactly once: one hash per written row, none more.
    assert counter.calls == len(result.rows())
    assert new_tree.root == root_from_leaves(dict(new_tree.leaves()))


def _stubbed(node: SmtNode | None, depth: int, at: int, loads: list[int]) -> SmtNode | None:
    """A copy of the subtree ``node`` whose subtrees at depth ``at`` are stubs that load the
    original (counting loads), as a store hands out a tree it has not read yet."""
    if node is None:
        return None
    if depth == at:
        assert type(node) is SmtLeaf or type(node) is SmtInner
        original = node

        def load(_: SmtStub) -> SmtLeaf | SmtInner:
            loads.append(depth)
            return original

        return SmtStub(node.hash, node.version, depth, 0, load)
    if type(node) is SmtLeaf:
        return node
    assert type(node) is SmtInner
    return SmtInner(
        node.hash,
        _stubbed(node.left, depth + 1, at, loads),
        _stubbed(node.right, depth + 1, at, loads),
        node.version,
    )


@settings(max_examples=150, deadline=None)
@given(key_sets, key_sets, st.lists(keys, max_size=8), st.integers(0, 6))
def test_stubs_load_on_demand_and_change_nothing(
    initial: dict[bytes, bytes], sets: dict[bytes, bytes], deletes: list[bytes], at: int
) -> None:
    full = _build(initial)
    loads: list[int] = []
    lazy = SparseMerkleTree(_stubbed(full.root_node, 0, at, loads), 1)
    assert lazy.root == full.root
    assert not loads
    # Removals can leave a stub's sibling empty: when the stub is a lone leaf, compaction moves
    # it up, which the batch can only see by loading the stub.
    updates: dict[bytes, bytes | None] = {**sets, **dict.fromkeys(deletes + list(initial)[:3])}
    new_lazy, _ = lazy.apply(updates, 2)
    new_full, _ = full.apply(updates, 2)
    assert new_lazy.root == new_full.root == root_from_leaves(dict(new_full.leaves()))
    for key in [*initial, *sets, *deletes][:10]:
        assert lazy.prove(key) == full.prove(key)
        assert new_lazy.prove(key) == new_full.prove(key)
        assert new_lazy.get(key) == new_full.get(key)
    assert sorted(new_lazy.leaves()) == sorted(new_full.leaves())


def test_lone_stub_leaf_moves_up_when_its_sibling_empties() -> None:
    # Regression: a stub standing for a single leaf must be loaded when its sibling empties,
    # else the batch would hash it as a one-child node instead of moving the leaf up.
    a = bytes([0b00000000]) + bytes(31)
    b = bytes([0b01000000]) + bytes(31)
    full = _build({a: bytes([1]) * 32, b: bytes([2]) * 32})
    loads: list[int] = []
    lazy = SparseMerkleTree(_stubbed(full.root_node, 0, 2, loads), 1)
    new, _ = lazy.apply({b: None}, 2)
    assert loads
    assert new.root == leaf_hash(a, bytes([1]) * 32) == root_from_leaves({a: bytes([1]) * 32})


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({b"\x01" * 31: bytes(32)}, "leaf key: expected 32 bytes, got 31"),
        ({bytes(32): b"\x01" * 33}, "value hash: expected 32 bytes, got 33"),
        ({bytes(32): b""}, "value hash: expected 32 bytes, got 0"),
        ({bytes(32): None, b"\x02" * 32: bytes(32), b"\x03" * 8: None}, "got 8"),
    ],
)
def test_malformed_updates_are_refused(updates: dict[bytes, bytes | None], message: str) -> None:
    tree = _build({bytes([9]) * 32: bytes(32)})
    with pytest.raises(ValueError, match=message):
        tree.apply(updates, 2)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([0, 1, 7, 12, 63]), st.binary(min_size=32, max_size=32), key_sets)
def test_subtree_from_leaves_equals_the_subtree_of_the_whole_tree(
    depth: int, prefix: bytes, leaves: dict[bytes, bytes]
) -> None:
    # Leaves under one depth-``depth`` prefix: the subtree built alone (as a store rebuilds a
    # group) is the node at that position of the tree built by a batch, hash and shape.
    under = (
        {
            _key_with_prefix(int.from_bytes(prefix, "big") >> (256 - depth), depth, k): v
            for k, v in leaves.items()
        }
        if depth
        else dict(leaves)
    )
    alone = subtree_from_leaves(sorted(under.items()), depth, 1)
    node = _build(under).root_node
    bits = int.from_bytes(prefix, "big") >> (256 - depth) if depth else 0
    for d in range(depth):
        if not isinstance(node, SmtInner):
            break
        node = node.right if (bits >> (depth - 1 - d)) & 1 else node.left
    if len(under) < 2:
        assert (alone is None) == (not under)
        assert alone is None or alone.hash == leaf_hash(*next(iter(under.items())))
        return
    assert alone is not None
    assert node is not None
    assert alone.hash == node.hash
