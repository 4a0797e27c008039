"""Custody of artifacts' capability keys: storing, unwrapping and forgetting them (DESIGN.md §5).

``KeyCustody`` is the interface the node talks to; ``KeyTreeCustody`` implements it with two key
trees over one wrapping-key backend: ``wrap`` holds the decrypt and prove keys, ``escrow`` the
recover copies (§4), each with its own root key in the backend. A leaf's wrap binds the artifact
id and the capability, so a wrapped key moved to another artifact or capability does not unwrap.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from oblivio.core.errors import IntegrityError
from oblivio.core.identifiers import CAPABILITIES, ArtifactId, Capability
from oblivio.core.receipts import DestructionReceipt
from oblivio.core.signing import SigningKey
from oblivio.keys.backend import RootKeyPurpose, WrappingKeyBackend
from oblivio.keys.key_tree import (
    DEFAULT_FANOUT,
    TREES,
    JournalEntry,
    KeyTree,
    KeyTreeNodes,
    KeyTreeStore,
    RootDestruction,
    TreeLeaf,
    tree_of,
)

CapabilityKeys = tuple[ArtifactId, Mapping[Capability, bytes]]
"""One artifact's capability keys in the clear, as the vault makes them."""


class KeyCustody(Protocol):
    """Stores, unwraps and forgets capability keys; unwrap failures are the opaque
    IntegrityError."""

    def store_capability_keys(self, nodes: KeyTreeNodes, items: Sequence[CapabilityKeys]) -> None:
        """Wrap and record the capability keys of new artifacts in the caller's transaction
        (the artifacts' rows must already be written in it)."""

    def wrap_capability_keys(
        self, nodes: KeyTreeNodes, items: Sequence[CapabilityKeys]
    ) -> list[TreeLeaf]:
        """Wrap the capability keys of new artifacts in the caller's transaction and return
        their leaves, not recorded: the caller records them in the same transaction, with the
        rows of the artifacts it writes next."""

    def unwrap_capability_key(self, artifact_id: ArtifactId, capability: Capability) -> bytes:
        """Return the plain capability key; raise IntegrityError if it cannot be unwrapped
        (altered, forgotten, or its root destroyed)."""

    def forget(
        self, artifact_ids: Sequence[ArtifactId], capabilities: Sequence[Capability] = CAPABILITIES
    ) -> list[DestructionReceipt]:
        """Forget these capability keys at level 1 as one batch; return the receipts of the
        root keys destroyed (none while a destruction window defers destruction)."""

    def begin_forget(
        self, artifact_ids: Sequence[ArtifactId], capabilities: Sequence[Capability] = CAPABILITIES
    ) -> list[JournalEntry]:
        """The intent step of a forget (committed); the old roots still live."""

    def destroy_roots(self, entries: Sequence[JournalEntry]) -> list[RootDestruction]:
        """Destroy the old roots of these batches (those due), unrecorded."""

    def record_destructions(
        self, nodes: KeyTreeNodes, destroyed: Sequence[RootDestruction]
    ) -> list[DestructionReceipt]:
        """Record destructions in the caller's transaction; return the receipts."""

    def destroy_due(self) -> list[DestructionReceipt]:
        """Destroy (and record) old roots whose destruction window has elapsed."""


@dataclass(frozen=True)
class RecoveryReport:
    """What ``recover`` found and finished."""

    receipts: tuple[DestructionReceipt, ...] = ()
    orphan_roots_destroyed: tuple[str, ...] = ()
    resurrected_roots_destroyed: tuple[str, ...] = ()
    standby_roots_destroyed: tuple[str, ...] = ()


