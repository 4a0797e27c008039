"""A node: its home, database, key backend and the services built on them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from oblivio.core.errors import InvalidInputError, NodeStateMismatchError, OblivioError
from oblivio.core.signing import SigningKey
from oblivio.keys.backend import WrappingKeyBackend, check_keys_uri, open_key_backend
from oblivio.keys.custody import KeyTreeCustody, RestorePlan, plan_restore
from oblivio.keys.custody import restore_backup as restore_backup_in
from oblivio.keys.key_tree import MIN_FANOUT
from oblivio.keys.pkcs11 import pkcs11_object_prefix
from oblivio.node.audit import AuditLog
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
    save_config,
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
    """Create a node in ``home``: signing key, database schema, wrapping-key backend bound to
    the database (docs/adr/0016), and key trees of ``fanout`` (default 64, DESIGN.md §5).

    Both URIs are checked, the database reached and the key store opened before the home is
    written, so a bad URI, an unreachable database or a wrong PIN leaves no half-made home. A
    database or key store that already belongs to a node is refused (NodeStateMismatchError).
    Raises InvalidInputError (node name), InvalidStoreUriError, InvalidKeysUriError,
    StorageError, KeyBackendError, NodeHomeError, NodeStateMismatchError.
    """
    home = home.resolve()
    ensure_uninitialised(home)
    keys_uri = keys_uri or DEFAULT_KEYS_URI
    scheme = check_keys_uri(keys_uri)
    if store_uri is not None:
        check_store_uri(store_uri)
    if fanout is not None and not MIN_FANOUT <= fanout <= MAX_FANOUT:
        raise InvalidInputError(
            f"key-tree fan-out: expected {MIN_FANOUT} to {MAX_FANOUT}, got {fanout}"
        )
    key_tree = {} if fanout is None else {"fanout": fanout}
    signing_key = new_signing_key()
    name = validate_node_name(name) if name is not None else default_node_name(signing_key)
    if scheme == "pkcs11":
        keys_uri = with_node_object_prefix(keys_uri, signing_key.key_id)
    created_home = not home.exists()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        store_uri = store_uri or default_store_uri(home)
        with open_database(store_uri) as db:
            migrate(db)
            backend = open_key_backend(keys_uri, home, create=True)
            try:
                custody = KeyTreeCustody(backend, SqlKeyTreeStore(db), signing_key)
                custody.bind_new(signing_key.key_id)
            finally:
                backend.close()
        config = NodeConfig(
            name, store_uri, keys_uri, key_tree=key_tree, node_id=signing_key.key_id
        )
        write_home(home, config, signing_key)
    except OblivioError:
        if created_home:
            shutil.rmtree(home, ignore_errors=True)
        raise
    return open_node(home)


def with_node_object_prefix(keys_uri: str, node_key_id: str) -> str:
    """A ``pkcs11:`` keys URI with this node's own object prefix (``object=oblivio-`` and 16
    hex characters of its key id) unless it names one, so that nodes can share a token."""
    if pkcs11_object_prefix(keys_uri) is not None:
        return keys_uri
    path, sep, query = keys_uri.partition("?")
    return f"{path};object=oblivio-{node_key_id[:16]}{sep}{query}"


@dataclass
class _Opened:
    """A node's parts opened, before any check: what ``open_node`` and ``restore_backup``
    both start from."""

    config: NodeConfig
    signing_key: SigningKey
    db: Database
    backend: WrappingKeyBackend
    custody: KeyTreeCustody

    @property
    def node_id(self) -> str:
        """Who the database and key store belong to: the first key id, or the current one
        for a home from before node ids (docs/adr/0016)."""
        return self.config.node_id or self.signing_key.key_id

    def close(self) -> None:
        self.backend.close()
        self.db.close()


def _open_parts(home: Path) -> _Opened:
    """Read the home, open the database (never creating its file) with pending migrations
    applied, and the key backend; checks nothing else. Closes what it opened if it fails."""
    config = load_config(home)
    signing_key = load_signing_key(home)
    db = open_database(config.store_uri, create=False)
    try:
        migrate(db)
        backend = open_key_backend(config.keys_uri, home)
    except OblivioError:
        db.close()
        raise
    try:
        settings = key_tree_settings(config.key_tree)
    except OblivioError:
        backend.close()
        db.close()
        raise
    custody = KeyTreeCustody(backend, SqlKeyTreeStore(db), signing_key, fanout=settings.fanout)
    return _Opened(config, signing_key, db, backend, custody)


def open_node(home: Path, *, recover: bool = True) -> Node:
    """Open an initialised node, applying pending schema migrations, after checking that its
    database and key store belong together and to it (``KeyTreeCustody.check_key_store``;
    docs/adr/0016). With ``recover`` (any command that may write) it then finishes whatever a
    crash interrupted in the key tree (``KeyTreeCustody.recover``), auditing what recovery
    destroyed or found; read-only commands pass ``recover=False`` and destroy nothing.

    A refusal is audited in the database when it can be opened, and raised. Raises
    NodeHomeError if ``home`` holds no node, NodeStateMismatchError (database and key store
    do not belong together, or the database file is missing), and the errors of the store and
    keys URIs.
    """
    home = home.resolve()
    opened = _open_parts(home)
    config, db, custody = opened.config, opened.db, opened.custody
    try:
        try:
            custody.check_key_store(opened.node_id)
        except NodeStateMismatchError as e:
            AuditLog(db).append(
                "node_open_refused", subject=config.name, details={"kind": e.kind, "error": str(e)}
            )
            raise
        if recover:
            custody.initialise()
            report = custody.recover()
            if report.changed:
                AuditLog(db).append(
                    "key_recovery",
                    subject=config.name,
                    details={
                        "receipts": len(report.receipts),
                        "abandoned_roots_destroyed": list(report.abandoned_roots_destroyed),
                        "resurrected_roots_destroyed": list(report.resurrected_roots_destroyed),
                        "unknown_roots_kept": list(report.unknown_roots),
                    },
                )
        if config.node_id is None:  # a home from before node ids: its identity from now on
            config = replace(config, node_id=opened.node_id)
            save_config(home, config)
    except OblivioError:
        opened.close()
        raise
    return Node(home, config, opened.signing_key, db, opened.backend, ArtifactVault(db, custody))


def restore_backup(home: Path, confirm: Callable[[RestorePlan], bool]) -> RestorePlan | None:
    """Bring a restored database back into service with the node's live key store: the one
    explicit, audited path around ``open_node``'s refusal (DESIGN.md §5, docs/key-erasure.md).

    Shows ``confirm`` what it would destroy and lose (``RestorePlan``) before destroying
    anything; returns None, having changed nothing, if it declines. Otherwise carries the plan
    out, audits it, and returns it. Raises NodeStateMismatchError if the database or key store
    is another node's, and the errors of ``open_node``.
    """
    opened = _open_parts(home.resolve())
    try:
        plan = plan_restore(opened.custody, opened.node_id)
        if not confirm(plan):
            return None
        audit = AuditLog(opened.db)
        name = opened.config.name
        audit.append("restore_backup_started", subject=name, details=plan.to_dict())
        done = restore_backup_in(opened.custody, opened.node_id, plan)
        audit.append("restore_backup", subject=name, details=done.to_dict())
        return done
    finally:
        opened.close()
