"""The key store's sparse Merkle tree, *spec* ``oblivio-smt-v1`` (DESIGN.md §6, §15; seed 000 §3).

- Leaf key ``k = H(artifactID bytes)``; bit ``i`` of ``k`` is bit ``7 - i mod 8`` of byte
  ``i div 8`` (most significant first); 0 goes left.
- ``leaf_hash = H(0x00 || k || value_hash)`` with ``value_hash = H(JCS(record))``;
  ``node_hash = H(0x01 || left || right)``; ``EMPTY`` is 32 zero bytes.
- Compaction: a subtree with no leaf is ``EMPTY``, a subtree with exactly one leaf is that leaf's
  hash (the leaf sits at the shortest prefix that is its alone), any other subtree is the
  ``node_hash`` of its halves. The empty tree's root is ``EMPTY``.

The in-memory tree is persistent: applying a batch returns a new tree that shares every
unchanged node with the old one and hashes each changed node exactly once. A store keeps
versions of it (``store/smt_nodes.py``) and may hand it subtrees as stubs (``SmtStub``), loaded
when a batch or a proof first looks below them.
Verification (``verify_inclusion``, ``verify_non_inclusion``) needs nothing but this module.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from oblivio.core.canonical import JsonValue, canonical_json
from oblivio.core.errors import VerificationError
from oblivio.core.hashing import HASH_SIZE, LEAF_PREFIX, NODE_PREFIX, parse_hex_digest

SMT_VERSION = "oblivio-smt-v1"
KEY_BITS = 256
EMPTY = bytes(HASH_SIZE)
"""The hash of an empty subtree, and the root of the empty tree."""

_sha256 = hashlib.sha256


def smt_key(artifact_id: str) -> bytes:
    """The leaf key of an artifact: ``H(artifactID bytes)`` of its 64-hex-character id."""
    try:
        raw = parse_hex_digest(artifact_id, "artifact id")
    except ValueError as e:
        raise VerificationError(str(e)) from e
    return _sha256(raw).digest()


def record_hash(record: JsonValue) -> bytes:
    """``H(JCS(record))``, the value a leaf binds for a leaf record (DESIGN.md §6)."""
    return _sha256(canonical_json(record)).digest()


def leaf_hash(key: bytes, value_hash: bytes) -> bytes:
    """``H(0x00 || key || value_hash)``."""
    return _sha256(LEAF_PREFIX + key + value_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``H(0x01 || left || right)``; an empty child is ``EMPTY``."""
    return _sha256(NODE_PREFIX + left + right).digest()


def key_bit(key: bytes, i: int) -> int:
    """Bit ``i`` of ``key``, most significant first (DESIGN.md §6)."""
    return (key[i >> 3] >> (7 - (i & 7))) & 1


def _check_key(key: bytes, what: str) -> None:
    if len(key) != HASH_SIZE:
        raise ValueError(f"{what}: expected 32 bytes, got {len(key)}")


def root_from_leaves(leaves: Mapping[bytes, bytes]) -> bytes:
    """The root of the tree holding ``leaves`` (key → value_hash), computed from scratch.

    A direct transcription of the compaction rule, used to cross-check batch updates.
    """
    for key, value in leaves.items():
        _check_key(key, "leaf key")
        _check_key(value, "value hash")

    def subtree(depth: int, keys: list[bytes]) -> bytes:
        if not keys:
            return EMPTY
        if len(keys) == 1:
            return leaf_hash(keys[0], leaves[keys[0]])
        left = [k for k in keys if key_bit(k, depth) == 0]
        right = [k for k in keys if key_bit(k, depth) == 1]
        return node_hash(subtree(depth + 1, left), subtree(depth + 1, right))

    return subtree(0, sorted(leaves))


