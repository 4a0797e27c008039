"""``KeyTreeCustody.check_key_store``, refusal by refusal (docs/adr/0016), on both stores: each
mismatch is refused with its kind and destroys nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from oblivio.core.errors import NodeStateMismatchError
from oblivio.core.signing import SigningKey
from oblivio.keys.backend import KeyStoreBinding
from oblivio.keys.custody import KeyTreeCustody
from oblivio.keys.software import SoftwareBackend
from oblivio.store.database import Database
from oblivio.store.key_tree_nodes import SqlKeyTreeStore
from tests.keys.helpers import add_artifacts, artifact_ids

NODE_KEY = SigningKey(bytes([9]) * 32)


def _custody(db: Database, key_file: Path) -> KeyTreeCustody:
    custody = KeyTreeCustody(
        SoftwareBackend(key_file, create=True), SqlKeyTreeStore(db), NODE_KEY, fanout=4
    )
    custody.check_key_store(NODE_KEY.key_id)
    custody.initialise()
    return custody


def _refused(custody: KeyTreeCustody, kind: str, node_key_id: str = NODE_KEY.key_id) -> None:
    live = custody.backend.live_root_keys()
    with pytest.raises(NodeStateMismatchError) as refused:
        custody.check_key_store(node_key_id)
    assert refused.value.kind == kind
    assert custody.backend.live_root_keys() == live  # nothing destroyed


def test_a_bound_pair_opens_and_a_forget_advances_both_generations(
    database: Database, tmp_path: Path
) -> None:
    custody = _custody(database, tmp_path / "keys")
    add_artifacts(database, custody, artifact_ids(0, 4))
    before = custody.backend.binding()
    assert before is not None
    custody.forget(artifact_ids(0, 1))
    after = custody.backend.binding()
    assert after is not None
    assert after.generation > before.generation
    with custody.store.transaction(write=False) as nodes:
        recorded = nodes.binding()
    assert recorded is not None
    assert recorded.generation >= after.generation
    assert custody.check_key_store(NODE_KEY.key_id) == recorded


def test_a_key_store_lacking_the_trees_roots_is_refused(database: Database, tmp_path: Path) -> None:
    custody = _custody(database, tmp_path / "keys")
    with custody.store.transaction(write=False) as nodes:
        head = nodes.head("wrap")
    assert head is not None
    custody.backend.destroy_root_key(head.root_ref)
    _refused(custody, "key_store_missing_roots")


def test_a_key_store_without_a_binding_is_refused(database: Database, tmp_path: Path) -> None:
    _custody(database, tmp_path / "keys")
    other = KeyTreeCustody(
        SoftwareBackend(tmp_path / "empty", create=True), SqlKeyTreeStore(database), NODE_KEY
    )
    _refused(other, "key_store_unbound")


def test_a_key_store_made_with_another_database_is_refused(
    database: Database, tmp_path: Path
) -> None:
    custody = _custody(database, tmp_path / "keys")
    kept = custody.backend.binding()
    assert kept is not None
    custody.backend.bind(KeyStoreBinding("00" * 16, kept.node, kept.generation))
    _refused(custody, "foreign_key_store")


def test_a_database_of_another_node_is_refused(database: Database, tmp_path: Path) -> None:
    custody = _custody(database, tmp_path / "keys")
    _refused(custody, "foreign_database", SigningKey(bytes([10]) * 32).key_id)


def test_an_empty_database_beside_a_key_store_with_roots_is_refused(
    database: Database, tmp_path: Path
) -> None:
    backend = SoftwareBackend(tmp_path / "keys", create=True)
    backend.create_root_key("wrap")  # a pre-binding key store with a root in it
    _refused(KeyTreeCustody(backend, SqlKeyTreeStore(database), NODE_KEY), "database_unbound")
