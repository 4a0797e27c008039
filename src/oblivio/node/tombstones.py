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
from oblivio.store.tombstones import TombstoneStore

DEFAULT_RETENTION_HORIZON = timedelta(days=3650)
"""Inbound tombstones older than this are refused (§23.4.2 step 2)."""

TombstoneApplier = Callable[[TombstoneRecord], None]
"""Acts on a newly stored tombstone (forgetting the entity's artifacts, point 4)."""


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
        self.erased_artifacts: Callable[[TombstoneRecord], tuple[str, ...]] = lambda _: ()

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
        stored, created = self.store.tombstone(
            record,
            lambda tx: self.audit.append_in(
                tx,
                "legal_hold_placed" if legal_hold else "tombstone_issued",
                actor=record.signed_by,
                subject=record.id,
                details={"entity_uri": entity_uri, "scope": record.to_dict()["scope"]},
            ),
        )
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
        stored = self.store.revoke_tombstone(
            revocation,
            lambda tx: self.audit.append_in(
                tx,
                "legal_hold_released" if tombstone.legal_hold else "tombstone_revoked",
                actor=revocation.signed_by,
                subject=tombstone_id,
                details={"revocation_id": revocation.id},
            ),
        )
        return Revocation(stored, self.erased_artifacts(tombstone))

    def verify_inbound(self, record: TombstoneRecord) -> None:
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

    def receive(self, data: object, peer: str) -> tuple[TombstoneRecord, bool]:
        """Verify and store an inbound tombstone, idempotently on its id; apply it when new.

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
        stored, created = self.store.store_received(
            record,
            peer,
            lambda tx: self.audit.append_in(
                tx,
                "tombstone_received",
                actor=peer,
                subject=record.id,
                details={"signed_by": record.signed_by, "entity_uri": record.entity_uri},
            ),
        )
        if created:
            self._apply(stored)
        return stored, created
