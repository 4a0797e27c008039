"""The key-store SMT persisted and versioned in SQL (DESIGN.md §6; schema: migration 2; layout:
ADR 0009, which replaces the node rows of ADR 0007).

Layout. The tree is cut at depth 12 into 4096 *groups*: group ``g`` holds the leaves whose keys
start with the 12 bits ``g``. A batch (= epoch = SMT version ``v``) writes what it changed as
leaves, not as nodes:

- for each group it touched, one ``smt_nodes`` row ``(g as 2 bytes, v)`` holding either the
  batch's updates to that group (a *delta*: the (key, value hash) pairs set and the keys
  removed) or, once the deltas since the group's last *snapshot* outgrow that snapshot, the
  group's whole leaf set (a new snapshot);
- one *top* row ``(b"", v)`` holding a *summary* of each group it touched (the version that last
  touched it, its snapshot's version and size, the delta records written since, and its
  content: empty, one leaf, or the hash of its subtree), again as a delta of summaries or, now
  and then, a snapshot of all of them.

Group ``g`` (or the top) as of version ``v`` is its snapshot row followed by its delta rows up to
``v``, read in one range query; together at most about three times the group itself (a
group's deltas may grow to between one and two times its snapshot before the next one).
Interior hashes are not stored: the batch hashes each changed node once in memory, a group read
back is rebuilt from its leaves and checked against the hash in its summary, and the top 12
levels are rebuilt from the summaries and checked against the version's stored root.

``smt_versions`` keeps per version the root and, in ``root_version``, the version of the top
snapshot it is read from. Pruning (``prune``) to the newest N versions deletes, for the top and
for each group, the rows older than its snapshot as of the oldest retained version (no retained
version reads them) and marks older versions pruned.

Row formats (``smt_nodes.nodes``; ``node_count`` is the number of records):

- group snapshot: ``0x01 || (key || value_hash)*``, sorted by key;
- group delta: ``0x02 || u32 n || (key || value_hash)*n || key*`` (set, then removed);
- top: ``0x01`` (snapshot) or ``0x02`` (delta), then summaries, each
  ``u16 group || u8 kind || i64 version || i64 base || u32 base_size || u32 chain || payload``
  (kind 0 empty: no payload; 1 one leaf: key and value hash; 2 subtree: its hash).

Opening is lazy: the latest version is the top with a stub (``SmtStub``) per group of two or
more leaves, and a stub is loaded (read, rebuilt, checked) when a batch or a proof reaches it.
Groups a batch changed stay in memory with the latest tree; groups loaded only to serve proofs
sit in a bounded cache.
"""

from __future__ import annotations

import struct
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from oblivio.core.errors import NotFoundError, StorageError
from oblivio.core.smt import (
    EMPTY,
    KEY_BITS,
    BatchResult,
    SmtInner,
    SmtLeaf,
    SmtNode,
    SmtProof,
    SmtStub,
    SparseMerkleTree,
    gc_paused,
    node_hash,
    subtree_from_leaves,
)
from oblivio.store.database import Database, Transaction

GROUP_DEPTH = 12
GROUP_SHIFT = KEY_BITS - GROUP_DEPTH
TOP_GROUP = b""
SNAPSHOT_MIN = 32
"""A group (or the top) gets a new snapshot once the delta records written since its last one
exceed the snapshot's size or this many, whichever is larger."""
LOADED_GROUPS_CACHED = 4096
"""Groups loaded to serve proofs (not changed by a batch) kept in memory, least recent out:
as many as the tree has groups, so proofs against the latest version end up served from memory
as before, and the cache never holds much more than one version's worth of groups."""

_SNAPSHOT = 1
_DELTA = 2
_GROUP_EMPTY = 0
_GROUP_ONE_LEAF = 1
_GROUP_SUBTREE = 2
_PAYLOAD_SIZE = {_GROUP_EMPTY: 0, _GROUP_ONE_LEAF: 64, _GROUP_SUBTREE: 32}
_SUMMARY = struct.Struct(">HBqqII")
_COUNT = struct.Struct(">I")
_OLD_TREES_CACHED = 8


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """What the top row says about one group as of a version."""

    kind: int
    """``_GROUP_EMPTY``, ``_GROUP_ONE_LEAF`` or ``_GROUP_SUBTREE``."""
    version: int
    """The newest version that wrote a row for the group."""
    base: int
    """The version of the group's newest snapshot row."""
    base_size: int
    """Leaves in that snapshot."""
    chain: int
    """Delta records written since that snapshot."""
    payload: bytes
    """Empty, the one leaf's key and value hash, or the hash of the group's subtree."""

    def encode(self, group: int) -> bytes:
        """The summary as a top row stores it (module docstring)."""
        return (
            _SUMMARY.pack(group, self.kind, self.version, self.base, self.base_size, self.chain)
            + self.payload
        )


