"""RFC 9162 Merkle tree algorithms for the Forget Event Log (DESIGN.md §7, §15; seed 000 §4.1).

Pure functions, no I/O. Hashing is RFC 9162 §2.1.1: ``leaf = H(0x00 || entry)``,
``node = H(0x01 || left || right)``, and the root of the empty tree is ``H("")``.

Proof *generation* reads the tree through an accessor ``subtree(level, index)`` that returns the
hash of the perfect subtree over leaves ``[index * 2**level, (index + 1) * 2**level)``; level 0
is the leaf hashes. A store keeps those hashes, so a proof costs O(log n) reads at any size.

Proof *verification* follows RFC 9162 §2.1.3.2 and §2.1.4.2, with the edge rules of the
reference Go verifier (transparency-dev/merkle ``proof``) that the published probes expect: a
consistency proof from size 0 is rejected, ``size1 == size2`` needs an empty proof and equal
roots, and a leaf hash that is not 32 bytes is rejected.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from oblivio.core.errors import VerificationError
from oblivio.core.hashing import HASH_SIZE, LEAF_PREFIX, NODE_PREFIX, parse_hex_digest

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH of the empty list (RFC 9162 §2.1.1)."""

SubtreeHash = Callable[[int, int], bytes]
"""``subtree(level, index)``: hash of the perfect subtree of ``2**level`` leaves at ``index``."""

