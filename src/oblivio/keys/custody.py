"""Custody of artifacts' capability keys: storing, unwrapping and forgetting them (DESIGN.md §5).

``KeyCustody`` is the interface the node talks to; ``KeyTreeCustody`` implements it with two key
trees over one wrapping-key backend: ``wrap`` holds the decrypt and prove keys, ``escrow`` the
recover copies (§4), each with its own root key in the backend. A leaf's wrap binds the artifact
id and the capability, so a wrapped key moved to another artifact or capability does not unwrap.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from oblivio.core.errors import (
    ConflictError,
    IntegrityError,
    KeyBackendError,
    NodeStateMismatchError,
)
from oblivio.core.identifiers import CAPABILITIES, ArtifactId, Capability
from oblivio.core.receipts import DestructionReceipt
from oblivio.core.signing import SigningKey
from oblivio.keys.backend import (
    KeyStoreBinding,
    RootKeyPurpose,
    WrappingKeyBackend,
    binding_node,
)
from oblivio.keys.key_tree import (
    DEFAULT_FANOUT,
    TREES,
    JournalEntry,
    KeyTree,
    KeyTreeNodes,
    KeyTreeStore,
    RootDestruction,
    StandbyMissingError,
    TreeHead,
    TreeLeaf,
    TreeNode,
    tree_of,
)

_STANDBY_ATTEMPTS = 5

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

    def unwrap_leaves(self, nodes: KeyTreeNodes, leaves: Sequence[TreeLeaf]) -> list[bytes]:
        """The plain capability keys of ``leaves`` (read by the caller in its transaction), in
        their order, one pass per tree; raise IntegrityError if any cannot be unwrapped."""

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
    """What ``recover`` found and finished: receipts recorded, planned roots never adopted
    and destroyed, destroyed roots that came back and were destroyed again, and roots the
    backend holds that the database does not name (left alone)."""

    receipts: tuple[DestructionReceipt, ...] = ()
    abandoned_roots_destroyed: tuple[str, ...] = ()
    resurrected_roots_destroyed: tuple[str, ...] = ()
    unknown_roots: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether recovery destroyed or found anything worth an audit entry."""
        return bool(
            self.receipts
            or self.abandoned_roots_destroyed
            or self.resurrected_roots_destroyed
            or self.unknown_roots
        )


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
        """Create both trees unless they exist: their root keys planned (committed), made in
        the backend, then the trees recorded (write-ahead, docs/adr/0016)."""
        with self.store.transaction() as nodes:
            plans = [
                tree.plan_root(nodes)
                for tree in self.trees.values()
                if nodes.head(tree.tree) is None
            ]
        if not plans:
            return
        for plan in plans:
            self.trees[plan.tree].make_root(plan)
        with self.store.transaction() as nodes:
            for plan in plans:
                self.trees[plan.tree].initialise(nodes, plan.key_ref)

    def ensure_standbys(self) -> None:
        """Give each tree a standby root if it has none (before a forget's intent)."""
        for tree in self.trees.values():
            tree.ensure_standby()

    def bind_new(self, node_key_id: str) -> KeyStoreBinding:
        """Bind a new database and a new key store to each other (``oblivio init``): a fresh
        key-store id at generation 0, recorded in the database first. Raises
        NodeStateMismatchError if either already belongs somewhere."""
        kept = self.backend.binding()
        if kept is not None or self.backend.live_root_keys():
            owner = f" (node {kept.node[:16]}…)" if kept is not None else ""
            raise NodeStateMismatchError(
                "key_store_in_use",
                f"the key store already holds another node's keys{owner}: give this node a "
                "key store of its own (for pkcs11, another object= prefix or token)",
            )
        binding = KeyStoreBinding(secrets.token_hex(16), binding_node(node_key_id), 0)
        with self.store.transaction() as nodes:
            if nodes.binding() is not None or any(nodes.head(t) for t in TREES):
                raise NodeStateMismatchError(
                    "database_in_use",
                    "the database already belongs to a node: give this node a database of its own",
                )
            nodes.save_binding(binding)
        self.backend.bind(binding)
        return binding

    def check_key_store(self, node_key_id: str) -> KeyStoreBinding:
        """Check that the database and the key store belong together and to this node, and
        return their binding; destroys nothing (DESIGN.md §5, docs/adr/0016).

        Refused with NodeStateMismatchError, whose ``kind`` says why: ``database_older`` (the
        key store's generation is ahead: a restored backup or a wrong store; ``oblivio
        restore-backup`` is the explicit path), ``foreign_key_store`` / ``foreign_database``
        (of another node, or not of each other), ``database_unbound`` (an empty database, or
        one that never knew this key store), ``key_store_unbound`` (a key store emptied or
        replaced), ``key_store_missing_roots`` (the key store lacks a root the database's
        trees need). A pair made before bindings existed is adopted when the key store holds
        every root the database's trees need."""
        node = binding_node(node_key_id)
        kept = self.backend.binding()
        with self.store.transaction(write=False) as nodes:
            recorded = nodes.binding()
            heads = [head for t in TREES if (head := nodes.head(t)) is not None]
        if recorded is None and kept is None:
            return self._adopt_unbound(node, heads)
        if recorded is None:
            raise NodeStateMismatchError(
                "database_unbound",
                "the database has no record of the key store (an empty database, a wrong "
                "--store, or another node's): refusing to open; nothing was destroyed",
            )
        if kept is None:
            raise NodeStateMismatchError(
                "key_store_unbound",
                "the key store has no record of this database (emptied, replaced or of "
                "another node): refusing to open; nothing was destroyed",
            )
        if recorded.node != node:
            raise NodeStateMismatchError(
                "foreign_database",
                f"the database belongs to node {recorded.node[:16]}…, not to this node "
                f"({node[:16]}…): refusing to open; nothing was destroyed",
            )
        if kept.node != node:
            raise NodeStateMismatchError(
                "foreign_key_store",
                f"the key store belongs to node {kept.node[:16]}…, not to this node "
                f"({node[:16]}…): refusing to open; nothing was destroyed",
            )
        if kept.store_id != recorded.store_id:
            raise NodeStateMismatchError(
                "foreign_key_store",
                f"the key store ({kept.store_id[:12]}…) is not the one the database was made "
                f"with ({recorded.store_id[:12]}…): refusing to open; nothing was destroyed",
            )
        if kept.generation > recorded.generation:
            raise NodeStateMismatchError(
                "database_older",
                f"the database (generation {recorded.generation}) is older than its key store "
                f"(generation {kept.generation}): a restored backup or a stale copy; refusing "
                "to open, nothing was destroyed ('oblivio restore-backup' brings a backup "
                "back into service and says what it loses)",
            )
        self._check_head_roots(heads)
        return recorded

    def _check_head_roots(self, heads: Sequence[TreeHead]) -> None:
        missing = [h.tree for h in heads if not self.backend.has_root_key(h.root_ref)]
        if missing:
            raise NodeStateMismatchError(
                "key_store_missing_roots",
                f"the key store lacks the root key of the {' and '.join(missing)} tree the "
                "database needs (an older key store, or another token or file): refusing to "
                "open; nothing was destroyed",
            )

    def _adopt_unbound(self, node: str, heads: Sequence[TreeHead]) -> KeyStoreBinding:
        """A database and key store from before bindings (or an init interrupted before it
        bound them): bind them if they match."""
        if not heads and self.backend.live_root_keys():
            raise NodeStateMismatchError(
                "database_unbound",
                "the database is empty but the key store holds root keys (a wrong --store, or "
                "a database that was lost): refusing to open; nothing was destroyed",
            )
        self._check_head_roots(heads)
        binding = KeyStoreBinding(secrets.token_hex(16), node, 0)
        with self.store.transaction() as nodes:
            if nodes.binding() is not None:
                raise NodeStateMismatchError(
                    "database_in_use", "the database was bound meanwhile by another process"
                )
            nodes.save_binding(binding)
        self.backend.bind(binding)
        return binding

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

    def unwrap_leaves(self, nodes: KeyTreeNodes, leaves: Sequence[TreeLeaf]) -> list[bytes]:
        by_tree: dict[RootKeyPurpose, list[int]] = {}
        for n, leaf in enumerate(leaves):
            by_tree.setdefault(tree_of(leaf.capability), []).append(n)
        keys: list[bytes] = [b""] * len(leaves)
        for tree, positions in by_tree.items():
            unwrapped = self.trees[tree].unwrap_leaves(nodes, [leaves[n] for n in positions])
            for n, key in zip(positions, unwrapped, strict=True):
                keys[n] = key
        return keys

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
        keys = [
            (aid, capability) for aid in dict.fromkeys(artifact_ids) for capability in capabilities
        ]
        for _ in range(_STANDBY_ATTEMPTS):
            self.ensure_standbys()
            entries = []
            try:
                with self.store.transaction() as nodes:
                    found = nodes.find_leaves(keys)
                    for tree in self.trees.values():
                        if (entry := tree.rekey_forgotten(nodes, found)) is not None:
                            entries.append(entry)
            except StandbyMissingError:
                continue  # another process used the standby between the two steps
            return entries
        raise KeyBackendError("key tree: no standby root could be kept for this forget")

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
        """Finish whatever a crash interrupted; run when a node opens for writing (never by a
        read-only command) and only after ``check_key_store`` accepted the pair.

        1. every root this database planned and no tree adopted (made just before a crash, or
           never made) is destroyed: only those, never "whatever the database does not name"
           (docs/adr/0016);
        2. a root this database recorded as destroyed that the backend holds again (SoftHSMv2
           issue 903) is destroyed anew, with a fresh receipt;
        3. any other root the backend holds that this database does not name is left alone
           and reported (``unknown_roots``): the node does not destroy what it cannot explain;
        4. the old roots of committed batches whose destruction window has elapsed are
           destroyed and their receipts recorded.
        """
        abandoned: list[str] = []
        resurrected: list[str] = []
        unknown: list[str] = []
        receipts: list[DestructionReceipt] = []
        with self.store.transaction() as nodes:
            needed: set[str] = set()
            for tree in self.trees.values():
                needed |= tree.pending_roots(nodes)
            planned = nodes.planned_roots()
            for plan in planned:
                if plan.key_ref in needed:
                    continue  # an intent's next standby: its destruction step makes it
                self.backend.destroy_root_key(plan.key_ref)
                nodes.settle_root(plan.key_ref, "abandoned")
                abandoned.append(plan.key_ref)
            unaccounted = self.backend.live_root_keys() - needed - {p.key_ref for p in planned}
            if unaccounted:
                destroyed = {e.old_root: e for e in nodes.journal(["destroyed"])}
                for ref in sorted(unaccounted):
                    entry = destroyed.get(ref)
                    if entry is None:
                        unknown.append(ref)
                        continue
                    # The root came back after its destruction was confirmed: destroy it
                    # again and issue a fresh receipt that says so.
                    evidence = self.backend.destroy_root_key(ref)
                    resurrected.append(ref)
                    receipt = self.trees[entry.tree].sign_receipt(
                        entry, evidence, destroyed_again=True
                    )
                    nodes.record_destruction(entry, receipt)
                    receipts.append(receipt)
        receipts.extend(self.destroy_due())
        return RecoveryReport(tuple(receipts), tuple(abandoned), tuple(resurrected), tuple(unknown))