class KeyTreeCustody:
    """Capability keys in two key trees whose roots live only in ``backend``."""

    def __init__(
        self,
        backend: WrappingKeyBackend,
        store: KeyTreeStore,
        signer: SigningKey,
        *,
        fanout: int = DEFAULT_FANOUT,
        destruction_window: timedelta = timedelta(0),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.backend = backend
        self.store = store
        self.signer = signer
        self.trees: dict[RootKeyPurpose, KeyTree] = {
            tree: KeyTree(
                tree,
                backend,
                store,
                signer,
                fanout=fanout,
                destruction_window=destruction_window,
                clock=clock,
                random_bytes=random_bytes,
            )
            for tree in TREES
        }

    def initialise(self) -> None:
        """Create both trees (one root key each in the backend) unless they exist."""
        with self.store.transaction() as nodes:
            for tree in self.trees.values():
                tree.initialise(nodes)

    def store_capability_keys(self, nodes: KeyTreeNodes, items: Sequence[CapabilityKeys]) -> None:
        self._add_leaves(nodes, items, record=True)

    def wrap_capability_keys(
        self, nodes: KeyTreeNodes, items: Sequence[CapabilityKeys]
    ) -> list[TreeLeaf]:
        return self._add_leaves(nodes, items, record=False)

    def _add_leaves(
        self, nodes: KeyTreeNodes, items: Sequence[CapabilityKeys], *, record: bool
    ) -> list[TreeLeaf]:
        by_tree: dict[RootKeyPurpose, list[tuple[ArtifactId, Capability, bytes]]] = {}
        for artifact_id, keys in items:
            for capability, key in keys.items():
                by_tree.setdefault(tree_of(capability), []).append((artifact_id, capability, key))
        return [
            leaf
            for tree, leaves in by_tree.items()
            for leaf in self.trees[tree].add_leaves(nodes, leaves, record=record)
        ]

    def unwrap_capability_key(self, artifact_id: ArtifactId, capability: Capability) -> bytes:
        tree = self.trees[tree_of(capability)]
        # A forget committing between this reader's statements (PostgreSQL reads committed
        # data per statement) can make one attempt fail; retry only if the root rotated.
        for _ in range(3):
            with self.store.transaction(write=False) as nodes:
                head = nodes.head(tree.tree)
                leaf = nodes.leaf(artifact_id, capability)
                if head is None or leaf is None:
                    raise IntegrityError()
                try:
                    return tree.unwrap_leaf(nodes, leaf)
                except IntegrityError:
                    pass
            with self.store.transaction(write=False) as nodes:
                now = nodes.head(tree.tree)
            if now is None or now.generation == head.generation:
                break
        raise IntegrityError()

    def forget(
        self, artifact_ids: Sequence[ArtifactId], capabilities: Sequence[Capability] = CAPABILITIES
    ) -> list[DestructionReceipt]:
        """Forget the capability keys as one batch per tree touched (one root rotation each):
        ``begin_forget``, ``destroy_roots``, then ``record_destructions`` in a transaction of
        its own.

        Unknown or already forgotten keys are skipped. Raises KeyBackendError if the backend
        fails; the journal keeps the batch and ``recover`` finishes it.
        """
        destroyed = self.destroy_roots(self.begin_forget(artifact_ids, capabilities))
        with self.store.transaction() as nodes:
            receipts = self.record_destructions(nodes, destroyed)
        return receipts + self.destroy_due()

    def begin_forget(
        self, artifact_ids: Sequence[ArtifactId], capabilities: Sequence[Capability] = CAPABILITIES
    ) -> list[JournalEntry]:
        """The intent step of both trees in one transaction: the keys' leaves dropped, the
        trees re-keyed under new roots, the batches journalled; the old roots still live.
        Returns the journal entries (none for a tree with no live key among these)."""
        entries = []
        with self.store.transaction() as nodes:
            found = nodes.find_leaves(
                [
                    (aid, capability)
                    for aid in dict.fromkeys(artifact_ids)
                    for capability in capabilities
                ]
            )
            for tree in self.trees.values():
                if (entry := tree.rekey_forgotten(nodes, found)) is not None:
                    entries.append(entry)
        return entries

    def destroy_roots(self, entries: Sequence[JournalEntry]) -> list[RootDestruction]:
        """Destroy the old roots of freshly journalled batches whose destruction window has
        elapsed (each also makes its tree's standby root); nothing is recorded yet. Raises
        KeyBackendError if the backend fails (the journal keeps the batches)."""
        return [
            self.trees[entry.tree].destroy_root(entry, make_standby=True)
            for entry in entries
            if self.trees[entry.tree].due(entry)
        ]

    def record_destructions(
        self, nodes: KeyTreeNodes, destroyed: Sequence[RootDestruction]
    ) -> list[DestructionReceipt]:
        """In the caller's transaction (the node's epoch): receipts, journal states and standby
        roots. Returns the receipts. The forgotten wrapped keys stay in their rows, unreadable
        (docs/adr/0014)."""
        for destruction in destroyed:
            self.trees[destruction.entry.tree].record_destruction(nodes, destruction)
        return [d.receipt for d in destroyed]

    def destroy_due(self) -> list[DestructionReceipt]:
        """Destroy old roots whose destruction window has elapsed; return their receipts."""
        return [receipt for tree in self.trees.values() for receipt in tree.destroy_due()]

    def recover(self) -> RecoveryReport:
        """Finish whatever a crash interrupted; run when a node opens and before a forget.

        1. destroy every root the backend holds that the database does not need: one made just
           before a crash (its batch never committed), a destroyed one that came back
           (SoftHSMv2 issue 903), which gets a fresh receipt, and the standby roots (a restored
           database's standby may be the root of the live node's newer tree; docs/adr/0008);
        2. destroy the old roots of committed batches (intents) whose destruction window has
           elapsed, and record their receipts (each destruction makes a new standby).
        """
        orphans: list[str] = []
        resurrected: list[str] = []
        standbys: list[str] = []
        receipts: list[DestructionReceipt] = []
        with self.store.transaction() as nodes:
            needed: set[str] = set()
            for tree in self.trees.values():
                needed |= tree.pending_roots(nodes)
            standby_refs = {
                ref for tree in self.trees.values() if (ref := tree.clear_standby(nodes))
            }
            stray = self.backend.live_root_keys() - needed
            if stray:
                destroyed = {e.old_root: e for e in nodes.journal(["destroyed"])}
                for ref in sorted(stray):
                    evidence = self.backend.destroy_root_key(ref)
                    entry = destroyed.get(ref)
                    if entry is None:
                        (standbys if ref in standby_refs else orphans).append(ref)
                        continue
                    # The root came back after its destruction was confirmed: destroy it
                    # again and issue a fresh receipt that says so.
                    resurrected.append(ref)
                    receipt = self.trees[entry.tree].sign_receipt(
                        entry, evidence, destroyed_again=True
                    )
                    nodes.record_destruction(entry, receipt)
                    receipts.append(receipt)
        receipts.extend(self.destroy_due())
        return RecoveryReport(tuple(receipts), tuple(orphans), tuple(resurrected), tuple(standbys))
