"""The key-store SMT persisted and versioned in SQL (DESIGN.md §6; schema: migration 2).

Layout. A node's position is ``(depth, prefix)``; its key is ``depth`` as two bytes followed by
the ``depth`` prefix bits, left-aligned in ``ceil(depth / 8)`` bytes. Every batch (= epoch,
= SMT version ``v``) writes only the nodes it changed, and writes them packed: one
``smt_nodes`` row per *group* and version, where a group is the subtree under a depth-12
position (and group ``b""`` holds depths 0-11). A batch of ``n`` updates at 10^6 leaves thus
writes at most ``min(n, 4096) + 1`` rows instead of one row per node, which is what makes
batched updates fast in SQL. Interior records name their children's versions, so any retained
version is walked from its root by exact ``(group, version)`` reads.

``smt_versions`` keeps, per version, the root, the root node's version and the list of stored
nodes the batch replaced ("stale"). Pruning (``prune``) applies the stale lists of versions at or
below the oldest retained one: a row whose nodes are all stale is unreachable from any retained
root and is deleted; versions older than the oldest retained one are marked pruned.

The latest version is kept in memory (``SparseMerkleTree``, loaded once and checked against the
stored hashes), so batches read nothing from the database and proofs against the latest root are
served from memory; proofs against older retained roots read the store.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from oblivio.core.errors import NotFoundError, StorageError
from oblivio.core.smt import (
    EMPTY,
    KEY_BITS,
    BatchResult,
    SmtInner,
    SmtLeaf,
    SmtNode,
    SmtProof,
    SparseMerkleTree,
    StaleNode,
    gc_paused,
    leaf_hash,
    node_hash,
)
from oblivio.store.database import Database, Transaction

GROUP_DEPTH = 12
TOP_GROUP = b""
_INNER = 0
_LEAF = 1
_VERSIONS = struct.Struct(">qq")
_VERSION = struct.Struct(">q")
_DECODED_CACHE_SIZE = 256

# A decoded stored node: (kind, hash or key, left version or value hash, right version).
_Record = tuple[int, bytes, "int | bytes", int]


def node_key(depth: int, prefix: int) -> bytes:
    """The stored key of position ``(depth, prefix)``."""
    return depth.to_bytes(2, "big") + (prefix << (-depth % 8)).to_bytes((depth + 7) >> 3, "big")


def group_key(depth: int, prefix: int) -> bytes:
    """The group (row) a node at ``(depth, prefix)`` is stored in."""
    if depth < GROUP_DEPTH:
        return TOP_GROUP
    return node_key(GROUP_DEPTH, prefix >> (depth - GROUP_DEPTH))


def _encode_stale(stale: list[StaleNode]) -> bytes:
    """``node_key || version`` of each stale node, concatenated."""
    pack = _VERSION.pack
    out = []
    for d, path, v in stale:
        size = (d + 7) >> 3
        prefix = path >> (KEY_BITS - d)
        out.append(((d << (size << 3)) | (prefix << (-d % 8))).to_bytes(size + 2, "big") + pack(v))
    return b"".join(out)


def _decode_stale(blob: bytes) -> list[tuple[bytes, int]]:
    """``(node_key, version)`` of each stale node in a stale list."""
    out = []
    i = 0
    while i < len(blob):
        depth = int.from_bytes(blob[i : i + 2], "big")
        end = i + 2 + ((depth + 7) >> 3)
        out.append((blob[i:end], _VERSION.unpack_from(blob, end)[0]))
        i = end + 8
    return out


def _decode_group(blob: bytes) -> dict[bytes, _Record]:
    """The records of one ``smt_nodes`` row, by node key."""
    records: dict[bytes, _Record] = {}
    i = 0
    n = len(blob)
    while i < n:
        depth = (blob[i] << 8) | blob[i + 1]
        end = i + 2 + ((depth + 7) >> 3)
        key = blob[i:end]
        kind = blob[end]
        if kind == _INNER:
            lv, rv = _VERSIONS.unpack_from(blob, end + 33)
            records[key] = (_INNER, blob[end + 1 : end + 33], lv, rv)
            i = end + 49
        else:
            records[key] = (_LEAF, blob[end + 1 : end + 33], blob[end + 33 : end + 65], -1)
            i = end + 65
    return records


def _corrupt(what: str) -> StorageError:
    return StorageError(f"store: SMT nodes are inconsistent: {what}")


@dataclass(frozen=True)
class RetentionPolicy:
    """How many of the newest SMT versions stay provable (at least 1, the latest)."""

    keep_versions: int

    def __post_init__(self) -> None:
        if self.keep_versions < 1:
            raise ValueError(f"retention: keep_versions must be >= 1, got {self.keep_versions}")


@dataclass(frozen=True)
class StagedBatch:
    """A batch written inside an open transaction; ``SmtNodeStore.publish`` it after commit."""

    tree: SparseMerkleTree
    result: BatchResult
    previous_root: bytes


class SmtNodeStore:
    """The versioned SMT of one node's database. Safe to share between threads; one process
    writes at a time (the caller's write transaction serialises writers)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._tree: SparseMerkleTree | None = None
        self._decoded: OrderedDict[tuple[bytes, int], dict[bytes, _Record]] = OrderedDict()

    # -- reading -------------------------------------------------------------------------

    @staticmethod
    def latest_version(tx: Transaction) -> int:
        """The newest committed version (0 = the empty tree, before any batch)."""
        row = tx.fetchone("SELECT MAX(version) FROM smt_versions")
        return 0 if row is None or row[0] is None else int(row[0])

    def tree(self) -> SparseMerkleTree:
        """The latest version, in memory (loaded from the store on first use or when another
        process committed since)."""
        with self.db.transaction(write=False) as tx:
            return self._current(tx)

    def _current(self, tx: Transaction) -> SparseMerkleTree:
        latest = self.latest_version(tx)
        with self._lock:
            cached = self._tree
        if cached is not None and cached.version == latest:
            return cached
        tree = self._load(tx, latest)
        with self._lock:
            self._tree = tree
        return tree

    def _load(self, tx: Transaction, version: int) -> SparseMerkleTree:
        if version == 0:
            return SparseMerkleTree()
        row = tx.fetchone(
            "SELECT root, root_version FROM smt_versions WHERE version = ?", (version,)
        )
        if row is None:
            raise _corrupt(f"version {version} has no row")
        root, root_version = bytes(row[0]), row[1]
        if root_version is None:
            if root != EMPTY:
                raise _corrupt(f"version {version} has no root node but root {root.hex()}")
            return SparseMerkleTree(None, version)
        with gc_paused():
            node = self._materialise(tx, self._group_all(tx, TOP_GROUP), 0, 0, int(root_version))
        if node.hash != root:
            raise _corrupt(f"version {version}: expected root {root.hex()}, got {node.hash.hex()}")
        return SparseMerkleTree(node, version)

    @staticmethod
    def _group_all(tx: Transaction, group: bytes) -> dict[int, dict[bytes, _Record]]:
        """Every record of every version of one group: version → node key → record."""
        return {
            int(version): _decode_group(bytes(blob))
            for version, blob in tx.iterate(
                "SELECT version, nodes FROM smt_nodes WHERE group_key = ?", (group,)
            )
        }

    def _materialise(
        self,
        tx: Transaction,
        records: dict[int, dict[bytes, _Record]],
        depth: int,
        prefix: int,
        version: int,
    ) -> SmtNode:
        """Rebuild the stored subtree at ``(depth, prefix)`` of ``version``, checking every
        hash. ``records`` are the current group's; entering a group reads its rows."""
        if depth == GROUP_DEPTH:
            records = self._group_all(tx, group_key(depth, prefix))
        size = (depth + 7) >> 3
        key = ((depth << (size << 3)) | (prefix << (-depth % 8))).to_bytes(size + 2, "big")
        by_version = records.get(version)
        record = None if by_version is None else by_version.get(key)
        if record is None:
            raise _corrupt(f"node at depth {depth} of version {version} is missing")
        kind, first, second, right_version = record
        if kind == _LEAF:
            assert isinstance(second, bytes)  # noqa: S101 - decoded leaf records hold bytes
            leaf = SmtLeaf(first, second, version, depth)
            if leaf.kint >> (KEY_BITS - depth) != prefix:
                raise _corrupt(f"leaf {first.hex()} stored off its path")
            return leaf
        assert isinstance(second, int)  # noqa: S101 - decoded inner records hold versions
        left = (
            None if second < 0 else self._materialise(tx, records, depth + 1, prefix << 1, second)
        )
        right = (
            None
            if right_version < 0
            else self._materialise(tx, records, depth + 1, (prefix << 1) | 1, right_version)
        )
        computed = node_hash(
            EMPTY if left is None else left.hash, EMPTY if right is None else right.hash
        )
        if computed != first:
            raise _corrupt(f"node at depth {depth} of version {version} does not hash")
        return SmtInner(first, left, right, version)

    def root(self, version: int | None = None) -> bytes:
        """The root of ``version`` (default: the latest). Raises NotFoundError for a version
        never committed."""
        with self.db.transaction(write=False) as tx:
            if version is None:
                return self._current(tx).root
            if version == 0:
                return EMPTY
            row = tx.fetchone("SELECT root FROM smt_versions WHERE version = ?", (version,))
        if row is None:
            raise NotFoundError(f"SMT version {version} does not exist")
        return bytes(row[0])

    def prove(self, key: bytes, version: int | None = None) -> tuple[int, bytes, SmtProof]:
        """A proof for ``key`` against ``version`` (default: the latest): ``(version, root,
        proof)``. Raises NotFoundError for a version never committed or already pruned."""
        with self.db.transaction(write=False) as tx:
            latest = self._current(tx)
            if version is None or version == latest.version:
                return latest.version, latest.root, latest.prove(key)
            return version, *self._prove_stored(tx, key, version)

    def _record(self, tx: Transaction, depth: int, prefix: int, version: int) -> _Record:
        group = group_key(depth, prefix)
        cache_key = (group, version)
        with self._lock:
            records = self._decoded.get(cache_key)
            if records is not None:
                self._decoded.move_to_end(cache_key)
        if records is None:
            row = tx.fetchone(
                "SELECT nodes FROM smt_nodes WHERE group_key = ? AND version = ?", cache_key
            )
            if row is None:
                raise _corrupt(f"group of depth {depth} at version {version} is missing")
            records = _decode_group(bytes(row[0]))
            with self._lock:
                self._decoded[cache_key] = records
                while len(self._decoded) > _DECODED_CACHE_SIZE:
                    self._decoded.popitem(last=False)
        record = records.get(node_key(depth, prefix))
        if record is None:
            raise _corrupt(f"node at depth {depth} of version {version} is missing")
        return record

    def _stored_hash(self, tx: Transaction, depth: int, prefix: int, version: int) -> bytes:
        kind, first, second, _ = self._record(tx, depth, prefix, version)
        if kind == _LEAF:
            assert isinstance(second, bytes)  # noqa: S101 - decoded leaf records hold bytes
            return leaf_hash(first, second)
        return first

    def _prove_stored(self, tx: Transaction, key: bytes, version: int) -> tuple[bytes, SmtProof]:
        if version < 0:
            raise NotFoundError(f"SMT version {version} does not exist")
        if version == 0:
            return EMPTY, SparseMerkleTree().prove(key)
        row = tx.fetchone(
            "SELECT root, root_version, pruned FROM smt_versions WHERE version = ?", (version,)
        )
        if row is None:
            raise NotFoundError(f"SMT version {version} does not exist")
        if row[2]:
            raise NotFoundError(f"SMT version {version} was pruned by the retention policy")
        root, node_version = bytes(row[0]), row[1]
        kint = int.from_bytes(key, "big")
        depth = prefix = bits = 0
        siblings: list[bytes] = []
        terminal: tuple[bytes, bytes] | None = None
        while node_version is not None and node_version >= 0:
            kind, first, second, right_version = self._record(tx, depth, prefix, node_version)
            if kind == _LEAF:
                assert isinstance(second, bytes)  # noqa: S101 - decoded leaf records hold bytes
                terminal = (first, second)
                break
            assert isinstance(second, int)  # noqa: S101 - decoded inner records hold versions
            bit = (kint >> (KEY_BITS - 1 - depth)) & 1
            child_version, sibling_version = (
                (right_version, second) if bit else (second, right_version)
            )
            bits <<= 1
            if sibling_version >= 0:
                bits |= 1
                siblings.append(
                    self._stored_hash(tx, depth + 1, (prefix << 1) | (1 - bit), sibling_version)
                )
            depth += 1
            prefix = (prefix << 1) | bit
            node_version = child_version
        bitmap = (bits << (-depth % 8)).to_bytes((depth + 7) // 8, "big")
        proof = SmtProof(
            depth,
            bitmap,
            tuple(siblings),
            None if terminal is None else terminal[0],
            None if terminal is None else terminal[1],
        )
        computed = proof.computed_root(key)
        if computed != root:
            raise _corrupt(f"version {version}: expected root {root.hex()}, got {computed.hex()}")
        return root, proof

    # -- writing -------------------------------------------------------------------------

    def stage(
        self, tx: Transaction, updates: Mapping[bytes, bytes | None], version: int
    ) -> StagedBatch:
        """Apply a batch as ``version`` (the latest + 1) and write its nodes in ``tx``.

        Nothing is visible until ``tx`` commits and ``publish`` is called; if the transaction
        fails, the in-memory tree is unchanged. Raises ValueError for a wrong version.
        """
        base = self._current(tx)
        if version != base.version + 1:
            raise ValueError(
                f"SMT batch: expected version {base.version + 1}, got {version} "
                "(another writer committed?)"
            )
        tree, result = base.apply(updates, version)
        with gc_paused():
            self.write(tx, result, tree.root_node)
            stale = _encode_stale(result.stale)
        root_node = tree.root_node
        tx.execute(
            "INSERT INTO smt_versions (version, root, root_version, changes, stale, pruned) "
            "VALUES (?, ?, ?, ?, ?, 0)",
            (
                version,
                tree.root,
                None if root_node is None else root_node.version,
                result.changes,
                stale,
            ),
        )
        return StagedBatch(tree, result, base.root)

    @staticmethod
    def write(tx: Transaction, result: BatchResult, root: SmtNode | None) -> None:
        """Write the nodes batch ``result`` made under ``root``, packed per group (module
        docstring). The nodes are walked and encoded in one pass: this is the hot loop of a
        batch commit, so positions are computed inline rather than through ``node_key``."""
        version = result.version
        groups: dict[bytes, list[bytes]] = {}
        pack_versions = _VERSIONS.pack
        top = GROUP_DEPTH
        group_size = (top + 7) >> 3
        group_tag = top << (group_size << 3)  # node_key(top, p), as one integer
        group_pad = -top % 8
        stack: list[tuple[SmtNode, int, int]] = []
        if root is not None and root.version == version:
            stack.append((root, 0, 0))
        while stack:
            node, depth, prefix = stack.pop()
            if type(node) is SmtLeaf:
                depth = node.depth
                prefix = node.kint >> (KEY_BITS - depth)
                size = (depth + 7) >> 3
                record = (
                    ((depth << (size << 3)) | (prefix << (-depth % 8))).to_bytes(size + 2, "big")
                    + b"\x01"
                    + node.key
                    + node.value_hash
                )
            else:
                assert isinstance(node, SmtInner)  # noqa: S101 - a tree holds leaves and inners
                left, right = node.left, node.right
                size = (depth + 7) >> 3
                record = (
                    ((depth << (size << 3)) | (prefix << (-depth % 8))).to_bytes(size + 2, "big")
                    + b"\x00"
                    + node.hash
                    + pack_versions(
                        -1 if left is None else left.version,
                        -1 if right is None else right.version,
                    )
                )
                if left is not None and left.version == version:
                    stack.append((left, depth + 1, prefix << 1))
                if right is not None and right.version == version:
                    stack.append((right, depth + 1, (prefix << 1) | 1))
            group = (
                TOP_GROUP
                if depth < top
                else (group_tag | ((prefix >> (depth - top)) << group_pad)).to_bytes(
                    group_size + 2, "big"
                )
            )
            parts = groups.get(group)
            if parts is None:
                groups[group] = [record]
            else:
                parts.append(record)
        if groups:
            tx.executemany(
                "INSERT INTO smt_nodes (group_key, version, node_count, stale_count, nodes) "
                "VALUES (?, ?, ?, 0, ?)",
                [(g, version, len(p), b"".join(p)) for g, p in groups.items()],
            )

    def publish(self, staged: StagedBatch) -> None:
        """Make a committed batch the in-memory latest version."""
        with self._lock:
            if self._tree is None or staged.tree.version > self._tree.version:
                self._tree = staged.tree

    def commit_batch(self, updates: Mapping[bytes, bytes | None]) -> StagedBatch:
        """Apply and commit one batch in its own transaction (durable when it returns)."""
        with self.db.transaction() as tx:
            staged = self.stage(tx, updates, self.latest_version(tx) + 1)
        self.publish(staged)
        return staged

    def prune(self, policy: RetentionPolicy) -> int:
        """Drop the nodes no retained version reaches; return how many rows were deleted.

        The newest ``policy.keep_versions`` versions stay provable; older ones are marked
        pruned and ``prove`` refuses them.
        """
        with self.db.transaction() as tx:
            latest = self.latest_version(tx)
            oldest_kept = latest - policy.keep_versions + 1
            if oldest_kept <= 1:
                return 0
            counts: dict[tuple[bytes, int], int] = {}
            processed = []
            for version, blob in tx.fetchall(
                "SELECT version, stale FROM smt_versions WHERE version <= ? AND stale <> ?",
                (oldest_kept, b""),
            ):
                processed.append((b"", int(version)))
                for key, node_version in _decode_stale(bytes(blob)):
                    depth = int.from_bytes(key[:2], "big")
                    prefix = int.from_bytes(key[2:], "big") >> (-depth % 8)
                    slot = (group_key(depth, prefix), node_version)
                    counts[slot] = counts.get(slot, 0) + 1
            tx.executemany(
                "UPDATE smt_nodes SET stale_count = stale_count + ? "
                "WHERE group_key = ? AND version = ?",
                [(n, g, v) for (g, v), n in counts.items()],
            )
            deleted = tx.execute("DELETE FROM smt_nodes WHERE stale_count >= node_count")
            tx.executemany("UPDATE smt_versions SET stale = ? WHERE version = ?", processed)
            tx.execute(
                "UPDATE smt_versions SET pruned = 1 WHERE version < ? AND pruned = 0",
                (oldest_kept,),
            )
        with self._lock:
            self._decoded.clear()
        return deleted
