"""The storage interface behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from oblivio.core.errors import InvalidStoreUriError, SchemaVersionError, StorageError
from oblivio.core.identifiers import ArtifactId
from oblivio.keys.key_tree import TreeLeaf
from oblivio.store.database import (
    ConstraintViolationError,
    Database,
    Transaction,
    open_database,
)
from oblivio.store.key_tree_nodes import LEAF_COLUMNS, leaf_values
from oblivio.store.migrations import LATEST_VERSION, MIGRATIONS, migrate, schema_version


def test_migrations_are_recorded_and_applied_once(database: Database) -> None:
    assert schema_version(database) == LATEST_VERSION
    assert migrate(database) == []
    with database.transaction(write=False) as tx:
        rows = tx.fetchall("SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows == [(m.version, m.name) for m in MIGRATIONS]


def test_newer_schema_is_refused(database: Database) -> None:
    with database.transaction() as tx:
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (LATEST_VERSION + 1, "from_the_future", "2030-01-01T00:00:00.000Z"),
        )
    with pytest.raises(SchemaVersionError, match="newer than this oblivio knows"):
        migrate(database)


def test_failed_transaction_rolls_back(database: Database) -> None:
    def write_then_fail() -> None:
        with database.transaction() as tx:
            tx.execute(
                "INSERT INTO artifact_chunks (blob_id, seq, data) VALUES (?, ?, ?)", ("b", 0, b"x")
            )
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        write_then_fail()
    with database.transaction(write=False) as tx:
        assert tx.fetchone("SELECT COUNT(*) FROM artifact_chunks") == (0,)


def test_duplicate_key_is_a_constraint_violation(database: Database) -> None:
    row = ("b", 0, b"x")
    sql = "INSERT INTO artifact_chunks (blob_id, seq, data) VALUES (?, ?, ?)"
    with database.transaction() as tx:
        tx.execute(sql, row)
    with pytest.raises(ConstraintViolationError), database.transaction() as tx:
        tx.execute(sql, row)
    with database.transaction(write=False) as tx:
        assert tx.fetchone("SELECT COUNT(*) FROM artifact_chunks") == (1,)


def test_blobs_round_trip_exactly(database: Database) -> None:
    data = bytes(range(256)) * 3
    with database.transaction() as tx:
        tx.execute(
            "INSERT INTO artifact_chunks (blob_id, seq, data) VALUES (?, ?, ?)", ("b", 7, data)
        )
    with database.transaction(write=False) as tx:
        row = tx.fetchone("SELECT data, seq FROM artifact_chunks WHERE blob_id = ?", ("b",))
        assert row is not None
        assert bytes(row[0]) == data
        assert row[1] == 7
        assert list(tx.iterate("SELECT seq FROM artifact_chunks")) == [(7,)]


@pytest.mark.parametrize("uri", ["mysql://x", "sqlite://host/x.db", "", "file:///tmp/x", "sqlite:"])
def test_bad_store_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidStoreUriError):
        open_database(uri)


def test_missing_sqlite_directory_is_a_storage_error(tmp_path: object) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        open_database("sqlite:///nonexistent-dir-for-oblivio/x.db")


def test_unreachable_postgres_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="cannot connect"):
        open_database("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")


def test_a_migration_missing_below_the_latest_is_applied(database: Database) -> None:
    """Regression: migrate() applied only versions above the highest recorded one, so a
    migration that landed later with a lower number never reached existing databases."""
    with database.transaction() as tx:
        tx.execute("DROP TABLE fact_retractions")
        tx.execute("DELETE FROM schema_migrations WHERE version = 6")
    applied = migrate(database)
    assert [m.version for m in applied] == [6]
    with database.transaction(write=False) as tx:
        assert tx.fetchone("SELECT COUNT(*) FROM fact_retractions") == (0,)


def _migrate_below(db: Database, tx: Transaction, version: int) -> None:
    """Apply the migrations older than ``version`` by hand, as an older oblivio did."""
    tx.execute(
        "CREATE TABLE schema_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    for migration in MIGRATIONS:
        if migration.version < version:
            for statement in migration.statements:
                tx.execute(db.ddl(statement))
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, "2026-11-22T00:00:00.000Z"),
            )


def _insert_bare_artifact(tx: Transaction, artifact_id: str) -> None:
    tx.execute(
        "INSERT INTO artifacts (artifact_id, blob_id, metadata, nonce, plaintext_size, "
        "ciphertext_size, chunk_count, created_at) "
        "VALUES (?, ?, ?, ?, 0, 16, 0, '2026-11-22T00:00:00.000Z')",
        (artifact_id, artifact_id, b"{}", b"\0" * 12),
    )


def test_smt_leaves_move_into_their_artifacts_rows(store_uri: str) -> None:
    """Migration 9 carries every leaf record and its pending flag into the artifact's row."""
    with open_database(store_uri) as db:
        with db.transaction() as tx:
            _migrate_below(db, tx, 9)
            for n, (record, pending) in enumerate([('{"state":"ACTIVE"}', 1), ("{}", 0)]):
                aid = f"{n:064x}"
                _insert_bare_artifact(tx, aid)
                tx.execute(
                    "INSERT INTO smt_leaves (artifact_id, record_json, pending) VALUES (?, ?, ?)",
                    (aid, record, pending),
                )
        assert 9 in [m.version for m in migrate(db)]
        with db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT artifact_id, leaf_record, leaf_pending FROM artifacts ORDER BY artifact_id"
            )
            pending = tx.fetchall("SELECT artifact_id FROM artifacts WHERE leaf_pending = 1")
        assert rows == [(f"{0:064x}", '{"state":"ACTIVE"}', 1), (f"{1:064x}", "{}", 0)]
        assert pending == [(f"{0:064x}",)]