def _group_key(group: int) -> bytes:
    return group.to_bytes(2, "big")


def _corrupt(what: str) -> StorageError:
    return StorageError(f"store: SMT nodes are inconsistent: {what}")


def _decode_summaries(blob: bytes, into: dict[int, GroupSummary]) -> int:
    """Add the summaries of one top row to ``into``; return how many it held."""
    i, n, count = 1, len(blob), 0
    unpack = _SUMMARY.unpack_from
    size = _SUMMARY.size
    while i < n:
        if n - i < size:
            raise _corrupt("a top row is truncated")
        group, kind, version, base, base_size, chain = unpack(blob, i)
        end = i + size + _PAYLOAD_SIZE.get(kind, -n)
        if end < i + size or end > n:
            raise _corrupt(f"a top row holds a bad summary of group {group}")
        into[group] = GroupSummary(kind, version, base, base_size, chain, blob[i + size : end])
        i = end
        count += 1
    return count


def _pairs(blob: bytes, start: int, end: int) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value hash) pairs stored back to back in ``blob[start:end]``."""
    starts = range(start, end, 64)
    keys = [blob[i : i + 32] for i in starts]
    return zip(keys, [blob[i + 32 : i + 64] for i in starts], strict=True)


def _apply_group_row(blob: bytes, leaves: dict[bytes, bytes]) -> None:
    """Apply one group row (snapshot or delta) to ``leaves``."""
    if blob[0] == _SNAPSHOT:
        if (len(blob) - 1) % 64:
            raise _corrupt("a group snapshot is truncated")
        leaves.clear()
        leaves.update(_pairs(blob, 1, len(blob)))
        return
    sets = _COUNT.unpack_from(blob, 1)[0]
    start = 1 + _COUNT.size
    removed_at = start + 64 * sets
    if removed_at > len(blob) or (len(blob) - removed_at) % 32:
        raise _corrupt("a group delta is truncated")
    leaves.update(_pairs(blob, start, removed_at))
    for i in range(removed_at, len(blob), 32):
        leaves.pop(blob[i : i + 32], None)


def _snapshot(node: SmtNode | None) -> tuple[bytes, int]:
    """The snapshot row of the subtree ``node`` (its leaves in key order) and its leaf count."""
    parts = [b"\x01"]
    push = parts.append
    stack: list[SmtNode | None] = [node]
    pop = stack.pop
    count = 0
    while stack:
        n = pop()
        if n is None:
            continue
        if type(n) is SmtInner:
            stack.append(n.right)
            stack.append(n.left)
        elif type(n) is SmtLeaf:
            push(n.key)
            push(n.value_hash)
            count += 1
        else:
            assert type(n) is SmtStub  # noqa: S101 - a tree holds leaves, inners, stubs
            stack.append(n.load())
    return b"".join(parts), count


def _snapshot_due(group: int, summary: GroupSummary, records: int) -> bool:
    """Whether ``records`` more delta records make group ``group`` due for a new snapshot:
    once its deltas outgrow its snapshot (or ``SNAPSHOT_MIN``), by a margin that differs
    between groups, so that groups snapshotted in the same batch (the first fill) do not all
    come due again in one batch."""
    limit = max(SNAPSHOT_MIN, summary.base_size)
    limit += limit * ((group * 7 + summary.base) % 8) // 8
    return summary.chain + records > limit


def _group_content(root: SmtNode | None, group: int) -> tuple[int, bytes, SmtNode | None]:
    """(kind, payload, node) of group ``group`` in the tree under ``root``."""
    node = root
    depth = 0
    while depth < GROUP_DEPTH:
        if type(node) is SmtInner:
            node = node.right if (group >> (GROUP_DEPTH - 1 - depth)) & 1 else node.left
            depth += 1
        elif type(node) is SmtStub:
            node = node.load()
        else:
            break
    if node is None:
        return _GROUP_EMPTY, b"", None
    if type(node) is SmtLeaf:
        if node.kint >> GROUP_SHIFT != group:
            return _GROUP_EMPTY, b"", None
        return _GROUP_ONE_LEAF, node.key + node.value_hash, node
    return _GROUP_SUBTREE, node.hash, node


@dataclass(frozen=True)
class RetentionPolicy:
    """How many of the newest SMT versions stay provable (at least 1, the latest)."""

    keep_versions: int

    def __post_init__(self) -> None:
        if self.keep_versions < 1:
            raise ValueError(f"retention: keep_versions must be >= 1, got {self.keep_versions}")


@dataclass(frozen=True)
class _State:
    """One version as the store holds it: the tree and the top's summaries."""

    tree: SparseMerkleTree
    summaries: dict[int, GroupSummary]
    top_base: int | None
    top_chain: int


