"""The key tree (DESIGN.md §5): scalable cryptographic erasure with one root key in the backend.

Leaves are capability keys; every inner node of fan-out ``b`` has a 256-bit key that wraps its
children's keys, and the root key lives only in the wrapping-key backend (Reardon, Ritzdorf,
Basin and Čapkun, "Secure Data Deletion from Persistent Media", CCS 2013). Positions::

    level 0            leaves, slot s = 0, 1, 2, …   (slots are never reused)
    level l (1 … h-1)  node index s // b**l, key wrapped under its parent
    level h            the root: a key of the backend, version = the tree's generation

A wrap binds where it belongs and the version of the key that wraps it::

    context = "oblivio/key-tree/v1" | tree | level (1) | index (8) | parent version (8)
              [ | artifact id (32) | capability ]   (leaves)

Forgetting a set of leaves (one batch, one epoch) drops their wrapped keys, gives every node on
their paths a new key, re-wraps those nodes' remaining children, makes a new root key in the
backend and destroys the old one: about ``b · depth`` wraps per forget, shared by a batch. Once
the old root is destroyed, no copy of the old wrapped keys, in any backup, can be unwrapped: the
old path keys exist only under it.

Crash safety is a journal in the same database as the tree, written first and read by recovery::

    intent     new root made in the backend; the re-keyed tree, the new head and the batch's
               journal entry committed in one transaction (the old root is still alive)
    destroy    old root destroyed in the backend and confirmed by a failed lookup
    commit     journal entry marked ``destroyed`` with the signed receipt

A crash before the intent commits leaves the old state (nothing was acknowledged; the unused new
root is destroyed by recovery); after it, the new state, and ``recover`` finishes the
destruction. Recovery also destroys any root the backend still holds that the database does
not account for: one made just before a crash, or a destroyed one that came back (SoftHSMv2
issue 903). So a live leaf's key is never lost and a forgotten one never stays recoverable.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, Protocol

import uuid6

from oblivio.core.envelope import KEY_SIZE, NONCE_SIZE, unwrap_keys, wrap_keys
from oblivio.core.errors import IntegrityError, KeyBackendError
from oblivio.core.identifiers import ArtifactId, Capability, format_time, parse_time
from oblivio.core.receipts import DestructionReceipt
from oblivio.core.signing import SigningKey
from oblivio.keys.backend import RootKeyPurpose, WrappingKeyBackend

KEY_TREE_CONTEXT: Final = b"oblivio/key-tree/v1"
DEFAULT_FANOUT: Final = 64
MIN_FANOUT: Final = 2
TREES: Final[tuple[RootKeyPurpose, ...]] = ("wrap", "escrow")
JournalState = Literal["intent", "destroyed"]
"""``intent``: the re-keyed tree is committed and the old root is to be destroyed (once the
destruction window has passed); ``destroyed``: it was, and the receipt is stored."""


def tree_of(capability: Capability) -> RootKeyPurpose:
    """The tree holding a capability: ``recover`` copies sit under the escrow root (§4)."""
    return "escrow" if capability == "recover" else "wrap"


@dataclass(frozen=True)
class TreeHead:
    """The state of one tree: shape, root generation and root key, next free slot."""

    tree: RootKeyPurpose
    fanout: int
    height: int
    generation: int
    root_ref: str
    next_slot: int


@dataclass(frozen=True)
class TreeNode:
    """An inner node (level 1 … height-1): its key wrapped under its parent's key."""

    level: int
    index: int
    version: int
    wrapped: bytes


@dataclass(frozen=True)
class TreeLeaf:
    """A capability key wrapped under its level-1 parent (or the root, at height 1)."""

    slot: int
    artifact_id: ArtifactId
    capability: Capability
    wrapped: bytes


@dataclass(frozen=True)
class JournalEntry:
    """One forget batch of one tree, as the journal records it."""

    batch_id: str
    tree: RootKeyPurpose
    state: JournalState
    old_generation: int
    old_root: str
    new_root: str
    leaves: tuple[tuple[ArtifactId, Capability], ...]
    created_at: str
    destroy_after: str | None = None
    receipt_hash: str | None = None


