"""Every service of an open node, wired once for the command line and the HTTP API.

Tombstones drive forgetting (issue point: a tombstone forgets the entity's artifacts in the scopes
it covers at the node's configured level; with ``legal_hold`` it suppresses only and keeps the
keys), and a revocation cancels what has not been executed yet. While a tombstone is active, an
artifact put about an entity and scope it covers is forgotten the same way, in the put's own
transaction (ADR 0018). What a tombstone asks for is logged exactly as an operator's forget or
hold would be (ADR 0017).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from oblivio.core.identifiers import ArtifactId, scope_pattern_covers
from oblivio.core.signing import SigningKey
from oblivio.core.tombstones import TombstoneRecord
from oblivio.node.checkpoints import CheckpointService
from oblivio.node.compliance import Compliance, open_compliance
from oblivio.node.forgetting import ForgetTerms, ForgettingService, settings_from
from oblivio.node.node import Node
from oblivio.node.recall import RecallService, load_alias_key
from oblivio.node.vault import AfterCommit, InsertFollowUp, Placement
from oblivio.store.database import Transaction

TOMBSTONE_AUTHORITY: Final = "tombstone"
LEGAL_HOLD_AUTHORITY: Final = "legal-hold tombstone"
"""The authority of what a tombstone asks for: kept by the node and in the openings of the
logged commitments, never in the log itself (ADR 0017)."""


@dataclass
class NodeServices:
    """A node with its checkpoints, forgetting, compliance and recall services."""

    node: Node
    checkpoints: CheckpointService
    forgetting: ForgettingService
    compliance: Compliance
    recall: RecallService

    def rotate_signing_key(self) -> SigningKey:
        """Rotate the node's key (manifest endorsed) and sign checkpoints with the new one."""
        key = self.compliance.rotate_signing_key()
        self.checkpoints = CheckpointService(self.node.db, self.node.config.name, key)
        self.forgetting.checkpoints = self.checkpoints
        return key

    def place_hold(
        self,
        *,
        artifact_id: str | None = None,
        entity_uri: str | None = None,
        scope: object = "*",
        authority: str,
        reason: str,
        actor: str | None = None,
    ) -> tuple[str, list[ArtifactId]]:
        """Place a legal hold and audit it (``legal_hold_placed``)."""
        hold_id, targets = self.forgetting.place_hold(
            artifact_id=artifact_id,
            entity_uri=entity_uri,
            scope=scope,
            authority=authority,
            reason=reason,
        )
        self.compliance.audit.append(
            "legal_hold_placed",
            actor=actor,
            subject=hold_id,
            details={"authority": authority, "reason": reason, "artifacts": len(targets)},
        )
        return hold_id, targets

    def release_hold(
        self, hold_id: str, *, authority: str, actor: str | None = None
    ) -> list[ArtifactId]:
        """Release a legal hold and audit it (``legal_hold_released``)."""
        released = self.forgetting.release_hold(hold_id, authority=authority)
        self.compliance.audit.append(
            "legal_hold_released",
            actor=actor,
            subject=hold_id,
            details={"authority": authority, "artifacts": len(released)},
        )
        return released

    def close(self) -> None:
        """Close the node."""
        self.node.close()

    def __enter__(self) -> NodeServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_services(node: Node) -> NodeServices:
    """Wire the services of ``node``."""
    compliance = open_compliance(node)
    checkpoints = CheckpointService(node.db, node.config.name, node.signing_key)
    forgetting = ForgettingService(node, checkpoints, settings_from(node.config.forgetting))
    recall = RecallService(node.db, node.vault, load_alias_key(node.home))
    forgetting.derived_erasers.append(recall.erase_derived)
    services = NodeServices(node, checkpoints, forgetting, compliance, recall)

    def terms_of(record: TombstoneRecord) -> ForgetTerms:
        """What a tombstone asks of every artifact it covers, found now or written later."""
        return ForgetTerms(
            level=forgetting.settings.tombstone_level,
            requestor=record.signed_by,
            authority=TOMBSTONE_AUTHORITY,
            reason=record.reason or "",
            entity_uri=record.entity_uri,
            scope=record.scope,
            source=record.id,
        )

    def apply_tombstone(record: TombstoneRecord) -> None:
        if record.legal_hold:
            forgetting.place_hold(
                entity_uri=record.entity_uri,
                scope=record.scope,
                authority=LEGAL_HOLD_AUTHORITY,
                reason=record.reason or "",
                source=record.id,
            )
        forgetting.forget_with(terms_of(record), allow_empty=True)

    def forget_what_tombstones_cover(
        tx: Transaction, placed: Sequence[Placement]
    ) -> InsertFollowUp | None:
        """New artifacts an active tombstone covers are forgotten as the tombstone forgot
        those it found when it was issued, in the put's own transaction (ADR 0018)."""
        covered: list[tuple[TombstoneRecord, list[ArtifactId]]] = []
        for entity_uri in sorted({p.entity_uri for p in placed}):
            for record in compliance.tombstones.store.active_for_entity_in(tx, entity_uri):
                ids = [
                    p.artifact_id
                    for p in placed
                    if p.entity_uri == entity_uri and scope_pattern_covers(record.scope, p.scope)
                ]
                if ids:
                    covered.append((record, ids))
        if not covered:
            return None
        # Before the put writes a row: an epoch commit holding this lock may wait on those rows.
        forgetting.lock_epoch_in(tx)

        def follow_up(tx: Transaction) -> AfterCommit:
            published: list[AfterCommit] = []
            for record, ids in covered:
                if record.legal_hold:
                    published.append(
                        forgetting.place_hold_in(
                            tx,
                            ids,
                            authority=LEGAL_HOLD_AUTHORITY,
                            reason=record.reason or "",
                            source=record.id,
                        )
                    )
                published.append(forgetting.forget_in(tx, ids, terms_of(record)))
                compliance.audit.append_in(
                    tx, "tombstone_applied", subject=record.id, details={"artifacts": ids}
                )

            def publish_all() -> None:
                for publish in published:
                    publish()

            return publish_all

        return follow_up

    def cancel(record: TombstoneRecord) -> tuple[str, ...]:
        _, erased = forgetting.cancel_from_source(record.id)
        recall.tombstones.invalidate()
        return tuple(erased)

    # The entity's alias hashes are taken before its artifacts are forgotten (DESIGN.md §11),
    # and the recall filter applies the new tombstone at once.
    compliance.tombstones.appliers.append(recall.capture_aliases)
    compliance.tombstones.appliers.append(apply_tombstone)
    node.vault.placement_rule = forget_what_tombstones_cover
    compliance.tombstones.erased_artifacts = cancel
    return services
