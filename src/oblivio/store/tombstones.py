"""Tombstone storage: the storage-trait methods of seed 002 §23.5 on SQLite and PostgreSQL.

Records are stored as issued or received (``record_json``), in a table of their own, never as
facts (§23.2.2 invariant 4), and never updated (invariant 5): a revocation is a separate row.
Writes that must not race (one active tombstone per entity URI and scope) run in a write
transaction that also takes a per-entity advisory lock on PostgreSQL; SQLite's BEGIN IMMEDIATE
serialises them already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from oblivio.core.canonical import canonical_json, parse_json
from oblivio.core.errors import (
    TombstoneAlreadyRevokedError,
    TombstoneNotFoundError,
)
from oblivio.core.identifiers import format_time, scope_pattern_covers, validate_scope
from oblivio.core.tombstones import TombstoneRecord, TombstoneRevocationRecord, normalise_scope
from oblivio.store.database import ConstraintViolationError, Database, Row, Transaction

OnInsert = Callable[[Transaction], None]
"""Work to do in the same transaction as a record's insert (the audit entry)."""


def _lock_entity(tx: Transaction, entity_uri: str) -> None:
    if tx.dialect == "postgresql":
        tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", ("tombstone:" + entity_uri,))


def _tombstone(row: Row) -> TombstoneRecord:
    return TombstoneRecord.from_dict(parse_json(row[0]))


def _revocation(row: Row) -> TombstoneRevocationRecord:
    return TombstoneRevocationRecord.from_dict(parse_json(row[0]))


def _active_in(tx: Transaction, entity_uri: str) -> list[TombstoneRecord]:
    return [
        _tombstone(r)
        for r in tx.fetchall(
            "SELECT t.record_json FROM tombstones t WHERE t.entity_uri = ? AND NOT EXISTS "
            "(SELECT 1 FROM tombstone_revocations r WHERE r.tombstone_id = t.id) "
            "ORDER BY t.created_at, t.id",
            (entity_uri,),
        )
    ]