class KeyTreeNodes(Protocol):
    """The key tree's persistence inside one open transaction (implemented by the store)."""

    def head(self, tree: RootKeyPurpose) -> TreeHead | None:
        """The tree's head; in a write transaction it stays locked until commit."""

    def save_head(self, head: TreeHead) -> None:
        """Insert or replace the tree's head."""

    def nodes(
        self, tree: RootKeyPurpose, level: int, ranges: Sequence[tuple[int, int]]
    ) -> list[TreeNode]:
        """Inner nodes of ``level`` whose index lies in one of the inclusive ``ranges``."""

    def nodes_at(
        self, tree: RootKeyPurpose, positions: Sequence[tuple[int, int]]
    ) -> list[TreeNode]:
        """The inner nodes at the given ``(level, index)`` positions that exist."""

    def save_nodes(self, tree: RootKeyPurpose, nodes: Sequence[TreeNode]) -> None:
        """Insert or replace inner nodes."""

    def leaves(self, tree: RootKeyPurpose, ranges: Sequence[tuple[int, int]]) -> list[TreeLeaf]:
        """Leaves whose slot lies in one of the inclusive ``ranges``."""

    def leaf(self, artifact_id: ArtifactId, capability: Capability) -> TreeLeaf | None:
        """The leaf holding one capability key of an artifact."""

    def find_leaves(self, keys: Sequence[tuple[ArtifactId, Capability]]) -> list[TreeLeaf]:
        """The leaves holding these capability keys, those that exist."""

    def insert_leaves(self, tree: RootKeyPurpose, leaves: Sequence[TreeLeaf]) -> None:
        """Record new leaves (their artifacts must exist already)."""

    def rewrap_leaves(self, tree: RootKeyPurpose, leaves: Sequence[tuple[int, bytes]]) -> None:
        """Replace the wrapped bytes of existing leaves: ``(slot, wrapped)`` pairs."""

    def delete_leaves(self, tree: RootKeyPurpose, slots: Sequence[int]) -> None:
        """Drop leaves: their wrapped keys are gone from the live tree."""

    def journal(self, states: Sequence[JournalState]) -> list[JournalEntry]:
        """Journal entries in the given states, oldest first."""

    def save_journal(self, entry: JournalEntry) -> None:
        """Insert or replace a journal entry, by batch id."""

    def save_receipt(self, entry: JournalEntry, receipt: DestructionReceipt) -> None:
        """Store a destruction receipt (as served) for a batch."""


class KeyTreeStore(Protocol):
    """Opens transactions over the key tree's persistence."""

    def transaction(self, *, write: bool = True) -> AbstractContextManager[KeyTreeNodes]:
        """A transaction; write transactions serialise key-tree writers between processes."""


def node_context(tree: str, level: int, index: int, parent_version: int) -> bytes:
    """The wrap context of an inner node's key."""
    return KEY_TREE_CONTEXT + tree.encode() + struct.pack(">BQQ", level, index, parent_version)


def leaf_context(
    tree: str, slot: int, parent_version: int, artifact_id: ArtifactId, capability: Capability
) -> bytes:
    """The wrap context of a leaf: its position and the artifact and capability it serves."""
    return (
        node_context(tree, 0, slot, parent_version)
        + bytes.fromhex(artifact_id)
        + capability.encode("ascii")
    )


@dataclass
class _Key:
    """A node key in the clear while a batch is being computed (None: the backend root)."""

    version: int
    key: bytes | None


def _clear(key: _Key) -> bytes:
    if key.key is None:
        raise KeyBackendError("key tree: the root key never leaves the backend")
    return key.key


