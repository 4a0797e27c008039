"""Epoch commits, signed checkpoints and their history (DESIGN.md §7), on SQLite and PostgreSQL.

Everything a node serves is checked with the core verifiers only, as an auditor would."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest

from oblivio.core.canonical import canonical_json, parse_json
from oblivio.core.errors import NotFoundError, StorageError
from oblivio.core.merkle_log import leaf_hash
from oblivio.core.note import open_checkpoint, parse_verifier_key
from oblivio.core.signing import SigningKey
from oblivio.core.smt import verify_inclusion, verify_non_inclusion
from oblivio.node.checkpoints import CheckpointService, check_store_agrees
from oblivio.store.database import Database
from oblivio.store.smt_nodes import RetentionPolicy

NAME = "oblivio.test/node-a"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def _service(database: Database) -> CheckpointService:
    return CheckpointService(database, NAME, SigningKey(bytes(range(32))))


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - reproducible test keys, not secrets


def test_every_checkpoint_ends_in_its_epochs_map_root(database: Database) -> None:
    service = _service(database)
    verifier = parse_verifier_key(service.verifier_key)
    rng = _rng(1)
    leaves: dict[bytes, bytes] = {}
    commits = []
    for epoch in range(1, 6):
        updates: dict[bytes, bytes | None] = {
            rng.randbytes(32): rng.randbytes(32) for _ in range(20)
        }
        if leaves:
            updates[next(iter(leaves))] = None
        event = canonical_json({"type": "forget", "n": epoch})
        commit = service.commit_epoch(updates, [event], now=T0 + timedelta(seconds=epoch))
        for key, value in updates.items():
            if value is None:
                leaves.pop(key, None)
            else:
                leaves[key] = value
        assert commit.epoch == epoch
        commits.append(commit)
        # An auditor's view: verify the signed note, then the map_root under it.
        checkpoint = open_checkpoint(commit.checkpoint.note.encode(), verifier)
        assert checkpoint.origin == NAME
        assert checkpoint.size == commit.checkpoint.size
        entry, proof = service.map_root_inclusion(epoch)
        assert entry == {
            "type": "map_root",
            "epoch": epoch,
            "smt_root": commit.smt_root.hex(),
            "prev_smt_root": (commits[-2].smt_root.hex() if epoch > 1 else "00" * 32),
            "changes": len(updates),
        }
        assert proof.leaf_index == checkpoint.size - 1
        proof.verify(leaf_hash(canonical_json(entry)), checkpoint.root)
        # The SMT proof reaches the map_root's smt_root.
        key = next(iter(leaves))
        _, root, smt_proof = service.smt.prove(key, epoch)
        assert root.hex() == entry["smt_root"]
        verify_inclusion(root, key, leaves[key], smt_proof)
    # The forget event sits just before the map_root, under the same checkpoint.
    last = commits[-1]
    assert parse_json(service.log.entry(last.checkpoint.size - 2)) == {"type": "forget", "n": 5}
    assert check_store_agrees(database) == service.latest_checkpoint()


def test_consistency_between_any_two_checkpoints(database: Database) -> None:
    service = _service(database)
    verifier = parse_verifier_key(service.verifier_key)
    for i in range(6):
        service.commit_epoch({bytes([i]) * 32: bytes([i]) * 32}, [b'{"e":%d}' % i] * i)
    history = service.checkpoint_history()
    assert [c.epoch for c in history] == [1, 2, 3, 4, 5, 6]
    assert service.checkpoint_history(after_epoch=4, limit=1)[0].epoch == 5
    parsed = {c.epoch: open_checkpoint(c.note.encode(), verifier) for c in history}
    for a, first in parsed.items():
        for b, second in parsed.items():
            if a <= b:
                service.consistency_between(a, b).verify(first.root, second.root)
    with pytest.raises(NotFoundError):
        service.checkpoint(99)


def test_heartbeat_commits_empty_epochs_on_schedule(database: Database) -> None:
    service = _service(database)
    interval = timedelta(seconds=30)
    first = service.heartbeat(interval, now=T0)
    assert first is not None
    assert first.changes == 0
    assert service.heartbeat(interval, now=T0 + timedelta(seconds=10)) is None
    second = service.heartbeat(interval, now=T0 + timedelta(seconds=31))
    assert second is not None
    assert second.epoch == 2
    assert second.smt_root == first.smt_root == second.prev_smt_root
    entry, _ = service.map_root_inclusion(2)
    assert entry["changes"] == 0
    absent = bytes(32)
    _, root, proof = service.smt.prove(absent)
    verify_non_inclusion(root, absent, proof)


def test_latest_or_first_checkpoint(database: Database) -> None:
    service = _service(database)
    assert service.latest_checkpoint() is None
    assert check_store_agrees(database) is None
    first = service.latest_or_first_checkpoint()
    assert first.epoch == 1
    assert service.latest_or_first_checkpoint() == first
    assert first.checkpoint.size == 1


def test_disagreeing_store_is_detected(database: Database) -> None:
    service = _service(database)
    service.commit_epoch({bytes(32): bytes(32)})
    service.log.append([b'{"stray":true}'])
    with pytest.raises(StorageError, match="log size 2"):
        check_store_agrees(database)


def test_retention_policy_prunes_after_commits(database: Database) -> None:
    service = CheckpointService(
        database, NAME, SigningKey(bytes(range(32))), retention=RetentionPolicy(keep_versions=2)
    )
    key = bytes([9]) * 32
    for epoch in range(1, 6):
        service.commit_epoch({key: bytes([epoch]) * 32})
    _, root, proof = service.smt.prove(key, 4)
    verify_inclusion(root, key, bytes([4]) * 32, proof)
    with pytest.raises(NotFoundError, match="pruned"):
        service.smt.prove(key, 3)
    # The log and checkpoints keep every epoch: only SMT nodes are pruned.
    assert [c.epoch for c in service.checkpoint_history()] == [1, 2, 3, 4, 5]
    assert check_store_agrees(database) == service.latest_checkpoint()


def test_heartbeat_thread_commits_until_stopped(database: Database) -> None:
    service = _service(database)
    stop = threading.Event()
    thread = threading.Thread(
        target=service.run_heartbeats, args=(timedelta(milliseconds=20), stop), daemon=True
    )
    thread.start()
    try:
        # Wait (bounded) for the timer to have committed two epochs; no duration is asserted.
        for _ in range(1000):
            latest = service.latest_checkpoint()
            if latest is not None and latest.epoch >= 2:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    latest = service.latest_checkpoint()
    assert latest is not None
    assert latest.epoch >= 2
    entry, _ = service.map_root_inclusion(latest.epoch)
    assert entry["changes"] == 0
