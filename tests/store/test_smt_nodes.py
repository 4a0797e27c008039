"""The SMT persisted and versioned in the store (DESIGN.md §6), on SQLite and PostgreSQL."""

from __future__ import annotations

import gc
import random
import weakref

import pytest

from oblivio.core.errors import NotFoundError, StorageError, VerificationError
from oblivio.core.smt import EMPTY, root_from_leaves, verify_inclusion, verify_non_inclusion
from oblivio.store.database import Database
from oblivio.store.smt_nodes import GROUP_DEPTH, RetentionPolicy, SmtNodeStore


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - reproducible test keys, not secrets


def _batches(seed: int, count: int, size: int) -> list[dict[bytes, bytes | None]]:
    rng = _rng(seed)
    present: list[bytes] = []
    out: list[dict[bytes, bytes | None]] = []
    for _ in range(count):
        batch: dict[bytes, bytes | None] = {}
        for _ in range(size):
            roll = rng.random()
            if present and roll < 0.2:
                batch[present.pop(rng.randrange(len(present)))] = None
            elif present and roll < 0.4:
                batch[rng.choice(present)] = rng.randbytes(32)
            else:
                key = rng.randbytes(32)
                present.append(key)
                batch[key] = rng.randbytes(32)
        for key, value in batch.items():
            if value is None and key in present:
                present.remove(key)
        out.append(batch)
    return out


def test_batches_persist_and_reload_to_the_same_roots(database: Database) -> None:
    store = SmtNodeStore(database)
    leaves: dict[bytes, bytes] = {}
    roots = {0: EMPTY}
    for batch in _batches(1, 12, 300):
        staged = store.commit_batch(batch)
        for key, value in batch.items():
            if value is None:
                leaves.pop(key, None)
            else:
                leaves[key] = value
        assert staged.tree.root == root_from_leaves(leaves)
        roots[staged.tree.version] = staged.tree.root
    # A fresh store object loads the latest version from the rows and checks every hash.
    fresh = SmtNodeStore(database)
    assert fresh.tree().root == root_from_leaves(leaves)
    assert sorted(fresh.tree().leaves()) == sorted(leaves.items())
    for version, root in roots.items():
        assert fresh.root(version) == root


def test_proofs_against_every_retained_root(database: Database) -> None:
    store = SmtNodeStore(database)
    history: list[dict[bytes, bytes]] = []
    leaves: dict[bytes, bytes] = {}
    for batch in _batches(2, 6, 200):
        store.commit_batch(batch)
        for key, value in batch.items():
            if value is None:
                leaves.pop(key, None)
            else:
                leaves[key] = value
        history.append(dict(leaves))
    fresh = SmtNodeStore(database)
    rng = _rng(3)
    for version, snapshot in enumerate(history, start=1):
        root = fresh.root(version)
        for key in rng.sample(sorted(snapshot), 10):
            got_version, got_root, proof = fresh.prove(key, version)
            assert (got_version, got_root) == (version, root)
            verify_inclusion(root, key, snapshot[key], proof)
            # The same proof does not show the key in another version with another value.
            if version < len(history) and history[-1].get(key) != snapshot[key]:
                with pytest.raises(VerificationError):
                    verify_inclusion(fresh.root(), key, snapshot[key], proof)
        absent = rng.randbytes(32)
        _, _, proof = fresh.prove(absent, version)
        verify_non_inclusion(root, absent, proof)


def test_deep_groups_are_written_and_read(database: Database) -> None:
    # Keys sharing 20 bits put nodes below the group depth.
    rng = _rng(4)
    prefix = rng.getrandbits(20)
    keys = [((prefix << 236) | rng.getrandbits(236)).to_bytes(32, "big") for _ in range(50)]
    store = SmtNodeStore(database)
    store.commit_batch({k: bytes(32 - 1) + b"\x01" for k in keys})
    store.commit_batch(dict.fromkeys(keys[:10]))
    _, _, proof = SmtNodeStore(database).prove(keys[20], 1)
    assert proof.depth > GROUP_DEPTH
    verify_inclusion(store.root(1), keys[20], bytes(31) + b"\x01", proof)
    _, _, gone = SmtNodeStore(database).prove(keys[0])
    verify_non_inclusion(store.root(), keys[0], gone)


