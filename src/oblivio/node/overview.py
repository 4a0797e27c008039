"""What an operator looks at (DESIGN.md §18): legal holds, the epoch history with its forgets,
and the forget requests still in progress. Read-only queries for the console; every write goes
through the services that own the tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oblivio.core.canonical import parse_json
from oblivio.node.audit import AuditEvent
from oblivio.store.database import Database


@dataclass(frozen=True)
class EpochPoint:
    """One checkpoint of the history: its epoch, log size and time, the forget events it
    executed, and the map root it committed (from the ``map_root`` entry, its last entry)."""

    epoch: int
    tree_size: int
    created_at: str
    forgets: int
    smt_root: str
    changes: int


@dataclass(frozen=True)
class LegalHold:
    """A legal hold as listed: what placed it, why, and how many artifacts it covers."""

    id: str
    authority: str
    reason: str
    source: str | None
    placed_at: str
    released_at: str | None
    artifacts: int


class Overview:
    """Read-only views over a node's tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def epochs(self, limit: int = 200) -> list[EpochPoint]:
        """The latest ``limit`` checkpoints, oldest first, each with its executed forgets."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT c.epoch, c.tree_size, c.created_at, "
                "(SELECT COUNT(*) FROM forget_events f WHERE f.epoch = c.epoch), "
                "(SELECT e.entry FROM log_entries e WHERE e.idx = c.tree_size - 1) "
                "FROM checkpoints c ORDER BY c.epoch DESC LIMIT ?",
                (limit,),
            )
        points = []
        for epoch, size, created_at, forgets, entry in reversed(rows):
            map_root: Any = parse_json(bytes(entry)) if entry is not None else {}
            points.append(
                EpochPoint(
                    int(epoch),
                    int(size),
                    str(created_at),
                    int(forgets),
                    str(map_root.get("smt_root", "")),
                    int(map_root.get("changes", 0)),
                )
            )
        return points

    def legal_holds(self) -> list[LegalHold]:
        """Every legal hold, the ones in force first, newest first within each."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT l.id, l.authority, l.reason, l.source, l.placed_at, l.released_at, "
                "(SELECT COUNT(*) FROM legal_hold_artifacts a WHERE a.hold_id = l.id) "
                "FROM legal_holds l "
                "ORDER BY CASE WHEN l.released_at IS NULL THEN 0 ELSE 1 END, l.placed_at DESC"
            )
        return [LegalHold(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6])) for r in rows]

    def pending_forgets(self) -> list[dict[str, Any]]:
        """Forget requests not executed yet, oldest first: level, artifacts, events already
        executed, and the earliest time they may run (a destruction window, a legal hold)."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT r.id, r.level, r.requested_at, r.not_before, "
                "(SELECT COUNT(*) FROM forget_events e WHERE e.request_id = r.id), "
                "(SELECT COUNT(*) FROM forget_events e WHERE e.request_id = r.id "
                "AND e.epoch IS NOT NULL) "
                "FROM forget_requests r WHERE r.state = 'pending' ORDER BY r.requested_at"
            )
        return [
            {
                "request_id": r[0],
                "level": int(r[1]),
                "requested_at": r[2],
                "not_before": r[3],
                "artifacts": int(r[4]),
                "executed": int(r[5]),
            }
            for r in rows
        ]

    def tombstones(self, limit: int = 500) -> list[dict[str, Any]]:
        """The latest ``limit`` tombstones, newest first, each with its revocation if any and
        the peer it came from (None: issued here)."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT t.id, t.entity_uri, t.scope, t.reason, t.signed_by, t.created_at, "
                "t.legal_hold, t.received_from, r.id, r.reason, r.created_at "
                "FROM tombstones t LEFT JOIN tombstone_revocations r ON r.tombstone_id = t.id "
                "ORDER BY t.created_at DESC, t.id DESC LIMIT ?",
                (limit,),
            )
        return [
            {
                "id": r[0],
                "entity_uri": r[1],
                "scope": r[2],
                "reason": r[3],
                "signed_by": r[4],
                "created_at": r[5],
                "legal_hold": bool(r[6]),
                "received_from": r[7],
                "revocation": None
                if r[8] is None
                else {"id": r[8], "reason": r[9], "created_at": r[10]},
            }
            for r in rows
        ]

    def audit(
        self,
        *,
        event: str | None = None,
        actor: str | None = None,
        subject: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Audit events newest first, at most ``limit``, with ``seq < before`` when given and
        only those whose event, actor and subject equal the filters that are given."""
        clauses: list[str] = ["1 = 1"]
        params: list[str | int] = []
        for column, value in (("event", event), ("actor", actor), ("subject", subject)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if before is not None:
            clauses.append("seq < ?")
            params.append(before)
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT seq, id, at, event, actor, subject, details FROM audit_log "  # noqa: S608 - fixed columns, values bound
                f"WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT ?",
                (*params, limit),
            )
        return [AuditEvent(r[0], r[1], r[2], r[3], r[4], r[5], parse_json(r[6])) for r in rows]

    def audit_event_names(self) -> list[str]:
        """The distinct event names in the audit log, for the filter."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall("SELECT DISTINCT event FROM audit_log ORDER BY event")
        return [str(r[0]) for r in rows]