def test_receipts_carry_where_they_were_logged(store_uri: str) -> None:
    """Migration 14 moves each logged receipt's log index into its row; the receipts not
    logged yet keep none and are the ones the partial index lists."""
    with open_database(store_uri) as db:
        with db.transaction() as tx:
            _migrate_below(db, tx, 14)
            tx.executemany(
                "INSERT INTO destruction_receipts (receipt_hash, batch_id, tree, epoch, receipt, "
                "destroyed_at) VALUES (?, 'batch', 'wrap', 1, ?, ?)",
                [
                    ("a" * 64, b"{}", "2026-11-22T00:00:00.000Z"),
                    ("b" * 64, b"{}", "2026-11-22T00:00:01.000Z"),
                ],
            )
            tx.execute(
                "INSERT INTO logged_receipts (receipt_hash, log_index) VALUES (?, 7)", ("a" * 64,)
            )
        assert 14 in [m.version for m in migrate(db)]
        with db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT receipt_hash, log_index FROM destruction_receipts ORDER BY receipt_hash"
            )
            unlogged = tx.fetchall(
                "SELECT receipt_hash FROM destruction_receipts WHERE log_index IS NULL"
            )
        assert rows == [("a" * 64, 7), ("b" * 64, None)]
        assert unlogged == [("b" * 64,)]


def test_key_tree_leaves_move_into_their_artifacts_rows(store_uri: str) -> None:
    """Migration 12 carries every key-tree leaf (slot and wrapped key) into its artifact's row;
    a leaf erased in place keeps its slot and no key; one without a slot (before the key tree)
    is not carried."""
    with open_database(store_uri) as db:
        with db.transaction() as tx:
            _migrate_below(db, tx, 12)
            first, second = f"{1:064x}", f"{2:064x}"
            _insert_bare_artifact(tx, first)
            _insert_bare_artifact(tx, second)
            tx.executemany(
                "INSERT INTO artifact_keys (artifact_id, capability, key_ref, wrapped, key_tree, "
                "tree_slot) VALUES (?, ?, 'ref', ?, ?, ?)",
                [
                    (first, "decrypt", b"d1", "wrap", 0),
                    (first, "prove", b"p1", "wrap", 1),
                    (first, "recover", b"r1", "escrow", 0),
                    (second, "decrypt", b"d2", None, None),
                    (second, "prove", b"", "wrap", 2),
                ],
            )
        assert 12 in [m.version for m in migrate(db)]
        with db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT artifact_id, decrypt_slot, decrypt_key, prove_slot, prove_key, "
                "recover_slot, recover_key FROM artifacts ORDER BY artifact_id"
            )
        assert [
            tuple(bytes(v) if isinstance(v, bytes | memoryview) else v for v in r) for r in rows
        ] == [
            (first, 0, b"d1", 1, b"p1", 0, b"r1"),
            (second, None, None, 2, None, None, None),
        ]


def test_leaf_columns_are_those_leaf_values_fills() -> None:
    assert LEAF_COLUMNS == (
        "decrypt_slot",
        "decrypt_key",
        "prove_slot",
        "prove_key",
        "recover_slot",
        "recover_key",
    )
    leaf = TreeLeaf(7, ArtifactId("ab" * 32), "prove", b"wrapped")
    assert leaf_values([leaf]) == (None, None, 7, b"wrapped", None, None)


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("SELECT COUNT(*) FROM forget_events WHERE epoch IS NULL", "idx_forget_events_pending"),
        (
            "SELECT event_id FROM forget_events WHERE epoch IS NULL ORDER BY log_index",
            "idx_forget_events_pending",
        ),
        (
            "SELECT receipt_hash FROM destruction_receipts WHERE log_index IS NULL "
            "ORDER BY destroyed_at, receipt_hash",
            "idx_destruction_receipts_unlogged",
        ),
    ],
)
def test_pending_work_is_found_without_scanning_every_row(
    sqlite_uri: str, query: str, index: str
) -> None:
    """Regression: every forget request counted the pending events by scanning all events ever
    logged, and every epoch compared all receipts ever recorded with the logged ones
    (migrations 13 and 14 index what is pending)."""
    db = open_database(sqlite_uri)
    try:
        migrate(db)
        with db.transaction(write=False) as tx:
            plan = " ".join(str(r[-1]) for r in tx.fetchall("EXPLAIN QUERY PLAN " + query))
    finally:
        db.close()
    assert index in plan, plan
