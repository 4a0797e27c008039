"""The backup test (issue 4 acceptance), for every backend.

Before forgetting artifact A at level 1, copy everything a routine backup holds: the database and
the node home, except the erasable key store (the software root-key file, the HSM token, the
custodians' share files). After the destruction that copy, together with the live key store,
cannot unwrap A's key, while every other artifact still decrypts on the live node. With a
destruction window W the copy still reads, within W, what it holds under roots W keeps alive,
and after W nothing it held under destroyed roots.

The copy is read as an attacker would: a custody over the copied database and the live key
store, with no recovery run (recovery belongs to a node that *is* restored, and replaces the
live one).
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from oblivio.core.errors import IntegrityError, NodeStateMismatchError
from oblivio.core.identifiers import ArtifactId
from oblivio.keys.backend import open_key_backend
from oblivio.keys.custody import KeyTreeCustody, plan_restore, restore_backup
from oblivio.node.node import Node, init_node
from oblivio.store.database import open_database
from oblivio.store.key_tree_nodes import SqlKeyTreeStore

ERASABLE = ("software-root-keys", "shares", "binding")


def _backup(node: Node, target: Path) -> Path:
    """A routine backup: the home without the erasable key store, and a consistent copy of the
    database (SQLite's online backup)."""
    shutil.copytree(
        node.home,
        target,
        ignore=lambda _dir, names: [
            n for n in names if n in ERASABLE or n.startswith("oblivio.db")
        ],
    )
    source = sqlite3.connect(node.home / "oblivio.db")
    copy = sqlite3.connect(target / "oblivio.db")
    with copy:
        source.backup(copy)
    source.close()
    copy.close()
    return target


def _with_live_key_store(node: Node, restored: Path) -> None:
    """Bring the live erasable key store next to the copy (for pkcs11 it is the token itself)."""
    live_keys = node.home / "keys"
    if not live_keys.exists():
        return
    for path in live_keys.rglob("*"):
        if path.name in ERASABLE:
            target = restored / path.relative_to(node.home)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _reader(node: Node, restored: Path, **kwargs: object) -> KeyTreeCustody:
    db = open_database("sqlite:///" + str(restored / "oblivio.db").lstrip("/"))
    backend = open_key_backend(node.config.keys_uri, restored)
    return KeyTreeCustody(backend, SqlKeyTreeStore(db), node.signing_key, **kwargs)  # type: ignore[arg-type]


def _can_unwrap(custody: KeyTreeCustody, aid: ArtifactId) -> bool:
    try:
        custody.unwrap_capability_key(aid, "decrypt")
    except IntegrityError:
        return False
    return True


def _put(node: Node, count: int) -> list[ArtifactId]:
    return [node.vault.put(b"payload %d" % i, {"i": i}) for i in range(count)]


def test_backup_cannot_unwrap_a_forgotten_artifact(keys_uri: str, tmp_path: Path) -> None:
    with init_node(tmp_path / "home", name="live", keys_uri=keys_uri) as node:
        ids = _put(node, 40)
        forgotten = ids[11]
        restored = _backup(node, tmp_path / "backup")
        _with_live_key_store(node, restored)
        copy_before = _reader(node, restored)
        assert _can_unwrap(copy_before, forgotten)  # the copy is complete before the forget
        copy_before.backend.close()
        copy_before.store.db.close()  # type: ignore[attr-defined]

        receipts = node.vault.custody.forget([forgotten])  # type: ignore[attr-defined]
        assert len(receipts) == 2

        _with_live_key_store(node, restored)
        attacker = _reader(node, restored)
        assert not _can_unwrap(attacker, forgotten)
        # W = 0: every root the copy was written under is destroyed; it reads nothing.
        assert not any(_can_unwrap(attacker, aid) for aid in ids)
        # Splicing the copy's old leaf of A into the live tree does not help either.
        with attacker.store.db.transaction(write=False) as tx:  # type: ignore[attr-defined]
            old_leaf = tx.fetchone(
                "SELECT decrypt_slot, decrypt_key FROM artifacts WHERE artifact_id = ?",
                (forgotten,),
            )
        assert old_leaf is not None
        with node.db.transaction() as tx:
            tx.execute(
                "UPDATE artifacts SET decrypt_slot = ?, decrypt_key = ? WHERE artifact_id = ?",
                (*old_leaf, forgotten),
            )
        with pytest.raises(IntegrityError):
            node.vault.get(forgotten)
        for i, aid in enumerate(ids):
            if aid != forgotten:
                assert node.vault.get(aid) == b"payload %d" % i
        attacker.backend.close()
        attacker.store.db.close()  # type: ignore[attr-defined]


def test_destruction_window_is_the_backup_window(keys_uri: str, tmp_path: Path) -> None:
    now = [datetime(2026, 11, 22, 10, 0, tzinfo=UTC)]
    window = timedelta(days=7)
    with init_node(tmp_path / "home", name="live", keys_uri=keys_uri) as node:
        live = KeyTreeCustody(
            node.backend,
            SqlKeyTreeStore(node.db),
            node.signing_key,
            destruction_window=window,
            clock=lambda: now[0],
        )
        ids = _put(node, 12)
        forgotten, kept = ids[3], ids[4]
        restored = _backup(node, tmp_path / "backup")
        assert live.forget([forgotten]) == []  # destruction deferred by the window
        assert not _can_unwrap(live, forgotten)

        # Within W the copy still reads what it holds, the forgotten artifact included.
        _with_live_key_store(node, restored)
        within = _reader(node, restored)
        assert _can_unwrap(within, forgotten)
        assert _can_unwrap(within, kept)
        within.backend.close()

        now[0] += window
        receipts = live.destroy_due()
        assert len(receipts) == 2
        _with_live_key_store(node, restored)
        after = _reader(node, restored)
        assert not _can_unwrap(after, forgotten)
        assert not _can_unwrap(after, kept)  # held under a destroyed root: gone from the copy
        assert _can_unwrap(live, kept)  # but the live node reads it
        assert node.vault.get(kept) == b"payload 4"
        after.backend.close()


def test_a_restored_standby_root_does_not_keep_a_newer_tree_alive(
    keys_uri: str, tmp_path: Path
) -> None:
    """ADR 0008: a backup names as its standby a root that the live node later made the root of
    a newer tree. The restored database is refused until ``restore-backup`` (docs/adr/0016),
    which destroys that root, so a copy of that newer tree (which still holds keys the
    restored node goes on to forget) reads nothing."""
    with init_node(tmp_path / "home", name="live", keys_uri=keys_uri) as node:
        ids = _put(node, 12)
        node.vault.custody.forget([ids[0]])  # type: ignore[attr-defined]
        with node.db.transaction(write=False) as tx:
            row = tx.fetchone("SELECT standby_root FROM key_tree_heads WHERE tree = 'wrap'")
        assert row is not None
        standby = row[0]
        restored = _backup(node, tmp_path / "backup")  # the head names the standby
        node.vault.custody.forget([ids[1]])  # the live tree moves to the standby root
        newer = _backup(node, tmp_path / "newer")
        _with_live_key_store(node, restored)
    # The live node is gone; the backup is restored in its place, with the live key store. It
    # is refused as older than the key store (docs/adr/0016), destroying nothing...
    restored_node = _reader(node, restored)
    with pytest.raises(NodeStateMismatchError) as refused:
        restored_node.check_key_store(node.signing_key.key_id)
    assert refused.value.kind == "database_older"
    assert restored_node.backend.has_root_key(standby)
    # ...until restore-backup, told what it destroys, brings it back into service.
    plan = plan_restore(restored_node, node.signing_key.key_id)
    assert standby in plan.roots_to_destroy
    restore_backup(restored_node, node.signing_key.key_id, plan)
    assert not restored_node.backend.has_root_key(standby)
    restored_node.check_key_store(node.signing_key.key_id)
    # A copy of the newer tree, read with the key store the restored node now owns.
    newer_tree = KeyTreeCustody(
        open_key_backend(node.config.keys_uri, restored),
        SqlKeyTreeStore(open_database("sqlite:///" + str(newer / "oblivio.db").lstrip("/"))),
        node.signing_key,
    )
    assert not any(_can_unwrap(newer_tree, aid) for aid in ids)
    for custody in (restored_node, newer_tree):
        custody.backend.close()
        custody.store.db.close()  # type: ignore[attr-defined]
