"""Shared helpers of the key tests: artifact rows for leaves, and a custody over a database."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from oblivio.core.identifiers import ArtifactId
from oblivio.keys.custody import KeyTreeCustody
from oblivio.store.database import Database
from oblivio.store.key_tree_nodes import SqlKeyTreeNodes


def artifact_ids(start: int, count: int) -> list[ArtifactId]:
    """Deterministic artifact ids."""
    return [
        ArtifactId(hashlib.sha256(b"artifact %d" % i).hexdigest())
        for i in range(start, start + count)
    ]


def data_key(artifact_id: str, capability: str) -> bytes:
    """A deterministic capability key, so tests can check what unwraps."""
    return hashlib.sha256(f"{artifact_id}/{capability}".encode()).digest()


def add_artifacts(db: Database, custody: KeyTreeCustody, ids: Sequence[ArtifactId]) -> None:
    """Insert bare artifact rows and their three capability keys, in one transaction."""
    with db.transaction() as tx:
        tx.executemany(
            "INSERT INTO artifacts (artifact_id, blob_id, metadata, nonce, plaintext_size, "
            "ciphertext_size, chunk_count, entity_uri, scope, created_at) "
            "VALUES (?, ?, ?, ?, 0, 0, 0, NULL, NULL, '2026-11-22T10:00:00.000Z')",
            [(aid, aid, b"{}", bytes(12)) for aid in ids],
        )
        custody.store_capability_keys(
            SqlKeyTreeNodes(tx),
            [(aid, {c: data_key(aid, c) for c in ("decrypt", "prove", "recover")}) for aid in ids],
        )
