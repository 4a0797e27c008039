"""Tombstones as a node service: issue, revoke, receive, and report (seed 002 §23, seed 001).

Issued records are signed with the node's org key on behalf of the admin agent that asked
(``signed_by = agent:ORG/NAME``). Inbound records are verified against the manifest of the org
their ``signed_by`` names — never of the peer that relayed them — with the key their ``key_id``
selects (§23.4.2); any failure is audited as ``tombstone_verification_failed`` and refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from oblivio.core.deletion import (
    Seed001Tombstone,
    seed001_of,
    seed001_view,
    verify_deletion_request,
)
from oblivio.core.errors import TombstoneVerificationFailedError, VerificationError
from oblivio.core.identifiers import (
    ScopePattern,
    format_time,
    parse_time,
    validate_entity_uri,
    validate_scope_pattern,
)
from oblivio.core.manifest import org_of_signer, signer_uri
from oblivio.core.signing import SigningKey
from oblivio.core.tombstones import (
    REVOCATION_PREFIX,
    TOMBSTONE_PREFIX,
    TombstoneRecord,
    TombstoneRevocationRecord,
    sign_revocation,
    sign_tombstone,
    verify_record_signature,
)
from oblivio.node.audit import AuditLog
from oblivio.node.ids import new_record_id
from oblivio.node.manifests import ManifestRegistry
from oblivio.store.database import Transaction
from oblivio.store.tombstones import TombstoneStore

DEFAULT_RETENTION_HORIZON = timedelta(days=3650)
"""Inbound tombstones older than this are refused (§23.4.2 step 2)."""

TombstoneApplier = Callable[[TombstoneRecord], None]
"""Acts on a newly stored tombstone (forgetting the entity's artifacts, point 4)."""

StoredRecord = TombstoneRecord | TombstoneRevocationRecord
RecordObserver = Callable[[Transaction, StoredRecord, str | None], None]
"""Runs in the transaction that stores a new record (issued: sender None; received: the peer
that delivered it), so that what depends on the record (the federation outbox) is written
with it or not at all."""


@dataclass(frozen=True)
class Revocation:
    """A stored revocation, and what it could not restore."""

    record: TombstoneRevocationRecord
    erased_artifacts: tuple[str, ...]


class TombstoneService:
    """Issues, revokes and receives tombstones for one node (org)."""

    def __init__(
        self,
        store: TombstoneStore,
        registry: ManifestRegistry,
        audit: AuditLog,
        org: str,
        signing_key: Callable[[], SigningKey],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retention_horizon: timedelta = DEFAULT_RETENTION_HORIZON,
    ) -> None:
        self.store = store
        self.registry = registry
        self.audit = audit
        self.org = org
        self._signing_key = signing_key
        self._clock = clock
        self.retention_horizon = retention_horizon
        self.appliers: list[TombstoneApplier] = []
        self.observers: list[RecordObserver] = []
        self.erased_artifacts: Callable[[TombstoneRecord], tuple[str, ...]] = lambda _: ()

    def _observe(self, tx: Transaction, record: StoredRecord, sender: str | None) -> None:
        for observer in self.observers:
            observer(tx, record, sender)

    def _apply(self, record: TombstoneRecord) -> None:
        for applier in self.appliers:
            applier(record)

    def issue(
        self,
        agent_name: str,
        entity_uri: str,
        scope: object,
        reason: str | None,
        legal_hold: bool = False,
    ) -> tuple[TombstoneRecord, bool]:
        """Issue a tombstone, or return the active one for the same entity URI and scope.

        Returns (record, created). Raises InvalidEntityUriError or InvalidScopeError first,
        before anything is signed or stored.
        """
        validate_entity_uri(entity_uri)
        pattern: ScopePattern = validate_scope_pattern(scope)
        signing_key = self._signing_key()
        self.registry.own(self.org, signing_key)
        record = sign_tombstone(
            signing_key,
            record_id=new_record_id(TOMBSTONE_PREFIX),
            entity_uri=entity_uri,
            scope=pattern,
            reason=reason,
            signed_by=signer_uri(self.org, agent_name),
            created_at=format_time(self._clock()),
            legal_hold=legal_hold,
        )

        def on_insert(tx: Transaction) -> None:
            self.audit.append_in(
                tx,
                "legal_hold_placed" if legal_hold else "tombstone_issued",
                actor=record.signed_by,
                subject=record.id,
                details={"entity_uri": entity_uri, "scope": record.to_dict()["scope"]},
            )
            self._observe(tx, record, None)

        stored, created = self.store.tombstone(record, on_insert)
        if created:
            self._apply(stored)
        return stored, created

    def revoke(self, agent_name: str, tombstone_id: str, reason: str) -> Revocation:
        """Revoke a tombstone (§23.2.5). Raises TombstoneNotFoundError,
        TombstoneAlreadyRevokedError. Data already erased at level 1 stays gone; the result
        lists those artifacts."""
        tombstone = self.store.get(tombstone_id)
        signing_key = self._signing_key()
        self.registry.own(self.org, signing_key)
        revocation = sign_revocation(
            signing_key,
            record_id=new_record_id(REVOCATION_PREFIX),
            tombstone_id=tombstone_id,
            reason=reason,
            signed_by=signer_uri(self.org, agent_name),
            created_at=format_time(self._clock()),
        )

        def on_insert(tx: Transaction) -> None:
            self.audit.append_in(
                tx,
                "legal_hold_released" if tombstone.legal_hold else "tombstone_revoked",
                actor=revocation.signed_by,
                subject=tombstone_id,
                details={"revocation_id": revocation.id},
            )
            self._observe(tx, revocation, None)

        stored = self.store.revoke_tombstone(revocation, on_insert)
        return Revocation(stored, self.erased_artifacts(tombstone))

    def verify_inbound(self, record: StoredRecord) -> None:
        """Verify an inbound record (§23.4.2 steps 1 and 2); raise VerificationError naming why."""
        org = org_of_signer(record.signed_by)
        manifest = self.registry.find(org)
        if manifest is None:
            raise VerificationError(f"no manifest known for org {org!r} (signed_by)")
        key = manifest.key_for(record.key_id, record.created_at)
        verify_record_signature(record, key)
        if parse_time(record.created_at) < self._clock() - self.retention_horizon:
            raise VerificationError(
                f"created_at {record.created_at} is older than the retention horizon"
            )

    def receive(
        self, data: object, peer: str, channel: str = "push"
    ) -> tuple[TombstoneRecord, bool]:
        """Verify and store an inbound tombstone, idempotently on its id; apply it when new.
        ``channel`` (push or pull) is audited with it.

        Raises InvalidInputError (and its URI/scope kinds) for a malformed record, and
        TombstoneVerificationFailedError — after auditing ``tombstone_verification_failed`` —
        when it does not verify. Nothing is stored in either case.
        """
        record = TombstoneRecord.from_dict(data)
        try:
            self.verify_inbound(record)
        except VerificationError as e:
            self.audit.append(
                "tombstone_verification_failed",
                actor=peer,
                subject=record.id,
                details={"signed_by": record.signed_by, "key_id": record.key_id, "why": str(e)},
            )
            raise TombstoneVerificationFailedError(
                f"tombstone {record.id} does not verify: {e}"
            ) from e

        return self._store_received(record, peer, channel)

    def receive_seed001(
        self, data: object, peer: str, channel: str = "push"
    ) -> tuple[TombstoneRecord, bool]:
        """Verify and store an inbound seed 001 Tombstone as its §23 view (core/deletion.py),
        idempotently on its id; apply it when new. Its ``deletion_request`` is verified with
        the key the originator's manifest held at its ``timestamp``; the retention horizon
        applies to that ``timestamp``.

        Raises InvalidInputError for a malformed tombstone, TombstoneVerificationFailedError
        (audited) when it does not verify. Nothing is stored in either case.
        """
        tombstone = Seed001Tombstone.from_dict(data)
        request = tombstone.request
        try:
            manifest = self.registry.find(request.org)
            if manifest is None:
                raise VerificationError(f"no manifest known for org {request.org!r} (originator)")
            key = verify_deletion_request(request, manifest)
            if parse_time(request.timestamp) < self._clock() - self.retention_horizon:
                raise VerificationError(
                    f"timestamp {request.timestamp} is older than the retention horizon"
                )
        except VerificationError as e:
            self.audit.append(
                "tombstone_verification_failed",
                actor=peer,
                subject=tombstone.record_id,
                details={"originator_id": request.originator_id, "form": "seed001", "why": str(e)},
            )
            raise TombstoneVerificationFailedError(
                f"seed 001 tombstone {tombstone.id} does not verify: {e}"
            ) from e
        record = TombstoneRecord.from_dict(seed001_view(tombstone, key.key_id))
        return self._store_received(record, peer, channel)

    def _store_received(
        self, record: TombstoneRecord, peer: str, channel: str
    ) -> tuple[TombstoneRecord, bool]:
        """Store a verified inbound record (audited ``tombstone_received``); apply it when new."""

        def on_insert(tx: Transaction) -> None:
            self.audit.append_in(
                tx,
                "tombstone_received",
                actor=peer,
                subject=record.id,
                details={
                    "signed_by": record.signed_by,
                    "entity_uri": record.entity_uri,
                    "channel": channel,
                    "form": "seed001" if seed001_of(record.raw) is not None else "seed002",
                },
            )
            self._observe(tx, record, peer)

        stored, created = self.store.store_received(record, peer, on_insert)
        if created:
            self._apply(stored)
        return stored, created

    def receive_revocation(self, data: object, peer: str) -> tuple[TombstoneRevocationRecord, bool]:
        """Verify and store an inbound revocation, idempotently on its id; cancel what its
        tombstone asked for that has not been executed yet (§23.2.5).

        Raises InvalidInputError for a malformed record, TombstoneNotFoundError if its tombstone
        is not (yet) here, TombstoneAlreadyRevokedError if another revocation already names it,
        and TombstoneVerificationFailedError (audited) when it does not verify.
        """
        revocation = TombstoneRevocationRecord.from_dict(data)
        try:
            self.verify_inbound(revocation)
        except VerificationError as e:
            self.audit.append(
                "tombstone_verification_failed",
                actor=peer,
                subject=revocation.id,
                details={"signed_by": revocation.signed_by, "why": str(e)},
            )
            raise TombstoneVerificationFailedError(
                f"revocation {revocation.id} does not verify: {e}"
            ) from e
        tombstone = self.store.get(revocation.tombstone_id)
        with self.store.db.transaction(write=False) as tx:
            row = tx.fetchone("SELECT 1 FROM tombstone_revocations WHERE id = ?", (revocation.id,))
        if row is not None:
            return revocation, False

        def on_insert(tx: Transaction) -> None:
            self.audit.append_in(
                tx,
                "tombstone_revocation_received",
                actor=peer,
                subject=revocation.tombstone_id,
                details={"revocation_id": revocation.id, "signed_by": revocation.signed_by},
            )
            self._observe(tx, revocation, peer)

        stored = self.store.revoke_tombstone(revocation, on_insert)
        self.erased_artifacts(tombstone)
        return stored, True
