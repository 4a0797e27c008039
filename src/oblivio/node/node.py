"""A node: its home, database, key backend and the services built on them."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from oblivio.core.errors import InvalidInputError, OblivioError
from oblivio.core.signing import SigningKey
from oblivio.keys.backend import WrappingKeyBackend, check_keys_uri, open_key_backend
from oblivio.keys.custody import KeyTreeCustody
from oblivio.keys.key_tree import MIN_FANOUT
from oblivio.node.home import (
    DEFAULT_KEYS_URI,
    MAX_FANOUT,
    NodeConfig,
    default_node_name,
    default_store_uri,
    ensure_uninitialised,
    key_tree_settings,
    load_config,
    load_signing_key,
    new_signing_key,
    validate_node_name,
    write_home,
)
from oblivio.node.vault import ArtifactVault
from oblivio.store.database import Database, check_store_uri, open_database
from oblivio.store.key_tree_nodes import SqlKeyTreeStore
from oblivio.store.migrations import migrate


@dataclass
class Node:
    """An open node. Close it (or use it as a context manager) to release connections."""

    home: Path
    config: NodeConfig
    signing_key: SigningKey
    db: Database
    backend: WrappingKeyBackend
    vault: ArtifactVault

    def close(self) -> None:
        """Release the database and key backend."""
        self.db.close()
        self.backend.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def init_node(
    home: Path,
    name: str | None = None,
    store_uri: str | None = None,
    keys_uri: str | None = None,
    fanout: int | None = None,
) -> Node:
    """Create a node in ``home``: signing key, database schema, wrapping-key backend, and key
    trees of ``fanout`` (default 64, DESIGN.md §5).

    Both URIs are checked, and the database reached, before anything is written, so a bad URI
    or an unreachable database leaves no half-made home. Raises InvalidInputError (node name),
    InvalidStoreUriError, InvalidKeysUriError, StorageError, KeyBackendError, NodeHomeError.
    """
    home = home.resolve()
    ensure_uninitialised(home)
    keys_uri = keys_uri or DEFAULT_KEYS_URI
    check_keys_uri(keys_uri)
    if store_uri is not None:
        check_store_uri(store_uri)
    if fanout is not None and not MIN_FANOUT <= fanout <= MAX_FANOUT:
        raise InvalidInputError(
            f"key-tree fan-out: expected {MIN_FANOUT} to {MAX_FANOUT}, got {fanout}"
        )
    key_tree = {} if fanout is None else {"fanout": fanout}
    signing_key = new_signing_key()
    name = validate_node_name(name) if name is not None else default_node_name(signing_key)
    created_home = not home.exists()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        store_uri = store_uri or default_store_uri(home)
        with open_database(store_uri) as db:
            migrate(db)
        write_home(home, NodeConfig(name, store_uri, keys_uri, key_tree=key_tree), signing_key)
    except OblivioError:
        if created_home:
            shutil.rmtree(home, ignore_errors=True)
        raise
    return open_node(home)


def open_node(home: Path) -> Node:
    """Open an initialised node, applying pending schema migrations and finishing whatever a
    crash interrupted in the key tree (``KeyTreeCustody.recover``: interrupted forget batches,
    root keys left over or come back).

    Raises NodeHomeError if ``home`` holds no node, and the errors of the store and keys URIs.
    """
    home = home.resolve()
    config = load_config(home)
    signing_key = load_signing_key(home)
    db = open_database(config.store_uri)
    try:
        migrate(db)
        backend = open_key_backend(config.keys_uri, home)
    except OblivioError:
        db.close()
        raise
    settings = key_tree_settings(config.key_tree)
    custody = KeyTreeCustody(backend, SqlKeyTreeStore(db), signing_key, fanout=settings.fanout)
    try:
        custody.initialise()
        custody.recover()
    except OblivioError:
        backend.close()
        db.close()
        raise
    return Node(home, config, signing_key, db, backend, ArtifactVault(db, custody))
