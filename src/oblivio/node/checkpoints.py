"""Epoch commits and signed checkpoints (DESIGN.md §7; seed 000 §4.1, §5).

An epoch commit, in one database transaction:

1. applies the epoch's SMT batch as SMT version ``epoch`` (``store/smt_nodes.py``);
2. appends the epoch's log entries (if any) and then its ``map_root`` entry
   ``{"type":"map_root","epoch":n,"smt_root":hex,"prev_smt_root":hex,"changes":n}``;
3. signs the checkpoint at the new log size with the node's Ed25519 key (a plain C2SP
   tlog-checkpoint in a signed note, origin = the node's name) and keeps it in ``checkpoints``.

So the last entry under every checkpoint is its epoch's ``map_root`` (the log backs the map), and
because the three steps share one transaction, a crash leaves either all of an epoch or none of
it: the store's latest root, the log and the latest checkpoint always agree. Heartbeat epochs
commit the same way with an empty batch, on a timer, so monitors see a steady cadence.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from oblivio.core.canonical import canonical_json, parse_json
from oblivio.core.cosignature import append_signature_lines
from oblivio.core.errors import NotFoundError, StorageError
from oblivio.core.identifiers import format_time
from oblivio.core.merkle_log import ConsistencyProof, InclusionProof
from oblivio.core.note import Checkpoint, NoteSigner, parse_checkpoint, sign_checkpoint
from oblivio.core.signing import SigningKey
from oblivio.store.database import Database, Transaction
from oblivio.store.event_log import EventLog
from oblivio.store.smt_nodes import RetentionPolicy, SmtNodeStore

# Any constant works: it only has to be the same for every oblivio process on a database.
_PG_EPOCH_LOCK = 0x0B11_7E90


def map_root_entry(epoch: int, smt_root: bytes, prev_smt_root: bytes, changes: int) -> bytes:
    """The JCS bytes of an epoch's ``map_root`` log entry (DESIGN.md §7, §15)."""
    return canonical_json(
        {
            "type": "map_root",
            "epoch": epoch,
            "smt_root": smt_root.hex(),
            "prev_smt_root": prev_smt_root.hex(),
            "changes": changes,
        }
    )


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint as kept in the history: its epoch, log size and root, and the signed note."""

    epoch: int
    size: int
    root: bytes
    note: str
    created_at: str

    @property
    def checkpoint(self) -> Checkpoint:
        """The parsed checkpoint body."""
        return parse_checkpoint(self.note[: self.note.index("\n\n") + 1])

    def to_dict(self) -> dict[str, Any]:
        """A JSON form for listings (the note is the evidence; the rest describes it)."""
        return {
            "epoch": self.epoch,
            "tree_size": self.size,
            "root": self.root.hex(),
            "checkpoint": self.note,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class EpochCommit:
    """What one epoch commit made durable."""

    epoch: int
    smt_root: bytes
    prev_smt_root: bytes
    changes: int
    first_entry: int
    checkpoint: StoredCheckpoint


_SELECT_LATEST = (
    "SELECT epoch, tree_size, root, note, created_at FROM checkpoints ORDER BY epoch DESC LIMIT 1"
)


def _stored(row: tuple[Any, ...]) -> StoredCheckpoint:
    return StoredCheckpoint(int(row[0]), int(row[1]), bytes(row[2]), str(row[3]), str(row[4]))


def _cosigned(tx: Transaction, rows: Sequence[tuple[Any, ...]]) -> list[StoredCheckpoint]:
    """The checkpoints of ``rows`` with the witnesses' cosignature lines this node received for
    each appended to its note (DESIGN.md §17; node/witness.py), ordered by witness name."""
    stored = [_stored(r) for r in rows]
    if not stored:
        return stored
    lines: dict[int, list[str]] = {}
    for epoch, line in tx.fetchall(
        "SELECT epoch, line FROM checkpoint_cosignatures WHERE epoch >= ? AND epoch <= ? "
        "ORDER BY epoch, witness",
        (min(s.epoch for s in stored), max(s.epoch for s in stored)),
    ):
        lines.setdefault(int(epoch), []).append(str(line))
    return [
        replace(s, note=append_signature_lines(s.note, lines[s.epoch])) if s.epoch in lines else s
        for s in stored
    ]


class CheckpointService:
    """Epoch commits, checkpoint history and the proofs a node serves between checkpoints."""

    def __init__(
        self,
        db: Database,
        name: str,
        signing_key: SigningKey,
        retention: RetentionPolicy | None = None,
    ) -> None:
        """``retention``, when given, prunes SMT versions older than it keeps after each
        commit (``store/smt_nodes.py``); by default every version stays provable."""
        self.db = db
        self.signer = NoteSigner(name, signing_key)
        self.smt = SmtNodeStore(db)
        self.log = EventLog(db)
        self.retention = retention
        self._commit_lock = threading.Lock()
        self.committed = threading.Event()
        """Set after every epoch this service commits (wakes the witness collector)."""

    @property
    def verifier_key(self) -> str:
        """The node's C2SP verifier key ``name+hash+base64(0x01 || key)`` (``oblivio key``)."""
        return self.signer.verifier_key

    def commit_epoch(
        self,
        updates: Mapping[bytes, bytes | None] | None = None,
        entries: Sequence[bytes] = (),
        now: datetime | None = None,
        within: Callable[[Transaction, int, int], None] | None = None,
    ) -> EpochCommit:
        """Commit one epoch: the SMT batch ``updates`` (key → value hash, ``None`` removes),
        the log ``entries`` (exact JCS bytes) followed by the ``map_root`` entry, and the signed
        checkpoint at the new size. Durable when it returns; all or nothing on a crash.
        ``within(tx, epoch, first_index)`` runs inside the same transaction (the caller's own
        bookkeeping, e.g. marking forget requests done), so it commits with the epoch or not at
        all; ``first_index`` is the log index of ``entries[0]``.

        Raises StorageError when the store fails (nothing is committed then).
        """
        created_at = format_time(now or datetime.now(UTC))
        with self._commit_lock, self.db.transaction() as tx:
            if tx.dialect == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(?)", (_PG_EPOCH_LOCK,))
            epoch = SmtNodeStore.latest_version(tx) + 1
            staged = self.smt.stage(tx, dict(updates or {}), epoch)
            map_root = map_root_entry(
                epoch, staged.tree.root, staged.previous_root, staged.result.changes
            )
            appended = self.log.append_in(tx, [*entries, map_root])
            note = sign_checkpoint(
                Checkpoint(self.signer.name, appended.size, appended.root), self.signer
            )
            tx.execute(
                "INSERT INTO checkpoints (epoch, tree_size, root, note, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (epoch, appended.size, appended.root, note, created_at),
            )
            if within is not None:
                within(tx, epoch, appended.first_index)
        self.smt.publish(staged)
        self.log.publish(appended)
        if self.retention is not None:
            self.smt.prune(self.retention)
        self.committed.set()
        stored = StoredCheckpoint(epoch, appended.size, appended.root, note, created_at)
        return EpochCommit(
            epoch,
            staged.tree.root,
            staged.previous_root,
            staged.result.changes,
            appended.first_index,
            stored,
        )

    def heartbeat(self, interval: timedelta, now: datetime | None = None) -> EpochCommit | None:
        """Commit an empty epoch if no epoch committed within ``interval`` (or none ever);
        return it, or ``None`` when the last one is recent enough."""
        now = now or datetime.now(UTC)
        latest = self.latest_checkpoint()
        if latest is not None:
            last = datetime.fromisoformat(latest.created_at.replace("Z", "+00:00"))
            if now - last < interval:
                return None
        return self.commit_epoch(now=now)

    def run_heartbeats(self, interval: timedelta, stop: threading.Event) -> None:
        """Call ``heartbeat`` until ``stop`` is set, waking at least every ``interval``.

        Meant for a daemon thread of the node server; storage errors are retried next tick.
        """
        tick = max(interval.total_seconds() / 4, 0.01)
        while not stop.wait(tick):
            try:
                self.heartbeat(interval)
            except StorageError:
                continue

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The newest signed checkpoint (with the cosignatures received for it), or ``None``
        before the first epoch."""
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(_SELECT_LATEST)
            return None if row is None else _cosigned(tx, [row])[0]

    def latest_or_first_checkpoint(self) -> StoredCheckpoint:
        """The newest checkpoint; a node that has none commits its first (empty) epoch."""
        latest = self.latest_checkpoint()
        return latest if latest is not None else self.commit_epoch().checkpoint

    def checkpoint(self, epoch: int) -> StoredCheckpoint:
        """The checkpoint of ``epoch`` with the cosignatures received for it. Raises
        NotFoundError if there is none."""
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                "SELECT epoch, tree_size, root, note, created_at FROM checkpoints WHERE epoch = ?",
                (epoch,),
            )
            if row is None:
                raise NotFoundError(f"no checkpoint for epoch {epoch}")
            return _cosigned(tx, [row])[0]

    def checkpoint_history(self, after_epoch: int = 0, limit: int = 100) -> list[StoredCheckpoint]:
        """Checkpoints after ``after_epoch`` with their cosignatures, oldest first, at most
        ``limit``."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT epoch, tree_size, root, note, created_at FROM checkpoints WHERE epoch > ? "
                "ORDER BY epoch LIMIT ?",
                (after_epoch, limit),
            )
            return _cosigned(tx, rows)

    def consistency_between(self, first_epoch: int, second_epoch: int) -> ConsistencyProof:
        """The log consistency proof from one checkpoint's size to another's."""
        first, second = self.checkpoint(first_epoch), self.checkpoint(second_epoch)
        return self.log.consistency_proof(first.size, second.size)

    def map_root_inclusion(self, epoch: int) -> tuple[dict[str, Any], InclusionProof]:
        """The ``map_root`` entry of ``epoch`` and its inclusion proof at that epoch's
        checkpoint (it is the checkpoint's last entry)."""
        stored = self.checkpoint(epoch)
        entry = parse_json(self.log.entry(stored.size - 1))
        return entry, self.log.inclusion_proof(stored.size - 1, stored.size)