class SmtLeaf:
    """A leaf of the in-memory tree: its key (also as an integer), value hash, hash and the
    version that made it. Its depth is where it sits, which a batch may change (compaction
    moves a leaf when its neighbourhood changes) without making a new leaf: the leaf's hash
    does not depend on its depth."""

    __slots__ = ("hash", "key", "kint", "value_hash", "version")

    def __init__(
        self, key: bytes, value_hash: bytes, version: int, kint: int | None = None
    ) -> None:
        self.key = key
        self.kint = int.from_bytes(key, "big") if kint is None else kint
        self.value_hash = value_hash
        self.hash = _sha256(LEAF_PREFIX + key + value_hash).digest()
        self.version = version


class SmtInner:
    """An interior node (at least two leaves below it); an empty child is ``None``."""

    __slots__ = ("hash", "left", "right", "version")

    def __init__(
        self, node_hash_: bytes, left: SmtNode | None, right: SmtNode | None, version: int
    ) -> None:
        self.hash = node_hash_
        self.left = left
        self.right = right
        self.version = version


class SmtStub:
    """A stored subtree that is not in memory yet: its hash and version (all a parent needs)
    and its position; ``load`` materialises it (through the store that made the stub).

    Stubs let a store open a large tree without reading it: every traversal in this module
    loads a stub when it has to look below it, and a stub and its loaded subtree stand for the
    same nodes (same hash, same version), so replacing one by the other changes nothing."""

    __slots__ = ("depth", "hash", "loader", "prefix", "version")

    def __init__(
        self,
        hash_: bytes,
        version: int,
        depth: int,
        prefix: int,
        loader: Callable[[SmtStub], SmtLeaf | SmtInner],
    ) -> None:
        self.hash = hash_
        self.version = version
        self.depth = depth
        self.prefix = prefix
        self.loader = loader

    def load(self) -> SmtLeaf | SmtInner:
        """The stored subtree (its hashes checked by the loader)."""
        return self.loader(self)


SmtNode = SmtLeaf | SmtInner | SmtStub


NodeRow = tuple[int, int, int, bytes, int | None, int | None, bytes | None, bytes | None]
"""One node a batch made: ``(depth, prefix, version, hash, left_version, right_version, key,
value_hash)``. The position is ``depth`` and ``prefix``, the first ``depth`` bits of the path as
an integer; ``version`` is the batch that made it. Interior rows name their children's versions
(``None`` = empty child) and no key; leaf rows carry the key and value hash."""


class BatchResult:
    """What one batch changed: the new root, the number of updates, and (walked on demand) the
    nodes it made."""

    __slots__ = ("_root_node", "changes", "root", "version")

    def __init__(self, version: int, root_node: SmtNode | None, changes: int) -> None:
        self.version = version
        self._root_node = root_node
        self.root = EMPTY if root_node is None else root_node.hash
        self.changes = changes

    def rows(self) -> list[NodeRow]:
        """Every node the batch made, each hashed once by it (they hang under changed nodes,
        so the walk visits only those). A leaf that only moved is not one of them."""
        with gc_paused():
            return list(_new_rows(self._root_node, self.version))


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around a batch, then freeze what exists.

    A batch allocates many small acyclic objects, and the tree they join can hold millions of
    nodes: a collection pass in the middle, or one triggered right after, would walk the whole
    tree for nothing (the tree has no reference cycles and is freed by reference counting).
    ``gc.freeze`` moves the surviving objects out of the collector's generations, so later
    passes never rescan them; objects that die are still freed at once by reference counting.
    The cost of the trade: cyclic garbage that happens to be pending at that moment (anywhere in
    the process) is never collected; a node process makes little, and it is bounded per batch.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