@dataclass(frozen=True)
class StagedBatch:
    """A batch written inside an open transaction; ``SmtNodeStore.publish`` it after commit."""

    tree: SparseMerkleTree
    result: BatchResult
    previous_root: bytes
    state: _State


@dataclass(frozen=True)
class _Top:
    """Builds the top 12 levels of a version from its group summaries. A class rather than a
    nested function: a recursive closure is a reference cycle, and one frozen by ``gc_paused``
    (holding the store through its closure) would never be freed."""

    present: list[tuple[int, GroupSummary]]
    groups: list[int]
    reader: _GroupReader

    def build(self, depth: int, lo: int, hi: int) -> SmtNode | None:
        """The node at ``depth`` over the groups ``present[lo:hi]`` (sharing ``depth`` bits)."""
        if lo == hi:
            return None
        group, summary = self.present[lo]
        if hi - lo == 1 and summary.kind == _GROUP_ONE_LEAF:
            leaf = SmtLeaf(summary.payload[:32], summary.payload[32:], summary.version)
            if leaf.kint >> GROUP_SHIFT != group:
                raise _corrupt(f"the leaf of group {group} is not in that group")
            return leaf
        if depth == GROUP_DEPTH:
            if summary.kind != _GROUP_SUBTREE or len(summary.payload) != 32:
                raise _corrupt(f"group {group} has a bad summary")
            return SmtStub(
                summary.payload, summary.version, depth, group, partial(self.reader.load, summary)
            )
        bit = GROUP_DEPTH - 1 - depth
        mid = bisect_left(self.groups, ((group >> bit) | 1) << bit, lo, hi)
        left = self.build(depth + 1, lo, mid)
        right = self.build(depth + 1, mid, hi)
        return SmtInner(
            node_hash(EMPTY if left is None else left.hash, EMPTY if right is None else right.hash),
            left,
            right,
            0,
        )