def check_store_agrees(db: Database) -> StoredCheckpoint | None:
    """Check that the latest SMT version, the log and the latest checkpoint describe the same
    epoch (the crash-safety invariant); return the latest checkpoint.

    Raises StorageError naming the disagreement.
    """
    service_log = EventLog(db)
    with db.transaction(write=False) as tx:
        return _check_in(tx, service_log)


def _check_in(tx: Transaction, log: EventLog) -> StoredCheckpoint | None:
    version = SmtNodeStore.latest_version(tx)
    row = tx.fetchone(_SELECT_LATEST)
    size = log.size_in(tx)
    if row is None:
        if version != 0 or size != 0:
            raise StorageError(f"store: no checkpoint, but SMT version {version}, log size {size}")
        return None
    stored = _stored(row)
    if stored.epoch != version or stored.size != size:
        raise StorageError(
            f"store: latest checkpoint is epoch {stored.epoch} at size {stored.size}, "
            f"but SMT version is {version} and log size {size}"
        )
    last = tx.fetchone("SELECT entry FROM log_entries WHERE idx = ?", (size - 1,))
    root = tx.fetchone("SELECT root FROM smt_versions WHERE version = ?", (version,))
    if last is None or root is None:
        raise StorageError("store: the last log entry or the SMT root is missing")
    entry = parse_json(bytes(last[0]))
    if entry.get("type") != "map_root" or entry.get("epoch") != version:
        raise StorageError(f"store: the last log entry is not epoch {version}'s map_root")
    if entry.get("smt_root") != bytes(root[0]).hex():
        raise StorageError(
            f"store: map_root names SMT root {entry.get('smt_root')}, "
            f"the store has {bytes(root[0]).hex()}"
        )
    return stored
