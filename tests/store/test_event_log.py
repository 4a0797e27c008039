"""The Forget Event Log persisted in the store (DESIGN.md §7), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from oblivio.core.errors import NotFoundError
from oblivio.core.merkle_log import EMPTY_ROOT, leaf_hash, root_from_leaf_hashes
from oblivio.store.database import Database
from oblivio.store.event_log import EventLog


def _entries(start: int, count: int) -> list[bytes]:
    return [b'{"n":%d}' % i for i in range(start, start + count)]


def test_appends_roots_and_proofs_between_any_sizes(database: Database) -> None:
    log = EventLog(database)
    assert log.size() == 0
    assert log.root() == EMPTY_ROOT
    all_entries: list[bytes] = []
    for count in (1, 2, 5, 1, 13, 7):
        batch = _entries(len(all_entries), count)
        staged = log.append(batch)
        assert staged.first_index == len(all_entries)
        all_entries += batch
        assert staged.size == len(all_entries)
        assert staged.root == root_from_leaf_hashes([leaf_hash(e) for e in all_entries])
    hashes = [leaf_hash(e) for e in all_entries]
    fresh = EventLog(database)  # nothing cached
    n = len(all_entries)
    roots = {size: root_from_leaf_hashes(hashes[:size]) for size in range(n + 1)}
    for size in range(1, n + 1):
        assert fresh.root(size) == roots[size]
        for index in range(size):
            fresh.inclusion_proof(index, size).verify(hashes[index], roots[size])
        for first in range(1, size + 1):
            fresh.consistency_proof(first, size).verify(roots[first], roots[size])
    assert fresh.entry(3) == all_entries[3]
    # A fresh object appends correctly after reading the frontier back.
    fresh.append(_entries(n, 3))
    assert fresh.root() == root_from_leaf_hashes(hashes + [leaf_hash(e) for e in _entries(n, 3)])


def test_out_of_range_requests_are_not_found(database: Database) -> None:
    log = EventLog(database)
    log.append(_entries(0, 4))
    with pytest.raises(NotFoundError):
        log.inclusion_proof(4, 4)
    with pytest.raises(NotFoundError):
        log.inclusion_proof(0, 5)
    with pytest.raises(NotFoundError):
        log.consistency_proof(0, 4)
    with pytest.raises(NotFoundError):
        log.entry(9)
    with pytest.raises(NotFoundError):
        log.root(5)


def test_failed_transaction_appends_nothing(database: Database) -> None:
    log = EventLog(database)
    log.append(_entries(0, 3))

    def append_then_fail() -> None:
        with database.transaction() as tx:
            log.append_in(tx, _entries(3, 2))
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        append_then_fail()
    assert log.size() == 3
    staged = log.append(_entries(3, 1))
    assert staged.root == root_from_leaf_hashes([leaf_hash(e) for e in _entries(0, 4)])


def test_larger_log_proofs_cross_stored_and_rehashed_levels(database: Database) -> None:
    log = EventLog(database)
    entries = _entries(0, 300)
    start = 0
    for size in (7, 40, 1, 100, 152):
        log.append(entries[start : start + size])
        start += size
    hashes = [leaf_hash(e) for e in entries]
    fresh = EventLog(database)
    for size in (16, 17, 33, 128, 257, 300):
        root = root_from_leaf_hashes(hashes[:size])
        assert fresh.root(size) == root
        for index in range(0, size, 7):
            fresh.inclusion_proof(index, size).verify(hashes[index], root)
        for first in (1, 15, 16, 31, 64, 200):
            if first <= size:
                fresh.consistency_proof(first, size).verify(
                    root_from_leaf_hashes(hashes[:first]), root
                )
    with database.transaction(write=False) as tx:
        stored = tx.fetchone("SELECT MIN(node_level), COUNT(*) FROM log_nodes")
    assert stored is not None
    assert stored[0] == 4  # smaller subtrees are rehashed from their leaves
