"""Org manifests held by a node: its own (with key rotation) and those of other orgs.

A node's org is its name; its own manifest chains the node's Ed25519 signing keys. Rotation
writes the next key beside the current one first (``signing.key.next``), records it in the
manifest, and only then swaps the key files, so a crash at any point is finished on the next
open: the signing key in use is always the manifest's current key.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from oblivio.core.belief import FederationKeys, sign_federation_key
from oblivio.core.canonical import canonical_json, parse_json
from oblivio.core.encoding import b64url_decode
from oblivio.core.errors import InvalidInputError, NotFoundError, VerificationError
from oblivio.core.identifiers import format_time
from oblivio.core.manifest import (
    OrgManifest,
    manifest_extends,
    new_manifest,
    rotate_manifest,
    verify_manifest,
)
from oblivio.core.signing import SigningKey
from oblivio.keys.key_file import fsync_directory
from oblivio.node.audit import AuditLog
from oblivio.node.home import (
    SIGNING_KEY_FILE,
    load_signing_key,
    new_signing_key,
    signing_key_file_bytes,
    write_private_file,
)
from oblivio.store.database import Database, Transaction

NEXT_KEY_FILE = SIGNING_KEY_FILE + ".next"


class ManifestRegistry:
    """The org_manifests table: this node's manifest and the manifests it trusts."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.audit = audit
        self._clock = clock

    def store_in(self, tx: Transaction, manifest: OrgManifest, own: bool) -> None:
        """Insert or replace a verified manifest inside an open write transaction."""
        text = canonical_json(dict(manifest.raw)).decode("utf-8")
        now = format_time(self._clock())
        changed = tx.execute(
            "UPDATE org_manifests SET manifest_json = ?, updated_at = ? WHERE org = ?",
            (text, now, manifest.org),
        )
        if changed == 0:
            tx.execute(
                "INSERT INTO org_manifests (org, manifest_json, anchor_key_id, own, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (manifest.org, text, manifest.keys[0].key_id, 1 if own else 0, now),
            )

    def find(self, org: str) -> OrgManifest | None:
        """The verified manifest of ``org``, or None if this node knows no such org."""
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                "SELECT manifest_json, anchor_key_id FROM org_manifests WHERE org = ?", (org,)
            )
        if row is None:
            return None
        return verify_manifest(parse_json(row[0]), anchor_key_id=row[1])

    def own(self, org: str, signing_key: SigningKey) -> OrgManifest:
        """This node's manifest, created with ``signing_key`` as its anchor if there is none,
        with the federation keys derived from ``signing_key`` published in it (DESIGN.md §12):
        added to a manifest made before they existed, and again after a key rotation."""
        existing = self.find(org)
        if existing is None:
            manifest = verify_manifest(new_manifest(org, signing_key, format_time(self._clock())))
            with self.db.transaction() as tx:
                if tx.fetchone("SELECT 1 FROM org_manifests WHERE org = ?", (org,)) is None:
                    self.store_in(tx, manifest, own=True)
                    self.audit.append_in(
                        tx,
                        "manifest_created",
                        subject=org,
                        details={"key_id": signing_key.key_id},
                    )
            existing = self.find(org)
            assert existing is not None  # noqa: S101 - written just above, or by a racing open
        statement = existing.raw.get("federation_key")
        if isinstance(statement, dict) and statement.get("key_id") == signing_key.key_id:
            return existing
        if existing.current_key_id != signing_key.key_id:
            return existing  # a rotation in progress: published once it completes
        return self._publish_federation_key(existing, signing_key)

    def _publish_federation_key(
        self, manifest: OrgManifest, signing_key: SigningKey
    ) -> OrgManifest:
        statement = sign_federation_key(
            signing_key,
            manifest.org,
            FederationKeys(signing_key.seed),
            format_time(max(self._clock(), manifest.keys[-1].created_at)),
        )
        updated = verify_manifest(
            {**manifest.raw, "federation_key": statement},
            anchor_key_id=manifest.keys[0].key_id,
        )
        with self.db.transaction() as tx:
            self.store_in(tx, updated, own=True)
            self.audit.append_in(
                tx,
                "federation_key_published",
                subject=manifest.org,
                details={"key_id": signing_key.key_id},
            )
        return updated

    def trust(self, manifest_json: object, anchor_key_id: str) -> OrgManifest:
        """Record (or update) another org's manifest, pinned to its trust anchor.

        An update must extend the stored chain (append-only). Raises VerificationError if the
        chain does not verify, the anchor differs, or an update rewrites history.
        """
        manifest = verify_manifest(manifest_json, anchor_key_id=anchor_key_id)
        current = self.find(manifest.org)
        if current is not None:
            if current.keys[0].key_id != anchor_key_id:
                raise VerificationError(
                    f"manifest of {manifest.org}: expected anchor {current.keys[0].key_id}, "
                    f"got {anchor_key_id}"
                )
            if not manifest_extends(current, manifest):
                raise VerificationError(
                    f"manifest of {manifest.org}: the update does not extend the stored chain"
                )
        with self.db.transaction() as tx:
            self.store_in(tx, manifest, own=False)
            self.audit.append_in(
                tx,
                "manifest_trusted",
                subject=manifest.org,
                details={"keys": [k.key_id for k in manifest.keys]},
            )
        return manifest

    def require(self, org: str) -> OrgManifest:
        """The manifest of ``org``; raises NotFoundError if this node trusts no such org."""
        manifest = self.find(org)
        if manifest is None:
            raise NotFoundError(f"no manifest known for org {org!r}")
        return manifest


def finish_key_rotation(home: Path, registry: ManifestRegistry, org: str) -> SigningKey:
    """Complete or abandon a rotation that a crash interrupted; return the key to sign with."""
    next_path = home / NEXT_KEY_FILE
    current = load_signing_key(home)
    if not next_path.exists():
        return current
    candidate = _read_key(next_path)
    manifest = registry.find(org)
    if manifest is not None and manifest.current_key_id == candidate.key_id:
        os.replace(next_path, home / SIGNING_KEY_FILE)
        fsync_directory(home)
        return candidate
    next_path.unlink()
    return current


def _read_key(path: Path) -> SigningKey:
    try:
        return SigningKey(b64url_decode(path.read_text("ascii").strip()))
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{path}: unreadable signing key: {e}") from e


def rotate_signing_key(
    home: Path, registry: ManifestRegistry, org: str, current: SigningKey, now: datetime
) -> SigningKey:
    """Make a new signing key, endorsed by ``current`` in the manifest; return it."""
    manifest = registry.own(org, current)
    successor = new_signing_key()
    next_path = home / NEXT_KEY_FILE
    write_private_file(next_path, signing_key_file_bytes(successor), overwrite=True)
    fsync_directory(home)
    rotated = verify_manifest(
        rotate_manifest(manifest.raw, current, successor, format_time(now)),
        anchor_key_id=manifest.keys[0].key_id,
    )
    with registry.db.transaction() as tx:
        registry.store_in(tx, rotated, own=True)
        registry.audit.append_in(
            tx,
            "signing_key_rotated",
            subject=org,
            details={"from": current.key_id, "to": successor.key_id},
        )
    os.replace(next_path, home / SIGNING_KEY_FILE)
    fsync_directory(home)
    return successor