def test_each_batch_writes_only_its_changed_leaves(database: Database) -> None:
    store = SmtNodeStore(database)
    rng = _rng(5)
    first = {rng.randbytes(32): rng.randbytes(32) for _ in range(2000)}
    store.commit_batch(first)
    # A new key in the group (first 12 bits) of an existing one.
    staged = store.commit_batch({next(iter(first))[:2] + rng.randbytes(30): rng.randbytes(32)})
    # In memory, one new leaf rewrites its path (about log2(2000) nodes), nothing else.
    assert len(staged.result.rows()) <= 2 * 16
    # In the store: one delta row for the leaf's group (the leaf) and one for the top (that
    # group's summary); no interior node is written.
    with database.transaction(write=False) as tx:
        rows = tx.fetchall(
            "SELECT group_key, node_count, nodes FROM smt_nodes WHERE version = 2 "
            "ORDER BY group_key"
        )
    assert [(bytes(g), int(n)) for g, n, _ in rows] == [
        (b"", 1),
        (bytes(rows[1][0]), 1),
    ]
    assert len(bytes(rows[1][2])) == 1 + 4 + 64
    assert len(bytes(rows[0][2])) < 200


def test_group_snapshot_bounds_what_a_read_replays(database: Database) -> None:
    # Many batches into one group: once the deltas outgrow the group's snapshot, a new
    # snapshot is written, so a fresh reader replays at most one snapshot and a short chain.
    rng = _rng(11)
    keys = [bytes([0xAB, 0xC0 | i]) + rng.randbytes(30) for i in range(16)]
    store = SmtNodeStore(database)
    for _ in range(12):
        store.commit_batch({k: rng.randbytes(32) for k in rng.sample(keys, 8)})
    with database.transaction(write=False) as tx:
        rows = tx.fetchall(
            "SELECT version, nodes FROM smt_nodes WHERE group_key = ? ORDER BY version",
            (bytes([0x0A, 0xBC]),),
        )
    snapshots = [int(v) for v, blob in rows if bytes(blob)[0] == 1]
    assert len(snapshots) >= 2
    fresh = SmtNodeStore(database)
    leaves = dict(store.tree().leaves())
    for key in keys:
        _, root, proof = fresh.prove(key)
        verify_inclusion(root, key, leaves[key], proof)


def test_pruning_keeps_retained_versions_provable(database: Database) -> None:
    store = SmtNodeStore(database)
    snapshots: list[dict[bytes, bytes]] = []
    leaves: dict[bytes, bytes] = {}
    for batch in _batches(6, 10, 100):
        store.commit_batch(batch)
        for key, value in batch.items():
            if value is None:
                leaves.pop(key, None)
            else:
                leaves[key] = value
        snapshots.append(dict(leaves))
    with database.transaction(write=False) as tx:
        before = tx.fetchone("SELECT COUNT(*) FROM smt_nodes")
    deleted = store.prune(RetentionPolicy(keep_versions=3))
    assert deleted > 0
    with database.transaction(write=False) as tx:
        after = tx.fetchone("SELECT COUNT(*) FROM smt_nodes")
    assert before is not None
    assert after is not None
    assert int(after[0]) == int(before[0]) - deleted
    fresh = SmtNodeStore(database)
    for version in (8, 9, 10):
        snapshot = snapshots[version - 1]
        for key in sorted(snapshot)[:20]:
            _, root, proof = fresh.prove(key, version)
            verify_inclusion(root, key, snapshot[key], proof)
    with pytest.raises(NotFoundError, match="pruned"):
        fresh.prove(next(iter(snapshots[0])), 7)
    assert fresh.tree().root == root_from_leaves(leaves)
    # Pruning again with the same policy finds nothing more; new batches still work.
    assert store.prune(RetentionPolicy(keep_versions=3)) == 0
    store.commit_batch({bytes(32): bytes(32)})
    assert SmtNodeStore(database).tree().root == store.tree().root


