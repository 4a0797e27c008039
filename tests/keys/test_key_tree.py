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
from oblivio.keys.key_tree import node_offsets
from oblivio.keys.software import SoftwareBackend
from oblivio.store.database import Database
from oblivio.store.key_tree_nodes import SqlKeyTreeStore
from tests.keys.helpers import add_artifacts, artifact_ids, data_key

NODE_KEY = SigningKey(bytes([7]) * 32)


def _custody(db: Database, tmp_path: Path, fanout: int, **kwargs: object) -> KeyTreeCustody:
    backend = SoftwareBackend(tmp_path / "roots", create=True)
    custody = KeyTreeCustody(backend, SqlKeyTreeStore(db), NODE_KEY, fanout=fanout, **kwargs)  # type: ignore[arg-type]
    custody.check_key_store(NODE_KEY.key_id)  # binds a new pair, checks a bound one
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
    # Only the two current roots (and the standbys for the next forgets) are left.
    with database.transaction(write=False) as tx:
        # The roots the database accounts for: each head's root and its standby (ADR 0008).
        roots = {
            ref
            for row in tx.fetchall("SELECT root_ref, standby_root FROM key_tree_heads")
            for ref in row
            if ref is not None
        }
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
        tx.execute("UPDATE artifacts SET decrypt_slot = 999 WHERE artifact_id = ?", (ids[1],))
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


def test_recover_destroys_planned_and_resurrected_roots_and_keeps_unknown_ones(
    database: Database, tmp_path: Path
) -> None:
    """docs/adr/0016: recovery destroys a root this database planned and never adopted (a
    crash between naming it and using it) and a destroyed root that came back, and keeps a
    root it knows nothing of (reported, never destroyed)."""
    custody = _custody(database, tmp_path, 4)
    ids = artifact_ids(0, 6)
    add_artifacts(database, custody, ids)
    with custody.store.transaction() as nodes:  # named, committed...
        plan = custody.trees["wrap"].plan_root(nodes)
    planned = custody.trees["wrap"].make_root(plan)  # ...made, and then a crash
    unknown = custody.backend.create_root_key("wrap")  # not named by this database
    [receipt, _] = custody.forget([ids[0]])
    destroyed = str(receipt.key_ref["key_id"])
    # SoftHSMv2 issue 903: a destroyed object is back after a crash. Put the key back.
    backend = custody.backend
    assert isinstance(backend, SoftwareBackend)
    backend._file.add(bytes.fromhex(destroyed[3:]), 1, bytes(32))
    report = custody.recover()
    assert report.abandoned_roots_destroyed == (planned,)
    assert report.resurrected_roots_destroyed == (destroyed,)
    assert report.unknown_roots == (unknown,)
    assert report.receipts[0].evidence["destroyed_again"] is True
    assert not backend.has_root_key(destroyed)
    assert not backend.has_root_key(planned)
    assert backend.has_root_key(unknown)
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
    "blob",
    [
        bytes(4),  # no children listed: an empty node is stored as b""
        (2).to_bytes(4, "big") + bytes(4),  # fewer offsets than it counts
        (1).to_bytes(4, "big") + bytes(4),  # no seal
        (2).to_bytes(4, "big") + (1).to_bytes(4, "big") * 2 + bytes(92),  # an offset twice
        (2).to_bytes(4, "big") + (2).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes(92),
    ],
)
def test_malformed_children_are_integrity_errors(blob: bytes) -> None:
    with pytest.raises(IntegrityError):
        node_offsets(blob)


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


def _head(db: Database, tree: str) -> tuple[str, str | None]:
    with db.transaction(write=False) as tx:
        row = tx.fetchone(
            "SELECT root_ref, standby_root FROM key_tree_heads WHERE tree = ?", (tree,)
        )
    assert row is not None
    return row[0], row[1]