class KeyTree:
    """One tree (``wrap`` or ``escrow``) over a backend; stateless between calls.

    Every method that takes ``nodes`` runs inside the caller's transaction; ``forget_leaves``,
    ``recover`` and ``destroy_due`` open their own, because the backend must act between commits.
    """

    def __init__(
        self,
        tree: RootKeyPurpose,
        backend: WrappingKeyBackend,
        store: KeyTreeStore,
        signer: SigningKey,
        *,
        fanout: int = DEFAULT_FANOUT,
        destruction_window: timedelta = timedelta(0),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if fanout < MIN_FANOUT:
            raise ValueError(f"key tree fan-out: expected at least {MIN_FANOUT}, got {fanout}")
        self.tree = tree
        self.backend = backend
        self.store = store
        self.signer = signer
        self.fanout = fanout
        self.destruction_window = destruction_window
        self._clock = clock
        self._random = random_bytes

    # -- shape -------------------------------------------------------------------------------

    def _span(self, level: int) -> int:
        return int(self.fanout**level)

    def initialise(self, nodes: KeyTreeNodes) -> TreeHead:
        """Return the tree's head, creating the tree (one root key in the backend) if new."""
        head = nodes.head(self.tree)
        if head is None:
            head = TreeHead(
                self.tree, self.fanout, 1, 0, self.backend.create_root_key(self.tree), 0
            )
            nodes.save_head(head)
        return head

    # -- wrapping helpers --------------------------------------------------------------------

    def _wrap(
        self, head: TreeHead, parent: _Key, items: Sequence[tuple[bytes, bytes]]
    ) -> list[bytes]:
        if parent.key is None:
            return self.backend.wrap_many(head.root_ref, items) if items else []
        return wrap_keys(parent.key, self._random(NONCE_SIZE * len(items)), items)

    def _unwrap(
        self, root_ref: str, parent: _Key, items: Sequence[tuple[bytes, bytes]]
    ) -> list[bytes]:
        if parent.key is None:
            return self.backend.unwrap_many(root_ref, items) if items else []
        return unwrap_keys(parent.key, items)

    def _path_keys(
        self, nodes: KeyTreeNodes, head: TreeHead, slots: Iterable[int], *, create: bool
    ) -> dict[tuple[int, int], _Key]:
        """Keys in the clear of the inner nodes above ``slots``, top-down from the root; with
        ``create``, missing nodes are made (fresh keys wrapped under their parents)."""
        slots = sorted(set(slots))
        keys: dict[tuple[int, int], _Key] = {(head.height, 0): _Key(head.generation, None)}
        for level in range(head.height - 1, 0, -1):
            indices = sorted({slot // self._span(level) for slot in slots})
            found = {n.index: n for n in nodes.nodes_at(self.tree, [(level, i) for i in indices])}
            by_parent: dict[int, list[int]] = {}
            for index in indices:
                by_parent.setdefault(index // self.fanout, []).append(index)
            new_nodes = []
            for parent_index, children in by_parent.items():
                parent = keys[(level + 1, parent_index)]
                present = [i for i in children if i in found]
                plain = self._unwrap(
                    head.root_ref,
                    parent,
                    [
                        (found[i].wrapped, node_context(self.tree, level, i, parent.version))
                        for i in present
                    ],
                )
                for i, key in zip(present, plain, strict=True):
                    keys[(level, i)] = _Key(found[i].version, key)
                missing = [i for i in children if i not in found]
                if missing and not create:
                    raise IntegrityError()
                if missing:
                    fresh = [self._random(KEY_SIZE) for _ in missing]
                    wrapped = self._wrap(
                        head,
                        parent,
                        [
                            (key, node_context(self.tree, level, i, parent.version))
                            for i, key in zip(missing, fresh, strict=True)
                        ],
                    )
                    for i, key, blob in zip(missing, fresh, wrapped, strict=True):
                        keys[(level, i)] = _Key(0, key)
                        new_nodes.append(TreeNode(level, i, 0, blob))
            if new_nodes:
                nodes.save_nodes(self.tree, new_nodes)
        return keys

    def _grow(self, nodes: KeyTreeNodes, head: TreeHead) -> TreeHead:
        """Add a level on top: a new node at (height, 0) takes over the root's children."""
        level = head.height
        key = self._random(KEY_SIZE)
        root = _Key(head.generation, None)
        new_node = TreeNode(
            level,
            0,
            0,
            self._wrap(head, root, [(key, node_context(self.tree, level, 0, head.generation))])[0],
        )
        top = _Key(0, key)
        if level == 1:
            leaves = nodes.leaves(self.tree, [(0, self.fanout - 1)])
            plain = self._unwrap(
                head.root_ref,
                root,
                [(leaf.wrapped, self._leaf_context(leaf, head.generation)) for leaf in leaves],
            )
            rewrapped = self._wrap(
                head,
                top,
                [(k, self._leaf_context(leaf, 0)) for k, leaf in zip(plain, leaves, strict=True)],
            )
            nodes.rewrap_leaves(
                self.tree,
                [(leaf.slot, w) for leaf, w in zip(leaves, rewrapped, strict=True)],
            )
        else:
            children = nodes.nodes(self.tree, level - 1, [(0, self.fanout - 1)])
            plain = self._unwrap(
                head.root_ref,
                root,
                [
                    (c.wrapped, node_context(self.tree, c.level, c.index, head.generation))
                    for c in children
                ],
            )
            rewrapped = self._wrap(
                head,
                top,
                [
                    (k, node_context(self.tree, c.level, c.index, 0))
                    for k, c in zip(plain, children, strict=True)
                ],
            )
            nodes.save_nodes(
                self.tree,
                [
                    TreeNode(c.level, c.index, c.version, w)
                    for c, w in zip(children, rewrapped, strict=True)
                ],
            )
        nodes.save_nodes(self.tree, [new_node])
        grown = replace(head, height=head.height + 1)
        nodes.save_head(grown)
        return grown

    def _leaf_context(self, leaf: TreeLeaf, parent_version: int) -> bytes:
        return leaf_context(self.tree, leaf.slot, parent_version, leaf.artifact_id, leaf.capability)

    # -- adding and reading leaves -----------------------------------------------------------

    def add_leaves(
        self, nodes: KeyTreeNodes, items: Sequence[tuple[ArtifactId, Capability, bytes]]
    ) -> list[TreeLeaf]:
        """Wrap capability keys into new leaves of this tree inside the caller's transaction."""
        if not items:
            return []
        head = self.initialise(nodes)
        end = head.next_slot + len(items)
        while self._span(head.height) < end:
            head = self._grow(nodes, head)
        slots = list(range(head.next_slot, end))
        keys = self._path_keys(nodes, head, slots, create=True)
        leaves: list[TreeLeaf] = []
        by_parent: dict[int, list[tuple[int, tuple[ArtifactId, Capability, bytes]]]] = {}
        for slot, item in zip(slots, items, strict=True):
            by_parent.setdefault(slot // self.fanout, []).append((slot, item))
        for parent_index, group in by_parent.items():
            parent = keys[(1, parent_index)]
            wrapped = self._wrap(
                head,
                parent,
                [
                    (key, leaf_context(self.tree, slot, parent.version, aid, capability))
                    for slot, (aid, capability, key) in group
                ],
            )
            leaves.extend(
                TreeLeaf(slot, aid, capability, blob)
                for (slot, (aid, capability, _)), blob in zip(group, wrapped, strict=True)
            )
        nodes.insert_leaves(self.tree, leaves)
        nodes.save_head(replace(head, next_slot=end))
        return leaves

    def unwrap_leaf(self, nodes: KeyTreeNodes, leaf: TreeLeaf) -> bytes:
        """The capability key of ``leaf`` in the clear; IntegrityError if any wrap on its path
        fails (altered bytes, a forgotten key, a destroyed root)."""
        head = nodes.head(self.tree)
        if head is None or not 0 <= leaf.slot < head.next_slot:
            raise IntegrityError()
        keys = self._path_keys(nodes, head, [leaf.slot], create=False)
        parent = keys[(1, leaf.slot // self.fanout)]
        return self._unwrap(
            head.root_ref, parent, [(leaf.wrapped, self._leaf_context(leaf, parent.version))]
        )[0]

    # -- forgetting --------------------------------------------------------------------------

    def forget_leaves(
        self, leaves: Sequence[tuple[ArtifactId, Capability]]
    ) -> DestructionReceipt | None:
        """Forget these leaves of this tree as one batch: re-key, rotate, destroy, record.

        Returns the destruction receipt of the old root, or None when nothing was forgotten
        (no such leaf) or the destruction window defers destruction (``destroy_due`` issues
        the receipt later). Raises KeyBackendError if the backend fails: if the re-keyed tree
        was committed the journal holds the batch and ``destroy_due``/``recover`` finish it;
        if not, nothing changed, and ``recover`` destroys the unused new root.
        """
        with self.store.transaction() as nodes:
            head = self.initialise(nodes)
            wanted = [key for key in dict.fromkeys(leaves) if tree_of(key[1]) == self.tree]
            present = nodes.find_leaves(wanted)
            if not present:
                return None
            new_root = self.backend.create_root_key(self.tree)
            self._rekey(nodes, head, {leaf.slot for leaf in present}, new_root)
            destroy_after = self._clock() + self.destruction_window
            entry = JournalEntry(
                batch_id=str(uuid6.uuid7()),
                tree=self.tree,
                state="intent",
                old_generation=head.generation,
                old_root=head.root_ref,
                new_root=new_root,
                leaves=tuple((leaf.artifact_id, leaf.capability) for leaf in present),
                created_at=format_time(self._clock()),
                destroy_after=format_time(destroy_after),
            )
            nodes.save_journal(entry)
        if destroy_after > self._clock():
            return None
        return self._destroy(entry)

    def _rekey(
        self, nodes: KeyTreeNodes, head: TreeHead, forgotten: set[int], new_root: str
    ) -> None:
        """Drop ``forgotten`` leaves; new keys for every node above them; re-wrap the rest.

        Reads and writes go level by level, one statement per level (in chunks), so a batch
        costs a handful of statements per level however many nodes it touches."""
        old = self._path_keys(nodes, head, forgotten, create=False) if forgotten else {}
        old.setdefault((head.height, 0), _Key(head.generation, None))
        new: dict[tuple[int, int], _Key] = {
            position: _Key(key.version + 1, self._random(KEY_SIZE))
            for position, key in old.items()
            if position[0] < head.height
        }
        new[(head.height, 0)] = _Key(head.generation + 1, None)
        new_head = replace(head, generation=head.generation + 1, root_ref=new_root)
        b = self.fanout
        for level in range(1, head.height + 1):
            dirty = sorted(index for (lvl, index) in new if lvl == level)
            ranges = [(index * b, index * b + b - 1) for index in dirty]
            if level == 1:
                by_parent: dict[int, list[TreeLeaf]] = {}
                for leaf in nodes.leaves(self.tree, ranges):
                    by_parent.setdefault(leaf.slot // b, []).append(leaf)
                rewrapped: list[tuple[int, bytes]] = []
                for index in dirty:
                    old_key, new_key = old[(1, index)], new[(1, index)]
                    kept = [x for x in by_parent.get(index, []) if x.slot not in forgotten]
                    plain = self._unwrap(
                        head.root_ref,
                        old_key,
                        [(x.wrapped, self._leaf_context(x, old_key.version)) for x in kept],
                    )
                    wrapped = self._wrap(
                        new_head,
                        new_key,
                        [
                            (k, self._leaf_context(x, new_key.version))
                            for k, x in zip(plain, kept, strict=True)
                        ],
                    )
                    rewrapped += [(x.slot, w) for x, w in zip(kept, wrapped, strict=True)]
                nodes.rewrap_leaves(self.tree, rewrapped)
                nodes.delete_leaves(self.tree, sorted(forgotten))
                continue
            children_of: dict[int, list[TreeNode]] = {}
            for child in nodes.nodes(self.tree, level - 1, ranges):
                children_of.setdefault(child.index // b, []).append(child)
            updated: list[TreeNode] = []
            for index in dirty:
                old_key, new_key = old[(level, index)], new[(level, index)]
                children = children_of.get(index, [])
                unchanged = [c for c in children if (c.level, c.index) not in new]
                fresh = [c for c in children if (c.level, c.index) in new]
                plain = self._unwrap(
                    head.root_ref,
                    old_key,
                    [
                        (c.wrapped, node_context(self.tree, c.level, c.index, old_key.version))
                        for c in unchanged
                    ],
                )
                fresh_keys = [new[(c.level, c.index)] for c in fresh]
                items = [
                    (k, node_context(self.tree, c.level, c.index, new_key.version))
                    for k, c in zip(plain, unchanged, strict=True)
                ] + [
                    (_clear(k), node_context(self.tree, c.level, c.index, new_key.version))
                    for k, c in zip(fresh_keys, fresh, strict=True)
                ]
                wrapped = self._wrap(new_head, new_key, items)
                updated += [
                    TreeNode(c.level, c.index, c.version, w)
                    for c, w in zip(unchanged, wrapped[: len(unchanged)], strict=True)
                ] + [
                    TreeNode(c.level, c.index, k.version, w)
                    for c, k, w in zip(fresh, fresh_keys, wrapped[len(unchanged) :], strict=True)
                ]
            nodes.save_nodes(self.tree, updated)
        nodes.save_head(new_head)

    def _destroy(self, entry: JournalEntry) -> DestructionReceipt:
        """Destroy the batch's old root, confirm it, and record the signed receipt (TX 3)."""
        evidence = self.backend.destroy_root_key(entry.old_root)
        receipt = DestructionReceipt(
            backend=evidence.backend,
            key_ref=dict(evidence.key_ref) | {"tree": self.tree},
            epoch=entry.old_generation,
            destroyed_at=format_time(self._clock()),
            evidence=dict(evidence.evidence) | {"forgotten_keys": len(entry.leaves)},
        ).signed_by(self.signer)
        with self.store.transaction() as nodes:
            done = replace(entry, state="destroyed", receipt_hash=receipt.digest().hex())
            nodes.save_receipt(done, receipt)
            nodes.save_journal(done)
        return receipt

    # -- recovery ----------------------------------------------------------------------------

    def destroy_due(self) -> list[DestructionReceipt]:
        """Destroy the old roots of applied batches whose destruction window has elapsed."""
        now = self._clock()
        with self.store.transaction(write=False) as nodes:
            due = [
                e
                for e in nodes.journal(["intent"])
                if e.tree == self.tree
                and (e.destroy_after is None or parse_time(e.destroy_after) <= now)
            ]
        return [self._destroy(entry) for entry in due]

    def pending_roots(self, nodes: KeyTreeNodes) -> set[str]:
        """Roots this tree still needs: its head's, and old roots kept alive by the destruction
        window until their batch's destruction."""
        head = nodes.head(self.tree)
        needed = {head.root_ref} if head is not None else set()
        for entry in nodes.journal(["intent"]):
            if entry.tree == self.tree:
                needed.add(entry.old_root)
        return needed