def test_pruning_after_a_stricter_policy_keeps_its_floor(database: Database) -> None:
    # Regression: a looser policy after a stricter one pruned further must not try to read the
    # versions the stricter one already dropped.
    store = SmtNodeStore(database)
    leaves: dict[bytes, bytes] = {}
    for batch in _batches(12, 12, 80):
        store.commit_batch(batch)
        for key, value in batch.items():
            if value is None:
                leaves.pop(key, None)
            else:
                leaves[key] = value
    store.prune(RetentionPolicy(keep_versions=2))
    assert store.prune(RetentionPolicy(keep_versions=8)) == 0
    store.commit_batch({bytes(32): bytes(32)})
    leaves[bytes(32)] = bytes(32)
    store.prune(RetentionPolicy(keep_versions=8))
    fresh = SmtNodeStore(database)
    for key in sorted(leaves)[:20]:
        _, root, proof = fresh.prove(key, 13)
        verify_inclusion(root, key, leaves[key], proof)
    with pytest.raises(NotFoundError, match="pruned"):
        fresh.prove(bytes(32), 10)


def test_a_discarded_store_is_freed(database: Database) -> None:
    # Regression: the stubs of a lazily opened tree reached the store through a reference
    # cycle, which gc_paused froze, so every store ever opened stayed in memory with its tree.
    rng = _rng(13)
    keys = [rng.randbytes(32) for _ in range(3000)]
    SmtNodeStore(database).commit_batch({k: rng.randbytes(32) for k in keys})
    refs = []
    for key in keys[:3]:
        store = SmtNodeStore(database)
        store.prove(key)
        refs.append(weakref.ref(store))
        del store
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def _flip_last_byte(database: Database, group_key: bytes, version: int) -> None:
    with database.transaction() as tx:
        row = tx.fetchone(
            "SELECT nodes FROM smt_nodes WHERE group_key = ? AND version = ?", (group_key, version)
        )
        assert row is not None
        blob = bytearray(bytes(row[0]))
        blob[-1] ^= 1
        tx.execute(
            "UPDATE smt_nodes SET nodes = ? WHERE group_key = ? AND version = ?",
            (bytes(blob), group_key, version),
        )


def test_corrupted_top_is_detected_on_load(database: Database) -> None:
    store = SmtNodeStore(database)
    rng = _rng(8)
    store.commit_batch({rng.randbytes(32): rng.randbytes(32) for _ in range(50)})
    _flip_last_byte(database, b"", 1)
    with pytest.raises(StorageError, match="inconsistent"):
        SmtNodeStore(database).tree()


def test_corrupted_group_is_detected_when_loaded_and_only_then(database: Database) -> None:
    # Opening reads the top only; a group is read, rebuilt and checked when first reached.
    store = SmtNodeStore(database)
    rng = _rng(9)
    leaves = {rng.randbytes(32): rng.randbytes(32) for _ in range(20_000)}
    store.commit_batch(leaves)
    victim, other = sorted(leaves)[0], sorted(leaves)[-1]
    group = int.from_bytes(victim[:2], "big") >> 4  # its first 12 bits
    _flip_last_byte(database, group.to_bytes(2, "big"), 1)
    fresh = SmtNodeStore(database)
    assert fresh.tree().root == store.tree().root
    _, root, proof = fresh.prove(other)
    verify_inclusion(root, other, leaves[other], proof)
    with pytest.raises(StorageError, match="inconsistent"):
        fresh.prove(victim)


def test_wrong_version_is_refused(database: Database) -> None:
    store = SmtNodeStore(database)
    with database.transaction() as tx, pytest.raises(ValueError, match="expected version 1"):
        store.stage(tx, {bytes(32): bytes(32)}, 5)
    with pytest.raises(NotFoundError):
        store.prove(bytes(32), 3)