class _GroupReader:
    """Loads the group behind a stub: reads its rows, rebuilds it, checks its hash, and keeps
    the groups loaded for proofs in a bounded cache. It holds no tree, so the stubs pointing at
    it make no reference cycle with the store (a cycle frozen by ``gc_paused`` would never be
    freed)."""

    def __init__(self, db: Database, cache_size: int) -> None:
        self.db = db
        self.cache_size = cache_size
        self.lock = threading.Lock()
        self.local = threading.local()
        self.groups: OrderedDict[tuple[int, int], SmtLeaf | SmtInner] = OrderedDict()

    @contextmanager
    def reading(self, tx: Transaction, *, cache: bool = True) -> Iterator[None]:
        """Let stubs loaded on this thread read through ``tx`` (a stub is loaded deep inside a
        batch or a proof, which runs in the caller's transaction); ``cache=False`` keeps the
        groups loaded out of the cache (a batch keeps the parts it still needs in its tree)."""
        outer = getattr(self.local, "tx", None), getattr(self.local, "cache", True)
        self.local.tx, self.local.cache = tx, cache
        try:
            yield
        finally:
            self.local.tx, self.local.cache = outer

    def load(self, summary: GroupSummary, stub: SmtStub) -> SmtLeaf | SmtInner:
        """Group ``stub.prefix`` as of ``summary``, rebuilt from its leaves and checked against
        the stub's hash. Raises StorageError when the rows disagree."""
        group = stub.prefix
        cache_key = (group, summary.version)
        with self.lock:
            node = self.groups.get(cache_key)
            if node is not None:
                self.groups.move_to_end(cache_key)
        if node is not None:
            return node
        tx: Transaction | None = getattr(self.local, "tx", None)
        if tx is None:
            with self.db.transaction(write=False) as own:
                node = self.read(own, group, summary, stub.hash)
        else:
            node = self.read(tx, group, summary, stub.hash)
        if getattr(self.local, "cache", True):
            with self.lock:
                self.groups[cache_key] = node
                while len(self.groups) > self.cache_size:
                    self.groups.popitem(last=False)
        return node

    @staticmethod
    def read(
        tx: Transaction, group: int, summary: GroupSummary, expected: bytes
    ) -> SmtLeaf | SmtInner:
        """Read and rebuild one group (``load`` without the cache)."""
        rows = tx.fetchall(
            "SELECT version, nodes FROM smt_nodes WHERE group_key = ? AND version >= ? "
            "AND version <= ? ORDER BY version",
            (_group_key(group), summary.base, summary.version),
        )
        if not rows or int(rows[0][0]) != summary.base or bytes(rows[0][1])[:1] != b"\x01":
            raise _corrupt(f"group {group}: its snapshot at version {summary.base} is missing")
        leaves: dict[bytes, bytes] = {}
        for _, blob in rows:
            _apply_group_row(bytes(blob), leaves)
        with gc_paused():
            node = subtree_from_leaves(sorted(leaves.items()), GROUP_DEPTH, summary.version)
        if node is None or node.hash != expected:
            raise _corrupt(f"group {group} as of version {summary.version} does not hash")
        for key in leaves:
            if (key[0] << 4) | (key[1] >> 4) != group:
                raise _corrupt(f"group {group} holds key {key.hex()} of another group")
        return node


