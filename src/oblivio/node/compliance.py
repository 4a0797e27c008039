"""The compliance services of an open node: audit log, API keys, org manifests, tombstones.

Built on top of a ``Node`` (its database, home and signing key) so that the HTTP API and the
command line share one wiring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from oblivio.core.manifest import OrgManifest
from oblivio.core.signing import SigningKey
from oblivio.node.api_keys import ApiKeys
from oblivio.node.audit import AuditLog
from oblivio.node.manifests import ManifestRegistry, finish_key_rotation, rotate_signing_key
from oblivio.node.node import Node
from oblivio.node.tombstones import TombstoneService
from oblivio.store.tombstones import TombstoneStore


@dataclass
class Compliance:
    """Audit, API keys, manifests and tombstones of one node."""

    node: Node
    audit: AuditLog
    api_keys: ApiKeys
    manifests: ManifestRegistry
    tombstones: TombstoneService
    clock: Callable[[], datetime]

    @property
    def org(self) -> str:
        """The node's org name (its node name)."""
        return self.node.config.name

    def own_manifest(self) -> OrgManifest:
        """This node's manifest, created on first use."""
        return self.manifests.own(self.org, self.node.signing_key)

    def rotate_signing_key(self) -> SigningKey:
        """Rotate the node's signing key; the manifest endorses the new key with the old."""
        self.own_manifest()
        new_key = rotate_signing_key(
            self.node.home, self.manifests, self.org, self.node.signing_key, self.clock()
        )
        self.node.signing_key = new_key
        return new_key


def open_compliance(node: Node, clock: Callable[[], datetime] | None = None) -> Compliance:
    """Wire the compliance services of ``node``, finishing an interrupted key rotation first."""
    now = clock or (lambda: datetime.now(UTC))
    audit = AuditLog(node.db, now)
    manifests = ManifestRegistry(node.db, audit, now)
    node.signing_key = finish_key_rotation(node.home, manifests, node.config.name)
    manifests.own(node.config.name, node.signing_key)
    tombstones = TombstoneService(
        TombstoneStore(node.db),
        manifests,
        audit,
        node.config.name,
        lambda: node.signing_key,
        clock=now,
    )
    return Compliance(node, audit, ApiKeys(node.db, audit, now), manifests, tombstones, now)