_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 leaf hash ``H(0x00 || entry)``."""
    return _sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash ``H(0x01 || left || right)``."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly less than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over a list of leaf hashes (RFC 9162 §2.1.1), bottom-up in O(n)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            # An odd last node is promoted unchanged: RFC 9162 splits at the largest power of
            # two, so the right edge of every level is a smaller subtree, never a duplicate.
            paired.append(level[-1])
        level = paired
    return level[0]


def range_hash(start: int, end: int, subtree: SubtreeHash) -> bytes:
    """MTH of leaves ``[start, end)`` where ``start`` is aligned to a power of two ≥ the range.

    Splits RFC 9162-style: the left part is the largest perfect subtree, read from ``subtree``.
    """
    size = end - start
    if size <= 0:
        raise ValueError(f"range_hash: empty range [{start}, {end})")
    if size & (size - 1) == 0:
        level = size.bit_length() - 1
        return subtree(level, start >> level)
    k = _largest_power_of_two_below(size)
    return node_hash(subtree(k.bit_length() - 1, start // k), range_hash(start + k, end, subtree))


def root_at(size: int, subtree: SubtreeHash) -> bytes:
    """The root of the first ``size`` leaves (``EMPTY_ROOT`` for 0)."""
    if size < 0:
        raise ValueError(f"tree size must be >= 0, got {size}")
    return EMPTY_ROOT if size == 0 else range_hash(0, size, subtree)


def inclusion_proof(index: int, size: int, subtree: SubtreeHash) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[size]), bottom-up.

    Raises ValueError unless ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise ValueError(f"inclusion proof: need 0 <= index < size, got index {index}, size {size}")
    path: list[bytes] = []
    start, end, m = 0, size, index
    # Walk down from the root, recording the sibling of each step; reversed at the end.
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if m < k:
            path.append(range_hash(start + k, end, subtree))
            end = start + k
        else:
            path.append(subtree(k.bit_length() - 1, start // k))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_proof(size1: int, size2: int, subtree: SubtreeHash) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(size1, D[size2]), bottom-up; empty when the sizes are equal.

    Raises ValueError unless ``0 < size1 <= size2``.
    """
    if not 0 < size1 <= size2:
        raise ValueError(f"consistency proof: need 0 < size1 <= size2, got {size1}, {size2}")
    path: list[bytes] = []
    start, end, m, complete = 0, size2, size1, True
    while m != end - start:
        k = _largest_power_of_two_below(end - start)
        if m <= k:
            path.append(range_hash(start + k, end, subtree))
            end = start + k
        else:
            path.append(subtree(k.bit_length() - 1, start // k))
            start, m, complete = start + k, m - k, False
    if not complete:
        path.append(range_hash(start, end, subtree))
    path.reverse()
    return path


def _check_equal(what: str, expected: bytes, got: bytes) -> None:
    if not hmac.compare_digest(expected, got):
        raise VerificationError(f"{what}: expected {expected.hex()}, got {got.hex()}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2 steps 1-5 without the final root comparison: the root the proof implies.

    Raises VerificationError when the proof has the wrong shape for ``index`` and ``size``.
    """
    if len(leaf) != HASH_SIZE:
        raise VerificationError(f"log inclusion: leaf hash must be 32 bytes, got {len(leaf)}")
    if not 0 <= index < size:
        raise VerificationError(
            f"log inclusion: leaf index {index} is outside a tree of size {size}"
        )
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise VerificationError(
                f"log inclusion: proof too long for index {index} in size {size} "
                f"({len(proof)} hashes)"
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(
            f"log inclusion: proof too short for index {index} in size {size} ({len(proof)} hashes)"
        )
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf hash) is at ``index`` in the tree of ``size`` with ``root``.

    RFC 9162 §2.1.3.2. Raises VerificationError naming what did not match.
    """
    computed = root_from_inclusion_proof(index, size, leaf, proof)
    _check_equal(f"log inclusion of leaf {index} in size {size}: root", root, computed)


def _consistency_edge_case(
    size1: int, size2: int, proof: Sequence[bytes], roots: tuple[bytes, bytes], what: str
) -> bool:
    """Apply the edge rules; return True when they settle the check (equal sizes, verified)."""
    if size1 < 0 or size2 < 0:
        raise VerificationError(f"{what}: sizes must be non-negative")
    if size2 < size1:
        raise VerificationError(f"{what}: second size is smaller than the first")
    if size1 == 0:
        raise VerificationError(f"{what}: a consistency proof from the empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise VerificationError(
                f"{what}: equal sizes need an empty proof, got {len(proof)} hashes"
            )
        _check_equal(f"{what}: root", roots[0], roots[1])
        return True
    if not proof:
        raise VerificationError(f"{what}: empty proof")
    return False


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` with ``root2`` extends the one of ``size1`` with ``root1``.

    RFC 9162 §2.1.4.2, with the reference verifier's edge rules (module docstring).
    Raises VerificationError naming what did not match.
    """
    what = f"log consistency {size1} -> {size2}"
    if _consistency_edge_case(size1, size2, proof, (root1, root2), what):
        return
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError(f"{what}: proof too long ({len(proof)} hashes)")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(f"{what}: proof too short ({len(proof)} hashes)")
    _check_equal(f"{what}: first root", root1, fr)
    _check_equal(f"{what}: second root", root2, sr)


def _parse_size(data: dict[str, Any], field: str, what: str) -> int:
    value = data.get(field)
    if type(value) is not int or value < 0:
        raise VerificationError(f"{what}: {field!r} must be a non-negative integer, got {value!r}")
    return value


def _parse_path(data: dict[str, Any], what: str) -> tuple[bytes, ...]:
    path = data.get("path")
    if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
        raise VerificationError(f"{what}: 'path' must be a list of hex hashes")
    try:
        return tuple(parse_hex_digest(p, f"{what} path") for p in path)
    except ValueError as e:
        raise VerificationError(str(e)) from e


def _check_fields(data: object, fields: set[str], what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise VerificationError(f"{what}: expected a JSON object")
    if set(data) != fields:
        raise VerificationError(f"{what}: expected fields {sorted(fields)}, got {sorted(data)}")
    return data


@dataclass(frozen=True)
class InclusionProof:
    """A log inclusion proof as served (DESIGN.md §15)."""

    leaf_index: int
    tree_size: int
    path: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        """The wire form ``{"leaf_index", "tree_size", "path"}`` with hex hashes."""
        return {
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "path": [p.hex() for p in self.path],
        }

    @classmethod
    def from_dict(cls, data: object) -> InclusionProof:
        """Parse the wire form strictly; raise VerificationError naming the bad field."""
        what = "log inclusion proof"
        d = _check_fields(data, {"leaf_index", "tree_size", "path"}, what)
        return cls(
            _parse_size(d, "leaf_index", what),
            _parse_size(d, "tree_size", what),
            _parse_path(d, what),
        )

    def verify(self, leaf: bytes, root: bytes) -> None:
        """``verify_inclusion`` with this proof's index, size and path."""
        verify_inclusion(self.leaf_index, self.tree_size, leaf, self.path, root)


@dataclass(frozen=True)
class ConsistencyProof:
    """A log consistency proof as served (DESIGN.md §15)."""

    first: int
    second: int
    path: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        """The wire form ``{"first", "second", "path"}`` with hex hashes."""
        return {"first": self.first, "second": self.second, "path": [p.hex() for p in self.path]}

    @classmethod
    def from_dict(cls, data: object) -> ConsistencyProof:
        """Parse the wire form strictly; raise VerificationError naming the bad field."""
        what = "log consistency proof"
        d = _check_fields(data, {"first", "second", "path"}, what)
        return cls(
            _parse_size(d, "first", what), _parse_size(d, "second", what), _parse_path(d, what)
        )

    def verify(self, root1: bytes, root2: bytes) -> None:
        """``verify_consistency`` with this proof's sizes and path."""
        verify_consistency(self.first, self.second, self.path, root1, root2)