class _Batch:
    """One batch update: recursion state shared by its steps."""

    __slots__ = ("items", "kints", "version")

    def __init__(self, items: list[tuple[int, bytes, bytes | None]], version: int) -> None:
        self.items = items
        self.kints = [item[0] for item in items]
        self.version = version

    def update(self, node: SmtNode | None, depth: int, lo: int, hi: int) -> SmtNode | None:
        """The new subtree at ``depth`` (on the path of updates ``[lo, hi)``) replacing
        ``node``; unchanged subtrees are returned as they are.

        The updates share their first ``split`` bits (the first bit where the smallest and the
        largest key differ), so the walk goes down to depth ``split`` in a loop, divides the
        updates there, and rehashes the path it walked on the way back."""
        if hi - lo == 1:
            return self.update_one(node, depth, lo)
        kints = self.kints
        first = kints[lo]
        split = KEY_BITS - (first ^ kints[hi - 1]).bit_length()
        start = node
        path: list[SmtInner] = []
        push = path.append
        d = depth
        while True:
            while type(node) is SmtInner and d < split:
                push(node)
                node = node.right if (first >> (KEY_BITS - 1 - d)) & 1 else node.left
                d += 1
            if type(node) is not SmtStub:
                break
            node = node.load()
        new: SmtNode | None
        if type(node) is SmtInner:
            shift = KEY_BITS - 1 - d
            mid = bisect_left(kints, ((first >> shift) | 1) << shift, lo, hi)
            old_left = node.left
            old_right = node.right
            left = (
                self.update_one(old_left, d + 1, lo)
                if mid - lo == 1
                else self.update(old_left, d + 1, lo, mid)
            )
            right = (
                self.update_one(old_right, d + 1, mid)
                if hi - mid == 1
                else self.update(old_right, d + 1, mid, hi)
            )
            if left is old_left and right is old_right:
                return start
            if left is not None and right is not None:
                new = SmtInner(
                    _sha256(NODE_PREFIX + left.hash + right.hash).digest(),
                    left,
                    right,
                    self.version,
                )
            else:
                new = self.join(d, left, right)
        else:
            new = self.build(node, d, lo, hi)
            if new is node:
                return start
        return self.rehash(path, d, first, new) if path else new

    def update_one(self, node: SmtNode | None, depth: int, index: int) -> SmtNode | None:
        """``update`` for a subtree that receives one update: walk down its path in a loop,
        rebuild the bottom with ``build_one``, and rehash the path on the way up (below the top
        levels of a large batch every update is alone in its subtree)."""
        kint = self.items[index][0]
        start = node
        path: list[SmtInner] = []
        push = path.append
        d = depth
        while True:
            while type(node) is SmtInner:
                push(node)
                node = node.right if (kint >> (KEY_BITS - 1 - d)) & 1 else node.left
                d += 1
            if type(node) is not SmtStub:
                break
            node = node.load()
        new = self.build_one(node, d, index)
        if new is node:
            return start
        return self.rehash(path, d, kint, new) if path else new

    def rehash(
        self, path: list[SmtInner], depth: int, kint: int, new: SmtNode | None
    ) -> SmtNode | None:
        """Replace the nodes of ``path`` (from ``depth - len(path)`` down to ``depth - 1``, on
        the path of ``kint``) over the new subtree ``new`` at ``depth``: the hot loop of a large
        batch, hence the local names."""
        version = self.version
        sha = _sha256
        prefix = NODE_PREFIX
        d = depth
        for inner in reversed(path):
            d -= 1
            if (kint >> (KEY_BITS - 1 - d)) & 1:
                left = inner.left
                if left is not None and new is not None:
                    new = SmtInner(sha(prefix + left.hash + new.hash).digest(), left, new, version)
                elif type(new) is SmtInner:
                    new = SmtInner(sha(prefix + EMPTY + new.hash).digest(), None, new, version)
                else:
                    new = self.join(d, left, new)
            else:
                right = inner.right
                if right is not None and new is not None:
                    new = SmtInner(
                        sha(prefix + new.hash + right.hash).digest(), new, right, version
                    )
                elif type(new) is SmtInner:
                    new = SmtInner(sha(prefix + new.hash + EMPTY).digest(), new, None, version)
                else:
                    new = self.join(d, new, right)
        return new

    def join(self, depth: int, left: SmtNode | None, right: SmtNode | None) -> SmtNode | None:
        """The node at ``depth`` over two new halves, applying the compaction rule: nothing
        over two empty halves, a lone leaf moves up, anything else is hashed once."""
        if left is None:
            if right is None:
                return None
            if type(right) is SmtStub:
                right = right.load()
            if type(right) is SmtLeaf:
                return right  # a lone leaf moves up, unchanged
            return SmtInner(
                _sha256(NODE_PREFIX + EMPTY + right.hash).digest(), None, right, self.version
            )
        if right is None:
            if type(left) is SmtStub:
                left = left.load()
            if type(left) is SmtLeaf:
                return left  # a lone leaf moves up, unchanged
            return SmtInner(
                _sha256(NODE_PREFIX + left.hash + EMPTY).digest(), left, None, self.version
            )
        return SmtInner(
            _sha256(NODE_PREFIX + left.hash + right.hash).digest(), left, right, self.version
        )

    def build(self, old: SmtNode | None, depth: int, lo: int, hi: int) -> SmtNode | None:
        """Rebuild a subtree that held at most one leaf (``old``) with updates ``[lo, hi)``."""
        if hi - lo == 1:
            return self.build_one(old, depth, lo)
        if old is not None and type(old) is not SmtLeaf:
            raise TypeError("SMT batch: build() is only called on a leaf or an empty subtree")
        version = self.version
        items = self.items
        # The old leaf stays (the same object) unless an update changes or removes it.
        j = hi if old is None else bisect_left(self.kints, old.kint, lo, hi)
        keep_old = old is not None and (j == hi or self.kints[j] != old.kint)
        leaves = [SmtLeaf(key, v, version, k) for k, key, v in items[lo:j] if v is not None]
        if old is not None:
            if keep_old:
                leaves.append(old)
            else:
                k, key, v = items[j]
                if v == old.value_hash:
                    leaves.append(old)
                elif v is not None:
                    leaves.append(SmtLeaf(key, v, version, k))
                j += 1
            leaves.extend(SmtLeaf(key, v, version, k) for k, key, v in items[j:hi] if v is not None)
        return _build_sorted(leaves, depth, version)

    def build_one(self, old: SmtNode | None, depth: int, index: int) -> SmtNode | None:
        """``build`` for the common case of one update, without the general machinery."""
        kint, key, value = self.items[index]
        version = self.version
        if old is None:
            return None if value is None else SmtLeaf(key, value, version, kint)
        if type(old) is not SmtLeaf:
            raise TypeError("SMT batch: build() is only called on a leaf or an empty subtree")
        if old.kint == kint:
            if value == old.value_hash:
                return old
            return None if value is None else SmtLeaf(key, value, version, kint)
        if value is None:
            return old  # removing a key that is not there
        # Two leaves: they split at their first differing bit, below a chain of one-child nodes.
        split = KEY_BITS - (kint ^ old.kint).bit_length()
        new = SmtLeaf(key, value, version, kint)
        moved = old  # moves down to depth split + 1, unchanged
        node: SmtNode
        if (kint >> (KEY_BITS - 1 - split)) & 1:
            node = SmtInner(
                _sha256(NODE_PREFIX + moved.hash + new.hash).digest(), moved, new, version
            )
        else:
            node = SmtInner(
                _sha256(NODE_PREFIX + new.hash + moved.hash).digest(), new, moved, version
            )
        for d in range(split - 1, depth - 1, -1):
            if (kint >> (KEY_BITS - 1 - d)) & 1:
                node = SmtInner(
                    _sha256(NODE_PREFIX + EMPTY + node.hash).digest(), None, node, version
                )
            else:
                node = SmtInner(
                    _sha256(NODE_PREFIX + node.hash + EMPTY).digest(), node, None, version
                )
        return node


