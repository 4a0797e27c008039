"""Forward-only, versioned schema migrations, recorded in ``schema_migrations``.

Each migration is applied once, in order, inside one write transaction together with its record.
A database whose recorded version is newer than this build knows is refused, never downgraded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from oblivio.core.errors import SchemaVersionError
from oblivio.core.identifiers import format_time
from oblivio.store.database import Database, Transaction

# Any constant works: it only has to be the same for every oblivio process on a database.
_PG_MIGRATION_LOCK = 0x0B11_710


@dataclass(frozen=True)
class Migration:
    """One schema step: a version, a name, and portable DDL statements."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "artifact_vault",
        (
            """CREATE TABLE artifacts (
                artifact_id TEXT PRIMARY KEY,
                blob_id TEXT NOT NULL,
                metadata {blob} NOT NULL,
                nonce {blob} NOT NULL,
                plaintext_size {bigint} NOT NULL,
                ciphertext_size {bigint} NOT NULL,
                chunk_count {bigint} NOT NULL,
                entity_uri TEXT,
                scope TEXT,
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX idx_artifacts_entity_uri ON artifacts(entity_uri)",
            """CREATE TABLE artifact_chunks (
                blob_id TEXT NOT NULL,
                seq {bigint} NOT NULL,
                data {blob} NOT NULL,
                PRIMARY KEY (blob_id, seq)
            )""",
            """CREATE TABLE artifact_keys (
                artifact_id TEXT NOT NULL REFERENCES artifacts(artifact_id),
                capability TEXT NOT NULL,
                key_ref TEXT NOT NULL,
                wrapped {blob} NOT NULL,
                PRIMARY KEY (artifact_id, capability)
            )""",
        ),
    ),
)


def _ordered(migrations: tuple[Migration, ...]) -> tuple[Migration, ...]:
    ordered = tuple(sorted(migrations, key=lambda m: m.version))
    versions = [m.version for m in ordered]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"schema migrations: duplicate versions in {versions}")
    return ordered


MIGRATIONS = _ordered(MIGRATIONS)
LATEST_VERSION = MIGRATIONS[-1].version


def _current_version(tx: Transaction) -> int:
    row = tx.fetchone("SELECT MAX(version) FROM schema_migrations")
    return int(row[0]) if row and row[0] is not None else 0


def migrate(db: Database, now: datetime | None = None) -> list[Migration]:
    """Bring ``db`` to the latest schema; return the migrations applied (empty if none).

    Safe to run from several processes at once. Raises SchemaVersionError if the database is
    newer than this build, StorageError if the database fails.
    """
    applied_at = format_time(now or datetime.now(UTC))
    with db.transaction() as tx:
        if tx.dialect == "postgresql":
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_PG_MIGRATION_LOCK,))
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        current = _current_version(tx)
        if current > LATEST_VERSION:
            raise SchemaVersionError(
                f"store: database schema is at version {current}, newer than this oblivio "
                f"knows ({LATEST_VERSION}); upgrade oblivio"
            )
        pending = [m for m in MIGRATIONS if m.version > current]
        for migration in pending:
            for statement in migration.statements:
                tx.execute(db.ddl(statement))
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, applied_at),
            )
    return pending


def schema_version(db: Database) -> int:
    """The version recorded in the database (0 for an empty one)."""
    with db.transaction(write=False) as tx:
        exists = tx.fetchone(
            "SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_migrations' "
            "AND table_schema = current_schema()"
            if tx.dialect == "postgresql"
            else "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        )
        return _current_version(tx) if exists else 0