@dataclass(frozen=True)
class RestorePlan:
    """What bringing a restored database back into service with the live key store loses
    (``KeyTreeCustody.plan_restore``): said before anything is destroyed."""

    database_generation: int
    key_store_generation: int
    roots_to_destroy: tuple[str, ...]
    """Root keys the key store holds that the restored database does not keep: they protect
    what was written after the backup (and the backup's standbys, which a newer tree may have
    used). Destroying them makes every copy of the newer database unreadable."""
    lost_trees: tuple[RootKeyPurpose, ...]
    """Trees of the restored database whose root key the key store no longer holds: every
    capability key in them is gone (their artifacts cannot be read again)."""
    unreadable_artifacts: int

    def to_dict(self) -> dict[str, object]:
        """The JSON form printed and audited."""
        return {
            "database_generation": self.database_generation,
            "key_store_generation": self.key_store_generation,
            "roots_to_destroy": list(self.roots_to_destroy),
            "lost_trees": list(self.lost_trees),
            "unreadable_artifacts": self.unreadable_artifacts,
        }


def plan_restore(custody: KeyTreeCustody, node_key_id: str) -> RestorePlan:
    """Say what ``restore_backup`` would destroy and lose, destroying nothing. Raises
    NodeStateMismatchError if the database or key store belongs to another node or key store
    (restoring is for a backup of this node's own database)."""
    node = binding_node(node_key_id)
    kept = custody.backend.binding()
    if kept is None:
        raise NodeStateMismatchError(
            "key_store_unbound",
            "the key store has no binding: restore-backup needs this node's own key store",
        )
    if kept.node != node:
        raise NodeStateMismatchError(
            "foreign_key_store", f"the key store belongs to node {kept.node[:16]}…, not this node"
        )
    with custody.store.transaction(write=False) as nodes:
        recorded = nodes.binding()
        heads = [head for t in TREES if (head := nodes.head(t)) is not None]
        if recorded is not None and (recorded.store_id != kept.store_id or recorded.node != node):
            raise NodeStateMismatchError(
                "foreign_database",
                "the database was not made with this key store: restore-backup brings back "
                "a backup of this node's own database only",
            )
        if not heads:
            raise NodeStateMismatchError(
                "database_unbound",
                "the database holds no key trees (an empty database is not a backup)",
            )
        lost = tuple(h.tree for h in heads if not custody.backend.has_root_key(h.root_ref))
        unreadable = nodes.artifacts_with_leaves(lost) if lost else 0
    keep = {h.root_ref for h in heads}
    return RestorePlan(
        database_generation=0 if recorded is None else recorded.generation,
        key_store_generation=kept.generation,
        roots_to_destroy=tuple(sorted(custody.backend.live_root_keys() - keep)),
        lost_trees=lost,
        unreadable_artifacts=unreadable,
    )