class SmtNodeStore:
    """The versioned SMT of one node's database. Safe to share between threads; one process
    writes at a time (the caller's write transaction serialises writers)."""

    def __init__(self, db: Database, loaded_groups_cached: int = LOADED_GROUPS_CACHED) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._state: _State | None = None
        self._reader = _GroupReader(db, loaded_groups_cached)
        self._old: OrderedDict[int, _State] = OrderedDict()

    # -- reading -------------------------------------------------------------------------

    @staticmethod
    def latest_version(tx: Transaction) -> int:
        """The newest committed version (0 = the empty tree, before any batch)."""
        row = tx.fetchone("SELECT MAX(version) FROM smt_versions")
        return 0 if row is None or row[0] is None else int(row[0])

    def tree(self) -> SparseMerkleTree:
        """The latest version (read from the store on first use or when another process
        committed since). Its groups are loaded when first reached, each in a read transaction
        of its own: walk it outside any open transaction of this thread."""
        with self.db.transaction(write=False) as tx:
            return self._current(tx).tree

    def _current(self, tx: Transaction) -> _State:
        latest = self.latest_version(tx)
        with self._lock:
            cached = self._state
        if cached is not None and cached.tree.version == latest:
            return cached
        state = self._load(tx, latest)
        with self._lock:
            if self._state is None or self._state.tree.version <= latest:
                self._state = state
        return state

    def _load(self, tx: Transaction, version: int) -> _State:
        """Version ``version`` from the store: its top rebuilt from the summaries and checked
        against the stored root, a stub for each group of two or more leaves."""
        if version == 0:
            return _State(SparseMerkleTree(), {}, None, 0)
        row = tx.fetchone(
            "SELECT root, root_version FROM smt_versions WHERE version = ?", (version,)
        )
        if row is None:
            raise _corrupt(f"version {version} has no row")
        root, top_base = bytes(row[0]), row[1]
        summaries: dict[int, GroupSummary] = {}
        chain = 0
        if top_base is not None:
            top_base = int(top_base)
            rows = tx.fetchall(
                "SELECT version, nodes FROM smt_nodes WHERE group_key = ? AND version >= ? "
                "AND version <= ? ORDER BY version",
                (TOP_GROUP, top_base, version),
            )
            if not rows or int(rows[0][0]) != top_base or bytes(rows[0][1])[:1] != b"\x01":
                raise _corrupt(
                    f"version {version}: expected a top snapshot row at version {top_base} "
                    "(the layout of ADR 0009), found none"
                )
            for _, stored in rows:
                blob = bytes(stored)
                if blob[:1] == b"\x01":
                    summaries.clear()
                    chain = 0
                    _decode_summaries(blob, summaries)
                elif blob[:1] == b"\x02":
                    chain += _decode_summaries(blob, summaries)
                else:
                    raise _corrupt(f"version {version}: a top row has an unknown layout")
        with gc_paused():
            node = self._build_top(summaries)
        computed = EMPTY if node is None else node.hash
        if computed != root:
            raise _corrupt(f"version {version}: expected root {root.hex()}, got {computed.hex()}")
        return _State(SparseMerkleTree(node, version), summaries, top_base, chain)

    def _build_top(self, summaries: dict[int, GroupSummary]) -> SmtNode | None:
        """The top 12 levels over the groups' summaries (compaction applies to groups of one
        leaf as to any leaf); each group of more leaves is a stub."""
        present = sorted((g, s) for g, s in summaries.items() if s.kind != _GROUP_EMPTY)
        top = _Top(present, [g for g, _ in present], self._reader)
        return top.build(0, 0, len(present))

    def root(self, version: int | None = None) -> bytes:
        """The root of ``version`` (default: the latest). Raises NotFoundError for a version
        never committed."""
        with self.db.transaction(write=False) as tx:
            if version is None:
                return self._current(tx).tree.root
            if version == 0:
                return EMPTY
            row = tx.fetchone("SELECT root FROM smt_versions WHERE version = ?", (version,))
        if row is None:
            raise NotFoundError(f"SMT version {version} does not exist")
        return bytes(row[0])

    def prove(self, key: bytes, version: int | None = None) -> tuple[int, bytes, SmtProof]:
        """A proof for ``key`` against ``version`` (default: the latest): ``(version, root,
        proof)``. Raises NotFoundError for a version never committed or already pruned."""
        with self.db.transaction(write=False) as tx, self._reader.reading(tx):
            latest = self._current(tx).tree
            if version is None or version == latest.version:
                return latest.version, latest.root, latest.prove(key)
            old = self._retained(tx, version).tree
            return version, old.root, old.prove(key)

    def _retained(self, tx: Transaction, version: int) -> _State:
        """An older version that pruning kept (its top rebuilt and checked, cached)."""
        if version < 0:
            raise NotFoundError(f"SMT version {version} does not exist")
        if version == 0:
            return _State(SparseMerkleTree(), {}, None, 0)
        row = tx.fetchone("SELECT pruned FROM smt_versions WHERE version = ?", (version,))
        if row is None:
            raise NotFoundError(f"SMT version {version} does not exist")
        if row[0]:
            raise NotFoundError(f"SMT version {version} was pruned by the retention policy")
        with self._lock:
            state = self._old.get(version)
            if state is not None:
                self._old.move_to_end(version)
                return state
        state = self._load(tx, version)
        with self._lock:
            self._old[version] = state
            while len(self._old) > _OLD_TREES_CACHED:
                self._old.popitem(last=False)
        return state

    # -- writing -------------------------------------------------------------------------

    def stage(
        self, tx: Transaction, updates: Mapping[bytes, bytes | None], version: int
    ) -> StagedBatch:
        """Apply a batch as ``version`` (the latest + 1) and write its rows in ``tx``.

        Nothing is visible until ``tx`` commits and ``publish`` is called; if the transaction
        fails, the in-memory tree is unchanged. Raises ValueError for a wrong version.
        """
        base = self._current(tx)
        if version != base.tree.version + 1:
            raise ValueError(
                f"SMT batch: expected version {base.tree.version + 1}, got {version} "
                "(another writer committed?)"
            )
        with self._reader.reading(tx, cache=False):
            tree, result = base.tree.apply(updates, version)
            with gc_paused():
                state, rows = self._rows(base, tree, updates)
        if rows:
            tx.executemany(
                "INSERT INTO smt_nodes (group_key, version, node_count, stale_count, nodes) "
                "VALUES (?, ?, ?, 0, ?)",
                rows,
            )
        tx.execute(
            "INSERT INTO smt_versions (version, root, root_version, changes, stale, pruned) "
            "VALUES (?, ?, ?, ?, ?, 0)",
            (version, tree.root, state.top_base, result.changes, b""),
        )
        return StagedBatch(tree, result, base.tree.root, state)

    @staticmethod
    def _rows(
        base: _State, tree: SparseMerkleTree, updates: Mapping[bytes, bytes | None]
    ) -> tuple[_State, list[tuple[bytes, int, int, bytes]]]:
        """The rows of one batch (module docstring) and the state it leaves."""
        version = tree.version
        sets: dict[int, list[bytes]] = {}
        removed: dict[int, list[bytes]] = {}
        for key, value in updates.items():
            group = (key[0] << 4) | (key[1] >> 4)
            if value is None:
                bucket = removed.get(group)
                if bucket is None:
                    removed[group] = [key]
                else:
                    bucket.append(key)
            else:
                bucket = sets.get(group)
                if bucket is None:
                    sets[group] = [key + value]
                else:
                    bucket.append(key + value)
        summaries = dict(base.summaries)
        changed: list[bytes] = []
        rows: list[tuple[bytes, int, int, bytes]] = []
        root = tree.root_node
        pack = _COUNT.pack
        for group in sorted(sets.keys() | removed.keys()):
            kind, payload, node = _group_content(root, group)
            group_sets = sets.get(group, [])
            group_removed = removed.get(group, [])
            records = len(group_sets) + len(group_removed)
            old = summaries.get(group)
            if old is None or _snapshot_due(group, old, records):
                blob, count = _snapshot(node)
                summary = GroupSummary(kind, version, version, count, 0, payload)
                rows.append((_group_key(group), version, count, blob))
            else:
                blob = b"".join([b"\x02", pack(len(group_sets)), *group_sets, *group_removed])
                summary = GroupSummary(
                    kind, version, old.base, old.base_size, old.chain + records, payload
                )
                rows.append((_group_key(group), version, records, blob))
            summaries[group] = summary
            changed.append(summary.encode(group))
        if not changed:
            return _State(tree, summaries, base.top_base, base.top_chain), rows
        top_chain = base.top_chain + len(changed)
        if base.top_base is None or top_chain > max(SNAPSHOT_MIN, len(summaries)):
            top = [s.encode(g) for g, s in sorted(summaries.items())]
            rows.append((TOP_GROUP, version, len(top), b"\x01" + b"".join(top)))
            return _State(tree, summaries, version, 0), rows
        rows.append((TOP_GROUP, version, len(changed), b"\x02" + b"".join(changed)))
        return _State(tree, summaries, base.top_base, top_chain), rows

    def publish(self, staged: StagedBatch) -> None:
        """Make a committed batch the in-memory latest version."""
        with self._lock:
            if self._state is None or staged.tree.version > self._state.tree.version:
                self._state = staged.state

    def commit_batch(self, updates: Mapping[bytes, bytes | None]) -> StagedBatch:
        """Apply and commit one batch in its own transaction (durable when it returns)."""
        with self.db.transaction() as tx:
            staged = self.stage(tx, updates, self.latest_version(tx) + 1)
        self.publish(staged)
        return staged

    def prune(self, policy: RetentionPolicy) -> int:
        """Drop the rows no retained version reads; return how many rows were deleted.

        The newest ``policy.keep_versions`` versions stay provable; older ones are marked
        pruned and ``prove`` refuses them.
        """
        with self.db.transaction() as tx:
            latest = self.latest_version(tx)
            oldest_kept = latest - policy.keep_versions + 1
            # A stricter policy may have pruned further already: its oldest retained version
            # is then the floor (the rows of versions below it are gone).
            row = tx.fetchone("SELECT MIN(version) FROM smt_versions WHERE pruned = 0")
            floor = 1 if row is None or row[0] is None else int(row[0])
            if oldest_kept <= floor:
                return 0
            kept = self._load(tx, oldest_kept)
            count = tx.fetchone("SELECT COUNT(*) FROM smt_nodes")
            bounds = [(_group_key(g), s.base) for g, s in kept.summaries.items()]
            if kept.top_base is not None:
                bounds.append((TOP_GROUP, kept.top_base))
            tx.executemany("DELETE FROM smt_nodes WHERE group_key = ? AND version < ?", bounds)
            after = tx.fetchone("SELECT COUNT(*) FROM smt_nodes")
            tx.execute(
                "UPDATE smt_versions SET pruned = 1 WHERE version < ? AND pruned = 0",
                (oldest_kept,),
            )
        with self._lock:
            self._old.clear()
        return (0 if count is None else int(count[0])) - (0 if after is None else int(after[0]))