class TombstoneStore:
    """The tombstones and tombstone_revocations tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _insert(self, tx: Transaction, record: TombstoneRecord, received_from: str | None) -> None:
        tx.execute(
            "INSERT INTO tombstones (id, entity_uri, scope, reason, signed_by, signature, "
            "created_at, legal_hold, key_id, record_json, received_from, stored_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.entity_uri,
                normalise_scope(record.scope),
                record.reason,
                record.signed_by,
                record.signature,
                record.created_at,
                1 if record.legal_hold else 0,
                record.key_id,
                canonical_json(record.to_dict()).decode("utf-8"),
                received_from,
                format_time(datetime.now().astimezone()),
            ),
        )

    def _active_match(self, tx: Transaction, record: TombstoneRecord) -> TombstoneRecord | None:
        row = tx.fetchone(
            "SELECT t.record_json FROM tombstones t WHERE t.entity_uri = ? AND t.scope = ? "
            "AND NOT EXISTS (SELECT 1 FROM tombstone_revocations r WHERE r.tombstone_id = t.id) "
            "ORDER BY t.created_at, t.id LIMIT 1",
            (record.entity_uri, normalise_scope(record.scope)),
        )
        return None if row is None else _tombstone(row)

    def tombstone(
        self, record: TombstoneRecord, on_insert: OnInsert | None = None
    ) -> tuple[TombstoneRecord, bool]:
        """Store a newly issued tombstone unless an active one with the same entity URI and scope
        exists (§23.5.2 idempotent ``tombstone()``). ``on_insert`` runs in the same transaction
        when a row is written (audit).

        Returns (the stored record, True) or (the existing record, False).
        """
        with self.db.transaction() as tx:
            _lock_entity(tx, record.entity_uri)
            existing = self._active_match(tx, record)
            if existing is not None:
                return existing, False
            self._insert(tx, record, None)
            if on_insert is not None:
                on_insert(tx)
        return record, True

    def store_received(
        self, record: TombstoneRecord, peer: str, on_insert: OnInsert | None = None
    ) -> tuple[TombstoneRecord, bool]:
        """Store an inbound tombstone if its id is new (§23.4.2 step 3, idempotent on id)."""
        with self.db.transaction() as tx:
            _lock_entity(tx, record.entity_uri)
            row = tx.fetchone("SELECT record_json FROM tombstones WHERE id = ?", (record.id,))
            if row is not None:
                return _tombstone(row), False
            self._insert(tx, record, peer)
            if on_insert is not None:
                on_insert(tx)
        return record, True

    def get(self, tombstone_id: str) -> TombstoneRecord:
        """The tombstone with this id; raises TombstoneNotFoundError."""
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone("SELECT record_json FROM tombstones WHERE id = ?", (tombstone_id,))
        if row is None:
            raise TombstoneNotFoundError(f"tombstone {tombstone_id} not found")
        return _tombstone(row)

    def revoke_tombstone(
        self, revocation: TombstoneRevocationRecord, on_insert: OnInsert | None = None
    ) -> TombstoneRevocationRecord:
        """Store a revocation (§23.5.2): raises TombstoneNotFoundError if no such tombstone,
        TombstoneAlreadyRevokedError if one is already revoked. The tombstone row stays."""
        try:
            with self.db.transaction() as tx:
                revoked = tx.fetchone(
                    "SELECT entity_uri FROM tombstones WHERE id = ?", (revocation.tombstone_id,)
                )
                if revoked is None:
                    raise TombstoneNotFoundError(f"tombstone {revocation.tombstone_id} not found")
                # A put about the entity either finishes first (and the revocation's
                # cancellation finds what it forgot) or sees the revocation (ADR 0018).
                _lock_entity(tx, revoked[0])
                if tx.fetchone(
                    "SELECT 1 FROM tombstone_revocations WHERE tombstone_id = ?",
                    (revocation.tombstone_id,),
                ):
                    raise TombstoneAlreadyRevokedError(
                        f"tombstone {revocation.tombstone_id} has already been revoked"
                    )
                tx.execute(
                    "INSERT INTO tombstone_revocations (id, tombstone_id, reason, signed_by, "
                    "signature, created_at, key_id, record_json, stored_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        revocation.id,
                        revocation.tombstone_id,
                        revocation.reason,
                        revocation.signed_by,
                        revocation.signature,
                        revocation.created_at,
                        revocation.key_id,
                        canonical_json(revocation.to_dict()).decode("utf-8"),
                        format_time(datetime.now().astimezone()),
                    ),
                )
                if on_insert is not None:
                    on_insert(tx)
        except ConstraintViolationError as e:
            # Two revocations raced; the unique index let exactly one in.
            raise TombstoneAlreadyRevokedError(
                f"tombstone {revocation.tombstone_id} has already been revoked"
            ) from e
        return revocation

    def store_received_revocation(
        self, revocation: TombstoneRevocationRecord
    ) -> tuple[TombstoneRevocationRecord, bool]:
        """Store an inbound revocation if its tombstone has none yet; idempotent on id."""
        try:
            return self.revoke_tombstone(revocation), True
        except TombstoneAlreadyRevokedError:
            with self.db.transaction(write=False) as tx:
                row = tx.fetchone(
                    "SELECT record_json FROM tombstone_revocations WHERE tombstone_id = ?",
                    (revocation.tombstone_id,),
                )
            if row is None:
                raise
            return _revocation(row), False

    def for_entity(
        self, entity_uri: str
    ) -> tuple[list[TombstoneRecord], list[TombstoneRevocationRecord]]:
        """Every tombstone naming ``entity_uri`` and every revocation of one of them."""
        with self.db.transaction(write=False) as tx:
            tombstones = [
                _tombstone(r)
                for r in tx.fetchall(
                    "SELECT record_json FROM tombstones WHERE entity_uri = ? "
                    "ORDER BY created_at, id",
                    (entity_uri,),
                )
            ]
            revocations = [
                _revocation(r)
                for r in tx.fetchall(
                    "SELECT r.record_json FROM tombstone_revocations r "
                    "JOIN tombstones t ON t.id = r.tombstone_id WHERE t.entity_uri = ? "
                    "ORDER BY r.created_at, r.id",
                    (entity_uri,),
                )
            ]
        return tombstones, revocations

    def active_for_entity(self, entity_uri: str) -> list[TombstoneRecord]:
        """The tombstones naming ``entity_uri`` that no revocation names (§23.3.1)."""
        with self.db.transaction(write=False) as tx:
            return _active_in(tx, entity_uri)

    @staticmethod
    def active_for_entity_in(tx: Transaction, entity_uri: str) -> list[TombstoneRecord]:
        """``active_for_entity`` inside a write transaction, after taking the entity's lock:
        a tombstone issued or revoked concurrently is either seen here or waits for ``tx``
        (a put about the entity; ADR 0018)."""
        _lock_entity(tx, entity_uri)
        return _active_in(tx, entity_uri)

    def is_tombstoned(self, entity_uri: str, scope: str) -> bool:
        """Whether an active tombstone covers ``entity_uri`` in fact scope ``scope`` (§23.5.2)."""
        validate_scope(scope)
        return any(scope_pattern_covers(t.scope, scope) for t in self.active_for_entity(entity_uri))

    def list_tombstones(
        self, scope: str | None = None, since: str | None = None
    ) -> list[TombstoneRecord]:
        """Tombstones created at or after ``since`` whose pattern covers ``scope`` (if given),
        oldest first (§23.5.1 ``list_tombstones``)."""
        with self.db.transaction(write=False) as tx:
            rows: Iterable[Row] = tx.fetchall(
                "SELECT record_json FROM tombstones WHERE created_at >= ? ORDER BY created_at, id",
                (since or "",),
            )
            records = [_tombstone(r) for r in rows]
        if scope is None:
            return records
        validate_scope(scope)
        return [r for r in records if scope_pattern_covers(r.scope, scope)]