def restore_backup(custody: KeyTreeCustody, node_key_id: str, agreed: RestorePlan) -> RestorePlan:
    """Bring a restored database back into service with the live key store, as ``agreed``
    (the plan the operator confirmed; ConflictError if the state changed since): destroy the
    roots it names, give each lost tree a new empty root (its keys are gone), clear the
    standbys, settle every planned root, and bind the database and key store again at a
    generation above both. Returns the plan carried out."""
    plan = plan_restore(custody, node_key_id)
    if plan != agreed:
        raise ConflictError(
            "restore-backup: the node changed since the plan was shown; run it again"
        )
    for ref in plan.roots_to_destroy:
        custody.backend.destroy_root_key(ref)
    kept = custody.backend.binding()
    if kept is None:  # checked by plan_restore; the key store changed under us
        raise NodeStateMismatchError("key_store_unbound", "the key store lost its binding")
    with custody.store.transaction() as nodes:
        recorded = nodes.binding()
        generation = max(kept.generation, 0 if recorded is None else recorded.generation) + 1
        nodes.save_binding(KeyStoreBinding(kept.store_id, kept.node, generation))
        for old in nodes.planned_roots():
            nodes.settle_root(old.key_ref, "abandoned")
        plans = [custody.trees[tree].plan_root(nodes) for tree in plan.lost_trees]
    for root_plan in plans:
        custody.trees[root_plan.tree].make_root(root_plan)
    with custody.store.transaction() as nodes:
        for root_plan in plans:
            head = nodes.head(root_plan.tree)
            if head is None:
                continue
            nodes.drop_nodes(head.tree)
            fresh = replace(
                head, generation=head.generation + 1, root_ref=root_plan.key_ref, standby_root=None
            )
            nodes.save_nodes(head.tree, [TreeNode(fresh.height, 0, fresh.generation, b"")])
            nodes.save_head(fresh)
            nodes.settle_root(root_plan.key_ref, "adopted")
        for tree in TREES:
            head = nodes.head(tree)
            if head is not None and head.standby_root is not None:
                nodes.save_head(replace(head, standby_root=None))
        final = nodes.binding()
    if final is not None:
        custody.backend.bind(final)
    return plan
