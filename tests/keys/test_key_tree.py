"""The key tree over a real database (SQLite and PostgreSQL) and the software backend."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from oblivio.core.errors import IntegrityError
from oblivio.core.receipts import verify_destruction_receipt
from oblivio.core.signing import SigningKey
from oblivio.keys.custody import KeyTreeCustody
from oblivio.keys.key_tree import unpack_children
from oblivio.keys.software import SoftwareBackend
from oblivio.store.database import Database
from oblivio.store.key_tree_nodes import SqlKeyTreeStore
from tests.keys.helpers import add_artifacts, artifact_ids, data_key

NODE_KEY = SigningKey(bytes([7]) * 32)


def _custody(db: Database, tmp_path: Path, fanout: int, **kwargs: object) -> KeyTreeCustody:
    backend = SoftwareBackend(tmp_path / "roots")
    custody = KeyTreeCustody(backend, SqlKeyTreeStore(db), NODE_KEY, fanout=fanout, **kwargs)  # type: ignore[arg-type]
    custody.initialise()
    return custody


def _readable(custody: KeyTreeCustody, aid: str, capability: str = "decrypt") -> bool:
    try:
        key = custody.unwrap_capability_key(aid, capability)  # type: ignore[arg-type]
    except IntegrityError:
        return False
    assert key == data_key(aid, capability)
    return True


def _heads(db: Database) -> dict[str, tuple[int, int, int]]:
    with db.transaction(write=False) as tx:
        rows = tx.fetchall("SELECT tree, height, generation, next_slot FROM key_tree_heads")
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


@pytest.mark.parametrize("fanout", [2, 3, 16])
def test_tree_grows_and_every_leaf_unwraps(database: Database, tmp_path: Path, fanout: int) -> None:
    custody = _custody(database, tmp_path, fanout)
    ids = artifact_ids(0, 40)
    # Several batches of odd sizes, so that growth happens inside and between batches.
    for start, size in ((0, 1), (1, 2), (3, 10), (13, 27)):
        add_artifacts(database, custody, ids[start : start + size])
    heads = _heads(database)
    assert heads["wrap"][2] == 80
    assert heads["escrow"][2] == 40
    assert fanout ** heads["wrap"][0] >= 80 > fanout ** (heads["wrap"][0] - 1)
    for aid, capability in itertools.product(ids, ("decrypt", "prove", "recover")):
        assert _readable(custody, aid, capability)


@pytest.mark.parametrize("fanout", [2, 4, 64])
def test_forget_one_then_a_batch(database: Database, tmp_path: Path, fanout: int) -> None:
    custody = _custody(database, tmp_path, fanout)
    ids = artifact_ids(0, 50)
    add_artifacts(database, custody, ids)
    receipts = custody.forget([ids[7]])
    assert {r.key_ref["tree"] for r in receipts} == {"wrap", "escrow"}
    for receipt in receipts:
        verify_destruction_receipt(receipt.to_bytes(), NODE_KEY.verify_key)
    assert not _readable(custody, ids[7], "decrypt")
    assert not _readable(custody, ids[7], "recover")
    batch = [ids[i] for i in (0, 1, 2, 3, 20, 49)]
    custody.forget(batch)
    forgotten = {ids[7], *batch}
    for aid in ids:
        for capability in ("decrypt", "prove", "recover"):
            assert _readable(custody, aid, capability) == (aid not in forgotten)
    assert _heads(database)["wrap"][1] == 2
    # Only the two current roots are left in the backend.
    with database.transaction(write=False) as tx:
        roots = {r[0] for r in tx.fetchall("SELECT root_ref FROM key_tree_heads")}
        states = tx.fetchall("SELECT DISTINCT state FROM key_tree_journal")
    assert custody.backend.live_root_keys() == roots
    assert states == [("destroyed",)]


def test_forget_single_capability_keeps_the_others(database: Database, tmp_path: Path) -> None:
    custody = _custody(database, tmp_path, 4)
    ids = artifact_ids(0, 10)
    add_artifacts(database, custody, ids)
    receipts = custody.forget([ids[3]], ["prove"])
    assert [r.key_ref["tree"] for r in receipts] == ["wrap"]
    assert not _readable(custody, ids[3], "prove")
    assert _readable(custody, ids[3], "decrypt")
    assert _readable(custody, ids[3], "recover")


def test_forgetting_unknown_or_forgotten_keys_is_a_no_op(
    database: Database, tmp_path: Path
) -> None:
    custody = _custody(database, tmp_path, 4)
    ids = artifact_ids(0, 5)
    add_artifacts(database, custody, ids)
    assert len(custody.forget([ids[0]])) == 2
    assert custody.forget([ids[0]]) == []
    assert custody.forget(artifact_ids(100, 2)) == []
    assert _heads(database)["wrap"][1] == 1


def test_forget_everything_under_a_subtree_and_add_more(database: Database, tmp_path: Path) -> None:
    custody = _custody(database, tmp_path, 2)
    ids = artifact_ids(0, 16)
    add_artifacts(database, custody, ids)
    custody.forget(ids[:8])
    more = artifact_ids(16, 9)
    add_artifacts(database, custody, more)
    for aid in ids + more:
        assert _readable(custody, aid) == (aid not in ids[:8])


def test_moved_or_altered_wraps_do_not_unwrap(database: Database, tmp_path: Path) -> None:
    custody = _custody(database, tmp_path, 4)
    ids = artifact_ids(0, 20)
    add_artifacts(database, custody, ids)
    with database.transaction() as tx:
        # Swap two level-1 nodes' children (the leaf keys): positions are bound by the wrap
        # context.
        rows = tx.fetchall(
            "SELECT tree_level, idx, children FROM key_tree_nodes WHERE tree = 'wrap' "
            "AND tree_level = 1 ORDER BY idx LIMIT 2"
        )
        tx.execute(
            "UPDATE key_tree_nodes SET children = ? "
            "WHERE tree = 'wrap' AND tree_level = 1 AND idx = ?",
            (bytes(rows[1][2]), rows[0][1]),
        )
    assert not _readable(custody, ids[0])
    with database.transaction() as tx:
        tx.execute(
            "UPDATE key_tree_nodes SET children = ? "
            "WHERE tree = 'wrap' AND tree_level = 1 AND idx = ?",
            (bytes(rows[0][2]), rows[0][1]),
        )
        # Point a leaf at another slot: the slot is bound by the wrap context.
        tx.execute(
            "UPDATE artifact_keys SET tree_slot = 999 "
            "WHERE artifact_id = ? AND capability = 'decrypt'",
            (ids[1],),
        )
    assert _readable(custody, ids[0])
    assert not _readable(custody, ids[1])


def test_destruction_window_defers_destruction(database: Database, tmp_path: Path) -> None:
    now = [datetime(2026, 11, 22, 10, 0, tzinfo=UTC)]
    custody = _custody(
        database, tmp_path, 4, destruction_window=timedelta(hours=1), clock=lambda: now[0]
    )
    ids = artifact_ids(0, 10)
    add_artifacts(database, custody, ids)
    with database.transaction(write=False) as tx:
        old_roots = {r[0] for r in tx.fetchall("SELECT root_ref FROM key_tree_heads")}
    assert custody.forget([ids[0]]) == []
    assert not _readable(custody, ids[0])
    assert old_roots <= custody.backend.live_root_keys()
    assert custody.destroy_due() == []
    now[0] += timedelta(hours=1)
    receipts = custody.destroy_due()
    assert {r.key_ref["key_id"] for r in receipts} == old_roots
    assert not old_roots & custody.backend.live_root_keys()
    assert all(_readable(custody, aid) for aid in ids[1:])


def test_recover_destroys_orphan_and_resurrected_roots(database: Database, tmp_path: Path) -> None:
    custody = _custody(database, tmp_path, 4)
    ids = artifact_ids(0, 6)
    add_artifacts(database, custody, ids)
    orphan = custody.backend.create_root_key("wrap")  # as if a crash followed its creation
    [receipt, _] = custody.forget([ids[0]])
    destroyed = str(receipt.key_ref["key_id"])
    # SoftHSMv2 issue 903: a destroyed object is back after a crash. Put the key back.
    backend = custody.backend
    assert isinstance(backend, SoftwareBackend)
    backend._file.add(bytes.fromhex(destroyed[3:]), 1, bytes(32))
    report = custody.recover()
    assert report.orphan_roots_destroyed == (orphan,)
    assert report.resurrected_roots_destroyed == (destroyed,)
    assert report.receipts[0].evidence["destroyed_again"] is True
    assert not backend.has_root_key(destroyed)
    assert all(_readable(custody, aid) for aid in ids[1:])


def test_any_altered_node_byte_fails_closed(database: Database, tmp_path: Path) -> None:
    """Flipping any bit of any node row makes the keys below it unreadable, never wrong."""
    custody = _custody(database, tmp_path, 3)
    ids = artifact_ids(0, 12)
    add_artifacts(database, custody, ids)
    with database.transaction(write=False) as tx:
        rows = tx.fetchall(
            "SELECT tree_level, idx, children FROM key_tree_nodes WHERE tree = 'wrap'"
        )
    for level, index, children in rows:
        blob = bytes(children)
        for at in range(0, len(blob), 37):
            flipped = bytearray(blob)
            flipped[at] ^= 0x10
            with database.transaction() as tx:
                tx.execute(
                    "UPDATE key_tree_nodes SET children = ? "
                    "WHERE tree = 'wrap' AND tree_level = ? AND idx = ?",
                    (bytes(flipped), level, index),
                )
            # _readable asserts that whatever unwraps is the right key.
            readable = [_readable(custody, aid, c) for aid in ids for c in ("decrypt", "prove")]
            assert not all(readable), (level, index, at)
            with database.transaction() as tx:
                tx.execute(
                    "UPDATE key_tree_nodes SET children = ? "
                    "WHERE tree = 'wrap' AND tree_level = ? AND idx = ?",
                    (blob, level, index),
                )
    assert all(_readable(custody, aid) for aid in ids)


@pytest.mark.parametrize(
    "blob", [b"\x00" * 63, b"\x00\x00\x00\x01" + bytes(60) + b"\x00\x00\x00\x01" + bytes(60)]
)
def test_malformed_children_are_integrity_errors(blob: bytes) -> None:
    with pytest.raises(IntegrityError):
        unpack_children(blob)


def test_a_tree_keeps_its_fanout_when_the_configuration_changes(
    database: Database, tmp_path: Path
) -> None:
    custody = _custody(database, tmp_path, 4)
    ids = artifact_ids(0, 30)
    add_artifacts(database, custody, ids[:20])
    reconfigured = _custody(database, tmp_path, 64)
    add_artifacts(database, reconfigured, ids[20:])
    reconfigured.forget([ids[3], ids[25]])
    for aid in ids:
        assert _readable(reconfigured, aid) == (aid not in (ids[3], ids[25]))
    assert all(tree.fanout == 4 for tree in reconfigured.trees.values())
