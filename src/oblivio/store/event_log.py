"""The Forget Event Log persisted in SQL (DESIGN.md §7; schema: migration 2).

``log_entries`` holds each entry (its JCS bytes) with its RFC 9162 leaf hash; ``log_nodes`` holds
the hash of every *perfect* subtree of ``2**level`` leaves with ``level >= 4`` as soon as it is
complete (a smaller one is rehashed from at most 8 leaf hashes read in one range query). Appending
n entries thus writes n entry rows and about n/8 node rows; any root, inclusion proof or
consistency proof, at any size, needs O(log n) reads (``core/merkle_log.py``). The right edge of
the tree (its "frontier", one hash per set bit of the size) is kept in memory between appends.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from oblivio.core.errors import NotFoundError, StorageError
from oblivio.core.hashing import HASH_SIZE, LEAF_PREFIX
from oblivio.core.merkle_log import (
    EMPTY_ROOT,
    ConsistencyProof,
    InclusionProof,
    SubtreeHash,
    consistency_proof,
    inclusion_proof,
    node_hash,
    root_at,
    root_from_leaf_hashes,
)
from oblivio.store.database import Database, Transaction


def _frontier_root(frontier: Sequence[bytes]) -> bytes:
    """The root from the right-edge perfect subtrees, largest first."""
    if not frontier:
        return EMPTY_ROOT
    root = frontier[-1]
    for h in reversed(frontier[:-1]):
        root = node_hash(h, root)
    return root


_SUBTREE_CACHE_SIZE = 1 << 20
STORED_MIN_LEVEL = 4
"""Perfect subtrees below this level are not stored but rehashed from their leaf hashes."""


_BLOCK = 1 << STORED_MIN_LEVEL


def _read_block(tx: Transaction, block: int) -> bytes:
    """The leaf hashes of the 16-leaf block ``block``, concatenated (fewer at the right edge)."""
    start = block * _BLOCK
    rows = tx.fetchall(
        "SELECT leaf_hash FROM log_entries WHERE idx >= ? AND idx < ? ORDER BY idx",
        (start, start + _BLOCK),
    )
    return b"".join(bytes(r[0]) for r in rows)


def _small_subtree(block_hashes: bytes, level: int, index: int) -> bytes:
    """A perfect subtree below ``STORED_MIN_LEVEL``, rehashed from its block's leaf hashes."""
    offset = (index << level) % _BLOCK
    count = 1 << level
    leaves = [
        block_hashes[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(offset, offset + count)
    ]
    if len(leaves[-1]) != HASH_SIZE:
        raise StorageError(f"store: log leaves of subtree ({level}, {index}) are missing")
    return root_from_leaf_hashes(leaves)


def _read_subtree(tx: Transaction, level: int, index: int) -> bytes:
    if level < STORED_MIN_LEVEL:
        return _small_subtree(_read_block(tx, (index << level) // _BLOCK), level, index)
    row = tx.fetchone("SELECT hash FROM log_nodes WHERE node_level = ? AND idx = ?", (level, index))
    if row is None:
        raise StorageError(f"store: log subtree ({level}, {index}) is missing")
    return bytes(row[0])


@dataclass(frozen=True)
class StagedAppend:
    """Entries written inside an open transaction; ``EventLog.publish`` it after commit."""

    first_index: int
    size: int
    root: bytes
    frontier: tuple[bytes, ...]


class EventLog:
    """The append-only RFC 9162 log of one node's database. Safe to share between threads."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._frontier: tuple[int, tuple[bytes, ...]] | None = None
        # Perfect-subtree hashes never change once written, so committed ones are cached.
        self._subtrees: dict[tuple[int, int], bytes] = {}

    @staticmethod
    def size_in(tx: Transaction) -> int:
        """The number of entries committed."""
        row = tx.fetchone("SELECT MAX(idx) FROM log_entries")
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def size(self) -> int:
        """The number of entries committed."""
        with self.db.transaction(write=False) as tx:
            return self.size_in(tx)

    @staticmethod
    def subtree_reader(tx: Transaction) -> SubtreeHash:
        """An accessor for ``core.merkle_log``: perfect-subtree hashes read from ``tx``."""

        def subtree(level: int, index: int) -> bytes:
            return _read_subtree(tx, level, index)

        return subtree

    def _cached_reader(self, tx: Transaction) -> SubtreeHash:
        """``subtree_reader`` through the cache of committed subtree hashes (read paths only).

        Small subtrees are rehashed from their 16-leaf block, which is cached whole (only full
        blocks: a partial one at the right edge still grows)."""
        cache = self._subtrees

        def remember(key: tuple[int, int], value: bytes) -> None:
            if len(cache) >= _SUBTREE_CACHE_SIZE:
                cache.clear()
            cache[key] = value

        def subtree(level: int, index: int) -> bytes:
            if level < STORED_MIN_LEVEL:
                block = (index << level) // _BLOCK
                hashes = cache.get((-1, block))
                if hashes is None:
                    hashes = _read_block(tx, block)
                    if len(hashes) == _BLOCK * HASH_SIZE:
                        remember((-1, block), hashes)
                return _small_subtree(hashes, level, index)
            value = cache.get((level, index))
            if value is None:
                value = _read_subtree(tx, level, index)
                remember((level, index), value)
            return value

        return subtree

    def _prefetch(self, tx: Transaction, proof: Callable[[SubtreeHash], object]) -> None:
        """Read every stored subtree hash a proof will need, missing from the cache, in one
        query. Which subtrees a proof reads depends only on the sizes and index, so a dry run
        with a recording accessor lists them."""
        needed: list[tuple[int, int]] = []

        def record(level: int, index: int) -> bytes:
            needed.append((level, index))
            return bytes(HASH_SIZE)

        proof(record)
        missing = [
            (level, index)
            for level, index in needed
            if level >= STORED_MIN_LEVEL and (level, index) not in self._subtrees
        ]
        if not missing:
            return
        where = " OR ".join(["(node_level = ? AND idx = ?)"] * len(missing))
        params = [value for pair in missing for value in pair]
        rows = tx.fetchall(f"SELECT node_level, idx, hash FROM log_nodes WHERE {where}", params)  # noqa: S608 - only placeholders are interpolated
        if len(self._subtrees) + len(rows) >= _SUBTREE_CACHE_SIZE:
            self._subtrees.clear()
        for level, index, value in rows:
            self._subtrees[(int(level), int(index))] = bytes(value)

    def _frontier_in(self, tx: Transaction, size: int) -> tuple[bytes, ...]:
        with self._lock:
            cached = self._frontier
        if cached is not None and cached[0] == size:
            return cached[1]
        subtree = self.subtree_reader(tx)
        frontier = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                frontier.append(subtree(level, start >> level))
                start += 1 << level
        return tuple(frontier)

    def append_in(self, tx: Transaction, entries: Sequence[bytes]) -> StagedAppend:
        """Append ``entries`` (each an entry's exact bytes) inside ``tx``; nothing is visible
        until it commits. Returns the first new index, the new size and root."""
        first = size = self.size_in(tx)
        stack = list(self._frontier_in(tx, size))
        entry_rows = []
        node_rows = []
        sha256 = hashlib.sha256
        for entry in entries:
            node = sha256(LEAF_PREFIX + entry).digest()  # leaf_hash, inlined: the hot loop
            entry_rows.append((size, entry, node))
            index = size
            level = 0
            # Completing a perfect subtree merges it with its left neighbour, level by level.
            while index & 1:
                node = node_hash(stack.pop(), node)
                level += 1
                index >>= 1
                if level >= STORED_MIN_LEVEL:
                    node_rows.append((level, index, node))
            stack.append(node)
            size += 1
        tx.executemany(
            "INSERT INTO log_entries (idx, entry, leaf_hash) VALUES (?, ?, ?)", entry_rows
        )
        if node_rows:
            tx.executemany(
                "INSERT INTO log_nodes (node_level, idx, hash) VALUES (?, ?, ?)", node_rows
            )
        frontier = tuple(stack)
        return StagedAppend(first, size, _frontier_root(frontier), frontier)

    def publish(self, staged: StagedAppend) -> None:
        """Remember the committed frontier so the next append reads nothing."""
        with self._lock:
            if self._frontier is None or staged.size >= self._frontier[0]:
                self._frontier = (staged.size, staged.frontier)

    def append(self, entries: Sequence[bytes]) -> StagedAppend:
        """Append entries in one transaction; they are durable when this returns."""
        with self.db.transaction() as tx:
            staged = self.append_in(tx, entries)
        self.publish(staged)
        return staged

    def _check_size(self, tx: Transaction, size: int) -> None:
        current = self.size_in(tx)
        if not 0 <= size <= current:
            raise NotFoundError(f"log: size {size} is beyond the log's {current} entries")

    def root(self, size: int | None = None) -> bytes:
        """The root at ``size`` (default: now). Raises NotFoundError beyond the log."""
        with self.db.transaction(write=False) as tx:
            if size is None:
                size = self.size_in(tx)
            self._check_size(tx, size)
            return root_at(size, self._cached_reader(tx))

    def entry(self, index: int) -> bytes:
        """The exact bytes of entry ``index``. Raises NotFoundError if there is none."""
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone("SELECT entry FROM log_entries WHERE idx = ?", (index,))
        if row is None:
            raise NotFoundError(f"log: no entry {index}")
        return bytes(row[0])

    def inclusion_proof(self, index: int, size: int) -> InclusionProof:
        """The proof that entry ``index`` is in the log of ``size`` entries."""
        with self.db.transaction(write=False) as tx:
            self._check_size(tx, size)
            if not 0 <= index < size:
                raise NotFoundError(f"log: no entry {index} in a log of size {size}")
            self._prefetch(tx, lambda reader: inclusion_proof(index, size, reader))
            path = inclusion_proof(index, size, self._cached_reader(tx))
        return InclusionProof(index, size, tuple(path))

    def consistency_proof(self, first: int, second: int) -> ConsistencyProof:
        """The proof that the log of ``second`` entries extends the one of ``first``."""
        with self.db.transaction(write=False) as tx:
            self._check_size(tx, second)
            if not 0 < first <= second:
                raise NotFoundError(
                    f"log: no consistency proof from size {first} to {second} "
                    "(need 0 < first <= second)"
                )
            self._prefetch(tx, lambda reader: consistency_proof(first, second, reader))
            path = consistency_proof(first, second, self._cached_reader(tx))
        return ConsistencyProof(first, second, tuple(path))