class SparseMerkleTree:
    """One version of an ``oblivio-smt-v1`` tree, held in memory. Immutable: ``apply`` returns
    a new version that shares unchanged nodes with this one."""

    __slots__ = ("_root", "version")

    def __init__(self, root: SmtNode | None = None, version: int = 0) -> None:
        self._root = root
        self.version = version

    @property
    def root(self) -> bytes:
        """The root hash (``EMPTY`` for the empty tree)."""
        return EMPTY if self._root is None else self._root.hash

    @property
    def root_node(self) -> SmtNode | None:
        """The root node (``None`` for the empty tree)."""
        return self._root

    def apply(
        self, updates: Mapping[bytes, bytes | None], version: int
    ) -> tuple[SparseMerkleTree, BatchResult]:
        """Apply a batch of updates (key → new value hash, or ``None`` to remove) as ``version``.

        Each changed node is hashed once. Raises ValueError for malformed keys or values, or a
        version not above this one.
        """
        if version <= self.version:
            raise ValueError(f"SMT batch: version {version} is not above {self.version}")
        from_bytes = int.from_bytes
        items = [(from_bytes(key, "big"), bytes(key), value) for key, value in updates.items()]
        values = updates.values()
        if {len(key) for key in updates} - {HASH_SIZE} or {
            len(value) for value in values if value is not None
        } - {HASH_SIZE}:
            for _, key, value in items:
                _check_key(key, "leaf key")
                _check_key(b"\0" * HASH_SIZE if value is None else value, "value hash")
        items.sort(key=itemgetter(0))  # keys are distinct: order by the integer alone
        batch = _Batch(items, version)
        with gc_paused():
            root = batch.update(self._root, 0, 0, len(items)) if items else self._root
        return SparseMerkleTree(root, version), BatchResult(version, root, len(items))

    def get(self, key: bytes) -> bytes | None:
        """The value hash stored under ``key``, or ``None``."""
        _check_key(key, "leaf key")
        kint = int.from_bytes(key, "big")
        node = self._root
        depth = 0
        while node is not None and type(node) is not SmtLeaf:
            if type(node) is SmtStub:
                node = node.load()
                continue
            assert type(node) is SmtInner  # noqa: S101 - a tree holds leaves, inners, stubs
            node = node.right if (kint >> (KEY_BITS - 1 - depth)) & 1 else node.left
            depth += 1
        if node is not None and node.key == key:
            return node.value_hash
        return None

    def prove(self, key: bytes) -> SmtProof:
        """The inclusion or non-inclusion proof of ``key`` against this version's root."""
        _check_key(key, "leaf key")
        kint = int.from_bytes(key, "big")
        node = self._root
        depth = 0
        bits = 0
        siblings: list[bytes] = []
        while node is not None and type(node) is not SmtLeaf:
            if type(node) is SmtStub:
                node = node.load()
                continue
            assert type(node) is SmtInner  # noqa: S101 - a tree holds leaves, inners, stubs
            inner = node
            if (kint >> (KEY_BITS - 1 - depth)) & 1:
                node, sibling = inner.right, inner.left
            else:
                node, sibling = inner.left, inner.right
            bits <<= 1
            if sibling is not None:
                bits |= 1
                siblings.append(sibling.hash)
            depth += 1
        bitmap = (bits << (-depth % 8)).to_bytes((depth + 7) // 8, "big")
        if node is not None:
            return SmtProof(depth, bitmap, tuple(siblings), node.key, node.value_hash)
        return SmtProof(depth, bitmap, tuple(siblings), None, None)

    def leaves(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value hash), in key order."""
        stack: list[SmtNode | None] = [self._root]
        while stack:
            node = stack.pop()
            if node is None:
                continue
            if type(node) is SmtStub:
                stack.append(node.load())
            elif type(node) is SmtLeaf:
                yield node.key, node.value_hash
            else:
                assert type(node) is SmtInner  # noqa: S101 - a tree holds leaves, inners, stubs
                stack.append(node.right)
                stack.append(node.left)


def subtree_from_leaves(
    leaves: list[tuple[bytes, bytes]], depth: int, version: int
) -> SmtLeaf | SmtInner | None:
    """The subtree at ``depth`` holding exactly ``leaves`` ((key, value hash) pairs sorted by
    key, all sharing their first ``depth`` bits), every node hashed once and marked
    ``version``. A store rebuilds a stored group with it."""
    return _build_sorted([SmtLeaf(key, value, version) for key, value in leaves], depth, version)


def _build_sorted(leaves: list[SmtLeaf], depth: int, version: int) -> SmtLeaf | SmtInner | None:
    """The subtree at ``depth`` over ``leaves`` (sorted by key, distinct, sharing their first
    ``depth`` bits), new nodes marked ``version``, each hashed once.

    One pass with a stack instead of a recursion: consecutive keys branch at their first
    differing bit, so each key closes the pending branches deeper than its own; a subtree
    joining a branch more than one level up is raised through one-child nodes (compaction
    puts a lone leaf directly below its branch)."""
    if not leaves:
        return None
    sha = _sha256
    prefix = NODE_PREFIX

    def raised(node: SmtLeaf | SmtInner, top: int, to: int, kint: int) -> SmtLeaf | SmtInner:
        """``node`` (an inner node at depth ``top``, on the path of ``kint``) seen from
        depth ``to``: the chain of one-child nodes between."""
        for d in range(top - 1, to - 1, -1):
            if (kint >> (KEY_BITS - 1 - d)) & 1:
                node = SmtInner(sha(prefix + EMPTY + node.hash).digest(), None, node, version)
            else:
                node = SmtInner(sha(prefix + node.hash + EMPTY).digest(), node, None, version)
        return node

    # Pending branches: (branch depth, left subtree, its root depth or -1 for a leaf, a key in it)
    stack: list[tuple[int, SmtLeaf | SmtInner, int, int]] = []
    first = leaves[0]
    node: SmtLeaf | SmtInner = first
    top, kint = -1, first.kint
    for leaf in [*leaves[1:], None]:
        # The end (None) closes every pending branch.
        branch = -1 if leaf is None else KEY_BITS - (kint ^ leaf.kint).bit_length()
        while stack and stack[-1][0] > branch:
            at, left, left_top, left_kint = stack.pop()
            if left_top > at + 1:
                left = raised(left, left_top, at + 1, left_kint)
            if top > at + 1:
                node = raised(node, top, at + 1, kint)
            node = SmtInner(sha(prefix + left.hash + node.hash).digest(), left, node, version)
            top, kint = at, left_kint
        if leaf is None:
            break
        stack.append((branch, node, top, kint))
        node, top, kint = leaf, -1, leaf.kint
    return raised(node, top, depth, kint) if top > depth else node


def _new_rows(root: SmtNode | None, version: int) -> Iterator[NodeRow]:
    """The rows of every node written by the batch ``version`` (they hang under changed nodes)."""
    if root is None or root.version != version:
        return
    stack: list[tuple[SmtNode, int, int]] = [(root, 0, 0)]
    while stack:
        node, depth, prefix = stack.pop()
        if isinstance(node, SmtLeaf):
            yield (
                depth,
                node.kint >> (KEY_BITS - depth),
                version,
                node.hash,
                None,
                None,
                node.key,
                node.value_hash,
            )
            continue
        assert type(node) is SmtInner  # noqa: S101 - a batch makes no stubs
        left, right = node.left, node.right
        yield (
            depth,
            prefix,
            version,
            node.hash,
            None if left is None else left.version,
            None if right is None else right.version,
            None,
            None,
        )
        if left is not None and left.version == version:
            stack.append((left, depth + 1, prefix << 1))
        if right is not None and right.version == version:
            stack.append((right, depth + 1, (prefix << 1) | 1))


@dataclass(frozen=True)
class SmtProof:
    """An ``oblivio-smt-v1`` proof (DESIGN.md §15): the path depth, a bitmap of non-empty
    siblings, those siblings from the root down, and the terminal — a leaf (key, value hash)
    or, when both are ``None``, ``EMPTY``."""

    depth: int
    bitmap: bytes
    siblings: tuple[bytes, ...]
    terminal_key: bytes | None
    terminal_value_hash: bytes | None

    def to_dict(self) -> dict[str, Any]:
        """The wire form of DESIGN.md §15."""
        terminal: dict[str, Any]
        if self.terminal_key is None or self.terminal_value_hash is None:
            terminal = {"empty": True}
        else:
            terminal = {
                "leaf": {
                    "key": self.terminal_key.hex(),
                    "value_hash": self.terminal_value_hash.hex(),
                }
            }
        return {
            "depth": self.depth,
            "bitmap": self.bitmap.hex(),
            "siblings": [s.hex() for s in self.siblings],
            "terminal": terminal,
        }

    @classmethod
    def from_dict(cls, data: object) -> SmtProof:
        """Parse the wire form strictly. Raises VerificationError naming the malformed field."""
        what = "SMT proof"
        if not isinstance(data, dict) or set(data) != {"depth", "bitmap", "siblings", "terminal"}:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise VerificationError(
                f"{what}: expected fields ['bitmap', 'depth', 'siblings', 'terminal'], got {got}"
            )
        depth = data["depth"]
        if type(depth) is not int or not 0 <= depth <= KEY_BITS:
            raise VerificationError(f"{what}: depth must be an integer 0..256, got {depth!r}")
        bitmap_hex = data["bitmap"]
        if (
            not isinstance(bitmap_hex, str)
            or len(bitmap_hex) != 2 * ((depth + 7) // 8)
            or bitmap_hex != bitmap_hex.lower()
        ):
            raise VerificationError(
                f"{what}: bitmap must be {(depth + 7) // 8} bytes of lower-case hex, "
                f"got {bitmap_hex!r}"
            )
        try:
            bitmap = bytes.fromhex(bitmap_hex)
        except ValueError as e:
            raise VerificationError(f"{what}: bitmap is not hex: {bitmap_hex!r}") from e
        siblings_raw = data["siblings"]
        if not isinstance(siblings_raw, list) or not all(isinstance(s, str) for s in siblings_raw):
            raise VerificationError(f"{what}: siblings must be a list of hex hashes")
        terminal = data["terminal"]
        try:
            siblings = tuple(parse_hex_digest(s, f"{what} sibling") for s in siblings_raw)
            if terminal == {"empty": True}:
                return cls(depth, bitmap, siblings, None, None)
            if (
                isinstance(terminal, dict)
                and set(terminal) == {"leaf"}
                and isinstance(terminal["leaf"], dict)
                and set(terminal["leaf"]) == {"key", "value_hash"}
                and isinstance(terminal["leaf"]["key"], str)
                and isinstance(terminal["leaf"]["value_hash"], str)
            ):
                leaf = terminal["leaf"]
                return cls(
                    depth,
                    bitmap,
                    siblings,
                    parse_hex_digest(leaf["key"], f"{what} terminal key"),
                    parse_hex_digest(leaf["value_hash"], f"{what} terminal value_hash"),
                )
        except ValueError as e:
            raise VerificationError(str(e)) from e
        raise VerificationError(
            f'{what}: terminal must be {{"empty": true}} or {{"leaf": {{"key", "value_hash"}}}}, '
            f"got {terminal!r}"
        )

    def _path_bits(self) -> int:
        """The bitmap as a ``depth``-bit integer (bit for depth 0 highest), after checking the
        bitmap's length and padding, the sibling count and the compaction rule at the terminal."""
        depth = self.depth
        if not 0 <= depth <= KEY_BITS or len(self.bitmap) != (depth + 7) // 8:
            raise VerificationError(
                f"SMT proof: bitmap must be {(depth + 7) // 8} bytes for depth {depth}, "
                f"got {len(self.bitmap)}"
            )
        bits = int.from_bytes(self.bitmap, "big")
        pad = -depth % 8
        if bits & ((1 << pad) - 1):
            raise VerificationError("SMT proof: bitmap padding bits must be zero")
        bits >>= pad
        count = bits.bit_count()
        if count != len(self.siblings):
            raise VerificationError(
                f"SMT proof: bitmap has {count} non-empty siblings, "
                f"got {len(self.siblings)} sibling hashes"
            )
        if depth > 0 and not bits & 1:
            raise VerificationError(
                f"SMT proof: the sibling at depth {depth - 1} is EMPTY, so the terminal at depth "
                f"{depth} is not where compaction puts it"
            )
        return bits

    def computed_root(self, key: bytes) -> bytes:
        """Hash the terminal up the path of ``key``; the root this proof implies.

        Checks the proof's shape first: bitmap padding, sibling count, no ``EMPTY`` listed as a
        sibling, the compaction rule at the terminal, and that a terminal leaf lies on ``key``'s
        path. Raises VerificationError naming what does not hold.
        """
        if len(key) != HASH_SIZE:
            raise VerificationError(f"SMT proof: key must be 32 bytes, got {len(key)}")
        depth = self.depth
        bits = self._path_bits()
        kint = int.from_bytes(key, "big")
        if self.terminal_key is None or self.terminal_value_hash is None:
            h = EMPTY
        else:
            tkey = self.terminal_key
            if len(tkey) != HASH_SIZE or len(self.terminal_value_hash) != HASH_SIZE:
                raise VerificationError("SMT proof: terminal key and value hash must be 32 bytes")
            if depth and int.from_bytes(tkey, "big") >> (KEY_BITS - depth) != kint >> (
                KEY_BITS - depth
            ):
                raise VerificationError(
                    f"SMT proof: terminal leaf {tkey.hex()} does not share the first {depth} "
                    f"bits of key {key.hex()}"
                )
            h = _sha256(LEAF_PREFIX + tkey + self.terminal_value_hash).digest()
        index = len(self.siblings)
        for i in range(depth - 1, -1, -1):
            if (bits >> (depth - 1 - i)) & 1:
                index -= 1
                sibling = self.siblings[index]
                if sibling == EMPTY:
                    raise VerificationError(
                        f"SMT proof: sibling at depth {i} is listed but is EMPTY"
                    )
            else:
                sibling = EMPTY
            if (kint >> (KEY_BITS - 1 - i)) & 1:
                h = _sha256(NODE_PREFIX + sibling + h).digest()
            else:
                h = _sha256(NODE_PREFIX + h + sibling).digest()
        return h


def _check_root(expected: bytes, computed: bytes, what: str) -> None:
    if not hmac.compare_digest(expected, computed):
        raise VerificationError(f"{what}: expected root {expected.hex()}, got {computed.hex()}")


def verify_inclusion(root: bytes, key: bytes, value_hash: bytes, proof: SmtProof) -> None:
    """Check that ``key`` holds ``value_hash`` in the tree with ``root``.

    Raises VerificationError naming what did not match (terminal, key, value, root).
    """
    what = f"SMT inclusion of key {key.hex()}"
    if proof.terminal_key is None or proof.terminal_value_hash is None:
        raise VerificationError(f"{what}: expected a leaf terminal, got EMPTY")
    if not hmac.compare_digest(proof.terminal_key, key):
        raise VerificationError(
            f"{what}: expected terminal key {key.hex()}, got {proof.terminal_key.hex()}"
        )
    if not hmac.compare_digest(proof.terminal_value_hash, value_hash):
        raise VerificationError(
            f"{what}: expected value hash {value_hash.hex()}, got {proof.terminal_value_hash.hex()}"
        )
    _check_root(root, proof.computed_root(key), what)


def verify_non_inclusion(root: bytes, key: bytes, proof: SmtProof) -> None:
    """Check that ``key`` is absent from the tree with ``root``: the path of ``key`` ends in
    ``EMPTY`` or in a leaf with another key that shares its first ``depth`` bits.

    Raises VerificationError naming what did not match.
    """
    what = f"SMT non-inclusion of key {key.hex()}"
    if proof.terminal_key is not None and hmac.compare_digest(proof.terminal_key, key):
        raise VerificationError(f"{what}: the proof's terminal is the key itself (it is present)")
    _check_root(root, proof.computed_root(key), what)
