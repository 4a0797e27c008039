"""The audit log: an append-only record of compliance events, readable by admin keys only.

Every tombstone issued, revoked or received, every failed verification
(``tombstone_verification_failed``, seed 002 §23.4.2) and every legal hold is written here. Rows
are numbered in commit order and never updated or deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from oblivio.core.canonical import JsonValue, canonical_json, parse_json
from oblivio.core.identifiers import format_time
from oblivio.node.ids import new_uuid7
from oblivio.store.database import Database, Transaction

_PG_AUDIT_LOCK = 0x0B11_7A0D


@dataclass(frozen=True)
class AuditEvent:
    """One audit entry."""

    seq: int
    id: str
    at: str
    event: str
    actor: str | None
    subject: str | None
    details: Mapping[str, JsonValue]

    def to_dict(self) -> dict[str, JsonValue]:
        """The JSON form served to admins."""
        return {
            "seq": self.seq,
            "id": self.id,
            "at": self.at,
            "event": self.event,
            "actor": self.actor,
            "subject": self.subject,
            "details": dict(self.details),
        }


class AuditLog:
    """Appends to and reads the audit_log table."""

    def __init__(self, db: Database, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.db = db
        self._clock = clock

    def append_in(
        self,
        tx: Transaction,
        event: str,
        *,
        actor: str | None = None,
        subject: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append inside an open write transaction (so the event commits with what it records)."""
        if tx.dialect == "postgresql":
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_PG_AUDIT_LOCK,))
        row = tx.fetchone("SELECT COALESCE(MAX(seq), 0) FROM audit_log")
        seq = (int(row[0]) if row else 0) + 1
        tx.execute(
            "INSERT INTO audit_log (seq, id, at, event, actor, subject, details) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                seq,
                new_uuid7(),
                format_time(self._clock()),
                event,
                actor,
                subject,
                canonical_json(dict(details or {})).decode("utf-8"),
            ),
        )

    def append(
        self,
        event: str,
        *,
        actor: str | None = None,
        subject: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one event in a transaction of its own."""
        with self.db.transaction() as tx:
            self.append_in(tx, event, actor=actor, subject=subject, details=details)

    def read(self, after_seq: int = 0, limit: int = 100) -> list[AuditEvent]:
        """Events with ``seq > after_seq``, oldest first, at most ``limit``."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT seq, id, at, event, actor, subject, details FROM audit_log "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
        return [AuditEvent(r[0], r[1], r[2], r[3], r[4], r[5], parse_json(r[6])) for r in rows]