def test_a_forget_moves_to_the_standby_made_by_the_previous_destruction(
    database: Database, tmp_path: Path
) -> None:
    """ADR 0008: the write that destroys a root makes the next one, recorded as the standby."""
    custody = _custody(database, tmp_path, 4)
    ids = artifact_ids(0, 12)
    add_artifacts(database, custody, ids)
    assert _head(database, "wrap")[1] is None
    custody.forget([ids[0]])
    root, standby = _head(database, "wrap")
    assert standby is not None
    assert standby != root
    assert custody.backend.has_root_key(standby)
    [receipt, _] = custody.forget([ids[1]])
    assert _head(database, "wrap")[0] == standby
    assert receipt.key_ref["key_id"] == root
    assert not custody.backend.has_root_key(root)
    for aid in ids:
        assert _readable(custody, aid) == (aid not in ids[:2])


def test_a_standby_root_gone_from_the_backend_is_replaced(
    database: Database, tmp_path: Path
) -> None:
    custody = _custody(database, tmp_path, 4)
    ids = artifact_ids(0, 8)
    add_artifacts(database, custody, ids)
    custody.forget([ids[0]])
    _, standby = _head(database, "wrap")
    assert standby is not None
    custody.backend.destroy_root_key(standby)
    custody.forget([ids[1]])
    root, _ = _head(database, "wrap")
    assert root != standby
    assert custody.backend.has_root_key(root)
    for aid in ids:
        assert _readable(custody, aid) == (aid not in ids[:2])


def test_recovery_keeps_standby_roots(database: Database, tmp_path: Path) -> None:
    """Standbys are named by the database and survive recovery (ADR 0008 destroyed them on
    every open; docs/adr/0016): the next forget moves to them."""
    custody = _custody(database, tmp_path, 4)
    ids = artifact_ids(0, 8)
    add_artifacts(database, custody, ids)
    custody.forget([ids[0]])
    standbys = {_head(database, tree)[1] for tree in ("wrap", "escrow")}
    assert None not in standbys
    report = custody.recover()
    assert not report.changed
    assert {_head(database, tree)[1] for tree in ("wrap", "escrow")} == standbys
    custody.forget([ids[1]])
    assert {_head(database, tree)[0] for tree in ("wrap", "escrow")} == standbys
    for aid in ids:
        assert _readable(custody, aid) == (aid not in ids[:2])


def test_a_forgotten_leaf_is_gone_from_the_live_tree_though_its_wrapped_key_stays(
    database: Database, tmp_path: Path
) -> None:
    """The live tree says a leaf is forgotten (docs/adr/0014): its leaf key is in no live node,
    so the wrapped key left in the row cannot be unwrapped, and a second forget finds nothing
    to do."""
    custody = _custody(database, tmp_path, 4)
    ids = artifact_ids(0, 4)
    add_artifacts(database, custody, ids)
    with database.transaction(write=False) as tx:
        before = tx.fetchone(
            "SELECT decrypt_slot, decrypt_key FROM artifacts WHERE artifact_id = ?", (ids[2],)
        )
    custody.forget([ids[2]], ["decrypt"])
    with database.transaction(write=False) as tx:
        after = tx.fetchone(
            "SELECT decrypt_slot, decrypt_key, prove_key FROM artifacts WHERE artifact_id = ?",
            (ids[2],),
        )
    assert before is not None
    assert after is not None
    assert tuple(after[:2]) == tuple(before)  # the row is not rewritten
    assert not _readable(custody, ids[2])
    assert _readable(custody, ids[2], "prove")
    assert custody.forget([ids[2]], ["decrypt"]) == []
    assert custody.begin_forget([ids[2]], ["decrypt"]) == []
    tree = custody.trees["wrap"]
    with SqlKeyTreeStore(database).transaction(write=False) as nodes:
        [leaf] = nodes.find_leaves([(ids[2], "decrypt")])
        with pytest.raises(IntegrityError):
            tree.unwrap_leaf(nodes, leaf)
